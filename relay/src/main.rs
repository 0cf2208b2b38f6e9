//! The `qunbridge` binary: parses the command line, sets up logging and signals, and calls the
//! library. `run -c FILE` runs the daemon, `check -c FILE` validates a config and prints what
//! it resolves to (broker, store, accounts, links, word lists, routes, pacing and filters),
//! `status` shows a running daemon's state through its admin endpoint. Exit codes: 0 on success, 64 on a bad
//! config or usage, 1 on a failure at run time (or, for `status`, a daemon that cannot be
//! reached). Under systemd (`Type=notify`) `run` sends `READY=1` once started, `WATCHDOG=1` at
//! half of `WATCHDOG_USEC`, and `STOPPING=1` when shutdown begins.

#![deny(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use qunbridge::broker::lost::BrokerLosses;
use qunbridge::config::{Config, ProcessEnv, Role};
use qunbridge::{run, Lifecycle, RunOptions};
use sd_notify::NotifyState;
use tracing::{error, info, warn};
use tracing_subscriber::filter::FilterExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The allocator: mimalloc. The relay allocates and frees many small buffers per message, and
/// the store's writer thread frees what the async thread built; with glibc's allocator that was
/// a quarter of OneBot's CPU, a sixth of it waiting on the allocator's lock, and mimalloc cut
/// CPU per message by about a fifth (docs/BENCHMARKS.md, issue 14 session 16). It is built without transparent huge pages
/// (`no_thp`), which otherwise back its arenas 2 MiB at a time and doubled the idle RSS.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `EX_USAGE` from sysexits.h: bad config or command line.
const EXIT_USAGE: u8 = 64;

/// qunbridge links QQ, WeChat, DingTalk, WeCom and `api` (HTTP) groups over an MQTT broker.
#[derive(Debug, Parser)]
#[command(name = "qunbridge", version, about)]
struct Cli {
    /// Log format; the filter comes from `QUNBRIDGE_LOG` (default `info,rumqttd=warn`).
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
        /// Move the state store (`state_dir/state.redb`) aside to `state.redb.<time>.bak`
        /// and start with an empty one: after a corrupt store was reported, or to forget
        /// dedup keys and the message map on purpose.
        #[arg(long)]
        reset_state: bool,
        /// What this process runs (over the config's `roles`): everything, only the
        /// accounts' connectors, or only the relay core (scale-out; see docs/operations.md).
        #[arg(long, value_parser = ["all", "connectors", "core"])]
        role: Option<String>,
        /// With `--role connectors`: run only these accounts (comma-separated ids).
        #[arg(long, value_delimiter = ',')]
        accounts: Option<Vec<String>>,
        /// This process's name among the processes of one deployment (over the config's
        /// `instance`).
        #[arg(long)]
        instance: Option<String>,
    },
    /// Validate a config file and print the resolved links, or every error (exit 64).
    Check {
        /// Config file.
        #[arg(short, long, env = "QUNBRIDGE_CONFIG")]
        config: PathBuf,
    },
    /// Show a running daemon's accounts, links, queue depths and counts (exit 1 when it
    /// cannot be reached).
    Status {
        /// Config file whose `admin.listen` is the address to ask.
        #[arg(short, long, env = "QUNBRIDGE_CONFIG")]
        config: Option<PathBuf>,
        /// Admin endpoint address (`host:port`); default: the config's `admin.listen`, else
        /// 127.0.0.1:9464.
        #[arg(long)]
        admin: Option<String>,
        /// Redraw every 2 seconds until Ctrl-C.
        #[arg(long)]
        watch: bool,
        /// Print the raw JSON of `/api/v1/status`.
        #[arg(long)]
        json: bool,
    },
    /// Group health of the linked groups from a running daemon (`GET /api/v1/stats`):
    /// messages, active members, joins and leaves per day or week (exit 64 on bad
    /// arguments, 1 when the daemon cannot be reached).
    Stats {
        /// Config file whose `admin.listen` is the address to ask.
        #[arg(short, long, env = "QUNBRIDGE_CONFIG")]
        config: Option<PathBuf>,
        /// Admin endpoint address (`host:port`); default: the config's `admin.listen`, else
        /// 127.0.0.1:9464.
        #[arg(long)]
        admin: Option<String>,
        /// Only this group, by alias or `account:group` (repeatable).
        #[arg(long)]
        group: Vec<String>,
        /// Only the groups of this link.
        #[arg(long)]
        link: Option<String>,
        /// First day, `YYYY-MM-DD` (default: 6 days before `--until`).
        #[arg(long)]
        since: Option<String>,
        /// Last day, `YYYY-MM-DD` (default: today in `stats.utc_offset`).
        #[arg(long)]
        until: Option<String>,
        /// One row per day or per week (Monday to Sunday).
        #[arg(long, value_enum, default_value = "day")]
        by: StatsBy,
        /// Output format.
        #[arg(long, value_enum, default_value = "table")]
        format: StatsFormat,
        /// Start CSV with a UTF-8 byte order mark, so spreadsheet programs show Chinese names.
        #[arg(long)]
        bom: bool,
        /// Write to this file instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Messages held for review by moderation, from a running daemon: list them, release
    /// them to their destination, or drop them (exit 1 when the daemon cannot be reached or
    /// an id is not held).
    Moderation {
        /// Config file whose `admin.listen` is the address to ask.
        #[arg(short, long, env = "QUNBRIDGE_CONFIG", global = true)]
        config: Option<PathBuf>,
        /// Admin endpoint address (`host:port`); default: the config's `admin.listen`, else
        /// 127.0.0.1:9464.
        #[arg(long, global = true)]
        admin: Option<String>,
        /// What to do.
        #[command(subcommand)]
        action: ModerationCommand,
    },
}

