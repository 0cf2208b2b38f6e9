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
pub mod settings;

use std::time::Duration;

use self::egress::Egress;
use self::ingress::OneBot12;
use crate::model::Platform;
use crate::onebot_ws::{OneBotConnector, Reach, VersionSettings};
use crate::Secret;

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
    /// How often the group member lists are polled and diffed (`member_poll`); `None`: off.
    pub member_poll: Option<Duration>,
}

/// The OneBot v12 connector: the shared OneBot connector with v12 settings.
pub type OneBot12Connector = OneBotConnector<OneBot12Settings>;

impl VersionSettings for OneBot12Settings {
    type Version = OneBot12;
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
    ) -> (OneBot12, Egress) {
        (
            OneBot12::new(account.to_owned()),
            Egress::new(
                account.to_owned(),
                platform,
                self.send_images,
                media.clone(),
            ),
        )
    }
}
