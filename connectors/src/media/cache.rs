//! The content-addressed on-disk media cache under `state_dir/media/`: bytes fetched once
//! are kept by their SHA-256, so the same picture seen again (or sent to several
//! destinations) is neither fetched nor stored twice, and survives a restart.
//!
//! # Layout
//! - `blobs/<first two hex digits>/<sha256 hex>`: the bytes, named by their own digest. A
//!   blob whose content does not match its name is removed when the cache is opened.
//! - `tmp/`: partial writes (streaming downloads, index entries being written). Everything in
//!   it is removed when the cache is opened.
//! - `index/sources/<sha256 hex of the source key>`: JSON naming the blob a source key
//!   (`qq:<account>:<file>`, `url:<url>`, ...) was fetched into, so a remembered picture is
//!   found again without fetching it.
//! - `index/uploads/<blob sha256>/<sha256 hex of the account>`: JSON with the upload handle a
//!   destination account gave for that blob (a WeCom media id, a v12 file id, ...), so the
//!   same bytes are not uploaded to the same account again while the handle lasts.
//!
//! Every file outside `tmp/` is written to `tmp/` first and renamed into place, so a
//! `kill -9` never leaves a half-written entry; what a power loss could leave behind (a
//! truncated blob, an empty entry) is caught by the digest check at open or read as a miss.
//!
//! # Bounds
//! The blobs' total size stays at or under [`CacheLimits::max_bytes`] (least recently used go
//! first; a use is an insert or a [`MediaCache::lookup`] hit), and blobs unused for longer
//! than [`CacheLimits::ttl`] are removed. The last use of each blob is its file's
//! modification time, so it survives restarts. Index entries whose blob is gone are dropped
//! when read and by [`MediaCache::sweep`]; upload handles are removed with their blob.
//!
//! # Single flight
//! [`MediaCache::get_or_fetch`] runs one fetch per source key at a time: concurrent callers
//! share it, a failure reaches them all and is not cached.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex as StdMutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::{BoxFuture, FutureExt, Shared, WeakShared};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;
use tracing::{debug, warn};

use crate::metrics::{MEDIA_CACHE_BYTES, MEDIA_CACHE_EVICTIONS};

/// Directory of the blobs, under the cache directory.
const BLOBS_DIR: &str = "blobs";
/// Directory of partial writes, under the cache directory.
const TMP_DIR: &str = "tmp";
/// Directory of the persistent indexes, under the cache directory.
const INDEX_DIR: &str = "index";
/// Directory of the source-key entries, under the index directory.
const SOURCES_DIR: &str = "sources";
/// Directory of the upload-handle entries, under the index directory.
const UPLOADS_DIR: &str = "uploads";
/// Read size when hashing a blob at open: large blobs are never read whole.
const HASH_BUFFER_BYTES: usize = 64 * 1024;
/// An index entry larger than this is not one the cache wrote: it is treated as broken.
const MAX_INDEX_ENTRY_BYTES: u64 = 1024 * 1024;
/// How often an insert also runs the full [`MediaCache::sweep`] (index clean-up included).
const FULL_SWEEP_EVERY: Duration = Duration::from_secs(60 * 60);

/// How much the cache may hold, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    /// The most bytes all blobs together may take on disk; a single blob larger than this is
    /// refused. Default 1 GiB.
    pub max_bytes: u64,
    /// How long a blob is kept without being used (inserted again or found by a lookup).
    /// Default 24 h.
    pub ttl: Duration,
}

impl Default for CacheLimits {
    fn default() -> CacheLimits {
        CacheLimits {
            max_bytes: 1024 * 1024 * 1024,
            ttl: Duration::from_secs(24 * 60 * 60),
        }
    }
}

/// Where the cache reads the time, in milliseconds since the Unix epoch: the system clock in
/// the daemon, a [`ManualClock`] in tests so that expiry needs no sleeping.
pub trait Clock: Send + Sync + fmt::Debug {
    /// Now, in milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to, for tests of expiry.
#[derive(Debug, Default)]
pub struct ManualClock {
    /// The time it shows, in milliseconds since the Unix epoch.
    now_ms: AtomicU64,
}

impl ManualClock {
    /// A clock showing `now_ms`.
    pub fn new(now_ms: u64) -> ManualClock {
        ManualClock {
            now_ms: AtomicU64::new(now_ms),
        }
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by_ms = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
        let _ = self
            .now_ms
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| {
                Some(now.saturating_add(by_ms))
            });
    }

    /// Sets the clock to `now_ms`.
    pub fn set_ms(&self, now_ms: u64) {
        self.now_ms.store(now_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::SeqCst)
    }
}

/// Bytes held by the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    /// The SHA-256 of the bytes, lowercase hex: the blob's name and identity.
    pub sha256: String,
    /// The number of bytes.
    pub size: u64,
    /// The file holding the bytes, to read or upload from. It may be evicted later, so read
    /// it soon; a missing file means "fetch again".
    pub path: PathBuf,
}

/// What a destination account gave back for an upload of a blob, to reuse instead of
/// uploading the same bytes again (a WeCom media id, a WeChat v12 file id, a DingTalk media
/// id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadHandle {
    /// The platform's id of the uploaded media.
    pub id: String,
    /// When the platform forgets it, in milliseconds since the Unix epoch (a WeCom media id
    /// lasts three days); `None` when it does not expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
}

impl UploadHandle {
    /// Whether the handle can no longer be used at `now_ms`.
    pub fn is_expired_at(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|expires| now_ms >= expires)
    }
}

/// How [`MediaCache::get_or_fetch`] got its blob, for the caller's `cache_hit` counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetched {
    /// The source key was in the cache: nothing was fetched.
    CacheHit,
    /// This call ran the fetch.
    Fetched,
    /// Another caller was already fetching the same source key; this call shared its result.
    Joined,
}

/// Counters of the cache, for status pages and tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// How many blobs the cache holds.
    pub blobs: usize,
    /// Their total size in bytes.
    pub bytes: u64,
    /// Blobs removed (since open) to stay under the size cap, least recently used first.
    pub evicted_for_size: u64,
    /// Blobs removed (since open) because they were unused for longer than the ttl.
    pub evicted_for_ttl: u64,
    /// Blobs removed at open because their content did not match their name.
    pub evicted_corrupt: u64,
}

/// Why the media cache could not do something.
#[derive(Debug, thiserror::Error)]
pub enum MediaCacheError {
    /// A file operation failed.
    #[error("media cache: cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done (`create`, `rename`, `read`, ...).
        action: &'static str,
        /// The file or directory it was done to.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// The media is larger than the whole cache may hold, so it is refused rather than
    /// evicting everything else.
    #[error("media of {size} bytes or more does not fit a cache of {max_bytes} bytes")]
    TooLarge {
        /// Bytes of the media (when refused mid-write: the bytes it would have reached).
        size: u64,
        /// The cache's cap.
        max_bytes: u64,
    },
    /// A write to the blob failed or was cancelled, so its content is unknown.
    #[error("a write to this blob failed or was cancelled; it cannot be stored")]
    IncompleteWrite,
    /// A blob name that is not a lowercase SHA-256 hex digest.
    #[error("not a sha256 hex digest: {0:?}")]
    NotADigest(String),
    /// An index entry could not be encoded (a bug, reported rather than panicking).
    #[error("an index entry could not be encoded: {0}")]
    Encode(#[from] serde_json::Error),
    /// A blocking task of the cache (hashing at open) stopped before it finished.
    #[error("a blocking task of the media cache stopped: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// The content-addressed on-disk media cache. Cloning is cheap and clones share everything.
#[derive(Clone)]
pub struct MediaCache {
    /// What the clones share.
    inner: Arc<Inner>,
}

impl fmt::Debug for MediaCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MediaCache")
            .field("dir", &self.inner.dir)
            .field("limits", &self.inner.limits)
            .finish_non_exhaustive()
    }
}

