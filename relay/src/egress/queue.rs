//! One destination's ordered queue and its worker: wait for the pacers, then send what is at
//! the front. While the destination waits, what queues up behind is merged into one message
//! ([`super::coalesce`]) up to the platform's length limit; a message longer than the limit
//! is split into parts ([`super::split`]) that queue up in its place; merged and split sends
//! keep their pictures after their text, and on platforms where each picture is a message of
//! its own every picture takes a pacing token. Only messages older
//! than `max_delay` are dropped, each counted and logged. Each send and its retries are
//! [`super::send`]'s; after a send the worker records the send log, the message map and the
//! echo fingerprint, then acknowledges.

use std::collections::{HashSet, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, RandomState};
use std::sync::Arc;
use std::time::Duration;

use qunbridge_connectors::model::Segment;
use qunbridge_connectors::split::measure;
use qunbridge_connectors::{Kind, Outbound, Platform, RelatedMessages, SendReceipt};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, warn};

use super::coalesce;
use super::pacing::{acquire, Pacer};
use super::record::{Record, Recorder};
use super::send::{prepare_ahead, send, settle_answer, submit, Answer, Settlement};
use super::split::split_message;
use super::{AccountEgress, Ack, DepthGauge, Queued};
use crate::activity::WorkGuard;
use crate::metrics::{count_drop, count_drops};
use crate::store::{keys, message_map, Prehashed, WriteBatch, ECHO_TTL, SEND_LOG_TTL};

/// Sends a destination keeps in flight at once when its connector answers in order.
const SEND_WINDOW: usize = 128;

/// Queue entries, from the front, whose pictures are fetched and uploaded before the next
/// pacing token: at most these go into one send.
const PREPARED_AHEAD: usize = 16;

/// Send-log keys a destination worker remembers itself (as 64-bit digests), for a
/// redelivered copy queued behind a message whose send-log write is still being committed,
/// and so that a message queued behind fewer than [`RECHECK_AFTER`] sends needs no store read.
/// A busy destination's set takes about 0.2 MB: a hash table of 16,384 8-byte slots (four
/// times this many, so that the slots keys leave behind are reclaimed in place rather than by
/// growing the table) and a queue of the digests. Kept as text (twice: in the set and in the
/// queue), the same keys took about 1 MB.
const RECENT_SENT: usize = 4096;

/// Sends after which a queued message is looked up in the send log again before it is sent:
/// until then, anything this worker sent since the message was checked (by the egress pump,
/// just before it was queued) is still among its [`RECENT_SENT`] keys, so the store has
/// nothing more to tell. Half of them, so that a key sent within a commit before that check
/// (not yet in the send log then) is remembered too.
const RECHECK_AFTER: u64 = (RECENT_SENT / 2) as u64;

/// A queue entry: a whole message, or one part of a split one.
struct Pending {
    /// What to send.
    outbound: Arc<Outbound>,
    /// The message as it arrived (for the message map and send log).
    original: Arc<Outbound>,
    /// Acknowledgement, on the last part only.
    ack: Option<Ack>,
    /// Keeps the message counted as in flight.
    work: Option<Arc<WorkGuard>>,
    /// True for a part cut from a longer message (already split: never split again).
    is_part: bool,
    /// When it entered this queue; `max_delay` counts from here, so a platform clock that is
    /// off never makes a fresh message look old.
    queued_at: Instant,
    /// True once its pictures were fetched and uploaded ahead of a pacing token (or when it
    /// has nothing to fetch): only such entries go into a send.
    prepared: bool,
    /// The worker's count of sent messages ([`RecentSent::count`]) when it was queued: while
    /// fewer than [`RECHECK_AFTER`] were sent since, whether it was sent already is known
    /// without a store read.
    sent_before: u64,
}

/// What one send carries: one or more queue entries.
struct Unit {
    /// The message to send.
    outbound: Arc<Outbound>,
    /// What the message map knows (only for a single, unmerged message).
    related: RelatedMessages,
    /// True when `related` is still to be looked up in the message map.
    wants_related: bool,
    /// The entries it settles.
    members: Vec<Pending>,
}

