//! End-to-end: DingTalk accounts against a scripted DingTalk peer over real HTTP and
//! WebSockets (tests/src/dingtalk_peer.rs), with the daemon, a real broker and an `api`
//! account as the other side of the link. What is asserted is what users see: the text that
//! arrives in the `api` group, and the requests DingTalk receives (group sends, webhook
//! posts with their signatures, ACK frames). Pictures (served by a local file server): the
//! app robot uploads one once per account and sends it to each group as `sampleImageMsg`;
//! the custom robot shows `[图片]` without a media server and a markdown link with one.

use std::net::SocketAddr;
use std::time::Duration;

use qunbridge_tests::dingtalk_peer::{
    add_member_event, picture_message, rich_text_message, text_message, DingTalkPeer, GroupSend,
    Robot, CLIENT_ID, CLIENT_SECRET, MAX_MSG_PARAM,
};
use qunbridge_tests::file_server::{png, sha256_hex, FileServer, Route};
use qunbridge_tests::{free_port, post_message, Broker, Daemon, RawMqtt, SseClient, PATIENCE};
use serde_json::{json, Value};

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

/// The DingTalk group (a conversation id with the `+ / =` that topics must encode).
const GROUP: &str = "cidQ7x+R2m/0Lw9==";
/// The signed custom robot's access token.
const HOOK_TOKEN: &str = "hook-token-1";
/// Its signing secret.
const HOOK_SECRET: &str = "SECc0ffee+/=9a8b7c6d5e4f";
/// Its keyword.
const KEYWORD: &str = "qunbridge";

/// The robots the peer knows: the signed one with a keyword, and one whose account is
/// configured with the wrong secret in some tests.
fn robots() -> Vec<Robot> {
    vec![
        Robot {
            access_token: HOOK_TOKEN.into(),
            secret: Some(HOOK_SECRET.into()),
            keyword: Some(KEYWORD.into()),
        },
        Robot {
            access_token: "badsign-token".into(),
            secret: Some("SECthe-real-one".into()),
            keyword: None,
        },
    ]
}

/// A free loopback address for the `api` listener.
fn api_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// A config with an `api` group `a` linked to the DingTalk group (Stream + OpenAPI) and the
/// signed custom robot as a send-only destination; `extra` adds accounts or `to` members.
fn config(
    broker: &Broker,
    api: SocketAddr,
    peer: &DingTalkPeer,
    secret: &str,
    extra_to: &str,
    extra: &str,
) -> String {
    format!(
        r#"{broker}
[accounts.hub]
platform = "api"
listen = "{api}"
media = "passthrough"

[accounts.ding]
platform = "dingtalk"
client_id = "{CLIENT_ID}"
client_secret = "{secret}"
api_base = "{api_base}"

[accounts.ding-hook]
platform = "dingtalk"
webhook = "{hook}"
secret = "{HOOK_SECRET}"
keyword = "{KEYWORD}"
{extra}

[[links]]
name = "ops"
groups = ["hub:a", "ding:{GROUP}"]
to = ["ding-hook:ops"{extra_to}]
format = "[{{platform}}] {{name}}: "
"#,
        broker = broker.toml(),
        api_base = peer.api_base(),
        hook = peer.webhook_url(HOOK_TOKEN),
    )
}

/// The peer and a daemon on `broker` with the standard config.
async fn start(broker: &Broker) -> (DingTalkPeer, Daemon, SocketAddr) {
    let peer = DingTalkPeer::start(robots()).await;
    let api = api_addr();
    let daemon = Daemon::start(&config(broker, api, &peer, CLIENT_SECRET, "", "")).await;
    (peer, daemon, api)
}

/// [`start`] with the daemon run alone in this test binary ([`Daemon::start_alone`]), for a
/// test that reads a metric series without an account label.
async fn start_alone(broker: &Broker) -> (DingTalkPeer, Daemon, SocketAddr) {
    let peer = DingTalkPeer::start(robots()).await;
    let api = api_addr();
    let daemon = Daemon::start_alone(&config(broker, api, &peer, CLIENT_SECRET, "", "")).await;
    (peer, daemon, api)
}

/// Posts `text` as Ann into `api` group `a`.
async fn say(api: SocketAddr, text: &str) {
    let (status, body) = post_message(
        api,
        "a",
        json!({"sender": {"id": "u1", "name": "Ann"}, "text": text}),
        None,
    )
    .await;
    assert_eq!(status, 202, "{body}");
}

/// The events group `a` of the `api` account receives.
async fn watch_a(api: SocketAddr) -> SseClient {
    SseClient::open(&format!("http://{api}/api/v1/groups/a/events"), None, None).await
}

