//! Relays under test: `trucd` processes of their own (so their CPU and memory can be read
//! from `/proc`), with generated certificates and the sample registry of a ministry.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use truc_client::{Client, ClientTls};
use truc_edxml::OrgCode;
use truc_relay::sample_transport_ministry;
use trucd::pki::{LocalCa, LocalCert};

/// A `trucd` process and the adapters' certificates it knows.
pub struct SpawnedRelay {
    /// The ministry it serves.
    pub ministry: String,
    /// Its gRPC address.
    pub addr: SocketAddr,
    /// Its admin API (plain HTTP on loopback), for `/metrics`.
    pub admin: Option<SocketAddr>,
    child: Child,
    trucd: PathBuf,
    config_file: PathBuf,
    log_file: PathBuf,
    ca_pem: String,
    certs: BTreeMap<String, LocalCert>,
    /// Level-3 units of each adapter's unit (recipients served through it).
    pub children: BTreeMap<String, Vec<String>>,
    /// When the current process started (its CPU time is its own since then).
    pub started: std::time::Instant,
}

impl Drop for SpawnedRelay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The national-axis settings of a spawned relay.
pub struct AxisLink<'a> {
    /// Base URL of the simulator.
    pub base_url: &'a str,
    /// System id.
    pub system: &'a str,
    /// Secret.
    pub secret: &'a str,
}

impl SpawnedRelay {
    /// Starts `trucd` for `ministry` in `dir`, with adapters for `adapters` level-2 units of
    /// the sample registry, and `store_settings` (`KEY=VALUE` lines) in its `[store]`.
    pub fn start(
        trucd: &Path,
        dir: &Path,
        ca: &LocalCa,
        ministry: &str,
        adapters: usize,
        axis: Option<AxisLink<'_>>,
        store_settings: &[String],
    ) -> anyhow::Result<Self> {
        for setting in store_settings {
            anyhow::ensure!(
                setting.contains('=') && !setting.contains('\n'),
                "a store setting is KEY=VALUE: {setting:?}"
            );
        }
        std::fs::create_dir_all(dir)?;
        let ministry_code = OrgCode::parse(ministry)?;
        let mut registry = sample_transport_ministry(&ministry_code);
        let level2: Vec<String> = registry
            .units
            .iter()
            .filter(|u| u.code.level() == Some(truc_edxml::OrgLevel::Two))
            .map(|u| u.code.to_string())
            .take(adapters)
            .collect();
        anyhow::ensure!(
            level2.len() == adapters,
            "the registry has only {} level-2 units",
            level2.len()
        );
        let mut certs = BTreeMap::new();
        for unit in &level2 {
            let cert = ca.issue(&format!("load adapter {unit}"), &[])?;
            if let Some(u) = registry.units.iter_mut().find(|u| u.code.as_str() == unit) {
                u.certificates.push(cert.fingerprint.clone());
            }
            certs.insert(unit.clone(), cert);
        }
        let mut children: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for u in &registry.units {
            if u.code.level() == Some(truc_edxml::OrgLevel::Three) {
                if let Some(parent) = u.code.parent() {
                    let parent = parent.to_string();
                    if certs.contains_key(&parent) {
                        children.entry(parent).or_default().push(u.code.to_string());
                    }
                }
            }
        }
        let server = ca.issue("truc relay under load", &["localhost"])?;
        let write = |name: &str, text: &str| -> anyhow::Result<PathBuf> {
            let p = dir.join(name);
            std::fs::write(&p, text)?;
            Ok(p)
        };
        let ca_file = write("ca.pem", &ca.pem)?;
        let cert_file = write("relay.pem", &server.cert)?;
        let key_file = write("relay.key", &server.key)?;
        let registry_file = write("registry.toml", &registry.to_toml())?;
        let upstream = match axis {
            Some(a) => format!(
                "\n[upstream]\nbase_url = \"{}\"\nsystem_id = \"{}\"\nsecret = \"{}\"\npoll_secs = 1\n",
                a.base_url, a.system, a.secret
            ),
            None => String::new(),
        };
        let store_section = if store_settings.is_empty() {
            String::new()
        } else {
            format!("\n[store]\n{}\n", store_settings.join("\n"))
        };
        let config = format!(
            "ministry = \"{ministry}\"\nlisten = \"127.0.0.1:0\"\nstore_dir = {store:?}\nregistry_file = {registry_file:?}\nlog_level = \"warn,trucd=info,truc_upstream=info\"\nlog_format = \"pretty\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[tls]\ncert = {cert_file:?}\nkey = {key_file:?}\nclient_ca = {ca_file:?}\n\n[limits]\nsubmits_per_second = 1000000\nsubmit_burst = 1000000\nmax_credits = 10000\nretry_base_ms = 250\nretry_cap_secs = 5\n{upstream}{store_section}",
            store = dir.join("store"),
        );
        let config_file = write("trucd.toml", &config)?;
        let log_file = dir.join("trucd.log");
        let (child, addr, admin) = launch(trucd, &config_file, &log_file)?;
        // Later starts (after a kill) listen on the same address, so adapters reconnect.
        std::fs::write(
            &config_file,
            config.replacen(
                "listen = \"127.0.0.1:0\"",
                &format!("listen = \"{addr}\""),
                1,
            ),
        )?;
        Ok(SpawnedRelay {
            ministry: ministry.to_owned(),
            addr,
            admin,
            child,
            trucd: trucd.to_owned(),
            config_file,
            log_file,
            ca_pem: ca.pem.clone(),
            certs,
            children,
            started: std::time::Instant::now(),
        })
    }

