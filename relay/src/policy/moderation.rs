//! Moderation policy as plain data (issue 17): what a rule does with a message for a
//! destination, the per-sender flood limit, and where admin notifications go. Config builds
//! these values, the core follows them.

use qunbridge_connectors::Platform;

use super::pacing::Rate;

/// Default `moderation.notify_per_minute`.
pub const DEFAULT_NOTIFY_PER_MINUTE: u32 = 10;

/// What a moderation rule does with a message for a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ModerationAction {
    /// Not relayed (counted as dropped with reason `moderated`).
    #[default]
    Drop,
    /// Kept for review (`qunbridge moderation release|drop`).
    Hold,
}

impl ModerationAction {
    /// Reads the config spelling.
    pub fn parse(value: &str) -> Option<ModerationAction> {
        match value {
            "drop" => Some(ModerationAction::Drop),
            "hold" => Some(ModerationAction::Hold),
            _ => None,
        }
    }

    /// The config spelling (also the `action` label of the hit metric).
    pub fn as_str(self) -> &'static str {
        match self {
            ModerationAction::Drop => "drop",
            ModerationAction::Hold => "hold",
        }
    }
}

/// `[moderation.flood]`, resolved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloodConfig {
    /// Messages a sender may say in one group per window.
    pub per_sender: Rate,
    /// Messages allowed back to back before the rate applies.
    pub burst: u32,
    /// What happens to the messages over the limit, for every destination.
    pub action: ModerationAction,
}

impl FloodConfig {
    /// The limit flood control enforces, in the form egress pacing uses (the same rolling
    /// windows).
    pub fn limit(&self) -> super::pacing::Limit {
        super::pacing::Limit {
            rate: self.per_sender,
            burst: self.burst,
        }
    }
}

/// `moderation.notify`, resolved: the group admin notifications are sent to (a group in no
/// link, reached by a configured account) and how many lines a minute it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyConfig {
    /// The account that sends the lines: they are its outbound messages, paced like any.
    pub account: String,
    /// The group the lines go to, in no link (so nothing said there is relayed anywhere).
    pub group: String,
    /// The account's platform: the origin the lines are published with.
    pub platform: Platform,
    /// Lines per rolling minute at most (`notify_per_minute`); the events beyond it are
    /// counted and told in one summary line when the minute is over.
    pub per_minute: u32,
}

impl std::fmt::Display for NotifyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.account, self.group)
    }
}
