//! Following the national axis's transport reports of the packages the relay sent up.
//!
//! The axis answers `sendEdoc` at once, and the delivery is recorded as handed over; whether
//! each recipient's system then took the package, or refused it (a unit it does not have, a
//! package it cannot read), shows only later, in `getSentEdocList`. Nothing else would tell
//! the sender of a refusal, so each outcome goes into the message's timeline
//! (`axis_received`, `axis_refused`), a refusal is logged, and both are counted.
//!
//! One task follows every document sent (statuses have no recipient to hear from), calling
//! the axis one report at a time, first a few seconds after the send, then ever less often,
//! for a day at most, and not while the link's breaker is open. A package the axis has no
//! report of after a few looks is left. What it follows is held in memory, up to a bound:
//! a restart, or more documents in flight than the bound, leaves some unfollowed (counted),
//! never delays a send.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use truc_edxml::OrgCode;
use truc_store::{EventKind, MessageId, Store, Timestamp};
use truc_upstream::Upstream;

use crate::metrics::Metrics;

/// The first look at a report, after the send: the recipient's system polls the axis.
const FIRST_LOOK: Duration = Duration::from_secs(5);
/// The longest wait between two looks at one report.
const LONGEST_WAIT: Duration = Duration::from_secs(600);
/// How long a package is followed before its pending recipients are left as they are.
const FOLLOWED_FOR: Duration = Duration::from_secs(24 * 3600);
/// Packages followed at once, at most.
const MOST_FOLLOWED: usize = 10_000;
/// Looks that find no report (the axis lists nothing for the package) before it is left.
const MOST_EMPTY_LOOKS: u32 = 3;

/// A package sent to the national axis, to follow.
#[derive(Debug)]
struct Sent {
    message: MessageId,
    doc_id: String,
}

/// The outbound worker's handle: hands each package it sent to the follower.
#[derive(Debug, Clone)]
pub struct TransportReports {
    sent: mpsc::Sender<Sent>,
    metrics: Arc<Metrics>,
}

impl TransportReports {
    /// A handle and the follower to run (see [`Follower::run`]).
    pub fn new(
        store: Arc<dyn Store>,
        upstream: Arc<dyn Upstream>,
        metrics: Arc<Metrics>,
    ) -> (Self, Follower) {
        let (sent, received) = mpsc::channel(1024);
        (
            TransportReports {
                sent,
                metrics: metrics.clone(),
            },
            Follower {
                store,
                upstream,
                metrics,
                received,
                due: BinaryHeap::new(),
                followed: HashMap::new(),
                next_seq: 0,
            },
        )
    }

    /// Follows message `message`, sent as the axis's `doc_id`. Never waits: if the follower
    /// is behind, the package is counted as unfollowed.
    pub fn follow(&self, message: MessageId, doc_id: String) {
        if self.sent.try_send(Sent { message, doc_id }).is_err() {
            self.metrics.transport_report("unfollowed");
        }
    }
}

/// One package being followed.
#[derive(Debug)]
struct Followed {
    sent: Sent,
    /// Recipients whose outcome is recorded already.
    reported: HashSet<String>,
    /// Looks that found no report at all.
    empty_looks: u32,
    wait: Duration,
    until: Instant,
}

/// The task that follows the reports.
pub struct Follower {
    store: Arc<dyn Store>,
    upstream: Arc<dyn Upstream>,
    metrics: Arc<Metrics>,
    received: mpsc::Receiver<Sent>,
    /// When each followed package is looked at next, earliest first.
    due: BinaryHeap<Reverse<(Instant, u64)>>,
    followed: HashMap<u64, Followed>,
    next_seq: u64,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("followed", &self.followed.len())
            .finish()
    }
}

impl Follower {
    /// Follows every package handed to it, until the outbound worker's handles are gone.
    pub async fn run(mut self) {
        loop {
            let next = self.due.peek().map(|Reverse((at, _))| *at);
            tokio::select! {
                sent = self.received.recv() => match sent {
                    Some(sent) => self.add(sent),
                    None => return,
                },
                _ = sleep_until(next) => {
                    if let Some(Reverse((_, seq))) = self.due.pop() {
                        self.look(seq).await;
                    }
                }
            }
        }
    }

