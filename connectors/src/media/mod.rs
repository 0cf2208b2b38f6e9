//! Pictures, stickers and files between platforms: the media reference an envelope carries
//! instead of bytes, and the parts that turn it into bytes a destination can upload.
//!
//! - [`MediaMode`]: how pictures reach a destination (`[media] mode`, an account's `media`).
//! - [`MediaRef`]: what ingress puts in an image segment: a stable source key, the kind, and
//!   a [`Locator`] saying how to fetch the bytes (a URL, a OneBot v11 `get_image`, a OneBot
//!   v12 `get_file`, a DingTalk download code). Envelopes stay small: bytes never cross MQTT.
//! - [`cache`]: the content-addressed on-disk cache under `state_dir/media/`.
//! - [`fetch`]: the bounded HTTP fetcher (timeouts, size cap, redirects re-checked).
//! - [`guard`]: the address guard that refuses loopback, private, link-local and multicast
//!   destinations unless the operator allowed them.
//! - [`sniff`]: the file type told from its first bytes, never from a name or a header.
//! - [`service`]: a picture's reference to a cached file, fetched once per source, asking
//!   the account that saw it where its platform must help.
//! - [`carry`]: what a destination does with each picture of a message (its bytes, a link,
//!   the source URL, or the placeholder), decided before it sends.
//! - [`links`]: the signed, expiring links of the optional media server.
//! - [`server`]: the optional media server that answers those links from the cache.
//!
//! The facts behind the design are in `shared/protocols/MEDIA.md` of the design repository;
//! the operator's view is the README section "Pictures and files".

pub mod cache;
pub mod carry;
pub mod fetch;
pub mod guard;
pub mod links;
pub mod server;
pub mod service;
pub mod sniff;

use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// How pictures reach a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MediaMode {
    /// Fetched once, cached, and re-uploaded the way the destination's platform takes
    /// pictures; a placeholder where it cannot.
    Native,
    /// A signed link of the built-in media server where the destination cannot take the
    /// picture natively.
    Link,
    /// Always the placeholder (`[图片]`, `[动画表情]`, …).
    Placeholder,
    /// The source platform's URL, unfetched: what qunbridge did before pictures were
    /// fetched (such URLs expire, and link filters defang them). The default of a context
    /// built without a config (unit tests); the daemon's default is [`MediaMode::Native`].
    #[default]
    Passthrough,
}

impl MediaMode {
    /// Every mode, as written in the config.
    pub const ALL: [MediaMode; 4] = [
        MediaMode::Native,
        MediaMode::Link,
        MediaMode::Placeholder,
        MediaMode::Passthrough,
    ];

    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaMode::Native => "native",
            MediaMode::Link => "link",
            MediaMode::Placeholder => "placeholder",
            MediaMode::Passthrough => "passthrough",
        }
    }

    /// Parses the config spelling.
    pub fn parse(value: &str) -> Option<MediaMode> {
        MediaMode::ALL
            .into_iter()
            .find(|mode| mode.as_str() == value)
    }
}

/// What the relay hands every connector for media: the account's mode, the media service
/// that turns references into cached files, the signer of the media server's links, and the
/// address guard that every URL passes before it is handed to an implementation that would
/// fetch it (NapCat, ComWeChat).
#[derive(Clone, Default)]
pub struct MediaContext {
    /// Refuses loopback, private, link-local and multicast hosts unless `[media]
    /// allow_hosts` lists them.
    pub guard: guard::AddressGuard,
    /// How this account's destinations get pictures (`[media] mode`, the account's `media`).
    pub mode: MediaMode,
    /// Fetches and caches pictures; absent where pictures are never fetched (unit tests).
    pub service: Option<Arc<service::MediaService>>,
    /// Signs links of the media server; absent when none is configured.
    pub links: Option<Arc<links::LinkSigner>>,
    /// No destination of this deployment shows source URLs (none is in `passthrough`), so
    /// ingress need not ask a platform for a URL it hands out only on request (a DingTalk
    /// download code): destinations fetch through the reference instead, off the publish
    /// path.
    pub skip_source_urls: bool,
}

