//! The DingTalk OpenAPI as an enterprise app robot uses it (PROTOCOLS.md §3.1, §3.5, §3.8):
//! registering a Stream connection (`gateway/connections/open`), the access token
//! (`oauth2/accessToken`, cached and refreshed five minutes before it expires, and once more
//! when the platform calls it invalid), picture download URLs (`robot/messageFiles/download`),
//! picture uploads (`oapi` `media/upload`, with the same token as `access_token`, as the
//! official Stream SDK does) and group sends (`robot/groupMessages/send`, text split to fit
//! the 15000-byte `msgParam`; pictures as `sampleImageMsg`, which [`super::pictures`]
//! sends after their text).
//!
//! Errors keep the platform's `code` and `message` (never the request, which carries the app
//! secret or the token) and say whether a retry can help ([`ApiError::to_send_error`]).

use std::time::Duration;

use reqwest::header::{HeaderMap, ACCEPT};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::{debug, info};

use super::frames::subscriptions;
use super::text::{self, Sent};
use super::{StreamSettings, USER_AGENT};
use crate::context::SendReceipt;
use crate::error::SendError;
use crate::http::{describe, retry_after, BodyError, Progress};
use crate::media::carry::Picture;
use crate::model::{Kind, Outbound};

/// Largest `msgParam` of a group send, in bytes (PROTOCOLS.md §3.8).
pub const MAX_MSG_PARAM_BYTES: usize = 15_000;
/// Bytes of `{"content":""}` around the text in `msgParam`.
const MSG_PARAM_OVERHEAD: usize = 14;
/// Largest response body read from the OpenAPI; answers are small JSON objects.
const MAX_RESPONSE_BYTES: usize = 256 * 1024;
/// How long before its expiry a token is replaced (the Python SDK's margin).
const TOKEN_MARGIN: Duration = Duration::from_secs(300);
/// Token lifetime assumed when the answer does not say (the documented `expireIn`).
const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(7200);
/// Pause after an OpenAPI throttling answer that names no `Retry-After`.
const DEFAULT_THROTTLE_PAUSE: Duration = Duration::from_secs(10);
/// Longest platform message kept in an error, so a huge error body cannot flood the logs.
const MAX_ERROR_TEXT: usize = 300;
/// Messages whose partial progress is remembered for resuming a split send.
const PROGRESS_CAPACITY: usize = 64;
/// How long a resolved download URL is reused for the same code: ingress resolves it for the
/// envelope, and the media service asks again moments later to fetch the bytes.
const DOWNLOAD_URL_REUSE: Duration = Duration::from_secs(60);
/// Download URLs remembered for reuse.
const DOWNLOAD_URLS_KEPT: usize = 128;
/// `oapi` errcodes of a refused or expired access token.
const OAPI_TOKEN_ERRCODES: [i64; 3] = [40001, 40014, 42001];

/// Why an OpenAPI call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// No answer: connection refused, timeout, broken body.
    #[error("DingTalk OpenAPI unreachable: {0}")]
    Network(String),
    /// The access token (or, for `connections/open`, the app) was refused as invalid.
    #[error("authentication refused (HTTP {status}, {code}): {message}")]
    Auth {
        /// HTTP status.
        status: u16,
        /// The platform's error code.
        code: String,
        /// The platform's explanation.
        message: String,
    },
    /// The app credentials were refused when asking for a token.
    #[error("DingTalk refused the app credentials (HTTP {status}, {code}): {message}; check `client_id` and `client_secret`")]
    Credentials {
        /// HTTP status.
        status: u16,
        /// The platform's error code.
        code: String,
        /// The platform's explanation.
        message: String,
    },
    /// Too many calls: wait before the next.
    #[error("throttled by DingTalk ({code}); retry in {pause:?}")]
    Throttled {
        /// The platform's error code (or the HTTP status).
        code: String,
        /// How long to wait.
        pause: Duration,
    },
    /// The platform failed on its side.
    #[error("DingTalk server error (HTTP {status}, {code}): {message}")]
    Server {
        /// HTTP status.
        status: u16,
        /// The platform's error code.
        code: String,
        /// The platform's explanation.
        message: String,
    },
    /// The request was refused for good (bad parameter, missing permission, unknown group).
    #[error("DingTalk refused the request (HTTP {status}, {code}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The platform's error code.
        code: String,
        /// The platform's explanation.
        message: String,
    },
    /// A success answer without what it should carry.
    #[error("unexpected DingTalk answer: {0}")]
    Unexpected(String),
}

