//! A scripted OneBot v12 implementation (as ComWeChatClient or walle-q behave), speaking the
//! wire protocol of PROTOCOLS.md §2 over real WebSockets: in forward mode it is the WebSocket
//! server qunbridge connects to, in reverse mode the client that connects to qunbridge. It
//! sends `meta.connect` and `meta.status_update` on every connection (and heartbeats when
//! asked), pushes the events a test asks for, records every action qunbridge calls and
//! answers it the way the chosen implementation does: ComWeChatClient answers `send_message`
//! with `data: true` and no message id, has no `delete_message`, and sends no
//! `Sec-WebSocket-Protocol`; a spec-following implementation returns message ids. Group member
//! lists are scripted per group ([`OneBot12Peer::set_group_members`]): `get_group_list`
//! answers the groups without a member count (as ComWeChatClient does), and
//! `get_group_member_list` the members with `user_name`; [`member_increase`] and
//! [`member_decrease`] build the spec's notices (which ComWeChatClient never sends).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::PATIENCE;

/// How the scripted implementation behaves.
#[derive(Debug, Clone)]
pub struct Behaviour {
    /// Token the peer requires (forward) or presents (reverse).
    pub token: Option<String>,
    /// Heartbeat interval in ms; 0 = none (ComWeChatClient's default).
    pub heartbeat_ms: u64,
    /// Answer like ComWeChatClient: `send_message` → `data: true`, no `delete_message`.
    pub comwechat: bool,
    /// Reverse mode: the `Sec-WebSocket-Protocol` offered (ComWeChatClient offers none).
    pub subprotocol: Option<String>,
    /// Whether `get_file` with type `url` is supported.
    pub get_file: bool,
    /// Whether `get_file` with type `data` is supported (ComWeChatClient: yes, with the
    /// bytes as base64 in JSON).
    pub get_file_data: bool,
}

impl Behaviour {
    /// ComWeChatClient: no subprotocol, `data: true`, no heartbeat, `get_file` supported.
    pub fn comwechat(token: Option<&str>) -> Behaviour {
        Behaviour {
            token: token.map(str::to_owned),
            heartbeat_ms: 0,
            comwechat: true,
            subprotocol: None,
            get_file: true,
            get_file_data: true,
        }
    }

    /// A spec-following implementation (walle-style): subprotocol `12.walle-q`, message ids.
    pub fn spec(token: Option<&str>) -> Behaviour {
        Behaviour {
            token: token.map(str::to_owned),
            heartbeat_ms: 0,
            comwechat: false,
            subprotocol: Some("12.walle-q".into()),
            get_file: true,
            get_file_data: true,
        }
    }
}

/// A group member as `get_group_member_info` tells it.
#[derive(Debug, Clone)]
struct Member {
    /// `user_name` (nickname).
    name: String,
    /// `user_displayname` (group nickname; ComWeChatClient always sends "").
    display: String,
    /// How long the answer takes.
    delay: Duration,
}

/// The peer's shared state, driven by the test.
pub struct OneBot12Peer {
    /// The bot's wxid.
    pub self_id: String,
    /// How it behaves.
    behaviour: Behaviour,
    /// Frames to the current connection.
    current: Mutex<Option<mpsc::UnboundedSender<Message>>>,
    /// Action requests received and not yet taken by `next_action`, in order.
    actions: Mutex<VecDeque<Value>>,
    /// Every action request received, in order.
    history: Mutex<Vec<Value>>,
    /// Woken when an action arrives or a connection opens.
    changed: Notify,
    /// Connections accepted or made.
    pub connections: AtomicUsize,
    /// Handshakes refused for a bad token (forward mode).
    pub auth_refusals: AtomicUsize,
    /// Forward mode: the subprotocol qunbridge offered, if any, on the last handshake.
    pub offered_subprotocol: Mutex<Option<String>>,
    /// Heartbeats stopped by the test (a "zombie" implementation).
    heartbeats_stopped: Arc<AtomicBool>,
    /// Members by user id.
    members: Mutex<HashMap<String, Member>>,
    /// Next message id handed out for sends (spec mode).
    next_message_id: AtomicU64,
    /// Next file id handed out by `upload_file`.
    next_file_id: AtomicU64,
    /// Files `get_file` with type `data` answers, by file id.
    files: Mutex<HashMap<String, Vec<u8>>>,
    /// Set by the test: `get_file` with type `data` is answered "unsupported" from now on.
    data_refused: AtomicBool,
    /// Set by the test: actions with these names are recorded and never answered.
    held: Mutex<HashSet<String>>,
    /// Member ids by group, in list order (names come from `members`).
    group_members: Mutex<std::collections::BTreeMap<String, Vec<String>>>,
}

