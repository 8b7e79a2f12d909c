//! The daemon's configuration (TOML file, overridable by flags).

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
    /// A registry file (TOML) imported at start-up; units changed at run time are kept in
    /// the store.
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
}

/// How the relay reaches the national axis.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamSection {
    /// Base URL of the axis (`https://...`); operations are `{base}/{operation}`.
    pub base_url: String,
    /// This relay's system id on the axis.
    pub system_id: String,
    /// Its secret (never logged; `check-config` masks it).
    pub secret: String,
    /// Extra CA certificates to trust for the axis (PEM).
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
    /// Seconds a call may take (default 30).
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
            lease_secs: 60,
            max_credits: 1000,
            submits_per_second: 500,
            submit_burst: 1000,
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
}