/// What all clones of a [`MediaCache`] share.
struct Inner {
    /// The cache directory (`state_dir/media/`).
    dir: PathBuf,
    /// Size cap and ttl.
    limits: CacheLimits,
    /// Where "now" comes from.
    clock: Arc<dyn Clock>,
    /// The accounting of blobs; held across the file operations that add or remove blobs so
    /// that the accounting and the directory agree.
    state: Mutex<State>,
    /// Fetches under way, by source key (single flight). Never held across an await.
    flights: StdMutex<HashMap<String, Flight>>,
    /// Source of [`Flight::id`].
    next_flight_id: AtomicU64,
}

/// The in-memory accounting: one small entry per blob.
#[derive(Default)]
struct State {
    /// Every blob, by digest.
    blobs: HashMap<String, BlobEntry>,
    /// Digests by use order (oldest first), for least-recently-used eviction.
    by_use: BTreeMap<u64, String>,
    /// The next use order number; strictly increasing, so ties of the clock cannot make a
    /// blob just inserted look older than one inserted before.
    next_use: u64,
    /// Sum of the blob sizes.
    total_bytes: u64,
    /// Blobs removed to stay under the cap.
    evicted_for_size: u64,
    /// Blobs removed for being unused longer than the ttl.
    evicted_for_ttl: u64,
    /// Blobs removed at open for not matching their name.
    evicted_corrupt: u64,
    /// When the last full sweep ran, in milliseconds since the epoch.
    last_full_sweep_ms: u64,
}

/// The accounting of one blob.
struct BlobEntry {
    /// Its size in bytes.
    size: u64,
    /// When it was last used (inserted or found), for the ttl.
    last_use_ms: u64,
    /// Its key in [`State::by_use`].
    use_order: u64,
}

/// Why a blob was removed: the `reason` label of [`MEDIA_CACHE_EVICTIONS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Eviction {
    /// To stay under the size cap.
    Size,
    /// Unused for longer than the ttl.
    Ttl,
    /// Content did not match its name.
    Corrupt,
}

impl Eviction {
    /// The metric label.
    fn as_str(self) -> &'static str {
        match self {
            Eviction::Size => "size",
            Eviction::Ttl => "ttl",
            Eviction::Corrupt => "corrupt",
        }
    }
}

impl State {
    /// Records a new blob used at `now_ms`.
    fn insert(&mut self, sha256: &str, size: u64, now_ms: u64) {
        if self.touch(sha256, now_ms) {
            return;
        }
        let use_order = self.take_use_order();
        self.by_use.insert(use_order, sha256.to_owned());
        self.blobs.insert(
            sha256.to_owned(),
            BlobEntry {
                size,
                last_use_ms: now_ms,
                use_order,
            },
        );
        self.total_bytes = self.total_bytes.saturating_add(size);
        self.publish();
    }

    /// Records a use of a blob at `now_ms`; false when there is no such blob.
    fn touch(&mut self, sha256: &str, now_ms: u64) -> bool {
        let use_order = self.take_use_order();
        let Some(entry) = self.blobs.get_mut(sha256) else {
            return false;
        };
        self.by_use.remove(&entry.use_order);
        entry.use_order = use_order;
        entry.last_use_ms = entry.last_use_ms.max(now_ms);
        self.by_use.insert(use_order, sha256.to_owned());
        true
    }

    /// Forgets a blob; its entry, when there was one.
    fn remove(&mut self, sha256: &str) -> Option<BlobEntry> {
        let entry = self.blobs.remove(sha256)?;
        self.by_use.remove(&entry.use_order);
        self.total_bytes = self.total_bytes.saturating_sub(entry.size);
        self.publish();
        Some(entry)
    }

    /// The digest of the least recently used blob.
    fn least_recently_used(&self) -> Option<String> {
        self.by_use.values().next().cloned()
    }

    /// A fresh use order number.
    fn take_use_order(&mut self) -> u64 {
        let order = self.next_use;
        self.next_use = self.next_use.saturating_add(1);
        order
    }

    /// Counts a removal.
    fn count(&mut self, reason: Eviction) {
        let counter = match reason {
            Eviction::Size => &mut self.evicted_for_size,
            Eviction::Ttl => &mut self.evicted_for_ttl,
            Eviction::Corrupt => &mut self.evicted_corrupt,
        };
        *counter = counter.saturating_add(1);
        metrics::counter!(MEDIA_CACHE_EVICTIONS, "reason" => reason.as_str()).increment(1);
    }

    /// Sets the bytes gauge.
    fn publish(&self) {
        metrics::gauge!(MEDIA_CACHE_BYTES).set(self.total_bytes as f64);
    }
}

/// A fetch under way in [`MediaCache::get_or_fetch`].
struct Flight {
    /// Tells this flight from a later one for the same key.
    id: u64,
    /// A [`WeakShared`] of the flight's future; typed by the caller's error type, hence
    /// `Any`. Weak, so a flight every caller gave up on is dropped rather than kept here.
    future: Box<dyn Any + Send + Sync>,
}

/// What a flight yields: the blob and whether it was found in the cache after all.
type FlightOutput<E> = Result<(Blob, bool), Arc<E>>;
/// The future of a flight, shared by every caller of the same key.
type SharedFlight<E> = Shared<BoxFuture<'static, FlightOutput<E>>>;

/// Removes a flight's entry when its future ends or every caller dropped it.
struct FlightGuard {
    /// The cache of the flight.
    inner: Arc<Inner>,
    /// The source key.
    key: String,
    /// Which flight of that key.
    id: u64,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        let mut flights = lock_flights(&self.inner.flights);
        if flights
            .get(&self.key)
            .is_some_and(|flight| flight.id == self.id)
        {
            flights.remove(&self.key);
        }
    }
}

/// Locks the flights map; a panic elsewhere while it was held leaves nothing half-done in
/// it, so a poisoned lock is used as is.
fn lock_flights(
    flights: &StdMutex<HashMap<String, Flight>>,
) -> MutexGuard<'_, HashMap<String, Flight>> {
    flights.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The source-key index entry on disk.
#[derive(Serialize, Deserialize)]
struct SourceEntry {
    /// The source key (checked on read; the file name is its digest).
    key: String,
    /// The blob it was fetched into.
    sha256: String,
}

/// The upload-handle index entry on disk.
#[derive(Serialize, Deserialize)]
struct UploadEntry {
    /// The destination account (checked on read; the file name is its digest).
    account: String,
    /// What the account gave back.
    handle: UploadHandle,
}

/// The result of reading an index entry.
enum EntryRead<T> {
    /// There is none (or it could not be read this time).
    Missing,
    /// There is one, but not one the cache wrote: to be removed.
    Broken,
    /// The entry.
    Found(T),
}

/// What the scan at open found.
struct Scan {
    /// Blobs whose content matches their name: digest, size, last use (mtime) in ms.
    blobs: Vec<(String, u64, u64)>,
    /// How many blobs were removed for not matching their name.
    corrupt: u64,
}

impl MediaCache {
    /// Opens (creating it if needed) the cache in `dir` with the system clock: removes
    /// partial writes, checks every blob against its name, rebuilds the accounting and
    /// applies the limits.
    ///
    /// # Errors
    /// A directory could not be created or listed.
    pub async fn open(
        dir: impl Into<PathBuf>,
        limits: CacheLimits,
    ) -> Result<MediaCache, MediaCacheError> {
        MediaCache::open_with_clock(dir, limits, Arc::new(SystemClock)).await
    }

