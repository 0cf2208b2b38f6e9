//! The core loop: take an inbound envelope from the broker, drop it if it is malformed,
//! unrouted or already seen, render it for every destination, publish those, and only once the
//! broker has acknowledged all of them acknowledge the inbound message (so a crash in between
//! means redelivery, never loss).

use std::sync::Arc;

use futures_util::stream::{FuturesOrdered, FuturesUnordered, StreamExt};
use qunbridge_connectors::{Envelope, Kind};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::dedup::{Dedup, Verdict};
use super::filter::Dropped;
use super::hold::HeldMessages;
use super::moderate::{Judgement, Moderator, SUSPECT};
use super::notices::notice_for;
use super::notify::Notifier;
use super::render::{filter, filter_noting, moderate_name, render};
use super::route::{Destination, SharedRoutes};
use super::suspect::Suspects;
use crate::activity::{Activity, WorkGuard};
use crate::broker::{BrokerClient, Confirmation, Delivery, Topics};
use crate::metrics::{count_drop, count_relayed, MODERATION_HITS};
use crate::policy::moderation::ModerationAction;
use crate::stats::count::merge_into;
use crate::stats::StatsCounter;
use crate::store::held::HeldEntry;
use crate::store::stats::StatsDelta;
use crate::store::RelayStore;

/// Deliveries whose outbound publishes (and dedup writes) are in flight at once.
const ACK_QUEUE: usize = 1024;
/// How long the keys of an acknowledged message wait to be written with others (the window
/// in which only memory knows them; docs/operations.md, "durability windows").
const REMEMBER_EVERY: std::time::Duration = std::time::Duration::from_millis(5);
/// Keys written at once at most, whatever the time.
const REMEMBER_BATCH: usize = 512;

/// The relay core.
pub struct Core {
    /// Topic names.
    pub topics: Topics,
    /// Where messages go.
    pub routes: SharedRoutes,
    /// Dedup keys and echo fingerprints.
    pub store: Arc<dyn RelayStore>,
    /// The core's broker connection that receives (subscribed to every inbound topic) and
    /// acknowledges.
    pub client: BrokerClient,
    /// The connection outbound messages are published on. A connection of its own: a broker
    /// may hold back the PUBACKs of a connection with many unacknowledged deliveries (rumqttd
    /// does), and the core acknowledges a delivery only after those PUBACKs.
    pub publisher: BrokerClient,
    /// In-flight counter for shutdown.
    pub activity: Arc<Activity>,
    /// Group health counting, when enabled.
    pub stats: Option<Arc<StatsCounter>>,
    /// The moderation step (flood control, spam waves), shared by every core of the process.
    pub moderator: Arc<Moderator>,
    /// Where messages a moderation rule holds for review go.
    pub held: Arc<HeldMessages>,
    /// The suspect delay: newcomers' messages with links, contacts or pictures wait.
    pub suspects: Arc<Suspects>,
    /// Tells the admins' group of rule hits with `notify = true` and of flood starts,
    /// without waiting (`moderation.notify`).
    pub notifier: Arc<Notifier>,
}

/// A delivery whose outbound publishes are in flight.
struct PendingAck {
    /// The inbound message, acknowledged once `confirmations` resolve and `keys` are stored.
    delivery: Delivery,
    /// One per destination.
    confirmations: Vec<Confirmation>,
    /// Dedup keys to store once published, and to release from the in-progress set then.
    keys: Vec<String>,
    /// Group-health counts of the message, stored with its keys once it is acknowledged.
    stats: Option<StatsDelta>,
    /// Held for review at some destinations: written with the keys, durably, before the
    /// inbound is acknowledged.
    held: Vec<HeldEntry>,
    /// Keeps the delivery counted as in flight.
    _work: WorkGuard,
}

impl Core {
    /// Runs until the delivery stream ends or `stop` is cancelled.
    pub async fn run(
        self,
        mut deliveries: mpsc::UnboundedReceiver<Delivery>,
        stop: CancellationToken,
    ) {
        let (ack_tx, ack_rx) = mpsc::channel(ACK_QUEUE);
        let dedup = Dedup::new(self.store.clone());
        let acker = tokio::spawn(ack_in_order(
            self.client.clone(),
            dedup.clone(),
            self.held.clone(),
            ack_rx,
            stop.clone(),
        ));
        loop {
            let Some(delivery) = crate::broker::client::next_delivery(&mut deliveries, &stop).await
            else {
                break;
            };
            let work = self.activity.start();
            if let Some(pending) = self.handle(delivery, work, &dedup).await {
                if ack_tx.send(pending).await.is_err() {
                    break;
                }
            }
        }
        drop(ack_tx);
        let _ = acker.await;
    }

