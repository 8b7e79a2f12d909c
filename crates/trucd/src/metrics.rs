//! The relay's Prometheus metrics, served as OpenMetrics text on the admin port.
//!
//! Counters move where things happen (the gRPC service, the national-axis link); gauges
//! that describe state (queue depths, dead letters, store size, the link) are read from
//! the store and the link when scraped, so they are never stale. Each relay has its own
//! registry: several relays in one process (tests, the demo) do not mix their figures.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use truc_store::{Destination, StoreStats, Timestamp};
use truc_upstream::{
    operations, Agency, BreakerState, PackageDownload, Received, SentItem, Upload, Upstream,
    UpstreamError,
};

/// Labels of a submission.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubmissionLabels {
    /// `document` or `status`.
    pub kind: &'static str,
    /// `adapter` or `national_axis`.
    pub source: &'static str,
    /// `accepted`, `duplicate` or `refused`.
    pub outcome: &'static str,
}

/// Labels of a delivery step: where it goes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationKind {
    /// `inbox` (a unit's adapter) or `national_axis`.
    pub destination_kind: &'static str,
}

/// The inbox kind.
pub const INBOX: DestinationKind = DestinationKind {
    destination_kind: "inbox",
};
/// The national-axis kind.
pub const NATIONAL_AXIS: DestinationKind = DestinationKind {
    destination_kind: "national_axis",
};

/// Labels of a queue gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    destination: String,
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DestinationLabel {
    destination: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UnitLabel {
    unit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// Buckets of the adapters' submission latency: a durable receipt takes a flush of the
/// store (a fraction of a millisecond to a few on a healthy disk).
fn submission_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
        2.5, 10.0,
    ])
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamErrorLabels {
    operation: &'static str,
    code: &'static str,
}

