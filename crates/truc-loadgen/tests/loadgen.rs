//! The load generator against real `trucd` processes: a short mixed run (local and across
//! the national axis) where every acknowledged package is delivered, verified by content.

use std::path::PathBuf;

/// `trucd`, beside this package's binary (built with the workspace), or built now.
fn trucd_binary() -> PathBuf {
    let loadgen = PathBuf::from(env!("CARGO_BIN_EXE_truc-loadgen"));
    let trucd = loadgen.with_file_name("trucd");
    if !trucd.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "-p", "trucd", "--bin", "trucd"])
            .status()
            .expect("cargo");
        assert!(status.success(), "building trucd");
    }
    trucd
}

/// Runs the load generator against `trucd` with `args`; expects success and returns its
/// JSON report and its printed table.
fn run_loadgen(args: &[&str]) -> (serde_json::Value, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let report = dir.path().join("report.json");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_truc-loadgen"))
        .args(args)
        .arg("--trucd")
        .arg(trucd_binary())
        .arg("--json")
        .arg(&report)
        .output()
        .expect("loadgen runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r = serde_json::from_str(&std::fs::read_to_string(&report).expect("report")).expect("json");
    (r, stdout)
}

/// A relay that refuses its configuration stops at once, and the load generator says so
/// (rather than waiting for it to serve).
#[test]
fn a_relay_that_stops_at_start_is_reported_as_stopped() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_truc-loadgen"))
        .args(["--duration", "1", "--store", "no_such_setting=1", "--trucd"])
        .arg(trucd_binary())
        .output()
        .expect("loadgen runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("unknown field `no_such_setting`"),
        "{stderr}"
    );
    assert!(stderr.contains("trucd stopped before serving"), "{stderr}");
}

#[test]
fn a_short_load_is_delivered_and_verified_end_to_end() {
    let (r, stdout) = run_loadgen(&[
        "--adapters",
        "3",
        "--concurrency",
        "8",
        "--count",
        "150",
        "--cross",
        "0.2",
        "--duration",
        "120",
        "--drain",
        "60",
    ]);
    assert_eq!(r["acknowledged"], 150, "{r}");
    assert_eq!(r["received"], 150, "{r}");
    assert_eq!(r["lost"], 0);
    assert_eq!(r["corrupted"], 0);
    assert_eq!(r["misrouted"], 0);
    assert_eq!(r["unknown"], 0);
    assert_eq!(
        r["relays"].as_array().map(Vec::len),
        Some(2),
        "two ministries"
    );
    assert!(r["latency_ms"]["samples"] == 150);
    assert!(r["relays"][0]["peak_rss_mib"]
        .as_f64()
        .is_some_and(|m| m > 1.0));
    assert!(stdout.contains("received and verified 150"), "{stdout}");
    assert!(
        r["start_lateness_ms"].is_null(),
        "a closed loop has no schedule: {r}"
    );
}

/// An open loop keeps a schedule: the report says how late the load generator itself
/// began each submission, since that lateness is part of every latency it reports.
#[test]
fn an_open_loop_reports_how_late_the_generator_began_each_submission() {
    let (r, stdout) = run_loadgen(&[
        "--adapters",
        "2",
        "--rate",
        "200",
        "--count",
        "100",
        "--duration",
        "60",
        "--drain",
        "60",
    ]);
    assert_eq!(r["received"], 100, "{r}");
    let late = &r["start_lateness_ms"];
    assert_eq!(late["samples"], 100, "{r}");
    let (p50, max) = (late["p50"].as_f64(), late["max"].as_f64());
    assert!(p50.is_some_and(|p| p >= 0.0) && max >= p50, "{r}");
    // It is part of the latency from the scheduled time to the recipient's acknowledgement.
    assert!(r["latency_ms"]["max"].as_f64() >= max, "{r}");
    assert!(stdout.contains("the load generator began late"), "{stdout}");
}

