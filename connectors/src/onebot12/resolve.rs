//! Completing a OneBot v12 group message before it is published: the sender's display name
//! (`get_group_member_info`: `user_displayname`, else `user_name`), the names of mentioned
//! members, and picture URLs (`get_file` with type `url`, when the implementation supports
//! it; else the picture stays the `[图片]` placeholder).
//!
//! The choice made here: a message's lookups start the moment its frame arrives, run
//! concurrently in their own task, and are waited for at most [`LOOKUP_WAIT`] in all. What
//! has not answered by then is published with its fallback (the member's id as the name, the
//! placeholder for a picture). Messages are still published in arrival order, so a slow
//! answer holds the messages behind it back by at most that wait and never longer; the late
//! answer still lands in the name cache for the member's next message. A member already in
//! the cache costs nothing: the message is ready at once.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::{debug, info};

use super::action::{self, Outcome, UNSUPPORTED_ACTION, UNSUPPORTED_PARAM};
use super::event::{Fill, Incoming};
use super::names::{Lookup, MemberKey, NameCache};
use crate::model::{Envelope, Segment};
pub use crate::onebot_ws::ingress::IngressItem;
use crate::onebot_ws::{CallError, Session};

/// Longest a message waits for its lookups before it is published with fallbacks.
pub const LOOKUP_WAIT: Duration = Duration::from_millis(1500);
/// Members whose names are cached per account.
const NAME_CAPACITY: usize = 4096;
/// How long a looked-up name is used before asking again.
const NAME_TTL: Duration = Duration::from_secs(600);
/// How long a failed lookup is remembered.
const NAME_NEGATIVE_TTL: Duration = Duration::from_secs(60);
/// Member lookups in flight at once per account; beyond that, names fall back to the id.
const MAX_LOOKUPS: usize = 32;

/// `get_file` support not known yet.
const FILES_UNKNOWN: u8 = 0;
/// `get_file` answered with a URL before.
const FILES_SUPPORTED: u8 = 1;
/// `get_file` (or its `url` type) is not supported: pictures stay placeholders.
const FILES_UNSUPPORTED: u8 = 2;

/// What a lookup found for one [`Fill`].
enum Filled {
    /// A mention's display name.
    Name(usize, Option<String>),
    /// A picture's URL and file name.
    Image(usize, Option<(String, Option<String>)>),
}

/// Completes the group messages of one account; shared by its sessions.
pub struct Resolver {
    /// Account id, for logs.
    account: String,
    /// Member names.
    names: NameCache,
    /// Bounds the member lookups in flight.
    lookups: Arc<Semaphore>,
    /// Whether `get_file` gives URLs (`FILES_*`).
    files: AtomicU8,
}

impl Resolver {
    /// A resolver for one account.
    pub fn new(account: String) -> Resolver {
        Resolver {
            account,
            names: NameCache::new(NAME_CAPACITY, NAME_TTL, NAME_NEGATIVE_TTL),
            lookups: Arc::new(Semaphore::new(MAX_LOOKUPS)),
            files: AtomicU8::new(FILES_UNKNOWN),
        }
    }

    /// Starts completing a message; `session` is the connection to ask on (none: fallbacks).
    pub fn complete(
        self: &Arc<Self>,
        mut incoming: Incoming,
        session: Option<Session>,
    ) -> IngressItem {
        if self.settle_from_cache(&mut incoming) {
            return IngressItem::Ready(Box::new(incoming.envelope));
        }
        let resolver = self.clone();
        IngressItem::Resolving(tokio::spawn(async move {
            resolver.fill(incoming, session.as_ref()).await
        }))
    }

    /// Applies what the cache already knows; true when nothing is left to look up.
    fn settle_from_cache(&self, incoming: &mut Incoming) -> bool {
        let group = incoming.envelope.origin.group.clone();
        if !incoming.name_known {
            let key = (group.clone(), incoming.envelope.sender.id.clone());
            if let Some(name) = self.names.peek(&key) {
                if let Some(name) = name {
                    incoming.envelope.sender.name = name;
                }
                incoming.name_known = true;
            }
        }
        let files_unsupported = self.files.load(Ordering::Relaxed) == FILES_UNSUPPORTED;
        let segments = &mut incoming.envelope.segments;
        incoming.fills.retain(|fill| match fill {
            Fill::MentionName { index, user_id } => {
                match self.names.peek(&(group.clone(), user_id.clone())) {
                    Some(name) => {
                        set_mention_name(segments, *index, name);
                        false
                    }
                    None => true,
                }
            }
            Fill::ImageFile { .. } => !files_unsupported,
        });
        incoming.name_known && incoming.fills.is_empty()
    }

