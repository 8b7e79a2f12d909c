#![forbid(unsafe_code)]
//! The adapter SDK: what a unit's adapter needs to talk to the relay, over mutual TLS.
//!
//! ```no_run
//! # async fn example() -> Result<(), truc_client::ClientError> {
//! use truc_client::{Client, ClientTls};
//! let tls = ClientTls::from_pem_files("ca.pem", "adapter.pem", "adapter.key", "relay.bo.gov.vn")?;
//! let mut client = Client::connect("https://relay.bo.gov.vn:7443", Some(tls)).await?;
//! let receipt = client.submit_document(&std::fs::read("congvan.edxml")?, None).await?;
//! println!("stored as {}", receipt.message_id);
//! let mut inbox = client.inbox(16).await?;
//! while let Some(delivery) = inbox.next().await? {
//!     // ... store it in the QLVB, then:
//!     inbox.ack(&delivery.delivery_id).await?;
//! }
//! # Ok(()) }
//! ```

pub mod folder;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use truc_proto::v1 as pb;
use truc_proto::v1::relay_client::RelayClient;

pub use truc_proto::v1 as proto;
pub use truc_proto::v1::{Delivery, Receipt, SubmitHeader, Trace, Unit};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Could not connect (address, TLS handshake, certificates).
    #[error("cannot connect to the relay: {0}")]
    Connect(#[from] tonic::transport::Error),
    /// The relay refused the call; `code` is its stable error code (docs/errors.md).
    #[error("{code}: {message}")]
    Refused {
        /// The gRPC status code.
        status: tonic::Code,
        /// The relay's stable error code.
        code: String,
        /// The relay's message.
        message: String,
    },
    /// A local file could not be read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The inbox stream ended unexpectedly.
    #[error("the inbox stream is closed")]
    Closed,
}

impl ClientError {
    /// The relay's stable error code, if the relay refused the call.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Refused { code, .. } => Some(code),
            _ => None,
        }
    }
}

impl From<tonic::Status> for ClientError {
    fn from(s: tonic::Status) -> Self {
        let code = s
            .metadata()
            .get("truc-error-code")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        ClientError::Refused {
            status: s.code(),
            code,
            message: s.message().to_owned(),
        }
    }
}

/// The adapter's certificates.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// The CA that signed the relay's certificate (PEM).
    pub ca: Vec<u8>,
    /// The adapter's certificate (PEM), registered for its unit.
    pub cert: Vec<u8>,
    /// The adapter's private key (PEM).
    pub key: Vec<u8>,
    /// The relay's name as in its certificate.
    pub domain: String,
}

impl ClientTls {
    /// Reads the PEM files.
    pub fn from_pem_files(
        ca: impl AsRef<std::path::Path>,
        cert: impl AsRef<std::path::Path>,
        key: impl AsRef<std::path::Path>,
        domain: &str,
    ) -> Result<Self, ClientError> {
        Ok(ClientTls {
            ca: std::fs::read(ca)?,
            cert: std::fs::read(cert)?,
            key: std::fs::read(key)?,
            domain: domain.to_owned(),
        })
    }
}

/// A connection to the relay.
#[derive(Debug, Clone)]
pub struct Client {
    inner: RelayClient<Channel>,
    channel: Channel,
}

/// Bytes per message when streaming a package.
const CHUNK: usize = truc_proto::MAX_CHUNK_BYTES;

/// The messages of a `SubmitDocument` stream: the header, then the package in chunks of at
/// most [`CHUNK`] bytes, each a slice of `package` (no copy).
fn submission_messages(header: pb::SubmitHeader, package: Bytes) -> Vec<pb::SubmitDocumentRequest> {
    let mut messages = Vec::with_capacity(1 + package.len().div_ceil(CHUNK));
    messages.push(pb::SubmitDocumentRequest {
        part: Some(pb::submit_document_request::Part::Header(header)),
    });
    let mut rest = package;
    while !rest.is_empty() {
        let chunk = rest.split_to(rest.len().min(CHUNK));
        messages.push(pb::SubmitDocumentRequest {
            part: Some(pb::submit_document_request::Part::Chunk(chunk)),
        });
    }
    messages
}

