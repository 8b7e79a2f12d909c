//! The [`Store`] on sled 0.34: records in sled, payloads beside it (small ones in payload
//! segments, large ones as blob files).

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use truc_edxml::{CalendarDate, DocumentId, KnownStatus, OrgCode, PackageKind, Sha256Digest};

use crate::blob::{BlobDir, BlobWriter};
use crate::committer::{CommitStats, Committer, FLUSH_BUCKETS_SECONDS};
use crate::error::StoreError;
use crate::log_readahead::{LogReadahead, READAHEAD_DELAY};
use crate::payload_log::{PayloadLog, PayloadSyncer, SegmentRef};
use crate::retry::RetryPolicy;
use crate::types::*;
use crate::{Result, Store};

mod record_cache;
mod submission;
use record_cache::RecordCache;
use submission::Body;

/// Settings of a [`SledStore`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreConfig {
    /// Payloads up to this size go to the payload segments (`payloads/`); larger ones to
    /// blob files of their own (default 256 KiB).
    pub inline_threshold: usize,
    /// Retry and dead-letter policy.
    pub retry: RetryPolicy,
    /// sled's page cache, in bytes (default 64 MiB).
    pub cache_bytes: u64,
    /// New submissions are refused (`STORE_FULL`) while the store's file system has less
    /// free space than this, in bytes (default 64 MiB): so that sled never fails a write
    /// for lack of space (after one it refuses writes, and some reads, until restarted).
    /// Acknowledgements and other changes go on, so queues still drain.
    #[serde(default = "default_min_free_bytes")]
    pub min_free_bytes: u64,
    /// How long an adapter's acknowledgement or refusal of a delivery may wait for a flush
    /// that something else asks for, before it gets one of its own, in milliseconds
    /// (default 5). It still returns only once it is on disk; nobody waits for that, so
    /// sharing the flush costs nothing and saves one per delivered package at moderate
    /// rates. 0 flushes at once.
    #[serde(default = "default_ack_flush_delay_ms")]
    pub ack_flush_delay_ms: u64,
    /// The size at which a payload segment file is sealed and a new one started, in bytes
    /// (default 64 MiB): the unit in which retention gives space back.
    #[serde(default = "default_payload_segment_bytes")]
    pub payload_segment_bytes: u64,
    /// How long the records of a submission acknowledged on its payload-log entry may wait
    /// for the database's next flush, in milliseconds (default 20; sooner after 512
    /// submissions). Until then a crash loses them and the next open writes them again from
    /// the payload log. A longer delay means fewer flushes, more to read again after a
    /// crash, and more memory: sled holds what it has not flushed (measured at 19,000
    /// submissions/s: 100 ms cost 350 MiB more than 20 ms, docs/benchmarks.md).
    #[serde(default = "default_record_flush_delay_ms")]
    pub record_flush_delay_ms: u64,
    /// Whether the next payload segment is made ahead of time, written with zeros at its
    /// full size (default true): an `fdatasync` over written blocks need not commit a new
    /// file size, so submissions are acknowledged sooner (docs/store.md). Turn it off on
    /// copy-on-write file systems (ZFS, btrfs), where it only doubles the bytes written.
    #[serde(default = "default_prepare_payload_segments")]
    pub prepare_payload_segments: bool,
}

fn default_prepare_payload_segments() -> bool {
    true
}

fn default_record_flush_delay_ms() -> u64 {
    20
}

fn default_payload_segment_bytes() -> u64 {
    crate::payload_log::SEGMENT_BYTES
}

fn default_min_free_bytes() -> u64 {
    64 * 1024 * 1024
}

fn default_ack_flush_delay_ms() -> u64 {
    5
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            inline_threshold: 256 * 1024,
            retry: RetryPolicy::default(),
            cache_bytes: 64 * 1024 * 1024,
            min_free_bytes: default_min_free_bytes(),
            ack_flush_delay_ms: default_ack_flush_delay_ms(),
            payload_segment_bytes: default_payload_segment_bytes(),
            record_flush_delay_ms: default_record_flush_delay_ms(),
            prepare_payload_segments: default_prepare_payload_segments(),
        }
    }
}

/// The store's own metadata, in `truc-store.json` beside the database: it survives damage
/// to the database and tells the operator where the last good backup is.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoreMeta {
    format: u32,
    created_at: Timestamp,
    #[serde(default)]
    last_backup: Option<LastBackup>,
    /// The size of sled's log segments this store was created with: sled refuses to open
    /// a database with any other. Stores created before it was recorded use sled's default.
    #[serde(default = "legacy_log_segment_bytes")]
    log_segment_bytes: usize,
}

fn legacy_log_segment_bytes() -> usize {
    LEGACY_LOG_SEGMENT_BYTES
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LastBackup {
    path: PathBuf,
    at: Timestamp,
}

const FORMAT: u32 = 1;

/// The size of sled's log segments in new stores (8 MiB; sled's default is 512 KiB).
///
/// sled writes an item over a quarter of a segment (a large value, or a leaf holding a
/// dozen 8 KiB records) as a file of its own, which then has to be fsynced separately;
/// with larger segments those stay in the log. Measured (docs/benchmarks.md, session 8):
/// ~20 % fewer bytes written per package, ~10 % more store cycles per second at 8 KiB,
/// and up to 65 % more durable 64 KiB submissions per second with one submitter.
/// sled keeps the setter out of its documentation ("testing-only"), but it is an ordinary
/// field of its persisted configuration, checked on every open.
pub const LOG_SEGMENT_BYTES: usize = 8 << 20;

/// sled's default segment size, used by stores created before the size was recorded.
const LEGACY_LOG_SEGMENT_BYTES: usize = 512 << 10;

/// sled's configuration for the database at `db_path` with the given log segment size.
pub(crate) fn sled_config(
    db_path: &Path,
    log_segment_bytes: usize,
    cache_bytes: u64,
) -> sled::Config {
    sled::Config::new()
        .path(db_path)
        .cache_capacity(cache_bytes)
        .mode(sled::Mode::HighThroughput)
        .segment_size(log_segment_bytes)
        // Only the committer flushes: one flushing thread, never concurrent flushes
        // (concurrent `flush_async` deadlocks in sled 0.34, sled issue #1308).
        .flush_every_ms(None)
}

/// Name of the sled tree holding inline payloads.
pub(crate) const PAYLOAD_TREE: &[u8] = b"payloads";
const META_FILE: &str = "truc-store.json";

/// Key prefixes of the one sled tree. Every index is a key with an empty value; how a
/// change of several keys stays consistent across a crash is explained at [`Writes`].
mod keys {
    /// A message and its deliveries.
    pub const MESSAGE: u8 = b'M';
    /// Ready index: destination, ready time, delivery.
    pub const QUEUE: u8 = b'Q';
    /// Lease index: lease end, delivery → destination.
    pub const LEASE: u8 = b'L';
    /// Held deliveries by recipient.
    pub const HELD: u8 = b'H';
    /// Dead letters.
    pub const DEAD: u8 = b'X';
    /// Dedupe and by-document index: DocumentId, digest of sender/type/content → message.
    pub const DOCUMENT: u8 = b'K';
    /// National-axis transport id → message.
    pub const UPSTREAM: u8 = b'U';
    /// Sender and client idempotency key → message.
    pub const IDEMPOTENCY: u8 = b'I';
    /// Reference count of a blob file, by SHA-256.
    pub const BLOB_REF: u8 = b'R';
    /// Events that are not derivable from the records.
    pub const EVENT: u8 = b'E';
    /// Status timeline of a document.
    pub const STATUS: u8 = b'T';
    /// Completed messages by completion time (retention).
    pub const COMPLETED: u8 = b'C';
    /// The audit log.
    pub const AUDIT: u8 = b'A';
    /// Store metadata (format, audit head).
    pub const SYSTEM: u8 = b'S';
    /// Named settings of the relay: namespace, key → value.
    pub const SETTING: u8 = b'G';
    /// Documents by due date (overdue report): due day, message.
    pub const DUE: u8 = b'D';

    pub fn key(prefix: u8, parts: &[&[u8]]) -> Vec<u8> {
        let mut k = Vec::with_capacity(1 + parts.iter().map(|p| p.len()).sum::<usize>());
        k.push(prefix);
        for p in parts {
            k.extend_from_slice(p);
        }
        k
    }
}

use keys::key;

/// How long a blob file no message uses stays in `blobs/unused/` before it is deleted.
const UNUSED_BLOBS_KEPT: Duration = Duration::from_secs(7 * 86_400);

/// Reference count of a blob file: identical large packages share one file.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct BlobRef {
    refs: u32,
    size: u64,
}

/// The head of the audit chain.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
struct AuditHead {
    seq: u64,
    hash: Sha256Digest,
}

/// The [`Store`] on sled.
///
/// Layout of a store directory: `truc-store.json` (format, last backup), `db/` (sled),
/// `blobs/` (payloads over the inline threshold, by SHA-256).
///
/// Guarantee: when [`submit`](Store::submit), [`ack`](Store::ack), [`nack`](Store::nack),
/// [`requeue`](Store::requeue), [`drop_delivery`](Store::drop_delivery),
/// [`record_status`](Store::record_status), [`audit`](Store::audit) or
/// [`release_held`](Store::release_held) return `Ok`, the change is on disk: blob file data
/// was fsynced by its writer, a payload in a segment by the payload syncer before its
/// record was written, blob directory entries and the database log were fsynced by a
/// group commit that started after the change was applied. A crash (even SIGKILL or power
/// loss, given a disk that honours fsync) afterwards cannot lose it. Claims are not made
/// durable; on open, every claim left by a previous process is released.
pub struct SledStore {
    dir: PathBuf,
    db: sled::Db,
    /// Payloads held in the database by stores written before the payload segments, by
    /// message id; read and purged, no longer written.
    payloads: sled::Tree,
    /// Payloads up to the inline threshold: append-only segment files.
    payload_log: Arc<PayloadLog>,
    /// Makes appended payloads durable before their records are written.
    payload_syncer: PayloadSyncer,
    /// Segments waiting for a reclaim to look at them; each purge takes a few.
    reclaim_queue: Mutex<ReclaimQueue>,
    blobs: BlobDir,
    config: StoreConfig,
    /// The size of sled's log segments in this store's database (it keeps the one it was
    /// created with).
    log_segment_bytes: usize,
    /// Serialises read-modify-write sections (in memory, microseconds), and holds this
    /// process's claims; fsyncs happen outside it, in the committer.
    lock: Mutex<Leases>,
    /// Copies of the records of messages in flight, written through by [`Txn::apply`].
    records: RecordCache,
    committer: Committer,
    event_seq: AtomicU64,
    /// The last message id given out: the next one in the same millisecond sorts after it.
    last_id: Mutex<MessageId>,
    /// When free space was last found sufficient (ms since the store opened, +1; 0:
    /// never): checked at most every [`SPACE_CHECK_MS`] under load.
    space_ok_at: AtomicU64,
    opened_at: std::time::Instant,
    /// Submissions the open wrote again from the payload log.
    replayed_at_open: usize,
}

/// Payload segments waiting for a reclaim to look at them.
#[derive(Default)]
struct ReclaimQueue {
    /// Every segment was queued once since the store opened (for the space of submissions
    /// a crash or a duplicate left without a record).
    swept: bool,
    segments: BTreeSet<u64>,
}

/// The claims of this process, in memory. A store directory serves one relay process, so
/// a lease needs no write: a crash or a restart forgets them all, which releases them —
/// what opening a store did anyway. A claimed delivery stays `queued` in its record and in
/// its queue index until it is acknowledged, refused or retried (which write the record
/// once, with the attempt count and claim time the lease kept). Guarded by the store's
/// lock.
#[derive(Default)]
pub(crate) struct Leases {
    held: HashMap<DeliveryKey, Held>,
    /// Per destination (its key), the last queue key a claim scan went past: every entry
    /// up to it is held by a lease (or was removed), so the next scan starts after it.
    /// Dropped whenever an entry may appear at or before it.
    cursors: HashMap<Vec<u8>, Vec<u8>>,
    /// Attempts of deliveries whose lease ran out or was released (nothing was written):
    /// the next claim counts on from there.
    attempts: HashMap<DeliveryKey, u32>,
    /// Submissions appended to the payload log whose records are not written yet.
    in_flight: submission::InFlight,
}

/// One lease.
struct Held {
    lease: u64,
    until: Timestamp,
    claimed_at: Timestamp,
    attempts: u32,
    destination: Destination,
}

impl Held {
    /// Makes `d` say what this lease says.
    fn show_on(&self, d: &mut Delivery) {
        d.state = DeliveryState::Claimed;
        d.lease = Some(self.lease);
        d.attempts = self.attempts;
        d.claimed_at = Some(self.claimed_at);
        d.ready_at = self.until;
    }
}

impl Leases {
    /// `d` (as its record has it) as claimed under `h`.
    fn claimed(mut d: Delivery, h: &Held) -> Delivery {
        h.show_on(&mut d);
        d
    }

    /// The claims of `d`'s message show in what readers see.
    fn overlay(&self, d: &mut Delivery) {
        if d.state == DeliveryState::Queued {
            if let Some(h) = self.held.get(&d.key) {
                h.show_on(d);
            }
        }
    }

    /// A queue entry was (re)inserted: if it sits at or before its queue's scan cursor,
    /// the next scan starts over.
    fn queued(&mut self, queue_key: &[u8]) {
        // `Q`, the destination's key (no zero byte), 0, ready time, delivery.
        let Some(end) = queue_key.iter().skip(1).position(|&b| b == 0) else {
            return;
        };
        let dest = &queue_key[1..end + 1];
        if self
            .cursors
            .get(dest)
            .is_some_and(|c| queue_key <= c.as_slice())
        {
            self.cursors.remove(dest);
        }
    }

    /// Ends the lease on `key` without an answer (its queue entry becomes claimable
    /// again, and its attempt is remembered).
    fn drop_lease(&mut self, key: &DeliveryKey) -> Option<Held> {
        let h = self.held.remove(key)?;
        self.cursors.remove(&h.destination.key());
        self.attempts.insert(key.clone(), h.attempts);
        Some(h)
    }

    /// The lease on `key` ended with an answer written to its record.
    fn settle(&mut self, key: &DeliveryKey) {
        self.held.remove(key);
        self.attempts.remove(key);
    }

