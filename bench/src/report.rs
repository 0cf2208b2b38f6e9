//! The report: the machine, the command, the baseline relay, a results table per broker and
//! the targets of issues 9 and 14 with the measured figure next to each, as Markdown; written
//! into a file between two marker comments so the rest of the file (criterion results) is
//! kept.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::figures::{Latency, Overload, SlowDestination, Soak, Throughput};
use crate::relay::{RelayReport, RELAY_LATENCY_RATE};
use crate::scenarios::{BrokerKind, BrokerReport, Settings, RATES};

/// Start of the generated section.
const BEGIN: &str = "<!-- qunbridge-bench:begin -->";
/// End of the generated section.
const END: &str = "<!-- qunbridge-bench:end -->";

/// What the machine is.
#[derive(Debug, Clone)]
pub struct Machine {
    /// CPU model.
    pub cpu: String,
    /// Logical CPUs.
    pub cores: usize,
    /// Memory, GiB.
    pub memory_gib: f64,
    /// Kernel release.
    pub kernel: String,
    /// `rustc -V`.
    pub rustc: String,
    /// mosquitto's version line.
    pub mosquitto: String,
    /// Load average when the run started.
    pub load_at_start: String,
    /// Filesystem of the temporary directory (where `state_dir` lives).
    pub temp_fs: String,
    /// When the run started (UTC).
    pub date: String,
    /// The source measured: `git describe --always --dirty` of the workspace.
    pub source: String,
}

/// Output of a command, trimmed, or `?`.
fn command_output(program: &str, args: &[&str]) -> String {
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_owned()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "?".into())
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".into())
}

impl Machine {
    /// Looks at this machine.
    pub fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
            .unwrap_or_else(|| "?".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let memory_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        let mosquitto = [
            "/usr/sbin/mosquitto",
            "/usr/local/sbin/mosquitto",
            "mosquitto",
        ]
        .iter()
        .find(|p| !p.starts_with('/') || Path::new(p).exists())
        .map(|p| command_output(p, &["-h"]))
        .unwrap_or_else(|| "?".into());
        let temp = std::env::temp_dir();
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
            memory_gib: memory_kib / 1024.0 / 1024.0,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_owned())
                .unwrap_or_else(|_| "?".into()),
            rustc: command_output("rustc", &["-V"]),
            mosquitto,
            load_at_start: load_average(),
            temp_fs: format!(
                "{} ({})",
                temp.display(),
                command_output("stat", &["-f", "-c", "%T", &temp.to_string_lossy()])
            ),
            date: command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            source: command_output(
                "git",
                &[
                    "-C",
                    concat!(env!("CARGO_MANIFEST_DIR"), "/.."),
                    "describe",
                    "--always",
                    "--dirty",
                ],
            ),
        }
    }

    /// One line for the console.
    pub fn summary(&self) -> String {
        format!(
            "{} × {}, {:.1} GiB, Linux {}, {}, {}; load average {}",
            self.cores,
            self.cpu,
            self.memory_gib,
            self.kernel,
            self.rustc,
            self.mosquitto,
            self.load_at_start
        )
    }
}

/// Everything the report is made of.
pub struct Run<'a> {
    /// The machine.
    pub machine: Machine,
    /// The command that ran.
    pub command: String,
    /// Sizes used.
    pub settings: &'a Settings,
    /// The trivial baseline relay, when it was to run.
    pub relay: Option<&'a RelayReport>,
    /// One per broker.
    pub reports: &'a [BrokerReport],
    /// Total run time.
    pub elapsed: Duration,
    /// Load average at the end.
    pub load_at_end: String,
}

/// Megabytes (10^6 bytes) of a KiB figure.
fn mb(kib: u64) -> f64 {
    kib as f64 * 1024.0 / 1e6
}

/// `12.3 MB` or `—`.
fn fmt_mb(kib: Option<u64>) -> String {
    kib.map_or("—".into(), |k| format!("{:.1} MB", mb(k)))
}

