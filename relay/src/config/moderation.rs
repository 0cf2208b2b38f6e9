//! `[moderation]` (issue 17): who is never judged, per-sender flood control, spam waves across
//! groups, the word lists that `match = "words"` filter rules name, how long and how many
//! messages may be held for review, and the admins' group told of decisions (`notify`).
//! Every problem is reported, each naming its key and value.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use qunbridge_connectors::Platform;

use super::raw::{RawConfig, RawLink, RawList, RawModeration, RawWave};
use crate::moderation::lists::{CompiledList, EntrySource, ListError, ListSpec, REGEX_PREFIX};
use crate::moderation::normalize::Normalize;
use crate::moderation::wave::{WaveSpec, MOST_SIGHTINGS_KEPT};
use crate::policy::moderation::{
    FloodConfig, ModerationAction, NotifyConfig, DEFAULT_NOTIFY_PER_MINUTE,
};
use crate::policy::pacing::Rate;

/// Default `hold_max`.
pub const DEFAULT_HOLD_MAX: Duration = Duration::from_secs(3600);
/// Default `hold_cap`.
pub const DEFAULT_HOLD_CAP: usize = 10_000;

/// Longest `[moderation.wave] suspect_delay`.
pub const MAX_SUSPECT_DELAY: Duration = Duration::from_secs(600);

/// Most `notify_per_minute`: the notifier remembers when each line of the last minute went
/// out, so the limit bounds its memory.
pub const MOST_NOTIFY_PER_MINUTE: u32 = 1000;

/// Longest `[moderation.wave] window`: a wave lasts until a whole window passes without a
/// copy, so a longer one would keep an innocent text that many people repeat (a greeting, a
/// holiday wish) suspect for longer than a day.
pub const MAX_WAVE_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Rule names the hit metric uses for moderation's own steps: a list may not take one, so a
/// `rule` label always says which it was.
pub const RESERVED_LIST_NAMES: [&str; 3] = ["flood", "wave", "suspect"];

/// `[moderation.lists]`, compiled: what `match = "words"` rules name.
#[derive(Debug, Clone, Default)]
pub struct WordLists {
    /// The lists that compiled, by name.
    pub compiled: BTreeMap<String, Arc<CompiledList>>,
    /// Lists that are configured but did not compile: their problems are reported already,
    /// so a rule naming one is not reported again as naming an unknown list.
    pub broken: BTreeSet<String>,
}

impl WordLists {
    /// The compiled list called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<CompiledList>> {
        self.compiled.get(name)
    }

    /// True when a list called `name` is configured, compiled or not.
    pub fn is_configured(&self, name: &str) -> bool {
        self.compiled.contains_key(name) || self.broken.contains(name)
    }

    /// The configured names, for messages.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self
            .compiled
            .keys()
            .chain(&self.broken)
            .map(String::as_str)
            .collect();
        names.sort_unstable();
        names
    }
}

/// `[moderation]`, resolved.
#[derive(Debug, Clone)]
pub struct ModerationConfig {
    /// `(account, user id)` pairs never judged.
    pub exempt: BTreeSet<(String, String)>,
    /// Per-sender flood control; `None`: off (the default).
    pub flood: Option<FloodConfig>,
    /// Spam waves across groups; `None`: off (no `[moderation.wave]` table, the default).
    pub wave: Option<WaveSpec>,
    /// Longest a message stays held.
    pub hold_max: Duration,
    /// Most messages held at once.
    pub hold_cap: usize,
    /// `[moderation.lists.<name>]`, compiled (the filter rules that name a list hold it too;
    /// kept here for `check` and for lists no rule names yet).
    pub lists: WordLists,
    /// `[moderation.wave] suspect_delay`: how long a newcomer's message that carries a link,
    /// an invite, a contact or a picture waits before it is relayed (unless it turns out to
    /// be part of a wave meanwhile); `None`: off (the default).
    pub suspect_delay: Option<Duration>,
    /// `notify` and `notify_per_minute`: where admin notifications go; `None`: nowhere (the
    /// default), and rules may not ask for them.
    pub notify: Option<NotifyConfig>,
}

impl Default for ModerationConfig {
    fn default() -> ModerationConfig {
        ModerationConfig {
            exempt: BTreeSet::new(),
            flood: None,
            wave: None,
            hold_max: DEFAULT_HOLD_MAX,
            hold_cap: DEFAULT_HOLD_CAP,
            lists: WordLists::default(),
            suspect_delay: None,
            notify: None,
        }
    }
}

impl ModerationConfig {
    /// True when `user` of `account` is never judged.
    pub fn is_exempt(&self, account: &str, user: &str) -> bool {
        self.exempt.iter().any(|(a, u)| a == account && u == user)
    }
}

