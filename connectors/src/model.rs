//! The message model: what connectors publish (`Envelope`) and what they are asked to send
//! (`Outbound`). These types are the wire contract of ARCHITECTURE.md §3: they are serialized
//! as JSON on the `in/` and `out/` MQTT topics, so field names and shapes change only on purpose.

use serde::{Deserialize, Serialize};

pub use crate::media::{Locator, MediaKind, MediaRef};
pub use crate::member::{Change, How, MemberEvent};

/// Version of the envelope and outbound JSON formats written in the `v` field.
pub const ENVELOPE_VERSION: u32 = 1;

/// The chat service an account lives on. It decides pacing, filtering and length defaults,
/// and the display name used by the `{platform}` template placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// QQ groups, through OneBot v11 implementations.
    Qq,
    /// Personal WeChat groups, through OneBot v12 (or v11) implementations.
    Wechat,
    /// DingTalk groups: Stream mode, OpenAPI or the custom robot webhook.
    Dingtalk,
    /// WeCom (企业微信) group robots: send only.
    Wecom,
    /// The generic HTTP/WebSocket endpoint of qunbridge itself.
    Api,
}

impl Platform {
    /// Every platform, in the order they are documented.
    pub const ALL: [Platform; 5] = [
        Platform::Qq,
        Platform::Wechat,
        Platform::Dingtalk,
        Platform::Wecom,
        Platform::Api,
    ];

    /// The config and label spelling (`qq`, `wechat`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Platform::Qq => "qq",
            Platform::Wechat => "wechat",
            Platform::Dingtalk => "dingtalk",
            Platform::Wecom => "wecom",
            Platform::Api => "api",
        }
    }

    /// The name users of the platform know it by, for the `{platform}` placeholder.
    pub fn display_name(self) -> &'static str {
        match self {
            Platform::Qq => "QQ",
            Platform::Wechat => "微信",
            Platform::Dingtalk => "钉钉",
            Platform::Wecom => "企业微信",
            Platform::Api => "API",
        }
    }

    /// Parses the config spelling; `None` for anything else.
    pub fn parse(name: &str) -> Option<Platform> {
        Platform::ALL.into_iter().find(|p| p.as_str() == name)
    }
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether an envelope carries a new message, takes one back, or tells a membership change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A new message.
    #[default]
    Message,
    /// The message named by `origin.message_id` was recalled on its platform.
    Recall,
    /// A member joined or left (or the member count was read): `member` says which, and
    /// `sender` is the member.
    Member,
}

/// Where a message was said.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// Platform of the account that saw the message.
    pub platform: Platform,
    /// Configured account id that saw the message.
    pub account: String,
    /// Platform group id (always a string, even where the platform sends numbers).
    pub group: String,
    /// Platform message id, used for recall and reply mapping.
    pub message_id: String,
    /// Human-readable group name when the platform tells it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_name: Option<String>,
}

/// Who said it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sender {
    /// Platform user id (a string everywhere).
    pub id: String,
    /// Display name as the group shows it (card, nickname, …).
    pub name: String,
    /// True when the platform marks the sender as a bot.
    #[serde(default)]
    pub is_bot: bool,
}

/// One piece of a message. Unknown types from newer peers decode as [`Segment::Unknown`]
/// instead of failing the whole message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Segment {
    /// Plain text.
    Text {
        /// The text itself.
        text: String,
    },
    /// A mention of one member.
    Mention {
        /// Platform user id of the member mentioned.
        id: String,
        /// Display name when known, so other platforms can show `@name`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// A mention of everyone in the group.
    MentionAll,
    /// A picture or sticker. The bytes never travel in an envelope: `media` says how to fetch
    /// them, and `url` is what readers of the first envelope format still render.
    Image {
        /// Where the picture can be fetched; absent when the platform gave none.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        /// File name when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// The platform shows it as a sticker (QQ 动画表情, a WeChat emoji, a market face), so a
        /// destination that has stickers sends it as one and others show `[动画表情]`.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        sticker: bool,
        /// A QQ flash picture (闪照): meant to be seen once, so it is never carried, only
        /// named by its placeholder.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        flash: bool,
        /// The platform's preview text, such as `[动画表情]` or a market face's name: what a
        /// destination shows when the picture itself cannot go.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        summary: Option<String>,
        /// Size in bytes as the platform announced it (not trusted as a limit).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<u64>,
        /// How the relay fetches the bytes: a stable source key, the kind, and the locator.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        media: Option<MediaRef>,
    },
    /// A reply to an earlier message of the same group.
    Reply {
        /// Platform message id of the message replied to.
        message_id: String,
    },
    /// A platform emoticon.
    Face {
        /// Platform face id.
        id: String,
        /// Readable name such as `[斜眼笑]` when known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
    },
    /// Content the relay cannot carry, shown as a readable placeholder.
    Unsupported {
        /// The placeholder text, such as `[小程序]`.
        hint: String,
    },
    /// A segment type this version does not know; rendered as nothing.
    #[serde(other)]
    Unknown,
}

