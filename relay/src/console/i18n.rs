//! Labels in English and Chinese. The language is `?lang=` (remembered in a cookie), else
//! the cookie, else the first of `zh`/`en` in `Accept-Language` by preference, else English.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};

/// Name of the cookie that remembers the language.
pub const LANG_COOKIE: &str = "qb_lang";

/// A language of the console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// English.
    En,
    /// Simplified Chinese.
    Zh,
}

/// The language a page request asks for, as a handler argument.
#[derive(Debug, Clone, Copy)]
pub struct PageLang {
    /// The language to answer in.
    pub lang: Lang,
    /// True when `?lang=` chose it (the answer then sets the cookie).
    pub chosen: bool,
}

impl<S: Send + Sync> FromRequestParts<S> for PageLang {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let (lang, chosen) = Lang::of_request(parts.uri.query(), &parts.headers);
        Ok(PageLang { lang, chosen })
    }
}

impl Lang {
    /// The `lang` attribute and the `?lang=` value.
    pub fn code(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh",
        }
    }

    /// `en` or `zh` (any region); `None` otherwise.
    pub fn parse(text: &str) -> Option<Lang> {
        let primary = text
            .trim()
            .split(['-', '_'])
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        match primary.as_str() {
            "en" => Some(Lang::En),
            "zh" => Some(Lang::Zh),
            _ => None,
        }
    }

    /// The language a request asks for, and whether it was chosen with `?lang=` (then the
    /// answer sets the cookie).
    pub fn of_request(query: Option<&str>, headers: &HeaderMap) -> (Lang, bool) {
        let chosen = query.and_then(|query| {
            url::form_urlencoded::parse(query.as_bytes())
                .find(|(key, _)| key == "lang")
                .and_then(|(_, value)| Lang::parse(&value))
        });
        if let Some(lang) = chosen {
            return (lang, true);
        }
        if let Some(lang) = super::access::cookie(headers, LANG_COOKIE).and_then(Lang::parse) {
            return (lang, false);
        }
        let accept = headers
            .get(header::ACCEPT_LANGUAGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        (Lang::from_accept_language(accept), false)
    }

    /// The preferred of `zh` and `en` in an `Accept-Language` value (English when neither).
    pub fn from_accept_language(accept: &str) -> Lang {
        let mut best: Option<(f32, Lang)> = None;
        for item in accept.split(',') {
            let mut parts = item.split(';');
            let Some(lang) = parts.next().and_then(Lang::parse) else {
                continue;
            };
            let q = parts
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            if best.is_none_or(|(best_q, _)| q > best_q) {
                best = Some((q, lang));
            }
        }
        best.map_or(Lang::En, |(_, lang)| lang)
    }

    /// `text` (an English label) in this language.
    pub fn t(self, text: &'static str) -> &'static str {
        if self == Lang::En {
            return text;
        }
        LABELS
            .iter()
            .find(|(en, _)| *en == text)
            .map_or(text, |(_, zh)| zh)
    }

    /// The labels the page's script needs, as a JSON object (English → this language).
    pub fn script_labels(self) -> String {
        let map: serde_json::Map<String, serde_json::Value> = SCRIPT_LABELS
            .iter()
            .map(|en| ((*en).to_owned(), serde_json::Value::from(self.t(en))))
            .collect();
        serde_json::Value::Object(map).to_string()
    }
}

/// English labels and their Chinese.
const LABELS: &[(&str, &str)] = &[
    ("Overview", "概览"),
    ("Links", "链接"),
    ("Group health", "群健康"),
    ("Held for review", "待审核"),
    ("qunbridge console", "qunbridge 控制台"),
    ("Broker", "消息代理"),
    ("connected", "已连接"),
    ("disconnected", "未连接"),
    ("Ready", "就绪"),
    ("yes", "是"),
    ("no", "否"),
    ("Version", "版本"),
    ("Uptime", "运行时间"),
    ("Accounts", "账号"),
    ("Account", "账号"),
    ("Platform", "平台"),
    ("State", "状态"),
    ("Since", "起始"),
    ("Last error", "最近错误"),
    ("Queued", "排队"),
    ("up", "在线"),
    ("down", "断开"),
    ("starting", "启动中"),
    ("auth_failed", "认证失败"),
    ("stopped", "已停止"),
    ("ago", "前"),
    ("Queue depth per destination", "各目标队列深度"),
    ("Destination", "目标"),
    ("Depth", "深度"),
    ("No queue yet.", "暂无队列。"),
    ("Last hour", "最近一小时"),
    ("Relayed", "已转发"),
    ("Dropped", "已丢弃"),
    ("Route", "路径"),
    ("Reason", "原因"),
    ("Messages", "消息"),
    ("None.", "无。"),
    ("Link", "链接"),
    ("Groups", "群"),
    ("Alias", "别名"),
    ("Direction", "方向"),
    ("sends and receives", "收发"),
    ("receive only", "仅接收"),
    ("Sender template", "发送者模板"),
    ("Destinations", "目标"),
    ("via link", "经由链接"),
    ("No links are configured.", "未配置链接。"),
    ("Group health is off (`[stats] enabled = false`).", "群健康统计已关闭（`[stats] enabled = false`）。"),
    ("Messages per day, last 28 days", "近 28 天每日消息数"),
    ("Joins and leaves per day", "每日入群与退群"),
    ("Joins", "入群"),
    ("Leaves", "退群"),
    ("Active senders", "活跃发言人"),
    ("1 day", "1 天"),
    ("7 days", "7 天"),
    ("28 days", "28 天"),
    ("Members", "成员"),
    ("Tiers", "分层"),
    ("core", "核心"),
    ("regular", "常规"),
    ("lurking", "潜水"),
    ("silent", "沉默"),
    ("Join rate (7 days)", "入群率（7 天）"),
    ("Churn (7 days)", "流失率（7 天）"),
    ("Declining", "下滑"),
    ("weeks in a row", "周连续"),
    ("Download CSV", "下载 CSV"),
    ("Details", "详情"),
    ("Group", "群"),
    ("Coverage", "覆盖"),
    ("Day", "日期"),
    ("Kicks", "踢出"),
    ("Relayed in", "转入"),
    ("Back", "返回"),
    ("No such group.", "没有这个群。"),
    ("Rule", "规则"),
    ("Excerpt", "摘要"),
    ("Sender", "发送者"),
    ("Age", "时长"),
    ("Release", "放行"),
    ("Drop", "丢弃"),
    ("No messages are held for review.", "没有待审核的消息。"),
    ("released", "已放行"),
    ("dropped", "已丢弃"),
    ("held", "仍被暂扣"),
    ("failed", "失败"),
    ("Held messages are not available.", "暂扣消息暂不可用。"),
    ("Sign in", "登录"),
    ("Sign out", "退出"),
    ("Admin token", "管理令牌"),
    ("The console needs the admin token (`admin.token`).", "控制台需要管理令牌（`admin.token`）。"),
    ("Wrong token.", "令牌错误。"),
    ("The console is closed: the admin endpoint listens beyond loopback and no `admin.token` is set.", "控制台已关闭：管理端点监听在非回环地址上，且未设置 `admin.token`。"),
    ("Language", "语言"),
    ("Updated", "更新于"),
    ("The store cannot be read.", "无法读取存储。"),
];

/// The labels the script uses (a subset of [`LABELS`]).
const SCRIPT_LABELS: &[&str] = &[
    "connected",
    "disconnected",
    "yes",
    "no",
    "up",
    "down",
    "starting",
    "auth_failed",
    "stopped",
    "ago",
    "No queue yet.",
    "None.",
    "Release",
    "Drop",
    "No messages are held for review.",
    "released",
    "dropped",
    "held",
    "failed",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_language_picks_the_preferred_of_zh_and_en() {
        assert_eq!(
            Lang::from_accept_language("zh-CN,zh;q=0.9,en;q=0.8"),
            Lang::Zh
        );
        assert_eq!(
            Lang::from_accept_language("en-US,en;q=0.9,zh;q=0.8"),
            Lang::En
        );
        assert_eq!(Lang::from_accept_language("fr,zh-TW;q=0.5"), Lang::Zh);
        assert_eq!(Lang::from_accept_language("de"), Lang::En);
        assert_eq!(Lang::from_accept_language(""), Lang::En);
    }

    #[test]
    fn every_script_label_has_a_translation() {
        for label in SCRIPT_LABELS {
            assert_ne!(Lang::Zh.t(label), *label, "{label} untranslated");
        }
        assert_eq!(Lang::Zh.t("Overview"), "概览");
        assert_eq!(Lang::En.t("Overview"), "Overview");
    }
}
