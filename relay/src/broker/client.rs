//! The one MQTT client every part of qunbridge uses (rumqttc), for the embedded broker and
//! external ones alike. It adds what rumqttc leaves to its users:
//!
//! - **Reconnect with backoff and jitter.** rumqttc reconnects as fast as it is polled.
//! - **Publish confirmations.** rumqttc's `publish` returns once the request is queued; here
//!   [`BrokerClient::publish`] returns a [`Confirmation`] that resolves on the broker's PUBACK.
//!   rumqttc assigns packet ids inside its event loop, in request order, and reports each as
//!   `Outgoing::Publish(pkid)`; requests are submitted one at a time under a lock, so the
//!   n-th new `Outgoing::Publish` belongs to the n-th submitted request. Retransmissions
//!   reuse a packet id still awaiting its PUBACK and are recognised as such.
//! - **A lost session does not lose publishes.** When a broker answers a reconnect with
//!   `session_present = false`, rumqttc drops its unacknowledged publishes; they are put back
//!   and sent again (QoS 1 is at-least-once; duplicates are removed downstream by id).
//! - **Safe manual acks, in order.** rumqttd disconnects a client that acknowledges out of
//!   order, so [`BrokerClient::ack`] only marks a delivery done; PUBACKs go out in delivery
//!   order as soon as every earlier delivery is done. Deliveries carry the connection
//!   generation they arrived on; an ack for a delivery from an earlier connection is skipped
//!   (the broker redelivers it), because its packet id may name a different message on the new
//!   connection.
//! - **One flush per burst to an external broker.** rumqttc's handles and session state, driven
//!   by [`super::connection::Connection`], which writes every queued packet before flushing.
//! - **In process when it can.** A client of the daemon that runs the embedded broker talks to
//!   its router over an in-process link ([`super::local`]) instead of loopback TCP, with the
//!   same contract.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use qunbridge_connectors::backoff::Backoff;
use rumqttc::{AsyncClient, Event, LastWill, Login, Outgoing, Packet, Publish, QoS, Request};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::connection::{Connection, ConnectionError, ConnectionOptions};
use super::delivery::SharedAcks;
pub use super::delivery::{next_delivery, Delivery};
use super::flow::{Capacity, FlowError};
use super::local::{self, LocalBroker, LocalConnect, LocalLink, LocalSignals};
use crate::config::{BrokerMode, Secret};

/// Largest MQTT packet either way: envelopes carry whole messages (rumqttc's default is 10 KiB).
pub const MAX_PACKET_BYTES: usize = 1024 * 1024;
/// Keep-alive interval.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// How long connecting to the broker, and flushing to it, may take.
const CONNECTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Requests buffered between the client handles and the event loop.
const REQUEST_CAPACITY: usize = 1024;
/// Outgoing QoS 1 publishes in flight per connection.
const INFLIGHT: u16 = 200;

/// Errors of the broker client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrokerError {
    /// The client has stopped (shutdown or fatal error).
    #[error("the MQTT client has stopped")]
    Stopped,
    /// No PUBACK within the time allowed.
    #[error("the broker did not acknowledge within {0:?}")]
    Timeout(Duration),
    /// TLS could not be set up.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// Flow control: no room on the broker within the time allowed.
    #[error("no room on the broker within {0:?}")]
    Busy(Duration),
    /// The embedded broker refused an in-process link.
    #[error("{0}")]
    Local(String),
}

