//! Overview (`/`): the broker connection, readiness, each account's state since when with
//! its last error, queue depth per destination (by alias), and messages relayed and dropped
//! over the last hour. Rendered on the server from the `/api/v1/status` document, so it
//! works without JavaScript; the script polls that document and redraws the same parts.

use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use serde_json::Value;

use super::html::{self, esc, span};
use super::i18n::{Lang, PageLang};
use crate::admin::{status_document, Health};

/// `GET /`.
pub async fn page(
    State(health): State<Arc<Health>>,
    PageLang { lang, chosen }: PageLang,
) -> Response {
    let status = status_document(&health).await;
    let sign_out = health.console_signs_in();
    let body = render(lang, &status, html::now_ms());
    html::respond_in(
        lang,
        chosen,
        html::layout(lang, Some("/"), lang.t("Overview"), sign_out, &body),
    )
}

/// The overview's body from a status document; `now_ms` makes "since" relative.
pub fn render(lang: Lang, status: &Value, now_ms: u64) -> String {
    let t = |text| esc(lang.t(text));
    let yes_no = |flag: bool, yes: &'static str, no: &'static str| {
        format!(
            "<span class=\"{}\">{}</span>",
            if flag { "good" } else { "bad" },
            t(if flag { yes } else { no })
        )
    };
    let broker = status["broker"]["connected"] == Value::Bool(true);
    let ready = status["ready"] == Value::Bool(true);
    let mut out = format!(
        "<div id=\"overview\" data-live=\"status\"><section class=\"cards\">\
<div class=\"card\"><h3>{}</h3><p data-field=\"broker\">{}</p></div>\
<div class=\"card\"><h3>{}</h3><p data-field=\"ready\">{}</p></div>\
<div class=\"card\"><h3>{}</h3><p>{}</p></div>\
<div class=\"card\"><h3>{}</h3><p data-field=\"uptime\">{}</p></div></section>",
        t("Broker"),
        yes_no(broker, "connected", "disconnected"),
        t("Ready"),
        yes_no(ready, "yes", "no"),
        t("Version"),
        esc(status["version"].as_str().unwrap_or("")),
        t("Uptime"),
        span(status["uptime_secs"].as_u64().unwrap_or(0)),
    );

    out.push_str(&format!(
        "<section><h2>{}</h2><table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody id=\"accounts\">",
        t("Accounts"),
        t("Account"),
        t("Platform"),
        t("State"),
        t("Since"),
        t("Last error"),
        t("Queued")
    ));
    for account in items(&status["accounts"]) {
        out.push_str(&account_row(lang, account, now_ms));
    }
    out.push_str("</tbody></table></section>");

    out.push_str(&format!(
        "<section><h2>{}</h2><table><thead><tr><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody id=\"queues\">",
        t("Queue depth per destination"),
        t("Destination"),
        t("Account"),
        t("Depth")
    ));
    let queues: Vec<&Value> = items(&status["queues"]).collect();
    if queues.is_empty() {
        out.push_str(&format!(
            "<tr><td colspan=\"3\" class=\"empty\">{}</td></tr>",
            t("No queue yet.")
        ));
    }
    for queue in queues {
        out.push_str(&format!(
            "<tr><td>{}</td><td>{}</td><td class=\"num\">{}</td></tr>",
            esc(queue["alias"].as_str().unwrap_or("?")),
            esc(queue["account"].as_str().unwrap_or("")),
            queue["depth"].as_u64().unwrap_or(0)
        ));
    }
    out.push_str("</tbody></table></section>");

    out.push_str(&format!(
        "<section><h2>{}</h2><div class=\"two\">",
        t("Last hour")
    ));
    for (title, key, by, column, id) in [
        ("Relayed", "relayed", "by_route", "Route", "relayed"),
        ("Dropped", "dropped", "by_reason", "Reason", "dropped"),
    ] {
        let block = &status["last_hour"][key];
        out.push_str(&format!(
            "<table><caption>{} <span class=\"num\" data-field=\"{id}-total\">{}</span></caption><thead><tr><th>{}</th><th>{}</th></tr></thead><tbody id=\"{id}\">",
            t(title),
            block["total"].as_u64().unwrap_or(0),
            t(column),
            t("Messages")
        ));
        out.push_str(&count_rows(lang, &block[by]));
        out.push_str("</tbody></table>");
    }
    out.push_str("</div></section></div>");
    out
}

