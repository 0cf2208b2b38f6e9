//! The records of what an account sent (send log, message map, echo fingerprint, group-health
//! counts), written for all of the account's destinations by one task: records that queue up
//! while the task is busy or a write is being committed go into the next write together, so
//! a busy account costs the store one job (and the runtime one wake-up when it is durable)
//! per batch of sends rather than per send.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::activity::WorkGuard;
use crate::store::{RelayStore, WriteBatch};

/// Most records merged into one write, so one write stays a bounded piece of a commit.
const MERGED: usize = 256;

/// An acknowledgement (egress's `Ack`, spelled out so this module needs nothing of its parent).
type Acknowledge = Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send + Sync>;

/// The records of one send and what waits for them.
pub(crate) struct Record {
    /// What to write.
    pub batch: WriteBatch,
    /// The acknowledgements of the messages the send settled.
    pub acks: Vec<Acknowledge>,
    /// True when the messages may be acknowledged before the records are written (the
    /// destination itself keeps each message under its own key: a copy sent again is
    /// recognized there); otherwise they are acknowledged once the records are durable.
    pub acks_first: bool,
    /// Keeps the messages counted as in flight (shutdown waits for them) until their records
    /// are written.
    pub work: Vec<Arc<WorkGuard>>,
}

/// Hands records to an account's recorder task.
#[derive(Clone)]
pub(crate) struct Recorder {
    /// The recorder task's queue; unbounded because every record stands for messages the
    /// account's bounded outbox room already holds.
    records: mpsc::UnboundedSender<Record>,
}

impl Recorder {
    /// Starts the recorder of `account`, writing to `store`; it ends once every [`Recorder`]
    /// is dropped and what they handed over is written.
    pub(crate) fn start(account: String, store: Arc<dyn RelayStore>) -> (Recorder, JoinHandle<()>) {
        let (records, queued) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(account, store, queued));
        (Recorder { records }, task)
    }

    /// Queues a send's records. When the recorder is gone (the account stopped), the
    /// messages stay unacknowledged and the broker or the outbox hands them over again.
    pub(crate) fn record(&self, record: Record) {
        if self.records.send(record).is_err() {
            warn!(message = "Send not recorded: the account's recorder stopped; the messages stay unacknowledged.");
        }
    }
}

/// Writes what is queued, merged, with at most one merged write per wake-up, until the queue
/// closes; then waits for the writes still in flight.
async fn run(
    account: String,
    store: Arc<dyn RelayStore>,
    mut queued: mpsc::UnboundedReceiver<Record>,
) {
    let mut writing = FuturesUnordered::new();
    loop {
        tokio::select! {
            Some(()) = writing.next(), if !writing.is_empty() => {}
            record = queued.recv() => {
                let Some(first) = record else { break };
                let mut batch = WriteBatch::default();
                let mut waiting = Vec::new();
                let mut next = Some(first);
                let mut merged = 0;
                while let Some(mut record) = next.take() {
                    if record.acks_first {
                        acknowledge(&mut record.acks).await;
                    }
                    batch.absorb(std::mem::take(&mut record.batch));
                    waiting.push(record);
                    merged += 1;
                    if merged < MERGED {
                        next = queued.try_recv().ok();
                    }
                }
                writing.push(write(store.clone(), account.clone(), batch, waiting));
            }
        }
    }
    while writing.next().await.is_some() {}
}

/// Writes one merged batch, then acknowledges its messages (those not acknowledged yet) and
/// lets them go. A failed write is logged: the sends happened, and only a redelivered copy
/// could then be sent again.
async fn write(
    store: Arc<dyn RelayStore>,
    account: String,
    batch: WriteBatch,
    mut waiting: Vec<Record>,
) {
    if let Err(error) = store.write(batch).await {
        warn!(message = "Send log not updated.", account = %account, %error);
    }
    for record in &mut waiting {
        acknowledge(&mut record.acks).await;
    }
}

/// Calls the acknowledgements not called yet, once each.
async fn acknowledge(acks: &mut Vec<Acknowledge>) {
    for ack in acks.drain(..) {
        ack().await;
    }
}
