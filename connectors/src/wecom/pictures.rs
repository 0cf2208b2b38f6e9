//! Pictures through a WeCom group robot (PROTOCOLS.md §4.1, MEDIA.md §1.4), sent after the
//! text of their message:
//!
//! - a JPG or PNG of at most 2 MB as an `image` message: `{"base64": …, "md5": <hex MD5 of
//!   the raw bytes>}`;
//! - anything else (larger, GIF, WebP, BMP) as a file when the account sets
//!   `large_images = "file"`: uploaded once per (picture, robot) with
//!   `upload_media?key=…&type=file` (multipart `media`, up to 20 MB), the `media_id` kept for
//!   the three days WeCom keeps it, then a `file` message; else its placeholder in the text
//!   (or, in `link` mode, a signed link of the media server);
//! - stickers as `[动画表情]`: a robot has no sticker message, and a GIF as a file would be
//!   no better.
//!
//! What decides a picture's fate is [`decide`]; the message bodies, the upload and the media
//! ids kept are here too. The robot ([`super::webhook`]) sends them after the text, pauses on
//! 45009 as it does for text, and otherwise falls back to the placeholder.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use md5::{Digest, Md5};
use serde_json::{json, Value};

use super::LargeImages;
use crate::error::SendError;
use crate::http::{describe, read_limited};
use crate::media::carry::{shown_as_text, Carry, Picture, PreparedPicture, Uploads};
use crate::media::sniff::FileType;
use crate::media::{MediaContext, MediaMode};
use crate::model::Platform;

/// Largest picture an `image` message takes, before base64.
pub const MAX_IMAGE_BYTES: u64 = 2 * 1024 * 1024;
/// Largest file `upload_media` takes.
pub const MAX_FILE_BYTES: u64 = 20 * 1024 * 1024;
/// Smallest file `upload_media` takes ("every file > 5 bytes").
const MIN_FILE_BYTES: u64 = 6;
/// How long WeCom keeps an uploaded `media_id` (three days), less an hour so a handle is
/// never used at the edge of its life.
const MEDIA_ID_LIFETIME: Duration = Duration::from_secs(3 * 24 * 3600 - 3600);
/// Largest answer read from `upload_media`.
const MAX_UPLOAD_ANSWER: usize = 64 * 1024;
/// What a sticker shows as on WeCom.
const STICKER_TEXT: &str = "[动画表情]";

/// What becomes of one picture of a message on a WeCom robot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// An `image` message after the text.
    Image(Picture),
    /// An uploaded file, then a `file` message after the text.
    File(Picture),
    /// Shown in the text as this.
    Text(String),
}

impl Decision {
    /// The text that stands for the picture inside the message text, `None` when it follows
    /// as a message of its own.
    pub fn shown(&self) -> Option<String> {
        match self {
            Decision::Image(_) | Decision::File(_) => None,
            Decision::Text(text) => Some(text.clone()),
        }
    }
}

/// What a WeCom robot does with `prepared`, a picture of a message: counted in
/// `qunbridge_media_fallback_total` when it cannot be carried.
pub fn decide(
    media: &MediaContext,
    prepared: &PreparedPicture,
    large_images: LargeImages,
) -> Decision {
    let picture = match &prepared.carry {
        Carry::File(picture) => picture,
        Carry::SourceUrl(_) | Carry::Placeholder => {
            return Decision::Text(shown_as_text(prepared));
        }
    };
    if prepared.is_sticker() {
        media.fell_back(Platform::Wecom, prepared.kind, "sticker");
        return Decision::Text(STICKER_TEXT.to_owned());
    }
    if as_image(picture) {
        return Decision::Image(picture.clone());
    }
    if let Some(file) = uploaded_as_file(prepared, large_images) {
        return Decision::File(file.clone());
    }
    media.fell_back(Platform::Wecom, prepared.kind, "too_large_or_type");
    Decision::Text(placeholder_or_link(media, prepared, picture))
}

