//! The records the store keeps, independent of the storage engine.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use truc_edxml::{
    BusinessDocType, CalendarDate, DocumentId, OrgCode, PackageKind, Sha256Digest, StatusCode,
};

/// Milliseconds since the Unix epoch.
///
/// The store never reads the clock itself: every operation is given `now`, so retries,
/// leases and retention are deterministic in tests and consistent across relay nodes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The system clock, now.
    pub fn now() -> Self {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        Timestamp(ms)
    }

    /// This time plus `d` (saturating).
    pub fn plus(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_add(d.as_millis() as u64))
    }

    /// This time minus `d` (saturating at the epoch).
    pub fn minus(self, d: Duration) -> Self {
        Timestamp(self.0.saturating_sub(d.as_millis() as u64))
    }

    /// The instant an edXML `Timestamp` (Vietnam's wall clock) stands for; `None` before
    /// the epoch.
    pub fn from_vietnam_time(t: truc_edxml::VietnamTime) -> Option<Self> {
        u64::try_from(t.unix_seconds())
            .ok()
            .map(|s| Timestamp(s.saturating_mul(1000)))
    }

    /// This instant on Vietnam's wall clock, the one edXML stamps are written in.
    pub fn in_vietnam(self) -> truc_edxml::VietnamTime {
        truc_edxml::VietnamTime::from_unix_seconds(i64::try_from(self.0 / 1000).unwrap_or(i64::MAX))
    }

    /// How long after `earlier` this is (zero if before).
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }

    pub(crate) fn be(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // RFC 3339 in UTC, computed without a time zone library.
        let secs = self.0 / 1000;
        let rem = secs % 86_400;
        let date = CalendarDate::from_unix_days((secs / 86_400) as i64);
        write!(
            f,
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            date.year,
            date.month,
            date.day,
            rem / 3600,
            rem % 3600 / 60,
            rem % 60,
            self.0 % 1000
        )
    }
}

/// The relay's own id of a message: a ULID, so ids sort by arrival time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct MessageId(pub ulid::Ulid);

impl MessageId {
    /// A new id for a message received at `at`.
    pub fn new(at: Timestamp) -> Self {
        MessageId(ulid::Ulid::from_parts(at.0, fastrand::u128(..)))
    }

    /// A new id for a message received at `at` that sorts after `previous` when both fall
    /// in the same millisecond, so messages submitted one after another keep their order in
    /// the queues (which sort by time, then id). Random ids alone order a millisecond's
    /// messages at random.
    pub fn after(previous: MessageId, at: Timestamp) -> Self {
        let fresh = Self::new(at);
        if fresh <= previous && previous.0.timestamp_ms() == fresh.0.timestamp_ms() {
            if let Some(next) = previous.0.increment() {
                return MessageId(next);
            }
        }
        fresh
    }

    /// The smallest id of a message received at `at` (ids sort by time): range bounds.
    pub(crate) fn lowest_at(at: Timestamp) -> Self {
        MessageId(ulid::Ulid::from_parts(at.0.min((1 << 48) - 1), 0))
    }

    pub(crate) fn bytes(self) -> [u8; 16] {
        self.0 .0.to_be_bytes()
    }

    pub(crate) fn from_bytes(b: &[u8]) -> Option<Self> {
        let arr: [u8; 16] = b.get(..16)?.try_into().ok()?;
        Some(MessageId(ulid::Ulid(u128::from_be_bytes(arr))))
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for MessageId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        ulid::Ulid::from_string(s)
            .map(MessageId)
            .map_err(|e| format!("{s:?} is not a message id: {e}"))
    }
}

/// Where deliveries wait: a level-2 unit's inbox, or the outbox to the national axis.
///
/// Serialized as `{"kind": "inbox", "unit": CODE}` or `{"kind": "national_axis"}`; in the
/// store's positional encoding, `[kind, unit]` or `[kind]` (read by the hand-written
/// `Deserialize` below: serde's derived one rejects the one-element form).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "unit")]
pub enum Destination {
    /// The inbox of a level-2 unit (its adapter reads it for the unit and its level-3
    /// children).
    Inbox(OrgCode),
    /// The national axis.
    NationalAxis,
}

