#![forbid(unsafe_code)]
//! `truc-loadgen`: drives `trucd` through real adapters (truc-client over mutual TLS) and
//! reports what a ministry would want to know: how many packages per second arrive, verified
//! byte for byte, how long each takes from submission to the recipient's acknowledgement,
//! what failed, and what the relay spent in CPU and memory.
//!
//! The relays run as `trucd` processes of their own (the sibling binary of this one, or
//! `--trucd`), each on a fresh store; cross-ministry traffic goes through a national-axis
//! simulator in this process to a second relay.

mod jetstream;
mod relay;
mod traffic;

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use serde::Serialize;

use relay::{usage, AxisLink, SpawnedRelay};
use traffic::{Ledger, Pace, Routes, Size};

/// The relay's allocator here too: the load generator shares the machine's two cores with
/// what it measures, and glibc's malloc and free were ~8 % of its CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load generator for the truc relay.
#[derive(Debug, Parser)]
#[command(name = "truc-loadgen", version, about)]
struct Cli {
    /// What carries the packages: the relay (`truc`), or NATS JetStream for comparison.
    #[arg(long, value_enum, default_value = "truc")]
    target: Target,
    /// The nats-server binary, for `--target jetstream`.
    #[arg(long, default_value = "nats-server")]
    nats_server: PathBuf,
    /// JetStream fsyncs every stored message before acknowledging its publish
    /// (`sync_interval: always`, nats-server 2.10 or later), as the relay does before its
    /// receipt. Without it JetStream syncs its files every two minutes.
    #[arg(long)]
    nats_sync_always: bool,
    /// Mutual TLS between the load generator and nats-server, as between adapters and the
    /// relay.
    #[arg(long)]
    nats_tls: bool,
    /// Adapters (level-2 units of the sample registry), each sending and receiving.
    #[arg(long, default_value_t = 8)]
    adapters: usize,
    /// Package size.
    #[arg(long, value_enum, default_value = "8k")]
    size: Size,
    /// Closed loop: this many submissions in flight.
    #[arg(long, conflicts_with = "rate")]
    concurrency: Option<usize>,
    /// Open loop: this many submissions per second.
    #[arg(long)]
    rate: Option<f64>,
    /// How long to send, in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many submissions (whichever comes first).
    #[arg(long, default_value_t = u64::MAX)]
    count: u64,
    /// Fraction of packages sent to a second ministry through the national axis.
    #[arg(long, default_value_t = 0.0)]
    cross: f64,
    /// The trucd binary (default: beside this one).
    #[arg(long)]
    trucd: Option<PathBuf>,
    /// A setting of the relays' `[store]` section, as `KEY=VALUE` in TOML (repeatable), to
    /// compare settings in one session: `--store prepare_payload_segments=false`.
    #[arg(long = "store", value_name = "KEY=VALUE")]
    store_settings: Vec<String>,
    /// Working directory (default: a temporary one, removed at the end).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Also write the report as JSON to this file (`-` for standard output only).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Chaos: kill the (first) relay with SIGKILL about every this many seconds while the
    /// load runs, and restart it on the same store.
    #[arg(long)]
    kill_every: Option<f64>,
    /// Chaos: stop the load after this many kills (and one more period).
    #[arg(long, requires = "kill_every")]
    kills: Option<u64>,
    /// Seconds to wait after sending for the last deliveries.
    #[arg(long, default_value_t = 60.0)]
    drain: f64,
    /// Faults the national-axis simulator injects for the whole run (with `--cross`), as the
    /// JSON of its `/_control/faults`: error_rate (by operation, `*` for all), latency_ms,
    /// reset_rate, lose_ack_rate, duplicate_list.
    #[arg(long, requires = "cross")]
    axis_faults: Option<String>,
    /// Backlog: the recipients' adapters stay away while the load is sent, so everything
    /// queues in the relay; then the relay is killed (SIGKILL) and started again on its
    /// store (start-up timed), and only then do the adapters connect and drain it.
    #[arg(long, conflicts_with_all = ["cross", "kill_every"])]
    backlog: bool,
    /// An outage of the national axis of this many seconds (with `--cross`).
    #[arg(long, requires = "cross")]
    axis_outage: Option<f64>,
    /// When the outage starts, in seconds from the start (default: a third of
    /// `--duration`). It may fall in the drain, after sending stopped.
    #[arg(long, requires = "axis_outage")]
    axis_outage_at: Option<f64>,
}

