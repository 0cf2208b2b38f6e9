//! OneBot v12 actions (PROTOCOLS.md §2.4, §2.8): reading a response's outcome, mapping
//! retcodes to send errors, the message ids a send returned (ComWeChatClient returns `true`
//! and none), and rendering an outbound message for `send_message`.
//!
//! ComWeChatClient sends every segment of a `send_message` as its own WeChat message, so a
//! relayed message is rendered as ONE text segment: the outbound text (sender line included,
//! mentions as `@name`), with a quote of the replied message when the relay has one (native
//! replies cannot be sent). Pictures stay in that text as `[图片] <url>` unless the account
//! sends them as pictures (`send_images`), in which case they are listed separately.

use std::time::Duration;

use serde_json::{json, Value};

use crate::context::RelatedMessages;
use crate::error::SendError;
use crate::model::{Outbound, Segment};
pub use crate::onebot_ws::outcome::Outcome;
use crate::onebot_ws::outcome::{self, Dialect};

/// Retcode of an action the implementation does not support.
pub const UNSUPPORTED_ACTION: i64 = 10002;
/// Retcode of a parameter value the implementation does not support.
pub const UNSUPPORTED_PARAM: i64 = 10004;
/// How long to leave an implementation alone that said it is tired (36xxx).
pub const TIRED_PAUSE: Duration = Duration::from_secs(60);

/// How v12 implementations word responses: only `ok` is success, and `message` is the
/// spec's field (`msg`/`wording` come from implementations that borrow v11 habits).
const DIALECT: Dialect = Dialect {
    ok_statuses: &["ok"],
    message_fields: &["message", "msg", "wording"],
};

/// Reads a response object.
pub fn outcome(body: &Value) -> Outcome {
    outcome::read(body, &DIALECT)
}

/// What a failed send means for the relay, by retcode class (OneBot v12 spec):
///
/// - `10001`–`10099` (bad request, unsupported action/param/segment): the request itself is
///   wrong; retrying will not help → permanent.
/// - `10101`/`10102` (who am I, unknown self): the bot is not (yet) logged in → retryable.
/// - `2xxxx` handler, `31xxx`–`33xxx` database/filesystem/network, `34xxx` platform errors
///   (WeChat refusing a send, often risk control that passes): retryable, a bounded number
///   of times.
/// - `35xxx` logic errors (not in that group, …): permanent.
/// - `36xxx` "I am tired": the implementation asks for a rest → throttled for
///   [`TIRED_PAUSE`], which the relay waits out without losing the message.
/// - Anything else: retryable.
pub fn send_error(retcode: i64, message: &str) -> SendError {
    let text = format!("retcode {retcode}: {message}");
    match retcode {
        10_001..=10_099 | 35_000..=35_999 => SendError::Permanent(text),
        36_000..=36_999 => SendError::Throttled(TIRED_PAUSE),
        _ => SendError::Retryable(text),
    }
}

/// The message ids a send returned: `data.message_id` (string or number) when `data` is an
/// object; none when it is `true` (ComWeChatClient) or anything else.
pub fn message_ids(data: &Value) -> Vec<String> {
    match data.get("message_id") {
        Some(Value::String(id)) if !id.trim().is_empty() => vec![id.trim().to_owned()],
        Some(Value::Number(id)) => vec![id.to_string()],
        _ => Vec::new(),
    }
}

/// `send_message` parameters for a group.
pub fn send_params(group: &str, message: Vec<Value>) -> Value {
    json!({ "detail_type": "group", "group_id": group, "message": message })
}

/// A text segment.
pub fn text_segment(text: &str) -> Value {
    json!({ "type": "text", "data": { "text": text } })
}

/// An image segment for an uploaded file.
pub fn image_segment(file_id: &str) -> Value {
    json!({ "type": "image", "data": { "file_id": file_id } })
}

/// A WeChat sticker for an uploaded GIF (ComWeChatClient sends it with `send_gif`).
pub fn emoji_segment(file_id: &str) -> Value {
    json!({ "type": "wx.emoji", "data": { "file_id": file_id } })
}

/// Puts the short quote of a replied-to message (when the destination has no copy of it to
/// reply to natively) after the sender line of `text`.
pub fn insert_quote(text: &mut String, outbound: &Outbound, related: &RelatedMessages) {
    let has_reply = outbound
        .segments
        .iter()
        .any(|s| matches!(s, Segment::Reply { .. }));
    let Some(quote) = related
        .quote
        .as_deref()
        .filter(|_| has_reply && related.reply_to.is_none())
    else {
        return;
    };
    let at = if text.starts_with(&outbound.prefix) {
        outbound.prefix.len()
    } else {
        0
    };
    text.insert_str(at, &format!("「{quote}」\n"));
}

/// A picture to send separately.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    /// Where the implementation downloads it from (`upload_file` type `url`).
    pub url: String,
    /// File name for `upload_file`.
    pub name: String,
}

/// An outbound message as a v12 implementation gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The one text segment.
    pub text: String,
    /// Pictures to upload and send after the text (only with `send_images`).
    pub images: Vec<ImageRef>,
}

