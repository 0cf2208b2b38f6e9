//! Pacing, length and filtering settings: the defaults per destination platform
//! (ARCHITECTURE.md §6 and §7) and the `[limits.*]`, `[filters.*]` and per-link `filters`
//! overrides (link rules and the `words` rules of moderation word lists), checked with the
//! same "item, key, value" messages as the rest of the config.

use std::collections::HashMap;
use std::time::Duration;

use qunbridge_connectors::protocol::{EgressDefaults, LengthUnit, PacingDefault};
use qunbridge_connectors::Platform;
use regex::Regex;

use super::moderation::WordLists;
use super::raw::{RawFilter, RawLimits};
use crate::policy::moderation::ModerationAction;
use crate::policy::{
    default_rules, detect, Action, EgressPolicy, FilterRules, LengthLimit, Limit, Matcher, Rate,
    Rule, Unit, DEFAULT_MAX_DELAY,
};

/// Default most parts of a split message.
pub const DEFAULT_MAX_PARTS: usize = 5;
/// Longest `max_delay`, so a typo cannot keep messages for days.
const MAX_MAX_DELAY: Duration = Duration::from_secs(7 * 24 * 3600);

/// Filter rules configured per destination platform and per account.
#[derive(Debug, Clone, Default)]
pub struct FilterConfig {
    /// `[filters.<platform>]`.
    pub platforms: HashMap<Platform, Vec<Rule>>,
    /// `[filters.<account>]`.
    pub accounts: HashMap<String, Vec<Rule>>,
    /// `on_flood` of `[filters.<platform>]`.
    pub on_flood_platforms: HashMap<Platform, ModerationAction>,
    /// `on_flood` of `[filters.<account>]` (before the platform's).
    pub on_flood_accounts: HashMap<String, ModerationAction>,
}

impl FilterConfig {
    /// The ordered rules for a destination: the link's, then the account's, then the
    /// platform's, then the platform defaults. The first rule that matches decides.
    pub fn effective(&self, platform: Platform, account: &str, link_rules: &[Rule]) -> FilterRules {
        let mut rules = link_rules.to_vec();
        rules.extend(self.accounts.get(account).into_iter().flatten().cloned());
        rules.extend(self.platforms.get(&platform).into_iter().flatten().cloned());
        rules.extend(default_rules(platform));
        let on_flood = self
            .on_flood_accounts
            .get(account)
            .or_else(|| self.on_flood_platforms.get(&platform))
            .copied();
        FilterRules { rules, on_flood }
    }
}

/// A limit the connectors declare as a default.
fn limit(default: PacingDefault) -> Limit {
    Limit {
        rate: Rate {
            count: default.count,
            per: default.per,
        },
        burst: default.burst,
    }
}

/// The starting policy of an account: the defaults its protocol declares for its platform
/// (ARCHITECTURE.md §6), before `[limits."<id>"]`.
pub fn default_policy(defaults: EgressDefaults) -> EgressPolicy {
    EgressPolicy {
        per_group: defaults.per_group.map(limit),
        groups: Default::default(),
        per_account: defaults.per_account.map(limit),
        max_delay: DEFAULT_MAX_DELAY,
        length: defaults.length.map(|length| LengthLimit {
            max: length.max,
            unit: match length.unit {
                LengthUnit::Chars => Unit::Chars,
                LengthUnit::Bytes => Unit::Bytes,
            },
            max_parts: DEFAULT_MAX_PARTS,
        }),
    }
}

/// Parses a rate key (`off` disables it).
fn rate(item: &str, key: &str, value: &str, problems: &mut Vec<String>) -> Option<Option<Rate>> {
    if value.trim().eq_ignore_ascii_case("off") {
        return Some(None);
    }
    match Rate::parse(value) {
        Ok(rate) => Some(Some(rate)),
        Err(error) => {
            problems.push(format!("{item}: `{key}` = {value:?}: {error}"));
            None
        }
    }
}

/// A burst value (at least 1).
fn burst(
    item: &str,
    key: &str,
    value: Option<u32>,
    default: u32,
    problems: &mut Vec<String>,
) -> u32 {
    match value {
        Some(0) => {
            problems.push(format!("{item}: `{key}` = 0: must be at least 1"));
            default
        }
        Some(n) => n,
        None => default,
    }
}

