//! Routing: which destinations a message from one group goes to, precomputed from the links.
//! A message never goes back to the group it came from (the same account and group, or the
//! same group of the same platform reached through another account), a `to` member receives
//! but never sends, and a destination reached through several links gets the message once
//! (the first link in the file decides its format).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use qunbridge_connectors::media::MediaMode;
use qunbridge_connectors::Platform;

use crate::policy::{FilterRules, GroupRef, Link, Rule};

/// Which notices a destination's link sends, and how they read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoticePolicy {
    /// Joins are announced.
    pub joins: bool,
    /// Leaves are announced too.
    pub leaves: bool,
    /// Join template (`{platform} {name} {link}`).
    pub join_format: Arc<str>,
    /// Leave template.
    pub leave_format: Arc<str>,
}

/// One place a message goes.
#[derive(Debug, Clone)]
pub struct Destination {
    /// Account and group to send to.
    pub target: GroupRef,
    /// Platform of the destination account (decides rendering rules downstream).
    pub platform: Platform,
    /// Name of the link that routes there.
    pub link: Arc<str>,
    /// That link's sender template.
    pub format: Arc<str>,
    /// Link filtering for this destination (link, account, platform rules and defaults).
    pub filter: Arc<FilterRules>,
    /// How pictures reach the destination's account (its `media`, else `[media] mode`).
    pub media: MediaMode,
    /// Which join/leave notices the link sends there (`None`: none).
    pub notices: Option<Arc<NoticePolicy>>,
}

/// The routing table in force, swapped whole on reload.
#[derive(Debug, Clone)]
pub struct SharedRoutes {
    /// The current table.
    current: Arc<std::sync::RwLock<Arc<Routes>>>,
}

impl SharedRoutes {
    /// Routes in force from now on.
    pub fn new(routes: Routes) -> SharedRoutes {
        SharedRoutes {
            current: Arc::new(std::sync::RwLock::new(Arc::new(routes))),
        }
    }

    /// The table in force.
    pub fn current(&self) -> Arc<Routes> {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Puts a new table in force; messages already being routed finish with the old one.
    pub fn replace(&self, routes: Routes) {
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(routes);
    }
}

/// The routing table.
#[derive(Debug, Default)]
pub struct Routes {
    /// Origin group → destinations, in link and member order.
    table: HashMap<GroupRef, Vec<Destination>>,
}

impl Routes {
    /// Builds the table from validated links. `platform_of` names an account's platform
    /// (`None`: no such account, its members are skipped); `filter_rules` gives the ordered
    /// filter rules of a destination (platform, account) after a link's own rules;
    /// `media_of` how pictures reach an account. Routing takes these as plain data and
    /// functions so the core never depends on the config.
    pub fn new(
        links: &[Link],
        platform_of: impl Fn(&str) -> Option<Platform>,
        filter_rules: impl Fn(Platform, &str, &[Rule]) -> FilterRules,
        media_of: impl Fn(&str) -> MediaMode,
        notices_of: impl Fn(&str) -> Option<NoticePolicy>,
    ) -> Routes {
        let mut table: HashMap<GroupRef, Vec<Destination>> = HashMap::new();
        for link in links {
            let name: Arc<str> = link.name.as_str().into();
            let notices = notices_of(&link.name).map(Arc::new);
            let format: Arc<str> = link.format.as_str().into();
            for origin in &link.groups {
                let Some(origin_platform) = platform_of(&origin.account) else {
                    continue;
                };
                let list = table.entry(origin.clone()).or_default();
                let mut present: HashSet<GroupRef> =
                    list.iter().map(|d| d.target.clone()).collect();
                // One chat group reached by two bot accounts gets one copy, through the first
                // account listed (`api` groups are per account, not shared).
                let mut chats: HashSet<(Platform, String)> = list
                    .iter()
                    .filter(|d| d.platform != Platform::Api)
                    .map(|d| (d.platform, d.target.group.clone()))
                    .collect();
                for member in link.groups.iter().chain(&link.to) {
                    let Some(platform) = platform_of(&member.account) else {
                        continue;
                    };
                    let same_group = member == origin
                        || (platform == origin_platform
                            && platform != Platform::Api
                            && member.group == origin.group);
                    if same_group || !present.insert(member.clone()) {
                        continue;
                    }
                    if platform != Platform::Api && !chats.insert((platform, member.group.clone()))
                    {
                        continue;
                    }
                    let filter = filter_rules(platform, &member.account, &link.filters);
                    list.push(Destination {
                        target: member.clone(),
                        platform,
                        link: name.clone(),
                        format: format.clone(),
                        filter: Arc::new(filter),
                        media: media_of(&member.account),
                        notices: notices.clone(),
                    });
                }
            }
        }
        Routes { table }
    }

