//! Held for review (`/held`): the messages a moderation rule held, oldest first, with their
//! destination (by alias), rule, excerpt, sender name and age, and Release and Drop buttons
//! that call `POST /api/v1/held/<id>/release|drop` (what `qunbridge moderation release|drop`
//! calls) and show the outcome. The script polls `GET /api/v1/held` while the tab is visible.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use serde_json::Value;

use super::html::{self, esc, span};
use super::i18n::{Lang, PageLang};
use crate::admin::{held_summary, Health};

/// `GET /held`.
pub async fn page(
    State(health): State<Arc<Health>>,
    PageLang { lang, chosen }: PageLang,
) -> Response {
    let view = health.console_view();
    let entries = match health.held() {
        Some(held) => held.list().await.ok().map(|entries| {
            entries
                .iter()
                .map(|entry| held_summary(entry, view.as_deref()))
                .collect::<Vec<Value>>()
        }),
        None => None,
    };
    let body = render(lang, entries.as_deref(), html::now_ms());
    let sign_out = view.is_some_and(|view| view.access.required());
    html::respond_in(
        lang,
        chosen,
        html::layout(
            lang,
            Some("/held"),
            lang.t("Held for review"),
            sign_out,
            &body,
        ),
    )
}

/// The page's body from the entries `/api/v1/held` lists (`None`: not available).
pub fn render(lang: Lang, entries: Option<&[Value]>, now_ms: u64) -> String {
    let t = |text| esc(lang.t(text));
    let Some(entries) = entries else {
        return format!(
            "<p class=\"error\">{}</p>",
            t("Held messages are not available.")
        );
    };
    let mut out = format!(
        "<div id=\"held\" data-live=\"held\"><p id=\"held-result\" role=\"status\" aria-live=\"polite\"></p>\
<table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th></th></tr></thead><tbody id=\"held-rows\">",
        t("Destination"),
        t("Rule"),
        t("Excerpt"),
        t("Sender"),
        t("Age"),
    );
    if entries.is_empty() {
        out.push_str(&format!(
            "<tr><td colspan=\"6\" class=\"empty\">{}</td></tr>",
            t("No messages are held for review.")
        ));
    }
    for entry in entries {
        out.push_str(&row(lang, entry, now_ms));
    }
    out.push_str("</tbody></table></div>");
    out
}

/// One held message's row.
fn row(lang: Lang, entry: &Value, now_ms: u64) -> String {
    let field = |name: &str| esc(entry[name].as_str().unwrap_or(""));
    let held_ms = entry["held_ms"].as_u64().unwrap_or(now_ms);
    format!(
        "<tr data-id=\"{id}\"><td>{to} <small>({account})</small></td><td>{rule}</td><td class=\"excerpt\">{excerpt}</td>\
<td>{sender}</td><td data-held-ms=\"{held_ms}\">{age}</td><td class=\"buttons\">\
<button type=\"button\" data-action=\"release\" data-id=\"{id}\">{release}</button> \
<button type=\"button\" class=\"secondary\" data-action=\"drop\" data-id=\"{id}\">{drop}</button></td></tr>",
        id = field("id"),
        to = esc(entry["to"]["alias"].as_str().unwrap_or("?")),
        account = esc(entry["to"]["account"].as_str().unwrap_or("")),
        rule = field("rule"),
        excerpt = field("excerpt"),
        sender = field("sender"),
        age = span(now_ms.saturating_sub(held_ms) / 1000),
        release = esc(lang.t("Release")),
        drop = esc(lang.t("Drop")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_show_alias_rule_excerpt_sender_and_age_but_no_ids() {
        let entries = [json!({
            "id": "h7k2ab", "link": "fans", "rule": "ads", "held_ms": 1_000, "from": "qq",
            "to": { "account": "qq-b", "group": "735021900", "alias": "fans-b" },
            "sender": "小明", "excerpt": "兼职刷单<b>"
        })];
        let page = render(Lang::En, Some(&entries), 121_000);
        assert!(
            page.contains(
                "<tr data-id=\"h7k2ab\"><td>fans-b <small>(qq-b)</small></td><td>ads</td>"
            ),
            "{page}"
        );
        assert!(page.contains("兼职刷单&lt;b&gt;"));
        assert!(page.contains(">2m<"));
        assert!(!page.contains("735021900"));
        let empty = render(Lang::Zh, Some(&[]), 0);
        assert!(empty.contains("没有待审核的消息。"));
    }
}
