//! Small payloads in append-only segment files beside the database.
//!
//! sled 0.34 rebuilds its page table at every open by reading its log back to its last
//! snapshot, and it rewrites a leaf with all its values whenever it consolidates one. Held
//! in sled, an 8 KiB payload cost 18 KB of log, and a restart with a million of them queued
//! read 17 GB. Here a payload is written once, at the end of the current segment file
//! (`payloads/<16 hex>.seg`), and the message record holds where: segment, offset, length.
//! The database keeps only records, a few hundred bytes each.
//!
//! Durability: a writer appends, then waits for the [`PayloadSyncer`] (a group sync: one
//! `fdatasync` of each segment written since the previous one, and of the directory when a
//! segment was created, serves every writer waiting), and only then writes the record that
//! points at the payload. So no record — durable or not, flushed by the group commit, by
//! sled on its own or by the kernel — ever points at bytes that are not on disk, and a
//! resubmission after a crash is never deduplicated against a payload that was lost.
//!
//! The log is also the submissions' write-ahead log: a new message's payload entry is
//! preceded, in the same write, by a submission entry holding its record and routes, and
//! the submission is acknowledged once that write is durable, before the database holds
//! the record on disk (see `sled_store::submission`). A submission refused after its
//! entries were appended gets a withdrawal entry. A restart writes again, from the
//! submission entries, the records the database lost.
//!
//! A segment whose sync fails is abandoned: sealed, and every writer whose payload is in
//! it and not yet known durable is refused (after a failed `fdatasync` Linux may drop the
//! dirty pages, so a later one that succeeds proves nothing about them).
//!
//! An entry carries its kind, its message id and CRC32s of its header and bytes: a read
//! checks them, and a scan of a segment stops at a tail a crash left half written.
//!
//! A segment holding payloads whose records are not written yet is pinned (by the
//! [`PayloadPin`] its writer holds), so that reclaiming space never takes it; nor does it
//! take one holding submission entries a restart may still have to read (see
//! `SledStore::reclaim_segments`).
//!
//! Segments are never modified once written. Space comes back when retention has purged
//! every payload a segment holds (the file is deleted), or most of them (the live ones are
//! copied to the current segment first): see `SledStore::purge`.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
#[cfg(test)]
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::thread::JoinHandle;

use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::batch_queue::{Announced, BatchQueue};
use crate::committer::CommitStats;
use crate::error::StoreError;
use crate::types::MessageId;

mod spare;

/// A segment is sealed once it reaches this size and a new one is started.
pub(crate) const SEGMENT_BYTES: u64 = 64 << 20;
/// A segment that grows as it is written asks for one made ahead of time once it holds this
/// much (see [`spare`]).
const ASK_EARLY_AT: u64 = 1 << 20;
/// No segment is made ahead of time while the current one's syncs serve more writes than
/// this each on average: one `fdatasync` then serves so many submissions that the file's
/// growth costs them little, and writing the zeros costs the process CPU it lacks (about
/// 7 % of a relay at full load, docs/benchmarks.md).
const BUSY_WRITES_PER_SYNC: u64 = 4;
const HEADER: usize = 32;
/// An entry read larger than this is checked against the segment's size before its
/// buffer is allocated (a damaged reference must not allocate gigabytes).
const LARGE_READ: u64 = 1 << 20;
const SUFFIX: &str = ".seg";
/// Every segment begins with a header of its own: magic, version, a random salt, CRC32.
const SEGMENT_HEADER: usize = 32;
const SEGMENT_MAGIC: [u8; 4] = *b"TRSG";

/// A random value per segment, mixed into the checksum of each entry header: a package
/// whose bytes hold what looks like a whole entry (its sender cannot know the salt) is
/// never read as one, even when a scan searches past a damaged or torn header.
type Salt = [u8; 16];

/// What an entry holds, told by its first four bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryKind {
    /// A payload, which a message record points at.
    Payload,
    /// A submission's record and routes (see [`PayloadLog::append_submission`]): what a
    /// restart needs to write the record again if the database lost it.
    Submission,
    /// A submission refused after its entry was appended (empty body): a restart must not
    /// write it again.
    Withdrawal,
}

impl EntryKind {
    const fn magic(self) -> [u8; 4] {
        match self {
            EntryKind::Payload => *b"TRP1",
            EntryKind::Submission => *b"TRS1",
            EntryKind::Withdrawal => *b"TRW1",
        }
    }

    fn of_magic(magic: &[u8]) -> Option<Self> {
        [
            EntryKind::Payload,
            EntryKind::Submission,
            EntryKind::Withdrawal,
        ]
        .into_iter()
        .find(|k| k.magic() == magic)
    }
}

/// A place in the segments, in the order entries are appended: segment, then offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct LogPosition {
    pub segment: u64,
    pub offset: u64,
}

impl LogPosition {
    /// 16 bytes, big-endian: how the database keeps it.
    pub(crate) fn to_bytes(self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.segment.to_be_bytes());
        b[8..].copy_from_slice(&self.offset.to_be_bytes());
        b
    }

    /// The inverse of [`Self::to_bytes`].
    pub(crate) fn from_bytes(b: &[u8]) -> Option<Self> {
        let segment = u64::from_be_bytes(b.get(..8)?.try_into().ok()?);
        let offset = u64::from_be_bytes(b.get(8..16)?.try_into().ok()?);
        Some(LogPosition { segment, offset })
    }
}

/// Where a payload is: the entry at `offset` in segment `segment`, `len` payload bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct SegmentRef {
    pub segment: u64,
    pub offset: u64,
    pub len: u32,
}

impl SegmentRef {
    /// Bytes the entry takes in its segment, header included.
    pub(crate) fn entry_bytes(&self) -> u64 {
        HEADER as u64 + u64::from(self.len)
    }
}

/// What a read of a segment's headers found.
pub(crate) struct SegmentScan {
    /// The payload entries whose header is whole, in order, with their message ids (a
    /// body is checked when it is read: in a segment made ahead of time, a header can reach
    /// the disk without its body).
    pub entries: Vec<(SegmentRef, MessageId)>,
    /// The whole submission entries, likewise (`len` is the length of their body).
    pub submissions: Vec<(SegmentRef, MessageId)>,
    /// The messages whose submission was withdrawn.
    pub withdrawn: Vec<MessageId>,
    /// Nothing but whole entries, up to a tail a crash left half written (never durable,
    /// so no record points there). Otherwise the segment is damaged in the middle, and
    /// reading went on from the next whole entry after each damaged stretch.
    pub clean: bool,
    /// The file's size.
    pub size: u64,
    /// Where the last whole entry ends (where the segment's header ends if it has none):
    /// what follows is a torn tail, or zeros never written over.
    pub end: u64,
}

/// The segment files of one store.
pub(crate) struct PayloadLog {
    dir: PathBuf,
    segment_bytes: u64,
    appending: Mutex<Appending>,
    /// Open files for reads, by segment number.
    files: RwLock<HashMap<u64, Arc<SegmentFile>>>,
    /// Per segment, payloads appended whose records are not written yet.
    pins: Arc<Mutex<HashMap<u64, usize>>>,
    /// The next segment, made ahead of time (see [`spare`]), unless turned off.
    spares: Option<spare::SpareSegments>,
    /// Syncs to fail as a failing disk would (tests of what follows).
    #[cfg(test)]
    failing_syncs: AtomicUsize,
}

/// Keeps a segment from being reclaimed while the record of a payload appended to it is
/// not written yet. Dropped once it is (or the submission gave up).
pub(crate) struct PayloadPin {
    pins: Arc<Mutex<HashMap<u64, usize>>>,
    segment: u64,
}

impl Drop for PayloadPin {
    fn drop(&mut self) {
        let mut pins = self.pins.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = pins.get_mut(&self.segment) {
            *n -= 1;
            if *n == 0 {
                pins.remove(&self.segment);
            }
        }
    }
}

/// The segment being appended to, and what the next sync must cover.
struct Appending {
    /// The highest segment number in use (the current one, if any).
    last_number: u64,
    current: Option<Current>,
    /// Segments sealed with writes the last sync did not cover.
    sealed_unsynced: Vec<(u64, Arc<SegmentFile>)>,
    /// A segment file was created since the last sync: its directory entry must be synced.
    created: bool,
    /// Segments whose sync failed: abandoned (see the module documentation).
    failed: HashSet<u64>,
    /// Every entry before this position is durable, unless its segment failed: where the
    /// log ended when the last successful sync began.
    synced_to: LogPosition,
}

