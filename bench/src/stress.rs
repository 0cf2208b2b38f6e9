//! The scenarios of the hot-path issue (14), each on a daemon of its own with two `api`
//! accounts: overload (far more POSTs than the daemon can take at once: what it accepts must
//! arrive exactly once), a slow destination group next to a fast one (the fast one must not
//! wait for the slow one), and a soak at a steady rate (memory must stay flat). What they
//! saw is kept in [`crate::figures`].

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use qunbridge_tests::Mosquitto;
use tokio::task::JoinHandle;

use crate::collector::Collector;
use crate::daemon::{metric_sum, status_field, Daemon};
use crate::drivers::{open_ws, post_messages, Pace};
use crate::figures::{Overload, SlowDestination, Soak};
use crate::scenarios::{
    api_config, broker_toml, free_addr, latency, mosquitto_for, next_phase, BrokerKind,
    BrokerReport, Settings, LIMIT, STALL,
};

/// The embedded broker's counter of messages it skipped for a lagging reader.
const BROKER_LOST: &str = "qunbridge_broker_messages_lost_total";
/// Reconnects of every account and the broker client.
const RECONNECTS: &str = "qunbridge_reconnects_total";
/// Messages an ingress refused because the daemon had no room for them (503, paused reads).
const INGRESS_REJECTED: &str = "qunbridge_ingress_rejected_total";
/// How often the soak samples the daemon's resident memory.
const SOAK_SAMPLE: Duration = Duration::from_secs(10);
/// The soak's warm-up, left out of its memory minimum and maximum (a third of the soak when
/// that is shorter).
const SOAK_WARM_UP: Duration = Duration::from_secs(60);

/// Two `api` accounts as in the `api` scenario (`in:a` → `out:b`), on a fresh broker of the
/// kind, with the WebSocket of `out` read by a collector and one probe message through.
struct ApiPair {
    /// The mosquitto the daemon uses (none for the embedded broker), kept running.
    _mosquitto: Option<Mosquitto>,
    /// The daemon.
    daemon: Daemon,
    /// Where `in` takes POSTs.
    input: SocketAddr,
    /// What arrived at `out`'s WebSocket.
    collector: Arc<Collector>,
    /// The WebSocket reader.
    ws: JoinHandle<()>,
}

impl ApiPair {
    /// Starts the daemon (named `<broker>-<name>`), opens the WebSocket and sends the probe.
    ///
    /// # Errors
    /// What failed, as text.
    async fn start(kind: BrokerKind, settings: &Settings, name: &str) -> Result<ApiPair, String> {
        let mosquitto = mosquitto_for(kind).await;
        let broker = broker_toml(kind, mosquitto.as_ref());
        let (input, output) = (free_addr(), free_addr());
        let daemon = Daemon::start(
            &settings.binary,
            &api_config(&broker, input, output),
            &format!("{}-{name}", kind.slug()),
        )
        .await?;
        let collector = Arc::new(Collector::default());
        let ws = open_ws(output, collector.clone()).await?;
        probe(&collector, input, "a", "in:a", "out:b").await?;
        Ok(ApiPair {
            _mosquitto: mosquitto,
            daemon,
            input,
            collector,
            ws,
        })
    }
}