/// A number with thousands separators.
fn thousands(n: f64) -> String {
    let digits = format!("{:.0}", n.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A saturation result.
fn fmt_throughput(t: Option<&Throughput>) -> String {
    let Some(t) = t else { return "—".into() };
    let mut text = format!(
        "**{} msg/s** ({} in {:.2} s, lost {}",
        thousands(t.rate),
        thousands(t.received as f64),
        t.secs,
        t.lost()
    );
    if t.duplicates > 0 {
        let _ = write!(text, ", {} duplicates", t.duplicates);
    }
    if t.failed > 0 {
        let _ = write!(
            text,
            ", {} refused: {}",
            t.failed,
            t.first_error.as_deref().unwrap_or("?")
        );
    }
    if !t.daemon_drops.is_empty() {
        let _ = write!(text, "; daemon counted drops: {}", t.daemon_drops);
    }
    text.push(')');
    text
}

/// A latency result.
fn fmt_latency(l: Option<&Latency>) -> String {
    let Some(l) = l else { return "—".into() };
    let ms = |us: f64| format!("{:.2}", us / 1e3);
    format!(
        "{} / {} / {} ms (max {}, n = {}{})",
        ms(l.p50_us),
        ms(l.p99_us),
        ms(l.p999_us),
        ms(l.max_us),
        l.samples,
        if l.lost > 0 {
            format!(", **lost {}**", l.lost)
        } else {
            String::new()
        }
    )
}

/// `0.45×` or `—`.
fn fmt_ratio(ratio: Option<f64>) -> String {
    ratio.map_or("—".into(), |r| format!("{r:.2}×"))
}

/// A throughput's ratio to the baseline relay's.
fn relay_ratio(t: Option<&Throughput>, relay: Option<&RelayReport>) -> Option<f64> {
    Some(t?.rate / relay?.rate()?)
}

/// A CPU per message's ratio to the baseline relay's.
fn relay_cpu_ratio(t: Option<&Throughput>, relay: Option<&RelayReport>) -> Option<f64> {
    Some(t?.cpu_us_per_message? / relay?.cpu_us()?)
}

/// A per-message figure with `digits` decimals, or `—`.
fn fmt_per_message(value: Option<f64>, digits: usize) -> String {
    value.map_or("—".into(), |v| format!("{v:.digits$}"))
}

/// A counter read from the daemon's metrics; an absent series (the exporter shows a counter
/// once it was first counted) counts as 0.
fn fmt_counter(value: Option<f64>) -> String {
    value.map_or("0 (no series)".into(), |v| format!("{v:.0}"))
}

/// The overload scenario's answers and deliveries.
fn fmt_overload(o: Option<&Overload>) -> String {
    let Some(o) = o else { return "—".into() };
    let mut text = format!(
        "accepted {}, 503 {}",
        thousands(o.accepted as f64),
        thousands(o.rejected as f64)
    );
    if o.rejected_without_retry_after > 0 {
        let _ = write!(
            text,
            " ({} without `Retry-After`)",
            o.rejected_without_retry_after
        );
    }
    let _ = write!(text, ", other errors {}", o.other_errors);
    if o.other_errors > 0 {
        let _ = write!(text, " ({})", o.first_error.as_deref().unwrap_or("?"));
    }
    let _ = write!(
        text,
        "; **lost {}**, **duplicated {}**",
        o.lost, o.duplicated
    );
    if o.rejected_but_delivered > 0 {
        let _ = write!(
            text,
            ", {} not accepted yet delivered",
            o.rejected_but_delivered
        );
    }
    let _ = write!(
        text,
        "; posted in {:.1} s, {} received by {:.1} s",
        o.post_secs,
        thousands(o.received as f64),
        o.delivery_secs
    );
    text
}

/// The overload scenario's memory and daemon counters.
fn fmt_overload_daemon(o: Option<&Overload>) -> String {
    let Some(o) = o else { return "—".into() };
    let mut text = format!(
        "RSS peak {}, at end {}; broker lost {}, reconnects {}, ingress rejected {}",
        fmt_mb(o.peak_rss_kib),
        fmt_mb(o.end_rss_kib),
        fmt_counter(o.broker_lost),
        fmt_counter(o.reconnects),
        fmt_counter(o.ingress_rejected)
    );
    if !o.daemon_drops.is_empty() {
        let _ = write!(text, "; drops: {}", o.daemon_drops);
    }
    text
}

/// The slow-destination scenario.
fn fmt_slow(slow: Option<&SlowDestination>) -> String {
    let Some(s) = slow else { return "—".into() };
    let l = &s.fast;
    let ms = |us: f64| format!("{:.2}", us / 1e3);
    let mut text = if l.samples == 0 {
        "fast group: **nothing arrived** (".to_string()
    } else {
        format!(
            "fast group: p50 {} / p99 {} / max {} ms (n = {}",
            ms(l.p50_us),
            ms(l.p99_us),
            ms(l.max_us),
            l.samples
        )
    };
    if l.lost > 0 {
        let _ = write!(
            text,
            "{}**{} of {} accepted never arrived**",
            if l.samples == 0 { "" } else { ", " },
            l.lost,
            l.lost + l.samples
        );
    }
    if s.fast_failed > 0 {
        let _ = write!(
            text,
            ", {} refused: {}",
            s.fast_failed,
            s.fast_first_error.as_deref().unwrap_or("?")
        );
    }
    let _ = write!(
        text,
        "); slow group: {} of {} accepted in {:.1} s",
        s.slow_accepted, s.slow_posts, s.slow_post_secs
    );
    if s.slow_accepted < s.slow_posts {
        let _ = write!(text, " ({})", s.slow_first_error.as_deref().unwrap_or("?"));
    }
    text
}

/// The soak's memory after warm-up.
fn fmt_soak_rss(soak: Option<&Soak>) -> String {
    let Some(s) = soak else { return "—".into() };
    match s.steady_rss_kib() {
        Some((min, max)) => format!(
            "{:.1}–{:.1} MB (spread {:.1} MB; first {:.0} s left out)",
            mb(min),
            mb(max),
            mb(max - min),
            s.warm_up_secs
        ),
        None => "no sample after the warm-up".into(),
    }
}

/// The soak's memory samples, MB.
fn fmt_soak_series(soak: Option<&Soak>) -> String {
    let Some(s) = soak else { return "—".into() };
    let values: Vec<String> = s
        .rss_kib
        .iter()
        .map(|&(_, kib)| format!("{:.1}", mb(kib)))
        .collect();
    format!("{} MB", values.join(" "))
}

/// The soak's messages.
fn fmt_soak_messages(soak: Option<&Soak>) -> String {
    let Some(s) = soak else { return "—".into() };
    let l = &s.latency;
    let mut text = format!(
        "{} accepted (offered at {:.0}/s), **lost {}**",
        thousands(s.accepted as f64),
        s.rate,
        l.lost
    );
    if s.duplicates > 0 {
        let _ = write!(text, ", {} duplicates", s.duplicates);
    }
    if s.failed > 0 {
        let _ = write!(
            text,
            ", {} refused: {}",
            s.failed,
            s.first_error.as_deref().unwrap_or("?")
        );
    }
    let _ = write!(
        text,
        "; latency p50 {:.2} / p99 {:.2} / max {:.2} ms",
        l.p50_us / 1e3,
        l.p99_us / 1e3,
        l.max_us / 1e3
    );
    text
}

/// The share of the baseline a throughput reached.
fn share(t: Option<&Throughput>, baseline: Option<&Throughput>) -> Option<f64> {
    match (t, baseline) {
        (Some(t), Some(b)) if b.rate > 0.0 => Some(t.rate / b.rate * 100.0),
        _ => None,
    }
}

/// The latency at one rate.
fn at(latencies: &[Latency], rate: f64) -> Option<&Latency> {
    latencies.iter().find(|l| (l.rate - rate).abs() < 0.5)
}

/// One row of the results table.
fn row(out: &mut String, name: &str, cells: impl Iterator<Item = String>) {
    let cells: Vec<String> = cells.collect();
    let _ = writeln!(out, "| {name} | {} |", cells.join(" | "));
}

/// A target's verdict.
fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "**missed**",
        None => "not measured",
    }
}

