//! The processes of one deployment, told apart by `instance` (ARCHITECTURE.md §9): each
//! announces itself on a retained topic with a last will, so every process knows which are
//! alive and what they run.
//!
//! - `<prefix>/process/<instance>`: `{"instance","roles","status":"online"|"offline"}`,
//!   retained; the broker sets it offline when the process dies.
//! - `<prefix>/lock/<account>`: `{"instance"}`, retained: which process runs the account's
//!   connector. A process refuses to start an account whose lock is held by another process
//!   that is online, so an account runs in exactly one connector process (its pacing depends
//!   on it). Two processes started in the same instant can both win; start them one by one.
//! - Relay cores share the inbound topics through the shared subscription
//!   `$share/qunbridge-core/…` under the client id `qunbridge-core-<instance>` and a
//!   persistent session. Brokers keep what a dead member of a shared group had in flight (and
//!   mosquitto even keeps routing new messages to its session), so when a core goes offline
//!   the first online core by name *takes its session over*: it connects under the dead
//!   core's client id and relays what waits there, until that core is back. Dedup keys in the
//!   shared store make a message handled by both count once.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::core::{CoreConnections, CoreDeps, CoreSession};
use crate::broker::{BrokerClient, BrokerError, ClientOptions, Endpoint, Topics};
use crate::config::Role;

/// How long retained announcements get to arrive before a process decides anything.
const SETTLE: Duration = Duration::from_millis(500);

/// What one process announced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessInfo {
    /// Its roles (`all`, `connectors` or `core`).
    pub role: String,
    /// True while it runs.
    pub online: bool,
}

/// What this process knows of the others.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// Processes by instance.
    pub processes: BTreeMap<String, ProcessInfo>,
    /// Account → instance holding its lock.
    pub locks: HashMap<String, String>,
}

/// This process's presence on the broker.
pub struct Presence {
    /// The presence connection (its last will marks the process offline).
    client: BrokerClient,
    /// Its event loop.
    event_loop: JoinHandle<()>,
    /// What the other processes announced.
    view: watch::Receiver<View>,
    /// Topic names.
    topics: Topics,
    /// This process's name.
    instance: String,
    /// Its role.
    role: Role,
}

/// Why an account cannot run here.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another live process runs it.
    #[error("account `{account}` already runs in qunbridge instance `{holder}`; an account runs in exactly one connector process")]
    Held {
        /// The account.
        account: String,
        /// The instance that has it.
        holder: String,
    },
    /// The broker did not take the lock.
    #[error("cannot take the lock of account `{account}`: {source}")]
    Broker {
        /// The account.
        account: String,
        /// What failed.
        source: BrokerError,
    },
}

impl Presence {
    /// Connects, reads what the other processes announced and announces this one.
    ///
    /// # Errors
    /// [`BrokerError`] when the client cannot be set up.
    pub async fn start(
        endpoint: &Endpoint,
        topics: &Topics,
        instance: &str,
        role: Role,
        stop: CancellationToken,
    ) -> Result<Presence, BrokerError> {
        let topic = process_topic(topics, instance);
        let (client, mut deliveries, event_loop) = BrokerClient::start(
            ClientOptions {
                endpoint: endpoint.clone(),
                client_id: format!("qunbridge-process-{instance}"),
                will: Some((topic.clone(), announcement(instance, role, false))),
                subscriptions: vec![
                    format!("{}/process/+", topics.prefix()),
                    format!("{}/lock/+", topics.prefix()),
                ],
                // The retained announcements are read again at every start.
                always_subscribe: true,
            },
            stop,
        )?;
        let (view_tx, view) = watch::channel(View::default());
        let reader = client.clone();
        let prefix = topics.prefix().to_owned();
        tokio::spawn(async move {
            while let Some(delivery) = deliveries.recv().await {
                let topic = delivery.publish.topic.clone();
                let payload: Option<Value> = serde_json::from_slice(&delivery.publish.payload).ok();
                view_tx.send_modify(|view| apply(view, &prefix, &topic, payload.as_ref()));
                reader.ack(&delivery).await;
            }
        });
        client.wait_ready().await;
        tokio::time::sleep(SETTLE).await;
        let presence = Presence {
            client,
            event_loop,
            view,
            topics: topics.clone(),
            instance: instance.to_owned(),
            role,
        };
        presence.announce(true).await;
        Ok(presence)
    }

    /// Publishes this process's status.
    async fn announce(&self, online: bool) {
        let topic = process_topic(&self.topics, &self.instance);
        let payload = announcement(&self.instance, self.role, online);
        if let Ok(confirmation) = self.client.publish(topic, payload, true).await {
            let _ = confirmation.wait(Duration::from_secs(5)).await;
        }
    }

    /// The broker connection's state (for `/readyz` when this process runs no core).
    pub fn connection_state(&self) -> watch::Receiver<bool> {
        self.client.connection_state()
    }

