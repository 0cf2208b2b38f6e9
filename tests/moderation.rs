//! Moderation before relay (issue 17), end to end over real sockets: a NapCat-like QQ peer
//! and a ComWeChatClient-like WeChat peer linked through the daemon, with the broker real.

use std::time::Duration;

use qunbridge_tests::onebot11_peer::{group_message, OneBot11Peer};
use qunbridge_tests::onebot12_peer::{Behaviour, OneBot12Peer};
use qunbridge_tests::{Broker, Daemon};
use serde_json::{json, Value};

/// The QQ bot account.
const BOT: i64 = 2854196310;
/// The linked QQ group.
const GROUP: i64 = 735021844;
/// The linked WeChat group.
const WECHAT_GROUP: &str = "20993411775@chatroom";
/// The member who floods.
const FLOODER: i64 = 1000000001;
/// A member who does not.
const CALM: i64 = 1000000002;

/// QQ and WeChat linked, WeChat unpaced (what is judged is the flood, not the pacing),
/// with `moderation` appended.
fn config(broker: &Broker, qq: &str, wx: &str, moderation: &str) -> String {
    format!(
        r#"{broker}
[accounts.qq]
platform = "qq"
url = "{qq}"
self_id = "{BOT}"

[accounts.wx]
platform = "wechat"
url = "{wx}"

[[links]]
name = "fans"
groups = ["qq:{GROUP}", "wx:{WECHAT_GROUP}"]

[limits.wx]
per_group = "off"
per_account = "off"

{moderation}
"#,
        broker = broker.toml()
    )
}

/// A text message of `user` in the QQ group.
fn said(message_id: i64, user: i64, text: &str) -> Value {
    let mut event = group_message(
        GROUP,
        user,
        message_id,
        "",
        &format!("u{user}"),
        json!([{"type": "text", "data": {"text": text}}]),
    );
    event["self_id"] = json!(BOT);
    event
}

/// Everything the WeChat peer was asked to send so far, one text (egress may merge
/// messages into one send).
fn wechat_text(wx: &OneBot12Peer) -> String {
    wx.calls("send_message")
        .iter()
        .flat_map(|send| {
            send["params"]["message"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|segment| segment["data"]["text"].as_str().map(str::to_owned))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits until the WeChat peer's text contains every one of `wanted`.
async fn wait_for_wechat(wx: &OneBot12Peer, wanted: &[&str]) -> String {
    let deadline = tokio::time::Instant::now() + qunbridge_tests::PATIENCE;
    loop {
        let text = wechat_text(wx);
        if wanted.iter().all(|w| text.contains(w)) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "WeChat got:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_flooding_member_is_cut_off_for_the_window(broker: Broker) {
    let (qq, qq_url) = OneBot11Peer::serve(BOT, None, 0).await;
    let (wx, wx_url) = OneBot12Peer::serve("wxid_botself01", Behaviour::comwechat(None)).await;
    let daemon = Daemon::start_alone(&config(
        &broker,
        &qq_url,
        &wx_url,
        "[moderation.flood]\nper_sender = \"5/10s\"\nburst = 5\n",
    ))
    .await;
    qq.wait_connections(1).await;
    wx.wait_connections(1).await;

    const HITS: &str =
        r#"qunbridge_moderation_hits_total{rule="flood",action="drop",platform="wechat"}"#;
    let hits_before = daemon.counter(HITS).await;

    // Eight messages from one member within a second, two from another in between.
    for n in 1..=8 {
        qq.push_event(said(100 + n, FLOODER, &format!("flood-f{n}")));
        if n == 3 || n == 6 {
            qq.push_event(said(200 + n, CALM, &format!("calm-c{n}")));
        }
    }
    // A marker after them all: when it is there, everything before it was judged.
    qq.push_event(said(300, CALM, "calm-end"));
    let text = wait_for_wechat(
        &wx,
        &[
            "flood-f1", "flood-f2", "flood-f3", "flood-f4", "flood-f5", "calm-c3", "calm-c6",
            "calm-end",
        ],
    )
    .await;
    for cut in ["flood-f6", "flood-f7", "flood-f8"] {
        assert!(!text.contains(cut), "{cut} was relayed:\n{text}");
    }
    assert_eq!(
        daemon.counter(HITS).await - hits_before,
        3.0,
        "three hits, for f6, f7 and f8"
    );

    // Past the window the member may speak again.
    tokio::time::sleep(Duration::from_secs(11)).await;
    qq.push_event(said(109, FLOODER, "flood-f9"));
    let text = wait_for_wechat(&wx, &["flood-f9"]).await;
    assert!(!text.contains("flood-f6"));
}

mod a_flooding_member_is_cut_off_for_the_window {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded() {
        a_flooding_member_is_cut_off_for_the_window(Broker::embedded()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mosquitto() {
        a_flooding_member_is_cut_off_for_the_window(Broker::mosquitto().await).await;
    }
}
