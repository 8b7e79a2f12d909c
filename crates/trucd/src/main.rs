#![forbid(unsafe_code)]
//! The relay daemon's command line.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};
use trucd::admin::LogControl;
use trucd::config::LogFormat;
use trucd::{Config, Listeners, ServeOptions};

/// mimalloc instead of the system allocator: the relay allocates and frees many small
/// buffers per package on two threads; glibc's malloc spent about a sixth of the relay's
/// CPU on it under load (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// trucd: the document exchange relay of a ministry (trục liên thông văn bản).
///
/// It carries edXML packages between the ministry's units (gRPC over mutual TLS to each
/// level-2 unit's adapter) and the national document exchange axis (HTTPS), storing every
/// package durably until its recipients acknowledge it.
#[derive(Debug, Parser)]
#[command(name = "trucd", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve unit adapters (gRPC over mutual TLS), the national-axis link and the admin API.
    Serve(Layers),
    /// Run a whole exchange in one process: this relay with the generated registry of the
    /// transport ministry (57 level-2, 226 level-3 units), a second ministry, a national-axis
    /// simulator and adapters; print a summary and keep running until Ctrl-C.
    Demo(trucd::demo::DemoArgs),
    /// Print the effective configuration (secrets masked) and check every path,
    /// certificate and address it names.
    CheckConfig(Layers),
    /// Print the version.
    Version,
}

