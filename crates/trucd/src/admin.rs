//! The admin HTTP API (axum) on its own port: health, readiness and metrics for machines;
//! a versioned JSON API for operators and `trucctl`. The contract (paths, bodies, codes)
//! lives in `truc-admin`.
//!
//! `/healthz`, `/readyz` and `/metrics` are open; everything under `/api/v1` needs a
//! bearer token from `[[admin.tokens]]`, and every change made through it is written to the
//! audit log as `admin:NAME`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use truc_admin::{codes, paths};
use truc_edxml::{CalendarDate, DocumentId, OrgCode};
use truc_relay::{Relay, RelayError, Unit, UnitState};
use truc_store::{
    DeliveryKey, DeliveryState, Destination, MessageId, QueueDepth, StoreError, StoreStats,
    Timestamp,
};
use truc_upstream::{BreakerState, Upstream};

use crate::config::AdminToken;
use crate::metrics::{LinkHealth, Metrics, STATE_REFRESH};

/// Observing the store longer than this makes the figures reused for [`STATE_REFRESH`].
const SLOW_OBSERVATION: std::time::Duration = std::time::Duration::from_millis(50);

/// Changes the log filter of the running process (installed by `trucd serve`; absent when
/// the relay runs inside another program, such as a test).
pub trait LogControl: Send + Sync + 'static {
    /// The filter in force.
    fn current(&self) -> String;
    /// Replaces it; the error says why the filter is invalid.
    fn set(&self, filter: &str) -> Result<(), String>;
}

/// Where the relay is in its life, for `/readyz`.
#[derive(Debug, Default)]
pub struct Lifecycle {
    serving: AtomicBool,
    shutting_down: AtomicBool,
}

impl Lifecycle {
    /// The gRPC listener serves.
    pub fn set_serving(&self) {
        self.serving.store(true, Ordering::Release);
    }

    /// Shutdown has begun.
    pub fn set_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }
}

/// The national-axis link as the admin API shows it.
#[derive(Clone)]
pub struct LinkView {
    /// The client (its breaker state).
    pub upstream: Arc<dyn Upstream>,
    /// Credentials state.
    pub health: Arc<LinkHealth>,
    /// Where the axis is.
    pub base_url: String,
}

/// Everything the admin handlers read.
pub struct AdminState {
    /// The engine.
    pub relay: Arc<Relay>,
    /// The metrics registry.
    pub metrics: Arc<Metrics>,
    /// Accepted tokens: name and SHA-256.
    pub tokens: Vec<AdminToken>,
    /// When the daemon started.
    pub started_at: Timestamp,
    /// The gRPC listener's address.
    pub grpc_addr: SocketAddr,
    /// The store directory.
    pub store_dir: PathBuf,
    /// The national-axis link, if configured.
    pub link: Option<LinkView>,
    /// Readiness flags.
    pub lifecycle: Arc<Lifecycle>,
    /// Log filter control, when this process owns its logging.
    pub log: Option<Arc<dyn LogControl>>,
    /// Figures of the last scrape and when they were taken, reused for [`STATE_REFRESH`]
    /// when taking them was slow (a deep backlog).
    observed: Mutex<Option<(Instant, Vec<QueueDepth>, StoreStats)>>,
}

