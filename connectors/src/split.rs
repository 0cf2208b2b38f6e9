//! The one text splitter of the workspace: cutting a text that is too long for a platform into
//! pieces that each fit a budget. The relay's length limits (egress), the DingTalk sends and
//! the WeCom robot all cut with [`pieces`]; what differs between them is only how length is
//! measured ([`Unit`]) and where a cut may go ([`Cuts`]), so a fix to cutting reaches every
//! platform at once.
//!
//! A cut never falls inside a character. When a piece must end early, it ends after a line
//! break, or (where allowed) after a space, and never inside a protected range such as a URL
//! unless that range alone is longer than a piece.

use std::ops::Range;

/// How a platform measures the length of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Unicode scalar values: QQ and WeChat count characters.
    Chars,
    /// UTF-8 bytes: WeCom and DingTalk limit the bytes of the content.
    Bytes,
    /// UTF-8 bytes once written inside a JSON string (escapes included): DingTalk checks the
    /// size of the JSON it receives, where a quote or a line break takes two bytes.
    JsonStringBytes,
}

impl Unit {
    /// What one character costs against a budget in this unit.
    pub fn cost(self, c: char) -> usize {
        match self {
            Unit::Chars => 1,
            Unit::Bytes => c.len_utf8(),
            Unit::JsonStringBytes => match c {
                '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
                c if (c as u32) < 0x20 => 6,
                c => c.len_utf8(),
            },
        }
    }
}

/// A destination's length limit, as the relay enforces it before a message leaves: longer
/// messages are split into marked parts, and past `max_parts` the rest is cut off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LengthLimit {
    /// Longest message the platform takes, in `unit`.
    pub max: usize,
    /// What `max` counts, because platforms disagree (characters or bytes).
    pub unit: Unit,
    /// Most parts one message becomes, so one huge message cannot flood a group.
    pub max_parts: usize,
}

/// Where a cut may go when a piece has to end before the text does. Each platform's sender
/// keeps its own choice, as its tests pin down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cuts {
    /// How length is measured against the budget.
    pub unit: Unit,
    /// Whether a piece may end after a space when it holds no line break, so words stay whole
    /// in chat messages (the relay); robots that send raw text cut only at line breaks.
    pub at_spaces: bool,
    /// Whether a break is used only when the piece it ends is at least half of what would
    /// fit, so an early line break does not waste a send of a robot's tight quota.
    pub half_full: bool,
    /// Whether the line break at a cut is left out of both pieces (DingTalk: a part never
    /// ends in an empty line) rather than kept at the end of the earlier piece (so the pieces
    /// join back into the text).
    pub drop_break: bool,
}

/// Length of `text` in `unit`.
pub fn measure(text: &str, unit: Unit) -> usize {
    match unit {
        Unit::Chars => text.chars().count(),
        Unit::Bytes => text.len(),
        Unit::JsonStringBytes => text.chars().map(|c| unit.cost(c)).sum(),
    }
}

/// The byte length of the longest prefix of `text` that fits `budget` in `unit`.
fn longest_fitting(text: &str, budget: usize, unit: Unit) -> usize {
    match unit {
        Unit::Bytes => {
            let mut end = budget.min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            end
        }
        Unit::Chars => text
            .char_indices()
            .nth(budget)
            .map_or(text.len(), |(i, _)| i),
        Unit::JsonStringBytes => {
            let mut used = 0;
            for (at, c) in text.char_indices() {
                used += unit.cost(c);
                if used > budget {
                    return at;
                }
            }
            text.len()
        }
    }
}

