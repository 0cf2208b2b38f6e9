//! Checking a decoded config. Every check runs and adds to one list of problems, each naming
//! the item, the key in backticks and the bad value (secrets shown as `<redacted>`), so an
//! operator fixes everything in one pass.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use qunbridge_connectors::api::{ApiSettings, DEFAULT_BUFFER};
use qunbridge_connectors::dingtalk::{StreamSettings, WebhookSettings, DEFAULT_API_BASE};
use qunbridge_connectors::onebot11::{OneBot11Settings, Transport as OneBot11Transport};
use qunbridge_connectors::onebot12::OneBot12Settings;
use qunbridge_connectors::wecom::WecomSettings;
use qunbridge_connectors::Platform;

use super::load::Env;
use super::policy::{self, FilterConfig};
use super::raw::{RawAccount, RawConfig, RawLink};
use super::{
    Account, AdminConfig, BrokerConfig, BrokerMode, Config, ConnectorSettings, ExternalBroker,
    GroupRef, Link, Role, Secret, StoreConfig, DEFAULT_ADMIN_LISTEN, DEFAULT_EMBEDDED_LISTEN,
    DEFAULT_FORMAT, DEFAULT_INSTANCE, DEFAULT_TOPIC_PREFIX,
};

/// Placeholders a sender template may use.
pub const PLACEHOLDERS: [&str; 6] = ["platform", "name", "id", "group", "account", "link"];

/// Largest `buffer` of an `api` account, so one setting cannot exhaust memory.
const MAX_API_BUFFER: u64 = 100_000;

/// Checks everything; returns the config when it could be built (problems may still be
/// non-empty, in which case the caller refuses it).
pub fn validate(raw: RawConfig, env: &dyn Env, problems: &mut Vec<String>) -> Option<Config> {
    let state_dir = state_dir(raw.state_dir.as_deref(), env, problems);
    let broker = broker(&raw, problems);
    let store = store(&raw, problems);
    let role = roles(raw.roles.as_deref(), problems);
    let instance = raw
        .instance
        .clone()
        .unwrap_or_else(|| DEFAULT_INSTANCE.to_owned());
    if instance.is_empty()
        || !instance
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
    {
        problems.push(format!(
            "`instance` = {instance:?}: must be a-z, 0-9, _ and - (it names MQTT clients and topics)"
        ));
    }
    let admin_listen = socket_addr(
        "admin",
        "listen",
        raw.admin.listen.as_deref().unwrap_or(DEFAULT_ADMIN_LISTEN),
        problems,
    );

    let mut accounts = BTreeMap::new();
    let mut send_only = HashSet::new();
    for (id, account) in &raw.accounts {
        if let Some((built, is_send_only)) = check_account(id, account, problems) {
            if is_send_only {
                send_only.insert(id.clone());
            }
            accounts.insert(id.clone(), built);
        } else if account_is_send_only(account) {
            send_only.insert(id.clone());
        }
    }
    let known: HashSet<&str> = raw.accounts.keys().map(String::as_str).collect();

    let mut links = Vec::new();
    let mut names = HashSet::new();
    for (index, link) in raw.links.iter().enumerate() {
        if let Some(built) = check_link(index, link, &known, &send_only, problems) {
            if !names.insert(built.name.clone()) {
                problems.push(format!(
                    "link \"{}\": `name` = {:?}: another link has the same name",
                    built.name, built.name
                ));
            }
            links.push(built);
        }
    }

    check_listeners(&broker, admin_listen, &raw, problems);

    for (name, limits) in &raw.limits {
        let item = format!("limits {name:?}");
        match accounts.get_mut(name) {
            Some(account) => policy::apply_limits(&item, &mut account.egress, limits, problems),
            None if known.contains(name.as_str()) => {}
            None => problems.push(format!("{item}: no account is called `{name}`")),
        }
    }
    let mut filters = FilterConfig::default();
    for (name, raw_filter) in &raw.filters {
        let item = format!("filters {name:?}");
        if let Some(platform) = Platform::parse(name) {
            let rules =
                policy::filter_rules(&item, raw_filter, &format!("platform {platform}"), problems);
            filters.platforms.insert(platform, rules);
        } else if known.contains(name.as_str()) {
            let rules =
                policy::filter_rules(&item, raw_filter, &format!("account {name:?}"), problems);
            filters.accounts.insert(name.clone(), rules);
        } else {
            problems.push(format!(
                "{item}: `{name}` is neither a platform (qq, wechat, dingtalk, wecom, api) nor an account"
            ));
        }
    }

    Some(Config {
        state_dir: state_dir?,
        broker: broker?,
        admin: AdminConfig {
            listen: admin_listen?,
        },
        store: store?,
        role: role?,
        instance,
        accounts,
        links,
        filters,
    })
}

