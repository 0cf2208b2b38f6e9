//! qunbridge-connectors: the language connectors speak to the relay, and the connectors.
//!
//! # Layout
//! - [`model`]: `Envelope` (inbound), `Outbound` (rendered for one destination), `Segment`.
//! - [`context`]: what the relay hands a connector (`Ingress`, egress queue, state, intake).
//! - [`Connector`]: the trait every platform connector implements.
//! - [`backoff`]: the one backoff type for everything that reconnects.
//! - [`auth`]: constant-time bearer checks for listeners.
//! - [`http`]: HTTP client settings, robot pauses and resumable multi-part sends.
//! - [`media`]: media references in envelopes, the on-disk media cache, the bounded fetcher,
//!   the address guard and type sniffing.
//! - [`api`]: the generic HTTP/SSE/WebSocket connector.
//! - [`dingtalk`]: DingTalk groups: Stream in and OpenAPI out, or a custom robot webhook.
//! - [`onebot11`]: QQ (and some WeChat) groups through OneBot v11 implementations.
//! - [`onebot12`]: WeChat (and some QQ) groups through OneBot v12 implementations
//!   (ComWeChatClient and others).
//! - [`onebot_ws`]: what both OneBot versions share on a WebSocket: the connector run loop,
//!   the session per socket (heartbeat watchdog, reads, teardown, state), forward and
//!   reverse transports, ordered ingress, recall, response outcomes; `onebot11` and
//!   `onebot12` plug in their decoding and rendering through its traits.
//! - [`protocol`]: the closed list of protocols and what each asks of the config (keys,
//!   checks, defaults, description); each protocol's part lives in `<connector>/settings.rs`.
//! - [`reverse_ws`]: WebSocket listeners that implementations connect to, shared by accounts.
//! - `robot`: what the send-only webhook robots (DingTalk, WeCom) share.
//! - [`secret`]: [`Secret`], a value that never reaches a log.
//! - [`split`]: the one text splitter of the workspace (relay length limits, DingTalk, WeCom).
//! - [`metrics`]: names of the metrics connectors emit (the relay re-exports them).
//! - [`wecom`]: WeCom (企业微信) group robots: send-only webhook.
//!
//! This crate knows nothing of links, dedup, MQTT or policy: those belong to the relay, which
//! depends on this crate and never the other way round.

#![deny(missing_docs)]

pub mod api;
pub mod auth;
pub mod backoff;
pub mod context;
pub mod dingtalk;
pub mod error;
pub mod http;
pub mod media;
pub mod member;
pub mod metrics;
pub mod model;
pub mod onebot11;
pub mod onebot12;
pub mod onebot_ws;
pub mod protocol;
pub mod recent;
pub mod reverse_ws;
mod robot;
pub mod secret;
pub mod split;
pub mod wecom;

use std::future::Future;

pub use context::{
    AccountState, BotRegistry, Confirmed, ConnectionState, ConnectorContext, EgressCommand,
    EgressRequest, EnvelopeSink, Ingress, PrepareRequest, RelatedMessages, SendReceipt,
    StateReporter,
};
pub use error::{ConnectorError, IngressError, SendError};
pub use model::{Envelope, Kind, Origin, Outbound, Platform, Segment, Sender};
pub use secret::Secret;

/// A platform connector: owns its sockets, turns platform events into envelopes on
/// `ctx.ingress`, and sends what arrives on `ctx.egress`.
///
/// `run` returns `Ok(())` once `ctx.intake` is cancelled and the egress queue is closed and
/// drained, or an error when the connector cannot go on at all (a listener that cannot bind).
/// Connection losses are not errors: the connector reconnects with [`backoff::Backoff`] and
/// reports them through `ctx.state`.
pub trait Connector: Send + 'static {
    /// Runs the connector until shutdown.
    fn run(self, ctx: ConnectorContext) -> impl Future<Output = Result<(), ConnectorError>> + Send;
}