/// The burst a rate set without one gets: the burst it replaces, but never more than the
/// rate's own count, so `per_account = "1/min"` alone means one message a minute rather
/// than the platform's default burst going back to back. An explicit burst key overrides it.
fn burst_within(replaced: u32, rate: Rate) -> u32 {
    replaced.min(rate.count).max(1)
}

/// Applies `[limits."<account>"]` to an account's policy.
pub fn apply_limits(
    item: &str,
    policy: &mut EgressPolicy,
    raw: &RawLimits,
    problems: &mut Vec<String>,
) {
    let group_burst = policy.per_group.map_or(1, |l| l.burst);
    if let Some(value) = &raw.per_group {
        if let Some(rate) = rate(item, "per_group", value, problems) {
            policy.per_group = rate.map(|rate| Limit {
                rate,
                burst: burst_within(group_burst, rate),
            });
        }
    }
    if let Some(group) = policy.per_group.as_mut() {
        group.burst = burst(item, "burst", raw.burst, group.burst, problems);
    } else if raw.burst.is_some() && raw.per_group.is_none() {
        problems.push(format!(
            "{item}: `burst` is set but the account has no `per_group` rate"
        ));
    }
    let account_burst = policy.per_account.map_or(1, |l| l.burst);
    if let Some(value) = &raw.per_account {
        if let Some(rate) = rate(item, "per_account", value, problems) {
            policy.per_account = rate.map(|rate| Limit {
                rate,
                burst: burst_within(account_burst, rate),
            });
        }
    }
    if let Some(account) = policy.per_account.as_mut() {
        account.burst = burst(
            item,
            "per_account_burst",
            raw.per_account_burst,
            account.burst,
            problems,
        );
    }
    if let Some(value) = &raw.max_delay {
        match humantime::parse_duration(value) {
            Ok(delay) if !delay.is_zero() && delay <= MAX_MAX_DELAY => policy.max_delay = delay,
            Ok(_) => problems.push(format!(
                "{item}: `max_delay` = {value:?}: must be above zero and at most 7 days"
            )),
            Err(error) => problems.push(format!(
                "{item}: `max_delay` = {value:?}: {error} (write e.g. 10m or 90s)"
            )),
        }
    }
    if raw.max_length.is_some() || raw.max_parts.is_some() {
        match policy.length.as_mut() {
            Some(length) => {
                if let Some(max) = raw.max_length {
                    if max < 32 {
                        problems.push(format!("{item}: `max_length` = {max}: must be at least 32"));
                    } else {
                        length.max = max as usize;
                    }
                }
                if let Some(parts) = raw.max_parts {
                    if parts == 0 || parts > 100 {
                        problems.push(format!("{item}: `max_parts` = {parts}: must be 1 to 100"));
                    } else {
                        length.max_parts = parts as usize;
                    }
                }
            }
            None => problems.push(format!(
                "{item}: `max_length`/`max_parts` are set but this platform has no length limit"
            )),
        }
    }
    for (group, overrides) in &raw.groups {
        let group_item = format!("{item} group {group:?}");
        let base = policy.group_limit(group);
        let mut group_limit = base;
        if let Some(value) = &overrides.per_group {
            if let Some(rate) = rate(&group_item, "per_group", value, problems) {
                group_limit = rate.map(|rate| Limit {
                    rate,
                    burst: burst_within(base.map_or(1, |l| l.burst), rate),
                });
            }
        }
        if let Some(limit) = group_limit.as_mut() {
            limit.burst = burst(&group_item, "burst", overrides.burst, limit.burst, problems);
        }
        policy.groups.insert(group.clone(), group_limit);
    }
}

