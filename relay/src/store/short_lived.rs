//! The persistent store's short-lived keys (the echo guard's fingerprints, held for two
//! minutes): looked up in memory instead of in the `keys` table.
//!
//! A fingerprint is a digest of the text, so each one would land at a random place in the
//! table's B-tree, and redb rewrites a 4 KiB page for every such key in every commit: about
//! a third of the store's cost per relayed message for a key that lives two minutes. Here a
//! key is only journaled in the store's expiry rows (written in time order, a few rows per
//! commit, which the commit writes anyway) and held in memory as a 64-bit hash and its
//! expiry; the store rebuilds the set from those rows when it opens, so a key survives a
//! restart or a crash like any other. Memory is bounded: past [`MAX_ENTRIES`] live keys
//! the store writes further short-lived keys to the table as before.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

/// Keys written with a time to live up to this are short-lived.
pub const LONGEST: Duration = Duration::from_secs(600);
/// Most short-lived keys held in memory (about 20 bytes each, so about 20 MB at most).
pub const MAX_ENTRIES: usize = 1_000_000;

/// Short-lived keys: hash → expiry (ms since the epoch).
pub struct ShortLived {
    /// Hashes keys with a seed of this process: the set is rebuilt from the keys themselves
    /// at every start, so the hashes need not be stable across processes.
    hasher: RandomState,
    /// Expiry by key hash.
    until: HashMap<u64, u64>,
    /// Most entries held.
    cap: usize,
}

impl ShortLived {
    /// An empty set holding at most `cap` keys.
    pub fn new(cap: usize) -> ShortLived {
        ShortLived {
            hasher: RandomState::new(),
            until: HashMap::new(),
            cap,
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
            .get(&self.hash(key))
            .is_some_and(|until| *until > now)
    }

    /// How many more keys fit; expired ones are dropped first when the set is full.
    pub fn room(&mut self, now: u64) -> usize {
        if self.until.len() >= self.cap {
            self.forget_expired(now);
        }
        self.cap.saturating_sub(self.until.len())
    }

    /// Holds the hashed key until `until` (a later expiry of the same key wins).
    pub fn insert(&mut self, hash: u64, until: u64) {
        let held = self.until.entry(hash).or_insert(until);
        *held = (*held).max(until);
    }

    /// Drops every key expired at `now`; returns how many went.
    pub fn forget_expired(&mut self, now: u64) -> usize {
        let before = self.until.len();
        self.until.retain(|_, until| *until > now);
        before - self.until.len()
    }

    /// Keys held, expired or not.
    pub fn len(&self) -> usize {
        self.until.len()
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
    }

    #[test]
    fn a_full_set_makes_room_by_dropping_what_expired_and_no_more() {
        let mut set = ShortLived::new(3);
        for (key, until) in [("a", 100), ("b", 100), ("c", 500)] {
            let hash = set.hash(key);
            set.insert(hash, until);
        }
        assert_eq!(set.room(50), 0, "nothing expired yet: full");
        assert_eq!(set.room(100), 2, "a and b expired and went");
        assert!(set.holds("c", 100));
        assert_eq!(set.len(), 1);
    }
}