    /// Handles one delivery: decode, route, dedup, then publish a rendered copy per
    /// destination. Returns what still awaits PUBACKs (or an earlier copy's), or `None` when
    /// it was settled (dropped and acknowledged).
    async fn handle(
        &self,
        delivery: Delivery,
        work: WorkGuard,
        dedup: &Dedup,
    ) -> Option<PendingAck> {
        let topic = delivery.publish.topic.clone();
        let envelope = match self.decode(&topic, &delivery.publish.payload) {
            Ok(envelope) => envelope,
            Err(problem) => {
                warn!(message = "Dropping malformed inbound message.", %topic, %problem);
                return self.drop_now(&delivery, "malformed").await;
            }
        };
        // The routes in force when the message arrived (a reload swaps them whole).
        let routes = self.routes.current();
        let destinations = routes.destinations(&envelope.origin.account, &envelope.origin.group);
        if destinations.is_empty() {
            debug!(message = "No link for this group.", account = %envelope.origin.account, group = %envelope.origin.group);
            // Never relayed, but a spam wave often shows up first in groups nothing is
            // bridged from: its text counts towards one (only when waves are configured).
            self.moderator.sight_unrouted(&envelope).await;
            if envelope.kind == Kind::Member {
                // Connectors report the member counts of every group the bot is in; those
                // of unlinked groups are of no use, and no message was lost.
                self.client.ack(&delivery).await;
                return None;
            }
            return self.drop_now(&delivery, "unrouted").await;
        }
        let keys = match dedup.check(&envelope).await {
            Verdict::Fresh(keys) => keys,
            Verdict::Seen(reason) => return self.drop_now(&delivery, reason).await,
            Verdict::CopyOfCurrent => {
                count_drop("duplicate");
                // Acknowledged only after the message it copies, in order.
                return Some(PendingAck {
                    delivery,
                    confirmations: Vec::new(),
                    keys: Vec::new(),
                    stats: None,
                    held: Vec::new(),
                    _work: work,
                });
            }
        };
        let stats = self
            .stats
            .as_ref()
            .and_then(|counter| counter.inbound(&envelope));
        // A membership change is counted, never relayed as a message; links that ask for it
        // get a notice.
        if envelope.kind == Kind::Member {
            self.suspects.member_changed(&envelope);
            let Some(confirmations) = self.publish_notices(&envelope, destinations).await else {
                dedup.release(&keys);
                return None;
            };
            return Some(PendingAck {
                delivery,
                confirmations,
                keys,
                stats,
                held: Vec::new(),
                _work: work,
            });
        }
        // Judged (a flood or a wave), or a newcomer's suspect message that waits: not relayed
        // now; acknowledged in order with its keys remembered, so a redelivered copy is not
        // judged (or counted) twice. What is held is written with the keys before the
        // acknowledgement.
        let kept = match self.moderator.judge(&envelope).await {
            Some(judgement) => Some(self.apply_judgement(&envelope, destinations, judgement)),
            None if self.suspects.must_wait(&envelope).await => {
                let held = self.hold_suspect(&envelope, destinations);
                self.suspects.wait(&held);
                // No room to hold it: relayed at once.
                (!held.is_empty()).then_some(held)
            }
            None => None,
        };
        if let Some(held) = kept {
            return Some(PendingAck {
                delivery,
                confirmations: Vec::new(),
                keys,
                stats,
                held,
                _work: work,
            });
        }
        let Some((confirmations, held)) = self.publish_all(&envelope, destinations).await else {
            dedup.release(&keys);
            return None;
        };
        Some(PendingAck {
            delivery,
            confirmations,
            keys,
            stats,
            held,
            _work: work,
        })
    }

