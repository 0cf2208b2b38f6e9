//! Decoding OneBot v11 frames: telling events from action responses on a Universal socket,
//! and turning group messages and recall notices into envelopes. Implementations bend the
//! spec (numbers where strings are due, negative message ids, string or array messages), so
//! every field is read tolerantly; a frame that still makes no sense is reported, never a
//! panic.

use serde_json::{Map, Value};

use super::cq::{self, RawSegment};
use crate::member::Change;
use crate::model::{
    Envelope, Kind, Locator, MediaKind, MediaRef, Platform, Segment, Sender, ENVELOPE_VERSION,
};
use crate::onebot_ws::frame::{
    array_segments, data_text, note_unknown, parse_object, raw_segment, recall_envelope, response,
    text_of, unknown_segment,
};
pub use crate::onebot_ws::frame::{id_of, DecodeContext, FrameError};
use crate::onebot_ws::members;

/// What a frame turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A group message or recall, ready to publish.
    Envelope(Box<Envelope>),
    /// The bot's own message (`message_sent`, `user_id == self_id`, another configured bot):
    /// never relayed.
    OwnMessage,
    /// `meta_event` `lifecycle`: the bot's id.
    Lifecycle {
        /// `self_id` of the bot.
        self_id: Option<String>,
    },
    /// `meta_event` `heartbeat`, with its interval in milliseconds.
    Heartbeat {
        /// Milliseconds until the next heartbeat.
        interval_ms: Option<u64>,
        /// `self_id` of the bot.
        self_id: Option<String>,
    },
    /// The answer to an action we sent.
    Response {
        /// The `echo` we sent, as a string.
        echo: String,
        /// The whole response object.
        body: Value,
    },
    /// An event the relay does not use (private messages, other notices, requests).
    Ignored,
}

/// Decodes one text frame.
///
/// # Errors
/// [`FrameError`] when the frame cannot be understood.
pub fn decode(text: &str, cx: &DecodeContext<'_>) -> Result<Frame, FrameError> {
    let object = parse_object(text)?;
    if object.contains_key("post_type") {
        return decode_event(&object, cx);
    }
    match response(object) {
        Some((echo, body)) => Ok(Frame::Response { echo, body }),
        None => Err(FrameError::Unknown),
    }
}

/// `notice_type`s the relay knows and does not use: the v11 spec's and those NapCat,
/// Lagrange and LLOneBot add. Any other is counted as unknown input.
const KNOWN_NOTICES: [&str; 14] = [
    "group_upload",
    "group_admin",
    "group_ban",
    "friend_add",
    "friend_recall",
    "notify",
    "group_card",
    "offline_file",
    "client_status",
    "essence",
    "group_msg_emoji_like",
    "bot_offline",
    "group_name",
    "group_title",
];

/// `post_type`s of OneBot v11 (PROTOCOLS.md §1.5); any other is counted as unknown.
const POST_TYPES: [&str; 5] = ["message", "message_sent", "notice", "request", "meta_event"];

/// Decodes an event object.
fn decode_event(object: &Map<String, Value>, cx: &DecodeContext<'_>) -> Result<Frame, FrameError> {
    let self_id = id_of(object.get("self_id"));
    let post_type = text_of(object, "post_type");
    if !POST_TYPES.contains(&post_type) {
        note_unknown(cx.platform, "event", post_type);
        return Ok(Frame::Ignored);
    }
    match post_type {
        "message_sent" => Ok(Frame::OwnMessage),
        "message" if text_of(object, "message_type") == "group" => group_message(object, cx),
        "notice" => match text_of(object, "notice_type") {
            "group_recall" => group_recall(object, cx),
            "group_increase" => member_notice(object, cx, Change::Join),
            "group_decrease" => member_notice(object, cx, Change::Leave),
            other => {
                if !KNOWN_NOTICES.contains(&other) {
                    note_unknown(cx.platform, "notice", other);
                }
                Ok(Frame::Ignored)
            }
        },
        "meta_event" => match text_of(object, "meta_event_type") {
            "lifecycle" => Ok(Frame::Lifecycle { self_id }),
            "heartbeat" => Ok(Frame::Heartbeat {
                interval_ms: object.get("interval").and_then(Value::as_u64),
                self_id,
            }),
            _ => Ok(Frame::Ignored),
        },
        _ => Ok(Frame::Ignored),
    }
}

