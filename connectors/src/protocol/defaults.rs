//! The pacing and length limits an account starts from (ARCHITECTURE.md §6), as plain data
//! the relay turns into its egress policy. The platforms' quotas are facts about the
//! platform and its protocol, so they are declared here and beside the connectors rather
//! than in the relay.

use std::time::Duration;

use crate::model::Platform;

/// One pacing limit: `count` sends per `per`, at most `burst` back to back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacingDefault {
    /// Sends per window.
    pub count: u32,
    /// The window.
    pub per: Duration,
    /// Sends allowed back to back.
    pub burst: u32,
}

/// How a platform counts a message's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LengthUnit {
    /// Unicode scalar values (QQ and WeChat count characters).
    Chars,
    /// UTF-8 bytes (DingTalk and WeCom count bytes).
    Bytes,
}

/// The longest message a platform takes in one send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LengthDefault {
    /// The limit, in `unit`s.
    pub max: usize,
    /// What is counted.
    pub unit: LengthUnit,
}

/// The defaults of one account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EgressDefaults {
    /// Pace per destination group (personal accounts look like spam when they post fast).
    pub per_group: Option<PacingDefault>,
    /// Pace of the whole account (the platforms' per-bot quotas).
    pub per_account: Option<PacingDefault>,
    /// Longest message before it is split; `None` for platforms without a limit.
    pub length: Option<LengthDefault>,
}

/// The per-bot quota every robot and personal platform shares: 20 a minute.
pub const TWENTY_A_MINUTE: PacingDefault = PacingDefault {
    count: 20,
    per: Duration::from_secs(60),
    burst: 5,
};

/// Longest QQ group message, in characters.
pub const QQ_MAX_CHARS: usize = 4500;
/// Longest WeChat group message, in characters.
pub const WECHAT_MAX_CHARS: usize = 2000;

impl EgressDefaults {
    /// No pacing and no length limit (the `api` endpoint).
    pub const UNLIMITED: EgressDefaults = EgressDefaults {
        per_group: None,
        per_account: None,
        length: None,
    };

    /// A personal chat account (QQ, WeChat) reached through a OneBot implementation: one
    /// message every 1.5 s per group with a burst of 3, 20 a minute for the account, and the
    /// platform's length in characters.
    pub fn personal_chat(platform: Platform) -> EgressDefaults {
        let max = match platform {
            Platform::Wechat => WECHAT_MAX_CHARS,
            Platform::Qq | Platform::Dingtalk | Platform::Wecom | Platform::Api => QQ_MAX_CHARS,
        };
        EgressDefaults {
            per_group: Some(PacingDefault {
                count: 1,
                per: Duration::from_millis(1500),
                burst: 3,
            }),
            per_account: Some(TWENTY_A_MINUTE),
            length: Some(LengthDefault {
                max,
                unit: LengthUnit::Chars,
            }),
        }
    }
}
