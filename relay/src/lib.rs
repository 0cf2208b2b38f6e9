//! qunbridge: a relay that links WeChat, QQ, DingTalk and WeCom groups, and HTTP clients of
//! the generic `api` connector, over an MQTT broker.
//!
//! # Layout
//! - [`config`]: the TOML file, `${ENV}` and `<key>_file` secrets, validation of everything.
//! - [`broker`]: the embedded rumqttd, the rumqttc client every part uses, topic names.
//! - [`core`]: dedup, routing, filtering and rendering between inbound and outbound topics.
//! - [`accounts`]: one connector per account, wired to its topics.
//! - [`egress`]: per-destination queues, pacing, coalescing, splitting.
//! - [`activity`]: what is in flight, so shutdown can wait for it.
//! - [`store`]: dedup keys, send log, message map and echo fingerprints behind one trait: redb
//!   in `state_dir` on disk, or Redis shared by the processes of a scaled-out deployment.
//! - [`cluster`]: the processes of one deployment: presence, account locks, core takeovers.
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics`, `/api/v1/status`.
//! - [`status`]: `qunbridge status`, the client of `/api/v1/status`.
//!
//! [`run()`] wires them together, one phase per file of `run/`, and runs until the shutdown
//! future resolves; `main.rs` is a thin CLI around it, and tests call it directly.

pub mod accounts;
pub mod activity;
pub mod admin;
pub mod broker;
pub mod cluster;
pub mod config;
pub mod core;
pub mod egress;
pub mod status;
pub mod store;

mod run;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tracing::{error, info};

use crate::config::{BrokerMode, Config, Role};
use crate::run::placement::Placement;
use crate::run::Daemon;

/// Client id of the relay core's broker connection.
pub const CORE_CLIENT_ID: &str = "qunbridge-core";

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
/// within the grace period and returns. The phases, in order: open the store, start the
/// broker and the admin endpoint, start up (presence, core, accounts), serve with reloads,
/// drain, stop. Each lives in a file of `relay/src/run/`.
///
/// # Errors
/// [`RunError`] when start-up fails or a connector stops on its own.
pub async fn run(
    mut config: Config,
    shutdown: impl Future<Output = ()> + Send,
    mut options: RunOptions,
) -> Result<(), RunError> {
    // Install the metrics recorder before anything counts.
    let _ = admin::prometheus();
    run::state::prepare_state_dir(&config, options.reset_state)?;
    let placement = Placement::choose(&config, &options)?;
    placement.keep_own_accounts(&mut config);
    let stores = run::state::open_store(&config).await?;
    let _embedded = start_broker(&config.broker.mode)?;
    let daemon = Daemon::new(&config, placement, stores);
    let admin_task = daemon.serve_admin(&config).await?;

    tokio::pin!(shutdown);
    let started = tokio::select! {
        started = run::startup::start(&daemon, &config) => started,
        _ = &mut shutdown => {
            info!(message = "Shutdown requested during start-up.");
            options.tell(Lifecycle::Stopping);
            daemon.stop.cancel();
            let _ = admin_task.await;
            return Ok(());
        }
    };
    // A failed start-up stops what it started (every part follows the stop token).
    let mut started = started.inspect_err(|_| daemon.stop.cancel())?;
    daemon.health.set_running(true);
    info!(
        message = "qunbridge is running.",
        accounts = started.accounts.len(),
        links = config.links.len(),
        version = env!("CARGO_PKG_VERSION")
    );
    options.tell(Lifecycle::Ready);

    let reload = options.reload.take();
    let failure = run::reload::until_stopped(
        &daemon,
        config,
        reload,
        &mut started.accounts,
        &mut shutdown,
    )
    .await;
    run::drain::drain(&daemon, &options).await;
    started.finish(&daemon).await;
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

/// Starts the embedded broker when the config asks for it; the returned guard keeps it
/// running. An external broker is only logged.
///
/// # Errors
/// [`RunError::Broker`] when the embedded broker cannot listen.
fn start_broker(mode: &BrokerMode) -> Result<Option<broker::embedded::EmbeddedBroker>, RunError> {
    match mode {
        BrokerMode::Embedded { listen } => Ok(Some(broker::embedded::start(*listen)?)),
        BrokerMode::External(external) => {
            info!(message = "Using external MQTT broker.", host = %external.host, port = external.port, tls = external.tls);
            Ok(None)
        }
    }
}
