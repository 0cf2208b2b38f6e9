//! Shared harness of the end-to-end tests: free ports, a real mosquitto started as a
//! subprocess, the daemon itself (the library's `run`, exactly as `qunbridge run` calls it),
//! and clients that read what users read (Server-Sent Events, WebSocket frames, raw MQTT).

#![deny(missing_docs)]

pub mod dingtalk_peer;

pub mod file_server;

pub mod metrics;

pub mod onebot11_peer;

pub mod onebot12_peer;

pub mod wecom_peer;

pub mod process;

pub mod stream;

pub mod webdriver;

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures_util::StreamExt;
use qunbridge::config::{Config, ProcessEnv};
use qunbridge::{run, RunError, RunOptions};
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How long a test waits for something that should take milliseconds.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Logs of the daemons under test, when `QUNBRIDGE_TEST_LOG` holds a filter such as `debug`.
pub fn init_test_logging() {
    if let Ok(filter) = std::env::var("QUNBRIDGE_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// The `qunbridge` binary built for these tests (`cargo test --workspace` builds it for the
/// relay crate's own tests), next to the test executable's `deps/` folder.
pub fn qunbridge_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target directory");
    let binary = dir.join("qunbridge");
    if !binary.exists() {
        let status =
            std::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
                .args(["build", "-p", "qunbridge", "--bin", "qunbridge"])
                .status()
                .expect("cargo runs");
        assert!(status.success(), "building the qunbridge binary failed");
    }
    binary
}

/// A port nobody listens on right now, and that no other test of this process was handed:
/// two daemons (or a daemon's admin and api listeners) given the same port fail to start.
/// It is taken below Linux's ephemeral range (32768 and up by default), where the kernel
/// picks the local ports of outgoing connections: a port it offered as free could otherwise
/// be taken by one of them (a daemon's hundred platform connections, say) before the daemon
/// binds it. The search starts at a place drawn from the process id and the clock, so that
/// test processes running side by side rarely probe the same ports.
pub fn free_port() -> u16 {
    /// The ports handed out: the range below the ephemeral one, above the well-known ones.
    const FIRST: u16 = 20_000;
    const COUNT: u16 = 12_000;
    static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let clock = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let start = (std::process::id() ^ clock) % u32::from(COUNT);
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    for step in 0..u32::from(COUNT) {
        let port = FIRST + ((start + step * 7919) % u32::from(COUNT)) as u16;
        if !handed_out.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return port;
        }
    }
    // Every port of the range is taken: fall back to one the kernel offers.
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("an ephemeral port");
        if handed_out.insert(port) {
            return port;
        }
    }
}

/// Waits until something accepts TCP connections on `addr`.
pub async fn wait_for_port(addr: SocketAddr) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tokio::net::TcpStream::connect(addr).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing listens on {addr}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A mosquitto broker run by the test on a free port; killed when dropped.
pub struct Mosquitto {
    /// The broker process.
    child: Child,
    /// Its port.
    pub port: u16,
    /// Its config file.
    conf: PathBuf,
    /// Its config and persistence directory.
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    /// Starts mosquitto with the settings qunbridge requires (ARCHITECTURE.md §4).
    pub async fn start() -> Mosquitto {
        Mosquitto::start_with_user(None).await
    }

    /// Starts mosquitto; with `Some((user, password))` only that user may connect.
    pub async fn start_with_user(user: Option<(&str, &str)>) -> Mosquitto {
        Mosquitto::start_configured(user, false).await
    }

    /// Starts mosquitto with persistence on: sessions and queued QoS 1 messages are saved when
    /// it stops and loaded when [`Mosquitto::restart`] starts it again.
    pub async fn start_persistent() -> Mosquitto {
        Mosquitto::start_configured(None, true).await
    }

