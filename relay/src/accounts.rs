//! Running one account: its connector, its MQTT connection, and the two pumps between them.
//!
//! - Ingress: the connector's [`Ingress`] publishes on `in/<account>/<group>` and resolves on
//!   the broker's PUBACK ([`MqttSink`]).
//! - Egress: deliveries from `out/<account>/+` become [`EgressRequest`]s; the MQTT message is
//!   acknowledged only after the connector reports the outcome, so a crash means redelivery.
//!   Retryable failures are retried with backoff a bounded number of times, then dropped and
//!   counted.
//! - Status: the account's state goes to the retained `status/<account>` topic; the last will
//!   sets it offline if the process dies.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use qunbridge_connectors::context::now_ms;
use qunbridge_connectors::protocol::SharedResources;
use qunbridge_connectors::reverse_ws::SharedListeners;
use qunbridge_connectors::{
    AccountState, BotRegistry, Confirmed, ConnectionState, ConnectorContext, ConnectorError,
    Envelope, EnvelopeSink, Ingress, IngressError, Outbound, Platform, StateReporter,
};
use serde_json::json;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::activity::Activity;
use crate::broker::{
    BrokerClient, BrokerError, ClientOptions, Delivery, Endpoint, Flow, Hops, Topics,
};
use crate::config::Account;
use crate::egress::{
    AccountEgress, Dispatcher, LivePolicy, OutboxRoom, Queued, OUTBOX_LIMIT, OUTBOX_LIMIT_BYTES,
};
use crate::metrics::{count_drop, ACCOUNT_UP};
use crate::store::{keys, OutboxEntry, RelayStore, WriteBatch};

/// How long ingress waits for the broker's PUBACK before telling the platform it failed.
const INGRESS_ACK_TIMEOUT: Duration = Duration::from_secs(10);
/// How long ingress waits for room on the broker (flow control) before refusing a message
/// (`api`: 503; DingTalk Stream: no ACK; OneBot: retried, while its event queue fills).
const INGRESS_ROOM_WAIT: Duration = Duration::from_secs(2);
/// What a refusal for lack of room tells the platform to wait (`Retry-After`).
const RETRY_AFTER_SECS: u64 = 1;

/// Publishes an account's envelopes on its inbound topics.
struct MqttSink {
    /// The account's broker connection.
    client: BrokerClient,
    /// Topic names.
    topics: Topics,
    /// The account: envelopes must come from it.
    account: String,
    /// Counts publishes in flight, so shutdown waits for them.
    activity: Arc<Activity>,
    /// Starts fetching an envelope's pictures once it is published, so destinations find
    /// them cached.
    media: qunbridge_connectors::media::MediaContext,
}

impl EnvelopeSink for MqttSink {
    fn submit(&self, envelope: Envelope) -> BoxFuture<'_, Result<Confirmed, IngressError>> {
        Box::pin(async move {
            if envelope.origin.account != self.account {
                return Err(IngressError::Encode(
                    "envelope names another account".into(),
                ));
            }
            let topic = self
                .topics
                .inbound(&envelope.origin.account, &envelope.origin.group);
            let payload = qunbridge_connectors::model::to_json(&envelope)
                .map_err(|e| IngressError::Encode(e.to_string()))?;
            let work = self.activity.start();
            let confirmation = self
                .client
                .publish_within(topic, payload, false, Some(INGRESS_ROOM_WAIT))
                .await
                .map_err(|error| match error {
                    BrokerError::Busy(_) => IngressError::Busy {
                        retry_after_secs: RETRY_AFTER_SECS,
                    },
                    _ => IngressError::Closed,
                })?;
            self.media.prefetch(&envelope);
            let confirmed: Confirmed = Box::pin(async move {
                let outcome = confirmation
                    .wait(INGRESS_ACK_TIMEOUT)
                    .await
                    .map_err(|error| match error {
                        BrokerError::Timeout(limit) => IngressError::Timeout(limit.as_secs()),
                        _ => IngressError::Closed,
                    });
                drop(work);
                outcome
            });
            Ok(confirmed)
        })
    }
}

