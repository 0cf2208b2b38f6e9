//! A scripted DingTalk for the end-to-end tests, over real HTTP (axum) and a real WebSocket
//! gateway (tokio-tungstenite), behaving as PROTOCOLS.md §3 describes the platform:
//!
//! - `POST /v1.0/gateway/connections/open` checks the app credentials and the
//!   `Accept: application/json` header (without it: an XML answer), and hands out a
//!   single-use ticket (with `+ / =` in it, so URL-encoding mistakes show) for the gateway.
//! - The gateway accepts a WebSocket only with an unused ticket, then lets the test send
//!   CALLBACK, EVENT (group events such as `chat_add_member`), SYSTEM `ping` and `disconnect`
//!   frames or garbage, drop the socket, and records every frame the client sends back (ACKs,
//!   pongs). `connections/open` refuses an EVENT subscription on a topic other than `*`, and
//!   the subscription list of each request is kept.
//! - `POST /v1.0/oauth2/accessToken` issues tokens; tokens can be revoked to make the next
//!   call fail as an expired token does (HTTP 400 `InvalidAuthentication`).
//! - `POST /v1.0/robot/groupMessages/send` and `/v1.0/robot/messageFiles/download` check the
//!   token header and the body and record what they got.
//! - `POST /media/upload?access_token=…&type=image` (the `oapi` host; the peer serves both)
//!   takes a multipart `media` part as DingTalk does (jpg/gif/png/bmp, up to 20 MB), records
//!   each upload and answers a fresh `media_id`; a group send of `sampleImageMsg` must name
//!   an uploaded id as `photoURL` `@<media_id>`.
//! - `POST /robot/send` is a custom robot webhook: it verifies `timestamp` and `sign` exactly
//!   as DingTalk does (HMAC-SHA256 of `timestamp\nsecret`, base64, URL-decoded from the
//!   query), takes `text` and `markdown` messages, checks the keyword, and can be told to
//!   answer `130101` or `310000` next.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Multipart, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::handshake::server::{
    ErrorResponse, Request, Response as WsResponse,
};
use tokio_tungstenite::tungstenite::Message;

use crate::PATIENCE;

/// The app's Client ID the peer accepts.
pub const CLIENT_ID: &str = "dingtestapp01";
/// The app's Client Secret the peer accepts.
pub const CLIENT_SECRET: &str = "app-s3cret";
/// Topic of bot messages.
pub const BOT_TOPIC: &str = "/v1.0/im/bot/messages/get";
/// The only topic of an EVENT subscription.
pub const EVENT_TOPIC: &str = "*";
/// Largest `msgParam` DingTalk accepts.
pub const MAX_MSG_PARAM: usize = 15_000;

/// A custom robot the webhook endpoint knows.
#[derive(Debug, Clone)]
pub struct Robot {
    /// Its `access_token` query value.
    pub access_token: String,
    /// Its signing secret, when signing is on.
    pub secret: Option<String>,
    /// Its keyword, when the keyword rule is on.
    pub keyword: Option<String>,
}

/// One `connections/open` request.
#[derive(Debug, Clone)]
pub struct OpenRequest {
    /// The `Accept` header sent.
    pub accept: Option<String>,
    /// The JSON body.
    pub body: Value,
}

/// One `groupMessages/send` request.
#[derive(Debug, Clone)]
pub struct GroupSend {
    /// The `x-acs-dingtalk-access-token` header.
    pub token: Option<String>,
    /// The JSON body.
    pub body: Value,
    /// Whether the peer accepted it.
    pub accepted: bool,
}

impl GroupSend {
    /// `msgParam.content`, decoded from its JSON string.
    pub fn content(&self) -> Option<String> {
        let param: Value = serde_json::from_str(self.body["msgParam"].as_str()?).ok()?;
        param["content"].as_str().map(str::to_owned)
    }

    /// `msgParam.photoURL` of a `sampleImageMsg`, decoded from its JSON string.
    pub fn photo_url(&self) -> Option<String> {
        if self.body["msgKey"] != "sampleImageMsg" {
            return None;
        }
        let param: Value = serde_json::from_str(self.body["msgParam"].as_str()?).ok()?;
        param["photoURL"].as_str().map(str::to_owned)
    }

