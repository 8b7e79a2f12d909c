//! Submissions: how a new message is stored, deduplicated and acknowledged, and how a
//! restart writes again the submissions whose records the database lost.
//!
//! A payload up to the inline threshold is acknowledged once one `fdatasync` of the payload
//! log has made it durable together with a *submission entry* (the record and routes, in
//! the same write): under the store's lock the submission is checked against the dedupe
//! indexes and the submissions still in flight, and appended; outside it, the payload
//! syncer makes it durable; under the lock again, the records are written to the database
//! (in memory) with the *applied position*: the first submission entry still in flight,
//! which is at or before this one (written by the first submission after each flush, not
//! by every one: a position written earlier is still at or before every entry not applied
//! since). The database reaches the disk by the committer's next
//! flush, asked for within `record_flush_delay_ms` (20 ms by default; at once after 512
//! submissions); until then a crash
//! loses those records, and the next open reads the payload log from the applied position
//! the database kept and writes again every submission it lacks
//! ([`SledStore::replay_submissions`]). So no record ever points at a payload that is not
//! durable (records are written after the sync), and a submission acknowledged is never
//! lost.
//!
//! Dedupe decisions are taken in the order entries are appended (both under the lock), and
//! the replay takes them again in that order, so they come out the same. That needs every
//! entry that was refused (its sync failed, its records could not be written, its caller
//! went away) to be withdrawn before anything sharing its dedupe keys is appended: a
//! withdrawal entry is appended under the lock, and the refused submission stays in flight,
//! holding its keys, until a sync has made the withdrawal durable. A duplicate of a
//! submission in flight waits for its outcome, and is tried again if it was refused.
//!
//! Larger payloads (blob files) keep the earlier path: the blob file is made durable,
//! the records written, and the acknowledgement waits for the committer's flush.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::*;
use crate::blob::StagedPayload;
use crate::payload_log::LogPosition;

/// The payload of a submission, where it goes.
pub(super) enum Body {
    /// Up to the inline threshold: into the payload log.
    Inline(bytes::Bytes),
    /// A blob file of its own, written and synced already.
    Staged(StagedPayload),
}

/// A submission as its payload-log entry holds it (positional MessagePack, like records).
#[derive(Serialize)]
struct LoggedSubmissionRef<'a> {
    record: &'a MessageRecord,
    routes: &'a [Route],
}

#[derive(Deserialize)]
struct LoggedSubmission {
    record: MessageRecord,
    routes: Vec<Route>,
}

/// What a new submission duplicates.
pub(super) enum Original {
    /// A message whose records are written.
    Stored(MessageRecord),
    /// A submission appended to the payload log and not applied yet: the answer waits for
    /// its outcome.
    InFlight(MessageRecord, watch::Receiver<Outcome>),
    /// A refused submission whose withdrawal (here) is not known durable yet: a small
    /// submission sharing its keys waits until it is, so that a restart cannot store the
    /// refused one in its place.
    Withdrawing(SegmentRef),
}

/// How a submission in flight ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    Pending,
    /// Its records are written: it is stored.
    Applied,
    /// It failed, or its writer went away: not stored.
    Refused,
}

/// Where a submission in flight is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    /// Appended; its records are not written yet.
    Pending,
    /// Refused; its withdrawal is appended here, not known durable yet.
    Withdrawing(SegmentRef),
    /// Refused; its withdrawal could not be appended (disk full).
    Unwithdrawn,
}

/// A submission in flight.
struct Entry {
    keys: Vec<Vec<u8>>,
    outcome: watch::Sender<Outcome>,
    stage: Stage,
}

/// A submission in flight: a position at or before its entry (where the log ended when it
/// was reserved: entries are appended outside the store's lock), and its id.
type Slot = (LogPosition, MessageId);

/// Submissions reserved (about to be appended to the payload log, or appended) whose
/// records are not written yet, and refused ones until their withdrawal is durable (held
/// under the store's lock).
#[derive(Default)]
pub(crate) struct InFlight {
    /// By slot: in the order of the log.
    by_slot: BTreeMap<Slot, Entry>,
    /// By dedupe key: the record and its slot.
    by_key: HashMap<Vec<u8>, (Arc<MessageRecord>, Slot)>,
    /// The committer's flush count when the applied position was last written: it is
    /// written once per flush, not with every submission.
    applied_written_at: Option<u64>,
}

