//! Routing: which destinations a message from one group goes to, precomputed from the links.
//! A message never goes back to the group it came from (the same account and group, or the
//! same group of the same platform reached through another account), a `to` member receives
//! but never sends, and a destination reached through several links gets the message once
//! (the first link in the file decides its format).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use qunbridge_connectors::Platform;

use super::filter::FilterRules;
use crate::config::{Config, GroupRef};

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
    /// Builds the table from a validated config.
    pub fn new(config: &Config) -> Routes {
        let platform_of = |account: &str| config.account(account).map(|a| a.platform);
        let mut table: HashMap<GroupRef, Vec<Destination>> = HashMap::new();
        for link in &config.links {
            let name: Arc<str> = link.name.as_str().into();
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
                    let filter = config
                        .filters
                        .effective(platform, &member.account, &link.filters);
                    list.push(Destination {
                        target: member.clone(),
                        platform,
                        link: name.clone(),
                        format: format.clone(),
                        filter: Arc::new(filter),
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
    use crate::config::tests::load;

    fn targets(routes: &Routes, account: &str, group: &str) -> Vec<String> {
        routes
            .destinations(account, group)
            .iter()
            .map(|d| format!("{}@{}", d.target, d.link))
            .collect()
    }

    #[test]
    fn never_back_to_the_origin_receivers_never_send_and_each_destination_once() {
        let config = load(
            r#"
            [accounts.hub]
            platform = "api"
            listen = "127.0.0.1:18081"
            [accounts.ops]
            platform = "api"
            listen = "127.0.0.1:18082"
            [[links]]
            name = "one"
            groups = ["hub:a", "hub:b"]
            to = ["ops:log"]
            [[links]]
            name = "two"
            groups = ["hub:a", "ops:c"]
            to = ["ops:log"]
            "#,
            &[],
        )
        .expect("valid");
        let routes = Routes::new(&config);
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
}