impl Client {
    /// Connects (`https://host:port` with TLS, `http://` only to a development relay).
    pub async fn connect(endpoint: &str, tls: Option<ClientTls>) -> Result<Self, ClientError> {
        let mut ep = Endpoint::from_shared(endpoint.to_owned())?
            .connect_timeout(std::time::Duration::from_secs(10))
            .http2_keep_alive_interval(std::time::Duration::from_secs(30));
        if let Some(tls) = tls {
            ep = ep.tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(tls.ca))
                    .identity(Identity::from_pem(tls.cert, tls.key))
                    .domain_name(tls.domain),
            )?;
        }
        let channel = ep.connect().await?;
        Ok(Client {
            channel: channel.clone(),
            inner: RelayClient::new(channel)
                .max_decoding_message_size(8 * 1024 * 1024)
                .max_encoding_message_size(truc_proto::MAX_REQUEST_MESSAGE_BYTES),
        })
    }

    /// The connection, for other services of the relay (`grpc.health.v1`, reflection).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// The generated gRPC client, for calls this SDK does not wrap.
    pub fn grpc(&self) -> RelayClient<Channel> {
        self.inner.clone()
    }

    /// Submits a document package held in memory. Safe to retry: a resubmission returns
    /// the original receipt.
    pub async fn submit_document(
        &mut self,
        package: &[u8],
        idempotency_key: Option<&str>,
    ) -> Result<Receipt, ClientError> {
        let header = pb::SubmitHeader {
            idempotency_key: idempotency_key.unwrap_or_default().to_owned(),
            size: package.len() as u64,
            sha256: Sha256::digest(package)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        };
        self.submit_with_header(header, package).await
    }

    /// Submits a package with a header the caller built (declared size, digest, key): the
    /// low-level form of [`submit_document`](Self::submit_document).
    pub async fn submit_with_header(
        &mut self,
        header: pb::SubmitHeader,
        package: &[u8],
    ) -> Result<Receipt, ClientError> {
        self.submit_bytes(header, Bytes::copy_from_slice(package))
            .await
    }

    /// [`submit_with_header`](Self::submit_with_header) for a package the caller hands
    /// over: its chunks are slices of it, not copies (a load generator's or a gateway's
    /// package is built once and sent once).
    pub async fn submit_bytes(
        &mut self,
        header: pb::SubmitHeader,
        package: Bytes,
    ) -> Result<Receipt, ClientError> {
        let messages = submission_messages(header, package);
        let response = self
            .inner
            .submit_document(tokio_stream::iter(messages))
            .await?;
        Ok(response.into_inner())
    }

    /// Submits a document package from a file, streamed (for large scans).
    pub async fn submit_file(
        &mut self,
        path: impl AsRef<std::path::Path>,
        idempotency_key: Option<&str>,
    ) -> Result<Receipt, ClientError> {
        use tokio::io::AsyncReadExt;
        let mut file = tokio::fs::File::open(path.as_ref()).await?;
        let size = file.metadata().await?.len();
        let (tx, rx) = mpsc::channel(4);
        let header = pb::SubmitHeader {
            idempotency_key: idempotency_key.unwrap_or_default().to_owned(),
            size,
            sha256: String::new(),
        };
        tx.send(pb::SubmitDocumentRequest {
            part: Some(pb::submit_document_request::Part::Header(header)),
        })
        .await
        .map_err(|_| ClientError::Closed)?;
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = file.read(&mut buf).await?;
                if n == 0 {
                    return Ok::<(), std::io::Error>(());
                }
                let msg = pb::SubmitDocumentRequest {
                    part: Some(pb::submit_document_request::Part::Chunk(
                        Bytes::copy_from_slice(&buf[..n]),
                    )),
                };
                if tx.send(msg).await.is_err() {
                    return Ok(());
                }
            }
        });
        let response = self.inner.submit_document(ReceiverStream::new(rx)).await;
        reader.await.map_err(|_| ClientError::Closed)??;
        Ok(response?.into_inner())
    }

    /// Submits a status package.
    pub async fn submit_status(
        &mut self,
        package: &[u8],
        idempotency_key: Option<&str>,
    ) -> Result<Receipt, ClientError> {
        let response = self
            .inner
            .submit_status(pb::SubmitStatusRequest {
                package: Bytes::copy_from_slice(package),
                idempotency_key: idempotency_key.unwrap_or_default().to_owned(),
            })
            .await?;
        Ok(response.into_inner())
    }

    /// Opens the inbox, taking up to `credits` deliveries at a time.
    pub async fn inbox(&mut self, credits: u32) -> Result<Inbox, ClientError> {
        let (tx, rx) = mpsc::channel(64);
        tx.send(pb::InboxRequest {
            action: Some(pb::inbox_request::Action::Open(pb::InboxOpen {
                credits,
                max_inline_bytes: 0,
            })),
        })
        .await
        .map_err(|_| ClientError::Closed)?;
        let events = self
            .inner
            .inbox(ReceiverStream::new(rx))
            .await?
            .into_inner();
        Ok(Inbox { tx, events })
    }

    /// Runs an inbox loop: each delivery (with its bytes, fetched if it was announced) is
    /// given to `handler`; it is acknowledged when the handler succeeds and refused (to be
    /// retried later) when it fails. Returns when the relay closes the stream.
    pub async fn run_inbox<F, Fut, E>(
        &mut self,
        credits: u32,
        mut handler: F,
    ) -> Result<u64, ClientError>
    where
        F: FnMut(Delivery) -> Fut,
        Fut: std::future::Future<Output = Result<(), E>>,
        E: std::fmt::Display,
    {
        let mut inbox = self.inbox(credits).await?;
        let mut handled = 0;
        while let Some(mut d) = inbox.next().await? {
            if !d.inline {
                d.package = self.fetch_payload(&d.message_id).await?.into();
                d.inline = true;
            }
            let id = d.delivery_id.clone();
            match handler(d).await {
                Ok(()) => {
                    inbox.ack(&id).await?;
                    handled += 1;
                }
                Err(e) => inbox.nack(&id, &e.to_string()).await?,
            }
        }
        Ok(handled)
    }

    /// The bytes of a package, in memory. For large packages prefer
    /// [`fetch_payload_with`](Self::fetch_payload_with).
    pub async fn fetch_payload(&mut self, message_id: &str) -> Result<Vec<u8>, ClientError> {
        let mut out = Vec::new();
        self.fetch_payload_with(message_id, |chunk| {
            out.extend_from_slice(chunk);
            Ok(())
        })
        .await?;
        Ok(out)
    }

    /// Streams the bytes of a package to `sink`, a chunk (up to 1 MiB) at a time: a package
    /// of hundreds of megabytes never has to be in memory. Returns its size.
    pub async fn fetch_payload_with(
        &mut self,
        message_id: &str,
        mut sink: impl FnMut(&[u8]) -> std::io::Result<()>,
    ) -> Result<u64, ClientError> {
        let mut stream = self
            .inner
            .fetch_payload(pb::FetchPayloadRequest {
                message_id: message_id.to_owned(),
                offset: 0,
            })
            .await?
            .into_inner();
        let mut size = 0;
        while let Some(chunk) = stream.message().await? {
            sink(&chunk.data)?;
            size += chunk.data.len() as u64;
        }
        Ok(size)
    }

    /// A document's timeline.
    pub async fn trace(&mut self, document_id: &str) -> Result<Trace, ClientError> {
        Ok(self
            .inner
            .get_trace(pb::GetTraceRequest {
                target: Some(pb::get_trace_request::Target::DocumentId(
                    document_id.to_owned(),
                )),
            })
            .await?
            .into_inner())
    }

    /// One unit of the directory.
    pub async fn lookup_unit(&mut self, code: &str) -> Result<Unit, ClientError> {
        Ok(self
            .inner
            .lookup_unit(pb::LookupUnitRequest {
                code: code.to_owned(),
            })
            .await?
            .into_inner())
    }

    /// Units of the directory (children of `parent`, or all).
    pub async fn list_units(&mut self, parent: Option<&str>) -> Result<Vec<Unit>, ClientError> {
        Ok(self
            .inner
            .list_units(pb::ListUnitsRequest {
                parent: parent.unwrap_or_default().to_owned(),
                include_remote: false,
                limit: 0,
                after: String::new(),
            })
            .await?
            .into_inner()
            .units)
    }
}

