//! Real processes, really killed: a child writes and acknowledges submissions over a pipe
//! and is killed with SIGKILL at random moments; a child runs out of disk space. After
//! each, the store must open, and every acknowledged submission must be there, intact.
//!
//! The child is this same test binary, re-run with an environment variable telling it
//! which role to play. `TRUC_CRASH_KILLS` sets the number of kills (default 20);
//! `scripts/chaos-store.sh` runs thousands.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use truc_store::{Completion, DeliveryState, SledStore, Store, Timestamp};

const CHILD_ROLE: &str = "TRUC_STORE_TEST_CHILD";
const CHILD_DIR: &str = "TRUC_STORE_TEST_DIR";
const CHILD_START: &str = "TRUC_STORE_TEST_START";

/// Documents numbered from here on carry 60 KB payloads, which a writer starting there
/// keeps inline: they fill sled's log quickly (the full-disk test starts there).
const LARGE_FROM: u64 = 1_000_000_000;

fn payload(n: u64) -> Vec<u8> {
    // Some large enough to be blob files, most inline.
    let len = if n % 10 == 3 {
        300_000
    } else if n >= LARGE_FROM {
        60_000
    } else {
        200 + (n % 7) as usize * 1000
    };
    let mut v = format!("<edXML>document {n}</edXML>").into_bytes();
    // Never zeros: a segment's zero tail is what the checks below look for.
    v.resize(len, (n % 251) as u8 + 1);
    v
}

fn dest() -> truc_store::Destination {
    inbox("000.00.07.G04")
}

/// Payload segments this size roll over every twenty submissions or so, so that kills land
/// on every step of it: a spare segment being made, taken, written, cut when sealed.
const SEGMENT_BYTES: u64 = 64 * 1024;

/// Payloads up to 8 KiB (all but the blob-sized ones) in payload segments of
/// [`SEGMENT_BYTES`].
fn small_segments() -> truc_store::StoreConfig {
    truc_store::StoreConfig {
        payload_segment_bytes: SEGMENT_BYTES,
        inline_threshold: 8 * 1024,
        ..fast_config()
    }
}

/// The child: submits documents as fast as it can, printing `ACK n` once each submit
/// returned, and acknowledges deliveries of earlier ones, printing `DONE n`.
async fn child_writer(dir: &Path, start: u64) {
    let config = if start >= LARGE_FROM {
        truc_store::StoreConfig {
            inline_threshold: 256 * 1024,
            ..fast_config()
        }
    } else {
        small_segments()
    };
    let store = SledStore::open(dir, config).expect("child opens the store");
    // A newline first: the test harness may have printed "test NAME ... " without one.
    println!("\nOPEN");
    let mut n = start;
    loop {
        let mut m = document(
            "000.00.05.G04",
            &[("000.00.07.G04", dest())],
            n as u32,
            &payload(n),
        );
        m.received_at = Timestamp::now();
        if let Err(e) = store.submit(m).await {
            return report_failure(&store, e).await;
        }
        println!("ACK {n}");
        if n % 3 == 0 {
            let claims = match store
                .claim(&dest(), 2, Duration::from_secs(60), Timestamp::now())
                .await
            {
                Ok(c) => c,
                Err(e) => return report_failure(&store, e).await,
            };
            for c in claims {
                if let Err(e) = store
                    .ack(&c.token, Completion::Acknowledged, Timestamp::now())
                    .await
                {
                    return report_failure(&store, e).await;
                }
                let number = c
                    .message
                    .document_id
                    .as_ref()
                    .map(|d| d.to_string())
                    .unwrap_or_default();
                println!("DONE {number}");
            }
        }
        n += 1;
    }
}

/// Prints the error the store gave, then whether the store can still be read.
async fn report_failure(store: &SledStore, e: truc_store::StoreError) {
    println!("ERR {} {e}", e.code());
    let read = store
        .message(truc_store::MessageId::new(Timestamp::now()))
        .await;
    match &read {
        Ok(_) => println!("READABLE true"),
        Err(e) => println!("READABLE false: {e}"),
    }
}