/// The report as Markdown, between the markers.
pub fn render(run: &Run<'_>) -> String {
    let m = &run.machine;
    let s = run.settings;
    let mut out = String::new();
    let _ = writeln!(out, "{BEGIN}");
    let _ = writeln!(out, "## End to end: `qunbridge-bench`\n");
    let _ = writeln!(
        out,
        "Generated by `{}` on {} from commit `{}` (run time {:.0} s).\n",
        run.command,
        m.date,
        m.source,
        run.elapsed.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "Machine: {} × {}, {:.1} GiB RAM, Linux {}; {}; {}; `state_dir` in {}. \
         Load average (1/5/15 min) at start {}, at end {}.\n",
        m.cores,
        m.cpu,
        m.memory_gib,
        m.kernel,
        m.rustc,
        m.mosquitto,
        m.temp_fs,
        m.load_at_start,
        run.load_at_end
    );
    let _ = writeln!(
        out,
        "Each scenario runs the release `qunbridge` binary as its own process on a fresh \
         `state_dir`, with clients and scripted peers in the benchmark process on the same \
         machine (they share its cores; every socket they open has TCP_NODELAY, as NapCat's has). Pacing is off (`per_group`/`per_account = \"off\"` for \
         OneBot accounts; `api` accounts have none). Messages are a ~110-byte text with a \
         send timestamp; latency is first send → receipt by the destination client on one \
         monotonic clock. \"Lost\" counts messages the ingress accepted that had not arrived when nothing had \
         arrived for 10 s. \
         The raw baseline is qunbridge's own MQTT client (QoS 1, `clean_session = false`, manual \
         acks in order, TCP_NODELAY, 200 in flight) publishing an envelope-sized payload to \
         topic A, a client relaying it unchanged to topic B (acknowledging A after B's \
         PUBACK, pipelined; it publishes on a second connection, because rumqttd 0.20 holds \
         back every packet to a connection, PUBACKs included, while 100 of its deliveries are \
         unacknowledged) and a subscriber on B: the same two broker hops with no relay logic. \
         On the embedded broker it runs against a separate idle daemon's rumqttd (same binary \
         and settings) so that its traffic does not count in the measured daemon's memory; on \
         mosquitto against the mosquitto the `api` daemon then uses. Daemon CPU is the whole \
         process (user + system, `/proc/<pid>/stat`), which includes the embedded broker but \
         not mosquitto. RSS is `VmRSS`; MB = 10^6 bytes. Every daemon on mosquitto gets a fresh \
         mosquitto (`set_tcp_nodelay true`, `max_queued_messages 0`, `max_inflight_messages 0`, \
         no persistence).\n"
    );
    let _ = writeln!(
        out,
        "Sizes: {} messages per `api` saturation phase and per baseline phase ({} POST \
         connections), {} per OneBot saturation phase, {:.0} s per latency phase, {:.0} s idle, \
         {} accounts × {} groups for the scale scenario, {} idle accounts, a backlog of {}.\n",
        s.messages,
        s.connections,
        s.onebot_messages,
        s.latency_secs,
        s.idle_secs,
        s.scale_accounts,
        s.scale_groups_per_account,
        s.idle_accounts,
        s.backlog_messages
    );
    let _ = writeln!(
        out,
        "Issue 14 scenarios: the trivial baseline relay is `bench/baseline_relay.py`, one Python \
         process (aiohttp, no broker, no store) with the `api` surface: each POST is written to \
         every open WebSocket as a JSON frame shaped like qunbridge's, then answered 202; it is \
         measured right before each broker's `api` phase (a host's speed drifts over a run) by \
         the same client as the `api` → `api` phases (same messages, \
         same {} POST connections, same WebSocket reader), its CPU being the Python process's. \
         Overload: {} POSTs back to back to `in:a` → `out:b`, 503 answers counted and not \
         retried, then the WebSocket read until nothing arrived for 10 s; \"lost\" are 202-accepted \
         messages that never arrived, \"duplicated\" extra receipts; counters are read from \
         the daemon's `/metrics` at the end (a series not exported counts as 0). Slow \
         destination: `in:slow` → `out:slow` paced at 1/min, `in:fast` → `out:fast` unpaced, \
         on one `api` destination account; {} messages posted to `in:slow`, then {} to \
         `in:fast` at {:.0}/s, whose latency is given. Soak: `api` → `api` at {:.0}/s for \
         {:.0} s, the daemon's RSS sampled every 10 s. Context switches per message are \
         voluntary + involuntary over the daemon's threads (`/proc/<pid>/task/*/status`, \
         threads alive at the end); store commits per message the change of \
         `qunbridge_store_commits_total`.\n",
        s.connections,
        s.overload_messages,
        s.slow_messages,
        s.fast_messages,
        s.fast_rate,
        s.soak_rate,
        s.soak_secs
    );
    let mut relays: Vec<(String, &RelayReport)> = Vec::new();
    if let Some(relay) = run.relay {
        relays.push(("baseline relay".into(), relay));
    }
    for report in run.reports {
        if let Some(relay) = &report.relay {
            relays.push((format!("before the {} phases", report.kind.label()), relay));
        }
    }
    if !relays.is_empty() {
        let _ = writeln!(
            out,
            "### Trivial baseline relay (Python, aiohttp, no broker)\n"
        );
        for (when, relay) in &relays {
            if let Some(reason) = &relay.unavailable {
                let _ = writeln!(out, "Baseline relay unavailable ({when}): {reason}\n");
            }
        }
        let measured: Vec<&(String, &RelayReport)> = relays
            .iter()
            .filter(|(_, relay)| relay.unavailable.is_none())
            .collect();
        if let Some((_, first)) = measured.first() {
            let names: Vec<&str> = measured.iter().map(|(when, _)| when.as_str()).collect();
            let _ = writeln!(out, "| | {} |", names.join(" | "));
            let _ = writeln!(out, "|---|{}", "---|".repeat(measured.len()));
            let cells = |f: &dyn Fn(&RelayReport) -> String| {
                measured
                    .iter()
                    .map(|(_, relay)| f(relay))
                    .collect::<Vec<_>>()
                    .join(" | ")
            };
            let _ = writeln!(
                out,
                "| saturation (POST in, WebSocket out) | {} |",
                cells(&|relay| fmt_throughput(relay.throughput.as_ref()))
            );
            let _ = writeln!(
                out,
                "| CPU per message (the Python process) | {} |",
                cells(&|relay| relay
                    .cpu_us()
                    .map_or("—".into(), |us| format!("{us:.0} µs")))
            );
            let _ = writeln!(
                out,
                "| latency at {RELAY_LATENCY_RATE:.0}/s, p50 / p99 / p999 | {} |",
                cells(&|relay| fmt_latency(relay.latency.as_ref()))
            );
            let _ = writeln!(out, "\nInterpreter: `{}`.\n", first.python);
        }
    }
    // Each broker's figures go against the relay measured before its phases.
    fn relay_of<'r>(
        r: &'r BrokerReport,
        first: Option<&'r RelayReport>,
    ) -> Option<&'r RelayReport> {
        r.relay.as_ref().or(first)
    }

    // Results.
    let reports = run.reports;
    let _ = writeln!(out, "### Results\n");
    let header: Vec<&str> = reports.iter().map(|r| r.kind.label()).collect();
    let _ = writeln!(out, "| | {} |", header.join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(reports.len()));
    let each = |f: &dyn Fn(&BrokerReport) -> String| reports.iter().map(f).collect::<Vec<_>>();
    let mut put = |name: &str, cells: Vec<String>| row(&mut out, name, cells.into_iter());
    put(
        "(a) raw two-hop baseline, saturation",
        each(&|r| fmt_throughput(r.baseline.as_ref())),
    );
    for rate in RATES {
        put(
            &format!("(a) raw baseline latency at {rate:.0}/s, p50 / p99 / p999"),
            each(&|r| fmt_latency(at(&r.baseline_latency, rate))),
        );
    }
    put(
        "(b) `api` → `api` saturation (POST in, WebSocket out)",
        each(&|r| fmt_throughput(r.api.as_ref())),
    );
    put(
        "  share of the raw baseline",
        each(&|r| {
            share(r.api.as_ref(), r.baseline.as_ref()).map_or("—".into(), |p| format!("{p:.0} %"))
        }),
    );
    put(
        "  ratio to the baseline relay's throughput",
        each(&|r| fmt_ratio(relay_ratio(r.api.as_ref(), relay_of(r, run.relay)))),
    );
    put(
        "  daemon CPU per message",
        each(&|r| {
            r.api
                .as_ref()
                .and_then(|t| t.cpu_us_per_message)
                .map_or("—".into(), |us| format!("{us:.0} µs"))
        }),
    );
    put(
        "  ratio to the baseline relay's CPU per message",
        each(&|r| fmt_ratio(relay_cpu_ratio(r.api.as_ref(), relay_of(r, run.relay)))),
    );
    put(
        "  daemon context switches per message",
        each(&|r| {
            fmt_per_message(
                r.api.as_ref().and_then(|t| t.context_switches_per_message),
                2,
            )
        }),
    );
    put(
        "  store commits per message",
        each(&|r| fmt_per_message(r.api.as_ref().and_then(|t| t.store_commits_per_message), 3)),
    );
    put(
        "(b) OneBot v11 → OneBot v11 saturation",
        each(&|r| fmt_throughput(r.onebot.as_ref())),
    );
    put(
        "  share of the raw baseline",
        each(&|r| {
            share(r.onebot.as_ref(), r.baseline.as_ref())
                .map_or("—".into(), |p| format!("{p:.0} %"))
        }),
    );
    put(
        "  daemon CPU per message",
        each(&|r| {
            r.onebot
                .as_ref()
                .and_then(|t| t.cpu_us_per_message)
                .map_or("—".into(), |us| format!("{us:.0} µs"))
        }),
    );
    put(
        "  daemon context switches per message",
        each(&|r| {
            fmt_per_message(
                r.onebot
                    .as_ref()
                    .and_then(|t| t.context_switches_per_message),
                2,
            )
        }),
    );
    put(
        "  store commits per message",
        each(&|r| {
            fmt_per_message(
                r.onebot.as_ref().and_then(|t| t.store_commits_per_message),
                3,
            )
        }),
    );
    for rate in RATES {
        put(
            &format!("(c) `api` → `api` latency at {rate:.0}/s, p50 / p99 / p999"),
            each(&|r| fmt_latency(at(&r.api_latency, rate))),
        );
    }
    for rate in RATES {
        put(
            &format!("(c) OneBot → OneBot latency at {rate:.0}/s, p50 / p99 / p999"),
            each(&|r| fmt_latency(at(&r.onebot_latency, rate))),
        );
    }
    put(
        &format!(
            "backlog: {} envelopes published at once to `in/in/a`, drained to the WebSocket",
            s.backlog_messages
        ),
        each(&|r| fmt_throughput(r.backlog.as_ref())),
    );
    put(
        "(d) RSS, 2 `api` accounts, idle 2 s after start",
        each(&|r| fmt_mb(r.api_idle_rss_kib)),
    );
    put(
        "(d) RSS, 2 `api` accounts, after all their messages (peak)",
        each(&|r| {
            format!(
                "{} after {} messages posted (peak {})",
                fmt_mb(r.api_rss_after_kib),
                thousands(r.api_messages as f64),
                fmt_mb(r.api_peak_rss_kib)
            )
        }),
    );
    put(
        "(d) RSS, 2 OneBot accounts, after their phases",
        each(&|r| fmt_mb(r.onebot_rss_after_kib)),
    );
    put(
        &format!(
            "(d) RSS, {} OneBot accounts, {} linked groups",
            s.scale_accounts,
            s.scale_accounts * s.scale_groups_per_account
        ),
        each(&|r| {
            let mut text = fmt_mb(r.scale_rss_kib);
            if let Some(secs) = r.scale_connected_secs {
                let _ = write!(text, " (all connected {secs:.1} s after start");
                match r.scale_relays {
                    Some(true) => text.push_str(", relays)"),
                    Some(false) => text.push_str(", **a test message was not relayed**)"),
                    None => text.push(')'),
                }
            }
            text
        }),
    );
    put(
        &format!(
            "(e) idle CPU, {} connected OneBot accounts, {:.0} s",
            s.idle_accounts, s.idle_secs
        ),
        each(&|r| {
            r.idle_cpu_percent.map_or("—".into(), |p| {
                format!("{p:.3} % of one core (RSS {})", fmt_mb(r.idle_rss_kib))
            })
        }),
    );
    put(
        &format!(
            "(f) overload: {} POSTs back to back over {} connections",
            thousands(s.overload_messages as f64),
            s.connections
        ),
        each(&|r| fmt_overload(r.overload.as_ref())),
    );
    put(
        "(f) overload: daemon memory and counters",
        each(&|r| fmt_overload_daemon(r.overload.as_ref())),
    );
    put(
        &format!(
            "(g) slow destination: {} to a 1/min group, then {} to an unpaced one at {:.0}/s",
            s.slow_messages, s.fast_messages, s.fast_rate
        ),
        each(&|r| fmt_slow(r.slow.as_ref())),
    );
    put(
        &format!(
            "(h) soak, `api` → `api` at {:.0}/s for {:.0} s: RSS after warm-up",
            s.soak_rate, s.soak_secs
        ),
        each(&|r| fmt_soak_rss(r.soak.as_ref())),
    );
    put(
        "(h) soak: RSS every 10 s",
        each(&|r| fmt_soak_series(r.soak.as_ref())),
    );
    put(
        "(h) soak: messages",
        each(&|r| fmt_soak_messages(r.soak.as_ref())),
    );
    let _ = writeln!(out);
    for r in reports {
        for error in &r.errors {
            let _ = writeln!(out, "* {}: error: {error}", r.kind.label());
        }
    }

    // Targets.
    let _ = writeln!(out, "### Targets (issue 9)\n");
    let _ = writeln!(out, "| target | measured | verdict |\n|---|---|---|");
    let find = |kind: BrokerKind| reports.iter().find(|r| r.kind == kind);
    let mut target = |name: String, measured: String, met: Option<bool>| {
        let _ = writeln!(out, "| {name} | {measured} | {} |", verdict(met));
    };
    for r in reports {
        let label = r.kind.label();
        let api = share(r.api.as_ref(), r.baseline.as_ref());
        target(
            format!("throughput ≥ 60 % of the raw two-hop baseline, {label} (`api` → `api`)"),
            api.map_or("—".into(), |p| format!("{p:.0} %")),
            api.map(|p| p >= 60.0),
        );
        let onebot = share(r.onebot.as_ref(), r.baseline.as_ref());
        target(
            format!("throughput ≥ 60 % of the raw two-hop baseline, {label} (OneBot → OneBot)"),
            onebot.map_or("—".into(), |p| format!("{p:.0} %")),
            onebot.map(|p| p >= 60.0),
        );
        for (path, latencies) in [("`api`", &r.api_latency), ("OneBot", &r.onebot_latency)] {
            let l = at(latencies, 1000.0);
            let (name, met) = match r.kind {
                BrokerKind::Mosquitto => (
                    format!("latency at 1000/s, {label}, {path}: p50 ≤ 1.5 ms, p99 ≤ 5 ms"),
                    l.map(|l| l.p50_us <= 1500.0 && l.p99_us <= 5000.0 && l.lost == 0),
                ),
                BrokerKind::Embedded => (
                    format!("latency at 1000/s, {label}, {path}: p99 ≤ 5 ms"),
                    l.map(|l| l.p99_us <= 5000.0 && l.lost == 0),
                ),
            };
            target(
                name,
                l.map_or("—".into(), |l| {
                    format!("p50 {:.2} ms, p99 {:.2} ms", l.p50_us / 1e3, l.p99_us / 1e3)
                }),
                met,
            );
        }
        target(
            format!(
                "RSS ≤ 60 MB with {} accounts and {} groups, {label}",
                s.scale_accounts,
                s.scale_accounts * s.scale_groups_per_account
            ),
            fmt_mb(r.scale_rss_kib),
            r.scale_rss_kib.map(|k| mb(k) <= 60.0),
        );
        target(
            format!("idle CPU < 0.2 % of one core, {label}"),
            r.idle_cpu_percent
                .map_or("—".into(), |p| format!("{p:.3} %")),
            r.idle_cpu_percent.map(|p| p < 0.2),
        );
    }
    if let Some(r) = find(BrokerKind::Embedded) {
        let short = if r.api_messages < 100_000 {
            format!(" (only {} messages: not a full run)", r.api_messages)
        } else {
            String::new()
        };
        target(
            "RSS ≤ 40 MB after 100k messages, embedded broker".into(),
            format!("{}{short}", fmt_mb(r.api_rss_after_kib)),
            r.api_rss_after_kib
                .filter(|_| r.api_messages >= 100_000)
                .map(|k| mb(k) <= 40.0),
        );
        target(
            "two `api` accounts, embedded: ≥ 11k msg/s at saturation, nothing lost".into(),
            r.api.as_ref().map_or("—".into(), |t| {
                format!("{} msg/s, lost {}", thousands(t.rate), t.lost())
            }),
            r.api
                .as_ref()
                .map(|t| t.rate >= 11_000.0 && t.lost() == 0 && t.failed == 0),
        );
        let cpu = r.api.as_ref().and_then(|t| t.cpu_us_per_message);
        target(
            "two `api` accounts, embedded: ≤ 100 µs daemon CPU per message".into(),
            cpu.map_or("—".into(), |us| format!("{us:.0} µs")),
            cpu.map(|us| us <= 100.0),
        );
        target(
            "two `api` accounts, embedded: RSS ≤ 15 MB idle after start".into(),
            fmt_mb(r.api_idle_rss_kib),
            r.api_idle_rss_kib.map(|k| mb(k) <= 15.0),
        );
    }
    issue_14_targets(&mut out, reports, run.relay, s);
    moderation_cost(&mut out, reports);
    let _ = writeln!(out, "\n{END}");
    out
}

