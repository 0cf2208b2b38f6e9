//! The measured scenarios, each on a daemon of its own, for one broker: the raw baseline,
//! two `api` accounts (saturation, latency, memory), two OneBot v11 accounts (saturation,
//! latency), 100 OneBot accounts with 1000 linked groups (memory), and 10 idle OneBot
//! accounts (CPU).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use qunbridge_tests::onebot11_peer::OneBot11Peer;
use qunbridge_tests::{free_port, Mosquitto};

use crate::baseline::{publish_backlog, Baseline};
use crate::collector::{percentile, Collector, Outcome};
use crate::daemon::{clock_ticks, Daemon, Perf};
use crate::drivers::{
    open_ws, post_messages, push_events, receive_sends, wait_connected, Pace, Sent,
};
use crate::figures::{Costs, Latency, Overload, SlowDestination, Soak, Throughput};

/// How long a phase may see no new message before what is missing counts as lost.
pub const STALL: Duration = Duration::from_secs(10);
/// How long a phase may take after its last send, however slowly messages still trickle in.
pub const LIMIT: Duration = Duration::from_secs(300);
/// Heartbeat interval of the scripted OneBot implementations (NapCat's default).
const HEARTBEAT_MS: u64 = 30_000;
/// The latency phases' rates, in messages per second.
pub const RATES: [f64; 2] = [100.0, 1000.0];

/// Phase numbers, unique within the run.
static PHASES: AtomicU32 = AtomicU32::new(1);

/// A fresh phase number.
pub fn next_phase() -> u32 {
    PHASES.fetch_add(1, Ordering::Relaxed)
}

/// Opens a WebSocket consumer on `output` and checks, with one probe message posted to
/// `in:a` on `input`, that the route works before anything is measured.
pub async fn open_checked_ws(
    input: SocketAddr,
    output: SocketAddr,
) -> Result<(Arc<Collector>, tokio::task::JoinHandle<()>), String> {
    let collector = Arc::new(Collector::default());
    let ws = open_ws(output, collector.clone()).await?;
    let probe = next_phase();
    collector.begin(probe, 1);
    let sent = post_messages(input, "a", probe, 1, 1, Pace::Saturate).await;
    if collector.wait(1, STALL, STALL).await.received != 1 {
        ws.abort();
        return Err(format!(
            "a probe message posted to in:a did not arrive at out:b ({})",
            sent.first_error.as_deref().unwrap_or("accepted")
        ));
    }
    Ok((collector, ws))
}

/// How big and long the run is.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The daemon binary.
    pub binary: std::path::PathBuf,
    /// Messages of the `api` saturation phase (and of the baseline).
    pub messages: usize,
    /// Messages of the OneBot saturation phase.
    pub onebot_messages: usize,
    /// HTTP connections posting to the `api` account.
    pub connections: usize,
    /// Length of each latency phase.
    pub latency_secs: f64,
    /// Length of the idle CPU measurement.
    pub idle_secs: f64,
    /// Accounts and groups of the scale scenario.
    pub scale_accounts: usize,
    /// Groups per account in the scale scenario.
    pub scale_groups_per_account: usize,
    /// Accounts of the idle scenario.
    pub idle_accounts: usize,
    /// Envelopes of the backlog scenario.
    pub backlog_messages: usize,
    /// POSTs of the overload scenario.
    pub overload_messages: usize,
    /// Messages posted to the slow group of the slow-destination scenario.
    pub slow_messages: usize,
    /// Messages posted to the fast group of the slow-destination scenario.
    pub fast_messages: usize,
    /// Rate of the fast group's messages, per second.
    pub fast_rate: f64,
    /// Length of the soak.
    pub soak_secs: f64,
    /// Rate of the soak, messages per second.
    pub soak_rate: f64,
    /// Where a Python environment with aiohttp is made for the baseline relay when the
    /// system's `python3` has none (`target/bench-venv`).
    pub venv: std::path::PathBuf,
    /// Scenarios to run (see [`SCENARIOS`]); all when empty.
    pub only: Vec<String>,
    /// Where `perf record` files of the saturation phases go (`--perf`).
    pub perf: Option<std::path::PathBuf>,
}

/// The `--only` keys: the per-broker scenarios of [`crate::plan::run_all`] and `baseline-relay` (which
/// `api` runs too).
pub const SCENARIOS: [&str; 10] = [
    "api",
    "baseline-relay",
    "onebot",
    "backlog",
    "overload",
    "slow",
    "scale",
    "idle",
    "soak",
    "moderation",
];