fn maybe_child() -> bool {
    let Ok(role) = std::env::var(CHILD_ROLE) else {
        return false;
    };
    let dir = std::env::var(CHILD_DIR).expect("dir");
    let start: u64 = std::env::var(CHILD_START)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    match role.as_str() {
        "writer" => rt.block_on(child_writer(Path::new(&dir), start)),
        other => panic!("unknown role {other}"),
    }
    true
}

fn spawn_child(test: &str, dir: &Path, start: u64, wrapper: Option<&str>) -> Child {
    let exe = std::env::current_exe().expect("current exe");
    let mut cmd = match wrapper {
        Some(script) => {
            let mut c = Command::new("bash");
            c.arg("-c")
                .arg(format!("{script}; exec \"$0\" \"$@\""))
                .arg(&exe);
            c
        }
        None => Command::new(&exe),
    };
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ROLE, "writer")
        .env(CHILD_DIR, dir)
        .env(CHILD_START, start.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child")
}

/// Kills the child if the test fails before it does, so no process outlives the test.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Reads the child's lines on a thread, so the parent can kill it at any time.
fn read_lines(child: &mut Child) -> mpsc::Receiver<String> {
    let out = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[derive(Default)]
struct Seen {
    acked: BTreeSet<u64>,
    done: BTreeSet<String>,
    max: u64,
}

impl Seen {
    fn take(&mut self, line: &str) {
        if let Some(n) = line.strip_prefix("ACK ").and_then(|n| n.parse().ok()) {
            self.acked.insert(n);
            self.max = self.max.max(n);
        } else if let Some(id) = line.strip_prefix("DONE ") {
            self.done.insert(id.to_owned());
        }
    }
}

/// Checks the store after a kill; returns how many acknowledged submissions were checked and
/// how many the open wrote again from the payload log.
async fn verify(dir: &Path, seen: &Seen) -> (usize, usize) {
    let store = SledStore::open(dir, small_segments()).expect("the store opens after every kill");
    let replayed = store.replayed_at_open();
    // Segments made ahead of time at their full size are cut to their entries, when sealed
    // or at this open: none is left with 4 KiB of zeros or more at its end (less is not
    // worth a scan at every open; no payload written here ends in a zero).
    for entry in std::fs::read_dir(dir.join("payloads")).expect("payloads") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "seg") {
            continue;
        }
        let bytes = std::fs::read(&path).expect("segment");
        let zeros = bytes.iter().rev().take_while(|&&b| b == 0).count();
        assert!(
            zeros < 4096,
            "{} ({} bytes) is left with {zeros} zeros at its end",
            path.display(),
            bytes.len()
        );
    }
    let mut checked = 0;
    for n in &seen.acked {
        let doc = truc_edxml::DocumentId::new(&format!("000.00.05.G04,2026/11/21,{n}/TEST"));
        let found = store.find_by_document(&doc).await.expect("find");
        assert_eq!(
            found.len(),
            1,
            "acknowledged document {n} is lost (or stored twice)"
        );
        let bytes = store
            .payload(found[0].id)
            .await
            .expect("payload")
            .read_all()
            .expect("read");
        assert_eq!(
            bytes.as_ref(),
            payload(*n).as_slice(),
            "document {n} is damaged"
        );
        checked += 1;
    }
    for id in &seen.done {
        let doc = truc_edxml::DocumentId::new(id);
        let found = store.find_by_document(&doc).await.expect("find");
        let deliveries = store.deliveries(found[0].id).await.expect("deliveries");
        assert_eq!(
            deliveries[0].state,
            DeliveryState::Acknowledged,
            "acknowledged delivery of {id} came back"
        );
    }
    // The next child opens the store as soon as it starts: release it for good.
    store.close().expect("close");
    (checked, replayed)
}

