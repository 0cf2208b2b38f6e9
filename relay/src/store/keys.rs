//! How store keys are made. One key space, split by a one-letter namespace, with parts joined
//! by U+001F (which no platform id or envelope id contains):
//!
//! - `i` envelope id (redelivery dedup, §5),
//! - `c` content of a message as any bot in the group saw it (cross-bot dedup, §5),
//! - `e` fingerprint of what egress sent to a group (echo guard, §5),
//! - `s` send log: (inbound id, destination account, destination group),
//! - `m` message-map origins and copies: (account, group, message id).

use std::hash::{Hash, Hasher};
use std::time::Duration;

use qunbridge_connectors::model::Segment;
use qunbridge_connectors::{Envelope, Outbound, Platform};

use super::{CROSS_BOT_TTL, REDELIVERY_TTL};

/// Separator between key parts.
const SEP: char = '\u{1f}';

/// A key built from its parts, joined by [`SEP`], without the formatting machinery: a
/// `format!` of a key cost about 2,000 instructions here, and every message makes several.
pub(crate) struct KeyText(String);

impl KeyText {
    /// A key of the namespace `letter`.
    pub(crate) fn new(letter: char) -> KeyText {
        let mut key = String::with_capacity(64);
        key.push(letter);
        KeyText(key)
    }

    /// Adds a text part.
    pub(crate) fn part(mut self, part: &str) -> KeyText {
        self.0.push(SEP);
        self.0.push_str(part);
        self
    }

    /// Adds a number part in decimal.
    pub(crate) fn number(self, number: u64) -> KeyText {
        self.part(itoa::Buffer::new().format(number))
    }

    /// Adds a digest part as 16 lower-case hex digits.
    pub(crate) fn hex(mut self, digest: u64) -> KeyText {
        self.0.push(SEP);
        push_hex(&mut self.0, digest);
        self
    }

    /// The key.
    pub(crate) fn text(self) -> String {
        self.0
    }
}

/// Appends `value` as 16 lower-case hex digits (as `{value:016x}` writes it).
pub(crate) fn push_hex(out: &mut String, value: u64) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for shift in (0..16).rev() {
        out.push(char::from(DIGITS[((value >> (shift * 4)) & 0xf) as usize]));
    }
}

/// The redelivery key of an envelope.
pub fn envelope(id: &str) -> String {
    KeyText::new('i').part(id).text()
}

/// How long a dedup key (an [`envelope`] key or a [`content`] key) is remembered: a
/// redelivery comes within seconds (a later one is dropped by egress's send log), a second
/// bot's report of the same message seconds after the first.
pub fn dedup_ttl(key: &str) -> Duration {
    if key.starts_with('i') {
        REDELIVERY_TTL
    } else {
        CROSS_BOT_TTL
    }
}

/// The send-log key of an outbound message at one destination account.
pub fn sent(outbound: &Outbound, account: &str) -> String {
    KeyText::new('s')
        .part(&outbound.id)
        .part(account)
        .part(&outbound.group)
        .text()
}

/// A message-map key: an origin message, or a copy, by account, group and platform id.
pub fn origin(account: &str, group: &str, message_id: &str) -> String {
    KeyText::new('m')
        .part(account)
        .part(group)
        .part(message_id)
        .text()
}

/// The cross-bot dedup keys of an inbound message: the same message reported by two bot
/// accounts in one group (each with its own message id) gives the same key, from the
/// platform, group, sender, timestamp in seconds and normalized content. A platform clock can
/// put the two reports on either side of a second boundary, so the neighbouring seconds'
/// keys are returned too; the first is the message's own. Empty for recalls and `api`
/// groups.
pub fn content(envelope: &Envelope) -> Vec<String> {
    if envelope.kind == qunbridge_connectors::Kind::Member {
        return member(envelope);
    }
    // An `api` group belongs to one account: no second bot can report the same message.
    if envelope.kind != qunbridge_connectors::Kind::Message
        || envelope.origin.platform == Platform::Api
    {
        return Vec::new();
    }
    let Some(normalized) = normalized_segments(&envelope.segments) else {
        return Vec::new();
    };
    let digest = digest(&normalized);
    let second = envelope.ts_ms / 1000;
    [second, second.saturating_sub(1), second.saturating_add(1)]
        .iter()
        .map(|s| {
            KeyText::new('c')
                .part(envelope.origin.platform.as_str())
                .part(&envelope.origin.group)
                .part(&envelope.sender.id)
                .number(*s)
                .hex(digest)
                .text()
        })
        .collect()
}

