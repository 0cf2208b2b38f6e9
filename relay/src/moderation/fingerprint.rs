//! Spam-wave fingerprints: one key for every variant of a spammed message. Spammers vary an
//! ad so that plain duplicate detection misses it (full-width letters, extra spaces, an emoji,
//! another query string or subdomain on a link); the fingerprint folds all of that away, so
//! the same ad sent to many groups, or by many accounts, counts as one.

use std::net::IpAddr;

use unicode_normalization::{IsNormalized, UnicodeNormalization};

use crate::moderation::normalize::{normalize, Normalize};
use crate::policy::detect::{fold_width, url_view, urls, Normalized};

/// Fingerprints shorter than this many characters are too common to mean a spam wave
/// ("好的", "收到", "+1").
pub const DEFAULT_MIN_CHARS: usize = 8;

/// The fingerprint of a message text: full-width folded to half-width, NFKC, lower-cased,
/// with zero-width characters, whitespace, punctuation, symbols and emoji removed, and every
/// URL replaced by its registrable host (`https://a.b.example.com/x?y=1` → `example.com`,
/// `foo.co.uk` stays `foo.co.uk`).
pub fn fingerprint(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    // Most texts hold no link: then the whole text is folded as it is, with no need to map
    // positions back to the original.
    if !text.contains(URL_MARKS) || urls(&url_view(text)).is_empty() {
        fold_into(text, &mut out);
        return out;
    }
    let normalized = Normalized::new(text);
    let mut done = 0;
    for url in urls(&normalized.url_view) {
        let chars = normalized.chars_of_url_view(&url.range);
        if chars.start < done {
            continue;
        }
        fold_into(normalized.normalized_slice(&(done..chars.start)), &mut out);
        out.push_str(registrable_host(&url.host));
        done = chars.end;
    }
    let end = normalized.text.chars().count();
    fold_into(normalized.normalized_slice(&(done..end)), &mut out);
    out
}

/// Characters without one of which a text holds no URL (a host has a dot, in some width).
const URL_MARKS: [char; 4] = ['.', '。', '．', '｡'];

/// Appends the fingerprint of a piece of text without URLs: NFKC, then width, case and
/// fillers (NFKC may turn a character into fillers, as `㈱` into `(株)`, so fillers go last).
fn fold_into(piece: &str, out: &mut String) {
    if piece.is_empty() {
        return;
    }
    // Full-width punctuation (`，！`) is the common reason chat text is not in NFKC; folded
    // to half-width first (as NFKC would), most of it is, and a quick check says so without
    // composing.
    let folded: String = piece.chars().map(fold_width).collect();
    if unicode_normalization::is_nfkc_quick(folded.chars()) == IsNormalized::Yes {
        out.push_str(&normalize(&folded, Normalize::ALL));
        return;
    }
    let composed: String = folded.nfkc().collect();
    out.push_str(&normalize(&composed, Normalize::ALL));
}

/// The registrable domain of a host by the public suffix list compiled into the `psl`
/// crate (`a.b.example.com` → `example.com`, `x.foo.co.uk` → `foo.co.uk`); an IP address or
/// a host the list cannot split stays whole.
fn registrable_host(host: &str) -> &str {
    if host.parse::<IpAddr>().is_ok() {
        return host;
    }
    psl::domain_str(host).unwrap_or(host)
}

/// True when a fingerprint is long enough to count towards a spam wave: at least
/// `min_chars` characters (see [`DEFAULT_MIN_CHARS`]).
pub fn is_wave_candidate(fingerprint: &str, min_chars: usize) -> bool {
    min_chars == 0 || fingerprint.chars().nth(min_chars - 1).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    const AD: &str = "兼职刷单，日结300！加微信 abc123 详情 https://a.b.example.com/x?y=1";

    #[test]
    fn variants_of_one_ad_share_a_fingerprint() {
        let expected = fingerprint(AD);
        assert_eq!(expected, "兼职刷单日结300加微信abc123详情example.com");
        for variant in [
            "兼职刷单，日结３００！加微信 ＡＢＣ１２３ 详情 https://a.b.example.com/x?y=1",
            "兼职 刷单 ， 日结300 ！  加微信  abc123  详情  https://a.b.example.com/x?y=1",
            "😀兼职刷单，日结300！加微信 abc123 详情 https://a.b.example.com/x?y=1 🔥",
            "兼职刷单，日结300！加微信 abc123 详情 https://a.b.example.com/other?z=2",
            "兼职刷单，日结300！加微信 abc123 详情 HTTP://example.com/z",
            "兼职刷单，日结300！加微信 abc123 详情 www.example.com",
            "兼职刷单，日结300！加微信 abc123 详情 ｈｔｔｐｓ：／／ａ．ｂ．ｅｘａｍｐｌｅ．ｃｏｍ／ｘ",
            "兼职\u{200B}刷单，日结300！加微信\u{3000}abc123 详情 https://c.example.com/x?y=1",
        ] {
            assert_eq!(fingerprint(variant), expected, "{variant}");
        }
    }

    #[test]
    fn a_text_without_a_link_folds_as_it_would_with_the_way_back() {
        // The shortcut (no URL: fold the text as it is) gives what folding the normalized
        // view gives.
        for text in [
            "今天的周会改到下午三点，请大家准时参加 / the weekly meeting moves to 3 pm.",
            "ｗｉｄｅ　ｔｅｘｔ。全角。ＡＢＣ。１２３",
            "价格 1。2 元。好。",
            "①ｶﾀｶﾅ ﬁle　兼职\u{200B}刷单！",
        ] {
            let normalized = Normalized::new(text);
            let mut slow = String::new();
            fold_into(&normalized.text, &mut slow);
            assert_eq!(fingerprint(text), slow, "{text}");
        }
    }

    #[test]
    fn a_different_ad_has_another_fingerprint() {
        assert_ne!(
            fingerprint(AD),
            fingerprint("兼职刷单，日结300！加微信 abc123 详情 https://a.b.other.com/x?y=1")
        );
        assert_ne!(
            fingerprint(AD),
            fingerprint("低价代购，包邮到家，加微信 abc123")
        );
    }

    #[test]
    fn registrable_hosts_follow_the_public_suffix_list() {
        assert_eq!(fingerprint("see https://x.foo.co.uk/a"), "seefoo.co.uk");
        assert_eq!(fingerprint("see foo.co.uk"), "seefoo.co.uk");
        assert_eq!(fingerprint("see http://10.0.0.1/a"), "see10.0.0.1");
    }

    #[test]
    fn nfkc_folds_compatibility_characters() {
        assert_eq!(fingerprint("①ｶﾀｶﾅ ﬁle"), "1カタカナfile");
    }

    #[test]
    fn short_text_is_not_a_candidate() {
        assert!(!is_wave_candidate(
            &fingerprint("好的！"),
            DEFAULT_MIN_CHARS
        ));
        assert!(!is_wave_candidate(
            &fingerprint("收到 👍👍👍👍👍👍"),
            DEFAULT_MIN_CHARS
        ));
        assert!(is_wave_candidate(&fingerprint(AD), DEFAULT_MIN_CHARS));
        assert!(is_wave_candidate("12345678", 8));
        assert!(!is_wave_candidate("1234567", 8));
        assert!(is_wave_candidate("", 0));
    }
}
