//! The admin HTTP endpoint (loopback by default): `/healthz` (the process answers),
//! `/readyz` (broker connected and the relay core running; accounts that are down are listed,
//! not hidden), `/metrics` (Prometheus text) and `/api/v1/status` (the JSON behind
//! `qunbridge status`: accounts, links, queue depths per destination, counts, broker state,
//! the media cache and server, version and uptime, messages relayed and dropped over the last
//! hour), `/api/v1/stats` (group health) and `/api/v1/held` (messages held for review, with
//! release and drop). [`crate::console::serve`] serves these routes with the console's pages,
//! behind its guard.
//!
//! The status counts are read back from the Prometheus recorder's own rendering, so they are
//! exactly what `/metrics` shows. Group ids appear in the status JSON (the operator's own
//! view), never in metric labels.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Instant;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use qunbridge_connectors::media::cache::MediaCache;
use qunbridge_connectors::media::MediaMode;
use qunbridge_connectors::{AccountState, ConnectionState, Platform};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::activity::QueueDepths;
use crate::console::view::ConsoleView;
use crate::core::hold::{HeldMessages, HoldError, Released};
use crate::metrics::{
    BROKER_CONNECTED, MEDIA_FETCH_SECONDS, MESSAGES_COALESCED, MESSAGES_DROPPED, MESSAGES_RECEIVED,
    MESSAGES_RELAYED, RATE_LIMITED, RECONNECTS, RELAY_LATENCY, STORE_COMMIT_SECONDS,
};
use crate::policy::Link;
use crate::stats::report::{Query, StatsService};

/// What the admin endpoint reports on.
pub struct Health {
    /// When the process started serving (for the uptime).
    started: Instant,
    /// True once start-up finished and until shutdown begins.
    running: AtomicBool,
    /// The core's broker connection state, once it exists.
    broker: Mutex<Option<watch::Receiver<bool>>>,
    /// Accounts and their connector states.
    accounts: Mutex<Vec<(String, Platform, watch::Receiver<AccountState>)>>,
    /// The configured links, as shown in the status.
    links: Mutex<Vec<LinkSummary>>,
    /// Messages waiting per destination, once egress exists.
    queue_depths: Mutex<Option<Arc<QueueDepths>>>,
    /// Pictures: the mode, the cache and the media server, once the media service is open.
    media: Mutex<Option<Arc<MediaHealth>>>,
    /// Group health, when `[stats]` is enabled.
    stats: Mutex<Option<Arc<StatsService>>>,
    /// Messages held for review.
    held: Mutex<Option<Arc<HeldMessages>>>,
    /// What the console shows of the config in force (and who may open it).
    console: Mutex<Option<Arc<ConsoleView>>>,
    /// Cancelled when the admin endpoint stops (ends the console's event streams).
    stop: OnceLock<CancellationToken>,
}

/// What the status shows of pictures: the global mode, the on-disk cache and the built-in
/// media server.
pub struct MediaHealth {
    /// The global `[media] mode` (accounts may set their own).
    pub mode: MediaMode,
    /// The on-disk cache under `state_dir/media/`, when this process opened one.
    pub cache: Option<MediaCache>,
    /// `[media] cache_max_bytes`.
    pub cache_max_bytes: u64,
    /// `[media] serve_listen`, when a media server is configured.
    pub server_listen: Option<String>,
    /// True while the media server serves (set by the task that runs it).
    pub server_running: Arc<AtomicBool>,
}

impl MediaHealth {
    /// The `media` block of the status document: the mode, the cache's bytes and blobs
    /// against its cap, its evictions since start (in total and by reason), and whether the
    /// media server runs.
    pub async fn status(&self) -> Value {
        let stats = match &self.cache {
            Some(cache) => Some(cache.stats().await),
            None => None,
        };
        let cache = stats.map(|stats| {
            json!({
                "bytes": stats.bytes,
                "blobs": stats.blobs,
                "max_bytes": self.cache_max_bytes,
                "evictions": stats.evicted_for_size + stats.evicted_for_ttl + stats.evicted_corrupt,
                "evictions_by_reason": {
                    "size": stats.evicted_for_size,
                    "ttl": stats.evicted_for_ttl,
                    "corrupt": stats.evicted_corrupt,
                },
            })
        });
        json!({
            "mode": self.mode.as_str(),
            "cache": cache,
            "server": {
                "configured": self.server_listen.is_some(),
                "running": self.server_running.load(Ordering::Acquire),
                "listen": self.server_listen,
            },
        })
    }
}

