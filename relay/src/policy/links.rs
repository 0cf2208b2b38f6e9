//! Links as plain data: which groups relay to which, with the sender template and filter rules
//! of each link. Config reads them from the file, the core routes by them
//! (core `route`); they live here, below both, so neither has to import the other.

use super::filter::Rule;

/// A group of one account: the unit links join.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupRef {
    /// Account id.
    pub account: String,
    /// Platform group id (or a label for webhook accounts).
    pub group: String,
}

impl std::fmt::Display for GroupRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.account, self.group)
    }
}

/// A link: a message in any of `groups` goes to every other member and to `to`.
#[derive(Debug, Clone)]
pub struct Link {
    /// Name for logs and `{link}`.
    pub name: String,
    /// Members that send and receive.
    pub groups: Vec<GroupRef>,
    /// Members that only receive.
    pub to: Vec<GroupRef>,
    /// Sender template.
    pub format: String,
    /// Filter rules of this link, applied before the account's and platform's.
    pub filters: Vec<Rule>,
}
