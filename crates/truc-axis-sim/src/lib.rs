#![forbid(unsafe_code)]
//! A simulator of the national document exchange axis (trục liên thông văn bản quốc gia),
//! serving exactly the VDXP profile of `truc-vdxp`: several systems (each a system id, a
//! secret and the unit codes it owns), signed headers and timestamps checked, packages fanned
//! out to the systems owning their recipients, and fault knobs that tests set at run time.
//!
//! Ministries use it to test their relay without touching the real axis; the project's
//! tests, demo and benchmarks use it over real HTTP.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use truc_edxml::OrgCode;
use truc_vdxp::{op, param, value, Agency, Envelope, ReceivedItem, SentItem};

/// One system connected to the axis (a ministry's relay, a province's platform).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemConfig {
    /// Its system id.
    pub id: String,
    /// The secret it signs with.
    pub secret: String,
    /// The unit codes it owns (a code owns its descendants: `000.00.00.G12` owns
    /// `000.03.05.G12`).
    pub organs: Vec<String>,
    /// Display name.
    #[serde(default)]
    pub name: String,
}

/// The simulator's configuration (TOML).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimConfig {
    /// The connected systems.
    #[serde(rename = "system", default)]
    pub systems: Vec<SystemConfig>,
    /// Extra bodies of the national directory (`getAgenciesList`), besides the systems'
    /// own codes.
    #[serde(rename = "agency", default)]
    pub agencies: Vec<Agency>,
    /// Allowed clock difference for timestamps, in seconds (default 300).
    #[serde(default = "default_skew")]
    pub skew_secs: i64,
    /// Largest package `sendEdoc` takes, in bytes (default 512 MiB, the relay's own
    /// default): larger uploads are refused with HTTP 413.
    #[serde(default = "default_max_package")]
    pub max_package_bytes: u64,
}

fn default_skew() -> i64 {
    300
}

fn default_max_package() -> u64 {
    512 * 1024 * 1024
}

impl SimConfig {
    /// Parses a TOML configuration.
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        Ok(toml::from_str(text)?)
    }
}

/// Faults to inject, settable at run time (`POST /_control/faults` or [`Simulator::set_faults`]).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Faults {
    /// Probability (0–1) that a call to an operation fails with HTTP 500, by operation name
    /// (`*` for all).
    pub error_rate: BTreeMap<String, f64>,
    /// Latency added to every call, in milliseconds.
    pub latency_ms: u64,
    /// Until this Unix time in milliseconds, every call gets HTTP 503 (an outage).
    pub outage_until_ms: Option<i64>,
    /// `getReceivedEdocList` lists every entry twice.
    pub duplicate_list: bool,
    /// Probability (0–1) that `updateStatus` is applied but its answer is lost (HTTP 504).
    pub lose_ack_rate: f64,
    /// Probability (0–1) that a call's connection is cut in the middle of the answer.
    pub reset_rate: f64,
    /// Codes `getAgenciesList` leaves out although their systems are connected: a national
    /// directory that has not caught up with a newly connected body yet.
    pub unlisted: Vec<String>,
    /// Answers' bodies come at most this many bytes a second, in tenths of a second's worth
    /// after their headers (0: as fast as they can): a slow link, or a large download.
    pub throttle_bytes_per_sec: u64,
}

/// A package held by the axis for one receiving system.
#[derive(Debug, Clone)]
struct Copy {
    system: String,
    from: String,
    to: Vec<String>,
    message_type: String,
    bytes: Arc<Vec<u8>>,
    status: String,
    created: i64,
    updated: i64,
    sender_doc_id: String,
}

#[derive(Debug, Default)]
struct Ledger {
    copies: HashMap<String, Copy>,
    /// Receiving system → its copies' ids, in arrival order.
    inboxes: HashMap<String, Vec<String>>,
    /// Sender transport id → (sender system, per-recipient lines).
    sent: HashMap<String, (String, Vec<SentItem>)>,
    counters: BTreeMap<String, u64>,
}