    /// Removes the leases ended at `now`; returns their keys.
    fn expire(&mut self, now: Timestamp) -> Vec<DeliveryKey> {
        let expired: Vec<DeliveryKey> = self
            .held
            .iter()
            .filter(|(_, h)| h.until <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &expired {
            self.drop_lease(k);
        }
        expired
    }
}

/// How long a free-space check stays valid, in milliseconds. At 100 MB/s of writes this is
/// 10 MB, well inside the reserve.
const SPACE_CHECK_MS: u64 = 100;

/// Completed messages a purge handles per hold of the store's lock.
const PURGE_CHUNK: usize = 1000;

/// Payload segments one purge looks at for reclaiming (64 MiB each by default).
const RECLAIM_PER_PASS: usize = 16;

impl std::fmt::Debug for SledStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SledStore").field("dir", &self.dir).finish()
    }
}

/// Values are MessagePack with structs as arrays (positional): a record is about half the
/// size it is with field names, and records are written twice per package. serde
/// reads a struct from an array or a map, so values written with names by earlier versions
/// still decode. The rule that keeps positions meaningful: a field is only ever appended to
/// a stored struct, with `#[serde(default)]`, and never removed or reordered.
fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>> {
    rmp_serde::to_vec(value).map_err(|e| StoreError::Codec {
        what,
        reason: e.to_string(),
    })
}

fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T> {
    rmp_serde::from_slice(bytes).map_err(|e| StoreError::Codec {
        what,
        reason: e.to_string(),
    })
}

fn write_meta(dir: &Path, meta: &StoreMeta) -> Result<()> {
    let tmp = dir.join(format!("{META_FILE}.tmp"));
    let bytes = serde_json::to_vec_pretty(meta).map_err(|e| StoreError::Codec {
        what: "store metadata",
        reason: e.to_string(),
    })?;
    {
        let mut f = fs::File::create(&tmp).map_err(StoreError::from_io)?;
        std::io::Write::write_all(&mut f, &bytes).map_err(StoreError::from_io)?;
        f.sync_all().map_err(StoreError::from_io)?;
    }
    fs::rename(&tmp, dir.join(META_FILE)).map_err(StoreError::from_io)?;
    crate::blob::sync_dir(dir)
}

/// Makes sled's record of its configuration (`db/conf`, which sled writes without an
/// fsync) durable, with the directory entry, before the store's metadata says the store
/// exists.
fn sync_sled_conf(db_path: &Path) -> Result<()> {
    fs::File::open(db_path.join("conf"))
        .and_then(|f| f.sync_all())
        .map_err(StoreError::from_io)?;
    crate::blob::sync_dir(db_path)
}

fn read_meta(dir: &Path) -> Result<Option<StoreMeta>> {
    match fs::read(dir.join(META_FILE)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                path: dir.to_owned(),
                reason: format!("{META_FILE} is unreadable: {e}"),
                hint: "restore the store from a backup".into(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::from_io(e)),
    }
}

fn restore_hint(meta: Option<&StoreMeta>) -> String {
    match meta.and_then(|m| m.last_backup.as_ref()) {
        Some(b) => format!(
            "restore the last good backup, {} (taken {}), with `trucctl store restore {} <new store dir>`, then point the relay at the new directory",
            b.path.display(),
            b.at,
            b.path.display()
        ),
        None => "no backup of this store is recorded: restore from your own copy of the store directory, or keep this directory for investigation and start a new store elsewhere".into(),
    }
}

impl SledStore {
    /// Opens the store in `dir`, creating it if the directory is empty or absent.
    ///
    /// Refuses a directory that holds something else, and refuses to start empty when the
    /// store's database is damaged or missing: the error says how to restore.
    pub fn open(dir: &Path, config: StoreConfig) -> Result<Self> {
        fs::create_dir_all(dir).map_err(StoreError::from_io)?;
        let meta = read_meta(dir)?;
        let db_path = dir.join("db");
        let is_new = match &meta {
            Some(_) => false,
            None => {
                let non_empty = fs::read_dir(dir)
                    .map_err(StoreError::from_io)?
                    .next()
                    .is_some();
                if non_empty {
                    return Err(StoreError::NotAStore {
                        path: dir.to_owned(),
                    });
                }
                true
            }
        };
        if !is_new {
            require_db_dir(dir, &db_path, meta.as_ref())?;
        }
        let log_segment_bytes = meta
            .as_ref()
            .map_or(LOG_SEGMENT_BYTES, |m| m.log_segment_bytes);
        let sled_config = sled_config(&db_path, log_segment_bytes, config.cache_bytes);
        let opened = open_sled(dir, &db_path, &sled_config);
        let db = opened.map_err(|e| open_error(e, dir, meta.as_ref()))?;
        let format_key = key(keys::SYSTEM, &[b"format"]);
        if is_new {
            db.insert(&format_key, &FORMAT.to_be_bytes()[..])?;
            db.flush()?;
            sync_sled_conf(&db_path)?;
            write_meta(
                dir,
                &StoreMeta {
                    format: FORMAT,
                    created_at: Timestamp::now(),
                    last_backup: None,
                    log_segment_bytes,
                },
            )?;
        } else {
            match db.get(&format_key)? {
                Some(v) if v.as_ref() == FORMAT.to_be_bytes() => {}
                Some(v) => {
                    return Err(StoreError::Corrupt {
                        path: dir.to_owned(),
                        reason: format!("unknown store format {:?}", v.as_ref()),
                        hint: "use the truc version that wrote this store".into(),
                    })
                }
                None => {
                    return Err(StoreError::Corrupt {
                        path: dir.to_owned(),
                        reason: "the database is empty although the store was initialised (lost or replaced files?)".into(),
                        hint: restore_hint(meta.as_ref()),
                    })
                }
            }
        }
        let blobs = BlobDir::open(dir.join("blobs"))?;
        let payloads = db.open_tree(PAYLOAD_TREE)?;
        let payload_log = Arc::new(if config.prepare_payload_segments {
            PayloadLog::open_preparing_segments(
                dir.join("payloads"),
                config.payload_segment_bytes,
                config.min_free_bytes,
            )?
        } else {
            PayloadLog::open(dir.join("payloads"), config.payload_segment_bytes)?
        });
        let committer = Committer::start(db.clone(), &db_path)?;
        let payload_syncer = PayloadSyncer::start(payload_log.clone(), committer.stats.clone())?;
        let store = SledStore {
            dir: dir.to_owned(),
            db,
            payloads,
            payload_log,
            payload_syncer,
            reclaim_queue: Mutex::new(ReclaimQueue::default()),
            blobs,
            config,
            log_segment_bytes,
            lock: Mutex::new(Leases::default()),
            records: RecordCache::default(),
            committer,
            event_seq: AtomicU64::new(0),
            last_id: Mutex::new(MessageId::lowest_at(Timestamp(0))),
            space_ok_at: AtomicU64::new(0),
            opened_at: std::time::Instant::now(),
            replayed_at_open: 0,
        };
        let mut store = store;
        let replayed = store.replay_submissions()?;
        store.replayed_at_open = replayed;
        if replayed > 0 {
            tracing::info!(
                replayed,
                "wrote again the acknowledged submissions whose records the database lost in a crash"
            );
        }
        let released = store.release_leases(u64::MAX, Timestamp::now())?;
        store.drop_stale_dead_letters()?;
        store.set_aside_unused_blobs();
        if released > 0 {
            tracing::info!(released, "released the claims of the previous process");
        }
        Ok(store)
    }

    /// Refuses a new submission while free space is below the reserve (see
    /// [`StoreConfig::min_free_bytes`]).
    fn check_space(&self) -> Result<()> {
        let now = self.opened_at.elapsed().as_millis() as u64 + 1;
        let last = self.space_ok_at.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < SPACE_CHECK_MS {
            return Ok(());
        }
        let free = fs2::available_space(&self.dir).map_err(StoreError::from_io)?;
        if free < self.config.min_free_bytes {
            self.space_ok_at.store(0, Ordering::Relaxed);
            // The next payload segment can grow as it is written instead.
            self.payload_log.release_spare();
            return Err(StoreError::Full(std::io::Error::new(
                std::io::ErrorKind::StorageFull,
                format!(
                    "{} free under {}, below the reserve of {} kept so the database never runs out",
                    human_bytes(free),
                    self.dir.display(),
                    human_bytes(self.config.min_free_bytes)
                ),
            )));
        }
        self.space_ok_at.store(now, Ordering::Relaxed);
        Ok(())
    }

    /// Closes the store and waits (up to 15 s) until its database lock is released, so that
    /// another process can open it at once. Dropping a store releases the lock too, but
    /// only when sled's deferred drops next run.
    pub fn close(self) -> Result<()> {
        let db_path = self.dir.join("db");
        drop(self);
        wait_released(&db_path)
    }

    /// Makes the next open of the closed store in `dir` fast, and returns how long it took.
    ///
    /// sled 0.34 writes the snapshot of its page table only when it opens a database, so an
    /// open reads all the log written since the previous one: seconds per gigabyte, from
    /// the disk itself after a reboot. This opens the database once more (sled reads the log
    /// and writes a new snapshot) and closes it. Run at a clean stop, the log is read while
    /// it is still in memory, and the next start, even after a reboot, reads the snapshot
    /// and little else. Interrupting it (even with SIGKILL) is harmless: the next open
    /// removes the unfinished snapshot and does the same work. Waits up to 15 s for this
    /// process to release the store, and up to 15 s more for sled to let go of it after;
    /// fails at once if another process has it open.
    pub fn checkpoint(dir: &Path) -> Result<Duration> {
        let started = std::time::Instant::now();
        let meta = read_meta(dir)?.ok_or_else(|| StoreError::NotAStore {
            path: dir.to_owned(),
        })?;
        let db_path = dir.join("db");
        require_db_dir(dir, &db_path, Some(&meta))?;
        let config = sled_config(
            &db_path,
            meta.log_segment_bytes,
            StoreConfig::default().cache_bytes,
        );
        let db = open_sled(dir, &db_path, &config).map_err(|e| open_error(e, dir, Some(&meta)))?;
        db.flush()?;
        drop(db);
        wait_released(&db_path)?;
        Ok(started.elapsed())
    }

    /// How many acknowledged submissions the open wrote again from the payload log because
    /// the database had lost their records (a crash before its flush).
    pub fn replayed_at_open(&self) -> usize {
        self.replayed_at_open
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Group-commit counters (flushes, requests, time).
    pub fn commit_stats(&self) -> &CommitStats {
        &self.committer.stats
    }

    /// Bytes used on disk by the database, the payload segments and blob files.
    pub fn size_on_disk(&self) -> Result<u64> {
        let mut total = self.db.size_on_disk()?;
        total += dir_size(self.blobs.root())?;
        total += dir_size(self.payload_log.dir())?;
        Ok(total)
    }

    /// The retry policy in force.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.config.retry
    }

    fn ack_flush_delay(&self) -> Duration {
        Duration::from_millis(self.config.ack_flush_delay_ms)
    }

    fn guard(&self) -> MutexGuard<'_, Leases> {
        // A panic while holding the lock can leave an operation's first writes only: a state
        // the store handles like one a crash leaves (see `Writes`), so the lock stays usable.
        self.lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn get<T: DeserializeOwned>(&self, what: &'static str, k: &[u8]) -> Result<Option<T>> {
        match self.db.get(k)? {
            Some(v) => decode(what, &v).map(Some),
            None => Ok(None),
        }
    }

    /// The stored message `id`: the copy of a message in flight, or else from the database.
    fn load(&self, id: MessageId) -> Result<Option<Arc<StoredMessage>>> {
        match self.records.get(id) {
            Some(m) => Ok(Some(m)),
            None => Ok(load_stored(&self.db, id)?.map(Arc::new)),
        }
    }

    fn load_required(&self, id: MessageId) -> Result<Arc<StoredMessage>> {
        self.load(id)?
            .ok_or_else(|| StoreError::NotFound(format!("message {id}")))
    }

    /// Gives back the space of payload segments. `candidates` join a queue (with, at the
    /// first call after opening, every segment, for what a crash or a duplicate left
    /// without a record), which is gone through [`RECLAIM_PER_PASS`] segments at a time
    /// (each pass is short, and the store's lock is free between them): a sealed segment
    /// no record points into is deleted, and one less than half used has its live payloads
    /// copied to the current segment and the records moved to the copies first. Files are
    /// deleted only once the records no longer pointing at them are durable. A segment
    /// that cannot be read, or whose copies would eat into the free-space reserve, is kept
    /// and the others go on. Returns the segment files deleted.
    async fn reclaim_segments(&self, candidates: BTreeSet<u64>) -> Result<u64> {
        {
            let mut queue = self.reclaim_queue.lock().unwrap_or_else(|p| p.into_inner());
            if !queue.swept {
                queue.segments.extend(self.payload_log.segments()?);
                queue.swept = true;
            }
            queue.segments.extend(candidates);
            if queue.segments.is_empty() {
                return Ok(0);
            }
        }
        // A segment holding submission entries a restart may still have to read is kept:
        // only those before the applied position, once it is on disk, may go (the others
        // stay queued for a later purge).
        let below = self.applied_segment().await?;
        let mut deleted = 0;
        loop {
            let batch: BTreeSet<u64> = {
                let mut queue = self.reclaim_queue.lock().unwrap_or_else(|p| p.into_inner());
                std::iter::from_fn(|| {
                    let first = *queue.segments.first()?;
                    (first < below)
                        .then(|| queue.segments.pop_first())
                        .flatten()
                })
                .take(RECLAIM_PER_PASS)
                .collect()
            };
            if batch.is_empty() {
                return Ok(deleted);
            }
            deleted += self.reclaim_pass(batch).await?;
        }
    }

