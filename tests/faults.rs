//! Delivery through faults (ARCHITECTURE.md §4), end to end with the daemon as a separate
//! process on a mosquitto with persistence that the test starts: a stream of messages is
//! posted to an `api` group one by one (each retried with its client id until the daemon
//! answers 202), and every destination must get every message exactly once, in order, while
//! (a) the daemon is killed with SIGKILL and restarted, (b) the broker is restarted, (c) a
//! OneBot implementation drops its socket.
//!
//! `FAULT_MESSAGES` sets the stream length (default 1000). To repeat a scenario, run the test
//! in a loop (see README, "Delivery guarantees").
//!
//! Destinations: an `api` group read over SSE by a consumer that reconnects with
//! `Last-Event-ID` whenever the stream breaks, and in (b) and (c) a QQ group through OneBot
//! v11. Under `kill -9` only the `api` destination is checked for exactly-once: a OneBot send
//! has no idempotency key, so a crash after the implementation answered and before the send
//! log was committed (about a millisecond) makes the redelivered message go out again; the
//! README says so.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use qunbridge_tests::onebot11_peer::OneBot11Peer;
use qunbridge_tests::process::DaemonProcess;
use qunbridge_tests::{free_port, Mosquitto, SseClient};
use rand::Rng;
use serde_json::json;

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

/// Posts message `n` until the daemon answers 202 (the same client id each time, so a post
/// whose answer was lost is not relayed twice).
async fn post_until_accepted(client: &reqwest::Client, api: SocketAddr, n: usize) {
    let body = json!({"id": format!("m{n:05}"), "sender": {"id": "u1", "name": "Ann"},
                      "text": format!("n{n:05}")});
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let answer = client
            .post(format!("http://{api}/api/v1/groups/g/messages"))
            .json(&body)
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if answer.is_ok_and(|a| a.status() == 202) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "message {n} never accepted"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// An SSE consumer of `dst:g` that reconnects with `Last-Event-ID` whenever the stream
/// breaks; collects the message numbers it reads.
struct Consumer {
    /// Numbers in arrival order.
    seen: Arc<Mutex<Vec<usize>>>,
    /// The reading task.
    task: tokio::task::JoinHandle<()>,
}

impl Consumer {
    /// Connects (waiting for the daemon) and starts reading.
    async fn start(api: SocketAddr) -> Consumer {
        let url = format!("http://{api}/api/v1/groups/g/events");
        let mut first = None;
        while first.is_none() {
            first = SseClient::try_open(&url, None).await;
        }
        let seen = Arc::new(Mutex::new(Vec::new()));
        let collected = seen.clone();
        let task = tokio::spawn(async move {
            let mut stream = first;
            let mut last_id: Option<String> = None;
            loop {
                let Some(client) = stream.as_mut() else {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                    stream = SseClient::try_open(&url, last_id.as_deref()).await;
                    continue;
                };
                match client.next_within(Duration::from_secs(2)).await {
                    Some(event) => {
                        if let Some(id) = event.id.clone() {
                            last_id = Some(id);
                        }
                        let text = event.json()["text"].as_str().unwrap_or_default().to_owned();
                        if let Some(n) = number_in(&text) {
                            collected.lock().expect("lock").push(n);
                        }
                    }
                    // Ended, broke, or quiet: reconnect where it left off.
                    None => stream = None,
                }
            }
        });
        Consumer { seen, task }
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The message number in a relayed text (`… n00042`).
fn number_in(text: &str) -> Option<usize> {
    text.rsplit(|c: char| c.is_whitespace())
        .next()?
        .strip_prefix('n')?
        .parse()
        .ok()
}

/// Waits until `seen` holds `count` numbers (and a little longer, for any duplicate still on
/// its way), or 60 s.
async fn settle(seen: impl Fn() -> Vec<usize>, count: usize) -> Vec<usize> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while seen().len() < count && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    seen()
}

/// Fails unless `seen` is exactly 1..=count; the message says how many were lost, doubled
/// and out of order.
fn assert_exactly_once_in_order(destination: &str, seen: &[usize], count: usize) {
    let mut times = vec![0usize; count + 1];
    for &n in seen {
        if n <= count {
            times[n] += 1;
        }
    }
    let lost: Vec<usize> = (1..=count).filter(|&n| times[n] == 0).collect();
    let doubled: Vec<usize> = (1..=count).filter(|&n| times[n] > 1).collect();
    let out_of_order = seen.windows(2).filter(|w| w[1] <= w[0]).count();
    println!(
        "{destination}: {} received, {} lost, {} duplicated, {} out of order",
        seen.len(),
        lost.len(),
        doubled.len(),
        out_of_order
    );
    assert!(
        lost.is_empty() && doubled.is_empty() && out_of_order == 0 && seen.len() == count,
        "{destination}: lost {lost:?}, duplicated {doubled:?}, {out_of_order} out of order"
    );
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
    let seen = settle(|| consumer.seen.lock().expect("lock").clone(), count).await;
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
    let seen = settle(|| consumer.seen.lock().expect("lock").clone(), count).await;
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
    let seen = settle(|| consumer.seen.lock().expect("lock").clone(), count).await;
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
