//! Starting and stopping the relay: bind every port, prepare (store, registry, TLS), then
//! serve gRPC and the admin API until shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use truc_relay::{Registry, RegistryFile, Relay};
use truc_store::{SledStore, Store, StoreConfig, Timestamp};

use crate::admin::{AdminState, Lifecycle, LinkView, LogControl};
use crate::config::Config;
use crate::grpc::{Identity, RelayService};
use crate::metrics::{LinkHealth, MeteredUpstream, Metrics};
use crate::tls::ReloadableTls;

/// How long a graceful shutdown may take before remaining connections are cut. Submissions
/// not yet acknowledged are then refused to their adapters (which retry); nothing
/// acknowledged is lost either way.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(10);

/// Where the digest of the last imported registry file is kept.
const REGISTRY_FILE_NAMESPACE: &str = "registry-file";

/// The sockets a relay serves, bound before anything else starts: a port in use fails
/// at once, with its address in the message.
#[derive(Debug)]
pub struct Listeners {
    /// gRPC for adapters.
    pub grpc: TcpListener,
    /// The admin API (absent when `[admin] enabled = false`).
    pub admin: Option<TcpListener>,
}

impl Listeners {
    /// Binds the configured addresses.
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        let grpc = TcpListener::bind(config.listen).await.with_context(|| {
            format!(
                "cannot listen for adapters on {} (listen): is another trucd running?",
                config.listen
            )
        })?;
        let admin = if config.admin.enabled {
            Some(
                TcpListener::bind(config.admin.listen)
                    .await
                    .with_context(|| {
                        format!(
                            "cannot listen for the admin API on {} ([admin] listen)",
                            config.admin.listen
                        )
                    })?,
            )
        } else {
            None
        };
        Ok(Listeners { grpc, admin })
    }
}

/// A relay ready to serve: engine, TLS and metrics.
#[derive(Clone)]
pub struct Prepared {
    /// The engine.
    pub relay: Arc<Relay>,
    /// The adapters' TLS (absent in development plaintext mode).
    pub tls: Option<ReloadableTls>,
    /// Its metrics.
    pub metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Extras the embedding program gives the relay.
#[derive(Default, Clone)]
pub struct ServeOptions {
    /// Control of the process's log filter (for the admin API).
    pub log: Option<Arc<dyn LogControl>>,
    /// Told the admin API's address once it is bound (tests and the demo).
    pub lifecycle: Option<Arc<Lifecycle>>,
}

/// Opens the store, loads the registry, and serves adapters (and the admin API) on
/// `listeners` until `shutdown` completes. In-flight submissions finish (durably) or are
/// refused; nothing half-stored.
pub async fn run(
    listeners: Listeners,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let prepared = prepare(&config).await?;
    serve(
        listeners,
        config,
        prepared,
        ServeOptions::default(),
        shutdown,
    )
    .await
}

/// Everything before serving: store, registry, TLS. Fails fast with a clear message.
pub async fn prepare(config: &Config) -> anyhow::Result<Prepared> {
    let store_dir = config.store_dir.clone();
    let store_config = StoreConfig {
        retry: config.limits.retry(),
        payload_segment_bytes: config.store.payload_segment_bytes.max(64 * 1024),
        prepare_payload_segments: config.store.prepare_payload_segments,
        ..StoreConfig::default()
    };
    let on_disk = database_bytes(&config.store_dir);
    tracing::info!(dir = %config.store_dir.display(), database_mib = on_disk >> 20, "opening the store");
    let started = std::time::Instant::now();
    let mut opening =
        tokio::task::spawn_blocking(move || SledStore::open(&store_dir, store_config));
    // sled reads its log back to its last snapshot at start-up: after a crash, with a large
    // database, that takes a while (it held payloads until 2026-12-07: 11–18 s for a million
    // 8 KiB queued; under a second since, docs/benchmarks.md), so an
    // operator hears that it is progressing. (After a clean stop the checkpoint left little
    // to read.)
    let mut progress = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(10),
        Duration::from_secs(10),
    );
    let opened = loop {
        tokio::select! {
            opened = &mut opening => break opened,
            _ = progress.tick() => tracing::info!(
                seconds = started.elapsed().as_secs(),
                database_mib = on_disk >> 20,
                "still opening the store (the database reads the log written since its last snapshot)"
            ),
        }
    };
    let store = opened
        .context("opening the store")?
        .with_context(|| format!("opening the store {}", config.store_dir.display()))?;
    tracing::info!(seconds = started.elapsed().as_secs_f64(), "store open");
    let store: Arc<dyn Store> = Arc::new(store);
    let registry = Arc::new(Registry::new(config.ministry.clone()));
    let loaded = registry.load(store.as_ref()).await?;
    if let Some(path) = &config.registry_file {
        // Imported when it changed since the last import: changes made at run time (a unit
        // suspended, a certificate rotated through the admin API) survive restarts until
        // the file itself is edited.
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading the registry file {}", path.display()))?;
        let digest = truc_edxml::Sha256Digest::of(&bytes).to_hex();
        let last = store
            .settings(REGISTRY_FILE_NAMESPACE)
            .await?
            .into_iter()
            .find(|(k, _)| k == "sha256")
            .map(|(_, v)| String::from_utf8_lossy(&v).into_owned());
        if last.as_deref() == Some(digest.as_str()) {
            tracing::info!(file = %path.display(), "registry file unchanged since its last import");
        } else {
            let file = read_registry_file(&config.ministry, path)?;
            let n = registry
                .import(store.as_ref(), &file, "system:registry-file")
                .await?;
            store
                .put_setting(REGISTRY_FILE_NAMESPACE, "sha256", digest.as_bytes())
                .await?;
            tracing::info!(units = n, file = %path.display(), "registry file imported");
        }
    }
    tracing::info!(stored_units = loaded, units = registry.units().len(), ministry = %config.ministry, "registry ready");
    let tls = match (&config.tls, config.insecure_plaintext) {
        (Some(tls), false) => {
            let loaded = ReloadableTls::load(tls)?;
            tracing::info!(cert = %tls.cert.display(), client_ca = %tls.client_ca.display(), "TLS certificates loaded");
            Some(loaded)
        }
        (None, true) => {
            tracing::warn!("INSECURE: serving gRPC WITHOUT TLS and WITHOUT client identities (insecure_plaintext = true). Development only: never expose this listener.");
            None
        }
        (Some(_), true) => anyhow::bail!("both [tls] and insecure_plaintext are set: choose one"),
        (None, false) => anyhow::bail!("no [tls] section: the relay serves adapters over mutual TLS (set insecure_plaintext = true only for development)"),
    };
    Ok(Prepared {
        relay: Arc::new(Relay::new(store, registry)),
        tls,
        metrics: Arc::new(Metrics::new()),
    })
}

