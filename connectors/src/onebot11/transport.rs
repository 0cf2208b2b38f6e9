//! Getting OneBot v11 sockets: forward (qunbridge connects to the implementation, with
//! reconnect, exponential backoff and jitter; a 401/403 refusal is reported as such and
//! retried on the slow schedule, not in a tight loop) and reverse (the implementation connects
//! to a listener shared by the accounts on that address). The connection handling itself is
//! shared with OneBot v12 ([`crate::onebot_ws::transport`]); this file runs a v11
//! [`session`] on each socket and learns the bot's id from `X-Self-ID`.

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
/// implementation opens until `stop`.
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
