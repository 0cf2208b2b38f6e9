//! Join and leave notices (issue 16): a link with `notices = "joins"` or `"all"` tells its
//! other groups when someone joined (or left) one of its groups, as a message rendered from
//! `stats.join_format` / `stats.leave_format`. A notice never names a user id: a member whose
//! name could not be resolved is 新成员. The bot's own removal, a disbanded group and changes
//! seen only by polling are never announced. Notices then go through the destination's
//! filters and pacing like any message.

use qunbridge_connectors::model::{Change, How, Outbound, Segment, ENVELOPE_VERSION};
use qunbridge_connectors::{Envelope, Kind};

use super::render::sender_line;
use super::route::Destination;

/// The name shown for a member whose name is unknown.
pub const UNKNOWN_MEMBER: &str = "新成员";

/// The notice of a membership envelope for `destination`, when its link announces it.
pub fn notice_for(envelope: &Envelope, destination: &Destination) -> Option<Outbound> {
    let policy = destination.notices.as_ref()?;
    let event = envelope.member.as_ref()?;
    if matches!(event.how, How::KickMe | How::Disband | How::Poll) {
        return None;
    }
    let template = match event.change {
        Change::Join if policy.joins => &policy.join_format,
        Change::Leave if policy.leaves => &policy.leave_format,
        _ => return None,
    };
    let mut named = envelope.clone();
    let name = envelope.sender.name.trim();
    named.sender.name = if name.is_empty() || name == envelope.sender.id {
        UNKNOWN_MEMBER.to_owned()
    } else {
        name.to_owned()
    };
    let text = sender_line(template, &named, &destination.link);
    Some(Outbound {
        v: ENVELOPE_VERSION,
        id: envelope.id.clone(),
        link: destination.link.to_string(),
        group: destination.target.group.clone(),
        kind: Kind::Message,
        origin: envelope.origin.clone(),
        sender: named.sender,
        ts_ms: envelope.ts_ms,
        prefix: String::new(),
        segments: vec![Segment::text(text.clone())],
        text,
    })
}
