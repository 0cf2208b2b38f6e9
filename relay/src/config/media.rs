//! `[media]` and the accounts' `media` key: how pictures are fetched, cached and carried,
//! checked the way every table is (each problem names the key and the value, all reported
//! at once). The defaults are the issue's: native re-upload, a 1 GiB cache kept 24 h,
//! 20 s per fetch, pictures up to 10 MiB, 20 s of waiting per destination.

use std::net::SocketAddr;
use std::time::Duration;

pub use qunbridge_connectors::media::MediaMode;
use qunbridge_connectors::protocol::socket_addr;
use qunbridge_connectors::Secret;

use super::raw::{RawMedia, RawSize};

/// Default `cache_max_bytes`: 1 GiB.
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 1 << 30;
/// Default `cache_ttl`.
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Default `fetch_timeout`.
pub const DEFAULT_FETCH_TIMEOUT: Duration = Duration::from_secs(20);
/// Default `max_image_bytes`: 10 MiB.
pub const DEFAULT_MAX_IMAGE_BYTES: u64 = 10 << 20;
/// Default `wait`.
pub const DEFAULT_WAIT: Duration = Duration::from_secs(20);
/// Largest `max_image_bytes`: NapCat's WebSocket takes frames up to 50 MB, and a base64
/// picture is 4/3 of its size.
const MAX_MAX_IMAGE_BYTES: u64 = 32 << 20;
/// Shortest signing key of media links.
const MIN_LINK_SECRET_BYTES: usize = 16;

/// `[media]`, resolved.
#[derive(Debug, Clone)]
pub struct MediaConfig {
    /// The mode of every account that does not set its own `media`.
    pub mode: MediaMode,
    /// Most bytes the on-disk cache keeps (least recently used files go first).
    pub cache_max_bytes: u64,
    /// How long an unused cached file is kept.
    pub cache_ttl: Duration,
    /// Longest one fetch may take.
    pub fetch_timeout: Duration,
    /// Largest picture fetched.
    pub max_image_bytes: u64,
    /// How long a destination waits for a picture before it sends the placeholder.
    pub wait: Duration,
    /// Hosts fetched although their addresses are internal.
    pub allow_hosts: Vec<String>,
    /// The optional media server.
    pub server: Option<MediaServerConfig>,
}

impl Default for MediaConfig {
    fn default() -> MediaConfig {
        MediaConfig {
            mode: MediaMode::Native,
            cache_max_bytes: DEFAULT_CACHE_MAX_BYTES,
            cache_ttl: DEFAULT_CACHE_TTL,
            fetch_timeout: DEFAULT_FETCH_TIMEOUT,
            max_image_bytes: DEFAULT_MAX_IMAGE_BYTES,
            wait: DEFAULT_WAIT,
            allow_hosts: Vec::new(),
            server: None,
        }
    }
}

/// The built-in media server: signed, expiring links to cached files.
#[derive(Debug, Clone)]
pub struct MediaServerConfig {
    /// Where it listens.
    pub listen: SocketAddr,
    /// Its address as the platforms' clients reach it; links start with it.
    pub public_base_url: String,
    /// The key that signs links.
    pub link_secret: Secret,
}

/// Resolves `[media]`, adding every problem found.
pub fn media(raw: &RawMedia, problems: &mut Vec<String>) -> MediaConfig {
    let mut config = MediaConfig::default();
    if let Some(value) = &raw.mode {
        match MediaMode::parse(value) {
            Some(mode) => config.mode = mode,
            None => problems.push(unknown_mode("media", "mode", value)),
        }
    }
    if let Some(size) = &raw.cache_max_bytes {
        if let Some(bytes) = size_at_least("cache_max_bytes", size, 1 << 20, problems) {
            config.cache_max_bytes = bytes;
        }
    }
    if let Some(size) = &raw.max_image_bytes {
        match size_at_least("max_image_bytes", size, 1024, problems) {
            Some(bytes) if bytes > MAX_MAX_IMAGE_BYTES => problems.push(format!(
                "media: `max_image_bytes` = {}: at most 32 MiB (a picture travels base64-encoded in one WebSocket frame)",
                show_size(size)
            )),
            Some(bytes) => config.max_image_bytes = bytes,
            None => {}
        }
    }
    if config.max_image_bytes > config.cache_max_bytes {
        problems.push(format!(
            "media: `max_image_bytes` ({} bytes) is larger than `cache_max_bytes` ({} bytes): no picture that large could be kept",
            config.max_image_bytes, config.cache_max_bytes
        ));
    }
    for (key, value, slot, longest) in [
        (
            "cache_ttl",
            &raw.cache_ttl,
            &mut config.cache_ttl,
            Duration::from_secs(30 * 24 * 3600),
        ),
        (
            "fetch_timeout",
            &raw.fetch_timeout,
            &mut config.fetch_timeout,
            Duration::from_secs(300),
        ),
        (
            "wait",
            &raw.wait,
            &mut config.wait,
            Duration::from_secs(600),
        ),
    ] {
        if let Some(value) = value {
            match humantime::parse_duration(value) {
                Ok(duration) if !duration.is_zero() && duration <= longest => *slot = duration,
                Ok(_) => problems.push(format!(
                    "media: `{key}` = {value:?}: must be above zero and at most {}",
                    humantime::format_duration(longest)
                )),
                Err(error) => problems.push(format!(
                    "media: `{key}` = {value:?}: {error} (write e.g. 20s or 24h)"
                )),
            }
        }
    }
    for host in &raw.allow_hosts {
        let trimmed = host.trim();
        if trimmed.is_empty() || trimmed.contains(['/', ' ', '@']) {
            problems.push(format!(
                "media: `allow_hosts` = {host:?}: write a host name or address, without scheme, path or port"
            ));
        } else {
            config.allow_hosts.push(trimmed.to_ascii_lowercase());
        }
    }
    config.server = server(raw, problems);
    if config.mode == MediaMode::Link && config.server.is_none() {
        problems.push(
            "media: `mode` = \"link\": needs the media server (`serve_listen`, `public_base_url` and `link_secret_file`)".into(),
        );
    }
    config
}

