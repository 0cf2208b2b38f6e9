//! The suspect delay (issue 17, `[moderation.wave] suspect_delay`): a member message that
//! carries a link, an invite, a contact or a picture ([`looks_suspect`]) from a member who is
//! new in the group ([`Newcomers`]) waits that long before it is relayed, and is relayed only
//! if its text has not turned out to be part of a spam wave meanwhile — ad blasts reach
//! several groups within seconds, so the first copy, which no detector could have caught,
//! waits for the others to give it away.
//!
//! A waiting message is held like any message held for review (the `suspect` rule), written
//! with its dedup keys before the inbound is acknowledged, so it survives a crash and the
//! ordered pipeline never waits. When its time comes it is released for every destination
//! (rendered under the config then in force) or, when its text is part of a wave, dropped.
//! An operator may release or drop it earlier with `qunbridge moderation`. At start-up every
//! waiting entry in the store is scheduled again (one whose time has passed goes at once; the
//! wave detector starts empty, so it is relayed). In a scaled-out deployment each core
//! process schedules what it held, and all of them what they find at start-up: a release
//! repeated by two processes sends once (the egress send log).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use qunbridge_connectors::Envelope;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::hold::{HeldMessages, HoldError, Released};
use super::moderate::{Moderator, SUSPECT, WAVE};
use super::newcomers::Newcomers;
use crate::metrics::{count_drop, MODERATION_HITS};
use crate::moderation::suspect::looks_suspect;
use crate::store::held::HeldEntry;

/// How long a release that failed (the broker or egress did not take it) waits before it is
/// tried again.
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Messages waiting as suspects: their held entries' ids, by when they were held.
#[derive(Default)]
struct Waiting {
    /// (held at, ms since the Unix epoch; the ids of one message's entries), earliest first.
    queue: BinaryHeap<Reverse<(u64, Vec<String>)>>,
}

/// The suspect delay of a process: who must wait, and the task that lets them go.
pub struct Suspects {
    /// Who is new where; `None` when group health is off (then `suspect_delay` is refused by
    /// the config, so nothing waits).
    newcomers: Option<Newcomers>,
    /// The delay in force, and the wave detector a waiting message is checked against.
    moderator: Arc<Moderator>,
    /// Where waiting messages are held, released and dropped.
    held: Arc<HeldMessages>,
    /// What waits.
    waiting: Mutex<Waiting>,
    /// Wakes the task when something new waits.
    added: tokio::sync::Notify,
}

impl Suspects {
    /// The suspect delay over `held`, judging newness with `newcomers`.
    pub fn new(
        newcomers: Option<Newcomers>,
        moderator: Arc<Moderator>,
        held: Arc<HeldMessages>,
    ) -> Arc<Suspects> {
        Arc::new(Suspects {
            newcomers,
            moderator,
            held,
            waiting: Mutex::new(Waiting::default()),
            added: tokio::sync::Notify::new(),
        })
    }

    /// True when a fresh member message of a linked group must wait: the delay is on, the
    /// sender is new in the group, and the message carries a link, an invite, a contact or a
    /// picture. Every member message is noted as its sender's latest post while the delay is
    /// on. Without the delay this costs one look at the config.
    pub async fn must_wait(&self, envelope: &Envelope) -> bool {
        if self.moderator.suspect_delay().is_none() || !self.moderator.judges_words(envelope) {
            return false;
        }
        let Some(newcomers) = &self.newcomers else {
            return false;
        };
        newcomers.is_new(envelope).await && looks_suspect(envelope)
    }

    /// Notes a membership change of a linked group: a join makes the member new for a while.
    pub fn member_changed(&self, envelope: &Envelope) {
        let joined = envelope
            .member
            .as_ref()
            .is_some_and(|m| m.change == qunbridge_connectors::model::Change::Join);
        if !joined || self.moderator.suspect_delay().is_none() {
            return;
        }
        if let Some(newcomers) = &self.newcomers {
            newcomers.joined(envelope);
        }
    }

    /// Schedules a message's held entries (the `suspect` rule) for their release.
    pub fn wait(&self, entries: &[HeldEntry]) {
        let Some(first) = entries.first() else {
            return;
        };
        let ids = entries.iter().map(|entry| entry.id.clone()).collect();
        self.push(first.held_ms, ids);
    }