/// Runs one destination until its queue closes or the account stops.
pub(crate) async fn run_destination(
    group: String,
    mut inbox: mpsc::UnboundedReceiver<Queued>,
    shared: Arc<AccountEgress>,
    recorder: Recorder,
    depth: DepthGauge,
) {
    let mut queue: VecDeque<Pending> = VecDeque::new();
    let mut pacer = shared.policy.current().group_limit(&group).map(Pacer::new);
    // The last send was paused by the platform: what queued meanwhile may be merged.
    let mut throttled = false;
    let mut recent = RecentSent::default();
    // Sends handed to an in-order connector whose answers are still to come, oldest first.
    let mut in_flight: VecDeque<(Unit, Answer, u64)> = VecDeque::new();
    let fetches = shared.media.fetches();
    let take = |queued: Queued, sent_before: u64| {
        let outbound = Arc::new(queued.outbound);
        Pending {
            sent_before,
            prepared: !fetches || coalesce::pictures(&outbound).next().is_none(),
            outbound: outbound.clone(),
            original: outbound,
            ack: Some(queued.ack),
            work: Some(Arc::new(queued.work)),
            is_part: false,
            queued_at: queued.since,
        }
    };
    'queue: loop {
        if queue.is_empty() {
            tokio::select! {
                _ = shared.stop.cancelled() => return,
                queued = inbox.recv() => match queued {
                    Some(queued) => queue.push_back(take(queued, recent.count)),
                    None => {
                        settle_in_flight(&mut in_flight, &shared, &recorder, &mut recent, &depth).await;
                        return;
                    }
                },
            }
        }
        while let Ok(queued) = inbox.try_recv() {
            queue.push_back(take(queued, recent.count));
        }
        expire(&mut queue, &shared, &group, &depth).await;
        if queue.is_empty() {
            continue;
        }
        // A reload may have changed this destination's limit.
        let policy = shared.policy.current();
        let limit = policy.group_limit(&group);
        if pacer.as_ref().map(Pacer::limit) != limit {
            pacer = limit.map(Pacer::new);
        }
        let account_pacer = shared.policy.account_pacer();
        // The pictures of what the next send may carry are fetched and uploaded (within
        // `[media] wait`) before it takes a pacing token, so no token waits on either.
        if !prepare_front(&mut queue, &shared).await {
            return;
        }
        let waited = if pacer.is_none() && account_pacer.is_none() {
            // Unpaced: nothing to wait for (and no timer to set per message).
            false
        } else {
            // Wait for the pacers, but wake up to drop the oldest message (the front one, see
            // `expire`) when it expires.
            let expiry = queue
                .front()
                .map_or_else(Instant::now, |oldest| oldest.queued_at + policy.max_delay);
            let acquiring = acquire(pacer.as_mut(), account_pacer.as_deref());
            tokio::pin!(acquiring);
            let mut inbox_open = true;
            loop {
                tokio::select! {
                    _ = shared.stop.cancelled() => return,
                    // New limits: wait for them instead.
                    _ = shared.policy.changed() => continue 'queue,
                    _ = tokio::time::sleep_until(expiry + Duration::from_millis(1)) => continue 'queue,
                    waited = &mut acquiring => break waited,
                    // What arrives meanwhile has its pictures had before the token too, so
                    // that it can be merged into this send.
                    queued = inbox.recv(), if fetches && inbox_open => match queued {
                        Some(queued) => {
                            queue.push_back(take(queued, recent.count));
                            if !prepare_front(&mut queue, &shared).await {
                                return;
                            }
                        }
                        None => inbox_open = false,
                    },
                }
            }
        };
        // Messages are merged only when the destination had to wait (for its limiter, or a
        // platform pause): a destination keeping up sends each message as it was.
        let merge = waited || throttled;
        // What arrived while waiting is merged into this send.
        while let Ok(queued) = inbox.try_recv() {
            queue.push_back(take(queued, recent.count));
        }
        expire(&mut queue, &shared, &group, &depth).await;
        skip_already_sent(&mut queue, &shared, &recent, &depth).await;
        let Some(mut unit) = take_unit(&mut queue, &shared, merge) else {
            continue;
        };
        // On WeChat, DingTalk and WeCom each picture is a message of its own: it takes a
        // pacing token too, before the send.
        if sends_pictures_apart(shared.platform) && (pacer.is_some() || account_pacer.is_some()) {
            for _ in 0..coalesce::pictures(&unit.outbound).count() {
                tokio::select! {
                    _ = shared.stop.cancelled() => return,
                    _ = acquire(pacer.as_mut(), account_pacer.as_deref()) => {}
                }
            }
        }
        if unit.wants_related {
            unit.related = match message_map::related(
                &*shared.store,
                &unit.outbound,
                &shared.account,
            )
            .await
            {
                Ok(related) => related,
                Err(error) => {
                    warn!(message = "Message map not readable; sending without reply or recall sync.", account = %shared.account, %error);
                    RelatedMessages::default()
                }
            };
        }
        let oldest_ts_ms = unit
            .members
            .iter()
            .map(|m| m.original.ts_ms)
            .min()
            .unwrap_or(0);
        // A connector that takes and answers sends in order (`api`) gets a window of sends
        // in flight while the destination is unpaced; any other sends one at a time.
        let windowed = shared.platform == Platform::Api
            && limit.is_none()
            && account_pacer.is_none()
            && !throttled;
        if windowed {
            let Some(answer) = submit(&shared, &unit.outbound, &unit.related).await else {
                warn!(message = "Connector is not taking messages; left for redelivery.", account = %shared.account);
                return;
            };
            in_flight.push_back((unit, answer, oldest_ts_ms));
        } else {
            if !settle_in_flight(&mut in_flight, &shared, &recorder, &mut recent, &depth).await {
                return;
            }
            // A destination that cannot take the message (an account with no connection)
            // holds it at most until it is older than `max_delay`, like a queued one: then it
            // is dropped and counted, and what queued behind it gets its turn.
            let expires = unit
                .members
                .iter()
                .map(|m| m.queued_at)
                .min()
                .map_or_else(Instant::now, |at| at + policy.max_delay);
            let (settled, was_throttled) = tokio::select! {
                sent = send(&shared, &unit.outbound, &unit.related, oldest_ts_ms) => sent,
                _ = tokio::time::sleep_until(expires) => {
                    let count = unit.members.iter().filter(|m| m.ack.is_some()).count();
                    warn!(
                        message = "Message older than max_delay dropped: its destination did not take it.",
                        account = %shared.account,
                        group = %group,
                        link = %unit.outbound.link,
                        messages = count
                    );
                    count_drops("expired", count as u64);
                    (Settlement::Dropped, false)
                }
            };
            throttled = was_throttled;
            if !settle(&shared, &recorder, unit, settled, &mut recent, &depth).await {
                return;
            }
        }
        // Answers come back in order: settle those that are in, and wait for the oldest while
        // the window is full or nothing else is queued (a new message ends that wait).
        loop {
            let full = in_flight.len() >= SEND_WINDOW;
            let Some((_, answer, _)) = in_flight.front_mut() else {
                break;
            };
            let idle = queue.is_empty() && inbox.is_empty();
            let answered = if full {
                Some(answer.await.ok())
            } else if idle {
                tokio::select! {
                    _ = shared.stop.cancelled() => return,
                    answered = answer => Some(answered.ok()),
                    queued = inbox.recv() => match queued {
                        Some(queued) => {
                            queue.push_back(take(queued, recent.count));
                            None
                        }
                        // No more will come: settle what is in flight, then end.
                        None => {
                            settle_in_flight(&mut in_flight, &shared, &recorder, &mut recent, &depth).await;
                            return;
                        }
                    }
                }
            } else {
                match answer.try_recv() {
                    Err(oneshot::error::TryRecvError::Empty) => None,
                    Ok(answered) => Some(Some(answered)),
                    Err(oneshot::error::TryRecvError::Closed) => Some(None),
                }
            };
            let Some(answered) = answered else { break };
            let Some((unit, _, oldest_ts_ms)) = in_flight.pop_front() else {
                break;
            };
            let settled = settle_answer(
                &shared,
                &unit.outbound,
                &unit.related,
                oldest_ts_ms,
                answered,
            )
            .await;
            if !settle(&shared, &recorder, unit, settled, &mut recent, &depth).await {
                return;
            }
        }
    }
}

