//! The bounded HTTP media fetcher: turns a picture's URL into bytes in a [`ChunkSink`] (the
//! cache's writer) without letting a source hurt the daemon. A source chosen by a chat user
//! may be slow, huge, lie about its length, redirect to the LAN or answer with an HTML page;
//! so every fetch is:
//! - guarded: the URL and every redirect target are checked by the [`AddressGuard`], and the
//!   HTTP client resolves names only through its [`GuardedResolver`](super::guard::GuardedResolver)
//!   (it connects to checked addresses only); no proxy from the environment, no `Referer`;
//! - bounded: one deadline for everything (waiting for a slot, connecting, headers, body),
//!   a byte cap checked against `Content-Length` before the body and against the bytes that
//!   actually arrive while streaming, at most `max_redirects` redirects, and semaphores
//!   limiting fetches in flight globally and per host;
//! - typed: only 2xx answers whose first bytes [`sniff`] as a known type are accepted, and a
//!   QQ "download url has expired" answer is told apart ([`FetchError::Expired`]) so the
//!   caller can ask the origin account for a fresh URL.
//!
//! URLs never reach logs or error texts with their query (QQ URLs carry keys there): see
//! [`loggable`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use url::Url;

use super::guard::{AddressGuard, Blocked};
use super::sniff::{sniff, FileType, SNIFF_LEN};
use super::MediaKind;

/// How much of a non-2xx answer is read to tell an expired link from other refusals.
pub const ERROR_BODY_PROBE: usize = 4 * 1024;

/// QQ's `retcode` for "download url has expired".
const QQ_EXPIRED_RETCODE: i64 = -5503007;

/// The metric outcome of a fetch that succeeded.
pub const OUTCOME_OK: &str = "ok";

/// The bounds every fetch keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchLimits {
    /// Longest wait for a TCP (and TLS) connection to be set up.
    pub connect_timeout: Duration,
    /// Longest time a whole fetch may take: waiting for a slot, connecting, redirects,
    /// headers and body. A source that stalls mid-body fails when it runs out.
    pub fetch_timeout: Duration,
    /// Largest body accepted, in bytes; a larger one is abandoned as soon as it is known to
    /// be larger (announced or arrived).
    pub max_bytes: u64,
    /// Most redirects followed; one more fails the fetch.
    pub max_redirects: usize,
    /// Most fetches in flight at once, over all hosts (at least 1).
    pub max_concurrent: usize,
    /// Most fetches in flight at once to one host (at least 1), so one slow host cannot take
    /// every slot.
    pub max_per_host: usize,
}

impl Default for FetchLimits {
    fn default() -> FetchLimits {
        FetchLimits {
            connect_timeout: Duration::from_secs(5),
            fetch_timeout: Duration::from_secs(20),
            max_bytes: 10 * 1024 * 1024,
            max_redirects: 3,
            max_concurrent: 8,
            max_per_host: 2,
        }
    }
}

/// Where the fetched bytes go, chunk by chunk as they arrive (the cache's writer; a
/// `Vec<u8>` in tests). After an error the sink holds a partial body: discard it.
pub trait ChunkSink: Send {
    /// Takes the next chunk of the body, in order.
    fn write(&mut self, chunk: &[u8]) -> impl Future<Output = std::io::Result<()>> + Send;
}

impl ChunkSink for Vec<u8> {
    async fn write(&mut self, chunk: &[u8]) -> std::io::Result<()> {
        self.extend_from_slice(chunk);
        Ok(())
    }
}

/// What a successful fetch delivered to the sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Bytes written to the sink (the whole body).
    pub size: u64,
    /// The type its first bytes showed.
    pub file_type: FileType,
    /// The URL the body came from after redirects (it may carry keys in its query: never log
    /// it whole, see [`loggable`]).
    pub final_url: String,
}