/// Event time in milliseconds (`time` is Unix seconds); now when absent.
fn time_ms(object: &Map<String, Value>) -> u64 {
    ms_of(object.get("time").and_then(Value::as_u64))
}

/// Unix seconds in milliseconds; now when there are none.
fn ms_of(seconds: Option<u64>) -> u64 {
    seconds
        .map(|s| s.saturating_mul(1000))
        .unwrap_or_else(crate::context::now_ms)
}

/// A group message event.
fn group_message(object: &Map<String, Value>, cx: &DecodeContext<'_>) -> Result<Frame, FrameError> {
    let group = id_of(object.get("group_id")).ok_or(FrameError::Field("group_id"))?;
    let user = id_of(object.get("user_id")).ok_or(FrameError::Field("user_id"))?;
    let message_id = id_of(object.get("message_id")).ok_or(FrameError::Field("message_id"))?;
    if is_own_message(cx, &user, id_of(object.get("self_id"))) {
        return Ok(Frame::OwnMessage);
    }
    let sender = object.get("sender").and_then(Value::as_object);
    let anonymous = object
        .get("anonymous")
        .and_then(Value::as_object)
        .map(|a| text_of(a, "name").to_owned());
    let name = sender_name(
        anonymous,
        sender.map(|s| text_of(s, "card")),
        sender.map(|s| text_of(s, "nickname")),
        &user,
    );
    let raw = match object.get("message") {
        Some(Value::Array(items)) => array_segments(items, cx.platform)
            .into_iter()
            .map(|(kind, data)| RawSegment { kind, data })
            .collect(),
        Some(Value::String(text)) => cq::parse(text),
        Some(Value::Object(_)) => object
            .get("message")
            .and_then(raw_segment)
            .map(|(kind, data)| RawSegment { kind, data })
            .into_iter()
            .collect(),
        _ => match object.get("raw_message") {
            Some(Value::String(text)) => cq::parse(text),
            _ => return Err(FrameError::Field("message")),
        },
    };
    let segments: Vec<Segment> = raw
        .iter()
        .map(|r| to_segment(r, cx.platform, cx.account))
        .collect();
    Ok(message_envelope(
        MessageFields {
            group,
            user,
            message_id,
            name,
            segments,
            time: object.get("time").and_then(Value::as_u64),
        },
        cx,
    ))
}

/// True when a group message's author is this bot (as the account knows it, else as the
/// event says) or another configured bot: never relayed.
pub(super) fn is_own_message(
    cx: &DecodeContext<'_>,
    user: &str,
    event_self: Option<String>,
) -> bool {
    let own_id = cx.self_id.map(str::to_owned).or(event_self);
    own_id.as_deref() == Some(user) || (cx.is_other_bot)(user)
}