    /// Kills the relay with SIGKILL (no chance to flush or say goodbye) and starts it again
    /// on the same store and address.
    pub fn kill_and_restart(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        let started = std::time::Instant::now();
        let (child, addr, admin) = launch(&self.trucd, &self.config_file, &self.log_file)?;
        anyhow::ensure!(addr == self.addr, "restarted on {addr}, not {}", self.addr);
        self.started = started;
        self.child = child;
        self.admin = admin;
        Ok(())
    }

    /// The level-2 units with an adapter.
    pub fn adapter_units(&self) -> Vec<String> {
        self.certs.keys().cloned().collect()
    }

    /// Connects the adapter of `unit` (mutual TLS).
    pub async fn connect(&self, unit: &str) -> anyhow::Result<Client> {
        let cert = self.certs.get(unit).context("no such adapter")?;
        let tls = ClientTls {
            ca: self.ca_pem.clone().into_bytes(),
            cert: cert.cert.clone().into_bytes(),
            key: cert.key.clone().into_bytes(),
            domain: "localhost".into(),
        };
        let endpoint = format!("https://{}", self.addr);
        // The relay may still be opening its store: a few tries.
        let mut last = None;
        for _ in 0..100 {
            match Client::connect(&endpoint, Some(tls.clone())).await {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(anyhow::anyhow!("connecting to {endpoint}: {last:?}"))
    }

    /// The last `lines` lines the relay logged (all its runs, kills included), to show
    /// what it was doing when a run went wrong.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log_file).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The process id, for `/proc` readings.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// What `trucd` says on its standard output while it starts.
enum StartLine {
    Grpc(String),
    Admin(String),
    Serving,
}

/// Starts `trucd serve` with a configuration; returns it once it serves, with the
/// addresses it bound (gRPC, and the admin API if it said where). Everything it logs is
/// appended to `log_file`.
fn launch(
    trucd: &Path,
    config_file: &Path,
    log_file: &Path,
) -> anyhow::Result<(Child, SocketAddr, Option<SocketAddr>)> {
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_file)
        .with_context(|| format!("opening {}", log_file.display()))?;
    let mut command = Command::new(trucd);
    for (name, _) in std::env::vars() {
        if name.starts_with("TRUC_") {
            command.env_remove(name);
        }
    }
    let mut child = command
        .args(["serve", "--config"])
        .arg(config_file)
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("starting {}", trucd.display()))?;
    let stdout = child.stdout.take().context("no stdout")?;
    let (tx, rx) = std::sync::mpsc::channel::<StartLine>();
    std::thread::spawn(move || {
        let addr_of = |line: &str| {
            line.find("addr=").map(|at| {
                line[at + 5..]
                    .split_whitespace()
                    .next()
                    .unwrap_or("")
                    .to_owned()
            })
        };
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            // Best effort: the log is for diagnosis, a failed write must not stop the relay.
            let _ = writeln!(log, "{line}");
            let said = if line.contains("gRPC listener bound") {
                addr_of(&line).map(StartLine::Grpc)
            } else if line.contains("admin API listening") {
                addr_of(&line).map(StartLine::Admin)
            } else if line.contains("serving adapters") {
                Some(StartLine::Serving)
            } else {
                None
            };
            if let Some(said) = said {
                let _ = tx.send(said);
            }
        }
    });
    let (mut addr, mut admin) = (None, None);
    loop {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(StartLine::Grpc(a)) => addr = Some(a.parse::<SocketAddr>()?),
            Ok(StartLine::Admin(a)) => admin = a.parse::<SocketAddr>().ok(),
            Ok(StartLine::Serving) => break,
            // Its output ended: it stopped (its own message is above, on stderr).
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait()?;
                anyhow::bail!("trucd stopped before serving ({status})");
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.kill();
                anyhow::bail!("trucd did not start serving within 120 s");
            }
        }
    }
    let addr = addr.context("trucd did not say where it listens")?;
    Ok((child, addr, admin))
}

