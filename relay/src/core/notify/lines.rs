//! The text of admin notifications (issue 17, `moderation.notify`): one line per event, in
//! Chinese, for the admins of a chat group to read on their phones.
//!
//! ```text
//! [拦截] fans · QQ→微信 · 规则 ads · 已暂存 h7k2ab · 小明: 兼职刷单日结…
//! ```
//!
//! A rule hit names the link, the origin and destination platforms (by the names their users
//! know: QQ, 微信, 钉钉, 企业微信, API, as the `{platform}` placeholder shows them), the rule
//! (a word list's name, a link rule's matcher, `flood`), what happened (已丢弃, 已遮盖,
//! 已暂存 <held id>, …), the sender's display name and the first 40 characters of what they
//! wrote. A flood start is one line for all destinations of the message; a wave start tells
//! its counts instead of a destination, since a wave is not one link's. Nothing here ever
//! writes a user id or a group id: names and text only, a mention without a name shown as
//! `@某人`.

use std::time::Duration;

use qunbridge_connectors::{Envelope, Platform, Segment};

use crate::moderation::excerpt;
use crate::policy::moderation::ModerationAction;

/// What every line starts with, so the admins' group can be filtered by it.
pub const TAG: &str = "[拦截]";
/// Characters of a message's text a line shows (then `…` when cut).
pub const EXCERPT_CHARS: usize = 40;
/// Between the parts of a line.
const SEP: &str = " · ";
/// What a line shows for a sender without a display name (never their id).
const NO_NAME: &str = "（无昵称）";
/// What a line shows for a mention without a name (never the id).
const SOMEONE: &str = "某人";

/// The name a line gives a platform: the one its users know (QQ, 微信, 钉钉, 企业微信, API).
pub fn platform_name(platform: Platform) -> &'static str {
    platform.display_name()
}

/// What happened to a message at one destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done<'a> {
    /// A rule's action by its config name (`drop`, `mask`, `strip`, `replace`, `defang`,
    /// `allow`).
    Action(&'a str),
    /// Held for review under this id (`qunbridge moderation release <id>`).
    Held(&'a str),
    /// The sender's name was shown as 群友 (a word list hit it).
    Renamed,
}

impl std::fmt::Display for Done<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Done::Held(id) => write!(f, "已暂存 {id}"),
            Done::Renamed => f.write_str("已隐去昵称"),
            Done::Action(action) => f.write_str(match *action {
                "drop" => "已丢弃",
                "mask" => "已遮盖",
                "strip" => "已删除",
                "replace" => "已替换",
                "defang" => "已使链接不可点",
                "allow" => "已放行",
                "hold" => "已暂存",
                _ => "已处理",
            }),
        }
    }
}

/// A rule's hit at one destination: `[拦截] <link> · <from>→<to> · 规则 <rule> · <done> ·
/// <name>: <text>`.
pub fn rule_hit(
    link: &str,
    envelope: &Envelope,
    to: Platform,
    rule: &str,
    done: Done<'_>,
) -> String {
    format!(
        "{TAG} {link}{SEP}{}→{}{SEP}规则 {rule}{SEP}{done}{SEP}{}",
        platform_name(envelope.origin.platform),
        platform_name(to),
        said(envelope)
    )
}

/// One destination of a message whose sender started flooding: its platform and what it
/// did with the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FloodOutcome<'a> {
    /// The link that routes the message there.
    pub link: &'a str,
    /// The destination's platform.
    pub platform: Platform,
    /// What happened there.
    pub done: Done<'a>,
}

/// The start of a flood, one line for every destination of the message that started it.
/// With one destination (or all alike without held ids) it reads like a rule hit; otherwise
/// each destination's outcome is named with its platform:
/// `[拦截] fans · QQ→QQ、微信 · 规则 flood · QQ 已丢弃、微信 已暂存 h7k2ab · 小明: …`.
pub fn flood_start(envelope: &Envelope, rule: &str, outcomes: &[FloodOutcome<'_>]) -> String {
    let mut links: Vec<&str> = Vec::new();
    for outcome in outcomes {
        if !links.contains(&outcome.link) {
            links.push(outcome.link);
        }
    }
    let to: Vec<&str> = outcomes
        .iter()
        .map(|outcome| platform_name(outcome.platform))
        .collect();
    let alike = outcomes
        .windows(2)
        .all(|pair| pair[0].done == pair[1].done && !matches!(pair[0].done, Done::Held(_)));
    let done = match outcomes {
        [only] => only.done.to_string(),
        [first, ..] if alike => first.done.to_string(),
        _ => outcomes
            .iter()
            .map(|outcome| format!("{} {}", platform_name(outcome.platform), outcome.done))
            .collect::<Vec<_>>()
            .join("、"),
    };
    format!(
        "{TAG} {}{SEP}{}→{}{SEP}规则 {rule}{SEP}{done}{SEP}{}",
        links.join("、"),
        platform_name(envelope.origin.platform),
        to.join("、"),
        said(envelope)
    )
}

/// What a wave start line tells: the wave's counts within its window and its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaveStart<'a> {
    /// Distinct groups the text was seen in within the window.
    pub groups: u32,
    /// Distinct senders within the window.
    pub senders: u32,
    /// The most copies from one sender within the window.
    pub repeats: u32,
    /// The window the counts are taken in.
    pub window: Duration,
    /// What the wave's copies get.
    pub action: ModerationAction,
    /// The text of the copy that made it a wave.
    pub text: &'a str,
}