fn call_histogram() -> Histogram {
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

/// Every metric of one relay.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    submissions: Family<SubmissionLabels, Counter>,
    submission_duration: Family<KindLabel, Histogram, fn() -> Histogram>,
    deliveries: Family<DestinationKind, Counter>,
    acks: Family<DestinationKind, Counter>,
    retries: Family<DestinationKind, Counter>,
    dead_lettered: Family<DestinationKind, Counter>,
    upstream_calls: Family<OperationLabel, Counter>,
    upstream_errors: Family<UpstreamErrorLabels, Counter>,
    upstream_duration: Family<OperationLabel, Histogram, fn() -> Histogram>,
    inbox_connections: Family<UnitLabel, Gauge>,
    inbox_acks_pending: Gauge,
    submission_memory: Gauge,
    submissions_spilled: Counter,
    payloads_purged: Counter,
    payload_bytes_purged: Counter,
    transport_reports: Family<OutcomeLabel, Counter>,
    transport_reports_followed: Gauge,
    inbox_total: AtomicU64,
    queue_depth: Family<QueueLabels, Gauge>,
    queue_oldest_age: Family<DestinationLabel, Gauge<f64, AtomicU64>>,
    dead_letters: Gauge,
    store_disk_bytes: Gauge,
    circuit_open: Gauge,
    credentials_rejected: Gauge,
    ready: Gauge,
    flush: Arc<FlushCollector>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("truc");
        let m = Metrics {
            submissions: Family::default(),
            submission_duration: Family::new_with_constructor(submission_histogram),
            deliveries: Family::default(),
            acks: Family::default(),
            retries: Family::default(),
            dead_lettered: Family::default(),
            upstream_calls: Family::default(),
            upstream_errors: Family::default(),
            upstream_duration: Family::new_with_constructor(call_histogram),
            inbox_connections: Family::default(),
            inbox_acks_pending: Gauge::default(),
            submission_memory: Gauge::default(),
            submissions_spilled: Counter::default(),
            payloads_purged: Counter::default(),
            payload_bytes_purged: Counter::default(),
            transport_reports: Family::default(),
            transport_reports_followed: Gauge::default(),
            inbox_total: AtomicU64::new(0),
            queue_depth: Family::default(),
            queue_oldest_age: Family::default(),
            dead_letters: Gauge::default(),
            store_disk_bytes: Gauge::default(),
            circuit_open: Gauge::default(),
            credentials_rejected: Gauge::default(),
            ready: Gauge::default(),
            flush: Arc::new(FlushCollector::default()),
            registry: Registry::default(),
        };
        registry.register(
            "submissions",
            "Packages submitted, by kind, source and outcome",
            m.submissions.clone(),
        );
        registry.register(
            "submission_duration_seconds",
            "Adapters' submissions, from the call's start to the durable receipt (or refusal), by kind",
            m.submission_duration.clone(),
        );
        registry.register(
            "deliveries",
            "Packages handed to an adapter's inbox stream or sent to the national axis",
            m.deliveries.clone(),
        );
        registry.register(
            "acks",
            "Deliveries acknowledged by their recipient (adapter ack, or axis acceptance)",
            m.acks.clone(),
        );
        registry.register(
            "retries",
            "Deliveries that failed and wait for a retry",
            m.retries.clone(),
        );
        registry.register(
            "dead_letters",
            "Deliveries moved to the dead-letter list",
            m.dead_lettered.clone(),
        );
        registry.register(
            "upstream_calls",
            "Calls to the national axis, by operation",
            m.upstream_calls.clone(),
        );
        registry.register(
            "upstream_errors",
            "Failed calls to the national axis, by operation and error code",
            m.upstream_errors.clone(),
        );
        registry.register_with_unit(
            "upstream_call_duration",
            "Duration of calls to the national axis",
            prometheus_client::registry::Unit::Seconds,
            m.upstream_duration.clone(),
        );
        registry.register(
            "inbox_connections",
            "Open inbox streams, by level-2 unit",
            m.inbox_connections.clone(),
        );
        registry.register(
            "inbox_acks_pending",
            "Acknowledgements received from adapters and not yet made durable by the store",
            m.inbox_acks_pending.clone(),
        );
        registry.register(
            "submission_memory_bytes",
            "Bytes of memory reserved by packages being received (limit: memory_budget_bytes)",
            m.submission_memory.clone(),
        );
        registry.register(
            "submissions_spilled",
            "Packages received into a staging file although small, because the memory budget (or their unit's quarter of it) was spent",
            m.submissions_spilled.clone(),
        );
        registry.register(
            "axis_transport_reports",
            "Recipients' outcomes of packages sent to the national axis, from its transport reports: received, refused (by the recipient's system: the package will not arrive), or unfollowed (too many to follow at once)",
            m.transport_reports.clone(),
        );
        registry.register(
            "axis_transport_reports_followed",
            "Packages sent to the national axis whose transport reports are being followed (kept in the store, followed again after a restart)",
            m.transport_reports_followed.clone(),
        );
        registry.register(
            "payloads_purged",
            "Payloads deleted by retention (their records and timelines stay)",
            m.payloads_purged.clone(),
        );
        registry.register_with_unit(
            "payloads_purged",
            "Payload bytes deleted by retention",
            prometheus_client::registry::Unit::Bytes,
            m.payload_bytes_purged.clone(),
        );
        registry.register(
            "queue_depth",
            "Deliveries per destination queue: ready, waiting for a retry, or claimed",
            m.queue_depth.clone(),
        );
        registry.register_with_unit(
            "queue_oldest_age",
            "Age of the oldest delivery in each queue",
            prometheus_client::registry::Unit::Seconds,
            m.queue_oldest_age.clone(),
        );
        // A gauge named like the counter above would clash; this one is the current list.
        registry.register(
            "dead_letters_current",
            "Deliveries in the dead-letter list now",
            m.dead_letters.clone(),
        );
        registry.register_with_unit(
            "store_disk",
            "Bytes the store uses on disk (database, payload segments and blob files)",
            prometheus_client::registry::Unit::Bytes,
            m.store_disk_bytes.clone(),
        );
        registry.register(
            "upstream_circuit_open",
            "1 while the circuit breaker to the national axis is open (the axis is failing)",
            m.circuit_open.clone(),
        );
        registry.register(
            "upstream_credentials_rejected",
            "1 while the national axis rejects this relay's system id, secret or clock",
            m.credentials_rejected.clone(),
        );
        registry.register(
            "ready",
            "1 when the relay serves: store answering, listeners up, not shutting down",
            m.ready.clone(),
        );
        registry.register(
            "build",
            "Version of trucd",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register_collector(Box::new(m.flush.clone()));
        // Every series that can appear starts at zero, so rates and `increase()` see the
        // first event.
        for kind in ["document", "status"] {
            for source in ["adapter", "national_axis"] {
                for outcome in ["accepted", "duplicate", "refused"] {
                    let _ = m.submissions.get_or_create(&SubmissionLabels {
                        kind,
                        source,
                        outcome,
                    });
                }
            }
        }
        for to in [INBOX, NATIONAL_AXIS] {
            let _ = m.deliveries.get_or_create(&to);
            let _ = m.acks.get_or_create(&to);
            let _ = m.retries.get_or_create(&to);
            let _ = m.dead_lettered.get_or_create(&to);
        }
        Metrics { registry, ..m }
    }

    /// A package was submitted.
    pub fn submitted(&self, kind: &'static str, source: &'static str, outcome: &'static str) {
        self.submissions
            .get_or_create(&SubmissionLabels {
                kind,
                source,
                outcome,
            })
            .inc();
    }

    /// An adapter's submission call ended after `elapsed`.
    pub fn submission_finished(&self, kind: &'static str, elapsed: std::time::Duration) {
        self.submission_duration
            .get_or_create(&KindLabel { kind })
            .observe(elapsed.as_secs_f64());
    }

    /// A package was handed over.
    pub fn delivered(&self, to: &DestinationKind) {
        self.deliveries.get_or_create(to).inc();
    }

    /// A delivery was acknowledged.
    pub fn acknowledged(&self, to: &DestinationKind) {
        self.acks.get_or_create(to).inc();
    }

    /// A delivery failed and will be retried.
    pub fn retried(&self, to: &DestinationKind) {
        self.retries.get_or_create(to).inc();
    }

    /// The national axis reported what a recipient's system did with a package sent up
    /// (`received`, `refused`), or a sent package was not followed (`unfollowed`).
    pub fn transport_report(&self, outcome: &'static str) {
        self.transport_reports
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// How many packages sent to the national axis are being followed now.
    pub fn transport_reports_followed(&self, n: usize) {
        self.transport_reports_followed
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A delivery went to the dead-letter list.
    pub fn dead_lettered(&self, to: &DestinationKind) {
        self.dead_lettered.get_or_create(to).inc();
    }

    /// An adapter's acknowledgement is being made durable.
    pub fn ack_pending(&self) {
        self.inbox_acks_pending.inc();
    }

    /// An acknowledgement started with [`Self::ack_pending`] finished (durable or failed).
    pub fn ack_finished(&self) {
        self.inbox_acks_pending.dec();
    }

    /// The gauge of memory reserved by packages being received.
    pub fn submission_memory(&self) -> Gauge {
        self.submission_memory.clone()
    }

    /// Counts what a retention pass deleted.
    pub fn purged(&self, report: &truc_store::PurgeReport) {
        self.payloads_purged.inc_by(report.messages);
        self.payload_bytes_purged.inc_by(report.bytes);
    }

    /// A package is received into a staging file for want of memory.
    pub fn submission_spilled(&self) {
        self.submissions_spilled.inc();
    }

    /// An inbox stream of `unit` opened; the guard closes it when dropped.
    pub fn inbox_opened(self: &Arc<Self>, unit: &str) -> InboxGuard {
        let label = UnitLabel {
            unit: unit.to_owned(),
        };
        self.inbox_connections.get_or_create(&label).inc();
        self.inbox_total.fetch_add(1, Ordering::Relaxed);
        InboxGuard {
            metrics: self.clone(),
            label,
        }
    }

    /// Open inbox streams, all units together.
    pub fn inbox_connections(&self) -> u64 {
        // A family cannot be summed: the total is kept beside it.
        self.inbox_total.load(Ordering::Relaxed)
    }

    /// Records what the store, the queues and the link say now (called before each
    /// scrape).
    pub fn observe_state(
        &self,
        stats: &StoreStats,
        queues: &[truc_store::QueueDepth],
        now: Timestamp,
        link: Option<(BreakerState, bool)>,
        ready: bool,
    ) {
        self.queue_depth.clear();
        self.queue_oldest_age.clear();
        for q in queues {
            let destination = destination_label(&q.destination);
            for (state, n) in [
                ("ready", q.ready),
                ("waiting", q.waiting),
                ("claimed", q.claimed),
            ] {
                self.queue_depth
                    .get_or_create(&QueueLabels {
                        destination: destination.clone(),
                        state,
                    })
                    .set(n as i64);
            }
            let age = q.oldest.map_or(0.0, |o| now.since(o).as_secs_f64());
            self.queue_oldest_age
                .get_or_create(&DestinationLabel { destination })
                .set(age);
        }
        self.dead_letters.set(stats.dead_letters as i64);
        self.store_disk_bytes.set(stats.disk_bytes as i64);
        if let Some((state, rejected)) = link {
            self.circuit_open
                .set(i64::from(state == BreakerState::Open));
            self.credentials_rejected.set(i64::from(rejected));
        }
        self.ready.set(i64::from(ready));
        if let Ok(mut flush) = self.flush.stats.lock() {
            *flush = stats.clone();
        }
    }

    /// The OpenMetrics text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Marks an inbox stream open until dropped.
#[derive(Debug)]
pub struct InboxGuard {
    metrics: Arc<Metrics>,
    label: UnitLabel,
}

impl Drop for InboxGuard {
    fn drop(&mut self) {
        self.metrics
            .inbox_connections
            .get_or_create(&self.label)
            .dec();
        self.metrics.inbox_total.fetch_sub(1, Ordering::Relaxed);
    }
}

/// `000.00.07.G04` for an inbox, `national_axis` for the outbox.
pub fn destination_label(d: &Destination) -> String {
    match d {
        Destination::Inbox(code) => code.to_string(),
        Destination::NationalAxis => "national_axis".into(),
    }
}

/// The store's flush-latency histogram and its count of payload syncs, as last observed.
#[derive(Debug, Default)]
struct FlushCollector {
    stats: Mutex<StoreStats>,
}

impl Collector for FlushCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let stats = match self.stats.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        };
        // The store gives cumulative counts; the encoder wants each bucket's own.
        let mut previous = 0;
        let mut buckets: Vec<(f64, u64)> = stats
            .flush_buckets
            .iter()
            .map(|&(le, cumulative)| {
                let own = cumulative.saturating_sub(previous);
                previous = cumulative;
                (le, own)
            })
            .collect();
        // The encoder writes `f64::MAX` as `+Inf`: every flush slower than the last bound.
        buckets.push((f64::MAX, stats.flushes.saturating_sub(previous)));
        let mut metric = encoder.encode_descriptor(
            "store_flush_duration",
            "Duration of the store's flushes (fsync of the log, shared by a group of commits)",
            Some(&prometheus_client::registry::Unit::Seconds),
            MetricType::Histogram,
        )?;
        metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            stats.flush_seconds_sum,
            stats.flushes,
            &buckets,
            None,
        )?;
        let mut syncs = encoder.encode_descriptor(
            "store_payload_syncs",
            "fdatasyncs of payload segments, each making a group of small submissions durable",
            None,
            MetricType::Counter,
        )?;
        syncs.encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(
            &stats.payload_syncs,
            None,
        )
    }
}

