//! The run loop both OneBot connectors share: register the configured bot, start the ordered
//! ingress task and the transport (forward connection or reverse listener), then answer the
//! relay's egress queue on whichever session takes actions, until the queue closes; then
//! close the sockets and let ingress drain. What differs per version comes in as a
//! [`Version`] (receiving) and an [`ActionSender`] (sending).

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::ingress::publish_in_order;
use super::link::AccountLink;
use super::session::Sessions;
use super::transport::{forward_sessions, reverse_sessions};
use super::version::{ActionSender, Version};
use super::Transport;
use crate::context::{ConnectorContext, EgressRequest};
use crate::error::ConnectorError;
use crate::reverse_ws::SharedListeners;
use crate::Secret;

/// Inbound messages buffered between the socket readers and ingress.
const EVENT_QUEUE: usize = 512;

/// What both versions' settings say about reaching the implementation.
pub struct Reach<'a> {
    /// Forward or reverse WebSocket.
    pub transport: &'a Transport,
    /// Access token, sent (forward) or required (reverse).
    pub access_token: Option<&'a Secret>,
    /// The bot's user id when configured; otherwise learned at run time.
    pub self_id: Option<&'a str>,
    /// The reverse listeners shared between accounts (only used for a reverse transport).
    pub listeners: &'a SharedListeners,
}

/// Runs a OneBot account until the relay closes its egress queue.
///
/// # Errors
/// [`ConnectorError::Bind`] when a reverse listen address cannot be bound.
pub async fn run<V: Version, A: ActionSender>(
    reach: Reach<'_>,
    version: V,
    mut sender: A,
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
                reach.listeners,
                token,
                link.clone(),
                sockets_stop.clone(),
            )?;
            tokio::spawn(accepting)
        }
    };

    while let Some(request) = egress.recv().await {
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
            continue;
        };
        let outcome = sender.send(&session, &outbound, &related).await;
        let _ = reply.send(outcome);
    }
    sockets_stop.cancel();
    let _ = transport.await;
    // The link holds the events sender; dropping it lets the ingress task finish.
    drop(link);
    let _ = ingress_task.await;
    Ok(())
}
