//! Where the relay remembers what it has seen and sent (ARCHITECTURE.md §4, §5): dedup keys
//! with a time to live, the egress send log, the echo-guard fingerprints, and the message map
//! (origin message ↔ relayed copies) behind recall and reply sync.
//!
//! [`RelayStore`] is the seam: [`PersistentStore`] (redb under `state_dir`, crash-safe, the
//! daemon's store), [`RedisStore`] (shared by the processes of a scaled-out deployment) and
//! [`MemoryStore`] (for unit tests) implement it; [`message_map`] holds
//! the recall/reply logic on top of it, [`keys`] how the keys are made, [`stats`] what group
//! health keeps and [`held`] the messages held for review; `short_lived` holds the persistent
//! store's two-minute keys in memory and `outbox_index` where its outbox entries are.

pub mod held;
pub mod keys;
pub mod memory;
pub mod message_map;
mod outbox_index;
pub mod persistent;
pub mod redis;
mod short_lived;
pub mod stats;
mod table_letters;

use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use held::HeldEntry;
use stats::{Day, DayRow, StatsDelta};

pub use memory::MemoryStore;
pub use persistent::PersistentStore;
pub use redis::RedisStore;
pub(crate) use short_lived::Prehashed;

/// How long the core remembers an envelope id ([`keys::envelope`]) to drop a redelivered
/// copy. Redeliveries come within seconds (a broker resending what was unacknowledged at a
/// reconnect, DingTalk Stream resending an event it got no ACK for); one later than this
/// still reaches no group twice, because egress drops it by the send log
/// ([`SEND_LOG_TTL`]). Ten minutes is as long as a short-lived key lives, so the persistent store
/// holds these keys in memory rather than in its key table, where each, landing anywhere in
/// the B-tree, cost a page write per commit.
pub const REDELIVERY_TTL: Duration = Duration::from_secs(600);
/// How long an `api` feed remembers the key of a message it appended, so that a copy sent
/// again is not appended twice.
pub const DEDUP_TTL: Duration = Duration::from_secs(24 * 3600);
/// How long a cross-bot key ([`keys::content`]: the same message, or join or leave, reported
/// by a second bot account of the group) is remembered. Such reports come seconds apart, and
/// a key this short-lived is held in memory by the persistent store rather than written to
/// its key table, where each, a digest landing anywhere in the B-tree, cost a page write.
pub const CROSS_BOT_TTL: Duration = Duration::from_secs(300);
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
    /// Outbox entries that are settled (sent or dropped), as `(account, key)`: they leave the
    /// outbox in the same commit that records their send.
    pub outbox_done: Vec<(String, String)>,
    /// Group-health counts to add ([`stats`]).
    pub stats: Vec<StatsDelta>,
    /// Group-health data to sweep: by age, then down to the caps.
    pub stats_sweep: Option<stats::StatsSweep>,
    /// Messages held for review, written with the dedup keys of the same messages.
    pub held: Vec<HeldEntry>,
    /// Ids of held entries released, dropped or expired: they leave the held table.
    pub held_done: Vec<String>,
}

impl WriteBatch {
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
            && self.copies.is_empty()
            && self.outbox_done.is_empty()
            && self.stats.is_empty()
            && self.stats_sweep.is_none()
            && self.held.is_empty()
            && self.held_done.is_empty()
    }

    /// Adds `other`'s writes to this batch, so both become durable in one commit (a sweep
    /// `other` asks for replaces this batch's).
    pub fn absorb(&mut self, other: WriteBatch) {
        let WriteBatch {
            keys,
            copies,
            outbox_done,
            stats,
            stats_sweep,
            held,
            held_done,
        } = other;
        self.keys.extend(keys);
        self.copies.extend(copies);
        self.outbox_done.extend(outbox_done);
        self.stats.extend(stats);
        if stats_sweep.is_some() {
            self.stats_sweep = stats_sweep;
        }
        self.held.extend(held);
        self.held_done.extend(held_done);
    }
}

/// The sender digests of one group, per day.
pub type DaySenders = Vec<(Day, Vec<String>)>;

