//! The same publish → durable store → consume → ack path through NATS JetStream, for a
//! side-by-side comparison on the same machine and payloads: a `nats-server` process with
//! file storage, publishes awaited until JetStream acknowledges them (stored), one durable
//! pull consumer per unit with explicit acks.

use std::path::Path;
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
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl NatsServer {
    /// Starts `nats-server` (from `PATH`, or `binary`) storing in `dir`.
    pub fn start(binary: &Path, dir: &Path) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        std::fs::create_dir_all(dir)?;
        // Packages reach 8 MiB in the mix (NATS allows 1 MiB by default).
        let config = dir.join("nats.conf");
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\nmax_payload: 16777216\njetstream {{\n  store_dir: {:?}\n}}\n",
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
            url: format!("nats://127.0.0.1:{port}"),
        })
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Connects, and creates the stream and one consumer per unit.
pub async fn prepare(
    url: &str,
    units: &[String],
) -> anyhow::Result<(jetstream::Context, Vec<consumer::PullConsumer>)> {
    let mut last = None;
    let mut client = None;
    for _ in 0..100 {
        match async_nats::connect(url).await {
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

/// Consumes one unit's inbox: verifies each message against what was sent, acknowledges
/// it, records the latency.
pub async fn receive(ledger: Arc<Ledger>, consumer: consumer::PullConsumer) {
    let Ok(mut messages) = consumer.messages().await else {
        ledger.error("NATS_CONSUME");
        return;
    };
    while let Some(Ok(message)) = messages.next().await {
        let sha: [u8; 32] = Sha256::digest(&message.payload).into();
        let id = message
            .headers
            .as_ref()
            .and_then(|h| h.get("Truc-Document"))
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        if message.ack().await.is_err() {
            ledger.error("NATS_ACK");
            continue;
        }
        ledger.delivered(&id, sha, Instant::now());
    }
}
