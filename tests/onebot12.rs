//! End-to-end: WeChat groups through OneBot v12 (ComWeChatClient and spec-following
//! implementations) and through OneBot v11, with scripted implementations over real
//! WebSockets in both transports, a scripted QQ implementation, the real broker and the real
//! relay. Asserted: what arrives in the linked `api` and QQ groups (sender names as
//! `get_group_member_info` tells them), and the exact actions qunbridge calls on the
//! WeChat implementation.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use qunbridge_tests::onebot11_peer::OneBot11Peer;
use qunbridge_tests::onebot12_peer::{
    group_message, message_deleted, now_secs, text, Behaviour, OneBot12Peer,
};
use qunbridge_tests::{free_port, post_message, Broker, Daemon, SseClient, PATIENCE};
use serde_json::{json, Value};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// The WeChat bot's wxid.
const BOT: &str = "wxid_botself01";
/// The WeChat group of every scenario.
const GROUP: &str = "20993411775@chatroom";
/// A member whose group nickname is empty (as ComWeChatClient always reports it).
const ALICE: &str = "wxid_k2m9p1q7r3";
/// A member with a group nickname.
const BOB: &str = "wxid_bob42";
/// The QQ bot.
const QQ_BOT: i64 = 2854196310;

fn api_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// The `[accounts.wx]` table and the `api` account, linked with `extra_groups`.
fn config(broker: &Broker, wx: &str, extra: &str, api: SocketAddr, groups: &str) -> String {
    config_for_account("wx", broker, wx, extra, api, groups)
}

/// [`config`] with the WeChat account named `account`, for a test that asserts on a metric
/// series labelled with its account: no sibling test of this binary uses that name.
fn config_for_account(
    account: &str,
    broker: &Broker,
    wx: &str,
    extra: &str,
    api: SocketAddr,
    groups: &str,
) -> String {
    format!(
        r#"{broker}
[accounts.{account}]
platform = "wechat"
media = "passthrough"
{wx}

[accounts.hub]
platform = "api"
listen = "{api}"
media = "passthrough"
{extra}
[[links]]
name = "fans"
groups = ["{account}:{GROUP}", "hub:a"{groups}]
"#,
        broker = broker.toml()
    )
}

/// Opens the `api` group's event stream.
async fn api_events(api: SocketAddr) -> SseClient {
    SseClient::open(&format!("http://{api}/api/v1/groups/a/events"), None, None).await
}

/// Posts `text` from Ann into the `api` group.
async fn post_from_ann(api: SocketAddr, text: &str) {
    let (status, _) = post_message(
        api,
        "a",
        json!({"sender": {"id": "u1", "name": "Ann"}, "text": text}),
        None,
    )
    .await;
    assert_eq!(status, 202);
}

/// The series of messages dropped for `reason`; it has no account label, so only a daemon
/// started with [`Daemon::start_alone`] can read its own drops in it.
fn dropped(reason: &str) -> String {
    format!("qunbridge_messages_dropped_total{{reason=\"{reason}\"}}")
}

/// Asserts that no more `send_message` came: a marker posted into the `api` group now is the
/// next one (the group's queue is ordered, so anything else would reach the peer first).
async fn assert_no_more_sends(peer: &OneBot12Peer, api: SocketAddr) {
    post_from_ann(api, "marker").await;
    let send = peer.next_action("send_message").await;
    assert_eq!(
        send["params"],
        one_text_send("[API] Ann: marker"),
        "exactly one send_message before the marker"
    );
}

/// The `send_message` params qunbridge must use for one relayed text.
fn one_text_send(text: &str) -> Value {
    json!({"detail_type": "group", "group_id": GROUP,
           "message": [{"type": "text", "data": {"text": text}}]})
}