impl Default for Health {
    fn default() -> Self {
        Health {
            started: Instant::now(),
            running: AtomicBool::new(false),
            broker: Mutex::new(None),
            accounts: Mutex::new(Vec::new()),
            links: Mutex::new(Vec::new()),
            queue_depths: Mutex::new(None),
            media: Mutex::new(None),
            stats: Mutex::new(None),
            held: Mutex::new(None),
            console: Mutex::new(None),
            stop: OnceLock::new(),
        }
    }
}

/// A link as the status view shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LinkSummary {
    /// The link's name.
    pub name: String,
    /// Members that send and receive (`account:group`).
    pub groups: Vec<String>,
    /// Members that only receive.
    pub to: Vec<String>,
    /// The sender template.
    pub format: String,
    /// How many filter rules the link itself has.
    pub filters: usize,
}

impl From<&Link> for LinkSummary {
    fn from(link: &Link) -> Self {
        LinkSummary {
            name: link.name.clone(),
            groups: link.groups.iter().map(ToString::to_string).collect(),
            to: link.to.iter().map(ToString::to_string).collect(),
            format: link.format.clone(),
            filters: link.filters.len(),
        }
    }
}

impl Health {
    /// Records the core's broker connection.
    pub fn set_broker(&self, connected: watch::Receiver<bool>) {
        *self.broker.lock().unwrap_or_else(PoisonError::into_inner) = Some(connected);
    }

    /// Records an account.
    pub fn add_account(
        &self,
        id: String,
        platform: Platform,
        state: watch::Receiver<AccountState>,
    ) {
        self.accounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((id, platform, state));
    }