/// Resolves `[moderation]`, adding every problem found. `accounts`: the configured account
/// ids (an exemption must name one); `dir`: the config file's directory (relative list files
/// are looked up there).
pub fn moderation(
    raw: &RawModeration,
    accounts: &BTreeSet<&str>,
    dir: &Path,
    problems: &mut Vec<String>,
) -> ModerationConfig {
    let mut config = ModerationConfig::default();
    for entry in &raw.exempt {
        match entry
            .split_once(':')
            .filter(|(account, user)| !account.is_empty() && !user.is_empty())
        {
            Some((account, _)) if !accounts.contains(account) => problems.push(format!(
                "moderation: `exempt` entry {entry:?}: no account {account:?} is configured"
            )),
            Some((account, user)) => {
                config.exempt.insert((account.to_owned(), user.to_owned()));
            }
            None => problems.push(format!(
                "moderation: `exempt` entry {entry:?}: must be \"<account>:<user id>\""
            )),
        }
    }
    if let Some(value) = &raw.hold_max {
        match humantime::parse_duration(value) {
            Ok(duration) if duration >= Duration::from_secs(1) => config.hold_max = duration,
            Ok(_) => problems.push(format!(
                "moderation: `hold_max` = {value:?}: at least one second"
            )),
            Err(error) => problems.push(format!("moderation: `hold_max` = {value:?}: {error}")),
        }
    }
    if let Some(cap) = raw.hold_cap {
        if cap >= 1 {
            config.hold_cap = cap;
        } else {
            problems.push(format!(
                "moderation: `hold_cap` = {cap}: at least 1 (use action = \"drop\" to hold nothing)"
            ));
        }
    }
    if let Some(flood) = &raw.flood {
        config.flood = flood_config(flood, problems);
    }
    if let Some(wave) = &raw.wave {
        config.wave = wave_config(wave, problems);
        config.suspect_delay = wave
            .suspect_delay
            .as_deref()
            .and_then(|value| suspect_delay(value, config.hold_max, problems));
    }
    for (name, list) in &raw.lists {
        match word_list(name, list, dir, problems) {
            Some(compiled) => {
                config
                    .lists
                    .compiled
                    .insert(name.clone(), Arc::new(compiled));
            }
            None => {
                config.lists.broken.insert(name.clone());
            }
        }
    }
    config
}

/// Resolves `[moderation.wave] suspect_delay` (`None`, with the problem added, when it is
/// unusable): at least a second, at most [`MAX_SUSPECT_DELAY`], and shorter than `hold_max`
/// (a waiting message is held, and would expire first).
fn suspect_delay(value: &str, hold_max: Duration, problems: &mut Vec<String>) -> Option<Duration> {
    let problem = match humantime::parse_duration(value) {
        Ok(delay) if delay < Duration::from_secs(1) => "at least one second".to_owned(),
        Ok(delay) if delay > MAX_SUSPECT_DELAY => {
            "at most 10m (a newcomer's message should not wait longer)".to_owned()
        }
        Ok(delay) if delay >= hold_max => format!(
            "shorter than `moderation.hold_max` ({}): a waiting message is held meanwhile",
            humantime::format_duration(hold_max)
        ),
        Ok(delay) => return Some(delay),
        Err(error) => error.to_string(),
    };
    problems.push(format!(
        "moderation.wave: `suspect_delay` = {value:?}: {problem}"
    ));
    None
}

