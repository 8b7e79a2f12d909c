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
//! report of after a few looks is left. What it follows is kept in the store's settings
//! (namespace `axis-transport-reports`) while it is followed, so a restart resumes it: the
//! outcomes already in a message's timeline are not recorded twice. More documents in
//! flight than a bound leaves some unfollowed (counted); following never delays a send.

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
/// Packages handed over at once that are written to the store together (one flush).
const MOST_WRITTEN_AT_ONCE: usize = 256;
/// The settings namespace holding the packages followed: `<message id>/<docId>` → the
/// time of the send (milliseconds since the epoch, in decimal).
const NAMESPACE: &str = "axis-transport-reports";

/// A package sent to the national axis, to follow.
#[derive(Debug)]
struct Sent {
    message: MessageId,
    doc_id: String,
    at: Timestamp,
}

impl Sent {
    /// Its key in [`NAMESPACE`].
    fn key(&self) -> String {
        format!("{}/{}", self.message, self.doc_id)
    }

    /// Reads back what [`key`](Self::key) and the send time wrote.
    fn from_setting(key: &str, value: &[u8]) -> Option<Sent> {
        let (message, doc_id) = key.split_once('/')?;
        let at = std::str::from_utf8(value).ok()?.parse().ok()?;
        Some(Sent {
            message: message.parse().ok()?,
            doc_id: doc_id.to_owned(),
            at: Timestamp(at),
        })
    }
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
        let sent = Sent {
            message,
            doc_id,
            at: Timestamp::now(),
        };
        if self.sent.try_send(sent).is_err() {
            self.metrics.transport_report("unfollowed");
        }
    }
}