/// The derived form of [`Destination`], for maps (JSON, and values stored with field
/// names).
#[derive(Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "unit")]
enum TaggedDestination {
    Inbox(OrgCode),
    NationalAxis,
}

impl From<TaggedDestination> for Destination {
    fn from(t: TaggedDestination) -> Self {
        match t {
            TaggedDestination::Inbox(code) => Destination::Inbox(code),
            TaggedDestination::NationalAxis => Destination::NationalAxis,
        }
    }
}

impl<'de> Deserialize<'de> for Destination {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Destination;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a destination: {kind, unit} or [kind, unit]")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Destination, A::Error> {
                TaggedDestination::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(Destination::from)
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Destination, A::Error> {
                use serde::de::Error;
                let kind: String = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(0, &self))?;
                match kind.as_str() {
                    "inbox" => seq
                        .next_element::<OrgCode>()?
                        .map(Destination::Inbox)
                        .ok_or_else(|| A::Error::invalid_length(1, &self)),
                    "national_axis" => {
                        // Tolerates an empty content slot.
                        let _ = seq.next_element::<serde::de::IgnoredAny>()?;
                        Ok(Destination::NationalAxis)
                    }
                    other => Err(A::Error::unknown_variant(
                        other,
                        &["inbox", "national_axis"],
                    )),
                }
            }
        }
        deserializer.deserialize_any(Visit)
    }
}

impl Destination {
    pub(crate) fn key(&self) -> Vec<u8> {
        match self {
            Destination::Inbox(code) => {
                let mut k = b"i:".to_vec();
                k.extend_from_slice(code.as_str().as_bytes());
                k
            }
            Destination::NationalAxis => b"axis".to_vec(),
        }
    }

    pub(crate) fn from_key(k: &[u8]) -> Option<Destination> {
        if k == b"axis" {
            return Some(Destination::NationalAxis);
        }
        let code = std::str::from_utf8(k.strip_prefix(b"i:")?).ok()?;
        OrgCode::parse(code).ok().map(Destination::Inbox)
    }
}

impl fmt::Display for Destination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Destination::Inbox(code) => write!(f, "inbox {code}"),
            Destination::NationalAxis => f.write_str("national axis"),
        }
    }
}

/// Where a message came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Source {
    /// Submitted by the adapter of a level-2 unit.
    Adapter {
        /// The unit the adapter's certificate maps to.
        unit: OrgCode,
        /// SHA-256 fingerprint of the client certificate, hex.
        certificate: Option<String>,
    },
    /// Received from the national axis.
    NationalAxis {
        /// The axis's transport id (`docId`).
        doc_id: String,
    },
    /// Injected by an operator or a tool (demo, tests).
    Operator {
        /// Who.
        actor: String,
    },
}

/// What the relay read from the package and keeps for queries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Subject (trích yếu), documents only.
    #[serde(default)]
    pub subject: String,
    /// Processing deadline, documents only.
    #[serde(default)]
    pub due_date: Option<CalendarDate>,
    /// Priority 0-4, documents only.
    #[serde(default)]
    pub priority: Option<u8>,
    /// The status code, status packages only.
    #[serde(default)]
    pub status_code: Option<StatusCode>,
    /// The document a status answers, or a revocation/update/replacement acts on.
    #[serde(default)]
    pub answers: Option<DocumentId>,
    /// When the reporter says the status happened (its `Timestamp`, when readable), status
    /// packages only: transport may reorder statuses, this does not.
    #[serde(default)]
    pub reported_at: Option<Timestamp>,
}

