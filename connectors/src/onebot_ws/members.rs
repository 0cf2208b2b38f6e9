//! Group membership on OneBot, shared by v11 and v12 (MEMBERS.md §2.1–2.4): member notices as
//! `kind = "member"` envelopes, the member's name looked up before publishing, the member
//! counts of `get_group_list`, and the optional poll of `get_group_member_list` for
//! implementations that emit no notices (ComWeChatClient).
//!
//! **Names without stalling the socket.** A join or leave notice carries no name, and the
//! answer to `get_group_member_info` comes back on the very socket whose reader loop would
//! be waiting for it. So nothing on the reading side waits: when the connection admits a
//! member notice ([`name_later`]), the lookup is spawned as a task of its own (on the
//! account's session that takes actions) and the notice is queued, in arrival order, as an
//! [`IngressItem::Resolving`]. The reader goes on reading (responses included: it reads on
//! while an action awaits its response, see [`super::connection`]); the ordered ingress
//! awaits the task when the notice's turn comes, and the task ends within [`NAME_WAIT`]
//! whatever the implementation does. A late or failed answer leaves the name `""` (the core
//! shows 新成员, never the number). So a notice holds the messages behind it back by at most
//! that wait, exactly as a v12 message's lookups do (`onebot12::resolve`, which v12 notices
//! go through, name cache included).
//!
//! **Counts and the poll.** [`run_rounds`] runs beside the account's sockets (and stops at
//! once, mid-round too, when intake stops or egress has drained): once a session
//! takes actions, and then every [`Schedule::count_every`], it asks `get_group_list` and
//! publishes one `change = count` envelope per group with a known member count: on v11 the
//! fresh count of `get_group_info` (`no_cache`, one call per group, in turn), else or when
//! that fails the list item's `member_count` (which NapCat answers from a cache). With
//! `member_poll` set, every [`Schedule::poll_every`] it also asks `get_group_member_list` for
//! each group, one group at a time (ComWeChatClient makes one COM call per member), and diffs
//! the answer against the previous poll of that group held in memory ([`Roster`]): the first
//! poll of a group records a baseline and emits nothing; later polls emit a join per new
//! member and a leave per missing one (`how = poll`, `member_count` = the list's length). A
//! group whose list item told no count gets a count envelope from the list's length. Both
//! publish through the same ordered ingress as messages. Failures are logged and retried at
//! the next period; `qunbridge_member_polls_total{account,outcome}` counts each group poll.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Map, Value};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::frame::{id_of, text_of, DecodeContext, FrameError};
use super::ingress::IngressItem;
use super::link::AccountLink;
use super::outcome::Outcome;
use super::session::Session;
use super::version::Version;
use crate::member::{Change, How, MemberEvent};
use crate::model::{Envelope, Platform, Sender};

/// Longest a member notice waits for its member's name before it is published without.
pub const NAME_WAIT: Duration = Duration::from_secs(2);
/// How often the member counts are asked for.
pub const COUNT_EVERY: Duration = Duration::from_secs(6 * 3600);
/// How long one group's `get_group_member_list` may take (ComWeChatClient asks one COM call
/// per member: a large group takes a while).
pub const LIST_TIMEOUT: Duration = Duration::from_secs(120);

/// When the periodic rounds of one account run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Period of the member counts (`get_group_list`); `None`: off (tests whose scripted
    /// peer must see no action but theirs).
    pub count_every: Option<Duration>,
    /// Period of the member-list poll; `None`: off.
    pub poll_every: Option<Duration>,
}

impl Schedule {
    /// Counts every [`COUNT_EVERY`], and the poll when `member_poll` is set.
    pub fn new(poll_every: Option<Duration>) -> Schedule {
        Schedule {
            count_every: Some(COUNT_EVERY),
            poll_every,
        }
    }

    /// No counts and no poll.
    pub fn off() -> Schedule {
        Schedule {
            count_every: None,
            poll_every: None,
        }
    }
}

/// A member envelope: the member is the sender (`name` is `""` when unknown). Its id is
/// `account:group:member:<change>:<user>:<seconds>`, and the origin's message id the same
/// suffix.
pub fn member_envelope(
    account: &str,
    platform: Platform,
    group: String,
    user: String,
    name: String,
    ts_ms: u64,
    event: MemberEvent,
) -> Envelope {
    let suffix = format!("member:{}:{user}:{}", event.change.as_str(), ts_ms / 1000);
    let member = Sender {
        id: user,
        name,
        is_bot: false,
    };
    Envelope::membership(account, platform, group, suffix, member, ts_ms, event)
}

