//! The `api` connector (ARCHITECTURE.md §10): a generic HTTP endpoint for scripts, other bots
//! and the quickstart.
//!
//! - `POST /api/v1/groups/<group>/messages`: ingress into `<account>:<group>`, answered `202`
//!   with the envelope id only after the broker acknowledged the publish.
//! - `GET /api/v1/groups/<group>/events`: Server-Sent Events of what the relay sends to that
//!   group, with `Last-Event-ID` replay from a bounded per-group buffer.
//! - `GET /api/v1/ws`: a WebSocket with the same messages for every group as JSON frames.
//! - `GET /api/v1/media/<sha256>`: the bytes of a picture a message carried (its segment's
//!   `sha256`), from the media cache.
//!
//! A bearer token, when configured, is required on every route.

mod feed;
pub mod feed_log;
mod http;
mod pictures;
pub mod settings;
mod shared;
mod sse;
mod ws;

use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesOrdered, StreamExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::context::{
    now_ms, ConnectionState, ConnectorContext, EgressCommand, EgressRequest, PrepareRequest,
    SendReceipt,
};
use crate::error::ConnectorError;
use crate::{Connector, Secret};

pub use feed::Feeds;
pub use feed_log::{feed_key, Appended, FeedLog, FeedLogError};

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
            media,
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
            received: metrics::counter!(
                crate::metrics::MESSAGES_RECEIVED,
                "account" => account.clone(),
                "platform" => "api"
            ),
            feeds: feeds.clone(),
            media: media
                .service
                .as_ref()
                .map(|service| service.cache().clone()),
            intake: intake.clone(),
            streams_end: streams_end.clone(),
        });
        let server = tokio::spawn(http::serve(listener, shared, intake.clone()));
        state.set(ConnectionState::Up, None);

        // Egress runs until the relay closes the queue, which it does after shutdown once
        // nothing more is in flight. Up to SEND_WINDOW appends are in flight at once (they
        // share the store's commits); they are applied and answered in the order they came.
        // A message with pictures to fetch first waits in `preparing`, and so does every
        // message after it while any does, so that appends keep the order of arrival; a
        // message without pictures, when none waits, goes straight to `sending`.
        let media = Arc::new(media);
        let mut sending = FuturesOrdered::new();
        let mut preparing = FuturesOrdered::new();
        loop {
            tokio::select! {
                biased;
                Some(()) = sending.next(), if !sending.is_empty() => {}
                Some(ready) = preparing.next(), if !preparing.is_empty() => {
                    sending.push_back(deliver(feeds.clone(), ready));
                }
                command = egress.recv(), if sending.len() + preparing.len() < SEND_WINDOW => match command {
                    // Nothing is uploaded ahead: pictures are served by hash.
                    Some(EgressCommand::Prepare(PrepareRequest { done, .. })) => {
                        let _ = done.send(());
                    }
                    Some(EgressCommand::Send(EgressRequest { outbound, reply, .. })) => {
                        if preparing.is_empty() && !pictures::needs_prepare(media.mode, &outbound) {
                            let json = crate::model::to_json_string(&*outbound);
                            sending.push_back(deliver(feeds.clone(), pictures::Ready { outbound, json, reply }));
                        } else {
                            preparing.push_back(pictures::prepare(media.clone(), outbound, reply));
                        }
                    }
                    None => break,
                },
            }
        }
        while let Some(ready) = preparing.next().await {
            sending.push_back(deliver(feeds.clone(), ready));
        }
        while sending.next().await.is_some() {}
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

/// Sends the relay may have waiting on this connector at once.
const SEND_WINDOW: usize = 256;