/// One recipient of a new message and where its delivery waits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The final recipient (a level-3 unit keeps its own code here).
    pub recipient: OrgCode,
    /// The queue that carries it.
    pub destination: Destination,
    /// Held (the unit is registered but pending or suspended): waits without being offered.
    pub held: bool,
}

/// The package bytes of a new message.
#[derive(Debug)]
pub enum PayloadInput {
    /// Bytes in memory (stored inline up to the threshold, else as a blob file).
    Bytes(bytes::Bytes),
    /// A payload already written to disk with [`crate::Store::stage_payload`].
    Staged(crate::blob::StagedPayload),
}

/// A message to store.
#[derive(Debug)]
pub struct NewMessage {
    /// Document or status.
    pub kind: PackageKind,
    /// Sender (`From/OrganId`).
    pub sender: OrgCode,
    /// The package's DocumentId (documents) or the answered one (statuses).
    pub document_id: Option<DocumentId>,
    /// Business type.
    pub business_doc_type: BusinessDocType,
    /// SHA-256 of the package bytes.
    pub sha256: Sha256Digest,
    /// Where it came from.
    pub source: Source,
    /// When the relay received it.
    pub received_at: Timestamp,
    /// One route per recipient.
    pub routes: Vec<Route>,
    /// Fields kept for queries.
    pub summary: Summary,
    /// The client's idempotency key, if it gave one (dedupe per sender).
    pub idempotency_key: Option<String>,
    /// The bytes.
    pub payload: PayloadInput,
}

/// A stored message: the relay's record, not the package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    /// Relay id.
    pub id: MessageId,
    /// Document or status.
    pub kind: PackageKind,
    /// Sender.
    pub sender: OrgCode,
    /// Final recipients, in order.
    pub recipients: Vec<OrgCode>,
    /// DocumentId (documents) or the answered one (statuses).
    pub document_id: Option<DocumentId>,
    /// Business type.
    pub business_doc_type: BusinessDocType,
    /// SHA-256 of the package bytes.
    pub sha256: Sha256Digest,
    /// Package size in bytes.
    pub size: u64,
    /// Receipt time.
    pub received_at: Timestamp,
    /// Origin.
    pub source: Source,
    /// Query fields.
    pub summary: Summary,
    /// Client idempotency key.
    #[serde(default)]
    pub idempotency_key: Option<String>,
    /// When every delivery reached a final state.
    #[serde(default)]
    pub completed_at: Option<Timestamp>,
    /// The payload was removed by retention (metadata and timeline remain).
    #[serde(default)]
    pub payload_purged: bool,
}

/// Identifies one delivery: a message to one recipient.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DeliveryKey {
    /// The message.
    pub message_id: MessageId,
    /// The final recipient.
    pub recipient: OrgCode,
}

impl DeliveryKey {
    pub(crate) fn bytes(&self) -> Vec<u8> {
        let mut k = self.message_id.bytes().to_vec();
        k.extend_from_slice(self.recipient.as_str().as_bytes());
        k
    }

    pub(crate) fn from_bytes(b: &[u8]) -> Option<Self> {
        let message_id = MessageId::from_bytes(b)?;
        let recipient = OrgCode::parse(std::str::from_utf8(b.get(16..)?).ok()?).ok()?;
        Some(DeliveryKey {
            message_id,
            recipient,
        })
    }
}

impl fmt::Display for DeliveryKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.message_id, self.recipient)
    }
}

impl FromStr for DeliveryKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (id, recipient) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not MESSAGE_ID/RECIPIENT"))?;
        Ok(DeliveryKey {
            message_id: id.parse()?,
            recipient: OrgCode::parse(recipient).map_err(|e| format!("{recipient:?}: {e}"))?,
        })
    }
}

