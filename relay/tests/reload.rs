//! SIGHUP reload against the real `qunbridge run` process: new links and formats are in force
//! without a restart (the same process keeps serving), a broken file changes nothing and is
//! counted as a failed reload, an edited word-list file is in force for the next message
//! (and a broken edit keeps the old lists), and a new broker password is reported as needing
//! a restart.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
// The shared fixtures under the names this file's tests use: a free loopback port, and the
// daemon process killed if a test fails before stopping it.
use qunbridge_tests::free_port as port;
use qunbridge_tests::process::KillOnDrop as Running;

/// Writes the config with the given links.
fn write_config(path: &Path, state: &Path, ports: (u16, u16, u16), links: &str) {
    let (broker, admin, api) = ports;
    std::fs::write(
        path,
        format!(
            "state_dir = {state:?}\n[broker]\nembedded_listen = \"127.0.0.1:{broker}\"\n\
             [admin]\nlisten = \"127.0.0.1:{admin}\"\n\
             [accounts.hub]\nplatform = \"api\"\nlisten = \"127.0.0.1:{api}\"\n{links}"
        ),
    )
    .expect("write config");
}

/// The first SSE event's data on `group` after `send` ran.
async fn next_event(api: u16, group: &str) -> impl futures_util::Stream<Item = String> {
    let response = reqwest::get(format!(
        "http://127.0.0.1:{api}/api/v1/groups/{group}/events"
    ))
    .await
    .expect("stream opens");
    response
        .bytes_stream()
        .map(|chunk| String::from_utf8_lossy(&chunk.expect("chunk")).into_owned())
}

/// Waits for an SSE chunk containing `needle`.
async fn expect_text(
    stream: &mut (impl futures_util::Stream<Item = String> + Unpin),
    needle: &str,
) {
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !seen.contains(needle) {
        let chunk = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("{needle:?} never arrived; saw {seen:?}"))
            .expect("stream open");
        seen.push_str(&chunk);
    }
}

/// Posts a message to `group`.
async fn post(api: u16, group: &str, text: &str) {
    let status = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{api}/api/v1/groups/{group}/messages"
        ))
        .json(&serde_json::json!({"sender": {"id": "u1", "name": "Ann"}, "text": text}))
        .send()
        .await
        .expect("POST answered")
        .status();
    assert_eq!(status, 202);
}

