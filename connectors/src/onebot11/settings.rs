//! What the OneBot v11 protocol asks of the config: its keys, the checks of its account table
//! (one of `url` or `listen`, an optional token and `self_id`, an optional `member_poll`
//! period), its description and its limits (a personal chat account's). OneBot v12 checks
//! these keys the same way.

use std::time::Duration;

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
    keys: &["url", "listen", "access_token", "self_id", "member_poll"],
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
        let member_poll = match &table.member_poll {
            Some(value) => Some(member_poll(item, value, problems)?),
            None => None,
        };
        let access_token = match table.access_token.as_deref() {
            Some("") | None => None,
            Some(token) => Some(token.to_owned()),
        };
        Some(OneBot11Settings {
            transport,
            access_token: access_token.map(Secret::new),
            self_id: table.self_id.clone(),
            member_poll,
        })
    }

    /// A short description for `qunbridge check`; the token is never shown.
    pub fn describe(&self) -> String {
        format!(
            "onebot11, {}{}",
            describe_connection(&self.transport, &self.access_token, &self.self_id),
            describe_poll(self.member_poll)
        )
    }

    /// A personal chat account's limits on its platform.
    pub fn egress_defaults(&self, platform: Platform) -> EgressDefaults {
        EgressDefaults::personal_chat(platform)
    }
}

/// Shortest `member_poll` period accepted. A poll asks the implementation for every member
/// of every group (ComWeChatClient: one call per member), so production polls hourly or less
/// often; periods of seconds are for tests.
pub const MEMBER_POLL_MIN: Duration = Duration::from_secs(5);
/// Longest `member_poll` period.
pub const MEMBER_POLL_MAX: Duration = Duration::from_secs(30 * 24 * 3600);

/// Reads `member_poll` (a duration such as `6h`), adding a problem naming the key and value
/// when it is not a duration from [`MEMBER_POLL_MIN`] to [`MEMBER_POLL_MAX`].
fn member_poll(item: &str, value: &str, problems: &mut Vec<String>) -> Option<Duration> {
    match humantime::parse_duration(value) {
        Ok(period) if (MEMBER_POLL_MIN..=MEMBER_POLL_MAX).contains(&period) => Some(period),
        Ok(_) => {
            problems.push(format!(
                "{item}: `member_poll` = {value:?}: must be from {} to {}",
                humantime::format_duration(MEMBER_POLL_MIN),
                humantime::format_duration(MEMBER_POLL_MAX)
            ));
            None
        }
        Err(error) => {
            problems.push(format!(
                "{item}: `member_poll` = {value:?}: {error} (write e.g. 6h)"
            ));
            None
        }
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

/// The member-list poll, for descriptions: empty when off.
pub(crate) fn describe_poll(member_poll: Option<Duration>) -> String {
    member_poll
        .map(|period| {
            format!(
                ", member lists polled every {}",
                humantime::format_duration(period)
            )
        })
        .unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn table(member_poll: Option<&str>) -> AccountTable {
        AccountTable {
            url: Some("ws://127.0.0.1:3001".into()),
            member_poll: member_poll.map(str::to_owned),
            ..AccountTable::default()
        }
    }

    #[test]
    fn member_poll_is_a_duration_within_bounds_and_off_when_absent() {
        let mut problems = Vec::new();
        let off = OneBot11Settings::from_table("account \"qq\"", &table(None), &mut problems);
        assert_eq!(off.map(|s| s.member_poll), Some(None));
        let on = OneBot11Settings::from_table("account \"qq\"", &table(Some("6h")), &mut problems);
        assert_eq!(
            on.as_ref().and_then(|s| s.member_poll),
            Some(Duration::from_secs(6 * 3600))
        );
        assert!(on.is_some_and(|s| s.describe().ends_with("member lists polled every 6h")));
        assert!(problems.is_empty(), "{problems:?}");

        for (value, why) in [
            ("often", "write e.g. 6h"),
            ("2s", "must be from 5s to 30days"),
            ("60days", "must be from"),
        ] {
            let mut problems = Vec::new();
            let settings =
                OneBot11Settings::from_table("account \"qq\"", &table(Some(value)), &mut problems);
            assert!(settings.is_none(), "{value}");
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert!(
                problems[0].starts_with(&format!("account \"qq\": `member_poll` = {value:?}: ")),
                "{problems:?}"
            );
            assert!(problems[0].contains(why), "{problems:?}");
        }
    }
}
