//! The closed list of protocols qunbridge speaks, and what the relay's config asks of each:
//! its name and keys in an `[accounts.<id>]` table, the platforms it reaches, whether it is
//! send-only or may share a reverse listener, how its table is checked, its pacing and length
//! defaults, its one-line description, and how its connector is started.
//!
//! Each protocol's facts live beside its connector (`<connector>/settings.rs`); this file only
//! names them. Every `match` over [`Protocol`] and [`ConnectorSettings`] here is exhaustive, so
//! adding a variant makes the compiler list every place the new protocol must be described.
//!
//! Adding a protocol: a folder `connectors/src/<name>/` with its settings, connector and
//! `settings.rs` (`SPEC`, `from_table`, `describe`, `egress_defaults`); `pub mod <name>;` in
//! `lib.rs`; a variant in `protocols!` below and in [`ConnectorSettings`]; then `cargo build`
//! and fill in each match it reports. A key no protocol read before is a new
//! [`AccountTable`] field (the compiler then points at [`AccountTable::set_keys`]).

pub mod checks;
pub mod defaults;
pub mod spec;
pub mod table;

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::api::{ApiConnector, ApiSettings, FeedLog};
use crate::context::ConnectorContext;
use crate::dingtalk::{StreamConnector, StreamSettings, WebhookConnector, WebhookSettings};
use crate::error::ConnectorError;
use crate::model::Platform;
use crate::onebot11::{OneBot11Connector, OneBot11Settings};
use crate::onebot12::{OneBot12Connector, OneBot12Settings};
use crate::reverse_ws::SharedListeners;
use crate::wecom::{WecomConnector, WecomSettings};
use crate::Connector;

pub use checks::{check_url, redact_url, socket_addr, url_without_query};
pub use defaults::{
    EgressDefaults, LengthDefault, LengthUnit, PacingDefault, QQ_MAX_CHARS, TWENTY_A_MINUTE,
    WECHAT_MAX_CHARS,
};
pub use spec::ProtocolSpec;
pub use table::AccountTable;

