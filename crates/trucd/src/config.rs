//! The daemon's configuration, in layers: built-in defaults, then the TOML file
//! (`--config`), then `TRUC_*` environment variables, then command-line flags.
//!
//! Environment variables name a setting by its path: `TRUC_STORE_DIR` is `store_dir`,
//! `TRUC_ADMIN__LISTEN` is `listen` in `[admin]` (a double underscore enters a section).
//! Values are read as TOML when they parse as such (`60`, `true`), else as strings.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use truc_edxml::OrgCode;

/// Everything `trucd serve` needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The ministry's unit code.
    pub ministry: OrgCode,
    /// Address of the gRPC listener for adapters.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The store directory.
    pub store_dir: PathBuf,
    /// A registry file (TOML, or CSV by extension), imported at start-up when it changed
    /// since its last import; changes made at run time through the admin API are kept in
    /// the store and survive restarts until the file is edited.
    #[serde(default)]
    pub registry_file: Option<PathBuf>,
    /// TLS for the adapters' listener.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Development only: serve gRPC without TLS (and without identities: every caller is
    /// trusted as the unit given in `insecure_unit`). Logs a loud warning.
    #[serde(default)]
    pub insecure_plaintext: bool,
    /// With `insecure_plaintext`: the level-2 unit every caller acts as.
    #[serde(default)]
    pub insecure_unit: Option<OrgCode>,
    /// Limits and timings.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// The national axis (absent: the relay serves only its own units).
    #[serde(default)]
    pub upstream: Option<UpstreamSection>,
    /// The admin HTTP API (health, metrics, operations).
    #[serde(default)]
    pub admin: AdminConfig,
    /// How long payloads are kept once delivered.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// How the store lays out its files.
    #[serde(default)]
    pub store: StoreSection,
    /// Log filter at start (tracing's syntax: `info`, `trucd=debug,info`); changeable at
    /// run time through the admin API.
    #[serde(default = "default_log_level")]
    pub log_level: String,
    /// Log format: `pretty` (for a terminal), `json` (one object per line, for files and
    /// collectors), or `auto` (pretty on a terminal, JSON otherwise).
    #[serde(default)]
    pub log_format: LogFormat,
}

fn default_log_level() -> String {
    "info".into()
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// Pretty on a terminal, JSON otherwise.
    #[default]
    Auto,
    /// Human-readable lines.
    Pretty,
    /// JSON lines.
    Json,
}

/// The admin HTTP API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Where it listens (default `127.0.0.1:7480`: loopback only). `off` is not a value:
    /// set `enabled = false` instead.
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// Serve it at all (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Bearer tokens allowed on `/api/v1` (health and metrics are open). Stored as the
    /// SHA-256 of the token, so the configuration holds no secret; `trucctl token new`
    /// makes one.
    #[serde(default)]
    pub tokens: Vec<AdminToken>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: default_admin_listen(),
            enabled: true,
            tokens: Vec::new(),
        }
    }
}

/// One admin token: a name (written in the audit log as `admin:NAME`) and its hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminToken {
    /// Who holds it.
    pub name: String,
    /// SHA-256 of the token, hex.
    pub sha256: String,
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7480))
}

fn default_true() -> bool {
    true
}

impl std::fmt::Debug for UpstreamSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamSection")
            .field("base_url", &self.base_url)
            .field("system_id", &self.system_id)
            .field("secret", &"(hidden)")
            .field("ca_file", &self.ca_file)
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .field("poll_secs", &self.poll_secs)
            .field("timeout_secs", &self.timeout_secs)
            .field("directory_secs", &self.directory_secs)
            .field("breaker_max_open_secs", &self.breaker_max_open_secs)
            .finish()
    }
}

