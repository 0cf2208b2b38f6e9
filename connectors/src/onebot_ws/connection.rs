//! One live OneBot WebSocket, whichever side opened it and whichever version it speaks:
//! reads frames (inbound messages go to ingress in order, responses to their waiting action),
//! writes actions and pings through the writer task, learns which bot it speaks for, and
//! declares the link dead when heartbeats stop (about three missed intervals) or, for
//! implementations that send none, when nothing at all (not even a pong to our pings) came
//! for a while. Decoding is the [`Version`]'s business.
//!
//! Flow control: inbound messages go to ingress through the account's bounded event queue
//! ([`super::connector::EVENT_QUEUE`]). When it is full (ingress is waiting for room on the
//! broker, or for PUBACKs), the connection holds the next message itself and stops reading
//! frames: nothing is dropped and nothing piles up in memory; the socket's buffers fill and
//! TCP pushes back on the implementation, which then holds its events. Replies to our own
//! actions come on the same socket, behind those events, so they wait too, but never for
//! ever: the queue always drains, because publishing an inbound message never waits for a
//! OneBot reply (a v12 message's name lookups are waited for at most their short
//! `LOOKUP_WAIT`, then it goes with fallbacks). To keep replies flowing during a pause when
//! they matter, reading goes on while an action on this connection awaits its response, as
//! long as at most [`HELD_EVENTS`] inbound messages are held; past that it stops too, which
//! keeps memory bounded. Time spent not reading does not count against the heartbeat
//! watchdog: the heartbeats are there, unread.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::echo::Pending;
use super::frame::{id_of, DecodeContext, FrameError};
use super::link::AccountLink;
use super::outcome::Outcome;
use super::session::{spawn_writer, Session, WRITE_QUEUE};
use super::version::{Decoded, Event, Version};
use crate::context::ConnectionState;
use crate::reverse_ws::{close_after, read_failure, ClientRole};

/// With no heartbeat from the implementation, how long silence (no frame, no pong) may last.
const SILENCE_LIMIT: Duration = Duration::from_secs(90);
/// Heartbeat intervals a link may miss before it is declared dead.
const MISSED_HEARTBEATS: u32 = 3;
/// How long teardown waits for the writer to send its close frame.
const WRITER_GRACE: Duration = Duration::from_secs(2);
/// The reason a connection ends when qunbridge itself closes it.
const STOPPING: &str = "stopping";
/// Inbound messages a connection may hold while the event queue is full; it reads on (for
/// the responses to its actions) only while it holds fewer.
pub const HELD_EVENTS: usize = 64;

