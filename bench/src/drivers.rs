//! What pushes messages into the daemon and takes them out: `api` clients (HTTP POST in over
//! several connections, the WebSocket out) and scripted OneBot v11 implementations (group
//! message events in, `send_group_msg` out). Every message carries a
//! [`marker`](crate::collector::marker) that the receivers hand to a
//! [`Collector`](crate::collector::Collector).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use qunbridge_tests::onebot11_peer::OneBot11Peer;
use serde_json::{json, Value};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

use crate::collector::{marker, now_ns, Collector};

/// Text after the marker: a short, ordinary group message (no links, so link filtering has
/// nothing to do, as for most chat).
pub const FILLER: &str =
    " 今天的周会改到下午三点，请大家准时参加 / the weekly meeting moves to 3 pm.";

/// A POST that takes longer fails; senders stop when nothing was accepted for this long.
const GIVE_UP: Duration = Duration::from_secs(30);

/// How messages are sent: as fast as the receiver of each send allows, or on a schedule.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// Back to back.
    Saturate,
    /// Message `i` is sent at `start + i / rate` (open loop: a late send does not delay the
    /// next ones).
    Rate(f64),
}

impl Pace {
    /// When message `index` is due, counted from `start`; `None` for back to back.
    fn due(self, start: Instant, index: usize) -> Option<Instant> {
        match self {
            Pace::Saturate => None,
            Pace::Rate(rate) => Some(start + Duration::from_secs_f64(index as f64 / rate)),
        }
    }
}

/// What the senders of a phase managed.
#[derive(Debug, Default, Clone)]
pub struct Sent {
    /// Messages the ingress accepted (`202` for `api`; pushed for OneBot).
    pub accepted: usize,
    /// Messages it refused or that failed, with the first reason (`rejected` included).
    pub failed: usize,
    /// Of `failed`: POSTs answered `503 Service Unavailable` (the daemon shedding load; not
    /// retried).
    pub rejected: usize,
    /// Of `rejected`: answers without a `Retry-After` header.
    pub rejected_without_retry_after: usize,
    /// The sequence numbers (marker `seq`) the ingress accepted, in no particular order.
    pub accepted_seqs: Vec<u64>,
    /// The first failure.
    pub first_error: Option<String>,
    /// When the first message was sent (ns since the origin).
    pub start_ns: u64,
}

/// Posts `count` messages to `api` group `group` over `connections` HTTP connections (each
/// waits for its `202` before the next POST), paced by `pace`.
pub async fn post_messages(
    api: SocketAddr,
    group: &str,
    phase: u32,
    count: usize,
    connections: usize,
    pace: Pace,
) -> Sent {
    let next = Arc::new(AtomicUsize::new(0));
    let url = Arc::new(format!("http://{api}/api/v1/groups/{group}/messages"));
    let start = Instant::now();
    let start_ns = now_ns();
    // When nothing was accepted or refused with a 503 for this long, the senders give up (the
    // daemon is stuck).
    let last_accepted = Arc::new(AtomicU64::new(start_ns));
    let mut workers = Vec::new();
    for _ in 0..connections.max(1) {
        let (next, url, last_accepted) = (next.clone(), url.clone(), last_accepted.clone());
        workers.push(tokio::spawn(async move {
            let mut sent = Sent::default();
            let client = match reqwest::Client::builder()
                .tcp_nodelay(true)
                .pool_max_idle_per_host(1)
                .timeout(GIVE_UP)
                .build()
            {
                Ok(client) => client,
                Err(error) => {
                    sent.first_error = Some(format!("HTTP client: {error}"));
                    return sent;
                }
            };
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= count {
                    return sent;
                }
                if let Some(due) = pace.due(start, index) {
                    tokio::time::sleep_until(due).await;
                }
                let idle = now_ns().saturating_sub(last_accepted.load(Ordering::Relaxed));
                if idle > GIVE_UP.as_nanos() as u64 {
                    sent.first_error.get_or_insert_with(|| {
                        format!("nothing accepted or refused for {GIVE_UP:?}; stopped sending")
                    });
                    return sent;
                }
                let text = format!("{}{FILLER}", marker(phase, index as u64, now_ns()));
                let body = json!({"sender": {"id": "u1", "name": "Ann"}, "text": text});
                let outcome = client
                    .post(url.as_str())
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await;
                match outcome {
                    Ok(response) if response.status() == 202 => {
                        sent.accepted += 1;
                        sent.accepted_seqs.push(index as u64);
                        last_accepted.fetch_max(now_ns(), Ordering::Relaxed);
                    }
                    Ok(response) if response.status() == 503 => {
                        sent.failed += 1;
                        sent.rejected += 1;
                        if !response.headers().contains_key("retry-after") {
                            sent.rejected_without_retry_after += 1;
                        }
                        last_accepted.fetch_max(now_ns(), Ordering::Relaxed);
                        sent.first_error
                            .get_or_insert_with(|| format!("POST answered {}", response.status()));
                    }
                    Ok(response) => {
                        sent.failed += 1;
                        sent.first_error
                            .get_or_insert_with(|| format!("POST answered {}", response.status()));
                    }
                    Err(error) => {
                        sent.failed += 1;
                        sent.first_error
                            .get_or_insert_with(|| format!("POST failed: {error}"));
                    }
                }
            }
        }));
    }
    let mut total = Sent {
        start_ns,
        ..Sent::default()
    };
    for worker in workers {
        match worker.await {
            Ok(sent) => {
                total.accepted += sent.accepted;
                total.failed += sent.failed;
                total.rejected += sent.rejected;
                total.rejected_without_retry_after += sent.rejected_without_retry_after;
                total.accepted_seqs.extend(sent.accepted_seqs);
                if total.first_error.is_none() {
                    total.first_error = sent.first_error;
                }
            }
            Err(error) => {
                total
                    .first_error
                    .get_or_insert(format!("sender task: {error}"));
            }
        }
    }
    total
}

