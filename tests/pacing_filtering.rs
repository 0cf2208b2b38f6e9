//! End-to-end: link filtering per destination platform, pacing and coalescing, over the real
//! broker with scripted QQ (OneBot v11), WeChat (OneBot v11 implementation) and DingTalk
//! custom-robot peers. Asserted: the exact text each platform received.

use std::net::SocketAddr;
use std::time::Duration;

use qunbridge_tests::dingtalk_peer::{DingTalkPeer, Robot};
use qunbridge_tests::onebot11_peer::{group_message, OneBot11Peer};
use qunbridge_tests::{free_port, post_message, Broker, Daemon, SseClient};
use serde_json::json;
use tokio::time::Instant;

/// The custom robot's access token.
const HOOK: &str = "hook-token";

fn api_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// The text of a `send_group_msg` action.
fn sent_text(action: &serde_json::Value) -> String {
    action["params"]["message"]
        .as_array()
        .expect("array message")
        .iter()
        .filter_map(|segment| segment["data"]["text"].as_str())
        .collect()
}

/// QQ group 111, a WeChat group of a v11 implementation, an `api` group and a DingTalk
/// custom robot, all in one link.
async fn start(extra: &str) -> (Daemon, OneBot11Peer2, SocketAddr, DingTalkPeer) {
    start_daemon(extra, false).await
}

/// [`start`] with the daemon run alone in this test binary ([`Daemon::start_alone`]), for a
/// test that reads a metric series without an account label.
async fn start_alone(extra: &str) -> (Daemon, OneBot11Peer2, SocketAddr, DingTalkPeer) {
    start_daemon(extra, true).await
}

/// The body of [`start`] and [`start_alone`].
async fn start_daemon(
    extra: &str,
    alone: bool,
) -> (Daemon, OneBot11Peer2, SocketAddr, DingTalkPeer) {
    let broker = Broker::embedded();
    let (qq, qq_url) = OneBot11Peer::serve(1001, None, 0).await;
    let (wx, wx_url) = OneBot11Peer::serve(2002, None, 0).await;
    let ding = DingTalkPeer::start(vec![Robot {
        access_token: HOOK.into(),
        secret: None,
        keyword: None,
    }])
    .await;
    let api = api_addr();
    let config = format!(
        r#"{broker}
[accounts.qq]
platform = "qq"
url = "{qq_url}"

[accounts.wx]
platform = "wechat"
protocol = "onebot11"
url = "{wx_url}"

[accounts.hub]
platform = "api"
listen = "{api}"

[accounts.ding-hook]
platform = "dingtalk"
webhook = "{hook}"

{extra}

[[links]]
name = "fans"
groups = ["qq:111", "wx:5@chatroom", "hub:a"]
to = ["ding-hook:ops"]
"#,
        broker = broker.toml(),
        hook = ding.webhook_url(HOOK),
    );
    let daemon = if alone {
        Daemon::start_alone(&config).await
    } else {
        Daemon::start(&config).await
    };
    qq.wait_connections(1).await;
    wx.wait_connections(1).await;
    let _keep_broker = broker;
    (daemon, OneBot11Peer2 { qq, wx }, api, ding)
}