/// Has the pictures of the first [`PREPARED_AHEAD`] entries fetched and uploaded, those not
/// yet ([`prepare_ahead`]); false when the worker must stop.
async fn prepare_front(queue: &mut VecDeque<Pending>, shared: &AccountEgress) -> bool {
    let ahead: Vec<Arc<Outbound>> = queue
        .iter_mut()
        .take(PREPARED_AHEAD)
        .filter(|pending| !pending.prepared)
        .map(|pending| {
            pending.prepared = true;
            pending.outbound.clone()
        })
        .collect();
    if ahead.is_empty() {
        return true;
    }
    tokio::select! {
        _ = shared.stop.cancelled() => false,
        () = prepare_ahead(shared, &ahead) => true,
    }
}

/// Waits for every send in flight and settles it, in order; false when the worker must stop.
async fn settle_in_flight(
    in_flight: &mut VecDeque<(Unit, Answer, u64)>,
    shared: &AccountEgress,
    recorder: &Recorder,
    recent: &mut RecentSent,
    depth: &DepthGauge,
) -> bool {
    while let Some((unit, answer, oldest_ts_ms)) = in_flight.pop_front() {
        let answered = answer.await.ok();
        let settled = settle_answer(
            shared,
            &unit.outbound,
            &unit.related,
            oldest_ts_ms,
            answered,
        )
        .await;
        if !settle(shared, recorder, unit, settled, recent, depth).await {
            return false;
        }
    }
    true
}

/// Settles one send: a sent unit is recorded and acknowledged, a dropped one leaves the
/// outbox; false when it was interrupted (the worker stops, the outbox keeps it).
async fn settle(
    shared: &AccountEgress,
    recorder: &Recorder,
    unit: Unit,
    settled: Settlement,
    recent: &mut RecentSent,
    depth: &DepthGauge,
) -> bool {
    depth.sub(unit.members.iter().filter(|m| m.ack.is_some()).count() as u64);
    match settled {
        Settlement::Sent(receipt) => {
            for member in &unit.members {
                if member.ack.is_some() {
                    recent.insert(&keys::sent(&member.original, &shared.account));
                }
            }
            record_and_ack(shared, recorder, unit, receipt);
            true
        }
        Settlement::Dropped => {
            let settled: Vec<Pending> = unit
                .members
                .into_iter()
                .filter(|m| m.ack.is_some())
                .collect();
            leave_outbox(shared, settled).await;
            true
        }
        Settlement::Interrupted => false,
    }
}

/// Send-log keys this worker sent lately, oldest first, bounded: each as a 64-bit digest
/// seeded per worker, so the set costs 8 bytes a key plus the table's slot rather than two
/// copies of the key's text. Two keys sharing a digest (about one chance in 10^15 per message
/// for a set this size, and not something a sender can aim for without the seed) would drop
/// the second message as a copy of the first; the state store's short-lived keys take the
/// same chance.
#[derive(Default)]
struct RecentSent {
    /// Digests of the keys.
    digests: HashSet<u64, BuildHasherDefault<Prehashed>>,
    /// Their order, for eviction.
    order: VecDeque<u64>,
    /// How many were remembered in all (for [`Pending::sent_before`]).
    count: u64,
    /// Seeds the digests.
    seed: RandomState,
}

impl RecentSent {
    /// The digest of `key`.
    fn digest(&self, key: &str) -> u64 {
        self.seed.hash_one(key)
    }

    /// True when `key` was sent lately.
    fn holds(&self, key: &str) -> bool {
        self.digests.contains(&self.digest(key))
    }

    /// Remembers a key, forgetting the oldest beyond [`RECENT_SENT`] (first, so the set never
    /// holds more than that).
    fn insert(&mut self, key: &str) {
        self.count += 1;
        let digest = self.digest(key);
        if self.digests.contains(&digest) {
            return;
        }
        if self.order.len() >= RECENT_SENT {
            if let Some(old) = self.order.pop_front() {
                self.digests.remove(&old);
            }
        }
        self.digests.insert(digest);
        self.order.push_back(digest);
    }
}

