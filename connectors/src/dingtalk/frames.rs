//! The DingTalk Stream wire format (PROTOCOLS.md §3.2–§3.5): downstream frames
//! (`SYSTEM`/`EVENT`/`CALLBACK` with string headers and a `data` field that is JSON encoded as
//! a string), the ACK frames sent back, and the bot message payload of topic
//! `/v1.0/im/bot/messages/get`.
//!
//! Decoding is tolerant where the protocol notes are unsure: header values and ids may come
//! as numbers, `data` may come as an object instead of a string, and unknown fields are
//! ignored. Nothing here panics on input; every failure is a [`FrameError`].

use serde_json::{json, Map, Value};

use crate::model::Platform;
use crate::onebot_ws::frame::note_unknown;

/// Topic of bot messages on CALLBACK frames.
pub const BOT_MESSAGE_TOPIC: &str = "/v1.0/im/bot/messages/get";
/// The only topic an EVENT subscription takes: which events come is chosen in the developer
/// console (PROTOCOLS.md §3.1).
pub const EVENT_TOPIC: &str = "*";
/// `conversationType` of group chats.
pub const GROUP_CONVERSATION: &str = "2";
/// Longest placeholder taken from a platform msgtype, so a strange value cannot grow the text.
const MAX_HINT_LEN: usize = 32;

/// Why a frame or payload could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame is not JSON (or not an object).
    #[error("frame is not a JSON object: {0}")]
    NotJson(String),
    /// A required field is missing or has the wrong type.
    #[error("frame field `{0}` is missing or not a string")]
    Missing(&'static str),
    /// `type` is none of SYSTEM, EVENT, CALLBACK.
    #[error("unknown frame type {0:?}")]
    UnknownType(String),
    /// `data` could not be decoded as the payload the topic promises.
    #[error("frame data is not the expected JSON: {0}")]
    BadData(String),
}

/// The three kinds of downstream frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameType {
    /// Connection management: `ping`, `disconnect`, …
    System,
    /// Subscribed events.
    Event,
    /// Callbacks such as bot messages; answered with a response.
    Callback,
}

/// One downstream frame, decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct DownFrame {
    /// SYSTEM, EVENT or CALLBACK.
    pub kind: FrameType,
    /// `headers.topic`: what the frame is about.
    pub topic: String,
    /// `headers.messageId`: what the ACK must name.
    pub message_id: String,
    /// `headers.time` in ms when present (used when the payload has no timestamp).
    pub time_ms: Option<u64>,
    /// `data` exactly as received (normally a string), so a ping can be echoed verbatim.
    pub data: Value,
    /// `headers.eventType` of an EVENT frame (`chat_add_member`, …), when present.
    pub event_type: Option<String>,
    /// `headers.eventId` of an EVENT frame, when present: the same on a redelivery.
    pub event_id: Option<String>,
    /// `headers.eventBornTime` of an EVENT frame in ms, when present.
    pub event_born_ms: Option<u64>,
}

