//! One live OneBot v11 WebSocket, whichever side opened it: reads frames (events go to
//! ingress in order, responses to their waiting action), writes actions and pings, and
//! declares the link dead when heartbeats stop (about three missed intervals) or, for
//! implementations that send none, when nothing at all (not even a pong) came for a while.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::action::{self, Pending};
use super::event::{self, DecodeContext, Frame};
use crate::context::{BotRegistry, ConnectionState, StateReporter};
use crate::model::{Envelope, Platform};
use crate::onebot_ws::frame::binary_text;
use crate::onebot_ws::{spawn_writer, WRITE_QUEUE};
use crate::reverse_ws::{close_after, read_failure, ClientRole};

pub use crate::onebot_ws::{CallError, Session, Sessions, ACTION_TIMEOUT};

/// With no heartbeat from the implementation, how long silence (no frame, no pong) may last.
const SILENCE_LIMIT: Duration = Duration::from_secs(90);
/// Heartbeat intervals a link may miss before it is declared dead.
const MISSED_HEARTBEATS: u32 = 3;

/// What every session of an account shares.
pub struct AccountLink {
    /// Account id.
    pub account: String,
    /// Platform of the account.
    pub platform: Platform,
    /// The bot's user id once known (config, `X-Self-ID`, an event or `get_login_info`).
    pub self_id: Mutex<Option<String>>,
    /// Every configured bot, to drop their messages.
    pub bots: BotRegistry,
    /// Live sessions.
    pub sessions: Sessions,
    /// Decoded group events, in arrival order, for the ingress task.
    pub events: mpsc::Sender<Envelope>,
    /// State reporting.
    pub state: StateReporter,
    /// Intake stopped (daemon shutting down): new events are no longer published.
    pub intake: CancellationToken,
}

impl AccountLink {
    /// The bot's id, if known.
    pub fn self_id(&self) -> Option<String> {
        self.self_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Records the bot's id (and registers it so other accounts drop its messages).
    pub fn learn_self_id(&self, id: &str) {
        let mut current = self.self_id.lock().unwrap_or_else(PoisonError::into_inner);
        if current.as_deref() != Some(id) {
            info!(message = "Learned the bot's user id.", account = %self.account, self_id = id);
            *current = Some(id.to_owned());
            self.bots.register(self.platform, id);
        }
    }
}

/// Runs one connection until it closes, dies, or `stop`.
pub async fn run<S>(
    ws: WebSocketStream<S>,
    role: ClientRole,
    link: Arc<AccountLink>,
    stop: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, mut stream) = ws.split();
    let (tx, rx) = mpsc::channel::<Message>(WRITE_QUEUE);
    let writer = spawn_writer(sink, rx);

    let pending = Arc::new(Pending::default());
    let session = link.sessions.open(tx.clone(), pending.clone(), role);
    let session_id = session.id;
    link.state.set(ConnectionState::Up, None);
    metrics::gauge!("qunbridge_account_up", "account" => link.account.clone()).set(1.0);

    if link.self_id().is_none() && role != ClientRole::Event {
        let link = link.clone();
        let session = session.clone();
        tokio::spawn(async move {
            if let Ok(body) = session.call("get_login_info", serde_json::json!({})).await {
                if let action::Outcome::Ok(data) = action::outcome(&body) {
                    if let Some(id) = event::id_of(data.get("user_id")) {
                        link.learn_self_id(&id);
                    }
                }
            }
        });
    }
    drop(session);

    let mut heartbeat: Option<Duration> = None;
    let mut last_heartbeat = Instant::now();
    let mut last_traffic = Instant::now();
    let reason = loop {
        let deadline = match heartbeat {
            Some(interval) => last_heartbeat + interval * MISSED_HEARTBEATS,
            None => last_traffic + SILENCE_LIMIT,
        };
        let frame = tokio::select! {
            _ = stop.cancelled() => break "stopping",
            _ = tokio::time::sleep_until(deadline) => break "heartbeats stopped",
            frame = stream.next() => frame,
        };
        last_traffic = Instant::now();
        let text = match frame {
            Some(Ok(Message::Text(text))) => text.to_string(),
            Some(Ok(Message::Binary(bytes))) => match binary_text(&bytes) {
                Ok(text) => text.to_owned(),
                Err(_) => {
                    malformed(&link.account, "binary frame that is not UTF-8");
                    continue;
                }
            },
            Some(Ok(Message::Close(_))) | None => break "closed by the peer",
            Some(Ok(_)) => continue,
            Some(Err(error)) => {
                if let Some(close) = close_after(&error) {
                    let _ = tx.try_send(Message::Close(Some(close)));
                }
                break read_failure(&link.account, &error);
            }
        };
        let decoded = {
            let self_id = link.self_id();
            let is_other_bot =
                |id: &str| link.bots.is_bot(link.platform, id) && Some(id) != self_id.as_deref();
            let cx = DecodeContext {
                account: &link.account,
                platform: link.platform,
                self_id: self_id.as_deref(),
                is_other_bot: &is_other_bot,
            };
            event::decode(&text, &cx)
        };
        match decoded {
            Ok(Frame::Envelope(envelope)) => {
                last_heartbeat = Instant::now();
                if link.intake.is_cancelled() {
                    metrics::counter!("qunbridge_messages_dropped_total", "reason" => "shutdown")
                        .increment(1);
                    continue;
                }
                if link.events.send(*envelope).await.is_err() {
                    break "ingress stopped";
                }
            }
            Ok(Frame::OwnMessage) => {
                last_heartbeat = Instant::now();
                metrics::counter!("qunbridge_messages_dropped_total", "reason" => "own_message")
                    .increment(1);
            }
            Ok(Frame::Lifecycle { self_id }) => {
                if let Some(id) = self_id {
                    link.learn_self_id(&id);
                }
            }
            Ok(Frame::Heartbeat {
                interval_ms,
                self_id,
            }) => {
                last_heartbeat = Instant::now();
                if let Some(ms) = interval_ms.filter(|ms| *ms > 0) {
                    heartbeat = Some(Duration::from_millis(ms));
                }
                if let Some(id) = self_id {
                    link.learn_self_id(&id);
                }
            }
            Ok(Frame::Response { echo, body }) => {
                if !pending.resolve(&echo, body) {
                    debug!(message = "Response for no waiting action.", account = %link.account, %echo);
                }
            }
            Ok(Frame::Ignored) => last_heartbeat = Instant::now(),
            Err(error) => malformed(&link.account, &error.to_string()),
        }
    };
    link.sessions.close(session_id);
    pending.fail_all();
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    if !link.sessions.any() {
        if reason == "stopping" {
            link.state.set(ConnectionState::Stopped, None);
        } else {
            link.state
                .set(ConnectionState::Down, Some(reason.to_owned()));
        }
        metrics::gauge!("qunbridge_account_up", "account" => link.account.clone()).set(0.0);
    }
    if reason == "stopping" {
        debug!(message = "OneBot connection closed for shutdown.", account = %link.account);
    } else {
        warn!(message = "OneBot connection lost.", account = %link.account, reason);
    }
}

/// Logs and counts a frame that could not be used; the connection goes on.
fn malformed(account: &str, problem: &str) {
    warn!(message = "Ignoring malformed OneBot frame.", account = %account, problem);
    metrics::counter!("qunbridge_messages_dropped_total", "reason" => "malformed").increment(1);
}
