//! End-to-end: the media cache as members and operators see it, over real sockets against
//! the scripted peers and a local file server (which `[media] allow_hosts` lets the address
//! guard fetch).
//!
//! - One QQ picture reaches a WeChat group (OneBot v12, ComWeChatClient), a WeCom robot and a
//!   DingTalk app robot group natively (`upload_file` data then `image`; an `image` message
//!   with base64 and md5; `media/upload` then `sampleImageMsg`), and the file server is asked
//!   for it once.
//! - `kill -9` with the picture cached and its send unanswered: the daemon (the real binary,
//!   restarted on the same `state_dir`) redelivers the message from its outbox and the
//!   picture arrives with the source's bytes, still fetched once.
//! - The cache stays under `cache_max_bytes` while about three times as much passes through,
//!   the evictions are counted in `qunbridge_media_cache_evictions_total`, and the `media`
//!   block of `/api/v1/status` shows the same.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use serde_json::{json, Value};

use qunbridge_tests::dingtalk_peer::{
    picture_message, DingTalkPeer, GroupSend, CLIENT_ID, CLIENT_SECRET,
};
use qunbridge_tests::file_server::{png, FileServer, Route};
use qunbridge_tests::onebot11_peer::{group_message as qq_message, OneBot11Peer};
use qunbridge_tests::onebot12_peer::{Behaviour, OneBot12Peer};
use qunbridge_tests::process::DaemonProcess;
use qunbridge_tests::wecom_peer::{md5_hex, WecomPeer};
use qunbridge_tests::{free_port, post_message, Broker, Daemon};

/// The QQ bot.
const QQ_BOT: i64 = 2854196310;
/// The linked QQ group.
const QQ_GROUP: i64 = 735021844;
/// The WeChat bot.
const WX_BOT: &str = "wxid_bot";
/// The linked WeChat group.
const WX_GROUP: &str = "12345678@chatroom";
/// The linked DingTalk group (a conversation id).
const DING_GROUP: &str = "cidQ7x+R2m/0Lw9==";
/// The WeCom robot's webhook key.
const WECOM_KEY: &str = "693a91f6-7xxx-4f2c-9d1e-000000000002";
/// The `[media]` table body that lets the daemon fetch from the local file server.
const LOCAL: &str = "allow_hosts = [\"127.0.0.1\"]";

/// The bytes of an `upload_file` type `data` or a `base64://` picture.
fn decoded(encoded: &str) -> Vec<u8> {
    let data = encoded.strip_prefix("base64://").unwrap_or(encoded);
    base64::engine::general_purpose::STANDARD
        .decode(data)
        .expect("valid base64")
}

/// A QQ message from Alice in the linked group: "look" and the picture `file` at `url`.
fn alice_with_picture(message_id: i64, file: &str, url: &str) -> Value {
    qq_message(
        QQ_GROUP,
        1437420188,
        message_id,
        "Alice",
        "Alice",
        json!([
            {"type": "text", "data": {"text": "look"}},
            {"type": "image", "data": {"file": file, "url": url, "file_size": "100"}}
        ]),
    )
}

/// The `[accounts.wx]` table for the WeChat peer at `wx_url` and the `[accounts.ding]` table
/// for the DingTalk app robot `ding`.
fn wechat_and_dingtalk(wx_url: &str, ding: &DingTalkPeer) -> String {
    format!(
        r#"[accounts.wx]
platform = "wechat"
url = "{wx_url}"

[accounts.ding]
platform = "dingtalk"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
api_base = "{api_base}"
"#,
        api_base = ding.api_base()
    )
}

/// Waits for Alice's "look" with `picture` in the WeChat group: the bytes uploaded as data,
/// then the text, then the picture by its file id.
async fn wechat_got_alice_with(wx: &OneBot12Peer, picture: &[u8]) {
    let upload = wx.next_action("upload_file").await;
    assert_eq!(upload["params"]["type"], "data");
    assert_eq!(
        decoded(upload["params"]["data"].as_str().expect("data")),
        picture,
        "WeChat got the served bytes"
    );
    let text = wx.next_action("send_message").await;
    assert_eq!(
        text["params"]["message"],
        json!([{"type": "text", "data": {"text": "[QQ] Alice: look"}}])
    );
    let image = wx.next_action("send_message").await;
    assert_eq!(image["params"]["message"][0]["type"], "image");
    assert!(image["params"]["message"][0]["data"]["file_id"]
        .as_str()
        .is_some_and(|id| !id.is_empty()));
}

