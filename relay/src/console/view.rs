//! What the console shows of the config in force (links, aliases, each destination as
//! `qunbridge check` describes it) and who may open it, built at start-up and on every
//! reload and kept in [`crate::admin::Health`].

use qunbridge_connectors::Platform;

use super::access::Access;
use crate::config::Config;
use crate::core::route::Routes;
use crate::describe::DestinationLines;
use crate::stats::aliases::Aliases;

/// What the console shows of the config in force, built at start-up and on every reload.
pub struct ConsoleView {
    /// Who may open the console and `/api/v1/*`.
    pub access: Access,
    /// The names linked groups go by (never shown with their ids outside a detail page).
    pub aliases: Aliases,
    /// The links and their members.
    pub links: Vec<LinkView>,
    /// Each destination as `qunbridge check` describes it.
    pub destinations: Vec<DestinationLines>,
}

impl ConsoleView {
    /// The view of `config`, whose routing table is `routes`.
    pub fn of(config: &Config, routes: &Routes) -> ConsoleView {
        let aliases = Aliases::new(&config.stats, &config.links, |account| {
            config.accounts.get(account).map(|a| a.platform)
        });
        let links = LinkView::all(config, &aliases);
        ConsoleView {
            access: Access::of(&config.admin),
            aliases,
            links,
            destinations: crate::describe::destinations(config, routes),
        }
    }

    /// The name a destination goes by on a page: its alias, else `<account> · ?` (a group
    /// in no link, such as the admins' group), never the group's id.
    pub fn alias_of(&self, account: &str, group: &str) -> String {
        match self.aliases.get(account, group) {
            Some(linked) => linked.alias.clone(),
            None => format!("{account} · ?"),
        }
    }
}

/// A link as the page shows it.
#[derive(Debug, Clone)]
pub struct LinkView {
    /// Its name.
    pub name: String,
    /// Its sender template.
    pub format: String,
    /// Its members, those that send and receive first.
    pub members: Vec<MemberView>,
}

/// A member of a link.
#[derive(Debug, Clone)]
pub struct MemberView {
    /// The group's alias.
    pub alias: String,
    /// The account that sees it.
    pub account: String,
    /// The account's platform, when the account is configured.
    pub platform: Option<Platform>,
    /// True for a member in `to` (it only receives).
    pub receive_only: bool,
}

impl LinkView {
    /// The links of `config`.
    pub fn all(config: &Config, aliases: &Aliases) -> Vec<LinkView> {
        config
            .links
            .iter()
            .map(|link| LinkView {
                name: link.name.clone(),
                format: link.format.clone(),
                members: link
                    .groups
                    .iter()
                    .map(|g| (g, false))
                    .chain(link.to.iter().map(|g| (g, true)))
                    .map(|(group, receive_only)| MemberView {
                        alias: aliases
                            .get(&group.account, &group.group)
                            .map_or_else(|| format!("{} · ?", group.account), |g| g.alias.clone()),
                        account: group.account.clone(),
                        platform: config.accounts.get(&group.account).map(|a| a.platform),
                        receive_only,
                    })
                    .collect(),
            })
            .collect()
    }
}