/// A running account.
pub struct RunningAccount {
    /// Account id.
    pub id: String,
    /// Platform.
    pub platform: Platform,
    /// The account's broker connection.
    pub client: BrokerClient,
    /// The connector's reported state.
    pub state: watch::Receiver<AccountState>,
    /// Its pacing and length limits (replaced on reload).
    pub policy: Arc<LivePolicy>,
    /// Stops its intake alone (a reload removing it).
    intake: CancellationToken,
    /// Stops it alone.
    stop: CancellationToken,
    /// Ends its MQTT connection, after `finish` said goodbye on it.
    connection: CancellationToken,
    /// The connector task.
    connector: JoinHandle<Result<(), ConnectorError>>,
    /// Set to the reason when the connector task ends.
    exit: watch::Receiver<Option<String>>,
    /// Egress pump task; dropping its queue sender closes the connector's egress.
    pump: JoinHandle<()>,
    /// Status publisher task.
    status: JoinHandle<()>,
    /// MQTT event loop task.
    event_loop: JoinHandle<()>,
    /// The ingress connection.
    ingress_client: BrokerClient,
    /// Its event loop task.
    ingress_loop: JoinHandle<()>,
}

/// Everything an account needs from the daemon.
pub struct AccountDeps<'a> {
    /// Broker endpoint.
    pub endpoint: &'a Endpoint,
    /// Topic names.
    pub topics: &'a Topics,
    /// In-flight counter for shutdown.
    pub activity: Arc<Activity>,
    /// The send log (so a redelivered outbound message is not sent twice), the message map
    /// (recall and reply sync) and the echo fingerprints.
    pub store: Arc<dyn RelayStore>,
    /// Where `api` accounts keep their feeds across restarts.
    pub feed_log: Option<Arc<dyn qunbridge_connectors::api::FeedLog>>,
    /// Every account's platform user id, shared by all connectors.
    pub bots: BotRegistry,
    /// Listeners shared between accounts.
    pub listeners: SharedListeners,
    /// Cancelled to stop taking input (shutdown step 1).
    pub intake: CancellationToken,
    /// Cancelled to stop everything (shutdown step 2).
    pub stop: CancellationToken,
    /// Flow control: ingress takes inbound room, egress gives outbound room back.
    pub flow: Hops,
    /// What connectors use for pictures, in the global mode (an account's own `media` key
    /// overrides it).
    pub media: qunbridge_connectors::media::MediaContext,
    /// Group health counting (what egress relayed into a linked group), when enabled.
    pub stats: Option<Arc<crate::stats::StatsCounter>>,
}

/// The MQTT client id of an account's connection.
pub fn client_id(account: &str) -> String {
    format!("qunbridge-account-{account}")
}

/// The status payload of an account.
fn status_payload(account: &str, platform: Platform, state: &AccountState) -> Vec<u8> {
    let online = state.state == ConnectionState::Up;
    json!({
        "account": account,
        "platform": platform,
        "status": if online { "online" } else { "offline" },
        "state": state.state,
        "since_ms": state.since_ms,
    })
    .to_string()
    .into_bytes()
}