/// Where a delivery is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryState {
    /// Waiting to be offered (also: waiting for its retry time).
    Queued,
    /// Waiting for its unit to become active; not offered.
    Held,
    /// Offered to a worker or adapter under a lease.
    Claimed,
    /// Handed to the national axis, which took responsibility for it.
    Delivered,
    /// Acknowledged by the recipient's adapter.
    Acknowledged,
    /// Given up on; waits for an operator (`requeue` or `drop`).
    Dead,
    /// Dropped by an operator.
    Dropped,
}

impl DeliveryState {
    /// Whether nothing more will happen to it without an operator.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            DeliveryState::Delivered
                | DeliveryState::Acknowledged
                | DeliveryState::Dead
                | DeliveryState::Dropped
        )
    }

    /// Snake-case name, for APIs and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Queued => "queued",
            DeliveryState::Held => "held",
            DeliveryState::Claimed => "claimed",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Acknowledged => "acknowledged",
            DeliveryState::Dead => "dead",
            DeliveryState::Dropped => "dropped",
        }
    }
}

/// One delivery and its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Which message to which recipient.
    pub key: DeliveryKey,
    /// The queue carrying it.
    pub destination: Destination,
    /// State.
    pub state: DeliveryState,
    /// How many times it was claimed.
    pub attempts: u32,
    /// When it was (last) queued: the retry age counts from here.
    pub queued_at: Timestamp,
    /// When it may next be offered (queued), or when its lease ends (claimed).
    pub ready_at: Timestamp,
    /// The current lease, when claimed.
    #[serde(default)]
    pub lease: Option<u64>,
    /// When it was last claimed.
    #[serde(default)]
    pub claimed_at: Option<Timestamp>,
    /// The last failure, if any.
    #[serde(default)]
    pub last_error: Option<String>,
    /// When it became delivered or acknowledged.
    #[serde(default)]
    pub completed_at: Option<Timestamp>,
    /// Why it is dead or dropped.
    #[serde(default)]
    pub dead_reason: Option<String>,
    /// The national axis's transport id, once sent there.
    #[serde(default)]
    pub upstream_doc_id: Option<String>,
}

/// Proof of a claim: needed to acknowledge or fail a delivery. A claim that outlived its
/// lease (and was offered again) can no longer be used.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClaimToken {
    /// The delivery.
    pub key: DeliveryKey,
    /// The lease, random per claim.
    pub lease: u64,
}

/// A delivery handed to a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// To acknowledge or fail it.
    pub token: ClaimToken,
    /// The delivery (state `Claimed`).
    pub delivery: Delivery,
    /// Its message.
    pub message: MessageRecord,
}

/// How a claimed delivery ended well.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Completion {
    /// The recipient's adapter acknowledged it.
    Acknowledged,
    /// The national axis accepted it, under this transport id.
    Delivered {
        /// The axis's `DocId`.
        upstream_doc_id: Option<String>,
    },
}

/// What a failed attempt led to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NackOutcome {
    /// Offered again at this time.
    RetryAt(Timestamp),
    /// Too old: dead-lettered, with the reason.
    Dead(String),
}

/// Whether a submission was new.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubmitOutcome {
    /// Stored now, durably.
    Stored(MessageRecord),
    /// Already stored earlier: the original record (deduplicated, nothing written).
    Duplicate(MessageRecord),
}

impl SubmitOutcome {
    /// The record, new or original.
    pub fn record(&self) -> &MessageRecord {
        match self {
            SubmitOutcome::Stored(r) | SubmitOutcome::Duplicate(r) => r,
        }
    }

    /// Whether it was a duplicate.
    pub fn is_duplicate(&self) -> bool {
        matches!(self, SubmitOutcome::Duplicate(_))
    }
}

/// A package's bytes, for delivery.
#[derive(Debug, Clone)]
pub enum Payload {
    /// Small: in memory.
    Inline(bytes::Bytes),
    /// Large: a read-only blob file to stream from.
    File {
        /// Its path.
        path: std::path::PathBuf,
        /// Its size.
        size: u64,
    },
}