/// A string or number field of a JSON object, as a string.
fn text_field(object: &Map<String, Value>, key: &str) -> Option<String> {
    match object.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A number field (or a numeric string) of a JSON object.
fn number_field(object: &Map<String, Value>, key: &str) -> Option<u64> {
    match object.get(key)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Decodes one text frame from the gateway.
///
/// # Errors
/// [`FrameError`] when it is not a frame this client can act on.
pub fn parse_frame(text: &str) -> Result<DownFrame, FrameError> {
    let value: Value =
        serde_json::from_str(text).map_err(|error| FrameError::NotJson(error.to_string()))?;
    let Value::Object(frame) = value else {
        return Err(FrameError::NotJson("not an object".into()));
    };
    let kind = match frame.get("type").and_then(Value::as_str) {
        Some(t) if t.eq_ignore_ascii_case("SYSTEM") => FrameType::System,
        Some(t) if t.eq_ignore_ascii_case("EVENT") => FrameType::Event,
        Some(t) if t.eq_ignore_ascii_case("CALLBACK") => FrameType::Callback,
        Some(other) => {
            return Err(FrameError::UnknownType(
                other.chars().take(MAX_HINT_LEN).collect(),
            ))
        }
        None => return Err(FrameError::Missing("type")),
    };
    let Some(Value::Object(headers)) = frame.get("headers") else {
        return Err(FrameError::Missing("headers"));
    };
    let topic = text_field(headers, "topic").ok_or(FrameError::Missing("headers.topic"))?;
    let message_id = text_field(headers, "messageId")
        .filter(|id| !id.is_empty())
        .ok_or(FrameError::Missing("headers.messageId"))?;
    Ok(DownFrame {
        kind,
        topic,
        message_id,
        time_ms: number_field(headers, "time"),
        data: frame.get("data").cloned().unwrap_or(Value::Null),
        event_type: text_field(headers, "eventType").filter(|t| !t.is_empty()),
        event_id: text_field(headers, "eventId").filter(|id| !id.is_empty()),
        event_born_ms: number_field(headers, "eventBornTime"),
    })
}

/// The `subscriptions` of a `connections/open` request: bot messages, and with `events` also
/// every event the app is subscribed to in the developer console. Without `events` the list
/// is the one qunbridge always sent.
pub fn subscriptions(events: bool) -> Value {
    let mut list = vec![json!({ "type": "CALLBACK", "topic": BOT_MESSAGE_TOPIC })];
    if events {
        list.push(json!({ "type": "EVENT", "topic": EVENT_TOPIC }));
    }
    Value::Array(list)
}

/// An ACK frame: `code`, the `messageId` answered, and `data` (a JSON string).
fn ack(message_id: &str, code: u16, message: &str, data: Value) -> String {
    json!({
        "code": code,
        "headers": { "contentType": "application/json", "messageId": message_id },
        "message": message,
        "data": data,
    })
    .to_string()
}

/// The answer to a SYSTEM `ping`: the same `messageId` and the same `data`.
pub fn pong(frame: &DownFrame) -> String {
    ack(&frame.message_id, 200, "OK", frame.data.clone())
}

/// The ACK of a handled CALLBACK frame.
pub fn callback_ok(message_id: &str) -> String {
    ack(
        message_id,
        200,
        "OK",
        Value::String("{\"response\":null}".into()),
    )
}

/// The ACK of a CALLBACK frame whose payload could not be read (so it is not redelivered:
/// it would not decode the next time either).
pub fn callback_bad_request(message_id: &str, reason: &str) -> String {
    ack(
        message_id,
        400,
        reason,
        Value::String("{\"response\":null}".into()),
    )
}

/// The ACK of a CALLBACK frame on a topic this client does not handle.
pub fn callback_unsupported(message_id: &str) -> String {
    ack(
        message_id,
        404,
        "topic not supported",
        Value::String("{\"response\":null}".into()),
    )
}

/// The ACK of an EVENT frame that needs no redelivery: `note` says what became of it
/// (`published`, `ignored`, `malformed`). An event whose envelopes the broker did not take
/// gets no ACK at all, so DingTalk delivers it again.
pub fn event_ok(message_id: &str, note: &str) -> String {
    ack(
        message_id,
        200,
        "OK",
        Value::String(json!({ "status": "SUCCESS", "message": note }).to_string()),
    )
}

/// The `data` of a frame as a JSON object: decoded from its string (the normal case) or
/// taken as it is when the gateway sent an object.
///
/// # Errors
/// [`FrameError::BadData`] when it is neither.
pub fn data_object(data: &Value) -> Result<Map<String, Value>, FrameError> {
    let decoded = match data {
        Value::String(text) => serde_json::from_str::<Value>(text)
            .map_err(|error| FrameError::BadData(error.to_string()))?,
        other => other.clone(),
    };
    match decoded {
        Value::Object(map) => Ok(map),
        _ => Err(FrameError::BadData("not a JSON object".into())),
    }
}

/// A piece of a bot message before pictures are resolved to URLs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Text as said.
    Text(String),
    /// A picture known by its download code.
    Picture(String),
    /// Anything else, as a readable placeholder.
    Unsupported(String),
}

/// A bot message (PROTOCOLS.md §3.5), with what the relay needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BotMessage {
    /// `conversationId`: the group, and the `openConversationId` for sends.
    pub conversation_id: String,
    /// `conversationType`: `"2"` for groups, `"1"` for one-to-one chats.
    pub conversation_type: String,
    /// `conversationTitle`: the group name, when given.
    pub conversation_title: Option<String>,
    /// `msgId`: the platform's message id (dedup key), when given.
    pub msg_id: Option<String>,
    /// `senderStaffId`, else `senderId`: the sender's id.
    pub sender_id: String,
    /// `senderNick`: the display name.
    pub sender_nick: Option<String>,
    /// `createAt` in ms, when given.
    pub create_at: Option<u64>,
    /// The content.
    pub pieces: Vec<Piece>,
}

