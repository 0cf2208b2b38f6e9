//! A scripted WeCom (企业微信) group robot webhook (PROTOCOLS.md §4.1) over real HTTP:
//! `POST /cgi-bin/webhook/send?key=<key>` with a JSON `text` or `markdown` message, answered
//! `{"errcode": 0, "errmsg": "ok"}` (HTTP 200 even for refusals, as WeCom does). It keeps the
//! exact bytes of every request body, checks the key, and can be told to answer the next
//! request with an error code (45009 with a `Retry-After`, 93000, …).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::time::Instant;

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

/// The robot's shared state.
pub struct WecomPeer {
    /// The webhook key the robot accepts.
    key: String,
    /// Every request, in order.
    posts: Mutex<Vec<Post>>,
    /// Answers for the next requests.
    script: Mutex<VecDeque<Scripted>>,
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
            changed: Notify::new(),
        });
        let app = Router::new()
            .route("/cgi-bin/webhook/send", post(send))
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