/// The media server's keys: all three, or none.
fn server(raw: &RawMedia, problems: &mut Vec<String>) -> Option<MediaServerConfig> {
    let set = [
        raw.serve_listen.is_some(),
        raw.public_base_url.is_some(),
        raw.link_secret.is_some(),
    ];
    if set.iter().all(|set| !set) {
        return None;
    }
    if !set.iter().all(|set| *set) {
        problems.push(
            "media: the media server needs `serve_listen`, `public_base_url` and `link_secret` (or `link_secret_file`) together".into(),
        );
        return None;
    }
    let listen = socket_addr(
        "media",
        "serve_listen",
        raw.serve_listen.as_deref()?,
        problems,
    );
    let base = raw.public_base_url.as_deref()?.trim_end_matches('/');
    let base_ok = matches!(url::Url::parse(base), Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() && url.query().is_none());
    if !base_ok {
        problems.push(format!(
            "media: `public_base_url` = {base:?}: write the http(s) address platforms reach the media server at, without query"
        ));
    }
    let secret = raw.link_secret.as_deref()?;
    if secret.trim().len() < MIN_LINK_SECRET_BYTES {
        problems.push(format!(
            "media: `link_secret` = <redacted>: at least {MIN_LINK_SECRET_BYTES} bytes (e.g. `openssl rand -hex 32`)"
        ));
        return None;
    }
    Some(MediaServerConfig {
        listen: listen?,
        public_base_url: base_ok.then(|| base.to_owned())?,
        link_secret: Secret::new(secret.trim().to_owned()),
    })
}

/// An account's `media` override, when it sets one that is valid.
pub fn account_mode(id: &str, value: &str, problems: &mut Vec<String>) -> Option<MediaMode> {
    let mode = MediaMode::parse(value);
    if mode.is_none() {
        problems.push(unknown_mode(&format!("account {id:?}"), "media", value));
    }
    mode
}

/// The problem of a mode that is not one.
fn unknown_mode(item: &str, key: &str, value: &str) -> String {
    let modes: Vec<&str> = MediaMode::ALL.iter().map(|mode| mode.as_str()).collect();
    format!(
        "{item}: `{key}` = {value:?}: must be one of {}",
        modes.join(", ")
    )
}

/// A size of at least `least` bytes.
fn size_at_least(key: &str, size: &RawSize, least: u64, problems: &mut Vec<String>) -> Option<u64> {
    match parse_size(size) {
        Some(bytes) if bytes >= least => Some(bytes),
        Some(_) => {
            problems.push(format!(
                "media: `{key}` = {}: must be at least {least} bytes",
                show_size(size)
            ));
            None
        }
        None => {
            problems.push(format!(
                "media: `{key}` = {}: write bytes, or a number with B, KB, MB, GB, KiB, MiB or GiB",
                show_size(size)
            ));
            None
        }
    }
}

/// A size as the operator wrote it, for problems.
fn show_size(size: &RawSize) -> String {
    match size {
        RawSize::Bytes(bytes) => bytes.to_string(),
        RawSize::Text(text) => format!("{text:?}"),
    }
}

