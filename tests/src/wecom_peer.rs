//! A scripted WeCom (企业微信) group robot webhook (PROTOCOLS.md §4.1) over real HTTP:
//! `POST /cgi-bin/webhook/send?key=<key>` with a JSON `text` or `markdown` message, answered
//! `{"errcode": 0, "errmsg": "ok"}` (HTTP 200 even for refusals, as WeCom does). It keeps the
//! exact bytes of every request body, checks the key, and can be told to answer the next
//! request with an error code (45009 with a `Retry-After`, 93000, …).
//!
//! Pictures as WeCom takes them: an `image` message is accepted only when its `base64`
//! decodes to a JPG or PNG of at most 2 MB whose MD5 is `md5`; `POST
//! /cgi-bin/webhook/upload_media?key=…&type=file` takes a multipart `media` part (more than
//! 5 bytes, up to 20 MB) and answers a `media_id`, which a `file` message must name.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Multipart, Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::time::Instant;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use md5::{Digest, Md5};

use crate::PATIENCE;

/// One request the robot received.
#[derive(Debug, Clone)]
pub struct Post {
    /// The request body exactly as received.
    pub raw: Vec<u8>,
    /// When it arrived.
    pub at: Instant,
    /// The `errcode` it was answered with.
    pub errcode: i64,
}

