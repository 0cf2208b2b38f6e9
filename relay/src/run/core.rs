//! A relay core on one broker session, from connecting to a graceful teardown: the one way
//! both the process's own core (started by [`super::startup`]) and a core taking a dead core's
//! session over ([`super::cluster`]) start and stop, and the client ids and filter that name
//! those sessions.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::activity::Activity;
use crate::broker::{
    BrokerClient, BrokerError, ClientOptions, Delivery, Endpoint, Flow, Hops, Topics,
};
use crate::core::{Core, SharedRoutes};
use crate::store::RelayStore;

/// Client id of the single-process relay core's broker connection.
pub const CORE_CLIENT_ID: &str = "qunbridge-core";
/// Shared-subscription group of the relay cores.
pub const CORE_GROUP: &str = "qunbridge-core";
/// How long a stopping core waits for each connection's event loop to end after DISCONNECT.
const EVENT_LOOP_GRACE: Duration = Duration::from_secs(2);

/// The MQTT client id of the relay core of `instance` (`None`: the single-process core).
pub fn core_client_id(instance: Option<&str>) -> String {
    match instance {
        Some(instance) => format!("qunbridge-core-{instance}"),
        None => CORE_CLIENT_ID.to_owned(),
    }
}

/// What the core of a multi-process deployment subscribes to.
pub fn shared_inbound_filter(topics: &Topics) -> String {
    format!("$share/{CORE_GROUP}/{}", topics.inbound_filter())
}

/// What every relay core of this process shares, whichever session it runs on.
#[derive(Clone)]
pub struct CoreDeps {
    /// The broker both connections of a core go to.
    pub endpoint: Endpoint,
    /// Topic names the core reads from and publishes to.
    pub topics: Topics,
    /// Where messages go; a reload swaps them under running cores.
    pub routes: SharedRoutes,
    /// Dedup keys and echo fingerprints, shared by every core so a message counts once.
    pub store: Arc<dyn RelayStore>,
    /// In-flight counter the drain waits on.
    pub activity: Arc<Activity>,
    /// Flow control: the core gives back inbound room and takes outbound room.
    pub flow: Hops,
    /// Group health counting, when enabled.
    pub stats: Option<Arc<crate::stats::StatsCounter>>,
    /// The moderation step every core of the process judges with (one flood count).
    pub moderator: Arc<crate::core::Moderator>,
    /// Messages held for review, shared by the process's cores and its admin endpoint.
    pub held: Arc<crate::core::hold::HeldMessages>,
    /// The suspect delay, shared by the process's cores.
    pub suspects: Arc<crate::core::suspect::Suspects>,
    /// The admins' group notifier, shared by the process's cores and its moderator.
    pub notifier: Arc<crate::core::Notifier>,
}

/// Which broker session a core runs on and how it treats its subscription.
pub struct CoreSession {
    /// Client id of the receiving connection; it names the persistent session.
    pub client_id: String,
    /// Client id of the publishing connection, a session of its own (see [`Core::publisher`]).
    pub publisher_id: String,
    /// The inbound filter the receiving connection subscribes to (shared in a scaled-out
    /// deployment).
    pub inbound_filter: String,
    /// Subscribe on every connection, even to a session the broker kept: a core that left its
    /// shared group on a clean stop must join it again.
    pub always_subscribe: bool,
    /// Unsubscribe on [`RunningCore::finish`]: a core of a scaled-out deployment leaves its
    /// shared group, or the broker keeps routing messages to its session. A takeover core
    /// leaves the dead core's subscription in place for its owner.
    pub leave_on_finish: bool,
}

impl CoreSession {
    /// The session of this process's own core: `qunbridge-core`, or in a scaled-out
    /// deployment `qunbridge-core-<instance>` in the shared group.
    pub fn own(topics: &Topics, instance: Option<&str>) -> CoreSession {
        let client_id = core_client_id(instance);
        let scaled_out = instance.is_some();
        CoreSession {
            publisher_id: format!("{client_id}-out"),
            client_id,
            inbound_filter: if scaled_out {
                shared_inbound_filter(topics)
            } else {
                topics.inbound_filter()
            },
            always_subscribe: scaled_out,
            leave_on_finish: scaled_out,
        }
    }

    /// The session of the dead core `dead`, taken over under its client id.
    pub fn takeover(topics: &Topics, dead: &str) -> CoreSession {
        let client_id = core_client_id(Some(dead));
        CoreSession {
            publisher_id: format!("{client_id}-takeover-out"),
            client_id,
            inbound_filter: shared_inbound_filter(topics),
            always_subscribe: true,
            leave_on_finish: false,
        }
    }
}

