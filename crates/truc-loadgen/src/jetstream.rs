//! The same publish → durable store → consume → ack path through NATS JetStream, for a
//! side-by-side comparison on the same machine and payloads: a `nats-server` process with
//! file storage, publishes awaited until JetStream acknowledges them (stored), one durable
//! pull consumer per unit with explicit acks.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream::{self, consumer, stream};
use sha2::{Digest, Sha256};
use tokio_stream::StreamExt;

use crate::traffic::{subject_of, Ledger};

/// A `nats-server` process with JetStream on a file store.
pub struct NatsServer {
    child: Child,
    /// Its client URL.
    pub url: String,
    /// The certificates clients present and trust, when the server requires mutual TLS.
    pub tls: Option<TlsFiles>,
}

/// How JetStream is set up for a run: the defaults, or as durable and as guarded as the
/// relay, so that the two can be compared like for like.
#[derive(Debug, Clone, Copy, Default)]
pub struct NatsSetup {
    /// `sync_interval: always`: every stored message is fsynced before its publish is
    /// acknowledged, as the relay does before its receipt (nats-server 2.10 or later; by
    /// default JetStream syncs its files every two minutes).
    pub sync_always: bool,
    /// Mutual TLS between the clients and the server, as between adapters and the relay.
    pub mutual_tls: bool,
}

/// PEM files of a mutual-TLS setup: the CA both sides trust and the client's certificate.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA certificate.
    pub ca: PathBuf,
    /// The client certificate.
    pub cert: PathBuf,
    /// The client's private key.
    pub key: PathBuf,
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl NatsServer {
    /// Starts `nats-server` (from `PATH`, or `binary`) storing in `dir`, set up as `setup`
    /// says.
    pub fn start(binary: &Path, dir: &Path, setup: NatsSetup) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        std::fs::create_dir_all(dir)?;
        let sync = if setup.sync_always {
            "  sync_interval: always\n"
        } else {
            ""
        };
        let (tls, tls_block) = if setup.mutual_tls {
            let (files, block) = write_certificates(dir)?;
            (Some(files), block)
        } else {
            (None, String::new())
        };
        // Packages reach 8 MiB in the mix (NATS allows 1 MiB by default).
        let config = dir.join("nats.conf");
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\nmax_payload: 16777216\njetstream {{\n  store_dir: {:?}\n{sync}}}\n{tls_block}",
                dir.join("store")
            ),
        )?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {} (apt install nats-server)", binary.display()))?;
        Ok(NatsServer {
            child,
            url: format!("nats://localhost:{port}"),
            tls,
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Writes a CA, the server's certificate and a client certificate into `dir`; returns the
/// client's files and the server's `tls` block.
fn write_certificates(dir: &Path) -> anyhow::Result<(TlsFiles, String)> {
    let ca = trucd::pki::LocalCa::new("truc-loadgen NATS CA")?;
    let server = ca.issue("nats-server under load", &["localhost"])?;
    let client = ca.issue("truc-loadgen", &["truc-loadgen"])?;
    let write = |name: &str, text: &str| -> anyhow::Result<PathBuf> {
        let p = dir.join(name);
        std::fs::write(&p, text)?;
        Ok(p)
    };
    let ca_file = write("ca.pem", &ca.pem)?;
    let server_cert = write("server.pem", &server.cert)?;
    let server_key = write("server.key", &server.key)?;
    let files = TlsFiles {
        ca: ca_file.clone(),
        cert: write("client.pem", &client.cert)?,
        key: write("client.key", &client.key)?,
    };
    let block = format!(
        "tls {{\n  cert_file: {server_cert:?}\n  key_file: {server_key:?}\n  ca_file: {ca_file:?}\n  verify: true\n}}\n"
    );
    Ok((files, block))
}

/// Connects, and creates the stream and one consumer per unit.
pub async fn prepare(
    server: &NatsServer,
    units: &[String],
) -> anyhow::Result<(jetstream::Context, Vec<consumer::PullConsumer>)> {
    let url = server.url.as_str();
    let mut last = None;
    let mut client = None;
    for _ in 0..100 {
        let options = match &server.tls {
            Some(t) => async_nats::ConnectOptions::new()
                .require_tls(true)
                .add_root_certificates(t.ca.clone())
                .add_client_certificate(t.cert.clone(), t.key.clone()),
            None => async_nats::ConnectOptions::new(),
        };
        match options.connect(url).await {
            Ok(c) => {
                client = Some(c);
                break;
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = client.with_context(|| format!("connecting to {url}: {last:?}"))?;
    let js = jetstream::new(client);
    let _ = js.delete_stream("TRUCLOAD").await;
    let stream = js
        .create_stream(stream::Config {
            name: "TRUCLOAD".into(),
            subjects: vec!["truc.load.>".into()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("creating the stream: {e}"))?;
    let mut consumers = Vec::new();
    for unit in units {
        let name = format!("inbox_{}", unit.replace('.', "_"));
        let c = stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(name),
                filter_subject: subject_of(unit),
                ack_policy: consumer::AckPolicy::Explicit,
                max_ack_pending: 1000,
                ..Default::default()
            })
            .await
            .map_err(|e| anyhow::anyhow!("creating a consumer: {e}"))?;
        consumers.push(c);
    }
    Ok((js, consumers))
}

/// Consumes the inbox of `unit`: verifies each message against what was sent (bytes, and
/// that it was published for this unit), acknowledges it, records the latency. Like the
/// relay's receivers, it goes on through errors until the run is over: a consumer that
/// reports one (a missed heartbeat when the cores are starved) is read again, not given
/// up, which would count its unit's messages as lost.
pub async fn receive(ledger: Arc<Ledger>, unit: String, consumer: consumer::PullConsumer) {
    let subject = subject_of(&unit);
    while !ledger.stopped() {
        let mut messages = match consumer.messages().await {
            Ok(m) => m,
            Err(_) => {
                ledger.error("NATS_CONSUME");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        while let Some(next) = messages.next().await {
            let message = match next {
                Ok(m) => m,
                Err(_) => {
                    ledger.error("NATS_CONSUME");
                    continue;
                }
            };
            let sha: [u8; 32] = Sha256::digest(&message.payload).into();
            let id = message
                .headers
                .as_ref()
                .and_then(|h| h.get("Truc-Document"))
                .map(|v| v.as_str().to_owned())
                .unwrap_or_default();
            // Published for this unit: the recipient the message was addressed to.
            let recipient = if message.subject.as_str() == subject {
                unit.as_str()
            } else {
                message.subject.as_str()
            };
            if message.ack().await.is_err() {
                ledger.error("NATS_ACK");
                continue;
            }
            ledger.delivered(&id, recipient, &unit, sha, Instant::now());
        }
    }
}
