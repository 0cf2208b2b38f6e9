//! OneBot v11 actions: ids in the JSON type implementations expect, rendering an outbound
//! message as an array-format message for `send_group_msg`, and reading a response's
//! outcome the way v11 implementations word it.

use serde_json::{json, Value};

use crate::context::RelatedMessages;
use crate::model::{Outbound, Platform, Segment};

pub use crate::onebot_ws::outcome::Outcome;
use crate::onebot_ws::outcome::{self, Dialect};
#[cfg(test)]
use crate::onebot_ws::Pending;

/// A group or message id in the JSON type implementations expect: a number when it is one
/// (QQ), else a string (WeChat ids such as `…@chatroom`).
pub fn id_value(id: &str) -> Value {
    match id.parse::<i64>() {
        Ok(n) => Value::from(n),
        Err(_) => Value::String(id.to_owned()),
    }
}

/// How v11 implementations word responses: `async` is success too (queued actions), and
/// `wording` (NapCat, Lagrange) explains a failure better than `msg`.
const DIALECT: Dialect = Dialect {
    ok_statuses: &["ok", "async"],
    message_fields: &["wording", "msg", "message"],
};

/// Reads a response object.
pub fn outcome(body: &Value) -> Outcome {
    outcome::read(body, &DIALECT)
}

/// Appends text to a message array, merging with a preceding text segment.
fn push_text(message: &mut Vec<Value>, text: &str) {
    if text.is_empty() {
        return;
    }
    if let Some(last) = message.last_mut() {
        if last["type"] == "text" {
            if let Some(existing) = last["data"]["text"].as_str() {
                let merged = format!("{existing}{text}");
                last["data"]["text"] = Value::String(merged);
                return;
            }
        }
    }
    message.push(json!({ "type": "text", "data": { "text": text } }));
}

/// Whether a rendered message carries its pictures or only their placeholders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pictures<'a> {
    /// The pictures listed (by their index among the message's segments, with the `file`
    /// value to send: `base64://…`, or the source URL in passthrough) go as `image`
    /// segments, stickers with their sticker flag and summary; the others as placeholders.
    Carried(&'a [(usize, String)]),
    /// Every picture becomes its placeholder text (`[图片]`, `[动画表情]`): the resend after
    /// the implementation failed to take a picture, so the text is never lost with it.
    Placeholders,
}