/// The relay's view of the link to the national axis: breaker state, and whether the axis
/// currently rejects the relay's credentials.
#[derive(Debug, Default)]
pub struct LinkHealth {
    credentials_rejected: AtomicBool,
}

impl LinkHealth {
    /// Whether the axis rejected the last call for credentials.
    pub fn credentials_rejected(&self) -> bool {
        self.credentials_rejected.load(Ordering::Relaxed)
    }
}

/// The national-axis client with every call counted and timed, and the credentials state
/// tracked: a decorator, so the client itself stays free of metrics.
pub struct MeteredUpstream {
    inner: Arc<dyn Upstream>,
    metrics: Arc<Metrics>,
    health: Arc<LinkHealth>,
}

impl std::fmt::Debug for MeteredUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeteredUpstream").finish_non_exhaustive()
    }
}

impl MeteredUpstream {
    /// Wraps a client.
    pub fn new(inner: Arc<dyn Upstream>, metrics: Arc<Metrics>, health: Arc<LinkHealth>) -> Self {
        for operation in operations::ALL {
            let _ = metrics
                .upstream_calls
                .get_or_create(&OperationLabel { operation });
        }
        MeteredUpstream {
            inner,
            metrics,
            health,
        }
    }

    fn record<T>(
        &self,
        operation: &'static str,
        started: Instant,
        result: &Result<T, UpstreamError>,
    ) {
        record_call(
            &self.metrics,
            &self.health,
            operation,
            started,
            result.as_ref().map(drop),
        );
    }
}

