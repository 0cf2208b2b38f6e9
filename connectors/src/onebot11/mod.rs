//! QQ groups (and WeChat groups of v11 implementations) through OneBot v11: NapCat,
//! Lagrange.OneBot, LLOneBot, go-cqhttp. PROTOCOLS.md §1 has the wire format and quirks.
//! The socket handling (transports, sessions, heartbeat watchdog, ordered ingress) is shared
//! with OneBot v12 in [`crate::onebot_ws`]; this folder holds only what v11 says differently:
//!
//! - [`event`]: frames to envelopes; [`cq`]: the CQ-code string format.
//! - [`ingress`]: decoded frames as the shared session sees them.
//! - [`action`]: responses and rendering of outbound messages.
//! - [`egress`]: `send_group_msg` and `delete_msg`.
//! - This file: settings and the connector.

pub mod action;
pub mod cq;
pub mod egress;
pub mod event;
pub mod ingress;

use crate::context::ConnectorContext;
use crate::error::ConnectorError;
use crate::onebot_ws::{connector, Reach};
use crate::reverse_ws::SharedListeners;
use crate::{Connector, Secret};

pub use crate::onebot_ws::Transport;

/// Settings of one OneBot v11 account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneBot11Settings {
    /// Forward or reverse WebSocket.
    pub transport: Transport,
    /// Access token, sent (forward) or required (reverse).
    pub access_token: Option<Secret>,
    /// The bot's user id, when configured (needed to tell accounts apart on a shared reverse
    /// listener; otherwise learned at run time).
    pub self_id: Option<String>,
}

/// The OneBot v11 connector.
pub struct OneBot11Connector {
    /// Its settings.
    settings: OneBot11Settings,
    /// The reverse listeners of the daemon: accounts on one address share it, told apart by
    /// `X-Self-ID`.
    listeners: SharedListeners,
}

impl OneBot11Connector {
    /// A connector for one account; `listeners` is the daemon's set of shared reverse
    /// listeners (unused by a forward transport).
    pub fn new(settings: OneBot11Settings, listeners: SharedListeners) -> OneBot11Connector {
        OneBot11Connector {
            settings,
            listeners,
        }
    }
}

impl Connector for OneBot11Connector {
    async fn run(self, ctx: ConnectorContext) -> Result<(), ConnectorError> {
        let reach = Reach {
            transport: &self.settings.transport,
            access_token: self.settings.access_token.as_ref(),
            self_id: self.settings.self_id.as_deref(),
            listeners: &self.listeners,
        };
        let sender = egress::Egress::new(ctx.account.clone(), ctx.platform);
        connector::run(reach, ingress::OneBot11, sender, ctx).await
    }
}