/// Resolves `moderation.notify` and `notify_per_minute`, adding every problem found: the
/// value must be `"<account>:<group>"` with a configured account (`known`; `platform_of`
/// gives the platform of those that built), and the group must be in no link (`links` as
/// written, so a link with problems of its own is still looked at): the admins' group is
/// where decisions are told, and relaying from or to it would spread what was kept out.
pub fn notify(
    raw: &RawModeration,
    known: &BTreeSet<&str>,
    platform_of: impl Fn(&str) -> Option<Platform>,
    links: &[RawLink],
    problems: &mut Vec<String>,
) -> Option<NotifyConfig> {
    let per_minute = match raw.notify_per_minute {
        Some(0) => {
            problems.push(
                "moderation: `notify_per_minute` = 0: at least 1 (leave `notify` out to send none)"
                    .to_owned(),
            );
            None
        }
        Some(count) if count > MOST_NOTIFY_PER_MINUTE => {
            problems.push(format!(
                "moderation: `notify_per_minute` = {count}: at most {MOST_NOTIFY_PER_MINUTE} (the admins' group is a chat, and its account's pacing sends far fewer)"
            ));
            None
        }
        Some(count) if raw.notify.is_none() => {
            problems.push(format!(
                "moderation: `notify_per_minute` = {count}: `notify` is not set (the admins' group, \"<account>:<group>\")"
            ));
            None
        }
        Some(count) => Some(count),
        None => Some(DEFAULT_NOTIFY_PER_MINUTE),
    };
    let value = raw.notify.as_deref()?;
    let Some((account, group)) = value
        .split_once(':')
        .filter(|(account, group)| !account.is_empty() && !group.is_empty())
    else {
        problems.push(format!(
            "moderation: `notify` = {value:?}: must be \"<account>:<group>\" (a group in no link)"
        ));
        return None;
    };
    if !known.contains(account) {
        problems.push(format!(
            "moderation: `notify` = {value:?}: no account {account:?} is configured"
        ));
        return None;
    }
    let linked: Vec<String> = links
        .iter()
        .enumerate()
        .filter(|(_, link)| {
            link.groups.iter().chain(&link.to).any(|member| {
                member
                    .split_once(':')
                    .is_some_and(|(a, g)| a == account && g == group)
            })
        })
        .map(|(index, link)| {
            link.name
                .clone()
                .filter(|name| !name.trim().is_empty())
                .unwrap_or_else(|| format!("link-{}", index + 1))
        })
        .collect();
    if !linked.is_empty() {
        problems.push(format!(
            "moderation: `notify` = {value:?}: the group is in link {} (notifications go to an admins' group in no link, so nothing said there is relayed)",
            linked
                .iter()
                .map(|name| format!("{name:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        return None;
    }
    Some(NotifyConfig {
        account: account.to_owned(),
        group: group.to_owned(),
        // An account that did not build has its own problems reported.
        platform: platform_of(account)?,
        per_minute: per_minute?,
    })
}

/// Reports every filter rule with `notify = true` (in `[filters.*]` and in links' `filters`)
/// when `moderation.notify` is not set: the operator expects lines that could go nowhere.
pub fn notify_flags_need_a_target(raw: &RawConfig, problems: &mut Vec<String>) {
    if raw.moderation.notify.is_some() {
        return;
    }
    let flagged = |item: String, rules: &[super::raw::RawRule], problems: &mut Vec<String>| {
        for (index, rule) in rules.iter().enumerate() {
            if rule.notify == Some(true) {
                problems.push(format!(
                    "{item}: `rules[{index}].notify` = true: `moderation.notify` is not set (the admins' group, \"<account>:<group>\", the line would go to)"
                ));
            }
        }
    };
    for (index, link) in raw.links.iter().enumerate() {
        if let Some(filters) = &link.filters {
            let name = link
                .name
                .clone()
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| format!("link-{}", index + 1));
            flagged(format!("link \"{name}\""), &filters.rules, problems);
        }
    }
    for (name, filters) in &raw.filters {
        flagged(format!("filters {name:?}"), &filters.rules, problems);
    }
}

/// The normalizations `normalize` names (each of `width`, `case`, `symbols`).
fn normalize_options(
    item: &str,
    values: Option<&[String]>,
    problems: &mut Vec<String>,
) -> Normalize {
    let Some(values) = values else {
        return Normalize::ALL;
    };
    let mut options = Normalize::NONE;
    for value in values {
        match value.as_str() {
            "width" => options.width = true,
            "case" => options.case = true,
            "symbols" => options.symbols = true,
            other => problems.push(format!(
                "{item}: `normalize` has {other:?}: one of \"width\", \"case\", \"symbols\""
            )),
        }
    }
    options
}

/// True for a list name that reads well as a metric label and in `check`: 1 to 64 letters
/// (any script), digits, `-`, `_` or `.`.
fn valid_list_name(name: &str) -> bool {
    (1..=64).contains(&name.chars().count())
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Compiles `[moderation.lists.<name>]`; `None` (with every problem added) when it cannot be
/// used.
fn word_list(
    name: &str,
    raw: &RawList,
    dir: &Path,
    problems: &mut Vec<String>,
) -> Option<CompiledList> {
    let item = format!("moderation.lists {name:?}");
    let before = problems.len();
    if !valid_list_name(name) {
        problems.push(format!(
            "{item}: the list name {name:?} must be 1 to 64 letters, digits, `-`, `_` or `.` (it is the `rule` label of hits)"
        ));
    } else if RESERVED_LIST_NAMES.contains(&name) {
        problems.push(format!(
            "{item}: the list name {name:?} is reserved for moderation's own `{name}` rule; pick another"
        ));
    }
    if raw.words.is_empty() && raw.patterns.is_empty() && raw.files.is_empty() {
        problems.push(format!(
            "{item}: the list has no `words`, `patterns` or `files` (it would never match)"
        ));
    }
    let normalize = normalize_options(&item, raw.normalize.as_deref(), problems);
    let files: Vec<(String, std::path::PathBuf)> = raw
        .files
        .iter()
        .map(|file| (file.clone(), dir.join(file)))
        .collect();
    let spec = ListSpec {
        name: name.to_owned(),
        words: raw.words.clone(),
        patterns: raw.patterns.clone(),
        files: files.iter().map(|(_, path)| path.clone()).collect(),
        normalize,
        allow: raw.allow.clone(),
    };
    let compiled = match CompiledList::compile_all(&spec) {
        Ok(compiled) => Some(compiled),
        Err(errors) => {
            for error in errors {
                problems.push(list_problem(&item, raw, &files, &error));
            }
            None
        }
    };
    (problems.len() == before).then_some(compiled).flatten()
}

/// A list's compile error as a config problem naming its key and value: `files` has the
/// file as written (with where it was found and the line), `words`, `allow` and `patterns`
/// the entry.
fn list_problem(
    item: &str,
    raw: &RawList,
    files: &[(String, std::path::PathBuf)],
    error: &ListError,
) -> String {
    let as_written = |path: &Path| {
        files
            .iter()
            .find(|(_, resolved)| resolved == path)
            .map_or_else(
                || path.display().to_string(),
                |(written, _)| written.clone(),
            )
    };
    // An inline entry's key: the list's own `words`, `allow` or `patterns`.
    let inline_key = |entry: &str, pattern: bool| {
        if pattern {
            "patterns"
        } else if raw.words.iter().any(|word| word == entry) {
            "words"
        } else {
            "allow"
        }
    };
    let entry_problem = |entry: &str, at: &EntrySource, pattern: bool, why: String| match at {
        EntrySource::Inline => format!(
            "{item}: `{}` has {entry:?}: {why}",
            inline_key(entry, pattern)
        ),
        EntrySource::File { path, line } => format!(
            "{item}: `files` has {:?}: at {}:{line}, {:?}: {why}",
            as_written(path),
            path.display(),
            format!("{}{entry}", if pattern { REGEX_PREFIX } else { "" })
        ),
    };
    match error {
        ListError::ReadFile { path, source, .. } => format!(
            "{item}: `files` has {:?}: cannot read {}: {source}",
            as_written(path),
            path.display()
        ),
        ListError::BadPattern {
            pattern,
            at,
            source,
            ..
        } => entry_problem(pattern, at, true, format!("not a valid regex: {source}")),
        ListError::EmptyPattern { pattern, at, .. } => entry_problem(
            pattern,
            at,
            true,
            "the regex matches the empty text (it would hit every message)".to_owned(),
        ),
        ListError::EmptyWord { word, at, .. } => entry_problem(
            word,
            at,
            false,
            "empty once normalized (only spaces, punctuation or symbols)".to_owned(),
        ),
        ListError::PatternSet { .. } | ListError::Automaton { .. } => {
            format!("{item}: {error}")
        }
    }
}

/// Resolves `[moderation.flood]`; `None` (with the problems added) when it is unusable.
fn flood_config(raw: &super::raw::RawFlood, problems: &mut Vec<String>) -> Option<FloodConfig> {
    let before = problems.len();
    let per_sender = match raw.per_sender.as_deref() {
        Some(value) => match Rate::parse(value) {
            Ok(rate) => Some(rate),
            Err(error) => {
                problems.push(format!(
                    "moderation.flood: `per_sender` = {value:?}: {error}"
                ));
                None
            }
        },
        None => {
            problems.push(
                "moderation.flood: `per_sender` is missing (a rate such as \"5/10s\")".to_owned(),
            );
            None
        }
    };
    let burst = match raw.burst {
        Some(0) => {
            problems.push("moderation.flood: `burst` = 0: at least 1".to_owned());
            0
        }
        Some(burst) => burst,
        None => per_sender.map_or(1, |rate| rate.count),
    };
    let action = match raw.action.as_deref() {
        None => ModerationAction::Drop,
        Some(value) => match ModerationAction::parse(value) {
            Some(action) => action,
            None => {
                problems.push(format!(
                    "moderation.flood: `action` = {value:?}: one of \"drop\", \"hold\""
                ));
                ModerationAction::Drop
            }
        },
    };
    let per_sender = per_sender?;
    (problems.len() == before).then_some(FloodConfig {
        per_sender,
        burst,
        action,
    })
}

/// Resolves `[moderation.wave]` (present: on, each key defaulting to the issue's values);
/// `None` (with every problem added) when it is unusable.
fn wave_config(raw: &RawWave, problems: &mut Vec<String>) -> Option<WaveSpec> {
    let before = problems.len();
    let mut spec = WaveSpec::default();
    if let Some(value) = &raw.window {
        match humantime::parse_duration(value) {
            Ok(window) if window < Duration::from_secs(1) => problems.push(format!(
                "moderation.wave: `window` = {value:?}: at least one second"
            )),
            Ok(window) if window > MAX_WAVE_WINDOW => problems.push(format!(
                "moderation.wave: `window` = {value:?}: at most 24h (a wave lasts until a whole window passes without a copy)"
            )),
            Ok(window) => spec.window = window,
            Err(error) => problems.push(format!("moderation.wave: `window` = {value:?}: {error}")),
        }
    }
    let most = u32::try_from(MOST_SIGHTINGS_KEPT).unwrap_or(u32::MAX);
    for (key, value, field) in [
        ("groups", raw.groups, &mut spec.groups),
        ("senders", raw.senders, &mut spec.senders),
        ("repeats", raw.repeats, &mut spec.repeats),
    ] {
        match value {
            None => {}
            Some(1) => problems.push(format!(
                "moderation.wave: `{key}` = 1: at least 2 (1 would make every message a wave), or 0 to turn this test off"
            )),
            Some(count) if count > most => problems.push(format!(
                "moderation.wave: `{key}` = {count}: at most {most}"
            )),
            Some(count) => *field = count,
        }
    }
    if raw.groups == Some(0) && raw.senders == Some(0) && raw.repeats == Some(0) {
        problems.push(
            "moderation.wave: `groups`, `senders` and `repeats` are all 0: nothing would ever be a wave (remove [moderation.wave] to turn waves off)"
                .to_owned(),
        );
    }
    match raw.min_chars {
        None => {}
        Some(0) => problems.push(
            "moderation.wave: `min_chars` = 0: at least 1 (an empty fingerprint, a picture or a row of emoji, is no text to compare)"
                .to_owned(),
        ),
        Some(min_chars) => spec.min_chars = min_chars,
    }
    if let Some(value) = raw.action.as_deref() {
        match ModerationAction::parse(value) {
            Some(action) => spec.action = action,
            None => problems.push(format!(
                "moderation.wave: `action` = {value:?}: one of \"drop\", \"hold\""
            )),
        }
    }
    (problems.len() == before).then_some(spec)
}

#[cfg(test)]
mod tests {
    use super::super::raw::{RawFlood, RawWave};
    use super::*;

    fn accounts() -> BTreeSet<&'static str> {
        ["qq-main", "wx"].into_iter().collect()
    }

    #[test]
    fn defaults_are_off_with_an_hour_and_ten_thousand_held() {
        let mut problems = Vec::new();
        let config = moderation(
            &RawModeration::default(),
            &accounts(),
            Path::new(""),
            &mut problems,
        );
        assert!(problems.is_empty());
        assert!(config.exempt.is_empty());
        assert!(config.lists.compiled.is_empty());
        assert_eq!(config.hold_max, Duration::from_secs(3600));
        assert_eq!(config.hold_cap, 10_000);
        assert!(config.flood.is_none());
    }

    #[test]
    fn flood_and_exemptions_are_read() {
        let raw = RawModeration {
            exempt: vec!["qq-main:10001".into()],
            hold_max: Some("3s".into()),
            flood: Some(RawFlood {
                per_sender: Some("5/10s".into()),
                burst: Some(5),
                action: Some("drop".into()),
            }),
            ..Default::default()
        };
        let mut problems = Vec::new();
        let config = moderation(&raw, &accounts(), Path::new(""), &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        let flood = config.flood.expect("flood on");
        assert_eq!(flood.per_sender.count, 5);
        assert_eq!(flood.per_sender.per, Duration::from_secs(10));
        assert_eq!(flood.burst, 5);
        assert_eq!(flood.action, ModerationAction::Drop);
        assert!(config.is_exempt("qq-main", "10001"));
        assert!(!config.is_exempt("qq-main", "10002"));
        assert_eq!(config.hold_max, Duration::from_secs(3));
    }

    #[test]
    fn every_problem_is_reported_with_its_key_and_value() {
        let raw = RawModeration {
            exempt: vec!["nobody:1".into(), "qq-main".into()],
            hold_max: Some("soon".into()),
            hold_cap: Some(0),
            flood: Some(RawFlood {
                per_sender: Some("5 per 10s".into()),
                burst: Some(0),
                action: Some("mute".into()),
            }),
            ..Default::default()
        };
        let mut problems = Vec::new();
        let config = moderation(&raw, &accounts(), Path::new(""), &mut problems);
        assert!(config.flood.is_none());
        let all = problems.join("\n");
        for expected in [
            "`exempt` entry \"nobody:1\": no account \"nobody\"",
            "`exempt` entry \"qq-main\": must be",
            "`hold_max` = \"soon\"",
            "`hold_cap` = 0",
            "`per_sender` = \"5 per 10s\"",
            "`burst` = 0",
            "`action` = \"mute\"",
        ] {
            assert!(all.contains(expected), "{expected} not in:\n{all}");
        }
        assert_eq!(problems.len(), 7, "{all}");
    }

    #[test]
    fn waves_are_off_without_the_table_and_on_with_the_defaults_when_it_is_empty() {
        let linked = r#"
            [accounts.qq-main]
            platform = "qq"
            url = "ws://127.0.0.1:3001"
            [accounts.wx]
            platform = "wechat"
            url = "ws://127.0.0.1:3002"
            [[links]]
            name = "fans"
            groups = ["qq-main:1", "wx:a@chatroom"]
        "#;
        let off = super::super::tests::load(linked, &[]).expect("valid");
        assert_eq!(off.moderation.wave, None, "no table: no wave detection");
        let on = super::super::tests::load(&format!("{linked}\n[moderation.wave]\n"), &[])
            .expect("valid");
        assert_eq!(
            on.moderation.wave,
            Some(WaveSpec {
                window: Duration::from_secs(600),
                groups: 3,
                senders: 3,
                repeats: 3,
                min_chars: 8,
                action: ModerationAction::Drop,
            }),
            "an empty table: the defaults"
        );
        let typo = super::super::tests::load(
            &format!("{linked}\n[moderation.wave]\nwindow = \"5m\"\nmin_char = 4\n"),
            &[],
        )
        .expect_err("an unknown key")
        .to_string();
        assert!(typo.contains("min_char"), "{typo}");
        assert!(
            typo.contains("min_chars"),
            "the nearest key is suggested: {typo}"
        );
    }

    #[test]
    fn wave_settings_are_read_and_zero_turns_one_test_off() {
        let raw = RawModeration {
            wave: Some(RawWave {
                window: Some("3s".into()),
                groups: Some(2),
                senders: Some(0),
                repeats: Some(5),
                min_chars: Some(12),
                action: Some("drop".into()),
                suspect_delay: Some("2s".into()),
            }),
            ..Default::default()
        };
        let mut problems = Vec::new();
        let config = moderation(&raw, &accounts(), Path::new(""), &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            config.wave,
            Some(WaveSpec {
                window: Duration::from_secs(3),
                groups: 2,
                senders: 0,
                repeats: 5,
                min_chars: 12,
                action: ModerationAction::Drop,
            })
        );
        assert_eq!(config.suspect_delay, Some(Duration::from_secs(2)));
    }

    #[test]
    fn every_wave_problem_is_reported_with_its_key_and_value() {
        let raw = RawModeration {
            wave: Some(RawWave {
                window: Some("soon".into()),
                groups: Some(1),
                senders: Some(100_000),
                repeats: Some(1),
                min_chars: Some(0),
                action: Some("hold".into()),
                suspect_delay: Some("500ms".into()),
            }),
            ..Default::default()
        };
        let mut problems = Vec::new();
        let config = moderation(&raw, &accounts(), Path::new(""), &mut problems);
        assert_eq!(config.wave, None, "an unusable table turns nothing on");
        let all = problems.join("\n");
        for expected in [
            r#"moderation.wave: `window` = "soon": "#,
            "moderation.wave: `groups` = 1: at least 2 (1 would make every message a wave), or 0 to turn this test off",
            "moderation.wave: `senders` = 100000: at most 4096",
            "moderation.wave: `repeats` = 1: at least 2",
            "moderation.wave: `min_chars` = 0: at least 1",
            r#"moderation.wave: `suspect_delay` = "500ms": at least one second"#,
        ] {
            assert!(all.contains(expected), "{expected} not in:\n{all}");
        }
        assert!(!all.contains("hold"), "a wave may hold: {all}");
        assert_eq!(problems.len(), 6, "{all}");

        let mut problems = Vec::new();
        let raw = RawModeration {
            wave: Some(RawWave {
                window: Some("0s".into()),
                groups: Some(0),
                senders: Some(0),
                repeats: Some(0),
                action: Some("mute".into()),
                suspect_delay: Some("5m".into()),
                ..Default::default()
            }),
            hold_max: Some("5m".into()),
            ..Default::default()
        };
        moderation(&raw, &accounts(), Path::new(""), &mut problems);
        let all = problems.join("\n");
        for expected in [
            r#"moderation.wave: `window` = "0s": at least one second"#,
            "moderation.wave: `groups`, `senders` and `repeats` are all 0: nothing would ever be a wave",
            r#"moderation.wave: `action` = "mute": one of "drop", "hold""#,
            r#"moderation.wave: `suspect_delay` = "5m": shorter than `moderation.hold_max` (5m)"#,
        ] {
            assert!(all.contains(expected), "{expected} not in:\n{all}");
        }
        assert_eq!(problems.len(), 4, "{all}");

        let mut problems = Vec::new();
        let raw = RawModeration {
            wave: Some(RawWave {
                window: Some("2days".into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        moderation(&raw, &accounts(), Path::new(""), &mut problems);
        assert_eq!(
            problems,
            vec![r#"moderation.wave: `window` = "2days": at most 24h (a wave lasts until a whole window passes without a copy)"#.to_owned()]
        );
    }

    #[test]
    fn on_flood_of_an_account_beats_its_platforms_and_a_bad_one_is_named() {
        let text = r#"
            [accounts.qq]
            platform = "qq"
            url = "ws://127.0.0.1:3001"
            [accounts.wx]
            platform = "wechat"
            url = "ws://127.0.0.1:3002"
            [accounts.wx2]
            platform = "wechat"
            url = "ws://127.0.0.1:3003"
            [[links]]
            name = "fans"
            groups = ["qq:1", "wx:a@chatroom", "wx2:b@chatroom"]
            [moderation.flood]
            per_sender = "5/10s"
            [filters.wechat]
            on_flood = "drop"
        "#;
        let config = super::super::tests::load(text, &[]).expect("valid");
        let on_flood =
            |platform, account| config.filters.effective(platform, account, &[]).on_flood;
        use qunbridge_connectors::Platform;
        assert_eq!(
            on_flood(Platform::Wechat, "wx"),
            Some(ModerationAction::Drop)
        );
        assert_eq!(on_flood(Platform::Qq, "qq"), None, "the flood's own action");
        let flood = config.moderation.flood.expect("flood on");
        assert_eq!(flood.burst, 5, "burst defaults to the rate's count");

        // An account's own setting comes before its platform's.
        let mut filters = config.filters.clone();
        filters
            .on_flood_accounts
            .insert("wx2".into(), ModerationAction::Hold);
        assert_eq!(
            filters.effective(Platform::Wechat, "wx2", &[]).on_flood,
            Some(ModerationAction::Hold)
        );
        assert_eq!(
            filters.effective(Platform::Wechat, "wx", &[]).on_flood,
            Some(ModerationAction::Drop)
        );

        let bad = format!(
            "{text}\n[filters.wx2]\non_flood = \"mute\"\n[filters.qq]\non_flood = \"hold\"\n"
        );
        let error = super::super::tests::load(&bad, &[])
            .expect_err("invalid")
            .to_string();
        assert!(
            error.contains(r#"filters "wx2": `on_flood` = "mute": one of"#),
            "{error}"
        );
        assert!(
            !error.contains(r#"filters "qq""#),
            "holding a flood is allowed: {error}"
        );
    }
}

#[cfg(test)]
mod list_tests {
    use std::collections::HashMap;

    use qunbridge_connectors::Platform;

    use super::super::{Config, ConfigError};
    use crate::policy::{Action, Matcher};

    /// QQ and WeChat accounts linked, then `rest`; `files` are written next to the config
    /// file (relative paths).
    fn load_with_files(rest: &str, files: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().expect("tempdir");
        for (name, contents) in files {
            let path = dir.path().join(name);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).expect("mkdir");
            }
            std::fs::write(path, contents).expect("write list");
        }
        let text = format!(
            r#"
            [accounts.qq]
            platform = "qq"
            url = "ws://127.0.0.1:3001"
            [accounts.wx]
            platform = "wechat"
            url = "ws://127.0.0.1:3002"
            {rest}
            "#
        );
        let path = dir.path().join("q.toml");
        std::fs::write(&path, text).expect("write config");
        Config::from_file(&path, &HashMap::<&str, &str>::new())
    }

    #[test]
    fn lists_compile_with_files_next_to_the_config_and_words_rules_name_them() {
        let config = load_with_files(
            r#"
            [[links]]
            name = "fans"
            groups = ["qq:1", "wx:a@chatroom"]
            filters = { rules = [{ match = "words", list = "contact", action = "drop" }] }

            [moderation.lists.ads]
            words = ["兼职刷单"]
            files = ["lists/scams.txt"]
            allow = ["兼职刷单群规"]

            [moderation.lists.contact]
            patterns = ['QQ[:：]\s*\d{5,11}']
            normalize = []

            [filters.wechat]
            rules = [{ match = "words", list = "ads", action = "drop" }]

            [filters.qq]
            rules = [{ match = "words", list = "ads", action = "mask" }]
            "#,
            &[("lists/scams.txt", "# example\n日结\nre:刷单\\d+\n")],
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let ads = config.moderation.lists.get("ads").expect("ads compiled");
        assert_eq!(
            ads.len(),
            3,
            "one word inline, a word and a regex in the file"
        );
        assert!(ads.is_hit("今天兼 职@刷单"));
        assert!(ads.is_hit("刷单123"));
        assert!(
            !ads.is_hit("请看兼职刷单群规"),
            "the allow entry excuses it"
        );
        let contact = config.moderation.lists.get("contact").expect("contact");
        assert!(contact.is_hit("QQ: 123456"));
        assert!(!contact.is_hit("qq: 123456"), "normalize = [] keeps case");

        let link_rules = &config.links[0].filters;
        let to_wechat = config.filters.effective(Platform::Wechat, "wx", link_rules);
        let first = &to_wechat.rules[0];
        assert!(matches!(&first.matcher, Matcher::Words(list) if list.name() == "contact"));
        assert_eq!(
            first.to_string(),
            "words \"contact\" (1 entry) -> drop (link \"fans\")"
        );
        assert_eq!(
            to_wechat.rules[1].to_string(),
            "words \"ads\" (3 entries) -> drop (platform wechat)"
        );
        let to_qq = config.filters.effective(Platform::Qq, "qq", &[]);
        assert_eq!(to_qq.rules[0].action, Action::Mask);
        assert!(to_qq.has_words());
        assert!(!config
            .filters
            .effective(Platform::Dingtalk, "ding", &[])
            .has_words());
    }

    #[test]
    fn every_list_and_word_rule_problem_is_reported_at_once() {
        let error = load_with_files(
            r#"
            [[links]]
            name = "fans"
            groups = ["qq:1", "wx:a@chatroom"]
            filters = { rules = [{ match = "words", list = "nope", action = "drop" }] }

            [moderation.lists.ads]
            words = ["兼职", "!!!"]
            patterns = ["(unclosed"]
            files = ["ads.txt", "missing.txt"]
            normalize = ["width", "case", "symbols", "accents"]

            [moderation.lists.flood]
            words = ["x"]

            [moderation.lists.empty]

            [filters.wechat]
            rules = [
              { match = "words", list = "ads", action = "drop" },
              { match = "words", list = "unknown", action = "mask" },
              { match = "words", list = "flood", action = "mask", with = "**" },
              { match = "words", list = "flood", action = "hold", with = "x" },
              { match = "words", list = "flood", action = "replace", with = "x" },
              { match = "words", action = "drop" },
              { match = "url", action = "mask" },
              { match = "regex", pattern = "x", list = "ads", action = "drop" },
            ]
            "#,
            &[("ads.txt", "# ads\n刷单\nre:QQ(\\d+\n")],
        )
        .expect_err("invalid");
        let all = error.problems.join("\n");
        for expected in [
            r#"link "fans": `rules[0].list` = "nope": no [moderation.lists.nope] is configured (lists: ads, empty, flood)"#,
            r#"moderation.lists "ads": `words` has "!!!": empty once normalized"#,
            r#"moderation.lists "ads": `patterns` has "(unclosed": not a valid regex"#,
            r#"moderation.lists "ads": `files` has "ads.txt": at "#,
            r#"ads.txt:3, "re:QQ(\\d+": not a valid regex"#,
            r#"moderation.lists "ads": `files` has "missing.txt": cannot read "#,
            r#"moderation.lists "ads": `normalize` has "accents": one of "width", "case", "symbols""#,
            r#"moderation.lists "flood": the list name "flood" is reserved"#,
            r#"moderation.lists "empty": the list has no `words`, `patterns` or `files`"#,
            r#"filters "wechat": `rules[1].list` = "unknown": no [moderation.lists.unknown]"#,
            r#"filters "wechat": `rules[2].with` = "**": `mask` puts `*` in place of each matched character and takes no `with`"#,
            r#"filters "wechat": `rules[3].with` = "x": `hold` keeps the whole message for review and takes no `with`"#,
            r#"filters "wechat": `rules[4].action` = "replace": for `match` = "words", one of mask, drop, hold"#,
            r#"filters "wechat": `rules[5].list` is missing for `match` = "words""#,
            r#"filters "wechat": `rules[6].action` = "mask": only for `match` = "words""#,
            r#"filters "wechat": `rules[7].list` = "ads": only for `match` = "words""#,
        ] {
            assert!(all.contains(expected), "{expected}\nnot in:\n{all}");
        }
        // `rules[0]` of `[filters.wechat]` names a list that is configured but broken: its
        // own problems say why, nothing more.
        assert!(!all.contains(r#"filters "wechat": `rules[0]"#), "{all}");
        assert_eq!(error.problems.len(), 15, "{all}");
    }
}

#[cfg(test)]
mod notify_tests {
    use qunbridge_connectors::Platform;

    use super::super::tests::load;
    use crate::policy::moderation::NotifyConfig;

    /// A QQ account and a WeChat account, linked in "fans" (QQ group 1 with a WeChat group,
    /// and a webhook-like `to` member), then `rest`.
    fn with(rest: &str) -> String {
        format!(
            r#"
            [accounts.qq]
            platform = "qq"
            url = "ws://127.0.0.1:3001"
            [accounts.wx]
            platform = "wechat"
            url = "ws://127.0.0.1:3002"
            [[links]]
            name = "fans"
            groups = ["qq:1", "wx:a@chatroom"]
            to = ["qq:2"]
            {rest}
            "#
        )
    }

    #[test]
    fn notify_names_an_account_and_an_unlinked_group_with_ten_lines_a_minute_by_default() {
        let config = load(&with("[moderation]\nnotify = \"qq:99999\"\n"), &[]).expect("valid");
        assert_eq!(
            config.moderation.notify,
            Some(NotifyConfig {
                account: "qq".into(),
                group: "99999".into(),
                platform: Platform::Qq,
                per_minute: 10,
            })
        );
        let config = load(
            &with(
                r#"
                [moderation]
                notify = "wx:admins@chatroom"
                notify_per_minute = 3
                [filters.qq]
                rules = [{ match = "url", action = "defang", notify = true }]
                "#,
            ),
            &[],
        )
        .expect("valid");
        let notify = config.moderation.notify.expect("on");
        assert_eq!(
            (notify.to_string(), notify.platform, notify.per_minute),
            ("wx:admins@chatroom".to_owned(), Platform::Wechat, 3)
        );
        let rules = config.filters.effective(Platform::Qq, "qq", &[]);
        assert!(rules.rules[0].notify);
        assert_eq!(
            rules.rules[0].to_string(),
            "url -> defang, notify (platform qq)"
        );
        assert!(!rules.rules[1].notify, "the defaults never notify");

        let off = load(&with(""), &[]).expect("valid");
        assert_eq!(off.moderation.notify, None);
    }

    #[test]
    fn every_notify_mistake_names_its_key_and_value_and_comes_with_the_others() {
        let problems = |rest: &str| {
            load(&with(rest), &[])
                .expect_err("invalid")
                .problems
                .join("\n")
        };
        let linked = problems(
            r#"
            [moderation]
            notify = "qq:1"
            notify_per_minute = 0
            [moderation.flood]
            per_sender = "often"
            "#,
        );
        for expected in [
            r#"moderation: `notify` = "qq:1": the group is in link "fans" (notifications go to an admins' group in no link"#,
            "moderation: `notify_per_minute` = 0: at least 1",
            r#"moderation.flood: `per_sender` = "often""#,
        ] {
            assert!(linked.contains(expected), "{expected}\nnot in:\n{linked}");
        }
        let to = problems("[moderation]\nnotify = \"qq:2\"\n");
        assert!(
            to.contains(r#"`notify` = "qq:2": the group is in link "fans""#),
            "a `to` member is linked too: {to}"
        );
        let unknown = problems("[moderation]\nnotify = \"nobody:9\"\n");
        assert!(
            unknown.contains(
                r#"moderation: `notify` = "nobody:9": no account "nobody" is configured"#
            ),
            "{unknown}"
        );
        let malformed = problems("[moderation]\nnotify = \"qq\"\n");
        assert!(
            malformed.contains(r#"moderation: `notify` = "qq": must be "<account>:<group>""#),
            "{malformed}"
        );
        let too_many = problems("[moderation]\nnotify = \"qq:9\"\nnotify_per_minute = 5000\n");
        assert!(
            too_many.contains("moderation: `notify_per_minute` = 5000: at most 1000"),
            "{too_many}"
        );
        let nowhere = problems(
            r#"
            [moderation]
            notify_per_minute = 5
            [filters.wechat]
            rules = [{ match = "url", action = "drop", notify = true }]
            "#,
        );
        for expected in [
            "moderation: `notify_per_minute` = 5: `notify` is not set",
            r#"filters "wechat": `rules[0].notify` = true: `moderation.notify` is not set"#,
        ] {
            assert!(nowhere.contains(expected), "{expected}\nnot in:\n{nowhere}");
        }
    }
}
