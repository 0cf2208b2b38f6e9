//! WebSocket listeners that platform implementations connect to (OneBot "reverse"
//! WebSocket). One listen address may serve several accounts: the first account registered
//! on an address binds it, later ones join, and connections are told apart by the
//! `X-Self-ID` header. The bearer token (header, or `access_token` in the query) is checked
//! in constant time before the upgrade: a missing token is refused with 401, a wrong one with
//! 403, so an unauthorised peer never gets a socket.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::WebSocketStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::auth::{check_bearer, AuthOutcome};
use crate::error::ConnectorError;

/// Largest WebSocket message or frame accepted from a platform peer.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// How long a peer may take to complete the WebSocket handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// WebSocket limits for platform sockets: every socket a connector opens or accepts (OneBot
/// forward and reverse, DingTalk Stream) uses them.
pub fn socket_config() -> WebSocketConfig {
    socket_config_up_to(MAX_MESSAGE_BYTES)
}

/// [`socket_config`] with a larger cap: a OneBot account that fetches pictures through its
/// implementation (`get_file` with `type: "data"`) takes answers as large as a picture.
pub fn socket_config_up_to(max_message_bytes: usize) -> WebSocketConfig {
    let cap = max_message_bytes.max(MAX_MESSAGE_BYTES);
    WebSocketConfig::default()
        .max_message_size(Some(cap))
        .max_frame_size(Some(cap))
        .read_buffer_size(READ_BUFFER_BYTES)
}

/// Bytes a socket read asks for at most. tungstenite zeroes that much of its read buffer
/// before every read, and its default (128 KiB) made that memset 2–3 % of the daemon's CPU
/// relaying OneBot events of half a kilobyte; a large frame (a picture fetched through
/// `get_file`) just takes more reads.
const READ_BUFFER_BYTES: usize = 16 * 1024;

/// Reports a failed read from a platform socket and returns a short reason for the account
/// state. tokio-tungstenite ends the stream after any read error, so the connection is lost
/// either way (the peer reconnects, or the connector does); what was lost is counted:
/// a frame over [`MAX_MESSAGE_BYTES`] as `messages_dropped_total{reason="oversized"}`, a text
/// frame that is not UTF-8 as `reason="malformed"`.
pub fn read_failure(account: &str, error: &WsError) -> &'static str {
    match error {
        WsError::Capacity(detail) => {
            warn!(message = "Dropping a WebSocket frame over the size limit; the connection ends.", account = %account, %detail, limit = MAX_MESSAGE_BYTES);
            crate::metrics::count_drop("oversized");
            "frame over the size limit"
        }
        WsError::Utf8(_) => {
            warn!(message = "Dropping a text frame that is not UTF-8; the connection ends.", account = %account);
            crate::metrics::count_drop("malformed");
            "text frame that is not UTF-8"
        }
        other => {
            debug!(message = "WebSocket read failed.", account = %account, error = %other);
            "read error"
        }
    }
}

/// The close frame to send after a read failure that is the peer's fault (1009 for a frame
/// over the limit, 1007 for text that is not UTF-8), so a well-behaved peer learns why.
pub fn close_after(error: &WsError) -> Option<CloseFrame> {
    let (code, reason) = match error {
        WsError::Capacity(_) => (CloseCode::Size, "frame over the size limit"),
        WsError::Utf8(_) => (CloseCode::Invalid, "text frame that is not UTF-8"),
        _ => return None,
    };
    Some(CloseFrame {
        code,
        reason: reason.into(),
    })
}

/// What a peer said it is in `X-Client-Role`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientRole {
    /// Events and API calls on one socket (or no role header).
    Universal,
    /// API calls only.
    Api,
    /// Events only.
    Event,
}

/// An accepted, authorised socket handed to the account it belongs to.
pub struct IncomingSocket {
    /// The WebSocket, after the handshake.
    pub ws: WebSocketStream<TcpStream>,
    /// `X-Self-ID`, the bot's platform user id, when sent.
    pub self_id: Option<String>,
    /// `X-Client-Role`.
    pub role: ClientRole,
    /// Remote address, for logs.
    pub peer: SocketAddr,
}

/// An account that accepts sockets on a listen address.
pub struct ReverseTarget {
    /// Account id, for logs.
    pub account: String,
    /// The bot's user id (`self_id` in the config); required when several accounts share
    /// the address.
    pub self_id: Option<String>,
    /// Token the peer must present.
    pub token: Option<String>,
    /// Largest WebSocket message accepted from its implementation (at least
    /// [`MAX_MESSAGE_BYTES`]); accounts sharing an address share the largest.
    pub max_message_bytes: usize,
    /// Where accepted sockets go.
    pub sockets: mpsc::Sender<IncomingSocket>,
}

