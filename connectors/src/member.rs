//! Membership changes of a group (ARCHITECTURE.md §3, `kind = "member"`; facts in
//! shared/protocols/MEMBERS.md): who joined or left, how, and the member count when the
//! platform tells it. Connectors publish them as envelopes whose `sender` is the member;
//! the core counts them for group health and never relays them as messages.

use serde::{Deserialize, Serialize};

/// What happened to the group's membership.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Change {
    /// A member came in.
    Join,
    /// A member went out (left, was removed, or the group was disbanded).
    Leave,
    /// No member changed: the platform told the current member count (`member_count`).
    Count,
}

impl Change {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Join => "join",
            Change::Leave => "leave",
            Change::Count => "count",
        }
    }
}

/// How the change came about, as the platform put it. A spelling this version does not know
/// reads as [`How::Unknown`]: it is still counted, under its own bucket.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum How {
    /// An admin approved a request to join (OneBot v11 `approve`).
    Approve,
    /// A member invited them (v11 `invite`, v12 `invite`).
    Invite,
    /// They joined on their own (v12 `join`, DingTalk `chat_add_member` without an operator).
    Join,
    /// They left on their own.
    Leave,
    /// They were removed by someone else.
    Kick,
    /// The bot account itself was removed from the group.
    KickMe,
    /// The group was disbanded (NapCat `disband`, DingTalk `chat_disband`).
    Disband,
    /// Seen by diffing two polls of the member list.
    Poll,
    /// Any spelling not listed above, or none.
    #[default]
    #[serde(other)]
    Unknown,
}

impl How {
    /// Every value, in the order reports list them.
    pub const ALL: [How; 9] = [
        How::Approve,
        How::Invite,
        How::Join,
        How::Leave,
        How::Kick,
        How::KickMe,
        How::Disband,
        How::Poll,
        How::Unknown,
    ];

    /// The wire spelling (also the `how` metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            How::Approve => "approve",
            How::Invite => "invite",
            How::Join => "join",
            How::Leave => "leave",
            How::Kick => "kick",
            How::KickMe => "kick_me",
            How::Disband => "disband",
            How::Poll => "poll",
            How::Unknown => "unknown",
        }
    }

    /// Reads a platform's `sub_type` (OneBot v11/v12 spellings); anything else is `Unknown`.
    pub fn parse(sub_type: &str) -> How {
        How::ALL
            .into_iter()
            .find(|how| how.as_str() == sub_type)
            .unwrap_or(How::Unknown)
    }

    /// True when the change means the bot account is no longer in the group: every relay
    /// into it fails from now on.
    pub fn removes_bot(self) -> bool {
        matches!(self, How::KickMe | How::Disband)
    }
}

/// The membership part of a `kind = "member"` envelope. The member is the envelope's
/// `sender` (id and, when the connector could resolve it, the name the group shows).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberEvent {
    /// Join, leave, or a member count only.
    pub change: Change,
    /// How it came about.
    #[serde(default)]
    pub how: How,
    /// Who made the change (the admin who approved, the member who invited or removed),
    /// when the platform tells it; OneBot implementations often send 0, read as unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<String>,
    /// The group's member count after the change, when the platform tells it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_count: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_how_reads_back_and_an_unknown_spelling_is_its_own_bucket() {
        for how in How::ALL {
            assert_eq!(How::parse(how.as_str()), how);
            let json = serde_json::to_string(&how).expect("encodes");
            assert_eq!(serde_json::from_str::<How>(&json).expect("decodes"), how);
        }
        assert_eq!(How::parse("lift"), How::Unknown);
        assert_eq!(
            serde_json::from_str::<How>("\"promoted\"").expect("decodes"),
            How::Unknown
        );
    }

    #[test]
    fn a_member_event_without_how_reads_as_unknown() {
        let event: MemberEvent = serde_json::from_str(r#"{"change":"leave"}"#).expect("decodes");
        assert_eq!(event.how, How::Unknown);
        assert_eq!(event.change, Change::Leave);
        assert!(How::KickMe.removes_bot() && How::Disband.removes_bot());
        assert!(!How::Kick.removes_bot());
    }
}