/// Puts one message in its group's feed: first on disk when there is a durable log (a
/// redelivered message already there is not added again), then in memory for consumers, and
/// answers the relay. The append is queued when this is called, so calls made one after
/// another are numbered in that order however their futures are polled.
fn deliver(feeds: Arc<Feeds>, ready: pictures::Ready) -> BoxFuture<'static, ()> {
    let pictures::Ready {
        outbound,
        json,
        reply,
    } = ready;
    let json = match json {
        Ok(json) => json,
        Err(error) => {
            let _ = reply.send(Err(crate::SendError::Permanent(format!(
                "cannot encode outbound message: {error}"
            ))));
            return Box::pin(async {});
        }
    };
    let append = feeds.log().map(|(account, log)| {
        log.append(
            account.to_owned(),
            outbound.group.clone(),
            feed_key(account, &outbound.id, &outbound.group),
            json.clone(),
            feeds.capacity(),
        )
    });
    Box::pin(async move {
        let idempotent = append.is_some();
        let seq = match append {
            Some(append) => match append.await {
                Ok(appended) if appended.fresh => {
                    Ok((feeds.push(&outbound.group, json, Some(appended.seq)), false))
                }
                Ok(appended) => Ok((appended.seq, true)),
                Err(error) => Err(crate::SendError::Retryable(error.to_string())),
            },
            None => Ok((feeds.push(&outbound.group, json, None), false)),
        };
        // The relay stops waiting only on its own shutdown; nothing to do then.
        let _ = reply.send(seq.map(|(seq, repeated)| SendReceipt {
            message_ids: vec![seq.to_string()],
            idempotent,
            repeated,
        }));
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::api::{Appended, FeedLog, FeedLogError};
    use crate::{Kind, Outbound, Platform};
    use tokio::sync::oneshot;

    /// A feed log in memory: appends by key, like the store's.
    #[derive(Default)]
    struct KeyedLog {
        /// Keys appended, in order.
        keys: Mutex<Vec<String>>,
    }

    impl FeedLog for KeyedLog {
        fn epoch(&self) -> u64 {
            1
        }
        fn recent(
            &self,
            _account: &str,
            _group: &str,
            _limit: usize,
        ) -> Result<(Vec<(u64, String)>, u64), FeedLogError> {
            Ok((Vec::new(), 1))
        }
        fn append(
            &self,
            _account: String,
            _group: String,
            key: String,
            _json: String,
            _keep: usize,
        ) -> BoxFuture<'static, Result<Appended, FeedLogError>> {
            let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
            let seq = match keys.iter().position(|k| *k == key) {
                Some(at) => Appended {
                    seq: at as u64 + 1,
                    fresh: false,
                },
                None => {
                    keys.push(key);
                    Appended {
                        seq: keys.len() as u64,
                        fresh: true,
                    }
                }
            };
            Box::pin(async move { Ok(seq) })
        }
    }

    /// What `deliver` answers for one message on `feeds`.
    async fn receipt_of(feeds: Arc<Feeds>) -> SendReceipt {
        let outbound = Arc::new(Outbound::sample(Kind::Message, Platform::Qq, "ops"));
        let (reply, answer) = oneshot::channel();
        deliver(
            feeds,
            pictures::Ready {
                json: crate::model::to_json_string(&*outbound),
                outbound,
                reply,
            },
        )
        .await;
        match answer.await {
            Ok(Ok(receipt)) => receipt,
            other => panic!("no receipt: {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_send_is_idempotent_only_when_the_feed_is_durable() {
        let durable = Arc::new(Feeds::durable(16, "hub", Arc::new(KeyedLog::default())));
        let first = receipt_of(durable.clone()).await;
        assert!(first.idempotent, "a durable append is keyed by the message");
        assert_eq!(first.message_ids, ["1"]);
        assert!(!first.repeated);
        let again = receipt_of(durable).await;
        assert_eq!(
            again.message_ids,
            ["1"],
            "the same message is not added twice"
        );
        assert!(again.repeated, "the second send found the first");
        let in_memory = receipt_of(Arc::new(Feeds::new(16, 1))).await;
        assert!(
            !in_memory.idempotent,
            "a feed held only in memory is not durable"
        );
    }
}