    /// One pass of [`Self::reclaim_segments`] over `batch`, segments before the applied
    /// position. Returns the segment files deleted.
    async fn reclaim_pass(&self, batch: BTreeSet<u64>) -> Result<u64> {
        let (log, db) = (self.payload_log.clone(), self.db.clone());
        let (dir, reserve) = (self.dir.clone(), self.config.min_free_bytes);
        let retry = batch.clone();
        // Plan, read and copy off the async threads: each segment is read.
        let planned = tokio::task::spawn_blocking(move || -> Result<_> {
            let mut delete = Vec::new();
            let mut moved = Vec::new();
            let mut pins = Vec::new();
            let mut copying = true;
            'segments: for (segment, live) in plan_reclaim(&log, &db, batch) {
                if !live.is_empty() {
                    if !copying {
                        continue;
                    }
                    // Copies must leave the reserve kept for the database alone.
                    let wanted: u64 = live.iter().map(|(at, _)| at.entry_bytes()).sum();
                    let free = fs2::available_space(&dir).map_err(StoreError::from_io)?;
                    if free < reserve.saturating_add(wanted) {
                        tracing::warn!(free, reserve, wanted, "too little free space to compact payload segments; only the unused ones are deleted");
                        copying = false;
                        continue;
                    }
                }
                let mut copies = Vec::with_capacity(live.len());
                for (at, id) in live {
                    let bytes = match log.read(&at, id) {
                        Ok(bytes) => bytes,
                        // Gone meanwhile (another purge), or damaged: keep this segment.
                        Err(e) => {
                            if !matches!(e, StoreError::NotFound(_)) {
                                tracing::warn!(error = %e, "a live payload cannot be read; its segment is kept");
                            }
                            continue 'segments;
                        }
                    };
                    match log.append(id, &bytes) {
                        Ok((copy, pin)) => {
                            copies.push((id, at, copy));
                            pins.push(pin);
                        }
                        // The disk is full, say: this segment is kept (the copies made
                        // are unused, given back by a later pass), and no more copying.
                        Err(e) => {
                            tracing::warn!(error = %e, "a live payload could not be copied; its segment is kept");
                            copying = false;
                            continue 'segments;
                        }
                    }
                }
                moved.extend(copies);
                delete.push(segment);
            }
            Ok((delete, moved, pins))
        })
        .await
        .map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))?;
        let (delete, moved, pins) = match planned {
            Ok(p) => p,
            Err(e) => {
                // Looked at again by a later pass.
                self.reclaim_queue
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .segments
                    .extend(retry);
                return Err(e);
            }
        };
        if !moved.is_empty() {
            // The copies are durable before any record points at them.
            let mut synced = BTreeSet::new();
            for (_, _, copy) in &moved {
                if synced.insert(copy.segment) {
                    self.payload_syncer.durable(copy).await?;
                }
            }
            let mut g = self.guard();
            let mut txn = self.txn();
            for (id, old, new) in moved {
                match txn.message(id) {
                    Ok(m) if m.payload_at == Some(old) => {
                        m.payload_at = Some(new);
                        txn.touch(id);
                    }
                    // Purged (or gone) meanwhile: the copy is left for a later reclaim.
                    Ok(_) | Err(StoreError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            txn.apply(&mut g)?;
        }
        drop(pins);
        if !delete.is_empty() {
            // No durable record points into them once this returns.
            self.committer.commit(Vec::new(), None).await?;
        }
        let mut deleted = 0;
        for segment in delete {
            match self.payload_log.remove(segment) {
                Ok(true) => deleted += 1,
                Ok(false) => {}
                // Nothing points into it any more: it is only space, tried again by the
                // sweep of the next start.
                Err(e) => tracing::warn!(
                    path = %self.payload_log.path_of(segment).display(),
                    error = %e,
                    "an unused payload segment could not be deleted"
                ),
            }
        }
        Ok(deleted)
    }

    /// The payload of message `id`, wherever it is now.
    fn read_payload(&self, id: MessageId) -> Result<Payload> {
        let stored = self.load_required(id)?;
        self.read_payload_from(&stored)
    }

    /// The payload of a message loaded a moment ago: if its segment was compacted since,
    /// the record now points at the copy, and that is read.
    fn read_payload_from(&self, stored: &StoredMessage) -> Result<Payload> {
        match self.payload_of_stored(stored) {
            Err(StoreError::NotFound(_)) if stored.payload_at.is_some() => {
                let moved = self.load_required(stored.record.id)?;
                self.payload_of_stored(&moved)
            }
            other => other,
        }
    }

    /// The payload of a stored message: in a payload segment, in the database (stores
    /// written before the segments) or in a blob file.
    fn payload_of_stored(&self, stored: &StoredMessage) -> Result<Payload> {
        let m = &stored.record;
        let id = m.id;
        if m.payload_purged {
            return Err(StoreError::Purged(id.to_string()));
        }
        if let Some(at) = &stored.payload_at {
            return Ok(Payload::Inline(self.payload_log.read(at, id)?));
        }
        if let Some(bytes) = self.payloads.get(id.bytes())? {
            return Ok(Payload::Inline(bytes::Bytes::copy_from_slice(&bytes)));
        }
        let r: BlobRef = self
            .get("blob ref", &key(keys::BLOB_REF, &[&m.sha256.0]))?
            .ok_or_else(|| StoreError::NotFound(format!("payload of {id}")))?;
        let path = self.blobs.path_of(&m.sha256);
        if !path.is_file() {
            return Err(StoreError::NotFound(format!(
                "blob file of {id} ({})",
                path.display()
            )));
        }
        Ok(Payload::File { path, size: r.size })
    }

    fn txn(&self) -> Txn<'_> {
        Txn {
            store: self,
            batch: Writes::default(),
            messages: HashMap::new(),
            dirty: Vec::new(),
        }
    }

    /// Moves the blob files no message references to `blobs/unused/`, and deletes those
    /// that have been there for [`UNUSED_BLOBS_KEPT`]. A crash can leave such a file after a
    /// purge made its release durable and before it deleted the file, or after a large
    /// submission installed its file and before its records were flushed (it was never
    /// acknowledged). Set aside rather than deleted at once, so that a database damaged in
    /// some way nobody foresaw cannot take payloads with it unnoticed. Run at open, before
    /// any submission can install a file whose reference is not written yet. Best effort:
    /// a file that cannot be moved or listed is said and left.
    fn set_aside_unused_blobs(&self) {
        let unused = self.blobs.stored().and_then(|stored| {
            let mut unused = Vec::new();
            for sha in stored {
                if !self.db.contains_key(key(keys::BLOB_REF, &[&sha.0]))? {
                    unused.push(sha);
                }
            }
            Ok(unused)
        });
        let unused = unused.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "the blob files or their references cannot be read; unused blob files are left");
            Vec::new()
        });
        let mut set_aside = 0;
        for sha in unused {
            match self.blobs.set_aside(&sha) {
                Ok(()) => set_aside += 1,
                Err(e) => {
                    tracing::warn!(blob = %sha.to_hex(), error = %e, "a blob file no message uses could not be set aside");
                }
            }
        }
        if set_aside > 0 {
            tracing::warn!(
                files = set_aside,
                dir = %self.blobs.unused_dir().display(),
                "blob files no message uses were set aside (left by a crash after a purge, or by a submission a crash cut short); they are deleted after 7 days"
            );
        }
        match self.blobs.delete_unused_older_than(UNUSED_BLOBS_KEPT) {
            Ok((0, _)) => {}
            Ok((files, bytes)) => {
                tracing::info!(
                    files,
                    bytes,
                    "deleted blob files set aside more than 7 days ago"
                );
            }
            Err(e) => {
                tracing::warn!(error = %e, "the blob files set aside could not all be deleted");
            }
        }
    }

    /// Removes dead-letter index entries whose delivery is no longer dead: left when a
    /// crash interrupted a requeue or drop after its record was written (see [`Writes`]).
    /// Dead letters are few, so this costs little at start-up.
    fn drop_stale_dead_letters(&self) -> Result<()> {
        let mut g = self.guard();
        let mut txn = self.txn();
        for kv in self.db.scan_prefix([keys::DEAD]) {
            let (k, _) = kv?;
            let live = match DeliveryKey::from_bytes(&k[1..]) {
                Some(dk) => txn
                    .delivery_if_stored(&dk)?
                    .is_some_and(|d| d.state == DeliveryState::Dead),
                None => false,
            };
            if !live {
                txn.batch.remove(k);
            }
        }
        txn.apply(&mut g)
    }

    /// Claims that earlier versions of the store wrote down (a lease index entry and a
    /// claimed record) and whose lease ends at or before `until` go back to their queue.
    /// Called at open; this version keeps claims in memory ([`Leases`]).
    fn release_leases(&self, until: u64, now: Timestamp) -> Result<usize> {
        let mut g = self.guard();
        let mut txn = self.txn();
        let mut n = 0;
        let end = key(keys::LEASE, &[&until.to_be_bytes(), &[0xFF]]);
        for kv in self.db.range(vec![keys::LEASE]..end) {
            let (k, _) = kv?;
            txn.batch.remove(k.clone());
            let Some(dk) = DeliveryKey::from_bytes(&k[9..]) else {
                continue;
            };
            let Some(mut d) = txn.delivery_if_stored(&dk)? else {
                continue;
            };
            if d.state != DeliveryState::Claimed {
                continue;
            }
            d.state = DeliveryState::Queued;
            d.lease = None;
            // Ready at once: no later than its queue time, whatever clock the caller uses.
            d.ready_at = now.min(d.queued_at);
            txn.update(d)?;
            txn.event(
                now,
                dk.message_id,
                Some(&dk.recipient),
                EventKind::LeaseExpired,
                "",
            )?;
            n += 1;
        }
        txn.apply(&mut g)?;
        Ok(n)
    }

    /// The delivery `token` holds, as its lease has it (claimed, with the lease's attempt
    /// count); the record in `txn` stays as stored (queued), so an update of the delivery
    /// removes its queue entry.
    fn check_lease(txn: &mut Txn<'_>, leases: &Leases, token: &ClaimToken) -> Result<Delivery> {
        let lost = || StoreError::LeaseLost(token.key.to_string());
        let held = leases
            .held
            .get(&token.key)
            .filter(|h| h.lease == token.lease)
            .ok_or_else(lost)?;
        let d = match txn.delivery(&token.key) {
            Ok(d) => d,
            Err(StoreError::NotFound(_)) => return Err(lost()),
            Err(e) => return Err(e),
        };
        if d.state != DeliveryState::Queued {
            return Err(lost());
        }
        Ok(Leases::claimed(d, held))
    }

    /// The dedupe key, which is also the by-document index: DocumentId, then a digest of
    /// sender, business type, kind and content.
    fn document_key(m: &MessageRecord) -> Vec<u8> {
        let mut h = Sha256::new();
        h.update(m.sender.as_str());
        h.update([0, m.business_doc_type.code(), 0]);
        h.update(m.kind.as_str());
        h.update([0]);
        h.update(m.sha256.0);
        let doc = m.document_id.as_ref().map(DocumentId::as_str).unwrap_or("");
        key(keys::DOCUMENT, &[doc.as_bytes(), &[0], &h.finalize()])
    }

    pub(crate) fn db(&self) -> &sled::Db {
        &self.db
    }

    pub(crate) fn payload_tree(&self) -> &sled::Tree {
        &self.payloads
    }

    pub(crate) fn payload_log(&self) -> &PayloadLog {
        &self.payload_log
    }

    pub(crate) fn blob_dir(&self) -> &BlobDir {
        &self.blobs
    }

    pub(crate) fn lock_for_backup(&self) -> MutexGuard<'_, Leases> {
        self.guard()
    }

    pub(crate) fn record_backup(&self, path: &Path, at: Timestamp) -> Result<()> {
        let mut meta = read_meta(&self.dir)?.unwrap_or(StoreMeta {
            format: FORMAT,
            created_at: at,
            last_backup: None,
            log_segment_bytes: self.log_segment_bytes,
        });
        meta.last_backup = Some(LastBackup {
            path: path.to_owned(),
            at,
        });
        write_meta(&self.dir, &meta)
    }

    /// Creates the metadata file of a store restored from a backup, whose database was
    /// created with `log_segment_bytes`.
    pub(crate) fn write_restored_meta(
        dir: &Path,
        created_at: Timestamp,
        log_segment_bytes: usize,
    ) -> Result<()> {
        sync_sled_conf(&dir.join("db"))?;
        write_meta(
            dir,
            &StoreMeta {
                format: FORMAT,
                created_at,
                last_backup: None,
                log_segment_bytes,
            },
        )
    }
}

/// A message and its deliveries: one record, so a submission is few writes and a state
/// change rewrites one small record.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct StoredMessage {
    record: MessageRecord,
    deliveries: Vec<Delivery>,
    /// Where the payload is in the payload segments; `None` for a payload in a blob file,
    /// in the database (stores written before the segments) or purged.
    #[serde(default)]
    payload_at: Option<SegmentRef>,
}

/// The changes of one operation: its writes, plus the messages it read and changed, so reads
/// within the operation see its own writes. Applied in a crash-safe order (see [`Writes`]).
struct Txn<'a> {
    store: &'a SledStore,
    batch: Writes,
    /// Shared with the record cache until changed.
    messages: HashMap<MessageId, Arc<StoredMessage>>,
    dirty: Vec<MessageId>,
}