/// Reads a registry file (TOML, or CSV by its extension).
pub fn read_registry_file(
    ministry: &truc_edxml::OrgCode,
    path: &std::path::Path,
) -> anyhow::Result<RegistryFile> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the registry file {}", path.display()))?;
    let is_csv = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("csv"));
    let file = if is_csv {
        RegistryFile::from_csv(ministry, &text)?
    } else {
        RegistryFile::from_toml(&text)?
    };
    Ok(file)
}

/// The national-axis client of `[upstream]`, metered.
fn upstream_client(
    up: &crate::config::UpstreamSection,
    metrics: &Arc<Metrics>,
    health: &Arc<LinkHealth>,
) -> anyhow::Result<Arc<dyn truc_upstream::Upstream>> {
    let read = |p: &Option<std::path::PathBuf>| -> anyhow::Result<Option<Vec<u8>>> {
        p.as_ref()
            .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
            .transpose()
    };
    let identity = match (read(&up.client_cert)?, read(&up.client_key)?) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => anyhow::bail!("[upstream] needs both client_cert and client_key, or neither"),
    };
    let client = truc_upstream::VdxpUpstream::new(truc_upstream::UpstreamConfig {
        base_url: up.base_url.clone(),
        system_id: up.system_id.clone(),
        secret: up.secret.clone(),
        ca_pem: read(&up.ca_file)?,
        client_identity_pem: identity,
        timeout: Duration::from_secs(up.timeout_secs.max(1)),
        breaker_max_open: Duration::from_secs(up.breaker_max_open_secs.max(1)),
    })?;
    Ok(Arc::new(MeteredUpstream::new(
        Arc::new(client),
        metrics.clone(),
        health.clone(),
    )))
}