async fn at_bot_message_reaches_the_api_group(broker: Broker) {
    let (peer, daemon, api) = start(&broker).await;
    let connection = peer.next_connection().await;
    let opens = peer.opens();
    assert_eq!(opens.len(), 1, "one registration for one connection");
    assert_eq!(opens[0].accept.as_deref(), Some("application/json"));
    assert_eq!(opens[0].body["clientId"], CLIENT_ID);
    assert_eq!(
        peer.subscriptions(),
        json!([{"type": "CALLBACK", "topic": "/v1.0/im/bot/messages/get"}]),
        "without `events` only bot messages are subscribed"
    );
    let mut a = watch_a(api).await;

    let frame = connection.callback(&text_message(
        GROUP,
        "msgA1==",
        "张三",
        " relay this please",
    ));
    let message = a.next().await.json();
    assert_eq!(message["text"], "[钉钉] 张三: relay this please");
    assert_eq!(message["origin"]["platform"], "dingtalk");
    assert_eq!(message["origin"]["group"], GROUP);
    assert_eq!(message["sender"]["name"], "张三");
    let ack = &peer.wait_replies(&frame, 1).await[0];
    assert_eq!(ack["code"], 200, "{ack}");

    let frame = connection.callback(&picture_message(GROUP, "msgA2==", "张三", "dc-cat"));
    let message = a.next().await.json();
    assert_eq!(
        message["text"],
        format!(
            "[钉钉] 张三: [图片] {}",
            DingTalkPeer::download_url_for("dc-cat")
        )
    );
    let (token, body) = peer.downloads().pop().expect("a download request");
    assert_eq!(
        body,
        json!({"robotCode": CLIENT_ID, "downloadCode": "dc-cat"})
    );
    assert_eq!(token, peer.tokens().first().cloned());
    assert_eq!(peer.wait_replies(&frame, 1).await[0]["code"], 200);

    // A picture whose download code DingTalk refuses still arrives, as a placeholder.
    connection.callback(&picture_message(GROUP, "msgA3==", "李四", "expired-code"));
    assert_eq!(a.next().await.json()["text"], "[钉钉] 李四: [图片]");

    // The pictures of one message are resolved at the same time, and arrive in order.
    peer.delay_downloads(Duration::from_millis(300));
    connection.callback(&rich_text_message(
        GROUP,
        "msgA4==",
        "王五",
        " three:",
        &["dc-1", "dc-2", "dc-3"],
    ));
    let urls: Vec<String> = ["dc-1", "dc-2", "dc-3"]
        .iter()
        .map(|code| format!("[图片] {}", DingTalkPeer::download_url_for(code)))
        .collect();
    assert_eq!(
        a.next().await.json()["text"],
        format!("[钉钉] 王五: three:{}", urls.concat())
    );
    assert_eq!(
        peer.most_downloads_at_once(&["dc-1", "dc-2", "dc-3"]),
        3,
        "all three download requests were open together"
    );
    daemon.stop().await.expect("clean stop");
}
on_both_brokers!(at_bot_message_reaches_the_api_group);

async fn api_message_reaches_dingtalk_through_openapi_and_the_signed_webhook(broker: Broker) {
    let (peer, daemon, api) = start(&broker).await;
    say(api, "hi ding").await;

    let send = peer.wait_group_send(|c| c.contains("hi ding")).await;
    assert_eq!(send.body["robotCode"], CLIENT_ID);
    assert_eq!(send.body["openConversationId"], GROUP);
    assert_eq!(send.body["msgKey"], "sampleText");
    assert_eq!(send.content().as_deref(), Some("[API] Ann: hi ding"));
    assert_eq!(
        send.token,
        peer.tokens().first().cloned(),
        "the access token header"
    );

    let post = peer.wait_webhook_post(0, |c| c.contains("hi ding")).await;
    assert_eq!(post.access_token, HOOK_TOKEN);
    assert!(post.sign_valid);
    assert_eq!(post.content, format!("{KEYWORD} [API] Ann: hi ding"));

    // The token is cached: a second message uses it again.
    say(api, "second").await;
    let send = peer.wait_group_send(|c| c.contains("second")).await;
    assert_eq!(peer.tokens().len(), 1);
    assert_eq!(send.token, peer.tokens().first().cloned());

    // A token DingTalk no longer accepts is replaced once and the message still goes out.
    peer.revoke_tokens();
    say(api, "after revocation").await;
    let send = peer
        .wait_group_send(|c| c.contains("after revocation"))
        .await;
    let tokens = peer.tokens();
    assert_eq!(tokens.len(), 2, "one refresh");
    assert_eq!(send.token.as_deref(), Some(tokens[1].as_str()));
    let attempts = peer
        .group_sends()
        .into_iter()
        .filter(|s| s.content().is_some_and(|c| c.contains("after revocation")))
        .count();
    assert_eq!(attempts, 2, "refused once, then sent with the new token");

    // Text longer than one msgParam goes out in parts, split at a line break.
    let long = format!("{}\n{}", "钉".repeat(3_000), "x".repeat(9_000));
    say(api, &long).await;
    let first = peer
        .wait_group_send(|c| c.starts_with("[API] Ann: 钉"))
        .await;
    let second = peer.wait_group_send(|c| c.starts_with('x')).await;
    for part in [&first, &second] {
        let param = part.body["msgParam"].as_str().expect("msgParam string");
        assert!(param.len() <= MAX_MSG_PARAM, "{} bytes", param.len());
    }
    // The relay splits at the line break and marks each part; the parts give back the text.
    let first = first.content().expect("1");
    let second = second.content().expect("2");
    assert!(
        first.ends_with(" (1/2)") && second.ends_with(" (2/2)"),
        "parts are marked"
    );
    let rejoined = format!(
        "{}\n{}",
        first.trim_end_matches(" (1/2)"),
        second.trim_end_matches(" (2/2)")
    );
    assert!(
        rejoined == format!("[API] Ann: {long}"),
        "the parts do not give back the text"
    );
    assert!(
        peer.webhook_posts().iter().all(|p| p.sign_valid),
        "every webhook request was signed correctly"
    );
    daemon.stop().await.expect("clean stop");
}
on_both_brokers!(api_message_reaches_dingtalk_through_openapi_and_the_signed_webhook);