impl InFlight {
    fn add(&mut self, slot: Slot, keys: Vec<Vec<u8>>, record: &MessageRecord) {
        let record = Arc::new(record.clone());
        for k in &keys {
            self.by_key.insert(k.clone(), (record.clone(), slot));
        }
        let (outcome, _) = watch::channel(Outcome::Pending);
        self.by_slot.insert(
            slot,
            Entry {
                keys,
                outcome,
                stage: Stage::Pending,
            },
        );
    }

    /// What a submission sharing dedupe key `k` would duplicate or wait for, if something
    /// in flight has that key (a refused one whose withdrawal could not be appended is
    /// nothing to wait for: small submissions are refused until it is, see
    /// [`SledStore::settle_withdrawals`]).
    fn find(&self, k: &[u8]) -> Option<Original> {
        let (record, slot) = self.by_key.get(k)?;
        let entry = self.by_slot.get(slot)?;
        match entry.stage {
            Stage::Pending => Some(Original::InFlight(
                MessageRecord::clone(record),
                entry.outcome.subscribe(),
            )),
            Stage::Withdrawing(w) => Some(Original::Withdrawing(w)),
            Stage::Unwithdrawn => None,
        }
    }

    /// Ends a submission: tells whoever waits on it, and forgets it.
    fn finish(&mut self, slot: Slot, outcome: Outcome) {
        if let Some(entry) = self.by_slot.remove(&slot) {
            for k in &entry.keys {
                self.by_key.remove(k);
            }
            entry.outcome.send_replace(outcome);
        }
    }

    /// A refused submission: its waiters hear it, and it stays (keeping its keys and
    /// holding back the applied position) in `stage` until its withdrawal is durable.
    fn refuse(&mut self, slot: Slot, stage: Stage) {
        if let Some(entry) = self.by_slot.get_mut(&slot) {
            entry.stage = stage;
            entry.outcome.send_replace(Outcome::Refused);
        }
    }

    /// Refused submissions whose withdrawal is not known durable.
    fn refused(&self) -> Vec<(Slot, Stage)> {
        self.by_slot
            .iter()
            .filter(|(_, e)| e.stage != Stage::Pending)
            .map(|(slot, e)| (*slot, e.stage))
            .collect()
    }

    /// The position before which every submission entry has its records written (or is
    /// withdrawn, durably): the first slot in flight, or `end`. Written with the records of
    /// a submission still in flight, it is at or before that submission's own entry: a
    /// crash that keeps it and loses the records still reads that entry again.
    fn applied_through(&self, end: LogPosition) -> LogPosition {
        self.by_slot.keys().next().map_or(end, |(at, _)| *at)
    }
}

/// Refuses a submission in flight if its writer stops waiting (its future dropped) before
/// it ended: it was not acknowledged, so it is withdrawn, and whoever waits on it goes on.
struct InFlightGuard<'a> {
    store: &'a SledStore,
    slot: Option<Slot>,
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            let mut g = self.store.guard();
            // Made durable by the next sync, which comes before any submission appended
            // after it is acknowledged.
            let _ = self.store.refuse_in_flight(&mut g, slot);
        }
    }
}

/// The key holding the position in the payload log before which every submission entry is
/// applied to the database.
fn applied_key() -> Vec<u8> {
    key(keys::SYSTEM, &[b"log_applied"])
}

impl SledStore {
    /// The dedupe keys of a submission: the by-document key, the national axis's docId,
    /// the sender's idempotency key.
    pub(super) fn dedupe_keys(record: &MessageRecord) -> Vec<Vec<u8>> {
        let mut keys = vec![Self::document_key(record)];
        if let Source::NationalAxis { doc_id } = &record.source {
            keys.push(key(keys::UPSTREAM, &[doc_id.as_bytes()]));
        }
        if let Some(k) = &record.idempotency_key {
            keys.push(key(
                keys::IDEMPOTENCY,
                &[record.sender.as_str().as_bytes(), &[0], k.as_bytes()],
            ));
        }
        keys
    }

    /// The message or in-flight submission `record` duplicates, if any.
    pub(super) fn find_duplicate(
        &self,
        leases: &Leases,
        record: &MessageRecord,
    ) -> Result<Option<Original>> {
        for k in Self::dedupe_keys(record) {
            if let Some(original) = leases.in_flight.find(&k) {
                return Ok(Some(original));
            }
            if let Some(id) = self.db.get(&k)? {
                if let Some(id) = MessageId::from_bytes(&id) {
                    // An index entry without its record is from a submission a crash
                    // interrupted before it was acknowledged: not a duplicate.
                    if let Some(original) = self.load(id)? {
                        return Ok(Some(Original::Stored(original.record.clone())));
                    }
                }
            }
        }
        Ok(None)
    }

