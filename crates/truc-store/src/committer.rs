//! Group commit: many writers, one fsync.
//!
//! A writer applies its changes to the database in memory, then asks the committer to make
//! them durable and waits. The committer thread takes every request waiting at that moment,
//! makes the touched blob directories durable, flushes the database once (sled writes its
//! log and fsyncs), and answers them all. A request is answered only by a flush that started
//! after it was made, so its writes are covered. Under load, one fsync serves dozens of
//! submissions; alone, a submission waits for exactly one.
//!
//! A request may also say it can wait a little ([`Committer::commit_within`]): an adapter's
//! acknowledgement, whose durability nobody is waiting to hear about. It is answered by the
//! next flush that anything else asks for, or by its own once its delay has passed. At a
//! moderate rate this halves the flushes per package (each one costs sled's I/O threads,
//! the committer and an `fdatasync`), without delaying any submission.
//!
//! sled writes an item larger than a quarter of a log segment (a large value, or a leaf
//! holding several) to a file of its own in `db/blobs`, and never fsyncs it: only the log
//! entry pointing at it. A power loss could then lose data sled believes stored, including
//! older values carried into a rewritten leaf. So after each flush the committer fsyncs the
//! files that appeared in `db/blobs` since the last one (and the directory), before it
//! answers anyone.
//!
//! sled's flush ends with `sync_file_range`, which waits until the log's data has reached
//! the disk, but neither flushes the disk's volatile write cache nor writes the file's
//! metadata: the written blocks may sit in the drive's cache, and when a flush extends the
//! log file, its new length and block mapping stay in memory until the kernel writes the
//! inode back. A power loss could then lose acknowledged entries. So after each flush the
//! committer `fdatasync`s the log file (a cache flush, plus the inode when the file grew)
//! before it answers.

