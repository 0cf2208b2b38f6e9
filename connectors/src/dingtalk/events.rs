//! DingTalk group events (MEMBERS.md §2.5, PROTOCOLS.md §3.2) as member envelopes: an EVENT
//! frame whose `eventType` is a membership change of a group becomes one `kind = "member"`
//! envelope per member.
//!
//! | `eventType` | change | how | member (the envelope's sender) |
//! |---|---|---|---|
//! | `chat_add_member` | join | `invite` when `operator` is someone else, else `join` | each of `userId[]` |
//! | `chat_remove_member` | leave | `kick` | each of `userId[]` |
//! | `chat_quit` | leave | `leave` | `operator` (the leaver) |
//! | `chat_disband` | leave | `disband` (the bot is out of the group) | none (`""`) |
//!
//! The group is `openConversationId`, the id bot messages carry as `conversationId` (the same
//! value, PROTOCOLS.md §3.5), so both kinds of envelope name one group. DingTalk events carry
//! no names: senders are named `""`. The time is `eventBornTime`, else the payload's
//! `timeStamp`, else the frame's `time`. Every envelope id is
//! `<account>:<group>:member:<change>:<user>:<eventId>`, the same when DingTalk delivers the
//! event again. Nothing here panics on input; a payload that is not what its type promises is
//! a [`FrameError`].

use serde_json::{Map, Value};

use super::frames::{self, DownFrame, FrameError};
use crate::context::now_ms;
use crate::model::{Change, Envelope, How, MemberEvent, Platform, Sender};

/// Members added to a group (by someone, or joining through a link or QR code).
pub const ADD_MEMBER: &str = "chat_add_member";
/// Members removed from a group by someone else.
pub const REMOVE_MEMBER: &str = "chat_remove_member";
/// A member left a group.
pub const QUIT: &str = "chat_quit";
/// The group was disbanded.
pub const DISBAND: &str = "chat_disband";
/// Most members taken from one event: a bigger list is cut there, so a strange payload
/// cannot make a frame publish without end.
pub const MAX_MEMBERS_PER_EVENT: usize = 1_000;
/// Longest event type kept for logs and counters.
const MAX_TYPE_LEN: usize = 64;

/// What an EVENT frame is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupEvent {
    /// A membership change: its envelopes, one per member, in the order DingTalk listed them.
    Members(Vec<Envelope>),
    /// Any other event type (shortened, without control characters): not used.
    Other(String),
}