impl AdminState {
    /// The state of a relay's admin API.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        relay: Arc<Relay>,
        metrics: Arc<Metrics>,
        tokens: Vec<AdminToken>,
        grpc_addr: SocketAddr,
        store_dir: PathBuf,
        link: Option<LinkView>,
        lifecycle: Arc<Lifecycle>,
        log: Option<Arc<dyn LogControl>>,
    ) -> Self {
        AdminState {
            relay,
            metrics,
            tokens,
            started_at: Timestamp::now(),
            grpc_addr,
            store_dir,
            link,
            lifecycle,
            log,
            observed: Mutex::new(None),
        }
    }

    fn link_report(&self) -> Option<truc_admin::LinkReport> {
        self.link.as_ref().map(|l| truc_admin::LinkReport {
            base_url: l.base_url.clone(),
            circuit: match l.upstream.link() {
                BreakerState::Closed => "closed",
                BreakerState::Open => "open",
                BreakerState::HalfOpen => "half_open",
            }
            .into(),
            credentials_rejected: l.health.credentials_rejected(),
        })
    }

    /// Queue depths and store figures, at most [`STATE_REFRESH`] old.
    async fn observe(&self) -> Result<(Vec<QueueDepth>, StoreStats), ApiError> {
        if let Ok(guard) = self.observed.lock() {
            if let Some((at, queues, stats)) = guard.as_ref() {
                if at.elapsed() < STATE_REFRESH {
                    return Ok((queues.clone(), stats.clone()));
                }
            }
        }
        let store = self.relay.store();
        let started = Instant::now();
        let queues = store.queue_depths(Timestamp::now()).await?;
        let stats = store.stats().await?;
        // Cheap figures are always fresh; costly ones (counting a deep backlog walks its
        // index) are reused for a moment, so frequent scrapes cannot load the store.
        if started.elapsed() >= SLOW_OBSERVATION {
            if let Ok(mut guard) = self.observed.lock() {
                *guard = Some((Instant::now(), queues.clone(), stats.clone()));
            }
        }
        Ok((queues, stats))
    }

    fn readiness(&self, store_ok: bool) -> truc_admin::Readiness {
        let listeners = self.lifecycle.serving.load(Ordering::Acquire);
        let shutting_down = self.lifecycle.shutting_down.load(Ordering::Acquire);
        truc_admin::Readiness {
            ready: store_ok && listeners && !shutting_down,
            store: store_ok,
            listeners,
            shutting_down,
            national_axis: self.link_report(),
        }
    }
}

/// The admin router.
pub fn router(state: Arc<AdminState>) -> Router {
    let api = Router::new()
        .route(paths::STATUS, get(status))
        .route(paths::UNITS, get(list_units).post(add_unit))
        .route(paths::UNIT, get(show_unit).put(replace_unit))
        .route(paths::UNIT_SUSPEND, post(suspend_unit))
        .route(paths::UNIT_ACTIVATE, post(activate_unit))
        .route(paths::UNIT_CERTIFICATES, post(change_certificates))
        .route(paths::QUEUES, get(queues))
        .route(paths::DEAD_LETTERS, get(dead_letters))
        .route(paths::DEAD_LETTER, get(show_dead_letter))
        .route(paths::DEAD_LETTER_REQUEUE, post(requeue))
        .route(paths::DEAD_LETTER_DROP, post(drop_dead_letter))
        .route(paths::TRACE, get(trace))
        .route(paths::OVERDUE, get(overdue))
        .route(paths::STATS, get(stats))
        .route(paths::AUDIT, get(audit_log))
        .route(paths::AUDIT_VERIFY, get(audit_verify))
        .route(paths::BACKUP, post(backup))
        .route(paths::LOG_LEVEL, get(log_level).put(set_log_level))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ));
    Router::new()
        .route(paths::HEALTHZ, get(|| async { "ok\n" }))
        .route(paths::READYZ, get(readyz))
        .route(paths::METRICS, get(metrics))
        .route(paths::OPENAPI, get(openapi))
        .merge(api)
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                codes::NOT_FOUND,
                "no such path: the API is described at /api/v1/openapi.json",
            )
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                codes::METHOD_NOT_ALLOWED,
                "this method is not allowed on this path: see /api/v1/openapi.json",
            )
        })
        .with_state(state)
}

/// Who is calling, from the token's name: `admin:NAME`.
#[derive(Debug, Clone)]
struct Actor(String);

async fn authenticate(
    State(state): State<Arc<AdminState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    let Some(presented) = presented else {
        return ApiError::new(
            StatusCode::UNAUTHORIZED,
            codes::UNAUTHORIZED,
            "this API needs `Authorization: Bearer TOKEN` (trucctl: --token or TRUC_ADMIN_TOKEN)",
        )
        .into_response();
    };
    let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    // Every configured token is compared, in constant time, whatever matches.
    let mut who = None;
    for t in &state.tokens {
        if constant_time_eq_hex(&digest, &t.sha256) {
            who = Some(t.name.clone());
        }
    }
    match who {
        Some(name) => {
            request
                .extensions_mut()
                .insert(Actor(format!("admin:{name}")));
            next.run(request).await
        }
        None => ApiError::new(
            StatusCode::UNAUTHORIZED,
            codes::UNAUTHORIZED,
            "the token is not one of [[admin.tokens]]: check TRUC_ADMIN_TOKEN or --token",
        )
        .into_response(),
    }
}

