//! Where the `api` connector keeps what it delivered, so that a consumer resuming with
//! `Last-Event-ID` after a daemon restart gets exactly what it missed. The relay implements
//! [`FeedLog`] on its crash-safe store; without one the feed lives in memory only.

use futures_util::future::BoxFuture;

/// Why the feed log failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("feed log: {0}")]
pub struct FeedLogError(pub String);

/// The outcome of an append.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The event's sequence number in its group.
    pub seq: u64,
    /// False when the same message (same `key`) was appended before: nothing new was written
    /// and `seq` is the earlier event's.
    pub fresh: bool,
}

/// A durable, bounded, per-group log of delivered events.
pub trait FeedLog: Send + Sync + 'static {
    /// A number that stays the same for the life of the log, so event ids from before a
    /// restart stay valid after it.
    fn epoch(&self) -> u64;

    /// The newest `limit` events of `account`/`group`, oldest first, and the sequence number
    /// the next event will get.
    fn recent(
        &self,
        account: &str,
        group: &str,
        limit: usize,
    ) -> Result<(Vec<(u64, String)>, u64), FeedLogError>;

    /// Appends an event unless one with the same `key` (the outbound id and destination) is
    /// already there; keeps the newest `keep` events of the group (a log may remove older
    /// ones in batches, so it may hold some more until then: [`FeedLog::recent`] is asked
    /// for what a consumer may get). Resolves once the event is on
    /// disk, so a message is acknowledged to the broker only when a consumer can get it.
    /// Appends are applied in the order of the calls (not of the first polls), so a
    /// connector may keep several in flight and still number a group's events in order.
    fn append(
        &self,
        account: String,
        group: String,
        key: String,
        json: String,
        keep: usize,
    ) -> BoxFuture<'static, Result<Appended, FeedLogError>>;
}
