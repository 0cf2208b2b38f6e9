//! Messages held for review (issue 17): a moderation rule whose action is `hold` keeps a
//! (message, destination) in the state store instead of relaying it. The core writes the
//! entry in the same commit as the message's dedup keys and only then acknowledges the
//! inbound, so the ordered pipeline never waits for a person and a crash loses no held
//! message. An operator lists, releases or drops entries through the admin endpoint
//! (`qunbridge moderation …`). A release renders the message for its destination under the
//! routes and filters in force then, without the rule that held it (a word rule's list is
//! left out of the destination's rules for it; flood and wave are judged before any
//! destination, so a release simply does not judge them again), and publishes it; the
//! egress send log makes a release repeated after a crash send once. Entries older than
//! `moderation.hold_max` expire; beyond `moderation.hold_cap` new holds become drops.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use qunbridge_connectors::api::feed_key;
use qunbridge_connectors::Envelope;
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::filter::Dropped;
use super::render::{filter, moderate_name, render};
use super::route::{Destination, SharedRoutes};
use crate::broker::{BrokerClient, Topics};
use crate::config::ModerationConfig;
use crate::metrics::{MODERATION_HELD, MODERATION_HELD_OUTCOMES};
use crate::store::held::{oldest_first, HeldEntry};
use crate::store::{keys, RelayStore, StoreError, WriteBatch};

/// How long a release waits for the broker to take the released message.
pub(crate) const RELEASE_PUBLISH_WAIT: Duration = Duration::from_secs(10);
/// How long a release waits for egress to hold the released message durably.
pub(crate) const RELEASE_EGRESS_WAIT: Duration = Duration::from_secs(10);
/// How long a release waits for the send log before an outbox entry will do: an unpaced
/// destination sends and records a released message within moments, and its outbox entry
/// (written before the send) would confirm the release before the send is recorded, when a
/// crash still means sending it again.
const RELEASE_OUTBOX_AFTER: Duration = Duration::from_secs(2);
/// How often a release looks whether egress holds it.
const RELEASE_POLL: Duration = Duration::from_millis(20);
/// Characters of a held entry's id (from [`ID_ALPHABET`]).
const ID_LENGTH: usize = 6;
/// What held entry ids are made of: lower-case letters and digits, without look-alikes.
const ID_ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
/// Longest and shortest pause between two expiry sweeps.
const SWEEP_AT_MOST: Duration = Duration::from_secs(30);
/// See [`SWEEP_AT_MOST`].
const SWEEP_AT_LEAST: Duration = Duration::from_secs(1);

/// Why a release or drop did not happen.
#[derive(Debug, thiserror::Error)]
pub enum HoldError {
    /// No held entry has this id (released, dropped or expired already, or never held).
    #[error("no held message has the id `{0}`")]
    Unknown(String),
    /// The message's link or destination is gone from the config in force.
    #[error("held message `{0}`: no link routes its origin group to its destination any more; drop it instead")]
    Unrouted(String),
    /// This process runs no relay core, so it cannot publish.
    #[error("this process runs no relay core; release from a process that does")]
    NoCore,
    /// The broker did not take the released message.
    #[error("held message `{id}` could not be published: {reason}")]
    Publish {
        /// The entry.
        id: String,
        /// What went wrong.
        reason: String,
    },
    /// The state store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What happened to a released entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Released {
    /// Published for its destination.
    Sent,
    /// A filter of the destination drops it under the config in force; it left the held
    /// table as dropped.
    Filtered,
    /// A word rule of the destination holds it under the config in force (a message held by
    /// flood, wave or the suspect delay, released into a destination whose word list holds
    /// it): it stays held, now by that list.
    HeldBy(String),
}

/// The held messages of a daemon: admission against the cap, the ids, release, drop and
/// expiry. Shared by the process's cores and its admin endpoint.
pub struct HeldMessages {
    /// Where entries live.
    store: Arc<dyn RelayStore>,
    /// Routes in force, to render a release with.
    routes: SharedRoutes,
    /// `hold_max` and `hold_cap`, replaced by a reload.
    limits: RwLock<(Duration, usize)>,
    /// Entries held now, as this process knows it (resynchronised from the store by every
    /// expiry sweep, so entries of other processes of a scaled-out deployment count too).
    count: AtomicUsize,
    /// The publishing connection and topic names of this process's relay core, once one runs.
    publisher: OnceLock<(BrokerClient, Topics)>,
    /// Wakes the expiry sweep when a reload changed the limits.
    reloaded: tokio::sync::Notify,
}

