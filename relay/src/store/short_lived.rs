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
//! The set is a fixed array of slots, allocated a chunk at a time as keys land in it and
//! never grown: open addressing with linear probing, each key kept nearer its home slot than
//! any key it passed ("Robin Hood"), so that a lookup stops as soon as it meets a key closer
//! to home than it would be, and a removal shifts the rest of its run back one slot instead
//! of leaving a tombstone. Without tombstones a steady flow of keys that come and expire
//! leaves the array as it was, so it can run seven-eighths full. A general hash table drops
//! keys by marking their slots, must rebuild or double once marks use up its free slots, and
//! was therefore reserved for twice its most keys: 13 bytes a slot for 100,000 keys, where
//! this holds 225,000 in 12 bytes a slot, 3.1 MB in all.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::time::Duration;

/// Keys written with a time to live up to this are short-lived.
pub const LONGEST: Duration = Duration::from_secs(600);
/// Most short-lived keys held in memory: a relayed message leaves its envelope id for ten
/// minutes and an echo-guard key for two, so this holds a steady 310 messages/s (a message
/// from a platform with cross-bot keys adds its content key for five minutes: about 220 such
/// messages/s), or a burst of 112,000 messages. Past it, further keys go to the table as
/// before. Its slots (the next power of two above eight sevenths of it, 262,144 of 12 bytes)
/// take 3.1 MB once keys have spread over them, allocated as they arrive.
pub const MAX_ENTRIES: usize = 225_000;

/// Hands a table a value that is already a seeded hash of its key (a `u64` digest, as the
/// egress's recent sends keep) as its own hash: hashing it again would add nothing.
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
/// past its expiry; `u32` seconds last until 2106), never 0, which marks an empty slot.
fn seconds(until_ms: u64) -> u32 {
    u32::try_from(until_ms.div_ceil(1000))
        .unwrap_or(u32::MAX)
        .max(1)
}

/// A slot: the key's hash as two halves and its expiry in whole seconds ([`seconds`]), so
/// that a slot packs in 12 bytes where a `u64` would align it to 16. An expiry of 0 marks an
/// empty slot.
type Slot = [u32; 3];

/// An empty slot.
const EMPTY: Slot = [0; 3];

/// The hash a slot holds.
fn hash_of(slot: &Slot) -> u64 {
    u64::from(slot[0]) << 32 | u64::from(slot[1])
}

/// A slot holding `hash` until `until` (seconds).
fn slot(hash: u64, until: u32) -> Slot {
    [(hash >> 32) as u32, hash as u32, until]
}

/// Slots per chunk of the array (12 KiB).
const CHUNK: usize = 1024;

/// The slots, in chunks allocated when a key first lands in them: an idle daemon does not
/// hold the whole array, and one that relays holds it as keys spread over it.
struct Slots {
    /// The chunks, `None` until written.
    chunks: Vec<Option<Box<[Slot]>>>,
    /// Slots in all (a power of two).
    count: usize,
}

impl Slots {
    /// `count` empty slots, none allocated yet.
    fn new(count: usize) -> Slots {
        Slots {
            chunks: (0..count.div_ceil(CHUNK)).map(|_| None).collect(),
            count,
        }
    }

    /// The slot at `at`.
    fn get(&self, at: usize) -> Slot {
        self.chunks
            .get(at / CHUNK)
            .and_then(Option::as_ref)
            .and_then(|chunk| chunk.get(at % CHUNK))
            .copied()
            .unwrap_or(EMPTY)
    }

    /// Puts `slot` at `at`, allocating its chunk the first time.
    fn set(&mut self, at: usize, slot: Slot) {
        let length = CHUNK.min(self.count);
        if let Some(chunk) = self.chunks.get_mut(at / CHUNK) {
            let chunk = chunk.get_or_insert_with(|| vec![EMPTY; length].into_boxed_slice());
            if let Some(held) = chunk.get_mut(at % CHUNK) {
                *held = slot;
            }
        }
    }
}

/// Short-lived keys: hash → expiry.
pub struct ShortLived {
    /// Hashes keys with a seed of this process: the set is rebuilt from the keys themselves
    /// at every start, so the hashes need not be stable across processes.
    hasher: RandomState,
    /// The slots; a key's home is its hash's low bits.
    slots: Slots,
    /// Keys held, expired or not.
    len: usize,
    /// Most entries held.
    cap: usize,
    /// The earliest expiry held (whole seconds, as in the slots), or later: a full set is not
    /// scanned for expired keys again before it, so a set full of live keys costs one scan a
    /// second at most, not one per commit.
    soonest: u32,
}

