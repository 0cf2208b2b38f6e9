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
//! - [`admin`]: `/healthz`, `/readyz`, `/metrics`, `/api/v1/status`, `/api/v1/stats`,
//!   `/api/v1/held`.
//! - [`console`]: the operator console on the admin endpoint (pages, `admin.token`, assets).
//! - [`describe`]: what `qunbridge check` prints of each destination (also the console's).
//! - [`status`]: `qunbridge status`, the client of `/api/v1/status`.
//! - [`policy`]: links, pacing, length and filter rules as plain data (config builds them,
//!   core and egress follow them).
//! - [`moderation`]: flood control, spam-wave detection, fingerprints and word lists
//!   (issue 17).
//! - [`metrics`]: every metric name, its help text, and the drop counter.
//!
//! [`run()`] wires them together, one phase per file of `run/`, and runs until the shutdown
//! future resolves; `main.rs` is a thin CLI around it, and tests call it directly.

#![deny(missing_docs)]

pub mod accounts;
pub mod activity;
pub mod admin;
pub mod broker;
pub mod config;
pub mod console;
pub mod core;
pub mod describe;
pub mod egress;
pub mod metrics;
pub mod moderation;
pub mod policy;
pub mod review;
pub mod stats;
pub mod status;
pub mod store;

mod run;

use std::future::Future;

use tracing::{error, info};

use crate::config::{BrokerConfig, BrokerMode, Config};
use crate::run::daemon::Daemon;
use crate::run::placement::Placement;

pub use crate::run::cluster;
pub use crate::run::daemon::routes_of;
pub use crate::run::error::RunError;
pub use crate::run::options::{Lifecycle, LifecycleHook, Reload, RunOptions};

/// Runs the daemon until `shutdown` resolves, then stops intake, finishes in-flight messages
/// within the grace period and returns. The phases, in order: open the store, start the
/// broker, the admin endpoint and the media server, start up (presence, core, accounts), serve with reloads,
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
    let media = run::media::open(&config).await?;
    let embedded = start_broker(&config.broker)?;
    let digester = run::daemon::open_digester(&config, &stores.relay).await;
    let mut daemon = Daemon::new(&config, placement, stores, media, digester);
    // This process's clients reach the broker it runs in process.
    daemon.endpoint.local = embedded.as_ref().map(|broker| broker.local());
    let admin_task = daemon.serve_admin(&config).await?;
    // The media server answers links for the pictures this process's connectors cached; a
    // process that runs only a relay core has none.
    let media_task = if daemon.placement.role.runs_connectors() {
        run::media::start_server(
            &config,
            &daemon.media,
            daemon.health.media_server_running(),
            daemon.stop.clone(),
        )
        .await
        .inspect_err(|_| daemon.stop.cancel())?
    } else {
        None
    };

    tokio::pin!(shutdown);
    let started = tokio::select! {
        started = run::startup::start(&daemon, &config) => started,
        _ = &mut shutdown => {
            info!(message = "Shutdown requested during start-up.");
            options.tell(Lifecycle::Stopping);
            daemon.stop.cancel();
            let _ = admin_task.await;
            finish_media_server(media_task).await;
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
    finish_media_server(media_task).await;
    info!(message = "qunbridge stopped.");
    match failure {
        Some((account, reason)) => {
            error!(message = "Stopped because a connector failed.", %account, %reason);
            Err(RunError::Connector { account, reason })
        }
        None => Ok(()),
    }
}

/// How long the stopped media server may take to finish the downloads under way.
const MEDIA_SERVER_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits for the media server (stopped with the daemon's stop token) to finish the downloads
/// under way, then ends it: a client that stalls a download never holds up shutdown.
async fn finish_media_server(task: Option<tokio::task::JoinHandle<()>>) {
    let Some(task) = task else {
        return;
    };
    let abort = task.abort_handle();
    if tokio::time::timeout(MEDIA_SERVER_GRACE, task)
        .await
        .is_err()
    {
        abort.abort();
    }
}

/// Starts the embedded broker when the config asks for it; the returned guard keeps it
/// running. An external broker is only logged.
///
/// # Errors
/// [`RunError::Broker`] when the embedded broker cannot listen.
fn start_broker(
    config: &BrokerConfig,
) -> Result<Option<broker::embedded::EmbeddedBroker>, RunError> {
    match &config.mode {
        BrokerMode::Embedded { listen } => Ok(Some(broker::embedded::start(
            *listen,
            &broker::topics::Topics::new(&config.topic_prefix),
        )?)),
        BrokerMode::External(external) => {
            info!(message = "Using external MQTT broker.", host = %external.host, port = external.port, tls = external.tls);
            Ok(None)
        }
    }
}