    /// Forgets an account (a reload removed it).
    pub fn remove_account(&self, id: &str) {
        self.accounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(account, _, _)| account != id);
    }

    /// Records the configured links.
    pub fn set_links(&self, links: Vec<LinkSummary>) {
        *self.links.lock().unwrap_or_else(PoisonError::into_inner) = links;
    }

    /// Records where egress keeps its queue depths.
    pub fn set_queue_depths(&self, depths: Arc<QueueDepths>) {
        *self
            .queue_depths
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(depths);
    }

    /// Records the group-health service `/api/v1/stats` reports from.
    pub fn set_stats(&self, stats: Arc<StatsService>) {
        *self.stats.lock().unwrap_or_else(PoisonError::into_inner) = Some(stats);
    }

    /// Records where the messages held for review are.
    pub fn set_held(&self, held: Arc<HeldMessages>) {
        *self.held.lock().unwrap_or_else(PoisonError::into_inner) = Some(held);
    }

    /// Records what the console shows of the config in force (start-up and every reload).
    pub fn set_console(&self, view: ConsoleView) {
        *self.console.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(view));
    }

    /// What the console shows of the config in force, once recorded.
    pub fn console_view(&self) -> Option<Arc<ConsoleView>> {
        self.console
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// True when the console asks for the token, so its pages offer to sign out.
    pub fn console_signs_in(&self) -> bool {
        self.console_view()
            .is_some_and(|view| view.access.required())
    }

    /// Cancelled when the admin endpoint stops (a fresh token before it serves).
    pub fn stop_token(&self) -> CancellationToken {
        self.stop.get_or_init(CancellationToken::new).clone()
    }

    /// The state watches of every account.
    pub fn account_watches(&self) -> Vec<watch::Receiver<AccountState>> {
        self.accounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(_, _, state)| state.clone())
            .collect()
    }

    /// The core's broker connection watch, once it exists.
    pub fn broker_watch(&self) -> Option<watch::Receiver<bool>> {
        self.broker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The messages held for review.
    pub(crate) fn held(&self) -> Option<Arc<HeldMessages>> {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Group health, when enabled.
    pub(crate) fn stats(&self) -> Option<Arc<StatsService>> {
        self.stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records what the status shows of pictures.
    pub fn set_media(&self, media: MediaHealth) {
        *self.media.lock().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(media));
    }

    /// The flag the media server's task keeps true while it serves, once media is recorded.
    pub fn media_server_running(&self) -> Option<Arc<AtomicBool>> {
        self.media
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|media| media.server_running.clone())
    }

    /// The `media` block of the status document (`null` before the media service is open).
    pub async fn media_status(&self) -> Value {
        let media = self
            .media
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match media {
            Some(media) => media.status().await,
            None => Value::Null,
        }
    }

    /// Marks the relay as running (or stopping).
    pub fn set_running(&self, running: bool) {
        self.running.store(running, Ordering::Release);
    }

    /// True when the broker is connected.
    fn broker_connected(&self) -> bool {
        self.broker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|rx| *rx.borrow())
    }

    /// Every account with its platform and current state.
    fn account_states(&self) -> Vec<(String, Platform, AccountState)> {
        self.accounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(id, platform, state)| (id.clone(), *platform, state.borrow().clone()))
            .collect()
    }

    /// The `/api/v1/status` document; `metrics` is the recorder's rendering (empty when the
    /// recorder is unavailable).
    pub fn status(&self, metrics: &str) -> Value {
        let broker = self.broker_connected();
        let running = self.running.load(Ordering::Acquire);
        let queues = self
            .queue_depths
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .map(|depths| depths.snapshot())
            .unwrap_or_default();
        let accounts: Vec<Value> = self
            .account_states()
            .into_iter()
            .map(|(id, platform, state)| {
                let queued: u64 = queues
                    .iter()
                    .filter(|q| q.account == id)
                    .map(|q| q.depth)
                    .sum();
                json!({
                    "account": id,
                    "platform": platform,
                    "state": state.state,
                    "since_ms": state.since_ms,
                    "reason": state.reason,
                    "queued": queued,
                })
            })
            .collect();
        let links = self
            .links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let view = self.console_view();
        let queues: Vec<Value> = queues
            .iter()
            .map(|queue| {
                json!({
                    "account": queue.account,
                    "group": queue.group,
                    "depth": queue.depth,
                    "alias": view.as_ref().map(|view| view.alias_of(&queue.account, &queue.group)),
                })
            })
            .collect();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_secs": self.started.elapsed().as_secs(),
            "ready": broker && running,
            "core_running": running,
            "broker": { "connected": broker },
            "accounts": accounts,
            "links": links,
            "queues": queues,
            "counts": counts(&parse_samples(metrics)),
            "last_hour": last_hour(),
        })
    }
}

/// One sample line of the Prometheus text format.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    /// Metric name.
    name: String,
    /// Label pairs, in order.
    labels: Vec<(String, String)>,
    /// The value.
    value: f64,
}

impl Sample {
    /// The value of one label, or `""`.
    fn label(&self, name: &str) -> &str {
        self.labels
            .iter()
            .find(|(key, _)| key == name)
            .map_or("", |(_, value)| value.as_str())
    }
}

/// The samples of a Prometheus text rendering; comments and lines it cannot read are skipped.
fn parse_samples(text: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(parse_sample)
        .collect()
}

/// One `name{label="value",…} value` line.
fn parse_sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    let (series, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match series.split_once('{') {
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)?),
        None => (series, Vec::new()),
    };
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// `key="value",…` with the format's escapes (`\\`, `\"`, `\n`).
fn parse_labels(text: &str) -> Option<Vec<(String, String)>> {
    let mut labels = Vec::new();
    let mut rest = text;
    while !rest.is_empty() {
        let (key, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (index, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                '"' => break index,
                other => value.push(other),
            }
        };
        labels.push((key.trim().to_owned(), value));
        rest = after[end + 1..].trim_start_matches(',');
    }
    Some(labels)
}

