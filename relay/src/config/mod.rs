//! The resolved configuration (ARCHITECTURE.md §10): what `qunbridge run` works from once the
//! file has been read ([`load`]) and checked ([`validate`]). Everything here is already
//! valid; secrets are wrapped in [`Secret`] so they never reach logs.

mod load;
pub mod media;
pub mod moderation;
mod policy;
mod raw;
pub mod stats;
mod suggest;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use qunbridge_connectors::protocol::ConnectorSettings;
use qunbridge_connectors::Platform;
pub use qunbridge_connectors::Secret;

use crate::policy::EgressPolicy;

pub use crate::policy::moderation::{FloodConfig, ModerationAction};
pub use crate::policy::{GroupRef, Link};
pub use load::{Env, ProcessEnv};
pub use media::{MediaConfig, MediaMode};
pub use moderation::{ModerationConfig, WordLists};
pub use policy::FilterConfig;
pub use stats::{Notices, StatsConfig, StatsMetrics};

/// Default embedded broker address.
pub const DEFAULT_EMBEDDED_LISTEN: &str = "127.0.0.1:1884";
/// Default admin HTTP address.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9464";
/// Default first topic levels.
pub const DEFAULT_TOPIC_PREFIX: &str = "qunbridge/v1";
/// Default sender template.
pub const DEFAULT_FORMAT: &str = "[{platform}] {name}: ";

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where persistent state lives.
    pub state_dir: PathBuf,
    /// How to reach the broker.
    pub broker: BrokerConfig,
    /// Admin HTTP endpoint.
    pub admin: AdminConfig,
    /// Where the relay's state lives.
    pub store: StoreConfig,
    /// How pictures are fetched, cached and carried (`[media]`).
    pub media: MediaConfig,
    /// Group health (`[stats]`, links' `notices`).
    pub stats: StatsConfig,
    /// What is judged before it is relayed (`[moderation]`).
    pub moderation: ModerationConfig,
    /// What this process runs.
    pub role: Role,
    /// This process's name among the processes of one deployment.
    pub instance: String,
    /// Accounts by id.
    pub accounts: BTreeMap<String, Account>,
    /// Links in file order.
    pub links: Vec<Link>,
    /// Filter rules per destination platform and account.
    pub filters: FilterConfig,
}

/// `[broker]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// Embedded or external.
    pub mode: BrokerMode,
    /// First topic levels, such as `qunbridge/v1`.
    pub topic_prefix: String,
}

/// Which broker carries the traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerMode {
    /// rumqttd inside the process, listening here.
    Embedded {
        /// Listen address of the embedded broker.
        listen: SocketAddr,
    },
    /// An external MQTT broker.
    External(ExternalBroker),
}

/// How to reach an external broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExternalBroker {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// `mqtts://`: TLS with the system's root certificates.
    pub tls: bool,
    /// User name, if the broker wants one.
    pub username: Option<String>,
    /// Password, if the broker wants one.
    pub password: Option<Secret>,
}

/// Default `instance`.
pub const DEFAULT_INSTANCE: &str = "main";

/// What one qunbridge process runs (ARCHITECTURE.md §9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Connectors and the relay core: the single-process setup.
    All,
    /// Only the accounts' connectors (ingress and egress).
    Connectors,
    /// Only the relay core (dedup, routing, rendering), sharing the inbound topics with the
    /// other cores.
    Core,
}

impl Role {
    /// Parses `all`, `connectors` or `core`.
    pub fn parse(name: &str) -> Option<Role> {
        match name {
            "all" => Some(Role::All),
            "connectors" => Some(Role::Connectors),
            "core" => Some(Role::Core),
            _ => None,
        }
    }

    /// True when the process runs the relay core.
    pub fn runs_core(self) -> bool {
        matches!(self, Role::All | Role::Core)
    }

    /// True when the process runs connectors.
    pub fn runs_connectors(self) -> bool {
        matches!(self, Role::All | Role::Connectors)
    }

    /// The name, as written in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::All => "all",
            Role::Connectors => "connectors",
            Role::Core => "core",
        }
    }
}

