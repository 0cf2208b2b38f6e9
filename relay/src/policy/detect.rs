//! Finding what link filtering acts on: URLs (with or without a scheme), QQ group invites,
//! WeChat share codes and custom patterns, in text normalized from full-width to half-width
//! first (so `ｅｘａｍｐｌｅ．ｃｏｍ` is found). Normalization maps each character to exactly one
//! character, so a span found in the normalized text maps back to the original.

use std::cell::OnceCell;
use std::ops::Range;
use std::sync::OnceLock;

use linkify::{LinkFinder, LinkKind};
use regex::Regex;

/// Hosts of well-known URL shorteners.
pub const SHORTENERS: &[&str] = &[
    "t.cn",
    "url.cn",
    "w.url.cn",
    "dwz.cn",
    "suo.im",
    "mrw.so",
    "b23.tv",
    "m.tb.cn",
    "s.tb.cn",
    "e.tb.cn",
    "v.douyin.com",
    "bit.ly",
    "tinyurl.com",
    "goo.gl",
    "t.co",
    "is.gd",
    "ow.ly",
    "s.id",
    "rb.gy",
    "cutt.ly",
    "reurl.cc",
    "dwz.mk",
    "u.nu",
    "0x3.me",
    "sohu.gg",
    "xhslink.com",
];

/// Hosts of QQ group invite links.
pub const INVITE_HOSTS: &[&str] = &["qm.qq.com", "jq.qq.com", "qun.qq.com"];

/// One character as matching sees it: full-width ASCII to half-width, the ideographic space
/// to a space, and `。` between ASCII letters or digits to `.` (`example。com`).
fn normalize_char(prev: Option<char>, c: char, next: Option<char>) -> char {
    match c {
        '\u{3002}' | '\u{FF61}'
            if prev.is_some_and(|p| p.is_ascii_alphanumeric() || is_fullwidth_alnum(p))
                && next.is_some_and(|n| n.is_ascii_alphanumeric() || is_fullwidth_alnum(n)) =>
        {
            '.'
        }
        other => fold_width(other),
    }
}

/// Full-width ASCII (U+FF01..U+FF5E) to half-width and the ideographic space to a space;
/// every other character unchanged. Shared with the moderation word lists and fingerprints.
pub(crate) fn fold_width(c: char) -> char {
    match c {
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(c as u32 - 0xFEE0).unwrap_or(c),
        '\u{3000}' => ' ',
        other => other,
    }
}

/// A full-width letter or digit.
fn is_fullwidth_alnum(c: char) -> bool {
    matches!(c, '\u{FF10}'..='\u{FF19}' | '\u{FF21}'..='\u{FF3A}' | '\u{FF41}'..='\u{FF5A}')
}

/// The [`Normalized::url_view`] of a text alone, without the offsets that lead back to the
/// original: enough to tell whether a text holds a URL at all.
pub fn url_view(text: &str) -> String {
    let mut view = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    let mut prev = None;
    while let Some(c) = chars.next() {
        let normalized = normalize_char(prev, c, chars.peek().copied());
        view.push(if normalized.is_ascii() {
            normalized
        } else {
            ' '
        });
        prev = Some(c);
    }
    view
}

/// Text normalized for matching, with the way back to the original. Positions are shared as
/// character indices: every view has one character per original character.
pub struct Normalized<'a> {
    /// The text as written, for the way back.
    original: &'a str,
    /// The normalized text (regexes and pattern detectors run on it).
    pub text: String,
    /// The normalized text with every non-ASCII character turned into a space: URLs are found
    /// here, so Chinese text around a link is never taken for part of it.
    pub url_view: String,
    /// Where each character starts in each view, built on the first question about a
    /// position: most texts are searched and nothing is found, and then no position is asked.
    offsets: OnceCell<Offsets>,
}

/// Byte offset of each character (plus the end) in each view of a [`Normalized`] text.
struct Offsets {
    /// In [`Normalized::text`].
    text: Vec<usize>,
    /// In [`Normalized::url_view`].
    url: Vec<usize>,
    /// In the original.
    original: Vec<usize>,
}

