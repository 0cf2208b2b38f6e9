//! The persistent store's short-lived keys (the echo guard's fingerprints, held for two
//! minutes, the cross-bot content keys, five, and the envelope ids of redelivery dedup, ten):
//! looked up in memory instead of in the `keys` table.
//!
//! A fingerprint is a digest of the text, so each one would land at a random place in the
//! table's B-tree, and redb rewrites a 4 KiB page for every such key in every commit: about
//! a third of the store's cost per relayed message for a key that lives two minutes. Here a
//! key is only journaled in the store's expiry rows (written in time order, a few rows per
//! commit, which the commit writes anyway) and held in memory as a 64-bit hash and its
//! expiry; the store rebuilds the set from those rows when it opens, so a key survives a
//! restart or a crash like any other. Memory is bounded: past [`MAX_ENTRIES`] live keys
//! the store writes further short-lived keys to the table as before.
//!
//! The table is reserved whole when the store opens, for twice [`MAX_ENTRIES`], and never
//! grows. A hash table that drops keys leaves tombstones in their slots; once they use up
//! its free slots it rebuilds itself in place while the live keys fill at most half of it,
//! and otherwise doubles. Reserved at twice the most keys it may hold, it only ever
//! rebuilds in place, so its memory stays what it was after the first minutes (sized to
//! fit, a steady 1,000 messages/s doubled it after nine minutes: 5 MB more, all at once).

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};
use std::time::Duration;

/// Keys written with a time to live up to this are short-lived.
pub const LONGEST: Duration = Duration::from_secs(600);
/// Most short-lived keys held in memory: a relayed message leaves its envelope id for ten
/// minutes and an echo-guard key for two, so this holds a steady 140 messages/s (a message
/// from a platform with cross-bot keys adds its content key for five minutes: about 100 such
/// messages/s), or a burst of 50,000 messages. Past it, further keys go to the table as
/// before. The table reserved for twice as many takes about 3.4 MB (13 bytes a slot, 262,144
/// slots), touched as keys arrive.
pub const MAX_ENTRIES: usize = 100_000;

/// A key's 64-bit hash as two halves, so that an entry (hash and expiry) packs in 12 bytes
/// where a `u64` would align it to 16.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Hashed([u32; 2]);

impl Hashed {
    /// The halves of `hash`.
    fn of(hash: u64) -> Hashed {
        Hashed([(hash >> 32) as u32, hash as u32])
    }
}

impl Hash for Hashed {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(u64::from(self.0[0]) << 32 | u64::from(self.0[1]));
    }
}

/// Hands a table a value that is already a seeded hash of its key (a [`Hashed`] here, a
/// `u64` digest elsewhere) as its own hash: hashing it again would add nothing.
#[derive(Default)]
pub(crate) struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used; fold anything else in rather than ignore it.
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// An expiry in ms since the epoch as whole seconds, rounded up (a key is held up to a second
/// past its expiry; `u32` seconds last until 2106).
fn seconds(until_ms: u64) -> u32 {
    u32::try_from(until_ms.div_ceil(1000)).unwrap_or(u32::MAX)
}

/// Short-lived keys: hash → expiry.
pub struct ShortLived {
    /// Hashes keys with a seed of this process: the set is rebuilt from the keys themselves
    /// at every start, so the hashes need not be stable across processes.
    hasher: RandomState,
    /// Expiry (whole seconds since the epoch, see [`seconds`]) by key hash.
    until: HashMap<Hashed, u32, BuildHasherDefault<Prehashed>>,
    /// Most entries held.
    cap: usize,
    /// The earliest expiry held (whole seconds, as in `until`), or later: a full set is not
    /// scanned for expired keys again before it, so a set full of live keys costs one scan a
    /// second at most, not one per commit.
    soonest: u32,
}

impl ShortLived {
    /// An empty set holding at most `cap` keys, its table reserved for twice as many (see the
    /// module's documentation).
    pub fn new(cap: usize) -> ShortLived {
        ShortLived {
            hasher: RandomState::new(),
            until: HashMap::with_capacity_and_hasher(cap.saturating_mul(2), Default::default()),
            cap,
            soonest: u32::MAX,
        }
    }

    /// The hasher keys are held by (the store's writer hashes a commit's keys with a copy).
    pub fn hasher(&self) -> &RandomState {
        &self.hasher
    }

    /// The hash a key is held under.
    pub fn hash(&self, key: &str) -> u64 {
        self.hasher.hash_one(key)
    }

    /// True when `key` is held and has not expired at `now`.
    pub fn holds(&self, key: &str, now: u64) -> bool {
        self.until
            .get(&Hashed::of(self.hash(key)))
            .is_some_and(|until| u64::from(*until) * 1000 > now)
    }

