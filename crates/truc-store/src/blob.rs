//! Large payloads as content-addressed files beside the database.
//!
//! A package of hundreds of megabytes does not belong in the database's log. It is written
//! to a temporary file while it arrives, fsynced, then renamed to its SHA-256 name; the
//! directory entry is made durable by the store's group commit before the message that
//! references it is acknowledged. Identical packages share one file (reference counted in
//! the database).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use truc_edxml::Sha256Digest;

use crate::error::StoreError;

/// The blob directory: `blobs/<2 hex>/<64 hex>`, with `blobs/tmp/` for files being written.
#[derive(Debug, Clone)]
pub(crate) struct BlobDir {
    root: PathBuf,
}

impl BlobDir {
    /// Opens (creating) the blob directory and removes temporary files left by a crash.
    pub(crate) fn open(root: PathBuf) -> Result<Self, StoreError> {
        fs::create_dir_all(root.join("tmp")).map_err(StoreError::from_io)?;
        for entry in fs::read_dir(root.join("tmp")).map_err(StoreError::from_io)? {
            let entry = entry.map_err(StoreError::from_io)?;
            let _ = fs::remove_file(entry.path());
        }
        // The 256 shard directories are made on first use (most payloads stay inline).
        Ok(BlobDir { root })
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob with this digest lives.
    pub(crate) fn path_of(&self, sha: &Sha256Digest) -> PathBuf {
        let hex = sha.to_hex();
        self.root.join(&hex[..2]).join(hex)
    }

    /// The directory holding the blob with this digest (fsynced at commit).
    pub(crate) fn dir_of(&self, sha: &Sha256Digest) -> PathBuf {
        self.root.join(&sha.to_hex()[..2])
    }

    /// Starts a new temporary blob.
    pub(crate) fn writer(&self) -> Result<BlobWriter, StoreError> {
        let path = self
            .root
            .join("tmp")
            .join(format!("{}.part", ulid::Ulid::new()));
        let file = File::create(&path).map_err(StoreError::from_io)?;
        Ok(BlobWriter {
            file: Some(file),
            path,
            hasher: Some(Sha256::new()),
            size: 0,
        })
    }

    /// Moves a staged payload to its content address (or drops it if identical content is
    /// already there). The caller makes the directory durable before acknowledging.
    pub(crate) fn install(&self, staged: StagedPayload) -> Result<PathBuf, StoreError> {
        let target = self.path_of(&staged.sha256);
        if target.exists() {
            staged.discard();
            return Ok(target);
        }
        let shard = self.dir_of(&staged.sha256);
        if !shard.exists() {
            // Made by this call or a concurrent one: either way its entry in the root must
            // be durable before a blob in it is acknowledged.
            match fs::create_dir(&shard) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    return Err(StoreError::from_io(e))
                }
                _ => sync_dir(&self.root)?,
            }
        }
        fs::rename(&staged.path, &target).map_err(StoreError::from_io)?;
        staged.forget();
        Ok(target)
    }

    /// Writes bytes held in memory as a blob (data fsynced; the directory at commit).
    pub(crate) fn write_bytes(&self, bytes: &[u8]) -> Result<StagedPayload, StoreError> {
        let mut w = self.writer()?;
        w.write(bytes)?;
        w.finish()
    }

    /// The digests of the blob files present (files named otherwise are not listed).
    pub(crate) fn stored(&self) -> Result<Vec<Sha256Digest>, StoreError> {
        let mut found = Vec::new();
        for shard in fs::read_dir(&self.root).map_err(StoreError::from_io)? {
            let shard = shard.map_err(StoreError::from_io)?;
            let name = shard.file_name();
            let Some(prefix) = name.to_str().filter(|n| n.len() == 2) else {
                continue;
            };
            if !shard.file_type().map_err(StoreError::from_io)?.is_dir() {
                continue;
            }
            for file in fs::read_dir(shard.path()).map_err(StoreError::from_io)? {
                let file = file.map_err(StoreError::from_io)?;
                if let Some(sha) = file
                    .file_name()
                    .to_str()
                    .filter(|n| n.starts_with(prefix))
                    .and_then(Sha256Digest::from_hex)
                {
                    found.push(sha);
                }
            }
        }
        Ok(found)
    }

    /// Where blob files no message uses are set aside (see [`set_aside`](Self::set_aside)).
    pub(crate) fn unused_dir(&self) -> PathBuf {
        self.root.join("unused")
    }

    /// Moves the blob with this digest to [`unused_dir`](Self::unused_dir), stamping it
    /// with the time of the move (its modification time, which nothing else changes).
    pub(crate) fn set_aside(&self, sha: &Sha256Digest) -> Result<(), StoreError> {
        let dir = self.unused_dir();
        fs::create_dir_all(&dir).map_err(StoreError::from_io)?;
        let to = dir.join(sha.to_hex());
        fs::rename(self.path_of(sha), &to).map_err(StoreError::from_io)?;
        File::options()
            .write(true)
            .open(&to)
            .and_then(|f| f.set_modified(std::time::SystemTime::now()))
            .map_err(StoreError::from_io)
    }

    /// Deletes the files set aside longer than `age` ago (by the time of their move);
    /// returns how many and their bytes.
    pub(crate) fn delete_unused_older_than(
        &self,
        age: Duration,
    ) -> Result<(usize, u64), StoreError> {
        let entries = match fs::read_dir(self.unused_dir()) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((0, 0)),
            Err(e) => return Err(StoreError::from_io(e)),
        };
        let now = std::time::SystemTime::now();
        let (mut files, mut bytes) = (0, 0);
        for entry in entries {
            let entry = entry.map_err(StoreError::from_io)?;
            let meta = entry.metadata().map_err(StoreError::from_io)?;
            // Stamped at the move (a hard link made or removed since, by a backup, changes
            // the change time, not this); a file whose time cannot be read is kept.
            let waited = meta
                .modified()
                .ok()
                .and_then(|moved| now.duration_since(moved).ok());
            if meta.is_file() && waited.is_some_and(|w| w >= age) {
                fs::remove_file(entry.path()).map_err(StoreError::from_io)?;
                files += 1;
                bytes += meta.len();
            }
        }
        Ok((files, bytes))
    }

    /// Deletes a blob file; returns the bytes freed.
    pub(crate) fn remove(&self, sha: &Sha256Digest) -> Result<u64, StoreError> {
        let path = self.path_of(sha);
        match fs::metadata(&path) {
            Ok(meta) => {
                fs::remove_file(&path).map_err(StoreError::from_io)?;
                Ok(meta.len())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(StoreError::from_io(e)),
        }
    }
}