/// `state_dir`: the key, else `$STATE_DIRECTORY` (systemd), else `./qunbridge-state`.
fn state_dir(value: Option<&str>, env: &dyn Env, problems: &mut Vec<String>) -> Option<PathBuf> {
    match value {
        Some("") => {
            problems.push("`state_dir` = \"\": must not be empty".into());
            None
        }
        Some(dir) => Some(PathBuf::from(dir)),
        None => Some(
            env.var("STATE_DIRECTORY")
                // systemd may pass several directories separated by colons; the first is ours.
                .and_then(|dirs| dirs.split(':').next().map(str::to_owned))
                .filter(|d| !d.is_empty())
                .map_or_else(|| PathBuf::from("./qunbridge-state"), PathBuf::from),
        ),
    }
}

/// Parses `IP:port`, naming the item and key when it is not one.
fn socket_addr(
    item: &str,
    key: &str,
    value: &str,
    problems: &mut Vec<String>,
) -> Option<SocketAddr> {
    match value.parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            problems.push(format!(
                "{item}: `{key}` = {value:?}: not an IP:port address such as 127.0.0.1:8088"
            ));
            None
        }
    }
}

/// `[broker]`.
fn broker(raw: &RawConfig, problems: &mut Vec<String>) -> Option<BrokerConfig> {
    let prefix = raw
        .broker
        .topic_prefix
        .clone()
        .unwrap_or_else(|| DEFAULT_TOPIC_PREFIX.to_owned());
    let prefix_ok = !prefix.is_empty()
        && !prefix.starts_with('/')
        && !prefix.ends_with('/')
        && !prefix.contains(['+', '#', '\0'])
        && !prefix.contains("//");
    if !prefix_ok {
        problems.push(format!(
            "broker: `topic_prefix` = {prefix:?}: must be non-empty topic levels without wildcards or leading/trailing `/`"
        ));
    }
    let mode = match &raw.broker.url {
        None => {
            if raw.broker.username.is_some() || raw.broker.password.is_some() {
                problems.push(
                    "broker: `username`/`password` are set but `url` is not: the embedded broker takes no credentials"
                        .into(),
                );
            }
            let listen = raw
                .broker
                .embedded_listen
                .as_deref()
                .unwrap_or(DEFAULT_EMBEDDED_LISTEN);
            socket_addr("broker", "embedded_listen", listen, problems)
                .map(|listen| BrokerMode::Embedded { listen })
        }
        Some(url) => external_broker(url, raw, problems).map(BrokerMode::External),
    };
    Some(BrokerConfig {
        mode: mode?,
        topic_prefix: prefix,
    })
    .filter(|_| prefix_ok)
}

/// `roles`: `["connectors", "core"]` (or `["all"]`, the default), `["connectors"]` or
/// `["core"]`.
fn roles(names: Option<&[String]>, problems: &mut Vec<String>) -> Option<Role> {
    let Some(names) = names else {
        return Some(Role::All);
    };
    let mut connectors = false;
    let mut core = false;
    for name in names {
        match Role::parse(name) {
            Some(Role::All) => (connectors, core) = (true, true),
            Some(Role::Connectors) => connectors = true,
            Some(Role::Core) => core = true,
            None => {
                problems.push(format!(
                    "`roles` = {names:?}: `{name}` is not one of all, connectors, core"
                ));
                return None;
            }
        }
    }
    match (connectors, core) {
        (true, true) => Some(Role::All),
        (true, false) => Some(Role::Connectors),
        (false, true) => Some(Role::Core),
        (false, false) => {
            problems.push("`roles` = []: name at least one of connectors, core".into());
            None
        }
    }
}

