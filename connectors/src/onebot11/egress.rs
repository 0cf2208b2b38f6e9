//! Sending to QQ (or WeChat) groups through a OneBot v11 implementation: one
//! `send_group_msg` with the rendered array message per relayed message, and `delete_msg`
//! for every known copy of a recalled one. Pictures are segments of the same message: in
//! `native` and `link` modes their bytes from the cache as `base64://…` (the implementation
//! is never handed a URL to fetch), in `passthrough` their source URLs, checked by the
//! address guard first. The account also answers `get_image` refreshes of the QQ pictures
//! it saw, for the media service. Retcodes 1400/1404 (bad request, unknown action)
//! are permanent; everything else, including 100 (blocked by the server) and NapCat's 1200
//! (risk-control timeout), is retried by the relay a bounded number of times. NapCat fails
//! the whole message with 1200 when one picture of it cannot be fetched or converted
//! (MEDIA.md §1.1), so a message with pictures that gets 1200 is sent once more at once with
//! the pictures as placeholders: the text is never lost with a picture.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use tracing::warn;

use super::action::{self, Outcome, Pictures};
use super::event;
use crate::context::SendReceipt;
use crate::error::SendError;
use crate::media::carry::Carry;
use crate::media::service::Resolved;
use crate::media::{Locator, MediaContext};
use crate::model::{Outbound, Platform, Segment};
use crate::onebot_ws::{recall, ActionSender, CallError, Outgoing, Session};

/// Retcodes that mean the request itself is wrong (bad request, unknown action): retrying
/// will not help.
const PERMANENT_RETCODES: [i64; 2] = [1400, 1404];
/// NapCat's retcode for an action that failed while running, which is what a picture it
/// could not download or convert makes of the whole message.
const PICTURE_FAILED_RETCODE: i64 = 1200;

/// The egress side of one v11 account.
pub struct Egress {
    /// Account id, for logs.
    account: String,
    /// The destination's platform: QQ faces stay faces only between QQ groups.
    platform: Platform,
    /// Pictures: fetched and sent as `base64://` bytes (`native`), or by their source URL in
    /// `passthrough`, where the address guard keeps URLs naming internal hosts from the
    /// implementation (which downloads every URL it is given).
    media: MediaContext,
}

impl Egress {
    /// The egress of one account on `platform`.
    pub fn new(account: String, platform: Platform, media: MediaContext) -> Egress {
        Egress {
            account,
            platform,
            media,
        }
    }

    /// The `file` value of each picture of `outbound` that goes as a picture, by its
    /// segment index: `base64://` bytes from the cache (`native`, `link`), or the source URL
    /// in `passthrough` unless the guard refuses it. Every other picture goes as its
    /// placeholder. Nothing is asked for a message without pictures.
    async fn picture_files(&self, outbound: &Outbound) -> Vec<(usize, String)> {
        if !outbound
            .segments
            .iter()
            .any(|segment| matches!(segment, Segment::Image { .. }))
        {
            return Vec::new();
        }
        let prepared = self.media.prepare(self.platform, outbound).await;
        let source_urls = prepared.iter().filter_map(|picture| match &picture.carry {
            Carry::SourceUrl(url) => Some(url.as_str()),
            _ => None,
        });
        let refused = self
            .media
            .refused_urls(&self.account, self.platform, source_urls)
            .await;
        let mut files = Vec::with_capacity(prepared.len());
        for picture in &prepared {
            match &picture.carry {
                Carry::File(file) => match file.bytes().await {
                    Ok(bytes) => files.push((
                        picture.index,
                        format!("base64://{}", STANDARD.encode(bytes)),
                    )),
                    Err(error) => {
                        warn!(message = "A cached picture could not be read; its placeholder is sent.", account = %self.account, %error);
                        self.media
                            .fell_back(self.platform, picture.kind, "cache_error");
                    }
                },
                Carry::SourceUrl(url) if !refused.contains(url) => {
                    files.push((picture.index, url.clone()));
                }
                Carry::SourceUrl(_) | Carry::Placeholder => {}
            }
        }
        files
    }
}

