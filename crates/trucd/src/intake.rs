//! Taking in a package's bytes as they arrive (from an adapter's gRPC chunks, or from the
//! national axis's answer): read and checked on the way, kept in memory while small, and
//! written to a staging file beyond, so that a package's size never becomes the relay's
//! memory.

use bytes::Bytes;
use truc_edxml::{PackageMeta, PackageReader};
use truc_relay::{Relay, RelayError};
use truc_store::{BlobWriter, PayloadInput, StoreError};

/// A package being received: its reader, and its bytes in memory or in a staging file.
pub struct Incoming {
    reader: PackageReader,
    /// The first chunk, kept as it came: most packages are one chunk.
    first: Option<Bytes>,
    /// Every chunk so far once there is more than one, copied together: a kept chunk would
    /// keep alive the whole buffer it was decoded from, so many small chunks could hold far
    /// more memory than they count for.
    joined: Vec<u8>,
    file: Option<BlobWriter>,
    size: u64,
    /// Bytes it may keep in memory; beyond, a staging file.
    memory_limit: usize,
    /// The size announced (0: unknown), so that `joined` is allocated once.
    declared: usize,
}

impl Incoming {
    /// Receives into memory up to `memory_limit` bytes, reading with `reader`; `declared`
    /// is the size announced, if any (0).
    pub fn new(reader: PackageReader, memory_limit: usize, declared: usize) -> Self {
        Incoming {
            reader,
            first: None,
            joined: Vec::new(),
            file: None,
            size: 0,
            memory_limit,
            declared,
        }
    }

    /// Bytes received so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether its bytes go to a staging file (from now on): it no longer needs memory.
    pub fn on_disk(&self) -> bool {
        self.file.is_some()
    }

    fn in_memory(&self) -> usize {
        self.first.as_ref().map_or(0, Bytes::len) + self.joined.len()
    }

    /// Takes the next bytes: reads them (a package that breaks a rule stops here), then
    /// keeps them.
    pub async fn chunk(&mut self, relay: &Relay, data: Bytes) -> Result<(), RelayError> {
        self.size += data.len() as u64;
        self.reader.feed(&data)?;
        let mut pieces = Vec::new();
        if self.file.is_none() && self.in_memory() + data.len() > self.memory_limit {
            // The reader hashes every byte written there: once is enough.
            self.file = Some(relay.store().stage_payload()?.without_hashing());
            pieces.extend(self.first.take());
            pieces.push(std::mem::take(&mut self.joined).into());
        }
        match self.file.take() {
            Some(w) => {
                pieces.push(data);
                self.file = Some(append_off_thread(w, pieces).await?);
            }
            None => match self.first.take() {
                None if self.joined.is_empty() => self.first = Some(data),
                first => {
                    if let Some(first) = first {
                        // Once, at the size announced: growing by doubling would allocate
                        // and copy the package several times over.
                        let wanted = self.declared.min(self.memory_limit);
                        self.joined
                            .reserve_exact(wanted.max(first.len() + data.len()));
                        self.joined.extend_from_slice(&first);
                    }
                    self.joined.extend_from_slice(&data);
                }
            },
        }
        Ok(())
    }

    /// The package is complete: what was read from it, and its bytes for the store (in
    /// memory, or the staging file made durable). A staging file is removed if this fails.
    pub async fn finish(self) -> Result<(PackageMeta, PayloadInput), RelayError> {
        let meta = self.reader.finish()?;
        let sha256 = meta.sha256;
        let payload = match self.file {
            Some(w) => PayloadInput::Staged(
                tokio::task::spawn_blocking(move || w.finish_with_digest(sha256))
                    .await
                    .map_err(task_failed)??,
            ),
            None => PayloadInput::Bytes(self.first.unwrap_or_else(|| self.joined.into())),
        };
        Ok((meta, payload))
    }
}

/// Appends `pieces` to a staging file on a blocking thread: a write can wait for the disk
/// (when the kernel throttles writers of dirty pages), and that must not stall the other
/// connections served by the same async thread. If it fails, the file is removed.
async fn append_off_thread(
    mut w: BlobWriter,
    pieces: Vec<Bytes>,
) -> Result<BlobWriter, RelayError> {
    let written = tokio::task::spawn_blocking(move || {
        for piece in &pieces {
            w.write(piece)?;
        }
        Ok::<_, StoreError>(w)
    })
    .await
    .map_err(task_failed)??;
    Ok(written)
}

/// A blocking task that did not finish (it panicked): an I/O failure of the store.
fn task_failed(e: tokio::task::JoinError) -> StoreError {
    StoreError::Io(std::io::Error::other(e.to_string()))
}
