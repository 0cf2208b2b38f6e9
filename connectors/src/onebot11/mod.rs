//! QQ groups (and WeChat groups of v11 implementations) through OneBot v11: NapCat,
//! Lagrange.OneBot, LLOneBot, go-cqhttp. PROTOCOLS.md §1 has the wire format and quirks.
//! The socket handling (transports, sessions, heartbeat watchdog, ordered ingress) is shared
//! with OneBot v12 in [`crate::onebot_ws`]; this folder holds only what v11 says differently:
//!
//! - [`event`]: frames to envelopes; [`message_event`]: group message events read without a
//!   JSON tree, the frames most sockets carry most; [`cq`]: the CQ-code string format.
//! - [`ingress`]: decoded frames as the shared session sees them.
//! - [`action`]: responses and rendering of outbound messages.
//! - [`egress`]: `send_group_msg` and `delete_msg`.
//! - This file: settings and the connector.

pub mod action;
pub mod cq;
pub mod egress;
pub mod event;
pub mod ingress;
pub mod message_event;
pub mod settings;

use std::time::Duration;

use self::egress::Egress;
use self::ingress::OneBot11;
use crate::model::Platform;
use crate::onebot_ws::{OneBotConnector, Reach, VersionSettings};
use crate::Secret;

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
    /// How often the group member lists are polled and diffed (`member_poll`); `None`: off.
    pub member_poll: Option<Duration>,
}

/// The OneBot v11 connector: the shared OneBot connector with v11 settings.
pub type OneBot11Connector = OneBotConnector<OneBot11Settings>;

impl VersionSettings for OneBot11Settings {
    type Version = OneBot11;
    type Sender = Egress;

    fn reach(&self) -> Reach<'_> {
        Reach::new(
            &self.transport,
            self.access_token.as_ref(),
            self.self_id.as_deref(),
        )
    }

    fn member_poll(&self) -> Option<Duration> {
        self.member_poll
    }

    fn halves(
        &self,
        account: &str,
        platform: Platform,
        media: &crate::media::MediaContext,
    ) -> (OneBot11, Egress) {
        (
            OneBot11,
            Egress::new(account.to_owned(), platform, media.clone()),
        )
    }
}