/// How the relay reaches the national axis. Its `Debug` leaves the secret out.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    /// Base URL of the axis (`https://...`); operations are `{base}/{operation}`.
    pub base_url: String,
    /// This relay's system id on the axis.
    pub system_id: String,
    /// Its secret (never logged; `check-config` masks it).
    pub secret: String,
    /// The CA certificates to trust for the axis (PEM), instead of the system's.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// A client certificate and key for the axis, if it asks for one (PEM).
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// Its key.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// Seconds between polls of the received list while the axis answers (default 5).
    #[serde(default = "default_poll")]
    pub poll_secs: u64,
    /// Seconds a call may take (default 30). A call carrying a package may take a second
    /// more per MiB of it (the slowest link allowed is 1 MiB/s); a package coming from the
    /// axis may take as long as it keeps coming, its answer starting within this time and
    /// never pausing longer.
    #[serde(default = "default_call_timeout")]
    pub timeout_secs: u64,
    /// Seconds between refreshes of the national directory (default 3600).
    #[serde(default = "default_directory")]
    pub directory_secs: u64,
    /// Longest pause between probes of an axis that keeps failing, in seconds (default 300).
    #[serde(default = "default_breaker_max_open")]
    pub breaker_max_open_secs: u64,
}

fn default_breaker_max_open() -> u64 {
    300
}

fn default_directory() -> u64 {
    3600
}

fn default_poll() -> u64 {
    5
}

fn default_call_timeout() -> u64 {
    30
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7443))
}

/// Certificates of the adapters' listener.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// The server's certificate chain (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
    /// The CA(s) that sign adapters' client certificates (PEM). Clients must present a
    /// certificate from it; its SHA-256 fingerprint maps it to a unit in the registry.
    pub client_ca: PathBuf,
    /// Certificate revocation lists of that CA (PEM, optional): a client certificate they
    /// list is refused in the handshake, whatever the registry says (the way to revoke a
    /// certificate of a unit registered by DNS name). Reloaded with the certificates.
    #[serde(default)]
    pub client_crl: Option<PathBuf>,
}

/// How the store lays out its files (`store_dir` says where).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSection {
    /// Packages up to 256 KiB are appended to payload segment files (`payloads/` in the
    /// store); a segment is sealed at this size, in bytes (default 67,108,864: 64 MiB).
    /// Retention gives space back a segment at a time. Takes effect for new segments.
    pub payload_segment_bytes: u64,
    /// Whether the next payload segment is written with zeros ahead of time (default true),
    /// so that submissions are acknowledged on `fdatasync`s that need not commit a new file
    /// size. Set it to false on copy-on-write file systems (ZFS, btrfs).
    pub prepare_payload_segments: bool,
}

impl Default for StoreSection {
    fn default() -> Self {
        let store = truc_store::StoreConfig::default();
        StoreSection {
            payload_segment_bytes: store.payload_segment_bytes,
            prepare_payload_segments: store.prepare_payload_segments,
        }
    }
}

/// Retention: the relay is a transit, not an archive (each unit's document system keeps its
/// documents), so the payload of a package is deleted some time after every recipient has
/// it; its record, deliveries, events and timeline stay, and the audit log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// A payload is deleted this long after its last delivery ended (acknowledged,
    /// accepted by the national axis, dead-lettered or dropped), in seconds (default
    /// 2,592,000: 30 days). 0 keeps payloads for ever.
    pub payload_secs: u64,
    /// How often retention runs, in seconds (default 3600); the first run is one interval
    /// after the start.
    pub interval_secs: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            payload_secs: 30 * 86_400,
            interval_secs: 3600,
        }
    }
}