impl HeldMessages {
    /// Held messages over `store`, with the limits of `config`.
    pub fn new(
        store: Arc<dyn RelayStore>,
        routes: SharedRoutes,
        config: &ModerationConfig,
    ) -> Arc<HeldMessages> {
        Arc::new(HeldMessages {
            store,
            routes,
            limits: RwLock::new((config.hold_max, config.hold_cap)),
            count: AtomicUsize::new(0),
            publisher: OnceLock::new(),
            reloaded: tokio::sync::Notify::new(),
        })
    }

    /// Puts a reloaded config's `hold_max` and `hold_cap` in force.
    pub fn reload(&self, config: &ModerationConfig) {
        *self
            .limits
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            (config.hold_max, config.hold_cap);
        // A shorter hold_max applies at once, not after the pause the old one set.
        self.reloaded.notify_one();
    }

    /// `hold_max` and `hold_cap`.
    fn limits(&self) -> (Duration, usize) {
        *self
            .limits
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The connection a release publishes on: the first relay core of the process gives its
    /// own (later ones change nothing).
    pub fn attach(&self, publisher: BrokerClient, topics: Topics) {
        let _ = self.publisher.set((publisher, topics));
    }

    /// An entry for `envelope` held for `destination` by `rule`, or `None` when the cap is
    /// reached (the hold becomes a drop, counted as `overflow`).
    pub fn admit(
        &self,
        envelope: &Envelope,
        destination: &Destination,
        rule: &str,
    ) -> Option<HeldEntry> {
        let (_, cap) = self.limits();
        let admitted = self
            .count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held < cap).then_some(held + 1)
            })
            .is_ok();
        if !admitted {
            metrics::counter!(MODERATION_HELD_OUTCOMES, "outcome" => "overflow").increment(1);
            return None;
        }
        self.publish_gauge();
        Some(HeldEntry {
            id: new_id(),
            account: destination.target.account.clone(),
            group: destination.target.group.clone(),
            link: destination.link.to_string(),
            rule: rule.to_owned(),
            held_ms: next_held_ms(),
            envelope: envelope.clone(),
        })
    }

    /// Gives back the room of entries admitted but never written (their message will be
    /// redelivered and judged again).
    pub fn forget(&self, entries: usize) {
        let _ = self
            .count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                Some(held.saturating_sub(entries))
            });
        self.publish_gauge();
    }

    /// Every held entry, oldest first.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn list(&self) -> Result<Vec<HeldEntry>, StoreError> {
        let mut entries = self.store.held().await?;
        oldest_first(&mut entries);
        Ok(entries)
    }

    /// The entry with this id.
    async fn find(&self, id: &str) -> Result<HeldEntry, HoldError> {
        self.store
            .held()
            .await?
            .into_iter()
            .find(|entry| entry.id == id)
            .ok_or_else(|| HoldError::Unknown(id.to_owned()))
    }

    /// Releases an entry: renders it for its destination under the config in force (without
    /// judging flood or waves again), publishes it, waits for the broker to take it, and then
    /// takes it out of the held table. A crash in between leaves it listed; releasing it again
    /// is safe, because egress's send log sends one message once.
    ///
    /// # Errors
    /// [`HoldError`] naming what failed; the entry stays held.
    pub async fn release(&self, id: &str) -> Result<Released, HoldError> {
        let entry = self.find(id).await?;
        let Some((publisher, topics)) = self.publisher.get() else {
            return Err(HoldError::NoCore);
        };
        let routes = self.routes.current();
        let destination = routes
            .destinations(&entry.envelope.origin.account, &entry.envelope.origin.group)
            .iter()
            .find(|d| d.target.account == entry.account && d.target.group == entry.group)
            .cloned()
            .ok_or_else(|| HoldError::Unrouted(id.to_owned()))?;
        let words = destination.filter.has_words();
        // The name is judged by every list, as for any message; the text by every rule but
        // the word rule that held it (flood and wave judge before any destination and are
        // simply not judged again).
        let (source, _) = moderate_name(&entry.envelope, &destination, words);
        let mut outbound = render(&source, &destination);
        let mut judged = destination;
        if !is_own_rule(&entry.rule) {
            judged.filter = Arc::new(judged.filter.without_list(&entry.rule));
        }
        match filter(&mut outbound, &judged, judged.filter.has_words()) {
            None => {}
            Some(Dropped::Held(list)) if list != entry.rule => {
                self.store
                    .write(WriteBatch {
                        held: vec![HeldEntry {
                            rule: list.clone(),
                            ..entry.clone()
                        }],
                        ..Default::default()
                    })
                    .await?;
                info!(message = "Released message held again by a word list of its destination.", id = %entry.id, link = %entry.link, list = %list);
                return Ok(Released::HeldBy(list));
            }
            Some(_) => {
                self.settle(&entry, "dropped").await?;
                return Ok(Released::Filtered);
            }
        }
        let publish_failed = |reason: String| HoldError::Publish {
            id: id.to_owned(),
            reason,
        };
        let payload = serde_json::to_vec(&outbound).map_err(|e| publish_failed(e.to_string()))?;
        let topic = topics.outbound(&entry.account, &entry.group);
        publisher
            .publish(topic, payload, false)
            .await
            .map_err(|e| publish_failed(e.to_string()))?
            .wait(RELEASE_PUBLISH_WAIT)
            .await
            .map_err(|e| publish_failed(e.to_string()))?;
        // The broker has it; the entry goes only once egress has it durably (sent, or in the
        // destination's outbox), since the embedded broker keeps nothing across a crash.
        let sent = keys::sent(&outbound, &entry.account);
        let fed = feed_key(&entry.account, &outbound.id, &outbound.group);
        if !self.egress_has(&entry.account, &sent, &fed).await {
            return Err(publish_failed(format!(
                "egress did not take it within {RELEASE_EGRESS_WAIT:?}; it stays held, and releasing it again sends it once"
            )));
        }
        self.settle(&entry, "released").await?;
        info!(message = "Held message released.", id = %entry.id, link = %entry.link, rule = %entry.rule);
        Ok(Released::Sent)
    }

    /// The platform of an entry's destination under the routes in force (the `platform`
    /// label of a hit), `None` when no link routes there any more.
    pub fn platform_of(&self, entry: &HeldEntry) -> Option<&'static str> {
        self.routes
            .current()
            .destinations(&entry.envelope.origin.account, &entry.envelope.origin.group)
            .iter()
            .find(|d| d.target.account == entry.account && d.target.group == entry.group)
            .map(|d| d.platform.as_str())
    }

    /// True once egress holds a released message durably, so a crash right after the
    /// release cannot send it twice: its send-log key, or its `api` feed key (`fed`: the send
    /// log of a keyed `api` send), which an unpaced destination writes within moments; or,
    /// once [`RELEASE_OUTBOX_AFTER`] passed without either, its entry in the destination's
    /// outbox (a paced destination: the outbox survives a crash). Waits at most
    /// [`RELEASE_EGRESS_WAIT`].
    async fn egress_has(&self, account: &str, sent: &str, fed: &str) -> bool {
        let started = tokio::time::Instant::now();
        let keys = [sent.to_owned()];
        loop {
            if self.store.holds_any(&keys).await.unwrap_or(false)
                || self.store.feed_holds(fed).await.unwrap_or(false)
            {
                return true;
            }
            if started.elapsed() >= RELEASE_OUTBOX_AFTER {
                let queued = match self.store.outbox(account).await {
                    Ok(outbox) => outbox.iter().any(|entry| entry.key == sent),
                    Err(_) => false,
                };
                if queued {
                    return true;
                }
            }
            if started.elapsed() >= RELEASE_EGRESS_WAIT {
                return false;
            }
            tokio::time::sleep(RELEASE_POLL).await;
        }
    }

    /// Drops an entry: it leaves the held table and is never relayed.
    ///
    /// # Errors
    /// [`HoldError::Unknown`] for an id not held, [`HoldError::Store`] when the store fails.
    pub async fn drop_entry(&self, id: &str) -> Result<(), HoldError> {
        let entry = self.find(id).await?;
        self.settle(&entry, "dropped").await?;
        info!(message = "Held message dropped.", id = %entry.id, link = %entry.link, rule = %entry.rule);
        Ok(())
    }

    /// Takes an entry out of the held table, counted under `outcome`.
    async fn settle(&self, entry: &HeldEntry, outcome: &'static str) -> Result<(), StoreError> {
        self.store
            .write(WriteBatch {
                held_done: vec![entry.id.clone()],
                ..Default::default()
            })
            .await?;
        metrics::counter!(MODERATION_HELD_OUTCOMES, "outcome" => outcome).increment(1);
        self.forget(1);
        Ok(())
    }

    /// Drops what waited longer than `hold_max` and counts what is held, now and then (at
    /// least every 30 s, at most every second, half of `hold_max` between), until `stop`.
    pub async fn expire_until(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let (hold_max, _) = self.limits();
            let pause = (hold_max / 2).clamp(SWEEP_AT_LEAST, SWEEP_AT_MOST);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.reloaded.notified() => {}
                _ = tokio::time::sleep(pause) => {}
            }
            if let Err(error) = self.expire(hold_max).await {
                warn!(message = "Held messages not swept.", %error);
            }
        }
    }

    /// One sweep: expired entries leave the table (counted `expired`), and the count of what
    /// is held is taken again from the store.
    async fn expire(&self, hold_max: Duration) -> Result<(), StoreError> {
        let entries = self.store.held().await?;
        let oldest_kept = now_ms().saturating_sub(hold_max.as_millis() as u64);
        let (expired, kept): (Vec<HeldEntry>, Vec<HeldEntry>) = entries
            .into_iter()
            .partition(|entry| entry.held_ms <= oldest_kept);
        if !expired.is_empty() {
            self.store
                .write(WriteBatch {
                    held_done: expired.iter().map(|entry| entry.id.clone()).collect(),
                    ..Default::default()
                })
                .await?;
            metrics::counter!(MODERATION_HELD_OUTCOMES, "outcome" => "expired")
                .increment(expired.len() as u64);
            info!(
                message = "Held messages expired unreviewed.",
                count = expired.len(),
                hold_max_s = hold_max.as_secs()
            );
        }
        self.count.store(kept.len(), Ordering::Release);
        self.publish_gauge();
        Ok(())
    }

    /// Counts what the store holds now (at start-up).
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn load(&self) -> Result<usize, StoreError> {
        let held = self.store.held().await?.len();
        self.count.store(held, Ordering::Release);
        self.publish_gauge();
        Ok(held)
    }

    /// Sets `qunbridge_moderation_held`.
    fn publish_gauge(&self) {
        metrics::gauge!(MODERATION_HELD).set(self.count.load(Ordering::Acquire) as f64);
    }
}

