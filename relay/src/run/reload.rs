//! The running phase: serves until shutdown is asked for or a connector stops on its own, and
//! applies each reload request on the way (links, formats, filters and limits at once; added,
//! removed or changed accounts started and stopped; the rest left for a restart).

use std::future::Future;

use tracing::{error, info, warn};

use super::daemon::{routes_of, Daemon};
use super::options::Reload;
use crate::accounts::{self, RunningAccount};
use crate::admin;
use crate::config::{self, Config};

/// A connector that stopped on its own: its account and why.
pub type ConnectorExit = (String, String);

/// Runs until `shutdown` resolves (`None`) or a connector stops on its own (`Some`: a listener
/// that could not bind, for example, a failure the operator must see), reloading `config` from
/// `reload` on each request. `running` follows the accounts a reload adds or removes.
pub async fn until_stopped(
    daemon: &Daemon,
    config: Config,
    mut reload: Option<Reload>,
    running: &mut Vec<RunningAccount>,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Option<ConnectorExit> {
    let mut current = config;
    loop {
        let requested = async {
            match reload.as_mut() {
                Some(reload) => reload.requests.recv().await,
                None => std::future::pending().await,
            }
        };
        let request = tokio::select! {
            _ = &mut *shutdown => return None,
            failed = first_connector_exit(running) => return Some(failed),
            request = requested => request,
        };
        // No more requests can come: stop listening for them.
        let Some(source) = reload.as_ref().filter(|_| request.is_some()) else {
            reload = None;
            continue;
        };
        let applied = apply_reload(&source.path, &current, daemon, running);
        if let Some(mut new) = applied {
            daemon.placement.keep_own_accounts(&mut new);
            if daemon.placement.role.runs_connectors() {
                restart_changed_accounts(daemon, &current, &new, running).await;
            }
            current = new;
        }
    }
}

/// Reads the config file again and puts its links, formats, filters, limits, moderation and
/// group-health settings in force without touching connections or queued messages, and only
/// then counts the reload as applied (a client waiting for the count, as the tests do, sends
/// its next message under the new config). A file with errors changes nothing: every error
/// is logged and the failed reload counted. Returns the new config when it was applied.
/// Changes to `[broker]`, `[admin]`, `[store]` or `state_dir` are logged and left for a
/// restart.
fn apply_reload(
    path: &std::path::Path,
    running_config: &Config,
    daemon: &Daemon,
    running: &[RunningAccount],
) -> Option<Config> {
    let routes = &daemon.routes;
    let health = &daemon.health;
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
    // Compared by value: a `Debug` string shows secrets as `<redacted>`, so a new broker
    // password would look like no change.
    if config.broker != running_config.broker
        || config.admin.listen != running_config.admin.listen
        || config.state_dir != running_config.state_dir
        || config.store != running_config.store
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
    health.set_console(crate::console::view::ConsoleView::of(
        &config,
        &routes_of(&config),
    ));
    daemon.reload_health_and_moderation(&config);
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
    daemon: &Daemon,
    old: &Config,
    new: &Config,
    running: &mut Vec<RunningAccount>,
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
        daemon.health.remove_account(&account.id);
        account.remove(&daemon.topics).await;
    }
    for account in new.accounts.values() {
        if running.iter().any(|r| r.id == account.id) {
            continue;
        }
        match accounts::start(account, daemon.account_deps()).await {
            Ok(started) => {
                info!(message = "Account started by a reload.", account = %started.id);
                daemon.health.add_account(
                    started.id.clone(),
                    started.platform,
                    started.state.clone(),
                );
                running.push(started);
            }
            Err(error) => {
                error!(message = "Account added by a reload could not start.", account = %account.id, %error)
            }
        }
    }
}

/// Resolves when the first connector ends before shutdown, with its account and reason.
async fn first_connector_exit(running: &[RunningAccount]) -> ConnectorExit {
    let waits = running.iter().map(|account| Box::pin(account.exited()));
    if running.is_empty() {
        std::future::pending::<()>().await;
    }
    let (outcome, _, _) = futures_util::future::select_all(waits).await;
    outcome
}
