//! One live OneBot v12 WebSocket, whichever side opened it: reads frames (group messages go
//! to the resolver and then to ingress in order, responses to their waiting action), learns
//! the bot from `meta.status_update` (or `get_self_info`, or any event's `self`), follows the
//! bot's online state, and declares the link dead when heartbeats stop (about three missed
//! intervals) or, for implementations that send none (ComWeChatClient by default), when
//! nothing at all, not even a pong to our pings, came for a while.

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

use super::action::{self, Outcome};
use super::event::{self, DecodeContext, Frame};
use super::resolve::{IngressItem, Resolver};
use crate::context::{BotRegistry, ConnectionState, StateReporter};
use crate::model::Platform;
use crate::onebot_ws::frame::binary_text;
use crate::onebot_ws::{spawn_writer, Pending, Session, Sessions, WRITE_QUEUE};
use crate::reverse_ws::{close_after, read_failure, ClientRole};

/// With no heartbeat from the implementation, how long silence (no frame, no pong) may last.
const SILENCE_LIMIT: Duration = Duration::from_secs(90);
/// Heartbeat intervals a link may miss before it is declared dead.
const MISSED_HEARTBEATS: u32 = 3;

/// What every session of an account shares.
pub struct AccountLink {
    /// Account id.
    pub account: String,
    /// Platform of the account (WeChat, or QQ through a v12 implementation).
    pub platform: Platform,
    /// The bot's user id once known (config, `status_update`, an event's `self`,
    /// `get_self_info`).
    pub self_id: Mutex<Option<String>>,
    /// Every configured bot, to drop their messages.
    pub bots: BotRegistry,
    /// Live sessions.
    pub sessions: Sessions,
    /// Group events in arrival order, for the ingress task.
    pub events: mpsc::Sender<IngressItem>,
    /// State reporting.
    pub state: StateReporter,
    /// Intake stopped (daemon shutting down): new events are no longer published.
    pub intake: CancellationToken,
    /// Completes messages (names, picture URLs); its caches outlive connections.
    pub resolver: Arc<Resolver>,
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

    /// Follows a `status_update`: learns the bot when it is the only one, and reports it
    /// offline (logged out) or back online.
    fn bot_status(&self, bots: &[event::BotStatus]) {
        let known = self.self_id();
        let mine = match &known {
            Some(id) => bots.iter().find(|bot| &bot.user_id == id),
            None if bots.len() == 1 => bots.first(),
            None => {
                if bots.len() > 1 {
                    warn!(message = "Several bots on one OneBot v12 connection; set `self_id` to pick one.", account = %self.account, bots = bots.len());
                }
                None
            }
        };
        let Some(bot) = mine else {
            return;
        };
        self.learn_self_id(&bot.user_id);
        if bot.online {
            self.state.set(ConnectionState::Up, None);
        } else {
            warn!(message = "The implementation reports the bot offline (logged out).", account = %self.account);
            self.state
                .set(ConnectionState::Down, Some("the bot is offline".into()));
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
    link.state.set(ConnectionState::Up, None);
    metrics::gauge!("qunbridge_account_up", "account" => link.account.clone()).set(1.0);

    if link.self_id().is_none() && role != ClientRole::Event {
        let link = link.clone();
        let session = session.clone();
        tokio::spawn(async move {
            if let Ok(body) = session.call("get_self_info", serde_json::json!({})).await {
                if let Outcome::Ok(data) = action::outcome(&body) {
                    if let Some(id) = event::id_of(data.get("user_id")) {
                        link.learn_self_id(&id);
                    }
                }
            }
        });
    }
    // Lookups go out on this connection when it takes actions, else on the account's
    // newest that does.
    let lookups = (role != ClientRole::Event).then(|| session.clone());

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
            // MessagePack frames are optional in v12 and not supported; UTF-8 JSON in a
            // binary frame is tolerated.
            Some(Ok(Message::Binary(bytes))) => match binary_text(&bytes) {
                Ok(text) => text.to_owned(),
                Err(_) => {
                    malformed(
                        &link.account,
                        "binary frame that is not UTF-8 JSON (MessagePack is not supported)",
                    );
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
        let decoded = match decoded {
            Ok(decoded) => decoded,
            Err(error) => {
                malformed(&link.account, &error.to_string());
                continue;
            }
        };
        if let Some(id) = &decoded.self_id {
            link.learn_self_id(id);
        }
        let item = match decoded.frame {
            Frame::Message(_) | Frame::Recall(_) if link.intake.is_cancelled() => {
                metrics::counter!("qunbridge_messages_dropped_total", "reason" => "shutdown")
                    .increment(1);
                None
            }
            Frame::Message(incoming) => {
                last_heartbeat = Instant::now();
                let session = lookups.clone().or_else(|| link.sessions.for_actions());
                Some(link.resolver.complete(*incoming, session))
            }
            Frame::Recall(envelope) => {
                last_heartbeat = Instant::now();
                Some(IngressItem::Ready(envelope))
            }
            Frame::OwnMessage => {
                last_heartbeat = Instant::now();
                metrics::counter!("qunbridge_messages_dropped_total", "reason" => "own_message")
                    .increment(1);
                None
            }
            Frame::Connect {
                implementation,
                version,
            } => {
                info!(message = "OneBot v12 implementation connected.", account = %link.account, implementation = %implementation, version = %version);
                None
            }
            Frame::StatusUpdate { good, bots } => {
                last_heartbeat = Instant::now();
                if good == Some(false) {
                    warn!(message = "The implementation reports itself not good.", account = %link.account);
                }
                link.bot_status(&bots);
                None
            }
            Frame::Heartbeat { interval_ms } => {
                last_heartbeat = Instant::now();
                if let Some(ms) = interval_ms.filter(|ms| *ms > 0) {
                    heartbeat = Some(Duration::from_millis(ms));
                }
                None
            }
            Frame::Response { echo, body } => {
                if !pending.resolve(&echo, body) {
                    debug!(message = "Response for no waiting action.", account = %link.account, %echo);
                }
                None
            }
            Frame::Ignored => {
                last_heartbeat = Instant::now();
                None
            }
        };
        if let Some(item) = item {
            if link.events.send(item).await.is_err() {
                break "ingress stopped";
            }
        }
    };
    // Every clone of the session holds the writer open; let go of ours before waiting on it.
    drop(lookups);
    finish(&link, session, &pending, tx, writer, reason).await;
}

/// Tears a connection down and reports the account's state.
async fn finish(
    link: &AccountLink,
    session: Session,
    pending: &Pending,
    tx: mpsc::Sender<Message>,
    writer: tokio::task::JoinHandle<()>,
    reason: &str,
) {
    link.sessions.close(session.id);
    pending.fail_all();
    drop(session);
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
