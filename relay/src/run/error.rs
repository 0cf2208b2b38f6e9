//! Why a run fails: the one error [`run`](fn@crate::run) returns, for `main.rs` to print and
//! for tests to match.

use crate::broker;
use crate::store;

use super::cluster;

/// Why the daemon could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The state directory could not be created.
    #[error("cannot create state_dir `{path}`: {source}")]
    StateDir {
        /// The configured path.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// `--accounts` names an account the config does not have.
    #[error("--accounts: no account is called `{0}` in the config")]
    UnknownAccount(String),
    /// An account runs in another process.
    #[error(transparent)]
    Lock(#[from] cluster::LockError),
    /// The state store could not be opened.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// The embedded broker could not start.
    #[error(transparent)]
    Broker(#[from] broker::embedded::EmbeddedError),
    /// A broker client could not be set up.
    #[error("MQTT client: {0}")]
    Client(#[from] broker::BrokerError),
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// What wanted the address.
        what: &'static str,
        /// The address.
        addr: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The media cache or fetcher could not be set up.
    #[error("media: {0}")]
    Media(String),
    /// A connector stopped on its own.
    #[error("account `{account}` stopped: {reason}")]
    Connector {
        /// The account.
        account: String,
        /// Why.
        reason: String,
    },
}
