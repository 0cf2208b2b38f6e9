//! Opening the state store: the state directory, `--reset-state`, and the store the config
//! names (redb in `state_dir`, or a shared Redis).

use std::sync::Arc;

use qunbridge_connectors::api::FeedLog;
use tracing::{info, warn};

use super::error::RunError;
use crate::config::{Config, StoreConfig};
use crate::moderation::shared::SharedCounters;
use crate::store::{PersistentStore, RedisStore, RelayStore, StoreError};

/// The opened store, under the two interfaces its users need.
pub struct Stores {
    /// Dedup keys, send log, message map and echo fingerprints for the core and egress.
    pub relay: Arc<dyn RelayStore>,
    /// The `api` feeds' durable log, kept in the same store.
    pub feed_log: Arc<dyn FeedLog>,
    /// Flood and wave counters shared by every core on the same Redis; `None` for the
    /// embedded store (one process counts alone).
    pub moderation: Option<Arc<SharedCounters>>,
}

/// Creates the state directory and, on `--reset-state`, moves the embedded store aside.
///
/// # Errors
/// [`RunError::StateDir`] when the directory cannot be created or the store moved.
pub fn prepare_state_dir(config: &Config, reset: bool) -> Result<(), RunError> {
    let failed = |source| RunError::StateDir {
        path: config.state_dir.display().to_string(),
        source,
    };
    std::fs::create_dir_all(&config.state_dir).map_err(failed)?;
    if reset {
        match PersistentStore::reset(&config.state_dir).map_err(failed)? {
            Some(aside) => {
                warn!(message = "State store moved aside; starting with an empty store.", kept_at = %aside.display())
            }
            None => info!(message = "No state store to reset."),
        }
    }
    Ok(())
}

/// Opens the store `[store]` names.
///
/// # Errors
/// [`RunError::Store`] when it cannot be opened or reached.
pub async fn open_store(config: &Config) -> Result<Stores, RunError> {
    Ok(match &config.store {
        StoreConfig::Embedded => {
            let persistent = Arc::new(PersistentStore::open(&config.state_dir)?);
            Stores {
                relay: persistent.clone(),
                feed_log: persistent,
                moderation: None,
            }
        }
        StoreConfig::Redis { url, prefix } => {
            let shared = Arc::new(RedisStore::connect(url.expose(), prefix).await?);
            // Connects at the first judgement: a process that runs no core never does.
            let counters = SharedCounters::open(url.expose(), prefix)
                .map_err(|error| RunError::Store(StoreError::Backend(error.to_string())))?;
            info!(message = "Using the shared Redis store.", prefix = %prefix);
            Stores {
                relay: shared.clone(),
                feed_log: shared,
                moderation: Some(Arc::new(counters)),
            }
        }
    })
}
