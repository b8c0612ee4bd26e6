//! Exponential backoff with jitter, for reconnecting and for retrying messages.
//!
//! Jitter matters more than the curve: after a broker restart every service and every
//! retried message would otherwise come back in the same instant and knock it over again.

use std::time::Duration;

use rand::Rng as _;

/// Delays `base · 2ⁿ` capped at `max`, each drawn from the upper part of its step
/// (`[¾·d, d]`), so retries spread out but never come sooner than three quarters of the
/// nominal delay.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    /// Starts at `base`, never waits longer than `max`.
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max: max.max(base),
            attempt: 0,
        }
    }

    /// The nominal (unjittered) delay before retry number `attempt` (1-based).
    pub fn nominal(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.base.saturating_mul(factor).min(self.max)
    }

    /// The next delay, jittered; each call doubles the nominal delay up to the cap.
    pub fn next_delay(&mut self) -> Duration {
        self.attempt = self.attempt.saturating_add(1);
        jitter(self.nominal(self.attempt))
    }

    /// Starts over (after a success).
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// Every distinct nominal delay this backoff can produce, shortest first: the levels a
    /// set of delay queues must cover.
    pub fn levels(&self) -> Vec<Duration> {
        let mut levels = Vec::new();
        for attempt in 1.. {
            let delay = self.nominal(attempt);
            if levels.last() == Some(&delay) {
                break;
            }
            levels.push(delay);
        }
        levels
    }
}

/// A delay drawn uniformly from `[¾·d, d]`.
pub fn jitter(nominal: Duration) -> Duration {
    let low = nominal.mul_f64(0.75);
    if nominal <= low {
        return nominal;
    }
    rand::rng().random_range(low..=nominal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_stay_within_the_jitter_band() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let expected = [100, 200, 400, 800, 1000, 1000];
        for nominal in expected {
            let delay = backoff.next_delay();
            let nominal = Duration::from_millis(nominal);
            assert!(
                delay <= nominal && delay >= nominal.mul_f64(0.75),
                "{delay:?}"
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }

    #[test]
    fn levels_list_each_distinct_delay_once() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        let levels: Vec<u64> = backoff.levels().iter().map(|d| d.as_secs()).collect();
        assert_eq!(levels, [1, 2, 4, 8, 16, 32, 60]);
        let flat = Backoff::new(Duration::from_secs(5), Duration::from_secs(1));
        assert_eq!(flat.levels(), [Duration::from_secs(5)]);
    }

    #[test]
    fn huge_attempt_numbers_saturate_instead_of_overflowing() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        assert_eq!(backoff.nominal(u32::MAX), Duration::from_secs(30));
    }
}