    /// Looks up everything a message lacks, concurrently, within [`LOOKUP_WAIT`].
    async fn fill(self: Arc<Self>, incoming: Incoming, session: Option<&Session>) -> Envelope {
        let deadline = Instant::now() + LOOKUP_WAIT;
        let Incoming {
            mut envelope,
            name_known,
            fills,
        } = incoming;
        let group = envelope.origin.group.clone();
        let sender_key = (group.clone(), envelope.sender.id.clone());
        let sender = async {
            if name_known {
                None
            } else {
                self.name(session, sender_key, deadline).await
            }
        };
        let filled = join_all(fills.into_iter().map(|fill| {
            let group = group.clone();
            let resolver = &self;
            async move {
                match fill {
                    Fill::MentionName { index, user_id } => Filled::Name(
                        index,
                        resolver.name(session, (group, user_id), deadline).await,
                    ),
                    Fill::ImageFile { index, file_id } => {
                        Filled::Image(index, resolver.file(session, &file_id, deadline).await)
                    }
                }
            }
        }));
        let (sender, filled) = tokio::join!(sender, filled);
        match sender {
            Some(name) => envelope.sender.name = name,
            None if !name_known => {
                debug!(message = "Sender name unknown in time; using the member's id.", account = %self.account);
            }
            None => {}
        }
        for fill in filled {
            match fill {
                Filled::Name(index, name) => set_mention_name(&mut envelope.segments, index, name),
                Filled::Image(index, Some((url, name))) => {
                    if let Some(Segment::Image {
                        url: slot_url,
                        name: slot_name,
                        ..
                    }) = envelope.segments.get_mut(index)
                    {
                        *slot_url = Some(url);
                        if name.is_some() {
                            *slot_name = name;
                        }
                    }
                }
                Filled::Image(_, None) => {}
            }
        }
        envelope
    }

    /// A member's display name, from the cache, a lookup under way, or a new lookup; `None`
    /// when unknown by `deadline`.
    async fn name(
        self: &Arc<Self>,
        session: Option<&Session>,
        key: MemberKey,
        deadline: Instant,
    ) -> Option<String> {
        let mut answer = match self.names.begin(&key) {
            Lookup::Hit(name) => return name,
            Lookup::Wait(answer) => answer,
            Lookup::Miss(tx) => {
                let permit = self.lookups.clone().try_acquire_owned();
                let (Some(session), Ok(permit)) = (session, permit) else {
                    self.names.abandon(&key, tx);
                    return None;
                };
                let answer = tx.subscribe();
                let resolver = self.clone();
                let session = session.clone();
                // The lookup outlives this message's wait: a late answer fills the cache.
                tokio::spawn(async move {
                    let _permit = permit;
                    resolver.look_up(&session, key, tx).await;
                });
                answer
            }
        };
        let found = match tokio::time::timeout_at(deadline, answer.wait_for(Option::is_some)).await
        {
            Ok(Ok(found)) => found.clone().flatten(),
            _ => None,
        };
        found
    }

    /// Asks the implementation for a member and records the answer.
    async fn look_up(
        &self,
        session: &Session,
        key: MemberKey,
        tx: tokio::sync::watch::Sender<super::names::Answer>,
    ) {
        let params = json!({ "group_id": key.0, "user_id": key.1 });
        match session.call("get_group_member_info", params).await {
            Ok(body) => match action::outcome(&body) {
                Outcome::Ok(data) => self.names.finish(&key, member_name(&data), tx),
                Outcome::Failed { retcode, message } => {
                    debug!(message = "get_group_member_info failed.", account = %self.account, retcode, error = %message);
                    self.names.finish(&key, None, tx);
                }
            },
            Err(CallError::Closed) => self.names.abandon(&key, tx),
            Err(error) => {
                debug!(message = "get_group_member_info unanswered.", account = %self.account, %error);
                self.names.finish(&key, None, tx);
            }
        }
    }

