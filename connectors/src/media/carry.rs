//! What a destination does with each picture of an outbound message, decided before it
//! sends: the cached file to upload (`native`, `link`), the source platform's URL
//! (`passthrough`), or the placeholder (`[图片]`, `[动画表情]`, `[闪照]`). Fetching happens
//! here, within `[media] wait`, through the media service; whatever fails becomes the
//! placeholder, counted in `qunbridge_media_fallback_total`, and never costs the text.
//!
//! Text-only parts of a destination's message come from [`text_with`], which renders the
//! message as its `text` field does, except that each picture shows as its destination
//! decides (left out when it follows as a picture of its own).

use std::io;
use std::time::Duration;

use futures_util::future::join_all;
use tokio::io::AsyncReadExt;

use super::cache::{Blob, UploadHandle};
use super::sniff::{sniff, FileType, SNIFF_LEN};
use super::{MediaContext, MediaKind, MediaMode, MediaRef};
use crate::model::{Envelope, Outbound, Platform, Segment};

/// How one picture goes to a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Carry {
    /// Its bytes are in the cache: upload them the way the platform takes pictures.
    File(Picture),
    /// The source platform's URL, unfetched (`mode = "passthrough"`).
    SourceUrl(String),
    /// Its placeholder.
    Placeholder,
}

/// A picture whose bytes are in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picture {
    /// The cached file.
    pub blob: Blob,
    /// Its type, told from its first bytes.
    pub file_type: FileType,
}

impl Picture {
    /// The bytes, read from the cache.
    ///
    /// # Errors
    /// The file was evicted or cannot be read (the destination sends the placeholder).
    pub async fn bytes(&self) -> io::Result<Vec<u8>> {
        tokio::fs::read(&self.blob.path).await
    }

    /// A file name for uploads that want one: the start of the hash and the true extension.
    pub fn file_name(&self) -> String {
        let stem = self.blob.sha256.get(..16).unwrap_or(&self.blob.sha256);
        format!("{stem}.{}", self.file_type.extension())
    }
}

/// One picture of an outbound message, prepared for a destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedPicture {
    /// Its position in the message's segments.
    pub index: usize,
    /// How it goes.
    pub carry: Carry,
    /// What it is (a picture or a sticker), for metrics and for destinations with stickers.
    pub kind: MediaKind,
    /// The platform's preview text of a sticker (`[动画表情]`, a market face's name).
    pub summary: Option<String>,
    /// The text that stands for it when it is not carried.
    pub placeholder: &'static str,
}

impl PreparedPicture {
    /// True for a sticker.
    pub fn is_sticker(&self) -> bool {
        self.kind == MediaKind::Sticker
    }

    /// The cached picture, when it is carried as a file.
    pub fn picture(&self) -> Option<&Picture> {
        match &self.carry {
            Carry::File(picture) => Some(picture),
            _ => None,
        }
    }
}

impl MediaContext {
    /// Prepares every picture of `outbound` for this account, a destination on
    /// `destination`: fetched (concurrently, within `[media] wait`) in `native` and `link`
    /// modes, the source URL in `passthrough`, the placeholder otherwise or when the fetch
    /// fails. A flash picture is never carried.
    pub async fn prepare(
        &self,
        destination: Platform,
        outbound: &Outbound,
    ) -> Vec<PreparedPicture> {
        let pictures = outbound
            .segments
            .iter()
            .enumerate()
            .filter(|(_, segment)| matches!(segment, Segment::Image { .. }))
            .map(|(index, segment)| self.prepare_one(destination, outbound, index, segment));
        join_all(pictures).await
    }