impl std::fmt::Debug for MediaContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaContext")
            .field("mode", &self.mode)
            .field("service", &self.service.is_some())
            .field("links", &self.links.is_some())
            .finish_non_exhaustive()
    }
}

impl MediaContext {
    /// The URLs among `urls` that must not be handed on (blocked by the guard, or not a URL),
    /// each counted in `qunbridge_media_fetch_total{outcome="blocked"}` for the destination
    /// `platform` and logged with its host only. A host name qunbridge cannot resolve is
    /// handed on: it names no address the guard could refuse, and the implementation, which
    /// may resolve differently, answers for it (a failed picture costs no text, see the
    /// OneBot v11 egress).
    pub async fn refused_urls<'a>(
        &self,
        account: &str,
        platform: crate::Platform,
        urls: impl Iterator<Item = &'a str>,
    ) -> Vec<String> {
        let mut refused = Vec::new();
        for url in urls {
            let verdict = match url::Url::parse(url) {
                Ok(parsed) => self.guard.check_resolved(&parsed).await,
                Err(_) => Err(guard::Blocked::NotUrl),
            };
            if let Err(blocked) = verdict.or_else(|blocked| match blocked {
                guard::Blocked::Unresolved { .. } => Ok(()),
                other => Err(other),
            }) {
                tracing::warn!(message = "A picture URL was not handed to the implementation.", %account, reason = %blocked);
                metrics::counter!(
                    crate::metrics::MEDIA_FETCHES,
                    "platform" => platform.as_str(),
                    "kind" => MediaKind::Image.as_str(),
                    "outcome" => "blocked"
                )
                .increment(1);
                refused.push(url.to_owned());
            }
        }
        refused
    }
}

/// What a piece of media is, which decides how each destination can carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum MediaKind {
    /// A picture.
    #[default]
    Image,
    /// A sticker (动画表情): a picture the platform shows as a sticker.
    Sticker,
    /// A voice message.
    Voice,
    /// A video.
    Video,
    /// Any other file.
    File,
    /// A kind a newer peer named that this version does not know: carried as its placeholder.
    #[serde(other)]
    Unknown,
}

impl MediaKind {
    /// The metric label and config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            MediaKind::Image => "image",
            MediaKind::Sticker => "sticker",
            MediaKind::Voice => "voice",
            MediaKind::Video => "video",
            MediaKind::File => "file",
            MediaKind::Unknown => "unknown",
        }
    }
}

/// How the bytes of a piece of media can be fetched, in the terms of the platform that saw
/// it. Unknown locators from newer peers decode as [`Locator::Unknown`] (the picture then
/// falls back to its placeholder) instead of failing the message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "via", rename_all = "snake_case")]
pub enum Locator {
    /// A plain http(s) URL (an `api` client's picture, a market face, a WeCom or DingTalk
    /// public link).
    Url {
        /// The URL; checked by the address guard before anything fetches it.
        url: String,
    },
    /// A QQ picture: its URL (which expires after about an hour) and the `file` name that
    /// the origin account's `get_image` action turns into a fresh URL for about a day.
    Onebot11Image {
        /// The segment's `file` field, the argument of `get_image`.
        file: String,
        /// The segment's `url`, tried first.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
    },
    /// A OneBot v12 file: the bytes come from the origin account's `get_file` with
    /// `type: "data"` (ComWeChatClient's `type: "url"` answers are never usable).
    Onebot12File {
        /// The `file_id` of the segment.
        file_id: String,
    },
    /// A DingTalk picture: `robot/messageFiles/download` turns the code into a temporary URL.
    DingtalkDownload {
        /// The `downloadCode` of the Stream message.
        download_code: String,
    },
    /// A locator this version does not know.
    #[serde(other)]
    Unknown,
}