/// `qunbridge moderation` subcommands.
#[derive(Debug, Subcommand)]
enum ModerationCommand {
    /// List the held messages, oldest first.
    List {
        /// Print the raw JSON of `GET /api/v1/held`.
        #[arg(long)]
        json: bool,
    },
    /// Relay held messages to the destination they were held for.
    Release {
        /// Held message ids, as `list` shows them.
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Never relay these held messages.
    Drop {
        /// Held message ids, as `list` shows them.
        #[arg(required = true)]
        ids: Vec<String>,
    },
}

/// `stats --by`.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum StatsBy {
    /// One row per day.
    Day,
    /// One row per week.
    Week,
}

/// `stats --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum StatsFormat {
    /// A table for a terminal.
    Table,
    /// CSV (see `--bom`).
    Csv,
    /// The JSON of `/api/v1/stats`.
    Json,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            let usage = error.use_stderr();
            let _ = error.print();
            return if usage {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    if let Err(error) = init_tracing(cli.log_format) {
        eprintln!("qunbridge: cannot set up logging: {error}");
        return ExitCode::from(EXIT_USAGE);
    }
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run {
            config,
            grace_secs,
            reset_state,
            role,
            accounts,
            instance,
        } => run_daemon(
            &config,
            Duration::from_secs(grace_secs),
            RunOptions {
                reset_state,
                role: role.as_deref().and_then(Role::parse),
                accounts,
                instance,
                ..RunOptions::default()
            },
        ),
        Command::Status {
            config,
            admin,
            watch,
            json,
        } => status(config.as_deref(), admin, watch, json),
        Command::Moderation {
            config,
            admin,
            action,
        } => moderation(config.as_deref(), admin, action),
        Command::Stats {
            config,
            admin,
            group,
            link,
            since,
            until,
            by,
            format,
            bom,
            out,
        } => {
            let mut query = qunbridge::stats::report::Query {
                groups: group,
                link,
                by: match by {
                    StatsBy::Day => qunbridge::stats::report::By::Day,
                    StatsBy::Week => qunbridge::stats::report::By::Week,
                },
                ..Default::default()
            };
            for (flag, value, slot) in [
                ("--since", since, &mut query.since),
                ("--until", until, &mut query.until),
            ] {
                if let Some(value) = value {
                    match qunbridge::stats::day::parse_date(&value) {
                        Some(day) => *slot = Some(day),
                        None => {
                            eprintln!("qunbridge: {flag} {value:?}: not a date like 2026-12-01");
                            return ExitCode::from(EXIT_USAGE);
                        }
                    }
                }
            }
            if let (Some(since), Some(until)) = (query.since, query.until) {
                if since > until {
                    eprintln!("qunbridge: --since is after --until");
                    return ExitCode::from(EXIT_USAGE);
                }
            }
            stats(
                config.as_deref(),
                admin,
                &query,
                format,
                bom,
                out.as_deref(),
            )
        }
    }
}