impl BotMessage {
    /// True for group conversations, the only ones relayed.
    pub fn is_group(&self) -> bool {
        self.conversation_type == GROUP_CONVERSATION
    }
}

/// The placeholder for a message type that is not relayed as content; a type not known here
/// is also counted (`qunbridge_unknown_input_total{kind="segment"}`).
fn placeholder(msgtype: &str) -> String {
    match msgtype {
        "audio" | "voice" => "[语音]".into(),
        "video" => "[视频]".into(),
        "file" => "[文件]".into(),
        "picture" | "image" => "[图片]".into(),
        "markdown" => "[Markdown]".into(),
        "interactiveCard" | "card" => "[卡片]".into(),
        other => {
            note_unknown(Platform::Dingtalk, "segment", other);
            format!(
                "[{}]",
                other
                    .chars()
                    .filter(|c| !c.is_control())
                    .take(MAX_HINT_LEN)
                    .collect::<String>()
            )
        }
    }
}

/// The download code of a picture object (`downloadCode`, or `pictureDownloadCode`).
fn download_code(object: &Map<String, Value>) -> Option<String> {
    text_field(object, "downloadCode")
        .or_else(|| text_field(object, "pictureDownloadCode"))
        .filter(|code| !code.is_empty())
}

/// Drops the space the removed @bot mention leaves at the start of the text.
fn strip_mention_gap(text: &str) -> String {
    text.trim_start().to_owned()
}