    /// What the other processes announced, as it changes.
    pub fn view(&self) -> watch::Receiver<View> {
        self.view.clone()
    }

    /// Takes the lock of `account` for this process.
    ///
    /// # Errors
    /// [`LockError::Held`] when another online process holds it.
    pub async fn lock_account(&self, account: &str) -> Result<(), LockError> {
        let holder = {
            let view = self.view.borrow();
            view.locks
                .get(account)
                .filter(|holder| **holder != self.instance)
                .filter(|holder| view.processes.get(*holder).is_some_and(|p| p.online))
                .cloned()
        };
        if let Some(holder) = holder {
            return Err(LockError::Held {
                account: account.to_owned(),
                holder,
            });
        }
        let topic = format!("{}/lock/{}", self.topics.prefix(), account);
        let payload = json!({"instance": self.instance}).to_string().into_bytes();
        let broker = |source| LockError::Broker {
            account: account.to_owned(),
            source,
        };
        let confirmation = self
            .client
            .publish(topic, payload, true)
            .await
            .map_err(broker)?;
        confirmation
            .wait(Duration::from_secs(10))
            .await
            .map_err(broker)
    }

    /// Announces the process offline and disconnects.
    pub async fn finish(self) {
        self.announce(false).await;
        self.client.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), self.event_loop).await;
    }
}

/// The status topic of a process.
fn process_topic(topics: &Topics, instance: &str) -> String {
    format!("{}/process/{instance}", topics.prefix())
}

/// A process announcement.
fn announcement(instance: &str, role: Role, online: bool) -> Vec<u8> {
    json!({
        "instance": instance,
        "roles": role.as_str(),
        "status": if online { "online" } else { "offline" },
    })
    .to_string()
    .into_bytes()
}

/// Applies one retained or live announcement to the view.
fn apply(view: &mut View, prefix: &str, topic: &str, payload: Option<&Value>) {
    let Some(rest) = topic.strip_prefix(prefix).and_then(|r| r.strip_prefix('/')) else {
        return;
    };
    let Some((kind, name)) = rest.split_once('/') else {
        return;
    };
    match (kind, payload) {
        ("process", Some(payload)) => {
            view.processes.insert(
                name.to_owned(),
                ProcessInfo {
                    role: payload["roles"].as_str().unwrap_or("all").to_owned(),
                    online: payload["status"] == "online",
                },
            );
        }
        ("lock", Some(payload)) => {
            if let Some(instance) = payload["instance"].as_str() {
                view.locks.insert(name.to_owned(), instance.to_owned());
            }
        }
        (_, None) => {
            view.processes.remove(name);
            view.locks.remove(name);
        }
        _ => {}
    }
}

/// Watches the other cores and takes over the session of each one that is offline while
/// this core is the first online core by name. Runs until `stop`.
pub async fn take_over_dead_cores(
    instance: String,
    mut view: watch::Receiver<View>,
    deps: CoreDeps,
    stop: CancellationToken,
) {
    let running: Arc<Mutex<HashMap<String, CancellationToken>>> = Arc::default();
    loop {
        let snapshot = view.borrow_and_update().clone();
        let cores: Vec<(&String, &ProcessInfo)> = snapshot
            .processes
            .iter()
            .filter(|(_, p)| p.role == "core")
            .collect();
        let first_online = cores
            .iter()
            .filter(|(name, p)| p.online || **name == instance)
            .map(|(name, _)| name.as_str())
            .min();
        let responsible = first_online == Some(instance.as_str());
        let dead: Vec<String> = cores
            .iter()
            .filter(|(name, p)| !p.online && **name != instance)
            .map(|(name, _)| (*name).clone())
            .collect();
        {
            let mut running = running.lock().unwrap_or_else(PoisonError::into_inner);
            // Stop takeovers of cores that are back, or that are no longer ours.
            running.retain(|name, token| {
                let keep = responsible && dead.contains(name);
                if !keep {
                    info!(message = "Handing a core's session back.", core = %name);
                    token.cancel();
                }
                keep
            });
            if responsible {
                for name in dead {
                    if running.contains_key(&name) {
                        continue;
                    }
                    let token = stop.child_token();
                    running.insert(name.clone(), token.clone());
                    tokio::spawn(run_takeover(name, &deps, token));
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            changed = view.changed() => if changed.is_err() { return },
        }
    }
}

/// Runs a core on the session of the dead core `name` until `token` is cancelled, then
/// leaves without a last word: its owner reconnects as itself.
fn run_takeover(
    name: String,
    deps: &CoreDeps,
    token: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let deps = deps.clone();
    async move {
        warn!(message = "A relay core is offline; taking its session over.", core = %name);
        let session = CoreSession::takeover(&deps.topics, &name);
        match CoreConnections::open(&deps.endpoint, session, &token) {
            Ok(connections) => connections.relay(&deps, token).finish().await,
            Err(error) => {
                warn!(message = "Cannot take a core's session over.", core = %name, %error)
            }
        }
    }
}