/// Limits and timings of the relay.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest package accepted, in bytes (default 512 MiB).
    pub max_package_bytes: u64,
    /// Packages up to this size are kept in memory while received; larger ones are written
    /// to a staging file as they arrive (default 1 MiB).
    pub memory_package_bytes: usize,
    /// Memory for packages being received, in bytes, for all adapters together (default
    /// 256 MiB). A submission takes its share (its declared size, at most
    /// `memory_package_bytes`) before its bytes are read; when the budget is spent it is
    /// received into a staging file instead, so a flood of submissions cannot grow the
    /// relay's memory. One unit may hold at most a quarter of it, so a slow or flooding
    /// adapter cannot take it from the others.
    pub memory_budget_bytes: usize,
    /// How long an adapter has to acknowledge a delivery before it is offered again
    /// (seconds, default 60).
    pub lease_secs: u64,
    /// Most deliveries an inbox stream may hold unacknowledged (default 1000).
    pub max_credits: u32,
    /// Submissions per second allowed to one unit's adapter, across all its connections
    /// (default 500).
    pub submits_per_second: u32,
    /// Submissions one adapter may make in a burst above that rate (default 1000).
    pub submit_burst: u32,
    /// Most calls one adapter connection may have open at once (default 64): each open call
    /// holds a receive buffer (up to 64 KiB for a submission, whose chunks are re-cut; up
    /// to a message, 1 MiB, for the others), so this bounds what one connection can make
    /// the relay hold. Calls over it wait in the client for a free slot (HTTP/2
    /// `MAX_CONCURRENT_STREAMS`); they are not refused.
    pub max_streams_per_connection: u32,
    /// TLS handshakes under way at once, at most (default 256): a connection that arrives
    /// while that many are is closed at once, so a flood of connections that never finish
    /// their handshake (each may take 10 s) cannot pile up. Adapters reconnect.
    pub max_handshakes: u32,
    /// Longest a submission may stay silent (no chunk) before it is cancelled, in seconds
    /// (default 60): a slow or stalled client cannot hold a submission open.
    pub idle_timeout_secs: u64,
    /// First retry delay bound after a failed delivery, in milliseconds (default 2000);
    /// doubles each attempt (full jitter).
    pub retry_base_ms: u64,
    /// Largest retry delay bound, in seconds (default 1800).
    pub retry_cap_secs: u64,
    /// A delivery still failing this long after it was queued is dead-lettered, in seconds
    /// (default 259200: three days, for an axis down over a long weekend).
    pub retry_max_age_secs: u64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_package_bytes: 512 * 1024 * 1024,
            memory_package_bytes: 1024 * 1024,
            memory_budget_bytes: 256 * 1024 * 1024,
            lease_secs: 60,
            max_credits: 1000,
            submits_per_second: 500,
            submit_burst: 1000,
            max_streams_per_connection: 64,
            max_handshakes: 256,
            idle_timeout_secs: 60,
            retry_base_ms: 2000,
            retry_cap_secs: 1800,
            retry_max_age_secs: 72 * 3600,
        }
    }
}

impl LimitsConfig {
    /// The store's retry policy.
    pub fn retry(&self) -> truc_store::RetryPolicy {
        truc_store::RetryPolicy {
            base: Duration::from_millis(self.retry_base_ms.max(1)),
            cap: Duration::from_secs(self.retry_cap_secs.max(1)),
            max_age: Duration::from_secs(self.retry_max_age_secs.max(1)),
        }
    }

    /// The delivery lease.
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs.max(1))
    }
}

impl Config {
    /// Reads a TOML configuration file.
    pub fn from_toml(text: &str) -> anyhow::Result<Self> {
        Ok(toml::from_str(text)?)
    }

    /// The configuration in layers: the file's text (if any), then the `TRUC_*` variables
    /// of `env` (name, value), applied in order. Returns it with the names of variables
    /// that were applied.
    pub fn layered(
        file_text: Option<&str>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<(Self, Vec<String>)> {
        let mut table: toml::Table = match file_text {
            Some(text) => toml::from_str(text)?,
            None => toml::Table::new(),
        };
        let mut applied = Vec::new();
        for (name, value) in env {
            let Some(path) = env_path(&name) else {
                continue;
            };
            set_path(&mut table, &path, env_value(&value))
                .map_err(|e| anyhow::anyhow!("{name}: {e}"))?;
            applied.push(name);
        }
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| anyhow::anyhow!("{}", e.message()))?;
        config.check()?;
        Ok((config, applied))
    }

    /// Rules that the types alone do not enforce.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.admin.enabled
            && !self.admin.listen.ip().is_loopback()
            && self.admin.tokens.is_empty()
        {
            anyhow::bail!(
                "[admin] listen = {} is not a loopback address, and no [[admin.tokens]] are set: \
                 configure a token (trucctl token new) before exposing the admin API",
                self.admin.listen
            );
        }
        for t in &self.admin.tokens {
            let ok = t.sha256.len() == 64 && t.sha256.bytes().all(|b| b.is_ascii_hexdigit());
            anyhow::ensure!(
                ok,
                "[[admin.tokens]] {:?}: sha256 must be 64 hex digits",
                t.name
            );
        }
        Ok(())
    }

    /// The configuration as TOML with every secret replaced by `********`.
    pub fn masked_toml(&self) -> anyhow::Result<String> {
        let mut c = self.clone();
        if let Some(up) = &mut c.upstream {
            up.secret = "********".into();
        }
        for t in &mut c.admin.tokens {
            t.sha256 = "********".into();
        }
        Ok(toml::to_string_pretty(&c)?)
    }
}