#[test]
fn sigkill_never_loses_an_acknowledged_submission() {
    if maybe_child() {
        return;
    }
    let kills: usize = std::env::var("TRUC_CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut seen = Seen::default();
    let mut start = 0;
    let mut replayed = 0;
    for kill in 0..kills {
        let mut child = KillOnDrop(spawn_child(
            "sigkill_never_loses_an_acknowledged_submission",
            dir.path(),
            start,
            None,
        ));
        let lines = read_lines(&mut child.0);
        // Wait until it has the store open, then let it run a random while.
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match lines.recv_timeout(left) {
                Ok(l) if l == "OPEN" => break,
                Ok(l) => seen.take(&l),
                Err(e) => panic!("kill {kill}: the child did not open the store: {e}"),
            }
        }
        std::thread::sleep(Duration::from_millis(fastrand::u64(20..400)));
        child.0.kill().expect("SIGKILL");
        child.0.wait().expect("reap");
        while let Ok(l) = lines.recv_timeout(Duration::from_millis(500)) {
            seen.take(&l);
        }
        let (checked, written_again) = rt.block_on(verify(dir.path(), &seen));
        assert_eq!(checked, seen.acked.len());
        replayed += written_again;
        // Resume numbering past anything possibly written, acknowledged or not.
        start = seen.max + 1_000;
    }
    println!(
        "crash summary: kills={kills} acknowledged={} delivered_acks={} replayed_from_payload_log={replayed} lost=0",
        seen.acked.len(),
        seen.done.len()
    );
    assert!(
        seen.acked.len() > kills,
        "the child made progress between kills"
    );
}

#[test]
fn a_full_disk_refuses_submissions_clearly_and_loses_nothing() {
    if maybe_child() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // Create the store first, so the size limit only bites on new writes.
    SledStore::open(dir.path(), fast_config())
        .expect("create")
        .close()
        .expect("close");
    // A file size limit (ulimit -f, in KiB) makes every write past 24 MiB fail with EFBIG,
    // as a full disk fails with ENOSPC; SIGXFSZ is ignored so the write returns an error.
    // (sled pads the log segment it was writing when it opens a database: the log file is
    // 8 MiB, a whole segment, once the child has opened the store.)
    let mut child = KillOnDrop(spawn_child(
        "a_full_disk_refuses_submissions_clearly_and_loses_nothing",
        dir.path(),
        LARGE_FROM,
        Some("trap '' XFSZ; ulimit -f 24576"),
    ));
    let lines = read_lines(&mut child.0);
    let mut seen = Seen::default();
    let mut error = None;
    let mut readable = None;
    while let Ok(l) = lines.recv_timeout(Duration::from_secs(120)) {
        if let Some(e) = l.strip_prefix("ERR ") {
            error = Some(e.to_owned());
        } else if let Some(r) = l.strip_prefix("READABLE ") {
            readable = Some(r.to_owned());
        } else {
            seen.take(&l);
        }
    }
    let status = child.0.wait().expect("reap");
    let error = error.unwrap_or_else(|| panic!("the child never failed (status {status})"));
    assert!(
        error.starts_with("STORE_FULL"),
        "a clear out-of-space error, got: {error}"
    );
    // Reads go on working, or give the same clear error: once sled has failed a write it
    // refuses any read that would make it finish splitting a node (reads do that in sled
    // 0.34), until the process restarts (docs/store.md). Never a panic or garbage.
    let readable = readable.unwrap_or_else(|| panic!("the child never tried to read"));
    assert!(
        readable == "true" || readable.starts_with("false: the store is out of space"),
        "after the failure, a read either works or says the store is out of space: {readable}"
    );
    assert!(!seen.acked.is_empty());

    // Space returns (no limit in this process): everything acknowledged is there, and the
    // store accepts new work.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (checked, _) = rt.block_on(verify(dir.path(), &seen));
    assert_eq!(checked, seen.acked.len());
    rt.block_on(async {
        let store = SledStore::open(dir.path(), fast_config()).expect("reopen");
        let n = seen.max + 1_000;
        store
            .submit(document(
                "000.00.05.G04",
                &[("000.00.07.G04", dest())],
                n as u32,
                &payload(n),
            ))
            .await
            .expect("accepts again");
    });
    println!(
        "disk full: acknowledged {} before {error}",
        seen.acked.len()
    );
}