fn constant_time_eq_hex(digest: &[u8; 32], hex: &str) -> bool {
    let bytes = hex.as_bytes();
    if bytes.len() != 64 {
        return false;
    }
    let mut diff = 0u8;
    for (i, d) in digest.iter().enumerate() {
        let hi = hex_value(bytes[2 * i]);
        let lo = hex_value(bytes[2 * i + 1]);
        diff |= (d ^ ((hi << 4) | (lo & 0x0f))) | ((hi | lo) & 0xf0);
    }
    diff == 0
}

fn hex_value(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        b'A'..=b'F' => b - b'A' + 10,
        _ => 0xff,
    }
}

/// An error answer: HTTP status and the stable JSON body.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: String,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code: code.to_owned(),
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, codes::BAD_REQUEST, message)
    }

    fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, codes::NOT_FOUND, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = truc_admin::ErrorBody {
            error: truc_admin::ErrorDetail {
                code: self.code,
                message: self.message,
            },
        };
        let unauthorized = self.status == StatusCode::UNAUTHORIZED;
        let mut response = (self.status, axum::Json(body)).into_response();
        if unauthorized {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"truc admin\""),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let status = match &e {
            StoreError::NotFound(_) => StatusCode::NOT_FOUND,
            StoreError::WrongState { .. } | StoreError::LeaseLost(_) | StoreError::Purged(_) => {
                StatusCode::CONFLICT
            }
            StoreError::Full(_) | StoreError::Closed => StatusCode::SERVICE_UNAVAILABLE,
            StoreError::Backup(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<RelayError> for ApiError {
    fn from(e: RelayError) -> Self {
        match e {
            RelayError::Store(s) => s.into(),
            RelayError::UnknownUnit(_) | RelayError::UnknownRemote(_) => {
                ApiError::new(StatusCode::NOT_FOUND, e.code(), e.to_string())
            }
            RelayError::CredentialInUse { .. } => {
                ApiError::new(StatusCode::CONFLICT, e.code(), e.to_string())
            }
            other => ApiError::new(StatusCode::BAD_REQUEST, other.code(), other.to_string()),
        }
    }
}

/// A JSON body; a malformed one is `ADMIN_BAD_REQUEST` with the parser's reason.
struct ApiJson<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        axum::Json::<T>::from_request(req, state)
            .await
            .map(|axum::Json(v)| ApiJson(v))
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
    }
}

/// Query parameters; malformed ones are `ADMIN_BAD_REQUEST`.
struct ApiQuery<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| ApiQuery(v))
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
    }
}

/// Path parameters; malformed ones are `ADMIN_BAD_REQUEST`.
struct ApiPath<T>(T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| ApiPath(v))
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
    }
}

type ApiResult<T> = Result<axum::Json<T>, ApiError>;

fn org_code(raw: &str) -> Result<OrgCode, ApiError> {
    OrgCode::parse(raw).map_err(|e| ApiError::bad_request(format!("{raw:?}: {e}")))
}

fn message_id(raw: &str) -> Result<MessageId, ApiError> {
    raw.parse().map_err(ApiError::bad_request)
}

async fn readyz(State(state): State<Arc<AdminState>>) -> Response {
    let store_ok = state.relay.store().stats().await.is_ok();
    let readiness = state.readiness(store_ok);
    let code = if readiness.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(readiness)).into_response()
}

async fn metrics(State(state): State<Arc<AdminState>>) -> Response {
    let now = Timestamp::now();
    let observed = state.observe().await;
    let store_ok = observed.is_ok();
    let (queues, stats) = observed.unwrap_or_default();
    let link = state
        .link
        .as_ref()
        .map(|l| (l.upstream.link(), l.health.credentials_rejected()));
    let ready = state.readiness(store_ok).ready;
    state
        .metrics
        .observe_state(&stats, &queues, now, link, ready);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}

async fn openapi() -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        truc_admin::OPENAPI_JSON,
    )
        .into_response()
}