/// Declares [`Protocol`] and `Protocol::ALL` from one list, so a new variant cannot be
/// missing from `ALL` (and so from the protocols a platform offers).
macro_rules! protocols {
    ($($(#[$doc:meta])* $variant:ident,)*) => {
        /// How qunbridge talks to a platform: one variant per connector configuration.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Protocol {
            $($(#[$doc])* $variant,)*
        }

        impl Protocol {
            /// Every protocol, in declaration order: the order in which the non-default
            /// protocols of a platform are listed.
            pub const ALL: &'static [Protocol] = &[$(Protocol::$variant,)*];
        }
    };
}

protocols! {
    /// The generic `api` HTTP endpoint of qunbridge itself.
    Api,
    /// DingTalk enterprise app robot: Stream in, OpenAPI out.
    DingtalkStream,
    /// DingTalk custom robot webhook: send-only.
    DingtalkWebhook,
    /// OneBot v11 over a forward or reverse WebSocket.
    OneBot11,
    /// OneBot v12 over a forward or reverse WebSocket.
    OneBot12,
    /// WeCom group robot webhook: send-only.
    WecomWebhook,
}

impl Protocol {
    /// Its fixed facts.
    pub fn spec(self) -> &'static ProtocolSpec {
        match self {
            Protocol::Api => &crate::api::settings::SPEC,
            Protocol::DingtalkStream => &crate::dingtalk::settings::STREAM_SPEC,
            Protocol::DingtalkWebhook => &crate::dingtalk::settings::WEBHOOK_SPEC,
            Protocol::OneBot11 => &crate::onebot11::settings::SPEC,
            Protocol::OneBot12 => &crate::onebot12::settings::SPEC,
            Protocol::WecomWebhook => &crate::wecom::settings::SPEC,
        }
    }

    /// The config spelling (`onebot11`, `stream`, `webhook`, `api`).
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// The protocol an account of `platform` uses when its table names none and implies
    /// none.
    pub fn default_for(platform: Platform) -> Protocol {
        match platform {
            Platform::Qq => Protocol::OneBot11,
            Platform::Wechat => Protocol::OneBot12,
            Platform::Dingtalk => Protocol::DingtalkStream,
            Platform::Wecom => Protocol::WecomWebhook,
            Platform::Api => Protocol::Api,
        }
    }

    /// The protocols that reach `platform`: its default first, then the others.
    pub fn offered(platform: Platform) -> Vec<Protocol> {
        let default = Protocol::default_for(platform);
        let others = Protocol::ALL
            .iter()
            .copied()
            .filter(|p| *p != default && p.spec().platforms.contains(&platform));
        std::iter::once(default).chain(others).collect()
    }

    /// The protocol of `platform` spelled `name`, if that platform offers one.
    pub fn named(platform: Platform, name: &str) -> Option<Protocol> {
        Protocol::offered(platform)
            .into_iter()
            .find(|p| p.name() == name)
    }

    /// The protocol an account table without `protocol` gets: one implied by a key it sets,
    /// else the platform's default.
    pub fn implied(platform: Platform, table: &AccountTable) -> Protocol {
        let set = table.set_keys();
        Protocol::offered(platform)
            .into_iter()
            .find(|p| p.spec().implied_by.is_some_and(|key| set.contains(&key)))
            .unwrap_or_else(|| Protocol::default_for(platform))
    }

    /// Checks an account table for this protocol, adding every problem (each naming `item`,
    /// the key and the value, secrets shown as `<redacted>`) to `problems`. Returns the
    /// settings when they could be built.
    pub fn check(
        self,
        item: &str,
        table: &AccountTable,
        problems: &mut Vec<String>,
    ) -> Option<ConnectorSettings> {
        match self {
            Protocol::Api => {
                ApiSettings::from_table(item, table, problems).map(ConnectorSettings::Api)
            }
            Protocol::DingtalkStream => StreamSettings::from_table(item, table, problems)
                .map(ConnectorSettings::DingtalkStream),
            Protocol::DingtalkWebhook => WebhookSettings::from_table(item, table, problems)
                .map(ConnectorSettings::DingtalkWebhook),
            Protocol::OneBot11 => {
                OneBot11Settings::from_table(item, table, problems).map(ConnectorSettings::OneBot11)
            }
            Protocol::OneBot12 => {
                OneBot12Settings::from_table(item, table, problems).map(ConnectorSettings::OneBot12)
            }
            Protocol::WecomWebhook => WecomSettings::from_table(item, table, problems)
                .map(ConnectorSettings::WecomWebhook),
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Checks one `[accounts.<id>]` table of a known platform: picks its protocol (reporting an
/// unknown one), reports every key the protocol does not read, then runs the protocol's own
/// checks. Every problem is added to `problems`; the settings come back when all was well.
pub fn check_account_table(
    item: &str,
    platform: Platform,
    table: &AccountTable,
    problems: &mut Vec<String>,
) -> Option<ConnectorSettings> {
    let protocol = match table.protocol.as_deref() {
        Some(name) => match Protocol::named(platform, name) {
            Some(protocol) => protocol,
            None => {
                let offered: Vec<&str> = Protocol::offered(platform)
                    .into_iter()
                    .map(Protocol::name)
                    .collect();
                problems.push(format!(
                    "{item}: `protocol` = {name:?}: platform `{platform}` takes one of {}",
                    offered.join(", ")
                ));
                return None;
            }
        },
        None => Protocol::implied(platform, table),
    };
    let allowed = protocol.spec().keys;
    for key in table.set_keys() {
        if !allowed.contains(&key) {
            problems.push(format!(
                "{item}: `{key}` is not used by platform `{platform}` with protocol `{protocol}` (it takes {})",
                allowed.join(", ")
            ));
        }
    }
    protocol.check(item, table, problems)
}

/// The checked settings of one account, per protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectorSettings {
    /// The `api` HTTP endpoint.
    Api(ApiSettings),
    /// DingTalk enterprise app robot: Stream in, OpenAPI out.
    DingtalkStream(StreamSettings),
    /// DingTalk custom robot webhook: send-only.
    DingtalkWebhook(WebhookSettings),
    /// OneBot v11 over forward or reverse WebSocket.
    OneBot11(OneBot11Settings),
    /// OneBot v12 over forward or reverse WebSocket (ComWeChatClient and others).
    OneBot12(OneBot12Settings),
    /// WeCom group robot webhook: send-only.
    WecomWebhook(WecomSettings),
}

impl ConnectorSettings {
    /// The protocol these settings are for.
    pub fn protocol(&self) -> Protocol {
        match self {
            ConnectorSettings::Api(_) => Protocol::Api,
            ConnectorSettings::DingtalkStream(_) => Protocol::DingtalkStream,
            ConnectorSettings::DingtalkWebhook(_) => Protocol::DingtalkWebhook,
            ConnectorSettings::OneBot11(_) => Protocol::OneBot11,
            ConnectorSettings::OneBot12(_) => Protocol::OneBot12,
            ConnectorSettings::WecomWebhook(_) => Protocol::WecomWebhook,
        }
    }

    /// A short description for `qunbridge check`, never showing a secret.
    pub fn describe(&self) -> String {
        match self {
            ConnectorSettings::Api(settings) => settings.describe(),
            ConnectorSettings::DingtalkStream(settings) => settings.describe(),
            ConnectorSettings::DingtalkWebhook(settings) => settings.describe(),
            ConnectorSettings::OneBot11(settings) => settings.describe(),
            ConnectorSettings::OneBot12(settings) => settings.describe(),
            ConnectorSettings::WecomWebhook(settings) => settings.describe(),
        }
    }

    /// The pacing and length limits an account of `platform` with these settings starts
    /// from, before `[limits."<id>"]` overrides.
    pub fn egress_defaults(&self, platform: Platform) -> EgressDefaults {
        match self {
            ConnectorSettings::Api(settings) => settings.egress_defaults(),
            ConnectorSettings::DingtalkStream(settings) => settings.egress_defaults(),
            ConnectorSettings::DingtalkWebhook(settings) => settings.egress_defaults(),
            ConnectorSettings::OneBot11(settings) => settings.egress_defaults(platform),
            ConnectorSettings::OneBot12(settings) => settings.egress_defaults(platform),
            ConnectorSettings::WecomWebhook(settings) => settings.egress_defaults(),
        }
    }

    /// The account's connector, ready to run with its context until shutdown; `shared` holds
    /// what the daemon shares with the connectors that need it.
    pub fn run(
        self,
        ctx: ConnectorContext,
        shared: SharedResources,
    ) -> BoxFuture<'static, Result<(), ConnectorError>> {
        match self {
            ConnectorSettings::Api(settings) => {
                Box::pin(ApiConnector::new(settings, shared.feed_log).run(ctx))
            }
            ConnectorSettings::DingtalkStream(settings) => {
                Box::pin(StreamConnector::new(settings).run(ctx))
            }
            ConnectorSettings::DingtalkWebhook(settings) => {
                Box::pin(WebhookConnector::new(settings).run(ctx))
            }
            ConnectorSettings::OneBot11(settings) => {
                Box::pin(OneBot11Connector::new(settings, shared.listeners).run(ctx))
            }
            ConnectorSettings::OneBot12(settings) => {
                Box::pin(OneBot12Connector::new(settings, shared.listeners).run(ctx))
            }
            ConnectorSettings::WecomWebhook(settings) => {
                Box::pin(WecomConnector::new(settings).run(ctx))
            }
        }
    }
}

/// What the daemon shares with the connectors that need it, handed to their constructors
/// (the [`ConnectorContext`] carries only what every connector gets).
#[derive(Clone, Default)]
pub struct SharedResources {
    /// Where `api` accounts keep their feeds across restarts (the relay's state store);
    /// `None` keeps them in memory only.
    pub feed_log: Option<Arc<dyn FeedLog>>,
    /// The daemon's reverse WebSocket listeners: OneBot accounts on one address share one.
    pub listeners: SharedListeners,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_platform_is_offered_its_default_first() {
        for platform in Platform::ALL {
            let offered = Protocol::offered(platform);
            assert_eq!(offered[0], Protocol::default_for(platform));
            for protocol in &offered {
                assert!(protocol.spec().platforms.contains(&platform), "{protocol}");
            }
        }
        assert_eq!(
            Protocol::offered(Platform::Wechat),
            [Protocol::OneBot12, Protocol::OneBot11]
        );
    }

    #[test]
    fn names_are_unique_per_platform() {
        for platform in Platform::ALL {
            let offered = Protocol::offered(platform);
            for (i, a) in offered.iter().enumerate() {
                for b in &offered[i + 1..] {
                    assert_ne!(a.name(), b.name(), "{platform}");
                }
            }
        }
    }

    #[test]
    fn every_key_a_protocol_reads_is_an_account_key() {
        for protocol in Protocol::ALL.iter().copied() {
            for key in protocol.spec().keys {
                assert!(AccountTable::KEYS.contains(key), "{protocol}: {key}");
            }
            if let Some(key) = protocol.spec().implied_by {
                assert!(protocol.spec().keys.contains(&key), "{protocol}: {key}");
            }
        }
    }
}
