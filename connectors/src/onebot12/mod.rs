//! WeChat groups (and QQ groups of v12 implementations) through OneBot v12: ComWeChatClient
//! and others (walle-q, …). PROTOCOLS.md §2 has the wire format and ComWeChatClient's quirks.
//! The socket handling (transports, sessions, heartbeat watchdog, ordered ingress) is shared
//! with OneBot v11 in [`crate::onebot_ws`]; this folder holds only what v12 says differently:
//!
//! - [`event`]: frames to envelopes (`meta.connect`, `status_update`, heartbeats, group
//!   messages and deletions).
//! - [`ingress`]: decoded frames as the shared session sees them; [`resolve`] and [`names`]:
//!   sender names, mention names and picture URLs looked up concurrently within a short
//!   wait, names cached with a TTL.
//! - [`action`]: responses, retcodes and rendering.
//! - [`egress`]: `send_message`, `upload_file`, `delete_message`.
//! - This file: settings and the connector.

pub mod action;
pub mod egress;
pub mod event;
pub mod ingress;
pub mod names;
pub mod resolve;

use crate::context::ConnectorContext;
use crate::error::ConnectorError;
use crate::onebot_ws::{connector, Reach};
use crate::reverse_ws::SharedListeners;
use crate::{Connector, Secret};

pub use crate::onebot_ws::Transport;

/// Settings of one OneBot v12 account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneBot12Settings {
    /// Forward or reverse WebSocket.
    pub transport: Transport,
    /// Access token, sent (forward) or required (reverse).
    pub access_token: Option<Secret>,
    /// The bot's user id, when configured (otherwise learned from `status_update`).
    pub self_id: Option<String>,
    /// Send a message's pictures as pictures (`upload_file` by URL, then an `image`
    /// segment, each a WeChat message of its own) instead of their URLs in the text.
    pub send_images: bool,
}

/// The OneBot v12 connector.
pub struct OneBot12Connector {
    /// Its settings.
    settings: OneBot12Settings,
    /// The reverse listeners of the daemon (a v12 account needs an address of its own, as
    /// v12 implementations send no `X-Self-ID`, but binding goes through the same registry).
    listeners: SharedListeners,
}

impl OneBot12Connector {
    /// A connector for one account; `listeners` is the daemon's set of reverse listeners
    /// (unused by a forward transport).
    pub fn new(settings: OneBot12Settings, listeners: SharedListeners) -> OneBot12Connector {
        OneBot12Connector {
            settings,
            listeners,
        }
    }
}

impl Connector for OneBot12Connector {
    async fn run(self, ctx: ConnectorContext) -> Result<(), ConnectorError> {
        let reach = Reach {
            transport: &self.settings.transport,
            access_token: self.settings.access_token.as_ref(),
            self_id: self.settings.self_id.as_deref(),
            listeners: &self.listeners,
        };
        let version = ingress::OneBot12::new(ctx.account.clone());
        let sender = egress::Egress::new(ctx.account.clone(), self.settings.send_images);
        connector::run(reach, version, sender, ctx).await
    }
}
