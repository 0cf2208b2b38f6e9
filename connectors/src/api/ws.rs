//! `GET /api/v1/ws`: a WebSocket carrying what the relay sends to every group of the account
//! as JSON text frames (`?group=<g>` narrows it to one group). Incoming frames other than
//! pings and close are ignored. A consumer slower than the live channel loses the oldest
//! messages, counted and logged.

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use tracing::debug;

use super::shared::Shared;
use super::sse::report_lagged;

/// Largest frame accepted from a consumer; they have nothing to send but pings.
const MAX_INCOMING_FRAME: usize = 64 * 1024;

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
                    if only.as_deref().is_some_and(|group| group != event.group) {
                        continue;
                    }
                    if socket.send(Message::Text(event.json.clone().into())).await.is_err() {
                        return;
                    }
                }
                Err(RecvError::Lagged(lost)) => report_lagged(&shared.account, only.as_deref(), lost),
                Err(RecvError::Closed) => return,
            },
        }
    }
}