/// The keys of a join or leave reported by any bot account of the group (MEMBERS.md §2.9):
/// platform, group, member, change and minute of the platform's timestamp, the first being
/// the event's own minute, then its neighbours (two reports may straddle a minute). Member
/// counts have none: a repeated count changes nothing.
fn member(envelope: &Envelope) -> Vec<String> {
    let Some(event) = envelope.member.as_ref() else {
        return Vec::new();
    };
    if event.change == qunbridge_connectors::model::Change::Count {
        return Vec::new();
    }
    let minute = envelope.ts_ms / 60_000;
    [minute, minute.saturating_sub(1), minute.saturating_add(1)]
        .iter()
        .map(|m| {
            KeyText::new('m')
                .part(envelope.origin.platform.as_str())
                .part(&envelope.origin.group)
                .part(&envelope.sender.id)
                .part(event.change.as_str())
                .number(*m)
                .text()
        })
        .collect()
}

/// The echo-guard key of text said in (or sent to) a group of a platform. Returns `None` for
/// text with nothing but whitespace (an image alone, say): too little to tell an echo by.
pub fn echo(platform: Platform, group: &str, text: &str) -> Option<String> {
    let digest = normalized_digest(text)?;
    Some(
        KeyText::new('e')
            .part(platform.as_str())
            .part(group)
            .hex(digest)
            .text(),
    )
}

/// The [`digest`] of the [`normalize`]d text, made without building it (egress makes one per
/// message sent); `None` for text with nothing but whitespace.
fn normalized_digest(text: &str) -> Option<u64> {
    let mut hasher = Fnv1a(FNV_OFFSET);
    let mut words = text.split_whitespace();
    hasher.write(words.next()?.as_bytes());
    for word in words {
        hasher.write(b" ");
        hasher.write(word.as_bytes());
    }
    // As `str`'s `Hash` ends a string.
    hasher.write_u8(0xff);
    Some(hasher.finish())
}

/// The echo-guard key of an inbound message: its text segments, as egress would have sent
/// them.
pub fn echo_of(envelope: &Envelope) -> Option<String> {
    if envelope.kind != qunbridge_connectors::Kind::Message {
        return None;
    }
    let text: String = envelope
        .segments
        .iter()
        .filter_map(|segment| match segment {
            Segment::Text { text } => Some(text.as_str()),
            _ => None,
        })
        .collect();
    echo(envelope.origin.platform, &envelope.origin.group, &text)
}