/// `[store]`: embedded unless `redis` names a server.
fn store(raw: &RawConfig, problems: &mut Vec<String>) -> Option<StoreConfig> {
    let Some(url) = &raw.store.redis else {
        if raw.store.redis_prefix.is_some() {
            problems.push("store: `redis_prefix` is set but `redis` is not".into());
            return None;
        }
        return Some(StoreConfig::Embedded);
    };
    if url.contains("${") {
        // The interpolation problem is reported already.
        return None;
    }
    match url::Url::parse(url) {
        Ok(parsed) if parsed.scheme() == "redis" && parsed.host_str().is_some() => {}
        Ok(parsed) => {
            problems.push(format!(
                "store: `redis` = {:?}: must be redis://[:password@]host[:port][/db] (scheme `{}`)",
                redact_url(url),
                parsed.scheme()
            ));
            return None;
        }
        Err(error) => {
            problems.push(format!("store: `redis` = {:?}: {error}", redact_url(url)));
            return None;
        }
    }
    let prefix = raw
        .store
        .redis_prefix
        .clone()
        .unwrap_or_else(|| crate::store::redis::DEFAULT_PREFIX.to_owned());
    Some(StoreConfig::Redis {
        url: Secret::new(url.clone()),
        prefix,
    })
}

/// `broker.url` = `mqtt://[user[:pass]@]host[:port]` or `mqtts://…`.
fn external_broker(
    url: &str,
    raw: &RawConfig,
    problems: &mut Vec<String>,
) -> Option<ExternalBroker> {
    let parsed = match url::Url::parse(url) {
        Ok(parsed) => parsed,
        Err(error) => {
            problems.push(format!("broker: `url` = {:?}: {error}", redact_url(url)));
            return None;
        }
    };
    let tls = match parsed.scheme() {
        "mqtt" | "tcp" => false,
        "mqtts" | "ssl" => true,
        other => {
            problems.push(format!(
                "broker: `url` = {:?}: scheme `{other}` is not mqtt:// or mqtts://",
                redact_url(url)
            ));
            return None;
        }
    };
    let Some(host) = parsed.host_str().filter(|h| !h.is_empty()) else {
        problems.push(format!("broker: `url` = {:?}: no host", redact_url(url)));
        return None;
    };
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let url_user = Some(decode(parsed.username())).filter(|u| !u.is_empty());
    let url_password = parsed.password().map(decode);
    Some(ExternalBroker {
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
        port: parsed.port().unwrap_or(if tls { 8883 } else { 1883 }),
        tls,
        username: raw.broker.username.clone().or(url_user),
        password: raw
            .broker
            .password
            .clone()
            .or(url_password)
            .map(Secret::new),
    })
}

/// A URL with its password replaced, for messages.
fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("<redacted>"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// True for accounts that can only send (robot webhooks).
fn account_is_send_only(account: &RawAccount) -> bool {
    match account.platform.as_deref() {
        Some("wecom") => true,
        Some("dingtalk") => {
            account.webhook.is_some() || account.protocol.as_deref() == Some("webhook")
        }
        _ => false,
    }
}

/// The protocols each platform can be reached by; the first is the default.
fn protocols(platform: Platform) -> &'static [&'static str] {
    match platform {
        Platform::Qq => &["onebot11", "onebot12"],
        Platform::Wechat => &["onebot12", "onebot11"],
        Platform::Dingtalk => &["stream", "webhook"],
        Platform::Wecom => &["webhook"],
        Platform::Api => &["api"],
    }
}

/// The keys an account table may have for a protocol (besides `platform` and `protocol`).
fn allowed_keys(platform: Platform, protocol: &str) -> &'static [&'static str] {
    match protocol {
        "onebot11" => &["url", "listen", "access_token", "self_id"],
        "onebot12" => &["url", "listen", "access_token", "self_id", "send_images"],
        "stream" => &["client_id", "client_secret", "robot_code", "api_base"],
        "webhook" if platform == Platform::Wecom => &["webhook", "markdown"],
        "webhook" => &["webhook", "secret", "keyword"],
        "api" => &["listen", "token", "buffer"],
        _ => &[],
    }
}