/// `[store]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreConfig {
    /// The embedded store (redb) under `state_dir`.
    Embedded,
    /// A Redis shared by every process of a scaled-out deployment.
    Redis {
        /// Its URL (may hold a password: never printed).
        url: Secret,
        /// Prefix of every key.
        prefix: String,
    },
}

/// `[admin]`.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Listen address of the admin HTTP endpoint.
    pub listen: SocketAddr,
    /// `admin.token`: what the console and `/api/v1/*` ask for (as `Authorization: Bearer`
    /// or the console's login cookie); they ask for it when it is set, and on a non-loopback
    /// address they are closed without it.
    pub token: Option<Secret>,
}

impl AdminConfig {
    /// True when the console and `/api/v1/*` ask for the token: one is set, or the endpoint
    /// listens beyond loopback (and then, without a token, they are closed).
    pub fn token_required(&self) -> bool {
        self.token.is_some() || !self.listen.ip().is_loopback()
    }
}

/// One bot account.
#[derive(Debug, Clone)]
pub struct Account {
    /// The table name, `[a-z0-9_-]+`.
    pub id: String,
    /// The platform it is on.
    pub platform: Platform,
    /// How to run its connector.
    pub connector: ConnectorSettings,
    /// How its messages are paced and sized (platform defaults, `[limits."<id>"]`).
    pub egress: EgressPolicy,
    /// Its own `media` mode, overriding `[media] mode` for its groups.
    pub media: Option<MediaMode>,
}

/// A configuration that could not be used: every problem, each naming item, key and value.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} configuration error(s):\n{}", problems.len(), problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n"))]
pub struct ConfigError {
    /// One line per problem.
    pub problems: Vec<String>,
}

impl Config {
    /// Reads, interpolates and validates a config file.
    ///
    /// # Errors
    /// [`ConfigError`] listing every problem found.
    pub fn from_file(path: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
        let (raw, mut problems) = load::read(path, env);
        let dir = path.parent().unwrap_or(Path::new(""));
        let validated = validate::validate(raw, env, dir, &mut problems);
        match validated {
            Some(config) if problems.is_empty() => Ok(config),
            _ => Err(ConfigError { problems }),
        }
    }

    /// Reads, interpolates and validates config text held in memory, exactly as
    /// [`Config::from_file`] does a file in directory `dir` (where relative `<key>_file` paths
    /// and word-list files are looked up). Public so the config fuzz target (`fuzz/`) can call it without files.
    ///
    /// # Errors
    /// [`ConfigError`] listing every problem found.
    pub fn from_toml(text: &str, dir: &Path, env: &dyn Env) -> Result<Config, ConfigError> {
        let (raw, mut problems) = load::read_text(text, dir, env);
        let validated = validate::validate(raw, env, dir, &mut problems);
        match validated {
            Some(config) if problems.is_empty() => Ok(config),
            _ => Err(ConfigError { problems }),
        }
    }

    /// How pictures reach the groups of account `id`: its own `media`, else `[media] mode`.
    pub fn media_mode(&self, id: &str) -> MediaMode {
        self.account(id)
            .and_then(|account| account.media)
            .unwrap_or(self.media.mode)
    }

    /// The account a group belongs to.
    pub fn account(&self, id: &str) -> Option<&Account> {
        self.accounts.get(id)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Loads a config text with the given environment.
    pub(crate) fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("q.toml");
        std::fs::write(&path, text).expect("write");
        let env: HashMap<&str, &str> = env.iter().copied().collect();
        Config::from_file(&path, &env)
    }

