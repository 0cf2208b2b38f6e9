//! The `api` connector's HTTP surface: routing, bearer auth, message ingress, and the bytes
//! of the pictures its messages carried.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::shared::Shared;
use super::{sse, ws};
use crate::auth::{check_bearer, AuthOutcome};
use crate::context::now_ms;
use crate::error::IngressError;
use crate::media::server::{count_served, file_response, is_digest, ServeOutcome};
use crate::model::{Envelope, Kind, Origin, Platform, Segment, Sender, ENVELOPE_VERSION};

/// Largest request body accepted, so one client cannot make the daemon buffer megabytes.
const MAX_BODY_BYTES: usize = 256 * 1024;
/// Longest client-supplied message id.
const MAX_ID_LEN: usize = 128;

/// Serves until `intake` stops, then lets in-flight requests finish.
pub(super) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    intake: CancellationToken,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/api/v1/groups/{group}/messages", post(post_message))
        .route("/api/v1/groups/{group}/events", get(sse::group_events))
        .route("/api/v1/ws", get(ws::upgrade))
        .route("/api/v1/media/{sha256}", get(get_media))
        .layer(middleware::from_fn_with_state(
            shared.clone(),
            require_token,
        ))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(shared);
    // Small frames (one message each way) must not wait for Nagle's algorithm.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { intake.cancelled().await })
        .await
}

/// A JSON error body with a status.
pub(super) fn error_response(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

/// Refuses requests without the configured bearer token, with `401`.
async fn require_token(
    State(shared): State<Arc<Shared>>,
    request: Request,
    next: Next,
) -> Response {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|value| value.as_bytes());
    match check_bearer(shared.token.as_deref(), header) {
        AuthOutcome::Allowed => next.run(request).await,
        outcome => {
            let reason = if outcome == AuthOutcome::Missing {
                "missing"
            } else {
                "wrong"
            };
            warn!(message = "API request refused: bearer token.", account = %shared.account, reason);
            metrics::counter!(crate::metrics::AUTH_FAILURES, "account" => shared.account.clone())
                .increment(1);
            let mut response =
                error_response(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            response
        }
    }
}

/// Body of `POST /api/v1/groups/<group>/messages`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PostMessage {
    /// Who says it.
    sender: PostSender,
    /// Plain text; used when `segments` is absent.
    #[serde(default)]
    text: Option<String>,
    /// Structured content; takes precedence over `text`.
    #[serde(default)]
    segments: Option<Vec<Segment>>,
    /// Client message id: posting the same id twice relays once (safe retries).
    #[serde(default)]
    id: Option<String>,
}

/// The sender of a posted message.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PostSender {
    /// Stable user id.
    id: String,
    /// Display name; the id when absent.
    #[serde(default)]
    name: Option<String>,
}

/// Turns a posted body into an envelope, or says what is wrong with it.
fn envelope_from_post(
    account: &str,
    group: &str,
    body: &[u8],
    fallback_id: impl FnOnce() -> String,
) -> Result<Envelope, String> {
    let post: PostMessage =
        serde_json::from_slice(body).map_err(|error| format!("invalid JSON body: {error}"))?;
    if group.is_empty() {
        return Err("the group in the path is empty".into());
    }
    if post.sender.id.trim().is_empty() {
        return Err("`sender.id` must not be empty".into());
    }
    let segments = match (post.segments, post.text) {
        (Some(segments), _) if !segments.is_empty() => segments,
        (_, Some(text)) if !text.is_empty() => vec![Segment::Text { text }],
        _ => return Err("a message needs a non-empty `text` or `segments`".into()),
    };
    let message_id = match post.id {
        Some(id) if id.is_empty() || id.len() > MAX_ID_LEN => {
            return Err(format!("`id` must be 1 to {MAX_ID_LEN} bytes"))
        }
        Some(id) => id,
        None => fallback_id(),
    };
    let name = post
        .sender
        .name
        .filter(|n| !n.trim().is_empty())
        .unwrap_or_else(|| post.sender.id.clone());
    Ok(Envelope {
        v: ENVELOPE_VERSION,
        id: Envelope::make_id(account, group, &message_id),
        origin: Origin {
            platform: Platform::Api,
            account: account.to_owned(),
            group: group.to_owned(),
            message_id,
            group_name: None,
        },
        sender: Sender {
            id: post.sender.id,
            name,
            is_bot: false,
        },
        ts_ms: now_ms(),
        kind: Kind::Message,
        segments,
        member: None,
    })
}

