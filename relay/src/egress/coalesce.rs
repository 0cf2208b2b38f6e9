//! Coalescing: while a destination waits (for its pacer or a platform pause), the messages
//! queued behind the one at the front are merged into its send, each keeping its sender line,
//! as long as the merged text fits the destination's length limit. A recall or a member event
//! is never merged, and merging stops at it so order is kept.

use qunbridge_connectors::split::measure;
use qunbridge_connectors::{Kind, Outbound};
use tracing::debug;

use crate::metrics::MESSAGES_COALESCED;
use crate::policy::LengthLimit;

/// Between merged messages: each starts on a line of its own.
const SEPARATOR: &str = "\n";

/// How many of the messages `queued` behind one of `first_length` (in the limit's unit) can
/// be merged into its send: the longest run of plain messages that still fits `limit`.
pub(crate) fn mergeable<'a>(
    first_length: usize,
    queued: impl Iterator<Item = &'a Outbound>,
    limit: LengthLimit,
) -> usize {
    let separator = measure(SEPARATOR, limit.unit);
    let mut total = first_length;
    let mut count = 0;
    for next in queued {
        if next.kind != Kind::Message {
            break;
        }
        let next_length = measure(&next.text, limit.unit);
        if total + separator + next_length > limit.max {
            break;
        }
        total += separator + next_length;
        count += 1;
    }
    count
}

/// The text of one send carrying several messages, in queue order.
pub(crate) fn merge<'a>(texts: impl Iterator<Item = &'a str>) -> String {
    texts.collect::<Vec<_>>().join(SEPARATOR)
}

/// Logs and counts a send that carries `count` merged messages.
pub(crate) fn count(account: &str, group: &str, count: usize) {
    debug!(message = "Coalesced queued messages.", account = %account, group = %group, count);
    metrics::counter!(MESSAGES_COALESCED, "account" => account.to_owned()).increment(count as u64);
}

#[cfg(test)]
mod tests {
    use qunbridge_connectors::{Origin, Platform, Segment, Sender};

    use super::*;
    use crate::policy::Unit;

    fn message(kind: Kind, text: &str) -> Outbound {
        Outbound {
            v: 1,
            id: "wx:w:1".into(),
            link: "fans".into(),
            group: "g".into(),
            kind,
            origin: Origin {
                platform: Platform::Wechat,
                account: "wx".into(),
                group: "w".into(),
                message_id: "1".into(),
                group_name: None,
            },
            sender: Sender {
                id: "u".into(),
                name: "Ann".into(),
                is_bot: false,
            },
            ts_ms: 0,
            prefix: String::new(),
            text: text.into(),
            segments: vec![Segment::text(text)],
        }
    }

    #[test]
    fn merges_while_the_text_fits_and_stops_at_a_recall() {
        let limit = LengthLimit {
            max: 10,
            unit: Unit::Chars,
            max_parts: 5,
        };
        let queued = [
            message(Kind::Message, "bb"),
            message(Kind::Message, "ccc"),
            message(Kind::Message, "dddd"),
        ];
        // "aa\nbb\nccc" is 9 characters; "dddd" would make 14.
        assert_eq!(mergeable(2, queued.iter(), limit), 2);
        let recall = [message(Kind::Recall, ""), message(Kind::Message, "b")];
        assert_eq!(mergeable(2, recall.iter(), limit), 0);
        assert_eq!(merge(["aa", "bb"].into_iter()), "aa\nbb");
    }
}
