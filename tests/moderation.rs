//! Moderation before relay (issue 17), end to end over real sockets: a NapCat-like QQ peer
//! and a ComWeChatClient-like WeChat peer linked through the daemon, with the broker real:
//! flood control, spam waves across linked and unlinked groups, word lists (mask for QQ, drop
//! for WeChat, names hidden), and configs with mistakes refused by the binary.

use std::time::Duration;

use qunbridge_tests::onebot11_peer::{group_message, OneBot11Peer};
use qunbridge_tests::onebot12_peer::{Behaviour, OneBot12Peer};
use qunbridge_tests::process::DaemonProcess;
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

/// A QQ group the bot is in that is in no link: nothing from it is relayed.
const UNLINKED: i64 = 735021899;

/// Two QQ groups and a WeChat group in one link, a third QQ group in none, every destination
/// unpaced, and spam waves on with a short window.
fn wave_config(broker: &Broker, qq: &str, wx: &str) -> String {
    three_groups(broker, qq, wx, "[moderation.wave]\nwindow = \"4s\"\n")
}

/// Two QQ groups and a WeChat group in one link, every destination unpaced, with `moderation`
/// (tables of `[moderation]` and `[filters]`) appended.
fn three_groups(broker: &Broker, qq: &str, wx: &str, moderation: &str) -> String {
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

{moderation}
"#,
        broker = broker.toml()
    )
}

/// A text message of `user` in QQ group `group`, said now (the platform's time in seconds,
/// as NapCat sends it: the same text from the same member seconds apart is said again, not
/// a copy).
fn said_in(group: i64, message_id: i64, user: i64, text: &str) -> Value {
    let mut event = group_message(
        group,
        user,
        message_id,
        "",
        &format!("u{user}"),
        json!([{"type": "text", "data": {"text": text}}]),
    );
    event["self_id"] = json!(BOT);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970");
    event["time"] = json!(now.as_secs());
    event
}