/// Which keys of an account table are set.
fn set_keys(account: &RawAccount) -> Vec<&'static str> {
    let mut keys = Vec::new();
    let mut note = |set: bool, key: &'static str| {
        if set {
            keys.push(key);
        }
    };
    note(account.url.is_some(), "url");
    note(account.listen.is_some(), "listen");
    note(account.access_token.is_some(), "access_token");
    note(account.client_id.is_some(), "client_id");
    note(account.client_secret.is_some(), "client_secret");
    note(account.robot_code.is_some(), "robot_code");
    note(account.api_base.is_some(), "api_base");
    note(account.webhook.is_some(), "webhook");
    note(account.secret.is_some(), "secret");
    note(account.keyword.is_some(), "keyword");
    note(account.token.is_some(), "token");
    note(account.buffer.is_some(), "buffer");
    note(account.self_id.is_some(), "self_id");
    note(account.send_images.is_some(), "send_images");
    note(account.markdown.is_some(), "markdown");
    keys
}

/// Checks one account; returns it and whether it is send-only.
fn check_account(
    id: &str,
    account: &RawAccount,
    problems: &mut Vec<String>,
) -> Option<(Account, bool)> {
    let item = format!("account \"{id}\"");
    let before = problems.len();
    let id_ok = !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !id_ok {
        problems.push(format!(
            "{item}: the account id {id:?} must use only a-z, 0-9, `_` and `-`"
        ));
    }
    let Some(platform_name) = account.platform.as_deref() else {
        problems.push(format!(
            "{item}: `platform` is missing (one of qq, wechat, dingtalk, wecom, api)"
        ));
        return None;
    };
    let Some(platform) = Platform::parse(platform_name) else {
        problems.push(format!(
            "{item}: `platform` = {platform_name:?}: unknown (one of qq, wechat, dingtalk, wecom, api)"
        ));
        return None;
    };
    let offered = protocols(platform);
    let protocol = match account.protocol.as_deref() {
        Some(protocol) if offered.contains(&protocol) => protocol,
        Some(protocol) => {
            problems.push(format!(
                "{item}: `protocol` = {protocol:?}: platform `{platform}` takes one of {}",
                offered.join(", ")
            ));
            return None;
        }
        None if platform == Platform::Dingtalk && account.webhook.is_some() => "webhook",
        None => offered[0],
    };
    let allowed = allowed_keys(platform, protocol);
    for key in set_keys(account) {
        if !allowed.contains(&key) {
            problems.push(format!(
                "{item}: `{key}` is not used by platform `{platform}` with protocol `{protocol}` (it takes {})",
                allowed.join(", ")
            ));
        }
    }
    let send_only = protocol == "webhook";
    let connector = match protocol {
        "api" => check_api(&item, account, problems).map(ConnectorSettings::Api),
        "onebot11" => check_onebot11(&item, account, problems).map(ConnectorSettings::OneBot11),
        "onebot12" => check_onebot12(&item, account, problems).map(ConnectorSettings::OneBot12),
        "webhook" if platform == Platform::Wecom => {
            check_wecom_webhook(&item, account, problems).map(ConnectorSettings::WecomWebhook)
        }
        "stream" => {
            check_dingtalk_stream(&item, account, problems).map(ConnectorSettings::DingtalkStream)
        }
        "webhook" if platform == Platform::Dingtalk => {
            check_dingtalk_webhook(&item, account, problems).map(ConnectorSettings::DingtalkWebhook)
        }
        other => {
            check_platform_keys(&item, other, account, problems);
            problems.push(format!(
                "{item}: `platform` = {platform_name:?} (protocol `{other}`): this build has no connector for it yet; only `api` accounts run"
            ));
            None
        }
    };
    if problems.len() > before {
        return None;
    }
    Some((
        Account {
            id: id.to_owned(),
            platform,
            connector: connector?,
            egress: {
                let mut egress = policy::default_policy(platform, protocol);
                // WeCom markdown messages may be twice as long as text ones.
                if platform == Platform::Wecom && account.markdown == Some(true) {
                    if let Some(length) = egress.length.as_mut() {
                        length.max = 4096;
                    }
                }
                egress
            },
        },
        send_only,
    ))
}

