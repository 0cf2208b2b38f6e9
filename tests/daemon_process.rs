//! The daemon as a separate process on a real mosquitto: the retained account status and the
//! last will when the process is killed, and an external broker that requires a password.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use qunbridge_tests::{free_port, post_message, qunbridge_binary, Mosquitto, RawMqtt, SseClient};
use serde_json::json;

/// A daemon process, killed if the test fails early.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `qunbridge run` on a config whose `[broker]` table is `broker`; returns the process
/// and the `api` address once `/readyz` says ready.
async fn start_daemon(dir: &tempfile::TempDir, broker: &str) -> (Process, SocketAddr) {
    let api = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let path = dir.path().join("qunbridge.toml");
    std::fs::write(
        &path,
        format!(
            "state_dir = {:?}\n{broker}\n[admin]\nlisten = \"{admin}\"\n\
             [accounts.hub]\nplatform = \"api\"\nlisten = \"{api}\"\n\
             [[links]]\ngroups = [\"hub:a\", \"hub:b\"]\n",
            dir.path().join("state")
        ),
    )
    .expect("write config");
    let child = Command::new(qunbridge_binary())
        .arg("run")
        .arg("-c")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("daemon starts");
    let process = Process(child);
    let deadline = tokio::time::Instant::now() + qunbridge_tests::PATIENCE;
    loop {
        let ready = reqwest::get(format!("http://{admin}/readyz")).await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "daemon not ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (process, api)
}

/// The `status` field of a status payload.
fn status_of(payload: &[u8]) -> String {
    let value: serde_json::Value = serde_json::from_slice(payload).expect("status is JSON");
    value["status"].as_str().expect("status field").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_is_retained_online_and_the_last_will_marks_a_killed_daemon_offline() {
    let mosquitto = Mosquitto::start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let broker = format!("[broker]\nurl = \"mqtt://127.0.0.1:{}\"\n", mosquitto.port);
    let (mut daemon, _api) = start_daemon(&dir, &broker).await;

    // A watcher that arrives later still sees the retained status.
    let mut watcher = RawMqtt::connect(mosquitto.port, "status-watcher").await;
    watcher.subscribe("qunbridge/v1/status/hub").await;
    watcher
        .next_matching(|_, payload| status_of(payload) == "online")
        .await;

    daemon.0.kill().expect("kill -9");
    let _ = daemon.0.wait();
    let (topic, payload) = watcher
        .next_matching(|_, payload| status_of(payload) == "offline")
        .await;
    assert_eq!(topic, "qunbridge/v1/status/hub");
    let value: serde_json::Value = serde_json::from_slice(&payload).expect("JSON");
    assert_eq!(value["account"], "hub");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_broker_with_a_password_from_a_file() {
    let mosquitto = Mosquitto::start_with_user(Some(("relay", "pa:ss@word"))).await;
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("mqtt-password"), "pa:ss@word\n").expect("write secret");
    let broker = format!(
        "[broker]\nurl = \"mqtt://relay@127.0.0.1:{}\"\npassword_file = \"mqtt-password\"\n",
        mosquitto.port
    );
    let (_daemon, api) = start_daemon(&dir, &broker).await;
    let mut b = SseClient::open(&format!("http://{api}/api/v1/groups/b/events"), None, None).await;
    let (status, _) = post_message(
        api,
        "a",
        json!({"sender": {"id": "u1", "name": "Ann"}, "text": "hi"}),
        None,
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(b.next().await.json()["text"], "[API] Ann: hi");
}
