//! The core loop: take an inbound envelope from the broker, drop it if it is malformed,
//! unrouted or already seen, render it for every destination, publish those, and only once the
//! broker has acknowledged all of them acknowledge the inbound message (so a crash in between
//! means redelivery, never loss).

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::stream::{FuturesOrdered, StreamExt};
use qunbridge_connectors::Envelope;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::render::{filter, render};
use super::route::SharedRoutes;
use crate::activity::{Activity, WorkGuard};
use crate::broker::{BrokerClient, Confirmation, Delivery, Topics};
use crate::store::{keys, RelayStore, WriteBatch, DEDUP_TTL};

/// Deliveries whose outbound publishes (and dedup writes) are in flight at once.
const ACK_QUEUE: usize = 1024;

/// Counts a dropped message by reason.
pub fn count_drop(reason: &'static str) {
    metrics::counter!("qunbridge_messages_dropped_total", "reason" => reason).increment(1);
}

/// Dedup keys of messages being relayed now (published, not yet acknowledged). A copy that
/// arrives meanwhile (a broker redelivery after a reconnect, or a second bot's report) is a
/// duplicate even though the store does not hold its keys yet: they are written only once
/// the outbound publishes are confirmed, so a crash in between loses nothing.
type InProgress = Arc<Mutex<HashSet<String>>>;

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
}

