//! Length limits at egress: splitting a message that is too long for its destination into
//! parts, measured in bytes (WeCom, DingTalk) or characters (QQ, WeChat). The cutting itself
//! is the workspace's one splitter ([`qunbridge_connectors::split`]): cuts go at a line
//! break, else at a space, else at a character boundary, and never inside a URL (unless the
//! URL alone is longer than a part). What this file adds is the relay's policy on top: each
//! part gets a `(1/3)`-style marker, and past the configured number of parts the rest is cut
//! off with a marker.

use std::ops::Range;

use qunbridge_connectors::split::{measure, pieces, Cuts, LengthLimit, Unit};

use crate::policy::detect;

/// Marker added to the last part when the rest was cut off.
pub const TRUNCATED: &str = "…(已截断)";

/// How chat messages are cut: at the last line break, else at the last space, so lines and
/// words stay whole; the separator stays with the earlier piece, so pieces join back.
fn chat_cuts(unit: Unit) -> Cuts {
    Cuts {
        unit,
        at_spaces: true,
        half_full: false,
        drop_break: false,
    }
}

/// Splits `text` into pieces of at most `budget` (in `unit`) whose concatenation is `text`,
/// with the workspace's one splitter. `protected` are byte ranges (URLs) not to cut inside
/// when avoidable.
fn split_raw<'a>(
    text: &'a str,
    budget: usize,
    unit: Unit,
    protected: &[Range<usize>],
) -> Vec<&'a str> {
    pieces(text, budget, chat_cuts(unit), protected)
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

/// Splits a message text for a destination's limit, never inside a URL it contains.
pub fn split_message(text: &str, limit: LengthLimit) -> Split {
    let protected: Vec<_> = detect::urls(text).into_iter().map(|u| u.range).collect();
    split(text, limit, &protected)
}

/// Splits a message for a destination's limit; `protected` are byte ranges not to cut inside.
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