/// `qunbridge stats`: asks the daemon and prints the report.
fn stats(
    config: Option<&Path>,
    admin: Option<String>,
    query: &qunbridge::stats::report::Query,
    format: StatsFormat,
    bom: bool,
    out: Option<&Path>,
) -> ExitCode {
    use qunbridge::stats::report;
    let (admin, runtime) = match admin_client(config, admin) {
        Ok(pair) => pair,
        Err(code) => return code,
    };
    let fetched = runtime.block_on(qunbridge::status::fetch_stats(&admin, query));
    let report = match fetched {
        Ok(report) => report,
        Err(error) => {
            eprintln!("qunbridge: {error}");
            return ExitCode::FAILURE;
        }
    };
    let text = match format {
        StatsFormat::Table => report::table(&report),
        StatsFormat::Csv => report::csv(&report, bom),
        StatsFormat::Json => match serde_json::to_string_pretty(&report) {
            Ok(json) => json + "\n",
            Err(error) => {
                eprintln!("qunbridge: cannot encode the report: {error}");
                return ExitCode::FAILURE;
            }
        },
    };
    let written = match out {
        Some(path) => std::fs::write(path, text.as_bytes())
            .map_err(|error| format!("cannot write {}: {error}", path.display())),
        None => {
            use std::io::Write;
            std::io::stdout()
                .write_all(text.as_bytes())
                .map_err(|error| format!("cannot write the report: {error}"))
        }
    };
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("qunbridge: {error}");
            ExitCode::FAILURE
        }
    }
}