impl OneBot12Peer {
    /// A peer for bot `self_id`.
    fn new(self_id: &str, behaviour: Behaviour) -> Arc<OneBot12Peer> {
        Arc::new(OneBot12Peer {
            self_id: self_id.to_owned(),
            behaviour,
            current: Mutex::new(None),
            actions: Mutex::new(VecDeque::new()),
            history: Mutex::new(Vec::new()),
            changed: Notify::new(),
            connections: AtomicUsize::new(0),
            auth_refusals: AtomicUsize::new(0),
            offered_subprotocol: Mutex::new(None),
            heartbeats_stopped: Arc::new(AtomicBool::new(false)),
            members: Mutex::new(HashMap::new()),
            next_message_id: AtomicU64::new(8_312_456_690_099_000),
            next_file_id: AtomicU64::new(1),
            files: Mutex::new(HashMap::new()),
            data_refused: AtomicBool::new(false),
            held: Mutex::new(HashSet::new()),
            group_members: Mutex::new(std::collections::BTreeMap::new()),
        })
    }

    /// Forward mode: a WebSocket server qunbridge connects to (path `/`, token as bearer
    /// header or `access_token` query, refused before the upgrade). Returns the peer and URL.
    pub async fn serve(self_id: &str, behaviour: Behaviour) -> (Arc<OneBot12Peer>, String) {
        let peer = OneBot12Peer::new(self_id, behaviour);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind peer");
        let url = format!("ws://{}/", listener.local_addr().expect("addr"));
        let serving = peer.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let peer = serving.clone();
                tokio::spawn(async move {
                    let expected = peer.behaviour.token.clone();
                    let offered = peer.clone();
                    // tungstenite's handshake callback fixes this error type.
                    #[allow(clippy::result_large_err)]
                    let check = |request: &Request,
                                 response: Response|
                     -> Result<Response, ErrorResponse> {
                        *offered.offered_subprotocol.lock().expect("lock") = request
                            .headers()
                            .get("sec-websocket-protocol")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        let header = request
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .map(|v| v.trim_start_matches("Bearer ").to_owned());
                        let query = request.uri().query().and_then(|q| {
                            q.split('&')
                                .find_map(|p| p.strip_prefix("access_token=").map(str::to_owned))
                        });
                        match (&expected, header.or(query)) {
                            (None, _) => Ok(response),
                            (Some(want), Some(got)) if *want == got => Ok(response),
                            // OneBot v12 answers 401 for a missing or wrong token.
                            (Some(_), _) => Err(refusal(StatusCode::UNAUTHORIZED)),
                        }
                    };
                    match tokio_tungstenite::accept_hdr_async(stream, check).await {
                        Ok(ws) => peer.run_connection(ws).await,
                        Err(_) => {
                            peer.auth_refusals.fetch_add(1, Ordering::SeqCst);
                            peer.changed.notify_waiters();
                        }
                    }
                });
            }
        });
        (peer, url)
    }

    /// Reverse mode: a peer that connects to qunbridge's listener.
    pub fn reverse(self_id: &str, behaviour: Behaviour) -> Arc<OneBot12Peer> {
        OneBot12Peer::new(self_id, behaviour)
    }

    /// Reverse mode: connects once with the handshake headers of the chosen implementation.
    /// Returns the subprotocol qunbridge answered with, or the HTTP status of a refusal.
    pub async fn connect(self: &Arc<Self>, addr: SocketAddr) -> Result<Option<String>, u16> {
        let mut request = format!("ws://{addr}/onebot/v12/ws/")
            .into_client_request()
            .expect("request");
        let headers = request.headers_mut();
        let agent = if self.behaviour.comwechat {
            "OneBot/12(ComWeChat)"
        } else {
            "OneBot/12 (wechat) Walle/0.4"
        };
        headers.insert("user-agent", HeaderValue::from_static(agent));
        if let Some(token) = &self.behaviour.token {
            let bearer = format!("Bearer {token}");
            headers.insert(
                "authorization",
                HeaderValue::from_str(&bearer).expect("header"),
            );
        }
        if let Some(protocol) = &self.behaviour.subprotocol {
            headers.insert(
                "sec-websocket-protocol",
                HeaderValue::from_str(protocol).expect("header"),
            );
        }
        // tungstenite refuses a handshake whose offered subprotocol is not echoed.
        match tokio_tungstenite::connect_async(request).await {
            Ok((ws, response)) => {
                let echoed = response
                    .headers()
                    .get("sec-websocket-protocol")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let before = self.connections.load(Ordering::SeqCst);
                let peer = self.clone();
                tokio::spawn(async move { peer.run_connection(ws).await });
                self.wait_connections(before + 1).await;
                Ok(echoed)
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(response.status().as_u16())
            }
            Err(error) => panic!("reverse connect failed: {error}"),
        }
    }

    /// The `meta` events every connection starts with.
    fn hello(&self) -> [Value; 2] {
        let implementation = if self.behaviour.comwechat {
            "ComWechat"
        } else {
            "walle-q"
        };
        [
            json!({"id": "", "time": now_secs(), "type": "meta", "detail_type": "connect",
                   "sub_type": "", "version": {"impl": implementation, "version": "v1.0",
                   "onebot_version": "12"}}),
            json!({"id": "9d2e", "time": now_secs(), "type": "meta",
                   "detail_type": "status_update", "sub_type": "",
                   "status": {"good": true, "bots": [{"self": {"platform": "wechat",
                   "user_id": self.self_id}, "online": true}]}}),
        ]
    }

    /// Serves one connection: meta events, heartbeats, answers to actions.
    async fn run_connection<S>(self: Arc<Self>, ws: WebSocketStream<S>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sink, mut stream) = ws.split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
        *self.current.lock().expect("lock") = Some(tx.clone());
        for event in self.hello() {
            let _ = tx.send(Message::Text(event.to_string().into()));
        }
        self.connections.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
        if self.behaviour.heartbeat_ms > 0 {
            let tx = tx.clone();
            let (interval, stopped) =
                (self.behaviour.heartbeat_ms, self.heartbeats_stopped.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(interval)).await;
                    if stopped.load(Ordering::SeqCst) {
                        continue;
                    }
                    let beat = json!({"id": "hb", "time": now_secs(), "type": "meta",
                        "detail_type": "heartbeat", "sub_type": "", "interval": interval});
                    if tx.send(Message::Text(beat.to_string().into())).is_err() {
                        return;
                    }
                }
            });
        }
        loop {
            tokio::select! {
                outgoing = rx.recv() => match outgoing {
                    Some(Message::Close(_)) | None => break,
                    Some(message) => if sink.send(message).await.is_err() { break },
                },
                incoming = stream.next() => match incoming {
                    Some(Ok(Message::Text(text))) => {
                        let request: Value = serde_json::from_str(&text).expect("actions are JSON");
                        let held = request["action"]
                            .as_str()
                            .is_some_and(|name| self.held.lock().expect("lock").contains(name));
                        // The answer is made before the test can see the action, so a test
                        // that changes the peer's state after `next_action` changes what the
                        // next call sees, never this one's answer.
                        let answered = (!held).then(|| self.answer(&request));
                        self.actions.lock().expect("lock").push_back(request.clone());
                        self.history.lock().expect("lock").push(request);
                        self.changed.notify_waiters();
                        let Some((answer, delay)) = answered else { continue };
                        if delay.is_zero() {
                            if sink.send(Message::Text(answer.to_string().into())).await.is_err() { break }
                        } else {
                            // A slow answer must not hold up the others.
                            let tx = tx.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(delay).await;
                                let _ = tx.send(Message::Text(answer.to_string().into()));
                            });
                        }
                    }
                    Some(Ok(_)) => {}
                    _ => break,
                },
            }
        }
    }

    /// The response to an action, and how long it takes.
    fn answer(&self, request: &Value) -> (Value, Duration) {
        let echo = request["echo"].clone();
        let ok = |data: Value| json!({"status": "ok", "retcode": 0, "data": data, "message": "", "echo": echo});
        let failed = |retcode: i64, message: &str| json!({"status": "failed", "retcode": retcode, "data": null, "message": message, "echo": echo});
        let params = &request["params"];
        let answer = match request["action"].as_str() {
            Some("send_message") if self.behaviour.comwechat => ok(json!(true)),
            Some("send_message") => {
                let id = self.next_message_id.fetch_add(1, Ordering::SeqCst);
                ok(json!({"message_id": id.to_string(), "time": now_secs()}))
            }
            Some("get_self_info") => ok(
                json!({"user_id": self.self_id, "user_name": "qunbridge", "user_displayname": ""}),
            ),
            Some("get_group_member_info") => {
                let user = params["user_id"].as_str().unwrap_or_default();
                let member = self.members.lock().expect("lock").get(user).cloned();
                return match member {
                    Some(member) => (
                        ok(json!({"user_id": user, "user_name": member.name,
                                  "user_displayname": member.display, "wx.avatar": ""})),
                        member.delay,
                    ),
                    None => (failed(35001, "member not found"), Duration::ZERO),
                };
            }
            Some("get_file")
                if self.behaviour.get_file_data
                    && !self.data_refused.load(Ordering::SeqCst)
                    && params["type"] == "data" =>
            {
                let id = params["file_id"].as_str().unwrap_or_default();
                match self.files.lock().expect("lock").get(id) {
                    Some(bytes) => ok(json!({"name": format!("{id}.jpg"),
                                             "data": base64::engine::general_purpose::STANDARD.encode(bytes)})),
                    None => failed(32001, "file not found"),
                }
            }
            Some("get_file") if params["type"] == "data" => failed(10004, "unsupported type"),
            Some("get_file") if self.behaviour.get_file && params["type"] == "url" => {
                let id = params["file_id"].as_str().unwrap_or_default();
                // ComWeChatClient answers a loopback URL naming the file's Windows path
                // (MEDIA.md §1.2); a spec implementation a URL others can fetch.
                let url = if self.behaviour.comwechat {
                    format!("http://127.0.0.1:8000/get_file/C:\\Users\\wx\\Documents\\WeChat Files\\{}\\FileStorage\\Image\\{id}.jpg", self.self_id)
                } else {
                    format!("https://files.example.invalid/{id}.jpg")
                };
                ok(json!({"name": format!("{id}.jpg"), "url": url}))
            }
            Some("upload_file") => {
                let id = self.next_file_id.fetch_add(1, Ordering::SeqCst);
                ok(json!({"file_id": format!("up-{id}")}))
            }
            Some("delete_message") if !self.behaviour.comwechat => ok(json!(null)),
            Some("get_group_list") => {
                let groups: Vec<Value> = self
                    .group_members
                    .lock()
                    .expect("lock")
                    .keys()
                    .map(|group| json!({"group_id": group, "group_name": format!("group {group}"), "wx.avatar": ""}))
                    .collect();
                ok(Value::Array(groups))
            }
            Some("get_group_member_list") => {
                let group = params["group_id"].as_str().unwrap_or_default();
                let ids = self.group_members.lock().expect("lock").get(group).cloned();
                match ids {
                    Some(ids) => {
                        let members = self.members.lock().expect("lock");
                        let list: Vec<Value> = ids
                            .iter()
                            .map(|id| {
                                let name = members.get(id).map(|m| m.name.clone()).unwrap_or_default();
                                json!({"user_id": id, "user_name": name, "user_displayname": "", "wx.avatar": ""})
                            })
                            .collect();
                        ok(Value::Array(list))
                    }
                    None => failed(35001, "group not found"),
                }
            }
            _ => failed(10002, "unsupported action"),
        };
        (answer, Duration::ZERO)
    }

    /// Makes `get_file` with type `data` answer `bytes` for `file_id`.
    pub fn set_file(&self, file_id: &str, bytes: &[u8]) {
        self.files
            .lock()
            .expect("lock")
            .insert(file_id.to_owned(), bytes.to_vec());
    }

    /// From now on answers `get_file` with type `data` as an implementation without it does.
    pub fn refuse_file_data(&self) {
        self.data_refused.store(true, Ordering::SeqCst);
    }

    /// From now on records every `action` call and never answers it, as a hung
    /// implementation does: qunbridge waits for the answer until its action timeout.
    pub fn hold_answers(&self, action: &str) {
        self.held.lock().expect("lock").insert(action.to_owned());
    }

    /// Answers every action again from now on (the calls held so far stay unanswered).
    pub fn answer_all(&self) {
        self.held.lock().expect("lock").clear();
    }

    /// Adds a member that `get_group_member_info` knows.
    pub fn set_member(&self, user_id: &str, name: &str, display: &str) {
        self.set_slow_member(user_id, name, display, Duration::ZERO);
    }

    /// Adds a member whose `get_group_member_info` answer takes `delay`.
    pub fn set_slow_member(&self, user_id: &str, name: &str, display: &str, delay: Duration) {
        self.members.lock().expect("lock").insert(
            user_id.to_owned(),
            Member {
                name: name.to_owned(),
                display: display.to_owned(),
                delay,
            },
        );
    }

    /// Sets the members of `group_id` as `(user_id, user_name)`: `get_group_list` lists the
    /// group, `get_group_member_list` answers them, and `get_group_member_info` knows them.
    pub fn set_group_members(&self, group_id: &str, members: &[(&str, &str)]) {
        for (user, name) in members {
            self.set_member(user, name, "");
        }
        let ids = members.iter().map(|(user, _)| (*user).to_owned()).collect();
        self.group_members
            .lock()
            .expect("lock")
            .insert(group_id.to_owned(), ids);
    }

    /// Sends a frame (event or garbage) on the current connection.
    pub fn push(&self, message: Message) {
        let current = self.current.lock().expect("lock");
        current
            .as_ref()
            .expect("a live connection")
            .send(message)
            .expect("connection task alive");
    }

    /// Sends a JSON event on the current connection.
    pub fn push_event(&self, event: Value) {
        self.push(Message::Text(event.to_string().into()));
    }

    /// Closes the current connection abruptly, as a crashing implementation would.
    pub fn drop_connection(&self) {
        if let Some(tx) = self.current.lock().expect("lock").take() {
            let _ = tx.send(Message::Close(None));
        }
    }

    /// Stops heartbeats while keeping the socket open.
    pub fn stop_heartbeats(&self) {
        self.heartbeats_stopped.store(true, Ordering::SeqCst);
    }

    /// Waits until at least `count` connections were made.
    pub async fn wait_connections(&self, count: usize) {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let notified = self.changed.notified();
            if self.connections.load(Ordering::SeqCst) >= count {
                return;
            }
            assert!(
                tokio::time::timeout_at(deadline, notified).await.is_ok(),
                "expected {count} connections, saw {}",
                self.connections.load(Ordering::SeqCst)
            );
        }
    }

    /// The next action called with this name (earlier other actions are skipped).
    pub async fn next_action(&self, name: &str) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let notified = self.changed.notified();
            {
                let mut actions = self.actions.lock().expect("lock");
                if let Some(at) = actions.iter().position(|a| a["action"] == name) {
                    return actions.remove(at).expect("present");
                }
            }
            assert!(
                tokio::time::timeout_at(deadline, notified).await.is_ok(),
                "no `{name}` action within {PATIENCE:?}"
            );
        }
    }

    /// Actions with this name received so far and not yet taken.
    pub fn count_actions(&self, name: &str) -> usize {
        self.actions
            .lock()
            .expect("lock")
            .iter()
            .filter(|a| a["action"] == name)
            .count()
    }

    /// Every action with this name received so far (taken or not).
    pub fn calls(&self, name: &str) -> Vec<Value> {
        self.history
            .lock()
            .expect("lock")
            .iter()
            .filter(|a| a["action"] == name)
            .cloned()
            .collect()
    }
}