    /// [`MediaCache::open`] with the given clock.
    ///
    /// # Errors
    /// A directory could not be created or listed.
    pub async fn open_with_clock(
        dir: impl Into<PathBuf>,
        limits: CacheLimits,
        clock: Arc<dyn Clock>,
    ) -> Result<MediaCache, MediaCacheError> {
        let dir = dir.into();
        for sub in [
            dir.join(BLOBS_DIR),
            dir.join(TMP_DIR),
            dir.join(INDEX_DIR).join(SOURCES_DIR),
            dir.join(INDEX_DIR).join(UPLOADS_DIR),
        ] {
            tokio::fs::create_dir_all(&sub)
                .await
                .map_err(io_error("create", &sub))?;
        }
        let scan_dir = dir.clone();
        let scan = tokio::task::spawn_blocking(move || scan_at_open(&scan_dir)).await??;

        let now_ms = clock.now_ms();
        let mut state = State::default();
        let mut blobs = scan.blobs;
        blobs.sort_by_key(|&(_, _, last_use_ms)| last_use_ms);
        for (sha256, size, last_use_ms) in blobs {
            state.insert(&sha256, size, last_use_ms.min(now_ms));
        }
        for _ in 0..scan.corrupt {
            state.count(Eviction::Corrupt);
        }
        state.publish();

        let cache = MediaCache {
            inner: Arc::new(Inner {
                dir,
                limits,
                clock,
                state: Mutex::new(state),
                flights: StdMutex::new(HashMap::new()),
                next_flight_id: AtomicU64::new(0),
            }),
        };
        cache.sweep().await?;
        Ok(cache)
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The limits the cache applies.
    pub fn limits(&self) -> CacheLimits {
        self.inner.limits
    }

    /// Starts storing a blob whose bytes arrive in chunks: feed them to
    /// [`BlobWriter::write`], then call [`BlobWriter::finish`].
    ///
    /// # Errors
    /// The temporary file could not be created.
    pub async fn writer(&self) -> Result<BlobWriter, MediaCacheError> {
        let temp_path = self.inner.temp_path("part");
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp_path)
            .await
            .map_err(io_error("create", &temp_path))?;
        Ok(BlobWriter {
            cache: self.clone(),
            file: Some(file),
            temp_path: Some(temp_path),
            hasher: Sha256::new(),
            size: 0,
            interrupted: false,
            refused_at: None,
        })
    }

    /// Stores `bytes` as a blob (see [`BlobWriter::finish`]).
    ///
    /// # Errors
    /// As [`BlobWriter::finish`].
    pub async fn put_bytes(&self, bytes: &[u8]) -> Result<Blob, MediaCacheError> {
        let mut writer = self.writer().await?;
        match writer.write(bytes).await {
            Ok(()) => writer.finish().await,
            Err(error) => Err(writer.refusal().unwrap_or_else(|| MediaCacheError::Io {
                action: "write",
                path: writer.temp_path.clone().unwrap_or_default(),
                source: error,
            })),
        }
    }

    /// Remembers that `source_key` was fetched into `blob`, so that [`MediaCache::lookup`]
    /// finds it, also after a restart.
    ///
    /// # Errors
    /// The blob's digest is malformed, or the entry could not be written.
    pub async fn remember(&self, source_key: &str, blob: &Blob) -> Result<(), MediaCacheError> {
        check_digest(&blob.sha256)?;
        let entry = serde_json::to_vec(&SourceEntry {
            key: source_key.to_owned(),
            sha256: blob.sha256.clone(),
        })?;
        let path = self.inner.source_entry_path(source_key);
        self.inner.write_atomically(&path, &entry).await
    }

    /// The blob `source_key` was fetched into, when it is still cached and not expired. A
    /// hit counts as a use of the blob. Entries whose blob is gone are dropped.
    pub async fn lookup(&self, source_key: &str) -> Option<Blob> {
        let entry_path = self.inner.source_entry_path(source_key);
        let entry: SourceEntry = match read_entry(&entry_path).await {
            EntryRead::Found(entry) => entry,
            EntryRead::Missing => return None,
            EntryRead::Broken => {
                remove_quietly(&entry_path).await;
                return None;
            }
        };
        if entry.key != source_key {
            return None;
        }
        if check_digest(&entry.sha256).is_err() {
            remove_quietly(&entry_path).await;
            return None;
        }
        let now_ms = self.inner.clock.now_ms();
        let mut state = self.inner.state.lock().await;
        let (size, expired) = match state.blobs.get(&entry.sha256) {
            Some(blob) => (blob.size, self.inner.is_expired(blob.last_use_ms, now_ms)),
            None => {
                drop(state);
                remove_quietly(&entry_path).await;
                return None;
            }
        };
        if expired {
            self.inner
                .evict(&mut state, &entry.sha256, Eviction::Ttl)
                .await;
            drop(state);
            remove_quietly(&entry_path).await;
            return None;
        }
        state.touch(&entry.sha256, now_ms);
        drop(state);
        let path = self.inner.blob_path(&entry.sha256);
        record_use_on_disk(path.clone(), now_ms).await;
        Some(Blob {
            sha256: entry.sha256,
            size,
            path,
        })
    }

    /// The blob named `sha256`, when it is cached and not expired, for serving it by its
    /// name (the media server, the `api` media endpoint). `None` for anything that is not
    /// 64 lowercase hex digits. A hit counts as a use of the blob.
    pub async fn blob_by_hash(&self, sha256: &str) -> Option<Blob> {
        check_digest(sha256).ok()?;
        let now_ms = self.inner.clock.now_ms();
        let mut state = self.inner.state.lock().await;
        let (size, expired) = {
            let entry = state.blobs.get(sha256)?;
            (entry.size, self.inner.is_expired(entry.last_use_ms, now_ms))
        };
        if expired {
            self.inner.evict(&mut state, sha256, Eviction::Ttl).await;
            return None;
        }
        state.touch(sha256, now_ms);
        drop(state);
        let path = self.inner.blob_path(sha256);
        record_use_on_disk(path.clone(), now_ms).await;
        Some(Blob {
            sha256: sha256.to_owned(),
            size,
            path,
        })
    }

    /// Remembers the handle `account` gave for an upload of the blob `sha256`. It is
    /// forgotten when it expires or when the blob leaves the cache.
    ///
    /// # Errors
    /// `sha256` is malformed, or the entry could not be written.
    pub async fn remember_upload(
        &self,
        sha256: &str,
        account: &str,
        handle: UploadHandle,
    ) -> Result<(), MediaCacheError> {
        check_digest(sha256)?;
        let entry = serde_json::to_vec(&UploadEntry {
            account: account.to_owned(),
            handle,
        })?;
        let path = self.inner.upload_entry_path(sha256, account);
        self.inner.write_atomically(&path, &entry).await
    }

    /// The handle `account` gave for an upload of the blob `sha256`, unless it has expired.
    pub async fn upload(&self, sha256: &str, account: &str) -> Option<UploadHandle> {
        check_digest(sha256).ok()?;
        let path = self.inner.upload_entry_path(sha256, account);
        let entry: UploadEntry = match read_entry(&path).await {
            EntryRead::Found(entry) => entry,
            EntryRead::Missing => return None,
            EntryRead::Broken => {
                remove_quietly(&path).await;
                return None;
            }
        };
        if entry.account != account {
            return None;
        }
        if entry.handle.is_expired_at(self.inner.clock.now_ms()) {
            remove_quietly(&path).await;
            return None;
        }
        Some(entry.handle)
    }

    /// The blob of `source_key`: from the cache when it is there (without calling `make`),
    /// else from `make`, whose future fetches the bytes into this cache (through
    /// [`MediaCache::writer`]) and yields the blob. Concurrent callers for the same key share
    /// one call of `make`; its error reaches them all and is not cached, so the next call
    /// tries again. On success the key is remembered.
    ///
    /// A caller that is dropped does not stop the fetch while others still wait for it.
    /// (Callers of one key are expected to use one error type; a caller with another type
    /// runs its own fetch.)
    ///
    /// # Errors
    /// The error of `make`'s future, shared by every caller that waited for it.
    pub async fn get_or_fetch<E, F, Fut>(
        &self,
        source_key: &str,
        make: F,
    ) -> Result<(Blob, Fetched), Arc<E>>
    where
        E: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Blob, E>> + Send + 'static,
    {
        if let Some(blob) = self.lookup(source_key).await {
            return Ok((blob, Fetched::CacheHit));
        }
        let (flight, led) = self.join_or_start(source_key, make);
        let (blob, found_in_cache) = flight.await?;
        let fetched = if found_in_cache {
            Fetched::CacheHit
        } else if led {
            Fetched::Fetched
        } else {
            Fetched::Joined
        };
        Ok((blob, fetched))
    }

