//! What the scenarios measure, as the report shows it: a saturation phase's throughput and
//! costs, a paced phase's latency, and what the overload, slow-destination and soak
//! scenarios saw.

use crate::daemon::{metric_sum, Daemon};

/// The store commit counter.
const STORE_COMMITS: &str = "qunbridge_store_commits_total";

/// A saturation phase's result.
#[derive(Debug, Clone, Default)]
pub struct Throughput {
    /// Messages the ingress accepted.
    pub accepted: usize,
    /// Messages the ingress refused or that failed to send.
    pub failed: usize,
    /// Distinct messages received at the destination.
    pub received: usize,
    /// Messages received twice.
    pub duplicates: usize,
    /// First send to last receipt.
    pub secs: f64,
    /// Received messages per second over `secs`.
    pub rate: f64,
    /// Daemon CPU time per message, in µs (user + system, whole process).
    pub cpu_us_per_message: Option<f64>,
    /// The first send failure.
    pub first_error: Option<String>,
    /// What the daemon counted as dropped by the end of the phase (`reason=count, …`).
    pub daemon_drops: String,
    /// Daemon context switches (voluntary + involuntary, all threads) per message received.
    pub context_switches_per_message: Option<f64>,
    /// Durable store commits (`qunbridge_store_commits_total`) per message received.
    pub store_commits_per_message: Option<f64>,
}

impl Throughput {
    /// Accepted but never received.
    pub fn lost(&self) -> usize {
        self.accepted.saturating_sub(self.received)
    }
}

/// A paced phase's result.
#[derive(Debug, Clone, Default)]
pub struct Latency {
    /// Offered rate, messages per second.
    pub rate: f64,
    /// Samples.
    pub samples: usize,
    /// Accepted but never received.
    pub lost: usize,
    /// Median, µs.
    pub p50_us: f64,
    /// 99th percentile, µs.
    pub p99_us: f64,
    /// 99.9th percentile, µs.
    pub p999_us: f64,
    /// Maximum, µs.
    pub max_us: f64,
}

/// Context switches and store commits of a daemon at the start of a phase.
pub struct Costs {
    /// Context switches, all threads.
    switches: Option<u64>,
    /// `qunbridge_store_commits_total`.
    commits: Option<f64>,
}

impl Costs {
    /// Reads the counters now.
    pub async fn start(daemon: &Daemon) -> Costs {
        Costs {
            switches: daemon.context_switches().ok(),
            commits: store_commits(daemon).await,
        }
    }

    /// Puts the per-message differences since [`Costs::start`] into `result` (per message
    /// received; nothing when none was).
    pub async fn finish(self, daemon: &Daemon, result: &mut Throughput) {
        if result.received == 0 {
            return;
        }
        let per = |delta: f64| delta / result.received as f64;
        if let (Some(before), Ok(after)) = (self.switches, daemon.context_switches()) {
            result.context_switches_per_message = Some(per(after.saturating_sub(before) as f64));
        }
        if let (Some(before), Some(after)) = (self.commits, store_commits(daemon).await) {
            result.store_commits_per_message = Some(per((after - before).max(0.0)));
        }
    }
}

/// The daemon's store commits so far; `None` when its metrics cannot be read or lack the
/// counter.
async fn store_commits(daemon: &Daemon) -> Option<f64> {
    let text = daemon.metrics().await.ok()?;
    metric_sum(&text, STORE_COMMITS)
}

/// What the overload scenario saw.
#[derive(Debug, Clone, Default)]
pub struct Overload {
    /// POSTs sent.
    pub posts: usize,
    /// Answered `202 Accepted`.
    pub accepted: usize,
    /// Answered `503` (not retried).
    pub rejected: usize,
    /// Of `rejected`: answers without `Retry-After`.
    pub rejected_without_retry_after: usize,
    /// Other answers and failed requests.
    pub other_errors: usize,
    /// The first failure, 503s included.
    pub first_error: Option<String>,
    /// From the first POST to the last answer, s.
    pub post_secs: f64,
    /// Accepted messages that never arrived.
    pub lost: usize,
    /// Extra receipts of messages that had arrived already.
    pub duplicated: usize,
    /// Messages answered with a 503 that arrived all the same (a client that retried them
    /// would have duplicated them).
    pub rejected_but_delivered: usize,
    /// Distinct messages received.
    pub received: usize,
    /// From the first POST to the last receipt, s.
    pub delivery_secs: f64,
    /// Peak resident memory of the daemon (`VmHWM`), KiB.
    pub peak_rss_kib: Option<u64>,
    /// Resident memory at the end, KiB.
    pub end_rss_kib: Option<u64>,
    /// `qunbridge_broker_messages_lost_total` at the end (`None`: not exported).
    pub broker_lost: Option<f64>,
    /// `qunbridge_reconnects_total` summed over its series at the end (`None`: not
    /// exported, which means no reconnect was counted).
    pub reconnects: Option<f64>,
    /// `qunbridge_ingress_rejected_total` summed at the end (`None`: not exported).
    pub ingress_rejected: Option<f64>,
    /// What the daemon counted as dropped (`reason=count, …`).
    pub daemon_drops: String,
}

/// What the slow-destination scenario saw.
#[derive(Debug, Clone, Default)]
pub struct SlowDestination {
    /// Messages posted to `in:slow`.
    pub slow_posts: usize,
    /// Of those, accepted.
    pub slow_accepted: usize,
    /// How long posting them took, s.
    pub slow_post_secs: f64,
    /// The first failure posting them.
    pub slow_first_error: Option<String>,
    /// Latency of the messages posted to `in:fast` afterwards, received at `out:fast`.
    pub fast: Latency,
    /// Fast messages not accepted.
    pub fast_failed: usize,
    /// The first failure posting them.
    pub fast_first_error: Option<String>,
}

/// What the soak saw.
#[derive(Debug, Clone, Default)]
pub struct Soak {
    /// Length, s.
    pub secs: f64,
    /// Offered rate, messages per second.
    pub rate: f64,
    /// Messages accepted.
    pub accepted: usize,
    /// Messages refused or failed.
    pub failed: usize,
    /// The first failure.
    pub first_error: Option<String>,
    /// Latency and losses of the whole soak.
    pub latency: Latency,
    /// Extra receipts.
    pub duplicates: usize,
    /// Resident memory samples: (seconds since the soak started, KiB).
    pub rss_kib: Vec<(f64, u64)>,
    /// The warm-up left out of [`Soak::steady_rss_kib`], s.
    pub warm_up_secs: f64,
}

impl Soak {
    /// Minimum and maximum resident memory after the warm-up, KiB.
    pub fn steady_rss_kib(&self) -> Option<(u64, u64)> {
        let steady = self
            .rss_kib
            .iter()
            .filter(|(at, _)| *at >= self.warm_up_secs)
            .map(|&(_, kib)| kib);
        let min = steady.clone().min()?;
        let max = steady.max()?;
        Some((min, max))
    }
}
