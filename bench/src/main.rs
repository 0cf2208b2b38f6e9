//! `qunbridge-bench`: drives the real daemon (the release `qunbridge` binary, one process per
//! scenario) end to end and reports, on the embedded broker and on mosquitto:
//!
//! - the raw two-hop MQTT baseline with qunbridge's own client settings,
//! - saturation throughput (`api` POST in over 8 connections, WebSocket out; OneBot v11
//!   events in, `send_group_msg` out) with lost messages and daemon CPU per message,
//! - end-to-end latency p50/p99/p999 at 100 and 1000 messages/s,
//! - resident memory idle, after 100k messages, and with 100 accounts / 1000 linked groups,
//! - idle CPU over 60 s with 10 connected accounts,
//! - how a backlog of 10 000 inbound messages handed to the core at once drains,
//! - a trivial baseline relay with the same `api` surface (`bench/baseline_relay.py`, Python
//!   and aiohttp) measured by the same client, and qunbridge's `api` figures as ratios to it,
//! - overload (100 000 POSTs back to back: accepted, refused with 503, lost, duplicated,
//!   memory), a slow destination group next to a fast one, and a soak at 1000 messages/s
//!   with memory sampled every 10 s,
//! - context switches and store commits per message at saturation.
//!
//! It prints a Markdown report and, with `--out`, writes it into that file between
//! `<!-- qunbridge-bench:begin -->` and `<!-- qunbridge-bench:end -->` (anything else in the
//! file is kept). Run it with `cargo run --release -p qunbridge-bench -- --out
//! docs/BENCHMARKS.md` (`--quick` for a short smoke run).

#![deny(missing_docs)]

mod baseline;
mod collector;
mod daemon;
mod drivers;
mod figures;
mod moderation;
mod plan;
mod relay;
mod report;
mod scenarios;
mod stress;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;

