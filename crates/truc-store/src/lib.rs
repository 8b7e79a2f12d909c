#![forbid(unsafe_code)]
//! Durable store-and-forward for the truc relay.
//!
//! The relay promises that an acknowledged package is delivered or ends, visibly, in the
//! dead-letter list. This crate keeps that promise: the [`Store`] trait is everything the
//! relay needs from storage (messages, payloads, per-destination queues with leased claims,
//! deduplication, timelines, a hash-chained audit log, retention, backup), and [`SledStore`]
//! implements it on the embedded sled database, with payloads beside it: small ones in
//! append-only segment files, large ones as blob files.
//!
//! The trait is written so that a shared SQL database can implement it for several relay
//! nodes: queue operations are claims with leases (no in-process locks leak through), every
//! operation is given the time, and no sled type appears in it.
//!
//! ## Durability
//!
//! Every operation that changes state returns only after the change is on disk — except
//! [`Store::claim`], whose leases are deliberately volatile (all claims are released when a
//! store is opened). See [`SledStore`] for the exact guarantee.

mod backup;
mod batch_queue;
pub use backup::RestoreReport;
mod blob;
mod committer;
#[cfg(test)]
mod crash_prefix;
mod error;
mod log_readahead;
mod payload_log;
mod retry;
mod sled_store;
mod types;

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use truc_edxml::{CalendarDate, DocumentId, OrgCode};

pub use blob::{BlobWriter, StagedPayload};
pub use committer::CommitStats;
pub use error::StoreError;
pub use retry::RetryPolicy;
pub use sled_store::{SledStore, StoreConfig, LOG_SEGMENT_BYTES};
pub use types::{
    AuditEntry, AuditReport, BackupReport, Claim, ClaimToken, Completion, Delivery, DeliveryKey,
    DeliveryState, Destination, DocumentTrace, Event, EventKind, MessageId, MessageRecord,
    NackOutcome, NewMessage, OverdueDocument, Payload, PayloadInput, PurgeReport, QueueDepth,
    Route, Source, StatusEntry, StoreStats, SubmitOutcome, Summary, Timestamp, UnitTraffic,
};

