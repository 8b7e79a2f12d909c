#![forbid(unsafe_code)]
//! The relay's client of the national axis, behind the [`Upstream`] trait.
//!
//! [`VdxpUpstream`] speaks the VDXP profile of `truc-vdxp` over HTTPS (rustls, custom CA,
//! optional client certificate, pooled connections, timeouts). Failures are classified so
//! the relay knows whether to retry ([`UpstreamError::is_transient`]), and a
//! [`CircuitBreaker`] stops hammering an axis that is down, probing it now and then.

mod breaker;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;
use truc_vdxp::{op, param, value, Envelope, ReceivedItem};
/// Answers of the profile that callers of [`Upstream`] see.
pub use truc_vdxp::{op as operations, Agency, SentItem};

pub use breaker::{BreakerState, CircuitBreaker, Permit};

/// Why a call to the axis failed.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No answer: connection refused or reset, timeout, HTTP 5xx. Retry later.
    #[error("the national axis is unreachable or failing: {0}")]
    Unavailable(String),
    /// The axis refused our signature, system id or clock: an operator must act (retrying
    /// cannot help).
    #[error("the national axis rejected this relay's credentials ({code}: {desc}): check the system id, the secret and the clock")]
    Credentials {
        /// The axis's error code.
        code: String,
        /// Its description.
        desc: String,
    },
    /// The axis refused the call for a reason that retrying will not change (a bad package,
    /// an unknown document).
    #[error("the national axis refused the call ({code}: {desc})")]
    Refused {
        /// The axis's error code.
        code: String,
        /// Its description.
        desc: String,
    },
    /// The axis answered a non-zero code this client does not know: treated as transient
    /// up to the retry budget.
    #[error("the national axis answered {code}: {desc}")]
    Unknown {
        /// The axis's error code.
        code: String,
        /// Its description.
        desc: String,
    },
    /// The answer could not be read.
    #[error("unreadable answer from the national axis: {0}")]
    Protocol(String),
    /// The circuit breaker is open: the axis failed repeatedly; the call was not made.
    #[error("the national axis link is down (circuit open); next trial calls in {0:?}")]
    CircuitOpen(Duration),
    /// Local configuration (certificates, URL).
    #[error("upstream configuration: {0}")]
    Config(String),
}

impl UpstreamError {
    /// Whether retrying later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            UpstreamError::Unavailable(_)
                | UpstreamError::Unknown { .. }
                | UpstreamError::Protocol(_)
                | UpstreamError::CircuitOpen(_)
        )
    }

    /// A stable code for logs, metrics and the relay's records.
    pub fn code(&self) -> &'static str {
        match self {
            UpstreamError::Unavailable(_) => "UPSTREAM_UNAVAILABLE",
            UpstreamError::Credentials { .. } => "UPSTREAM_CREDENTIALS",
            UpstreamError::Refused { .. } => "UPSTREAM_REFUSED",
            UpstreamError::Unknown { .. } => "UPSTREAM_UNKNOWN",
            UpstreamError::Protocol(_) => "UPSTREAM_PROTOCOL",
            UpstreamError::CircuitOpen(_) => "UPSTREAM_CIRCUIT_OPEN",
            UpstreamError::Config(_) => "UPSTREAM_CONFIG",
        }
    }
}

/// Classifies an axis `ErrorCode`: the profile's known permanent and credential refusals;
/// everything else is transient.
fn classify(envelope: Envelope) -> UpstreamError {
    let Envelope {
        error_code: code,
        error_desc: desc,
        ..
    } = envelope;
    match code.as_str() {
        "AUTH_HEADERS" | "AUTH_SYSTEM" | "AUTH_SIGNATURE" | "AUTH_TIMESTAMP" => {
            UpstreamError::Credentials { code, desc }
        }
        "HASH_MISMATCH" | "NOT_OWNER" | "BAD_TO" | "BAD_PACKAGE" | "NO_RECIPIENT" | "NOT_FOUND"
        | "BAD_STATUS" | "NO_FILE" | "BAD_FILE" | "BAD_MULTIPART" | "UNKNOWN_OPERATION" => {
            UpstreamError::Refused { code, desc }
        }
        "SERVER_BUSY" | "UNAVAILABLE" | "TIMEOUT" => {
            UpstreamError::Unavailable(format!("{code}: {desc}"))
        }
        _ => UpstreamError::Unknown { code, desc },
    }
}

