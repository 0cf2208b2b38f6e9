//! Per-sender flood control (issue 17): each sender in each group may post at a configured
//! rate such as `5/10s`; messages above it are dropped or held.
//!
//! The rate is counted exactly as egress pacing counts its limits (`egress::pacing`), from
//! the same [`Limit`]: governor's GCRA built by [`Limit::gcra_quota`] (smoothness and burst)
//! and a sliding-window log from [`Limit::rolling_window`] (never more than the rate in any
//! rolling window), and a message must pass both. A message over the limit uses up nothing,
//! so a sender who keeps flooding is let through again as soon as the rate allows.
//!
//! Keys are (account, group, sender), kept as 64-bit hashes. Memory stays bounded: a key idle
//! for longer than the rolling window (after which its state equals a fresh one) is forgotten
//! by a sweep that runs at most once per window, and a hard cap evicts the least recently
//! seen keys when a flood of distinct senders would otherwise grow the map.
//!
//! The caller's clock drives everything (`now` is passed in), so tests need no waiting.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::policy::moderation::FloodConfig;

/// Keys remembered at most; beyond, the least recently seen are evicted.
pub const DEFAULT_MAX_SENDERS: usize = 100_000;

/// What flood control says about one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FloodVerdict {
    /// Within the limit: relay it.
    Allowed,
    /// Over the limit: apply the [`ModerationAction`].
    Over {
        /// True for the first message over the limit since the sender was last within it,
        /// so the caller logs or notifies the start of a flood once, not per message.
        first: bool,
    },
}

/// governor clock that reads the time the caller passed to [`FloodLimiter::check`]: the
/// limiter sets it, under its lock, before asking a key's GCRA.
#[derive(Debug, Clone)]
struct CallerClock {
    /// Nanoseconds since the limiter's origin.
    nanos: Arc<AtomicU64>,
}

impl Clock for CallerClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }
}

/// One key's GCRA.
type Gcra = RateLimiter<NotKeyed, InMemoryState, CallerClock, NoOpMiddleware<Duration>>;

/// What is remembered about one (account, group, sender).
struct SenderState {
    /// Smoothness and burst.
    gcra: Gcra,
    /// When the messages let through in the last rolling window came (offsets from origin).
    allowed: VecDeque<Duration>,
    /// The last message seen, allowed or not: when the key may be forgotten.
    last_seen: Duration,
    /// Whether the last message was over the limit: the next one over is not a new flood.
    flooding: bool,
}

/// Everything behind the limiter's lock.
struct Keys {
    /// The time every other offset counts from: the first `now` seen.
    origin: Option<Instant>,
    /// The latest offset seen; time never runs backwards for the limiter.
    latest: Duration,
    /// When idle keys were last swept out.
    last_sweep: Duration,
    /// Per-key state by hashed key.
    senders: HashMap<u64, SenderState>,
}

/// Per-sender flood control. Thread-safe: [`FloodLimiter::check`] takes `&self`.
pub struct FloodLimiter {
    /// The configuration.
    spec: FloodConfig,
    /// GCRA quota every key starts from.
    quota: Quota,
    /// Messages allowed in any rolling window.
    window_cap: usize,
    /// The rolling window, also how long an idle key is remembered.
    window: Duration,
    /// Keys remembered at most.
    max_senders: usize,
    /// Hashes keys, seeded per limiter.
    hasher: std::collections::hash_map::RandomState,
    /// The clock every key's GCRA reads.
    clock: CallerClock,
    /// The keys.
    keys: Mutex<Keys>,
}

impl std::fmt::Debug for FloodLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FloodLimiter")
            .field("spec", &self.spec)
            .field("tracked", &self.tracked())
            .finish()
    }
}

impl FloodLimiter {
    /// A limiter for a spec, remembering at most [`DEFAULT_MAX_SENDERS`] keys.
    pub fn new(spec: FloodConfig) -> FloodLimiter {
        FloodLimiter::with_max_senders(spec, DEFAULT_MAX_SENDERS)
    }

    /// A limiter remembering at most `max_senders` keys (at least one): beyond, the least
    /// recently seen are evicted, so a flood of distinct senders cannot grow memory.
    pub fn with_max_senders(spec: FloodConfig, max_senders: usize) -> FloodLimiter {
        let limit = spec.limit();
        let rolling = limit.rolling_window();
        FloodLimiter {
            spec,
            quota: limit.gcra_quota(),
            window_cap: usize::try_from(rolling.cap).unwrap_or(usize::MAX),
            window: rolling.window,
            max_senders: max_senders.max(1),
            hasher: std::collections::hash_map::RandomState::new(),
            clock: CallerClock {
                nanos: Arc::new(AtomicU64::new(0)),
            },
            keys: Mutex::new(Keys {
                origin: None,
                latest: Duration::ZERO,
                last_sweep: Duration::ZERO,
                senders: HashMap::new(),
            }),
        }
    }