/// `--only moderation`: each pair of saturation runs without and with moderation, the
/// medians, and the issue-17 budget (moderation on within 10 % of off).
fn moderation_cost(out: &mut String, reports: &[BrokerReport]) {
    for r in reports {
        let Some(cost) = &r.moderation_cost else {
            continue;
        };
        let label = r.kind.label();
        let _ = writeln!(
            out,
            "\n### Moderation on vs off ({label}, issue 17)\n\n{} pairs of `api` → `api` saturation runs, each on a fresh daemon, the order alternating; `on` adds `bench/src/moderation.rs`'s config.\n",
            crate::moderation::PAIRS
        );
        let _ = writeln!(
            out,
            "| run | off msg/s | off µs/msg | on msg/s | on µs/msg |\n|---|---|---|---|---|"
        );
        let us = |t: &crate::figures::Throughput| {
            t.cpu_us_per_message
                .map_or("—".into(), |us| format!("{us:.0}"))
        };
        for (n, (off, on)) in cost.off.iter().zip(&cost.on).enumerate() {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                n + 1,
                thousands(off.rate),
                us(off),
                thousands(on.rate),
                us(on)
            );
        }
        let (cpu_off, cpu_on) = cost.cpu();
        let (rate_off, rate_on) = cost.rate();
        let cpu_change = cpu_off
            .zip(cpu_on)
            .map(|(off, on)| (on / off - 1.0) * 100.0);
        let rate_change = rate_off
            .zip(rate_on)
            .map(|(off, on)| (on / off - 1.0) * 100.0);
        let pct = |p: Option<f64>| p.map_or("—".into(), |p| format!("{p:+.1} %"));
        let _ = writeln!(
            out,
            "| median | {} | {} | {} | {} |\n",
            rate_off.map_or("—".into(), thousands),
            cpu_off.map_or("—".into(), |us| format!("{us:.0}")),
            rate_on.map_or("—".into(), thousands),
            cpu_on.map_or("—".into(), |us| format!("{us:.0}"))
        );
        let _ = writeln!(out, "| target | measured | verdict |\n|---|---|---|");
        let _ = writeln!(
            out,
            "| moderation on within 10 % of off, daemon CPU per message (medians), {label} | {} | {} |",
            pct(cpu_change),
            verdict(cpu_change.map(|p| p <= 10.0))
        );
        let _ = writeln!(
            out,
            "| moderation on within 10 % of off, msg/s (medians), {label} | {} | {} |",
            pct(rate_change),
            verdict(rate_change.map(|p| p >= -10.0))
        );
    }
}

