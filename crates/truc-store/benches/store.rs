//! Store benchmarks, with the raw limits measured in the same run.
//!
//! ```text
//! cargo bench -p truc-store --bench store -- submit  [--seconds 3] [--rounds 3] [--only KIB:N] [--warm] [--no-spare]
//! cargo bench -p truc-store --bench store -- backlog [--messages 1000000] [--kib 1]
//! cargo bench -p truc-store --bench store -- fill --dir DIR [--messages 1000000] [--kib 1] [--checkpoint]
//! cargo bench -p truc-store --bench store -- open-only --dir DIR
//! ```
//!
//! `submit`: durable submissions per second with 1, 16 and 64 concurrent submitters for 8 KiB,
//! 64 KiB and 1 MiB packages; beside each, plain sled `insert` + `flush` with the same
//! concurrency and value size, the same made power-safe as the store's committer makes it
//! (`fdatasync` of the log, `fsync` of sled's blob files), and the disk's raw `write` +
//! `fdatasync` rate. The store and its baselines alternate over `--rounds` rounds.
//! `--warm`: before each timed run, the store and both sled baselines first take one payload
//! segment's worth (64 MiB) of the same submissions, as a store that has been running for a
//! while (its next payload segment made ahead of time); `--no-spare` turns that off in the
//! store (`prepare_payload_segments = false`), to compare the two in one run.
//!
//! `sync-kinds [--bytes N] [--rounds R]`: the disk's `write` + `fdatasync` rate at the end of
//! a growing file against inside a zeroed one (why payload segments are made ahead of time).
//!
//! `cycle`: the whole life of a package in the store, as the relay drives it: submitters
//! (`--pipelines`, default 64) submit 8 KiB documents while one consumer claims them in
//! batches and acknowledges each (durably). Reports packages per second, and — steadier on
//! a shared machine — CPU time and bytes written to disk per package.
//!
//! `backlog`: fills one queue with N messages, measures claim+ack throughput from it, and the
//! time and peak memory for a fresh process to open the store with the backlog.

use std::path::{Path, PathBuf};

/// The allocator `trucd` runs with, so that timings and memory match the relay's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use truc_edxml::{BusinessDocType, DocumentId, OrgCode, PackageKind, Sha256Digest};
use truc_store::{
    Completion, Destination, NewMessage, PayloadInput, Route, SledStore, Source, Store,
    StoreConfig, Summary, Timestamp,
};

fn code(s: &str) -> OrgCode {
    OrgCode::parse(s).expect("code")
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn message(n: u64, size: usize) -> NewMessage {
    let mut bytes = vec![(n % 251) as u8; size];
    bytes[..8].copy_from_slice(&n.to_be_bytes());
    NewMessage {
        kind: PackageKind::Document,
        sender: code("000.00.05.G04"),
        document_id: Some(DocumentId::new(&format!(
            "000.00.05.G04,2026/11/21,{n}/BENCH"
        ))),
        business_doc_type: BusinessDocType::New,
        sha256: Sha256Digest::of(&bytes),
        source: Source::Operator {
            actor: "bench".into(),
        },
        received_at: Timestamp::now(),
        routes: vec![Route {
            recipient: code("000.00.07.G04"),
            destination: Destination::Inbox(code("000.00.07.G04")),
            held: false,
        }],
        summary: Summary::default(),
        idempotency_key: None,
        payload: PayloadInput::Bytes(bytes.into()),
    }
}

/// Runs `tasks` concurrent loops of `op` for `secs`; returns operations per second.
async fn rate<F, Fut>(tasks: usize, secs: f64, op: F) -> f64
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let counter = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(secs);
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (op, counter, next) = (op.clone(), counter.clone(), next.clone());
        handles.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                let n = next.fetch_add(1, Ordering::Relaxed);
                op(n).await;
                counter.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for h in handles {
        h.await.expect("task");
    }
    counter.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

fn raw_fsync_rate(dir: &Path, size: usize, threads: usize, secs: f64) -> f64 {
    use std::io::Write;
    let counter = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads {
            let counter = counter.clone();
            let path = dir.join(format!("fsync-{t}"));
            s.spawn(move || {
                let mut f = std::fs::File::create(&path).expect("create");
                let buf = vec![1u8; size];
                while Instant::now() < deadline {
                    f.write_all(&buf).expect("write");
                    f.sync_data().expect("fdatasync");
                    counter.fetch_add(1, Ordering::Relaxed);
                }
                let _ = std::fs::remove_file(&path);
            });
        }
    });
    counter.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// How a cell's stores start.