/// Bytes of a size: a number, or a number (decimals allowed) and a unit.
pub fn parse_size(size: &RawSize) -> Option<u64> {
    let text = match size {
        RawSize::Bytes(bytes) => return Some(*bytes),
        RawSize::Text(text) => text.trim(),
    };
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1_000,
        "mb" | "m" => 1_000_000,
        "gb" | "g" => 1_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => return None,
    };
    let bytes = number * factor as f64;
    (bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(toml: &str) -> RawMedia {
        #[derive(serde::Deserialize)]
        struct File {
            media: RawMedia,
        }
        let file: File = config::Config::builder()
            .add_source(config::File::from_str(toml, config::FileFormat::Toml))
            .build()
            .and_then(|built| built.try_deserialize())
            .expect("test TOML decodes");
        file.media
    }

    #[test]
    fn defaults_and_sizes_in_every_spelling() {
        let mut problems = Vec::new();
        let config = media(&RawMedia::default(), &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(config.mode, MediaMode::Native);
        assert_eq!(config.cache_max_bytes, 1 << 30);
        assert_eq!(config.max_image_bytes, 10 << 20);
        assert_eq!(config.fetch_timeout, Duration::from_secs(20));
        assert!(config.server.is_none());
        let size = |text: &str| parse_size(&RawSize::Text(text.into()));
        assert_eq!(size("10 MiB"), Some(10 << 20));
        assert_eq!(size("1GiB"), Some(1 << 30));
        assert_eq!(size("500KB"), Some(500_000));
        assert_eq!(size("1.5 MiB"), Some(3 << 19));
        assert_eq!(size("2048"), Some(2048));
        assert_eq!(size("ten MiB"), None);
        assert_eq!(size("10 parsecs"), None);
        assert_eq!(parse_size(&RawSize::Bytes(7)), Some(7));
    }

    #[test]
    fn every_problem_is_reported_at_once_naming_key_and_value() {
        let mut problems = Vec::new();
        let config = media(
            &raw(r#"[media]
mode = "pictures please"
cache_max_bytes = "2 MiB"
max_image_bytes = "64 MiB"
fetch_timeout = "forever"
wait = "0s"
allow_hosts = ["http://intranet/x", "pics.internal"]
serve_listen = "127.0.0.1:8088"
"#),
            &mut problems,
        );
        let expected = [
            "`mode` = \"pictures please\": must be one of native, link, placeholder, passthrough",
            "`max_image_bytes` = \"64 MiB\": at most 32 MiB",
            "`max_image_bytes` (10485760 bytes) is larger than `cache_max_bytes` (2097152 bytes)",
            "`fetch_timeout` = \"forever\"",
            "`wait` = \"0s\": must be above zero",
            "`allow_hosts` = \"http://intranet/x\"",
            "`serve_listen`, `public_base_url` and `link_secret` (or `link_secret_file`) together",
        ];
        for text in expected {
            assert!(
                problems.iter().any(|problem| problem.contains(text)),
                "{text:?} missing from {problems:#?}"
            );
        }
        assert_eq!(problems.len(), expected.len(), "{problems:#?}");
        assert_eq!(config.allow_hosts, ["pics.internal"]);
        assert_eq!(config.cache_max_bytes, 2 << 20);
    }

    #[test]
    fn the_media_server_needs_all_its_keys_and_link_mode_needs_it() {
        let mut problems = Vec::new();
        let config = media(
            &raw(r#"[media]
mode = "link"
serve_listen = "127.0.0.1:8088"
public_base_url = "https://media.example.org/"
link_secret = "0123456789abcdef0123"
"#),
            &mut problems,
        );
        assert!(problems.is_empty(), "{problems:?}");
        let server = config.server.expect("a media server");
        assert_eq!(server.public_base_url, "https://media.example.org");
        assert_eq!(server.listen.port(), 8088);

        let mut problems = Vec::new();
        media(
            &raw("[media]\nmode = \"link\"\nserve_listen = \"127.0.0.1:8088\"\npublic_base_url = \"ftp://x\"\nlink_secret = \"short\"\n"),
            &mut problems,
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("`public_base_url` = \"ftp://x\"")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("`link_secret` = <redacted>: at least 16 bytes")),
            "{problems:?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("`mode` = \"link\": needs the media server")),
            "{problems:?}"
        );
        assert!(
            problems.iter().all(|p| !p.contains("short")),
            "the secret is never shown: {problems:?}"
        );
    }
}

#[cfg(test)]
mod account_tests {
    use super::*;
    use crate::config::tests::load;

    #[test]
    fn an_account_overrides_the_mode_and_a_bad_one_is_named() {
        let text = |wecom_media: &str| {
            format!(
                r#"
[media]
mode = "placeholder"
link_secret_file = "missing-secret"
[accounts.hub]
platform = "api"
listen = "127.0.0.1:18081"
[accounts.robot]
platform = "wecom"
webhook = "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k"
media = "{wecom_media}"
[[links]]
groups = ["hub:a"]
to = ["robot:x"]
"#
            )
        };
        let error = load(&text("native"), &[]).expect_err("the secret file is missing");
        assert!(
            error
                .problems
                .iter()
                .any(|p| p.contains("link_secret_file") && p.contains("missing-secret")),
            "{error}"
        );
        let config = load(
            &text("native").replace("link_secret_file = \"missing-secret\"\n", ""),
            &[],
        )
        .expect("valid");
        assert_eq!(config.media_mode("robot"), MediaMode::Native);
        assert_eq!(config.media_mode("hub"), MediaMode::Placeholder);
        let error = load(
            &text("holograms").replace("link_secret_file = \"missing-secret\"\n", ""),
            &[],
        )
        .expect_err("unknown mode");
        assert!(
            error.problems.iter().any(|p| p
                == "account \"robot\": `media` = \"holograms\": must be one of native, link, placeholder, passthrough"),
            "{error}"
        );
    }
}
