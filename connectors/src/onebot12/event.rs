//! Decoding OneBot v12 frames (PROTOCOLS.md §2): telling events (`type` + `detail_type`) from
//! action responses (`status`/`retcode` + `echo`), and turning `message.group` events and
//! `notice.group_message_delete` into envelopes. A v12 message event carries no sender name
//! and references pictures by `file_id`, so a group message comes out as an [`Incoming`]:
//! an envelope that is complete except for the names and URLs listed in its [`Fill`]s, which
//! the resolver looks up before publishing. Fields are read tolerantly (numbers where strings
//! are due, `message` as a string); a frame that still makes no sense is reported, never a
//! panic.

use serde_json::{Map, Value};

use crate::member::{Change, How};
use crate::model::{
    Envelope, Kind, Locator, MediaKind, MediaRef, Segment, Sender, ENVELOPE_VERSION,
};
use crate::onebot_ws::frame::{
    array_segments, data_text, note_unknown, parse_object, raw_segment, recall_envelope, response,
    text_of, unknown_segment,
};
pub use crate::onebot_ws::frame::{id_of, DecodeContext, FrameError};
use crate::onebot_ws::members;
pub use crate::onebot_ws::BotStatus;

/// What a frame turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A group message, to be completed (names, picture URLs) and published.
    Message(Box<Incoming>),
    /// A deleted group message, ready to publish as a recall.
    Recall(Box<Envelope>),
    /// A member joined or left (`notice.group_member_increase`/`decrease`): a member
    /// envelope whose name is still to be looked up.
    Member(Box<Envelope>),
    /// The bot's own message, or another configured bot's: never relayed.
    OwnMessage,
    /// `meta.connect`: who the implementation is.
    Connect {
        /// `version.impl`, such as `ComWechat`.
        implementation: String,
        /// `version.version`.
        version: String,
    },
    /// `meta.status_update`: the bots on this connection and whether they are online.
    StatusUpdate {
        /// `status.good`.
        good: Option<bool>,
        /// `status.bots`.
        bots: Vec<BotStatus>,
    },
    /// `meta.heartbeat`, with its interval in milliseconds.
    Heartbeat {
        /// Milliseconds until the next heartbeat.
        interval_ms: Option<u64>,
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

/// A decoded frame, plus the bot's id when the event named it in `self`.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// What the frame is.
    pub frame: Frame,
    /// `self.user_id` of a non-meta event: the bot this connection speaks for.
    pub self_id: Option<String>,
}

/// A group message whose envelope still lacks what only an action can tell.
#[derive(Debug, Clone, PartialEq)]
pub struct Incoming {
    /// The envelope, with the sender's id as its name until the name is known.
    pub envelope: Envelope,
    /// True when the event itself carried a usable sender name (an implementation
    /// extension), so no lookup is needed.
    pub name_known: bool,
    /// Segments to complete, by index into `envelope.segments`.
    pub fills: Vec<Fill>,
}

/// A part of a message that needs a lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fill {
    /// A mention whose display name is looked up with `get_group_member_info`.
    MentionName {
        /// Index of the segment.
        index: usize,
        /// The member mentioned.
        user_id: String,
    },
    /// A picture whose URL is asked for with `get_file`.
    ImageFile {
        /// Index of the segment.
        index: usize,
        /// The implementation's file id.
        file_id: String,
    },
}

/// Decodes one text frame.
///
/// # Errors
/// [`FrameError`] when the frame cannot be understood.
pub fn decode(text: &str, cx: &DecodeContext<'_>) -> Result<Decoded, FrameError> {
    let object = parse_object(text)?;
    if object.get("type").is_some_and(Value::is_string) {
        let self_id = object
            .get("self")
            .and_then(Value::as_object)
            .and_then(|s| id_of(s.get("user_id")));
        let frame = decode_event(&object, self_id.as_deref(), cx)?;
        return Ok(Decoded { frame, self_id });
    }
    match response(object) {
        Some((echo, body)) => Ok(Decoded {
            frame: Frame::Response { echo, body },
            self_id: None,
        }),
        None => Err(FrameError::Unknown),
    }
}

