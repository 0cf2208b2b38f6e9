//! The config file as written: every key optional and every value a plain string or list, so
//! that validation can look at all of it and report every mistake at once instead of stopping
//! at the first type error. Unknown keys are collected separately while deserializing.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
pub struct RawConfig {
    /// Where persistent state lives.
    #[serde(default)]
    pub state_dir: Option<String>,
    /// `[broker]`.
    #[serde(default)]
    pub broker: RawBroker,
    /// `[admin]`.
    #[serde(default)]
    pub admin: RawAdmin,
    /// `[accounts.<id>]`, ordered by id for stable output.
    #[serde(default)]
    pub accounts: BTreeMap<String, RawAccount>,
    /// `[[links]]`, in file order.
    #[serde(default)]
    pub links: Vec<RawLink>,
}

/// `[broker]`.
#[derive(Debug, Default, Deserialize)]
pub struct RawBroker {
    /// External broker URL (`mqtt://` or `mqtts://`); absent means the embedded broker.
    #[serde(default)]
    pub url: Option<String>,
    /// Where the embedded broker listens.
    #[serde(default)]
    pub embedded_listen: Option<String>,
    /// First topic levels of every qunbridge topic.
    #[serde(default)]
    pub topic_prefix: Option<String>,
    /// External broker user name (overrides the URL's).
    #[serde(default)]
    pub username: Option<String>,
    /// External broker password (overrides the URL's); a secret.
    #[serde(default)]
    pub password: Option<String>,
}

/// `[admin]`.
#[derive(Debug, Default, Deserialize)]
pub struct RawAdmin {
    /// Where the admin HTTP endpoint listens.
    #[serde(default)]
    pub listen: Option<String>,
}

/// `[accounts.<id>]`: the union of every platform's keys; validation checks which apply.
#[derive(Debug, Default, Deserialize)]
pub struct RawAccount {
    /// `qq`, `wechat`, `dingtalk`, `wecom` or `api`.
    #[serde(default)]
    pub platform: Option<String>,
    /// How qunbridge talks to the platform; defaults per platform.
    #[serde(default)]
    pub protocol: Option<String>,
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
}

/// `[[links]]`.
#[derive(Debug, Default, Deserialize)]
pub struct RawLink {
    /// Name for logs and `{link}`; `link-<n>` when absent.
    #[serde(default)]
    pub name: Option<String>,
    /// `account:group` members that send and receive.
    #[serde(default)]
    pub groups: Vec<String>,
    /// `account:group` members that only receive.
    #[serde(default)]
    pub to: Vec<String>,
    /// Sender template.
    #[serde(default)]
    pub format: Option<String>,
}