    /// Destinations of a message said in `account:group`; empty when no link has the group.
    pub fn destinations(&self, account: &str, group: &str) -> &[Destination] {
        // A borrowed lookup would need a key type of its own; GroupRef is small.
        self.table
            .get(&GroupRef {
                account: account.to_owned(),
                group: group.to_owned(),
            })
            .map_or(&[], Vec::as_slice)
    }

    /// Every (origin, destinations) pair, sorted, for `qunbridge check`.
    pub fn all(&self) -> Vec<(&GroupRef, &[Destination])> {
        let mut all: Vec<_> = self
            .table
            .iter()
            .map(|(origin, dests)| (origin, dests.as_slice()))
            .collect();
        all.sort_by(|a, b| a.0.cmp(b.0));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn targets(routes: &Routes, account: &str, group: &str) -> Vec<String> {
        routes
            .destinations(account, group)
            .iter()
            .map(|d| format!("{}@{}", d.target, d.link))
            .collect()
    }

    fn members(list: &[&str]) -> Vec<GroupRef> {
        list.iter()
            .map(|member| {
                let (account, group) = member.split_once(':').expect("account:group");
                GroupRef {
                    account: account.into(),
                    group: group.into(),
                }
            })
            .collect()
    }

    fn link(name: &str, groups: &[&str], to: &[&str]) -> Link {
        Link {
            name: name.into(),
            groups: members(groups),
            to: members(to),
            format: "{sender}: ".into(),
            filters: Vec::new(),
        }
    }

    #[test]
    fn never_back_to_the_origin_receivers_never_send_and_each_destination_once() {
        let links = [
            link("one", &["hub:a", "hub:b"], &["ops:log"]),
            link("two", &["hub:a", "ops:c"], &["ops:log"]),
        ];
        let routes = Routes::new(
            &links,
            |account| ["hub", "ops"].contains(&account).then_some(Platform::Api),
            |_, _, _| FilterRules::default(),
            |_| MediaMode::Passthrough,
            |_| None,
        );
        assert_eq!(
            targets(&routes, "hub", "a"),
            ["hub:b@one", "ops:log@one", "ops:c@two"]
        );
        assert_eq!(targets(&routes, "hub", "b"), ["hub:a@one", "ops:log@one"]);
        assert_eq!(targets(&routes, "ops", "c"), ["hub:a@two", "ops:log@two"]);
        assert!(
            targets(&routes, "ops", "log").is_empty(),
            "`to` members never send"
        );
        assert!(targets(&routes, "hub", "zzz").is_empty());
    }

    #[test]
    fn one_chat_group_reached_by_two_bots_gets_one_copy_and_never_its_own_message() {
        let links = [link("fans", &["qq1:100", "qq2:100", "wx:w"], &[])];
        let routes = Routes::new(
            &links,
            |account| match account {
                "qq1" | "qq2" => Some(Platform::Qq),
                "wx" => Some(Platform::Wechat),
                _ => None,
            },
            |_, _, _| FilterRules::default(),
            |_| MediaMode::Passthrough,
            |_| None,
        );
        assert_eq!(targets(&routes, "wx", "w"), ["qq1:100@fans"]);
        assert_eq!(targets(&routes, "qq2", "100"), ["wx:w@fans"]);
    }
}
