//! Group members' display names, as `get_group_member_info` tells them, in a bounded cache
//! with a time to live. OneBot v12 message events carry no sender name, so every message
//! would otherwise cost a round trip; and while one lookup for a member is under way, later
//! messages of that member wait for the same answer instead of asking again.
//!
//! Failed lookups are remembered too (for a shorter time), so an implementation that cannot
//! answer is not asked for every message. The cache holds at most `capacity` members: expired
//! entries go first, then the oldest.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// A member of a group: (group id, user id). Names are per group (group nicknames).
pub type MemberKey = (String, String);

/// The answer of a lookup under way: `None` while it runs, then `Some(name or none)`.
pub type Answer = Option<Option<String>>;

/// What the cache knows of one member.
enum Slot {
    /// Answered: the name (or `None` when the lookup failed), valid until `until`.
    Known {
        /// The display name.
        name: Option<String>,
        /// When the entry expires.
        until: Instant,
    },
    /// A lookup is under way; its answer comes on this channel.
    Looking(watch::Receiver<Answer>),
}

/// What [`NameCache::begin`] found.
pub enum Lookup {
    /// A fresh answer: the name, or `None` when the member could not be looked up.
    Hit(Option<String>),
    /// Another lookup for the member is under way: wait for its answer here.
    Wait(watch::Receiver<Answer>),
    /// Nothing known: the caller looks the member up and reports through
    /// [`NameCache::finish`] (or [`NameCache::abandon`]) with this sender.
    Miss(watch::Sender<Answer>),
}

/// The cache's state.
#[derive(Default)]
struct Inner {
    /// Member → slot.
    slots: HashMap<MemberKey, Slot>,
    /// Members in insertion order, for eviction (may hold keys already gone).
    order: VecDeque<MemberKey>,
}

/// Bounded member-name cache with a TTL; shared by the sessions of one account.
pub struct NameCache {
    /// Guarded state (never held across an await).
    inner: Mutex<Inner>,
    /// Most members kept.
    capacity: usize,
    /// How long a found name is trusted (members rename themselves).
    ttl: Duration,
    /// How long a failed lookup is remembered before asking again.
    negative_ttl: Duration,
}

impl NameCache {
    /// An empty cache.
    pub fn new(capacity: usize, ttl: Duration, negative_ttl: Duration) -> NameCache {
        NameCache {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
            ttl,
            negative_ttl,
        }
    }

    /// The state, recovering from a poisoned lock.
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Looks a member up in the cache; on a miss the caller is the one to ask the
    /// implementation, and later callers wait for that answer.
    pub fn begin(&self, key: &MemberKey) -> Lookup {
        let now = Instant::now();
        let mut inner = self.lock();
        match inner.slots.get(key) {
            Some(Slot::Known { name, until }) if *until > now => return Lookup::Hit(name.clone()),
            Some(Slot::Looking(rx)) => return Lookup::Wait(rx.clone()),
            _ => {}
        }
        let (tx, rx) = watch::channel(None);
        if inner.slots.insert(key.clone(), Slot::Looking(rx)).is_none() {
            inner.order.push_back(key.clone());
        }
        self.evict(&mut inner, now);
        Lookup::Miss(tx)
    }

    /// A fresh answer, without starting a lookup: `Some(name or none)` on a hit.
    pub fn peek(&self, key: &MemberKey) -> Option<Option<String>> {
        let now = Instant::now();
        match self.lock().slots.get(key) {
            Some(Slot::Known { name, until }) if *until > now => Some(name.clone()),
            _ => None,
        }
    }

    /// Records the answer of a lookup begun with [`Lookup::Miss`] and wakes its waiters.
    pub fn finish(&self, key: &MemberKey, name: Option<String>, tx: watch::Sender<Answer>) {
        let now = Instant::now();
        let ttl = if name.is_some() {
            self.ttl
        } else {
            self.negative_ttl
        };
        {
            let mut inner = self.lock();
            let slot = Slot::Known {
                name: name.clone(),
                until: now + ttl,
            };
            if inner.slots.insert(key.clone(), slot).is_none() {
                inner.order.push_back(key.clone());
            }
            self.evict(&mut inner, now);
        }
        tx.send_replace(Some(name));
    }