async fn redelivered_frames_are_acknowledged_and_relayed_once(broker: Broker) {
    let (peer, daemon, api) = start(&broker).await;
    let connection = peer.next_connection().await;
    let mut a = watch_a(api).await;

    let message = text_message(GROUP, "msgDup==", "王五", " once");
    connection.callback_with_id("frame-dup-1", &message);
    connection.callback_with_id("frame-dup-1", &message);
    connection.callback_with_id("frame-dup-2", &message);
    // A one-to-one chat is acknowledged but not relayed.
    let mut direct = text_message("cidPrivate==", "msgP1==", "王五", "private");
    direct["conversationType"] = json!("1");
    let direct_frame = connection.callback(&direct);
    let marker = connection.callback(&text_message(GROUP, "msgMark==", "王五", " marker"));

    assert_eq!(a.next().await.json()["text"], "[钉钉] 王五: once");
    assert_eq!(
        a.next().await.json()["text"],
        "[钉钉] 王五: marker",
        "a redelivered or private message was relayed"
    );
    // Nothing came after the marker either: a second marker is the next event.
    connection.callback(&text_message(GROUP, "msgMark2==", "王五", " marker 2"));
    assert_eq!(a.next().await.json()["text"], "[钉钉] 王五: marker 2");
    for (frame, count) in [("frame-dup-1", 2), ("frame-dup-2", 1)] {
        let acks = peer.wait_replies(frame, count).await;
        assert!(acks.iter().all(|ack| ack["code"] == 200), "{acks:?}");
    }
    assert_eq!(peer.wait_replies(&direct_frame, 1).await[0]["code"], 200);
    assert_eq!(peer.wait_replies(&marker, 1).await[0]["code"], 200);
    daemon.stop().await.expect("clean stop");
}
on_both_brokers!(redelivered_frames_are_acknowledged_and_relayed_once);

