//! Counting for group health, in the core after dedup (so a message reported by two bot
//! accounts counts once) and in egress for what was relayed into a group. Counts travel to
//! the store inside the write that already follows the message (the core's dedup keys, the
//! egress send log), so they cost no commit of their own.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use qunbridge_connectors::model::Change;
use qunbridge_connectors::{Envelope, Kind};
use tracing::error;

use super::aliases::Aliases;
use super::day::day_of;
use super::digest::Digester;
use crate::config::{StatsConfig, StatsMetrics};
use crate::store::stats::{how_slot, Day, DayCounts, StatsDelta};

/// Digests remembered as already written, at most (then forgotten: writing one again is
/// harmless, a set).
const SEEN_MAX: usize = 200_000;

/// Counts messages and membership changes of linked groups.
pub struct StatsCounter {
    /// The offset days are counted in, fixed for the process's life.
    offset_secs: i64,
    /// Which metric series are exported.
    metrics: StatsMetrics,
    /// Names for metric labels; swapped on reload.
    aliases: Mutex<Arc<Aliases>>,
    /// Makes member digests.
    digester: Digester,
    /// Digests already handed to the store: repeated senders cost no store write.
    seen: Mutex<Seen>,
}

/// The members (account, group, platform, user id) whose digests were already handed to the
/// store, by day, kept as 64-bit hashes: a collision only skips writing a digest the store
/// most likely holds already.
#[derive(Default)]
struct Seen {
    /// Hashes by day (today and yesterday are kept; late events of older days write again).
    by_day: HashMap<Day, HashSet<u64>>,
    /// Hashes held, over all days.
    total: usize,
    /// Hashes the members (keys fixed for the process's life).
    hasher: std::collections::hash_map::RandomState,
}

impl StatsCounter {
    /// A counter for `stats` over the groups of `aliases`.
    pub fn new(stats: &StatsConfig, aliases: Aliases, digester: Digester) -> StatsCounter {
        StatsCounter {
            offset_secs: stats.utc_offset_secs,
            metrics: stats.metrics,
            aliases: Mutex::new(Arc::new(aliases)),
            digester,
            seen: Mutex::default(),
        }
    }

    /// Takes the aliases of a reloaded config.
    pub fn set_aliases(&self, aliases: Aliases) {
        *self.aliases.lock().unwrap_or_else(PoisonError::into_inner) = Arc::new(aliases);
    }

