//! The message map: which copies egress sent of each origin message, in which groups, under
//! which platform ids. It turns a recall in one group into recalls of the copies, and a reply
//! to a message into a native reply to the destination's own copy (or a short quote when the
//! destination has none). In memory and bounded for now (the oldest origins go first).

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use qunbridge_connectors::model::Segment;
use qunbridge_connectors::{Kind, Outbound, RelatedMessages};

/// Origin messages kept at most.
pub const DEFAULT_CAPACITY: usize = 100_000;
/// Characters of a message kept for quoting.
const EXCERPT_CHARS: usize = 30;

/// `account`, `group`, `message id` joined with a separator no id contains.
fn key(account: &str, group: &str, message_id: &str) -> String {
    format!("{account}\u{1f}{group}\u{1f}{message_id}")
}

/// What is known of one origin message.
#[derive(Debug, Default)]
struct Entry {
    /// Origin account.
    account: String,
    /// Origin group.
    group: String,
    /// Origin message id.
    message_id: String,
    /// `Sender: first words…`, for quotes.
    excerpt: String,
    /// Copies: (account, group, platform message id).
    copies: Vec<(String, String, String)>,
}

/// The map's state.
#[derive(Default)]
struct Inner {
    /// Origin key → entry.
    origins: HashMap<String, Entry>,
    /// Copy key → origin key.
    copies: HashMap<String, String>,
    /// Origin keys, oldest first, for eviction.
    order: VecDeque<String>,
}

/// The map; shared by every account's egress.
pub struct MessageMap {
    /// Guarded state (never held across an await).
    inner: Mutex<Inner>,
    /// Origins kept at most.
    capacity: usize,
}

impl MessageMap {
    /// An empty map holding at most `capacity` origin messages.
    pub fn new(capacity: usize) -> MessageMap {
        MessageMap {
            inner: Mutex::new(Inner::default()),
            capacity: capacity.max(1),
        }
    }

    /// The state, recovering from a poisoned lock.
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the copies egress sent of `outbound` to `account`.
    pub fn record(&self, outbound: &Outbound, account: &str, ids: &[String]) {
        if outbound.kind != Kind::Message {
            return;
        }
        let origin = &outbound.origin;
        let origin_key = key(&origin.account, &origin.group, &origin.message_id);
        let mut inner = self.lock();
        if !inner.origins.contains_key(&origin_key) {
            if inner.origins.len() >= self.capacity {
                if let Some(oldest) = inner.order.pop_front() {
                    if let Some(entry) = inner.origins.remove(&oldest) {
                        for (a, g, id) in entry.copies {
                            inner.copies.remove(&key(&a, &g, &id));
                        }
                    }
                }
            }
            let body = outbound
                .text
                .get(outbound.prefix.len()..)
                .unwrap_or(&outbound.text);
            let mut excerpt: String = body.chars().take(EXCERPT_CHARS).collect();
            if body.chars().count() > EXCERPT_CHARS {
                excerpt.push('…');
            }
            inner.origins.insert(
                origin_key.clone(),
                Entry {
                    account: origin.account.clone(),
                    group: origin.group.clone(),
                    message_id: origin.message_id.clone(),
                    excerpt: format!("{}: {excerpt}", outbound.sender.name),
                    copies: Vec::new(),
                },
            );
            inner.order.push_back(origin_key.clone());
        }
        for id in ids {
            inner
                .copies
                .insert(key(account, &outbound.group, id), origin_key.clone());
            if let Some(entry) = inner.origins.get_mut(&origin_key) {
                entry
                    .copies
                    .push((account.to_owned(), outbound.group.clone(), id.clone()));
            }
        }
    }

