//! End-to-end: WeCom (企业微信) group robots, send-only, with a scripted robot webhook over
//! real HTTP, the real broker and the real relay. Asserted: the exact bytes the robot
//! received (parts within WeCom's byte limits, in order, no character cut in half), that a
//! 45009 refusal delays a message without losing or repeating anything, and that other
//! refusals are dropped and counted without retries. Pictures (from an `api` message whose
//! picture a local file server serves): a PNG arrives as an `image` message after the text,
//! a large one as an uploaded file when the robot is told so, a sticker as `[动画表情]`, and
//! a 45009 on the picture pauses the robot like one on text.

use std::net::SocketAddr;
use std::time::Duration;

use qunbridge_tests::file_server::{png, FileServer, Route, GIF};
use qunbridge_tests::wecom_peer::{md5_hex, Post, WecomPeer};
use qunbridge_tests::{free_port, post_message, Broker, Daemon};
use serde_json::{json, Value};

/// The robot's webhook key (its only credential).
const KEY: &str = "693a91f6-7xxx-4f2c-9d1e-000000000001";

/// An `api` group `a` linked to the robot, whose account is named `account`.
fn config(broker: &Broker, api: SocketAddr, account: &str, webhook: &str, extra: &str) -> String {
    format!(
        r#"{broker}
[accounts.hub]
platform = "api"
listen = "{api}"

[accounts.{account}]
platform = "wecom"
webhook = "{webhook}"
{extra}

[[links]]
name = "ops"
groups = ["hub:a"]
to = ["{account}:ops"]
"#,
        broker = broker.toml()
    )
}

/// Starts a robot and the daemon; returns them and the `api` address.
async fn start(extra: &str) -> (std::sync::Arc<WecomPeer>, Daemon, SocketAddr) {
    let (robot, webhook) = WecomPeer::serve(KEY).await;
    let api = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = config(&Broker::embedded(), api, "robot", &webhook, extra);
    (robot, Daemon::start(&config).await, api)
}

/// [`start`] with the robot's account named `account` (for a series labelled with it) and the
/// daemon run alone in this test binary (for a series without an account label).
async fn start_alone(
    account: &str,
    extra: &str,
) -> (std::sync::Arc<WecomPeer>, Daemon, SocketAddr) {
    let (robot, webhook) = WecomPeer::serve(KEY).await;
    let api = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let config = config(&Broker::embedded(), api, account, &webhook, extra);
    (robot, Daemon::start_alone(&config).await, api)
}

/// The `[media]` table that lets the daemon fetch pictures from the local file server.
const MEDIA_FROM_LOCALHOST: &str = "\n[media]\nallow_hosts = [\"127.0.0.1\"]\n";

/// [`start_alone`] with pictures fetched from the local file server (`[media]` at the end of
/// the config).
async fn start_with_pictures(
    account: &str,
    extra: &str,
) -> (std::sync::Arc<WecomPeer>, Daemon, SocketAddr) {
    let (robot, webhook) = WecomPeer::serve(KEY).await;
    let api = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mut config = config(&Broker::embedded(), api, account, &webhook, extra);
    config.push_str(MEDIA_FROM_LOCALHOST);
    (robot, Daemon::start_alone(&config).await, api)
}

/// Posts from Ann into the `api` group: `text`, then the picture `picture` (a segment).
async fn post_picture(api: SocketAddr, text: &str, picture: Value) {
    let (status, body) = post_message(
        api,
        "a",
        json!({"sender": {"id": "u1", "name": "Ann"},
               "segments": [{"type": "text", "text": text}, picture]}),
        None,
    )
    .await;
    assert_eq!(status, 202, "{body}");
}

