//! A circuit breaker for the national-axis link.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::UpstreamError;

/// The link's state, as shown by `/readyz` and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls go through.
    Closed,
    /// The axis failed repeatedly: calls are refused until the next probe.
    Open,
    /// One probe call is allowed to test the axis.
    HalfOpen,
}

#[derive(Debug)]
struct Inner {
    state: BreakerState,
    failures: u32,
    open_for: Duration,
    reopen_at: Option<Instant>,
    probing: bool,
}

/// Opens after `threshold` consecutive failures; stays open for a delay that doubles after
/// each failed probe (from `min_open` to `max_open`); then lets one probe through.
#[derive(Debug)]
pub struct CircuitBreaker {
    threshold: u32,
    min_open: Duration,
    max_open: Duration,
    inner: Mutex<Inner>,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(threshold: u32, min_open: Duration, max_open: Duration) -> Self {
        CircuitBreaker {
            threshold: threshold.max(1),
            min_open,
            max_open,
            inner: Mutex::new(Inner {
                state: BreakerState::Closed,
                failures: 0,
                open_for: min_open,
                reopen_at: None,
                probing: false,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        let mut i = self.lock();
        if i.state == BreakerState::Open && i.reopen_at.is_some_and(|t| Instant::now() >= t) {
            i.state = BreakerState::HalfOpen;
        }
        i.state
    }

    /// Whether a call may go out now.
    pub fn admit(&self) -> Result<(), UpstreamError> {
        let mut i = self.lock();
        let now = Instant::now();
        match i.state {
            BreakerState::Closed => Ok(()),
            BreakerState::Open | BreakerState::HalfOpen => {
                let at = i.reopen_at.unwrap_or(now);
                if now < at {
                    return Err(UpstreamError::CircuitOpen(at - now));
                }
                if i.probing {
                    return Err(UpstreamError::CircuitOpen(Duration::ZERO));
                }
                i.state = BreakerState::HalfOpen;
                i.probing = true;
                Ok(())
            }
        }
    }

    /// The call succeeded: the link is up.
    pub fn success(&self) {
        let mut i = self.lock();
        if i.state != BreakerState::Closed {
            tracing::info!("national axis link is up again");
        }
        i.state = BreakerState::Closed;
        i.failures = 0;
        i.open_for = self.min_open;
        i.reopen_at = None;
        i.probing = false;
    }

    /// The call failed for a reason of the link.
    pub fn failure(&self) {
        let mut i = self.lock();
        i.failures += 1;
        let probe_failed = i.state == BreakerState::HalfOpen;
        if probe_failed || i.failures >= self.threshold {
            if probe_failed {
                i.open_for = (i.open_for * 2).min(self.max_open);
            }
            if i.state == BreakerState::Closed {
                tracing::warn!(
                    failures = i.failures,
                    "national axis link is down: circuit open"
                );
            }
            i.state = BreakerState::Open;
            i.reopen_at = Some(Instant::now() + i.open_for);
            i.probing = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_probes_and_closes_on_success() {
        let b = CircuitBreaker::new(3, Duration::from_millis(20), Duration::from_millis(80));
        for _ in 0..2 {
            assert!(b.admit().is_ok());
            b.failure();
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert!(matches!(b.admit(), Err(UpstreamError::CircuitOpen(_))));
        std::thread::sleep(Duration::from_millis(30));
        assert!(b.admit().is_ok(), "one probe");
        assert!(b.admit().is_err(), "only one probe at a time");
        b.failure();
        assert_eq!(b.state(), BreakerState::Open);
        std::thread::sleep(Duration::from_millis(25));
        assert!(
            b.admit().is_err(),
            "the delay doubled after the failed probe"
        );
        std::thread::sleep(Duration::from_millis(30));
        assert!(b.admit().is_ok());
        b.success();
        assert_eq!(b.state(), BreakerState::Closed);
    }
}
