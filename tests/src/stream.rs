//! A stream of numbered messages through the `api` connector, and what arrived of it: the
//! producer and consumer of the fault and scale-out tests.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;

use crate::SseClient;

/// Posts message `n` until the daemon answers 202 (the same client id each time, so a post
/// whose answer was lost is not relayed twice).
pub async fn post_until_accepted(client: &reqwest::Client, api: SocketAddr, n: usize) {
    let body = json!({"id": format!("m{n:05}"), "sender": {"id": "u1", "name": "Ann"},
                      "text": format!("n{n:05}")});
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let answer = client
            .post(format!("http://{api}/api/v1/groups/g/messages"))
            .json(&body)
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        if answer.is_ok_and(|a| a.status() == 202) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "message {n} never accepted"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// An SSE consumer of `dst:g` that reconnects with `Last-Event-ID` whenever the stream
/// breaks; collects the message numbers it reads.
pub struct Consumer {
    /// Numbers in arrival order.
    seen: Arc<Mutex<Vec<usize>>>,
    /// The reading task.
    task: tokio::task::JoinHandle<()>,
}

impl Consumer {
    /// Connects (waiting for the daemon) and starts reading.
    pub async fn start(api: SocketAddr) -> Consumer {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let collected = seen.clone();
        let task = follow_texts(api, move |text| {
            if let Some(n) = number_in(text) {
                collected.lock().expect("lock").push(n);
            }
        })
        .await;
        Consumer { seen, task }
    }

    /// The numbers read so far, in arrival order.
    pub fn seen(&self) -> Vec<usize> {
        self.seen.lock().expect("lock").clone()
    }
}

impl Drop for Consumer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Follows the SSE stream of `dst:g` at `api` (waiting for the daemon to answer), handing the
/// text of every event to `each`, and reconnecting with `Last-Event-ID` whenever the stream
/// ends, breaks or stays quiet. The task runs until aborted.
pub async fn follow_texts(
    api: SocketAddr,
    mut each: impl FnMut(&str) + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    let url = format!("http://{api}/api/v1/groups/g/events");
    let mut stream = None;
    while stream.is_none() {
        stream = SseClient::try_open(&url, None).await;
    }
    tokio::spawn(async move {
        let mut last_id: Option<String> = None;
        loop {
            let Some(client) = stream.as_mut() else {
                tokio::time::sleep(Duration::from_millis(25)).await;
                stream = SseClient::try_open(&url, last_id.as_deref()).await;
                continue;
            };
            match client.next_within(Duration::from_secs(2)).await {
                Some(event) => {
                    if let Some(id) = event.id.clone() {
                        last_id = Some(id);
                    }
                    each(event.json()["text"].as_str().unwrap_or_default());
                }
                // Ended, broke, or quiet: reconnect where it left off.
                None => stream = None,
            }
        }
    })
}

/// The message number in a relayed text (`… n00042`).
pub fn number_in(text: &str) -> Option<usize> {
    text.rsplit(|c: char| c.is_whitespace())
        .next()?
        .strip_prefix('n')?
        .parse()
        .ok()
}

/// Posts the marker that closes a stream of `count` messages: number `count + 1`, posted
/// after every message of the stream was accepted. Each destination's queue is ordered, so
/// a message lost on the way or sent twice shows before the marker arrives.
pub async fn post_marker(client: &reqwest::Client, api: SocketAddr, count: usize) {
    post_until_accepted(client, api, count + 1).await;
}

/// Waits until `seen` holds the marker of a stream of `count` messages ([`post_marker`]), or
/// 60 s; returns the numbers that came, without the marker.
pub async fn settle(seen: impl Fn() -> Vec<usize>, count: usize) -> Vec<usize> {
    let marker = count + 1;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !seen().contains(&marker) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    seen().into_iter().filter(|&n| n != marker).collect()
}

/// Fails unless `seen` is exactly 1..=count; the message says how many were lost, doubled
/// and out of order.
pub fn assert_exactly_once_in_order(destination: &str, seen: &[usize], count: usize) {
    let mut times = vec![0usize; count + 1];
    for &n in seen {
        if n <= count {
            times[n] += 1;
        }
    }
    let lost: Vec<usize> = (1..=count).filter(|&n| times[n] == 0).collect();
    let doubled: Vec<usize> = (1..=count).filter(|&n| times[n] > 1).collect();
    let out_of_order = seen.windows(2).filter(|w| w[1] <= w[0]).count();
    println!(
        "{destination}: {} received, {} lost, {} duplicated, {} out of order",
        seen.len(),
        lost.len(),
        doubled.len(),
        out_of_order
    );
    assert!(
        lost.is_empty() && doubled.is_empty() && out_of_order == 0 && seen.len() == count,
        "{destination}: lost {lost:?}, duplicated {doubled:?}, {out_of_order} out of order"
    );
}

/// Fails unless every number of 1..=count is in `seen` exactly once; returns how many arrived
/// after a higher number (for setups that do not promise order).
pub fn assert_exactly_once(destination: &str, seen: &[usize], count: usize) -> usize {
    let mut times = vec![0usize; count + 1];
    for &n in seen {
        if n <= count {
            times[n] += 1;
        }
    }
    let lost: Vec<usize> = (1..=count).filter(|&n| times[n] == 0).collect();
    let doubled: Vec<usize> = (1..=count).filter(|&n| times[n] > 1).collect();
    let out_of_order = seen.windows(2).filter(|w| w[1] <= w[0]).count();
    println!(
        "{destination}: {} received, {} lost, {} duplicated, {} out of order",
        seen.len(),
        lost.len(),
        doubled.len(),
        out_of_order
    );
    assert!(
        lost.is_empty() && doubled.is_empty() && seen.len() == count,
        "{destination}: lost {lost:?}, duplicated {doubled:?}"
    );
    out_of_order
}