    /// How many more keys fit; expired ones are dropped first when the set is full.
    pub fn room(&mut self, now: u64) -> usize {
        if self.until.len() >= self.cap && u64::from(self.soonest) * 1000 <= now {
            self.forget_expired(now);
        }
        self.cap.saturating_sub(self.until.len())
    }

    /// Holds the hashed key until `until`, ms since the epoch, to the second rounded up (a
    /// later expiry of the same key wins).
    pub fn insert(&mut self, hash: u64, until: u64) {
        let until = seconds(until);
        let held = self.until.entry(Hashed::of(hash)).or_insert(until);
        *held = (*held).max(until);
        self.soonest = self.soonest.min(*held);
    }

    /// Drops every key expired at `now`; returns how many went.
    pub fn forget_expired(&mut self, now: u64) -> usize {
        let before = self.until.len();
        let mut soonest = u32::MAX;
        self.until.retain(|_, until| {
            let alive = u64::from(*until) * 1000 > now;
            if alive {
                soonest = soonest.min(*until);
            }
            alive
        });
        self.soonest = soonest;
        before - self.until.len()
    }

    /// Keys held, expired or not.
    pub fn len(&self) -> usize {
        self.until.len()
    }

    /// Keys the table holds before it must rebuild itself: it shrinks as dropped keys leave
    /// tombstones, and comes back when the table rebuilds in place.
    #[cfg(test)]
    fn slots(&self) -> usize {
        self.until.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_held_until_its_expiry_and_a_later_expiry_wins() {
        let mut set = ShortLived::new(10);
        let hash = set.hash("e\u{1f}qq\u{1f}1\u{1f}00ff");
        set.insert(hash, 2_000);
        set.insert(hash, 1_000);
        assert!(set.holds("e\u{1f}qq\u{1f}1\u{1f}00ff", 1_999));
        assert!(!set.holds("e\u{1f}qq\u{1f}1\u{1f}00ff", 2_000));
        assert!(!set.holds("e\u{1f}qq\u{1f}1\u{1f}00fe", 0));
        // Expiries are held in whole seconds, rounded up.
        let late = set.hash("late");
        set.insert(late, 2_001);
        assert!(set.holds("late", 2_999));
        assert!(!set.holds("late", 3_000));
    }

    #[test]
    fn a_full_set_makes_room_by_dropping_what_expired_and_no_more() {
        let mut set = ShortLived::new(3);
        for (key, until) in [("a", 100_000), ("b", 100_000), ("c", 500_000)] {
            let hash = set.hash(key);
            set.insert(hash, until);
        }
        assert_eq!(set.room(50_000), 0, "nothing expired yet: full");
        assert_eq!(set.room(100_000), 2, "a and b expired and went");
        assert!(set.holds("c", 100_000));
        assert_eq!(set.len(), 1);
    }

    /// A set full of live keys says so without scanning again until the earliest of them
    /// expires, then makes room.
    #[test]
    fn a_set_full_of_live_keys_waits_for_the_earliest_expiry() {
        let mut set = ShortLived::new(2);
        for (key, until) in [("a", 10_000), ("b", 20_000)] {
            let hash = set.hash(key);
            set.insert(hash, until);
        }
        assert_eq!(set.room(5_000), 0);
        // Were the set scanned at 6 s, "a" would go: it is not, until the earliest expiry.
        let a = Hashed::of(set.hash("a"));
        set.until.insert(a, 1);
        assert_eq!(set.room(6_000), 0, "no scan before the earliest expiry");
        assert_eq!(set.room(10_000), 1, "a expired and went");
        assert!(set.holds("b", 10_000));
        assert_eq!(set.soonest, 20);
    }

    /// A steady flow of keys, each dropped when it expires, keeps the set near its most
    /// keys: the table never doubles (sized to fit, it doubled after 17 rounds of keys).
    #[test]
    fn a_steady_flow_near_the_most_keys_never_grows_the_table() {
        const MOST: usize = 4_000;
        let mut set = ShortLived::new(MOST);
        let reserved = set.slots();
        let mut next: u64 = 0;
        // Each tick (a second) adds 100 keys living 36 ticks and drops the expired: 3,600 held, 90 % of
        // the most; 100 rounds of the whole set.
        for tick in 0..3_600u64 {
            let now = tick * 1000;
            assert!(
                set.room(now) >= 100,
                "tick {tick}: room for the tick's keys"
            );
            for _ in 0..100 {
                next += 1;
                let hash = set.hash(&next.to_string());
                set.insert(hash, now + 36_000);
            }
            set.forget_expired(now);
            assert!(
                set.slots() <= reserved,
                "tick {tick}: the table grew from {reserved} to {} slots with {} keys",
                set.slots(),
                set.len()
            );
        }
        assert_eq!(set.len(), 3_600);
    }
}
