//! Where the relay remembers what it has seen. For now one backend, in memory with a TTL
//! ([`memory::MemoryStore`]); the trait is what a persistent (redb) or shared (Redis) backend
//! will implement.

pub mod memory;
pub mod message_map;

use std::time::Duration;

use qunbridge_connectors::context::BoxFuture;

pub use memory::MemoryStore;
pub use message_map::MessageMap;

/// Errors of a store backend.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The backend failed; the message says how.
    #[error("store backend failed: {0}")]
    Backend(String),
}

/// Dedup keys with a time to live.
pub trait DedupStore: Send + Sync + 'static {
    /// Records `key` for `ttl` if it is not there yet. Returns `true` when it was new (the
    /// caller goes on) and `false` when it was already seen (a duplicate). Atomic: of two
    /// concurrent callers with the same key, exactly one gets `true`.
    fn insert_if_absent<'a>(
        &'a self,
        key: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// True when `key` is held and not expired.
    fn contains<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Forgets `key`, so a message whose handling failed can be handled again when the
    /// broker redelivers it.
    fn remove<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<(), StoreError>>;
}
