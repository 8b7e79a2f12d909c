//! The load: senders (closed loop with a concurrency, or open loop at a rate) and one
//! receiver per adapter that checks every delivery against what was sent.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use sha2::{Digest, Sha256};
use truc_client::Client;
use truc_edxml::{AttachmentSource, CalendarDate, DocumentBuilder, OrgCode};

/// Payload sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Size {
    /// 8 KiB.
    #[value(name = "8k")]
    #[serde(rename = "8k")]
    K8,
    /// 256 KiB.
    #[value(name = "256k")]
    #[serde(rename = "256k")]
    K256,
    /// 4 MiB.
    #[value(name = "4m")]
    #[serde(rename = "4m")]
    M4,
    /// Drawn from sizes seen in official correspondence: mostly letters of a few tens of
    /// KiB, some scanned annexes of hundreds of KiB, a few large files.
    Mix,
}

impl Size {
    /// Target package size in bytes for this draw.
    pub fn draw(self) -> usize {
        match self {
            Size::K8 => 8 * 1024,
            Size::K256 => 256 * 1024,
            Size::M4 => 4 * 1024 * 1024,
            Size::Mix => match fastrand::u32(0..100) {
                0..=59 => fastrand::usize(8 * 1024..64 * 1024),
                60..=89 => fastrand::usize(64 * 1024..512 * 1024),
                90..=98 => fastrand::usize(512 * 1024..2 * 1024 * 1024),
                _ => fastrand::usize(2 * 1024 * 1024..8 * 1024 * 1024),
            },
        }
    }
}

/// One package waiting for its recipient.
struct Pending {
    sha256: [u8; 32],
    started: Instant,
    acknowledged: bool,
    failed: bool,
}

/// What every task shares.
pub struct Ledger {
    pending: Mutex<HashMap<String, Pending>>,
    latency: Mutex<Histogram<u64>>,
    /// From the submission (or its scheduled time) to the relay's receipt: the durable
    /// part of the path, without the delivery.
    receipt_latency: Mutex<Histogram<u64>>,
    /// From a submission's scheduled time to the moment the load generator began it: its
    /// own lateness, part of every latency above in an open loop.
    start_lateness: Mutex<Histogram<u64>>,
    /// Submissions the relay acknowledged.
    pub acknowledged: AtomicU64,
    /// Submissions refused or failed, by error code.
    pub errors: Mutex<HashMap<String, u64>>,
    /// Deliveries verified (right bytes, first time).
    pub received: AtomicU64,
    /// Deliveries received again.
    pub duplicates: AtomicU64,
    /// Deliveries whose bytes did not match what was sent.
    pub corrupted: AtomicU64,
    /// Deliveries of packages this run never sent.
    pub unknown: AtomicU64,
    /// Bytes of packages acknowledged.
    pub bytes: AtomicU64,
    /// Packages delivered whose submission the adapter saw fail (the relay had stored
    /// them; the answer was lost when it was killed).
    pub delivered_unacknowledged: AtomicU64,
    /// Status packages received (01 from the other ministry, for cross traffic).
    pub statuses: AtomicU64,
    stop: AtomicBool,
    stop_sending: AtomicBool,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            pending: Mutex::default(),
            // Microseconds, up to an hour, 3 significant digits.
            latency: Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds"),
            ),
            receipt_latency: Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds"),
            ),
            start_lateness: Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds"),
            ),
            acknowledged: AtomicU64::new(0),
            errors: Mutex::default(),
            received: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            corrupted: AtomicU64::new(0),
            unknown: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            statuses: AtomicU64::new(0),
            delivered_unacknowledged: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            stop_sending: AtomicBool::new(false),
        }
    }
}

impl Ledger {
    /// Latency quantiles in milliseconds, submission to the recipient's ack: p50, p99,
    /// p99.9, max; and the count.
    pub fn latency(&self) -> (f64, f64, f64, f64, u64) {
        quantiles(&self.latency)
    }

    /// The same, submission to the relay's receipt.
    pub fn receipt_latency(&self) -> (f64, f64, f64, f64, u64) {
        quantiles(&self.receipt_latency)
    }

    /// Records a receipt `after` the submission started.
    pub fn receipt(&self, after: Duration) {
        if let Ok(mut h) = self.receipt_latency.lock() {
            let _ = h.record((after.as_micros() as u64).max(1));
        }
    }