    /// Schedules every `suspect` entry in the store (at start-up).
    ///
    /// # Errors
    /// [`crate::store::StoreError`] when the store cannot be read.
    pub async fn load(&self) -> Result<usize, crate::store::StoreError> {
        let mut by_message: BTreeMap<(u64, String), Vec<String>> = BTreeMap::new();
        for entry in self.held.list().await? {
            if entry.rule == SUSPECT {
                by_message
                    .entry((entry.held_ms, entry.envelope.id.clone()))
                    .or_default()
                    .push(entry.id);
            }
        }
        let count = by_message.len();
        for ((held_ms, _), ids) in by_message {
            self.push(held_ms, ids);
        }
        Ok(count)
    }

    /// Adds to the queue and wakes the task.
    fn push(&self, held_ms: u64, ids: Vec<String>) {
        self.lock().queue.push(Reverse((held_ms, ids)));
        self.added.notify_one();
    }

    /// Lets waiting messages go when their time comes, until `stop`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            // A reload may change the delay (or turn it off: then everything goes now).
            let delay = self.moderator.suspect_delay().unwrap_or_default();
            let next = self
                .lock()
                .queue
                .peek()
                .map(|Reverse((held_ms, _))| *held_ms);
            let pause = match next {
                Some(held_ms) => Duration::from_millis(
                    (held_ms + delay.as_millis() as u64).saturating_sub(now_ms()),
                ),
                None => Duration::from_secs(3600),
            };
            if !pause.is_zero() {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = self.added.notified() => continue,
                    _ = tokio::time::sleep(pause) => continue,
                }
            }
            let Some(Reverse((_, ids))) = self.lock().queue.pop() else {
                continue;
            };
            let this = self.clone();
            tokio::spawn(async move { this.settle(ids).await });
        }
    }

    /// Releases a waited message's entries, or drops them when its text is part of a wave
    /// now. Entries an operator released or dropped meanwhile are gone and skipped.
    async fn settle(&self, ids: Vec<String>) {
        let entries: Vec<HeldEntry> = match self.held.list().await {
            Ok(all) => all.into_iter().filter(|e| ids.contains(&e.id)).collect(),
            Err(error) => {
                warn!(message = "Cannot read the messages waiting as suspects; trying again.", %error);
                self.retry(ids);
                return;
            }
        };
        let Some(first) = entries.first() else {
            return;
        };
        if self.moderator.in_wave(&first.envelope).await {
            info!(
                message = "A newcomer's message that waited turned out to be part of a spam wave; it is not relayed.",
                rule = WAVE,
                destinations = entries.len()
            );
            for entry in &entries {
                if let Err(error) = self.held.drop_entry(&entry.id).await {
                    debug!(message = "Waiting message not dropped.", id = %entry.id, %error);
                    continue;
                }
                let platform = self.held.platform_of(entry).unwrap_or("unknown");
                metrics::counter!(
                    MODERATION_HITS,
                    "rule" => WAVE,
                    "action" => "drop",
                    "platform" => platform
                )
                .increment(1);
                count_drop("moderated");
            }
            return;
        }
        let mut again = Vec::new();
        for entry in &entries {
            match self.held.release(&entry.id).await {
                Ok(Released::Sent) => {}
                Ok(outcome) => {
                    debug!(message = "Waiting message not sent after its delay.", id = %entry.id, ?outcome)
                }
                // Released or dropped by an operator meanwhile, or its link is gone.
                Err(error @ (HoldError::Unknown(_) | HoldError::Unrouted(_))) => {
                    debug!(message = "Waiting message left as it is.", id = %entry.id, %error)
                }
                Err(error) => {
                    warn!(message = "A message that waited as a suspect could not be released yet; trying again.", id = %entry.id, %error);
                    again.push(entry.id.clone());
                }
            }
        }
        if !again.is_empty() {
            self.retry(again);
        }
    }

    /// Schedules ids again after [`RETRY_AFTER`].
    fn retry(&self, ids: Vec<String>) {
        let delay = self.moderator.suspect_delay().unwrap_or_default();
        let due = now_ms() + RETRY_AFTER.as_millis() as u64;
        self.push(due.saturating_sub(delay.as_millis() as u64), ids);
    }

    /// The queue, whatever a panicking holder left.
    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    qunbridge_connectors::context::now_ms()
}
