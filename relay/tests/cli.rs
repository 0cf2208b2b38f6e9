//! The `qunbridge` binary as an operator uses it: `check` on good and bad configs, `run` on
//! the README's quickstart config with a relay seen through the `api` endpoint, and a clean
//! exit on SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use qunbridge_tests::free_port;
use qunbridge_tests::process::KillOnDrop;

/// The binary under test.
fn qunbridge() -> Command {
    Command::new(env!("CARGO_BIN_EXE_qunbridge"))
}

/// The repository root.
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

#[test]
fn check_reports_every_mistake_with_key_and_value_and_exits_64() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
[broker]
embedded_listen = "127.0.0.1:99999"

[accounts.hub]
platform = "api"
listen = "127.0.0.1:8088"

[[links]]
name = "broken"
groups = ["hub:a", "nobody:b", "hub-c"]
"#,
    )
    .expect("write config");
    let output = qunbridge()
        .arg("check")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    for expected in [
        "`embedded_listen` = \"127.0.0.1:99999\"",
        "link \"broken\": `groups` has \"nobody:b\": unknown account `nobody`",
        "link \"broken\": `groups` has \"hub-c\": not of the form `account:group`",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    assert!(stderr.contains("3 configuration error(s)"), "{stderr}");
}

#[test]
fn check_prints_the_resolved_links_of_the_quickstart() {
    let output = qunbridge()
        .arg("check")
        .arg("-c")
        .arg(repo().join("deploy/examples/quickstart.toml"))
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("hub:a -> hub:b [demo]"), "{stdout}");
    assert!(stdout.contains("hub:b -> hub:a [demo]"), "{stdout}");
}

#[test]
fn secrets_never_appear_in_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("secret.toml");
    std::fs::write(
        &path,
        r#"
[broker]
url = "ftp://user:hunter2@example.org"

[accounts.hub]
platform = "api"
listen = "nowhere"
token = "tok-hunter3"
"#,
    )
    .expect("write config");
    let output = qunbridge()
        .arg("check")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("scheme `ftp`"), "{stderr}");
    assert!(stderr.contains("`listen` = \"nowhere\""), "{stderr}");
    assert!(
        !stderr.contains("hunter2") && !stderr.contains("hunter3"),
        "{stderr}"
    );
}

#[test]
fn version_is_printed() {
    let output = qunbridge().arg("--version").output().expect("runs");
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        format!("qunbridge {}", env!("CARGO_PKG_VERSION"))
    );
}

/// The quickstart of the README, as written: the daemon on the embedded broker with
/// `deploy/examples/quickstart.toml`, a POST to group `a`, the event on group `b`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_relays_and_stops_cleanly_on_sigterm() {
    let workdir = tempfile::tempdir().expect("tempdir");
    let child = qunbridge()
        .arg("run")
        .arg("-c")
        .arg(repo().join("deploy/examples/quickstart.toml"))
        .current_dir(workdir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("daemon starts");
    let mut daemon = KillOnDrop(child);

    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let ready = client.get("http://127.0.0.1:9464/readyz").send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "quickstart daemon not ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        workdir.path().join("qunbridge-state").is_dir(),
        "state_dir created"
    );

    let open = |group: &str| {
        client
            .get(format!(
                "http://127.0.0.1:8088/api/v1/groups/{group}/events"
            ))
            .send()
    };
    let mut on_a = open("a").await.expect("stream a").bytes_stream();
    let mut on_b = open("b").await.expect("stream b").bytes_stream();
    let posted = client
        .post("http://127.0.0.1:8088/api/v1/groups/a/messages")
        .json(&serde_json::json!({"sender": {"id": "u1", "name": "Ann"}, "text": "hi"}))
        .send()
        .await
        .expect("POST answered");
    assert_eq!(posted.status(), 202);

    let mut seen = String::new();
    let until = tokio::time::Instant::now() + Duration::from_secs(1);
    while !seen.contains("\n\n") {
        let chunk = tokio::time::timeout_at(until, on_b.next())
            .await
            .expect("event on b within a second")
            .expect("stream open")
            .expect("chunk");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(seen.contains(r#""text":"[API] Ann: hi""#), "{seen}");
    // Nothing on a but a marker posted to b afterwards: "hi" would have come before it.
    let posted = client
        .post("http://127.0.0.1:8088/api/v1/groups/b/messages")
        .json(&serde_json::json!({"sender": {"id": "u2", "name": "Bob"}, "text": "marker"}))
        .send()
        .await
        .expect("POST answered");
    assert_eq!(posted.status(), 202);
    let mut on_a_seen = String::new();
    while !on_a_seen.contains("\n\n") {
        let chunk = tokio::time::timeout_at(
            tokio::time::Instant::now() + qunbridge_tests::PATIENCE,
            on_a.next(),
        )
        .await
        .expect("the marker reaches a")
        .expect("stream open")
        .expect("chunk");
        on_a_seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(
        on_a_seen.contains(r#""text":"[API] Bob: marker""#) && !on_a_seen.contains("Ann: hi"),
        "only the marker on a: {on_a_seen}"
    );

    daemon.signal("TERM");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = daemon.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "daemon did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(status.code(), Some(0), "clean exit on SIGTERM");
}

#[test]
fn a_taken_port_is_a_clear_failure() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("addr").port();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("taken.toml");
    let free = free_port();
    std::fs::write(
        &path,
        format!(
            "state_dir = {:?}\n[broker]\nembedded_listen = \"127.0.0.1:{port}\"\n[admin]\nlisten = \"127.0.0.1:{free}\"\n",
            dir.path().join("state")
        ),
    )
    .expect("write config");
    let output = qunbridge()
        .arg("run")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "embedded broker cannot listen on 127.0.0.1:{port}"
        )),
        "{stderr}"
    );
}

