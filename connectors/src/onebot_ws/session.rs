//! A live OneBot socket as the rest of a connector sees it: a [`Session`] to call actions on
//! (the frame goes to the connection's writer, the answer comes back through [`Pending`]),
//! the [`Sessions`] of one account (a reverse peer may open separate API and Event sockets;
//! egress waits for one that takes actions), and the writer task that owns the sending half
//! of the socket and pings the peer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::stream::SplitSink;
use futures_util::SinkExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;

use super::echo::{request, Pending};
use crate::reverse_ws::ClientRole;

/// How long an action may wait for its response.
pub const ACTION_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the writer pings the peer (so a silent but healthy peer still shows traffic).
pub const PING_EVERY: Duration = Duration::from_secs(30);
/// Frames queued for writing per connection.
pub const WRITE_QUEUE: usize = 256;

/// Why an action got no usable response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The connection closed before the response.
    #[error("the connection closed before the response")]
    Closed,
    /// No response in time.
    #[error("no response within {0:?}")]
    Timeout(Duration),
}

/// A live connection, as egress and lookups use it.
#[derive(Clone)]
pub struct Session {
    /// Distinguishes sessions of one account.
    pub id: u64,
    /// Frames to write.
    tx: mpsc::Sender<Message>,
    /// Actions awaiting responses on this connection.
    pending: Arc<Pending>,
    /// What the peer said the socket is for.
    role: ClientRole,
}

impl Session {
    /// Sends an action and waits up to [`ACTION_TIMEOUT`] for its response.
    ///
    /// # Errors
    /// [`CallError`] when the connection closes or the response does not come in time.
    pub async fn call(
        &self,
        name: &str,
        params: serde_json::Value,
    ) -> Result<serde_json::Value, CallError> {
        self.call_within(name, params, ACTION_TIMEOUT).await
    }

    /// Sends an action and waits up to `limit` for its response; a late response is then
    /// discarded (its echo is forgotten).
    ///
    /// # Errors
    /// [`CallError`] when the connection closes or the response does not come in time.
    pub async fn call_within(
        &self,
        name: &str,
        params: serde_json::Value,
        limit: Duration,
    ) -> Result<serde_json::Value, CallError> {
        let (echo, response) = self.pending.register();
        let frame = request(name, params, &echo);
        if self.tx.send(Message::Text(frame.into())).await.is_err() {
            self.pending.forget(&echo);
            return Err(CallError::Closed);
        }
        match tokio::time::timeout(limit, response).await {
            Ok(Ok(body)) => Ok(body),
            Ok(Err(_)) => Err(CallError::Closed),
            Err(_) => {
                self.pending.forget(&echo);
                Err(CallError::Timeout(limit))
            }
        }
    }

    /// What the peer said the socket is for.
    pub fn role(&self) -> ClientRole {
        self.role
    }
}

/// The live sessions of one account; egress uses the newest that takes actions.
#[derive(Default)]
pub struct Sessions {
    /// Live sessions, oldest first.
    live: Mutex<Vec<Session>>,
    /// Bumped on every change, so egress can wait for a session.
    version: watch::Sender<u64>,
    /// Next session id.
    next_id: AtomicU64,
}

impl Sessions {
    /// Registers a new connection: `tx` reaches its writer, `pending` its waiting actions.
    pub fn open(
        &self,
        tx: mpsc::Sender<Message>,
        pending: Arc<Pending>,
        role: ClientRole,
    ) -> Session {
        let session = Session {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            tx,
            pending,
            role,
        };
        self.lock().push(session.clone());
        self.version.send_modify(|v| *v += 1);
        session
    }

    /// Removes a connection that ended.
    pub fn close(&self, id: u64) {
        self.lock().retain(|s| s.id != id);
        self.version.send_modify(|v| *v += 1);
    }

    /// The session to send actions on, if any.
    pub fn for_actions(&self) -> Option<Session> {
        self.lock()
            .iter()
            .rev()
            .find(|s| s.role != ClientRole::Event)
            .cloned()
    }

    /// Waits until a session for actions exists, or `stop`.
    pub async fn wait_for_actions(&self, stop: &CancellationToken) -> Option<Session> {
        let mut version = self.version.subscribe();
        loop {
            if let Some(session) = self.for_actions() {
                return Some(session);
            }
            tokio::select! {
                _ = stop.cancelled() => return None,
                changed = version.changed() => if changed.is_err() { return None },
            }
        }
    }

    /// True when at least one session is live.
    pub fn any(&self) -> bool {
        !self.lock().is_empty()
    }

    /// The list, recovering from a poisoned lock.
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Session>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Starts the task that owns the sending half of a socket: it writes what arrives on `rx`,
/// pings every [`PING_EVERY`], and sends a close frame once `rx` closes or a write fails.
pub fn spawn_writer<S>(
    mut sink: SplitSink<WebSocketStream<S>, Message>,
    mut rx: mpsc::Receiver<Message>,
) -> JoinHandle<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ping.tick().await;
        loop {
            let message = tokio::select! {
                message = rx.recv() => match message {
                    Some(message) => message,
                    None => break,
                },
                _ = ping.tick() => Message::Ping(Vec::new().into()),
            };
            if sink.send(message).await.is_err() {
                break;
            }
        }
        let _ = sink.send(Message::Close(None)).await;
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn egress_waits_for_a_session_that_takes_actions() {
        let sessions = Arc::new(Sessions::default());
        let stop = CancellationToken::new();
        let (tx, mut rx) = mpsc::channel(4);
        let events_only = sessions.open(tx.clone(), Arc::default(), ClientRole::Event);
        assert!(sessions.for_actions().is_none());
        let waiter = {
            let sessions = sessions.clone();
            let stop = stop.clone();
            tokio::spawn(async move { sessions.wait_for_actions(&stop).await.map(|s| s.id) })
        };
        let pending = Arc::new(Pending::default());
        let api = sessions.open(tx, pending.clone(), ClientRole::Api);
        assert_eq!(waiter.await.expect("joined"), Some(api.id));

        // A call goes out as a frame and comes back through `Pending`.
        let call = {
            let api = api.clone();
            tokio::spawn(async move {
                api.call_within("get_status", serde_json::json!({}), Duration::from_secs(5))
                    .await
            })
        };
        let Some(Message::Text(frame)) = rx.recv().await else {
            panic!("a text frame");
        };
        let frame: serde_json::Value = serde_json::from_str(&frame).expect("json");
        let echo = frame["echo"].as_str().expect("echo").to_owned();
        assert!(pending.resolve(&echo, serde_json::json!({"status": "ok"})));
        assert_eq!(
            call.await.expect("joined"),
            Ok(serde_json::json!({"status": "ok"}))
        );

        sessions.close(api.id);
        sessions.close(events_only.id);
        assert!(!sessions.any());
        stop.cancel();
        assert!(sessions.wait_for_actions(&stop).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_call_times_out_and_is_forgotten() {
        let sessions = Sessions::default();
        let (tx, _rx) = mpsc::channel(4);
        let pending = Arc::new(Pending::default());
        let session = sessions.open(tx, pending.clone(), ClientRole::Universal);
        let outcome = session
            .call_within("get_file", serde_json::json!({}), Duration::from_secs(1))
            .await;
        assert_eq!(outcome, Err(CallError::Timeout(Duration::from_secs(1))));
        assert!(pending.is_empty());
    }
}