    /// Applies a moderation verdict at every destination (with the destination's own
    /// `on_flood` for a flood): counted per destination as a hit, and as a `moderated` drop
    /// unless it is held; the start of a flood logged once (a wave's start is logged by the
    /// moderator). Returns the entries to hold.
    fn apply_judgement(
        &self,
        envelope: &Envelope,
        destinations: &[Destination],
        judgement: Judgement,
    ) -> Vec<HeldEntry> {
        let mut held = Vec::new();
        if judgement.started {
            warn!(
                message = "A member is over the flood limit; their messages are not relayed until the rate allows again.",
                rule = judgement.rule,
                account = %envelope.origin.account,
                group = %envelope.origin.group,
                sender = %envelope.sender.name,
            );
        }
        for destination in destinations {
            let mut action = judgement.action_at(destination.filter.on_flood);
            if action == ModerationAction::Hold {
                match self.held.admit(envelope, destination, judgement.rule) {
                    Some(entry) => held.push(entry),
                    // Over `hold_cap`: the hold becomes a drop.
                    None => action = ModerationAction::Drop,
                }
            }
            metrics::counter!(
                MODERATION_HITS,
                "rule" => judgement.rule,
                "action" => action.as_str(),
                "platform" => destination.platform.as_str()
            )
            .increment(1);
            if action == ModerationAction::Drop {
                count_drop("moderated");
            }
        }
        if judgement.started {
            self.notifier
                .flood_started(envelope, judgement.rule, destinations, &held);
        }
        held
    }

    /// Holds a newcomer's suspect message for every destination while it waits (counted as a
    /// `suspect` hold per destination). Returns the entries, or none when `hold_cap` leaves
    /// no room for all of them: the delay is a precaution, not a verdict, so the message is
    /// then relayed at once.
    fn hold_suspect(&self, envelope: &Envelope, destinations: &[Destination]) -> Vec<HeldEntry> {
        let mut held = Vec::with_capacity(destinations.len());
        for destination in destinations {
            match self.held.admit(envelope, destination, SUSPECT) {
                Some(entry) => held.push(entry),
                None => {
                    self.held.forget(held.len());
                    return Vec::new();
                }
            }
        }
        for destination in destinations {
            metrics::counter!(
                MODERATION_HITS,
                "rule" => SUSPECT,
                "action" => ModerationAction::Hold.as_str(),
                "platform" => destination.platform.as_str()
            )
            .increment(1);
        }
        info!(
            message = "A newcomer's message with a link, contact or picture waits before it is relayed.",
            account = %envelope.origin.account,
            group = %envelope.origin.group,
            sender = %envelope.sender.name,
        );
        held
    }

    /// Counts a dropped delivery and acknowledges it at once.
    async fn drop_now(&self, delivery: &Delivery, reason: &'static str) -> Option<PendingAck> {
        count_drop(reason);
        self.client.ack(delivery).await;
        None
    }

