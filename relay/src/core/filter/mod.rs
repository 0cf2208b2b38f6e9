//! Filtering per destination (ARCHITECTURE.md §7, issue 17): ordered rules, the first rule
//! that matches an occurrence decides what happens to it. Matchers: builtin detectors (`url`,
//! `qq_group_invite`, `wechat_share_code`, `short_link`), domain lists (suffix match),
//! regexes, and moderation word lists (`words`). Actions: `allow`, `strip`, `replace`,
//! `defang`, `drop` (the whole message) and, for words, `mask` (each matched character
//! becomes `*`) and `hold` (the message is kept for review at this destination). Text is
//! normalized from full-width to half-width before matching (word lists normalize as they
//! are configured); what is not matched is left exactly as written.
//! Word rules judge only what a member wrote, so a caller turns them off for the sender line,
//! notices and bots' messages ([`FilterRules::apply_with`]).

use std::ops::Range;

use crate::moderation::lists::CompiledList;
use crate::policy::detect::{self, host_matches, Normalized, INVITE_HOSTS, SHORTENERS};
use crate::policy::{Action, FilterRules, Matcher};

/// The rule that dropped a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dropped {
    /// A link rule, by its matcher's name (`regex`, `url`, …).
    Link(&'static str),
    /// A word rule, by its list's name.
    Words(String),
    /// A word rule whose action is `hold`, by its list's name: the message is kept for
    /// review at this destination instead of being relayed.
    Held(String),
}

/// A hit of a rule with `notify = true`: what the admins' group is told (`moderation.notify`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyHit {
    /// The rule as the line names it: a word list's name, or a link rule's matcher (`url`,
    /// `regex`, …), as in the metrics' `rule` label.
    pub rule: String,
    /// What it did (`drop`, `mask`, `defang`, …): the action's config name.
    pub action: &'static str,
}

/// What filtering did to a text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filtered {
    /// The text to send (unchanged when nothing matched).
    pub text: String,
    /// The rule that dropped the message, if one did.
    pub dropped: Option<Dropped>,
    /// (rule name, action name) of every link, invite or pattern acted on: counted in
    /// `qunbridge_links_filtered_total`.
    pub hits: Vec<(&'static str, &'static str)>,
    /// (list name, action name) of every word-list hit acted on: counted in
    /// `qunbridge_moderation_hits_total`, apart from link hits because the `rule` label is
    /// the list's name.
    pub word_hits: Vec<(String, &'static str)>,
    /// Hits of rules with `notify = true` (one per occurrence acted on; a drop only when
    /// that rule is the one that dropped the message), for the admins' group.
    pub notify: Vec<NotifyHit>,
}

impl Filtered {
    /// A text no rule touched.
    fn unchanged(text: &str) -> Filtered {
        Filtered {
            text: text.to_owned(),
            dropped: None,
            hits: Vec::new(),
            word_hits: Vec::new(),
            notify: Vec::new(),
        }
    }
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
    /// Applies every rule, word rules included, to a text.
    pub fn apply(&self, text: &str) -> Filtered {
        self.apply_with(text, true)
    }

    /// Applies the rules to a text; `words` false leaves word rules out (text a member did
    /// not write, or a message moderation does not judge).
    pub fn apply_with(&self, text: &str, words: bool) -> Filtered {
        if self.rules.is_empty() {
            return Filtered::unchanged(text);
        }
        let has_regex = self
            .rules
            .iter()
            .any(|r| matches!(r.matcher, Matcher::Regex(_)));
        let has_detectors = self
            .rules
            .iter()
            .any(|r| !matches!(r.matcher, Matcher::Regex(_) | Matcher::Words(_)));
        let words = words && self.has_words();
        // Most chat text has no link (and a destination with word rules only looks for
        // none): then only word rules can act, and one search per list (no positions, no link
        // normalization) tells whether any of them hits at all.
        let links_may_act = has_regex || (has_detectors && detect::may_contain_candidates(text));
        if !links_may_act && (!words || !self.any_word_hit(text)) {
            return Filtered::unchanged(text);
        }
        // A replacement or defanged link can bring neighbours together into a new match
        // ("exa" + "mple.com"), and so can a mask between fillers (`兼***职`); a few passes
        // reach a text that filtering leaves unchanged.
        let mut result = self.pass(text, words);
        for _ in 0..3 {
            let changed = !result.word_hits.is_empty()
                || result.hits.iter().any(|(_, action)| *action != "allow");
            if result.dropped.is_some() || !changed {
                break;
            }
            let again = self.pass(&result.text, words);
            if again.text == result.text && again.dropped.is_none() {
                break;
            }
            result.hits.extend(
                again
                    .hits
                    .into_iter()
                    .filter(|(_, action)| *action != "allow"),
            );
            result.word_hits.extend(again.word_hits);
            result
                .notify
                .extend(again.notify.into_iter().filter(|hit| hit.action != "allow"));
            result.dropped = again.dropped;
            result.text = again.text;
        }
        result
    }