impl Post {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.raw).expect("the body is JSON")
    }

    /// `msgtype`.
    pub fn msgtype(&self) -> String {
        self.json()["msgtype"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The decoded bytes of an `image` message.
    pub fn image_bytes(&self) -> Option<Vec<u8>> {
        let json = self.json();
        STANDARD.decode(json["image"]["base64"].as_str()?).ok()
    }

    /// The `media_id` of a `file` message.
    pub fn file_media_id(&self) -> Option<String> {
        self.json()["file"]["media_id"].as_str().map(str::to_owned)
    }

    /// The content of a `text` or `markdown` message.
    pub fn content(&self) -> String {
        let json = self.json();
        let kind = json["msgtype"].as_str().unwrap_or_default().to_owned();
        json[kind]["content"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// An answer scripted by the test.
#[derive(Debug, Clone)]
struct Scripted {
    /// `errcode`.
    errcode: i64,
    /// `errmsg`.
    errmsg: String,
    /// `Retry-After` seconds, if any.
    retry_after: Option<u64>,
}

/// One accepted `upload_media` request.
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

/// The hex MD5 of `bytes`.
pub fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The robot's shared state.
pub struct WecomPeer {
    /// The webhook key the robot accepts.
    key: String,
    /// Every request, in order.
    posts: Mutex<Vec<Post>>,
    /// Answers for the next requests.
    script: Mutex<VecDeque<Scripted>>,
    /// Accepted uploads.
    uploads: Mutex<Vec<Upload>>,
    /// Woken on every request.
    changed: Notify,
}

impl WecomPeer {
    /// Starts a robot on a free port; returns it and its webhook URL.
    pub async fn serve(key: &str) -> (Arc<WecomPeer>, String) {
        let peer = Arc::new(WecomPeer {
            key: key.to_owned(),
            posts: Mutex::new(Vec::new()),
            script: Mutex::new(VecDeque::new()),
            uploads: Mutex::new(Vec::new()),
            changed: Notify::new(),
        });
        let app = Router::new()
            .route("/cgi-bin/webhook/send", post(send))
            .route("/cgi-bin/webhook/upload_media", post(upload_media))
            .layer(DefaultBodyLimit::max(32 * 1024 * 1024))
            .with_state(peer.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind robot");
        let url = format!(
            "http://{}/cgi-bin/webhook/send?key={key}",
            listener.local_addr().expect("addr")
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        (peer, url)
    }

    /// Makes the next request be answered with `errcode` (and `Retry-After`, if given).
    pub fn answer_next(&self, errcode: i64, errmsg: &str, retry_after: Option<u64>) {
        self.script.lock().expect("lock").push_back(Scripted {
            errcode,
            errmsg: errmsg.to_owned(),
            retry_after,
        });
    }

    /// Accepted uploads so far.
    pub fn uploads(&self) -> Vec<Upload> {
        self.uploads.lock().expect("lock").clone()
    }

    /// Every request so far.
    pub fn posts(&self) -> Vec<Post> {
        self.posts.lock().expect("lock").clone()
    }

    /// The requests answered `errcode` 0, in order.
    pub fn accepted(&self) -> Vec<Post> {
        self.posts()
            .into_iter()
            .filter(|p| p.errcode == 0)
            .collect()
    }

    /// Waits until `count` requests were accepted; returns them.
    pub async fn wait_accepted(&self, count: usize) -> Vec<Post> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let notified = self.changed.notified();
            let accepted = self.accepted();
            if accepted.len() >= count {
                return accepted;
            }
            assert!(
                tokio::time::timeout_at(deadline, notified).await.is_ok(),
                "expected {count} accepted posts, saw {}",
                accepted.len()
            );
        }
    }

    /// Waits until `count` requests arrived (whatever they were answered); returns them all.
    pub async fn wait_posts(&self, count: usize) -> Vec<Post> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let notified = self.changed.notified();
            let posts = self.posts();
            if posts.len() >= count {
                return posts;
            }
            assert!(
                tokio::time::timeout_at(deadline, notified).await.is_ok(),
                "expected {count} posts, saw {}",
                posts.len()
            );
        }
    }

    /// Waits until no request came for `quiet`; returns all requests.
    pub async fn settle(&self, quiet: Duration) -> Vec<Post> {
        loop {
            let notified = self.changed.notified();
            if tokio::time::timeout(quiet, notified).await.is_err() {
                return self.posts();
            }
        }
    }
}

/// The webhook endpoint.
async fn send(
    State(peer): State<Arc<WecomPeer>>,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> impl IntoResponse {
    let mut headers = HeaderMap::new();
    let (errcode, errmsg) = if query.get("key") != Some(&peer.key) {
        (
            93000,
            "invalid webhook url, hint: [1718880000_1]".to_owned(),
        )
    } else if let Some(scripted) = peer.script.lock().expect("lock").pop_front() {
        if let Some(seconds) = scripted.retry_after {
            headers.insert("retry-after", seconds.into());
        }
        (scripted.errcode, scripted.errmsg)
    } else {
        match serde_json::from_slice::<Value>(&body) {
            Ok(json) if json["msgtype"] == "text" || json["msgtype"] == "markdown" => {
                (0, "ok".to_owned())
            }
            Ok(json) if json["msgtype"] == "image" => image_verdict(&json),
            Ok(json) if json["msgtype"] == "file" => {
                let known = json["file"]["media_id"].as_str().is_some_and(|id| {
                    peer.uploads
                        .lock()
                        .expect("lock")
                        .iter()
                        .any(|u| u.media_id == id)
                });
                if known {
                    (0, "ok".to_owned())
                } else {
                    (40007, "invalid media_id".to_owned())
                }
            }
            _ => (40008, "invalid message type".to_owned()),
        }
    };
    peer.posts.lock().expect("lock").push(Post {
        raw: body.to_vec(),
        at: Instant::now(),
        errcode,
    });
    peer.changed.notify_waiters();
    (
        headers,
        axum::Json(json!({ "errcode": errcode, "errmsg": errmsg })),
    )
}

/// WeCom's verdict on an `image` message: base64 of a JPG or PNG of at most 2 MB, with the
/// MD5 of the raw bytes.
fn image_verdict(json: &Value) -> (i64, String) {
    let Some(bytes) = json["image"]["base64"]
        .as_str()
        .and_then(|b64| STANDARD.decode(b64).ok())
    else {
        return (40009, "invalid image size".to_owned());
    };
    if json["image"]["md5"].as_str() != Some(md5_hex(&bytes).as_str()) {
        return (301019, "media md5 not match".to_owned());
    }
    let jpeg = bytes.starts_with(&[0xFF, 0xD8, 0xFF]);
    let png = bytes.starts_with(b"\x89PNG\r\n\x1a\n");
    if !(jpeg || png) || bytes.len() > 2 * 1024 * 1024 {
        return (40009, "invalid image size".to_owned());
    }
    (0, "ok".to_owned())
}

/// `upload_media?key=…&type=file|voice`: a multipart `media` part.
async fn upload_media(
    State(peer): State<Arc<WecomPeer>>,
    Query(query): Query<HashMap<String, String>>,
    mut multipart: Multipart,
) -> impl IntoResponse {
    let answer = |errcode: i64, errmsg: &str, media_id: Option<&str>| {
        let mut body = json!({ "errcode": errcode, "errmsg": errmsg });
        if let Some(id) = media_id {
            body["type"] = json!("file");
            body["media_id"] = json!(id);
            body["created_at"] = json!("1718880000");
        }
        axum::Json(body)
    };
    if query.get("key") != Some(&peer.key) {
        return answer(93000, "invalid webhook url", None);
    }
    let kind = query.get("type").cloned().unwrap_or_default();
    if kind != "file" && kind != "voice" {
        return answer(40004, "invalid media type", None);
    }
    let mut media = None;
    while let Ok(Some(field)) = multipart.next_field().await {
        if field.name() == Some("media") {
            let file_name = field.file_name().unwrap_or_default().to_owned();
            let Ok(bytes) = field.bytes().await else {
                return answer(40006, "invalid file size", None);
            };
            media = Some((file_name, bytes.to_vec()));
        }
    }
    let Some((file_name, bytes)) = media else {
        return answer(41005, "media data missing", None);
    };
    if bytes.len() <= 5 || bytes.len() > 20 * 1024 * 1024 || file_name.is_empty() {
        return answer(40006, "invalid file size", None);
    }
    let mut uploads = peer.uploads.lock().expect("lock");
    let media_id = format!("3a8asd892asd8asd-{}", uploads.len() + 1);
    uploads.push(Upload {
        kind,
        file_name,
        bytes,
        media_id: media_id.clone(),
    });
    drop(uploads);
    peer.changed.notify_waiters();
    answer(0, "ok", Some(&media_id))
}