    /// The flight of `source_key` under way, or a new one running `make`; true when new.
    fn join_or_start<E, F, Fut>(&self, source_key: &str, make: F) -> (SharedFlight<E>, bool)
    where
        E: Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Blob, E>> + Send + 'static,
    {
        let mut flights = lock_flights(&self.inner.flights);
        let running = flights
            .get(source_key)
            .and_then(|flight| {
                flight
                    .future
                    .downcast_ref::<WeakShared<BoxFuture<'static, FlightOutput<E>>>>()
            })
            .and_then(WeakShared::upgrade);
        if let Some(running) = running {
            return (running, false);
        }
        // Before the guard exists: should `make` panic, no guard may unwind into this lock.
        let fetch = make();
        let id = self.inner.next_flight_id.fetch_add(1, Ordering::Relaxed);
        let guard = FlightGuard {
            inner: Arc::clone(&self.inner),
            key: source_key.to_owned(),
            id,
        };
        let cache = self.clone();
        let key = source_key.to_owned();
        let flight: SharedFlight<E> = async move {
            let _guard = guard;
            // A flight that ended between this caller's lookup and now stored the blob.
            if let Some(blob) = cache.lookup(&key).await {
                return Ok((blob, true));
            }
            let blob = fetch.await.map_err(Arc::new)?;
            if let Err(error) = cache.remember(&key, &blob).await {
                warn!(message = "A fetched picture could not be remembered by its source; it will be fetched again next time.", %error);
            }
            Ok((blob, false))
        }
        .boxed()
        .shared();
        if let Some(weak) = flight.downgrade() {
            flights.insert(
                source_key.to_owned(),
                Flight {
                    id,
                    future: Box::new(weak),
                },
            );
        }
        (flight, true)
    }

    /// Removes blobs unused for longer than the ttl, applies the size cap, and drops index
    /// entries whose blob is gone and upload handles that expired. Runs at open and, at most
    /// hourly, after an insert; the daemon may also call it on a timer.
    ///
    /// # Errors
    /// An index directory could not be listed.
    pub async fn sweep(&self) -> Result<(), MediaCacheError> {
        let now_ms = self.inner.clock.now_ms();
        let mut state = self.inner.state.lock().await;
        state.last_full_sweep_ms = now_ms;
        self.inner.expire(&mut state, now_ms).await;
        self.inner.shrink_to_cap(&mut state).await;
        self.inner.sweep_sources(&state).await?;
        self.inner.sweep_uploads(&state, now_ms).await
    }

    /// Counters of the cache.
    pub async fn stats(&self) -> CacheStats {
        let state = self.inner.state.lock().await;
        CacheStats {
            blobs: state.blobs.len(),
            bytes: state.total_bytes,
            evicted_for_size: state.evicted_for_size,
            evicted_for_ttl: state.evicted_for_ttl,
            evicted_corrupt: state.evicted_corrupt,
        }
    }

    /// Moves a finished temporary file into the cache as the blob `sha256` of `size` bytes.
    async fn store(
        &self,
        temp_path: &Path,
        sha256: String,
        size: u64,
    ) -> Result<Blob, MediaCacheError> {
        let limits = self.inner.limits;
        if size > limits.max_bytes {
            return Err(MediaCacheError::TooLarge {
                size,
                max_bytes: limits.max_bytes,
            });
        }
        let path = self.inner.blob_path(&sha256);
        let now_ms = self.inner.clock.now_ms();
        let mut state = self.inner.state.lock().await;
        let on_disk = state.blobs.contains_key(&sha256)
            && tokio::fs::try_exists(&path).await.unwrap_or(false);
        if on_disk {
            // Content-addressed: the same bytes are already there.
            remove_quietly(temp_path).await;
            state.touch(&sha256, now_ms);
        } else {
            if let Some(shard) = path.parent() {
                tokio::fs::create_dir_all(shard)
                    .await
                    .map_err(io_error("create", shard))?;
            }
            tokio::fs::rename(temp_path, &path)
                .await
                .map_err(io_error("rename into place", &path))?;
            state.remove(&sha256);
            state.insert(&sha256, size, now_ms);
        }
        self.inner.expire(&mut state, now_ms).await;
        self.inner.shrink_to_cap(&mut state).await;
        let sweep_due = now_ms.saturating_sub(state.last_full_sweep_ms) >= millis(FULL_SWEEP_EVERY);
        drop(state);
        record_use_on_disk(path.clone(), now_ms).await;
        if sweep_due {
            if let Err(error) = self.sweep().await {
                warn!(message = "Sweeping the media cache failed.", %error);
            }
        }
        Ok(Blob { sha256, size, path })
    }
}

impl Inner {
    /// Where the blob `sha256` lives.
    fn blob_path(&self, sha256: &str) -> PathBuf {
        let shard = sha256.get(..2).unwrap_or("00");
        self.dir.join(BLOBS_DIR).join(shard).join(sha256)
    }

    /// Where the entry of `source_key` lives.
    fn source_entry_path(&self, source_key: &str) -> PathBuf {
        self.dir
            .join(INDEX_DIR)
            .join(SOURCES_DIR)
            .join(sha256_hex(source_key.as_bytes()))
    }

    /// The directory of the upload handles of the blob `sha256`.
    fn upload_dir(&self, sha256: &str) -> PathBuf {
        self.dir.join(INDEX_DIR).join(UPLOADS_DIR).join(sha256)
    }

    /// Where the upload handle of `account` for the blob `sha256` lives.
    fn upload_entry_path(&self, sha256: &str, account: &str) -> PathBuf {
        self.upload_dir(sha256).join(sha256_hex(account.as_bytes()))
    }

    /// A fresh name under `tmp/`.
    fn temp_path(&self, suffix: &str) -> PathBuf {
        self.dir
            .join(TMP_DIR)
            .join(format!("{:016x}.{suffix}", rand::random::<u64>()))
    }

    /// Whether a blob last used at `last_use_ms` has expired at `now_ms`.
    fn is_expired(&self, last_use_ms: u64, now_ms: u64) -> bool {
        now_ms.saturating_sub(last_use_ms) > millis(self.limits.ttl)
    }

    /// Writes `bytes` to `path` through a temporary file and a rename, so that `path` holds
    /// either its old content or all of the new.
    async fn write_atomically(&self, path: &Path, bytes: &[u8]) -> Result<(), MediaCacheError> {
        let temp_path = self.temp_path("entry");
        tokio::fs::write(&temp_path, bytes)
            .await
            .map_err(io_error("write", &temp_path))?;
        if let Some(parent) = path.parent() {
            if let Err(error) = tokio::fs::create_dir_all(parent).await {
                remove_quietly(&temp_path).await;
                return Err(io_error("create", parent)(error));
            }
        }
        if let Err(error) = tokio::fs::rename(&temp_path, path).await {
            remove_quietly(&temp_path).await;
            return Err(io_error("rename into place", path)(error));
        }
        Ok(())
    }

    /// Removes the blob `sha256` and its upload handles, and counts why.
    async fn evict(&self, state: &mut State, sha256: &str, reason: Eviction) {
        if state.remove(sha256).is_none() {
            return;
        }
        state.count(reason);
        remove_quietly(&self.blob_path(sha256)).await;
        match tokio::fs::remove_dir_all(self.upload_dir(sha256)).await {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => {
                debug!(message = "Upload handles of an evicted blob could not be removed.", sha256, %error);
            }
        }
        debug!(
            message = "Evicted a blob from the media cache.",
            sha256,
            reason = reason.as_str()
        );
    }

    /// Removes every blob unused for longer than the ttl.
    async fn expire(&self, state: &mut State, now_ms: u64) {
        let expired: Vec<String> = state
            .blobs
            .iter()
            .filter(|(_, blob)| self.is_expired(blob.last_use_ms, now_ms))
            .map(|(sha256, _)| sha256.clone())
            .collect();
        for sha256 in expired {
            self.evict(state, &sha256, Eviction::Ttl).await;
        }
    }

    /// Removes least recently used blobs until the total is under the cap.
    async fn shrink_to_cap(&self, state: &mut State) {
        while state.total_bytes > self.limits.max_bytes {
            let Some(sha256) = state.least_recently_used() else {
                break;
            };
            self.evict(state, &sha256, Eviction::Size).await;
        }
    }

