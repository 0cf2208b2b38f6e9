//! An in-memory [`RelayStore`]: the same behaviour as the persistent store (TTLs, bounded
//! size, the message map), lost on restart, and on tokio's clock so paused-time tests can
//! move past expiries. Used by unit tests of the core and egress.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use futures_util::future::BoxFuture;
use tokio::time::Instant;

use super::held::HeldEntry;
use super::stats::{self, Day, DayCounts, DayRow};
use super::{DaySenders, OriginEntry, OutboxEntry, OutboxPut, RelayStore, StoreError, WriteBatch};

/// Keys (and origins) kept at most, so a flood of unique ids cannot exhaust memory.
pub const DEFAULT_CAPACITY: usize = 1_000_000;

/// The store's state.
#[derive(Default)]
struct State {
    /// Key → when it expires.
    keys: HashMap<String, Instant>,
    /// Keys in insertion order, for eviction at capacity.
    key_order: VecDeque<String>,
    /// Origin key → entry.
    origins: HashMap<String, OriginEntry>,
    /// Origin keys in insertion order, for eviction at capacity.
    origin_order: VecDeque<String>,
    /// Copy key → origin key.
    copies: HashMap<String, String>,
    /// Outboxes: account → seq → entry.
    outboxes: HashMap<String, BTreeMap<u64, OutboxEntry>>,
    /// `(account, key)` → seq of the outbox entry.
    outbox_index: HashMap<(String, String), u64>,
    /// The last outbox sequence number.
    outbox_seq: u64,
    /// Group health: [`stats::row_key`] → counts.
    stats_rows: BTreeMap<String, DayCounts>,
    /// Group health: row key → sender digests.
    stats_senders: BTreeMap<String, BTreeSet<String>>,
    /// Messages held for review, by id.
    held: HashMap<String, HeldEntry>,
}

/// The store.
pub struct MemoryStore {
    /// Guarded state; a std mutex because it is never held across an await.
    state: Mutex<State>,
    /// Most keys, and most origins, kept.
    capacity: usize,
}

impl MemoryStore {
    /// A store holding at most `capacity` keys and `capacity` origins.
    pub fn new(capacity: usize) -> MemoryStore {
        MemoryStore {
            state: Mutex::new(State::default()),
            capacity: capacity.max(1),
        }
    }

    /// Keys currently held (expired ones may linger until evicted).
    pub fn len(&self) -> usize {
        self.lock().keys.len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The state, recovering from a poisoned lock.
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The synchronous body of [`RelayStore::write`].
    fn apply(&self, batch: WriteBatch) {
        let now = Instant::now();
        let mut state = self.lock();
        for (key, ttl) in batch.keys {
            while state.keys.len() >= self.capacity {
                match state.key_order.pop_front() {
                    Some(old) => {
                        state.keys.remove(&old);
                    }
                    None => break,
                }
            }
            if state.keys.insert(key.clone(), now + ttl).is_none() {
                state.key_order.push_back(key);
            }
        }
        for delta in &batch.stats {
            let key = stats::row_key(delta.day, &delta.account, &delta.group);
            if !delta.counts.is_empty() {
                state
                    .stats_rows
                    .entry(key.clone())
                    .or_default()
                    .merge(&delta.counts);
            }
            if !delta.senders.is_empty() {
                state
                    .stats_senders
                    .entry(key)
                    .or_default()
                    .extend(delta.senders.iter().cloned());
            }
        }
        if let Some(sweep) = batch.stats_sweep {
            let (rows_end, senders_end) = (
                stats::day_text(sweep.rows_before),
                stats::day_text(sweep.senders_before),
            );
            state.stats_rows.retain(|key, _| *key >= rows_end);
            state.stats_senders.retain(|key, _| *key >= senders_end);
            while state.stats_rows.len() as u64 > sweep.max_rows {
                state.stats_rows.pop_first();
            }
            let mut digests: u64 = state.stats_senders.values().map(|s| s.len() as u64).sum();
            while digests > sweep.max_digests {
                let Some(mut oldest) = state.stats_senders.first_entry() else {
                    break;
                };
                let over = (digests - sweep.max_digests) as usize;
                let set = oldest.get_mut();
                if set.len() <= over {
                    digests -= set.len() as u64;
                    oldest.remove();
                } else {
                    for _ in 0..over {
                        set.pop_first();
                    }
                    digests -= over as u64;
                }
            }
        }
        for entry in batch.held {
            state.held.insert(entry.id.clone(), entry);
        }
        for id in &batch.held_done {
            state.held.remove(id);
        }
        for (account, key) in batch.outbox_done {
            if let Some(seq) = state.outbox_index.remove(&(account.clone(), key)) {
                if let Some(outbox) = state.outboxes.get_mut(&account) {
                    outbox.remove(&seq);
                }
            }
        }
        for record in batch.copies {
            if !state.origins.contains_key(&record.origin_key) {
                while state.origins.len() >= self.capacity {
                    let Some(old) = state.origin_order.pop_front() else {
                        break;
                    };
                    if let Some(entry) = state.origins.remove(&old) {
                        for copy in entry.copies {
                            state.copies.remove(&super::keys::origin(
                                &copy.account,
                                &copy.group,
                                &copy.id,
                            ));
                        }
                    }
                }
                let mut entry = record.origin.clone();
                entry.copies.clear();
                state.origins.insert(record.origin_key.clone(), entry);
                state.origin_order.push_back(record.origin_key.clone());
            }
            for copy in record.copies {
                state.copies.insert(
                    super::keys::origin(&copy.account, &copy.group, &copy.id),
                    record.origin_key.clone(),
                );
                if let Some(entry) = state.origins.get_mut(&record.origin_key) {
                    if !entry.copies.contains(&copy) {
                        entry.copies.push(copy);
                    }
                }
            }
        }
    }
}

impl RelayStore for MemoryStore {
    fn holds_any<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<bool, StoreError>> {
        let now = Instant::now();
        let state = self.lock();
        let held = keys
            .iter()
            .any(|key| state.keys.get(key).is_some_and(|at| *at > now));
        Box::pin(async move { Ok(held) })
    }

