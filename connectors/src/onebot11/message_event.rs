//! The frame nearly every OneBot v11 socket carries most, a group message event, read
//! straight into typed, borrowed fields instead of a JSON tree: a tree costs an allocation
//! for every key and string of the event (the sender's card and role, `raw_message`, `font`,
//! …), which were a third of the allocations of relaying a OneBot message. Only what the
//! general decoder ([`super::event`]) reads is kept, and it is read the same way; anything
//! this reader does not take as it expects (another event, a response, an id sent as a
//! float, an anonymous sender, a duplicate key, a message that is neither an array nor a
//! string) is left to the general decoder, so both give the same result for every frame.

use std::borrow::Cow;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::Value;

use super::cq::{self, RawSegment};
use super::event::{
    is_own_message, message_envelope, sender_name, to_segment, Frame, MessageFields,
};
use crate::model::Segment;
use crate::onebot_ws::frame::{note_unknown, raw_segment, DecodeContext, FrameError};

/// The fields of a group message event the relay reads; the others are skipped unread.
#[derive(Deserialize)]
struct WireEvent<'a> {
    /// `message` for a message event.
    #[serde(borrow)]
    post_type: Option<Cow<'a, str>>,
    /// `group` for a group message.
    #[serde(borrow)]
    message_type: Option<Cow<'a, str>>,
    /// The group.
    group_id: Option<WireId>,
    /// The author.
    user_id: Option<WireId>,
    /// The message.
    message_id: Option<WireId>,
    /// The bot the event is for.
    self_id: Option<WireId>,
    /// Unix seconds; kept raw, so that any JSON value reads as the general decoder reads it.
    #[serde(borrow)]
    time: Option<&'a RawValue>,
    /// The author's card and nickname ([`WireSender`], when it is an object).
    #[serde(borrow)]
    sender: Option<&'a RawValue>,
    /// An anonymous author (`null` for everyone else): left to the general decoder.
    #[serde(borrow)]
    anonymous: Option<&'a RawValue>,
    /// The segments (an array, or a string in CQ code).
    #[serde(borrow)]
    message: Option<&'a RawValue>,
}

/// The names of an event's author.
#[derive(Deserialize)]
struct WireSender<'a> {
    /// The group card.
    #[serde(borrow)]
    card: Option<Cow<'a, str>>,
    /// The account's nickname.
    #[serde(borrow)]
    nickname: Option<Cow<'a, str>>,
}

/// A text segment, the common one: `{"type":"text","data":{"text":…}}`.
#[derive(Deserialize)]
struct WireSegment<'a> {
    /// The segment's type.
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    /// Its data ([`WireTextData`], when it is an object).
    #[serde(borrow)]
    data: Option<&'a RawValue>,
}

/// A text segment's data.
#[derive(Deserialize)]
struct WireTextData<'a> {
    /// The text.
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
}

/// An id as [`crate::onebot_ws::frame::id_of`] reads it: a string (trimmed, `None` when
/// empty) or an integer written out. Any other JSON value fails this reader.
struct WireId(Option<String>);

impl<'de> Deserialize<'de> for WireId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<WireId, D::Error> {
        /// Takes strings and integers.
        struct IdVisitor;
        impl Visitor<'_> for IdVisitor {
            type Value = WireId;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string or an integer")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<WireId, E> {
                let s = s.trim();
                Ok(WireId((!s.is_empty()).then(|| s.to_owned())))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<WireId, E> {
                Ok(WireId(Some(n.to_string())))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<WireId, E> {
                Ok(WireId(Some(n.to_string())))
            }
        }
        deserializer.deserialize_any(IdVisitor)
    }
}

/// True when `json` is an object. The typed readers take a struct from an array too (its
/// fields by position), which the general decoder never does.
fn is_object(json: &str) -> bool {
    json.trim_start().starts_with('{')
}

/// `json` read as `T` when it is an object `T` takes.
fn object<'a, T: Deserialize<'a>>(json: &'a str) -> Option<T> {
    if is_object(json) {
        serde_json::from_str(json).ok()
    } else {
        None
    }
}

/// The id in `field`, when present and usable.
fn id(field: Option<WireId>) -> Option<String> {
    field.and_then(|id| id.0)
}