/// Result of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Everything the relay needs from durable storage.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Starts writing a large payload to disk as it arrives (before it is parsed and
    /// routed); submit it with [`PayloadInput::Staged`].
    fn stage_payload(&self) -> Result<BlobWriter>;

    /// Stores a message and queues its deliveries, durably, or returns the original record
    /// if the same package was stored before (same sender, DocumentId, business type and
    /// bytes; same national-axis transport id; or same client idempotency key).
    async fn submit(&self, message: NewMessage) -> Result<SubmitOutcome>;

    /// A message's record.
    async fn message(&self, id: MessageId) -> Result<Option<MessageRecord>>;

    /// The message stored for a national-axis transport id, if any.
    async fn find_by_upstream_id(&self, doc_id: &str) -> Result<Option<MessageId>>;

    /// The messages carrying a DocumentId (the document, its revocations, its statuses).
    async fn find_by_document(&self, document_id: &DocumentId) -> Result<Vec<MessageRecord>>;

    /// A message's package bytes.
    async fn payload(&self, id: MessageId) -> Result<Payload>;

    /// The package bytes of a message whose record the caller holds (from a claim): a
    /// backend may skip reading the record again, which every delivery would otherwise do.
    async fn payload_of(&self, message: &MessageRecord) -> Result<Payload> {
        self.payload(message.id).await
    }

    /// A message's deliveries.
    async fn deliveries(&self, id: MessageId) -> Result<Vec<Delivery>>;

    /// Claims up to `max` deliveries ready at `now` in a queue, each under a lease of
    /// `lease`. Not made durable: claims are released when the store is opened.
    async fn claim(
        &self,
        destination: &Destination,
        max: usize,
        lease: Duration,
        now: Timestamp,
    ) -> Result<Vec<Claim>>;

    /// Ends a claimed delivery well, durably. An adapter's acknowledgement
    /// ([`Completion::Acknowledged`]) may share a flush that starts a moment later (the sled
    /// backend's `ack_flush_delay_ms`); it still returns only once durable.
    async fn ack(
        &self,
        token: &ClaimToken,
        completion: Completion,
        now: Timestamp,
    ) -> Result<Delivery>;

    /// Records a failed attempt, durably: retried later, or dead-lettered when too old.
    /// Like an adapter's acknowledgement, it may share a flush that starts a moment later.
    async fn nack(&self, token: &ClaimToken, error: &str, now: Timestamp) -> Result<NackOutcome>;

    /// Puts a claimed delivery back for another attempt after the retry backoff, like a
    /// refusal, but whatever its age: for a failure that is not the delivery's (the
    /// recipient has it; its acknowledgement could not be recorded), which must not give
    /// it up. Returns when it is offered again.
    async fn retry_later(
        &self,
        token: &ClaimToken,
        reason: &str,
        now: Timestamp,
    ) -> Result<Timestamp>;

    /// Dead-letters a claimed delivery at once: it can never succeed (the receiving side
    /// refused it for good). Durable.
    async fn fail(&self, token: &ClaimToken, reason: &str, now: Timestamp) -> Result<Delivery>;

    /// Gives a claimed delivery back to its queue at once, without counting a failed attempt
    /// (the adapter holding it disconnected, say): `reason` goes in its timeline.
    async fn release(&self, token: &ClaimToken, reason: &str, now: Timestamp) -> Result<()>;

    /// Extends a held claim's lease to `until` (never shortens it), so that a transfer
    /// longer than the lease taken at claim time (a large package on a slow link) keeps its
    /// claim. `LeaseLost` if the claim is no longer held.
    async fn extend_lease(&self, token: &ClaimToken, until: Timestamp) -> Result<()>;

    /// Returns deliveries whose lease ran out to their queue. Returns how many.
    async fn release_expired(&self, now: Timestamp) -> Result<usize>;

    /// Releases deliveries held for a recipient (its unit became active) to their queues.
    async fn release_held(&self, recipient: &OrgCode, now: Timestamp) -> Result<usize>;

    /// Dead-lettered deliveries, oldest message first.
    async fn dead_letters(&self, limit: usize) -> Result<Vec<Delivery>>;

    /// Queues a dead delivery again (an operator action, audited).
    async fn requeue(&self, key: &DeliveryKey, actor: &str, now: Timestamp) -> Result<Delivery>;

    /// Gives up on a delivery for good (an operator action, audited).
    async fn drop_delivery(
        &self,
        key: &DeliveryKey,
        actor: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<Delivery>;

    /// Records a status of a document (such as `01` when a recipient acknowledged it).
    async fn record_status(&self, entry: StatusEntry) -> Result<()>;

    /// Adds an event to a message's timeline (what happened to it outside the relay, such
    /// as the national axis's report of a recipient's system taking or refusing it). Made
    /// durable with the next flush, within the acknowledgement delay.
    async fn record_event(
        &self,
        message_id: MessageId,
        recipient: Option<&OrgCode>,
        kind: EventKind,
        detail: &str,
        now: Timestamp,
    ) -> Result<()>;

    /// Everything known about a document.
    async fn trace(&self, document_id: &DocumentId) -> Result<DocumentTrace>;

    /// A message's events, in order.
    async fn events(&self, id: MessageId) -> Result<Vec<Event>>;

    /// Appends to the audit log, durably.
    async fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        detail: &str,
        now: Timestamp,
    ) -> Result<AuditEntry>;

    /// The audit log, from entry `from` (1-based), at most `limit` entries.
    async fn audit_log(&self, from: u64, limit: usize) -> Result<Vec<AuditEntry>>;

    /// Checks the audit log's hash chain.
    async fn verify_audit(&self) -> Result<AuditReport>;

    /// Depth of a queue.
    async fn queue_depth(&self, destination: &Destination, now: Timestamp) -> Result<QueueDepth>;

    /// Depth of every queue that holds something (queued, waiting or claimed), in one pass:
    /// for metrics and the operators' queue list.
    async fn queue_depths(&self, now: Timestamp) -> Result<Vec<QueueDepth>>;

    /// Packages accepted in `[from, to)`, counted per unit by sender and by recipient.
    async fn traffic(&self, from: Timestamp, to: Timestamp) -> Result<Vec<UnitTraffic>>;

    /// Documents due before `today` that some recipient has not reported completed
    /// (status 06), earliest due first, at most `limit`.
    async fn overdue(&self, today: CalendarDate, limit: usize) -> Result<Vec<OverdueDocument>>;

    /// Health figures: flush latencies, size on disk, dead letters.
    async fn stats(&self) -> Result<StoreStats>;

    /// Removes the payloads of messages completed more than `retention` ago (their records,
    /// timelines and audit entries stay).
    async fn purge(&self, now: Timestamp, retention: Duration) -> Result<PurgeReport>;

    /// Writes a consistent snapshot of the whole store to `dir` while running.
    async fn backup(&self, dir: &Path) -> Result<BackupReport>;

    /// Stores a small named value durably (the unit registry, the national directory, the
    /// relay's own settings), under a namespace.
    async fn put_setting(&self, namespace: &str, key: &str, value: &[u8]) -> Result<()>;

    /// Removes a named value, durably.
    async fn delete_setting(&self, namespace: &str, key: &str) -> Result<()>;

    /// Every value of a namespace, by key.
    async fn settings(&self, namespace: &str) -> Result<Vec<(String, Vec<u8>)>>;
}
