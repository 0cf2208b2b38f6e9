//! Where the relay remembers what it has seen and sent (ARCHITECTURE.md §4, §5): dedup keys
//! with a time to live, the egress send log, the echo-guard fingerprints, and the message map
//! (origin message ↔ relayed copies) behind recall and reply sync.
//!
//! [`RelayStore`] is the seam: [`PersistentStore`] (redb under `state_dir`, crash-safe, the
//! daemon's store), [`RedisStore`] (shared by the processes of a scaled-out deployment) and
//! [`MemoryStore`] (for unit tests) implement it; [`message_map`] holds
//! the recall/reply logic on top of it, and [`keys`] how the keys are made.

pub mod keys;
pub mod memory;
pub mod message_map;
pub mod persistent;
pub mod redis;

use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

pub use memory::MemoryStore;
pub use persistent::PersistentStore;
pub use redis::RedisStore;

/// How long an envelope id (and a cross-bot content key) is remembered for redelivery dedup.
pub const DEDUP_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long the send log remembers that an outbound message was sent to a destination.
pub const SEND_LOG_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long egress remembers what it sent to a group, for the echo guard.
pub const ECHO_TTL: Duration = Duration::from_secs(120);
/// How long the message map keeps an origin message and its copies.
pub const MAP_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Errors of a store backend.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// Another process holds the store (a second daemon on the same `state_dir`).
    #[error("the state store `{path}` is in use by another process (is another qunbridge running with the same state_dir?)")]
    Locked {
        /// The store file.
        path: String,
    },
    /// The store file cannot be read: corrupt, truncated, or not a qunbridge store.
    #[error("the state store `{path}` cannot be opened: {reason}; start once with `qunbridge run --reset-state` to move it aside and begin with an empty store")]
    Unreadable {
        /// The store file.
        path: String,
        /// What the backend said.
        reason: String,
    },
    /// The backend failed while running; the message says how.
    #[error("store backend failed: {0}")]
    Backend(String),
    /// The store has stopped (shutdown).
    #[error("the store has stopped")]
    Stopped,
}

/// One relayed copy of an origin message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Copy {
    /// The account that sent it.
    pub account: String,
    /// The group it went to.
    pub group: String,
    /// Its id on the destination platform.
    pub id: String,
}

/// What the message map knows of one origin message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginEntry {
    /// Origin account.
    pub account: String,
    /// Origin group.
    pub group: String,
    /// Origin message id.
    pub message_id: String,
    /// `Sender: first words…`, for quotes in destinations without a copy.
    pub excerpt: String,
    /// The copies egress sent.
    pub copies: Vec<Copy>,
}

/// Copies of one origin message to add to the map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyRecord {
    /// The origin's map key ([`keys::origin`]).
    pub origin_key: String,
    /// The origin, as written when the map has no entry for it yet (its `copies` are ignored).
    pub origin: OriginEntry,
    /// The new copies.
    pub copies: Vec<Copy>,
}

/// Writes that must become durable together: one commit, all or nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    /// Keys to hold, each with its time to live.
    pub keys: Vec<(String, Duration)>,
    /// Copies to add to the message map.
    pub copies: Vec<CopyRecord>,
}

impl WriteBatch {
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.copies.is_empty()
    }
}

/// The relay's state. Every write resolves only once it is durable (for the persistent
/// store: committed to disk), so a message is acknowledged to the broker only after what it
/// changed will survive a crash.
pub trait RelayStore: Send + Sync + 'static {
    /// True when any of `keys` is held and has not expired.
    fn holds_any<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Writes a batch; resolves once it is durable.
    fn write(&self, batch: WriteBatch) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The message map's entry for an origin key.
    fn origin<'a>(
        &'a self,
        origin_key: &'a str,
    ) -> BoxFuture<'a, Result<Option<OriginEntry>, StoreError>>;

    /// The origin key a copy key ([`keys::origin`] of the copy's account, group and id)
    /// belongs to.
    fn origin_of_copy<'a>(
        &'a self,
        copy_key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>>;

    /// Claims `keys` for `holder` (an envelope id) for `ttl`: true when no other holder has
    /// any of them. Cores sharing one store use it so that two reports of one message handled
    /// at the same time by two cores are relayed once; a redelivery of the holder itself may
    /// claim again. One process has nothing to race with: by default every claim is granted.
    fn claim<'a>(
        &'a self,
        keys: &'a [String],
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, StoreError>> {
        let _ = (keys, holder, ttl);
        Box::pin(async { Ok(true) })
    }
}