struct Current {
    number: u64,
    file: Arc<SegmentFile>,
    len: u64,
    /// Written since the last sync.
    dirty: bool,
    /// Made ahead of time at its full size: cut to `len` when it is sealed.
    prepared: bool,
    /// The next segment was asked for, or not made for being busy (see [`spare`]).
    asked_for_next: bool,
    /// Writes appended to it, and syncs that covered it.
    writes: u64,
    syncs: u64,
}

/// An open segment file and what its header says.
pub(crate) struct SegmentFile {
    file: File,
    /// `None` for segments written before segments had headers (payload entries only).
    salt: Option<Salt>,
    /// Where the first entry is.
    data_start: u64,
}

impl SegmentFile {
    /// Reads the header of an existing segment.
    fn open(file: File) -> std::io::Result<Self> {
        let mut header = [0u8; SEGMENT_HEADER];
        let salt = match file.read_exact_at(&mut header, 0) {
            Ok(()) => decode_segment_header(&header),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => None,
            Err(e) => return Err(e),
        };
        Ok(SegmentFile {
            file,
            salt,
            data_start: if salt.is_some() {
                SEGMENT_HEADER as u64
            } else {
                0
            },
        })
    }
}

fn encode_segment_header(salt: &Salt) -> [u8; SEGMENT_HEADER] {
    let mut h = [0u8; SEGMENT_HEADER];
    h[..4].copy_from_slice(&SEGMENT_MAGIC);
    h[4..8].copy_from_slice(&1u32.to_be_bytes());
    h[8..24].copy_from_slice(salt);
    let crc = crc32fast::hash(&h[..28]);
    h[28..].copy_from_slice(&crc.to_be_bytes());
    h
}

fn decode_segment_header(h: &[u8; SEGMENT_HEADER]) -> Option<Salt> {
    let crc = u32::from_be_bytes([h[28], h[29], h[30], h[31]]);
    if h[..4] != SEGMENT_MAGIC || crc != crc32fast::hash(&h[..28]) {
        return None;
    }
    let mut salt = [0u8; 16];
    salt.copy_from_slice(&h[8..24]);
    Some(salt)
}

fn segment_name(number: u64) -> String {
    format!("{number:016x}{SUFFIX}")
}

