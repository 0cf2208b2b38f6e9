//! What the OneBot v11 and v12 connectors share on a WebSocket. Both versions frame actions
//! the same way (`{action, params, echo}` answered by `{status, retcode, data, echo}`), reach
//! the implementation the same two ways, keep the same bookkeeping per account and run the
//! same loop per socket; only decoding, rendering and sending differ, and those come in
//! through the traits in [`version`]:
//!
//! - [`connector`]: the connector run loop (transport, ordered ingress, egress queue).
//! - [`connection`]: one live socket: reads, binary frames, heartbeat watchdog, teardown and
//!   the account's state.
//! - [`link`]: what the sockets of one account share (who the bot is, sessions, queues).
//! - [`session`]: one live socket as egress uses it ([`Session::call`]), the live sockets of an
//!   account ([`Sessions`]), and the writer task with its pings.
//! - [`transport`]: the forward connection (with reconnect, backoff and the slow schedule for
//!   token refusals) and registration on a shared reverse listener.
//! - [`ingress`]: publishing inbound messages in arrival order, a window of them in flight.
//! - [`echo`]: requests awaiting their response, matched by `echo`.
//! - [`outcome`]: reading an action response.
//! - [`recall`]: deleting the known copies of a recalled message.
//! - [`members`]: member notices named before publishing, member counts, the member-list
//!   poll.
//! - [`media_source`]: the account as the media service's source of the pictures it saw.
//! - [`frame`]: the decoding context, frame errors and the readers both decoders use.
//! - [`version`]: what a version supplies ([`Version`], [`ActionSender`]).
//! - `testing` (tests only): numbered envelopes and a scripted `EnvelopeSink`.
//!
//! Event decoding and rendering live in `onebot11`/`onebot12`.

pub mod connection;
pub mod connector;
pub mod echo;
pub mod frame;
pub mod ingress;
pub mod link;
pub mod media_source;
pub mod members;
pub mod outcome;
pub mod recall;
pub mod session;
#[cfg(test)]
pub mod testing;
pub mod transport;
pub mod version;

pub use connector::{OneBotConnector, Reach, VersionSettings};
pub use echo::{request, Pending};
pub use outcome::Outcome;
pub use session::{spawn_writer, CallError, Session, Sessions, ACTION_TIMEOUT, WRITE_QUEUE};
pub use transport::{
    connect, connect_up_to, forward, redact, reverse, Admission, ConnectFailure, Transport,
    WsClientStream,
};
pub use version::{ActionSender, BotStatus, Decoded, Event, Outgoing, Version};
