//! Egress pacing: how fast one destination group, and one bot account, may send.
//!
//! Platforms count their quotas in rolling windows ("20 in any minute"), so a rate `N/W` must
//! never be exceeded in any window of length `W`, bursts included. A token bucket alone does
//! not guarantee that (its burst sits on top of the rate), so a [`Pacer`] combines two
//! limits and a send must pass both:
//!
//! - governor's GCRA with one cell every `W/N` and the configured burst: sends are spread out
//!   and at most `burst` go back to back;
//! - a sliding-window log: at most `max(N, burst)` sends in any window of
//!   `W × max(1, burst/N)` (for `N ≥ burst` that is exactly "at most N in any W").
//!
//! Time is tokio's, so tests run under paused time. The limits themselves ([`Limit`], the
//! rate syntax) are plain data in [`crate::policy`].

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::Instant;

use crate::policy::Limit;

/// governor clock on tokio's (pausable) time.
#[derive(Debug, Clone)]
struct TokioClock {
    /// Time zero of this clock.
    origin: Instant,
}

impl Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(self.origin)
    }
}

/// The GCRA limiter type.
type Gcra = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>;

/// Paces one destination or account.
pub struct Pacer {
    /// The limit it enforces.
    limit: Limit,
    /// Smoothness and burst.
    gcra: Gcra,
    /// A GCRA cell taken but not used (another limit said wait): used before taking a new
    /// one, so waiting on one limit never wastes the other's capacity.
    prepaid: bool,
    /// The rolling-window cap: sends allowed per `window`.
    cap: usize,
    /// The rolling window.
    window: Duration,
    /// When the last `cap` sends went out.
    sent: VecDeque<Instant>,
    /// The GCRA clock.
    clock: TokioClock,
}

impl std::fmt::Debug for Pacer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pacer").field("limit", &self.limit).finish()
    }
}

impl Pacer {
    /// A pacer for a limit.
    pub fn new(limit: Limit) -> Pacer {
        let count = limit.rate.count.max(1);
        let burst = limit.burst.max(1);
        let period = (limit.rate.per / count).max(Duration::from_nanos(1));
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN));
        let clock = TokioClock {
            origin: Instant::now(),
        };
        let cap = count.max(burst);
        let window = limit.rate.per.mul_f64(f64::from(cap) / f64::from(count));
        Pacer {
            limit,
            gcra: RateLimiter::direct_with_clock(quota, clock.clone()),
            prepaid: false,
            cap: cap as usize,
            window,
            sent: VecDeque::new(),
            clock,
        }
    }

    /// The limit enforced.
    pub fn limit(&self) -> Limit {
        self.limit
    }

    /// How long until the rolling window has room (zero: now). Uses up nothing.
    pub fn window_wait(&mut self) -> Duration {
        let now = Instant::now();
        while self
            .sent
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) >= self.window)
        {
            self.sent.pop_front();
        }
        if self.sent.len() < self.cap {
            return Duration::ZERO;
        }
        self.sent
            .front()
            .map(|oldest| (*oldest + self.window).saturating_duration_since(now))
            .unwrap_or_default()
    }

    /// Takes a GCRA cell, or says how long until one is free.
    ///
    /// # Errors
    /// The wait, when no cell is free now.
    pub fn take_cell(&mut self) -> Result<(), Duration> {
        if std::mem::take(&mut self.prepaid) {
            return Ok(());
        }
        self.gcra.check().map_err(|not_until| {
            not_until
                .wait_time_from(self.clock.now())
                .max(Duration::from_millis(1))
        })
    }

    /// Gives back a cell taken with [`Pacer::take_cell`] that was not used.
    pub fn refund_cell(&mut self) {
        self.prepaid = true;
    }

    /// Records a send in the rolling window.
    pub fn record(&mut self) {
        self.sent.push_back(Instant::now());
        while self.sent.len() > self.cap {
            self.sent.pop_front();
        }
    }
}