/// A file name for a picture URL: its last path segment, else `image.jpg`.
fn image_name(url: &str, name: Option<&str>) -> String {
    if let Some(name) = name.filter(|n| n.contains('.') && !n.contains('/')) {
        return name.to_owned();
    }
    let path = url.split(['?', '#']).next().unwrap_or(url);
    // `scheme:`, ``, host, then the path.
    let after_host = path.splitn(4, '/').nth(3).unwrap_or("");
    after_host
        .rsplit('/')
        .next()
        .filter(|last| !last.is_empty() && last.contains('.'))
        .unwrap_or("image.jpg")
        .to_owned()
}

/// True for a URL an implementation can download.
fn is_http(url: &str) -> bool {
    url.starts_with("http://") || url.starts_with("https://")
}

/// Renders an outbound message for a v12 implementation (see the module documentation).
pub fn render(outbound: &Outbound, related: &RelatedMessages, send_images: bool) -> Rendered {
    let mut images = Vec::new();
    let mut text = if send_images {
        let mut text = String::new();
        for segment in &outbound.segments {
            match segment {
                Segment::Image {
                    url: Some(url),
                    name,
                    ..
                } if is_http(url) => images.push(ImageRef {
                    url: url.clone(),
                    name: image_name(url, name.as_deref()),
                }),
                other => other.render_text(&mut text),
            }
        }
        text
    } else {
        outbound.text.clone()
    };
    insert_quote(&mut text, outbound, related);
    Rendered { text, images }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{segments_to_text, Kind, Platform};

    fn outbound(segments: Vec<Segment>) -> Outbound {
        let mut all = vec![Segment::text("[QQ] Ann: ")];
        all.extend(segments);
        Outbound {
            prefix: "[QQ] Ann: ".into(),
            text: segments_to_text(&all),
            segments: all,
            ..Outbound::sample(Kind::Message, Platform::Qq, "20993411775@chatroom")
        }
    }

    #[test]
    fn a_message_is_one_text_with_pictures_inline_by_default() {
        let out = outbound(vec![
            Segment::text("look "),
            Segment::Mention {
                id: "42".into(),
                name: Some("Bob".into()),
            },
            Segment::image(Some("https://img.example.org/a/b.png?x=1".into()), None),
        ]);
        let rendered = render(&out, &RelatedMessages::default(), false);
        assert_eq!(
            rendered.text,
            "[QQ] Ann: look @Bob[图片] https://img.example.org/a/b.png?x=1"
        );
        assert!(rendered.images.is_empty());

        let separate = render(&out, &RelatedMessages::default(), true);
        assert_eq!(separate.text, "[QQ] Ann: look @Bob");
        assert_eq!(
            separate.images,
            vec![ImageRef {
                url: "https://img.example.org/a/b.png?x=1".into(),
                name: "b.png".into()
            }]
        );
    }

    #[test]
    fn replies_are_quoted_after_the_sender_line() {
        let out = outbound(vec![
            Segment::Reply {
                message_id: "4".into(),
            },
            Segment::text("yes"),
        ]);
        let related = RelatedMessages {
            quote: Some("Bob: hi".into()),
            ..Default::default()
        };
        assert_eq!(
            render(&out, &related, false).text,
            "[QQ] Ann: 「Bob: hi」\nyes"
        );
        assert_eq!(
            render(&out, &RelatedMessages::default(), false).text,
            "[QQ] Ann: yes"
        );
    }

    #[test]
    fn outcomes_errors_and_ids() {
        let ok = json!({"status": "ok", "retcode": 0, "data": true, "message": "", "echo": "qb-1"});
        assert_eq!(outcome(&ok), Outcome::Ok(json!(true)));
        assert!(
            message_ids(&json!(true)).is_empty(),
            "ComWeChat returns no id"
        );
        assert_eq!(
            message_ids(&json!({"message_id": "8312456690099999", "time": 1.0})),
            vec!["8312456690099999"]
        );
        assert_eq!(message_ids(&json!({"message_id": 7})), vec!["7"]);
        let failed =
            json!({"status": "failed", "retcode": 35001, "data": null, "message": "not in group"});
        assert_eq!(
            outcome(&failed),
            Outcome::Failed {
                retcode: 35001,
                message: "not in group".into()
            }
        );
        assert!(matches!(send_error(10002, "x"), SendError::Permanent(_)));
        assert!(matches!(send_error(35001, "x"), SendError::Permanent(_)));
        assert!(matches!(send_error(34001, "x"), SendError::Retryable(_)));
        assert!(matches!(send_error(10102, "x"), SendError::Retryable(_)));
        assert!(matches!(send_error(-1, "x"), SendError::Retryable(_)));
        assert_eq!(send_error(36000, "x"), SendError::Throttled(TIRED_PAUSE));
        assert_eq!(image_name("https://h/x", None), "image.jpg");
        assert_eq!(image_name("https://h", None), "image.jpg");
        assert_eq!(image_name("https://h/p/q.gif#f", None), "q.gif");
        assert_eq!(image_name("https://h/x", Some("cat.png")), "cat.png");
    }
}