/// True for a picture the robot sends as an `image` message: a JPG or PNG of at most 2 MB.
fn as_image(picture: &Picture) -> bool {
    matches!(picture.file_type, FileType::Jpeg | FileType::Png)
        && picture.blob.size <= MAX_IMAGE_BYTES
}

/// The cached picture of `prepared` when the robot uploads it and sends it as a `file`
/// message ([`Decision::File`]); decided without counting anything, so that an upload ahead
/// of the send can ask.
pub fn uploaded_as_file(prepared: &PreparedPicture, large_images: LargeImages) -> Option<&Picture> {
    let picture = prepared.picture()?;
    let size = picture.blob.size;
    (!prepared.is_sticker()
        && !as_image(picture)
        && large_images == LargeImages::File
        && (MIN_FILE_BYTES..=MAX_FILE_BYTES).contains(&size))
    .then_some(picture)
}

/// The placeholder of a picture that is not carried, or a signed link of the media server in
/// `link` mode.
pub fn placeholder_or_link(
    media: &MediaContext,
    prepared: &PreparedPicture,
    picture: &Picture,
) -> String {
    match media.link(picture) {
        Some(link) if media.mode == MediaMode::Link && !prepared.is_sticker() => {
            format!("{} {link}", prepared.placeholder)
        }
        _ => prepared.placeholder.to_owned(),
    }
}

