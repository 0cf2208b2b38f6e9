//! End-to-end: WeCom (企业微信) group robots, send-only, with a scripted robot webhook over
//! real HTTP, the real broker and the real relay. Asserted: the exact bytes the robot
//! received (parts within WeCom's byte limits, in order, no character cut in half), that a
//! 45009 refusal delays a message without losing or repeating anything, and that other
//! refusals are dropped and counted without retries.

use std::net::SocketAddr;
use std::time::Duration;

use qunbridge_tests::wecom_peer::{Post, WecomPeer};
use qunbridge_tests::{free_port, post_message, Broker, Daemon};
use serde_json::json;

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
