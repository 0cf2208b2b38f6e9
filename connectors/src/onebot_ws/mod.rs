//! What the OneBot v11 and v12 connectors share on a WebSocket. Both versions frame actions
//! the same way (`{action, params, echo}` answered by `{status, retcode, data, echo}`), reach
//! the implementation the same two ways, and keep the same bookkeeping per account:
//!
//! - [`echo`]: requests awaiting their response, matched by `echo`.
//! - [`frame`]: the decoding context, frame errors and tolerant id/text readers.
//! - [`session`]: one live socket as egress uses it ([`Session::call`]), the live sockets of an
//!   account ([`Sessions`]), and the writer task with its pings.
//! - [`transport`]: the forward connection (with reconnect, backoff and the slow schedule for
//!   token refusals) and registration on a shared reverse listener.
//!
//! Event decoding and rendering differ per version and live in `onebot11`/`onebot12`.

pub mod echo;
pub mod frame;
pub mod session;
pub mod transport;

use std::net::SocketAddr;

pub use echo::{request, Pending};
pub use session::{spawn_writer, CallError, Session, Sessions, ACTION_TIMEOUT, WRITE_QUEUE};
pub use transport::{connect, forward, redact, reverse, ConnectFailure, WsClientStream};

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