/// The content of a bot message by its `msgtype`.
fn pieces(payload: &Map<String, Value>) -> Vec<Piece> {
    let msgtype = payload
        .get("msgtype")
        .and_then(Value::as_str)
        .unwrap_or("text");
    let content = payload.get("content").and_then(Value::as_object);
    match msgtype {
        "text" => {
            let text = payload
                .get("text")
                .and_then(Value::as_object)
                .and_then(|t| text_field(t, "content"))
                .unwrap_or_default();
            vec![Piece::Text(strip_mention_gap(&text))]
        }
        "picture" => match content.and_then(download_code) {
            Some(code) => vec![Piece::Picture(code)],
            None => vec![Piece::Unsupported(placeholder("picture"))],
        },
        "richText" => {
            let items = content
                .and_then(|c| c.get("richText"))
                .and_then(Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let mut out = Vec::new();
            for item in items {
                let Some(item) = item.as_object() else {
                    continue;
                };
                if let Some(text) = text_field(item, "text") {
                    let text = if out.is_empty() {
                        strip_mention_gap(&text)
                    } else {
                        text
                    };
                    out.push(Piece::Text(text));
                } else if let Some(code) = download_code(item) {
                    out.push(Piece::Picture(code));
                } else if let Some(kind) = item.get("type").and_then(Value::as_str) {
                    out.push(Piece::Unsupported(placeholder(kind)));
                }
            }
            out
        }
        other => vec![Piece::Unsupported(placeholder(other))],
    }
}

/// Decodes the payload of a bot message frame.
///
/// # Errors
/// [`FrameError`] when `data` is not a JSON object or lacks `conversationId`.
pub fn parse_bot_message(data: &Value) -> Result<BotMessage, FrameError> {
    let payload = data_object(data)?;
    let conversation_id = text_field(&payload, "conversationId")
        .filter(|id| !id.is_empty())
        .ok_or(FrameError::Missing("data.conversationId"))?;
    let sender_id = text_field(&payload, "senderStaffId")
        .filter(|id| !id.is_empty())
        .or_else(|| text_field(&payload, "senderId"))
        .unwrap_or_default();
    Ok(BotMessage {
        conversation_id,
        conversation_type: text_field(&payload, "conversationType").unwrap_or_default(),
        conversation_title: text_field(&payload, "conversationTitle").filter(|t| !t.is_empty()),
        msg_id: text_field(&payload, "msgId").filter(|id| !id.is_empty()),
        sender_id,
        sender_nick: text_field(&payload, "senderNick").filter(|n| !n.trim().is_empty()),
        create_at: number_field(&payload, "createAt"),
        pieces: pieces(&payload),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The documented example frame (PROTOCOLS.md §3.2/§3.5).
    fn example_frame() -> String {
        let data = json!({
            "conversationId": "cidQ7xR2m0Lw9==", "conversationType": "2",
            "conversationTitle": "Ops 联调群", "msgId": "msgV8k2==", "msgtype": "text",
            "text": { "content": " relay this please" }, "senderNick": "张三",
            "senderId": "$:LWCP_v1:$p9Q", "senderStaffId": "0127331564",
            "createAt": 1_718_880_000_050u64, "isInAtList": true
        });
        json!({
            "specVersion": "1.0", "type": "CALLBACK",
            "headers": { "appId": "5c1e", "connectionId": "c-81f2",
                         "contentType": "application/json",
                         "messageId": "3a91e0c2_0_18f2a77c1d2_5b3e", "time": "1718880000123",
                         "topic": BOT_MESSAGE_TOPIC },
            "data": data.to_string()
        })
        .to_string()
    }

    #[test]
    fn the_documented_bot_message_decodes() {
        let frame = parse_frame(&example_frame()).expect("frame");
        assert_eq!(frame.kind, FrameType::Callback);
        assert_eq!(frame.topic, BOT_MESSAGE_TOPIC);
        assert_eq!(frame.time_ms, Some(1_718_880_000_123));
        let message = parse_bot_message(&frame.data).expect("payload");
        assert!(message.is_group());
        assert_eq!(message.conversation_id, "cidQ7xR2m0Lw9==");
        assert_eq!(message.sender_id, "0127331564");
        assert_eq!(message.sender_nick.as_deref(), Some("张三"));
        assert_eq!(message.msg_id.as_deref(), Some("msgV8k2=="));
        assert_eq!(
            message.pieces,
            vec![Piece::Text("relay this please".into())]
        );
    }

    #[test]
    fn pictures_rich_text_and_unknown_types() {
        let picture = json!({"conversationId": "c", "msgtype": "picture",
                             "content": {"downloadCode": "dc1"}})
        .to_string();
        assert_eq!(
            parse_bot_message(&Value::String(picture))
                .expect("picture")
                .pieces,
            vec![Piece::Picture("dc1".into())]
        );
        let rich = json!({"conversationId": "c", "msgtype": "richText",
            "content": {"richText": [{"text": " see"}, {"downloadCode": "dc2", "type": "picture"},
                                     {"text": "this"}, {"type": "video"}]}});
        assert_eq!(
            parse_bot_message(&rich).expect("rich").pieces,
            vec![
                Piece::Text("see".into()),
                Piece::Picture("dc2".into()),
                Piece::Text("this".into()),
                Piece::Unsupported("[视频]".into())
            ]
        );
        let audio = json!({"conversationId": "c", "msgtype": "audio", "content": {}});
        assert_eq!(
            parse_bot_message(&audio).expect("audio").pieces,
            vec![Piece::Unsupported("[语音]".into())]
        );
        let odd = json!({"conversationId": "c", "msgtype": "hologram\u{7}"});
        assert_eq!(
            parse_bot_message(&odd).expect("odd").pieces,
            vec![Piece::Unsupported("[hologram]".into())]
        );
    }

    #[test]
    fn events_add_the_event_subscription_and_leave_the_list_alone_otherwise() {
        // What qunbridge sent before `events` existed, byte for byte.
        let before = json!([ { "type": "CALLBACK", "topic": "/v1.0/im/bot/messages/get" } ]);
        assert_eq!(subscriptions(false).to_string(), before.to_string());
        assert_eq!(
            subscriptions(true),
            json!([{"type": "CALLBACK", "topic": BOT_MESSAGE_TOPIC},
                   {"type": "EVENT", "topic": "*"}])
        );
    }

    #[test]
    fn event_headers_are_read_and_the_ack_says_success() {
        let event = json!({"specVersion": "1.0", "type": "EVENT",
            "headers": {"topic": "*", "messageId": "m-9", "time": "7",
                        "eventType": "chat_quit", "eventId": "ev-1", "eventBornTime": 1_718_880_000_123u64,
                        "eventCorpId": "ding3f"},
            "data": "{}"})
        .to_string();
        let frame = parse_frame(&event).expect("event");
        assert_eq!(frame.kind, FrameType::Event);
        assert_eq!(frame.event_type.as_deref(), Some("chat_quit"));
        assert_eq!(frame.event_id.as_deref(), Some("ev-1"));
        assert_eq!(frame.event_born_ms, Some(1_718_880_000_123));
        let ack: Value = serde_json::from_str(&event_ok("m-9", "published")).expect("json");
        assert_eq!(ack["code"], 200);
        assert_eq!(ack["headers"]["messageId"], "m-9");
        let data: Value =
            serde_json::from_str(ack["data"].as_str().expect("a string")).expect("json");
        assert_eq!(data, json!({"status": "SUCCESS", "message": "published"}));
        let callback = parse_frame(&example_frame()).expect("frame");
        assert_eq!((callback.event_type, callback.event_id), (None, None));
    }

    #[test]
    fn ping_is_echoed_with_the_same_id_and_data() {
        let ping = json!({"specVersion": "1.0", "type": "SYSTEM",
            "headers": {"topic": "ping", "messageId": "m-1", "contentType": "application/json",
                        "time": 5},
            "data": "{\"opaque\":\"4b1e\"}"})
        .to_string();
        let frame = parse_frame(&ping).expect("ping");
        assert_eq!(frame.kind, FrameType::System);
        let answer: Value = serde_json::from_str(&pong(&frame)).expect("json");
        assert_eq!(answer["code"], 200);
        assert_eq!(answer["headers"]["messageId"], "m-1");
        assert_eq!(answer["data"], "{\"opaque\":\"4b1e\"}");
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        for bad in [
            "",
            "not json",
            "[]",
            "{}",
            r#"{"type":"CALLBACK"}"#,
            r#"{"type":"NOPE","headers":{"topic":"t","messageId":"m"}}"#,
            r#"{"type":"CALLBACK","headers":{"topic":"t"}}"#,
            r#"{"type":7,"headers":{}}"#,
        ] {
            assert!(parse_frame(bad).is_err(), "{bad:?} should be refused");
        }
        for data in [
            json!("not json"),
            json!("[1]"),
            json!(null),
            json!({"msgtype": "text"}),
        ] {
            assert!(
                parse_bot_message(&data).is_err(),
                "{data} should be refused"
            );
        }
        assert!(parse_frame(&"[".repeat(10_000)).is_err());
        assert!(parse_frame(&example_frame()[..40]).is_err());
        let nested_data = Value::String(format!("{}{}", "[".repeat(5_000), "]".repeat(5_000)));
        assert!(matches!(
            parse_bot_message(&nested_data),
            Err(FrameError::BadData(_))
        ));
        let huge_time = r#"{"type":"SYSTEM","headers":{"topic":"ping","messageId":"m","time":"99999999999999999999999"},"data":"{}"}"#;
        assert_eq!(parse_frame(huge_time).expect("frame").time_ms, None);
    }

    /// A bot message payload: the fields the parser reads, each maybe absent or of any type.
    fn payload() -> impl proptest::strategy::Strategy<Value = Value> {
        use crate::onebot_ws::frame::arb;
        use proptest::prelude::*;
        const TYPES: &[&str] = &["text", "picture", "richText", "audio", "file", "markdown"];
        let item = arb::object(vec![
            ("text", arb::leaf().boxed()),
            ("downloadCode", arb::leaf().boxed()),
            ("type", arb::name(TYPES).prop_map(Value::from).boxed()),
        ]);
        let content = prop_oneof![
            prop::collection::vec(item, 0..4)
                .prop_map(|items| json!({ "richText": items, "downloadCode": "dc" })),
            arb::value(),
        ];
        arb::object(vec![
            ("conversationId", arb::leaf().boxed()),
            ("conversationType", arb::leaf().boxed()),
            ("conversationTitle", arb::leaf().boxed()),
            ("msgId", arb::leaf().boxed()),
            ("msgtype", arb::name(TYPES).prop_map(Value::from).boxed()),
            (
                "text",
                prop_oneof![
                    arb::leaf().prop_map(|c| json!({ "content": c })),
                    arb::value()
                ]
                .boxed(),
            ),
            ("content", content.boxed()),
            ("senderId", arb::leaf().boxed()),
            ("senderStaffId", arb::leaf().boxed()),
            ("senderNick", arb::leaf().boxed()),
            ("createAt", arb::leaf().boxed()),
        ])
    }

    /// A downstream frame whose `data` is a payload (as a string or an object) or anything.
    fn frame() -> impl proptest::strategy::Strategy<Value = Value> {
        use crate::onebot_ws::frame::arb;
        use proptest::prelude::*;
        let headers = arb::object(vec![
            (
                "topic",
                arb::name(&[BOT_MESSAGE_TOPIC, "ping", "disconnect"])
                    .prop_map(Value::from)
                    .boxed(),
            ),
            ("messageId", arb::leaf().boxed()),
            ("time", arb::leaf().boxed()),
        ]);
        let data = prop_oneof![
            payload().prop_map(|p| Value::String(p.to_string())),
            payload(),
            arb::value(),
        ];
        arb::object(vec![
            (
                "type",
                arb::name(&["SYSTEM", "EVENT", "CALLBACK", "callback"])
                    .prop_map(Value::from)
                    .boxed(),
            ),
            ("headers", prop_oneof![headers, arb::value()].boxed()),
            ("data", data.boxed()),
        ])
    }

    proptest::proptest! {
        #[test]
        fn any_text_parses_without_panicking(text in "\\PC{0,200}|.{0,200}") {
            let _ = parse_frame(&text);
            let _ = parse_bot_message(&Value::String(text));
        }

        #[test]
        fn any_frame_shaped_json_parses_without_panicking(frame in frame()) {
            if let Ok(parsed) = parse_frame(&frame.to_string()) {
                proptest::prop_assert!(!parsed.message_id.is_empty());
                let _ = data_object(&parsed.data);
                if let Ok(message) = parse_bot_message(&parsed.data) {
                    proptest::prop_assert!(!message.conversation_id.is_empty());
                }
                let pong: Value = serde_json::from_str(&pong(&parsed)).expect("pong is JSON");
                // The gateway sends `data` as a string, echoed verbatim (floats in an object
                // may come back a digit apart through serde_json's fast float parsing).
                if parsed.data.is_string() {
                    proptest::prop_assert_eq!(&pong["data"], &parsed.data);
                }
            }
        }
    }
}