    /// Stops the broker as an operator would (SIGTERM, it saves its state) and starts it
    /// again on the same port with the same config.
    pub async fn restart(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
        }
        let _ = self.child.wait().await;
        self.child = spawn_mosquitto(&self.conf);
        wait_for_port(SocketAddr::from(([127, 0, 0, 1], self.port))).await;
    }

    /// The body of the constructors.
    async fn start_configured(user: Option<(&str, &str)>, persistent: bool) -> Mosquitto {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let conf = dir.path().join("mosquitto.conf");
        let auth = match user {
            None => "allow_anonymous true\n".to_owned(),
            Some((name, password)) => {
                let file = dir.path().join("passwd");
                let made = std::process::Command::new("mosquitto_passwd")
                    .arg("-b")
                    .arg("-c")
                    .arg(&file)
                    .args([name, password])
                    .status()
                    .expect("mosquitto_passwd runs");
                assert!(made.success(), "mosquitto_passwd failed");
                format!("allow_anonymous false\npassword_file {}\n", file.display())
            }
        };
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\n{auth}set_tcp_nodelay true\n\
                 max_queued_messages 0\nmax_inflight_messages 10000\n{persistence}log_dest stderr\nlog_type error\n",
                persistence = if persistent {
                    format!(
                        // As root mosquitto would switch to its own user, who cannot
                        // write in the test's directory; as anyone else this is ignored.
                        "persistence true\npersistence_location {}/\nuser root\n",
                        dir.path().display()
                    )
                } else {
                    "persistence false\n".to_owned()
                }
            ),
        )
        .expect("write mosquitto.conf");
        let child = spawn_mosquitto(&conf);
        wait_for_port(SocketAddr::from(([127, 0, 0, 1], port))).await;
        Mosquitto {
            child,
            port,
            conf,
            _dir: dir,
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// A redis-server run by the test on a free port, keeping nothing on disk; killed when
/// dropped.
pub struct Redis {
    /// The server process.
    child: Child,
    /// Its port.
    pub port: u16,
}

impl Redis {
    /// Starts redis-server and waits until it accepts connections.
    pub async fn start() -> Redis {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start redis-server ({e}); install redis-server (.ci/run does)")
            });
        wait_for_port(SocketAddr::from(([127, 0, 0, 1], port))).await;
        Redis { child, port }
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Starts mosquitto on a config file.
fn spawn_mosquitto(conf: &Path) -> Child {
    let binary = mosquitto_binary();
    Command::new(&binary)
        .arg("-c")
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot start {binary:?} ({e}); install mosquitto (.ci/run does)")
        })
}

/// mosquitto from PATH or where Debian puts it.
fn mosquitto_binary() -> PathBuf {
    for candidate in ["/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"] {
        if Path::new(candidate).exists() {
            return PathBuf::from(candidate);
        }
    }
    PathBuf::from("mosquitto")
}

/// Which broker a scenario runs on.
pub enum Broker {
    /// The daemon's embedded rumqttd on this port.
    Embedded(u16),
    /// A mosquitto started by the test.
    Mosquitto(Box<Mosquitto>),
}

impl Broker {
    /// The embedded broker on a free port.
    pub fn embedded() -> Broker {
        Broker::Embedded(free_port())
    }

    /// A fresh mosquitto.
    pub async fn mosquitto() -> Broker {
        Broker::Mosquitto(Box::new(Mosquitto::start().await))
    }

    /// The `[broker]` table for this broker.
    pub fn toml(&self) -> String {
        match self {
            Broker::Embedded(port) => {
                format!("[broker]\nembedded_listen = \"127.0.0.1:{port}\"\n")
            }
            Broker::Mosquitto(m) => format!("[broker]\nurl = \"mqtt://127.0.0.1:{}\"\n", m.port),
        }
    }

    /// Port raw MQTT clients connect to.
    pub fn port(&self) -> u16 {
        match self {
            Broker::Embedded(port) => *port,
            Broker::Mosquitto(m) => m.port,
        }
    }
}