impl Payload {
    /// Reads the whole payload (for small packages and tests).
    pub fn read_all(&self) -> std::io::Result<bytes::Bytes> {
        match self {
            Payload::Inline(b) => Ok(b.clone()),
            Payload::File { path, .. } => std::fs::read(path).map(bytes::Bytes::from),
        }
    }
}

/// What happened to a message, as the relay saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When.
    pub at: Timestamp,
    /// Which message.
    pub message_id: MessageId,
    /// Which recipient, for delivery events.
    pub recipient: Option<OrgCode>,
    /// What.
    pub kind: EventKind,
    /// Details (error text, actor, queue).
    pub detail: String,
}

/// Kinds of [`Event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Stored durably.
    Accepted,
    /// Queued for a recipient.
    Routed,
    /// Held for a recipient that is not active.
    Held,
    /// Offered under a lease (derived: the latest claim of each delivery).
    Claimed,
    /// A lease ran out (or the process restarted): offered again.
    LeaseExpired,
    /// Handed to the national axis.
    Delivered,
    /// Acknowledged by the recipient's adapter.
    Acknowledged,
    /// An attempt failed; retried later.
    RetryScheduled,
    /// Given up on.
    DeadLettered,
    /// Queued again by an operator.
    Requeued,
    /// Dropped by an operator.
    Dropped,
    /// A held delivery was released to its queue.
    Released,
    /// The payload was removed by retention.
    PayloadPurged,
    /// The recipient's system took it from the national axis (its transport report).
    AxisReceived,
    /// The recipient's system refused it on the national axis (its transport report): it
    /// will not arrive there.
    AxisRefused,
}

/// A processing status of a document (from a status package, or recorded by the relay).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusEntry {
    /// The document.
    pub document_id: DocumentId,
    /// The status.
    pub code: StatusCode,
    /// Who reported it.
    pub from: OrgCode,
    /// When the relay recorded it.
    pub at: Timestamp,
    /// The status package, when it came as one.
    pub message_id: Option<MessageId>,
    /// Description.
    pub description: String,
    /// When the reporter says it happened (the status package's `Timestamp`), if readable.
    #[serde(default)]
    pub reported_at: Option<Timestamp>,
}

impl StatusEntry {
    /// Status 01 (arrived) of `document_id` from `recipient`: what an acknowledgement of
    /// the document's delivery by the recipient's system at `at` means. Derived from the
    /// delivery's record in a trace, not written (stores written before kept it as an
    /// entry).
    pub fn arrival(document_id: &DocumentId, recipient: &OrgCode, at: Timestamp) -> Self {
        StatusEntry {
            document_id: document_id.clone(),
            code: StatusCode::new("01"),
            from: recipient.clone(),
            at,
            message_id: None,
            description: "recorded by the relay: the recipient's system acknowledged the delivery"
                .into(),
            reported_at: Some(at),
        }
    }

    /// Where the entry belongs in its document's timeline: the second its reporter says it
    /// happened (else when the relay recorded it; never later than that: a reporter's clock
    /// that runs ahead cannot put a status after ones that came after it), then the code's
    /// place in the processing cycle (01 → 06: stamps have whole seconds, and answers come
    /// fast), then arrival. Transport reorders statuses (concurrent sends and fetches,
    /// retries, an axis outage); this order does not depend on it.
    pub fn timeline_order(&self) -> (u64, &str, Timestamp) {
        (
            self.reported_at.map_or(self.at, |r| r.min(self.at)).0 / 1000,
            self.code.as_str(),
            self.at,
        )
    }
}

/// Everything known about a document: its messages, deliveries, events and statuses.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DocumentTrace {
    /// Messages carrying the document (the original, revocations, statuses answering it).
    pub messages: Vec<MessageRecord>,
    /// Their deliveries.
    pub deliveries: Vec<Delivery>,
    /// Their events, by time.
    pub events: Vec<Event>,
    /// Its statuses, in [timeline order](StatusEntry::timeline_order).
    pub statuses: Vec<StatusEntry>,
}