    /// A picture's URL (and file name) from `get_file`, when the implementation gives one
    /// by `deadline`.
    async fn file(
        &self,
        session: Option<&Session>,
        file_id: &str,
        deadline: Instant,
    ) -> Option<(String, Option<String>)> {
        if self.files.load(Ordering::Relaxed) == FILES_UNSUPPORTED {
            return None;
        }
        let session = session?;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        let params = json!({ "file_id": file_id, "type": "url" });
        let body = session.call_within("get_file", params, left).await.ok()?;
        match action::outcome(&body) {
            Outcome::Ok(data) => {
                let url = data
                    .get("url")
                    .and_then(Value::as_str)
                    .filter(|u| u.starts_with("http://") || u.starts_with("https://"))?;
                self.files.store(FILES_SUPPORTED, Ordering::Relaxed);
                let name = data
                    .get("name")
                    .and_then(Value::as_str)
                    .filter(|n| !n.is_empty())
                    .map(str::to_owned);
                Some((url.to_owned(), name))
            }
            Outcome::Failed { retcode, .. }
                if retcode == UNSUPPORTED_ACTION || retcode == UNSUPPORTED_PARAM =>
            {
                if self.files.swap(FILES_UNSUPPORTED, Ordering::Relaxed) != FILES_UNSUPPORTED {
                    info!(message = "The implementation gives no picture URLs (get_file type url); pictures are relayed as [图片].", account = %self.account, retcode);
                }
                None
            }
            Outcome::Failed { retcode, message } => {
                debug!(message = "get_file failed.", account = %self.account, retcode, error = %message);
                None
            }
        }
    }
}

/// The name `get_group_member_info` gave: `user_displayname` (the group nickname; always
/// empty from ComWeChatClient), else `user_name`; `nickname`/`card` from implementations
/// that borrow v11 names.
pub fn member_name(data: &Value) -> Option<String> {
    ["user_displayname", "user_name", "card", "nickname"]
        .iter()
        .filter_map(|key| data.get(*key).and_then(Value::as_str))
        .map(str::trim)
        .find(|name| !name.is_empty())
        .map(str::to_owned)
}

/// Sets a mention's display name.
fn set_mention_name(segments: &mut [Segment], index: usize, name: Option<String>) {
    if let (Some(Segment::Mention { name: slot, .. }), Some(name)) = (segments.get_mut(index), name)
    {
        *slot = Some(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_display_name_wins_over_the_nickname() {
        assert_eq!(
            member_name(&json!({"user_id": "u", "user_name": "小明", "user_displayname": ""})),
            Some("小明".into())
        );
        assert_eq!(
            member_name(&json!({"user_name": "小明", "user_displayname": "明 | 运维"})),
            Some("明 | 运维".into())
        );
        assert_eq!(member_name(&json!({"user_name": " "})), None);
        assert_eq!(member_name(&json!(true)), None);
    }

    #[tokio::test]
    async fn without_a_connection_messages_fall_back_to_ids_at_once() {
        let resolver = Arc::new(Resolver::new("wx".into()));
        let event = r#"{"type":"message","detail_type":"group","group_id":"g","user_id":"u1","message_id":"1","message":[{"type":"mention","data":{"user_id":"u2"}},{"type":"image","data":{"file_id":"f"}}]}"#;
        let none = |_: &str| false;
        let cx = super::super::event::DecodeContext {
            account: "wx",
            platform: crate::model::Platform::Wechat,
            self_id: None,
            is_other_bot: &none,
        };
        let Ok(super::super::event::Decoded {
            frame: super::super::event::Frame::Message(incoming),
            ..
        }) = super::super::event::decode(event, &cx)
        else {
            panic!("a message");
        };
        let started = Instant::now();
        let IngressItem::Resolving(task) = resolver.complete(*incoming, None) else {
            panic!("lookups needed");
        };
        let envelope = task.await.expect("joined");
        assert!(
            started.elapsed() < LOOKUP_WAIT,
            "nothing to wait for without a session"
        );
        assert_eq!(envelope.sender.name, "u1");
        assert_eq!(
            crate::model::segments_to_text(&envelope.segments),
            "@u2[图片]"
        );
    }
}
