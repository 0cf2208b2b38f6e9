//! `GET /api/v1/groups/<group>/events`: Server-Sent Events of what the relay sends to one
//! group. Each event carries an id; a consumer that reconnects with `Last-Event-ID` first gets
//! what it missed from the group's buffer, then live events. Losses (buffer overrun or a
//! consumer slower than the live channel) are counted and logged, never silent.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use tokio::sync::broadcast::error::RecvError;
use tracing::warn;

use super::feed::FeedEvent;
use super::shared::Shared;

/// Counts and logs messages a consumer will never see.
pub(super) fn report_lagged(account: &str, group: Option<&str>, lost: u64) {
    if lost == 0 {
        return;
    }
    warn!(
        message = "Event consumer too slow: oldest messages lost.",
        account = %account,
        group = group.unwrap_or("*"),
        lost
    );
    crate::metrics::count_drops("consumer_lagged", lost);
}

/// Handler of the SSE route.
pub(super) async fn group_events(
    State(shared): State<Arc<Shared>>,
    Path(group): Path<String>,
    headers: HeaderMap,
) -> Response {
    let last_seen = headers
        .get("last-event-id")
        .and_then(|value| value.to_str().ok())
        .and_then(|id| shared.feeds.parse_event_id(id));
    let subscription = shared.feeds.subscribe_group(&group, last_seen);
    report_lagged(&shared.account, Some(&group), subscription.missed);

    let high_water = subscription.replay.last().map_or(0, |e| e.seq);
    let state = StreamState {
        shared,
        group,
        replay: subscription.replay.into_iter(),
        live: subscription.live,
        high_water,
    };
    Sse::new(events(state))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

/// What the event stream needs between items.
struct StreamState {
    /// Account state (feeds, shutdown, account id for logs).
    shared: Arc<Shared>,
    /// The group streamed.
    group: String,
    /// Buffered events still to send.
    replay: std::vec::IntoIter<Arc<FeedEvent>>,
    /// Live events.
    live: tokio::sync::broadcast::Receiver<Arc<FeedEvent>>,
    /// Highest sequence already sent, so a live event that was also replayed is skipped.
    high_water: u64,
}

/// The SSE stream: replay, then live until shutdown.
fn events(state: StreamState) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(state, |mut state| async move {
        if let Some(event) = state.replay.next() {
            let sse = to_sse(&state, &event);
            return Some((Ok(sse), state));
        }
        loop {
            let received = tokio::select! {
                _ = state.shared.streams_end.cancelled() => return None,
                received = state.live.recv() => received,
            };
            match received {
                Ok(event) if event.seq <= state.high_water => continue,
                Ok(event) => {
                    state.high_water = event.seq;
                    let sse = to_sse(&state, &event);
                    return Some((Ok(sse), state));
                }
                Err(RecvError::Lagged(lost)) => {
                    report_lagged(&state.shared.account, Some(&state.group), lost);
                }
                Err(RecvError::Closed) => return None,
            }
        }
    })
}

/// One feed event as an SSE event.
fn to_sse(state: &StreamState, event: &FeedEvent) -> Event {
    Event::default()
        .id(state.shared.feeds.event_id(event))
        .event("message")
        .data(&event.json)
}