    /// Drops source entries that are broken or whose blob is gone.
    async fn sweep_sources(&self, state: &State) -> Result<(), MediaCacheError> {
        let dir = self.dir.join(INDEX_DIR).join(SOURCES_DIR);
        for (name, path) in list_dir(&dir).await? {
            if !is_digest(&name) {
                continue;
            }
            let keep = match read_entry::<SourceEntry>(&path).await {
                EntryRead::Found(entry) => state.blobs.contains_key(&entry.sha256),
                EntryRead::Missing => true,
                EntryRead::Broken => false,
            };
            if !keep {
                remove_quietly(&path).await;
            }
        }
        Ok(())
    }

    /// Drops upload handles that expired, are broken or whose blob is gone.
    async fn sweep_uploads(&self, state: &State, now_ms: u64) -> Result<(), MediaCacheError> {
        let dir = self.dir.join(INDEX_DIR).join(UPLOADS_DIR);
        for (name, blob_dir) in list_dir(&dir).await? {
            if !is_digest(&name) {
                continue;
            }
            if !state.blobs.contains_key(&name) {
                match tokio::fs::remove_dir_all(&blob_dir).await {
                    Ok(()) => {}
                    Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                    Err(error) => {
                        debug!(message = "Stale upload handles could not be removed.", path = %blob_dir.display(), %error);
                    }
                }
                continue;
            }
            let entries = match list_dir(&blob_dir).await {
                Ok(entries) => entries,
                Err(error) => {
                    debug!(message = "Upload handles could not be listed.", %error);
                    continue;
                }
            };
            for (account_digest, path) in entries {
                if !is_digest(&account_digest) {
                    continue;
                }
                let keep = match read_entry::<UploadEntry>(&path).await {
                    EntryRead::Found(entry) => !entry.handle.is_expired_at(now_ms),
                    EntryRead::Missing => true,
                    EntryRead::Broken => false,
                };
                if !keep {
                    remove_quietly(&path).await;
                }
            }
        }
        Ok(())
    }
}

/// A blob being written chunk by chunk: to a temporary file under `tmp/`, hashed and counted
/// as it goes. [`BlobWriter::finish`] moves it into the cache; dropping it without finishing
/// removes the temporary file.
pub struct BlobWriter {
    /// The cache it goes into.
    cache: MediaCache,
    /// The temporary file; `None` once closed.
    file: Option<tokio::fs::File>,
    /// The temporary file's path; `None` once it was moved or removed.
    temp_path: Option<PathBuf>,
    /// SHA-256 of the bytes written so far.
    hasher: Sha256,
    /// Bytes written so far.
    size: u64,
    /// A write failed or was cancelled midway: the file's content is unknown.
    interrupted: bool,
    /// The size at which a write was refused for exceeding the cache's cap.
    refused_at: Option<u64>,
}

impl fmt::Debug for BlobWriter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BlobWriter")
            .field("temp_path", &self.temp_path)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

impl BlobWriter {
    /// Appends `chunk`. Refused (error kind `FileTooLarge`, wrapping
    /// [`MediaCacheError::TooLarge`]) once the blob would exceed the cache's cap, so an
    /// oversized download stops early instead of filling the disk.
    ///
    /// # Errors
    /// The write failed, a write failed before, or the blob became too large.
    pub async fn write(&mut self, chunk: &[u8]) -> io::Result<()> {
        if let Some(refusal) = self.refusal() {
            return Err(io::Error::new(io::ErrorKind::FileTooLarge, refusal));
        }
        if self.interrupted {
            return Err(io::Error::other(MediaCacheError::IncompleteWrite));
        }
        let max_bytes = self.cache.inner.limits.max_bytes;
        let size = self
            .size
            .saturating_add(u64::try_from(chunk.len()).unwrap_or(u64::MAX));
        if size > max_bytes {
            self.refused_at = Some(size);
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                MediaCacheError::TooLarge { size, max_bytes },
            ));
        }
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::other(MediaCacheError::IncompleteWrite));
        };
        // Marked until the write completes: cancelled midway, the file no longer matches
        // the hash.
        self.interrupted = true;
        file.write_all(chunk).await?;
        self.interrupted = false;
        self.hasher.update(chunk);
        self.size = size;
        Ok(())
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Moves the bytes into the cache as `blobs/<sha256>` (when that blob already exists the
    /// temporary file is just dropped), records the use, and evicts least recently used
    /// blobs until the cache is under its cap again.
    ///
    /// # Errors
    /// A write failed before, the blob is larger than the whole cache, or the file could not
    /// be closed or moved.
    pub async fn finish(mut self) -> Result<Blob, MediaCacheError> {
        if let Some(refusal) = self.refusal() {
            return Err(refusal);
        }
        if self.interrupted {
            return Err(MediaCacheError::IncompleteWrite);
        }
        let (Some(mut file), Some(temp_path)) = (self.file.take(), self.temp_path.clone()) else {
            return Err(MediaCacheError::IncompleteWrite);
        };
        file.flush().await.map_err(io_error("write", &temp_path))?;
        drop(file);
        let sha256 = hex(&std::mem::take(&mut self.hasher).finalize());
        let blob = self
            .cache
            .clone()
            .store(&temp_path, sha256, self.size)
            .await;
        if blob.is_ok() {
            // Moved into place or removed: nothing left for `drop` to clean up.
            self.temp_path = None;
        }
        blob
    }

    /// The error of a refused write, if one was refused.
    fn refusal(&self) -> Option<MediaCacheError> {
        self.refused_at.map(|size| MediaCacheError::TooLarge {
            size,
            max_bytes: self.cache.inner.limits.max_bytes,
        })
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        drop(self.file.take());
        if let Some(temp_path) = self.temp_path.take() {
            // Best effort: whatever stays behind is removed at the next open.
            match std::fs::remove_file(&temp_path) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => {
                    debug!(message = "A partial media file could not be removed.", path = %temp_path.display(), %error);
                }
            }
        }
    }
}

/// Lists the temporary files, checks every blob and removes what does not belong (blocking:
/// run in `spawn_blocking`).
fn scan_at_open(dir: &Path) -> Result<Scan, MediaCacheError> {
    let tmp = dir.join(TMP_DIR);
    for entry in std::fs::read_dir(&tmp).map_err(io_error("list", &tmp))? {
        let Ok(entry) = entry else { continue };
        let path = entry.path();
        let is_dir = entry.file_type().is_ok_and(|kind| kind.is_dir());
        let removed = if is_dir {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if let Err(error) = removed {
            warn!(message = "A partial media file could not be removed.", path = %path.display(), %error);
        }
    }

    let mut scan = Scan {
        blobs: Vec::new(),
        corrupt: 0,
    };
    let blobs = dir.join(BLOBS_DIR);
    for shard in std::fs::read_dir(&blobs).map_err(io_error("list", &blobs))? {
        let Ok(shard) = shard else { continue };
        let shard_name = shard.file_name();
        let Some(shard_name) = shard_name.to_str() else {
            continue;
        };
        let is_shard = shard.file_type().is_ok_and(|kind| kind.is_dir())
            && shard_name.len() == 2
            && shard_name.bytes().all(is_hex_digit);
        if !is_shard {
            debug!(message = "Left a foreign entry of the media cache alone.", path = %shard.path().display());
            continue;
        }
        let shard_path = shard.path();
        let entries = match std::fs::read_dir(&shard_path) {
            Ok(entries) => entries,
            Err(error) => {
                warn!(message = "A directory of the media cache could not be listed.", path = %shard_path.display(), %error);
                continue;
            }
        };
        for entry in entries {
            let Ok(entry) = entry else { continue };
            let path = entry.path();
            let name = entry.file_name();
            let is_blob = entry.file_type().is_ok_and(|kind| kind.is_file())
                && name
                    .to_str()
                    .is_some_and(|name| is_digest(name) && name.starts_with(shard_name));
            if !is_blob {
                debug!(message = "Left a foreign entry of the media cache alone.", path = %path.display());
                continue;
            }
            let name = name.to_string_lossy().into_owned();
            match hash_file(&path) {
                Ok((sha256, size)) if sha256 == name => {
                    let last_use_ms = std::fs::metadata(&path)
                        .and_then(|metadata| metadata.modified())
                        .ok()
                        .and_then(|modified| modified.duration_since(UNIX_EPOCH).ok())
                        .map_or(0, |since| {
                            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
                        });
                    scan.blobs.push((name, size, last_use_ms));
                }
                checked => {
                    if let Err(error) = checked {
                        warn!(message = "A cached blob could not be read; removing it.", path = %path.display(), %error);
                    } else {
                        warn!(message = "A cached blob does not match its name; removing it.", path = %path.display());
                    }
                    if let Err(error) = std::fs::remove_file(&path) {
                        warn!(message = "A corrupt blob could not be removed.", path = %path.display(), %error);
                    }
                    scan.corrupt += 1;
                }
            }
        }
    }
    Ok(scan)
}

/// The SHA-256 (hex) and size of a file, read in bounded chunks.
fn hash_file(path: &Path) -> io::Result<(String, u64)> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; HASH_BUFFER_BYTES];
    let mut size = 0u64;
    loop {
        let read = match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        hasher.update(&buffer[..read]);
        size = size.saturating_add(u64::try_from(read).unwrap_or(u64::MAX));
    }
    Ok((hex(&hasher.finalize()), size))
}

