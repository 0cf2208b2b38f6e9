//! What the relay hands a connector when it starts it: the way in (an [`Ingress`] that
//! resolves only once the broker has the envelope), the way out (a queue of
//! [`EgressRequest`]s, each answered when the platform took the message), a place to report
//! the account's state, and the intake token that tells it to stop taking input. Only what
//! every connector needs is here; what one connector alone needs (the `api` feed log, the
//! OneBot reverse listeners) goes to its constructor.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::error::{IngressError, SendError};
use crate::model::{Envelope, Outbound, Platform};

/// A boxed future, as object-safe async methods return it (the relay's stores and sinks use
/// it too, so it is re-exported here beside the traits that need it).
pub use futures_util::future::BoxFuture;

/// A publish already handed to the broker client: resolves once the broker acknowledged it.
pub type Confirmed = BoxFuture<'static, Result<(), IngressError>>;

/// Where ingress envelopes go. The relay implements it by publishing on the `in/` topic. A
/// submit first reserves room for the envelope (flow control: it waits a bounded time and
/// then fails with [`IngressError::Busy`]), then hands it to the broker client; submits
/// awaited one after another reach the broker in that order. The returned [`Confirmed`]
/// resolves only after the broker acknowledged the publish (QoS 1 PUBACK), so a connector
/// can acknowledge its platform (HTTP 202, DingTalk ACK) only for what is safe, and can keep
/// several publishes in flight without losing their order.
pub trait EnvelopeSink: Send + Sync + 'static {
    /// Reserves room for one envelope and queues its publish; the result resolves on PUBACK.
    fn submit(&self, envelope: Envelope) -> BoxFuture<'_, Result<Confirmed, IngressError>>;
}

/// A cheap-to-clone handle connectors use to hand inbound messages to the relay.
#[derive(Clone)]
pub struct Ingress {
    /// The relay's publisher behind this account.
    sink: Arc<dyn EnvelopeSink>,
}

impl Ingress {
    /// Wraps a sink.
    pub fn new(sink: Arc<dyn EnvelopeSink>) -> Ingress {
        Ingress { sink }
    }

    /// Publishes an envelope; resolves once the broker has it.
    ///
    /// # Errors
    /// [`IngressError`] when the broker did not acknowledge it (the caller must not
    /// acknowledge its platform then).
    pub async fn publish(&self, envelope: Envelope) -> Result<(), IngressError> {
        self.sink.submit(envelope).await?.await
    }

    /// Queues an envelope's publish (after waiting for room, see [`EnvelopeSink`]) and returns
    /// what resolves on the broker's acknowledgement: a connector that awaits its submits in
    /// order and its confirmations later keeps a window of publishes in flight, in order.
    ///
    /// # Errors
    /// [`IngressError::Busy`] when there was no room in time, [`IngressError::Closed`] when
    /// the relay stopped.
    pub async fn submit(&self, envelope: Envelope) -> Result<Confirmed, IngressError> {
        self.sink.submit(envelope).await
    }
}

/// One message for a connector to send, with the channel its outcome goes back on. The relay
/// acknowledges the MQTT message only after the outcome arrives, so an unanswered request
/// (crash, shutdown) is redelivered later.
#[derive(Debug)]
pub struct EgressRequest {
    /// What to send, already rendered for this destination (shared with the relay's queue,
    /// not copied).
    pub outbound: Arc<Outbound>,
    /// Messages of the destination group this one relates to, as the relay's message map
    /// knows them (reply target, copies to recall).
    pub related: RelatedMessages,
    /// Where the connector reports the outcome.
    pub reply: oneshot::Sender<Result<SendReceipt, SendError>>,
}

/// What the relay asks of a connector's egress. Every egress loop matches on it, so a
/// connector cannot mistake a preparation for a send.
#[derive(Debug)]
pub enum EgressCommand {
    /// Send a message and answer how it went.
    Send(EgressRequest),
    /// Upload the pictures of a message and send nothing: the relay asks this before the
    /// send takes its pacing token, so that the send, when its turn comes, finds its
    /// pictures uploaded (or knows they could not be) and goes out at once.
    Prepare(PrepareRequest),
}

/// The pictures a destination is about to send, to upload ahead of the send.
#[derive(Debug)]
pub struct PrepareRequest {
    /// A message holding the pictures (shared with the relay's queue, not copied). It is
    /// not sent: a connector only uploads what sending it would upload.
    pub outbound: Arc<Outbound>,
    /// Answered (or dropped) once the uploads are over, however they went: what failed is
    /// remembered for the send, which then shows the placeholder.
    pub done: oneshot::Sender<()>,
}