    #[test]
    fn every_mistake_is_reported_at_once() {
        let error = load(
            r#"
            [broker]
            embedded_listen = "127.0.0.1:99999"
            topic_prefix = "a/#"
            [admin]
            listen = "0.0.0.0:8088"
            [accounts.hub]
            platform = "api"
            listen = "127.0.0.1:8088"
            token = "${NOPE}"
            [accounts.ding-hook]
            platform = "dingtalk"
            webhook = "https://oapi.dingtalk.com/robot/send?access_token=x"
            [accounts.Bad]
            platform = "telegram"
            [[links]]
            name = "broken"
            groups = ["hub:a", "nobody:b", "hub-c", "ding-hook:x", "hub:a"]
            format = "{nme}"
            [[links]]
            groups = ["hub:z"]
            "#,
            &[],
        )
        .expect_err("invalid");
        let expected = [
            "`accounts.hub.token` = <redacted>: environment variable `NOPE` is not set",
            "broker: `embedded_listen` = \"127.0.0.1:99999\"",
            "broker: `topic_prefix` = \"a/#\"",
            "account \"Bad\": the account id \"Bad\"",
            "account \"Bad\": `platform` = \"telegram\": unknown",
            "link \"broken\": `format` = \"{nme}\": unknown placeholder `{nme}`",
            "link \"broken\": `groups` has \"nobody:b\": unknown account `nobody`",
            "link \"broken\": `groups` has \"hub-c\": not of the form `account:group`",
            "link \"broken\": `groups` has \"ding-hook:x\": account `ding-hook` is send-only",
            "link \"broken\": `groups` has \"hub:a\" twice",
            "link \"link-2\": `groups` = [\"hub:z\"]: a link needs",
            "listen address `127.0.0.1:8088` is claimed by both `admin.listen` (`0.0.0.0:8088`) and `accounts.hub.listen`",
        ];
        for line in expected {
            assert!(
                error.problems.iter().any(|p| p.contains(line)),
                "missing {line:?} in {:#?}",
                error.problems
            );
        }
    }

    #[test]
    fn the_admin_token_is_checked_never_shown_and_asked_for_beyond_loopback() {
        let config = |admin: &str| {
            format!(
                "[admin]\n{admin}\n[accounts.hub]\nplatform = \"api\"\nlisten = \"127.0.0.1:8088\"\n[[links]]\ngroups = [\"hub:a\", \"hub:b\"]\n"
            )
        };
        let error = load(
            &config("listen = \"0.0.0.0:9464\"\ntoken = \"short-secret\""),
            &[],
        )
        .expect_err("too short");
        assert!(
            error
                .problems
                .iter()
                .any(|p| p.starts_with("`admin.token` = <redacted>: 12 characters; at least 16")),
            "{:#?}",
            error.problems
        );
        assert!(
            !format!("{error:?}").contains("short-secret"),
            "never shown"
        );
        let error =
            load(&config("token = \"a token with spaces inside\""), &[]).expect_err("spaces");
        assert!(
            error.problems[0].contains("no spaces"),
            "{:#?}",
            error.problems
        );

        let open = load(&config("listen = \"127.0.0.1:9464\""), &[]).expect("valid");
        assert!(!open.admin.token_required());
        let beyond = load(&config("listen = \"0.0.0.0:9464\""), &[]).expect("valid");
        assert!(beyond.admin.token_required(), "closed without a token");
        let guarded = load(
            &config("listen = \"127.0.0.1:9464\"\ntoken = \"${ADMIN_TOKEN}\""),
            &[("ADMIN_TOKEN", "0123456789abcdef")],
        )
        .expect("valid");
        assert!(guarded.admin.token_required(), "a token set is asked for");
        assert_eq!(
            guarded.admin.token.as_ref().map(Secret::expose),
            Some("0123456789abcdef")
        );
    }

