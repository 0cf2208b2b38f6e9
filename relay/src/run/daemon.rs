//! What the phases of one run share: the broker endpoint and topics, the store, the tokens
//! that stop intake and then everything, the health the admin endpoint reports, the routes a
//! reload swaps, and the admin endpoint itself.

use std::sync::Arc;

use qunbridge_connectors::api::FeedLog;
use qunbridge_connectors::reverse_ws::SharedListeners;
use qunbridge_connectors::BotRegistry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::activity::Activity;
use crate::admin::{self, Health};
use crate::broker::{Endpoint, Hops, Topics};
use crate::config::{Config, Notices};
use crate::core::route::NoticePolicy;
use crate::core::{Routes, SharedRoutes};
use crate::stats::report::StatsService;
use crate::stats::{Aliases, Digester, StatsCounter};

use super::core::CoreDeps;
use super::error::RunError;
use super::placement::Placement;
use super::state::Stores;

/// What the phases of one run share, built once from the config read at start-up.
pub struct Daemon {
    /// What this process runs.
    pub placement: Placement,
    /// The broker every connection goes to (a reload does not change it).
    pub endpoint: Endpoint,
    /// Topic names under the configured prefix.
    pub topics: Topics,
    /// Messages in flight, which the drain waits for.
    pub activity: Arc<Activity>,
    /// Dedup keys, send log, message map, echo fingerprints.
    pub store: Arc<dyn crate::store::RelayStore>,
    /// The `api` feeds' durable log, handed to every account (and to those a reload adds).
    pub feed_log: Arc<dyn FeedLog>,
    /// Every account's platform user id, shared by all connectors.
    pub bots: BotRegistry,
    /// Reverse WebSocket listeners that several accounts share.
    pub listeners: SharedListeners,
    /// Cancelled first on shutdown: connectors stop taking input.
    pub intake: CancellationToken,
    /// Cancelled once drained: everything stops.
    pub stop: CancellationToken,
    /// What `/healthz`, `/readyz`, `/metrics` and `/api/v1/status` report.
    pub health: Arc<Health>,
    /// Where messages go; a reload swaps them.
    pub routes: SharedRoutes,
    /// Flow control over the broker: both pools when this process runs ingress, core and
    /// egress together, none in a scaled-out deployment.
    pub flow: Hops,
    /// What connectors use for pictures: the media service, the link signer and the
    /// address guard as `[media]` was read at start-up (a reload does not change them), in
    /// the global mode (each account gets its own).
    pub media: qunbridge_connectors::media::MediaContext,
    /// Group health: the counter the core and egress feed, when `[stats]` is enabled.
    pub stats: Option<Arc<StatsCounter>>,
    /// Group health: reports and gauges over the store.
    pub stats_service: Option<Arc<StatsService>>,
    /// Moderation: what the cores judge with; a reload puts new settings in force.
    pub moderator: Arc<crate::core::Moderator>,
    /// Messages held for review.
    pub held: Arc<crate::core::hold::HeldMessages>,
    /// The suspect delay (newcomers' messages with links wait), shared by the cores.
    pub suspects: Arc<crate::core::suspect::Suspects>,
    /// Tells the admins' group (`moderation.notify`) of moderation decisions.
    pub notifier: Arc<crate::core::Notifier>,
}

impl Daemon {
    /// The shared state of a run over `config` and the opened store.
    pub fn new(
        config: &Config,
        placement: Placement,
        stores: Stores,
        media: qunbridge_connectors::media::MediaContext,
        digester: Option<Digester>,
    ) -> Daemon {
        let activity = Activity::new();
        let placement_scaled_out = placement.scaled_out();
        let health = Arc::new(Health::default());
        health.set_links(config.links.iter().map(admin::LinkSummary::from).collect());
        health.set_console(crate::console::view::ConsoleView::of(
            config,
            &routes_of(config),
        ));
        health.set_queue_depths(activity.queue_depths().clone());
        health.set_media(admin::MediaHealth {
            mode: config.media.mode,
            cache: media
                .service
                .as_ref()
                .map(|service| service.cache().clone()),
            cache_max_bytes: config.media.cache_max_bytes,
            server_listen: config
                .media
                .server
                .as_ref()
                .map(|server| server.listen.to_string()),
            server_running: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        });
        let (stats, stats_service) = open_stats(config, &stores.relay, digester);
        if let Some(service) = &stats_service {
            health.set_stats(service.clone());
        }
        let routes = SharedRoutes::new(routes_of(config));
        let held = crate::core::hold::HeldMessages::new(
            stores.relay.clone(),
            routes.clone(),
            &config.moderation,
        );
        health.set_held(held.clone());
        let notifier = crate::core::Notifier::new(&config.moderation);
        let moderator = Arc::new(
            crate::core::Moderator::sharing(&config.moderation, stores.moderation.clone())
                .with_notifier(notifier.clone()),
        );
        let newcomers = stats.as_ref().map(|counter| {
            crate::core::newcomers::Newcomers::new(stores.relay.clone(), counter.clone())
        });
        let suspects =
            crate::core::suspect::Suspects::new(newcomers, moderator.clone(), held.clone());
        Daemon {
            held,
            suspects,
            stats,
            stats_service,
            moderator,
            notifier,
            placement,
            endpoint: Endpoint::for_mode(&config.broker.mode),
            topics: Topics::new(&config.broker.topic_prefix),
            activity,
            store: stores.relay,
            feed_log: stores.feed_log,
            bots: BotRegistry::default(),
            listeners: SharedListeners::default(),
            intake: CancellationToken::new(),
            stop: CancellationToken::new(),
            health,
            routes,
            media,
            flow: if placement_scaled_out {
                Hops::default()
            } else {
                // Sized for the embedded broker's log; an external broker is configured not
                // to drop (docs/operations.md), and the pools bound what it holds for us.
                Hops::new(
                    crate::broker::embedded::INBOUND_LOG_BYTES,
                    crate::broker::embedded::LOG_BYTES,
                )
            },
        }
    }