/// `TRUC_*` variables that are not settings of the daemon: `trucctl`'s own, which an
/// operator's shell often exports beside it.
const NOT_SETTINGS: &[&str] = &["TRUC_LOG", "TRUC_ADMIN_URL", "TRUC_ADMIN_TOKEN"];

/// `TRUC_ADMIN__LISTEN` → `["admin", "listen"]`; `None` for other variables.
fn env_path(name: &str) -> Option<Vec<String>> {
    let rest = name.strip_prefix("TRUC_")?;
    if rest.is_empty() || NOT_SETTINGS.contains(&name) {
        return None;
    }
    Some(rest.split("__").map(|p| p.to_ascii_lowercase()).collect())
}

fn env_value(raw: &str) -> toml::Value {
    // A scalar TOML value (number, boolean, array) when it is one; a string otherwise.
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .filter(|v| !v.is_table())
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> Result<(), String> {
    let Some((last, sections)) = path.split_last() else {
        return Err("empty name".into());
    };
    let mut at = table;
    for section in sections {
        let entry = at
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        at = entry
            .as_table_mut()
            .ok_or_else(|| format!("{section} is not a section"))?;
    }
    at.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = r#"
ministry = "000.00.00.G04"
store_dir = "/var/lib/truc/store"
[limits]
lease_secs = 30
[upstream]
base_url = "https://axis.example/vdxp"
system_id = "bo-gtvt"
secret = "s3cret"
"#;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_upstream_secret_stays_out_of_debug_output() {
        let (c, _) = Config::layered(Some(FILE), Vec::new()).expect("config");
        let shown = format!("{c:?}");
        assert!(shown.contains("bo-gtvt"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn defaults_then_file_then_environment() {
        let (c, applied) = Config::layered(
            Some(FILE),
            env(&[
                ("TRUC_LIMITS__LEASE_SECS", "90"),
                ("TRUC_STORE_DIR", "/srv/truc"),
                ("TRUC_ADMIN__LISTEN", "127.0.0.1:9999"),
                ("TRUC_UPSTREAM__SECRET", "from-env"),
                ("TRUC_LOG", "debug"),
                ("HOME", "/root"),
            ]),
        )
        .expect("config");
        assert_eq!(c.limits.lease_secs, 90, "environment over file");
        assert_eq!(c.limits.max_credits, 1000, "default kept");
        assert_eq!(c.store_dir, PathBuf::from("/srv/truc"));
        assert_eq!(c.admin.listen.port(), 9999);
        assert_eq!(
            c.upstream.as_ref().map(|u| u.secret.as_str()),
            Some("from-env")
        );
        assert_eq!(applied.len(), 4, "{applied:?}");
    }

    #[test]
    fn a_misspelt_variable_is_an_error_not_ignored() {
        let err = Config::layered(Some(FILE), env(&[("TRUC_LIMITS__LEASE_SEC", "9")]))
            .expect_err("unknown");
        assert!(err.to_string().contains("lease_sec"), "{err}");
    }

    #[test]
    fn an_exposed_admin_port_needs_a_token_and_secrets_are_masked() {
        let err = Config::layered(Some(FILE), env(&[("TRUC_ADMIN__LISTEN", "0.0.0.0:7480")]))
            .expect_err("no token");
        assert!(err.to_string().contains("trucctl token new"), "{err}");
        let with_token = format!(
            "{FILE}\n[[admin.tokens]]\nname = \"ops\"\nsha256 = \"{}\"\n",
            "ab".repeat(32)
        );
        let (c, _) = Config::layered(Some(&with_token), env(&[])).expect("config");
        let shown = c.masked_toml().expect("toml");
        assert!(
            !shown.contains("s3cret") && !shown.contains("abab"),
            "{shown}"
        );
        assert!(shown.contains("********"));
    }
}