    /// Prepares the picture `segment` at `index`.
    async fn prepare_one(
        &self,
        destination: Platform,
        outbound: &Outbound,
        index: usize,
        segment: &Segment,
    ) -> PreparedPicture {
        let placeholder = segment.image_placeholder().unwrap_or("[图片]");
        let Segment::Image {
            url,
            sticker,
            flash,
            summary,
            media,
            ..
        } = segment
        else {
            return PreparedPicture {
                index,
                carry: Carry::Placeholder,
                kind: MediaKind::Image,
                summary: None,
                placeholder,
            };
        };
        let kind = match media {
            Some(media) if media.kind != MediaKind::Unknown => media.kind,
            _ if *sticker => MediaKind::Sticker,
            _ => MediaKind::Image,
        };
        let prepared = |carry| PreparedPicture {
            index,
            carry,
            kind,
            summary: summary.clone(),
            placeholder,
        };
        if *flash {
            return prepared(Carry::Placeholder);
        }
        let web_url = url
            .as_deref()
            .filter(|url| url.starts_with("http://") || url.starts_with("https://"));
        match self.mode {
            MediaMode::Placeholder => return prepared(Carry::Placeholder),
            MediaMode::Passthrough => {
                return prepared(match web_url {
                    Some(url) => Carry::SourceUrl(url.to_owned()),
                    None => Carry::Placeholder,
                })
            }
            MediaMode::Native | MediaMode::Link => {}
        }
        if !matches!(kind, MediaKind::Image | MediaKind::Sticker) {
            self.fell_back(destination, kind, "not_a_picture");
            return prepared(Carry::Placeholder);
        }
        let origin = &outbound.origin;
        let own = media
            .as_ref()
            .filter(|media| media.belongs_to(origin.platform, &origin.account));
        let reference = match (own, web_url) {
            (Some(media), _) => media.clone(),
            (None, Some(url)) => MediaRef::url(url, kind),
            (None, None) => {
                self.fell_back(destination, kind, "no_source");
                return prepared(Carry::Placeholder);
            }
        };
        let Some(service) = &self.service else {
            self.fell_back(destination, kind, "no_service");
            return prepared(Carry::Placeholder);
        };
        let blob = match service
            .blob(origin.platform.as_str(), &origin.account, &reference)
            .await
        {
            Ok((blob, _)) => blob,
            Err(failure) => {
                tracing::info!(message = "A picture could not be had; its placeholder is sent.", account = %origin.account, reason = %failure);
                self.fell_back(destination, kind, failure.outcome());
                return prepared(Carry::Placeholder);
            }
        };
        match file_type(&blob).await {
            Some(file_type) if file_type.is_picture() => {
                prepared(Carry::File(Picture { blob, file_type }))
            }
            _ => {
                self.fell_back(destination, kind, "bad_type");
                prepared(Carry::Placeholder)
            }
        }
    }

    /// The largest WebSocket message an account's implementation may send it: 1 MiB, or,
    /// when pictures are fetched, a picture of `max_image_bytes` as base64 (4/3 of its size)
    /// with 64 KiB for the rest of the answer (OneBot v12 `get_file` with `type: "data"`).
    pub fn max_message_bytes(&self) -> usize {
        let base = crate::reverse_ws::MAX_MESSAGE_BYTES;
        match (&self.service, self.mode) {
            (Some(service), MediaMode::Native | MediaMode::Link) => {
                let picture = service.max_bytes();
                let encoded = picture
                    .div_ceil(3)
                    .saturating_mul(4)
                    .saturating_add(64 << 10);
                usize::try_from(encoded).unwrap_or(usize::MAX).max(base)
            }
            _ => base,
        }
    }

    /// A link of the media server to `picture`, when one is configured.
    pub fn link(&self, picture: &Picture) -> Option<String> {
        let signer = self.links.as_ref()?;
        Some(signer.link(
            &picture.blob.sha256,
            picture.file_type.extension(),
            crate::context::now_ms() / 1000,
        ))
    }

    /// Counts a picture that `destination` sends as its placeholder, with the reason.
    pub fn fell_back(&self, destination: Platform, kind: MediaKind, reason: &'static str) {
        metrics::counter!(
            crate::metrics::MEDIA_FALLBACK,
            "platform" => destination.as_str(),
            "kind" => kind.as_str(),
            "reason" => reason
        )
        .increment(1);
    }

    /// Starts fetching the pictures of `envelope` into the cache, without waiting: by the
    /// time a destination asks, the picture is there or on its way (one fetch per source,
    /// however many destinations). Nothing happens in modes that never fetch.
    pub fn prefetch(&self, envelope: &Envelope) {
        let Some(service) = &self.service else {
            return;
        };
        let platform = envelope.origin.platform;
        for media in self.to_fetch(platform, &envelope.origin.account, &envelope.segments) {
            let service = service.clone();
            let account = envelope.origin.account.clone();
            tokio::spawn(async move {
                let _ = service.blob(platform.as_str(), &account, &media).await;
            });
        }
    }