    /// Binds the admin endpoint and serves it until [`Daemon::stop`] is cancelled.
    ///
    /// # Errors
    /// [`RunError::Bind`] when `admin.listen` cannot be bound.
    pub async fn serve_admin(&self, config: &Config) -> Result<JoinHandle<()>, RunError> {
        let listener = TcpListener::bind(config.admin.listen)
            .await
            .map_err(|source| RunError::Bind {
                what: "admin",
                addr: config.admin.listen.to_string(),
                source,
            })?;
        info!(message = "Admin endpoint listening.", listen = %config.admin.listen);
        if let Some(service) = &self.stats_service {
            tokio::spawn(service.clone().run(self.stop.clone()));
        }
        Ok(tokio::spawn(crate::console::serve(
            listener,
            self.health.clone(),
            self.stop.clone(),
        )))
    }

    /// What a relay core of this process needs, for its own core and for takeovers.
    pub fn core_deps(&self) -> CoreDeps {
        CoreDeps {
            endpoint: self.endpoint.clone(),
            topics: self.topics.clone(),
            routes: self.routes.clone(),
            store: self.store.clone(),
            activity: self.activity.clone(),
            flow: self.flow.clone(),
            stats: self.stats.clone(),
            moderator: self.moderator.clone(),
            held: self.held.clone(),
            suspects: self.suspects.clone(),
            notifier: self.notifier.clone(),
        }
    }

    /// Puts a reloaded config's moderation in force (a flood count whose settings did not
    /// change goes on), and its aliases, thresholds and formats for group health (history is
    /// keyed by account and group, so renaming an alias loses nothing).
    pub fn reload_health_and_moderation(&self, config: &Config) {
        self.moderator.reload(&config.moderation);
        self.held.reload(&config.moderation);
        self.notifier.reload(&config.moderation);
        if let (Some(counter), Some(service)) = (&self.stats, &self.stats_service) {
            counter.set_aliases(aliases_of(config));
            service.set_config(config.stats.clone());
        }
    }

    /// What one account needs, for the accounts started at start-up and by a reload.
    pub fn account_deps(&self) -> crate::accounts::AccountDeps<'_> {
        crate::accounts::AccountDeps {
            endpoint: &self.endpoint,
            topics: &self.topics,
            activity: self.activity.clone(),
            store: self.store.clone(),
            feed_log: Some(self.feed_log.clone()),
            bots: self.bots.clone(),
            listeners: self.listeners.clone(),
            intake: self.intake.clone(),
            stop: self.stop.clone(),
            flow: self.flow.clone(),
            media: self.media.clone(),
            stats: self.stats.clone(),
        }
    }
}

/// The aliases of a config's linked groups.
fn aliases_of(config: &Config) -> Aliases {
    Aliases::new(&config.stats, &config.links, |account| {
        config.accounts.get(account).map(|a| a.platform)
    })
}

/// Group health's counter and service, when `[stats]` is enabled and its digest key could
/// be had ([`open_digester`]).
fn open_stats(
    config: &Config,
    store: &Arc<dyn crate::store::RelayStore>,
    digester: Option<Digester>,
) -> (Option<Arc<StatsCounter>>, Option<Arc<StatsService>>) {
    let Some(digester) = digester.filter(|_| config.stats.enabled) else {
        return (None, None);
    };
    // Every account's series exists from the start, so an alert on its increase sees the
    // first removal too.
    for account in config.accounts.keys() {
        ::metrics::counter!(crate::metrics::GROUP_BOT_REMOVED, "account" => account.clone())
            .increment(0);
    }
    let counter = Arc::new(StatsCounter::new(
        &config.stats,
        aliases_of(config),
        digester,
    ));
    let service = Arc::new(StatsService::new(
        store.clone(),
        counter.clone(),
        config.stats.clone(),
    ));
    (Some(counter), Some(service))
}

/// The routing table of a validated config. The core builds routes from plain data (links,
/// account platforms, filter rules) so it never depends on the config; this is where the two
/// meet.
pub fn routes_of(config: &Config) -> Routes {
    Routes::new(
        &config.links,
        |account| config.account(account).map(|a| a.platform),
        |platform, account, link_rules| config.filters.effective(platform, account, link_rules),
        |account| config.media_mode(account),
        |link| {
            let notices = config.stats.notices.get(link).copied().unwrap_or_default();
            (notices != Notices::Off).then(|| NoticePolicy {
                joins: true,
                leaves: notices == Notices::All,
                join_format: config.stats.join_format.as_str().into(),
                leave_format: config.stats.leave_format.as_str().into(),
            })
        },
    )
}

/// The group-health digest key, when `[stats]` is enabled: kept by a shared store, else in
/// `state_dir`. `None`, with an error logged, when it cannot be had: counting is then off
/// and the rest of the daemon runs.
pub async fn open_digester(
    config: &Config,
    store: &Arc<dyn crate::store::RelayStore>,
) -> Option<Digester> {
    if !config.stats.enabled {
        return None;
    }
    match Digester::open_for(&config.state_dir, store.as_ref()).await {
        Ok(digester) => Some(digester),
        Err(error) => {
            tracing::error!(message = "Group health is off: its digest key cannot be read or made.", %error);
            None
        }
    }
}
