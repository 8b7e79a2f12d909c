//! The next payload segment, made ahead of time: a file of the segment's full size, written
//! with zeros and synced, waiting under a name no segment has until the current segment is
//! sealed (full, or, if it grew as it was written, as soon as the spare is ready). None is
//! made while each sync of the current segment serves many writes (see
//! `BUSY_WRITES_PER_SYNC`).
//!
//! Why: a submission is acknowledged on an `fdatasync` of the segment its entries were
//! appended to. After an append that grows the file, that `fdatasync` must also make the
//! new size durable (on ext4, a journal commit, with a cache flush of its own); over blocks
//! that are written already, it writes the data and nothing else. On this project's
//! machine an 8 KiB write + `fdatasync` is 1.6–2.1 times as fast inside a zeroed file as at
//! the end of a growing one (the store bench's `sync-kinds`), and one submitter's
//! acknowledgements 20–40 % faster (docs/benchmarks.md). PostgreSQL zeroes its WAL
//! segments for the same reason.
//!
//! The price: a segment's bytes are written twice (zeros, off the submissions' path, then
//! entries). On copy-on-write file systems (ZFS, btrfs) an overwrite allocates new blocks
//! anyway, so the zeros buy nothing there: turn it off
//! (`StoreConfig::prepare_payload_segments`). A spare is only made while the disk keeps the
//! store's free-space reserve besides, so it never takes the last of the space; without one
//! a new segment simply grows as it is written.
//!
//! Crash safety: the zeros are written to a temporary name, synced, then renamed, so a file
//! under the spare's name always has its full size. Taking it renames it to the segment's
//! name; the payload log syncs the directory before anything in it is acknowledged. (If a
//! crash loses that rename, the spare may hold entries written to it meanwhile, none of
//! them acknowledged; the segment it becomes next has a salt of its own, so they are
//! never read as its entries.) A segment made from a spare is cut to the end of its
//! entries when it is sealed or the log closed, and, after a crash, when the log is next
//! opened (see `PayloadLog::trim_unused_tails`).

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

/// The spare's name: never a segment's (see `segment_number`).
const SPARE: &str = "next-segment.zeroed";
/// Where it is written before it is whole.
const SPARE_WRITING: &str = "next-segment.zeroing";
/// Zeros are written in pieces of this size.
const PIECE: usize = 1 << 20;
/// And synced every so many bytes, so that the disk's queue never holds a whole segment of
/// them in front of a submission's `fdatasync`.
const SYNC_EVERY: u64 = 8 << 20;