/// Waits until the daemon's admin endpoint on `admin` says ready (15 s at most).
async fn wait_ready(admin: u16) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !reqwest::get(format!("http://127.0.0.1:{admin}/readyz"))
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(tokio::time::Instant::now() < deadline, "not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asks the daemon to reload its config, as `systemctl reload` does.
fn hangup(daemon: &Running) {
    daemon.signal("HUP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_swaps_links_and_formats_and_a_broken_file_changes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("qunbridge.toml");
    let state = dir.path().join("state");
    let ports = (port(), port(), port());
    let (_, admin, api) = ports;
    write_config(
        &path,
        &state,
        ports,
        "[[links]]\ngroups = [\"hub:a\", \"hub:b\"]\nformat = \"old {name}: \"\n",
    );
    let child = Command::new(env!("CARGO_BIN_EXE_qunbridge"))
        .args(["run", "--grace-secs", "1", "-c"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("daemon starts");
    let mut daemon = Running(child);
    wait_ready(admin).await;
    let mut b = Box::pin(next_event(api, "b").await);
    post(api, "a", "one").await;
    expect_text(&mut b, "old Ann: one").await;

    // New links and format: a now goes to c, with a new sender line.
    write_config(
        &path,
        &state,
        ports,
        "[[links]]\ngroups = [\"hub:a\", \"hub:c\"]\nformat = \"new {name}: \"\n",
    );
    hangup(&daemon);
    let mut c = Box::pin(next_event(api, "c").await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let metrics_url = format!("http://127.0.0.1:{admin}/metrics");
    loop {
        let metrics = reqwest::get(&metrics_url)
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        if metrics.contains("qunbridge_config_reloads_total{outcome=\"ok\"} 1") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "reload not counted:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    post(api, "a", "two").await;
    expect_text(&mut c, "new Ann: two").await;

    // A broken file: the running config stays, the failure is counted.
    std::fs::write(&path, "[[links]]\ngroups = [\"nobody:x\"]\n").expect("write broken config");
    hangup(&daemon);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = reqwest::get(&metrics_url)
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        if metrics.contains("qunbridge_config_reloads_total{outcome=\"failed\"} 1") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "failed reload not counted:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    post(api, "a", "three").await;
    expect_text(&mut c, "new Ann: three").await;
    assert!(
        daemon.0.try_wait().expect("wait").is_none(),
        "still the same process"
    );
}

/// Waits until `/metrics` on `admin` shows `series` at `value`.
async fn wait_for_series(admin: u16, series: &str, value: u32) {
    let wanted = format!("{series} {value}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let metrics = reqwest::get(format!("http://127.0.0.1:{admin}/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        if metrics.lines().any(|line| line == wanted) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no {wanted:?} in:\n{metrics}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_after_editing_a_word_list_file_applies_it_and_a_broken_edit_keeps_the_old() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("qunbridge.toml");
    let state = dir.path().join("state");
    let list = dir.path().join("lists/ads.txt");
    std::fs::create_dir(dir.path().join("lists")).expect("mkdir");
    std::fs::write(&list, "# ads\n兼职刷单\n").expect("write list");
    let ports = (port(), port(), port());
    let (_, admin, api) = ports;
    // The list file is named relative to the config file's directory.
    write_config(
        &path,
        &state,
        ports,
        "[[links]]\ngroups = [\"hub:a\", \"hub:b\"]\n\
         [moderation.lists.ads]\nfiles = [\"lists/ads.txt\"]\n\
         [filters.api]\nrules = [{ match = \"words\", list = \"ads\", action = \"mask\" }]\n",
    );
    let child = Command::new(env!("CARGO_BIN_EXE_qunbridge"))
        .args(["run", "--grace-secs", "1", "-c"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("daemon starts");
    let daemon = Running(child);
    wait_ready(admin).await;
    let mut b = Box::pin(next_event(api, "b").await);
    post(api, "a", "one 兼职刷单 日结").await;
    expect_text(&mut b, "Ann: one **** 日结").await;

    // The file gains a word: after SIGHUP the next message is judged with it.
    std::fs::write(&list, "# ads\n兼职刷单\n日结\n").expect("edit list");
    hangup(&daemon);
    wait_for_series(admin, "qunbridge_config_reloads_total{outcome=\"ok\"}", 1).await;
    post(api, "a", "two 兼职刷单 日结").await;
    expect_text(&mut b, "Ann: two **** **").await;

    // A broken edit (a bad regex): the reload fails and the lists in force stay.
    std::fs::write(&list, "# ads\nre:QQ(\n").expect("break list");
    hangup(&daemon);
    wait_for_series(
        admin,
        "qunbridge_config_reloads_total{outcome=\"failed\"}",
        1,
    )
    .await;
    post(api, "a", "three 兼职刷单 日结").await;
    expect_text(&mut b, "Ann: three **** **").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_starts_added_accounts_and_stops_removed_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("qunbridge.toml");
    let state = dir.path().join("state");
    let ports = (port(), port(), port());
    let (_, admin, api) = ports;
    let extra = port();
    write_config(
        &path,
        &state,
        ports,
        "[[links]]\ngroups = [\"hub:a\", \"hub:b\"]\n",
    );
    let child = Command::new(env!("CARGO_BIN_EXE_qunbridge"))
        .args(["run", "--grace-secs", "1", "-c"])
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("daemon starts");
    let daemon = Running(child);
    wait_ready(admin).await;

    // Add an account and link it.
    write_config(
        &path,
        &state,
        ports,
        &format!(
            "[accounts.side]\nplatform = \"api\"\nlisten = \"127.0.0.1:{extra}\"\n\
             [[links]]\ngroups = [\"hub:a\", \"hub:b\", \"side:x\"]\n"
        ),
    );
    hangup(&daemon);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", extra))
        .await
        .is_err()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "added account never listened"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let mut b = Box::pin(next_event(api, "b").await);
    post(extra, "x", "from the new account").await;
    expect_text(&mut b, "[API] Ann: from the new account").await;

    // Remove it again: its endpoint closes, the others keep working.
    write_config(
        &path,
        &state,
        ports,
        "[[links]]\ngroups = [\"hub:a\", \"hub:b\"]\n",
    );
    hangup(&daemon);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(("127.0.0.1", extra))
        .await
        .is_ok()
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "removed account still listens"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    post(api, "a", "still here").await;
    expect_text(&mut b, "[API] Ann: still here").await;
}

/// Collects a child's stderr lines as they come, for assertions on what it logged.
fn collect_lines(
    stream: impl std::io::Read + Send + 'static,
) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    use std::io::BufRead;
    let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stream).lines() {
            let Ok(line) = line else { return };
            sink.lock().expect("log lines").push(line);
        }
    });
    lines
}

/// How many collected lines contain `needle`.
fn count_lines(lines: &std::sync::Mutex<Vec<String>>, needle: &str) -> usize {
    lines
        .lock()
        .expect("log lines")
        .iter()
        .filter(|line| line.contains(needle))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_with_only_a_new_broker_password_warns_that_a_restart_is_needed() {
    const APPLIED: &str = "Config reloaded";
    const RESTART: &str = "take effect after a restart";
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = qunbridge_tests::Mosquitto::start_with_user(Some(("relay", "old-secret"))).await;
    let broker_port = broker.port;
    let path = dir.path().join("qunbridge.toml");
    let state = dir.path().join("state");
    let (admin, api) = (port(), port());
    let write = |password: &str| {
        std::fs::write(
            &path,
            format!(
                "state_dir = {state:?}\n[broker]\nurl = \"mqtt://127.0.0.1:{broker_port}\"\n\
                 username = \"relay\"\npassword = \"{password}\"\n\
                 [admin]\nlisten = \"127.0.0.1:{admin}\"\n\
                 [accounts.hub]\nplatform = \"api\"\nlisten = \"127.0.0.1:{api}\"\n\
                 [[links]]\ngroups = [\"hub:a\", \"hub:b\"]\n"
            ),
        )
        .expect("write config");
    };
    write("old-secret");
    let mut child = Command::new(env!("CARGO_BIN_EXE_qunbridge"))
        .args(["run", "--grace-secs", "1", "-c"])
        .arg(&path)
        .env("QUNBRIDGE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("daemon starts");
    let logs = collect_lines(child.stderr.take().expect("stderr piped"));
    let daemon = Running(child);
    wait_ready(admin).await;
    let wait_applied = |count: usize| {
        let logs = logs.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while count_lines(&logs, APPLIED) < count {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "reload {count} not applied; logged:\n{}",
                    logs.lock().expect("log lines").join("\n")
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };

    // The same file again: nothing needs a restart (the warning line is logged before the
    // reload's "applied" line, so once that is there the warning would be too).
    hangup(&daemon);
    wait_applied(1).await;
    assert_eq!(
        count_lines(&logs, RESTART),
        0,
        "an unchanged broker is no change"
    );

    // Only the password changes: the running connection keeps the old one until a restart.
    write("new-secret");
    hangup(&daemon);
    wait_applied(2).await;
    assert_eq!(
        count_lines(&logs, RESTART),
        1,
        "a new broker password must be reported as needing a restart; logged:\n{}",
        logs.lock().expect("log lines").join("\n")
    );
}
