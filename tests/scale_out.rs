//! Scale-out (ARCHITECTURE.md §9) on one machine: a mosquitto and a Redis started by the
//! test, two relay-core processes sharing the inbound topics, one connector process. A stream
//! of messages posted to an `api` group reaches the linked group exactly once each, also when
//! one core is killed with SIGKILL in the middle (the other takes its session over). A second
//! connector process for the same account is refused. With moderation on, the cores count
//! floods and spam waves together in Redis: a member's flood limit and a wave's thresholds
//! hold in total, not per core.

use std::net::SocketAddr;
use std::time::Duration;

use qunbridge_tests::process::DaemonProcess;
use qunbridge_tests::stream::{
    assert_exactly_once, follow_texts, post_marker, post_until_accepted, settle, Consumer,
};
use qunbridge_tests::{free_port, post_message, qunbridge_binary, Mosquitto, Redis};
use rand::Rng;

/// Messages in the stream (`FAULT_MESSAGES` overrides, as for the fault tests).
fn stream_length() -> usize {
    std::env::var("FAULT_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// The deployment's config: every process reads the same file.
fn config(mosquitto: &Mosquitto, redis: &Redis, src: SocketAddr, dst: SocketAddr) -> String {
    format!(
        r#"[broker]
url = "mqtt://127.0.0.1:{port}"

[store]
redis = "{redis}"

[accounts.src]
platform = "api"
listen = "{src}"

[accounts.dst]
platform = "api"
listen = "{dst}"

[[links]]
name = "stream"
groups = ["src:g", "dst:g"]
"#,
        port = mosquitto.port,
        redis = redis.url()
    )
}

/// Two core processes (`core-a`, `core-b`) and one connector process (`conn-1`) on `config`,
/// each in its own directory of `dirs`.
async fn scaled_out(
    dirs: &[tempfile::TempDir],
    config: &str,
) -> (DaemonProcess, DaemonProcess, DaemonProcess) {
    let first_core = DaemonProcess::start_with(
        dirs[0].path(),
        config,
        &["--role", "core", "--instance", "core-a"],
    )
    .await;
    let second_core = DaemonProcess::start_with(
        dirs[1].path(),
        config,
        &["--role", "core", "--instance", "core-b"],
    )
    .await;
    let connectors = DaemonProcess::start_with(
        dirs[2].path(),
        config,
        &["--role", "connectors", "--instance", "conn-1"],
    )
    .await;
    (first_core, second_core, connectors)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_cores_one_killed_mid_stream_deliver_every_message_once() {
    let count = stream_length();
    let mosquitto = Mosquitto::start().await;
    let redis = Redis::start().await;
    let (src, dst) = (local(), local());
    let text = config(&mosquitto, &redis, src, dst);
    let dirs: Vec<tempfile::TempDir> = (0..4)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let (mut first_core, mut second_core, mut connectors) = scaled_out(&dirs, &text).await;

    // A second connector process for the same accounts is refused.
    std::fs::write(
        dirs[3].path().join("q.toml"),
        format!(
            "state_dir = {:?}\n{text}\n[admin]\nlisten = \"{}\"\n",
            dirs[3].path().join("state"),
            local()
        ),
    )
    .expect("config");
    let refused = std::process::Command::new(qunbridge_binary())
        .args(["run", "-c"])
        .arg(dirs[3].path().join("q.toml"))
        .args([
            "--role",
            "connectors",
            "--instance",
            "conn-2",
            "--accounts",
            "dst",
        ])
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("account `dst` already runs in qunbridge instance `conn-1`"),
        "{stderr}"
    );

    let consumer = Consumer::start(dst).await;
    let kill_at = rand::rng().random_range(count / 4..count * 3 / 4).max(1);
    let client = reqwest::Client::new();
    for n in 1..=count {
        post_until_accepted(&client, src, n).await;
        if n == kill_at {
            first_core.kill();
        }
    }
    post_marker(&client, src, count).await;
    let seen = settle(|| consumer.seen(), count).await;
    println!("core-a killed after message {kill_at}");
    assert_exactly_once("api dst:g", &seen, count);
    connectors.stop();
    second_core.stop();
}

/// The group-health row of today for `alias`, as a process of the deployment reports it.
async fn stats_row(admin: SocketAddr, alias: &str) -> serde_json::Value {
    let report: serde_json::Value = reqwest::get(format!(
        "http://{admin}/api/v1/stats?group={}",
        alias.replace('#', "%23")
    ))
    .await
    .expect("stats answer")
    .json()
    .await
    .expect("stats JSON");
    report["groups"][0]["periods"]
        .as_array()
        .and_then(|periods| periods.last())
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_health_adds_up_across_a_core_takeover_on_the_shared_store() {
    let count = 200;
    let mosquitto = Mosquitto::start().await;
    let redis = Redis::start().await;
    let (src, dst) = (local(), local());
    let text = config(&mosquitto, &redis, src, dst);
    let dirs: Vec<tempfile::TempDir> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let (mut first_core, mut second_core, mut connectors) = scaled_out(&dirs, &text).await;
    let consumer = Consumer::start(dst).await;
    let client = reqwest::Client::new();
    for n in 1..=count {
        post_until_accepted(&client, src, n).await;
        if n == count / 2 {
            // core-a stops (as systemd stops it); core-b takes its share over.
            first_core.stop();
        }
    }
    post_marker(&client, src, count).await;
    let seen = settle(|| consumer.seen(), count).await;
    assert_exactly_once("api dst:g", &seen, count);

    // Every message counted once in src:g (the marker too), by whichever core relayed it,
    // all from one member: both cores made the same digest (the key is kept in Redis); and
    // every copy counted as relayed into dst:g by the connector process.
    let deadline = tokio::time::Instant::now() + qunbridge_tests::PATIENCE;
    loop {
        let source = stats_row(second_core.admin, "src#1").await;
        let destination = stats_row(connectors.admin, "dst#1").await;
        if source["messages"] == count + 1 && destination["relayed_in"] == count + 1 {
            assert_eq!(source["active_senders"], 1, "one member: {source}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "source {source}, destination {destination}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    connectors.stop();
    second_core.stop();
}

/// Copies of the ad in the wave test, each posted in a group of its own by a member of its
/// own.
const WAVE_COPIES: usize = 10;

/// The deployment's config with moderation on: the issue's flood limit, waves with the
/// default thresholds (3 groups, members or repeats within a minute), and `src:w01` …
/// `src:w10` each relayed one way to `dst:g`.
fn moderated_config(
    mosquitto: &Mosquitto,
    redis: &Redis,
    src: SocketAddr,
    dst: SocketAddr,
) -> String {
    let mut text = config(mosquitto, redis, src, dst);
    for n in 1..=WAVE_COPIES {
        text.push_str(&format!(
            "\n[[links]]\nname = \"w{n:02}\"\ngroups = [\"src:w{n:02}\"]\nto = [\"dst:g\"]\n"
        ));
    }
    text.push_str(
        "\n[moderation.flood]\nper_sender = \"5/10s\"\nburst = 5\n\n[moderation.wave]\nwindow = \"1m\"\n",
    );
    text
}

/// Every text that reaches `dst:g`, read over Server-Sent Events and kept concatenated (egress
/// may coalesce messages into one send).
struct Arrivals {
    /// The texts so far, a line each.
    text: std::sync::Arc<std::sync::Mutex<String>>,
    /// The reading task.
    task: tokio::task::JoinHandle<()>,
}

impl Arrivals {
    /// Connects (waiting for the connector process) and starts reading.
    async fn start(api: SocketAddr) -> Arrivals {
        let text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let kept = text.clone();
        let task = follow_texts(api, move |said| {
            let mut text = kept.lock().expect("lock");
            text.push_str(said);
            text.push('\n');
        })
        .await;
        Arrivals { text, task }
    }

    /// Everything that arrived so far.
    fn text(&self) -> String {
        self.text.lock().expect("lock").clone()
    }

    /// Waits until every one of `needles` arrived (at most 30 s), then a second longer, so
    /// that anything else on its way arrives too; returns everything that arrived.
    async fn wait_for(&self, needles: &[String]) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let text = self.text();
            let missing: Vec<&String> = needles.iter().filter(|n| !text.contains(*n)).collect();
            if missing.is_empty() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{missing:?} never arrived; arrived:\n{text}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.text()
    }
}

impl Drop for Arrivals {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Posts `text` by `sender` to `src:<group>`, expecting 202.
async fn say(src: SocketAddr, group: &str, sender: &str, text: &str) {
    let (status, body) = post_message(
        src,
        group,
        serde_json::json!({"sender": {"id": sender, "name": sender}, "text": text}),
        None,
    )
    .await;
    assert_eq!(status, 202, "{body}");
}

/// The series a core reports, from its `/metrics`.
async fn series(core: &DaemonProcess, name: &str) -> f64 {
    qunbridge_tests::metrics::counter(&core.metrics().await, name)
}

/// What a core judged of the messages to `dst:g` (the one destination of every message
/// here): relayed there, kept back as a flood, kept back as a wave.
async fn judged(core: &DaemonProcess) -> [f64; 3] {
    [
        series(
            core,
            r#"qunbridge_messages_relayed_total{from="api",to="api"}"#,
        )
        .await,
        series(
            core,
            r#"qunbridge_moderation_hits_total{rule="flood",action="drop",platform="api"}"#,
        )
        .await,
        series(
            core,
            r#"qunbridge_moderation_hits_total{rule="wave",action="drop",platform="api"}"#,
        )
        .await,
    ]
}

/// Waits until the cores together judged `count` more messages than `before` (each core's
/// [`judged`]), at most 30 s; returns each core's figures.
async fn until_judged(
    cores: [&DaemonProcess; 2],
    before: &[[f64; 3]],
    count: f64,
) -> Vec<[f64; 3]> {
    let total = |figures: &[[f64; 3]]| -> f64 { figures.iter().flatten().sum() };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut now = Vec::new();
        for core in cores {
            now.push(judged(core).await);
        }
        if total(&now) - total(before) >= count {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {count} messages judged: {now:?}",
            total(&now) - total(before)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flood_limits_and_spam_waves_hold_in_total_across_two_cores() {
    let mosquitto = Mosquitto::start().await;
    let redis = Redis::start().await;
    let (src, dst) = (local(), local());
    let text = moderated_config(&mosquitto, &redis, src, dst);
    let dirs: Vec<tempfile::TempDir> = (0..3)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let (mut first_core, mut second_core, mut connectors) = scaled_out(&dirs, &text).await;
    let arrivals = Arrivals::start(dst).await;
    let cores = [&first_core, &second_core];
    let names = ["core-a", "core-b"];
    let start = until_judged(cores, &[[0.0; 3]; 2], 0.0).await;

    // Flood: ten messages from one member within a second, shared out between the cores,
    // then a calm member's message.
    for n in 1..=10 {
        say(src, "g", "flooder", &format!("flood-{n:02}")).await;
    }
    say(src, "g", "calm", "calm-after-the-flood").await;
    let after_flood = until_judged(cores, &start, 11.0).await;
    for (name, ([relayed, flood, _], [relayed_before, flood_before, _])) in
        names.iter().zip(after_flood.iter().zip(&start))
    {
        let (relayed, flood) = (relayed - relayed_before, flood - flood_before);
        println!("{name}: relayed {relayed}, kept back as a flood {flood}");
        assert!(relayed + flood >= 1.0, "{name} judged none of them");
    }
    let kept_back: f64 = after_flood.iter().map(|[_, flood, _]| flood).sum();
    assert_eq!(kept_back, 5.0, "five kept back in total: {after_flood:?}");
    // Any five may be the ones let through (the cores judge at the same time): wait for the
    // calm message and then count.
    let arrived = arrivals
        .wait_for(&["calm-after-the-flood".to_owned()])
        .await;
    let through: Vec<usize> = (1..=10)
        .filter(|n| arrived.contains(&format!("flood-{n:02}")))
        .collect();
    assert_eq!(
        through.len(),
        5,
        "the limit holds in total: {through:?} arrived:\n{arrived}"
    );

    // A wave: one ad (varied by its link's query) in ten groups from ten members. The first
    // two copies are relayed (each waited for, so they are counted before the next); the
    // third group makes the wave, whichever core sees it, and no later copy arrives.
    let ad = |n: usize| format!("兼职刷单日结三百 加微信详询 https://ad.example.com/p?c={n:02}");
    for n in 1..=2 {
        say(src, &format!("w{n:02}"), &format!("member-{n}"), &ad(n)).await;
        arrivals.wait_for(&[format!("c={n:02}")]).await;
    }
    for n in 3..=WAVE_COPIES {
        say(src, &format!("w{n:02}"), &format!("member-{n}"), &ad(n)).await;
    }
    say(src, "g", "calm", "calm-after-the-wave").await;
    let after_wave = until_judged(cores, &after_flood, (WAVE_COPIES + 1) as f64).await;
    let arrived = arrivals.wait_for(&["calm-after-the-wave".to_owned()]).await;
    let copies: Vec<usize> = (1..=WAVE_COPIES)
        .filter(|n| arrived.contains(&format!("c={n:02}")))
        .collect();
    assert_eq!(copies, [1, 2], "copies that arrived:\n{arrived}");
    let mut waves = 0.0;
    for ((name, core), ([relayed, _, wave], [relayed_before, _, wave_before])) in names
        .iter()
        .zip(cores)
        .zip(after_wave.iter().zip(&after_flood))
    {
        let (relayed, wave) = (relayed - relayed_before, wave - wave_before);
        println!("{name}: relayed {relayed}, kept back as a wave {wave}");
        assert!(relayed + wave >= 1.0, "{name} judged none of the copies");
        waves += series(core, "qunbridge_moderation_waves_total").await;
    }
    assert_eq!(waves, 1.0, "one wave, counted once over both cores");
    let kept_back: f64 = after_wave.iter().map(|[_, _, wave]| wave).sum();
    assert_eq!(
        kept_back,
        (WAVE_COPIES - 2) as f64,
        "every later copy kept back: {after_wave:?}"
    );

    connectors.stop();
    first_core.stop();
    second_core.stop();
}