/// What carries the packages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
enum Target {
    /// `trucd` processes, through adapters over mutual TLS.
    Truc,
    /// A `nats-server` with JetStream on files: publish with awaited acks, pull consumers.
    Jetstream,
}

impl Report {
    /// Whether the run proves what it should: something was acknowledged, and every
    /// acknowledged package arrived, with its bytes, where it was addressed, and nothing
    /// arrived that was never sent.
    fn passed(&self) -> bool {
        self.acknowledged > 0
            && self.lost == 0
            && self.corrupted == 0
            && self.misrouted == 0
            && self.unknown == 0
    }
}

/// The report.
#[derive(Debug, Serialize)]
struct Report {
    target: Target,
    /// How the target was set up: transport security and when stored data is synced.
    setup: String,
    size: Size,
    pace: String,
    adapters: usize,
    cross: f64,
    sending_seconds: f64,
    total_seconds: f64,
    acknowledged: u64,
    received: u64,
    lost: u64,
    duplicates: u64,
    corrupted: u64,
    misrouted: u64,
    unknown: u64,
    statuses: u64,
    kills: u64,
    delivered_unacknowledged: u64,
    missing: Vec<String>,
    errors: std::collections::BTreeMap<String, u64>,
    submitted_per_second: f64,
    delivered_per_second: f64,
    megabytes_per_second: f64,
    latency_ms: Latency,
    /// From the submission to the relay's receipt (stored durably), without the delivery.
    receipt_latency_ms: Latency,
    /// Open loop: from each submission's scheduled time to the moment the load generator
    /// had its package built and ready to send (its own lateness, included in both
    /// latencies above).
    start_lateness_ms: Option<Latency>,
    relays: Vec<RelayUsage>,
    loadgen_cpu_seconds: f64,
    /// The national axis, for cross-ministry runs.
    axis: Option<AxisReport>,
    /// The backlog run, with `--backlog`.
    backlog: Option<BacklogReport>,
}

/// A backlog queued while the recipients were away, a restart, and the drain.
#[derive(Debug, Serialize)]
struct BacklogReport {
    /// Packages queued (acknowledged while no recipient was connected).
    queued: u64,
    /// The relay's store on disk with the backlog, in MiB.
    store_mib: f64,
    /// Store bytes per queued package.
    store_bytes_per_package: f64,
    /// The relay's peak resident memory while the backlog built up, in MiB.
    fill_peak_rss_mib: f64,
    /// From the restart (after SIGKILL) to serving adapters again, in seconds.
    startup_seconds: f64,
    /// From the adapters connecting to the last delivery, in seconds.
    drain_seconds: f64,
    /// Deliveries per second during the drain.
    drain_per_second: f64,
    /// The restarted relay's peak resident memory (start-up and drain), in MiB.
    drain_peak_rss_mib: f64,
}

/// What the national-axis simulator did during a cross-ministry run.
#[derive(Debug, Serialize)]
struct AxisReport {
    /// The faults it injected for the whole run.
    faults: truc_axis_sim::Faults,
    /// The outage, if any, in seconds.
    outage_seconds: f64,
    /// Its calls by operation and outcome (`.ok`, `.injected_error`, `.reset`,
    /// `.outage`, ...).
    calls: std::collections::BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
struct Latency {
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
    samples: u64,
}

#[derive(Default, Debug, Serialize)]
struct RelayUsage {
    ministry: String,
    cpu_seconds: f64,
    cpu_percent: f64,
    peak_rss_mib: f64,
    /// The relay's own share of the submissions' latency, from its
    /// `truc_submission_duration_seconds` histogram over the run: the bucket bounds (ms)
    /// under which half and 99 % of the document submissions finished. Without kills only.
    submission_p50_ms_at_most: Option<f64>,
    submission_p99_ms_at_most: Option<f64>,
    /// The store's flushes over the run, from its `truc_store_flush_duration_seconds`
    /// histogram: how many, and the bucket bounds (ms) under which half, 99 % and all of
    /// them finished — where a stalling disk shows. Without kills only.
    flushes: Option<u64>,
    flush_p50_ms_at_most: Option<f64>,
    flush_p99_ms_at_most: Option<f64>,
    flush_max_ms_at_most: Option<f64>,
    /// `fdatasync`s of payload segments over the run (`truc_store_payload_syncs_total`):
    /// each makes a group of small submissions durable. Without kills only.
    payload_syncs: Option<u64>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        eprintln!("truc-loadgen: a rustls crypto provider was already installed");
        return std::process::ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("truc-loadgen: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(report) if report.passed() => std::process::ExitCode::SUCCESS,
        Ok(report) => {
            if report.acknowledged == 0 {
                eprintln!("truc-loadgen: the target acknowledged nothing");
            }
            std::process::ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("truc-loadgen: {e:#}");
            std::process::ExitCode::from(3)
        }
    }
}

fn sibling_trucd() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("no directory for this binary")?;
    let trucd = dir.join("trucd");
    anyhow::ensure!(
        trucd.is_file(),
        "no trucd beside {} (build it: cargo build --release -p trucd, or give --trucd)",
        exe.display()
    );
    Ok(trucd)
}