/// A package waiting for this relay on the axis.
pub type Received = ReceivedItem;

/// What the relay needs from the national axis.
#[async_trait]
pub trait Upstream: Send + Sync + 'static {
    /// Sends a package once (the axis fans it out), given its SHA-256 (hex, which the
    /// profile's `hash-file` carries); returns the axis's transport id. A package on disk
    /// is streamed from its file, never held whole in memory.
    async fn send_upload(
        &self,
        package: Upload,
        sha256_hex: &str,
        from: &str,
        to: &[String],
        status: bool,
    ) -> Result<String, UpstreamError>;
    /// Same, for a package in memory (tests, tools).
    async fn send(
        &self,
        package: &[u8],
        from: &str,
        to: &[String],
        status: bool,
    ) -> Result<String, UpstreamError> {
        let hash = truc_edxml::Sha256Digest::of(package).to_hex();
        let package = Upload::Bytes(bytes::Bytes::copy_from_slice(package));
        self.send_upload(package, &hash, from, to, status).await
    }
    /// Packages waiting for this relay.
    async fn list_received(&self, status: bool) -> Result<Vec<Received>, UpstreamError>;
    /// One package's bytes as its answer arrives, decoded piece by piece, so that memory
    /// stays bounded whatever the package's size.
    async fn fetch_stream(&self, doc_id: &str) -> Result<PackageDownload, UpstreamError>;
    /// One package's bytes, whole (small packages, tests).
    async fn fetch(&self, doc_id: &str) -> Result<Vec<u8>, UpstreamError> {
        let mut download = self.fetch_stream(doc_id).await?;
        let mut bytes = Vec::new();
        while let Some(piece) = download.next_piece().await? {
            bytes.extend_from_slice(&piece);
        }
        Ok(bytes)
    }
    /// Acknowledges a received package (`done`), or refuses it for good (`fail`).
    async fn acknowledge(&self, doc_id: &str, done: bool) -> Result<(), UpstreamError>;
    /// What happened to a package this relay sent, per recipient.
    async fn sent_report(&self, doc_id: &str) -> Result<Vec<SentItem>, UpstreamError>;
    /// The national directory.
    async fn agencies(&self) -> Result<Vec<Agency>, UpstreamError>;
    /// The link's state, for readiness and metrics.
    fn link(&self) -> BreakerState;
}

/// The slowest transfer of a package a call allows, in bytes per second (1 MiB/s, about
/// 8 Mbit/s): a call carrying a package may take the call timeout plus a second per MiB, so
/// a large package on a modest link is not cut off (and sent again, and cut off again) by
/// a timeout meant for small calls.
pub const MIN_TRANSFER_BYTES_PER_SEC: u64 = 1024 * 1024;

/// How long a call carrying `bytes` may take, given the timeout of a small call.
pub fn transfer_allowance(timeout: Duration, bytes: u64) -> Duration {
    timeout + Duration::from_millis(bytes.saturating_mul(1000) / MIN_TRANSFER_BYTES_PER_SEC)
}

/// A package to send up.
#[derive(Debug, Clone)]
pub enum Upload {
    /// In memory.
    Bytes(bytes::Bytes),
    /// A file, streamed as it is sent.
    File {
        /// Its path.
        path: std::path::PathBuf,
        /// Its size, announced in the request.
        size: u64,
    },
}

impl Upload {
    /// Its size in bytes.
    fn len(&self) -> u64 {
        match self {
            Upload::Bytes(b) => b.len() as u64,
            Upload::File { size, .. } => *size,
        }
    }

    /// The multipart part that carries it (its file opened now, before the call is counted
    /// for or against the link).
    async fn into_part(self) -> Result<FilePart, UpstreamError> {
        let len = self.len();
        let part = match self {
            Upload::Bytes(b) => {
                let len = b.len() as u64;
                reqwest::multipart::Part::stream_with_length(b, len)
            }
            Upload::File { path, size } => {
                let file = tokio::fs::File::open(&path).await.map_err(|e| {
                    UpstreamError::Protocol(format!("opening the package {}: {e}", path.display()))
                })?;
                reqwest::multipart::Part::stream_with_length(file, size)
            }
        };
        let part = part
            .file_name("package.edxml")
            .mime_str("application/octet-stream")
            .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
        Ok(FilePart { part, len })
    }
}

/// A package ready to go in a call's multipart body.
struct FilePart {
    part: reqwest::multipart::Part,
    len: u64,
}

