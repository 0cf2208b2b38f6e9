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

/// The key an event of `account`'s `group` is appended under: the outbound message's id
/// (the inbound envelope's) with the account and group it was sent to, so the same message
/// relayed to two `api` accounts, or to two groups of one, is an event in each. The relay
/// asks the store for it to know that a message reached a keyed feed (it writes no send-log
/// key of its own for such a send).
pub fn feed_key(account: &str, outbound_id: &str, group: &str) -> String {
    let mut key = String::with_capacity(account.len() + outbound_id.len() + group.len() + 2);
    key.push_str(account);
    key.push('\u{1f}');
    key.push_str(outbound_id);
    key.push('\u{1f}');
    key.push_str(group);
    key
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

    /// Appends an event unless one with the same `key` ([`feed_key`]) is
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