async fn run(cli: Cli) -> anyhow::Result<Report> {
    anyhow::ensure!(cli.adapters >= 2, "--adapters: at least 2");
    if cli.target == Target::Jetstream {
        return run_jetstream(cli).await;
    }
    let trucd = match &cli.trucd {
        Some(p) => p.clone(),
        None => sibling_trucd()?,
    };
    let temp = tempfile::Builder::new().prefix("truc-loadgen-").tempdir()?;
    let dir = cli.dir.clone().unwrap_or_else(|| temp.path().to_owned());
    let ca = trucd::pki::LocalCa::new("truc-loadgen CA")?;

    // The relays (and the axis between them, for cross-ministry traffic).
    let axis = if cli.cross > 0.0 {
        Some(
            truc_axis_sim::LocalSimulator::start(vec![
                truc_axis_sim::SystemConfig::new("loadgen-a", "secret-a", "000.00.00.G04"),
                truc_axis_sim::SystemConfig::new("loadgen-b", "secret-b", "000.00.00.G12"),
            ])
            .await?,
        )
    } else {
        None
    };
    let faults: truc_axis_sim::Faults = match &cli.axis_faults {
        Some(json) => serde_json::from_str(json).context("--axis-faults")?,
        None => truc_axis_sim::Faults::default(),
    };
    if let Some(a) = &axis {
        a.sim.set_faults(faults.clone());
    }
    let relay_a = SpawnedRelay::start(
        &trucd,
        &dir.join("relay-a"),
        &ca,
        "000.00.00.G04",
        cli.adapters,
        axis.as_ref().map(|a| AxisLink {
            base_url: &a.base_url,
            system: "loadgen-a",
            secret: "secret-a",
        }),
        &cli.store_settings,
    )?;
    let relay_b = match &axis {
        Some(a) => Some(SpawnedRelay::start(
            &trucd,
            &dir.join("relay-b"),
            &ca,
            "000.00.00.G12",
            cli.adapters,
            Some(AxisLink {
                base_url: &a.base_url,
                system: "loadgen-b",
                secret: "secret-b",
            }),
            &cli.store_settings,
        )?),
        None => None,
    };
    let relays: Vec<&SpawnedRelay> = std::iter::once(&relay_a).chain(relay_b.as_ref()).collect();

    // Adapters: each sends to the others' units (level-2 and level-3) of its own ministry,
    // and across the axis to the other ministry's.
    let ledger = Arc::new(Ledger::default());
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    let mut away = Vec::new();
    let mut local = Vec::new();
    let mut remote = Vec::new();
    for (i, r) in relays.iter().enumerate() {
        let recipients = |relay: &SpawnedRelay| -> Vec<String> {
            relay
                .adapter_units()
                .into_iter()
                .flat_map(|u| {
                    let mut all = vec![u.clone()];
                    all.extend(relay.children.get(&u).cloned().unwrap_or_default());
                    all
                })
                .collect()
        };
        let own = recipients(r);
        let other = relays
            .get(1 - i.min(1))
            .filter(|_| relays.len() > 1)
            .map(|o| recipients(o))
            .unwrap_or_default();
        for unit in r.adapter_units() {
            let client = r.connect(&unit).await?;
            if cli.backlog {
                // Connected later, after the backlog and the restart.
                away.push((unit.clone(), client.clone()));
            } else {
                receivers.push(tokio::spawn(traffic::receive(
                    ledger.clone(),
                    unit.clone(),
                    client.clone(),
                )));
            }
            local.push(
                own.iter()
                    .filter(|c| c.as_str() != unit)
                    .cloned()
                    .collect::<Vec<_>>(),
            );
            remote.push(other.clone());
            senders.push((unit, traffic::Submitter::Truc(client)));
        }
    }
    let routes = Routes {
        senders,
        local,
        remote,
        cross: cli.cross,
    };
    let pace = match (cli.concurrency, cli.rate) {
        (_, Some(rate)) => Pace::Open(rate),
        (Some(c), None) => Pace::Closed(c),
        (None, None) => Pace::Closed(64),
    };
    let ministries: Vec<String> = relays.iter().map(|r| r.ministry.clone()).collect();
    let before: Vec<_> = relays.iter().map(|r| usage(&r.pid().to_string())).collect();
    let admins: Vec<Option<std::net::SocketAddr>> = relays.iter().map(|r| r.admin).collect();
    let buckets_before = relay_histograms(&admins).await;
    let pid_b = relay_b.as_ref().map(|r| r.pid());
    let self_before = usage("self");
    eprintln!(
        "truc-loadgen: {} adapters per relay, {:?}, {:?}, {} s{}",
        cli.adapters,
        cli.size,
        pace,
        cli.duration,
        if cli.cross > 0.0 {
            format!(", {:.0} % across the national axis", cli.cross * 100.0)
        } else {
            String::new()
        }
    );
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(cli.duration);
    let relay_a = Arc::new(std::sync::Mutex::new(relay_a));
    let max_kills = cli.kills.unwrap_or(u64::MAX);
    let chaos = cli.kill_every.map(|every| {
        let (relay, ledger) = (relay_a.clone(), ledger.clone());
        tokio::spawn(async move {
            let mut kills = 0u64;
            while Instant::now() < until && !ledger.sending_stopped() {
                if kills >= max_kills {
                    // Load for one more period on the last restart, then stop sending.
                    tokio::time::sleep(Duration::from_secs_f64(every)).await;
                    ledger.stop_sending();
                    break;
                }
                // Random moments: 0.5 to 1.5 times the period; none once sending has
                // ended (a `--count` reached before `--duration`).
                let wait =
                    Instant::now() + Duration::from_secs_f64(every * (0.5 + fastrand::f64()));
                while Instant::now() < wait && !ledger.sending_stopped() {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                if Instant::now() >= until || ledger.sending_stopped() {
                    break;
                }
                let relay = relay.clone();
                let restarted = tokio::task::spawn_blocking(move || {
                    relay
                        .lock()
                        .map_err(|_| anyhow::anyhow!("poisoned"))
                        .and_then(|mut r| r.kill_and_restart())
                })
                .await;
                match restarted {
                    Ok(Ok(())) => kills += 1,
                    Ok(Err(e)) => {
                        eprintln!("truc-loadgen: the relay did not come back: {e:#}");
                        break;
                    }
                    Err(e) => {
                        eprintln!("truc-loadgen: {e}");
                        break;
                    }
                }
            }
            kills
        })
    });
    let outage = match (&axis, cli.axis_outage) {
        (Some(a), Some(seconds)) => {
            let (sim, mut with_outage) = (a.sim.clone(), faults.clone());
            let starts_in =
                Duration::from_secs_f64(cli.axis_outage_at.unwrap_or(cli.duration / 3.0));
            Some(tokio::spawn(async move {
                tokio::time::sleep(starts_in).await;
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0);
                with_outage.outage_until_ms = Some(now_ms + (seconds * 1000.0) as i64);
                sim.set_faults(with_outage);
                eprintln!("truc-loadgen: the national axis is down for {seconds} s");
            }))
        }
        _ => None,
    };
    traffic::send(ledger.clone(), routes, pace, cli.size, until, cli.count).await;
    let sending = started.elapsed();
    // Sending is over (time, `--count`, or the chaos task's last period): no more kills.
    ledger.stop_sending();
    let kills = match chaos {
        Some(task) => task.await.unwrap_or(0),
        None => 0,
    };
    // With a backlog: measure it, restart the relay on it, then let the adapters in.
    let backlog_before_drain = if cli.backlog {
        let queued = ledger.acknowledged.load(Ordering::Relaxed);
        let pid = relay_a
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .pid();
        let fill_peak = usage(&pid.to_string()).peak_rss;
        let store_bytes = dir_size(&dir.join("relay-a").join("store"));
        eprintln!("truc-loadgen: {queued} packages queued; killing and restarting the relay");
        let relay = relay_a.clone();
        let restart = Instant::now();
        tokio::task::spawn_blocking(move || {
            relay
                .lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))
                .and_then(|mut r| r.kill_and_restart())
        })
        .await??;
        let startup = restart.elapsed();
        eprintln!(
            "truc-loadgen: serving again after {:.2} s; the adapters connect",
            startup.as_secs_f64()
        );
        for (unit, client) in away.drain(..) {
            receivers.push(tokio::spawn(traffic::receive(ledger.clone(), unit, client)));
        }
        Some((queued, fill_peak, store_bytes, startup, Instant::now()))
    } else {
        None
    };
    // Wait for what was acknowledged to arrive.
    let drain_until = Instant::now() + Duration::from_secs_f64(cli.drain);
    while ledger.outstanding() > 0 && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = started.elapsed();
    let backlog =
        backlog_before_drain.map(|(queued, fill_peak, store_bytes, startup, drain_started)| {
            let drained = drain_started.elapsed();
            let pid = relay_a.lock().map(|r| r.pid()).unwrap_or(0);
            BacklogReport {
                queued,
                store_mib: store_bytes as f64 / (1024.0 * 1024.0),
                store_bytes_per_package: store_bytes as f64 / queued.max(1) as f64,
                fill_peak_rss_mib: fill_peak as f64 / (1024.0 * 1024.0),
                startup_seconds: startup.as_secs_f64(),
                drain_seconds: drained.as_secs_f64(),
                drain_per_second: ledger.received.load(Ordering::Relaxed) as f64
                    / drained.as_secs_f64(),
                drain_peak_rss_mib: usage(&pid.to_string()).peak_rss as f64 / (1024.0 * 1024.0),
            }
        });
    ledger.stop();
    if let Some(task) = outage {
        task.abort();
    }
    let (pid_a, lifetime_a) = relay_a
        .lock()
        .map(|r| (r.pid(), r.started.elapsed()))
        .unwrap_or((0, total));
    let after: Vec<_> = std::iter::once(pid_a)
        .chain(pid_b)
        .map(|pid| usage(&pid.to_string()))
        .collect();
    let self_after = usage("self");
    let buckets_after = relay_histograms(&admins).await;
    for r in receivers {
        r.abort();
    }

    let mut relays_usage: Vec<RelayUsage> = ministries
        .iter()
        .zip(before.iter().zip(&after))
        .enumerate()
        .map(|(i, (m, (b, a)))| {
            // Only the first relay is killed: after kills it is a new process, whose
            // figures are its own since it started; the other's are the run's.
            let (cpu_seconds, over) = if kills > 0 && i == 0 {
                (a.cpu_seconds, lifetime_a)
            } else {
                ((a.cpu_seconds - b.cpu_seconds).max(0.0), total)
            };
            RelayUsage {
                ministry: m.clone(),
                cpu_seconds,
                cpu_percent: 100.0 * cpu_seconds / over.as_secs_f64().max(1e-3),
                peak_rss_mib: a.peak_rss as f64 / (1024.0 * 1024.0),
                ..RelayUsage::default()
            }
        })
        .collect();
    if kills == 0 {
        for (u, (b, a)) in relays_usage
            .iter_mut()
            .zip(buckets_before.iter().zip(&buckets_after))
        {
            if let (Some(b), Some(a)) = (b, a) {
                u.submission_p50_ms_at_most =
                    relay::bucket_quantile_ms(&b.submission, &a.submission, 0.5);
                u.submission_p99_ms_at_most =
                    relay::bucket_quantile_ms(&b.submission, &a.submission, 0.99);
                u.flushes = relay::bucket_count(&b.flush, &a.flush);
                u.flush_p50_ms_at_most = relay::bucket_quantile_ms(&b.flush, &a.flush, 0.5);
                u.flush_p99_ms_at_most = relay::bucket_quantile_ms(&b.flush, &a.flush, 0.99);
                u.flush_max_ms_at_most = relay::bucket_quantile_ms(&b.flush, &a.flush, 1.0);
                u.payload_syncs = a
                    .payload_syncs
                    .zip(b.payload_syncs)
                    .map(|(a, b)| a.saturating_sub(b));
            }
        }
    }
    let mut report = build_report(
        &cli,
        pace,
        &ledger,
        (sending, total),
        kills,
        relays_usage,
        self_after.cpu_seconds - self_before.cpu_seconds,
    );
    report.backlog = backlog;
    report.axis = axis.as_ref().map(|a| AxisReport {
        faults,
        outage_seconds: cli.axis_outage.unwrap_or(0.0),
        calls: a.sim.counters(),
    });
    emit(&cli, &report)?;
    if !report.passed() {
        // What the relays were doing: the first thing to read when packages went missing.
        let tails = [
            relay_a
                .lock()
                .ok()
                .map(|r| (r.ministry.clone(), r.log_tail(60))),
            relay_b
                .as_ref()
                .map(|r| (r.ministry.clone(), r.log_tail(60))),
        ];
        for (ministry, tail) in tails.into_iter().flatten() {
            eprintln!("--- relay {ministry}: the end of its log ---\n{tail}");
        }
    }
    drop(relay_b);
    drop(relay_a);
    drop(axis);
    Ok(report)
}