/// An entry of the tamper-evident audit log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the log, from 1.
    pub seq: u64,
    /// When.
    pub at: Timestamp,
    /// Who (operator name, adapter unit, `system`).
    pub actor: String,
    /// What (`requeue`, `drop`, `unit.add`, `permission_denied`...).
    pub action: String,
    /// On what.
    pub target: String,
    /// Details.
    pub detail: String,
    /// Hash of the previous entry (zeros for the first).
    pub prev_hash: Sha256Digest,
    /// Hash of this entry, chaining it to the previous one.
    pub hash: Sha256Digest,
}

/// The result of verifying the audit chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditReport {
    /// Entries checked.
    pub entries: u64,
    /// The first entry whose hash or link does not match, if any.
    pub first_bad: Option<u64>,
}

/// Depth of one queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueDepth {
    /// The queue.
    pub destination: Destination,
    /// Deliveries ready now.
    pub ready: u64,
    /// Deliveries waiting for a retry time.
    pub waiting: u64,
    /// Deliveries under a lease.
    pub claimed: u64,
    /// Queue time of the oldest ready or waiting delivery.
    pub oldest: Option<Timestamp>,
}

/// What a retention pass removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeReport {
    /// Messages whose payload was removed.
    pub messages: u64,
    /// Payload bytes freed (payload segments, blob files, the database).
    pub bytes: u64,
    /// Blob files deleted.
    pub blob_files: u64,
    /// Payload segment files deleted (their payloads all purged, or the few still needed
    /// copied to the current segment).
    #[serde(default)]
    pub segment_files: u64,
}

/// What a backup wrote.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupReport {
    /// The backup directory.
    pub path: std::path::PathBuf,
    /// Records copied.
    pub records: u64,
    /// Blob files copied.
    pub blobs: u64,
    /// Payload segment files copied.
    #[serde(default)]
    pub segments: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// One unit's traffic over a period, for statistics ("936 sent, 2,719 received since 12/3").
/// Counts packages the relay accepted in the period, by their sender and recipients.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitTraffic {
    /// The unit.
    pub unit: OrgCode,
    /// Documents it sent.
    pub documents_sent: u64,
    /// Documents addressed to it.
    pub documents_received: u64,
    /// Status packages it sent.
    pub statuses_sent: u64,
    /// Status packages addressed to it.
    pub statuses_received: u64,
}

impl UnitTraffic {
    /// No traffic yet.
    pub fn new(unit: OrgCode) -> Self {
        UnitTraffic {
            unit,
            documents_sent: 0,
            documents_received: 0,
            statuses_sent: 0,
            statuses_received: 0,
        }
    }
}

/// A document whose due date has passed while some recipient has not reported it
/// completed (status 06): what a ministry's office chases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OverdueDocument {
    /// The document as stored.
    pub message: MessageRecord,
    /// Its due date (DueDate of the header).
    pub due_date: CalendarDate,
    /// Recipients without a "completed" status.
    pub pending: Vec<OrgCode>,
}

/// Figures of a store's health, for metrics and `status`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreStats {
    /// Flushes (fsyncs of the database) since the store was opened.
    pub flushes: u64,
    /// Their total duration, in seconds.
    pub flush_seconds_sum: f64,
    /// Flushes by duration, cumulative: (upper bound in seconds, flushes at most that
    /// long). Slower flushes are the difference from `flushes` (the `+Inf` bucket).
    pub flush_buckets: Vec<(f64, u64)>,
    /// `fdatasync`s of payload segments since the store was opened: each makes a group of
    /// small submissions durable, so submissions per sync tells how well they are grouped.
    pub payload_syncs: u64,
    /// Bytes on disk: database and blob files.
    pub disk_bytes: u64,
    /// Deliveries in the dead-letter list.
    pub dead_letters: u64,
}