/// Why a fetch failed. Texts never carry a URL's path or query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    /// The URL, a redirect target or every address of the host was refused by the guard;
    /// nothing was sent to it.
    #[error("refused by the address guard: {0}")]
    Blocked(#[from] Blocked),
    /// The body is larger than allowed (announced by `Content-Length` or seen arriving).
    #[error("larger than {limit} bytes{}", announced.map(|n| format!(" (announced {n})")).unwrap_or_default())]
    TooLarge {
        /// The cap that was exceeded.
        limit: u64,
        /// The `Content-Length` when that is what gave it away.
        announced: Option<u64>,
    },
    /// The fetch did not complete within its deadline (or could not connect in time).
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
    /// The source answered with a status other than 2xx (and not an expired-link answer).
    #[error("HTTP status {0}")]
    HttpStatus(u16),
    /// The source redirected more often than allowed.
    #[error("more than {0} redirects")]
    TooManyRedirects(usize),
    /// The source says the link has expired (QQ: retcode -5503007): the origin account can
    /// hand out a fresh one.
    #[error("the link has expired (HTTP {0})")]
    Expired(u16),
    /// The body is not a known file type (an HTML page, a JSON answer, an empty body).
    #[error("the body is not a known file type")]
    BadType,
    /// The connection could not be made or broke off, or the client could not be built.
    #[error("network: {0}")]
    Network(String),
    /// The sink refused a chunk (disk full, cache closed).
    #[error("cannot store the body: {message}")]
    Sink {
        /// The I/O error's kind, so the caller can tell a full disk from the rest.
        kind: std::io::ErrorKind,
        /// Its text.
        message: String,
    },
}

impl FetchError {
    /// The `outcome` label of `qunbridge_media_fetch_total` for this error.
    pub fn outcome(&self) -> &'static str {
        match self {
            FetchError::Blocked(_) => "blocked",
            FetchError::TooLarge { .. } => "too_large",
            FetchError::Timeout(_) => "timeout",
            FetchError::HttpStatus(_) | FetchError::TooManyRedirects(_) => "http_error",
            FetchError::Expired(_) => "expired",
            FetchError::BadType => "bad_type",
            FetchError::Network(_) => "network",
            FetchError::Sink { .. } => "sink",
        }
    }
}

/// The `outcome` label for the result of a fetch: [`OUTCOME_OK`] or the error's.
pub fn outcome_of(result: &Result<Fetched, FetchError>) -> &'static str {
    match result {
        Ok(_) => OUTCOME_OK,
        Err(error) => error.outcome(),
    }
}

/// Counts one fetch in `qunbridge_media_fetch_total{platform,kind,outcome}` and records its
/// duration in `qunbridge_media_fetch_seconds{platform}`. `platform` is the platform the
/// media came from (never a chat, a user or a URL, so label sets stay small).
pub fn record_fetch(platform: &str, kind: MediaKind, outcome: &'static str, seconds: f64) {
    metrics::counter!(
        crate::metrics::MEDIA_FETCHES,
        "platform" => platform.to_owned(),
        "kind" => kind.as_str(),
        "outcome" => outcome
    )
    .increment(1);
    metrics::histogram!(crate::metrics::MEDIA_FETCH_SECONDS, "platform" => platform.to_owned())
        .record(seconds);
}

/// A URL as logs may show it: host (and port) and path, without user info, query or
/// fragment.
pub fn loggable(url: &Url) -> String {
    let host = url.host_str().unwrap_or("?");
    match url.port() {
        Some(port) => format!("{host}:{port}{}", url.path()),
        None => format!("{host}{}", url.path()),
    }
}

/// The redirect policy's reason to stop: one redirect too many.
#[derive(Debug)]
struct RedirectLimit(usize);

impl std::fmt::Display for RedirectLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "more than {} redirects", self.0)
    }
}

impl std::error::Error for RedirectLimit {}

/// The per-host semaphores, created on demand and dropped when nobody holds or waits for one.
#[derive(Debug)]
struct HostSlots {
    /// Fetches allowed at once per host.
    limit: usize,
    /// One semaphore per host with a fetch in flight or waiting.
    hosts: Mutex<HashMap<String, Arc<Semaphore>>>,
}

/// A fetch's claim on its host's semaphore, waiting or holding a permit; removes the host's
/// entry when it is the last claim.
struct HostClaim<'a> {
    /// Where the entry lives.
    slots: &'a HostSlots,
    /// The host.
    host: String,
    /// The host's semaphore (one reference is the map's).
    semaphore: Arc<Semaphore>,
    /// The permit once granted.
    permit: Option<OwnedSemaphorePermit>,
}