/// The media reference an image segment carries: enough to fetch the bytes once, from the
/// account that saw them, and to find them again in the cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaRef {
    /// Stable source key, the same for every sighting of the same file on its platform
    /// (`qq:<account>:<file>`, `wechat:<account>:<file_id>`, `dingtalk:<account>:<code>`,
    /// `url:<url>`): the cache and single-flight fetching are keyed by it.
    pub key: String,
    /// What it is.
    #[serde(default)]
    pub kind: MediaKind,
    /// How to fetch it.
    pub locator: Locator,
}

impl MediaRef {
    /// The reference of a picture seen by `account` on `platform` under the platform's own
    /// stable name `name` (a QQ `file`, a v12 `file_id`, a DingTalk download code).
    pub fn new(
        platform: crate::Platform,
        account: &str,
        name: &str,
        kind: MediaKind,
        locator: Locator,
    ) -> MediaRef {
        MediaRef {
            key: format!("{platform}:{account}:{name}"),
            kind,
            locator,
        }
    }

    /// True when this reference could have been made by `account` on `platform`: its key
    /// names that account (or, for a plain URL, is that URL's key). A reference that names
    /// another account's picture, as an `api` client could write one, must not reach that
    /// account's cached picture or its implementation.
    pub fn belongs_to(&self, platform: crate::Platform, account: &str) -> bool {
        match &self.locator {
            Locator::Url { url } => self.key.strip_prefix("url:") == Some(url.as_str()),
            _ => self
                .key
                .strip_prefix(platform.as_str())
                .and_then(|rest| rest.strip_prefix(':'))
                .and_then(|rest| rest.strip_prefix(account))
                .is_some_and(|rest| rest.starts_with(':')),
        }
    }

    /// The reference of a picture known only by its URL.
    pub fn url(url: &str, kind: MediaKind) -> MediaRef {
        MediaRef {
            key: format!("url:{url}"),
            kind,
            locator: Locator::Url {
                url: url.to_owned(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_round_trip_and_unknown_locators_and_kinds_are_tolerated() {
        let reference = MediaRef::new(
            crate::Platform::Qq,
            "qq-main",
            "ABCD.jpg",
            MediaKind::Sticker,
            Locator::Onebot11Image {
                file: "ABCD.jpg".into(),
                url: Some("https://multimedia.nt.qq.com.cn/download?rkey=x".into()),
            },
        );
        let json = serde_json::to_string(&reference).expect("encodes");
        assert_eq!(
            json,
            r#"{"key":"qq:qq-main:ABCD.jpg","kind":"sticker","locator":{"via":"onebot11_image","file":"ABCD.jpg","url":"https://multimedia.nt.qq.com.cn/download?rkey=x"}}"#
        );
        assert_eq!(
            serde_json::from_str::<MediaRef>(&json).expect("decodes"),
            reference
        );
        let newer: MediaRef = serde_json::from_str(
            r#"{"key":"x:y:z","kind":"hologram","locator":{"via":"carrier_pigeon","leg":1}}"#,
        )
        .expect("unknown kind and locator tolerated");
        assert_eq!(newer.kind, MediaKind::Unknown);
        assert_eq!(newer.locator, Locator::Unknown);
    }

    #[test]
    fn a_reference_belongs_only_to_the_account_that_made_it() {
        let qq = MediaRef::new(
            crate::Platform::Qq,
            "qq-main",
            "A.jpg",
            MediaKind::Image,
            Locator::Onebot11Image {
                file: "A.jpg".into(),
                url: None,
            },
        );
        assert!(qq.belongs_to(crate::Platform::Qq, "qq-main"));
        assert!(!qq.belongs_to(crate::Platform::Api, "qq-main"));
        assert!(!qq.belongs_to(crate::Platform::Qq, "qq"));
        let url = MediaRef::url("https://93.184.215.14/a.png", MediaKind::Image);
        assert!(url.belongs_to(crate::Platform::Api, "hub"));
        let forged = MediaRef {
            key: "qq:qq-main:A.jpg".into(),
            ..url
        };
        assert!(!forged.belongs_to(crate::Platform::Api, "hub"));
    }
}