    /// What the destination `account`/`outbound.group` has of the messages `outbound`
    /// refers to.
    pub fn related(&self, outbound: &Outbound, account: &str) -> RelatedMessages {
        let inner = self.lock();
        let origin = &outbound.origin;
        let here = |entry: &Entry| -> Vec<String> {
            entry
                .copies
                .iter()
                .filter(|(a, g, _)| a == account && *g == outbound.group)
                .map(|(_, _, id)| id.clone())
                .collect()
        };
        match outbound.kind {
            Kind::Recall => RelatedMessages {
                recall: inner
                    .origins
                    .get(&key(&origin.account, &origin.group, &origin.message_id))
                    .map(here)
                    .unwrap_or_default(),
                ..RelatedMessages::default()
            },
            Kind::Message => {
                let Some(replied) = outbound.segments.iter().find_map(|s| match s {
                    Segment::Reply { message_id } => Some(message_id),
                    _ => None,
                }) else {
                    return RelatedMessages::default();
                };
                let replied_key = key(&origin.account, &origin.group, replied);
                // The replied message is an origin message, or a copy of one.
                let origin_key = if inner.origins.contains_key(&replied_key) {
                    replied_key
                } else if let Some(origin_key) = inner.copies.get(&replied_key) {
                    origin_key.clone()
                } else {
                    return RelatedMessages::default();
                };
                let Some(entry) = inner.origins.get(&origin_key) else {
                    return RelatedMessages::default();
                };
                let reply_to = if entry.account == account && entry.group == outbound.group {
                    Some(entry.message_id.clone())
                } else {
                    here(entry).into_iter().next()
                };
                RelatedMessages {
                    quote: reply_to.is_none().then(|| entry.excerpt.clone()),
                    reply_to,
                    recall: Vec::new(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use qunbridge_connectors::{Origin, Platform, Sender};

    use super::*;

    fn outbound(
        account: &str,
        group: &str,
        message_id: &str,
        to_group: &str,
        segments: Vec<Segment>,
        kind: Kind,
    ) -> Outbound {
        Outbound {
            v: 1,
            id: format!("{account}:{group}:{message_id}"),
            link: "l".into(),
            group: to_group.into(),
            kind,
            origin: Origin {
                platform: Platform::Qq,
                account: account.into(),
                group: group.into(),
                message_id: message_id.into(),
                group_name: None,
            },
            sender: Sender {
                id: "1".into(),
                name: "Ann".into(),
                is_bot: false,
            },
            ts_ms: 0,
            prefix: "[QQ] Ann: ".into(),
            text: "[QQ] Ann: hello there".into(),
            segments,
        }
    }

    #[test]
    fn recalls_and_replies_find_the_destination_copies() {
        let map = MessageMap::new(10);
        // qq:1 message 100 was relayed to wx:w as "w-7" and to hub:h as "3".
        let original = outbound(
            "qq",
            "1",
            "100",
            "w",
            vec![Segment::text("hello there")],
            Kind::Message,
        );
        map.record(&original, "wx", &["w-7".into()]);
        let mut to_hub = original.clone();
        to_hub.group = "h".into();
        map.record(&to_hub, "hub", &["3".into()]);

        let recall = outbound("qq", "1", "100", "w", vec![], Kind::Recall);
        assert_eq!(map.related(&recall, "wx").recall, vec!["w-7".to_owned()]);

        // A reply in qq:1 to message 100, going to wx:w: native reply to w-7.
        let reply = outbound(
            "qq",
            "1",
            "101",
            "w",
            vec![Segment::Reply {
                message_id: "100".into(),
            }],
            Kind::Message,
        );
        assert_eq!(map.related(&reply, "wx").reply_to.as_deref(), Some("w-7"));
        // A reply in wx:w to the copy w-7, going back to qq:1: the original message 100.
        let back = outbound(
            "wx",
            "w",
            "w-9",
            "1",
            vec![Segment::Reply {
                message_id: "w-7".into(),
            }],
            Kind::Message,
        );
        assert_eq!(map.related(&back, "qq").reply_to.as_deref(), Some("100"));
        // Going to a group without a copy: a quote.
        let elsewhere = outbound(
            "qq",
            "1",
            "102",
            "z",
            vec![Segment::Reply {
                message_id: "100".into(),
            }],
            Kind::Message,
        );
        let related = map.related(&elsewhere, "ding");
        assert_eq!(related.reply_to, None);
        assert_eq!(related.quote.as_deref(), Some("Ann: hello there"));
    }
}