/// Counts by outcome (received, relayed, dropped by reason, …) from the recorder's samples.
fn counts(samples: &[Sample]) -> Value {
    let sum = |name: &str, key: &dyn Fn(&Sample) -> String| {
        let mut by: BTreeMap<String, u64> = BTreeMap::new();
        let mut total = 0u64;
        for sample in samples.iter().filter(|s| s.name == name) {
            let value = sample.value.max(0.0) as u64;
            *by.entry(key(sample)).or_default() += value;
            total += value;
        }
        (total, by)
    };
    let (received, received_by) = sum(MESSAGES_RECEIVED, &|s| s.label("account").to_owned());
    let (relayed, relayed_by) = sum(MESSAGES_RELAYED, &|s| {
        format!("{}->{}", s.label("from"), s.label("to"))
    });
    let (dropped, dropped_by) = sum(MESSAGES_DROPPED, &|s| s.label("reason").to_owned());
    let (_, coalesced_by) = sum(MESSAGES_COALESCED, &|s| s.label("account").to_owned());
    let (_, rate_limited_by) = sum(RATE_LIMITED, &|s| s.label("account").to_owned());
    let (_, reconnects_by) = sum(RECONNECTS, &|s| s.label("account").to_owned());
    json!({
        "received": { "total": received, "by_account": received_by },
        "relayed": { "total": relayed, "by_route": relayed_by },
        "dropped": { "total": dropped, "by_reason": dropped_by },
        "coalesced": { "by_account": coalesced_by },
        "rate_limited": { "by_account": rate_limited_by },
        "reconnects": { "by_account": reconnects_by },
    })
}

/// Messages relayed (by `from->to` platform) and dropped (by reason) over the last hour.
fn last_hour() -> Value {
    let relayed: BTreeMap<String, u64> = qunbridge_connectors::recent::RELAYED
        .last_hour()
        .into_iter()
        .map(|((from, to), count)| (format!("{from}->{to}"), count))
        .collect();
    let dropped = qunbridge_connectors::recent::DROPPED.last_hour();
    json!({
        "relayed": { "total": relayed.values().sum::<u64>(), "by_route": relayed },
        "dropped": { "total": dropped.values().sum::<u64>(), "by_reason": dropped },
    })
}

/// Buckets of `qunbridge_relay_latency_seconds` (a histogram, not a summary, so rates and
/// quantiles can be aggregated): from a fast local hop to a message held back by pacing.
const LATENCY_BUCKETS: &[f64] = &[
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0,
];

/// Buckets of `qunbridge_store_commit_seconds`: an fsync'd commit takes from a few hundred
/// microseconds (fast disk, small batch) to tens of milliseconds (busy or slow disk).
const COMMIT_BUCKETS: &[f64] = &[
    0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];
/// Buckets of the media fetch time: from a local file (tens of milliseconds) to the default
/// `fetch_timeout` (20 s) and beyond.
const FETCH_BUCKETS: &[f64] = &[0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0];
/// How often the exporter folds recorded samples into its histograms and summaries: without
/// it, every sample of every histogram stays in memory until the next scrape, and a daemon
/// nobody scrapes grows without bound.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The process-wide Prometheus recorder (the `metrics` facade has one global recorder).
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            match PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Full(RELAY_LATENCY.to_owned()), LATENCY_BUCKETS)
                .and_then(|builder| {
                    builder.set_buckets_for_metric(
                        Matcher::Full(STORE_COMMIT_SECONDS.to_owned()),
                        COMMIT_BUCKETS,
                    )
                })
                .and_then(|builder| {
                    builder.set_buckets_for_metric(
                        Matcher::Full(MEDIA_FETCH_SECONDS.to_owned()),
                        FETCH_BUCKETS,
                    )
                })
                .and_then(PrometheusBuilder::install_recorder)
            {
                Ok(handle) => {
                    crate::metrics::describe_all();
                    Some(handle)
                }
                Err(error) => {
                    warn!(message = "Metrics recorder not installed.", %error);
                    None
                }
            }
        })
        .as_ref()
}

