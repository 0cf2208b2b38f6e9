//! Sending to QQ (or WeChat) groups through a OneBot v11 implementation: one
//! `send_group_msg` with the rendered array message per relayed message, and `delete_msg`
//! for every known copy of a recalled one. Retcodes 1400/1404 (bad request, unknown action)
//! are permanent; everything else, including 100 (blocked by the server) and NapCat's 1200
//! (risk-control timeout), is retried by the relay a bounded number of times. NapCat fails
//! the whole message with 1200 when one picture of it cannot be fetched or converted
//! (MEDIA.md §1.1), so a message with pictures that gets 1200 is sent once more at once with
//! the pictures as placeholders: the text is never lost with a picture.

use serde_json::{json, Value};

use tracing::warn;

use super::action::{self, Outcome, Pictures};
use super::event;
use crate::context::SendReceipt;
use crate::error::SendError;
use crate::media::MediaContext;
use crate::model::{Outbound, Platform, Segment};
use crate::onebot_ws::{recall, ActionSender, CallError, Outgoing};

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
    /// The address guard: the implementation downloads every picture URL it is given, so a
    /// URL naming an internal host is never handed to it.
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

    /// `outbound` with every picture whose URL the guard refuses turned into its
    /// placeholder; `None` when there is none (the common case: nothing is copied).
    async fn without_refused_pictures(&self, outbound: &Outbound) -> Option<Outbound> {
        let urls = outbound
            .segments
            .iter()
            .filter_map(|segment| match segment {
                // Only what would be handed on: other URLs go as placeholders anyway.
                Segment::Image { url: Some(url), .. }
                    if url.starts_with("http://") || url.starts_with("https://") =>
                {
                    Some(url.as_str())
                }
                _ => None,
            });
        let refused = self
            .media
            .refused_urls(&self.account, self.platform, urls)
            .await;
        if refused.is_empty() {
            return None;
        }
        let mut cleaned = outbound.clone();
        for segment in &mut cleaned.segments {
            if let Segment::Image { url, media, .. } = segment {
                if url.as_ref().is_some_and(|url| refused.contains(url)) {
                    *url = None;
                    *media = None;
                }
            }
        }
        Some(cleaned)
    }
}

impl ActionSender for Egress {
    async fn message(&self, out: Outgoing<'_>) -> Result<SendReceipt, SendError> {
        let cleaned = self.without_refused_pictures(out.outbound).await;
        let outbound = cleaned.as_ref().unwrap_or(out.outbound);
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
        let (has_picture, call) = send(Pictures::Carried);
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
        }),
        Outcome::Failed { retcode, message } if PERMANENT_RETCODES.contains(&retcode) => Err(
            SendError::Permanent(format!("retcode {retcode}: {message}")),
        ),
        Outcome::Failed { retcode, message } => Err(SendError::Retryable(format!(
            "retcode {retcode}: {message}"
        ))),
    }
}
