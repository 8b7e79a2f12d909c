//! Payloads up to the inline threshold, appended to segment files of the store's own.
//!
//! sled 0.34 keeps a value inside its leaf: every insert copies the leaf, and every tenth
//! change of a leaf rewrites it whole to the log, so a leaf of sixteen 8 KiB payloads went
//! to disk several times over (42 KiB written per 8 KiB package), and copying leaves was
//! the largest part of the relay's CPU at 8 KiB. Here a payload is written once, at the end
//! of the current segment, and sled keeps only where it is.
//!
//! A segment is `payload-log/NNNNNNNN.open` while it is written and the next flushes may
//! still have to sync it; once full, the committer syncs it and renames it to
//! `NNNNNNNN.seg` (sealed: every record in it is on disk). A record is a header — magic,
//! length, CRC-32 of the message id and the bytes, the message id — and the bytes.
//!
//! Durability: an append reaches the page cache before its writer asks for a commit; the
//! committer calls [`PayloadLog::sync`] in every flush, before it answers anyone, so what
//! was appended before a request is on disk when the request is answered (a SIGKILL loses
//! nothing that was appended: the page cache keeps it). A power loss can lose the unsynced
//! end of an open segment while sled kept an index entry pointing into it (sled may write
//! its log before the committer asks it to). Such entries belong to submissions never
//! acknowledged; on open, [`PayloadLog::open`] finds where each open segment's valid
//! records end, cuts the rest, and the store removes the messages whose entries point past
//! it.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// The size at which a segment is sealed and a new one started (32 MiB). A segment is
/// deleted when no payload in it is referenced any more; larger segments mean fewer files,
/// smaller ones return space sooner.
pub(crate) const SEGMENT_BYTES: u64 = 32 << 20;

const MAGIC: [u8; 4] = *b"tPL1";
/// Magic, length, CRC-32, message id.
pub(crate) const HEADER_BYTES: usize = 4 + 4 + 4 + 16;
/// Larger records are refused (the inline threshold is far below).
const MAX_RECORD: u32 = 1 << 30;

/// Where a payload is: its segment, the offset of its record, the payload's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PayloadAt {
    pub segment: u32,
    pub offset: u64,
    pub len: u32,
}

impl PayloadAt {
    /// The bytes the record takes in its segment.
    pub(crate) fn record_bytes(&self) -> u64 {
        HEADER_BYTES as u64 + u64::from(self.len)
    }
}

/// An open segment found on open: where its valid records end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Recovered {
    pub segment: u32,
    pub valid_end: u64,
    /// Bytes cut off after the last valid record (a write interrupted by a crash).
    pub cut: u64,
}

/// The payload log of one store.
pub(crate) struct PayloadLog {
    dir: PathBuf,
    /// [`SEGMENT_BYTES`], smaller in tests.
    segment_bytes: u64,
    active: Mutex<Active>,
    /// Every segment, for reads.
    files: RwLock<BTreeMap<u32, Arc<File>>>,
}

struct Active {
    number: u32,
    file: Arc<File>,
    len: u64,
    /// Appended to since the last sync.
    dirty: bool,
    /// The directory has an entry not synced yet (a new segment).
    dir_dirty: bool,
    /// Full segments not yet synced and sealed, oldest first.
    retired: Vec<(u32, Arc<File>)>,
    /// Appends whose index entry may not be written yet, by segment: such a segment is
    /// in use even if nothing refers to it yet.
    pending: BTreeMap<u32, usize>,
}

/// A payload just appended. Until it is dropped (after its index entry is written, or
/// the submission gave up), its segment counts as in use.
pub(crate) struct Appended<'a> {
    log: &'a PayloadLog,
    at: PayloadAt,
}

impl Appended<'_> {
    /// Where the payload is.
    pub(crate) fn at(&self) -> PayloadAt {
        self.at
    }
}

