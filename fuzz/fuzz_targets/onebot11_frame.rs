//! Fuzz target: one OneBot v11 WebSocket frame, as the session reads it. The bytes go
//! through the daemon's binary-frame path (not UTF-8: dropped as malformed), then the event
//! decoder; the same text is also parsed as a CQ string (the string format of `message`),
//! and parse → encode → parse must give the same segments.

#![no_main]

use libfuzzer_sys::fuzz_target;
use qunbridge_connectors::model::Platform;
use qunbridge_connectors::onebot11::cq::{self, RawSegment};
use qunbridge_connectors::onebot11::event;
use qunbridge_connectors::onebot_ws::frame::{binary_text, DecodeContext};
use serde_json::Value;

/// What a CQ string means once written out: text runs (adjacent ones merged, empty ones
/// dropped, as the format cannot tell them apart) and codes with their data.
#[derive(Debug, PartialEq)]
enum Piece {
    /// Plain text.
    Text(String),
    /// A `[CQ:…]` code other than `text`.
    Code(String, serde_json::Map<String, Value>),
}

/// The pieces of parsed segments; a `text` code counts as its `text` value.
fn pieces(segments: &[RawSegment]) -> Vec<Piece> {
    let mut out: Vec<Piece> = Vec::new();
    for segment in segments {
        if segment.kind == "text" {
            let text = match segment.data.get("text") {
                Some(Value::String(text)) => text.as_str(),
                _ => "",
            };
            if text.is_empty() {
                continue;
            }
            if let Some(Piece::Text(last)) = out.last_mut() {
                last.push_str(text);
            } else {
                out.push(Piece::Text(text.to_owned()));
            }
        } else {
            out.push(Piece::Code(segment.kind.clone(), segment.data.clone()));
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = binary_text(data) else {
        return;
    };
    let other_bot = |id: &str| id == "42";
    let cx = DecodeContext {
        account: "qq",
        platform: Platform::Qq,
        self_id: Some("2854196310"),
        is_other_bot: &other_bot,
    };
    let _ = event::decode(text, &cx);

    let parsed = cq::parse(text);
    let encoded = cq::encode(&parsed);
    let again = cq::parse(&encoded);
    assert_eq!(
        pieces(&parsed),
        pieces(&again),
        "CQ round trip changed {text:?} (encoded as {encoded:?})"
    );
});
