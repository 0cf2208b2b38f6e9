//! Sending to WeChat (or QQ) groups through a OneBot v12 implementation: one `send_message`
//! with `detail_type: "group"` and a single text segment per relayed message (ComWeChatClient
//! turns every segment into a WeChat message of its own), followed by the message's
//! pictures, each as a message of its own. In `native` and `link` modes a picture is fetched
//! into the cache and uploaded as bytes (`upload_file` type `data`, once per picture and
//! account), then sent as `image{file_id}`, a GIF sticker as `wx.emoji{file_id}`; one that
//! cannot be had or uploaded is its placeholder in the text. In `passthrough` mode pictures
//! are uploaded by URL only when `send_images` is on, else their URLs stay in the text.
//! Uploads go first because they send nothing: nothing goes out half.
//!
//! ComWeChatClient answers a send with `data: true` and no message id, so the relay learns no
//! ids for those copies: a recall of them is answered "done" without calling anything, and
//! the first such send is logged once. Recalls of copies whose ids are known use
//! `delete_message`; an implementation without it (retcode 10002) is not an error either.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use serde_json::{json, Value};
use tracing::{debug, info, warn};

use super::action::{self, ImageRef, Outcome, Rendered, UNSUPPORTED_ACTION};
use crate::context::SendReceipt;
use crate::error::SendError;
use crate::media::carry::{self, Picture, Uploads};
use crate::media::service::Resolved;
use crate::media::sniff::FileType;
use crate::media::{Locator, MediaContext, MediaMode};
use crate::model::Platform;
use crate::onebot_ws::{recall, ActionSender, Outgoing, Session};

/// How long `get_file` with `type: "data"` may take: the answer carries the whole file.
const FILE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long ComWeChatClient keeps an uploaded file (`cache_days = 3`), with a margin.
const UPLOAD_LIFETIME: Duration = Duration::from_secs(2 * 24 * 3600);

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
    /// The file ids of pictures uploaded through this account, reused while they last.
    uploads: Uploads,
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
            uploads: Uploads::new(&account, platform, UPLOAD_LIFETIME),
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
        upload_file(session, params).await
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

impl Egress {
    /// A relayed message with its pictures fetched into the cache: each uploaded as bytes
    /// (`upload_file` type `data`, once per picture and account), then the text, then each
    /// picture as a WeChat message of its own (`wx.emoji` for a GIF sticker). A picture that
    /// could not be had or uploaded shows as its placeholder in the text: uploads send
    /// nothing, so nothing has gone out half.
    async fn message_with_files(&self, out: Outgoing<'_>) -> Result<SendReceipt, SendError> {
        let Outgoing {
            session,
            outbound,
            related,
        } = out;
        let prepared = self.media.prepare(self.platform, outbound).await;
        let mut pictures = Vec::new();
        let mut failed = Vec::new();
        for picture in &prepared {
            let Some(file) = picture.picture() else {
                continue;
            };
            let uploaded = self
                .uploads
                .handle(&self.media, picture.kind, file, |bytes| {
                    upload_data(session, file, bytes)
                })
                .await;
            match uploaded {
                Ok(file_id) if picture.is_sticker() && file.file_type == FileType::Gif => {
                    pictures.push(action::emoji_segment(&file_id));
                }
                Ok(file_id) => pictures.push(action::image_segment(&file_id)),
                Err(reason) => {
                    warn!(message = "Picture upload failed; its placeholder is sent.", account = %self.account, group = %outbound.group, %reason);
                    self.media
                        .fell_back(self.platform, picture.kind, "upload_failed");
                    failed.push(picture.index);
                }
            }
        }
        let mut text = carry::text_with(outbound, &prepared, |picture| {
            (picture.picture().is_none() || failed.contains(&picture.index))
                .then(|| carry::shown_as_text(picture))
        });
        action::insert_quote(&mut text, outbound, related);
        let mut parts = Vec::new();
        if !text.trim().is_empty() {
            parts.push(action::text_segment(&text));
        }
        parts.extend(pictures);
        self.send_parts(session, &outbound.group, parts).await
    }