impl Drop for Appended<'_> {
    fn drop(&mut self) {
        let mut active = self.log.active();
        if let std::collections::btree_map::Entry::Occupied(mut e) =
            active.pending.entry(self.at.segment)
        {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

fn open_name(n: u32) -> String {
    format!("{n:08}.open")
}

fn sealed_name(n: u32) -> String {
    format!("{n:08}.seg")
}

/// The number and state of a segment file name (`None` for other files).
fn parse_name(name: &str) -> Option<(u32, bool)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != 8 {
        return None;
    }
    let n = stem.parse().ok()?;
    match ext {
        "open" => Some((n, false)),
        "seg" => Some((n, true)),
        _ => None,
    }
}

fn crc(id: &[u8; 16], bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(id);
    h.update(bytes);
    h.finalize()
}

fn header(id: &[u8; 16], bytes: &[u8]) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[..4].copy_from_slice(&MAGIC);
    h[4..8].copy_from_slice(&(bytes.len() as u32).to_be_bytes());
    h[8..12].copy_from_slice(&crc(id, bytes).to_be_bytes());
    h[12..].copy_from_slice(id);
    h
}

fn io_failure(e: std::io::Error) -> StoreError {
    StoreError::from_io(e)
}

impl PayloadLog {
    /// Opens (or creates) the log in `dir`, recovering its open segments.
    pub(crate) fn open(dir: &Path) -> Result<(Self, Vec<Recovered>), StoreError> {
        Self::open_with(dir, SEGMENT_BYTES)
    }

