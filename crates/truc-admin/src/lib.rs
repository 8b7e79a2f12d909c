#![forbid(unsafe_code)]
//! The contract of `trucd`'s admin HTTP API, version 1: its paths, JSON bodies and error
//! codes, in one place so the daemon (server) and `trucctl` (client) cannot drift apart.
//!
//! Times are milliseconds since the Unix epoch (UTC), as in the store. Every error is
//! `{"error": {"code": "...", "message": "..."}}` with a stable code (see `docs/errors.md`).
//! The OpenAPI description is `openapi.json` in this crate, served at [`paths::OPENAPI`].

use serde::{Deserialize, Serialize};
use truc_edxml::{CalendarDate, OrgCode};
use truc_relay::Unit;
use truc_store::{
    AuditEntry, Delivery, DocumentTrace, Event, MessageRecord, OverdueDocument, QueueDepth,
    StoreStats, Timestamp, UnitTraffic,
};

/// The OpenAPI 3 description of the API (served by the daemon, checked by tests).
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// Paths of the API. Parameters are written `{name}` (axum's syntax).
pub mod paths {
    /// Liveness: the process answers.
    pub const HEALTHZ: &str = "/healthz";
    /// Readiness: store open, listeners up (body: [`crate::Readiness`]).
    pub const READYZ: &str = "/readyz";
    /// Prometheus metrics (OpenMetrics text).
    pub const METRICS: &str = "/metrics";
    /// The OpenAPI description.
    pub const OPENAPI: &str = "/api/v1/openapi.json";
    /// Overview of the relay.
    pub const STATUS: &str = "/api/v1/status";
    /// Units: list (GET), add (POST).
    pub const UNITS: &str = "/api/v1/units";
    /// One unit: show (GET), replace (PUT).
    pub const UNIT: &str = "/api/v1/units/{code}";
    /// Suspend a unit (POST): its adapter is refused, its deliveries held.
    pub const UNIT_SUSPEND: &str = "/api/v1/units/{code}/suspend";
    /// Activate a unit (POST): held deliveries are released.
    pub const UNIT_ACTIVATE: &str = "/api/v1/units/{code}/activate";
    /// Change a unit's adapter certificates (POST, [`crate::CertificateChange`]).
    pub const UNIT_CERTIFICATES: &str = "/api/v1/units/{code}/certificates";
    /// Queue depths.
    pub const QUEUES: &str = "/api/v1/queues";
    /// Dead letters.
    pub const DEAD_LETTERS: &str = "/api/v1/dead-letters";
    /// One dead letter.
    pub const DEAD_LETTER: &str = "/api/v1/dead-letters/{message_id}/{recipient}";
    /// Requeue a dead letter (POST).
    pub const DEAD_LETTER_REQUEUE: &str = "/api/v1/dead-letters/{message_id}/{recipient}/requeue";
    /// Drop a dead letter for good (POST, [`crate::DropRequest`]).
    pub const DEAD_LETTER_DROP: &str = "/api/v1/dead-letters/{message_id}/{recipient}/drop";
    /// A document's or a message's trace (`?id=`: a message id or a DocumentId).
    pub const TRACE: &str = "/api/v1/trace";
    /// Documents past their due date without a "completed" status.
    pub const OVERDUE: &str = "/api/v1/overdue";
    /// Traffic per unit over a period (`?from=&to=&unit=`).
    pub const STATS: &str = "/api/v1/stats";
    /// The audit log (`?from=&limit=`).
    pub const AUDIT: &str = "/api/v1/audit";
    /// Verify the audit chain.
    pub const AUDIT_VERIFY: &str = "/api/v1/audit/verify";
    /// Back up the store to a directory on the relay's machine (POST).
    pub const BACKUP: &str = "/api/v1/backup";
    /// The log filter: read (GET), change (PUT).
    pub const LOG_LEVEL: &str = "/api/v1/log-level";

    /// Fills `{name}` parameters, percent-encoding each value.
    pub fn fill(template: &str, params: &[(&str, &str)]) -> String {
        let mut out = template.to_owned();
        for (name, value) in params {
            out = out.replace(&format!("{{{name}}}"), &crate::percent_encode(value));
        }
        out
    }
}