/// Decodes one text frame: a group message event through the typed reader when it takes it,
/// any other frame through the general decoder ([`super::event::decode`]).
///
/// # Errors
/// As [`super::event::decode`].
pub fn decode_frame(text: &str, cx: &DecodeContext<'_>) -> Result<Frame, FrameError> {
    match decode(text, cx) {
        Some(frame) => Ok(frame),
        None => super::event::decode(text, cx),
    }
}

/// Decodes `text` when it is a group message event this reader takes whole; `None` leaves
/// the frame to the general decoder.
fn decode(text: &str, cx: &DecodeContext<'_>) -> Option<Frame> {
    let event: WireEvent<'_> = object(text)?;
    if event.post_type.as_deref() != Some("message")
        || event.message_type.as_deref() != Some("group")
        || event.anonymous.is_some()
    {
        return None;
    }
    let group = id(event.group_id)?;
    let user = id(event.user_id)?;
    let message_id = id(event.message_id)?;
    if is_own_message(cx, &user, id(event.self_id)) {
        return Some(Frame::OwnMessage);
    }
    let (card, nickname) = match event.sender {
        // Not an object: no names, as the general decoder reads it (`null` reads as absent).
        Some(sender) if !is_object(sender.get()) => (None, None),
        Some(sender) => {
            let sender: WireSender<'_> = object(sender.get())?;
            (sender.card, sender.nickname)
        }
        None => (None, None),
    };
    let name = sender_name(None, card.as_deref(), nickname.as_deref(), &user);
    let segments = segments(event.message?, cx)?;
    Some(message_envelope(
        MessageFields {
            group,
            user,
            message_id,
            name,
            segments,
            time: event
                .time
                .and_then(|time| serde_json::from_str::<u64>(time.get()).ok()),
        },
        cx,
    ))
}

/// The segments of a message array or CQ-code string; `None` for any other value.
fn segments(message: &RawValue, cx: &DecodeContext<'_>) -> Option<Vec<Segment>> {
    let raw = message.get();
    if raw.starts_with('"') {
        let text: Cow<'_, str> = serde_json::from_str(raw).ok()?;
        return Some(
            cq::parse(&text)
                .iter()
                .map(|segment| to_segment(segment, cx.platform, cx.account))
                .collect(),
        );
    }
    if !raw.starts_with('[') {
        return None;
    }
    let items: Vec<&RawValue> = serde_json::from_str(raw).ok()?;
    Some(
        items
            .into_iter()
            .filter_map(|item| segment(item, cx))
            .collect(),
    )
}

