//! Egress: how an account's outbound messages leave. One ordered queue and one worker per
//! destination group ([`queue`]), so a destination waiting for its limiter never delays
//! another; pacing per group and per account ([`pacing`]); while a destination waits, what
//! queues up for it is merged into one message up to the platform's length limit
//! ([`coalesce`]); messages longer than the limit are split ([`split`]); one send with its
//! retries and settlement ([`send`]); only messages older than `max_delay` are dropped. How many
//! messages wait per destination is kept in [`QueueDepths`] for the admin status view (the
//! `qunbridge_queue_depth` gauge carries only the account, never the group).

pub mod coalesce;
pub mod pacing;
pub mod queue;
mod record;
pub mod send;
pub mod split;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use futures_util::future::BoxFuture;
use qunbridge_connectors::{EgressCommand, Outbound, Platform};
use tokio::sync::{mpsc, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use self::pacing::Pacer;
use self::record::Recorder;
use crate::activity::{Activity, QueueDepths, WorkGuard};
use crate::metrics::QUEUE_DEPTH;
use crate::policy::EgressPolicy;
use crate::store::RelayStore;

/// Called once a queued message is settled (sent, or dropped and counted), to acknowledge the
/// MQTT delivery it came in. Never called for a message interrupted by shutdown.
pub type Ack = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send + Sync>;

/// One destination's entry in [`QueueDepths`] together with the account's
/// `qunbridge_queue_depth` gauge, so both always move together.
#[derive(Clone)]
pub(crate) struct DepthGauge {
    /// The shared depths.
    depths: Arc<QueueDepths>,
    /// The account that sends.
    account: String,
    /// The destination group.
    group: String,
    /// The account's outbox room, which every queued message takes part of.
    room: Arc<OutboxRoom>,
    /// The account's `qunbridge_queue_depth` gauge, looked up once.
    gauge: metrics::Gauge,
}

impl DepthGauge {
    /// `count` more messages wait.
    pub(crate) fn add(&self, count: u64) {
        self.depths.change(&self.account, &self.group, count, 0);
        self.room.take(count);
        self.gauge.increment(count as f64);
    }

    /// `count` messages left the queue (sent or dropped).
    pub(crate) fn sub(&self, count: u64) {
        if count == 0 {
            return;
        }
        self.depths.change(&self.account, &self.group, 0, count);
        self.room.free(count);
        self.gauge.decrement(count as f64);
    }
}

/// Messages an account's destination queues hold at most (they are in its durable outbox
/// too): beyond it egress stops taking deliveries from the broker, which holds the core's
/// publishes back through flow control, and ingress then pushes back on the platforms.
pub const OUTBOX_LIMIT: u64 = 10_000;
/// Bytes (of outbound JSON) an account's destination queues hold at most, for the same reason:
/// memory stays bounded however far input outruns a destination.
pub const OUTBOX_LIMIT_BYTES: u64 = 8 * 1024 * 1024;

/// How much an account's destination queues hold, against [`OUTBOX_LIMIT`] and
/// [`OUTBOX_LIMIT_BYTES`].
#[derive(Debug)]
pub struct OutboxRoom {
    /// Messages held.
    held: AtomicU64,
    /// Bytes held.
    bytes: AtomicU64,
    /// Most messages held before egress stops taking more.
    limit: u64,
    /// Most bytes held before egress stops taking more.
    limit_bytes: u64,
    /// Woken when messages leave.
    freed: Notify,
}

impl OutboxRoom {
    /// Room for `limit` messages of `limit_bytes` in all.
    pub fn new(limit: u64, limit_bytes: u64) -> Arc<OutboxRoom> {
        Arc::new(OutboxRoom {
            held: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            limit,
            limit_bytes,
            freed: Notify::new(),
        })
    }

    /// True when no more messages should be taken.
    pub fn is_full(&self) -> bool {
        self.held.load(Ordering::Acquire) >= self.limit
            || self.bytes.load(Ordering::Acquire) >= self.limit_bytes
    }

    /// A message of `bytes` is held (until [`OutboxRoom::release_bytes`]).
    pub fn hold_bytes(&self, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::AcqRel);
    }

    /// A message of `bytes` is settled.
    pub fn release_bytes(&self, bytes: u64) {
        let _ = self
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                Some(held.saturating_sub(bytes))
            });
        self.freed.notify_waiters();
    }

    /// Resolves once there is room.
    pub async fn wait(&self) {
        loop {
            let freed = self.freed.notified();
            if !self.is_full() {
                return;
            }
            freed.await;
        }
    }

    /// `count` more messages are held.
    fn take(&self, count: u64) {
        self.held.fetch_add(count, Ordering::AcqRel);
    }

    /// `count` messages left.
    fn free(&self, count: u64) {
        let _ = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                Some(held.saturating_sub(count))
            });
        self.freed.notify_waiters();
    }
}