impl HostSlots {
    /// A claim on `host`'s semaphore (not yet granted).
    fn claim(&self, host: &str) -> HostClaim<'_> {
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        let semaphore = hosts
            .entry(host.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.limit)))
            .clone();
        HostClaim {
            slots: self,
            host: host.to_owned(),
            semaphore,
            permit: None,
        }
    }
}

impl HostClaim<'_> {
    /// Waits for a permit.
    async fn acquire(&mut self) -> Result<(), FetchError> {
        let permit = self
            .semaphore
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| FetchError::Network("the fetcher was shut down".into()))?;
        self.permit = Some(permit);
        Ok(())
    }
}

impl Drop for HostClaim<'_> {
    fn drop(&mut self) {
        self.permit.take();
        let mut hosts = self.slots.hosts.lock().unwrap_or_else(|e| e.into_inner());
        // The map's reference and ours: nobody else holds or waits for this host.
        if Arc::strong_count(&self.semaphore) == 2 {
            hosts.remove(&self.host);
        }
    }
}

/// Fetches media over HTTP within [`FetchLimits`], through an [`AddressGuard`]. Cheap to
/// clone: clones share the client, the semaphores and the guard.
#[derive(Debug, Clone)]
pub struct Fetcher {
    /// The one HTTP client (rustls, guarded resolver, checked redirects, no proxy).
    client: reqwest::Client,
    /// The bounds.
    limits: FetchLimits,
    /// Checks the URL before anything is sent.
    guard: AddressGuard,
    /// Fetches in flight over all hosts.
    global: Arc<Semaphore>,
    /// Fetches in flight per host.
    hosts: Arc<HostSlots>,
}