/// Makes spare segments on a thread of its own, one at a time.
pub(super) struct SpareSegments {
    dir: PathBuf,
    /// A whole spare is under [`SPARE`].
    ready: Arc<AtomicBool>,
    /// Requests the thread has dealt with (made a spare, or found no room or one ready).
    #[cfg_attr(not(test), allow(dead_code))]
    handled: Arc<AtomicUsize>,
    /// Requests made.
    requested: AtomicUsize,
    /// The log is closing: stop writing zeros.
    stop: Arc<AtomicBool>,
    tx: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl SpareSegments {
    /// Starts making spares of `bytes` bytes in `dir`, as long as the disk keeps `keep_free`
    /// bytes free besides. A whole spare left by an earlier process is used.
    pub(super) fn start(dir: &Path, bytes: u64, keep_free: u64) -> std::io::Result<Self> {
        remove_if_present(&dir.join(SPARE_WRITING))?;
        let spare = dir.join(SPARE);
        let ready = match fs::metadata(&spare) {
            Ok(m) if m.len() == bytes => true,
            // Made for another segment size.
            Ok(_) => {
                remove_if_present(&spare)?;
                false
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(e),
        };
        let ready = Arc::new(AtomicBool::new(ready));
        let stop = Arc::new(AtomicBool::new(false));
        let handled = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel::<()>();
        let thread = {
            let (dir, ready, stop) = (dir.to_owned(), ready.clone(), stop.clone());
            let handled = handled.clone();
            std::thread::Builder::new()
                .name("truc-store-spare-segment".into())
                .spawn(move || {
                    while rx.recv().is_ok() {
                        if !ready.load(Ordering::Acquire) && !stop.load(Ordering::Acquire) {
                            match make_spare(&dir, bytes, keep_free, &stop) {
                                Ok(true) => ready.store(true, Ordering::Release),
                                Ok(false) => {}
                                Err(e) => {
                                    tracing::warn!(error = %e, "could not make the next payload segment ahead of time; it will grow as it is written");
                                }
                            }
                        }
                        handled.fetch_add(1, Ordering::AcqRel);
                    }
                })?
        };
        Ok(SpareSegments {
            dir: dir.to_owned(),
            ready,
            handled,
            requested: AtomicUsize::new(0),
            stop,
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Asks for a spare, if none is ready or being made (the log asks once its current
    /// segment holds some entries, so that a store opened for a moment writes none).
    pub(super) fn request(&self) {
        self.requested.fetch_add(1, Ordering::AcqRel);
        if let Some(tx) = &self.tx {
            let _ = tx.send(());
        }
    }

    /// Moves the spare to `to` (a segment's path, which must not exist) and opens it, if a
    /// spare is ready. The caller syncs the directory before relying on the new name.
    pub(super) fn take(&self, to: &Path) -> Option<File> {
        if !self.ready.swap(false, Ordering::AcqRel) {
            return None;
        }
        if to.exists() {
            // Not ours to replace; the spare stays for the next segment.
            self.ready.store(true, Ordering::Release);
            return None;
        }
        let taken = fs::rename(self.dir.join(SPARE), to)
            .and_then(|()| OpenOptions::new().read(true).write(true).open(to));
        match taken {
            Ok(file) => Some(file),
            Err(e) => {
                tracing::warn!(error = %e, "could not take the payload segment made ahead of time; the new one grows as it is written");
                None
            }
        }
    }

    /// Deletes the spare, if one is ready: the disk is short of space, and the next segment
    /// can grow as it is written instead.
    pub(super) fn release(&self) {
        if self.ready.swap(false, Ordering::AcqRel) {
            match remove_if_present(&self.dir.join(SPARE)) {
                Ok(()) => tracing::info!(
                    "deleted the payload segment made ahead of time: the disk is short of space"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, "could not delete the payload segment made ahead of time")
                }
            }
        }
    }

    /// Whether a spare is ready.
    pub(super) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// How many requests were made, and how many the thread has dealt with.
    #[cfg(test)]
    pub(super) fn requests(&self) -> (usize, usize) {
        (
            self.requested.load(Ordering::Acquire),
            self.handled.load(Ordering::Acquire),
        )
    }
}

impl Drop for SpareSegments {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Writes a spare: zeros under [`SPARE_WRITING`], synced, renamed to [`SPARE`]. `false` if
/// the disk has no room for it besides `keep_free`, or the log is closing.
fn make_spare(dir: &Path, bytes: u64, keep_free: u64, stop: &AtomicBool) -> std::io::Result<bool> {
    // Room for the rest of the spare and one more segment, besides the reserve: checked
    // before each stretch of zeros, as other writes take space meanwhile.
    let room = |left: u64| -> std::io::Result<bool> {
        let available = fs2::available_space(dir)?;
        let room = available >= keep_free.saturating_add(left).saturating_add(bytes);
        if !room {
            tracing::debug!(
                available,
                "no room to make the next payload segment ahead of time"
            );
        }
        Ok(room)
    };
    if !room(bytes)? {
        return Ok(false);
    }
    let writing = dir.join(SPARE_WRITING);
    let written = write_zeros(&writing, bytes, stop, room);
    match written {
        Ok(true) => {
            fs::rename(&writing, dir.join(SPARE))?;
            Ok(true)
        }
        Ok(false) => {
            remove_if_present(&writing)?;
            Ok(false)
        }
        Err(e) => {
            let _ = remove_if_present(&writing);
            Err(e)
        }
    }
}

/// Writes `bytes` zeros to a new file at `path`; `false` if `stop` is set or `room` (asked
/// with the bytes left, before each stretch synced) says no.
fn write_zeros(
    path: &Path,
    bytes: u64,
    stop: &AtomicBool,
    room: impl Fn(u64) -> std::io::Result<bool>,
) -> std::io::Result<bool> {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)?;
    let zeros = vec![0u8; PIECE];
    let mut at = 0u64;
    let mut synced = 0u64;
    while at < bytes {
        if stop.load(Ordering::Acquire) {
            return Ok(false);
        }
        let n = usize::try_from(bytes - at).map_or(PIECE, |rest| rest.min(PIECE));
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
        if at - synced >= SYNC_EVERY {
            file.sync_data()?;
            synced = at;
            if !room(bytes - at)? {
                return Ok(false);
            }
        }
    }
    file.sync_data()?;
    Ok(true)
}

fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