    /// Answers a duplicate once its original is durable; `None` if the original in flight
    /// was refused (the submission is then tried again).
    async fn duplicate_of(&self, original: Original) -> Result<Option<SubmitOutcome>> {
        match original {
            // The original may have been applied but not yet flushed.
            Original::Stored(record) => {
                self.committer.commit(Vec::new(), None).await?;
                Ok(Some(SubmitOutcome::Duplicate(record)))
            }
            Original::InFlight(record, mut outcome) => {
                let ended = outcome
                    .wait_for(|o| *o != Outcome::Pending)
                    .await
                    .map(|o| *o)
                    .unwrap_or(Outcome::Refused);
                Ok((ended == Outcome::Applied).then_some(SubmitOutcome::Duplicate(record)))
            }
            Original::Withdrawing(withdrawal) => {
                // A sync, then [`Self::settle_withdrawals`] sees it durable (or appends it
                // again if its segment was abandoned).
                let _ = self.payload_syncer.durable(&withdrawal).await;
                Ok(None)
            }
        }
    }

    /// Refuses a submission in flight after its entries were appended: appends its
    /// withdrawal, which keeps it (and its dedupe keys) in flight until a sync makes the
    /// withdrawal durable ([`Self::settle_withdrawals`]). So a later submission of the same
    /// document is appended only once the withdrawal is durable, and a restart never stores
    /// the refused one in its place. If the withdrawal cannot be appended (disk full), small
    /// submissions are refused until it can be. Returns where the withdrawal is.
    fn refuse_in_flight(&self, leases: &mut Leases, slot: Slot) -> Result<SegmentRef> {
        match self.payload_log.append_withdrawal(slot.1) {
            Ok(withdrawal) => {
                leases
                    .in_flight
                    .refuse(slot, Stage::Withdrawing(withdrawal));
                Ok(withdrawal)
            }
            Err(e) => {
                tracing::warn!(message = %slot.1, error = %e, "a refused submission cannot be withdrawn from the payload log yet; small submissions are refused until it can");
                leases.in_flight.refuse(slot, Stage::Unwithdrawn);
                Err(e)
            }
        }
    }

    /// Forgets refused submissions whose withdrawal is durable, appends again those whose
    /// withdrawal was in a segment abandoned after a failed sync, and those whose
    /// withdrawal could not be appended; fails while one still cannot be.
    fn settle_withdrawals(&self, leases: &mut Leases) -> Result<()> {
        for (slot, stage) in leases.in_flight.refused() {
            match stage {
                Stage::Withdrawing(w) if self.payload_log.is_durable(&w) => {
                    leases.in_flight.finish(slot, Outcome::Refused);
                }
                Stage::Withdrawing(w) if !self.payload_log.failed(w.segment) => {}
                _ => {
                    self.refuse_in_flight(leases, slot)?;
                }
            }
        }
        Ok(())
    }

