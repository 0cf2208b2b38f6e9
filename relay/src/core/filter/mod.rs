//! Link filtering per destination (ARCHITECTURE.md §7): ordered rules, the first rule that
//! matches an occurrence decides what happens to it. Matchers: builtin detectors (`url`,
//! `qq_group_invite`, `wechat_share_code`, `short_link`), domain lists (suffix match) and
//! regexes. Actions: `allow`, `strip`, `replace`, `defang`, `drop` (the whole message).
//! Text is normalized from full-width to half-width before matching; what is not matched is
//! left exactly as written.

use std::ops::Range;

use crate::policy::detect::{self, host_matches, Normalized, INVITE_HOSTS, SHORTENERS};
use crate::policy::{Action, FilterRules, Matcher};

/// What filtering did to a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filtered {
    /// The text to send (unchanged when nothing matched).
    pub text: String,
    /// The rule name that dropped the message, if one did.
    pub dropped: Option<&'static str>,
    /// (rule name, action name) of every occurrence acted on.
    pub hits: Vec<(&'static str, &'static str)>,
}

/// An occurrence some rule may act on.
struct Candidate {
    /// Byte range in the normalized text.
    range: Range<usize>,
    /// Host, for URLs.
    host: Option<String>,
    /// True for "QQ群 123…" numbers.
    invite_number: bool,
    /// True for share codes.
    share_code: bool,
}

/// The filter engine: how a destination's rules (plain data in [`crate::policy`]) act on a
/// text.
impl FilterRules {
    /// Applies the rules to a text.
    pub fn apply(&self, text: &str) -> Filtered {
        if self.rules.is_empty() {
            return Filtered {
                text: text.to_owned(),
                dropped: None,
                hits: Vec::new(),
            };
        }
        let has_regex = self
            .rules
            .iter()
            .any(|r| matches!(r.matcher, Matcher::Regex(_)));
        if !has_regex && !detect::may_contain_candidates(text) {
            return Filtered {
                text: text.to_owned(),
                dropped: None,
                hits: Vec::new(),
            };
        }
        // A replacement or defanged link can bring neighbours together into a new match
        // ("exa" + "mple.com"); a few passes reach a text that filtering leaves unchanged.
        let mut result = self.pass(text);
        for _ in 0..3 {
            let changed = result.hits.iter().any(|(_, action)| *action != "allow");
            if result.dropped.is_some() || !changed {
                break;
            }
            let again = self.pass(&result.text);
            if again.text == result.text && again.dropped.is_none() {
                break;
            }
            result.hits.extend(
                again
                    .hits
                    .into_iter()
                    .filter(|(_, action)| *action != "allow"),
            );
            result.dropped = again.dropped;
            result.text = again.text;
        }
        result
    }

    /// One pass over a text.
    fn pass(&self, text: &str) -> Filtered {
        let normalized = Normalized::new(text);
        // Only run the detectors some rule needs.
        let wants = |f: fn(&Matcher) -> bool| self.rules.iter().any(|r| f(&r.matcher));
        let want_urls = wants(|m| {
            matches!(
                m,
                Matcher::Url | Matcher::Domain(_) | Matcher::ShortLink | Matcher::QqGroupInvite
            )
        });
        let want_invites = wants(|m| matches!(m, Matcher::QqGroupInvite));
        let want_codes = wants(|m| matches!(m, Matcher::WechatShareCode));
        let urls = if want_urls {
            detect::urls(&normalized.url_view)
        } else {
            Vec::new()
        };
        let mut candidates: Vec<Candidate> = urls
            .into_iter()
            .map(|url| Candidate {
                range: normalized.chars_of_url_view(&url.range),
                host: Some(url.host),
                invite_number: false,
                share_code: false,
            })
            .collect();
        let norm = normalized.text.as_str();
        let invites = if want_invites {
            detect::invite_numbers(norm)
        } else {
            Vec::new()
        };
        candidates.extend(invites.into_iter().map(|range| Candidate {
            range: normalized.chars_of_text(&range),
            host: None,
            invite_number: true,
            share_code: false,
        }));
        let codes = if want_codes {
            detect::share_codes(norm)
        } else {
            Vec::new()
        };
        candidates.extend(codes.into_iter().map(|range| Candidate {
            range: normalized.chars_of_text(&range),
            host: None,
            invite_number: false,
            share_code: true,
        }));

        // (character range, rule index) of every occurrence claimed by a rule.
        let mut claimed: Vec<(Range<usize>, usize)> = Vec::new();
        let overlaps = |claimed: &[(Range<usize>, usize)], r: &Range<usize>| {
            claimed
                .iter()
                .any(|(c, _)| c.start < r.end && r.start < c.end)
        };
        for (index, rule) in self.rules.iter().enumerate() {
            let ranges: Vec<Range<usize>> = match &rule.matcher {
                Matcher::Regex(regex) => regex
                    .find_iter(norm)
                    .map(|m| normalized.chars_of_text(&m.range()))
                    .collect(),
                matcher => candidates
                    .iter()
                    .filter(|c| matches_candidate(matcher, c))
                    .map(|c| c.range.clone())
                    .collect(),
            };
            for range in ranges {
                if !range.is_empty() && !overlaps(&claimed, &range) {
                    claimed.push((range, index));
                }
            }
        }
        claimed.sort_by_key(|(range, _)| range.start);

        let mut out = String::with_capacity(text.len());
        let mut hits = Vec::new();
        let mut dropped = None;
        let mut cursor = 0;
        for (chars, index) in &claimed {
            let rule = &self.rules[*index];
            hits.push((rule.matcher.name(), rule.action.name()));
            let original = normalized.original_range(chars);
            out.push_str(&text[cursor..original.start]);
            match &rule.action {
                Action::Allow => out.push_str(&text[original.clone()]),
                Action::Strip => {}
                Action::Replace(with) => out.push_str(with),
                Action::Defang => out.push_str(&detect::defang(normalized.normalized_slice(chars))),
                Action::Drop => {
                    dropped.get_or_insert(rule.matcher.name());
                    out.push_str(&text[original.clone()]);
                }
            }
            cursor = original.end;
        }
        out.push_str(&text[cursor..]);
        Filtered {
            text: out,
            dropped,
            hits,
        }
    }
}

