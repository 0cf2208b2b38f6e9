//! Text handling shared by both DingTalk send paths: splitting a long message into parts that
//! fit a byte budget (measured as the JSON string the platform receives, on UTF-8 character
//! boundaries, preferring line breaks), the custom robot keyword, and remembering which parts
//! of a message already went out so a retry after a failure in the middle resumes instead of
//! repeating them.

use std::borrow::Cow;

/// Bytes a character takes inside a JSON string as serde_json writes it.
pub fn json_cost(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if (c as u32) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

/// Splits `text` into parts whose cost (sum of `cost` per character) is at most `budget`.
///
/// A part ends at the last line break that leaves it at least half full (the break itself is
/// dropped), otherwise at the last character that fits. Text within the budget comes back as
/// one part; an empty text as one empty part.
pub fn split(text: &str, budget: usize, cost: impl Fn(char) -> usize) -> Vec<String> {
    let budget = budget.max(8);
    let mut parts = Vec::new();
    let mut rest = text;
    loop {
        let mut used = 0;
        let mut cut = 0;
        let mut last_break = None;
        let mut fits_whole = true;
        for (at, c) in rest.char_indices() {
            let width = cost(c);
            if used + width > budget {
                fits_whole = false;
                break;
            }
            used += width;
            cut = at + c.len_utf8();
            if c == '\n' {
                last_break = Some(at);
            }
        }
        if fits_whole {
            parts.push(rest.to_owned());
            return parts;
        }
        if cut == 0 {
            // One character wider than the budget cannot happen with budget >= 8, but never
            // loop forever: take it alone.
            cut = rest.chars().next().map_or(rest.len(), char::len_utf8);
        }
        let (end, next) = match last_break {
            Some(at) if at > 0 && at >= cut / 2 => (at, at + 1),
            _ => (cut, cut),
        };
        parts.push(rest[..end].to_owned());
        rest = &rest[next..];
        if rest.is_empty() {
            return parts;
        }
    }
}

/// The text with the robot's keyword in front, unless it already contains it.
pub fn with_keyword<'a>(text: &'a str, keyword: Option<&str>) -> Cow<'a, str> {
    match keyword {
        Some(keyword) if !keyword.is_empty() && !text.contains(keyword) => {
            Cow::Owned(format!("{keyword} {text}"))
        }
        _ => Cow::Borrowed(text),
    }
}

/// How far a multi-part message got before a failure.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sent {
    /// Parts the platform accepted, in order.
    pub parts: usize,
    /// Platform message ids of those parts (when the platform returns any).
    pub ids: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(c: char) -> usize {
        c.len_utf8()
    }

    #[test]
    fn short_text_is_one_part() {
        assert_eq!(split("hello", 100, bytes), vec!["hello"]);
        assert_eq!(split("", 100, bytes), vec![""]);
    }

    #[test]
    fn long_text_splits_on_line_breaks_within_the_budget() {
        let text = format!("{}\n{}\n{}", "a".repeat(40), "b".repeat(40), "c".repeat(40));
        let parts = split(&text, 90, bytes);
        assert_eq!(
            parts,
            vec![
                format!("{}\n{}", "a".repeat(40), "b".repeat(40)),
                "c".repeat(40)
            ]
        );
    }

    #[test]
    fn without_line_breaks_it_cuts_on_character_boundaries() {
        let text = "钉".repeat(10); // 3 bytes each
        let parts = split(&text, 10, bytes);
        assert!(parts.iter().all(|p| p.len() <= 10), "{parts:?}");
        assert_eq!(parts.concat(), text);
        assert_eq!(parts[0], "钉".repeat(3));
    }

    #[test]
    fn json_escapes_count_against_the_budget() {
        let text = "\"".repeat(10);
        let parts = split(&text, 10, json_cost);
        assert_eq!(parts.len(), 2);
        for part in &parts {
            let encoded = serde_json::to_string(part).expect("encodes");
            assert!(encoded.len() - 2 <= 10, "{encoded}");
        }
        assert_eq!(json_cost('\u{1}'), 6);
        assert_eq!(json_cost('é'), 2);
    }

    #[test]
    fn keyword_is_added_only_when_missing() {
        assert_eq!(with_keyword("hi", Some("告警")), "告警 hi");
        assert_eq!(with_keyword("告警: hi", Some("告警")), "告警: hi");
        assert_eq!(with_keyword("hi", None), "hi");
    }
}
