//! What both OneBot versions' frame decoders share: the error type, the decoding context
//! (who the bot is), and tolerant readers for ids and text fields that implementations send as
//! numbers or strings.

use serde_json::{Map, Value};

use crate::model::Platform;

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