/// Drops (and acknowledges) whole messages at the front of the queue that were already sent:
/// copies the broker redelivered after a reconnect while the original was still queued. The
/// send log is read only for a message queued more than [`RECHECK_AFTER`] sends ago.
async fn skip_already_sent(
    queue: &mut VecDeque<Pending>,
    shared: &AccountEgress,
    recent: &RecentSent,
    depth: &DepthGauge,
) {
    while let Some(front) = queue.front() {
        if front.is_part || front.ack.is_none() {
            return;
        }
        let key = keys::sent(&front.original, &shared.account);
        let sent = recent.holds(&key)
            || (recent.count.saturating_sub(front.sent_before) >= RECHECK_AFTER
                && shared
                    .store
                    .holds_any(std::slice::from_ref(&key))
                    .await
                    .unwrap_or(false));
        if !sent {
            return;
        }
        let Some(copy) = queue.pop_front() else {
            return;
        };
        debug!(message = "Already sent; dropping the redelivered copy.", account = %shared.account, id = %copy.original.id);
        count_drop("duplicate");
        depth.sub(1);
        if let Some(ack) = copy.ack {
            ack().await;
        }
    }
}

/// Records a sent unit (send log, message map, echo fingerprint) and then acknowledges its
/// messages, through the account's [`Recorder`] so the destination can go on sending
/// meanwhile (the records of many sends share one write). A crash before the commit means the
/// broker redelivers the messages: for a platform without idempotent sends that is the one
/// window in which a message can reach a group twice.
fn record_and_ack(shared: &AccountEgress, recorder: &Recorder, unit: Unit, receipt: SendReceipt) {
    if receipt.repeated {
        // A redelivered copy the destination recognized by its key: dropped there.
        let copies = unit.members.iter().filter(|m| m.ack.is_some()).count();
        debug!(message = "Already sent; the destination recognized the redelivered copy.", account = %shared.account, id = %unit.outbound.id);
        count_drops("duplicate", copies as u64);
    }
    // A message sent whole to a destination that keeps it under its own key (the `api`
    // feed's [`qunbridge_connectors::api::feed_key`]) needs no send-log key besides: that
    // key is its send log (one random B-tree write less per message). A merged or split
    // send is keyed by what was sent, not by each message: those keep theirs.
    let keyed_by_destination = receipt.idempotent
        && matches!(unit.members.as_slice(), [only] if Arc::ptr_eq(&only.original, &unit.outbound));
    let mut batch = WriteBatch::default();
    for member in &unit.members {
        if member.ack.is_some() {
            let sent = keys::sent(&member.original, &shared.account);
            if keyed_by_destination {
                batch.outbox_done.push((shared.account.clone(), sent));
            } else {
                batch
                    .outbox_done
                    .push((shared.account.clone(), sent.clone()));
                batch.keys.push((sent, SEND_LOG_TTL));
            }
        }
        if let Some(record) =
            message_map::record(&member.original, &shared.account, &receipt.message_ids)
        {
            batch.copies.push(record);
        }
    }
    if unit.outbound.kind == Kind::Message {
        if let Some(echo) = keys::echo(shared.platform, &unit.outbound.group, &unit.outbound.text) {
            batch.keys.push((echo, ECHO_TTL));
        }
        // A copy the destination already had was counted when it was first sent.
        if let Some(stats) = shared.stats.as_ref().filter(|_| !receipt.repeated) {
            for member in unit.members.iter().filter(|m| m.ack.is_some()) {
                crate::stats::count::merge_into(
                    &mut batch.stats,
                    stats.relayed_in(&shared.account, &unit.outbound.group, member.original.ts_ms),
                );
            }
        }
    }
    // A send the destination itself keeps under the message's key (the `api` feed) is
    // acknowledged at once: a copy sent again is recognized there, so the records only
    // trail it, within about a commit (docs/operations.md, durability windows).
    let mut record = Record {
        batch,
        acks: Vec::with_capacity(unit.members.len()),
        acks_first: receipt.idempotent,
        work: Vec::with_capacity(unit.members.len()),
    };
    // The members (and so the work they keep counted as in flight, which shutdown waits
    // for) are let go only once their records are written.
    for member in unit.members {
        record.acks.extend(member.ack);
        record.work.extend(member.work);
    }
    recorder.record(record);
}

/// Takes dropped messages (each the last entry of its message, carrying its ack) out of the
/// outbox, then acknowledges them.
async fn leave_outbox(shared: &AccountEgress, dropped: Vec<Pending>) {
    let batch = WriteBatch {
        outbox_done: dropped
            .iter()
            .map(|p| {
                (
                    shared.account.clone(),
                    keys::sent(&p.original, &shared.account),
                )
            })
            .collect(),
        ..Default::default()
    };
    if let Err(error) = shared.store.write(batch).await {
        warn!(message = "Outbox not updated; a dropped message may be tried again after a restart.", account = %shared.account, %error);
    }
    for pending in dropped {
        if let Some(ack) = pending.ack {
            ack().await;
        }
    }
}

/// Drops (and acknowledges) the messages that waited longer than `max_delay`.
async fn expire(
    queue: &mut VecDeque<Pending>,
    shared: &AccountEgress,
    group: &str,
    depth: &DepthGauge,
) {
    // Entries are queued in arrival order (parts of a split message take its place, with its
    // time), so the oldest are at the front: look no further than the first fresh one.
    let now = Instant::now();
    let max_delay = shared.policy.current().max_delay;
    while let Some(front) = queue.front() {
        let waited = now.saturating_duration_since(front.queued_at);
        if waited <= max_delay {
            return;
        }
        let Some(pending) = queue.pop_front() else {
            return;
        };
        warn!(
            message = "Message older than max_delay dropped.",
            account = %shared.account,
            group = %group,
            link = %pending.original.link,
            waited_ms = waited.as_millis() as u64
        );
        if pending.ack.is_some() {
            count_drop("expired");
            depth.sub(1);
            leave_outbox(shared, vec![pending]).await;
        }
    }
}