#[test]
fn check_prints_the_effective_rules_and_limits_of_every_destination() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rules.toml");
    std::fs::write(
        &path,
        r#"
[accounts.qq-main]
platform = "qq"
url = "ws://127.0.0.1:3001"

[accounts.wx]
platform = "wechat"
protocol = "onebot11"
url = "ws://127.0.0.1:3002"

[limits."qq-main"]
per_group = "1/3s"
burst = 2

[filters.wechat]
allow_domains = ["example.org"]

[[links]]
name = "fans"
groups = ["qq-main:111", "wx:5@chatroom"]
filters = { rules = [{ match = "wechat_share_code", action = "replace", with = "[口令]" }] }
"#,
    )
    .expect("write config");
    let output = qunbridge()
        .arg("check")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for expected in [
        "qq-main:111 (qq) via link \"fans\"",
        "pacing: per group 1/3s burst 2, per account 20/min burst 5, at most 4500 characters a message, 5 parts",
        "1. wechat_share_code -> replace with \"[口令]\" (link \"fans\")",
        "2. url -> defang (default for qq)",
        "wx:5@chatroom (wechat) via link \"fans\"",
        "2. domain [\"example.org\"] -> allow (platform wechat)",
        "3. qq_group_invite -> replace with \"[群邀请]\" (default for wechat)",
    ] {
        assert!(stdout.contains(expected), "missing {expected:?} in:\n{stdout}");
    }
}