impl From<crate::media::carry::NotUploaded> for ApiError {
    fn from(not_uploaded: crate::media::carry::NotUploaded) -> ApiError {
        ApiError::Unexpected(not_uploaded.to_string())
    }
}

impl ApiError {
    /// True when the answer means the app's credentials are wrong or not allowed (HTTP 401
    /// or 403, or an error code about authentication or the client id/secret).
    pub fn is_credential_refusal(&self) -> bool {
        match self {
            ApiError::Auth { .. } | ApiError::Credentials { .. } => true,
            ApiError::Refused { status, code, .. } => {
                let code = code.to_ascii_lowercase();
                *status == 401
                    || *status == 403
                    || [
                        "auth",
                        "clientid",
                        "clientsecret",
                        "appkey",
                        "appsecret",
                        "secret",
                    ]
                    .iter()
                    .any(|hint| code.contains(hint))
            }
            _ => false,
        }
    }

    /// What the relay should do with a send that failed this way.
    pub fn to_send_error(&self) -> SendError {
        match self {
            ApiError::Throttled { pause, .. } => SendError::Throttled(*pause),
            ApiError::Refused { .. } | ApiError::Credentials { .. } => {
                SendError::Permanent(self.to_string())
            }
            ApiError::Network(_)
            | ApiError::Server { .. }
            | ApiError::Auth { .. }
            | ApiError::Unexpected(_) => SendError::Retryable(self.to_string()),
        }
    }
}

/// Text cut to [`MAX_ERROR_TEXT`] characters.
pub fn clip(text: &str) -> String {
    if text.chars().count() <= MAX_ERROR_TEXT {
        return text.to_owned();
    }
    let mut clipped: String = text.chars().take(MAX_ERROR_TEXT).collect();
    clipped.push('…');
    clipped
}

/// Reads at most `limit` bytes of a response body.
///
/// # Errors
/// [`ApiError::Network`] when the body breaks off, [`ApiError::Unexpected`] when it is larger.
pub async fn read_limited(response: reqwest::Response, limit: usize) -> Result<Vec<u8>, ApiError> {
    crate::http::read_limited(response, limit)
        .await
        .map_err(|error| match error {
            BodyError::Broken(text) => ApiError::Network(text),
            BodyError::TooLarge(_) => ApiError::Unexpected(error.to_string()),
        })
}

/// Turns an OpenAPI answer into its JSON body or the error it reports.
fn classify(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    if status.is_success() {
        return json.ok_or_else(|| ApiError::Unexpected("the answer is not JSON".into()));
    }
    let field = |key: &str| {
        json.as_ref().and_then(|j| j.get(key)).map(|v| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    };
    let code = field("code")
        .or_else(|| field("errcode"))
        .unwrap_or_else(|| status.as_u16().to_string());
    let message = clip(
        &field("message")
            .or_else(|| field("errmsg"))
            .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned()),
    );
    let lower = code.to_ascii_lowercase();
    let status_code = status.as_u16();
    if status == StatusCode::TOO_MANY_REQUESTS
        || ["qpslimit", "throttl", "flowcontrol", "ratelimit"]
            .iter()
            .any(|hint| lower.contains(hint))
    {
        return Err(ApiError::Throttled {
            code,
            pause: retry_after(headers).unwrap_or(DEFAULT_THROTTLE_PAUSE),
        });
    }
    if status == StatusCode::UNAUTHORIZED
        || lower.contains("invalidauthentication")
        || (lower.contains("accesstoken") && !lower.contains("permission"))
    {
        return Err(ApiError::Auth {
            status: status_code,
            code,
            message,
        });
    }
    if status.is_server_error() {
        return Err(ApiError::Server {
            status: status_code,
            code,
            message,
        });
    }
    Err(ApiError::Refused {
        status: status_code,
        code,
        message,
    })
}

/// A ticket for one Stream connection: where to connect and the single-use ticket.
pub struct Ticket {
    /// The WebSocket endpoint the gateway named.
    pub endpoint: String,
    /// Valid for one connection within 90 s; never stored or logged.
    ticket: String,
}

impl std::fmt::Debug for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ticket")
            .field("endpoint", &self.endpoint)
            .field("ticket", &"<redacted>")
            .finish()
    }
}

