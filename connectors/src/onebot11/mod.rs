//! QQ groups (and WeChat groups of v11 implementations) through OneBot v11: NapCat,
//! Lagrange.OneBot, LLOneBot, go-cqhttp. PROTOCOLS.md §1 has the wire format and quirks.
//!
//! - [`transport`]: forward WebSocket (we connect, with reconnect and backoff) and reverse
//!   WebSocket (the implementation connects to a listener that may serve several accounts).
//! - [`session`]: one live socket (frames, heartbeat watchdog, actions by `echo`).
//! - [`event`]: frames to envelopes; [`cq`]: the CQ-code string format.
//! - [`action`]: requests, responses and rendering of outbound messages.
//! - This file: the connector, ingress in order, egress (`send_group_msg`, `delete_msg`).

pub mod action;
pub mod cq;
pub mod event;
pub mod session;
pub mod settings;
pub mod transport;

use std::sync::{Arc, Mutex};

use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use self::action::Outcome;
use self::session::{AccountLink, CallError, Sessions};
use crate::context::{ConnectorContext, EgressRequest, Ingress, SendReceipt};
use crate::error::{ConnectorError, SendError};
use crate::model::{Envelope, Kind};
use crate::{Connector, Secret};

/// Group events buffered between the socket reader and ingress.
const EVENT_QUEUE: usize = 512;
/// Retcodes that mean the request itself is wrong (bad request, unknown action): retrying
/// will not help.
const PERMANENT_RETCODES: [i64; 2] = [1400, 1404];

pub use crate::onebot_ws::Transport;

/// Settings of one OneBot v11 account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneBot11Settings {
    /// Forward or reverse WebSocket.
    pub transport: Transport,
    /// Access token, sent (forward) or required (reverse).
    pub access_token: Option<Secret>,
    /// The bot's user id, when configured (needed to tell accounts apart on a shared reverse
    /// listener; otherwise learned at run time).
    pub self_id: Option<String>,
}

/// The OneBot v11 connector.
pub struct OneBot11Connector {
    /// Its settings.
    settings: OneBot11Settings,
}

impl OneBot11Connector {
    /// A connector for one account.
    pub fn new(settings: OneBot11Settings) -> OneBot11Connector {
        OneBot11Connector { settings }
    }
}

impl Connector for OneBot11Connector {
    async fn run(self, ctx: ConnectorContext) -> Result<(), ConnectorError> {
        let ConnectorContext {
            account,
            platform,
            ingress,
            mut egress,
            state,
            shutdown,
            bots,
            listeners,
            ..
        } = ctx;
        if let Some(id) = &self.settings.self_id {
            bots.register(platform, id);
        }
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let link = Arc::new(AccountLink {
            account: account.clone(),
            platform,
            self_id: Mutex::new(self.settings.self_id.clone()),
            bots,
            sessions: Sessions::default(),
            events: events_tx,
            state,
            intake: shutdown.clone(),
        });
        // Sockets stay open after intake stops, until egress has drained.
        let sockets_stop = CancellationToken::new();
        let ingress_task = tokio::spawn(publish_in_order(
            account.clone(),
            ingress,
            events_rx,
            shutdown.clone(),
        ));
        let transport = match &self.settings.transport {
            Transport::Forward { url } => tokio::spawn(transport::forward(
                url.clone(),
                self.settings
                    .access_token
                    .as_ref()
                    .map(|token| token.expose().to_owned()),
                link.clone(),
                sockets_stop.clone(),
            )),
            Transport::Reverse { listen } => {
                let accepting = transport::reverse(
                    *listen,
                    &listeners,
                    self.settings
                        .access_token
                        .as_ref()
                        .map(|token| token.expose().to_owned()),
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
            let outcome = match outbound.kind {
                Kind::Message => {
                    let message = action::render_message(&outbound, &related, platform);
                    let params = json!({
                        "group_id": action::id_value(&outbound.group),
                        "message": message,
                        "auto_escape": false,
                    });
                    send_outcome(session.call("send_group_msg", params).await)
                }
                Kind::Recall => {
                    let mut result = Ok(SendReceipt::default());
                    for id in &related.recall {
                        let params = json!({ "message_id": action::id_value(id) });
                        let outcome = send_outcome(session.call("delete_msg", params).await);
                        if let Err(error) = &outcome {
                            warn!(message = "Recall of a relayed copy failed.", account = %account, group = %outbound.group, %error);
                        }
                        result = result.and(outcome.map(|_| SendReceipt::default()));
                    }
                    if related.recall.is_empty() {
                        debug!(message = "Nothing to recall: no relayed copy known here.", account = %account, group = %outbound.group);
                    }
                    result
                }
            };
            let _ = reply.send(outcome);
        }
        sockets_stop.cancel();
        let _ = transport.await;
        // The link holds the events sender; dropping it lets the ingress task finish.
        drop(link);
        let _ = ingress_task.await;
        Ok(())
    }
}

/// Maps an action's result to a send outcome.
fn send_outcome(result: Result<serde_json::Value, CallError>) -> Result<SendReceipt, SendError> {
    let body = result.map_err(|error| SendError::Retryable(error.to_string()))?;
    match action::outcome(&body) {
        Outcome::Ok(data) => Ok(SendReceipt {
            message_ids: event::id_of(data.get("message_id")).into_iter().collect(),
        }),
        Outcome::Failed { retcode, message } if PERMANENT_RETCODES.contains(&retcode) => Err(
            SendError::Permanent(format!("retcode {retcode}: {message}")),
        ),
        // 100 (blocked by the server) and NapCat's 1200 (risk-control timeout) included:
        // retried with backoff a bounded number of times by the relay.
        Outcome::Failed { retcode, message } => Err(SendError::Retryable(format!(
            "retcode {retcode}: {message}"
        ))),
    }
}

/// Publishes decoded events in arrival order. OneBot cannot redeliver, so a failed publish
/// is retried (with backoff) until it succeeds or the daemon stops.
async fn publish_in_order(
    account: String,
    ingress: Ingress,
    mut events: mpsc::Receiver<Envelope>,
    intake: CancellationToken,
) {
    while let Some(envelope) = events.recv().await {
        ingress
            .publish_until_accepted(&account, envelope, &intake)
            .await;
    }
}