/// Event `type`s of OneBot v12 (PROTOCOLS.md §2.1); any other is counted as unknown.
const EVENT_TYPES: [&str; 4] = ["message", "notice", "request", "meta"];

/// Decodes an event object.
fn decode_event(
    object: &Map<String, Value>,
    event_self: Option<&str>,
    cx: &DecodeContext<'_>,
) -> Result<Frame, FrameError> {
    let detail = text_of(object, "detail_type");
    let event_type = text_of(object, "type");
    if !EVENT_TYPES.contains(&event_type) {
        note_unknown(cx.platform, "event", event_type);
        return Ok(Frame::Ignored);
    }
    match event_type {
        "message" if detail == "group" => group_message(object, event_self, cx),
        "notice" if detail == "group_message_delete" => group_message_delete(object, cx),
        "notice" if detail == "group_member_increase" => {
            member_notice(object, event_self, cx, Change::Join)
        }
        "notice" if detail == "group_member_decrease" => {
            member_notice(object, event_self, cx, Change::Leave)
        }
        "meta" => Ok(match detail {
            "connect" => {
                let version = object.get("version").and_then(Value::as_object);
                let field = |key: &str| {
                    version
                        .map(|v| text_of(v, key).to_owned())
                        .unwrap_or_default()
                };
                Frame::Connect {
                    implementation: field("impl"),
                    version: field("version"),
                }
            }
            "heartbeat" => Frame::Heartbeat {
                interval_ms: object.get("interval").and_then(|v| {
                    v.as_u64().or_else(|| {
                        v.as_f64()
                            .filter(|f| f.is_finite() && *f > 0.0)
                            .map(|f| f as u64)
                    })
                }),
            },
            "status_update" => status_update(object),
            _ => Frame::Ignored,
        }),
        _ => Ok(Frame::Ignored),
    }
}