/// Serves a prepared relay.
pub async fn serve(
    listeners: Listeners,
    config: Config,
    prepared: Prepared,
    options: ServeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let Prepared {
        relay,
        tls,
        metrics,
    } = prepared;
    let listener = listeners.grpc;
    let identity =
        match &tls {
            Some(tls) => Identity::Certificates(tls.clone()),
            None => Identity::Insecure(config.insecure_unit.clone().context(
                "insecure_plaintext needs insecure_unit: the unit every caller acts as",
            )?),
        };
    let lifecycle = options.lifecycle.clone().unwrap_or_default();
    // When shutdown starts: inbox streams end, then in-flight calls finish (submissions
    // complete durably or are refused), within a deadline.
    let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
    let started_closing = Arc::new(tokio::sync::Notify::new());
    let notify = started_closing.clone();
    let (admin_stop_tx, admin_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let closing_lifecycle = lifecycle.clone();
    // A store that can no longer write although its disk has space again stops the relay,
    // so that its supervisor restarts it and the store is opened afresh.
    let (fatal_tx, fatal_rx) = tokio::sync::oneshot::channel::<String>();
    let fatal = Arc::new(std::sync::Mutex::new(None::<String>));
    let fatal_seen = fatal.clone();
    let watcher = tokio::spawn(watch_store(
        relay.clone(),
        config.store_dir.clone(),
        fatal_tx,
    ));
    let shutdown = async move {
        tokio::select! {
            _ = shutdown => {}
            Ok(reason) = fatal_rx => {
                tracing::error!(%reason, "stopping so that the store is reopened");
                if let Ok(mut f) = fatal_seen.lock() {
                    *f = Some(reason);
                }
            }
        }
        tracing::info!("shutting down: closing inbox streams, finishing in-flight calls");
        closing_lifecycle.set_shutting_down();
        let _ = closing_tx.send(true);
        notify.notify_one();
    };
    let service = RelayService::new(
        relay.clone(),
        config.limits.clone(),
        identity,
        closing_rx,
        metrics.clone(),
    );
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<truc_proto::v1::relay_server::RelayServer<RelayService>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(truc_proto::FILE_DESCRIPTOR_SET)
        .build_v1()
        .context("building gRPC reflection")?;

    // The national axis, when configured.
    let mut link_tasks = Vec::new();
    let mut link_view = None;
    if let Some(up) = &config.upstream {
        let link_health = Arc::new(LinkHealth::default());
        let upstream = upstream_client(up, &metrics, &link_health)?;
        tracing::info!(base = %up.base_url, system = %up.system_id, "national axis link configured");
        link_view = Some(LinkView {
            upstream: upstream.clone(),
            health: link_health,
            base_url: up.base_url.clone(),
        });
        let (reports, follower) = crate::transport_report::TransportReports::new(
            relay.store().clone(),
            upstream.clone(),
            metrics.clone(),
        );
        link_tasks.push(tokio::spawn(follower.run()));
        let state = Arc::new(crate::link::LinkState::new(
            metrics.clone(),
            crate::link::Intake {
                max_package_bytes: config.limits.max_package_bytes,
                memory_package_bytes: config.limits.memory_package_bytes,
            },
            Duration::from_secs(up.timeout_secs.max(1)),
            reports,
            config.limits.retry().max_age,
        ));
        link_tasks.push(tokio::spawn(crate::link::outbound(
            relay.clone(),
            upstream.clone(),
            state.clone(),
        )));
        link_tasks.push(tokio::spawn(crate::link::directory(
            relay.clone(),
            upstream.clone(),
            Duration::from_secs(up.directory_secs.max(1)),
        )));
        link_tasks.push(tokio::spawn(crate::link::inbound(
            relay.clone(),
            upstream,
            state,
            Duration::from_millis((up.poll_secs.max(1) * 1000).min(60_000)),
        )));
    }

    // The admin API, on its own port.
    let addr = listener.local_addr()?;
    let mut admin_task = None;
    if let Some(admin_listener) = listeners.admin {
        let admin_addr = admin_listener.local_addr()?;
        let state = Arc::new(AdminState::new(
            relay.clone(),
            metrics.clone(),
            config.admin.tokens.clone(),
            addr,
            config.store_dir.clone(),
            link_view,
            lifecycle.clone(),
            options.log.clone(),
        ));
        if config.admin.tokens.is_empty() {
            tracing::warn!(%admin_addr, "no [[admin.tokens]]: /api/v1 refuses every call (health and metrics stay open)");
        }
        tracing::info!(addr = %admin_addr, "admin API listening");
        admin_task = Some(tokio::spawn(crate::admin::serve(
            admin_listener,
            state,
            async move {
                let _ = admin_stop_rx.await;
            },
        )));
    }

    // Background: leases that ran out go back to their queues.
    let sweeper_relay = relay.clone();
    let sweeper = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            match sweeper_relay
                .store()
                .release_expired(Timestamp::now())
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::info!(released = n, "leases expired: deliveries offered again"),
                Err(e) => tracing::warn!(error = %e, "releasing expired leases failed"),
            }
        }
    });
    let (retention_stop, retention_stopped) = tokio::sync::oneshot::channel::<()>();
    let retention = tokio::spawn(run_retention(
        relay.clone(),
        metrics.clone(),
        config.retention.clone(),
        retention_stopped,
    ));
    #[cfg(unix)]
    if let Some(tls) = tls.clone() {
        tokio::spawn(async move {
            let Ok(mut hup) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            else {
                return;
            };
            while hup.recv().await.is_some() {
                match tls.reload() {
                    Ok(()) => tracing::info!("certificates reloaded"),
                    Err(e) => {
                        tracing::error!(error = %format!("{e:#}"), "certificate reload failed; the previous certificates stay in use")
                    }
                }
            }
        });
    }

    let router = tonic::transport::Server::builder()
        .layer(crate::grpc::AuthenticateFirst::new(service.clone()))
        .layer(tower::util::MapResponseLayer::new(
            crate::grpc::clear_decode_errors::<tonic::body::Body>,
        ))
        .layer(tower::util::MapRequestLayer::new(
            crate::recut::recut_submissions,
        ))
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .max_concurrent_streams(Some(config.limits.max_streams_per_connection.max(1)))
        .add_service(health_service)
        .add_service(reflection)
        .add_service(
            truc_proto::v1::relay_server::RelayServer::new(service)
                .max_decoding_message_size(truc_proto::MAX_REQUEST_MESSAGE_BYTES)
                .max_encoding_message_size(8 * 1024 * 1024),
        );
    tracing::info!(%addr, tls = tls.is_some(), "serving adapters");
    lifecycle.set_serving();
    let deadline = async move {
        started_closing.notified().await;
        tokio::time::sleep(SHUTDOWN_DEADLINE).await;
    };
    let result = match tls {
        Some(tls) => {
            let (tx, rx) = mpsc::channel(64);
            let acceptor = tokio::spawn(accept_tls(
                listener,
                tls,
                tx,
                config.limits.max_handshakes.max(1) as usize,
            ));
            let serving = router.serve_with_incoming_shutdown(ReceiverStream::new(rx), shutdown);
            let r = tokio::select! {
                r = serving => r,
                _ = deadline => {
                    tracing::warn!("shutdown deadline passed: closing the remaining connections");
                    Ok(())
                }
            };
            acceptor.abort();
            r
        }
        None => {
            use tokio_stream::StreamExt as _;
            let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(|tcp| {
                tcp.inspect(|t| {
                    // As for TLS connections: no Nagle delay on small frames.
                    let _ = t.set_nodelay(true);
                })
            });
            let serving = router.serve_with_incoming_shutdown(incoming, shutdown);
            tokio::select! {
                r = serving => r,
                _ = deadline => {
                    tracing::warn!("shutdown deadline passed: closing the remaining connections");
                    Ok(())
                }
            }
        }
    };
    sweeper.abort();
    // A pass under way finishes (a purge cut between its commit and its deletions would
    // leave blob files behind), unless it takes longer than a stop should.
    let _ = retention_stop.send(());
    let retention_abort = retention.abort_handle();
    if tokio::time::timeout(Duration::from_secs(5), retention)
        .await
        .is_err()
    {
        retention_abort.abort();
    }
    watcher.abort();
    for t in link_tasks {
        t.abort();
    }
    let _ = admin_stop_tx.send(());
    if let Some(t) = admin_task {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    result.context("gRPC server")?;
    if let Some(reason) = fatal.lock().ok().and_then(|f| f.clone()) {
        anyhow::bail!("{reason}; start trucd again (systemd and Kubernetes do so by themselves)");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Deletes, every `interval_secs`, the payloads whose deliveries all ended more than
/// `payload_secs` ago (see [`crate::config::RetentionConfig`]).
async fn run_retention(
    relay: Arc<Relay>,
    metrics: Arc<Metrics>,
    retention: crate::config::RetentionConfig,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    if retention.payload_secs == 0 {
        tracing::info!("retention is off: payloads are kept for ever");
        return;
    }
    let every = Duration::from_secs(retention.interval_secs.max(1));
    let keep = Duration::from_secs(retention.payload_secs);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => return,
        }
        match relay.store().purge(Timestamp::now(), keep).await {
            Ok(report) => {
                metrics.purged(&report);
                if report.messages > 0 || report.segment_files > 0 {
                    tracing::info!(
                        payloads = report.messages,
                        bytes = report.bytes,
                        blob_files = report.blob_files,
                        segment_files = report.segment_files,
                        "retention deleted payloads delivered over {} days ago",
                        retention.payload_secs / 86_400
                    );
                }
            }
            Err(e) => tracing::warn!(error = %e, "retention failed; it runs again next interval"),
        }
    }
}