/// A member count of `group`: `change = count`, no member (sender id and name `""`), id
/// `account:group:count:<ts_ms>`.
pub fn count_envelope(
    account: &str,
    platform: Platform,
    group: String,
    count: u64,
    ts_ms: u64,
) -> Envelope {
    let event = MemberEvent {
        change: Change::Count,
        how: How::Unknown,
        operator: None,
        member_count: Some(count),
    };
    let nobody = Sender {
        id: String::new(),
        name: String::new(),
        is_bot: false,
    };
    Envelope::membership(
        account,
        platform,
        group,
        format!("count:{ts_ms}"),
        nobody,
        ts_ms,
        event,
    )
}

/// A join or leave notice (v11 `group_increase`/`group_decrease`, v12
/// `group_member_increase`/`group_member_decrease`) as a member envelope without a name:
/// `how` is the `sub_type` as [`How::parse`] reads it (unknown spellings are
/// [`How::Unknown`], never an error), an `operator_id` of 0 or none is no operator.
/// `numeric_user`: the platform's user ids are numbers (QQ), so anything else is malformed.
///
/// # Errors
/// [`FrameError::Field`] when the group id is missing, or the user id is missing (or not a
/// number where it must be one).
pub fn notice_envelope(
    object: &Map<String, Value>,
    cx: &DecodeContext<'_>,
    change: Change,
    ts_ms: u64,
    numeric_user: bool,
) -> Result<Envelope, FrameError> {
    let group = id_of(object.get("group_id")).ok_or(FrameError::Field("group_id"))?;
    let user = id_of(object.get("user_id"))
        .filter(|user| !numeric_user || is_number(user))
        .ok_or(FrameError::Field("user_id"))?;
    let operator = id_of(object.get("operator_id")).filter(|id| id != "0");
    let event = MemberEvent {
        change,
        how: How::parse(text_of(object, "sub_type")),
        operator,
        member_count: None,
    };
    Ok(member_envelope(
        cx.account,
        cx.platform,
        group,
        user,
        String::new(),
        ts_ms,
        event,
    ))
}

/// True for a decimal number, as QQ ids are.
fn is_number(id: &str) -> bool {
    let digits = id.strip_prefix('-').unwrap_or(id);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// The name a member object gives, whichever version spelled it: the group card (v11
/// `card`, v12 `user_displayname`), else the nickname (`nickname`, `user_name`).
pub fn member_name(data: &Value) -> Option<String> {
    ["card", "user_displayname", "nickname", "user_name"]
        .iter()
        .filter_map(|key| data.get(*key).and_then(Value::as_str))
        .map(str::trim)
        .find(|name| !name.is_empty())
        .map(str::to_owned)
}

/// Queues a member notice for ingress: a join or leave without a name has it looked up
/// (`get_group_member_info` on `session`) in a task of its own that ends within
/// [`NAME_WAIT`]; anything else (or no session to ask) is ready at once.
pub fn name_later<V: Version>(envelope: Envelope, session: Option<Session>) -> IngressItem {
    let needs_name = envelope.sender.name.is_empty()
        && envelope
            .member
            .as_ref()
            .is_some_and(|m| m.change != Change::Count);
    let Some(session) = session.filter(|_| needs_name) else {
        return IngressItem::Ready(Box::new(envelope));
    };
    IngressItem::Resolving(tokio::spawn(async move {
        let mut envelope = envelope;
        if let Some(name) = look_up_name::<V>(
            &session,
            &envelope.origin.group,
            &envelope.sender.id,
            NAME_WAIT,
        )
        .await
        {
            envelope.sender.name = name;
        }
        envelope
    }))
}

/// A member's name from `get_group_member_info`, when the implementation tells it within
/// `wait`.
pub async fn look_up_name<V: Version>(
    session: &Session,
    group: &str,
    user: &str,
    wait: Duration,
) -> Option<String> {
    let params = json!({ "group_id": V::id_param(group), "user_id": V::id_param(user) });
    match session
        .call_within("get_group_member_info", params, wait)
        .await
    {
        Ok(body) => match V::outcome(&body) {
            Outcome::Ok(data) => member_name(&data),
            Outcome::Failed { retcode, message } => {
                debug!(message = "get_group_member_info failed; the member stays unnamed.", retcode, error = %message);
                None
            }
        },
        Err(error) => {
            debug!(message = "get_group_member_info unanswered; the member stays unnamed.", %error);
            None
        }
    }
}

/// The groups of a `get_group_list` answer, with their member count when the item tells it
/// (a number, or a string of one); items without a group id are skipped.
pub fn group_list(data: &Value) -> Vec<(String, Option<u64>)> {
    data.as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| {
            let group = id_of(item.get("group_id"))?;
            Some((group, member_count(item)))
        })
        .collect()
}