/// Takes the next send from the front of the queue: a recall alone; a message with what can
/// be merged behind it; or the first part of a message too long to send whole.
fn take_unit(queue: &mut VecDeque<Pending>, shared: &AccountEgress, merge: bool) -> Option<Unit> {
    let first = queue.pop_front()?;
    if first.outbound.kind == Kind::Recall {
        return Some(Unit {
            outbound: first.outbound.clone(),
            related: RelatedMessages::default(),
            wants_related: true,
            members: vec![first],
        });
    }
    let Some(limit) = shared.policy.current().length else {
        return Some(single(first));
    };
    let text = coalesce::text_without_pictures(&first.outbound);
    let length = measure(&text, limit.unit);
    if length > limit.max && !first.is_part {
        let split = split_message(&text, limit);
        if split.truncated {
            warn!(message = "Message longer than the destination allows; the rest was cut off.", account = %shared.account, group = %first.outbound.group, link = %first.outbound.link, parts = split.parts.len());
            count_drop("too_long");
        }
        let count = split.parts.len();
        let Pending {
            original,
            ack,
            work,
            queued_at,
            sent_before,
            ..
        } = first;
        // Queue the parts in the message's place; the last one carries the ack and the
        // pictures.
        let mut ack = ack;
        let pictures: Vec<Segment> = coalesce::pictures(&original).cloned().collect();
        for (index, part) in split.parts.into_iter().enumerate().rev() {
            let last = index + 1 == count;
            let outbound = if last && !pictures.is_empty() {
                coalesce::with_pictures(&original, part, pictures.clone())
            } else {
                text_only(&original, part)
            };
            queue.push_front(Pending {
                outbound: Arc::new(outbound),
                original: original.clone(),
                ack: if index + 1 == count { ack.take() } else { None },
                work: work.clone(),
                is_part: true,
                queued_at,
                // Cut from the front, whose pictures were had before its token.
                prepared: true,
                sent_before,
            });
        }
        let first = queue.pop_front()?;
        return Some(Unit {
            outbound: first.outbound.clone(),
            related: RelatedMessages::default(),
            wants_related: false,
            members: vec![first],
        });
    }
    if !merge {
        return Some(single(first));
    }
    // Merge what follows, while it fits and its pictures were had before the pacing token.
    let behind = coalesce::mergeable(
        length,
        queue
            .iter()
            .take_while(|p| p.prepared)
            .map(|p| &*p.outbound),
        limit,
    );
    if behind == 0 {
        return Some(single(first));
    }
    let mut members = vec![first];
    members.extend(queue.drain(..behind));
    let texts: Vec<_> = members
        .iter()
        .map(|m| coalesce::text_without_pictures(&m.outbound))
        .collect();
    let text = coalesce::merge(texts.iter().map(|text| text.as_ref()));
    let pictures: Vec<Segment> = members
        .iter()
        .flat_map(|m| coalesce::pictures(&m.outbound).cloned())
        .collect();
    coalesce::count(&shared.account, &members[0].outbound.group, members.len());
    let merged = if pictures.is_empty() {
        text_only(&members[0].original, text)
    } else {
        coalesce::with_pictures(&members[0].original, text, pictures)
    };
    Some(Unit {
        outbound: Arc::new(merged),
        related: RelatedMessages::default(),
        wants_related: false,
        members,
    })
}

/// True for platforms where each picture is a message of its own (so it is paced as one).
fn sends_pictures_apart(platform: Platform) -> bool {
    matches!(
        platform,
        Platform::Wechat | Platform::Dingtalk | Platform::Wecom
    )
}

/// A unit of one message; a whole message looks up what the message map knows for it.
fn single(pending: Pending) -> Unit {
    Unit {
        outbound: pending.outbound.clone(),
        related: RelatedMessages::default(),
        wants_related: !pending.is_part,
        members: vec![pending],
    }
}