    /// True when some word rule's list hits `text` (an allow entry that covers the hit
    /// excuses it, as in a full pass).
    fn any_word_hit(&self, text: &str) -> bool {
        self.rules
            .iter()
            .filter_map(|rule| rule.matcher.word_list())
            .any(|list| list.is_hit(text))
    }

    /// One pass over a text (`words`: whether word rules take part).
    fn pass(&self, text: &str, words: bool) -> Filtered {
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
                Matcher::Words(list) if words => {
                    // One occurrence per run of overlapping hits (a word and a regex may
                    // overlap), so the whole run is claimed and masked together.
                    let mut spans: Vec<Range<usize>> = Vec::new();
                    for hit in list.find(text) {
                        match spans.last_mut() {
                            Some(last) if hit.span.start < last.end => {
                                last.end = last.end.max(hit.span.end);
                            }
                            _ => spans.push(hit.span),
                        }
                    }
                    spans
                        .iter()
                        .map(|span| normalized.chars_of_original(span))
                        .collect()
                }
                Matcher::Words(_) => Vec::new(),
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
        let mut word_hits = Vec::new();
        let mut notify = Vec::new();
        let mut dropped = None;
        let mut cursor = 0;
        for (chars, index) in &claimed {
            let rule = &self.rules[*index];
            let list = rule.matcher.word_list();
            match list {
                Some(list) => word_hits.push((list.name().to_owned(), rule.action.name())),
                None => hits.push((rule.matcher.name(), rule.action.name())),
            }
            // A later drop does not decide (the first one did); the line names the rule that
            // did. A hold is told by the core, with the held entry's id.
            if rule.notify
                && rule.action != Action::Hold
                && (rule.action != Action::Drop || dropped.is_none())
            {
                notify.push(NotifyHit {
                    rule: list
                        .map_or(rule.matcher.name(), CompiledList::name)
                        .to_owned(),
                    action: rule.action.name(),
                });
            }
            let original = normalized.original_range(chars);
            out.push_str(&text[cursor..original.start]);
            match &rule.action {
                Action::Allow => out.push_str(&text[original.clone()]),
                Action::Strip => {}
                Action::Replace(with) => out.push_str(with),
                Action::Defang => out.push_str(&detect::defang(normalized.normalized_slice(chars))),
                Action::Mask => out.extend(text[original.clone()].chars().map(|_| '*')),
                Action::Drop => {
                    dropped.get_or_insert_with(|| match list {
                        Some(list) => Dropped::Words(list.name().to_owned()),
                        None => Dropped::Link(rule.matcher.name()),
                    });
                    out.push_str(&text[original.clone()]);
                }
                Action::Hold => {
                    if let Some(list) = list {
                        dropped.get_or_insert_with(|| Dropped::Held(list.name().to_owned()));
                    }
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
            word_hits,
            notify,
        }
    }
}

/// What the word rules did across several texts ([`FilterRules::judge_across`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Across {
    /// The word rule that dropped the message, if one did.
    pub dropped: Option<Dropped>,
    /// (list name, action name) of every crossing hit acted on.
    pub word_hits: Vec<(String, &'static str)>,
    /// The crossing hits of rules with `notify = true`.
    pub notify: Vec<NotifyHit>,
}

impl FilterRules {
    /// Judges with the word rules what runs across several texts a member wrote one after
    /// another: the text segments of a message, each filtered alone already. A word split by
    /// a face or a mention (`兼职`, a face, `刷单`) would otherwise reach a platform that is
    /// sent segments (OneBot v11) as written. Only hits that cross a boundary between texts
    /// are acted on, since a hit inside one text had its rule applied with that text; the
    /// first word rule whose crossing hit is not yet taken decides: `mask` masks it in each
    /// text it covers, `drop` drops the message.
    pub fn judge_across(&self, parts: &mut [&mut String]) -> Across {
        let mut across = Across::default();
        if parts.len() < 2 || !self.has_words() {
            return across;
        }
        let mut joined = String::new();
        let mut starts = Vec::with_capacity(parts.len());
        for part in parts.iter() {
            starts.push(joined.len());
            joined.push_str(part);
        }
        // The part holding a byte of `joined` (empty parts hold none).
        let part_of = |offset: usize| {
            starts
                .partition_point(|start| *start <= offset)
                .saturating_sub(1)
        };
        let mut masked: Vec<Range<usize>> = Vec::new();
        for rule in &self.rules {
            let Some(list) = rule.matcher.word_list() else {
                continue;
            };
            for hit in list.find(&joined) {
                let span = hit.span;
                if span.is_empty()
                    || part_of(span.start) == part_of(span.end - 1)
                    || masked
                        .iter()
                        .any(|m| m.start < span.end && span.start < m.end)
                {
                    continue;
                }
                let hit = NotifyHit {
                    rule: list.name().to_owned(),
                    action: rule.action.name(),
                };
                match rule.action {
                    Action::Mask => masked.push(span),
                    Action::Drop => {
                        if rule.notify {
                            across.notify.push(hit);
                        }
                        across.word_hits.push((list.name().to_owned(), "drop"));
                        across.dropped = Some(Dropped::Words(list.name().to_owned()));
                        return across;
                    }
                    Action::Hold => {
                        across.word_hits.push((list.name().to_owned(), "hold"));
                        across.dropped = Some(Dropped::Held(list.name().to_owned()));
                        return across;
                    }
                    // Word rules take no other action.
                    _ => continue,
                }
                if rule.notify {
                    across.notify.push(hit);
                }
                across.word_hits.push((list.name().to_owned(), "mask"));
            }
        }
        if masked.is_empty() {
            return across;
        }
        for (part, start) in parts.iter_mut().zip(starts) {
            let covered = |offset: usize| {
                masked
                    .iter()
                    .any(|m| m.start <= start + offset && start + offset < m.end)
            };
            if !part.char_indices().any(|(offset, _)| covered(offset)) {
                continue;
            }
            let rewritten: String = part
                .char_indices()
                .map(|(offset, c)| if covered(offset) { '*' } else { c })
                .collect();
            **part = rewritten;
        }
        across
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
        Matcher::Regex(_) | Matcher::Words(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use qunbridge_connectors::Platform;
    use regex::Regex;

    use super::*;
    use crate::moderation::lists::{CompiledList, ListSpec};
    use crate::policy::detect::urls;
    use crate::policy::{default_rules, Rule};

    fn rules(platform: Platform, allow: &[&str]) -> FilterRules {
        let mut rules = Vec::new();
        if !allow.is_empty() {
            rules.push(Rule {
                matcher: Matcher::Domain(allow.iter().map(|d| d.to_string()).collect()),
                action: Action::Allow,
                source: "test".into(),
                notify: false,
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
                notify: false,
            }],
            on_flood: None,
        };
        assert_eq!(
            drop.apply("FREE money now").dropped,
            Some(Dropped::Link("regex"))
        );
        assert_eq!(drop.apply("no thanks").dropped, None);
    }

    /// A word list compiled from `words` (every normalization on).
    fn word_list(name: &str, words: &[&str], allow: &[&str]) -> std::sync::Arc<CompiledList> {
        std::sync::Arc::new(
            CompiledList::compile(&ListSpec {
                name: name.into(),
                words: words.iter().map(|w| w.to_string()).collect(),
                allow: allow.iter().map(|a| a.to_string()).collect(),
                ..ListSpec::default()
            })
            .expect("compiles"),
        )
    }

    fn words_rule(list: &std::sync::Arc<CompiledList>, action: Action) -> Rule {
        Rule {
            matcher: Matcher::Words(list.clone()),
            action,
            source: "test".into(),
            notify: false,
        }
    }

    #[test]
    fn word_rules_mask_or_drop_through_fillers_and_count_by_list() {
        let ads = word_list("ads", &["兼职刷单"], &["兼职刷单群规"]);
        let mut mask = rules(Platform::Qq, &[]);
        mask.rules.insert(0, words_rule(&ads, Action::Mask));
        let masked = mask.apply("今天兼职刷单日结");
        assert_eq!(masked.text, "今天****日结");
        assert_eq!(masked.word_hits, vec![("ads".to_owned(), "mask")]);
        assert!(masked.hits.is_empty());
        assert_eq!(mask.apply("兼 职 刷 单").text, "*******");
        assert_eq!(mask.apply("快来兼职@刷单").text, "快来*****");
        let excused = mask.apply("请先读兼职刷单群规");
        assert_eq!(excused.text, "请先读兼职刷单群规");
        assert!(excused.word_hits.is_empty());
        // Word and link rules in one pass: each acts on its own occurrences.
        let both = mask.apply("兼职刷单看 example.com");
        assert_eq!(both.text, "****看 example[.]com");
        assert_eq!(both.hits, vec![("url", "defang")]);

        let mut drop = rules(Platform::Wechat, &[]);
        drop.rules.insert(0, words_rule(&ads, Action::Drop));
        let dropped = drop.apply("今天兼职@刷单日结");
        assert_eq!(dropped.dropped, Some(Dropped::Words("ads".into())));
        assert_eq!(dropped.word_hits, vec![("ads".to_owned(), "drop")]);
        assert_eq!(drop.apply("今天天气好").dropped, None);

        // Without word judging (a sender line, a notice, a bot), word rules do nothing.
        let unjudged = drop.apply_with("今天兼职刷单日结", false);
        assert_eq!(unjudged.dropped, None);
        assert_eq!(unjudged.text, "今天兼职刷单日结");
    }

    #[test]
    fn a_hold_rule_holds_and_a_release_leaves_only_that_list_out() {
        let ads = word_list("ads", &["兼职刷单"], &[]);
        let soft = word_list("soft", &["日结"], &[]);
        let mut rules = rules(Platform::Wechat, &[]);
        rules.rules.insert(0, words_rule(&ads, Action::Hold));
        rules.rules.insert(1, words_rule(&soft, Action::Mask));
        let held = rules.apply("今天兼 职刷单日结");
        assert_eq!(held.dropped, Some(Dropped::Held("ads".into())));
        assert_eq!(held.word_hits[0], ("ads".to_owned(), "hold"));
        assert_eq!(rules.apply("今天天气好").dropped, None);

        // Released: the holding list is out, every other rule still acts.
        let released = rules.without_list("ads");
        assert_eq!(released.rules.len(), rules.rules.len() - 1);
        let text = released.apply("今天兼 职刷单日结 看 example.com");
        assert_eq!(text.dropped, None);
        assert_eq!(text.text, "今天兼 职刷单** 看 example[.]com");

        // Across segments, too.
        let (mut first, mut second) = ("兼职".to_owned(), "刷单".to_owned());
        let across = rules.judge_across(&mut [&mut first, &mut second]);
        assert_eq!(across.dropped, Some(Dropped::Held("ads".into())));
    }

    #[test]
    fn the_first_rule_that_matches_an_occurrence_decides() {
        let ads = word_list("ads", &["example"], &[]);
        let allow_then_words = FilterRules {
            rules: vec![
                Rule {
                    matcher: Matcher::Domain(vec!["example.org".into()]),
                    action: Action::Allow,
                    source: "test".into(),
                    notify: false,
                },
                words_rule(&ads, Action::Drop),
            ],
            on_flood: None,
        };
        let kept = allow_then_words.apply("docs: https://example.org/a");
        assert_eq!(
            kept.dropped, None,
            "the allowed link claimed the word first"
        );
        let dropped = allow_then_words.apply("example here");
        assert_eq!(dropped.dropped, Some(Dropped::Words("ads".into())));

        // Two lists over one occurrence: the rule listed first acts on it.
        let soft = words_rule(&word_list("soft", &["日结"], &[]), Action::Mask);
        let hard = words_rule(&word_list("hard", &["兼职日结"], &[]), Action::Drop);
        let hard_first = FilterRules {
            rules: vec![hard.clone(), soft.clone()],
            on_flood: None,
        };
        let filtered = hard_first.apply("兼职日结");
        assert_eq!(filtered.dropped, Some(Dropped::Words("hard".into())));
        assert_eq!(hard_first.apply("日结工资").text, "**工资");
        let soft_first = FilterRules {
            rules: vec![soft, hard],
            on_flood: None,
        };
        let filtered = soft_first.apply("兼职日结");
        assert_eq!(filtered.dropped, None);
        assert_eq!(filtered.text, "兼职**");
        assert_eq!(filtered.word_hits, vec![("soft".to_owned(), "mask")]);
    }

    #[test]
    fn a_word_split_across_segments_is_judged_as_one() {
        let ads = word_list("ads", &["兼职刷单"], &[]);
        let mask = FilterRules {
            rules: vec![words_rule(&ads, Action::Mask)],
            on_flood: None,
        };
        let (mut first, mut second, mut third) =
            ("今天兼职".to_owned(), "刷单".to_owned(), "日结".to_owned());
        let across = mask.judge_across(&mut [&mut first, &mut second, &mut third]);
        assert_eq!(
            (first.as_str(), second.as_str(), third.as_str()),
            ("今天**", "**", "日结")
        );
        assert_eq!(across.word_hits, vec![("ads".to_owned(), "mask")]);
        assert_eq!(across.dropped, None);

        // A hit inside one segment is that segment's own filtering's business.
        let (mut alone, mut other) = ("兼职刷单".to_owned(), "hi".to_owned());
        let across = mask.judge_across(&mut [&mut alone, &mut other]);
        assert_eq!(across, Across::default());
        assert_eq!(alone, "兼职刷单");

        let drop = FilterRules {
            rules: vec![words_rule(&ads, Action::Drop)],
            on_flood: None,
        };
        let (mut first, mut second) = ("兼职".to_owned(), "刷单".to_owned());
        let across = drop.judge_across(&mut [&mut first, &mut second]);
        assert_eq!(across.dropped, Some(Dropped::Words("ads".into())));
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
