//! DingTalk Stream ingress (PROTOCOLS.md §3.1–§3.5): register a connection for a single-use
//! ticket, open the WebSocket the gateway names, answer SYSTEM `ping`s, move to a fresh
//! connection on SYSTEM `disconnect`, and turn bot messages from groups into envelopes.
//!
//! A bot message is acknowledged only after the broker acknowledged its envelope; when the
//! publish fails no ACK is sent, so the platform may deliver it again. Ids of relayed messages
//! are remembered (bounded) so a frame delivered twice is acknowledged twice but published
//! once. Group membership events (`events = true`, [`super::events`]) become member
//! envelopes under the same rule: acknowledged once the broker has all of them. A malformed
//! frame is logged and counted and the connection goes on. Any drop leads
//! to a new ticket and connection after [`Backoff`]; refused credentials are reported as
//! `AuthFailed` and retried on the slow schedule.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::events::{self, GroupEvent};
use super::frames::{self, BotMessage, DownFrame, FrameType, Piece, BOT_MESSAGE_TOPIC};
use super::openapi::OpenApi;
use super::recent::RecentIds;
use crate::backoff::Backoff;
use crate::context::{now_ms, ConnectionState, Ingress, StateReporter};
use crate::model::{
    Envelope, Kind, Locator, MediaKind, MediaRef, Origin, Platform, Segment, Sender,
    ENVELOPE_VERSION,
};
use crate::onebot_ws::frame::note_unknown;
use crate::reverse_ws::{close_after, read_failure, socket_config};

/// How long opening the WebSocket may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How often the client pings the gateway (WebSocket control ping).
const PING_EVERY: Duration = Duration::from_secs(30);
/// Silence after which the connection is taken as dead and replaced.
const SILENCE_LIMIT: Duration = Duration::from_secs(75);
/// A connection that lived this long counts as healthy: the backoff starts over.
const HEALTHY_AFTER: Duration = Duration::from_secs(30);
/// How long resolving one picture's download URL may take before a placeholder is used.
const DOWNLOAD_URL_TIMEOUT: Duration = Duration::from_secs(10);
/// Message ids remembered for redelivery dedup.
const RECENT_IDS: usize = 4096;

/// The WebSocket to the gateway.
type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Counts a frame that could not be used.
fn count_malformed() {
    crate::metrics::count_drop("malformed");
}

/// How a connection ended.
enum SessionEnd {
    /// The daemon is stopping.
    Shutdown,
    /// The gateway announced a disconnect: open a fresh connection right away.
    Renew,
    /// The connection broke; reconnect after the backoff.
    Lost(String),
}

/// What handling one frame asks of the session.
#[derive(Default)]
struct Step {
    /// A frame to send back (ACK or pong).
    reply: Option<String>,
    /// True when the gateway asked for a fresh connection.
    renew: bool,
}

impl Step {
    /// Sends `reply`.
    fn reply(reply: String) -> Step {
        Step {
            reply: Some(reply),
            renew: false,
        }
    }
}

/// The ingress side of one Stream account.
pub struct StreamIngress {
    /// Account id: logs, labels, envelope ids.
    account: String,
    /// Tickets and picture URLs.
    api: Arc<OpenApi>,
    /// Where envelopes go.
    ingress: Ingress,
    /// Where the connection state is reported.
    state: StateReporter,
    /// Cancelled when the daemon stops taking input.
    intake: CancellationToken,
    /// Ids already relayed.
    recent: RecentIds,
    /// Resolve each picture's download URL before publishing (a destination shows source
    /// URLs); otherwise the envelope carries only the download code, which destinations
    /// fetch through, and publishing never waits for DingTalk.
    source_urls: bool,
}

impl StreamIngress {
    /// Ingress for one account.
    pub fn new(
        account: String,
        api: Arc<OpenApi>,
        ingress: Ingress,
        state: StateReporter,
        intake: CancellationToken,
    ) -> StreamIngress {
        StreamIngress {
            account,
            api,
            ingress,
            state,
            intake,
            recent: RecentIds::new(RECENT_IDS),
            source_urls: true,
        }
    }