/// A copy of `outbound` carrying only `text` (for parts and merged messages).
fn text_only(outbound: &Outbound, text: String) -> Outbound {
    Outbound {
        prefix: String::new(),
        segments: vec![Segment::Text { text: text.clone() }],
        text,
        ..outbound.clone()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use qunbridge_connectors::{Origin, Platform, Sender};
    use tokio::time::Instant;

    use super::*;
    use crate::activity::Activity;
    use qunbridge_connectors::context::now_ms;
    use qunbridge_connectors::EgressCommand;

    use crate::egress::Dispatcher;
    use crate::policy::{EgressPolicy, LengthLimit, Limit, Rate, Unit as LengthUnit};
    use crate::store::held::HeldEntry;
    use crate::store::stats::{Day, DayRow};
    use crate::store::{
        DaySenders, MemoryStore, OriginEntry, OutboxEntry, OutboxPut, RelayStore, StoreError,
    };
    use futures_util::future::BoxFuture;

    /// What the scripted platform received: (time since start, group, text).
    type Received = Arc<Mutex<Vec<(Duration, String, String)>>>;

    /// A platform that accepts every send at once and records it.
    fn platform(start: Instant) -> (mpsc::Sender<EgressCommand>, Received) {
        platform_answering(start, false)
    }

    /// A platform that accepts every send at once and records it; `idempotent` is what its
    /// receipts say (true: the send is a durable write under the message's key, as the `api`
    /// feed's).
    fn platform_answering(
        start: Instant,
        idempotent: bool,
    ) -> (mpsc::Sender<EgressCommand>, Received) {
        let (tx, mut rx) = mpsc::channel::<EgressCommand>(16);
        let received: Received = Arc::default();
        let record = received.clone();
        tokio::spawn(async move {
            let mut id = 0;
            while let Some(command) = rx.recv().await {
                let request = match command {
                    EgressCommand::Send(request) => request,
                    EgressCommand::Prepare(prepare) => {
                        let _ = prepare.done.send(());
                        continue;
                    }
                };
                id += 1;
                record.lock().expect("lock").push((
                    Instant::now() - start,
                    request.outbound.group.clone(),
                    request.outbound.text.clone(),
                ));
                let _ = request.reply.send(Ok(SendReceipt {
                    message_ids: vec![id.to_string()],
                    idempotent,
                    repeated: false,
                }));
            }
        });
        (tx, received)
    }

    fn policy(per_group: Option<Limit>, max_length: usize) -> EgressPolicy {
        EgressPolicy {
            per_group,
            groups: Default::default(),
            per_account: None,
            max_delay: Duration::from_secs(600),
            length: Some(LengthLimit {
                max: max_length,
                unit: LengthUnit::Chars,
                max_parts: 5,
            }),
        }
    }

    fn dispatcher(policy: EgressPolicy, connector: mpsc::Sender<EgressCommand>) -> Dispatcher {
        let store = Arc::new(MemoryStore::new(1000));
        Dispatcher::new(
            account(Platform::Qq, policy, connector, store),
            Activity::new(),
        )
    }

    /// An account `qq` on `platform`, sending through `connector`, recording in `store`.
    fn account(
        platform: Platform,
        policy: EgressPolicy,
        connector: mpsc::Sender<EgressCommand>,
        store: Arc<dyn RelayStore>,
    ) -> AccountEgress {
        AccountEgress {
            account: "qq".into(),
            platform,
            policy: Arc::new(crate::egress::LivePolicy::new(policy)),
            connector,
            store,
            stats: None,
            stop: tokio_util::sync::CancellationToken::new(),
            room: crate::egress::OutboxRoom::new(
                crate::egress::OUTBOX_LIMIT,
                crate::egress::OUTBOX_LIMIT_BYTES,
            ),
            media: Default::default(),
        }
    }

    fn message(group: &str, n: usize, text: &str) -> Outbound {
        Outbound {
            v: 1,
            id: format!("wx:w:{n}"),
            link: "fans".into(),
            group: group.into(),
            kind: Kind::Message,
            origin: Origin {
                platform: Platform::Wechat,
                account: "wx".into(),
                group: "w".into(),
                message_id: n.to_string(),
                group_name: None,
            },
            sender: Sender {
                id: "u".into(),
                name: "Ann".into(),
                is_bot: false,
            },
            ts_ms: now_ms(),
            prefix: "[微信] Ann: ".into(),
            text: format!("[微信] Ann: {text}"),
            segments: vec![Segment::text(format!("[微信] Ann: {text}"))],
        }
    }

    fn queued(outbound: Outbound, acked: &Arc<AtomicUsize>, activity: &Arc<Activity>) -> Queued {
        let acked = acked.clone();
        Queued {
            outbound,
            ack: Box::new(move || {
                acked.fetch_add(1, Ordering::SeqCst);
                Box::pin(async {})
            }),
            work: activity.start(),
            since: Instant::now(),
        }
    }

    /// The most sends to `group` in any window of `window`.
    fn most_in_any_window(received: &[(Duration, String, String)], window: Duration) -> usize {
        received
            .iter()
            .map(|(start, _, _)| {
                received
                    .iter()
                    .filter(|(t, _, _)| *t >= *start && *t < *start + window)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_30_to_a_5_per_minute_destination_is_coalesced_within_the_limit() {
        let start = Instant::now();
        let (connector, received) = platform(start);
        let minute = Duration::from_secs(60);
        let five_per_minute = Limit {
            rate: Rate {
                count: 5,
                per: minute,
            },
            burst: 5,
        };
        let mut dispatcher = dispatcher(policy(Some(five_per_minute), 4500), connector);
        let acked = Arc::new(AtomicUsize::new(0));
        let activity = Activity::new();
        for n in 0..30 {
            dispatcher.dispatch(queued(message("g", n, &format!("m{n}")), &acked, &activity));
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        tokio::time::sleep(Duration::from_secs(300)).await;
        let received = received.lock().expect("lock").clone();
        assert!(most_in_any_window(&received, minute) <= 5, "{received:?}");
        assert!(received.len() < 30, "coalesced: {} sends", received.len());
        // Every message's text is there, in order, each with its sender line.
        let all: String = received
            .iter()
            .map(|(_, _, text)| text.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        let expected: Vec<String> = (0..30).map(|n| format!("[微信] Ann: m{n}")).collect();
        assert_eq!(all, expected.join("\n"));
        assert_eq!(acked.load(Ordering::SeqCst), 30, "nothing dropped");
        dispatcher.finish().await;
    }

    /// A store whose writes wait until the test opens its gate, so what egress does before
    /// a write is durable can be seen.
    struct GatedStore {
        /// Where writes land once let through.
        inner: MemoryStore,
        /// Closed (no permits) until the test opens it.
        gate: tokio::sync::Semaphore,
        /// Writes that landed.
        written: AtomicUsize,
        /// Send-log lookups.
        reads: AtomicUsize,
    }

    impl GatedStore {
        /// A store whose gate is closed (`open` false) or open for good.
        fn new(open: bool) -> Arc<GatedStore> {
            Arc::new(GatedStore {
                inner: MemoryStore::new(1000),
                gate: tokio::sync::Semaphore::new(if open {
                    tokio::sync::Semaphore::MAX_PERMITS
                } else {
                    0
                }),
                written: AtomicUsize::new(0),
                reads: AtomicUsize::new(0),
            })
        }
    }

    impl RelayStore for GatedStore {
        fn holds_any<'a>(&'a self, keys: &'a [String]) -> BoxFuture<'a, Result<bool, StoreError>> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.inner.holds_any(keys)
        }
        fn write(&self, batch: WriteBatch) -> BoxFuture<'_, Result<(), StoreError>> {
            Box::pin(async move {
                let _open = self.gate.acquire().await;
                self.inner.write(batch).await?;
                self.written.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
        }
        fn origin<'a>(
            &'a self,
            origin_key: &'a str,
        ) -> BoxFuture<'a, Result<Option<OriginEntry>, StoreError>> {
            self.inner.origin(origin_key)
        }
        fn origin_of_copy<'a>(
            &'a self,
            copy_key: &'a str,
        ) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
            self.inner.origin_of_copy(copy_key)
        }
        fn outbox_put(&self, account: &str, entry: OutboxEntry) -> OutboxPut {
            self.inner.outbox_put(account, entry)
        }
        fn outbox<'a>(
            &'a self,
            account: &'a str,
        ) -> BoxFuture<'a, Result<Vec<OutboxEntry>, StoreError>> {
            self.inner.outbox(account)
        }
        fn held(&self) -> BoxFuture<'_, Result<Vec<HeldEntry>, StoreError>> {
            self.inner.held()
        }
        fn stats_rows(&self, from: Day, to: Day) -> BoxFuture<'_, Result<Vec<DayRow>, StoreError>> {
            self.inner.stats_rows(from, to)
        }
        fn stats_senders<'a>(
            &'a self,
            account: &'a str,
            group: &'a str,
            from: Day,
            to: Day,
        ) -> BoxFuture<'a, Result<DaySenders, StoreError>> {
            self.inner.stats_senders(account, group, from, to)
        }
    }

    /// A dispatcher for an unpaced account on `platform` over a [`GatedStore`] (open or
    /// closed), its platform answering with `idempotent` receipts; with what it received, the
    /// store, the in-flight counter and the acknowledgement count.
    fn gated(
        platform: Platform,
        idempotent: bool,
        open: bool,
    ) -> (
        Dispatcher,
        Received,
        Arc<GatedStore>,
        Arc<Activity>,
        Arc<AtomicUsize>,
    ) {
        let (connector, received) = platform_answering(Instant::now(), idempotent);
        let store = GatedStore::new(open);
        let activity = Activity::new();
        let dispatcher = Dispatcher::new(
            account(platform, policy(None, 4500), connector, store.clone()),
            activity.clone(),
        );
        (dispatcher, received, store, activity, Arc::default())
    }

    #[test]
    fn the_recent_set_holds_the_last_keys_sent_and_counts_every_send() {
        let mut recent = RecentSent::default();
        for n in 0..RECENT_SENT + 10 {
            recent.insert(&format!("s\u{1f}acct\u{1f}g\u{1f}{n}"));
        }
        // The same key sent again counts as a send and is remembered once.
        recent.insert(&format!("s\u{1f}acct\u{1f}g\u{1f}{}", RECENT_SENT + 9));
        assert_eq!(recent.count, RECENT_SENT as u64 + 11);
        assert_eq!(recent.order.len(), RECENT_SENT);
        assert_eq!(recent.digests.len(), RECENT_SENT);
        // The ten oldest were forgotten, the rest are held, an unsent key is not.
        let held = |n: usize| recent.holds(&format!("s\u{1f}acct\u{1f}g\u{1f}{n}"));
        assert!((0..10).all(|n| !held(n)));
        assert!((10..RECENT_SENT + 10).all(held));
        assert!(!held(RECENT_SENT + 10));
        assert!(!recent.holds("s\u{1f}acct\u{1f}other\u{1f}10"));
        // However many more are sent, its memory stays bounded: the table reclaims the slots
        // of forgotten keys in place (its capacity is what it holds plus the room left).
        let mut largest = 0;
        for n in 0..12 * RECENT_SENT {
            recent.insert(&format!("s\u{1f}acct\u{1f}h\u{1f}{n}"));
            largest = largest.max(recent.digests.capacity());
        }
        assert_eq!(recent.digests.len(), RECENT_SENT);
        assert!(largest < 4 * RECENT_SENT, "{largest}");
        assert!(recent.order.capacity() < 2 * RECENT_SENT);
    }

    #[tokio::test(start_paused = true)]
    async fn a_redelivered_copy_is_dropped_and_fresh_messages_need_no_send_log_read() {
        let (mut dispatcher, received, store, activity, acked) = gated(Platform::Qq, false, true);
        dispatcher.dispatch(queued(message("g", 1, "one"), &acked, &activity));
        // The broker's copy of message 1, redelivered while the original is still queued.
        dispatcher.dispatch(queued(message("g", 1, "one"), &acked, &activity));
        dispatcher.dispatch(queued(message("g", 2, "two"), &acked, &activity));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let texts: Vec<String> = received
            .lock()
            .expect("lock")
            .iter()
            .map(|(_, _, text)| text.clone())
            .collect();
        assert_eq!(
            texts,
            ["[微信] Ann: one", "[微信] Ann: two"],
            "the copy is not sent"
        );
        assert_eq!(
            acked.load(Ordering::SeqCst),
            3,
            "the copy is acknowledged too"
        );
        assert_eq!(
            store.reads.load(Ordering::SeqCst),
            0,
            "what this worker sent since each was queued is all it needs to know"
        );
        dispatcher.finish().await;
    }

    #[tokio::test(start_paused = true)]
    async fn only_an_idempotent_send_is_acknowledged_before_its_records_are_written() {
        for idempotent in [true, false] {
            let (mut dispatcher, received, store, activity, acked) =
                gated(Platform::Api, idempotent, false);
            dispatcher.dispatch(queued(message("g", 1, "hi"), &acked, &activity));
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert_eq!(received.lock().expect("lock").len(), 1, "sent");
            assert_eq!(store.written.load(Ordering::SeqCst), 0, "records held back");
            let expected = usize::from(idempotent);
            assert_eq!(
                acked.load(Ordering::SeqCst),
                expected,
                "acknowledged before the records only when idempotent ({idempotent})"
            );
            assert_eq!(
                activity.inflight(),
                1,
                "in flight until the records are written"
            );
            store.gate.add_permits(100);
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert_eq!(store.written.load(Ordering::SeqCst), 1, "records written");
            assert_eq!(acked.load(Ordering::SeqCst), 1, "acknowledged once");
            assert_eq!(activity.inflight(), 0, "no longer in flight");
            dispatcher.finish().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_destination_never_delays_another() {
        let start = Instant::now();
        let (connector, received) = platform(start);
        let slow = Limit {
            rate: Rate {
                count: 1,
                per: Duration::from_secs(60),
            },
            burst: 1,
        };
        let mut policy = policy(Some(slow), 4500);
        policy.groups.insert("fast".into(), None);
        let mut dispatcher = dispatcher(policy, connector);
        let acked = Arc::new(AtomicUsize::new(0));
        let activity = Activity::new();
        for n in 0..3 {
            dispatcher.dispatch(queued(message("slow", n, "x"), &acked, &activity));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        dispatcher.dispatch(queued(message("fast", 9, "quick"), &acked, &activity));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let received = received.lock().expect("lock").clone();
        let fast = received
            .iter()
            .find(|(_, group, _)| group == "fast")
            .expect("fast destination sent");
        assert!(fast.0 < Duration::from_millis(100), "{fast:?}");
        assert_eq!(
            received
                .iter()
                .filter(|(_, group, _)| group == "slow")
                .count(),
            1
        );
        dispatcher.finish().await;
    }

    #[tokio::test(start_paused = true)]
    async fn long_messages_are_split_into_marked_parts() {
        let start = Instant::now();
        let (connector, received) = platform(start);
        let mut dispatcher = dispatcher(policy(None, 40), connector);
        let acked = Arc::new(AtomicUsize::new(0));
        let activity = Activity::new();
        let long = "一二三四五六七八九十。".repeat(8);
        dispatcher.dispatch(queued(message("g", 1, &long), &acked, &activity));
        tokio::time::sleep(Duration::from_secs(5)).await;
        let received = received.lock().expect("lock").clone();
        assert!(received.len() >= 3, "{received:?}");
        for (_, _, text) in &received {
            assert!(text.chars().count() <= 40, "{text}");
        }
        assert!(
            received[0].2.ends_with(&format!("(1/{})", received.len())),
            "{received:?}"
        );
        assert_eq!(
            acked.load(Ordering::SeqCst),
            1,
            "acknowledged once, after the last part"
        );
        dispatcher.finish().await;
    }

    #[tokio::test(start_paused = true)]
    async fn only_messages_waiting_longer_than_max_delay_are_dropped() {
        let start = Instant::now();
        let (connector, received) = platform(start);
        let slow = Limit {
            rate: Rate {
                count: 1,
                per: Duration::from_secs(3600),
            },
            burst: 1,
        };
        let mut dispatcher = dispatcher(policy(Some(slow), 4500), connector);
        let acked = Arc::new(AtomicUsize::new(0));
        let activity = Activity::new();
        dispatcher.dispatch(queued(message("g", 1, "first"), &acked, &activity));
        tokio::time::sleep(Duration::from_millis(10)).await;
        dispatcher.dispatch(queued(message("g", 2, "waits too long"), &acked, &activity));
        tokio::time::sleep(Duration::from_secs(9 * 60)).await;
        assert_eq!(
            acked.load(Ordering::SeqCst),
            1,
            "still queued before max_delay"
        );
        tokio::time::sleep(Duration::from_secs(2 * 60)).await;
        assert_eq!(
            acked.load(Ordering::SeqCst),
            2,
            "dropped (and acknowledged) after max_delay"
        );
        let received = received.lock().expect("lock").clone();
        assert_eq!(received.len(), 1, "{received:?}");
        assert!(received[0].2.ends_with("first"));
        dispatcher.finish().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_destination_that_never_takes_a_message_drops_it_after_max_delay() {
        // A connector that holds every request without answering (an account whose platform
        // connection is down).
        let (connector, mut requests) = mpsc::channel::<EgressCommand>(16);
        let held = Arc::new(Mutex::new(Vec::new()));
        let keep = held.clone();
        tokio::spawn(async move {
            while let Some(request) = requests.recv().await {
                keep.lock().expect("lock").push(request);
            }
        });
        let mut dispatcher = dispatcher(policy(None, 4500), connector);
        let acked = Arc::new(AtomicUsize::new(0));
        let activity = Activity::new();
        dispatcher.dispatch(queued(message("g", 1, "first"), &acked, &activity));
        dispatcher.dispatch(queued(message("g", 2, "second"), &acked, &activity));
        tokio::time::sleep(Duration::from_secs(9 * 60)).await;
        assert_eq!(acked.load(Ordering::SeqCst), 0, "held before max_delay");
        tokio::time::sleep(Duration::from_secs(2 * 60)).await;
        assert_eq!(
            acked.load(Ordering::SeqCst),
            2,
            "both dropped (and settled) once older than max_delay"
        );
        dispatcher.finish().await;
    }
}
