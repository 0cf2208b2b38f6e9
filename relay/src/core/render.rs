//! Rendering: an inbound envelope becomes the outbound message for one destination, with the
//! sender line from the link's template (`{platform}`, `{name}`, `{id}`, `{group}`,
//! `{account}`, `{link}`), and then the destination's filter rules act on the copy (word
//! rules on what the member wrote and, before rendering, on their name).

use std::borrow::Cow;

use qunbridge_connectors::media::MediaMode;
use qunbridge_connectors::model::{segments_to_text, ENVELOPE_VERSION};
use qunbridge_connectors::{Envelope, Kind, Outbound, Segment};

use super::filter::{Dropped, Filtered, NotifyHit};
use super::route::Destination;
use crate::policy::NAME_REPLACEMENT;

/// The `action` label of a word-list hit in a sender's name (the name is shown as
/// [`NAME_REPLACEMENT`]).
pub const RENAME: &str = "rename";

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

/// Applies the destination's filter rules to the rendered text and to every text segment
/// (the sender line included). Word rules take part when `words` is true (a member message
/// moderation judges) and then only on what the member wrote: the sender line's name is
/// judged before rendering ([`moderate_name`]). Hits are counted (link rules in
/// `qunbridge_links_filtered_total`, word rules in `qunbridge_moderation_hits_total`).
/// Returns the rule that dropped the message, if one did.
pub fn filter(outbound: &mut Outbound, destination: &Destination, words: bool) -> Option<Dropped> {
    filter_noting(outbound, destination, words).dropped
}

/// What the filter rules did to one destination's copy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilterOutcome {
    /// The rule that dropped the message, if one did.
    pub dropped: Option<Dropped>,
    /// What rules with `notify = true` did to it, each (rule, action) once: for a dropped
    /// message only the drop, and only when the rule that dropped it notifies.
    pub notify: Vec<NotifyHit>,
}

impl FilterOutcome {
    /// The outcome of a copy filtering stopped at: `dropped` with what notifies of it.
    fn ended(dropped: Option<Dropped>, mut notify: Vec<NotifyHit>) -> FilterOutcome {
        if dropped.is_some() {
            notify.retain(|hit| hit.action == "drop");
            notify.truncate(1);
        }
        let mut seen = Vec::with_capacity(notify.len());
        notify.retain(|hit| {
            let first = !seen.contains(hit);
            if first {
                seen.push(hit.clone());
            }
            first
        });
        FilterOutcome { dropped, notify }
    }
}

/// [`filter`], also telling what rules with `notify = true` did (for the admins' group).
pub fn filter_noting(
    outbound: &mut Outbound,
    destination: &Destination,
    words: bool,
) -> FilterOutcome {
    let rules = &destination.filter;
    if rules.is_empty() || outbound.kind != Kind::Message {
        return FilterOutcome::default();
    }
    let words = words && rules.has_words();
    let platform = destination.platform.as_str();
    let count = |filtered: &Filtered| {
        for (rule, action) in &filtered.hits {
            metrics::counter!(
                crate::metrics::LINKS_FILTERED,
                "platform" => platform,
                "rule" => *rule,
                "action" => *action
            )
            .increment(1);
        }
        count_word_hits(&filtered.word_hits, filtered.dropped.as_ref(), platform);
    };
    let prefix = outbound.prefix.as_str();
    let body = outbound
        .text
        .strip_prefix(prefix)
        .filter(|_| words && !prefix.is_empty());
    // What the member wrote, filtered (judged by word rules or not) and left in one piece:
    // a text segment holding the same text again is given the same result without a second
    // search.
    let same_again: (&str, bool);
    let filtered = match body {
        // The sender line and what the member wrote, each with its own rules.
        Some(body) => {
            same_again = (body, true);
            let mut line = rules.apply_with(prefix, false);
            let body = rules.apply_with(body, true);
            line.text.push_str(&body.text);
            line.dropped = line.dropped.or(body.dropped);
            line.hits.extend(body.hits);
            line.word_hits.extend(body.word_hits);
            line.notify.extend(body.notify);
            line
        }
        None => {
            same_again = (outbound.text.as_str(), words);
            rules.apply_with(&outbound.text, words)
        }
    };
    count(&filtered);
    let same_again = (filtered.hits.is_empty() && filtered.word_hits.is_empty())
        .then(|| (same_again.0.to_owned(), same_again.1));
    // The text's hits are the ones told (the segments hold the same text again).
    let mut notify = filtered.notify;
    if filtered.dropped.is_some() {
        return FilterOutcome::ended(filtered.dropped, notify);
    }
    outbound.text = filtered.text;
    let sender_line = usize::from(!outbound.prefix.is_empty());
    for (index, segment) in outbound.segments.iter_mut().enumerate() {
        let text = match segment {
            Segment::Text { text } | Segment::Unsupported { hint: text } => text,
            _ => continue,
        };
        let judged = words && index >= sender_line;
        if same_again
            .as_ref()
            .is_some_and(|(same, was_judged)| *was_judged == judged && same == text)
        {
            continue;
        }
        let filtered = rules.apply_with(text, judged);
        if filtered.dropped.is_some() {
            return FilterOutcome::ended(filtered.dropped, filtered.notify);
        }
        *text = filtered.text;
    }
    if words {
        // A word split across segments (by a face or a mention) is judged as one.
        let mut parts: Vec<&mut String> = outbound
            .segments
            .iter_mut()
            .skip(sender_line)
            .filter_map(|segment| match segment {
                Segment::Text { text } => Some(text),
                _ => None,
            })
            .collect();
        let across = rules.judge_across(&mut parts);
        count_word_hits(&across.word_hits, across.dropped.as_ref(), platform);
        notify.extend(across.notify);
        if across.dropped.is_some() {
            return FilterOutcome::ended(across.dropped, notify);
        }
    }
    FilterOutcome::ended(None, notify)
}

