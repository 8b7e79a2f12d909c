//! Relays under test: `trucd` processes of their own (so their CPU and memory can be read
//! from `/proc`), with generated certificates and the sample registry of a ministry.

use std::collections::BTreeMap;
use std::io::BufRead;
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
    child: Child,
    trucd: PathBuf,
    config_file: PathBuf,
    ca_pem: String,
    certs: BTreeMap<String, LocalCert>,
    /// Level-3 units of each adapter's unit (recipients served through it).
    pub children: BTreeMap<String, Vec<String>>,
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
    /// the sample registry.
    pub fn start(
        trucd: &Path,
        dir: &Path,
        ca: &LocalCa,
        ministry: &str,
        adapters: usize,
        axis: Option<AxisLink<'_>>,
    ) -> anyhow::Result<Self> {
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
        let config = format!(
            "ministry = \"{ministry}\"\nlisten = \"127.0.0.1:0\"\nstore_dir = {store:?}\nregistry_file = {registry_file:?}\nlog_level = \"warn,trucd=info\"\nlog_format = \"pretty\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n[tls]\ncert = {cert_file:?}\nkey = {key_file:?}\nclient_ca = {ca_file:?}\n\n[limits]\nsubmits_per_second = 1000000\nsubmit_burst = 1000000\nmax_credits = 10000\nretry_base_ms = 250\nretry_cap_secs = 5\n{upstream}",
            store = dir.join("store"),
        );
        let config_file = write("trucd.toml", &config)?;
        let (child, addr) = launch(trucd, &config_file)?;
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
            child,
            trucd: trucd.to_owned(),
            config_file,
            ca_pem: ca.pem.clone(),
            certs,
            children,
        })
    }

    /// Kills the relay with SIGKILL (no chance to flush or say goodbye) and starts it again
    /// on the same store and address.
    pub fn kill_and_restart(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        let (child, addr) = launch(&self.trucd, &self.config_file)?;
        anyhow::ensure!(addr == self.addr, "restarted on {addr}, not {}", self.addr);
        self.child = child;
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

    /// The process id, for `/proc` readings.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// Starts `trucd serve` with a configuration; returns it once it serves, with the
/// address it bound.
fn launch(trucd: &Path, config_file: &Path) -> anyhow::Result<(Child, SocketAddr)> {
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
    let (tx, rx) = std::sync::mpsc::channel::<Option<String>>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if line.contains("gRPC listener bound") {
                if let Some(at) = line.find("addr=") {
                    let addr = line[at + 5..].split_whitespace().next().unwrap_or("");
                    let _ = tx.send(Some(addr.to_owned()));
                }
            } else if line.contains("serving adapters") {
                let _ = tx.send(None);
            }
        }
    });
    let mut addr = None;
    loop {
        match rx.recv_timeout(Duration::from_secs(120)) {
            Ok(Some(a)) => addr = Some(a.parse::<SocketAddr>()?),
            Ok(None) => break,
            Err(_) => {
                let _ = child.kill();
                anyhow::bail!("trucd did not start serving within 120 s");
            }
        }
    }
    let addr = addr.context("trucd did not say where it listens")?;
    Ok((child, addr))
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