async fn status(State(state): State<Arc<AdminState>>) -> ApiResult<truc_admin::StatusReport> {
    let (queues, store) = state.observe().await?;
    let registry = state.relay.registry();
    let mut units = truc_admin::UnitCounts::default();
    for u in registry.units() {
        units.total += 1;
        match u.state {
            UnitState::Active => units.active += 1,
            UnitState::Pending => units.pending += 1,
            UnitState::Suspended => units.suspended += 1,
        }
    }
    Ok(axum::Json(truc_admin::StatusReport {
        version: env!("CARGO_PKG_VERSION").into(),
        ministry: registry.ministry().clone(),
        started_at: state.started_at,
        grpc_addr: state.grpc_addr.to_string(),
        store_dir: state.store_dir.display().to_string(),
        store,
        units,
        queues,
        inbox_connections: state.metrics.inbox_connections(),
        national_axis: state.link_report(),
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UnitFilter {
    state: Option<UnitState>,
    parent: Option<String>,
}

async fn list_units(
    State(state): State<Arc<AdminState>>,
    ApiQuery(filter): ApiQuery<UnitFilter>,
) -> ApiResult<truc_admin::UnitList> {
    let registry = state.relay.registry();
    let parent = filter.parent.as_deref().map(org_code).transpose()?;
    let units = registry
        .units()
        .into_iter()
        .filter(|u| filter.state.is_none_or(|s| u.state == s))
        .filter(|u| {
            parent
                .as_ref()
                .is_none_or(|p| registry.parent_of(u).as_ref() == Some(p))
        })
        .collect();
    Ok(axum::Json(truc_admin::UnitList { units }))
}

async fn add_unit(
    State(state): State<Arc<AdminState>>,
    Extension(actor): Extension<Actor>,
    ApiJson(unit): ApiJson<Unit>,
) -> Result<(StatusCode, axum::Json<Unit>), ApiError> {
    let registry = state.relay.registry();
    if registry.unit(&unit.code).is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            codes::CONFLICT,
            format!(
                "unit {} already exists: change it with PUT {}",
                unit.code,
                paths::fill(paths::UNIT, &[("code", unit.code.as_str())])
            ),
        ));
    }
    let unit = normalised(unit)?;
    registry
        .upsert(state.relay.store().as_ref(), unit.clone(), &actor.0)
        .await?;
    Ok((StatusCode::CREATED, axum::Json(unit)))
}

/// Fingerprints in lowercase hex, checked.
fn normalised(mut unit: Unit) -> Result<Unit, ApiError> {
    for fp in &mut unit.certificates {
        *fp = fingerprint(fp)?;
    }
    Ok(unit)
}

fn fingerprint(raw: &str) -> Result<String, ApiError> {
    let fp: String = raw
        .chars()
        .filter(|c| *c != ':')
        .collect::<String>()
        .to_ascii_lowercase();
    if fp.len() != 64 || !fp.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request(format!(
            "{raw:?} is not a SHA-256 certificate fingerprint (64 hex digits)"
        )));
    }
    Ok(fp)
}

fn known_unit(state: &AdminState, raw: &str) -> Result<Unit, ApiError> {
    let code = org_code(raw)?;
    state.relay.registry().unit(&code).ok_or_else(|| {
        ApiError::not_found(format!(
            "unit {code} is not in the registry (list them with trucctl units list)"
        ))
    })
}

async fn show_unit(
    State(state): State<Arc<AdminState>>,
    ApiPath(code): ApiPath<String>,
) -> ApiResult<Unit> {
    Ok(axum::Json(known_unit(&state, &code)?))
}

async fn replace_unit(
    State(state): State<Arc<AdminState>>,
    Extension(actor): Extension<Actor>,
    ApiPath(code): ApiPath<String>,
    ApiJson(unit): ApiJson<Unit>,
) -> ApiResult<Unit> {
    let existing = known_unit(&state, &code)?;
    if existing.code != unit.code {
        return Err(ApiError::bad_request(format!(
            "the body is unit {}, the path says {}",
            unit.code, existing.code
        )));
    }
    let unit = normalised(unit)?;
    let registry = state.relay.registry();
    registry
        .upsert(state.relay.store().as_ref(), unit.clone(), &actor.0)
        .await?;
    // A state change through PUT releases held mail like activate does.
    if unit.state == UnitState::Active && existing.state != UnitState::Active {
        registry
            .set_state(
                state.relay.store().as_ref(),
                &unit.code,
                UnitState::Active,
                &actor.0,
            )
            .await?;
    }
    state
        .relay
        .hub()
        .wake(&Destination::Inbox(unit.code.clone()));
    Ok(axum::Json(unit))
}