/// Everything the QQ peer was asked to send to `group` so far, one text.
fn qq_text_in(qq: &OneBot11Peer, group: i64) -> String {
    qq.untaken("send_group_msg")
        .iter()
        .filter(|send| send["params"]["group_id"].as_i64() == Some(group))
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

/// Waits until what QQ group `group` was sent contains every one of `wanted`.
async fn wait_for_qq_group(qq: &OneBot11Peer, group: i64, wanted: &[&str]) -> String {
    let deadline = tokio::time::Instant::now() + qunbridge_tests::PATIENCE;
    loop {
        let text = qq_text_in(qq, group);
        if wanted.iter().all(|w| text.contains(w)) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "QQ group {group} got:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How many copies of the ad a text holds (every variant says 日结 once).
fn ads_in(text: &str) -> usize {
    text.matches("日结").count()
}

async fn a_spam_wave_across_linked_and_unlinked_groups_is_kept_from_every_destination(
    broker: Broker,
) {
    let (qq, qq_url) = OneBot11Peer::serve(BOT, None, 0).await;
    let (wx, wx_url) = OneBot12Peer::serve("wxid_botself01", Behaviour::comwechat(None)).await;
    let daemon = Daemon::start_alone(&wave_config(&broker, &qq_url, &wx_url)).await;
    qq.wait_connections(1).await;
    wx.wait_connections(1).await;

    let hits = |platform: &str| {
        format!(
            r#"qunbridge_moderation_hits_total{{rule="wave",action="drop",platform="{platform}"}}"#
        )
    };
    let watched = [
        "qunbridge_moderation_waves_total".to_owned(),
        hits("qq"),
        hits("wechat"),
        r#"qunbridge_messages_dropped_total{reason="moderated"}"#.to_owned(),
        r#"qunbridge_messages_dropped_total{reason="unrouted"}"#.to_owned(),
    ];
    let mut before = Vec::new();
    for series in &watched {
        before.push(daemon.counter(series).await);
    }

    // Three members post one ad in three groups, each copy varied: full-width letters where
    // nothing is bridged, extra spaces in the first linked group, an emoji in the second.
    qq.push_event(said_in(
        UNLINKED,
        501,
        1000000011,
        "兼职刷单，日结３００元！加微信 ＡＢＣ１２３ 详情 https://a.example.com/x?y=1",
    ));
    qq.push_event(said_in(
        GROUP,
        502,
        1000000012,
        "兼职刷单 ，  日结300元！ 加微信  abc123   详情 https://a.example.com/x?y=1",
    ));
    qq.push_event(said_in(
        QQ_DESTINATION,
        503,
        1000000013,
        "兼职刷单，日结300元！🔥加微信 abc123 详情 https://a.example.com/x?y=1",
    ));
    // A fourth a while later (within the window), with another query string on the host.
    tokio::time::sleep(Duration::from_secs(1)).await;
    qq.push_event(said_in(
        GROUP,
        504,
        1000000014,
        "兼职刷单，日结300元！加微信 abc123 详情 https://a.example.com/x?y=2&from=qq",
    ));
    // Markers after them all, one from each linked QQ group: when they are there, every
    // copy before them was judged.
    qq.push_event(said_in(GROUP, 505, CALM, "wave-marker-a"));
    qq.push_event(said_in(QQ_DESTINATION, 506, CALM, "wave-marker-b"));

    let to_wechat = wait_for_wechat(&wx, &["wave-marker-a", "wave-marker-b"]).await;
    let to_first = wait_for_qq_group(&qq, GROUP, &["wave-marker-b"]).await;
    let to_second = wait_for_qq_group(&qq, QQ_DESTINATION, &["wave-marker-a"]).await;
    // Only the second copy (the first in a linked group) went out, before it was a wave.
    assert_eq!(ads_in(&to_wechat), 1, "WeChat got:\n{to_wechat}");
    assert!(to_wechat.contains("加微信  abc123"), "{to_wechat}");
    assert_eq!(
        ads_in(&to_second),
        1,
        "the second QQ group got:\n{to_second}"
    );
    assert_eq!(
        ads_in(&to_first),
        0,
        "the first QQ group got the third copy:\n{to_first}"
    );
    assert_eq!(
        qq_text_in(&qq, UNLINKED),
        "",
        "nothing goes to an unlinked group"
    );

    let mut deltas = Vec::new();
    for (series, before) in watched.iter().zip(&before) {
        deltas.push(daemon.counter(series).await - before);
    }
    assert_eq!(
        deltas,
        vec![1.0, 2.0, 2.0, 4.0, 1.0],
        "one wave; the third and fourth copies kept from QQ and WeChat; the unlinked copy unrouted"
    );

    // After a whole window without a copy, the same text is relayed again.
    tokio::time::sleep(Duration::from_secs(5)).await;
    qq.push_event(said_in(
        GROUP,
        507,
        1000000012,
        "兼职刷单 ，  日结300元！ 加微信  abc123   详情 https://a.example.com/x?y=1",
    ));
    qq.push_event(said_in(GROUP, 508, CALM, "wave-marker-c"));
    let to_wechat = wait_for_wechat(&wx, &["wave-marker-c"]).await;
    assert_eq!(ads_in(&to_wechat), 2, "WeChat got:\n{to_wechat}");
    let to_second = wait_for_qq_group(&qq, QQ_DESTINATION, &["wave-marker-c"]).await;
    assert_eq!(ads_in(&to_second), 2, "{to_second}");
    assert_eq!(
        daemon.counter(&watched[0]).await - before[0],
        1.0,
        "still one wave"
    );
}

mod a_spam_wave_across_linked_and_unlinked_groups_is_kept_from_every_destination {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded() {
        a_spam_wave_across_linked_and_unlinked_groups_is_kept_from_every_destination(
            Broker::embedded(),
        )
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mosquitto() {
        a_spam_wave_across_linked_and_unlinked_groups_is_kept_from_every_destination(
            Broker::mosquitto().await,
        )
        .await;
    }
}

async fn a_reload_keeps_wave_counts_unless_the_wave_settings_changed(broker: Broker) {
    let (qq, qq_url) = OneBot11Peer::serve(BOT, None, 0).await;
    let (wx, wx_url) = OneBot12Peer::serve("wxid_botself01", Behaviour::comwechat(None)).await;
    let with_window =
        |window: &str| wave_config(&broker, &qq_url, &wx_url).replace("window = \"4s\"", window);
    let daemon = Daemon::start_alone(&with_window("window = \"1m\"")).await;
    qq.wait_connections(1).await;
    wx.wait_connections(1).await;
    const AD: &str = "低价代购，包邮到家，加微信 abc123";

    // Two sightings, then a reload that changes nothing about waves (flood control added).
    qq.push_event(said_in(UNLINKED, 601, 1000000021, AD));
    qq.push_event(said_in(GROUP, 602, 1000000022, AD));
    wait_for_wechat(&wx, &["包邮到家"]).await;
    daemon
        .reload(&format!(
            "{}\n[moderation.flood]\nper_sender = \"20/10s\"\n",
            with_window("window = \"1m\"")
        ))
        .await;
    // The counts were kept: the third copy is a wave.
    qq.push_event(said_in(QQ_DESTINATION, 603, 1000000023, AD));
    qq.push_event(said_in(QQ_DESTINATION, 604, CALM, "reload-marker-1"));
    let to_wechat = wait_for_wechat(&wx, &["reload-marker-1"]).await;
    assert_eq!(to_wechat.matches("包邮到家").count(), 1, "{to_wechat}");

    // A changed window counts afresh from the next message on: one copy is no wave.
    daemon.reload(&with_window("window = \"2m\"")).await;
    qq.push_event(said_in(GROUP, 605, 1000000024, AD));
    qq.push_event(said_in(GROUP, 606, CALM, "reload-marker-2"));
    let to_wechat = wait_for_wechat(&wx, &["reload-marker-2"]).await;
    assert_eq!(to_wechat.matches("包邮到家").count(), 2, "{to_wechat}");

    // Without the table, waves are off.
    daemon
        .reload(&with_window("").replace("[moderation.wave]", ""))
        .await;
    for (n, group) in [GROUP, QQ_DESTINATION, GROUP].into_iter().enumerate() {
        let n = i64::try_from(n).expect("small");
        qq.push_event(said_in(group, 607 + n, 1000000025 + n, AD));
    }
    qq.push_event(said_in(GROUP, 610, CALM, "reload-marker-3"));
    let to_wechat = wait_for_wechat(&wx, &["reload-marker-3"]).await;
    assert_eq!(to_wechat.matches("包邮到家").count(), 5, "{to_wechat}");
}

mod a_reload_keeps_wave_counts_unless_the_wave_settings_changed {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded() {
        a_reload_keeps_wave_counts_unless_the_wave_settings_changed(Broker::embedded()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mosquitto() {
        a_reload_keeps_wave_counts_unless_the_wave_settings_changed(Broker::mosquitto().await)
            .await;
    }
}

/// Two QQ groups and a WeChat group in one link, every destination unpaced, with two word
/// lists: `ads` masked for QQ and dropped for WeChat, `contact` for WeChat only.
fn words_config(broker: &Broker, qq: &str, wx: &str) -> String {
    three_groups(
        broker,
        qq,
        wx,
        r#"[moderation.lists.ads]
words = ["兼职刷单"]
allow = ["兼职刷单是诈骗"]

[moderation.lists.contact]
words = ["加V"]

[filters.wechat]
rules = [
  { match = "words", list = "ads", action = "drop" },
  { match = "words", list = "contact", action = "drop" },
]

[filters.qq]
rules = [{ match = "words", list = "ads", action = "mask" }]
"#,
    )
}

/// Everything the QQ peer was asked to send to the QQ destination group so far, one text.
fn qq_text(qq: &OneBot11Peer) -> String {
    qq_text_in(qq, QQ_DESTINATION)
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

#[test]
fn wave_mistakes_are_reported_together_and_check_exits_64() {
    let dir = tempfile::tempdir().expect("tempdir");
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

[moderation.wave]
window = "ten minutes"
groups = 1
min_chars = 0
action = "hold"
suspect_delay = "2s"

[stats]
enabled = false
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
        r#"moderation.wave: `window` = "ten minutes": "#,
        "moderation.wave: `groups` = 1: at least 2",
        "moderation.wave: `min_chars` = 0: at least 1",
        "moderation.wave: `suspect_delay` is set but `stats.enabled` = false",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    assert!(stderr.contains("4 configuration error(s)"), "{stderr}");
}

/// QQ, a second QQ group and WeChat in one link, unpaced; a flood limit whose action is drop,
/// which WeChat overrides with `on_flood = "hold"`; `hold_max` as given.
fn hold_config(broker: &Broker, qq: &str, wx: &str, hold_max: &str) -> String {
    three_groups(
        broker,
        qq,
        wx,
        &format!(
            r#"[filters.wechat]
on_flood = "hold"

[moderation]
hold_max = "{hold_max}"

[moderation.flood]
per_sender = "5/10s"
burst = 5
"#
        ),
    )
}

/// Runs `qunbridge moderation <args>` against a daemon's admin endpoint; returns the exit
/// code and standard output.
fn moderation_cli(admin: std::net::SocketAddr, args: &[&str]) -> (Option<i32>, String) {
    let output = std::process::Command::new(qunbridge_tests::qunbridge_binary())
        .arg("moderation")
        .arg("--admin")
        .arg(admin.to_string())
        .args(args)
        .output()
        .expect("qunbridge moderation runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// The held entries `qunbridge moderation list --json` prints.
fn held_entries(admin: std::net::SocketAddr) -> Vec<Value> {
    let (code, stdout) = moderation_cli(admin, &["list", "--json"]);
    assert_eq!(code, Some(0), "{stdout}");
    let document: Value = serde_json::from_str(&stdout).expect("list --json prints JSON");
    document["held"].as_array().cloned().unwrap_or_default()
}

/// The held entries once there are at least `count` (or after [`qunbridge_tests::PATIENCE`]):
/// an entry is written just before its inbound is acknowledged, which may be after a later
/// message was delivered.
async fn wait_held(admin: std::net::SocketAddr, count: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + qunbridge_tests::PATIENCE;
    loop {
        let held = held_entries(admin);
        if held.len() >= count || tokio::time::Instant::now() >= deadline {
            return held;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `qunbridge_moderation_hits_total{rule, action, platform}` in a metrics text.
fn hits_in(metrics: &str, rule: &str, action: &str, platform: &str) -> f64 {
    qunbridge_tests::metrics::counter(
        metrics,
        &format!(
            r#"qunbridge_moderation_hits_total{{rule="{rule}",action="{action}",platform="{platform}"}}"#
        ),
    )
}

/// How often `needle` occurs in `text`.
fn occurrences(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}

/// Flood with `on_flood = "hold"` for WeChat and the default drop for QQ: f6…f8 are held for
/// WeChat (listed three times) and dropped for QQ, while a clean message after them is
/// relayed at once; the entries survive `kill -9`; a release delivers one exactly once (also
/// across a `kill -9` right after it); with `hold_max = "3s"` the rest expire and are counted.
async fn flooded_messages_are_held_for_one_destination_and_released_once(broker: Broker) {
    let (qq, qq_url) = OneBot11Peer::serve(BOT, None, 0).await;
    let (wx, wx_url) = OneBot12Peer::serve("wxid_botself01", Behaviour::comwechat(None)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = |hold_max: &str| hold_config(&broker, &qq_url, &wx_url, hold_max);
    let mut daemon = DaemonProcess::start(dir.path(), &config("1h")).await;
    qq.wait_connections(1).await;
    wx.wait_connections(1).await;

    for n in 1..=8 {
        qq.push_event(said(100 + n, FLOODER, &format!("hold-f{n}")));
    }
    qq.push_event(said(300, CALM, "calm-after"));
    let text = wait_for_wechat(&wx, &["hold-f5", "calm-after"]).await;
    let qq_copy = wait_for_qq_group(&qq, QQ_DESTINATION, &["hold-f5", "calm-after"]).await;
    for held in ["hold-f6", "hold-f7", "hold-f8"] {
        assert!(!text.contains(held), "{held} reached WeChat:\n{text}");
        assert!(!qq_copy.contains(held), "{held} reached QQ:\n{qq_copy}");
    }
    let metrics = daemon.metrics().await;
    let hits = |action: &str, platform: &str| hits_in(&metrics, "flood", action, platform);
    assert_eq!(hits("hold", "wechat"), 3.0, "{metrics}");
    assert_eq!(hits("drop", "qq"), 3.0, "{metrics}");
    assert_eq!(
        qunbridge_tests::metrics::counter(&metrics, "qunbridge_moderation_held"),
        3.0
    );

    let held = wait_held(daemon.admin, 3).await;
    assert_eq!(held.len(), 3, "{held:?}");
    for entry in &held {
        assert_eq!(entry["rule"], "flood");
        assert_eq!(entry["link"], "fans");
        assert_eq!(entry["to"]["account"], "wx");
        assert_eq!(
            entry["sender"].as_str(),
            Some(format!("u{FLOODER}").as_str())
        );
        // What the list shows: no field with the member's id.
        let mut fields: Vec<&str> = entry
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        fields.sort_unstable();
        assert_eq!(
            fields,
            ["excerpt", "from", "held_ms", "id", "link", "rule", "sender", "to"]
        );
    }
    let excerpts: Vec<&str> = held.iter().filter_map(|e| e["excerpt"].as_str()).collect();
    assert_eq!(excerpts, ["hold-f6", "hold-f7", "hold-f8"], "oldest first");

    // The held entries survive kill -9.
    daemon.restart_with(&config("1h")).await;
    qq.wait_connections(2).await;
    wx.wait_connections(2).await;
    let held = held_entries(daemon.admin);
    assert_eq!(held.len(), 3, "after kill -9: {held:?}");

    // Release f6: it reaches WeChat once; killed right after the release and restarted, it
    // is neither listed nor sent again.
    let f6 = held[0]["id"].as_str().expect("id").to_owned();
    let (code, stdout) = moderation_cli(daemon.admin, &["release", &f6]);
    assert_eq!(code, Some(0), "{stdout}");
    assert!(stdout.contains(&format!("{f6}: released")), "{stdout}");
    daemon.restart_with(&config("1h")).await;
    wait_for_wechat(&wx, &["hold-f6"]).await;
    // WeChat's reconnect says nothing about QQ's: the event goes on QQ's new connection.
    qq.wait_connections(3).await;
    qq.push_event(said(301, CALM, "calm-marker"));
    let text = wait_for_wechat(&wx, &["calm-marker"]).await;
    assert_eq!(occurrences(&text, "hold-f6"), 1, "{text}");
    assert!(!qq_text_in(&qq, QQ_DESTINATION).contains("hold-f6"));
    let held = held_entries(daemon.admin);
    assert_eq!(held.len(), 2, "{held:?}");
    let (code, stdout) = moderation_cli(daemon.admin, &["release", &f6]);
    assert_eq!(
        code,
        Some(1),
        "a released id is not held any more: {stdout}"
    );

    // Drop f7 by hand; f8 expires once hold_max is 3 s.
    let f7 = held[0]["id"].as_str().expect("id").to_owned();
    let (code, stdout) = moderation_cli(daemon.admin, &["drop", &f7]);
    assert_eq!(code, Some(0), "{stdout}");
    daemon.reload_with(&config("3s")).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !held_entries(daemon.admin).is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "f8 did not expire");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = daemon.metrics().await;
    let outcome = |outcome: &str| {
        qunbridge_tests::metrics::counter(
            &metrics,
            &format!(r#"qunbridge_moderation_held_total{{outcome="{outcome}"}}"#),
        )
    };
    assert_eq!(outcome("expired"), 1.0, "{metrics}");
    assert_eq!(outcome("dropped"), 1.0, "{metrics}");
    assert_eq!(
        qunbridge_tests::metrics::counter(&metrics, "qunbridge_moderation_held"),
        0.0
    );
    let text = wechat_text(&wx);
    for never in ["hold-f7", "hold-f8"] {
        assert!(!text.contains(never), "{never} reached WeChat:\n{text}");
    }
    daemon.kill();
}

mod flooded_messages_are_held_for_one_destination_and_released_once {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded() {
        flooded_messages_are_held_for_one_destination_and_released_once(Broker::embedded()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mosquitto() {
        flooded_messages_are_held_for_one_destination_and_released_once(Broker::mosquitto().await)
            .await;
    }
}

/// A word rule whose action is `hold` for WeChat and `mask` for QQ: the hit is held for
/// WeChat (listed with the list's name), masked for QQ, and a clean message after it goes
/// through at once; a release delivers it to WeChat once, rendered without the rule that held
/// it (another list's mask still applies).
async fn a_word_rule_holds_for_review_and_a_release_leaves_that_rule_out(broker: Broker) {
    let (qq, qq_url) = OneBot11Peer::serve(BOT, None, 0).await;
    let (wx, wx_url) = OneBot12Peer::serve("wxid_botself01", Behaviour::comwechat(None)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = three_groups(
        &broker,
        &qq_url,
        &wx_url,
        r#"[moderation.lists.ads]
words = ["兼职刷单"]

[moderation.lists.pay]
words = ["日结"]

[filters.wechat]
rules = [
  { match = "words", list = "ads", action = "hold" },
  { match = "words", list = "pay", action = "mask" },
]

[filters.qq]
rules = [{ match = "words", list = "ads", action = "mask" }]
"#,
    );
    let mut daemon = DaemonProcess::start(dir.path(), &config).await;
    qq.wait_connections(1).await;
    wx.wait_connections(1).await;

    qq.push_event(said(501, CALM, "h1 今天兼 职刷单日结"));
    qq.push_event(said(502, CALM, "h2 clean"));
    let to_wechat = wait_for_wechat(&wx, &["h2 clean"]).await;
    assert!(!to_wechat.contains("h1"), "held, not sent:\n{to_wechat}");
    let to_qq = wait_for_qq(&qq, &["h1 ", "h2 clean"]).await;
    assert!(to_qq.contains("h1 今天*****日结"), "{to_qq}");

    let metrics = daemon.metrics().await;
    let hits = |action: &str, platform: &str| hits_in(&metrics, "ads", action, platform);
    assert_eq!(hits("hold", "wechat"), 1.0, "{metrics}");
    assert_eq!(hits("mask", "qq"), 1.0, "{metrics}");
    assert_eq!(
        qunbridge_tests::metrics::counter(&metrics, "qunbridge_moderation_held"),
        1.0
    );

    let held = wait_held(daemon.admin, 1).await;
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0]["rule"], "ads");
    assert_eq!(held[0]["to"]["account"], "wx");
    let id = held[0]["id"].as_str().expect("id").to_owned();
    let (code, stdout) = moderation_cli(daemon.admin, &["release", &id]);
    assert_eq!(code, Some(0), "{stdout}");
    let to_wechat = wait_for_wechat(&wx, &["h1 "]).await;
    assert!(
        to_wechat.contains("h1 今天兼 职刷单**"),
        "released without the `ads` rule, `pay` still masks:\n{to_wechat}"
    );
    qq.push_event(said(503, CALM, "h3 marker"));
    let to_wechat = wait_for_wechat(&wx, &["h3 marker"]).await;
    assert_eq!(occurrences(&to_wechat, "h1 "), 1, "{to_wechat}");
    assert!(held_entries(daemon.admin).is_empty());
    daemon.kill();
}

mod a_word_rule_holds_for_review_and_a_release_leaves_that_rule_out {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded() {
        a_word_rule_holds_for_review_and_a_release_leaves_that_rule_out(Broker::embedded()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mosquitto() {
        a_word_rule_holds_for_review_and_a_release_leaves_that_rule_out(Broker::mosquitto().await)
            .await;
    }
}

/// A word rule holds a message for an `api` group; a release shows it there once, and the
/// release is confirmed at once: unpaced, by the `api` feed (which keeps the message under its
/// own key, so egress writes no send-log key of its own); paced at 1/min behind a message that
/// took the minute's token, by the destination's outbox, where it waits.
async fn a_message_held_for_an_api_group_is_released_there_once(broker: Broker, paced: bool) {
    let api = std::net::SocketAddr::from(([127, 0, 0, 1], qunbridge_tests::free_port()));
    let dir = tempfile::tempdir().expect("tempdir");
    let limit = if paced {
        "[limits.hub.groups.b]\nper_group = \"1/min\"\n"
    } else {
        ""
    };
    let config = format!(
        r#"{broker}
[accounts.hub]
platform = "api"
listen = "{api}"

{limit}
[[links]]
name = "demo"
groups = ["hub:a", "hub:b"]

[moderation.lists.ads]
words = ["兼职刷单"]

[filters.api]
rules = [{{ match = "words", list = "ads", action = "hold" }}]
"#,
        broker = broker.toml()
    );
    let mut daemon = DaemonProcess::start(dir.path(), &config).await;
    let mut b = qunbridge_tests::SseClient::open(
        &format!("http://{api}/api/v1/groups/b/events"),
        None,
        None,
    )
    .await;
    let post = |text: &str| {
        let body = json!({"sender": {"id": "u1", "name": "Ann"}, "text": text});
        qunbridge_tests::post_message(api, "a", body, None)
    };
    let next_text = |shown: Value| shown["text"].as_str().unwrap_or_default().to_owned();
    let (status, answer) = post("h0 first").await;
    assert_eq!(status, 202, "{answer}");
    assert!(next_text(b.next().await.json()).contains("h0 first"));
    let (status, answer) = post("h1 兼职刷单").await;
    assert_eq!(status, 202, "{answer}");
    let held = wait_held(daemon.admin, 1).await;
    assert_eq!(held.len(), 1, "{held:?}");
    assert_eq!(held[0]["to"]["account"], "hub");
    let id = held[0]["id"].as_str().expect("id").to_owned();
    let released_at = std::time::Instant::now();
    let (code, stdout) = moderation_cli(daemon.admin, &["release", &id]);
    assert_eq!(code, Some(0), "the release is confirmed: {stdout}");
    assert!(stdout.contains(&format!("{id}: released")), "{stdout}");
    assert!(held_entries(daemon.admin).is_empty());
    if paced {
        // It waits for the next minute's token: a release confirmed by the outbox, not by a
        // send, and not after the release's whole wait for egress.
        assert!(
            released_at.elapsed() < Duration::from_secs(5),
            "confirmed after {:?}",
            released_at.elapsed()
        );
        daemon.kill();
        return;
    }
    assert!(next_text(b.next().await.json()).contains("h1 兼职刷单"));
    let (status, answer) = post("h2 marker").await;
    assert_eq!(status, 202, "{answer}");
    let shown = next_text(b.next().await.json());
    assert!(
        shown.contains("h2 marker"),
        "the released message is shown once, then the next: {shown}"
    );
    daemon.kill();
}

mod a_message_held_for_an_api_group_is_released_there_once {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded() {
        a_message_held_for_an_api_group_is_released_there_once(Broker::embedded(), false).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mosquitto() {
        a_message_held_for_an_api_group_is_released_there_once(Broker::mosquitto().await, false)
            .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn paced_embedded() {
        a_message_held_for_an_api_group_is_released_there_once(Broker::embedded(), true).await;
    }
}

/// QQ (two linked groups) and WeChat, unpaced, waves over 10 s, and a suspect delay of 2 s.
fn suspect_config(broker: &Broker, qq: &str, wx: &str) -> String {
    wave_config(broker, qq, wx).replace(
        "[moderation.wave]\nwindow = \"4s\"\n",
        "[moderation.wave]\nwindow = \"10s\"\nsuspect_delay = \"2s\"\n",
    )
}

/// A newcomer's link waits 2 s and then arrives; a member who posted before sends a link at
/// once; a newcomer's ad that two more groups see within the 2 s reaches no destination.
async fn a_newcomers_link_waits_and_is_kept_back_when_a_wave_shows_up(broker: Broker) {
    const KNOWN: i64 = 1000000010;
    const LONE: i64 = 1000000011;
    const SPAMMERS: [i64; 3] = [1000000012, 1000000013, 1000000014];
    let (qq, qq_url) = OneBot11Peer::serve(BOT, None, 0).await;
    let (wx, wx_url) = OneBot12Peer::serve("wxid_botself01", Behaviour::comwechat(None)).await;
    let config = suspect_config(&broker, &qq_url, &wx_url);
    assert!(config.contains("suspect_delay"), "{config}");
    let daemon = Daemon::start_alone(&config).await;
    qq.wait_connections(1).await;
    wx.wait_connections(1).await;
    let series = |rule: &str, action: &str, platform: &str| {
        format!(
            r#"qunbridge_moderation_hits_total{{rule="{rule}",action="{action}",platform="{platform}"}}"#
        )
    };
    let suspect_holds = series("suspect", "hold", "wechat");
    let wave_drops = series("wave", "drop", "wechat");
    // Metric series are the test binary's, counted from here.
    let holds_before = daemon.counter(&suspect_holds).await;
    let drops_before = daemon.counter(&wave_drops).await;
    let waves_before = daemon.counter("qunbridge_moderation_waves_total").await;
    let holds = || async { daemon.counter(&suspect_holds).await - holds_before };

    // A member who has posted before sends a link: no wait.
    qq.push_event(said_in(GROUP, 601, KNOWN, "k1 早上好"));
    wait_for_wechat(&wx, &["k1 早上好"]).await;
    qq.push_event(said_in(
        GROUP,
        602,
        KNOWN,
        "k2 文档 https://docs.example.org/a",
    ));
    wait_for_wechat(&wx, &["k2 文档"]).await;
    assert_eq!(holds().await, 0.0, "k2 did not wait");

    // A newcomer's link waits: a plain message after it (from the known member) arrives
    // first, and the link about 2 s after it was posted.
    let posted = tokio::time::Instant::now();
    qq.push_event(said_in(
        GROUP,
        603,
        LONE,
        "n1 看这个 https://shop.example.com/a",
    ));
    qq.push_event(said_in(GROUP, 604, KNOWN, "k3 after"));
    let text = wait_for_wechat(&wx, &["k3 after"]).await;
    assert!(
        !text.contains("n1 "),
        "the newcomer's link did not wait:\n{text}"
    );
    assert_eq!(holds().await, 1.0);
    wait_for_wechat(&wx, &["n1 看这个"]).await;
    let waited = posted.elapsed();
    assert!(
        waited >= Duration::from_millis(1900),
        "arrived after {waited:?}, before the delay"
    );

    // A newcomer's ad in a linked group; within the delay a second newcomer posts it in the
    // other linked group and a third in a group in no link: a wave. None of the three
    // copies reaches WeChat (or the other QQ group).
    let ad = "兼职日结 加我 vx: abc12345 详情 https://ad.example.net/?a=";
    qq.push_event(said_in(GROUP, 605, SPAMMERS[0], &format!("{ad}1")));
    qq.push_event(said_in(QQ_DESTINATION, 606, SPAMMERS[1], &format!("{ad}2")));
    qq.push_event(said_in(UNLINKED, 607, SPAMMERS[2], &format!("{ad}3")));
    // The two that waited are dropped when their time comes.
    daemon.wait_counter(&wave_drops, drops_before + 2.0).await;
    assert_eq!(holds().await, 3.0, "n1 and two copies waited");
    assert_eq!(
        daemon.counter("qunbridge_moderation_waves_total").await - waves_before,
        1.0
    );
    qq.push_event(said_in(GROUP, 608, KNOWN, "k4 end"));
    let text = wait_for_wechat(&wx, &["k4 end"]).await;
    assert!(
        !text.contains("兼职日结"),
        "an ad copy reached WeChat:\n{text}"
    );
    let other_qq = qq_text_in(&qq, QQ_DESTINATION);
    assert!(!other_qq.contains("兼职日结"), "{other_qq}");
    assert_eq!(
        daemon.counter("qunbridge_moderation_held").await,
        0.0,
        "nothing is left waiting"
    );
}

mod a_newcomers_link_waits_and_is_kept_back_when_a_wave_shows_up {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded() {
        a_newcomers_link_waits_and_is_kept_back_when_a_wave_shows_up(Broker::embedded()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mosquitto() {
        a_newcomers_link_waits_and_is_kept_back_when_a_wave_shows_up(Broker::mosquitto().await)
            .await;
    }
}

/// The QQ group admin notifications go to: in no link.
const ADMINS: i64 = 735021800;
/// The admins' group a reload moves notifications to.
const ADMINS_MOVED: i64 = 735021801;

/// QQ and WeChat linked as [`config`] makes them, the QQ account unpaced too (the admins'
/// group is one of its groups), notifications to [`ADMINS`], a word list `ads` that WeChat
/// drops and notifies of, and `moderation` appended to `[moderation]`.
fn notify_config(broker: &Broker, qq: &str, wx: &str, moderation: &str) -> String {
    config(
        broker,
        qq,
        wx,
        &format!(
            r#"
[limits.qq]
per_group = "off"
per_account = "off"

[filters.wechat]
rules = [{{ match = "words", list = "ads", action = "drop", notify = true }}]

[moderation]
notify = "qq:{ADMINS}"
{moderation}

[moderation.lists.ads]
words = ["兼职刷单"]
"#
        ),
    )
}

/// The lines QQ group `group` was sent so far (egress may merge several into one send, a
/// line each).
fn admin_lines(qq: &OneBot11Peer, group: i64) -> Vec<String> {
    qq_text_in(qq, group)
        .lines()
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Waits (at most `patience`) until QQ group `group` was sent at least `count` lines.
async fn wait_for_admin_lines(
    qq: &OneBot11Peer,
    group: i64,
    count: usize,
    patience: Duration,
) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        let lines = admin_lines(qq, group);
        if lines.len() >= count {
            return lines;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the admins' group {group} got {} of {count} lines:\n{}",
            lines.len(),
            lines.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A flood held for WeChat and a word-list drop for WeChat: the admins' group gets one line
/// each, naming the link, platforms, rule, outcome (with the held id) and the sender's name,
/// without a user or group id; a reload (SIGHUP) moves later lines to another group.
async fn the_admins_group_gets_one_line_per_decision_without_ids(broker: Broker) {
    let (qq, qq_url) = OneBot11Peer::serve(BOT, None, 0).await;
    let (wx, wx_url) = OneBot12Peer::serve("wxid_botself01", Behaviour::comwechat(None)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = notify_config(
        &broker,
        &qq_url,
        &wx_url,
        "\n[moderation.flood]\nper_sender = \"5/10s\"\nburst = 5\naction = \"hold\"\n",
    );
    let mut daemon = DaemonProcess::start(dir.path(), &config).await;
    qq.wait_connections(1).await;
    wx.wait_connections(1).await;

    // f6 starts the flood (held), f7 is held too but the flood is told once.
    for n in 1..=7 {
        qq.push_event(said_as(100 + n, FLOODER, "小明", &format!("notify-f{n}")));
    }
    qq.push_event(said_as(200, CALM, "阿强", "今天兼职刷单日结"));
    qq.push_event(said_as(201, CALM, "阿强", "notify-marker"));
    let to_wechat = wait_for_wechat(&wx, &["notify-f5", "notify-marker"]).await;
    assert!(!to_wechat.contains("兼职刷单"), "{to_wechat}");
    let held = wait_held(daemon.admin, 2).await;
    assert_eq!(held.len(), 2, "f6 and f7 held for WeChat: {held:?}");
    let f6 = held[0]["id"].as_str().expect("an id");
    let expected = [
        format!("[拦截] fans · QQ→微信 · 规则 flood · 已暂存 {f6} · 小明: notify-f6"),
        "[拦截] fans · QQ→微信 · 规则 ads · 已丢弃 · 阿强: 今天兼职刷单日结".to_owned(),
    ];
    assert_eq!(
        wait_for_admin_lines(&qq, ADMINS, 2, qunbridge_tests::PATIENCE).await,
        expected
    );
    // Nothing more comes, and no id is in what came.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(admin_lines(&qq, ADMINS), expected);
    let told = qq_text_in(&qq, ADMINS);
    for id in [
        FLOODER.to_string(),
        CALM.to_string(),
        BOT.to_string(),
        GROUP.to_string(),
        ADMINS.to_string(),
        WECHAT_GROUP.to_owned(),
        "wxid_botself01".to_owned(),
    ] {
        assert!(!told.contains(&id), "{id} told to the admins:\n{told}");
    }
    let metrics = daemon.metrics().await;
    let outcome = |outcome: &str| {
        qunbridge_tests::metrics::counter(
            &metrics,
            &format!(r#"qunbridge_moderation_notifications_total{{outcome="{outcome}"}}"#),
        )
    };
    assert_eq!(
        (outcome("sent"), outcome("suppressed"), outcome("dropped")),
        (2.0, 0.0, 0.0),
        "{metrics}"
    );

    // A reload moves the notifications to another group from the next decision on.
    daemon
        .reload_with(&config.replace(&format!("qq:{ADMINS}"), &format!("qq:{ADMINS_MOVED}")))
        .await;
    qq.push_event(said_as(202, CALM, "阿强", "兼职刷单又来了"));
    assert_eq!(
        wait_for_admin_lines(&qq, ADMINS_MOVED, 1, qunbridge_tests::PATIENCE).await,
        ["[拦截] fans · QQ→微信 · 规则 ads · 已丢弃 · 阿强: 兼职刷单又来了"]
    );
    assert_eq!(
        admin_lines(&qq, ADMINS),
        expected,
        "the old group is told no more"
    );
    daemon.kill();
}

mod the_admins_group_gets_one_line_per_decision_without_ids {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded() {
        the_admins_group_gets_one_line_per_decision_without_ids(Broker::embedded()).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mosquitto() {
        the_admins_group_gets_one_line_per_decision_without_ids(Broker::mosquitto().await).await;
    }
}

/// Thirty word-list hits within a second with `notify_per_minute = 3`: the admins' group gets
/// the first three lines at once and, when the minute is over, one summary of the other 27;
/// nothing else.
async fn thirty_hits_in_a_second_give_notify_per_minute_lines_and_one_summary(broker: Broker) {
    let (qq, qq_url) = OneBot11Peer::serve(BOT, None, 0).await;
    let (wx, wx_url) = OneBot12Peer::serve("wxid_botself01", Behaviour::comwechat(None)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = notify_config(&broker, &qq_url, &wx_url, "notify_per_minute = 3\n");
    let mut daemon = DaemonProcess::start(dir.path(), &config).await;
    qq.wait_connections(1).await;
    wx.wait_connections(1).await;

    // The thirty are pushed at once; the daemon judges them within milliseconds.
    let burst = tokio::time::Instant::now();
    for n in 1..=30 {
        qq.push_event(said_as(300 + n, CALM, "阿强", &format!("兼职刷单 {n}")));
    }
    qq.push_event(said_as(400, CALM, "阿强", "burst-marker"));
    let to_wechat = wait_for_wechat(&wx, &["burst-marker"]).await;
    assert!(!to_wechat.contains("兼职刷单"), "{to_wechat}");
    let first: Vec<String> = (1..=3)
        .map(|n| format!("[拦截] fans · QQ→微信 · 规则 ads · 已丢弃 · 阿强: 兼职刷单 {n}"))
        .collect();
    assert_eq!(
        wait_for_admin_lines(&qq, ADMINS, 3, qunbridge_tests::PATIENCE).await,
        first
    );

    // The summary comes when the minute is over, not before.
    let lines = wait_for_admin_lines(&qq, ADMINS, 4, Duration::from_secs(90)).await;
    assert!(
        burst.elapsed() >= Duration::from_secs(59),
        "summary after {:?}",
        burst.elapsed()
    );
    assert_eq!(lines[..3], first[..]);
    assert_eq!(lines[3], "[拦截] 过去一分钟另有 27 次拦截未逐条通知");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(admin_lines(&qq, ADMINS).len(), 4, "nothing else");
    let metrics = daemon.metrics().await;
    let outcome = |outcome: &str| {
        qunbridge_tests::metrics::counter(
            &metrics,
            &format!(r#"qunbridge_moderation_notifications_total{{outcome="{outcome}"}}"#),
        )
    };
    assert_eq!(
        (outcome("sent"), outcome("suppressed"), outcome("dropped")),
        (4.0, 27.0, 0.0),
        "{metrics}"
    );
    daemon.kill();
}

mod thirty_hits_in_a_second_give_notify_per_minute_lines_and_one_summary {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn embedded() {
        thirty_hits_in_a_second_give_notify_per_minute_lines_and_one_summary(Broker::embedded())
            .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mosquitto() {
        thirty_hits_in_a_second_give_notify_per_minute_lines_and_one_summary(
            Broker::mosquitto().await,
        )
        .await;
    }
}

/// Runs `qunbridge check` on `config` (written to a temporary file); returns the exit code,
/// standard output and standard error.
fn check(config: &str) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("qunbridge.toml");
    std::fs::write(&path, config).expect("write config");
    let output = std::process::Command::new(qunbridge_tests::qunbridge_binary())
        .arg("check")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("check runs");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn notify_at_a_linked_group_is_reported_with_the_other_mistakes_and_check_prints_the_target() {
    let accounts = format!(
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
"#
    );
    let (code, _, stderr) = check(&format!(
        r#"{accounts}
[moderation]
notify = "qq:{GROUP}"
notify_per_minute = 0

[filters.wechat]
rules = [{{ match = "words", list = "spam", action = "drop", notify = true }}]
"#
    ));
    assert_eq!(code, Some(64), "{stderr}");
    for expected in [
        format!(
            r#"moderation: `notify` = "qq:{GROUP}": the group is in link "fans" (notifications go to an admins' group in no link"#
        ),
        "moderation: `notify_per_minute` = 0: at least 1".to_owned(),
        r#"filters "wechat": `rules[0].list` = "spam": no [moderation.lists.spam] is configured"#
            .to_owned(),
    ] {
        assert!(
            stderr.contains(&expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    assert!(stderr.contains("3 configuration error(s)"), "{stderr}");

    let (code, stdout, stderr) = check(&format!(
        r#"{accounts}
[limits.qq.groups."{ADMINS}"]
per_group = "1/5s"

[moderation]
notify = "qq:{ADMINS}"
notify_per_minute = 3

[moderation.lists.ads]
words = ["兼职刷单"]

[filters.wechat]
rules = [{{ match = "words", list = "ads", action = "drop", notify = true }}]
"#
    ));
    assert_eq!(code, Some(0), "{stderr}");
    for expected in [
        format!("admin notification: to qq:{ADMINS} (qq), at most 3 lines a minute plus a summary"),
        "  pacing: ".to_owned(),
        "    word rules: ads (1 entry) -> drop, notify".to_owned(),
    ] {
        assert!(
            stdout.contains(&expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
}
