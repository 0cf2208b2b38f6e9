//! WeChat groups (and QQ groups of v12 implementations) through OneBot v12: ComWeChatClient
//! and others (walle-q, …). PROTOCOLS.md §2 has the wire format and ComWeChatClient's quirks.
//!
//! - [`transport`]: forward WebSocket (we connect, with reconnect and backoff) and reverse
//!   WebSocket (the implementation connects; with or without a subprotocol).
//! - [`session`]: one live socket (frames, `meta.connect`/`status_update`/heartbeat,
//!   watchdog, actions by `echo`).
//! - [`event`]: frames to envelopes; [`resolve`] and [`names`]: sender names, mention names
//!   and picture URLs looked up concurrently within a short wait, names cached with a TTL;
//!   [`ingress`]: publishing in arrival order.
//! - [`action`]: responses, retcodes and rendering; [`egress`]: `send_message`,
//!   `upload_file`, `delete_message`.
//! - This file: settings and the connector.

pub mod action;
pub mod egress;
pub mod event;
pub mod ingress;
pub mod names;
pub mod resolve;
pub mod session;
pub mod settings;
pub mod transport;

use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::resolve::Resolver;
use self::session::AccountLink;
use crate::context::{ConnectorContext, EgressRequest};
use crate::error::ConnectorError;
use crate::onebot_ws::Sessions;
use crate::{Connector, Secret};

pub use crate::onebot_ws::Transport;

/// Group events buffered between the socket readers and ingress.
const EVENT_QUEUE: usize = 512;

/// Settings of one OneBot v12 account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneBot12Settings {
    /// Forward or reverse WebSocket.
    pub transport: Transport,
    /// Access token, sent (forward) or required (reverse).
    pub access_token: Option<Secret>,
    /// The bot's user id, when configured (otherwise learned from `status_update`).
    pub self_id: Option<String>,
    /// Send a message's pictures as pictures (`upload_file` by URL, then an `image`
    /// segment, each a WeChat message of its own) instead of their URLs in the text.
    pub send_images: bool,
}

/// The OneBot v12 connector.
pub struct OneBot12Connector {
    /// Its settings.
    settings: OneBot12Settings,
}

impl OneBot12Connector {
    /// A connector for one account.
    pub fn new(settings: OneBot12Settings) -> OneBot12Connector {
        OneBot12Connector { settings }
    }
}

impl Connector for OneBot12Connector {
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
            resolver: Arc::new(Resolver::new(account.clone())),
        });
        // Sockets stay open after intake stops, until egress has drained.
        let sockets_stop = CancellationToken::new();
        let ingress_task = tokio::spawn(ingress::publish_in_order(
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

        let mut sender = egress::Egress::new(account.clone(), self.settings.send_images);
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
}