/// A OneBot v11 account (QQ, or WeChat through a v11 implementation).
fn check_onebot11(
    item: &str,
    account: &RawAccount,
    problems: &mut Vec<String>,
) -> Option<OneBot11Settings> {
    let before = problems.len();
    check_platform_keys(item, "onebot11", account, problems);
    if problems.len() > before {
        return None;
    }
    let transport = match (&account.url, &account.listen) {
        (Some(url), None) => OneBot11Transport::Forward { url: url.clone() },
        (None, Some(listen)) => OneBot11Transport::Reverse {
            listen: socket_addr(item, "listen", listen, problems)?,
        },
        _ => return None,
    };
    if let Some(id) = &account.self_id {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_graphic()) {
            problems.push(format!(
                "{item}: `self_id` = {id:?}: must be the bot's user id"
            ));
            return None;
        }
    }
    let access_token = match account.access_token.as_deref() {
        Some("") | None => None,
        Some(token) => Some(token.to_owned()),
    };
    Some(OneBot11Settings {
        transport,
        access_token: access_token.map(Secret::new),
        self_id: account.self_id.clone(),
    })
}

/// A OneBot v12 account (WeChat through ComWeChatClient and others, or QQ through a v12
/// implementation): the same transport keys as v11, plus `send_images`.
fn check_onebot12(
    item: &str,
    account: &RawAccount,
    problems: &mut Vec<String>,
) -> Option<OneBot12Settings> {
    let common = check_onebot11(item, account, problems)?;
    Some(OneBot12Settings {
        transport: common.transport,
        access_token: common.access_token,
        self_id: common.self_id,
        send_images: account.send_images.unwrap_or(false),
    })
}

/// A WeCom group robot account (send-only). The webhook's `key` query is the robot's only
/// credential, so messages show the URL without it.
fn check_wecom_webhook(
    item: &str,
    account: &RawAccount,
    problems: &mut Vec<String>,
) -> Option<WecomSettings> {
    let Some(hook) = account.webhook.as_deref() else {
        problems.push(format!(
            "{item}: `webhook` is missing (https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=…)"
        ));
        return None;
    };
    let shown = match hook.split_once('?') {
        Some((base, _)) => format!("{base}?<redacted>"),
        None => hook.to_owned(),
    };
    match url::Url::parse(hook) {
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
        markdown: account.markdown.unwrap_or(false),
    })
}

/// A DingTalk Stream account (enterprise app robot).
fn check_dingtalk_stream(
    item: &str,
    account: &RawAccount,
    problems: &mut Vec<String>,
) -> Option<StreamSettings> {
    let before = problems.len();
    check_platform_keys(item, "stream", account, problems);
    if let Some(code) = account.robot_code.as_deref() {
        if code.trim().is_empty() {
            problems.push(format!(
                "{item}: `robot_code` = {code:?}: is empty; remove the key to use `client_id`"
            ));
        }
    }
    if problems.len() > before {
        return None;
    }
    let client_id = account.client_id.clone()?;
    Some(StreamSettings {
        robot_code: account
            .robot_code
            .clone()
            .unwrap_or_else(|| client_id.clone()),
        client_secret: Secret::new(account.client_secret.clone()?),
        api_base: account
            .api_base
            .as_deref()
            .unwrap_or(DEFAULT_API_BASE)
            .trim_end_matches('/')
            .to_owned(),
        client_id,
    })
}

/// A DingTalk custom robot webhook account (send-only). The webhook's query holds the
/// robot's access token, so messages show the URL without it.
fn check_dingtalk_webhook(
    item: &str,
    account: &RawAccount,
    problems: &mut Vec<String>,
) -> Option<WebhookSettings> {
    let before = problems.len();
    let Some(hook) = account.webhook.as_deref() else {
        problems.push(format!("{item}: `webhook` is missing"));
        return None;
    };
    let shown = match hook.split_once('?') {
        Some((base, _)) => format!("{base}?<redacted>"),
        None => hook.to_owned(),
    };
    match url::Url::parse(hook) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host_str().is_some() => {}
        Ok(_) => problems.push(format!(
            "{item}: `webhook` = {shown:?}: must be a http:// or https:// URL with a host"
        )),
        Err(error) => problems.push(format!("{item}: `webhook` = {shown:?}: {error}")),
    }
    if account
        .secret
        .as_deref()
        .is_some_and(|s| s.trim().is_empty())
    {
        problems.push(format!(
            "{item}: `secret` = <redacted>: is empty; remove the key for a robot without signing"
        ));
    }
    if let Some(keyword) = account.keyword.as_deref() {
        if keyword.trim().is_empty() {
            problems.push(format!(
                "{item}: `keyword` = {keyword:?}: is empty; remove the key for a robot without keywords"
            ));
        }
    }
    (problems.len() == before).then(|| WebhookSettings {
        webhook: Secret::new(hook),
        secret: account.secret.clone().map(Secret::new),
        keyword: account.keyword.clone(),
    })
}

