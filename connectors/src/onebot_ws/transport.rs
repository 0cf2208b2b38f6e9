//! Getting OneBot sockets, for either protocol version: forward (qunbridge connects to the
//! implementation, with reconnect, exponential backoff and jitter; a 401/403 refusal is
//! reported as `auth_failed` and retried on the slow schedule, never in a tight loop) and
//! reverse (the implementation connects to a listener shared by the accounts on that
//! address; see [`crate::reverse_ws`]). [`forward`] and [`reverse`] hand each socket to a
//! closure; [`forward_sessions`] and [`reverse_sessions`] run an account's sessions on them.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::connection;
use super::link::AccountLink;
use super::version::Version;
use crate::backoff::Backoff;
use crate::context::{ConnectionState, StateReporter};
use crate::error::ConnectorError;
use crate::reverse_ws::{
    socket_config_up_to, ClientRole, IncomingSocket, ReverseTarget, SharedListeners,
};

/// How qunbridge reaches a OneBot implementation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// qunbridge connects to the implementation's WebSocket server.
    Forward {
        /// `ws://` or `wss://` URL.
        url: String,
    },
    /// The implementation connects to qunbridge.
    Reverse {
        /// Listen address (may be shared with other accounts).
        listen: SocketAddr,
    },
}

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection that lived this long counts as healthy: the backoff starts over.
const HEALTHY_AFTER: Duration = Duration::from_secs(60);
/// Sockets accepted for one account but not yet taken by it.
const SOCKET_QUEUE: usize = 8;

/// The client side of a forward connection.
pub type WsClientStream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Why a connection attempt failed.
#[derive(Debug)]
pub enum ConnectFailure {
    /// The implementation refused our token (401/403).
    Auth(StatusCode),
    /// Anything else (refused, timeout, bad handshake).
    Other(String),
}

/// A URL without its query (which may hold `access_token`), for logs.
pub fn redact(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

/// One forward connection attempt, with the token as `Authorization: Bearer` (checked by the
/// implementation before the upgrade). No subprotocol is offered: implementations that do not
/// echo one (ComWeChatClient) would otherwise fail the handshake.
///
/// # Errors
/// [`ConnectFailure::Auth`] for a 401/403 answer, [`ConnectFailure::Other`] for anything else.
pub async fn connect(url: &str, token: Option<&str>) -> Result<WsClientStream, ConnectFailure> {
    connect_up_to(url, token, crate::reverse_ws::MAX_MESSAGE_BYTES).await
}

/// [`connect`], taking WebSocket messages of up to `max_message_bytes` from the
/// implementation (an account that fetches pictures through it takes larger answers).
///
/// # Errors
/// As [`connect`].
pub async fn connect_up_to(
    url: &str,
    token: Option<&str>,
    max_message_bytes: usize,
) -> Result<WsClientStream, ConnectFailure> {
    let mut request = url
        .into_client_request()
        .map_err(|error| ConnectFailure::Other(format!("bad URL: {error}")))?;
    if let Some(token) = token {
        let value = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
            ConnectFailure::Other("the access token is not a valid header value".into())
        })?;
        request.headers_mut().insert("authorization", value);
    }
    let attempt = tokio_tungstenite::connect_async_with_config(
        request,
        Some(socket_config_up_to(max_message_bytes)),
        true,
    );
    match tokio::time::timeout(CONNECT_TIMEOUT, attempt).await {
        Err(_) => Err(ConnectFailure::Other(format!(
            "no answer within {CONNECT_TIMEOUT:?}"
        ))),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(WsError::Http(response)))
            if matches!(
                response.status(),
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
            ) =>
        {
            Err(ConnectFailure::Auth(response.status()))
        }
        // tungstenite's error texts name the URL at most without its query; keep it that way.
        Ok(Err(error)) => Err(ConnectFailure::Other(error.to_string())),
    }
}