/// A message waiting in an account's durable outbox (ARCHITECTURE.md §4: "the broker is
/// transport, the store is the queue"): egress puts every outbound delivery here before it
/// acknowledges the broker, and takes it out when the message is settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Its send-log key ([`keys::sent`]), unique per message and destination: a message
    /// already sent, or already waiting, is not put twice.
    pub key: String,
    /// The outbound message as the broker delivered it (JSON).
    pub payload: Vec<u8>,
    /// When it entered the outbox (ms since the Unix epoch): `max_delay` counts from here,
    /// across restarts too.
    pub queued_ms: u64,
}

impl OutboxEntry {
    /// The entry as stored: when it was queued (8 bytes), its key's length (4 bytes), the
    /// key, then the payload.
    pub fn encode(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(12 + self.key.len() + self.payload.len());
        bytes.extend_from_slice(&self.queued_ms.to_le_bytes());
        bytes.extend_from_slice(&(self.key.len() as u32).to_le_bytes());
        bytes.extend_from_slice(self.key.as_bytes());
        bytes.extend_from_slice(&self.payload);
        bytes
    }

    /// Reads a stored entry; `None` when the bytes are not one.
    pub fn decode(bytes: &[u8]) -> Option<OutboxEntry> {
        let queued_ms = u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?);
        let key_len = u32::from_le_bytes(bytes.get(8..12)?.try_into().ok()?) as usize;
        let key = std::str::from_utf8(bytes.get(12..12usize.checked_add(key_len)?)?).ok()?;
        Some(OutboxEntry {
            key: key.to_owned(),
            payload: bytes.get(12 + key_len..)?.to_vec(),
            queued_ms,
        })
    }
}

/// The outcome of an outbox put, once durable.
pub type OutboxPut = BoxFuture<'static, Result<bool, StoreError>>;

/// The relay's state. Every write resolves only once it is durable (for the persistent
/// store: committed to disk), so a message is acknowledged to the broker only after what it
/// changed will survive a crash.
pub trait RelayStore: Send + Sync + 'static {
    /// True when any of `keys` is held and has not expired.
    fn holds_any<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<bool, StoreError>>;

    /// Writes a batch; resolves once it is durable.
    fn write(&self, batch: WriteBatch) -> BoxFuture<'_, Result<(), StoreError>>;

    /// True when an `api` feed kept in this store holds an event under `key`
    /// ([`qunbridge_connectors::api::feed_key`]) that has not expired: the send log of a
    /// keyed `api` send. A store that keeps no feeds holds none.
    fn feed_holds<'a>(&'a self, key: &'a str) -> BoxFuture<'a, Result<bool, StoreError>> {
        let _ = key;
        Box::pin(async { Ok(false) })
    }

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

    /// Puts a message in `account`'s outbox, unless it was sent already (its key is in the
    /// send log) or is waiting already. The write is queued when this is called, so a later
    /// write (the settle of the same message) is applied after it; the returned future
    /// resolves once it is durable, with `true` when the message was added.
    fn outbox_put(&self, account: &str, entry: OutboxEntry) -> OutboxPut;

    /// Everything waiting in `account`'s outbox, oldest first.
    fn outbox<'a>(
        &'a self,
        account: &'a str,
    ) -> BoxFuture<'a, Result<Vec<OutboxEntry>, StoreError>>;

    /// Every message held for review, oldest first.
    fn held(&self) -> BoxFuture<'_, Result<Vec<HeldEntry>, StoreError>>;

    /// Every group's day rows from day `from` to day `to`, both included, ordered by day.
    fn stats_rows(&self, from: Day, to: Day) -> BoxFuture<'_, Result<Vec<DayRow>, StoreError>>;

    /// The sender digests of `account`'s `group` on each day from `from` to `to` (both
    /// included) that has any.
    fn stats_senders<'a>(
        &'a self,
        account: &'a str,
        group: &'a str,
        from: Day,
        to: Day,
    ) -> BoxFuture<'a, Result<DaySenders, StoreError>>;

    /// The group-health digest key shared by every process of a deployment on this store:
    /// `candidate` when none was kept yet (it is kept from now on), else the kept one.
    /// `None` when the store keeps no key (one process: the key is a file in `state_dir`).
    fn shared_stats_key(
        &self,
        candidate: [u8; 32],
    ) -> BoxFuture<'_, Result<Option<[u8; 32]>, StoreError>> {
        let _ = candidate;
        Box::pin(async { Ok(None) })
    }

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