impl Settings {
    /// Whether scenario `key` is to run.
    pub fn runs(&self, key: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == key)
    }
}

/// Which broker the daemons use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BrokerKind {
    /// The daemon's embedded rumqttd.
    Embedded,
    /// A mosquitto started by the tool (`set_tcp_nodelay true`, `max_queued_messages 0`,
    /// `max_inflight_messages 0`, no persistence).
    Mosquitto,
}

impl BrokerKind {
    /// Short name for files.
    pub fn slug(self) -> &'static str {
        match self {
            BrokerKind::Embedded => "embedded",
            BrokerKind::Mosquitto => "mosquitto",
        }
    }

    /// Name in the report.
    pub fn label(self) -> &'static str {
        match self {
            BrokerKind::Embedded => "embedded rumqttd",
            BrokerKind::Mosquitto => "mosquitto",
        }
    }
}

/// Everything measured on one broker.
#[derive(Debug, Clone)]
pub struct BrokerReport {
    /// Which broker.
    pub kind: BrokerKind,
    /// The trivial baseline relay, measured right before this broker's `api` phase: a host
    /// whose speed drifts over a run (seen by 20 % and more between phases minutes apart)
    /// then moves the relay and the daemon alike, and their ratios stay fair.
    pub relay: Option<crate::relay::RelayReport>,
    /// Raw two-hop baseline at saturation.
    pub baseline: Option<Throughput>,
    /// Raw two-hop baseline latency at each of [`RATES`].
    pub baseline_latency: Vec<Latency>,
    /// `api` → `api` at saturation.
    pub api: Option<Throughput>,
    /// `api` → `api` latency at each of [`RATES`].
    pub api_latency: Vec<Latency>,
    /// RSS of the `api` daemon 2 s after it was ready, KiB.
    pub api_idle_rss_kib: Option<u64>,
    /// RSS of the `api` daemon after every phase, KiB.
    pub api_rss_after_kib: Option<u64>,
    /// Peak RSS of the `api` daemon, KiB.
    pub api_peak_rss_kib: Option<u64>,
    /// Messages the `api` daemon accepted (POST answered 202) in all.
    pub api_messages: usize,
    /// OneBot → OneBot at saturation.
    pub onebot: Option<Throughput>,
    /// OneBot → OneBot latency at each of [`RATES`].
    pub onebot_latency: Vec<Latency>,
    /// RSS of the OneBot daemon after every phase, KiB.
    pub onebot_rss_after_kib: Option<u64>,
    /// A backlog published straight to the inbound topic, drained to the `api` WebSocket.
    pub backlog: Option<Throughput>,
    /// RSS with many accounts and groups, KiB.
    pub scale_rss_kib: Option<u64>,
    /// Seconds from start until every scale account was connected.
    pub scale_connected_secs: Option<f64>,
    /// Whether a message crossed a link of the scale daemon.
    pub scale_relays: Option<bool>,
    /// Idle CPU, percent of one core.
    pub idle_cpu_percent: Option<f64>,
    /// RSS of the idle daemon, KiB.
    pub idle_rss_kib: Option<u64>,
    /// The overload scenario.
    pub overload: Option<Overload>,
    /// The slow-destination scenario.
    pub slow: Option<SlowDestination>,
    /// `--only moderation`: saturation without and with moderation, in pairs.
    pub moderation_cost: Option<crate::moderation::ModerationCost>,
    /// The soak.
    pub soak: Option<Soak>,
    /// What went wrong.
    pub errors: Vec<String>,
}

impl BrokerReport {
    /// An empty report.
    pub fn new(kind: BrokerKind) -> BrokerReport {
        BrokerReport {
            kind,
            relay: None,
            baseline: None,
            baseline_latency: Vec::new(),
            api: None,
            api_latency: Vec::new(),
            api_idle_rss_kib: None,
            api_rss_after_kib: None,
            api_peak_rss_kib: None,
            api_messages: 0,
            onebot: None,
            onebot_latency: Vec::new(),
            onebot_rss_after_kib: None,
            backlog: None,
            scale_rss_kib: None,
            scale_connected_secs: None,
            scale_relays: None,
            idle_cpu_percent: None,
            idle_rss_kib: None,
            overload: None,
            slow: None,
            moderation_cost: None,
            soak: None,
            errors: Vec::new(),
        }
    }
}