/// A core's two broker connections, set up but relaying nothing yet.
pub struct CoreConnections {
    /// Receives the inbound messages and acknowledges them.
    client: BrokerClient,
    /// Deliveries of `client`, handed to the core once it runs.
    deliveries: mpsc::UnboundedReceiver<Delivery>,
    /// `client`'s event loop.
    client_loop: JoinHandle<()>,
    /// Publishes outbound messages (a connection of its own, see [`Core::publisher`]).
    publisher: BrokerClient,
    /// `publisher`'s event loop.
    publisher_loop: JoinHandle<()>,
    /// Filter to leave on finish, if the session says so.
    leave: Option<String>,
}

impl CoreConnections {
    /// Starts both connections of `session`; they run until `stop` or
    /// [`RunningCore::finish`].
    ///
    /// # Errors
    /// [`BrokerError`] when a client cannot be set up (TLS).
    pub fn open(
        endpoint: &Endpoint,
        session: CoreSession,
        stop: &CancellationToken,
    ) -> Result<CoreConnections, BrokerError> {
        let (client, deliveries, client_loop) = BrokerClient::start(
            ClientOptions {
                endpoint: endpoint.clone(),
                client_id: session.client_id,
                will: None,
                subscriptions: vec![session.inbound_filter.clone()],
                always_subscribe: session.always_subscribe,
            },
            stop.clone(),
        )?;
        let (publisher, _, publisher_loop) = BrokerClient::start(
            ClientOptions {
                endpoint: endpoint.clone(),
                client_id: session.publisher_id,
                will: None,
                subscriptions: Vec::new(),
                always_subscribe: false,
            },
            stop.clone(),
        )?;
        Ok(CoreConnections {
            client,
            deliveries,
            client_loop,
            publisher,
            publisher_loop,
            leave: session.leave_on_finish.then_some(session.inbound_filter),
        })
    }

    /// The receiving connection's state (what `/readyz` reports as the broker's).
    pub fn connection_state(&self) -> watch::Receiver<bool> {
        self.client.connection_state()
    }

    /// Waits until both connections are up and the subscription is in place.
    pub async fn wait_ready(&self) {
        self.client.wait_ready().await;
        self.publisher.wait_ready().await;
    }

    /// Starts relaying until `stop`.
    pub fn relay(self, deps: &CoreDeps, stop: CancellationToken) -> RunningCore {
        self.client.set_flow(Flow {
            publishes: None,
            deliveries: deps.flow.inbound.clone(),
        });
        self.publisher.set_flow(Flow {
            publishes: deps.flow.outbound.clone(),
            deliveries: None,
        });
        let core = Core {
            topics: deps.topics.clone(),
            routes: deps.routes.clone(),
            store: deps.store.clone(),
            client: self.client.clone(),
            publisher: self.publisher.clone(),
            activity: deps.activity.clone(),
            stats: deps.stats.clone(),
            moderator: deps.moderator.clone(),
            held: deps.held.clone(),
            suspects: deps.suspects.clone(),
            notifier: deps.notifier.clone(),
        };
        // A release publishes on the first core's connection, and so do notifications.
        deps.held
            .attach(self.publisher.clone(), deps.topics.clone());
        deps.notifier
            .attach(self.publisher.clone(), deps.topics.clone(), stop.clone());
        RunningCore {
            task: tokio::spawn(core.run(self.deliveries, stop)),
            client: self.client,
            client_loop: self.client_loop,
            publisher: self.publisher,
            publisher_loop: self.publisher_loop,
            leave: self.leave,
        }
    }
}

/// A relay core that relays until its stop token is cancelled; [`RunningCore::finish`] ends
/// it gracefully.
pub struct RunningCore {
    /// The core's loop; it ends when the stop token is cancelled.
    task: JoinHandle<()>,
    /// Receiving connection, disconnected on finish.
    client: BrokerClient,
    /// Its event loop, given [`EVENT_LOOP_GRACE`] to end.
    client_loop: JoinHandle<()>,
    /// Publishing connection, disconnected on finish.
    publisher: BrokerClient,
    /// Its event loop, given [`EVENT_LOOP_GRACE`] to end.
    publisher_loop: JoinHandle<()>,
    /// Filter unsubscribed before disconnecting, if the session leaves its group.
    leave: Option<String>,
}

impl RunningCore {
    /// Waits for the core to stop (its stop token cancelled), leaves the shared group if the
    /// session says so, and disconnects both connections without a last will.
    pub async fn finish(self) {
        let _ = self.task.await;
        if let Some(filter) = &self.leave {
            self.client.unsubscribe(filter).await;
        }
        self.client.disconnect().await;
        self.publisher.disconnect().await;
        let _ = tokio::time::timeout(EVENT_LOOP_GRACE, self.client_loop).await;
        let _ = tokio::time::timeout(EVENT_LOOP_GRACE, self.publisher_loop).await;
    }
}