    /// Forgets a lookup that could not be made (no connection): the next message asks again.
    /// Its waiters are answered "unknown".
    pub fn abandon(&self, key: &MemberKey, tx: watch::Sender<Answer>) {
        {
            let mut inner = self.lock();
            if matches!(inner.slots.get(key), Some(Slot::Looking(_))) {
                inner.slots.remove(key);
            }
        }
        tx.send_replace(Some(None));
    }

    /// Members currently cached (answered or being looked up).
    pub fn len(&self) -> usize {
        self.lock().slots.len()
    }

    /// True when nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps the cache within its capacity: expired answers first, then the oldest entries.
    fn evict(&self, inner: &mut Inner, now: Instant) {
        if inner.slots.len() > self.capacity {
            inner
                .slots
                .retain(|_, slot| !matches!(slot, Slot::Known { until, .. } if *until <= now));
        }
        while inner.slots.len() > self.capacity {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            inner.slots.remove(&oldest);
        }
        // Keys of entries that expired and came back pile up in `order`; rebuild it then.
        if inner.order.len() > self.capacity.saturating_mul(2) {
            let live: std::collections::HashSet<&MemberKey> = inner.slots.keys().collect();
            let mut seen = std::collections::HashSet::new();
            let order: VecDeque<MemberKey> = inner
                .order
                .iter()
                .rev()
                .filter(|key| live.contains(key) && seen.insert((*key).clone()))
                .cloned()
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            inner.order = order;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(user: &str) -> MemberKey {
        ("g@chatroom".into(), user.into())
    }

    #[tokio::test(start_paused = true)]
    async fn names_are_cached_until_their_ttl_and_lookups_are_shared() {
        let cache = NameCache::new(10, Duration::from_secs(600), Duration::from_secs(60));
        let Lookup::Miss(tx) = cache.begin(&key("a")) else {
            panic!("a miss first");
        };
        let Lookup::Wait(mut rx) = cache.begin(&key("a")) else {
            panic!("the second caller waits for the first lookup");
        };
        cache.finish(&key("a"), Some("Ann".into()), tx);
        assert_eq!(
            rx.wait_for(Option::is_some).await.expect("answer").clone(),
            Some(Some("Ann".into()))
        );
        assert!(matches!(cache.begin(&key("a")), Lookup::Hit(Some(n)) if n == "Ann"));
        assert_eq!(cache.peek(&key("a")), Some(Some("Ann".into())));
        assert_eq!(cache.peek(&key("z")), None);
        tokio::time::advance(Duration::from_secs(601)).await;
        assert!(matches!(cache.begin(&key("a")), Lookup::Miss(_)), "expired");

        let Lookup::Miss(tx) = cache.begin(&key("b")) else {
            panic!("miss");
        };
        cache.finish(&key("b"), None, tx);
        assert!(
            matches!(cache.begin(&key("b")), Lookup::Hit(None)),
            "failure remembered"
        );
        tokio::time::advance(Duration::from_secs(61)).await;
        assert!(
            matches!(cache.begin(&key("b")), Lookup::Miss(_)),
            "but not for long"
        );

        let Lookup::Miss(tx) = cache.begin(&key("c")) else {
            panic!("miss");
        };
        cache.abandon(&key("c"), tx);
        assert!(
            matches!(cache.begin(&key("c")), Lookup::Miss(_)),
            "abandoned: ask again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_cache_stays_within_its_capacity() {
        let cache = NameCache::new(3, Duration::from_secs(600), Duration::from_secs(60));
        for round in 0..50 {
            for user in 0..5 {
                if let Lookup::Miss(tx) = cache.begin(&key(&format!("u{user}"))) {
                    cache.finish(&key(&format!("u{user}")), Some(format!("n{round}")), tx);
                }
                assert!(cache.len() <= 3, "{} entries", cache.len());
            }
            tokio::time::advance(Duration::from_secs(700)).await;
        }
        assert!(
            cache.lock().order.len() <= 6,
            "the eviction order stays bounded too"
        );
    }
}