/// WeChat → QQ and `api` under the member's WeChat name, and `api` → WeChat as exactly one
/// `send_message`, against a ComWeChat-style implementation over forward WebSocket.
async fn wechat_relays_to_qq_and_api_and_back(broker: Broker) {
    let (wx, wx_url) = OneBot12Peer::serve(BOT, Behaviour::comwechat(Some("wx-s3cret"))).await;
    wx.set_member(ALICE, "小明", "");
    wx.set_member(BOB, "bob", "Bob | 运维");
    wx.set_member(BOT, "群桥", "");
    let (qq, qq_url) = OneBot11Peer::serve(QQ_BOT, None, 0).await;
    let api = api_addr();
    let wx_lines = format!("url = \"{wx_url}\"\naccess_token = \"wx-s3cret\"");
    let qq_account = format!(
        "\n[accounts.qq]\nplatform = \"qq\"\nmedia = \"passthrough\"\nurl = \"{qq_url}\"\n"
    );
    let daemon = Daemon::start(&config(
        &broker,
        &wx_lines,
        &qq_account,
        api,
        ", \"qq:735021844\"",
    ))
    .await;
    wx.wait_connections(1).await;
    qq.wait_connections(1).await;
    assert_eq!(
        *wx.offered_subprotocol.lock().expect("lock"),
        None,
        "no subprotocol offered: ComWeChatClient would not echo one"
    );
    let mut a = api_events(api).await;

    wx.push_event(group_message(
        BOT,
        GROUP,
        ALICE,
        "8312456690012345",
        json!([
            {"type": "mention", "data": {"user_id": BOT}},
            {"type": "text", "data": {"text": " 周会改到三点"}},
            {"type": "image", "data": {"file_id": "c0a8e1f2"}},
            {"type": "wx.link", "data": {"title": "会议纪要", "des": "本周", "url": "https://example.org/notes"}}
        ]),
    ));
    let seen = a.next().await.json();
    assert_eq!(
        seen["text"],
        format!("[微信] 小明: @群桥 周会改到三点[图片] http://127.0.0.1:8000/get_file/C:\\Users\\wx\\Documents\\WeChat Files\\{BOT}\\FileStorage\\Image\\c0a8e1f2.jpg[链接] 会议纪要 https://example.org/notes")
    );
    assert_eq!(
        seen["sender"],
        json!({"id": ALICE, "name": "小明", "is_bot": false})
    );
    assert_eq!(seen["origin"]["platform"], "wechat");
    assert_eq!(seen["origin"]["group"], GROUP);
    assert_eq!(seen["origin"]["message_id"], "8312456690012345");
    let lookups = wx.calls("get_group_member_info");
    assert!(
        lookups
            .iter()
            .any(|c| c["params"] == json!({"group_id": GROUP, "user_id": ALICE})),
        "{lookups:?}"
    );
    let get_file = wx.calls("get_file");
    assert_eq!(
        get_file[0]["params"],
        json!({"file_id": "c0a8e1f2", "type": "url"})
    );

    let copy = qq.next_action("send_group_msg").await;
    assert_eq!(copy["params"]["group_id"], 735021844);
    // ComWeChatClient's picture URL is a loopback one: never handed to NapCat, the
    // placeholder goes instead (tests/pictures.rs carries the picture itself natively).
    let message = copy["params"]["message"].as_array().expect("array");
    assert_eq!(message.len(), 1, "{message:?}");
    let sent = message[0]["data"]["text"].as_str().expect("text");
    assert!(
        sent.starts_with("[微信] 小明: @群桥  周会改到三点[图片][链接] 会议纪要"),
        "{sent}"
    );
    assert!(!sent.contains("127.0.0.1"), "{sent}");
    assert!(
        !sent.contains("https://example.org/notes"),
        "the card's URL is text, so QQ's link filter sees it: {sent}"
    );

    // The group nickname wins over the nickname; a known member is not looked up again.
    wx.push_event(group_message(BOT, GROUP, BOB, "2", text("好的")));
    assert_eq!(a.next().await.json()["text"], "[微信] Bob | 运维: 好的");
    wx.push_event(group_message(BOT, GROUP, ALICE, "3", text("再说一句")));
    assert_eq!(a.next().await.json()["text"], "[微信] 小明: 再说一句");
    let alice_lookups = wx
        .calls("get_group_member_info")
        .iter()
        .filter(|c| c["params"]["user_id"] == ALICE)
        .count();
    assert_eq!(alice_lookups, 1, "names are cached");

    post_from_ann(api, "收到，三点见").await;
    let send = wx.next_action("send_message").await;
    assert_eq!(send["params"], one_text_send("[API] Ann: 收到，三点见"));
    assert_no_more_sends(&wx, api).await;
    daemon.stop().await.expect("clean stop");
}