/// Two `api` accounts as in the `api` scenario; `overload_messages` POSTs to `in:a` back to
/// back over the usual connections, 503s counted and not retried; then the WebSocket of
/// `out` is read until nothing arrived for [`STALL`].
pub async fn overload_scenario(
    kind: BrokerKind,
    settings: &Settings,
    report: &mut BrokerReport,
) -> Result<(), String> {
    let ApiPair {
        _mosquitto,
        daemon,
        input,
        collector,
        ws,
    } = ApiPair::start(kind, settings, "overload").await?;

    let phase = next_phase();
    let count = settings.overload_messages;
    collector.begin(phase, count);
    let sent = post_messages(
        input,
        "a",
        phase,
        count,
        settings.connections,
        Pace::Saturate,
    )
    .await;
    let posted_ns = crate::collector::now_ns();
    let outcome = collector.wait_quiet(STALL, LIMIT).await;
    let seen = collector.seen();
    let mut accepted = vec![false; count];
    for &seq in &sent.accepted_seqs {
        if let Some(slot) = usize::try_from(seq).ok().and_then(|i| accepted.get_mut(i)) {
            *slot = true;
        }
    }
    let lost = accepted
        .iter()
        .zip(&seen)
        .filter(|(accepted, seen)| **accepted && !**seen)
        .count();
    let delivered_unaccepted = accepted
        .iter()
        .zip(&seen)
        .filter(|(accepted, seen)| !**accepted && **seen)
        .count();
    let metrics = daemon.metrics().await.unwrap_or_default();
    report.overload = Some(Overload {
        posts: count,
        accepted: sent.accepted,
        rejected: sent.rejected,
        rejected_without_retry_after: sent.rejected_without_retry_after,
        other_errors: sent.failed.saturating_sub(sent.rejected),
        first_error: sent.first_error.clone(),
        post_secs: posted_ns.saturating_sub(sent.start_ns) as f64 / 1e9,
        lost,
        duplicated: outcome.duplicates,
        // What arrived without a 202: answered 503, or a request that failed on the client's
        // side after the daemon took it.
        rejected_but_delivered: delivered_unaccepted,
        received: outcome.received,
        delivery_secs: outcome
            .last_ns
            .map_or(0.0, |last| last.saturating_sub(sent.start_ns) as f64 / 1e9),
        peak_rss_kib: daemon.peak_rss_kib().ok(),
        end_rss_kib: daemon.rss_kib().ok(),
        broker_lost: metric_sum(&metrics, BROKER_LOST),
        reconnects: metric_sum(&metrics, RECONNECTS),
        ingress_rejected: metric_sum(&metrics, INGRESS_REJECTED),
        daemon_drops: daemon.drops().await,
    });
    ws.abort();
    daemon.stop().await?;
    Ok(())
}

/// One message posted to `group` of `input` must arrive (at the WebSocket the collector
/// reads) within [`STALL`].
async fn probe(
    collector: &Collector,
    input: std::net::SocketAddr,
    group: &str,
    from: &str,
    to: &str,
) -> Result<(), String> {
    let phase = next_phase();
    collector.begin(phase, 1);
    let sent = post_messages(input, group, phase, 1, 1, Pace::Saturate).await;
    if collector.wait(1, STALL, STALL).await.received != 1 {
        return Err(format!(
            "a probe message posted to {from} did not arrive at {to} ({})",
            sent.first_error.as_deref().unwrap_or("accepted")
        ));
    }
    Ok(())
}

