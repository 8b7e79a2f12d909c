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
    /// The unit it is addressed to.
    to: Arc<str>,
    started: Instant,
    acknowledged: bool,
    failed: bool,
}

/// A package received: what a redelivery of it must match.
struct Received {
    sha256: [u8; 32],
    to: Arc<str>,
}

/// Packages sent and not yet received, and packages received.
#[derive(Default)]
struct Book {
    waiting: HashMap<String, Pending>,
    received: HashMap<String, Received>,
    /// Recipient codes, each held once.
    units: HashMap<String, Arc<str>>,
}

impl Book {
    fn unit(&mut self, code: &str) -> Arc<str> {
        if let Some(u) = self.units.get(code) {
            return u.clone();
        }
        let u: Arc<str> = Arc::from(code);
        self.units.insert(code.to_owned(), u.clone());
        u
    }
}

/// Whether a delivery for `recipient`, handed to the adapter of `served_by`, is where a
/// package addressed to `to` belongs: to that unit, through its own adapter or its
/// parent's (a level-3 unit is served by its level-2 parent).
fn rightly_routed(to: &str, recipient: &str, served_by: &str) -> bool {
    if to != recipient {
        return false;
    }
    match (OrgCode::parse(recipient), OrgCode::parse(served_by)) {
        (Ok(r), Ok(s)) => r.is_within(&s),
        _ => recipient == served_by,
    }
}

/// What every task shares.
pub struct Ledger {
    book: Mutex<Book>,
    latency: Mutex<Histogram<u64>>,
    /// From the submission (or its scheduled time) to the relay's receipt: the durable
    /// part of the path, without the delivery.
    receipt_latency: Mutex<Histogram<u64>>,
    /// From a submission's scheduled time to the moment the load generator had its package
    /// built and ready to send: its own lateness, part of every latency above in an open
    /// loop.
    start_lateness: Mutex<Histogram<u64>>,
    /// Submissions the relay acknowledged.
    pub acknowledged: AtomicU64,
    /// Submissions refused or failed, by error code.
    pub errors: Mutex<HashMap<String, u64>>,
    /// Deliveries verified (right bytes, right recipient, first time).
    pub received: AtomicU64,
    /// Deliveries received again, with the right bytes, by the right recipient.
    pub duplicates: AtomicU64,
    /// Deliveries (first or again) whose bytes did not match what was sent.
    pub corrupted: AtomicU64,
    /// Deliveries (first or again) to a unit the package was not addressed to, or through
    /// an adapter that does not serve that unit.
    pub misrouted: AtomicU64,
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
            book: Mutex::default(),
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
            misrouted: AtomicU64::new(0),
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

    /// The same, from the scheduled time to the moment the load generator had the package
    /// ready to send.
    pub fn start_lateness(&self) -> (f64, f64, f64, f64, u64) {
        quantiles(&self.start_lateness)
    }