    /// Renders, filters and publishes the message for every destination; returns the
    /// publishes' confirmations and the entries a word rule holds for review at some
    /// destinations, or `None` when a publish failed (the delivery is then left
    /// unacknowledged for redelivery).
    async fn publish_all(
        &self,
        envelope: &Envelope,
        destinations: &[Destination],
    ) -> Option<(Vec<Confirmation>, Vec<HeldEntry>)> {
        let mut confirmations = Vec::with_capacity(destinations.len());
        let mut held = Vec::new();
        // Word rules judge member messages, and only where a destination has some (the
        // common case costs one look at the destinations' rules).
        let judged = destinations.iter().any(|d| d.filter.has_words())
            && self.moderator.judges_words(envelope);
        for destination in destinations {
            let words = judged && destination.filter.has_words();
            let (source, renamed_by) = moderate_name(envelope, destination, words);
            if let Some(list) = renamed_by {
                info!(
                    message = "Sender name hidden in this destination's copy: a word list hits it.",
                    link = %destination.link,
                    destination = %destination.target,
                    list
                );
                self.notifier.renamed(envelope, destination);
            }
            let mut outbound = render(&source, destination);
            let filtered = filter_noting(&mut outbound, destination, words);
            self.notifier
                .rule_hits(envelope, destination, &filtered.notify);
            match filtered.dropped {
                None => {}
                Some(Dropped::Link(rule)) => {
                    warn!(
                        message = "Message dropped by a link filter for this destination.",
                        link = %destination.link,
                        destination = %destination.target,
                        rule
                    );
                    count_drop("filtered");
                    continue;
                }
                Some(Dropped::Words(list)) => {
                    info!(
                        message = "Message not relayed to this destination: a word list hits it.",
                        link = %destination.link,
                        destination = %destination.target,
                        list
                    );
                    count_drop("moderated");
                    continue;
                }
                Some(Dropped::Held(list)) => {
                    let action = match self.held.admit(envelope, destination, &list) {
                        Some(entry) => {
                            info!(
                                message = "Message held for review at this destination: a word list hits it.",
                                link = %destination.link,
                                destination = %destination.target,
                                list,
                                id = %entry.id
                            );
                            self.notifier.held_by_list(
                                envelope,
                                destination,
                                &list,
                                Some(&entry.id),
                            );
                            held.push(entry);
                            ModerationAction::Hold
                        }
                        // Over `hold_cap`: the hold becomes a drop.
                        None => {
                            self.notifier
                                .held_by_list(envelope, destination, &list, None);
                            count_drop("moderated");
                            ModerationAction::Drop
                        }
                    };
                    metrics::counter!(
                        MODERATION_HITS,
                        "rule" => list,
                        "action" => action.as_str(),
                        "platform" => destination.platform.as_str()
                    )
                    .increment(1);
                    continue;
                }
            }
            let Some(published) = self.publish_one(&outbound, destination).await else {
                // Left for redelivery: what it would have held is judged again then.
                self.held.forget(held.len());
                return None;
            };
            match published {
                Some(confirmation) => confirmations.push(confirmation),
                None => continue,
            }
            count_relayed(envelope.origin.platform, destination.platform);
            qunbridge_connectors::recent::RELAYED.add(
                (
                    envelope.origin.platform.as_str(),
                    destination.platform.as_str(),
                ),
                1,
            );
        }
        Some((confirmations, held))
    }

    /// Publishes the join/leave notices of a membership change to the destinations whose
    /// link announces it; `None` when a publish failed (left for redelivery).
    async fn publish_notices(
        &self,
        envelope: &Envelope,
        destinations: &[Destination],
    ) -> Option<Vec<Confirmation>> {
        let mut confirmations = Vec::new();
        for destination in destinations {
            let Some(mut outbound) = notice_for(envelope, destination) else {
                continue;
            };
            // A notice is not a member's message: word rules leave it alone.
            if let Some(dropped) = filter(&mut outbound, destination, false) {
                debug!(message = "Notice dropped by a link filter for this destination.", link = %destination.link, ?dropped);
                count_drop("filtered");
                continue;
            }
            if let Some(confirmation) = self.publish_one(&outbound, destination).await? {
                confirmations.push(confirmation);
            }
        }
        Some(confirmations)
    }

    /// Encodes and publishes one outbound message. `Some(None)`: it could not be encoded
    /// (counted, skipped); `None`: the publish failed (the delivery is left for redelivery).
    async fn publish_one(
        &self,
        outbound: &qunbridge_connectors::Outbound,
        destination: &Destination,
    ) -> Option<Option<Confirmation>> {
        let payload = match qunbridge_connectors::model::to_json(outbound) {
            Ok(payload) => payload,
            Err(error) => {
                warn!(message = "Cannot encode outbound message.", %error);
                count_drop("encode_failed");
                return Some(None);
            }
        };
        let topic = self
            .topics
            .outbound(&destination.target.account, &destination.target.group);
        match self.publisher.publish(topic, payload, false).await {
            Ok(confirmation) => Some(Some(confirmation)),
            Err(error) => {
                warn!(message = "Cannot publish outbound message.", %error);
                None
            }
        }
    }

    /// Parses and checks an inbound message against its topic.
    fn decode(&self, topic: &str, payload: &[u8]) -> Result<Envelope, String> {
        let (account, group) = self
            .topics
            .parse_inbound(topic)
            .ok_or_else(|| "topic is not an inbound topic".to_owned())?;
        let envelope: Envelope = serde_json::from_slice(payload)
            .map_err(|error| format!("invalid envelope: {error}"))?;
        if envelope.origin.account != account || envelope.origin.group != group {
            return Err(format!(
                "envelope origin {}:{} does not match its topic",
                envelope.origin.account, envelope.origin.group
            ));
        }
        if envelope.id.is_empty() {
            return Err("envelope id is empty".into());
        }
        Ok(envelope)
    }
}

