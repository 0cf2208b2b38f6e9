//! Coalescing: while a destination waits (for its pacer or a platform pause), the messages
//! queued behind the one at the front are merged into its send, each keeping its sender line,
//! as long as the merged text fits the destination's length limit. A recall or a member event
//! is never merged, and merging stops at it so order is kept. Pictures are kept: the merged
//! texts become one text (each without its pictures), and the pictures follow it in order,
//! as segments of the merged message (the connector sends them the way its platform takes
//! pictures), at most [`MAX_PICTURES`]; the rest are named by `[另有 N 张图片]`.

use std::borrow::Cow;

use qunbridge_connectors::split::measure;
use qunbridge_connectors::{Kind, Outbound, Segment};
use tracing::debug;

use crate::metrics::MESSAGES_COALESCED;
use crate::policy::LengthLimit;

/// Between merged messages: each starts on a line of its own.
const SEPARATOR: &str = "\n";
/// Most pictures one merged (or split) send carries; QQ takes about this many in one
/// message, and each is a send of its own on WeChat, DingTalk and WeCom.
pub(crate) const MAX_PICTURES: usize = 9;

/// The picture segments of `outbound` that a destination may carry (a flash picture never
/// goes, and one without a URL or media reference cannot).
pub(crate) fn pictures(outbound: &Outbound) -> impl Iterator<Item = &Segment> {
    outbound
        .segments
        .iter()
        .filter(|segment| is_carried_picture(segment))
}

/// The text of `outbound` without its pictures, for a send whose pictures follow its text:
/// its `text` when it has none (the common case), else its segments rendered without them.
pub(crate) fn text_without_pictures(outbound: &Outbound) -> Cow<'_, str> {
    if pictures(outbound).next().is_none() {
        return Cow::Borrowed(&outbound.text);
    }
    let mut text = String::with_capacity(outbound.text.len());
    for segment in &outbound.segments {
        if is_carried_picture(segment) {
            continue;
        }
        segment.render_text(&mut text);
    }
    Cow::Owned(text)
}

/// True for a picture segment a destination may carry (see [`pictures`]).
fn is_carried_picture(segment: &Segment) -> bool {
    matches!(
        segment,
        Segment::Image { flash: false, url, media, .. } if url.is_some() || media.is_some()
    )
}

/// A send of `text` followed by `pictures` (at most [`MAX_PICTURES`], the rest named), made
/// from `outbound` (for its origin, sender and link).
pub(crate) fn with_pictures(
    outbound: &Outbound,
    mut text: String,
    pictures: Vec<Segment>,
) -> Outbound {
    let excess = pictures.len().saturating_sub(MAX_PICTURES);
    if excess > 0 {
        text.push_str(&format!(" [另有 {excess} 张图片]"));
    }
    let mut segments = Vec::with_capacity(1 + pictures.len().min(MAX_PICTURES));
    segments.push(Segment::Text { text: text.clone() });
    let mut full_text = text;
    for picture in pictures.into_iter().take(MAX_PICTURES) {
        full_text.push_str(picture.image_placeholder().unwrap_or("[图片]"));
        segments.push(picture);
    }
    Outbound {
        prefix: String::new(),
        segments,
        text: full_text,
        ..outbound.clone()
    }
}

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
        let next_length = measure(&text_without_pictures(next), limit.unit);
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

    #[test]
    fn pictures_leave_the_text_and_follow_it_up_to_the_most_one_send_carries() {
        let mut with_picture = message(Kind::Message, "ignored");
        with_picture.segments = vec![
            Segment::text("[QQ] Ann: look"),
            Segment::image(Some("https://93.184.215.14/a.png".into()), None),
            Segment::image(None, None),
        ];
        // The picture without a source stays its placeholder in the text.
        assert_eq!(text_without_pictures(&with_picture), "[QQ] Ann: look[图片]");
        assert_eq!(pictures(&with_picture).count(), 1);
        let many = (0..MAX_PICTURES + 2)
            .map(|n| Segment::image(Some(format!("https://93.184.215.14/{n}.png")), None))
            .collect();
        let merged = with_pictures(&with_picture, "a\nb".into(), many);
        assert_eq!(merged.segments.len(), 1 + MAX_PICTURES);
        assert_eq!(merged.segments[0], Segment::text("a\nb [另有 2 张图片]"));
    }
}
