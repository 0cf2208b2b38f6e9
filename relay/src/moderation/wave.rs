//! Spam waves across groups (issue 17): the same text, by fingerprint, seen in several
//! groups, from several senders, or repeated by one sender within a sliding window.
//!
//! Once any threshold is reached the fingerprint is a wave: that message and every later
//! copy is judged a wave while sightings keep coming, until a whole window passes with none.
//! Sightings in groups the bridge does not relay count the same, since a spammer who posts
//! everywhere is the same spammer.
//!
//! A group is known by its platform and id, not by the bot account that reported it, so two
//! bot accounts in one group see one group; and the same message reported by a second bot
//! account (same group, sender and fingerprint, platform times at most a second apart) is one
//! sighting, not a repeat. The relay's dedup drops such copies of relayed messages before they
//! are judged; sightings in unlinked groups skip dedup (nothing of theirs is stored), so the
//! detector tells them apart itself.
//!
//! Nothing readable is kept: the fingerprint, the group and the sender are stored as 64-bit
//! hashes seeded per detector, with the times of the sightings. Memory
//! is bounded: fingerprints not seen for a window are dropped by a sweep that runs at most
//! once per window, each fingerprint keeps a bounded number of sightings, and a hard cap
//! evicts the least recently seen fingerprints so a flood of unique texts cannot grow it.
//!
//! The caller's clock drives everything (`now` is passed in), so tests need no waiting.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::policy::moderation::ModerationAction;

/// Fingerprints remembered at most; beyond, the least recently seen are evicted.
pub const DEFAULT_MAX_FINGERPRINTS: usize = 50_000;

/// Sightings kept per fingerprint at least (more when a threshold is higher, up to
/// [`MOST_SIGHTINGS_KEPT`]): enough to count every threshold, bounded during a long wave.
const FEWEST_SIGHTINGS_KEPT: usize = 64;

/// Sightings kept per fingerprint at most; a threshold above it is never reached (config
/// refuses one).
pub const MOST_SIGHTINGS_KEPT: usize = 4_096;

/// Wave detection as configured: plain data, built by config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaveSpec {
    /// The sliding window sightings are counted in, and how long a wave lasts after its
    /// last sighting.
    pub window: Duration,
    /// Distinct groups (across all accounts) that make a wave; 0 turns this test off.
    pub groups: u32,
    /// Distinct senders that make a wave; 0 turns this test off.
    pub senders: u32,
    /// Copies from one sender that make a wave; 0 turns this test off.
    pub repeats: u32,
    /// Fingerprints shorter than this (in characters) are never waves: "ok", "+1" and
    /// stickers repeat innocently.
    pub min_chars: usize,
    /// What happens to a message of a wave.
    pub action: ModerationAction,
}

impl Default for WaveSpec {
    /// The defaults: 10 minutes; 3 groups, 3 senders or 3 repeats; 8 characters;
    /// drop.
    fn default() -> WaveSpec {
        WaveSpec {
            window: Duration::from_secs(10 * 60),
            groups: 3,
            senders: 3,
            repeats: 3,
            min_chars: 8,
            action: ModerationAction::Drop,
        }
    }
}

/// What wave detection says about one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaveVerdict {
    /// Not (or not yet) a wave: relay it.
    Clean,
    /// Part of a wave: apply the [`ModerationAction`].
    Wave {
        /// True only for the message that made the fingerprint a wave, so the caller logs
        /// it (with the counts and an excerpt) once per wave.
        started: bool,
        /// Distinct groups the fingerprint was seen in within the window.
        groups: u32,
        /// Distinct senders within the window.
        senders: u32,
        /// The most copies from any one sender within the window.
        repeats: u32,
    },
}

/// [`Sighting::said_s`] of a sighting whose platform time is not to be compared: never the
/// second report of an earlier one.
const NO_TIME: u64 = u64::MAX;

/// One sighting: when, and where and by whom as hashes only.
#[derive(Debug, Clone, Copy)]
struct Sighting {
    /// When it was seen.
    at: Instant,
    /// Hash of (scope, group): the platform and the group id.
    group: u64,
    /// Hash of the sender id.
    sender: u64,
    /// The platform's time of the message in seconds ([`NO_TIME`]: none), so a second bot
    /// account's report of the same message is told from a repeat.
    said_s: u64,
}

