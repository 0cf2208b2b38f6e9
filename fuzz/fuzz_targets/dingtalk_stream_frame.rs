//! Fuzz target: one DingTalk Stream frame. The daemon drops binary frames unread, so only
//! UTF-8 text reaches the parser: `parse_frame`, then on what it yields the `data` decoder,
//! the bot-message parser and the ACK/pong writers (whose output must be JSON). The same text
//! is also given to the bot-message parser as a frame's `data` string.

#![no_main]

use libfuzzer_sys::fuzz_target;
use qunbridge_connectors::dingtalk::frames;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(frame) = frames::parse_frame(text) {
        let _ = frames::data_object(&frame.data);
        let _ = frames::parse_bot_message(&frame.data);
        let replies: [String; 5] = [
            frames::pong(&frame),
            frames::callback_ok(&frame.message_id),
            frames::callback_bad_request(&frame.message_id, "malformed bot message"),
            frames::callback_unsupported(&frame.message_id),
            frames::event_ok(&frame.message_id),
        ];
        for reply in replies {
            assert!(
                serde_json::from_str::<Value>(&reply).is_ok(),
                "reply is not JSON: {reply}"
            );
        }
    }
    let _ = frames::parse_bot_message(&Value::String(text.to_owned()));
});