/// The configuration layers given on the command line.
#[derive(Debug, Args)]
struct Layers {
    /// The configuration file (TOML). Settings not in it take their defaults, then
    /// `TRUC_*` environment variables and the flags below override them.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The adapters' gRPC listen address.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// The admin API's listen address.
    #[arg(long)]
    admin_listen: Option<SocketAddr>,
    /// The store directory.
    #[arg(long)]
    store_dir: Option<PathBuf>,
    /// The log filter (`info`, `debug`, `trucd=debug,info`).
    #[arg(long)]
    log_level: Option<String>,
    /// Log format.
    #[arg(long, value_enum)]
    log_format: Option<FormatArg>,
    /// Same as `--log-format json`.
    #[arg(long, hide = true)]
    json_logs: bool,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum FormatArg {
    Auto,
    Pretty,
    Json,
}

impl Layers {
    /// Defaults → file → environment → flags.
    fn load(&self) -> anyhow::Result<(Config, Vec<String>)> {
        let text = match &self.config {
            Some(path) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading the configuration {}", path.display()))?,
            ),
            None => None,
        };
        let (mut config, applied) = Config::layered(text.as_deref(), std::env::vars())
            .with_context(|| match &self.config {
                Some(p) => format!(
                    "in the configuration {} (and TRUC_* variables)",
                    p.display()
                ),
                None => "in the TRUC_* variables (no --config given)".into(),
            })?;
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(admin) = self.admin_listen {
            config.admin.listen = admin;
        }
        if let Some(dir) = &self.store_dir {
            config.store_dir = dir.clone();
        }
        if let Some(level) = &self.log_level {
            config.log_level = level.clone();
        }
        if let Some(format) = self.log_format {
            config.log_format = match format {
                FormatArg::Auto => LogFormat::Auto,
                FormatArg::Pretty => LogFormat::Pretty,
                FormatArg::Json => LogFormat::Json,
            };
        }
        if self.json_logs {
            config.log_format = LogFormat::Json;
        }
        config.check()?;
        Ok((config, applied))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One crypto provider for rustls, chosen here, before anything uses TLS.
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        eprintln!("trucd: a rustls crypto provider was already installed");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Command::Version => {
            println!("trucd {}", env!("CARGO_PKG_VERSION"));
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(layers) => serve(&layers).map(|()| ExitCode::SUCCESS),
        Command::CheckConfig(layers) => check_config(&layers),
        Command::Demo(args) => demo(args).map(|()| ExitCode::SUCCESS),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("trucd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The log filter, changeable at run time through the admin API.
struct ReloadableFilter {
    handle: reload::Handle<EnvFilter, Registry>,
    current: Mutex<String>,
}

impl LogControl for ReloadableFilter {
    fn current(&self) -> String {
        self.current
            .lock()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    fn set(&self, filter: &str) -> Result<(), String> {
        let parsed = EnvFilter::try_new(filter).map_err(|e| e.to_string())?;
        self.handle.reload(parsed).map_err(|e| e.to_string())?;
        if let Ok(mut c) = self.current.lock() {
            *c = filter.to_owned();
        }
        Ok(())
    }
}

/// Installs logging: the filter (reloadable) and the format.
fn init_logging(level: &str, format: LogFormat) -> anyhow::Result<Arc<ReloadableFilter>> {
    let filter = EnvFilter::try_new(level)
        .with_context(|| format!("log_level {level:?} is not a log filter"))?;
    let (filter, handle) = reload::Layer::new(filter);
    let terminal = std::io::stdout().is_terminal();
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !terminal,
    };
    let output = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(false)
            .boxed()
    } else {
        tracing_subscriber::fmt::layer()
            .with_ansi(terminal && std::env::var_os("NO_COLOR").is_none())
            .boxed()
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(output)
        .try_init()
        .context("installing the logger")?;
    Ok(Arc::new(ReloadableFilter {
        handle,
        current: Mutex::new(level.to_owned()),
    }))
}

fn serve(layers: &Layers) -> anyhow::Result<()> {
    let (config, applied) = layers.load()?;
    let log = init_logging(&config.log_level, config.log_format)?;
    tracing::info!(version = env!("CARGO_PKG_VERSION"), "trucd starting");
    if !applied.is_empty() {
        tracing::info!(variables = ?applied, "settings taken from the environment");
    }
    let store_dir = config.store_dir.clone();
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    let served = runtime.block_on(async move {
        // Every port first: a port in use fails before the store is opened.
        let listeners = Listeners::bind(&config).await?;
        tracing::info!(addr = %listeners.grpc.local_addr()?, "gRPC listener bound");
        if let Some(admin) = &listeners.admin {
            tracing::info!(addr = %admin.local_addr()?, "admin listener bound");
        }
        let prepared = trucd::prepare(&config).await?;
        let options = ServeOptions {
            log: Some(log as Arc<dyn LogControl>),
            lifecycle: None,
        };
        trucd::serve(listeners, config, prepared, options, shutdown_signal()).await
    });
    // Every task goes, and the store with them, before the checkpoint opens it again.
    runtime.shutdown_timeout(std::time::Duration::from_secs(5));
    served?;
    checkpoint_store(store_dir)
}

/// After a clean stop, lets sled snapshot its log, so that the next start (even after a
/// reboot) reads the snapshot instead of all the log written since this one started
/// (`SledStore::checkpoint`). A failure only costs the next start that time. A signal
/// during the checkpoint exits at once, which is as safe as any crash.
fn checkpoint_store(store_dir: PathBuf) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        tracing::info!(dir = %store_dir.display(), "checkpointing the store, so that the next start reads little of its log (a signal skips it)");
        let checkpoint =
            tokio::task::spawn_blocking(move || truc_store::SledStore::checkpoint(&store_dir));
        tokio::select! {
            done = checkpoint => match done {
                Ok(Ok(took)) => tracing::info!(seconds = took.as_secs_f64(), "store checkpointed; stopped"),
                Ok(Err(e)) => tracing::warn!(error = %e, "the store checkpoint failed: the next start reads the log written since this one started"),
                Err(e) => tracing::warn!(error = %e, "the store checkpoint did not finish"),
            },
            _ = wait_for_signal() => {
                eprintln!("trucd: signal during the store checkpoint: exiting now");
                std::process::exit(130);
            }
        }
    });
    Ok(())
}

fn check_config(layers: &Layers) -> anyhow::Result<ExitCode> {
    let (config, applied) = layers.load()?;
    println!("# Effective configuration (secrets masked)");
    if !applied.is_empty() {
        println!("# from the environment: {}", applied.join(", "));
    }
    println!("{}", config.masked_toml()?);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let checks = runtime.block_on(trucd::check::run(&config));
    let mut failed = 0;
    for check in &checks {
        let mark = if check.ok { "ok  " } else { "FAIL" };
        println!("{mark} {}: {}", check.what, check.detail);
        failed += usize::from(!check.ok);
    }
    if failed == 0 {
        println!("configuration ok");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("{failed} problem(s) found");
        Ok(ExitCode::FAILURE)
    }
}

fn demo(args: trucd::demo::DemoArgs) -> anyhow::Result<()> {
    let level = if args.verbose { "info" } else { "warn" };
    let log = init_logging(level, LogFormat::Pretty)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(trucd::demo::run(
        args,
        Some(log as Arc<dyn LogControl>),
        shutdown_signal(),
    ))
}

/// The first SIGTERM or Ctrl-C starts a graceful shutdown; a second one exits at once.
async fn shutdown_signal() {
    wait_for_signal().await;
    tracing::info!("shutting down; a second signal exits at once");
    tokio::spawn(async {
        wait_for_signal().await;
        eprintln!("trucd: second signal: exiting now");
        std::process::exit(130);
    });
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