/// Connects an account to the broker and starts its connector once its subscription is in
/// place (so nothing sent to it is missed).
///
/// # Errors
/// [`BrokerError`] when the MQTT client cannot be set up.
pub async fn start(
    account: &Account,
    deps: AccountDeps<'_>,
) -> Result<RunningAccount, BrokerError> {
    // The account's own tokens: cancelled with the daemon's, or alone when a reload removes it.
    let intake = deps.intake.child_token();
    let stop = deps.stop.child_token();
    let connection = CancellationToken::new();
    let id = account.id.clone();
    let status_topic = deps.topics.status(&id);
    let offline = status_payload(
        &id,
        account.platform,
        &AccountState::now(ConnectionState::Down, None),
    );
    let (client, deliveries, event_loop) = BrokerClient::start(
        ClientOptions {
            endpoint: deps.endpoint.clone(),
            client_id: client_id(&id),
            will: Some((status_topic.clone(), offline)),
            subscriptions: vec![deps.topics.outbound_filter(&id)],
            always_subscribe: false,
        },
        // The connection outlives `stop`: `finish` still publishes the offline status on it,
        // then disconnects, and only then ends it.
        connection.clone(),
    )?;
    // Ingress publishes on a connection of its own: a broker may hold back the PUBACKs of a
    // connection with many unacknowledged deliveries (rumqttd does), and a backlog of
    // outbound messages must not stall what the account receives.
    let (ingress_client, _, ingress_loop) = BrokerClient::start(
        ClientOptions {
            endpoint: deps.endpoint.clone(),
            client_id: format!("{}-in", client_id(&id)),
            will: None,
            subscriptions: Vec::new(),
            always_subscribe: false,
        },
        connection.clone(),
    )?;
    client.set_flow(Flow {
        publishes: None,
        deliveries: deps.flow.outbound.clone(),
    });
    ingress_client.set_flow(Flow {
        publishes: deps.flow.inbound.clone(),
        deliveries: None,
    });
    client.wait_ready().await;
    ingress_client.wait_ready().await;

    let (reporter, state) = StateReporter::new();
    let (egress_tx, egress_rx) = mpsc::channel(64);
    // The account's own media mode (its `media` key, else `[media] mode`).
    let media = qunbridge_connectors::media::MediaContext {
        mode: account.media.unwrap_or(deps.media.mode),
        ..deps.media.clone()
    };
    let ctx = ConnectorContext {
        account: id.clone(),
        platform: account.platform,
        ingress: Ingress::new(Arc::new(MqttSink {
            client: ingress_client.clone(),
            topics: deps.topics.clone(),
            account: id.clone(),
            activity: deps.activity.clone(),
            media: deps.media.clone(),
        })),
        egress: egress_rx,
        state: reporter,
        intake: intake.clone(),
        bots: deps.bots.clone(),
        media: media.clone(),
    };
    let (exit_tx, exit) = watch::channel(None);
    let connector = account.connector.clone().run(
        ctx,
        SharedResources {
            feed_log: deps.feed_log.clone(),
            listeners: deps.listeners.clone(),
        },
    );
    let connector = tokio::spawn(async move {
        let outcome = connector.await;
        let reason = match &outcome {
            Ok(()) => "the connector ended".to_owned(),
            Err(error) => error.to_string(),
        };
        let _ = exit_tx.send(Some(reason));
        outcome
    });
    let policy = Arc::new(LivePolicy::new(account.egress.clone()));
    let room = OutboxRoom::new(OUTBOX_LIMIT, OUTBOX_LIMIT_BYTES);
    let dispatcher = Dispatcher::new(
        AccountEgress {
            account: id.clone(),
            platform: account.platform,
            policy: policy.clone(),
            connector: egress_tx,
            store: deps.store.clone(),
            stop: stop.clone(),
            room: room.clone(),
            media,
            stats: deps.stats.clone(),
        },
        deps.activity.clone(),
    );
    let pump = EgressPump {
        account: id.clone(),
        platform: account.platform,
        policy: policy.clone(),
        keyed_sends: account.platform == Platform::Api && deps.feed_log.is_some(),
        client: client.clone(),
        topics: deps.topics.clone(),
        store: deps.store.clone(),
        activity: deps.activity.clone(),
        stop: stop.clone(),
    };
    let pump = tokio::spawn(pump.run(deliveries, dispatcher, room));
    let status = tokio::spawn(publish_status(
        id.clone(),
        account.platform,
        client.clone(),
        status_topic,
        state.clone(),
        stop.clone(),
    ));
    info!(message = "Account started.", account = %id, platform = %account.platform);
    Ok(RunningAccount {
        id,
        platform: account.platform,
        client,
        state,
        policy,
        intake,
        stop,
        connection,
        connector,
        exit,
        pump,
        status,
        event_loop,
        ingress_client,
        ingress_loop,
    })
}

impl RunningAccount {
    /// Stops this account alone (a reload removed or changed it). Messages still queued for
    /// it stay unacknowledged with the broker.
    pub async fn remove(self, topics: &Topics) {
        info!(message = "Stopping account (removed or changed by a reload).", account = %self.id);
        self.intake.cancel();
        self.stop.cancel();
        self.finish(topics).await;
    }

    /// Stops the account after its stop token was cancelled: waits for the pump and
    /// connector, publishes the offline status and disconnects.
    pub async fn finish(self, topics: &Topics) {
        let _ = self.pump.await;
        match self.connector.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => error!(message = "Connector failed.", account = %self.id, %error),
            Err(error) => error!(message = "Connector task panicked.", account = %self.id, %error),
        }
        let _ = self.status.await;
        let offline = status_payload(
            &self.id,
            self.platform,
            &AccountState::now(ConnectionState::Stopped, None),
        );
        if let Ok(confirmation) = self
            .client
            .publish(topics.status(&self.id), offline, true)
            .await
        {
            let _ = confirmation.wait(Duration::from_secs(2)).await;
        }
        self.client.disconnect().await;
        self.ingress_client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.event_loop).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.ingress_loop).await;
        self.connection.cancel();
    }

    /// Resolves when the connector task ends, with the account and the reason.
    pub async fn exited(&self) -> (String, String) {
        let mut exit = self.exit.clone();
        let reason = match exit.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone().unwrap_or_default(),
            Err(_) => "the connector task vanished".to_owned(),
        };
        (self.id.clone(), reason)
    }
}