use std::collections::{BTreeSet, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::batch_queue::{Announced, BatchQueue};
use crate::blob::sync_dir;
use crate::error::StoreError;

/// A failure, shared by every request of a batch.
#[derive(Debug, Clone)]
struct Failure {
    full: bool,
    message: String,
}

impl From<Failure> for StoreError {
    fn from(f: Failure) -> Self {
        let e = std::io::Error::other(f.message);
        if f.full {
            StoreError::Full(e)
        } else {
            StoreError::Io(e)
        }
    }
}

/// A request for a flush.
pub(crate) struct Request {
    dirs: Vec<PathBuf>,
    /// `None` for [`Committer::flush_soon`]: nobody waits.
    done: Option<oneshot::Sender<Result<(), Failure>>>,
}

/// Counters of the committer, for benchmarks and metrics.
#[derive(Debug, Default)]
pub struct CommitStats {
    /// Flushes performed.
    pub flushes: AtomicU64,
    /// Requests answered.
    pub requests: AtomicU64,
    /// Total flush time, in microseconds.
    pub flush_micros: AtomicU64,
    /// sled's own blob files made durable after a flush (see the module documentation).
    pub sled_blobs_synced: AtomicU64,
    /// Payload segment files `fdatasync`ed (by the payload syncer, before the records
    /// pointing into them are written; see `payload_log`).
    pub payload_segment_syncs: AtomicU64,
    /// `fdatasync`s of the log file (one after every successful flush).
    pub log_syncs: AtomicU64,
    /// Of those, the ones after a flush that had extended the file.
    pub log_length_syncs: AtomicU64,
    /// The log file's length when it was last made durable.
    pub log_synced_length: AtomicU64,
    /// Flushes by duration: `flush_buckets[i]` counts flushes that took at most
    /// `FLUSH_BUCKETS_SECONDS[i]` (not cumulative); the last slot counts slower ones.
    pub flush_buckets: [AtomicU64; FLUSH_BUCKETS_SECONDS.len() + 1],
}

/// Upper bounds of the flush-latency histogram, in seconds: from a fast NVMe fsync to a
/// disk in trouble.
pub const FLUSH_BUCKETS_SECONDS: [f64; 12] = [
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

impl CommitStats {
    fn observe(&self, elapsed: std::time::Duration) {
        let secs = elapsed.as_secs_f64();
        let slot = FLUSH_BUCKETS_SECONDS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(FLUSH_BUCKETS_SECONDS.len());
        self.flush_buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.flush_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        self.flushes.fetch_add(1, Ordering::Relaxed);
    }
}

pub(crate) struct Committer {
    /// Requests, each due when the flush answering it must start at the latest, and the
    /// writers between the start of their change and their commit request.
    queue: Arc<BatchQueue<Request>>,
    thread: Option<JoinHandle<()>>,
    pub(crate) stats: Arc<CommitStats>,
    /// A [`Self::flush_soon`] request is waiting for a flush that has not started yet.
    flush_requested: Arc<AtomicBool>,
    /// [`Self::flush_soon`] calls since the last flush began.
    unflushed: Arc<AtomicUsize>,
    /// The last flush failed.
    failing: Arc<AtomicBool>,
}

/// A change in preparation: while any exist, the committer lets a batch wait a moment for
/// them, so one flush serves them too. Dropped when the change asks to be committed (or
/// gives up).
pub(crate) type Writing = Announced<Request>;

/// The longest a batch waits for writers still preparing their change.
const GATHER: Duration = Duration::from_micros(400);

/// [`Committer::flush_soon`] calls after which the flush is due at once.
const FLUSH_AFTER: usize = 512;

impl Committer {
    /// Starts the committer of `db`, whose directory is `db_dir`.
    pub(crate) fn start(db: sled::Db, db_dir: &Path) -> Result<Self, StoreError> {
        let queue = BatchQueue::new();
        let stats = Arc::new(CommitStats::default());
        let flush_requested = Arc::new(AtomicBool::new(false));
        let unflushed = Arc::new(AtomicUsize::new(0));
        let failing = Arc::new(AtomicBool::new(false));
        let flags = Flags {
            flush_requested: flush_requested.clone(),
            unflushed: unflushed.clone(),
            failing: failing.clone(),
        };
        let thread_stats = stats.clone();
        let requests = queue.clone();
        let mut sled_blobs = SledBlobs::new(db_dir.join("blobs"));
        // Files left by a previous process may never have been synced either.
        sled_blobs.sync_new().map_err(StoreError::from_io)?;
        let log = LogFile::open(&db_dir.join("db")).map_err(StoreError::from_io)?;
        let thread = std::thread::Builder::new()
            .name("truc-store-commit".into())
            .spawn(move || run(db, sled_blobs, log, &requests, &thread_stats, &flags))
            .map_err(StoreError::Io)?;
        Ok(Committer {
            queue,
            thread: Some(thread),
            stats,
            flush_requested,
            unflushed,
            failing,
        })
    }

    /// Asks for a flush within `delay` without waiting for it: for changes already durable
    /// elsewhere (a submission in the payload log), which the database should hold on disk
    /// soon, so that a restart has little to read again and sled holds little unflushed in
    /// memory. Many calls before the flush starts send one request, and one more, due at
    /// once, at the [`FLUSH_AFTER`]th.
    pub(crate) fn flush_soon(&self, delay: Duration) {
        let now = Instant::now();
        let due = if self.unflushed.fetch_add(1, Ordering::SeqCst) + 1 == FLUSH_AFTER {
            self.flush_requested.store(true, Ordering::SeqCst);
            now
        } else if self.flush_requested.swap(true, Ordering::SeqCst) {
            return;
        } else {
            now + delay
        };
        let request = Request {
            dirs: Vec::new(),
            done: None,
        };
        if self.queue.push(request, due, None).is_err() {
            self.flush_requested.store(false, Ordering::SeqCst);
        }
    }

    /// Whether the last flush failed (the database cannot write): changes should then wait
    /// for a flush of their own, to hear whether it works again.
    pub(crate) fn failing(&self) -> bool {
        self.failing.load(Ordering::Acquire)
    }

    /// Announces a change about to be made (call before taking the store's lock).
    pub(crate) fn writing(&self) -> Writing {
        self.queue.announce()
    }

    /// Waits until everything written before this call (and the renames in `dirs`) is on
    /// disk.
    pub(crate) async fn commit(
        &self,
        dirs: Vec<PathBuf>,
        writing: Option<Writing>,
    ) -> Result<(), StoreError> {
        self.request(dirs, writing, Duration::ZERO).await
    }

    /// Like [`Self::commit`], but the flush may start up to `delay` later, so that it is
    /// shared with whatever else asks for one meanwhile. Such a change is not announced
    /// with [`Self::writing`]: no flush need wait for it.
    pub(crate) async fn commit_within(&self, delay: Duration) -> Result<(), StoreError> {
        self.request(Vec::new(), None, delay).await
    }

    async fn request(
        &self,
        dirs: Vec<PathBuf>,
        writing: Option<Writing>,
        delay: Duration,
    ) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        let due = Instant::now() + delay;
        // No longer "preparing" once its request is queued: the committer need not wait for
        // this writer.
        self.queue
            .push(
                Request {
                    dirs,
                    done: Some(done),
                },
                due,
                writing,
            )
            .map_err(|_| StoreError::Closed)?;
        match wait.await {
            Ok(result) => result.map_err(StoreError::from),
            Err(_) => Err(StoreError::Closed),
        }
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.queue.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What the committer thread shares with the [`Committer`].
struct Flags {
    flush_requested: Arc<AtomicBool>,
    unflushed: Arc<AtomicUsize>,
    failing: Arc<AtomicBool>,
}

fn run(
    db: sled::Db,
    mut sled_blobs: SledBlobs,
    mut log: LogFile,
    requests: &BatchQueue<Request>,
    stats: &CommitStats,
    flags: &Flags,
) {
    // Should this thread stop (a panic in sled), writers hear it rather than wait forever.
    let _closing = requests.closed_on_exit();
    // Requests that may wait: until the first of them is due, or one that may not arrives.
    // Then, alone or once everyone has asked, flush at once; otherwise give the writers
    // still preparing a change a moment to join this flush.
    while let Some(batch) = requests.next_batch(GATHER) {
        // Before the flush starts: a change made before a `flush_soon` that finds the flag
        // still set is covered by this flush.
        flags.flush_requested.swap(false, Ordering::SeqCst);
        flags.unflushed.store(0, Ordering::SeqCst);
        let dirs: BTreeSet<PathBuf> = batch.iter().flat_map(|r| r.dirs.iter().cloned()).collect();
        let started = std::time::Instant::now();
        // sled's blob files are listed before the flush: every one the flush covers exists
        // by then (the writers of this batch made theirs before asking), and is complete
        // once the flush returns (sled writes a blob file before its log entry can be
        // written). Newer ones are synced by the next commit.
        let result = sled_blobs
            .list_new()
            .map_err(|e| failure(StoreError::from_io(e)))
            .and_then(|listed| flush(&db, &dirs).map(|()| listed))
            .and_then(|listed| {
                let synced = sled_blobs
                    .sync(listed)
                    .map_err(|e| failure(StoreError::from_io(e)))?;
                stats
                    .sled_blobs_synced
                    .fetch_add(synced as u64, Ordering::Relaxed);
                let synced = log.sync().map_err(|e| failure(StoreError::from_io(e)))?;
                stats.log_syncs.fetch_add(1, Ordering::Relaxed);
                if synced.grew {
                    stats.log_length_syncs.fetch_add(1, Ordering::Relaxed);
                }
                stats
                    .log_synced_length
                    .store(synced.length, Ordering::Relaxed);
                Ok(())
            });
        stats.observe(started.elapsed());
        stats
            .requests
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        if let Err(f) = &result {
            tracing::error!(error = %f.message, "store flush failed; submissions in this batch are refused");
        }
        flags.failing.store(result.is_err(), Ordering::Release);
        for request in batch {
            if let Some(done) = request.done {
                let _ = done.send(result.clone());
            }
        }
    }
}

fn flush(db: &sled::Db, dirs: &BTreeSet<PathBuf>) -> Result<(), Failure> {
    for dir in dirs {
        sync_dir(dir).map_err(failure)?;
    }
    db.flush().map_err(|e| failure(StoreError::from(e)))?;
    Ok(())
}

fn failure(e: StoreError) -> Failure {
    match e {
        StoreError::Full(io) => Failure {
            full: true,
            message: io.to_string(),
        },
        StoreError::Io(io) => Failure {
            full: false,
            message: io.to_string(),
        },
        other => Failure {
            full: false,
            message: other.to_string(),
        },
    }
}

/// sled's log file, and the length it was last made durable at.
struct LogFile {
    file: std::fs::File,
    synced: Option<u64>,
}

/// What one [`LogFile::sync`] made durable.
struct LogSynced {
    length: u64,
    /// The length differs from the previous sync (or this is the first one).
    grew: bool,
}

impl LogFile {
    fn open(path: &Path) -> std::io::Result<Self> {
        Ok(LogFile {
            file: std::fs::File::open(path)?,
            synced: None,
        })
    }

    /// `fdatasync`s the log: the disk's write cache is flushed, and the file's length with
    /// it if it changed.
    fn sync(&mut self) -> std::io::Result<LogSynced> {
        let length = self.file.metadata()?.len();
        self.file.sync_data()?;
        let grew = self.synced != Some(length);
        self.synced = Some(length);
        Ok(LogSynced { length, grew })
    }
}

/// sled's blob files, and which of them are known to be durable.
struct SledBlobs {
    dir: PathBuf,
    synced: HashSet<OsString>,
}

impl SledBlobs {
    fn new(dir: PathBuf) -> Self {
        SledBlobs {
            dir,
            synced: HashSet::new(),
        }
    }

    /// Files of the directory not synced yet. Forgets files sled has removed. A listing
    /// costs microseconds, so it is read at every commit.
    fn list_new(&mut self) -> std::io::Result<Vec<OsString>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut still_there = HashSet::with_capacity(self.synced.len());
        let mut new = Vec::new();
        for entry in entries {
            let name = entry?.file_name();
            if self.synced.contains(&name) {
                still_there.insert(name);
            } else {
                new.push(name);
            }
        }
        self.synced = still_there;
        Ok(new)
    }

    /// Fsyncs `names` (from [`Self::list_new`]), then the directory; returns how many.
    fn sync(&mut self, names: Vec<OsString>) -> std::io::Result<usize> {
        let mut synced = 0;
        for name in names {
            match std::fs::File::open(self.dir.join(&name)) {
                Ok(f) => f.sync_all()?,
                // Removed by sled since the listing: nothing to keep.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
            self.synced.insert(name);
            synced += 1;
        }
        if synced > 0 {
            std::fs::File::open(&self.dir)?.sync_all()?;
        }
        Ok(synced)
    }

    /// Lists and syncs at once: for files a previous process left, when nothing is being
    /// written.
    fn sync_new(&mut self) -> std::io::Result<usize> {
        let names = self.list_new()?;
        self.sync(names)
    }
}