impl<'a> Normalized<'a> {
    /// Normalizes a text. Only non-ASCII characters can change (full-width forms, the
    /// ideographic space and full stops), so runs of ASCII are copied as they are.
    pub fn new(original: &'a str) -> Normalized<'a> {
        let mut text = String::with_capacity(original.len());
        let mut url_view = String::with_capacity(original.len());
        let mut prev = None;
        let mut rest = original;
        while !rest.is_empty() {
            let ascii = rest.bytes().take_while(u8::is_ascii).count();
            if ascii > 0 {
                let (run, after) = rest.split_at(ascii);
                text.push_str(run);
                url_view.push_str(run);
                prev = run.chars().next_back();
                rest = after;
                continue;
            }
            let mut chars = rest.chars();
            let Some(c) = chars.next() else {
                break;
            };
            let normalized = normalize_char(prev, c, chars.clone().next());
            text.push(normalized);
            url_view.push(if normalized.is_ascii() {
                normalized
            } else {
                ' '
            });
            prev = Some(c);
            rest = chars.as_str();
        }
        Normalized {
            original,
            text,
            url_view,
            offsets: OnceCell::new(),
        }
    }

    /// The views' character offsets, built once.
    fn offsets(&self) -> &Offsets {
        self.offsets.get_or_init(|| {
            let starts = |view: &str| -> Vec<usize> {
                view.char_indices()
                    .map(|(at, _)| at)
                    .chain(std::iter::once(view.len()))
                    .collect()
            };
            Offsets {
                text: starts(&self.text),
                url: starts(&self.url_view),
                original: starts(self.original),
            }
        })
    }

    /// Character range of a byte range of `text`.
    pub fn chars_of_text(&self, range: &Range<usize>) -> Range<usize> {
        to_chars(&self.offsets().text, range)
    }

    /// Character range of a byte range of `url_view`.
    pub fn chars_of_url_view(&self, range: &Range<usize>) -> Range<usize> {
        to_chars(&self.offsets().url, range)
    }

    /// Character range of a byte range of the original text.
    pub fn chars_of_original(&self, range: &Range<usize>) -> Range<usize> {
        to_chars(&self.offsets().original, range)
    }

    /// The original byte range of a character range.
    pub fn original_range(&self, chars: &Range<usize>) -> Range<usize> {
        let offsets = &self.offsets().original;
        let at = |i: usize| offsets[i.min(offsets.len() - 1)];
        at(chars.start)..at(chars.end)
    }

    /// The normalized text of a character range.
    pub fn normalized_slice(&self, chars: &Range<usize>) -> &str {
        let offsets = &self.offsets().text;
        let at = |i: usize| offsets[i.min(offsets.len() - 1)];
        &self.text[at(chars.start)..at(chars.end)]
    }
}

/// Maps a byte range of a view to character indices through the view's offsets.
fn to_chars(offsets: &[usize], range: &Range<usize>) -> Range<usize> {
    let index = |offset: usize| {
        offsets
            .partition_point(|o| *o < offset)
            .min(offsets.len() - 1)
    };
    index(range.start)..index(range.end)
}

/// False when a text cannot hold a link, an invite number or a share code, so matching can
/// be skipped: links need a dot, invites digits, share codes a currency sign or 口令/暗号.
pub fn may_contain_candidates(text: &str) -> bool {
    text.chars().any(|c| {
        matches!(
            c,
            '.' | '。' | '．' | '｡' | '0'..='9' | '０'..='９' | '￥' | '$' | '€' | '₴' | '¢' | '₳' | '₤' | '₰' | '¥' | '令' | '号'
        )
    })
}

/// A URL found in text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundUrl {
    /// Byte range in the text searched.
    pub range: Range<usize>,
    /// Lower-case host.
    pub host: String,
}

/// The host of a URL text (with or without scheme), lower-cased.
pub fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    rest.split(['/', '?', '#', ':'])
        .next()
        .unwrap_or_default()
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// True when `host` is `domain` or a subdomain of it.
pub fn host_matches(host: &str, domain: &str) -> bool {
    let domain = domain.trim_start_matches('.').to_ascii_lowercase();
    host == domain || host.ends_with(&format!(".{domain}"))
}

/// The shared URL finder.
fn finder() -> &'static LinkFinder {
    static FINDER: OnceLock<LinkFinder> = OnceLock::new();
    FINDER.get_or_init(|| {
        let mut finder = LinkFinder::new();
        finder.kinds(&[LinkKind::Url]).url_must_have_scheme(false);
        finder
    })
}

/// Every URL in a text: links with a scheme, and bare domains with an alphabetic top-level
/// domain (so `1.5` or `你好.世界` in ordinary text are not URLs).
pub fn urls(text: &str) -> Vec<FoundUrl> {
    finder()
        .links(text)
        .filter_map(|link| {
            let url = link.as_str();
            let host = host_of(url);
            let has_scheme = url.contains("://");
            if !has_scheme {
                let tld = host.rsplit('.').next().unwrap_or_default();
                let plausible = host.contains('.')
                    && host.is_ascii()
                    && tld.len() >= 2
                    && tld.bytes().all(|b| b.is_ascii_alphabetic());
                if !plausible {
                    return None;
                }
            }
            Some(FoundUrl {
                range: link.start()..link.end(),
                host,
            })
        })
        .collect()
}