/// Runs one connection until it closes, dies, or `stop`.
pub async fn run<S, V>(
    ws: WebSocketStream<S>,
    role: ClientRole,
    link: Arc<AccountLink<V>>,
    stop: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    V: Version,
{
    let (sink, mut stream) = ws.split();
    let (tx, rx) = mpsc::channel::<Message>(WRITE_QUEUE);
    let writer = spawn_writer(sink, rx);
    let pending = Arc::new(Pending::default());
    let session = link.sessions.open(tx.clone(), pending.clone(), role);
    link.state.set(ConnectionState::Up, None);
    metrics::gauge!(crate::metrics::ACCOUNT_UP, "account" => link.account.clone()).set(1.0);

    if link.self_id().is_none() && role != ClientRole::Event {
        ask_who_am_i(link.clone(), session.clone());
    }
    // Follow-up actions for a message go out on this connection when it takes actions, else
    // on the account's newest that does.
    let lookups = (role != ClientRole::Event).then(|| session.clone());

    let mut watchdog = Watchdog::new();
    // Inbound messages read while the event queue was full, oldest first.
    let mut held: VecDeque<V::Queued> = VecDeque::new();
    // Since when no frame is read, while the event queue is full.
    let mut paused_since: Option<Instant> = None;
    let reason = loop {
        // Read while nothing is held; while messages are held, only for the responses to
        // actions in flight, and only while the hold has room.
        let reading = held.is_empty() || (held.len() < HELD_EVENTS && !pending.is_empty());
        match (reading, paused_since) {
            (false, None) => paused_since = Some(Instant::now()),
            (true, Some(since)) => {
                watchdog.exclude(since.elapsed());
                paused_since = None;
            }
            _ => {}
        }
        let frame = tokio::select! {
            _ = stop.cancelled() => break STOPPING,
            permit = link.events.reserve(), if !held.is_empty() => match permit {
                Ok(permit) => {
                    if let Some(item) = held.pop_front() {
                        permit.send(item);
                    }
                    continue;
                }
                Err(_) => break "ingress stopped",
            },
            // An action went out: read on for its response.
            _ = pending.registered(), if !reading => continue,
            _ = tokio::time::sleep_until(watchdog.deadline()), if reading => break "heartbeats stopped",
            frame = stream.next(), if reading => frame,
        };
        watchdog.traffic();
        // The frame's own buffer, read in place.
        let text = match frame {
            Some(Ok(Message::Text(text))) => text,
            // A binary frame is decoded like a text frame when it is UTF-8.
            Some(Ok(Message::Binary(bytes))) => match Utf8Bytes::try_from(bytes) {
                Ok(text) => text,
                Err(_) => {
                    malformed(&link.account, V::BINARY_PROBLEM);
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
        let decoded = match decode(&link, &text) {
            Ok(decoded) => decoded,
            Err(error) => {
                malformed(&link.account, &error.to_string());
                continue;
            }
        };
        if let Some(id) = &decoded.self_id {
            link.learn_self_id(id);
        }
        let queued = match decoded.event {
            Event::Inbound(inbound) => {
                watchdog.heartbeat();
                if link.intake.is_cancelled() {
                    crate::metrics::count_drop("shutdown");
                    continue;
                }
                link.version.admit(inbound, || {
                    lookups.clone().or_else(|| link.sessions.for_actions())
                })
            }
            Event::OwnMessage => {
                watchdog.heartbeat();
                crate::metrics::count_drop("own_message");
                continue;
            }
            Event::Connected { implementation } => {
                if let Some((implementation, version)) = implementation {
                    info!(message = "OneBot implementation connected.", account = %link.account, implementation = %implementation, version = %version);
                }
                continue;
            }
            Event::Heartbeat { interval_ms } => {
                watchdog.heartbeat();
                watchdog.expect_every(interval_ms);
                continue;
            }
            Event::Status { good, bots } => {
                watchdog.heartbeat();
                if good == Some(false) {
                    warn!(message = "The implementation reports itself not good.", account = %link.account);
                }
                link.bot_status(&bots);
                continue;
            }
            Event::Response { echo, body } => {
                if !pending.resolve(&echo, body) {
                    debug!(message = "Response for no waiting action.", account = %link.account, %echo);
                }
                continue;
            }
            Event::Ignored => {
                watchdog.heartbeat();
                continue;
            }
        };
        // In order: behind what is held already; held when the queue is full.
        if !held.is_empty() {
            held.push_back(queued);
            continue;
        }
        match link.events.try_send(queued) {
            Ok(()) => {}
            Err(TrySendError::Full(queued)) => {
                debug!(message = "The event queue is full: reading pauses until ingress catches up.", account = %link.account);
                held.push_back(queued);
            }
            Err(TrySendError::Closed(_)) => break "ingress stopped",
        }
    };
    // What was read is published: the queue drains whatever stopped the connection.
    for item in held {
        if link.events.send(item).await.is_err() {
            break;
        }
    }
    // Every clone of the session holds the writer open; let go of ours before waiting on it.
    drop(lookups);
    finish(&link, session, &pending, tx, writer, reason).await;
}

/// Decodes a frame with what the link knows about the bots.
fn decode<V: Version>(
    link: &AccountLink<V>,
    text: &str,
) -> Result<Decoded<V::Inbound>, FrameError> {
    let self_id = link.self_id();
    let is_other_bot =
        |id: &str| link.bots.is_bot(link.platform, id) && Some(id) != self_id.as_deref();
    let cx = DecodeContext {
        account: &link.account,
        platform: link.platform,
        self_id: self_id.as_deref(),
        is_other_bot: &is_other_bot,
    };
    link.version.decode(text, &cx)
}

/// Asks the implementation, in the background, which bot this connection speaks for.
fn ask_who_am_i<V: Version>(link: Arc<AccountLink<V>>, session: Session) {
    tokio::spawn(async move {
        if let Ok(body) = session.call(V::WHO_AM_I, serde_json::json!({})).await {
            if let Outcome::Ok(data) = V::outcome(&body) {
                if let Some(id) = id_of(data.get("user_id")) {
                    link.learn_self_id(&id);
                }
            }
        }
    });
}

/// When a connection counts as dead: a few missed heartbeats once the implementation has
/// told its interval, else a long silence.
struct Watchdog {
    /// The implementation's heartbeat interval, once a heartbeat told it.
    interval: Option<Duration>,
    /// When the last sign of life (heartbeat or event) came.
    last_heartbeat: Instant,
    /// When the last frame of any kind came.
    last_traffic: Instant,
}

impl Watchdog {
    /// A watchdog for a connection that just opened.
    fn new() -> Watchdog {
        let now = Instant::now();
        Watchdog {
            interval: None,
            last_heartbeat: now,
            last_traffic: now,
        }
    }

    /// When the connection is declared dead unless something arrives.
    fn deadline(&self) -> Instant {
        match self.interval {
            Some(interval) => self.last_heartbeat + interval * MISSED_HEARTBEATS,
            None => self.last_traffic + SILENCE_LIMIT,
        }
    }

    /// A frame (or pong) arrived.
    fn traffic(&mut self) {
        self.last_traffic = Instant::now();
    }

    /// A heartbeat or an event arrived.
    fn heartbeat(&mut self) {
        self.last_heartbeat = Instant::now();
    }

    /// Reading paused for `paused` (the event queue was full): that time does not count as
    /// silence, since whatever came meanwhile waits unread in the socket.
    fn exclude(&mut self, paused: Duration) {
        let now = Instant::now();
        self.last_heartbeat = (self.last_heartbeat + paused).min(now);
        self.last_traffic = (self.last_traffic + paused).min(now);
    }

    /// A heartbeat told its interval; zero or none keeps the current expectation.
    fn expect_every(&mut self, interval_ms: Option<u64>) {
        if let Some(ms) = interval_ms.filter(|ms| *ms > 0) {
            self.interval = Some(Duration::from_millis(ms));
        }
    }
}

/// Tears a connection down and reports the account's state.
async fn finish<V: Version>(
    link: &AccountLink<V>,
    session: Session,
    pending: &Pending,
    tx: mpsc::Sender<Message>,
    writer: JoinHandle<()>,
    reason: &str,
) {
    link.sessions.close(session.id);
    pending.fail_all();
    drop(session);
    drop(tx);
    let _ = tokio::time::timeout(WRITER_GRACE, writer).await;
    if !link.sessions.any() {
        if reason == STOPPING {
            link.state.set(ConnectionState::Stopped, None);
        } else {
            link.state
                .set(ConnectionState::Down, Some(reason.to_owned()));
        }
        metrics::gauge!(crate::metrics::ACCOUNT_UP, "account" => link.account.clone()).set(0.0);
    }
    if reason == STOPPING {
        debug!(message = "OneBot connection closed for shutdown.", account = %link.account);
    } else {
        warn!(message = "OneBot connection lost.", account = %link.account, reason);
    }
}

/// Logs and counts a frame that could not be used; the connection goes on.
fn malformed(account: &str, problem: &str) {
    warn!(message = "Ignoring malformed OneBot frame.", account = %account, problem);
    crate::metrics::count_drop("malformed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn time_spent_not_reading_does_not_count_as_silence() {
        let mut watchdog = Watchdog::new();
        watchdog.heartbeat();
        watchdog.expect_every(Some(5_000));
        let deadline = watchdog.deadline();
        // Reading paused for a minute (the event queue was full), 2 s after the heartbeat.
        tokio::time::advance(Duration::from_secs(62)).await;
        watchdog.exclude(Duration::from_secs(60));
        assert_eq!(watchdog.deadline(), deadline + Duration::from_secs(60));
        // A pause longer than the time since the last heartbeat never moves it past now.
        watchdog.exclude(Duration::from_secs(600));
        assert_eq!(
            watchdog.deadline(),
            Instant::now() + Duration::from_secs(15)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_watchdog_waits_for_silence_until_told_an_interval() {
        let mut watchdog = Watchdog::new();
        let opened = Instant::now();
        assert_eq!(watchdog.deadline(), opened + SILENCE_LIMIT);

        tokio::time::advance(Duration::from_secs(10)).await;
        watchdog.traffic();
        assert_eq!(watchdog.deadline(), Instant::now() + SILENCE_LIMIT);

        watchdog.expect_every(Some(0));
        assert_eq!(
            watchdog.deadline(),
            Instant::now() + SILENCE_LIMIT,
            "0 is no interval"
        );
        watchdog.heartbeat();
        watchdog.expect_every(Some(5_000));
        assert_eq!(
            watchdog.deadline(),
            Instant::now() + Duration::from_secs(5) * MISSED_HEARTBEATS
        );

        // Traffic alone (pongs) no longer keeps a link with heartbeats alive.
        tokio::time::advance(Duration::from_secs(10)).await;
        watchdog.traffic();
        assert_eq!(
            watchdog.deadline(),
            Instant::now() - Duration::from_secs(10) + Duration::from_secs(15)
        );
        watchdog.expect_every(None);
        assert_eq!(
            watchdog.deadline(),
            Instant::now() + Duration::from_secs(5),
            "the last interval stays"
        );
    }
}