/// The admin endpoint to ask: `--admin`, else the config's `admin.listen` (loopback when it
/// listens on every address), else the default.
fn admin_address(config: Option<&Path>, admin: Option<String>) -> Result<String, ExitCode> {
    Ok(match (admin, config) {
        (Some(admin), _) => admin,
        (None, Some(path)) => {
            let config = load(path)?;
            if let Some(token) = &config.admin.token {
                qunbridge::status::use_admin_token(token.clone());
            }
            // A daemon listening on every address still answers on loopback.
            let mut listen = config.admin.listen;
            if listen.ip().is_unspecified() {
                listen.set_ip(match listen {
                    std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            listen.to_string()
        }
        (None, None) => qunbridge::status::DEFAULT_ADMIN.to_owned(),
    })
}

/// The admin address a client command asks (see [`admin_address`]) and a runtime to ask it
/// on.
fn admin_client(
    config: Option<&Path>,
    admin: Option<String>,
) -> Result<(String, tokio::runtime::Runtime), ExitCode> {
    let admin = admin_address(config, admin)?;
    // Without a config, the token may come from the environment (never from the command
    // line, where other users of the machine could read it).
    if let Ok(token) = std::env::var("QUNBRIDGE_ADMIN_TOKEN") {
        if !token.is_empty() {
            qunbridge::status::use_admin_token(token.into());
        }
    }
    let runtime = async_runtime(tokio::runtime::Builder::new_current_thread())?;
    Ok((admin, runtime))
}

/// `qunbridge moderation list|release|drop`.
fn moderation(config: Option<&Path>, admin: Option<String>, action: ModerationCommand) -> ExitCode {
    use qunbridge::review::{decide, list, Verdict};
    let (admin, runtime) = match admin_client(config, admin) {
        Ok(pair) => pair,
        Err(code) => return code,
    };
    let mut stdout = std::io::stdout();
    let outcome = runtime.block_on(async {
        match action {
            ModerationCommand::List { json } => {
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                list(&admin, json, now_ms, &mut stdout).await.map(|()| 0)
            }
            ModerationCommand::Release { ids } => {
                decide(&admin, Verdict::Release, &ids, &mut stdout).await
            }
            ModerationCommand::Drop { ids } => {
                decide(&admin, Verdict::Drop, &ids, &mut stdout).await
            }
        }
    });
    match outcome {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("qunbridge: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `qunbridge status`.
fn status(config: Option<&Path>, admin: Option<String>, watch: bool, json: bool) -> ExitCode {
    let (admin, runtime) = match admin_client(config, admin) {
        Ok(pair) => pair,
        Err(code) => return code,
    };
    let mut stdout = std::io::stdout();
    let outcome = runtime.block_on(async {
        if watch {
            let stop = async {
                let _ = tokio::signal::ctrl_c().await;
            };
            qunbridge::status::watch(
                &admin,
                json,
                qunbridge::status::WATCH_INTERVAL,
                stop,
                &mut stdout,
            )
            .await
        } else {
            qunbridge::status::show(&admin, json, &mut stdout).await
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("qunbridge: {error}");
            ExitCode::FAILURE
        }
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
    // Dependencies that log through `log` (tungstenite traces every frame it reads and
    // writes) build a record for every call under `log`'s global maximum, and only then
    // does the filter drop it: about a tenth of the async thread's work per OneBot message.
    // The maximum is capped at the most the filter shows. The broker-loss layer needs no
    // `log` record: rumqttd reports through `tracing`.
    let log_records = log_level(filter.max_level_hint());
    // rumqttd opens a span per publish it routes; no line of ours shows them, and with spans
    // off for its callsites they cost nothing (one of the embedded broker's larger costs).
    let filter = filter.and(qunbridge::broker::lost::not_broker_spans());
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let lines = match format {
        LogFormat::Plain => lines.with_filter(filter).boxed(),
        LogFormat::Json => lines.json().flatten_event(true).with_filter(filter).boxed(),
    };
    // The broker-loss layer filters for itself: a loss is counted and logged as an error
    // whatever QUNBRIDGE_LOG lets through.
    tracing_subscriber::registry()
        .with(lines)
        .with(BrokerLosses::layer())
        .try_init()
        .map_err(|e| e.to_string())?;
    // After `try_init`, which installs the `log` bridge with no maximum.
    log::set_max_level(log_records);
    Ok(())
}

/// The `log` maximum for a filter's most verbose level (`None`: the filter cannot tell, so
/// every record may be shown).
fn log_level(most_verbose: Option<tracing::level_filters::LevelFilter>) -> log::LevelFilter {
    use tracing::level_filters::LevelFilter;
    match most_verbose {
        Some(LevelFilter::OFF) => log::LevelFilter::Off,
        Some(LevelFilter::ERROR) => log::LevelFilter::Error,
        Some(LevelFilter::WARN) => log::LevelFilter::Warn,
        Some(LevelFilter::INFO) => log::LevelFilter::Info,
        Some(LevelFilter::DEBUG) => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    }
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
    println!(
        "process: roles {}, instance {}",
        config.role.as_str(),
        config.instance
    );
    println!("state_dir: {}", config.state_dir.display());
    match &config.store {
        qunbridge::config::StoreConfig::Embedded => println!(
            "store: embedded ({})",
            config
                .state_dir
                .join(qunbridge::store::persistent::FILE_NAME)
                .display()
        ),
        qunbridge::config::StoreConfig::Redis { prefix, .. } => {
            println!("store: redis (keys prefixed {prefix:?})")
        }
    }
    let media = &config.media;
    println!(
        "media: mode {}, cache {} bytes for {} under {}, fetch at most {} bytes within {}, destinations wait {}{}",
        media.mode.as_str(),
        media.cache_max_bytes,
        humantime::format_duration(media.cache_ttl),
        config.state_dir.join("media").display(),
        media.max_image_bytes,
        humantime::format_duration(media.fetch_timeout),
        humantime::format_duration(media.wait),
        if media.allow_hosts.is_empty() {
            String::new()
        } else {
            format!(", internal hosts allowed: {}", media.allow_hosts.join(", "))
        }
    );
    match &media.server {
        Some(server) => println!(
            "media server: listening on {}, links {}/m/…",
            server.listen, server.public_base_url
        ),
        None => println!("media server: off"),
    }
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
    let lists = &config.moderation.lists.compiled;
    if !lists.is_empty() {
        println!("word lists:");
        for (name, list) in lists {
            println!("  {name}: {}", qunbridge::describe::entries(list.len()));
        }
    }
    println!(
        "spam waves: {}",
        describe_waves(config.moderation.wave.as_ref())
    );
    if let Some(delay) = config.moderation.suspect_delay {
        println!(
            "suspect delay: {} for a newcomer's link, invite, contact or picture (new: not seen posting in the group for 28 days, or joined within 10 minutes)",
            humantime::format_duration(delay)
        );
    }
    println!(
        "held for review: at most {} messages, each for at most {}",
        config.moderation.hold_cap,
        humantime::format_duration(config.moderation.hold_max)
    );
    match &config.moderation.notify {
        Some(notify) => {
            println!(
                "admin notification: to {notify} ({}), at most {} lines a minute plus a summary",
                notify.platform, notify.per_minute
            );
            if let Some(account) = config.account(&notify.account) {
                println!(
                    "  pacing: {}",
                    qunbridge::describe::describe_policy(&account.egress, &notify.group)
                );
            }
        }
        None => println!("admin notification: off"),
    }
    println!("routes:");
    let routes = qunbridge::routes_of(&config);
    for (origin, destinations) in routes.all() {
        let targets: Vec<String> = destinations
            .iter()
            .map(|d| format!("{} [{}]", d.target, d.link))
            .collect();
        println!("  {origin} -> {}", targets.join(", "));
    }
    println!("destinations:");
    for destination in qunbridge::describe::destinations(&config, &routes) {
        println!(
            "  {} ({}) via link {:?}",
            destination.target, destination.platform, destination.link
        );
        for line in &destination.lines {
            println!("    {line}");
        }
    }
    ExitCode::SUCCESS
}

/// `[moderation.wave]` for `check`: off, or what makes a wave and what it gets.
fn describe_waves(wave: Option<&qunbridge::moderation::wave::WaveSpec>) -> String {
    let Some(wave) = wave else {
        return "off".to_owned();
    };
    let tests: Vec<String> = [
        (wave.groups, "groups"),
        (wave.senders, "senders"),
        (wave.repeats, "repeats"),
    ]
    .into_iter()
    .filter(|(count, _)| *count > 0)
    .map(|(count, what)| format!("{count} {what}"))
    .collect();
    let tests = match tests.split_last() {
        Some((last, first)) if !first.is_empty() => format!("{} or {last}", first.join(", ")),
        _ => tests.join(""),
    };
    format!(
        "{tests} within {} (texts of {}+ characters) -> {}",
        humantime::format_duration(wave.window),
        wave.min_chars,
        wave.action.as_str()
    )
}

/// `qunbridge run`.
fn run_daemon(path: &Path, grace: Duration, chosen: RunOptions) -> ExitCode {
    let config = match load(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    // One async thread. The relay's work is short steps between sockets, the broker's router
    // and the store's writer, which have threads of their own; a second worker thread only
    // added hand-offs between the two (measured in docs/BENCHMARKS.md, issue 14 session 15:
    // about 10 % less CPU per message at the same throughput). Nothing on it blocks for
    // long: store reads are short read transactions, and slow file work runs on tokio's
    // blocking pool.
    let runtime = match async_runtime(tokio::runtime::Builder::new_current_thread()) {
        Ok(runtime) => runtime,
        Err(code) => return code,
    };
    info!(message = "Starting qunbridge.", version = env!("CARGO_PKG_VERSION"), config = %path.display());
    let (reload_tx, reload_rx) = tokio::sync::mpsc::channel(1);
    let options = RunOptions {
        grace,
        on_lifecycle: Some(std::sync::Arc::new(notify_systemd)),
        reload: Some(qunbridge::Reload {
            path: path.to_path_buf(),
            requests: reload_rx,
        }),
        ..chosen
    };
    let outcome = runtime.block_on(async {
        let watchdog = sd_notify::watchdog_enabled().map(|every| tokio::spawn(watchdog(every)));
        let hangups = tokio::spawn(forward_hangups(reload_tx));
        let outcome = run(config, shutdown_signal(), options).await;
        if let Some(watchdog) = watchdog {
            watchdog.abort();
        }
        hangups.abort();
        outcome
    });
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

/// Tells systemd (`Type=notify`) about start-up and shutdown; does nothing when the process
/// was not started with `NOTIFY_SOCKET`.
fn notify_systemd(point: Lifecycle) {
    let state: &[NotifyState] = match point {
        Lifecycle::Ready => &[NotifyState::Ready, NotifyState::Status("running")],
        Lifecycle::Stopping => &[
            NotifyState::Stopping,
            NotifyState::Status("finishing in-flight messages"),
        ],
    };
    // The send is a blocking syscall: a notify socket nobody reads must never stall the relay,
    // so it happens on a thread of its own.
    std::thread::spawn(move || {
        if let Err(error) = sd_notify::notify(state) {
            warn!(message = "Cannot notify systemd.", ?point, %error);
        }
    });
}

/// Sends `WATCHDOG=1` at half the interval systemd asked for (`WATCHDOG_USEC`), from a task
/// on the daemon's runtime, so a runtime that stops scheduling work gets the service
/// restarted.
async fn watchdog(interval: Duration) {
    let mut ticks = tokio::time::interval(interval / 2);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        // A blocking syscall: it runs on the blocking pool, and a ping still stuck (nobody
        // reads the socket) delays the next one instead of a runtime worker.
        let ping = tokio::task::spawn_blocking(|| sd_notify::notify(&[NotifyState::Watchdog]));
        if let Ok(Err(error)) = ping.await {
            warn!(message = "Cannot send the systemd watchdog ping.", %error);
        }
    }
}

/// Turns every SIGHUP into a reload request (a request already waiting absorbs the next).
async fn forward_hangups(requests: tokio::sync::mpsc::Sender<()>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            return;
        };
        while hangups.recv().await.is_some() {
            info!(message = "SIGHUP received; reloading the config.");
            let _ = requests.try_send(());
        }
    }
    #[cfg(not(unix))]
    drop(requests);
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

/// Builds the async runtime from `builder` (one thread for `status`, all cores for `run`); a
/// failure is said on stderr and exits 1.
fn async_runtime(
    mut builder: tokio::runtime::Builder,
) -> Result<tokio::runtime::Runtime, ExitCode> {
    builder.enable_all().build().map_err(|error| {
        eprintln!("qunbridge: cannot start the async runtime: {error}");
        ExitCode::FAILURE
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_records_are_built_up_to_the_most_verbose_level_the_filter_shows() {
        let level = |spec: &str| log_level(EnvFilter::new(spec).max_level_hint());
        assert_eq!(level("info,rumqttd=warn"), log::LevelFilter::Info);
        assert_eq!(level("warn"), log::LevelFilter::Warn);
        // A dependency asked for by name at trace still gets its records built.
        assert_eq!(level("warn,tungstenite=trace"), log::LevelFilter::Trace);
        assert_eq!(level("off"), log::LevelFilter::Off);
    }
}
