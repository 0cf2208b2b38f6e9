//! What the `api` protocol asks of the config: its keys, the checks of its account table, its
//! description and its (absent) limits.

use crate::model::Platform;
use crate::protocol::checks::socket_addr;
use crate::protocol::defaults::EgressDefaults;
use crate::protocol::spec::ProtocolSpec;
use crate::protocol::table::AccountTable;
use crate::Secret;

use super::{ApiSettings, DEFAULT_BUFFER};

/// Largest `buffer`, so one setting cannot exhaust memory.
pub const MAX_BUFFER: u64 = 100_000;

/// The `api` protocol.
pub const SPEC: ProtocolSpec = ProtocolSpec {
    name: "api",
    description: "qunbridge's own HTTP endpoint: POST messages in, SSE or WebSocket out",
    platforms: &[Platform::Api],
    keys: &["listen", "token", "buffer"],
    implied_by: None,
    send_only: false,
    shares_reverse_listener: false,
};

impl ApiSettings {
    /// Checks an `api` account table, adding every problem to `problems`.
    pub fn from_table(
        item: &str,
        table: &AccountTable,
        problems: &mut Vec<String>,
    ) -> Option<ApiSettings> {
        let Some(listen) = &table.listen else {
            problems.push(format!(
                "{item}: `listen` is missing (an address such as 127.0.0.1:8088)"
            ));
            return None;
        };
        let listen = socket_addr(item, "listen", listen, problems)?;
        let buffer = match table.buffer {
            None => DEFAULT_BUFFER,
            Some(n) if (1..=MAX_BUFFER).contains(&n) => n as usize,
            Some(n) => {
                problems.push(format!("{item}: `buffer` = {n}: must be 1 to {MAX_BUFFER}"));
                return None;
            }
        };
        let token = match table.token.as_deref() {
            Some("") => {
                problems.push(format!(
                    "{item}: `token` = <redacted>: is empty; remove the key to run without a token"
                ));
                return None;
            }
            other => other.map(str::to_owned),
        };
        Some(ApiSettings {
            listen,
            token: token.map(Secret::new),
            buffer,
        })
    }

    /// A short description for `qunbridge check`.
    pub fn describe(&self) -> String {
        format!(
            "api, listen {}{}",
            self.listen,
            if self.token.is_some() {
                ", token set"
            } else {
                ", no token"
            }
        )
    }

    /// The `api` endpoint has neither quotas nor a length limit.
    pub fn egress_defaults(&self) -> EgressDefaults {
        EgressDefaults::UNLIMITED
    }
}