#[derive(Clone, Copy)]
struct Start {
    /// Submissions made before the timed run (ids below it), none if 0.
    warm: u64,
    /// The store makes its next payload segment ahead of time.
    spare: bool,
}

impl Start {
    fn of(args: &[String], size: usize) -> Self {
        let warm = if args.iter().any(|a| a == "--warm") {
            (truc_store::StoreConfig::default().payload_segment_bytes / size as u64).max(1) + 1
        } else {
            0
        };
        Start {
            warm,
            spare: !args.iter().any(|a| a == "--no-spare"),
        }
    }
}

/// Runs `op` for ids `0..count`, 64 at a time.
async fn each_of<F, Fut>(count: u64, op: F)
where
    F: Fn(u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let op = Arc::new(op);
    let next = Arc::new(AtomicU64::new(0));
    let mut handles = Vec::new();
    for _ in 0..64 {
        let (op, next) = (op.clone(), next.clone());
        handles.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= count {
                    break;
                }
                op(n).await;
            }
        }));
    }
    for h in handles {
        h.await.expect("task");
    }
}

/// One cell of the submit matrix: the store's durable submissions per second from
/// `tasks` submitters, on a fresh store (warmed as `start` says); prints the committer's
/// counters.
async fn store_submit_rate(tasks: usize, size: usize, secs: f64, start: Start) -> (f64, f64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = StoreConfig {
        prepare_payload_segments: start.spare,
        ..StoreConfig::default()
    };
    let store = Arc::new(SledStore::open(&dir.path().join("store"), config).expect("open"));
    if start.warm > 0 {
        let s = store.clone();
        each_of(start.warm, move |n| {
            let s = s.clone();
            async move {
                s.submit(message(n, size)).await.expect("submit");
            }
        })
        .await;
        // As in a store running for a while: the next segment is made.
        let spare = dir.path().join("store/payloads/next-segment.zeroed");
        let deadline = Instant::now() + Duration::from_secs(20);
        while start.spare && size <= 256 * 1024 && !spare.exists() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    let stats = store.commit_stats();
    // The committer's counters over the timed run only.
    let counters = || {
        [
            &stats.flushes,
            &stats.payload_segment_syncs,
            &stats.log_syncs,
            &stats.flush_micros,
            &stats.sled_blobs_synced,
            &stats.log_length_syncs,
        ]
        .map(|c| c.load(Ordering::Relaxed))
    };
    let before = counters();
    let s = store.clone();
    let ours = rate(tasks, secs, move |n| {
        let s = s.clone();
        async move {
            s.submit(message(n + start.warm, size))
                .await
                .expect("submit");
        }
    })
    .await;
    let after = counters();
    let [flushes, segment_syncs, log_syncs, flush_micros, blobs_synced, log_grown] =
        [0, 1, 2, 3, 4, 5].map(|i| after[i] - before[i]);
    // Small payloads are acknowledged on their segment's fdatasync, the others on the
    // database's flush and its log's fdatasync: count both, per submission made.
    let syncs = segment_syncs + log_syncs;
    let per100 = 100.0 * syncs as f64 / (ours * secs).max(1.0);
    eprintln!(
        "  {} KiB x {tasks}: {segment_syncs} payload segment fdatasyncs; mean flush {:.0} us over {flushes} flushes; {blobs_synced} of sled's blob files synced; log fdatasync'd {log_syncs} times, {log_grown} of them grown",
        size / 1024,
        flush_micros as f64 / flushes.max(1) as f64,
    );
    (ours, per100)
}

/// The submit matrix. Each cell alternates the store and its baselines for `rounds`
/// rounds of `secs / rounds` seconds each (fresh databases every round), and reports the
/// mean rates: on a shared machine whose speed drifts, alternating keeps the ratios fair.
async fn submit_matrix(
    secs: f64,
    rounds: usize,
    only: Option<(usize, usize)>,
    no_raw: bool,
    args: &[String],
) {
    println!("| payload | submitters | truc-store submits/s | sled insert+flush/s | ratio | power-safe sled (same + fdatasync log, fsync sled's blob files)/s | ratio | raw write+fdatasync/s (same threads, max 16) | fdatasyncs per 100 submits (segments + log) |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let rounds = rounds.max(1);
    let slice = secs / rounds as f64;
    for size in [8 * 1024, 64 * 1024, 1024 * 1024] {
        for tasks in [1usize, 16, 64] {
            if only.is_some_and(|o| o != (size / 1024, tasks)) {
                continue;
            }
            let (mut ours, mut per100, mut raw, mut raw_synced) = (0.0, 0.0, 0.0, 0.0);
            let start = Start::of(args, size);
            for _ in 0..rounds {
                let (rate, flushes) = store_submit_rate(tasks, size, slice, start).await;
                ours += rate / rounds as f64;
                per100 += flushes / rounds as f64;
                if no_raw {
                    continue;
                }
                let raw_dir = tempfile::tempdir().expect("tempdir");
                raw += raw_sled_rate(
                    &raw_dir.path().join("sled"),
                    tasks,
                    size,
                    slice,
                    false,
                    start.warm,
                )
                .await
                    / rounds as f64;
                let safe_dir = tempfile::tempdir().expect("tempdir");
                raw_synced += raw_sled_rate(
                    &safe_dir.path().join("sled"),
                    tasks,
                    size,
                    slice,
                    true,
                    start.warm,
                )
                .await
                    / rounds as f64;
            }
            if no_raw {
                println!(
                    "| {} KiB | {tasks} | {ours:.0} | - | - | - | - | - | {per100:.1} |",
                    size / 1024
                );
                continue;
            }
            let fsync_dir = tempfile::tempdir().expect("tempdir");
            let fsync = raw_fsync_rate(fsync_dir.path(), size, tasks.min(16), secs.min(2.0));
            println!(
                "| {} KiB | {tasks} | {ours:.0} | {raw:.0} | {:.0} % | {raw_synced:.0} | {:.0} % | {fsync:.0} | {per100:.1} |",
                size / 1024,
                100.0 * ours / raw,
                100.0 * ours / raw_synced
            );
        }
    }
}

/// Plain sled `insert` + `flush` per call from `tasks` concurrent submitters; with
/// `power_safe`, after the flush also what a power-loss-safe acknowledgement needs on sled
/// 0.34 and the store's committer does (docs/store.md): `fdatasync` of the log (sled's flush
/// ends with `sync_file_range`, which flushes neither the disk's write cache nor a grown
/// file's length) and `fsync` of the files sled wrote to `db/blobs` since the last check
/// (items over a quarter of a segment, e.g. leaves holding several 64 KiB values, which
/// sled never syncs).
async fn raw_sled_rate(
    path: &Path,
    tasks: usize,
    size: usize,
    secs: f64,
    power_safe: bool,
    warm: u64,
) -> f64 {
    let blobs_dir = Arc::new(path.join("blobs"));
    let blobs_synced = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    let db = sled::Config::new()
        .path(path)
        .mode(sled::Mode::HighThroughput)
        .cache_capacity(64 * 1024 * 1024)
        // The store's segment size, so that the limit is sled's with the same layout.
        .segment_size(truc_store::LOG_SEGMENT_BYTES)
        .open()
        .expect("sled");
    let log = Arc::new(std::fs::File::open(path.join("db")).expect("sled log"));
    let value = Arc::new(vec![7u8; size]);
    if warm > 0 {
        let (d, value) = (db.clone(), value.clone());
        each_of(warm, move |n| {
            let (d, value) = (d.clone(), value.clone());
            async move {
                tokio::task::spawn_blocking(move || {
                    d.insert(n.to_be_bytes(), value.as_slice()).expect("insert");
                    d.flush().expect("flush");
                })
                .await
                .expect("blocking");
            }
        })
        .await;
    }
    let d = db.clone();
    // `flush_async` deadlocks when called concurrently in sled 0.34 (sled issue #1308,
    // reproduced here at 16 submitters), so the raw baseline is `flush` on a blocking
    // thread per call, the same call the store's committer makes.
    let rate = rate(tasks, secs, move |n| {
        let n = n + warm;
        let (d, value, log) = (d.clone(), value.clone(), log.clone());
        let (blobs_dir, blobs_synced) = (blobs_dir.clone(), blobs_synced.clone());
        async move {
            tokio::task::spawn_blocking(move || {
                d.insert(n.to_be_bytes(), value.as_slice()).expect("insert");
                d.flush().expect("flush");
                if power_safe {
                    log.sync_data().expect("fdatasync");
                    sync_new_sled_blobs(&blobs_dir, &blobs_synced);
                }
            })
            .await
            .expect("blocking");
        }
    })
    .await;
    drop(db);
    rate
}

/// Fsyncs the files of sled's `blobs` directory not synced before, then the directory.
fn sync_new_sled_blobs(
    dir: &Path,
    synced: &std::sync::Mutex<std::collections::HashSet<std::ffi::OsString>>,
) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut any = false;
    for entry in entries.flatten() {
        let name = entry.file_name();
        if synced.lock().expect("lock").contains(&name) {
            continue;
        }
        if let Ok(f) = std::fs::File::open(entry.path()) {
            f.sync_all().expect("fsync");
            synced.lock().expect("lock").insert(name);
            any = true;
        }
    }
    if any {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .expect("fsync dir");
    }
}

/// `sync-kinds`: one writer's `pwrite` + `fdatasync` rate at the end of a file that grows
/// with each write, against the same inside a file written with zeros and synced before
/// (what a payload segment made ahead of time is), alternated over `rounds` rounds of 2,000
/// syncs each, on the disk of the temporary directory.
fn sync_kinds(size: usize, rounds: usize) {
    use std::os::unix::fs::FileExt;
    const SYNCS: usize = 2_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let buf = vec![0x5au8; size];
    let run = |zeroed: bool| -> f64 {
        let path = dir.path().join("sync-kinds");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("create");
        if zeroed {
            let zeros = vec![0u8; 1 << 20];
            let mut at = 0;
            while at < (SYNCS * size) as u64 {
                file.write_all_at(&zeros, at).expect("zeros");
                at += zeros.len() as u64;
            }
            file.sync_data().expect("fdatasync");
        }
        let start = Instant::now();
        for i in 0..SYNCS {
            file.write_all_at(&buf, (i * size) as u64).expect("write");
            file.sync_data().expect("fdatasync");
        }
        let rate = SYNCS as f64 / start.elapsed().as_secs_f64();
        drop(file);
        std::fs::remove_file(&path).expect("remove");
        rate
    };
    println!("| round | growing file, syncs/s | zeroed file, syncs/s | zeroed / growing |");
    println!("|---|---|---|---|");
    for round in 1..=rounds.max(1) {
        let growing = run(false);
        let zeroed = run(true);
        println!(
            "| {round} | {growing:.0} | {zeroed:.0} | {:.2} |",
            zeroed / growing
        );
    }
}

/// `--messages N` (default one million) and `--kib K` (default 1, returned in bytes) of
/// `fill` and `backlog`.
fn backlog_shape(args: &[String]) -> (u64, usize) {
    let messages = arg(args, "--messages")
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let kib: usize = arg(args, "--kib").and_then(|s| s.parse().ok()).unwrap_or(1);
    (messages, kib * 1024)
}

fn vm_hwm_kib() -> u64 {
    proc_status_kib("VmHWM:")
}

/// A memory figure of this process from `/proc/self/status`, in KiB.
fn proc_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// Fills one inbox with `messages` one-recipient messages of `size` bytes from 64 submitters.
async fn fill(messages: u64, size: usize, dir: &Path) {
    {
        let store = Arc::new(SledStore::open(dir, StoreConfig::default()).expect("open"));
        let s = store.clone();
        let start = Instant::now();
        each_of(messages, move |n| {
            let s = s.clone();
            async move {
                s.submit(message(n, size)).await.expect("submit");
            }
        })
        .await;
        let fill = start.elapsed();
        println!(
            "filled {messages} messages of {size} B in {:.1} s ({:.0}/s); on disk {} MiB",
            fill.as_secs_f64(),
            messages as f64 / fill.as_secs_f64(),
            store.size_on_disk().expect("size") / (1 << 20)
        );
    }
}

async fn backlog(messages: u64, size: usize, dir: PathBuf) {
    let dest = Destination::Inbox(code("000.00.07.G04"));
    fill(messages, size, &dir).await;
    // A fresh process opens the store with the backlog.
    let exe = std::env::current_exe().expect("exe");
    let out = std::process::Command::new(exe)
        .args(["open-only", "--dir"])
        .arg(&dir)
        .output()
        .expect("child");
    print!("{}", String::from_utf8_lossy(&out.stdout));

    let store = Arc::new(SledStore::open(&dir, StoreConfig::default()).expect("open"));
    let rss_before = proc_status_kib("VmRSS:");
    let start = Instant::now();
    let mut done = 0u64;
    let sample = messages.min(200_000);
    while done < sample {
        let claims = store
            .claim(&dest, 256, Duration::from_secs(60), Timestamp::now())
            .await
            .expect("claim");
        if claims.is_empty() {
            break;
        }
        let mut acks = Vec::new();
        for c in claims {
            let s = store.clone();
            acks.push(tokio::spawn(async move {
                s.ack(&c.token, Completion::Acknowledged, Timestamp::now())
                    .await
                    .expect("ack");
            }));
        }
        for a in acks {
            a.await.expect("ack task");
            done += 1;
        }
    }
    let elapsed = start.elapsed();
    println!(
        "claim+ack from a queue of {messages}: {done} in {:.1} s = {:.0}/s (batches of 256, acks concurrent); RSS {} MiB before, {} MiB after",
        elapsed.as_secs_f64(),
        done as f64 / elapsed.as_secs_f64(),
        rss_before / 1024,
        proc_status_kib("VmRSS:") / 1024
    );
}

fn open_only(dir: &Path) {
    let start = Instant::now();
    let store = SledStore::open(dir, StoreConfig::default()).expect("open");
    let opened = start.elapsed();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    let first = rt.block_on(store.claim(
        &Destination::Inbox(code("000.00.07.G04")),
        1,
        Duration::from_secs(1),
        Timestamp::now(),
    ));
    let ready = start.elapsed();
    println!(
        "fresh process: open {:.2} s, first claim served at {:.2} s ({} claimed), peak RSS {} MiB",
        opened.as_secs_f64(),
        ready.as_secs_f64(),
        first.map(|c| c.len()).unwrap_or(0),
        vm_hwm_kib() / 1024
    );
}

/// This process's CPU time (user + system) so far.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may contain spaces): utime is the 12th, stime the 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Linux reports in clock ticks of 1/100 s on every platform this runs on.
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// Bytes this process caused to be written to the storage layer so far.
fn written_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("write_bytes:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

async fn cycle(secs: f64, pipelines: usize, size: usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store =
        Arc::new(SledStore::open(&dir.path().join("store"), StoreConfig::default()).expect("open"));
    let dest = Destination::Inbox(code("000.00.07.G04"));
    let (cpu0, bytes0, start) = (cpu_time(), written_bytes(), Instant::now());
    let deadline = start + Duration::from_secs_f64(secs);
    let submitted = Arc::new(AtomicU64::new(0));
    let mut submitters = Vec::new();
    for t in 0..pipelines {
        let (s, submitted) = (store.clone(), submitted.clone());
        submitters.push(tokio::spawn(async move {
            let mut n = t as u64;
            while Instant::now() < deadline {
                s.submit(message(n, size)).await.expect("submit");
                submitted.fetch_add(1, Ordering::Relaxed);
                n += pipelines as u64;
            }
        }));
    }
    let acked = Arc::new(AtomicU64::new(0));
    let consumer = {
        let (s, acked) = (store.clone(), acked.clone());
        tokio::spawn(async move {
            let mut acks = tokio::task::JoinSet::new();
            loop {
                let claims = s
                    .claim(&dest, 256, Duration::from_secs(60), Timestamp::now())
                    .await
                    .expect("claim");
                if claims.is_empty() {
                    if Instant::now() >= deadline {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                for c in claims {
                    let (s, acked) = (s.clone(), acked.clone());
                    acks.spawn(async move {
                        s.ack(&c.token, Completion::Acknowledged, Timestamp::now())
                            .await
                            .expect("ack");
                        acked.fetch_add(1, Ordering::Relaxed);
                    });
                }
                while acks.len() > 1024 {
                    acks.join_next().await;
                }
            }
            while acks.join_next().await.is_some() {}
        })
    };
    for h in submitters {
        h.await.expect("submitter");
    }
    consumer.await.expect("consumer");
    let elapsed = start.elapsed().as_secs_f64();
    let (cpu, bytes) = (cpu_time() - cpu0, written_bytes() - bytes0);
    let done = acked.load(Ordering::Relaxed).max(1);
    let stats = store.commit_stats();
    println!(
        "| {} KiB | {pipelines} | {:.0} | {:.0} | {:.0} | {:.1} | {:.2} |",
        size / 1024,
        done as f64 / elapsed,
        cpu.as_micros() as f64 / done as f64,
        bytes as f64 / done as f64 / 1024.0,
        bytes as f64 / done as f64 / size as f64,
        stats.requests.load(Ordering::Relaxed) as f64
            / stats.flushes.load(Ordering::Relaxed).max(1) as f64,
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let secs: f64 = arg(&args, "--seconds")
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    if args.iter().any(|a| a == "open-only") {
        open_only(Path::new(&arg(&args, "--dir").expect("--dir")));
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    if args.iter().any(|a| a == "fill") {
        // Leaves a filled store behind (to time or profile `open-only` on a copy of it).
        let (messages, size) = backlog_shape(&args);
        let dir = PathBuf::from(arg(&args, "--dir").expect("--dir"));
        rt.block_on(fill(messages, size, &dir));
        drop(rt);
        if args.iter().any(|a| a == "--checkpoint") {
            // As trucd does at a clean stop, once the store is closed.
            let took = SledStore::checkpoint(&dir).expect("checkpoint");
            println!("checkpoint after closing: {:.2} s", took.as_secs_f64());
        }
        return;
    }
    if args.iter().any(|a| a == "backlog") {
        let (messages, size) = backlog_shape(&args);
        let dir = tempfile::tempdir().expect("tempdir");
        rt.block_on(backlog(messages, size, dir.path().join("store")));
        return;
    }
    if args.iter().any(|a| a == "cycle") {
        let pipelines = arg(&args, "--pipelines")
            .and_then(|s| s.parse().ok())
            .unwrap_or(64);
        let size = arg(&args, "--kib")
            .and_then(|s| s.parse::<usize>().ok())
            .unwrap_or(8)
            * 1024;
        println!("| payload | submitters | submit+claim+ack per s | CPU µs per package | KiB written per package | written / payload | durable requests per flush |");
        println!("|---|---|---|---|---|---|---|");
        rt.block_on(cycle(secs, pipelines, size));
        return;
    }
    if args.iter().any(|a| a == "sync-kinds") {
        let size = arg(&args, "--bytes")
            .and_then(|s| s.parse().ok())
            .unwrap_or(8 * 1024 + 300);
        let rounds = arg(&args, "--rounds")
            .and_then(|r| r.parse().ok())
            .unwrap_or(3);
        sync_kinds(size, rounds);
        return;
    }
    if args.iter().any(|a| a == "submit") {
        // `--only KIB:SUBMITTERS` runs one cell (for profiling).
        let only = arg(&args, "--only").and_then(|o| {
            let (k, t) = o.split_once(':')?;
            Some((k.parse().ok()?, t.parse().ok()?))
        });
        // `--rounds N`: each cell alternates the store and its baselines N times.
        let rounds = arg(&args, "--rounds")
            .and_then(|r| r.parse().ok())
            .unwrap_or(3);
        rt.block_on(submit_matrix(
            secs,
            rounds,
            only,
            args.iter().any(|a| a == "--no-raw"),
            &args,
        ));
        return;
    }
    // `cargo bench` without arguments (and `cargo test --benches`) runs a short smoke pass.
    rt.block_on(async {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Arc::new(SledStore::open(dir.path(), StoreConfig::default()).expect("open"));
        let s = store.clone();
        let r = rate(4, 0.2, move |n| {
            let s = s.clone();
            async move {
                s.submit(message(n, 8192)).await.expect("submit");
            }
        })
        .await;
        println!("smoke: {r:.0} submits/s (run with `-- submit` or `-- backlog` for the real benchmarks)");
    });
}
