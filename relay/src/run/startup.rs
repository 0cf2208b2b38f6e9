//! Start-up in the order that loses nothing: the process's presence (scaled out), then the
//! relay core, subscribed before any connector takes input, then every account's connector;
//! and, at the end of the run, their teardown in reverse.

use tracing::{info, warn};

use crate::accounts::{self, RunningAccount};
use crate::config::{Config, Role};

use super::cluster::{self, Presence};
use super::core::{CoreConnections, CoreSession, RunningCore};
use super::daemon::Daemon;
use super::error::RunError;

/// What start-up started, stopped again by [`Started::finish`].
pub struct Started {
    /// This process's announcement on the broker (a scaled-out process only).
    pub presence: Option<Presence>,
    /// The relay core, when this process runs one.
    pub core: Option<RunningCore>,
    /// The accounts' connectors, when this process runs them; a reload changes the list.
    pub accounts: Vec<RunningAccount>,
}

/// Starts what this process runs over `config`. On an error, what was started stops with the
/// daemon's stop token.
///
/// # Errors
/// [`RunError`] when a broker client cannot be set up, an account is locked by another
/// process, or an account cannot start.
pub async fn start(daemon: &Daemon, config: &Config) -> Result<Started, RunError> {
    let presence = announce_presence(daemon).await?;
    let core = if daemon.placement.role.runs_core() {
        Some(start_core(daemon, presence.as_ref()).await?)
    } else {
        None
    };
    let mut started = Started {
        presence,
        core,
        accounts: Vec::new(),
    };
    if daemon.placement.role.runs_connectors() {
        for account in config.accounts.values() {
            if let Some(presence) = &started.presence {
                presence.lock_account(&account.id).await?;
            }
            let account = accounts::start(account, daemon.account_deps()).await?;
            daemon
                .health
                .add_account(account.id.clone(), account.platform, account.state.clone());
            started.accounts.push(account);
        }
    }
    Ok(started)
}

/// A scaled-out process announces itself and reads what the others announced.
async fn announce_presence(daemon: &Daemon) -> Result<Option<Presence>, RunError> {
    let placement = &daemon.placement;
    if !placement.scaled_out() {
        return Ok(None);
    }
    let presence = Presence::start(
        &daemon.endpoint,
        &daemon.topics,
        &placement.instance,
        placement.role,
        daemon.stop.clone(),
    )
    .await?;
    daemon.health.set_broker(presence.connection_state());
    info!(message = "Running as one process of a scaled-out deployment.", instance = %placement.instance, role = placement.role.as_str());
    Ok(Some(presence))
}

/// Starts this process's relay core and waits until it is subscribed, so nothing a connector
/// publishes afterwards is missed; a `core` process also watches for dead cores to take over.
async fn start_core(daemon: &Daemon, presence: Option<&Presence>) -> Result<RunningCore, RunError> {
    let session = CoreSession::own(&daemon.topics, daemon.placement.core_instance());
    let connections = CoreConnections::open(&daemon.endpoint, session, &daemon.stop)?;
    daemon.health.set_broker(connections.connection_state());
    connections.wait_ready().await;
    let core = connections.relay(&daemon.core_deps(), daemon.stop.clone());
    // Held messages: counted from the store, and expired by the process that relays.
    match daemon.held.load().await {
        Ok(0) => {}
        Ok(held) => info!(message = "Messages held for review from before.", held),
        Err(error) => warn!(message = "Cannot count the held messages.", %error),
    }
    tokio::spawn(daemon.held.clone().expire_until(daemon.stop.clone()));
    // Newcomers' messages that were waiting when the process stopped go when their time
    // comes (at once if it has passed).
    match daemon.suspects.load().await {
        Ok(0) => {}
        Ok(waiting) => info!(
            message = "Newcomers' messages still waiting from before.",
            waiting
        ),
        Err(error) => warn!(message = "Cannot read the waiting newcomers' messages.", %error),
    }
    tokio::spawn(daemon.suspects.clone().run(daemon.stop.clone()));
    if let (Role::Core, Some(presence)) = (daemon.placement.role, presence) {
        tokio::spawn(cluster::take_over_dead_cores(
            daemon.placement.instance.clone(),
            presence.view(),
            daemon.core_deps(),
            daemon.stop.clone(),
        ));
    }
    Ok(core)
}

impl Started {
    /// Stops everything once the drain is over: cancels the stop token, lets each account
    /// finish, stops the core (leaving its shared group) and announces the process offline.
    pub async fn finish(self, daemon: &Daemon) {
        daemon.stop.cancel();
        daemon.flow.close();
        for account in self.accounts {
            account.finish(&daemon.topics).await;
        }
        if let Some(core) = self.core {
            core.finish().await;
        }
        if let Some(presence) = self.presence {
            presence.finish().await;
        }
    }
}
