//! Topic names (ARCHITECTURE.md §3): `<prefix>/in/<account>/<group>`,
//! `<prefix>/out/<account>/<group>` and the retained `<prefix>/status/<account>` (the
//! `process/` and `lock/` topics of a scaled-out deployment belong to [`crate::cluster`]).
//! Group ids are percent-encoded because DingTalk conversation ids contain `+ / =` and MQTT
//! gives `/ + #` meaning.

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, CONTROLS};

/// Bytes encoded in a topic level: controls, space, the MQTT separators and wildcards, `%`
/// itself (non-ASCII is encoded too, so every level is plain printable ASCII).
const LEVEL: &AsciiSet = &CONTROLS.add(b'/').add(b'+').add(b'#').add(b'%').add(b' ');

/// Encodes one topic level.
pub fn encode_level(value: &str) -> String {
    utf8_percent_encode(value, LEVEL).to_string()
}

/// Decodes one topic level; `None` when it is not valid UTF-8 after decoding.
pub fn decode_level(level: &str) -> Option<String> {
    percent_decode_str(level)
        .decode_utf8()
        .ok()
        .map(|s| s.into_owned())
}

/// The topic names of one deployment.
#[derive(Debug, Clone)]
pub struct Topics {
    /// First levels, such as `qunbridge/v1`.
    prefix: String,
}

impl Topics {
    /// The first topic levels, such as `qunbridge/v1`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Topic names under `prefix`.
    pub fn new(prefix: &str) -> Topics {
        Topics {
            prefix: prefix.to_owned(),
        }
    }

    /// Where ingress publishes an envelope.
    pub fn inbound(&self, account: &str, group: &str) -> String {
        format!(
            "{}/in/{}/{}",
            self.prefix,
            encode_level(account),
            encode_level(group)
        )
    }

    /// Where the core publishes a rendered message for a destination.
    pub fn outbound(&self, account: &str, group: &str) -> String {
        format!(
            "{}/out/{}/{}",
            self.prefix,
            encode_level(account),
            encode_level(group)
        )
    }

    /// The retained status of an account.
    pub fn status(&self, account: &str) -> String {
        format!("{}/status/{}", self.prefix, encode_level(account))
    }

    /// What the core subscribes to: every inbound topic.
    pub fn inbound_filter(&self) -> String {
        format!("{}/in/+/+", self.prefix)
    }

    /// What an account's egress subscribes to.
    pub fn outbound_filter(&self, account: &str) -> String {
        format!("{}/out/{}/+", self.prefix, encode_level(account))
    }

    /// Splits an inbound topic into (account, group); `None` for anything else.
    pub fn parse_inbound(&self, topic: &str) -> Option<(String, String)> {
        self.parse(topic, "in")
    }

    /// Splits an outbound topic into (account, group); `None` for anything else.
    pub fn parse_outbound(&self, topic: &str) -> Option<(String, String)> {
        self.parse(topic, "out")
    }

    /// Shared parsing of `<prefix>/<kind>/<account>/<group>`.
    fn parse(&self, topic: &str, kind: &str) -> Option<(String, String)> {
        let rest = topic.strip_prefix(&self.prefix)?.strip_prefix('/')?;
        let rest = rest.strip_prefix(kind)?.strip_prefix('/')?;
        let (account, group) = rest.split_once('/')?;
        if group.contains('/') || account.is_empty() || group.is_empty() {
            return None;
        }
        Some((decode_level(account)?, decode_level(group)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_ids_with_topic_characters_round_trip() {
        let topics = Topics::new("qunbridge/v1");
        for group in [
            "cidQ7xR2m0Lw9+/a==",
            "20993411775@chatroom",
            "-735021844",
            "a#b%c d",
            "群",
        ] {
            let topic = topics.inbound("ding", group);
            let level = topic.rsplit('/').next().expect("level");
            assert!(!level.contains(['+', '#', ' ']), "{topic}");
            assert_eq!(topic.matches('/').count(), 4, "{topic}");
            assert_eq!(
                topics.parse_inbound(&topic),
                Some(("ding".to_owned(), group.to_owned()))
            );
        }
        assert_eq!(
            topics.inbound("ding", "cid+/="),
            "qunbridge/v1/in/ding/cid%2B%2F="
        );
        assert_eq!(topics.parse_inbound("qunbridge/v1/out/a/b"), None);
        assert_eq!(topics.parse_inbound("qunbridge/v1/in/a/b/c"), None);
    }
}
