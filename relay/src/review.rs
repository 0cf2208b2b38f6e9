//! `qunbridge moderation`: what an operator reviews held messages with. The commands ask a
//! running daemon's admin endpoint (`GET /api/v1/held`, `POST /api/v1/held/<id>/release`,
//! `POST /api/v1/held/<id>/drop`), so the daemon that holds the store does every write.

use std::io::Write;
use std::time::Duration;

use serde_json::Value;

use crate::core::hold::{RELEASE_EGRESS_WAIT, RELEASE_PUBLISH_WAIT};
use crate::status::{admin_url, client, get_json, StatusError};

/// How long a release or drop is waited for: a release waits in the daemon for the broker,
/// then for egress to hold the message ([`RELEASE_PUBLISH_WAIT`], [`RELEASE_EGRESS_WAIT`]),
/// so the status commands' shorter timeout would report a release still under way as a
/// daemon out of reach.
const DECIDE_TIMEOUT: Duration =
    Duration::from_secs(RELEASE_PUBLISH_WAIT.as_secs() + RELEASE_EGRESS_WAIT.as_secs() + 5);

/// What to do with held messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Relay it to its destination.
    Release,
    /// Never relay it.
    Drop,
}

impl Verdict {
    /// The word in the endpoint's path.
    fn path(self) -> &'static str {
        match self {
            Verdict::Release => "release",
            Verdict::Drop => "drop",
        }
    }
}

/// Prints the held messages, oldest first: a table, or the endpoint's JSON.
///
/// # Errors
/// [`StatusError`] when the daemon cannot be asked or the output cannot be written.
pub async fn list(
    admin: &str,
    json: bool,
    now_ms: u64,
    out: &mut impl Write,
) -> Result<(), StatusError> {
    let document: Value = get_json(&client()?, admin_url(admin, "/api/v1/held")).await?;
    let text = if json {
        format!("{document:#}\n")
    } else {
        render(&document, now_ms)
    };
    out.write_all(text.as_bytes()).map_err(StatusError::Output)
}

/// The table of held messages: id, age, link, rule, from → to, sender and the first words.
pub fn render(document: &Value, now_ms: u64) -> String {
    let entries = document
        .get("held")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if entries.is_empty() {
        return "No messages are held for review.\n".to_owned();
    }
    let mut out = format!(
        "{} message(s) held for review, oldest first:\n",
        entries.len()
    );
    for entry in &entries {
        let field = |name: &str| entry.get(name).and_then(Value::as_str).unwrap_or("");
        let held_ms = entry
            .get("held_ms")
            .and_then(Value::as_u64)
            .unwrap_or(now_ms);
        let age_s = now_ms.saturating_sub(held_ms) / 1000;
        let to = entry.get("to");
        let to_account = to
            .and_then(|to| to.get("account"))
            .and_then(Value::as_str)
            .unwrap_or("");
        let to_group = to
            .and_then(|to| to.get("group"))
            .and_then(Value::as_str)
            .unwrap_or("");
        out.push_str(&format!(
            "  {}  {:>5}s ago  link {}  rule {}  {} → {}:{}  {}: {}\n",
            field("id"),
            age_s,
            field("link"),
            field("rule"),
            field("from"),
            to_account,
            to_group,
            field("sender"),
            field("excerpt"),
        ));
    }
    out
}

/// Releases or drops each id in turn and prints one line per id; returns how many failed.
///
/// # Errors
/// [`StatusError::Client`] when no HTTP client can be built, [`StatusError::Output`] when the
/// output cannot be written. A failed id (not held, daemon unreachable) is printed and
/// counted, and the next one is tried.
pub async fn decide(
    admin: &str,
    verdict: Verdict,
    ids: &[String],
    out: &mut impl Write,
) -> Result<usize, StatusError> {
    let client = client()?;
    let mut failed = 0;
    for id in ids {
        let url = admin_url(
            admin,
            &format!("/api/v1/held/{}/{}", percent_encode(id), verdict.path()),
        );
        let line = match client.post(&url).timeout(DECIDE_TIMEOUT).send().await {
            Err(error) => {
                failed += 1;
                format!("{id}: cannot reach the daemon at {url}: {error}\n")
            }
            Ok(response) => {
                let ok = response.status().is_success();
                let body: Value = response.json().await.unwrap_or(Value::Null);
                if ok {
                    let outcome = body
                        .get("outcome")
                        .and_then(Value::as_str)
                        .unwrap_or("done");
                    match body.get("reason").and_then(Value::as_str) {
                        Some(reason) => format!("{id}: {outcome} ({reason})\n"),
                        None => format!("{id}: {outcome}\n"),
                    }
                } else {
                    failed += 1;
                    let error = body
                        .get("error")
                        .and_then(Value::as_str)
                        .unwrap_or("the daemon refused");
                    format!("{id}: {error}\n")
                }
            }
        };
        out.write_all(line.as_bytes())
            .map_err(StatusError::Output)?;
    }
    Ok(failed)
}

/// An id as one path segment (ids are letters and digits; anything else is escaped).
fn percent_encode(id: &str) -> String {
    percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_table_shows_each_entry_with_its_age_and_no_user_id() {
        let document = json!({ "held": [{
            "id": "h7k2ab", "link": "fans", "rule": "flood", "held_ms": 1_000,
            "from": "qq", "to": { "account": "wx", "group": "123@chatroom" },
            "sender": "小明", "excerpt": "兼职刷单日结…"
        }]});
        let table = render(&document, 61_000);
        assert!(table.starts_with("1 message(s) held for review"), "{table}");
        assert!(
            table.contains("h7k2ab     60s ago  link fans  rule flood  qq → wx:123@chatroom  小明: 兼职刷单日结…"),
            "{table}"
        );
        assert_eq!(
            render(&json!({ "held": [] }), 0),
            "No messages are held for review.\n"
        );
    }
}
