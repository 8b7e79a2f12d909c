#![forbid(unsafe_code)]
//! The national-axis simulator's command line.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use truc_axis_sim::{SimConfig, Simulator};

/// A simulator of Vietnam's national document exchange axis (trục liên thông văn bản quốc
/// gia), speaking the VDXP HTTP profile: sendEdoc, getReceivedEdocList, getEdoc,
/// updateStatus, getSentEdocList, getAgenciesList, with signed XroadVnpt-* headers.
///
/// Point a ministry's relay at it to test sending and receiving without the real axis.
/// Several systems (system id, secret, unit codes owned) come from the configuration file;
/// packages are delivered to the systems owning their recipients. Faults are set at run time:
/// `curl -X POST http://ADDR/_control/faults -d '{"error_rate":{"*":0.3},"latency_ms":50}'`
/// (also: outage_until_ms, duplicate_list, lose_ack_rate, reset_rate); `GET /_control/counters` counts
/// calls by operation and outcome. See docs/axis-sim.md.
#[derive(Debug, Parser)]
#[command(name = "truc-axis-sim", version, verbatim_doc_comment)]
struct Cli {
    /// Configuration (TOML): [[system]] id, secret, organs; optional [[agency]] entries.
    #[arg(long, short)]
    config: PathBuf,
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:8480")]
    listen: std::net::SocketAddr,
    /// Serve HTTPS with this certificate chain (PEM); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TRUC_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    let cli = Cli::parse();
    let text = std::fs::read_to_string(&cli.config)
        .with_context(|| format!("reading {}", cli.config.display()))?;
    let config =
        SimConfig::from_toml(&text).with_context(|| format!("in {}", cli.config.display()))?;
    let systems = config.systems.len();
    let sim = Simulator::new(config);
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cli.listen))?;
    tracing::info!(addr = %listener.local_addr()?, systems, tls = cli.tls_cert.is_some(), "national axis simulator listening");
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    match (cli.tls_cert, cli.tls_key) {
        (Some(cert), Some(key)) => {
            let cert =
                std::fs::read(&cert).with_context(|| format!("reading {}", cert.display()))?;
            let key = std::fs::read(&key).with_context(|| format!("reading {}", key.display()))?;
            sim.serve_tls(listener, &cert, &key, shutdown).await?;
        }
        _ => sim.serve(listener, shutdown).await?,
    }
    Ok(())
}
