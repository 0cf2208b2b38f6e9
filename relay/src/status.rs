//! `qunbridge status`: fetches `/api/v1/status` from a running daemon's admin endpoint and
//! renders it as a readable table (accounts and their states, links, queue depth per
//! destination, counts by outcome and drop reason, the media cache and server). The CLI in `main.rs` only parses
//! arguments and picks the address; fetching, rendering and the `--watch` loop live here.

use std::fmt::Write as _;
use std::future::Future;
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// Where the admin endpoint listens unless the config says otherwise.
pub const DEFAULT_ADMIN: &str = "127.0.0.1:9464";
/// How often `--watch` refreshes.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(2);
/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(3);
/// Clears the terminal and moves the cursor home, so `--watch` redraws in place.
const CLEAR: &str = "\x1b[H\x1b[2J";

/// Why the status could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// Nothing answered (daemon not running, wrong address, timeout).
    #[error("the qunbridge daemon is not reachable at {url}: {source} (is it running, and is `admin.listen` this address?)")]
    Unreachable {
        /// The URL asked.
        url: String,
        /// What the HTTP client said.
        source: reqwest::Error,
    },
    /// Something answered with an error status.
    #[error("{url} answered HTTP {status}; is this a qunbridge admin endpoint?")]
    Http {
        /// The URL asked.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The answer was not a status document.
    #[error("{url} did not answer with the JSON document expected: {source}")]
    Body {
        /// The URL asked.
        url: String,
        /// What the HTTP client said.
        source: reqwest::Error,
    },
    /// The HTTP client could not be built.
    #[error("cannot set up the HTTP client: {0}")]
    Client(reqwest::Error),
    /// The terminal could not be written.
    #[error("cannot write the status: {0}")]
    Output(#[from] std::io::Error),
}

/// The status URL of an admin address (`host:port`, or a URL starting with `http://`).
pub fn status_url(admin: &str) -> String {
    admin_url(admin, "/api/v1/status")
}

/// The URL of `path` on an admin address (`host:port`, or a URL starting with `http://`).
pub fn admin_url(admin: &str, path: &str) -> String {
    let base = if admin.starts_with("http://") || admin.starts_with("https://") {
        admin.trim_end_matches('/').to_owned()
    } else {
        format!("http://{admin}")
    };
    format!("{base}{path}")
}

/// Fetches the group-health report `query` asks for (`GET /api/v1/stats`).
///
/// # Errors
/// [`StatusError`] when the daemon does not answer, answers with an error (group health
/// off: 404), or answers with something that is not a report.
pub async fn fetch_stats(
    admin: &str,
    query: &crate::stats::report::Query,
) -> Result<crate::stats::report::Report, StatusError> {
    let url = admin_url(admin, &format!("/api/v1/stats?{}", query.to_query_string()));
    get_json(&client()?, url).await
}

/// Fetches the status document.
///
/// # Errors
/// [`StatusError`] when the daemon does not answer, answers with an error, or answers with
/// something that is not JSON.
pub async fn fetch(client: &reqwest::Client, admin: &str) -> Result<Value, StatusError> {
    get_json(client, status_url(admin)).await
}

/// GETs `url` and reads its JSON answer.
pub(crate) async fn get_json<T: serde::de::DeserializeOwned>(
    client: &reqwest::Client,
    url: String,
) -> Result<T, StatusError> {
    let response = client
        .get(&url)
        .send()
        .await
        .map_err(|source| StatusError::Unreachable {
            url: url.clone(),
            source,
        })?;
    if !response.status().is_success() {
        return Err(StatusError::Http {
            url,
            status: response.status().as_u16(),
        });
    }
    response
        .json()
        .await
        .map_err(|source| StatusError::Body { url, source })
}

/// The admin token the client commands present (`admin.token` of the config they read, or
/// `QUNBRIDGE_ADMIN_TOKEN`), once set.
static ADMIN_TOKEN: std::sync::OnceLock<crate::config::Secret> = std::sync::OnceLock::new();

/// Makes every request of the client commands carry `Authorization: Bearer <token>` (the
/// console and `/api/v1/*` ask for it when `admin.token` is set or the admin endpoint listens
/// beyond loopback). The first token set stays.
pub fn use_admin_token(token: crate::config::Secret) {
    let _ = ADMIN_TOKEN.set(token);
}

/// The HTTP client `status` uses (with the admin token, when one is set).
///
/// # Errors
/// [`StatusError::Client`] when it cannot be built.
pub fn client() -> Result<reqwest::Client, StatusError> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = ADMIN_TOKEN.get() {
        if let Ok(mut value) =
            reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.expose()))
        {
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
    }
    reqwest::Client::builder()
        .timeout(FETCH_TIMEOUT)
        .default_headers(headers)
        .build()
        .map_err(StatusError::Client)
}

/// Prints the status once, as a table or as the raw JSON.
///
/// # Errors
/// [`StatusError`] when the daemon cannot be read or the output cannot be written.
pub async fn show(admin: &str, json: bool, out: &mut impl Write) -> Result<(), StatusError> {
    let status = fetch(&client()?, admin).await?;
    out.write_all(format(&status, json).as_bytes())?;
    out.flush()?;
    Ok(())
}

