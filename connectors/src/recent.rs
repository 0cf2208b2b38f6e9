//! Counts over the last hour, in one-minute buckets, for the operator console's "relayed and
//! dropped in the last hour": the Prometheus counters only ever grow, and a window needs no
//! timer when each count lands in the bucket of its minute and a read sums the buckets of
//! the last 60 minutes. Keys are `&'static str` labels (a drop reason, a platform pair), never
//! an id.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

/// Minutes a window covers.
pub const WINDOW_MINUTES: u64 = 60;

/// Messages dropped, by reason, over the last hour (fed by [`crate::metrics::count_drops`]).
pub static DROPPED: RecentCounts<&'static str> = RecentCounts::new();
/// Messages relayed, by (origin platform, destination platform), over the last hour.
pub static RELAYED: RecentCounts<(&'static str, &'static str)> = RecentCounts::new();

/// One minute's counts.
#[derive(Debug)]
struct Bucket<K> {
    /// Minutes since the Unix epoch.
    minute: u64,
    /// Counts by key, few (a handful of reasons or platform pairs).
    counts: Vec<(K, u64)>,
}

/// Counts by key over the last [`WINDOW_MINUTES`] minutes.
#[derive(Debug)]
pub struct RecentCounts<K> {
    /// Buckets in minute order, oldest first, none older than the window.
    buckets: Mutex<Vec<Bucket<K>>>,
}

impl<K: Copy + Ord> RecentCounts<K> {
    /// An empty window.
    pub const fn new() -> RecentCounts<K> {
        RecentCounts {
            buckets: Mutex::new(Vec::new()),
        }
    }

    /// Counts `count` under `key` now.
    pub fn add(&self, key: K, count: u64) {
        self.add_at(now_minute(), key, count);
    }

    /// Counts `count` under `key` in `minute` (minutes since the epoch).
    pub fn add_at(&self, minute: u64, key: K, count: u64) {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.last().is_none_or(|last| last.minute < minute) {
            let oldest = minute.saturating_sub(WINDOW_MINUTES - 1);
            buckets.retain(|bucket| bucket.minute >= oldest);
            buckets.push(Bucket {
                minute,
                counts: Vec::new(),
            });
        }
        // A clock stepped back counts into the newest bucket.
        let Some(bucket) = buckets.last_mut() else {
            return;
        };
        match bucket.counts.iter_mut().find(|(k, _)| *k == key) {
            Some((_, total)) => *total += count,
            None => bucket.counts.push((key, count)),
        }
    }

    /// The sums by key over the last hour.
    pub fn last_hour(&self) -> BTreeMap<K, u64> {
        self.last_hour_at(now_minute())
    }

    /// The sums by key over the [`WINDOW_MINUTES`] minutes up to `minute`.
    pub fn last_hour_at(&self, minute: u64) -> BTreeMap<K, u64> {
        let oldest = minute.saturating_sub(WINDOW_MINUTES - 1);
        let buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let mut sums = BTreeMap::new();
        for bucket in buckets.iter().filter(|b| b.minute >= oldest) {
            for (key, count) in &bucket.counts {
                *sums.entry(*key).or_insert(0) += count;
            }
        }
        sums
    }
}

impl<K: Copy + Ord> Default for RecentCounts<K> {
    fn default() -> Self {
        RecentCounts::new()
    }
}

/// Minutes since the Unix epoch.
fn now_minute() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_the_last_sixty_minutes_and_forgets_older_ones() {
        let window: RecentCounts<&'static str> = RecentCounts::new();
        window.add_at(1_000, "duplicate", 2);
        window.add_at(1_000, "filtered", 1);
        window.add_at(1_030, "duplicate", 3);
        window.add_at(1_059, "duplicate", 1);
        let sums = window.last_hour_at(1_059);
        assert_eq!(sums.get("duplicate"), Some(&6));
        assert_eq!(sums.get("filtered"), Some(&1));
        // An hour after minute 1000 its bucket is out of the window.
        let sums = window.last_hour_at(1_060);
        assert_eq!(sums.get("duplicate"), Some(&4));
        assert_eq!(sums.get("filtered"), None);
        // A new minute drops buckets past the window from memory.
        window.add_at(1_200, "expired", 1);
        assert_eq!(window.buckets.lock().expect("lock").len(), 1);
        assert_eq!(
            window.last_hour_at(1_200).into_iter().collect::<Vec<_>>(),
            [("expired", 1)]
        );
    }
}