use crate::scenarios::{BrokerKind, Settings};

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "qunbridge-bench",
    about = "End-to-end benchmark of the qunbridge daemon (see docs/BENCHMARKS.md)"
)]
struct Cli {
    /// A short smoke run (fewer messages, 3 s latency phases, 10 s idle, 10000 overload
    /// POSTs, a 30 s soak).
    #[arg(long)]
    quick: bool,
    /// Write the report into this Markdown file (replacing the previous report section).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The daemon binary; by default `cargo build --release -p qunbridge` is run and
    /// `target/release/qunbridge` used.
    #[arg(long)]
    daemon: Option<PathBuf>,
    /// Brokers to measure, comma-separated: `embedded`, `mosquitto`.
    #[arg(long, default_value = "embedded,mosquitto", value_delimiter = ',')]
    brokers: Vec<String>,
    /// Messages of the `api` saturation phase and of the baseline (default 100000; quick 5000).
    #[arg(long)]
    messages: Option<usize>,
    /// Messages of the OneBot saturation phase (default 20000; quick 2000).
    #[arg(long)]
    onebot_messages: Option<usize>,
    /// HTTP connections posting to the `api` account.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Seconds of each latency phase (default 10; quick 3).
    #[arg(long)]
    latency_secs: Option<f64>,
    /// Seconds of the idle CPU measurement (default 60; quick 10).
    #[arg(long)]
    idle_secs: Option<f64>,
    /// POSTs of the overload scenario (default 100000; quick 10000).
    #[arg(long)]
    overload_messages: Option<usize>,
    /// Seconds of the soak at 1000 messages/s (default 600; quick 30).
    #[arg(long)]
    soak_secs: Option<f64>,
    /// Only these scenarios, comma-separated: `api` (with the raw baseline and the baseline
    /// relay), `baseline-relay` (alone), `onebot`, `backlog`, `overload`, `slow`, `scale`,
    /// `idle`, `soak`.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Keep every daemon's log in this directory (`QUNBRIDGE_BENCH_LOG` sets the filter,
    /// default `warn`).
    #[arg(long)]
    logs: Option<PathBuf>,
    /// Record the daemon with `perf record` during each saturation phase, into this directory.
    #[arg(long)]
    perf: Option<PathBuf>,
    /// Group health in every daemon: `on` (the default, as shipped) or `off` (to measure
    /// what counting costs).
    #[arg(long, value_parser = ["on", "off"], default_value = "on")]
    stats: String,
    /// Moderation in every daemon: `off` (the default, as shipped) or `on` (a flood limit,
    /// spam waves and a 10 000-word list with 50 regexes at every destination; see
    /// `bench/src/moderation.rs`), to measure what judging costs.
    #[arg(long, value_parser = ["on", "off"], default_value = "off")]
    moderation: String,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let started = Instant::now();
    let mut kinds = Vec::new();
    for name in &cli.brokers {
        match name.trim() {
            "embedded" => kinds.push(BrokerKind::Embedded),
            "mosquitto" => kinds.push(BrokerKind::Mosquitto),
            other => {
                eprintln!("unknown broker `{other}` (use embedded, mosquitto)");
                return ExitCode::from(64);
            }
        }
    }
    if kinds.contains(&BrokerKind::Mosquitto) && !scenarios::mosquitto_installed() {
        eprintln!("mosquitto is not installed (apt-get install mosquitto), or leave it out with --brokers embedded");
        return ExitCode::from(64);
    }
    let binary = match &cli.daemon {
        Some(path) => path.clone(),
        None => match build_daemon() {
            Ok(path) => path,
            Err(error) => {
                eprintln!("{error}");
                return ExitCode::FAILURE;
            }
        },
    };
    if !binary.exists() {
        eprintln!("no daemon binary at {binary:?}");
        return ExitCode::FAILURE;
    }
    let settings = Settings {
        binary,
        messages: cli
            .messages
            .unwrap_or(if cli.quick { 5_000 } else { 100_000 }),
        onebot_messages: cli
            .onebot_messages
            .unwrap_or(if cli.quick { 2_000 } else { 20_000 }),
        connections: cli.connections.max(1),
        latency_secs: cli
            .latency_secs
            .unwrap_or(if cli.quick { 3.0 } else { 10.0 }),
        idle_secs: cli.idle_secs.unwrap_or(if cli.quick { 10.0 } else { 60.0 }),
        scale_accounts: 100,
        scale_groups_per_account: 10,
        idle_accounts: 10,
        backlog_messages: if cli.quick { 5_000 } else { 10_000 },
        overload_messages: cli.overload_messages.unwrap_or(if cli.quick {
            10_000
        } else {
            100_000
        }),
        slow_messages: 500,
        fast_messages: 100,
        fast_rate: 10.0,
        soak_secs: cli
            .soak_secs
            .unwrap_or(if cli.quick { 30.0 } else { 600.0 })
            .max(1.0),
        soak_rate: 1000.0,
        venv: match target_dir() {
            Ok(target) => target.join("bench-venv"),
            Err(error) => {
                eprintln!("{error}");
                return ExitCode::FAILURE;
            }
        },
        only: cli.only.iter().map(|o| o.trim().to_owned()).collect(),
        perf: cli.perf.clone(),
    };
    for scenario in &settings.only {
        if !scenarios::SCENARIOS.contains(&scenario.as_str()) {
            eprintln!(
                "unknown scenario `{scenario}` (use {})",
                scenarios::SCENARIOS.join(", ")
            );
            return ExitCode::from(64);
        }
    }
    if let Some(logs) = &cli.logs {
        let _ = daemon::LOG_DIR.set(logs.clone());
    }
    let mut extra = String::new();
    if cli.stats == "off" {
        extra.push_str("[stats]\nenabled = false\n");
    }
    if cli.moderation == "on" {
        match moderation::config() {
            Ok(text) => extra.push_str(&text),
            Err(error) => {
                eprintln!("{error}");
                return ExitCode::FAILURE;
            }
        }
    }
    if !extra.is_empty() {
        let _ = daemon::EXTRA_CONFIG.set(extra);
    }
    if cfg!(debug_assertions) {
        eprintln!("warning: this is a debug build of qunbridge-bench; its own slowness will show in the numbers (use --release)");
    }
    let machine = report::Machine::probe();
    eprintln!("{}", machine.summary());
    // With `api`, each broker measures the baseline relay right before its `api` phase.
    let relay = if settings.runs("baseline-relay") && !settings.runs("api") {
        eprintln!("[no broker] baseline relay …");
        let started = Instant::now();
        let relay = relay::relay_scenario(&settings).await;
        eprintln!(
            "[no broker] baseline relay done in {:.0} s",
            started.elapsed().as_secs_f64()
        );
        Some(relay)
    } else {
        None
    };
    let mut reports = Vec::new();
    for kind in kinds {
        reports.push(plan::run_all(kind, &settings).await);
    }
    let text = report::render(&report::Run {
        machine,
        command: command_line(),
        settings: &settings,
        relay: relay.as_ref(),
        reports: &reports,
        elapsed: started.elapsed(),
        load_at_end: report::load_average(),
    });
    println!("{text}");
    if let Some(out) = &cli.out {
        if let Err(error) = report::write_into(out, &text) {
            eprintln!("cannot write {out:?}: {error}");
            return ExitCode::FAILURE;
        }
        eprintln!("report written to {out:?}");
    }
    if reports.iter().any(|r| !r.errors.is_empty()) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// The command as a user would type it.
fn command_line() -> String {
    let args: Vec<String> = std::env::args().skip(1).collect();
    format!(
        "cargo run --release -p qunbridge-bench --{}{}",
        if args.is_empty() { "" } else { " " },
        args.join(" ")
    )
}

/// The target directory this tool was built in (`target/<profile>/qunbridge-bench` →
/// `target/`).
fn target_dir() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    exe.parent()
        .and_then(|p| p.parent())
        .map(PathBuf::from)
        .ok_or_else(|| "cannot find the target directory".into())
}

/// Builds the release daemon (`cargo build --release -p qunbridge --bin qunbridge`) in the
/// target directory this tool was built in, and returns its path.
fn build_daemon() -> Result<PathBuf, String> {
    let target = target_dir()?;
    let target = target.as_path();
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("building the daemon: cargo build --release -p qunbridge --bin qunbridge");
    let mut build = std::process::Command::new(&cargo);
    // `cargo run` hands this program its package's variables; a build script that watches
    // one of them would make the nested build (and the next ordinary one) rebuild it.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_BIN_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_RUSTC_CURRENT_DIR",
            ]
            .contains(&name.as_ref())
        {
            build.env_remove(name.as_ref());
        }
    }
    let status = build
        .args([
            "build",
            "--release",
            "-p",
            "qunbridge",
            "--bin",
            "qunbridge",
        ])
        .arg("--manifest-path")
        .arg(&manifest)
        .env("CARGO_TARGET_DIR", target)
        .status()
        .map_err(|e| format!("cannot run {cargo}: {e}"))?;
    if !status.success() {
        return Err(format!("building the daemon failed ({status})"));
    }
    Ok(target.join("release").join("qunbridge"))
}