/// Makes a directory's entries (a rename, a new file) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(StoreError::from_io)
}

/// Writes a payload to a temporary file as it arrives, hashing it.
///
/// Dropping a writer without [`finish`](Self::finish) removes the file, so an interrupted
/// upload leaves nothing behind.
#[derive(Debug)]
pub struct BlobWriter {
    file: Option<File>,
    path: PathBuf,
    /// `None` once the caller said it hashes the bytes itself.
    hasher: Option<Sha256>,
    size: u64,
}

impl BlobWriter {
    /// Appends bytes.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let file = self.file.as_mut().ok_or(StoreError::Closed)?;
        file.write_all(bytes).map_err(StoreError::from_io)?;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(bytes);
        }
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Stops hashing what is written, for a caller that hashes the very same bytes itself
    /// (the relay's package reader reads every byte it writes here) and names the digest
    /// in [`finish_with_digest`](Self::finish_with_digest): hashing is the costliest part
    /// of receiving a large package, and once is enough.
    pub fn without_hashing(mut self) -> Self {
        self.hasher = None;
        self
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Flushes the data to disk and returns the staged payload, named by the SHA-256 of
    /// what was written.
    pub fn finish(mut self) -> Result<StagedPayload, StoreError> {
        let hasher = self.hasher.take().ok_or_else(|| StoreError::Codec {
            what: "payload",
            reason: "its writer did not hash it: finish it with the digest of what was written"
                .into(),
        })?;
        let sha256 = Sha256Digest(hasher.finalize().into());
        self.finish_with_digest(sha256)
    }

    /// Flushes the data to disk and returns the staged payload, named by `sha256`: the
    /// digest of exactly the bytes written, computed by the caller (see
    /// [`without_hashing`](Self::without_hashing)).
    pub fn finish_with_digest(mut self, sha256: Sha256Digest) -> Result<StagedPayload, StoreError> {
        let file = self.file.take().ok_or(StoreError::Closed)?;
        file.sync_all().map_err(StoreError::from_io)?;
        drop(file);
        Ok(StagedPayload {
            path: std::mem::take(&mut self.path),
            sha256,
            size: self.size,
            armed: true,
        })
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A payload on disk (data fsynced) under a temporary name, waiting to be submitted.
/// Dropped without being submitted, its file is removed.
#[derive(Debug)]
pub struct StagedPayload {
    path: PathBuf,
    sha256: Sha256Digest,
    size: u64,
    armed: bool,
}

impl StagedPayload {
    /// SHA-256 of the bytes written.
    pub fn sha256(&self) -> Sha256Digest {
        self.sha256
    }

    /// Bytes written.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The temporary file (to parse it before submitting).
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn discard(mut self) {
        let _ = fs::remove_file(&self.path);
        self.armed = false;
    }

    fn forget(mut self) {
        self.armed = false;
    }
}

impl Drop for StagedPayload {
    fn drop(&mut self) {
        if self.armed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unused_blobs_are_set_aside_then_deleted_after_their_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = BlobDir::open(dir.path().join("blobs")).expect("open");
        let staged = blobs.write_bytes(b"an unused payload").expect("write");
        let sha = staged.sha256();
        blobs.install(staged).expect("install");
        // Written long ago: its days count from the move, not from its writing.
        File::options()
            .write(true)
            .open(blobs.path_of(&sha))
            .and_then(|f| {
                f.set_modified(std::time::SystemTime::now() - Duration::from_secs(30 * 86_400))
            })
            .expect("age it");
        blobs.set_aside(&sha).expect("set aside");
        assert!(!blobs.path_of(&sha).exists());
        assert!(
            blobs.stored().expect("list").is_empty(),
            "not a stored blob any more"
        );
        let kept = Duration::from_secs(7 * 86_400);
        assert_eq!(blobs.delete_unused_older_than(kept).expect("sweep"), (0, 0));
        assert!(
            blobs.unused_dir().join(sha.to_hex()).is_file(),
            "kept for its days"
        );
        assert_eq!(
            blobs
                .delete_unused_older_than(Duration::ZERO)
                .expect("sweep"),
            (1, 17)
        );
        assert!(!blobs.unused_dir().join(sha.to_hex()).exists());
    }

    #[test]
    fn a_writer_hashes_what_it_writes_unless_told_its_caller_does() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blobs = BlobDir::open(dir.path().join("blobs")).expect("blob dir");
        let bytes = b"<edXML>a package</edXML>";

        let mut w = blobs.writer().expect("writer");
        w.write(&bytes[..7]).expect("write");
        w.write(&bytes[7..]).expect("write");
        let staged = w.finish().expect("finish");
        assert_eq!(staged.sha256(), Sha256Digest::of(bytes));
        assert_eq!(staged.size(), bytes.len() as u64);

        // A caller that hashed the bytes itself names the digest; nothing is hashed twice.
        let mut w = blobs.writer().expect("writer").without_hashing();
        w.write(bytes).expect("write");
        let given = Sha256Digest::of(bytes);
        let staged = w.finish_with_digest(given).expect("finish");
        assert_eq!(staged.sha256(), given);

        // Such a writer cannot be finished without the digest.
        let mut w = blobs.writer().expect("writer").without_hashing();
        w.write(bytes).expect("write");
        assert!(matches!(w.finish(), Err(StoreError::Codec { .. })));
    }
}
