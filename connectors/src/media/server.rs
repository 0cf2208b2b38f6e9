//! The optional built-in media server (`[media] serve_listen`, `public_base_url`,
//! `link_secret`): it answers the signed links of [`super::links`],
//! `GET /m/<sha256>.<ext>?e=<expiry>&s=<signature>`, with the cached file.
//!
//! In order: a malformed path or expiry is `400`; a missing or wrong signature `403`; an
//! expired link `410`; a blob that is not (or no longer) in the cache `404`; else `200` with
//! the bytes, streamed from disk, under the `Content-Type` told from the file's first bytes
//! (never from the link's extension). Every answer is counted in
//! `qunbridge_media_served_total{server="links",outcome}`.
//!
//! [`file_response`] is shared with the `api` connector's `GET /api/v1/media/<sha256>`.

use std::io::{self, SeekFrom};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::net::TcpListener;
use tokio_util::io::ReaderStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::cache::{Blob, MediaCache};
use super::links::{LinkRefused, LinkSigner};
use super::sniff::{sniff, SNIFF_LEN};

/// The longest extension a link may carry (the sniffed types have at most four letters).
const MAX_EXTENSION_LEN: usize = 8;

/// How a request for cached media ended: its status and its metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServeOutcome {
    /// The bytes were sent: `200`.
    Ok,
    /// The path or query is malformed: `400`.
    BadRequest,
    /// The signature is missing or wrong: `403`.
    BadSignature,
    /// The link is past its expiry: `410`.
    Expired,
    /// No such blob in the cache (never stored, or evicted): `404`.
    NotFound,
    /// The cached file could not be read: `500`.
    ReadError,
}

impl ServeOutcome {
    /// The `outcome` label of `qunbridge_media_served_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServeOutcome::Ok => "ok",
            ServeOutcome::BadRequest => "bad_request",
            ServeOutcome::BadSignature => "bad_signature",
            ServeOutcome::Expired => "expired",
            ServeOutcome::NotFound => "not_found",
            ServeOutcome::ReadError => "read_error",
        }
    }

    /// The HTTP status answered.
    pub fn status(self) -> StatusCode {
        match self {
            ServeOutcome::Ok => StatusCode::OK,
            ServeOutcome::BadRequest => StatusCode::BAD_REQUEST,
            ServeOutcome::BadSignature => StatusCode::FORBIDDEN,
            ServeOutcome::Expired => StatusCode::GONE,
            ServeOutcome::NotFound => StatusCode::NOT_FOUND,
            ServeOutcome::ReadError => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short plain-text answer with the status (for every outcome but [`ServeOutcome::Ok`]).
    pub fn into_error_response(self) -> Response {
        let text = match self {
            ServeOutcome::Ok => "ok",
            ServeOutcome::BadRequest => "malformed media link",
            ServeOutcome::BadSignature => "bad signature",
            ServeOutcome::Expired => "this link has expired",
            ServeOutcome::NotFound => "no such file (it may have left the cache)",
            ServeOutcome::ReadError => "the file could not be read",
        };
        (self.status(), text).into_response()
    }
}

/// Counts one request for cached media of `server` (`links` or `api`).
pub fn count_served(server: &'static str, outcome: ServeOutcome) {
    metrics::counter!(
        crate::metrics::MEDIA_SERVED,
        "server" => server,
        "outcome" => outcome.as_str()
    )
    .increment(1);
}

/// What every request of the media server shares.
struct ServerState {
    /// Where the files are.
    cache: MediaCache,
    /// Checks the links.
    signer: Arc<LinkSigner>,
}

/// The media server's routes over `cache`, answering links signed by `signer`.
pub fn router(cache: MediaCache, signer: Arc<LinkSigner>) -> Router {
    Router::new()
        .route("/m/{name}", get(serve_link))
        .with_state(Arc::new(ServerState { cache, signer }))
}

/// Serves the media server on `listener` until `stop` is cancelled.
///
/// # Errors
/// The listener failed.
pub async fn serve(
    listener: TcpListener,
    cache: MediaCache,
    signer: Arc<LinkSigner>,
    stop: CancellationToken,
) -> io::Result<()> {
    axum::serve(listener, router(cache, signer))
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await
}

/// `GET /m/<sha256>.<ext>?e=<expiry>&s=<signature>`.
async fn serve_link(
    State(state): State<Arc<ServerState>>,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
) -> Response {
    let now_secs = crate::context::now_ms() / 1000;
    let response = match check_link(&state.signer, &name, query.as_deref(), now_secs) {
        Ok(sha256) => match state.cache.blob_by_hash(sha256).await {
            Some(blob) => file_response(&blob, "public, max-age=3600").await,
            None => Err(ServeOutcome::NotFound),
        },
        Err(refused) => Err(refused),
    };
    match response {
        Ok(response) => {
            count_served("links", ServeOutcome::Ok);
            response
        }
        Err(outcome) => {
            debug!(message = "Media link refused.", outcome = outcome.as_str());
            count_served("links", outcome);
            outcome.into_error_response()
        }
    }
}

/// Checks a link's last path segment `name` (`<sha256>.<ext>`) and `query` at `now_secs`;
/// the digest it names when the link is good.
///
/// # Errors
/// [`ServeOutcome::BadRequest`] for a malformed name or expiry,
/// [`ServeOutcome::BadSignature`] for a missing or wrong signature, [`ServeOutcome::Expired`]
/// past the expiry.
pub fn check_link<'a>(
    signer: &LinkSigner,
    name: &'a str,
    query: Option<&str>,
    now_secs: u64,
) -> Result<&'a str, ServeOutcome> {
    let (sha256, extension) = name.split_once('.').ok_or(ServeOutcome::BadRequest)?;
    let extension_ok = !extension.is_empty()
        && extension.len() <= MAX_EXTENSION_LEN
        && extension
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit());
    if !is_digest(sha256) || !extension_ok {
        return Err(ServeOutcome::BadRequest);
    }
    let mut expiry = None;
    let mut signature = None;
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        let slot = match key.as_ref() {
            "e" => &mut expiry,
            "s" => &mut signature,
            _ => continue,
        };
        if slot.replace(value).is_some() {
            return Err(ServeOutcome::BadRequest);
        }
    }
    let expiry: u64 = expiry
        .ok_or(ServeOutcome::BadRequest)?
        .parse()
        .map_err(|_| ServeOutcome::BadRequest)?;
    let signature = signature.ok_or(ServeOutcome::BadSignature)?;
    let path = format!("/m/{sha256}.{extension}");
    signer
        .check(&path, expiry, &signature, now_secs)
        .map_err(|refused| match refused {
            LinkRefused::BadSignature => ServeOutcome::BadSignature,
            LinkRefused::Expired => ServeOutcome::Expired,
        })?;
    Ok(sha256)
}

