//! Scale-out (ARCHITECTURE.md §9) on one machine: a mosquitto and a Redis started by the
//! test, two relay-core processes sharing the inbound topics, one connector process. A stream
//! of messages posted to an `api` group reaches the linked group exactly once each, also when
//! one core is killed with SIGKILL in the middle (the other takes its session over). A second
//! connector process for the same account is refused.

use std::net::SocketAddr;

use qunbridge_tests::process::DaemonProcess;
use qunbridge_tests::stream::{
    assert_exactly_once, post_marker, post_until_accepted, settle, Consumer,
};
use qunbridge_tests::{free_port, qunbridge_binary, Mosquitto, Redis};
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
