//! What both OneBot versions' frame decoders share: the error type, the decoding context
//! (who the bot is), tolerant readers for ids and text fields that implementations send as
//! numbers or strings, the counter of input the decoders do not know (event and segment
//! types), which is relayed or ignored but never fatal, and the pieces both wire formats
//! spell alike (segment objects, action responses, recall notices).

use serde_json::{Map, Value};

use crate::model::{Envelope, Kind, Origin, Platform, Segment, Sender, ENVELOPE_VERSION};

/// Why a frame could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not UTF-8 JSON, or not a JSON object.
    #[error("not a JSON object: {0}")]
    NotJson(String),
    /// Neither an event nor a response.
    #[error("neither an event nor an action response")]
    Unknown,
    /// An event without a field it needs.
    #[error("{0} is missing or malformed")]
    Field(&'static str),
}

/// Context for decoding: who we are.
pub struct DecodeContext<'a> {
    /// Account id of the connector.
    pub account: &'a str,
    /// Platform the account is on (either OneBot version serves QQ and WeChat).
    pub platform: Platform,
    /// The bot's own user id, once known.
    pub self_id: Option<&'a str>,
    /// True for other configured bot accounts on this platform.
    pub is_other_bot: &'a dyn Fn(&str) -> bool,
}

impl DecodeContext<'_> {
    /// Where a message of `group` came from: this account, on its platform (the group's name
    /// is not in OneBot events).
    pub fn origin(&self, group: String, message_id: String) -> Origin {
        Origin {
            platform: self.platform,
            account: self.account.to_owned(),
            group,
            message_id,
            group_name: None,
        }
    }
}

/// A segment type the decoder does not know: counted (see [`note_unknown`]) and relayed as
/// its type name in brackets, so readers see that something was there.
pub fn unknown_segment(platform: Platform, type_name: &str) -> Segment {
    note_unknown(platform, "segment", type_name);
    Segment::Unsupported {
        hint: format!("[{type_name}]"),
    }
}

/// An id that may be sent as a number or a string; `None` for anything else or empty.
pub fn id_of(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// A string field, empty when absent or not a string.
pub fn text_of<'a>(object: &'a Map<String, Value>, key: &str) -> &'a str {
    object.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Longest type name written to the log for an unknown event or segment type.
const MAX_LOGGED_TYPE: usize = 32;

/// Counts (`qunbridge_unknown_input_total{platform,kind}`) and logs at debug level an event or
/// segment type the decoder does not know; `kind` is `event` or `segment`. Unknown events are
/// ignored and unknown segments relayed as a placeholder: neither ends the connection.
pub fn note_unknown(platform: Platform, kind: &'static str, type_name: &str) {
    let shown: String = type_name
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_LOGGED_TYPE)
        .collect();
    tracing::debug!(message = "Unknown input type.", platform = platform.as_str(), kind, type_name = %shown);
    metrics::counter!(crate::metrics::UNKNOWN_INPUT, "platform" => platform.as_str(), "kind" => kind)
        .increment(1);
}

/// A text frame as a JSON object.
///
/// # Errors
/// [`FrameError::NotJson`] when it is not JSON or not an object.
pub fn parse_object(text: &str) -> Result<Map<String, Value>, FrameError> {
    match serde_json::from_str(text) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(_) => Err(FrameError::NotJson("not an object".into())),
        Err(error) => Err(FrameError::NotJson(error.to_string())),
    }
}

/// A data value as text (strings as they are, numbers written out).
pub fn data_text(data: &Map<String, Value>, key: &str) -> Option<String> {
    match data.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A segment object as its `type` and `data` (empty when absent); `None` when the value is
/// not a segment object at all.
pub fn raw_segment(value: &Value) -> Option<(String, Map<String, Value>)> {
    let object = value.as_object()?;
    let kind = object.get("type")?.as_str()?.to_owned();
    let data = object
        .get("data")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    Some((kind, data))
}

/// The segment objects of an array-format message; items that are not segments are counted
/// as unknown input and skipped, so one odd item never costs the whole message.
pub fn array_segments(items: &[Value], platform: Platform) -> Vec<(String, Map<String, Value>)> {
    items
        .iter()
        .filter_map(|item| {
            let raw = raw_segment(item);
            if raw.is_none() {
                note_unknown(platform, "segment", "<not a segment object>");
            }
            raw
        })
        .collect()
}

/// An action response: its `echo` as a string (empty when absent) and the whole object, or
/// `None` when the object is no response (neither `retcode` nor `status`).
pub fn response(object: Map<String, Value>) -> Option<(String, Value)> {
    if !(object.contains_key("retcode") || object.contains_key("status")) {
        return None;
    }
    let echo = match object.get("echo") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    };
    Some((echo, Value::Object(object)))
}