/// Parses a set of filter rules; `source` names where they come from, `lists` are the word
/// lists a `words` rule may name.
pub fn filter_rules(
    item: &str,
    raw: &RawFilter,
    source: &str,
    lists: &WordLists,
    problems: &mut Vec<String>,
) -> Vec<Rule> {
    let mut rules = Vec::new();
    let rule = |matcher, action, notify| Rule {
        matcher,
        action,
        source: source.to_owned(),
        notify,
    };
    let check_domains = |key: &str, domains: &[String], problems: &mut Vec<String>| {
        for domain in domains {
            let valid = !domain.is_empty()
                && domain.contains('.')
                && domain
                    .trim_start_matches('.')
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
            if !valid {
                problems.push(format!(
                    "{item}: `{key}` has {domain:?}: not a domain such as example.org"
                ));
            }
        }
    };
    if !raw.allow_domains.is_empty() {
        check_domains("allow_domains", &raw.allow_domains, problems);
        rules.push(rule(
            Matcher::Domain(raw.allow_domains.clone()),
            Action::Allow,
            false,
        ));
    }
    if !raw.deny_domains.is_empty() {
        check_domains("deny_domains", &raw.deny_domains, problems);
        rules.push(rule(
            Matcher::Domain(raw.deny_domains.clone()),
            Action::Strip,
            false,
        ));
    }
    for (index, raw_rule) in raw.rules.iter().enumerate() {
        let key = format!("rules[{index}]");
        let words = raw_rule.matcher.as_deref() == Some("words");
        if let (Some(list), false) = (&raw_rule.list, words) {
            problems.push(format!(
                "{item}: `{key}.list` = {list:?}: only for `match` = \"words\""
            ));
        }
        let matcher = match raw_rule.matcher.as_deref() {
            Some("url") => Some(Matcher::Url),
            Some("short_link") => Some(Matcher::ShortLink),
            Some("qq_group_invite") => Some(Matcher::QqGroupInvite),
            Some("wechat_share_code") => Some(Matcher::WechatShareCode),
            Some("domain") if !raw_rule.domains.is_empty() => {
                check_domains(&format!("{key}.domains"), &raw_rule.domains, problems);
                Some(Matcher::Domain(raw_rule.domains.clone()))
            }
            Some("domain") => {
                problems.push(format!(
                    "{item}: `{key}.domains` is missing for `match` = \"domain\""
                ));
                None
            }
            Some("regex") => match raw_rule.pattern.as_deref() {
                Some(pattern) => match Regex::new(pattern) {
                    Ok(regex) if !regex.is_match("") => Some(Matcher::Regex(regex)),
                    Ok(_) => {
                        problems.push(format!(
                            "{item}: `{key}.pattern` = {pattern:?}: matches the empty text"
                        ));
                        None
                    }
                    Err(error) => {
                        problems.push(format!("{item}: `{key}.pattern` = {pattern:?}: {error}"));
                        None
                    }
                },
                None => {
                    problems.push(format!(
                        "{item}: `{key}.pattern` is missing for `match` = \"regex\""
                    ));
                    None
                }
            },
            Some("words") => words_matcher(item, &key, raw_rule.list.as_deref(), lists, problems),
            Some(other) => {
                problems.push(format!(
                    "{item}: `{key}.match` = {other:?}: one of url, short_link, qq_group_invite, wechat_share_code, domain, regex, words"
                ));
                None
            }
            None => {
                problems.push(format!("{item}: `{key}.match` is missing"));
                None
            }
        };
        let action = match (raw_rule.action.as_deref(), &raw_rule.with) {
            (Some("drop"), _) => Some(Action::Drop),
            (Some("hold"), None) if words => Some(Action::Hold),
            (Some("hold"), Some(with)) if words => {
                problems.push(format!(
                    "{item}: `{key}.with` = {with:?}: `hold` keeps the whole message for review and takes no `with`"
                ));
                None
            }
            (Some("hold"), _) => {
                problems.push(format!(
                    "{item}: `{key}.action` = \"hold\": only for `match` = \"words\" (a link rule drops or rewrites)"
                ));
                None
            }
            (Some("mask"), None) if words => Some(Action::Mask),
            (Some("mask"), Some(with)) if words => {
                problems.push(format!(
                    "{item}: `{key}.with` = {with:?}: `mask` puts `*` in place of each matched character and takes no `with`"
                ));
                None
            }
            (Some("mask"), _) => {
                problems.push(format!(
                    "{item}: `{key}.action` = \"mask\": only for `match` = \"words\""
                ));
                None
            }
            (Some(other), _) if words => {
                problems.push(format!(
                    "{item}: `{key}.action` = {other:?}: for `match` = \"words\", one of mask, drop, hold"
                ));
                None
            }
            (Some("allow"), _) => Some(Action::Allow),
            (Some("strip"), _) => Some(Action::Strip),
            (Some("defang"), _) => Some(Action::Defang),
            (Some("replace"), Some(with)) => {
                if detect::urls(with).is_empty() {
                    Some(Action::Replace(with.clone()))
                } else {
                    problems.push(format!(
                        "{item}: `{key}.with` = {with:?}: a replacement must not contain a link"
                    ));
                    None
                }
            }
            (Some("replace"), None) => {
                problems.push(format!(
                    "{item}: `{key}.with` is missing for `action` = \"replace\""
                ));
                None
            }
            (Some(other), _) => {
                problems.push(format!(
                    "{item}: `{key}.action` = {other:?}: one of allow, strip, replace, defang, drop (and mask for `match` = \"words\")"
                ));
                None
            }
            (None, _) => {
                problems.push(format!("{item}: `{key}.action` is missing"));
                None
            }
        };
        if let (Some(matcher), Some(action)) = (matcher, action) {
            rules.push(rule(matcher, action, raw_rule.notify.unwrap_or(false)));
        }
    }
    rules
}