/// Whether `name` is 64 lowercase hex digits (a blob's name).
pub fn is_digest(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// A `200` answer streaming the cached file of `blob`, typed by its first bytes
/// (`application/octet-stream` when they are none of the known types), with
/// `cache_control`.
///
/// # Errors
/// [`ServeOutcome::NotFound`] when the file left the cache, [`ServeOutcome::ReadError`]
/// when it cannot be read.
pub async fn file_response(
    blob: &Blob,
    cache_control: &'static str,
) -> Result<Response, ServeOutcome> {
    let read_error = |error: io::Error| {
        if error.kind() == io::ErrorKind::NotFound {
            ServeOutcome::NotFound
        } else {
            warn!(message = "A cached file could not be read.", sha256 = %blob.sha256, %error);
            ServeOutcome::ReadError
        }
    };
    let mut file = tokio::fs::File::open(&blob.path)
        .await
        .map_err(read_error)?;
    let length = file.metadata().await.map_err(read_error)?.len();
    let mut head = Vec::with_capacity(SNIFF_LEN);
    (&mut file)
        .take(SNIFF_LEN as u64)
        .read_to_end(&mut head)
        .await
        .map_err(read_error)?;
    file.seek(SeekFrom::Start(0)).await.map_err(read_error)?;
    let mime = sniff(&head).map_or("application/octet-stream", |file_type| file_type.mime());
    let mut response = Response::new(Body::from_stream(ReaderStream::new(file)));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    Ok(response)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::Secret;

    const HASH: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn signer() -> LinkSigner {
        LinkSigner::new(
            "https://media.example.org",
            Secret::new("0123456789abcdef0123"),
            Duration::from_secs(3600),
        )
    }

    /// The name and query of a link.
    fn parts(link: &str) -> (String, String) {
        let rest = link
            .strip_prefix("https://media.example.org/m/")
            .unwrap_or_default();
        let (name, query) = rest.split_once('?').unwrap_or((rest, ""));
        (name.to_owned(), query.to_owned())
    }

    #[test]
    fn good_links_pass_and_bad_ones_get_their_status() {
        let signer = signer();
        let (name, query) = parts(&signer.link(HASH, "png", 1_000));
        assert_eq!(check_link(&signer, &name, Some(&query), 1_000), Ok(HASH));
        assert_eq!(
            check_link(&signer, &name, Some(&query), 4_601),
            Err(ServeOutcome::Expired)
        );
        let tampered = query.replace("s=", "s=x");
        assert_eq!(
            check_link(&signer, &name, Some(&tampered), 1_000),
            Err(ServeOutcome::BadSignature)
        );
        let other_ext = name.replace(".png", ".gif");
        assert_eq!(
            check_link(&signer, &other_ext, Some(&query), 1_000),
            Err(ServeOutcome::BadSignature)
        );
        assert_eq!(
            check_link(&signer, &name, Some("e=4600"), 1_000),
            Err(ServeOutcome::BadSignature)
        );
        let later = query.replace("e=4600", "e=9999");
        assert_eq!(
            check_link(&signer, &name, Some(&later), 1_000),
            Err(ServeOutcome::BadSignature),
            "an expiry cannot be extended"
        );
        let malformed = [
            (HASH.to_owned(), query.clone()),
            (format!("{}.png", HASH.to_uppercase()), query.clone()),
            (format!("{}.png", &HASH[1..]), query.clone()),
            (format!("{HASH}."), query.clone()),
            (format!("{HASH}.p/ng"), query.clone()),
            (format!("{HASH}.png"), "s=abc".to_owned()),
            (format!("{HASH}.png"), "e=soon&s=abc".to_owned()),
            (format!("{HASH}.png"), format!("{query}&e=1")),
        ];
        for (name, query) in malformed {
            assert_eq!(
                check_link(&signer, &name, Some(&query), 1_000),
                Err(ServeOutcome::BadRequest),
                "{name}?{query}"
            );
        }
        assert_eq!(
            check_link(&signer, &name, None, 1_000),
            Err(ServeOutcome::BadRequest)
        );
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_names_and_queries_never_panic(name in ".{0,80}", query in ".{0,80}") {
            let _ = check_link(&signer(), &name, Some(&query), 1_000);
        }
    }
}
