//! What makes a message suspect (issue 17, `[moderation.wave] suspect_delay`): ad blasts
//! from fresh accounts carry a way out of the group — a link, a group invite, a contact
//! ("加V", "VX: …", a QQ or phone number) or a picture (a QR code). Such a message from a
//! newcomer waits a little before it is relayed, so that a spam wave has time to show itself
//! in other groups; this module only tells the content apart, the core decides who is new.

use std::sync::OnceLock;

use qunbridge_connectors::{Envelope, Segment};
use regex::RegexSet;

use crate::policy::detect;

/// Contact patterns: a WeChat or QQ id offered, a mobile number. Matched on the text with
/// full-width characters folded, case ignored.
const CONTACT_PATTERNS: &[&str] = &[
    // 加V, 加微, 加薇, 加威, 加vx, 加wx, 加q
    r"加\s*(?:v|微|薇|威|vx|wx|q)",
    // VX: abc, WX：abc, 微信号: abc, V信 abc
    r"(?:vx|wx|v信|微信号?|薇信|威信)\s*[:：]?\s*[a-z0-9_-]{5,}",
    // QQ: 12345678, 扣扣 12345678
    r"(?:qq|扣扣|企鹅)\s*(?:号)?\s*[:：]?\s*\d{5,11}",
    // A mainland mobile number, not inside a longer number.
    r"(?:^|\D)1[3-9]\d{9}(?:\D|$)",
];

/// The compiled [`CONTACT_PATTERNS`] (`None` only if a pattern failed to compile, which the
/// unit tests rule out).
fn contacts() -> Option<&'static RegexSet> {
    static SET: OnceLock<Option<RegexSet>> = OnceLock::new();
    SET.get_or_init(|| {
        regex::RegexSetBuilder::new(CONTACT_PATTERNS)
            .case_insensitive(true)
            .build()
            .ok()
    })
    .as_ref()
}

/// True when a message carries a link, a group invite, a contact or a picture.
pub fn looks_suspect(envelope: &Envelope) -> bool {
    envelope.segments.iter().any(|segment| match segment {
        Segment::Image { .. } => true,
        Segment::Text { text } => text_looks_suspect(text),
        _ => false,
    })
}

/// True when a text holds a link, a group invite or a contact.
fn text_looks_suspect(text: &str) -> bool {
    let folded = detect::Normalized::new(text);
    (detect::may_contain_candidates(&folded.text)
        && (!detect::urls(&folded.url_view).is_empty()
            || !detect::invite_numbers(&folded.text).is_empty()))
        || contacts().is_some_and(|set| set.is_match(&folded.text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_invites_contacts_are_suspect_and_chat_is_not() {
        for suspect in [
            "看看 https://example.com/x",
            "来 example.cn 领",
            "ＱＱ群：123456789",
            "加V了解",
            "加 微 详聊",
            "VX: abc_12345",
            "微信号：helloworld",
            "qq 12345678",
            "电话13812345678",
        ] {
            assert!(text_looks_suspect(suspect), "{suspect}");
        }
        for chat in [
            "今天天气不错",
            "会议改到 3.5 点",
            "订单号 2024120412345678",
            "我的V领毛衣",
            "",
        ] {
            assert!(!text_looks_suspect(chat), "{chat}");
        }
        assert!(contacts().is_some(), "the patterns compile");
    }
}