/// The targets of issue 14 (the hot path), with their measured figures.
fn issue_14_targets(
    out: &mut String,
    reports: &[BrokerReport],
    relay: Option<&RelayReport>,
    s: &Settings,
) {
    let _ = writeln!(out, "\n### Targets (issue 14)\n");
    let _ = writeln!(out, "| target | measured | verdict |\n|---|---|---|");
    let mut target = |name: String, measured: String, met: Option<bool>| {
        let _ = writeln!(out, "| {name} | {measured} | {} |", verdict(met));
    };
    for r in reports {
        let label = r.kind.label();
        let api = r.api.as_ref();
        let relay = r.relay.as_ref().or(relay);
        let ratio = relay_ratio(api, relay);
        target(
            format!("`api` → `api` saturation ≥ 1.2× the trivial baseline relay, {label}"),
            match (api, relay.and_then(RelayReport::rate)) {
                (Some(t), Some(base)) => format!(
                    "{} ({} vs {} msg/s)",
                    fmt_ratio(ratio),
                    thousands(t.rate),
                    thousands(base)
                ),
                (Some(_), None) => "baseline relay unavailable".into(),
                _ => "—".into(),
            },
            ratio.map(|x| x >= 1.2),
        );
        target(
            format!("`api` → `api` saturation ≥ 6,000 msg/s, {label}"),
            api.map_or("—".into(), |t| {
                format!("{} msg/s (lost {})", thousands(t.rate), t.lost())
            }),
            api.map(|t| t.rate >= 6_000.0),
        );
        let cpu = api.and_then(|t| t.cpu_us_per_message);
        target(
            format!("`api` → `api` daemon CPU ≤ 100 µs per message, {label}"),
            cpu.map_or("—".into(), |us| format!("{us:.0} µs")),
            cpu.map(|us| us <= 100.0),
        );
        let cpu_ratio = relay_cpu_ratio(api, relay);
        target(
            format!("`api` → `api` daemon CPU per message ≤ 0.6× the baseline relay's, {label}"),
            match (cpu, relay.and_then(RelayReport::cpu_us)) {
                (Some(us), Some(base)) => {
                    format!("{} ({us:.0} vs {base:.0} µs)", fmt_ratio(cpu_ratio))
                }
                (Some(_), None) => "baseline relay unavailable".into(),
                _ => "—".into(),
            },
            cpu_ratio.map(|x| x <= 0.6),
        );
        let cpu = r.onebot.as_ref().and_then(|t| t.cpu_us_per_message);
        target(
            format!("OneBot v11 → OneBot v11 daemon CPU ≤ 80 µs per message, {label}"),
            cpu.map_or("—".into(), |us| format!("{us:.0} µs")),
            cpu.map(|us| us <= 80.0),
        );
        for (path, latencies) in [
            ("`api` → `api`", &r.api_latency),
            ("OneBot → OneBot", &r.onebot_latency),
        ] {
            let l = at(latencies, 1000.0);
            target(
                format!("latency at 1,000 msg/s, {path}, {label}: p50 ≤ 1.5 ms, p99 ≤ 5 ms"),
                l.map_or("—".into(), |l| {
                    format!(
                        "p50 {:.2} ms, p99 {:.2} ms{}",
                        l.p50_us / 1e3,
                        l.p99_us / 1e3,
                        if l.lost > 0 {
                            format!(", lost {}", l.lost)
                        } else {
                            String::new()
                        }
                    )
                }),
                l.map(|l| l.p50_us <= 1500.0 && l.p99_us <= 5000.0 && l.lost == 0),
            );
        }
        if r.kind == BrokerKind::Embedded {
            let o = r.overload.as_ref();
            let full = s.overload_messages >= 100_000;
            target(
                format!(
                    "overload, {label}, 100,000 POSTs over 8 connections: 0 accepted-and-lost, \
                     0 duplicated, RSS ≤ 64 MB"
                ),
                o.map_or("—".into(), |o| {
                    format!(
                        "lost {}, duplicated {}, RSS peak {}{}",
                        o.lost,
                        o.duplicated,
                        fmt_mb(o.peak_rss_kib),
                        if full {
                            String::new()
                        } else {
                            format!(
                                " (only {} POSTs: not a full run)",
                                thousands(o.posts as f64)
                            )
                        }
                    )
                }),
                o.and_then(|o| {
                    let clean = o.lost == 0 && o.duplicated == 0;
                    let small = o.peak_rss_kib.map(|k| mb(k) <= 64.0);
                    match (full, clean, small) {
                        (_, false, _) => Some(false),
                        (true, true, small) => small,
                        // A short run shows losses, not whether 100,000 fit in memory.
                        (false, true, _) => None,
                    }
                }),
            );
        }
        let short = r.api_messages < 100_000;
        target(
            format!("RSS ≤ 40 MB after 100,000 messages, {label}"),
            format!(
                "{} after {} messages{}",
                fmt_mb(r.api_rss_after_kib),
                thousands(r.api_messages as f64),
                if short { " (not a full run)" } else { "" }
            ),
            r.api_rss_after_kib
                .filter(|_| !short)
                .map(|k| mb(k) <= 40.0),
        );
        let soak = r.soak.as_ref();
        let steady = soak.and_then(Soak::steady_rss_kib);
        let full = soak.is_some_and(|soak| soak.secs >= 600.0);
        target(
            format!("RSS flat (within 5 MB after warm-up) over the 10-minute soak, {label}"),
            soak.map_or("—".into(), |soak| {
                format!(
                    "{}{}",
                    fmt_soak_rss(Some(soak)),
                    if full {
                        String::new()
                    } else {
                        format!(" (a {:.0} s soak: not a full run)", soak.secs)
                    }
                )
            }),
            steady
                .filter(|_| full)
                .map(|(min, max)| mb(max - min) <= 5.0),
        );
    }
}

