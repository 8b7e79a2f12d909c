//! The `truc.v1.Relay` gRPC service for unit adapters.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rustls_pki_types::CertificateDer;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::{Stream, StreamExt};
use tonic::codegen::http;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::{Request, Response, Status, Streaming};
use truc_edxml::{Limits, OrgCode, PackageReader};
use truc_proto::v1 as pb;
use truc_relay::{Relay, RelayError, RouteDecision, Submitter, Unit};
use truc_store::{ClaimToken, Destination, MessageId, Payload, PayloadInput, Timestamp};

use crate::config::LimitsConfig;
use crate::intake::Incoming;
use crate::metrics::{InboxGuard, Metrics, INBOX};

/// Metadata key carrying the relay's stable error code.
pub const ERROR_CODE_KEY: &str = "truc-error-code";

/// A gRPC status with the relay's stable code in the metadata.
pub fn status(code: tonic::Code, error_code: &str, message: impl Into<String>) -> Status {
    let mut s = Status::new(code, message);
    if let Ok(v) = error_code.parse() {
        s.metadata_mut().insert(ERROR_CODE_KEY, v);
    }
    s
}

/// The answer to a client certificate that the adapters' CA or its revocation lists, as
/// reloaded since the connection was opened, no longer accept.
fn certificate_rejected(reason: String) -> Status {
    status(
        tonic::Code::Unauthenticated,
        "AUTH_CERTIFICATE_REJECTED",
        format!("the client certificate is no longer accepted ({reason}): it was revoked, has expired, or is not signed by the adapters' CA any more"),
    )
}

fn relay_status(e: RelayError) -> Status {
    use tonic::Code;
    let code = match &e {
        RelayError::Package(p) => match p.code() {
            "EDXML_TOO_LARGE" | "EDXML_ATTACHMENT_TOO_LARGE" => Code::ResourceExhausted,
            _ => Code::InvalidArgument,
        },
        RelayError::Store(s) => match s.code() {
            "STORE_FULL" => Code::ResourceExhausted,
            "STORE_NOT_FOUND" | "STORE_PURGED" => Code::NotFound,
            "STORE_CLOSED" => Code::Unavailable,
            _ => Code::Internal,
        },
        RelayError::UnknownUnit(_)
        | RelayError::UnknownRemote(_)
        | RelayError::UnknownDocument(_) => Code::InvalidArgument,
        RelayError::ForgedSender { .. } => Code::PermissionDenied,
        RelayError::UnknownCertificate(_) => Code::Unauthenticated,
        RelayError::Suspended(_) => Code::PermissionDenied,
        _ => Code::Internal,
    };
    status(code, e.code(), e.to_string())
}

/// Who is calling: the unit of the adapter, or anyone in development mode.
#[derive(Debug, Clone)]
pub enum Identity {
    /// Mutual TLS: the certificate maps to a registered unit; it is checked again against
    /// the current CA and revocation lists after a reload.
    Certificates(crate::tls::ReloadableTls),
    /// Development only: every caller is this unit.
    Insecure(OrgCode),
}

/// The service.
#[derive(Clone)]
pub struct RelayService {
    relay: Arc<Relay>,
    limits: LimitsConfig,
    identity: Identity,
    closing: tokio::sync::watch::Receiver<bool>,
    /// Submissions per unit, shared by all of an adapter's connections.
    rate: Arc<governor::DefaultKeyedRateLimiter<OrgCode>>,
    /// Memory for packages being received (see [`LimitsConfig::memory_budget_bytes`]).
    memory: Arc<MemoryBudget>,
    metrics: Arc<Metrics>,
}

/// The bytes of packages being received that the relay may hold in memory: in all, and per
/// unit (a quarter), so that neither a flood nor a unit's stalled submissions can grow the
/// relay's memory without bound or take all of it from the other units.
pub(crate) struct MemoryBudget {
    total: Arc<tokio::sync::Semaphore>,
    reserved: prometheus_client::metrics::gauge::Gauge,
    per_unit: usize,
    units: std::sync::Mutex<std::collections::HashMap<OrgCode, Arc<tokio::sync::Semaphore>>>,
}

/// A submission's share of the memory budget, returned when dropped.
pub(crate) struct MemoryShare {
    bytes: usize,
    reserved: prometheus_client::metrics::gauge::Gauge,
    _unit: tokio::sync::OwnedSemaphorePermit,
    _total: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for MemoryShare {
    fn drop(&mut self) {
        self.reserved.dec_by(self.bytes as i64);
    }
}

impl MemoryBudget {
    fn new(total: usize, reserved: prometheus_client::metrics::gauge::Gauge) -> Self {
        let total = total.clamp(1, tokio::sync::Semaphore::MAX_PERMITS);
        MemoryBudget {
            total: Arc::new(tokio::sync::Semaphore::new(total)),
            reserved,
            per_unit: (total / 4).max(1),
            units: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// `wanted` bytes for `unit` (fewer if that is more than a unit may hold), if the
    /// unit's part and the total both have them now; `None` otherwise. Never waits: a
    /// submission waiting unread would hold its bytes in the HTTP/2 connection's window and
    /// stall every other stream of the connection (measured: the whole connection, inbox
    /// included, stopped), so one that gets no share is received into a staging file.
    fn try_take(&self, unit: &OrgCode, wanted: usize) -> Option<MemoryShare> {
        let bytes = wanted.clamp(1, self.per_unit).min(u32::MAX as usize);
        let unit_semaphore = {
            let mut units = self.units.lock().unwrap_or_else(|p| p.into_inner());
            match units.get(unit) {
                Some(s) => s.clone(),
                None => units
                    .entry(unit.clone())
                    .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(self.per_unit)))
                    .clone(),
            }
        };
        let unit_permit = unit_semaphore.try_acquire_many_owned(bytes as u32).ok()?;
        let total_permit = self
            .total
            .clone()
            .try_acquire_many_owned(bytes as u32)
            .ok()?;
        self.reserved.inc_by(bytes as i64);
        Some(MemoryShare {
            bytes,
            reserved: self.reserved.clone(),
            _unit: unit_permit,
            _total: total_permit,
        })
    }
}

impl std::fmt::Debug for RelayService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayService")
            .field("identity", &self.identity)
            .finish()
    }
}

#[derive(Clone)]
struct Caller {
    unit: Unit,
    certificate: String,
    /// The certificate's DNS names (empty in development mode).
    names: Vec<String>,
    /// The client's certificate chain (none in development mode).
    chain: Option<Arc<Vec<CertificateDer<'static>>>>,
}