async fn set_state(
    state: &AdminState,
    actor: &Actor,
    code: &str,
    to: UnitState,
) -> ApiResult<truc_admin::StateChange> {
    let unit = known_unit(state, code)?;
    let registry = state.relay.registry();
    let released = registry
        .set_state(state.relay.store().as_ref(), &unit.code, to, &actor.0)
        .await?;
    if released > 0 {
        if let Some(serving) = registry.serving_unit(&unit.code) {
            state.relay.hub().wake(&Destination::Inbox(serving.code));
        }
    }
    let unit = registry.unit(&unit.code).unwrap_or(unit);
    Ok(axum::Json(truc_admin::StateChange {
        unit,
        released: released as u64,
    }))
}

async fn suspend_unit(
    State(state): State<Arc<AdminState>>,
    Extension(actor): Extension<Actor>,
    ApiPath(code): ApiPath<String>,
) -> ApiResult<truc_admin::StateChange> {
    set_state(&state, &actor, &code, UnitState::Suspended).await
}

async fn activate_unit(
    State(state): State<Arc<AdminState>>,
    Extension(actor): Extension<Actor>,
    ApiPath(code): ApiPath<String>,
) -> ApiResult<truc_admin::StateChange> {
    set_state(&state, &actor, &code, UnitState::Active).await
}

async fn change_certificates(
    State(state): State<Arc<AdminState>>,
    Extension(actor): Extension<Actor>,
    ApiPath(code): ApiPath<String>,
    ApiJson(change): ApiJson<truc_admin::CertificateChange>,
) -> ApiResult<Unit> {
    let mut unit = known_unit(&state, &code)?;
    let add: Vec<String> = change
        .add
        .iter()
        .map(|f| fingerprint(f))
        .collect::<Result<_, _>>()?;
    let remove: Vec<String> = change
        .remove
        .iter()
        .map(|f| fingerprint(f))
        .collect::<Result<_, _>>()?;
    for fp in &remove {
        if !unit.certificates.contains(fp) {
            return Err(ApiError::not_found(format!(
                "unit {} has no certificate {fp}",
                unit.code
            )));
        }
    }
    unit.certificates.retain(|f| !remove.contains(f));
    for fp in &add {
        if !unit.certificates.contains(fp) {
            unit.certificates.push(fp.clone());
        }
    }
    let lower = |names: &[String]| -> Vec<String> {
        names
            .iter()
            .map(|n| n.trim().to_ascii_lowercase())
            .collect()
    };
    let (add_names, remove_names) = (lower(&change.add_names), lower(&change.remove_names));
    for n in &remove_names {
        if !unit.names.iter().any(|m| m.eq_ignore_ascii_case(n)) {
            return Err(ApiError::not_found(format!(
                "unit {} has no DNS name {n}",
                unit.code
            )));
        }
    }
    unit.names
        .retain(|n| !remove_names.contains(&n.to_ascii_lowercase()));
    for n in &add_names {
        if n.is_empty() {
            return Err(ApiError::bad_request("an empty DNS name"));
        }
        if !unit.names.iter().any(|m| m.eq_ignore_ascii_case(n)) {
            unit.names.push(n.clone());
        }
    }
    let store = state.relay.store();
    state
        .relay
        .registry()
        .upsert(store.as_ref(), unit.clone(), &actor.0)
        .await?;
    let detail = format!(
        "added {add:?} removed {remove:?} names added {add_names:?} removed {remove_names:?}"
    );
    store
        .audit(
            &actor.0,
            "unit.certificates",
            unit.code.as_str(),
            &detail,
            Timestamp::now(),
        )
        .await?;
    Ok(axum::Json(unit))
}