/// One bound address and the accounts on it.
struct Listener {
    /// Accounts registered here.
    targets: Mutex<Vec<Arc<ReverseTarget>>>,
    /// Stops the accept loop when the last account leaves.
    stop: CancellationToken,
}

/// The shared listeners of one daemon; cheap to clone.
#[derive(Clone, Default)]
pub struct SharedListeners {
    /// Address → listener.
    listeners: Arc<Mutex<HashMap<SocketAddr, Arc<Listener>>>>,
}

impl std::fmt::Debug for SharedListeners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedListeners")
    }
}

/// Keeps an account registered on a listener; dropping it unregisters the account and closes
/// the listener when it was the last one.
pub struct Registration {
    /// The address.
    addr: SocketAddr,
    /// The account.
    account: String,
    /// The registry.
    listeners: SharedListeners,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut map = self
            .listeners
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(listener) = map.get(&self.addr) {
            let mut targets = listener
                .targets
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            targets.retain(|t| t.account != self.account);
            if targets.is_empty() {
                listener.stop.cancel();
                drop(targets);
                map.remove(&self.addr);
            }
        }
    }
}

impl SharedListeners {
    /// Registers an account on `addr`, binding it if it is the first.
    ///
    /// # Errors
    /// [`ConnectorError::Bind`] when the address cannot be bound.
    pub fn register(
        &self,
        addr: SocketAddr,
        target: ReverseTarget,
    ) -> Result<Registration, ConnectorError> {
        let account = target.account.clone();
        let mut map = self
            .listeners
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(listener) = map.get(&addr) {
            listener
                .targets
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(Arc::new(target));
        } else {
            let bind_error = |source| ConnectorError::Bind {
                addr: addr.to_string(),
                source,
            };
            let std_listener = std::net::TcpListener::bind(addr).map_err(bind_error)?;
            std_listener.set_nonblocking(true).map_err(bind_error)?;
            let tcp = TcpListener::from_std(std_listener).map_err(bind_error)?;
            let listener = Arc::new(Listener {
                targets: Mutex::new(vec![Arc::new(target)]),
                stop: CancellationToken::new(),
            });
            info!(message = "Reverse WebSocket listening.", listen = %addr);
            tokio::spawn(accept_loop(tcp, listener.clone()));
            map.insert(addr, listener);
        }
        Ok(Registration {
            addr,
            account,
            listeners: self.clone(),
        })
    }
}

/// Accepts connections until the last account leaves.
async fn accept_loop(tcp: TcpListener, listener: Arc<Listener>) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = listener.stop.cancelled() => return,
            accepted = tcp.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(message = "Accept failed on reverse WebSocket listener.", %error);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let listener = listener.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(stream, peer, &listener)).await
            {
                Ok(Some((target, socket))) => {
                    if target.sockets.send(socket).await.is_err() {
                        debug!(message = "Account stopped before taking its socket.", account = %target.account);
                    }
                }
                Ok(None) => {}
                Err(_) => debug!(message = "WebSocket handshake timed out.", %peer),
            }
        });
    }
}

/// What the handshake callback decided.
struct Verdict {
    /// The account the socket belongs to.
    target: Arc<ReverseTarget>,
    /// `X-Self-ID`.
    self_id: Option<String>,
    /// `X-Client-Role`.
    role: ClientRole,
}

/// An HTTP refusal before the upgrade.
fn refuse(status: StatusCode, text: &str) -> ErrorResponse {
    let mut response = ErrorResponse::new(Some(text.to_owned()));
    *response.status_mut() = status;
    response
}

