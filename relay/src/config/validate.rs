//! Checking a decoded config. Every check runs and adds to one list of problems, each naming
//! the item, the key in backticks and the bad value (secrets shown as `<redacted>`), so an
//! operator fixes everything in one pass.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use qunbridge_connectors::protocol::{
    check_account_table, redact_url, socket_addr, AccountTable, Protocol,
};
use qunbridge_connectors::Platform;

use super::load::Env;
use super::policy::{self, FilterConfig};
use super::raw::{RawConfig, RawLink};
use super::{
    Account, AdminConfig, BrokerConfig, BrokerMode, Config, ExternalBroker, GroupRef, Link, Role,
    Secret, StoreConfig, DEFAULT_ADMIN_LISTEN, DEFAULT_EMBEDDED_LISTEN, DEFAULT_FORMAT,
    DEFAULT_INSTANCE, DEFAULT_TOPIC_PREFIX,
};

/// Placeholders a sender template may use.
pub const PLACEHOLDERS: [&str; 6] = ["platform", "name", "id", "group", "account", "link"];

/// Checks everything; returns the config when it could be built (problems may still be
/// non-empty, in which case the caller refuses it). `dir`: the config file's directory,
/// where relative word-list files are looked up.
pub fn validate(
    raw: RawConfig,
    env: &dyn Env,
    dir: &Path,
    problems: &mut Vec<String>,
) -> Option<Config> {
    let state_dir = state_dir(raw.state_dir.as_deref(), env, problems);
    let broker = broker(&raw, problems);
    let store = store(&raw, problems);
    let media = super::media::media(&raw.media, problems);
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

    let admin_token = check_admin_token(raw.admin.token.as_deref(), problems);

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
    // Before the links and filters: their `words` rules name the lists.
    let mut moderation = super::moderation::moderation(
        &raw.moderation,
        &known.iter().copied().collect(),
        dir,
        problems,
    );

    let mut links = Vec::new();
    let mut names = HashSet::new();
    for (index, link) in raw.links.iter().enumerate() {
        if let Some(built) =
            check_link(index, link, &known, &send_only, &moderation.lists, problems)
        {
            if !names.insert(built.name.clone()) {
                problems.push(format!(
                    "link \"{}\": `name` = {:?}: another link has the same name",
                    built.name, built.name
                ));
            }
            links.push(built);
        }
    }

    // After the links: the admins' group must be in none of them.
    moderation.notify = super::moderation::notify(
        &raw.moderation,
        &known.iter().copied().collect(),
        |id| accounts.get(id).map(|account: &Account| account.platform),
        &raw.links,
        problems,
    );
    super::moderation::notify_flags_need_a_target(&raw, problems);

    check_listeners(&broker, admin_listen, &raw, problems);
    let stats = super::stats::stats(&raw.stats, &raw.links, &links, problems);
    if moderation.suspect_delay.is_some() && !stats.enabled {
        problems.push(
            "moderation.wave: `suspect_delay` is set but `stats.enabled` = false: who is new in a group is known from group health's member digests and join events; enable stats or remove suspect_delay"
                .to_owned(),
        );
    }

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
        let on_flood = raw_filter.on_flood.as_deref().and_then(|value| {
            use crate::policy::moderation::ModerationAction;
            match ModerationAction::parse(value) {
                Some(action) => Some(action),
                None => {
                    problems.push(format!(
                        "{item}: `on_flood` = {value:?}: one of \"drop\", \"hold\""
                    ));
                    None
                }
            }
        });
        if let Some(platform) = Platform::parse(name) {
            let rules = policy::filter_rules(
                &item,
                raw_filter,
                &format!("platform {platform}"),
                &moderation.lists,
                problems,
            );
            filters.platforms.insert(platform, rules);
            if let Some(action) = on_flood {
                filters.on_flood_platforms.insert(platform, action);
            }
        } else if known.contains(name.as_str()) {
            let rules = policy::filter_rules(
                &item,
                raw_filter,
                &format!("account {name:?}"),
                &moderation.lists,
                problems,
            );
            filters.accounts.insert(name.clone(), rules);
            if let Some(action) = on_flood {
                filters.on_flood_accounts.insert(name.clone(), action);
            }
        } else {
            problems.push(format!(
                "{item}: `{name}` is neither a platform ({}) nor an account",
                platform_names()
            ));
        }
    }

    Some(Config {
        state_dir: state_dir?,
        broker: broker?,
        admin: AdminConfig {
            listen: admin_listen?,
            token: admin_token?,
        },
        store: store?,
        media,
        stats,
        moderation,
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

/// True for accounts that can only send (robot webhooks), judged from the table alone so
/// links are checked even when the account itself has problems: the protocol it names, or
/// the one its keys imply, is send-only.
fn account_is_send_only(account: &AccountTable) -> bool {
    let Some(platform) = account.platform.as_deref().and_then(Platform::parse) else {
        return false;
    };
    let named = account
        .protocol
        .as_deref()
        .and_then(|name| Protocol::named(platform, name));
    let implied = Protocol::implied(platform, account);
    named.is_some_and(|p| p.spec().send_only) || implied.spec().send_only
}

/// The protocol an account table declares (or gets by default), when it is a valid one.
fn declared_protocol(account: &AccountTable) -> Option<Protocol> {
    let platform = Platform::parse(account.platform.as_deref()?)?;
    match account.protocol.as_deref() {
        Some(name) => Protocol::named(platform, name),
        None => Some(Protocol::implied(platform, account)),
    }
}

/// The platforms as a config lists them, for messages.
fn platform_names() -> String {
    Platform::ALL.map(Platform::as_str).join(", ")
}

/// Checks one account; returns it and whether it is send-only. What the table holds is
/// checked by its protocol (`qunbridge_connectors::protocol`).
fn check_account(
    id: &str,
    account: &AccountTable,
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
            "{item}: `platform` is missing (one of {})",
            platform_names()
        ));
        return None;
    };
    let Some(platform) = Platform::parse(platform_name) else {
        problems.push(format!(
            "{item}: `platform` = {platform_name:?}: unknown (one of {})",
            platform_names()
        ));
        return None;
    };
    let connector = check_account_table(&item, platform, account, problems);
    let media = account
        .media
        .as_deref()
        .and_then(|value| super::media::account_mode(id, value, problems));
    if problems.len() > before {
        return None;
    }
    let connector = connector?;
    let send_only = connector.protocol().spec().send_only;
    let egress = policy::default_policy(connector.egress_defaults(platform));
    Some((
        Account {
            id: id.to_owned(),
            platform,
            connector,
            egress,
            media,
        },
        send_only,
    ))
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
    lists: &super::moderation::WordLists,
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
        .map(|raw| policy::filter_rules(&item, raw, &format!("link {name:?}"), lists, problems))
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
            let shares =
                declared_protocol(account).is_some_and(|p| p.spec().shares_reverse_listener);
            match shared.get_mut(&addr) {
                Some(sharing) if shares => sharing.push((id, account.self_id.as_ref())),
                _ => {
                    if shares {
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

/// Fewest characters `admin.token` may have.
pub const ADMIN_TOKEN_MIN_CHARS: usize = 16;

/// `admin.token`: at least [`ADMIN_TOKEN_MIN_CHARS`] visible ASCII characters (it travels in
/// an `Authorization` header); the value is never shown. `Some(None)` when not set, `None`
/// after a problem.
fn check_admin_token(token: Option<&str>, problems: &mut Vec<String>) -> Option<Option<Secret>> {
    let Some(token) = token else {
        return Some(None);
    };
    if token.chars().count() < ADMIN_TOKEN_MIN_CHARS {
        problems.push(format!(
            "`admin.token` = <redacted>: {} characters; at least {ADMIN_TOKEN_MIN_CHARS} (it guards the console and /api/v1 beyond loopback)",
            token.chars().count()
        ));
        return None;
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        problems.push(
            "`admin.token` = <redacted>: only visible ASCII characters, no spaces (it is sent in an `Authorization: Bearer` header)"
                .to_owned(),
        );
        return None;
    }
    Some(Some(Secret::new(token)))
}