/// The `member_count` of a group item (`get_group_list` item or `get_group_info` answer): a
/// number, or a string of one.
fn member_count(item: &Value) -> Option<u64> {
    match item.get("member_count") {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
}

/// The member count `get_group_info` (with `no_cache`) tells for `group`, or `None` (logged
/// at debug: the list's count stands in) when it fails or tells none.
async fn fresh_count<V: Version>(
    link: &AccountLink<V>,
    session: &Session,
    group: &str,
) -> Option<u64> {
    let params = json!({ "group_id": V::id_param(group), "no_cache": true });
    match session.call("get_group_info", params).await {
        Ok(body) => match V::outcome(&body) {
            Outcome::Ok(data) => member_count(&data),
            Outcome::Failed { retcode, message } => {
                debug!(message = "get_group_info failed; the group list's count stands in.", account = %link.account, retcode, error = %message);
                None
            }
        },
        Err(error) => {
            debug!(message = "get_group_info unanswered; the group list's count stands in.", account = %link.account, %error);
            None
        }
    }
}

/// The members of a `get_group_member_list` answer: id and name (`""` when none); items
/// without a user id are skipped.
pub fn member_list(data: &Value) -> Vec<(String, String)> {
    data.as_array()
        .into_iter()
        .flatten()
        .filter_map(|item| {
            let user = id_of(item.get("user_id"))?;
            Some((user, member_name(item).unwrap_or_default()))
        })
        .collect()
}

/// The member lists of the previous poll, by group: what a new poll is diffed against.
#[derive(Debug, Default)]
pub struct Roster {
    /// Members (id → name) by group.
    groups: HashMap<String, BTreeMap<String, String>>,
}

impl Roster {
    /// Records `members` as the list of `group` and returns the changes since the previous
    /// poll of that group, joins then leaves, each ordered by user id, with the member's name
    /// (a leaver's from the previous poll). The first poll of a group only records it.
    pub fn update(
        &mut self,
        group: &str,
        members: Vec<(String, String)>,
    ) -> Vec<(Change, String, String)> {
        let now: BTreeMap<String, String> = members.into_iter().collect();
        let Some(before) = self.groups.insert(group.to_owned(), now) else {
            return Vec::new();
        };
        let now = &self.groups[group];
        let joins = now
            .iter()
            .filter(|(user, _)| !before.contains_key(*user))
            .map(|(user, name)| (Change::Join, user.clone(), name.clone()));
        let leaves = before
            .iter()
            .filter(|(user, _)| !now.contains_key(*user))
            .map(|(user, name)| (Change::Leave, user.clone(), name.clone()));
        joins.chain(leaves).collect()
    }

    /// Forgets the groups not in `groups` (the bot left them).
    pub fn keep_only(&mut self, groups: &[String]) {
        self.groups.retain(|group, _| groups.contains(group));
    }
}

/// Runs the member counts and (when on) the member-list poll of one account until `stop`.
pub async fn run_rounds<V: Version>(
    link: Arc<AccountLink<V>>,
    schedule: Schedule,
    stop: CancellationToken,
) {
    let counts = async {
        let Some(every) = schedule.count_every else {
            return;
        };
        loop {
            let Some(session) = link.sessions.wait_for_actions(&stop).await else {
                return;
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = count_round(&link, &session) => {}
            }
            if !pause(every, &stop).await {
                return;
            }
        }
    };
    let poll = async {
        let Some(every) = schedule.poll_every else {
            return;
        };
        let mut roster = Roster::default();
        loop {
            let Some(session) = link.sessions.wait_for_actions(&stop).await else {
                return;
            };
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = poll_round(&link, &session, &mut roster) => {}
            }
            if !pause(every, &stop).await {
                return;
            }
        }
    };
    tokio::join!(counts, poll);
}

