//! Text handling shared by both DingTalk send paths: how a long message is cut into parts that
//! fit a byte budget (with the workspace's one splitter, [`crate::split`], measured as the
//! JSON string the platform receives, preferring line breaks), the custom robot keyword, and remembering which parts
//! of a message already went out so a retry after a failure in the middle resumes instead of
//! repeating them.

use std::borrow::Cow;

use crate::split::{self, Cuts, Unit};

/// How DingTalk text is cut: measured as the JSON string the platform receives, at the last
/// line break that leaves a part at least half full (the break itself is dropped, so no
/// part ends in an empty line), otherwise at the last character that fits.
const CUTS: Cuts = Cuts {
    unit: Unit::JsonStringBytes,
    at_spaces: false,
    half_full: true,
    drop_break: true,
};

/// Smallest budget a part gets, so any character (an escaped control character takes 6
/// bytes) fits in a part.
const MIN_BUDGET: usize = 8;

/// Splits `text` into parts that fit `budget` bytes once written inside a JSON string. Text
/// within the budget comes back as one part; an empty text as one empty part.
pub fn split(text: &str, budget: usize) -> Vec<&str> {
    split::pieces(text, budget.max(MIN_BUDGET), CUTS, &[])
}

/// What `text` costs against a budget (as [`split`] measures).
pub fn cost(text: &str) -> usize {
    split::measure(text, CUTS.unit)
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

    #[test]
    fn parts_fit_the_json_budget_and_drop_the_break_they_end_at() {
        let text = format!("{}\n{}\n{}", "a".repeat(40), "b".repeat(40), "c".repeat(40));
        assert_eq!(
            split(&text, 90),
            vec![
                format!("{}\n{}", "a".repeat(40), "b".repeat(40)),
                "c".repeat(40)
            ]
        );
        assert_eq!(split("", 100), vec![""]);
        assert_eq!(cost("a\"b"), 4);
    }

    #[test]
    fn keyword_is_added_only_when_missing() {
        assert_eq!(with_keyword("hi", Some("告警")), "告警 hi");
        assert_eq!(with_keyword("告警: hi", Some("告警")), "告警: hi");
        assert_eq!(with_keyword("hi", None), "hi");
    }
}
