//! Consistent backups while running, and restore.
//!
//! A backup holds the store's write lock while it copies every database record into one
//! checksummed file and links (or copies) the blob files, so the snapshot is exactly the
//! state between two operations. Intake pauses for that time (measured and reported in
//! `docs/benchmarks.md`); reads continue.
//!
//! Payload segments are sealed at that moment (later payloads go to a new one), so every
//! segment file is immutable from then on and linked like a blob; their checksums are
//! computed after the lock is released, from the backup's own links.
//!
//! Layout: `manifest.json` (format, time, counts, SHA-256 of `records.bin` and of every
//! segment), `records.bin` (length-prefixed key/value pairs), `blobs/<2 hex>/<64 hex>`,
//! `payloads/<16 hex>.seg`.

use std::fs::{self, File};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use truc_edxml::Sha256Digest;

use crate::blob::sync_dir;
use crate::error::StoreError;
use crate::sled_store::SledStore;
use crate::types::{BackupReport, Timestamp};
use crate::Result;

const BACKUP_FORMAT: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format: u32,
    created_at: Timestamp,
    records: u64,
    blobs: u64,
    records_sha256: Sha256Digest,
    /// Payload segment files (backups made before the segments have none).
    #[serde(default)]
    segments: Vec<SegmentFile>,
}

/// A payload segment file of a backup.
#[derive(Debug, Serialize, Deserialize)]
struct SegmentFile {
    name: String,
    bytes: u64,
    sha256: Sha256Digest,
}

/// Links `from` to `to`, or copies it where links cannot be made (across file systems).
/// Never writes over an existing `to`: it may be a link to the live file itself, which a
/// copy would truncate.
fn link_or_copy(from: &Path, to: &Path) -> std::io::Result<()> {
    match fs::hard_link(from, to) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(e),
        Err(_) => {
            let mut source = File::open(from)?;
            let mut copy = create_private(to)?;
            std::io::copy(&mut source, &mut copy)?;
            copy.sync_all()
        }
    }
}