/// Watches the store's ability to write. While its disk is full, submissions are refused
/// with `STORE_FULL` (and the log says so); once the disk takes writes again but the store
/// still cannot (sled keeps the I/O error it met), reports the reason on `fatal`.
async fn watch_store(
    relay: Arc<Relay>,
    store_dir: std::path::PathBuf,
    fatal: tokio::sync::oneshot::Sender<String>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        let now = Timestamp::now();
        match relay
            .store()
            .put_setting("health", "write-probe", &now.0.to_be_bytes())
            .await
        {
            Ok(()) => {}
            Err(truc_store::StoreError::Full(e)) => {
                let dir = store_dir.clone();
                let space = tokio::task::spawn_blocking(move || disk_takes_writes(&dir))
                    .await
                    .unwrap_or(false);
                if space {
                    let _ = fatal.send(format!(
                        "the store's disk has space again, but the store still fails its writes ({e})"
                    ));
                    return;
                }
                tracing::error!(error = %e, dir = %store_dir.display(), "the store's disk is full: submissions are refused (STORE_FULL) until space is freed");
            }
            Err(e) => tracing::warn!(error = %e, "the store's write probe failed"),
        }
    }
}

/// Whether 1 MiB can be written and synced beside the store, past the size of its largest
/// file (so a per-file size limit is noticed as well as a full file system).
fn disk_takes_writes(store_dir: &std::path::Path) -> bool {
    use std::io::{Seek, SeekFrom, Write};
    let largest = std::fs::metadata(store_dir.join("db").join("db"))
        .map(|m| m.len())
        .unwrap_or(0);
    let probe = store_dir.join(".space-probe");
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&probe)?;
        f.seek(SeekFrom::Start(largest))?;
        f.write_all(&vec![0u8; 1024 * 1024])?;
        f.sync_all()
    })();
    let _ = std::fs::remove_file(&probe);
    result.is_ok()
}

