//! When to try a failed delivery again, and when to give up.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Exponential backoff with full jitter, bounded by an age.
///
/// The national axis can be down for hours and an adapter's server for a weekend, so the
/// defaults keep trying for three days, at most every 30 minutes once the backoff has grown.
/// Full jitter (a random delay between zero and the exponential bound) spreads retries of
/// many deliveries that failed together, so a recovering axis is not hit by a wave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Bound of the first delay (default 2 s).
    #[serde(with = "millis")]
    pub base: Duration,
    /// Largest bound (default 30 min).
    #[serde(with = "millis")]
    pub cap: Duration,
    /// Give up (dead-letter) once a delivery has been queued this long (default 72 h).
    #[serde(with = "millis")]
    pub max_age: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            base: Duration::from_secs(2),
            cap: Duration::from_secs(30 * 60),
            max_age: Duration::from_secs(72 * 3600),
        }
    }
}

impl RetryPolicy {
    /// The upper bound of the delay after `attempts` failed attempts.
    pub fn bound(&self, attempts: u32) -> Duration {
        let factor = 1u64 << attempts.saturating_sub(1).min(30);
        let ms = (self.base.as_millis() as u64).saturating_mul(factor);
        Duration::from_millis(ms).min(self.cap)
    }

    /// A random delay in `[0, bound(attempts)]` (full jitter), at least 1 ms.
    pub fn delay(&self, attempts: u32) -> Duration {
        let bound = self.bound(attempts).as_millis() as u64;
        Duration::from_millis(fastrand::u64(0..=bound).max(1))
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_grow_exponentially_to_the_cap() {
        let p = RetryPolicy {
            base: Duration::from_secs(1),
            cap: Duration::from_secs(60),
            max_age: Duration::from_secs(3600),
        };
        assert_eq!(p.bound(1), Duration::from_secs(1));
        assert_eq!(p.bound(2), Duration::from_secs(2));
        assert_eq!(p.bound(5), Duration::from_secs(16));
        assert_eq!(p.bound(7), Duration::from_secs(60));
        assert_eq!(p.bound(u32::MAX), Duration::from_secs(60));
        for attempts in 1..20 {
            let d = p.delay(attempts);
            assert!(d <= p.bound(attempts) && d >= Duration::from_millis(1));
        }
    }

    #[test]
    fn jitter_spreads_delays() {
        let p = RetryPolicy::default();
        let delays: std::collections::BTreeSet<_> = (0..50).map(|_| p.delay(10)).collect();
        assert!(
            delays.len() > 40,
            "full jitter should rarely repeat: {}",
            delays.len()
        );
    }
}