/// Redraws the status every `every` until `stop` resolves. The first fetch must succeed (so
/// a wrong address fails at once); later failures are shown in place and retried, so the view
/// survives a daemon restart.
///
/// # Errors
/// [`StatusError`] when the first fetch fails or the output cannot be written.
pub async fn watch(
    admin: &str,
    json: bool,
    every: Duration,
    stop: impl Future<Output = ()>,
    out: &mut impl Write,
) -> Result<(), StatusError> {
    let client = client()?;
    let mut current = Ok(fetch(&client, admin).await?);
    tokio::pin!(stop);
    loop {
        let screen = match &current {
            Ok(status) => format(status, json),
            Err(error) => format!("{error}\n"),
        };
        write!(
            out,
            "{CLEAR}{screen}\n(refreshing every {}s; Ctrl-C to stop)\n",
            every.as_secs()
        )?;
        out.flush()?;
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = tokio::time::sleep(every) => {}
        }
        current = fetch(&client, admin).await;
    }
}

/// The status as pretty JSON or as the table.
fn format(status: &Value, json: bool) -> String {
    if json {
        let mut text = serde_json::to_string_pretty(status).unwrap_or_else(|_| status.to_string());
        text.push('\n');
        text
    } else {
        render(status, now_ms())
    }
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The readable table of a status document; `now_ms` makes "since" relative.
pub fn render(status: &Value, now_ms: u64) -> String {
    let mut out = String::new();
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    let _ = writeln!(
        out,
        "qunbridge {} · up {} · broker {} · {}",
        text(&status["version"]),
        duration(status["uptime_secs"].as_u64().unwrap_or(0)),
        if status["broker"]["connected"] == Value::Bool(true) {
            "connected"
        } else {
            "DISCONNECTED"
        },
        if status["ready"] == Value::Bool(true) {
            "ready"
        } else {
            "NOT READY"
        }
    );

    let rows: Vec<Vec<String>> = items(&status["accounts"])
        .map(|a| {
            let since = a["since_ms"]
                .as_u64()
                .map(|since| format!("{} ago", duration(now_ms.saturating_sub(since) / 1000)))
                .unwrap_or_else(|| "-".to_owned());
            vec![
                text(&a["account"]),
                text(&a["platform"]),
                text(&a["state"]),
                since,
                text(&a["queued"]),
                a["reason"].as_str().unwrap_or("").to_owned(),
            ]
        })
        .collect();
    out.push('\n');
    out.push_str(&table(
        &["ACCOUNT", "PLATFORM", "STATE", "SINCE", "QUEUED", "REASON"],
        &rows,
    ));

    let rows: Vec<Vec<String>> = items(&status["links"])
        .map(|l| {
            let join = |v: &Value| items(v).map(text).collect::<Vec<_>>().join(", ");
            vec![text(&l["name"]), join(&l["groups"]), join(&l["to"])]
        })
        .collect();
    out.push('\n');
    out.push_str(&table(&["LINK", "GROUPS", "RECEIVE ONLY"], &rows));

    let rows: Vec<Vec<String>> = items(&status["queues"])
        .map(|q| {
            vec![
                format!("{}:{}", text(&q["account"]), text(&q["group"])),
                text(&q["depth"]),
            ]
        })
        .collect();
    out.push('\n');
    if rows.is_empty() {
        out.push_str("DESTINATION  DEPTH\n(nothing sent yet)\n");
    } else {
        out.push_str(&table(&["DESTINATION", "DEPTH"], &rows));
    }

    let counts = &status["counts"];
    out.push('\n');
    for (label, key, by) in [
        ("received", "received", "by_account"),
        ("relayed", "relayed", "by_route"),
        ("dropped", "dropped", "by_reason"),
    ] {
        let parts: Vec<String> = counts[key][by]
            .as_object()
            .map(|m| m.iter().map(|(k, v)| format!("{k} {v}")).collect())
            .unwrap_or_default();
        let _ = write!(
            out,
            "{label:<9} {}",
            counts[key]["total"].as_u64().unwrap_or(0)
        );
        if !parts.is_empty() {
            let _ = write!(out, " ({})", parts.join(", "));
        }
        out.push('\n');
    }
    if let Some(line) = media_line(&status["media"]) {
        out.push_str(&line);
    }
    let rows: Vec<Vec<String>> = items(&status["groups"])
        .map(|g| {
            vec![
                text(&g["alias"]),
                text(&g["platform"]),
                text(&g["messages_today"]),
                text(&g["active_7d"]),
                text(&g["decline_weeks"]),
            ]
        })
        .collect();
    if !rows.is_empty() {
        out.push('\n');
        out.push_str(&table(
            &["GROUP", "PLATFORM", "TODAY", "ACTIVE 7D", "DECLINE WEEKS"],
            &rows,
        ));
    }
    out
}

/// The `media` line: the mode, the cache's size against its cap, evictions, and the media
/// server. `None` for a daemon that reports no media block.
fn media_line(media: &Value) -> Option<String> {
    let mode = media["mode"].as_str()?;
    let mut line = format!("media     {mode}");
    let cache = &media["cache"];
    if cache.is_object() {
        let _ = write!(
            line,
            " · cache {} in {} blobs (cap {}) · {} evicted",
            bytes(cache["bytes"].as_u64().unwrap_or(0)),
            cache["blobs"].as_u64().unwrap_or(0),
            bytes(cache["max_bytes"].as_u64().unwrap_or(0)),
            cache["evictions"].as_u64().unwrap_or(0),
        );
    } else {
        line.push_str(" · no cache");
    }
    let server = &media["server"];
    match (
        server["configured"].as_bool().unwrap_or(false),
        server["running"].as_bool().unwrap_or(false),
    ) {
        (false, _) => line.push_str(" · no media server"),
        (true, true) => {
            let _ = write!(
                line,
                " · media server on {}",
                server["listen"].as_str().unwrap_or("?")
            );
        }
        (true, false) => line.push_str(" · media server NOT RUNNING"),
    }
    line.push('\n');
    Some(line)
}

/// Bytes in binary units with one decimal (`512 B`, `1.5 KiB`, `1.0 GiB`).
fn bytes(count: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if count < 1024 {
        return format!("{count} B");
    }
    let mut value = count as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The elements of a JSON array (none for anything else).
fn items(value: &Value) -> impl Iterator<Item = &Value> {
    value.as_array().into_iter().flatten()
}

/// Seconds as `1h2m3s` (`0s` for zero).
fn duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

/// Left-aligned columns, two spaces apart; trailing spaces trimmed.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let headers: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&headers).chain(rows) {
        let mut line = String::new();
        for (cell, width) in row.iter().zip(&widths) {
            let _ = write!(line, "{cell:<width$}  ");
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_url_accepts_host_port_and_urls() {
        assert_eq!(
            status_url("127.0.0.1:9464"),
            "http://127.0.0.1:9464/api/v1/status"
        );
        assert_eq!(
            status_url("http://admin.local:1/"),
            "http://admin.local:1/api/v1/status"
        );
    }

    #[test]
    fn renders_accounts_links_queues_and_counts() {
        let status = json!({
            "version": "0.1.0",
            "uptime_secs": 3725,
            "ready": true,
            "broker": { "connected": true },
            "accounts": [
                { "account": "hub", "platform": "api", "state": "up", "since_ms": 1_000, "queued": 0 },
                { "account": "qq", "platform": "qq", "state": "down", "since_ms": 61_000, "queued": 3, "reason": "connection refused" }
            ],
            "links": [ { "name": "demo", "groups": ["hub:a", "qq:1"], "to": [] } ],
            "queues": [ { "account": "qq", "group": "1", "depth": 3 } ],
            "counts": {
                "received": { "total": 5, "by_account": { "hub": 5 } },
                "relayed": { "total": 2, "by_route": { "api->qq": 2 } },
                "dropped": { "total": 1, "by_reason": { "duplicate": 1 } }
            },
            "media": {
                "mode": "native",
                "cache": { "bytes": 1_572_864, "blobs": 4, "max_bytes": 1_073_741_824, "evictions": 2 },
                "server": { "configured": true, "running": true, "listen": "127.0.0.1:9465" }
            },
            "groups": [ { "alias": "fans-qq", "platform": "qq", "messages_today": 28, "active_7d": 3, "decline_weeks": 0 } ]
        });
        let table = render(&status, 121_000);
        for expected in [
            "qunbridge 0.1.0 · up 1h2m5s · broker connected · ready",
            "ACCOUNT  PLATFORM  STATE  SINCE     QUEUED  REASON",
            "hub      api       up     2m0s ago  0",
            "qq       qq        down   1m0s ago  3       connection refused",
            "demo  hub:a, qq:1",
            "qq:1         3",
            "received  5 (hub 5)",
            "relayed   2 (api->qq 2)",
            "dropped   1 (duplicate 1)",
            "media     native · cache 1.5 MiB in 4 blobs (cap 1.0 GiB) · 2 evicted · media server on 127.0.0.1:9465",
            "GROUP    PLATFORM  TODAY  ACTIVE 7D  DECLINE WEEKS",
            "fans-qq  qq        28     3          0",
        ] {
            assert!(
                table.contains(expected),
                "missing {expected:?} in:\n{table}"
            );
        }
    }

    #[test]
    fn renders_a_disconnected_daemon_plainly() {
        let table = render(&json!({ "broker": { "connected": false } }), 0);
        assert!(table.contains("broker DISCONNECTED · NOT READY"), "{table}");
        assert!(table.contains("(nothing sent yet)"), "{table}");
        assert!(!table.contains("media"), "{table}");
    }

    #[test]
    fn renders_a_media_block_without_cache_or_server() {
        let status = json!({
            "media": { "mode": "placeholder", "cache": null,
                       "server": { "configured": true, "running": false, "listen": "127.0.0.1:1" } }
        });
        let table = render(&status, 0);
        assert!(
            table.contains("media     placeholder · no cache · media server NOT RUNNING"),
            "{table}"
        );
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
    }
}
