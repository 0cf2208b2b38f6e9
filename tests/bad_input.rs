//! End-to-end: bad input from platform peers over real sockets, with the daemon, the
//! embedded broker and an `api` group as the other side of each link. After each bad frame a
//! valid message must still arrive in the `api` group (the connection was kept, or for a frame
//! over the size limit, which tungstenite cannot skip, the connection came back and the daemon
//! kept running), and what was dropped must show in `/metrics`.
//!
//! The tests share the process-wide metrics recorder, so each runs its daemon alone
//! ([`Daemon::start_alone`]) and compares counters before and after.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use qunbridge_connectors::reverse_ws::MAX_MESSAGE_BYTES;
use qunbridge_tests::dingtalk_peer::{
    bot_message, text_message, DingTalkPeer, CLIENT_ID, CLIENT_SECRET,
};
use qunbridge_tests::metrics::counter;
use qunbridge_tests::onebot11_peer::{group_message, OneBot11Peer};
use qunbridge_tests::{free_port, Broker, Daemon, SseClient};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// The bot's QQ number.
const BOT: i64 = 2854196310;
/// The DingTalk group.
const DING_GROUP: &str = "cidQ7x+R2m/0Lw9==";

/// Drops counted as malformed.
const MALFORMED: &str = "qunbridge_messages_dropped_total{reason=\"malformed\"}";
/// Drops of frames over the size limit.
const OVERSIZED: &str = "qunbridge_messages_dropped_total{reason=\"oversized\"}";

/// The unknown-input series of a platform and kind.
fn unknown(platform: &str, kind: &str) -> String {
    format!("qunbridge_unknown_input_total{{platform=\"{platform}\",kind=\"{kind}\"}}")
}

/// A free loopback address.
fn local_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Counter values before a step, to compare with after it.
struct Counters {
    /// The series watched.
    series: Vec<String>,
    /// Their values at the last look.
    values: Vec<f64>,
}

impl Counters {
    /// Reads the series now.
    async fn read(daemon: &Daemon, series: &[&str]) -> Counters {
        let metrics = daemon.metrics().await;
        Counters {
            series: series.iter().map(|s| (*s).to_owned()).collect(),
            values: series.iter().map(|s| counter(&metrics, s)).collect(),
        }
    }

    /// Asserts each series grew by exactly the given amount since the last look, and looks
    /// again.
    async fn assert_grew(&mut self, daemon: &Daemon, step: &str, by: &[f64]) {
        let metrics = daemon.metrics().await;
        for ((series, before), by) in self.series.iter().zip(&mut self.values).zip(by) {
            let now = counter(&metrics, series);
            assert_eq!(
                now - *before,
                *by,
                "{step}: {series} went from {before} to {now}"
            );
            *before = now;
        }
    }
}