/// SHA-256 and length of a file, read in 1 MiB pieces.
fn hash_file(path: &Path) -> Result<(Sha256Digest, u64)> {
    let mut f = File::open(path).map_err(StoreError::from_io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).map_err(StoreError::from_io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((Sha256Digest(hasher.finalize().into()), total))
}

/// Creates a new file only the relay's user can read: a backup holds every document.
fn create_private(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Creates a directory (and its parents) only the relay's user can enter.
fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(StoreError::from_io)
}

/// Checks that `dir` is a new directory, or an empty one, and makes it if it is absent.
/// For a backup (`store_dir` given), an existing one must be one only the store's owner
/// can write: another user could read the documents, or change the backup before a
/// restore.
fn empty_or_absent(dir: &Path, store_dir: Option<&Path>) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    if let Some(parent) = dir.parent() {
        fs::create_dir_all(parent).map_err(StoreError::from_io)?;
    }
    // Made here, or found: one another user made in between is checked like any other.
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(StoreError::from_io(e)),
    }
    let meta = fs::metadata(dir).map_err(StoreError::from_io)?;
    if !meta.is_dir() {
        return Err(StoreError::Backup(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    if fs::read_dir(dir)
        .map_err(StoreError::from_io)?
        .next()
        .is_some()
    {
        return Err(StoreError::Backup(format!(
            "{} is not empty; give a new directory",
            dir.display()
        )));
    }
    let Some(store_dir) = store_dir else {
        return Ok(());
    };
    let owner = fs::metadata(store_dir).map_err(StoreError::from_io)?.uid();
    let mode = meta.permissions().mode() & 0o777;
    if meta.uid() != owner || mode & 0o022 != 0 {
        return Err(StoreError::Backup(format!(
            "{} may be written by other users (owner uid {}, mode {mode:o}): give a directory owned by the relay's user (uid {owner}) that only it can write (chmod go-w), or a new one",
            dir.display(),
            meta.uid()
        )));
    }
    Ok(())
}

/// Hashes what it writes.
struct HashingWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

pub(crate) fn backup(store: &SledStore, dir: &Path, now: Timestamp) -> Result<BackupReport> {
    let records_path = dir.join("records.bin");
    let segments_dir = dir.join("payloads");
    let (records, records_sha256, mut bytes, blobs, segment_names) = {
        let _paused = store.lock_for_backup();
        // Checked under the lock: two backups into one new directory must not both find it
        // empty (the second would link over the first's files).
        empty_or_absent(dir, Some(store.dir()))?;
        // Every segment up to `sealed` is immutable from here on: later payloads start a
        // new one. The records copied point only into those (a payload is appended, and
        // made durable, before its record is written); submissions appended and not yet
        // applied are in them too, after the applied position the records copied hold, so
        // the restored store's first open writes them.
        let sealed = store.payload_log().seal();
        let file = create_private(&records_path).map_err(StoreError::from_io)?;
        let mut w = HashingWriter {
            inner: BufWriter::with_capacity(1 << 20, file),
            hasher: Sha256::new(),
            bytes: 0,
        };
        let mut records = 0u64;
        for (tree_id, tree) in [
            (0u8, (**store.db()).clone()),
            (1u8, store.payload_tree().clone()),
        ] {
            for kv in tree.iter() {
                let (k, v) = kv?;
                w.write_all(&[tree_id]).map_err(StoreError::from_io)?;
                for part in [&k[..], &v[..]] {
                    w.write_all(&(part.len() as u32).to_be_bytes())
                        .and_then(|()| w.write_all(part))
                        .map_err(StoreError::from_io)?;
                }
                records += 1;
            }
        }
        w.flush().map_err(StoreError::from_io)?;
        let bytes = w.bytes;
        let sha = Sha256Digest(w.hasher.finalize().into());
        let file = w
            .inner
            .into_inner()
            .map_err(|e| StoreError::from_io(e.into_error()))?;
        file.sync_all().map_err(StoreError::from_io)?;

        let mut blobs = 0u64;
        let blob_root = store.blob_dir().root();
        let target_root = dir.join("blobs");
        for i in 0..=255u8 {
            let sub = format!("{i:02x}");
            let entries = match fs::read_dir(blob_root.join(&sub)) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::from_io(e)),
            };
            let target = target_root.join(&sub);
            create_private_dir(&target)?;
            for entry in entries {
                let entry = entry.map_err(StoreError::from_io)?;
                let dest = target.join(entry.file_name());
                // Blob files are immutable: a hard link is a consistent copy.
                match link_or_copy(&entry.path(), &dest) {
                    Ok(()) => blobs += 1,
                    // Deleted by retention after the snapshot no longer referenced it.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(StoreError::from_io(e)),
                }
            }
            sync_dir(&target)?;
        }

        create_private_dir(&segments_dir)?;
        let mut segment_names = Vec::new();
        for segment in store.payload_log().segments()? {
            if segment > sealed {
                continue;
            }
            let from = store.payload_log().path_of(segment);
            let Some(name) = from.file_name().map(|n| n.to_owned()) else {
                continue;
            };
            let to = segments_dir.join(&name);
            match link_or_copy(&from, &to) {
                // Durable as it is now, size included (the segment sealed above was cut to
                // its entries, and its last ones may be waiting for the payload syncer).
                Ok(()) => {
                    File::open(&to)
                        .and_then(|f| f.sync_all())
                        .map_err(StoreError::from_io)?;
                    segment_names.push(name);
                }
                // Reclaimed by retention after the snapshot no longer referenced it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::from_io(e)),
            }
        }
        sync_dir(&segments_dir)?;
        (records, sha, bytes, blobs, segment_names)
    };
    let mut segments = Vec::with_capacity(segment_names.len());
    for name in segment_names {
        let (sha256, size) = hash_file(&segments_dir.join(&name))?;
        bytes += size;
        segments.push(SegmentFile {
            name: name.to_string_lossy().into_owned(),
            bytes: size,
            sha256,
        });
    }
    let manifest = Manifest {
        format: BACKUP_FORMAT,
        created_at: now,
        records,
        blobs,
        records_sha256,
        segments,
    };
    let manifest_bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| StoreError::Codec {
        what: "backup manifest",
        reason: e.to_string(),
    })?;
    bytes += manifest_bytes.len() as u64;
    let mut f = create_private(&dir.join("manifest.json")).map_err(StoreError::from_io)?;
    f.write_all(&manifest_bytes)
        .and_then(|()| f.sync_all())
        .map_err(StoreError::from_io)?;
    sync_dir(dir)?;
    store.record_backup(dir, now)?;
    Ok(BackupReport {
        path: dir.to_owned(),
        records,
        blobs,
        segments: manifest.segments.len() as u64,
        bytes,
    })
}

