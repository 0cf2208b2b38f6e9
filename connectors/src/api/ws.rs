//! `GET /api/v1/ws`: a WebSocket carrying what the relay sends to every group of the account
//! as JSON text frames (`?group=<g>` narrows it to one group). Incoming frames other than
//! pings and close are ignored. A consumer slower than the live channel loses the oldest
//! messages, counted and logged. Events already waiting when one is sent go out with it: the
//! frames are queued and the socket is flushed once, so a busy feed costs one write per
//! burst rather than one per event, while a lone event is written at once.

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use futures_util::SinkExt;
use serde::Deserialize;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::broadcast::Receiver;
use tracing::debug;

use super::feed::FeedEvent;
use super::shared::Shared;
use super::sse::report_lagged;

/// Largest frame accepted from a consumer; they have nothing to send but pings.
const MAX_INCOMING_FRAME: usize = 64 * 1024;

/// Most events queued on the socket before it is flushed: bounds what one burst holds in the
/// socket's write buffer.
const BURST: usize = 64;

/// Query of the WebSocket route.
#[derive(Debug, Deserialize)]
pub(super) struct WsQuery {
    /// Only this group's messages, when given.
    #[serde(default)]
    group: Option<String>,
}

/// Handler of the WebSocket route.
pub(super) async fn upgrade(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<WsQuery>,
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade
        .max_frame_size(MAX_INCOMING_FRAME)
        .max_message_size(MAX_INCOMING_FRAME)
        .on_upgrade(move |socket| stream_to(socket, shared, query.group))
}

/// Sends live events to one consumer until it leaves or the daemon stops.
async fn stream_to(mut socket: WebSocket, shared: Arc<Shared>, only: Option<String>) {
    let mut live = shared.feeds.subscribe_all();
    loop {
        tokio::select! {
            _ = shared.streams_end.cancelled() => {
                let _ = socket.send(Message::Close(None)).await;
                return;
            }
            incoming = socket.recv() => match incoming {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(other)) => debug!(message = "Ignoring frame from API WebSocket consumer.", kind = ?std::mem::discriminant(&other)),
            },
            received = live.recv() => match received {
                Ok(event) => {
                    if send_burst(&mut socket, &mut live, &shared, only.as_deref(), event).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Lagged(lost)) => report_lagged(&shared.account, only.as_deref(), lost),
                Err(RecvError::Closed) => return,
            },
        }
    }
}

/// Queues `first` and whatever else is already waiting in `live` (up to [`BURST`] events,
/// each filtered by `only`) on the socket, then flushes it once. A lag seen while draining is
/// reported as [`stream_to`] reports it.
///
/// # Errors
/// The socket's error when the consumer is gone.
async fn send_burst(
    socket: &mut WebSocket,
    live: &mut Receiver<Arc<FeedEvent>>,
    shared: &Shared,
    only: Option<&str>,
    first: Arc<FeedEvent>,
) -> Result<(), axum::Error> {
    let mut next = Some(first);
    let mut queued = 0;
    while let Some(event) = next.take() {
        if only.is_none_or(|group| group == event.group) {
            socket
                .feed(Message::Text(event.json.as_str().into()))
                .await?;
            queued += 1;
        }
        if queued == BURST {
            break;
        }
        next = match live.try_recv() {
            Ok(event) => Some(event),
            Err(TryRecvError::Lagged(lost)) => {
                report_lagged(&shared.account, only, lost);
                live.try_recv().ok()
            }
            Err(TryRecvError::Empty | TryRecvError::Closed) => None,
        };
    }
    if queued == 0 {
        return Ok(());
    }
    socket.flush().await
}