/// `meta.status_update`.
fn status_update(object: &Map<String, Value>) -> Frame {
    let status = object.get("status").and_then(Value::as_object);
    let good = status.and_then(|s| s.get("good")).and_then(Value::as_bool);
    let bots = status
        .and_then(|s| s.get("bots"))
        .and_then(Value::as_array)
        .map(|bots| {
            bots.iter()
                .filter_map(|bot| {
                    let bot = bot.as_object()?;
                    let user_id = bot
                        .get("self")
                        .and_then(Value::as_object)
                        .and_then(|s| id_of(s.get("user_id")))?;
                    Some(BotStatus {
                        user_id,
                        online: bot.get("online").and_then(Value::as_bool).unwrap_or(true),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    Frame::StatusUpdate { good, bots }
}

/// Event time in milliseconds (`time` is Unix seconds with a fraction); now when absent.
fn time_ms(object: &Map<String, Value>) -> u64 {
    object
        .get("time")
        .and_then(Value::as_f64)
        .filter(|s| s.is_finite() && *s > 0.0 && *s < 1e11)
        .map(|s| (s * 1000.0) as u64)
        .unwrap_or_else(crate::context::now_ms)
}

/// A sender name some implementations add as an extension field (`qq.nickname`, …).
fn name_hint(object: &Map<String, Value>) -> Option<String> {
    object
        .iter()
        .filter(|(key, _)| {
            key.ends_with(".nickname")
                || key.ends_with(".user_displayname")
                || key.ends_with(".card")
        })
        .filter_map(|(_, value)| value.as_str())
        .map(str::trim)
        .find(|name| !name.is_empty())
        .map(str::to_owned)
}

/// A `message.group` event.
fn group_message(
    object: &Map<String, Value>,
    event_self: Option<&str>,
    cx: &DecodeContext<'_>,
) -> Result<Frame, FrameError> {
    let group = id_of(object.get("group_id")).ok_or(FrameError::Field("group_id"))?;
    let user = id_of(object.get("user_id")).ok_or(FrameError::Field("user_id"))?;
    let message_id = id_of(object.get("message_id")).ok_or(FrameError::Field("message_id"))?;
    let user_is = |id: Option<&str>| id == Some(user.as_str());
    if user_is(cx.self_id) || user_is(event_self) || (cx.is_other_bot)(&user) {
        return Ok(Frame::OwnMessage);
    }
    let raw: Vec<(String, Map<String, Value>)> = match object.get("message") {
        Some(Value::Array(items)) => array_segments(items, cx.platform),
        Some(Value::Object(_)) => object
            .get("message")
            .and_then(raw_segment)
            .into_iter()
            .collect(),
        Some(Value::String(text)) => vec![text_raw(text)],
        _ => match object.get("alt_message") {
            Some(Value::String(text)) => vec![text_raw(text)],
            _ => return Err(FrameError::Field("message")),
        },
    };
    let mut fills = Vec::new();
    let segments: Vec<Segment> = raw
        .iter()
        .enumerate()
        .map(|(index, (kind, data))| to_segment(index, kind, data, cx, &mut fills))
        .collect();
    let hint = name_hint(object);
    Ok(Frame::Message(Box::new(Incoming {
        name_known: hint.is_some(),
        envelope: Envelope {
            v: ENVELOPE_VERSION,
            id: Envelope::make_id(cx.account, &group, &message_id),
            origin: cx.origin(group, message_id),
            sender: Sender {
                name: hint.unwrap_or_else(|| user.clone()),
                id: user,
                is_bot: false,
            },
            ts_ms: time_ms(object),
            kind: Kind::Message,
            segments,
            member: None,
        },
        fills,
    })))
}

/// A `notice.group_message_delete` (ComWeChat sends `sub_type: "delete"` and an empty
/// `operator_id`): a recall of that message.
fn group_message_delete(
    object: &Map<String, Value>,
    cx: &DecodeContext<'_>,
) -> Result<Frame, FrameError> {
    let envelope = recall_envelope(object, cx, time_ms(object))?;
    Ok(Frame::Recall(Box::new(envelope)))
}

/// A `notice.group_member_increase` (`join`, `invite`, "") or `group_member_decrease`
/// (`leave`, `kick`, ""; "" and other spellings read as unknown): a member envelope. A
/// decrease of the bot itself is [`How::KickMe`], whatever its `sub_type`.
fn member_notice(
    object: &Map<String, Value>,
    event_self: Option<&str>,
    cx: &DecodeContext<'_>,
    change: Change,
) -> Result<Frame, FrameError> {
    let mut envelope = members::notice_envelope(object, cx, change, time_ms(object), false)
        .inspect_err(|_| note_unknown(cx.platform, "notice", text_of(object, "detail_type")))?;
    let user = envelope.sender.id.as_str();
    let is_self = cx.self_id == Some(user) || event_self == Some(user);
    if let Some(event) = envelope.member.as_mut() {
        if change == Change::Leave && is_self && event.how != How::Disband {
            event.how = How::KickMe;
        }
    }
    Ok(Frame::Member(Box::new(envelope)))
}

/// A text segment from a plain string.
fn text_raw(text: &str) -> (String, Map<String, Value>) {
    let mut data = Map::new();
    data.insert("text".into(), Value::String(text.to_owned()));
    ("text".into(), data)
}

/// `[label] detail` without a dangling space when the detail is empty.
fn labelled(label: &str, detail: &str) -> String {
    let detail = detail.trim();
    if detail.is_empty() {
        label.to_owned()
    } else {
        format!("{label} {detail}")
    }
}

/// Maps a v12 segment to the model, noting what needs a lookup; an unknown type becomes a
/// placeholder and is counted.
fn to_segment(
    index: usize,
    kind: &str,
    data: &Map<String, Value>,
    cx: &DecodeContext<'_>,
    fills: &mut Vec<Fill>,
) -> Segment {
    let platform = cx.platform;
    let placeholder = |hint: &str| Segment::Unsupported { hint: hint.into() };
    let text = |key: &str| data_text(data, key).unwrap_or_default();
    match kind {
        "text" => Segment::Text { text: text("text") },
        "mention" => match data_text(data, "user_id").filter(|id| !id.trim().is_empty()) {
            Some(user_id) => {
                let name = data_text(data, "user_name").filter(|n| !n.trim().is_empty());
                if name.is_none() {
                    fills.push(Fill::MentionName {
                        index,
                        user_id: user_id.clone(),
                    });
                }
                Segment::Mention { id: user_id, name }
            }
            None => placeholder("@?"),
        },
        "mention_all" => Segment::MentionAll,
        "image" | "wx.emoji" => {
            let file_id = data_text(data, "file_id").filter(|f| !f.trim().is_empty());
            let name = data_text(data, "name").filter(|n| !n.is_empty());
            // ComWeChatClient sends voice as an `image` whose file is an `.amr` (MEDIA.md §1.2).
            if name
                .as_deref()
                .is_some_and(|n| n.to_ascii_lowercase().ends_with(".amr"))
            {
                return placeholder("[语音]");
            }
            let sticker = kind == "wx.emoji";
            let url = data_text(data, "url")
                .filter(|u| u.starts_with("http://") || u.starts_with("https://"));
            if url.is_none() && !sticker {
                if let Some(file_id) = &file_id {
                    fills.push(Fill::ImageFile {
                        index,
                        file_id: file_id.clone(),
                    });
                }
            }
            let media_kind = if sticker {
                MediaKind::Sticker
            } else {
                MediaKind::Image
            };
            let media = match (&file_id, &url) {
                (Some(file_id), _) => Some(MediaRef::new(
                    platform,
                    cx.account,
                    file_id,
                    media_kind,
                    Locator::Onebot12File {
                        file_id: file_id.clone(),
                    },
                )),
                (None, Some(url)) => Some(MediaRef::url(url, media_kind)),
                (None, None) => None,
            };
            Segment::Image {
                url,
                name: name.or(file_id),
                sticker,
                flash: false,
                summary: sticker.then(|| "[动画表情]".to_owned()),
                size: data_text(data, "size").and_then(|size| size.trim().parse().ok()),
                media,
            }
        }
        "reply" => match data_text(data, "message_id").filter(|id| !id.is_empty()) {
            Some(message_id) => Segment::Reply { message_id },
            None => placeholder("[回复]"),
        },
        // An article card: title and URL as text, so link filtering sees the URL.
        "wx.link" => Segment::Text {
            text: labelled(
                "[链接]",
                &format!("{} {}", text("title").trim(), text("url").trim()),
            ),
        },
        "wx.app" => placeholder(&labelled("[小程序]", &text("title"))),
        "voice" => placeholder("[语音]"),
        "audio" => placeholder("[音频]"),
        "video" => placeholder("[视频]"),
        "file" => placeholder(&labelled("[文件]", &text("name"))),
        "location" => placeholder(&labelled("[位置]", &text("title"))),
        other => unknown_segment(platform, other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Platform;

    fn cx<'a>(self_id: Option<&'a str>, other: &'a dyn Fn(&str) -> bool) -> DecodeContext<'a> {
        DecodeContext {
            account: "wx",
            platform: Platform::Wechat,
            self_id,
            is_other_bot: other,
        }
    }

    /// The documented example (PROTOCOLS.md §2.2) plus the WeChat extension segments.
    const GROUP_EVENT: &str = r#"{
      "id": "5b1f0d3e-8a7c-4c1e-9a44-0f2d6b9e1c70",
      "time": 1718880000.412,
      "type": "message", "detail_type": "group", "sub_type": "",
      "self": { "platform": "wechat", "user_id": "wxid_botself01" },
      "message_id": "8312456690012345",
      "message": [
        { "type": "mention", "data": { "user_id": "wxid_botself01" } },
        { "type": "text", "data": { "text": " weekly sync at 3pm" } },
        { "type": "image", "data": { "file_id": "c0a8e1f2" } },
        { "type": "wx.link", "data": { "title": "Notes", "des": "d", "url": "https://example.org/n" } },
        { "type": "wx.app", "data": { "appid": "wx1", "title": "Game", "url": "x" } },
        { "type": "wx.emoji", "data": { "file_id": "e1" } },
        { "type": "reply", "data": { "message_id": "77", "user_id": "u" } },
        { "type": "mention_all", "data": {} },
        { "type": "hologram", "data": {} }
      ],
      "alt_message": "@bot weekly sync at 3pm[图片]",
      "group_id": "20993411775@chatroom",
      "user_id": "wxid_k2m9p1q7r3"
    }"#;

    #[test]
    fn a_group_message_becomes_an_incoming_envelope() {
        let none = |_: &str| false;
        let decoded = decode(GROUP_EVENT, &cx(None, &none)).expect("decodes");
        assert_eq!(decoded.self_id.as_deref(), Some("wxid_botself01"));
        let Frame::Message(incoming) = decoded.frame else {
            panic!("a message");
        };
        let envelope = &incoming.envelope;
        assert_eq!(envelope.id, "wx:20993411775@chatroom:8312456690012345");
        assert_eq!(envelope.ts_ms, 1_718_880_000_412);
        assert_eq!(
            envelope.sender.name, "wxid_k2m9p1q7r3",
            "the id until looked up"
        );
        assert!(!incoming.name_known);
        assert_eq!(
            envelope.segments,
            vec![
                Segment::Mention {
                    id: "wxid_botself01".into(),
                    name: None
                },
                Segment::text(" weekly sync at 3pm"),
                Segment::Image {
                    media: Some(MediaRef {
                        key: "wechat:wx:c0a8e1f2".into(),
                        kind: MediaKind::Image,
                        locator: Locator::Onebot12File {
                            file_id: "c0a8e1f2".into()
                        },
                    }),
                    url: None,
                    name: Some("c0a8e1f2".into()),
                    sticker: false,
                    flash: false,
                    summary: None,
                    size: None,
                },
                Segment::text("[链接] Notes https://example.org/n"),
                Segment::Unsupported {
                    hint: "[小程序] Game".into()
                },
                Segment::Image {
                    sticker: true,
                    summary: Some("[动画表情]".into()),
                    media: Some(MediaRef {
                        key: "wechat:wx:e1".into(),
                        kind: MediaKind::Sticker,
                        locator: Locator::Onebot12File {
                            file_id: "e1".into()
                        },
                    }),
                    url: None,
                    name: Some("e1".into()),
                    flash: false,
                    size: None,
                },
                Segment::Reply {
                    message_id: "77".into()
                },
                Segment::MentionAll,
                Segment::Unsupported {
                    hint: "[hologram]".into()
                },
            ]
        );
        assert_eq!(
            incoming.fills,
            vec![
                Fill::MentionName {
                    index: 0,
                    user_id: "wxid_botself01".into()
                },
                Fill::ImageFile {
                    index: 2,
                    file_id: "c0a8e1f2".into()
                },
            ]
        );
    }

    #[test]
    fn own_and_other_bots_messages_are_recognised() {
        let none = |_: &str| false;
        let mine = GROUP_EVENT.replace(
            "\"user_id\": \"wxid_k2m9p1q7r3\"",
            "\"user_id\": \"wxid_botself01\"",
        );
        assert_eq!(
            decode(&mine, &cx(None, &none)).map(|d| d.frame),
            Ok(Frame::OwnMessage)
        );
        assert_eq!(
            decode(GROUP_EVENT, &cx(Some("wxid_k2m9p1q7r3"), &none)).map(|d| d.frame),
            Ok(Frame::OwnMessage)
        );
        let other = |id: &str| id == "wxid_k2m9p1q7r3";
        assert_eq!(
            decode(GROUP_EVENT, &cx(None, &other)).map(|d| d.frame),
            Ok(Frame::OwnMessage)
        );
    }

    #[test]
    fn meta_events_notices_responses_and_garbage() {
        let none = |_: &str| false;
        let frame = |text: &str| decode(text, &cx(None, &none)).map(|d| d.frame);
        assert_eq!(
            frame(
                r#"{"id":"","time":1718880000.0,"type":"meta","detail_type":"connect","sub_type":"","version":{"impl":"ComWechat","version":"v1.0","onebot_version":"12"}}"#
            ),
            Ok(Frame::Connect {
                implementation: "ComWechat".into(),
                version: "v1.0".into()
            })
        );
        assert_eq!(
            frame(
                r#"{"id":"9","time":1.5,"type":"meta","detail_type":"status_update","sub_type":"","status":{"good":true,"bots":[{"self":{"platform":"wechat","user_id":"wxid_botself01"},"online":false}]}}"#
            ),
            Ok(Frame::StatusUpdate {
                good: Some(true),
                bots: vec![BotStatus {
                    user_id: "wxid_botself01".into(),
                    online: false
                }]
            })
        );
        assert_eq!(
            frame(r#"{"type":"meta","detail_type":"heartbeat","interval":5000}"#),
            Ok(Frame::Heartbeat {
                interval_ms: Some(5000)
            })
        );
        let Ok(Frame::Recall(recall)) = frame(
            r#"{"id":"r","time":1718880100.0,"type":"notice","detail_type":"group_message_delete","sub_type":"delete","self":{"platform":"wechat","user_id":"b"},"group_id":"g@chatroom","message_id":"55","user_id":"u1","operator_id":""}"#,
        ) else {
            panic!("a recall");
        };
        assert_eq!(recall.kind, Kind::Recall);
        assert_eq!(recall.origin.message_id, "55");
        assert_eq!(
            recall.sender.id, "u1",
            "an empty operator_id falls back to the author"
        );
        assert_ne!(recall.id, Envelope::make_id("wx", "g@chatroom", "55"));
        let response =
            frame(r#"{"status":"ok","retcode":0,"data":true,"message":"","echo":"qb-1"}"#);
        assert!(matches!(response, Ok(Frame::Response { echo, .. }) if echo == "qb-1"));
        assert_eq!(
            frame(r#"{"type":"request","detail_type":"friend"}"#),
            Ok(Frame::Ignored)
        );
        assert!(matches!(frame("[1]"), Err(FrameError::NotJson(_))));
        assert!(matches!(frame("{\"x\":1}"), Err(FrameError::Unknown)));
        assert_eq!(
            frame(
                r#"{"type":"message","detail_type":"group","user_id":"u","message_id":"1","message":[]}"#
            ),
            Err(FrameError::Field("group_id"))
        );
        let string_message = r#"{"type":"message","detail_type":"group","group_id":"g","user_id":"u","message_id":1,"message":"plain","qq.nickname":"Ann"}"#;
        let Ok(Frame::Message(incoming)) = frame(string_message) else {
            panic!("a message");
        };
        assert_eq!(incoming.envelope.segments, vec![Segment::text("plain")]);
        assert_eq!(incoming.envelope.sender.name, "Ann");
        assert!(incoming.name_known);
    }

    #[test]
    fn bad_input_is_an_error_or_ignored_never_a_panic() {
        let none = |_: &str| false;
        let frame = |text: &str| decode(text, &cx(None, &none)).map(|d| d.frame);
        assert_eq!(
            frame(r#"{"type":"hologram","detail_type":"x"}"#),
            Ok(Frame::Ignored)
        );
        assert!(matches!(
            frame(
                r#"{"type":"message","detail_type":"group","group_id":"g","user_id":1e400,"message_id":"1","message":[]}"#
            ),
            Err(FrameError::NotJson(_))
        ));
        assert_eq!(
            frame(
                r#"{"type":"message","detail_type":"group","group_id":"g","user_id":18446744073709551616,"message_id":"1","message":[]}"#
            ),
            Err(FrameError::Field("user_id"))
        );
        assert!(matches!(
            frame(&"[".repeat(10_000)),
            Err(FrameError::NotJson(_))
        ));
        assert!(matches!(
            frame(&GROUP_EVENT[..GROUP_EVENT.len() - 3]),
            Err(FrameError::NotJson(_))
        ));
        let huge_interval = r#"{"type":"meta","detail_type":"heartbeat","interval":1e308}"#;
        assert!(matches!(frame(huge_interval), Ok(Frame::Heartbeat { .. })));
    }

    /// A v12 member notice as the spec words it.
    fn member_notice(detail: &str, sub_type: &str, user: &str) -> String {
        serde_json::json!({"id": "n1", "time": 1718880200.5, "type": "notice",
            "detail_type": detail, "sub_type": sub_type,
            "self": {"platform": "wechat", "user_id": "wxid_bot"},
            "group_id": "20993411775@chatroom", "user_id": user, "operator_id": ""})
        .to_string()
    }

    #[test]
    fn member_notices_become_member_envelopes_and_the_bot_removed_is_kick_me() {
        use crate::member::{Change, How};
        let none = |_: &str| false;
        let cases = [
            (
                "group_member_increase",
                "join",
                "wxid_a",
                Change::Join,
                How::Join,
            ),
            (
                "group_member_increase",
                "invite",
                "wxid_a",
                Change::Join,
                How::Invite,
            ),
            (
                "group_member_increase",
                "",
                "wxid_a",
                Change::Join,
                How::Unknown,
            ),
            (
                "group_member_decrease",
                "leave",
                "wxid_a",
                Change::Leave,
                How::Leave,
            ),
            (
                "group_member_decrease",
                "kick",
                "wxid_a",
                Change::Leave,
                How::Kick,
            ),
            (
                "group_member_decrease",
                "",
                "wxid_a",
                Change::Leave,
                How::Unknown,
            ),
            (
                "group_member_decrease",
                "kick",
                "wxid_bot",
                Change::Leave,
                How::KickMe,
            ),
            (
                "group_member_decrease",
                "",
                "wxid_bot",
                Change::Leave,
                How::KickMe,
            ),
        ];
        for (detail, sub_type, user, change, how) in cases {
            let decoded = decode(&member_notice(detail, sub_type, user), &cx(None, &none));
            let Ok(Decoded {
                frame: Frame::Member(envelope),
                ..
            }) = decoded
            else {
                panic!("a member envelope: {decoded:?}");
            };
            let member = envelope.member.clone().expect("a member event");
            assert_eq!(
                (member.change, member.how),
                (change, how),
                "{detail} {sub_type} {user}"
            );
            assert_eq!(member.operator, None, "an empty operator is none");
            assert_eq!(envelope.kind, Kind::Member);
            assert_eq!(envelope.sender.id, user);
            assert_eq!(envelope.sender.name, "");
            assert_eq!(envelope.ts_ms, 1_718_880_200_500);
            assert_eq!(
                envelope.id,
                format!(
                    "wx:20993411775@chatroom:member:{}:{user}:1718880200",
                    change.as_str()
                )
            );
        }
        // The configured self id counts too.
        let decoded = decode(
            &member_notice("group_member_decrease", "leave", "wxid_me"),
            &cx(Some("wxid_me"), &none),
        );
        assert!(
            matches!(decoded, Ok(Decoded { frame: Frame::Member(e), .. })
            if e.member.as_ref().is_some_and(|m| m.how == How::KickMe))
        );
    }

    #[test]
    fn member_notices_without_group_or_user_are_errors() {
        let none = |_: &str| false;
        let mut event: Value =
            serde_json::from_str(&member_notice("group_member_increase", "join", "wxid_a"))
                .expect("json");
        if let Some(object) = event.as_object_mut() {
            object.remove("group_id");
        }
        assert_eq!(
            decode(&event.to_string(), &cx(None, &none)),
            Err(FrameError::Field("group_id"))
        );
        let no_user = member_notice("group_member_decrease", "leave", "");
        assert_eq!(
            decode(&no_user, &cx(None, &none)),
            Err(FrameError::Field("user_id"))
        );
    }

    /// Event-shaped JSON: the fields the decoder reads, each maybe absent or of any type.
    fn event() -> impl proptest::strategy::Strategy<Value = Value> {
        use crate::onebot_ws::frame::arb;
        use proptest::prelude::*;
        const TYPES: &[&str] = &["message", "notice", "meta", "request"];
        const DETAILS: &[&str] = &[
            "group",
            "private",
            "group_message_delete",
            "group_member_increase",
            "group_member_decrease",
            "connect",
            "heartbeat",
            "status_update",
        ];
        const SEGMENTS: &[&str] = &[
            "text",
            "mention",
            "mention_all",
            "image",
            "reply",
            "wx.link",
            "wx.app",
            "file",
            "location",
        ];
        const KEYS: &[&str] = &[
            "text",
            "user_id",
            "user_name",
            "file_id",
            "url",
            "name",
            "title",
        ];
        let message = prop_oneof![
            prop::collection::vec(arb::segment(SEGMENTS, KEYS), 0..5).prop_map(Value::Array),
            arb::value(),
        ];
        let self_ = (arb::leaf(), arb::leaf())
            .prop_map(
                |(platform, user_id)| serde_json::json!({"platform": platform, "user_id": user_id}),
            )
            .boxed();
        let status = (
            arb::leaf(),
            prop::collection::vec((self_.clone(), arb::leaf()), 0..3),
        )
            .prop_map(|(good, bots)| {
                let bots: Vec<Value> = bots
                    .into_iter()
                    .map(|(me, online)| serde_json::json!({"self": me, "online": online}))
                    .collect();
                serde_json::json!({"good": good, "bots": bots})
            });
        arb::object(vec![
            ("type", arb::name(TYPES).prop_map(Value::from).boxed()),
            (
                "detail_type",
                arb::name(DETAILS).prop_map(Value::from).boxed(),
            ),
            ("self", prop_oneof![self_, arb::value()].boxed()),
            ("group_id", arb::leaf().boxed()),
            ("user_id", arb::leaf().boxed()),
            ("message_id", arb::leaf().boxed()),
            ("operator_id", arb::leaf().boxed()),
            ("time", arb::leaf().boxed()),
            ("interval", arb::leaf().boxed()),
            ("message", message.boxed()),
            ("alt_message", arb::leaf().boxed()),
            ("wx.nickname", arb::leaf().boxed()),
            ("status", prop_oneof![status, arb::value()].boxed()),
            ("version", arb::value().boxed()),
            ("retcode", arb::leaf().boxed()),
            ("echo", arb::value().boxed()),
        ])
    }

    proptest::proptest! {
        #[test]
        fn any_text_decodes_without_panicking(text in "\\PC{0,200}|.{0,200}") {
            let none = |_: &str| false;
            let _ = decode(&text, &cx(Some("b"), &none));
        }

        #[test]
        fn any_event_shaped_json_decodes_without_panicking(event in event()) {
            let none = |_: &str| false;
            if let Ok(Decoded { frame: Frame::Message(incoming), .. }) =
                decode(&event.to_string(), &cx(None, &none))
            {
                let count = incoming.envelope.segments.len();
                for fill in &incoming.fills {
                    let (Fill::MentionName { index, .. } | Fill::ImageFile { index, .. }) = fill;
                    proptest::prop_assert!(*index < count, "{:?} beyond {}", fill, count);
                }
            }
        }
    }
}