/// The envelope of a group recall notice (v11 `group_recall`, v12 `group_message_delete`):
/// the same fields in both versions. Its id differs from the recalled message's own, so the
/// relay's dedup never mistakes one for the other; the operator (else the author) is the
/// sender. `ts_ms` is the event time, which the versions encode differently.
///
/// # Errors
/// [`FrameError::Field`] when the group or message id is missing.
pub fn recall_envelope(
    object: &Map<String, Value>,
    cx: &DecodeContext<'_>,
    ts_ms: u64,
) -> Result<Envelope, FrameError> {
    let group = id_of(object.get("group_id")).ok_or(FrameError::Field("group_id"))?;
    let message_id = id_of(object.get("message_id")).ok_or(FrameError::Field("message_id"))?;
    let user = id_of(object.get("user_id")).unwrap_or_default();
    let operator = id_of(object.get("operator_id")).unwrap_or_else(|| user.clone());
    Ok(Envelope {
        v: ENVELOPE_VERSION,
        id: Envelope::make_id(cx.account, &group, &format!("recall:{message_id}")),
        origin: cx.origin(group, message_id),
        sender: Sender {
            name: operator.clone(),
            id: operator,
            is_bot: false,
        },
        ts_ms,
        kind: Kind::Recall,
        segments: Vec::new(),
        member: None,
    })
}

/// proptest strategies for JSON shaped like platform frames, shared by the decoders' tests.
#[cfg(test)]
pub(crate) mod arb {
    use proptest::prelude::*;
    use serde_json::{Map, Number, Value};

    /// A scalar as implementations send ids and fields: numbers of every range (beyond i64
    /// and u64 too), strings (numeric, empty, odd), booleans and null.
    pub fn leaf() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
            Just(Value::from(1.8446744073709552e19)),
            Just(Value::from(-1e300)),
            "[0-9-]{0,20}".prop_map(Value::from),
            "\\PC{0,12}".prop_map(Value::from),
            Just(Value::from(" ")),
        ]
    }

    /// Any JSON value a few levels deep.
    pub fn value() -> impl Strategy<Value = Value> {
        leaf().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map("[a-z_.]{0,8}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// One of `known` or, now and then, something else.
    pub fn name(known: &'static [&'static str]) -> impl Strategy<Value = String> {
        prop_oneof![
            4 => prop::sample::select(known).prop_map(str::to_owned),
            1 => "\\PC{0,10}",
        ]
    }

    /// A JSON object with `fields` (each maybe absent) and some arbitrary extra keys.
    pub fn object(
        fields: Vec<(&'static str, BoxedStrategy<Value>)>,
    ) -> impl Strategy<Value = Value> {
        let present = fields
            .into_iter()
            .map(|(key, strategy)| {
                prop::option::weighted(0.85, strategy).prop_map(move |v| (key, v))
            })
            .collect::<Vec<_>>();
        (
            present,
            prop::collection::btree_map("[a-z_.]{1,10}", value(), 0..3),
        )
            .prop_map(|(fields, extra)| {
                let mut object: Map<String, Value> = extra.into_iter().collect();
                for (key, value) in fields {
                    if let Some(value) = value {
                        object.insert(key.to_owned(), value);
                    }
                }
                Value::Object(object)
            })
    }

    /// A message segment `{type, data}` with a type from `known` (or another), its data keys
    /// drawn from `keys`; now and then not a segment at all.
    pub fn segment(
        known: &'static [&'static str],
        keys: &'static [&'static str],
    ) -> impl Strategy<Value = Value> {
        let data = prop::collection::btree_map(prop::sample::select(keys), leaf(), 0..4)
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()));
        prop_oneof![
            8 => (name(known), prop_oneof![4 => data, 1 => value()]).prop_map(|(kind, data)| {
                serde_json::json!({ "type": kind, "data": data })
            }),
            1 => value(),
        ]
    }
}