/// A handshake refusal.
fn refusal(status: StatusCode) -> ErrorResponse {
    let mut response = ErrorResponse::new(None);
    *response.status_mut() = status;
    response
}

/// Now, in Unix seconds with a fraction (the v12 `time`).
pub fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A `message.group` event from `user_id` in `group_id`, as ComWeChatClient sends it.
pub fn group_message(
    self_id: &str,
    group_id: &str,
    user_id: &str,
    message_id: &str,
    message: Value,
) -> Value {
    json!({
        "id": format!("evt-{message_id}"), "time": now_secs(),
        "type": "message", "detail_type": "group", "sub_type": "",
        "self": {"platform": "wechat", "user_id": self_id},
        "message_id": message_id, "message": message, "alt_message": "",
        "group_id": group_id, "user_id": user_id
    })
}

/// A text-only message.
pub fn text(text: &str) -> Value {
    json!([{"type": "text", "data": {"text": text}}])
}

/// A `notice.group_message_delete` as ComWeChatClient sends it (`sub_type` "delete", empty
/// `operator_id`).
pub fn message_deleted(self_id: &str, group_id: &str, user_id: &str, message_id: &str) -> Value {
    json!({
        "id": format!("del-{message_id}"), "time": now_secs(),
        "type": "notice", "detail_type": "group_message_delete", "sub_type": "delete",
        "self": {"platform": "wechat", "user_id": self_id},
        "group_id": group_id, "message_id": message_id, "user_id": user_id, "operator_id": ""
    })
}

/// A `notice.group_member_increase` (`sub_type` `join`, `invite` or "").
pub fn member_increase(self_id: &str, group_id: &str, user_id: &str, sub_type: &str) -> Value {
    member_notice(
        "group_member_increase",
        self_id,
        group_id,
        user_id,
        sub_type,
    )
}

/// A `notice.group_member_decrease` (`sub_type` `leave`, `kick` or ""); `user_id` = the
/// bot's own id when the bot was removed.
pub fn member_decrease(self_id: &str, group_id: &str, user_id: &str, sub_type: &str) -> Value {
    member_notice(
        "group_member_decrease",
        self_id,
        group_id,
        user_id,
        sub_type,
    )
}

/// A group member notice as the v12 spec words it.
fn member_notice(
    detail_type: &str,
    self_id: &str,
    group_id: &str,
    user_id: &str,
    sub_type: &str,
) -> Value {
    json!({
        "id": format!("{detail_type}-{user_id}"), "time": now_secs(),
        "type": "notice", "detail_type": detail_type, "sub_type": sub_type,
        "self": {"platform": "wechat", "user_id": self_id},
        "group_id": group_id, "user_id": user_id, "operator_id": ""
    })
}
