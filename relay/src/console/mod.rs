//! The operator console (issue 19): web pages on the admin endpoint for people who run linked
//! groups with a browser rather than a monitoring stack. Overview (`/`, rendered on the
//! server, so it works without JavaScript), Links (`/links`), Group health (`/health`, with
//! inline SVG charts, a group's detail at `/health/<alias>` and the CSV at `/health.csv`)
//! and Held for review (`/held`).
//!
//! Everything is built into the binary ([`assets`]); pages are plain HTML written here, and
//! a small script refreshes them while the tab is visible (and sets no timer otherwise): the
//! overview listens to [`live`]'s event stream, the held page polls `/api/v1/held`.
//! [`auth`] guards the console and `/api/v1/*` with `admin.token`. Labels are in English and
//! Chinese ([`i18n`]). Chat and user ids appear only on a group's detail page.

pub mod access;
pub mod assets;
pub mod auth;
pub mod health;
pub mod held;
pub mod html;
pub mod i18n;
pub mod links;
pub mod live;
pub mod overview;
pub mod view;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::admin::{self, Health};

/// Serves the admin endpoint with the console on a bound listener until `stop`: the
/// endpoint's own routes and the console's, all behind [`auth::guard`].
pub async fn serve(listener: TcpListener, health: Arc<Health>, stop: CancellationToken) {
    if health
        .console_view()
        .is_some_and(|view| view.access.closed())
    {
        warn!(message = "The console and /api/v1 are closed: the admin endpoint listens beyond loopback and `admin.token` is not set.");
    }
    // The console's event streams end with the endpoint (graceful shutdown waits for them).
    let streams_end = health.stop_token();
    let stop_streams = stop.clone();
    tokio::spawn(async move {
        stop_streams.cancelled().await;
        streams_end.cancel();
    });
    let guard = axum::middleware::from_fn_with_state(health.clone(), auth::guard);
    let app = admin::routes()
        .merge(routes())
        .layer(guard)
        .with_state(health);
    admin::serve(listener, app, stop).await;
}

/// The console's routes.
pub fn routes() -> Router<Arc<Health>> {
    Router::new()
        .route("/", get(overview::page))
        .route("/links", get(links::page))
        .route("/health", get(health::page))
        .route("/health.csv", get(health::csv))
        .route("/health/{alias}", get(health::detail))
        .route("/held", get(held::page))
        .route("/api/v1/status/events", get(live::status_events))
        .route("/login", post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/assets/{version}/{name}", get(assets::serve))
}