/// The same load through NATS JetStream.
async fn run_jetstream(cli: Cli) -> anyhow::Result<Report> {
    anyhow::ensure!(cli.cross == 0.0, "--cross: only with --target truc");
    anyhow::ensure!(
        cli.kill_every.is_none(),
        "--kill-every: only with --target truc"
    );
    anyhow::ensure!(!cli.backlog, "--backlog: only with --target truc");
    let temp = tempfile::Builder::new().prefix("truc-loadgen-").tempdir()?;
    let dir = cli.dir.clone().unwrap_or_else(|| temp.path().to_owned());
    let setup = jetstream::NatsSetup {
        sync_always: cli.nats_sync_always,
        mutual_tls: cli.nats_tls,
    };
    let server = jetstream::NatsServer::start(&cli.nats_server, &dir.join("nats"), setup)?;
    // The same unit codes as the relay's run, one subject (and consumer) each.
    let units: Vec<String> =
        truc_relay::sample_transport_ministry(&truc_edxml::OrgCode::parse("000.00.00.G04")?)
            .units
            .iter()
            .filter(|u| u.code.level() == Some(truc_edxml::OrgLevel::Two))
            .take(cli.adapters)
            .map(|u| u.code.to_string())
            .collect();
    let (js, consumers) = jetstream::prepare(&server, &units).await?;
    let ledger = Arc::new(Ledger::default());
    let receivers: Vec<_> = consumers
        .into_iter()
        .zip(units.iter().cloned())
        .map(|(c, unit)| tokio::spawn(jetstream::receive(ledger.clone(), unit, c)))
        .collect();
    let routes = Routes {
        senders: units
            .iter()
            .map(|u| (u.clone(), traffic::Submitter::JetStream(js.clone())))
            .collect(),
        local: units
            .iter()
            .map(|me| units.iter().filter(|u| *u != me).cloned().collect())
            .collect(),
        remote: vec![Vec::new(); units.len()],
        cross: 0.0,
    };
    let pace = match (cli.concurrency, cli.rate) {
        (_, Some(rate)) => Pace::Open(rate),
        (Some(c), None) => Pace::Closed(c),
        (None, None) => Pace::Closed(64),
    };
    let pid = server.pid().to_string();
    let before = usage(&pid);
    let self_before = usage("self");
    eprintln!(
        "truc-loadgen: JetStream at {}, {} units, {:?}, {:?}, {} s",
        server.url, cli.adapters, cli.size, pace, cli.duration
    );
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(cli.duration);
    traffic::send(ledger.clone(), routes, pace, cli.size, until, cli.count).await;
    let sending = started.elapsed();
    let drain_until = Instant::now() + Duration::from_secs_f64(cli.drain);
    while ledger.outstanding() > 0 && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let total = started.elapsed();
    ledger.stop();
    let after = usage(&pid);
    let self_after = usage("self");
    for r in receivers {
        r.abort();
    }
    let report = build_report(
        &cli,
        pace,
        &ledger,
        (sending, total),
        0,
        vec![RelayUsage {
            ministry: "nats-server (JetStream)".into(),
            cpu_seconds: after.cpu_seconds - before.cpu_seconds,
            cpu_percent: 100.0 * (after.cpu_seconds - before.cpu_seconds) / total.as_secs_f64(),
            peak_rss_mib: after.peak_rss as f64 / (1024.0 * 1024.0),
            ..RelayUsage::default()
        }],
        self_after.cpu_seconds - self_before.cpu_seconds,
    );
    emit(&cli, &report)?;
    drop(server);
    Ok(report)
}

