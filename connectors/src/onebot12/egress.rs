//! Sending to WeChat (or QQ) groups through a OneBot v12 implementation: one `send_message`
//! with `detail_type: "group"` and a single text segment per relayed message (ComWeChatClient
//! turns every segment into a WeChat message of its own), optionally followed by the
//! message's pictures (`send_images`): each uploaded first with `upload_file` by URL, then
//! sent as an `image` segment. Uploads go first because they send nothing: if one fails, its
//! URL is written into the text instead and nothing has gone out half.
//!
//! ComWeChatClient answers a send with `data: true` and no message id, so the relay learns no
//! ids for those copies: a recall of them is answered "done" without calling anything, and
//! the first such send is logged once. Recalls of copies whose ids are known use
//! `delete_message`; an implementation without it (retcode 10002) is not an error either.

use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{json, Value};
use tracing::{debug, info, warn};

use super::action::{self, ImageRef, Outcome, Rendered, UNSUPPORTED_ACTION};
use crate::context::SendReceipt;
use crate::error::SendError;
use crate::media::MediaContext;
use crate::model::Platform;
use crate::onebot_ws::{recall, ActionSender, Outgoing, Session};

/// The egress side of one v12 account.
pub struct Egress {
    /// Account id, for logs.
    account: String,
    /// Send pictures as pictures (`upload_file` + `image`) instead of URLs in the text.
    send_images: bool,
    /// Whether "no message ids, no recall" was logged already (sends to several groups run
    /// at once, so it is shared).
    told_no_ids: AtomicBool,
    /// The address guard: the implementation downloads every URL given to `upload_file`, so
    /// a URL naming an internal host is never handed to it.
    media: MediaContext,
    /// The account's platform, for metric labels.
    platform: Platform,
}

impl Egress {
    /// The egress of one account.
    pub fn new(
        account: String,
        platform: Platform,
        send_images: bool,
        media: MediaContext,
    ) -> Egress {
        Egress {
            account,
            send_images,
            told_no_ids: AtomicBool::new(false),
            media,
            platform,
        }
    }

    /// Uploads a picture by URL; its `file_id`.
    async fn upload(&self, session: &Session, image: &ImageRef) -> Result<String, String> {
        let params = json!({ "type": "url", "name": image.name, "url": image.url });
        let data = call(session, "upload_file", params)
            .await
            .map_err(|error| error.to_string())?;
        data.get("file_id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| "upload_file answered without a file_id".to_owned())
    }

    /// The ids a send returned, noting once when the implementation returns none.
    fn ids_of(&self, data: &Value, group: &str) -> Vec<String> {
        let ids = action::message_ids(data);
        if ids.is_empty() {
            if !self.told_no_ids.swap(true, Ordering::Relaxed) {
                info!(message = "The implementation returns no message ids (as ComWeChatClient does): copies sent here cannot be recalled.", account = %self.account);
            }
            debug!(message = "Sent without a message id; recall of this copy is impossible.", account = %self.account, %group);
        }
        ids
    }
}

/// Calls an action; a lost connection or a missing answer is retryable.
async fn call_raw(session: &Session, name: &str, params: Value) -> Result<Outcome, SendError> {
    let body = session
        .call(name, params)
        .await
        .map_err(|error| SendError::Retryable(format!("{name}: {error}")))?;
    Ok(action::outcome(&body))
}

/// Calls an action and maps a failure to a send error; the `data` on success.
async fn call(session: &Session, name: &str, params: Value) -> Result<Value, SendError> {
    match call_raw(session, name, params).await? {
        Outcome::Ok(data) => Ok(data),
        Outcome::Failed { retcode, message } => Err(action::send_error(retcode, &message)),
    }
}

impl ActionSender for Egress {
    /// A relayed message: the text, then the pictures when enabled.
    async fn message(&self, out: Outgoing<'_>) -> Result<SendReceipt, SendError> {
        let Outgoing {
            session,
            outbound,
            related,
        } = out;
        let Rendered { mut text, images } = action::render(outbound, related, self.send_images);
        let refused = self
            .media
            .refused_urls(
                &self.account,
                self.platform,
                images.iter().map(|image| image.url.as_str()),
            )
            .await;
        let mut uploaded = Vec::new();
        for image in &images {
            if refused.contains(&image.url) {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str("[图片]");
                continue;
            }
            match self.upload(session, image).await {
                Ok(file_id) => uploaded.push(file_id),
                Err(reason) => {
                    warn!(message = "Picture upload failed; sending its URL instead.", account = %self.account, group = %outbound.group, %reason);
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str("[图片] ");
                    text.push_str(&image.url);
                }
            }
        }
        let mut parts = Vec::new();
        if !text.trim().is_empty() {
            parts.push(action::text_segment(&text));
        }
        parts.extend(uploaded.iter().map(|id| action::image_segment(id)));
        if parts.is_empty() {
            debug!(message = "Nothing to send: the message is empty.", account = %self.account, group = %outbound.group);
            return Ok(SendReceipt::default());
        }
        let mut ids = Vec::new();
        for (index, part) in parts.into_iter().enumerate() {
            let params = action::send_params(&outbound.group, vec![part]);
            match call(session, "send_message", params).await {
                Ok(data) => ids.extend(self.ids_of(&data, &outbound.group)),
                // Nothing went out yet: the relay may retry the whole message.
                Err(error) if index == 0 => return Err(error),
                // The text went out: retrying would repeat it, so the picture is given up.
                Err(error) => {
                    warn!(message = "A picture could not be sent; the text went out.", account = %self.account, group = %outbound.group, %error);
                    crate::metrics::count_drop("image_failed");
                }
            }
        }
        Ok(SendReceipt { message_ids: ids })
    }

    /// A recall: `delete_message` for every copy whose id is known.
    async fn recall(&self, out: Outgoing<'_>) -> Result<SendReceipt, SendError> {
        let Outgoing {
            session,
            outbound,
            related,
        } = out;
        let account = self.account.as_str();
        recall::each_copy(account, outbound, related, |id| async move {
            let params = json!({ "message_id": id });
            match call_raw(session, "delete_message", params).await? {
                Outcome::Ok(_) => Ok(()),
                Outcome::Failed { retcode, .. } if retcode == UNSUPPORTED_ACTION => {
                    debug!(message = "The implementation cannot recall (delete_message unsupported).", account = %account, group = %outbound.group);
                    Ok(())
                }
                Outcome::Failed { retcode, message } => Err(action::send_error(retcode, &message)),
            }
        })
        .await
    }
}