    /// The current aliases.
    pub fn aliases(&self) -> Arc<Aliases> {
        self.aliases
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The counts of a fresh envelope of a linked group: a message from a member (not a
    /// bot), or a membership change. `None` for anything else.
    pub fn inbound(&self, envelope: &Envelope) -> Option<StatsDelta> {
        match envelope.kind {
            Kind::Message if !envelope.sender.is_bot => Some(self.message(envelope)),
            Kind::Member => self.member(envelope),
            _ => None,
        }
    }

    /// Who a member of a group is, as group health counts them: the (account, group) the
    /// group's counts are kept under and the member's digest (moderation's newcomer test
    /// looks these up among the digests of the last days).
    pub fn member_of(&self, envelope: &Envelope) -> (String, String, String) {
        let origin = &envelope.origin;
        let (account, group) = self.canonical(&origin.account, &origin.group);
        let digest = self
            .digester
            .digest(origin.platform.as_str(), &envelope.sender.id);
        (account, group, digest)
    }

    /// Today, in the offset days are counted in.
    pub fn today(&self) -> Day {
        super::day::today(self.offset_secs)
    }

    /// The counts of a message relayed into `account`'s `group` at `ts_ms`.
    pub fn relayed_in(&self, account: &str, group: &str, ts_ms: u64) -> StatsDelta {
        let (account, group) = self.canonical(account, group);
        StatsDelta {
            account,
            group,
            day: day_of(ts_ms, self.offset_secs),
            counts: DayCounts {
                relayed_in: 1,
                ..DayCounts::default()
            },
            senders: BTreeSet::new(),
        }
    }

    /// A member's message: one message, and the sender's digest unless already written.
    fn message(&self, envelope: &Envelope) -> StatsDelta {
        let origin = &envelope.origin;
        let day = day_of(envelope.ts_ms, self.offset_secs);
        let (account, group) = self.canonical(&origin.account, &origin.group);
        let platform = origin.platform.as_str();
        let mut senders = BTreeSet::new();
        // The digest (an HMAC, the larger part of counting a message) is made only for a
        // sender not yet seen in the group that day.
        if self.first_sight(&account, &group, day, platform, &envelope.sender.id) {
            senders.insert(self.digester.digest(platform, &envelope.sender.id));
        }
        if let Some(alias) = self.label(&origin.account, &origin.group) {
            metrics::counter!(crate::metrics::GROUP_MESSAGES, "group" => alias).increment(1);
        }
        StatsDelta {
            account,
            group,
            day,
            counts: DayCounts {
                messages: 1,
                ..DayCounts::default()
            },
            senders,
        }
    }

    /// A join, a leave or a member count. A change that removed the bot account from the
    /// group is logged as an error and counted: every relay into the group fails from now on.
    fn member(&self, envelope: &Envelope) -> Option<StatsDelta> {
        let event = envelope.member.as_ref()?;
        let origin = &envelope.origin;
        let mut counts = DayCounts::default();
        if let Some(count) = event.member_count {
            counts.member_count = Some(count);
            counts.member_count_ms = envelope.ts_ms;
        }
        let label = self.label(&origin.account, &origin.group);
        match event.change {
            Change::Join => {
                counts.joins[how_slot(event.how)] = 1;
                if let Some(alias) = label {
                    metrics::counter!(crate::metrics::GROUP_JOINED, "group" => alias, "how" => event.how.as_str())
                        .increment(1);
                }
            }
            Change::Leave => {
                counts.leaves[how_slot(event.how)] = 1;
                if let Some(alias) = label {
                    metrics::counter!(crate::metrics::GROUP_LEFT, "group" => alias, "how" => event.how.as_str())
                        .increment(1);
                }
            }
            Change::Count => {}
        }
        if event.change == Change::Leave && event.how.removes_bot() {
            let alias = self
                .aliases()
                .get(&origin.account, &origin.group)
                .map(|g| g.alias.clone())
                .unwrap_or_default();
            error!(
                message = "The bot account is no longer in a linked group; relaying into it will fail.",
                account = %origin.account,
                group = %origin.group,
                alias = %alias,
                how = event.how.as_str()
            );
            metrics::counter!(crate::metrics::GROUP_BOT_REMOVED, "account" => origin.account.clone())
                .increment(1);
        }
        let (account, group) = self.canonical(&origin.account, &origin.group);
        Some(StatsDelta {
            account,
            group,
            day: day_of(envelope.ts_ms, self.offset_secs),
            counts,
            senders: BTreeSet::new(),
        })
    }

    /// The (account, group) a group's counts are kept under: the first bot account of the
    /// group in the links.
    fn canonical(&self, account: &str, group: &str) -> (String, String) {
        match self.aliases().get(account, group) {
            Some(linked) => (linked.account.clone(), linked.group.clone()),
            None => (account.to_owned(), group.to_owned()),
        }
    }

    /// The `group` label of a linked group's series, or `None` when none are exported.
    fn label(&self, account: &str, group: &str) -> Option<String> {
        let aliases = self.aliases();
        let linked = aliases.get(account, group)?;
        match self.metrics {
            StatsMetrics::PerGroup => Some(linked.alias.clone()),
            StatsMetrics::PerLink => Some(linked.link.clone()),
            StatsMetrics::Off => None,
        }
    }

    /// True the first time the member (`platform`, `user`) is seen for the group and day (as
    /// far as memory goes). The user id is held only inside a hash keyed for this process.
    fn first_sight(
        &self,
        account: &str,
        group: &str,
        day: Day,
        platform: &str,
        user: &str,
    ) -> bool {
        use std::hash::BuildHasher;
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let hash = seen.hasher.hash_one((account, group, platform, user));
        if !seen.by_day.contains_key(&day) {
            // A new day: forget the days before yesterday.
            seen.by_day.retain(|kept, _| *kept >= day - 1);
            seen.total = seen.by_day.values().map(HashSet::len).sum();
        }
        if seen.total >= SEEN_MAX {
            seen.by_day.clear();
            seen.total = 0;
        }
        let fresh = seen.by_day.entry(day).or_default().insert(hash);
        if fresh {
            seen.total += 1;
        }
        fresh
    }
}

/// Adds `delta` into `batch`, merging it with a delta of the same group and day.
pub fn merge_into(batch: &mut Vec<StatsDelta>, delta: StatsDelta) {
    match batch
        .iter_mut()
        .find(|d| d.day == delta.day && d.account == delta.account && d.group == delta.group)
    {
        Some(existing) => {
            existing.counts.merge(&delta.counts);
            existing.senders.extend(delta.senders);
        }
        None => batch.push(delta),
    }
}