async fn queues(State(state): State<Arc<AdminState>>) -> ApiResult<truc_admin::QueueList> {
    let now = Timestamp::now();
    let queues = state.relay.store().queue_depths(now).await?;
    Ok(axum::Json(truc_admin::QueueList { now, queues }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Limit {
    limit: Option<usize>,
}

async fn dead_letters(
    State(state): State<Arc<AdminState>>,
    ApiQuery(q): ApiQuery<Limit>,
) -> ApiResult<truc_admin::DeadLetterList> {
    let store = state.relay.store();
    let mut out = Vec::new();
    for delivery in store
        .dead_letters(q.limit.unwrap_or(100).min(10_000))
        .await?
    {
        if let Some(message) = store.message(delivery.key.message_id).await? {
            out.push(truc_admin::DeadLetter { delivery, message });
        }
    }
    Ok(axum::Json(truc_admin::DeadLetterList { dead_letters: out }))
}

fn delivery_key(message: &str, recipient: &str) -> Result<DeliveryKey, ApiError> {
    Ok(DeliveryKey {
        message_id: message_id(message)?,
        recipient: org_code(recipient)?,
    })
}

/// The dead letter `key` and its message, or `ADMIN_NOT_FOUND` if it is not one.
async fn dead_letter(
    state: &AdminState,
    key: &DeliveryKey,
) -> Result<(truc_store::Delivery, truc_store::MessageRecord), ApiError> {
    let store = state.relay.store();
    let record = store
        .message(key.message_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no message {}", key.message_id)))?;
    let delivery = store
        .deliveries(key.message_id)
        .await?
        .into_iter()
        .find(|d| &d.key == key)
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "message {} has no recipient {}",
                key.message_id, key.recipient
            ))
        })?;
    if delivery.state != DeliveryState::Dead {
        return Err(ApiError::not_found(format!(
            "{key} is not a dead letter (it is {})",
            delivery.state.as_str()
        )));
    }
    Ok((delivery, record))
}

async fn show_dead_letter(
    State(state): State<Arc<AdminState>>,
    ApiPath((message, recipient)): ApiPath<(String, String)>,
) -> ApiResult<truc_admin::DeadLetterDetail> {
    let key = delivery_key(&message, &recipient)?;
    let (delivery, record) = dead_letter(&state, &key).await?;
    let events = state.relay.store().events(key.message_id).await?;
    Ok(axum::Json(truc_admin::DeadLetterDetail {
        delivery,
        message: record,
        events,
    }))
}

async fn requeue(
    State(state): State<Arc<AdminState>>,
    Extension(actor): Extension<Actor>,
    ApiPath((message, recipient)): ApiPath<(String, String)>,
) -> ApiResult<truc_store::Delivery> {
    let key = delivery_key(&message, &recipient)?;
    let delivery = state
        .relay
        .store()
        .requeue(&key, &actor.0, Timestamp::now())
        .await?;
    state.relay.hub().wake(&delivery.destination);
    Ok(axum::Json(delivery))
}

