//! What DingTalk's two protocols ask of the config: their keys, the checks of their account
//! tables, their descriptions and their limits (20 a minute, 14 000 bytes). `stream` (an
//! enterprise app robot) paces per group; `webhook` (a custom robot, send-only) per robot.

use crate::model::Platform;
use crate::protocol::checks::{check_url, url_without_query};
use crate::protocol::defaults::{EgressDefaults, LengthDefault, LengthUnit, TWENTY_A_MINUTE};
use crate::protocol::spec::ProtocolSpec;
use crate::protocol::table::AccountTable;
use crate::Secret;

use super::{StreamSettings, WebhookSettings, DEFAULT_API_BASE, DEFAULT_OAPI_BASE};

/// Longest DingTalk text message, in bytes: below the 15 000 of a send's `msgParam`
/// ([`super::MAX_MSG_PARAM_BYTES`]), which also holds the JSON around the text.
pub const MAX_TEXT_BYTES: usize = 14_000;

/// The enterprise app robot: Stream in, OpenAPI out.
pub const STREAM_SPEC: ProtocolSpec = ProtocolSpec {
    name: "stream",
    description: "DingTalk enterprise app robot: Stream mode in, OpenAPI out",
    platforms: &[Platform::Dingtalk],
    keys: &[
        "client_id",
        "client_secret",
        "robot_code",
        "api_base",
        "oapi_base",
        "events",
    ],
    implied_by: None,
    send_only: false,
    shares_reverse_listener: false,
};

/// The custom robot webhook.
pub const WEBHOOK_SPEC: ProtocolSpec = ProtocolSpec {
    name: "webhook",
    description: "DingTalk custom robot webhook (send-only)",
    platforms: &[Platform::Dingtalk],
    keys: &["webhook", "secret", "keyword"],
    implied_by: Some("webhook"),
    send_only: true,
    shares_reverse_listener: false,
};

/// The longest message either protocol sends.
const LENGTH: LengthDefault = LengthDefault {
    max: MAX_TEXT_BYTES,
    unit: LengthUnit::Bytes,
};

impl StreamSettings {
    /// Checks a Stream account table, adding every problem to `problems`.
    pub fn from_table(
        item: &str,
        table: &AccountTable,
        problems: &mut Vec<String>,
    ) -> Option<StreamSettings> {
        let before = problems.len();
        for (key, value) in [
            ("client_id", &table.client_id),
            ("client_secret", &table.client_secret),
        ] {
            if value.as_deref().is_none_or(str::is_empty) {
                problems.push(format!("{item}: `{key}` is missing"));
            }
        }
        if let Some(base) = &table.api_base {
            check_url(item, "api_base", base, &["http", "https"], problems);
        }
        if let Some(base) = &table.oapi_base {
            check_url(item, "oapi_base", base, &["http", "https"], problems);
        }
        if let Some(code) = table.robot_code.as_deref() {
            if code.trim().is_empty() {
                problems.push(format!(
                    "{item}: `robot_code` = {code:?}: is empty; remove the key to use `client_id`"
                ));
            }
        }
        if problems.len() > before {
            return None;
        }
        let client_id = table.client_id.clone()?;
        let api_base = table
            .api_base
            .as_deref()
            .unwrap_or(DEFAULT_API_BASE)
            .trim_end_matches('/')
            .to_owned();
        let oapi_base = match table.oapi_base.as_deref() {
            Some(base) => base.trim_end_matches('/').to_owned(),
            None => oapi_base_for(&api_base),
        };
        Some(StreamSettings {
            robot_code: table
                .robot_code
                .clone()
                .unwrap_or_else(|| client_id.clone()),
            client_secret: Secret::new(table.client_secret.clone()?),
            api_base,
            oapi_base,
            client_id,
            events: table.events.unwrap_or(false),
        })
    }

    /// A short description for `qunbridge check`.
    pub fn describe(&self) -> String {
        format!(
            "dingtalk stream, client_id {}, robot_code {}, api_base {}, oapi_base {}, events {}",
            self.client_id,
            self.robot_code,
            self.api_base,
            self.oapi_base,
            if self.events { "on" } else { "off" }
        )
    }