/// The simulator: configuration, ledger and fault knobs. Cheap to clone (shared state).
#[derive(Debug, Clone)]
pub struct Simulator {
    config: Arc<SimConfig>,
    ledger: Arc<Mutex<Ledger>>,
    faults: Arc<Mutex<Faults>>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn transport_id() -> String {
    format!("{:024x}", fastrand::u128(..) >> 32)
}

impl Simulator {
    /// A simulator for these systems.
    pub fn new(config: SimConfig) -> Self {
        Simulator {
            config: Arc::new(config),
            ledger: Arc::default(),
            faults: Arc::default(),
        }
    }

    /// Sets the fault knobs.
    pub fn set_faults(&self, faults: Faults) {
        *self.faults.lock().unwrap_or_else(|p| p.into_inner()) = faults;
    }

    /// The fault knobs in force.
    pub fn faults(&self) -> Faults {
        self.faults
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Calls per operation and outcome (`sendEdoc.ok`, `getEdoc.injected_error`...).
    pub fn counters(&self) -> BTreeMap<String, u64> {
        self.ledger().counters.clone()
    }

    fn ledger(&self) -> std::sync::MutexGuard<'_, Ledger> {
        self.ledger.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, key: String) {
        *self.ledger().counters.entry(key).or_default() += 1;
    }

    /// The system owning a unit code: it lists the code or one of its ancestors.
    pub fn owner_of(&self, code: &str) -> Option<&SystemConfig> {
        let mut candidates = vec![code.to_owned()];
        if let Ok(c) = OrgCode::parse(code) {
            let mut cur = c.parent();
            while let Some(p) = cur {
                candidates.push(p.to_string());
                cur = p.parent();
            }
        }
        candidates.iter().find_map(|c| {
            self.config
                .systems
                .iter()
                .find(|s| s.organs.iter().any(|o| o == c))
        })
    }

    /// The HTTP routes: one per operation, plus `/_control/faults` and `/_control/counters`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/_control/faults", get(get_faults).post(post_faults))
            .route("/_control/counters", get(get_counters))
            .route("/{operation}", post(operation))
            // A package, plus the multipart framing around it.
            .layer(axum::extract::DefaultBodyLimit::max(
                usize::try_from(self.config.max_package_bytes)
                    .unwrap_or(usize::MAX)
                    .saturating_add(64 * 1024),
            ))
            .with_state(self.clone())
    }

    /// Serves HTTPS on `listener` with this certificate chain and key (PEM) until
    /// `shutdown` completes.
    pub async fn serve_tls(
        &self,
        listener: tokio::net::TcpListener,
        cert_pem: &[u8],
        key_pem: &[u8],
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        use rustls_pki_types::pem::PemObject;
        let certs = rustls_pki_types::CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()?;
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key_pem)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(certs, key)?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let tls = TlsListener {
            tcp: listener,
            acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(config)),
        };
        axum::serve(tls, self.router())
            .with_graceful_shutdown(shutdown)
            .await?;
        Ok(())
    }

    /// Serves on `listener` until `shutdown` completes.
    pub async fn serve(
        &self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        use axum::serve::ListenerExt as _;
        // Answers go out at once, not behind the client's delayed ACK (Nagle). Connections
        // are counted: how many a relay opens is part of what it costs the axis.
        let sim = self.clone();
        let listener = listener.tap_io(move |tcp| {
            let _ = tcp.set_nodelay(true);
            sim.count("connections.accepted".into());
        });
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown)
            .await
    }
}

async fn get_faults(State(sim): State<Simulator>) -> Json<Faults> {
    Json(sim.faults())
}

async fn post_faults(State(sim): State<Simulator>, Json(faults): Json<Faults>) -> Json<Faults> {
    sim.set_faults(faults.clone());
    Json(faults)
}

async fn get_counters(State(sim): State<Simulator>) -> Json<BTreeMap<String, u64>> {
    Json(sim.counters())
}

