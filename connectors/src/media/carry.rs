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

/// Whether preparing a picture counts (and logs) its fallback: the send does; an upload
/// ahead of it does not, so each picture that falls back is counted once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fallbacks {
    /// Counted in `qunbridge_media_fallback_total` and logged.
    Counted,
    /// Left to the send.
    Uncounted,
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
        self.prepare_all(destination, outbound, Fallbacks::Counted)
            .await
    }

    /// Prepares the pictures of `outbound` as [`MediaContext::prepare`] does, for uploads
    /// ahead of its send: a picture that falls back is neither counted nor logged here, but
    /// when the send prepares it.
    pub async fn prepare_ahead(
        &self,
        destination: Platform,
        outbound: &Outbound,
    ) -> Vec<PreparedPicture> {
        self.prepare_all(destination, outbound, Fallbacks::Uncounted)
            .await
    }

    /// The body of [`MediaContext::prepare`].
    async fn prepare_all(
        &self,
        destination: Platform,
        outbound: &Outbound,
        fallbacks: Fallbacks,
    ) -> Vec<PreparedPicture> {
        let pictures = outbound
            .segments
            .iter()
            .enumerate()
            .filter(|(_, segment)| matches!(segment, Segment::Image { .. }))
            .map(|(index, segment)| {
                self.prepare_one(destination, outbound, index, segment, fallbacks)
            });
        join_all(pictures).await
    }

    /// Prepares the picture `segment` at `index`.
    async fn prepare_one(
        &self,
        destination: Platform,
        outbound: &Outbound,
        index: usize,
        segment: &Segment,
        fallbacks: Fallbacks,
    ) -> PreparedPicture {
        let fell_back = |kind, reason| {
            if fallbacks == Fallbacks::Counted {
                self.fell_back(destination, kind, reason);
            }
        };
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
            fell_back(kind, "not_a_picture");
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
                fell_back(kind, "no_source");
                return prepared(Carry::Placeholder);
            }
        };
        let Some(service) = &self.service else {
            fell_back(kind, "no_service");
            return prepared(Carry::Placeholder);
        };
        let blob = match service
            .blob(origin.platform.as_str(), &origin.account, &reference)
            .await
        {
            Ok((blob, _)) => blob,
            Err(failure) => {
                if fallbacks == Fallbacks::Counted {
                    tracing::info!(message = "A picture could not be had; its placeholder is sent.", account = %origin.account, reason = %failure);
                }
                fell_back(kind, failure.outcome());
                return prepared(Carry::Placeholder);
            }
        };
        match file_type(&blob).await {
            Some(file_type) if file_type.is_picture() => {
                prepared(Carry::File(Picture { blob, file_type }))
            }
            _ => {
                fell_back(kind, "bad_type");
                prepared(Carry::Placeholder)
            }
        }
    }

    /// True in the modes that fetch pictures (`native`, `link`) when the media service runs:
    /// only then is there anything to fetch or upload ahead of a send.
    pub fn fetches(&self) -> bool {
        self.service.is_some() && matches!(self.mode, MediaMode::Native | MediaMode::Link)
    }

    /// How long a destination waits for its pictures (`[media] wait`), when the media
    /// service runs.
    pub fn wait(&self) -> Option<Duration> {
        self.service.as_ref().map(|service| service.wait())
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

/// Why a picture has no upload handle for a send, besides the upload's own error; each
/// destination turns it into its own error type.
#[derive(Debug, thiserror::Error)]
pub enum NotUploaded {
    /// The cached picture was evicted, or cannot be read.
    #[error("the cached picture cannot be read: {0}")]
    Unreadable(#[from] io::Error),
    /// Its upload ahead of the send failed (counted then); the send shows the placeholder
    /// rather than trying again after its pacing token.
    #[error("its upload ahead of the send failed: {0}")]
    FailedAhead(String),
}

impl From<NotUploaded> for String {
    fn from(not_uploaded: NotUploaded) -> String {
        not_uploaded.to_string()
    }
}

impl From<NotUploaded> for crate::error::SendError {
    fn from(not_uploaded: NotUploaded) -> crate::error::SendError {
        crate::error::SendError::Permanent(not_uploaded.to_string())
    }
}

/// How long the outcome of an upload made ahead of a send waits for that send. A send that
/// never comes (its message expired, or the daemon stopped) leaves it behind this long.
const AHEAD_KEPT: Duration = Duration::from_secs(600);

/// The outcome of an upload made ahead of its send ([`Uploads::ahead`]), kept for the send.
#[derive(Debug)]
struct Ahead {
    /// The handle, or why the upload failed.
    outcome: Result<String, String>,
    /// How many sends are still to take it (one per preparation).
    sends: usize,
    /// When it was made, for [`AHEAD_KEPT`].
    at: std::time::Instant,
}

/// The uploads of one destination account: a picture is uploaded once per account and its
/// handle (a v12 `file_id`, a DingTalk or WeCom media id) reused until it expires or the
/// picture leaves the cache. Uploads of one account run one at a time, so two groups sending
/// the same picture at once still upload it once. Every upload asked for is counted here,
/// and only here, in `qunbridge_media_upload_total{platform,kind,outcome}`: once when it is
/// made ahead of its send ([`Uploads::ahead`]), which then takes its outcome uncounted.
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
    /// Outcomes of uploads made ahead of their sends, by picture hash, until the sends
    /// take them.
    ahead: std::sync::Mutex<std::collections::HashMap<String, Ahead>>,
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
            ahead: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// Uploads `picture` (a `kind`, for metrics) ahead of the send that will carry it, as
    /// [`Uploads::handle`] would, and keeps the outcome for that send: it then takes the
    /// handle without asking again, or, when this upload failed for good (`lasting`), shows
    /// the placeholder. A failure that is not lasting (a platform asking to slow down) is
    /// not kept: the send uploads again, and its pause holds the destination as before.
    pub async fn ahead<E, F, Fut>(
        &self,
        media: &MediaContext,
        kind: MediaKind,
        picture: &Picture,
        upload: F,
        lasting: impl Fn(&E) -> bool,
    ) where
        E: From<NotUploaded> + std::fmt::Display,
        F: FnOnce(Vec<u8>) -> Fut,
        Fut: std::future::Future<Output = Result<String, E>>,
    {
        let _one_at_a_time = self.lock.lock().await;
        let outcome = match self.look_up_or_upload(media, kind, picture, upload).await {
            Ok(id) => Ok(id),
            Err(error) if lasting(&error) => Err(error.to_string()),
            Err(_) => return,
        };
        let now = std::time::Instant::now();
        let mut ahead = self
            .ahead
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        ahead.retain(|_, kept| now.duration_since(kept.at) < AHEAD_KEPT);
        let kept = ahead
            .entry(picture.blob.sha256.clone())
            .or_insert_with(|| Ahead {
                outcome: outcome.clone(),
                sends: 0,
                at: now,
            });
        kept.outcome = outcome;
        kept.sends += 1;
        kept.at = now;
    }

    /// The outcome of an upload of the picture `sha256` made ahead of this send, if any.
    fn take_ahead(&self, sha256: &str) -> Option<Result<String, String>> {
        let mut ahead = self
            .ahead
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let kept = ahead.get_mut(sha256)?;
        let outcome = kept.outcome.clone();
        kept.sends = kept.sends.saturating_sub(1);
        if kept.sends == 0 {
            ahead.remove(sha256);
        }
        Some(outcome)
    }

    /// The handle of `picture` (a `kind`, for metrics) on this account: as uploaded ahead of
    /// this send ([`Uploads::ahead`]), else remembered from an earlier upload (`reused`), else
    /// from `upload` given the bytes (`ok` or `failed`), then remembered for the platform's
    /// lifetime.
    ///
    /// # Errors
    /// The picture could not be read, or its upload ahead of the send failed
    /// ([`NotUploaded`], turned into `E`), or `upload` failed (its error, as it was: a
    /// destination's pause on throttling still works).
    pub async fn handle<E, F, Fut>(
        &self,
        media: &MediaContext,
        kind: MediaKind,
        picture: &Picture,
        upload: F,
    ) -> Result<String, E>
    where
        E: From<NotUploaded>,
        F: FnOnce(Vec<u8>) -> Fut,
        Fut: std::future::Future<Output = Result<String, E>>,
    {
        let _one_at_a_time = self.lock.lock().await;
        match self.take_ahead(&picture.blob.sha256) {
            Some(Ok(id)) => Ok(id),
            Some(Err(reason)) => Err(E::from(NotUploaded::FailedAhead(reason))),
            None => self.look_up_or_upload(media, kind, picture, upload).await,
        }
    }

    /// The body of [`Uploads::handle`] and [`Uploads::ahead`], under the lock: the
    /// remembered handle (`reused`), else `upload` (`ok` or `failed`), remembered.
    async fn look_up_or_upload<E, F, Fut>(
        &self,
        media: &MediaContext,
        kind: MediaKind,
        picture: &Picture,
        upload: F,
    ) -> Result<String, E>
    where
        E: From<NotUploaded>,
        F: FnOnce(Vec<u8>) -> Fut,
        Fut: std::future::Future<Output = Result<String, E>>,
    {
        let cache = media.service.as_ref().map(|service| service.cache());
        if let Some(cache) = cache {
            if let Some(handle) = cache.upload(&picture.blob.sha256, &self.account).await {
                self.count(kind, "reused");
                return Ok(handle.id);
            }
        }
        let uploaded = match picture.bytes().await {
            Ok(bytes) => upload(bytes).await,
            Err(error) => Err(E::from(NotUploaded::Unreadable(error))),
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
    async fn an_upload_ahead_of_the_send_is_what_the_send_takes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let media = native_in(dir.path()).await;
        let cache = media.service.as_ref().expect("service").cache().clone();
        let picture = |blob| Picture {
            blob,
            file_type: FileType::Png,
        };
        let uploaded = picture(cache.put_bytes(b"\x89PNG\r\n\x1a\none").await.expect("put"));
        let refused = picture(cache.put_bytes(b"\x89PNG\r\n\x1a\ntwo").await.expect("put"));
        let slowed = picture(
            cache
                .put_bytes(b"\x89PNG\r\n\x1a\nthree")
                .await
                .expect("put"),
        );
        let calls = AtomicUsize::new(0);
        let upload = |answer: Result<&'static str, &'static str>| {
            let calls = &calls;
            move |_: Vec<u8>| async move {
                calls.fetch_add(1, Ordering::SeqCst);
                answer.map(str::to_owned).map_err(str::to_owned)
            }
        };
        let lasting = |reason: &String| reason != "slow down";
        let uploads = Uploads::new("wx", Platform::Wechat, Duration::from_secs(60));
        uploads
            .ahead(
                &media,
                MediaKind::Image,
                &uploaded,
                upload(Ok("f-1")),
                lasting,
            )
            .await;
        uploads
            .ahead(
                &media,
                MediaKind::Image,
                &refused,
                upload(Err("too big")),
                lasting,
            )
            .await;
        uploads
            .ahead(
                &media,
                MediaKind::Image,
                &slowed,
                upload(Err("slow down")),
                lasting,
            )
            .await;
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        // The sends: the handle uploaded ahead, without asking again; the placeholder for the
        // upload that failed for good; a new upload for the one the platform slowed down.
        let got: Result<String, String> = uploads
            .handle(&media, MediaKind::Image, &uploaded, upload(Ok("never")))
            .await;
        assert_eq!(got.as_deref(), Ok("f-1"));
        let failed: Result<String, String> = uploads
            .handle(&media, MediaKind::Image, &refused, upload(Ok("never")))
            .await;
        assert!(
            failed
                .as_ref()
                .is_err_and(|reason| reason.contains("ahead") && reason.contains("too big")),
            "{failed:?}"
        );
        let retried: Result<String, String> = uploads
            .handle(&media, MediaKind::Image, &slowed, upload(Ok("f-3")))
            .await;
        assert_eq!(retried.as_deref(), Ok("f-3"));
        assert_eq!(
            calls.load(Ordering::SeqCst),
            4,
            "one upload more: the slowed one"
        );

        // A later send of the refused picture (a retry) tries again; the uploaded one is
        // remembered in the cache as before.
        let later: Result<String, String> = uploads
            .handle(&media, MediaKind::Image, &refused, upload(Ok("f-2")))
            .await;
        assert_eq!(later.as_deref(), Ok("f-2"));
        let reused: Result<String, String> = uploads
            .handle(&media, MediaKind::Image, &uploaded, upload(Ok("never")))
            .await;
        assert_eq!(reused.as_deref(), Ok("f-1"));
        assert_eq!(calls.load(Ordering::SeqCst), 5);
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
