//! A scripted OneBot v11 implementation (as NapCat, Lagrange.OneBot or go-cqhttp behave),
//! speaking the exact wire protocol of PROTOCOLS.md §1 over real WebSockets: in forward mode
//! it is the WebSocket server qunbridge connects to, in reverse mode the client that connects
//! to qunbridge. It sends the lifecycle event and heartbeats, pushes the events a test asks
//! for, records every action qunbridge calls and answers it (or fails it on request). Group
//! members are scripted per group ([`OneBot11Peer::set_member_list`]): `get_group_list`
//! answers them with `member_count`, `get_group_member_info` and `get_group_member_list`
//! with `card` and `nickname`, as NapCat does; [`member_increase`] and [`member_decrease`]
//! build the notices.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// A scripted group member: `(user_id, card, nickname)`.
type PeerMember = (i64, String, String);

/// The peer's shared state, driven by the test.
pub struct OneBot11Peer {
    /// The bot's QQ number.
    pub self_id: i64,
    /// Token the peer requires (forward) or presents (reverse).
    token: Option<String>,
    /// Frames to the current connection.
    current: Mutex<Option<mpsc::UnboundedSender<Message>>>,
    /// Action requests received, in order.
    actions: Mutex<VecDeque<Value>>,
    /// Woken when an action arrives or a connection opens.
    changed: Notify,
    /// Connections accepted or made.
    pub connections: AtomicUsize,
    /// Handshakes refused for a bad token (forward mode).
    pub auth_refusals: AtomicUsize,
    /// Heartbeat interval in ms; 0 = none.
    heartbeat_ms: u64,
    /// Heartbeats stopped by the test (a "zombie" implementation).
    heartbeats_stopped: Arc<AtomicBool>,
    /// The next N `send_group_msg` calls fail with `fail_retcode`.
    fail_sends: AtomicU32,
    /// Retcode of failed sends.
    fail_retcode: AtomicI64,
    /// Next message id handed out for sends.
    next_message_id: AtomicI64,
    /// Sends left to answer before the connection is dropped (0: never).
    drop_after_sends: AtomicU32,
    /// Groups whose `send_group_msg` is answered only after a delay (a slow implementation
    /// or a risk-controlled group), by group id.
    slow_groups: Mutex<Vec<(i64, Duration)>>,
    /// Answers held back by [`OneBot11Peer::answer_sends_to_after`] and not sent yet.
    held_answers: Arc<AtomicUsize>,
    /// Fresh URLs `get_image` answers, by the picture's `file` (NapCat keeps them a day).
    images: Mutex<std::collections::HashMap<String, String>>,
    /// Members by group: `(user_id, card, nickname)`, in list order.
    groups: Mutex<std::collections::BTreeMap<i64, Vec<PeerMember>>>,
    /// Counts `get_group_list` tells instead of the list's length, by group (NapCat answers
    /// the list from a cache; `get_group_info` with `no_cache` tells the fresh count).
    listed_counts: Mutex<std::collections::HashMap<i64, usize>>,
    /// Set by [`OneBot11Peer::stop`]: the server closes every connection as it arrives, as
    /// a stopped implementation whose port nobody serves.
    stopped: AtomicBool,
}

impl OneBot11Peer {
    /// A peer for bot `self_id`.
    fn new(self_id: i64, token: Option<&str>, heartbeat_ms: u64) -> Arc<OneBot11Peer> {
        Arc::new(OneBot11Peer {
            self_id,
            token: token.map(str::to_owned),
            current: Mutex::new(None),
            actions: Mutex::new(VecDeque::new()),
            changed: Notify::new(),
            connections: AtomicUsize::new(0),
            auth_refusals: AtomicUsize::new(0),
            heartbeat_ms,
            heartbeats_stopped: Arc::new(AtomicBool::new(false)),
            fail_sends: AtomicU32::new(0),
            fail_retcode: AtomicI64::new(0),
            next_message_id: AtomicI64::new(9001),
            drop_after_sends: AtomicU32::new(0),
            slow_groups: Mutex::new(Vec::new()),
            held_answers: Arc::new(AtomicUsize::new(0)),
            images: Mutex::new(std::collections::HashMap::new()),
            groups: Mutex::new(std::collections::BTreeMap::new()),
            listed_counts: Mutex::new(std::collections::HashMap::new()),
            stopped: AtomicBool::new(false),
        })
    }