/// The two OneBot peers.
struct OneBot11Peer2 {
    /// The QQ implementation.
    qq: std::sync::Arc<OneBot11Peer>,
    /// The WeChat implementation (OneBot v11).
    wx: std::sync::Arc<OneBot11Peer>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn links_are_filtered_per_destination_platform() {
    let extra = r#"
[filters.wechat]
allow_domains = ["example.org"]

[filters.qq]
allow_domains = ["docs.example.org"]
"#;
    let (daemon, peers, api, ding) = start_alone(extra).await;
    let invites_replaced = "qunbridge_links_filtered_total{platform=\"wechat\",rule=\"qq_group_invite\",action=\"replace\"}";
    let invites_before = daemon.counter(invites_replaced).await;
    let mut a = SseClient::open(&format!("http://{api}/api/v1/groups/a/events"), None, None).await;

    let said = "进QQ群 123456789 或 https://qm.qq.com/q/Ab 看 https://docs.example.org/x 和 https://evil.test/y";
    peers.qq.push_event(group_message(
        111,
        42,
        1,
        "",
        "Ann",
        json!([{"type": "text", "data": {"text": said}}]),
    ));

    // WeChat: invites replaced, the allow-listed domain kept, other links defanged.
    let to_wechat = peers.wx.next_action("send_group_msg").await;
    assert_eq!(to_wechat["params"]["group_id"], "5@chatroom");
    assert_eq!(
        sent_text(&to_wechat),
        "[QQ] Ann: 进[群邀请] 或 [群邀请] 看 https://docs.example.org/x 和 hxxps[:]//evil[.]test/y"
    );
    // DingTalk and the api: as sent.
    let post = ding
        .wait_webhook_post(0, |content| content.contains("evil"))
        .await;
    assert_eq!(post.content, format!("[QQ] Ann: {said}"));
    assert_eq!(a.next().await.json()["text"], format!("[QQ] Ann: {said}"));

    // To QQ: links defanged unless allow-listed.
    post_message(
        api,
        "a",
        json!({"sender": {"id": "u1", "name": "Bo"}, "text": "see https://docs.example.org/a and ｅｖｉｌ．ｔｅｓｔ/b"}),
        None,
    )
    .await;
    let to_qq = peers.qq.next_action("send_group_msg").await;
    assert_eq!(
        sent_text(&to_qq),
        "[API] Bo: see https://docs.example.org/a and evil[.]test/b"
    );
    let replaced = daemon.counter(invites_replaced).await - invites_before;
    assert!(replaced >= 1.0, "invites replaced for WeChat: {replaced}");
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_dingtalk_robot_does_not_delay_qq() {
    let extra = "[limits.\"ding-hook\"]\nper_account = \"1/min\"\nper_account_burst = 1\n";
    let (daemon, peers, api, ding) = start(extra).await;
    let started = Instant::now();
    for n in 1..=3 {
        let (status, _) = post_message(
            api,
            "a",
            json!({"sender": {"id": "u1", "name": "Ann"}, "text": format!("m{n}")}),
            None,
        )
        .await;
        assert_eq!(status, 202);
    }
    let mut to_qq = Vec::new();
    while to_qq.len() < 3 {
        to_qq.push(sent_text(&peers.qq.next_action("send_group_msg").await));
    }
    assert_eq!(
        to_qq,
        vec!["[API] Ann: m1", "[API] Ann: m2", "[API] Ann: m3"]
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "QQ was not held up: {:?}",
        started.elapsed()
    );
    // The robot took the first message; the others wait for its limit.
    ding.wait_webhook_post(0, |content| content.contains("m1"))
        .await;
    assert_eq!(ding.webhook_posts().len(), 1, "{:?}", ding.webhook_posts());
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_is_paced_and_coalesced_in_order() {
    let extra = "[limits.qq]\nper_group = \"2/2s\"\nburst = 2\n";
    let (daemon, peers, api, _ding) = start(extra).await;
    let started = Instant::now();
    for n in 1..=10 {
        post_message(
            api,
            "a",
            json!({"sender": {"id": "u1", "name": "Ann"}, "text": format!("m{n}")}),
            None,
        )
        .await;
    }
    let mut sends: Vec<(Duration, String)> = Vec::new();
    let mut joined = String::new();
    while !joined.contains("m10") {
        let text = sent_text(&peers.qq.next_action("send_group_msg").await);
        sends.push((started.elapsed(), text.clone()));
        joined.push_str(&text);
        joined.push('\n');
    }
    let expected: Vec<String> = (1..=10).map(|n| format!("[API] Ann: m{n}")).collect();
    assert_eq!(
        joined.trim_end(),
        expected.join("\n"),
        "every message, in order, each with its sender line"
    );
    assert!(sends.len() < 10, "coalesced into {} sends", sends.len());
    // Never more than 2 in any 2-second window.
    for (i, (at, _)) in sends.iter().enumerate() {
        let in_window = sends[i..]
            .iter()
            .filter(|(t, _)| *t < *at + Duration::from_millis(1900))
            .count();
        assert!(in_window <= 2, "{sends:?}");
    }
    daemon.stop().await.expect("clean stop");
}

/// One QQ account, two groups: group 111 limited to one message a minute, group 222 not.
async fn a_slow_group_does_not_stall_the_accounts_other_groups(broker: Broker) {
    let (qq, qq_url) = OneBot11Peer::serve(1001, None, 0).await;
    let api = api_addr();
    let config = format!(
        r#"{broker}
[accounts.qq]
platform = "qq"
url = "{qq_url}"

[accounts.hub]
platform = "api"
listen = "{api}"

[limits.qq.groups."111"]
per_group = "1/min"
burst = 1

[limits.qq.groups."222"]
per_group = "off"

[[links]]
groups = ["hub:a", "qq:111"]

[[links]]
groups = ["hub:b", "qq:222"]
"#,
        broker = broker.toml()
    );
    let daemon = Daemon::start(&config).await;
    qq.wait_connections(1).await;
    // More messages for the slow group than a default broker window (mosquitto: 20) holds.
    for n in 1..=30 {
        post_message(
            api,
            "a",
            json!({"sender": {"id": "u1"}, "text": format!("slow {n}")}),
            None,
        )
        .await;
    }
    let first = qq.next_action("send_group_msg").await;
    assert_eq!(first["params"]["group_id"], 111);
    let started = Instant::now();
    post_message(
        api,
        "b",
        json!({"sender": {"id": "u2"}, "text": "fast"}),
        None,
    )
    .await;
    let fast = qq.next_action("send_group_msg").await;
    assert_eq!(fast["params"]["group_id"], 222, "{fast}");
    assert_eq!(sent_text(&fast), "[API] u2: fast");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    daemon.stop().await.expect("clean stop");
}

mod a_slow_group_does_not_stall_the_accounts_other_groups {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded() {
        super::a_slow_group_does_not_stall_the_accounts_other_groups(
            qunbridge_tests::Broker::embedded(),
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mosquitto() {
        super::a_slow_group_does_not_stall_the_accounts_other_groups(
            qunbridge_tests::Broker::mosquitto().await,
        )
        .await;
    }
}