    #[test]
    fn onebot_accounts_may_share_a_reverse_listener_only_with_self_ids() {
        let shared = |a: &str, b: &str| {
            format!(
                "[accounts.qa]\nplatform = \"qq\"\nlisten = \"127.0.0.1:16701\"\n{a}\n\
                 [accounts.qb]\nplatform = \"wechat\"\nprotocol = \"onebot11\"\nlisten = \"127.0.0.1:16701\"\n{b}\n"
            )
        };
        let ok = load(&shared("self_id = \"1\"", "self_id = \"wxid_2\""), &[]).expect("valid");
        assert_eq!(ok.accounts.len(), 2);
        let error = load(&shared("self_id = \"1\"", ""), &[]).expect_err("missing self_id");
        assert!(
            error
                .problems
                .iter()
                .any(|p| p.contains("account \"qb\": `self_id` is missing")),
            "{error}"
        );
        let error =
            load(&shared("self_id = \"1\"", "self_id = \"1\""), &[]).expect_err("same self_id");
        assert!(
            error
                .problems
                .iter()
                .any(|p| p.contains("`self_id` = \"1\": another account")),
            "{error}"
        );
        let error = load(
            "[accounts.qa]\nplatform = \"qq\"\nurl = \"ws://127.0.0.1:3001\"\nlisten = \"127.0.0.1:16702\"\n",
            &[],
        )
        .expect_err("both transports");
        assert!(
            error
                .problems
                .iter()
                .any(|p| p.contains("`url` and `listen` are both set")),
            "{error}"
        );
    }

    #[test]
    fn a_valid_config_resolves_secrets_defaults_and_external_brokers() {
        let config = load(
            r#"
            [broker]
            url = "mqtts://relay:p%40ss@mqtt.example.org"
            [accounts.hub]
            platform = "api"
            listen = "127.0.0.1:18088"
            token = "${API_TOKEN}"
            [[links]]
            groups = ["hub:a", "hub:b"]
            "#,
            &[
                ("API_TOKEN", "t0k"),
                ("STATE_DIRECTORY", "/var/lib/qunbridge:/other"),
            ],
        )
        .expect("valid");
        assert_eq!(config.state_dir, PathBuf::from("/var/lib/qunbridge"));
        assert_eq!(config.admin.listen.to_string(), DEFAULT_ADMIN_LISTEN);
        assert_eq!(config.broker.topic_prefix, DEFAULT_TOPIC_PREFIX);
        let BrokerMode::External(external) = &config.broker.mode else {
            panic!("external broker expected");
        };
        assert_eq!(
            (external.host.as_str(), external.port, external.tls),
            ("mqtt.example.org", 8883, true)
        );
        assert_eq!(external.username.as_deref(), Some("relay"));
        assert_eq!(external.password.as_ref().map(Secret::expose), Some("p@ss"));
        assert_eq!(format!("{:?}", external.password), "Some(<redacted>)");
        let ConnectorSettings::Api(api) = &config.accounts["hub"].connector else {
            panic!("api settings expected");
        };
        assert_eq!(api.token.as_ref().map(Secret::expose), Some("t0k"));
        assert_eq!(config.links[0].name, "link-1");
        assert_eq!(config.links[0].format, DEFAULT_FORMAT);
    }

    #[test]
    fn wechat_onebot12_and_wecom_robot_accounts_resolve() {
        let config = load(
            r#"
            [accounts.wx]
            platform = "wechat"
            url = "ws://127.0.0.1:8000/?access_token=t"
            send_images = true
            [accounts.wx-rev]
            platform = "wechat"
            listen = "127.0.0.1:16703"
            [accounts.hook]
            platform = "wecom"
            webhook = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=693a91f6-7xxx"
            markdown = true
            [[links]]
            groups = ["wx:20993411775@chatroom", "wx-rev:1@chatroom"]
            to = ["hook:ops"]
            "#,
            &[],
        )
        .expect("valid");
        let ConnectorSettings::OneBot12(wx) = &config.accounts["wx"].connector else {
            panic!("onebot12 expected for wechat by default");
        };
        assert!(wx.send_images);
        assert!(!config.accounts["wx"]
            .connector
            .describe()
            .contains("access_token"));
        let ConnectorSettings::OneBot12(rev) = &config.accounts["wx-rev"].connector else {
            panic!("onebot12 expected");
        };
        assert!(!rev.send_images, "off by default");
        let hook = &config.accounts["hook"].connector;
        let ConnectorSettings::WecomWebhook(settings) = hook else {
            panic!("wecom webhook expected");
        };
        assert!(settings.markdown);
        let shown = format!("{} {hook:?}", hook.describe());
        assert!(
            !shown.contains("693a91f6"),
            "the key is never shown: {shown}"
        );

        let error = load(
            r#"
            [accounts.hook]
            platform = "wecom"
            webhook = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?nokey=s3cret"
            secret = "x"
            [accounts.wx]
            platform = "wechat"
            listen = "127.0.0.1:16704"
            markdown = true
            [accounts.wx2]
            platform = "wechat"
            listen = "127.0.0.1:16704"
            self_id = "a"
            [accounts.qq]
            platform = "qq"
            url = "ws://127.0.0.1:3001"
            send_images = false
            "#,
            &[],
        )
        .expect_err("invalid");
        let expected = [
            "account \"hook\": `webhook` = \"https://qyapi.weixin.qq.com/cgi-bin/webhook/send?<redacted>\": has no `key`",
            "account \"hook\": `secret` is not used by platform `wecom` with protocol `webhook`",
            "account \"wx\": `markdown` is not used by platform `wechat` with protocol `onebot12`",
            "account \"qq\": `send_images` is not used by platform `qq` with protocol `onebot11`",
            "listen address `127.0.0.1:16704` is claimed by both `accounts.wx.listen`",
        ];
        for line in expected {
            assert!(
                error.problems.iter().any(|p| p.contains(line)),
                "missing {line:?} in {:#?}",
                error.problems
            );
        }
        assert!(!format!("{error}").contains("s3cret"), "{error}");
    }