/// One package being followed.
#[derive(Debug)]
struct Followed {
    sent: Sent,
    /// Recipients whose outcome is recorded already (see [`recipient_key`]); for a package
    /// followed again after a restart, read from its timeline at its first look.
    reported: Option<HashSet<String>>,
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
    /// Follows the packages a previous run left unfinished, then every package handed to
    /// it, until the outbound worker's handles are gone.
    pub async fn run(mut self) {
        self.resume().await;
        loop {
            let next = self.due.peek().map(|Reverse((at, _))| *at);
            tokio::select! {
                sent = self.received.recv() => match sent {
                    Some(sent) => {
                        let mut batch = vec![sent];
                        while batch.len() < MOST_WRITTEN_AT_ONCE {
                            match self.received.try_recv() {
                                Ok(sent) => batch.push(sent),
                                Err(_) => break,
                            }
                        }
                        self.add_all(batch).await;
                    }
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

    /// Follows again what the store says was followed when the relay stopped (the outcomes
    /// their timelines have already are read at each one's first look); forgets what is
    /// past its day.
    async fn resume(&mut self) {
        let kept = match self.store.settings(NAMESPACE).await {
            Ok(kept) => kept,
            Err(e) => {
                tracing::warn!(error = %e, "the transport reports followed before the restart cannot be read; they are not followed");
                return;
            }
        };
        let now = Timestamp::now();
        let mut resumed = 0;
        for (key, value) in kept {
            let sent = Sent::from_setting(&key, &value)
                .filter(|s| now.since(s.at) < FOLLOWED_FOR && self.followed.len() < MOST_FOLLOWED);
            let Some(sent) = sent else {
                self.forget(&key);
                continue;
            };
            let left = FOLLOWED_FOR.saturating_sub(now.since(sent.at));
            self.follow_now(sent, None, left);
            resumed += 1;
        }
        self.metrics.transport_reports_followed(self.followed.len());
        if resumed > 0 {
            tracing::info!(
                resumed,
                "following again the transport reports of packages sent before the restart"
            );
        }
    }

    /// Writes the packages handed over to the store (one flush for all), then follows
    /// them; one that cannot be written is followed all the same, until a restart.
    async fn add_all(&mut self, batch: Vec<Sent>) {
        let room = MOST_FOLLOWED.saturating_sub(self.followed.len());
        let (batch, over) = if batch.len() > room {
            let mut batch = batch;
            let over = batch.split_off(room);
            (batch, over.len())
        } else {
            (batch, 0)
        };
        for _ in 0..over {
            self.metrics.transport_report("unfollowed");
        }
        // Written side by side: the store's group commit makes them durable together.
        let mut writes = tokio::task::JoinSet::new();
        for sent in &batch {
            let (store, key, value) = (self.store.clone(), sent.key(), sent.at.0.to_string());
            writes.spawn(async move { store.put_setting(NAMESPACE, &key, value.as_bytes()).await });
        }
        while let Some(written) = writes.join_next().await {
            match written {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "a followed package could not be written down; a restart will not follow it");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "writing down a followed package failed; a restart will not follow it");
                }
            }
        }
        for sent in batch {
            self.follow_now(sent, Some(HashSet::new()), FOLLOWED_FOR);
        }
        self.metrics.transport_reports_followed(self.followed.len());
    }

    fn follow_now(&mut self, sent: Sent, reported: Option<HashSet<String>>, left: Duration) {
        let now = Instant::now();
        let seq = self.next_seq;
        self.next_seq += 1;
        self.followed.insert(
            seq,
            Followed {
                sent,
                reported,
                empty_looks: 0,
                wait: FIRST_LOOK,
                until: now + left,
            },
        );
        self.due.push(Reverse((now + FIRST_LOOK, seq)));
    }

    /// Stops keeping a package in the store: it is no longer followed. Not waited for (a
    /// restart that finds it anyway looks at it once more, and records nothing twice).
    fn forget(&self, key: &str) {
        let (store, key) = (self.store.clone(), key.to_owned());
        tokio::spawn(async move {
            if let Err(e) = store.delete_setting(NAMESPACE, &key).await {
                tracing::warn!(key, error = %e, "a package no longer followed could not be removed from the store; a restart may look at it again");
            }
        });
    }

    /// The recipients whose outcome `message`'s timeline has already.
    async fn recorded(&self, message: MessageId) -> Option<HashSet<String>> {
        match self.store.events(message).await {
            Ok(events) => Some(
                events
                    .iter()
                    .filter(|e| matches!(e.kind, EventKind::AxisReceived | EventKind::AxisRefused))
                    .filter_map(recorded_recipient)
                    .collect(),
            ),
            Err(e) => {
                tracing::warn!(%message, error = %e, "a followed package's timeline cannot be read; looked at again later");
                None
            }
        }
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
        if f.reported.is_none() {
            f.reported = self.recorded(f.sent.message).await;
        }
        let pending = if !link_up || f.reported.is_none() {
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
        } else {
            self.forget(&f.sent.key());
            self.metrics.transport_reports_followed(self.followed.len());
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
            let recipient = OrgCode::parse(&line.to_code).ok();
            let key = recipient_key(recipient.as_ref(), &line.to_code);
            if f.reported.as_ref().is_some_and(|r| r.contains(&key)) {
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
                    f.reported.get_or_insert_with(HashSet::new).insert(key);
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

/// The recipient an outcome event was recorded for, as [`recipient_key`] gives it: its code,
/// or, for a recipient the axis named with no valid code (the event has none), the axis's
/// text the detail starts with.
fn recorded_recipient(event: &truc_store::Event) -> Option<String> {
    match &event.recipient {
        Some(r) => Some(r.to_string()),
        None => event
            .detail
            .split_once(SYSTEM_SUFFIX)
            .map(|(to_code, _)| to_code.trim().to_owned()),
    }
}

/// What follows the recipient's text in an outcome's detail.
const SYSTEM_SUFFIX: &str = "'s system ";

/// How a recipient is known in [`Followed::reported`]: its code as the timeline writes it
/// (so that what a restart reads back matches), or the axis's text if it is not a code.
fn recipient_key(recipient: Option<&OrgCode>, to_code: &str) -> String {
    recipient.map_or_else(|| to_code.trim().to_owned(), |r| r.to_string())
}

/// Sleeps until `at`, or for ever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recipient_is_known_by_its_code_as_the_timeline_writes_it() {
        // The axis's text may carry spaces; the timeline's event holds the parsed code,
        // which a restart reads back: both must give the same key.
        let raw = " 000.01.07.G12 ";
        let parsed = OrgCode::parse(raw).ok();
        let from_event = parsed.as_ref().map(|c| c.to_string());
        assert_eq!(
            Some(recipient_key(parsed.as_ref(), raw)),
            from_event,
            "the key of an outcome and of its event read back"
        );
        assert_eq!(recipient_key(None, " not a code "), "not a code");
    }

    #[test]
    fn an_outcome_for_a_recipient_without_a_valid_code_is_read_back_from_its_detail() {
        let to_code = " not a code ";
        let event = truc_store::Event {
            at: Timestamp(1),
            message_id: "01KC0000000000000000000000".parse().expect("an id"),
            recipient: OrgCode::parse(to_code).ok(),
            kind: EventKind::AxisReceived,
            detail: format!("{to_code}'s system took it from the national axis"),
        };
        assert!(event.recipient.is_none(), "premise: not a code");
        assert_eq!(
            recorded_recipient(&event),
            Some(recipient_key(None, to_code)),
            "the restart knows it was recorded"
        );
        let with_code = truc_store::Event {
            recipient: OrgCode::parse("000.01.07.G12").ok(),
            detail: "000.01.07.G12's system took it from the national axis".into(),
            ..event
        };
        assert_eq!(recorded_recipient(&with_code), Some("000.01.07.G12".into()));
    }

    #[test]
    fn a_followed_package_is_written_down_and_read_back() {
        let sent = Sent {
            message: "01KC0000000000000000000000".parse().expect("an id"),
            doc_id: "65a1b2c3d4e5f60718293a4b".into(),
            at: Timestamp(1_800_000_000_123),
        };
        let back =
            Sent::from_setting(&sent.key(), sent.at.0.to_string().as_bytes()).expect("read back");
        assert_eq!(
            (back.message, back.doc_id.as_str(), back.at),
            (sent.message, sent.doc_id.as_str(), sent.at)
        );
        assert!(Sent::from_setting("no-slash", b"1").is_none());
        assert!(Sent::from_setting(&sent.key(), b"not a time").is_none());
    }
}
