//! Text normalization shared by spam fingerprints and word lists: full-width to half-width,
//! lower case, and dropping the fillers spammers put between characters (whitespace,
//! punctuation, symbols, emoji, zero-width characters), so `兼@职`, `兼 职` and `兼职😀` all
//! read `兼职`. [`normalize_mapped`] also tells, for every byte of the normalized text, which
//! original character it came from, so a match can be masked in the original text.

use std::ops::Range;
use std::sync::OnceLock;

use regex::Regex;

use crate::policy::detect::fold_width;

/// Which normalizations to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Normalize {
    /// Full-width ASCII (U+FF01..U+FF5E) to half-width, the ideographic space to a space.
    pub width: bool,
    /// Lower case (Unicode lower-casing; one character may become several).
    pub case: bool,
    /// Drop fillers: whitespace, control characters, punctuation, symbols and emoji
    /// (Unicode general categories P*, S*, Z*, Cc, Cf, including the zero-width characters
    /// U+200B..U+200D, U+2060, U+FEFF), and the emoji variation selectors and keycap mark.
    pub symbols: bool,
}

impl Normalize {
    /// Every normalization: what word lists use unless told otherwise.
    pub const ALL: Normalize = Normalize {
        width: true,
        case: true,
        symbols: true,
    };

    /// No normalization: text is matched as written.
    pub const NONE: Normalize = Normalize {
        width: false,
        case: false,
        symbols: false,
    };

    /// The same options with fillers kept (what regexes run on: a regex can name fillers
    /// itself, as in `QQ[:：]\s*\d+`).
    pub const fn keeping_symbols(self) -> Normalize {
        Normalize {
            symbols: false,
            ..self
        }
    }
}

impl Default for Normalize {
    /// [`Normalize::ALL`].
    fn default() -> Self {
        Normalize::ALL
    }
}

/// Fillers, as one character class. Variation selectors (U+FE00..U+FE0F, U+E0100..U+E01EF)
/// and the combining keycap (U+20E3) are marks, not symbols, but only ever dress up emoji.
const FILLER_CLASS: &str =
    r"[\p{P}\p{S}\p{Z}\p{Cc}\p{Cf}\s\x{FE00}-\x{FE0F}\x{20E3}\x{E0100}-\x{E01EF}]";

/// Characters below this are classified by a table (planes 0 and 1: every script in daily
/// use, the CJK punctuation and the emoji); the rare ones above by the regex itself.
const TABLE_END: u32 = 0x2_0000;

/// The compiled filler class (`None` only if the constant pattern failed to compile, which a
/// test rules out; then the ASCII-and-whitespace fallback of [`is_filler_fallback`] applies).
fn filler_pattern() -> Option<&'static Regex> {
    static PATTERN: OnceLock<Option<Regex>> = OnceLock::new();
    PATTERN
        .get_or_init(|| Regex::new(FILLER_CLASS).ok())
        .as_ref()
}

/// One bit per character below [`TABLE_END`], set for fillers: built once from the filler
/// class by one regex pass over all those characters, so classifying is a lookup.
fn filler_table() -> Option<&'static [u64]> {
    static TABLE: OnceLock<Option<Box<[u64]>>> = OnceLock::new();
    TABLE
        .get_or_init(|| {
            let pattern = filler_pattern()?;
            let all: String = (0..TABLE_END).filter_map(char::from_u32).collect();
            let mut table = vec![0u64; (TABLE_END as usize).div_ceil(64)].into_boxed_slice();
            for found in pattern.find_iter(&all) {
                for c in found.as_str().chars() {
                    let code = c as usize;
                    if let Some(word) = table.get_mut(code / 64) {
                        *word |= 1 << (code % 64);
                    }
                }
            }
            Some(table)
        })
        .as_deref()
}

/// Fillers by a rule that needs no regex: ASCII other than letters and digits, Unicode
/// whitespace and the zero-width characters.
fn is_filler_fallback(c: char) -> bool {
    if c.is_ascii() {
        !c.is_ascii_alphanumeric()
    } else {
        c.is_whitespace() || matches!(c, '\u{200B}'..='\u{200D}' | '\u{2060}' | '\u{FEFF}')
    }
}

/// True when a character is a filler (see [`Normalize::symbols`]).
pub fn is_filler(c: char) -> bool {
    if c.is_ascii() {
        return !c.is_ascii_alphanumeric();
    }
    let code = c as u32;
    if code < TABLE_END {
        if let Some(table) = filler_table() {
            let code = code as usize;
            return table
                .get(code / 64)
                .is_some_and(|word| word & (1 << (code % 64)) != 0);
        }
    }
    match filler_pattern() {
        Some(pattern) => {
            let mut buffer = [0u8; 4];
            pattern.is_match(c.encode_utf8(&mut buffer))
        }
        None => is_filler_fallback(c),
    }
}

/// True for characters that have no lower-case mapping for certain (CJK, kana, Hangul,
/// ideographs beyond the first planes), so lower-casing can skip the table search.
fn is_caseless(c: char) -> bool {
    matches!(c, '\u{3000}'..='\u{A63F}' | '\u{AC00}'..='\u{D7FF}' | '\u{F900}'..='\u{FAFF}')
        || c as u32 >= TABLE_END
}