/// True for a rule of moderation's own (`flood`, `wave`, `suspect`), false for a word
/// list's name (a list may not take one of these names).
fn is_own_rule(rule: &str) -> bool {
    crate::config::moderation::RESERVED_LIST_NAMES.contains(&rule)
}

/// A new entry id: [`ID_LENGTH`] characters of [`ID_ALPHABET`] (about 887 million ids; the
/// cap keeps at most tens of thousands, so a collision is about as likely as a lottery win,
/// and would only make an operator's `release` pick the older of two entries).
fn new_id() -> String {
    let mut rng = rand::rng();
    (0..ID_LENGTH)
        .map(|_| char::from(ID_ALPHABET[rng.random_range(0..ID_ALPHABET.len())]))
        .collect()
}

/// When an entry is held: now in milliseconds since the Unix epoch, but always after the
/// entry held before it in this process, so the list shows them in the order they were held.
fn next_held_ms() -> u64 {
    static LAST: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let now = now_ms();
    let previous = LAST
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |last| {
            Some(now.max(last + 1))
        })
        .unwrap_or(now);
    now.max(previous + 1)
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_short_and_made_of_the_alphabet() {
        for _ in 0..100 {
            let id = new_id();
            assert_eq!(id.len(), ID_LENGTH);
            assert!(id.bytes().all(|b| ID_ALPHABET.contains(&b)), "{id}");
        }
    }
}
