//! `GET /api/v1/status/events`: the `/api/v1/status` document as Server-Sent Events, for the
//! overview to redraw without polling: one event at once, then one whenever an account's
//! state or the broker connection changes, and otherwise every 2 s while the page listens.
//! The stream ends on shutdown. Nothing runs when nobody listens: the page closes the stream
//! while its tab is hidden.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::admin::{status_document, Health};

/// How often the document is sent when nothing changed.
pub const EVERY: Duration = Duration::from_secs(2);

/// The state watches an event waits on, marked seen when the document is built.
struct Watching {
    /// The process's status.
    health: Arc<Health>,
    /// Account states and the broker connection, as of the last document.
    watches: Vec<Watch>,
    /// Shutdown.
    stop: CancellationToken,
    /// True once the first document went out.
    started: bool,
}

/// One watched state.
enum Watch {
    /// An account's connection.
    Account(watch::Receiver<qunbridge_connectors::AccountState>),
    /// The broker connection.
    Broker(watch::Receiver<bool>),
}

impl Watch {
    /// Resolves when the state changes (never, once its sender is gone).
    async fn changed(&mut self) {
        let changed = match self {
            Watch::Account(rx) => rx.changed().await,
            Watch::Broker(rx) => rx.changed().await,
        };
        if changed.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// The handler.
pub async fn status_events(State(health): State<Arc<Health>>) -> Response {
    let stop = health.stop_token();
    let state = Watching {
        health,
        watches: Vec::new(),
        stop,
        started: false,
    };
    Sse::new(events(state)).into_response()
}

/// Fresh watches of every account and the broker, marked seen.
fn watches(health: &Health) -> Vec<Watch> {
    let mut watches: Vec<Watch> = health
        .account_watches()
        .into_iter()
        .map(|mut rx| {
            rx.borrow_and_update();
            Watch::Account(rx)
        })
        .collect();
    if let Some(mut rx) = health.broker_watch() {
        rx.borrow_and_update();
        watches.push(Watch::Broker(rx));
    }
    watches
}

/// The stream: a document now, then on every change or [`EVERY`], until shutdown.
fn events(state: Watching) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(state, |mut state| async move {
        if state.started {
            let mut waits: Vec<_> = state
                .watches
                .iter_mut()
                .map(|watch| Box::pin(watch.changed()))
                .collect();
            let any_change = async {
                if waits.is_empty() {
                    std::future::pending::<()>().await;
                } else {
                    futures_util::future::select_all(waits.iter_mut()).await;
                }
            };
            tokio::select! {
                _ = state.stop.cancelled() => return None,
                _ = any_change => {}
                _ = tokio::time::sleep(EVERY) => {}
            }
        }
        state.started = true;
        state.watches = watches(&state.health);
        let document = status_document(&state.health).await;
        let event = Event::default().event("status").data(document.to_string());
        Some((Ok(event), state))
    })
}
