//! Reading `/metrics` in tests whose daemons share one process.
//!
//! The metrics recorder is one per process, and the tests of one binary run in parallel, so a
//! series without a label naming the test's own account (`qunbridge_messages_dropped_total{reason=…}`)
//! sums what every daemon in the binary did. A test that asserts on such a series starts its
//! daemon with [`crate::Daemon::start_alone`]: no other in-process daemon runs while it does,
//! so the change of the series between two reads is that test's own. Every other daemon takes
//! a shared turn ([`crate::Daemon::start`]) and runs alongside its siblings.

use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// Who may run a daemon in this process right now: many shared turns, or one alone.
static TURNS: RwLock<()> = RwLock::const_new(());

/// A daemon's right to run; held for the daemon's whole life.
pub enum Turn {
    /// Runs alongside other daemons: its metric series may mix with theirs.
    Shared(RwLockReadGuard<'static, ()>),
    /// Runs with no other in-process daemon: every change of a series is its own.
    Alone(RwLockWriteGuard<'static, ()>),
}

impl Turn {
    /// Waits for a turn alongside other daemons.
    pub async fn shared() -> Turn {
        Turn::Shared(TURNS.read().await)
    }

    /// Waits until no other daemon of this process runs, and keeps it so.
    pub async fn alone() -> Turn {
        Turn::Alone(TURNS.write().await)
    }
}

/// The value of one series (name with all its labels, exactly) in Prometheus text; 0 when
/// the series was never touched.
pub fn counter(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}