/// Opens the `api` account's WebSocket (`GET /api/v1/ws`) and records every frame.
///
/// # Errors
/// When the WebSocket cannot be opened.
pub async fn open_ws(api: SocketAddr, collector: Arc<Collector>) -> Result<JoinHandle<()>, String> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{api}/api/v1/ws"))
        .await
        .map_err(|e| format!("cannot open ws://{api}/api/v1/ws: {e}"))?;
    Ok(tokio::spawn(async move {
        while let Some(Ok(frame)) = ws.next().await {
            match frame {
                Message::Text(text) => collector.record(text.as_bytes()),
                Message::Binary(bytes) => collector.record(&bytes),
                Message::Close(_) => return,
                _ => {}
            }
        }
    }))
}

/// A OneBot v11 group message event (array format) from a member of `group`.
pub fn group_event(self_id: i64, group: i64, message_id: i64, text: &str) -> String {
    json!({
        "time": now_unix(), "self_id": self_id, "post_type": "message",
        "message_type": "group", "sub_type": "normal", "message_id": message_id,
        "group_id": group, "user_id": 10001, "anonymous": null,
        "message": [{"type": "text", "data": {"text": text}}],
        "raw_message": text, "font": 0,
        "sender": {"user_id": 10001, "nickname": "Alice", "card": "Alice | Ops", "role": "member"}
    })
    .to_string()
}

/// Seconds since the Unix epoch.
fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Message ids for OneBot events, unique within the run.
static MESSAGE_IDS: AtomicI64 = AtomicI64::new(1);

/// Pushes `count` group message events for `group` from `peer`, paced by `pace`.
pub async fn push_events(
    peer: &OneBot11Peer,
    group: i64,
    phase: u32,
    count: usize,
    pace: Pace,
) -> Sent {
    let start = Instant::now();
    let start_ns = now_ns();
    for index in 0..count {
        match pace.due(start, index) {
            Some(due) => tokio::time::sleep_until(due).await,
            // Let the connection task write while the events queue up.
            None if index % 64 == 63 => tokio::task::yield_now().await,
            None => {}
        }
        let text = format!("{}{FILLER}", marker(phase, index as u64, now_ns()));
        let id = MESSAGE_IDS.fetch_add(1, Ordering::Relaxed);
        peer.push(Message::Text(
            group_event(peer.self_id, group, id, &text).into(),
        ));
    }
    Sent {
        accepted: count,
        start_ns,
        ..Sent::default()
    }
}

/// Records the text of every `send_group_msg` the peer receives, until aborted.
pub fn receive_sends(peer: Arc<OneBot11Peer>, collector: Arc<Collector>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let actions = peer
                .take_actions_within("send_group_msg", Duration::from_secs(1))
                .await;
            for action in actions {
                collector.record(action_text(&action).as_bytes());
            }
        }
    })
}

/// The text of a `send_group_msg` (array or CQ-string message).
fn action_text(action: &Value) -> String {
    let message = &action["params"]["message"];
    match message.as_str() {
        Some(text) => text.to_owned(),
        None => message
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["data"]["text"].as_str())
            .collect(),
    }
}

/// Waits until the peer has at least `count` connections, up to `wait`.
pub async fn wait_connected(peer: &OneBot11Peer, count: usize, wait: Duration) -> bool {
    let deadline = Instant::now() + wait;
    while peer.connections() < count {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}