impl Txn<'_> {
    /// The message, to read.
    fn message_ref(&mut self, id: MessageId) -> Result<&StoredMessage> {
        if !self.messages.contains_key(&id) {
            let m = self.store.load_required(id)?;
            self.messages.insert(id, m);
        }
        self.messages
            .get(&id)
            .map(|m| &**m)
            .ok_or_else(|| StoreError::NotFound(format!("message {id}")))
    }

    /// The message, to change (a copy of its own once changed).
    fn message(&mut self, id: MessageId) -> Result<&mut StoredMessage> {
        self.message_ref(id)?;
        self.messages
            .get_mut(&id)
            .map(Arc::make_mut)
            .ok_or_else(|| StoreError::NotFound(format!("message {id}")))
    }

    /// The delivery, or `None` if its message does not exist (an index entry left by an
    /// operation a crash interrupted).
    fn delivery_if_stored(&mut self, k: &DeliveryKey) -> Result<Option<Delivery>> {
        match self.delivery(k) {
            Ok(d) => Ok(Some(d)),
            Err(StoreError::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn delivery(&mut self, k: &DeliveryKey) -> Result<Delivery> {
        self.message_ref(k.message_id)?
            .deliveries
            .iter()
            .find(|d| d.key == *k)
            .cloned()
            .ok_or_else(|| StoreError::NotFound(format!("delivery {k}")))
    }

    fn touch(&mut self, id: MessageId) {
        if !self.dirty.contains(&id) {
            self.dirty.push(id);
        }
    }

    /// Replaces a delivery, moving it between the indexes of its old and new state.
    fn update(&mut self, new: Delivery) -> Result<()> {
        let id = new.key.message_id;
        self.message_ref(id)?;
        let slot = self
            .messages
            .get_mut(&id)
            .map(Arc::make_mut)
            .into_iter()
            .flat_map(|m| m.deliveries.iter_mut())
            .find(|d| d.key == new.key)
            .ok_or_else(|| StoreError::NotFound(format!("delivery {}", new.key)))?;
        unindex(&mut self.batch, slot);
        index(&mut self.batch, &new);
        *slot = new;
        self.touch(id);
        Ok(())
    }

    fn event(
        &mut self,
        at: Timestamp,
        message_id: MessageId,
        recipient: Option<&OrgCode>,
        kind: EventKind,
        detail: impl Into<String>,
    ) -> Result<()> {
        let seq = self.store.event_seq.fetch_add(1, Ordering::Relaxed);
        let e = Event {
            at,
            message_id,
            recipient: recipient.cloned(),
            kind,
            detail: detail.into(),
        };
        self.batch.insert(
            key(
                keys::EVENT,
                &[&message_id.bytes(), &at.be(), &seq.to_be_bytes()],
            ),
            encode("event", &e)?,
        );
        Ok(())
    }

    /// Moves a delivery to the dead letters with its reason, and completes its message if
    /// that was its last live delivery.
    fn dead_letter(&mut self, mut d: Delivery, reason: &str, now: Timestamp) -> Result<Delivery> {
        let (id, recipient) = (d.key.message_id, d.key.recipient.clone());
        d.state = DeliveryState::Dead;
        d.dead_reason = Some(reason.to_owned());
        d.completed_at = Some(now);
        self.update(d.clone())?;
        self.event(now, id, Some(&recipient), EventKind::DeadLettered, reason)?;
        self.complete_if_done(id, now)?;
        Ok(d)
    }

    /// After a delivery of `id` reached a final state: if all did, the message is complete
    /// (retention counts from here).
    fn complete_if_done(&mut self, id: MessageId, now: Timestamp) -> Result<()> {
        let m = self.message(id)?;
        if m.record.completed_at.is_none() && m.deliveries.iter().all(|d| d.state.is_final()) {
            m.record.completed_at = Some(now);
            self.batch
                .insert(key(keys::COMPLETED, &[&now.be(), &id.bytes()]), &[][..]);
            self.touch(id);
        }
        Ok(())
    }

    /// Undoes completion when a delivery becomes live again (requeue).
    fn reopen(&mut self, id: MessageId) -> Result<()> {
        let m = self.message(id)?;
        if let Some(at) = m.record.completed_at.take() {
            self.batch
                .remove(key(keys::COMPLETED, &[&at.be(), &id.bytes()]));
            self.touch(id);
        }
        Ok(())
    }

    fn audit(
        &mut self,
        actor: &str,
        action: &str,
        target: &str,
        detail: &str,
        now: Timestamp,
    ) -> Result<AuditEntry> {
        let head_key = key(keys::SYSTEM, &[b"audit_head"]);
        let head: AuditHead = self
            .store
            .get("audit head", &head_key)?
            .unwrap_or(AuditHead {
                seq: 0,
                hash: Sha256Digest([0; 32]),
            });
        let mut entry = AuditEntry {
            seq: head.seq + 1,
            at: now,
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: target.to_owned(),
            detail: detail.to_owned(),
            prev_hash: head.hash,
            hash: Sha256Digest([0; 32]),
        };
        entry.hash = audit_hash(&entry);
        self.batch.insert(
            key(keys::AUDIT, &[&entry.seq.to_be_bytes()]),
            encode("audit entry", &entry)?,
        );
        // The entry, then the head, then the change it records (an audit log records intent:
        // a crash may leave an entry for a change that did not happen, never the reverse).
        // Both are `BeforeRecords` writes, which go in key order: 'A' before 'S'. A crash
        // between entry and head leaves one entry past the head, which the next append
        // replaces and verification does not count.
        const _: () = assert!(keys::AUDIT < keys::SYSTEM);
        self.batch.insert(
            head_key,
            encode(
                "audit head",
                &AuditHead {
                    seq: entry.seq,
                    hash: entry.hash,
                },
            )?,
        );
        Ok(entry)
    }

    /// Writes the operation, then tells `leases` of every queue entry it inserted, so a
    /// claim scan never resumes past one, and the record cache of every record it wrote.
    fn apply(mut self, leases: &mut Leases) -> Result<()> {
        let mut records = Vec::with_capacity(self.dirty.len());
        let mut sizes = Vec::with_capacity(self.dirty.len());
        for id in &self.dirty {
            if let Some(m) = self.messages.get(id) {
                let record = encode("message", &**m)?;
                sizes.push((*id, record.len()));
                records.push((key(keys::MESSAGE, &[&id.bytes()]), record));
            }
        }
        let queued: Vec<Vec<u8>> = self
            .batch
            .ops
            .iter()
            .filter(|(k, (_, v))| k.first() == Some(&keys::QUEUE) && v.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        // Forgotten first: while the records are being written (and if that fails), readers
        // go to the database.
        self.store.records.forget(&self.dirty);
        self.batch.apply(&self.store.db, records)?;
        for (id, size) in sizes {
            if let Some(m) = self.messages.remove(&id) {
                self.store.records.keep(m, size);
            }
        }
        for k in &queued {
            leases.queued(k);
        }
        Ok(())
    }
}

/// When a write of an operation reaches the log, relative to its message records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the records: new keys that point at a record (indexes, payload references,
    /// timeline entries). If a crash keeps them but not the record, they are orphans, which
    /// every reader skips (and the queue scan removes).
    BeforeRecords,
    /// After the records: removals of what the new state no longer has, and releases
    /// (reference counts going down, the audit head). If a crash loses them, the record
    /// already says what is true, and the leftovers are recognised as stale.
    AfterRecords,
}

/// The writes of one operation, applied key by key in a crash-safe order.
///
/// sled 0.34's atomic batches (and transactions) write out and sync the current log buffer
/// twice per batch and take a process-wide lock; with several batches per package that was
/// most of the relay's disk and CPU time. Instead, an operation's writes go to the log in an
/// order such that every prefix of it is a state the store recovers from (sled recovers a
/// prefix of its log: a write is never kept while an earlier one is lost): first the
/// [`Phase::BeforeRecords`] writes, then the message records, then the
/// [`Phase::AfterRecords`] writes. The record is the truth; an index that disagrees with it
/// is ignored or repaired where it is read. Within the process, the store's lock keeps
/// other operations from seeing a half-applied change; durability still comes from the
/// group commit's flush, which covers every write made before it.
#[derive(Default)]
struct Writes {
    ops: std::collections::BTreeMap<Vec<u8>, (Phase, Option<sled::IVec>)>,
}

impl Writes {
    /// Sets `k` before the records are written (the last write of a key wins).
    fn insert(&mut self, k: impl AsRef<[u8]>, v: impl Into<sled::IVec>) {
        self.ops
            .insert(k.as_ref().to_vec(), (Phase::BeforeRecords, Some(v.into())));
    }

    /// Sets `k` after the records are written: for values that release something the
    /// records must stop using first.
    fn insert_after(&mut self, k: impl AsRef<[u8]>, v: impl Into<sled::IVec>) {
        self.ops
            .insert(k.as_ref().to_vec(), (Phase::AfterRecords, Some(v.into())));
    }

    /// Removes `k` after the records are written.
    fn remove(&mut self, k: impl AsRef<[u8]>) {
        self.ops
            .insert(k.as_ref().to_vec(), (Phase::AfterRecords, None));
    }

    fn apply(self, db: &sled::Db, records: Vec<(Vec<u8>, Vec<u8>)>) -> Result<()> {
        let (before, after): (Vec<_>, Vec<_>) = self
            .ops
            .into_iter()
            .partition(|(_, (phase, _))| *phase == Phase::BeforeRecords);
        let ordered = before
            .into_iter()
            .map(|(k, (_, v))| (k, v))
            .chain(records.into_iter().map(|(k, v)| (k, Some(v.into()))))
            .chain(after.into_iter().map(|(k, (_, v))| (k, v)));
        for (k, v) in ordered {
            #[cfg(test)]
            crash_point::reached(db)?;
            match v {
                Some(v) => db.insert(k, v).map(drop)?,
                None => db.remove(k).map(drop)?,
            }
        }
        Ok(())
    }
}

/// The stored message `id`, read from `db` directly (for work off the store's methods).
fn load_stored(db: &sled::Db, id: MessageId) -> Result<Option<StoredMessage>> {
    match db.get(key(keys::MESSAGE, &[&id.bytes()]))? {
        Some(v) => decode("message", &v).map(Some),
        None => Ok(None),
    }
}

/// What a reclaim does: the segments to delete, each with the live payloads to copy first.
type ReclaimPlan = Vec<(u64, Vec<(SegmentRef, MessageId)>)>;

/// Looks at each candidate segment (file reads and a lookup per entry: run it off the
/// async threads): one that is reclaimable, clean, and less than half used is planned for
/// deletion, with the payloads records still point at, those with none first. A segment
/// that cannot be read, or one of whose entries' records cannot, is kept (with a warning)
/// and the others are planned.
fn plan_reclaim(log: &PayloadLog, db: &sled::Db, candidates: BTreeSet<u64>) -> ReclaimPlan {
    let mut plan = Vec::new();
    for segment in candidates {
        match plan_segment(log, db, segment) {
            Ok(Some(live)) => plan.push((segment, live)),
            Ok(None) => {}
            Err(e) => tracing::warn!(
                path = %log.path_of(segment).display(),
                error = %e,
                "a payload segment could not be looked at; it is kept, not reclaimed"
            ),
        }
    }
    // Deletions need no space: they go first.
    plan.sort_by_key(|(_, live)| !live.is_empty());
    plan
}

/// The live payloads of `segment` if it may be reclaimed, `None` if it is kept.
fn plan_segment(
    log: &PayloadLog,
    db: &sled::Db,
    segment: u64,
) -> Result<Option<Vec<(SegmentRef, MessageId)>>> {
    // Sealed and unpinned: every record pointing into it is written already.
    if !log.reclaimable(segment) {
        return Ok(None);
    }
    let scan = match log.entries(segment) {
        Ok(e) => e,
        // Deleted by another purge meanwhile.
        Err(StoreError::NotFound(_)) => return Ok(None),
        Err(e) => return Err(e),
    };
    if !scan.clean {
        tracing::warn!(
            path = %log.path_of(segment).display(),
            "a payload segment is damaged in the middle; it is kept, not reclaimed"
        );
        return Ok(None);
    }
    let mut live = Vec::new();
    for (at, id) in scan.entries {
        if load_stored(db, id)?.and_then(|m| m.payload_at) == Some(at) {
            live.push((at, id));
        }
    }
    let live_bytes: u64 = live.iter().map(|(at, _)| at.entry_bytes()).sum();
    Ok((live_bytes * 2 <= scan.size).then_some(live))
}

/// A due date as an ordered key part (days since 1970, sign bit flipped, big-endian).
fn due_key(date: CalendarDate, id: MessageId) -> Vec<u8> {
    key(keys::DUE, &[&day_bytes(date), &id.bytes()])
}

fn day_bytes(date: CalendarDate) -> [u8; 8] {
    ((date.unix_days() as u64) ^ (1 << 63)).to_be_bytes()
}

fn queue_key(d: &Delivery) -> Vec<u8> {
    key(
        keys::QUEUE,
        &[&d.destination.key(), &[0], &d.ready_at.be(), &d.key.bytes()],
    )
}

fn lease_key(d: &Delivery) -> Vec<u8> {
    key(keys::LEASE, &[&d.ready_at.be(), &d.key.bytes()])
}

fn held_key(d: &Delivery) -> Vec<u8> {
    key(
        keys::HELD,
        &[d.key.recipient.as_str().as_bytes(), &[0], &d.key.bytes()],
    )
}

fn dead_key(k: &DeliveryKey) -> Vec<u8> {
    key(keys::DEAD, &[&k.bytes()])
}

/// Removes a delivery from the index of its current state.
fn unindex(batch: &mut Writes, d: &Delivery) {
    match d.state {
        DeliveryState::Queued => batch.remove(queue_key(d)),
        DeliveryState::Claimed => batch.remove(lease_key(d)),
        DeliveryState::Held => batch.remove(held_key(d)),
        DeliveryState::Dead => batch.remove(dead_key(&d.key)),
        DeliveryState::Delivered | DeliveryState::Acknowledged | DeliveryState::Dropped => {}
    }
}

/// Adds a delivery to the index of its state.
fn index(batch: &mut Writes, d: &Delivery) {
    match d.state {
        DeliveryState::Queued => batch.insert(queue_key(d), &[][..]),
        DeliveryState::Claimed => batch.insert(lease_key(d), d.destination.key()),
        DeliveryState::Held => batch.insert(held_key(d), &[][..]),
        DeliveryState::Dead => batch.insert(dead_key(&d.key), &[][..]),
        DeliveryState::Delivered | DeliveryState::Acknowledged | DeliveryState::Dropped => {}
    }
}

/// The hash chaining an audit entry to the previous one. Fields are length-prefixed so no
/// two different entries hash alike.
fn audit_hash(e: &AuditEntry) -> Sha256Digest {
    let mut h = Sha256::new();
    h.update(e.prev_hash.0);
    h.update(e.seq.to_be_bytes());
    h.update(e.at.0.to_be_bytes());
    for field in [&e.actor, &e.action, &e.target, &e.detail] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    Sha256Digest(h.finalize().into())
}

/// Hands this thread's deferred drops to crossbeam-epoch's global collector and lets the
/// epoch move on, so that sled lets go of a closed store's files sooner.
fn run_deferred_drops() {
    for _ in 0..3 {
        crossbeam_epoch::pin().flush();
    }
}

/// Waits (up to 15 s) until the database at `db_path`, closed by this process, is no
/// longer locked.
fn wait_released(db_path: &Path) -> Result<()> {
    let lock_file = db_path.join("db");
    let started = std::time::Instant::now();
    loop {
        run_deferred_drops();
        let file = match fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&lock_file)
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(StoreError::from_io(e)),
        };
        if fs2::FileExt::try_lock_exclusive(&file).is_ok() {
            let _ = fs2::FileExt::unlock(&file);
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(15) {
            return Err(StoreError::Io(std::io::Error::other(format!(
                "{}: the database lock was not released within 15 s of closing",
                lock_file.display()
            ))));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Refuses an initialised store whose database directory is gone: sled would create an
/// empty database there, and the store would start empty.
fn require_db_dir(dir: &Path, db_path: &Path, meta: Option<&StoreMeta>) -> Result<()> {
    if db_path.is_dir() {
        return Ok(());
    }
    Err(StoreError::Corrupt {
        path: dir.to_owned(),
        reason: "its database directory `db` is missing".into(),
        hint: restore_hint(meta),
    })
}

/// Opens the sled database at `db_path` of the store in `dir`.
///
/// The lock of a store closed a moment ago in this process can outlive it for a while:
/// sled lets go of its files through deferred drops that run when its threads next get
/// around to it. Waits for a lock this process holds (up to 15 s); a lock held by another
/// process fails at once. (Which process holds a lock is not always visible, e.g. in
/// sandboxes without /proc/locks: this process remembers what it opened.)
fn open_sled(dir: &Path, db_path: &Path, config: &sled::Config) -> sled::Result<sled::Db> {
    let started = std::time::Instant::now();
    let mut read_ahead = 0;
    let opened = loop {
        remove_unfinished_snapshots(db_path)?;
        // Only while sled opens: not while this process waits for its own lock.
        let readahead = LogReadahead::start(db_path.join("db"), READAHEAD_DELAY);
        let attempt = config.open();
        read_ahead += readahead.stop();
        match attempt {
            Err(sled::Error::Io(io))
                if is_lock_conflict(&io)
                    && opened_here(db_path)
                    && started.elapsed() < Duration::from_secs(15) =>
            {
                run_deferred_drops();
                std::thread::sleep(Duration::from_millis(40));
            }
            Err(sled::Error::Io(io)) if is_lock_conflict(&io) => {
                let who = if opened_here(db_path) {
                    "still held by this process 15 s after it was closed"
                } else {
                    "open in another process (is trucd already running?)"
                };
                break Err(sled::Error::Io(std::io::Error::new(
                    std::io::ErrorKind::WouldBlock,
                    format!("{}: the store is {who}", dir.display()),
                )));
            }
            other => break other,
        }
    };
    if opened.is_ok() {
        remember_opened(db_path);
        tracing::debug!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            log_read_ahead_mib = read_ahead >> 20,
            "database opened"
        );
    }
    opened
}

/// Removes snapshots sled began to write and never finished, unless another handle has the
/// database open.
///
/// sled 0.34 writes a snapshot to `snap.<lsn>.generating`, fsyncs it and renames it, but at
/// open it reads the newest `snap.*` file, `.generating` included: after a crash while one
/// was being written (at an open, or in a checkpoint) it would report the database corrupt
/// (sled issue #1527). Such a file is never needed: the snapshot before it is still there
/// (sled deletes older ones only after the rename), and a snapshot only saves reading the
/// log, which holds everything.
fn remove_unfinished_snapshots(db_path: &Path) -> std::io::Result<()> {
    let Ok(entries) = fs::read_dir(db_path) else {
        return Ok(());
    };
    let unfinished: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with("snap.") && n.ends_with(".generating"))
        })
        .map(|e| e.path())
        .collect();
    if unfinished.is_empty() {
        return Ok(());
    }
    // Only while holding sled's lock: a database open elsewhere may be writing one now.
    let lock = match fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(db_path.join("db"))
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if fs2::FileExt::try_lock_exclusive(&lock).is_err() {
        return Ok(());
    }
    for path in &unfinished {
        tracing::warn!(file = %path.display(), "removing a snapshot the database began to write and never finished (a crash while it was written)");
        fs::remove_file(path)?;
    }
    let _ = fs2::FileExt::unlock(&lock);
    Ok(())
}

