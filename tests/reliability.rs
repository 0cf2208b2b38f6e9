//! End-to-end: what the state store (ARCHITECTURE.md §4, §5) gives users, with scripted
//! OneBot v11 implementations over real WebSockets, the real broker and the real relay.
//! Asserted: recall and reply sync across a restart, an `api` consumer resuming across a
//! restart, the same message from two bot accounts in one group relayed once, and the relay's
//! own message coming back from the platform under another sender not relayed again.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use qunbridge_tests::onebot11_peer::{group_message, OneBot11Peer};
use qunbridge_tests::{free_port, post_message, Broker, Daemon, SseClient};
use serde_json::{json, Value};

/// The first bot's QQ number.
const BOT: i64 = 2854196310;
/// The second bot's QQ number.
const SECOND_BOT: i64 = 2854196311;

fn api_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// The first `send_group_msg` to `group`.
async fn next_send_to(peer: &OneBot11Peer, group: i64) -> Value {
    loop {
        let action = peer.next_action("send_group_msg").await;
        if action["params"]["group_id"] == group {
            return action;
        }
    }
}

/// The series of messages dropped for `reason`; it has no account label, so only a daemon
/// started with [`Daemon::start_alone`] can read its own drops in it.
fn dropped(reason: &str) -> String {
    format!("qunbridge_messages_dropped_total{{reason=\"{reason}\"}}")
}

/// QQ groups 735021844 and 111 (one account) linked with `api` group `a`.
fn recall_config(broker: &Broker, url: &str, api: SocketAddr) -> String {
    format!(
        r#"{broker}
[accounts.qq]
platform = "qq"
url = "{url}"

[accounts.hub]
platform = "api"
listen = "{api}"

[[links]]
name = "fans"
groups = ["qq:735021844", "qq:111", "hub:a"]
"#,
        broker = broker.toml()
    )
}

async fn restart_keeps_recall_reply_and_feed(broker: Broker) {
    let (peer, url) = OneBot11Peer::serve(BOT, None, 0).await;
    let api = api_addr();
    let config = recall_config(&broker, &url, api);
    let daemon = Daemon::start(&config).await;
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
    let seen = a.next().await;
    assert_eq!(seen.json()["text"], "[QQ] Bob: original");
    let last_id = seen.id.expect("SSE events carry ids");
    drop(a);

    // The peer gave the copy in group 111 message id 9001. Restart: only the store remembers.
    let daemon = daemon.restart(&config).await;
    peer.wait_connections(2).await;

    // A reply to the original becomes a native reply to the copy made before the restart.
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
        json!({"type": "reply", "data": {"id": "9001"}}),
        "reply sync survives the restart"
    );
    // Recalling the original recalls the copy made before the restart.
    peer.push_event(
        json!({"time": 1718880100, "self_id": BOT, "post_type": "notice",
        "notice_type": "group_recall", "group_id": 735021844, "user_id": 42,
        "operator_id": 42, "message_id": -100}),
    );
    let delete = peer.next_action("delete_msg").await;
    assert_eq!(
        delete["params"]["message_id"], 9001,
        "recall sync survives the restart"
    );

    // An api consumer resuming with the id it saw before the restart gets exactly what it
    // missed: the reply and the recall, not the original again.
    let mut resumed = SseClient::open(
        &format!("http://{api}/api/v1/groups/a/events"),
        Some(&last_id),
        None,
    )
    .await;
    let first = resumed.next().await.json();
    assert_eq!(first["text"], "[QQ] Cat: agreed");
    let second = resumed.next().await.json();
    assert_eq!(second["kind"], "recall", "{second}");
    // Nothing else: a message said now is the next event.
    peer.push_event(group_message(
        111,
        44,
        -102,
        "",
        "Dee",
        json!([{"type": "text", "data": {"text": "marker"}}]),
    ));
    assert_eq!(
        resumed.next().await.json()["text"],
        "[QQ] Dee: marker",
        "nothing else"
    );
    daemon.stop().await.expect("clean stop");
}

