//! End-to-end: QQ groups through OneBot v11, with a scripted implementation over real
//! WebSockets in both transports, the real broker and the real relay. Asserted: what arrives
//! in the linked `api` group, and the exact actions qunbridge calls on the implementation.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use qunbridge_tests::onebot11_peer::{
    group_message, member_decrease, member_increase, OneBot11Peer,
};
use qunbridge_tests::{free_port, post_message, Broker, Daemon, RawMqtt, SseClient};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// The bot's QQ number in every scenario.
const BOT: i64 = 2854196310;

/// A config linking QQ groups 735021844 and 111 (one account) with `api` group `a`, with
/// pictures passed through by their source URLs (what qunbridge did before it fetched
/// pictures; tests/pictures.rs covers the native path).
fn config(broker: &Broker, qq: &str, api: SocketAddr) -> String {
    config_for_account("qq", broker, qq, api)
}

/// [`config`] with the QQ account named `account`, for a test that asserts on a metric
/// series labelled with its account: no sibling test of this binary uses that name.
fn config_for_account(account: &str, broker: &Broker, qq: &str, api: SocketAddr) -> String {
    format!(
        r#"{broker}
[accounts.{account}]
platform = "qq"
media = "passthrough"
{qq}

[accounts.hub]
platform = "api"
listen = "{api}"
media = "passthrough"

[[links]]
name = "fans"
groups = ["{account}:735021844", "{account}:111", "hub:a"]
"#,
        broker = broker.toml()
    )
}

/// The series of messages dropped for `reason`; it has no account label, so only a daemon
/// started with [`Daemon::start_alone`] can read its own drops in it.
fn dropped(reason: &str) -> String {
    format!("qunbridge_messages_dropped_total{{reason=\"{reason}\"}}")
}

fn api_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// The first `send_group_msg` to `group`.
async fn next_send_to(peer: &OneBot11Peer, group: i64) -> serde_json::Value {
    loop {
        let action = peer.next_action("send_group_msg").await;
        if action["params"]["group_id"] == group {
            return action;
        }
    }
}

/// The next `count` `send_group_msg` messages, by group: the groups' queues run side by side,
/// so their sends arrive in any order.
async fn sends_by_group(
    peer: &OneBot11Peer,
    count: usize,
) -> std::collections::BTreeMap<i64, Vec<serde_json::Value>> {
    let mut by_group: std::collections::BTreeMap<i64, Vec<serde_json::Value>> = Default::default();
    for _ in 0..count {
        let send = peer.next_action("send_group_msg").await;
        let group = send["params"]["group_id"]
            .as_i64()
            .expect("numeric group id");
        by_group
            .entry(group)
            .or_default()
            .push(send["params"]["message"].clone());
    }
    by_group
}

/// Posts `text` to `api` group `a` and asserts that the next `send_group_msg` to each QQ group
/// is that text. Each group's queue is ordered, so a further attempt of an earlier message
/// would reach the peer before the marker does: this closes a "nothing more was sent" check.
async fn send_marker(peer: &OneBot11Peer, api: SocketAddr, text: &str) {
    let (status, _) = post_message(
        api,
        "a",
        json!({"sender": {"id": "u1"}, "text": text}),
        None,
    )
    .await;
    assert_eq!(status, 202);
    let mut groups = Vec::new();
    for _ in 0..2 {
        let send = peer.next_action("send_group_msg").await;
        assert_eq!(
            send["params"]["message"],
            json!([{"type": "text", "data": {"text": format!("[API] u1: {text}")}}]),
            "nothing but the marker {text:?} was sent"
        );
        groups.push(
            send["params"]["group_id"]
                .as_i64()
                .expect("numeric group id"),
        );
    }
    groups.sort();
    assert_eq!(groups, vec![111, 735021844]);
}