    fn write(&self, batch: WriteBatch) -> BoxFuture<'_, Result<(), StoreError>> {
        self.apply(batch);
        Box::pin(async { Ok(()) })
    }

    fn origin<'a>(
        &'a self,
        origin_key: &'a str,
    ) -> BoxFuture<'a, Result<Option<OriginEntry>, StoreError>> {
        let entry = self.lock().origins.get(origin_key).cloned();
        Box::pin(async move { Ok(entry) })
    }

    fn origin_of_copy<'a>(
        &'a self,
        copy_key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        let origin = self.lock().copies.get(copy_key).cloned();
        Box::pin(async move { Ok(origin) })
    }

    fn outbox_put(&self, account: &str, entry: OutboxEntry) -> OutboxPut {
        let now = Instant::now();
        let mut state = self.lock();
        let sent = state.keys.get(&entry.key).is_some_and(|at| *at > now);
        let index = (account.to_owned(), entry.key.clone());
        let added = !sent && !state.outbox_index.contains_key(&index);
        if added {
            state.outbox_seq += 1;
            let seq = state.outbox_seq;
            state.outbox_index.insert(index, seq);
            state
                .outboxes
                .entry(account.to_owned())
                .or_default()
                .insert(seq, entry);
        }
        Box::pin(async move { Ok(added) })
    }

    fn stats_rows(&self, from: Day, to: Day) -> BoxFuture<'_, Result<Vec<DayRow>, StoreError>> {
        let (start, end) = (stats::day_text(from), stats::day_text(to.saturating_add(1)));
        let rows = self
            .lock()
            .stats_rows
            .range(start..end)
            .filter_map(|(key, counts)| {
                let (day, account, group) = stats::parse_row_key(key)?;
                Some(DayRow {
                    account: account.to_owned(),
                    group: group.to_owned(),
                    day,
                    counts: counts.clone(),
                })
            })
            .collect();
        Box::pin(async move { Ok(rows) })
    }

    fn stats_senders<'a>(
        &'a self,
        account: &'a str,
        group: &'a str,
        from: Day,
        to: Day,
    ) -> BoxFuture<'a, Result<DaySenders, StoreError>> {
        let state = self.lock();
        let days = (from..=to)
            .filter_map(|day| {
                let digests = state
                    .stats_senders
                    .get(&stats::row_key(day, account, group))?;
                Some((day, digests.iter().cloned().collect()))
            })
            .collect();
        Box::pin(async move { Ok(days) })
    }

    fn held(&self) -> BoxFuture<'_, Result<Vec<HeldEntry>, StoreError>> {
        let mut entries: Vec<HeldEntry> = self.lock().held.values().cloned().collect();
        super::held::oldest_first(&mut entries);
        Box::pin(async move { Ok(entries) })
    }

    fn outbox<'a>(
        &'a self,
        account: &'a str,
    ) -> BoxFuture<'a, Result<Vec<OutboxEntry>, StoreError>> {
        let entries = self
            .lock()
            .outboxes
            .get(account)
            .map(|outbox| outbox.values().cloned().collect())
            .unwrap_or_default();
        Box::pin(async move { Ok(entries) })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn keys(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn keys_expire_and_capacity_is_bounded() {
        let store = MemoryStore::new(2);
        let ttl = Duration::from_secs(60);
        let put = |names: &[&str]| WriteBatch {
            keys: names.iter().map(|n| ((*n).to_owned(), ttl)).collect(),
            ..Default::default()
        };
        store.write(put(&["a"])).await.expect("ok");
        assert!(store.holds_any(&keys(&["x", "a"])).await.expect("ok"));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(
            !store.holds_any(&keys(&["a"])).await.expect("ok"),
            "expired"
        );
        store.write(put(&["b", "c"])).await.expect("ok");
        assert_eq!(store.len(), 2, "oldest key evicted at capacity");
        assert!(store.holds_any(&keys(&["c"])).await.expect("ok"));
    }
}