    /// Waits (at most `[media] wait`) until the pictures of `outbound` are in the cache or
    /// known not to come, so that a destination's send, once it has its pacing token, finds
    /// them at once. What happens to each picture is decided, and counted, when it is sent.
    pub async fn warm(&self, outbound: &Outbound) {
        let Some(service) = &self.service else {
            return;
        };
        let origin = &outbound.origin;
        let wanted = self.to_fetch(origin.platform, &origin.account, &outbound.segments);
        join_all(
            wanted
                .iter()
                .map(|media| service.blob(origin.platform.as_str(), &origin.account, media)),
        )
        .await;
    }

    /// The references to fetch for `segments`, seen by `account` on `platform`, in modes
    /// that fetch: each picture's own reference, or its URL's; never a flash picture, nor a
    /// reference naming another account.
    fn to_fetch(&self, platform: Platform, account: &str, segments: &[Segment]) -> Vec<MediaRef> {
        if !matches!(self.mode, MediaMode::Native | MediaMode::Link) {
            return Vec::new();
        }
        segments
            .iter()
            .filter_map(|segment| {
                let Segment::Image {
                    media,
                    url,
                    flash: false,
                    sticker,
                    ..
                } = segment
                else {
                    return None;
                };
                let own = media
                    .as_ref()
                    .filter(|media| media.belongs_to(platform, account))
                    .filter(|media| matches!(media.kind, MediaKind::Image | MediaKind::Sticker));
                match (own, url) {
                    (Some(media), _) => Some(media.clone()),
                    (None, Some(url))
                        if url.starts_with("http://") || url.starts_with("https://") =>
                    {
                        let kind = if *sticker {
                            MediaKind::Sticker
                        } else {
                            MediaKind::Image
                        };
                        Some(MediaRef::url(url, kind))
                    }
                    _ => None,
                }
            })
            .collect()
    }
}