/// How to reach the axis. Its `Debug` leaves the secret and the client key out.
#[derive(Clone)]
pub struct UpstreamConfig {
    /// Base URL; each operation is `{base}/{operation}`.
    pub base_url: String,
    /// This relay's system id.
    pub system_id: String,
    /// Its secret.
    pub secret: String,
    /// The CA certificates (PEM) to trust for the axis, instead of the system's.
    pub ca_pem: Option<Vec<u8>>,
    /// A client certificate and key (PEM), if the axis asks for one.
    pub client_identity_pem: Option<(Vec<u8>, Vec<u8>)>,
    /// Per-call timeout.
    pub timeout: Duration,
    /// Longest the circuit stays open between probes of a failing axis.
    pub breaker_max_open: Duration,
}

impl std::fmt::Debug for UpstreamConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamConfig")
            .field("base_url", &self.base_url)
            .field("system_id", &self.system_id)
            .field("secret", &"(hidden)")
            .field(
                "ca_pem",
                &self.ca_pem.as_ref().map(|p| format!("{} bytes", p.len())),
            )
            .field(
                "client_identity_pem",
                &self.client_identity_pem.as_ref().map(|_| "(hidden)"),
            )
            .field("timeout", &self.timeout)
            .field("breaker_max_open", &self.breaker_max_open)
            .finish()
    }
}

/// The VDXP-profile client.
#[derive(Debug, Clone)]
pub struct VdxpUpstream {
    http: reqwest::Client,
    config: Arc<UpstreamConfig>,
    breaker: Arc<CircuitBreaker>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The certificate authorities HTTPS to the axis trusts: those of `ca_pem` (`[upstream]
/// ca_file`) only, when given, so that no other authority can stand in for the axis;
/// otherwise the system's (its trust store, or the files `SSL_CERT_FILE` and
/// `SSL_CERT_DIR` name), where the real axis's certificate chains to.
fn trusted_roots(ca_pem: Option<&[u8]>) -> Result<rustls::RootCertStore, UpstreamError> {
    let mut roots = rustls::RootCertStore::empty();
    if let Some(pem) = ca_pem {
        use rustls_pki_types::pem::PemObject;
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| UpstreamError::Config(format!("CA bundle: {e}")))?;
            roots
                .add(cert)
                .map_err(|e| UpstreamError::Config(format!("CA bundle: {e}")))?;
        }
        return Ok(roots);
    }
    let system = rustls_native_certs::load_native_certs();
    for e in &system.errors {
        tracing::warn!(error = %e, "some of the system's trusted certificates could not be read");
    }
    let (_, unusable) = roots.add_parsable_certificates(system.certs);
    if unusable > 0 {
        tracing::debug!(
            unusable,
            "system certificates rustls cannot use were left out"
        );
    }
    if roots.is_empty() {
        tracing::warn!("no trusted certificate authority: the system has none and [upstream] ca_file is not set, so HTTPS to the national axis will fail");
    }
    Ok(roots)
}

