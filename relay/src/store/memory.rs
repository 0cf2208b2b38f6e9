//! An in-memory dedup store: a hash map of key → expiry plus an expiry-ordered queue, bounded
//! in size (the oldest keys go first when it is full). Lost on restart.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use qunbridge_connectors::context::BoxFuture;
use tokio::time::Instant;

use super::{DedupStore, StoreError};

/// Keys kept at most, so a flood of unique ids cannot exhaust memory.
pub const DEFAULT_CAPACITY: usize = 1_000_000;

/// The keys and their expiry order.
#[derive(Default)]
struct Keys {
    /// Key → when it expires.
    expiry: HashMap<String, Instant>,
    /// (expiry, key) in insertion order; TTLs are equal per caller so this is close to
    /// expiry order, and stale entries are skipped when popped.
    order: VecDeque<(Instant, String)>,
}

/// The store.
pub struct MemoryStore {
    /// Guarded state; a std mutex because it is never held across an await.
    keys: Mutex<Keys>,
    /// Most keys kept.
    capacity: usize,
}

impl MemoryStore {
    /// A store holding at most `capacity` keys.
    pub fn new(capacity: usize) -> MemoryStore {
        MemoryStore {
            keys: Mutex::new(Keys::default()),
            capacity: capacity.max(1),
        }
    }

    /// Keys currently held (expired ones may linger until the next insert).
    pub fn len(&self) -> usize {
        self.lock().expiry.len()
    }

    /// True when no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The state, recovering from a poisoned lock.
    fn lock(&self) -> std::sync::MutexGuard<'_, Keys> {
        self.keys.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The synchronous body of [`DedupStore::insert_if_absent`].
    fn insert(&self, key: &str, ttl: Duration) -> bool {
        let now = Instant::now();
        let mut keys = self.lock();
        // Drop expired keys from the front, and the oldest when over capacity.
        while let Some((at, _)) = keys.order.front() {
            let over = keys.expiry.len() >= self.capacity;
            if *at > now && !over {
                break;
            }
            if let Some((at, old)) = keys.order.pop_front() {
                if keys.expiry.get(&old) == Some(&at) {
                    keys.expiry.remove(&old);
                }
            }
        }
        if let Some(expires) = keys.expiry.get(key) {
            if *expires > now {
                return false;
            }
        }
        let expires = now + ttl;
        keys.expiry.insert(key.to_owned(), expires);
        keys.order.push_back((expires, key.to_owned()));
        true
    }
}

impl DedupStore for MemoryStore {
    fn insert_if_absent<'a>(
        &'a self,
        key: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let fresh = self.insert(key, ttl);
        Box::pin(async move { Ok(fresh) })
    }

    fn contains<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        let now = Instant::now();
        let held = self.lock().expiry.get(key).is_some_and(|at| *at > now);
        Box::pin(async move { Ok(held) })
    }

    fn remove<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        self.lock().expiry.remove(key);
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn keys_expire_and_capacity_is_bounded() {
        let store = MemoryStore::new(2);
        let ttl = Duration::from_secs(60);
        assert!(store.insert_if_absent("a", ttl).await.expect("ok"));
        assert!(!store.insert_if_absent("a", ttl).await.expect("ok"));
        assert!(store.contains("a").await.expect("ok"));
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(
            store.insert_if_absent("a", ttl).await.expect("ok"),
            "expired"
        );
        assert!(store.insert_if_absent("b", ttl).await.expect("ok"));
        assert!(store.insert_if_absent("c", ttl).await.expect("ok"));
        assert_eq!(store.len(), 2, "oldest key evicted at capacity");
        store.remove("c").await.expect("ok");
        assert!(store.insert_if_absent("c", ttl).await.expect("ok"));
    }
}
