//! Small payloads in append-only segment files beside the database.
//!
//! sled 0.34 rebuilds its page table at every open by reading its log back to its last
//! snapshot, and it rewrites a leaf with all its values whenever it consolidates one. Held
//! in sled, an 8 KiB payload cost 18 KB of log, and a restart with a million of them queued
//! read 17 GB. Here a payload is written once, at the end of the current segment file
//! (`payloads/<16 hex>.seg`), and the message record holds where: segment, offset, length.
//! The database keeps only records, a few hundred bytes each.
//!
//! Durability: the group commit `fdatasync`s every segment written since the previous one
//! (and the directory, when a segment was created) *before* it flushes the database, so a
//! record never reaches the disk before the payload it points at. An entry carries its
//! message id and CRC32s of its header and bytes: a read checks them, and a scan of a
//! segment stops at a tail a crash left half written.
//!
//! Segments are never modified once written. Space comes back when retention has purged
//! every payload a segment holds (the file is deleted), or most of them (the live ones are
//! copied to the current segment first): see `SledStore::purge`.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use serde::{Deserialize, Serialize};

use crate::error::StoreError;
use crate::types::MessageId;

/// A segment is sealed once it reaches this size and a new one is started.
pub(crate) const SEGMENT_BYTES: u64 = 64 << 20;
const HEADER: usize = 32;
const MAGIC: [u8; 4] = *b"TRP1";
const SUFFIX: &str = ".seg";

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

/// The segment files of one store.
pub(crate) struct PayloadLog {
    dir: PathBuf,
    segment_bytes: u64,
    appending: Mutex<Appending>,
    /// Open files for reads, by segment number.
    files: RwLock<HashMap<u64, Arc<File>>>,
}

/// The segment being appended to, and what the next sync must cover.
struct Appending {
    /// The highest segment number in use (the current one, if any).
    last_number: u64,
    current: Option<Current>,
    /// Segments sealed with writes the last sync did not cover.
    sealed_unsynced: Vec<Arc<File>>,
    /// A segment file was created since the last sync: its directory entry must be synced.
    created: bool,
}

struct Current {
    number: u64,
    file: Arc<File>,
    len: u64,
    /// Written since the last sync.
    dirty: bool,
}

fn segment_name(number: u64) -> String {
    format!("{number:016x}{SUFFIX}")
}

fn segment_number(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(SUFFIX)?;
    (hex.len() == 16)
        .then(|| u64::from_str_radix(hex, 16).ok())
        .flatten()
}

fn header_crc(header: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&header[..12]);
    h.update(&header[16..HEADER]);
    h.finalize()
}

/// The header of an entry: magic, payload length, payload CRC32, header CRC32, message id.
fn encode_header(id: MessageId, payload: &[u8]) -> [u8; HEADER] {
    let mut header = [0u8; HEADER];
    header[..4].copy_from_slice(&MAGIC);
    header[4..8].copy_from_slice(&(payload.len() as u32).to_be_bytes());
    header[8..12].copy_from_slice(&crc32fast::hash(payload).to_be_bytes());
    header[16..].copy_from_slice(&id.bytes());
    let crc = header_crc(&header);
    header[12..16].copy_from_slice(&crc.to_be_bytes());
    header
}