/// "QQ群 123456789"-style group numbers.
pub fn invite_numbers(text: &str) -> Vec<Range<usize>> {
    static PATTERN: OnceLock<Option<Regex>> = OnceLock::new();
    let pattern = PATTERN.get_or_init(|| {
        Regex::new(
            r"(?i)(?:qq\s*群|q\s*群|扣扣群|群号|加群|群聊号码)\s*(?:号码|号)?\s*[:：]?\s*\d{5,11}",
        )
        .ok()
    });
    pattern
        .as_ref()
        .map(|p| p.find_iter(text).map(|m| m.range()).collect())
        .unwrap_or_default()
}

/// 口令-style share tokens (`￥AbCd1234Ef￥`, `口令: XyZ12345`).
pub fn share_codes(text: &str) -> Vec<Range<usize>> {
    static PATTERN: OnceLock<Option<Regex>> = OnceLock::new();
    let pattern = PATTERN.get_or_init(|| {
        Regex::new(r"[￥$€₴¢₳₤₰¥][A-Za-z0-9]{8,16}[￥$€₴¢₳₤₰¥]|(?:口令|暗号|淘口令)\s*[:：]?\s*[A-Za-z0-9]{8,}").ok()
    });
    pattern
        .as_ref()
        .map(|p| p.find_iter(text).map(|m| m.range()).collect())
        .unwrap_or_default()
}

/// A URL made unclickable: `hxxps[:]//example[.]com/a[.]b`.
pub fn defang(url: &str) -> String {
    let mut out = url.replace("://", "[:]//").replace('.', "[.]");
    if out.len() >= 4 && out[..4].eq_ignore_ascii_case("http") {
        out.replace_range(..4, "hxxp");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_with_and_without_scheme_but_not_ordinary_text() {
        let found = urls("看 https://Example.org/x?y=1 和 docs.rs/tokio，还有 1.5 与 你好.世界");
        let hosts: Vec<_> = found.iter().map(|u| u.host.as_str()).collect();
        assert_eq!(hosts, vec!["example.org", "docs.rs"]);
    }

    #[test]
    fn normalizing_by_ascii_runs_gives_what_normalizing_each_character_gives() {
        for original in [
            "",
            "a。b",
            "。a。",
            "ａ。ｂ x。y 1｡2",
            "今天的周会改到下午三点 / the weekly meeting moves to 3 pm.",
            "qb#1#2#1764945000000000000# 去ｅｘａｍｐｌｅ。ｃｏｍ看　ok",
            "emoji 😀。x",
        ] {
            let chars: Vec<char> = original.chars().collect();
            let expected: String = (0..chars.len())
                .map(|i| {
                    normalize_char(
                        i.checked_sub(1).map(|p| chars[p]),
                        chars[i],
                        chars.get(i + 1).copied(),
                    )
                })
                .collect();
            let normalized = Normalized::new(original);
            assert_eq!(normalized.text, expected, "{original}");
            assert_eq!(normalized.url_view, url_view(original), "{original}");
            // Every character maps back to itself in the original.
            for (index, (at, c)) in original.char_indices().enumerate() {
                let range = normalized.original_range(&(index..index + 1));
                assert_eq!(range, at..at + c.len_utf8(), "{original}");
                assert_eq!(
                    normalized.normalized_slice(&(index..index + 1)),
                    expected
                        .chars()
                        .nth(index)
                        .map(String::from)
                        .unwrap_or_default()
                );
            }
        }
    }

    #[test]
    fn full_width_text_is_matched_and_mapped_back() {
        let original = "去ｅｘａｍｐｌｅ。ｃｏｍ看";
        let normalized = Normalized::new(original);
        assert_eq!(normalized.text, "去example.com看");
        let found = urls(&normalized.url_view);
        assert_eq!(found.len(), 1);
        let back = normalized.original_range(&normalized.chars_of_url_view(&found[0].range));
        assert_eq!(&original[back], "ｅｘａｍｐｌｅ。ｃｏｍ");
        assert_eq!(
            Normalized::new("你好。世界").text,
            "你好。世界",
            "Chinese full stops stay"
        );
    }

    #[test]
    fn invites_share_codes_and_defanging() {
        assert_eq!(invite_numbers("快来QQ群：123456789玩").len(), 1);
        assert_eq!(invite_numbers("价格 123456789 元").len(), 0);
        assert_eq!(share_codes("复制￥AbCd1234Ef￥打开").len(), 1);
        assert_eq!(
            defang("https://a.example.com/x.y"),
            "hxxps[:]//a[.]example[.]com/x[.]y"
        );
        assert!(urls(&defang("https://a.example.com/x.y")).is_empty());
        assert!(host_matches("a.example.com", "example.com"));
        assert!(!host_matches("badexample.com", "example.com"));
        assert_eq!(host_of("user@evil.com"), "evil.com");
    }
}
