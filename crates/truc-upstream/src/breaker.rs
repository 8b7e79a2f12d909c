//! A circuit breaker for the national-axis link.
//!
//! Calls take a [`Permit`] and give it back with their verdict. After `threshold`
//! consecutive failures the circuit opens: calls are refused, without reaching the axis,
//! until a delay has passed. Then it is half-open: a few trial calls go through. The first
//! that succeeds closes the circuit; if every one of them fails, the circuit opens again for
//! twice as long (up to a maximum). Several trials rather than one, because an axis that
//! is up but fails one call in three must not be taken for one that is down: one unlucky
//! probe would double the wait, and a few in a row would stop the link for minutes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::UpstreamError;

/// Trial calls let through while half-open.
const TRIALS: u32 = 3;

/// The link's state, as shown by `/readyz` and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// The axis failed repeatedly: calls are refused until the next trial calls.
    Open,
    /// A few trial calls are allowed to test the axis.
    HalfOpen,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    /// Consecutive failures while closed.
    failures: u32,
    open_for: Duration,
    reopen_at: Option<Instant>,
    /// Trial calls of this half-open round: let through, and failed.
    trials_started: u32,
    trials_failed: u32,
    /// Counts the openings, so that a trial of an earlier round cannot sway this one.
    round: u64,
}

impl Inner {
    fn open(&mut self, now: Instant) {
        self.state = BreakerState::Open;
        self.round += 1;
        self.reopen_at = Some(now + self.open_for);
        self.trials_started = 0;
        self.trials_failed = 0;
    }
}

/// Opens after `threshold` consecutive failures; stays open for a delay that doubles after
/// each half-open round whose trial calls all failed (from `min_open` to `max_open`).
#[derive(Debug)]
pub struct CircuitBreaker {
    threshold: u32,
    min_open: Duration,
    max_open: Duration,
    inner: Mutex<Inner>,
}

/// Leave to make one call; give it back with [`Permit::success`] or [`Permit::failure`].
/// A permit dropped without a verdict (the call was cancelled) frees its trial slot, so a
/// cancelled trial can never leave the circuit refusing every call.
#[must_use = "a permit is given back with its call's verdict"]
#[derive(Debug)]
pub struct Permit {
    breaker: Arc<CircuitBreaker>,
    /// A trial call of a half-open round, rather than one let through while closed.
    trial: bool,
    round: u64,
    settled: bool,
    /// A trial whose call was answered and whose body is still coming: its slot in the
    /// round was given back (see [`Permit::answered`]).
    slot_freed: bool,
}

impl Permit {
    /// The call was answered and only its body is still coming (a download that may take
    /// minutes): a trial gives its slot back, so that the round's other calls are not
    /// refused for as long, while its verdict still counts when it comes.
    pub fn answered(&mut self) {
        if self.trial && !self.settled && !self.slot_freed {
            self.slot_freed = true;
            self.breaker.free_trial_slot(self.round);
        }
    }

    /// The call succeeded: the link is up.
    pub fn success(mut self) {
        self.settled = true;
        self.breaker.record_success();
    }

    /// The call failed for a reason of the link.
    pub fn failure(self) {
        self.failure_at(Instant::now());
    }