impl VdxpUpstream {
    /// Builds the client (TLS with the ring provider, pooled connections).
    pub fn new(config: UpstreamConfig) -> Result<Self, UpstreamError> {
        let roots = trusted_roots(config.ca_pem.as_deref())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| UpstreamError::Config(e.to_string()))?
            .with_root_certificates(roots);
        let tls = match &config.client_identity_pem {
            Some((cert, key)) => {
                use rustls_pki_types::pem::PemObject;
                let certs = rustls_pki_types::CertificateDer::pem_slice_iter(cert)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| UpstreamError::Config(format!("client certificate: {e}")))?;
                let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key)
                    .map_err(|e| UpstreamError::Config(format!("client key: {e}")))?;
                builder
                    .with_client_auth_cert(certs, key)
                    .map_err(|e| UpstreamError::Config(format!("client certificate: {e}")))?
            }
            None => builder.with_no_client_auth(),
        };
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .timeout(config.timeout)
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            // A redirect would carry the signed headers to another host, which could replay
            // them: the axis answers at its own address or not at all.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| UpstreamError::Config(e.to_string()))?;
        if config.base_url.starts_with("http://") {
            tracing::warn!(base = %config.base_url, "the national axis is reached over plain HTTP: packages and credentials cross the network unprotected (use https:// outside a test)");
        }
        let max_open = config.breaker_max_open;
        Ok(VdxpUpstream {
            http,
            config: Arc::new(config),
            breaker: Arc::new(CircuitBreaker::new(
                10,
                Duration::from_secs(5).min(max_open),
                max_open,
            )),
        })
    }

    /// The circuit breaker (for its state and tuning).
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    async fn call(
        &self,
        operation: &str,
        params: &[(&str, &str)],
        file: Option<FilePart>,
    ) -> Result<Value, UpstreamError> {
        let permit = self.breaker.admit()?;
        let result = self.call_once(operation, params, file).await;
        match &result {
            Ok(_) => permit.success(),
            // Only failures of the link count against it; a refused package does not.
            Err(e) if e.is_transient() => permit.failure(),
            Err(_) => permit.success(),
        }
        result
    }

    async fn call_once(
        &self,
        operation: &str,
        params: &[(&str, &str)],
        file: Option<FilePart>,
    ) -> Result<Value, UpstreamError> {
        let timeout = match &file {
            Some(part) => transfer_allowance(self.config.timeout, part.len),
            None => self.config.timeout,
        };
        let response = self.request(operation, params, file, timeout).await?;
        read_answer(response).await
    }

    /// Sends one signed call and returns the answer once its headers are in; `timeout`
    /// bounds the whole call, answer included.
    async fn request(
        &self,
        operation: &str,
        params: &[(&str, &str)],
        file: Option<FilePart>,
        timeout: Duration,
    ) -> Result<reqwest::Response, UpstreamError> {
        let ts = truc_vdxp::format_timestamp(now_ms());
        let mut all = vec![
            (param::SYSTEM_ID, self.config.system_id.as_str()),
            (param::TIMESTAMP, ts.as_str()),
        ];
        all.extend_from_slice(params);
        let url = format!("{}/{operation}", self.config.base_url.trim_end_matches('/'));
        let mut request = self.http.post(url).timeout(timeout);
        for (k, v) in truc_vdxp::sign(&all, self.config.secret.as_bytes()) {
            request = request.header(k, v);
        }
        if let Some(file) = file {
            request = request
                .multipart(reqwest::multipart::Form::new().part(truc_vdxp::FILE_FIELD, file.part));
        }
        request
            .send()
            .await
            .map_err(|e| UpstreamError::Unavailable(e.to_string()))
    }
}

/// Reads a whole (small) answer: its envelope decides between the answer and an error.
/// The largest answer read from the axis (lists, acknowledgements, errors; a package comes
/// through `getEdoc`'s stream instead): a hostile or broken axis cannot fill the relay's
/// memory.
const MAX_ANSWER_BYTES: usize = 64 << 20;

async fn read_answer(mut response: reqwest::Response) -> Result<Value, UpstreamError> {
    let status = response.status();
    if status.is_redirection() {
        let to = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("nowhere said")
            .to_owned();
        return Err(UpstreamError::Protocol(format!(
            "HTTP {status} to {to}: redirects are not followed (they would carry the signed headers elsewhere); set [upstream] base_url to the axis's own address"
        )));
    }
    let too_large = || {
        UpstreamError::Protocol(format!(
            "HTTP {status}: the answer is larger than {} MiB",
            MAX_ANSWER_BYTES >> 20
        ))
    };
    if response
        .content_length()
        .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| {
        UpstreamError::Unavailable(format!("HTTP {status}: reading the answer: {e}"))
    })? {
        if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    let body: Value = match serde_json::from_slice(&bytes) {
        Ok(v) => v,
        Err(_) if status.is_server_error() => {
            return Err(UpstreamError::Unavailable(format!("HTTP {status}")))
        }
        Err(e) => return Err(UpstreamError::Protocol(format!("HTTP {status}: {e}"))),
    };
    // Read in place: the body is not copied for its envelope.
    let envelope = Envelope::deserialize(&body)
        .map_err(|e| UpstreamError::Protocol(format!("HTTP {status}: {e}")))?;
    if status.is_server_error() {
        return Err(UpstreamError::Unavailable(format!(
            "HTTP {status} {}: {}",
            envelope.error_code, envelope.error_desc
        )));
    }
    if !envelope.is_ok() {
        return Err(classify(envelope));
    }
    Ok(body)
}