    /// The same, from the scheduled time to the moment the load generator began the
    /// submission.
    pub fn start_lateness(&self) -> (f64, f64, f64, f64, u64) {
        quantiles(&self.start_lateness)
    }

    /// Records a submission begun `by` after its scheduled time.
    fn started_late(&self, by: Duration) {
        if let Ok(mut h) = self.start_lateness.lock() {
            let _ = h.record((by.as_micros() as u64).max(1));
        }
    }
}

/// Quantiles of a histogram of microseconds, in milliseconds: p50, p99, p99.9, max; count.
fn quantiles(histogram: &Mutex<Histogram<u64>>) -> (f64, f64, f64, f64, u64) {
    let h = match histogram.lock() {
        Ok(h) => h.clone(),
        Err(p) => p.into_inner().clone(),
    };
    let ms = |us: u64| us as f64 / 1000.0;
    (
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max()),
        h.len(),
    )
}

impl Ledger {
    /// Acknowledged submissions not yet received.
    pub fn outstanding(&self) -> u64 {
        self.pending
            .lock()
            .map(|p| p.values().filter(|e| e.acknowledged).count() as u64)
            .unwrap_or(0)
    }

    /// A package is about to be submitted.
    pub fn expect(&self, document_id: &str, sha256: [u8; 32], started: Instant) {
        if let Ok(mut p) = self.pending.lock() {
            p.insert(
                document_id.to_owned(),
                Pending {
                    sha256,
                    started,
                    acknowledged: false,
                    failed: false,
                },
            );
        }
    }

