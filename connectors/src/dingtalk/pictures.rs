//! Pictures to DingTalk groups (MEDIA.md §1.3), after the text of their message:
//!
//! - The app robot (OpenAPI): each JPG, GIF, PNG or BMP of at most 20 MB is uploaded once per
//!   (picture, account) with `oapi` `media/upload` (`type=image`); the `media_id` is kept in
//!   the media cache and the picture is sent with `sampleImageMsg` (`photoURL` `@<media_id>`)
//!   through the same group send as the text. A picture that cannot go (another type, too
//!   large, a failed upload or send) is sent as its placeholder text and counted in
//!   `qunbridge_media_fallback_total`; it never fails the message, whose text went first.
//! - The custom robot (webhook) cannot upload: with the media server configured, each picture
//!   follows as a markdown message `![](<signed link>)`; without it, the placeholder stays in
//!   the text. The source platform's URL is never sent (except in `passthrough` mode, which
//!   keeps the message's text as it was).

use std::time::Duration;

use tracing::info;

use super::openapi::{ApiError, OpenApi};
use crate::context::SendReceipt;
use crate::error::SendError;
use crate::media::carry::{shown_as_text, text_with, Carry, Picture, PreparedPicture, Uploads};
use crate::media::sniff::FileType;
use crate::media::{MediaContext, MediaKind, MediaMode};
use crate::model::{Kind, Outbound, Platform};

/// Largest picture `media/upload` takes.
pub const MAX_IMAGE_BYTES: u64 = 20 * 1024 * 1024;
/// How long a DingTalk `media_id` is taken to last. The media overview says it does not
/// expire while the organisation exists; community code assumes three days, and so does
/// qunbridge, less an hour so a handle is never used at the edge of its life.
const MEDIA_ID_LIFETIME: Duration = Duration::from_secs(3 * 24 * 3600 - 3600);

/// The uploads of the app robot `account`: a picture is uploaded once per account, its
/// `media_id` kept for [`MEDIA_ID_LIFETIME`].
pub fn uploads(account: &str) -> Uploads {
    Uploads::new(account, Platform::Dingtalk, MEDIA_ID_LIFETIME)
}

/// A picture that follows the text as a message of its own.
#[derive(Debug, Clone)]
pub struct Carried {
    /// The cached picture.
    pub picture: Picture,
    /// Picture or sticker, for metrics.
    pub kind: MediaKind,
    /// What is sent instead when it cannot go.
    pub placeholder: &'static str,
}

/// A message's text for DingTalk and the pictures that follow it.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The text, each picture that does not follow shown as its placeholder (or link).
    pub text: String,
    /// The pictures that follow, in order.
    pub carried: Vec<Carried>,
}

/// The cached picture of `prepared` when it follows the text as a picture of its own.
fn follows(prepared: &PreparedPicture) -> Option<&Picture> {
    prepared.picture().filter(|picture| uploadable(picture))
}

/// Whether the app robot's `media/upload` takes `picture` as an image.
fn uploadable(picture: &Picture) -> bool {
    matches!(
        picture.file_type,
        FileType::Jpeg | FileType::Gif | FileType::Png | FileType::Bmp
    ) && picture.blob.size <= MAX_IMAGE_BYTES
}

/// How a picture that does not follow as its own message shows in the text: in `link` mode a
/// signed link of the media server when there is one, else its placeholder.
fn shown(media: &MediaContext, prepared: &PreparedPicture) -> String {
    match (&prepared.carry, media.mode) {
        (Carry::File(picture), MediaMode::Link) => match media.link(picture) {
            Some(link) => format!("{} {link}", prepared.placeholder),
            None => prepared.placeholder.to_owned(),
        },
        _ => shown_as_text(prepared),
    }
}

/// The app robot's plan for `outbound`: its text and the pictures that follow. In
/// `passthrough` mode the text is the message's own and nothing follows.
pub async fn plan(media: &MediaContext, outbound: &Outbound) -> Plan {
    if media.mode == MediaMode::Passthrough {
        return Plan {
            text: outbound.text.clone(),
            carried: Vec::new(),
        };
    }
    let prepared = media.prepare(Platform::Dingtalk, outbound).await;
    for p in &prepared {
        if p.picture().is_some() && follows(p).is_none() {
            media.fell_back(Platform::Dingtalk, p.kind, "too_large_or_type");
        }
    }
    let text = text_with(outbound, &prepared, |p| match follows(p) {
        Some(_) => None,
        None => Some(shown(media, p)),
    });
    let carried = prepared
        .iter()
        .filter_map(|p| {
            follows(p).map(|picture| Carried {
                picture: picture.clone(),
                kind: p.kind,
                placeholder: p.placeholder,
            })
        })
        .collect();
    Plan { text, carried }
}

/// Sends an outbound message to its group through the app robot: its text
/// ([`OpenApi::send_outbound_text`]), then each picture that follows ([`send_all`]), each
/// uploaded once per account through `uploads` (see [`uploads`]).
///
/// # Errors
/// [`SendError`] when the text could not be sent; a picture never fails the message.
pub async fn send_outbound(
    api: &OpenApi,
    media: &MediaContext,
    uploads: &Uploads,
    outbound: &Outbound,
) -> Result<SendReceipt, SendError> {
    if outbound.kind == Kind::Recall || outbound.text.trim().is_empty() {
        return api
            .send_outbound_text(outbound, &outbound.text, false)
            .await;
    }
    let plan = plan(media, outbound).await;
    let mut receipt = api
        .send_outbound_text(outbound, &plan.text, !plan.carried.is_empty())
        .await?;
    receipt
        .message_ids
        .extend(send_all(api, media, uploads, &outbound.group, &plan.carried).await);
    Ok(receipt)
}