/// The start of a spam wave: `[拦截] 规则 wave · 10m 内 3 个群、3 人、同一人最多 1 次 ·
/// 同文副本一律丢弃 · <text>`. No link or destination (the copy that made the wave may be in
/// a group no link bridges) and no sender (a wave is several people's).
pub fn wave_start(rule: &str, wave: &WaveStart<'_>) -> String {
    let then = match wave.action {
        ModerationAction::Drop => "同文副本一律丢弃",
        ModerationAction::Hold => "同文副本一律暂存待审",
    };
    format!(
        "{TAG} 规则 {rule}{SEP}{} 内 {} 个群、{} 人、同一人最多 {} 次{SEP}{then}{SEP}{}",
        humantime::format_duration(wave.window),
        wave.groups,
        wave.senders,
        wave.repeats,
        excerpt(&one_line(wave.text), EXCERPT_CHARS)
    )
}

/// The line that sums up the events of a minute that were not told one by one.
pub fn summary(untold: u64) -> String {
    format!("{TAG} 过去一分钟另有 {untold} 次拦截未逐条通知")
}

/// `<name>: <first 40 characters>`: who said what, on one line.
fn said(envelope: &Envelope) -> String {
    let name = one_line(&envelope.sender.name);
    let name = if name.is_empty() { NO_NAME } else { &name };
    format!(
        "{name}: {}",
        excerpt(&one_line(&text_of(envelope)), EXCERPT_CHARS)
    )
}

/// What a member wrote, as a reader sees it: text, `@name` for mentions, the placeholders of
/// pictures and faces; never an id, not even where a mention or a face has no name.
fn text_of(envelope: &Envelope) -> String {
    let mut text = String::new();
    for segment in &envelope.segments {
        match segment {
            Segment::Text { text: piece } => text.push_str(piece),
            Segment::Mention { name, .. } => {
                text.push('@');
                text.push_str(name.as_deref().unwrap_or(SOMEONE));
            }
            Segment::MentionAll => text.push_str("@全体成员"),
            Segment::Image { .. } => text.push_str(segment.image_placeholder().unwrap_or("[图片]")),
            Segment::Face { name, .. } => text.push_str(name.as_deref().unwrap_or("[表情]")),
            Segment::Unsupported { hint } => text.push_str(hint),
            Segment::Reply { .. } | Segment::Unknown => {}
        }
    }
    text
}

