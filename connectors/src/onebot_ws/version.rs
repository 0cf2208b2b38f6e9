//! What tells the two OneBot versions apart inside the shared session and connector: how a
//! frame is decoded into the few things a session acts on ([`Event`]), how an inbound message
//! becomes something ingress can publish in order, which action names the bot, and how
//! messages are sent. `onebot11` and `onebot12` each implement [`Version`] and
//! [`ActionSender`]; everything else runs the same for both.

use std::future::Future;

use serde_json::Value;

use super::frame::{DecodeContext, FrameError};
use super::outcome::Outcome;
use super::session::Session;
use crate::context::{RelatedMessages, SendReceipt};
use crate::error::SendError;
use crate::media::service::Resolved;
use crate::media::Locator;
use crate::model::{Envelope, Outbound};

/// One bot named by a v12 `status_update` (v11 has no such event).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotStatus {
    /// `self.user_id`.
    pub user_id: String,
    /// `online`: false when the implementation's bot is logged out.
    pub online: bool,
}

/// What a frame means to the session loop, whichever version it came in.
pub enum Event<M> {
    /// A group message or recall for ingress. It shows the link is alive, and is dropped
    /// (counted) once intake has stopped.
    Inbound(M),
    /// The bot's own message, or another configured bot's: never relayed, but alive.
    OwnMessage,
    /// The implementation (re)connected (v11 `lifecycle`, v12 `meta.connect`): logged, not
    /// counted as a heartbeat (some implementations send it once and then go quiet).
    Connected {
        /// Name and version of the implementation, when it says (v12 only).
        implementation: Option<(String, String)>,
    },
    /// A heartbeat, with its interval in milliseconds when the implementation tells it: the
    /// watchdog then expects the next within a few intervals.
    Heartbeat {
        /// Milliseconds until the next heartbeat.
        interval_ms: Option<u64>,
    },
    /// The implementation's view of its bots (v12 `status_update`): it counts as a heartbeat,
    /// can name the bot, and reports it logged out or back.
    Status {
        /// `status.good`: false when the implementation itself is unwell.
        good: Option<bool>,
        /// The bots on this connection.
        bots: Vec<BotStatus>,
    },
    /// The answer to one of our actions, matched by `echo`.
    Response {
        /// The `echo` we sent, as a string.
        echo: String,
        /// The whole response object.
        body: Value,
    },
    /// An event the relay does not use; still a sign of life.
    Ignored,
}

/// A decoded frame plus the bot's id when the frame named it (v11 `self_id`, v12 `self`).
pub struct Decoded<M> {
    /// What the frame means.
    pub event: Event<M>,
    /// The bot this connection speaks for, when the frame says.
    pub self_id: Option<String>,
}

impl<M> Decoded<M> {
    /// A frame that names no bot.
    pub fn of(event: Event<M>) -> Decoded<M> {
        Decoded {
            event,
            self_id: None,
        }
    }
}

/// The version-specific half of receiving: decoding and readying messages for ingress.
pub trait Version: Send + Sync + 'static {
    /// A decoded group message or recall, before ingress admits it.
    type Inbound: Send;
    /// What waits in the ordered ingress queue (v12 messages may still be looking up names).
    type Queued: Send + 'static;
    /// The action that asks which bot this connection speaks for (`get_login_info` in v11,
    /// `get_self_info` in v12).
    const WHO_AM_I: &'static str;
    /// Logged when a binary frame is not UTF-8 text.
    const BINARY_PROBLEM: &'static str;
    /// Whether pictures come as bytes in an action's answer (v12 `get_file` with `type:
    /// "data"`), so the account takes WebSocket messages as large as a picture when it
    /// fetches pictures; v11 answers `get_image` with a URL and keeps the 1 MiB cap.
    const PICTURES_IN_ANSWERS: bool = false;
    /// Whether `get_group_info` tells a fresh `member_count` (OneBot v11: NapCat, Lagrange,
    /// go-cqhttp, with `no_cache`), so the member counts ask it per group rather than trust
    /// `get_group_list`'s cached item; v12 implementations tell no count there (MEMBERS.md).
    const COUNT_IN_GROUP_INFO: bool = false;

    /// Decodes one text frame.
    ///
    /// # Errors
    /// [`FrameError`] when the frame cannot be understood (logged and counted; the
    /// connection goes on).
    fn decode(
        &self,
        text: &str,
        cx: &DecodeContext<'_>,
    ) -> Result<Decoded<Self::Inbound>, FrameError>;

    /// Reads an action response the way this version words them.
    fn outcome(body: &Value) -> Outcome;

    /// Queues an inbound message for ingress; `lookups` gives the session to ask
    /// follow-up actions on, if the version needs any.
    fn admit(
        &self,
        inbound: Self::Inbound,
        lookups: impl FnOnce() -> Option<Session>,
    ) -> Self::Queued;

    /// The envelope to publish, once ready (waits for lookups in flight); `None` when the
    /// message was lost on the way (logged and counted by the version).
    fn ready(account: &str, queued: Self::Queued) -> impl Future<Output = Option<Envelope>> + Send;

    /// Queues an envelope that is complete already (the member counts and the member-list
    /// poll of [`super::members`] publish through the same ordered ingress).
    fn queue(envelope: Envelope) -> Self::Queued;

    /// A group or user id as this version's action parameters spell it (v12: a string; v11
    /// overrides it: a number when the id is one).
    fn id_param(id: &str) -> Value {
        Value::String(id.to_owned())
    }
}

/// One message to send, with everything a version needs to send it.
#[derive(Clone, Copy)]
pub struct Outgoing<'a> {
    /// The connection to call the actions on.
    pub session: &'a Session,
    /// What to send, rendered for this destination.
    pub outbound: &'a Outbound,
    /// What the relay's message map knows (reply target, quote, copies to recall).
    pub related: &'a RelatedMessages,
}

/// The version-specific half of sending: rendering and calling the send and recall actions.
/// Both answer [`SendError`]: retryable for a lost connection or an unanswered action, else
/// as the version maps the implementation's retcode. The connector runs the sends of
/// different destination groups concurrently (the relay sends one message per group at a
/// time), so both take `&self`: what a sender keeps must be shareable.
pub trait ActionSender: Send + Sync + 'static {
    /// Asks the implementation for a picture this account saw (`locator`): a fresh URL
    /// (v11 `get_image`) or its bytes (v12 `get_file` with `type: "data"`). The error says
    /// why not, for the log; the destination then sends the placeholder.
    fn resolve_media<'a>(
        &'a self,
        session: &'a Session,
        locator: &'a Locator,
    ) -> impl Future<Output = Result<Resolved, String>> + Send + 'a {
        let _ = (session, locator);
        async { Err("this OneBot version cannot fetch pictures".to_owned()) }
    }

    /// Uploads what sending `out` would upload, sending nothing: the relay asks this before
    /// the send takes its pacing token. An implementation whose pictures travel inside the
    /// message (v11 `base64://`) has nothing to do ahead.
    fn prepare(&self, out: Outgoing<'_>) -> impl Future<Output = ()> + Send;

    /// Sends a relayed message.
    fn message(
        &self,
        out: Outgoing<'_>,
    ) -> impl Future<Output = Result<SendReceipt, SendError>> + Send;

    /// Takes back the relayed copies of a recalled message.
    fn recall(
        &self,
        out: Outgoing<'_>,
    ) -> impl Future<Output = Result<SendReceipt, SendError>> + Send;
}