/// Sets a blob's modification time to its last use, so that the order of use survives a
/// restart. Best effort: a failure only makes the blob look older after a restart.
async fn record_use_on_disk(path: PathBuf, now_ms: u64) {
    let Some(used_at) = UNIX_EPOCH.checked_add(Duration::from_millis(now_ms)) else {
        return;
    };
    let touched = tokio::task::spawn_blocking(move || {
        let file = std::fs::File::options().write(true).open(&path)?;
        file.set_modified(used_at)
    })
    .await;
    match touched {
        Ok(Ok(())) => {}
        Ok(Err(error)) => debug!(message = "The last use of a blob could not be recorded.", %error),
        Err(error) => debug!(message = "The last use of a blob could not be recorded.", %error),
    }
}

/// Reads a JSON index entry.
async fn read_entry<T: for<'de> Deserialize<'de>>(path: &Path) -> EntryRead<T> {
    let metadata = match tokio::fs::metadata(path).await {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return EntryRead::Missing,
        Err(error) => {
            debug!(message = "A media index entry could not be read.", path = %path.display(), %error);
            return EntryRead::Missing;
        }
    };
    if !metadata.is_file() || metadata.len() > MAX_INDEX_ENTRY_BYTES {
        return EntryRead::Broken;
    }
    match tokio::fs::read(path).await {
        Ok(bytes) => match serde_json::from_slice(&bytes) {
            Ok(entry) => EntryRead::Found(entry),
            Err(_) => EntryRead::Broken,
        },
        Err(error) if error.kind() == io::ErrorKind::NotFound => EntryRead::Missing,
        Err(error) => {
            debug!(message = "A media index entry could not be read.", path = %path.display(), %error);
            EntryRead::Missing
        }
    }
}

/// The entries of a directory: name (when UTF-8) and path.
async fn list_dir(dir: &Path) -> Result<Vec<(String, PathBuf)>, MediaCacheError> {
    let mut entries = tokio::fs::read_dir(dir)
        .await
        .map_err(io_error("list", dir))?;
    let mut listed = Vec::new();
    loop {
        match entries.next_entry().await {
            Ok(Some(entry)) => {
                if let Ok(name) = entry.file_name().into_string() {
                    listed.push((name, entry.path()));
                }
            }
            Ok(None) => break,
            Err(error) => return Err(io_error("list", dir)(error)),
        }
    }
    Ok(listed)
}

/// Removes a file; already gone is fine, any other failure is only logged.
async fn remove_quietly(path: &Path) {
    match tokio::fs::remove_file(path).await {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => {
            debug!(message = "A media cache file could not be removed.", path = %path.display(), %error);
        }
    }
}

/// Wraps an I/O error with what was done to which path.
fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> MediaCacheError {
    let path = path.to_path_buf();
    move |source| MediaCacheError::Io {
        action,
        path,
        source,
    }
}

/// Refuses anything but a lowercase SHA-256 hex digest (it becomes a file name).
fn check_digest(sha256: &str) -> Result<(), MediaCacheError> {
    if is_digest(sha256) {
        Ok(())
    } else {
        Err(MediaCacheError::NotADigest(sha256.to_owned()))
    }
}

/// Whether `name` is a lowercase SHA-256 hex digest.
fn is_digest(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(is_hex_digit)
}

/// Whether `byte` is a lowercase hex digit.
fn is_hex_digit(byte: u8) -> bool {
    matches!(byte, b'0'..=b'9' | b'a'..=b'f')
}

/// SHA-256 of `bytes`, lowercase hex.
fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}

