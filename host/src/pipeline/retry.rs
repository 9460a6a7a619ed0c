//! Exponential backoff with jitter for retryable failures.

use crate::config::RetryConfig;
use std::time::Duration;

/// Delays between attempts: doubling from `initial_ms` up to `max_ms`, each
/// drawn from the upper half of its range ("equal jitter"), so delays keep
/// growing while retries of many keys spread out instead of arriving
/// together.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    max_attempts: u32,
    attempts: u32,
}

impl Backoff {
    /// A backoff for a failure that just happened (attempt 1 failed).
    pub fn new(config: &RetryConfig) -> Backoff {
        Backoff {
            initial: Duration::from_millis(config.initial_ms),
            max: Duration::from_millis(config.max_ms),
            max_attempts: config.max_attempts,
            attempts: 1,
        }
    }

    /// Attempts made so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// How long to wait before the next attempt, or `None` when the
    /// configured attempts are used up.
    pub fn next_delay(&mut self) -> Option<Duration> {
        if self.max_attempts != 0 && self.attempts >= self.max_attempts {
            return None;
        }
        let doublings = (self.attempts - 1).min(31);
        let ceiling = self
            .initial
            .saturating_mul(1 << doublings)
            .min(self.max)
            .max(Duration::from_millis(1));
        self.attempts += 1;
        let half = ceiling / 2;
        let jitter = half.mul_f64(fastrand::f64());
        Some(ceiling - half + jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(initial_ms: u64, max_ms: u64, max_attempts: u32) -> RetryConfig {
        RetryConfig {
            initial_ms,
            max_ms,
            max_attempts,
        }
    }

    #[test]
    fn delays_double_up_to_the_cap_with_jitter() {
        let mut backoff = Backoff::new(&config(100, 1000, 0));
        let ceilings = [100, 200, 400, 800, 1000, 1000];
        for ceiling in ceilings {
            let delay = backoff.next_delay().unwrap().as_millis() as u64;
            assert!(
                (ceiling / 2..=ceiling).contains(&delay),
                "{delay} not within [{}, {ceiling}]",
                ceiling / 2
            );
        }
        assert_eq!(backoff.attempts(), 7);
    }

    #[test]
    fn stops_after_max_attempts() {
        let mut backoff = Backoff::new(&config(1, 10, 3));
        assert!(backoff.next_delay().is_some());
        assert!(backoff.next_delay().is_some());
        assert_eq!(backoff.next_delay(), None);
        assert_eq!(backoff.attempts(), 3);
    }
}
