//! Bounding the moderation counters' memory: when a map of per-key state is full, its least
//! recently seen keys go, a sixteenth of the cap at once, so the O(n) selection is paid once
//! per many insertions.

use std::collections::HashMap;
use std::hash::Hash;

/// Shrinks `map` to below `cap` by evicting the entries whose `last_seen` is oldest (at least
/// one, at most a sixteenth of `cap`, more only when the map is further over).
pub fn least_recent<K, V, T>(map: &mut HashMap<K, V>, cap: usize, last_seen: impl Fn(&V) -> T)
where
    K: Eq + Hash,
    T: Ord + Copy,
{
    let keep = cap.saturating_sub((cap / 16).max(1));
    if map.len() <= keep {
        return;
    }
    let evict = map.len() - keep;
    let mut seen: Vec<T> = map.values().map(&last_seen).collect();
    let (_, cutoff, _) = seen.select_nth_unstable(evict - 1);
    let cutoff = *cutoff;
    let mut evicted = 0;
    map.retain(|_, value| {
        if evicted < evict && last_seen(value) <= cutoff {
            evicted += 1;
            false
        } else {
            true
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_go_and_a_sixteenth_of_the_cap_is_freed() {
        let mut map: HashMap<u32, u64> = (0..32).map(|k| (k, u64::from(k))).collect();
        least_recent(&mut map, 32, |seen| *seen);
        assert_eq!(map.len(), 30);
        assert!(!map.contains_key(&0) && !map.contains_key(&1));
        let mut small: HashMap<u32, u64> = (0..3).map(|k| (k, 9)).collect();
        least_recent(&mut small, 8, |seen| *seen);
        assert_eq!(small.len(), 3, "under the cap nothing goes");
    }
}