/// A duration in whole milliseconds, saturating.
fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A realistic start for the manual clock (late 2023).
    const START_MS: u64 = 1_700_000_000_000;

    fn limits(max_bytes: u64, ttl: Duration) -> CacheLimits {
        CacheLimits { max_bytes, ttl }
    }

    async fn open_manual(dir: &Path, limits: CacheLimits) -> (MediaCache, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(START_MS));
        let cache = MediaCache::open_with_clock(dir, limits, clock.clone())
            .await
            .expect("opens");
        (cache, clock)
    }

    /// Every regular file under `dir`, recursively, with its size.
    fn files_under(dir: &Path) -> Vec<(PathBuf, u64)> {
        let mut found = Vec::new();
        let mut pending = vec![dir.to_path_buf()];
        while let Some(current) = pending.pop() {
            for entry in std::fs::read_dir(&current).expect("lists") {
                let entry = entry.expect("entry");
                let kind = entry.file_type().expect("file type");
                if kind.is_dir() {
                    pending.push(entry.path());
                } else if kind.is_file() {
                    let size = entry.metadata().expect("metadata").len();
                    found.push((entry.path(), size));
                }
            }
        }
        found
    }

    fn disk_bytes(dir: &Path) -> u64 {
        files_under(&dir.join(BLOBS_DIR))
            .iter()
            .map(|(_, size)| size)
            .sum()
    }

    fn blob_count(dir: &Path) -> usize {
        files_under(&dir.join(BLOBS_DIR)).len()
    }

    fn tmp_count(dir: &Path) -> usize {
        std::fs::read_dir(dir.join(TMP_DIR)).expect("lists").count()
    }

    #[tokio::test]
    async fn same_bytes_twice_make_one_blob() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cache, _clock) = open_manual(dir.path(), CacheLimits::default()).await;

        let mut writer = cache.writer().await.expect("writer");
        for chunk in [&b"hello"[..], b" ", b"world"] {
            writer.write(chunk).await.expect("writes");
        }
        assert_eq!(writer.size(), 11);
        let streamed = writer.finish().await.expect("finishes");
        let whole = cache.put_bytes(b"hello world").await.expect("stores");

        assert_eq!(
            streamed.sha256,
            "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
        );
        assert_eq!(streamed, whole);
        assert_eq!(
            streamed.path,
            dir.path()
                .join("blobs/b9/b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9")
        );
        assert_eq!(
            std::fs::read(&streamed.path).expect("reads"),
            b"hello world"
        );
        assert_eq!(blob_count(dir.path()), 1);
        assert_eq!(tmp_count(dir.path()), 0);
        let stats = cache.stats().await;
        assert_eq!((stats.blobs, stats.bytes), (1, 11));

        // An empty file is a blob too.
        let empty = cache.put_bytes(b"").await.expect("stores");
        assert_eq!(empty.size, 0);
        assert_eq!(blob_count(dir.path()), 2);
    }

    #[tokio::test]
    async fn the_total_stays_under_the_cap_and_evictions_are_counted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cap = 10_000;
        let (cache, _clock) = open_manual(dir.path(), limits(cap, Duration::from_secs(3600))).await;

        let mut last = None;
        for i in 0..30u8 {
            let blob = cache.put_bytes(&[i; 1_000]).await.expect("stores");
            assert!(disk_bytes(dir.path()) <= cap, "over the cap after blob {i}");
            last = Some(blob);
        }
        let stats = cache.stats().await;
        assert_eq!(stats.evicted_for_size, 20);
        assert_eq!((stats.blobs, stats.bytes), (10, 10_000));
        assert_eq!(blob_count(dir.path()), 10);
        assert_eq!(disk_bytes(dir.path()), 10_000);
        let last = last.expect("stored");
        assert!(
            last.path.exists(),
            "the newest blob is never the one evicted"
        );
    }

    #[tokio::test]
    async fn the_least_recently_used_blob_goes_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cache, _clock) =
            open_manual(dir.path(), limits(3_000, Duration::from_secs(3600))).await;
        let mut blobs = Vec::new();
        for i in 0..3u8 {
            let blob = cache.put_bytes(&[i; 1_000]).await.expect("stores");
            cache
                .remember(&format!("url:https://example.com/{i}"), &blob)
                .await
                .expect("remembers");
            blobs.push(blob);
        }
        // Using the oldest makes the second the least recently used.
        assert!(cache.lookup("url:https://example.com/0").await.is_some());
        cache.put_bytes(&[9; 1_000]).await.expect("stores");

        assert!(blobs[0].path.exists());
        assert!(!blobs[1].path.exists());
        assert!(blobs[2].path.exists());
        assert_eq!(cache.lookup("url:https://example.com/1").await, None);
        assert_eq!(cache.stats().await.evicted_for_size, 1);
    }

    #[tokio::test]
    async fn a_blob_larger_than_the_cap_is_refused_without_evicting() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cache, _clock) =
            open_manual(dir.path(), limits(1_000, Duration::from_secs(3600))).await;
        let kept = cache.put_bytes(&[1; 600]).await.expect("stores");

        let refused = cache.put_bytes(&[2; 1_001]).await;
        assert!(matches!(
            refused,
            Err(MediaCacheError::TooLarge {
                size: 1_001,
                max_bytes: 1_000
            })
        ));

        let mut writer = cache.writer().await.expect("writer");
        writer.write(&[3; 600]).await.expect("fits so far");
        let error = writer.write(&[3; 600]).await.expect_err("over the cap");
        assert_eq!(error.kind(), io::ErrorKind::FileTooLarge);
        assert!(matches!(
            writer.finish().await,
            Err(MediaCacheError::TooLarge { size: 1_200, .. })
        ));

        assert!(kept.path.exists());
        assert_eq!(blob_count(dir.path()), 1);
        assert_eq!(tmp_count(dir.path()), 0);
        assert_eq!(cache.stats().await.evicted_for_size, 0);
    }

    #[tokio::test]
    async fn blobs_are_found_by_their_name_only_when_it_is_a_digest_and_fresh() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cache, clock) =
            open_manual(dir.path(), limits(1 << 20, Duration::from_secs(3600))).await;
        let blob = cache.put_bytes(b"served bytes").await.expect("stores");
        assert_eq!(blob.sha256, sha256_hex(b"served bytes"));
        assert_eq!(cache.blob_by_hash(&blob.sha256).await, Some(blob.clone()));

        let upper = blob.sha256.to_uppercase();
        let short = &blob.sha256[..63];
        let traversal = format!("../{}", &blob.sha256[3..]);
        for bad in [
            upper.as_str(),
            short,
            traversal.as_str(),
            "",
            "../../etc/passwd",
        ] {
            assert_eq!(cache.blob_by_hash(bad).await, None, "{bad:?}");
        }
        assert_eq!(cache.blob_by_hash(&sha256_hex(b"never stored")).await, None);

        // Each hit is a use: 40 + 40 minutes with a hit between keeps it.
        clock.advance(Duration::from_secs(40 * 60));
        assert!(cache.blob_by_hash(&blob.sha256).await.is_some());
        clock.advance(Duration::from_secs(40 * 60));
        assert!(cache.blob_by_hash(&blob.sha256).await.is_some());
        // Unused for longer than the ttl: gone, and removed from disk.
        clock.advance(Duration::from_secs(61 * 60));
        assert_eq!(cache.blob_by_hash(&blob.sha256).await, None);
        assert!(!blob.path.exists());
    }

    #[tokio::test]
    async fn blobs_unused_for_longer_than_the_ttl_expire() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cache, clock) =
            open_manual(dir.path(), limits(1 << 20, Duration::from_secs(3600))).await;
        let used = cache.put_bytes(b"used").await.expect("stores");
        let unused = cache.put_bytes(b"unused").await.expect("stores");
        cache
            .remember("qq:main:used.jpg", &used)
            .await
            .expect("remembers");
        cache
            .remember("qq:main:unused.jpg", &unused)
            .await
            .expect("remembers");
        let handle = UploadHandle {
            id: "media-1".into(),
            expires_at_ms: None,
        };
        cache
            .remember_upload(&unused.sha256, "wecom-main", handle.clone())
            .await
            .expect("remembers");

        clock.advance(Duration::from_secs(40 * 60));
        assert!(cache.lookup("qq:main:used.jpg").await.is_some());
        clock.advance(Duration::from_secs(40 * 60));
        cache.sweep().await.expect("sweeps");

        assert!(used.path.exists(), "used 40 minutes ago: kept");
        assert!(!unused.path.exists(), "unused for 80 minutes: removed");
        assert_eq!(cache.lookup("qq:main:unused.jpg").await, None);
        assert!(!cache.inner.source_entry_path("qq:main:unused.jpg").exists());
        assert_eq!(cache.upload(&unused.sha256, "wecom-main").await, None);
        assert!(!cache.inner.upload_dir(&unused.sha256).exists());
        let stats = cache.stats().await;
        assert_eq!((stats.evicted_for_ttl, stats.blobs), (1, 1));

        // A lookup past the ttl misses too, without waiting for a sweep.
        clock.advance(Duration::from_secs(61 * 60));
        assert_eq!(cache.lookup("qq:main:used.jpg").await, None);
        assert!(!used.path.exists());
        assert_eq!(cache.stats().await.evicted_for_ttl, 2);
    }

    #[tokio::test]
    async fn a_reopened_cache_finds_remembered_keys_and_upload_handles() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = "url:https://example.com/a/b.png?size=large";
        let handle = UploadHandle {
            id: "3a8asd892asd8asd".into(),
            expires_at_ms: Some(START_MS + 3 * 24 * 3600 * 1000),
        };
        let stored = {
            let (cache, _clock) = open_manual(dir.path(), CacheLimits::default()).await;
            let writer_cache = cache.clone();
            let (blob, fetched) = cache
                .get_or_fetch(key, move || async move {
                    writer_cache.put_bytes(b"picture bytes").await
                })
                .await
                .expect("fetches");
            assert_eq!(fetched, Fetched::Fetched);
            cache
                .remember_upload(&blob.sha256, "wecom-main", handle.clone())
                .await
                .expect("remembers");
            blob
        };

        let (cache, _clock) = open_manual(dir.path(), CacheLimits::default()).await;
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        let (blob, fetched) = cache
            .get_or_fetch(key, move || {
                counted.fetch_add(1, Ordering::SeqCst);
                async { Err::<Blob, _>("must not be fetched") }
            })
            .await
            .expect("found");
        assert_eq!(fetched, Fetched::CacheHit);
        assert_eq!(calls.load(Ordering::SeqCst), 0);
        assert_eq!(blob, stored);
        assert_eq!(std::fs::read(&blob.path).expect("reads"), b"picture bytes");
        assert_eq!(cache.upload(&blob.sha256, "wecom-main").await, Some(handle));
        assert_eq!(cache.upload(&blob.sha256, "wecom-other").await, None);
    }

    #[tokio::test]
    async fn open_removes_stray_temp_files_and_blobs_that_do_not_match_their_name() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let good = {
            let (cache, _clock) = open_manual(root, CacheLimits::default()).await;
            let good = cache.put_bytes(b"good").await.expect("stores");
            let bad = cache.put_bytes(b"will be damaged").await.expect("stores");
            cache
                .remember("url:https://example.com/bad", &bad)
                .await
                .expect("remembers");
            std::fs::write(&bad.path, b"damaged").expect("damages");
            good
        };
        std::fs::write(root.join("tmp/0123.part"), b"half a picture").expect("writes");
        std::fs::create_dir_all(root.join("tmp/leftover")).expect("creates");
        std::fs::write(root.join("tmp/leftover/x"), b"x").expect("writes");
        // A zero-byte file named like a blob whose content is not empty.
        let empty_liar = sha256_hex(b"not empty");
        let empty_liar_path = root
            .join(BLOBS_DIR)
            .join(&empty_liar[..2])
            .join(&empty_liar);
        std::fs::create_dir_all(empty_liar_path.parent().expect("parent")).expect("creates");
        std::fs::write(&empty_liar_path, b"").expect("writes");
        // Foreign names and directories are left alone, and nothing panics on them.
        let foreign = [
            root.join("blobs/README.txt"),
            root.join("blobs/zz/not-a-hash"),
            root.join("blobs/ab/short"),
            root.join("blobs/ab/nested/deeper"),
            root.join("index/sources/notes.txt"),
        ];
        for path in &foreign {
            std::fs::create_dir_all(path.parent().expect("parent")).expect("creates");
            std::fs::write(path, b"foreign").expect("writes");
        }

        let (cache, _clock) = open_manual(root, CacheLimits::default()).await;

        assert_eq!(tmp_count(root), 0);
        assert!(!empty_liar_path.exists());
        assert!(good.path.exists());
        for path in &foreign {
            assert!(path.exists(), "{} was removed", path.display());
        }
        let stats = cache.stats().await;
        assert_eq!(stats.evicted_corrupt, 2);
        assert_eq!((stats.blobs, stats.bytes), (1, 4));
        assert_eq!(cache.lookup("url:https://example.com/bad").await, None);
        assert!(!cache
            .inner
            .source_entry_path("url:https://example.com/bad")
            .exists());
    }

    #[tokio::test]
    async fn concurrent_fetches_of_one_key_call_make_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cache, _clock) = open_manual(dir.path(), CacheLimits::default()).await;
        let key = "dingtalk:robot:code-1";
        let calls = Arc::new(AtomicUsize::new(0));
        let (open_gate, gate) = tokio::sync::watch::channel(false);

        let callers = (0..10).map(|_| {
            let cache = cache.clone();
            let calls = calls.clone();
            let mut gate = gate.clone();
            async move {
                let writer_cache = cache.clone();
                cache
                    .get_or_fetch(key, move || {
                        calls.fetch_add(1, Ordering::SeqCst);
                        async move {
                            let _ = gate.wait_for(|open| *open).await;
                            writer_cache
                                .put_bytes(b"shared picture")
                                .await
                                .map_err(|error| error.to_string())
                        }
                    })
                    .await
            }
        });
        let opener = async {
            // Opens the gate once all ten callers wait on the one flight (plus this look).
            tokio::time::timeout(Duration::from_secs(10), async {
                while waiting_on(&cache, key) < 11 {
                    tokio::task::yield_now().await;
                }
            })
            .await
            .expect("all ten callers joined one flight");
            open_gate.send(true).expect("gate open");
        };
        let (results, ()) =
            futures_util::future::join(futures_util::future::join_all(callers), opener).await;

        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let results: Vec<(Blob, Fetched)> = results
            .into_iter()
            .map(|result| result.expect("fetched"))
            .collect();
        let count = |wanted: Fetched| results.iter().filter(|(_, how)| *how == wanted).count();
        assert_eq!((count(Fetched::Fetched), count(Fetched::Joined)), (1, 9));
        assert!(results.iter().all(|(blob, _)| *blob == results[0].0));
        assert_eq!(blob_count(dir.path()), 1);
        assert!(lock_flights(&cache.inner.flights).is_empty());
        // Remembered: the next call is a hit.
        let (_, fetched) = cache
            .get_or_fetch(key, || async { Err::<Blob, String>("not again".into()) })
            .await
            .expect("hit");
        assert_eq!(fetched, Fetched::CacheHit);
    }

    /// How many holders the flight of `key` has (0 when there is none).
    fn waiting_on(cache: &MediaCache, key: &str) -> usize {
        let flight = lock_flights(&cache.inner.flights)
            .get(key)
            .and_then(|flight| {
                flight
                    .future
                    .downcast_ref::<WeakShared<BoxFuture<'static, FlightOutput<String>>>>()
            })
            .and_then(WeakShared::upgrade);
        flight.and_then(|flight| flight.strong_count()).unwrap_or(0)
    }

    #[tokio::test]
    async fn a_failed_fetch_reaches_every_waiter_and_is_not_cached() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cache, _clock) = open_manual(dir.path(), CacheLimits::default()).await;
        let key = "wechat:main:file-1";
        let calls = Arc::new(AtomicUsize::new(0));
        let (open_gate, gate) = tokio::sync::watch::channel(false);

        let callers = (0..3).map(|_| {
            let calls = calls.clone();
            let mut gate = gate.clone();
            cache.get_or_fetch(key, move || {
                calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    let _ = gate.wait_for(|open| *open).await;
                    Err::<Blob, String>("upstream said 404".into())
                }
            })
        });
        let opener = async {
            tokio::time::timeout(Duration::from_secs(10), async {
                while waiting_on(&cache, key) < 4 {
                    tokio::task::yield_now().await;
                }
            })
            .await
            .expect("all three callers joined one flight");
            open_gate.send(true).expect("gate open");
        };
        let (results, ()) =
            futures_util::future::join(futures_util::future::join_all(callers), opener).await;

        assert_eq!(calls.load(Ordering::SeqCst), 1);
        let errors: Vec<Arc<String>> = results
            .into_iter()
            .map(|result| result.expect_err("failed"))
            .collect();
        assert!(errors.iter().all(|error| Arc::ptr_eq(error, &errors[0])));
        assert_eq!(errors[0].as_str(), "upstream said 404");
        assert_eq!(cache.lookup(key).await, None);

        let writer_cache = cache.clone();
        let retry_calls = calls.clone();
        let (blob, fetched) = cache
            .get_or_fetch(key, move || {
                retry_calls.fetch_add(1, Ordering::SeqCst);
                async move { writer_cache.put_bytes(b"second try").await }
            })
            .await
            .expect("fetched");
        assert_eq!(fetched, Fetched::Fetched);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(cache.lookup(key).await, Some(blob));
    }

    #[tokio::test]
    async fn an_expired_upload_handle_is_not_returned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cache, clock) = open_manual(dir.path(), CacheLimits::default()).await;
        let blob = cache.put_bytes(b"sticker").await.expect("stores");
        let expiring = UploadHandle {
            id: "wecom-media-id".into(),
            expires_at_ms: Some(START_MS + 1_000),
        };
        let lasting = UploadHandle {
            id: "dingtalk-media-id".into(),
            expires_at_ms: None,
        };
        cache
            .remember_upload(&blob.sha256, "wecom-main", expiring.clone())
            .await
            .expect("remembers");
        cache
            .remember_upload(&blob.sha256, "dingtalk-main", lasting.clone())
            .await
            .expect("remembers");

        clock.advance(Duration::from_millis(999));
        assert_eq!(
            cache.upload(&blob.sha256, "wecom-main").await,
            Some(expiring)
        );
        clock.advance(Duration::from_millis(1));
        assert_eq!(cache.upload(&blob.sha256, "wecom-main").await, None);
        assert!(!cache
            .inner
            .upload_entry_path(&blob.sha256, "wecom-main")
            .exists());
        assert_eq!(
            cache.upload(&blob.sha256, "dingtalk-main").await,
            Some(lasting)
        );
        assert_eq!(
            cache.upload("../../etc/passwd", "dingtalk-main").await,
            None
        );
    }

    #[tokio::test]
    async fn a_writer_dropped_midway_leaves_no_temp_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cache, _clock) = open_manual(dir.path(), CacheLimits::default()).await;
        let mut writer = cache.writer().await.expect("writer");
        writer.write(&[7; 4096]).await.expect("writes");
        writer.write(&[8; 4096]).await.expect("writes");
        assert_eq!(tmp_count(dir.path()), 1);

        drop(writer);

        assert_eq!(tmp_count(dir.path()), 0);
        assert_eq!(blob_count(dir.path()), 0);
        assert_eq!(cache.stats().await.bytes, 0);
    }
}