/// What a restore did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreReport {
    /// Records restored.
    pub records: u64,
    /// Blob files restored.
    pub blobs: u64,
    /// Payload segment files restored.
    pub segments: u64,
}

impl SledStore {
    /// Restores the backup in `backup` into a new store directory `target` (which must be
    /// empty or absent), checking every checksum. Open it with [`SledStore::open`] after.
    pub fn restore(backup: &Path, target: &Path) -> Result<RestoreReport> {
        let manifest: Manifest =
            serde_json::from_slice(&fs::read(backup.join("manifest.json")).map_err(|e| {
                StoreError::Backup(format!(
                    "{} is not a truc backup (manifest.json: {e})",
                    backup.display()
                ))
            })?)
            .map_err(|e| StoreError::Backup(format!("manifest.json is unreadable: {e}")))?;
        if manifest.format != BACKUP_FORMAT {
            return Err(StoreError::Backup(format!(
                "backup format {} is not supported",
                manifest.format
            )));
        }
        // Verify the records file before touching the target.
        if hash_file(&backup.join("records.bin"))?.0 != manifest.records_sha256 {
            return Err(StoreError::Backup(
                "records.bin does not match its checksum: the backup is damaged".into(),
            ));
        }

        empty_or_absent(target, None)?;
        let log_segment_bytes = crate::sled_store::LOG_SEGMENT_BYTES;
        let db = crate::sled_store::sled_config(
            &target.join("db"),
            log_segment_bytes,
            crate::StoreConfig::default().cache_bytes,
        )
        .open()?;
        let payloads = db.open_tree(crate::sled_store::PAYLOAD_TREE)?;
        let mut reader = BufReader::with_capacity(
            1 << 20,
            File::open(backup.join("records.bin")).map_err(StoreError::from_io)?,
        );
        let mut records = 0u64;
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        let mut tree_id = [0u8; 1];
        loop {
            match reader.read_exact(&mut tree_id) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(StoreError::from_io(e)),
            }
            let truncated = || StoreError::Backup("records.bin ends inside a record".into());
            let k = read_part(&mut reader)?.ok_or_else(truncated)?;
            let v = read_part(&mut reader)?.ok_or_else(truncated)?;
            match tree_id[0] {
                0 => {
                    batch.insert(k, v);
                    in_batch += 1;
                }
                1 => {
                    payloads.insert(k, v)?;
                }
                other => {
                    return Err(StoreError::Backup(format!(
                        "records.bin names an unknown tree {other}"
                    )))
                }
            }
            records += 1;
            if in_batch == 10_000 {
                db.apply_batch(std::mem::take(&mut batch))?;
                in_batch = 0;
            }
        }
        db.apply_batch(batch)?;
        if records != manifest.records {
            return Err(StoreError::Backup(format!(
                "records.bin holds {records} records, the manifest says {}",
                manifest.records
            )));
        }
        db.flush()?;
        drop(db);

