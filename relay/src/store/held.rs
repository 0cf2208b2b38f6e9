//! Messages held for review (issue 17, moderation): a (message, destination) that a rule
//! held is written to the state store in the same commit as the message's dedup keys, so
//! the inbound can be acknowledged at once (the ordered pipeline never waits for a person),
//! and a crash or restart loses no held message. An operator releases or drops it later by
//! its short id; either takes the entry out in one write.

use qunbridge_connectors::Envelope;
use serde::{Deserialize, Serialize};

/// One message held for one destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldEntry {
    /// Short id an operator types (`qunbridge moderation release <id>`); unique among the
    /// held entries.
    pub id: String,
    /// The destination account the message was held for.
    pub account: String,
    /// The destination group.
    pub group: String,
    /// The link that routes the message there (for the list and notifications).
    pub link: String,
    /// The rule that held it (`flood`, `wave`, `suspect` or a rule or list name): a release
    /// renders the message again without it.
    pub rule: String,
    /// When it was held (ms since the Unix epoch): `moderation.hold_max` counts from here.
    pub held_ms: u64,
    /// The inbound message as the core received it, rendered again on release under the
    /// configuration then in force.
    pub envelope: Envelope,
}

impl HeldEntry {
    /// The entry as stored (JSON).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a stored entry; `None` when the bytes are not one (skipped and logged by the
    /// store that read them).
    pub fn decode(bytes: &[u8]) -> Option<HeldEntry> {
        serde_json::from_slice(bytes).ok()
    }
}

/// Orders held entries as the list shows them: oldest first, then by id.
pub fn oldest_first(entries: &mut [HeldEntry]) {
    entries.sort_by(|a, b| a.held_ms.cmp(&b.held_ms).then_with(|| a.id.cmp(&b.id)));
}
