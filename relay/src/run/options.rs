//! What a run takes besides the config file: the command-line choices, the grace period, the
//! reload requests and the lifecycle hook a service manager listens on.

use std::sync::Arc;
use std::time::Duration;

use crate::config::Role;

/// A point in the daemon's life that a service manager wants to hear about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifecycle {
    /// Start-up finished: every account started and the core runs.
    Ready,
    /// Shutdown began: intake stops, in-flight messages finish.
    Stopping,
}

/// Called at each [`Lifecycle`] point; `main.rs` tells systemd (`READY=1`, `STOPPING=1`).
pub type LifecycleHook = Arc<dyn Fn(Lifecycle) + Send + Sync>;

/// Options of a run that are not part of the config file.
pub struct RunOptions {
    /// How long shutdown may take to finish in-flight messages.
    pub grace: Duration,
    /// Told when start-up finished and when shutdown begins (`None`: nobody is told).
    pub on_lifecycle: Option<LifecycleHook>,
    /// Reload requests (SIGHUP) and the file to read again (`None`: no reload).
    pub reload: Option<Reload>,
    /// Move the state store aside before opening it (`qunbridge run --reset-state`).
    pub reset_state: bool,
    /// What to run, over the config's `roles` (`qunbridge run --role`).
    pub role: Option<Role>,
    /// Run only these accounts' connectors (`qunbridge run --accounts a,b`).
    pub accounts: Option<Vec<String>>,
    /// This process's name, over the config's `instance` (`qunbridge run --instance`).
    pub instance: Option<String>,
}

/// Where reload requests come from.
pub struct Reload {
    /// The config file, read again on each request.
    pub path: std::path::PathBuf,
    /// One message per request.
    pub requests: tokio::sync::mpsc::Receiver<()>,
}

impl RunOptions {
    /// Tells the hook, if there is one.
    pub(crate) fn tell(&self, point: Lifecycle) {
        if let Some(hook) = &self.on_lifecycle {
            hook(point);
        }
    }
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunOptions")
            .field("grace", &self.grace)
            .field("on_lifecycle", &self.on_lifecycle.as_ref().map(|_| "hook"))
            .field(
                "reload",
                &self.reload.as_ref().map(|r| r.path.display().to_string()),
            )
            .field("reset_state", &self.reset_state)
            .field("role", &self.role)
            .field("accounts", &self.accounts)
            .field("instance", &self.instance)
            .finish()
    }
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            grace: Duration::from_secs(10),
            on_lifecycle: None,
            reload: None,
            reset_state: false,
            role: None,
            accounts: None,
            instance: None,
        }
    }
}