/// The flow-control pools a client takes part in ([`super::flow`]): room is reserved in
/// `publishes` before each publish, and given back to `deliveries` when a delivery is
/// acknowledged. Clients of a process that does not run both ends of a hop have none.
#[derive(Debug, Clone, Default)]
pub struct Flow {
    /// The pool this client's publishes take room from.
    pub publishes: Option<Arc<Capacity>>,
    /// The pool this client's acknowledged deliveries give room back to.
    pub deliveries: Option<Arc<Capacity>>,
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Endpoint {
    /// Host to connect to.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Use TLS with the system's root certificates.
    pub tls: bool,
    /// User name, if any.
    pub username: Option<String>,
    /// Password, if any.
    pub password: Option<Secret>,
    /// The embedded broker of this process, when it runs one: its clients link to it in
    /// process instead of over TCP.
    pub local: Option<LocalBroker>,
}

impl Endpoint {
    /// The endpoint for a broker config: the embedded broker's listen address, or the
    /// external broker.
    pub fn for_mode(mode: &BrokerMode) -> Endpoint {
        match mode {
            BrokerMode::Embedded { listen } => {
                let host = if listen.ip().is_unspecified() {
                    "127.0.0.1".to_owned()
                } else {
                    listen.ip().to_string()
                };
                Endpoint {
                    host,
                    port: listen.port(),
                    tls: false,
                    username: None,
                    password: None,
                    local: None,
                }
            }
            BrokerMode::External(external) => Endpoint {
                host: external.host.clone(),
                port: external.port,
                tls: external.tls,
                username: external.username.clone(),
                password: external.password.clone(),
                local: None,
            },
        }
    }
}

/// One client's settings.
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Broker endpoint.
    pub endpoint: Endpoint,
    /// MQTT client id; stable, so the persistent session survives reconnects and restarts.
    pub client_id: String,
    /// Last will: (topic, retained payload).
    pub will: Option<(String, Vec<u8>)>,
    /// Filters subscribed at QoS 1 whenever the broker has no session for us.
    pub subscriptions: Vec<String>,
    /// Subscribe on every connection, even to a session the broker kept: for a client that
    /// may have left its subscriptions on an earlier run (a relay core leaving its shared
    /// group on a clean stop).
    pub always_subscribe: bool,
}

/// Resolves when the broker acknowledged a publish.
#[derive(Debug)]
pub struct Confirmation {
    /// Fired by the event loop on PUBACK; dropped if the client stops.
    rx: oneshot::Receiver<()>,
}

impl Confirmation {
    /// Waits for the PUBACK as long as it takes.
    ///
    /// # Errors
    /// [`BrokerError::Stopped`] if the client stopped.
    pub async fn confirmed(self) -> Result<(), BrokerError> {
        self.rx.await.map_err(|_| BrokerError::Stopped)
    }

    /// Waits for the PUBACK, at most `limit`.
    ///
    /// # Errors
    /// [`BrokerError::Timeout`] after `limit`, [`BrokerError::Stopped`] if the client stopped.
    pub async fn wait(self, limit: Duration) -> Result<(), BrokerError> {
        match tokio::time::timeout(limit, self.rx).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(BrokerError::Stopped),
            Err(_) => Err(BrokerError::Timeout(limit)),
        }
    }
}

/// Maps packet ids to waiting publishers.
#[derive(Default)]
struct AckTracker {
    /// Publishers whose requests are queued but have no packet id yet, in request order.
    queued: VecDeque<oneshot::Sender<()>>,
    /// Publishers waiting for the PUBACK of a packet id.
    awaiting: HashMap<u16, oneshot::Sender<()>>,
    /// A publish held back by rumqttc after a packet id collision.
    collided: Option<(u16, oneshot::Sender<()>)>,
}

impl AckTracker {
    /// `Outgoing::Publish(pkid)`: a new publish got its id, or a retransmission.
    fn sent(&mut self, pkid: u16) {
        if pkid == 0 || self.awaiting.contains_key(&pkid) {
            return;
        }
        if let Some((held, _)) = &self.collided {
            if *held == pkid {
                if let Some((_, tx)) = self.collided.take() {
                    self.awaiting.insert(pkid, tx);
                }
                return;
            }
        }
        match self.queued.pop_front() {
            Some(tx) => {
                self.awaiting.insert(pkid, tx);
            }
            None => debug!(message = "Publish with no waiting sender.", pkid),
        }
    }

    /// `Outgoing::AwaitAck(pkid)`: rumqttc holds the next request until `pkid` is free.
    fn collided(&mut self, pkid: u16) {
        if let Some(tx) = self.queued.pop_front() {
            self.collided = Some((pkid, tx));
        }
    }

    /// `Incoming::PubAck(pkid)`.
    fn acked(&mut self, pkid: u16) {
        if let Some(tx) = self.awaiting.remove(&pkid) {
            let _ = tx.send(());
        }
    }
}

/// The state shared by handles and the event loop task.
struct Shared {
    /// Packet id bookkeeping (TCP connections).
    tracker: Mutex<AckTracker>,
    /// Incoming QoS 1 deliveries in the order their PUBACKs must go out.
    acks: Arc<SharedAcks>,
    /// The flow-control pools, set once before the client is used ([`BrokerClient::set_flow`]).
    flow: OnceLock<Flow>,
}

/// How a client reaches its broker.
#[derive(Clone)]
enum Link {
    /// Over the network, through rumqttc.
    Remote(AsyncClient),
    /// In process, to the embedded broker's router.
    Local(Arc<LocalLink>),
}