/// Total size of the files under `dir` (0 when it does not exist).
fn disk_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                disk_bytes(&path)
            } else {
                entry.metadata().map_or(0, |m| m.len())
            }
        })
        .sum()
}

/// Number of files under `dir`.
fn file_count(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| {
            let path = entry.path();
            if path.is_dir() {
                file_count(&path)
            } else {
                1
            }
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_qq_picture_reaches_wechat_wecom_and_dingtalk_natively_fetched_once() {
    let broker = Broker::embedded();
    let files = FileServer::start().await;
    let picture = png(50_000);
    files.serve("/qq/C0FFEE.png", Route::ok(picture.clone()));
    let (qq, qq_url) = OneBot11Peer::serve(QQ_BOT, None, 0).await;
    let (wx, wx_url) = OneBot12Peer::serve(WX_BOT, Behaviour::comwechat(None)).await;
    let (robot, webhook) = WecomPeer::serve(WECOM_KEY).await;
    let ding = DingTalkPeer::start(Vec::new()).await;
    let config = format!(
        r#"{broker}
[accounts.qq]
platform = "qq"
url = "{qq_url}"

{wechat_and_dingtalk}
[accounts.robot]
platform = "wecom"
webhook = "{webhook}"

[[links]]
name = "fans"
groups = ["qq:{QQ_GROUP}", "wx:{WX_GROUP}", "ding:{DING_GROUP}"]
to = ["robot:fans"]

[media]
{LOCAL}
"#,
        broker = broker.toml(),
        wechat_and_dingtalk = wechat_and_dingtalk(&wx_url, &ding),
    );
    let daemon = Daemon::start(&config).await;
    qq.wait_connections(1).await;
    wx.wait_connections(1).await;

    qq.push_event(alice_with_picture(
        601,
        "C0FFEE.png",
        &files.url("/qq/C0FFEE.png"),
    ));

    // WeChat: the bytes uploaded as data, then the text, then the picture by its file id.
    wechat_got_alice_with(&wx, &picture).await;

    // WeCom: the text, then an image message with the bytes and their md5.
    let posts = robot.wait_accepted(2).await;
    assert_eq!(posts[0].msgtype(), "text");
    assert_eq!(posts[0].content(), "[QQ] Alice: look");
    assert_eq!(posts[1].msgtype(), "image");
    assert_eq!(posts[1].image_bytes().as_deref(), Some(&picture[..]));
    assert_eq!(posts[1].json()["image"]["md5"], md5_hex(&picture));

    // DingTalk: the text, then the picture uploaded once and sent by its media id.
    let sends: Vec<GroupSend> = ding
        .wait_for("the text and the picture", |peer| {
            let sends: Vec<GroupSend> = peer
                .group_sends()
                .into_iter()
                .filter(|send| send.accepted && send.group() == DING_GROUP)
                .collect();
            (sends.len() >= 2).then_some(sends)
        })
        .await;
    assert_eq!(sends[0].content().as_deref(), Some("[QQ] Alice: look"));
    let uploads = ding.uploads();
    assert_eq!(uploads.len(), 1, "{uploads:?}");
    assert_eq!(uploads[0].bytes, picture, "DingTalk got the served bytes");
    assert_eq!(
        sends[1].photo_url(),
        Some(format!("@{}", uploads[0].media_id))
    );

    assert_eq!(
        files.requests("/qq/C0FFEE.png"),
        1,
        "one fetch for three destinations"
    );
    daemon.stop().await.expect("clean stop");
}

/// A QQ group and a WeChat group, linked, with pictures from the local file server.
fn qq_and_wechat(broker: &Broker, qq_url: &str, wx_url: &str) -> String {
    format!(
        r#"{broker}
[accounts.qq]
platform = "qq"
url = "{qq_url}"

[accounts.wx]
platform = "wechat"
url = "{wx_url}"

[[links]]
name = "fans"
groups = ["qq:{QQ_GROUP}", "wx:{WX_GROUP}"]

[media]
{LOCAL}
"#,
        broker = broker.toml()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_kill_9_the_redelivered_message_finds_its_picture_in_the_cache() {
    let broker = Broker::embedded();
    let files = FileServer::start().await;
    let picture = png(70_000);
    files.serve("/qq/BEEF.png", Route::ok(picture.clone()));
    let (qq, qq_url) = OneBot11Peer::serve(QQ_BOT, None, 0).await;
    let (wx, wx_url) = OneBot12Peer::serve(WX_BOT, Behaviour::comwechat(None)).await;
    // WeChat hangs on uploads: the picture is fetched and cached, but never sent.
    wx.hold_answers("upload_file");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut daemon =
        DaemonProcess::start(dir.path(), &qq_and_wechat(&broker, &qq_url, &wx_url)).await;
    qq.wait_connections(1).await;
    wx.wait_connections(1).await;

    qq.push_event(alice_with_picture(
        701,
        "BEEF.png",
        &files.url("/qq/BEEF.png"),
    ));
    let held = wx.next_action("upload_file").await;
    assert_eq!(
        decoded(held["params"]["data"].as_str().expect("data")),
        picture,
        "the picture was in the cache before the kill"
    );
    assert_eq!(files.requests("/qq/BEEF.png"), 1);
    daemon.kill();
    assert!(
        wx.calls("send_message").is_empty(),
        "nothing reached the WeChat group before the kill"
    );

    // WeChat answers again; the daemon comes back on the same state directory.
    wx.answer_all();
    daemon.restart().await;
    wx.wait_connections(2).await;
    // The redelivered message carries the source's bytes.
    wechat_got_alice_with(&wx, &picture).await;
    assert_eq!(
        files.requests("/qq/BEEF.png"),
        1,
        "found in the cache after the restart, not fetched again"
    );
    daemon.stop();
}

/// Asks a daemon's `/api/v1/status`.
async fn status(admin: SocketAddr) -> Value {
    reqwest::get(format!("http://{admin}/api/v1/status"))
        .await
        .expect("status answers")
        .json()
        .await
        .expect("status is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_stays_under_its_cap_while_three_times_as_much_passes() {
    let broker = Broker::embedded();
    let files = FileServer::start().await;
    let (qq, qq_url) = OneBot11Peer::serve(QQ_BOT, None, 0).await;
    let api = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let cap: u64 = 1 << 20;
    let config = format!(
        r#"{broker}
[accounts.hub]
platform = "api"
listen = "{api}"

[accounts.qq]
platform = "qq"
url = "{qq_url}"

[[links]]
name = "fans"
groups = ["hub:a", "qq:{QQ_GROUP}"]

[media]
{LOCAL}
cache_max_bytes = {cap}
max_image_bytes = {max_image}
"#,
        broker = broker.toml(),
        max_image = cap / 2,
    );
    // Alone: the eviction counter has no account label.
    let daemon = Daemon::start_alone(&config).await;
    qq.wait_connections(1).await;
    let evicted = "qunbridge_media_cache_evictions_total{reason=\"size\"}";
    let evicted_before = daemon.counter(evicted).await;
    let blobs = daemon.state_dir().join("media").join("blobs");

    // Pictures of about a quarter of the cap each, three caps' worth, one after another.
    let size = (cap / 4) as usize - 10_000;
    let count = 12;
    let mut inserted = 0u64;
    for n in 0..count {
        let picture = png(size + n);
        let path = format!("/p{n}.png");
        files.serve(&path, Route::ok(picture.clone()));
        let (code, body) = post_message(
            api,
            "a",
            json!({"sender": {"id": "u1", "name": "Ann"},
                   "segments": [{"type": "text", "text": format!("#{n}")},
                                {"type": "image", "url": files.url(&path)}]}),
            None,
        )
        .await;
        assert_eq!(code, 202, "{body}");
        let send = qq.next_action("send_group_msg").await;
        let file = send["params"]["message"][1]["data"]["file"]
            .as_str()
            .expect("the picture is in the message");
        assert_eq!(
            decoded(file),
            picture,
            "picture {n} arrived as it was served"
        );
        inserted += picture.len() as u64;
        assert!(
            disk_bytes(&blobs) <= cap,
            "over the cap after picture {n}: {} bytes",
            disk_bytes(&blobs)
        );
    }
    assert!(inserted >= 2 * cap, "enough passed through: {inserted}");

    let on_disk = disk_bytes(&blobs);
    let kept = file_count(&blobs) as f64;
    let evictions = daemon.counter(evicted).await - evicted_before;
    assert!(evictions >= 1.0, "evictions counted: {evictions}");
    assert_eq!(
        kept + evictions,
        count as f64,
        "every picture is either kept or counted as evicted"
    );

    let media = status(daemon.admin).await["media"].clone();
    assert_eq!(media["mode"], "native");
    assert_eq!(media["cache"]["max_bytes"], cap);
    assert_eq!(media["cache"]["bytes"], on_disk, "{media}");
    assert_eq!(media["cache"]["blobs"].as_f64(), Some(kept), "{media}");
    assert_eq!(media["cache"]["evictions"].as_f64(), Some(evictions));
    assert_eq!(media["server"]["running"], false, "none is configured");
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dingtalk_picture_is_published_without_waiting_for_dingtalk_and_still_arrives() {
    let broker = Broker::embedded();
    let files = FileServer::start().await;
    let picture = png(25_000);
    files.serve("/dc-late.png", Route::ok(picture.clone()));
    let (wx, wx_url) = OneBot12Peer::serve(WX_BOT, Behaviour::comwechat(None)).await;
    let ding = DingTalkPeer::start(Vec::new()).await;
    ding.serve_downloads_from(&files.url(""));
    // DingTalk is slow to hand out download URLs.
    ding.delay_downloads(Duration::from_secs(2));
    let config = format!(
        r#"{broker}
{wechat_and_dingtalk}
[[links]]
name = "fans"
groups = ["wx:{WX_GROUP}", "ding:{DING_GROUP}"]

[media]
{LOCAL}
"#,
        broker = broker.toml(),
        wechat_and_dingtalk = wechat_and_dingtalk(&wx_url, &ding),
    );
    let daemon = Daemon::start(&config).await;
    wx.wait_connections(1).await;
    let gateway = ding.next_connection().await;
    let frame = gateway.callback(&picture_message(
        DING_GROUP,
        "msg-late-1",
        "张三",
        "dc-late",
    ));
    // No destination shows source URLs, so the message is published (and DingTalk
    // acknowledged) before any download URL is answered.
    let ack = &ding.wait_replies(&frame, 1).await[0];
    assert_eq!(ack["code"], 200, "{ack}");
    assert_eq!(ding.downloads_answered(), 0, "acknowledged without waiting");
    // The destination fetched it through the download code.
    let upload = wx.next_action("upload_file").await;
    assert_eq!(
        decoded(upload["params"]["data"].as_str().expect("data")),
        picture
    );
    let text = wx.next_action("send_message").await;
    assert_eq!(
        text["params"]["message"],
        json!([{"type": "text", "data": {"text": "[钉钉] 张三: "}}])
    );
    assert_eq!(
        ding.downloads().len(),
        1,
        "one download request, by the fetch"
    );
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_pictures_are_abandoned_at_the_cap_and_memory_stays_bounded() {
    let broker = Broker::embedded();
    let files = FileServer::start().await;
    // Announced as 30 MiB, and 30 MiB sent chunked without a length: three times the default
    // 10 MiB cap either way.
    files.serve("/warm.png", Route::ok(png(2_000)));
    files.serve(
        "/announced.png",
        Route::ok(png(1024))
            .announce_length(30 << 20)
            .padded_to(30 << 20),
    );
    files.serve(
        "/chunked.png",
        Route::ok(png(1024)).padded_to(30 << 20).chunked(),
    );
    let (qq, qq_url) = OneBot11Peer::serve(QQ_BOT, None, 0).await;
    let (wx, wx_url) = OneBot12Peer::serve(WX_BOT, Behaviour::comwechat(None)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut daemon =
        DaemonProcess::start(dir.path(), &qq_and_wechat(&broker, &qq_url, &wx_url)).await;
    qq.wait_connections(1).await;
    wx.wait_connections(1).await;
    // A small picture first, so what the process allocates once is in the baseline.
    qq.push_event(alice_with_picture(801, "W.png", &files.url("/warm.png")));
    wx.next_action("upload_file").await;
    wx.next_action("send_message").await;
    wx.next_action("send_message").await;
    let before = daemon.rss_bytes().expect("rss");
    for (n, path) in [(802, "/announced.png"), (803, "/chunked.png")] {
        qq.push_event(alice_with_picture(n, &format!("{n}.png"), &files.url(path)));
        let text = wx.next_action("send_message").await;
        assert_eq!(
            text["params"]["message"],
            json!([{"type": "text", "data": {"text": "[QQ] Alice: look[图片]"}}]),
            "{path}"
        );
    }
    let cap: u64 = 10 << 20;
    assert!(
        files.counts("/chunked.png").body_bytes <= cap + (64 << 10) + (4 << 20),
        "read stopped near the cap (what the socket buffers held aside): {}",
        files.counts("/chunked.png").body_bytes
    );
    let after = daemon.rss_bytes().expect("rss");
    assert!(
        after.saturating_sub(before) < 2 * cap,
        "RSS grew from {before} to {after} bytes"
    );
    assert_eq!(wx.calls("upload_file").len(), 1, "only the small picture");
    daemon.stop();
}
