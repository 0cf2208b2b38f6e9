//! What `qunbridge check` prints of each destination (pacing, pictures, word rules,
//! moderation, filters), as lines, so the CLI and the console's Links page show the same
//! words from one piece of code.

use std::collections::BTreeSet;

use qunbridge_connectors::Platform;

use crate::config::{Config, GroupRef};
use crate::core::route::Routes;
use crate::policy::{EgressPolicy, Limit, Unit};

/// One destination as `check` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestinationLines {
    /// Account and group it is sent to.
    pub target: GroupRef,
    /// The destination account's platform.
    pub platform: Platform,
    /// The link that routes there.
    pub link: String,
    /// What is in force there, one line each (`pacing: …`, `pictures: …`, …); a filter
    /// rule's line is indented by two spaces under `filters (first match wins):`.
    pub lines: Vec<String>,
}

/// Every destination of `routes` (the config's routing table), once per (target, link), in
/// route order.
pub fn destinations(config: &Config, routes: &Routes) -> Vec<DestinationLines> {
    let mut shown = BTreeSet::new();
    let mut out = Vec::new();
    for (_, destinations) in routes.all() {
        for destination in destinations {
            if !shown.insert((destination.target.clone(), destination.link.to_string())) {
                continue;
            }
            let mut lines = Vec::new();
            if let Some(account) = config.account(&destination.target.account) {
                lines.push(format!(
                    "pacing: {}",
                    describe_policy(&account.egress, &destination.target.group)
                ));
            }
            lines.push(format!(
                "pictures: {}",
                config.media_mode(&destination.target.account).as_str()
            ));
            let word_rules: Vec<String> = destination
                .filter
                .rules
                .iter()
                .filter_map(|rule| {
                    rule.matcher.word_list().map(|list| {
                        format!(
                            "{} ({}) -> {}{}",
                            list.name(),
                            entries(list.len()),
                            rule.action.name(),
                            if rule.notify { ", notify" } else { "" }
                        )
                    })
                })
                .collect();
            if !word_rules.is_empty() {
                lines.push(format!("word rules: {}", word_rules.join(", ")));
            }
            let moderation = &config.moderation;
            if moderation.flood.is_some() || moderation.wave.is_some() {
                let flood = moderation.flood.as_ref().map_or("off", |flood| {
                    destination.filter.on_flood.unwrap_or(flood.action).as_str()
                });
                let wave = moderation
                    .wave
                    .as_ref()
                    .map_or("off", |wave| wave.action.as_str());
                lines.push(format!("moderation: flood -> {flood}, wave -> {wave}"));
            }
            if destination.filter.rules.is_empty() {
                lines.push("filters: none (links pass as sent)".to_owned());
            } else {
                lines.push("filters (first match wins):".to_owned());
                for (index, rule) in destination.filter.rules.iter().enumerate() {
                    lines.push(format!("  {}. {rule}", index + 1));
                }
            }
            out.push(DestinationLines {
                target: destination.target.clone(),
                platform: destination.platform,
                link: destination.link.to_string(),
                lines,
            });
        }
    }
    out
}

/// "1 entry", "12 entries": the size of a word list.
pub fn entries(count: usize) -> String {
    if count == 1 {
        "1 entry".to_owned()
    } else {
        format!("{count} entries")
    }
}

/// Pacing and length limits of a destination.
pub fn describe_policy(policy: &EgressPolicy, group: &str) -> String {
    let limit = |limit: Option<Limit>| match limit {
        Some(limit) => format!("{} burst {}", limit.rate, limit.burst),
        None => "unlimited".to_owned(),
    };
    let length = match &policy.length {
        Some(length) => format!(
            "at most {} {} a message, {} parts",
            length.max,
            match length.unit {
                Unit::Chars => "characters",
                Unit::Bytes | Unit::JsonStringBytes => "bytes",
            },
            length.max_parts
        ),
        None => "no length limit".to_owned(),
    };
    format!(
        "per group {}, per account {}, {length}, max_delay {}",
        limit(policy.group_limit(group)),
        limit(policy.per_account),
        humantime::format_duration(policy.max_delay)
    )
}