    /// Stores a submission whose payload goes to the payload log (see the module
    /// documentation).
    pub(super) async fn submit_logged(
        &self,
        record: MessageRecord,
        routes: Vec<Route>,
        payload: bytes::Bytes,
    ) -> Result<SubmitOutcome> {
        let entry = encode(
            "submission",
            &LoggedSubmissionRef {
                record: &record,
                routes: &routes,
            },
        )?;
        if self.committer.failing() {
            // The database could not write at its last flush: hear whether it can now
            // before taking anything, so that a full or failing disk refuses submissions
            // instead of leaving them all to the next start.
            self.committer.commit(Vec::new(), None).await?;
        }
        // Announced to the payload syncer: a sync that starts meanwhile waits a moment for
        // it, so that one `fdatasync` serves many submissions under load.
        let mut writing = Some(self.payload_syncer.writing());
        let mut in_flight = InFlightGuard {
            store: self,
            slot: None,
        };
        // Reserved under the lock (dedupe decided, keys held), appended outside it: the
        // store's lock is not held through a write of the payload.
        let slot = loop {
            let reserved = {
                let mut g = self.guard();
                self.settle_withdrawals(&mut g)?;
                match self.find_duplicate(&g, &record)? {
                    Some(original) => Err(original),
                    None => {
                        let slot = (self.payload_log.end(), record.id);
                        g.in_flight.add(slot, Self::dedupe_keys(&record), &record);
                        Ok(slot)
                    }
                }
            };
            match reserved {
                Ok(slot) => break slot,
                Err(original) => {
                    // Not on its way to a sync while it waits for its original.
                    writing.take();
                    if let Some(outcome) = self.duplicate_of(original).await? {
                        return Ok(outcome);
                    }
                }
            }
        };
        let (_, at, _pin) = match self
            .payload_log
            .append_submission(record.id, &entry, &payload)
        {
            Ok(appended) => appended,
            Err(e) => {
                // Nothing was appended: nothing to withdraw.
                self.guard().in_flight.finish(slot, Outcome::Refused);
                return Err(e);
            }
        };
        in_flight.slot = Some(slot);
        let synced = self.payload_syncer.durable_announced(&at, writing).await;
        let (applied, withdrawal) = {
            let mut g = self.guard();
            let applied = synced.and_then(|()| {
                let mut txn = self.txn();
                self.stage_submission(&mut txn, &record, &routes, Some(at))?;
                // Once per flush: a position written earlier is still at or before every
                // entry not applied since, and the replay skips entries whose records it
                // finds, so a later one only saves the next open a little reading (a purge
                // writes its own before giving segments back: `applied_segment`).
                let flushes = self.committer.stats.flushes.load(Ordering::Relaxed);
                let write_applied = g.in_flight.applied_written_at != Some(flushes);
                if write_applied {
                    let through = g.in_flight.applied_through(self.payload_log.end());
                    txn.batch.insert(applied_key(), &through.to_bytes()[..]);
                }
                txn.apply(&mut g)?;
                if write_applied {
                    g.in_flight.applied_written_at = Some(flushes);
                }
                Ok(())
            });
            // Ended here, whatever happens next (a panic before this line withdraws it).
            in_flight.slot = None;
            match applied {
                Ok(()) => {
                    g.in_flight.finish(slot, Outcome::Applied);
                    (Ok(()), None)
                }
                Err(e) => {
                    let withdrawal = self.refuse_in_flight(&mut g, slot).ok();
                    (Err(e), withdrawal)
                }
            }
        };
        if let Err(e) = applied {
            if let Some(w) = withdrawal {
                if let Err(we) = self.payload_syncer.durable(&w).await {
                    tracing::warn!(message = %record.id, error = %we, "the withdrawal of a refused submission is not durable: a restart may store it");
                }
            }
            return Err(e);
        }
        // Durable in the payload log: the database follows within the delay.
        self.committer
            .flush_soon(Duration::from_millis(self.config.record_flush_delay_ms));
        Ok(SubmitOutcome::Stored(record))
    }

    /// Stores a submission whose payload is a blob file: records written, then one flush.
    pub(super) async fn submit_staged(
        &self,
        record: MessageRecord,
        routes: Vec<Route>,
        staged: StagedPayload,
    ) -> Result<SubmitOutcome> {
        let mut staged = Some(staged);
        loop {
            let writing = self.committer.writing();
            let stored = {
                let mut g = self.guard();
                // Only to let refused submissions with durable withdrawals go: a blob's
                // submission is acknowledged after the database's flush, so a restart
                // finds it and never stores an unwithdrawn refused one in its place.
                let _ = self.settle_withdrawals(&mut g);
                match self.find_duplicate(&g, &record)? {
                    Some(original) => Err(original),
                    None => {
                        let staged = staged.take().ok_or_else(|| {
                            StoreError::Io(std::io::Error::other(
                                "the payload was installed already",
                            ))
                        })?;
                        let mut txn = self.txn();
                        let ref_key = key(keys::BLOB_REF, &[&record.sha256.0]);
                        let mut r: BlobRef = self.get("blob ref", &ref_key)?.unwrap_or(BlobRef {
                            refs: 0,
                            size: record.size,
                        });
                        r.refs += 1;
                        self.blobs.install(staged)?;
                        txn.batch.insert(ref_key, encode("blob ref", &r)?);
                        self.stage_submission(&mut txn, &record, &routes, None)?;
                        txn.apply(&mut g)?;
                        Ok(self.blobs.dir_of(&record.sha256))
                    }
                }
            };
            match stored {
                Ok(dir) => {
                    self.committer.commit(vec![dir], Some(writing)).await?;
                    return Ok(SubmitOutcome::Stored(record));
                }
                Err(original) => {
                    drop(writing);
                    if let Some(outcome) = self.duplicate_of(original).await? {
                        return Ok(outcome);
                    }
                    // The original in flight was refused: try again.
                }
            }
        }
    }