/// Where the piece that starts `rest` ends: `(end, next)`, the byte offsets in `rest` where
/// the piece stops and where the next one starts (they differ by a dropped line break).
fn cut(
    rest: &str,
    fits: usize,
    cuts: Cuts,
    protected: &[Range<usize>],
    start: usize,
) -> (usize, usize) {
    let window = &rest[..fits];
    let line_break = window.rfind('\n');
    let separator = line_break.or_else(|| {
        cuts.at_spaces
            .then(|| window.rfind([' ', '\t', '\u{3000}']))
            .flatten()
    });
    let chosen = separator.and_then(|at| {
        let width = window[at..].chars().next().map_or(1, char::len_utf8);
        let dropped = cuts.drop_break && line_break == Some(at);
        let kept = if dropped { at } else { at + width };
        let usable = kept > 0 && (!cuts.half_full || kept >= fits / 2);
        usable.then_some((kept, at + width))
    });
    let (mut end, mut next) = chosen.unwrap_or((fits, fits));
    // Never inside a protected range (a URL): end before it, unless it starts where this
    // piece starts (it is longer than a piece, so it has to be cut).
    if let Some(range) = protected
        .iter()
        .find(|r| r.start < start + end && start + end < r.end)
    {
        (end, next) = if range.start > start {
            (range.start - start, range.start - start)
        } else {
            (fits, fits)
        };
    }
    if next == 0 {
        // One character wider than the budget: it goes alone rather than loop forever.
        let first = rest.chars().next().map_or(rest.len(), char::len_utf8);
        (end, next) = (first, first);
    }
    (end, next)
}

