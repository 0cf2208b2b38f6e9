//! The run loop both OneBot connectors share: register the configured bot, start the ordered
//! ingress task and the transport (forward connection or reverse listener), then answer the
//! relay's egress queue on whichever session takes actions, until the queue closes; then
//! close the sockets and let ingress drain. What differs per version comes in as a
//! [`Version`] (receiving) and an [`ActionSender`] (sending).
//!
//! Egress requests are sent concurrently, each in a task of its own with its own action and
//! `echo` (at most [`MAX_SENDS`] at once; at the bound no further request is taken until one
//! settles): the relay keeps order per destination group by sending a group's next request
//! only after the previous one's outcome, so a group whose implementation takes seconds to
//! answer `send_group_msg` delays no other group. Shutdown drains: the loop ends when the
//! relay closes the queue and every send in flight has settled.

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::error;

use super::ingress::publish_in_order;
use super::link::AccountLink;
use super::session::Sessions;
use super::transport::{forward_sessions, reverse_sessions, Transport};
use super::version::{ActionSender, Outgoing, Version};
use crate::context::{ConnectorContext, EgressRequest};
use crate::error::ConnectorError;
use crate::model::{Kind, Platform};
use crate::reverse_ws::SharedListeners;
use crate::{Connector, Secret};

/// Inbound messages buffered between the socket readers and ingress. When it is full the
/// readers stop reading event frames (see [`super::connection`]).
pub const EVENT_QUEUE: usize = 512;
/// Egress requests of one account being sent at once. The relay sends one request per
/// destination group at a time, so this bounds how many groups are served concurrently;
/// beyond it, requests wait in the relay's queue until a send settles.
pub const MAX_SENDS: usize = 64;

/// What both versions' settings say about reaching the implementation.
pub struct Reach<'a> {
    /// Forward or reverse WebSocket.
    pub transport: &'a Transport,
    /// Access token, sent (forward) or required (reverse).
    pub access_token: Option<&'a Secret>,
    /// The bot's user id when configured; otherwise learned at run time.
    pub self_id: Option<&'a str>,
}

impl<'a> Reach<'a> {
    /// How to reach an implementation, from an account's settings.
    pub fn new(
        transport: &'a Transport,
        access_token: Option<&'a Secret>,
        self_id: Option<&'a str>,
    ) -> Reach<'a> {
        Reach {
            transport,
            access_token,
            self_id,
        }
    }
}

/// What a version's settings give the shared connector: how to reach the implementation,
/// and the version's receiving and sending halves for one account.
pub trait VersionSettings: Send + Sync + 'static {
    /// The receiving half.
    type Version: Version;
    /// The sending half.
    type Sender: ActionSender;

    /// How to reach the implementation.
    fn reach(&self) -> Reach<'_>;

    /// The two halves for one account on `platform`.
    fn halves(&self, account: &str, platform: Platform) -> (Self::Version, Self::Sender);
}

/// A OneBot connector of either version, told apart by its settings type.
pub struct OneBotConnector<S> {
    /// The account's settings.
    settings: S,
    /// The daemon's reverse listeners: accounts on one address share it (told apart by
    /// `X-Self-ID`); unused by a forward transport.
    listeners: SharedListeners,
}

impl<S: VersionSettings> OneBotConnector<S> {
    /// A connector for one account; `listeners` is the daemon's set of shared reverse
    /// listeners.
    pub fn new(settings: S, listeners: SharedListeners) -> OneBotConnector<S> {
        OneBotConnector {
            settings,
            listeners,
        }
    }
}

impl<S: VersionSettings> Connector for OneBotConnector<S> {
    async fn run(self, ctx: ConnectorContext) -> Result<(), ConnectorError> {
        let (version, sender) = self.settings.halves(&ctx.account, ctx.platform);
        run(self.settings.reach(), &self.listeners, version, sender, ctx).await
    }
}