/// Required and well-formed keys of the platform protocols whose connectors come later, so
/// `qunbridge check` already catches their mistakes.
fn check_platform_keys(
    item: &str,
    protocol: &str,
    account: &RawAccount,
    problems: &mut Vec<String>,
) {
    match protocol {
        "onebot11" | "onebot12" => match (&account.url, &account.listen) {
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
        },
        "stream" => {
            for (key, value) in [("client_id", &account.client_id), ("client_secret", &account.client_secret)] {
                if value.as_deref().is_none_or(str::is_empty) {
                    problems.push(format!("{item}: `{key}` is missing"));
                }
            }
            if let Some(base) = &account.api_base {
                check_url(item, "api_base", base, &["http", "https"], problems);
            }
        }
        "webhook" => match &account.webhook {
            Some(hook) => check_url(item, "webhook", hook, &["http", "https"], problems),
            None => problems.push(format!("{item}: `webhook` is missing")),
        },
        _ => {}
    }
}

/// A URL with one of the given schemes.
fn check_url(item: &str, key: &str, value: &str, schemes: &[&str], problems: &mut Vec<String>) {
    let shown = redact_url(value);
    match url::Url::parse(value) {
        Ok(url) if schemes.contains(&url.scheme()) && url.host_str().is_some() => {}
        Ok(_) => problems.push(format!(
            "{item}: `{key}` = {shown:?}: must be a {} URL with a host",
            schemes
                .iter()
                .map(|s| format!("{s}://"))
                .collect::<Vec<_>>()
                .join(" or ")
        )),
        Err(error) => problems.push(format!("{item}: `{key}` = {shown:?}: {error}")),
    }
}

/// An `api` account.
fn check_api(item: &str, account: &RawAccount, problems: &mut Vec<String>) -> Option<ApiSettings> {
    let Some(listen) = &account.listen else {
        problems.push(format!(
            "{item}: `listen` is missing (an address such as 127.0.0.1:8088)"
        ));
        return None;
    };
    let listen = socket_addr(item, "listen", listen, problems)?;
    let buffer = match account.buffer {
        None => DEFAULT_BUFFER,
        Some(n) if (1..=MAX_API_BUFFER).contains(&n) => n as usize,
        Some(n) => {
            problems.push(format!(
                "{item}: `buffer` = {n}: must be 1 to {MAX_API_BUFFER}"
            ));
            return None;
        }
    };
    let token = match account.token.as_deref() {
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

/// Parses `account:group`.
fn group_ref(item: &str, key: &str, value: &str, problems: &mut Vec<String>) -> Option<GroupRef> {
    match value.split_once(':') {
        Some((account, group)) if !account.is_empty() && !group.is_empty() => Some(GroupRef {
            account: account.to_owned(),
            group: group.to_owned(),
        }),
        _ => {
            problems.push(format!(
                "{item}: `{key}` has {value:?}: not of the form `account:group`"
            ));
            None
        }
    }
}

/// Checks a template's placeholders.
fn check_format(item: &str, format: &str, problems: &mut Vec<String>) {
    let mut rest = format;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            problems.push(format!("{item}: `format` = {format:?}: unclosed `{{`"));
            return;
        };
        let name = &after[..close];
        if !PLACEHOLDERS.contains(&name) {
            problems.push(format!(
                "{item}: `format` = {format:?}: unknown placeholder `{{{name}}}` (known: {})",
                PLACEHOLDERS.map(|p| format!("{{{p}}}")).join(", ")
            ));
        }
        rest = &after[close + 1..];
    }
}