/// A header's message id, payload length and payload CRC, if it is whole.
fn decode_header(header: &[u8; HEADER]) -> Option<(MessageId, u32, u32)> {
    let field = |at: usize| {
        u32::from_be_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    if header[..4] != MAGIC || field(12) != header_crc(header) {
        return None;
    }
    let id = MessageId::from_bytes(&header[16..])?;
    Some((id, field(4), field(8)))
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
        fs::create_dir_all(&dir).map_err(StoreError::from_io)?;
        let last_number = list(&dir)?.last().copied().unwrap_or(0);
        Ok(PayloadLog {
            dir,
            segment_bytes,
            appending: Mutex::new(Appending {
                last_number,
                current: None,
                sealed_unsynced: Vec::new(),
                created: false,
            }),
            files: RwLock::new(HashMap::new()),
        })
    }

    /// The directory of the segments.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    fn appending(&self) -> MutexGuard<'_, Appending> {
        self.appending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends `payload` of message `id` to the current segment (page cache only: the
    /// group commit makes it durable).
    pub(crate) fn append(&self, id: MessageId, payload: &[u8]) -> Result<SegmentRef, StoreError> {
        let len = u32::try_from(payload.len()).map_err(|_| StoreError::Codec {
            what: "payload",
            reason: format!("{} bytes is too large for a payload segment", payload.len()),
        })?;
        let mut entry = Vec::with_capacity(HEADER + payload.len());
        entry.extend_from_slice(&encode_header(id, payload));
        entry.extend_from_slice(payload);
        let mut a = self.appending();
        let full = a
            .current
            .as_ref()
            .is_some_and(|c| c.len > 0 && c.len + entry.len() as u64 > self.segment_bytes);
        if full {
            a.seal();
        }
        if a.current.is_none() {
            let number = a.last_number + 1;
            let file = Arc::new(
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(self.dir.join(segment_name(number)))
                    .map_err(StoreError::from_io)?,
            );
            a.last_number = number;
            a.created = true;
            self.files
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(number, file.clone());
            a.current = Some(Current {
                number,
                file,
                len: 0,
                dirty: false,
            });
        }
        let Some(c) = a.current.as_mut() else {
            unreachable!("a current segment was just made")
        };
        // At an explicit offset: a failed write (disk full) is overwritten by the next one.
        c.file
            .write_all_at(&entry, c.len)
            .map_err(StoreError::from_io)?;
        let at = SegmentRef {
            segment: c.number,
            offset: c.len,
            len,
        };
        c.len += entry.len() as u64;
        c.dirty = true;
        Ok(at)
    }

    /// Makes every append made before this call durable: `fdatasync`s the segments
    /// written since the last sync, and the directory if a segment was created.
    pub(crate) fn sync(&self) -> std::io::Result<usize> {
        let (files, created) = {
            let mut a = self.appending();
            let mut files = std::mem::take(&mut a.sealed_unsynced);
            if let Some(c) = a.current.as_mut().filter(|c| c.dirty) {
                c.dirty = false;
                files.push(c.file.clone());
            }
            (files, std::mem::take(&mut a.created))
        };
        let synced = files.len();
        let result = files.iter().try_for_each(|f| f.sync_data()).and_then(|()| {
            if created {
                File::open(&self.dir)?.sync_all()
            } else {
                Ok(())
            }
        });
        if let Err(e) = result {
            // Not durable: the next sync tries them again.
            let mut a = self.appending();
            a.sealed_unsynced.extend(files);
            a.created |= created;
            return Err(e);
        }
        Ok(synced)
    }

    /// Seals the current segment: later appends go to a new one, so every segment that
    /// exists now is immutable (what a backup links).
    pub(crate) fn seal(&self) {
        self.appending().seal();
    }

    /// The segment being appended to, if any: never reclaimed.
    pub(crate) fn current(&self) -> Option<u64> {
        self.appending().current.as_ref().map(|c| c.number)
    }

    fn file(&self, segment: u64) -> Result<Arc<File>, StoreError> {
        if let Some(f) = self
            .files
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&segment)
        {
            return Ok(f.clone());
        }
        let f = Arc::new(
            File::open(self.dir.join(segment_name(segment))).map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    StoreError::NotFound(format!("payload segment {}", segment_name(segment)))
                } else {
                    StoreError::from_io(e)
                }
            })?,
        );
        self.files
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(segment, f.clone());
        Ok(f)
    }

    /// Reads the payload of message `id` at `at`, checking that the entry is whole and is that message's.
    pub(crate) fn read(&self, at: &SegmentRef, id: MessageId) -> Result<bytes::Bytes, StoreError> {
        let file = self.file(at.segment)?;
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
        let Some((found, len, crc)) = decode_header(&header) else {
            return Err(damaged(at, "its header does not match its checksum"));
        };
        if found != id || len != at.len {
            return Err(damaged(
                at,
                &format!(
                    "it holds {len} bytes of {found}, not {} bytes of {id}",
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

    /// The whole entries of a segment, in order, with their message ids; stops at a tail
    /// a crash left half written.
    pub(crate) fn entries(&self, segment: u64) -> Result<Vec<(SegmentRef, MessageId)>, StoreError> {
        let file = self.file(segment)?;
        let size = file.metadata().map_err(StoreError::from_io)?.len();
        let mut out = Vec::new();
        let mut offset = 0u64;
        let mut header = [0u8; HEADER];
        while offset + HEADER as u64 <= size {
            file.read_exact_at(&mut header, offset)
                .map_err(StoreError::from_io)?;
            let Some((id, len, _)) = decode_header(&header) else {
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
            out.push((at, id));
            offset += at.entry_bytes();
        }
        Ok(out)
    }

    /// The size of a segment file.
    pub(crate) fn segment_size(&self, segment: u64) -> Result<u64, StoreError> {
        Ok(self
            .file(segment)?
            .metadata()
            .map_err(StoreError::from_io)?
            .len())
    }

    /// Deletes a sealed segment (its payloads are all purged or copied elsewhere, durably).
    pub(crate) fn remove(&self, segment: u64) -> Result<bool, StoreError> {
        if self.current() == Some(segment) {
            return Ok(false);
        }
        self.files
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&segment);
        match fs::remove_file(self.path_of(segment)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::from_io(e)),
        }
    }
}

impl Appending {
    fn seal(&mut self) {
        if let Some(c) = self.current.take() {
            if c.dirty {
                self.sealed_unsynced.push(c.file);
            }
        }
    }
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
            refs.push((log.append(id(n), &payload).expect("test"), payload));
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
            .map(|s| log.entries(*s).expect("test").len())
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
        let a = log.append(id(1), b"first payload").expect("test");
        let b = log.append(id(2), b"second payload").expect("test");
        log.sync().expect("test");
        let file = log.path_of(a.segment);
        let mut bytes = fs::read(&file).expect("test");
        // Flip one payload byte of the first entry; cut the second short.
        bytes[HEADER + 2] ^= 1;
        bytes.truncate((b.offset + b.entry_bytes() - 3) as usize);
        fs::write(&file, &bytes).expect("test");
        drop(log);
        let log = PayloadLog::open(path, SEGMENT_BYTES).expect("test");
        assert!(matches!(log.read(&a, id(1)), Err(StoreError::Codec { .. })));
        assert!(log.read(&b, id(2)).is_err());
        assert_eq!(
            log.entries(a.segment).expect("test").len(),
            1,
            "the torn entry is not listed"
        );
        // A new process appends to a new segment.
        let c = log.append(id(3), b"third").expect("test");
        assert_eq!(c.segment, a.segment + 1);
        assert_eq!(c.offset, 0);
    }
}
