//! Delivery through faults (ARCHITECTURE.md §4), end to end with the daemon as a separate
//! process on a mosquitto with persistence that the test starts: a stream of messages is
//! posted to an `api` group one by one (each retried with its client id until the daemon
//! answers 202), and every destination must get every message exactly once, in order, while
//! (a) the daemon is killed with SIGKILL and restarted, (b) the broker is restarted, (c) a
//! OneBot implementation drops its socket.
//!
//! `FAULT_MESSAGES` sets the stream length (default 1000). To repeat a scenario, run the test
//! in a loop (see docs/operations.md, "Delivery guarantees and the state store").
//!
//! Destinations: an `api` group read over SSE by a consumer that reconnects with
//! `Last-Event-ID` whenever the stream breaks, and in (b) and (c) a QQ group through OneBot
//! v11. Under `kill -9` only the `api` destination is checked for exactly-once: a OneBot send
//! has no idempotency key, so a crash after the implementation answered and before the send
//! log was committed (about a millisecond) makes the redelivered message go out again; the
//! docs/operations.md says so.

use std::net::SocketAddr;

use qunbridge_tests::onebot11_peer::OneBot11Peer;
use qunbridge_tests::process::DaemonProcess;
use qunbridge_tests::stream::{
    assert_exactly_once_in_order, number_in, post_marker, post_until_accepted, settle, Consumer,
};
use qunbridge_tests::{free_port, Mosquitto};
use rand::Rng;

/// The bot's QQ number.
const BOT: i64 = 2854196310;
/// The QQ group linked with the api groups.
const QQ_GROUP: i64 = 735021844;

/// Messages per stream.
fn stream_length() -> usize {
    std::env::var("FAULT_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

/// `api` account `src` (where messages are posted, group `g`) linked with `api` account
/// `dst` (group `g`) and, when `qq_url` is given, QQ group 735021844.
fn config(mosquitto: &Mosquitto, src: SocketAddr, dst: SocketAddr, qq_url: Option<&str>) -> String {
    let (qq_account, qq_member) = match qq_url {
        Some(url) => (
            format!(
                "[accounts.qq]\nplatform = \"qq\"\nurl = \"{url}\"\n\
                 [limits.qq]\nper_group = \"off\"\nper_account = \"off\"\n"
            ),
            format!(", \"qq:{QQ_GROUP}\""),
        ),
        None => (String::new(), String::new()),
    };
    format!(
        r#"[broker]
url = "mqtt://127.0.0.1:{port}"

[accounts.src]
platform = "api"
listen = "{src}"

[accounts.dst]
platform = "api"
listen = "{dst}"

{qq_account}
[[links]]
name = "stream"
groups = ["src:g", "dst:g"{qq_member}]
"#,
        port = mosquitto.port
    )
}

fn local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// The message numbers the QQ group got, in order.
fn qq_numbers(peer: &OneBot11Peer) -> Vec<usize> {
    peer.sent_texts()
        .iter()
        .filter_map(|text| number_in(text))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_then_restart_loses_and_doubles_nothing() {
    let count = stream_length();
    let mut mosquitto = Mosquitto::start_persistent().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (src, dst) = (local(), local());
    let mut daemon = DaemonProcess::start(dir.path(), &config(&mosquitto, src, dst, None)).await;
    let consumer = Consumer::start(dst).await;
    let kill_at = rand::rng().random_range(count / 4..count * 3 / 4).max(1);
    let client = reqwest::Client::new();
    for n in 1..=count {
        post_until_accepted(&client, src, n).await;
        if n == kill_at {
            daemon.restart().await;
        }
    }
    post_marker(&client, src, count).await;
    let seen = settle(|| consumer.seen(), count).await;
    println!("killed after message {kill_at}");
    assert_exactly_once_in_order("api dst:g", &seen, count);
    daemon.stop();
    // The broker keeps nothing for the daemon that it should not.
    mosquitto.restart().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_mid_stream_loses_and_doubles_nothing() {
    let count = stream_length();
    let mut mosquitto = Mosquitto::start_persistent().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (peer, url) = OneBot11Peer::serve(BOT, None, 0).await;
    let (src, dst) = (local(), local());
    let mut daemon =
        DaemonProcess::start(dir.path(), &config(&mosquitto, src, dst, Some(&url))).await;
    peer.wait_connections(1).await;
    let consumer = Consumer::start(dst).await;
    let restart_at = rand::rng().random_range(count / 4..count * 3 / 4).max(1);
    let client = reqwest::Client::new();
    for n in 1..=count {
        post_until_accepted(&client, src, n).await;
        if n == restart_at {
            mosquitto.restart().await;
        }
    }
    post_marker(&client, src, count).await;
    let seen = settle(|| consumer.seen(), count).await;
    let qq = settle(|| qq_numbers(&peer), count).await;
    println!("broker restarted after message {restart_at}");
    assert_exactly_once_in_order("api dst:g", &seen, count);
    assert_exactly_once_in_order("qq group", &qq, count);
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_dropping_its_socket_mid_stream_loses_and_doubles_nothing() {
    let count = stream_length();
    let mosquitto = Mosquitto::start_persistent().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (peer, url) = OneBot11Peer::serve(BOT, None, 0).await;
    let (src, dst) = (local(), local());
    let mut daemon =
        DaemonProcess::start(dir.path(), &config(&mosquitto, src, dst, Some(&url))).await;
    peer.wait_connections(1).await;
    let consumer = Consumer::start(dst).await;
    let drop_at = rand::rng().random_range(count / 4..count * 3 / 4).max(1);
    peer.drop_after_sends(drop_at as u32);
    let client = reqwest::Client::new();
    for n in 1..=count {
        post_until_accepted(&client, src, n).await;
    }
    post_marker(&client, src, count).await;
    let seen = settle(|| consumer.seen(), count).await;
    let qq = settle(|| qq_numbers(&peer), count).await;
    println!("peer dropped its socket after send {drop_at}");
    assert!(
        peer.connections() >= 2,
        "the peer dropped its socket and the daemon reconnected"
    );
    assert_exactly_once_in_order("api dst:g", &seen, count);
    assert_exactly_once_in_order("qq group", &qq, count);
    daemon.stop();
}