/// One item of a message array: a text segment read directly, any other item as the general
/// decoder reads it (an item that is no segment is counted and skipped).
fn segment(item: &RawValue, cx: &DecodeContext<'_>) -> Option<Segment> {
    let text = object::<WireSegment<'_>>(item.get())
        .filter(|segment| segment.kind == "text")
        .and_then(|segment| object::<WireTextData<'_>>(segment.data?.get()))
        .and_then(|data| data.text);
    if let Some(text) = text {
        return Some(Segment::Text {
            text: text.into_owned(),
        });
    }
    let value: Value = serde_json::from_str(item.get()).ok()?;
    match raw_segment(&value) {
        Some((kind, data)) => Some(to_segment(
            &RawSegment { kind, data },
            cx.platform,
            cx.account,
        )),
        None => {
            note_unknown(cx.platform, "segment", "<not a segment object>");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Envelope;
    use crate::onebot11::event::decode as decode_tree;
    use crate::Platform;

    fn cx<'a>(self_id: Option<&'a str>, other: &'a dyn Fn(&str) -> bool) -> DecodeContext<'a> {
        DecodeContext {
            account: "qq",
            platform: Platform::Qq,
            self_id,
            is_other_bot: other,
        }
    }

    /// The typed reader's frame, and the JSON tree's for the same text with the typed
    /// reader's `ts_ms` when the event has no usable time (both then take "now").
    fn both(text: &str, cx: &DecodeContext<'_>) -> (Option<Frame>, Result<Frame, FrameError>) {
        let typed = decode(text, cx);
        let mut tree = decode_tree(text, cx);
        if let (Some(Frame::Envelope(typed)), Ok(Frame::Envelope(tree))) = (&typed, &mut tree) {
            let timed = serde_json::from_str::<Value>(text)
                .ok()
                .and_then(|v| v.get("time").and_then(Value::as_u64))
                .is_some();
            if !timed {
                tree.ts_ms = typed.ts_ms;
            }
        }
        (typed, tree)
    }

    fn envelope(frame: Option<Frame>) -> Envelope {
        match frame {
            Some(Frame::Envelope(envelope)) => *envelope,
            other => panic!("not an envelope: {other:?}"),
        }
    }

    #[test]
    fn a_napcat_group_message_is_read_by_the_typed_reader_as_the_tree_reads_it() {
        let none = |_: &str| false;
        let cx = cx(Some("2000"), &none);
        let text = r#"{"self_id":2000,"user_id":42,"time":1733400000,"message_id":-77,
            "message_seq":9,"real_id":9,"message_type":"group",
            "sender":{"user_id":42,"nickname":" 阿明 ","card":"","role":"member"},
            "raw_message":"你好\"世界\"","font":14,"sub_type":"normal",
            "message":[{"type":"text","data":{"text":"你好\"世界\"\n"}},
                       {"type":"at","data":{"qq":"2000","name":"bot"}},
                       {"type":"image","data":{"file":"abc.jpg","url":"https://x/y","sub_type":0}},
                       7],
            "message_format":"array","post_type":"message","group_id":" 1001 "}"#;
        let (typed, tree) = both(text, &cx);
        assert_eq!(Ok(typed.clone().expect("typed reader took it")), tree);
        let envelope = envelope(typed);
        assert_eq!(envelope.origin.group, "1001");
        assert_eq!(envelope.origin.message_id, "-77");
        assert_eq!(envelope.sender.name, "阿明");
        assert_eq!(envelope.ts_ms, 1_733_400_000_000);
        assert_eq!(envelope.segments.len(), 3);
        assert_eq!(
            envelope.segments[0],
            Segment::Text {
                text: "你好\"世界\"\n".into()
            }
        );
    }

    #[test]
    fn cq_strings_own_messages_and_missing_names_read_alike() {
        let none = |_: &str| false;
        let cx = cx(Some("2000"), &none);
        for text in [
            r#"{"post_type":"message","message_type":"group","group_id":1,"user_id":"5","message_id":3,"message":"hi[CQ:face,id=14] there"}"#,
            r#"{"post_type":"message","message_type":"group","group_id":1,"user_id":2000,"message_id":3,"message":[]}"#,
            r#"{"post_type":"message","message_type":"group","group_id":1,"user_id":5,"self_id":5,"message_id":3,"message":[]}"#,
            r#"{"post_type":"message","message_type":"group","group_id":1,"user_id":5,"message_id":3,"sender":null,"anonymous":null,"time":"17","message":[{"type":"text","data":{"text":5}}]}"#,
            // Names and segments that are arrays, not objects.
            r#"{"post_type":"message","message_type":"group","group_id":1,"user_id":5,"message_id":3,"sender":["a","b"],"message":[["text",{"text":"x"}],{"type":"text","data":["y"]}]}"#,
        ] {
            let (typed, tree) = both(text, &cx);
            assert_eq!(Ok(typed.expect("typed reader took it")), tree, "{text}");
        }
    }

    #[test]
    fn what_the_typed_reader_does_not_take_is_left_to_the_tree() {
        let none = |_: &str| false;
        let cx = cx(None, &none);
        for text in [
            // A response, a heartbeat, a notice, an array.
            r#"["message","group",1,5,3]"#,
            r#"{"status":"ok","retcode":0,"data":{"message_id":5},"echo":"7"}"#,
            r#"{"post_type":"meta_event","meta_event_type":"heartbeat","interval":5000}"#,
            r#"{"post_type":"notice","notice_type":"group_recall","group_id":1,"message_id":2}"#,
            // An id as a float, an anonymous sender, a duplicate key, an object message,
            // no message (the raw message then counts).
            r#"{"post_type":"message","message_type":"group","group_id":1.5,"user_id":5,"message_id":3,"message":[]}"#,
            r#"{"post_type":"message","message_type":"group","group_id":1,"user_id":5,"message_id":3,"anonymous":{"name":"匿名"},"message":[]}"#,
            r#"{"post_type":"message","message_type":"group","group_id":1,"group_id":2,"user_id":5,"message_id":3,"message":[]}"#,
            r#"{"post_type":"message","message_type":"group","group_id":1,"user_id":5,"message_id":3,"message":{"type":"text","data":{"text":"x"}}}"#,
            r#"{"post_type":"message","message_type":"group","group_id":1,"user_id":5,"message_id":3,"raw_message":"x"}"#,
        ] {
            assert_eq!(decode(text, &cx), None, "{text}");
        }
    }

    /// Group message events as implementations send them, each field now and then odd: the
    /// typed reader takes most of them, and leaves the rest.
    fn group_message_event() -> impl proptest::strategy::Strategy<Value = Value> {
        use crate::onebot_ws::frame::arb;
        use proptest::prelude::*;
        const SEGMENTS: &[&str] = &["text", "at", "face", "image", "reply", "share", "json"];
        const KEYS: &[&str] = &[
            "text", "qq", "id", "file", "url", "name", "title", "sub_type",
        ];
        let id = || {
            prop_oneof![
                4 => any::<i64>().prop_map(Value::from),
                2 => "[ 0-9]{0,12}".prop_map(Value::from),
                1 => arb::leaf(),
            ]
        };
        let name = || prop_oneof![3 => "\\PC{0,8}".prop_map(Value::from), 1 => arb::leaf()];
        let text_segment = "\\PC{0,30}"
            .prop_map(|text| serde_json::json!({"type": "text", "data": {"text": text}}));
        let message = prop_oneof![
            6 => prop::collection::vec(
                prop_oneof![3 => text_segment, 2 => arb::segment(SEGMENTS, KEYS)],
                0..4
            )
            .prop_map(Value::Array),
            2 => "\\PC{0,40}".prop_map(Value::from),
            1 => arb::value(),
        ];
        let sender = prop_oneof![
            6 => (name(), name()).prop_map(|(card, nickname)| {
                serde_json::json!({"user_id": 5, "card": card, "nickname": nickname, "role": "member"})
            }),
            1 => arb::value(),
        ];
        let anonymous = prop_oneof![6 => Just(Value::Null), 1 => arb::value()];
        (
            (id(), id(), id(), id()),
            (arb::leaf(), sender, anonymous, message),
            prop::collection::btree_map("[a-z_]{1,10}", arb::value(), 0..3),
        )
            .prop_map(
                |(
                    (group, user, message_id, self_id),
                    (time, sender, anonymous, message),
                    extra,
                )| {
                    let mut object: serde_json::Map<String, Value> = extra.into_iter().collect();
                    for (key, value) in [
                        ("post_type", Value::from("message")),
                        ("message_type", Value::from("group")),
                        ("group_id", group),
                        ("user_id", user),
                        ("message_id", message_id),
                        ("self_id", self_id),
                        ("time", time),
                        ("sender", sender),
                        ("anonymous", anonymous),
                        ("message", message),
                    ] {
                        object.insert(key.to_owned(), value);
                    }
                    Value::Object(object)
                },
            )
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(1024))]
        #[test]
        fn both_readers_agree_on_every_group_message_the_typed_one_takes(
            event in group_message_event()
        ) {
            let none = |_: &str| false;
            let text = event.to_string();
            for self_id in [None, Some("7")] {
                let cx = cx(self_id, &none);
                if let (Some(typed), tree) = both(&text, &cx) {
                    proptest::prop_assert_eq!(Ok(typed), tree);
                }
            }
        }
    }

    #[test]
    fn the_typed_reader_takes_most_generated_group_messages() {
        use proptest::strategy::{Strategy, ValueTree};
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let none = |_: &str| false;
        let cx = cx(None, &none);
        let taken = (0..1000)
            .filter_map(|_| group_message_event().new_tree(&mut runner).ok())
            .filter(|tree| decode(&tree.current().to_string(), &cx).is_some())
            .count();
        // Otherwise the agreement test above would compare little.
        assert!(taken > 300, "{taken} of 1000");
    }
}
