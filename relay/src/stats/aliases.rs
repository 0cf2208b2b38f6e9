//! The names linked groups go by in metrics and reports: the operator's alias
//! (`[stats.aliases]`), else `<account>#<n>` (the account's n-th linked group in link order).
//! Never an id or a hash of one. A group that several bot accounts sit in is one group: it
//! is counted under the account that comes first in the links.

use std::collections::BTreeMap;

use qunbridge_connectors::Platform;

use crate::config::StatsConfig;
use crate::policy::links::Link;

/// What is known of one linked group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkedGroup {
    /// The account that sees it.
    pub account: String,
    /// Its platform id.
    pub group: String,
    /// Its alias.
    pub alias: String,
    /// The first link it is in.
    pub link: String,
    /// The account's platform.
    pub platform: Platform,
}

impl LinkedGroup {
    /// How much of the group's life the bot sees (MEMBERS.md §2.7): `full`, `mentions`
    /// (DingTalk delivers only messages that @-mention the robot) or `relayed_only`
    /// (send-only webhooks: only what was relayed in).
    pub fn coverage(&self) -> &'static str {
        match self.platform {
            Platform::Dingtalk => "mentions",
            Platform::Wecom => "relayed_only",
            _ => "full",
        }
    }
}

/// Every linked group, by (account, group).
#[derive(Debug, Clone, Default)]
pub struct Aliases {
    /// (account, group) → the group, for the first account of each platform group.
    groups: BTreeMap<(String, String), LinkedGroup>,
    /// (account, group) of a further bot account in a group → the first account's key.
    same_as: BTreeMap<(String, String), (String, String)>,
}

impl Aliases {
    /// The aliases of the groups in `links`; `platform_of` tells an account's platform.
    pub fn new(
        stats: &StatsConfig,
        links: &[Link],
        platform_of: impl Fn(&str) -> Option<Platform>,
    ) -> Aliases {
        let mut groups = BTreeMap::new();
        let mut same_as = BTreeMap::new();
        let mut first_seen: std::collections::HashMap<(Platform, String), (String, String)> =
            std::collections::HashMap::new();
        let mut per_account: BTreeMap<String, usize> = BTreeMap::new();
        for link in links {
            for member in link.groups.iter().chain(&link.to) {
                let key = (member.account.clone(), member.group.clone());
                if groups.contains_key(&key) {
                    continue;
                }
                let Some(platform) = platform_of(&member.account) else {
                    continue;
                };
                // `api` groups belong to their account: two accounts' `g` are two groups.
                if platform != Platform::Api {
                    let platform_group = (platform, member.group.clone());
                    if let Some(first) = first_seen.get(&platform_group) {
                        same_as.insert(key, first.clone());
                        continue;
                    }
                    first_seen.insert(platform_group, key.clone());
                }
                let n = per_account.entry(member.account.clone()).or_default();
                *n += 1;
                let alias = stats
                    .aliases
                    .get(&key)
                    .cloned()
                    .unwrap_or_else(|| format!("{}#{n}", member.account));
                groups.insert(
                    key,
                    LinkedGroup {
                        account: member.account.clone(),
                        group: member.group.clone(),
                        alias,
                        link: link.name.clone(),
                        platform,
                    },
                );
            }
        }
        Aliases { groups, same_as }
    }

    /// The linked group `account`'s `group`, if it is one (for a further bot account in a
    /// group, the group as the first account sees it).
    pub fn get(&self, account: &str, group: &str) -> Option<&LinkedGroup> {
        let key = (account.to_owned(), group.to_owned());
        let key = self.same_as.get(&key).unwrap_or(&key);
        self.groups.get(key)
    }

    /// Every linked group, by account then group.
    pub fn all(&self) -> impl Iterator<Item = &LinkedGroup> {
        self.groups.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::links::GroupRef;

    fn member(text: &str) -> GroupRef {
        let (account, group) = text.split_once(':').unwrap_or((text, ""));
        GroupRef {
            account: account.into(),
            group: group.into(),
        }
    }

    #[test]
    fn a_chat_group_of_two_bots_is_one_group_and_api_groups_are_per_account() {
        let link = Link {
            name: "fans".into(),
            groups: ["qq-a:1", "qq-b:1", "src:g", "dst:g"].map(member).to_vec(),
            to: Vec::new(),
            format: String::new(),
            filters: Vec::new(),
        };
        let aliases = Aliases::new(&StatsConfig::default(), &[link], |account| {
            Some(if account.starts_with("qq") {
                Platform::Qq
            } else {
                Platform::Api
            })
        });
        let first = aliases.get("qq-a", "1").map(|g| g.alias.clone());
        assert_eq!(first.as_deref(), Some("qq-a#1"));
        assert_eq!(aliases.get("qq-b", "1").map(|g| g.alias.clone()), first);
        assert_eq!(
            aliases.get("src", "g").map(|g| g.alias.as_str()),
            Some("src#1")
        );
        assert_eq!(
            aliases.get("dst", "g").map(|g| g.alias.as_str()),
            Some("dst#1")
        );
        assert_eq!(aliases.all().count(), 3);
    }
}
