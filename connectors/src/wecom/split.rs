//! Splitting a long message for a platform that limits content by UTF-8 bytes (WeCom robot
//! text: 2048, markdown: 4096). Parts are cut on character boundaries only, preferring the
//! last line break that leaves a part at least half full, and concatenated they give back
//! exactly the original text (a line break where a part ends stays at the end of that part).

/// Splits `text` into parts of at most `limit` bytes each (at least 4, so any character
/// fits). Text within the limit comes back as one part; an empty text as one empty part.
pub fn split(text: &str, limit: usize) -> Vec<&str> {
    let limit = limit.max(4);
    let mut parts = Vec::new();
    let mut rest = text;
    while rest.len() > limit {
        let mut cut = limit;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        if let Some(at) = rest[..cut].rfind('\n') {
            if at + 1 >= cut / 2 {
                cut = at + 1;
            }
        }
        let (part, tail) = rest.split_at(cut);
        parts.push(part);
        rest = tail;
    }
    if !rest.is_empty() || parts.is_empty() {
        parts.push(rest);
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_one_part() {
        assert_eq!(split("你好", 2048), vec!["你好"]);
        assert_eq!(split("", 2048), vec![""]);
    }

    #[test]
    fn characters_are_never_cut_and_parts_join_back() {
        // 3-byte CJK and 4-byte emoji, with no line breaks: cuts fall between characters.
        let text = "群桥😀".repeat(500);
        for limit in [4, 5, 7, 100, 2048] {
            let parts = split(&text, limit);
            assert!(
                parts.iter().all(|p| p.len() <= limit && !p.is_empty()),
                "{limit}"
            );
            assert_eq!(parts.concat(), text, "{limit}");
            // A full part wastes at most 3 bytes (the character that did not fit).
            assert!(parts[..parts.len() - 1]
                .iter()
                .all(|p| p.len() + 3 >= limit.max(4)));
        }
    }

    #[test]
    fn line_breaks_are_preferred_when_they_leave_a_part_half_full() {
        let text = format!("{}\n{}", "一".repeat(400), "二".repeat(400));
        let parts = split(&text, 2048);
        assert_eq!(parts.len(), 2);
        assert!(parts[0].ends_with('\n'));
        assert_eq!(parts[0].len(), 1201);
        assert_eq!(parts.concat(), text);
        // A break early in the budget is not worth a near-empty part.
        let early = format!("hi\n{}", "三".repeat(1000));
        let parts = split(&early, 2048);
        assert_eq!(parts[0].len(), 2046, "\"hi\\n\" plus 681 characters");
        assert_eq!(parts.concat(), early);
    }
}
