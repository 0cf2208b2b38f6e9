//! Moderation policy as plain data (issue 17): what a rule does with a message for a
//! destination, and the per-sender flood limit. Config builds these values, the core
//! follows them.

use super::pacing::Rate;

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