impl Fetcher {
    /// A fetcher keeping `limits` and refusing what `guard` refuses.
    ///
    /// # Errors
    /// [`FetchError::Network`] when the HTTP client cannot be built (no TLS roots).
    pub fn new(limits: FetchLimits, guard: AddressGuard) -> Result<Fetcher, FetchError> {
        let max_redirects = limits.max_redirects;
        let redirect_guard = guard.clone();
        let policy = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > max_redirects {
                return attempt.error(RedirectLimit(max_redirects));
            }
            match redirect_guard.check_url(attempt.url()) {
                Ok(()) => attempt.follow(),
                Err(blocked) => attempt.error(blocked),
            }
        });
        let client = reqwest::Client::builder()
            .user_agent(concat!("qunbridge/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(limits.connect_timeout)
            .timeout(limits.fetch_timeout)
            .redirect(policy)
            .referer(false)
            .no_proxy()
            .dns_resolver(guard.resolver())
            .build()
            .map_err(|error| {
                FetchError::Network(format!(
                    "cannot build the HTTP client: {}",
                    crate::http::describe(error)
                ))
            })?;
        let slots = |n: usize| n.clamp(1, Semaphore::MAX_PERMITS);
        Ok(Fetcher {
            client,
            global: Arc::new(Semaphore::new(slots(limits.max_concurrent))),
            hosts: Arc::new(HostSlots {
                limit: slots(limits.max_per_host),
                hosts: Mutex::new(HashMap::new()),
            }),
            limits,
            guard,
        })
    }

    /// The bounds this fetcher keeps.
    pub fn limits(&self) -> &FetchLimits {
        &self.limits
    }

    /// The guard this fetcher checks URLs with.
    pub fn guard(&self) -> &AddressGuard {
        &self.guard
    }

    /// Fetches `url` into `sink`: the whole body, which is at most `max_bytes` and starts
    /// like a known file type, within `fetch_timeout` (including the wait for a free slot).
    ///
    /// # Errors
    /// [`FetchError`]; the sink then holds a partial body (or nothing).
    pub async fn fetch(&self, url: &str, sink: &mut impl ChunkSink) -> Result<Fetched, FetchError> {
        let url = Url::parse(url).map_err(|_| Blocked::NotUrl)?;
        let shown = loggable(&url);
        let result =
            match tokio::time::timeout(self.limits.fetch_timeout, self.run(url, sink)).await {
                Ok(result) => result,
                Err(_) => Err(FetchError::Timeout(self.limits.fetch_timeout)),
            };
        match &result {
            Ok(fetched) => tracing::debug!(
                url = %shown,
                size = fetched.size,
                file_type = fetched.file_type.extension(),
                "media fetched"
            ),
            Err(error) => tracing::debug!(url = %shown, %error, "media fetch failed"),
        }
        result
    }

    /// The body of [`Fetcher::fetch`], without its deadline.
    async fn run(&self, url: Url, sink: &mut impl ChunkSink) -> Result<Fetched, FetchError> {
        self.guard.check_url(&url)?;
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        // The host's slot first: a fetch waiting for a busy host holds no global slot.
        let mut claim = self.hosts.claim(&host);
        claim.acquire().await?;
        let _global = self
            .global
            .acquire()
            .await
            .map_err(|_| FetchError::Network("the fetcher was shut down".into()))?;

        let mut response = self
            .client
            .get(url)
            .send()
            .await
            .map_err(|e| self.classify(e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(self.refusal(status.as_u16(), &mut response).await);
        }
        let max = self.limits.max_bytes;
        if let Some(announced) = response.content_length() {
            if announced > max {
                return Err(FetchError::TooLarge {
                    limit: max,
                    announced: Some(announced),
                });
            }
        }
        let final_url = response.url().to_string();

        let mut size: u64 = 0;
        let mut head: Vec<u8> = Vec::new();
        let mut file_type: Option<FileType> = None;
        while let Some(chunk) = response.chunk().await.map_err(|e| self.classify(e))? {
            size = size.saturating_add(chunk.len() as u64);
            if size > max {
                return Err(FetchError::TooLarge {
                    limit: max,
                    announced: None,
                });
            }
            if file_type.is_some() {
                write(sink, &chunk).await?;
                continue;
            }
            if head.is_empty() && chunk.len() >= SNIFF_LEN {
                file_type = Some(sniff(&chunk).ok_or(FetchError::BadType)?);
                write(sink, &chunk).await?;
                continue;
            }
            head.extend_from_slice(&chunk);
            if head.len() >= SNIFF_LEN {
                file_type = Some(sniff(&head).ok_or(FetchError::BadType)?);
                write(sink, &head).await?;
                head = Vec::new();
            }
        }
        let file_type = match file_type {
            Some(file_type) => file_type,
            None => {
                // A body shorter than the sniffing window.
                let file_type = sniff(&head).ok_or(FetchError::BadType)?;
                write(sink, &head).await?;
                file_type
            }
        };
        Ok(Fetched {
            size,
            file_type,
            final_url,
        })
    }

    /// The error for a non-2xx answer: [`FetchError::Expired`] when a 4xx carries a small
    /// JSON body saying the link expired (QQ), [`FetchError::Blocked`] for a redirect the
    /// client did not follow because its target is refused (`file:///…` and other URLs
    /// without a host never reach the redirect policy), else [`FetchError::HttpStatus`].
    /// Reads at most [`ERROR_BODY_PROBE`] bytes of the body.
    async fn refusal(&self, status: u16, response: &mut reqwest::Response) -> FetchError {
        if (300..400).contains(&status) {
            let target = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|location| location.to_str().ok())
                .and_then(|location| response.url().join(location).ok());
            if let Some(Err(blocked)) = target.map(|target| self.guard.check_url(&target)) {
                return FetchError::Blocked(blocked);
            }
        }
        if !(400..500).contains(&status) {
            return FetchError::HttpStatus(status);
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    body.extend_from_slice(&chunk);
                    if body.len() > ERROR_BODY_PROBE {
                        // Not a small JSON answer.
                        return FetchError::HttpStatus(status);
                    }
                }
                Ok(None) => break,
                Err(_) => return FetchError::HttpStatus(status),
            }
        }
        if says_expired(&body) {
            FetchError::Expired(status)
        } else {
            FetchError::HttpStatus(status)
        }
    }

    /// A reqwest error as a [`FetchError`]: the guard's refusals (by the resolver or the
    /// redirect policy) and the redirect limit are found among its causes.
    fn classify(&self, error: reqwest::Error) -> FetchError {
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&error);
        while let Some(current) = cause {
            if let Some(blocked) = current.downcast_ref::<Blocked>() {
                return FetchError::Blocked(blocked.clone());
            }
            if let Some(limit) = current.downcast_ref::<RedirectLimit>() {
                return FetchError::TooManyRedirects(limit.0);
            }
            cause = current.source();
        }
        if error.is_timeout() {
            return FetchError::Timeout(self.limits.fetch_timeout);
        }
        FetchError::Network(crate::http::describe(error))
    }
}