/// Counts word-list hits at a destination platform (`rule` = the list's name). A message a
/// word rule dropped counts once, as that rule's drop (like a flood drop, one per
/// destination), however many matches it had; a message a link rule dropped counts no mask.
fn count_word_hits(
    hits: &[(String, &'static str)],
    dropped: Option<&Dropped>,
    platform: &'static str,
) {
    match dropped {
        Some(Dropped::Words(list)) => {
            metrics::counter!(
                crate::metrics::MODERATION_HITS,
                "rule" => list.clone(),
                "action" => "drop",
                "platform" => platform
            )
            .increment(1);
            return;
        }
        // A link rule's drop counts no mask; a hold is counted by the core once it knows
        // whether the entry was admitted (a full held table makes it a drop).
        Some(Dropped::Link(_) | Dropped::Held(_)) => return,
        None => {}
    }
    for (list, action) in hits {
        metrics::counter!(
            crate::metrics::MODERATION_HITS,
            "rule" => list.clone(),
            "action" => *action,
            "platform" => platform
        )
        .increment(1);
    }
}

/// Judges the sender's display name with the destination's word rules when `words` is true
/// (a member message moderation judges): a name a word list hits is shown as
/// [`NAME_REPLACEMENT`] in this destination's copy. Returns the envelope to render from
/// (a copy only when the name changes) and the list that hit it, counted as a `rename` hit.
pub fn moderate_name<'a>(
    envelope: &'a Envelope,
    destination: &Destination,
    words: bool,
) -> (Cow<'a, Envelope>, Option<String>) {
    if !words || !destination.filter.has_words() {
        return (Cow::Borrowed(envelope), None);
    }
    let Some(list) = destination
        .filter
        .name_hit(&envelope.sender.name)
        .and_then(|rule| rule.matcher.word_list())
    else {
        return (Cow::Borrowed(envelope), None);
    };
    let list = list.name().to_owned();
    count_word_hits(
        &[(list.clone(), RENAME)],
        None,
        destination.platform.as_str(),
    );
    let mut renamed = envelope.clone();
    renamed.sender.name = NAME_REPLACEMENT.to_owned();
    (Cow::Owned(renamed), Some(list))
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

    /// A QQ destination whose rules mask the words of `ads` and of `contact`.
    fn masking_destination(format: &str) -> Destination {
        use std::sync::Arc;

        use crate::moderation::lists::{CompiledList, ListSpec};
        use crate::policy::{Action, FilterRules, Matcher, Rule};
        let list = |name: &str, words: &[&str]| {
            Arc::new(
                CompiledList::compile(&ListSpec {
                    name: name.into(),
                    words: words.iter().map(|w| w.to_string()).collect(),
                    ..ListSpec::default()
                })
                .expect("compiles"),
            )
        };
        let rule = |list| Rule {
            matcher: Matcher::Words(list),
            action: Action::Mask,
            source: "test".into(),
            notify: false,
        };
        Destination {
            target: GroupRef {
                account: "qq2".into(),
                group: "2".into(),
            },
            platform: Platform::Qq,
            link: "fans".into(),
            format: format.into(),
            filter: Arc::new(FilterRules {
                rules: vec![
                    rule(list("ads", &["兼职刷单"])),
                    rule(list("contact", &["加V"])),
                ],
                on_flood: None,
            }),
            media: MediaMode::Passthrough,
            notices: None,
        }
    }

    #[test]
    fn word_rules_judge_what_the_member_wrote_and_their_name_not_the_sender_line() {
        let destination = masking_destination("[{group}] {name}: ");
        let mut said = envelope();
        said.origin.group_name = Some("兼职刷单交流群".into());
        said.sender.name = "加V:abc12345".into();
        said.segments = vec![
            Segment::text("今天兼职"),
            Segment::Face {
                id: "178".into(),
                name: Some("[斜眼笑]".into()),
            },
            Segment::text("刷单，日结兼职刷单"),
        ];
        let (source, renamed_by) = moderate_name(&said, &destination, true);
        assert_eq!(renamed_by.as_deref(), Some("contact"));
        assert_eq!(source.sender.name, NAME_REPLACEMENT);
        let mut out = render(&source, &destination);
        assert_eq!(filter(&mut out, &destination, true), None);
        // The group name in the sender line is not the member's writing; the name is hidden.
        assert_eq!(
            out.text,
            "[兼职刷单交流群] 群友: 今天兼职[斜眼笑]刷单，日结****"
        );
        assert_eq!(out.sender.name, "群友");
        assert_eq!(out.segments[0], Segment::text("[兼职刷单交流群] 群友: "));
        // The segments (what OneBot v11 sends): the word split by a face is masked too.
        assert_eq!(out.segments[1], Segment::text("今天**"));
        assert_eq!(out.segments[3], Segment::text("**，日结****"));

        // A bot's message is not judged.
        let (source, renamed_by) = moderate_name(&said, &destination, false);
        assert_eq!(
            (source.sender.name.as_str(), renamed_by),
            ("加V:abc12345", None)
        );
        let mut out = render(&source, &destination);
        assert_eq!(filter(&mut out, &destination, false), None);
        assert!(out.text.ends_with("日结兼职刷单"), "{}", out.text);
    }

    #[test]
    fn without_a_sender_line_the_whole_text_is_judged() {
        let destination = masking_destination("");
        let mut said = envelope();
        said.segments = vec![Segment::text("兼 职 刷 单")];
        let mut out = render(&said, &destination);
        assert_eq!(filter(&mut out, &destination, true), None);
        assert_eq!(out.text, "*******");
        assert_eq!(out.segments, vec![Segment::text("*******")]);
    }

    #[test]
    fn filtering_tells_what_notifying_rules_did_once_each_and_only_the_drop_that_decided() {
        use std::sync::Arc;

        use crate::policy::{Action, Matcher, Rule};
        let mut destination = masking_destination("[{platform}] {name}: ");
        let mut rules = (*destination.filter).clone();
        // `ads` masks and notifies; links are defanged and notify; `contact` masks silently.
        rules.rules[0].notify = true;
        rules.rules.push(Rule {
            matcher: Matcher::Url,
            action: Action::Defang,
            source: "test".into(),
            notify: true,
        });
        destination.filter = Arc::new(rules.clone());
        let hit = |rule: &str, action| NotifyHit {
            rule: rule.into(),
            action,
        };
        let mut said = envelope();
        said.segments = vec![Segment::text(
            "兼职刷单，兼职刷单，加V 看 example.com 和 example.org",
        )];
        let mut out = render(&said, &destination);
        let outcome = filter_noting(&mut out, &destination, true);
        assert_eq!(outcome.dropped, None);
        assert_eq!(
            outcome.notify,
            [hit("ads", "mask"), hit("url", "defang")],
            "one each, however many occurrences; `contact` is silent"
        );

        // A message a notifying rule drops: only the drop is told.
        rules.rules[1].action = Action::Drop;
        rules.rules[1].notify = true;
        destination.filter = Arc::new(rules.clone());
        let mut out = render(&said, &destination);
        let outcome = filter_noting(&mut out, &destination, true);
        assert_eq!(outcome.dropped, Some(Dropped::Words("contact".into())));
        assert_eq!(outcome.notify, [hit("contact", "drop")]);

        // Dropped by a silent rule: nothing is told, though a notifying one masked first.
        rules.rules[1].notify = false;
        destination.filter = Arc::new(rules);
        let mut out = render(&said, &destination);
        let outcome = filter_noting(&mut out, &destination, true);
        assert!(outcome.dropped.is_some());
        assert_eq!(outcome.notify, []);

        // Word rules do not judge a bot's message: only the link rule is told.
        let mut out = render(&said, &destination);
        let outcome = filter_noting(&mut out, &destination, false);
        assert_eq!(outcome.notify, [hit("url", "defang")]);
    }
}