/// An open inbox stream.
#[derive(Debug)]
pub struct Inbox {
    tx: mpsc::Sender<pb::InboxRequest>,
    events: tonic::Streaming<pb::InboxEvent>,
}

impl Inbox {
    /// The next delivery (`None` when the relay closed the stream). Packages over 4 MiB are
    /// announced, not inlined (`inline` is false): stream them with
    /// [`Client::fetch_payload_with`] before acknowledging.
    pub async fn next(&mut self) -> Result<Option<Delivery>, ClientError> {
        loop {
            match self.events.message().await? {
                None => return Ok(None),
                Some(pb::InboxEvent {
                    event: Some(pb::inbox_event::Event::Delivery(d)),
                }) => {
                    return Ok(Some(d));
                }
                Some(pb::InboxEvent {
                    event: Some(pb::inbox_event::Event::Closing(_)),
                }) => return Ok(None),
                Some(_) => continue,
            }
        }
    }

    /// The delivery is stored: it will not come again.
    pub async fn ack(&self, delivery_id: &str) -> Result<(), ClientError> {
        self.send(pb::inbox_request::Action::Ack(delivery_id.to_owned()))
            .await
    }

    /// The delivery could not be taken now: the relay retries it later.
    pub async fn nack(&self, delivery_id: &str, reason: &str) -> Result<(), ClientError> {
        self.send(pb::inbox_request::Action::Nack(pb::InboxNack {
            delivery_id: delivery_id.to_owned(),
            reason: reason.to_owned(),
        }))
        .await
    }