    /// Forward mode: a WebSocket server qunbridge connects to. Returns the peer and its URL.
    pub async fn serve(
        self_id: i64,
        token: Option<&str>,
        heartbeat_ms: u64,
    ) -> (Arc<OneBot11Peer>, String) {
        let peer = OneBot11Peer::new(self_id, token, heartbeat_ms);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind peer");
        let url = format!("ws://{}/", listener.local_addr().expect("addr"));
        let serving = peer.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                if serving.stopped.load(Ordering::SeqCst) {
                    drop(stream);
                    continue;
                }
                let peer = serving.clone();
                tokio::spawn(async move {
                    let expected = peer.token.clone();
                    // tungstenite's callback type returns its (large) HTTP error response by value.
                    #[allow(clippy::result_large_err)]
                    let check = |request: &Request,
                                 response: Response|
                     -> Result<Response, ErrorResponse> {
                        let presented = request
                            .headers()
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .map(|v| v.trim_start_matches("Bearer ").to_owned());
                        match (&expected, presented) {
                            (None, _) => Ok(response),
                            (Some(want), Some(got)) if *want == got => Ok(response),
                            (Some(_), None) => Err(refusal(StatusCode::UNAUTHORIZED)),
                            (Some(_), Some(_)) => Err(refusal(StatusCode::FORBIDDEN)),
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

    /// Forward mode without a token and with TCP_NODELAY on every accepted socket, as
    /// NapCat's (Node `ws`) server has it: for the benchmark, where Nagle's algorithm on the
    /// peer's side would hold events back for a delayed ACK. Returns the peer and its URL.
    pub async fn serve_nodelay(self_id: i64, heartbeat_ms: u64) -> (Arc<OneBot11Peer>, String) {
        let peer = OneBot11Peer::new(self_id, None, heartbeat_ms);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind peer");
        let url = format!("ws://{}/", listener.local_addr().expect("addr"));
        let serving = peer.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let _ = stream.set_nodelay(true);
                let peer = serving.clone();
                tokio::spawn(async move {
                    if let Ok(ws) = tokio_tungstenite::accept_async(stream).await {
                        peer.run_connection(ws).await;
                    }
                });
            }
        });
        (peer, url)
    }

    /// Reverse mode: a peer that connects to qunbridge's listener as a Universal client, with
    /// header names in lower case as NapCat sends them.
    pub fn reverse(self_id: i64, token: Option<&str>, heartbeat_ms: u64) -> Arc<OneBot11Peer> {
        OneBot11Peer::new(self_id, token, heartbeat_ms)
    }

    /// Reverse mode: connects once; returns the HTTP status when the handshake is refused.
    pub async fn connect(self: &Arc<Self>, addr: SocketAddr) -> Result<(), u16> {
        let mut request = format!("ws://{addr}/")
            .into_client_request()
            .expect("request");
        let headers = request.headers_mut();
        headers.insert("x-self-id", HeaderValue::from(self.self_id));
        headers.insert("x-client-role", HeaderValue::from_static("universal"));
        headers.insert("user-agent", HeaderValue::from_static("OneBot/11"));
        // NapCat sends `Bearer ` with an empty token when none is configured.
        let bearer = format!("Bearer {}", self.token.as_deref().unwrap_or(""));
        headers.insert(
            "authorization",
            HeaderValue::from_str(&bearer).expect("header"),
        );
        match tokio_tungstenite::connect_async(request).await {
            Ok((ws, _)) => {
                let before = self.connections.load(Ordering::SeqCst);
                let peer = self.clone();
                tokio::spawn(async move { peer.run_connection(ws).await });
                self.wait_connections(before + 1).await;
                Ok(())
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                Err(response.status().as_u16())
            }
            Err(error) => panic!("reverse connect failed: {error}"),
        }
    }

    /// Serves one connection: lifecycle, heartbeats, answers to actions.
    async fn run_connection<S>(self: Arc<Self>, ws: WebSocketStream<S>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sink, mut stream) = ws.split();
        let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
        *self.current.lock().expect("lock") = Some(tx.clone());
        let _ = tx.send(Message::Text(
            json!({"time": 1718880000, "self_id": self.self_id, "post_type": "meta_event",
                   "meta_event_type": "lifecycle", "sub_type": "connect"})
            .to_string()
            .into(),
        ));
        self.connections.fetch_add(1, Ordering::SeqCst);
        self.changed.notify_waiters();
        if self.heartbeat_ms > 0 {
            let tx = tx.clone();
            let (self_id, interval, stopped) = (
                self.self_id,
                self.heartbeat_ms,
                self.heartbeats_stopped.clone(),
            );
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(interval)).await;
                    if stopped.load(Ordering::SeqCst) {
                        continue;
                    }
                    let beat = json!({"time": 1718880015, "self_id": self_id, "post_type": "meta_event",
                        "meta_event_type": "heartbeat", "interval": interval,
                        "status": {"online": true, "good": true}});
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
                        let answer = self.answer(&request);
                        let is_send = request["action"] == "send_group_msg";
                        let delay = self.delay_for(&request);
                        if delay.is_some() {
                            // Counted before the test can see the action.
                            self.held_answers.fetch_add(1, Ordering::SeqCst);
                        }
                        self.actions.lock().expect("lock").push_back(request);
                        self.changed.notify_waiters();
                        if let Some(delay) = delay {
                            // Answered later, on the same socket, while other actions go on.
                            let (tx, held) = (tx.clone(), self.held_answers.clone());
                            tokio::spawn(async move {
                                tokio::time::sleep(delay).await;
                                let _ = tx.send(Message::Text(answer.to_string().into()));
                                held.fetch_sub(1, Ordering::SeqCst);
                            });
                            continue;
                        }
                        if sink.send(Message::Text(answer.to_string().into())).await.is_err() { break }
                        // Crash right after answering: whatever else the relay already wrote
                        // on this socket is never read.
                        if is_send && self.drop_after_sends.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)) == Ok(1) {
                            *self.current.lock().expect("lock") = None;
                            break;
                        }
                    }
                    Some(Ok(_)) => {}
                    _ => break,
                },
            }
        }
    }

    /// How long the answer to this action is held back, if it is a send to a slow group.
    fn delay_for(&self, request: &Value) -> Option<Duration> {
        if request["action"] != "send_group_msg" {
            return None;
        }
        let group = request["params"]["group_id"].as_i64()?;
        self.slow_groups
            .lock()
            .expect("lock")
            .iter()
            .find(|(slow, _)| *slow == group)
            .map(|(_, delay)| *delay)
    }

    /// The response to an action.
    fn answer(&self, request: &Value) -> Value {
        let echo = request["echo"].clone();
        match request["action"].as_str() {
            Some("send_group_msg") => {
                let failing = self
                    .fail_sends
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if failing {
                    let retcode = self.fail_retcode.load(Ordering::SeqCst);
                    json!({"status": "failed", "retcode": retcode, "data": null,
                           "message": "Timeout: NTEvent serviceAndMethod:NodeIKernelMsgService/sendMsg",
                           "wording": "Timeout: NTEvent sendMsg", "echo": echo})
                } else {
                    let id = self.next_message_id.fetch_add(1, Ordering::SeqCst);
                    json!({"status": "ok", "retcode": 0, "data": {"message_id": id}, "echo": echo})
                }
            }
            Some("get_login_info") => json!({"status": "ok", "retcode": 0,
                "data": {"user_id": self.self_id, "nickname": "bot"}, "echo": echo}),
            Some("delete_msg") => json!({"status": "ok", "retcode": 0, "data": null, "echo": echo}),
            Some("get_image") => {
                let file = request["params"]["file"].as_str().unwrap_or_default();
                match self.images.lock().expect("lock").get(file) {
                    // NapCat downloads the picture and answers its local path and a fresh URL.
                    Some(url) => json!({"status": "ok", "retcode": 0, "echo": echo,
                        "data": {"file": format!("/root/.config/QQ/NapCat/temp/{file}"),
                                 "url": url, "file_size": "0", "file_name": file}}),
                    None => json!({"status": "failed", "retcode": 1200, "data": null,
                        "message": "文件不存在", "wording": "文件不存在", "echo": echo}),
                }
            }
            Some("get_group_list") => {
                let listed = self.listed_counts.lock().expect("lock");
                let groups: Vec<Value> = self
                    .groups
                    .lock()
                    .expect("lock")
                    .iter()
                    .map(|(group, members)| {
                        let count = listed.get(group).copied().unwrap_or(members.len());
                        json!({"group_id": group, "group_name": format!("group {group}"),
                        "member_count": count, "max_member_count": 500})
                    })
                    .collect();
                json!({"status": "ok", "retcode": 0, "data": groups, "echo": echo})
            }
            Some("get_group_info") => {
                let group = request["params"]["group_id"].as_i64();
                let count =
                    group.and_then(|g| self.groups.lock().expect("lock").get(&g).map(Vec::len));
                match (group, count) {
                    (Some(group), Some(count)) => {
                        json!({"status": "ok", "retcode": 0, "echo": echo,
                        "data": {"group_id": group, "group_name": format!("group {group}"),
                                 "member_count": count, "max_member_count": 500}})
                    }
                    _ => json!({"status": "failed", "retcode": 1200, "data": null,
                        "message": "群不存在", "wording": "群不存在", "echo": echo}),
                }
            }
            Some("get_group_member_info") => {
                let params = &request["params"];
                let (group, user) = (params["group_id"].as_i64(), params["user_id"].as_i64());
                let groups = self.groups.lock().expect("lock");
                let member = group
                    .and_then(|group| groups.get(&group))
                    .and_then(|members| members.iter().find(|(id, _, _)| Some(*id) == user));
                match member {
                    Some((id, card, nickname)) => {
                        json!({"status": "ok", "retcode": 0, "echo": echo,
                        "data": member_object(group.unwrap_or_default(), *id, card, nickname)})
                    }
                    None => json!({"status": "failed", "retcode": 200, "data": null,
                        "message": "群成员不存在", "wording": "群成员不存在", "echo": echo}),
                }
            }
            Some("get_group_member_list") => {
                let group = request["params"]["group_id"].as_i64().unwrap_or_default();
                match self.groups.lock().expect("lock").get(&group) {
                    Some(members) => {
                        let list: Vec<Value> = members
                            .iter()
                            .map(|(id, card, nickname)| member_object(group, *id, card, nickname))
                            .collect();
                        json!({"status": "ok", "retcode": 0, "data": list, "echo": echo})
                    }
                    None => json!({"status": "failed", "retcode": 200, "data": null,
                        "message": "群不存在", "wording": "群不存在", "echo": echo}),
                }
            }
            _ => {
                json!({"status": "failed", "retcode": 1404, "data": null, "message": "unknown action", "echo": echo})
            }
        }
    }

    /// Sets the members of `group` as `(user_id, card, nickname)`: `get_group_list` lists the
    /// group with their count, and the member actions answer from them.
    pub fn set_member_list(&self, group_id: i64, members: &[(i64, &str, &str)]) {
        let members = members
            .iter()
            .map(|(id, card, nickname)| (*id, (*card).to_owned(), (*nickname).to_owned()))
            .collect();
        self.groups.lock().expect("lock").insert(group_id, members);
    }

    /// Makes `get_group_list` tell `count` members for `group_id`, whatever the list holds
    /// (NapCat's cached list); `get_group_info` keeps telling the list's length.
    pub fn set_listed_count(&self, group_id: i64, count: usize) {
        self.listed_counts
            .lock()
            .expect("lock")
            .insert(group_id, count);
    }

    /// Adds (or renames) one member of `group_id`.
    pub fn add_member(&self, group_id: i64, user_id: i64, card: &str, nickname: &str) {
        let mut groups = self.groups.lock().expect("lock");
        let members = groups.entry(group_id).or_default();
        members.retain(|(id, _, _)| *id != user_id);
        members.push((user_id, card.to_owned(), nickname.to_owned()));
    }

    /// Removes one member of `group_id`.
    pub fn remove_member(&self, group_id: i64, user_id: i64) {
        if let Some(members) = self.groups.lock().expect("lock").get_mut(&group_id) {
            members.retain(|(id, _, _)| *id != user_id);
        }
    }

    /// Makes `get_image {file}` answer `url` as the picture's fresh URL.
    pub fn set_image(&self, file: &str, url: &str) {
        self.images
            .lock()
            .expect("lock")
            .insert(file.to_owned(), url.to_owned());
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

    /// Stops the implementation (forward mode): the connection closes and every reconnect is
    /// closed at once.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        self.drop_connection();
    }

    /// Stops heartbeats while keeping the socket open.
    pub fn stop_heartbeats(&self) {
        self.heartbeats_stopped.store(true, Ordering::SeqCst);
    }

    /// Drops the connection abruptly right after answering the `count`-th next send.
    pub fn drop_after_sends(&self, count: u32) {
        self.drop_after_sends.store(count, Ordering::SeqCst);
    }

    /// Answers every later `send_group_msg` to `group_id` only `delay` after it arrived (the
    /// send is recorded at once; other actions are answered meanwhile).
    pub fn answer_sends_to_after(&self, group_id: i64, delay: Duration) {
        self.slow_groups
            .lock()
            .expect("lock")
            .push((group_id, delay));
    }

    /// Answers held back by [`OneBot11Peer::answer_sends_to_after`] that were not sent yet.
    pub fn held_answers(&self) -> usize {
        self.held_answers.load(Ordering::SeqCst)
    }

    /// Makes the next `count` sends fail with `retcode`.
    pub fn fail_next_sends(&self, count: u32, retcode: i64) {
        self.fail_retcode.store(retcode, Ordering::SeqCst);
        self.fail_sends.store(count, Ordering::SeqCst);
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
                while let Some(action) = actions.pop_front() {
                    if action["action"] == name {
                        return action;
                    }
                }
            }
            assert!(
                tokio::time::timeout_at(deadline, notified).await.is_ok(),
                "no `{name}` action within {PATIENCE:?}"
            );
        }
    }

    /// Takes every action called with this name received so far (earlier other actions are
    /// skipped), waiting up to `wait` for at least one; empty when none came. Unlike
    /// [`OneBot11Peer::next_action`] it never panics, for long-running consumers such as the
    /// benchmark's receivers.
    pub async fn take_actions_within(&self, name: &str, wait: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let notified = self.changed.notified();
            {
                let mut actions = self.actions.lock().expect("lock");
                let taken: Vec<Value> = actions.drain(..).filter(|a| a["action"] == name).collect();
                if !taken.is_empty() {
                    return taken;
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Vec::new();
            }
        }
    }

    /// The text of every `send_group_msg` received so far and not yet taken, in order.
    pub fn sent_texts(&self) -> Vec<String> {
        self.actions
            .lock()
            .expect("lock")
            .iter()
            .filter(|a| a["action"] == "send_group_msg")
            .map(|a| {
                let message = &a["params"]["message"];
                match message.as_str() {
                    Some(text) => text.to_owned(),
                    None => message
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|s| s["data"]["text"].as_str())
                        .collect(),
                }
            })
            .collect()
    }

    /// Connections made so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Actions with this name received so far and not yet taken.
    pub fn count_actions(&self, name: &str) -> usize {
        self.untaken(name).len()
    }

    /// The actions with this name received so far and not yet taken, in order.
    pub fn untaken(&self, name: &str) -> Vec<Value> {
        self.actions
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

/// A group message event in array format.
pub fn group_message(
    group_id: i64,
    user_id: i64,
    message_id: i64,
    card: &str,
    nickname: &str,
    message: Value,
) -> Value {
    json!({
        "time": 1718880000, "self_id": 2854196310u64, "post_type": "message",
        "message_type": "group", "sub_type": "normal", "message_id": message_id,
        "group_id": group_id, "user_id": user_id, "anonymous": null,
        "message": message, "raw_message": "", "font": 0,
        "sender": {"user_id": user_id, "nickname": nickname, "card": card, "role": "member"}
    })
}

/// A member object as NapCat answers `get_group_member_info` and `get_group_member_list`.
fn member_object(group_id: i64, user_id: i64, card: &str, nickname: &str) -> Value {
    json!({"group_id": group_id, "user_id": user_id, "nickname": nickname, "card": card,
           "sex": "unknown", "age": 0, "join_time": 1718000000, "last_sent_time": 1718880000,
           "level": "1", "role": "member", "title": ""})
}

/// A `group_increase` notice (`sub_type` `approve` or `invite`; `operator_id` 0 when unknown,
/// as NapCat and Lagrange often send it).
pub fn member_increase(group_id: i64, user_id: i64, operator_id: i64, sub_type: &str) -> Value {
    member_notice("group_increase", group_id, user_id, operator_id, sub_type)
}

/// A `group_decrease` notice (`sub_type` `leave`, `kick`, `kick_me` or NapCat's `disband`).
pub fn member_decrease(group_id: i64, user_id: i64, operator_id: i64, sub_type: &str) -> Value {
    member_notice("group_decrease", group_id, user_id, operator_id, sub_type)
}

/// A group member notice at the current second.
fn member_notice(
    notice_type: &str,
    group_id: i64,
    user_id: i64,
    operator_id: i64,
    sub_type: &str,
) -> Value {
    let time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    json!({
        "time": time, "self_id": 2854196310u64, "post_type": "notice",
        "notice_type": notice_type, "sub_type": sub_type, "group_id": group_id,
        "user_id": user_id, "operator_id": operator_id
    })
}