/// The number of a segment file's name: exactly 16 lowercase hex digits and the suffix.
pub(crate) fn segment_number(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(SUFFIX)?;
    let well_formed = hex.len() == 16
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !well_formed {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

fn header_crc(header: &[u8], salt: Option<&Salt>) -> u32 {
    let mut h = crc32fast::Hasher::new();
    if let Some(salt) = salt {
        h.update(salt);
    }
    h.update(&header[..12]);
    h.update(&header[16..HEADER]);
    h.finalize()
}

/// The header of an entry: magic, body length, body CRC32, header CRC32 (salted), message
/// id.
fn encode_header(
    kind: EntryKind,
    id: MessageId,
    len: u32,
    body_crc: u32,
    salt: Option<&Salt>,
) -> [u8; HEADER] {
    let mut header = [0u8; HEADER];
    header[..4].copy_from_slice(&kind.magic());
    header[4..8].copy_from_slice(&len.to_be_bytes());
    header[8..12].copy_from_slice(&body_crc.to_be_bytes());
    header[16..].copy_from_slice(&id.bytes());
    let crc = header_crc(&header, salt);
    header[12..16].copy_from_slice(&crc.to_be_bytes());
    header
}

/// A header's kind, message id, body length and body CRC, if it is whole (a segment
/// without a salt holds payload entries only).
fn decode_header(
    header: &[u8; HEADER],
    salt: Option<&Salt>,
) -> Option<(EntryKind, MessageId, u32, u32)> {
    let field = |at: usize| {
        u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let kind = EntryKind::of_magic(&header[..4])?;
    if field(12) != header_crc(header, salt) || (salt.is_none() && kind != EntryKind::Payload) {
        return None;
    }
    let id = MessageId::from_bytes(&header[16..])?;
    Some((kind, id, field(4), field(8)))
}

fn damaged(r: &SegmentRef, why: &str) -> StoreError {
    StoreError::Codec {
        what: "payload",
        reason: format!(
            "the entry at offset {} of payload segment {} is damaged: {why}",
            r.offset,
            segment_name(r.segment)
        ),
    }
}

impl PayloadLog {
    /// Opens (creating) the segment directory; segments are sealed at `segment_bytes`.
    /// Appends go to a new segment: the last one of a previous process may end in a
    /// half-written entry.
    pub(crate) fn open(dir: PathBuf, segment_bytes: u64) -> Result<Self, StoreError> {
        Self::open_with(dir, segment_bytes, None)
    }

    /// [`Self::open`], and each next segment is made ahead of time, zeroed at its full size,
    /// while the disk keeps `keep_free` bytes free besides (see [`spare`]).
    pub(crate) fn open_preparing_segments(
        dir: PathBuf,
        segment_bytes: u64,
        keep_free: u64,
    ) -> Result<Self, StoreError> {
        Self::open_with(dir, segment_bytes, Some(keep_free))
    }

    fn open_with(
        dir: PathBuf,
        segment_bytes: u64,
        keep_free: Option<u64>,
    ) -> Result<Self, StoreError> {
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(StoreError::from_io)?;
            if let Some(parent) = dir.parent() {
                crate::blob::sync_dir(parent)?;
            }
        }
        let segments = list(&dir)?;
        let last_number = segments.last().copied().unwrap_or(0);
        let spares = match keep_free {
            Some(keep_free) => Some(
                spare::SpareSegments::start(&dir, segment_bytes, keep_free)
                    .map_err(StoreError::from_io)?,
            ),
            None => None,
        };
        let log = PayloadLog {
            dir,
            segment_bytes,
            appending: Mutex::new(Appending {
                last_number,
                current: None,
                sealed_unsynced: Vec::new(),
                created: false,
                failed: HashSet::new(),
                synced_to: LogPosition {
                    segment: 0,
                    offset: 0,
                },
            }),
            files: RwLock::new(HashMap::new()),
            pins: Arc::new(Mutex::new(HashMap::new())),
            spares,
            #[cfg(test)]
            failing_syncs: AtomicUsize::new(0),
        };
        log.trim_unused_tails(&segments);
        Ok(log)
    }

    /// Cuts segments made ahead of time that a crash left at their full size to the end of
    /// their entries (a segment is cut when it is sealed or the log closed; the last one of
    /// a process that did neither keeps its zeros until here). A segment whose last 4 KiB
    /// are zeros may be one; whole entries are never cut, only what follows the last:
    /// zeros, or a tail a crash left half written, which no scan reads. Space only: a
    /// segment that cannot be read or cut is left as it is, and one a backup links to
    /// (more than one name) is never changed.
    fn trim_unused_tails(&self, segments: &[u64]) {
        for &segment in segments {
            if let Err(e) = self.trim_unused_tail(segment) {
                tracing::warn!(segment = %self.path_of(segment).display(), error = %e, "could not cut a payload segment to the end of its entries");
            }
        }
    }

    fn trim_unused_tail(&self, segment: u64) -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        const TAIL: u64 = 4096;
        let path = self.path_of(segment);
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        let meta = file.metadata()?;
        let len = meta.len();
        if meta.nlink() > 1 || len <= SEGMENT_HEADER as u64 {
            return Ok(());
        }
        let tail_from = len.saturating_sub(TAIL).max(SEGMENT_HEADER as u64);
        if !zeros_from(&file, tail_from, len)? {
            return Ok(());
        }
        let segment_file = SegmentFile::open(file)?;
        let end = scan_entries(&segment_file, segment, 0)?.end;
        // Without a readable segment header (written before segments had headers, or
        // damaged), only zeros are cut: a spare renamed but never written to.
        let cut =
            end < len && (segment_file.salt.is_some() || zeros_from(&segment_file.file, end, len)?);
        if cut {
            segment_file.file.set_len(end)?;
            segment_file.file.sync_data()?;
            tracing::info!(
                path = %path.display(),
                from = len,
                to = end,
                "cut a payload segment made ahead of time to the end of its entries"
            );
        }
        Ok(())
    }

    /// Gives back the space of the next segment made ahead of time, if one is ready: the
    /// disk is short of it.
    pub(crate) fn release_spare(&self) {
        if let Some(spares) = &self.spares {
            spares.release();
        }
    }

    /// Whether the next segment is made already (see [`spare`]).
    #[cfg(test)]
    fn spare_ready(&self) -> bool {
        self.spares.as_ref().is_some_and(|s| s.is_ready())
    }

    /// Makes the next `n` syncs fail after syncing, as a disk whose `fdatasync` fails does
    /// (the segments they cover are abandoned).
    #[cfg(test)]
    pub(crate) fn fail_next_syncs(&self, n: usize) {
        self.failing_syncs.store(n, Ordering::Release);
    }

    /// Requests for a spare made, and dealt with.
    #[cfg(test)]
    fn spare_requests(&self) -> (usize, usize) {
        self.spares.as_ref().map_or((0, 0), |s| s.requests())
    }

    /// The directory of the segments.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn appending(&self) -> MutexGuard<'_, Appending> {
        self.appending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `payload` of message `id` to the current segment (page cache only: wait for
    /// [`PayloadSyncer::durable`] before writing a record that points at it), and pins the
    /// segment until the returned pin is dropped.
    pub(crate) fn append(
        &self,
        id: MessageId,
        payload: &[u8],
    ) -> Result<(SegmentRef, PayloadPin), StoreError> {
        let (segment, offset, pin) = self.write_entries(id, &[(EntryKind::Payload, payload)])?;
        let at = SegmentRef {
            segment,
            offset,
            len: payload.len() as u32,
        };
        Ok((at, pin))
    }

    /// Appends a submission: an entry with its record (`submission`, encoded by the
    /// caller), then its payload, in one write. Once they are durable the submission can
    /// be acknowledged before its record is in the database: a restart reads the entries
    /// after the last position the database says it applied, and writes again the records
    /// it lost (see `SledStore::replay_submissions`). Returns where the submission entry
    /// is, where the payload is, and a pin as [`Self::append`] does.
    pub(crate) fn append_submission(
        &self,
        id: MessageId,
        submission: &[u8],
        payload: &[u8],
    ) -> Result<(LogPosition, SegmentRef, PayloadPin), StoreError> {
        let (segment, offset, pin) = self.write_entries(
            id,
            &[
                (EntryKind::Submission, submission),
                (EntryKind::Payload, payload),
            ],
        )?;
        let at = SegmentRef {
            segment,
            offset: offset + (HEADER + submission.len()) as u64,
            len: payload.len() as u32,
        };
        Ok((LogPosition { segment, offset }, at, pin))
    }

    /// Appends a withdrawal of the submission of `id` (see [`EntryKind::Withdrawal`]);
    /// durable once [`PayloadSyncer::durable`] says so for the place returned.
    pub(crate) fn append_withdrawal(&self, id: MessageId) -> Result<SegmentRef, StoreError> {
        let (segment, offset, _pin) = self.write_entries(id, &[(EntryKind::Withdrawal, &[])])?;
        Ok(SegmentRef {
            segment,
            offset,
            len: 0,
        })
    }

    /// Writes entries of message `id` one after the other in the current segment (starting
    /// a new one first if they do not fit); returns the segment and the first one's offset.
    fn write_entries(
        &self,
        id: MessageId,
        bodies: &[(EntryKind, &[u8])],
    ) -> Result<(u64, u64, PayloadPin), StoreError> {
        let total: usize = bodies.iter().map(|(_, b)| HEADER + b.len()).sum();
        let mut sized = Vec::with_capacity(bodies.len());
        for (kind, body) in bodies {
            let len = u32::try_from(body.len()).map_err(|_| StoreError::Codec {
                what: "payload",
                reason: format!("{} bytes is too large for a payload segment", body.len()),
            })?;
            // The bodies' checksums before the lock; the headers' need the segment's salt.
            sized.push((*kind, *body, len, crc32fast::hash(body)));
        }
        let mut a = self.appending();
        let full = a.current.as_ref().is_some_and(|c| {
            c.len > c.file.data_start && c.len + total as u64 > self.segment_bytes
        });
        // A segment that grows as it is written gives way to one made ahead of time as soon
        // as one is ready: sealed early, it is only smaller.
        let outgrown = a.current.as_ref().is_some_and(|c| !c.prepared)
            && self.spares.as_ref().is_some_and(|s| s.is_ready());
        if full || outgrown {
            a.seal();
        }
        if a.current.is_none() {
            let number = a.last_number + 1;
            let path = self.dir.join(segment_name(number));
            let spare = self.spares.as_ref().and_then(|s| s.take(&path));
            let prepared = spare.is_some();
            let file = match spare {
                Some(file) => file,
                None => OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(StoreError::from_io)?,
            };
            let salt: Salt = fastrand::u128(..).to_be_bytes();
            let header = encode_segment_header(&salt);
            if let Err(e) = file.write_all_at(&header, 0) {
                let _ = fs::remove_file(&path);
                return Err(StoreError::from_io(e));
            }
            let file = Arc::new(SegmentFile {
                file,
                salt: Some(salt),
                data_start: SEGMENT_HEADER as u64,
            });
            a.last_number = number;
            a.created = true;
            self.files
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(number, file.clone());
            a.current = Some(Current {
                number,
                file,
                len: SEGMENT_HEADER as u64,
                dirty: true,
                prepared,
                asked_for_next: false,
                writes: 0,
                syncs: 0,
            });
        }
        let Some(c) = a.current.as_mut() else {
            unreachable!("a current segment was just made")
        };
        let mut entry = Vec::with_capacity(total);
        for (kind, body, len, crc) in sized {
            entry.extend_from_slice(&encode_header(kind, id, len, crc, c.file.salt.as_ref()));
            entry.extend_from_slice(body);
        }
        // At an explicit offset: a failed write (disk full) is overwritten by the next one.
        c.file
            .file
            .write_all_at(&entry, c.len)
            .map_err(StoreError::from_io)?;
        let (segment, offset) = (c.number, c.len);
        c.len += entry.len() as u64;
        c.dirty = true;
        c.writes += 1;
        // The next one is asked for once this one is a quarter full, or, if it grows as it
        // is written (the first of a process, or one made when no spare was ready), once it
        // holds a little: a store that takes small payloads at all soon writes into blocks
        // written already.
        let ask_at = if c.prepared {
            self.segment_bytes / 4
        } else {
            (self.segment_bytes / 4).min(ASK_EARLY_AT)
        };
        if !c.asked_for_next && c.len >= ask_at {
            c.asked_for_next = true;
            let busy = c.writes > BUSY_WRITES_PER_SYNC * c.syncs.max(1);
            if let Some(spares) = self.spares.as_ref().filter(|_| !busy) {
                spares.request();
            }
        }
        *self
            .pins
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(segment)
            .or_insert(0) += 1;
        let pin = PayloadPin {
            pins: self.pins.clone(),
            segment,
        };
        Ok((segment, offset, pin))
    }

    /// Where the next entry will be appended: every entry appended so far is before it.
    pub(crate) fn end(&self) -> LogPosition {
        self.appending().end()
    }

    /// Whether the entry at `at` is known durable: a sync that began after it was
    /// appended succeeded, and its segment was not abandoned.
    pub(crate) fn is_durable(&self, at: &SegmentRef) -> bool {
        let a = self.appending();
        !a.failed.contains(&at.segment)
            && LogPosition {
                segment: at.segment,
                offset: at.offset,
            } < a.synced_to
    }

    /// Makes new segments numbered `first` or higher: a position the database holds may
    /// name a segment that is not on disk (nothing was appended to it yet, or it was
    /// reclaimed), and entries appended later must come after that position.
    pub(crate) fn number_from(&self, first: u64) {
        let mut a = self.appending();
        if a.current.is_none() {
            a.last_number = a.last_number.max(first.saturating_sub(1));
        }
    }

    /// Makes every append made before this call durable: `fdatasync`s the segments
    /// written since the last sync, and the directory if a segment was created. On failure
    /// every segment of this sync is abandoned (sealed, and [`Self::failed`] from then on).
    /// Called by the [`PayloadSyncer`] only, so syncs never overlap.
    fn sync(&self) -> std::io::Result<usize> {
        let (files, created, end) = {
            let mut a = self.appending();
            let end = a.end();
            let mut files = std::mem::take(&mut a.sealed_unsynced);
            if let Some(c) = a.current.as_mut().filter(|c| c.dirty) {
                c.dirty = false;
                c.syncs += 1;
                files.push((c.number, c.file.clone()));
            }
            (files, std::mem::take(&mut a.created), end)
        };
        let synced = files.len();
        let result = files
            .iter()
            .try_for_each(|(_, f)| f.file.sync_data())
            .and_then(|()| {
                if created {
                    File::open(&self.dir)?.sync_all()
                } else {
                    Ok(())
                }
            });
        #[cfg(test)]
        let result = result.and_then(|()| {
            let failing =
                self.failing_syncs
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
            match failing {
                Ok(_) => Err(std::io::Error::other("fdatasync failed (simulated)")),
                Err(_) => Ok(()),
            }
        });
        if let Err(e) = result {
            let mut a = self.appending();
            let mut abandoned: Vec<u64> = files.iter().map(|(n, _)| *n).collect();
            if created {
                // The new segment's directory entry may not be durable.
                abandoned.extend(a.current.as_ref().map(|c| c.number));
            }
            if a.current
                .as_ref()
                .is_some_and(|c| abandoned.contains(&c.number))
            {
                a.current = None;
            }
            tracing::error!(error = %e, segments = ?abandoned, "a payload segment could not be synced; it is abandoned and the submissions waiting for it are refused");
            a.failed.extend(abandoned);
            return Err(e);
        }
        let mut a = self.appending();
        a.synced_to = a.synced_to.max(end);
        Ok(synced)
    }

    /// Whether a segment was abandoned after a failed sync: what was appended to it and
    /// not known durable then may be lost.
    pub(crate) fn failed(&self, segment: u64) -> bool {
        self.appending().failed.contains(&segment)
    }

    /// Seals the current segment: later appends go to a new one, so every segment up to
    /// the number returned is immutable from now on (what a backup links).
    pub(crate) fn seal(&self) -> u64 {
        let mut a = self.appending();
        a.seal();
        a.last_number
    }

    /// Whether a segment may be reclaimed: sealed, and no payload in it waits for its
    /// record. A sealed segment gets no new payloads, so once this holds it keeps holding,
    /// and every record pointing into it is already written.
    pub(crate) fn reclaimable(&self, segment: u64) -> bool {
        let a = self.appending();
        a.current.as_ref().map(|c| c.number) != Some(segment)
            && segment <= a.last_number
            && !self
                .pins
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains_key(&segment)
    }

    /// The segment being appended to, if any: never reclaimed.
    pub(crate) fn current(&self) -> Option<u64> {
        self.appending().current.as_ref().map(|c| c.number)
    }

    fn file(&self, segment: u64) -> Result<Arc<SegmentFile>, StoreError> {
        if let Some(f) = self
            .files
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&segment)
        {
            return Ok(f.clone());
        }
        // Opened under the write lock, which `remove` holds while it deletes: a handle to
        // a deleted segment never enters the map.
        let mut files = self.files.write().unwrap_or_else(|p| p.into_inner());
        if let Some(f) = files.get(&segment) {
            return Ok(f.clone());
        }
        let file = File::open(self.dir.join(segment_name(segment))).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                StoreError::NotFound(format!("payload segment {}", segment_name(segment)))
            } else {
                StoreError::from_io(e)
            }
        })?;
        let f = Arc::new(SegmentFile::open(file).map_err(StoreError::from_io)?);
        files.insert(segment, f.clone());
        Ok(f)
    }

    /// Reads the payload of message `id` at `at`, checking that the entry is whole and is that message's.
    pub(crate) fn read(&self, at: &SegmentRef, id: MessageId) -> Result<bytes::Bytes, StoreError> {
        self.read_entry(at, id, EntryKind::Payload)
    }

    /// Reads the body of the submission entry of message `id` at `at` (from a
    /// [`SegmentScan`]), checking it likewise.
    pub(crate) fn read_submission(
        &self,
        at: &SegmentRef,
        id: MessageId,
    ) -> Result<bytes::Bytes, StoreError> {
        self.read_entry(at, id, EntryKind::Submission)
    }

    fn read_entry(
        &self,
        at: &SegmentRef,
        id: MessageId,
        kind: EntryKind,
    ) -> Result<bytes::Bytes, StoreError> {
        let segment = self.file(at.segment)?;
        let file = &segment.file;
        if at.offset < segment.data_start {
            return Err(damaged(at, "it is in the segment's header"));
        }
        // A read past the end fails below; the file's size is asked only before a large
        // buffer is allocated for an entry (a statx per delivery otherwise).
        if at.entry_bytes() > LARGE_READ
            && at.offset + at.entry_bytes() > file.metadata().map_err(StoreError::from_io)?.len()
        {
            return Err(damaged(at, "the segment ends before it"));
        }
        let mut buf = vec![0u8; HEADER + at.len as usize];
        file.read_exact_at(&mut buf, at.offset).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                damaged(at, "the segment ends before it")
            } else {
                StoreError::from_io(e)
            }
        })?;
        let mut header = [0u8; HEADER];
        header.copy_from_slice(&buf[..HEADER]);
        let Some((found_kind, found, len, crc)) = decode_header(&header, segment.salt.as_ref())
        else {
            return Err(damaged(at, "its header does not match its checksum"));
        };
        if found_kind != kind || found != id || len != at.len {
            return Err(damaged(
                at,
                &format!(
                    "it holds {len} bytes of {found} ({found_kind:?}), not {} bytes of {id} ({kind:?})",
                    at.len
                ),
            ));
        }
        if crc32fast::hash(&buf[HEADER..]) != crc {
            return Err(damaged(at, "its bytes do not match their checksum"));
        }
        Ok(bytes::Bytes::from(buf).slice(HEADER..))
    }

    /// The segments on disk, oldest first.
    pub(crate) fn segments(&self) -> Result<Vec<u64>, StoreError> {
        list(&self.dir)
    }

    /// The path of a segment.
    pub(crate) fn path_of(&self, segment: u64) -> PathBuf {
        self.dir.join(segment_name(segment))
    }

    /// Reads a segment's entry headers: see [`SegmentScan`].
    pub(crate) fn entries(&self, segment: u64) -> Result<SegmentScan, StoreError> {
        self.entries_from(segment, 0)
    }

    /// Reads a segment's entry headers from `start`, which must be where an entry begins
    /// (or the end of the segment): see [`SegmentScan`]. Past damage in the middle, reading
    /// goes on from the next whole entry, so that one bad entry hides no others.
    pub(crate) fn entries_from(&self, segment: u64, start: u64) -> Result<SegmentScan, StoreError> {
        let opened = self.file(segment)?;
        scan_entries(&opened, segment, start).map_err(StoreError::from_io)
    }

    /// Deletes a sealed segment (its payloads are all purged or copied elsewhere, durably).
    pub(crate) fn remove(&self, segment: u64) -> Result<bool, StoreError> {
        if self.current() == Some(segment) {
            return Ok(false);
        }
        let mut files = self.files.write().unwrap_or_else(|p| p.into_inner());
        files.remove(&segment);
        match fs::remove_file(self.path_of(segment)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::from_io(e)),
        }
    }
}