    /// Closes the stream gracefully: every ack and nack sent before is applied by the
    /// relay (durably) before this returns; deliveries still unacknowledged are offered again
    /// at once. Dropping an `Inbox` instead may cut the stream before the last acks are read
    /// (they are then delivered again: at least once).
    pub async fn close(self) -> Result<(), ClientError> {
        let Inbox { tx, mut events } = self;
        drop(tx);
        let drain = async {
            while let Some(_event) = events.message().await? {}
            Ok::<(), ClientError>(())
        };
        match tokio::time::timeout(std::time::Duration::from_secs(30), drain).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Closed),
        }
    }

    /// Grants more credits.
    pub async fn credit(&self, n: u32) -> Result<(), ClientError> {
        self.send(pb::inbox_request::Action::Credit(n)).await
    }

    async fn send(&self, action: pb::inbox_request::Action) -> Result<(), ClientError> {
        self.tx
            .send(pb::InboxRequest {
                action: Some(action),
            })
            .await
            .map_err(|_| ClientError::Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunks(messages: &[pb::SubmitDocumentRequest]) -> Vec<Bytes> {
        messages[1..]
            .iter()
            .map(|m| match &m.part {
                Some(pb::submit_document_request::Part::Chunk(c)) => c.clone(),
                other => panic!("a chunk was expected, not {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_package_is_sent_as_its_header_then_whole_chunks_of_it_in_order() {
        let header = pb::SubmitHeader {
            idempotency_key: "k".into(),
            size: 0,
            sha256: String::new(),
        };
        for len in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 2 * CHUNK + 7] {
            let package: Bytes = (0..len)
                .map(|i| (i % 251) as u8)
                .collect::<Vec<u8>>()
                .into();
            let messages = submission_messages(header.clone(), package.clone());
            assert!(
                matches!(
                    &messages[0].part,
                    Some(pb::submit_document_request::Part::Header(h)) if h.idempotency_key == "k"
                ),
                "the header comes first"
            );
            let chunks = chunks(&messages);
            assert_eq!(chunks.len(), len.div_ceil(CHUNK), "{len} bytes");
            assert!(chunks.iter().all(|c| !c.is_empty() && c.len() <= CHUNK));
            assert_eq!(chunks.concat(), package.to_vec(), "{len} bytes");
            // Slices of the package, not copies.
            if let Some(first) = chunks.first() {
                assert_eq!(first.as_ptr(), package.as_ptr());
            }
        }
    }
}