/// The hex MD5 of `bytes`, as the `image` message wants it.
pub fn md5_hex(bytes: &[u8]) -> String {
    Md5::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The body of an `image` message carrying `bytes`.
pub fn image_body(bytes: &[u8]) -> Value {
    json!({
        "msgtype": "image",
        "image": { "base64": STANDARD.encode(bytes), "md5": md5_hex(bytes) },
    })
}

/// The body of a `file` message naming an uploaded `media_id`.
pub fn file_body(media_id: &str) -> Value {
    json!({ "msgtype": "file", "file": { "media_id": media_id } })
}

/// The uploads of the robot `account`: a file is uploaded once per (picture, robot), its
/// `media_id` kept for the three days WeCom keeps it ([`MEDIA_ID_LIFETIME`]).
pub fn uploads(account: &str) -> Uploads {
    Uploads::new(account, Platform::Wecom, MEDIA_ID_LIFETIME)
}

/// The `upload_media` URL of a robot whose webhook is `webhook` (`…/cgi-bin/webhook/send?key=…`).
///
/// # Errors
/// The webhook is not a URL or has no key.
pub fn upload_url(webhook: &str, key: Option<&str>) -> Result<String, SendError> {
    let mut url = reqwest::Url::parse(webhook)
        .map_err(|_| SendError::Permanent("the webhook is not a URL".into()))?;
    let key = key.ok_or_else(|| SendError::Permanent("the webhook has no key".into()))?;
    let path = match url.path().strip_suffix("/send") {
        Some(base) => format!("{base}/upload_media"),
        None => "/cgi-bin/webhook/upload_media".to_owned(),
    };
    url.set_path(&path);
    url.query_pairs_mut()
        .clear()
        .append_pair("key", key)
        .append_pair("type", "file");
    Ok(url.into())
}

/// What `upload_media` answered.
#[derive(Debug, Clone)]
pub struct UploadAnswer {
    /// HTTP status.
    pub status: reqwest::StatusCode,
    /// A `Retry-After` header.
    pub suggested: Option<Duration>,
    /// The `errcode` (0 when absent).
    pub errcode: i64,
    /// The `errmsg`, as WeCom wrote it (the caller cleans it).
    pub errmsg: String,
    /// The `media_id` of a success.
    pub media_id: Option<String>,
}

/// POSTs `bytes`, the cached `picture`, to `url` (an [`upload_url`]) as the multipart
/// `media` part.
///
/// # Errors
/// No answer or one that is not JSON ([`SendError::Retryable`]).
pub async fn upload(
    http: &reqwest::Client,
    url: String,
    picture: &Picture,
    bytes: Vec<u8>,
) -> Result<UploadAnswer, SendError> {
    let part = reqwest::multipart::Part::bytes(bytes)
        .file_name(picture.file_name())
        .mime_str(picture.file_type.mime())
        .map_err(|error| SendError::Permanent(format!("upload part: {}", describe(error))))?;
    let form = reqwest::multipart::Form::new().part("media", part);
    let response = http
        .post(url)
        .multipart(form)
        .send()
        .await
        .map_err(|error| {
            SendError::Retryable(format!("WeCom upload unreachable: {}", describe(error)))
        })?;
    let status = response.status();
    let suggested = crate::http::retry_after(response.headers());
    let body = read_limited(response, MAX_UPLOAD_ANSWER)
        .await
        .map_err(|error| SendError::Retryable(format!("WeCom upload answer: {error}")))?;
    let answer: Value = if status.is_success() {
        serde_json::from_slice(&body).map_err(|_| {
            SendError::Retryable("WeCom upload answered with something other than JSON".into())
        })?
    } else {
        Value::Null
    };
    Ok(UploadAnswer {
        status,
        suggested,
        errcode: answer.get("errcode").and_then(Value::as_i64).unwrap_or(0),
        errmsg: answer
            .get("errmsg")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        media_id: answer
            .get("media_id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
            .map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::cache::Blob;
    use crate::media::MediaKind;

    fn prepared(file_type: FileType, size: u64, kind: MediaKind) -> PreparedPicture {
        PreparedPicture {
            index: 1,
            carry: Carry::File(Picture {
                blob: Blob {
                    sha256: "ab".repeat(32),
                    size,
                    path: "/nonexistent".into(),
                },
                file_type,
            }),
            kind,
            summary: None,
            placeholder: if kind == MediaKind::Sticker {
                "[动画表情]"
            } else {
                "[图片]"
            },
        }
    }

    #[test]
    fn pictures_are_carried_as_wecom_takes_them() {
        let media = MediaContext {
            mode: MediaMode::Native,
            ..MediaContext::default()
        };
        let small_png = prepared(FileType::Png, 1000, MediaKind::Image);
        assert!(matches!(
            decide(&media, &small_png, LargeImages::Placeholder),
            Decision::Image(_)
        ));
        let big_jpeg = prepared(FileType::Jpeg, MAX_IMAGE_BYTES + 1, MediaKind::Image);
        assert_eq!(
            decide(&media, &big_jpeg, LargeImages::Placeholder),
            Decision::Text("[图片]".into())
        );
        assert!(matches!(
            decide(&media, &big_jpeg, LargeImages::File),
            Decision::File(_)
        ));
        let gif = prepared(FileType::Gif, 1000, MediaKind::Image);
        assert_eq!(
            decide(&media, &gif, LargeImages::Placeholder),
            Decision::Text("[图片]".into())
        );
        let sticker = prepared(FileType::Png, 1000, MediaKind::Sticker);
        assert_eq!(
            decide(&media, &sticker, LargeImages::File),
            Decision::Text("[动画表情]".into())
        );
        let huge = prepared(FileType::Png, MAX_FILE_BYTES + 1, MediaKind::Image);
        assert_eq!(
            decide(&media, &huge, LargeImages::File),
            Decision::Text("[图片]".into())
        );
    }

    #[test]
    fn md5_and_upload_url() {
        assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(
            upload_url(
                "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=k1",
                Some("k1")
            )
            .expect("url"),
            "https://qyapi.weixin.qq.com/cgi-bin/webhook/upload_media?key=k1&type=file"
        );
        assert!(upload_url("not a url", Some("k")).is_err());
        let body = image_body(b"abc");
        assert_eq!(body["image"]["base64"], "YWJj");
        assert_eq!(body["image"]["md5"], "900150983cd24fb0d6963f7d28e17f72");
    }
}
