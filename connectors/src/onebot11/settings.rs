//! What the OneBot v11 protocol asks of the config: its keys, the checks of its account table
//! (one of `url` or `listen`, an optional token and `self_id`), its description and its
//! limits (a personal chat account's). OneBot v12 checks its transport keys the same way.

use crate::model::Platform;
use crate::onebot_ws::Transport;
use crate::protocol::checks::{check_url, socket_addr};
use crate::protocol::defaults::EgressDefaults;
use crate::protocol::spec::ProtocolSpec;
use crate::protocol::table::AccountTable;
use crate::Secret;

use super::OneBot11Settings;

/// OneBot v11.
pub const SPEC: ProtocolSpec = ProtocolSpec {
    name: "onebot11",
    description:
        "OneBot v11 over a forward or reverse WebSocket (NapCat, Lagrange, LLOneBot, go-cqhttp)",
    platforms: &[Platform::Qq, Platform::Wechat],
    keys: &["url", "listen", "access_token", "self_id"],
    implied_by: None,
    send_only: false,
    // v11 implementations send `X-Self-ID` when they connect, so one listener serves many.
    shares_reverse_listener: true,
};

impl OneBot11Settings {
    /// Checks a OneBot v11 account table, adding every problem to `problems`.
    pub fn from_table(
        item: &str,
        table: &AccountTable,
        problems: &mut Vec<String>,
    ) -> Option<OneBot11Settings> {
        let before = problems.len();
        check_transport_keys(item, table, problems);
        if problems.len() > before {
            return None;
        }
        let transport = match (&table.url, &table.listen) {
            (Some(url), None) => Transport::Forward { url: url.clone() },
            (None, Some(listen)) => Transport::Reverse {
                listen: socket_addr(item, "listen", listen, problems)?,
            },
            _ => return None,
        };
        if let Some(id) = &table.self_id {
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_graphic()) {
                problems.push(format!(
                    "{item}: `self_id` = {id:?}: must be the bot's user id"
                ));
                return None;
            }
        }
        let access_token = match table.access_token.as_deref() {
            Some("") | None => None,
            Some(token) => Some(token.to_owned()),
        };
        Some(OneBot11Settings {
            transport,
            access_token: access_token.map(Secret::new),
            self_id: table.self_id.clone(),
        })
    }

    /// A short description for `qunbridge check`; the token is never shown.
    pub fn describe(&self) -> String {
        format!(
            "onebot11, {}",
            describe_connection(&self.transport, &self.access_token, &self.self_id)
        )
    }

    /// A personal chat account's limits on its platform.
    pub fn egress_defaults(&self, platform: Platform) -> EgressDefaults {
        EgressDefaults::personal_chat(platform)
    }
}

/// Exactly one of `url` (forward WebSocket) and `listen` (reverse), each well formed.
pub(crate) fn check_transport_keys(item: &str, table: &AccountTable, problems: &mut Vec<String>) {
    match (&table.url, &table.listen) {
        (Some(_), Some(_)) => problems.push(format!(
            "{item}: `url` and `listen` are both set: give `url` (forward WebSocket) or `listen` (reverse)"
        )),
        (None, None) => problems.push(format!(
            "{item}: needs `url` (forward WebSocket) or `listen` (reverse WebSocket)"
        )),
        (Some(url), None) => check_url(item, "url", url, &["ws", "wss"], problems),
        (None, Some(listen)) => {
            socket_addr(item, "listen", listen, problems);
        }
    }
}

/// How a OneBot account is reached, for descriptions: the transport (a forward URL without
/// its query, which may hold the token), whether a token is set, and the `self_id`.
pub(crate) fn describe_connection(
    transport: &Transport,
    access_token: &Option<Secret>,
    self_id: &Option<String>,
) -> String {
    let transport = match transport {
        Transport::Forward { url } => {
            format!("forward WebSocket {}", url.split('?').next().unwrap_or(url))
        }
        Transport::Reverse { listen } => format!("reverse WebSocket on {listen}"),
    };
    let token = if access_token.is_some() {
        ", token set"
    } else {
        ", no token"
    };
    let self_id = self_id
        .as_ref()
        .map(|id| format!(", self_id {id}"))
        .unwrap_or_default();
    format!("{transport}{token}{self_id}")
}