/// The saturation result of a phase.
pub fn throughput(sent: &Sent, outcome: &Outcome, cpu_ticks: Option<u64>) -> Throughput {
    let secs = outcome
        .last_ns
        .map(|last| last.saturating_sub(sent.start_ns) as f64 / 1e9)
        .unwrap_or(0.0);
    let cpu_us_per_message = cpu_ticks
        .filter(|_| outcome.received > 0)
        .map(|ticks| ticks as f64 * 1e6 / clock_ticks() as f64 / outcome.received as f64);
    Throughput {
        accepted: sent.accepted,
        failed: sent.failed,
        received: outcome.received,
        duplicates: outcome.duplicates,
        secs,
        rate: if secs > 0.0 {
            outcome.received as f64 / secs
        } else {
            0.0
        },
        cpu_us_per_message,
        first_error: sent.first_error.clone(),
        daemon_drops: String::new(),
        context_switches_per_message: None,
        store_commits_per_message: None,
    }
}

/// The latency result of a phase.
pub fn latency(rate: f64, sent: &Sent, outcome: &Outcome) -> Latency {
    let us = |p: f64| percentile(&outcome.latencies, p).unwrap_or(0) as f64 / 1e3;
    Latency {
        rate,
        samples: outcome.latencies.len(),
        lost: sent.accepted.saturating_sub(outcome.received),
        p50_us: us(0.50),
        p99_us: us(0.99),
        p999_us: us(0.999),
        max_us: outcome.latencies.last().copied().unwrap_or(0) as f64 / 1e3,
    }
}

/// The `[broker]` table for a daemon: a fresh embedded port, or the mosquitto.
pub fn broker_toml(kind: BrokerKind, mosquitto: Option<&Mosquitto>) -> String {
    match (kind, mosquitto) {
        (BrokerKind::Mosquitto, Some(m)) => {
            format!("[broker]\nurl = \"mqtt://127.0.0.1:{}\"\n", m.port)
        }
        _ => format!(
            "[broker]\nembedded_listen = \"127.0.0.1:{}\"\n",
            free_port()
        ),
    }
}

/// The port of the broker a `[broker]` table names.
fn broker_port(toml: &str) -> Option<u16> {
    toml.rsplit(':')
        .next()
        .and_then(|tail| tail.trim().trim_end_matches('"').parse().ok())
}

/// A free loopback address.
pub fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A mosquitto for the broker kind (none for the embedded broker).
pub async fn mosquitto_for(kind: BrokerKind) -> Option<Mosquitto> {
    match kind {
        BrokerKind::Embedded => None,
        BrokerKind::Mosquitto => Some(Mosquitto::start().await),
    }
}

/// The raw baseline on the broker at `port`: saturation, then each latency rate.
async fn baseline(port: u16, settings: &Settings, report: &mut BrokerReport) -> Result<(), String> {
    let collector = Arc::new(Collector::default());
    let clients = Baseline::connect(port, collector.clone()).await?;
    let warm = next_phase();
    collector.begin(warm, 100);
    let sent = clients.publish(warm, 100, Pace::Saturate).await;
    collector.wait(sent.accepted, STALL, LIMIT).await;

    let phase = next_phase();
    collector.begin(phase, settings.messages);
    let sent = clients
        .publish(phase, settings.messages, Pace::Saturate)
        .await;
    let outcome = collector.wait(sent.accepted, STALL, LIMIT).await;
    report.baseline = Some(throughput(&sent, &outcome, None));
    for rate in RATES {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let phase = next_phase();
        let count = (rate * settings.latency_secs) as usize;
        collector.begin(phase, count);
        let sent = clients.publish(phase, count, Pace::Rate(rate)).await;
        let outcome = collector.wait(sent.accepted, STALL, LIMIT).await;
        report.baseline_latency.push(latency(rate, &sent, &outcome));
    }
    clients.close().await;
    Ok(())
}

/// A config with two `api` accounts, `in` (group `a`) and `out` (group `b`), linked.
pub fn api_config(broker: &str, input: SocketAddr, output: SocketAddr) -> String {
    format!(
        "{broker}\n[accounts.in]\nplatform = \"api\"\nlisten = \"{input}\"\n\n\
         [accounts.out]\nplatform = \"api\"\nlisten = \"{output}\"\n\n\
         [[links]]\nname = \"bench\"\ngroups = [\"in:a\", \"out:b\"]\n"
    )
}