    #[test]
    fn an_unknown_key_names_its_nearest_known_key() {
        let error = load(
            "[accounts.qq]\nplatform = \"qq\"\nurl = \"ws://127.0.0.1:3001\"\nacess_token = \"t\"\n",
            &[],
        )
        .expect_err("unknown key");
        assert_eq!(
            error.problems,
            ["`accounts.qq.acess_token`: unknown key; did you mean `access_token`?"]
        );
    }

    #[test]
    fn each_protocol_starts_from_its_platform_defaults() {
        let config = load(
            r#"
            [accounts.qq]
            platform = "qq"
            url = "ws://127.0.0.1:3001"
            [accounts.wx]
            platform = "wechat"
            url = "ws://127.0.0.1:3002"
            [accounts.app]
            platform = "dingtalk"
            client_id = "id"
            client_secret = "s"
            [accounts.ding-hook]
            platform = "dingtalk"
            webhook = "https://oapi.dingtalk.com/robot/send?access_token=x"
            [accounts.text]
            platform = "wecom"
            webhook = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k"
            [accounts.md]
            platform = "wecom"
            webhook = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k"
            markdown = true
            [accounts.hub]
            platform = "api"
            listen = "127.0.0.1:18089"
            "#,
            &[],
        )
        .expect("valid");
        // (per group, per account, length) as `count/ms burst` and `max unit`.
        let shown = |id: &str| {
            let egress = &config.accounts[id].egress;
            let limit = |l: Option<crate::policy::Limit>| {
                l.map(|l| format!("{}/{}ms {}", l.rate.count, l.rate.per.as_millis(), l.burst))
            };
            (
                limit(egress.per_group),
                limit(egress.per_account),
                egress
                    .length
                    .map(|l| format!("{} {:?} {}", l.max, l.unit, l.max_parts)),
            )
        };
        let some = |s: &str| Some(s.to_owned());
        let personal = (some("1/1500ms 3"), some("20/60000ms 5"));
        assert_eq!(
            shown("qq"),
            (personal.0.clone(), personal.1.clone(), some("4500 Chars 5"))
        );
        assert_eq!(shown("wx"), (personal.0, personal.1, some("2000 Chars 5")));
        assert_eq!(
            shown("app"),
            (some("20/60000ms 5"), None, some("14000 Bytes 5"))
        );
        assert_eq!(
            shown("ding-hook"),
            (None, some("20/60000ms 5"), some("14000 Bytes 5"))
        );
        assert_eq!(
            shown("text"),
            (None, some("20/60000ms 5"), some("2048 Bytes 5"))
        );
        assert_eq!(
            shown("md"),
            (None, some("20/60000ms 5"), some("4096 Bytes 5"))
        );
        assert_eq!(shown("hub"), (None, None, None));
    }
}