impl Ticket {
    /// The URL to open: the endpoint with `ticket=<url-encoded ticket>` added to its query
    /// (an `http(s)` endpoint is taken as `ws(s)`).
    ///
    /// # Errors
    /// A description when the endpoint is not a usable URL.
    pub fn connect_url(&self) -> Result<String, String> {
        let mut url = reqwest::Url::parse(&self.endpoint)
            .map_err(|error| format!("the gateway endpoint is not a URL: {error}"))?;
        let scheme = match url.scheme() {
            "ws" | "http" => "ws",
            "wss" | "https" => "wss",
            other => return Err(format!("the gateway endpoint has scheme `{other}`")),
        };
        if url.scheme() != scheme && url.set_scheme(scheme).is_err() {
            return Err("the gateway endpoint cannot be used as a WebSocket URL".into());
        }
        url.query_pairs_mut().append_pair("ticket", &self.ticket);
        Ok(url.into())
    }
}

/// A cached access token.
struct CachedToken {
    /// The token; sent only in the `x-acs-dingtalk-access-token` header.
    value: String,
    /// When to fetch a new one (five minutes before it expires).
    refresh_at: Instant,
}

/// The OpenAPI client of one enterprise app robot.
pub struct OpenApi {
    /// Shared HTTP client (rustls, timeouts, no redirects).
    http: reqwest::Client,
    /// Account id, for logs.
    account: String,
    /// Connection settings and credentials.
    settings: StreamSettings,
    /// The current access token; the lock also makes concurrent refreshes wait for one.
    token: Mutex<Option<CachedToken>>,
    /// Parts of split messages already sent, for resuming a retried message.
    progress: Mutex<Progress<Sent>>,
    /// Download URLs resolved lately: (download code, URL, when), oldest first.
    download_urls: Mutex<std::collections::VecDeque<(String, String, Instant)>>,
}

/// Sends `request` and reads its answer (bounded), classified as DingTalk words failures;
/// the HTTP status with the answer.
async fn answer_of(request: reqwest::RequestBuilder) -> Result<(StatusCode, Value), ApiError> {
    let response = request
        .send()
        .await
        .map_err(|error| ApiError::Network(describe(error)))?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = read_limited(response, MAX_RESPONSE_BYTES).await?;
    classify(status, &headers, &body).map(|answer| (status, answer))
}

impl OpenApi {
    /// A client for one account.
    pub fn new(http: reqwest::Client, account: String, settings: StreamSettings) -> OpenApi {
        OpenApi {
            http,
            account,
            settings,
            token: Mutex::new(None),
            progress: Mutex::new(Progress::new(PROGRESS_CAPACITY)),
            download_urls: Mutex::new(std::collections::VecDeque::new()),
        }
    }

    /// POSTs JSON to `{api_base}{path}`, with the access token when given.
    async fn post(&self, path: &str, body: &Value, token: Option<&str>) -> Result<Value, ApiError> {
        let mut request = self
            .http
            .post(format!("{}{path}", self.settings.api_base))
            .header(ACCEPT, "application/json")
            .json(body);
        if let Some(token) = token {
            request = request.header("x-acs-dingtalk-access-token", token);
        }
        answer_of(request).await.map(|(_, answer)| answer)
    }