/// What a failure to open the database of the store in `dir` means for its operator.
fn open_error(e: sled::Error, dir: &Path, meta: Option<&StoreMeta>) -> StoreError {
    match e {
        sled::Error::Io(io) if crate::error::is_full(&io) => StoreError::Full(io),
        sled::Error::Io(io) => StoreError::Io(io),
        other => StoreError::Corrupt {
            path: dir.to_owned(),
            reason: format!("the database does not open: {other}"),
            hint: restore_hint(meta),
        },
    }
}

/// Whether sled failed to open because another handle holds its lock (sled reports it as
/// an `Other` error whose message says so).
fn is_lock_conflict(io: &std::io::Error) -> bool {
    io.kind() == std::io::ErrorKind::WouldBlock || io.to_string().contains("could not acquire lock")
}

/// Database directories this process has opened: a lock conflict on one of them is most
/// likely this process's own store, closed a moment ago.
static OPENED_HERE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn opened_here(db_path: &Path) -> bool {
    OPENED_HERE
        .lock()
        .map(|paths| paths.iter().any(|p| p == db_path))
        .unwrap_or(false)
}

fn remember_opened(db_path: &Path) {
    if let Ok(mut paths) = OPENED_HERE.lock() {
        if !paths.iter().any(|p| p == db_path) {
            paths.push(db_path.to_owned());
        }
    }
}

fn human_bytes(n: u64) -> String {
    format!("{:.0} MiB", n as f64 / (1024.0 * 1024.0))
}

fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir).map_err(StoreError::from_io)? {
        let entry = entry.map_err(StoreError::from_io)?;
        let meta = entry.metadata().map_err(StoreError::from_io)?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

impl SledStore {
    /// A claimed delivery back to its queue after the retry backoff; past its age it is
    /// dead-lettered if `may_give_up`, else retried all the same.
    async fn retry_claim(
        &self,
        token: &ClaimToken,
        error: &str,
        now: Timestamp,
        may_give_up: bool,
    ) -> Result<NackOutcome> {
        // Like an adapter's acknowledgement, a refusal may wait for a later flush: flushes do
        // not wait for it while it is being prepared.
        let outcome = {
            let mut g = self.guard();
            let mut txn = self.txn();
            let mut d = Self::check_lease(&mut txn, &g, token)?;
            d.lease = None;
            d.last_error = Some(error.to_owned());
            let policy = self.config.retry;
            let deadline = d.queued_at.plus(policy.max_age);
            let (id, recipient) = (d.key.message_id, d.key.recipient.clone());
            let outcome = if may_give_up && now >= deadline {
                let reason = format!(
                    "gave up after {} attempts over {} s: {error}",
                    d.attempts,
                    now.since(d.queued_at).as_secs()
                );
                txn.dead_letter(d, &reason, now)?;
                NackOutcome::Dead(reason)
            } else {
                let mut at = now.plus(policy.delay(d.attempts));
                if may_give_up {
                    at = at.min(deadline);
                }
                let detail = format!("attempt {} failed: {error}; next at {at}", d.attempts);
                d.state = DeliveryState::Queued;
                d.ready_at = at;
                txn.update(d)?;
                txn.event(now, id, Some(&recipient), EventKind::RetryScheduled, detail)?;
                NackOutcome::RetryAt(at)
            };
            txn.apply(&mut g)?;
            g.settle(&token.key);
            outcome
        };
        // Nobody waits to hear a refusal is durable.
        self.committer.commit_within(self.ack_flush_delay()).await?;
        Ok(outcome)
    }
}

#[async_trait]
impl Store for SledStore {
    fn stage_payload(&self) -> Result<BlobWriter> {
        self.blobs.writer()
    }

    async fn submit(&self, mut m: NewMessage) -> Result<SubmitOutcome> {
        self.check_space()?;
        let payload = std::mem::replace(&mut m.payload, PayloadInput::Bytes(bytes::Bytes::new()));
        let (body, size) = match payload {
            PayloadInput::Bytes(b) if b.len() <= self.config.inline_threshold => {
                let size = b.len() as u64;
                (Body::Inline(b), size)
            }
            PayloadInput::Bytes(b) => {
                // Written and fsynced away from the async threads: an fsync takes
                // milliseconds, which would stall every connection sharing the thread.
                let blobs = self.blobs.clone();
                let staged = tokio::task::spawn_blocking(move || blobs.write_bytes(&b))
                    .await
                    .map_err(|e| StoreError::Io(std::io::Error::other(e.to_string())))??;
                let size = staged.size();
                (Body::Staged(staged), size)
            }
            PayloadInput::Staged(s) => {
                let size = s.size();
                (Body::Staged(s), size)
            }
        };
        if let Body::Staged(s) = &body {
            if s.sha256() != m.sha256 {
                return Err(StoreError::Codec {
                    what: "payload",
                    reason: format!(
                        "its SHA-256 {} is not the message's {}",
                        s.sha256(),
                        m.sha256
                    ),
                });
            }
        }
        let id = {
            let mut last = self.last_id.lock().unwrap_or_else(|p| p.into_inner());
            *last = MessageId::after(*last, m.received_at);
            *last
        };
        let routes = std::mem::take(&mut m.routes);
        let record = MessageRecord {
            id,
            kind: m.kind,
            sender: m.sender,
            recipients: routes.iter().map(|r| r.recipient.clone()).collect(),
            document_id: m.document_id,
            business_doc_type: m.business_doc_type,
            sha256: m.sha256,
            size,
            received_at: m.received_at,
            source: m.source,
            summary: m.summary,
            idempotency_key: m.idempotency_key,
            completed_at: None,
            payload_purged: false,
        };
        match body {
            Body::Inline(bytes) => self.submit_logged(record, routes, bytes).await,
            Body::Staged(staged) => self.submit_staged(record, routes, staged).await,
        }
    }

    async fn message(&self, id: MessageId) -> Result<Option<MessageRecord>> {
        Ok(self.load(id)?.map(|m| m.record.clone()))
    }

    async fn find_by_upstream_id(&self, doc_id: &str) -> Result<Option<MessageId>> {
        let Some(id) = self
            .db
            .get(key(keys::UPSTREAM, &[doc_id.as_bytes()]))?
            .and_then(|v| MessageId::from_bytes(&v))
        else {
            return Ok(None);
        };
        // Only a stored message counts (see `Writes` for index entries without one).
        Ok(self
            .db
            .contains_key(key(keys::MESSAGE, &[&id.bytes()]))?
            .then_some(id))
    }

    async fn find_by_document(&self, document_id: &DocumentId) -> Result<Vec<MessageRecord>> {
        let prefix = key(keys::DOCUMENT, &[document_id.as_str().as_bytes(), &[0]]);
        let mut out = Vec::new();
        for kv in self.db.scan_prefix(&prefix) {
            let (_, v) = kv?;
            let Some(id) = MessageId::from_bytes(&v) else {
                continue;
            };
            // Skips an index entry whose record was never written (see `Writes`).
            if let Some(m) = self.load(id)? {
                out.push(m.record.clone());
            }
        }
        out.sort_by_key(|m| m.id);
        Ok(out)
    }

    async fn payload(&self, id: MessageId) -> Result<Payload> {
        self.read_payload(id)
    }

    async fn payload_of(&self, m: &MessageRecord) -> Result<Payload> {
        // The record given holds no payload location: the stored one does.
        self.read_payload(m.id)
    }

    async fn deliveries(&self, id: MessageId) -> Result<Vec<Delivery>> {
        let mut deliveries = self
            .load(id)?
            .map(|m| m.deliveries.clone())
            .unwrap_or_default();
        let g = self.guard();
        for d in &mut deliveries {
            g.overlay(d);
        }
        Ok(deliveries)
    }

    async fn claim(
        &self,
        destination: &Destination,
        max: usize,
        lease: Duration,
        now: Timestamp,
    ) -> Result<Vec<Claim>> {
        use std::ops::Bound;
        let mut g = self.guard();
        let dest = destination.key();
        let prefix = key(keys::QUEUE, &[&dest, &[0]]);
        let end = key(keys::QUEUE, &[&dest, &[1]]);
        // Entries up to the cursor are held by leases: start after them.
        let start = match g.cursors.get(&dest) {
            Some(c) => Bound::Excluded(c.clone()),
            None => Bound::Included(prefix.clone()),
        };
        let mut txn = self.txn();
        let mut claims = Vec::new();
        let mut cursor = None;
        for kv in self.db.range::<Vec<u8>, _>((start, Bound::Excluded(end))) {
            if claims.len() >= max {
                break;
            }
            let (k, _) = kv?;
            let rest = &k[prefix.len()..];
            let ready = rest
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            if ready > now.0 {
                break;
            }
            cursor = Some(k.to_vec());
            let Some(dk) = rest.get(8..).and_then(DeliveryKey::from_bytes) else {
                txn.batch.remove(k);
                continue;
            };
            if g.held.contains_key(&dk) {
                continue;
            }
            let d = match txn.delivery(&dk) {
                Ok(d) => d,
                Err(StoreError::NotFound(_)) => {
                    txn.batch.remove(k);
                    continue;
                }
                Err(e) => return Err(e),
            };
            if d.state != DeliveryState::Queued {
                txn.batch.remove(k);
                continue;
            }
            let held = Held {
                lease: fastrand::u64(..),
                until: now.plus(lease),
                claimed_at: now,
                attempts: d.attempts.max(g.attempts.remove(&dk).unwrap_or(0)) + 1,
                destination: d.destination.clone(),
            };
            let delivery = Leases::claimed(d, &held);
            let message = txn.message_ref(dk.message_id)?.record.clone();
            claims.push(Claim {
                token: ClaimToken {
                    key: dk.clone(),
                    lease: held.lease,
                },
                delivery,
                message,
            });
            g.held.insert(dk, held);
        }
        // Only index repairs (entries whose record is gone or moved on).
        txn.apply(&mut g)?;
        if let Some(c) = cursor {
            g.cursors.insert(dest, c);
        }
        Ok(claims)
    }

    async fn ack(
        &self,
        token: &ClaimToken,
        completion: Completion,
        now: Timestamp,
    ) -> Result<Delivery> {
        // An adapter's acknowledgement: nobody waits to hear it is durable, so it may share a
        // later flush, and flushes do not wait for it while it is being prepared.
        let shares_a_later_flush = matches!(completion, Completion::Acknowledged);
        let writing = (!shares_a_later_flush).then(|| self.committer.writing());
        let d = {
            let mut g = self.guard();
            let mut txn = self.txn();
            let mut d = Self::check_lease(&mut txn, &g, token)?;
            d.state = match completion {
                Completion::Acknowledged => DeliveryState::Acknowledged,
                Completion::Delivered { upstream_doc_id } => {
                    d.upstream_doc_id = upstream_doc_id;
                    DeliveryState::Delivered
                }
            };
            d.lease = None;
            d.completed_at = Some(now);
            txn.update(d.clone())?;
            txn.complete_if_done(d.key.message_id, now)?;
            txn.apply(&mut g)?;
            // Its queue entry is gone with the update: the scan cursor stays valid.
            g.settle(&token.key);
            d
        };
        if shares_a_later_flush {
            self.committer.commit_within(self.ack_flush_delay()).await?;
        } else {
            self.committer.commit(Vec::new(), writing).await?;
        }
        Ok(d)
    }

    async fn nack(&self, token: &ClaimToken, error: &str, now: Timestamp) -> Result<NackOutcome> {
        self.retry_claim(token, error, now, true).await
    }

    async fn retry_later(
        &self,
        token: &ClaimToken,
        reason: &str,
        now: Timestamp,
    ) -> Result<Timestamp> {
        match self.retry_claim(token, reason, now, false).await? {
            NackOutcome::RetryAt(at) => Ok(at),
            NackOutcome::Dead(reason) => Err(StoreError::Io(std::io::Error::other(format!(
                "a retry that may not give up gave up: {reason}"
            )))),
        }
    }

    async fn fail(&self, token: &ClaimToken, reason: &str, now: Timestamp) -> Result<Delivery> {
        let writing = self.committer.writing();
        let d = {
            let mut g = self.guard();
            let mut txn = self.txn();
            let mut d = Self::check_lease(&mut txn, &g, token)?;
            let reason = format!("refused for good after {} attempts: {reason}", d.attempts);
            d.lease = None;
            d.last_error = Some(reason.clone());
            let d = txn.dead_letter(d, &reason, now)?;
            txn.apply(&mut g)?;
            g.settle(&token.key);
            d
        };
        self.committer.commit(Vec::new(), Some(writing)).await?;
        Ok(d)
    }

    async fn release(&self, token: &ClaimToken, reason: &str, now: Timestamp) -> Result<()> {
        let mut g = self.guard();
        if g.held
            .get(&token.key)
            .is_none_or(|h| h.lease != token.lease)
        {
            return Err(StoreError::LeaseLost(token.key.to_string()));
        }
        g.drop_lease(&token.key);
        let mut txn = self.txn();
        txn.event(
            now,
            token.key.message_id,
            Some(&token.key.recipient),
            EventKind::LeaseExpired,
            format!("released: {reason}"),
        )?;
        txn.apply(&mut g)
    }

    async fn extend_lease(&self, token: &ClaimToken, until: Timestamp) -> Result<()> {
        // In memory, like the lease itself: nothing to write.
        let mut g = self.guard();
        match g
            .held
            .get_mut(&token.key)
            .filter(|h| h.lease == token.lease)
        {
            Some(h) => {
                h.until = h.until.max(until);
                Ok(())
            }
            None => Err(StoreError::LeaseLost(token.key.to_string())),
        }
    }

    async fn release_expired(&self, now: Timestamp) -> Result<usize> {
        let mut g = self.guard();
        let expired = g.expire(now);
        let mut txn = self.txn();
        for k in &expired {
            txn.event(
                now,
                k.message_id,
                Some(&k.recipient),
                EventKind::LeaseExpired,
                "",
            )?;
        }
        txn.apply(&mut g)?;
        Ok(expired.len())
    }

    async fn release_held(&self, recipient: &OrgCode, now: Timestamp) -> Result<usize> {
        let n = {
            let mut g = self.guard();
            let prefix = key(keys::HELD, &[recipient.as_str().as_bytes(), &[0]]);
            let mut txn = self.txn();
            let mut n = 0;
            for kv in self.db.scan_prefix(&prefix) {
                let (k, _) = kv?;
                txn.batch.remove(k.clone());
                let Some(dk) = DeliveryKey::from_bytes(&k[prefix.len()..]) else {
                    continue;
                };
                let Some(mut d) = txn.delivery_if_stored(&dk)? else {
                    continue;
                };
                if d.state != DeliveryState::Held {
                    continue;
                }
                let detail = format!("queued in {}", d.destination);
                d.state = DeliveryState::Queued;
                d.ready_at = now;
                d.queued_at = now;
                txn.update(d)?;
                txn.event(
                    now,
                    dk.message_id,
                    Some(&dk.recipient),
                    EventKind::Released,
                    detail,
                )?;
                n += 1;
            }
            txn.apply(&mut g)?;
            n
        };
        self.committer.commit(Vec::new(), None).await?;
        Ok(n)
    }

    async fn dead_letters(&self, limit: usize) -> Result<Vec<Delivery>> {
        let mut out = Vec::new();
        let mut cache: HashMap<MessageId, Arc<StoredMessage>> = HashMap::new();
        for kv in self.db.scan_prefix([keys::DEAD]).take(limit) {
            let (k, _) = kv?;
            let Some(dk) = DeliveryKey::from_bytes(&k[1..]) else {
                continue;
            };
            let m = match cache.entry(dk.message_id) {
                std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                std::collections::hash_map::Entry::Vacant(e) => {
                    let Some(m) = self.load(dk.message_id)? else {
                        continue;
                    };
                    e.insert(m)
                }
            };
            // The record decides (an index entry can outlive a requeue a crash interrupted).
            if let Some(d) = m
                .deliveries
                .iter()
                .find(|d| d.key == dk && d.state == DeliveryState::Dead)
            {
                out.push(d.clone());
            }
        }
        Ok(out)
    }

    async fn requeue(&self, key_: &DeliveryKey, actor: &str, now: Timestamp) -> Result<Delivery> {
        let d = {
            let mut g = self.guard();
            let mut txn = self.txn();
            let mut d = txn.delivery(key_)?;
            if d.state != DeliveryState::Dead {
                return Err(StoreError::WrongState {
                    key: key_.to_string(),
                    state: d.state.as_str(),
                    action: "requeue",
                });
            }
            // Nothing left to deliver: queued again, it would only fail again.
            if txn.message(key_.message_id)?.record.payload_purged {
                return Err(StoreError::Purged(key_.message_id.to_string()));
            }
            d.state = DeliveryState::Queued;
            d.queued_at = now;
            d.ready_at = now;
            d.dead_reason = None;
            d.completed_at = None;
            txn.update(d.clone())?;
            txn.reopen(key_.message_id)?;
            txn.event(
                now,
                key_.message_id,
                Some(&key_.recipient),
                EventKind::Requeued,
                format!("by {actor}"),
            )?;
            txn.audit(actor, "requeue", &key_.to_string(), "", now)?;
            txn.apply(&mut g)?;
            d
        };
        self.committer.commit(Vec::new(), None).await?;
        Ok(d)
    }

    async fn drop_delivery(
        &self,
        key_: &DeliveryKey,
        actor: &str,
        reason: &str,
        now: Timestamp,
    ) -> Result<Delivery> {
        let d = {
            let mut g = self.guard();
            let mut txn = self.txn();
            let mut d = txn.delivery(key_)?;
            if matches!(
                d.state,
                DeliveryState::Delivered | DeliveryState::Acknowledged | DeliveryState::Dropped
            ) {
                return Err(StoreError::WrongState {
                    key: key_.to_string(),
                    state: d.state.as_str(),
                    action: "drop",
                });
            }
            d.state = DeliveryState::Dropped;
            d.lease = None;
            d.dead_reason = Some(format!("dropped by {actor}: {reason}"));
            d.completed_at = Some(now);
            txn.update(d.clone())?;
            txn.event(
                now,
                key_.message_id,
                Some(&key_.recipient),
                EventKind::Dropped,
                format!("by {actor}: {reason}"),
            )?;
            txn.complete_if_done(key_.message_id, now)?;
            txn.audit(actor, "drop", &key_.to_string(), reason, now)?;
            txn.apply(&mut g)?;
            // A claim on it ends: its adapter's acknowledgement will find the lease lost.
            g.settle(key_);
            d
        };
        self.committer.commit(Vec::new(), None).await?;
        Ok(d)
    }

    async fn record_status(&self, entry: StatusEntry) -> Result<()> {
        self.db
            .insert(status_key(&entry), encode("status", &entry)?)?;
        self.committer.commit(Vec::new(), None).await
    }

    async fn record_event(
        &self,
        message_id: MessageId,
        recipient: Option<&OrgCode>,
        kind: EventKind,
        detail: &str,
        now: Timestamp,
    ) -> Result<()> {
        {
            let mut g = self.guard();
            self.load_required(message_id)?;
            let mut txn = self.txn();
            txn.event(now, message_id, recipient, kind, detail)?;
            txn.apply(&mut g)?;
        }
        self.committer.commit_within(self.ack_flush_delay()).await
    }

    async fn trace(&self, document_id: &DocumentId) -> Result<DocumentTrace> {
        let messages = self.find_by_document(document_id).await?;
        let mut trace = DocumentTrace::default();
        for m in &messages {
            trace.deliveries.extend(self.deliveries(m.id).await?);
            trace.events.extend(self.events(m.id).await?);
        }
        trace.events.sort_by_key(|e| e.at);
        let prefix = key(keys::STATUS, &[document_id.as_str().as_bytes(), &[0]]);
        for kv in self.db.scan_prefix(&prefix) {
            let (_, v) = kv?;
            trace.statuses.push(decode("status", &v)?);
        }
        // Arrivals follow from the records (an acknowledged delivery of a document), so
        // they are derived, not written; one a store written before kept as an entry is
        // not shown twice.
        let kinds: HashMap<MessageId, PackageKind> =
            messages.iter().map(|m| (m.id, m.kind)).collect();
        for d in &trace.deliveries {
            let acknowledged_at = match (d.state, d.completed_at) {
                (DeliveryState::Acknowledged, Some(at)) => at,
                _ => continue,
            };
            if kinds.get(&d.key.message_id) != Some(&PackageKind::Document) {
                continue;
            }
            let arrival = StatusEntry::arrival(document_id, &d.key.recipient, acknowledged_at);
            if !trace.statuses.contains(&arrival) {
                trace.statuses.push(arrival);
            }
        }
        trace
            .statuses
            .sort_by(|a, b| a.timeline_order().cmp(&b.timeline_order()));
        trace.messages = messages;
        Ok(trace)
    }

    async fn events(&self, id: MessageId) -> Result<Vec<Event>> {
        let stored: Vec<Event> = self
            .db
            .scan_prefix(key(keys::EVENT, &[&id.bytes()]))
            .map(|kv| {
                let (_, v) = kv?;
                decode("event", &v)
            })
            .collect::<Result<_>>()?;
        let Some(m) = self.load(id)? else {
            return Ok(stored);
        };
        // Events that follow from the records are derived, not written: acceptance,
        // routing, the latest claim and the final outcome of each delivery.
        let source = match &m.record.source {
            Source::Adapter { unit, .. } => format!("from the adapter of {unit}"),
            Source::NationalAxis { doc_id } => format!("from the national axis, docId {doc_id}"),
            Source::Operator { actor } => format!("injected by {actor}"),
        };
        let at = m.record.received_at;
        let mut events = vec![Event {
            at,
            message_id: id,
            recipient: None,
            kind: EventKind::Accepted,
            detail: source,
        }];
        for d in &m.deliveries {
            let recipient = Some(d.key.recipient.clone());
            let held = stored
                .iter()
                .any(|e| e.kind == EventKind::Held && e.recipient == recipient);
            if !held {
                events.push(Event {
                    at,
                    message_id: id,
                    recipient: recipient.clone(),
                    kind: EventKind::Routed,
                    detail: format!("queued in {}", d.destination),
                });
            }
            if let Some(claimed) = d.claimed_at {
                events.push(Event {
                    at: claimed,
                    message_id: id,
                    recipient: recipient.clone(),
                    kind: EventKind::Claimed,
                    detail: format!("attempt {}", d.attempts),
                });
            }
            let done = match d.state {
                DeliveryState::Acknowledged => Some((EventKind::Acknowledged, String::new())),
                DeliveryState::Delivered => Some((
                    EventKind::Delivered,
                    d.upstream_doc_id
                        .as_ref()
                        .map(|u| format!("national axis docId {u}"))
                        .unwrap_or_default(),
                )),
                _ => None,
            };
            if let (Some((kind, detail)), Some(at)) = (done, d.completed_at) {
                events.push(Event {
                    at,
                    message_id: id,
                    recipient,
                    kind,
                    detail,
                });
            }
        }
        events.extend(stored);
        events.sort_by_key(|e| e.at);
        Ok(events)
    }

    async fn audit(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        detail: &str,
        now: Timestamp,
    ) -> Result<AuditEntry> {
        let entry = {
            let mut g = self.guard();
            let mut txn = self.txn();
            let entry = txn.audit(actor, action, target, detail, now)?;
            txn.apply(&mut g)?;
            entry
        };
        self.committer.commit(Vec::new(), None).await?;
        Ok(entry)
    }

    async fn audit_log(&self, from: u64, limit: usize) -> Result<Vec<AuditEntry>> {
        let head: Option<AuditHead> =
            self.get("audit head", &key(keys::SYSTEM, &[b"audit_head"]))?;
        // Up to the head: an entry past it is from an append a crash interrupted.
        let end = head.map_or(0, |h| h.seq).saturating_add(1);
        self.db
            .range(
                key(keys::AUDIT, &[&from.to_be_bytes()])..key(keys::AUDIT, &[&end.to_be_bytes()]),
            )
            .take(limit)
            .map(|kv| {
                let (_, v) = kv?;
                decode("audit entry", &v)
            })
            .collect()
    }

    async fn verify_audit(&self) -> Result<AuditReport> {
        let mut prev = Sha256Digest([0; 32]);
        let mut before_last = prev;
        let mut entries = 0u64;
        for kv in self.db.scan_prefix([keys::AUDIT]) {
            let (_, v) = kv?;
            entries += 1;
            before_last = prev;
            let ok = match decode::<AuditEntry>("audit entry", &v) {
                Ok(e) => {
                    let ok = e.seq == entries && e.prev_hash == prev && audit_hash(&e) == e.hash;
                    prev = e.hash;
                    ok
                }
                Err(_) => false,
            };
            if !ok {
                return Ok(AuditReport {
                    entries,
                    first_bad: Some(entries),
                });
            }
        }
        let head: Option<AuditHead> =
            self.get("audit head", &key(keys::SYSTEM, &[b"audit_head"]))?;
        let head_ok = match head {
            Some(h) => h.seq == entries && h.hash == prev,
            None => entries == 0,
        };
        // One entry past the head, chained to it: an append a crash interrupted (see
        // `Txn::audit`). The chain is whole; that entry is not counted.
        let interrupted_append = entries > 0
            && match head {
                Some(h) => h.seq + 1 == entries && h.hash == before_last,
                None => entries == 1,
            };
        if !head_ok && interrupted_append {
            return Ok(AuditReport {
                entries: entries - 1,
                first_bad: None,
            });
        }
        Ok(AuditReport {
            entries,
            first_bad: (!head_ok).then_some(entries + 1),
        })
    }

    async fn queue_depth(&self, destination: &Destination, now: Timestamp) -> Result<QueueDepth> {
        let prefix = key(keys::QUEUE, &[&destination.key(), &[0]]);
        let mut depth = QueueDepth {
            destination: destination.clone(),
            ready: 0,
            waiting: 0,
            claimed: 0,
            oldest: None,
        };
        // Claimed deliveries keep their queue entry (see `Leases`); the scan runs without
        // the lock, over a copy of this queue's claims.
        let held: std::collections::HashSet<DeliveryKey> = self
            .guard()
            .held
            .iter()
            .filter(|(_, h)| h.destination == *destination)
            .map(|(k, _)| k.clone())
            .collect();
        for kv in self.db.scan_prefix(&prefix) {
            let (k, _) = kv?;
            let ready = k
                .get(prefix.len()..prefix.len() + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            if k.get(prefix.len() + 8..)
                .and_then(DeliveryKey::from_bytes)
                .is_some_and(|dk| held.contains(&dk))
            {
                depth.claimed += 1;
                continue;
            }
            if depth.oldest.is_none() {
                depth.oldest = Some(Timestamp(ready));
            }
            if ready <= now.0 {
                depth.ready += 1;
            } else {
                depth.waiting += 1;
            }
        }
        Ok(depth)
    }

    async fn queue_depths(&self, now: Timestamp) -> Result<Vec<QueueDepth>> {
        let mut depths: std::collections::BTreeMap<Destination, QueueDepth> = Default::default();
        let entry = |depths: &mut std::collections::BTreeMap<Destination, QueueDepth>,
                     d: Destination| {
            depths
                .entry(d.clone())
                .or_insert_with(|| QueueDepth {
                    destination: d,
                    ready: 0,
                    waiting: 0,
                    claimed: 0,
                    oldest: None,
                })
                .clone()
        };
        let held: std::collections::HashSet<DeliveryKey> =
            self.guard().held.keys().cloned().collect();
        for kv in self.db.scan_prefix([keys::QUEUE]) {
            let (k, _) = kv?;
            let Some(end) = k.iter().skip(1).position(|&b| b == 0).map(|p| p + 1) else {
                continue;
            };
            let Some(dest) = Destination::from_key(&k[1..end]) else {
                continue;
            };
            let ready = k
                .get(end + 1..end + 9)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            entry(&mut depths, dest.clone());
            if k.get(end + 9..)
                .and_then(DeliveryKey::from_bytes)
                .is_some_and(|dk| held.contains(&dk))
            {
                if let Some(depth) = depths.get_mut(&dest) {
                    depth.claimed += 1;
                }
                continue;
            }
            if let Some(depth) = depths.get_mut(&dest) {
                let ts = Timestamp(ready);
                depth.oldest = Some(depth.oldest.map_or(ts, |o| o.min(ts)));
                if ready <= now.0 {
                    depth.ready += 1;
                } else {
                    depth.waiting += 1;
                }
            }
        }
        Ok(depths.into_values().collect())
    }

    async fn traffic(&self, from: Timestamp, to: Timestamp) -> Result<Vec<UnitTraffic>> {
        let mut units: std::collections::BTreeMap<OrgCode, UnitTraffic> = Default::default();
        let start = key(keys::MESSAGE, &[&MessageId::lowest_at(from).bytes()]);
        let end = key(keys::MESSAGE, &[&MessageId::lowest_at(to).bytes()]);
        for kv in self.db.range(start..end) {
            let (_, v) = kv?;
            let m: StoredMessage = decode("message", &v)?;
            let r = &m.record;
            if r.received_at < from || r.received_at >= to {
                continue;
            }
            let document = r.kind == PackageKind::Document;
            let sender = units
                .entry(r.sender.clone())
                .or_insert_with(|| UnitTraffic::new(r.sender.clone()));
            if document {
                sender.documents_sent += 1;
            } else {
                sender.statuses_sent += 1;
            }
            for to in &r.recipients {
                let t = units
                    .entry(to.clone())
                    .or_insert_with(|| UnitTraffic::new(to.clone()));
                if document {
                    t.documents_received += 1;
                } else {
                    t.statuses_received += 1;
                }
            }
        }
        Ok(units.into_values().collect())
    }

    async fn overdue(&self, today: CalendarDate, limit: usize) -> Result<Vec<OverdueDocument>> {
        let mut out = Vec::new();
        let end = key(keys::DUE, &[&day_bytes(today)]);
        for kv in self.db.range(vec![keys::DUE]..end) {
            if out.len() >= limit {
                break;
            }
            let (k, _) = kv?;
            let Some(id) = k.get(9..).and_then(MessageId::from_bytes) else {
                continue;
            };
            let Some(m) = self.load(id)? else { continue };
            let (Some(doc), Some(due)) = (&m.record.document_id, m.record.summary.due_date) else {
                continue;
            };
            let mut completed = std::collections::HashSet::new();
            let prefix = key(keys::STATUS, &[doc.as_str().as_bytes(), &[0]]);
            for kv in self.db.scan_prefix(&prefix) {
                let (_, v) = kv?;
                let entry: StatusEntry = decode("status", &v)?;
                if entry.code.known() == Some(KnownStatus::Completed) {
                    completed.insert(entry.from);
                }
            }
            let pending: Vec<OrgCode> = m
                .record
                .recipients
                .iter()
                .filter(|r| !completed.contains(*r))
                .cloned()
                .collect();
            if !pending.is_empty() {
                out.push(OverdueDocument {
                    message: m.record.clone(),
                    due_date: due,
                    pending,
                });
            }
        }
        Ok(out)
    }

    async fn stats(&self) -> Result<StoreStats> {
        let c = &self.committer.stats;
        let mut cumulative = 0;
        let mut flush_buckets = Vec::with_capacity(FLUSH_BUCKETS_SECONDS.len());
        for (le, slot) in FLUSH_BUCKETS_SECONDS.iter().zip(&c.flush_buckets) {
            cumulative += slot.load(Ordering::Relaxed);
            flush_buckets.push((*le, cumulative));
        }
        Ok(StoreStats {
            flushes: c.flushes.load(Ordering::Relaxed),
            flush_seconds_sum: c.flush_micros.load(Ordering::Relaxed) as f64 / 1e6,
            flush_buckets,
            payload_syncs: c.payload_segment_syncs.load(Ordering::Relaxed),
            disk_bytes: self.size_on_disk()?,
            dead_letters: self.db.scan_prefix([keys::DEAD]).keys().count() as u64,
        })
    }

    async fn purge(&self, now: Timestamp, retention: Duration) -> Result<PurgeReport> {
        let cutoff = now.minus(retention);
        let mut report = PurgeReport::default();
        let mut segments = BTreeSet::new();
        let end = key(keys::COMPLETED, &[&cutoff.be()]);
        // In chunks, releasing the lock between them: a first pass over months of history
        // must not stop intake. Each chunk removes the index entries it went through, and
        // is finished (made durable, its files deleted) before the next one starts, so a
        // pass cut short leaves nothing behind.
        loop {
            let mut delete_inline = Vec::new();
            let mut delete_blobs = Vec::new();
            let scanned = {
                let mut g = self.guard();
                let mut txn = self.txn();
                // Several messages of this chunk may share a blob: count down in memory (read
                // afresh by each chunk, since others may change them in between).
                let mut refs: HashMap<Sha256Digest, BlobRef> = HashMap::new();
                let mut scanned = 0;
                for kv in self
                    .db
                    .range(vec![keys::COMPLETED]..end.clone())
                    .take(PURGE_CHUNK)
                {
                    scanned += 1;
                    let (k, _) = kv?;
                    txn.batch.remove(k.clone());
                    let Some(id) = MessageId::from_bytes(&k[9..]) else {
                        continue;
                    };
                    let m = match txn.message(id) {
                        Ok(m) => m,
                        // Left by an operation a crash interrupted: nothing to purge.
                        Err(StoreError::NotFound(_)) => continue,
                        // One record that cannot be read must not stop retention for
                        // every later one: it is left as it is, and said.
                        Err(e) => {
                            tracing::warn!(message = %id, error = %e, "a completed message's record cannot be read; its payload is not purged");
                            continue;
                        }
                    };
                    // The record decides: the index entry may be left from a completion a crash
                    // interrupted, or from before a requeue.
                    let completed_long_ago = m.record.completed_at.is_some_and(|at| at <= cutoff);
                    if m.record.payload_purged || !completed_long_ago {
                        continue;
                    }
                    m.record.payload_purged = true;
                    let sha = m.record.sha256;
                    let size = m.record.size;
                    let at = m.payload_at.take();
                    txn.touch(id);
                    if let Some(at) = at {
                        report.bytes += u64::from(at.len);
                        segments.insert(at.segment);
                    } else if let Some(inline) = self.payloads.get(id.bytes())? {
                        report.bytes += inline.len() as u64;
                        delete_inline.push(id);
                    } else {
                        let ref_key = key(keys::BLOB_REF, &[&sha.0]);
                        let current = match refs.get(&sha) {
                            Some(r) => Some(*r),
                            None => self.get::<BlobRef>("blob ref", &ref_key)?,
                        };
                        if let Some(mut r) = current {
                            r.refs = r.refs.saturating_sub(1);
                            refs.insert(sha, r);
                            if r.refs == 0 {
                                txn.batch.remove(ref_key);
                                report.bytes += size;
                                delete_blobs.push(sha);
                            } else {
                                // A release: only after the record stops using the blob.
                                txn.batch.insert_after(ref_key, encode("blob ref", &r)?);
                            }
                        }
                    }
                    txn.event(
                        now,
                        id,
                        None,
                        EventKind::PayloadPurged,
                        format!("retention {} days", retention.as_secs() / 86_400),
                    )?;
                    report.messages += 1;
                }
                txn.apply(&mut g)?;
                scanned
            };
            // The records no longer point at the payloads once this is durable; only then
            // delete them, under the lock, and blobs only if no submission took them up
            // again meanwhile (a new submission of the same bytes recreates the reference
            // under the lock).
            self.committer.commit(Vec::new(), None).await?;
            {
                let _g = self.guard();
                for id in delete_inline {
                    self.payloads.remove(id.bytes())?;
                }
                for sha in delete_blobs {
                    if !self.db.contains_key(key(keys::BLOB_REF, &[&sha.0]))?
                        && self.blobs.remove(&sha)? > 0
                    {
                        report.blob_files += 1;
                    }
                }
            }
            if scanned < PURGE_CHUNK {
                break;
            }
        }
        report.segment_files = self.reclaim_segments(segments).await?;
        Ok(report)
    }

    async fn backup(&self, dir: &Path) -> Result<BackupReport> {
        // Seconds of file work for a large store: the async thread running it hands its
        // other tasks to the runtime meanwhile (where the runtime has more than one).
        let run = || crate::backup::backup(self, dir, Timestamp::now());
        match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
            Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(run),
            _ => run(),
        }
    }

    async fn put_setting(&self, namespace: &str, key_: &str, value: &[u8]) -> Result<()> {
        self.db.insert(setting_key(namespace, key_), value)?;
        self.committer.commit(Vec::new(), None).await
    }

    async fn delete_setting(&self, namespace: &str, key_: &str) -> Result<()> {
        self.db.remove(setting_key(namespace, key_))?;
        self.committer.commit(Vec::new(), None).await
    }

    async fn settings(&self, namespace: &str) -> Result<Vec<(String, Vec<u8>)>> {
        let prefix = key(keys::SETTING, &[namespace.as_bytes(), &[0]]);
        self.db
            .scan_prefix(&prefix)
            .map(|kv| {
                let (k, v) = kv?;
                Ok((
                    String::from_utf8_lossy(&k[prefix.len()..]).into_owned(),
                    v.to_vec(),
                ))
            })
            .collect()
    }
}

fn setting_key(namespace: &str, name: &str) -> Vec<u8> {
    key(
        keys::SETTING,
        &[namespace.as_bytes(), &[0], name.as_bytes()],
    )
}

fn status_key(entry: &StatusEntry) -> Vec<u8> {
    key(
        keys::STATUS,
        &[
            entry.document_id.as_str().as_bytes(),
            &[0],
            &entry.at.be(),
            &entry.message_id.map(MessageId::bytes).unwrap_or([0; 16]),
            entry.code.as_str().as_bytes(),
        ],
    )
}

/// Tests stop an operation after its n-th write, as a crash would (see `crash_prefix`).
#[cfg(test)]
pub(crate) mod crash_point {
    use std::cell::{Cell, RefCell};
    use std::path::{Path, PathBuf};

    thread_local! {
        static CUT: Cell<Option<usize>> = const { Cell::new(None) };
        static DONE: Cell<usize> = const { Cell::new(0) };
        static IMAGE: RefCell<Option<(usize, PathBuf, PathBuf)>> = const { RefCell::new(None) };
    }

    /// From now on, on this thread, fail the write after `writes` more (`None`: never).
    pub(crate) fn arm(writes: Option<usize>) {
        CUT.with(|c| c.set(writes));
        DONE.with(|d| d.set(0));
    }

    /// From now on, on this thread, once `writes` more writes are made: flush the database
    /// and copy the store's files from `store` to `image` (what a crash right then would
    /// leave on disk), and go on. `None` disarms.
    pub(crate) fn arm_image(image: Option<(usize, &Path, &Path)>) {
        IMAGE.with(|i| {
            *i.borrow_mut() = image.map(|(at, from, to)| (at, from.to_owned(), to.to_owned()))
        });
        DONE.with(|d| d.set(0));
    }

    /// Writes made on this thread since [`arm`].
    pub(crate) fn writes() -> usize {
        DONE.with(Cell::get)
    }

    pub(super) fn reached(db: &sled::Db) -> super::Result<()> {
        let done = DONE.with(Cell::get);
        if CUT.with(Cell::get) == Some(done) {
            return Err(super::StoreError::Io(std::io::Error::other(
                "simulated crash",
            )));
        }
        let image = IMAGE.with(|i| i.borrow().clone());
        if let Some((at, from, to)) = image {
            if at == done {
                db.flush()?;
                copy_dir(&from, &to).map_err(super::StoreError::Io)?;
            }
        }
        DONE.with(|d| d.set(done + 1));
        Ok(())
    }

    /// Copies a directory tree (what a crash image of a store is made of).
    pub(crate) fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            let target = to.join(entry.file_name());
            if entry.file_type()?.is_dir() {
                copy_dir(&entry.path(), &target)?;
            } else {
                std::fs::copy(entry.path(), &target)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod encoding_tests {
    use super::*;
    use crate::crash_prefix::{code, document};
    use crate::{Completion, Destination, Route, Source};

    fn message(bytes: &[u8]) -> crate::NewMessage {
        document(7, bytes, None)
    }

    /// Every variant of the enums inside stored values survives the positional encoding
    /// (serde's derived adjacently tagged enums do not, for unit variants).
    #[test]
    fn stored_enums_round_trip_positionally_and_with_names() {
        let destinations = [
            Destination::NationalAxis,
            Destination::Inbox(code("000.00.07.G04")),
        ];
        for d in destinations {
            let back: Destination =
                decode("destination", &encode("destination", &d).expect("encode"))
                    .expect("positional");
            assert_eq!(back, d);
            let named = rmp_serde::to_vec_named(&d).expect("named");
            assert_eq!(
                decode::<Destination>("destination", &named).expect("named"),
                d
            );
            let json = serde_json::to_string(&d).expect("json");
            assert_eq!(serde_json::from_str::<Destination>(&json).expect("json"), d);
        }
        let sources = [
            Source::NationalAxis {
                doc_id: "doc-1".into(),
            },
            Source::Adapter {
                unit: code("000.00.05.G04"),
                certificate: Some("ab".into()),
            },
            Source::Operator {
                actor: "admin".into(),
            },
        ];
        for s in sources {
            let back: Source =
                decode("source", &encode("source", &s).expect("encode")).expect("positional");
            assert_eq!(back, s);
        }
    }

    /// A message to an inbox and to the national axis, from the national axis, through
    /// claims, a retry, a dead letter and a requeue: every stored value read back.
    #[tokio::test]
    async fn a_message_to_the_national_axis_goes_through_every_state() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path(), StoreConfig::default()).expect("open");
        let mut m = message(b"to the axis");
        m.source = Source::NationalAxis {
            doc_id: "axis-doc-9".into(),
        };
        m.routes.push(Route {
            destination: Destination::NationalAxis,
            recipient: code("000.00.00.G01"),
            held: false,
        });
        let id = store.submit(m).await.expect("submit").record().id;
        assert_eq!(
            store.find_by_upstream_id("axis-doc-9").await.expect("find"),
            Some(id)
        );
        let now = Timestamp::now();
        let lease = Duration::from_secs(30);
        let claims = store
            .claim(&Destination::NationalAxis, 10, lease, now)
            .await
            .expect("claim");
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0].delivery.destination, Destination::NationalAxis);
        store
            .nack(&claims[0].token, "busy", now)
            .await
            .expect("nack");
        let later = now.plus(Duration::from_secs(3600));
        let claims = store
            .claim(&Destination::NationalAxis, 10, lease, later)
            .await
            .expect("claim again");
        assert_eq!(claims.len(), 1);
        store
            .fail(&claims[0].token, "refused", later)
            .await
            .expect("fail");
        let dead = store.dead_letters(10).await.expect("dead letters");
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].destination, Destination::NationalAxis);
        store
            .requeue(&dead[0].key, "admin", later)
            .await
            .expect("requeue");
        let deliveries = store.deliveries(id).await.expect("deliveries");
        assert_eq!(deliveries.len(), 2);
        assert!(deliveries.iter().any(
            |d| d.destination == Destination::NationalAxis && d.state == DeliveryState::Queued
        ));
        assert!(!store.events(id).await.expect("events").is_empty());
        let depths = store.queue_depths(later).await.expect("depths");
        assert!(depths
            .iter()
            .any(|q| q.destination == Destination::NationalAxis));
        let record = store.message(id).await.expect("read").expect("record");
        assert_eq!(
            record.source,
            Source::NationalAxis {
                doc_id: "axis-doc-9".into()
            }
        );
    }

    /// Records written by versions that encoded field names are read, claimed and
    /// acknowledged like new ones; new records are positional and smaller.
    #[tokio::test]
    async fn records_written_with_field_names_still_decode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path(), StoreConfig::default()).expect("open");
        let stored = store.submit(message(b"payload")).await.expect("submit");
        let id = stored.record().id;
        let k = key(keys::MESSAGE, &[&id.bytes()]);
        let positional = store.db.get(&k).expect("get").expect("record");
        let m: StoredMessage = decode("message", &positional).expect("decode");
        let named = rmp_serde::to_vec_named(&m).expect("encode with names");
        assert!(
            positional.len() * 3 < named.len() * 2,
            "positional {} bytes against {} with names",
            positional.len(),
            named.len()
        );
        // As an earlier version left it (and not in memory: read from the database).
        store.db.insert(&k, named).expect("insert");
        store.records.forget(&[id]);
        let record = store.message(id).await.expect("read").expect("record");
        assert_eq!(record.id, id);
        assert_eq!(record.sender, code("000.00.05.G04"));
        let claims = store
            .claim(
                &Destination::Inbox(code("000.00.07.G04")),
                10,
                Duration::from_secs(30),
                Timestamp::now(),
            )
            .await
            .expect("claim");
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0].message.id, id);
        store
            .ack(&claims[0].token, Completion::Acknowledged, Timestamp::now())
            .await
            .expect("ack");
        let deliveries = store.deliveries(id).await.expect("deliveries");
        assert_eq!(deliveries[0].state, DeliveryState::Acknowledged);
    }
}

