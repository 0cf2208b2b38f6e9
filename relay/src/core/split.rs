//! Length limits: splitting a message that is too long for its destination into parts,
//! measured in bytes (WeCom, DingTalk) or characters (QQ, WeChat). Cuts go at a line break,
//! else at a space, else at a character boundary, and never inside a URL (unless the URL alone
//! is longer than a part). Each part gets a `(1/3)`-style marker; past the configured number of
//! parts the rest is cut off with a marker.

use std::ops::Range;

/// How a platform measures length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Unicode scalar values (QQ, WeChat).
    Chars,
    /// UTF-8 bytes (WeCom, DingTalk).
    Bytes,
}

/// A destination's length limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LengthLimit {
    /// Longest message, in `unit`.
    pub max: usize,
    /// What `max` counts.
    pub unit: Unit,
    /// Most parts one message becomes.
    pub max_parts: usize,
}

/// Marker added to the last part when the rest was cut off.
pub const TRUNCATED: &str = "…(已截断)";

/// Length of `text` in `unit`.
pub fn measure(text: &str, unit: Unit) -> usize {
    match unit {
        Unit::Chars => text.chars().count(),
        Unit::Bytes => text.len(),
    }
}

/// The byte offset where the longest prefix of `text[from..]` within `budget` ends.
fn furthest(text: &str, from: usize, budget: usize, unit: Unit) -> usize {
    match unit {
        Unit::Bytes => {
            let mut end = (from + budget).min(text.len());
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            end
        }
        Unit::Chars => text[from..]
            .char_indices()
            .nth(budget)
            .map_or(text.len(), |(i, _)| from + i),
    }
}

/// Splits `text` into pieces of at most `budget` (in `unit`) whose concatenation is `text`.
/// `protected` are byte ranges (URLs) not to cut inside when avoidable.
pub fn split_raw<'a>(
    text: &'a str,
    budget: usize,
    unit: Unit,
    protected: &[Range<usize>],
) -> Vec<&'a str> {
    let budget = budget.max(1);
    let mut pieces = Vec::new();
    let mut start = 0;
    while start < text.len() {
        let hard = furthest(text, start, budget, unit);
        if hard >= text.len() {
            pieces.push(&text[start..]);
            break;
        }
        let window = &text[start..hard];
        // Prefer a line break, then a space (the separator stays with the earlier piece).
        let mut cut = window
            .rfind('\n')
            .or_else(|| window.rfind([' ', '\t', '\u{3000}']))
            .map(|i| start + i + window[i..].chars().next().map_or(1, char::len_utf8))
            .filter(|c| *c > start)
            .unwrap_or(hard);
        if let Some(url) = protected.iter().find(|r| r.start < cut && cut < r.end) {
            cut = if url.start > start { url.start } else { hard };
        }
        if cut <= start {
            cut = hard.max(start + text[start..].chars().next().map_or(1, char::len_utf8));
        }
        pieces.push(&text[start..cut]);
        start = cut;
    }
    pieces
}

/// The `(i/n)` marker of a part.
fn marker(index: usize, count: usize) -> String {
    format!(" ({index}/{count})")
}

/// A message split for a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// The parts to send, each within the limit, markers included.
    pub parts: Vec<String>,
    /// True when the text was longer than `max_parts` parts and the rest was cut off.
    pub truncated: bool,
}