/// Runs a OneBot account until the relay closes its egress queue.
///
/// # Errors
/// [`ConnectorError::Bind`] when a reverse listen address cannot be bound.
pub async fn run<V: Version, A: ActionSender>(
    reach: Reach<'_>,
    listeners: &SharedListeners,
    version: V,
    sender: A,
    ctx: ConnectorContext,
) -> Result<(), ConnectorError> {
    let ConnectorContext {
        account,
        platform,
        ingress,
        mut egress,
        state,
        intake,
        bots,
    } = ctx;
    if let Some(id) = reach.self_id {
        bots.register(platform, id);
    }
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let link = Arc::new(AccountLink {
        account: account.clone(),
        platform,
        self_id: Mutex::new(reach.self_id.map(str::to_owned)),
        bots,
        sessions: Sessions::default(),
        events: events_tx,
        state,
        intake: intake.clone(),
        version,
    });
    // Sockets stay open after intake stops, until egress has drained.
    let sockets_stop = CancellationToken::new();
    let ingress_task = tokio::spawn(publish_in_order::<V>(
        account.clone(),
        ingress,
        events_rx,
        intake,
    ));
    let token = reach.access_token.map(|token| token.expose().to_owned());
    let transport = match reach.transport {
        Transport::Forward { url } => tokio::spawn(forward_sessions(
            url.clone(),
            token,
            link.clone(),
            sockets_stop.clone(),
        )),
        Transport::Reverse { listen } => {
            let accepting = reverse_sessions(
                *listen,
                listeners,
                token,
                link.clone(),
                sockets_stop.clone(),
            )?;
            tokio::spawn(accepting)
        }
    };

    answer_egress(&mut egress, &link, Arc::new(sender), &sockets_stop).await;
    sockets_stop.cancel();
    let _ = transport.await;
    // The link holds the events sender; dropping it lets the ingress task finish.
    drop(link);
    let _ = ingress_task.await;
    Ok(())
}

/// Answers the relay's egress queue until it closes: every request is sent in a task of its
/// own (at most [`MAX_SENDS`] at once), so a destination whose implementation is slow to
/// answer never holds back another one. Order within a destination group is the relay's:
/// it sends a group's next message only after this one's outcome. Returns once the queue
/// closed and every send in flight has settled.
async fn answer_egress<V: Version, A: ActionSender>(
    egress: &mut mpsc::Receiver<EgressRequest>,
    link: &Arc<AccountLink<V>>,
    sender: Arc<A>,
    sockets_stop: &CancellationToken,
) {
    let mut sends = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            Some(joined) = sends.join_next(), if !sends.is_empty() => settled(&link.account, joined),
            request = egress.recv(), if sends.len() < MAX_SENDS => match request {
                Some(request) => {
                    sends.spawn(send_one(
                        link.clone(),
                        sender.clone(),
                        request,
                        sockets_stop.clone(),
                    ));
                }
                None => break,
            },
        }
    }
    while let Some(joined) = sends.join_next().await {
        settled(&link.account, joined);
    }
}

/// Sends one request on whichever session takes actions (waiting for one) and reports its
/// outcome to the relay.
async fn send_one<V: Version, A: ActionSender>(
    link: Arc<AccountLink<V>>,
    sender: Arc<A>,
    request: EgressRequest,
    sockets_stop: CancellationToken,
) {
    let EgressRequest {
        outbound,
        related,
        mut reply,
    } = request;
    let session = tokio::select! {
        session = link.sessions.wait_for_actions(&sockets_stop) => session,
        // The relay stopped waiting (shutdown): the message stays with the broker.
        _ = reply.closed() => None,
    };
    let Some(session) = session else {
        // Dropping `reply` leaves the message with the broker for redelivery.
        return;
    };
    let out = Outgoing {
        session: &session,
        outbound: &outbound,
        related: &related,
    };
    let outcome = match outbound.kind {
        Kind::Message => sender.message(out).await,
        Kind::Recall => sender.recall(out).await,
    };
    let _ = reply.send(outcome);
}

/// Logs a send task that did not finish normally; its request was dropped unanswered, so
/// the relay leaves the message with the broker for redelivery.
fn settled(account: &str, joined: Result<(), JoinError>) {
    if let Err(error) = joined {
        error!(message = "An egress send task failed; the message stays with the broker.", account = %account, %error);
    }
}