/// A non-empty string or number field of a JSON object, as a string.
fn text(object: &Map<String, Value>, key: &str) -> Option<String> {
    match object.get(key)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A number field (or a numeric string) of a JSON object.
fn number(object: &Map<String, Value>, key: &str) -> Option<u64> {
    match object.get(key)? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The user ids of `userId`: an array of strings or numbers (a single id is taken too), each
/// once, empty ones left out.
fn user_ids(object: &Map<String, Value>) -> Vec<String> {
    let one = |value: &Value| match value {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let ids: Vec<String> = match object.get("userId") {
        Some(Value::Array(items)) => items.iter().filter_map(one).collect(),
        Some(value) => one(value).into_iter().collect(),
        None => Vec::new(),
    };
    let mut unique: Vec<String> = Vec::with_capacity(ids.len().min(MAX_MEMBERS_PER_EVENT));
    for id in ids {
        if unique.len() == MAX_MEMBERS_PER_EVENT {
            break;
        }
        if !unique.contains(&id) {
            unique.push(id);
        }
    }
    unique
}

/// The event type of a frame: `headers.eventType`, else its topic (when it is not `*`).
pub fn event_type(frame: &DownFrame) -> String {
    let raw = frame
        .event_type
        .as_deref()
        .unwrap_or(if frame.topic == frames::EVENT_TOPIC {
            ""
        } else {
            frame.topic.as_str()
        });
    raw.chars()
        .filter(|c| !c.is_control())
        .take(MAX_TYPE_LEN)
        .collect()
}

/// Reads an EVENT frame of `account`.
///
/// # Errors
/// [`FrameError`] when a membership event's `data` is not a JSON object, lacks
/// `openConversationId`, or names no member where one is needed.
pub fn parse_event(account: &str, frame: &DownFrame) -> Result<GroupEvent, FrameError> {
    let kind = event_type(frame);
    let (change, how_for) = match kind.as_str() {
        ADD_MEMBER => (Change::Join, None),
        REMOVE_MEMBER => (Change::Leave, Some(How::Kick)),
        QUIT => (Change::Leave, Some(How::Leave)),
        DISBAND => (Change::Leave, Some(How::Disband)),
        _ => return Ok(GroupEvent::Other(kind)),
    };
    let data = frames::data_object(&frame.data)?;
    let group =
        text(&data, "openConversationId").ok_or(FrameError::Missing("data.openConversationId"))?;
    let operator = text(&data, "operator");
    let members = match kind.as_str() {
        QUIT => vec![operator
            .clone()
            .or_else(|| user_ids(&data).into_iter().next())
            .ok_or(FrameError::Missing("data.operator"))?],
        DISBAND => vec![String::new()],
        _ => {
            let ids = user_ids(&data);
            if ids.is_empty() {
                return Err(FrameError::Missing("data.userId"));
            }
            ids
        }
    };
    let ts_ms = frame
        .event_born_ms
        .or_else(|| number(&data, "timeStamp"))
        .or(frame.time_ms)
        .unwrap_or_else(now_ms);
    let event_id = frame
        .event_id
        .clone()
        .unwrap_or_else(|| frame.message_id.clone());
    let envelopes = members
        .into_iter()
        .map(|member| {
            let how = how_for.unwrap_or(match &operator {
                Some(op) if *op != member => How::Invite,
                _ => How::Join,
            });
            // The leaver of `chat_quit` is the operator; nobody else made the change.
            let operator = match how {
                How::Leave => None,
                _ => operator.clone(),
            };
            let message_id = format!("member:{}:{member}:{event_id}", change.as_str());
            let event = MemberEvent {
                change,
                how,
                operator,
                member_count: None,
            };
            let member = Sender {
                id: member,
                name: String::new(),
                is_bot: false,
            };
            Envelope::membership(
                account,
                Platform::Dingtalk,
                group.clone(),
                message_id,
                member,
                ts_ms,
                event,
            )
        })
        .collect();
    Ok(GroupEvent::Members(envelopes))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::model::Kind;

    /// An EVENT frame as the gateway sends it: `data` JSON-encoded into a string.
    fn event_frame(event_type: &str, data: Value) -> DownFrame {
        let text = json!({
            "specVersion": "1.0", "type": "EVENT",
            "headers": { "appId": "5c1e", "connectionId": "c-1", "contentType": "application/json",
                         "messageId": "frame-7", "time": "1718880000999", "topic": "*",
                         "eventType": event_type, "eventId": "ev-42",
                         "eventCorpId": "ding3f", "eventBornTime": "1718880000123",
                         "eventUnifiedAppId": "app-1" },
            "data": data.to_string(),
        })
        .to_string();
        frames::parse_frame(&text).expect("an EVENT frame")
    }

    /// The envelopes of a membership event.
    fn members(frame: &DownFrame) -> Vec<Envelope> {
        match parse_event("ding", frame).expect("readable") {
            GroupEvent::Members(envelopes) => envelopes,
            GroupEvent::Other(kind) => panic!("not a membership event: {kind}"),
        }
    }

    /// (member, change, how, operator) of each envelope.
    fn summary(envelopes: &[Envelope]) -> Vec<(String, Change, How, Option<String>)> {
        envelopes
            .iter()
            .map(|e| {
                let m = e.member.clone().expect("a member event");
                (e.sender.id.clone(), m.change, m.how, m.operator)
            })
            .collect()
    }

    #[test]
    fn add_member_is_one_join_per_user_invited_by_the_operator() {
        let frame = event_frame(
            ADD_MEMBER,
            json!({"openConversationId": "cidQ7x+R2m/0Lw9==", "chatId": "chat1",
                   "userId": ["u1", "u2", "boss"], "unionId": ["x", "y", "z"],
                   "operator": "boss", "operatorUnionId": "zz", "timeStamp": 1_718_880_000_000u64}),
        );
        let envelopes = members(&frame);
        assert_eq!(
            summary(&envelopes),
            vec![
                ("u1".into(), Change::Join, How::Invite, Some("boss".into())),
                ("u2".into(), Change::Join, How::Invite, Some("boss".into())),
                // Adding oneself (a link or QR code) is joining.
                ("boss".into(), Change::Join, How::Join, Some("boss".into())),
            ]
        );
        let first = &envelopes[0];
        assert_eq!(first.kind, Kind::Member);
        assert_eq!(first.origin.platform, Platform::Dingtalk);
        assert_eq!(first.origin.account, "ding");
        assert_eq!(first.origin.group, "cidQ7x+R2m/0Lw9==");
        assert_eq!(first.origin.message_id, "member:join:u1:ev-42");
        assert_eq!(first.id, "ding:cidQ7x+R2m/0Lw9==:member:join:u1:ev-42");
        assert_eq!(first.sender.name, "", "DingTalk events carry no names");
        assert!(first.segments.is_empty());
        assert_eq!(first.ts_ms, 1_718_880_000_123, "eventBornTime wins");
        assert_eq!(
            first.member.as_ref().and_then(|m| m.member_count),
            None,
            "DingTalk tells no member count"
        );
    }

    #[test]
    fn add_member_without_an_operator_is_a_join() {
        let frame = event_frame(
            ADD_MEMBER,
            json!({"openConversationId": "cid1", "userId": ["u1", "u1", "", 7]}),
        );
        assert_eq!(
            summary(&members(&frame)),
            vec![
                ("u1".into(), Change::Join, How::Join, None),
                ("7".into(), Change::Join, How::Join, None),
            ]
        );
    }

    #[test]
    fn remove_quit_and_disband_are_leaves() {
        let removed = event_frame(
            REMOVE_MEMBER,
            json!({"openConversationId": "cid1", "userId": ["u3"], "operator": "admin"}),
        );
        assert_eq!(
            summary(&members(&removed)),
            vec![("u3".into(), Change::Leave, How::Kick, Some("admin".into()))]
        );
        let quit = event_frame(
            QUIT,
            json!({"openConversationId": "cid1", "operator": "u4"}),
        );
        let envelopes = members(&quit);
        assert_eq!(
            summary(&envelopes),
            vec![("u4".into(), Change::Leave, How::Leave, None)]
        );
        assert_eq!(envelopes[0].origin.message_id, "member:leave:u4:ev-42");
        let disband = event_frame(
            DISBAND,
            json!({"openConversationId": "cid1", "operator": "owner"}),
        );
        let envelopes = members(&disband);
        assert_eq!(
            summary(&envelopes),
            vec![("".into(), Change::Leave, How::Disband, Some("owner".into()))]
        );
        assert!(envelopes[0]
            .member
            .as_ref()
            .is_some_and(|m| m.how.removes_bot()));
        assert_eq!(envelopes[0].id, "ding:cid1:member:leave::ev-42");
    }

    #[test]
    fn the_time_falls_back_to_the_payload_then_the_frame() {
        let mut frame = event_frame(
            QUIT,
            json!({"openConversationId": "cid1", "operator": "u4", "timeStamp": "1718880000001"}),
        );
        frame.event_born_ms = None;
        assert_eq!(members(&frame)[0].ts_ms, 1_718_880_000_001);
        frame.data =
            Value::String(json!({"openConversationId": "cid1", "operator": "u4"}).to_string());
        assert_eq!(members(&frame)[0].ts_ms, 1_718_880_000_999);
        // Without an eventId the frame's messageId names the event.
        frame.event_id = None;
        assert_eq!(
            members(&frame)[0].origin.message_id,
            "member:leave:u4:frame-7"
        );
    }

    #[test]
    fn other_event_types_are_told_apart() {
        let frame = event_frame("chat_update_title", json!({"openConversationId": "cid1"}));
        assert_eq!(
            parse_event("ding", &frame),
            Ok(GroupEvent::Other("chat_update_title".into()))
        );
        let mut frame = event_frame("x", json!({}));
        frame.event_type = None;
        assert_eq!(
            parse_event("ding", &frame),
            Ok(GroupEvent::Other("".into()))
        );
        frame.topic = "user_add_org\u{7}".into();
        assert_eq!(
            parse_event("ding", &frame),
            Ok(GroupEvent::Other("user_add_org".into()))
        );
    }

    #[test]
    fn malformed_membership_events_are_errors_not_panics() {
        for (kind, data) in [
            (ADD_MEMBER, json!({"userId": ["u1"]})),
            (ADD_MEMBER, json!({"openConversationId": "cid1"})),
            (
                ADD_MEMBER,
                json!({"openConversationId": "cid1", "userId": []}),
            ),
            (
                ADD_MEMBER,
                json!({"openConversationId": "", "userId": ["u1"]}),
            ),
            (
                REMOVE_MEMBER,
                json!({"openConversationId": "cid1", "userId": {"a": 1}}),
            ),
            (QUIT, json!({"openConversationId": "cid1"})),
            (DISBAND, json!({"openConversationId": ["cid1"]})),
        ] {
            assert!(
                parse_event("ding", &event_frame(kind, data.clone())).is_err(),
                "{kind} {data} should be refused"
            );
        }
        let mut frame = event_frame(ADD_MEMBER, json!({}));
        for data in [json!("not json"), json!("[1]"), Value::Null] {
            frame.data = data;
            assert!(parse_event("ding", &frame).is_err());
        }
    }

    #[test]
    fn a_huge_member_list_is_cut() {
        let ids: Vec<String> = (0..MAX_MEMBERS_PER_EVENT + 50)
            .map(|n| format!("u{n}"))
            .collect();
        let frame = event_frame(
            ADD_MEMBER,
            json!({"openConversationId": "cid1", "userId": ids}),
        );
        assert_eq!(members(&frame).len(), MAX_MEMBERS_PER_EVENT);
    }

    /// The data of a membership event: the fields read, each maybe absent or of any type,
    /// `userId` also as a list of scalars.
    fn event_data() -> impl proptest::strategy::Strategy<Value = Value> {
        use crate::onebot_ws::frame::arb;
        use proptest::prelude::*;
        arb::object(vec![
            ("openConversationId", arb::leaf().boxed()),
            (
                "userId",
                prop_oneof![
                    prop::collection::vec(arb::leaf(), 0..5).prop_map(Value::Array),
                    arb::value()
                ]
                .boxed(),
            ),
            ("operator", arb::leaf().boxed()),
            ("timeStamp", arb::leaf().boxed()),
        ])
    }

    proptest::proptest! {
        #[test]
        fn any_event_data_reads_without_panicking(
            kind in proptest::sample::select(vec![ADD_MEMBER, REMOVE_MEMBER, QUIT, DISBAND, "other"]),
            data in event_data(),
        ) {
            let mut frame = event_frame(kind, json!({}));
            frame.data = Value::String(data.to_string());
            if let Ok(GroupEvent::Members(envelopes)) = parse_event("ding", &frame) {
                proptest::prop_assert!(!envelopes.is_empty());
                for envelope in envelopes {
                    proptest::prop_assert!(!envelope.origin.group.is_empty());
                    proptest::prop_assert_eq!(envelope.kind, Kind::Member);
                }
            }
        }
    }
}
