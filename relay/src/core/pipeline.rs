//! The core loop: take an inbound envelope from the broker, drop it if it is malformed,
//! unrouted or already seen, render it for every destination, publish those, and only once the
//! broker has acknowledged all of them acknowledge the inbound message (so a crash in between
//! means redelivery, never loss).

use std::sync::Arc;
use std::time::Duration;

use qunbridge_connectors::Envelope;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::render::{filter, render};
use super::route::SharedRoutes;
use crate::activity::{Activity, WorkGuard};
use crate::broker::{BrokerClient, Confirmation, Delivery, Topics};
use crate::store::DedupStore;

/// How long an envelope id is remembered for redelivery dedup.
pub const DEDUP_TTL: Duration = Duration::from_secs(24 * 3600);
/// Deliveries whose outbound publishes are awaiting PUBACKs at once.
const ACK_QUEUE: usize = 1024;

/// Counts a dropped message by reason.
pub fn count_drop(reason: &'static str) {
    metrics::counter!("qunbridge_messages_dropped_total", "reason" => reason).increment(1);
}

/// The relay core.
pub struct Core {
    /// Topic names.
    pub topics: Topics,
    /// Where messages go.
    pub routes: SharedRoutes,
    /// Dedup keys.
    pub store: Arc<dyn DedupStore>,
    /// The core's broker connection (subscribed to every inbound topic).
    pub client: BrokerClient,
    /// In-flight counter for shutdown.
    pub activity: Arc<Activity>,
}

/// A delivery whose outbound publishes are in flight.
struct PendingAck {
    /// The inbound message, acknowledged once `confirmations` resolve.
    delivery: Delivery,
    /// One per destination.
    confirmations: Vec<Confirmation>,
    /// Dedup key, forgotten again if publishing failed.
    key: String,
    /// Keeps the delivery counted as in flight.
    _work: WorkGuard,
}

impl Core {
    /// Runs until the delivery stream ends or `stop` is cancelled.
    pub async fn run(self, mut deliveries: mpsc::Receiver<Delivery>, stop: CancellationToken) {
        let (ack_tx, ack_rx) = mpsc::channel(ACK_QUEUE);
        let acker = tokio::spawn(ack_in_order(
            self.client.clone(),
            self.store.clone(),
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
            if let Some(pending) = self.handle(delivery, work).await {
                if ack_tx.send(pending).await.is_err() {
                    break;
                }
            }
        }
        drop(ack_tx);
        let _ = acker.await;
    }

    /// Handles one delivery; returns what still awaits PUBACKs, or `None` when it was settled
    /// (dropped and acknowledged).
    async fn handle(&self, delivery: Delivery, work: WorkGuard) -> Option<PendingAck> {
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
        match self.store.insert_if_absent(&envelope.id, DEDUP_TTL).await {
            Ok(true) => {}
            Ok(false) => {
                debug!(message = "Dropping duplicate.", id = %envelope.id);
                count_drop("duplicate");
                self.client.ack(&delivery).await;
                return None;
            }
            Err(error) => {
                // Relaying a possible duplicate beats stalling the connection: acks must go
                // out in order, so an unacknowledged message would hold up every later one.
                warn!(message = "Dedup store failed; relaying without the duplicate check.", %error, id = %envelope.id);
            }
        }
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
            match self.client.publish(topic, payload, false).await {
                Ok(confirmation) => confirmations.push(confirmation),
                Err(error) => {
                    warn!(message = "Cannot publish outbound message.", %error);
                    let _ = self.store.remove(&envelope.id).await;
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
            key: envelope.id,
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

/// Acknowledges inbound deliveries once all their outbound publishes are confirmed (the
/// broker client sends the PUBACKs in delivery order).
async fn ack_in_order(
    client: BrokerClient,
    store: Arc<dyn DedupStore>,
    mut pending: mpsc::Receiver<PendingAck>,
    stop: CancellationToken,
) {
    while let Some(item) = pending.recv().await {
        let mut all_confirmed = true;
        for confirmation in item.confirmations {
            // rumqttc retransmits until the broker acknowledges, so waiting is bounded only by
            // shutdown.
            let outcome = tokio::select! {
                _ = stop.cancelled() => Err(crate::broker::BrokerError::Stopped),
                outcome = confirmation.wait(Duration::from_secs(24 * 3600)) => outcome,
            };
            if let Err(error) = outcome {
                debug!(message = "Outbound publish not confirmed; inbound left for redelivery.", %error);
                all_confirmed = false;
                break;
            }
        }
        if all_confirmed {
            client.ack(&item.delivery).await;
        } else {
            let _ = store.remove(&item.key).await;
        }
    }
}