#[cfg(test)]
mod log_segment_tests {
    use super::*;
    use crate::crash_prefix::document;

    fn recorded_segment_size(dir: &Path) -> String {
        let conf = fs::read(dir.join("db").join("conf")).expect("sled's conf");
        String::from_utf8_lossy(&conf)
            .lines()
            .find_map(|l| l.strip_prefix("segment_size: ").map(str::to_owned))
            .expect("segment_size line")
    }

    /// New stores use the larger segments, and record them where a damaged sled conf
    /// cannot take them away.
    #[tokio::test]
    async fn a_new_store_uses_large_log_segments_and_records_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path(), StoreConfig::default()).expect("open");
        drop(store);
        assert_eq!(
            recorded_segment_size(dir.path()),
            LOG_SEGMENT_BYTES.to_string()
        );
        let meta = read_meta(dir.path()).expect("meta").expect("present");
        assert_eq!(meta.log_segment_bytes, LOG_SEGMENT_BYTES);
        // sled's conf lost (sled writes it without an fsync; stores created before this
        // version did not sync it either): the store still opens with its own size.
        fs::remove_file(dir.path().join("db").join("conf")).expect("remove conf");
        let store = SledStore::open(dir.path(), StoreConfig::default()).expect("reopen");
        drop(store);
        assert_eq!(
            recorded_segment_size(dir.path()),
            LOG_SEGMENT_BYTES.to_string()
        );
    }

    /// A store created before the segment size was recorded (sled's default, 512 KiB, and
    /// metadata without the field) keeps opening, and keeps its data and its size; a
    /// backup and restore gives it the current size.
    #[tokio::test]
    async fn a_store_created_with_sleds_default_segments_still_opens() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db_path = dir.path().join("db");
        {
            let db = sled::Config::new().path(&db_path).open().expect("sled");
            db.insert(
                keys::key(keys::SYSTEM, &[b"format"]),
                &FORMAT.to_be_bytes()[..],
            )
            .expect("insert");
            db.flush().expect("flush");
        }
        fs::write(
            dir.path().join(META_FILE),
            format!(
                r#"{{"format":{FORMAT},"created_at":{}}}"#,
                serde_json::to_string(&Timestamp::now()).expect("json")
            ),
        )
        .expect("legacy metadata");
        assert_eq!(recorded_segment_size(dir.path()), "524288");
        // The premise: sled refuses the database with any other segment size.
        assert!(sled_config(&db_path, LOG_SEGMENT_BYTES, 1 << 20)
            .open()
            .is_err());

        let store = SledStore::open(dir.path(), StoreConfig::default()).expect("open legacy");
        let id = store
            .submit(document(1, b"kept across versions", None))
            .await
            .expect("submit")
            .record()
            .id;
        drop(store);
        let store = SledStore::open(dir.path(), StoreConfig::default()).expect("reopen");
        let payload = store.payload(id).await.expect("payload");
        assert_eq!(
            &payload.read_all().expect("read")[..],
            b"kept across versions"
        );
        // A backup and a restore move it to the current segment size, data intact.
        let backup = tempfile::tempdir().expect("backup dir");
        store.backup(backup.path()).await.expect("backup");
        drop(store);
        assert_eq!(recorded_segment_size(dir.path()), "524288");
        let restored = tempfile::tempdir().expect("restore dir");
        SledStore::restore(backup.path(), restored.path()).expect("restore");
        assert_eq!(
            recorded_segment_size(restored.path()),
            LOG_SEGMENT_BYTES.to_string()
        );
        let store = SledStore::open(restored.path(), StoreConfig::default()).expect("open");
        let payload = store.payload(id).await.expect("payload");
        assert_eq!(
            &payload.read_all().expect("read")[..],
            b"kept across versions"
        );
    }
}