    /// `openConversationId`.
    pub fn group(&self) -> String {
        self.body["openConversationId"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// One `media/upload` request the peer accepted.
#[derive(Debug, Clone)]
pub struct Upload {
    /// The `type` query value.
    pub kind: String,
    /// The file name of the `media` part.
    pub file_name: String,
    /// The bytes uploaded.
    pub bytes: Vec<u8>,
    /// The `media_id` answered.
    pub media_id: String,
}

/// One webhook POST.
#[derive(Debug, Clone)]
pub struct WebhookPost {
    /// The robot's `access_token`.
    pub access_token: String,
    /// True when `timestamp` and `sign` were present and correct (or the robot signs nothing).
    pub sign_valid: bool,
    /// `msgtype`.
    pub msgtype: String,
    /// `text.content`, or `markdown.text` of a markdown message.
    pub content: String,
    /// The errcode answered.
    pub errcode: i64,
    /// When it arrived.
    pub at: Instant,
}

/// An answer the webhook gives instead of its normal verdict.
#[derive(Debug, Clone)]
struct Scripted {
    /// errcode to answer.
    errcode: i64,
    /// errmsg to answer.
    errmsg: String,
    /// `Retry-After` seconds to add, if any.
    retry_after: Option<u64>,
}

/// What the peer saw, shared by its handlers.
#[derive(Default)]
struct Log {
    /// `connections/open` requests.
    opens: Vec<OpenRequest>,
    /// Tickets handed out and not yet used.
    unused_tickets: HashSet<String>,
    /// WebSocket handshakes refused (bad or reused ticket).
    refused_handshakes: usize,
    /// Access tokens issued, in order.
    tokens: Vec<String>,
    /// Tokens currently accepted.
    valid_tokens: HashSet<String>,
    /// Group sends.
    group_sends: Vec<GroupSend>,
    /// Download requests: (token, body).
    downloads: Vec<(Option<String>, Value)>,
    /// How long each download request waits before its answer (a slow DingTalk).
    download_delay: Duration,
    /// The download codes of the requests being answered now.
    downloads_in_flight: Vec<String>,
    /// Download requests answered so far.
    downloads_answered: usize,
    /// For each download request, the codes being answered as it started (itself included),
    /// so a test can ask how many of the codes it cares about were open together (another
    /// destination's late resolution of an unrelated code must not count).
    downloads_open_at_start: Vec<Vec<String>>,
    /// Webhook posts.
    webhook_posts: Vec<WebhookPost>,
    /// Accepted `media/upload` requests.
    uploads: Vec<Upload>,
    /// `media/upload` requests, accepted or not.
    upload_calls: usize,
    /// Where download URLs point (`None`: `https://files.dingtalk.test`).
    download_base: Option<String>,
    /// Refuse every upload (as DingTalk refuses a file it does not take).
    refuse_uploads: bool,
    /// Scripted answers per robot token.
    scripted: HashMap<String, VecDeque<Scripted>>,
    /// Every frame clients sent back over the gateway, as JSON.
    replies: Vec<Value>,
    /// Gateway connections accepted so far.
    connections: usize,
}

/// State of the peer.
struct Shared {
    /// The gateway's address, for `connections/open` answers.
    gateway: SocketAddr,
    /// Known robots.
    robots: Vec<Robot>,
    /// Everything recorded.
    log: Mutex<Log>,
    /// Counter for tickets, tokens and keys.
    counter: AtomicU64,
    /// New gateway connections for the test to drive.
    connections: mpsc::UnboundedSender<GatewayConnection>,
}

impl Shared {
    /// Runs `f` on the log.
    fn with<T>(&self, f: impl FnOnce(&mut Log) -> T) -> T {
        f(&mut self.log.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// A fresh number.
    fn next(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// The running peer; its servers stop when it is dropped.
pub struct DingTalkPeer {
    /// The HTTP server's address (OpenAPI and webhook).
    pub http: SocketAddr,
    /// The WebSocket gateway's address.
    pub gateway: SocketAddr,
    /// Shared state.
    shared: Arc<Shared>,
    /// Gateway connections not yet taken by the test.
    connections: tokio::sync::Mutex<mpsc::UnboundedReceiver<GatewayConnection>>,
    /// Server tasks.
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for DingTalkPeer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// DingTalk's signature of a webhook request.
pub fn sign(secret: &str, timestamp: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(format!("{timestamp}\n{secret}").as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Milliseconds since the epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// An OpenAPI error answer.
fn api_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"code": code, "message": message, "requestid": "peer"})),
    )
        .into_response()
}

/// The access token header.
fn token_header(headers: &HeaderMap) -> Option<String> {
    headers
        .get("x-acs-dingtalk-access-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

impl DingTalkPeer {
    /// Starts the peer with the given custom robots.
    pub async fn start(robots: Vec<Robot>) -> DingTalkPeer {
        let http_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind http");
        let gateway_listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind gateway");
        let http = http_listener.local_addr().expect("addr");
        let gateway = gateway_listener.local_addr().expect("addr");
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            gateway,
            robots,
            log: Mutex::new(Log::default()),
            counter: AtomicU64::new(0),
            connections: tx,
        });
        let app = Router::new()
            .route("/v1.0/gateway/connections/open", post(open_connection))
            .route("/v1.0/oauth2/accessToken", post(access_token))
            .route("/v1.0/robot/groupMessages/send", post(group_send))
            .route("/v1.0/robot/messageFiles/download", post(download))
            .route("/media/upload", post(media_upload))
            .route("/robot/send", post(webhook))
            .layer(DefaultBodyLimit::max(32 * 1024 * 1024))
            .with_state(shared.clone());
        let http_task = tokio::spawn(async move {
            let _ = axum::serve(http_listener, app).await;
        });
        let gateway_task = tokio::spawn(serve_gateway(gateway_listener, shared.clone()));
        DingTalkPeer {
            http,
            gateway,
            shared,
            connections: tokio::sync::Mutex::new(rx),
            tasks: vec![http_task, gateway_task],
        }
    }

    /// The `api_base` to configure.
    pub fn api_base(&self) -> String {
        format!("http://{}", self.http)
    }

    /// The webhook URL of a robot.
    pub fn webhook_url(&self, access_token: &str) -> String {
        format!(
            "http://{}/robot/send?access_token={access_token}",
            self.http
        )
    }

    /// The URL the peer gives for a picture's download code (by default).
    pub fn download_url_for(code: &str) -> String {
        format!("https://files.dingtalk.test/{code}.png")
    }

    /// Makes download URLs point to `base` (`<base>/<code>.png`), such as a file server.
    pub fn serve_downloads_from(&self, base: &str) {
        let base = base.trim_end_matches('/').to_owned();
        self.shared.with(|log| log.download_base = Some(base));
    }

    /// Makes every `media/upload` be refused (errcode 40005) or accepted again.
    pub fn refuse_uploads(&self, refuse: bool) {
        self.shared.with(|log| log.refuse_uploads = refuse);
    }

    /// Accepted `media/upload` requests so far.
    pub fn uploads(&self) -> Vec<Upload> {
        self.shared.with(|log| log.uploads.clone())
    }

    /// `media/upload` requests so far, accepted or not.
    pub fn upload_calls(&self) -> usize {
        self.shared.with(|log| log.upload_calls)
    }

    /// The next gateway connection the client opened, within [`PATIENCE`].
    pub async fn next_connection(&self) -> GatewayConnection {
        let mut rx = self.connections.lock().await;
        tokio::time::timeout(PATIENCE, rx.recv())
            .await
            .expect("the client opens a gateway connection in time")
            .expect("gateway running")
    }

    /// A gateway connection opened within `wait`, if any.
    pub async fn connection_within(&self, wait: Duration) -> Option<GatewayConnection> {
        let mut rx = self.connections.lock().await;
        tokio::time::timeout(wait, rx.recv()).await.ok().flatten()
    }

    /// Makes the next webhook POST of a robot answer `errcode` (with `Retry-After` seconds).
    pub fn script_webhook(
        &self,
        access_token: &str,
        errcode: i64,
        errmsg: &str,
        retry_after: Option<u64>,
    ) {
        self.shared.with(|log| {
            log.scripted
                .entry(access_token.to_owned())
                .or_default()
                .push_back(Scripted {
                    errcode,
                    errmsg: errmsg.to_owned(),
                    retry_after,
                })
        });
    }

    /// Makes every issued access token invalid (as if expired).
    pub fn revoke_tokens(&self) {
        self.shared.with(|log| log.valid_tokens.clear());
    }

    /// The `subscriptions` list of the latest `connections/open` request, as sent
    /// (`Value::Null` before any request).
    pub fn subscriptions(&self) -> Value {
        self.shared.with(|log| {
            log.opens
                .last()
                .map(|open| open.body["subscriptions"].clone())
                .unwrap_or(Value::Null)
        })
    }

    /// `connections/open` requests so far.
    pub fn opens(&self) -> Vec<OpenRequest> {
        self.shared.with(|log| log.opens.clone())
    }

    /// Access tokens issued so far.
    pub fn tokens(&self) -> Vec<String> {
        self.shared.with(|log| log.tokens.clone())
    }

    /// Gateway handshakes refused so far.
    pub fn refused_handshakes(&self) -> usize {
        self.shared.with(|log| log.refused_handshakes)
    }

    /// Gateway connections accepted so far.
    pub fn connections(&self) -> usize {
        self.shared.with(|log| log.connections)
    }

    /// Group sends so far.
    pub fn group_sends(&self) -> Vec<GroupSend> {
        self.shared.with(|log| log.group_sends.clone())
    }

    /// Download requests so far: (token header, body).
    pub fn downloads(&self) -> Vec<(Option<String>, Value)> {
        self.shared.with(|log| log.downloads.clone())
    }

    /// Download requests answered so far.
    pub fn downloads_answered(&self) -> usize {
        self.shared.with(|log| log.downloads_answered)
    }

    /// Makes each download request wait `delay` before its answer.
    pub fn delay_downloads(&self, delay: Duration) {
        self.shared.with(|log| log.download_delay = delay);
    }

    /// The most download requests for one of `codes` that were being answered at one time.
    pub fn most_downloads_at_once(&self, codes: &[&str]) -> usize {
        self.shared.with(|log| {
            log.downloads_open_at_start
                .iter()
                .map(|open| {
                    open.iter()
                        .filter(|code| codes.contains(&code.as_str()))
                        .count()
                })
                .max()
                .unwrap_or(0)
        })
    }

    /// Webhook posts so far.
    pub fn webhook_posts(&self) -> Vec<WebhookPost> {
        self.shared.with(|log| log.webhook_posts.clone())
    }

    /// Frames clients sent back so far.
    pub fn replies(&self) -> Vec<Value> {
        self.shared.with(|log| log.replies.clone())
    }

    /// Polls `probe` until it returns something, failing the test after [`PATIENCE`].
    pub async fn wait_for<T>(&self, what: &str, probe: impl Fn(&DingTalkPeer) -> Option<T>) -> T {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(found) = probe(self) {
                return found;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The reply frames naming `message_id`, once there are at least `count`.
    pub async fn wait_replies(&self, message_id: &str, count: usize) -> Vec<Value> {
        self.wait_for(&format!("{count} replies to {message_id}"), |peer| {
            let found: Vec<Value> = peer
                .replies()
                .into_iter()
                .filter(|r| r["headers"]["messageId"] == message_id)
                .collect();
            (found.len() >= count).then_some(found)
        })
        .await
    }

    /// The first group send whose content satisfies `wanted` and that was accepted.
    pub async fn wait_group_send(&self, wanted: impl Fn(&str) -> bool) -> GroupSend {
        self.wait_for("an accepted group send", |peer| {
            peer.group_sends()
                .into_iter()
                .find(|s| s.accepted && s.content().is_some_and(|c| wanted(&c)))
        })
        .await
    }

    /// The first webhook post whose content satisfies `wanted` and that was answered `errcode`.
    pub async fn wait_webhook_post(
        &self,
        errcode: i64,
        wanted: impl Fn(&str) -> bool,
    ) -> WebhookPost {
        self.wait_for(&format!("a webhook post answered {errcode}"), |peer| {
            peer.webhook_posts()
                .into_iter()
                .find(|p| p.errcode == errcode && wanted(&p.content))
        })
        .await
    }
}

/// `POST /v1.0/gateway/connections/open`.
async fn open_connection(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    shared.with(|log| {
        log.opens.push(OpenRequest {
            accept: accept.clone(),
            body: body.clone(),
        })
    });
    if !accept
        .as_deref()
        .is_some_and(|a| a.contains("application/json"))
    {
        // What the Node SDK warns about: without the header the answer may be XML.
        return (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/xml")],
            "<OpenConnectionResponse><endpoint>x</endpoint></OpenConnectionResponse>",
        )
            .into_response();
    }
    if body["clientId"] != CLIENT_ID || body["clientSecret"] != CLIENT_SECRET {
        return api_error(
            StatusCode::UNAUTHORIZED,
            "InvalidAuthentication",
            "clientId or clientSecret is invalid",
        );
    }
    let subscribed = body["subscriptions"].as_array().is_some_and(|subs| {
        subs.iter()
            .any(|s| s["type"] == "CALLBACK" && s["topic"] == BOT_TOPIC)
    });
    // "EVENT only supports topic `*`" (PROTOCOLS.md §3.1).
    let events_valid = body["subscriptions"].as_array().is_some_and(|subs| {
        subs.iter()
            .filter(|s| s["type"] == "EVENT")
            .all(|s| s["topic"] == EVENT_TOPIC)
    });
    if !subscribed || !events_valid {
        return api_error(
            StatusCode::BAD_REQUEST,
            "invalidParameter",
            "no subscriptions",
        );
    }
    let n = shared.next();
    let ticket = format!("tk+{n}/{}=", now_ms());
    shared.with(|log| log.unused_tickets.insert(ticket.clone()));
    Json(json!({"endpoint": format!("ws://{}/connect", shared.gateway), "ticket": ticket}))
        .into_response()
}

/// `POST /v1.0/oauth2/accessToken`.
async fn access_token(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if body["appKey"] != CLIENT_ID || body["appSecret"] != CLIENT_SECRET {
        return api_error(
            StatusCode::BAD_REQUEST,
            "invalidClientSecret",
            "appSecret is wrong",
        );
    }
    let token = format!("at-{}", shared.next());
    shared.with(|log| {
        log.tokens.push(token.clone());
        log.valid_tokens.insert(token.clone());
    });
    Json(json!({"accessToken": token, "expireIn": 7200})).into_response()
}

/// True when the request carries a valid access token.
fn token_ok(shared: &Shared, token: Option<&str>) -> bool {
    token.is_some_and(|t| shared.with(|log| log.valid_tokens.contains(t)))
}

/// `POST /v1.0/robot/groupMessages/send`.
async fn group_send(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = token_header(&headers);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let record = |accepted: bool| {
        shared.with(|log| {
            log.group_sends.push(GroupSend {
                token: token.clone(),
                body: body.clone(),
                accepted,
            })
        })
    };
    if !token_ok(&shared, token.as_deref()) {
        record(false);
        return api_error(
            StatusCode::BAD_REQUEST,
            "InvalidAuthentication",
            "不合法的access_token",
        );
    }
    let uploaded = shared.with(|log| {
        log.uploads
            .iter()
            .map(|u| format!("@{}", u.media_id))
            .collect::<HashSet<String>>()
    });
    let param_ok = body["msgParam"].as_str().is_some_and(|p| {
        p.len() <= MAX_MSG_PARAM
            && serde_json::from_str::<Value>(p).is_ok_and(|v| match body["msgKey"].as_str() {
                Some("sampleText") => v["content"].is_string(),
                // A media id only this robot uploaded, or a public URL.
                Some("sampleImageMsg") => v["photoURL"]
                    .as_str()
                    .is_some_and(|url| uploaded.contains(url) || url.starts_with("https://")),
                _ => false,
            })
    });
    let valid = body["robotCode"] == CLIENT_ID
        && body["openConversationId"]
            .as_str()
            .is_some_and(|c| !c.is_empty())
        && param_ok;
    record(valid);
    if !valid {
        return api_error(
            StatusCode::BAD_REQUEST,
            "invalidParameter",
            "bad group send",
        );
    }
    Json(json!({"processQueryKey": format!("pqk-{}", shared.next())})).into_response()
}

/// `POST /v1.0/robot/messageFiles/download`.
async fn download(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let token = token_header(&headers);
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let code = body["downloadCode"].as_str().unwrap_or_default().to_owned();
    let delay = shared.with(|log| {
        log.downloads.push((token.clone(), body.clone()));
        log.downloads_in_flight.push(code.clone());
        let open = log.downloads_in_flight.clone();
        log.downloads_open_at_start.push(open);
        log.download_delay
    });
    tokio::time::sleep(delay).await;
    shared.with(|log| {
        if let Some(at) = log
            .downloads_in_flight
            .iter()
            .position(|open| *open == code)
        {
            log.downloads_in_flight.swap_remove(at);
        }
        log.downloads_answered += 1;
    });
    if !token_ok(&shared, token.as_deref()) {
        return api_error(
            StatusCode::BAD_REQUEST,
            "InvalidAuthentication",
            "不合法的access_token",
        );
    }
    match body["downloadCode"].as_str() {
        Some(code) if code.starts_with("dc-") && body["robotCode"] == CLIENT_ID => {
            let url = match shared.with(|log| log.download_base.clone()) {
                Some(base) => format!("{base}/{code}.png"),
                None => DingTalkPeer::download_url_for(code),
            };
            Json(json!({"downloadUrl": url})).into_response()
        }
        _ => api_error(
            StatusCode::BAD_REQUEST,
            "invalidParameter",
            "downloadCode is invalid",
        ),
    }
}

/// `POST /media/upload?access_token=…&type=image`: the `oapi` upload (errcode answers with
/// HTTP 200, as `oapi` does).
async fn media_upload(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    mut multipart: Multipart,
) -> Response {
    shared.with(|log| log.upload_calls += 1);
    let oapi_error = |errcode: i64, errmsg: &str| {
        Json(json!({"errcode": errcode, "errmsg": errmsg})).into_response()
    };
    if !token_ok(&shared, query.get("access_token").map(String::as_str)) {
        return oapi_error(40014, "不合法的access_token");
    }
    let kind = query.get("type").cloned().unwrap_or_default();
    if kind != "image" {
        return oapi_error(40004, "不合法的媒体文件类型");
    }
    let mut media = None;
    while let Ok(Some(field)) = multipart.next_field().await {
        if field.name() == Some("media") {
            let file_name = field.file_name().unwrap_or_default().to_owned();
            let Ok(bytes) = field.bytes().await else {
                return oapi_error(40005, "不合法的文件类型");
            };
            media = Some((file_name, bytes.to_vec()));
        }
    }
    let Some((file_name, bytes)) = media else {
        return oapi_error(41005, "缺少多媒体文件数据");
    };
    let extension_ok = [".jpg", ".jpeg", ".gif", ".png", ".bmp"]
        .iter()
        .any(|ext| file_name.to_ascii_lowercase().ends_with(ext));
    if !extension_ok
        || shared.with(|log| log.refuse_uploads)
        || bytes.is_empty()
        || bytes.len() > 20 * 1024 * 1024
    {
        return oapi_error(40005, "不合法的文件类型");
    }
    let media_id = format!("lAD-media-{}", shared.next());
    shared.with(|log| {
        log.uploads.push(Upload {
            kind,
            file_name,
            bytes,
            media_id: media_id.clone(),
        })
    });
    Json(json!({"errcode": 0, "errmsg": "ok", "type": "image", "media_id": media_id, "created_at": now_ms()}))
        .into_response()
}

/// `POST /robot/send?access_token=…[&timestamp=…&sign=…]`: a custom robot.
async fn webhook(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let msgtype = body["msgtype"].as_str().unwrap_or_default().to_owned();
    let content = match msgtype.as_str() {
        "markdown" => body["markdown"]["text"].as_str(),
        _ => body["text"]["content"].as_str(),
    }
    .unwrap_or_default()
    .to_owned();
    let access_token = query.get("access_token").cloned().unwrap_or_default();
    let answer = |errcode: i64, errmsg: &str, sign_valid: bool, retry_after: Option<u64>| {
        shared.with(|log| {
            log.webhook_posts.push(WebhookPost {
                access_token: access_token.clone(),
                sign_valid,
                msgtype: msgtype.clone(),
                content: content.clone(),
                errcode,
                at: Instant::now(),
            })
        });
        let mut response = Json(json!({"errcode": errcode, "errmsg": errmsg})).into_response();
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                seconds.to_string().parse().expect("header value"),
            );
        }
        response
    };
    let Some(robot) = shared
        .robots
        .iter()
        .find(|r| r.access_token == access_token)
    else {
        return answer(300001, "token is not exist", false, None);
    };
    let sign_valid = match &robot.secret {
        None => true,
        Some(secret) => match (query.get("timestamp"), query.get("sign")) {
            (Some(timestamp), Some(signature)) => {
                let fresh = timestamp
                    .parse::<u64>()
                    .is_ok_and(|ts| ts.abs_diff(now_ms()) < 3_600_000);
                // The query was URL-decoded by the extractor, as DingTalk decodes it.
                fresh && *signature == sign(secret, timestamp)
            }
            _ => false,
        },
    };
    if !sign_valid {
        return answer(
            310000,
            "sign not match, more: [https://ding-doc.dingtalk.com/doc#/serverapi2/qf2nxq]",
            false,
            None,
        );
    }
    let markdown_ok = msgtype == "markdown"
        && body["markdown"]["title"].is_string()
        && body["markdown"]["text"].is_string();
    if msgtype != "text" && !markdown_ok {
        return answer(40035, "缺少参数 json", true, None);
    }
    if let Some(keyword) = &robot.keyword {
        if !content.contains(keyword.as_str()) {
            return answer(
                310000,
                "keywords not in content, more: [https://ding-doc.dingtalk.com]",
                true,
                None,
            );
        }
    }
    let scripted = shared.with(|log| {
        log.scripted
            .get_mut(&access_token)
            .and_then(VecDeque::pop_front)
    });
    match scripted {
        Some(s) => answer(s.errcode, &s.errmsg, true, s.retry_after),
        None => answer(0, "ok", true, None),
    }
}

/// What the test can make a gateway connection do.
#[derive(Debug)]
enum Command {
    /// Send a text frame.
    Text(String),
    /// Send a binary frame.
    Binary(Vec<u8>),
    /// Drop the socket without a close handshake.
    Drop,
}

/// One WebSocket connection a client opened to the gateway.
pub struct GatewayConnection {
    /// The ticket it connected with.
    pub ticket: String,
    /// 1 for the first connection, and so on.
    pub number: usize,
    /// Commands to its task.
    commands: mpsc::UnboundedSender<Command>,
    /// The peer's state: fresh frame ids.
    shared: Arc<Shared>,
}

impl GatewayConnection {
    /// Sends a raw text frame.
    pub fn send_text(&self, text: &str) {
        let _ = self.commands.send(Command::Text(text.to_owned()));
    }

    /// Sends a binary frame.
    pub fn send_binary(&self, bytes: &[u8]) {
        let _ = self.commands.send(Command::Binary(bytes.to_vec()));
    }

    /// A fresh frame `messageId`.
    pub fn fresh_id(&self) -> String {
        format!("{:x}_0_{:x}_{}", self.shared.next(), now_ms(), self.number)
    }

    /// Sends a frame of `kind` on `topic` with `data` (already a JSON string value) and
    /// message id `message_id`.
    pub fn send_frame(&self, kind: &str, topic: &str, message_id: &str, data: Value) {
        let frame = json!({
            "specVersion": "1.0",
            "type": kind,
            "headers": {
                "appId": "peer-app", "connectionId": format!("c-{}", self.number),
                "contentType": "application/json", "messageId": message_id,
                "time": now_ms().to_string(), "topic": topic
            },
            "data": data,
        });
        self.send_text(&frame.to_string());
    }

    /// Sends a bot message CALLBACK with the given frame id; `payload` is JSON-encoded into
    /// the `data` string as the platform does.
    pub fn callback_with_id(&self, message_id: &str, payload: &Value) {
        self.send_frame(
            "CALLBACK",
            BOT_TOPIC,
            message_id,
            Value::String(payload.to_string()),
        );
    }

    /// Sends a bot message CALLBACK; returns its frame id.
    pub fn callback(&self, payload: &Value) -> String {
        let id = self.fresh_id();
        self.callback_with_id(&id, payload);
        id
    }

    /// Sends an EVENT frame of `event_type` (headers `eventType`, `eventId`, `eventCorpId`,
    /// `eventBornTime`, `eventUnifiedAppId` as DingTalk sets them) with frame id
    /// `message_id` and event id `event_id`; `data` is JSON-encoded into the `data` string.
    pub fn event_with_ids(
        &self,
        message_id: &str,
        event_id: &str,
        event_type: &str,
        born_ms: u64,
        data: &Value,
    ) {
        let frame = json!({
            "specVersion": "1.0",
            "type": "EVENT",
            "headers": {
                "appId": "peer-app", "connectionId": format!("c-{}", self.number),
                "contentType": "application/json", "messageId": message_id,
                "time": now_ms().to_string(), "topic": EVENT_TOPIC,
                "eventType": event_type, "eventId": event_id, "eventCorpId": "ding3f",
                "eventBornTime": born_ms.to_string(), "eventUnifiedAppId": "peer-unified-app"
            },
            "data": data.to_string(),
        });
        self.send_text(&frame.to_string());
    }

    /// Sends an EVENT frame of `event_type` born now, with fresh frame and event ids;
    /// returns the frame id (what its ACK names).
    pub fn event(&self, event_type: &str, data: &Value) -> String {
        let id = self.fresh_id();
        self.event_with_ids(&id, &format!("ev-{id}"), event_type, now_ms(), data);
        id
    }

    /// Sends a SYSTEM ping; returns its frame id and data string.
    pub fn ping(&self, opaque: &str) -> (String, String) {
        let id = self.fresh_id();
        let data = json!({ "opaque": opaque }).to_string();
        self.send_frame("SYSTEM", "ping", &id, Value::String(data.clone()));
        (id, data)
    }

    /// Sends a SYSTEM disconnect.
    pub fn system_disconnect(&self) {
        let id = self.fresh_id();
        self.send_frame(
            "SYSTEM",
            "disconnect",
            &id,
            Value::String(json!({"reason": "connection is expired"}).to_string()),
        );
    }

    /// Drops the TCP connection without a WebSocket close.
    pub fn drop_socket(&self) {
        let _ = self.commands.send(Command::Drop);
    }
}

/// The data of a `chat_add_member` event (MEMBERS.md §2.5): `users` added to
/// `open_conversation_id` by `operator`.
pub fn add_member_event(open_conversation_id: &str, users: &[&str], operator: &str) -> Value {
    json!({
        "openConversationId": open_conversation_id, "chatId": "chat-peer",
        "userId": users, "unionId": users.iter().map(|u| format!("union-{u}")).collect::<Vec<_>>(),
        "operator": operator, "operatorUnionId": format!("union-{operator}"),
        "timeStamp": now_ms()
    })
}

/// A bot message payload (PROTOCOLS.md §3.5) in a group, with `msgtype` fields in `extra`.
pub fn bot_message(conversation_id: &str, msg_id: &str, nick: &str, extra: Value) -> Value {
    let mut payload = json!({
        "conversationId": conversation_id, "conversationType": "2",
        "conversationTitle": "Ops 联调群", "msgId": msg_id,
        "senderNick": nick, "senderId": "$:LWCP_v1:$p9Q", "senderStaffId": "0127331564",
        "senderCorpId": "ding3f", "chatbotCorpId": "ding3f", "chatbotUserId": "$:LWCP_v1:$aa1",
        "robotCode": CLIENT_ID, "isAdmin": false, "isInAtList": true,
        "atUsers": [{"dingtalkId": "$:LWCP_v1:$aa1"}],
        "createAt": now_ms(),
        "sessionWebhook": "https://oapi.dingtalk.com/robot/sendBySession?session=f3e1",
        "sessionWebhookExpiredTime": now_ms() + 5_400_000
    });
    if let (Some(target), Value::Object(extra)) = (payload.as_object_mut(), extra) {
        target.extend(extra);
    }
    payload
}

/// A text bot message; `content` as DingTalk delivers it (with the space the @ leaves).
pub fn text_message(conversation_id: &str, msg_id: &str, nick: &str, content: &str) -> Value {
    bot_message(
        conversation_id,
        msg_id,
        nick,
        json!({"msgtype": "text", "text": {"content": content}}),
    )
}

/// A picture bot message.
pub fn picture_message(conversation_id: &str, msg_id: &str, nick: &str, code: &str) -> Value {
    bot_message(
        conversation_id,
        msg_id,
        nick,
        json!({"msgtype": "picture", "content": {"downloadCode": code}}),
    )
}

/// A rich-text bot message: `text` followed by a picture for each download code.
pub fn rich_text_message(
    conversation_id: &str,
    msg_id: &str,
    nick: &str,
    text: &str,
    codes: &[&str],
) -> Value {
    let mut items = vec![json!({"text": text})];
    items.extend(
        codes
            .iter()
            .map(|code| json!({"downloadCode": code, "type": "picture"})),
    );
    bot_message(
        conversation_id,
        msg_id,
        nick,
        json!({"msgtype": "richText", "content": {"richText": items}}),
    )
}

/// Accepts gateway connections until the peer is dropped.
// The handshake callback's error type is tungstenite's `ErrorResponse`, large by its design.
#[allow(clippy::result_large_err)]
async fn serve_gateway(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let ticket_seen = Arc::new(Mutex::new(None::<String>));
            let seen = ticket_seen.clone();
            let check = shared.clone();
            let callback = move |request: &Request,
                                 response: WsResponse|
                  -> Result<WsResponse, ErrorResponse> {
                let url = reqwest::Url::parse(&format!("ws://gateway{}", request.uri()))
                    .map_err(|_| refuse("bad request"))?;
                let ticket = url
                    .query_pairs()
                    .find(|(k, _)| k == "ticket")
                    .map(|(_, v)| v.into_owned())
                    .ok_or_else(|| refuse("no ticket"))?;
                let fresh = check.with(|log| log.unused_tickets.remove(&ticket));
                if !fresh || url.path() != "/connect" {
                    check.with(|log| log.refused_handshakes += 1);
                    return Err(refuse("invalid or used ticket"));
                }
                *seen.lock().unwrap_or_else(PoisonError::into_inner) = Some(ticket);
                Ok(response)
            };
            let Ok(socket) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
                return;
            };
            let ticket = ticket_seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
                .unwrap_or_default();
            let number = shared.with(|log| {
                log.connections += 1;
                log.connections
            });
            let (commands, mut commands_rx) = mpsc::unbounded_channel();
            let _ = shared.connections.send(GatewayConnection {
                ticket,
                number,
                commands,
                shared: shared.clone(),
            });
            let (mut sink, mut stream) = socket.split();
            let mut commands_open = true;
            loop {
                tokio::select! {
                    command = commands_rx.recv(), if commands_open => match command {
                        Some(Command::Text(text)) => {
                            if sink.send(Message::text(text)).await.is_err() { return; }
                        }
                        Some(Command::Binary(bytes)) => {
                            if sink.send(Message::binary(bytes)).await.is_err() { return; }
                        }
                        Some(Command::Drop) => return,
                        None => commands_open = false,
                    },
                    incoming = stream.next() => match incoming {
                        Some(Ok(Message::Text(text))) => {
                            let value: Value = serde_json::from_str(text.as_str())
                                .unwrap_or_else(|_| Value::String(text.as_str().to_owned()));
                            shared.with(|log| log.replies.push(value));
                        }
                        Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                        Some(Ok(_)) => {}
                    },
                }
            }
        });
    }
}

/// A refused WebSocket handshake.
fn refuse(reason: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(reason.to_owned()));
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    response
}
