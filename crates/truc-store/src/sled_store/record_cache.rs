//! The records of messages in flight, as this process last wrote them.
//!
//! A package's record is read back three times within milliseconds of its submission: by
//! the claim that hands it to its recipient, by the payload read, and by the
//! acknowledgement. Each read from the database walks the tree and decodes the record;
//! a shared copy kept here costs neither. The cache is written through by the one writer
//! of records, [`super::Txn::apply`], which holds the store's lock: it forgets a message's
//! copy before writing its record and keeps the new one after the write succeeded, so a
//! reader (with or without the lock) sees either a copy of what the database holds or the
//! database itself, never an older record than the database has. Nothing else fills it
//! (a read that missed does not), so no read can put back a copy a write made stale.
//!
//! Messages whose every delivery is final are not kept: nothing reads them soon. The
//! cache holds at most [`RecordCache::CAPACITY`] messages and [`RecordCache::BYTES`] of
//! records (as encoded: a document to every unit of the ministry has a record of tens of
//! kilobytes); past that, the oldest (the lowest ids: ids grow with time) make room, so a
//! backlog for a disconnected unit does not keep the messages flowing now out of it. A reader without the store's lock may still
//! hold a copy fetched just before a write, as it may a record read from the database just
//! before: the lock, not the cache, is what orders a read-modify-write.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::types::MessageId;

use super::StoredMessage;

/// Copies of the records of messages in flight (see the module documentation).
#[derive(Default)]
pub(super) struct RecordCache {
    kept: Mutex<Kept>,
}

/// The copies, each with the size of its record as written, and their total.
#[derive(Default)]
struct Kept {
    records: BTreeMap<MessageId, (Arc<StoredMessage>, usize)>,
    bytes: usize,
}

impl Kept {
    fn remove(&mut self, id: &MessageId) {
        if let Some((_, size)) = self.records.remove(id) {
            self.bytes -= size;
        }
    }
}

impl RecordCache {
    /// How many messages the cache holds at most: seconds of traffic at the relay's rate
    /// (a record of one recipient is a few hundred bytes written, about a kilobyte kept).
    pub(super) const CAPACITY: usize = 8192;

    /// How many bytes of records (as written) the cache holds at most: some 20 MiB kept.
    pub(super) const BYTES: usize = 8 << 20;

    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The record of `id` as last written, if it is kept.
    pub(super) fn get(&self, id: MessageId) -> Option<Arc<StoredMessage>> {
        self.kept().records.get(&id).map(|(m, _)| m.clone())
    }

    /// Drops the copies of `ids`: called before their records are written.
    pub(super) fn forget(&self, ids: &[MessageId]) {
        let mut kept = self.kept();
        for id in ids {
            kept.remove(id);
        }
    }

    /// Keeps `record`, just written (`size` bytes encoded), unless its message is complete.
    pub(super) fn keep(&self, record: Arc<StoredMessage>, size: usize) {
        let id = record.record.id;
        let mut kept = self.kept();
        kept.remove(&id);
        if record.deliveries.iter().all(|d| d.state.is_final()) {
            return;
        }
        kept.records.insert(id, (record, size));
        kept.bytes += size;
        while kept.records.len() > Self::CAPACITY || kept.bytes > Self::BYTES {
            let Some((_, (_, size))) = kept.records.pop_first() else {
                break;
            };
            kept.bytes -= size;
        }
    }

    /// How many messages are kept, and their records' bytes.
    #[cfg(test)]
    pub(super) fn usage(&self) -> (usize, usize) {
        let kept = self.kept();
        (kept.records.len(), kept.bytes)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::crash_prefix::{code, document, inbox};
    use crate::sled_store::{encode, load_stored, SledStore};
    use crate::types::{Destination, Route, Timestamp};
    use crate::{Completion, Store, StoreConfig};

    /// A document to an inbox and to the national axis: two deliveries that end apart.
    fn to_inbox_and_axis() -> crate::NewMessage {
        let mut m = document(1, b"to an inbox and to the axis", None);
        m.routes.push(Route {
            destination: Destination::NationalAxis,
            recipient: code("000.00.00.G01"),
            held: false,
        });
        m
    }

    /// The copy kept of each message, if any, encodes exactly as its record in the database.
    fn assert_copies_agree(store: &SledStore, ids: &[MessageId], step: &str) {
        for id in ids {
            let Some(copy) = store.records.get(*id) else {
                continue;
            };
            let stored = load_stored(&store.db, *id)
                .expect("read")
                .expect("a kept message has a record");
            assert_eq!(
                encode("copy", &*copy).expect("encode"),
                encode("record", &stored).expect("encode"),
                "after {step}: the copy of {id} is not its record"
            );
        }
    }

    /// Through the operations that write records (submission, acknowledgement, refusal,
    /// dead letter, requeue, drop), the copy kept is the record the database holds, a
    /// message in flight is kept, and one whose deliveries are all final is not.
    #[tokio::test]
    async fn the_copies_kept_are_the_records_in_the_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path(), StoreConfig::default()).expect("open");
        let both = store
            .submit(to_inbox_and_axis())
            .await
            .expect("submit")
            .record()
            .id;
        let one = store
            .submit(document(2, b"to an inbox", None))
            .await
            .expect("submit")
            .record()
            .id;
        let ids = [both, one];
        assert!(store.records.get(both).is_some() && store.records.get(one).is_some());
        assert_copies_agree(&store, &ids, "the submissions");