/// An outbound message waiting in a destination queue.
pub struct Queued {
    /// The message.
    pub outbound: Outbound,
    /// Called once it is settled (sent and recorded, or dropped and counted).
    pub ack: Ack,
    /// Keeps it counted as in flight for shutdown.
    pub work: WorkGuard,
    /// When it entered the outbox: `max_delay` counts from here (across restarts too).
    pub since: Instant,
}

/// An account's pacing and length limits as they are now: a reload replaces them, and every
/// destination worker picks the new ones up before its next send, without losing its queue.
pub struct LivePolicy {
    /// The limits.
    policy: RwLock<Arc<EgressPolicy>>,
    /// The account-wide pacer, shared by every destination (rebuilt when its limit changes).
    account_pacer: RwLock<Option<Arc<Mutex<Pacer>>>>,
    /// Wakes the destination workers waiting for a pacer when a reload changed the limits, so
    /// what already waits goes out under the new ones.
    changed: Notify,
}

impl LivePolicy {
    /// Limits in force from now on.
    pub fn new(policy: EgressPolicy) -> LivePolicy {
        let pacer = policy
            .per_account
            .map(|limit| Arc::new(Mutex::new(Pacer::new(limit))));
        LivePolicy {
            policy: RwLock::new(Arc::new(policy)),
            account_pacer: RwLock::new(pacer),
            changed: Notify::new(),
        }
    }