    fn open_with(dir: &Path, segment_bytes: u64) -> Result<(Self, Vec<Recovered>), StoreError> {
        fs::create_dir_all(dir).map_err(io_failure)?;
        let mut found: BTreeMap<u32, bool> = BTreeMap::new();
        for entry in fs::read_dir(dir).map_err(io_failure)? {
            let name = entry.map_err(io_failure)?.file_name();
            if let Some((n, sealed)) = name.to_str().and_then(parse_name) {
                // A rename is atomic, so both names never exist; if they did, the sealed
                // one would be the complete one.
                let e = found.entry(n).or_insert(sealed);
                *e |= sealed;
            }
        }
        let mut files = BTreeMap::new();
        let mut recovered = Vec::new();
        let mut renamed = false;
        let last = found.keys().next_back().copied();
        for (&n, &sealed) in &found {
            let path = dir.join(if sealed { sealed_name(n) } else { open_name(n) });
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io_failure)?;
            if !sealed {
                let (valid_end, len) = scan(&file)?;
                if len > valid_end {
                    file.set_len(valid_end).map_err(io_failure)?;
                }
                file.sync_all().map_err(io_failure)?;
                recovered.push(Recovered {
                    segment: n,
                    valid_end,
                    cut: len - valid_end,
                });
                // Every open segment but the last is full: seal it now that it is synced.
                if Some(n) != last {
                    fs::rename(&path, dir.join(sealed_name(n))).map_err(io_failure)?;
                    renamed = true;
                }
            }
            files.insert(n, Arc::new(file));
        }
        // Appends go to the last segment if it is still open, else to a new one.
        let (number, file, len, created) = match last {
            Some(n) if !found[&n] => {
                let file = files[&n].clone();
                let len = recovered.last().map_or(0, |r| r.valid_end);
                (n, file, len, false)
            }
            other => {
                let n = other.map_or(1, |n| n + 1);
                let file = Arc::new(create(dir, n)?);
                files.insert(n, file.clone());
                (n, file, 0, true)
            }
        };
        if renamed || created {
            crate::blob::sync_dir(dir)?;
        }
        let log = PayloadLog {
            dir: dir.to_owned(),
            segment_bytes,
            active: Mutex::new(Active {
                number,
                file,
                len,
                dirty: false,
                dir_dirty: false,
                retired: Vec::new(),
                pending: BTreeMap::new(),
            }),
            files: RwLock::new(files),
        };
        Ok((log, recovered))
    }

    fn active(&self) -> MutexGuard<'_, Active> {
        self.active.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends the payload of message `id`; it is durable after the next [`Self::sync`].
    pub(crate) fn append(&self, id: &[u8; 16], bytes: &[u8]) -> Result<Appended<'_>, StoreError> {
        let len = u32::try_from(bytes.len())
            .ok()
            .filter(|&l| l <= MAX_RECORD)
            .ok_or_else(|| StoreError::Codec {
                what: "payload",
                reason: format!("{} bytes is too large for the payload log", bytes.len()),
            })?;
        let record = HEADER_BYTES as u64 + u64::from(len);
        let mut active = self.active();
        if active.len > 0 && active.len + record > self.segment_bytes {
            self.rotate(&mut active)?;
        }
        let offset = active.len;
        let file = active.file.clone();
        let h = header(id, bytes);
        // Under the lock: records are contiguous, so a scan that meets a torn record knows
        // that nothing after it was completed either.
        let written = file
            .write_all_at(&h, offset)
            .and_then(|()| file.write_all_at(bytes, offset + HEADER_BYTES as u64));
        if let Err(e) = written {
            // Whatever part was written is overwritten by the next append.
            return Err(io_failure(e));
        }
        active.len += record;
        active.dirty = true;
        let segment = active.number;
        *active.pending.entry(segment).or_default() += 1;
        Ok(Appended {
            log: self,
            at: PayloadAt {
                segment,
                offset,
                len,
            },
        })
    }

    fn rotate(&self, active: &mut Active) -> Result<(), StoreError> {
        let n = active.number + 1;
        let file = Arc::new(create(&self.dir, n)?);
        self.files
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(n, file.clone());
        let old = std::mem::replace(&mut active.file, file);
        active.retired.push((active.number, old));
        active.number = n;
        active.len = 0;
        active.dirty = false;
        active.dir_dirty = true;
        Ok(())
    }

    /// Makes every completed append durable: syncs the open segment if it changed, syncs
    /// and seals full ones, and syncs the directory if its entries changed. Called by the
    /// committer in each flush.
    pub(crate) fn sync(&self) -> Result<(), StoreError> {
        let (file, retired, dir_dirty) = {
            let mut active = self.active();
            let file = std::mem::take(&mut active.dirty).then(|| active.file.clone());
            (
                file,
                std::mem::take(&mut active.retired),
                std::mem::take(&mut active.dir_dirty),
            )
        };
        let result = self.sync_files(file.as_deref(), &retired, dir_dirty);
        if result.is_err() {
            // Retry all of it next time.
            let mut active = self.active();
            active.dirty |= file.is_some();
            active.dir_dirty |= dir_dirty;
            let newer = std::mem::replace(&mut active.retired, retired);
            active.retired.extend(newer);
        }
        result
    }

    fn sync_files(
        &self,
        file: Option<&File>,
        retired: &[(u32, Arc<File>)],
        dir_dirty: bool,
    ) -> Result<(), StoreError> {
        if let Some(f) = file {
            f.sync_data().map_err(io_failure)?;
        }
        for (n, f) in retired {
            f.sync_data().map_err(io_failure)?;
            match fs::rename(self.dir.join(open_name(*n)), self.dir.join(sealed_name(*n))) {
                Ok(()) => {}
                // Deleted meanwhile: nothing referred to it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_failure(e)),
            }
        }
        if dir_dirty || !retired.is_empty() {
            crate::blob::sync_dir(&self.dir)?;
        }
        Ok(())
    }

    /// Reads the payload of message `id` at `at`, checking its record.
    pub(crate) fn read(&self, id: &[u8; 16], at: PayloadAt) -> Result<bytes::Bytes, StoreError> {
        let file = self
            .files
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&at.segment)
            .cloned()
            .ok_or_else(|| damaged(at, "its segment file is missing"))?;
        let mut buf = vec![0u8; HEADER_BYTES + at.len as usize];
        file.read_exact_at(&mut buf, at.offset).map_err(|e| {
            if e.kind() == std::io::ErrorKind::UnexpectedEof {
                damaged(at, "the segment ends before the record")
            } else {
                io_failure(e)
            }
        })?;
        let (h, body) = buf.split_at(HEADER_BYTES);
        if h[..4] != MAGIC
            || h[4..8] != at.len.to_be_bytes()
            || h[12..] != id[..]
            || h[8..12] != crc(id, body).to_be_bytes()
        {
            return Err(damaged(
                at,
                "the record does not match (checksum, length or id)",
            ));
        }
        Ok(bytes::Bytes::from(buf).slice(HEADER_BYTES..))
    }

    /// Segments that nothing may refer to: older than the one appends go to, with no
    /// append still waiting for its index entry. Call under the store's lock, so that no
    /// index entry is being written meanwhile.
    pub(crate) fn settled_segments(&self) -> Vec<u32> {
        let (active, pending): (u32, Vec<u32>) = {
            let a = self.active();
            (a.number, a.pending.keys().copied().collect())
        };
        self.files
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .filter(|n| *n < active && !pending.contains(n))
            .collect()
    }

    /// Every segment with its length so far and an open handle, oldest first: a backup
    /// taken under the store's lock copies these prefixes (the handle reads a segment even
    /// if retention deletes it meanwhile).
    pub(crate) fn snapshot(&self) -> Result<Vec<(u32, u64, Arc<File>)>, StoreError> {
        let (active, len) = {
            let a = self.active();
            (a.number, a.len)
        };
        let files = self.files.read().unwrap_or_else(|p| p.into_inner());
        files
            .iter()
            .map(|(&n, f)| {
                let size = if n == active {
                    len
                } else {
                    f.metadata().map_err(io_failure)?.len()
                };
                Ok((n, size, f.clone()))
            })
            .collect()
    }

    /// The bytes the segments take.
    pub(crate) fn disk_bytes(&self) -> Result<u64, StoreError> {
        Ok(self.snapshot()?.iter().map(|(_, len, _)| len).sum())
    }

    /// Deletes segment `n`, one of [`Self::settled_segments`] that nothing refers to any
    /// more; returns its size.
    pub(crate) fn remove_segment(&self, n: u32) -> Result<u64, StoreError> {
        let removed = self
            .files
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&n);
        let Some(file) = removed else {
            return Ok(0);
        };
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        // A full segment may not be sealed yet if no flush came since it filled.
        for name in [sealed_name(n), open_name(n)] {
            match fs::remove_file(self.dir.join(name)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_failure(e)),
            }
        }
        Ok(size)
    }

    /// The numbers of every segment, oldest first.
    pub(crate) fn segment_numbers(&self) -> Vec<u32> {
        self.files
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .copied()
            .collect()
    }
}