        let now = Timestamp::now();
        let lease = Duration::from_secs(30);
        let inbox = inbox();
        let claims = store.claim(&inbox, 10, lease, now).await.expect("claim");
        assert_eq!(claims.len(), 2);
        let axis = store
            .claim(&Destination::NationalAxis, 10, lease, now)
            .await
            .expect("claim");
        assert_eq!(axis.len(), 1);
        assert_copies_agree(&store, &ids, "the claims");

        for c in &claims {
            store
                .ack(&c.token, Completion::Acknowledged, now)
                .await
                .expect("ack");
        }
        assert!(
            store.records.get(one).is_none(),
            "a complete message is not kept"
        );
        assert!(
            store.records.get(both).is_some(),
            "a message with a delivery in flight is kept"
        );
        assert_copies_agree(&store, &ids, "the acknowledgements");

        store.nack(&axis[0].token, "busy", now).await.expect("nack");
        assert_copies_agree(&store, &ids, "a refusal");
        let later = now.plus(Duration::from_secs(3600));
        let axis = store
            .claim(&Destination::NationalAxis, 10, lease, later)
            .await
            .expect("claim again");
        assert_eq!(axis.len(), 1);
        let dead = store
            .fail(&axis[0].token, "refused", later)
            .await
            .expect("fail");
        assert!(store.records.get(both).is_none(), "complete once dead");
        store
            .requeue(&dead.key, "admin", later)
            .await
            .expect("requeue");
        assert!(
            store.records.get(both).is_some(),
            "live again once requeued"
        );
        assert_copies_agree(&store, &ids, "a requeue");
        store
            .drop_delivery(&dead.key, "admin", "gone", later)
            .await
            .expect("drop");
        assert!(store.records.get(both).is_none(), "complete once dropped");
        assert_eq!(store.records.usage(), (0, 0));
    }

    /// An operation that fails after writing a record leaves no copy older than the
    /// record behind: reads then see what the database holds.
    #[tokio::test]
    async fn a_write_that_fails_after_the_record_leaves_no_older_copy() {
        use crate::sled_store::crash_point;
        use crate::types::DeliveryState;

        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path(), StoreConfig::default()).expect("open");
        let id = store
            .submit(to_inbox_and_axis())
            .await
            .expect("submit")
            .record()
            .id;
        let now = Timestamp::now();
        let inbox = inbox();
        let claims = store
            .claim(&inbox, 10, Duration::from_secs(30), now)
            .await
            .expect("claim");
        assert_eq!(claims.len(), 1);
        // The acknowledgement writes the record, then removes the queue entry: cut there.
        crash_point::arm(Some(1));
        let acked = store
            .ack(&claims[0].token, Completion::Acknowledged, now)
            .await;
        crash_point::arm(None);
        assert!(acked.is_err(), "the cut failed the acknowledgement");
        let stored = load_stored(&store.db, id).expect("read").expect("record");
        assert!(
            stored
                .deliveries
                .iter()
                .any(|d| d.destination == inbox && d.state == DeliveryState::Acknowledged),
            "premise: the record was written before the cut"
        );
        assert_copies_agree(&store, &[id], "a failed acknowledgement");
        let seen = store.deliveries(id).await.expect("deliveries");
        assert!(seen
            .iter()
            .any(|d| d.destination == inbox && d.state == DeliveryState::Acknowledged));
    }

    /// Past its capacity the cache gives up its oldest messages, and keeps the newest.
    #[tokio::test]
    async fn past_its_capacity_the_oldest_messages_make_room() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path(), StoreConfig::default()).expect("open");
        let id = store
            .submit(document(1, b"a template", None))
            .await
            .expect("submit")
            .record()
            .id;
        let template = store.records.get(id).expect("kept");
        let cache = RecordCache::default();
        let mut ids = Vec::new();
        let mut last = id;
        for _ in 0..RecordCache::CAPACITY + 3 {
            last = MessageId::after(last, Timestamp::now());
            let mut m = StoredMessage::clone(&template);
            m.record.id = last;
            cache.keep(Arc::new(m), 300);
            ids.push(last);
        }
        assert_eq!(
            cache.usage(),
            (RecordCache::CAPACITY, RecordCache::CAPACITY * 300)
        );
        assert!(ids[..3].iter().all(|id| cache.get(*id).is_none()));
        assert!(ids[3..].iter().all(|id| cache.get(*id).is_some()));

        // Large records (a document to every unit): the bytes decide.
        let large = RecordCache::BYTES / 100;
        for _ in 0..150 {
            last = MessageId::after(last, Timestamp::now());
            let mut m = StoredMessage::clone(&template);
            m.record.id = last;
            cache.keep(Arc::new(m), large);
            ids.push(last);
        }
        let (count, bytes) = cache.usage();
        assert!(bytes <= RecordCache::BYTES, "{bytes} bytes kept");
        assert!(count < 150, "{count} kept");
        assert!(cache.get(last).is_some(), "the newest is kept");
        // Written again smaller, a message counts its new size only.
        let mut m = StoredMessage::clone(&template);
        m.record.id = last;
        cache.keep(Arc::new(m), 1);
        assert_eq!(cache.usage(), (count, bytes - large + 1));
    }
}