/// Hands a chunk to the sink.
async fn write(sink: &mut impl ChunkSink, chunk: &[u8]) -> Result<(), FetchError> {
    sink.write(chunk).await.map_err(|error| FetchError::Sink {
        kind: error.kind(),
        message: error.to_string(),
    })
}

/// Whether an error body is a JSON answer saying the link expired: QQ's
/// `{"retcode":-5503007,"retmsg":"download url has expired"}` or another JSON object with
/// "expired" in it.
fn says_expired(body: &[u8]) -> bool {
    let Ok(serde_json::Value::Object(fields)) = serde_json::from_slice(body) else {
        return false;
    };
    if fields.get("retcode").and_then(serde_json::Value::as_i64) == Some(QQ_EXPIRED_RETCODE) {
        return true;
    }
    fields.values().any(|value| match value {
        serde_json::Value::String(text) => text.to_ascii_lowercase().contains("expired"),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_answers_are_told_from_other_refusals() {
        assert!(says_expired(
            br#"{"retcode":-5503007,"retmsg":"download url has expired"}"#
        ));
        assert!(says_expired(br#"{"retcode":-5503007}"#));
        assert!(says_expired(br#"{"code":403,"message":"URL Expired"}"#));
        assert!(!says_expired(br#"{"retcode":-1,"retmsg":"not found"}"#));
        assert!(!says_expired(b"<html>link expired</html>"));
        assert!(!says_expired(b""));
        assert!(!says_expired(br#"["expired"]"#));
    }

    #[test]
    fn outcomes_are_the_metric_labels() {
        let cases = [
            (FetchError::Blocked(Blocked::NoHost), "blocked"),
            (
                FetchError::TooLarge {
                    limit: 1,
                    announced: None,
                },
                "too_large",
            ),
            (FetchError::Timeout(Duration::from_secs(1)), "timeout"),
            (FetchError::HttpStatus(404), "http_error"),
            (FetchError::TooManyRedirects(3), "http_error"),
            (FetchError::Expired(400), "expired"),
            (FetchError::BadType, "bad_type"),
            (FetchError::Network("reset".into()), "network"),
            (
                FetchError::Sink {
                    kind: std::io::ErrorKind::StorageFull,
                    message: "full".into(),
                },
                "sink",
            ),
        ];
        for (error, outcome) in cases {
            assert_eq!(error.outcome(), outcome, "{error}");
            assert_eq!(outcome_of(&Err(error)), outcome);
        }
    }

    #[test]
    fn logs_show_host_and_path_only() {
        let url = Url::parse("https://user:pw@multimedia.nt.qq.com.cn:8443/download?rkey=SECRET#x")
            .expect("a URL");
        assert_eq!(loggable(&url), "multimedia.nt.qq.com.cn:8443/download");
    }

    #[test]
    fn silly_limits_do_not_panic() {
        let limits = FetchLimits {
            max_concurrent: 0,
            max_per_host: usize::MAX,
            ..FetchLimits::default()
        };
        assert!(Fetcher::new(limits, AddressGuard::default()).is_ok());
    }

    #[tokio::test]
    async fn refused_urls_fail_before_any_connection() {
        let fetcher =
            Fetcher::new(FetchLimits::default(), AddressGuard::default()).expect("a fetcher");
        let mut sink = Vec::new();
        for url in [
            "not a url",
            "file:///etc/passwd",
            "http://127.0.0.1:9/x.png",
            "http://[::1]:9/x.png",
        ] {
            let error = fetcher.fetch(url, &mut sink).await.expect_err(url);
            assert_eq!(error.outcome(), "blocked", "{url}: {error}");
        }
        assert!(sink.is_empty());
    }
}