impl Sighting {
    /// True when `self` is another bot account's report of the message `earlier` is: the
    /// same group and sender (the fingerprint is the same already), said within a second
    /// (two reports of one message may straddle a second, as dedup allows too).
    fn reports_the_same_message_as(&self, earlier: &Sighting) -> bool {
        self.said_s != NO_TIME
            && earlier.said_s != NO_TIME
            && self.group == earlier.group
            && self.sender == earlier.sender
            && self.said_s.abs_diff(earlier.said_s) <= 1
    }
}

/// What is remembered about one fingerprint.
#[derive(Debug)]
struct FingerprintState {
    /// The latest sighting: when the fingerprint, or its wave, is forgotten.
    last_seen: Instant,
    /// Sightings within the window, oldest first, at most `sightings_kept`.
    sightings: VecDeque<Sighting>,
    /// Whether a wave has started and not yet ended.
    in_wave: bool,
}

/// Everything behind the detector's lock.
#[derive(Debug, Default)]
struct Fingerprints {
    /// The latest `now` seen; time never runs backwards for the detector.
    latest: Option<Instant>,
    /// When fingerprints not seen for a window were last swept out.
    last_sweep: Option<Instant>,
    /// State by fingerprint hash.
    by_hash: HashMap<u64, FingerprintState>,
}

/// Spam-wave detection across every group. Thread-safe: [`WaveDetector::sight`] takes
/// `&self`, hashes outside the lock and holds it only to count.
#[derive(Debug)]
pub struct WaveDetector {
    /// The configuration.
    spec: WaveSpec,
    /// Fingerprints remembered at most.
    max_fingerprints: usize,
    /// Sightings kept per fingerprint.
    sightings_kept: usize,
    /// Hashes fingerprints, groups and senders, seeded per detector.
    hasher: RandomState,
    /// The fingerprints.
    fingerprints: Mutex<Fingerprints>,
}

impl WaveDetector {
    /// A detector for a spec, remembering at most [`DEFAULT_MAX_FINGERPRINTS`] fingerprints.
    pub fn new(spec: WaveSpec) -> WaveDetector {
        WaveDetector::with_max_fingerprints(spec, DEFAULT_MAX_FINGERPRINTS)
    }

    /// A detector remembering at most `max_fingerprints` fingerprints (at least one):
    /// beyond, the least recently seen are evicted.
    pub fn with_max_fingerprints(spec: WaveSpec, max_fingerprints: usize) -> WaveDetector {
        let highest_threshold = spec.groups.max(spec.senders).max(spec.repeats);
        let sightings_kept = usize::try_from(highest_threshold)
            .unwrap_or(MOST_SIGHTINGS_KEPT)
            .clamp(FEWEST_SIGHTINGS_KEPT, MOST_SIGHTINGS_KEPT);
        WaveDetector {
            spec,
            max_fingerprints: max_fingerprints.max(1),
            sightings_kept,
            hasher: RandomState::new(),
            fingerprints: Mutex::new(Fingerprints::default()),
        }
    }

    /// The spec enforced.
    pub fn spec(&self) -> WaveSpec {
        self.spec
    }

    /// How many fingerprints are remembered now (for metrics and tests).
    pub fn tracked(&self) -> usize {
        self.lock().by_hash.len()
    }

    /// True when `fingerprint` is part of a wave at `now`: one has started and a whole window
    /// has not passed since its last sighting. Records nothing (a message that waited, as a
    /// suspect, was sighted when it arrived).
    pub fn in_wave(&self, fingerprint: &str, now: Instant) -> bool {
        let key = self.hasher.hash_one(fingerprint);
        let fingerprints = self.lock();
        let now = fingerprints.latest.map_or(now, |latest| latest.max(now));
        fingerprints.by_hash.get(&key).is_some_and(|state| {
            state.in_wave && now.saturating_duration_since(state.last_seen) < self.spec.window
        })
    }