    fn failure_at(mut self, now: Instant) {
        self.settled = true;
        self.breaker
            .record_failure(self.trial.then_some(self.round), now);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.settled && self.trial && !self.slot_freed {
            self.breaker.free_trial_slot(self.round);
        }
    }
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(threshold: u32, min_open: Duration, max_open: Duration) -> Self {
        CircuitBreaker {
            threshold: threshold.max(1),
            min_open,
            max_open: max_open.max(min_open),
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                failures: 0,
                open_for: min_open,
                reopen_at: None,
                trials_started: 0,
                trials_failed: 0,
                round: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.state_at(Instant::now())
    }

    fn state_at(&self, now: Instant) -> BreakerState {
        let mut i = self.lock();
        if i.state == BreakerState::Open && i.reopen_at.is_some_and(|t| now >= t) {
            i.state = BreakerState::HalfOpen;
        }
        i.state
    }

    /// Leave to call the axis now, or `CircuitOpen` with how long until the next trials.
    pub fn admit(self: &Arc<Self>) -> Result<Permit, UpstreamError> {
        self.admit_at(Instant::now())
    }

    fn admit_at(self: &Arc<Self>, now: Instant) -> Result<Permit, UpstreamError> {
        let mut i = self.lock();
        let trial = match i.state {
            BreakerState::Closed => false,
            BreakerState::Open | BreakerState::HalfOpen => {
                let at = i.reopen_at.unwrap_or(now);
                if now < at {
                    return Err(UpstreamError::CircuitOpen(at - now));
                }
                if i.state == BreakerState::Open {
                    i.state = BreakerState::HalfOpen;
                }
                if i.trials_started >= TRIALS {
                    // The round's trials are under way: their outcome decides.
                    return Err(UpstreamError::CircuitOpen(Duration::ZERO));
                }
                i.trials_started += 1;
                true
            }
        };
        Ok(Permit {
            breaker: self.clone(),
            trial,
            round: i.round,
            settled: false,
            slot_freed: false,
        })
    }

    /// A trial call of `round` no longer holds a slot.
    fn free_trial_slot(&self, round: u64) {
        let mut i = self.lock();
        if i.state == BreakerState::HalfOpen && i.round == round {
            i.trials_started = i.trials_started.saturating_sub(1);
        }
    }

    fn record_success(&self) {
        let mut i = self.lock();
        if i.state != BreakerState::Closed {
            tracing::info!("national axis link is up again");
        }
        i.state = BreakerState::Closed;
        i.failures = 0;
        i.open_for = self.min_open;
        i.reopen_at = None;
        i.trials_started = 0;
        i.trials_failed = 0;
    }

    /// A failed call; `trial` is the round of a trial call.
    fn record_failure(&self, trial: Option<u64>, now: Instant) {
        let mut i = self.lock();
        match i.state {
            BreakerState::Closed => {
                i.failures += 1;
                if i.failures >= self.threshold {
                    tracing::warn!(
                        failures = i.failures,
                        open_for_secs = i.open_for.as_secs_f64(),
                        "national axis link is down: circuit open"
                    );
                    i.open(now);
                }
            }
            BreakerState::HalfOpen if trial == Some(i.round) => {
                i.trials_failed += 1;
                if i.trials_failed >= TRIALS {
                    i.open_for = (i.open_for * 2).min(self.max_open);
                    tracing::warn!(
                        open_for_secs = i.open_for.as_secs_f64(),
                        "national axis still failing: every trial call failed, circuit open again"
                    );
                    i.open(now);
                }
            }
            // A call let through before the circuit opened, failing late (or a trial of a
            // round already decided): the circuit already knows.
            BreakerState::HalfOpen | BreakerState::Open => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn breaker() -> Arc<CircuitBreaker> {
        Arc::new(CircuitBreaker::new(3, 100 * MS, 400 * MS))
    }

    /// Opens `b` at `t0` with three failures.
    fn open(b: &Arc<CircuitBreaker>, t0: Instant) {
        for _ in 0..3 {
            b.admit_at(t0).expect("closed").failure_at(t0);
        }
        assert_eq!(b.state_at(t0), BreakerState::Open);
    }

    fn refused_for(r: Result<Permit, UpstreamError>) -> Option<Duration> {
        match r {
            Err(UpstreamError::CircuitOpen(d)) => Some(d),
            _ => None,
        }
    }

    #[test]
    fn opens_after_the_threshold_and_refuses_until_the_delay_passed() {
        let (b, t0) = (breaker(), Instant::now());
        for _ in 0..2 {
            b.admit_at(t0).expect("closed").failure_at(t0);
        }
        assert_eq!(b.state_at(t0), BreakerState::Closed);
        b.admit_at(t0).expect("closed").failure_at(t0);
        assert_eq!(b.state_at(t0), BreakerState::Open);
        assert_eq!(refused_for(b.admit_at(t0 + 40 * MS)), Some(60 * MS));
        assert_eq!(b.state_at(t0 + 100 * MS), BreakerState::HalfOpen);
    }

    #[test]
    fn a_success_between_failures_keeps_it_closed() {
        let (b, t0) = (breaker(), Instant::now());
        for _ in 0..5 {
            b.admit_at(t0).expect("closed").failure_at(t0);
            b.admit_at(t0).expect("closed").failure_at(t0);
            b.admit_at(t0).expect("closed").success();
        }
        assert_eq!(b.state_at(t0), BreakerState::Closed);
    }

    #[test]
    fn one_successful_trial_closes_it() {
        let (b, t0) = (breaker(), Instant::now());
        open(&b, t0);
        let t = t0 + 100 * MS;
        let trials: Vec<Permit> = (0..TRIALS).map(|_| b.admit_at(t).expect("trial")).collect();
        assert_eq!(
            refused_for(b.admit_at(t)),
            Some(Duration::ZERO),
            "no more than the round's trials"
        );
        let mut trials = trials.into_iter();
        trials.next().expect("trial").failure_at(t);
        trials.next().expect("trial").failure_at(t);
        assert_eq!(b.state_at(t), BreakerState::HalfOpen, "one trial still out");
        trials.next().expect("trial").success();
        assert_eq!(b.state_at(t), BreakerState::Closed);
        assert!(b.admit_at(t).is_ok());
    }

    #[test]
    fn an_answered_trial_whose_body_is_still_coming_gives_its_slot_back() {
        let (b, t0) = (breaker(), Instant::now());
        open(&b, t0);
        let t = t0 + 100 * MS;
        let mut download = b.admit_at(t).expect("trial");
        let others: Vec<Permit> = (1..TRIALS).map(|_| b.admit_at(t).expect("trial")).collect();
        assert_eq!(refused_for(b.admit_at(t)), Some(Duration::ZERO));
        // Its headers came: the round may start another trial while the body comes.
        download.answered();
        download.answered();
        let another = b.admit_at(t).expect("a slot was given back, once");
        assert_eq!(refused_for(b.admit_at(t)), Some(Duration::ZERO));
        for p in others {
            p.failure_at(t);
        }
        assert_eq!(b.state_at(t), BreakerState::HalfOpen);
        // Its verdict still counts: the third failed trial of the round reopens it.
        download.failure_at(t);
        assert_eq!(b.state_at(t), BreakerState::Open);
        drop(another);
        assert_eq!(
            refused_for(b.admit_at(t)),
            Some(200 * MS),
            "a late permit of a decided round changes nothing"
        );
    }

    #[test]
    fn a_round_of_failed_trials_reopens_it_for_twice_as_long_up_to_the_maximum() {
        let (b, t0) = (breaker(), Instant::now());
        open(&b, t0);
        let mut t = t0;
        for expected in [200, 400, 400] {
            t += b.lock().open_for;
            for _ in 0..TRIALS {
                b.admit_at(t).expect("trial").failure_at(t);
            }
            assert_eq!(b.state_at(t), BreakerState::Open);
            assert_eq!(refused_for(b.admit_at(t)), Some(expected * MS));
        }
        // After a success, the next opening starts from the minimum again.
        t += 400 * MS;
        b.admit_at(t).expect("trial").success();
        open(&b, t);
        assert_eq!(refused_for(b.admit_at(t)), Some(100 * MS));
    }

    #[test]
    fn a_cancelled_trial_frees_its_place() {
        let (b, t0) = (breaker(), Instant::now());
        open(&b, t0);
        let t = t0 + 100 * MS;
        for _ in 0..10 * TRIALS {
            // Each trial is dropped without a verdict, as when its call is cancelled.
            drop(
                b.admit_at(t)
                    .expect("the place of a cancelled trial is free again"),
            );
        }
        assert_eq!(b.state_at(t), BreakerState::HalfOpen);
    }

    #[test]
    fn late_failures_of_calls_let_through_earlier_neither_extend_nor_decide() {
        let (b, t0) = (breaker(), Instant::now());
        // Calls let through while closed, still out when the circuit opens.
        let late: Vec<Permit> = (0..5).map(|_| b.admit_at(t0).expect("closed")).collect();
        open(&b, t0);
        let mut late = late.into_iter();
        late.next().expect("late").failure_at(t0 + 90 * MS);
        assert_eq!(
            refused_for(b.admit_at(t0 + 90 * MS)),
            Some(10 * MS),
            "the opening is not pushed back"
        );
        let t = t0 + 100 * MS;
        let trial = b.admit_at(t).expect("trial");
        for permit in late {
            permit.failure_at(t);
        }
        assert_eq!(b.state_at(t), BreakerState::HalfOpen, "only trials decide");
        trial.success();
        assert_eq!(b.state_at(t), BreakerState::Closed);
    }

    #[test]
    fn a_trial_of_an_earlier_round_does_not_sway_the_next() {
        let (b, t0) = (breaker(), Instant::now());
        let late = b.admit_at(t0).expect("closed");
        open(&b, t0);
        let t1 = t0 + 100 * MS;
        let stale: Vec<Permit> = (0..TRIALS)
            .map(|_| b.admit_at(t1).expect("trial"))
            .collect();
        // The round ends without them (a call let through earlier succeeded), and the
        // circuit opens again: a new round.
        late.success();
        open(&b, t1);
        let t2 = t1 + 100 * MS;
        let fresh = b.admit_at(t2).expect("trial of the new round");
        for permit in stale {
            permit.failure_at(t2);
        }
        assert_eq!(
            b.state_at(t2),
            BreakerState::HalfOpen,
            "the old trials do not count"
        );
        fresh.success();
        assert_eq!(b.state_at(t2), BreakerState::Closed);
    }
}