impl Segment {
    /// Shorthand for a text segment.
    pub fn text(text: impl Into<String>) -> Segment {
        Segment::Text { text: text.into() }
    }

    /// A plain picture known by its URL and name, with nothing else known about it.
    pub fn image(url: Option<String>, name: Option<String>) -> Segment {
        Segment::Image {
            url,
            name,
            sticker: false,
            flash: false,
            summary: None,
            size: None,
            media: None,
        }
    }

    /// The short text that stands for a picture that cannot be carried: `[闪照]` for a flash
    /// picture, `[动画表情]` for a sticker, else `[图片]`. `None` for other segments.
    pub fn image_placeholder(&self) -> Option<&'static str> {
        match self {
            Segment::Image { flash: true, .. } => Some("[闪照]"),
            Segment::Image { sticker: true, .. } => Some("[动画表情]"),
            Segment::Image { .. } => Some("[图片]"),
            _ => None,
        }
    }

    /// Appends the plain-text rendering of this segment to `out`, for destinations that take
    /// text only and for the `text` field of outbound messages.
    pub fn render_text(&self, out: &mut String) {
        match self {
            Segment::Text { text } => out.push_str(text),
            Segment::Mention { id, name } => {
                out.push('@');
                out.push_str(name.as_deref().unwrap_or(id));
            }
            Segment::MentionAll => out.push_str("@全体成员"),
            Segment::Image { url: Some(url), .. } => {
                out.push_str("[图片] ");
                out.push_str(url);
            }
            Segment::Image { .. } => out.push_str(self.image_placeholder().unwrap_or("[图片]")),
            // A reply is shown by the destination (native reply or quote), not as text.
            Segment::Reply { .. } | Segment::Unknown => {}
            Segment::Face { id, name } => match name {
                Some(name) => out.push_str(name),
                None => {
                    out.push_str("[表情");
                    out.push_str(id);
                    out.push(']');
                }
            },
            Segment::Unsupported { hint } => out.push_str(hint),
        }
    }
}

/// Bytes a message usually takes as JSON. Encoding starts with room for this, so a typical
/// envelope or outbound message is written without growing its buffer (serde_json's own
/// `to_vec` starts at 128 bytes and doubles, three reallocations per message).
const TYPICAL_JSON: usize = 1024;

/// `value` as JSON, encoded into a buffer sized for a typical message.
///
/// # Errors
/// What serde_json reports (a map with non-string keys, a failing `Serialize`).
pub fn to_json<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Vec<u8>> {
    let mut json = Vec::with_capacity(TYPICAL_JSON);
    serde_json::to_writer(&mut json, value)?;
    Ok(json)
}

/// [`to_json`] as a string.
///
/// # Errors
/// As [`to_json`].
pub fn to_json_string<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    // serde_json writes only UTF-8; the check costs a pass over the bytes, not a copy.
    String::from_utf8(to_json(value)?).map_err(serde::ser::Error::custom)
}

/// Renders a list of segments as plain text.
pub fn segments_to_text(segments: &[Segment]) -> String {
    let mut out = String::new();
    for segment in segments {
        segment.render_text(&mut out);
    }
    out
}

/// An inbound message as ingress publishes it on `<prefix>/in/<account>/<group>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Format version, [`ENVELOPE_VERSION`].
    pub v: u32,
    /// Stable id of the platform message: the dedup key for redelivery.
    pub id: String,
    /// Where it was said.
    pub origin: Origin,
    /// Who said it.
    pub sender: Sender,
    /// Platform timestamp in milliseconds since the Unix epoch.
    pub ts_ms: u64,
    /// Message or recall.
    #[serde(default)]
    pub kind: Kind,
    /// The content; empty for a recall.
    #[serde(default)]
    pub segments: Vec<Segment>,
    /// The membership change of a `kind = "member"` envelope; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<MemberEvent>,
}

impl Envelope {
    /// The canonical envelope id: `account:group:message_id`.
    pub fn make_id(account: &str, group: &str, message_id: &str) -> String {
        format!("{account}:{group}:{message_id}")
    }