/// Puts `section` (which starts and ends with the markers) into the file at `path`: in place
/// of the previous section, or appended.
///
/// # Errors
/// The I/O error.
pub fn write_into(path: &Path, section: &str) -> std::io::Result<()> {
    let existing = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => return Err(error),
    };
    let section = section.trim_end();
    let text = match (existing.find(BEGIN), existing.find(END)) {
        (Some(begin), Some(end)) if end > begin => format!(
            "{}{section}{}",
            &existing[..begin],
            &existing[end + END.len()..]
        ),
        _ if existing.trim().is_empty() => format!("# Benchmarks\n\n{section}\n"),
        _ => format!("{}\n\n{section}\n", existing.trim_end()),
    };
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_replaces_the_previous_one_and_keeps_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("B.md");
        std::fs::write(&path, "# Benchmarks\n\nCriterion stuff.\n").expect("write");
        write_into(&path, &format!("{BEGIN}\none\n{END}\n")).expect("first");
        write_into(&path, &format!("{BEGIN}\ntwo\n{END}\n")).expect("second");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(
            text,
            format!("# Benchmarks\n\nCriterion stuff.\n\n{BEGIN}\ntwo\n{END}\n")
        );
    }

    #[test]
    fn thousands_separators() {
        assert_eq!(thousands(1234567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
    }
}