    /// Whether pictures' download URLs are resolved before publishing (by default they are).
    pub fn with_source_urls(mut self, resolve: bool) -> StreamIngress {
        self.source_urls = resolve;
        self
    }

    /// Sleeps `delay` unless intake stops first; false when it does.
    async fn wait(&self, delay: Duration) -> bool {
        tokio::select! {
            _ = self.intake.cancelled() => false,
            _ = tokio::time::sleep(delay) => true,
        }
    }

    /// Connects, relays and reconnects until shutdown.
    pub async fn run(mut self) {
        let mut backoff = Backoff::reconnect();
        let mut slow = Backoff::slow();
        let mut connected_before = false;
        loop {
            if self.intake.is_cancelled() {
                break;
            }
            let opened = tokio::select! {
                _ = self.intake.cancelled() => break,
                opened = self.api.open_connection() => opened,
            };
            let ticket = match opened {
                Ok(ticket) => {
                    slow.reset();
                    ticket
                }
                Err(error) if error.is_credential_refusal() => {
                    let delay = slow.next().unwrap_or(Duration::from_secs(600));
                    error!(message = "DingTalk refused the app credentials; check `client_id` and `client_secret`.", account = %self.account, %error, retry_in_s = delay.as_secs());
                    self.state
                        .set(ConnectionState::AuthFailed, Some(error.to_string()));
                    if !self.wait(delay).await {
                        break;
                    }
                    continue;
                }
                Err(error) => {
                    let delay = backoff.next().unwrap_or(Duration::from_secs(30));
                    warn!(message = "DingTalk Stream registration failed; retrying.", account = %self.account, %error, retry_in_ms = delay.as_millis() as u64);
                    self.state
                        .set(ConnectionState::Down, Some(error.to_string()));
                    if !self.wait(delay).await {
                        break;
                    }
                    continue;
                }
            };
            let socket = match self.connect(&ticket).await {
                Ok(Some(socket)) => socket,
                Ok(None) => break,
                Err(reason) => {
                    let delay = backoff.next().unwrap_or(Duration::from_secs(30));
                    warn!(message = "DingTalk Stream connection failed; retrying.", account = %self.account, %reason, retry_in_ms = delay.as_millis() as u64);
                    self.state.set(ConnectionState::Down, Some(reason));
                    if !self.wait(delay).await {
                        break;
                    }
                    continue;
                }
            };
            if connected_before {
                metrics::counter!(crate::metrics::RECONNECTS, "account" => self.account.clone())
                    .increment(1);
            }
            connected_before = true;
            info!(message = "DingTalk Stream connected.", account = %self.account);
            self.state.set(ConnectionState::Up, None);
            let since = Instant::now();
            match self.session(socket).await {
                SessionEnd::Shutdown => break,
                SessionEnd::Renew => {
                    info!(message = "DingTalk gateway asked for a new connection; reconnecting with a fresh ticket.", account = %self.account);
                    backoff.reset();
                }
                SessionEnd::Lost(reason) => {
                    if since.elapsed() >= HEALTHY_AFTER {
                        backoff.reset();
                    }
                    let delay = backoff.next().unwrap_or(Duration::from_secs(30));
                    warn!(message = "DingTalk Stream connection lost; reconnecting.", account = %self.account, %reason, retry_in_ms = delay.as_millis() as u64);
                    self.state.set(ConnectionState::Down, Some(reason));
                    if !self.wait(delay).await {
                        break;
                    }
                }
            }
        }
        debug!(message = "DingTalk Stream ingress stopped.", account = %self.account);
    }