    /// An app robot's quota counts per group.
    pub fn egress_defaults(&self) -> EgressDefaults {
        EgressDefaults {
            per_group: Some(TWENTY_A_MINUTE),
            per_account: None,
            length: Some(LENGTH),
        }
    }
}

/// The `oapi` base that goes with `api_base` when `oapi_base` is not set: the host's leading
/// `api.` becomes `oapi.` (`https://api.dingtalk.io` → `https://oapi.dingtalk.io`); a base
/// without it (a proxy, a test peer) serves both.
pub fn oapi_base_for(api_base: &str) -> String {
    if api_base == DEFAULT_API_BASE {
        return DEFAULT_OAPI_BASE.to_owned();
    }
    for scheme in ["https://", "http://"] {
        if let Some(rest) = api_base.strip_prefix(scheme) {
            if let Some(host) = rest.strip_prefix("api.") {
                return format!("{scheme}oapi.{host}");
            }
        }
    }
    api_base.to_owned()
}

impl WebhookSettings {
    /// Checks a custom robot account table, adding every problem to `problems`. The
    /// webhook's query holds the robot's access token, so messages show the URL without it.
    pub fn from_table(
        item: &str,
        table: &AccountTable,
        problems: &mut Vec<String>,
    ) -> Option<WebhookSettings> {
        let before = problems.len();
        let Some(hook) = table.webhook.as_deref() else {
            problems.push(format!("{item}: `webhook` is missing"));
            return None;
        };
        let shown = url_without_query(hook);
        match reqwest::Url::parse(hook) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {}
            Ok(_) => problems.push(format!(
                "{item}: `webhook` = {shown:?}: must be a http:// or https:// URL with a host"
            )),
            Err(error) => problems.push(format!("{item}: `webhook` = {shown:?}: {error}")),
        }
        if table.secret.as_deref().is_some_and(|s| s.trim().is_empty()) {
            problems.push(format!(
                "{item}: `secret` = <redacted>: is empty; remove the key for a robot without signing"
            ));
        }
        if let Some(keyword) = table.keyword.as_deref() {
            if keyword.trim().is_empty() {
                problems.push(format!(
                    "{item}: `keyword` = {keyword:?}: is empty; remove the key for a robot without keywords"
                ));
            }
        }
        (problems.len() == before).then(|| WebhookSettings {
            webhook: Secret::new(hook),
            secret: table.secret.clone().map(Secret::new),
            keyword: table.keyword.clone(),
        })
    }

    /// A short description for `qunbridge check`; the access token is never shown.
    pub fn describe(&self) -> String {
        format!(
            "dingtalk webhook to {}, {}{}",
            self.host(),
            if self.secret.is_some() {
                "signed"
            } else {
                "unsigned"
            },
            if self.keyword.is_some() {
                ", keyword set"
            } else {
                ""
            }
        )
    }

    /// A custom robot's quota counts per robot.
    pub fn egress_defaults(&self) -> EgressDefaults {
        EgressDefaults {
            per_group: None,
            per_account: Some(TWENTY_A_MINUTE),
            length: Some(LENGTH),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_off_unless_set() {
        let mut table = AccountTable {
            client_id: Some("dingabc".into()),
            client_secret: Some("s3cret".into()),
            ..AccountTable::default()
        };
        let mut problems = Vec::new();
        let off = StreamSettings::from_table("account \"ding\"", &table, &mut problems);
        assert!(off.is_some_and(|s| !s.events && s.describe().ends_with("events off")));
        table.events = Some(true);
        let on = StreamSettings::from_table("account \"ding\"", &table, &mut problems);
        assert!(on.is_some_and(|s| s.events && s.describe().ends_with("events on")));
        assert!(problems.is_empty(), "{problems:?}");
        assert!(STREAM_SPEC.keys.contains(&"events"));
        assert!(!WEBHOOK_SPEC.keys.contains(&"events"));
    }

    #[test]
    fn the_oapi_base_follows_the_api_base() {
        assert_eq!(oapi_base_for(DEFAULT_API_BASE), DEFAULT_OAPI_BASE);
        assert_eq!(
            oapi_base_for("https://api.dingtalk.io"),
            "https://oapi.dingtalk.io"
        );
        assert_eq!(
            oapi_base_for("http://127.0.0.1:8080"),
            "http://127.0.0.1:8080"
        );
    }
}
