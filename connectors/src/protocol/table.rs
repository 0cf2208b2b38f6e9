//! `[accounts.<id>]` as written: every key any protocol reads, each optional, so one decode
//! serves every protocol and unknown keys are reported while decoding. Which keys a protocol
//! reads is its `ProtocolSpec::keys`; [`AccountTable::set_keys`] lists the ones a table sets.

use serde::Deserialize;

/// One account table: the union of every protocol's keys; each protocol checks its own.
#[derive(Debug, Default, Deserialize)]
pub struct AccountTable {
    /// `qq`, `wechat`, `dingtalk`, `wecom` or `api`: decides the protocols on offer.
    #[serde(default)]
    pub platform: Option<String>,
    /// How qunbridge talks to the platform; absent means the platform's default (or the
    /// protocol a set key implies).
    #[serde(default)]
    pub protocol: Option<String>,
    /// How pictures reach this account's groups (`native`, `link`, `placeholder`,
    /// `passthrough`), overriding `[media] mode`: read by the relay, not by a protocol.
    #[serde(default)]
    pub media: Option<String>,
    /// Forward WebSocket URL (qunbridge connects).
    #[serde(default)]
    pub url: Option<String>,
    /// Listen address (reverse WebSocket, `api` endpoint).
    #[serde(default)]
    pub listen: Option<String>,
    /// OneBot access token; a secret.
    #[serde(default)]
    pub access_token: Option<String>,
    /// DingTalk app key.
    #[serde(default)]
    pub client_id: Option<String>,
    /// DingTalk app secret; a secret.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// DingTalk robot code (default: `client_id`).
    #[serde(default)]
    pub robot_code: Option<String>,
    /// DingTalk OpenAPI base URL (international tenant, tests).
    #[serde(default)]
    pub api_base: Option<String>,
    /// DingTalk legacy OpenAPI base URL (`oapi`: media uploads), when `api_base` does not
    /// tell it.
    #[serde(default)]
    pub oapi_base: Option<String>,
    /// Robot webhook URL (send-only accounts).
    #[serde(default)]
    pub webhook: Option<String>,
    /// DingTalk custom robot signing secret; a secret.
    #[serde(default)]
    pub secret: Option<String>,
    /// DingTalk custom robot keyword added to every message.
    #[serde(default)]
    pub keyword: Option<String>,
    /// `api` bearer token; a secret.
    #[serde(default)]
    pub token: Option<String>,
    /// `api` messages kept per group for SSE replay.
    #[serde(default)]
    pub buffer: Option<u64>,
    /// OneBot: the bot's user id (tells accounts on a shared reverse listener apart).
    #[serde(default)]
    pub self_id: Option<String>,
    /// OneBot v12: send pictures as pictures (`upload_file` by URL, then an `image`
    /// segment, each its own WeChat message) instead of their URLs in the text. Off by default.
    #[serde(default)]
    pub send_images: Option<bool>,
    /// OneBot v11/v12: how often the group member lists are polled and diffed, for
    /// implementations that report no joins and leaves (a duration such as `6h`; absent: off).
    #[serde(default)]
    pub member_poll: Option<String>,
    /// WeCom robot: send `markdown` messages (up to 4096 bytes) instead of `text` (2048).
    #[serde(default)]
    pub markdown: Option<bool>,
    /// WeCom robot: what becomes of a picture too large (or of a type) its `image` message
    /// does not take: `placeholder` (default) or `file` (uploaded and sent as a file).
    #[serde(default)]
    pub large_images: Option<String>,
    /// DingTalk app robot: subscribe to the app's events (`EVENT` topic `*`) and publish
    /// group membership changes (`chat_add_member`, …) as member envelopes. Off by default.
    #[serde(default)]
    pub events: Option<bool>,
}

impl AccountTable {
    /// Every key a protocol may read (all but `platform`, `protocol` and `media`), in the order
    /// [`AccountTable::set_keys`] reports them.
    pub const KEYS: [&'static str; 19] = [
        "url",
        "listen",
        "access_token",
        "client_id",
        "client_secret",
        "robot_code",
        "api_base",
        "oapi_base",
        "webhook",
        "secret",
        "keyword",
        "token",
        "buffer",
        "self_id",
        "send_images",
        "member_poll",
        "markdown",
        "large_images",
        "events",
    ];

    /// The keys whose values are secrets: the config accepts them as `<key>_file` too, and
    /// never prints their values.
    pub const SECRET_KEYS: [&'static str; 4] = ["access_token", "client_secret", "secret", "token"];

    /// The keys this table sets, besides `platform`, `protocol` and `media`. The destructuring is
    /// exhaustive: a new field does not compile until it is listed here.
    pub fn set_keys(&self) -> Vec<&'static str> {
        let AccountTable {
            platform: _,
            protocol: _,
            media: _,
            url,
            listen,
            access_token,
            client_id,
            client_secret,
            robot_code,
            api_base,
            oapi_base,
            webhook,
            secret,
            keyword,
            token,
            buffer,
            self_id,
            send_images,
            member_poll,
            markdown,
            large_images,
            events,
        } = self;
        let set = [
            url.is_some(),
            listen.is_some(),
            access_token.is_some(),
            client_id.is_some(),
            client_secret.is_some(),
            robot_code.is_some(),
            api_base.is_some(),
            oapi_base.is_some(),
            webhook.is_some(),
            secret.is_some(),
            keyword.is_some(),
            token.is_some(),
            buffer.is_some(),
            self_id.is_some(),
            send_images.is_some(),
            member_poll.is_some(),
            markdown.is_some(),
            large_images.is_some(),
            events.is_some(),
        ];
        AccountTable::KEYS
            .into_iter()
            .zip(set)
            .filter_map(|(key, set)| set.then_some(key))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_keys_name_the_fields_that_are_set() {
        let table = AccountTable {
            platform: Some("qq".into()),
            url: Some("ws://x".into()),
            markdown: Some(false),
            ..AccountTable::default()
        };
        assert_eq!(table.set_keys(), ["url", "markdown"]);
    }

    #[test]
    fn secret_keys_are_account_keys() {
        for key in AccountTable::SECRET_KEYS {
            assert!(AccountTable::KEYS.contains(&key), "{key}");
        }
    }

    #[test]
    fn keys_are_the_decoded_field_names() {
        for key in AccountTable::KEYS {
            let value = match key {
                "buffer" => serde_json::json!(1),
                "send_images" | "markdown" | "events" => serde_json::json!(true),
                _ => serde_json::json!("x"),
            };
            let table: AccountTable =
                serde_json::from_value(serde_json::json!({ key: value })).expect("decodes");
            assert_eq!(table.set_keys(), [key]);
        }
    }
}