#[test]
fn check_prints_each_destinations_word_rules_with_their_list_sizes() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("lists")).expect("mkdir");
    std::fs::write(
        dir.path().join("lists/scams.txt"),
        "# an example\n刷单\n日结\nre:加\\s*v\\d+\n",
    )
    .expect("write list");
    let path = dir.path().join("words.toml");
    std::fs::write(
        &path,
        r#"
[accounts.qq-main]
platform = "qq"
url = "ws://127.0.0.1:3001"

[accounts.wx]
platform = "wechat"
url = "ws://127.0.0.1:3002"

[moderation.lists.ads]
words = ["兼职"]
files = ["lists/scams.txt"]

[moderation.lists.contact]
words = ["加V"]

[filters.wechat]
rules = [
  { match = "words", list = "contact", action = "drop" },
  { match = "words", list = "ads", action = "drop" },
]

[filters.qq]
rules = [{ match = "words", list = "ads", action = "mask" }]

[[links]]
name = "fans"
groups = ["qq-main:111", "wx:5@chatroom"]
"#,
    )
    .expect("write config");
    let output = qunbridge()
        .arg("check")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let wechat = stdout
        .split("wx:5@chatroom (wechat)")
        .nth(1)
        .expect("the WeChat destination is printed");
    let qq = stdout
        .split("qq-main:111 (qq)")
        .nth(1)
        .expect("the QQ destination is printed");
    for (printed, expected) in [
        (
            &*stdout,
            "word lists:\n  ads: 4 entries\n  contact: 1 entry\n",
        ),
        (
            wechat,
            "word rules: contact (1 entry) -> drop, ads (4 entries) -> drop",
        ),
        (
            wechat,
            "1. words \"contact\" (1 entry) -> drop (platform wechat)",
        ),
        (qq, "word rules: ads (4 entries) -> mask"),
        (qq, "1. words \"ads\" (4 entries) -> mask (platform qq)"),
    ] {
        assert!(
            printed.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
}

/// Runs the daemon with secrets in its config and debug logging, uses them, and checks that
/// no secret appears in what it logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_logs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (broker, admin, api, onebot) = (free_port(), free_port(), free_port(), free_port());
    let path = dir.path().join("secret.toml");
    std::fs::write(dir.path().join("qq-token"), "qq-SECRET-token\n").expect("write");
    std::fs::write(
        &path,
        format!(
            r#"state_dir = {state:?}
[broker]
embedded_listen = "127.0.0.1:{broker}"
[admin]
listen = "127.0.0.1:{admin}"
[accounts.hub]
platform = "api"
listen = "127.0.0.1:{api}"
token = "api-SECRET-token"
[accounts.qq]
platform = "qq"
url = "ws://127.0.0.1:{onebot}/?access_token=url-SECRET-token"
access_token_file = "qq-token"
[accounts.hook]
platform = "dingtalk"
webhook = "http://127.0.0.1:{onebot}/robot/send?access_token=hook-SECRET-token"
secret = "SEChook-SECRET-sign"
[[links]]
groups = ["hub:a", "qq:1"]
to = ["hook:ops"]
"#,
            state = dir.path().join("state")
        ),
    )
    .expect("write config");
    let child = qunbridge()
        .arg("run")
        .arg("-c")
        .arg(&path)
        .args(["--grace-secs", "1"])
        .env("QUNBRIDGE_LOG", "debug")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("daemon starts");
    let mut daemon = KillOnDrop(child);
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !client
        .get(format!("http://127.0.0.1:{admin}/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(tokio::time::Instant::now() < deadline, "not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let post = |token: &'static str| {
        client
            .post(format!("http://127.0.0.1:{api}/api/v1/groups/a/messages"))
            .bearer_auth(token)
            .json(&serde_json::json!({"sender": {"id": "u1"}, "text": "hi"}))
            .send()
    };
    assert_eq!(post("wrong-guess").await.expect("answer").status(), 401);
    assert_eq!(
        post("api-SECRET-token").await.expect("answer").status(),
        202
    );
    // Let the connectors try (and fail) to reach the OneBot and webhook peers a few times.
    tokio::time::sleep(Duration::from_secs(2)).await;
    daemon.signal("TERM");
    let mut stderr = String::new();
    use std::io::Read;
    daemon
        .0
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .expect("read logs");
    assert!(stderr.contains("Starting qunbridge"), "logs were captured");
    assert!(
        !stderr.contains("SECRET"),
        "a secret reached the logs:\n{stderr}"
    );
}

#[test]
fn a_corrupt_state_store_is_reported_and_reset_state_moves_it_aside() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).expect("state dir");
    let store = state.join("state.redb");
    std::fs::write(&store, b"not a redb file, a half-written one".repeat(200)).expect("garbage");
    let path = dir.path().join("qunbridge.toml");
    std::fs::write(
        &path,
        format!(
            "state_dir = {state:?}\n[broker]\nembedded_listen = \"127.0.0.1:{}\"\n[admin]\nlisten = \"127.0.0.1:{}\"\n",
            free_port(),
            free_port()
        ),
    )
    .expect("write config");
    let output = qunbridge()
        .arg("run")
        .arg("-c")
        .arg(&path)
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "the state store `{}` cannot be opened",
            store.display()
        )) && stderr.contains("qunbridge run --reset-state"),
        "{stderr}"
    );

    // --reset-state keeps the old file next to the new store and starts.
    let daemon = qunbridge()
        .arg("run")
        .arg("-c")
        .arg(&path)
        .arg("--reset-state")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    let daemon = KillOnDrop(daemon);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let kept = loop {
        let kept: Vec<_> = std::fs::read_dir(&state)
            .expect("state dir")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with(".bak"))
            .collect();
        if !kept.is_empty() && store.exists() {
            break kept;
        }
        assert!(std::time::Instant::now() < deadline, "store not reset");
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    drop(daemon);
    assert_eq!(kept.len(), 1);
    assert!(
        std::fs::read(&kept[0])
            .expect("kept")
            .starts_with(b"not a redb file"),
        "the old store is kept, not deleted"
    );
}