/// A delivery whose outbound publishes are in flight.
struct PendingAck {
    /// The inbound message, acknowledged once `confirmations` resolve and `keys` are stored.
    delivery: Delivery,
    /// One per destination.
    confirmations: Vec<Confirmation>,
    /// Dedup keys to store once published, and to take out of the in-progress set then.
    keys: Vec<String>,
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
        let in_progress = InProgress::default();
        let acker = tokio::spawn(ack_in_order(
            self.client.clone(),
            self.store.clone(),
            in_progress.clone(),
            ack_rx,
            stop.clone(),
        ));
        loop {
            let delivery = tokio::select! {
                _ = stop.cancelled() => break,
                delivery = deliveries.recv() => match delivery {
                    Some(delivery) => delivery,
                    None => break,
                },
            };
            let work = self.activity.start();
            if let Some(pending) = self.handle(delivery, work, &in_progress).await {
                if ack_tx.send(pending).await.is_err() {
                    break;
                }
            }
        }
        drop(ack_tx);
        let _ = acker.await;
    }

    /// Handles one delivery; returns what still awaits PUBACKs (or an earlier copy's), or
    /// `None` when it was settled (dropped and acknowledged).
    async fn handle(
        &self,
        delivery: Delivery,
        work: WorkGuard,
        in_progress: &InProgress,
    ) -> Option<PendingAck> {
        let topic = delivery.publish.topic.clone();
        let envelope = match self.decode(&topic, &delivery.publish.payload) {
            Ok(envelope) => envelope,
            Err(problem) => {
                warn!(message = "Dropping malformed inbound message.", %topic, %problem);
                count_drop("malformed");
                self.client.ack(&delivery).await;
                return None;
            }
        };
        // The routes in force when the message arrived (a reload swaps them whole).
        let routes = self.routes.current();
        let destinations = routes.destinations(&envelope.origin.account, &envelope.origin.group);
        if destinations.is_empty() {
            debug!(message = "No link for this group.", account = %envelope.origin.account, group = %envelope.origin.group);
            count_drop("unrouted");
            self.client.ack(&delivery).await;
            return None;
        }
        // Redelivery (same envelope id) and the same message from a second bot account in
        // the group (same content key).
        let mut seen_keys = vec![keys::envelope(&envelope.id)];
        seen_keys.extend(keys::content(&envelope));
        let copy_of_current = {
            let current = in_progress.lock().unwrap_or_else(PoisonError::into_inner);
            seen_keys.iter().any(|key| current.contains(key))
        };
        if copy_of_current {
            debug!(message = "Dropping a copy of a message being relayed.", id = %envelope.id);
            count_drop("duplicate");
            // Acknowledged only after the message it copies, in order.
            return Some(PendingAck {
                delivery,
                confirmations: Vec::new(),
                keys: Vec::new(),
                _work: work,
            });
        }
        let echo = keys::echo_of(&envelope);
        let mut checks = seen_keys.clone();
        checks.extend(echo.iter().cloned());
        match self.store.holds_any(&checks).await {
            Ok(true) => {
                let is_echo = match &echo {
                    Some(echo) => self
                        .store
                        .holds_any(std::slice::from_ref(echo))
                        .await
                        .unwrap_or(false),
                    None => false,
                };
                if is_echo {
                    debug!(message = "Dropping an echo of what the relay sent to this group.", id = %envelope.id);
                    count_drop("echo");
                } else {
                    debug!(message = "Dropping duplicate.", id = %envelope.id);
                    count_drop("duplicate");
                }
                self.client.ack(&delivery).await;
                return None;
            }
            Ok(false) => {}
            Err(error) => {
                // Relaying a possible duplicate beats stalling the connection: acks must go
                // out in order, so an unacknowledged message would hold up every later one.
                warn!(message = "Dedup store failed; relaying without the duplicate check.", %error, id = %envelope.id);
            }
        }
        // The envelope id and this message's own content key (the first).
        let own_keys: Vec<String> = seen_keys.into_iter().take(2).collect();
        in_progress
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(own_keys.iter().cloned());
        let forget = || {
            let mut current = in_progress.lock().unwrap_or_else(PoisonError::into_inner);
            for key in &own_keys {
                current.remove(key);
            }
        };
        let mut confirmations = Vec::with_capacity(destinations.len());
        for destination in destinations {
            let mut outbound = render(&envelope, destination);
            if let Some(rule) = filter(&mut outbound, destination) {
                warn!(
                    message = "Message dropped by a link filter for this destination.",
                    link = %destination.link,
                    destination = %destination.target,
                    rule
                );
                count_drop("filtered");
                continue;
            }
            let payload = match serde_json::to_vec(&outbound) {
                Ok(payload) => payload,
                Err(error) => {
                    warn!(message = "Cannot encode outbound message.", %error);
                    count_drop("encode_failed");
                    continue;
                }
            };
            let topic = self
                .topics
                .outbound(&destination.target.account, &destination.target.group);
            match self.publisher.publish(topic, payload, false).await {
                Ok(confirmation) => confirmations.push(confirmation),
                Err(error) => {
                    warn!(message = "Cannot publish outbound message.", %error);
                    forget();
                    return None;
                }
            }
            metrics::counter!(
                "qunbridge_messages_relayed_total",
                "from" => envelope.origin.platform.as_str(),
                "to" => destination.platform.as_str()
            )
            .increment(1);
        }
        Some(PendingAck {
            delivery,
            confirmations,
            keys: own_keys,
            _work: work,
        })
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

/// Acknowledges inbound deliveries once all their outbound publishes are confirmed and their
/// dedup keys are stored (the broker client sends the PUBACKs in delivery order). Up to
/// [`ACK_QUEUE`] deliveries are in flight at once, so their store writes share commits.
async fn ack_in_order(
    client: BrokerClient,
    store: Arc<dyn RelayStore>,
    in_progress: InProgress,
    mut pending: mpsc::Receiver<PendingAck>,
    stop: CancellationToken,
) {
    let mut inflight = FuturesOrdered::new();
    let mut intake_open = true;
    loop {
        tokio::select! {
            biased;
            Some((item, settled)) = inflight.next(), if !inflight.is_empty() => {
                let item: PendingAck = item;
                if settled {
                    client.ack(&item.delivery).await;
                }
                let mut current = in_progress.lock().unwrap_or_else(PoisonError::into_inner);
                for key in &item.keys {
                    current.remove(key);
                }
            }
            item = pending.recv(), if intake_open && inflight.len() < ACK_QUEUE => match item {
                Some(item) => inflight.push_back(settle(item, store.clone(), stop.clone())),
                None => intake_open = false,
            },
            else => break,
        }
    }
}

/// Waits for a delivery's PUBACKs, then stores its dedup keys. Returns it with `true` when
/// it may be acknowledged.
async fn settle(
    mut item: PendingAck,
    store: Arc<dyn RelayStore>,
    stop: CancellationToken,
) -> (PendingAck, bool) {
    for confirmation in std::mem::take(&mut item.confirmations) {
        // rumqttc retransmits until the broker acknowledges, so waiting is bounded only by
        // shutdown.
        let outcome = tokio::select! {
            _ = stop.cancelled() => Err(crate::broker::BrokerError::Stopped),
            outcome = confirmation.wait(Duration::from_secs(24 * 3600)) => outcome,
        };
        if let Err(error) = outcome {
            debug!(message = "Outbound publish not confirmed; inbound left for redelivery.", %error);
            return (item, false);
        }
    }
    let batch = WriteBatch {
        keys: item
            .keys
            .iter()
            .map(|key| (key.clone(), DEDUP_TTL))
            .collect(),
        copies: Vec::new(),
    };
    if let Err(error) = store.write(batch).await {
        // The outbound messages are with the broker; egress's send log still stops a
        // redelivered copy from being sent twice.
        warn!(message = "Dedup keys not stored.", %error);
    }
    (item, true)
}