    /// The spec enforced.
    pub fn spec(&self) -> FloodConfig {
        self.spec
    }

    /// How many keys are remembered now (for metrics and tests).
    pub fn tracked(&self) -> usize {
        self.lock().senders.len()
    }

    /// Judges one message of `sender` in `group` received by `account`, at `now`, and counts
    /// it when it is allowed. `now` should not run backwards; if it does, it is taken as the
    /// latest time seen.
    pub fn check(&self, account: &str, group: &str, sender: &str, now: Instant) -> FloodVerdict {
        let key = self.hasher.hash_one((account, group, sender));
        let mut keys = self.lock();
        let origin = *keys.origin.get_or_insert(now);
        let now = keys.latest.max(now.saturating_duration_since(origin));
        keys.latest = now;
        self.clock.nanos.store(
            u64::try_from(now.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        self.sweep(&mut keys, now);

        let state = keys.senders.entry(key).or_insert_with(|| SenderState {
            gcra: RateLimiter::direct_with_clock(self.quota, self.clock.clone()),
            allowed: VecDeque::new(),
            last_seen: now,
            flooding: false,
        });
        state.last_seen = now;
        while state
            .allowed
            .front()
            .is_some_and(|at| now.saturating_sub(*at) >= self.window)
        {
            state.allowed.pop_front();
        }
        // The rolling window first: a GCRA cell is only taken when it is used.
        let within = state.allowed.len() < self.window_cap && state.gcra.check().is_ok();
        if within {
            state.allowed.push_back(now);
            state.flooding = false;
            FloodVerdict::Allowed
        } else {
            let first = !state.flooding;
            state.flooding = true;
            FloodVerdict::Over { first }
        }
    }

    /// Forgets keys idle for longer than the window, at most once per window (amortized), and
    /// evicts the least recently seen when the map is full.
    fn sweep(&self, keys: &mut Keys, now: Duration) {
        if now.saturating_sub(keys.last_sweep) >= self.window {
            keys.last_sweep = now;
            let window = self.window;
            keys.senders
                .retain(|_, state| now.saturating_sub(state.last_seen) < window);
        }
        if keys.senders.len() >= self.max_senders {
            super::evict::least_recent(&mut keys.senders, self.max_senders, |state| {
                state.last_seen
            });
        }
    }

    /// The keys, recovering from a poisoned lock (the state stays consistent: every update
    /// is a few assignments).
    fn lock(&self) -> std::sync::MutexGuard<'_, Keys> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::moderation::ModerationAction;
    use crate::policy::Rate;
    use proptest::prelude::*;

    /// The issue's example: `per_sender = "5/10s"`, `burst = 5`.
    fn five_per_ten_seconds() -> FloodConfig {
        FloodConfig {
            per_sender: Rate::parse("5/10s").expect("a valid rate"),
            burst: 5,
            action: ModerationAction::Drop,
        }
    }

    /// `start + millis`.
    fn at(start: Instant, millis: u64) -> Instant {
        start + Duration::from_millis(millis)
    }

    #[test]
    fn the_issue_example_five_allowed_then_over_once_per_flood() {
        let flood = FloodLimiter::new(five_per_ten_seconds());
        let start = Instant::now();
        let verdicts: Vec<FloodVerdict> = (0..8)
            .map(|i| flood.check("qq-main", "g1", "alice", at(start, i * 100)))
            .collect();
        let allowed = FloodVerdict::Allowed;
        assert_eq!(verdicts[..5], [allowed; 5]);
        assert_eq!(verdicts[5], FloodVerdict::Over { first: true });
        assert_eq!(verdicts[6..], [FloodVerdict::Over { first: false }; 2]);

        // Another user in the same group, the same second: their own limit.
        assert_eq!(flood.check("qq-main", "g1", "bob", at(start, 850)), allowed);
        assert_eq!(flood.check("qq-main", "g1", "bob", at(start, 900)), allowed);

        // The ninth, 11 s later: within the limit again.
        assert_eq!(
            flood.check("qq-main", "g1", "alice", at(start, 11_700)),
            allowed
        );
    }

    #[test]
    fn a_new_flood_after_a_pause_is_first_again() {
        let flood = FloodLimiter::new(five_per_ten_seconds());
        let start = Instant::now();
        for i in 0..5 {
            assert_eq!(
                flood.check("qq", "g", "u", at(start, i)),
                FloodVerdict::Allowed
            );
        }
        assert_eq!(
            flood.check("qq", "g", "u", at(start, 10)),
            FloodVerdict::Over { first: true }
        );
        // Within the limit again once the window has passed; then a new flood starts.
        for i in 0..5 {
            assert_eq!(
                flood.check("qq", "g", "u", at(start, 10_100 + i * 100)),
                FloodVerdict::Allowed
            );
        }
        assert_eq!(
            flood.check("qq", "g", "u", at(start, 10_600)),
            FloodVerdict::Over { first: true }
        );
    }

    #[test]
    fn never_more_than_the_rate_in_any_rolling_window() {
        // A burst above the rate: GCRA alone would allow 5 + refills in 10 s.
        let spec = FloodConfig {
            per_sender: Rate::parse("5/10s").expect("a valid rate"),
            burst: 5,
            action: ModerationAction::Hold,
        };
        let flood = FloodLimiter::new(spec);
        let start = Instant::now();
        let allowed: Vec<u64> = (0..400)
            .map(|i| i * 100)
            .filter(|ms| flood.check("qq", "g", "u", at(start, *ms)) == FloodVerdict::Allowed)
            .collect();
        for first in &allowed {
            let in_window = allowed
                .iter()
                .filter(|t| **t >= *first && **t < first + 10_000)
                .count();
            assert!(in_window <= 5, "{in_window} in the window from {first}");
        }
        assert!(allowed.len() >= 20, "{allowed:?}");
    }

    #[test]
    fn groups_and_accounts_are_independent_keys() {
        let flood = FloodLimiter::new(five_per_ten_seconds());
        let start = Instant::now();
        for i in 0..6 {
            flood.check("qq-main", "g1", "alice", at(start, i));
        }
        assert_ne!(
            flood.check("qq-main", "g1", "alice", at(start, 10)),
            FloodVerdict::Allowed
        );
        assert_eq!(
            flood.check("qq-main", "g2", "alice", at(start, 10)),
            FloodVerdict::Allowed
        );
        assert_eq!(
            flood.check("qq-other", "g1", "alice", at(start, 10)),
            FloodVerdict::Allowed
        );
    }

    #[test]
    fn idle_keys_are_forgotten() {
        let flood = FloodLimiter::new(five_per_ten_seconds());
        let start = Instant::now();
        for sender in 0..1_000 {
            flood.check("qq", "g", &sender.to_string(), at(start, sender));
        }
        assert_eq!(flood.tracked(), 1_000);
        flood.check("qq", "g", "someone", at(start, 30_000));
        assert_eq!(flood.tracked(), 1);
    }

    #[test]
    fn the_cap_evicts_the_least_recently_seen() {
        let flood = FloodLimiter::with_max_senders(five_per_ten_seconds(), 64);
        let start = Instant::now();
        for i in 0..6 {
            flood.check("qq", "g", "old", at(start, i));
        }
        for sender in 0..200 {
            flood.check("qq", "g", &sender.to_string(), at(start, 10 + sender));
            assert!(flood.tracked() <= 64);
        }
        // "old" was evicted, so it starts afresh.
        assert_eq!(
            flood.check("qq", "g", "old", at(start, 300)),
            FloodVerdict::Allowed
        );
    }

    #[test]
    fn time_running_backwards_is_taken_as_the_latest() {
        let flood = FloodLimiter::new(five_per_ten_seconds());
        let start = Instant::now() + Duration::from_secs(60);
        for i in 0..5 {
            flood.check("qq", "g", "u", at(start, i));
        }
        let earlier = start - Duration::from_secs(30);
        assert_eq!(
            flood.check("qq", "g", "u", earlier),
            FloodVerdict::Over { first: true }
        );
    }

    #[test]
    fn it_is_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<FloodLimiter>();
    }

    proptest! {
        #[test]
        fn arbitrary_checks_never_panic_and_stay_under_the_cap(
            count in 1u32..20,
            per_millis in 1u64..5_000,
            burst in 0u32..20,
            steps in prop::collection::vec((0u8..4, 0u8..4, 0u8..40, 0u64..3_000), 1..300),
        ) {
            let spec = FloodConfig {
                per_sender: Rate { count, per: Duration::from_millis(per_millis) },
                burst,
                action: ModerationAction::Drop,
            };
            let flood = FloodLimiter::with_max_senders(spec, 32);
            let start = Instant::now();
            let mut elapsed = 0;
            for (account, group, sender, advance) in steps {
                elapsed += advance;
                flood.check(
                    &account.to_string(),
                    &group.to_string(),
                    &sender.to_string(),
                    at(start, elapsed),
                );
                prop_assert!(flood.tracked() <= 32);
            }
        }
    }
}