/// Uploads the pictures that sending `outbound` through the app robot would upload
/// ([`send_outbound`]), each once per account through `uploads`, and sends nothing: the
/// relay asks this before the send takes its pacing token, and the send then takes the
/// `media_id`s (or the placeholder of a failed upload) without asking DingTalk again.
pub async fn upload_ahead(
    api: &OpenApi,
    media: &MediaContext,
    uploads: &Uploads,
    outbound: &Outbound,
) {
    if outbound.kind == Kind::Recall
        || outbound.text.trim().is_empty()
        || media.mode == MediaMode::Passthrough
    {
        return;
    }
    let prepared = media.prepare_ahead(Platform::Dingtalk, outbound).await;
    for p in &prepared {
        let Some(picture) = follows(p) else {
            continue;
        };
        // Any failure is kept: the send shows the placeholder, as it does when an upload
        // within the send fails.
        uploads
            .ahead(
                media,
                p.kind,
                picture,
                |bytes| api.upload_image(picture, bytes),
                |_| true,
            )
            .await;
    }
}

/// Sends each of `carried` to `group` after its text, uploaded once per picture through the
/// account's `uploads`; a picture that fails is sent as its placeholder instead. Returns the `processQueryKey`s of what was sent.
pub async fn send_all(
    api: &OpenApi,
    media: &MediaContext,
    uploads: &Uploads,
    group: &str,
    carried: &[Carried],
) -> Vec<String> {
    let mut ids = Vec::new();
    for picture in carried {
        let sent = match send_one(api, media, uploads, group, picture).await {
            Ok(id) => Ok(id),
            Err(error) => {
                info!(message = "A picture could not be sent to DingTalk; its placeholder is sent.", account = %api.account(), %error);
                media.fell_back(Platform::Dingtalk, picture.kind, "send_failed");
                api.send_text(group, picture.placeholder).await
            }
        };
        match sent {
            Ok(id) if !id.is_empty() => ids.push(id),
            Ok(_) => {}
            Err(error) => {
                info!(message = "The placeholder of a picture was not sent either.", account = %api.account(), %error);
            }
        }
    }
    ids
}

/// Uploads `picture` unless this account already did ([`Uploads::handle`]), then sends it to
/// `group`.
async fn send_one(
    api: &OpenApi,
    media: &MediaContext,
    uploads: &Uploads,
    group: &str,
    carried: &Carried,
) -> Result<String, ApiError> {
    let picture = &carried.picture;
    let media_id = uploads
        .handle(media, carried.kind, picture, |bytes| {
            api.upload_image(picture, bytes)
        })
        .await?;
    api.send_group_image(group, &media_id).await
}

/// A picture the custom robot sends as markdown: its signed link, its placeholder (sent
/// instead when the markdown fails) and its kind, for metrics.
pub type Linked = (String, &'static str, MediaKind);

/// The custom robot's plan for `outbound`: its text, and the signed links of the pictures
/// that follow as markdown. Without the media server nothing is fetched: every picture is
/// its placeholder.
pub async fn webhook_plan(media: &MediaContext, outbound: &Outbound) -> (String, Vec<Linked>) {
    match media.mode {
        MediaMode::Passthrough => return (outbound.text.clone(), Vec::new()),
        MediaMode::Native | MediaMode::Link if media.links.is_some() => {}
        _ => {
            let placeholders = MediaContext {
                mode: MediaMode::Placeholder,
                ..media.clone()
            };
            let prepared = placeholders.prepare(Platform::Dingtalk, outbound).await;
            if media.mode != MediaMode::Placeholder {
                for p in &prepared {
                    media.fell_back(Platform::Dingtalk, p.kind, "no_media_server");
                }
            }
            let text = text_with(outbound, &prepared, |p| Some(p.placeholder.to_owned()));
            return (text, Vec::new());
        }
    }
    let prepared = media.prepare(Platform::Dingtalk, outbound).await;
    let link = |p: &PreparedPicture| p.picture().and_then(|picture| media.link(picture));
    let text = text_with(outbound, &prepared, |p| match link(p) {
        Some(_) => None,
        None => Some(p.placeholder.to_owned()),
    });
    let links = prepared
        .iter()
        .filter_map(|p| link(p).map(|link| (link, p.placeholder, p.kind)))
        .collect();
    (text, links)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::cache::Blob;

    fn picture(file_type: FileType, size: u64) -> Picture {
        Picture {
            blob: Blob {
                sha256: "cd".repeat(32),
                size,
                path: "/nonexistent".into(),
            },
            file_type,
        }
    }

    #[test]
    fn the_app_robot_uploads_what_dingtalk_takes() {
        assert!(uploadable(&picture(FileType::Png, 1000)));
        assert!(uploadable(&picture(FileType::Gif, MAX_IMAGE_BYTES)));
        assert!(uploadable(&picture(FileType::Bmp, 10)));
        assert!(!uploadable(&picture(FileType::Webp, 1000)));
        assert!(!uploadable(&picture(FileType::Jpeg, MAX_IMAGE_BYTES + 1)));
    }
}
