//! The message map: which copies egress sent of each origin message, in which groups, under
//! which platform ids. It turns a recall in one group into recalls of the copies, and a reply
//! to a message into a native reply to the destination's own copy (or a short quote when the
//! destination has none). The entries live in the [`RelayStore`], so recall and reply sync
//! keep working across restarts.

use qunbridge_connectors::model::Segment;
use qunbridge_connectors::{Kind, Outbound, RelatedMessages};

use super::keys::origin as key;
use super::{Copy, CopyRecord, OriginEntry, RelayStore, StoreError};

/// Characters of a message kept for quoting.
const EXCERPT_CHARS: usize = 30;

/// What to add to the map once `account` sent `outbound` under the platform ids `ids`;
/// `None` for a recall or when the platform gave no id.
pub fn record(outbound: &Outbound, account: &str, ids: &[String]) -> Option<CopyRecord> {
    if outbound.kind != Kind::Message || ids.is_empty() {
        return None;
    }
    let origin = &outbound.origin;
    let body = outbound
        .text
        .get(outbound.prefix.len()..)
        .unwrap_or(&outbound.text);
    let mut excerpt: String = body.chars().take(EXCERPT_CHARS).collect();
    if body.chars().count() > EXCERPT_CHARS {
        excerpt.push('…');
    }
    Some(CopyRecord {
        origin_key: key(&origin.account, &origin.group, &origin.message_id),
        origin: OriginEntry {
            account: origin.account.clone(),
            group: origin.group.clone(),
            message_id: origin.message_id.clone(),
            excerpt: format!("{}: {excerpt}", outbound.sender.name),
            copies: Vec::new(),
        },
        copies: ids
            .iter()
            .map(|id| Copy {
                account: account.to_owned(),
                group: outbound.group.clone(),
                id: id.clone(),
            })
            .collect(),
    })
}

/// What the destination `account`/`outbound.group` has of the messages `outbound` refers to.
///
/// # Errors
/// [`StoreError`] when the store cannot be read.
pub async fn related(
    store: &dyn RelayStore,
    outbound: &Outbound,
    account: &str,
) -> Result<RelatedMessages, StoreError> {
    let origin = &outbound.origin;
    let here = |entry: &OriginEntry| -> Vec<String> {
        entry
            .copies
            .iter()
            .filter(|c| c.account == account && c.group == outbound.group)
            .map(|c| c.id.clone())
            .collect()
    };
    match outbound.kind {
        Kind::Recall => {
            let entry = store
                .origin(&key(&origin.account, &origin.group, &origin.message_id))
                .await?;
            Ok(RelatedMessages {
                recall: entry.as_ref().map(here).unwrap_or_default(),
                ..RelatedMessages::default()
            })
        }
        Kind::Member => Ok(RelatedMessages::default()),
        Kind::Message => {
            let Some(replied) = outbound.segments.iter().find_map(|s| match s {
                Segment::Reply { message_id } => Some(message_id),
                _ => None,
            }) else {
                return Ok(RelatedMessages::default());
            };
            let replied_key = key(&origin.account, &origin.group, replied);
            // The replied message is an origin message, or a copy of one.
            let entry = match store.origin(&replied_key).await? {
                Some(entry) => entry,
                None => match store.origin_of_copy(&replied_key).await? {
                    Some(origin_key) => match store.origin(&origin_key).await? {
                        Some(entry) => entry,
                        None => return Ok(RelatedMessages::default()),
                    },
                    None => return Ok(RelatedMessages::default()),
                },
            };
            let reply_to = if entry.account == account && entry.group == outbound.group {
                Some(entry.message_id.clone())
            } else {
                here(&entry).into_iter().next()
            };
            Ok(RelatedMessages {
                quote: reply_to.is_none().then(|| entry.excerpt.clone()),
                reply_to,
                recall: Vec::new(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use qunbridge_connectors::{Origin, Platform, Sender};

    use super::*;
    use crate::store::{MemoryStore, WriteBatch};

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

    /// Records a send in the store.
    async fn sent(store: &MemoryStore, outbound: &Outbound, account: &str, ids: &[String]) {
        let batch = WriteBatch {
            keys: Vec::new(),
            copies: record(outbound, account, ids).into_iter().collect(),
            ..Default::default()
        };
        store.write(batch).await.expect("write");
    }

    /// The related messages, or a panic.
    async fn rel(store: &MemoryStore, outbound: &Outbound, account: &str) -> RelatedMessages {
        related(store, outbound, account).await.expect("read")
    }

    #[tokio::test]
    async fn recalls_and_replies_find_the_destination_copies() {
        let map = MemoryStore::new(10);
        // qq:1 message 100 was relayed to wx:w as "w-7" and to hub:h as "3".
        let original = outbound(
            "qq",
            "1",
            "100",
            "w",
            vec![Segment::text("hello there")],
            Kind::Message,
        );
        sent(&map, &original, "wx", &["w-7".into()]).await;
        let mut to_hub = original.clone();
        to_hub.group = "h".into();
        sent(&map, &to_hub, "hub", &["3".into()]).await;

        let recall = outbound("qq", "1", "100", "w", vec![], Kind::Recall);
        assert_eq!(
            rel(&map, &recall, "wx").await.recall,
            vec!["w-7".to_owned()]
        );

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
        assert_eq!(
            rel(&map, &reply, "wx").await.reply_to.as_deref(),
            Some("w-7")
        );
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
        assert_eq!(
            rel(&map, &back, "qq").await.reply_to.as_deref(),
            Some("100")
        );
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
        let related = rel(&map, &elsewhere, "ding").await;
        assert_eq!(related.reply_to, None);
        assert_eq!(related.quote.as_deref(), Some("Ann: hello there"));
    }
}
