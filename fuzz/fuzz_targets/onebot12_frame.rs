//! Fuzz target: one OneBot v12 WebSocket frame, as the session reads it: the daemon's
//! binary-frame path (not UTF-8: dropped as malformed), then the event decoder. A decoded
//! group message's lookups must point at segments that exist.

#![no_main]

use libfuzzer_sys::fuzz_target;
use qunbridge_connectors::model::Platform;
use qunbridge_connectors::onebot12::event::{self, Fill, Frame};
use qunbridge_connectors::onebot_ws::frame::{binary_text, DecodeContext};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = binary_text(data) else {
        return;
    };
    let other_bot = |id: &str| id == "wxid_other";
    let cx = DecodeContext {
        account: "wx",
        platform: Platform::Wechat,
        self_id: Some("wxid_botself01"),
        is_other_bot: &other_bot,
    };
    if let Ok(decoded) = event::decode(text, &cx) {
        if let Frame::Message(incoming) = decoded.frame {
            let count = incoming.envelope.segments.len();
            for fill in &incoming.fills {
                let index = match fill {
                    Fill::MentionName { index, .. } | Fill::ImageFile { index, .. } => *index,
                };
                assert!(index < count, "fill {fill:?} beyond {count} segments");
            }
        }
    }
});