/// The baseline (on the same broker: the mosquitto the daemon uses, or for the embedded
/// broker a daemon of its own, so the baseline's traffic does not count in the measured
/// daemon's memory), then two `api` accounts: POSTs to `in:a` over several connections, the
/// WebSocket of `out`.
pub async fn api_scenario(
    kind: BrokerKind,
    settings: &Settings,
    report: &mut BrokerReport,
) -> Result<(), String> {
    let mosquitto = mosquitto_for(kind).await;
    // The baseline.
    let broker = broker_toml(kind, mosquitto.as_ref());
    let port = broker_port(&broker).ok_or("no broker port")?;
    let host = match kind {
        BrokerKind::Embedded => {
            let config = api_config(&broker, free_addr(), free_addr());
            Some(Daemon::start(&settings.binary, &config, "baseline-host").await?)
        }
        BrokerKind::Mosquitto => None,
    };
    let outcome = baseline(port, settings, report).await;
    if let Some(host) = host {
        host.stop().await?;
    }
    outcome?;

    // The daemon.
    let (input, output) = (free_addr(), free_addr());
    let broker = broker_toml(kind, mosquitto.as_ref());
    let daemon = Daemon::start(
        &settings.binary,
        &api_config(&broker, input, output),
        &format!("{}-api", kind.slug()),
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    report.api_idle_rss_kib = daemon.rss_kib().ok();
    let (collector, ws) = open_checked_ws(input, output).await?;
    report.api_messages += 1;

    let phase = next_phase();
    collector.begin(phase, settings.messages);
    let perf = Perf::start(
        settings.perf.as_deref(),
        daemon.pid(),
        &format!("{}-api", kind.slug()),
    )
    .await;
    let costs = Costs::start(&daemon).await;
    let before = daemon.cpu_ticks()?;
    let sent = post_messages(
        input,
        "a",
        phase,
        settings.messages,
        settings.connections,
        Pace::Saturate,
    )
    .await;
    let outcome = collector.wait(sent.accepted, STALL, LIMIT).await;
    let ticks = daemon.cpu_ticks()?.saturating_sub(before);
    if let Some(perf) = perf {
        perf.stop().await;
    }
    report.api_messages += sent.accepted;
    let mut result = throughput(&sent, &outcome, Some(ticks));
    costs.finish(&daemon, &mut result).await;
    result.daemon_drops = daemon.drops().await;
    report.api = Some(result);

    for rate in RATES {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let phase = next_phase();
        let count = (rate * settings.latency_secs) as usize;
        collector.begin(phase, count);
        let sent = post_messages(
            input,
            "a",
            phase,
            count,
            settings.connections,
            Pace::Rate(rate),
        )
        .await;
        let outcome = collector.wait(sent.accepted, STALL, LIMIT).await;
        report.api_messages += sent.accepted;
        report.api_latency.push(latency(rate, &sent, &outcome));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    report.api_rss_after_kib = daemon.rss_kib().ok();
    report.api_peak_rss_kib = daemon.peak_rss_kib().ok();
    ws.abort();
    daemon.stop().await?;
    Ok(())
}

/// Two `api` accounts as in [`api_scenario`]; `backlog_messages` envelopes for `in:a` are
/// published straight to the inbound topic, back to back with qunbridge's MQTT client (what a
/// separate ingress process, or a broker that queued messages while the daemon was down,
/// hands the core at once), and drained to `out`'s WebSocket.
pub async fn backlog_scenario(
    kind: BrokerKind,
    settings: &Settings,
    report: &mut BrokerReport,
) -> Result<(), String> {
    let mosquitto = mosquitto_for(kind).await;
    let broker = broker_toml(kind, mosquitto.as_ref());
    let port = broker_port(&broker).ok_or("no broker port")?;
    let (input, output) = (free_addr(), free_addr());
    let daemon = Daemon::start(
        &settings.binary,
        &api_config(&broker, input, output),
        &format!("{}-backlog", kind.slug()),
    )
    .await?;
    let (collector, ws) = open_checked_ws(input, output).await?;
    let phase = next_phase();
    collector.begin(phase, settings.backlog_messages);
    let before = daemon.cpu_ticks()?;
    let sent = publish_backlog(port, phase, settings.backlog_messages).await?;
    let outcome = collector.wait(sent.accepted, STALL, LIMIT).await;
    let ticks = daemon.cpu_ticks()?.saturating_sub(before);
    let mut result = throughput(&sent, &outcome, Some(ticks));
    result.daemon_drops = daemon.drops().await;
    report.backlog = Some(result);
    ws.abort();
    daemon.stop().await?;
    Ok(())
}

/// A OneBot v11 account section connecting to `url`, unpaced.
fn onebot_account(id: &str, url: &str, unpaced: bool) -> String {
    let mut text = format!("[accounts.{id}]\nplatform = \"qq\"\nurl = \"{url}\"\n\n");
    if unpaced {
        text.push_str(&format!(
            "[limits.{id}]\nper_group = \"off\"\nper_account = \"off\"\n\n"
        ));
    }
    text
}

/// The bot id of scripted implementation `n`.
fn bot_id(n: usize) -> i64 {
    2_000_000_000 + n as i64
}

/// Two OneBot v11 accounts (forward WebSocket, pacing off): group events pushed by the first
/// implementation, `send_group_msg` received by the second.
pub async fn onebot_scenario(
    kind: BrokerKind,
    settings: &Settings,
    report: &mut BrokerReport,
) -> Result<(), String> {
    let mosquitto = mosquitto_for(kind).await;
    let broker = broker_toml(kind, mosquitto.as_ref());
    let (from, from_url) = OneBot11Peer::serve_nodelay(bot_id(1), HEARTBEAT_MS).await;
    let (to, to_url) = OneBot11Peer::serve_nodelay(bot_id(2), HEARTBEAT_MS).await;
    let config = format!(
        "{broker}\n{}{}[[links]]\nname = \"bench\"\ngroups = [\"qq1:1001\", \"qq2:2002\"]\n",
        onebot_account("qq1", &from_url, true),
        onebot_account("qq2", &to_url, true)
    );
    let daemon = Daemon::start(
        &settings.binary,
        &config,
        &format!("{}-onebot", kind.slug()),
    )
    .await?;
    for peer in [&from, &to] {
        if !wait_connected(peer, 1, STALL).await {
            return Err("the daemon did not connect to the OneBot implementation".into());
        }
    }
    let collector = Arc::new(Collector::default());
    let receiver = receive_sends(to.clone(), collector.clone());
    let probe = next_phase();
    collector.begin(probe, 1);
    push_events(&from, 1001, probe, 1, Pace::Saturate).await;
    if collector.wait(1, STALL, STALL).await.received != 1 {
        return Err("a probe message from qq1:1001 did not arrive at qq2:2002".into());
    }

    let phase = next_phase();
    collector.begin(phase, settings.onebot_messages);
    let perf = Perf::start(
        settings.perf.as_deref(),
        daemon.pid(),
        &format!("{}-onebot", kind.slug()),
    )
    .await;
    let costs = Costs::start(&daemon).await;
    let before = daemon.cpu_ticks()?;
    let sent = push_events(&from, 1001, phase, settings.onebot_messages, Pace::Saturate).await;
    let outcome = collector.wait(sent.accepted, STALL, LIMIT).await;
    let ticks = daemon.cpu_ticks()?.saturating_sub(before);
    if let Some(perf) = perf {
        perf.stop().await;
    }
    let mut result = throughput(&sent, &outcome, Some(ticks));
    costs.finish(&daemon, &mut result).await;
    result.daemon_drops = daemon.drops().await;
    report.onebot = Some(result);

    for rate in RATES {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let phase = next_phase();
        let count = (rate * settings.latency_secs) as usize;
        collector.begin(phase, count);
        let sent = push_events(&from, 1001, phase, count, Pace::Rate(rate)).await;
        let outcome = collector.wait(sent.accepted, STALL, LIMIT).await;
        report.onebot_latency.push(latency(rate, &sent, &outcome));
    }
    report.onebot_rss_after_kib = daemon.rss_kib().ok();
    receiver.abort();
    daemon.stop().await?;
    Ok(())
}

/// `scale_accounts` OneBot v11 accounts with `scale_groups_per_account` groups each, all in
/// links of two groups of different accounts (group `n` with group `n + total / 2`).
pub async fn scale_scenario(
    kind: BrokerKind,
    settings: &Settings,
    report: &mut BrokerReport,
) -> Result<(), String> {
    let mosquitto = mosquitto_for(kind).await;
    let broker = broker_toml(kind, mosquitto.as_ref());
    let accounts = settings.scale_accounts.max(2);
    let per_account = settings.scale_groups_per_account.max(1);
    let mut peers = Vec::with_capacity(accounts);
    let mut config = format!("{broker}\n");
    for n in 0..accounts {
        let (peer, url) = OneBot11Peer::serve_nodelay(bot_id(100 + n), HEARTBEAT_MS).await;
        config.push_str(&onebot_account(&format!("qq{n}"), &url, false));
        peers.push(peer);
    }
    let groups = accounts * per_account;
    let member = |n: usize| format!("qq{}:{}", n / per_account, 100_000 + n);
    for n in 0..groups / 2 {
        config.push_str(&format!(
            "[[links]]\ngroups = [\"{}\", \"{}\"]\n\n",
            member(n),
            member(n + groups / 2)
        ));
    }
    let started = Instant::now();
    let daemon =
        Daemon::start(&settings.binary, &config, &format!("{}-scale", kind.slug())).await?;
    for peer in &peers {
        if !wait_connected(peer, 1, Duration::from_secs(60)).await {
            return Err(format!(
                "not every account connected within 60 s ({} of {accounts})",
                peers.iter().filter(|p| p.connections() > 0).count()
            ));
        }
    }
    report.scale_connected_secs = Some(started.elapsed().as_secs_f64());
    tokio::time::sleep(Duration::from_secs(3)).await;
    report.scale_rss_kib = daemon.rss_kib().ok();
    // One message across the first link: group 0 (first account) → group total/2.
    let target = (groups / 2) / per_account;
    let collector = Arc::new(Collector::default());
    let receiver = receive_sends(peers[target].clone(), collector.clone());
    let probe = next_phase();
    collector.begin(probe, 1);
    push_events(&peers[0], 100_000, probe, 1, Pace::Saturate).await;
    report.scale_relays = Some(collector.wait(1, STALL, STALL).await.received == 1);
    receiver.abort();
    daemon.stop().await?;
    Ok(())
}

/// `idle_accounts` connected OneBot v11 accounts (heartbeats every 30 s), linked in pairs,
/// no traffic: the daemon's CPU time over `idle_secs`.
pub async fn idle_scenario(
    kind: BrokerKind,
    settings: &Settings,
    report: &mut BrokerReport,
) -> Result<(), String> {
    let mosquitto = mosquitto_for(kind).await;
    let broker = broker_toml(kind, mosquitto.as_ref());
    let accounts = settings.idle_accounts.max(2);
    let mut peers = Vec::with_capacity(accounts);
    let mut config = format!("{broker}\n");
    for n in 0..accounts {
        let (peer, url) = OneBot11Peer::serve_nodelay(bot_id(1000 + n), HEARTBEAT_MS).await;
        config.push_str(&onebot_account(&format!("qq{n}"), &url, false));
        peers.push(peer);
    }
    for n in (0..accounts - 1).step_by(2) {
        config.push_str(&format!(
            "[[links]]\ngroups = [\"qq{n}:{}\", \"qq{}:{}\"]\n\n",
            100 + n,
            n + 1,
            101 + n
        ));
    }
    let daemon = Daemon::start(&settings.binary, &config, &format!("{}-idle", kind.slug())).await?;
    for peer in &peers {
        if !wait_connected(peer, 1, Duration::from_secs(30)).await {
            return Err("not every account connected within 30 s".into());
        }
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = daemon.cpu_ticks()?;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(settings.idle_secs)).await;
    let ticks = daemon.cpu_ticks()?.saturating_sub(before);
    let secs = started.elapsed().as_secs_f64();
    report.idle_cpu_percent = Some(ticks as f64 / clock_ticks() as f64 / secs * 100.0);
    report.idle_rss_kib = daemon.rss_kib().ok();
    daemon.stop().await?;
    Ok(())
}

/// Whether `path` exists (for the mosquitto check).
pub fn mosquitto_installed() -> bool {
    ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"]
        .iter()
        .any(|p| Path::new(p).exists())
        || std::process::Command::new("mosquitto")
            .arg("-h")
            .output()
            .is_ok()
}