/// Publishes the retained status whenever the connector's state changes.
async fn publish_status(
    account: String,
    platform: Platform,
    client: BrokerClient,
    topic: String,
    mut state: watch::Receiver<AccountState>,
    stop: CancellationToken,
) {
    loop {
        let current = state.borrow_and_update().clone();
        metrics::gauge!(ACCOUNT_UP, "account" => account.clone()).set(
            if current.state == ConnectionState::Up {
                1.0
            } else {
                0.0
            },
        );
        let payload = status_payload(&account, platform, &current);
        if client.publish(topic.clone(), payload, true).await.is_err() {
            return;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = state.changed() => if changed.is_err() { return },
        }
    }
}

/// Takes an account's deliveries off the broker and queues them per destination; each is
/// acknowledged once its destination worker settled it.
struct EgressPump {
    /// Account id, for logs.
    account: String,
    /// Its platform: an unpaced `api` destination needs no outbox entry.
    platform: Platform,
    /// Its limits, to tell an unpaced destination.
    policy: Arc<LivePolicy>,
    /// True when its sends are appends to a durable feed keyed by the message (an `api`
    /// account with a crash-safe store): a redelivered copy sent at once is recognized there,
    /// so it needs no send-log read first.
    keyed_sends: bool,
    /// The account's broker connection (for acks).
    client: BrokerClient,
    /// Topic names.
    topics: Topics,
    /// The send log.
    store: Arc<dyn RelayStore>,
    /// In-flight counter for shutdown.
    activity: Arc<Activity>,
    /// Stops the pump.
    stop: CancellationToken,
}

impl EgressPump {
    /// Runs until stopped or the delivery stream ends, then lets the workers finish. First
    /// queues what the outbox kept from an earlier run; then each delivery is put in the
    /// outbox and queued for its destination at once, and acknowledged to the broker as soon
    /// as the outbox write is durable (many share one commit), so no destination's waiting
    /// holds the broker's delivery window.
    async fn run(
        self,
        mut deliveries: mpsc::UnboundedReceiver<Delivery>,
        mut dispatcher: Dispatcher,
        room: Arc<OutboxRoom>,
    ) {
        self.requeue_outbox(&mut dispatcher, &room).await;
        let mut durable = FuturesUnordered::new();
        loop {
            tokio::select! {
                biased;
                Some(done) = durable.next(), if !durable.is_empty() => {
                    let done: Option<Delivery> = done;
                    if let Some(delivery) = done {
                        self.client.ack(&delivery).await;
                    }
                }
                _ = room.wait(), if room.is_full() => {}
                delivery = crate::broker::client::next_delivery(&mut deliveries, &self.stop),
                    if !room.is_full() =>
                {
                    let Some(delivery) = delivery else { break };
                    if let Some(put) = self.take(delivery, &mut dispatcher, &room).await {
                        durable.push(put);
                    }
                }
            }
        }
        // Deliveries whose outbox write is not durable yet stay unacknowledged: the broker
        // hands them over again.
        drop(durable);
        dispatcher.finish().await;
        debug!(message = "Egress pump ended.", account = %self.account);
    }