/// Accepts TCP connections and runs each TLS handshake on its own task, so one slow client
/// cannot hold up the others; at most `max_handshakes` at once (a connection over that is
/// closed at once, said at most once a minute).
async fn accept_tls(
    listener: TcpListener,
    tls: ReloadableTls,
    tx: mpsc::Sender<
        Result<tokio_rustls::server::TlsStream<tokio::net::TcpStream>, std::io::Error>,
    >,
    max_handshakes: usize,
) {
    let handshakes = Arc::new(tokio::sync::Semaphore::new(max_handshakes));
    let mut said_full: Option<tokio::time::Instant> = None;
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = handshakes.clone().try_acquire_owned() else {
            if said_full.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                said_full = Some(tokio::time::Instant::now());
                tracing::warn!(%peer, max_handshakes, "too many TLS handshakes under way: new connections are closed at once ([limits] max_handshakes)");
            }
            drop(tcp);
            continue;
        };
        // Small gRPC frames (receipts, deliveries, acks) go out at once: without this, Nagle's
        // algorithm holds them back while earlier bytes await the peer's delayed ACK.
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(%peer, error = %e, "TCP_NODELAY not set");
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
        let tx = tx.clone();
        tokio::spawn(async move {
            let accepted =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await;
            drop(slot);
            match accepted {
                Ok(Ok(stream)) => {
                    let _ = tx.send(Ok(stream)).await;
                }
                Ok(Err(e)) => tracing::info!(%peer, error = %e, "TLS handshake refused"),
                Err(_) => tracing::info!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

/// Size of the store's database files (not its blob files, which start-up does not read):
/// for the start-up log lines. 0 where it cannot be read.
fn database_bytes(store_dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(store_dir.join("db")) else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum()
}