impl ActionSender for Egress {
    /// A fresh URL for a QQ picture: `get_image {file}` (NapCat keeps about a day of them),
    /// or its bytes when the implementation answers with `base64` only.
    async fn resolve_media(
        &self,
        session: &Session,
        locator: &Locator,
    ) -> Result<Resolved, String> {
        let Locator::Onebot11Image { file, .. } = locator else {
            return Err("not a QQ picture".to_owned());
        };
        let body = session
            .call("get_image", json!({ "file": file }))
            .await
            .map_err(|error| format!("get_image: {error}"))?;
        match action::outcome(&body) {
            Outcome::Ok(data) => {
                if let Some(url) = data
                    .get("url")
                    .and_then(Value::as_str)
                    .filter(|url| url.starts_with("http://") || url.starts_with("https://"))
                {
                    return Ok(Resolved::Url(url.to_owned()));
                }
                let encoded = data
                    .get("base64")
                    .and_then(Value::as_str)
                    .ok_or_else(|| "get_image answered without a URL".to_owned())?;
                STANDARD
                    .decode(encoded)
                    .map(Resolved::Bytes)
                    .map_err(|_| "get_image answered base64 that does not decode".to_owned())
            }
            Outcome::Failed { retcode, message } => {
                Err(format!("get_image: retcode {retcode}: {message}"))
            }
        }
    }

    /// Nothing to upload ahead: QQ pictures travel inside the message as `base64://`.
    async fn prepare(&self, out: Outgoing<'_>) {
        let _ = out;
    }

    async fn message(&self, out: Outgoing<'_>) -> Result<SendReceipt, SendError> {
        let outbound = out.outbound;
        let files = self.picture_files(outbound).await;
        let send = |pictures| {
            let message = action::render_message(outbound, out.related, self.platform, pictures);
            let has_picture = message.iter().any(|segment| segment["type"] == "image");
            let params = json!({
                "group_id": action::id_value(&out.outbound.group),
                "message": message,
                "auto_escape": false,
            });
            (has_picture, out.session.call("send_group_msg", params))
        };
        let (has_picture, call) = send(Pictures::Carried(&files));
        let answer = call.await;
        if has_picture && failed_with(&answer, PICTURE_FAILED_RETCODE) {
            warn!(
                message = "The implementation failed a message with pictures (retcode 1200); sending it once more with placeholders.",
                account = %self.account
            );
            metrics::counter!(
                crate::metrics::MEDIA_FALLBACK,
                "platform" => self.platform.as_str(),
                "kind" => "image",
                "reason" => "send_failed"
            )
            .increment(1);
            let (_, call) = send(Pictures::Placeholders);
            return send_outcome(call.await);
        }
        send_outcome(answer)
    }

    async fn recall(&self, out: Outgoing<'_>) -> Result<SendReceipt, SendError> {
        let session = out.session;
        recall::each_copy(&self.account, out.outbound, out.related, |id| async move {
            let params = json!({ "message_id": action::id_value(&id) });
            send_outcome(session.call("delete_msg", params).await).map(|_| ())
        })
        .await
    }
}

/// True when the action was answered with a failure of `retcode`.
fn failed_with(result: &Result<Value, CallError>, retcode: i64) -> bool {
    matches!(
        result.as_ref().map(action::outcome),
        Ok(Outcome::Failed { retcode: failed, .. }) if failed == retcode
    )
}

/// Maps an action's result to a send outcome.
fn send_outcome(result: Result<Value, CallError>) -> Result<SendReceipt, SendError> {
    let body = result.map_err(|error| SendError::Retryable(error.to_string()))?;
    match action::outcome(&body) {
        Outcome::Ok(data) => Ok(SendReceipt {
            message_ids: event::id_of(data.get("message_id")).into_iter().collect(),
            idempotent: false,
            repeated: false,
        }),
        Outcome::Failed { retcode, message } if PERMANENT_RETCODES.contains(&retcode) => Err(
            SendError::Permanent(format!("retcode {retcode}: {message}")),
        ),
        Outcome::Failed { retcode, message } => Err(SendError::Retryable(format!(
            "retcode {retcode}: {message}"
        ))),
    }
}
