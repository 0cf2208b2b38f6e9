//! The media service: turns the media reference of a picture into a file in the on-disk
//! cache, fetched at most once per source key however many destinations ask for it, and
//! within `[media] wait`. It asks the account that saw the picture for what only its
//! platform can give (a fresh QQ URL through `get_image`, a WeChat file's bytes through
//! `get_file`, a DingTalk download URL) through that account's [`MediaSource`]; plain URLs
//! go straight to the bounded fetcher, behind the address guard.
//!
//! Destinations then upload the blob the way their platform takes pictures; whatever fails
//! here makes them send the placeholder, never the source platform's URL.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use super::cache::{Blob, BlobWriter, Fetched, MediaCache};
use super::fetch::{record_fetch, ChunkSink, FetchError, Fetcher};
use super::sniff::sniff;
use super::{Locator, MediaRef};

/// What the platform of the account that saw a picture gives for its locator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// A URL to fetch (a refreshed QQ URL, a DingTalk download URL).
    Url(String),
    /// The bytes themselves (a OneBot v12 `get_file` with `type: "data"`).
    Bytes(Vec<u8>),
}

/// An account's way to resolve the locators of the pictures it saw, implemented by its
/// connector (the account's session, or its platform API).
pub trait MediaSource: Send + Sync {
    /// A fresh URL or the bytes of `locator`; the error says why not (logged, counted).
    fn resolve<'a>(&'a self, locator: &'a Locator) -> BoxFuture<'a, Result<Resolved, String>>;
}

/// Why a picture could not be had; its destination sends the placeholder.
#[derive(Debug, Clone, thiserror::Error)]
pub enum MediaFailure {
    /// The fetch failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The locator needs the account that saw it, and that account has no source here (it
    /// runs in another process, or is not configured any more).
    #[error("the account that saw it cannot be asked here")]
    NoSource,
    /// The account's platform did not resolve it.
    #[error("the platform did not give the picture: {0}")]
    Source(String),
    /// The bytes the platform gave are larger than `max_image_bytes`.
    #[error("{size} bytes, more than the {limit} allowed")]
    TooLarge {
        /// Bytes given.
        size: u64,
        /// `max_image_bytes`.
        limit: u64,
    },
    /// The bytes the platform gave are not a known file type.
    #[error("not a known picture type")]
    BadType,
    /// The cache could not keep it.
    #[error("media cache: {0}")]
    Cache(String),
    /// A locator this version does not know.
    #[error("unknown locator")]
    UnknownLocator,
    /// Not had within `[media] wait`.
    #[error("not within {0:?}")]
    Waited(Duration),
}

impl MediaFailure {
    /// True for a failure that asking again soon would only repeat (the picture is too
    /// large, not a picture, or at a refused address): remembered for [`FAILURE_MEMORY`]
    /// rather than [`RECENT_FAILURE_MEMORY`].
    fn is_lasting(&self) -> bool {
        matches!(
            self,
            MediaFailure::TooLarge { .. }
                | MediaFailure::BadType
                | MediaFailure::UnknownLocator
                | MediaFailure::Fetch(
                    FetchError::TooLarge { .. }
                        | FetchError::BadType
                        | FetchError::Blocked(_)
                        | FetchError::TooManyRedirects(_)
                )
        )
    }

    /// The `outcome` label of `qunbridge_media_fetch_total`.
    pub fn outcome(&self) -> &'static str {
        match self {
            MediaFailure::Fetch(error) => error.outcome(),
            MediaFailure::NoSource | MediaFailure::Source(_) => "source_error",
            MediaFailure::TooLarge { .. } => "too_large",
            MediaFailure::BadType => "bad_type",
            MediaFailure::Cache(_) => "cache_error",
            MediaFailure::UnknownLocator => "unknown",
            MediaFailure::Waited(_) => "timeout",
        }
    }
}

