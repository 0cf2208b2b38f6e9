//! `[moderation]` (issue 17): who is never judged, per-sender flood control, and how long
//! and how many messages may be held for review. Every problem is reported, each naming its
//! key and value.

use std::collections::BTreeSet;
use std::time::Duration;

use super::raw::RawModeration;
use crate::policy::moderation::{FloodConfig, ModerationAction};
use crate::policy::pacing::Rate;

/// Default `hold_max`.
pub const DEFAULT_HOLD_MAX: Duration = Duration::from_secs(3600);
/// Default `hold_cap`.
pub const DEFAULT_HOLD_CAP: usize = 10_000;
/// Why `hold` is refused for now: nothing could release a held message yet, and a message
/// held for nobody is a message lost.
pub const HOLD_NOT_YET: &str =
    "holding for review is not available in this version yet (use \"drop\")";

/// `[moderation]`, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModerationConfig {
    /// `(account, user id)` pairs never judged.
    pub exempt: BTreeSet<(String, String)>,
    /// Per-sender flood control; `None`: off (the default).
    pub flood: Option<FloodConfig>,
    /// Longest a message stays held.
    pub hold_max: Duration,
    /// Most messages held at once.
    pub hold_cap: usize,
}

impl Default for ModerationConfig {
    fn default() -> ModerationConfig {
        ModerationConfig {
            exempt: BTreeSet::new(),
            flood: None,
            hold_max: DEFAULT_HOLD_MAX,
            hold_cap: DEFAULT_HOLD_CAP,
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
/// ids (an exemption must name one).
pub fn moderation(
    raw: &RawModeration,
    accounts: &BTreeSet<&str>,
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
    config
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
            Some(ModerationAction::Hold) => {
                problems.push(format!(
                    "moderation.flood: `action` = {value:?}: {HOLD_NOT_YET}"
                ));
                ModerationAction::Drop
            }
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

#[cfg(test)]
mod tests {
    use super::super::raw::RawFlood;
    use super::*;

    fn accounts() -> BTreeSet<&'static str> {
        ["qq-main", "wx"].into_iter().collect()
    }

    #[test]
    fn defaults_are_off_with_an_hour_and_ten_thousand_held() {
        let mut problems = Vec::new();
        let config = moderation(&RawModeration::default(), &accounts(), &mut problems);
        assert!(problems.is_empty());
        assert_eq!(config, ModerationConfig::default());
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
        let config = moderation(&raw, &accounts(), &mut problems);
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
        };
        let mut problems = Vec::new();
        let config = moderation(&raw, &accounts(), &mut problems);
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
            error.contains(
                r#"filters "qq": `on_flood` = "hold": holding for review is not available"#
            ),
            "{error}"
        );
    }
}
