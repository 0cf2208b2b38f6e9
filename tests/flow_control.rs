//! Flow control and the durable outbox, end to end on the real daemon (ARCHITECTURE.md §4):
//! an `api` POST answered 202 is delivered exactly once even when input outruns a
//! destination far beyond what the embedded broker's log holds (the rest is refused with 503
//! and `Retry-After`), a destination waiting for its rate limit never holds another group of
//! the same account, what waits for it survives `kill -9`, and a reload that changes its limit
//! applies to what already waits.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use qunbridge_tests::process::DaemonProcess;
use qunbridge_tests::{free_port, post_message, Broker, Daemon, SseClient};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A free loopback address for an `api` listener.
fn api_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// What a consumer of one group's feed received: (envelope id, text, SSE event id) in arrival
/// order.
type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

/// Follows a group's SSE feed (resuming after `last_event_id`), recording every event.
async fn follow(
    api: SocketAddr,
    group: &str,
    last_event_id: Option<&str>,
) -> (Seen, JoinHandle<()>) {
    let url = format!("http://{api}/api/v1/groups/{group}/events");
    let mut events = SseClient::open(&url, last_event_id, None).await;
    let seen: Seen = Arc::default();
    let record = seen.clone();
    let task = tokio::spawn(async move {
        while let Some(event) = events.next_within(Duration::from_secs(3600)).await {
            let message = event.json();
            let id = message["id"].as_str().unwrap_or_default().to_owned();
            let text = message["text"].as_str().unwrap_or_default().to_owned();
            let event_id = event.id.clone().unwrap_or_default();
            record.lock().expect("lock").push((id, text, event_id));
        }
    });
    (seen, task)
}