/// The name a group message's author is shown with: the anonymous name, else the group
/// card, else the nickname (each trimmed, when not empty), else the user id.
pub(super) fn sender_name(
    anonymous: Option<String>,
    card: Option<&str>,
    nickname: Option<&str>,
    user: &str,
) -> String {
    anonymous
        .filter(|n| !n.is_empty())
        .or_else(|| {
            card.map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
        })
        .or_else(|| {
            nickname
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| user.to_owned())
}

/// What a group message event says, however it was read ([`group_message`] from a JSON
/// tree, [`super::message_event`] from typed fields).
pub(super) struct MessageFields {
    /// The group.
    pub group: String,
    /// The author.
    pub user: String,
    /// The message.
    pub message_id: String,
    /// The author's shown name ([`sender_name`]).
    pub name: String,
    /// The message's segments.
    pub segments: Vec<Segment>,
    /// `time` (Unix seconds) when it is one; the message then counts as sent now.
    pub time: Option<u64>,
}

/// The envelope of a group message that is not the bot's own.
pub(super) fn message_envelope(fields: MessageFields, cx: &DecodeContext<'_>) -> Frame {
    let MessageFields {
        group,
        user,
        message_id,
        name,
        segments,
        time,
    } = fields;
    Frame::Envelope(Box::new(Envelope {
        v: ENVELOPE_VERSION,
        id: Envelope::make_id(cx.account, &group, &message_id),
        origin: cx.origin(group, message_id),
        sender: Sender {
            id: user,
            name,
            is_bot: false,
        },
        ts_ms: ms_of(time),
        kind: Kind::Message,
        segments,
        member: None,
    }))
}

/// A `group_recall` notice.
fn group_recall(object: &Map<String, Value>, cx: &DecodeContext<'_>) -> Result<Frame, FrameError> {
    let envelope = recall_envelope(object, cx, time_ms(object))?;
    Ok(Frame::Envelope(Box::new(envelope)))
}

/// A `group_increase` (`approve`, `invite`) or `group_decrease` (`leave`, `kick`,
/// `kick_me`, NapCat's `disband`) notice: a member envelope whose name is looked up before
/// it is published. QQ user ids are numbers: any other is malformed.
fn member_notice(
    object: &Map<String, Value>,
    cx: &DecodeContext<'_>,
    change: Change,
) -> Result<Frame, FrameError> {
    let envelope = members::notice_envelope(object, cx, change, time_ms(object), true)
        .inspect_err(|_| note_unknown(cx.platform, "notice", text_of(object, "notice_type")))?;
    Ok(Frame::Envelope(Box::new(envelope)))
}

/// Maps a v11 segment to the model; an unknown type becomes a placeholder and is counted.
/// `account` names the account that saw it, the one that can refresh a picture's URL.
pub(super) fn to_segment(raw: &RawSegment, platform: Platform, account: &str) -> Segment {
    let data = &raw.data;
    let placeholder = |hint: &str| Segment::Unsupported { hint: hint.into() };
    match raw.kind.as_str() {
        "text" => Segment::Text {
            text: data_text(data, "text").unwrap_or_default(),
        },
        "at" => match data_text(data, "qq") {
            Some(qq) if qq == "all" => Segment::MentionAll,
            Some(qq) => Segment::Mention {
                id: qq,
                name: data_text(data, "name").filter(|n| !n.is_empty()),
            },
            None => placeholder("@?"),
        },
        "face" => Segment::Face {
            id: data_text(data, "id").unwrap_or_default(),
            name: None,
        },
        "image" | "mface" => image_segment(data, platform, account, raw.kind == "mface"),
        "reply" => match data_text(data, "id") {
            Some(id) => Segment::Reply { message_id: id },
            None => placeholder("[回复]"),
        },
        "record" => placeholder("[语音]"),
        "video" => placeholder("[视频]"),
        "file" => placeholder("[文件]"),
        "forward" | "node" => placeholder("[合并转发]"),
        "json" | "xml" => placeholder("[卡片消息]"),
        "share" => {
            let title = data_text(data, "title").unwrap_or_default();
            let url = data_text(data, "url").unwrap_or_default();
            Segment::Unsupported {
                hint: format!("[分享] {title} {url}").trim_end().to_owned(),
            }
        }
        "poke" | "shake" => placeholder("[戳一戳]"),
        "dice" => placeholder("[骰子]"),
        "rps" => placeholder("[猜拳]"),
        "location" => placeholder("[位置]"),
        "music" => placeholder("[音乐]"),
        "contact" => placeholder("[名片]"),
        "anonymous" => Segment::Text {
            text: String::new(),
        },
        other => unknown_segment(platform, other),
    }
}

/// An `image` segment (or LLOneBot's `mface` market face) as the model's picture, with what
/// the implementations say about it (MEDIA.md §1.1): NapCat's `sub_type` and Lagrange's and
/// LLOneBot's `subType` (non-zero: a sticker), `type: "flash"`, `summary`, `file_size`, and a
/// media reference that the origin account can refresh with `get_image` once the URL expired.
/// Lagrange puts the URL itself in `file`.
fn image_segment(
    data: &Map<String, Value>,
    platform: Platform,
    account: &str,
    market_face: bool,
) -> Segment {
    let is_http = |u: &String| u.starts_with("http://") || u.starts_with("https://");
    let file = data_text(data, "file").filter(|f| !f.trim().is_empty());
    let url = data_text(data, "url")
        .filter(|u| !u.is_empty())
        .or_else(|| file.clone().filter(is_http));
    let sticker_flag = ["sub_type", "subType"]
        .iter()
        .filter_map(|key| data_text(data, key))
        .any(|flag| flag.trim() != "0" && !flag.trim().is_empty());
    let summary = data_text(data, "summary").filter(|s| !s.trim().is_empty());
    let sticker = market_face
        || sticker_flag
        || data.contains_key("emoji_id")
        || summary.as_deref() == Some("[动画表情]");
    let flash = data_text(data, "type").as_deref() == Some("flash");
    let size = data_text(data, "file_size").and_then(|size| size.trim().parse::<u64>().ok());
    let kind = if sticker {
        MediaKind::Sticker
    } else {
        MediaKind::Image
    };
    let media = match (&file, &url) {
        // Lagrange: `file` is the URL, which nothing can refresh.
        (Some(file), _) if !is_http(file) => Some(MediaRef::new(
            platform,
            account,
            file,
            kind,
            Locator::Onebot11Image {
                file: file.clone(),
                url: url.clone(),
            },
        )),
        (_, Some(url)) => Some(MediaRef::url(url, kind)),
        _ => None,
    };
    Segment::Image {
        url,
        name: file,
        sticker,
        flash,
        summary,
        size,
        media,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cx<'a>(self_id: Option<&'a str>, other: &'a dyn Fn(&str) -> bool) -> DecodeContext<'a> {
        DecodeContext {
            account: "qq-main",
            platform: Platform::Qq,
            self_id,
            is_other_bot: other,
        }
    }

    const ARRAY_EVENT: &str = r#"{
      "time": 1718880000, "self_id": 2854196310, "post_type": "message",
      "message_type": "group", "sub_type": "normal", "message_id": -1730113492,
      "group_id": 735021844, "user_id": 1437420188, "anonymous": null,
      "message": [
        { "type": "reply", "data": { "id": "-1730113400" } },
        { "type": "at",    "data": { "qq": 2854196310 } },
        { "type": "text",  "data": { "text": " see [docs], a&b" } },
        { "type": "face",  "data": { "id": "178" } },
        { "type": "image", "data": { "file": "9F3C1A.jpg", "url": "https://img.example.invalid/d?id=9F3C1A&s=1" } },
        { "type": "hologram", "data": {} }
      ],
      "font": 0,
      "sender": { "user_id": 1437420188, "nickname": "Alice", "card": "Alice | Ops", "role": "member" }
    }"#;

    #[test]
    fn array_and_string_formats_give_the_same_envelope() {
        let none = |_: &str| false;
        let Ok(Frame::Envelope(array)) = decode(ARRAY_EVENT, &cx(None, &none)) else {
            panic!("array event decodes");
        };
        assert_eq!(array.id, "qq-main:735021844:-1730113492");
        assert_eq!(array.sender.name, "Alice | Ops");
        assert_eq!(array.ts_ms, 1_718_880_000_000);
        assert_eq!(
            array.segments[1],
            Segment::Mention {
                id: "2854196310".into(),
                name: None
            }
        );
        assert_eq!(
            array.segments[5],
            Segment::Unsupported {
                hint: "[hologram]".into()
            }
        );

        let mut as_string: Value = serde_json::from_str(ARRAY_EVENT).expect("json");
        as_string["message"] = Value::String("[CQ:reply,id=-1730113400][CQ:at,qq=2854196310] see &#91;docs&#93;, a&amp;b[CQ:face,id=178][CQ:image,file=9F3C1A.jpg,url=https://img.example.invalid/d?id=9F3C1A&amp;s=1][CQ:hologram]".into());
        as_string["sender"]["card"] = Value::String(String::new());
        let Ok(Frame::Envelope(string)) = decode(&as_string.to_string(), &cx(None, &none)) else {
            panic!("string event decodes");
        };
        assert_eq!(string.segments, array.segments);
        assert_eq!(
            string.sender.name, "Alice",
            "nickname when the card is empty"
        );
    }

    #[test]
    fn own_messages_are_recognised_every_way() {
        let none = |_: &str| false;
        let sent = ARRAY_EVENT.replace(
            "\"post_type\": \"message\"",
            "\"post_type\": \"message_sent\"",
        );
        assert_eq!(decode(&sent, &cx(None, &none)), Ok(Frame::OwnMessage));
        assert_eq!(
            decode(ARRAY_EVENT, &cx(Some("1437420188"), &none)),
            Ok(Frame::OwnMessage)
        );
        let other = |id: &str| id == "1437420188";
        assert_eq!(
            decode(ARRAY_EVENT, &cx(None, &other)),
            Ok(Frame::OwnMessage)
        );
    }

    #[test]
    fn recalls_responses_and_garbage() {
        let none = |_: &str| false;
        let recall = r#"{"time":1718880100,"self_id":1,"post_type":"notice","notice_type":"group_recall","group_id":735021844,"user_id":5,"operator_id":6,"message_id":-1730113492}"#;
        let Ok(Frame::Envelope(recall)) = decode(recall, &cx(None, &none)) else {
            panic!("recall decodes");
        };
        assert_eq!(recall.kind, Kind::Recall);
        assert_eq!(recall.origin.message_id, "-1730113492");
        let response = decode(
            r#"{"status":"ok","retcode":0,"data":{"message_id":5},"echo":7}"#,
            &cx(None, &none),
        );
        assert!(matches!(response, Ok(Frame::Response { echo, .. }) if echo == "7"));
        assert!(matches!(
            decode("[1,2]", &cx(None, &none)),
            Err(FrameError::NotJson(_))
        ));
        assert!(matches!(
            decode("{\"x\":1}", &cx(None, &none)),
            Err(FrameError::Unknown)
        ));
        let no_group = r#"{"post_type":"message","message_type":"group","user_id":1,"message_id":2,"message":[]}"#;
        assert_eq!(
            decode(no_group, &cx(None, &none)),
            Err(FrameError::Field("group_id"))
        );
        let huge = r#"{"post_type":"message","message_type":"group","group_id":1e400,"user_id":1,"message_id":2,"message":[]}"#;
        assert!(decode(huge, &cx(None, &none)).is_err());
    }

    /// What each implementation puts in a picture segment (MEDIA.md §1.1) ends up in the
    /// model: sticker flags in both spellings, flash pictures, sizes, summaries, and a media
    /// reference the origin account can refresh.
    #[test]
    fn pictures_keep_what_the_implementations_say_about_them() {
        let image = |kind: &str, data: Value| {
            let raw = RawSegment {
                kind: kind.into(),
                data: data.as_object().cloned().unwrap_or_default(),
            };
            to_segment(&raw, Platform::Qq, "qq-main")
        };
        let napcat = image(
            "image",
            serde_json::json!({"file": "ABCD.jpg", "url": "https://multimedia.nt.qq.com.cn/download?rkey=r",
                "file_size": "2048", "summary": "[动画表情]", "sub_type": 1}),
        );
        let Segment::Image {
            sticker,
            flash,
            summary,
            size,
            media: Some(media),
            ..
        } = &napcat
        else {
            panic!("a picture with a reference: {napcat:?}");
        };
        assert!(*sticker && !*flash);
        assert_eq!(summary.as_deref(), Some("[动画表情]"));
        assert_eq!(*size, Some(2048));
        assert_eq!(media.key, "qq:qq-main:ABCD.jpg");
        assert_eq!(media.kind, MediaKind::Sticker);
        assert_eq!(
            media.locator,
            Locator::Onebot11Image {
                file: "ABCD.jpg".into(),
                url: Some("https://multimedia.nt.qq.com.cn/download?rkey=r".into()),
            }
        );
        // Lagrange: camelCase flag, and the URL itself in `file` (nothing to refresh with).
        let lagrange = image(
            "image",
            serde_json::json!({"file": "https://multimedia.nt.qq.com.cn/d?rkey=1", "url": "https://multimedia.nt.qq.com.cn/d?rkey=1", "subType": "1"}),
        );
        assert!(matches!(
            &lagrange,
            Segment::Image {
                sticker: true,
                media: Some(MediaRef {
                    locator: Locator::Url { .. },
                    ..
                }),
                ..
            }
        ));
        // A plain picture: sub_type 0 is not a sticker.
        let plain = image(
            "image",
            serde_json::json!({"file": "E.png", "url": "https://x/e", "sub_type": "0", "summary": ""}),
        );
        assert!(matches!(
            &plain,
            Segment::Image {
                sticker: false,
                flash: false,
                summary: None,
                ..
            }
        ));
        assert_eq!(plain.image_placeholder(), Some("[图片]"));
        let flash = image(
            "image",
            serde_json::json!({"file": "F.jpg", "type": "flash"}),
        );
        assert_eq!(flash.image_placeholder(), Some("[闪照]"));
        let mut text = String::new();
        flash.render_text(&mut text);
        assert_eq!(text, "[闪照]", "no URL: the placeholder");
        // LLOneBot's market face.
        let market = image(
            "mface",
            serde_json::json!({"url": "https://gxh.vip.qq.com/club/item/parcel/item/2e/2e9b/raw300.gif", "summary": "[开心]"}),
        );
        assert_eq!(market.image_placeholder(), Some("[动画表情]"));
        assert!(matches!(
            &market,
            Segment::Image {
                media: Some(MediaRef {
                    kind: MediaKind::Sticker,
                    ..
                }),
                ..
            }
        ));
        // Nothing to fetch: still a picture, with no reference, never a failure.
        let bare = image("image", serde_json::json!({"file_size": "many"}));
        assert!(matches!(
            &bare,
            Segment::Image {
                media: None,
                size: None,
                ..
            }
        ));
    }

    #[test]
    fn bad_input_is_an_error_or_ignored_never_a_panic() {
        let none = |_: &str| false;
        let beyond_u64 = r#"{"post_type":"message","message_type":"group","group_id":18446744073709551616,"user_id":1,"message_id":2,"message":[]}"#;
        assert_eq!(
            decode(beyond_u64, &cx(None, &none)),
            Err(FrameError::Field("group_id"))
        );
        let below_i64 = r#"{"post_type":"message","message_type":"group","group_id":1,"user_id":1,"message_id":-9223372036854775809,"message":[]}"#;
        assert_eq!(
            decode(below_i64, &cx(None, &none)),
            Err(FrameError::Field("message_id"))
        );
        let deep = "[".repeat(10_000);
        assert!(matches!(
            decode(&deep, &cx(None, &none)),
            Err(FrameError::NotJson(_))
        ));
        let deep_closed = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        assert!(matches!(
            decode(&deep_closed, &cx(None, &none)),
            Err(FrameError::NotJson(_))
        ));
        let truncated = &ARRAY_EVENT[..ARRAY_EVENT.len() / 2];
        assert!(matches!(
            decode(truncated, &cx(None, &none)),
            Err(FrameError::NotJson(_))
        ));
        let unknown = r#"{"post_type":"hologram","self_id":1}"#;
        assert_eq!(decode(unknown, &cx(None, &none)), Ok(Frame::Ignored));
        let not_segments = r#"{"post_type":"message","message_type":"group","group_id":1,"user_id":2,"message_id":3,"message":[7,{"data":{}},{"type":"text","data":{"text":"ok"}}]}"#;
        let Ok(Frame::Envelope(envelope)) = decode(not_segments, &cx(None, &none)) else {
            panic!("the usable segment is kept");
        };
        assert_eq!(envelope.segments, vec![Segment::text("ok")]);
    }

    /// A member notice of `notice_type` and `sub_type`, with `fields` merged in.
    fn member_notice(notice_type: &str, sub_type: &str, fields: Value) -> String {
        let mut event = serde_json::json!({"time": 1718880200, "self_id": 2854196310u64,
            "post_type": "notice", "notice_type": notice_type, "sub_type": sub_type,
            "group_id": 735021844, "user_id": 1437420188, "operator_id": 10001});
        if let (Some(event), Some(fields)) = (event.as_object_mut(), fields.as_object()) {
            event.extend(fields.clone());
        }
        event.to_string()
    }

    /// The member envelope a notice decodes to.
    fn member_of(text: &str) -> Box<Envelope> {
        let none = |_: &str| false;
        match decode(text, &cx(Some("2854196310"), &none)) {
            Ok(Frame::Envelope(envelope)) => envelope,
            other => panic!("a member envelope: {other:?}"),
        }
    }

    #[test]
    fn joins_and_leaves_become_member_envelopes_for_every_sub_type() {
        use crate::member::{Change, How};
        let cases = [
            ("group_increase", "approve", Change::Join, How::Approve),
            ("group_increase", "invite", Change::Join, How::Invite),
            ("group_decrease", "leave", Change::Leave, How::Leave),
            ("group_decrease", "kick", Change::Leave, How::Kick),
            ("group_decrease", "kick_me", Change::Leave, How::KickMe),
            ("group_decrease", "disband", Change::Leave, How::Disband),
            ("group_decrease", "lift", Change::Leave, How::Unknown),
            ("group_increase", "", Change::Join, How::Unknown),
        ];
        for (notice_type, sub_type, change, how) in cases {
            let envelope = member_of(&member_notice(notice_type, sub_type, Value::Null));
            assert_eq!(envelope.kind, Kind::Member, "{sub_type}");
            let member = envelope.member.clone().expect("a member event");
            assert_eq!((member.change, member.how), (change, how), "{sub_type}");
            assert_eq!(member.operator.as_deref(), Some("10001"));
            assert_eq!(member.member_count, None);
            assert_eq!(envelope.sender.id, "1437420188");
            assert_eq!(envelope.sender.name, "", "looked up later");
            assert_eq!(envelope.ts_ms, 1_718_880_200_000);
            let suffix = format!("member:{}:1437420188:1718880200", change.as_str());
            assert_eq!(envelope.id, format!("qq-main:735021844:{suffix}"));
            assert_eq!(envelope.origin.message_id, suffix);
        }
    }

    #[test]
    fn member_notices_take_string_ids_and_read_operator_zero_as_unknown() {
        let napcat = member_of(&member_notice(
            "group_increase",
            "invite",
            serde_json::json!({"group_id": "735021844", "user_id": "42", "operator_id": 0}),
        ));
        assert_eq!(napcat.origin.group, "735021844");
        assert_eq!(napcat.sender.id, "42");
        assert_eq!(napcat.member.and_then(|m| m.operator), None);
        let without = serde_json::json!({"time": 1718880200, "post_type": "notice",
            "notice_type": "group_decrease", "sub_type": "leave", "group_id": 1, "user_id": 2});
        assert_eq!(
            member_of(&without.to_string())
                .member
                .and_then(|m| m.operator),
            None
        );
        let zero_string = member_of(&member_notice(
            "group_decrease",
            "kick",
            serde_json::json!({"operator_id": "0"}),
        ));
        assert_eq!(zero_string.member.and_then(|m| m.operator), None);
    }

    #[test]
    fn member_notices_without_group_or_with_a_bad_user_are_errors() {
        let none = |_: &str| false;
        let bad = |fields: Value| {
            let mut text: Value =
                serde_json::from_str(&member_notice("group_increase", "approve", fields))
                    .expect("json");
            if let Some(event) = text.as_object_mut() {
                event.retain(|_, value| !value.is_null());
            }
            decode(&text.to_string(), &cx(None, &none))
        };
        assert_eq!(
            bad(serde_json::json!({"group_id": null})),
            Err(FrameError::Field("group_id"))
        );
        assert_eq!(
            bad(serde_json::json!({"user_id": "wxid_abc"})),
            Err(FrameError::Field("user_id"))
        );
        assert_eq!(
            bad(serde_json::json!({"user_id": null})),
            Err(FrameError::Field("user_id"))
        );
        assert_eq!(
            bad(serde_json::json!({"user_id": 1.5})),
            Err(FrameError::Field("user_id"))
        );
        // Other notices stay ignored.
        let ban = member_notice("group_ban", "ban", Value::Null);
        assert_eq!(decode(&ban, &cx(None, &none)), Ok(Frame::Ignored));
    }

    /// Event-shaped JSON: the fields the decoder reads, each maybe absent or of any type.
    fn event() -> impl proptest::strategy::Strategy<Value = Value> {
        use crate::onebot_ws::frame::arb;
        use proptest::prelude::*;
        const POST: &[&str] = &["message", "message_sent", "notice", "meta_event", "request"];
        const SEGMENTS: &[&str] = &[
            "text", "at", "face", "image", "reply", "share", "record", "json", "node",
        ];
        const KEYS: &[&str] = &["text", "qq", "id", "file", "url", "name", "title"];
        let message = prop_oneof![
            prop::collection::vec(arb::segment(SEGMENTS, KEYS), 0..5).prop_map(Value::Array),
            "\\PC{0,40}".prop_map(Value::from),
            arb::value(),
        ];
        arb::object(vec![
            ("post_type", arb::name(POST).prop_map(Value::from).boxed()),
            (
                "message_type",
                arb::name(&["group", "private"])
                    .prop_map(Value::from)
                    .boxed(),
            ),
            (
                "notice_type",
                arb::name(&["group_recall", "group_increase", "group_decrease"])
                    .prop_map(Value::from)
                    .boxed(),
            ),
            (
                "meta_event_type",
                arb::name(&["lifecycle", "heartbeat"])
                    .prop_map(Value::from)
                    .boxed(),
            ),
            ("group_id", arb::leaf().boxed()),
            ("user_id", arb::leaf().boxed()),
            ("message_id", arb::leaf().boxed()),
            ("self_id", arb::leaf().boxed()),
            ("operator_id", arb::leaf().boxed()),
            ("time", arb::leaf().boxed()),
            ("interval", arb::leaf().boxed()),
            (
                "sub_type",
                arb::name(&["approve", "invite", "leave", "kick", "kick_me", "disband"])
                    .prop_map(Value::from)
                    .boxed(),
            ),
            ("message", message.boxed()),
            ("raw_message", arb::leaf().boxed()),
            ("sender", arb::value().boxed()),
            ("anonymous", arb::value().boxed()),
            ("retcode", arb::leaf().boxed()),
            ("echo", arb::value().boxed()),
        ])
    }

    proptest::proptest! {
        #[test]
        fn any_text_decodes_without_panicking(text in "\\PC{0,200}|.{0,200}") {
            let none = |_: &str| false;
            let _ = decode(&text, &cx(Some("1"), &none));
        }

        #[test]
        fn any_event_shaped_json_decodes_without_panicking(event in event()) {
            let none = |_: &str| false;
            let text = event.to_string();
            if let Ok(Frame::Envelope(envelope)) = decode(&text, &cx(None, &none)) {
                proptest::prop_assert!(!envelope.origin.group.is_empty());
                proptest::prop_assert!(!envelope.origin.message_id.is_empty());
            }
        }
    }
}
