//! The page frame (header, navigation, language switch) and the helpers every page uses:
//! escaping, times, and the response with its headers (no caching of pages, a content
//! security policy that allows only this console's own script and style).

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::assets;
use super::i18n::{Lang, LANG_COOKIE};

/// The pages, in navigation order: path and label.
const TABS: [(&str, &str); 4] = [
    ("/", "Overview"),
    ("/links", "Links"),
    ("/health", "Group health"),
    ("/held", "Held for review"),
];

/// The content security policy of every page: its own script and style only, inline SVG,
/// no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Text escaped for HTML (element content and quoted attributes).
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

/// A whole page: `active` is the path of the current tab (`None`: no navigation, the login
/// form); `sign_out` shows the sign-out button.
pub fn layout(lang: Lang, active: Option<&str>, title: &str, sign_out: bool, body: &str) -> String {
    let mut nav = String::new();
    if let Some(active) = active {
        nav.push_str("<nav>");
        for (path, label) in TABS {
            let current = if path == active {
                " aria-current=\"page\""
            } else {
                ""
            };
            nav.push_str(&format!(
                "<a href=\"{path}\"{current}>{}</a>",
                esc(lang.t(label))
            ));
        }
        nav.push_str("</nav>");
    }
    let sign_out = if sign_out && active.is_some() {
        format!(
            "<form method=\"post\" action=\"/logout\" class=\"signout\"><button type=\"submit\">{}</button></form>",
            esc(lang.t("Sign out"))
        )
    } else {
        String::new()
    };
    let labels = lang.script_labels().replace("</", "<\\/");
    format!(
        "<!doctype html>\n<html lang=\"{code}\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{title} · qunbridge</title><link rel=\"icon\" href=\"data:,\">\
<link rel=\"stylesheet\" href=\"{css}\"><script src=\"{js}\" defer></script></head>\
<body><header><h1>{console}</h1>{nav}<div class=\"lang\" aria-label=\"{language}\">\
<a href=\"?lang=zh\" lang=\"zh\">中文</a> · <a href=\"?lang=en\" lang=\"en\">English</a></div>{sign_out}</header>\
<main>{body}</main><script type=\"application/json\" id=\"qb-labels\">{labels}</script></body></html>\n",
        code = lang.code(),
        title = esc(title),
        css = assets::url("console.css"),
        js = assets::url("console.js"),
        console = esc(lang.t("qunbridge console")),
        language = esc(lang.t("Language")),
    )
}

/// A page as a response: HTML, never cached, with the security headers.
pub fn respond(page: String) -> Response {
    let mut response = page.into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

/// [`respond`], remembering the language in a cookie when `?lang=` chose it.
pub fn respond_in(lang: Lang, chosen: bool, page: String) -> Response {
    let mut response = respond(page);
    if chosen {
        let cookie = format!(
            "{LANG_COOKIE}={}; Path=/; SameSite=Strict; Max-Age=31536000",
            lang.code()
        );
        if let Ok(value) = HeaderValue::from_str(&cookie) {
            response.headers_mut().insert(header::SET_COOKIE, value);
        }
    }
    response
}

/// A span of seconds, short: `42s`, `5m`, `3h 12m`, `2d 4h`.
pub fn span(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h {}m", secs / 3600, secs % 3600 / 60),
        _ => format!("{}d {}h", secs / 86_400, secs % 86_400 / 3600),
    }
}

/// A time (milliseconds since the epoch) in UTC: `2026-12-04 20:15:07 UTC`.
pub fn utc_text(ms: u64) -> String {
    let secs = ms / 1000;
    let day = i64::try_from(secs / 86_400).unwrap_or_default();
    let rest = secs % 86_400;
    format!(
        "{} {:02}:{:02}:{:02} UTC",
        crate::stats::day::date_text(day),
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    qunbridge_connectors::context::now_ms()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(
            esc("<b a=\"1\">'&'</b>"),
            "&lt;b a=&quot;1&quot;&gt;&#39;&amp;&#39;&lt;/b&gt;"
        );
    }

    #[test]
    fn spans_and_times_read_short() {
        assert_eq!(span(42), "42s");
        assert_eq!(span(300), "5m");
        assert_eq!(span(3 * 3600 + 12 * 60), "3h 12m");
        assert_eq!(span(2 * 86_400 + 4 * 3600), "2d 4h");
        assert_eq!(utc_text(0), "1970-01-01 00:00:00 UTC");
    }
}