#[cfg(test)]
mod record_format_tests {
    use super::*;
    use truc_edxml::StatusCode;

    /// `StatusEntry` and `Summary` as they were stored before `reported_at` existed
    /// (positional MessagePack: the same fields in the same order, one fewer).
    #[derive(Serialize)]
    struct StatusEntryBefore {
        document_id: DocumentId,
        code: StatusCode,
        from: OrgCode,
        at: Timestamp,
        message_id: Option<MessageId>,
        description: String,
    }

    #[derive(Serialize)]
    struct SummaryBefore {
        subject: String,
        due_date: Option<truc_edxml::CalendarDate>,
        priority: Option<u8>,
        status_code: Option<StatusCode>,
        answers: Option<DocumentId>,
    }

    /// Stores written by earlier releases keep their timelines readable.
    #[test]
    fn records_written_before_reported_times_still_decode() {
        let before = StatusEntryBefore {
            document_id: DocumentId::new("000.00.05.G04,2026/11/21,42/TEST"),
            code: StatusCode::new("03"),
            from: OrgCode::parse("000.00.07.G04").expect("code"),
            at: Timestamp(1_796_605_200_000),
            message_id: None,
            description: "accepted".into(),
        };
        let entry: StatusEntry =
            decode("status", &encode("status", &before).expect("encode")).expect("decode");
        assert_eq!(entry.code.as_str(), "03");
        assert_eq!(entry.at, before.at);
        assert_eq!(entry.description, "accepted");
        assert_eq!(entry.reported_at, None);
        assert_eq!(
            entry.timeline_order().0,
            before.at.0 / 1000,
            "placed at its arrival"
        );

        let summary: Summary = decode(
            "summary",
            &encode(
                "summary",
                &SummaryBefore {
                    subject: String::new(),
                    due_date: None,
                    priority: None,
                    status_code: Some(StatusCode::new("06")),
                    answers: Some(before.document_id.clone()),
                },
            )
            .expect("encode"),
        )
        .expect("decode");
        assert_eq!(summary.status_code, Some(StatusCode::new("06")));
        assert_eq!(summary.reported_at, None);
    }
}

#[cfg(test)]
mod payload_tests {
    use super::*;
    use crate::crash_prefix::{document, inbox};
    use crate::Completion;

    /// A delivery that loaded its record just before the payload's segment was compacted
    /// still reads the payload: the read follows the record to the copy.
    #[tokio::test]
    async fn a_read_racing_a_compaction_follows_the_record_to_the_copy() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = StoreConfig {
            payload_segment_bytes: 16 * 1024,
            ..StoreConfig::default()
        };
        let store = SledStore::open(dir.path(), config).expect("open");
        let mut ids = Vec::new();
        for n in 0..40u32 {
            let bytes = vec![n as u8; 1000];
            let r = store
                .submit(document(n, &bytes, None))
                .await
                .expect("submit");
            ids.push(r.record().id);
        }
        let keep = ids[0];
        let before = store.load_required(keep).expect("load");
        let now = Timestamp::now();
        let lease = Duration::from_secs(30);
        for c in store.claim(&inbox(), 100, lease, now).await.expect("claim") {
            if c.message.id == keep {
                store
                    .release(&c.token, "kept for the test", now)
                    .await
                    .expect("release");
            } else {
                store
                    .ack(&c.token, Completion::Acknowledged, now)
                    .await
                    .expect("ack");
            }
        }
        let later = now.plus(Duration::from_secs(10));
        let report = store
            .purge(later, Duration::from_secs(1))
            .await
            .expect("purge");
        assert!(report.segment_files >= 1, "{report:?}");
        let after = store.load_required(keep).expect("load");
        assert_ne!(before.payload_at, after.payload_at, "premise: copied");
        assert!(
            matches!(
                store.payload_of_stored(&before),
                Err(StoreError::NotFound(_))
            ),
            "premise: the segment the old record points into is gone"
        );
        let bytes = store
            .read_payload_from(&before)
            .expect("read")
            .read_all()
            .expect("bytes");
        assert_eq!(bytes.as_ref(), &[0u8; 1000][..]);
    }
}

#[cfg(test)]
mod write_count_tests {
    use super::*;
    use crate::crash_prefix::{document, inbox, records_in_memory};
    use crate::Completion;

    /// What a package costs the database, counted so that a change adding a write per
    /// package shows: its submission writes the document index, its queue entry and its
    /// record (and the first submission after a flush the applied position); a claim writes
    /// nothing; the acknowledgement writes the completion index and the record and removes
    /// the queue entry (the arrival in the document's timeline is derived, not written).
    #[tokio::test]
    async fn a_package_costs_six_writes_of_the_database() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = SledStore::open(dir.path(), records_in_memory()).expect("open");
        crash_point::arm(None);
        store
            .submit(document(1, b"first", None))
            .await
            .expect("submit");
        // The document index, the due-date index, the queue entry, the applied position,
        // the record.
        assert_eq!(crash_point::writes(), 5, "the first submission");
        let mut m = document(2, b"second", None);
        m.summary.due_date = None;
        crash_point::arm(None);
        let id = store.submit(m).await.expect("submit").record().id;
        assert_eq!(crash_point::writes(), 3, "a submission");
        crash_point::arm(None);
        let claims = store
            .claim(&inbox(), 10, Duration::from_secs(30), Timestamp::now())
            .await
            .expect("claim");
        assert_eq!(crash_point::writes(), 0, "claims");
        let claim = claims
            .into_iter()
            .find(|c| c.message.id == id)
            .expect("claimed");
        crash_point::arm(None);
        store
            .ack(&claim.token, Completion::Acknowledged, Timestamp::now())
            .await
            .expect("ack");
        assert_eq!(crash_point::writes(), 3, "an acknowledgement");
    }
}
