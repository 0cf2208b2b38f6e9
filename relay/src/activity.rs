//! Counts work in flight across the relay (core and egress), so shutdown can wait until what
//! the process has taken in is done, within the grace period; and how many messages wait per
//! destination ([`QueueDepths`]), which egress updates and the admin status reads.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Shared in-flight counter.
#[derive(Default)]
pub struct Activity {
    /// Deliveries taken from the broker and not yet acknowledged.
    inflight: AtomicUsize,
    /// Woken whenever the counter drops.
    changed: Notify,
    /// Messages waiting per destination; egress updates them, the admin status reads them.
    /// They live here because this is what `run` already shares with every account's egress.
    queue_depths: Arc<QueueDepths>,
}

/// Held while one delivery is being handled; dropping it marks it done.
pub struct WorkGuard {
    /// The counter to decrement.
    activity: Arc<Activity>,
}

impl Drop for WorkGuard {
    fn drop(&mut self) {
        self.activity.inflight.fetch_sub(1, Ordering::AcqRel);
        self.activity.changed.notify_waiters();
    }
}

impl Activity {
    /// A fresh counter.
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity::default())
    }

    /// Marks one delivery as started.
    pub fn start(self: &Arc<Self>) -> WorkGuard {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        WorkGuard {
            activity: self.clone(),
        }
    }

    /// Messages waiting per destination.
    pub fn queue_depths(&self) -> &Arc<QueueDepths> {
        &self.queue_depths
    }

    /// Deliveries in flight now.
    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }

    /// Waits until nothing has been in flight for `quiet` (so messages still hopping from
    /// core to egress are caught), or until `deadline`. Returns true when it went quiet.
    pub async fn wait_idle(&self, quiet: Duration, deadline: Instant) -> bool {
        let mut idle_since: Option<Instant> = None;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            if self.inflight() == 0 {
                let since = *idle_since.get_or_insert(now);
                if now.duration_since(since) >= quiet {
                    return true;
                }
            } else {
                idle_since = None;
            }
            let notified = self.changed.notified();
            let tick = Duration::from_millis(20).min(deadline - now);
            let _ = tokio::time::timeout(tick, notified).await;
        }
    }
}

/// Messages waiting per destination (account, group), for `/api/v1/status`. Destinations
/// stay listed at depth 0 once they have been used.
#[derive(Debug, Default)]
pub struct QueueDepths {
    /// Depth per (account, group).
    by_destination: Mutex<BTreeMap<(String, String), u64>>,
}

/// One destination's queue depth.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct QueueDepth {
    /// The account that sends.
    pub account: String,
    /// The destination group.
    pub group: String,
    /// Messages waiting (whole messages, not parts).
    pub depth: u64,
}

impl QueueDepths {
    /// Every destination seen so far and its depth, ordered by account and group.
    pub fn snapshot(&self) -> Vec<QueueDepth> {
        self.by_destination
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|((account, group), depth)| QueueDepth {
                account: account.clone(),
                group: group.clone(),
                depth: *depth,
            })
            .collect()
    }

    /// Adds `added` and takes away `removed` messages at one destination.
    pub(crate) fn change(&self, account: &str, group: &str, added: u64, removed: u64) {
        let mut depths = self
            .by_destination
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let depth = depths
            .entry((account.to_owned(), group.to_owned()))
            .or_default();
        *depth = depth.saturating_add(added).saturating_sub(removed);
    }
}