/// Posts a marker and waits until the robot accepted it; returns every request that came
/// before it. The robot's queue is ordered, so a retry or another part of an earlier message
/// would have come before the marker: this closes a "nothing more was posted" check.
async fn posts_before_marker(robot: &WecomPeer, api: SocketAddr) -> Vec<Post> {
    // Told apart from earlier markers by the number of requests so far.
    let marker = format!("marker {}", robot.posts().len());
    post_from_ann(api, &marker).await;
    let expected = format!("[API] Ann: {marker}");
    let deadline = tokio::time::Instant::now() + qunbridge_tests::PATIENCE;
    loop {
        let mut posts = robot.posts();
        if let Some(at) = posts
            .iter()
            .position(|p| p.errcode == 0 && p.content() == expected)
        {
            assert_eq!(
                at + 1,
                posts.len(),
                "nothing after the marker: {:?}",
                &posts[at..]
            );
            posts.truncate(at);
            return posts;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the marker was never accepted"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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

/// About 7 KB of Chinese: lines with breaks, then one long run without any, with 4-byte
/// emoji among 3-byte characters so that a byte cut would land inside a character.
fn long_chinese() -> String {
    let mut text = String::new();
    for i in 0..40 {
        text.push_str(&format!(
            "第{i}条：群桥把微信、QQ和钉钉的群连在一起，消息只出现一次。\n"
        ));
    }
    text.push_str(&"长句没有换行😀".repeat(180));
    text
}

/// A part's content without a relay-added `(i/n)` marker, if it has one.
fn without_marker(content: &str) -> (&str, bool) {
    if let Some(open) = content.rfind(" (") {
        let marker = &content[open + 2..];
        let is_marker = marker.ends_with(')')
            && marker[..marker.len() - 1]
                .split_once('/')
                .is_some_and(|(i, n)| i.parse::<u32>().is_ok() && n.parse::<u32>().is_ok());
        if is_marker {
            return (&content[..open], true);
        }
    }
    (content, false)
}

/// Asserts that the parts the robot accepted are the message, in order, each within
/// `limit` bytes of valid UTF-8 (checked on the raw request bytes).
fn assert_parts_make(parts: &[Post], expected: &str, limit: usize) {
    assert!(
        parts.len() >= 2,
        "a long message is split: {} part(s)",
        parts.len()
    );
    let mut contents = Vec::new();
    for post in parts {
        let body = std::str::from_utf8(&post.raw).expect("the request body is valid UTF-8");
        assert!(
            !body.contains('\u{fffd}'),
            "no replacement character: a cut character"
        );
        let content = post.content();
        assert!(
            content.len() <= limit,
            "part of {} bytes exceeds {limit}",
            content.len()
        );
        assert!(!content.contains('\u{fffd}'));
        contents.push(content);
    }
    let stripped: Vec<(&str, bool)> = contents.iter().map(|c| without_marker(c)).collect();
    let joined: String = stripped.iter().map(|(c, _)| *c).collect();
    if stripped.iter().all(|(_, marked)| *marked) {
        // Parts marked `(i/n)` by the relay may lose whitespace at the cuts.
        let squeeze = |s: &str| s.chars().filter(|c| !c.is_whitespace()).collect::<String>();
        assert_eq!(squeeze(&joined), squeeze(expected), "parts in order");
    } else {
        assert_eq!(
            joined, expected,
            "the parts joined give back the text, in order"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_chinese_message_arrives_in_parts_within_2048_bytes() {
    let (robot, daemon, api) = start("").await;
    let text = long_chinese();
    assert!(text.len() > 3 * 2048);
    post_from_ann(api, &text).await;
    let expected = format!("[API] Ann: {text}");
    let needed = expected.len().div_ceil(2048);
    robot.wait_accepted(needed).await;
    let posts = posts_before_marker(&robot, api).await;
    assert!(posts.iter().all(|p| p.errcode == 0), "every part accepted");
    assert!(posts.iter().all(|p| p.msgtype() == "text"));
    assert_parts_make(&posts, &expected, 2048);
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errcode_45009_delays_the_message_but_loses_and_repeats_nothing() {
    let (robot, daemon, api) = start_alone("robot-45009", "").await;
    // The first part goes through; the second is refused for frequency, with a short
    // `Retry-After` so the test need not wait out the default minute.
    robot.answer_next(0, "ok", None);
    robot.answer_next(45009, "api freq out of limit", Some(1));
    let text = long_chinese();
    post_from_ann(api, &text).await;
    let expected = format!("[API] Ann: {text}");
    let needed = expected.len().div_ceil(2048);
    robot.wait_accepted(needed).await;
    let posts = posts_before_marker(&robot, api).await;
    let refused: Vec<&Post> = posts.iter().filter(|p| p.errcode == 45009).collect();
    assert_eq!(refused.len(), 1);
    let accepted: Vec<Post> = posts.iter().filter(|p| p.errcode == 0).cloned().collect();
    assert_eq!(
        posts.len(),
        accepted.len() + 1,
        "exactly one extra request: the retry"
    );
    let retry = accepted
        .iter()
        .find(|p| p.content() == refused[0].content())
        .expect("the refused part was sent again");
    assert!(
        retry.at.duration_since(refused[0].at) >= Duration::from_millis(900),
        "the robot was paused before the retry"
    );
    assert_parts_make(&accepted, &expected, 2048);

    // A message after the pause goes straight through.
    post_from_ann(api, "部署完成").await;
    // (after the marker)
    let after = robot.wait_accepted(accepted.len() + 2).await;
    assert_eq!(
        after.last().map(Post::content).as_deref(),
        Some("[API] Ann: 部署完成")
    );
    let metrics = daemon.metrics().await;
    assert!(
        metrics.contains("qunbridge_rate_limited_total{account=\"robot-45009\"}"),
        "{metrics}"
    );
    assert!(!metrics.contains(KEY), "the key never reaches metrics");
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn markdown_robots_and_refusals() {
    let (robot, daemon, api) = start_alone("robot", "markdown = true").await;
    let failed = "qunbridge_messages_dropped_total{reason=\"send_failed\"}";
    let failed_before = daemon.counter(failed).await;
    post_from_ann(api, "**上线** 完成").await;
    let posts = robot.wait_accepted(1).await;
    assert_eq!(
        posts[0].json(),
        json!({"msgtype": "markdown", "markdown": {"content": "[API] Ann: **上线** 完成"}})
    );

    // A long markdown message: parts within 4096 bytes.
    let text = long_chinese();
    post_from_ann(api, &text).await;
    let expected = format!("[API] Ann: {text}");
    robot.wait_accepted(1 + expected.len().div_ceil(4096)).await;
    let posts = posts_before_marker(&robot, api).await;
    assert_parts_make(&posts[1..], &expected, 4096);

    // Any other errcode is a refusal for good: dropped and counted, never retried.
    let before = robot.posts().len();
    robot.answer_next(93000, "invalid webhook url", None);
    post_from_ann(api, "不会重试").await;
    robot.wait_posts(before + 1).await;
    let posts = posts_before_marker(&robot, api).await;
    assert_eq!(posts.len(), before + 1, "not retried");
    assert_eq!(posts[before].errcode, 93000);
    let metrics = daemon.metrics().await;
    assert_eq!(
        qunbridge_tests::metrics::counter(&metrics, failed) - failed_before,
        1.0,
        "the refusal is counted once"
    );
    let status = reqwest::get(format!("http://{}/api/v1/status", daemon.admin))
        .await
        .expect("status")
        .text()
        .await
        .expect("text");
    assert!(
        !status.contains(KEY) && !metrics.contains(KEY),
        "the key is never shown"
    );
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_png_arrives_as_an_image_after_its_text_and_a_sticker_as_its_placeholder() {
    let files = FileServer::start().await;
    let picture = png(300_000);
    files.serve(
        "/cat.png",
        Route::ok(picture.clone()).content_type("image/png"),
    );
    files.serve(
        "/smile.gif",
        Route::ok(GIF.to_vec()).content_type("image/gif"),
    );
    let (robot, daemon, api) = start_with_pictures("robot-pictures", "").await;

    post_picture(
        api,
        "看这只猫 ",
        json!({"type": "image", "url": files.url("/cat.png")}),
    )
    .await;
    let posts = robot.wait_accepted(2).await;
    assert_eq!(posts[0].msgtype(), "text", "the text comes first");
    let text = posts[0].content();
    assert!(text.starts_with("[API] Ann: 看这只猫"), "{text}");
    assert!(
        !text.contains("http") && !text.contains("[图片]"),
        "the picture is not in the text: {text}"
    );
    assert_eq!(posts[1].msgtype(), "image", "then the picture");
    assert_eq!(
        posts[1].image_bytes().as_deref(),
        Some(&picture[..]),
        "the base64 is the served file"
    );
    assert_eq!(posts[1].json()["image"]["md5"], md5_hex(&picture));

    // A sticker: WeCom has none, so members read `[动画表情]`, and no picture is sent.
    post_picture(
        api,
        "哈哈",
        json!({"type": "image", "url": files.url("/smile.gif"), "sticker": true}),
    )
    .await;
    let posts = posts_before_marker(&robot, api).await;
    let after: Vec<&Post> = posts[2..].iter().collect();
    assert_eq!(after.len(), 1, "one text, no picture: {after:?}");
    assert_eq!(after[0].msgtype(), "text");
    assert_eq!(after[0].content(), "[API] Ann: 哈哈[动画表情]");
    assert!(robot.uploads().is_empty());
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errcode_45009_on_a_picture_pauses_the_robot_and_the_text_is_not_repeated() {
    let files = FileServer::start().await;
    let picture = png(50_000);
    files.serve("/dog.png", Route::ok(picture.clone()));
    let (robot, daemon, api) = start_with_pictures("robot-pic-45009", "").await;
    // The text goes through; the picture is refused for frequency, with a short
    // `Retry-After` so the test need not wait out the default minute.
    robot.answer_next(0, "ok", None);
    robot.answer_next(45009, "api freq out of limit", Some(1));
    post_picture(
        api,
        "狗",
        json!({"type": "image", "url": files.url("/dog.png")}),
    )
    .await;
    robot.wait_accepted(2).await;
    let posts = posts_before_marker(&robot, api).await;
    let kinds: Vec<(String, i64)> = posts.iter().map(|p| (p.msgtype(), p.errcode)).collect();
    assert_eq!(
        kinds,
        vec![
            ("text".to_owned(), 0),
            ("image".to_owned(), 45009),
            ("image".to_owned(), 0)
        ],
        "the text once, the picture refused, then the picture again"
    );
    assert_eq!(posts[0].content(), "[API] Ann: 狗");
    assert_eq!(posts[2].image_bytes().as_deref(), Some(&picture[..]));
    assert!(
        posts[2].at.duration_since(posts[1].at) >= Duration::from_millis(900),
        "the robot was paused before the retry"
    );
    let metrics = daemon.metrics().await;
    assert!(
        metrics.contains("qunbridge_rate_limited_total{account=\"robot-pic-45009\"}"),
        "{metrics}"
    );
    assert!(!metrics.contains(KEY), "the key never reaches metrics");
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_picture_over_2_mb_goes_as_a_file_when_the_robot_is_told_so() {
    let files = FileServer::start().await;
    let large = png(2 * 1024 * 1024 + 100);
    files.serve("/big.png", Route::ok(large.clone()));
    let (robot, daemon, api) = start_with_pictures("robot-files", "large_images = \"file\"").await;
    post_picture(
        api,
        "大图",
        json!({"type": "image", "url": files.url("/big.png")}),
    )
    .await;
    let posts = robot.wait_accepted(2).await;
    assert_eq!(posts[0].content(), "[API] Ann: 大图");
    assert_eq!(posts[1].msgtype(), "file");
    let uploads = robot.uploads();
    assert_eq!(uploads.len(), 1);
    assert_eq!(uploads[0].kind, "file");
    assert_eq!(uploads[0].bytes, large, "the upload is the served file");
    assert_eq!(
        posts[1].file_media_id().as_deref(),
        Some(uploads[0].media_id.as_str())
    );

    // The same picture again: the media id is reused, nothing is uploaded twice.
    post_picture(
        api,
        "再来",
        json!({"type": "image", "url": files.url("/big.png")}),
    )
    .await;
    let posts = robot.wait_accepted(4).await;
    assert_eq!(posts[3].file_media_id(), posts[1].file_media_id());
    assert_eq!(robot.uploads().len(), 1);
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_is_uploaded_while_its_message_waits_for_the_pacing_token() {
    let files = FileServer::start().await;
    let large = png(2 * 1024 * 1024 + 200);
    files.serve("/ahead.png", Route::ok(large.clone()));
    let (robot, daemon, api) = start_with_pictures(
        "robot-ahead",
        "large_images = \"file\"\n\n[limits.robot-ahead]\nper_group = \"1/3s\"\nburst = 1",
    )
    .await;
    // A text takes the group's token; the next one comes three seconds later.
    post_from_ann(api, "先说").await;
    robot.wait_accepted(1).await;
    post_picture(
        api,
        "大图",
        json!({"type": "image", "url": files.url("/ahead.png")}),
    )
    .await;
    // The file is uploaded while its message waits: the upload posted nothing to the group.
    let deadline = tokio::time::Instant::now() + qunbridge_tests::PATIENCE;
    let posted_at_upload = loop {
        let posted = robot.accepted().len();
        if !robot.uploads().is_empty() {
            break posted;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the file was not uploaded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(posted_at_upload, 1, "only the first text before the token");
    // Then the text, and the file with the media id of that upload, uploaded once.
    let posts = robot.wait_accepted(3).await;
    assert_eq!(posts[1].content(), "[API] Ann: 大图");
    assert_eq!(posts[2].msgtype(), "file");
    let uploads = robot.uploads();
    assert_eq!(uploads.len(), 1, "uploaded once");
    assert_eq!(uploads[0].bytes, large);
    assert_eq!(
        posts[2].file_media_id().as_deref(),
        Some(uploads[0].media_id.as_str())
    );
    daemon.stop().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_picture_over_2_mb_is_its_placeholder_by_default() {
    let files = FileServer::start().await;
    files.serve("/big.png", Route::ok(png(2 * 1024 * 1024 + 100)));
    let (robot, daemon, api) = start_with_pictures("robot-large", "").await;
    post_picture(
        api,
        "大图",
        json!({"type": "image", "url": files.url("/big.png")}),
    )
    .await;
    robot.wait_accepted(1).await;
    let posts = posts_before_marker(&robot, api).await;
    assert_eq!(posts.len(), 1, "{posts:?}");
    assert_eq!(posts[0].content(), "[API] Ann: 大图[图片]");
    assert!(robot.uploads().is_empty());
    daemon.stop().await.expect("clean stop");
}