fn emit(cli: &Cli, report: &Report) -> anyhow::Result<()> {
    print_table(report);
    if let Some(path) = &cli.json {
        let text = serde_json::to_string_pretty(report)?;
        if path.as_os_str() == "-" {
            println!("{text}");
        } else {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        }
    }
    Ok(())
}

fn build_report(
    cli: &Cli,
    pace: Pace,
    ledger: &Ledger,
    (sending, total): (Duration, Duration),
    kills: u64,
    relays: Vec<RelayUsage>,
    loadgen_cpu_seconds: f64,
) -> Report {
    let (p50, p99, p999, max, samples) = ledger.latency();
    let receipt = ledger.receipt_latency();
    let late = ledger.start_lateness();
    let acknowledged = ledger.acknowledged.load(Ordering::Relaxed);
    let received = ledger.received.load(Ordering::Relaxed);
    Report {
        target: cli.target,
        setup: setup_of(cli),
        size: cli.size,
        pace: match pace {
            Pace::Closed(c) => format!("closed loop, {c} in flight"),
            Pace::Open(r) => format!("open loop, {r}/s"),
        },
        adapters: cli.adapters,
        cross: cli.cross,
        sending_seconds: sending.as_secs_f64(),
        total_seconds: total.as_secs_f64(),
        acknowledged,
        received,
        lost: ledger.outstanding(),
        duplicates: ledger.duplicates.load(Ordering::Relaxed),
        corrupted: ledger.corrupted.load(Ordering::Relaxed),
        misrouted: ledger.misrouted.load(Ordering::Relaxed),
        unknown: ledger.unknown.load(Ordering::Relaxed),
        statuses: ledger.statuses.load(Ordering::Relaxed),
        kills,
        delivered_unacknowledged: ledger.delivered_unacknowledged.load(Ordering::Relaxed),
        missing: ledger.missing(10),
        errors: ledger
            .errors
            .lock()
            .map(|e| e.iter().map(|(k, v)| (k.clone(), *v)).collect())
            .unwrap_or_default(),
        submitted_per_second: acknowledged as f64 / sending.as_secs_f64(),
        delivered_per_second: received as f64 / total.as_secs_f64(),
        megabytes_per_second: ledger.bytes.load(Ordering::Relaxed) as f64
            / (1024.0 * 1024.0)
            / total.as_secs_f64(),
        latency_ms: Latency {
            p50,
            p99,
            p999,
            max,
            samples,
        },
        receipt_latency_ms: Latency {
            p50: receipt.0,
            p99: receipt.1,
            p999: receipt.2,
            max: receipt.3,
            samples: receipt.4,
        },
        start_lateness_ms: matches!(pace, Pace::Open(_)).then_some(Latency {
            p50: late.0,
            p99: late.1,
            p999: late.2,
            max: late.3,
            samples: late.4,
        }),
        relays,
        loadgen_cpu_seconds,
        axis: None,
        backlog: None,
    }
}