/// A message id that does not repeat: the time plus 64 random bits.
fn fresh_message_id() -> String {
    format!("{:x}-{:016x}", now_ms(), rand::random::<u64>())
}

/// `POST /api/v1/groups/<group>/messages`: ingress, `202` once the broker has it.
async fn post_message(
    State(shared): State<Arc<Shared>>,
    Path(group): Path<String>,
    body: Bytes,
) -> Response {
    if shared.intake.is_cancelled() {
        return error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "qunbridge is shutting down",
        );
    }
    let envelope = match envelope_from_post(&shared.account, &group, &body, fresh_message_id) {
        Ok(envelope) => envelope,
        Err(problem) => {
            debug!(message = "API message refused.", account = %shared.account, %problem);
            crate::metrics::count_drop("malformed");
            return error_response(StatusCode::BAD_REQUEST, &problem);
        }
    };
    let id = envelope.id.clone();
    match shared.ingress.publish(envelope).await {
        Ok(()) => {
            shared.received.increment(1);
            (StatusCode::ACCEPTED, Json(json!({ "id": id }))).into_response()
        }
        Err(IngressError::Busy { retry_after_secs }) => {
            debug!(message = "API message refused: at capacity.", account = %shared.account);
            crate::metrics::count_rejected(&shared.account, "busy");
            let mut response = error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                "qunbridge holds as much as it can keep right now; retry later",
            );
            response.headers_mut().insert(
                header::RETRY_AFTER,
                header::HeaderValue::from(retry_after_secs),
            );
            response
        }
        Err(error) => {
            warn!(message = "API message not accepted by the broker.", account = %shared.account, %error);
            error_response(StatusCode::SERVICE_UNAVAILABLE, &error.to_string())
        }
    }
}

/// `GET /api/v1/media/<sha256>`: a cached picture's bytes under the type told from them;
/// `404` when it is not (or no longer) cached, `400` for a name that is not a sha256.
async fn get_media(State(shared): State<Arc<Shared>>, Path(sha256): Path<String>) -> Response {
    let served = if !is_digest(&sha256) {
        Err(ServeOutcome::BadRequest)
    } else {
        match &shared.media {
            Some(cache) => match cache.blob_by_hash(&sha256).await {
                Some(blob) => file_response(&blob, "private, max-age=3600").await,
                None => Err(ServeOutcome::NotFound),
            },
            None => Err(ServeOutcome::NotFound),
        }
    };
    match served {
        Ok(response) => {
            count_served("api", ServeOutcome::Ok);
            response
        }
        Err(outcome) => {
            count_served("api", outcome);
            let message = match outcome {
                ServeOutcome::BadRequest => "not a sha256 (64 lowercase hex digits)",
                ServeOutcome::NotFound => "no such picture (it may have left the cache)",
                _ => "the picture could not be read",
            };
            error_response(outcome.status(), message)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_post_becomes_an_envelope() {
        let env = envelope_from_post(
            "hub",
            "a",
            br#"{"sender":{"id":"u1","name":"Ann"},"text":"hi"}"#,
            || "m1".into(),
        )
        .expect("valid");
        assert_eq!(env.id, "hub:a:m1");
        assert_eq!(env.sender.name, "Ann");
        assert_eq!(env.segments, vec![Segment::text("hi")]);
    }

    #[test]
    fn bad_posts_say_why() {
        let cases: [(&[u8], &str); 4] = [
            (b"{", "invalid JSON"),
            (br#"{"sender":{"id":""},"text":"x"}"#, "sender.id"),
            (br#"{"sender":{"id":"u"}}"#, "non-empty `text`"),
            (
                br#"{"sender":{"id":"u"},"text":"x","extra":1}"#,
                "unknown field",
            ),
        ];
        for (body, expected) in cases {
            let error = envelope_from_post("hub", "a", body, || "m".into()).expect_err("bad");
            assert!(
                error.contains(expected),
                "{error} should mention {expected}"
            );
        }
    }
}