/// Renders an outbound message as a v11 array message for `destination`.
///
/// Mentions become `@name` text (a user id of another group means nothing here, and pinging
/// everyone from a relay is never wanted); pictures go as `pictures` says (a sticker with
/// `sub_type: 1` and its summary, as NapCat shows 动画表情; a flash picture never, only
/// `[闪照]`); QQ
/// faces stay faces between QQ groups; a reply becomes a native reply when the message map
/// knows the destination's copy, else a short quote.
pub fn render_message(
    outbound: &Outbound,
    related: &RelatedMessages,
    destination: Platform,
    pictures: Pictures<'_>,
) -> Vec<Value> {
    let mut message = Vec::new();
    if let Some(target) = &related.reply_to {
        message.push(json!({ "type": "reply", "data": { "id": target } }));
    }
    let has_reply = outbound
        .segments
        .iter()
        .any(|s| matches!(s, Segment::Reply { .. }));
    let quote = related
        .quote
        .as_ref()
        .filter(|_| related.reply_to.is_none() && has_reply);
    let mut prefix_pending = !outbound.prefix.is_empty();
    let carried = match pictures {
        Pictures::Carried(files) => files,
        Pictures::Placeholders => &[],
    };
    for (index, segment) in outbound.segments.iter().enumerate() {
        let file = carried
            .iter()
            .find(|(at, _)| *at == index)
            .map(|(_, file)| file);
        match segment {
            Segment::Text { text } => {
                push_text(&mut message, text);
                if prefix_pending {
                    prefix_pending = false;
                    if let Some(quote) = quote {
                        push_text(&mut message, &format!("「{quote}」\n"));
                    }
                }
            }
            Segment::Mention { id, name } => {
                push_text(
                    &mut message,
                    &format!("@{} ", name.as_deref().unwrap_or(id)),
                );
            }
            Segment::MentionAll => push_text(&mut message, "@全体成员 "),
            Segment::Image {
                sticker,
                flash: false,
                summary,
                ..
            } if file.is_some() => {
                let mut data = json!({ "file": file });
                if *sticker {
                    data["sub_type"] = json!(1);
                    data["summary"] = json!(summary.as_deref().unwrap_or("[动画表情]"));
                }
                message.push(json!({ "type": "image", "data": data }));
            }
            Segment::Image { .. } => push_text(
                &mut message,
                segment.image_placeholder().unwrap_or("[图片]"),
            ),
            Segment::Face { id, name } => {
                if outbound.origin.platform == destination && destination == Platform::Qq {
                    message.push(json!({ "type": "face", "data": { "id": id } }));
                } else {
                    push_text(&mut message, name.as_deref().unwrap_or("[表情]"));
                }
            }
            Segment::Unsupported { hint } => push_text(&mut message, hint),
            Segment::Reply { .. } | Segment::Unknown => {}
        }
    }
    if message.is_empty() || (message.len() == 1 && related.reply_to.is_some()) {
        push_text(&mut message, " ");
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every picture of `outbound` carried by its URL, as passthrough sends it.
    fn source_urls(outbound: &Outbound) -> Vec<(usize, String)> {
        outbound
            .segments
            .iter()
            .enumerate()
            .filter_map(|(index, segment)| match segment {
                Segment::Image { url: Some(url), .. } => Some((index, url.clone())),
                _ => None,
            })
            .collect()
    }
    use crate::model::Kind;

    fn outbound(segments: Vec<Segment>, origin: Platform) -> Outbound {
        Outbound {
            prefix: "[微信] Ann: ".into(),
            segments,
            ..Outbound::sample(Kind::Message, origin, "735021844")
        }
    }

    #[test]
    fn outbound_segments_become_a_v11_array() {
        let out = outbound(
            vec![
                Segment::text("[微信] Ann: "),
                Segment::Reply {
                    message_id: "9".into(),
                },
                Segment::text("look "),
                Segment::Mention {
                    id: "wxid_1".into(),
                    name: Some("Bob".into()),
                },
                Segment::image(Some("https://x/y.png".into()), None),
                Segment::Face {
                    id: "178".into(),
                    name: Some("[斜眼笑]".into()),
                },
            ],
            Platform::Wechat,
        );
        let files = source_urls(&out);
        let message = render_message(
            &out,
            &RelatedMessages::default(),
            Platform::Qq,
            Pictures::Carried(&files),
        );
        assert_eq!(
            Value::Array(message),
            json!([
                {"type": "text", "data": {"text": "[微信] Ann: look @Bob "}},
                {"type": "image", "data": {"file": "https://x/y.png"}},
                {"type": "text", "data": {"text": "[斜眼笑]"}}
            ])
        );
    }

    #[test]
    fn replies_are_native_when_mapped_else_quoted() {
        let out = outbound(
            vec![
                Segment::text("[微信] Ann: "),
                Segment::Reply {
                    message_id: "9".into(),
                },
                Segment::text("yes"),
            ],
            Platform::Wechat,
        );
        let native = RelatedMessages {
            reply_to: Some("-55".into()),
            ..Default::default()
        };
        let message = render_message(&out, &native, Platform::Qq, Pictures::Placeholders);
        assert_eq!(message[0], json!({"type": "reply", "data": {"id": "-55"}}));
        let quoted = RelatedMessages {
            quote: Some("Bob: hi".into()),
            ..Default::default()
        };
        let message = render_message(&out, &quoted, Platform::Qq, Pictures::Placeholders);
        assert_eq!(
            message,
            vec![json!({"type": "text", "data": {"text": "[微信] Ann: 「Bob: hi」\nyes"}})]
        );
    }

    #[test]
    fn outcomes_and_ids() {
        assert_eq!(
            outcome(&json!({"status":"ok","retcode":0,"data":{"message_id":5}})),
            Outcome::Ok(json!({"message_id":5}))
        );
        assert_eq!(
            outcome(
                &json!({"status":"failed","retcode":1200,"message":"Timeout: NTEvent sendMsg"})
            ),
            Outcome::Failed {
                retcode: 1200,
                message: "Timeout: NTEvent sendMsg".into()
            }
        );
        assert_eq!(id_value("-735021844"), json!(-735021844));
        assert_eq!(
            id_value("20993411775@chatroom"),
            json!("20993411775@chatroom")
        );
        let pending = Pending::default();
        let (echo, mut rx) = pending.register();
        assert!(pending.resolve(&echo, json!(1)));
        assert_eq!(rx.try_recv().ok(), Some(json!(1)));
        assert!(!pending.resolve(&echo, json!(2)), "resolved once");
    }
}