    /// Records a sighting of `fingerprint` (the normalized text) from `sender` in `group`, at
    /// `now`, and judges it. `scope` says whose group id `group` is: the platform for groups
    /// that several bot accounts may share (two accounts in one QQ group see one group), the
    /// account where a group belongs to one account (`api`). `said_ms` is the platform's
    /// time of the message, when a second bot account may report the same message: such a
    /// report (same group, sender and fingerprint, within a second) is not counted again.
    /// Sightings in groups the bridge does not relay count the same as the others.
    /// Fingerprints shorter than [`WaveSpec::min_chars`] are [`WaveVerdict::Clean`] and not
    /// stored. `now` should not run backwards; if it does, it is taken as the latest time
    /// seen.
    pub fn sight(
        &self,
        fingerprint: &str,
        scope: &str,
        group: &str,
        sender: &str,
        said_ms: Option<u64>,
        now: Instant,
    ) -> WaveVerdict {
        if fingerprint.chars().take(self.spec.min_chars).count() < self.spec.min_chars {
            return WaveVerdict::Clean;
        }
        let key = self.hasher.hash_one(fingerprint);
        let sighting = Sighting {
            at: now,
            group: self.hasher.hash_one((scope, group)),
            sender: self.hasher.hash_one(sender),
            said_s: said_ms.map_or(NO_TIME, |ms| (ms / 1000).min(NO_TIME - 1)),
        };

        let mut fingerprints = self.lock();
        let now = fingerprints.latest.map_or(now, |latest| latest.max(now));
        fingerprints.latest = Some(now);
        let sighting = Sighting {
            at: now,
            ..sighting
        };
        self.sweep(&mut fingerprints, now);
        if !fingerprints.by_hash.contains_key(&key)
            && fingerprints.by_hash.len() >= self.max_fingerprints
        {
            super::evict::least_recent(&mut fingerprints.by_hash, self.max_fingerprints, |state| {
                state.last_seen
            });
        }

        let window = self.spec.window;
        let state = fingerprints
            .by_hash
            .entry(key)
            .or_insert_with(|| FingerprintState {
                last_seen: now,
                sightings: VecDeque::new(),
                in_wave: false,
            });
        if now.saturating_duration_since(state.last_seen) >= window {
            // A whole window without a sighting: any wave is over, start counting afresh.
            state.sightings.clear();
            state.in_wave = false;
        }
        state.last_seen = now;
        while state
            .sightings
            .front()
            .is_some_and(|old| now.saturating_duration_since(old.at) >= window)
        {
            state.sightings.pop_front();
        }
        let second_report = state
            .sightings
            .iter()
            .any(|earlier| sighting.reports_the_same_message_as(earlier));
        if second_report {
            // Another bot account's report of a message counted already: the verdict stands.
            if !state.in_wave {
                return WaveVerdict::Clean;
            }
            let counts = Counts::of(&state.sightings);
            return WaveVerdict::Wave {
                started: false,
                groups: counts.groups,
                senders: counts.senders,
                repeats: counts.repeats,
            };
        }
        if state.sightings.len() >= self.sightings_kept {
            state.sightings.pop_front();
        }
        state.sightings.push_back(sighting);

        let counts = Counts::of(&state.sightings);
        let reached = |count: u32, threshold: u32| threshold > 0 && count >= threshold;
        let started = !state.in_wave
            && (reached(counts.groups, self.spec.groups)
                || reached(counts.senders, self.spec.senders)
                || reached(counts.repeats, self.spec.repeats));
        if !(state.in_wave || started) {
            return WaveVerdict::Clean;
        }
        state.in_wave = true;
        WaveVerdict::Wave {
            started,
            groups: counts.groups,
            senders: counts.senders,
            repeats: counts.repeats,
        }
    }

    /// Drops fingerprints not seen for a window, at most once per window (amortized).
    fn sweep(&self, fingerprints: &mut Fingerprints, now: Instant) {
        let window = self.spec.window;
        let due = fingerprints
            .last_sweep
            .is_none_or(|last| now.saturating_duration_since(last) >= window);
        if due {
            fingerprints.last_sweep = Some(now);
            fingerprints
                .by_hash
                .retain(|_, state| now.saturating_duration_since(state.last_seen) < window);
        }
    }

