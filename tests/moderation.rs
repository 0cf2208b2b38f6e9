//! Moderation before relay (issue 17), end to end over real sockets: a NapCat-like QQ peer
//! and a ComWeChatClient-like WeChat peer linked through the daemon, with the broker real:
//! flood control, word lists (mask for QQ, drop for WeChat, names hidden), and a config with
//! word-list mistakes refused by the binary.

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
/// A second QQ group of the link, a destination of the first one's messages.
const QQ_DESTINATION: i64 = 735021845;
/// A member whose group card advertises a contact.
const ADVERTISER: i64 = 1000000003;

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
    said_as(message_id, user, "", text)
}

/// A text message of `user`, whose group card is `card` (empty: none, the nickname shows).
fn said_as(message_id: i64, user: i64, card: &str, text: &str) -> Value {
    let mut event = group_message(
        GROUP,
        user,
        message_id,
        card,
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

/// Two QQ groups and a WeChat group in one link, every destination unpaced, with two word
/// lists: `ads` masked for QQ and dropped for WeChat, `contact` for WeChat only.
fn words_config(broker: &Broker, qq: &str, wx: &str) -> String {
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
groups = ["qq:{GROUP}", "qq:{QQ_DESTINATION}", "wx:{WECHAT_GROUP}"]

[limits.qq]
per_group = "off"
per_account = "off"

[limits.wx]
per_group = "off"
per_account = "off"

[moderation.lists.ads]
words = ["兼职刷单"]
allow = ["兼职刷单是诈骗"]

[moderation.lists.contact]
words = ["加V"]

[filters.wechat]
rules = [
  {{ match = "words", list = "ads", action = "drop" }},
  {{ match = "words", list = "contact", action = "drop" }},
]

[filters.qq]
rules = [{{ match = "words", list = "ads", action = "mask" }}]
"#,
        broker = broker.toml()
    )
}

/// Everything the QQ peer was asked to send to the QQ destination group so far, one text.
fn qq_text(qq: &OneBot11Peer) -> String {
    qq.untaken("send_group_msg")
        .iter()
        .filter(|send| send["params"]["group_id"].as_i64() == Some(QQ_DESTINATION))
        .map(|send| {
            let message = &send["params"]["message"];
            match message.as_str() {
                Some(text) => text.to_owned(),
                None => message
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|segment| segment["data"]["text"].as_str())
                    .collect(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits until the QQ destination's text contains every one of `wanted`.
async fn wait_for_qq(qq: &OneBot11Peer, wanted: &[&str]) -> String {
    let deadline = tokio::time::Instant::now() + qunbridge_tests::PATIENCE;
    loop {
        let text = qq_text(qq);
        if wanted.iter().all(|w| text.contains(w)) {
            return text;
        }
        assert!(tokio::time::Instant::now() < deadline, "QQ got:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn word_lists_mask_for_qq_drop_for_wechat_and_hide_names(broker: Broker) {
    let (qq, qq_url) = OneBot11Peer::serve(BOT, None, 0).await;
    let (wx, wx_url) = OneBot12Peer::serve("wxid_botself01", Behaviour::comwechat(None)).await;
    let daemon = Daemon::start_alone(&words_config(&broker, &qq_url, &wx_url)).await;
    qq.wait_connections(1).await;
    wx.wait_connections(1).await;

    let series = |rule: &str, action: &str, platform: &str| {
        format!(
            r#"qunbridge_moderation_hits_total{{rule="{rule}",action="{action}",platform="{platform}"}}"#
        )
    };
    let watched = [
        series("ads", "mask", "qq"),
        series("ads", "drop", "wechat"),
        series("contact", "rename", "wechat"),
        series("ads", "mask", "wechat"),
        series("ads", "drop", "qq"),
        r#"qunbridge_messages_dropped_total{reason="moderated"}"#.to_owned(),
    ];
    let mut before = Vec::new();
    for series in &watched {
        before.push(daemon.counter(series).await);
    }

    qq.push_event(said(401, CALM, "w1 今天兼职刷单日结"));
    qq.push_event(said(402, CALM, "w2 兼 职 刷 单"));
    qq.push_event(said(403, CALM, "w3 兼职@刷单"));
    qq.push_event(said(404, CALM, "w4 注意：兼职刷单是诈骗"));
    qq.push_event(said_as(405, ADVERTISER, "加V:abc12345", "w5 大家好"));
    // A marker after them all: when it is there, everything before it was judged.
    qq.push_event(said(406, CALM, "w6 end"));

    let to_qq = wait_for_qq(&qq, &["w1 ", "w2 ", "w3 ", "w4 ", "w5 ", "w6 end"]).await;
    for masked in [
        "w1 今天****日结",
        "w2 *******",
        "w3 *****",
        "w4 注意：兼职刷单是诈骗",
    ] {
        assert!(
            to_qq.contains(masked),
            "{masked:?} not in the QQ copy:\n{to_qq}"
        );
    }
    assert!(!to_qq.contains("兼职刷单日结"), "{to_qq}");
    // QQ has no rule on `contact`: the name stays there.
    assert!(to_qq.contains("加V:abc12345: w5 大家好"), "{to_qq}");

    let to_wechat = wait_for_wechat(&wx, &["w4 ", "w5 ", "w6 end"]).await;
    assert!(
        to_wechat.contains("群友: w5 大家好"),
        "the name is hidden, the clean text arrives:\n{to_wechat}"
    );
    assert!(to_wechat.contains("w4 注意：兼职刷单是诈骗"), "{to_wechat}");
    for dropped in ["w1", "w2", "w3", "加V", "abc12345"] {
        assert!(
            !to_wechat.contains(dropped),
            "{dropped:?} reached WeChat:\n{to_wechat}"
        );
    }

    let mut deltas = Vec::new();
    for (series, before) in watched.iter().zip(&before) {
        deltas.push(daemon.counter(series).await - before);
    }
    assert_eq!(
        deltas,
        vec![3.0, 3.0, 1.0, 0.0, 0.0, 3.0],
        "hits (ads mask qq, ads drop wechat, contact rename wechat, none of the others) and moderated drops"
    );
}

mod word_lists_mask_for_qq_drop_for_wechat_and_hide_names {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded() {
        word_lists_mask_for_qq_drop_for_wechat_and_hide_names(Broker::embedded()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mosquitto() {
        word_lists_mask_for_qq_drop_for_wechat_and_hide_names(Broker::mosquitto().await).await;
    }
}

#[test]
fn word_list_mistakes_are_reported_together_and_check_exits_64() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join("ads.txt"),
        "# ads\n兼职刷单\nre:QQ[:：(\\d+\n",
    )
    .expect("write list");
    let path = dir.path().join("qunbridge.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[accounts.qq]
platform = "qq"
url = "ws://127.0.0.1:3001"

[accounts.wx]
platform = "wechat"
url = "ws://127.0.0.1:3002"

[[links]]
name = "fans"
groups = ["qq:{GROUP}", "wx:{WECHAT_GROUP}"]

[moderation.lists.ads]
files = ["ads.txt"]

[filters.wechat]
rules = [{{ match = "words", list = "spam", action = "drop" }}]

[filters.qq]
rules = [{{ match = "words", list = "ads", action = "mask", with = "[广告]" }}]
"#
        ),
    )
    .expect("write config");
    let output = std::process::Command::new(qunbridge_tests::qunbridge_binary())
        .arg("check")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("check runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    for expected in [
        r#"filters "wechat": `rules[0].list` = "spam": no [moderation.lists.spam] is configured (lists: ads)"#,
        r#"moderation.lists "ads": `files` has "ads.txt": at "#,
        r#"ads.txt:3, "re:QQ[:：(\\d+": not a valid regex"#,
        r#"filters "qq": `rules[0].with` = "[广告]": `mask` puts `*` in place of each matched character and takes no `with`"#,
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    assert!(stderr.contains("3 configuration error(s)"), "{stderr}");
}