/// An answer whose body fails after its headers: the server aborts the connection, and the
/// client sees it cut mid-response, as with a reset.
fn reset() -> Response {
    let broken = tokio_stream::once(Err::<axum::body::Bytes, std::io::Error>(
        std::io::Error::other("simulated connection reset"),
    ));
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(axum::body::Body::from_stream(broken))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn reply(status: StatusCode, body: Value) -> Response {
    (status, Json(body)).into_response()
}

fn fail(status: StatusCode, code: &str, desc: impl Into<String>) -> Response {
    reply(status, json!(Envelope::fail(code, desc)))
}

fn ok_with(extra: Value) -> Response {
    let mut body = json!(Envelope::ok());
    if let (Some(obj), Value::Object(more)) = (body.as_object_mut(), extra) {
        obj.extend(more);
    }
    reply(StatusCode::OK, body)
}

async fn operation(
    State(sim): State<Simulator>,
    Path(operation): Path<String>,
    headers: HeaderMap,
    multipart: Option<Multipart>,
) -> Response {
    if !op::ALL.contains(&operation.as_str()) {
        return fail(
            StatusCode::NOT_FOUND,
            "UNKNOWN_OPERATION",
            format!("no operation {operation}"),
        );
    }
    // Faults first: an axis that is down does not check signatures.
    let faults = sim.faults();
    if faults.outage_until_ms.is_some_and(|t| now_ms() < t) {
        sim.count(format!("{operation}.outage"));
        return fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "the axis is down (simulated outage)",
        );
    }
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    let rate = faults
        .error_rate
        .get(&operation)
        .or_else(|| faults.error_rate.get("*"))
        .copied()
        .unwrap_or(0.0);
    if rate > 0.0 && fastrand::f64() < rate {
        sim.count(format!("{operation}.injected_error"));
        return fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            "SERVER_BUSY",
            "simulated failure",
        );
    }
    if faults.reset_rate > 0.0 && fastrand::f64() < faults.reset_rate {
        sim.count(format!("{operation}.reset"));
        return reset();
    }

    let pairs: Vec<(&str, &str)> = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
        .collect();
    let config = sim.config.clone();
    let params = match truc_vdxp::verify(
        pairs,
        |id| {
            config
                .systems
                .iter()
                .find(|s| s.id == id)
                .map(|s| s.secret.clone().into_bytes())
        },
        now_ms() / 1000,
        config.skew_secs,
    ) {
        Ok(p) => p,
        Err(e) => {
            sim.count(format!("{operation}.refused"));
            return fail(StatusCode::UNAUTHORIZED, e.error_code(), e.to_string());
        }
    };
    let system = params.get(param::SYSTEM_ID).cloned().unwrap_or_default();
    let response = match operation.as_str() {
        op::SEND_EDOC => send_edoc(&sim, &system, &params, multipart).await,
        op::GET_RECEIVED_EDOC_LIST => received_list(&sim, &system, &params, faults.duplicate_list),
        op::GET_EDOC => get_edoc(&sim, &system, &params),
        op::UPDATE_STATUS => {
            let r = update_status(&sim, &system, &params);
            if r.status().is_success()
                && faults.lose_ack_rate > 0.0
                && fastrand::f64() < faults.lose_ack_rate
            {
                sim.count(format!("{operation}.lost_ack"));
                return fail(
                    StatusCode::GATEWAY_TIMEOUT,
                    "TIMEOUT",
                    "simulated lost acknowledgement (it was applied)",
                );
            }
            r
        }
        op::GET_SENT_EDOC_LIST => sent_list(&sim, &system, &params),
        _ => agencies(&sim),
    };
    sim.count(format!(
        "{operation}.{}",
        if response.status().is_success() {
            "ok"
        } else {
            "fail"
        }
    ));
    if faults.throttle_bytes_per_sec > 0 {
        return throttled(response, faults.throttle_bytes_per_sec).await;
    }
    response
}