/// Waits until `seen` holds at least `count` events (or the patience runs out).
async fn wait_for(seen: &Seen, count: usize, patience: Duration) -> Vec<(String, String, String)> {
    let deadline = Instant::now() + patience;
    loop {
        let now = seen.lock().expect("lock").clone();
        if now.len() >= count || Instant::now() > deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How POSTs at saturation ended.
#[derive(Default)]
struct Outcome {
    /// Envelope ids of the POSTs answered 202.
    accepted: Vec<String>,
    /// POSTs answered 503 with a `Retry-After` header.
    refused: usize,
    /// Any other answer (status and body), which the test reports.
    other: Vec<String>,
}

/// Posts `count` messages of `size` bytes to `group` over `connections` connections, back to
/// back, never retrying a refusal.
async fn saturate(
    api: SocketAddr,
    group: &str,
    count: usize,
    size: usize,
    connections: usize,
) -> Outcome {
    let outcome = Arc::new(Mutex::new(Outcome::default()));
    let mut posters = Vec::new();
    for connection in 0..connections {
        let outcome = outcome.clone();
        let url = format!("http://{api}/api/v1/groups/{group}/messages");
        posters.push(tokio::spawn(async move {
            let client = reqwest::Client::new();
            for n in (connection..count).step_by(connections) {
                let text = format!("m{n} {}", "x".repeat(size));
                let response = client
                    .post(&url)
                    .json(&json!({"sender": {"id": "u1"}, "text": text}))
                    .send()
                    .await
                    .expect("POST answered");
                let status = response.status().as_u16();
                let retry_after = response.headers().contains_key("retry-after");
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                let mut outcome = outcome.lock().expect("lock");
                match (status, retry_after) {
                    (202, _) => outcome
                        .accepted
                        .push(body["id"].as_str().unwrap_or_default().to_owned()),
                    (503, true) => outcome.refused += 1,
                    _ => outcome.other.push(format!("{status} {body}")),
                }
            }
        }));
    }
    for poster in posters {
        poster.await.expect("poster");
    }
    let mut done = outcome.lock().expect("lock");
    std::mem::take(&mut *done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_post_arrives_once_when_input_outruns_a_slow_destination() {
    let broker = Broker::embedded();
    let api = api_addr();
    // 220 messages of 64 KB (14 MB) toward a destination that takes one a minute: more than
    // three times what the embedded broker keeps per topic filter (4 MB), and more than the outbox,
    // the two broker hops and the HTTP wait can hold together, so some POSTs must be refused.
    let config = |limit: &str| {
        format!(
            r#"{broker}
[accounts.hub]
platform = "api"
listen = "{api}"

[limits.hub.groups.b]
{limit}

[[links]]
name = "flood"
groups = ["hub:a", "hub:b"]
format = ""
"#,
            broker = broker.toml()
        )
    };
    let daemon = Daemon::start_alone(&config("per_group = \"1/min\"\nburst = 1")).await;
    let lost = "qunbridge_broker_messages_lost_total";
    let lost_before = daemon.counter(lost).await;
    let rejected = "qunbridge_ingress_rejected_total{account=\"hub\",reason=\"busy\"}";
    let rejected_before = daemon.counter(rejected).await;
    let (seen, consumer) = follow(api, "b", None).await;

    let outcome = saturate(api, "a", 220, 64 * 1024, 8).await;
    assert!(
        outcome.other.is_empty(),
        "unexpected answers: {:?}",
        &outcome.other[..outcome.other.len().min(3)]
    );
    println!(
        "accepted {}, refused with 503 {}",
        outcome.accepted.len(),
        outcome.refused
    );
    assert!(
        outcome.refused > 0,
        "input outran the destination: some POSTs must be refused (503 with Retry-After)"
    );
    assert_eq!(
        daemon.counter(rejected).await - rejected_before,
        outcome.refused as f64,
        "every refusal is counted"
    );
    // Lift the limit: everything accepted goes out.
    daemon.reload(&config("per_group = \"off\"")).await;
    let accepted = outcome.accepted.len();
    wait_for(&seen, accepted, Duration::from_secs(120)).await;
    // Anything arriving twice would come right after.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let arrived = seen.lock().expect("lock").clone();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for (id, _, _) in &arrived {
        *counts.entry(id.as_str()).or_default() += 1;
    }
    let missing = outcome
        .accepted
        .iter()
        .filter(|id| !counts.contains_key(id.as_str()))
        .count();
    let doubled = counts.values().filter(|n| **n > 1).count();
    assert_eq!(
        missing, 0,
        "accepted but never delivered: {missing} of {accepted}"
    );
    assert_eq!(doubled, 0, "delivered twice: {doubled}");
    assert_eq!(
        arrived.len(),
        accepted,
        "nothing but what was accepted arrived"
    );
    assert_eq!(
        daemon.counter(lost).await - lost_before,
        0.0,
        "the embedded broker skipped nothing"
    );
    let reconnects = daemon
        .metrics()
        .await
        .lines()
        .filter(|line| line.starts_with("qunbridge_reconnects_total{account=\"mqtt:"))
        .map(str::to_owned)
        .collect::<Vec<_>>();
    assert!(
        reconnects.is_empty(),
        "broker connections reconnected: {reconnects:?}"
    );
    consumer.abort();
    daemon.stop().await.expect("clean stop");
}

/// An `api` account with two links into it: `s1` → `slow` (limited to `slow_limit`) and
/// `f1` → `fast` (unlimited).
fn two_destinations(broker: &str, api: SocketAddr, slow_limit: &str) -> String {
    format!(
        r#"{broker}
[accounts.hub]
platform = "api"
listen = "{api}"

[limits.hub.groups.slow]
{slow_limit}

[[links]]
name = "slow"
groups = ["hub:s1", "hub:slow"]
format = ""

[[links]]
name = "fast"
groups = ["hub:f1", "hub:fast"]
format = ""
"#
    )
}

/// Posts `m0` … `m<count-1>` to `group`, each until accepted.
async fn post_numbered(api: SocketAddr, group: &str, count: usize) {
    for n in 0..count {
        let (status, body) = post_message(
            api,
            group,
            json!({"sender": {"id": "u1"}, "text": format!("m{n}")}),
            None,
        )
        .await;
        assert_eq!(status, 202, "m{n}: {body}");
    }
}

/// The value of `qunbridge_queue_depth{account="hub"}` in a scrape.
fn queue_depth(metrics: &str) -> f64 {
    metrics
        .lines()
        .find(|line| line.starts_with("qunbridge_queue_depth{account=\"hub\"}"))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0.0)
}

/// 500 messages wait for a destination limited to one a minute; a message to another group
/// of the same account is delivered within 100 ms; after `kill -9` and a restart that lifts
/// the limit, the 500 are delivered exactly once, in order.
async fn a_waiting_destination_holds_nothing_and_survives_kill_9(broker: Broker) {
    let dir = tempfile::tempdir().expect("tempdir");
    let api = api_addr();
    let limited = "per_group = \"1/min\"\nburst = 1";
    let mut daemon =
        DaemonProcess::start(dir.path(), &two_destinations(&broker.toml(), api, limited)).await;
    let (slow, slow_consumer) = follow(api, "slow", None).await;
    let (fast, fast_consumer) = follow(api, "fast", None).await;
    post_numbered(api, "s1", 500).await;
    // The first went out at once (burst 1); the other 499 wait in the outbox.
    let first = wait_for(&slow, 1, Duration::from_secs(10)).await;
    assert_eq!(
        first.len(),
        1,
        "the first message to the slow group went out"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while queue_depth(&daemon.metrics().await) < 499.0 {
        assert!(
            Instant::now() < deadline,
            "499 messages queued for the slow group"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let posted = Instant::now();
    let (status, _) = post_message(
        api,
        "f1",
        json!({"sender": {"id": "u1"}, "text": "quick"}),
        None,
    )
    .await;
    assert_eq!(status, 202);
    let quick = wait_for(&fast, 1, Duration::from_secs(10)).await;
    let took = posted.elapsed();
    println!("a message to the other group arrived after {took:?}");
    assert_eq!(
        quick.first().map(|(_, text, _)| text.as_str()),
        Some("quick")
    );
    assert!(
        took < Duration::from_millis(100),
        "the other group's message took {took:?} while 499 waited for the slow group"
    );

    // Kill it; start it again without the limit: the outbox still holds the 499.
    daemon.kill();
    slow_consumer.abort();
    fast_consumer.abort();
    daemon
        .restart_with(&two_destinations(
            &broker.toml(),
            api,
            "per_group = \"off\"",
        ))
        .await;
    // Resuming after the first message's event id (the feed is durable, so the id is the same
    // after the restart) replays exactly what came later.
    let first_id = first[0].2.clone();
    let (rest, rest_consumer) = follow(api, "slow", Some(&first_id)).await;
    let rest = wait_for(&rest, 499, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut texts: Vec<String> = first.iter().map(|(_, text, _)| text.clone()).collect();
    texts.extend(rest.iter().map(|(_, text, _)| text.clone()));
    let expected: Vec<String> = (0..500).map(|n| format!("m{n}")).collect();
    assert_eq!(texts, expected, "all 500, once each, in order");
    rest_consumer.abort();
    daemon.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_destination_holds_nothing_and_survives_kill_9_embedded() {
    a_waiting_destination_holds_nothing_and_survives_kill_9(Broker::embedded()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_destination_holds_nothing_and_survives_kill_9_mosquitto() {
    a_waiting_destination_holds_nothing_and_survives_kill_9(Broker::mosquitto().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_lifts_a_limit_applies_to_what_already_waits() {
    let broker = Broker::embedded();
    let api = api_addr();
    let limited = "per_group = \"1/min\"\nburst = 1";
    let daemon = Daemon::start_alone(&two_destinations(&broker.toml(), api, limited)).await;
    let (slow, consumer) = follow(api, "slow", None).await;
    post_numbered(api, "s1", 20).await;
    assert_eq!(wait_for(&slow, 1, Duration::from_secs(10)).await.len(), 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        slow.lock().expect("lock").len(),
        1,
        "the rest waits for the limit"
    );
    daemon
        .reload(&two_destinations(
            &broker.toml(),
            api,
            "per_group = \"off\"",
        ))
        .await;
    let all = wait_for(&slow, 20, Duration::from_secs(10)).await;
    let texts: Vec<&str> = all.iter().map(|(_, text, _)| text.as_str()).collect();
    let expected: Vec<String> = (0..20).map(|n| format!("m{n}")).collect();
    assert_eq!(
        texts, expected,
        "the waiting messages went out under the new limit, in order"
    );
    consumer.abort();
    daemon.stop().await.expect("clean stop");
}