/// One account's row: the state as a badge, since when (relative, the time in UTC as its
/// title), the last error and what waits in its queues.
fn account_row(lang: Lang, account: &Value, now_ms: u64) -> String {
    let state = account["state"].as_str().unwrap_or("starting");
    let (since, title) = match account["since_ms"].as_u64() {
        Some(since) => (
            format!(
                "{} {}",
                span(now_ms.saturating_sub(since) / 1000),
                lang.t("ago")
            ),
            html::utc_text(since),
        ),
        None => ("-".to_owned(), String::new()),
    };
    format!(
        "<tr data-account=\"{id}\" data-state=\"{state}\"><td>{id}</td><td>{platform}</td>\
<td><span class=\"state s-{state}\">{label}</span></td><td title=\"{title}\" data-since-ms=\"{since_ms}\">{since}</td>\
<td class=\"reason\">{reason}</td><td class=\"num\">{queued}</td></tr>",
        id = esc(account["account"].as_str().unwrap_or("")),
        platform = esc(account["platform"].as_str().unwrap_or("")),
        state = esc(state),
        label = esc(lang.t(state_label(state))),
        since_ms = account["since_ms"].as_u64().unwrap_or(0),
        since = esc(&since),
        title = esc(&title),
        reason = esc(account["reason"].as_str().unwrap_or("")),
        queued = account["queued"].as_u64().unwrap_or(0),
    )
}

/// The label of a connection state (its own name, translated).
fn state_label(state: &str) -> &'static str {
    match state {
        "up" => "up",
        "down" => "down",
        "auth_failed" => "auth_failed",
        "stopped" => "stopped",
        _ => "starting",
    }
}

/// Rows of `{key: count}`, or one "None." row.
fn count_rows(lang: Lang, counts: &Value) -> String {
    let rows: Vec<String> = counts
        .as_object()
        .into_iter()
        .flatten()
        .map(|(key, count)| {
            format!(
                "<tr><td>{}</td><td class=\"num\">{}</td></tr>",
                esc(key),
                count.as_u64().unwrap_or(0)
            )
        })
        .collect();
    if rows.is_empty() {
        format!(
            "<tr><td colspan=\"2\" class=\"empty\">{}</td></tr>",
            esc(lang.t("None."))
        )
    } else {
        rows.concat()
    }
}

/// The items of a JSON array (none for anything else).
fn items(value: &Value) -> impl Iterator<Item = &Value> {
    value.as_array().into_iter().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shows_accounts_queues_by_alias_and_the_last_hour_without_group_ids() {
        let status = json!({
            "version": "0.1.0", "uptime_secs": 90, "ready": true,
            "broker": { "connected": true },
            "accounts": [
                { "account": "qq-a", "platform": "qq", "state": "up", "since_ms": 1_000, "reason": null, "queued": 0 },
                { "account": "qq-b", "platform": "qq", "state": "down", "since_ms": 61_000, "reason": "connection refused", "queued": 2 }
            ],
            "queues": [{ "account": "qq-b", "group": "735021844", "depth": 2, "alias": "fans-qq" }],
            "last_hour": {
                "relayed": { "total": 3, "by_route": { "qq->qq": 3 } },
                "dropped": { "total": 1, "by_reason": { "duplicate": 1 } }
            }
        });
        let page = render(Lang::En, &status, 121_000);
        assert!(
            page.contains("data-account=\"qq-b\" data-state=\"down\""),
            "{page}"
        );
        assert!(page.contains("1m ago"), "{page}");
        assert!(page.contains("connection refused"));
        assert!(page.contains("<td>fans-qq</td><td>qq-b</td><td class=\"num\">2</td>"));
        assert!(page.contains("<td>duplicate</td><td class=\"num\">1</td>"));
        assert!(!page.contains("735021844"), "no group id on the overview");
        let zh = render(Lang::Zh, &status, 121_000);
        assert!(zh.contains("断开"), "{zh}");
    }
}
