//! The drain that starts shutdown: intake stops, and in-flight messages get the grace period
//! to finish before everything stops.

use std::time::Duration;

use tracing::{info, warn};

use super::daemon::Daemon;
use super::options::{Lifecycle, RunOptions};

/// After intake stops, how long nothing may be in flight before the relay counts as drained.
const DRAIN_QUIET: Duration = Duration::from_millis(300);

/// Tells the lifecycle hook shutdown began, stops intake and waits until nothing is in flight
/// or the grace period is over; what is still unacknowledged then stays with the broker.
pub async fn drain(daemon: &Daemon, options: &RunOptions) {
    let grace = options.grace;
    info!(message = "Stopping intake.");
    options.tell(Lifecycle::Stopping);
    daemon.intake.cancel();
    daemon.health.set_running(false);
    let deadline = tokio::time::Instant::now() + grace;
    if daemon.activity.wait_idle(DRAIN_QUIET, deadline).await {
        info!(message = "In-flight messages finished.");
    } else {
        warn!(
            message = "Graceful shutdown did not finish within the grace period; unacknowledged messages stay with the broker.",
            grace_ms = grace.as_millis() as u64,
            inflight = daemon.activity.inflight()
        );
    }
}