    /// Adds a new message's writes to `txn`: its record and deliveries, its indexes, its
    /// place in the timeline if it is a status.
    fn stage_submission(
        &self,
        txn: &mut Txn<'_>,
        record: &MessageRecord,
        routes: &[Route],
        payload_at: Option<SegmentRef>,
    ) -> Result<()> {
        let (id, now) = (record.id, record.received_at);
        let mid = id.bytes();
        txn.batch.insert(Self::document_key(record), &mid[..]);
        if let (PackageKind::Document, Some(due)) = (record.kind, record.summary.due_date) {
            txn.batch.insert(due_key(due, id), &[][..]);
        }
        if let Source::NationalAxis { doc_id } = &record.source {
            txn.batch
                .insert(key(keys::UPSTREAM, &[doc_id.as_bytes()]), &mid[..]);
        }
        if let Some(k) = &record.idempotency_key {
            txn.batch.insert(
                key(
                    keys::IDEMPOTENCY,
                    &[record.sender.as_str().as_bytes(), &[0], k.as_bytes()],
                ),
                &mid[..],
            );
        }
        // Status packages enter the timeline of the document they answer.
        if record.kind == PackageKind::Status {
            if let (Some(doc), Some(code)) = (&record.summary.answers, &record.summary.status_code)
            {
                let entry = StatusEntry {
                    document_id: doc.clone(),
                    code: code.clone(),
                    from: record.sender.clone(),
                    at: now,
                    message_id: Some(id),
                    description: String::new(),
                    reported_at: record.summary.reported_at,
                };
                txn.batch
                    .insert(status_key(&entry), encode("status", &entry)?);
            }
        }
        let mut deliveries = Vec::with_capacity(routes.len());
        for route in routes {
            let d = Delivery {
                key: DeliveryKey {
                    message_id: id,
                    recipient: route.recipient.clone(),
                },
                destination: route.destination.clone(),
                state: if route.held {
                    DeliveryState::Held
                } else {
                    DeliveryState::Queued
                },
                attempts: 0,
                queued_at: now,
                ready_at: now,
                lease: None,
                claimed_at: None,
                last_error: None,
                completed_at: None,
                dead_reason: None,
                upstream_doc_id: None,
            };
            index(&mut txn.batch, &d);
            if route.held {
                txn.event(
                    now,
                    id,
                    Some(&route.recipient),
                    EventKind::Held,
                    format!("held in {} until the unit is active", route.destination),
                )?;
            }
            deliveries.push(d);
        }
        txn.messages.insert(
            id,
            Arc::new(StoredMessage {
                record: record.clone(),
                deliveries,
                payload_at,
            }),
        );
        txn.touch(id);
        Ok(())
    }

    /// The segment before which every submission entry is applied to the database and the
    /// database is on disk: writes the applied position as it is now (submissions write
    /// it only once per flush), and flushes it.
    pub(super) async fn applied_segment(&self) -> Result<u64> {
        let through = {
            let g = self.guard();
            let through = g.in_flight.applied_through(self.payload_log.end());
            self.db.insert(applied_key(), &through.to_bytes()[..])?;
            through
        };
        self.committer.commit(Vec::new(), None).await?;
        Ok(through.segment)
    }