/// Two `api` accounts, `in` and `out`, with two links: `in:slow` → `out:slow`, where
/// `out:slow` may take 1 message a minute, and `in:fast` → `out:fast`, unpaced.
/// `slow_messages` are posted to `in:slow` (back to back), then `fast_messages` to `in:fast`
/// at `fast_rate`: the latency of the fast ones at `out`'s WebSocket.
pub async fn slow_scenario(
    kind: BrokerKind,
    settings: &Settings,
    report: &mut BrokerReport,
) -> Result<(), String> {
    let mosquitto = mosquitto_for(kind).await;
    let broker = broker_toml(kind, mosquitto.as_ref());
    let (input, output) = (free_addr(), free_addr());
    let config = format!(
        "{broker}\n[accounts.in]\nplatform = \"api\"\nlisten = \"{input}\"\n\n\
         [accounts.out]\nplatform = \"api\"\nlisten = \"{output}\"\n\n\
         [limits.out.groups.slow]\nper_group = \"1/min\"\nburst = 1\n\n\
         [[links]]\nname = \"slow\"\ngroups = [\"in:slow\", \"out:slow\"]\n\n\
         [[links]]\nname = \"fast\"\ngroups = [\"in:fast\", \"out:fast\"]\n"
    );
    let daemon = Daemon::start(&settings.binary, &config, &format!("{}-slow", kind.slug())).await?;
    let collector = Arc::new(Collector::default());
    let ws = open_ws(output, collector.clone()).await?;
    probe(&collector, input, "fast", "in:fast", "out:fast").await?;

    // The slow group's messages: the first goes at once, the rest wait (a minute each).
    let phase = next_phase();
    collector.begin(phase, settings.slow_messages);
    let started = Instant::now();
    let slow = post_messages(
        input,
        "slow",
        phase,
        settings.slow_messages,
        settings.connections,
        Pace::Saturate,
    )
    .await;
    let slow_post_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let phase = next_phase();
    collector.begin(phase, settings.fast_messages);
    let fast = post_messages(
        input,
        "fast",
        phase,
        settings.fast_messages,
        1,
        Pace::Rate(settings.fast_rate),
    )
    .await;
    let outcome = collector.wait(fast.accepted, STALL, LIMIT).await;
    report.slow = Some(SlowDestination {
        slow_posts: settings.slow_messages,
        slow_accepted: slow.accepted,
        slow_post_secs,
        slow_first_error: slow.first_error.clone(),
        fast: latency(settings.fast_rate, &fast, &outcome),
        fast_failed: fast.failed,
        fast_first_error: fast.first_error.clone(),
    });
    ws.abort();
    daemon.stop().await?;
    Ok(())
}

/// Two `api` accounts as in the `api` scenario; `in:a` → `out:b` at `soak_rate` for
/// `soak_secs`, the daemon's resident memory sampled every 10 s.
pub async fn soak_scenario(
    kind: BrokerKind,
    settings: &Settings,
    report: &mut BrokerReport,
) -> Result<(), String> {
    let ApiPair {
        _mosquitto,
        daemon,
        input,
        collector,
        ws,
    } = ApiPair::start(kind, settings, "soak").await?;

    let phase = next_phase();
    let count = (settings.soak_rate * settings.soak_secs) as usize;
    collector.begin(phase, count);
    let samples: Arc<Mutex<Vec<(f64, u64)>>> = Arc::default();
    let started = Instant::now();
    let sampler = {
        let (samples, pid) = (samples.clone(), daemon.pid());
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(SOAK_SAMPLE);
            loop {
                ticks.tick().await;
                if let Ok(kib) = status_field(pid, "VmRSS:") {
                    let at = started.elapsed().as_secs_f64();
                    samples
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push((at, kib));
                }
            }
        })
    };
    let sent = post_messages(
        input,
        "a",
        phase,
        count,
        settings.connections,
        Pace::Rate(settings.soak_rate),
    )
    .await;
    let outcome = collector.wait(sent.accepted, STALL, LIMIT).await;
    sampler.abort();
    let mut rss_kib = samples
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    if let Ok(kib) = daemon.rss_kib() {
        rss_kib.push((started.elapsed().as_secs_f64(), kib));
    }
    report.soak = Some(Soak {
        secs: settings.soak_secs,
        rate: settings.soak_rate,
        accepted: sent.accepted,
        failed: sent.failed,
        first_error: sent.first_error.clone(),
        latency: latency(settings.soak_rate, &sent, &outcome),
        duplicates: outcome.duplicates,
        rss_kib,
        warm_up_secs: SOAK_WARM_UP.as_secs_f64().min(settings.soak_secs / 3.0),
    });
    ws.abort();
    daemon.stop().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steady_memory_leaves_the_warm_up_out() {
        let soak = Soak {
            rss_kib: vec![(0.0, 10), (10.0, 50), (60.0, 30), (70.0, 32), (80.0, 31)],
            warm_up_secs: 60.0,
            ..Soak::default()
        };
        assert_eq!(soak.steady_rss_kib(), Some((30, 32)));
        assert_eq!(Soak::default().steady_rss_kib(), None);
    }
}
