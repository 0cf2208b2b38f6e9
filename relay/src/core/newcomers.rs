//! Who is new in a group, for moderation's suspect delay (issue 17, `[moderation.wave]
//! suspect_delay`): a member is new when group health has not seen them post in the group for
//! 28 days, or when they joined within the last 10 minutes.
//!
//! Group health keeps, per group and day, the digests of the members who posted (never their
//! ids). The first time a group is asked about, its last 28 days of digests are read from
//! the state store; from then on every judged message of the group notes its sender here, and
//! every join its member, so the answer needs no store read. Memory stays bounded: past
//! [`MOST_REMEMBERED`] members in all, everything is forgotten and read again group by group.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use qunbridge_connectors::Envelope;
use tracing::warn;

use crate::stats::StatsCounter;
use crate::store::stats::Day;
use crate::store::RelayStore;

/// Days a member's last post counts for: not seen in this many days, they are new again.
pub const SEEN_DAYS: Day = 28;
/// How long after joining a member is new whatever they said before.
pub const JOINED_NEW_FOR: Duration = Duration::from_secs(10 * 60);
/// Members remembered in all groups at most.
const MOST_REMEMBERED: usize = 500_000;

/// What is known about one group's members.
#[derive(Default)]
struct GroupMembers {
    /// True once the group's digests of the last [`SEEN_DAYS`] were read from the store.
    loaded: bool,
    /// The day each member (by hashed digest) last posted.
    last_posted: HashMap<u64, Day>,
    /// When members (by hashed digest) joined, for [`JOINED_NEW_FOR`].
    joined: HashMap<u64, Instant>,
}

/// Everything behind the lock.
#[derive(Default)]
struct Groups {
    /// By the (account, group) group health counts the group under.
    by_group: HashMap<(String, String), GroupMembers>,
    /// Members remembered in all groups (posts and joins).
    remembered: usize,
}

/// Who is new in which group.
pub struct Newcomers {
    /// Where group health keeps the member digests of each day.
    store: Arc<dyn RelayStore>,
    /// Makes digests and knows the groups' canonical names and today.
    stats: Arc<StatsCounter>,
    /// Hashes digests to map keys (seeded per process).
    hasher: RandomState,
    /// The groups asked about so far.
    groups: Mutex<Groups>,
}

impl Newcomers {
    /// Newcomer tracking over group health's digests in `store`.
    pub fn new(store: Arc<dyn RelayStore>, stats: Arc<StatsCounter>) -> Newcomers {
        Newcomers {
            store,
            stats,
            hasher: RandomState::new(),
            groups: Mutex::new(Groups::default()),
        }
    }

    /// True when the sender of a member message is new in its group (not seen posting there
    /// for [`SEEN_DAYS`] days, or joined within [`JOINED_NEW_FOR`]); the message is then
    /// noted, so the sender's next message finds them seen (but still new while their join is
    /// recent). A store that cannot be read counts the sender as seen: a newcomer's message
    /// then goes through at once rather than every member's waiting.
    pub async fn is_new(&self, envelope: &Envelope) -> bool {
        let (account, group, digest) = self.stats.member_of(envelope);
        let member = self.hasher.hash_one(&digest);
        let today = self.stats.today();
        let key = (account, group);
        let readable = self.lock().by_group.get(&key).is_some_and(|g| g.loaded)
            || self.load(&key, today).await;
        let mut groups = self.lock();
        let known = groups.by_group.entry(key).or_default();
        let joined_lately = known
            .joined
            .get(&member)
            .is_some_and(|at| at.elapsed() < JOINED_NEW_FOR);
        let seen = known
            .last_posted
            .insert(member, today)
            .is_some_and(|day| day > today - SEEN_DAYS);
        groups.remembered += usize::from(!seen);
        let new = joined_lately || (readable && !seen);
        if groups.remembered > MOST_REMEMBERED {
            forget_all(&mut groups);
        }
        new
    }

    /// Notes that a member joined a group (a `kind = member` join of a linked group).
    pub fn joined(&self, envelope: &Envelope) {
        let (account, group, digest) = self.stats.member_of(envelope);
        let member = self.hasher.hash_one(&digest);
        let mut groups = self.lock();
        let known = groups.by_group.entry((account, group)).or_default();
        known.joined.retain(|_, at| at.elapsed() < JOINED_NEW_FOR);
        known.joined.insert(member, Instant::now());
        groups.remembered += 1;
        if groups.remembered > MOST_REMEMBERED {
            forget_all(&mut groups);
        }
    }

    /// Reads a group's digests of the last [`SEEN_DAYS`] from the store into memory (what
    /// memory noted meanwhile is kept); false when the store cannot be read (asked again
    /// next time).
    async fn load(&self, key: &(String, String), today: Day) -> bool {
        let (account, group) = key;
        let days = match self
            .store
            .stats_senders(account, group, today - SEEN_DAYS + 1, today)
            .await
        {
            Ok(days) => days,
            Err(error) => {
                warn!(message = "Cannot read who posted in a group lately; its members count as seen for now.", %error);
                return false;
            }
        };
        let mut groups = self.lock();
        let known = groups.by_group.entry(key.clone()).or_default();
        let mut added = 0;
        for (day, digests) in days {
            for digest in digests {
                let member = self.hasher.hash_one(&digest);
                let last = known.last_posted.entry(member).or_insert_with(|| {
                    added += 1;
                    day
                });
                *last = (*last).max(day);
            }
        }
        known.loaded = true;
        groups.remembered += added;
        true
    }

    /// The groups, whatever a panicking holder left.
    fn lock(&self) -> std::sync::MutexGuard<'_, Groups> {
        self.groups.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Forgets every group (each is read from the store again when next asked about).
fn forget_all(groups: &mut Groups) {
    groups.by_group.clear();
    groups.remembered = 0;
}