/// `response` with its body sent at `rate` bytes a second: its headers at once, then a
/// tenth of a second's worth at a time.
async fn throttled(response: Response, rate: u64) -> Response {
    let (parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::INTERNAL_SERVER_ERROR.into_response();
    };
    // A tenth of a second's worth at a time; below 10 bytes a second, a byte at a time.
    let step = usize::try_from(rate / 10).unwrap_or(usize::MAX).max(1);
    let pause = if rate >= 10 {
        Duration::from_millis(100)
    } else {
        Duration::from_millis(1000 / rate)
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<axum::body::Bytes, std::io::Error>>(1);
    tokio::spawn(async move {
        let mut at = 0;
        while at < bytes.len() {
            let end = (at + step).min(bytes.len());
            if tx.send(Ok(bytes.slice(at..end))).await.is_err() {
                return;
            }
            at = end;
            if at < bytes.len() {
                tokio::time::sleep(pause).await;
            }
        }
    });
    Response::from_parts(
        parts,
        axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
}

async fn send_edoc(
    sim: &Simulator,
    system: &str,
    params: &BTreeMap<String, String>,
    multipart: Option<Multipart>,
) -> Response {
    let Some(mut multipart) = multipart else {
        return fail(
            StatusCode::BAD_REQUEST,
            "NO_FILE",
            "sendEdoc needs a multipart body with file_doc",
        );
    };
    let mut bytes = None;
    loop {
        match multipart.next_field().await {
            Ok(Some(field)) if field.name() == Some(truc_vdxp::FILE_FIELD) => {
                match field.bytes().await {
                    Ok(b) => bytes = Some(b.to_vec()),
                    Err(e) => return fail(StatusCode::BAD_REQUEST, "BAD_FILE", e.to_string()),
                }
            }
            Ok(Some(_)) => continue,
            Ok(None) => break,
            Err(e) => return fail(StatusCode::BAD_REQUEST, "BAD_MULTIPART", e.to_string()),
        }
    }
    let Some(bytes) = bytes else {
        return fail(
            StatusCode::BAD_REQUEST,
            "NO_FILE",
            "the multipart body has no file_doc field",
        );
    };
    let hash: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    match params.get(param::HASH_FILE) {
        Some(h) if h.eq_ignore_ascii_case(&hash) => {}
        _ => {
            return fail(
                StatusCode::OK,
                "HASH_MISMATCH",
                "hash-file does not match the package",
            )
        }
    }
    let from = params.get(param::FROM).cloned().unwrap_or_default();
    if sim.owner_of(&from).map(|s| s.id.as_str()) != Some(system) {
        return fail(
            StatusCode::OK,
            "NOT_OWNER",
            format!("system {system} does not own {from}"),
        );
    }
    let message_type = params
        .get(param::MESSAGE_TYPE)
        .cloned()
        .unwrap_or_else(|| value::MESSAGE_EDOC.to_owned());
    let to: Vec<String> = match params.get(param::TO).filter(|t| !t.is_empty()) {
        Some(t) => match serde_json::from_str(t) {
            Ok(v) => v,
            Err(_) => {
                return fail(
                    StatusCode::OK,
                    "BAD_TO",
                    "`to` must be a JSON array of unit codes",
                )
            }
        },
        None => match truc_edxml::parse(&bytes) {
            Ok(meta) => meta.recipients().map(|c| c.to_string()).collect(),
            Err(e) => return fail(StatusCode::OK, "BAD_PACKAGE", format!("{}: {e}", e.code())),
        },
    };
    if to.is_empty() {
        return fail(
            StatusCode::OK,
            "NO_RECIPIENT",
            "no recipient in `to` nor in the package",
        );
    }
    let (notation, title) = truc_edxml::parse(&bytes)
        .ok()
        .and_then(|m| {
            m.document().map(|d| {
                (
                    format!("{}/{}", d.code_number, d.code_notation),
                    d.subject.clone(),
                )
            })
        })
        .unwrap_or_default();
    let sender_doc_id = transport_id();
    let now = now_ms();
    let bytes = Arc::new(bytes);
    let mut lines = Vec::new();
    let mut ledger = sim.ledger();
    // One copy per receiving system, whatever the number of its recipients.
    let mut per_system: HashMap<String, String> = HashMap::new();
    for recipient in &to {
        let owner = sim.owner_of(recipient).map(|s| s.id.clone());
        let receiver_doc_id = match &owner {
            Some(owner_id) => match per_system.get(owner_id) {
                Some(id) => id.clone(),
                None => {
                    let id = transport_id();
                    ledger.copies.insert(
                        id.clone(),
                        Copy {
                            system: owner_id.clone(),
                            from: from.clone(),
                            to: to.clone(),
                            message_type: message_type.clone(),
                            bytes: bytes.clone(),
                            status: "pending".into(),
                            created: now,
                            updated: now,
                            sender_doc_id: sender_doc_id.clone(),
                        },
                    );
                    ledger
                        .inboxes
                        .entry(owner_id.clone())
                        .or_default()
                        .push(id.clone());
                    per_system.insert(owner_id.clone(), id.clone());
                    id
                }
            },
            None => String::new(),
        };
        let known = owner.is_some();
        lines.push(SentItem {
            sender_doc_id: sender_doc_id.clone(),
            receiver_doc_id,
            from_code: from.clone(),
            to_code: recipient.clone(),
            send_status: if known { "sent" } else { "fail" }.into(),
            send_status_desc: if known {
                "delivered to the receiving system".into()
            } else {
                format!("{recipient} is not connected to the axis")
            },
            receive_status: if known { "pending" } else { "fail" }.into(),
            receive_status_desc: String::new(),
            sent_time: truc_vdxp::format_timestamp(now),
            received_time: String::new(),
            notation: notation.clone(),
            title: title.clone(),
        });
    }
    ledger
        .sent
        .insert(sender_doc_id.clone(), (system.to_owned(), lines));
    ok_with(json!({ "DocId": sender_doc_id }))
}

fn received_list(
    sim: &Simulator,
    system: &str,
    params: &BTreeMap<String, String>,
    duplicate: bool,
) -> Response {
    let wanted = params.get(param::MESSAGE_TYPE).cloned();
    let ledger = sim.ledger();
    let mut items = Vec::new();
    for id in ledger
        .inboxes
        .get(system)
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let Some(c) = ledger.copies.get(id) else {
            continue;
        };
        if !matches!(c.status.as_str(), "pending" | "processing") {
            continue;
        }
        if wanted
            .as_ref()
            .is_some_and(|w| !w.is_empty() && w != &c.message_type)
        {
            continue;
        }
        let item = ReceivedItem {
            doc_id: id.clone(),
            service_type: value::SERVICE_EDOC.into(),
            message_type: c.message_type.clone(),
            from: c.from.clone(),
            to: c.to.join(","),
            status: c.status.clone(),
            status_desc: String::new(),
            created_time: truc_vdxp::format_timestamp(c.created),
            updated_time: truc_vdxp::format_timestamp(c.updated),
        };
        if duplicate {
            items.push(item.clone());
        }
        items.push(item);
    }
    ok_with(json!({ "data": items }))
}

fn get_edoc(sim: &Simulator, system: &str, params: &BTreeMap<String, String>) -> Response {
    let id = params.get(param::DOC_ID).cloned().unwrap_or_default();
    let ledger = sim.ledger();
    match ledger.copies.get(&id).filter(|c| c.system == system) {
        Some(c) => {
            ok_with(json!({ "data": base64_simd::STANDARD.encode_to_string(c.bytes.as_slice()) }))
        }
        None => fail(
            StatusCode::OK,
            "NOT_FOUND",
            format!("no package {id} for {system}"),
        ),
    }
}

fn update_status(sim: &Simulator, system: &str, params: &BTreeMap<String, String>) -> Response {
    let id = params.get(param::DOC_ID).cloned().unwrap_or_default();
    let status = params.get(param::STATUS).cloned().unwrap_or_default();
    if ![
        value::STATUS_DONE,
        value::STATUS_FAIL,
        value::STATUS_PROCESSING,
    ]
    .contains(&status.as_str())
    {
        return fail(
            StatusCode::OK,
            "BAD_STATUS",
            format!("status must be done, fail or processing, not {status:?}"),
        );
    }
    let mut ledger = sim.ledger();
    let now = now_ms();
    let Some(copy) = ledger.copies.get_mut(&id).filter(|c| c.system == system) else {
        return fail(
            StatusCode::OK,
            "NOT_FOUND",
            format!("no package {id} for {system}"),
        );
    };
    copy.status = status.clone();
    copy.updated = now;
    let sender_doc_id = copy.sender_doc_id.clone();
    if let Some((_, lines)) = ledger.sent.get_mut(&sender_doc_id) {
        for line in lines.iter_mut().filter(|l| l.receiver_doc_id == id) {
            line.receive_status = status.clone();
            line.received_time = truc_vdxp::format_timestamp(now);
        }
    }
    ok_with(json!({}))
}

fn sent_list(sim: &Simulator, system: &str, params: &BTreeMap<String, String>) -> Response {
    let id = params.get(param::DOC_ID).cloned().unwrap_or_default();
    let ledger = sim.ledger();
    match ledger.sent.get(&id).filter(|(s, _)| s == system) {
        Some((_, lines)) => ok_with(json!({ "data": lines })),
        None => fail(
            StatusCode::OK,
            "NOT_FOUND",
            format!("{system} sent no package {id}"),
        ),
    }
}

fn agencies(sim: &Simulator) -> Response {
    let unlisted = sim.faults().unlisted;
    let mut list = sim.config.agencies.clone();
    for s in &sim.config.systems {
        for organ in &s.organs {
            if !list.iter().any(|a| &a.code == organ) && !unlisted.contains(organ) {
                list.push(Agency {
                    id: organ.clone(),
                    pid: String::new(),
                    code: organ.clone(),
                    name: if s.name.is_empty() {
                        s.id.clone()
                    } else {
                        s.name.clone()
                    },
                    mail: String::new(),
                });
            }
        }
    }
    ok_with(json!({ "data": list }))
}

/// A simulator serving HTTP on a loopback port of its own, stopped when dropped: for tests,
/// the demo and benchmarks.
#[derive(Debug)]
pub struct LocalSimulator {
    /// The simulator (fault knobs, counters).
    pub sim: Simulator,
    /// Its base URL (`http://127.0.0.1:PORT`).
    pub base_url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl LocalSimulator {
    /// Starts a simulator for these systems on 127.0.0.1, port chosen by the system.
    pub async fn start(systems: Vec<SystemConfig>) -> std::io::Result<Self> {
        let sim = Simulator::new(SimConfig {
            systems,
            agencies: Vec::new(),
            skew_secs: default_skew(),
            max_package_bytes: default_max_package(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}", listener.local_addr()?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = sim.clone();
        tokio::spawn(async move {
            let _ = server
                .serve(listener, async {
                    let _ = stopped.await;
                })
                .await;
        });
        Ok(LocalSimulator {
            sim,
            base_url,
            stop: Some(stop),
        })
    }
}

impl Drop for LocalSimulator {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl SystemConfig {
    /// A system owning one code.
    pub fn new(id: &str, secret: &str, organ: &str) -> Self {
        SystemConfig {
            id: id.into(),
            secret: secret.into(),
            organs: vec![organ.into()],
            name: String::new(),
        }
    }
}

/// Accepts TLS connections for axum; a failed or slow handshake is dropped, not fatal.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (tcp, addr) = match self.tcp.accept().await {
                Ok(c) => c,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            // Answers go out at once, not behind the client's delayed ACK (Nagle).
            let _ = tcp.set_nodelay(true);
            match tokio::time::timeout(Duration::from_secs(10), self.acceptor.accept(tcp)).await {
                Ok(Ok(stream)) => return (stream, addr),
                Ok(Err(e)) => tracing::debug!(%addr, error = %e, "TLS handshake refused"),
                Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}