impl Drop for PayloadLog {
    /// A clean close cuts the current segment, if it was made ahead of time, to its entries
    /// now rather than leave it to the next open.
    fn drop(&mut self) {
        let mut a = self.appending();
        if let Some(c) = a.current.as_mut().filter(|c| c.prepared) {
            let cut = c
                .file
                .file
                .set_len(c.len)
                .and_then(|()| c.file.file.sync_data());
            match cut {
                Ok(()) => c.prepared = false,
                Err(e) => {
                    tracing::warn!(segment = c.number, error = %e, "could not cut the current payload segment to its entries; it is cut at the next start");
                }
            }
        }
    }
}

impl Appending {
    fn end(&self) -> LogPosition {
        match &self.current {
            Some(c) => LogPosition {
                segment: c.number,
                offset: c.len,
            },
            None => LogPosition {
                segment: self.last_number + 1,
                offset: 0,
            },
        }
    }

    fn seal(&mut self) {
        if let Some(c) = self.current.take() {
            let mut dirty = c.dirty;
            if c.prepared {
                // Its zeros past the last entry go; the next sync makes the size durable.
                match c.file.file.set_len(c.len) {
                    Ok(()) => dirty = true,
                    Err(e) => {
                        tracing::warn!(segment = c.number, error = %e, "could not cut a sealed payload segment to its entries; it is cut at the next start");
                    }
                }
            }
            if dirty {
                self.sealed_unsynced.push((c.number, c.file));
            }
        }
    }
}

/// Group sync of the payload segments, on a thread of its own: a writer asks once its
/// payload is appended, and is answered by the first sync that started after it asked.
pub(crate) struct PayloadSyncer {
    queue: Arc<BatchQueue<SyncRequest>>,
    thread: Option<JoinHandle<()>>,
}

/// A submission on its way to [`PayloadSyncer::durable`]: while any exist, a sync waits a
/// moment (at most [`GATHER`]) for them, so that one `fdatasync` serves them too. Dropped
/// when it asks (or gives up).
pub(crate) type SyncWriting = Announced<SyncRequest>;

/// The longest a sync waits for submissions on their way.
const GATHER: std::time::Duration = std::time::Duration::from_micros(300);