/// A header as trimmed text.
fn header<'a>(request: &'a Request, name: &str) -> Option<&'a str> {
    request
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// The `access_token` query parameter, for peers that cannot set headers.
fn query_token(request: &Request) -> Option<String> {
    let query = request.uri().query()?;
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        (key == "access_token").then(|| {
            percent_encoding::percent_decode_str(value)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// Picks the account, checks the token, accepts or refuses; `None` when refused.
async fn handshake(
    stream: TcpStream,
    peer: SocketAddr,
    listener: &Listener,
) -> Option<(Arc<ReverseTarget>, IncomingSocket)> {
    let mut verdict: Option<Verdict> = None;
    let targets: Vec<Arc<ReverseTarget>> = listener
        .targets
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    // tungstenite's callback type returns its (large) HTTP error response by value.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, mut response: Response| {
        let self_id = header(request, "x-self-id").map(str::to_owned);
        let target = if targets.len() == 1 {
            targets.first().cloned()
        } else {
            targets
                .iter()
                .find(|t| t.self_id.is_some() && t.self_id == self_id)
                .cloned()
        };
        let Some(target) = target else {
            warn!(message = "Reverse WebSocket refused: no account for this X-Self-ID.", %peer, self_id = self_id.as_deref().unwrap_or("-"));
            return Err(refuse(StatusCode::FORBIDDEN, "unknown X-Self-ID"));
        };
        // Some implementations wrap the token in angle brackets; accept that too.
        let presented = header(request, "authorization")
            .map(|h| h.replace(['<', '>'], ""))
            .or_else(|| query_token(request).map(|t| format!("Bearer {t}")));
        match check_bearer(
            target.token.as_deref(),
            presented.as_deref().map(str::as_bytes),
        ) {
            AuthOutcome::Allowed => {}
            outcome => {
                let (status, reason) = if outcome == AuthOutcome::Missing {
                    (StatusCode::UNAUTHORIZED, "missing")
                } else {
                    (StatusCode::FORBIDDEN, "wrong")
                };
                warn!(message = "Reverse WebSocket refused: access token.", account = %target.account, %peer, reason);
                metrics::counter!(crate::metrics::AUTH_FAILURES, "account" => target.account.clone())
                    .increment(1);
                return Err(refuse(status, "a valid access token is required"));
            }
        }
        let role = match header(request, "x-client-role").map(str::to_ascii_lowercase) {
            Some(role) if role == "api" => ClientRole::Api,
            Some(role) if role == "event" => ClientRole::Event,
            _ => ClientRole::Universal,
        };
        // Echo an offered subprotocol (OneBot v12 clients may offer one; others send none).
        if let Some(offered) = header(request, "sec-websocket-protocol") {
            let first = offered.split(',').next().unwrap_or(offered).trim();
            if let Ok(value) = HeaderValue::from_str(first) {
                response
                    .headers_mut()
                    .insert("sec-websocket-protocol", value);
            }
        }
        verdict = Some(Verdict {
            target,
            self_id,
            role,
        });
        Ok(response)
    };
    let cap = targets
        .iter()
        .map(|target| target.max_message_bytes)
        .max()
        .unwrap_or(MAX_MESSAGE_BYTES);
    let ws = match tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        callback,
        Some(socket_config_up_to(cap)),
    )
    .await
    {
        Ok(ws) => ws,
        Err(error) => {
            debug!(message = "Reverse WebSocket handshake failed.", %peer, %error);
            return None;
        }
    };
    let verdict = verdict?;
    info!(message = "Reverse WebSocket connected.", account = %verdict.target.account, %peer, self_id = verdict.self_id.as_deref().unwrap_or("-"));
    Some((
        verdict.target,
        IncomingSocket {
            ws,
            self_id: verdict.self_id,
            role: verdict.role,
            peer,
        },
    ))
}

#[cfg(test)]
mod tests {
    use tokio_tungstenite::tungstenite::error::CapacityError;

    use super::*;

    #[tokio::test]
    async fn a_frame_many_reads_long_arrives_whole_over_a_real_socket() {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let mut ws = tokio_tungstenite::accept_async_with_config(
                stream,
                Some(socket_config_up_to(4 * MAX_MESSAGE_BYTES)),
            )
            .await
            .expect("handshake");
            let mut texts = Vec::new();
            while let Some(Ok(Message::Text(text))) = ws.next().await {
                texts.push(text.to_string());
            }
            texts
        });
        let (mut client, _) = tokio_tungstenite::connect_async(format!("ws://{address}"))
            .await
            .expect("connect");
        // A picture fetched through `get_file`: 2 MB, 128 reads of the 16 KiB the socket asks
        // for at most; then a small frame behind it.
        let large = "b".repeat(2_000_000);
        client
            .send(Message::Text(large.clone().into()))
            .await
            .expect("send");
        client
            .send(Message::Text("after".into()))
            .await
            .expect("send");
        client.close(None).await.expect("close");
        let texts = server.await.expect("server");
        assert_eq!(texts.len(), 2);
        assert_eq!(texts[0], large);
        assert_eq!(texts[1], "after");
    }

    #[test]
    fn read_failures_that_are_the_peers_fault_are_answered_with_a_close_code() {
        let oversized = WsError::Capacity(CapacityError::MessageTooLong {
            size: MAX_MESSAGE_BYTES + 1,
            max_size: MAX_MESSAGE_BYTES,
        });
        assert_eq!(
            close_after(&oversized).map(|c| c.code),
            Some(CloseCode::Size)
        );
        assert_eq!(read_failure("a", &oversized), "frame over the size limit");
        let not_utf8 = WsError::Utf8("bad".into());
        assert_eq!(
            close_after(&not_utf8).map(|c| c.code),
            Some(CloseCode::Invalid)
        );
        assert_eq!(read_failure("a", &not_utf8), "text frame that is not UTF-8");
        assert!(close_after(&WsError::ConnectionClosed).is_none());
        assert_eq!(read_failure("a", &WsError::AlreadyClosed), "read error");
    }
}
