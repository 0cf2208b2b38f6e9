//! Getting OneBot v12 sockets: forward (qunbridge connects to the implementation, ws path
//! `/`, token as `Authorization: Bearer` before the upgrade; reconnect with backoff, token
//! refusals reported and retried slowly) and reverse (the implementation connects to
//! qunbridge's listener, with or without a `Sec-WebSocket-Protocol` such as `12.walle-q`,
//! which the listener echoes when offered; ComWeChatClient offers none). The connection
//! handling is shared with OneBot v11 ([`crate::onebot_ws::transport`]); this file runs a v12
//! [`session`] on each socket.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::session::{self, AccountLink};
use crate::error::ConnectorError;
use crate::onebot_ws;
use crate::reverse_ws::{ClientRole, SharedListeners};

/// Keeps a forward connection up until `stop`.
pub async fn forward(
    url: String,
    token: Option<String>,
    link: Arc<AccountLink>,
    stop: CancellationToken,
) {
    let (account, state) = (link.account.clone(), link.state.clone());
    let sessions_stop = stop.clone();
    onebot_ws::forward(url, token, account, state, stop, move |ws| {
        session::run(
            ws,
            ClientRole::Universal,
            link.clone(),
            sessions_stop.clone(),
        )
    })
    .await;
}

/// Registers the account on its reverse listener; the returned future serves the sockets the
/// implementation opens until `stop`. v12 implementations send no `X-Self-ID`, so a v12
/// account needs a listen address of its own (config validation sees to it).
///
/// # Errors
/// [`ConnectorError::Bind`] when the listen address cannot be bound.
pub fn reverse(
    listen: SocketAddr,
    listeners: &SharedListeners,
    token: Option<String>,
    link: Arc<AccountLink>,
    stop: CancellationToken,
) -> Result<impl Future<Output = ()> + Send + 'static, ConnectorError> {
    let (account, self_id) = (link.account.clone(), link.self_id());
    let sessions_stop = stop.clone();
    onebot_ws::reverse(
        listen,
        listeners,
        account,
        self_id,
        token,
        stop,
        move |socket| {
            if let Some(id) = &socket.self_id {
                link.learn_self_id(id);
            }
            session::run(socket.ws, socket.role, link.clone(), sessions_stop.clone())
        },
    )
}