/// Waits `delay`; false when `stop` came first.
async fn pause(delay: Duration, stop: &CancellationToken) -> bool {
    tokio::select! {
        _ = stop.cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}

/// The groups of the account with their member counts, or `None` (logged) when
/// `get_group_list` failed.
async fn groups<V: Version>(
    link: &AccountLink<V>,
    session: &Session,
) -> Option<Vec<(String, Option<u64>)>> {
    match session.call("get_group_list", json!({})).await {
        Ok(body) => match V::outcome(&body) {
            Outcome::Ok(data) => Some(group_list(&data)),
            Outcome::Failed { retcode, message } => {
                warn!(message = "get_group_list failed; member counts wait for the next round.", account = %link.account, retcode, error = %message);
                None
            }
        },
        Err(error) => {
            warn!(message = "get_group_list unanswered; member counts wait for the next round.", account = %link.account, %error);
            None
        }
    }
}

/// One round of member counts: a count envelope per group that tells its count.
async fn count_round<V: Version>(link: &AccountLink<V>, session: &Session) {
    let Some(groups) = groups(link, session).await else {
        return;
    };
    let ts_ms = crate::context::now_ms();
    let mut published = 0usize;
    for (group, listed) in groups {
        let fresh = if V::COUNT_IN_GROUP_INFO {
            fresh_count(link, session, &group).await
        } else {
            None
        };
        let Some(count) = fresh.or(listed) else {
            continue;
        };
        let envelope = count_envelope(&link.account, link.platform, group, count, ts_ms);
        if !publish(link, envelope).await {
            return;
        }
        published += 1;
    }
    debug!(message = "Member counts published.", account = %link.account, groups = published);
}

/// One poll of every group's member list, one group after another.
async fn poll_round<V: Version>(link: &AccountLink<V>, session: &Session, roster: &mut Roster) {
    let Some(groups) = groups(link, session).await else {
        count_poll(&link.account, "failed");
        return;
    };
    let ids: Vec<String> = groups.iter().map(|(group, _)| group.clone()).collect();
    roster.keep_only(&ids);
    let mut changes = 0usize;
    for (group, listed_count) in groups {
        let params = json!({ "group_id": V::id_param(&group) });
        let members = match session
            .call_within("get_group_member_list", params, LIST_TIMEOUT)
            .await
        {
            Ok(body) => match V::outcome(&body) {
                Outcome::Ok(data) => member_list(&data),
                Outcome::Failed { retcode, message } => {
                    warn!(message = "get_group_member_list failed; the group is polled again next round.", account = %link.account, retcode, error = %message);
                    count_poll(&link.account, "failed");
                    continue;
                }
            },
            Err(error) => {
                warn!(message = "get_group_member_list unanswered; the group is polled again next round.", account = %link.account, %error);
                count_poll(&link.account, "failed");
                continue;
            }
        };
        count_poll(&link.account, "ok");
        let count = members.len() as u64;
        let ts_ms = crate::context::now_ms();
        let mut envelopes: Vec<Envelope> = roster
            .update(&group, members)
            .into_iter()
            .map(|(change, user, name)| {
                let event = MemberEvent {
                    change,
                    how: How::Poll,
                    operator: None,
                    member_count: Some(count),
                };
                member_envelope(
                    &link.account,
                    link.platform,
                    group.clone(),
                    user,
                    name,
                    ts_ms,
                    event,
                )
            })
            .collect();
        changes += envelopes.len();
        if listed_count.is_none() {
            envelopes.push(count_envelope(
                &link.account,
                link.platform,
                group,
                count,
                ts_ms,
            ));
        }
        for envelope in envelopes {
            if !publish(link, envelope).await {
                return;
            }
        }
    }
    info!(message = "Member lists polled.", account = %link.account, groups = ids.len(), changes);
}

/// Queues an envelope for the ordered ingress; false when intake stopped (nothing more is
/// published).
async fn publish<V: Version>(link: &AccountLink<V>, envelope: Envelope) -> bool {
    if link.intake.is_cancelled() {
        return false;
    }
    link.events.send(V::queue(envelope)).await.is_ok()
}

/// Counts one group's poll (`qunbridge_member_polls_total{account,outcome}`).
fn count_poll(account: &str, outcome: &'static str) {
    metrics::counter!(crate::metrics::MEMBER_POLLS, "account" => account.to_owned(), "outcome" => outcome)
        .increment(1);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Kind;

    fn names(list: &[&str]) -> Vec<(String, String)> {
        list.iter()
            .map(|user| ((*user).to_owned(), format!("name-{user}")))
            .collect()
    }

    #[test]
    fn the_first_poll_is_a_baseline_and_later_ones_give_joins_and_leaves() {
        let mut roster = Roster::default();
        assert!(roster.update("g", names(&["a", "b", "c"])).is_empty());
        assert!(roster.update("g", names(&["a", "b", "c"])).is_empty());
        assert_eq!(
            roster.update("g", names(&["a", "c", "d"])),
            vec![
                (Change::Join, "d".to_owned(), "name-d".to_owned()),
                (Change::Leave, "b".to_owned(), "name-b".to_owned()),
            ]
        );
        // Another group has its own baseline; a group the bot left is forgotten.
        assert!(roster.update("h", names(&["x"])).is_empty());
        roster.keep_only(&["h".to_owned()]);
        assert!(
            roster.update("g", names(&["a"])).is_empty(),
            "a new baseline"
        );
    }

    #[test]
    fn lists_are_read_whichever_version_spelled_them() {
        let v11 = json!([{"group_id": 111, "group_name": "a", "member_count": 42},
            {"group_id": "222", "member_count": "7"}, {"group_id": 333}, {"group_name": "x"}]);
        assert_eq!(
            group_list(&v11),
            vec![
                ("111".into(), Some(42)),
                ("222".into(), Some(7)),
                ("333".into(), None)
            ]
        );
        assert!(group_list(&json!(null)).is_empty());
        let members = json!([{"user_id": 1, "nickname": "Nick", "card": ""},
            {"user_id": "wxid_b", "user_name": "小明", "user_displayname": ""},
            {"user_id": 3, "nickname": "N", "card": "Card"}, {"nickname": "no id"}]);
        assert_eq!(
            member_list(&members),
            vec![
                ("1".into(), "Nick".into()),
                ("wxid_b".into(), "小明".into()),
                ("3".into(), "Card".into())
            ]
        );
    }

    /// A join of user 42 in group 111 of account `qq`, without a name.
    fn join() -> Envelope {
        let event = MemberEvent {
            change: Change::Join,
            how: How::Approve,
            operator: None,
            member_count: None,
        };
        member_envelope(
            "qq",
            Platform::Qq,
            "111".into(),
            "42".into(),
            String::new(),
            1_718_880_000_000,
            event,
        )
    }

    #[tokio::test]
    async fn a_join_is_named_by_get_group_member_info_on_the_same_session() {
        use crate::onebot11::ingress::OneBot11;
        use crate::onebot_ws::ingress::ready_item;
        use crate::onebot_ws::{Pending, Sessions};
        use tokio_tungstenite::tungstenite::Message;

        let sessions = Sessions::default();
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let pending = Arc::new(Pending::default());
        let session = sessions.open(
            tx,
            pending.clone(),
            crate::reverse_ws::ClientRole::Universal,
        );
        let item = name_later::<OneBot11>(join(), Some(session));
        let Some(Message::Text(frame)) = rx.recv().await else {
            panic!("the lookup goes out as a text frame");
        };
        let frame: Value = serde_json::from_str(&frame).expect("json");
        assert_eq!(frame["action"], "get_group_member_info");
        assert_eq!(
            frame["params"],
            json!({"group_id": 111, "user_id": 42}),
            "v11 ids are numbers"
        );
        let echo = frame["echo"].as_str().expect("echo").to_owned();
        assert!(pending.resolve(
            &echo,
            json!({"status": "ok", "retcode": 0,
            "data": {"user_id": 42, "nickname": "Nick", "card": "Card | Ops"}})
        ));
        let envelope = ready_item("qq", item).await.expect("published");
        assert_eq!(envelope.sender.name, "Card | Ops");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_lookup_leaves_the_name_empty_after_the_wait() {
        use crate::onebot11::ingress::OneBot11;
        use crate::onebot_ws::ingress::ready_item;
        use crate::onebot_ws::{Pending, Sessions};

        let sessions = Sessions::default();
        let (tx, _rx) = tokio::sync::mpsc::channel(4);
        let session = sessions.open(
            tx,
            Arc::new(Pending::default()),
            crate::reverse_ws::ClientRole::Universal,
        );
        let started = tokio::time::Instant::now();
        let item = name_later::<OneBot11>(join(), Some(session));
        let envelope = ready_item("qq", item).await.expect("published");
        assert_eq!(envelope.sender.name, "");
        assert_eq!(started.elapsed(), NAME_WAIT);
        // Without a session, or for a count, nothing is asked.
        assert!(matches!(
            name_later::<OneBot11>(join(), None),
            IngressItem::Ready(_)
        ));
    }

    #[test]
    fn count_and_member_envelopes_are_shaped_for_the_core() {
        let count = count_envelope("qq", Platform::Qq, "111".into(), 42, 1_718_880_000_123);
        assert_eq!(count.id, "qq:111:count:1718880000123");
        assert_eq!(count.kind, Kind::Member);
        assert_eq!(
            (count.sender.id.as_str(), count.sender.name.as_str()),
            ("", "")
        );
        let member = count.member.expect("a member event");
        assert_eq!(
            (member.change, member.how, member.member_count),
            (Change::Count, How::Unknown, Some(42))
        );
    }
}