/// A package coming from the axis (`getEdoc`), read as it arrives: [`next_piece`]
/// (Self::next_piece) gives its bytes, decoded, a piece at a time. The answer's envelope
/// comes last, so a download that ends in an error may already have given pieces: they
/// must be thrown away.
pub struct PackageDownload {
    response: Option<reqwest::Response>,
    reader: truc_vdxp::EdocAnswerReader,
    permit: Option<Permit>,
    observer: Option<DownloadObserver>,
    /// Longest wait for the next piece (the call timeout).
    idle: Duration,
    /// When the whole answer must be in: the call timeout plus the transfer allowance for
    /// its announced length.
    deadline: tokio::time::Instant,
    /// It ended in an error: asking for more is an error again, not a clean end.
    failed: bool,
}

/// Told how a download ended (`Ok` also when it was dropped part way).
pub type DownloadObserver = Box<dyn FnOnce(Result<(), &UpstreamError>) + Send>;

impl std::fmt::Debug for PackageDownload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackageDownload")
            .field("decoded", &self.reader.decoded())
            .field("done", &self.response.is_none())
            .finish()
    }
}

impl PackageDownload {
    /// The next decoded bytes of the package; `None` once the answer is over and says the
    /// call succeeded.
    pub async fn next_piece(&mut self) -> Result<Option<Vec<u8>>, UpstreamError> {
        let r = self.advance().await;
        match &r {
            Ok(Some(_)) => {}
            Ok(None) => self.end(Ok(())),
            Err(e) => self.end(Err(e)),
        }
        r
    }

    /// Calls `observer` when the download ends (for metrics).
    pub fn observed(mut self, observer: DownloadObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    async fn advance(&mut self) -> Result<Option<Vec<u8>>, UpstreamError> {
        if self.failed {
            return Err(UpstreamError::Protocol(
                "the download failed already: its pieces are not the package".into(),
            ));
        }
        let Some(response) = self.response.as_mut() else {
            return Ok(None);
        };
        loop {
            let wait_until = self.deadline.min(tokio::time::Instant::now() + self.idle);
            let chunk = tokio::time::timeout_at(wait_until, response.chunk())
                .await
                .map_err(|_| {
                    UpstreamError::Unavailable(format!(
                        "the package stopped coming (nothing for {:?}, or past its time) after {} bytes",
                        self.idle,
                        self.reader.decoded()
                    ))
                })?
                .map_err(|e| UpstreamError::Unavailable(format!("reading the package: {e}")))?;
            let Some(chunk) = chunk else { break };
            let mut out = Vec::new();
            self.reader
                .feed(&chunk, &mut out)
                .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
            if !out.is_empty() {
                return Ok(Some(out));
            }
        }
        self.response = None;
        let reader = std::mem::take(&mut self.reader);
        let (envelope, had_package) = reader
            .finish()
            .map_err(|e| UpstreamError::Protocol(e.to_string()))?;
        if !envelope.is_ok() {
            return Err(classify(envelope));
        }
        if !had_package {
            return Err(UpstreamError::Protocol(
                "the answer carries no package (no data)".into(),
            ));
        }
        Ok(None)
    }

    fn end(&mut self, result: Result<(), &UpstreamError>) {
        self.response = None;
        self.failed |= result.is_err();
        if let Some(permit) = self.permit.take() {
            match result {
                Err(e) if e.is_transient() => permit.failure(),
                _ => permit.success(),
            }
        }
        if let Some(observer) = self.observer.take() {
            observer(result);
        }
    }
}

impl Drop for PackageDownload {
    fn drop(&mut self) {
        // Stopped by its reader (the package is refused, say): not the link's fault.
        if let Some(observer) = self.observer.take() {
            observer(Ok(()));
        }
    }
}

fn field<T: DeserializeOwned>(body: &Value, name: &str) -> Result<T, UpstreamError> {
    T::deserialize(body.get(name).unwrap_or(&Value::Null))
        .map_err(|e| UpstreamError::Protocol(format!("field {name}: {e}")))
}

#[async_trait]
impl Upstream for VdxpUpstream {
    async fn send_upload(
        &self,
        package: Upload,
        sha256_hex: &str,
        from: &str,
        to: &[String],
        status: bool,
    ) -> Result<String, UpstreamError> {
        // A blob that cannot be opened is this relay's trouble, not the link's.
        let file = package.into_part().await?;
        let to_json = serde_json::to_string(to).unwrap_or_else(|_| "[]".into());
        let message_type = if status {
            value::MESSAGE_STATUS
        } else {
            value::MESSAGE_EDOC
        };
        let body = self
            .call(
                op::SEND_EDOC,
                &[
                    (param::FROM, from),
                    (param::TO, &to_json),
                    (param::SERVICE_TYPE, value::SERVICE_EDOC),
                    (param::MESSAGE_TYPE, message_type),
                    (param::HASH_FILE, sha256_hex),
                ],
                Some(file),
            )
            .await?;
        field(&body, "DocId")
    }

