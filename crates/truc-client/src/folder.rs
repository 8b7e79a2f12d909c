//! A complete adapter for units without a document-management system: folders.
//!
//! - `outbox/`: drop a package (`*.edxml`); it is submitted and moved to `sent/` with its
//!   receipt beside it (`NAME.receipt.json`). Status packages are recognised and sent as
//!   statuses. A package the relay refuses for good goes to `failed/` with the reason
//!   (`NAME.error.txt`); on a failure for now (the relay restarting or out of space, the
//!   sending unit suspended) it stays and is retried, ever less often (up to every 5
//!   minutes).
//! - `inbox/`: each delivery is written to a temporary file, flushed to disk, renamed to
//!   `MESSAGE_ID.edxml` (with `MESSAGE_ID.json` describing it), and only then acknowledged:
//!   a crash never leaves a half-written package or loses one.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::{Client, ClientError};

/// Settings of the folder adapter.
#[derive(Debug, Clone)]
pub struct FolderOptions {
    /// The base directory (holds `outbox/`, `sent/`, `failed/`, `inbox/`).
    pub dir: PathBuf,
    /// How often `outbox/` is scanned.
    pub poll: Duration,
    /// Deliveries taken at a time.
    pub credits: u32,
}

/// What the adapter did, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FolderStats {
    /// Packages submitted.
    pub sent: u64,
    /// Packages refused for good.
    pub failed: u64,
    /// Deliveries written to `inbox/`.
    pub received: u64,
}

/// Whether the relay refused a package for good (it goes to `failed/`). A suspended unit
/// is not refused for good: its packages wait until the unit is active again.
fn is_permanent(e: &ClientError) -> bool {
    if matches!(e, ClientError::Refused { code, .. } if code == "AUTH_UNIT_SUSPENDED") {
        return false;
    }
    matches!(
        e,
        ClientError::Refused {
            status: tonic::Code::InvalidArgument
                | tonic::Code::PermissionDenied
                | tonic::Code::FailedPrecondition
                | tonic::Code::OutOfRange,
            ..
        }
    ) || matches!(e, ClientError::Refused { code, .. } if code == "EDXML_TOO_LARGE")
}

/// A status package's root holds `<Status>` in its header; documents a `<MessageHeader>`.
fn looks_like_status(bytes: &[u8]) -> bool {
    let head = &bytes[..bytes.len().min(64 * 1024)];
    let text = String::from_utf8_lossy(head);
    text.contains("Status>") && !text.contains("MessageHeader>")
}

/// The longest wait before the inbox is opened again after the relay refused or dropped it.
const LONGEST_REOPEN_WAIT: Duration = Duration::from_secs(60);

