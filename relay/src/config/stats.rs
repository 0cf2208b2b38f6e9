//! `[stats]` (group health) and each link's `notices`: the offset days are counted in, how
//! long history is kept, the tier and decline thresholds, which metrics are exported, the
//! aliases groups go by in metrics and reports, and the join/leave notice templates. Every
//! problem is reported, each naming its key and value.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use super::raw::{RawLink, RawStats};
use crate::policy::links::{GroupRef, Link};

/// Longest accepted `retention`.
const MAX_RETENTION_DAYS: i64 = 3650;
/// Sender digests are kept this many days (the 28-day window plus a week of margin).
pub const SENDER_DAYS: i64 = 35;
/// Default join notice.
pub const DEFAULT_JOIN_FORMAT: &str = "[{platform}] {name} 加入了群";
/// Default leave notice.
pub const DEFAULT_LEAVE_FORMAT: &str = "[{platform}] {name} 退出了群";
/// Placeholders a notice template may use (never `{id}`).
const NOTICE_PLACEHOLDERS: [&str; 3] = ["platform", "name", "link"];

/// Which `qunbridge_group_*` series are exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsMetrics {
    /// One series set per linked group (by alias).
    PerGroup,
    /// Summed per link (the `group` label is the link name).
    PerLink,
    /// None.
    Off,
}

/// Which membership notices a link relays to its other groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Notices {
    /// None (the default).
    #[default]
    Off,
    /// Joins only.
    Joins,
    /// Joins and leaves.
    All,
}

impl Notices {
    /// Reads the config spelling.
    pub fn parse(value: &str) -> Option<Notices> {
        match value {
            "off" => Some(Notices::Off),
            "joins" => Some(Notices::Joins),
            "all" => Some(Notices::All),
            _ => None,
        }
    }
}

/// `[stats]`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsConfig {
    /// Whether anything is counted.
    pub enabled: bool,
    /// Seconds east of UTC that days and weeks are counted in.
    pub utc_offset_secs: i64,
    /// Days of day rows kept.
    pub retention_days: i64,
    /// Days of the last 7 a `core` member spoke on, at least.
    pub core_days: u32,
    /// A week counts toward the decline only when the week before had this many messages.
    pub decline_min_messages: u64,
    /// Which series are exported.
    pub metrics: StatsMetrics,
    /// Alias per `(account, group)` as configured; others get `<account>#<n>`.
    pub aliases: BTreeMap<(String, String), String>,
    /// Join notice template.
    pub join_format: String,
    /// Leave notice template.
    pub leave_format: String,
    /// Notices per link name.
    pub notices: BTreeMap<String, Notices>,
}

impl Default for StatsConfig {
    fn default() -> StatsConfig {
        StatsConfig {
            enabled: true,
            utc_offset_secs: 8 * 3600,
            retention_days: 400,
            core_days: 5,
            decline_min_messages: 20,
            metrics: StatsMetrics::PerGroup,
            aliases: BTreeMap::new(),
            join_format: DEFAULT_JOIN_FORMAT.to_owned(),
            leave_format: DEFAULT_LEAVE_FORMAT.to_owned(),
            notices: BTreeMap::new(),
        }
    }
}

/// Parses `+08:00`, `-05:30`, `Z` or `+00:00` into seconds east of UTC.
pub fn parse_offset(value: &str) -> Option<i64> {
    if value == "Z" || value == "UTC" {
        return Some(0);
    }
    let (sign, rest) = match value.as_bytes().first()? {
        b'+' => (1, &value[1..]),
        b'-' => (-1, &value[1..]),
        _ => return None,
    };
    let (hours, minutes) = rest.split_once(':')?;
    if hours.len() != 2 || minutes.len() != 2 {
        return None;
    }
    let (hours, minutes): (i64, i64) = (hours.parse().ok()?, minutes.parse().ok()?);
    (hours <= 14 && minutes < 60 && hours * 60 + minutes <= 14 * 60)
        .then_some(sign * (hours * 3600 + minutes * 60))
}

/// True when an alias is a plain name: letters (any script), digits, `-`, `_`, `.`; at most
/// 64 characters.
fn alias_is_plain(alias: &str) -> bool {
    !alias.is_empty()
        && alias.chars().count() <= 64
        && alias
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '_' || c == '.' || c == '#')
}