/// Two of the relay's histograms, as cumulative buckets (`le` in seconds, count), read
/// from its `/metrics` at one moment.
#[derive(Debug, Clone, Default)]
pub struct RelayHistograms {
    /// `truc_submission_duration_seconds{kind="document"}`: the relay's own share of each
    /// submission's latency.
    pub submission: Vec<(f64, u64)>,
    /// `truc_store_flush_duration_seconds`: the store's flushes (the fsync a group of
    /// durable receipts waits for), where a slow disk shows first.
    pub flush: Vec<(f64, u64)>,
    /// `truc_store_payload_syncs_total`: `fdatasync`s of payload segments so far.
    pub payload_syncs: Option<u64>,
}

/// Reads the relay's histograms from its admin listener.
pub async fn histograms(admin: SocketAddr) -> anyhow::Result<RelayHistograms> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(admin).await?;
    // HTTP/1.0: the whole body, then the connection closes (no chunked encoding).
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(RelayHistograms {
        submission: parse_buckets(
            &response,
            "truc_submission_duration_seconds",
            Some("kind=\"document\""),
        ),
        flush: parse_buckets(&response, "truc_store_flush_duration_seconds", None),
        payload_syncs: parse_counter(&response, "truc_store_payload_syncs_total"),
    })
}

/// The value of the unlabelled counter `metric` in a Prometheus text page.
fn parse_counter(text: &str, metric: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(metric)?.strip_prefix(' ')?;
        value.trim().parse::<f64>().ok().map(|v| v as u64)
    })
}

/// The buckets of histogram `metric` in a Prometheus text page, keeping only the series
/// whose labels contain `label` when given.
fn parse_buckets(text: &str, metric: &str, label: Option<&str>) -> Vec<(f64, u64)> {
    let prefix = format!("{metric}_bucket{{");
    let mut buckets = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(prefix.as_str()) else {
            continue;
        };
        if label.is_some_and(|l| !rest.contains(l)) {
            continue;
        }
        let le = rest
            .split("le=\"")
            .nth(1)
            .and_then(|v| v.split('"').next())
            .map(|v| {
                if v == "+Inf" {
                    f64::INFINITY
                } else {
                    v.parse().unwrap_or(f64::NAN)
                }
            });
        let count = line.rsplit(' ').next().and_then(|c| c.parse::<u64>().ok());
        if let (Some(le), Some(count)) = (le, count) {
            buckets.push((le, count));
        }
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    buckets
}

/// How many observations a histogram gained between two readings.
pub fn bucket_count(before: &[(f64, u64)], after: &[(f64, u64)]) -> Option<u64> {
    let total = |buckets: &[(f64, u64)]| buckets.last().map(|(_, c)| *c);
    Some(total(after)?.saturating_sub(total(before).unwrap_or(0)))
}