/// The admin endpoint's own routes (the console adds its pages and the guard:
/// [`crate::console::serve`]).
pub fn routes() -> Router<Arc<Health>> {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/status", get(status))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/held", get(held_list))
        .route("/api/v1/held/{id}/release", post(held_release))
        .route("/api/v1/held/{id}/drop", post(held_drop))
}

/// Serves `app` (the admin endpoint's router with its state) on a bound listener until
/// `stop`, running the metrics exporter's upkeep meanwhile.
pub async fn serve(listener: TcpListener, app: Router, stop: CancellationToken) {
    let upkeep = tokio::spawn(run_upkeep(stop.clone()));
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
    {
        warn!(message = "Admin endpoint failed.", %error);
    }
    upkeep.abort();
}

/// Runs the exporter's upkeep every [`UPKEEP_EVERY`] until `stop` (the recorder installed by
/// [`prometheus`] leaves it to its owner).
async fn run_upkeep(stop: CancellationToken) {
    let Some(handle) = prometheus() else {
        return;
    };
    let mut every = tokio::time::interval(UPKEEP_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => handle.run_upkeep(),
        }
    }
}

/// `/readyz`.
async fn readyz(State(health): State<Arc<Health>>) -> Response {
    let broker = health.broker_connected();
    let running = health.running.load(Ordering::Acquire);
    metrics::gauge!(BROKER_CONNECTED).set(if broker { 1.0 } else { 0.0 });
    let accounts: Vec<_> = health
        .accounts
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|(id, platform, state)| {
            let state = state.borrow().clone();
            json!({ "account": id, "platform": platform, "state": state.state, "since_ms": state.since_ms })
        })
        .collect();
    let degraded = accounts
        .iter()
        .filter(|a| a["state"] != json!(ConnectionState::Up))
        .count();
    let ready = broker && running;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "ready": ready,
        "broker_connected": broker,
        "core_running": running,
        "accounts_degraded": degraded,
        "accounts": accounts,
    });
    (status, Json(body)).into_response()
}

/// `/api/v1/status`.
async fn status(State(health): State<Arc<Health>>) -> Response {
    Json(status_document(&health).await).into_response()
}

/// The document `/api/v1/status` answers (and the console's overview shows).
pub async fn status_document(health: &Health) -> Value {
    let rendered = prometheus()
        .map(PrometheusHandle::render)
        .unwrap_or_default();
    let mut document = health.status(&rendered);
    document["media"] = health.media_status().await;
    if let Some(service) = health.stats() {
        document["groups"] = service.status_lines().await;
    }
    document
}

/// `/api/v1/stats`: the group-health report the query asks for (`group`, `link`, `since`,
/// `until`, `by`); 400 naming a bad parameter, 404 when group health is off, 503 when the
/// store cannot be read.
async fn stats(State(health): State<Arc<Health>>, RawQuery(query): RawQuery) -> Response {
    let query = match Query::parse(query.as_deref().unwrap_or_default()) {
        Ok(query) => query,
        Err(problem) => {
            return (StatusCode::BAD_REQUEST, Json(json!({ "error": problem }))).into_response()
        }
    };
    let Some(service) = health.stats() else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": "group health is off (`[stats] enabled = false`)" })),
        )
            .into_response();
    };
    match service.report(&query).await {
        Ok(report) => Json(report).into_response(),
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": error.to_string() })),
        )
            .into_response(),
    }
}

