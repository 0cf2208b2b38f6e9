//! The `api` connector (ARCHITECTURE.md §10): a generic HTTP endpoint for scripts, other bots
//! and the quickstart.
//!
//! - `POST /api/v1/groups/<group>/messages`: ingress into `<account>:<group>`, answered `202`
//!   with the envelope id only after the broker acknowledged the publish.
//! - `GET /api/v1/groups/<group>/events`: Server-Sent Events of what the relay sends to that
//!   group, with `Last-Event-ID` replay from a bounded per-group buffer.
//! - `GET /api/v1/ws`: a WebSocket with the same messages for every group as JSON frames.
//!
//! A bearer token, when configured, is required on every route.

mod feed;
pub mod feed_log;
mod http;
pub mod settings;
mod shared;
mod sse;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::context::{now_ms, ConnectionState, ConnectorContext, EgressRequest, SendReceipt};
use crate::error::ConnectorError;
use crate::{Connector, Secret};

pub use feed::Feeds;
pub use feed_log::{Appended, FeedLog, FeedLogError};

/// Default number of messages kept per group for SSE replay.
pub const DEFAULT_BUFFER: usize = 1000;

/// Settings of one `api` account, resolved from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiSettings {
    /// Address the HTTP endpoint listens on.
    pub listen: SocketAddr,
    /// Bearer token required on every request; `None` leaves the endpoint open (loopback use).
    pub token: Option<Secret>,
    /// Messages kept per group for consumers that reconnect with `Last-Event-ID`.
    pub buffer: usize,
}

/// The `api` connector.
pub struct ApiConnector {
    /// Its settings.
    settings: ApiSettings,
    /// The durable log the feeds live in, so consumers resume across restarts (`None`:
    /// memory only).
    feed_log: Option<Arc<dyn FeedLog>>,
}

impl ApiConnector {
    /// A connector for one `api` account whose feeds are kept in `feed_log` (`None`: in
    /// memory only).
    pub fn new(settings: ApiSettings, feed_log: Option<Arc<dyn FeedLog>>) -> ApiConnector {
        ApiConnector { settings, feed_log }
    }
}

impl Connector for ApiConnector {
    async fn run(self, ctx: ConnectorContext) -> Result<(), ConnectorError> {
        let ConnectorContext {
            account,
            platform: _,
            ingress,
            mut egress,
            state,
            intake,
            ..
        } = ctx;
        let listener = TcpListener::bind(self.settings.listen)
            .await
            .map_err(|source| ConnectorError::Bind {
                addr: self.settings.listen.to_string(),
                source,
            })?;
        info!(
            message = "API endpoint listening.",
            account = %account,
            listen = %self.settings.listen
        );
        let feeds = Arc::new(match self.feed_log {
            Some(log) => Feeds::durable(self.settings.buffer, &account, log),
            None => Feeds::new(self.settings.buffer, now_ms()),
        });
        let streams_end = CancellationToken::new();
        let shared = Arc::new(shared::Shared {
            account: account.clone(),
            token: self
                .settings
                .token
                .as_ref()
                .map(|token| token.expose().to_owned()),
            ingress,
            feeds: feeds.clone(),
            intake: intake.clone(),
            streams_end: streams_end.clone(),
        });
        let server = tokio::spawn(http::serve(listener, shared, intake.clone()));
        state.set(ConnectionState::Up, None);

        // Egress runs until the relay closes the queue, which it does after shutdown once
        // nothing more is in flight.
        while let Some(EgressRequest {
            outbound, reply, ..
        }) = egress.recv().await
        {
            let outcome = match serde_json::to_string(&outbound) {
                Ok(json) => deliver(&feeds, &outbound, json).await,
                Err(error) => Err(crate::SendError::Permanent(format!(
                    "cannot encode outbound message: {error}"
                ))),
            };
            // The relay stops waiting only on its own shutdown; nothing to do then.
            let _ = reply.send(outcome);
        }
        streams_end.cancel();
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                warn!(message = "API server ended with an error.", account = %account, %error)
            }
            Err(error) => warn!(message = "API server task failed.", account = %account, %error),
        }
        state.set(ConnectionState::Stopped, None);
        Ok(())
    }
}

/// Puts one message in its group's feed: first on disk when there is a durable log (a
/// redelivered message already there is not added again), then in memory for consumers.
async fn deliver(
    feeds: &Feeds,
    outbound: &crate::Outbound,
    json: String,
) -> Result<SendReceipt, crate::SendError> {
    let seq = match feeds.log() {
        Some((account, log)) => {
            let key = format!("{}\u{1f}{}", outbound.id, outbound.group);
            let appended = log
                .append(
                    account.to_owned(),
                    outbound.group.clone(),
                    key,
                    json.clone(),
                    feeds.capacity(),
                )
                .await
                .map_err(|error| crate::SendError::Retryable(error.to_string()))?;
            if appended.fresh {
                feeds.push(&outbound.group, json, Some(appended.seq))
            } else {
                appended.seq
            }
        }
        None => feeds.push(&outbound.group, json, None),
    };
    Ok(SendReceipt {
        message_ids: vec![seq.to_string()],
    })
}