/// Keeps a forward connection up until `stop`: connects, runs `run_session` on the socket
/// until it ends, waits per the backoff, and starts over.
pub async fn forward<F, Fut>(
    url: String,
    token: Option<String>,
    max_message_bytes: usize,
    account: String,
    state: StateReporter,
    stop: CancellationToken,
    mut run_session: F,
) where
    F: FnMut(WsClientStream) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut backoff = Backoff::reconnect();
    let mut slow = Backoff::slow();
    let mut first = true;
    loop {
        if stop.is_cancelled() {
            return;
        }
        if !first {
            metrics::counter!(crate::metrics::RECONNECTS, "account" => account.clone())
                .increment(1);
        }
        first = false;
        let attempt = tokio::select! {
            _ = stop.cancelled() => return,
            attempt = connect_up_to(&url, token.as_deref(), max_message_bytes) => attempt,
        };
        let delay = match attempt {
            Ok(ws) => {
                info!(message = "Connected to the OneBot implementation.", account = %account, url = %redact(&url));
                let started = tokio::time::Instant::now();
                run_session(ws).await;
                if started.elapsed() >= HEALTHY_AFTER {
                    backoff.reset();
                }
                slow.reset();
                backoff.next().unwrap_or(Duration::from_secs(1))
            }
            Err(ConnectFailure::Auth(status)) => {
                let delay = slow.next().unwrap_or(Duration::from_secs(60));
                warn!(message = "The OneBot implementation refused the access token; check `access_token`.", account = %account, status = status.as_u16(), retry_in_s = delay.as_secs());
                metrics::counter!(crate::metrics::AUTH_FAILURES, "account" => account.clone())
                    .increment(1);
                state.set(ConnectionState::AuthFailed, Some(format!("HTTP {status}")));
                delay
            }
            Err(ConnectFailure::Other(reason)) => {
                let delay = backoff.next().unwrap_or(Duration::from_secs(1));
                warn!(message = "Cannot connect to the OneBot implementation; retrying.", account = %account, url = %redact(&url), %reason, retry_in_ms = delay.as_millis() as u64);
                state.set(ConnectionState::Down, Some(reason));
                delay
            }
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// Who a reverse listener admits for one account.
pub struct Admission {
    /// Account id, for logs.
    pub account: String,
    /// The bot's user id, which picks the account when several share the address.
    pub self_id: Option<String>,
    /// Token the implementation must present.
    pub token: Option<String>,
    /// Largest WebSocket message taken from the implementation.
    pub max_message_bytes: usize,
}

/// Registers an account on its reverse listener (the token is checked there, before the
/// upgrade); the returned future hands every socket the implementation opens to `on_socket`,
/// each in its own task, until `stop`, then waits for those tasks.
///
/// # Errors
/// [`ConnectorError::Bind`] when the listen address cannot be bound.
pub fn reverse<F, Fut>(
    listen: SocketAddr,
    listeners: &SharedListeners,
    admission: Admission,
    stop: CancellationToken,
    mut on_socket: F,
) -> Result<impl Future<Output = ()> + Send + 'static, ConnectorError>
where
    F: FnMut(IncomingSocket) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (sockets_tx, mut sockets) = mpsc::channel(SOCKET_QUEUE);
    let registration = listeners.register(
        listen,
        ReverseTarget {
            account: admission.account,
            self_id: admission.self_id,
            token: admission.token,
            max_message_bytes: admission.max_message_bytes,
            sockets: sockets_tx,
        },
    )?;
    Ok(async move {
        let _registration = registration;
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            let socket = tokio::select! {
                _ = stop.cancelled() => break,
                socket = sockets.recv() => match socket {
                    Some(socket) => socket,
                    None => break,
                },
            };
            tasks.spawn(on_socket(socket));
            // Reap finished connections so the set stays as small as the live ones.
            while tasks.try_join_next().is_some() {}
        }
        while tasks.join_next().await.is_some() {}
    })
}

/// Keeps a forward connection of an account up until `stop`, running a session on each
/// socket.
pub async fn forward_sessions<V: Version>(
    url: String,
    token: Option<String>,
    link: Arc<AccountLink<V>>,
    stop: CancellationToken,
) {
    let (account, state) = (link.account.clone(), link.state.clone());
    let sessions_stop = stop.clone();
    let cap = link.max_message_bytes;
    forward(url, token, cap, account, state, stop, move |ws| {
        connection::run(
            ws,
            ClientRole::Universal,
            link.clone(),
            sessions_stop.clone(),
        )
    })
    .await;
}

/// Registers an account on its reverse listener; the returned future runs a session on every
/// socket the implementation opens until `stop`. A socket's `X-Self-ID` (v11
/// implementations send it; v12 ones do not, so a v12 account has a listen address of its
/// own) names the bot.
///
/// # Errors
/// [`ConnectorError::Bind`] when the listen address cannot be bound.
pub fn reverse_sessions<V: Version>(
    listen: SocketAddr,
    listeners: &SharedListeners,
    token: Option<String>,
    link: Arc<AccountLink<V>>,
    stop: CancellationToken,
) -> Result<impl Future<Output = ()> + Send + 'static, ConnectorError> {
    let admission = Admission {
        account: link.account.clone(),
        self_id: link.self_id(),
        token,
        max_message_bytes: link.max_message_bytes,
    };
    let sessions_stop = stop.clone();
    reverse(listen, listeners, admission, stop, move |socket| {
        if let Some(id) = &socket.self_id {
            link.learn_self_id(id);
        }
        connection::run(socket.ws, socket.role, link.clone(), sessions_stop.clone())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_query_in_logs() {
        assert_eq!(
            redact("ws://127.0.0.1:3001/?access_token=s3cret"),
            "ws://127.0.0.1:3001/"
        );
        assert_eq!(redact("ws://h/"), "ws://h/");
    }

    #[tokio::test]
    async fn a_refused_token_is_told_apart_from_other_failures() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buffer = [0u8; 1024];
                let _ = stream.read(&mut buffer).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n")
                    .await;
            }
        });
        let refused = connect(&format!("ws://{addr}/"), Some("wrong")).await;
        assert!(
            matches!(refused, Err(ConnectFailure::Auth(StatusCode::UNAUTHORIZED))),
            "{refused:?}"
        );
        let closed = {
            let port = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind")
                .local_addr()
                .expect("addr")
                .port();
            connect(&format!("ws://127.0.0.1:{port}/"), None).await
        };
        assert!(
            matches!(closed, Err(ConnectFailure::Other(_))),
            "{closed:?}"
        );
        assert!(matches!(
            connect("not a url", None).await,
            Err(ConnectFailure::Other(_))
        ));
    }
}
