//! Rendering: an inbound envelope becomes the outbound message for one destination, with the
//! sender line from the link's template (`{platform}`, `{name}`, `{id}`, `{group}`,
//! `{account}`, `{link}`).

use qunbridge_connectors::media::MediaMode;
use qunbridge_connectors::model::{segments_to_text, ENVELOPE_VERSION};
use qunbridge_connectors::{Envelope, Kind, Outbound, Segment};

use super::route::Destination;

/// Fills a sender template for an envelope.
pub fn sender_line(template: &str, envelope: &Envelope, link: &str) -> String {
    let mut out = String::with_capacity(template.len() + envelope.sender.name.len());
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let Some(close) = after.find('}') else {
            out.push_str(&rest[open..]);
            return out;
        };
        match &after[..close] {
            "platform" => out.push_str(envelope.origin.platform.display_name()),
            "name" => out.push_str(&envelope.sender.name),
            "id" => out.push_str(&envelope.sender.id),
            "group" => out.push_str(
                envelope
                    .origin
                    .group_name
                    .as_deref()
                    .unwrap_or(&envelope.origin.group),
            ),
            "account" => out.push_str(&envelope.origin.account),
            "link" => out.push_str(link),
            // Validation rejects unknown placeholders; keep the text if one slips through.
            other => {
                out.push('{');
                out.push_str(other);
                out.push('}');
            }
        }
        rest = &after[close + 1..];
    }
    out.push_str(rest);
    out
}

/// The outbound message of `envelope` for `destination`. A destination whose pictures are
/// placeholders (`media = "placeholder"`) gets its pictures without their source URL or
/// media reference, so no connector can show or fetch them. In `native` and `link` modes the
/// `text` shows each picture as its placeholder (the connector carries the picture itself);
/// only `passthrough` writes the source URL into it.
pub fn render(envelope: &Envelope, destination: &Destination) -> Outbound {
    let (prefix, text, segments) = match envelope.kind {
        // A membership change is never rendered itself: notices of it are rendered as
        // messages (`core::members`).
        Kind::Recall | Kind::Member => (String::new(), String::new(), Vec::new()),
        Kind::Message => {
            let prefix = sender_line(&destination.format, envelope, &destination.link);
            let mut segments = Vec::with_capacity(envelope.segments.len() + 1);
            if !prefix.is_empty() {
                segments.push(Segment::text(prefix.clone()));
            }
            segments.extend(envelope.segments.iter().cloned());
            if destination.media == MediaMode::Placeholder {
                for segment in &mut segments {
                    if let Segment::Image { url, media, .. } = segment {
                        *url = None;
                        *media = None;
                    }
                }
            }
            let start = usize::from(!prefix.is_empty());
            let text = match destination.media {
                // Pictures go natively or as the placeholder, never as the source URL.
                MediaMode::Native | MediaMode::Link => {
                    let mut text = prefix.clone();
                    for segment in &segments[start..] {
                        match segment.image_placeholder() {
                            Some(placeholder) => text.push_str(placeholder),
                            None => segment.render_text(&mut text),
                        }
                    }
                    text
                }
                MediaMode::Placeholder | MediaMode::Passthrough => {
                    prefix.clone() + &segments_to_text(&segments[start..])
                }
            };
            (prefix, text, segments)
        }
    };
    Outbound {
        v: ENVELOPE_VERSION,
        id: envelope.id.clone(),
        link: destination.link.to_string(),
        group: destination.target.group.clone(),
        kind: envelope.kind,
        origin: envelope.origin.clone(),
        sender: envelope.sender.clone(),
        ts_ms: envelope.ts_ms,
        prefix,
        text,
        segments,
    }
}