    /// Its submission was acknowledged.
    pub fn submitted(&self, document_id: &str, bytes: u64) {
        self.acknowledged.fetch_add(1, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if let Ok(mut p) = self.pending.lock() {
            if let Some(e) = p.get_mut(document_id) {
                e.acknowledged = true;
            }
        }
    }

    /// Its submission failed. It stays expected: the relay may have stored it before the
    /// answer was lost; a delivery of it is then counted, not taken for a duplicate.
    pub fn submit_failed(&self, document_id: &str, code: &str) {
        self.error(code);
        if let Ok(mut p) = self.pending.lock() {
            if let Some(entry) = p.get_mut(document_id) {
                entry.failed = true;
            }
        }
    }

    /// A package was delivered (and acknowledged by its recipient at `acked`).
    pub fn delivered(&self, document_id: &str, sha256: [u8; 32], acked: Instant) {
        let entry = self
            .pending
            .lock()
            .ok()
            .and_then(|mut p| p.remove(document_id));
        match entry {
            Some(e) if e.sha256 == sha256 => {
                self.received.fetch_add(1, Ordering::Relaxed);
                if e.failed {
                    self.delivered_unacknowledged
                        .fetch_add(1, Ordering::Relaxed);
                }
                let us = acked.duration_since(e.started).as_micros() as u64;
                if let Ok(mut h) = self.latency.lock() {
                    let _ = h.record(us.max(1));
                }
            }
            Some(_) => {
                self.corrupted.fetch_add(1, Ordering::Relaxed);
            }
            None if document_id.ends_with("/LOAD") => {
                self.duplicates.fetch_add(1, Ordering::Relaxed);
            }
            None => {
                self.unknown.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Some acknowledged submissions not yet received (for the report).
    pub fn missing(&self, n: usize) -> Vec<String> {
        self.pending
            .lock()
            .map(|p| {
                p.iter()
                    .filter(|(_, e)| e.acknowledged)
                    .take(n)
                    .map(|(k, _)| k.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Ends the run: senders and receivers.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
        self.stop_sending();
    }

    /// Stops the senders; receivers go on until the run ends.
    pub fn stop_sending(&self) {
        self.stop_sending.store(true, Ordering::Relaxed);
    }

    /// Whether the senders were told to stop.
    pub fn sending_stopped(&self) -> bool {
        self.stop_sending.load(Ordering::Relaxed)
    }

    /// Whether the run is over.
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    pub fn error(&self, code: &str) {
        if let Ok(mut e) = self.errors.lock() {
            *e.entry(code.to_owned()).or_insert(0) += 1;
        }
    }
}

/// Who may send to whom.
#[derive(Clone)]
pub struct Routes {
    /// Adapter clients by level-2 unit, with the ministry they belong to.
    pub senders: Vec<(String, Submitter)>,
    /// Recipients reachable inside the same ministry as each sender (by sender index).
    pub local: Vec<Vec<String>>,
    /// Recipients in the other ministry (across the national axis).
    pub remote: Vec<Vec<String>>,
    /// Fraction of packages that cross the national axis.
    pub cross: f64,
}

/// Builds one package of about `size` bytes from `from` to `to`, unique by `number`.
pub fn package(from: &str, to: &str, number: u64, size: usize, date: CalendarDate) -> Vec<u8> {
    let (Ok(from), Ok(to)) = (OrgCode::parse(from), OrgCode::parse(to)) else {
        return Vec::new();
    };
    let builder = DocumentBuilder::new(from, vec![to], date, &number.to_string(), "LOAD")
        .subject("Công văn thử tải");
    // About 2.3 KiB of XML around the attachment; base64 adds a third.
    let raw = size.saturating_sub(2400) * 3 / 4;
    let mut data = vec![0u8; raw];
    fastrand::fill(&mut data);
    builder
        .attachment(AttachmentSource::new("phu-luc.pdf", data))
        .build()
}

/// One submission to make: who, to whom, its number, and when it was due.
struct Job<'a> {
    from: &'a str,
    to: &'a str,
    number: u64,
    started: Instant,
}

/// Where submissions go: a relay's adapter, or (for comparison) a JetStream stream.
#[derive(Clone)]
pub enum Submitter {
    /// An adapter of the relay (mutual TLS gRPC).
    Truc(Client),
    /// NATS JetStream: publish with a synchronous acknowledgement of the stored message.
    JetStream(async_nats::jetstream::Context),
}

/// The JetStream subject of a unit's inbox.
pub fn subject_of(unit: &str) -> String {
    format!("truc.load.{}", unit.replace('.', "_"))
}

impl Submitter {
    /// Submits `bytes`, whose SHA-256 is `sha256`; the error is a short code.
    async fn submit(
        &mut self,
        to: &str,
        document_id: &str,
        bytes: Vec<u8>,
        sha256: &[u8; 32],
    ) -> Result<(), String> {
        match self {
            // The header carries the digest the ledger already took: hashing the package a
            // second time would spend the load generator's share of the two cores, which
            // the relay shares (what `submit_document` would send is the same). The chunks
            // are slices of the package, not copies, as JetStream's payload is.
            Submitter::Truc(c) => c
                .submit_bytes(
                    truc_client::SubmitHeader {
                        idempotency_key: String::new(),
                        size: bytes.len() as u64,
                        sha256: truc_edxml::Sha256Digest(*sha256).to_hex(),
                    },
                    bytes.into(),
                )
                .await
                .map(|_| ())
                .map_err(|e| {
                    e.code()
                        .filter(|c| !c.is_empty())
                        .unwrap_or("TRANSPORT")
                        .to_owned()
                }),
            Submitter::JetStream(js) => {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert("Truc-Document", document_id);
                let ack = js
                    .publish_with_headers(subject_of(to), headers, bytes.into())
                    .await
                    .map_err(|_| "PUBLISH".to_owned())?;
                ack.await.map(|_| ()).map_err(|_| "PUBLISH_ACK".to_owned())
            }
        }
    }
}

/// Sends one package and records it.
async fn send_one(
    ledger: &Ledger,
    submitter: &mut Submitter,
    job: Job<'_>,
    size: Size,
    date: CalendarDate,
) {
    let Job {
        from,
        to,
        number,
        started,
    } = job;
    ledger.started_late(started.elapsed());
    let bytes = package(from, to, number, size.draw(), date);
    let sha: [u8; 32] = Sha256::digest(&bytes).into();
    let document_id = format!("{from},{date},{number}/LOAD");
    let len = bytes.len() as u64;
    ledger.expect(&document_id, sha, started);
    match submitter.submit(to, &document_id, bytes, &sha).await {
        Ok(()) => {
            ledger.receipt(started.elapsed());
            ledger.submitted(&document_id, len)
        }
        Err(code) => {
            ledger.submit_failed(&document_id, &code);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn pick(routes: &Routes, sender: usize) -> String {
    let remote = &routes.remote[sender];
    let list = if !remote.is_empty() && fastrand::f64() < routes.cross {
        remote
    } else {
        &routes.local[sender]
    };
    list[fastrand::usize(0..list.len())].clone()
}

/// How the senders pace themselves.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// This many submissions in flight at all times.
    Closed(usize),
    /// This many submissions per second, whatever the answers (latency is measured from
    /// the scheduled time, so a slow relay cannot hide its queueing).
    Open(f64),
}

/// Sends until `until` or `count` submissions, whichever comes first.
pub async fn send(
    ledger: Arc<Ledger>,
    routes: Routes,
    pace: Pace,
    size: Size,
    until: Instant,
    count: u64,
) {
    let date = CalendarDate::new(2026, 11, 21).unwrap_or_else(|| CalendarDate::from_unix_days(0));
    let next = Arc::new(AtomicU64::new(0));
    let take = move || {
        let n = next.fetch_add(1, Ordering::Relaxed);
        (n < count).then_some(n)
    };
    let mut tasks = tokio::task::JoinSet::new();
    match pace {
        Pace::Closed(concurrency) => {
            for worker in 0..concurrency {
                let (ledger, routes, take) = (ledger.clone(), routes.clone(), take.clone());
                tasks.spawn(async move {
                    let sender = worker % routes.senders.len();
                    let (from, mut submitter) = routes.senders[sender].clone();
                    while Instant::now() < until && !ledger.sending_stopped() {
                        let Some(n) = take() else { break };
                        let to = pick(&routes, sender);
                        let job = Job {
                            from: &from,
                            to: &to,
                            number: n,
                            started: Instant::now(),
                        };
                        send_one(&ledger, &mut submitter, job, size, date).await;
                    }
                });
            }
        }
        Pace::Open(rate) => {
            let interval = Duration::from_secs_f64(1.0 / rate.max(0.001));
            let start = Instant::now();
            let limit = Arc::new(tokio::sync::Semaphore::new(8192));
            // The schedule is kept by a thread of its own: tokio's timer fires on 1 ms
            // ticks, which made the generator begin submissions late by 0.4–1.2 ms at p50,
            // counted in every latency (measured from the scheduled time).
            let (tick, mut ticks) = tokio::sync::mpsc::unbounded_channel::<Instant>();
            std::thread::spawn(move || {
                for i in 0u64.. {
                    let at = start + interval.mul_f64(i as f64);
                    if at >= until {
                        break;
                    }
                    let now = Instant::now();
                    if at > now {
                        std::thread::sleep(at - now);
                    }
                    if tick.send(at).is_err() {
                        break;
                    }
                }
            });
            let mut i: u64 = 0;
            while let Some(at) = ticks.recv().await {
                if ledger.sending_stopped() {
                    break;
                }
                let Some(n) = take() else { break };
                let Ok(permit) = limit.clone().acquire_owned().await else {
                    break;
                };
                let sender = (i as usize) % routes.senders.len();
                let (from, mut submitter) = routes.senders[sender].clone();
                let to = pick(&routes, sender);
                let ledger = ledger.clone();
                tasks.spawn(async move {
                    let job = Job {
                        from: &from,
                        to: &to,
                        number: n,
                        started: at,
                    };
                    send_one(&ledger, &mut submitter, job, size, date).await;
                    drop(permit);
                });
                i += 1;
            }
        }
    }
    while tasks.join_next().await.is_some() {}
}

/// Receives the inbox of one adapter: checks each package's bytes against what was sent,
/// records the latency from submission to this acknowledgement, and acknowledges it.
pub async fn receive(ledger: Arc<Ledger>, mut client: Client) {
    // The stream ends when the relay stops or dies: open it again until the run is over.
    loop {
        receive_stream(&ledger, &mut client).await;
        if ledger.stopped() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn receive_stream(ledger: &Ledger, client: &mut Client) {
    let Ok(mut inbox) = client.inbox(1000).await else {
        return;
    };
    while let Ok(Some(d)) = inbox.next().await {
        if d.kind == "status" {
            // Status 01 that the other ministry's relay sends back on acknowledgement.
            ledger.statuses.fetch_add(1, Ordering::Relaxed);
            if inbox.ack(&d.delivery_id).await.is_err() {
                break;
            }
            continue;
        }
        let bytes = if d.inline {
            d.package
        } else {
            match client.fetch_payload(&d.message_id).await {
                Ok(b) => b.into(),
                Err(_) => {
                    let _ = inbox.nack(&d.delivery_id, "fetch failed").await;
                    continue;
                }
            }
        };
        let sha: [u8; 32] = Sha256::digest(&bytes).into();
        if inbox.ack(&d.delivery_id).await.is_err() {
            break;
        }
        ledger.delivered(&d.document_id, sha, Instant::now());
    }
}