/// The `kind` of an envelope published on an inbound topic.
fn envelope_kind(payload: &[u8]) -> String {
    serde_json::from_slice::<Value>(payload)
        .ok()
        .and_then(|v| v["kind"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_events_group_joins_are_published_as_member_envelopes_and_then_acknowledged() {
    let broker = Broker::embedded();
    let peer = DingTalkPeer::start(robots()).await;
    let api = api_addr();
    let toml = config(&broker, api, &peer, CLIENT_SECRET, "", "")
        .replace("[accounts.ding]\n", "[accounts.ding]\nevents = true\n");
    let daemon = Daemon::start(&toml).await;
    let connection = peer.next_connection().await;
    assert_eq!(
        peer.subscriptions(),
        json!([{"type": "CALLBACK", "topic": "/v1.0/im/bot/messages/get"},
               {"type": "EVENT", "topic": "*"}])
    );
    let mut raw = RawMqtt::connect(broker.port(), "member-watcher").await;
    raw.subscribe("qunbridge/v1/in/ding/+").await;
    let topic = "qunbridge/v1/in/ding/cidQ7x%2BR2m%2F0Lw9==";
    // A bot message seen on the topic shows the subscription is in place.
    loop {
        connection.callback(&text_message(GROUP, &connection.fresh_id(), "张三", " hi"));
        let seen = tokio::time::timeout(
            Duration::from_secs(2),
            raw.next_matching(|_, payload| envelope_kind(payload) == "message"),
        )
        .await;
        if let Ok((seen_topic, _)) = seen {
            assert_eq!(seen_topic, topic);
            break;
        }
    }

    let frame = connection.event(
        "chat_add_member",
        &add_member_event(GROUP, &["user-1", "user-2"], "admin-9"),
    );
    let ack = &peer.wait_replies(&frame, 1).await[0];
    assert_eq!(ack["code"], 200, "{ack}");
    let status: Value = serde_json::from_str(ack["data"].as_str().unwrap_or_default())
        .expect("the ACK data is a JSON string");
    assert_eq!(status["status"], "SUCCESS", "{ack}");
    let mut members = Vec::new();
    for _ in 0..2 {
        let (seen_topic, payload) = raw
            .next_matching(|_, payload| envelope_kind(payload) == "member")
            .await;
        assert_eq!(seen_topic, topic);
        let envelope: Value = serde_json::from_slice(&payload).expect("an envelope");
        assert_eq!(envelope["origin"]["platform"], "dingtalk");
        assert_eq!(envelope["origin"]["group"], GROUP);
        assert_eq!(
            envelope["member"],
            json!({"change": "join", "how": "invite", "operator": "admin-9"})
        );
        members.push(
            envelope["sender"]["id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    members.sort();
    assert_eq!(members, ["user-1", "user-2"]);
    // Group health counts the two joins.
    let url = reqwest::Url::parse_with_params(
        &format!("http://{}/api/v1/stats", daemon.admin),
        &[("group", format!("ding:{GROUP}"))],
    )
    .expect("a URL");
    let deadline = tokio::time::Instant::now() + qunbridge_tests::PATIENCE;
    loop {
        let report: Value = reqwest::get(url.clone())
            .await
            .expect("stats answer")
            .json()
            .await
            .expect("stats JSON");
        let today = report["groups"][0]["periods"]
            .as_array()
            .and_then(|periods| periods.last())
            .cloned()
            .unwrap_or_default();
        if today["joins"] == 2 {
            assert_eq!(today["joins_by_how"], json!({"invite": 2}));
            assert_eq!(report["groups"][0]["coverage"], "mentions");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{report}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The group's series are labelled by its alias: no conversation or user id in /metrics.
    let metrics = daemon.metrics().await;
    assert!(
        metrics.contains("qunbridge_group_members_joined_total{group=\"ding#1\",how=\"invite\"} 2"),
        "{metrics}"
    );
    for id in [GROUP, "user-1", "user-2"] {
        assert!(!metrics.contains(id), "/metrics names {id}");
    }

    // An event type that is not about membership is acknowledged, and the connection stays.
    let other = connection.event("chat_update_title", &json!({"openConversationId": GROUP}));
    assert_eq!(peer.wait_replies(&other, 1).await[0]["code"], 200);
    assert_eq!(peer.connections(), 1);
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_disconnect_and_dropped_sockets() {
    let broker = Broker::embedded();
    let (peer, daemon, api) = start(&broker).await;
    let mut a = watch_a(api).await;
    let first = peer.next_connection().await;

    let (ping, data) = first.ping("4b1e-90af");
    let pong = &peer.wait_replies(&ping, 1).await[0];
    assert_eq!(pong["code"], 200);
    assert_eq!(
        pong["data"],
        data.as_str(),
        "the ping data is echoed verbatim"
    );

    // SYSTEM disconnect: a fresh registration and ticket, and relaying goes on.
    first.system_disconnect();
    let second = peer.next_connection().await;
    assert_ne!(second.ticket, first.ticket);
    assert_eq!(peer.opens().len(), 2);
    second.callback(&text_message(GROUP, "msgR1==", "赵六", " after disconnect"));
    assert_eq!(
        a.next().await.json()["text"],
        "[钉钉] 赵六: after disconnect"
    );

    // A dropped socket: the same, after the backoff.
    second.drop_socket();
    let third = peer.next_connection().await;
    assert!(third.ticket != first.ticket && third.ticket != second.ticket);
    assert_eq!(peer.opens().len(), 3);
    let frame = third.callback(&text_message(GROUP, "msgR2==", "赵六", " after drop"));
    assert_eq!(a.next().await.json()["text"], "[钉钉] 赵六: after drop");
    assert_eq!(peer.wait_replies(&frame, 1).await[0]["code"], 200);
    assert_eq!(peer.refused_handshakes(), 0, "no ticket was used twice");
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_are_counted_and_the_connection_keeps_working() {
    let broker = Broker::embedded();
    let (peer, daemon, api) = start_alone(&broker).await;
    let mut a = watch_a(api).await;
    let connection = peer.next_connection().await;
    let malformed = "qunbridge_messages_dropped_total{reason=\"malformed\"}";
    let before = daemon.counter(malformed).await;

    connection.send_text("this is not json");
    connection.send_text(r#"{"type":"CALLBACK","headers":{"topic":"/v1.0/im/bot/messages/get"}}"#);
    connection.send_binary(&[0xde, 0xad]);
    let bad_data = connection.fresh_id();
    connection.send_frame(
        "CALLBACK",
        "/v1.0/im/bot/messages/get",
        &bad_data,
        Value::String("{not json".into()),
    );
    connection.callback(&text_message(GROUP, "msgOk==", "孙七", " still works"));

    assert_eq!(a.next().await.json()["text"], "[钉钉] 孙七: still works");
    let refused = &peer.wait_replies(&bad_data, 1).await[0];
    assert_eq!(
        refused["code"], 400,
        "an unreadable callback is answered, not redelivered"
    );
    assert_eq!(peer.connections(), 1, "the connection was kept");
    let after = daemon.counter(malformed).await;
    assert!(
        after >= before + 4.0,
        "malformed before {before}, after {after}"
    );
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_130101_pauses_the_robot_and_the_message_arrives_after_it() {
    let broker = Broker::embedded();
    let (peer, daemon, api) = start_alone(&broker).await;
    let rate_limited = "qunbridge_rate_limited_total{account=\"ding-hook\"}";
    let rate_limited_before = daemon.counter(rate_limited).await;
    // The pause starts at the answer's Retry-After (1 s here) instead of the default 60 s.
    peer.script_webhook(
        HOOK_TOKEN,
        130101,
        "send too fast, exceed 20 times per minute",
        Some(1),
    );
    say(api, "slow down").await;

    let refused = peer
        .wait_webhook_post(130101, |c| c.contains("slow down"))
        .await;
    let delivered = peer.wait_webhook_post(0, |c| c.contains("slow down")).await;
    let waited = delivered.at.duration_since(refused.at);
    assert!(
        waited >= Duration::from_millis(900),
        "retried after {waited:?}, before the pause ended"
    );
    assert_eq!(delivered.content, format!("{KEYWORD} [API] Ann: slow down"));
    // The robot's queue is ordered: a third attempt would be posted before this marker.
    say(api, "marker").await;
    peer.wait_webhook_post(0, |c| c.contains("marker")).await;
    let posts: Vec<_> = peer
        .webhook_posts()
        .into_iter()
        .filter(|p| p.content.contains("slow down"))
        .collect();
    assert_eq!(posts.len(), 2, "one refused, one delivered: {posts:?}");
    let paused = daemon.counter(rate_limited).await - rate_limited_before;
    assert!(paused >= 1.0, "rate limits of the robot counted: {paused}");
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_310000_drops_the_message_once_and_the_next_one_is_still_sent() {
    let broker = Broker::embedded();
    let peer = DingTalkPeer::start(robots()).await;
    let api = api_addr();
    // A second robot configured with the wrong signing secret: DingTalk says "sign not match".
    let extra = format!(
        "\n[accounts.ding-badsign]\nplatform = \"dingtalk\"\nwebhook = \"{}\"\nsecret = \"SECnot-the-right-one\"\n",
        peer.webhook_url("badsign-token")
    );
    let daemon = Daemon::start_alone(&config(
        &broker,
        api,
        &peer,
        CLIENT_SECRET,
        ", \"ding-badsign:alerts\"",
        &extra,
    ))
    .await;
    let failed = "qunbridge_messages_dropped_total{reason=\"send_failed\"}";
    let before = daemon.counter(failed).await;

    peer.script_webhook(HOOK_TOKEN, 310000, "keywords not in content", None);
    say(api, "first").await;
    peer.wait_webhook_post(310000, |c| c.contains("first"))
        .await;
    let bad_sign = peer
        .wait_webhook_post(310000, |c| c == "[API] Ann: first")
        .await;
    assert_eq!(bad_sign.access_token, "badsign-token");
    assert!(!bad_sign.sign_valid);
    daemon.wait_counter(failed, before + 2.0).await;

    say(api, "second").await;
    let delivered = peer.wait_webhook_post(0, |c| c.contains("second")).await;
    assert_eq!(delivered.content, format!("{KEYWORD} [API] Ann: second"));
    peer.wait_webhook_post(310000, |c| c == "[API] Ann: second")
        .await;
    // Each robot's queue is ordered: a retry of "first" or "second" would be posted before
    // this marker.
    say(api, "marker").await;
    peer.wait_webhook_post(0, |c| c.contains("marker")).await;
    peer.wait_webhook_post(310000, |c| c == "[API] Ann: marker")
        .await;
    for (token, text, expected) in [
        (HOOK_TOKEN, "first", 1),
        (HOOK_TOKEN, "second", 1),
        ("badsign-token", "first", 1),
        ("badsign-token", "second", 1),
    ] {
        let attempts = peer
            .webhook_posts()
            .iter()
            .filter(|p| p.access_token == token && p.content.contains(text))
            .count();
        assert_eq!(attempts, expected, "{token} got {text:?} {attempts} times");
    }
    // "first" twice, "second" and the marker once each (the robot with the wrong secret).
    // The marker's refusal is counted once the daemon has read it, after the peer saw it.
    daemon.wait_counter(failed, before + 4.0).await;
    let after = daemon.counter(failed).await;
    assert_eq!(
        after - before,
        4.0,
        "send_failed before {before}, after {after}"
    );
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_are_reported_as_auth_failed() {
    let broker = Broker::embedded();
    let peer = DingTalkPeer::start(robots()).await;
    let api = api_addr();
    let daemon = Daemon::start(&config(&broker, api, &peer, "wrong-secret", "", "")).await;
    let url = format!("http://{}/readyz", daemon.admin);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let body: Value = reqwest::get(&url)
            .await
            .expect("readyz answers")
            .json()
            .await
            .expect("readyz JSON");
        let state = body["accounts"]
            .as_array()
            .and_then(|accounts| accounts.iter().find(|a| a["account"] == "ding"))
            .map(|a| a["state"].clone());
        if state == Some(json!("auth_failed")) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "state stayed {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(peer
        .connection_within(Duration::from_millis(200))
        .await
        .is_none());
    assert_eq!(
        peer.opens().len(),
        1,
        "refused credentials are retried slowly"
    );
    daemon.stop().await.expect("clean stop");
}

#[test]
fn dingtalk_config_mistakes_are_reported_without_secrets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("q.toml");
    std::fs::write(
        &path,
        r#"
[accounts.ding]
platform = "dingtalk"
client_id = "dingabc"
robot_code = ""
api_base = "ftp://api.example"


[accounts.hook]
platform = "dingtalk"
webhook = "ftp://oapi.example/robot/send?access_token=TOPSECRET"
secret = ""
keyword = " "
events = true

[accounts.good]
platform = "dingtalk"
webhook = "https://oapi.dingtalk.com/robot/send?access_token=TOPSECRET"
secret = "SECabc"

[accounts.hub]
platform = "api"
listen = "127.0.0.1:1"

[[links]]
groups = ["hub:a", "ding:cid=="]
to = ["good:ops"]
"#,
    )
    .expect("write");
    let env: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    let error = qunbridge::config::Config::from_file(&path, &env).expect_err("invalid");
    let expected = [
        "account \"ding\": `client_secret` is missing",
        "account \"ding\": `robot_code` = \"\": is empty",
        "account \"ding\": `api_base` = \"ftp://api.example\"",
        "account \"hook\": `webhook` = \"ftp://oapi.example/robot/send?<redacted>\"",
        "account \"hook\": `secret` = <redacted>: is empty",
        "account \"hook\": `keyword` = \" \": is empty",
        "account \"hook\": `events` is not used by platform `dingtalk` with protocol `webhook`",
    ];
    for line in expected {
        assert!(
            error.problems.iter().any(|p| p.contains(line)),
            "missing {line:?} in {:#?}",
            error.problems
        );
    }
    assert!(
        !error.to_string().contains("TOPSECRET"),
        "the webhook token leaked: {error}"
    );
    assert!(
        !error.problems.iter().any(|p| p.contains("\"good\"")),
        "a valid webhook account was refused: {error}"
    );

    // `events` is true or false; anything else is named with its value.
    std::fs::write(
        &path,
        r#"
[accounts.ding]
platform = "dingtalk"
client_id = "dingabc"
client_secret = "app-secret"
events = "sometimes"
"#,
    )
    .expect("write");
    let error = qunbridge::config::Config::from_file(&path, &env).expect_err("invalid");
    assert!(
        error
            .problems
            .iter()
            .any(|p| p.contains("accounts.ding.events")
                && p.contains("\"sometimes\"")
                && p.contains("boolean")),
        "{:#?}",
        error.problems
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_bot_message_reaches_a_linked_qq_group() {
    let broker = Broker::embedded();
    let peer = DingTalkPeer::start(robots()).await;
    let (qq, qq_url) =
        qunbridge_tests::onebot11_peer::OneBot11Peer::serve(2854196310, None, 0).await;
    let api = api_addr();
    let extra = format!("\n[accounts.qq]\nplatform = \"qq\"\nurl = \"{qq_url}\"\n");
    let config = config(
        &broker,
        api,
        &peer,
        CLIENT_SECRET,
        ", \"qq:735021844\"",
        &extra,
    );
    let daemon = Daemon::start(&config).await;
    let connection = peer.next_connection().await;
    qq.wait_connections(1).await;

    let frame = connection.callback(&text_message(GROUP, "msgQ1==", "张三", " 周会改到三点"));
    let send = qq.next_action("send_group_msg").await;
    assert_eq!(send["params"]["group_id"], 735021844);
    assert_eq!(
        send["params"]["message"],
        json!([{"type": "text", "data": {"text": "[钉钉] 张三: 周会改到三点"}}])
    );
    assert_eq!(peer.wait_replies(&frame, 1).await[0]["code"], 200);
    daemon.stop().await.expect("clean stop");
}

/// A second group of the same app robot.
const GROUP2: &str = "cidSecond0Lw9==";

/// The `[media]` table that lets the daemon fetch pictures from the local file server.
const MEDIA_FROM_LOCALHOST: &str = "\n[media]\nallow_hosts = [\"127.0.0.1\"]\n";

/// Posts from Ann into `api` group `a`: `text`, then the picture at `url`.
async fn say_with_picture(api: SocketAddr, text: &str, url: &str) {
    let (status, body) = post_message(
        api,
        "a",
        json!({"sender": {"id": "u1", "name": "Ann"},
               "segments": [{"type": "text", "text": text}, {"type": "image", "url": url}]}),
        None,
    )
    .await;
    assert_eq!(status, 202, "{body}");
}

/// The accepted `sampleImageMsg` sends, once there are at least `count`.
async fn picture_sends(peer: &DingTalkPeer, count: usize) -> Vec<GroupSend> {
    peer.wait_for(&format!("{count} picture sends"), |peer| {
        let sends: Vec<GroupSend> = peer
            .group_sends()
            .into_iter()
            .filter(|s| s.accepted && s.photo_url().is_some())
            .collect();
        (sends.len() >= count).then_some(sends)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_picture_is_uploaded_while_its_message_waits_for_the_pacing_token() {
    let files = FileServer::start().await;
    let picture = png(41_000);
    files.serve("/ahead.png", Route::ok(picture.clone()));
    let peer = DingTalkPeer::start(robots()).await;
    let api = api_addr();
    let extra = format!("{MEDIA_FROM_LOCALHOST}\n[limits.ding]\nper_group = \"1/3s\"\nburst = 1\n");
    let daemon = Daemon::start(&config(
        &Broker::embedded(),
        api,
        &peer,
        CLIENT_SECRET,
        "",
        &extra,
    ))
    .await;
    let in_group = |peer: &DingTalkPeer| -> Vec<GroupSend> {
        peer.group_sends()
            .into_iter()
            .filter(|s| s.accepted && s.group() == GROUP)
            .collect()
    };
    // A text takes the group's token; the next one comes three seconds later.
    let (status, body) = post_message(
        api,
        "a",
        json!({"sender": {"id": "u1", "name": "Ann"}, "text": "先说"}),
        None,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    peer.wait_for("the first text", |peer| {
        (!in_group(peer).is_empty()).then_some(())
    })
    .await;
    say_with_picture(api, "看图", &files.url("/ahead.png")).await;
    // The picture is uploaded while its message waits: the upload sent nothing to the group.
    // (Waited for once the peer has read the whole upload: its call is counted when the
    // request starts, before the 41 KB body is in.)
    let sent_at_upload = peer
        .wait_for("the upload", |peer| {
            (!peer.uploads().is_empty()).then(|| in_group(peer).len())
        })
        .await;
    assert_eq!(sent_at_upload, 1, "only the first text before the token");
    assert_eq!(peer.uploads()[0].bytes, picture);
    // Then the text, and the picture with the media id of that upload, uploaded once.
    let sends = picture_sends(&peer, 1).await;
    let photo = format!("@{}", peer.uploads()[0].media_id);
    assert_eq!(sends[0].photo_url().as_deref(), Some(photo.as_str()));
    let all = in_group(&peer);
    assert_eq!(all.len(), 3, "{all:?}");
    assert_eq!(all[0].content().as_deref(), Some("[API] Ann: 先说"));
    assert_eq!(all[1].content().as_deref(), Some("[API] Ann: 看图"));
    assert_eq!(peer.upload_calls(), 1, "uploaded once");
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_picture_to_two_groups_of_one_app_robot_is_uploaded_once() {
    let files = FileServer::start().await;
    let picture = png(40_000);
    files.serve("/cat.png", Route::ok(picture.clone()));
    let peer = DingTalkPeer::start(robots()).await;
    let api = api_addr();
    let config = config(
        &Broker::embedded(),
        api,
        &peer,
        CLIENT_SECRET,
        &format!(", \"ding:{GROUP2}\""),
        MEDIA_FROM_LOCALHOST,
    );
    // Alone: the upload series has no account label, and other tests here upload too.
    let daemon = Daemon::start_alone(&config).await;
    let uploaded =
        "qunbridge_media_upload_total{platform=\"dingtalk\",kind=\"image\",outcome=\"ok\"}";
    let reused =
        "qunbridge_media_upload_total{platform=\"dingtalk\",kind=\"image\",outcome=\"reused\"}";
    let failed =
        "qunbridge_media_upload_total{platform=\"dingtalk\",kind=\"image\",outcome=\"failed\"}";
    let (uploaded_before, reused_before, failed_before) = (
        daemon.counter(uploaded).await,
        daemon.counter(reused).await,
        daemon.counter(failed).await,
    );
    say_with_picture(api, "看图", &files.url("/cat.png")).await;

    let sends = picture_sends(&peer, 2).await;
    let mut groups: Vec<String> = sends.iter().map(GroupSend::group).collect();
    groups.sort();
    let mut expected = vec![GROUP.to_owned(), GROUP2.to_owned()];
    expected.sort();
    assert_eq!(groups, expected, "one picture in each group");
    let uploads = peer.uploads();
    assert_eq!(uploads.len(), 1, "uploaded once for both groups");
    assert_eq!(peer.upload_calls(), 1);
    assert_eq!(uploads[0].kind, "image");
    assert_eq!(uploads[0].bytes, picture, "the upload is the served file");
    let photo = format!("@{}", uploads[0].media_id);
    assert!(
        sends
            .iter()
            .all(|s| s.photo_url().as_deref() == Some(photo.as_str())),
        "both sends name the one media id: {sends:?}"
    );
    assert_eq!(files.requests("/cat.png"), 1, "fetched once");
    assert_eq!(
        (
            daemon.counter(uploaded).await - uploaded_before,
            daemon.counter(reused).await - reused_before,
            daemon.counter(failed).await - failed_before,
        ),
        (1.0, 1.0, 0.0),
        "one upload for the first group, reused for the second"
    );

    // In each group the text came first, without the picture.
    let all = peer.group_sends();
    for group in [GROUP, GROUP2] {
        let in_group: Vec<&GroupSend> = all
            .iter()
            .filter(|s| s.accepted && s.group() == group)
            .collect();
        assert_eq!(in_group.len(), 2, "{group}: {in_group:?}");
        assert_eq!(in_group[0].content().as_deref(), Some("[API] Ann: 看图"));
        assert!(in_group[1].photo_url().is_some());
    }

    // The custom robot cannot upload and has no media server here: the placeholder, never
    // the source URL.
    let post = peer.wait_webhook_post(0, |c| c.contains("看图")).await;
    assert_eq!(post.msgtype, "text");
    assert_eq!(post.content, format!("{KEYWORD} [API] Ann: 看图[图片]"));
    assert!(!post.content.contains("http"), "{}", post.content);
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_custom_robot_shows_a_picture_as_a_markdown_link_of_the_media_server() {
    let files = FileServer::start().await;
    let picture = png(20_000);
    files.serve("/cat.png", Route::ok(picture.clone()));
    let peer = DingTalkPeer::start(robots()).await;
    let api = api_addr();
    // The media server's own address as its public one, so the link can be followed; links
    // live as long as `cache_ttl`, 5 s here, so the test can see one expire.
    let serve = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let base = format!("http://{serve}");
    let media = format!(
        "{MEDIA_FROM_LOCALHOST}serve_listen = \"{serve}\"\npublic_base_url = \"{base}\"\nlink_secret = \"0123456789abcdef0123456789abcdef\"\ncache_ttl = \"5s\"\n"
    );
    let config = config(&Broker::embedded(), api, &peer, CLIENT_SECRET, "", &media);
    let daemon = Daemon::start(&config).await;
    say_with_picture(api, "看图", &files.url("/cat.png")).await;

    let text = peer.wait_webhook_post(0, |c| c.contains("看图")).await;
    assert_eq!(text.msgtype, "text");
    assert_eq!(text.content, format!("{KEYWORD} [API] Ann: 看图"));
    let picture_post = peer.wait_webhook_post(0, |c| c.contains("![](")).await;
    assert_eq!(picture_post.msgtype, "markdown");
    assert!(picture_post.sign_valid);
    assert!(
        picture_post.content.contains(KEYWORD),
        "the keyword is kept: {}",
        picture_post.content
    );
    let link_start = format!("![]({base}/m/{}.png?", sha256_hex(&picture));
    assert!(
        picture_post.content.contains(&link_start),
        "a signed link of the media server: {}",
        picture_post.content
    );
    assert!(!picture_post.content.contains(&files.url("/cat.png")));
    // The link answers with the bytes; a tampered one 403; once expired 410.
    let link = picture_post
        .content
        .split("![](")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .expect("a link")
        .to_owned();
    let http = reqwest::Client::new();
    let answer = http.get(&link).send().await.expect("answered");
    assert_eq!(answer.status(), 200);
    assert_eq!(
        answer.headers()["content-type"].to_str().expect("type"),
        "image/png"
    );
    assert_eq!(answer.bytes().await.expect("body").to_vec(), picture);
    let tampered = format!("{}x", link.trim_end_matches(|c: char| c != '='));
    let answer = http.get(&tampered).send().await.expect("answered");
    assert_eq!(answer.status(), 403);
    let expiry: u64 = link
        .split("e=")
        .nth(1)
        .and_then(|rest| rest.split('&').next())
        .and_then(|e| e.parse().ok())
        .expect("an expiry");
    loop {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs();
        if now > expiry {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let answer = http.get(&link).send().await.expect("answered");
    assert_eq!(answer.status(), 410);
    let order: Vec<String> = peer
        .webhook_posts()
        .into_iter()
        .map(|p| p.msgtype)
        .collect();
    assert_eq!(order, ["text", "markdown"], "the picture follows its text");
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dingtalk_picture_is_fetched_through_its_download_code_and_uploaded_to_another_group() {
    let files = FileServer::start().await;
    let picture = png(30_000);
    files.serve("/dc-sunset.png", Route::ok(picture.clone()));
    let peer = DingTalkPeer::start(robots()).await;
    peer.serve_downloads_from(&files.url(""));
    let api = api_addr();
    let config = config(
        &Broker::embedded(),
        api,
        &peer,
        CLIENT_SECRET,
        &format!(", \"ding:{GROUP2}\""),
        MEDIA_FROM_LOCALHOST,
    );
    let daemon = Daemon::start(&config).await;
    let gateway = peer.next_connection().await;
    gateway.callback(&picture_message(GROUP, "msg-pic-1", "张三", "dc-sunset"));

    let sends = picture_sends(&peer, 1).await;
    assert_eq!(
        sends[0].group(),
        GROUP2,
        "not back into the group it came from"
    );
    let uploads = peer.uploads();
    assert_eq!(uploads.len(), 1);
    assert_eq!(
        uploads[0].bytes, picture,
        "the bytes behind the download code"
    );
    let downloads = peer.downloads();
    assert_eq!(
        downloads.len(),
        1,
        "DingTalk is asked once for the picture: {downloads:?}"
    );
    assert_eq!(downloads[0].1["downloadCode"], "dc-sunset");
    assert_eq!(files.requests("/dc-sunset.png"), 1, "fetched once");
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_picture_dingtalk_refuses_becomes_its_placeholder_and_the_text_is_sent_once() {
    let files = FileServer::start().await;
    files.serve("/cat.png", Route::ok(png(10_000)));
    let peer = DingTalkPeer::start(robots()).await;
    peer.refuse_uploads(true);
    let api = api_addr();
    let config = config(
        &Broker::embedded(),
        api,
        &peer,
        CLIENT_SECRET,
        "",
        MEDIA_FROM_LOCALHOST,
    );
    let daemon = Daemon::start(&config).await;
    say_with_picture(api, "看图", &files.url("/cat.png")).await;
    peer.wait_group_send(|c| c == "[图片]").await;
    // A later message: everything of the first one was sent before it.
    say(api, "之后").await;
    peer.wait_group_send(|c| c.contains("之后")).await;
    let contents: Vec<String> = peer
        .group_sends()
        .into_iter()
        .filter(|s| s.accepted)
        .filter_map(|s| s.content())
        .collect();
    assert_eq!(
        contents,
        ["[API] Ann: 看图", "[图片]", "[API] Ann: 之后"],
        "the text once, then the placeholder, and the message was not retried"
    );
    assert!(peer.upload_calls() >= 1, "the upload was tried");
    assert!(picture_sends_now(&peer).is_empty());
    daemon.stop().await.expect("clean stop");
}

/// The accepted `sampleImageMsg` sends so far.
fn picture_sends_now(peer: &DingTalkPeer) -> Vec<GroupSend> {
    peer.group_sends()
        .into_iter()
        .filter(|s| s.accepted && s.photo_url().is_some())
        .collect()
}