    /// Opens the WebSocket for a ticket; `Ok(None)` on shutdown.
    async fn connect(&self, ticket: &super::openapi::Ticket) -> Result<Option<Socket>, String> {
        let url = ticket.connect_url()?;
        // The same frame and message limits as every platform socket (frames are small JSON).
        let connecting = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio_tungstenite::connect_async_with_config(url, Some(socket_config()), true),
        );
        tokio::select! {
            _ = self.intake.cancelled() => Ok(None),
            outcome = connecting => match outcome {
                Ok(Ok((socket, _))) => Ok(Some(socket)),
                // The error text names neither the ticket nor the query.
                Ok(Err(error)) => Err(format!("WebSocket to the gateway failed: {error}")),
                Err(_) => Err(format!("WebSocket to the gateway not open after {CONNECT_TIMEOUT:?}")),
            },
        }
    }

    /// Reads and answers frames until the connection ends.
    async fn session(&mut self, socket: Socket) -> SessionEnd {
        let (mut sink, mut stream) = socket.split();
        let mut keepalive = tokio::time::interval_at(Instant::now() + PING_EVERY, PING_EVERY);
        keepalive.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut heard = Instant::now();
        loop {
            let incoming = tokio::select! {
                biased;
                _ = self.intake.cancelled() => {
                    let _ = tokio::time::timeout(Duration::from_secs(2), sink.send(Message::Close(None))).await;
                    return SessionEnd::Shutdown;
                }
                _ = keepalive.tick() => {
                    if heard.elapsed() > SILENCE_LIMIT {
                        return SessionEnd::Lost(format!("nothing from the gateway for {SILENCE_LIMIT:?}"));
                    }
                    if let Err(error) = sink.send(Message::Ping(Vec::new().into())).await {
                        return SessionEnd::Lost(format!("ping failed: {error}"));
                    }
                    continue;
                }
                incoming = stream.next() => incoming,
            };
            heard = Instant::now();
            let step = match incoming {
                None => return SessionEnd::Lost("the gateway closed the connection".into()),
                Some(Err(error)) => {
                    read_failure(&self.account, &error);
                    if let Some(close) = close_after(&error) {
                        let _ = tokio::time::timeout(
                            Duration::from_secs(2),
                            sink.send(Message::Close(Some(close))),
                        )
                        .await;
                    }
                    return SessionEnd::Lost(format!("read failed: {error}"));
                }
                Some(Ok(Message::Text(text))) => self.handle(text.as_str()).await,
                Some(Ok(Message::Close(_))) => {
                    return SessionEnd::Lost("the gateway closed the connection".into())
                }
                Some(Ok(Message::Binary(_))) => {
                    warn!(message = "Dropping a binary frame from the DingTalk gateway.", account = %self.account);
                    count_malformed();
                    Step::default()
                }
                Some(Ok(_)) => Step::default(),
            };
            if let Some(reply) = step.reply {
                if let Err(error) = sink.send(Message::text(reply)).await {
                    return SessionEnd::Lost(format!("write failed: {error}"));
                }
            }
            if step.renew {
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), sink.send(Message::Close(None)))
                        .await;
                return SessionEnd::Renew;
            }
        }
    }

    /// Handles one text frame.
    async fn handle(&mut self, text: &str) -> Step {
        let frame = match frames::parse_frame(text) {
            Ok(frame) => frame,
            Err(error) => {
                warn!(message = "Dropping a malformed frame from the DingTalk gateway.", account = %self.account, %error);
                count_malformed();
                return Step::default();
            }
        };
        match frame.kind {
            FrameType::System => match frame.topic.as_str() {
                "ping" => Step::reply(frames::pong(&frame)),
                "disconnect" => {
                    let reason = frames::data_object(&frame.data)
                        .ok()
                        .and_then(|d| d.get("reason").and_then(|r| r.as_str()).map(str::to_owned))
                        .unwrap_or_default();
                    info!(message = "DingTalk gateway announced a disconnect.", account = %self.account, %reason);
                    Step {
                        reply: None,
                        renew: true,
                    }
                }
                other => {
                    debug!(message = "DingTalk system frame ignored.", account = %self.account, topic = %other);
                    Step::default()
                }
            },
            FrameType::Event => self.event(&frame).await,
            FrameType::Callback if frame.topic == BOT_MESSAGE_TOPIC => {
                self.bot_message(&frame).await
            }
            FrameType::Callback => {
                debug!(message = "DingTalk callback on an unhandled topic.", account = %self.account, topic = %frame.topic);
                Step::reply(frames::callback_unsupported(&frame.message_id))
            }
        }
    }

    /// Relays one bot message; the ACK goes back only once the broker has it.
    async fn bot_message(&mut self, frame: &DownFrame) -> Step {
        let message = match frames::parse_bot_message(&frame.data) {
            Ok(message) => message,
            Err(error) => {
                warn!(message = "Dropping a malformed DingTalk bot message.", account = %self.account, %error);
                count_malformed();
                return Step::reply(frames::callback_bad_request(
                    &frame.message_id,
                    "malformed bot message",
                ));
            }
        };
        let frame_key = format!("frame:{}", frame.message_id);
        let message_key = message.msg_id.clone().unwrap_or_else(|| frame_key.clone());
        if self.recent.contains(&message_key) || self.recent.contains(&frame_key) {
            debug!(message = "DingTalk message delivered again; acknowledged, not relayed twice.", account = %self.account);
            crate::metrics::count_drop("duplicate");
            return Step::reply(frames::callback_ok(&frame.message_id));
        }
        if !message.is_group() {
            debug!(message = "DingTalk message outside a group chat; not relayed.", account = %self.account);
            crate::metrics::count_drop("not_group");
            return Step::reply(frames::callback_ok(&frame.message_id));
        }
        let segments = self.segments(&message).await;
        if segments.is_empty() {
            debug!(message = "Empty DingTalk message; not relayed.", account = %self.account);
            crate::metrics::count_drop("empty");
            return Step::reply(frames::callback_ok(&frame.message_id));
        }
        let envelope = self.envelope(frame, message, &message_key, segments);
        match self.ingress.publish(envelope).await {
            Ok(()) => {
                self.recent.insert(&message_key);
                self.recent.insert(&frame_key);
                metrics::counter!(
                    crate::metrics::MESSAGES_RECEIVED,
                    "account" => self.account.clone(),
                    "platform" => Platform::Dingtalk.as_str()
                )
                .increment(1);
                Step::reply(frames::callback_ok(&frame.message_id))
            }
            Err(crate::IngressError::Busy { .. }) => {
                // Flow control: qunbridge holds as much as it can keep. No ACK, so DingTalk
                // delivers it again later (and dedup absorbs any copy).
                debug!(message = "DingTalk message refused: at capacity; not acknowledged.", account = %self.account);
                crate::metrics::count_rejected(&self.account, "busy");
                Step::default()
            }
            Err(error) => {
                // No ACK: the platform may deliver it again, and then it is tried again.
                warn!(message = "DingTalk message not accepted by the broker; not acknowledged.", account = %self.account, %error);
                Step::default()
            }
        }
    }

    /// Publishes the member envelopes of a group event; the ACK goes back only once the broker
    /// has every one of them (a redelivered event publishes the same ids again, and dedup
    /// absorbs the copies). Other event types and unreadable events are counted and
    /// acknowledged: they would read no better the next time.
    async fn event(&mut self, frame: &DownFrame) -> Step {
        let envelopes = match events::parse_event(&self.account, frame) {
            Ok(GroupEvent::Members(envelopes)) => envelopes,
            Ok(GroupEvent::Other(event_type)) => {
                note_unknown(Platform::Dingtalk, "event", &event_type);
                return Step::reply(frames::event_ok(&frame.message_id, "ignored"));
            }
            Err(error) => {
                warn!(message = "Dropping a malformed DingTalk event.", account = %self.account, event_type = %events::event_type(frame), %error);
                count_malformed();
                return Step::reply(frames::event_ok(&frame.message_id, "malformed"));
            }
        };
        let event_key = format!(
            "event:{}",
            frame.event_id.as_deref().unwrap_or(&frame.message_id)
        );
        if self.recent.contains(&event_key) {
            debug!(message = "DingTalk event delivered again; acknowledged, not published twice.", account = %self.account);
            crate::metrics::count_drop("duplicate");
            return Step::reply(frames::event_ok(&frame.message_id, "published"));
        }
        if let Some(envelope) = envelopes
            .iter()
            .find(|e| e.member.as_ref().is_some_and(|m| m.how.removes_bot()))
        {
            warn!(message = "DingTalk group disbanded: the bot is no longer in it, and relays into it will fail.", account = %self.account, group = %envelope.origin.group);
        }
        for envelope in envelopes {
            match self.ingress.publish(envelope).await {
                Ok(()) => {}
                Err(crate::IngressError::Busy { .. }) => {
                    debug!(message = "DingTalk event refused: at capacity; not acknowledged.", account = %self.account);
                    crate::metrics::count_rejected(&self.account, "busy");
                    return Step::default();
                }
                Err(error) => {
                    warn!(message = "DingTalk event not accepted by the broker; not acknowledged.", account = %self.account, %error);
                    return Step::default();
                }
            }
        }
        self.recent.insert(&event_key);
        Step::reply(frames::event_ok(&frame.message_id, "published"))
    }

    /// The segments of a bot message, with pictures resolved to download URLs (or shown as
    /// a picture placeholder when that fails). The pictures of one message are resolved at
    /// the same time, so a message with several waits for the slowest, not for their sum.
    async fn segments(&self, message: &BotMessage) -> Vec<Segment> {
        let resolved = futures_util::future::join_all(message.pieces.iter().map(|piece| async {
            match piece {
                Piece::Picture(code) => Some(self.picture(code).await),
                _ => None,
            }
        }))
        .await;
        let mut segments = Vec::with_capacity(message.pieces.len());
        for (piece, picture) in message.pieces.iter().zip(resolved) {
            match (piece, picture) {
                (Piece::Text(text), _) if text.is_empty() => {}
                (Piece::Text(text), _) => segments.push(Segment::text(text.clone())),
                (Piece::Picture(_), Some(picture)) => segments.push(picture),
                (Piece::Picture(_), None) => {}
                (Piece::Unsupported(hint), _) => {
                    segments.push(Segment::Unsupported { hint: hint.clone() })
                }
            }
        }
        segments
    }

    /// One picture: its download URL when DingTalk gives one in time, and its media
    /// reference (the download code) either way.
    async fn picture(&self, code: &str) -> Segment {
        let url = if self.source_urls {
            self.download_url(code).await
        } else {
            None
        };
        let media = (!code.trim().is_empty()).then(|| {
            MediaRef::new(
                Platform::Dingtalk,
                &self.account,
                code,
                MediaKind::Image,
                Locator::DingtalkDownload {
                    download_code: code.to_owned(),
                },
            )
        });
        Segment::Image {
            url,
            name: None,
            sticker: false,
            flash: false,
            summary: None,
            size: None,
            media,
        }
    }

    /// The download URL of a picture, when DingTalk gives one in time.
    async fn download_url(&self, code: &str) -> Option<String> {
        let resolved =
            tokio::time::timeout(DOWNLOAD_URL_TIMEOUT, self.api.download_url(code)).await;
        match resolved {
            Ok(Ok(url)) => Some(url),
            Ok(Err(error)) => {
                warn!(message = "DingTalk picture URL not resolved; relaying a placeholder.", account = %self.account, %error);
                None
            }
            Err(_) => {
                warn!(message = "DingTalk picture URL not resolved in time; relaying a placeholder.", account = %self.account);
                None
            }
        }
    }

    /// The envelope of a group bot message.
    fn envelope(
        &self,
        frame: &DownFrame,
        message: BotMessage,
        message_id: &str,
        segments: Vec<Segment>,
    ) -> Envelope {
        let message_id = message_id
            .strip_prefix("frame:")
            .unwrap_or(message_id)
            .to_owned();
        let name = message
            .sender_nick
            .clone()
            .unwrap_or_else(|| message.sender_id.clone());
        Envelope {
            v: ENVELOPE_VERSION,
            id: Envelope::make_id(&self.account, &message.conversation_id, &message_id),
            origin: Origin {
                platform: Platform::Dingtalk,
                account: self.account.clone(),
                group: message.conversation_id,
                message_id,
                group_name: message.conversation_title,
            },
            sender: Sender {
                id: message.sender_id,
                name,
                is_bot: false,
            },
            ts_ms: message.create_at.or(frame.time_ms).unwrap_or_else(now_ms),
            kind: Kind::Message,
            segments,
            member: None,
        }
    }
}