/// `GET /api/v1/held`: the messages held for review, oldest first: id, link, destination,
/// rule, when held, sender name and the first words (never a user id). 503 when the store
/// cannot be read.
async fn held_list(State(health): State<Arc<Health>>) -> Response {
    let Some(held) = health.held() else {
        return held_unavailable();
    };
    match held.list().await {
        Ok(entries) => {
            let view = health.console_view();
            let entries: Vec<Value> = entries
                .iter()
                .map(|entry| held_summary(entry, view.as_deref()))
                .collect();
            Json(json!({ "held": entries })).into_response()
        }
        Err(error) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": error.to_string() })),
        )
            .into_response(),
    }
}

/// What the list shows of one held entry (with the destination's alias when the console's
/// view is known).
pub fn held_summary(entry: &crate::store::held::HeldEntry, view: Option<&ConsoleView>) -> Value {
    let text = qunbridge_connectors::model::segments_to_text(&entry.envelope.segments);
    json!({
        "id": entry.id,
        "link": entry.link,
        "rule": entry.rule,
        "held_ms": entry.held_ms,
        "from": entry.envelope.origin.platform.as_str(),
        "to": {
            "account": entry.account,
            "group": entry.group,
            "alias": view.map(|view| view.alias_of(&entry.account, &entry.group)),
        },
        "sender": entry.envelope.sender.name,
        "excerpt": crate::moderation::excerpt::excerpt(&text, HELD_EXCERPT_CHARS),
    })
}

/// Characters of a held message's text the list shows.
const HELD_EXCERPT_CHARS: usize = 40;

/// `POST /api/v1/held/<id>/release`: publishes the held message for its destination; 404
/// for an id not held, 409 when no link routes it there any more, 503 when this process
/// cannot publish or the store fails.
async fn held_release(State(health): State<Arc<Health>>, Path(id): Path<String>) -> Response {
    let Some(held) = health.held() else {
        return held_unavailable();
    };
    match held.release(&id).await {
        Ok(Released::Sent) => Json(json!({ "id": id, "outcome": "released" })).into_response(),
        Ok(Released::Filtered) => Json(json!({
            "id": id,
            "outcome": "dropped",
            "reason": "a filter of the destination drops it under the config in force"
        }))
        .into_response(),
        Ok(Released::HeldBy(list)) => Json(json!({
            "id": id,
            "outcome": "held",
            "reason": format!("the destination's word list {list:?} holds it under the config in force")
        }))
        .into_response(),
        Err(error) => hold_error(&error),
    }
}

/// `POST /api/v1/held/<id>/drop`: the held message is never relayed; 404 for an id not held.
async fn held_drop(State(health): State<Arc<Health>>, Path(id): Path<String>) -> Response {
    let Some(held) = health.held() else {
        return held_unavailable();
    };
    match held.drop_entry(&id).await {
        Ok(()) => Json(json!({ "id": id, "outcome": "dropped" })).into_response(),
        Err(error) => hold_error(&error),
    }
}

/// The answer to a failed release or drop.
fn hold_error(error: &HoldError) -> Response {
    let status = match error {
        HoldError::Unknown(_) => StatusCode::NOT_FOUND,
        HoldError::Unrouted(_) => StatusCode::CONFLICT,
        HoldError::NoCore | HoldError::Publish { .. } | HoldError::Store(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
    };
    (status, Json(json!({ "error": error.to_string() }))).into_response()
}

/// The answer while the daemon has not set up holding yet (start-up).
fn held_unavailable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({ "error": "held messages are not available yet" })),
    )
        .into_response()
}