/// A started client: its handle, the stream of its deliveries, and the task that runs its
/// connection.
pub type Started = (
    BrokerClient,
    mpsc::UnboundedReceiver<Delivery>,
    JoinHandle<()>,
);

/// A cloneable handle to one MQTT connection.
#[derive(Clone)]
pub struct BrokerClient {
    /// rumqttc's request handle, or the in-process link.
    link: Link,
    /// Shared with the event loop.
    shared: Arc<Shared>,
    /// Serialises "register a waiter, queue the request" so their orders match.
    submit: Arc<tokio::sync::Mutex<()>>,
    /// True while connected.
    connected: watch::Receiver<bool>,
    /// True once the subscriptions are in place (SUBACK, or a session that has them).
    subscribed: watch::Receiver<bool>,
    /// Client id, for logs.
    client_id: Arc<str>,
}

impl BrokerClient {
    /// Starts a client: returns its handle, the stream of deliveries, and the event loop task.
    /// The task runs until [`BrokerClient::disconnect`] or `stop`.
    ///
    /// # Errors
    /// [`BrokerError::Tls`] if TLS was asked for and cannot be set up.
    pub fn start(options: ClientOptions, stop: CancellationToken) -> Result<Started, BrokerError> {
        if let Some(broker) = options.endpoint.local.clone() {
            return Self::start_local(&broker, options, stop);
        }
        let login = options.endpoint.username.as_ref().map(|user| {
            let password = options
                .endpoint
                .password
                .as_ref()
                .map(|p| p.expose().to_owned())
                .unwrap_or_default();
            Login::new(user.clone(), password)
        });
        let last_will = options
            .will
            .as_ref()
            .map(|(topic, payload)| LastWill::new(topic, payload.clone(), QoS::AtLeastOnce, true));
        let tls = if options.endpoint.tls {
            Some(tls_config()?)
        } else {
            None
        };
        let (requests_tx, requests) = flume::bounded(REQUEST_CAPACITY);
        let client = AsyncClient::from_senders(requests_tx);
        let connection = Connection::new(
            ConnectionOptions {
                client_id: options.client_id.clone(),
                host: options.endpoint.host.clone(),
                port: options.endpoint.port,
                tls,
                keep_alive: KEEP_ALIVE,
                login,
                last_will,
                max_packet_bytes: MAX_PACKET_BYTES,
                inflight: INFLIGHT,
                timeout: CONNECTION_TIMEOUT,
            },
            requests,
        );

        let shared = Arc::new(Shared {
            tracker: Mutex::new(AckTracker::default()),
            acks: Arc::new(SharedAcks::default()),
            flow: OnceLock::new(),
        });
        let (connected_tx, connected) = watch::channel(false);
        let (subscribed_tx, subscribed) = watch::channel(false);
        // Unbounded on purpose: the event loop also carries our acks and PUBACKs, so it must
        // never wait for a slow consumer (that would stop the acks that make room). What can
        // queue here is bounded by the broker's inflight window for this client (100
        // unacknowledged deliveries on the embedded rumqttd, a fixed limit of rumqttd 0.20;
        // `max_inflight_messages` on mosquitto).
        let (deliveries_tx, deliveries) = mpsc::unbounded_channel();
        let handle = BrokerClient {
            link: Link::Remote(client.clone()),
            shared: shared.clone(),
            submit: Arc::new(tokio::sync::Mutex::new(())),
            connected,
            subscribed,
            client_id: options.client_id.clone().into(),
        };
        let task = tokio::spawn(run_event_loop(
            connection,
            client,
            shared,
            options,
            StateSignals {
                connected: connected_tx,
                subscribed: subscribed_tx,
            },
            deliveries_tx,
            stop,
        ));
        Ok((handle, deliveries, task))
    }