        let mut blobs = 0u64;
        let source_root = backup.join("blobs");
        let target_root = target.join("blobs");
        for i in 0..=255u8 {
            let sub = format!("{i:02x}");
            let target_dir = target_root.join(&sub);
            fs::create_dir_all(&target_dir).map_err(StoreError::from_io)?;
            let entries = match fs::read_dir(source_root.join(&sub)) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(StoreError::from_io(e)),
            };
            for entry in entries {
                let entry = entry.map_err(StoreError::from_io)?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let data = fs::read(entry.path()).map_err(StoreError::from_io)?;
                if Sha256Digest::of(&data).to_hex() != name {
                    return Err(StoreError::Backup(format!(
                        "blob {name} does not match its checksum: the backup is damaged"
                    )));
                }
                let dest = target_dir.join(&name);
                let mut out = File::create(&dest).map_err(StoreError::from_io)?;
                out.write_all(&data)
                    .and_then(|()| out.sync_all())
                    .map_err(StoreError::from_io)?;
                blobs += 1;
            }
            sync_dir(&target_dir)?;
        }
        fs::create_dir_all(target_root.join("tmp")).map_err(StoreError::from_io)?;
        sync_dir(&target_root)?;

        let segments_dir = target.join("payloads");
        fs::create_dir_all(&segments_dir).map_err(StoreError::from_io)?;
        for segment in &manifest.segments {
            if crate::payload_log::segment_number(&segment.name).is_none() {
                return Err(StoreError::Backup(format!(
                    "the manifest names a payload segment {:?}: the backup is damaged",
                    segment.name
                )));
            }
            let from = backup.join("payloads").join(&segment.name);
            let to = segments_dir.join(&segment.name);
            let copied = fs::copy(&from, &to).and_then(|_| File::open(&to)?.sync_all());
            copied.map_err(|e| {
                StoreError::Backup(format!("payload segment {}: {e}", segment.name))
            })?;
            if hash_file(&to)? != (segment.sha256, segment.bytes) {
                return Err(StoreError::Backup(format!(
                    "payload segment {} does not match its checksum: the backup is damaged",
                    segment.name
                )));
            }
        }
        sync_dir(&segments_dir)?;
        SledStore::write_restored_meta(target, manifest.created_at, log_segment_bytes)?;
        Ok(RestoreReport {
            records,
            blobs,
            segments: manifest.segments.len() as u64,
        })
    }
}

fn read_part(r: &mut impl Read) -> Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(StoreError::from_io(e)),
    }
    let mut part = vec![0u8; u32::from_be_bytes(len) as usize];
    r.read_exact(&mut part)
        .map_err(|e| StoreError::Backup(format!("records.bin is truncated: {e}")))?;
    Ok(Some(part))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crash_prefix::document;
    use crate::{Store, StoreConfig};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_backups_into_one_new_directory_leave_the_live_store_whole() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = StoreConfig {
            inline_threshold: 1024,
            ..StoreConfig::default()
        };
        let store =
            std::sync::Arc::new(SledStore::open(&dir.path().join("store"), config).expect("open"));
        // Payloads in a segment and in a blob file: both are linked into a backup.
        let mut sent = Vec::new();
        for (n, bytes) in [(1, vec![1u8; 100]), (2, vec![2u8; 300_000])] {
            let r = store
                .submit(document(n, &bytes, None))
                .await
                .expect("submit");
            sent.push((r.record().id, bytes));
        }
        // Both requests arrive while something else holds the store's lock (another
        // backup), so both looked at the directory before either linked anything.
        let target = dir.path().join("nightly");
        let lock = store.lock_for_backup();
        let attempts: Vec<_> = (0..2)
            .map(|_| {
                let (store, target) = (store.clone(), target.clone());
                std::thread::spawn(move || backup(&store, &target, Timestamp::now()))
            })
            .collect();
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(lock);
        let outcomes: Vec<_> = attempts
            .into_iter()
            .map(|t| t.join().expect("thread"))
            .collect();
        assert_eq!(
            outcomes.iter().filter(|o| o.is_ok()).count(),
            1,
            "one backup, the other refused: {outcomes:?}"
        );
        for (id, bytes) in &sent {
            let payload = store.payload(*id).await.expect("payload");
            let read = payload.read_all().expect("read");
            assert_eq!(&read[..], &bytes[..], "the live payload of {id} is whole");
        }
        let restored = dir.path().join("restored");
        SledStore::restore(&target, &restored).expect("the backup restores");
    }
}