/// Applies the destination's link filtering to the rendered text and to every text segment
/// (the prefix included). Returns the name of the rule that dropped the message, if one did.
pub fn filter(outbound: &mut Outbound, destination: &Destination) -> Option<&'static str> {
    if destination.filter.is_empty() || outbound.kind != Kind::Message {
        return None;
    }
    let platform = destination.platform.as_str();
    let count = |hits: &[(&'static str, &'static str)]| {
        for (rule, action) in hits {
            metrics::counter!(
                crate::metrics::LINKS_FILTERED,
                "platform" => platform,
                "rule" => *rule,
                "action" => *action
            )
            .increment(1);
        }
    };
    let filtered = destination.filter.apply(&outbound.text);
    count(&filtered.hits);
    if filtered.dropped.is_some() {
        return filtered.dropped;
    }
    outbound.text = filtered.text;
    for segment in &mut outbound.segments {
        let text = match segment {
            Segment::Text { text } | Segment::Unsupported { hint: text } => text,
            _ => continue,
        };
        let filtered = destination.filter.apply(text);
        if filtered.dropped.is_some() {
            return filtered.dropped;
        }
        *text = filtered.text;
    }
    None
}

#[cfg(test)]
mod tests {
    use qunbridge_connectors::{Origin, Platform, Sender};

    use super::*;
    use crate::policy::GroupRef;

    fn envelope() -> Envelope {
        Envelope {
            v: 1,
            id: "qq-main:1:2".into(),
            origin: Origin {
                platform: Platform::Qq,
                account: "qq-main".into(),
                group: "1".into(),
                message_id: "2".into(),
                group_name: Some("Ops".into()),
            },
            sender: Sender {
                id: "42".into(),
                name: "Ann".into(),
                is_bot: false,
            },
            ts_ms: 5,
            kind: Kind::Message,
            segments: vec![
                Segment::text("hi "),
                Segment::Mention {
                    id: "7".into(),
                    name: Some("Bob".into()),
                },
            ],
            member: None,
        }
    }

    #[test]
    fn template_placeholders_are_filled() {
        let line = sender_line(
            "[{platform}/{group}] {name}({id}) via {account} {link} {x: ",
            &envelope(),
            "fans",
        );
        assert_eq!(line, "[QQ/Ops] Ann(42) via qq-main fans {x: ");
    }

    #[test]
    fn rendered_text_and_segments_carry_the_sender_line() {
        let destination = Destination {
            target: GroupRef {
                account: "hub".into(),
                group: "b".into(),
            },
            platform: Platform::Api,
            link: "fans".into(),
            format: "[{platform}] {name}: ".into(),
            filter: Default::default(),
            media: MediaMode::Passthrough,
            notices: None,
        };
        let out = render(&envelope(), &destination);
        assert_eq!(out.text, "[QQ] Ann: hi @Bob");
        assert_eq!(out.group, "b");
        assert_eq!(out.segments[0], Segment::text("[QQ] Ann: "));
        assert_eq!(out.segments.len(), 3);

        // Pictures: passthrough keeps the source URL; placeholder leaves nothing to fetch.
        let mut with_picture = envelope();
        with_picture.segments.push(Segment::Image {
            sticker: true,
            media: Some(qunbridge_connectors::media::MediaRef::url(
                "https://x.invalid/s.gif",
                qunbridge_connectors::media::MediaKind::Sticker,
            )),
            url: Some("https://x.invalid/s.gif".into()),
            name: None,
            flash: false,
            summary: None,
            size: None,
        });
        let out = render(&with_picture, &destination);
        assert_eq!(out.text, "[QQ] Ann: hi @Bob[图片] https://x.invalid/s.gif");
        let placeholder = Destination {
            media: MediaMode::Placeholder,
            ..destination
        };
        let out = render(&with_picture, &placeholder);
        assert_eq!(out.text, "[QQ] Ann: hi @Bob[动画表情]");
        assert!(matches!(
            out.segments.last(),
            Some(Segment::Image {
                url: None,
                media: None,
                sticker: true,
                ..
            })
        ));
    }
}