/// The daemon, running in this process through the library's `run`.
pub struct Daemon {
    /// Resolves `run`'s shutdown future.
    stop: Option<oneshot::Sender<()>>,
    /// The running daemon.
    task: Option<JoinHandle<Result<(), RunError>>>,
    /// Admin endpoint address.
    pub admin: SocketAddr,
    /// Its state directory and config file (taken by [`Daemon::restart`]).
    dir: Option<tempfile::TempDir>,
    /// Asks the daemon to read its config file again (as SIGHUP does).
    reload: tokio::sync::mpsc::Sender<()>,
    /// Whether other in-process daemons may run meanwhile: decides whether a change of a
    /// process-wide metric series is this daemon's own (see [`metrics`]).
    turn: Option<metrics::Turn>,
}

impl Daemon {
    /// Writes `config` (with `state_dir` and `[admin]` filled in) and runs the daemon until
    /// `/readyz` says ready, alongside the other daemons of this test binary.
    pub async fn start(config: &str) -> Daemon {
        let turn = metrics::Turn::shared().await;
        Daemon::start_in(tempfile::tempdir().expect("tempdir"), config, turn).await
    }

    /// [`Daemon::start`], but first waits until no other daemon of this test binary runs and
    /// keeps it so while this one lives: a metric series without an account label then only
    /// changes because of this test.
    pub async fn start_alone(config: &str) -> Daemon {
        let turn = metrics::Turn::alone().await;
        Daemon::start_in(tempfile::tempdir().expect("tempdir"), config, turn).await
    }

    /// Stops the daemon as SIGTERM would and starts a new one on the same state directory
    /// (a restart: what the store kept is all the new one knows).
    pub async fn restart(mut self, config: &str) -> Daemon {
        let dir = self.dir.take().expect("state directory");
        let turn = self.turn.take().expect("a daemon's turn");
        self.shut_down().await.expect("clean stop");
        Daemon::start_in(dir, config, turn).await
    }

    /// [`Daemon::start`] in an existing directory, in a turn already taken.
    async fn start_in(dir: tempfile::TempDir, config: &str, turn: metrics::Turn) -> Daemon {
        init_test_logging();
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let text = format!(
            "state_dir = {:?}\n{config}\n[admin]\nlisten = \"{admin}\"\n",
            dir.path().join("state")
        );
        let path = dir.path().join("qunbridge.toml");
        std::fs::write(&path, text).expect("write config");
        let config = Config::from_file(&path, &ProcessEnv).unwrap_or_else(|e| panic!("{e}"));
        let (stop, stopped) = oneshot::channel::<()>();
        let (reload, requests) = tokio::sync::mpsc::channel(1);
        let task = tokio::spawn(run(
            config,
            async {
                let _ = stopped.await;
            },
            RunOptions {
                grace: Duration::from_secs(5),
                reload: Some(qunbridge::Reload {
                    path: path.clone(),
                    requests,
                }),
                ..Default::default()
            },
        ));
        let daemon = Daemon {
            stop: Some(stop),
            task: Some(task),
            admin,
            dir: Some(dir),
            reload,
            turn: Some(turn),
        };
        daemon.wait_ready().await;
        daemon
    }