    /// The fingerprints, recovering from a poisoned lock (every update leaves them
    /// consistent).
    fn lock(&self) -> std::sync::MutexGuard<'_, Fingerprints> {
        self.fingerprints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// What one fingerprint's sightings in the window add up to.
struct Counts {
    /// Distinct groups.
    groups: u32,
    /// Distinct senders.
    senders: u32,
    /// The most sightings from one sender.
    repeats: u32,
}

impl Counts {
    /// Counts a (bounded) list of sightings.
    fn of(sightings: &VecDeque<Sighting>) -> Counts {
        let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        let mut groups: Vec<u64> = sightings.iter().map(|s| s.group).collect();
        groups.sort_unstable();
        groups.dedup();
        let mut senders: Vec<u64> = sightings.iter().map(|s| s.sender).collect();
        senders.sort_unstable();
        let repeats = senders
            .chunk_by(|a, b| a == b)
            .map(<[u64]>::len)
            .max()
            .unwrap_or(0);
        senders.dedup();
        Counts {
            groups: count(groups.len()),
            senders: count(senders.len()),
            repeats: count(repeats),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The text every test spreads.
    const SPAM: &str = "加群领取免费红包名额有限";

    /// `start + secs`.
    fn at(start: Instant, secs: u64) -> Instant {
        start + Duration::from_secs(secs)
    }

    #[test]
    fn three_senders_in_three_groups_make_a_wave_that_lasts_while_copies_come() {
        let waves = WaveDetector::new(WaveSpec::default());
        let start = Instant::now();
        assert_eq!(
            waves.sight(SPAM, "qq", "g1", "u1", None, start),
            WaveVerdict::Clean
        );
        assert_eq!(
            waves.sight(SPAM, "wechat", "g2", "u2", None, at(start, 5)),
            WaveVerdict::Clean
        );
        // The third group may be one the bridge does not relay: it counts the same.
        assert_eq!(
            waves.sight(SPAM, "qq", "g9", "u3", None, at(start, 10)),
            WaveVerdict::Wave {
                started: true,
                groups: 3,
                senders: 3,
                repeats: 1
            }
        );
        // A fourth copy a minute later: still the wave, not a new one.
        assert_eq!(
            waves.sight(SPAM, "qq", "g4", "u4", None, at(start, 70)),
            WaveVerdict::Wave {
                started: false,
                groups: 4,
                senders: 4,
                repeats: 1
            }
        );
        // Copies every 9 minutes keep the wave going, though the first sightings left the
        // window.
        assert!(matches!(
            waves.sight(SPAM, "qq", "g5", "u5", None, at(start, 70 + 9 * 60)),
            WaveVerdict::Wave { started: false, .. }
        ));
        // A whole window with no sighting: the wave is over, and one copy is clean.
        assert_eq!(
            waves.sight(SPAM, "qq", "g1", "u1", None, at(start, 70 + 20 * 60)),
            WaveVerdict::Clean
        );
    }

    #[test]
    fn a_fingerprint_is_in_a_wave_from_its_start_until_a_window_passes_without_a_copy() {
        let waves = WaveDetector::new(WaveSpec::default());
        let start = Instant::now();
        assert!(!waves.in_wave(SPAM, start), "never seen");
        waves.sight(SPAM, "qq", "g1", "u1", None, start);
        waves.sight(SPAM, "qq", "g2", "u2", None, at(start, 1));
        assert!(!waves.in_wave(SPAM, at(start, 2)), "two groups: not yet");
        waves.sight(SPAM, "qq", "g3", "u3", None, at(start, 3));
        assert!(waves.in_wave(SPAM, at(start, 4)));
        assert!(waves.in_wave(SPAM, at(start, 3 + 9 * 60)));
        assert!(
            !waves.in_wave(SPAM, at(start, 3 + 10 * 60)),
            "a whole window later"
        );
        assert!(!waves.in_wave("另一段完全不同的文字内容", at(start, 4)));
    }

    #[test]
    fn sightings_spread_wider_than_the_window_are_no_wave() {
        let waves = WaveDetector::new(WaveSpec::default());
        let start = Instant::now();
        for (i, group) in ["g1", "g2", "g3", "g4"].into_iter().enumerate() {
            let later = at(start, 11 * 60 * u64::try_from(i).unwrap_or(0));
            assert_eq!(
                waves.sight(SPAM, "qq", group, group, None, later),
                WaveVerdict::Clean
            );
        }
    }

    #[test]
    fn one_sender_repeating_in_one_group_is_a_wave() {
        let waves = WaveDetector::new(WaveSpec::default());
        let start = Instant::now();
        assert_eq!(
            waves.sight(SPAM, "qq", "g1", "u1", None, start),
            WaveVerdict::Clean
        );
        assert_eq!(
            waves.sight(SPAM, "qq", "g1", "u1", None, at(start, 30)),
            WaveVerdict::Clean
        );
        assert_eq!(
            waves.sight(SPAM, "qq", "g1", "u1", None, at(start, 60)),
            WaveVerdict::Wave {
                started: true,
                groups: 1,
                senders: 1,
                repeats: 3
            }
        );
    }

    #[test]
    fn a_threshold_of_zero_is_off() {
        let spec = WaveSpec {
            repeats: 0,
            ..WaveSpec::default()
        };
        let waves = WaveDetector::new(spec);
        let start = Instant::now();
        for i in 0..10 {
            assert_eq!(
                waves.sight(SPAM, "qq", "g1", "u1", None, at(start, i)),
                WaveVerdict::Clean
            );
        }
    }

    #[test]
    fn short_fingerprints_are_never_waves_and_not_stored() {
        let waves = WaveDetector::new(WaveSpec::default());
        let start = Instant::now();
        for i in 0..20 {
            let group = format!("g{i}");
            assert_eq!(
                waves.sight("好的好的好的好", "qq", &group, &group, None, start),
                WaveVerdict::Clean
            );
            assert_eq!(
                waves.sight("+1", "qq", &group, &group, None, start),
                WaveVerdict::Clean
            );
        }
        assert_eq!(waves.tracked(), 0);
    }

    #[test]
    fn the_cap_evicts_the_least_recently_seen() {
        let waves = WaveDetector::with_max_fingerprints(WaveSpec::default(), 4);
        let start = Instant::now();
        waves.sight(SPAM, "qq", "g1", "u1", None, start);
        waves.sight(SPAM, "qq", "g2", "u2", None, at(start, 1));
        for i in 0..4 {
            let unique = format!("unique text number {i}");
            waves.sight(&unique, "qq", "g1", "u1", None, at(start, 2 + i));
            assert!(waves.tracked() <= 4);
        }
        // SPAM was the least recently seen and was evicted: its count starts afresh.
        assert_eq!(
            waves.sight(SPAM, "qq", "g3", "u3", None, at(start, 10)),
            WaveVerdict::Clean
        );
    }

    #[test]
    fn fingerprints_not_seen_for_a_window_are_dropped() {
        let waves = WaveDetector::new(WaveSpec::default());
        let start = Instant::now();
        for i in 0..500 {
            waves.sight(
                &format!("unique text number {i}"),
                "qq",
                "g",
                "u",
                None,
                start,
            );
        }
        assert_eq!(waves.tracked(), 500);
        waves.sight(SPAM, "qq", "g", "u", None, at(start, 11 * 60));
        assert_eq!(waves.tracked(), 1);
    }

    #[test]
    fn only_hashes_are_stored() {
        let waves = WaveDetector::new(WaveSpec::default());
        waves.sight(SPAM, "qq-main", "group-1", "alice", None, Instant::now());
        let fingerprints = waves.lock();
        for (key, state) in &fingerprints.by_hash {
            let _: &u64 = key;
            for sighting in &state.sightings {
                let Sighting {
                    at,
                    group,
                    sender,
                    said_s,
                } = *sighting;
                let _: (Instant, u64, u64, u64) = (at, group, sender, said_s);
            }
        }
        // Nothing but two times and two hashes: no room for a string.
        assert_eq!(
            std::mem::size_of::<Sighting>(),
            std::mem::size_of::<Instant>() + 3 * std::mem::size_of::<u64>()
        );
        let stored = format!("{:?}", fingerprints.by_hash);
        for raw in [SPAM, "qq-main", "group-1", "alice"] {
            assert!(!stored.contains(raw), "{raw} is stored");
        }
    }

    #[test]
    fn a_second_bot_accounts_report_of_one_message_is_not_a_repeat() {
        let waves = WaveDetector::new(WaveSpec::default());
        let start = Instant::now();
        let said = 1_718_880_000_000;
        // Three bot accounts in one (unlinked) group report the same message, their platform
        // times straddling a second: one sighting, not three repeats of one sender.
        for (offset, reported_ms) in [(0, said), (1, said + 400), (2, said + 1_100)] {
            assert_eq!(
                waves.sight(SPAM, "qq", "g1", "u1", Some(reported_ms), at(start, offset)),
                WaveVerdict::Clean
            );
        }
        // The same sender saying it again later is a repeat: the third copy is a wave.
        assert_eq!(
            waves.sight(SPAM, "qq", "g1", "u1", Some(said + 30_000), at(start, 30)),
            WaveVerdict::Clean
        );
        assert_eq!(
            waves.sight(SPAM, "qq", "g1", "u1", Some(said + 60_000), at(start, 60)),
            WaveVerdict::Wave {
                started: true,
                groups: 1,
                senders: 1,
                repeats: 3
            }
        );
        // A second report during the wave is still the wave, not a new start nor a repeat.
        assert_eq!(
            waves.sight(SPAM, "qq", "g1", "u1", Some(said + 60_500), at(start, 61)),
            WaveVerdict::Wave {
                started: false,
                groups: 1,
                senders: 1,
                repeats: 3
            }
        );
        // Without platform times (`api` groups, one account each) every sighting counts.
        let api = WaveDetector::new(WaveSpec::default());
        api.sight(SPAM, "hub", "g", "u", None, start);
        api.sight(SPAM, "hub", "g", "u", None, start);
        assert!(matches!(
            api.sight(SPAM, "hub", "g", "u", None, start),
            WaveVerdict::Wave { started: true, .. }
        ));
    }

    #[test]
    fn two_accounts_in_one_group_see_one_group() {
        let start = Instant::now();
        // Only the groups test: one group id on one platform is one group, whichever bot
        // account reported it and however many members posted there.
        let spec = WaveSpec {
            senders: 0,
            ..WaveSpec::default()
        };
        let by_groups = WaveDetector::new(spec);
        for (offset, sender) in ["u1", "u2", "u3"].into_iter().enumerate() {
            let offset = u64::try_from(offset).unwrap_or(0);
            assert_eq!(
                by_groups.sight(SPAM, "qq", "g1", sender, None, at(start, offset)),
                WaveVerdict::Clean,
                "one group, however many senders"
            );
        }
        // The same id on another platform is another group.
        by_groups.sight(SPAM, "wechat", "g1", "u4", None, at(start, 3));
        assert!(matches!(
            by_groups.sight(SPAM, "dingtalk", "g1", "u5", None, at(start, 4)),
            WaveVerdict::Wave {
                started: true,
                groups: 3,
                ..
            }
        ));
    }

    #[test]
    fn the_action_defaults_to_drop() {
        assert_eq!(WaveSpec::default().action, ModerationAction::Drop);
    }

    #[test]
    fn it_is_shared_between_threads() {
        fn shared<T: Send + Sync>() {}
        shared::<WaveDetector>();
    }

    proptest! {
        #[test]
        fn arbitrary_sightings_never_panic_and_stay_under_the_cap(
            window_secs in 0u64..120,
            thresholds in (0u32..6, 0u32..6, 0u32..6),
            min_chars in 0usize..10,
            sightings in prop::collection::vec(
                ("\\PC{0,12}", 0u8..4, 0u8..6, 0u8..6, prop::option::of(0u64..5_000), 0u64..90),
                1..200,
            ),
        ) {
            let (groups, senders, repeats) = thresholds;
            let spec = WaveSpec {
                window: Duration::from_secs(window_secs),
                groups,
                senders,
                repeats,
                min_chars,
                action: ModerationAction::Drop,
            };
            let waves = WaveDetector::with_max_fingerprints(spec, 16);
            let start = Instant::now();
            let mut elapsed = 0;
            for (text, scope, group, sender, said_ms, advance) in sightings {
                elapsed += advance;
                waves.sight(
                    &text,
                    &scope.to_string(),
                    &group.to_string(),
                    &sender.to_string(),
                    said_ms,
                    at(start, elapsed),
                );
                prop_assert!(waves.tracked() <= 16);
            }
        }
    }
}