    /// Handles one delivery: a malformed or already-sent one is acknowledged at once; any
    /// other goes to the outbox and its destination queue. Returns what resolves to the
    /// delivery once it may be acknowledged (`None` inside: never, it is left for redelivery).
    async fn take(
        &self,
        delivery: Delivery,
        dispatcher: &mut Dispatcher,
        room: &Arc<OutboxRoom>,
    ) -> Option<BoxFuture<'static, Option<Delivery>>> {
        let work = self.activity.start();
        let outbound = match decode(&self.topics, &self.account, &delivery) {
            Ok(outbound) => outbound,
            Err(problem) => {
                warn!(message = "Dropping malformed outbound message.", account = %self.account, %problem);
                count_drop("malformed");
                self.client.ack(&delivery).await;
                return None;
            }
        };
        let key = keys::sent(&outbound, &self.account);
        // An unpaced `api` destination sends at once, and its send is itself a durable,
        // idempotent append: it needs no outbox entry (one commit less), and its delivery is
        // acknowledged once it is settled, within about a commit.
        let policy = self.policy.current();
        let immediate = self.platform == Platform::Api
            && policy.per_account.is_none()
            && policy.group_limit(&outbound.group).is_none();
        // A copy sent already is dropped here, unless the destination itself recognizes it
        // (an immediate keyed send: its append finds the key and shows nothing new).
        if !(immediate && self.keyed_sends)
            && self
                .store
                .holds_any(std::slice::from_ref(&key))
                .await
                .unwrap_or(false)
        {
            debug!(message = "Already sent; dropping the redelivered copy.", account = %self.account, id = %outbound.id);
            count_drop("duplicate");
            self.client.ack(&delivery).await;
            return None;
        }
        let put = (!immediate).then(|| {
            self.store.outbox_put(
                &self.account,
                OutboxEntry {
                    key,
                    payload: delivery.publish.payload.to_vec(),
                    queued_ms: now_ms(),
                },
            )
        });
        let (settled_tx, settled) = oneshot::channel::<()>();
        let size = delivery.publish.payload.len() as u64;
        room.hold_bytes(size);
        let held = room.clone();
        dispatcher.dispatch(Queued {
            outbound,
            ack: Box::new(move || {
                held.release_bytes(size);
                let _ = settled_tx.send(());
                Box::pin(async {})
            }),
            work,
            since: Instant::now(),
        });
        let account = self.account.clone();
        Some(Box::pin(async move {
            let Some(put) = put else {
                return settled.await.ok().map(|()| delivery);
            };
            match put.await {
                Ok(_) => Some(delivery),
                Err(error) => {
                    // Not durable: acknowledged to the broker only once sent, as before the
                    // outbox (a crash meanwhile means redelivery).
                    warn!(message = "Outbox not written; the message is acknowledged to the broker once it is sent.", account = %account, %error);
                    settled.await.ok().map(|()| delivery)
                }
            }
        }))
    }

    /// Queues what the account's outbox holds from an earlier run, oldest first; what was
    /// sent already (its send-log key is held) or cannot be read leaves the outbox.
    async fn requeue_outbox(&self, dispatcher: &mut Dispatcher, room: &Arc<OutboxRoom>) {
        let entries = match self.store.outbox(&self.account).await {
            Ok(entries) => entries,
            Err(error) => {
                error!(message = "Cannot read the account's outbox; what it holds waits for the next start.", account = %self.account, %error);
                return;
            }
        };
        if entries.is_empty() {
            return;
        }
        let mut gone = WriteBatch::default();
        let mut requeued = 0usize;
        let now = now_ms();
        for entry in entries {
            let outbound = serde_json::from_slice::<Outbound>(&entry.payload)
                .ok()
                .filter(|outbound| keys::sent(outbound, &self.account) == entry.key);
            let sent = self
                .store
                .holds_any(std::slice::from_ref(&entry.key))
                .await
                .unwrap_or(false);
            let Some(outbound) = outbound.filter(|_| !sent) else {
                if !sent {
                    warn!(message = "Dropping an unreadable outbox entry.", account = %self.account);
                    count_drop("malformed");
                }
                gone.outbox_done.push((self.account.clone(), entry.key));
                continue;
            };
            let age = Duration::from_millis(now.saturating_sub(entry.queued_ms));
            let size = entry.payload.len() as u64;
            room.hold_bytes(size);
            let held = room.clone();
            dispatcher.dispatch(Queued {
                outbound,
                ack: Box::new(move || {
                    held.release_bytes(size);
                    Box::pin(async {})
                }),
                work: self.activity.start(),
                since: Instant::now().checked_sub(age).unwrap_or_else(Instant::now),
            });
            requeued += 1;
        }
        info!(message = "Queued what the outbox kept from an earlier run.", account = %self.account, messages = requeued);
        if !gone.is_empty() {
            if let Err(error) = self.store.write(gone).await {
                warn!(message = "Outbox not cleaned up.", account = %self.account, %error);
            }
        }
    }
}

/// Parses an outbound delivery and checks it is for this account.
fn decode(topics: &Topics, account: &str, delivery: &Delivery) -> Result<Outbound, String> {
    let topic = &delivery.publish.topic;
    let (to_account, group) = topics
        .parse_outbound(topic)
        .ok_or_else(|| format!("topic {topic} is not an outbound topic"))?;
    if to_account != account {
        return Err(format!("topic {topic} is for another account"));
    }
    let outbound: Outbound = serde_json::from_slice(&delivery.publish.payload)
        .map_err(|error| format!("invalid outbound message: {error}"))?;
    if outbound.group != group {
        return Err(format!(
            "outbound group {} does not match its topic",
            outbound.group
        ));
    }
    Ok(outbound)
}