/// QQ → api in array and CQ-string format, and api → QQ as `send_group_msg`.
async fn relays_both_ways(peer: &OneBot11Peer, api: SocketAddr) {
    let mut a = SseClient::open(&format!("http://{api}/api/v1/groups/a/events"), None, None).await;
    peer.push_event(group_message(
        735021844,
        1437420188,
        -1730113492,
        "Alice | Ops",
        "Alice",
        json!([
            {"type": "at", "data": {"qq": 2854196310u64}},
            {"type": "text", "data": {"text": " see [docs], a&b"}},
            {"type": "image", "data": {"file": "9F3C1A.jpg", "url": "https://img.example.invalid/d?id=9F3C1A&s=1"}},
            {"type": "record", "data": {"file": "v.amr"}}
        ]),
    ));
    let first = a.next().await.json();
    assert_eq!(
        first["text"],
        "[QQ] Alice | Ops: @2854196310 see [docs], a&b[图片] https://img.example.invalid/d?id=9F3C1A&s=1[语音]"
    );
    assert_eq!(first["origin"]["message_id"], "-1730113492");

    // CQ-string format, ids as strings, an empty card: the nickname is used.
    let mut cq = group_message(735021844, 42, 7, "", "Bob", json!(null));
    cq["message"] = json!("[CQ:face,id=178]x&#91;1&#93; &amp; [CQ:at,qq=all]");
    cq["group_id"] = json!("735021844");
    peer.push_event(cq);
    assert_eq!(
        a.next().await.json()["text"],
        "[QQ] Bob: [表情178]x[1] & @全体成员"
    );

    let (status, _) = post_message(
        api,
        "a",
        json!({"sender": {"id": "u1", "name": "Ann"}, "text": "hi"}),
        None,
    )
    .await;
    assert_eq!(status, 202);
    let mut targets = Vec::new();
    while targets.len() < 2 {
        let action = peer.next_action("send_group_msg").await;
        // The QQ messages above were relayed to group 111 as well; skip those.
        if action["params"]["message"][0]["data"]["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("[QQ]"))
        {
            continue;
        }
        assert_eq!(
            action["params"]["message"],
            json!([{"type": "text", "data": {"text": "[API] Ann: hi"}}])
        );
        assert!(
            action["params"]["group_id"].is_i64(),
            "numeric group_id: {action}"
        );
        targets.push(action["params"]["group_id"].as_i64().expect("number"));
    }
    targets.sort();
    assert_eq!(targets, vec![111, 735021844]);
}

async fn forward_transport_relays_both_ways(broker: Broker) {
    let (peer, url) = OneBot11Peer::serve(BOT, Some("s3cret"), 0).await;
    let api = api_addr();
    let qq = format!("url = \"{url}\"\naccess_token = \"s3cret\"");
    let daemon = Daemon::start(&config(&broker, &qq, api)).await;
    peer.wait_connections(1).await;
    relays_both_ways(&peer, api).await;
    daemon.stop().await.expect("clean stop");
}

mod forward_transport_relays_both_ways {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded() {
        super::forward_transport_relays_both_ways(qunbridge_tests::Broker::embedded()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mosquitto() {
        super::forward_transport_relays_both_ways(qunbridge_tests::Broker::mosquitto().await).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reverse_transport_relays_both_ways_and_checks_the_token() {
    let broker = Broker::embedded();
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let api = api_addr();
    let qq = format!("listen = \"{listen}\"\naccess_token = \"s3cret\"");
    let daemon = Daemon::start(&config(&broker, &qq, api)).await;

    let wrong = OneBot11Peer::reverse(BOT, Some("guess"), 0);
    assert_eq!(
        wrong.connect(listen).await,
        Err(403),
        "wrong token refused before the upgrade"
    );
    let missing = OneBot11Peer::reverse(BOT, None, 0);
    assert_eq!(
        missing.connect(listen).await,
        Err(401),
        "empty `Bearer ` counts as no token"
    );

    let peer = OneBot11Peer::reverse(BOT, Some("s3cret"), 0);
    peer.connect(listen).await.expect("accepted");
    relays_both_ways(&peer, api).await;

    // The implementation drops the socket and reconnects, as NapCat does.
    peer.drop_connection();
    tokio::time::sleep(Duration::from_millis(100)).await;
    peer.connect(listen).await.expect("accepted again");
    let mut a = SseClient::open(&format!("http://{api}/api/v1/groups/a/events"), None, None).await;
    peer.push_event(group_message(
        111,
        5,
        1,
        "Cat",
        "c",
        json!([{"type": "text", "data": {"text": "back"}}]),
    ));
    assert_eq!(a.next().await.json()["text"], "[QQ] Cat: back");
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_messages_are_never_relayed() {
    let broker = Broker::embedded();
    let (peer, url) = OneBot11Peer::serve(BOT, None, 0).await;
    let api = api_addr();
    let daemon = Daemon::start_alone(&config(&broker, &format!("url = \"{url}\""), api)).await;
    peer.wait_connections(1).await;
    let mut a = SseClient::open(&format!("http://{api}/api/v1/groups/a/events"), None, None).await;
    let own_before = daemon.counter(&dropped("own_message")).await;

    let text = |t: &str| json!([{"type": "text", "data": {"text": t}}]);
    let mut sent = group_message(735021844, BOT, 1, "", "bot", text("echo 1"));
    sent["post_type"] = json!("message_sent");
    peer.push_event(sent);
    peer.push_event(group_message(735021844, BOT, 2, "", "bot", text("echo 2")));
    peer.push_event(group_message(735021844, 42, 3, "", "Bob", text("real")));
    assert_eq!(a.next().await.json()["text"], "[QQ] Bob: real");
    // The bot's own messages came before this one: had they been relayed, they would be
    // ahead of it in `a`.
    peer.push_event(group_message(735021844, 42, 4, "", "Bob", text("marker")));
    assert_eq!(a.next().await.json()["text"], "[QQ] Bob: marker");
    let own = daemon.counter(&dropped("own_message")).await - own_before;
    assert!(own >= 1.0, "own messages dropped: {own}");
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recall_and_reply_follow_the_relayed_copies() {
    let broker = Broker::embedded();
    let (peer, url) = OneBot11Peer::serve(BOT, None, 0).await;
    let api = api_addr();
    let daemon = Daemon::start(&config(&broker, &format!("url = \"{url}\""), api)).await;
    peer.wait_connections(1).await;
    let mut a = SseClient::open(&format!("http://{api}/api/v1/groups/a/events"), None, None).await;

    peer.push_event(group_message(
        735021844,
        42,
        -100,
        "",
        "Bob",
        json!([{"type": "text", "data": {"text": "original"}}]),
    ));
    let copy = next_send_to(&peer, 111).await;
    assert_eq!(
        copy["params"]["message"][0]["data"]["text"],
        "[QQ] Bob: original"
    );
    assert_eq!(a.next().await.json()["text"], "[QQ] Bob: original");
    // The peer gave the copy in group 111 message id 9001.

    // A reply to the original becomes a native reply to the copy in 111.
    peer.push_event(group_message(
        735021844,
        43,
        -101,
        "",
        "Cat",
        json!([{"type": "reply", "data": {"id": "-100"}}, {"type": "text", "data": {"text": "agreed"}}]),
    ));
    let reply = next_send_to(&peer, 111).await;
    assert_eq!(
        reply["params"]["message"][0],
        json!({"type": "reply", "data": {"id": "9001"}})
    );
    assert_eq!(
        reply["params"]["message"][1]["data"]["text"],
        "[QQ] Cat: agreed"
    );
    a.next().await;

    // Recalling the original in 735021844 recalls the copy in 111 and tells the api group.
    peer.push_event(
        json!({"time": 1718880100, "self_id": BOT, "post_type": "notice",
        "notice_type": "group_recall", "group_id": 735021844, "user_id": 42,
        "operator_id": 42, "message_id": -100}),
    );
    let delete = peer.next_action("delete_msg").await;
    assert_eq!(delete["params"]["message_id"], 9001);
    let recall = a.next().await.json();
    assert_eq!(recall["kind"], "recall");
    assert_eq!(recall["origin"]["message_id"], "-100");
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_is_reconnected_without_a_restart() {
    let broker = Broker::embedded();
    let (peer, url) = OneBot11Peer::serve(BOT, None, 0).await;
    let api = api_addr();
    let qq = format!("url = \"{url}\"");
    let daemon = Daemon::start(&config_for_account("qq-dropped", &broker, &qq, api)).await;
    peer.wait_connections(1).await;
    peer.drop_connection();
    peer.wait_connections(2).await;
    let mut a = SseClient::open(&format!("http://{api}/api/v1/groups/a/events"), None, None).await;
    peer.push_event(group_message(
        111,
        5,
        1,
        "",
        "Dee",
        json!([{"type": "text", "data": {"text": "again"}}]),
    ));
    assert_eq!(a.next().await.json()["text"], "[QQ] Dee: again");
    let reconnects = daemon
        .counter("qunbridge_reconnects_total{account=\"qq-dropped\"}")
        .await;
    assert!(
        reconnects >= 1.0,
        "reconnects of this test's account: {reconnects}"
    );
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_heartbeats_make_qunbridge_reconnect() {
    let broker = Broker::embedded();
    let (peer, url) = OneBot11Peer::serve(BOT, None, 200).await;
    let api = api_addr();
    let daemon = Daemon::start(&config(&broker, &format!("url = \"{url}\""), api)).await;
    peer.wait_connections(1).await;
    // Let qunbridge learn the interval, then go silent while keeping the socket open.
    tokio::time::sleep(Duration::from_millis(500)).await;
    peer.stop_heartbeats();
    peer.wait_connections(2).await;
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_reported_and_not_retried_in_a_tight_loop() {
    let broker = Broker::embedded();
    let (peer, url) = OneBot11Peer::serve(BOT, Some("right"), 0).await;
    let api = api_addr();
    let qq = format!("url = \"{url}\"\naccess_token = \"wrong\"");
    let daemon = Daemon::start(&config(&broker, &qq, api)).await;
    let deadline = tokio::time::Instant::now() + qunbridge_tests::PATIENCE;
    while peer.auth_refusals.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no connection attempt"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        peer.auth_refusals.load(Ordering::SeqCst),
        1,
        "retried on the slow schedule"
    );
    assert_eq!(peer.connections.load(Ordering::SeqCst), 0);
    let ready: serde_json::Value = reqwest::get(format!("http://{}/readyz", daemon.admin))
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    let qq_state = ready["accounts"]
        .as_array()
        .expect("accounts")
        .iter()
        .find(|a| a["account"] == "qq")
        .expect("qq listed")["state"]
        .clone();
    assert_eq!(qq_state, "auth_failed");
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_are_counted_and_the_connection_keeps_working() {
    let broker = Broker::embedded();
    let (peer, url) = OneBot11Peer::serve(BOT, None, 0).await;
    let api = api_addr();
    let daemon = Daemon::start_alone(&config(&broker, &format!("url = \"{url}\""), api)).await;
    peer.wait_connections(1).await;
    let malformed_before = daemon.counter(&dropped("malformed")).await;
    let mut a = SseClient::open(&format!("http://{api}/api/v1/groups/a/events"), None, None).await;
    peer.push(Message::Text("{not json".into()));
    peer.push(Message::Binary(vec![0xff, 0xfe, 0x00].into()));
    // A binary frame that is UTF-8 JSON is read like a text frame.
    let binary = group_message(
        111,
        5,
        2,
        "",
        "Eve",
        json!([{"type": "text", "data": {"text": "二进制"}}]),
    );
    peer.push(Message::Binary(binary.to_string().into_bytes().into()));
    peer.push_event(
        json!({"post_type": "message", "message_type": "group", "user_id": 1, "message_id": 2}),
    );
    peer.push_event(json!({"hello": "world"}));
    peer.push_event(json!({"post_type": "request", "request_type": "friend"}));
    peer.push_event(group_message(
        111,
        5,
        1,
        "",
        "Eve",
        json!([{"type": "mystery", "data": {}}, {"type": "text", "data": {"text": "ok"}}]),
    ));
    assert_eq!(a.next().await.json()["text"], "[QQ] Eve: 二进制");
    assert_eq!(a.next().await.json()["text"], "[QQ] Eve: [mystery]ok");
    assert_eq!(
        peer.connections.load(Ordering::SeqCst),
        1,
        "same connection"
    );
    let malformed = daemon.counter(&dropped("malformed")).await - malformed_before;
    assert!(malformed >= 4.0, "malformed frames counted: {malformed}");
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_sends_are_retried_then_dropped_and_counted() {
    let broker = Broker::embedded();
    let (peer, url) = OneBot11Peer::serve(BOT, None, 0).await;
    let api = api_addr();
    let daemon = Daemon::start_alone(&config(&broker, &format!("url = \"{url}\""), api)).await;
    peer.wait_connections(1).await;
    let failed_before = daemon.counter(&dropped("send_failed")).await;

    // Risk control (NapCat 1200) twice, then it goes through: three identical attempts.
    peer.fail_next_sends(2, 1200);
    let (status, _) = post_message(
        api,
        "a",
        json!({"sender": {"id": "u1"}, "text": "persist"}),
        None,
    )
    .await;
    assert_eq!(status, 202);
    let mut attempts = Vec::new();
    while attempts.len() < 4 {
        attempts.push(peer.next_action("send_group_msg").await);
    }
    // Each destination has its own queue: the two failures hit whichever sends came first,
    // and each failed send was tried again, identically, until both groups had the message.
    let mut groups: Vec<i64> = attempts
        .iter()
        .map(|a| a["params"]["group_id"].as_i64().expect("numeric group id"))
        .collect();
    groups.sort();
    groups.dedup();
    assert_eq!(groups, vec![111, 735021844]);
    assert!(attempts.iter().all(|a| a["params"]["message"]
        == json!([{"type": "text", "data": {"text": "[API] u1: persist"}}])));
    // Two failures, two retries, no more.
    send_marker(&peer, api, "marker 1").await;

    // An unknown-action style refusal (1404) is permanent: dropped at once, counted.
    peer.fail_next_sends(1, 1404);
    post_message(
        api,
        "a",
        json!({"sender": {"id": "u1"}, "text": "doomed"}),
        None,
    )
    .await;
    let mut after = Vec::new();
    while after.len() < 2 {
        after.push(peer.next_action("send_group_msg").await);
    }
    // No retry after a permanent failure.
    send_marker(&peer, api, "marker 2").await;
    let failed = daemon.counter(&dropped("send_failed")).await - failed_before;
    assert_eq!(failed, 1.0, "the one permanent failure is counted, once");
    daemon.stop().await.expect("clean stop");
}

/// NapCat fails a whole message with 1200 when it cannot fetch one of its pictures: the
/// message goes once more at once with the picture as its placeholder, so the text arrives
/// on the second attempt instead of waiting for (and losing to) five identical retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_whose_picture_fails_is_sent_once_more_as_text() {
    let broker = Broker::embedded();
    let (peer, url) = OneBot11Peer::serve(BOT, None, 0).await;
    let api = api_addr();
    let daemon = Daemon::start_alone(&config(&broker, &format!("url = \"{url}\""), api)).await;
    peer.wait_connections(1).await;
    let fallback =
        "qunbridge_media_fallback_total{platform=\"qq\",kind=\"image\",reason=\"send_failed\"}";
    let fallbacks_before = daemon.counter(fallback).await;
    let failed_before = daemon.counter(&dropped("send_failed")).await;

    // One failure: whichever group's send comes first gets it (their queues run side by side).
    peer.fail_next_sends(1, 1200);
    let (status, _) = post_message(
        api,
        "a",
        json!({"sender": {"id": "u1"}, "segments": [
            {"type": "text", "text": "look "},
            {"type": "image", "url": "https://93.184.215.14/p.png"},
            {"type": "image", "url": "https://93.184.215.14/s.gif", "sticker": true}
        ]}),
        None,
    )
    .await;
    assert_eq!(status, 202);
    let carried = json!([
        {"type": "text", "data": {"text": "[API] u1: look "}},
        {"type": "image", "data": {"file": "https://93.184.215.14/p.png"}},
        {"type": "image", "data": {"file": "https://93.184.215.14/s.gif",
            "sub_type": 1, "summary": "[动画表情]"}}
    ]);
    let placeholders =
        json!([{"type": "text", "data": {"text": "[API] u1: look [图片][动画表情]"}}]);
    let by_group = sends_by_group(&peer, 3).await;
    let mut seen: Vec<Vec<serde_json::Value>> = by_group.into_values().collect();
    seen.sort_by_key(Vec::len);
    assert_eq!(
        seen,
        vec![vec![carried.clone()], vec![carried, placeholders],],
        "both groups got the pictures, the sticker as a sticker; the group whose send failed \
         got the text with placeholders once, at once"
    );
    // Nothing more: no retry of either form.
    send_marker(&peer, api, "after pictures").await;
    assert_eq!(daemon.counter(fallback).await - fallbacks_before, 1.0);
    assert_eq!(
        daemon.counter(&dropped("send_failed")).await - failed_before,
        0.0,
        "nothing was dropped"
    );
    daemon.stop().await.expect("clean stop");
}

/// NapCat downloads every picture URL it is given, so an `api` client could make it fetch
/// an internal address: such a URL is never handed on (the placeholder goes instead, and
/// the refusal is counted), unless `[media] allow_hosts` names the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn picture_urls_of_internal_hosts_are_never_handed_to_napcat() {
    let broker = Broker::embedded();
    let (peer, url) = OneBot11Peer::serve(BOT, None, 0).await;
    let api = api_addr();
    let internal = format!("http://127.0.0.1:{}/metrics", free_port());
    for (round, allowed) in [false, true].into_iter().enumerate() {
        let mut config = config(&broker, &format!("url = \"{url}\""), api);
        if allowed {
            config.push_str("\n[media]\nallow_hosts = [\"127.0.0.1\"]\n");
        }
        let daemon = Daemon::start_alone(&config).await;
        peer.wait_connections(round + 1).await;
        let blocked =
            "qunbridge_media_fetch_total{platform=\"qq\",kind=\"image\",outcome=\"blocked\"}";
        let blocked_before = daemon.counter(blocked).await;
        let (status, _) = post_message(
            api,
            "a",
            json!({"sender": {"id": "u1"}, "segments": [
                {"type": "text", "text": format!("see {round} ")},
                {"type": "image", "url": internal},
                {"type": "image", "url": "https://93.184.215.14/ok.png"}
            ]}),
            None,
        )
        .await;
        assert_eq!(status, 202);
        let expected = if allowed {
            json!([
                {"type": "text", "data": {"text": format!("[API] u1: see {round} ")}},
                {"type": "image", "data": {"file": internal}},
                {"type": "image", "data": {"file": "https://93.184.215.14/ok.png"}}
            ])
        } else {
            json!([
                {"type": "text", "data": {"text": format!("[API] u1: see {round} [图片]")}},
                {"type": "image", "data": {"file": "https://93.184.215.14/ok.png"}}
            ])
        };
        let by_group = sends_by_group(&peer, 2).await;
        assert_eq!(
            by_group,
            [111, 735021844]
                .into_iter()
                .map(|group| (group, vec![expected.clone()]))
                .collect(),
            "allowed: {allowed}"
        );
        let refused = daemon.counter(blocked).await - blocked_before;
        assert_eq!(refused, if allowed { 0.0 } else { 2.0 }, "one per QQ group");
        daemon.stop().await.expect("clean stop");
        peer.drop_connection();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_reverse_listener_serves_several_accounts_by_self_id() {
    let broker = Broker::embedded();
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let api = api_addr();
    let config = format!(
        r#"{broker}
[accounts.qa]
platform = "qq"
listen = "{listen}"
self_id = "1001"
access_token = "ta"

[accounts.qb]
platform = "qq"
listen = "{listen}"
self_id = "1002"
access_token = "tb"

[accounts.hub]
platform = "api"
listen = "{api}"

[[links]]
groups = ["qa:735021844", "hub:a"]

[[links]]
groups = ["qb:222", "hub:b"]
"#,
        broker = broker.toml()
    );
    let daemon = Daemon::start(&config).await;
    let bot_a = OneBot11Peer::reverse(1001, Some("ta"), 0);
    let bot_b = OneBot11Peer::reverse(1002, Some("tb"), 0);
    // Each account checks its own token.
    assert_eq!(
        OneBot11Peer::reverse(1002, Some("ta"), 0)
            .connect(listen)
            .await,
        Err(403)
    );
    assert_eq!(
        OneBot11Peer::reverse(1003, Some("ta"), 0)
            .connect(listen)
            .await,
        Err(403)
    );
    bot_a.connect(listen).await.expect("bot a accepted");
    bot_b.connect(listen).await.expect("bot b accepted");

    let mut a = SseClient::open(&format!("http://{api}/api/v1/groups/a/events"), None, None).await;
    let mut b = SseClient::open(&format!("http://{api}/api/v1/groups/b/events"), None, None).await;
    let text = |t: &str| json!([{"type": "text", "data": {"text": t}}]);
    // Bot b is in bot a's group too: what it says there is a relayed copy, never relayed again.
    bot_a.push_event(group_message(735021844, 1002, 1, "", "bot b", text("copy")));
    bot_a.push_event(group_message(735021844, 42, 2, "", "Ann", text("for a")));
    bot_b.push_event(group_message(222, 43, 3, "", "Bob", text("for b")));
    let on_a = a.next().await.json();
    assert_eq!(on_a["text"], "[QQ] Ann: for a");
    assert_eq!(on_a["origin"]["account"], "qa");
    let on_b = b.next().await.json();
    assert_eq!(on_b["text"], "[QQ] Bob: for b");
    assert_eq!(on_b["origin"]["account"], "qb");

    // Sends go to the socket of the right bot.
    post_message(
        api,
        "b",
        json!({"sender": {"id": "u1", "name": "Ann"}, "text": "to qb"}),
        None,
    )
    .await;
    let send = bot_b.next_action("send_group_msg").await;
    assert_eq!(send["params"]["group_id"], 222);
    // Bot a's first send is a marker posted afterwards: "to qb" never went to its socket.
    post_message(
        api,
        "a",
        json!({"sender": {"id": "u1", "name": "Ann"}, "text": "marker"}),
        None,
    )
    .await;
    let first_on_bot_a = bot_a.next_action("send_group_msg").await;
    assert_eq!(first_on_bot_a["params"]["group_id"], 735021844);
    assert_eq!(
        first_on_bot_a["params"]["message"],
        json!([{"type": "text", "data": {"text": "[API] Ann: marker"}}]),
        "only the marker reached bot a"
    );
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reroutes_the_next_message_without_touching_the_connection() {
    let broker = Broker::embedded();
    let (peer, url) = OneBot11Peer::serve(BOT, None, 0).await;
    let api = api_addr();
    let config = |to: &str| {
        format!(
            "{broker}\n[accounts.qqr]\nplatform = \"qq\"\nurl = \"{url}\"\n\
             [accounts.hub]\nplatform = \"api\"\nlisten = \"{api}\"\n\
             [[links]]\ngroups = [\"qqr:111\", \"hub:{to}\"]\n{marker_link}",
            broker = broker.toml(),
            // Once QQ no longer goes to `a`, `m` does: its messages close the check that
            // nothing else reaches `a`.
            marker_link = if to == "a" {
                ""
            } else {
                "[[links]]\ngroups = [\"hub:m\", \"hub:a\"]\n"
            }
        )
    };
    let daemon = Daemon::start_alone(&config("a")).await;
    peer.wait_connections(1).await;
    let text = |t: &str| json!([{"type": "text", "data": {"text": t}}]);
    let mut a = SseClient::open(&format!("http://{api}/api/v1/groups/a/events"), None, None).await;
    peer.push_event(group_message(111, 5, 1, "", "Eve", text("before")));
    assert_eq!(a.next().await.json()["text"], "[QQ] Eve: before");

    daemon.reload(&config("b")).await;
    let mut b = SseClient::open(&format!("http://{api}/api/v1/groups/b/events"), None, None).await;
    peer.push_event(group_message(111, 5, 2, "", "Eve", text("after")));
    assert_eq!(b.next().await.json()["text"], "[QQ] Eve: after");
    // "after" was routed before the marker was posted: sent to `a`, it would come first.
    let (status, _) = post_message(
        api,
        "m",
        json!({"sender": {"id": "u1"}, "text": "marker"}),
        None,
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(
        a.next().await.json()["text"],
        "[API] u1: marker",
        "no longer routed to a"
    );
    assert_eq!(
        peer.connections.load(Ordering::SeqCst),
        1,
        "the QQ connection was untouched"
    );
    let metrics = daemon.metrics().await;
    assert!(
        !metrics.contains("qunbridge_reconnects_total{account=\"qqr\"}"),
        "{metrics}"
    );
    daemon.stop().await.expect("clean stop");
}

/// Two QQ groups of one account, each linked with an `api` group of its own: `a` with
/// 735021844, `b` with 111.
fn two_links_config(broker: &Broker, qq: &str, api: SocketAddr) -> String {
    format!(
        r#"{broker}
[accounts.qq]
platform = "qq"
{qq}

[accounts.hub]
platform = "api"
listen = "{api}"

[[links]]
name = "slow"
groups = ["qq:735021844", "hub:a"]

[[links]]
name = "quick"
groups = ["qq:111", "hub:b"]
"#,
        broker = broker.toml()
    )
}

/// Posts `text` as `u1` to `api` group `group`.
async fn post_text(api: SocketAddr, group: &str, text: &str) {
    let (status, _) = post_message(
        api,
        group,
        json!({"sender": {"id": "u1"}, "text": text}),
        None,
    )
    .await;
    assert_eq!(status, 202);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_group_does_not_hold_back_another_group_of_the_account() {
    let broker = Broker::embedded();
    let (peer, url) = OneBot11Peer::serve(BOT, None, 0).await;
    // The implementation takes 2 s to answer a send to 735021844 and answers 111 at once.
    peer.answer_sends_to_after(735021844, Duration::from_secs(2));
    let api = api_addr();
    let daemon = Daemon::start(&two_links_config(&broker, &format!("url = \"{url}\""), api)).await;
    peer.wait_connections(1).await;

    post_text(api, "a", "to the slow group").await;
    let slow = next_send_to(&peer, 735021844).await;
    assert_eq!(
        slow["params"]["message"],
        json!([{"type": "text", "data": {"text": "[API] u1: to the slow group"}}])
    );
    assert_eq!(peer.held_answers(), 1, "the slow send is not answered yet");

    // The message for 111 goes out while the one for 735021844 still waits for its answer.
    post_text(api, "b", "to the quick group").await;
    let quick = tokio::time::timeout(Duration::from_secs(1), next_send_to(&peer, 111))
        .await
        .expect("the send to 111 within 1 s, while 735021844's takes 2 s");
    assert_eq!(
        quick["params"]["message"],
        json!([{"type": "text", "data": {"text": "[API] u1: to the quick group"}}])
    );
    assert_eq!(
        peer.held_answers(),
        1,
        "111's send went out before 735021844's was answered"
    );

    // The slow send is answered in the end and counts as sent: the group's next send is the
    // next message, not a repeat of the first.
    let deadline = tokio::time::Instant::now() + qunbridge_tests::PATIENCE;
    while peer.held_answers() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the slow answer came"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    post_text(api, "a", "next").await;
    let next = next_send_to(&peer, 735021844).await;
    assert_eq!(
        next["params"]["message"],
        json!([{"type": "text", "data": {"text": "[API] u1: next"}}])
    );
    daemon.stop().await.expect("clean stop");
}

/// A `group_increase` notice reaches the broker as a `kind = member` envelope on the group's
/// inbound topic, with the name `get_group_member_info` gave (the card) as the sender's; a
/// leave of someone the implementation no longer knows goes with no name, never the number.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_notice_is_published_as_a_member_envelope_with_the_resolved_name() {
    let broker = Broker::embedded();
    let (peer, url) = OneBot11Peer::serve(BOT, None, 0).await;
    peer.set_member_list(735021844, &[(42, "", "Bob")]);
    let api = api_addr();
    let daemon = Daemon::start(&config(&broker, &format!("url = \"{url}\""), api)).await;
    peer.wait_connections(1).await;
    let mut watcher = RawMqtt::connect(broker.port(), "member-watcher").await;
    watcher.subscribe("qunbridge/v1/in/qq/735021844").await;
    // The subscription is in place once a message published after it arrives.
    let text = json!([{"type": "text", "data": {"text": "marker"}}]);
    loop {
        peer.push_event(group_message(735021844, 42, 7, "", "Bob", text.clone()));
        let seen = tokio::time::timeout(Duration::from_secs(1), watcher.received.recv()).await;
        if matches!(seen, Ok(Some(_))) {
            break;
        }
    }

    peer.add_member(735021844, 1437420188, "Alice | Ops", "Alice");
    peer.push_event(member_increase(735021844, 1437420188, 0, "invite"));
    // Joins and leaves only: the member count published once the session was ready may
    // arrive after the subscription too.
    let is_member = |_: &str, payload: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(payload).is_ok_and(|envelope| {
            envelope["kind"] == "member" && envelope["member"]["change"] != "count"
        })
    };
    let (topic, payload) = watcher.next_matching(is_member).await;
    assert_eq!(topic, "qunbridge/v1/in/qq/735021844");
    let envelope: serde_json::Value = serde_json::from_slice(&payload).expect("json");
    assert_eq!(envelope["sender"]["id"], "1437420188");
    assert_eq!(envelope["sender"]["name"], "Alice | Ops");
    assert_eq!(envelope["member"]["change"], "join");
    assert_eq!(envelope["member"]["how"], "invite");
    assert!(
        envelope["member"].get("operator").is_none(),
        "operator 0 is none"
    );
    let lookup = peer.next_action("get_group_member_info").await;
    assert_eq!(
        lookup["params"],
        json!({"group_id": 735021844, "user_id": 1437420188i64})
    );

    // Someone the implementation no longer knows: published, unnamed.
    peer.push_event(member_decrease(735021844, 555, 555, "leave"));
    let (_, payload) = watcher.next_matching(is_member).await;
    let envelope: serde_json::Value = serde_json::from_slice(&payload).expect("json");
    assert_eq!(envelope["sender"]["id"], "555");
    assert_eq!(envelope["sender"]["name"], "");
    assert_eq!(envelope["member"]["change"], "leave");
    assert_eq!(envelope["member"]["how"], "leave");
    assert_eq!(envelope["member"]["operator"], "555");
    daemon.stop().await.expect("clean stop");
}