/// Counts one call to the axis: its duration, and its error by code; the link's health
/// follows whether the axis accepts the relay's credentials.
fn record_call(
    metrics: &Metrics,
    health: &LinkHealth,
    operation: &'static str,
    started: Instant,
    result: Result<(), &UpstreamError>,
) {
    let label = OperationLabel { operation };
    metrics.upstream_calls.get_or_create(&label).inc();
    metrics
        .upstream_duration
        .get_or_create(&label)
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(()) => health.credentials_rejected.store(false, Ordering::Relaxed),
        Err(e) => {
            if matches!(e, UpstreamError::Credentials { .. }) {
                health.credentials_rejected.store(true, Ordering::Relaxed);
            }
            metrics
                .upstream_errors
                .get_or_create(&UpstreamErrorLabels {
                    operation,
                    code: e.code(),
                })
                .inc();
        }
    }
}

#[async_trait]
impl Upstream for MeteredUpstream {
    async fn send_upload(
        &self,
        package: Upload,
        sha256_hex: &str,
        from: &str,
        to: &[String],
        status: bool,
    ) -> Result<String, UpstreamError> {
        let started = Instant::now();
        let r = self
            .inner
            .send_upload(package, sha256_hex, from, to, status)
            .await;
        self.record(operations::SEND_EDOC, started, &r);
        r
    }