/// The account pacer, recovering from a poisoned lock.
fn lock(pacer: &std::sync::Mutex<Pacer>) -> std::sync::MutexGuard<'_, Pacer> {
    pacer
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Waits until both the destination's and the account's limits allow a send, and records
/// it in both. `None` limits are not enforced. Returns true when it had to wait.
pub async fn acquire(group: Option<&mut Pacer>, account: Option<&std::sync::Mutex<Pacer>>) -> bool {
    let mut group = group;
    let mut waited = false;
    loop {
        let mut wait = group.as_mut().map_or(Duration::ZERO, |g| g.window_wait());
        if let Some(account) = account {
            wait = wait.max(lock(account).window_wait());
        }
        if wait.is_zero() {
            let group_cell = match group.as_mut() {
                Some(g) => g.take_cell(),
                None => Ok(()),
            };
            match group_cell {
                Err(until) => wait = until,
                Ok(()) => {
                    let account_cell = match account {
                        Some(account) => {
                            let mut account = lock(account);
                            let window = account.window_wait();
                            if window.is_zero() {
                                account.take_cell().map(|()| account.record())
                            } else {
                                Err(window)
                            }
                        }
                        None => Ok(()),
                    };
                    match account_cell {
                        Ok(()) => {
                            if let Some(g) = group.as_mut() {
                                g.record();
                            }
                            return waited;
                        }
                        Err(until) => {
                            if let Some(g) = group.as_mut() {
                                g.refund_cell();
                            }
                            wait = until;
                        }
                    }
                }
            }
        }
        waited = true;
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Rate;

    /// Send times of `n` sends paced by a limit, under paused time.
    async fn send_times(limit: Limit, n: usize) -> Vec<Duration> {
        let start = Instant::now();
        let mut pacer = Pacer::new(limit);
        let mut times = Vec::new();
        for _ in 0..n {
            acquire(Some(&mut pacer), None).await;
            times.push(Instant::now() - start);
        }
        times
    }

    /// The most sends in any window of `window` length.
    fn most_in_any_window(times: &[Duration], window: Duration) -> usize {
        times
            .iter()
            .map(|start| {
                times
                    .iter()
                    .filter(|t| **t >= *start && **t < *start + window)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    #[tokio::test(start_paused = true)]
    async fn bursts_never_exceed_the_rate_in_any_rolling_window() {
        let minute = Duration::from_secs(60);
        let limit = Limit {
            rate: Rate {
                count: 20,
                per: minute,
            },
            burst: 20,
        };
        let times = send_times(limit, 60).await;
        assert_eq!(most_in_any_window(&times, minute), 20);
        assert!(
            times[19] < Duration::from_secs(1),
            "the burst goes at once: {:?}",
            times[19]
        );

        let qq = Limit {
            rate: Rate {
                count: 1,
                per: Duration::from_millis(1500),
            },
            burst: 3,
        };
        let times = send_times(qq, 12).await;
        assert!(times[2] < Duration::from_millis(10), "burst of 3");
        assert!(
            most_in_any_window(&times, Duration::from_millis(4500)) <= 3,
            "{times:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_shared_account_limit_paces_every_destination_together() {
        let account = std::sync::Mutex::new(Pacer::new(Limit {
            rate: Rate {
                count: 5,
                per: Duration::from_secs(60),
            },
            burst: 5,
        }));
        let start = Instant::now();
        let mut times = Vec::new();
        for _ in 0..12 {
            // A different destination each time: only the account limit applies.
            let mut group = Pacer::new(Limit {
                rate: Rate {
                    count: 100,
                    per: Duration::from_secs(1),
                },
                burst: 100,
            });
            acquire(Some(&mut group), Some(&account)).await;
            times.push(Instant::now() - start);
        }
        assert_eq!(most_in_any_window(&times, Duration::from_secs(60)), 5);
    }
}