impl ShortLived {
    /// An empty set holding at most `cap` keys, in the next power of two above eight sevenths
    /// as many slots (see the module's documentation).
    pub fn new(cap: usize) -> ShortLived {
        let slots = cap
            .saturating_mul(8)
            .div_ceil(7)
            .max(cap.saturating_add(1))
            .next_power_of_two()
            .max(8);
        ShortLived {
            hasher: RandomState::new(),
            slots: Slots::new(slots),
            len: 0,
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
        self.find(self.hash(key))
            .is_some_and(|at| u64::from(self.slots.get(at)[2]) * 1000 > now)
    }

    /// How many more keys fit; expired ones are dropped first when the set is full.
    pub fn room(&mut self, now: u64) -> usize {
        if self.len >= self.cap && u64::from(self.soonest) * 1000 <= now {
            self.forget_expired(now);
        }
        self.cap.saturating_sub(self.len)
    }

    /// Holds the hashed key until `until`, ms since the epoch, to the second rounded up (a
    /// later expiry of the same key wins). A new key is not taken when the set already holds
    /// its most: callers ask for [`ShortLived::room`] first, so only the reopening of a store
    /// journaled under a larger most can meet this, and its extra keys are then not held.
    pub fn insert(&mut self, hash: u64, until: u64) {
        let until = seconds(until);
        if let Some(at) = self.find(hash) {
            let mut held = self.slots.get(at);
            held[2] = held[2].max(until);
            self.soonest = self.soonest.min(held[2]);
            self.slots.set(at, held);
            return;
        }
        if self.len >= self.cap {
            return;
        }
        self.soonest = self.soonest.min(until);
        let mask = self.mask();
        let mut moving = slot(hash, until);
        let mut at = self.home(hash);
        let mut distance = 0;
        // The set never fills (`cap` is under the slot count), so an empty slot comes.
        for _ in 0..self.slots.count {
            let resident = self.slots.get(at);
            if resident[2] == 0 {
                self.slots.set(at, moving);
                self.len += 1;
                return;
            }
            let theirs = at.wrapping_sub(hash_of(&resident) as usize) & mask;
            if theirs < distance {
                // The resident is nearer its home than the moving key would be: it moves on.
                self.slots.set(at, moving);
                moving = resident;
                distance = theirs;
            }
            at = (at + 1) & mask;
            distance += 1;
        }
    }

    /// Drops every key expired at `now`; returns how many went.
    pub fn forget_expired(&mut self, now: u64) -> usize {
        let before = self.len;
        let mut soonest = u32::MAX;
        let mut at = 0;
        while at < self.slots.count {
            let held = self.slots.get(at);
            if held[2] == 0 {
                at += 1;
            } else if u64::from(held[2]) * 1000 > now {
                soonest = soonest.min(held[2]);
                at += 1;
            } else {
                // The run's next key moves into this slot: look at it again.
                self.remove(at);
            }
        }
        self.soonest = soonest;
        before - self.len
    }

    /// Keys held, expired or not.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The slot index mask (slots are a power of two).
    fn mask(&self) -> usize {
        self.slots.count - 1
    }

    /// The slot where `hash` would be if nothing were in the way.
    fn home(&self, hash: u64) -> usize {
        hash as usize & self.mask()
    }

    /// Where `hash` is held.
    fn find(&self, hash: u64) -> Option<usize> {
        let mask = self.mask();
        let mut at = self.home(hash);
        for distance in 0..self.slots.count {
            let resident = self.slots.get(at);
            if resident[2] == 0 {
                return None;
            }
            let theirs = hash_of(&resident);
            if theirs == hash {
                return Some(at);
            }
            // Keys are kept nearer home than any they passed: one nearer its home than
            // `hash` would be here means `hash` is not further on.
            if at.wrapping_sub(theirs as usize) & mask < distance {
                return None;
            }
            at = (at + 1) & mask;
        }
        None
    }

    /// Empties the slot `at` and shifts the rest of its run back one slot, up to an empty
    /// slot or a key at its home.
    fn remove(&mut self, at: usize) {
        let mask = self.mask();
        let mut hole = at;
        loop {
            let next = (hole + 1) & mask;
            let following = self.slots.get(next);
            let at_home = next.wrapping_sub(hash_of(&following) as usize) & mask == 0;
            if following[2] == 0 || at_home {
                break;
            }
            self.slots.set(hole, following);
            hole = next;
        }
        self.slots.set(hole, EMPTY);
        self.len -= 1;
    }

    /// The number of slots, which never changes.
    #[cfg(test)]
    fn slot_count(&self) -> usize {
        self.slots.count
    }

    /// The number of chunks of slots allocated.
    #[cfg(test)]
    fn chunks_allocated(&self) -> usize {
        self.slots.chunks.iter().flatten().count()
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
        let a = set.find(set.hash("a")).expect("a is held");
        let mut held = set.slots.get(a);
        held[2] = 1;
        set.slots.set(a, held);
        assert_eq!(set.room(6_000), 0, "no scan before the earliest expiry");
        assert_eq!(set.room(10_000), 1, "a expired and went");
        assert!(set.holds("b", 10_000));
        assert_eq!(set.soonest, 20);
    }

    /// A steady flow of keys near the most the set holds, each dropped when it expires:
    /// there is always room for the next second's keys, every live key is found and every
    /// expired one is not, and the slots stay as they were.
    #[test]
    fn a_steady_flow_near_the_most_keys_keeps_every_live_key_in_the_same_slots() {
        const MOST: usize = 4_000;
        let mut set = ShortLived::new(MOST);
        let slots = set.slot_count();
        assert_eq!(slots, 8_192);
        let mut next: u64 = 0;
        // Each tick (a second) adds 100 keys living 39 ticks and drops the expired: 3,900
        // held, 97.5 % of the most (48 % of the slots); 100 rounds of the whole set.
        for tick in 0..3_900u64 {
            let now = tick * 1000;
            set.forget_expired(now);
            assert!(
                set.room(now) >= 100,
                "tick {tick}: room for the tick's keys"
            );
            for _ in 0..100 {
                next += 1;
                let hash = set.hash(&next.to_string());
                set.insert(hash, now + 39_000);
            }
        }
        assert_eq!(set.len(), 3_900);
        assert_eq!(set.slot_count(), slots);
        let now = 3_899 * 1000;
        for key in next - 3_899..=next {
            assert!(set.holds(&key.to_string(), now), "key {key} is live");
        }
        for key in next - 4_500..next - 3_900 {
            assert!(!set.holds(&key.to_string(), now), "key {key} expired");
        }
    }

    /// An empty set holds no slots yet; a few keys allocate only the chunks they land in.
    #[test]
    fn slots_are_allocated_where_keys_land() {
        let mut set = ShortLived::new(MAX_ENTRIES);
        assert_eq!(set.slot_count(), 262_144);
        assert_eq!(set.chunks_allocated(), 0);
        assert!(!set.holds("nothing yet", 0));
        for key in 0..10u32 {
            let hash = set.hash(&key.to_string());
            set.insert(hash, 10_000);
        }
        assert!((1..=10).contains(&set.chunks_allocated()));
        assert!((0..10u32).all(|key| set.holds(&key.to_string(), 0)));
    }

    /// A set filled to its most: every key is found, and a key it does not hold is not,
    /// though seven-eighths of the slots are taken.
    #[test]
    fn a_full_set_finds_each_of_its_keys() {
        let mut set = ShortLived::new(7_168);
        assert_eq!(set.slot_count(), 8_192);
        for key in 0..7_168u32 {
            let hash = set.hash(&key.to_string());
            set.insert(hash, 10_000);
        }
        assert_eq!(set.room(0), 0);
        let over = set.hash("one too many");
        set.insert(over, 10_000);
        assert_eq!(set.len(), 7_168, "a key past the most is not taken");
        assert!(!set.holds("one too many", 0));
        assert!((0..7_168u32).all(|key| set.holds(&key.to_string(), 0)));
        assert!((7_168..20_000u32).all(|key| !set.holds(&key.to_string(), 0)));
    }

    /// One step of the model test: a key (of a few, so that they collide and repeat) and
    /// when it expires, or the clock moving on and expired keys dropped.
    #[derive(Debug, Clone)]
    enum Step {
        Insert { hash: u64, until: u64 },
        Forget { now: u64 },
    }

    /// Hashes whose homes crowd a few neighbouring slots of a 16-slot set, the last slots
    /// among them, so that runs wrap around the end.
    fn crowded_hash() -> impl proptest::strategy::Strategy<Value = u64> {
        use proptest::prelude::*;
        (prop::sample::select(vec![13u64, 14, 15, 0, 1]), 0u64..4)
            .prop_map(|(home, high)| high << 40 | home)
    }

    fn step() -> impl proptest::strategy::Strategy<Value = Step> {
        use proptest::prelude::*;
        prop_oneof![
            3 => (crowded_hash(), 1u64..40).prop_map(|(hash, until)| Step::Insert {
                hash,
                until: until * 1000,
            }),
            1 => (0u64..40).prop_map(|now| Step::Forget { now: now * 1000 }),
        ]
    }

    proptest::proptest! {
        /// The set agrees with a plain map of hash to expiry on what it holds, through
        /// inserts, repeated keys, expiries and removals that shift runs across the end of
        /// its slots.
        #[test]
        fn the_set_holds_what_a_plain_map_holds(steps in proptest::collection::vec(step(), 1..120)) {
            let mut set = ShortLived::new(12);
            let mut model: std::collections::HashMap<u64, u32> = std::collections::HashMap::new();
            for step in steps {
                match step {
                    Step::Insert { hash, until } => {
                        let known = model.contains_key(&hash);
                        if known || model.len() < 12 {
                            let held = model.entry(hash).or_insert(0);
                            *held = (*held).max(seconds(until));
                        }
                        set.insert(hash, until);
                    }
                    Step::Forget { now } => {
                        model.retain(|_, until| u64::from(*until) * 1000 > now);
                        set.forget_expired(now);
                    }
                }
                proptest::prop_assert_eq!(set.len(), model.len());
                for hash in (0u64..4).flat_map(|high| [13u64, 14, 15, 0, 1].map(|home| high << 40 | home)) {
                    let held = set.find(hash).map(|at| set.slots.get(at)[2]);
                    proptest::prop_assert_eq!(held, model.get(&hash).copied(), "hash {:x}", hash);
                }
            }
        }
    }
}
