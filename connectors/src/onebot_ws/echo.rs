//! Matching OneBot action responses to their requests by `echo`: every request gets a fresh
//! echo and a oneshot its response is delivered on. Entries leave the map when answered, when
//! the caller gives up, or all at once when the connection closes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::{oneshot, Notify};

/// Requests awaiting their response, by `echo`.
#[derive(Default)]
pub struct Pending {
    /// Next echo number.
    next: AtomicU64,
    /// Echo → where the response goes.
    waiting: Mutex<HashMap<String, oneshot::Sender<Value>>>,
    /// Woken when a request registers, so a reader that paused reading can resume for its
    /// response.
    registered: Notify,
}

impl Pending {
    /// A fresh echo and the receiver of its response.
    pub fn register(&self) -> (String, oneshot::Receiver<Value>) {
        let echo = format!("qb-{}", self.next.fetch_add(1, Ordering::Relaxed));
        let (tx, rx) = oneshot::channel();
        self.lock().insert(echo.clone(), tx);
        // A stored permit when nobody waits: a reader about to wait still sees it.
        self.registered.notify_one();
        (echo, rx)
    }

    /// Resolves after a request registered (possibly one registered before the call: a wake
    /// may be spurious, so check [`Pending::is_empty`] after it).
    pub async fn registered(&self) {
        self.registered.notified().await;
    }

    /// Delivers a response; false when nobody waits for that echo (late or foreign).
    pub fn resolve(&self, echo: &str, body: Value) -> bool {
        match self.lock().remove(echo) {
            Some(tx) => tx.send(body).is_ok(),
            None => false,
        }
    }

    /// Forgets a request that timed out.
    pub fn forget(&self, echo: &str) {
        self.lock().remove(echo);
    }

    /// Fails every waiting request (the connection is gone).
    pub fn fail_all(&self) {
        self.lock().clear();
    }

    /// Requests still waiting.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when no request waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The map, recovering from a poisoned lock.
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Value>>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// An action frame (the same shape in OneBot v11 and v12), written straight from its parts
/// rather than through a JSON object built for it (one per message sent).
pub fn request(action: &str, params: Value, echo: &str) -> String {
    /// The frame's fields, borrowed.
    #[derive(Serialize)]
    struct Frame<'a> {
        /// The action's name.
        action: &'a str,
        /// Its parameters.
        params: &'a Value,
        /// What its response carries back.
        echo: &'a str,
    }
    serde_json::to_string(&Frame {
        action,
        params: &params,
        echo,
    })
    .unwrap_or_else(|_| json!({ "action": action, "params": params, "echo": echo }).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_reach_their_request_once() {
        let pending = Pending::default();
        let (echo, mut rx) = pending.register();
        let (other, _rx) = pending.register();
        assert_ne!(echo, other);
        assert!(pending.resolve(&echo, json!(1)));
        assert_eq!(rx.try_recv().ok(), Some(json!(1)));
        assert!(!pending.resolve(&echo, json!(2)), "resolved once");
        pending.forget(&other);
        assert!(pending.is_empty());
        assert_eq!(
            serde_json::from_str::<Value>(&request("get_status", json!({}), "qb-9")).expect("json"),
            json!({"action": "get_status", "params": {}, "echo": "qb-9"})
        );
    }
}
