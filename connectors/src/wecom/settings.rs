//! What the WeCom robot webhook protocol asks of the config: its keys, the checks of its
//! account table, its description and its limits (20 a minute, 2048 bytes of text or 4096 of
//! markdown).

use crate::model::Platform;
use crate::protocol::checks::url_without_query;
use crate::protocol::defaults::{EgressDefaults, LengthDefault, LengthUnit, TWENTY_A_MINUTE};
use crate::protocol::spec::ProtocolSpec;
use crate::protocol::table::AccountTable;
use crate::Secret;

use super::{LargeImages, WecomSettings, MAX_MARKDOWN_BYTES, MAX_TEXT_BYTES};

/// The WeCom group robot webhook.
pub const SPEC: ProtocolSpec = ProtocolSpec {
    name: "webhook",
    description: "WeCom group robot webhook (send-only)",
    platforms: &[Platform::Wecom],
    keys: &["webhook", "markdown", "large_images"],
    implied_by: None,
    send_only: true,
    shares_reverse_listener: false,
};

impl WecomSettings {
    /// Checks a WeCom robot account table, adding every problem to `problems`. The
    /// webhook's `key` query is the robot's only credential, so messages show the URL
    /// without it.
    pub fn from_table(
        item: &str,
        table: &AccountTable,
        problems: &mut Vec<String>,
    ) -> Option<WecomSettings> {
        let large_images = match table.large_images.as_deref() {
            None => Some(LargeImages::default()),
            Some(value) => {
                let choice = LargeImages::parse(value);
                if choice.is_none() {
                    problems.push(format!(
                        "{item}: `large_images` = {value:?}: write \"placeholder\" or \"file\""
                    ));
                }
                choice
            }
        };
        let Some(hook) = table.webhook.as_deref() else {
            problems.push(format!(
                "{item}: `webhook` is missing (https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=…)"
            ));
            return None;
        };
        let shown = url_without_query(hook);
        match reqwest::Url::parse(hook) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {
                let has_key = url
                    .query_pairs()
                    .any(|(name, value)| name == "key" && !value.trim().is_empty());
                if !has_key {
                    problems.push(format!(
                        "{item}: `webhook` = {shown:?}: has no `key` query parameter (copy the robot's whole webhook URL)"
                    ));
                    return None;
                }
            }
            Ok(_) => {
                problems.push(format!(
                    "{item}: `webhook` = {shown:?}: must be a http:// or https:// URL with a host"
                ));
                return None;
            }
            Err(error) => {
                problems.push(format!("{item}: `webhook` = {shown:?}: {error}"));
                return None;
            }
        }
        Some(WecomSettings {
            webhook: Secret::new(hook),
            markdown: table.markdown.unwrap_or(false),
            large_images: large_images?,
        })
    }

    /// A short description for `qunbridge check`; the key is never shown.
    pub fn describe(&self) -> String {
        format!(
            "wecom robot webhook to {}, {}, large images as {}",
            self.host(),
            if self.markdown { "markdown" } else { "text" },
            self.large_images.as_str()
        )
    }

    /// 20 messages a minute per robot; markdown messages may be twice as long as text ones.
    pub fn egress_defaults(&self) -> EgressDefaults {
        EgressDefaults {
            per_group: None,
            per_account: Some(TWENTY_A_MINUTE),
            length: Some(LengthDefault {
                max: if self.markdown {
                    MAX_MARKDOWN_BYTES
                } else {
                    MAX_TEXT_BYTES
                },
                unit: LengthUnit::Bytes,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(large_images: Option<&str>) -> AccountTable {
        AccountTable {
            webhook: Some("https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k".into()),
            large_images: large_images.map(str::to_owned),
            ..AccountTable::default()
        }
    }

    #[test]
    fn large_images_is_checked() {
        let mut problems = Vec::new();
        let settings =
            WecomSettings::from_table("account \"w\"", &table(None), &mut problems).expect("valid");
        assert_eq!(settings.large_images, LargeImages::Placeholder);
        let settings =
            WecomSettings::from_table("account \"w\"", &table(Some("file")), &mut problems)
                .expect("valid");
        assert_eq!(settings.large_images, LargeImages::File);
        assert!(problems.is_empty());
        let bad = AccountTable {
            webhook: None,
            ..table(Some("inline"))
        };
        assert!(WecomSettings::from_table("account \"w\"", &bad, &mut problems).is_none());
        assert_eq!(
            problems,
            [
                "account \"w\": `large_images` = \"inline\": write \"placeholder\" or \"file\"",
                "account \"w\": `webhook` is missing (https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=…)"
            ],
            "every problem at once"
        );
    }
}
