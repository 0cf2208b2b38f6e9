//! The one backoff type for everything that reconnects or retries: MQTT clients, platform
//! sockets and failed sends. Exponential from `min` to `max`, with proportional jitter so that
//! many accounts reconnecting at once do not hit a peer in lockstep.

use std::time::Duration;

use rand::Rng;

/// Why a backoff could not be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidBackoff {
    /// `max` was below `min`.
    #[error("maximum backoff must not be less than the minimum")]
    MaxBelowMin,
    /// `min` was zero, which would retry in a tight loop.
    #[error("minimum backoff must be above zero")]
    ZeroMin,
    /// Jitter outside `0.0..=1.0`.
    #[error("jitter must be between 0 and 1")]
    BadJitter,
}

/// Exponential backoff with jitter. `next()` yields the delay before the next attempt;
/// `reset()` after a connection has been healthy.
#[derive(Debug, Clone)]
pub struct Backoff {
    /// First delay, and the delay after a reset.
    min: Duration,
    /// Ceiling for the delay, so a long outage is still retried at a sane rate.
    max: Duration,
    /// Fraction of each delay that is randomised (0.0 = none).
    jitter: f64,
    /// Attempts since the last reset; the exponent.
    attempt: u32,
}

impl Backoff {
    /// Builds a backoff, checking that it cannot spin.
    ///
    /// # Errors
    /// [`InvalidBackoff`] when `min` is zero, `max < min` or `jitter` is outside `0..=1`.
    pub fn try_new(min: Duration, max: Duration, jitter: f64) -> Result<Backoff, InvalidBackoff> {
        if min.is_zero() {
            return Err(InvalidBackoff::ZeroMin);
        }
        if max < min {
            return Err(InvalidBackoff::MaxBelowMin);
        }
        if !(0.0..=1.0).contains(&jitter) {
            return Err(InvalidBackoff::BadJitter);
        }
        Ok(Backoff {
            min,
            max,
            jitter,
            attempt: 0,
        })
    }

    /// The default for reconnecting sockets: 500 ms doubling to 30 s, 20 % jitter.
    pub fn reconnect() -> Backoff {
        Backoff {
            min: Duration::from_millis(500),
            max: Duration::from_secs(30),
            jitter: 0.2,
            attempt: 0,
        }
    }

    /// The slow schedule for refusals that a retry will not fix soon (bad credentials):
    /// 30 s doubling to 10 min.
    pub fn slow() -> Backoff {
        Backoff {
            min: Duration::from_secs(30),
            max: Duration::from_secs(600),
            jitter: 0.2,
            attempt: 0,
        }
    }

    /// The delay before the next attempt, without jitter (for tests and logs).
    pub fn peek_base(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(20));
        self.min.saturating_mul(factor).min(self.max)
    }

    /// Attempts since the last reset.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Starts over from `min`, after a connection proved healthy.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let base = self.peek_base();
        self.attempt = self.attempt.saturating_add(1);
        if self.jitter == 0.0 {
            return Some(base);
        }
        // Jitter is taken off the delay, never added, so `max` stays a true ceiling.
        let cut = rand::rng().random_range(0.0..=self.jitter);
        Some(base.mul_f64(1.0 - cut).max(Duration::from_millis(1)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_doubles_to_the_ceiling_and_resets() {
        let mut backoff =
            Backoff::try_new(Duration::from_millis(500), Duration::from_secs(4), 0.0).expect("ok");
        let seen: Vec<u64> = (0..6)
            .map(|_| backoff.next().expect("endless").as_millis() as u64)
            .collect();
        assert_eq!(seen, vec![500, 1000, 2000, 4000, 4000, 4000]);
        backoff.reset();
        assert_eq!(backoff.next(), Some(Duration::from_millis(500)));
    }

    #[test]
    fn jitter_stays_within_bounds() {
        let mut backoff =
            Backoff::try_new(Duration::from_secs(1), Duration::from_secs(1), 0.5).expect("ok");
        for _ in 0..100 {
            let delay = backoff.next().expect("endless");
            assert!(delay >= Duration::from_millis(500) && delay <= Duration::from_secs(1));
        }
    }

    #[test]
    fn invalid_settings_are_refused() {
        let s = Duration::from_secs(1);
        assert_eq!(
            Backoff::try_new(Duration::ZERO, s, 0.1).unwrap_err(),
            InvalidBackoff::ZeroMin
        );
        assert_eq!(
            Backoff::try_new(s * 2, s, 0.1).unwrap_err(),
            InvalidBackoff::MaxBelowMin
        );
        assert_eq!(
            Backoff::try_new(s, s, 1.5).unwrap_err(),
            InvalidBackoff::BadJitter
        );
    }
}