/// Splits `text` into pieces of at most `budget` (in `cuts.unit`) each, a character wider
/// than the budget going alone. `protected` are byte ranges of `text` (URLs) not to cut
/// inside when avoidable. A text within the budget comes back as one piece, an empty text
/// as one empty piece. Unless `cuts.drop_break`, the pieces join back into `text`.
pub fn pieces<'a>(
    text: &'a str,
    budget: usize,
    cuts: Cuts,
    protected: &[Range<usize>],
) -> Vec<&'a str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    loop {
        let rest = &text[start..];
        let fits = longest_fitting(rest, budget, cuts.unit);
        if fits >= rest.len() {
            pieces.push(rest);
            return pieces;
        }
        let (end, next) = cut(rest, fits, cuts, protected, start);
        pieces.push(&rest[..end]);
        start += next;
        if start >= text.len() {
            return pieces;
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// How the relay cuts chat messages.
    const CHAT: fn(Unit) -> Cuts = |unit| Cuts {
        unit,
        at_spaces: true,
        half_full: false,
        drop_break: false,
    };
    /// How the WeCom robot cuts.
    const WECOM: Cuts = Cuts {
        unit: Unit::Bytes,
        at_spaces: false,
        half_full: true,
        drop_break: false,
    };
    /// How DingTalk cuts.
    const DINGTALK: Cuts = Cuts {
        unit: Unit::JsonStringBytes,
        at_spaces: false,
        half_full: true,
        drop_break: true,
    };

    #[test]
    fn chat_cuts_at_lines_then_words_and_never_inside_urls_or_characters() {
        let parts = pieces("第一行\n第二行很长很长", 5, CHAT(Unit::Chars), &[]);
        assert_eq!(parts, vec!["第一行\n", "第二行很长", "很长"]);
        let text = "see https://example.org/a/very/long/path ok";
        let url = 4..text.find(" ok").expect("url end");
        let parts = pieces(text, 20, CHAT(Unit::Bytes), &[url]);
        assert_eq!(parts[0], "see ");
        assert_eq!(parts.concat(), text);
        let parts = pieces("长文本长文本", 7, CHAT(Unit::Bytes), &[]);
        assert!(parts.iter().all(|p| p.len() <= 7), "{parts:?}");
        assert_eq!(parts.concat(), "长文本长文本");
    }

    #[test]
    fn short_text_is_one_piece() {
        for cuts in [CHAT(Unit::Chars), WECOM, DINGTALK] {
            assert_eq!(pieces("你好", 2048, cuts, &[]), vec!["你好"]);
            assert_eq!(pieces("", 2048, cuts, &[]), vec![""]);
        }
    }

    #[test]
    fn wecom_never_cuts_characters_and_parts_join_back() {
        // 3-byte CJK and 4-byte emoji, with no line breaks: cuts fall between characters.
        let text = "群桥😀".repeat(500);
        for limit in [4, 5, 7, 100, 2048] {
            let parts = pieces(&text, limit, WECOM, &[]);
            assert!(
                parts.iter().all(|p| p.len() <= limit && !p.is_empty()),
                "{limit}"
            );
            assert_eq!(parts.concat(), text, "{limit}");
            // A full part wastes at most 3 bytes (the character that did not fit).
            assert!(parts[..parts.len() - 1]
                .iter()
                .all(|p| p.len() + 3 >= limit));
        }
    }

    #[test]
    fn wecom_prefers_line_breaks_that_leave_a_part_half_full() {
        let text = format!("{}\n{}", "一".repeat(400), "二".repeat(400));
        let parts = pieces(&text, 2048, WECOM, &[]);
        assert_eq!(parts.len(), 2);
        assert!(parts[0].ends_with('\n'));
        assert_eq!(parts[0].len(), 1201);
        assert_eq!(parts.concat(), text);
        // A break early in the budget is not worth a near-empty part.
        let early = format!("hi\n{}", "三".repeat(1000));
        let parts = pieces(&early, 2048, WECOM, &[]);
        assert_eq!(parts[0].len(), 2046, "\"hi\\n\" plus 681 characters");
        assert_eq!(parts.concat(), early);
    }

    #[test]
    fn dingtalk_splits_on_line_breaks_and_drops_them() {
        let text = format!("{}\n{}\n{}", "a".repeat(40), "b".repeat(40), "c".repeat(40));
        let parts = pieces(&text, 90, DINGTALK, &[]);
        assert_eq!(
            parts,
            vec![
                format!("{}\n{}", "a".repeat(40), "b".repeat(40)),
                "c".repeat(40)
            ]
        );
        let text = "钉".repeat(10); // 3 bytes each
        let parts = pieces(&text, 10, DINGTALK, &[]);
        assert!(parts.iter().all(|p| p.len() <= 10), "{parts:?}");
        assert_eq!(parts.concat(), text);
        assert_eq!(parts[0], "钉".repeat(3));
    }

    #[test]
    fn json_escapes_count_against_the_budget() {
        let text = "\"".repeat(10);
        let parts = pieces(&text, 10, DINGTALK, &[]);
        assert_eq!(parts.len(), 2);
        for part in &parts {
            let encoded = serde_json::to_string(part).expect("encodes");
            assert!(encoded.len() - 2 <= 10, "{encoded}");
        }
        assert_eq!(Unit::JsonStringBytes.cost('\u{1}'), 6);
        assert_eq!(Unit::JsonStringBytes.cost('é'), 2);
        assert_eq!(measure("a\"b", Unit::JsonStringBytes), 4);
    }

    proptest! {
        #[test]
        fn pieces_fit_and_join_back(text in "[a-z 。中文\\n]{0,300}", max in 8usize..60, unit in 0..3u8) {
            let unit = [Unit::Chars, Unit::Bytes, Unit::JsonStringBytes][usize::from(unit)];
            for cuts in [CHAT(unit), Cuts { unit, ..WECOM }] {
                let parts = pieces(&text, max, cuts, &[]);
                prop_assert_eq!(parts.concat(), text.clone());
                for part in &parts {
                    prop_assert!(measure(part, unit) <= max || part.chars().count() == 1);
                }
            }
            let dropped = pieces(&text, max, Cuts { unit, ..DINGTALK }, &[]);
            for part in &dropped {
                prop_assert!(measure(part, unit) <= max);
            }
            prop_assert_eq!(
                dropped.concat().chars().filter(|c| *c != '\n').collect::<String>(),
                text.chars().filter(|c| *c != '\n').collect::<String>()
            );
        }
    }
}