    /// Rewrites the config file (as `start` does) and asks the daemon to reload it; returns
    /// once `/metrics` counts one more successful reload. The reload counter has no label
    /// naming the daemon, so only a daemon started with [`Daemon::start_alone`] can tell its
    /// own reload from a sibling's.
    pub async fn reload(&self, config: &str) {
        assert!(
            matches!(self.turn, Some(metrics::Turn::Alone(_))),
            "Daemon::reload needs a daemon started with Daemon::start_alone"
        );
        let dir = self.dir.as_ref().expect("state directory").path();
        let text = format!(
            "state_dir = {:?}\n{config}\n[admin]\nlisten = \"{}\"\n",
            dir.join("state"),
            self.admin
        );
        std::fs::write(dir.join("qunbridge.toml"), text).expect("write config");
        let reloads = "qunbridge_config_reloads_total{outcome=\"ok\"}";
        let before = self.counter(reloads).await;
        self.reload
            .send(())
            .await
            .expect("daemon takes reload requests");
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while self.counter(reloads).await <= before {
            assert!(tokio::time::Instant::now() < deadline, "reload not applied");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls `/readyz` until it answers 200.
    pub async fn wait_ready(&self) {
        let url = format!("http://{}/readyz", self.admin);
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            if let Ok(response) = reqwest::get(&url).await {
                if response.status().is_success() {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "daemon not ready after {PATIENCE:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Its `state_dir` (the store, the outbox and the media cache under `media/`).
    pub fn state_dir(&self) -> std::path::PathBuf {
        self.dir
            .as_ref()
            .expect("state directory")
            .path()
            .join("state")
    }

    /// The admin endpoint's `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.admin))
            .await
            .expect("metrics answer")
            .text()
            .await
            .expect("metrics text")
    }

    /// The value of one series (name with all its labels) now; 0 when never touched.
    pub async fn counter(&self, series: &str) -> f64 {
        metrics::counter(&self.metrics().await, series)
    }

    /// Waits until one series reaches `at_least` and returns its value then.
    ///
    /// A peer sees a request before the daemon has read the answer and counted it, so a count
    /// read right after the peer saw the last request can still be one short.
    pub async fn wait_counter(&self, series: &str, at_least: f64) -> f64 {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let now = self.counter(series).await;
            if now >= at_least {
                return now;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{series} stayed at {now}, below {at_least}, for {PATIENCE:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the daemon as SIGTERM would and returns what `run` returned.
    pub async fn stop(mut self) -> Result<(), RunError> {
        self.shut_down().await
    }

    /// The body of [`Daemon::stop`].
    async fn shut_down(&mut self) -> Result<(), RunError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = self.task.take().expect("running");
        tokio::time::timeout(Duration::from_secs(20), task)
            .await
            .expect("daemon stops within its grace period")
            .expect("daemon task did not panic")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // A daemon dropped without `stop` (a failed test) keeps its turn until it has shut
        // down, so the drops it counts on the way out never land in another daemon's turn.
        if let (Some(task), Some(turn)) = (self.task.take(), self.turn.take()) {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    let _ = task.await;
                    drop(turn);
                });
            }
        }
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// `id:` field.
    pub id: Option<String>,
    /// `event:` field.
    pub event: Option<String>,
    /// `data:` lines joined with newlines.
    pub data: String,
}

impl SseEvent {
    /// The data as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).expect("event data is JSON")
    }
}

/// A client of an SSE endpoint, parsing the stream as a browser would.
pub struct SseClient {
    /// The response body.
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    /// Bytes not yet parsed into events.
    buffer: String,
}

impl SseClient {
    /// Opens an event stream, or `None` when nothing answers 200 (the daemon is down).
    pub async fn try_open(url: &str, last_event_id: Option<&str>) -> Option<SseClient> {
        let mut request = reqwest::Client::new()
            .get(url)
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.ok()?;
        if response.status() != 200 {
            return None;
        }
        Some(SseClient {
            body: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        })
    }

    /// Opens an event stream, optionally resuming after `last_event_id`, with a bearer token.
    pub async fn open(url: &str, last_event_id: Option<&str>, token: Option<&str>) -> SseClient {
        let mut request = reqwest::Client::new()
            .get(url)
            .header("accept", "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("event stream opens");
        assert_eq!(response.status(), 200, "event stream status");
        SseClient {
            body: Box::pin(response.bytes_stream()),
            buffer: String::new(),
        }
    }

    /// The next event (comments and keep-alives skipped), or `None` after `wait`.
    pub async fn next_within(&mut self, wait: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(event) = self.take_event() {
                return Some(event);
            }
            let chunk = tokio::time::timeout_at(deadline, self.body.next())
                .await
                .ok()??;
            // A broken stream (the daemon went away) ends like a closed one.
            let chunk = chunk.ok()?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// The next event, failing the test after [`PATIENCE`].
    pub async fn next(&mut self) -> SseEvent {
        self.next_within(PATIENCE)
            .await
            .expect("an event within the patience window")
    }

    /// Parses one complete event out of the buffer.
    fn take_event(&mut self) -> Option<SseEvent> {
        loop {
            let normalized = self.buffer.replace("\r\n", "\n");
            self.buffer = normalized;
            let end = self.buffer.find("\n\n")?;
            let block: String = self.buffer[..end].to_owned();
            self.buffer.drain(..end + 2);
            let mut event = SseEvent::default();
            let mut data = Vec::new();
            for line in block.lines() {
                if line.starts_with(':') {
                    continue;
                }
                let (field, value) = line.split_once(':').unwrap_or((line, ""));
                let value = value.strip_prefix(' ').unwrap_or(value);
                match field {
                    "id" => event.id = Some(value.to_owned()),
                    "event" => event.event = Some(value.to_owned()),
                    "data" => data.push(value.to_owned()),
                    _ => {}
                }
            }
            if data.is_empty() && event.id.is_none() {
                continue;
            }
            event.data = data.join("\n");
            return Some(event);
        }
    }
}

/// Posts a message to an `api` group; returns the status and the JSON body.
pub async fn post_message(
    api: SocketAddr,
    group: &str,
    body: serde_json::Value,
    token: Option<&str>,
) -> (u16, serde_json::Value) {
    let mut request = reqwest::Client::new()
        .post(format!("http://{api}/api/v1/groups/{group}/messages"))
        .json(&body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("POST answered");
    let status = response.status().as_u16();
    let json = response.json().await.unwrap_or(serde_json::Value::Null);
    (status, json)
}

/// A raw MQTT client, for publishing and watching topics as another process would.
pub struct RawMqtt {
    /// rumqttc handle.
    pub client: rumqttc::AsyncClient,
    /// Event loop driver.
    task: JoinHandle<()>,
    /// Messages received on subscribed topics: (topic, payload).
    pub received: tokio::sync::mpsc::UnboundedReceiver<(String, Vec<u8>)>,
}

impl RawMqtt {
    /// Connects to the broker on `port` and keeps polling.
    pub async fn connect(port: u16, id: &str) -> RawMqtt {
        let mut options = rumqttc::MqttOptions::new(id, "127.0.0.1", port);
        options.set_keep_alive(Duration::from_secs(30));
        options.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = rumqttc::AsyncClient::new(options, 100);
        let (connected_tx, connected_rx) = oneshot::channel();
        let (received_tx, received) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(async move {
            let mut connected = Some(connected_tx);
            loop {
                match eventloop.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                        if let Some(tx) = connected.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(publish))) => {
                        let _ = received_tx.send((publish.topic.clone(), publish.payload.to_vec()));
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(PATIENCE, connected_rx)
            .await
            .expect("raw MQTT client connects")
            .expect("event loop alive");
        RawMqtt {
            client,
            task,
            received,
        }
    }

    /// Subscribes at QoS 1.
    pub async fn subscribe(&self, filter: &str) {
        self.client
            .subscribe(filter, rumqttc::QoS::AtLeastOnce)
            .await
            .expect("subscribe queued");
    }

    /// The next message received whose payload satisfies `wanted`, within [`PATIENCE`].
    pub async fn next_matching(
        &mut self,
        wanted: impl Fn(&str, &[u8]) -> bool,
    ) -> (String, Vec<u8>) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let next = tokio::time::timeout_at(deadline, self.received.recv())
                .await
                .expect("a matching MQTT message in time")
                .expect("client alive");
            if wanted(&next.0, &next.1) {
                return next;
            }
        }
    }

    /// Publishes at QoS 1.
    pub async fn publish(&self, topic: &str, payload: Vec<u8>) {
        self.client
            .publish(topic, rumqttc::QoS::AtLeastOnce, false, payload)
            .await
            .expect("publish queued");
    }
}

impl Drop for RawMqtt {
    fn drop(&mut self) {
        self.task.abort();
    }
}
