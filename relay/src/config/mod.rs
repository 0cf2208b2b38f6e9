//! The resolved configuration (ARCHITECTURE.md §10): what `qunbridge run` works from once the
//! file has been read ([`load`]) and checked ([`validate`]). Everything here is already
//! valid; secrets are wrapped in [`Secret`] so they never reach logs.

mod load;
mod raw;
mod validate;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use qunbridge_connectors::api::ApiSettings;
use qunbridge_connectors::Platform;

pub use load::{Env, ProcessEnv};

/// Default embedded broker address.
pub const DEFAULT_EMBEDDED_LISTEN: &str = "127.0.0.1:1884";
/// Default admin HTTP address.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9464";
/// Default first topic levels.
pub const DEFAULT_TOPIC_PREFIX: &str = "qunbridge/v1";
/// Default sender template.
pub const DEFAULT_FORMAT: &str = "[{platform}] {name}: ";

/// A secret value: usable, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The value, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The whole configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where persistent state lives.
    pub state_dir: PathBuf,
    /// How to reach the broker.
    pub broker: BrokerConfig,
    /// Admin HTTP endpoint.
    pub admin: AdminConfig,
    /// Accounts by id.
    pub accounts: BTreeMap<String, Account>,
    /// Links in file order.
    pub links: Vec<Link>,
}

/// `[broker]`.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// Embedded or external.
    pub mode: BrokerMode,
    /// First topic levels, such as `qunbridge/v1`.
    pub topic_prefix: String,
}

/// Which broker carries the traffic.
#[derive(Debug, Clone)]
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
#[derive(Debug, Clone)]
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

/// `[admin]`.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Listen address of the admin HTTP endpoint.
    pub listen: SocketAddr,
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
}

/// Connector settings per protocol.
#[derive(Debug, Clone)]
pub enum ConnectorSettings {
    /// The `api` HTTP endpoint.
    Api(ApiSettings),
}

impl ConnectorSettings {
    /// A short description for `qunbridge check`.
    pub fn describe(&self) -> String {
        match self {
            ConnectorSettings::Api(api) => format!(
                "api, listen {}{}",
                api.listen,
                if api.token.is_some() {
                    ", token set"
                } else {
                    ", no token"
                }
            ),
        }
    }
}

/// A group of one account: the unit links join.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupRef {
    /// Account id.
    pub account: String,
    /// Platform group id (or a label for webhook accounts).
    pub group: String,
}

impl std::fmt::Display for GroupRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.account, self.group)
    }
}

/// A link: a message in any of `groups` goes to every other member and to `to`.
#[derive(Debug, Clone)]
pub struct Link {
    /// Name for logs and `{link}`.
    pub name: String,
    /// Members that send and receive.
    pub groups: Vec<GroupRef>,
    /// Members that only receive.
    pub to: Vec<GroupRef>,
    /// Sender template.
    pub format: String,
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
        let validated = validate::validate(raw, env, &mut problems);
        match validated {
            Some(config) if problems.is_empty() => Ok(config),
            _ => Err(ConfigError { problems }),
        }
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
        let ConnectorSettings::Api(api) = &config.accounts["hub"].connector;
        assert_eq!(api.token.as_deref(), Some("t0k"));
        assert_eq!(config.links[0].name, "link-1");
        assert_eq!(config.links[0].format, DEFAULT_FORMAT);
    }
}