    /// Records a submission ready `by` after its scheduled time.
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
        self.book
            .lock()
            .map(|b| b.waiting.values().filter(|e| e.acknowledged).count() as u64)
            .unwrap_or(u64::MAX)
    }

    /// A package addressed to `to` is about to be submitted.
    pub fn expect(&self, document_id: &str, to: &str, sha256: [u8; 32], started: Instant) {
        if let Ok(mut b) = self.book.lock() {
            let to = b.unit(to);
            b.waiting.insert(
                document_id.to_owned(),
                Pending {
                    sha256,
                    to,
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
        if let Ok(mut b) = self.book.lock() {
            if let Some(e) = b.waiting.get_mut(document_id) {
                e.acknowledged = true;
            }
        }
    }

    /// Its submission failed. It stays expected: the relay may have stored it before the
    /// answer was lost; a delivery of it is then counted, not taken for a duplicate.
    pub fn submit_failed(&self, document_id: &str, code: &str) {
        self.error(code);
        if let Ok(mut b) = self.book.lock() {
            if let Some(entry) = b.waiting.get_mut(document_id) {
                entry.failed = true;
            }
        }
    }

    /// A package was delivered for `recipient` to the adapter of `served_by`, and
    /// acknowledged by it at `acked`. A delivery with the wrong bytes or to the wrong place
    /// is counted as such and does not count as the package's arrival: it stays expected
    /// (and is lost if no right delivery follows).
    pub fn delivered(
        &self,
        document_id: &str,
        recipient: &str,
        served_by: &str,
        sha256: [u8; 32],
        acked: Instant,
    ) {
        let Ok(mut book) = self.book.lock() else {
            self.unknown.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if let Some((id, e)) = book.waiting.remove_entry(document_id) {
            if e.sha256 != sha256 {
                self.corrupted.fetch_add(1, Ordering::Relaxed);
                book.waiting.insert(id, e);
            } else if !rightly_routed(&e.to, recipient, served_by) {
                self.misrouted.fetch_add(1, Ordering::Relaxed);
                book.waiting.insert(id, e);
            } else {
                self.received.fetch_add(1, Ordering::Relaxed);
                if e.failed {
                    self.delivered_unacknowledged
                        .fetch_add(1, Ordering::Relaxed);
                }
                let us = acked.duration_since(e.started).as_micros() as u64;
                book.received.insert(id, Received { sha256, to: e.to });
                drop(book);
                if let Ok(mut h) = self.latency.lock() {
                    let _ = h.record(us.max(1));
                }
            }
        } else if let Some(first) = book.received.get(document_id) {
            if first.sha256 != sha256 {
                self.corrupted.fetch_add(1, Ordering::Relaxed);
            } else if !rightly_routed(&first.to, recipient, served_by) {
                self.misrouted.fetch_add(1, Ordering::Relaxed);
            } else {
                self.duplicates.fetch_add(1, Ordering::Relaxed);
            }
        } else {
            self.unknown.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Some acknowledged submissions not yet received (for the report).
    pub fn missing(&self, n: usize) -> Vec<String> {
        self.book
            .lock()
            .map(|b| {
                b.waiting
                    .iter()
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
    due: Due,
}

/// Where a submission's latency is counted from.
#[derive(Clone, Copy)]
enum Due {
    /// Open loop: its scheduled time, so that the generator's own lateness (building the
    /// package included) shows, and is reported apart.
    At(Instant),
    /// Closed loop: the moment its package is built and hashed, ready to send, so that
    /// the generator's work is not counted as the target's.
    WhenBuilt,
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
        due,
    } = job;
    let bytes = package(from, to, number, size.draw(), date);
    let sha: [u8; 32] = Sha256::digest(&bytes).into();
    let document_id = format!("{from},{date},{number}/LOAD");
    let len = bytes.len() as u64;
    let started = match due {
        Due::At(at) => {
            ledger.started_late(at.elapsed());
            at
        }
        Due::WhenBuilt => Instant::now(),
    };
    ledger.expect(&document_id, to, sha, started);
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
                            due: Due::WhenBuilt,
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
                        due: Due::At(at),
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

/// Receives the inbox of the adapter of `unit`: checks each package's bytes and recipient
/// against what was sent, records the latency from submission to this acknowledgement,
/// and acknowledges it.
pub async fn receive(ledger: Arc<Ledger>, unit: String, mut client: Client) {
    // The stream ends when the relay stops or dies: open it again until the run is over.
    loop {
        receive_stream(&ledger, &unit, &mut client).await;
        if ledger.stopped() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn receive_stream(ledger: &Ledger, unit: &str, client: &mut Client) {
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
        ledger.delivered(&d.document_id, &d.recipient, unit, sha, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L2: &str = "000.00.07.G04";
    const L3: &str = "000.03.07.G04";
    const OTHER: &str = "000.00.05.G04";

    fn sha(b: u8) -> [u8; 32] {
        [b; 32]
    }

    fn counts(l: &Ledger) -> [u64; 5] {
        [
            l.received.load(Ordering::Relaxed),
            l.duplicates.load(Ordering::Relaxed),
            l.corrupted.load(Ordering::Relaxed),
            l.misrouted.load(Ordering::Relaxed),
            l.unknown.load(Ordering::Relaxed),
        ]
    }

    fn sent(l: &Ledger, id: &str, to: &str, digest: [u8; 32]) {
        l.expect(id, to, digest, Instant::now());
        l.submitted(id, 1);
    }

    #[test]
    fn a_right_delivery_arrives_and_a_right_redelivery_is_a_duplicate() {
        let l = Ledger::default();
        sent(&l, "a/LOAD", L2, sha(1));
        assert_eq!(l.outstanding(), 1);
        l.delivered("a/LOAD", L2, L2, sha(1), Instant::now());
        assert_eq!(counts(&l), [1, 0, 0, 0, 0]);
        assert_eq!(l.outstanding(), 0);
        l.delivered("a/LOAD", L2, L2, sha(1), Instant::now());
        assert_eq!(counts(&l), [1, 1, 0, 0, 0]);
        assert_eq!(l.latency().4, 1, "one latency sample: the first arrival");
    }

    #[test]
    fn a_level_three_unit_is_served_through_its_parent_and_nobody_else() {
        let l = Ledger::default();
        sent(&l, "a/LOAD", L3, sha(1));
        l.delivered("a/LOAD", L3, OTHER, sha(1), Instant::now());
        assert_eq!(counts(&l), [0, 0, 0, 1, 0], "another unit's adapter");
        assert_eq!(l.outstanding(), 1, "a misrouted delivery is not an arrival");
        l.delivered("a/LOAD", L2, L2, sha(1), Instant::now());
        assert_eq!(
            counts(&l),
            [0, 0, 0, 2, 0],
            "the parent, named as the recipient"
        );
        l.delivered("a/LOAD", L3, L2, sha(1), Instant::now());
        assert_eq!(counts(&l), [1, 0, 0, 2, 0]);
        assert_eq!(l.outstanding(), 0);
        l.delivered("a/LOAD", L3, OTHER, sha(1), Instant::now());
        assert_eq!(counts(&l), [1, 0, 0, 3, 0], "a redelivery is checked too");
    }

    #[test]
    fn wrong_bytes_are_corrupted_first_time_or_again_and_never_an_arrival() {
        let l = Ledger::default();
        sent(&l, "a/LOAD", L2, sha(1));
        l.delivered("a/LOAD", L2, L2, sha(2), Instant::now());
        assert_eq!(counts(&l), [0, 0, 1, 0, 0]);
        assert_eq!(l.missing(5), vec!["a/LOAD".to_owned()], "still expected");
        l.delivered("a/LOAD", L2, L2, sha(1), Instant::now());
        l.delivered("a/LOAD", L2, L2, sha(3), Instant::now());
        assert_eq!(
            counts(&l),
            [1, 0, 2, 0, 0],
            "a corrupt redelivery is not a duplicate"
        );
    }

    #[test]
    fn a_package_never_sent_is_unknown() {
        let l = Ledger::default();
        l.delivered("b/LOAD", L2, L2, sha(1), Instant::now());
        assert_eq!(counts(&l), [0, 0, 0, 0, 1]);
    }
}