/// The smallest bucket bound under which at least `q` of the submissions between two
/// readings fell, in milliseconds (`None` without submissions, infinite past the last
/// bound).
pub fn bucket_quantile_ms(before: &[(f64, u64)], after: &[(f64, u64)], q: f64) -> Option<f64> {
    let at = |buckets: &[(f64, u64)], le: f64| {
        buckets
            .iter()
            .find(|(l, _)| *l == le)
            .map_or(0, |(_, c)| *c)
    };
    let total = after.last().map(|(le, c)| c - at(before, *le))?;
    if total == 0 {
        return None;
    }
    after
        .iter()
        .find(|(le, c)| (c - at(before, *le)) as f64 >= q * total as f64)
        .map(|(le, _)| le * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_come_from_the_buckets_between_two_readings() {
        let text = "# TYPE truc_submission_duration_seconds histogram\n\
            truc_submission_duration_seconds_bucket{le=\"0.001\",kind=\"document\"} 10\n\
            truc_submission_duration_seconds_bucket{le=\"0.005\",kind=\"document\"} 108\n\
            truc_submission_duration_seconds_bucket{le=\"0.01\",kind=\"document\"} 110\n\
            truc_submission_duration_seconds_bucket{le=\"+Inf\",kind=\"document\"} 110\n\
            truc_submission_duration_seconds_bucket{le=\"0.001\",kind=\"status\"} 99\n";
        let after = parse_buckets(
            text,
            "truc_submission_duration_seconds",
            Some("kind=\"document\""),
        );
        assert_eq!(after.len(), 4);
        let before = vec![(0.001, 10), (0.005, 10), (0.01, 10), (f64::INFINITY, 10)];
        // 100 submissions between the readings: 98 under 5 ms, 2 more under 10 ms.
        assert_eq!(bucket_quantile_ms(&before, &after, 0.5), Some(5.0));
        assert_eq!(bucket_quantile_ms(&before, &after, 0.98), Some(5.0));
        assert_eq!(bucket_quantile_ms(&before, &after, 0.99), Some(10.0));
        assert_eq!(bucket_quantile_ms(&after, &after, 0.99), None);
    }

    #[test]
    fn flushes_are_read_beside_submissions_and_the_slowest_bound_found() {
        let page = "truc_submission_duration_seconds_bucket{le=\"0.005\",kind=\"document\"} 7\n\
            truc_store_flush_duration_seconds_bucket{le=\"0.0005\"} 1\n\
            truc_store_flush_duration_seconds_bucket{le=\"0.002\"} 90\n\
            truc_store_flush_duration_seconds_bucket{le=\"0.25\"} 99\n\
            truc_store_flush_duration_seconds_bucket{le=\"0.5\"} 100\n\
            truc_store_flush_duration_seconds_bucket{le=\"+Inf\"} 100\n\
            truc_store_flush_duration_seconds_sum 1.5\n";
        let flush = parse_buckets(page, "truc_store_flush_duration_seconds", None);
        assert_eq!(flush.len(), 5, "buckets only, not the sum: {flush:?}");
        let submission = parse_buckets(
            page,
            "truc_submission_duration_seconds",
            Some("kind=\"document\""),
        );
        assert_eq!(submission, vec![(0.005, 7)]);
        let none: Vec<(f64, u64)> = Vec::new();
        assert_eq!(bucket_count(&none, &flush), Some(100));
        assert_eq!(bucket_count(&flush, &flush), Some(0));
        assert_eq!(bucket_quantile_ms(&none, &flush, 0.5), Some(2.0));
        assert_eq!(bucket_quantile_ms(&none, &flush, 0.99), Some(250.0));
        // One flush took between 250 and 500 ms: the slowest is under 500 ms.
        assert_eq!(bucket_quantile_ms(&none, &flush, 1.0), Some(500.0));
    }

    #[test]
    fn a_counter_is_read_by_its_whole_name() {
        let page = "# TYPE truc_store_payload_syncs counter\n\
            truc_store_payload_syncs_total_other 5\n\
            truc_store_payload_syncs_total 1234\n\
            truc_store_payload_syncs_created 1.7e9\n";
        assert_eq!(
            parse_counter(page, "truc_store_payload_syncs_total"),
            Some(1234)
        );
        assert_eq!(parse_counter(page, "truc_store_flushes_total"), None);
    }
}

/// CPU time (user + system) and peak resident memory of a process, from `/proc`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessUsage {
    /// Seconds of CPU used so far.
    pub cpu_seconds: f64,
    /// Peak resident set, in bytes (VmHWM).
    pub peak_rss: u64,
}

/// Reads the usage of process `pid` (`self` for this one). Zero where `/proc` is absent.
pub fn usage(pid: &str) -> ProcessUsage {
    let mut u = ProcessUsage::default();
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // Fields after the command name (which may contain spaces, inside parentheses).
        if let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime are fields 14 and 15 of the line; the rest starts at field 3.
            let ticks = |i: usize| {
                fields
                    .get(i)
                    .and_then(|f| f.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            // The kernel's USER_HZ is 100 on Linux.
            u.cpu_seconds = (ticks(11) + ticks(12)) / 100.0;
        }
    }
    if let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
        for line in status.lines() {
            if let Some(v) = line.strip_prefix("VmHWM:") {
                let kib: u64 = v.trim().trim_end_matches("kB").trim().parse().unwrap_or(0);
                u.peak_rss = kib * 1024;
            }
        }
    }
    u
}