/// Whitespace collapsed to single spaces and trimmed.
fn normalize(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The content of a message for the cross-bot key: text normalized, other segments by kind
/// and their stable fields (image URLs differ between bot implementations, names do not).
/// `None` when nothing in it tells one message from another (a picture without a file name,
/// say): two such pictures from one sender in one second must both be relayed, so such a
/// message gets no cross-bot key.
fn normalized_segments(segments: &[Segment]) -> Option<String> {
    let mut out = String::new();
    let mut text = String::new();
    let mut distinct = false;
    for segment in segments {
        match segment {
            Segment::Text { text: t } => text.push_str(t),
            other => {
                out.push_str(&normalize(&text));
                text.clear();
                match other {
                    Segment::Mention { id, .. } => {
                        out.push_str("\u{1}@");
                        out.push_str(id);
                        distinct = true;
                    }
                    Segment::Face { id, .. } => {
                        out.push_str("\u{1}face:");
                        out.push_str(id);
                        distinct = true;
                    }
                    Segment::Image {
                        name: Some(name), ..
                    } => {
                        out.push_str("\u{1}image:");
                        out.push_str(name);
                        distinct = true;
                    }
                    Segment::Image { .. } => out.push_str("\u{1}image"),
                    _ => out.push_str("\u{1}other"),
                }
            }
        }
    }
    out.push_str(&normalize(&text));
    distinct |= has_text(segments);
    distinct.then_some(out)
}

/// True when some text segment has more than whitespace.
fn has_text(segments: &[Segment]) -> bool {
    segments
        .iter()
        .any(|s| matches!(s, Segment::Text { text } if !text.trim().is_empty()))
}

/// A stable 64-bit digest (FNV-1a: the same in every process and version, unlike std's
/// randomly seeded hasher).
fn digest(text: &str) -> u64 {
    let mut hasher = Fnv1a(FNV_OFFSET);
    text.hash(&mut hasher);
    hasher.finish()
}

/// FNV-1a, 64 bit.
struct Fnv1a(u64);

/// FNV-1a's 64-bit offset basis: the state before any byte.
const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

impl Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use qunbridge_connectors::{Kind, Origin, Sender};

    use super::*;

    #[test]
    fn keys_are_written_as_the_earlier_format_wrote_them() {
        // Keys are stored: a key written differently would miss what an earlier version
        // stored (a redelivery relayed again, a send log entry not found).
        for (number, digest) in [(0, 0), (7, 0xabc), (1_764_945_000, u64::MAX)] {
            let key = KeyText::new('c')
                .part("qq")
                .part("735021844")
                .part("用户")
                .number(number)
                .hex(digest)
                .text();
            assert_eq!(
                key,
                format!("c{SEP}qq{SEP}735021844{SEP}用户{SEP}{number}{SEP}{digest:016x}")
            );
        }
        assert_eq!(envelope("a:1:2"), format!("i{SEP}a:1:2"));
        assert_eq!(origin("a", "g", "9"), format!("m{SEP}a{SEP}g{SEP}9"));
        assert_eq!(
            echo(Platform::Qq, "g", " hi  there "),
            Some(format!("e{SEP}qq{SEP}g{SEP}{:016x}", digest("hi there")))
        );
    }

    fn said(account: &str, message_id: &str, ts_ms: u64, text: &str) -> Envelope {
        Envelope {
            v: 1,
            id: format!("{account}:735:{message_id}"),
            origin: Origin {
                platform: Platform::Qq,
                account: account.into(),
                group: "735".into(),
                message_id: message_id.into(),
                group_name: None,
            },
            sender: Sender {
                id: "1437".into(),
                name: "Ann".into(),
                is_bot: false,
            },
            ts_ms,
            kind: Kind::Message,
            segments: vec![Segment::text(text)],
            member: None,
        }
    }

    #[test]
    fn two_bots_reporting_one_message_share_a_content_key() {
        let a = content(&said("qq-a", "100", 1_718_880_000_400, "see  docs "));
        let b = content(&said("qq-b", "-7", 1_718_880_000_900, "see docs"));
        assert_eq!(a[0], b[0], "same second, same normalized text");
        // Reported on either side of a second boundary: b's own key is among a's neighbours.
        let c = content(&said("qq-b", "-7", 1_718_880_001_100, "see docs"));
        assert!(a.contains(&c[0]));
        let other = content(&said("qq-b", "-8", 1_718_880_000_900, "see the docs"));
        assert!(!a.contains(&other[0]), "different text, different key");
    }

    #[test]
    fn pictures_without_a_name_get_no_cross_bot_key() {
        let mut picture = said("qq-a", "1", 1_718_880_000_000, "");
        picture.segments = vec![Segment::image(Some("https://x/1".into()), None)];
        assert!(
            content(&picture).is_empty(),
            "two such pictures must both pass"
        );
        picture.segments = vec![Segment::image(None, Some("9F3C1A.jpg".into()))];
        assert_eq!(content(&picture).len(), 3, "a named picture is told apart");
    }

    #[test]
    fn the_echo_digest_is_the_digest_of_the_normalized_text() {
        for text in ["hi", "  a  b\tc\n", "你好 世界", "x\u{3000}y", "", " \n "] {
            let expected = (!normalize(text).is_empty()).then(|| digest(&normalize(text)));
            assert_eq!(normalized_digest(text), expected, "{text:?}");
        }
    }

    #[test]
    fn echo_keys_ignore_whitespace_and_need_text() {
        assert_eq!(
            echo(Platform::Qq, "735", "[QQ] Ann:  hello\n"),
            echo_of(&said("qq-b", "1", 0, "[QQ] Ann: hello"))
        );
        assert_eq!(echo(Platform::Qq, "735", " \n"), None);
        assert_ne!(
            echo(Platform::Qq, "735", "hi"),
            echo(Platform::Qq, "736", "hi"),
            "per group"
        );
    }
}