/// The file name of a sealed segment (backups keep segments under these names).
pub(crate) fn segment_file_name(n: u32) -> String {
    sealed_name(n)
}

fn damaged(at: PayloadAt, reason: &str) -> StoreError {
    StoreError::Codec {
        what: "payload",
        reason: format!(
            "segment {} offset {} ({} bytes): {reason}",
            at.segment, at.offset, at.len
        ),
    }
}

fn create(dir: &Path, n: u32) -> Result<File, StoreError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dir.join(open_name(n)))
        .map_err(io_failure)
}

/// Reads a segment from the start; returns where its valid records end, and its length.
fn scan(file: &File) -> Result<(u64, u64), StoreError> {
    let len = file.metadata().map_err(io_failure)?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let mut at = 0u64;
    let mut h = [0u8; HEADER_BYTES];
    let mut body = Vec::new();
    loop {
        if reader.read_exact(&mut h).is_err() || h[..4] != MAGIC {
            break;
        }
        let n = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        if n > MAX_RECORD || at + (HEADER_BYTES as u64) + u64::from(n) > len {
            break;
        }
        body.resize(n as usize, 0);
        if reader.read_exact(&mut body).is_err() {
            break;
        }
        let mut id = [0u8; 16];
        id.copy_from_slice(&h[12..]);
        if h[8..12] != crc(&id, &body).to_be_bytes() {
            break;
        }
        at += HEADER_BYTES as u64 + u64::from(n);
    }
    Ok((at, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> [u8; 16] {
        [n; 16]
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .expect("list")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn appends_read_back_across_segments_and_full_ones_are_sealed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, recovered) = PayloadLog::open_with(dir.path(), 4096).expect("open");
        assert!(recovered.is_empty());
        let mut at = Vec::new();
        for n in 0..10u8 {
            let bytes = vec![n; 1000 + usize::from(n)];
            let a = log.append(&id(n), &bytes).expect("append").at();
            at.push((n, a, bytes));
        }
        // Three records of ~1 KiB fit in 4 KiB: four segments.
        assert_eq!(log.segment_numbers(), vec![1, 2, 3, 4]);
        for (n, a, bytes) in &at {
            assert_eq!(&log.read(&id(*n), *a).expect("read")[..], &bytes[..]);
        }
        assert_eq!(
            names(dir.path()),
            [
                "00000001.open",
                "00000002.open",
                "00000003.open",
                "00000004.open"
            ]
        );
        log.sync().expect("sync");
        assert_eq!(
            names(dir.path()),
            [
                "00000001.seg",
                "00000002.seg",
                "00000003.seg",
                "00000004.open"
            ]
        );
        drop(log);
        let (log, recovered) = PayloadLog::open_with(dir.path(), 4096).expect("reopen");
        assert_eq!(recovered.len(), 1, "only the open segment is scanned");
        assert_eq!(recovered[0].segment, 4);
        assert_eq!(recovered[0].cut, 0);
        for (n, a, bytes) in &at {
            assert_eq!(&log.read(&id(*n), *a).expect("read")[..], &bytes[..]);
        }
    }

    #[test]
    fn a_torn_tail_is_cut_on_open_and_appends_continue_after_the_last_whole_record() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, _) = PayloadLog::open_with(dir.path(), 1 << 20).expect("open");
        let a = log.append(&id(1), b"first").expect("append").at();
        let b = log.append(&id(2), b"second").expect("append").at();
        let c = log.append(&id(3), &[7u8; 3000]).expect("append").at();
        drop(log);
        // A crash in the middle of the third record: its end never reached the disk.
        let path = dir.path().join("00000001.open");
        let f = OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open file");
        f.set_len(c.offset + 100).expect("truncate");
        drop(f);
        let (log, recovered) = PayloadLog::open_with(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(
            recovered,
            vec![Recovered {
                segment: 1,
                valid_end: c.offset,
                cut: 100
            }]
        );
        assert_eq!(&log.read(&id(1), a).expect("first")[..], b"first");
        assert_eq!(&log.read(&id(2), b).expect("second")[..], b"second");
        assert!(log.read(&id(3), c).is_err(), "the torn record is gone");
        let d = log.append(&id(4), b"fourth").expect("append").at();
        assert_eq!(
            d.offset, c.offset,
            "the next append overwrites the torn one"
        );
        assert_eq!(&log.read(&id(4), d).expect("fourth")[..], b"fourth");
    }

    #[test]
    fn damaged_or_mismatched_records_are_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, _) = PayloadLog::open_with(dir.path(), 1 << 20).expect("open");
        let a = log.append(&id(1), b"payload bytes").expect("append").at();
        assert!(log.read(&id(2), a).is_err(), "another message's id");
        let longer = PayloadAt {
            len: a.len + 1,
            ..a
        };
        assert!(log.read(&id(1), longer).is_err(), "another length");
        let path = dir.path().join("00000001.open");
        let f = OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open file");
        f.write_all_at(b"X", a.offset + HEADER_BYTES as u64 + 3)
            .expect("flip a byte");
        let e = log.read(&id(1), a).expect_err("checksum");
        assert!(e.to_string().contains("does not match"), "{e}");
    }

    #[test]
    fn only_older_segments_without_pending_appends_are_settled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, _) = PayloadLog::open_with(dir.path(), 2048).expect("open");
        let first = log.append(&id(1), &[1u8; 1500]).expect("append");
        drop(log.append(&id(2), &[2u8; 1500]).expect("append"));
        let third = log.append(&id(3), &[3u8; 1500]).expect("append");
        assert_eq!(log.segment_numbers(), vec![1, 2, 3]);
        // 1 still waits for its index entry, 3 takes appends.
        assert_eq!(log.settled_segments(), vec![2]);
        drop(first);
        assert_eq!(log.settled_segments(), vec![1, 2]);
        assert!(log.remove_segment(2).expect("remove") > 0);
        assert_eq!(log.segment_numbers(), vec![1, 3]);
        drop(third);
        log.sync().expect("segment 2 is gone: sealing skips it");
        assert_eq!(names(dir.path()), ["00000001.seg", "00000003.open"]);
    }
}