/// Runs the folder adapter until `shutdown` completes. The relay refusing or dropping the
/// inbox (a restart, the unit suspended, the network) never stops it: the inbox is opened
/// again, ever less often (from 1 s up to every minute), while `outbox/` keeps being
/// scanned. Only a local failure (the folders cannot be read or written) ends it.
pub async fn run(
    client: Client,
    options: FolderOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<FolderStats, ClientError> {
    for sub in ["outbox", "sent", "failed", "inbox"] {
        tokio::fs::create_dir_all(options.dir.join(sub)).await?;
    }
    let credits = options.credits.max(1);
    let mut stats = FolderStats::default();
    let mut outbox_client = client.clone();
    let mut inbox_client = client;
    let mut inbox = None;
    let mut reopen = Reopen::default();
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(options.poll);
    let mut waiting = Waiting::new(options.poll);
    loop {
        tokio::select! {
            _ = &mut shutdown => return Ok(stats),
            _ = tick.tick() => send_outbox(&mut outbox_client, &options.dir, &mut stats, &mut waiting).await?,
            _ = tokio::time::sleep_until(reopen.at), if inbox.is_none() => {
                match inbox_client.inbox(credits).await {
                    Ok(opened) => inbox = Some(opened),
                    Err(e) => reopen.failed("the inbox could not be opened", &e),
                }
            }
            delivery = next_delivery(&mut inbox), if inbox.is_some() => {
                let taken = match delivery {
                    Ok(Some(d)) => take(&mut inbox_client, &mut inbox, &options.dir, &d).await,
                    // The relay closed the stream (a restart): opened again shortly.
                    Ok(None) => Err(ClientError::Closed),
                    Err(e) => Err(e),
                };
                match taken {
                    Ok(received) => {
                        stats.received += u64::from(received);
                        // The stream works: a later failure starts the waits afresh.
                        reopen.worked();
                    }
                    Err(ClientError::Io(e)) => return Err(ClientError::Io(e)),
                    Err(e) => {
                        inbox = None;
                        reopen.failed("the inbox stream ended", &e);
                    }
                }
            }
        }
    }
}

/// The next delivery of an open inbox.
async fn next_delivery(
    inbox: &mut Option<crate::Inbox>,
) -> Result<Option<crate::Delivery>, ClientError> {
    match inbox {
        Some(inbox) => inbox.next().await,
        None => std::future::pending().await,
    }
}

/// Writes a delivery to `inbox/`, then acknowledges it; whether it was received. One whose
/// bytes the relay refuses to give (its payload purged, say) is handed back (`nack`:
/// retried later by the relay, then dead-lettered) rather than ending the stream for the
/// others.
async fn take(
    client: &mut Client,
    inbox: &mut Option<crate::Inbox>,
    dir: &Path,
    d: &crate::Delivery,
) -> Result<bool, ClientError> {
    let Some(stream) = inbox else {
        return Err(ClientError::Closed);
    };
    match receive(client, dir, d).await {
        Ok(()) => stream.ack(&d.delivery_id).await.map(|()| true),
        Err(e @ ClientError::Refused { .. }) => {
            tracing::warn!(message = %d.message_id, error = %e, "a delivery's bytes could not be fetched; handed back to the relay");
            stream.nack(&d.delivery_id, &e.to_string()).await?;
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// When to open the inbox again, and how long the wait after the next failure.
struct Reopen {
    at: tokio::time::Instant,
    wait: Duration,
}

impl Default for Reopen {
    fn default() -> Self {
        Reopen {
            at: tokio::time::Instant::now(),
            wait: Duration::from_secs(1),
        }
    }
}

impl Reopen {
    /// The stream delivered: the next failure waits the shortest time again.
    fn worked(&mut self) {
        self.wait = Duration::from_secs(1);
    }

    fn failed(&mut self, what: &str, e: &ClientError) {
        tracing::warn!(error = %e, retry_in_secs = self.wait.as_secs(), "{what}; opened again later");
        self.at = tokio::time::Instant::now() + self.wait;
        self.wait = (self.wait * 2).min(LONGEST_REOPEN_WAIT);
    }
}

/// Packages of `outbox/` that failed for now, and when each is tried again: the wait doubles
/// from the scan interval up to [`LONGEST_WAIT`], so a long outage or suspension does not
/// send the same bytes at every scan.
struct Waiting {
    first: Duration,
    by_name: HashMap<String, (Instant, Duration)>,
}

/// The longest wait before a package that failed for now is tried again.
const LONGEST_WAIT: Duration = Duration::from_secs(300);

impl Waiting {
    fn new(first: Duration) -> Self {
        Waiting {
            first: first.max(Duration::from_millis(10)),
            by_name: HashMap::new(),
        }
    }

    fn due(&self, name: &str, now: Instant) -> bool {
        self.by_name.get(name).is_none_or(|(at, _)| *at <= now)
    }

    fn failed(&mut self, name: &str, now: Instant) {
        let wait = self
            .by_name
            .get(name)
            .map_or(self.first, |(_, w)| (*w * 2).min(LONGEST_WAIT));
        self.by_name.insert(name.to_owned(), (now + wait, wait));
    }

    fn done(&mut self, name: &str) {
        self.by_name.remove(name);
    }

    /// Forgets packages no longer in `outbox/`.
    fn keep_only(&mut self, names: &[(String, PathBuf)]) {
        self.by_name
            .retain(|name, _| names.iter().any(|(n, _)| n == name));
    }
}

async fn send_outbox(
    client: &mut Client,
    dir: &Path,
    stats: &mut FolderStats,
    waiting: &mut Waiting,
) -> Result<(), ClientError> {
    let mut entries = tokio::fs::read_dir(dir.join("outbox")).await?;
    let mut files = Vec::new();
    while let Some(e) = entries.next_entry().await? {
        let path = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if path.is_file() && !name.starts_with('.') {
            files.push((name, path));
        }
    }
    files.sort();
    waiting.keep_only(&files);
    for (name, path) in files {
        if !waiting.due(&name, Instant::now()) {
            continue;
        }
        let bytes = tokio::fs::read(&path).await?;
        let result = if looks_like_status(&bytes) {
            client.submit_status(&bytes, Some(&name)).await
        } else {
            client.submit_document(&bytes, Some(&name)).await
        };
        match result {
            Ok(receipt) => {
                let text = format!(
                    "{{\"message_id\":{:?},\"document_id\":{:?},\"kind\":{:?},\"duplicate\":{},\"accepted_at\":{:?}}}\n",
                    receipt.message_id, receipt.document_id, receipt.kind, receipt.duplicate, receipt.accepted_at
                );
                tokio::fs::write(dir.join("sent").join(format!("{name}.receipt.json")), text)
                    .await?;
                tokio::fs::rename(&path, dir.join("sent").join(&name)).await?;
                stats.sent += 1;
                waiting.done(&name);
            }
            Err(e) if is_permanent(&e) => {
                tokio::fs::write(
                    dir.join("failed").join(format!("{name}.error.txt")),
                    format!("{e}\n"),
                )
                .await?;
                tokio::fs::rename(&path, dir.join("failed").join(&name)).await?;
                stats.failed += 1;
                waiting.done(&name);
            }
            // For now (relay restarting, out of space, unit suspended): tried again later.
            Err(e) => {
                tracing::info!(file = %name, error = %e, "not sent for now; tried again later");
                waiting.failed(&name, Instant::now());
            }
        }
    }
    Ok(())
}

async fn receive(client: &mut Client, dir: &Path, d: &crate::Delivery) -> Result<(), ClientError> {
    use std::io::Write;
    let inbox = dir.join("inbox");
    let tmp = inbox.join(format!(".{}.part", d.message_id));
    let mut file = std::fs::File::create(&tmp)?;
    if d.inline {
        file.write_all(&d.package)?;
    } else {
        // Large: streamed to the file a chunk at a time, never whole in memory.
        client
            .fetch_payload_with(&d.message_id, |chunk| file.write_all(chunk))
            .await?;
    }
    file.sync_all()?;
    drop(file);
    let meta = format!(
        "{{\"message_id\":{:?},\"recipient\":{:?},\"sender\":{:?},\"kind\":{:?},\"document_id\":{:?},\"status_code\":{:?},\"sha256\":{:?},\"size\":{}}}\n",
        d.message_id, d.recipient, d.sender, d.kind, d.document_id, d.status_code, d.sha256, d.size
    );
    tokio::fs::write(inbox.join(format!("{}.json", d.message_id)), meta).await?;
    tokio::fs::rename(&tmp, inbox.join(format!("{}.edxml", d.message_id))).await?;
    std::fs::File::open(&inbox)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_package_that_failed_for_now_waits_ever_longer_up_to_five_minutes() {
        let scan = Duration::from_secs(1);
        let mut waiting = Waiting::new(scan);
        let t0 = Instant::now();
        assert!(waiting.due("a", t0), "a new package is tried at once");
        let mut at = t0;
        let mut waits = Vec::new();
        for _ in 0..12 {
            waiting.failed("a", at);
            let (next, wait) = waiting.by_name["a"];
            assert!(!waiting.due("a", next - Duration::from_millis(1)));
            assert!(waiting.due("a", next));
            waits.push(wait.as_secs());
            at = next;
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert!(waiting.due("b", t0), "each package waits on its own");
        waiting.keep_only(&[("b".to_owned(), PathBuf::from("outbox/b"))]);
        assert!(
            waiting.due("a", t0),
            "a package gone from the outbox is forgotten"
        );
        waiting.failed("b", t0);
        waiting.done("b");
        assert!(waiting.due("b", t0), "sent: no wait left");
    }
}