/// Stable error codes of the admin API (besides the relay's and store's own codes, which
/// pass through: `ROUTE_UNKNOWN_UNIT`, `STORE_WRONG_STATE`, ...).
pub mod codes {
    /// No bearer token, or not a configured one.
    pub const UNAUTHORIZED: &str = "ADMIN_UNAUTHORIZED";
    /// The request is malformed (bad JSON, bad parameter).
    pub const BAD_REQUEST: &str = "ADMIN_BAD_REQUEST";
    /// No such path, unit, message or dead letter.
    pub const NOT_FOUND: &str = "ADMIN_NOT_FOUND";
    /// The method is not allowed on this path.
    pub const METHOD_NOT_ALLOWED: &str = "ADMIN_METHOD_NOT_ALLOWED";
    /// The change conflicts with the current state (a unit that already exists).
    pub const CONFLICT: &str = "ADMIN_CONFLICT";
    /// Not possible in this process (the log level of a relay embedded in another
    /// program).
    pub const UNAVAILABLE: &str = "ADMIN_UNAVAILABLE";

    /// Every admin code, for documentation tests.
    pub const ALL: &[&str] = &[
        UNAUTHORIZED,
        BAD_REQUEST,
        NOT_FOUND,
        METHOD_NOT_ALLOWED,
        CONFLICT,
        UNAVAILABLE,
    ];
}

/// Percent-encodes everything but unreserved characters (RFC 3986), for path segments and
/// query values (DocumentIds contain `,` and `/`).
pub fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// A stable code and a message that says what to do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable code.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
}

/// Answer of `/readyz`: the relay takes traffic when `ready`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Readiness {
    /// Store answering, listeners up, not shutting down.
    pub ready: bool,
    /// The store answers.
    pub store: bool,
    /// The gRPC listener serves.
    pub listeners: bool,
    /// Shutdown has started.
    pub shutting_down: bool,
    /// The national-axis link, if configured (does not affect readiness: documents
    /// queue durably while the axis is away).
    pub national_axis: Option<LinkReport>,
}

/// State of the link to the national axis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkReport {
    /// Base URL of the axis.
    pub base_url: String,
    /// Circuit breaker: `closed` (calls flow), `open` (axis failing, paused), `half_open`
    /// (probing).
    pub circuit: String,
    /// The axis rejects this relay's system id, secret or clock: an operator must act.
    pub credentials_rejected: bool,
}

/// Overview of the relay (`trucctl status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    /// `trucd` version.
    pub version: String,
    /// The ministry served.
    pub ministry: OrgCode,
    /// When the daemon started.
    pub started_at: Timestamp,
    /// The gRPC listener's address.
    pub grpc_addr: String,
    /// The store directory.
    pub store_dir: String,
    /// Store figures.
    pub store: StoreStats,
    /// Units by state.
    pub units: UnitCounts,
    /// Queues that hold something.
    pub queues: Vec<QueueDepth>,
    /// Open inbox streams.
    pub inbox_connections: u64,
    /// The national-axis link, if configured.
    pub national_axis: Option<LinkReport>,
}

/// Units by state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitCounts {
    /// All registered units.
    pub total: u64,
    /// Active.
    pub active: u64,
    /// Registered, not yet connected.
    pub pending: u64,
    /// Suspended by an operator.
    pub suspended: u64,
}

/// List of units.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitList {
    /// The units, by code.
    pub units: Vec<Unit>,
}

/// Answer to suspend/activate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChange {
    /// The unit after the change.
    pub unit: Unit,
    /// Deliveries released from hold (activation).
    pub released: u64,
}

/// A change of a unit's adapter identities: fingerprints and DNS names to add and remove
/// (rotate a certificate by adding the new one, then removing the old one).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CertificateChange {
    /// SHA-256 fingerprints (hex) to accept.
    pub add: Vec<String>,
    /// Fingerprints to stop accepting.
    pub remove: Vec<String>,
    /// DNS names to accept.
    pub add_names: Vec<String>,
    /// DNS names to stop accepting.
    pub remove_names: Vec<String>,
}