    async fn list_received(&self, status: bool) -> Result<Vec<Received>, UpstreamError> {
        let message_type = if status {
            value::MESSAGE_STATUS
        } else {
            value::MESSAGE_EDOC
        };
        let body = self
            .call(
                op::GET_RECEIVED_EDOC_LIST,
                &[
                    (param::SERVICE_TYPE, value::SERVICE_EDOC),
                    (param::MESSAGE_TYPE, message_type),
                ],
                None,
            )
            .await?;
        field(&body, "data")
    }

    async fn fetch_stream(&self, doc_id: &str) -> Result<PackageDownload, UpstreamError> {
        let mut permit = self.breaker.admit()?;
        // The answer's headers within the call timeout; its body as long as it keeps coming
        // (see PackageDownload::advance), not cut off by the client's timeout for small calls.
        let headers = tokio::time::timeout(
            self.config.timeout,
            self.request(
                op::GET_EDOC,
                &[(param::DOC_ID, doc_id)],
                None,
                // The body's own limits are the download's (idle time, deadline by length).
                transfer_allowance(self.config.timeout, 4 << 30),
            ),
        )
        .await
        .unwrap_or_else(|_| {
            Err(UpstreamError::Unavailable(format!(
                "no answer to getEdoc within {:?}",
                self.config.timeout
            )))
        });
        let response = match headers {
            Ok(r) if r.status().is_success() => r,
            // An error answer is small: read whole, it says what went wrong.
            Ok(r) => {
                let e = match read_answer(r).await {
                    Ok(_) => UpstreamError::Protocol("getEdoc answered with an HTTP error".into()),
                    Err(e) => e,
                };
                match &e {
                    e if e.is_transient() => permit.failure(),
                    _ => permit.success(),
                }
                return Err(e);
            }
            Err(e) => {
                permit.failure();
                return Err(e);
            }
        };
        // Answered: a long body must not hold a trial slot of a half-open breaker.
        permit.answered();
        // Without a length, as long as a 512 MiB package (in base64) would take.
        let length = response
            .content_length()
            .unwrap_or(512 * 1024 * 1024 / 3 * 4);
        Ok(PackageDownload {
            response: Some(response),
            reader: truc_vdxp::EdocAnswerReader::new(),
            permit: Some(permit),
            observer: None,
            idle: self.config.timeout,
            deadline: tokio::time::Instant::now() + transfer_allowance(self.config.timeout, length),
            failed: false,
        })
    }

    async fn acknowledge(&self, doc_id: &str, done: bool) -> Result<(), UpstreamError> {
        let status = if done {
            value::STATUS_DONE
        } else {
            value::STATUS_FAIL
        };
        self.call(
            op::UPDATE_STATUS,
            &[(param::DOC_ID, doc_id), (param::STATUS, status)],
            None,
        )
        .await
        .map(|_| ())
    }

    async fn sent_report(&self, doc_id: &str) -> Result<Vec<SentItem>, UpstreamError> {
        let body = self
            .call(op::GET_SENT_EDOC_LIST, &[(param::DOC_ID, doc_id)], None)
            .await?;
        field(&body, "data")
    }

    async fn agencies(&self) -> Result<Vec<Agency>, UpstreamError> {
        let body = self.call(op::GET_AGENCIES_LIST, &[], None).await?;
        field(&body, "data")
    }

    fn link(&self) -> BreakerState {
        self.breaker.state()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_and_the_client_key_stay_out_of_debug_output() {
        let config = UpstreamConfig {
            base_url: "https://axis.example".into(),
            system_id: "bogtvt".into(),
            secret: "s3cr3t-value".into(),
            ca_pem: None,
            client_identity_pem: Some((b"CERT".to_vec(), b"PRIVATE-KEY-BYTES".to_vec())),
            timeout: Duration::from_secs(30),
            breaker_max_open: Duration::from_secs(300),
        };
        let shown = format!("{config:?}");
        assert!(shown.contains("bogtvt"), "{shown}");
        assert!(!shown.contains("s3cr3t-value"), "{shown}");
        assert!(!shown.contains("PRIVATE-KEY"), "{shown}");
    }
}