/// Identifies the caller of every Relay call before tonic reads its messages: a
/// certificate of no registered unit (or of a suspended one, or revoked since) is answered
/// at once, without the relay reading up to a megabyte of a one-shot call's message first.
/// The handler finds the caller in the request's extensions.
#[derive(Clone)]
pub struct AuthenticateFirst {
    service: RelayService,
}

impl AuthenticateFirst {
    /// The layer for `service`'s calls.
    pub fn new(service: RelayService) -> Self {
        AuthenticateFirst { service }
    }
}

impl<S> tower::Layer<S> for AuthenticateFirst {
    type Service = AuthenticatedFirst<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AuthenticatedFirst {
            inner,
            service: self.service.clone(),
        }
    }
}

/// The service [`AuthenticateFirst`] makes.
#[derive(Clone)]
pub struct AuthenticatedFirst<S> {
    inner: S,
    service: RelayService,
}

impl<S> tower::Service<http::Request<tonic::body::Body>> for AuthenticatedFirst<S>
where
    S: tower::Service<
        http::Request<tonic::body::Body>,
        Response = http::Response<tonic::body::Body>,
    >,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<tonic::body::Body>) -> Self::Future {
        if request.uri().path().starts_with(RELAY_PATH_PREFIX) {
            let certs = request
                .extensions()
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|info| info.peer_certs());
            match self.service.identify(certs) {
                Ok(caller) => {
                    request.extensions_mut().insert(caller);
                }
                Err(refused) => return Box::pin(std::future::ready(Ok(refused.into_http()))),
            }
        }
        Box::pin(self.inner.call(request))
    }
}

/// The paths of the Relay service's calls.
const RELAY_PATH_PREFIX: &str = "/truc.v1.Relay/";

/// Who an open inbox stream serves: checked again while it stays open.
struct SessionIdentity {
    fingerprint: String,
    names: Vec<String>,
    chain: Arc<Vec<CertificateDer<'static>>>,
    tls: crate::tls::ReloadableTls,
}

impl RelayService {
    /// A service over a relay. When `closing` turns true, open inbox streams end (after
    /// telling the adapter to reconnect), so a graceful shutdown does not wait for them.
    pub fn new(
        relay: Arc<Relay>,
        limits: LimitsConfig,
        identity: Identity,
        closing: tokio::sync::watch::Receiver<bool>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let per_second = std::num::NonZeroU32::new(limits.submits_per_second.max(1))
            .unwrap_or(std::num::NonZeroU32::MIN);
        let burst = std::num::NonZeroU32::new(limits.submit_burst.max(1))
            .unwrap_or(std::num::NonZeroU32::MIN);
        let quota = governor::Quota::per_second(per_second).allow_burst(burst);
        RelayService {
            relay,
            identity,
            closing,
            rate: Arc::new(governor::RateLimiter::keyed(quota)),
            memory: Arc::new(MemoryBudget::new(
                limits.memory_budget_bytes,
                metrics.submission_memory(),
            )),
            limits,
            metrics,
        }
    }

    /// Refuses a submission over the unit's rate, telling the adapter to slow down.
    fn check_rate(&self, caller: &Caller) -> Result<(), Status> {
        self.rate.check_key(&caller.unit.code).map_err(|_| {
            status(
                tonic::Code::ResourceExhausted,
                "RATE_LIMITED",
                format!(
                    "{} is over its rate of {} submissions per second: retry after a short pause",
                    caller.unit.code, self.limits.submits_per_second
                ),
            )
        })
    }

    /// Who makes a call: identified by [`AuthenticateFirst`] before its messages were read.
    fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        match request.extensions().get::<Caller>() {
            Some(caller) => Ok(caller.clone()),
            None => self.identify(request.peer_certs()),
        }
    }

    /// Who presents the certificate chain `certs`: a registered, active unit whose
    /// certificate the adapters' CA and its revocation lists accept now.
    fn identify(&self, certs: Option<Arc<Vec<CertificateDer<'static>>>>) -> Result<Caller, Status> {
        let certificate = match &self.identity {
            Identity::Insecure(unit) => {
                let unit = self.relay.registry().unit(unit).ok_or_else(|| {
                    status(
                        tonic::Code::Unauthenticated,
                        "AUTH_UNKNOWN_CERTIFICATE",
                        "the development unit is not registered",
                    )
                })?;
                return Ok(Caller {
                    unit,
                    certificate: "insecure-development-mode".into(),
                    names: Vec::new(),
                    chain: None,
                });
            }
            Identity::Certificates(tls) => {
                let chain = certs.filter(|certs| !certs.is_empty()).ok_or_else(|| {
                    status(
                        tonic::Code::Unauthenticated,
                        "AUTH_NO_CERTIFICATE",
                        "no client certificate: adapters must connect with mutual TLS",
                    )
                })?;
                (chain, tls)
            }
        };
        let (chain, tls) = certificate;
        // Verified against the adapters' CA during the handshake; again if the CA or the
        // revocation lists were reloaded since.
        let names = crate::tls::dns_names(&chain[0]);
        let fingerprint = crate::tls::fingerprint(&chain[0]);
        tls.recheck(&fingerprint, &chain)
            .map_err(certificate_rejected)?;
        let unit = self
            .relay
            .authenticate(&fingerprint, &names)
            .map_err(relay_status)?;
        Ok(Caller {
            unit,
            certificate: fingerprint,
            names,
            chain: Some(chain),
        })
    }

    /// Whether `caller` may see a message: its unit (or a unit it serves) sent it, or a
    /// copy of it goes to its inbox.
    async fn may_see(&self, caller: &Caller, id: MessageId) -> Result<bool, Status> {
        let store = self.relay.store();
        let Some(m) = store
            .message(id)
            .await
            .map_err(|e| relay_status(e.into()))?
        else {
            return Ok(false);
        };
        if self.sent_by(caller, &m) {
            return Ok(true);
        }
        let deliveries = store
            .deliveries(id)
            .await
            .map_err(|e| relay_status(e.into()))?;
        Ok(goes_to(caller, &deliveries))
    }

    /// Whether `caller`'s unit (or a unit it serves) sent `m`.
    fn sent_by(&self, caller: &Caller, m: &truc_store::MessageRecord) -> bool {
        self.relay
            .registry()
            .may_send_as(&caller.unit.code, &m.sender)
    }
}