/// Queue depths.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueList {
    /// When measured.
    pub now: Timestamp,
    /// Queues that hold something.
    pub queues: Vec<QueueDepth>,
}

/// Dead letters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterList {
    /// The dead deliveries (with their reason).
    pub dead_letters: Vec<DeadLetter>,
}

/// One dead delivery and what it carried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The delivery (reason in `dead_reason`).
    pub delivery: Delivery,
    /// The message.
    pub message: MessageRecord,
}

/// One dead letter in full.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterDetail {
    /// The delivery.
    pub delivery: Delivery,
    /// The message.
    pub message: MessageRecord,
    /// The message's events.
    pub events: Vec<Event>,
}

/// Why a dead letter is dropped (kept in the audit log).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DropRequest {
    /// The reason.
    pub reason: String,
}

/// A trace: every message of a document (or the one message asked for), its deliveries,
/// events and status timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceReport {
    /// What was asked.
    pub id: String,
    /// The trace.
    pub trace: DocumentTrace,
}

/// Documents past due.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverdueReport {
    /// The day compared with (Vietnam's calendar day unless given).
    pub today: CalendarDate,
    /// The documents, earliest due first.
    pub documents: Vec<OverdueDocument>,
}

/// Traffic per unit over a period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsReport {
    /// Start of the period (inclusive).
    pub from: Timestamp,
    /// End of the period (exclusive).
    pub to: Timestamp,
    /// Per unit, by code.
    pub units: Vec<UnitTraffic>,
}

/// A page of the audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditPage {
    /// Entries, oldest first.
    pub entries: Vec<AuditEntry>,
}

/// Where to write a backup (a directory on the relay's machine; it must not exist or be
/// empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupRequest {
    /// The directory.
    pub dir: String,
}

/// The log filter (`info`, `debug`, `trucd=debug,info`: tracing's filter syntax).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogLevel {
    /// The filter.
    pub level: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_documented() {
        let docs =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/errors.md"))
                .expect("docs/errors.md");
        for code in codes::ALL {
            assert!(
                docs.contains(&format!("`{code}`")),
                "{code} is missing from docs/errors.md"
            );
        }
    }

    #[test]
    fn paths_are_filled_and_encoded() {
        assert_eq!(
            paths::fill(
                paths::DEAD_LETTER,
                &[("message_id", "01ABC"), ("recipient", "000.00.07.G04")]
            ),
            "/api/v1/dead-letters/01ABC/000.00.07.G04"
        );
        assert_eq!(percent_encode("a,b/c Đ"), "a%2Cb%2Fc%20%C4%90");
    }

    #[test]
    fn the_openapi_file_is_json_and_names_every_path() {
        let doc: serde_json::Value = serde_json::from_str(OPENAPI_JSON).expect("OpenAPI is JSON");
        let listed = doc["paths"].as_object().expect("paths");
        for path in [
            paths::HEALTHZ,
            paths::READYZ,
            paths::METRICS,
            paths::OPENAPI,
            paths::STATUS,
            paths::UNITS,
            paths::UNIT,
            paths::UNIT_SUSPEND,
            paths::UNIT_ACTIVATE,
            paths::UNIT_CERTIFICATES,
            paths::QUEUES,
            paths::DEAD_LETTERS,
            paths::DEAD_LETTER,
            paths::DEAD_LETTER_REQUEUE,
            paths::DEAD_LETTER_DROP,
            paths::TRACE,
            paths::OVERDUE,
            paths::STATS,
            paths::AUDIT,
            paths::AUDIT_VERIFY,
            paths::BACKUP,
            paths::LOG_LEVEL,
        ] {
            assert!(
                listed.contains_key(path),
                "{path} is missing from openapi.json"
            );
        }
        assert_eq!(
            listed.len(),
            22,
            "openapi.json lists paths the API does not have"
        );
    }
}