mod restart_keeps_recall_reply_and_feed {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded() {
        restart_keeps_recall_reply_and_feed(Broker::embedded()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mosquitto() {
        restart_keeps_recall_reply_and_feed(Broker::mosquitto().await).await;
    }
}

/// A group message as bot `self_id` reports it.
fn reported_by(self_id: i64, message_id: i64, user_id: i64, text: &str) -> Value {
    let mut event = group_message(
        735021844,
        user_id,
        message_id,
        "",
        "Ann",
        json!([{"type": "text", "data": {"text": text}}]),
    );
    event["self_id"] = json!(self_id);
    event
}

/// Two bot accounts in QQ group 735021844, linked with `api` group `a`.
fn two_bots_config(broker: &Broker, first: &str, second: &str, api: SocketAddr) -> String {
    format!(
        r#"{broker}
[accounts.qq-a]
platform = "qq"
url = "{first}"
self_id = "{BOT}"

[accounts.qq-b]
platform = "qq"
url = "{second}"
self_id = "{SECOND_BOT}"

[accounts.hub]
platform = "api"
listen = "{api}"

[[links]]
name = "fans"
groups = ["qq-a:735021844", "qq-b:735021844", "hub:a"]
"#,
        broker = broker.toml()
    )
}

/// Starts two bots in one group and the daemon, alone in this test binary (the test reads
/// the duplicate count, a series without an account label).
async fn two_bots(broker: &Broker) -> (Arc<OneBot11Peer>, Arc<OneBot11Peer>, SocketAddr, Daemon) {
    let (first, first_url) = OneBot11Peer::serve(BOT, None, 0).await;
    let (second, second_url) = OneBot11Peer::serve(SECOND_BOT, None, 0).await;
    let api = api_addr();
    let daemon = Daemon::start_alone(&two_bots_config(broker, &first_url, &second_url, api)).await;
    first.wait_connections(1).await;
    second.wait_connections(1).await;
    (first, second, api, daemon)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_message_seen_by_two_bots_is_relayed_once_and_sent_back_once() {
    let broker = Broker::embedded();
    let (first, second, api, daemon) = two_bots(&broker).await;
    let mut a = SseClient::open(&format!("http://{api}/api/v1/groups/a/events"), None, None).await;
    let duplicates_before = daemon.counter(&dropped("duplicate")).await;

    // Both bots report Ann's message, each under its own message id.
    first.push_event(reported_by(BOT, -500, 1437, "see docs"));
    second.push_event(reported_by(SECOND_BOT, 77, 1437, "see docs"));
    assert_eq!(a.next().await.json()["text"], "[QQ] Ann: see docs");
    // The next message (seen by the second bot only) comes right after: no second copy.
    second.push_event(reported_by(SECOND_BOT, 78, 1437, "and this"));
    assert_eq!(a.next().await.json()["text"], "[QQ] Ann: and this");
    second.push_event(reported_by(SECOND_BOT, 79, 1437, "marker"));
    assert_eq!(a.next().await.json()["text"], "[QQ] Ann: marker");
    assert_eq!(
        daemon.counter(&dropped("duplicate")).await - duplicates_before,
        1.0,
        "the second report of the same message is the one duplicate"
    );

    // From the api group, the QQ group gets the message once, through one of the two bots.
    let (status, _) = post_message(
        api,
        "a",
        json!({"sender": {"id": "u1", "name": "Ed"}, "text": "hello qq"}),
        None,
    )
    .await;
    assert_eq!(status, 202);
    // A marker posted after it: a second copy would have been routed with the first, and
    // sent ahead of the marker.
    let (status, _) = post_message(
        api,
        "a",
        json!({"sender": {"id": "u1", "name": "Ed"}, "text": "marker"}),
        None,
    )
    .await;
    assert_eq!(status, 202);
    let sent = tokio::time::timeout(qunbridge_tests::PATIENCE, async {
        loop {
            let texts: Vec<String> = [&first, &second]
                .iter()
                .flat_map(|bot| bot.sent_texts())
                .collect();
            if texts.iter().any(|t| t.contains("marker")) {
                return texts;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("the QQ group gets the message and the marker");
    let copies = sent.iter().filter(|t| t.contains("hello qq")).count();
    assert_eq!(copies, 1, "one QQ group, one copy: {sent:?}");
    let markers = sent.iter().filter(|t| t.contains("marker")).count();
    assert_eq!(markers, 1, "one QQ group, one copy: {sent:?}");
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relays_own_message_reported_as_someone_elses_is_not_relayed_back() {
    let broker = Broker::embedded();
    let (peer, url) = OneBot11Peer::serve(BOT, None, 0).await;
    let api = api_addr();
    let daemon = Daemon::start_alone(&recall_config(&broker, &url, api)).await;
    peer.wait_connections(1).await;
    let mut a = SseClient::open(&format!("http://{api}/api/v1/groups/a/events"), None, None).await;
    let echoes_before = daemon.counter(&dropped("echo")).await;
    let (status, _) = post_message(
        api,
        "a",
        json!({"sender": {"id": "u1", "name": "Ed"}, "text": "hello qq"}),
        None,
    )
    .await;
    assert_eq!(status, 202);
    let sent = next_send_to(&peer, 735021844).await;
    let text = sent["params"]["message"][0]["data"]["text"]
        .as_str()
        .expect("text segment")
        .to_owned();
    // The platform reports the copy back as said by someone else (a relay bot the daemon
    // does not know), with different spacing, a moment later as a platform would.
    tokio::time::sleep(Duration::from_millis(200)).await;
    peer.push_event(reported_by(BOT, -600, 3000, &format!("{text}\n")));
    // A real message afterwards is relayed: the echo was not, or it would come first.
    peer.push_event(reported_by(BOT, -601, 1437, "real one"));
    let next = a.next().await.json();
    assert_eq!(next["text"], "[QQ] Ann: real one");
    assert_eq!(
        daemon.counter(&dropped("echo")).await - echoes_before,
        1.0,
        "the copy reported back is the one echo"
    );
    daemon.stop().await.expect("clean stop");
}
