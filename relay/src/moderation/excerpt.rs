//! Short excerpts of message text for log lines and admin notifications, so a flood or a
//! spam wave can be recognised without logging whole messages.

/// The mark appended to an excerpt that was cut.
const ELLIPSIS: char = '…';

/// The first `max_chars` characters of `text` (characters, not bytes, so it never cuts a
/// character in half), with `…` appended when something was cut. The issue asks for 40.
pub fn excerpt(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        None => text.to_owned(),
        Some((cut, _)) => {
            let mut short = String::with_capacity(cut + ELLIPSIS.len_utf8());
            short.push_str(&text[..cut]);
            short.push(ELLIPSIS);
            short
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn short_text_is_kept_whole() {
        assert_eq!(excerpt("hello", 40), "hello");
        assert_eq!(excerpt("", 40), "");
        assert_eq!(excerpt("exactly", 7), "exactly");
    }

    #[test]
    fn long_text_is_cut_at_a_character_with_an_ellipsis() {
        assert_eq!(excerpt("abcdef", 3), "abc…");
        assert_eq!(excerpt("加群领取免费红包，名额有限", 4), "加群领取…");
        assert_eq!(excerpt("👍👍👍", 1), "👍…");
        assert_eq!(excerpt("abc", 0), "…");
    }

    proptest! {
        #[test]
        fn never_longer_than_asked_plus_the_ellipsis(text in "\\PC{0,80}", max in 0usize..60) {
            let short = excerpt(&text, max);
            prop_assert!(short.chars().count() <= max + 1);
            let kept = short.strip_suffix(ELLIPSIS).unwrap_or(&short);
            prop_assert!(text.starts_with(kept));
        }
    }
}