    /// Uploads the pictures of `outbound` ahead of its send (`upload_file` type `data`, as
    /// [`Egress::message_with_files`] would), sending nothing; in `passthrough` mode there is
    /// nothing to do ahead.
    async fn upload_ahead(&self, out: Outgoing<'_>) {
        if self.media.mode == MediaMode::Passthrough {
            return;
        }
        let prepared = self.media.prepare_ahead(self.platform, out.outbound).await;
        for picture in &prepared {
            let Some(file) = picture.picture() else {
                continue;
            };
            self.uploads
                .ahead(
                    &self.media,
                    picture.kind,
                    file,
                    |bytes| upload_data(out.session, file, bytes),
                    |_| true,
                )
                .await;
        }
    }

    /// Sends each part as a message of its own, in order. A failure of the first is the
    /// message's (nothing went out: the relay may retry); a later one gives up that part
    /// only, since retrying would repeat what went out.
    async fn send_parts(
        &self,
        session: &Session,
        group: &str,
        parts: Vec<Value>,
    ) -> Result<SendReceipt, SendError> {
        if parts.is_empty() {
            debug!(message = "Nothing to send: the message is empty.", account = %self.account, %group);
            return Ok(SendReceipt::default());
        }
        let mut ids = Vec::new();
        for (index, part) in parts.into_iter().enumerate() {
            let params = action::send_params(group, vec![part]);
            match call(session, "send_message", params).await {
                Ok(data) => ids.extend(self.ids_of(&data, group)),
                Err(error) if index == 0 => return Err(error),
                Err(error) => {
                    warn!(message = "A picture could not be sent; the text went out.", account = %self.account, %group, %error);
                    crate::metrics::count_drop("image_failed");
                }
            }
        }
        Ok(SendReceipt {
            message_ids: ids,
            idempotent: false,
            repeated: false,
        })
    }
}

/// Uploads the cached `file`, whose bytes are `bytes`, with `upload_file` type `data`; its
/// `file_id`, or why not.
async fn upload_data(session: &Session, file: &Picture, bytes: Vec<u8>) -> Result<String, String> {
    let params = json!({
        "type": "data",
        "name": file.file_name(),
        "data": STANDARD.encode(bytes),
    });
    upload_file(session, params).await
}

/// Calls `upload_file` with `params`; the `file_id` it answers, or why not.
async fn upload_file(session: &Session, params: Value) -> Result<String, String> {
    let data = call(session, "upload_file", params)
        .await
        .map_err(|error| error.to_string())?;
    data.get("file_id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| "upload_file answered without a file_id".to_owned())
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
    /// A WeChat file's bytes: `get_file` with `type: "data"` (base64 in JSON). Its `url` type
    /// is never asked: ComWeChatClient answers it with a loopback URL naming a Windows path.
    async fn resolve_media(
        &self,
        session: &Session,
        locator: &Locator,
    ) -> Result<Resolved, String> {
        let Locator::Onebot12File { file_id } = locator else {
            return Err("not a OneBot v12 file".to_owned());
        };
        let params = json!({ "file_id": file_id, "type": "data" });
        let body = session
            .call_within("get_file", params, FILE_TIMEOUT)
            .await
            .map_err(|error| format!("get_file: {error}"))?;
        match action::outcome(&body) {
            Outcome::Ok(data) => {
                let encoded = data
                    .get("data")
                    .and_then(Value::as_str)
                    .ok_or_else(|| "get_file answered without data".to_owned())?;
                STANDARD
                    .decode(encoded)
                    .map(Resolved::Bytes)
                    .map_err(|_| "get_file answered data that is not base64".to_owned())
            }
            Outcome::Failed { retcode, message } => {
                Err(format!("get_file: retcode {retcode}: {message}"))
            }
        }
    }

    /// A relayed message: the text, then the pictures (uploaded as bytes in `native` and
    /// `link` modes; by URL when enabled in `passthrough`).
    async fn message(&self, out: Outgoing<'_>) -> Result<SendReceipt, SendError> {
        if self.media.mode != MediaMode::Passthrough {
            return self.message_with_files(out).await;
        }
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
        self.send_parts(session, &outbound.group, parts).await
    }

    /// The pictures of a message about to be sent, uploaded ahead of its pacing token.
    async fn prepare(&self, out: Outgoing<'_>) {
        self.upload_ahead(out).await;
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