    async fn list_received(&self, status: bool) -> Result<Vec<Received>, UpstreamError> {
        let started = Instant::now();
        let r = self.inner.list_received(status).await;
        self.record(operations::GET_RECEIVED_EDOC_LIST, started, &r);
        r
    }

    async fn fetch_stream(&self, doc_id: &str) -> Result<PackageDownload, UpstreamError> {
        let started = Instant::now();
        match self.inner.fetch_stream(doc_id).await {
            // Counted when the whole answer is in: its envelope comes last.
            Ok(download) => {
                let (metrics, health) = (self.metrics.clone(), self.health.clone());
                Ok(download.observed(Box::new(move |result| {
                    record_call(&metrics, &health, operations::GET_EDOC, started, result)
                })))
            }
            Err(e) => {
                record_call(
                    &self.metrics,
                    &self.health,
                    operations::GET_EDOC,
                    started,
                    Err(&e),
                );
                Err(e)
            }
        }
    }

    async fn acknowledge(&self, doc_id: &str, done: bool) -> Result<(), UpstreamError> {
        let started = Instant::now();
        let r = self.inner.acknowledge(doc_id, done).await;
        self.record(operations::UPDATE_STATUS, started, &r);
        r
    }

    async fn sent_report(&self, doc_id: &str) -> Result<Vec<SentItem>, UpstreamError> {
        let started = Instant::now();
        let r = self.inner.sent_report(doc_id).await;
        self.record(operations::GET_SENT_EDOC_LIST, started, &r);
        r
    }

    async fn agencies(&self) -> Result<Vec<Agency>, UpstreamError> {
        let started = Instant::now();
        let r = self.inner.agencies().await;
        self.record(operations::GET_AGENCIES_LIST, started, &r);
        r
    }

    fn link(&self) -> BreakerState {
        self.inner.link()
    }
}

/// How long a scrape may reuse the queue figures of the previous one: counting a deep
/// backlog walks its index, and scrapers come every few seconds.
pub const STATE_REFRESH: Duration = Duration::from_secs(2);
