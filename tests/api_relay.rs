//! End-to-end: messages through the `api` connector, the broker and the relay core, on the
//! embedded rumqttd and on a real mosquitto started by the test. What is asserted is what a
//! user of the `api` endpoint sees: the events that arrive, rendered, once, in order.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use qunbridge_tests::{free_port, post_message, Broker, Daemon, RawMqtt, SseClient};
use serde_json::json;

/// Runs a scenario once on the embedded broker and once on mosquitto.
macro_rules! on_both_brokers {
    ($scenario:ident) => {
        mod $scenario {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn embedded() {
                super::$scenario(qunbridge_tests::Broker::embedded()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn mosquitto() {
                super::$scenario(qunbridge_tests::Broker::mosquitto().await).await;
            }
        }
    };
}

/// A config with one `api` account holding groups `a` and `b`, linked.
fn two_group_config(broker: &Broker, api: SocketAddr, extra_account_keys: &str) -> String {
    format!(
        r#"{broker}
[accounts.hub]
platform = "api"
listen = "{api}"
{extra_account_keys}

[[links]]
name = "demo"
groups = ["hub:a", "hub:b"]
format = "<{{link}}> {{name}}: "
"#,
        broker = broker.toml()
    )
}

/// A free loopback address for an `api` listener.
fn api_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

async fn post_reaches_the_other_group_only(broker: Broker) {
    let api = api_addr();
    let daemon = Daemon::start(&two_group_config(&broker, api, "")).await;
    let mut a = SseClient::open(&format!("http://{api}/api/v1/groups/a/events"), None, None).await;
    let mut b = SseClient::open(&format!("http://{api}/api/v1/groups/b/events"), None, None).await;

    let (status, body) = post_message(
        api,
        "a",
        json!({"sender": {"id": "u1", "name": "Ann"}, "text": "hi"}),
        None,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let id = body["id"].as_str().expect("envelope id").to_owned();
    assert!(id.starts_with("hub:a:"), "{id}");

    let event = b
        .next_within(Duration::from_secs(1))
        .await
        .expect("the message reaches group b within a second");
    let message = event.json();
    assert_eq!(event.event.as_deref(), Some("message"));
    assert_eq!(message["text"], "<demo> Ann: hi");
    assert_eq!(message["id"], id.as_str());
    assert_eq!(message["sender"]["name"], "Ann");
    assert_eq!(message["origin"]["group"], "a");

    // A reply from b goes to a; it is the first thing a ever sees, so a's own message never
    // came back to it.
    let (status, _) = post_message(
        api,
        "b",
        json!({"sender": {"id": "u2", "name": "Bob"}, "text": "yo"}),
        None,
    )
    .await;
    assert_eq!(status, 202);
    let first_on_a = a.next().await.json();
    assert_eq!(first_on_a["text"], "<demo> Bob: yo");

    daemon.stop().await.expect("clean stop");
}
on_both_brokers!(post_reaches_the_other_group_only);

/// An inbound envelope as ingress would publish it.
fn envelope(message_id: &str, text: &str) -> Vec<u8> {
    json!({
        "v": 1,
        "id": format!("hub:a:{message_id}"),
        "origin": {"platform": "api", "account": "hub", "group": "a", "message_id": message_id},
        "sender": {"id": "u9", "name": "Raw"},
        "ts_ms": 1_718_880_000_000u64,
        "kind": "message",
        "segments": [{"type": "text", "text": text}]
    })
    .to_string()
    .into_bytes()
}

async fn same_envelope_twice_is_relayed_once(broker: Broker) {
    let api = api_addr();
    let daemon = Daemon::start_alone(&two_group_config(&broker, api, "")).await;
    let duplicate = "qunbridge_messages_dropped_total{reason=\"duplicate\"}";
    let malformed = "qunbridge_messages_dropped_total{reason=\"malformed\"}";
    let duplicates_before = daemon.counter(duplicate).await;
    let malformed_before = daemon.counter(malformed).await;
    let mut b = SseClient::open(&format!("http://{api}/api/v1/groups/b/events"), None, None).await;
    let raw = RawMqtt::connect(broker.port(), "test-publisher").await;
    let topic = "qunbridge/v1/in/hub/a";

    raw.publish(topic, envelope("m1", "once")).await;
    raw.publish(topic, envelope("m1", "once")).await;
    // Garbage in between must not stop the relay.
    raw.publish(topic, b"{not json".to_vec()).await;
    raw.publish(topic, envelope("m2", "marker")).await;

    assert_eq!(b.next().await.json()["text"], "<demo> Raw: once");
    assert_eq!(
        b.next().await.json()["text"],
        "<demo> Raw: marker",
        "the duplicate was relayed"
    );
    // Nothing after the marker either: a second marker is the next event.
    raw.publish(topic, envelope("m3", "marker 2")).await;
    assert_eq!(b.next().await.json()["text"], "<demo> Raw: marker 2");

    let duplicates = daemon.counter(duplicate).await - duplicates_before;
    assert!(duplicates >= 1.0, "duplicates counted: {duplicates}");
    let garbage = daemon.counter(malformed).await - malformed_before;
    assert!(garbage >= 1.0, "malformed envelopes counted: {garbage}");
    daemon.stop().await.expect("clean stop");
}
on_both_brokers!(same_envelope_twice_is_relayed_once);

/// An outbound message for `hub`/`b` as the core publishes it.
fn outbound(id: &str, text: &str) -> Vec<u8> {
    json!({
        "v": 1,
        "id": id,
        "link": "demo",
        "group": "b",
        "kind": "message",
        "origin": {"platform": "api", "account": "hub", "group": "a", "message_id": id},
        "sender": {"id": "u9", "name": "Raw"},
        "ts_ms": 1_718_880_000_000u64,
        "text": text,
        "segments": [{"type": "text", "text": text}]
    })
    .to_string()
    .into_bytes()
}

/// A copy of an outbound message handed to egress again after a restart (as a broker
/// redelivers one whose acknowledgement was lost) is recognized by the `api` feed's key:
/// consumers see the message once, and the copy is counted as a duplicate.
async fn an_outbound_copy_handed_over_twice_is_shown_once(broker: Broker) {
    let api = api_addr();
    let config = two_group_config(&broker, api, "");
    let daemon = Daemon::start_alone(&config).await;
    let duplicate = "qunbridge_messages_dropped_total{reason=\"duplicate\"}";
    let duplicates_before = daemon.counter(duplicate).await;
    let topic = "qunbridge/v1/out/hub/b";
    {
        let mut b =
            SseClient::open(&format!("http://{api}/api/v1/groups/b/events"), None, None).await;
        let raw = RawMqtt::connect(broker.port(), "test-publisher").await;
        raw.publish(topic, outbound("o1", "once")).await;
        assert_eq!(b.next().await.json()["text"], "once");
    }
    // A new process: nothing of the first send is left in memory, only in the store.
    let daemon = daemon.restart(&config).await;
    let mut b = SseClient::open(&format!("http://{api}/api/v1/groups/b/events"), None, None).await;
    let raw = RawMqtt::connect(broker.port(), "test-publisher-2").await;
    raw.publish(topic, outbound("o1", "once")).await;
    raw.publish(topic, outbound("o2", "marker")).await;
    assert_eq!(
        b.next().await.json()["text"],
        "marker",
        "the copy was shown again"
    );
    let duplicates = daemon.counter(duplicate).await - duplicates_before;
    assert_eq!(duplicates, 1.0, "the copy is counted once as a duplicate");
    daemon.stop().await.expect("clean stop");
}
on_both_brokers!(an_outbound_copy_handed_over_twice_is_shown_once);

/// One message relayed to two `api` accounts whose groups have the same name: each
/// account's consumers see it (each feed keeps it under its own account's key).
async fn one_message_reaches_two_api_accounts_with_the_same_group(broker: Broker) {
    let (hub, one, two) = (api_addr(), api_addr(), api_addr());
    let config = format!(
        r#"{broker}
[accounts.hub]
platform = "api"
listen = "{hub}"

[accounts.one]
platform = "api"
listen = "{one}"

[accounts.two]
platform = "api"
listen = "{two}"

[[links]]
name = "demo"
groups = ["hub:general", "one:general", "two:general"]
format = "<{{link}}> {{name}}: "
"#,
        broker = broker.toml()
    );
    let daemon = Daemon::start(&config).await;
    let events = |api: SocketAddr| format!("http://{api}/api/v1/groups/general/events");
    let mut to_one = SseClient::open(&events(one), None, None).await;
    let mut to_two = SseClient::open(&events(two), None, None).await;
    for text in ["first", "second"] {
        let body = json!({"sender": {"id": "u1", "name": "Ann"}, "text": text});
        let (status, answer) = post_message(hub, "general", body, None).await;
        assert_eq!(status, 202, "{answer}");
    }
    for consumer in [&mut to_one, &mut to_two] {
        assert_eq!(consumer.next().await.json()["text"], "<demo> Ann: first");
        assert_eq!(consumer.next().await.json()["text"], "<demo> Ann: second");
    }
    daemon.stop().await.expect("clean stop");
}
on_both_brokers!(one_message_reaches_two_api_accounts_with_the_same_group);

/// What the embedded state store did, as an operator's dashboard reads it: a relayed message
/// is committed (feed append, dedup key, send log), each commit is counted once and timed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_messages_are_committed_and_each_commit_is_counted_and_timed() {
    const COMMITS: &str = "qunbridge_store_commits_total";
    const TIMED: &str = "qunbridge_store_commit_seconds_count";
    let broker = Broker::embedded();
    let api = api_addr();
    let daemon = Daemon::start_alone(&two_group_config(&broker, api, "")).await;
    let mut b = SseClient::open(&format!("http://{api}/api/v1/groups/b/events"), None, None).await;
    let before = daemon.metrics().await;
    for n in 0..5 {
        let body = json!({"sender": {"id": "u1", "name": "Ann"}, "text": format!("m{n}")});
        let (status, answer) = post_message(api, "a", body, None).await;
        assert_eq!(status, 202, "{answer}");
    }
    for n in 0..5 {
        assert_eq!(b.next().await.json()["text"], format!("<demo> Ann: m{n}"));
    }
    daemon.stop().await.expect("clean stop");
    let commits = |text: &str| qunbridge_tests::metrics::counter(text, COMMITS);
    let timed = |text: &str| qunbridge_tests::metrics::counter(text, TIMED);
    // The daemon is stopped: its store has closed and its writer committed what it had.
    let after = qunbridge::admin::prometheus()
        .expect("the metrics recorder")
        .render();
    assert!(
        commits(&after) > commits(&before),
        "no commit counted for 5 relayed messages"
    );
    assert_eq!(
        commits(&after) - commits(&before),
        timed(&after) - timed(&before),
        "every commit is timed once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_is_required_when_set() {
    let broker = Broker::embedded();
    let api = api_addr();
    let daemon = Daemon::start(&two_group_config(&broker, api, "token = \"s3cret\"")).await;
    let message = json!({"sender": {"id": "u1", "name": "Ann"}, "text": "hi"});

    let (status, body) = post_message(api, "a", message.clone(), None).await;
    assert_eq!(status, 401, "{body}");
    let (status, _) = post_message(api, "a", message.clone(), Some("guess")).await;
    assert_eq!(status, 401);
    let events = reqwest::get(format!("http://{api}/api/v1/groups/b/events"))
        .await
        .expect("answer");
    assert_eq!(events.status(), 401, "event stream needs the token too");

    let mut b = SseClient::open(
        &format!("http://{api}/api/v1/groups/b/events"),
        None,
        Some("s3cret"),
    )
    .await;
    let (status, _) = post_message(api, "a", message, Some("s3cret")).await;
    assert_eq!(status, 202);
    assert_eq!(b.next().await.json()["text"], "<demo> Ann: hi");
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_posts_are_refused_with_the_reason() {
    let broker = Broker::embedded();
    let api = api_addr();
    let daemon = Daemon::start(&two_group_config(&broker, api, "")).await;
    let client = reqwest::Client::new();
    let url = format!("http://{api}/api/v1/groups/a/messages");
    let garbage = client
        .post(&url)
        .body(vec![0xff, 0xfe, b'{'])
        .send()
        .await
        .expect("answer");
    assert_eq!(garbage.status(), 400);
    let text = garbage.text().await.expect("body");
    assert!(text.contains("invalid JSON"), "{text}");
    let empty = client
        .post(&url)
        .json(&json!({"sender": {"id": "u1"}}))
        .send()
        .await
        .expect("answer");
    assert_eq!(empty.status(), 400);
    let huge = client
        .post(&url)
        .json(&json!({"sender": {"id": "u1"}, "text": "x".repeat(600_000)}))
        .send()
        .await
        .expect("answer");
    assert_eq!(huge.status(), 413);

    // The endpoint still works.
    let mut b = SseClient::open(&format!("http://{api}/api/v1/groups/b/events"), None, None).await;
    let (status, _) = post_message(
        api,
        "a",
        json!({"sender": {"id": "u1"}, "text": "still here"}),
        None,
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(b.next().await.json()["text"], "<demo> u1: still here");
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_consumer_gets_what_it_missed() {
    let broker = Broker::embedded();
    let api = api_addr();
    let daemon = Daemon::start(&two_group_config(&broker, api, "")).await;
    let url = format!("http://{api}/api/v1/groups/b/events");
    let mut b = SseClient::open(&url, None, None).await;
    post_message(
        api,
        "a",
        json!({"sender": {"id": "u1"}, "text": "one"}),
        None,
    )
    .await;
    let first = b.next().await;
    drop(b);

    for text in ["two", "three"] {
        let (status, _) = post_message(
            api,
            "a",
            json!({"sender": {"id": "u1"}, "text": text}),
            None,
        )
        .await;
        assert_eq!(status, 202);
    }
    // Wait until both went through.
    let mut probe = SseClient::open(&url, first.id.as_deref(), None).await;
    for _ in 0..2 {
        probe.next().await;
    }

    let mut resumed = SseClient::open(&url, first.id.as_deref(), None).await;
    assert_eq!(resumed.next().await.json()["text"], "<demo> u1: two");
    assert_eq!(resumed.next().await.json()["text"], "<demo> u1: three");
    // Nothing else was replayed: a message posted now is the next event.
    let (status, _) = post_message(
        api,
        "a",
        json!({"sender": {"id": "u1"}, "text": "marker"}),
        None,
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(resumed.next().await.json()["text"], "<demo> u1: marker");
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_losses_are_counted() {
    let broker = Broker::embedded();
    let api = api_addr();
    let daemon = Daemon::start_alone(&two_group_config(&broker, api, "buffer = 2")).await;
    let lagged = "qunbridge_messages_dropped_total{reason=\"consumer_lagged\"}";
    let lagged_before = daemon.counter(lagged).await;
    let url = format!("http://{api}/api/v1/groups/b/events");
    let mut b = SseClient::open(&url, None, None).await;
    post_message(
        api,
        "a",
        json!({"sender": {"id": "u1"}, "text": "m1"}),
        None,
    )
    .await;
    let first = b.next().await;
    drop(b);
    // A live consumer that keeps up tells when everything went through.
    let mut live = SseClient::open(&url, first.id.as_deref(), None).await;
    // (One at a time: its live channel holds two events, like the buffer.)
    for n in 2..=5 {
        post_message(
            api,
            "a",
            json!({"sender": {"id": "u1"}, "text": format!("m{n}")}),
            None,
        )
        .await;
        assert_eq!(live.next().await.json()["text"], format!("<demo> u1: m{n}"));
    }

    // Resuming after m1 with a buffer of two: m2 and m3 are gone, and that is counted.
    let mut resumed = SseClient::open(&url, first.id.as_deref(), None).await;
    assert_eq!(resumed.next().await.json()["text"], "<demo> u1: m4");
    let count = daemon.counter(lagged).await - lagged_before;
    assert!(count >= 2.0, "consumer_lagged counted: {count}");
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_consumers_receive_every_group() {
    let broker = Broker::embedded();
    let api = api_addr();
    let daemon = Daemon::start(&two_group_config(&broker, api, "")).await;
    let (mut socket, _) = tokio_tungstenite::connect_async(format!("ws://{api}/api/v1/ws"))
        .await
        .expect("WebSocket opens");
    post_message(
        api,
        "a",
        json!({"sender": {"id": "u1", "name": "Ann"}, "text": "to b"}),
        None,
    )
    .await;
    post_message(
        api,
        "b",
        json!({"sender": {"id": "u2", "name": "Bob"}, "text": "to a"}),
        None,
    )
    .await;
    let mut seen = ws_texts(&mut socket, 2).await;
    seen.sort();
    assert_eq!(
        seen,
        vec![
            ("a".to_owned(), "<demo> Bob: to a".to_owned()),
            ("b".to_owned(), "<demo> Ann: to b".to_owned()),
        ]
    );
    let _ = socket.close(None).await;
    daemon.stop().await.expect("clean stop");
}

/// The texts of the next `count` text frames of `socket`, with their groups.
async fn ws_texts<S>(socket: &mut S, count: usize) -> Vec<(String, String)>
where
    S: futures_util::Stream<
            Item = Result<
                tokio_tungstenite::tungstenite::Message,
                tokio_tungstenite::tungstenite::Error,
            >,
        > + Unpin,
{
    let mut seen = Vec::new();
    while seen.len() < count {
        let frame = tokio::time::timeout(qunbridge_tests::PATIENCE, socket.next())
            .await
            .expect("a frame in time")
            .expect("socket open")
            .expect("frame");
        if let tokio_tungstenite::tungstenite::Message::Text(text) = frame {
            let message: serde_json::Value = serde_json::from_str(&text).expect("JSON frame");
            let field = |name: &str| message[name].as_str().unwrap_or_default().to_owned();
            seen.push((field("group"), field("text")));
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_bursts_arrive_whole_in_order_and_narrowed_to_the_group() {
    let broker = Broker::embedded();
    let api = api_addr();
    let daemon = Daemon::start(&two_group_config(&broker, api, "")).await;
    let connect = |query: &'static str| {
        tokio_tungstenite::connect_async(format!("ws://{api}/api/v1/ws{query}"))
    };
    let (mut every, _) = connect("").await.expect("WebSocket opens");
    let (mut only_b, _) = connect("?group=b").await.expect("WebSocket opens");
    // Posted without waiting for deliveries, so that events queue up for the sockets and go
    // out in bursts.
    for n in 0..40 {
        let (from, name) = if n % 2 == 0 {
            ("a", "Ann")
        } else {
            ("b", "Bob")
        };
        let (status, _) = post_message(
            api,
            from,
            json!({"sender": {"id": name, "name": name}, "text": format!("m{n}")}),
            None,
        )
        .await;
        assert_eq!(status, 202);
    }
    let to_b: Vec<(String, String)> = (0..40)
        .step_by(2)
        .map(|n| ("b".to_owned(), format!("<demo> Ann: m{n}")))
        .collect();
    assert_eq!(ws_texts(&mut only_b, 20).await, to_b);
    let all = ws_texts(&mut every, 40).await;
    let in_group = |group: &str| -> Vec<(String, String)> {
        all.iter().filter(|(g, _)| g == group).cloned().collect()
    };
    assert_eq!(in_group("b"), to_b);
    let to_a: Vec<(String, String)> = (1..40)
        .step_by(2)
        .map(|n| ("a".to_owned(), format!("<demo> Bob: m{n}")))
        .collect();
    assert_eq!(in_group("a"), to_a);
    // Nothing more: group a's messages never reached the narrowed socket.
    post_message(
        api,
        "a",
        json!({"sender": {"id": "Ann", "name": "Ann"}, "text": "last"}),
        None,
    )
    .await;
    assert_eq!(
        ws_texts(&mut only_b, 1).await,
        vec![("b".to_owned(), "<demo> Ann: last".to_owned())]
    );
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_delivers_every_accepted_message() {
    let broker = Broker::embedded();
    let api = api_addr();
    let daemon = Daemon::start(&two_group_config(&broker, api, "")).await;
    let mut b = SseClient::open(&format!("http://{api}/api/v1/groups/b/events"), None, None).await;
    let posts = (0..30).map(|n| {
        post_message(
            api,
            "a",
            json!({"sender": {"id": "u1", "name": "Ann"}, "text": format!("m{n}")}),
            None,
        )
    });
    let answers = futures_util::future::join_all(posts).await;
    assert!(
        answers.iter().all(|(status, _)| *status == 202),
        "{answers:?}"
    );
    // Stop at once: what was accepted is still in flight and must be finished.
    let stopping = tokio::spawn(daemon.stop());
    let mut texts = Vec::new();
    while let Some(event) = b.next_within(qunbridge_tests::PATIENCE).await {
        texts.push(event.json()["text"].as_str().expect("text").to_owned());
        if texts.len() == 30 {
            break;
        }
    }
    texts.sort();
    let mut expected: Vec<String> = (0..30).map(|n| format!("<demo> Ann: m{n}")).collect();
    expected.sort();
    assert_eq!(texts, expected);
    stopping.await.expect("stop task").expect("clean stop");
}
