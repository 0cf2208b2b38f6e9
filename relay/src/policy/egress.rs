//! An account's egress policy as plain data: its pacing limits, how long a message may wait,
//! and its length limit. Config builds it (defaults per platform plus `[limits.*]`), egress
//! follows it; it lives here, below both, so neither has to import the other.

use std::collections::BTreeMap;
use std::time::Duration;

use super::pacing::Limit;
use qunbridge_connectors::split::LengthLimit;

/// Default `max_delay`: older messages are dropped instead of sent.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(600);

/// How one account's messages are paced and sized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressPolicy {
    /// Limit per destination group (`None`: unlimited).
    pub per_group: Option<Limit>,
    /// Per-group overrides (`None` inside: unlimited for that group).
    pub groups: BTreeMap<String, Option<Limit>>,
    /// Limit for the whole account.
    pub per_account: Option<Limit>,
    /// Messages older than this (since the platform said them) are dropped.
    pub max_delay: Duration,
    /// Longest message and most parts (`None`: no limit).
    pub length: Option<LengthLimit>,
}

impl EgressPolicy {
    /// No pacing and no length limit (the `api` connector).
    pub fn unlimited() -> EgressPolicy {
        EgressPolicy {
            per_group: None,
            groups: BTreeMap::new(),
            per_account: None,
            max_delay: DEFAULT_MAX_DELAY,
            length: None,
        }
    }

    /// The limit of one destination group.
    pub fn group_limit(&self, group: &str) -> Option<Limit> {
        self.groups.get(group).copied().unwrap_or(self.per_group)
    }
}