async fn drop_dead_letter(
    State(state): State<Arc<AdminState>>,
    Extension(actor): Extension<Actor>,
    ApiPath((message, recipient)): ApiPath<(String, String)>,
    ApiJson(request): ApiJson<truc_admin::DropRequest>,
) -> ApiResult<truc_store::Delivery> {
    let key = delivery_key(&message, &recipient)?;
    if request.reason.trim().is_empty() {
        return Err(ApiError::bad_request(
            "a reason is required: it is kept in the audit log",
        ));
    }
    dead_letter(&state, &key).await?;
    let delivery = state
        .relay
        .store()
        .drop_delivery(&key, &actor.0, &request.reason, Timestamp::now())
        .await?;
    Ok(axum::Json(delivery))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TraceQuery {
    id: String,
}

async fn trace(
    State(state): State<Arc<AdminState>>,
    ApiQuery(q): ApiQuery<TraceQuery>,
) -> ApiResult<truc_admin::TraceReport> {
    let store = state.relay.store();
    let id = q.id.trim();
    if id.is_empty() {
        return Err(ApiError::bad_request(
            "id is empty: give a message id or a DocumentId",
        ));
    }
    let trace = match id.parse::<MessageId>() {
        Ok(mid) => {
            let message = store
                .message(mid)
                .await?
                .ok_or_else(|| ApiError::not_found(format!("no message {mid}")))?;
            match &message.document_id {
                Some(doc) => store.trace(doc).await?,
                None => truc_store::DocumentTrace {
                    deliveries: store.deliveries(mid).await?,
                    events: store.events(mid).await?,
                    messages: vec![message],
                    statuses: Vec::new(),
                },
            }
        }
        Err(_) => {
            let trace = store.trace(&DocumentId::new(id)).await?;
            if trace.messages.is_empty() && trace.statuses.is_empty() {
                return Err(ApiError::not_found(format!(
                    "no message and no document {id:?} (a message id is 26 characters; a DocumentId looks like 000.00.05.G04,2026/11/21,15/TCĐBVN-VP)"
                )));
            }
            trace
        }
    };
    Ok(axum::Json(truc_admin::TraceReport {
        id: id.to_owned(),
        trace,
    }))
}

/// Today in Vietnam (UTC+7, no daylight saving): the calendar of due dates.
pub fn vietnam_today(now: Timestamp) -> CalendarDate {
    now.in_vietnam().date
}

/// Milliseconds at midnight, Vietnam time, starting `date`.
fn vietnam_midnight(date: CalendarDate) -> Timestamp {
    let seconds = truc_edxml::VietnamTime {
        date,
        second_of_day: 0,
    }
    .unix_seconds();
    Timestamp(u64::try_from(seconds.max(0)).unwrap_or(0) * 1000)
}

fn parse_date(raw: &str) -> Result<CalendarDate, ApiError> {
    CalendarDate::parse(&raw.replace('-', "/")).ok_or_else(|| {
        ApiError::bad_request(format!("{raw:?} is not a date (YYYY-MM-DD or YYYY/MM/DD)"))
    })
}

/// A time parameter: a date (midnight in Vietnam) or milliseconds since the epoch.
fn parse_time(raw: &str) -> Result<Timestamp, ApiError> {
    match raw.parse::<u64>() {
        // Milliseconds since 1970 have 12 digits or more since 1973; fewer is a mistake
        // (such as 20261121), not a time.
        Ok(ms) if raw.len() >= 12 => Ok(Timestamp(ms)),
        Ok(_) => Err(ApiError::bad_request(format!(
            "{raw:?} is neither a date (YYYY-MM-DD) nor milliseconds since 1970"
        ))),
        Err(_) => parse_date(raw).map(vietnam_midnight),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OverdueQuery {
    today: Option<String>,
    limit: Option<usize>,
}

async fn overdue(
    State(state): State<Arc<AdminState>>,
    ApiQuery(q): ApiQuery<OverdueQuery>,
) -> ApiResult<truc_admin::OverdueReport> {
    let today = match q.today.as_deref() {
        Some(d) => parse_date(d)?,
        None => vietnam_today(Timestamp::now()),
    };
    let documents = state
        .relay
        .store()
        .overdue(today, q.limit.unwrap_or(100).min(10_000))
        .await?;
    Ok(axum::Json(truc_admin::OverdueReport { today, documents }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StatsQuery {
    from: Option<String>,
    to: Option<String>,
    unit: Option<String>,
}

async fn stats(
    State(state): State<Arc<AdminState>>,
    ApiQuery(q): ApiQuery<StatsQuery>,
) -> ApiResult<truc_admin::StatsReport> {
    let from = q
        .from
        .as_deref()
        .map(parse_time)
        .transpose()?
        .unwrap_or_default();
    let to = match q.to.as_deref() {
        // A date as the end means the end of that day.
        Some(raw) if raw.parse::<u64>().is_err() || raw.len() < 12 => {
            let day = parse_date(raw)?;
            vietnam_midnight(CalendarDate::from_unix_days(day.unix_days() + 1))
        }
        Some(raw) => parse_time(raw)?,
        None => Timestamp::now().plus(std::time::Duration::from_millis(1)),
    };
    if to <= from {
        return Err(ApiError::bad_request("`to` must be after `from`"));
    }
    let unit = q.unit.as_deref().map(org_code).transpose()?;
    let mut units = state.relay.store().traffic(from, to).await?;
    if let Some(unit) = unit {
        // The unit and the level-3 units it serves.
        let registry = state.relay.registry();
        let children: Vec<OrgCode> = registry
            .children(&unit)
            .into_iter()
            .map(|u| u.code)
            .collect();
        units.retain(|t| t.unit == unit || children.contains(&t.unit));
    }
    Ok(axum::Json(truc_admin::StatsReport { from, to, units }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    from: Option<u64>,
    limit: Option<usize>,
}

async fn audit_log(
    State(state): State<Arc<AdminState>>,
    ApiQuery(q): ApiQuery<AuditQuery>,
) -> ApiResult<truc_admin::AuditPage> {
    let entries = state
        .relay
        .store()
        .audit_log(q.from.unwrap_or(1), q.limit.unwrap_or(100).min(10_000))
        .await?;
    Ok(axum::Json(truc_admin::AuditPage { entries }))
}

async fn audit_verify(State(state): State<Arc<AdminState>>) -> ApiResult<truc_store::AuditReport> {
    Ok(axum::Json(state.relay.store().verify_audit().await?))
}

async fn backup(
    State(state): State<Arc<AdminState>>,
    Extension(actor): Extension<Actor>,
    ApiJson(request): ApiJson<truc_admin::BackupRequest>,
) -> ApiResult<truc_store::BackupReport> {
    let dir = PathBuf::from(&request.dir);
    if !dir.is_absolute() {
        return Err(ApiError::bad_request(format!(
            "{:?} is relative: give an absolute directory on the relay's machine",
            request.dir
        )));
    }
    let store = state.relay.store();
    let report = store.backup(&dir).await?;
    store
        .audit(
            &actor.0,
            "store.backup",
            &request.dir,
            &format!(
                "{} records, {} blobs, {} bytes",
                report.records, report.blobs, report.bytes
            ),
            Timestamp::now(),
        )
        .await?;
    Ok(axum::Json(report))
}

fn log_control(state: &AdminState) -> Result<&Arc<dyn LogControl>, ApiError> {
    state.log.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            codes::UNAVAILABLE,
            "this relay runs inside another program that owns its logging",
        )
    })
}

async fn log_level(State(state): State<Arc<AdminState>>) -> ApiResult<truc_admin::LogLevel> {
    Ok(axum::Json(truc_admin::LogLevel {
        level: log_control(&state)?.current(),
    }))
}

async fn set_log_level(
    State(state): State<Arc<AdminState>>,
    Extension(actor): Extension<Actor>,
    ApiJson(request): ApiJson<truc_admin::LogLevel>,
) -> ApiResult<truc_admin::LogLevel> {
    let control = log_control(&state)?;
    let before = control.current();
    control.set(&request.level).map_err(|e| {
        ApiError::bad_request(format!(
            "{:?} is not a log filter ({e}); try info, debug or trucd=debug,info",
            request.level
        ))
    })?;
    state
        .relay
        .store()
        .audit(
            &actor.0,
            "log.level",
            "trucd",
            &format!("{before} -> {}", request.level),
            Timestamp::now(),
        )
        .await?;
    tracing::info!(actor = %actor.0, level = %request.level, "log level changed");
    Ok(axum::Json(truc_admin::LogLevel {
        level: control.current(),
    }))
}

/// Serves the admin API on `listener` until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AdminState>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_compare_by_hash() {
        let digest: [u8; 32] = Sha256::digest(b"secret").into();
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        assert!(constant_time_eq_hex(&digest, &hex));
        assert!(constant_time_eq_hex(&digest, &hex.to_uppercase()));
        let other: [u8; 32] = Sha256::digest(b"Secret").into();
        assert!(!constant_time_eq_hex(&other, &hex));
        assert!(!constant_time_eq_hex(&digest, &hex[..62]));
        let mut bad = hex.clone();
        bad.replace_range(0..1, "g");
        assert!(!constant_time_eq_hex(&digest, &bad));
    }

    #[test]
    fn vietnam_days_start_at_17_utc() {
        // 2026-11-21 16:59:59 UTC is still the 21st in Hà Nội; 17:00 is the 22nd.
        let before = Timestamp(1_795_280_399_000);
        let after = Timestamp(1_795_280_400_000);
        assert_eq!(vietnam_today(before).to_string(), "2026/11/21");
        assert_eq!(vietnam_today(after).to_string(), "2026/11/22");
        let midnight = vietnam_midnight(CalendarDate::new(2026, 11, 22).expect("date"));
        assert_eq!(midnight, after);
    }
}