/// Checks one link.
fn check_link(
    index: usize,
    link: &RawLink,
    known: &HashSet<&str>,
    send_only: &HashSet<String>,
    problems: &mut Vec<String>,
) -> Option<Link> {
    let name = link
        .name
        .clone()
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| format!("link-{}", index + 1));
    let item = format!("link \"{name}\"");
    let before = problems.len();
    let format = link
        .format
        .clone()
        .unwrap_or_else(|| DEFAULT_FORMAT.to_owned());
    check_format(&item, &format, problems);

    let mut seen = HashSet::new();
    let mut members = |key: &str, values: &[String], problems: &mut Vec<String>| {
        let mut refs = Vec::new();
        for value in values {
            let Some(group) = group_ref(&item, key, value, problems) else {
                continue;
            };
            if !known.contains(group.account.as_str()) {
                problems.push(format!(
                    "{item}: `{key}` has {value:?}: unknown account `{}`",
                    group.account
                ));
                continue;
            }
            if key == "groups" && send_only.contains(&group.account) {
                problems.push(format!(
                    "{item}: `groups` has {value:?}: account `{}` is send-only (a webhook); list it in `to`",
                    group.account
                ));
                continue;
            }
            if !seen.insert(group.clone()) {
                problems.push(format!("{item}: `{key}` has {value:?} twice"));
                continue;
            }
            refs.push(group);
        }
        refs
    };
    let groups = members("groups", &link.groups, problems);
    let to = members("to", &link.to, problems);
    if link.groups.is_empty() || link.groups.len() + link.to.len() < 2 {
        problems.push(format!(
            "{item}: `groups` = {:?}: a link needs at least one group in `groups` and two members in `groups` and `to` together",
            link.groups
        ));
    }
    let filters = link
        .filters
        .as_ref()
        .map(|raw| policy::filter_rules(&item, raw, &format!("link {name:?}"), problems))
        .unwrap_or_default();
    (problems.len() == before).then_some(Link {
        name,
        groups,
        to,
        format,
        filters,
    })
}

/// No two listeners on one address (an unspecified IP clashes with every IP on that port).
fn check_listeners(
    broker: &Option<BrokerConfig>,
    admin: Option<SocketAddr>,
    raw: &RawConfig,
    problems: &mut Vec<String>,
) {
    let mut claims: Vec<(String, SocketAddr)> = Vec::new();
    if let Some(BrokerConfig {
        mode: BrokerMode::Embedded { listen },
        ..
    }) = broker
    {
        claims.push(("`broker.embedded_listen`".into(), *listen));
    }
    if let Some(admin) = admin {
        claims.push(("`admin.listen`".into(), admin));
    }
    // OneBot reverse listeners may be shared by accounts told apart by `self_id`.
    let mut shared: BTreeMap<SocketAddr, Vec<(&String, Option<&String>)>> = BTreeMap::new();
    for (id, account) in &raw.accounts {
        if let Some(addr) = account.listen.as_deref().and_then(|l| l.parse().ok()) {
            // OneBot v12 implementations send no `X-Self-ID`: only v11 accounts can share.
            let onebot = match account.platform.as_deref() {
                Some("qq") => account.protocol.as_deref().unwrap_or("onebot11") == "onebot11",
                Some("wechat") => account.protocol.as_deref() == Some("onebot11"),
                _ => false,
            };
            match shared.get_mut(&addr) {
                Some(sharing) if onebot => sharing.push((id, account.self_id.as_ref())),
                _ => {
                    if onebot {
                        shared.insert(addr, vec![(id, account.self_id.as_ref())]);
                    }
                    claims.push((format!("`accounts.{id}.listen`"), addr));
                }
            }
        }
    }
    for (addr, sharing) in &shared {
        if sharing.len() < 2 {
            continue;
        }
        let mut ids = HashSet::new();
        for (account, self_id) in sharing {
            match self_id {
                None => problems.push(format!(
                    "account \"{account}\": `self_id` is missing: accounts sharing the reverse WebSocket `{addr}` are told apart by it"
                )),
                Some(self_id) if !ids.insert(*self_id) => problems.push(format!(
                    "account \"{account}\": `self_id` = {self_id:?}: another account on `{addr}` has the same"
                )),
                Some(_) => {}
            }
        }
    }
    let mut reported = HashMap::new();
    for (i, (first, a)) in claims.iter().enumerate() {
        for (second, b) in &claims[i + 1..] {
            let clash = a.port() == b.port()
                && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified());
            if clash
                && reported
                    .insert((first.clone(), second.clone()), ())
                    .is_none()
            {
                problems.push(format!(
                    "listen address `{b}` is claimed by both {first} (`{a}`) and {second}"
                ));
            }
        }
    }
}
