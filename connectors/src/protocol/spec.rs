//! The fixed facts of one protocol ([`ProtocolSpec`]), a leaf of its own so that each
//! protocol's `settings.rs` can declare its `SPEC` without using the protocol list that
//! names it.

use crate::model::Platform;

/// The fixed facts of one protocol, declared as a `SPEC` constant beside its connector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProtocolSpec {
    /// The value of `protocol = "…"` in an account table (unique per platform, not globally:
    /// DingTalk and WeCom both have a `webhook`).
    pub name: &'static str,
    /// What it is, in one line, for listings and docs.
    pub description: &'static str,
    /// The platforms an account of this protocol may be on.
    pub platforms: &'static [Platform],
    /// Account keys (besides `platform` and `protocol`) it reads; any other key that is set
    /// is reported, and the list is shown to the operator in that order.
    pub keys: &'static [&'static str],
    /// A key whose presence selects this protocol when `protocol` is absent (a DingTalk
    /// account with a `webhook` is a webhook account without saying so).
    pub implied_by: Option<&'static str>,
    /// It can only send (a robot webhook): links must list it in `to`, never in `groups`.
    pub send_only: bool,
    /// Accounts of it may share one reverse WebSocket listener, told apart by `self_id`
    /// (only protocols whose implementations send `X-Self-ID`).
    pub shares_reverse_listener: bool,
}