/// The CI version of `scripts/chaos.sh`: the relay is killed with SIGKILL ten times under
/// load and restarted on its store; every acknowledged package is delivered.
#[test]
fn ten_kills_under_load_lose_nothing_acknowledged() {
    let (r, stdout) = run_loadgen(&[
        "--adapters",
        "3",
        "--concurrency",
        "8",
        "--duration",
        "300",
        "--kill-every",
        "0.5",
        "--kills",
        "10",
        "--drain",
        "120",
    ]);
    assert_eq!(r["kills"], 10, "{r}");
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["corrupted"], 0, "{r}");
    assert_eq!(r["misrouted"], 0, "{r}");
    let acknowledged = r["acknowledged"].as_u64().expect("count");
    assert!(acknowledged > 0, "{r}");
    assert!(
        r["received"].as_u64().expect("count") >= acknowledged,
        "{r}"
    );
    assert!(stdout.contains("chaos: 10 kills"), "{stdout}");
}

/// The CI version of `scripts/chaos-axis.sh`: half the load crosses a national axis that
/// fails calls, cuts connections, loses acknowledgements, lists entries twice and goes down
/// for a while; every acknowledged package still arrives, once.
#[test]
fn a_failing_national_axis_under_load_loses_nothing_acknowledged() {
    let (r, stdout) = run_loadgen(&[
        "--adapters",
        "3",
        "--concurrency",
        "8",
        "--count",
        "300",
        "--cross",
        "0.5",
        "--duration",
        "6",
        "--drain",
        "150",
        "--axis-faults",
        r#"{"error_rate":{"*":0.2},"reset_rate":0.05,"lose_ack_rate":0.2,"duplicate_list":true}"#,
        "--axis-outage",
        "2",
        "--axis-outage-at",
        "0.3",
    ]);
    assert_eq!(r["lost"], 0, "{r}");
    assert_eq!(r["corrupted"], 0, "{r}");
    assert_eq!(r["misrouted"], 0, "{r}");
    assert_eq!(r["duplicates"], 0, "{r}");
    let acknowledged = r["acknowledged"].as_u64().expect("count");
    assert!(acknowledged > 0, "{r}");
    assert_eq!(r["received"].as_u64(), Some(acknowledged), "{r}");
    // The faults happened.
    let calls = r["axis"]["calls"].as_object().expect("axis calls");
    let count = |suffix: &str| -> u64 {
        calls
            .iter()
            .filter(|(k, _)| k.ends_with(suffix))
            .filter_map(|(_, v)| v.as_u64())
            .sum()
    };
    assert!(count(".injected_error") > 0, "{r}");
    assert!(count(".reset") > 0, "{r}");
    assert!(count(".outage") > 0, "{r}");
    assert!(count(".ok") > 0, "{r}");
    assert!(stdout.contains("axis faults:"), "{stdout}");
}

/// The small version of the backlog measurement: packages queue while their recipients are
/// away, the relay is killed and restarted on that backlog, and the recipients drain it.
#[test]
fn a_backlog_survives_a_restart_and_drains() {
    let (r, stdout) = run_loadgen(&[
        "--adapters",
        "3",
        "--concurrency",
        "8",
        "--count",
        "300",
        "--duration",
        "120",
        "--drain",
        "120",
        "--backlog",
    ]);
    assert_eq!(r["acknowledged"], 300, "{r}");
    assert_eq!(r["received"], 300, "{r}");
    assert_eq!(r["lost"], 0, "{r}");
    let b = &r["backlog"];
    assert_eq!(b["queued"], 300, "{r}");
    assert!(
        b["startup_seconds"].as_f64().is_some_and(|s| s > 0.0),
        "{r}"
    );
    assert!(b["store_mib"].as_f64().is_some_and(|m| m > 0.0), "{r}");
    assert!(
        b["drain_per_second"].as_f64().is_some_and(|d| d > 0.0),
        "{r}"
    );
    assert!(stdout.contains("backlog: 300 queued"), "{stdout}");
}
