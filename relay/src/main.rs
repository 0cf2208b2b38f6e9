//! The `qunbridge` binary: parses the command line, sets up logging and signals, and calls the
//! library. `run -c FILE` runs the daemon, `check -c FILE` validates a config and prints the
//! resolved links. Exit codes: 0 on success, 64 on a bad config or usage, 1 on a failure at
//! run time.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use qunbridge::config::{Config, ProcessEnv};
use qunbridge::core::Routes;
use qunbridge::{run, RunOptions};
use tracing::{error, info, warn};
use tracing_subscriber::EnvFilter;

/// `EX_USAGE` from sysexits.h: bad config or command line.
const EXIT_USAGE: u8 = 64;

/// qunbridge links WeChat, QQ and DingTalk groups over an MQTT broker.
#[derive(Debug, Parser)]
#[command(name = "qunbridge", version, about)]
struct Cli {
    /// Log format; the filter comes from `QUNBRIDGE_LOG` (default `info`).
    #[arg(
        long,
        global = true,
        env = "QUNBRIDGE_LOG_FORMAT",
        value_enum,
        default_value = "plain"
    )]
    log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    command: Command,
}

/// Log output formats.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Plain,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon.
    Run {
        /// Config file.
        #[arg(short, long, env = "QUNBRIDGE_CONFIG")]
        config: PathBuf,
        /// Seconds that shutdown may take to finish in-flight messages.
        #[arg(long, default_value_t = 10)]
        grace_secs: u64,
    },
    /// Validate a config file and print the resolved links, or every error (exit 64).
    Check {
        /// Config file.
        #[arg(short, long, env = "QUNBRIDGE_CONFIG")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(error) = init_tracing(cli.log_format) {
        eprintln!("qunbridge: cannot set up logging: {error}");
        return ExitCode::from(EXIT_USAGE);
    }
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config, grace_secs } => run_daemon(&config, Duration::from_secs(grace_secs)),
    }
}

/// Logging from `QUNBRIDGE_LOG`, plain or JSON, to stderr.
fn init_tracing(format: LogFormat) -> Result<(), String> {
    let filter = match std::env::var("QUNBRIDGE_LOG") {
        Ok(spec) => {
            EnvFilter::try_new(&spec).map_err(|e| format!("QUNBRIDGE_LOG={spec:?}: {e}"))?
        }
        Err(_) => EnvFilter::new("info,rumqttd=warn"),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Plain => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    installed.map_err(|e| e.to_string())
}

/// Loads a config, printing every problem on failure.
fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::from_file(path, &ProcessEnv).map_err(|error| {
        eprintln!("qunbridge: {} has {error}", path.display());
        ExitCode::from(EXIT_USAGE)
    })
}

/// `qunbridge check`.
fn check(path: &Path) -> ExitCode {
    let config = match load(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    println!("{}: OK", path.display());
    match &config.broker.mode {
        qunbridge::config::BrokerMode::Embedded { listen } => {
            println!("broker: embedded, listening on {listen}")
        }
        qunbridge::config::BrokerMode::External(external) => println!(
            "broker: external {}://{}:{}",
            if external.tls { "mqtts" } else { "mqtt" },
            external.host,
            external.port
        ),
    }
    println!("topic prefix: {}", config.broker.topic_prefix);
    println!("admin: {}", config.admin.listen);
    println!("state_dir: {}", config.state_dir.display());
    println!("accounts:");
    for account in config.accounts.values() {
        println!(
            "  {} ({}): {}",
            account.id,
            account.platform,
            account.connector.describe()
        );
    }
    println!("links:");
    for link in &config.links {
        println!("  {} (format {:?})", link.name, link.format);
    }
    println!("routes:");
    let routes = Routes::new(&config);
    for (origin, destinations) in routes.all() {
        let targets: Vec<String> = destinations
            .iter()
            .map(|d| format!("{} [{}]", d.target, d.link))
            .collect();
        println!("  {origin} -> {}", targets.join(", "));
    }
    println!("destinations:");
    let mut shown = std::collections::BTreeSet::new();
    for (_, destinations) in routes.all() {
        for destination in destinations {
            if !shown.insert((destination.target.clone(), destination.link.to_string())) {
                continue;
            }
            println!(
                "  {} ({}) via link {:?}",
                destination.target, destination.platform, destination.link
            );
            if let Some(account) = config.account(&destination.target.account) {
                println!(
                    "    pacing: {}",
                    describe_policy(&account.egress, &destination.target.group)
                );
            }
            if destination.filter.rules.is_empty() {
                println!("    filters: none (links pass as sent)");
            } else {
                println!("    filters (first match wins):");
                for (index, rule) in destination.filter.rules.iter().enumerate() {
                    println!("      {}. {rule}", index + 1);
                }
            }
        }
    }
    ExitCode::SUCCESS
}

/// Pacing and length limits of a destination, for `check`.
fn describe_policy(policy: &qunbridge::egress::EgressPolicy, group: &str) -> String {
    let limit = |limit: Option<qunbridge::egress::pacing::Limit>| match limit {
        Some(limit) => format!("{} burst {}", limit.rate, limit.burst),
        None => "unlimited".to_owned(),
    };
    let length = match &policy.length {
        Some(length) => format!(
            "at most {} {} a message, {} parts",
            length.max,
            match length.unit {
                qunbridge::core::split::Unit::Chars => "characters",
                qunbridge::core::split::Unit::Bytes => "bytes",
            },
            length.max_parts
        ),
        None => "no length limit".to_owned(),
    };
    format!(
        "per group {}, per account {}, {length}, max_delay {}",
        limit(policy.group_limit(group)),
        limit(policy.per_account),
        humantime::format_duration(policy.max_delay)
    )
}

/// `qunbridge run`.
fn run_daemon(path: &Path, grace: Duration) -> ExitCode {
    let config = match load(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("qunbridge: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    info!(message = "Starting qunbridge.", version = env!("CARGO_PKG_VERSION"), config = %path.display());
    let outcome = runtime.block_on(run(config, shutdown_signal(), RunOptions { grace }));
    // rumqttd's router thread has no shutdown; do not wait for it.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            error!(message = "qunbridge failed.", %error);
            eprintln!("qunbridge: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on the first SIGINT or SIGTERM; a second one exits at once.
async fn shutdown_signal() {
    first_signal().await;
    info!(message = "Shutdown signal received; finishing in-flight messages (signal again to exit at once).");
    tokio::spawn(async {
        first_signal().await;
        warn!(message = "Second signal: exiting now.");
        std::process::exit(1);
    });
}

/// The next SIGINT or SIGTERM.
async fn first_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