    /// Starts a client over an in-process link to the embedded broker of this process.
    fn start_local(
        broker: &LocalBroker,
        options: ClientOptions,
        stop: CancellationToken,
    ) -> Result<Started, BrokerError> {
        let shared = Arc::new(Shared {
            tracker: Mutex::new(AckTracker::default()),
            acks: Arc::new(SharedAcks::default()),
            flow: OnceLock::new(),
        });
        shared.acks.new_connection();
        let (connected_tx, connected) = watch::channel(false);
        let (subscribed_tx, subscribed) = watch::channel(false);
        // Unbounded for the same reason as over TCP: what can queue is bounded by the broker's
        // window of unacknowledged deliveries for this client.
        let (deliveries_tx, deliveries) = mpsc::unbounded_channel();
        let connect = LocalConnect {
            client_id: options.client_id.clone(),
            will: options.will.clone(),
            subscriptions: options.subscriptions.clone(),
            always_subscribe: options.always_subscribe,
        };
        let (link, task) = local::start(
            broker,
            connect,
            shared.acks.clone(),
            LocalSignals {
                connected: connected_tx,
                subscribed: subscribed_tx,
            },
            deliveries_tx,
            stop,
        )
        .map_err(|error| BrokerError::Local(error.to_string()))?;
        let handle = BrokerClient {
            link: Link::Local(link),
            shared,
            submit: Arc::new(tokio::sync::Mutex::new(())),
            connected,
            subscribed,
            client_id: options.client_id.into(),
        };
        Ok((handle, deliveries, task))
    }

    /// Makes the client take part in flow control (once; later calls change nothing).
    pub fn set_flow(&self, flow: Flow) {
        let _ = self.shared.flow.set(flow);
    }

    /// Publishes at QoS 1; the returned [`Confirmation`] resolves on the broker's PUBACK.
    /// With flow control, waits as long as it takes for room first.
    ///
    /// # Errors
    /// [`BrokerError::Stopped`] if the client no longer runs.
    pub async fn publish(
        &self,
        topic: String,
        payload: Vec<u8>,
        retain: bool,
    ) -> Result<Confirmation, BrokerError> {
        self.publish_within(topic, payload, retain, None).await
    }

    /// Publishes at QoS 1 after waiting at most `wait` (`None`: as long as it takes) for room
    /// on the broker, when the client takes part in flow control. Publishes submitted one
    /// after another reach the broker in that order.
    ///
    /// # Errors
    /// [`BrokerError::Busy`] when there was no room in time, [`BrokerError::Stopped`] if the
    /// client no longer runs.
    pub async fn publish_within(
        &self,
        topic: String,
        payload: Vec<u8>,
        retain: bool,
        wait: Option<Duration>,
    ) -> Result<Confirmation, BrokerError> {
        let pool = self.shared.flow.get().and_then(|f| f.publishes.clone());
        if let Some(pool) = &pool {
            pool.reserve(Capacity::size_of(&topic, payload.len()), wait)
                .await
                .map_err(|error| match error {
                    FlowError::Busy(limit) => BrokerError::Busy(limit),
                    FlowError::Closed => BrokerError::Stopped,
                })?;
        }
        let size = Capacity::size_of(&topic, payload.len());
        let client = match &self.link {
            Link::Remote(client) => client,
            Link::Local(link) => {
                return match link.publish(&topic, &payload, retain) {
                    Some(rx) => Ok(Confirmation { rx }),
                    None => {
                        if let Some(pool) = pool {
                            pool.release(size);
                        }
                        Err(BrokerError::Busy(Duration::ZERO))
                    }
                };
            }
        };
        let (tx, rx) = oneshot::channel();
        let _order = self.submit.lock().await;
        self.lock_tracker().queued.push_back(tx);
        if client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .await
            .is_err()
        {
            // Nothing after ours can be queued while we hold the submit lock.
            self.lock_tracker().queued.pop_back();
            if let Some(pool) = pool {
                pool.release(size);
            }
            return Err(BrokerError::Stopped);
        }
        Ok(Confirmation { rx })
    }

    /// Acknowledges a delivery once its effect is done. The PUBACK goes out when every
    /// earlier delivery of the connection is acknowledged too. A delivery from an earlier
    /// connection is not acknowledged: the broker redelivers it, and the id-based dedup
    /// absorbs it.
    pub async fn ack(&self, delivery: &Delivery) {
        if delivery.publish.qos == QoS::AtMostOnce {
            return;
        }
        let ready: Vec<u16> = {
            let mut order = self.shared.acks.lock();
            if delivery.generation != order.generation {
                debug!(
                    message = "Skipping ack of a delivery from an earlier connection.",
                    client = %self.client_id,
                    pkid = delivery.publish.pkid
                );
                return;
            }
            if let Some(entry) = order.entries.iter_mut().find(|e| e.0 == delivery.seq) {
                if !entry.2 {
                    entry.2 = true;
                    // Consumed: the room it held on the broker is free again.
                    if let Some(pool) = self.shared.flow.get().and_then(|f| f.deliveries.as_ref()) {
                        pool.release(Capacity::size_of(
                            &delivery.publish.topic,
                            delivery.publish.payload.len(),
                        ));
                    }
                }
            }
            let mut ready = Vec::new();
            while order.entries.front().is_some_and(|e| e.2) {
                if let Some((_, pkid, _)) = order.entries.pop_front() {
                    ready.push(pkid);
                }
            }
            ready
        };
        match &self.link {
            Link::Local(link) => {
                if !ready.is_empty() {
                    link.ack(ready);
                }
            }
            Link::Remote(client) => {
                for pkid in ready {
                    // rumqttc's ack needs only the packet id and QoS of the publish.
                    let mut publish = Publish::new("", QoS::AtLeastOnce, Vec::new());
                    publish.pkid = pkid;
                    if client.ack(&publish).await.is_err() {
                        debug!(message = "Ack not sent: client stopped.", client = %self.client_id);
                        return;
                    }
                }
            }
        }
    }