    /// At open: writes again every submission the payload log holds after the applied
    /// position the database kept and the database lacks (its records were not flushed
    /// before a crash). An entry that is not whole, or whose payload is not, was never
    /// durable, so never acknowledged: it is skipped. Returns how many were written.
    pub(super) fn replay_submissions(&self) -> Result<usize> {
        let from = self
            .db
            .get(applied_key())?
            .and_then(|v| LogPosition::from_bytes(&v))
            .unwrap_or(LogPosition {
                segment: 0,
                offset: 0,
            });
        // New segments come after the one the position names, even if that one is not on
        // disk (lost in a power cut before its directory entry was synced): a later replay
        // must never read entries of a reused number from the old position's offset.
        self.payload_log.number_from(from.segment + 1);
        let mut scans = Vec::new();
        let mut withdrawn = std::collections::HashSet::new();
        for segment in self.payload_log.segments()? {
            if segment < from.segment {
                continue;
            }
            let start = if segment == from.segment {
                from.offset
            } else {
                0
            };
            let scan = self.payload_log.entries_from(segment, start)?;
            if !scan.clean {
                tracing::error!(
                    path = %self.payload_log.path_of(segment).display(),
                    "a payload segment is damaged in the middle: the submissions in the damaged stretch cannot be read again"
                );
            }
            withdrawn.extend(scan.withdrawn.iter().copied());
            if !scan.submissions.is_empty() {
                scans.push((segment, scan));
            }
        }
        let mut replayed = 0;
        let mut g = self.guard();
        for (segment, scan) in scans {
            let payloads: HashMap<u64, (SegmentRef, MessageId)> = scan
                .entries
                .iter()
                .map(|(at, id)| (at.offset, (*at, *id)))
                .collect();
            for (entry_at, id) in &scan.submissions {
                if withdrawn.contains(id) || self.load(*id)?.is_some() {
                    continue;
                }
                let Some((payload_at, _)) = payloads
                    .get(&(entry_at.offset + entry_at.entry_bytes()))
                    .filter(|(_, of)| of == id)
                else {
                    continue;
                };
                let whole = self
                    .payload_log
                    .read_submission(entry_at, *id)
                    .and_then(|entry| self.payload_log.read(payload_at, *id).map(|_| entry));
                let entry = match whole {
                    Ok(entry) => entry,
                    // Not a damaged entry: a read that failed. The open fails rather than
                    // move the applied position past what it could not read.
                    Err(e) if !matches!(e, StoreError::Codec { .. }) => return Err(e),
                    Err(e) => {
                        tracing::error!(message = %id, error = %e, "a submission in the payload log is not whole (a write a crash cut short, never acknowledged, or damage): it is not stored");
                        continue;
                    }
                };
                let LoggedSubmission { record, routes } = decode("submission", &entry)?;
                if record.id != *id {
                    return Err(StoreError::Codec {
                        what: "submission",
                        reason: format!(
                            "the entry of {id} in {} holds the record of {}",
                            self.payload_log.path_of(segment).display(),
                            record.id
                        ),
                    });
                }
                if self.find_duplicate(&g, &record)?.is_some() {
                    // Refused when it was made (its sync failed) and sent again since.
                    continue;
                }
                let mut txn = self.txn();
                self.stage_submission(&mut txn, &record, &routes, Some(*payload_at))?;
                txn.apply(&mut g)?;
                replayed += 1;
            }
        }
        // Appends go to a new segment from now on: every entry before it is applied.
        let end = self.payload_log.end();
        self.db.insert(applied_key(), &end.to_bytes()[..])?;
        Ok(replayed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crash_prefix::{document, document_id, records_in_memory};
    use crate::Store;

    /// A failed `fdatasync` of the payload log refuses the submissions it was to make
    /// durable and withdraws them; the same document submitted again is stored under its
    /// new id, and a crash that leaves only the payload log (the records never flushed)
    /// writes again what was acknowledged, never the refused one in its place.
    #[tokio::test]
    async fn a_submission_whose_sync_failed_is_withdrawn_and_never_stored_after_a_crash() {
        let dir = tempfile::tempdir().expect("tempdir");
        let image = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path(), records_in_memory()).expect("open");
        let first = store
            .submit(document(1, b"first", None))
            .await
            .expect("submit 1");
        store.payload_log.fail_next_syncs(1);
        let refused = store.submit(document(2, b"second", None)).await;
        assert!(
            matches!(refused, Err(StoreError::Io(_))),
            "refused when its sync fails: {refused:?}"
        );
        let second = store
            .submit(document(2, b"second", None))
            .await
            .expect("submit 2 again");
        assert!(
            matches!(second, SubmitOutcome::Stored(_)),
            "stored, not a duplicate of the refused one"
        );
        let third = store
            .submit(document(3, b"third", None))
            .await
            .expect("submit 3");
        // What a crash now leaves on disk.
        crash_point::copy_dir(dir.path(), &image.path().join("store")).expect("copy");
        drop(store);
        let store =
            SledStore::open(&image.path().join("store"), records_in_memory()).expect("reopen");
        assert!(
            store.replayed_at_open() > 0,
            "the open wrote submissions again from the payload log"
        );
        for (n, original, bytes) in [
            (1, first.record().id, &b"first"[..]),
            (2, second.record().id, &b"second"[..]),
            (3, third.record().id, &b"third"[..]),
        ] {
            let found = store.find_by_document(&document_id(n)).await.expect("find");
            assert_eq!(found.len(), 1, "document {n} is there once");
            assert_eq!(
                found[0].id, original,
                "document {n} under the id it was given"
            );
            let payload = store
                .payload(original)
                .await
                .expect("payload")
                .read_all()
                .expect("read");
            assert_eq!(&payload[..], bytes);
        }
    }
}
