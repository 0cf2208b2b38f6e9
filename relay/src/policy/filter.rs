//! Filter rules as plain data: what a rule matches ([`Matcher`]: links, invites, share codes,
//! regexes, and the words of a moderation word list), what it does to a match ([`Action`]),
//! where it was configured, a destination's ordered rules ([`FilterRules`]) and the defaults
//! per destination platform. Config parses them and the core's filter engine applies them;
//! they live here, below both, so neither has to import the other. A word list is carried
//! compiled ([`CompiledList`], from the moderation's text matching, which itself stands only
//! on [`super::detect`]), so a rule is ready to match and a reload swaps rules and lists
//! together.

use std::sync::Arc;

use qunbridge_connectors::Platform;
use regex::Regex;

use crate::moderation::lists::CompiledList;

/// What a sender's display name becomes in a destination's copy when a word rule of that
/// destination hits it ("group member").
pub const NAME_REPLACEMENT: &str = "群友";

/// What a rule matches.
#[derive(Debug, Clone)]
pub enum Matcher {
    /// Any URL.
    Url,
    /// URLs whose host is one of these domains or below them.
    Domain(Vec<String>),
    /// URLs of known shorteners.
    ShortLink,
    /// QQ group invite links and "QQ群 123456789" numbers.
    QqGroupInvite,
    /// 口令-style share tokens.
    WechatShareCode,
    /// A custom pattern.
    Regex(Regex),
    /// The words and patterns of a moderation word list (`[moderation.lists.<name>]`).
    Words(Arc<CompiledList>),
}

impl Matcher {
    /// The name used in config, `check` output and the `rule` metric label.
    pub fn name(&self) -> &'static str {
        match self {
            Matcher::Url => "url",
            Matcher::Domain(_) => "domain",
            Matcher::ShortLink => "short_link",
            Matcher::QqGroupInvite => "qq_group_invite",
            Matcher::WechatShareCode => "wechat_share_code",
            Matcher::Regex(_) => "regex",
            Matcher::Words(_) => "words",
        }
    }

    /// The word list of a `words` matcher.
    pub fn word_list(&self) -> Option<&CompiledList> {
        match self {
            Matcher::Words(list) => Some(list),
            _ => None,
        }
    }
}

/// What happens to a match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Keep it as written (and stop looking at later rules for it).
    Allow,
    /// Remove it.
    Strip,
    /// Put this text in its place.
    Replace(String),
    /// Make it unclickable (`example[.]com`).
    Defang,
    /// Do not relay the message to this destination at all.
    Drop,
    /// Replace each character of the match with `*` (word lists only).
    Mask,
    /// Keep the message for review instead of relaying it to this destination (word lists
    /// only): an operator releases it (rendered without this rule) or drops it.
    Hold,
}

impl Action {
    /// The name used in config, `check` output and the `action` metric label.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Allow => "allow",
            Action::Strip => "strip",
            Action::Replace(_) => "replace",
            Action::Defang => "defang",
            Action::Drop => "drop",
            Action::Mask => "mask",
            Action::Hold => "hold",
        }
    }
}

/// One rule, with where it was configured (for `qunbridge check`).
#[derive(Debug, Clone)]
pub struct Rule {
    /// What it matches.
    pub matcher: Matcher,
    /// What it does.
    pub action: Action,
    /// Where it comes from: `link "fans"`, `account "qq-main"`, `platform qq`, `default`.
    pub source: String,
    /// `notify = true`: each message this rule acts on is told to the admins' group
    /// (`moderation.notify`), so an operator sees the decision without reading logs.
    pub notify: bool,
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.matcher {
            Matcher::Domain(domains) => write!(f, "domain {:?}", domains)?,
            Matcher::Regex(regex) => write!(f, "regex {:?}", regex.as_str())?,
            Matcher::Words(list) => write!(
                f,
                "words {:?} ({} {})",
                list.name(),
                list.len(),
                if list.len() == 1 { "entry" } else { "entries" }
            )?,
            other => f.write_str(other.name())?,
        }
        match &self.action {
            Action::Replace(with) => write!(f, " -> replace with {with:?}")?,
            other => write!(f, " -> {}", other.name())?,
        }
        if self.notify {
            f.write_str(", notify")?;
        }
        write!(f, " ({})", self.source)
    }
}

/// The rules of one destination, in order.
#[derive(Debug, Clone, Default)]
pub struct FilterRules {
    /// Ordered rules; the first that matches an occurrence decides.
    pub rules: Vec<Rule>,
    /// What a flooding sender's messages get at this destination (`on_flood` of the
    /// account's or the platform's filters); `None`: the flood limit's own action.
    pub on_flood: Option<super::moderation::ModerationAction>,
}

impl FilterRules {
    /// True when there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// These rules without the word rules of the list `name`: what a message held by that
    /// list is filtered with when an operator releases it.
    pub fn without_list(&self, name: &str) -> FilterRules {
        FilterRules {
            rules: self
                .rules
                .iter()
                .filter(|rule| {
                    rule.matcher
                        .word_list()
                        .is_none_or(|list| list.name() != name)
                })
                .cloned()
                .collect(),
            on_flood: self.on_flood,
        }
    }

    /// True when some rule matches a word list (word rules judge member messages only).
    pub fn has_words(&self) -> bool {
        self.rules
            .iter()
            .any(|rule| matches!(rule.matcher, Matcher::Words(_)))
    }

    /// The first word rule whose list hits a sender's display name: that name is shown as
    /// [`NAME_REPLACEMENT`] at this destination.
    pub fn name_hit(&self, name: &str) -> Option<&Rule> {
        if name.is_empty() {
            return None;
        }
        self.rules.iter().find(|rule| {
            rule.matcher
                .word_list()
                .is_some_and(|list| list.is_hit(name))
        })
    }
}

/// The defaults of ARCHITECTURE.md §7 for a destination platform: to WeChat, QQ group invites
/// and short links are replaced and other URLs defanged; to QQ, URLs are defanged; to
/// DingTalk, WeCom and the `api`, links pass.
pub fn default_rules(platform: Platform) -> Vec<Rule> {
    let rule = |matcher, action| Rule {
        matcher,
        action,
        source: format!("default for {platform}"),
        notify: false,
    };
    match platform {
        Platform::Wechat => vec![
            rule(Matcher::QqGroupInvite, Action::Replace("[群邀请]".into())),
            rule(Matcher::ShortLink, Action::Replace("[短链接]".into())),
            rule(Matcher::Url, Action::Defang),
        ],
        Platform::Qq => vec![rule(Matcher::Url, Action::Defang)],
        Platform::Dingtalk | Platform::Wecom | Platform::Api => Vec::new(),
    }
}