/// A QQ group message event with one text segment, as JSON text.
fn qq_text(message_id: i64, text: &str) -> Value {
    group_message(
        111,
        5,
        message_id,
        "",
        "Eve",
        json!([{"type": "text", "data": {"text": text}}]),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onebot11_reverse_peer_bad_input_is_counted_and_the_connection_kept() {
    let broker = Broker::embedded();
    let listen = local_addr();
    let api = local_addr();
    let config = format!(
        r#"{broker}
[accounts.qq]
platform = "qq"
listen = "{listen}"

[accounts.hub]
platform = "api"
listen = "{api}"

[[links]]
name = "fans"
groups = ["qq:111", "hub:a"]
"#,
        broker = broker.toml()
    );
    let daemon = Daemon::start_alone(&config).await;
    let peer = OneBot11Peer::reverse(BOT, None, 0);
    peer.connect(listen).await.expect("accepted");
    let mut a = SseClient::open(&format!("http://{api}/api/v1/groups/a/events"), None, None).await;
    let event_series = unknown("qq", "event");
    let segment_series = unknown("qq", "segment");
    let mut counters = Counters::read(
        &daemon,
        &[MALFORMED, OVERSIZED, &event_series, &segment_series],
    )
    .await;
    let mut next_id = 1;
    // Each bad frame is followed by a valid message, which must arrive.
    let mut relayed_after = |step: &str| {
        next_id += 1;
        peer.push_event(qq_text(next_id, step));
        step.to_owned()
    };

    peer.push(Message::Binary(vec![0xff, 0xfe, 0xc3, 0x28, b'{'].into()));
    let step = relayed_after("after invalid UTF-8");
    assert_eq!(a.next().await.json()["text"], format!("[QQ] Eve: {step}"));
    counters
        .assert_grew(&daemon, &step, &[1.0, 0.0, 0.0, 0.0])
        .await;

    peer.push_event(json!({"time": 1718880000, "self_id": BOT, "post_type": "hologram"}));
    let step = relayed_after("after an unknown post_type");
    assert_eq!(a.next().await.json()["text"], format!("[QQ] Eve: {step}"));
    counters
        .assert_grew(&daemon, &step, &[0.0, 0.0, 1.0, 0.0])
        .await;

    peer.push_event(group_message(
        111,
        5,
        1000,
        "",
        "Eve",
        json!([{"type": "mystery", "data": {"x": 1}}, {"type": "text", "data": {"text": " kept"}}]),
    ));
    assert_eq!(a.next().await.json()["text"], "[QQ] Eve: [mystery] kept");
    counters
        .assert_grew(&daemon, "unknown segment", &[0.0, 0.0, 0.0, 1.0])
        .await;

    let whole = qq_text(1001, "never whole").to_string();
    peer.push(Message::Text(whole[..whole.len() / 2].into()));
    let step = relayed_after("after a truncated frame");
    assert_eq!(a.next().await.json()["text"], format!("[QQ] Eve: {step}"));
    counters
        .assert_grew(&daemon, &step, &[1.0, 0.0, 0.0, 0.0])
        .await;

    // Numbers beyond u64/i64 in each id (serde_json reads them as floats: not an id), and
    // one beyond f64 (not JSON at all).
    let template = qq_text(1002, "huge").to_string();
    for (field, huge) in [
        ("\"user_id\":5", "\"user_id\":18446744073709551616"),
        ("\"group_id\":111", "\"group_id\":-9223372036854775809"),
        (
            "\"message_id\":1002",
            "\"message_id\":123456789012345678901234567890",
        ),
        ("\"message_id\":1002", "\"message_id\":1e400"),
    ] {
        assert!(template.contains(field), "{template}");
        peer.push(Message::Text(template.replace(field, huge).into()));
    }
    let step = relayed_after("after huge numbers");
    assert_eq!(a.next().await.json()["text"], format!("[QQ] Eve: {step}"));
    counters
        .assert_grew(&daemon, &step, &[4.0, 0.0, 0.0, 0.0])
        .await;

    peer.push(Message::Text("[".repeat(10_000).into()));
    let nested = format!(
        "{{\"post_type\":\"message\",\"message_type\":\"group\",\"message\":{}{}}}",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    peer.push(Message::Text(nested.into()));
    let step = relayed_after("after deep nesting");
    assert_eq!(a.next().await.json()["text"], format!("[QQ] Eve: {step}"));
    counters
        .assert_grew(&daemon, &step, &[2.0, 0.0, 0.0, 0.0])
        .await;
    assert_eq!(
        peer.connections.load(Ordering::SeqCst),
        1,
        "every frame so far was dropped on the same connection"
    );

    // Over the limit: tungstenite cannot skip the frame, so the daemon closes the socket
    // (1009); the implementation reconnects as NapCat does and the daemon goes on.
    peer.push(Message::Text("x".repeat(MAX_MESSAGE_BYTES + 1).into()));
    let deadline = tokio::time::Instant::now() + qunbridge_tests::PATIENCE;
    while counter(&daemon.metrics().await, OVERSIZED) == counters.values[1] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "oversized frame not counted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    peer.connect(listen).await.expect("accepted again");
    let step = relayed_after("after an oversized frame and a reconnect");
    assert_eq!(a.next().await.json()["text"], format!("[QQ] Eve: {step}"));
    counters
        .assert_grew(&daemon, &step, &[0.0, 1.0, 0.0, 0.0])
        .await;
    assert_eq!(peer.connections.load(Ordering::SeqCst), 2);
    daemon.wait_ready().await;
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dingtalk_stream_bad_input_is_counted_and_the_connection_kept() {
    let broker = Broker::embedded();
    let peer = DingTalkPeer::start(Vec::new()).await;
    let api = local_addr();
    let config = format!(
        r#"{broker}
[accounts.hub]
platform = "api"
listen = "{api}"

[accounts.ding]
platform = "dingtalk"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
api_base = "{api_base}"

[[links]]
name = "ops"
groups = ["hub:a", "ding:{DING_GROUP}"]
"#,
        broker = broker.toml(),
        api_base = peer.api_base(),
    );
    let daemon = Daemon::start_alone(&config).await;
    let mut a = SseClient::open(&format!("http://{api}/api/v1/groups/a/events"), None, None).await;
    let connection = peer.next_connection().await;
    let segment_series = unknown("dingtalk", "segment");
    let mut counters = Counters::read(&daemon, &[MALFORMED, OVERSIZED, &segment_series]).await;
    let mut next_id = 0;
    let mut say = |connection: &qunbridge_tests::dingtalk_peer::GatewayConnection, step: &str| {
        next_id += 1;
        connection.callback(&text_message(
            DING_GROUP,
            &format!("msgBad{next_id}=="),
            "孙七",
            &format!(" {step}"),
        ));
        format!("[钉钉] 孙七: {step}")
    };

    connection.send_text("this is not json");
    let expected = say(&connection, "after a frame that is not JSON");
    assert_eq!(a.next().await.json()["text"], expected);
    counters
        .assert_grew(&daemon, &expected, &[1.0, 0.0, 0.0])
        .await;

    let bad_data = connection.fresh_id();
    connection.send_frame(
        "CALLBACK",
        "/v1.0/im/bot/messages/get",
        &bad_data,
        Value::String("{\"conversationId\": tru".into()),
    );
    let expected = say(&connection, "after data that is not JSON");
    assert_eq!(a.next().await.json()["text"], expected);
    assert_eq!(peer.wait_replies(&bad_data, 1).await[0]["code"], 400);
    counters
        .assert_grew(&daemon, &expected, &[1.0, 0.0, 0.0])
        .await;

    connection.send_text(&"[".repeat(10_000));
    let nested = connection.fresh_id();
    connection.send_frame(
        "CALLBACK",
        "/v1.0/im/bot/messages/get",
        &nested,
        Value::String(format!("{}{}", "[".repeat(10_000), "]".repeat(10_000))),
    );
    let expected = say(&connection, "after deep nesting");
    assert_eq!(a.next().await.json()["text"], expected);
    counters
        .assert_grew(&daemon, &expected, &[2.0, 0.0, 0.0])
        .await;

    connection.callback(&bot_message(
        DING_GROUP,
        "msgHolo==",
        "孙七",
        json!({"msgtype": "hologram", "createAt": 1e300}),
    ));
    assert_eq!(a.next().await.json()["text"], "[钉钉] 孙七: [hologram]");
    counters
        .assert_grew(&daemon, "unknown msgtype", &[0.0, 0.0, 1.0])
        .await;
    assert_eq!(peer.connections(), 1, "the connection was kept");

    // Over the limit: the daemon drops the socket and comes back with a fresh ticket.
    connection.send_text(&"x".repeat(MAX_MESSAGE_BYTES + 1));
    let again = peer.next_connection().await;
    assert_ne!(again.ticket, connection.ticket);
    let expected = say(&again, "after an oversized frame and a reconnect");
    assert_eq!(a.next().await.json()["text"], expected);
    counters
        .assert_grew(&daemon, &expected, &[0.0, 1.0, 0.0])
        .await;
    daemon.wait_ready().await;
    daemon.stop().await.expect("clean stop");
}
