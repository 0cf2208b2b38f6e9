//! Pictures in what the `api` connector hands its consumers. In `native` and `link` modes
//! each picture of an outbound message is fetched into the media cache first (within
//! `[media] wait`), and a picture that is there gets `sha256`, `size` (the cached bytes) and
//! `mime` (told from its bytes) in its segment, so a consumer can fetch it from
//! `GET /api/v1/media/<sha256>` whatever became of the source platform's URL. Other modes,
//! and messages without pictures, are encoded exactly as before, without any extra work.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::Value;
use tokio::sync::oneshot;

use crate::context::SendReceipt;
use crate::media::carry::PreparedPicture;
use crate::media::{MediaContext, MediaMode};
use crate::model::{Outbound, Platform, Segment};

/// An outbound message ready to be put in its group's feed.
pub(super) struct Ready {
    /// The message.
    pub outbound: Arc<Outbound>,
    /// Its JSON as consumers get it, or why it could not be encoded.
    pub json: serde_json::Result<String>,
    /// Where the relay waits for the answer.
    pub reply: oneshot::Sender<Result<SendReceipt, crate::SendError>>,
}

/// Whether `outbound` has pictures to fetch before it is encoded (`native` and `link`
/// modes only): the hot path of text messages stops here.
pub(super) fn needs_prepare(mode: MediaMode, outbound: &Outbound) -> bool {
    matches!(mode, MediaMode::Native | MediaMode::Link)
        && outbound
            .segments
            .iter()
            .any(|segment| matches!(segment, Segment::Image { .. }))
}

/// Fetches the pictures of `outbound` (when [`needs_prepare`]) and encodes it.
pub(super) fn prepare(
    media: Arc<MediaContext>,
    outbound: Arc<Outbound>,
    reply: oneshot::Sender<Result<SendReceipt, crate::SendError>>,
) -> BoxFuture<'static, Ready> {
    Box::pin(async move {
        let prepared = if needs_prepare(media.mode, &outbound) {
            media.prepare(Platform::Api, &outbound).await
        } else {
            Vec::new()
        };
        let json = encode(&outbound, &prepared);
        Ready {
            outbound,
            json,
            reply,
        }
    })
}

/// The JSON of `outbound` with each cached picture's segment carrying `sha256`, `size` and
/// `mime`; exactly `serde_json::to_string(outbound)` when no picture is cached.
///
/// # Errors
/// The message cannot be encoded (not expected of a decoded message).
pub(super) fn encode(
    outbound: &Outbound,
    prepared: &[PreparedPicture],
) -> serde_json::Result<String> {
    if prepared.iter().all(|picture| picture.picture().is_none()) {
        return serde_json::to_string(outbound);
    }
    let mut value = serde_json::to_value(outbound)?;
    if let Some(segments) = value.get_mut("segments").and_then(Value::as_array_mut) {
        for prepared in prepared {
            let (Some(picture), Some(Value::Object(segment))) =
                (prepared.picture(), segments.get_mut(prepared.index))
            else {
                continue;
            };
            segment.insert("sha256".into(), picture.blob.sha256.clone().into());
            segment.insert("size".into(), picture.blob.size.into());
            segment.insert("mime".into(), picture.file_type.mime().into());
        }
    }
    serde_json::to_string(&value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::cache::Blob;
    use crate::media::carry::{Carry, Picture};
    use crate::media::sniff::FileType;
    use crate::media::MediaKind;
    use crate::model::Kind;

    fn with_picture() -> Outbound {
        let mut outbound = Outbound::sample(Kind::Message, Platform::Api, "b");
        outbound.segments = vec![
            Segment::text("<demo> Ann: "),
            Segment::image(Some("https://93.184.215.14/a.png".into()), None),
            Segment::text(" and "),
            Segment::image(Some("https://93.184.215.14/b.png".into()), None),
        ];
        outbound
    }

    fn picture_at(index: usize, carry: Carry) -> PreparedPicture {
        PreparedPicture {
            index,
            carry,
            kind: MediaKind::Image,
            summary: None,
            placeholder: "[图片]",
        }
    }

    #[test]
    fn only_pictures_in_carrying_modes_need_preparing() {
        let text = Outbound::sample(Kind::Message, Platform::Api, "b");
        for mode in MediaMode::ALL {
            assert!(!needs_prepare(mode, &text), "{mode:?}");
        }
        let picture = with_picture();
        assert!(needs_prepare(MediaMode::Native, &picture));
        assert!(needs_prepare(MediaMode::Link, &picture));
        assert!(!needs_prepare(MediaMode::Passthrough, &picture));
        assert!(!needs_prepare(MediaMode::Placeholder, &picture));
    }

    #[test]
    fn cached_pictures_carry_their_digest_size_and_type() {
        let outbound = with_picture();
        let sha256 = "ab".repeat(32);
        let prepared = vec![
            picture_at(
                1,
                Carry::File(Picture {
                    blob: Blob {
                        sha256: sha256.clone(),
                        size: 1234,
                        path: "/nowhere".into(),
                    },
                    file_type: FileType::Gif,
                }),
            ),
            picture_at(3, Carry::Placeholder),
        ];
        let json: Value =
            serde_json::from_str(&encode(&outbound, &prepared).expect("encodes")).expect("JSON");
        let segments = json["segments"].as_array().expect("segments");
        assert_eq!(segments[1]["sha256"], sha256.as_str());
        assert_eq!(segments[1]["size"], 1234);
        assert_eq!(segments[1]["mime"], "image/gif");
        assert_eq!(segments[1]["url"], "https://93.184.215.14/a.png");
        assert!(segments[3].get("sha256").is_none(), "{}", segments[3]);
        assert!(segments[0].get("sha256").is_none());

        // Nothing cached: byte for byte what was sent before.
        let none = vec![picture_at(1, Carry::SourceUrl("x".into()))];
        assert_eq!(
            encode(&outbound, &none).expect("encodes"),
            serde_json::to_string(&outbound).expect("encodes")
        );
    }
}