    fn add(&mut self, sent: Sent) {
        if self.followed.len() >= MOST_FOLLOWED {
            self.metrics.transport_report("unfollowed");
            return;
        }
        let now = Instant::now();
        let seq = self.next_seq;
        self.next_seq += 1;
        self.followed.insert(
            seq,
            Followed {
                sent,
                reported: HashSet::new(),
                empty_looks: 0,
                wait: FIRST_LOOK,
                until: now + FOLLOWED_FOR,
            },
        );
        self.due.push(Reverse((now + FIRST_LOOK, seq)));
    }

    /// Looks at one package's report, records the outcomes new since the last look, and
    /// schedules the next look if a recipient is still pending.
    async fn look(&mut self, seq: u64) {
        let Some(mut f) = self.followed.remove(&seq) else {
            return;
        };
        // While the link is down, its breaker refuses calls anyway: no call is spent (nor
        // counted against the link) until it is up.
        let link_up = self.upstream.link() == truc_upstream::BreakerState::Closed;
        let pending = if !link_up {
            true
        } else {
            match self.upstream.sent_report(&f.sent.doc_id).await {
                Ok(lines) if !lines.is_empty() => self.record(&mut f, lines).await,
                // The axis has no report of it (none yet, or none kept): looked at a few
                // times.
                Ok(_) | Err(truc_upstream::UpstreamError::Refused { .. }) => {
                    f.empty_looks += 1;
                    f.empty_looks < MOST_EMPTY_LOOKS
                }
                Err(e) => {
                    tracing::debug!(doc_id = %f.sent.doc_id, error = %e, "the national axis's transport report could not be read; looked at again later");
                    true
                }
            }
        };
        let now = Instant::now();
        if pending && now < f.until {
            if link_up {
                f.wait = (f.wait * 2).min(LONGEST_WAIT);
            }
            self.due.push(Reverse((now + f.wait, seq)));
            self.followed.insert(seq, f);
        }
    }

    /// Records the final outcomes of `lines` not recorded yet; whether a recipient is still
    /// pending (or its outcome could not be recorded).
    async fn record(&self, f: &mut Followed, lines: Vec<truc_upstream::SentItem>) -> bool {
        let mut pending = false;
        for line in lines {
            let (kind, outcome) = match line.receive_status.as_str() {
                "done" => (EventKind::AxisReceived, "received"),
                "fail" => (EventKind::AxisRefused, "refused"),
                _ => {
                    pending = true;
                    continue;
                }
            };
            if f.reported.contains(&line.to_code) {
                continue;
            }
            let detail = match (kind, line.receive_status_desc.is_empty()) {
                (EventKind::AxisRefused, false) => format!(
                    "{}'s system refused it on the national axis: {}",
                    line.to_code, line.receive_status_desc
                ),
                (EventKind::AxisRefused, true) => {
                    format!("{}'s system refused it on the national axis", line.to_code)
                }
                _ => format!("{}'s system took it from the national axis", line.to_code),
            };
            if kind == EventKind::AxisRefused {
                tracing::warn!(message = %f.sent.message, doc_id = %f.sent.doc_id, recipient = %line.to_code, reason = %line.receive_status_desc, "a package sent to the national axis was refused by its recipient's system");
            }
            let recipient = OrgCode::parse(&line.to_code).ok();
            match self
                .store
                .record_event(
                    f.sent.message,
                    recipient.as_ref(),
                    kind,
                    &detail,
                    Timestamp::now(),
                )
                .await
            {
                Ok(()) => {
                    self.metrics.transport_report(outcome);
                    f.reported.insert(line.to_code);
                }
                // Looked at again later.
                Err(e) => {
                    tracing::warn!(message = %f.sent.message, error = %e, "a transport report could not be recorded");
                    pending = true;
                }
            }
        }
        pending
    }
}

/// Sleeps until `at`, or for ever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