/// How the target of a run was set up, in words for the report.
fn setup_of(cli: &Cli) -> String {
    match cli.target {
        Target::Truc if cli.store_settings.is_empty() => {
            "mutual TLS, fsync before each receipt (group commit)".into()
        }
        Target::Truc => format!(
            "mutual TLS, fsync before each receipt (group commit), [store] {}",
            cli.store_settings.join(", ")
        ),
        Target::Jetstream => format!(
            "{}, {}",
            if cli.nats_tls {
                "mutual TLS"
            } else {
                "plain TCP"
            },
            if cli.nats_sync_always {
                "fsync before each publish ack (sync_interval: always)"
            } else {
                "files synced every 2 min (JetStream's default)"
            }
        ),
    }
}

/// Bytes in the files under `dir`.
fn dir_size(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

fn print_table(r: &Report) {
    println!(
        "{:?} ({}) · size {:?} · {} · {} adapters",
        r.target, r.setup, r.size, r.pace, r.adapters
    );
    println!(
        "  acknowledged {} · received and verified {} · lost {} · duplicates {} · corrupted {} · misrouted {} · errors {:?}",
        r.acknowledged, r.received, r.lost, r.duplicates, r.corrupted, r.misrouted, r.errors
    );
    if r.kills > 0 {
        println!(
            "  chaos: {} kills (SIGKILL) · acknowledged {} · delivered {} · lost {} · duplicates delivered {} (redeliveries of what was in flight at a kill: delivery is at least once) · delivered although the adapter saw its submission fail: {}",
            r.kills, r.acknowledged, r.received, r.lost, r.duplicates, r.delivered_unacknowledged
        );
    }
    if let Some(axis) = r
        .axis
        .as_ref()
        .filter(|a| a.outage_seconds > 0.0 || a.faults != truc_axis_sim::Faults::default())
    {
        let failed: u64 = axis
            .calls
            .iter()
            .filter(|(k, _)| !k.ends_with(".ok"))
            .map(|(_, v)| v)
            .sum();
        let ok: u64 = axis
            .calls
            .iter()
            .filter(|(k, _)| k.ends_with(".ok"))
            .map(|(_, v)| v)
            .sum();
        println!(
            "  axis faults: {} · outage {} s · axis calls {} ok, {} failed or cut · acknowledged {} · delivered {} · lost {} · duplicates delivered {}",
            serde_json::to_string(&axis.faults).unwrap_or_default(),
            axis.outage_seconds,
            ok,
            failed,
            r.acknowledged,
            r.received,
            r.lost,
            r.duplicates
        );
    }
    if let Some(b) = &r.backlog {
        println!(
            "  backlog: {} queued · store {:.0} MiB ({:.0} B per package) · relay peak RSS {:.0} MiB while queuing · restart after SIGKILL serving in {:.2} s · drained in {:.1} s ({:.0}/s) · peak RSS {:.0} MiB after the restart",
            b.queued,
            b.store_mib,
            b.store_bytes_per_package,
            b.fill_peak_rss_mib,
            b.startup_seconds,
            b.drain_seconds,
            b.drain_per_second,
            b.drain_peak_rss_mib
        );
    }
    if !r.missing.is_empty() {
        println!("  not delivered (first ones): {:?}", r.missing);
    }
    println!(
        "  throughput: {:.0} submitted/s, {:.0} delivered/s end to end, {:.1} MiB/s",
        r.submitted_per_second, r.delivered_per_second, r.megabytes_per_second
    );
    println!(
        "  latency submit → recipient's ack (ms): p50 {:.2} · p99 {:.2} · p99.9 {:.2} · max {:.2} ({} samples)",
        r.latency_ms.p50, r.latency_ms.p99, r.latency_ms.p999, r.latency_ms.max, r.latency_ms.samples
    );
    let q = &r.receipt_latency_ms;
    println!(
        "  of which submit → durable receipt (ms): p50 {:.2} · p99 {:.2} · p99.9 {:.2} · max {:.2}",
        q.p50, q.p99, q.p999, q.max
    );
    if let Some(q) = &r.start_lateness_ms {
        println!(
            "  of which the load generator began late (ms): p50 {:.2} · p99 {:.2} · p99.9 {:.2} · max {:.2}",
            q.p50, q.p99, q.p999, q.max
        );
    }
    for u in &r.relays {
        println!(
            "  relay {}: {:.1} s CPU ({:.0} % of a core), peak RSS {:.0} MiB",
            u.ministry, u.cpu_seconds, u.cpu_percent, u.peak_rss_mib
        );
    }
    for u in &r.relays {
        if let (Some(p50), Some(p99)) = (u.submission_p50_ms_at_most, u.submission_p99_ms_at_most) {
            println!(
                "  relay {}'s own submission time (its histogram): p50 ≤ {p50} ms · p99 ≤ {p99} ms",
                u.ministry
            );
        }
        if let (Some(n), Some(p50), Some(p99), Some(max)) = (
            u.flushes,
            u.flush_p50_ms_at_most,
            u.flush_p99_ms_at_most,
            u.flush_max_ms_at_most,
        ) {
            println!(
                "  relay {}'s store flushes: {n}, p50 ≤ {p50} ms · p99 ≤ {p99} ms · slowest ≤ {max} ms",
                u.ministry
            );
        }
        if let Some(syncs) = u.payload_syncs.filter(|&s| s > 0) {
            // With one relay every acknowledged package was one of its submissions.
            let each = if r.relays.len() == 1 {
                format!(
                    " ({:.1} packages each)",
                    r.acknowledged as f64 / syncs as f64
                )
            } else {
                String::new()
            };
            println!("  relay {}'s payload syncs: {syncs}{each}", u.ministry);
        }
    }
    println!("  loadgen: {:.1} s CPU", r.loadgen_cpu_seconds);
}

/// Each relay's histograms now (`None` where they cannot be read).
async fn relay_histograms(
    admins: &[Option<std::net::SocketAddr>],
) -> Vec<Option<relay::RelayHistograms>> {
    let mut out = Vec::with_capacity(admins.len());
    for admin in admins {
        out.push(match admin {
            Some(a) => relay::histograms(*a).await.ok(),
            None => None,
        });
    }
    out
}