    /// Drops a subscription (a relay core leaving its shared group on a clean stop, so the
    /// broker stops handing it messages).
    pub async fn unsubscribe(&self, filter: &str) {
        match &self.link {
            Link::Local(link) => link.unsubscribe(filter),
            Link::Remote(client) => {
                if client.unsubscribe(filter).await.is_err() {
                    debug!(message = "Unsubscribe not sent: client stopped.", client = %self.client_id);
                }
            }
        }
    }

    /// True while connected to the broker.
    pub fn is_connected(&self) -> bool {
        *self.connected.borrow()
    }

    /// A receiver that follows the connection state.
    pub fn connection_state(&self) -> watch::Receiver<bool> {
        self.connected.clone()
    }

    /// Waits until connected with the subscriptions in place.
    pub async fn wait_ready(&self) {
        let mut subscribed = self.subscribed.clone();
        let _ = subscribed.wait_for(|ready| *ready).await;
    }

    /// Sends DISCONNECT (no last will) and lets the event loop end.
    pub async fn disconnect(&self) {
        match &self.link {
            Link::Local(link) => link.disconnect(),
            Link::Remote(client) => {
                let _ = client.disconnect().await;
            }
        }
    }

    /// The tracker, recovering from a poisoned lock (its data stays consistent per call).
    fn lock_tracker(&self) -> std::sync::MutexGuard<'_, AckTracker> {
        self.shared
            .tracker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// rustls with the system's root certificates and the ring provider.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, BrokerError> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for cert in found.certs {
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(BrokerError::Tls(
            "no system root certificates found (install ca-certificates)".into(),
        ));
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| BrokerError::Tls(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(Arc::new(config))
}

/// What the event loop tells the handles about the connection.
struct StateSignals {
    /// Connected or not.
    connected: watch::Sender<bool>,
    /// Subscriptions in place.
    subscribed: watch::Sender<bool>,
}

/// Polls the connection until told to stop or disconnected, reconnecting with backoff: tracks
/// packet ids for confirmations, numbers deliveries for in-order acks, and puts back the
/// publishes a broker that lost the session dropped.
async fn run_event_loop(
    mut connection: Connection,
    client: AsyncClient,
    shared: Arc<Shared>,
    options: ClientOptions,
    signals: StateSignals,
    deliveries: mpsc::UnboundedSender<Delivery>,
    stop: CancellationToken,
) {
    let StateSignals {
        connected,
        subscribed,
    } = signals;
    let client_id = options.client_id.as_str();
    let mut backoff = Backoff::reconnect();
    let mut disconnecting = false;
    // A reconnect, not the first connection: a missing session then means lost messages.
    let mut ever_connected = false;
    // Publishes rumqttc held when the connection dropped, in case the broker lost our session.
    let mut unacked: Vec<Request> = Vec::new();
    loop {
        let event = tokio::select! {
            _ = stop.cancelled() => break,
            event = connection.poll() => event,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                // A new connection: earlier deliveries will be redelivered on it.
                shared.acks.new_connection();
                backoff.reset();
                drop_stale_acks(&mut connection.pending);
                if !ack.session_present && ever_connected {
                    // What the broker held for us is gone with the session.
                    if let Some(pool) = shared.flow.get().and_then(|f| f.deliveries.as_ref()) {
                        pool.release_all();
                    }
                }
                ever_connected = true;
                let subscribe = !ack.session_present || options.always_subscribe;
                if !ack.session_present && !unacked.is_empty() {
                    warn!(
                        message = "Broker lost the session; resending unacknowledged publishes.",
                        client = client_id,
                        count = unacked.len()
                    );
                    connection.pending.extend(unacked.drain(..));
                }
                if subscribe {
                    let filters = options
                        .subscriptions
                        .iter()
                        .map(|f| rumqttc::SubscribeFilter::new(f.clone(), QoS::AtLeastOnce));
                    if !options.subscriptions.is_empty() {
                        if let Err(error) = client.try_subscribe_many(filters) {
                            warn!(message = "Could not queue subscriptions.", client = client_id, %error);
                        }
                    }
                }
                unacked.clear();
                if !subscribe || options.subscriptions.is_empty() {
                    let _ = subscribed.send(true);
                }
                info!(
                    message = "Connected to the MQTT broker.",
                    client = client_id,
                    session_present = ack.session_present
                );
                let _ = connected.send(true);
            }
            Ok(Event::Incoming(Packet::Publish(publish))) => {
                if deliveries.send(shared.acks.register(publish)).is_err() {
                    debug!(message = "Delivery consumer gone.", client = client_id);
                }
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => lock(&shared).acked(ack.pkid),
            Ok(Event::Incoming(Packet::SubAck(_))) => {
                let _ = subscribed.send(true);
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => lock(&shared).sent(pkid),
            Ok(Event::Outgoing(Outgoing::AwaitAck(pkid))) => lock(&shared).collided(pkid),
            Ok(Event::Outgoing(Outgoing::Disconnect)) => disconnecting = true,
            Ok(_) => {}
            Err(error) => {
                let _ = connected.send(false);
                if disconnecting || matches!(error, ConnectionError::RequestsDone) {
                    break;
                }
                unacked = connection
                    .pending
                    .iter()
                    .filter(|r| matches!(r, Request::Publish(_)))
                    .cloned()
                    .collect();
                let delay = backoff.next().unwrap_or(KEEP_ALIVE);
                if ever_connected {
                    metrics::counter!(crate::metrics::RECONNECTS, "account" => format!("mqtt:{client_id}"))
                        .increment(1);
                }
                warn!(
                    message = "MQTT connection failed; retrying.",
                    client = client_id,
                    %error,
                    retry_in_ms = delay.as_millis() as u64
                );
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    let _ = connected.send(false);
    debug!(message = "MQTT event loop ended.", client = client_id);
}

/// Takes acknowledgements out of the requests rumqttc replays after a reconnect. They name
/// packet ids of the connection that ended; the broker redelivers those messages (acked again
/// when their new delivery is done), and an ack it does not expect makes rumqttd drop the
/// connection ("out of order ack"). Replayed on every reconnect, one such ack once kept a
/// client reconnecting every half second for as long as it ran.
fn drop_stale_acks(pending: &mut VecDeque<Request>) {
    let before = pending.len();
    pending.retain(|request| !matches!(request, Request::PubAck(_) | Request::PubRec(_)));
    if pending.len() != before {
        debug!(
            message = "Dropped acknowledgements of an earlier connection.",
            count = before - pending.len()
        );
    }
}

/// The tracker of a shared state.
fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, AckTracker> {
    shared
        .tracker
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod stale_ack_tests {
    use super::*;

    #[test]
    fn acks_of_an_ended_connection_are_not_replayed_but_publishes_are() {
        let mut pending = VecDeque::from(vec![
            Request::PubAck(rumqttc::PubAck::new(100)),
            Request::Publish(Publish::new("t", QoS::AtLeastOnce, vec![1])),
            Request::PubAck(rumqttc::PubAck::new(27)),
        ]);
        drop_stale_acks(&mut pending);
        assert_eq!(pending.len(), 1);
        assert!(matches!(pending[0], Request::Publish(_)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_matches_new_publishes_in_order_and_skips_retransmissions() {
        let mut tracker = AckTracker::default();
        let (a_tx, mut a_rx) = oneshot::channel();
        let (b_tx, mut b_rx) = oneshot::channel();
        let (c_tx, mut c_rx) = oneshot::channel();
        tracker.queued.extend([a_tx, b_tx, c_tx]);
        tracker.sent(1);
        tracker.sent(2);
        tracker.sent(1); // retransmission of 1 after a reconnect
        tracker.collided(2); // c waits for pkid 2
        tracker.acked(2);
        assert!(b_rx.try_recv().is_ok());
        tracker.sent(2); // c goes out with pkid 2
        assert!(c_rx.try_recv().is_err(), "not acked yet");
        tracker.acked(1);
        assert!(a_rx.try_recv().is_ok());
        tracker.acked(2);
        assert!(c_rx.try_recv().is_ok());
        assert!(tracker.queued.is_empty() && tracker.awaiting.is_empty());
    }
}