/// A writer's request for a sync, answered on `done`.
pub(crate) struct SyncRequest {
    segment: u64,
    done: oneshot::Sender<Result<(), SyncFailure>>,
}

/// Why a payload could not be made durable, for every writer of a batch.
#[derive(Debug, Clone)]
struct SyncFailure {
    full: bool,
    message: String,
}

impl PayloadSyncer {
    /// Starts the syncer of `log`; counts its `fdatasync`s in `stats`.
    pub(crate) fn start(log: Arc<PayloadLog>, stats: Arc<CommitStats>) -> Result<Self, StoreError> {
        let queue = BatchQueue::<SyncRequest>::new();
        let requests = queue.clone();
        let thread = std::thread::Builder::new()
            .name("truc-store-payload-sync".into())
            .spawn(move || {
                let _closing = requests.closed_on_exit();
                // Alone, at once; otherwise a moment for those on their way.
                while let Some(batch) = requests.next_batch(GATHER) {
                    let result = log.sync();
                    if let Ok(n) = &result {
                        stats
                            .payload_segment_syncs
                            .fetch_add(*n as u64, Ordering::Relaxed);
                    }
                    for request in batch {
                        let answer = match &result {
                            Err(e) => Err(SyncFailure {
                                full: crate::error::is_full(e),
                                message: e.to_string(),
                            }),
                            Ok(_) if log.failed(request.segment) => Err(SyncFailure {
                                full: false,
                                message: format!(
                                    "payload segment {} was abandoned after a failed sync",
                                    segment_name(request.segment)
                                ),
                            }),
                            Ok(_) => Ok(()),
                        };
                        let _ = request.done.send(answer);
                    }
                }
            })
            .map_err(StoreError::Io)?;
        Ok(PayloadSyncer {
            queue,
            thread: Some(thread),
        })
    }

    /// Announces a submission that will ask for a sync soon (take it before the work that
    /// precedes the request; hand it to [`Self::durable`]).
    pub(crate) fn writing(&self) -> SyncWriting {
        self.queue.announce()
    }

    /// Waits until the payload at `at` (appended before this call) is on disk.
    pub(crate) async fn durable(&self, at: &SegmentRef) -> Result<(), StoreError> {
        self.durable_announced(at, None).await
    }

    /// [`Self::durable`] for a submission that announced itself with [`Self::writing`].
    pub(crate) async fn durable_announced(
        &self,
        at: &SegmentRef,
        writing: Option<SyncWriting>,
    ) -> Result<(), StoreError> {
        let (done, wait) = oneshot::channel();
        // No longer on its way once its request is queued.
        self.queue
            .push(
                SyncRequest {
                    segment: at.segment,
                    done,
                },
                std::time::Instant::now(),
                writing,
            )
            .map_err(|_| StoreError::Closed)?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(f)) => {
                let e = std::io::Error::other(f.message);
                Err(if f.full {
                    StoreError::Full(e)
                } else {
                    StoreError::Io(e)
                })
            }
            Err(_) => Err(StoreError::Closed),
        }
    }
}