/// Normalizes `text`, handing each output character with the byte offset of the original
/// character it came from.
fn normalize_each(text: &str, options: Normalize, mut emit: impl FnMut(char, usize)) {
    for (offset, c) in text.char_indices() {
        if options.symbols && is_filler(c) {
            continue;
        }
        let c = if options.width { fold_width(c) } else { c };
        if !options.case {
            emit(c, offset);
        } else if c.is_ascii() {
            emit(c.to_ascii_lowercase(), offset);
        } else if is_caseless(c) {
            emit(c, offset);
        } else {
            for lower in c.to_lowercase() {
                emit(lower, offset);
            }
        }
    }
}

/// `text` normalized with `options`.
pub fn normalize(text: &str, options: Normalize) -> String {
    let mut out = String::with_capacity(text.len());
    normalize_each(text, options, |c, _| out.push(c));
    out
}

/// `text` normalized with `options`, and for every BYTE of the normalized text the byte
/// offset in `text` of the original character it came from (so the map has the length of
/// the normalized text, and all bytes of one output character share an entry). Turn a byte
/// range of the normalized text back into original characters with [`original_span`].
pub fn normalize_mapped(text: &str, options: Normalize) -> (String, Vec<usize>) {
    let mut out = String::with_capacity(text.len());
    let mut map = Vec::with_capacity(text.len());
    normalize_each(text, options, |c, offset| {
        out.push(c);
        map.resize(out.len(), offset);
    });
    (out, map)
}

/// The byte range in `original` of the characters that a non-empty byte range of the
/// normalized text came from: from the start of the first character to the end of the last
/// (fillers between them included). `None` for an empty or out-of-bounds range.
pub fn original_span(
    original: &str,
    map: &[usize],
    normalized: Range<usize>,
) -> Option<Range<usize>> {
    if normalized.start >= normalized.end {
        return None;
    }
    let start = *map.get(normalized.start)?;
    let last = *map.get(normalized.end - 1)?;
    let last_len = original.get(last..)?.chars().next()?.len_utf8();
    Some(start..last + last_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filler_class_compiles_and_the_table_agrees_with_it() {
        let pattern = filler_pattern().expect("compiles");
        assert!(filler_table().is_some());
        for code in (0..0x11_0000).step_by(7) {
            let Some(c) = char::from_u32(code) else {
                continue;
            };
            let mut buffer = [0u8; 4];
            let by_regex = pattern.is_match(c.encode_utf8(&mut buffer));
            assert_eq!(is_filler(c), by_regex, "U+{code:04X}");
        }
    }

    #[test]
    fn caseless_ranges_really_have_no_case() {
        for code in (0x3000..0xA640).chain(0xAC00..0xD800).chain(0xF900..0xFB00) {
            let Some(c) = char::from_u32(code) else {
                continue;
            };
            assert!(c.to_lowercase().eq(std::iter::once(c)), "U+{code:04X}");
        }
    }

    #[test]
    fn fillers_between_characters_are_dropped() {
        for variant in [
            "兼@职",
            "兼 职",
            "兼职😀",
            "兼\u{200B}职",
            "兼，职",
            "兼\u{3000}职",
            "兼❤\u{FE0F}职",
        ] {
            assert_eq!(normalize(variant, Normalize::ALL), "兼职", "{variant:?}");
        }
        assert_eq!(normalize("加 V：abc_123！", Normalize::ALL), "加vabc123");
    }

    #[test]
    fn width_and_case_fold_separately() {
        let width_only = Normalize {
            width: true,
            case: false,
            symbols: false,
        };
        assert_eq!(normalize("ＶＸ：１２３\u{3000}ok", width_only), "VX:123 ok");
        let case_only = Normalize {
            width: false,
            case: true,
            symbols: false,
        };
        assert_eq!(normalize("ＶＸ VX", case_only), "ｖｘ vx");
        assert_eq!(normalize("ＶＸ VX", Normalize::NONE), "ＶＸ VX");
        assert_eq!(
            normalize("ＶＸ VX", Normalize::ALL.keeping_symbols()),
            "vx vx"
        );
    }

    #[test]
    fn the_map_leads_back_to_original_characters() {
        let original = "今天兼 职😀ＶＸ";
        let (text, map) = normalize_mapped(original, Normalize::ALL);
        assert_eq!(text, "今天兼职vx");
        assert_eq!(map.len(), text.len());
        let start = text.find("兼职").expect("found");
        let span = original_span(original, &map, start..start + "兼职".len()).expect("span");
        assert_eq!(&original[span], "兼 职");
        let vx = text.find("vx").expect("found");
        let span = original_span(original, &map, vx..vx + 2).expect("span");
        assert_eq!(&original[span], "ＶＸ");
        assert_eq!(original_span(original, &map, 3..3), None);
        assert_eq!(original_span(original, &map, 0..999), None);
    }

    #[test]
    fn one_character_may_lower_case_to_several() {
        let (text, map) = normalize_mapped("İx", Normalize::ALL);
        assert_eq!(text.chars().count(), 3);
        assert_eq!(map.len(), text.len());
        assert_eq!(
            original_span("İx", &map, 0..text.len()),
            Some(0.."İx".len())
        );
    }

    #[test]
    fn single_characters_are_classified_like_runs() {
        assert!(is_filler('，'));
        assert!(is_filler('😀'));
        assert!(is_filler('\u{FEFF}'));
        assert!(!is_filler('兼'));
        assert!(!is_filler('a'));
        assert!(!is_filler('７'));
    }
}