/// Whether one of `deliveries` goes to `caller`'s inbox.
fn goes_to<'a>(
    caller: &Caller,
    deliveries: impl IntoIterator<Item = &'a truc_store::Delivery>,
) -> bool {
    let inbox = Destination::Inbox(caller.unit.code.clone());
    deliveries.into_iter().any(|d| d.destination == inbox)
}

fn receipt(r: truc_relay::Receipt) -> pb::Receipt {
    pb::Receipt {
        message_id: r.message.id.to_string(),
        document_id: r
            .message
            .document_id
            .as_ref()
            .map(|d| d.to_string())
            .unwrap_or_default(),
        kind: r.message.kind.as_str().into(),
        routes: r
            .routes
            .iter()
            .map(|route| {
                let (kind, via) = match &route.decision {
                    RouteDecision::Local { inbox } => (pb::RouteKind::Local, inbox.to_string()),
                    RouteDecision::ViaParent { inbox } => {
                        (pb::RouteKind::ViaParent, inbox.to_string())
                    }
                    RouteDecision::Held { inbox } => (pb::RouteKind::Held, inbox.to_string()),
                    RouteDecision::NationalAxis => (pb::RouteKind::NationalAxis, String::new()),
                };
                pb::Route {
                    recipient: route.recipient.to_string(),
                    kind: kind as i32,
                    via,
                }
            })
            .collect(),
        duplicate: r.duplicate,
        sha256: r.message.sha256.to_hex(),
        size: r.message.size,
        accepted_at: r.message.received_at.to_string(),
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

impl RelayService {
    /// Counts a submission by its outcome.
    fn count_submission(&self, kind: &'static str, result: &Result<Response<pb::Receipt>, Status>) {
        let outcome = match result {
            Ok(r) if r.get_ref().duplicate => "duplicate",
            Ok(_) => "accepted",
            Err(_) => "refused",
        };
        self.metrics.submitted(kind, "adapter", outcome);
    }

    async fn receive_document(
        &self,
        request: Request<Streaming<pb::SubmitDocumentRequest>>,
    ) -> Result<Response<pb::Receipt>, Status> {
        let caller = self.caller(&request)?;
        self.check_rate(&caller)?;
        let idle = Duration::from_secs(self.limits.idle_timeout_secs.max(1));
        let mut stream = request.into_inner();
        let header = match next_message(&mut stream, idle).await? {
            Some(pb::SubmitDocumentRequest {
                part: Some(pb::submit_document_request::Part::Header(h)),
            }) => h,
            _ => {
                return Err(status(
                    tonic::Code::InvalidArgument,
                    "SUBMIT_NO_HEADER",
                    "the first message of SubmitDocument must carry the header",
                ))
            }
        };
        if header.size > self.limits.max_package_bytes {
            return Err(status(
                tonic::Code::ResourceExhausted,
                "EDXML_TOO_LARGE",
                format!(
                    "the package ({} bytes) exceeds the limit of {} bytes",
                    header.size, self.limits.max_package_bytes
                ),
            ));
        }
        if header.idempotency_key.len() > 128 {
            return Err(status(
                tonic::Code::InvalidArgument,
                "SUBMIT_BAD_IDEMPOTENCY_KEY",
                "the idempotency key is longer than 128 characters",
            ));
        }
        let limits = Limits {
            max_package_bytes: self.limits.max_package_bytes,
            ..Limits::default()
        };
        // Its share of the memory for packages being received, before any byte is read (a
        // package of undeclared size is counted at the most one may keep in memory);
        // without one, it is received into a staging file.
        let declared = usize::try_from(header.size).unwrap_or(usize::MAX);
        let wanted = if declared == 0 {
            self.limits.memory_package_bytes
        } else {
            declared.min(self.limits.memory_package_bytes)
        };
        let mut memory = self.memory.try_take(&caller.unit.code, wanted);
        if memory.is_none() {
            self.metrics.submission_spilled();
        }
        // The relay forwards packages whole: the package's digest is kept, the
        // attachments' are not needed.
        let mut incoming = Incoming::new(
            PackageReader::new(limits).without_attachment_digests(),
            memory.as_ref().map_or(0, |m| m.bytes),
            declared,
        );
        while let Some(message) = next_message(&mut stream, idle).await? {
            match message.part {
                Some(pb::submit_document_request::Part::Chunk(data)) => {
                    incoming
                        .chunk(&self.relay, data)
                        .await
                        .map_err(relay_status)?;
                    // Larger than its share: received on disk from here on, and its
                    // share goes back to the others at once, not when it ends (a slow
                    // upload of a large scan would hold it for minutes).
                    if incoming.on_disk() {
                        drop(memory.take());
                    }
                }
                _ => {
                    return Err(status(
                        tonic::Code::InvalidArgument,
                        "SUBMIT_UNEXPECTED_HEADER",
                        "only the first message of SubmitDocument may carry a header",
                    ))
                }
            }
        }
        // The stream is over: let go of tonic's decode buffer now. Its tail shares the
        // allocation of the last chunk, and the store's commit may take a while under load:
        // thousands of waiting submissions would hold that much each.
        drop(stream);
        // A request cut short at a chunk's end can look like a whole one to tonic (a reset
        // with NO_ERROR ends it cleanly): the declared size tells them apart.
        if header.size != 0 && incoming.size() != header.size {
            return Err(status(
                tonic::Code::InvalidArgument,
                "SUBMIT_SIZE_MISMATCH",
                format!(
                    "{} bytes received, the header said {}: the submission was cut short or the size is wrong",
                    incoming.size(), header.size
                ),
            ));
        }
        let (meta, payload) = incoming.finish().await.map_err(relay_status)?;
        if !header.sha256.is_empty() && !header.sha256.eq_ignore_ascii_case(&meta.sha256.to_hex()) {
            // The staged copy, if any, goes with `payload`.
            return Err(status(
                tonic::Code::InvalidArgument,
                "SUBMIT_HASH_MISMATCH",
                format!(
                    "the bytes received hash to {}, the header said {}: the package was damaged in transit",
                    meta.sha256, header.sha256
                ),
            ));
        }
        let who = Submitter::Adapter {
            unit: caller.unit.code.clone(),
            certificate: caller.certificate,
        };
        let key = Some(header.idempotency_key).filter(|k| !k.is_empty());
        let r = self
            .relay
            .submit(&who, &meta, payload, key)
            .await
            .map_err(relay_status)?;
        Ok(Response::new(receipt(r)))
    }

    async fn receive_status(
        &self,
        request: Request<pb::SubmitStatusRequest>,
    ) -> Result<Response<pb::Receipt>, Status> {
        let caller = self.caller(&request)?;
        self.check_rate(&caller)?;
        let req = request.into_inner();
        let meta = truc_edxml::parse(&req.package).map_err(|e| relay_status(e.into()))?;
        if meta.kind() != truc_edxml::PackageKind::Status {
            return Err(status(
                tonic::Code::InvalidArgument,
                "SUBMIT_NOT_A_STATUS",
                "SubmitStatus takes a status package; send documents with SubmitDocument",
            ));
        }
        let who = Submitter::Adapter {
            unit: caller.unit.code.clone(),
            certificate: caller.certificate,
        };
        let key = Some(req.idempotency_key).filter(|k| !k.is_empty());
        let r = self
            .relay
            .submit(&who, &meta, PayloadInput::Bytes(req.package), key)
            .await
            .map_err(relay_status)?;
        Ok(Response::new(receipt(r)))
    }
}

#[tonic::async_trait]
impl pb::relay_server::Relay for RelayService {
    async fn submit_document(
        &self,
        request: Request<Streaming<pb::SubmitDocumentRequest>>,
    ) -> Result<Response<pb::Receipt>, Status> {
        let started = std::time::Instant::now();
        let result = self.receive_document(request).await;
        self.metrics
            .submission_finished("document", started.elapsed());
        self.count_submission("document", &result);
        result
    }

    async fn submit_status(
        &self,
        request: Request<pb::SubmitStatusRequest>,
    ) -> Result<Response<pb::Receipt>, Status> {
        let started = std::time::Instant::now();
        let result = self.receive_status(request).await;
        self.metrics
            .submission_finished("status", started.elapsed());
        self.count_submission("status", &result);
        result
    }

    type InboxStream = BoxStream<pb::InboxEvent>;

    async fn inbox(
        &self,
        request: Request<Streaming<pb::InboxRequest>>,
    ) -> Result<Response<Self::InboxStream>, Status> {
        // Read before the caller is checked: a change of the units from here on is seen
        // by the session, which checks again.
        let registry_seen = self.relay.registry().generation();
        let caller = self.caller(&request)?;
        let mut inbound = request.into_inner();
        // A stream that never says `open` (a slowloris client) is not held open for ever.
        let idle = Duration::from_secs(self.limits.idle_timeout_secs.max(1));
        let first = match tokio::time::timeout(idle, inbound.message()).await {
            Ok(Ok(first)) => first,
            Ok(Err(e)) if is_decode_error(&e) => return Err(bad_message(e.message())),
            Ok(Err(e)) if is_too_large_error(&e) => return Err(message_too_large(e.message())),
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(status(
                    tonic::Code::DeadlineExceeded,
                    "INBOX_IDLE",
                    format!(
                        "no `open` within {} s: the stream was closed",
                        idle.as_secs()
                    ),
                ))
            }
        };
        let open = match first {
            Some(pb::InboxRequest {
                action: Some(pb::inbox_request::Action::Open(open)),
            }) => open,
            _ => {
                return Err(status(
                    tonic::Code::InvalidArgument,
                    "INBOX_NOT_OPENED",
                    "the first message of Inbox must be `open`",
                ))
            }
        };
        let (tx, rx) = mpsc::channel(16);
        let session = InboxSession {
            relay: self.relay.clone(),
            unit: caller.unit.code.clone(),
            identity: match (&self.identity, &caller.chain) {
                (Identity::Certificates(tls), Some(chain)) => Some(SessionIdentity {
                    fingerprint: caller.certificate.clone(),
                    names: caller.names.clone(),
                    chain: chain.clone(),
                    tls: tls.clone(),
                }),
                _ => None,
            },
            registry_seen,
            credits: open.credits.clamp(1, self.limits.max_credits.max(1)),
            max_credits: self.limits.max_credits.max(1),
            drained: false,
            max_inline: if open.max_inline_bytes == 0 {
                4 * 1024 * 1024
            } else {
                open.max_inline_bytes.min(4 * 1024 * 1024)
            },
            lease: self.limits.lease(),
            in_flight: HashMap::new(),
            acks: tokio::task::JoinSet::new(),
            metrics: self.metrics.clone(),
            _open: self.metrics.inbox_opened(caller.unit.code.as_str()),
        };
        tokio::spawn(session.run(inbound, tx, self.closing.clone()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type FetchPayloadStream = BoxStream<pb::PayloadChunk>;

    async fn fetch_payload(
        &self,
        request: Request<pb::FetchPayloadRequest>,
    ) -> Result<Response<Self::FetchPayloadStream>, Status> {
        let caller = self.caller(&request)?;
        let req = request.into_inner();
        let id: MessageId = req
            .message_id
            .parse()
            .map_err(|e: String| status(tonic::Code::InvalidArgument, "FETCH_BAD_ID", e))?;
        if !self.may_see(&caller, id).await? {
            return Err(status(
                tonic::Code::NotFound,
                "STORE_NOT_FOUND",
                format!("message {id} not found for {}", caller.unit.code),
            ));
        }
        let payload = self
            .relay
            .store()
            .payload(id)
            .await
            .map_err(|e| relay_status(e.into()))?;
        let (tx, rx) = mpsc::channel(4);
        let offset = req.offset;
        tokio::spawn(async move {
            const CHUNK: usize = 1024 * 1024;
            match payload {
                Payload::Inline(bytes) => {
                    let total = bytes.len() as u64;
                    let mut at = offset.min(total) as usize;
                    while at < bytes.len() {
                        let end = (at + CHUNK).min(bytes.len());
                        let chunk = pb::PayloadChunk {
                            data: bytes.slice(at..end),
                            offset: at as u64,
                            total,
                        };
                        if tx.send(Ok(chunk)).await.is_err() {
                            return;
                        }
                        at = end;
                    }
                }
                Payload::File { path, size } => {
                    use tokio::io::{AsyncReadExt, AsyncSeekExt};
                    let mut file = match tokio::fs::File::open(&path).await {
                        Ok(f) => f,
                        Err(e) => {
                            let _ = tx
                                .send(Err(status(
                                    tonic::Code::Internal,
                                    "STORE_IO",
                                    e.to_string(),
                                )))
                                .await;
                            return;
                        }
                    };
                    let mut at = offset.min(size);
                    if file.seek(std::io::SeekFrom::Start(at)).await.is_err() {
                        return;
                    }
                    let mut buf = vec![0u8; CHUNK];
                    while at < size {
                        let n = match file.read(&mut buf).await {
                            Ok(0) => break,
                            Ok(n) => n,
                            Err(e) => {
                                let _ = tx
                                    .send(Err(status(
                                        tonic::Code::Internal,
                                        "STORE_IO",
                                        e.to_string(),
                                    )))
                                    .await;
                                return;
                            }
                        };
                        let chunk = pb::PayloadChunk {
                            data: Bytes::copy_from_slice(&buf[..n]),
                            offset: at,
                            total: size,
                        };
                        if tx.send(Ok(chunk)).await.is_err() {
                            return;
                        }
                        at += n as u64;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_trace(
        &self,
        request: Request<pb::GetTraceRequest>,
    ) -> Result<Response<pb::Trace>, Status> {
        let caller = self.caller(&request)?;
        let store = self.relay.store();
        // One answer for a document that does not exist and one the caller is not party
        // to: neither tells the other apart.
        let not_found = |what: &str| {
            status(
                tonic::Code::NotFound,
                "STORE_NOT_FOUND",
                format!("no {what} for {}", caller.unit.code),
            )
        };
        let document_id = match request.into_inner().target {
            Some(pb::get_trace_request::Target::DocumentId(d)) => truc_edxml::DocumentId::new(&d),
            Some(pb::get_trace_request::Target::MessageId(m)) => {
                let id: MessageId = m
                    .parse()
                    .map_err(|e: String| status(tonic::Code::InvalidArgument, "TRACE_BAD_ID", e))?;
                if !self.may_see(&caller, id).await? {
                    return Err(not_found(&format!("message {id}")));
                }
                store
                    .message(id)
                    .await
                    .map_err(|e| relay_status(e.into()))?
                    .and_then(|m| m.document_id)
                    .ok_or_else(|| not_found(&format!("message {id}")))?
            }
            None => {
                return Err(status(
                    tonic::Code::InvalidArgument,
                    "TRACE_NO_TARGET",
                    "give a message_id or a document_id",
                ))
            }
        };
        let trace = store
            .trace(&document_id)
            .await
            .map_err(|e| relay_status(e.into()))?;
        // Only what the caller is party to: the messages it sent or receives (others may
        // carry the same DocumentId), and the statuses reported by it or to it.
        let visible: std::collections::HashSet<MessageId> = trace
            .messages
            .iter()
            .filter(|m| {
                self.sent_by(&caller, m)
                    || goes_to(
                        &caller,
                        trace.deliveries.iter().filter(|d| d.key.message_id == m.id),
                    )
            })
            .map(|m| m.id)
            .collect();
        if visible.is_empty() {
            return Err(not_found(&format!("document {document_id}")));
        }
        // An arrival (01) derived from an acknowledged delivery names no status package:
        // it is the caller's if that delivery is.
        let arrivals: std::collections::HashSet<(&truc_edxml::OrgCode, truc_store::Timestamp)> =
            trace
                .deliveries
                .iter()
                .filter(|d| visible.contains(&d.key.message_id))
                .filter(|d| d.state == truc_store::DeliveryState::Acknowledged)
                .filter_map(|d| Some((&d.key.recipient, d.completed_at?)))
                .collect();
        Ok(Response::new(pb::Trace {
            document_id: document_id.to_string(),
            events: trace
                .events
                .iter()
                .filter(|e| visible.contains(&e.message_id))
                .map(|e| pb::TraceEvent {
                    at: e.at.to_string(),
                    message_id: e.message_id.to_string(),
                    recipient: e
                        .recipient
                        .as_ref()
                        .map(|r| r.to_string())
                        .unwrap_or_default(),
                    kind: serde_plain_kind(e.kind),
                    detail: e.detail.clone(),
                })
                .collect(),
            statuses: trace
                .statuses
                .iter()
                .filter(|s| match s.message_id {
                    Some(id) => visible.contains(&id),
                    None => arrivals.contains(&(&s.from, s.at)),
                })
                .map(|s| pb::TraceStatus {
                    at: s.at.to_string(),
                    code: s.code.to_string(),
                    from: s.from.to_string(),
                    description: s.description.clone(),
                })
                .collect(),
            deliveries: trace
                .deliveries
                .iter()
                .filter(|d| visible.contains(&d.key.message_id))
                .map(|d| pb::TraceDelivery {
                    message_id: d.key.message_id.to_string(),
                    recipient: d.key.recipient.to_string(),
                    state: d.state.as_str().into(),
                    attempts: d.attempts,
                    last_error: d.last_error.clone().unwrap_or_default(),
                })
                .collect(),
        }))
    }

    async fn list_units(
        &self,
        request: Request<pb::ListUnitsRequest>,
    ) -> Result<Response<pb::ListUnitsResponse>, Status> {
        self.caller(&request)?;
        let req = request.into_inner();
        let registry = self.relay.registry();
        let parent = OrgCode::parse(&req.parent).ok();
        let limit = if req.limit == 0 {
            500
        } else {
            req.limit.min(5000)
        } as usize;
        let local = registry
            .units()
            .into_iter()
            .filter(|u| parent.is_none() || registry.parent_of(u) == parent)
            .map(|u| unit_message(registry, &u));
        let remote: Vec<pb::Unit> = if req.include_remote {
            registry
                .remote_bodies()
                .iter()
                .filter(|b| parent.is_none() || b.parent == parent)
                .map(remote_message)
                .collect()
        } else {
            Vec::new()
        };
        let mut units: Vec<pb::Unit> = local
            .chain(remote)
            .filter(|u| req.after.is_empty() || u.code.as_str() > req.after.as_str())
            .collect();
        units.sort_by(|a, b| a.code.cmp(&b.code));
        units.truncate(limit);
        Ok(Response::new(pb::ListUnitsResponse { units }))
    }

    async fn lookup_unit(
        &self,
        request: Request<pb::LookupUnitRequest>,
    ) -> Result<Response<pb::Unit>, Status> {
        self.caller(&request)?;
        let code = OrgCode::parse(&request.get_ref().code).map_err(|e| {
            status(
                tonic::Code::InvalidArgument,
                "EDXML_BAD_ORGAN_ID",
                format!("{:?}: {e}", request.get_ref().code),
            )
        })?;
        let registry = self.relay.registry();
        if registry.unit(&code).is_none() {
            if let Some(body) = registry.remote(&code) {
                return Ok(Response::new(remote_message(&body)));
            }
        }
        let unit = registry.unit(&code).ok_or_else(|| {
            status(
                tonic::Code::NotFound,
                "ROUTE_UNKNOWN_UNIT",
                format!("unit {code} is not registered"),
            )
        })?;
        Ok(Response::new(unit_message(registry, &unit)))
    }
}

fn unit_message(registry: &truc_relay::Registry, u: &Unit) -> pb::Unit {
    pb::Unit {
        code: u.code.to_string(),
        name: u.name.clone(),
        level: registry.level_of(u).map(|l| l as u32).unwrap_or(0),
        parent: registry
            .parent_of(u)
            .map(|p| p.to_string())
            .unwrap_or_default(),
        state: u.state.as_str().into(),
    }
}

fn remote_message(b: &truc_relay::RemoteBody) -> pb::Unit {
    pb::Unit {
        code: b.code.to_string(),
        name: b.name.clone(),
        level: b.code.level().map(|l| l as u32).unwrap_or(0),
        parent: b.parent.as_ref().map(|p| p.to_string()).unwrap_or_default(),
        state: "remote".into(),
    }
}

fn serde_plain_kind(kind: truc_store::EventKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// One adapter's inbox stream.
struct InboxSession {
    relay: Arc<Relay>,
    unit: OrgCode,
    /// The adapter's certificate (fingerprint, DNS names), checked again whenever the
    /// units change: a unit suspended or a certificate removed ends the stream at once,
    /// not at the adapter's next call. `None` in development mode.
    identity: Option<SessionIdentity>,
    /// [`truc_relay::Registry::generation`] when the identity was last checked.
    registry_seen: u64,
    /// Deliveries the adapter will take now; with those it holds unacknowledged
    /// (`in_flight`), never more than `max_credits`.
    credits: u32,
    max_credits: u32,
    /// The last claim found fewer deliveries ready than it asked for, and the doorbell has
    /// not rung since: claiming again before it does (or before the periodic look, for
    /// retries coming due and leases running out) would find nothing, so acknowledgements
    /// coming back do not each cost a look at the queue.
    drained: bool,
    max_inline: u64,
    lease: Duration,
    in_flight: HashMap<String, (ClaimToken, truc_store::MessageRecord)>,
    /// Acknowledgements being made durable. The session keeps delivering meanwhile (the
    /// adapter's credit comes back when its ack arrives), so an inbox never stalls for a
    /// flush of the store; the session waits for them all before it ends.
    acks: tokio::task::JoinSet<Result<truc_store::Delivery, RelayError>>,
    metrics: Arc<Metrics>,
    /// Counts this stream as open while it lives.
    _open: InboxGuard,
}

/// Acknowledgements of one inbox stream being made durable at most, before the stream stops
/// delivering until the store catches up (a few flushes' worth at full speed).
const MAX_PENDING_ACKS: usize = 2048;

/// Deliveries claimed at a time for an inbox stream (see [`InboxSession::push`]).
const CLAIM_BATCH: usize = 32;

fn delivery_id(token: &ClaimToken) -> String {
    format!("{}/{:016x}", token.key, token.lease)
}

impl InboxSession {
    async fn run(
        mut self,
        mut inbound: Streaming<pb::InboxRequest>,
        tx: mpsc::Sender<Result<pb::InboxEvent, Status>>,
        mut closing: tokio::sync::watch::Receiver<bool>,
    ) {
        let destination = Destination::Inbox(self.unit.clone());
        let mut doorbell = self.relay.hub().doorbell(&destination);
        // A look at the queue at least this often, however busy the stream is: retries come
        // due and leases of other sessions run out without ringing the doorbell.
        let mut look = tokio::time::interval(Duration::from_millis(500));
        look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if let Err(e) = self.still_allowed() {
                let _ = tx.send(Err(e)).await;
                break;
            }
            // Finished acknowledgements are collected at every turn: under a steady stream
            // of acks the select below rarely picks that branch, and each finished task
            // holds memory until it is collected.
            if let Err(e) = self.collect_finished_acks() {
                let _ = tx.send(Err(e)).await;
                break;
            }
            if let Err(e) = self.push(&destination, &tx).await {
                let _ = tx.send(Err(e)).await;
                break;
            }
            tokio::select! {
                message = inbound.next() => match message {
                    Some(Ok(m)) => {
                        // Everything the adapter has already sent is handled together, so
                        // its acknowledgements share the store's flushes.
                        let mut batch = vec![m];
                        let mut ended = false;
                        while batch.len() < 512 {
                            match tokio::time::timeout(Duration::ZERO, inbound.next()).await {
                                Ok(Some(Ok(m))) => batch.push(m),
                                Ok(Some(Err(_)) | None) => {
                                    ended = true;
                                    break;
                                }
                                Err(_) => break,
                            }
                        }
                        if let Err(e) = self.handle_batch(batch).await {
                            let _ = tx.send(Err(e)).await;
                            break;
                        }
                        if ended {
                            break;
                        }
                    }
                    // The adapter went away (or the stream broke).
                    Some(Err(_)) | None => break,
                },
                Some(done) = self.acks.join_next(), if !self.acks.is_empty() => {
                    if let Err(e) = self.acknowledged(done) {
                        let _ = tx.send(Err(e)).await;
                        break;
                    }
                }
                Ok(()) = doorbell.changed() => self.drained = false,
                // Retries come due and leases of other sessions run out: look again.
                _ = look.tick() => self.drained = false,
                _ = tx.closed() => {
                    // The adapter's side of the stream is gone (the response stream was
                    // dropped): acks and nacks it sent before going are still applied, so
                    // they do not turn into redeliveries.
                    while let Ok(Some(Ok(m))) =
                        tokio::time::timeout(Duration::from_millis(200), inbound.next()).await
                    {
                        if self.handle(m).await.is_err() {
                            break;
                        }
                    }
                    break;
                }
                _ = wait_closing(&mut closing) => {
                    let _ = tx
                        .send(Ok(pb::InboxEvent {
                            event: Some(pb::inbox_event::Event::Closing(
                                "the relay is shutting down: reconnect".into(),
                            )),
                        }))
                        .await;
                    // Acks the adapter sent before it heard are still applied, as below.
                    while let Ok(Some(Ok(m))) =
                        tokio::time::timeout(Duration::from_millis(200), inbound.next()).await
                    {
                        if self.handle(m).await.is_err() {
                            break;
                        }
                    }
                    break;
                }
            }
        }
        // Acknowledgements already received are applied before the stream ends, so an
        // adapter that closes after acking gets no redeliveries.
        while let Some(done) = self.acks.join_next().await {
            let _ = self.acknowledged(done);
        }
        // Whatever this adapter did not acknowledge is offered again at once.
        let now = Timestamp::now();
        for (_, (token, _)) in self.in_flight.drain() {
            let _ = self
                .relay
                .store()
                .release(&token, "the adapter disconnected", now)
                .await;
        }
        self.relay.hub().wake(&destination);
    }

    async fn push(
        &mut self,
        destination: &Destination,
        tx: &mpsc::Sender<Result<pb::InboxEvent, Status>>,
    ) -> Result<(), Status> {
        let store = self.relay.store();
        // Claimed a few at a time, each batch sent before the next is claimed: a lease
        // starts when its delivery is about to be sent, not behind a thousand others on a
        // slow link, and a stream that ends holds few claims it never sent.
        loop {
            // No new deliveries while the adapter has credit but the store lags behind its
            // acknowledgements: the backlog of acks being made durable stays bounded.
            if self.credits == 0 || self.acks.len() >= MAX_PENDING_ACKS || self.drained {
                return Ok(());
            }
            let wanted = (self.credits as usize).min(CLAIM_BATCH);
            let claims = store
                .claim(destination, wanted, self.lease, Timestamp::now())
                .await
                .map_err(|e| relay_status(e.into()))?;
            let claimed = claims.len();
            let mut claims = claims.into_iter();
            while let Some(claim) = claims.next() {
                let id = delivery_id(&claim.token);
                let Some(event) = self.delivery_event(&claim, &id).await else {
                    continue;
                };
                self.in_flight.insert(id, (claim.token, claim.message));
                self.credits -= 1;
                if tx.send(Ok(event)).await.is_err() {
                    // The adapter is gone: what was claimed for it and not sent is offered
                    // again at once (what was sent is released when the session ends).
                    let now = Timestamp::now();
                    for unsent in claims {
                        let _ = store
                            .release(
                                &unsent.token,
                                "claimed, not sent: the adapter went away",
                                now,
                            )
                            .await;
                    }
                    return Ok(());
                }
                self.metrics.delivered(&INBOX);
            }
            if claimed < wanted {
                self.drained = true;
                return Ok(());
            }
        }
    }

    /// The event that delivers `claim` as `id`, its package inline if small enough. `None` if the
    /// package cannot be read: the delivery is refused for now (retried later, and
    /// dead-lettered if it never can be), and the stream goes on with the others.
    async fn delivery_event(&self, claim: &truc_store::Claim, id: &str) -> Option<pb::InboxEvent> {
        let store = self.relay.store();
        let m = &claim.message;
        let package = if m.size <= self.max_inline {
            let read = match store.payload_of(m).await {
                Ok(truc_store::Payload::Inline(bytes)) => Ok(bytes),
                // A file of up to 4 MiB: read off the async threads, which serve every
                // other stream meanwhile.
                Ok(file) => tokio::task::spawn_blocking(move || file.read_all())
                    .await
                    .map_err(std::io::Error::other)
                    .and_then(|r| r)
                    .map_err(truc_store::StoreError::Io),
                Err(e) => Err(e),
            };
            match read {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::error!(message = %m.id, recipient = %claim.token.key.recipient, error = %e, "a package could not be read for its delivery; it is retried later");
                    let reason = format!("the relay could not read the package: {e}");
                    match store.nack(&claim.token, &reason, Timestamp::now()).await {
                        Ok(truc_store::NackOutcome::Dead(_)) => self.metrics.dead_lettered(&INBOX),
                        Ok(_) => self.metrics.retried(&INBOX),
                        Err(e) => {
                            tracing::warn!(message = %m.id, error = %e, "the unreadable delivery could not be put back; its lease will run out")
                        }
                    }
                    return None;
                }
            }
        } else {
            Bytes::new()
        };
        Some(pb::InboxEvent {
            event: Some(pb::inbox_event::Event::Delivery(pb::Delivery {
                delivery_id: id.to_owned(),
                message_id: m.id.to_string(),
                recipient: claim.token.key.recipient.to_string(),
                kind: m.kind.as_str().into(),
                sender: m.sender.to_string(),
                document_id: m
                    .document_id
                    .as_ref()
                    .map(|d| d.to_string())
                    .unwrap_or_default(),
                business_doc_type: u32::from(m.business_doc_type.code()),
                status_code: m
                    .summary
                    .status_code
                    .as_ref()
                    .map(|s| s.to_string())
                    .unwrap_or_default(),
                sha256: m.sha256.to_hex(),
                size: m.size,
                inline: !package.is_empty() || m.size == 0,
                package,
                attempt: claim.delivery.attempts,
            })),
        })
    }

    /// Handles requests that arrived together, in order. Acknowledgements are started at
    /// once and made durable together (one flush of the store for all of them) while the
    /// session goes on. A request refused (an ack for an unknown delivery) does not stop
    /// the others: they are all handled, then the first refusal ends the stream.
    async fn handle_batch(&mut self, batch: Vec<pb::InboxRequest>) -> Result<(), Status> {
        let mut first_error = None;
        for request in batch {
            if let Err(e) = self.handle(request).await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Whether the adapter's certificate still names this unit, active: checked again only
    /// when the units changed since the last check (a number compared otherwise).
    fn still_allowed(&mut self) -> Result<(), Status> {
        let Some(identity) = &self.identity else {
            return Ok(());
        };
        let (fingerprint, names) = (&identity.fingerprint, &identity.names);
        identity
            .tls
            .recheck(fingerprint, &identity.chain)
            .map_err(certificate_rejected)?;
        let generation = self.relay.registry().generation();
        if generation == self.registry_seen {
            return Ok(());
        }
        self.registry_seen = generation;
        let unit = self
            .relay
            .authenticate(fingerprint, names)
            .map_err(relay_status)?;
        if unit.code != self.unit {
            return Err(status(
                tonic::Code::Unauthenticated,
                "AUTH_UNKNOWN_CERTIFICATE",
                format!(
                    "this certificate now belongs to {}, not {}: reconnect",
                    unit.code, self.unit
                ),
            ));
        }
        Ok(())
    }

    /// Takes the outcome of every acknowledgement that has finished, without waiting.
    fn collect_finished_acks(&mut self) -> Result<(), Status> {
        while let Some(done) = self.acks.try_join_next() {
            self.acknowledged(done)?;
        }
        Ok(())
    }

    /// The outcome of one acknowledgement started by [`Self::handle`].
    fn acknowledged(
        &self,
        done: Result<Result<truc_store::Delivery, RelayError>, tokio::task::JoinError>,
    ) -> Result<(), Status> {
        self.metrics.ack_finished();
        match done {
            Ok(Ok(_)) => {
                self.metrics.acknowledged(&INBOX);
                Ok(())
            }
            // The lease ran out and the delivery was offered again: not an error for the
            // adapter, the new offer carries a new id.
            Ok(Err(RelayError::Store(truc_store::StoreError::LeaseLost(_)))) => Ok(()),
            Ok(Err(e)) => Err(relay_status(e)),
            Err(e) => Err(status(
                tonic::Code::Internal,
                "RELAY_INTERNAL",
                format!("acknowledging: {e}"),
            )),
        }
    }

    async fn handle(&mut self, request: pb::InboxRequest) -> Result<(), Status> {
        use pb::inbox_request::Action;
        match request.action {
            Some(Action::Credit(n)) => {
                // What it holds counts against the most a stream may hold.
                let room = self
                    .max_credits
                    .saturating_sub(self.in_flight.len().try_into().unwrap_or(u32::MAX));
                self.credits = self.credits.saturating_add(n).min(room);
            }
            Some(Action::Ack(id)) => {
                let Some((token, message)) = self.in_flight.remove(&id) else {
                    return Err(unknown_delivery(&id));
                };
                self.credits += 1;
                // Made durable in the background; the session waits for it before it ends.
                let relay = self.relay.clone();
                self.acks
                    .spawn(async move { relay.ack(&token, &message).await });
                self.metrics.ack_pending();
            }
            Some(Action::Nack(nack)) => {
                let Some((token, _)) = self.in_flight.remove(&nack.delivery_id) else {
                    return Err(unknown_delivery(&nack.delivery_id));
                };
                self.credits += 1;
                let reason = if nack.reason.is_empty() {
                    "refused by the adapter".to_owned()
                } else {
                    nack.reason
                };
                match self
                    .relay
                    .store()
                    .nack(&token, &reason, Timestamp::now())
                    .await
                {
                    Ok(truc_store::NackOutcome::Dead(_)) => self.metrics.dead_lettered(&INBOX),
                    Ok(_) => self.metrics.retried(&INBOX),
                    Err(truc_store::StoreError::LeaseLost(_)) => {}
                    Err(e) => return Err(relay_status(e.into())),
                }
            }
            Some(Action::Open(_)) => {
                return Err(status(
                    tonic::Code::InvalidArgument,
                    "INBOX_ALREADY_OPEN",
                    "`open` may only be sent once",
                ))
            }
            None => {}
        }
        Ok(())
    }
}

/// The next message of a client stream, or `DEADLINE_EXCEEDED` if the client stays silent
/// longer than `idle` (a stalled or slowloris client cannot hold a submission open).
async fn next_message<T>(stream: &mut Streaming<T>, idle: Duration) -> Result<Option<T>, Status> {
    match tokio::time::timeout(idle, stream.message()).await {
        Ok(Err(e)) if is_decode_error(&e) => Err(bad_message(e.message())),
        Ok(Err(e)) if is_too_large_error(&e) => Err(message_too_large(e.message())),
        Ok(r) => r,
        Err(_) => Err(status(
            tonic::Code::DeadlineExceeded,
            "SUBMIT_IDLE",
            format!(
                "no data for {} s: the submission was cancelled",
                idle.as_secs()
            ),
        )),
    }
}

/// tonic answers a request it cannot decode with `INTERNAL`; it is the client's fault.
fn is_decode_error(e: &Status) -> bool {
    e.code() == tonic::Code::Internal && e.message().starts_with("failed to decode")
}

/// tonic refuses a message over the decoding limit with `OUT_OF_RANGE` and its own words.
fn is_too_large_error(e: &Status) -> bool {
    e.code() == tonic::Code::OutOfRange && e.message().contains("message length too large")
}

/// `RPC_MESSAGE_TOO_LARGE`: a request message over the contract's 1 MiB.
pub(crate) fn message_too_large(detail: &str) -> Status {
    status(
        tonic::Code::InvalidArgument,
        "RPC_MESSAGE_TOO_LARGE",
        format!("{detail}: send packages in chunks of at most 1 MiB"),
    )
}

/// `RPC_BAD_MESSAGE`: not a valid protobuf message of the method called.
pub(crate) fn bad_message(detail: &str) -> Status {
    status(
        tonic::Code::InvalidArgument,
        "RPC_BAD_MESSAGE",
        format!("the request is not a valid protobuf message of this method ({detail})"),
    )
}

/// Rewrites the answers tonic gives, before any handler runs, to requests it cannot decode:
/// `INVALID_ARGUMENT` with a code like every other refusal — `RPC_BAD_MESSAGE` for what is
/// not valid protobuf (tonic says `INTERNAL`), `RPC_MESSAGE_TOO_LARGE` for a message over
/// the decoding limit (tonic says `OUT_OF_RANGE`).
pub fn clear_decode_errors<B>(
    mut response: tonic::codegen::http::Response<B>,
) -> tonic::codegen::http::Response<B> {
    let headers = response.headers_mut();
    let message = |prefix: &[u8]| {
        headers
            .get("grpc-message")
            .is_some_and(|v| v.as_bytes().starts_with(prefix))
    };
    let code = match headers.get("grpc-status").map(|v| v.as_bytes()) {
        Some(b"13") if message(b"failed%20to%20decode") => "RPC_BAD_MESSAGE",
        Some(b"11") if message(b"Error,%20decoded%20message%20length%20too%20large") => {
            "RPC_MESSAGE_TOO_LARGE"
        }
        _ => return response,
    };
    headers.insert(
        "grpc-status",
        tonic::codegen::http::HeaderValue::from_static("3"),
    );
    headers.insert(
        "truc-error-code",
        tonic::codegen::http::HeaderValue::from_static(code),
    );
    response
}

/// Resolves once the relay starts shutting down (the guard of the value is not kept).
async fn wait_closing(closing: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = closing.wait_for(|c| *c).await.map(|_| ());
}

fn unknown_delivery(id: &str) -> Status {
    status(
        tonic::Code::NotFound,
        "INBOX_UNKNOWN_DELIVERY",
        format!("delivery {id} is not awaiting an acknowledgement on this stream"),
    )
}