impl Drop for PayloadSyncer {
    fn drop(&mut self) {
        self.queue.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Where the first whole entry (header and body checksums right) at or after `from` and
/// before `size` in `file` starts, if any. Read a piece at a time: only where an entry's
/// magic appears is a header (and, if its checksum is right, a body) read, so a stretch of
/// zeros costs one read of it.
fn next_whole_entry(
    file: &File,
    from: u64,
    size: u64,
    salt: Option<&Salt>,
) -> std::io::Result<Option<u64>> {
    next_whole_entry_by(file, from, size, salt, 1 << 20)
}

/// [`next_whole_entry`], reading `piece` bytes (at least 2) at a time.
fn next_whole_entry_by(
    file: &File,
    from: u64,
    size: u64,
    salt: Option<&Salt>,
    piece_bytes: u64,
) -> std::io::Result<Option<u64>> {
    // Every magic begins so; a piece overlaps the next by one byte, so none is missed.
    const PREFIX: &[u8] = b"TR";
    let finder = memchr::memmem::Finder::new(PREFIX);
    let mut piece = Vec::new();
    let mut start = from;
    while start + HEADER as u64 <= size {
        let len = piece_bytes.max(PREFIX.len() as u64).min(size - start);
        piece.resize(len as usize, 0);
        file.read_exact_at(&mut piece, start)?;
        for found in finder.find_iter(&piece) {
            let at = start + found as u64;
            if at + HEADER as u64 > size {
                return Ok(None);
            }
            let mut header = [0u8; HEADER];
            match piece.get(found..found + HEADER) {
                Some(h) => header.copy_from_slice(h),
                None => file.read_exact_at(&mut header, at)?,
            }
            let Some((_, _, body_len, crc)) = decode_header(&header, salt) else {
                continue;
            };
            let body_end = at + HEADER as u64 + u64::from(body_len);
            if body_end > size {
                continue;
            }
            let mut body = vec![0u8; body_len as usize];
            file.read_exact_at(&mut body, at + HEADER as u64)?;
            if crc32fast::hash(&body) == crc {
                return Ok(Some(at));
            }
        }
        if start + len >= size {
            break;
        }
        start += len - (PREFIX.len() as u64 - 1);
    }
    Ok(None)
}

/// Reads the entry headers of `opened` (segment number `segment`) from `start`: see
/// [`PayloadLog::entries_from`].
fn scan_entries(opened: &SegmentFile, segment: u64, start: u64) -> std::io::Result<SegmentScan> {
    let (file, salt) = (&opened.file, opened.salt.as_ref());
    let size = file.metadata()?.len();
    let mut entries = Vec::new();
    let mut submissions = Vec::new();
    let mut withdrawn = Vec::new();
    let mut offset = start.max(opened.data_start).min(size);
    let mut end = offset;
    let mut clean = true;
    let mut header = [0u8; HEADER];
    loop {
        while offset + HEADER as u64 <= size {
            file.read_exact_at(&mut header, offset)?;
            let Some((kind, id, len, _)) = decode_header(&header, salt) else {
                break;
            };
            let at = SegmentRef {
                segment,
                offset,
                len,
            };
            if offset + at.entry_bytes() > size {
                break;
            }
            match kind {
                EntryKind::Payload => entries.push((at, id)),
                EntryKind::Submission => submissions.push((at, id)),
                EntryKind::Withdrawal => withdrawn.push(id),
            }
            offset += at.entry_bytes();
            end = offset;
        }
        if offset >= size {
            break;
        }
        match next_whole_entry(file, offset + 1, size, salt)? {
            // A tail a crash left half written, or zeros never written over.
            None => break,
            Some(at) => {
                clean = false;
                offset = at;
            }
        }
    }
    Ok(SegmentScan {
        entries,
        submissions,
        withdrawn,
        clean,
        size,
        end,
    })
}

/// Whether `file` holds nothing but zeros from `from` to `len`.
fn zeros_from(file: &File, from: u64, len: u64) -> std::io::Result<bool> {
    let mut piece = vec![0u8; 1 << 20];
    let mut at = from;
    while at < len {
        let n = usize::try_from(len - at).map_or(piece.len(), |rest| rest.min(piece.len()));
        file.read_exact_at(&mut piece[..n], at)?;
        if piece[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

fn list(dir: &Path) -> Result<Vec<u64>, StoreError> {
    let mut numbers = Vec::new();
    for entry in fs::read_dir(dir).map_err(StoreError::from_io)? {
        let entry = entry.map_err(StoreError::from_io)?;
        if let Some(n) = entry.file_name().to_str().and_then(segment_number) {
            numbers.push(n);
        }
    }
    numbers.sort_unstable();
    Ok(numbers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::Timestamp;

    fn id(n: u64) -> MessageId {
        MessageId::lowest_at(Timestamp(1_700_000_000_000 + n))
    }

    #[test]
    fn payloads_read_back_and_segments_roll_over() {
        let dir = tempfile::tempdir().expect("test");
        let log = PayloadLog::open(dir.path().join("p"), 4096).expect("test");
        let mut refs = Vec::new();
        for n in 0..10u64 {
            let payload = vec![n as u8; 1000 + n as usize];
            refs.push((log.append(id(n), &payload).expect("test").0, payload));
        }
        assert!(log.sync().expect("test") >= 1);
        assert_eq!(log.sync().expect("test"), 0, "nothing new to sync");
        for (n, (at, payload)) in refs.iter().enumerate() {
            assert_eq!(&log.read(at, id(n as u64)).expect("test")[..], &payload[..]);
        }
        let segments = log.segments().expect("test");
        assert!(
            segments.len() >= 3,
            "4 KiB segments roll over: {segments:?}"
        );
        let listed: usize = segments
            .iter()
            .map(|s| log.entries(*s).expect("test").entries.len())
            .sum();
        assert_eq!(listed, 10);
        // Another message's id at the same place is refused.
        assert!(log.read(&refs[0].0, id(99)).is_err());
    }

    #[test]
    fn a_damaged_entry_is_refused_and_a_torn_tail_ends_the_scan() {
        let dir = tempfile::tempdir().expect("test");
        let path = dir.path().join("p");
        let log = PayloadLog::open(path.clone(), SEGMENT_BYTES).expect("test");
        let (a, _) = log.append(id(1), b"first payload").expect("test");
        let (b, _) = log.append(id(2), b"second payload").expect("test");
        log.sync().expect("test");
        let file = log.path_of(a.segment);
        let mut bytes = fs::read(&file).expect("test");
        // Flip one payload byte of the first entry; cut the second short.
        bytes[a.offset as usize + HEADER + 2] ^= 1;
        bytes.truncate((b.offset + b.entry_bytes() - 3) as usize);
        fs::write(&file, &bytes).expect("test");
        drop(log);
        let log = PayloadLog::open(path, SEGMENT_BYTES).expect("test");
        assert!(matches!(log.read(&a, id(1)), Err(StoreError::Codec { .. })));
        assert!(log.read(&b, id(2)).is_err());
        let SegmentScan { entries, clean, .. } = log.entries(a.segment).expect("test");
        assert_eq!(entries.len(), 1, "the torn entry is not listed");
        assert!(
            clean,
            "a torn tail is what a crash leaves: the segment is clean"
        );
        // A new process appends to a new segment.
        let (c, _) = log.append(id(3), b"third").expect("test");
        assert_eq!(c.segment, a.segment + 1);
        assert_eq!(c.offset, SEGMENT_HEADER as u64);
    }

    #[test]
    fn damage_before_whole_entries_marks_the_segment_unclean() {
        let dir = tempfile::tempdir().expect("test");
        let log = PayloadLog::open(dir.path().join("p"), SEGMENT_BYTES).expect("test");
        let refs: Vec<SegmentRef> = (0..3u64)
            .map(|n| log.append(id(n), &[n as u8; 100]).expect("test").0)
            .collect();
        log.sync().expect("test");
        let file = log.path_of(refs[0].segment);
        let mut bytes = fs::read(&file).expect("test");
        bytes[refs[1].offset as usize + 5] ^= 0x40; // the second entry's length
        fs::write(&file, &bytes).expect("test");
        let SegmentScan { entries, clean, .. } = log.entries(refs[0].segment).expect("test");
        assert!(!clean, "a whole entry follows the damage");
        assert_eq!(
            entries.iter().map(|(at, _)| *at).collect::<Vec<_>>(),
            vec![refs[0], refs[2]],
            "reading goes on past the damaged entry"
        );
        assert_eq!(
            &log.read(&refs[2], id(2)).expect("test")[..],
            &[2u8; 100][..]
        );
    }

    #[test]
    fn pins_keep_a_segment_from_being_reclaimed_until_dropped() {
        let dir = tempfile::tempdir().expect("test");
        let log = PayloadLog::open(dir.path().join("p"), 256).expect("test");
        let (a, pin) = log.append(id(1), &[1u8; 200]).expect("test");
        let (b, other) = log.append(id(2), &[2u8; 200]).expect("test");
        assert_ne!(a.segment, b.segment, "256-byte segments hold one entry");
        drop(other);
        assert!(!log.reclaimable(a.segment), "its record is not written yet");
        assert!(!log.reclaimable(b.segment), "the current segment");
        drop(pin);
        assert!(log.reclaimable(a.segment));
        assert!(!log.reclaimable(b.segment));
        assert_eq!(log.seal(), b.segment);
        assert!(log.reclaimable(b.segment));
    }

    #[test]
    fn submission_and_withdrawal_entries_are_listed_apart_from_payloads() {
        let dir = tempfile::tempdir().expect("test");
        let log = PayloadLog::open(dir.path().join("p"), SEGMENT_BYTES).expect("test");
        let (first, payload_at, _pin) = log
            .append_submission(id(1), b"record of one", b"payload of one")
            .expect("test");
        let withdrawal = log.append_withdrawal(id(1)).expect("test");
        let (plain, _) = log.append(id(2), b"payload of two").expect("test");
        log.sync().expect("test");
        assert_eq!(first.offset, SEGMENT_HEADER as u64);
        assert_eq!(
            &log.read(&payload_at, id(1)).expect("test")[..],
            b"payload of one"
        );
        let scan = log.entries(first.segment).expect("test");
        assert!(scan.clean);
        assert_eq!(scan.entries, vec![(payload_at, id(1)), (plain, id(2))]);
        assert_eq!(scan.withdrawn, vec![id(1)]);
        let [(entry_at, of)] = scan.submissions[..] else {
            panic!("one submission entry: {:?}", scan.submissions)
        };
        assert_eq!((entry_at.offset, of), (SEGMENT_HEADER as u64, id(1)));
        assert_eq!(entry_at.offset + entry_at.entry_bytes(), payload_at.offset);
        assert_eq!(
            &log.read_submission(&entry_at, id(1)).expect("test")[..],
            b"record of one"
        );
        // An entry is read only as what it is.
        assert!(log.read(&entry_at, id(1)).is_err());
        assert!(log.read_submission(&payload_at, id(1)).is_err());
        assert_eq!(
            withdrawal.offset,
            payload_at.offset + payload_at.entry_bytes()
        );
        // A scan from an entry's start sees only what follows.
        let later = log.entries_from(first.segment, plain.offset).expect("test");
        assert_eq!(later.entries, vec![(plain, id(2))]);
        assert!(later.submissions.is_empty() && later.withdrawn.is_empty());
        // Positions order as the log does.
        assert!(
            log.end()
                > LogPosition {
                    segment: first.segment,
                    offset: plain.offset
                }
        );
        assert_eq!(
            LogPosition::from_bytes(&log.end().to_bytes()),
            Some(log.end())
        );
    }

    #[test]
    fn new_segments_are_numbered_from_a_floor() {
        let dir = tempfile::tempdir().expect("test");
        let log = PayloadLog::open(dir.path().join("p"), SEGMENT_BYTES).expect("test");
        log.number_from(7);
        assert_eq!(
            log.end(),
            LogPosition {
                segment: 7,
                offset: 0
            }
        );
        let (at, _) = log.append(id(1), b"x").expect("test");
        assert_eq!(at.segment, 7);
        // Lower floors change nothing.
        log.number_from(3);
        assert_eq!(log.end().segment, 7);
    }

    #[test]
    fn an_entry_hidden_in_a_payload_is_never_read_as_one() {
        let dir = tempfile::tempdir().expect("test");
        let log = PayloadLog::open(dir.path().join("p"), SEGMENT_BYTES).expect("test");
        // A package holding a whole submission entry and a withdrawal, checksums right
        // for any salt its sender could guess (here: none, and a random one).
        let mut crafted = Vec::new();
        for salt in [None, Some(fastrand::u128(..).to_be_bytes())] {
            for (kind, body) in [
                (EntryKind::Submission, &b"forged record"[..]),
                (EntryKind::Withdrawal, &b""[..]),
            ] {
                crafted.extend_from_slice(&encode_header(
                    kind,
                    id(9),
                    body.len() as u32,
                    crc32fast::hash(body),
                    salt.as_ref(),
                ));
                crafted.extend_from_slice(body);
            }
        }
        let (carrier, _) = log.append(id(1), &crafted).expect("test");
        let (after, _) = log.append(id(2), b"after").expect("test");
        log.sync().expect("test");
        // The carrier's header damaged: the scan searches past it.
        let file = log.path_of(carrier.segment);
        let mut bytes = fs::read(&file).expect("test");
        bytes[carrier.offset as usize] ^= 0xFF;
        fs::write(&file, &bytes).expect("test");
        drop(log);
        let log = PayloadLog::open(dir.path().join("p"), SEGMENT_BYTES).expect("test");
        let scan = log.entries(carrier.segment).expect("test");
        assert!(scan.submissions.is_empty(), "{:?}", scan.submissions);
        assert!(scan.withdrawn.is_empty());
        assert_eq!(
            scan.entries,
            vec![(after, id(2))],
            "the real entry after it is found"
        );
        assert!(!scan.clean);
    }

    #[test]
    fn segments_written_before_segment_headers_still_read() {
        let dir = tempfile::tempdir().expect("test");
        let path = dir.path().join("p");
        fs::create_dir_all(&path).expect("test");
        let body = b"a payload of 2026-12-07";
        let mut legacy = encode_header(
            EntryKind::Payload,
            id(1),
            body.len() as u32,
            crc32fast::hash(body),
            None,
        )
        .to_vec();
        legacy.extend_from_slice(body);
        fs::write(path.join(segment_name(1)), &legacy).expect("test");
        let log = PayloadLog::open(path, SEGMENT_BYTES).expect("test");
        let at = SegmentRef {
            segment: 1,
            offset: 0,
            len: body.len() as u32,
        };
        assert_eq!(&log.read(&at, id(1)).expect("test")[..], body);
        let scan = log.entries(1).expect("test");
        assert_eq!(scan.entries, vec![(at, id(1))]);
        assert!(scan.clean);
        let (new, _) = log.append(id(2), b"new").expect("test");
        assert_eq!((new.segment, new.offset), (2, SEGMENT_HEADER as u64));
    }

    /// Appends 1 KiB payloads of ids from `*n` on, each made durable by a sync of its own
    /// (a store whose syncs serve one submission each), until `until` holds (at most
    /// 10,000).
    fn append_until(
        log: &PayloadLog,
        n: &mut u64,
        written: &mut Vec<(SegmentRef, u64)>,
        until: impl Fn(&PayloadLog, &SegmentRef) -> bool,
    ) {
        for _ in 0..10_000 {
            let (at, _) = log.append(id(*n), &payload(*n)).expect("test");
            log.sync().expect("test");
            written.push((at, *n));
            *n += 1;
            if until(log, &at) {
                return;
            }
        }
        panic!("never happened");
    }

    /// The 1 KiB payload of id `n` in these tests.
    fn payload(n: u64) -> [u8; 1024] {
        [(n % 250) as u8 + 1; 1024]
    }

    /// Every payload in `written` reads back whole.
    fn assert_read_back(log: &PayloadLog, written: &[(SegmentRef, u64)]) {
        for (at, n) in written {
            assert_eq!(&log.read(at, id(*n)).expect("test")[..], &payload(*n)[..]);
        }
    }

    fn wait_for_spare(log: &PayloadLog) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while !log.spare_ready() {
            assert!(
                std::time::Instant::now() < deadline,
                "the spare segment was never made"
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    fn file_len(log: &PayloadLog, segment: u64) -> u64 {
        fs::metadata(log.path_of(segment)).expect("test").len()
    }

    #[test]
    fn the_next_segment_is_made_ahead_of_time_and_cut_to_its_entries_when_sealed() {
        const BYTES: u64 = 64 * 1024;
        let dir = tempfile::tempdir().expect("test");
        let log =
            PayloadLog::open_preparing_segments(dir.path().join("p"), BYTES, 0).expect("test");
        let (mut n, mut written) = (0, Vec::new());
        // Not asked for until the first segment is a quarter full.
        append_until(&log, &mut n, &mut written, |_, at| at.offset > BYTES / 8);
        assert_eq!(
            log.spare_requests(),
            (0, 0),
            "a spare is made only once it may be needed"
        );
        assert!(!log.spare_ready());
        // Stopped at the request: an append after it may already move to the spare.
        append_until(&log, &mut n, &mut written, |log, _| {
            log.spare_requests().0 > 0
        });
        let (last, _) = written.last().copied().expect("test");
        assert_eq!(last.segment, 1);
        assert!(last.offset + last.entry_bytes() >= BYTES / 4, "{last:?}");
        assert_eq!(log.spare_requests().0, 1);
        wait_for_spare(&log);
        assert_eq!(
            fs::metadata(log.dir().join("next-segment.zeroed"))
                .expect("the spare is on disk")
                .len(),
            BYTES
        );
        // The first segment grew as it was written; the second is the spare.
        append_until(&log, &mut n, &mut written, |_, at| at.segment == 2);
        assert_eq!(file_len(&log, 2), BYTES, "the second segment is the spare");
        assert!(!log.dir().join("next-segment.zeroed").exists());
        let first_len = file_len(&log, 1);
        assert_eq!(first_len, log.entries(1).expect("test").end);
        // Sealed: cut to its entries, durably with the next sync.
        log.seal();
        log.sync().expect("test");
        let scan = log.entries(2).expect("test");
        assert_eq!(file_len(&log, 2), scan.end);
        assert!(scan.end < BYTES && scan.clean);
        assert_read_back(&log, &written);
    }

    #[test]
    fn a_segment_made_ahead_of_time_is_cut_at_the_next_open_after_a_crash() {
        const BYTES: u64 = 64 * 1024;
        let dir = tempfile::tempdir().expect("test");
        let path = dir.path().join("p");
        let (log, written) = into_a_second_segment_made_ahead(&path, BYTES);
        let end = log.entries(2).expect("test").end;
        // As a crash leaves it: never sealed, at its full size.
        let crashed = fs::read(log.path_of(2)).expect("test");
        assert_eq!(crashed.len() as u64, BYTES);
        drop(log);
        assert_eq!(
            fs::metadata(path.join(segment_name(2)))
                .expect("test")
                .len(),
            end,
            "a clean close cuts it"
        );
        fs::write(path.join(segment_name(2)), &crashed).expect("test");
        // A spare renamed to a segment's name whose header never reached the disk: zeros.
        fs::write(path.join(segment_name(3)), vec![0u8; BYTES as usize]).expect("test");
        // A segment whose header is damaged is kept whole, zeros at its end or not.
        let mut damaged = vec![7u8; 4096];
        damaged.extend_from_slice(&[0u8; 4096]);
        fs::write(path.join(segment_name(4)), &damaged).expect("test");

        let log = PayloadLog::open(path.clone(), BYTES).expect("test");
        assert_eq!(file_len(&log, 2), end, "cut to the end of its entries");
        assert_eq!(file_len(&log, 3), 0, "nothing but zeros");
        assert_eq!(file_len(&log, 4), damaged.len() as u64, "left as it is");
        let scan = log.entries(2).expect("test");
        assert!(scan.clean);
        assert_read_back(&log, &written);
        // Appends go on in a new segment.
        let (at, _) = log
            .append(id(written.len() as u64), b"after the crash")
            .expect("test");
        assert_eq!(at.segment, 5);
    }

    #[test]
    fn a_whole_spare_is_used_after_a_restart_and_others_are_removed() {
        const BYTES: u64 = 64 * 1024;
        let dir = tempfile::tempdir().expect("test");
        let path = dir.path().join("p");
        fs::create_dir_all(&path).expect("test");
        fs::write(path.join("next-segment.zeroed"), vec![0u8; BYTES as usize]).expect("test");
        fs::write(path.join("next-segment.zeroing"), vec![0u8; 100]).expect("test");
        let log = PayloadLog::open_preparing_segments(path.clone(), BYTES, 0).expect("test");
        assert!(
            log.spare_ready(),
            "a whole spare of the right size is ready at once"
        );
        assert!(!path.join("next-segment.zeroing").exists());
        let (at, _) = log.append(id(1), b"first").expect("test");
        assert_eq!(file_len(&log, at.segment), BYTES, "made from the spare");
        drop(log);

        // One of another segment size is removed.
        fs::write(path.join("next-segment.zeroed"), vec![0u8; 100]).expect("test");
        let log = PayloadLog::open_preparing_segments(path.clone(), BYTES, 0).expect("test");
        assert!(!log.spare_ready());
        assert!(!path.join("next-segment.zeroed").exists());
        let (at, _) = log.append(id(2), b"second").expect("test");
        assert_eq!(file_len(&log, at.segment), at.offset + at.entry_bytes());
    }

    #[test]
    fn no_spare_is_made_without_room_for_it_besides_the_reserve() {
        const BYTES: u64 = 64 * 1024;
        let dir = tempfile::tempdir().expect("test");
        let log = PayloadLog::open_preparing_segments(dir.path().join("p"), BYTES, u64::MAX / 4)
            .expect("test");
        let (mut n, mut written) = (0, Vec::new());
        append_until(&log, &mut n, &mut written, |_, at| at.segment == 2);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while log.spare_requests().1 == 0 {
            assert!(std::time::Instant::now() < deadline, "never dealt with");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!log.spare_ready());
        assert!(!log.dir().join("next-segment.zeroed").exists());
        assert!(!log.dir().join("next-segment.zeroing").exists());
    }

    #[test]
    fn past_damage_the_next_whole_entry_is_found_whatever_the_pieces_read() {
        let dir = tempfile::tempdir().expect("test");
        let log = PayloadLog::open(dir.path().join("p"), SEGMENT_BYTES).expect("test");
        // Bodies full of the magic's first bytes, and of whole-looking unsalted headers.
        let decoy = encode_header(EntryKind::Payload, id(9), 4, crc32fast::hash(b"TRTR"), None);
        let mut body = b"TRTRTRP1TRS".to_vec();
        body.extend_from_slice(&decoy);
        body.extend_from_slice(b"TRTR");
        let (first, _) = log.append(id(1), &body).expect("test");
        let (second, _) = log.append(id(2), &body).expect("test");
        log.sync().expect("test");
        let segment = log.file(first.segment).expect("test");
        let size = segment.file.metadata().expect("test").len();
        for piece in 1..(2 * HEADER as u64 + 64) {
            let found = next_whole_entry_by(
                &segment.file,
                first.offset + 1,
                size,
                segment.salt.as_ref(),
                piece,
            )
            .expect("test");
            assert_eq!(found, Some(second.offset), "pieces of {piece} bytes");
        }
        let past = next_whole_entry_by(
            &segment.file,
            second.offset + 1,
            size,
            segment.salt.as_ref(),
            5,
        )
        .expect("test");
        assert_eq!(past, None);
    }

    #[test]
    fn a_spare_is_deleted_when_space_is_short() {
        const BYTES: u64 = 64 * 1024;
        let dir = tempfile::tempdir().expect("test");
        let path = dir.path().join("p");
        fs::create_dir_all(&path).expect("test");
        fs::write(path.join("next-segment.zeroed"), vec![0u8; BYTES as usize]).expect("test");
        let log = PayloadLog::open_preparing_segments(path.clone(), BYTES, 0).expect("test");
        assert!(log.spare_ready());
        log.release_spare();
        assert!(!log.spare_ready());
        assert!(!path.join("next-segment.zeroed").exists());
        let (at, _) = log.append(id(1), b"grows").expect("test");
        assert_eq!(file_len(&log, at.segment), at.offset + at.entry_bytes());
    }

    /// Fills segment 1 and starts segment 2 from a spare, up to a quarter of it; syncs.
    fn into_a_second_segment_made_ahead(
        path: &Path,
        bytes: u64,
    ) -> (PayloadLog, Vec<(SegmentRef, u64)>) {
        let log = PayloadLog::open_preparing_segments(path.to_owned(), bytes, 0).expect("test");
        let (mut n, mut written) = (0, Vec::new());
        append_until(&log, &mut n, &mut written, |_, at| at.offset > bytes / 2);
        wait_for_spare(&log);
        append_until(&log, &mut n, &mut written, |_, at| {
            at.segment == 2 && at.offset > bytes / 4
        });
        log.sync().expect("test");
        assert_eq!(file_len(&log, 2), bytes, "made from the spare");
        (log, written)
    }

    #[test]
    fn the_end_of_a_segment_is_its_last_whole_entry_even_past_damage_and_before_zeros() {
        const BYTES: u64 = 64 * 1024;
        let dir = tempfile::tempdir().expect("test");
        let path = dir.path().join("p");
        let (log, written) = into_a_second_segment_made_ahead(&path, BYTES);
        let seg2: Vec<_> = written.iter().filter(|(at, _)| at.segment == 2).collect();
        let (last, _) = seg2.last().expect("test");
        let mut crashed = fs::read(log.path_of(2)).expect("test");
        drop(log);
        // The crash image, with the header of the second entry of segment 2 damaged.
        crashed[seg2[1].0.offset as usize + 5] ^= 0xff;
        fs::write(path.join(segment_name(2)), &crashed).expect("test");
        let log = PayloadLog::open(path, BYTES).expect("test");
        let scan = log.entries(2).expect("test");
        assert!(!scan.clean, "damaged in the middle");
        assert_eq!(scan.end, last.offset + last.entry_bytes());
        assert_eq!(
            scan.size, scan.end,
            "cut at the open, after the entries past damage"
        );
        assert_eq!(scan.entries.len(), seg2.len() - 1);
    }

    #[test]
    fn a_spare_holding_an_earlier_segment_s_entries_shows_none_of_them() {
        const BYTES: u64 = 64 * 1024;
        let dir = tempfile::tempdir().expect("test");
        let path = dir.path().join("p");
        let (log, _) = into_a_second_segment_made_ahead(&path, BYTES);
        // As if the rename of the spare into segment 2 were lost in a crash.
        let stale = fs::read(log.path_of(2)).expect("test");
        drop(log);
        fs::remove_file(path.join(segment_name(2))).expect("test");
        fs::write(path.join("next-segment.zeroed"), &stale).expect("test");
        let log = PayloadLog::open_preparing_segments(path.clone(), BYTES, 0).expect("test");
        assert!(log.spare_ready());
        let (at, _) = log
            .append(id(10_000), b"the first of a new segment")
            .expect("test");
        assert_eq!(file_len(&log, at.segment), BYTES, "made from the spare");
        log.sync().expect("test");
        let scan = log.entries(at.segment).expect("test");
        assert_eq!(scan.entries, vec![(at, id(10_000))]);
        assert!(scan.submissions.is_empty() && scan.withdrawn.is_empty());
        drop(log);
        // Cut at the close: to the new entry, the stale bytes after it gone.
        let len = fs::metadata(path.join(segment_name(at.segment)))
            .expect("test")
            .len();
        assert_eq!(len, at.offset + at.entry_bytes());
    }

    #[test]
    fn a_segment_a_backup_links_to_is_never_cut() {
        const BYTES: u64 = 64 * 1024;
        let dir = tempfile::tempdir().expect("test");
        let path = dir.path().join("p");
        let (log, _) = into_a_second_segment_made_ahead(&path, BYTES);
        let crashed = fs::read(log.path_of(2)).expect("test");
        drop(log);
        fs::write(path.join(segment_name(2)), &crashed).expect("test");
        let linked = dir.path().join("backup.seg");
        fs::hard_link(path.join(segment_name(2)), &linked).expect("test");
        let log = PayloadLog::open(path.clone(), BYTES).expect("test");
        assert_eq!(
            file_len(&log, 2),
            BYTES,
            "shared with a backup: left as it is"
        );
        drop(log);
        fs::remove_file(&linked).expect("test");
        let log = PayloadLog::open(path, BYTES).expect("test");
        assert!(file_len(&log, 2) < BYTES, "its own again: cut");
    }

    #[test]
    fn a_segment_that_grows_gives_way_to_a_spare_as_soon_as_one_is_ready() {
        const BYTES: u64 = 8 << 20;
        let dir = tempfile::tempdir().expect("test");
        let log =
            PayloadLog::open_preparing_segments(dir.path().join("p"), BYTES, 0).expect("test");
        let (mut n, mut written) = (0, Vec::new());
        append_until(&log, &mut n, &mut written, |_, at| {
            at.offset > ASK_EARLY_AT / 2
        });
        assert_eq!(log.spare_requests().0, 0);
        // Asked for at 1 MiB, long before a quarter of the segment.
        append_until(&log, &mut n, &mut written, |_, at| {
            at.offset + at.entry_bytes() >= ASK_EARLY_AT
        });
        assert_eq!(log.spare_requests().0, 1);
        wait_for_spare(&log);
        let (at, _) = log.append(id(n), b"into the spare").expect("test");
        assert_eq!(at.segment, 2, "the growing segment is sealed early");
        assert_eq!(file_len(&log, 2), BYTES);
        let first = file_len(&log, 1);
        assert!(first < BYTES / 4, "segment 1 stopped at {first} bytes");
        assert_eq!(first, log.entries(1).expect("test").end);
        assert_read_back(&log, &written);
    }

    #[test]
    fn no_spare_is_made_while_each_sync_serves_many_writes() {
        const BYTES: u64 = 64 * 1024;
        let dir = tempfile::tempdir().expect("test");
        let log =
            PayloadLog::open_preparing_segments(dir.path().join("p"), BYTES, 0).expect("test");
        // Eight writes per sync, past a quarter of the segment and into the next one.
        let mut n = 0u64;
        while log.end().segment < 2 {
            for _ in 0..8 {
                log.append(id(n), &[7u8; 1024]).expect("test");
                n += 1;
            }
            log.sync().expect("test");
        }
        assert_eq!(log.spare_requests().0, 0, "busy: no zeros written");
        assert_eq!(file_len(&log, 2), log.end().offset, "the next one grows");
        // Quieter again: one write per sync, and the next segment is made ahead.
        while log.spare_requests().0 == 0 {
            log.append(id(n), &[7u8; 1024]).expect("test");
            n += 1;
            log.sync().expect("test");
            assert!(log.end().segment < 4, "never asked for");
        }
    }
}