/// How long a lasting failure of a source is remembered (see [`MediaFailure::is_lasting`]).
pub const FAILURE_MEMORY: Duration = Duration::from_secs(60);
/// How long any other failure (a timeout, a network or HTTP error) is remembered: long
/// enough that the destinations of one message, and a destination that had the picture
/// fetched before taking its pacing token, do not try the same source again.
pub const RECENT_FAILURE_MEMORY: Duration = Duration::from_secs(15);
/// Most remembered failures; beyond it the oldest are forgotten.
const MAX_FAILURES: usize = 1024;

/// How long `failure` is remembered.
fn memory_of(failure: &MediaFailure) -> Duration {
    if failure.is_lasting() {
        FAILURE_MEMORY
    } else {
        RECENT_FAILURE_MEMORY
    }
}

/// The cache's writer takes a fetch's body chunk by chunk.
impl ChunkSink for BlobWriter {
    async fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        BlobWriter::write(self, chunk).await
    }
}

/// The media service of a process, shared by every connector.
pub struct MediaService {
    /// Where blobs are kept.
    cache: MediaCache,
    /// How URLs are fetched.
    fetcher: Fetcher,
    /// Each account's source, by account id.
    sources: RwLock<HashMap<String, Arc<dyn MediaSource>>>,
    /// How long a destination waits for a picture.
    wait: Duration,
    /// Sources that failed lastingly, by source key, with when and why.
    failures: std::sync::Mutex<HashMap<String, (Instant, MediaFailure)>>,
}