    /// Registers a Stream connection and returns its ticket.
    ///
    /// # Errors
    /// [`ApiError`]; [`ApiError::is_credential_refusal`] tells bad credentials apart.
    pub async fn open_connection(&self) -> Result<Ticket, ApiError> {
        let body = json!({
            "clientId": self.settings.client_id,
            "clientSecret": self.settings.client_secret.expose(),
            "subscriptions": subscriptions(self.settings.events),
            "ua": USER_AGENT,
        });
        let answer = self
            .post("/v1.0/gateway/connections/open", &body, None)
            .await?;
        let field = |key: &str| {
            answer
                .get(key)
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        match (field("endpoint"), field("ticket")) {
            (Some(endpoint), Some(ticket)) => Ok(Ticket { endpoint, ticket }),
            _ => Err(ApiError::Unexpected(
                "connections/open answered without `endpoint` and `ticket`".into(),
            )),
        }
    }

    /// Fetches a new access token.
    async fn fetch_token(&self) -> Result<CachedToken, ApiError> {
        let body = json!({
            "appKey": self.settings.client_id,
            "appSecret": self.settings.client_secret.expose(),
        });
        let answer = match self.post("/v1.0/oauth2/accessToken", &body, None).await {
            Ok(answer) => answer,
            Err(
                ApiError::Auth {
                    status,
                    code,
                    message,
                }
                | ApiError::Refused {
                    status,
                    code,
                    message,
                },
            ) => {
                return Err(ApiError::Credentials {
                    status,
                    code,
                    message,
                })
            }
            Err(other) => return Err(other),
        };
        let Some(value) = answer
            .get("accessToken")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
        else {
            return Err(ApiError::Unexpected(
                "oauth2/accessToken answered without `accessToken`".into(),
            ));
        };
        let lifetime = answer
            .get("expireIn")
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
            .map_or(DEFAULT_TOKEN_LIFETIME, Duration::from_secs);
        let usable = if lifetime > TOKEN_MARGIN * 2 {
            lifetime - TOKEN_MARGIN
        } else {
            lifetime / 2
        };
        debug!(message = "DingTalk access token fetched.", account = %self.account, valid_s = usable.as_secs());
        Ok(CachedToken {
            value: value.to_owned(),
            refresh_at: Instant::now() + usable,
        })
    }

    /// The current access token, fetched when there is none or it is about to expire.
    async fn access_token(&self) -> Result<String, ApiError> {
        let mut cached = self.token.lock().await;
        if let Some(token) = cached.as_ref() {
            if Instant::now() < token.refresh_at {
                return Ok(token.value.clone());
            }
        }
        let fresh = self.fetch_token().await?;
        let value = fresh.value.clone();
        *cached = Some(fresh);
        Ok(value)
    }

    /// Forgets `stale` if it is still the cached token.
    async fn invalidate(&self, stale: &str) {
        let mut cached = self.token.lock().await;
        if cached.as_ref().is_some_and(|t| t.value == stale) {
            *cached = None;
        }
    }

    /// POSTs with the access token; when the token is refused, fetches a new one and tries
    /// once more.
    async fn post_authed(&self, path: &str, body: &Value) -> Result<Value, ApiError> {
        let token = self.access_token().await?;
        match self.post(path, body, Some(&token)).await {
            Err(ApiError::Auth { code, .. }) => {
                info!(message = "DingTalk refused the access token; fetching a new one.", account = %self.account, %code);
                self.invalidate(&token).await;
                let token = self.access_token().await?;
                self.post(path, body, Some(&token)).await
            }
            other => other,
        }
    }

    /// The download URL of a picture a bot message named by its download code; the URL
    /// resolved for the same code within the last minute is reused.
    ///
    /// # Errors
    /// [`ApiError`] when the platform gives none.
    pub async fn download_url(&self, download_code: &str) -> Result<String, ApiError> {
        {
            let mut recent = self.download_urls.lock().await;
            recent.retain(|(_, _, at)| at.elapsed() < DOWNLOAD_URL_REUSE);
            if let Some((_, url, _)) = recent.iter().find(|(code, _, _)| code == download_code) {
                return Ok(url.clone());
            }
        }
        let url = self.resolve_download_url(download_code).await?;
        let mut recent = self.download_urls.lock().await;
        if recent.len() >= DOWNLOAD_URLS_KEPT {
            recent.pop_front();
        }
        recent.push_back((download_code.to_owned(), url.clone(), Instant::now()));
        Ok(url)
    }

    /// Asks `messageFiles/download` for the URL of `download_code`.
    async fn resolve_download_url(&self, download_code: &str) -> Result<String, ApiError> {
        let body = json!({
            "robotCode": self.settings.robot_code,
            "downloadCode": download_code,
        });
        let answer = self
            .post_authed("/v1.0/robot/messageFiles/download", &body)
            .await?;
        answer
            .get("downloadUrl")
            .and_then(Value::as_str)
            .filter(|url| !url.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| {
                ApiError::Unexpected("messageFiles/download answered without `downloadUrl`".into())
            })
    }

    /// Sends one message of `msg_key` with `msg_param` to a group; returns the
    /// `processQueryKey` (empty when absent).
    async fn send_group(
        &self,
        group: &str,
        msg_key: &str,
        msg_param: &Value,
    ) -> Result<String, ApiError> {
        let body = json!({
            "robotCode": self.settings.robot_code,
            "openConversationId": group,
            "msgKey": msg_key,
            "msgParam": msg_param.to_string(),
        });
        let answer = self
            .post_authed("/v1.0/robot/groupMessages/send", &body)
            .await?;
        Ok(answer
            .get("processQueryKey")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned())
    }

    /// Sends one text to a group; returns the `processQueryKey` (empty when absent).
    async fn send_group_text(&self, group: &str, content: &str) -> Result<String, ApiError> {
        self.send_group(group, "sampleText", &json!({ "content": content }))
            .await
    }

    /// Sends a picture uploaded as `media_id` to a group (`sampleImageMsg`, `photoURL`
    /// `@<media_id>`); returns the `processQueryKey` (empty when absent).
    ///
    /// # Errors
    /// [`ApiError`] when the platform refuses it.
    pub async fn send_group_image(&self, group: &str, media_id: &str) -> Result<String, ApiError> {
        let photo = if media_id.starts_with('@') {
            media_id.to_owned()
        } else {
            format!("@{media_id}")
        };
        self.send_group(group, "sampleImageMsg", &json!({ "photoURL": photo }))
            .await
    }

    /// Uploads `bytes`, the cached `picture`, with `oapi` `media/upload` (`type=image`,
    /// multipart `media`); returns its `media_id`. A refused token is replaced once, as for
    /// the other calls.
    ///
    /// # Errors
    /// [`ApiError`] when the platform refuses it.
    pub async fn upload_image(
        &self,
        picture: &Picture,
        bytes: Vec<u8>,
    ) -> Result<String, ApiError> {
        let token = self.access_token().await?;
        match self.upload_with(&token, picture, bytes.clone()).await {
            Err(ApiError::Auth { code, .. }) => {
                info!(message = "DingTalk refused the access token for an upload; fetching a new one.", account = %self.account, %code);
                self.invalidate(&token).await;
                let token = self.access_token().await?;
                self.upload_with(&token, picture, bytes).await
            }
            other => other,
        }
    }

    /// One `media/upload` request with `token`.
    async fn upload_with(
        &self,
        token: &str,
        picture: &Picture,
        bytes: Vec<u8>,
    ) -> Result<String, ApiError> {
        let mut url = reqwest::Url::parse(&format!("{}/media/upload", self.settings.oapi_base))
            .map_err(|_| ApiError::Unexpected("`oapi_base` is not a URL".into()))?;
        url.query_pairs_mut()
            .append_pair("access_token", token)
            .append_pair("type", "image");
        let part = reqwest::multipart::Part::bytes(bytes)
            .file_name(picture.file_name())
            .mime_str(picture.file_type.mime())
            .map_err(|error| ApiError::Unexpected(describe(error)))?;
        let form = reqwest::multipart::Form::new()
            .text("type", "image")
            .part("media", part);
        let request = self
            .http
            .post(url)
            .header(ACCEPT, "application/json")
            .multipart(form);
        let (status, answer) = answer_of(request).await?;
        let errcode = answer.get("errcode").and_then(Value::as_i64).unwrap_or(0);
        let errmsg = clip(
            answer
                .get("errmsg")
                .and_then(Value::as_str)
                .unwrap_or_default(),
        );
        if OAPI_TOKEN_ERRCODES.contains(&errcode) {
            return Err(ApiError::Auth {
                status: status.as_u16(),
                code: errcode.to_string(),
                message: errmsg,
            });
        }
        if errcode != 0 {
            return Err(ApiError::Refused {
                status: status.as_u16(),
                code: errcode.to_string(),
                message: errmsg,
            });
        }
        answer
            .get("media_id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| ApiError::Unexpected("media/upload answered without `media_id`".into()))
    }

    /// Sends the text of an outbound message to its group (`outbound.group` is the
    /// `openConversationId`): `text` (the message's text as this destination shows it),
    /// split into several sends when it is longer than one `msgParam` allows. A retry of a
    /// message that failed in the middle sends only the parts still missing. With
    /// `pictures_follow`, an empty text is not sent (the pictures are the message).
    ///
    /// # Errors
    /// [`SendError`] as [`ApiError::to_send_error`] maps the failure.
    pub async fn send_outbound_text(
        &self,
        outbound: &Outbound,
        text: &str,
        pictures_follow: bool,
    ) -> Result<SendReceipt, SendError> {
        if outbound.kind == Kind::Recall {
            debug!(message = "Recall is not relayed to DingTalk; skipped.", account = %self.account);
            return Ok(SendReceipt::default());
        }
        if outbound.text.trim().is_empty() {
            return Err(SendError::Permanent("the message is empty".into()));
        }
        let parts = text::split(text, MAX_MSG_PARAM_BYTES - MSG_PARAM_OVERHEAD);
        let key = crate::http::progress_key(&outbound.id, &outbound.group, &outbound.text);
        let mut sent = self.progress.lock().await.take(&key);
        for part in parts.iter().skip(sent.parts) {
            // A message of nothing but pictures has no text to send.
            if pictures_follow && part.trim().is_empty() {
                sent.parts += 1;
                continue;
            }
            match self.send_group_text(&outbound.group, part).await {
                Ok(id) => {
                    sent.parts += 1;
                    if !id.is_empty() {
                        sent.ids.push(id);
                    }
                }
                Err(error) => {
                    let outcome = error.to_send_error();
                    if !matches!(outcome, SendError::Permanent(_)) {
                        self.progress.lock().await.keep(key, sent);
                    }
                    return Err(outcome);
                }
            }
        }
        let Sent { ids, .. } = sent;
        Ok(SendReceipt {
            message_ids: ids,
            idempotent: false,
            repeated: false,
        })
    }

    /// Sends `content` as a text to `group`, for a picture's placeholder; returns the
    /// `processQueryKey` (empty when absent).
    ///
    /// # Errors
    /// [`ApiError`] when the platform refuses it.
    pub async fn send_text(&self, group: &str, content: &str) -> Result<String, ApiError> {
        self.send_group_text(group, content).await
    }

    /// The account id, for logs.
    pub fn account(&self) -> &str {
        &self.account
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(retry: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(retry) = retry {
            headers.insert(reqwest::header::RETRY_AFTER, retry.parse().expect("header"));
        }
        headers
    }

    #[test]
    fn answers_are_classified() {
        let ok = classify(
            StatusCode::OK,
            &headers(None),
            br#"{"processQueryKey":"k"}"#,
        );
        assert_eq!(ok.expect("ok")["processQueryKey"], "k");
        let auth = classify(
            StatusCode::BAD_REQUEST,
            &headers(None),
            "{\"code\":\"InvalidAuthentication\",\"message\":\"不合法的access_token\"}".as_bytes(),
        )
        .expect_err("auth");
        assert!(
            matches!(auth, ApiError::Auth { status: 400, .. }),
            "{auth:?}"
        );
        assert!(matches!(auth.to_send_error(), SendError::Retryable(_)));
        let qps = classify(
            StatusCode::FORBIDDEN,
            &headers(Some("3")),
            br#"{"code":"Forbidden.AccessDenied.QpsLimitForApi","message":"qps"}"#,
        )
        .expect_err("throttled");
        assert_eq!(
            qps.to_send_error(),
            SendError::Throttled(Duration::from_secs(3))
        );
        let permission = classify(
            StatusCode::FORBIDDEN,
            &headers(None),
            br#"{"code":"Forbidden.AccessDenied.AccessTokenPermissionDenied","message":"no"}"#,
        )
        .expect_err("refused");
        assert!(matches!(
            permission.to_send_error(),
            SendError::Permanent(_)
        ));
        assert!(permission.is_credential_refusal());
        let bad = classify(
            StatusCode::BAD_REQUEST,
            &headers(None),
            br#"{"code":"invalidParameter","message":"robot not in group"}"#,
        )
        .expect_err("bad request");
        assert!(matches!(bad.to_send_error(), SendError::Permanent(_)));
        assert!(!bad.is_credential_refusal());
        let down =
            classify(StatusCode::BAD_GATEWAY, &headers(None), b"<html>").expect_err("server");
        assert!(matches!(down.to_send_error(), SendError::Retryable(_)));
        let limited =
            classify(StatusCode::TOO_MANY_REQUESTS, &headers(None), b"").expect_err("throttled");
        assert_eq!(
            limited.to_send_error(),
            SendError::Throttled(DEFAULT_THROTTLE_PAUSE)
        );
    }

    #[test]
    fn the_ticket_is_added_to_the_endpoint_query() {
        let ticket = Ticket {
            endpoint: "wss://gw.example/connect?x=1".into(),
            ticket: "a+b/c=".into(),
        };
        assert_eq!(
            ticket.connect_url().expect("url"),
            "wss://gw.example/connect?x=1&ticket=a%2Bb%2Fc%3D"
        );
        assert!(!format!("{ticket:?}").contains("a+b"));
        let http = Ticket {
            endpoint: "http://127.0.0.1:1/connect".into(),
            ticket: "t".into(),
        };
        assert_eq!(
            http.connect_url().expect("url"),
            "ws://127.0.0.1:1/connect?ticket=t"
        );
    }
}