/// Resolves `[stats]` and the links' `notices`, adding every problem found. `links` are the
/// links that were valid (an alias may only name a group in one of them).
pub fn stats(
    raw: &RawStats,
    raw_links: &[RawLink],
    links: &[Link],
    problems: &mut Vec<String>,
) -> StatsConfig {
    let mut config = StatsConfig::default();
    if let Some(enabled) = raw.enabled {
        config.enabled = enabled;
    }
    if let Some(value) = &raw.utc_offset {
        match parse_offset(value) {
            Some(secs) => config.utc_offset_secs = secs,
            None => problems.push(format!(
                "stats: `utc_offset` = {value:?}: not an offset like \"+08:00\" or \"-05:30\" (at most 14 hours)"
            )),
        }
    }
    if let Some(value) = &raw.retention {
        match humantime::parse_duration(value) {
            Ok(duration)
                if duration >= Duration::from_secs(28 * 86_400)
                    && duration <= Duration::from_secs(MAX_RETENTION_DAYS as u64 * 86_400) =>
            {
                config.retention_days = (duration.as_secs() / 86_400) as i64;
            }
            Ok(_) => problems.push(format!(
                "stats: `retention` = {value:?}: between 28 days (the longest window) and {MAX_RETENTION_DAYS} days"
            )),
            Err(error) => problems.push(format!("stats: `retention` = {value:?}: {error}")),
        }
    }
    if let Some(days) = raw.core_days {
        if (1..=7).contains(&days) {
            config.core_days = days;
        } else {
            problems.push(format!(
                "stats: `core_days` = {days}: between 1 and 7 (days of the last week)"
            ));
        }
    }
    if let Some(messages) = raw.decline_min_messages {
        config.decline_min_messages = messages;
    }
    if let Some(value) = &raw.metrics {
        config.metrics = match value.as_str() {
            "per_group" => StatsMetrics::PerGroup,
            "per_link" => StatsMetrics::PerLink,
            "off" => StatsMetrics::Off,
            _ => {
                problems.push(format!(
                    "stats: `metrics` = {value:?}: one of \"per_group\", \"per_link\", \"off\""
                ));
                config.metrics
            }
        };
    }
    let linked: HashSet<&GroupRef> = links
        .iter()
        .flat_map(|link| link.groups.iter().chain(&link.to))
        .collect();
    let mut taken = HashSet::new();
    for (key, alias) in &raw.aliases {
        let Some((account, group)) = key
            .split_once(':')
            .filter(|(a, g)| !a.is_empty() && !g.is_empty())
        else {
            problems.push(format!(
                "stats.aliases: key {key:?}: must be \"<account>:<group>\""
            ));
            continue;
        };
        let member = GroupRef {
            account: account.to_owned(),
            group: group.to_owned(),
        };
        if !linked.contains(&member) {
            problems.push(format!(
                "stats.aliases: {key:?} = {alias:?}: that group is in no link (only linked groups are counted)"
            ));
        }
        if !alias_is_plain(alias) {
            problems.push(format!(
                "stats.aliases: {key:?} = {alias:?}: an alias is 1 to 64 letters, digits, `-`, `_`, `.` or `#`"
            ));
        } else if !taken.insert(alias.as_str()) {
            problems.push(format!(
                "stats.aliases: {key:?} = {alias:?}: another group has the same alias"
            ));
        }
        config
            .aliases
            .insert((account.to_owned(), group.to_owned()), alias.clone());
    }
    for (key, value, slot) in [
        ("join_format", &raw.join_format, &mut config.join_format),
        ("leave_format", &raw.leave_format, &mut config.leave_format),
    ] {
        if let Some(format) = value {
            check_notice_format(key, format, problems);
            slot.clone_from(format);
        }
    }
    for (index, raw_link) in raw_links.iter().enumerate() {
        let Some(value) = &raw_link.notices else {
            continue;
        };
        let name = raw_link
            .name
            .clone()
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| format!("link-{}", index + 1));
        match Notices::parse(value) {
            Some(notices) => {
                config.notices.insert(name, notices);
            }
            None => problems.push(format!(
                "link \"{name}\": `notices` = {value:?}: one of \"off\", \"joins\", \"all\""
            )),
        }
    }
    config
}

/// A notice template may use `{platform}`, `{name}` and `{link}` only: never `{id}`.
fn check_notice_format(key: &str, format: &str, problems: &mut Vec<String>) {
    let mut rest = format;
    while let Some(open) = rest.find('{') {
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else { break };
        let name = &after[..close];
        if !NOTICE_PLACEHOLDERS.contains(&name) {
            problems.push(format!(
                "stats: `{key}` = {format:?}: `{{{name}}}` is not allowed (notices may use {{platform}}, {{name}} and {{link}}; never a user id)"
            ));
        }
        rest = &after[close + 1..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(name: &str, groups: &[&str]) -> Link {
        Link {
            name: name.into(),
            groups: groups
                .iter()
                .map(|g| {
                    let (account, group) = g.split_once(':').unwrap_or((g, ""));
                    GroupRef {
                        account: account.into(),
                        group: group.into(),
                    }
                })
                .collect(),
            to: Vec::new(),
            format: String::new(),
            filters: Vec::new(),
        }
    }

    #[test]
    fn offsets_read_in_every_spelling_and_nonsense_is_refused() {
        assert_eq!(parse_offset("+08:00"), Some(28_800));
        assert_eq!(parse_offset("-05:30"), Some(-19_800));
        assert_eq!(parse_offset("Z"), Some(0));
        for bad in ["8", "+8:00", "+15:00", "+08:60", "", "+08"] {
            assert_eq!(parse_offset(bad), None, "{bad}");
        }
    }

    #[test]
    fn every_problem_is_reported_with_its_key_and_value() {
        #[derive(serde::Deserialize)]
        struct File {
            stats: RawStats,
        }
        let file: File = config::Config::builder()
            .add_source(config::File::from_str(
                r#"
            [stats]
            utc_offset = "+25:00"
            retention = "3d"
            core_days = 9
            metrics = "all"
            join_format = "{name} ({id}) joined"
            [stats.aliases]
            "qq:1" = "fans qq"
            "qq:2" = "fans"
            "qq:3" = "fans"
            "nogroup" = "x"
            "#,
                config::FileFormat::Toml,
            ))
            .build()
            .and_then(|built| built.try_deserialize())
            .expect("test TOML decodes");
        let raw = file.stats;
        let links = [link("fans", &["qq:1", "qq:2", "wx:9"])];
        let mut problems = Vec::new();
        stats(&raw, &[], &links, &mut problems);
        let all = problems.join("\n");
        for expected in [
            "`utc_offset` = \"+25:00\"",
            "`retention` = \"3d\"",
            "`core_days` = 9",
            "`metrics` = \"all\"",
            "`join_format` = \"{name} ({id}) joined\"",
            "\"qq:1\" = \"fans qq\"",
            "\"qq:3\" = \"fans\": that group is in no link",
            "\"qq:3\" = \"fans\": another group has the same alias",
            "key \"nogroup\"",
        ] {
            assert!(all.contains(expected), "missing {expected} in:\n{all}");
        }
        assert_eq!(problems.len(), 9, "{all}");
    }
}
