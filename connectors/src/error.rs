//! Errors at the boundary between connectors and the relay.

/// Why an inbound envelope could not be handed to the relay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IngressError {
    /// The broker did not acknowledge the publish in time.
    #[error("the broker did not acknowledge the message within {0} s")]
    Timeout(u64),
    /// The relay is shutting down or its broker client has stopped.
    #[error("the relay is not accepting messages (shutting down or broker client stopped)")]
    Closed,
    /// The envelope could not be encoded (a bug, reported rather than panicking).
    #[error("the envelope could not be encoded: {0}")]
    Encode(String),
    /// qunbridge holds as much as it can keep right now (flow control): the message was not
    /// taken. The platform should offer it again after the given seconds (`api`: 503 with
    /// `Retry-After`; DingTalk Stream: no ACK, so it redelivers).
    #[error("qunbridge is at capacity; retry in {retry_after_secs} s")]
    Busy {
        /// When to offer it again.
        retry_after_secs: u64,
    },
}

/// Why a connector could not send an outbound message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth trying again later (connection down, timeout, platform busy).
    #[error("temporary send failure: {0}")]
    Retryable(String),
    /// The platform throttled this account or destination (DingTalk 130101, WeCom 45009,
    /// OneBot risk control): wait this long, then try again. Not counted as a failed attempt.
    #[error("throttled by the platform; retry in {0:?}")]
    Throttled(std::time::Duration),
    /// Will never succeed (bad destination, content refused); the message is dropped and
    /// counted with this reason.
    #[error("send refused: {0}")]
    Permanent(String),
}

/// Why a connector stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address from the config.
        addr: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// Any other I/O failure that ends the connector.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}