/// `/metrics`. The broker gauge is refreshed on every scrape, so it is current even when
/// nobody polls `/readyz`.
async fn metrics(State(health): State<Arc<Health>>) -> Response {
    if let Some(stats) = health.stats() {
        stats.refresh_gauges().await;
    }
    metrics::gauge!(BROKER_CONNECTED).set(if health.broker_connected() { 1.0 } else { 0.0 });
    match prometheus() {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder unavailable\n",
        )
            .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_samples_with_escaped_labels_and_skips_comments() {
        let text = "# HELP x y\n# TYPE qunbridge_messages_dropped_total counter\n\
qunbridge_messages_dropped_total{reason=\"duplicate\"} 3\n\
qunbridge_odd{a=\"q\\\"u,o\\\\te\",b=\"2\"} 1.5\n\
qunbridge_broker_connected 1\n\
garbage line\n";
        let samples = parse_samples(text);
        assert_eq!(samples.len(), 3, "{samples:?}");
        assert_eq!(samples[0].label("reason"), "duplicate");
        assert_eq!(samples[0].value, 3.0);
        assert_eq!(samples[1].label("a"), "q\"u,o\\te");
        assert_eq!(samples[1].label("b"), "2");
        assert_eq!(samples[2].name, "qunbridge_broker_connected");
        assert!(samples[2].labels.is_empty());
    }

    #[test]
    fn counts_group_by_outcome_and_reason() {
        let text = "qunbridge_messages_received_total{account=\"hub\",platform=\"api\"} 4\n\
qunbridge_messages_received_total{account=\"qq\",platform=\"qq\"} 1\n\
qunbridge_messages_relayed_total{from=\"api\",to=\"qq\"} 2\n\
qunbridge_messages_dropped_total{reason=\"duplicate\"} 1\n\
qunbridge_messages_dropped_total{reason=\"filtered\"} 2\n";
        let counts = counts(&parse_samples(text));
        assert_eq!(counts["received"]["total"], 5);
        assert_eq!(counts["received"]["by_account"]["hub"], 4);
        assert_eq!(counts["relayed"]["by_route"]["api->qq"], 2);
        assert_eq!(counts["dropped"]["total"], 3);
        assert_eq!(counts["dropped"]["by_reason"]["filtered"], 2);
    }

    #[test]
    fn status_lists_links_queues_and_broker_state() {
        let health = Health::default();
        let depths = Arc::new(QueueDepths::default());
        health.set_queue_depths(depths);
        health.set_links(vec![LinkSummary {
            name: "demo".to_owned(),
            groups: vec!["hub:a".to_owned(), "hub:b".to_owned()],
            to: Vec::new(),
            format: "{name}: ".to_owned(),
            filters: 0,
        }]);
        let status = health.status("");
        assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(status["broker"]["connected"], false);
        assert_eq!(status["ready"], false);
        assert_eq!(status["links"][0]["groups"][1], "hub:b");
        assert_eq!(status["queues"], json!([]));
        assert_eq!(status["counts"]["received"]["total"], 0);
    }

    #[tokio::test]
    async fn the_media_block_shows_the_cache_against_its_cap_and_the_server() {
        let health = Health::default();
        assert_eq!(health.media_status().await, Value::Null);
        let dir = tempfile::tempdir().expect("tempdir");
        let cap = 1 << 20;
        let cache = MediaCache::open(
            dir.path(),
            qunbridge_connectors::media::cache::CacheLimits {
                max_bytes: cap,
                ttl: std::time::Duration::from_secs(3600),
            },
        )
        .await
        .expect("cache");
        // Three blobs of 400 KiB: the third pushes the first out.
        for fill in 1..=3u8 {
            cache.put_bytes(&vec![fill; 400 << 10]).await.expect("put");
        }
        health.set_media(MediaHealth {
            mode: MediaMode::Native,
            cache: Some(cache),
            cache_max_bytes: cap,
            server_listen: Some("127.0.0.1:9465".to_owned()),
            server_running: Arc::new(AtomicBool::new(false)),
        });
        let media = health.media_status().await;
        assert_eq!(media["mode"], "native");
        assert_eq!(media["cache"]["max_bytes"], cap);
        assert_eq!(media["cache"]["blobs"], 2);
        assert_eq!(media["cache"]["bytes"], 2 * (400 << 10));
        assert_eq!(media["cache"]["evictions"], 1);
        assert_eq!(media["cache"]["evictions_by_reason"]["size"], 1);
        assert_eq!(media["server"]["configured"], true);
        assert_eq!(media["server"]["running"], false);
        health
            .media_server_running()
            .expect("recorded")
            .store(true, Ordering::Release);
        assert_eq!(health.media_status().await["server"]["running"], true);
    }
}