mod wechat_relays_to_qq_and_api_and_back {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded() {
        super::wechat_relays_to_qq_and_api_and_back(qunbridge_tests::Broker::embedded()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mosquitto() {
        super::wechat_relays_to_qq_and_api_and_back(qunbridge_tests::Broker::mosquitto().await)
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comwechat_and_spec_peers_work_over_reverse_websocket() {
    let broker = Broker::embedded();
    let listen = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let api = api_addr();
    let wx_lines = format!("listen = \"{listen}\"\naccess_token = \"wx-s3cret\"");
    let daemon = Daemon::start(&config(&broker, &wx_lines, "", api, "")).await;

    let wrong = OneBot12Peer::reverse(BOT, Behaviour::comwechat(Some("guess")));
    assert_eq!(
        wrong.connect(listen).await,
        Err(403),
        "wrong token refused before the upgrade"
    );
    let missing = OneBot12Peer::reverse(BOT, Behaviour::comwechat(None));
    assert_eq!(
        missing.connect(listen).await,
        Err(401),
        "missing token refused"
    );

    // ComWeChatClient: no subprotocol offered, none answered; no picture URLs.
    let comwechat = OneBot12Peer::reverse(
        BOT,
        Behaviour {
            get_file: false,
            ..Behaviour::comwechat(Some("wx-s3cret"))
        },
    );
    comwechat.set_member(ALICE, "小明", "");
    assert_eq!(comwechat.connect(listen).await, Ok(None));
    let mut a = api_events(api).await;
    comwechat.push_event(group_message(
        BOT,
        GROUP,
        ALICE,
        "100",
        json!([{"type": "text", "data": {"text": "看图"}}, {"type": "image", "data": {"file_id": "f1"}}]),
    ));
    assert_eq!(a.next().await.json()["text"], "[微信] 小明: 看图[图片]");
    post_from_ann(api, "hi").await;
    let send = comwechat.next_action("send_message").await;
    assert_eq!(send["params"], one_text_send("[API] Ann: hi"));
    assert_no_more_sends(&comwechat, api).await;

    // A spec-following implementation offers `12.walle-q`: the listener echoes it.
    comwechat.drop_connection();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let walle = OneBot12Peer::reverse(BOT, Behaviour::spec(Some("wx-s3cret")));
    walle.set_member(BOB, "bob", "Bob | 运维");
    assert_eq!(walle.connect(listen).await, Ok(Some("12.walle-q".into())));
    walle.push_event(group_message(BOT, GROUP, BOB, "101", text("我也在")));
    assert_eq!(a.next().await.json()["text"], "[微信] Bob | 运维: 我也在");
    post_from_ann(api, "欢迎").await;
    let send = walle.next_action("send_message").await;
    assert_eq!(send["params"], one_text_send("[API] Ann: 欢迎"));
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_member_lookup_does_not_hold_up_later_messages() {
    let broker = Broker::embedded();
    let (wx, url) = OneBot12Peer::serve(BOT, Behaviour::comwechat(None)).await;
    let slow = "wxid_slow";
    let slow_answer = Duration::from_secs(4);
    wx.set_slow_member(slow, "慢慢", "", slow_answer);
    wx.set_member(ALICE, "小明", "");
    let api = api_addr();
    let daemon = Daemon::start(&config(&broker, &format!("url = \"{url}\""), "", api, "")).await;
    wx.wait_connections(1).await;
    let mut a = api_events(api).await;

    let pushed = Instant::now();
    wx.push_event(group_message(BOT, GROUP, slow, "1", text("第一条")));
    wx.push_event(group_message(BOT, GROUP, ALICE, "2", text("第二条")));
    let first = a.next().await.json();
    let second = a.next().await.json();
    let waited = pushed.elapsed();
    assert_eq!(
        first["text"], "[微信] wxid_slow: 第一条",
        "published with the id, in order"
    );
    assert_eq!(second["text"], "[微信] 小明: 第二条");
    assert!(
        waited < slow_answer - Duration::from_millis(1500),
        "later messages were held up for {waited:?}"
    );

    // The late answer still lands in the cache for the member's next message.
    tokio::time::sleep_until(pushed + slow_answer + Duration::from_millis(300)).await;
    wx.push_event(group_message(BOT, GROUP, slow, "3", text("第三条")));
    assert_eq!(a.next().await.json()["text"], "[微信] 慢慢: 第三条");
    let slow_lookups = wx
        .calls("get_group_member_info")
        .iter()
        .filter(|c| c["params"]["user_id"] == slow)
        .count();
    assert_eq!(slow_lookups, 1, "one lookup, shared and cached");
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn own_and_other_bots_messages_are_dropped() {
    let broker = Broker::embedded();
    let (wx, url) = OneBot12Peer::serve(BOT, Behaviour::comwechat(None)).await;
    wx.set_member(ALICE, "小明", "");
    let (other, other_url) = OneBot12Peer::serve("wxid_bot2", Behaviour::comwechat(None)).await;
    let api = api_addr();
    // A second WeChat bot account of this deployment, in the same WeChat group.
    let extra = format!(
        "\n[accounts.wx2]\nplatform = \"wechat\"\nurl = \"{other_url}\"\nself_id = \"wxid_bot2\"\n"
    );
    let daemon = Daemon::start_alone(&config(
        &broker,
        &format!("url = \"{url}\""),
        &extra,
        api,
        "",
    ))
    .await;
    wx.wait_connections(1).await;
    other.wait_connections(1).await;
    let mut a = api_events(api).await;
    let own_before = daemon.counter(&dropped("own_message")).await;

    wx.push_event(group_message(BOT, GROUP, BOT, "1", text("我自己说的")));
    wx.push_event(group_message(
        BOT,
        GROUP,
        "wxid_bot2",
        "2",
        text("[QQ] 转发的副本"),
    ));
    wx.push_event(group_message(BOT, GROUP, ALICE, "3", text("真人")));
    assert_eq!(a.next().await.json()["text"], "[微信] 小明: 真人");
    // Relayed, the bots' messages would have come before this one.
    wx.push_event(group_message(BOT, GROUP, ALICE, "4", text("标记")));
    assert_eq!(a.next().await.json()["text"], "[微信] 小明: 标记");
    let looked_up: Vec<Value> = wx
        .calls("get_group_member_info")
        .iter()
        .map(|c| c["params"]["user_id"].clone())
        .collect();
    assert_eq!(
        looked_up,
        vec![json!(ALICE)],
        "dropped messages cost no lookup"
    );
    let own = daemon.counter(&dropped("own_message")).await - own_before;
    assert!(own >= 2.0, "own and other bots' messages dropped: {own}");
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_become_recalls_and_comwechat_copies_are_left_alone() {
    let broker = Broker::embedded();
    let (wx, wx_url) = OneBot12Peer::serve(BOT, Behaviour::comwechat(None)).await;
    wx.set_member(ALICE, "小明", "");
    let (qq, qq_url) = OneBot11Peer::serve(QQ_BOT, None, 0).await;
    let api = api_addr();
    let qq_account = format!(
        "\n[accounts.qq]\nplatform = \"qq\"\nmedia = \"passthrough\"\nurl = \"{qq_url}\"\n"
    );
    let daemon = Daemon::start_alone(&config(
        &broker,
        &format!("url = \"{wx_url}\""),
        &qq_account,
        api,
        ", \"qq:735021844\"",
    ))
    .await;
    wx.wait_connections(1).await;
    qq.wait_connections(1).await;
    let mut a = api_events(api).await;
    let failed_before = daemon.counter(&dropped("send_failed")).await;

    // A WeChat message and its deletion: a recall event in `api`, the QQ copy recalled.
    wx.push_event(group_message(BOT, GROUP, ALICE, "m-1", text("发错了")));
    let message = a.next().await.json();
    let copy = qq.next_action("send_group_msg").await;
    assert_eq!(
        copy["params"]["message"][0]["data"]["text"],
        "[微信] 小明: 发错了"
    );
    wx.push_event(message_deleted(BOT, GROUP, ALICE, "m-1"));
    let recall = a.next().await.json();
    assert_eq!(recall["kind"], "recall");
    assert_eq!(recall["origin"]["message_id"], "m-1");
    assert_eq!(recall["origin"]["group"], GROUP);
    assert_ne!(
        recall["id"], message["id"],
        "a recall is not a duplicate of its message"
    );
    let delete = qq.next_action("delete_msg").await;
    assert_eq!(delete["params"]["message_id"], 9001);

    // A QQ message reaches WeChat through ComWeChatClient, which returns no message id:
    // recalling it in QQ cannot take the WeChat copy back, and that is not a failure.
    let mut oops = qunbridge_tests::onebot11_peer::group_message(
        735021844,
        42,
        -100,
        "",
        "Bob",
        json!([{"type": "text", "data": {"text": "oops"}}]),
    );
    oops["time"] = json!(now_secs() as u64);
    qq.push_event(oops);
    let send = wx.next_action("send_message").await;
    assert_eq!(send["params"], one_text_send("[QQ] Bob: oops"));
    assert_eq!(a.next().await.json()["text"], "[QQ] Bob: oops");
    qq.push_event(
        json!({"time": now_secs() as u64, "self_id": QQ_BOT, "post_type": "notice",
        "notice_type": "group_recall", "group_id": 735021844, "user_id": 42,
        "operator_id": 42, "message_id": -100}),
    );
    let recall = a.next().await.json();
    assert_eq!(recall["kind"], "recall");
    assert_eq!(recall["origin"]["message_id"], "-100");
    // The recall was routed before the marker: WeChat's ordered queue would have called
    // `delete_message` before sending the marker.
    post_from_ann(api, "marker").await;
    let marker = wx.next_action("send_message").await;
    assert_eq!(marker["params"], one_text_send("[API] Ann: marker"));
    assert!(
        wx.calls("delete_message").is_empty(),
        "nothing to call for id-less copies"
    );
    assert_eq!(
        daemon.counter(&dropped("send_failed")).await - failed_before,
        0.0,
        "no send failed"
    );
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_are_counted_and_the_connection_keeps_working() {
    let broker = Broker::embedded();
    let (wx, url) = OneBot12Peer::serve(BOT, Behaviour::comwechat(None)).await;
    wx.set_member(ALICE, "小明", "");
    let api = api_addr();
    let daemon =
        Daemon::start_alone(&config(&broker, &format!("url = \"{url}\""), "", api, "")).await;
    wx.wait_connections(1).await;
    let mut a = api_events(api).await;
    let malformed_before = daemon.counter(&dropped("malformed")).await;
    wx.push(Message::Text("{not json".into()));
    wx.push(Message::Binary(vec![0x82, 0xa4, 0xff, 0xfe].into()));
    wx.push_event(json!({"type": "message", "detail_type": "group", "user_id": ALICE, "message_id": "1", "message": []}));
    wx.push_event(json!({"hello": "world"}));
    wx.push_event(json!({"type": "request", "detail_type": "new_friend"}));
    wx.push_event(group_message(
        BOT,
        GROUP,
        ALICE,
        "2",
        json!([{"type": "mystery", "data": {}}, {"type": "wx.emoji", "data": {"file_id": "e"}}, {"type": "text", "data": {"text": "ok"}}]),
    ));
    assert_eq!(
        a.next().await.json()["text"],
        "[微信] 小明: [mystery][动画表情]ok"
    );
    assert_eq!(wx.connections.load(Ordering::SeqCst), 1, "same connection");
    let malformed = daemon.counter(&dropped("malformed")).await - malformed_before;
    assert!(malformed >= 4.0, "malformed frames counted: {malformed}");
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_heartbeats_and_dropped_connections_make_qunbridge_reconnect() {
    let broker = Broker::embedded();
    let (wx, url) = OneBot12Peer::serve(
        BOT,
        Behaviour {
            heartbeat_ms: 200,
            ..Behaviour::comwechat(None)
        },
    )
    .await;
    wx.set_member(ALICE, "小明", "");
    let api = api_addr();
    let wx_lines = format!("url = \"{url}\"");
    let daemon = Daemon::start(&config_for_account(
        "wx-reconnects",
        &broker,
        &wx_lines,
        "",
        api,
        "",
    ))
    .await;
    wx.wait_connections(1).await;
    wx.drop_connection();
    wx.wait_connections(2).await;
    // Let qunbridge learn the interval, then go silent while keeping the socket open.
    tokio::time::sleep(Duration::from_millis(500)).await;
    wx.stop_heartbeats();
    wx.wait_connections(3).await;
    let mut a = api_events(api).await;
    wx.push_event(group_message(BOT, GROUP, ALICE, "1", text("又连上了")));
    assert_eq!(a.next().await.json()["text"], "[微信] 小明: 又连上了");
    let reconnects = daemon
        .counter("qunbridge_reconnects_total{account=\"wx-reconnects\"}")
        .await;
    assert!(
        reconnects >= 2.0,
        "reconnects of this test's account: {reconnects}"
    );
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_token_is_reported_and_retried_slowly() {
    let broker = Broker::embedded();
    let (wx, url) = OneBot12Peer::serve(BOT, Behaviour::comwechat(Some("right"))).await;
    let api = api_addr();
    let wx_lines = format!("url = \"{url}\"\naccess_token = \"wrong\"");
    let daemon = Daemon::start(&config(&broker, &wx_lines, "", api, "")).await;
    let deadline = Instant::now() + PATIENCE;
    while wx.auth_refusals.load(Ordering::SeqCst) == 0 {
        assert!(Instant::now() < deadline, "no connection attempt");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        wx.auth_refusals.load(Ordering::SeqCst),
        1,
        "retried on the slow schedule"
    );
    let ready: Value = reqwest::get(format!("http://{}/readyz", daemon.admin))
        .await
        .expect("readyz")
        .json()
        .await
        .expect("json");
    let state = ready["accounts"]
        .as_array()
        .expect("accounts")
        .iter()
        .find(|a| a["account"] == "wx")
        .expect("wx listed")["state"]
        .clone();
    assert_eq!(state, "auth_failed");
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pictures_are_uploaded_by_url_and_sent_separately_when_enabled() {
    let broker = Broker::embedded();
    let (wx, url) = OneBot12Peer::serve(BOT, Behaviour::comwechat(None)).await;
    let api = api_addr();
    let wx_lines = format!("url = \"{url}\"\nsend_images = true");
    let daemon = Daemon::start(&config(&broker, &wx_lines, "", api, "")).await;
    wx.wait_connections(1).await;
    let (status, _) = post_message(
        api,
        "a",
        json!({"sender": {"id": "u1", "name": "Ann"}, "segments": [
            {"type": "text", "text": "看这只猫"},
            {"type": "image", "url": "https://img.example.org/cats/cat.png"}
        ]}),
        None,
    )
    .await;
    assert_eq!(status, 202);
    let upload = wx.next_action("upload_file").await;
    assert_eq!(
        upload["params"],
        json!({"type": "url", "name": "cat.png", "url": "https://img.example.org/cats/cat.png"})
    );
    let text_send = wx.next_action("send_message").await;
    assert_eq!(text_send["params"], one_text_send("[API] Ann: 看这只猫"));
    let image_send = wx.next_action("send_message").await;
    assert_eq!(
        image_send["params"],
        json!({"detail_type": "group", "group_id": GROUP,
               "message": [{"type": "image", "data": {"file_id": "up-1"}}]})
    );
    assert_no_more_sends(&wx, api).await;
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wechat_over_onebot11_uses_string_group_ids_both_ways() {
    let broker = Broker::embedded();
    let (peer, url) = OneBot11Peer::serve(QQ_BOT, None, 0).await;
    let api = api_addr();
    let wx_lines = format!("protocol = \"onebot11\"\nurl = \"{url}\"");
    let daemon = Daemon::start(&config(&broker, &wx_lines, "", api, "")).await;
    peer.wait_connections(1).await;
    let mut a = api_events(api).await;
    peer.push_event(json!({
        "time": now_secs() as u64, "self_id": QQ_BOT, "post_type": "message",
        "message_type": "group", "sub_type": "normal", "message_id": 77,
        "group_id": GROUP, "user_id": ALICE, "anonymous": null,
        "message": [{"type": "text", "data": {"text": "从 v11 来"}}], "raw_message": "", "font": 0,
        "sender": {"user_id": ALICE, "nickname": "小明", "card": "", "role": "member"}
    }));
    let seen = a.next().await.json();
    assert_eq!(seen["text"], "[微信] 小明: 从 v11 来");
    assert_eq!(seen["origin"]["group"], GROUP);
    assert_eq!(seen["origin"]["platform"], "wechat");

    post_from_ann(api, "回到 v11").await;
    let send = peer.next_action("send_group_msg").await;
    assert_eq!(
        send["params"]["group_id"],
        json!(GROUP),
        "a JSON string, not a number"
    );
    assert_eq!(
        send["params"]["message"],
        json!([{"type": "text", "data": {"text": "[API] Ann: 回到 v11"}}])
    );
    daemon.stop().await.expect("clean stop");
}
