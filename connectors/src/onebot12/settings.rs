//! What the OneBot v12 protocol asks of the config: the same transport keys as v11 plus
//! `member_poll` (checked by v11's code) and `send_images`, its description and its limits (a personal chat account's).

use crate::model::Platform;
use crate::onebot11::settings::{describe_connection, describe_poll};
use crate::onebot11::OneBot11Settings;
use crate::protocol::defaults::EgressDefaults;
use crate::protocol::spec::ProtocolSpec;
use crate::protocol::table::AccountTable;

use super::OneBot12Settings;

/// OneBot v12.
pub const SPEC: ProtocolSpec = ProtocolSpec {
    name: "onebot12",
    description: "OneBot v12 over a forward or reverse WebSocket (ComWeChatClient and others)",
    platforms: &[Platform::Qq, Platform::Wechat],
    keys: &[
        "url",
        "listen",
        "access_token",
        "self_id",
        "send_images",
        "member_poll",
    ],
    implied_by: None,
    send_only: false,
    // v12 implementations send no `X-Self-ID`: a reverse listener serves one account.
    shares_reverse_listener: false,
};

impl OneBot12Settings {
    /// Checks a OneBot v12 account table (WeChat through ComWeChatClient and others, or QQ
    /// through a v12 implementation), adding every problem to `problems`.
    pub fn from_table(
        item: &str,
        table: &AccountTable,
        problems: &mut Vec<String>,
    ) -> Option<OneBot12Settings> {
        let common = OneBot11Settings::from_table(item, table, problems)?;
        Some(OneBot12Settings {
            transport: common.transport,
            access_token: common.access_token,
            self_id: common.self_id,
            send_images: table.send_images.unwrap_or(false),
            member_poll: common.member_poll,
        })
    }

    /// A short description for `qunbridge check`; the token is never shown.
    pub fn describe(&self) -> String {
        let images = if self.send_images {
            ", pictures sent as pictures"
        } else {
            ""
        };
        format!(
            "onebot12, {}{images}{}",
            describe_connection(&self.transport, &self.access_token, &self.self_id),
            describe_poll(self.member_poll)
        )
    }

    /// A personal chat account's limits on its platform.
    pub fn egress_defaults(&self, platform: Platform) -> EgressDefaults {
        EgressDefaults::personal_chat(platform)
    }
}