/// Splits a message for a destination's limit.
pub fn split(text: &str, limit: LengthLimit, protected: &[Range<usize>]) -> Split {
    if measure(text, limit.unit) <= limit.max {
        return Split {
            parts: vec![text.to_owned()],
            truncated: false,
        };
    }
    let max_parts = limit.max_parts.max(1);
    // The marker's length depends on the number of parts; settle it by iterating.
    let mut count = 2;
    let pieces = loop {
        let reserve = measure(&marker(count, count), limit.unit);
        let pieces = split_raw(
            text,
            limit.max.saturating_sub(reserve),
            limit.unit,
            protected,
        );
        if pieces.len() <= count || pieces.len() > max_parts {
            break pieces;
        }
        count = pieces.len();
    };
    if pieces.len() <= max_parts {
        let count = pieces.len();
        return Split {
            parts: pieces
                .iter()
                .enumerate()
                .map(|(i, piece)| format!("{}{}", piece.trim_end(), marker(i + 1, count)))
                .collect(),
            truncated: false,
        };
    }
    // Too long: keep `max_parts` parts, the last one cut short with the truncation marker.
    let reserve = measure(&marker(max_parts, max_parts), limit.unit);
    let pieces = split_raw(
        text,
        limit.max.saturating_sub(reserve),
        limit.unit,
        protected,
    );
    let mut parts: Vec<String> = pieces
        .iter()
        .take(max_parts - 1)
        .enumerate()
        .map(|(i, piece)| format!("{}{}", piece.trim_end(), marker(i + 1, max_parts)))
        .collect();
    let consumed: usize = pieces.iter().take(max_parts - 1).map(|p| p.len()).sum();
    let last_budget = limit
        .max
        .saturating_sub(reserve + measure(TRUNCATED, limit.unit));
    let last = if last_budget == 0 {
        ""
    } else {
        split_raw(&text[consumed..], last_budget, limit.unit, protected)
            .first()
            .copied()
            .unwrap_or_default()
    };
    parts.push(format!(
        "{}{TRUNCATED}{}",
        last.trim_end(),
        marker(max_parts, max_parts)
    ));
    Split {
        parts,
        truncated: true,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn cuts_at_lines_then_words_and_never_inside_urls_or_characters() {
        let pieces = split_raw("第一行\n第二行很长很长", 5, Unit::Chars, &[]);
        assert_eq!(pieces, vec!["第一行\n", "第二行很长", "很长"]);
        let text = "see https://example.org/a/very/long/path ok";
        let url = 4..text.find(" ok").expect("url end");
        let pieces = split_raw(text, 20, Unit::Bytes, &[url]);
        assert_eq!(pieces[0], "see ");
        assert_eq!(pieces.concat(), text);
        let pieces = split_raw("长文本长文本", 7, Unit::Bytes, &[]);
        assert!(pieces.iter().all(|p| p.len() <= 7), "{pieces:?}");
        assert_eq!(pieces.concat(), "长文本长文本");
    }

    #[test]
    fn parts_carry_markers_and_the_rest_is_truncated_past_max_parts() {
        let limit = LengthLimit {
            max: 12,
            unit: Unit::Chars,
            max_parts: 10,
        };
        let split_text = split("aaaa bbbb cccc dddd", limit, &[]);
        assert_eq!(
            split_text.parts,
            vec!["aaaa (1/4)", "bbbb (2/4)", "cccc (3/4)", "dddd (4/4)"]
        );
        assert!(
            split_text
                .parts
                .iter()
                .all(|p| measure(p, Unit::Chars) <= 12),
            "{split_text:?}"
        );
        let limited = split(
            "aaaa bbbb cccc dddd eeee ffff",
            LengthLimit {
                max: 12,
                unit: Unit::Chars,
                max_parts: 2,
            },
            &[],
        );
        assert!(limited.truncated);
        assert_eq!(limited.parts.len(), 2);
        assert!(
            limited.parts[1].contains(TRUNCATED) && limited.parts[1].ends_with("(2/2)"),
            "{limited:?}"
        );
        assert!(
            limited.parts.iter().all(|p| measure(p, Unit::Chars) <= 12),
            "{limited:?}"
        );
    }

    proptest! {
        #[test]
        fn parts_fit_and_join_back(text in "[a-z 。中文\\n]{0,300}", max in 8usize..60, bytes in any::<bool>()) {
            let unit = if bytes { Unit::Bytes } else { Unit::Chars };
            let pieces = split_raw(&text, max, unit, &[]);
            prop_assert_eq!(pieces.concat(), text.clone());
            for piece in &pieces {
                prop_assert!(measure(piece, unit) <= max || piece.chars().count() == 1);
            }
            let limit = LengthLimit { max: max + 12, unit, max_parts: 1000 };
            for part in split(&text, limit, &[]).parts {
                prop_assert!(measure(&part, unit) <= limit.max, "{part:?}");
            }
        }
    }
}