impl MediaService {
    /// A service over `cache` and `fetcher`, whose callers wait at most `wait`.
    pub fn new(cache: MediaCache, fetcher: Fetcher, wait: Duration) -> MediaService {
        MediaService {
            cache,
            fetcher,
            sources: RwLock::new(HashMap::new()),
            wait,
            failures: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The largest picture fetched (`[media] max_image_bytes`).
    pub fn max_bytes(&self) -> u64 {
        self.fetcher.limits().max_bytes
    }

    /// How long a destination waits for a picture (`[media] wait`).
    pub fn wait(&self) -> Duration {
        self.wait
    }

    /// The cache, for destinations that remember upload handles.
    pub fn cache(&self) -> &MediaCache {
        &self.cache
    }

    /// Makes `source` answer for the pictures `account` saw (replacing an earlier one).
    pub fn register(&self, account: &str, source: Arc<dyn MediaSource>) {
        self.sources
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(account.to_owned(), source);
    }

    /// Forgets `account`'s source (the account stopped).
    pub fn unregister(&self, account: &str) {
        self.sources
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(account);
    }

    /// The blob of `media`, a picture seen by `account` on `platform`: from the cache, from
    /// a fetch already under way for the same source, or fetched now; within `[media] wait`.
    /// Counted in `qunbridge_media_fetch_total{platform,kind,outcome}`.
    ///
    /// # Errors
    /// [`MediaFailure`]: the destination sends the placeholder.
    pub async fn blob(
        &self,
        platform: &str,
        account: &str,
        media: &MediaRef,
    ) -> Result<(Blob, Fetched), MediaFailure> {
        let started = Instant::now();
        if let Some(failure) = self.remembered_failure(&media.key, started) {
            record_fetch(platform, media.kind, failure.outcome(), 0.0);
            return Err(failure);
        }
        let source = self
            .sources
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(account)
            .cloned();
        let cache = self.cache.clone();
        let fetcher = self.fetcher.clone();
        let locator = media.locator.clone();
        // Set when this call's fetch had to refresh an expired link first.
        let refreshed = Arc::new(AtomicBool::new(false));
        let refreshed_by_fetch = refreshed.clone();
        let make = move || async move {
            fetch(
                &cache,
                &fetcher,
                source.as_deref(),
                &locator,
                &refreshed_by_fetch,
            )
            .await
        };
        let outcome = match tokio::time::timeout(
            self.wait,
            self.cache.get_or_fetch(&media.key, make),
        )
        .await
        {
            Ok(Ok(found)) => Ok(found),
            Ok(Err(failure)) => Err((*failure).clone()),
            Err(_) => Err(MediaFailure::Waited(self.wait)),
        };
        let label = match &outcome {
            Ok((_, Fetched::CacheHit)) => "cache_hit",
            Ok((_, Fetched::Joined)) => "joined",
            Ok((_, Fetched::Fetched)) if refreshed.load(Ordering::Relaxed) => "refreshed",
            Ok((_, Fetched::Fetched)) => "ok",
            Err(failure) => failure.outcome(),
        };
        record_fetch(platform, media.kind, label, started.elapsed().as_secs_f64());
        if let Err(failure) = &outcome {
            self.remember_failure(&media.key, started, failure);
        }
        outcome
    }

    /// The failure remembered for `key`, if it is recent enough for its kind.
    fn remembered_failure(&self, key: &str, now: Instant) -> Option<MediaFailure> {
        let failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        let (at, failure) = failures.get(key)?;
        (now.duration_since(*at) < memory_of(failure)).then(|| failure.clone())
    }

    /// Remembers a lasting failure of `key`, forgetting stale ones (and the oldest when full).
    fn remember_failure(&self, key: &str, now: Instant, failure: &MediaFailure) {
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        failures.retain(|_, (at, failure)| now.duration_since(*at) < memory_of(failure));
        if failures.len() >= MAX_FAILURES {
            if let Some(oldest) = failures
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(key, _)| key.clone())
            {
                failures.remove(&oldest);
            }
        }
        failures.insert(key.to_owned(), (now, failure.clone()));
    }
}

/// Fetches what `locator` names into the cache, asking `source` where the platform must
/// help: an expired (or absent) QQ URL is refreshed once through `get_image` (then
/// `refreshed` is set, for the `refreshed` outcome).
async fn fetch(
    cache: &MediaCache,
    fetcher: &Fetcher,
    source: Option<&dyn MediaSource>,
    locator: &Locator,
    refreshed: &AtomicBool,
) -> Result<Blob, MediaFailure> {
    match locator {
        Locator::Url { url } => fetch_url(cache, fetcher, url).await,
        Locator::Onebot11Image { url: Some(url), .. } => {
            match fetch_url(cache, fetcher, url).await {
                Err(MediaFailure::Fetch(FetchError::Expired(_)))
                | Err(MediaFailure::Fetch(FetchError::HttpStatus(400 | 403 | 404))) => {
                    let fresh = resolve_and_fetch(cache, fetcher, source, locator).await;
                    refreshed.store(fresh.is_ok(), Ordering::Relaxed);
                    fresh
                }
                other => other,
            }
        }
        Locator::Onebot11Image { url: None, .. }
        | Locator::Onebot12File { .. }
        | Locator::DingtalkDownload { .. } => {
            resolve_and_fetch(cache, fetcher, source, locator).await
        }
        Locator::Unknown => Err(MediaFailure::UnknownLocator),
    }
}

/// Asks the source for `locator`, then fetches the URL it gives or keeps the bytes.
async fn resolve_and_fetch(
    cache: &MediaCache,
    fetcher: &Fetcher,
    source: Option<&dyn MediaSource>,
    locator: &Locator,
) -> Result<Blob, MediaFailure> {
    let source = source.ok_or(MediaFailure::NoSource)?;
    match source
        .resolve(locator)
        .await
        .map_err(MediaFailure::Source)?
    {
        Resolved::Url(url) => fetch_url(cache, fetcher, &url).await,
        Resolved::Bytes(bytes) => {
            let limit = fetcher.limits().max_bytes;
            if bytes.len() as u64 > limit {
                return Err(MediaFailure::TooLarge {
                    size: bytes.len() as u64,
                    limit,
                });
            }
            if sniff(&bytes).is_none() {
                return Err(MediaFailure::BadType);
            }
            cache
                .put_bytes(&bytes)
                .await
                .map_err(|error| MediaFailure::Cache(error.to_string()))
        }
    }
}

/// Fetches `url` into a new blob; a failed fetch leaves nothing in the cache.
async fn fetch_url(cache: &MediaCache, fetcher: &Fetcher, url: &str) -> Result<Blob, MediaFailure> {
    let mut writer = cache
        .writer()
        .await
        .map_err(|error| MediaFailure::Cache(error.to_string()))?;
    fetcher.fetch(url, &mut writer).await?;
    writer
        .finish()
        .await
        .map_err(|error| MediaFailure::Cache(error.to_string()))
}