/// Acknowledges inbound deliveries once all their outbound publishes are confirmed (the broker
/// client sends the PUBACKs in delivery order), then makes their dedup keys durable without
/// holding the acknowledgement: a redelivered copy is caught durably by the egress send log
/// anyway, and the keys stay in the in-progress set until their write is committed (within
/// [`REMEMBER_EVERY`] plus one commit), so a copy from a second bot account arriving meanwhile
/// is caught too. Up to [`ACK_QUEUE`] deliveries are in flight at once.
async fn ack_in_order(
    client: BrokerClient,
    dedup: Dedup,
    held: Arc<HeldMessages>,
    mut pending: mpsc::Receiver<PendingAck>,
    stop: CancellationToken,
) {
    let mut inflight = FuturesOrdered::new();
    let mut remembering = FuturesUnordered::new();
    // Keys of acknowledged messages not yet handed to the store, and when they must be: they
    // go in one write per REMEMBER_EVERY (or REMEMBER_BATCH keys), off the path of the
    // message, so at low rates the store's next commit is the destination's, not ours.
    let mut to_remember: Vec<String> = Vec::new();
    let mut to_count: Vec<StatsDelta> = Vec::new();
    let mut remember_at = tokio::time::Instant::now();
    let mut intake_open = true;
    loop {
        tokio::select! {
            biased;
            Some((item, settled)) = inflight.next(), if !inflight.is_empty() => {
                let item: PendingAck = item;
                if settled {
                    client.ack(&item.delivery).await;
                    if to_remember.is_empty() && to_count.is_empty() {
                        remember_at = tokio::time::Instant::now() + REMEMBER_EVERY;
                    }
                    to_remember.extend(item.keys);
                    if let Some(delta) = item.stats {
                        merge_into(&mut to_count, delta);
                    }
                    if to_remember.len() >= REMEMBER_BATCH || to_count.len() >= REMEMBER_BATCH {
                        remembering.push(remember(dedup.clone(), std::mem::take(&mut to_remember), std::mem::take(&mut to_count)));
                    }
                } else {
                    // Left for redelivery: what it would have held is judged again then.
                    held.forget(item.held.len());
                    dedup.release(&item.keys);
                }
            }
            Some(()) = remembering.next(), if !remembering.is_empty() => {}
            _ = tokio::time::sleep_until(remember_at), if !to_remember.is_empty() || !to_count.is_empty() => {
                remembering.push(remember(dedup.clone(), std::mem::take(&mut to_remember), std::mem::take(&mut to_count)));
            }
            item = pending.recv(), if intake_open && inflight.len() < ACK_QUEUE => match item {
                Some(item) => inflight.push_back(settle(item, dedup.clone(), stop.clone())),
                None => intake_open = false,
            },
            else => break,
        }
    }
}

/// Makes a batch of dedup keys (and the group-health counts of the same messages) durable
/// in one write, then takes the keys out of the in-progress set.
async fn remember(dedup: Dedup, keys: Vec<String>, stats: Vec<StatsDelta>) {
    dedup.remember(&keys, stats).await;
    dedup.release(&keys);
}

/// Waits for a delivery's PUBACKs, and writes what it holds for review (with its dedup keys,
/// durably). Returns it with `true` when it may be acknowledged.
async fn settle(mut item: PendingAck, dedup: Dedup, stop: CancellationToken) -> (PendingAck, bool) {
    for confirmation in std::mem::take(&mut item.confirmations) {
        // rumqttc retransmits until the broker acknowledges, so waiting is bounded only by
        // shutdown (no timer per message).
        let outcome = tokio::select! {
            _ = stop.cancelled() => Err(crate::broker::BrokerError::Stopped),
            outcome = confirmation.confirmed() => outcome,
        };
        if let Err(error) = outcome {
            debug!(message = "Outbound publish not confirmed; inbound left for redelivery.", %error);
            return (item, false);
        }
    }
    if !item.held.is_empty() {
        if let Err(error) = dedup.hold(&item.keys, item.held.clone()).await {
            warn!(message = "Held message not stored; the inbound is left for redelivery.", %error);
            return (item, false);
        }
    }
    (item, true)
}