/// The matcher of a `words` rule: the compiled list its `list` names.
fn words_matcher(
    item: &str,
    key: &str,
    list: Option<&str>,
    lists: &WordLists,
    problems: &mut Vec<String>,
) -> Option<Matcher> {
    let Some(name) = list else {
        problems.push(format!(
            "{item}: `{key}.list` is missing for `match` = \"words\" (the name of a [moderation.lists.<name>] table)"
        ));
        return None;
    };
    if let Some(compiled) = lists.get(name) {
        return Some(Matcher::Words(compiled.clone()));
    }
    if !lists.is_configured(name) {
        let names = lists.names();
        problems.push(format!(
            "{item}: `{key}.list` = {name:?}: no [moderation.lists.{name}] is configured ({})",
            if names.is_empty() {
                "there are no lists".to_owned()
            } else {
                format!("lists: {}", names.join(", "))
            }
        ));
    }
    // A configured list that did not compile has its own problems reported.
    None
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::tests::load;
    use crate::egress::pacing::{acquire, Pacer};

    /// A QQ account (defaults: 1/1.5s per group with burst 3, 20/min per account with burst
    /// 5) with the given `[limits.qq]` lines.
    fn qq_with(limits: &str) -> crate::policy::EgressPolicy {
        let config = load(
            &format!(
                "[accounts.qq]\nplatform = \"qq\"\nurl = \"ws://127.0.0.1:3001\"\n[limits.qq]\n{limits}\n"
            ),
            &[],
        )
        .expect("valid");
        config.accounts["qq"].egress.clone()
    }

    #[test]
    fn a_rate_without_a_burst_gets_no_burst_above_its_count() {
        let account = qq_with("per_account = \"1/min\"").per_account.expect("set");
        assert_eq!((account.rate.count, account.burst), (1, 1));
        let group = qq_with("per_group = \"2/min\"").per_group.expect("set");
        assert_eq!((group.rate.count, group.burst), (2, 2));
        // A rate above the default burst keeps the default burst.
        let account = qq_with("per_account = \"30/min\"")
            .per_account
            .expect("set");
        assert_eq!(account.burst, 5);
        // An explicit burst wins, even above the count.
        let account = qq_with("per_account = \"1/min\"\nper_account_burst = 4")
            .per_account
            .expect("set");
        assert_eq!(account.burst, 4);
        let group = qq_with("[limits.qq.groups.\"7\"]\nper_group = \"1/min\"").group_limit("7");
        assert_eq!(group.map(|l| l.burst), Some(1));
    }

    #[tokio::test(start_paused = true)]
    async fn one_a_minute_alone_lets_one_message_through_per_minute() {
        let limit = qq_with("per_account = \"1/min\"").per_account.expect("set");
        let account = std::sync::Mutex::new(Pacer::new(limit));
        let start = tokio::time::Instant::now();
        let mut sent_at = Vec::new();
        for _ in 0..3 {
            acquire(None, Some(&account)).await;
            sent_at.push(start.elapsed());
        }
        assert_eq!(sent_at[0], Duration::ZERO);
        for pair in sent_at.windows(2) {
            assert!(pair[1] - pair[0] >= Duration::from_secs(60), "{sent_at:?}");
        }
    }
}
