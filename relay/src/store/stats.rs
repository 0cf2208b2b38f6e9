//! What the state store keeps for group health (issue 16): one row of counts per linked
//! group and day, and per group and day the set of pseudonymous digests of the members who
//! spoke. Raw user ids never reach these tables. The core and egress hand their counts to the
//! store as [`StatsDelta`]s inside a [`super::WriteBatch`]; rows are merged in the store, so
//! two processes sharing a Redis store add up.

use std::collections::BTreeSet;

use qunbridge_connectors::model::How;
use serde::{Deserialize, Serialize};

/// Joins or leaves of one day, by how they came about ([`How::ALL`] order).
pub type ByHow = [u64; How::ALL.len()];

/// The index of `how` in a [`ByHow`].
pub fn how_slot(how: How) -> usize {
    How::ALL
        .iter()
        .position(|h| *h == how)
        .unwrap_or(How::ALL.len() - 1)
}

/// Days are numbered from 1970-01-01 in the configured UTC offset (`stats.utc_offset`).
pub type Day = i64;

/// Most group-day rows of counts a store keeps (2,500 linked groups for 400 days).
pub const MAX_DAY_ROWS: u64 = 1_000_000;
/// Most sender digests the redb and in-memory stores keep (a digest is one member active in
/// one group on one day); the Redis store keeps at most [`MAX_DAY_ROWS`] digest sets instead,
/// as counting the members of every set would cost a call per set.
pub const MAX_SENDER_DIGESTS: u64 = 2_000_000;

/// One sweep of the group-health tables: what is past its age goes, then, while a table
/// holds more than its cap, its oldest days go first (the key of every row and digest starts
/// with its day).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsSweep {
    /// Day rows before this day go (`stats.retention`).
    pub rows_before: Day,
    /// Sender digests before this day go (35 days).
    pub senders_before: Day,
    /// Most day rows kept (and digest sets, in Redis).
    pub max_rows: u64,
    /// Most sender digests kept (redb and memory).
    pub max_digests: u64,
}

impl StatsSweep {
    /// A sweep by age with the default caps.
    pub fn by_age(rows_before: Day, senders_before: Day) -> StatsSweep {
        StatsSweep {
            rows_before,
            senders_before,
            max_rows: MAX_DAY_ROWS,
            max_digests: MAX_SENDER_DIGESTS,
        }
    }
}

/// What happened in one group on one day, as counted so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayCounts {
    /// Messages said in the group (not by bots).
    #[serde(default)]
    pub messages: u64,
    /// Messages relayed into the group from its linked groups.
    #[serde(default)]
    pub relayed_in: u64,
    /// Members who joined, by how.
    #[serde(default)]
    pub joins: ByHow,
    /// Members who left, by how.
    #[serde(default)]
    pub leaves: ByHow,
    /// The last member count the platform told that day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member_count: Option<u64>,
    /// When `member_count` was told (ms since the epoch): a later count wins a merge.
    #[serde(default)]
    pub member_count_ms: u64,
}

impl DayCounts {
    /// Adds `other` into these counts; the member count told last wins.
    pub fn merge(&mut self, other: &DayCounts) {
        self.messages += other.messages;
        self.relayed_in += other.relayed_in;
        for (mine, theirs) in self.joins.iter_mut().zip(other.joins) {
            *mine += theirs;
        }
        for (mine, theirs) in self.leaves.iter_mut().zip(other.leaves) {
            *mine += theirs;
        }
        if other.member_count.is_some() && other.member_count_ms >= self.member_count_ms {
            self.member_count = other.member_count;
            self.member_count_ms = other.member_count_ms;
        }
    }

    /// True when nothing was counted.
    pub fn is_empty(&self) -> bool {
        *self == DayCounts::default()
    }
}

/// Counts to add for one group and day, and the digests of members seen speaking.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsDelta {
    /// The account that sees the group.
    pub account: String,
    /// The group's platform id.
    pub group: String,
    /// The day the counts belong to (the platform's timestamp, in the offset).
    pub day: Day,
    /// What to add.
    pub counts: DayCounts,
    /// Digests of the members who spoke (a set: adding one twice counts once).
    pub senders: BTreeSet<String>,
}

/// One stored row: a group's counts on a day.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DayRow {
    /// The account that sees the group.
    pub account: String,
    /// The group's platform id.
    pub group: String,
    /// The day.
    pub day: Day,
    /// Its counts.
    pub counts: DayCounts,
}

/// The key of a group's day row in stores keyed by text: `day|account|group` with the day
/// zero-padded, so rows sort by day and a day's rows are one prefix.
pub fn row_key(day: Day, account: &str, group: &str) -> String {
    // Written piece by piece: a row key is made for every message counted.
    let mut key = String::with_capacity(10 + account.len() + group.len());
    push_day(&mut key, day);
    key.push('|');
    key.push_str(account);
    key.push('|');
    key.push_str(group);
    key
}

/// A day as sortable text (days before 1970 are not stored).
pub fn day_text(day: Day) -> String {
    let mut text = String::with_capacity(8);
    push_day(&mut text, day);
    text
}

/// Appends a day as [`day_text`] writes it: at least 8 digits, zero-padded.
fn push_day(out: &mut String, day: Day) {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(day.max(0));
    for _ in digits.len()..8 {
        out.push('0');
    }
    out.push_str(digits);
}

/// Reads a [`row_key`] back.
pub fn parse_row_key(key: &str) -> Option<(Day, &str, &str)> {
    let (day, rest) = key.split_once('|')?;
    let (account, group) = rest.split_once('|')?;
    Some((day.parse().ok()?, account, group))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_keys_are_written_as_the_earlier_format_wrote_them() {
        for day in [-3, 0, 7, 20_427, 123_456_789] {
            assert_eq!(
                row_key(day, "qq-main", "735"),
                format!("{:08}|qq-main|735", day.max(0))
            );
        }
    }

    #[test]
    fn counts_add_up_and_the_latest_member_count_wins() {
        let mut day = DayCounts {
            messages: 2,
            member_count: Some(10),
            member_count_ms: 5,
            ..DayCounts::default()
        };
        let mut other = DayCounts {
            messages: 3,
            relayed_in: 1,
            member_count: Some(9),
            member_count_ms: 4,
            ..DayCounts::default()
        };
        other.joins[how_slot(How::Invite)] = 2;
        day.merge(&other);
        assert_eq!(day.messages, 5);
        assert_eq!(day.relayed_in, 1);
        assert_eq!(day.joins[how_slot(How::Invite)], 2);
        assert_eq!(day.member_count, Some(10), "an older count does not win");
        other.member_count_ms = 6;
        day.merge(&other);
        assert_eq!(day.member_count, Some(9));
    }

    #[test]
    fn row_keys_sort_by_day_and_read_back() {
        let key = row_key(20_000, "qq-main", "735|021");
        assert_eq!(parse_row_key(&key), Some((20_000, "qq-main", "735|021")));
        assert!(row_key(9, "a", "g") < row_key(10, "a", "g"));
    }
}