/// A cached picture that could not be read for an upload (evicted, or a disk error); each
/// destination turns it into its own error type.
#[derive(Debug, thiserror::Error)]
#[error("the cached picture cannot be read: {0}")]
pub struct Unreadable(#[from] pub io::Error);

impl From<Unreadable> for String {
    fn from(unreadable: Unreadable) -> String {
        unreadable.to_string()
    }
}

impl From<Unreadable> for crate::error::SendError {
    fn from(unreadable: Unreadable) -> crate::error::SendError {
        crate::error::SendError::Permanent(unreadable.to_string())
    }
}

/// The uploads of one destination account: a picture is uploaded once per account and its
/// handle (a v12 `file_id`, a DingTalk or WeCom media id) reused until it expires or the
/// picture leaves the cache. Uploads of one account run one at a time, so two groups sending
/// the same picture at once still upload it once. Every upload asked for is counted here,
/// and only here, in `qunbridge_media_upload_total{platform,kind,outcome}`.
#[derive(Debug)]
pub struct Uploads {
    /// The destination account the handles belong to.
    account: String,
    /// The destination account's platform, for metric labels.
    platform: Platform,
    /// How long the platform keeps an upload.
    lifetime: Duration,
    /// Held while looking up and uploading.
    lock: tokio::sync::Mutex<()>,
}

impl Uploads {
    /// The uploads of `account`, a destination on `platform` that keeps uploads for
    /// `lifetime`.
    pub fn new(account: &str, platform: Platform, lifetime: Duration) -> Uploads {
        Uploads {
            account: account.to_owned(),
            platform,
            lifetime,
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The handle of `picture` (a `kind`, for metrics) on this account: remembered from an
    /// earlier upload (`reused`), else from `upload` given the bytes (`ok` or `failed`), then
    /// remembered for the platform's lifetime.
    ///
    /// # Errors
    /// The picture could not be read ([`Unreadable`], turned into `E`), or `upload` failed
    /// (its error, as it was: a destination's pause on throttling still works).
    pub async fn handle<E, F, Fut>(
        &self,
        media: &MediaContext,
        kind: MediaKind,
        picture: &Picture,
        upload: F,
    ) -> Result<String, E>
    where
        E: From<Unreadable>,
        F: FnOnce(Vec<u8>) -> Fut,
        Fut: std::future::Future<Output = Result<String, E>>,
    {
        let _one_at_a_time = self.lock.lock().await;
        let cache = media.service.as_ref().map(|service| service.cache());
        if let Some(cache) = cache {
            if let Some(handle) = cache.upload(&picture.blob.sha256, &self.account).await {
                self.count(kind, "reused");
                return Ok(handle.id);
            }
        }
        let uploaded = match picture.bytes().await {
            Ok(bytes) => upload(bytes).await,
            Err(error) => Err(E::from(Unreadable(error))),
        };
        let id = match uploaded {
            Ok(id) => id,
            Err(error) => {
                self.count(kind, "failed");
                return Err(error);
            }
        };
        self.count(kind, "ok");
        if let Some(cache) = cache {
            let handle = UploadHandle {
                id: id.clone(),
                expires_at_ms: Some(
                    crate::context::now_ms().saturating_add(self.lifetime.as_millis() as u64),
                ),
            };
            if let Err(error) = cache
                .remember_upload(&picture.blob.sha256, &self.account, handle)
                .await
            {
                tracing::warn!(message = "An upload could not be remembered; the picture will be uploaded again next time.", account = %self.account, %error);
            }
        }
        Ok(id)
    }

    /// Counts one upload asked for, with its outcome.
    fn count(&self, kind: MediaKind, outcome: &'static str) {
        metrics::counter!(
            crate::metrics::MEDIA_UPLOADS,
            "platform" => self.platform.as_str(),
            "kind" => kind.as_str(),
            "outcome" => outcome
        )
        .increment(1);
    }
}

/// The type of a cached file, from its first bytes.
async fn file_type(blob: &Blob) -> Option<FileType> {
    let mut file = tokio::fs::File::open(&blob.path).await.ok()?;
    let mut head = Vec::with_capacity(SNIFF_LEN);
    (&mut file)
        .take(SNIFF_LEN as u64)
        .read_to_end(&mut head)
        .await
        .ok()?;
    sniff(&head)
}

/// `outbound` as text, each picture shown as `show` decides (`None`: left out, it follows as
/// a picture of its own). A message without pictures is its `text` field.
pub fn text_with(
    outbound: &Outbound,
    pictures: &[PreparedPicture],
    show: impl Fn(&PreparedPicture) -> Option<String>,
) -> String {
    if pictures.is_empty() {
        return outbound.text.clone();
    }
    let mut text = String::with_capacity(outbound.text.len());
    for (index, segment) in outbound.segments.iter().enumerate() {
        match pictures.iter().find(|picture| picture.index == index) {
            Some(picture) => {
                if let Some(shown) = show(picture) {
                    text.push_str(&shown);
                }
            }
            None => segment.render_text(&mut text),
        }
    }
    text
}

/// How a text-only part shows a picture that is not carried as a file: the source URL in
/// `passthrough` (`[图片] <url>`, as before pictures were fetched), else the placeholder.
pub fn shown_as_text(picture: &PreparedPicture) -> String {
    match &picture.carry {
        Carry::SourceUrl(url) => format!("[图片] {url}"),
        _ => picture.placeholder.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// A native context over a real cache in `dir`.
    async fn native_in(dir: &std::path::Path) -> MediaContext {
        let cache = super::super::cache::MediaCache::open(
            dir,
            super::super::cache::CacheLimits {
                max_bytes: 1 << 20,
                ttl: Duration::from_secs(3600),
            },
        )
        .await
        .expect("cache");
        let guard = super::super::guard::AddressGuard::new(Vec::new());
        let fetcher = super::super::fetch::Fetcher::new(
            super::super::fetch::FetchLimits::default(),
            guard.clone(),
        )
        .expect("fetcher");
        MediaContext {
            guard,
            mode: MediaMode::Native,
            service: Some(Arc::new(super::super::service::MediaService::new(
                cache,
                fetcher,
                Duration::from_secs(5),
            ))),
            links: None,
            skip_source_urls: true,
        }
    }

    #[tokio::test]
    async fn a_picture_is_uploaded_once_per_account_and_a_failure_is_not_remembered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let media = native_in(dir.path()).await;
        let cache = media.service.as_ref().expect("service").cache().clone();
        let blob = cache
            .put_bytes(b"\x89PNG\r\n\x1a\nbytes")
            .await
            .expect("put");
        let picture = Picture {
            blob,
            file_type: FileType::Png,
        };
        let calls = AtomicUsize::new(0);
        let upload = |answer: Result<&'static str, &'static str>| {
            let calls = &calls;
            move |bytes: Vec<u8>| async move {
                calls.fetch_add(1, Ordering::SeqCst);
                assert!(
                    bytes.starts_with(b"\x89PNG"),
                    "the cached bytes are uploaded"
                );
                answer.map(str::to_owned).map_err(str::to_owned)
            }
        };
        let first = Uploads::new("ding", Platform::Dingtalk, Duration::from_secs(60));
        let refused: Result<String, String> = first
            .handle(&media, MediaKind::Image, &picture, upload(Err("refused")))
            .await;
        assert_eq!(refused, Err("refused".to_owned()));
        let got: Result<String, String> = first
            .handle(&media, MediaKind::Image, &picture, upload(Ok("m-1")))
            .await;
        assert_eq!(got.as_deref(), Ok("m-1"), "a failure is tried again");
        let again: Result<String, String> = first
            .handle(&media, MediaKind::Image, &picture, upload(Ok("m-2")))
            .await;
        assert_eq!(again.as_deref(), Ok("m-1"), "reused, not uploaded again");
        assert_eq!(calls.load(Ordering::SeqCst), 2);

        // Another account uploads its own copy.
        let other = Uploads::new("robot", Platform::Wecom, Duration::from_secs(60));
        let theirs: Result<String, String> = other
            .handle(&media, MediaKind::Image, &picture, upload(Ok("w-1")))
            .await;
        assert_eq!(theirs.as_deref(), Ok("w-1"));
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        // A picture that left the cache is never handed to the upload.
        let gone = Picture {
            blob: Blob {
                sha256: "ef".repeat(32),
                size: 10,
                path: dir.path().join("missing"),
            },
            file_type: FileType::Png,
        };
        let unreadable: Result<String, String> = first
            .handle(&media, MediaKind::Image, &gone, upload(Ok("never")))
            .await;
        assert!(
            unreadable
                .as_ref()
                .is_err_and(|reason| reason.contains("cannot be read")),
            "{unreadable:?}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn modes_decide_what_each_picture_becomes_without_a_service() {
        let mut outbound = Outbound::sample(Kind::Message, Platform::Qq, "g");
        outbound.segments = vec![
            Segment::text("[QQ] Ann: "),
            Segment::image(Some("https://93.184.215.14/a.png".into()), None),
            Segment::Image {
                url: Some("https://93.184.215.14/b.png".into()),
                name: None,
                sticker: false,
                flash: true,
                summary: None,
                size: None,
                media: None,
            },
        ];
        outbound.text = "[QQ] Ann: [图片] https://93.184.215.14/a.png[闪照]".into();
        let passthrough = MediaContext::default();
        let prepared = passthrough.prepare(Platform::Wechat, &outbound).await;
        assert_eq!(
            prepared.iter().map(|p| p.carry.clone()).collect::<Vec<_>>(),
            vec![
                Carry::SourceUrl("https://93.184.215.14/a.png".into()),
                Carry::Placeholder
            ]
        );
        assert_eq!(
            text_with(&outbound, &prepared, |p| Some(shown_as_text(p))),
            "[QQ] Ann: [图片] https://93.184.215.14/a.png[闪照]"
        );
        let native = MediaContext {
            mode: MediaMode::Native,
            ..MediaContext::default()
        };
        let prepared = native.prepare(Platform::Wechat, &outbound).await;
        assert!(prepared.iter().all(|p| p.carry == Carry::Placeholder));
        assert_eq!(
            text_with(&outbound, &prepared, |p| Some(shown_as_text(p))),
            "[QQ] Ann: [图片][闪照]"
        );
        assert_eq!(text_with(&outbound, &prepared, |_| None), "[QQ] Ann: ");
    }
}
