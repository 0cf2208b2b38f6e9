//! A bounded memory of recently relayed DingTalk message ids, so a frame the gateway delivers
//! twice (PROTOCOLS.md §3.4: duplicates happen even after an ACK) is acknowledged again but
//! published only once. The oldest id is forgotten first.

use std::collections::{HashSet, VecDeque};

/// Recently seen ids, at most `capacity` of them.
#[derive(Debug)]
pub struct RecentIds {
    /// Ids in arrival order, for eviction.
    order: VecDeque<String>,
    /// The same ids, for lookups.
    seen: HashSet<String>,
    /// Most ids kept.
    capacity: usize,
}

impl RecentIds {
    /// An empty set keeping at most `capacity` ids.
    pub fn new(capacity: usize) -> RecentIds {
        RecentIds {
            order: VecDeque::new(),
            seen: HashSet::new(),
            capacity: capacity.max(1),
        }
    }

    /// True when `id` was recorded and not yet evicted.
    pub fn contains(&self, id: &str) -> bool {
        self.seen.contains(id)
    }

    /// Records `id`, evicting the oldest when full.
    pub fn insert(&mut self, id: &str) {
        if self.seen.contains(id) {
            return;
        }
        while self.order.len() >= self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.order.push_back(id.to_owned());
        self.seen.insert(id.to_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_within_capacity_and_forgets_the_oldest() {
        let mut recent = RecentIds::new(2);
        recent.insert("a");
        recent.insert("b");
        recent.insert("b");
        assert!(recent.contains("a") && recent.contains("b"));
        recent.insert("c");
        assert!(!recent.contains("a"));
        assert!(recent.contains("b") && recent.contains("c"));
    }
}
