#![forbid(unsafe_code)]
//! The relay daemon's command line.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;
use trucd::Config;

/// trucd: the document exchange relay of a ministry (trục liên thông văn bản).
#[derive(Debug, Parser)]
#[command(name = "trucd", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve unit adapters (gRPC over mutual TLS).
    Serve {
        /// The configuration file (TOML).
        #[arg(long, short)]
        config: PathBuf,
        /// Override the listen address.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Logs as JSON lines (for files and log collectors) instead of text.
        #[arg(long)]
        json_logs: bool,
    },
    /// Print the version.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!("trucd {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Serve {
            config,
            listen,
            json_logs,
        } => match serve(config, listen, json_logs) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("trucd: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

fn serve(
    path: PathBuf,
    listen: Option<std::net::SocketAddr>,
    json_logs: bool,
) -> anyhow::Result<()> {
    // One crypto provider for rustls, chosen here, before anything uses TLS.
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))?;
    let filter = EnvFilter::try_from_env("TRUC_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    if json_logs {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .json()
            .init();
    } else {
        tracing_subscriber::fmt().with_env_filter(filter).init();
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the configuration {}", path.display()))?;
    let mut config = Config::from_toml(&text)
        .with_context(|| format!("in the configuration {}", path.display()))?;
    if let Some(listen) = listen {
        config.listen = listen;
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        tracing::info!(addr = %listener.local_addr()?, "listening");
        trucd::run(listener, config, shutdown_signal()).await
    })
}

/// The first SIGTERM or Ctrl-C starts a graceful shutdown; a second one exits at once.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down; a second signal exits at once");
    tokio::spawn(async {
        let _ = tokio::signal::ctrl_c().await;
        std::process::exit(130);
    });
}
