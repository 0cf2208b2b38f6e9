//! Checks shared by the protocols' account tables (and the relay's own settings): addresses
//! and URLs, each problem naming the item, the key and the value with secrets redacted.

use std::net::SocketAddr;

/// Parses `IP:port`, naming the item and key when it is not one.
pub fn socket_addr(
    item: &str,
    key: &str,
    value: &str,
    problems: &mut Vec<String>,
) -> Option<SocketAddr> {
    match value.parse::<SocketAddr>() {
        Ok(addr) => Some(addr),
        Err(_) => {
            problems.push(format!(
                "{item}: `{key}` = {value:?}: not an IP:port address such as 127.0.0.1:8088"
            ));
            None
        }
    }
}

/// A URL with one of the given schemes and a host.
pub fn check_url(item: &str, key: &str, value: &str, schemes: &[&str], problems: &mut Vec<String>) {
    let shown = redact_url(value);
    match reqwest::Url::parse(value) {
        Ok(url) if schemes.contains(&url.scheme()) && url.host_str().is_some() => {}
        Ok(_) => problems.push(format!(
            "{item}: `{key}` = {shown:?}: must be a {} URL with a host",
            schemes
                .iter()
                .map(|s| format!("{s}://"))
                .collect::<Vec<_>>()
                .join(" or ")
        )),
        Err(error) => problems.push(format!("{item}: `{key}` = {shown:?}: {error}")),
    }
}

/// A URL with its password replaced, for messages.
pub fn redact_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("<redacted>"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// A robot webhook URL as messages may show it: its query (which holds the robot's
/// credential) replaced by `<redacted>`.
pub fn url_without_query(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?<redacted>"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_stay_out_of_shown_urls() {
        assert_eq!(redact_url("mqtt://u:pw@h:1"), "mqtt://u:%3Credacted%3E@h:1");
        assert_eq!(
            url_without_query("https://h/send?key=k"),
            "https://h/send?<redacted>"
        );
        let mut problems = Vec::new();
        check_url("a", "url", "http://h", &["ws", "wss"], &mut problems);
        assert_eq!(
            problems,
            ["a: `url` = \"http://h\": must be a ws:// or wss:// URL with a host"]
        );
        assert!(socket_addr("a", "listen", "nope", &mut problems).is_none());
        assert_eq!(problems.len(), 2);
    }
}