    /// Resolves when a reload replaces the limits.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// The limits in force.
    pub fn current(&self) -> Arc<EgressPolicy> {
        self.policy
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The account-wide pacer, if the account has a limit.
    pub fn account_pacer(&self) -> Option<Arc<Mutex<Pacer>>> {
        self.account_pacer
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Puts new limits in force; the account pacer starts over only if its limit changed.
    pub fn replace(&self, policy: EgressPolicy) {
        let mut current = self.policy.write().unwrap_or_else(PoisonError::into_inner);
        if current.per_account != policy.per_account {
            *self
                .account_pacer
                .write()
                .unwrap_or_else(PoisonError::into_inner) = policy
                .per_account
                .map(|limit| Arc::new(Mutex::new(Pacer::new(limit))));
        }
        *current = Arc::new(policy);
        drop(current);
        self.changed.notify_waiters();
    }
}

/// What an account's destination workers share.
pub struct AccountEgress {
    /// Account id, for logs and metric labels.
    pub account: String,
    /// Its platform.
    pub platform: Platform,
    /// Its pacing and length limits, replaced on reload.
    pub policy: Arc<LivePolicy>,
    /// The connector's egress queue: sends, and uploads ahead of them.
    pub connector: mpsc::Sender<EgressCommand>,
    /// The send log, the message map and the echo fingerprints.
    pub store: Arc<dyn RelayStore>,
    /// Stops the workers (shutdown after the grace period).
    pub stop: CancellationToken,
    /// How many messages the account's queues hold.
    pub room: Arc<OutboxRoom>,
    /// The account's media context: a destination has the pictures of the message at its
    /// front fetched before it takes the send's pacing token.
    pub media: qunbridge_connectors::media::MediaContext,
    /// Group health: what was relayed into the account's linked groups is counted here.
    pub stats: Option<Arc<crate::stats::StatsCounter>>,
}

/// Spreads an account's messages over per-destination workers.
pub struct Dispatcher {
    /// Shared by the workers.
    shared: Arc<AccountEgress>,
    /// Each destination's queue and its depth.
    workers: HashMap<String, (mpsc::UnboundedSender<Queued>, DepthGauge)>,
    /// The worker tasks.
    tasks: JoinSet<()>,
    /// In-flight counter; also holds the per-destination queue depths.
    activity: Arc<Activity>,
    /// Writes the records of every destination's sends (dropped at [`Dispatcher::finish`],
    /// so the recorder ends once the workers are gone).
    recorder: Recorder,
    /// The recorder's task.
    recording: tokio::task::JoinHandle<()>,
}

impl Dispatcher {
    /// A dispatcher for one account.
    pub fn new(shared: AccountEgress, activity: Arc<Activity>) -> Dispatcher {
        let (recorder, recording) = Recorder::start(shared.account.clone(), shared.store.clone());
        Dispatcher {
            shared: Arc::new(shared),
            workers: HashMap::new(),
            tasks: JoinSet::new(),
            activity,
            recorder,
            recording,
        }
    }

    /// Queues a message for its destination, starting the destination's worker if needed.
    pub fn dispatch(&mut self, queued: Queued) {
        if !self.workers.contains_key(&queued.outbound.group) {
            let group = queued.outbound.group.clone();
            let depth = DepthGauge {
                depths: self.activity.queue_depths().clone(),
                account: self.shared.account.clone(),
                group: group.clone(),
                room: self.shared.room.clone(),
                gauge: metrics::gauge!(QUEUE_DEPTH, "account" => self.shared.account.clone()),
            };
            let (tx, rx) = mpsc::unbounded_channel();
            self.tasks.spawn(queue::run_destination(
                group.clone(),
                rx,
                self.shared.clone(),
                self.recorder.clone(),
                depth.clone(),
            ));
            self.workers.insert(group, (tx, depth));
        }
        let Some((sender, depth)) = self.workers.get(&queued.outbound.group) else {
            return;
        };
        // Counted before the send: the worker may take it off the queue at once.
        depth.add(1);
        if let Err(returned) = sender.send(queued) {
            // The worker ended (stop): the message stays unacknowledged for redelivery.
            drop(returned);
            depth.sub(1);
        }
    }

    /// Closes every queue and waits for the workers (they stop on the stop token, or once
    /// their queues are empty), then for the records of their sends to be written.
    pub async fn finish(mut self) {
        self.workers.clear();
        while self.tasks.join_next().await.is_some() {}
        drop(self.recorder);
        if let Err(error) = self.recording.await {
            tracing::warn!(message = "The recorder of an account's sends failed.", account = %self.shared.account, %error);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::policy::{Limit, Rate};

    #[test]
    fn a_reload_replaces_limits_and_restarts_the_account_pacer_only_when_it_changed() {
        let limit = |count| Limit {
            rate: Rate {
                count,
                per: Duration::from_secs(60),
            },
            burst: 1,
        };
        let mut policy = EgressPolicy::unlimited();
        policy.per_account = Some(limit(20));
        let live = LivePolicy::new(policy.clone());
        let pacer = live.account_pacer().expect("account limit");
        policy.per_group = Some(limit(5));
        live.replace(policy.clone());
        assert_eq!(live.current().per_group, Some(limit(5)));
        assert!(
            Arc::ptr_eq(&pacer, &live.account_pacer().expect("kept")),
            "same limit: same pacer"
        );
        policy.per_account = Some(limit(10));
        live.replace(policy);
        assert!(
            !Arc::ptr_eq(&pacer, &live.account_pacer().expect("new")),
            "new limit: new pacer"
        );
    }
}
