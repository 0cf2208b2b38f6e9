//! The admin HTTP endpoint (loopback by default): `/healthz` (the process answers),
//! `/readyz` (broker connected and the relay core running; accounts that are down are listed,
//! not hidden) and `/metrics` (Prometheus text).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use qunbridge_connectors::{AccountState, ConnectionState, Platform};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// What the admin endpoint reports on.
#[derive(Default)]
pub struct Health {
    /// True once start-up finished and until shutdown begins.
    running: AtomicBool,
    /// The core's broker connection state, once it exists.
    broker: Mutex<Option<watch::Receiver<bool>>>,
    /// Accounts and their connector states.
    accounts: Mutex<Vec<(String, Platform, watch::Receiver<AccountState>)>>,
}

impl Health {
    /// Records the core's broker connection.
    pub fn set_broker(&self, connected: watch::Receiver<bool>) {
        *self.broker.lock().unwrap_or_else(PoisonError::into_inner) = Some(connected);
    }

    /// Records an account.
    pub fn add_account(
        &self,
        id: String,
        platform: Platform,
        state: watch::Receiver<AccountState>,
    ) {
        self.accounts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((id, platform, state));
    }

    /// Marks the relay as running (or stopping).
    pub fn set_running(&self, running: bool) {
        self.running.store(running, Ordering::Release);
    }

    /// True when the broker is connected.
    fn broker_connected(&self) -> bool {
        self.broker
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .is_some_and(|rx| *rx.borrow())
    }
}

/// The process-wide Prometheus recorder (the `metrics` facade has one global recorder).
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(handle) => Some(handle),
            Err(error) => {
                warn!(message = "Metrics recorder not installed.", %error);
                None
            }
        })
        .as_ref()
}

/// Serves the admin endpoint on a bound listener until `stop`.
pub async fn serve(listener: TcpListener, health: Arc<Health>, stop: CancellationToken) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health);
    if let Err(error) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
    {
        warn!(message = "Admin endpoint failed.", %error);
    }
}

/// `/readyz`.
async fn readyz(State(health): State<Arc<Health>>) -> Response {
    let broker = health.broker_connected();
    let running = health.running.load(Ordering::Acquire);
    metrics::gauge!("qunbridge_broker_connected").set(if broker { 1.0 } else { 0.0 });
    let accounts: Vec<_> = health
        .accounts
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .map(|(id, platform, state)| {
            let state = state.borrow().clone();
            json!({ "account": id, "platform": platform, "state": state.state, "since_ms": state.since_ms })
        })
        .collect();
    let degraded = accounts
        .iter()
        .filter(|a| a["state"] != json!(ConnectionState::Up))
        .count();
    let ready = broker && running;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "ready": ready,
        "broker_connected": broker,
        "core_running": running,
        "accounts_degraded": degraded,
        "accounts": accounts,
    });
    (status, Json(body)).into_response()
}

/// `/metrics`.
async fn metrics() -> Response {
    match prometheus() {
        Some(handle) => (
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            handle.render(),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder unavailable\n",
        )
            .into_response(),
    }
}