/// What the relay's message map knows about messages of the destination group that an
/// outbound message refers to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelatedMessages {
    /// For a reply: the destination's own id of the message replied to, for a native reply.
    pub reply_to: Option<String>,
    /// For a reply whose target has no copy in the destination: a short excerpt of it
    /// (`Ann: first words…`) to quote instead.
    pub quote: Option<String>,
    /// For a recall: the destination ids of the copies to take back.
    pub recall: Vec<String>,
}

/// The bot accounts of this deployment as the platforms know them (`(platform, user id)`),
/// so ingress can drop what another configured account said: that is a relayed copy, and
/// relaying it again would loop.
#[derive(Debug, Clone, Default)]
pub struct BotRegistry {
    /// Known bot user ids per platform.
    ids: Arc<std::sync::RwLock<std::collections::HashSet<(Platform, String)>>>,
}

impl BotRegistry {
    /// Records a bot account's user id once a connector has learned it.
    pub fn register(&self, platform: Platform, user_id: &str) {
        self.ids
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert((platform, user_id.to_owned()));
    }

    /// True when `user_id` on `platform` is one of the configured bot accounts.
    pub fn is_bot(&self, platform: Platform, user_id: &str) -> bool {
        self.ids
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .contains(&(platform, user_id.to_owned()))
    }
}

/// What a platform said after accepting a send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SendReceipt {
    /// Platform message ids of the copies sent (for recall and reply mapping); empty when the
    /// platform returns none.
    pub message_ids: Vec<String>,
    /// True when the send was itself a durable write under the message's own key, so that a
    /// second send of the same message is recognized and not shown twice (the `api` feed's
    /// idempotency key): the relay may then acknowledge the delivery before its send log is
    /// written, since that log only guards against what the destination already guards.
    pub idempotent: bool,
    /// True when the destination already had this message under its key (a redelivered copy
    /// of an idempotent send): nothing new was shown, so nothing is counted again.
    pub repeated: bool,
}

/// The state of an account's connection to its platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionState {
    /// Not connected yet.
    Starting,
    /// Connected and relaying.
    Up,
    /// Lost; reconnecting.
    Down,
    /// Refused by the platform (bad credentials); retried slowly.
    AuthFailed,
    /// Stopped on shutdown.
    Stopped,
}

/// The account state plus when it last changed, as the relay shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AccountState {
    /// Current state.
    pub state: ConnectionState,
    /// When it changed, milliseconds since the Unix epoch.
    pub since_ms: u64,
    /// Short reason for the last change, when there is one (never a secret).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl AccountState {
    /// A state that begins now.
    pub fn now(state: ConnectionState, reason: Option<String>) -> AccountState {
        AccountState {
            state,
            since_ms: now_ms(),
            reason,
        }
    }
}

/// Milliseconds since the Unix epoch, 0 if the clock is before it.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Lets a connector report its state; the relay watches the other end.
#[derive(Debug, Clone)]
pub struct StateReporter {
    /// The watched value.
    tx: Arc<watch::Sender<AccountState>>,
}

impl StateReporter {
    /// A reporter starting in [`ConnectionState::Starting`], and the receiver that watches it.
    pub fn new() -> (StateReporter, watch::Receiver<AccountState>) {
        let (tx, rx) = watch::channel(AccountState::now(ConnectionState::Starting, None));
        (StateReporter { tx: Arc::new(tx) }, rx)
    }

    /// Reports a state; repeating the current state (without a new reason) changes nothing.
    pub fn set(&self, state: ConnectionState, reason: Option<String>) {
        self.tx.send_if_modified(|current| {
            if current.state == state && current.reason == reason {
                return false;
            }
            *current = AccountState::now(state, reason);
            true
        });
    }
}

/// Everything a connector gets from the relay.
pub struct ConnectorContext {
    /// The configured account id, used in logs, metric labels and envelope ids.
    pub account: String,
    /// The platform the account is on.
    pub platform: Platform,
    /// Where inbound messages go.
    pub ingress: Ingress,
    /// Messages to send. The relay closes it when no more will come (after shutdown).
    pub egress: mpsc::Receiver<EgressCommand>,
    /// Where the connector reports its connection state.
    pub state: StateReporter,
    /// Cancelled when the daemon stops taking input: accept nothing new, finish what is in
    /// flight (egress keeps running until the relay closes `egress`).
    pub intake: CancellationToken,
    /// Every configured bot account's platform user id, shared by all connectors.
    pub bots: BotRegistry,
    /// What connectors use for pictures (the address guard).
    pub media: crate::media::MediaContext,
}
