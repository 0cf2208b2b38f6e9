//! Flow control over the broker (ARCHITECTURE.md §4, "Accepted means kept"). A broker's
//! PUBACK only means "appended to its log": rumqttd moves a reader that fell further behind
//! than its log holds past the overwritten messages, and mosquitto drops once a queue bound is
//! reached. So qunbridge counts what it has put on the broker and not yet taken off it, in
//! bytes, and a publisher waits for room before publishing ([`Capacity::reserve`]); the
//! consumer gives the room back when it acknowledges the delivery ([`Capacity::release`]).
//!
//! A process that runs both ends of a hop (the default, `role = "all"`) has two pools, one per
//! hop, so no wait can go round in a circle: ingress waits for the inbound pool, which the core
//! frees; the core waits for the outbound pool, which egress frees as soon as a message is in
//! its durable outbox, without waiting for any platform.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

/// The part of a broker's per-filter log one pool may fill (in percent), so a reader can lag
/// by a whole pool and lose nothing.
const POOL_SHARE: u64 = 40;

/// Why a reservation did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    /// No room within the time allowed.
    #[error("no room on the broker within {0:?}")]
    Busy(Duration),
    /// The pool was closed (shutdown).
    #[error("flow control closed")]
    Closed,
}

/// The pools of the two hops (`in/` topics, `out/` topics) in a process that runs both ends
/// of them; empty (no flow control by qunbridge) in a process of a scaled-out deployment, whose
/// external broker must be configured not to drop (see docs/operations.md).
#[derive(Debug, Clone, Default)]
pub struct Hops {
    /// Ingress → core: reserved by account ingress, given back by the core.
    pub inbound: Option<Arc<Capacity>>,
    /// Core → egress: reserved by the core, given back by account egress.
    pub outbound: Option<Arc<Capacity>>,
}

impl Hops {
    /// Both pools, each sized for one hop of a broker that keeps `inbound_log_bytes` for
    /// the inbound filter and `outbound_log_bytes` for each outbound one.
    pub fn new(inbound_log_bytes: u64, outbound_log_bytes: u64) -> Hops {
        Hops {
            inbound: Some(Capacity::for_hop("inbound", inbound_log_bytes)),
            outbound: Some(Capacity::for_hop("outbound", outbound_log_bytes)),
        }
    }

    /// Ends every wait for room (shutdown).
    pub fn close(&self) {
        for pool in [&self.inbound, &self.outbound].into_iter().flatten() {
            pool.close();
        }
    }
}

/// Room on the broker for one hop, in bytes of topic plus payload.
#[derive(Debug)]
pub struct Capacity {
    /// What the hop's name is, for logs.
    name: &'static str,
    /// Free bytes; reservations take from it and releases give back.
    room: Semaphore,
    /// Bytes reserved and not yet released, so a release never gives back more than was taken
    /// (a delivery published by an outside client releases nothing it did not reserve).
    taken: AtomicU64,
    /// Total bytes of the pool.
    limit: u64,
}

impl Capacity {
    /// A pool of `limit` bytes.
    pub fn new(name: &'static str, limit: u64) -> Arc<Capacity> {
        let limit = limit.clamp(1, u64::from(u32::MAX));
        Arc::new(Capacity {
            name,
            room: Semaphore::new(limit as usize),
            taken: AtomicU64::new(0),
            limit,
        })
    }

    /// The pool for one hop of a broker that keeps `log_bytes` per subscription filter.
    pub fn for_hop(name: &'static str, log_bytes: u64) -> Arc<Capacity> {
        Capacity::new(name, log_bytes * POOL_SHARE / 100)
    }

    /// The hop's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Bytes a publish of `payload` to `topic` counts for.
    pub fn size_of(topic: &str, payload: usize) -> u64 {
        (topic.len() + payload) as u64
    }

    /// Waits for `bytes` of room (a message larger than the pool waits for the whole pool),
    /// at most `wait` (`None`: as long as it takes).
    ///
    /// # Errors
    /// [`FlowError::Busy`] after `wait`, [`FlowError::Closed`] once the pool is closed.
    pub async fn reserve(&self, bytes: u64, wait: Option<Duration>) -> Result<(), FlowError> {
        let want = bytes.clamp(1, self.limit) as u32;
        let acquire = self.room.acquire_many(want);
        let permit = match wait {
            Some(limit) => match tokio::time::timeout(limit, acquire).await {
                Ok(permit) => permit,
                Err(_) => return Err(FlowError::Busy(limit)),
            },
            None => acquire.await,
        }
        .map_err(|_| FlowError::Closed)?;
        permit.forget();
        self.taken.fetch_add(u64::from(want), Ordering::AcqRel);
        Ok(())
    }

    /// Gives back the room of one consumed message (what [`Capacity::reserve`] took for it).
    pub fn release(&self, bytes: u64) {
        let want = bytes.clamp(1, self.limit);
        let mut given = 0;
        let _ = self
            .taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |taken| {
                given = want.min(taken);
                Some(taken - given)
            });
        if given > 0 {
            self.room.add_permits(given as usize);
        }
    }

    /// Gives back everything reserved: the broker lost the consumer's session, and with it
    /// every message it held for it, so none of them holds room any more.
    pub fn release_all(&self) {
        let given = self.taken.swap(0, Ordering::AcqRel);
        if given > 0 {
            tracing::warn!(
                message = "The broker lost a session; its messages no longer hold room.",
                hop = self.name,
                bytes = given
            );
            self.room.add_permits(given as usize);
        }
    }

    /// Bytes reserved and not yet released.
    pub fn in_use(&self) -> u64 {
        self.taken.load(Ordering::Acquire)
    }

    /// Ends every wait (shutdown).
    pub fn close(&self) {
        self.room.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_pool_makes_publishers_wait_until_a_consumer_releases() {
        let pool = Capacity::new("test", 100);
        pool.reserve(60, None).await.expect("room");
        pool.reserve(40, None).await.expect("room");
        assert_eq!(
            pool.reserve(10, Some(Duration::from_millis(20))).await,
            Err(FlowError::Busy(Duration::from_millis(20)))
        );
        pool.release(60);
        pool.reserve(50, Some(Duration::from_millis(20)))
            .await
            .expect("room again");
        assert_eq!(pool.in_use(), 90);
    }

    #[tokio::test]
    async fn releases_never_give_back_more_than_was_taken() {
        let pool = Capacity::new("test", 100);
        pool.release(1000);
        pool.reserve(100, None).await.expect("room");
        assert_eq!(
            pool.reserve(1, Some(Duration::from_millis(10))).await,
            Err(FlowError::Busy(Duration::from_millis(10))),
            "an outside delivery's release did not widen the pool"
        );
        pool.release_all();
        assert_eq!(pool.in_use(), 0);
        pool.reserve(100, Some(Duration::from_millis(10)))
            .await
            .expect("all room back");
    }
}