/// Whether a builtin matcher matches a candidate occurrence.
fn matches_candidate(matcher: &Matcher, candidate: &Candidate) -> bool {
    let host = candidate.host.as_deref();
    match matcher {
        Matcher::Url => host.is_some(),
        Matcher::Domain(domains) => {
            host.is_some_and(|h| domains.iter().any(|d| host_matches(h, d)))
        }
        Matcher::ShortLink => host.is_some_and(|h| SHORTENERS.iter().any(|d| host_matches(h, d))),
        Matcher::QqGroupInvite => {
            candidate.invite_number
                || host.is_some_and(|h| INVITE_HOSTS.iter().any(|d| host_matches(h, d)))
        }
        Matcher::WechatShareCode => candidate.share_code,
        Matcher::Regex(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use qunbridge_connectors::Platform;
    use regex::Regex;

    use super::*;
    use crate::policy::detect::urls;
    use crate::policy::{default_rules, Rule};

    fn rules(platform: Platform, allow: &[&str]) -> FilterRules {
        let mut rules = Vec::new();
        if !allow.is_empty() {
            rules.push(Rule {
                matcher: Matcher::Domain(allow.iter().map(|d| d.to_string()).collect()),
                action: Action::Allow,
                source: "test".into(),
            });
        }
        rules.extend(default_rules(platform));
        FilterRules {
            rules,
            on_flood: None,
        }
    }

    #[test]
    fn defaults_per_destination_platform() {
        let text = "加群 https://qm.qq.com/q/AbC 或 t.cn/xyz，文档 https://docs.example.org/a.html";
        let to_wechat = rules(Platform::Wechat, &["example.org"]).apply(text);
        assert_eq!(
            to_wechat.text,
            "加群 [群邀请] 或 [短链接]，文档 https://docs.example.org/a.html"
        );
        let to_qq = rules(Platform::Qq, &[]).apply(text);
        assert_eq!(
            to_qq.text,
            "加群 hxxps[:]//qm[.]qq[.]com/q/AbC 或 t[.]cn/xyz，文档 hxxps[:]//docs[.]example[.]org/a[.]html"
        );
        let to_dingtalk = rules(Platform::Dingtalk, &[]).apply(text);
        assert_eq!(to_dingtalk.text, text);
        let invite = rules(Platform::Wechat, &[]).apply("QQ群：123456789 欢迎");
        assert_eq!(invite.text, "[群邀请] 欢迎");
    }

    #[test]
    fn full_width_links_are_caught_and_drop_drops() {
        let filtered = rules(Platform::Qq, &[]).apply("看ｅｘａｍｐｌｅ。ｃｏｍ吧");
        assert_eq!(filtered.text, "看example[.]com吧");
        let drop = FilterRules {
            rules: vec![Rule {
                matcher: Matcher::Regex(Regex::new("(?i)free\\s*money").expect("regex")),
                action: Action::Drop,
                source: "test".into(),
            }],
            on_flood: None,
        };
        assert_eq!(drop.apply("FREE money now").dropped, Some("regex"));
        assert_eq!(drop.apply("no thanks").dropped, None);
    }

    /// Texts built from words, Chinese, whitespace and links to a few domains.
    fn texts() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            Just("hello".to_owned()),
            Just("你好，".to_owned()),
            Just(" ".to_owned()),
            Just("\n".to_owned()),
            Just("。".to_owned()),
            Just("https://ok.example.org/p?q=1".to_owned()),
            Just("sub.ok.example.org".to_owned()),
            Just("http://evil.test/x".to_owned()),
            Just("ｅｖｉｌ．ｔｅｓｔ".to_owned()),
            Just("t.cn/abc".to_owned()),
            Just("qm.qq.com/q/xyz".to_owned()),
            Just("QQ群 12345678".to_owned()),
            Just("www.bad-site.net/路径".to_owned()),
        ];
        prop::collection::vec(token, 0..12).prop_map(|tokens| tokens.concat())
    }

    proptest! {
        #[test]
        fn no_link_to_a_domain_the_rules_do_not_allow_and_filtering_twice_changes_nothing(text in texts(), wechat in any::<bool>()) {
            let platform = if wechat { Platform::Wechat } else { Platform::Qq };
            let rules = rules(platform, &["ok.example.org"]);
            let once = rules.apply(&text);
            for url in urls(&Normalized::new(&once.text).url_view) {
                prop_assert!(host_matches(&url.host, "ok.example.org"), "{:?} in {:?}", url, once.text);
            }
            let twice = rules.apply(&once.text);
            prop_assert_eq!(twice.text, once.text);
        }
    }
}
