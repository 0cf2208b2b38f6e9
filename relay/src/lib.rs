//! qunbridge: a relay that links WeChat, QQ and DingTalk groups over an MQTT broker.
//!
//! # Layout
//! - [`config`]: the TOML file, `${ENV}` and `<key>_file` secrets, validation of everything.
//! - [`broker`]: the embedded rumqttd, the rumqttc client every part uses, topic names.
//! - [`core`]: dedup, routing and rendering between inbound and outbound topics.
//! - [`accounts`]: one connector per account, wired to its topics.
//! - [`egress`]: per-destination queues, pacing, coalescing, splitting.
//! - [`policy`]: links, pacing, length and filter rules as plain data (config builds them,
//!   core and egress follow them).
//! - [`metrics`]: every metric name, its help text, and the drop counter.
//! - [`store`]: dedup keys (in memory for now, behind a trait).
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics`, `/api/v1/status`.
//! - [`status`]: `qunbridge status`, the client of `/api/v1/status`.
//!
//! [`run`] wires them together and runs until the shutdown future resolves; `main.rs` is a
//! thin CLI around it, and tests call it directly.

pub mod accounts;
pub mod activity;
pub mod admin;
pub mod broker;
pub mod cluster;
pub mod config;
pub mod core;
pub mod egress;
pub mod metrics;
pub mod policy;
pub mod status;
pub mod store;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::activity::Activity;
use crate::admin::Health;
use crate::broker::{BrokerClient, ClientOptions, Endpoint, Topics};
use crate::config::{BrokerMode, Config, Role, StoreConfig};
use crate::core::{Core, Routes, SharedRoutes};
use crate::store::PersistentStore;

/// Client id of the relay core's broker connection.
pub const CORE_CLIENT_ID: &str = "qunbridge-core";
/// After intake stops, how long nothing may be in flight before the relay counts as drained.
const DRAIN_QUIET: Duration = Duration::from_millis(300);

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The state directory could not be created.
    #[error("cannot create state_dir `{path}`: {source}")]
    StateDir {
        /// The configured path.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// `--accounts` names an account the config does not have.
    #[error("--accounts: no account is called `{0}` in the config")]
    UnknownAccount(String),
    /// An account runs in another process.
    #[error(transparent)]
    Lock(#[from] cluster::LockError),
    /// The state store could not be opened.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The embedded broker could not start.
    #[error(transparent)]
    Broker(#[from] broker::embedded::EmbeddedError),
    /// A broker client could not be set up.
    #[error("MQTT client: {0}")]
    Client(#[from] broker::BrokerError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// What wanted the address.
        what: &'static str,
        /// The address.
        addr: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// A connector stopped on its own.
    #[error("account `{account}` stopped: {reason}")]
    Connector {
        /// The account.
        account: String,
        /// Why.
        reason: String,
    },
}

/// A point in the daemon's life that a service manager wants to hear about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Start-up finished: every account started and the core runs.
    Ready,
    /// Shutdown began: intake stops, in-flight messages finish.
    Stopping,
}

/// Called at each [`Lifecycle`] point; `main.rs` tells systemd (`READY=1`, `STOPPING=1`).
pub type LifecycleHook = Arc<dyn Fn(Lifecycle) + Send + Sync>;

/// Options of a run that are not part of the config file.
pub struct RunOptions {
    /// How long shutdown may take to finish in-flight messages.
    pub grace: Duration,
    /// Told when start-up finished and when shutdown begins (`None`: nobody is told).
    pub on_lifecycle: Option<LifecycleHook>,
    /// Reload requests (SIGHUP) and the file to read again (`None`: no reload).
    pub reload: Option<Reload>,
    /// Move the state store aside before opening it (`qunbridge run --reset-state`).
    pub reset_state: bool,
    /// What to run, over the config's `roles` (`qunbridge run --role`).
    pub role: Option<Role>,
    /// Run only these accounts' connectors (`qunbridge run --accounts a,b`).
    pub accounts: Option<Vec<String>>,
    /// This process's name, over the config's `instance` (`qunbridge run --instance`).
    pub instance: Option<String>,
}

/// Where reload requests come from.
pub struct Reload {
    /// The config file, read again on each request.
    pub path: std::path::PathBuf,
    /// One message per request.
    pub requests: tokio::sync::mpsc::Receiver<()>,
}

impl RunOptions {
    /// Tells the hook, if there is one.
    fn tell(&self, point: Lifecycle) {
        if let Some(hook) = &self.on_lifecycle {
            hook(point);
        }
    }
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("grace", &self.grace)
            .field("on_lifecycle", &self.on_lifecycle.as_ref().map(|_| "hook"))
            .field(
                "reload",
                &self.reload.as_ref().map(|r| r.path.display().to_string()),
            )
            .field("reset_state", &self.reset_state)
            .field("role", &self.role)
            .field("accounts", &self.accounts)
            .field("instance", &self.instance)
            .finish()
    }
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            grace: Duration::from_secs(10),
            on_lifecycle: None,
            reload: None,
            reset_state: false,
            role: None,
            accounts: None,
            instance: None,
        }
    }
}

/// Runs the daemon until `shutdown` resolves, then stops intake, finishes in-flight messages
/// within the grace period and returns.
///
/// # Errors
/// [`RunError`] when start-up fails or a connector stops on its own.
pub async fn run(
    config: Config,
    shutdown: impl Future<Output = ()> + Send,
    options: RunOptions,
) -> Result<(), RunError> {
    // Install the metrics recorder before anything counts.
    let _ = admin::prometheus();
    std::fs::create_dir_all(&config.state_dir).map_err(|source| RunError::StateDir {
        path: config.state_dir.display().to_string(),
        source,
    })?;
    if options.reset_state {
        match PersistentStore::reset(&config.state_dir) {
            Ok(Some(aside)) => {
                warn!(message = "State store moved aside; starting with an empty store.", kept_at = %aside.display())
            }
            Ok(None) => info!(message = "No state store to reset."),
            Err(source) => {
                return Err(RunError::StateDir {
                    path: config.state_dir.display().to_string(),
                    source,
                })
            }
        }
    }
    let role = options.role.unwrap_or(config.role);
    let instance = options
        .instance
        .clone()
        .unwrap_or_else(|| config.instance.clone());
    // A process of a scaled-out deployment (anything but `all`) has a name on the broker.
    let multi = role != Role::All;
    let mut config = config;
    if let Some(subset) = &options.accounts {
        if let Some(unknown) = subset.iter().find(|id| !config.accounts.contains_key(*id)) {
            return Err(RunError::UnknownAccount(unknown.clone()));
        }
    }
    if role == Role::Connectors {
        if let Some(subset) = &options.accounts {
            config.accounts.retain(|id, _| subset.contains(id));
        }
    }
    let (relay_store, feed_log): (
        Arc<dyn store::RelayStore>,
        Arc<dyn qunbridge_connectors::api::FeedLog>,
    ) = match &config.store {
        StoreConfig::Embedded => {
            let persistent = Arc::new(PersistentStore::open(&config.state_dir)?);
            (persistent.clone(), persistent)
        }
        StoreConfig::Redis { url, prefix } => {
            let shared = Arc::new(store::RedisStore::connect(url.expose(), prefix).await?);
            info!(message = "Using the shared Redis store.", prefix = %prefix);
            (shared.clone(), shared)
        }
    };
    let _embedded = match &config.broker.mode {
        BrokerMode::Embedded { listen } => Some(broker::embedded::start(*listen)?),
        BrokerMode::External(external) => {
            info!(message = "Using external MQTT broker.", host = %external.host, port = external.port, tls = external.tls);
            None
        }
    };
    let topics = Topics::new(&config.broker.topic_prefix);
    let endpoint = Endpoint::for_mode(&config.broker.mode);
    let activity = Activity::new();
    let intake = CancellationToken::new();
    let stop = CancellationToken::new();
    let health = Arc::new(Health::default());
    health.set_links(config.links.iter().map(admin::LinkSummary::from).collect());
    health.set_queue_depths(activity.queue_depths().clone());

    let admin_listener = TcpListener::bind(config.admin.listen)
        .await
        .map_err(|source| RunError::Bind {
            what: "admin",
            addr: config.admin.listen.to_string(),
            source,
        })?;
    info!(message = "Admin endpoint listening.", listen = %config.admin.listen);
    let admin_task = tokio::spawn(admin::serve(admin_listener, health.clone(), stop.clone()));

    tokio::pin!(shutdown);
    let routes = SharedRoutes::new(routes_of(&config));
    let shared = SharedDeps {
        endpoint: endpoint.clone(),
        topics: topics.clone(),
        activity: activity.clone(),
        store: relay_store.clone(),
        feed_log: Some(feed_log),
        bots: qunbridge_connectors::BotRegistry::default(),
        listeners: qunbridge_connectors::reverse_ws::SharedListeners::default(),
        intake: intake.clone(),
        stop: stop.clone(),
    };
    let inbound_filter = if multi {
        cluster::shared_inbound_filter(&topics)
    } else {
        topics.inbound_filter()
    };
    let started = async {
        let presence = if multi {
            let presence =
                cluster::Presence::start(&endpoint, &topics, &instance, role, stop.clone()).await?;
            health.set_broker(presence.connection_state());
            info!(message = "Running as one process of a scaled-out deployment.", instance = %instance, role = role.as_str());
            Some(presence)
        } else {
            None
        };
        // The core subscribes before any connector takes input, so nothing published is missed.
        let core = if role.runs_core() {
            let (core_client, core_deliveries, core_loop) = BrokerClient::start(
                ClientOptions {
                    endpoint: endpoint.clone(),
                    client_id: cluster::core_client_id(multi.then_some(instance.as_str())),
                    will: None,
                    subscriptions: vec![inbound_filter.clone()],
                    // A core that left its shared group on a clean stop joins it again.
                    always_subscribe: multi,
                },
                stop.clone(),
            )?;
            let (publisher, _, publisher_loop) = BrokerClient::start(
                ClientOptions {
                    endpoint: endpoint.clone(),
                    client_id: format!(
                        "{}-out",
                        cluster::core_client_id(multi.then_some(instance.as_str()))
                    ),
                    will: None,
                    subscriptions: Vec::new(),
                    always_subscribe: false,
                },
                stop.clone(),
            )?;
            health.set_broker(core_client.connection_state());
            core_client.wait_ready().await;
            publisher.wait_ready().await;
            let core = Core {
                topics: topics.clone(),
                routes: routes.clone(),
                store: relay_store.clone(),
                client: core_client.clone(),
                publisher: publisher.clone(),
                activity: activity.clone(),
            };
            let core_task = tokio::spawn(core.run(core_deliveries, stop.clone()));
            if let (Role::Core, Some(presence)) = (role, &presence) {
                tokio::spawn(cluster::take_over_dead_cores(
                    instance.clone(),
                    presence.view(),
                    cluster::TakeoverDeps {
                        endpoint: endpoint.clone(),
                        topics: topics.clone(),
                        routes: routes.clone(),
                        store: relay_store.clone(),
                        activity: activity.clone(),
                    },
                    stop.clone(),
                ));
            }
            Some((core_client, core_loop, core_task, publisher, publisher_loop))
        } else {
            None
        };

        let mut running = Vec::new();
        if role.runs_connectors() {
            for account in config.accounts.values() {
                if let Some(presence) = &presence {
                    presence.lock_account(&account.id).await?;
                }
                let account = accounts::start(account, shared.deps()).await?;
                health.add_account(account.id.clone(), account.platform, account.state.clone());
                running.push(account);
            }
        }
        Ok::<_, RunError>((presence, core, running))
    };
    let started = tokio::select! {
        started = started => started,
        _ = &mut shutdown => {
            info!(message = "Shutdown requested during start-up.");
            options.tell(Lifecycle::Stopping);
            stop.cancel();
            let _ = admin_task.await;
            return Ok(());
        }
    };
    let (presence, core, running) = match started {
        Ok(started) => started,
        Err(error) => {
            stop.cancel();
            return Err(error);
        }
    };
    health.set_running(true);
    info!(
        message = "qunbridge is running.",
        accounts = running.len(),
        links = config.links.len(),
        version = env!("CARGO_PKG_VERSION")
    );
    options.tell(Lifecycle::Ready);

    // Run until asked to stop, or until a connector stops on its own (a listener that could
    // not bind, for example): that is a failure the operator must see.
    let mut options = options;
    let mut reload = options.reload.take();
    let mut running = running;
    let mut current = config;
    let failure = loop {
        let requested = async {
            match reload.as_mut() {
                Some(reload) => reload.requests.recv().await,
                None => std::future::pending().await,
            }
        };
        let request = tokio::select! {
            _ = &mut shutdown => break None,
            failed = first_connector_exit(&running) => break Some(failed),
            request = requested => request,
        };
        let Some(source) = reload.as_ref().filter(|_| request.is_some()) else {
            reload = None;
            continue;
        };
        if let Some(mut new) = apply_reload(&source.path, &current, &routes, &running, &health) {
            if role == Role::Connectors {
                if let Some(subset) = &options.accounts {
                    new.accounts.retain(|id, _| subset.contains(id));
                }
            }
            if role.runs_connectors() {
                restart_changed_accounts(&current, &new, &mut running, &shared, &health).await;
            }
            current = new;
        }
    };

    info!(message = "Stopping intake.");
    options.tell(Lifecycle::Stopping);
    intake.cancel();
    health.set_running(false);
    let deadline = tokio::time::Instant::now() + options.grace;
    if activity.wait_idle(DRAIN_QUIET, deadline).await {
        info!(message = "In-flight messages finished.");
    } else {
        warn!(
            message = "Graceful shutdown did not finish within the grace period; unacknowledged messages stay with the broker.",
            grace_ms = options.grace.as_millis() as u64,
            inflight = activity.inflight()
        );
    }
    stop.cancel();
    for account in running {
        account.finish(&topics).await;
    }
    if let Some((core_client, core_loop, core_task, publisher, publisher_loop)) = core {
        let _ = core_task.await;
        if multi {
            // Leave the shared group, or the broker keeps routing messages to this session.
            core_client.unsubscribe(&inbound_filter).await;
        }
        core_client.disconnect().await;
        publisher.disconnect().await;
        let _ = tokio::time::timeout(Duration::from_secs(2), core_loop).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), publisher_loop).await;
    }
    if let Some(presence) = presence {
        presence.finish().await;
    }
    let _ = admin_task.await;
    info!(message = "qunbridge stopped.");
    match failure {
        Some((account, reason)) => {
            error!(message = "Stopped because a connector failed.", %account, %reason);
            Err(RunError::Connector { account, reason })
        }
        None => Ok(()),
    }
}

/// What every account needs from the daemon, kept for accounts a reload adds.
struct SharedDeps {
    /// Broker endpoint.
    endpoint: Endpoint,
    /// Topic names.
    topics: Topics,
    /// In-flight counter.
    activity: Arc<Activity>,
    /// Dedup keys, send log, message map, echo fingerprints.
    store: Arc<dyn store::RelayStore>,
    /// The `api` feeds' durable log.
    feed_log: Option<Arc<dyn qunbridge_connectors::api::FeedLog>>,
    /// Every account's platform user id.
    bots: qunbridge_connectors::BotRegistry,
    /// Listeners shared between accounts.
    listeners: qunbridge_connectors::reverse_ws::SharedListeners,
    /// The daemon's intake token.
    intake: CancellationToken,
    /// The daemon's stop token.
    stop: CancellationToken,
}

impl SharedDeps {
    /// The dependencies of one account.
    fn deps(&self) -> accounts::AccountDeps<'_> {
        accounts::AccountDeps {
            endpoint: &self.endpoint,
            topics: &self.topics,
            activity: self.activity.clone(),
            store: self.store.clone(),
            feed_log: self.feed_log.clone(),
            bots: self.bots.clone(),
            listeners: self.listeners.clone(),
            intake: self.intake.clone(),
            stop: self.stop.clone(),
        }
    }
}

/// The routing table of a validated config. The core builds routes from plain data (links,
/// account platforms, filter rules) so it never depends on the config; this is where the two
/// meet.
pub fn routes_of(config: &Config) -> Routes {
    Routes::new(
        &config.links,
        |account| config.account(account).map(|a| a.platform),
        |platform, account, link_rules| config.filters.effective(platform, account, link_rules),
    )
}

/// Reads the config file again and puts its links, formats, filters and limits in force
/// without touching connections or queued messages. A file with errors changes nothing: every
/// error is logged and the failed reload counted. Returns the new config when it was applied.
/// Changes to `[broker]`, `[admin]`, `[store]` or `state_dir` are logged and left for a
/// restart.
fn apply_reload(
    path: &std::path::Path,
    running_config: &Config,
    routes: &SharedRoutes,
    running: &[accounts::RunningAccount],
    health: &Health,
) -> Option<Config> {
    let count = |outcome: &'static str| {
        ::metrics::counter!(crate::metrics::CONFIG_RELOADS, "outcome" => outcome).increment(1);
    };
    let config = match Config::from_file(path, &config::ProcessEnv) {
        Ok(config) => config,
        Err(error) => {
            for problem in &error.problems {
                error!(message = "Reload refused: the config has an error; the running config stays.", %problem);
            }
            count("failed");
            return None;
        }
    };
    if config.broker.topic_prefix != running_config.broker.topic_prefix
        || config.admin.listen != running_config.admin.listen
        || config.state_dir != running_config.state_dir
        || config.store != running_config.store
        || format!("{:?}", config.broker.mode) != format!("{:?}", running_config.broker.mode)
    {
        warn!(
            message =
                "Reload: broker, admin, state_dir or store changes take effect after a restart."
        );
    }
    routes.replace(routes_of(&config));
    for account in running {
        if let Some(new) = config.accounts.get(&account.id) {
            account.policy.replace(new.egress.clone());
        }
    }
    health.set_links(config.links.iter().map(admin::LinkSummary::from).collect());
    count("ok");
    info!(
        message = "Config reloaded: links, formats, filters and limits are in force.",
        links = config.links.len()
    );
    Some(config)
}

/// Stops the accounts a reload removed or changed and starts the ones it added or changed;
/// the other accounts keep their connections and queues.
async fn restart_changed_accounts(
    old: &Config,
    new: &Config,
    running: &mut Vec<accounts::RunningAccount>,
    shared: &SharedDeps,
    health: &Health,
) {
    let same = |id: &str| match (old.accounts.get(id), new.accounts.get(id)) {
        (Some(a), Some(b)) => {
            // Secrets count: a new token restarts the account.
            a.platform == b.platform && a.connector == b.connector
        }
        _ => false,
    };
    let (keep, stop): (Vec<_>, Vec<_>) = std::mem::take(running)
        .into_iter()
        .partition(|account| same(&account.id));
    *running = keep;
    for account in stop {
        health.remove_account(&account.id);
        account.remove(&shared.topics).await;
    }
    for account in new.accounts.values() {
        if running.iter().any(|r| r.id == account.id) {
            continue;
        }
        match accounts::start(account, shared.deps()).await {
            Ok(started) => {
                info!(message = "Account started by a reload.", account = %started.id);
                health.add_account(started.id.clone(), started.platform, started.state.clone());
                running.push(started);
            }
            Err(error) => {
                error!(message = "Account added by a reload could not start.", account = %account.id, %error)
            }
        }
    }
}

/// Resolves when the first connector ends before shutdown, with its account and reason.
async fn first_connector_exit(running: &[accounts::RunningAccount]) -> (String, String) {
    let waits = running.iter().map(|account| Box::pin(account.exited()));
    if running.is_empty() {
        std::future::pending::<()>().await;
    }
    let (outcome, _, _) = futures_util::future::select_all(waits).await;
    outcome
}