    /// A `kind = "member"` envelope of `account`'s `group`: `member` is the member (id
    /// and name, `""` when unknown or for a count), `message_id` what makes it unique in the
    /// group (the envelope id is made from it).
    pub fn membership(
        account: &str,
        platform: Platform,
        group: String,
        message_id: String,
        member: Sender,
        ts_ms: u64,
        event: MemberEvent,
    ) -> Envelope {
        Envelope {
            v: ENVELOPE_VERSION,
            id: Envelope::make_id(account, &group, &message_id),
            origin: Origin {
                platform,
                account: account.to_owned(),
                group,
                message_id,
                group_name: None,
            },
            sender: member,
            ts_ms,
            kind: Kind::Member,
            segments: Vec::new(),
            member: Some(event),
        }
    }
}

/// A rendered message for one destination, published by the relay core on
/// `<prefix>/out/<account>/<group>` and consumed by that account's egress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outbound {
    /// Format version, [`ENVELOPE_VERSION`].
    pub v: u32,
    /// Id of the inbound envelope this was rendered from: the key of the egress send log.
    pub id: String,
    /// Name of the link that routed it, for logs and the `{link}` placeholder.
    pub link: String,
    /// Destination group on the destination account (the topic names it too).
    pub group: String,
    /// Message or recall.
    #[serde(default)]
    pub kind: Kind,
    /// Where the message was originally said (for recall and reply mapping).
    pub origin: Origin,
    /// Who originally said it.
    pub sender: Sender,
    /// Original platform timestamp in milliseconds.
    pub ts_ms: u64,
    /// The sender line rendered from the link's template, such as `[QQ] Ann: `.
    #[serde(default)]
    pub prefix: String,
    /// The full message as plain text: prefix plus rendered segments.
    #[serde(default)]
    pub text: String,
    /// The content with the prefix as a leading text segment, for destinations that can send
    /// images and mentions natively.
    #[serde(default)]
    pub segments: Vec<Segment>,
}

#[cfg(test)]
impl Outbound {
    /// An outbound message of `kind` from Ann on `origin`, bound for `group`, with no text:
    /// the base that unit tests fill in with what they check.
    pub(crate) fn sample(kind: Kind, origin: Platform, group: &str) -> Outbound {
        Outbound {
            v: 1,
            id: "x".into(),
            link: "l".into(),
            group: group.into(),
            kind,
            origin: Origin {
                platform: origin,
                account: "a".into(),
                group: "g".into(),
                message_id: "1".into(),
                group_name: None,
            },
            sender: Sender {
                id: "u".into(),
                name: "Ann".into(),
                is_bot: false,
            },
            ts_ms: 0,
            prefix: String::new(),
            text: String::new(),
            segments: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_the_documented_example() {
        let json = r#"{
          "v": 1,
          "id": "qq-main:735021844:-1730113492",
          "origin": { "platform": "qq", "account": "qq-main", "group": "735021844",
                      "message_id": "-1730113492", "group_name": "Ops" },
          "sender": { "id": "1437420188", "name": "Alice | Ops", "is_bot": false },
          "ts_ms": 1718880000000,
          "kind": "message",
          "segments": [
            { "type": "text", "text": "see docs" },
            { "type": "mention", "id": "2854196310", "name": "bot" },
            { "type": "image", "url": "https://x/y.jpg", "name": "9F3C1A.jpg" },
            { "type": "reply", "message_id": "-1730113400" },
            { "type": "face", "id": "178", "name": "[斜眼笑]" },
            { "type": "unsupported", "hint": "[小程序]" }
          ]
        }"#;
        let envelope: Envelope = serde_json::from_str(json).expect("documented example decodes");
        assert_eq!(envelope.origin.platform, Platform::Qq);
        assert_eq!(envelope.segments.len(), 6);
        assert_eq!(
            segments_to_text(&envelope.segments),
            "see docs@bot[图片] https://x/y.jpg[斜眼笑][小程序]"
        );
        let again: Envelope =
            serde_json::from_str(&serde_json::to_string(&envelope).expect("encodes"))
                .expect("re-decodes");
        assert_eq!(again, envelope);
    }

    #[test]
    fn unknown_segment_types_do_not_fail_the_message() {
        let segments: Vec<Segment> =
            serde_json::from_str(r#"[{"type":"hologram","depth":3},{"type":"text","text":"x"}]"#)
                .expect("unknown segment tolerated");
        assert_eq!(segments, vec![Segment::Unknown, Segment::text("x")]);
    }
}