/// `text` on one line: every run of whitespace or control characters becomes one space.
fn one_line(text: &str) -> String {
    text.split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use qunbridge_connectors::model::{Origin, Sender, ENVELOPE_VERSION};
    use qunbridge_connectors::Kind;

    use super::*;

    /// 小明 (user 1000000001) says `segments` in QQ group 735021844.
    fn said_by_xiaoming(segments: Vec<Segment>) -> Envelope {
        Envelope {
            v: ENVELOPE_VERSION,
            id: "qq:735021844:1".into(),
            origin: Origin {
                platform: Platform::Qq,
                account: "qq-main".into(),
                group: "735021844".into(),
                message_id: "1".into(),
                group_name: Some("粉丝群".into()),
            },
            sender: Sender {
                id: "1000000001".into(),
                name: "小明".into(),
                is_bot: false,
            },
            ts_ms: 0,
            kind: Kind::Message,
            segments,
            member: None,
        }
    }

    #[test]
    fn a_hit_names_link_platforms_rule_outcome_sender_and_the_first_40_characters() {
        let envelope = said_by_xiaoming(vec![Segment::text(
            "兼职刷单日结，每天三百，详情请加微信私聊，名额有限先到先得，过时不候哦亲们快来吧，真的很赚",
        )]);
        assert_eq!(
            rule_hit("fans", &envelope, Platform::Wechat, "ads", Done::Held("h7k2ab")),
            "[拦截] fans · QQ→微信 · 规则 ads · 已暂存 h7k2ab · 小明: 兼职刷单日结，每天三百，详情请加微信私聊，名额有限先到先得，过时不候哦亲们快来吧…"
        );
        assert_eq!(
            rule_hit("fans", &envelope, Platform::Qq, "ads", Done::Action("mask")),
            "[拦截] fans · QQ→QQ · 规则 ads · 已遮盖 · 小明: 兼职刷单日结，每天三百，详情请加微信私聊，名额有限先到先得，过时不候哦亲们快来吧…"
        );
        let short = said_by_xiaoming(vec![Segment::text("看 t.cn/x")]);
        assert_eq!(
            rule_hit(
                "fans",
                &short,
                Platform::Dingtalk,
                "short_link",
                Done::Action("drop")
            ),
            "[拦截] fans · QQ→钉钉 · 规则 short_link · 已丢弃 · 小明: 看 t.cn/x"
        );
    }

    #[test]
    fn every_platform_and_action_has_a_name() {
        let names: Vec<&str> = Platform::ALL.into_iter().map(platform_name).collect();
        assert_eq!(names, ["QQ", "微信", "钉钉", "企业微信", "API"]);
        let done: Vec<String> = [
            "drop", "mask", "strip", "replace", "defang", "allow", "hold",
        ]
        .into_iter()
        .map(|action| Done::Action(action).to_string())
        .collect();
        assert_eq!(
            done,
            [
                "已丢弃",
                "已遮盖",
                "已删除",
                "已替换",
                "已使链接不可点",
                "已放行",
                "已暂存"
            ]
        );
        assert_eq!(Done::Renamed.to_string(), "已隐去昵称");
    }

    #[test]
    fn no_id_reaches_a_line_even_from_nameless_mentions_or_senders() {
        let mut envelope = said_by_xiaoming(vec![
            Segment::Mention {
                id: "1000000002".into(),
                name: None,
            },
            Segment::text(" 加我\n  微信"),
            Segment::Face {
                id: "178".into(),
                name: None,
            },
            Segment::Reply {
                message_id: "99".into(),
            },
        ]);
        envelope.sender.name = " \n".into();
        let line = rule_hit(
            "fans",
            &envelope,
            Platform::Wechat,
            "ads",
            Done::Action("drop"),
        );
        assert_eq!(
            line,
            "[拦截] fans · QQ→微信 · 规则 ads · 已丢弃 · （无昵称）: @某人 加我 微信[表情]"
        );
        for id in [
            "1000000001",
            "1000000002",
            "735021844",
            "qq-main",
            "178",
            "99",
        ] {
            assert!(!line.contains(id), "{id} in {line}");
        }
    }

    #[test]
    fn a_flood_start_is_one_line_for_every_destination() {
        let envelope = said_by_xiaoming(vec![Segment::text("f6")]);
        let wechat = FloodOutcome {
            link: "fans",
            platform: Platform::Wechat,
            done: Done::Held("h7k2ab"),
        };
        let qq = FloodOutcome {
            link: "fans",
            platform: Platform::Qq,
            done: Done::Action("drop"),
        };
        assert_eq!(
            flood_start(&envelope, "flood", &[wechat]),
            "[拦截] fans · QQ→微信 · 规则 flood · 已暂存 h7k2ab · 小明: f6"
        );
        assert_eq!(
            flood_start(&envelope, "flood", &[qq, wechat]),
            "[拦截] fans · QQ→QQ、微信 · 规则 flood · QQ 已丢弃、微信 已暂存 h7k2ab · 小明: f6"
        );
        let dingtalk = FloodOutcome {
            link: "ops",
            platform: Platform::Dingtalk,
            ..qq
        };
        assert_eq!(
            flood_start(&envelope, "flood", &[qq, dingtalk]),
            "[拦截] fans、ops · QQ→QQ、钉钉 · 规则 flood · 已丢弃 · 小明: f6"
        );
    }

    #[test]
    fn a_wave_start_tells_its_counts_and_text_but_no_sender_or_destination() {
        let wave = WaveStart {
            groups: 3,
            senders: 3,
            repeats: 1,
            window: Duration::from_secs(600),
            action: ModerationAction::Drop,
            text:
                "兼职刷单，日结300元！\n加微信 abc123 详情 https://a.example.com/x?y=1 快来快来快来",
        };
        assert_eq!(
            wave_start("wave", &wave),
            "[拦截] 规则 wave · 10m 内 3 个群、3 人、同一人最多 1 次 · 同文副本一律丢弃 · 兼职刷单，日结300元！ 加微信 abc123 详情 https://a.exa…"
        );
        let held = WaveStart {
            action: ModerationAction::Hold,
            ..wave
        };
        assert!(wave_start("wave", &held).contains(" · 同文副本一律暂存待审 · "));
        assert_eq!(summary(27), "[拦截] 过去一分钟另有 27 次拦截未逐条通知");
    }
}
