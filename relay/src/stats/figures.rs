//! The figures operators watch, derived from the stored day rows and sender digests of one
//! group: active members over 1, 7 and 28 days, member tiers, the 7-day join and churn rates
//! and `decline_weeks`. Pure functions of their inputs, so every rule is unit-tested here.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::{Deserialize, Serialize};

use super::day::week_start;
use crate::store::stats::{Day, DayCounts};

/// Complete weeks looked back at for the decline, at most.
pub const DECLINE_WEEKS_MAX: i64 = 26;

/// Members by how often they spoke.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tiers {
    /// Spoke on at least `core_days` of the last 7 days.
    pub core: u64,
    /// Spoke on fewer days of the last 7.
    pub regular: u64,
    /// Spoke in the last 28 days but not the last 7.
    pub lurking: u64,
    /// The member count minus those who spoke in 28 days; `None` without a member count.
    pub silent: Option<u64>,
}

/// One group's figures as of `today`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Figures {
    /// Distinct members who spoke today.
    pub active_1d: u64,
    /// … over the last 7 days (today included).
    pub active_7d: u64,
    /// … over the last 28 days.
    pub active_28d: u64,
    /// The last member count the platform told.
    pub member_count: Option<u64>,
    /// Members by tier.
    pub tiers: Tiers,
    /// Joins of the last 7 days over the member count 7 days ago.
    pub join_rate_7d: Option<f64>,
    /// Leaves of the last 7 days over the member count 7 days ago.
    pub churn_rate_7d: Option<f64>,
    /// Complete weeks in a row, most recent first, each with fewer messages than the week
    /// before (which had at least the configured minimum).
    pub decline_weeks: u64,
}

/// Thresholds of the derivation.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// Days of the last 7 a core member spoke on.
    pub core_days: u32,
    /// Messages the earlier week of a pair needs.
    pub decline_min_messages: u64,
}

/// Derives a group's figures from its day rows (`rows`, any days) and its sender digests per
/// day (`senders`, at least the last 28 days).
pub fn figures(
    today: Day,
    rows: &BTreeMap<Day, DayCounts>,
    senders: &[(Day, Vec<String>)],
    thresholds: Thresholds,
) -> Figures {
    let active_since = |first: Day| -> HashSet<&str> {
        senders
            .iter()
            .filter(|(day, _)| *day >= first && *day <= today)
            .flat_map(|(_, digests)| digests.iter().map(String::as_str))
            .collect()
    };
    let active_1d = active_since(today);
    let active_7d = active_since(today - 6);
    let active_28d = active_since(today - 27);
    let mut days_active: HashMap<&str, u32> = HashMap::new();
    for (day, digests) in senders {
        if *day >= today - 6 && *day <= today {
            for digest in digests {
                *days_active.entry(digest.as_str()).or_default() += 1;
            }
        }
    }
    let core = days_active
        .values()
        .filter(|days| **days >= thresholds.core_days)
        .count() as u64;
    let member_count = count_on_or_before(rows, today);
    let tiers = Tiers {
        core,
        regular: active_7d.len() as u64 - core,
        lurking: (active_28d.len() - active_7d.len()) as u64,
        silent: member_count.map(|count| count.saturating_sub(active_28d.len() as u64)),
    };
    let week: Vec<&DayCounts> = rows.range(today - 6..=today).map(|(_, c)| c).collect();
    let joins: u64 = week.iter().map(|c| c.joins.iter().sum::<u64>()).sum();
    let leaves: u64 = week.iter().map(|c| c.leaves.iter().sum::<u64>()).sum();
    let base = count_on_or_before(rows, today - 7).filter(|count| *count > 0);
    Figures {
        active_1d: active_1d.len() as u64,
        active_7d: active_7d.len() as u64,
        active_28d: active_28d.len() as u64,
        member_count,
        tiers,
        join_rate_7d: base.map(|count| joins as f64 / count as f64),
        churn_rate_7d: base.map(|count| leaves as f64 / count as f64),
        decline_weeks: decline_weeks(today, rows, thresholds.decline_min_messages),
    }
}

/// The last member count told on or before `day`.
pub fn count_on_or_before(rows: &BTreeMap<Day, DayCounts>, day: Day) -> Option<u64> {
    rows.range(..=day)
        .rev()
        .find_map(|(_, counts)| counts.member_count)
}

/// Consecutive most recent complete weeks (Monday to Sunday) each with fewer messages than
/// the week before, counting only pairs whose earlier week had at least `min_messages`.
pub fn decline_weeks(today: Day, rows: &BTreeMap<Day, DayCounts>, min_messages: u64) -> u64 {
    let this_week = week_start(today);
    let week_total = |start: Day| -> u64 {
        rows.range(start..start + 7)
            .map(|(_, counts)| counts.messages)
            .sum()
    };
    let mut weeks = 0;
    for back in 1..=DECLINE_WEEKS_MAX {
        let week = this_week - 7 * back;
        let (later, earlier) = (week_total(week), week_total(week - 7));
        if earlier >= min_messages && later < earlier {
            weeks += 1;
        } else {
            break;
        }
    }
    weeks
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::day::parse_date;

    const THRESHOLDS: Thresholds = Thresholds {
        core_days: 5,
        decline_min_messages: 20,
    };

    fn rows_with_weekly(today: Day, weekly: &[u64]) -> BTreeMap<Day, DayCounts> {
        // `weekly` are the complete weeks before this one, oldest first; each week's
        // messages fall on its Wednesday.
        let this_week = week_start(today);
        let mut rows = BTreeMap::new();
        for (index, messages) in weekly.iter().enumerate() {
            let back = (weekly.len() - index) as i64;
            rows.insert(
                this_week - 7 * back + 2,
                DayCounts {
                    messages: *messages,
                    ..DayCounts::default()
                },
            );
        }
        rows
    }

    #[test]
    fn decline_counts_the_falling_weeks_before_this_one() {
        let today = parse_date("2026-12-03").expect("a date");
        let decline = |weekly: &[u64]| decline_weeks(today, &rows_with_weekly(today, weekly), 20);
        assert_eq!(decline(&[100, 80, 60, 40]), 3);
        assert_eq!(decline(&[100, 80, 90, 40]), 1);
        assert_eq!(decline(&[10, 8, 6, 4]), 0, "weeks under the minimum");
        assert_eq!(decline(&[40, 60, 80, 100]), 0);
        // Messages of this (incomplete) week do not count.
        let mut rows = rows_with_weekly(today, &[100, 80, 60, 40]);
        rows.insert(
            today,
            DayCounts {
                messages: 1000,
                ..DayCounts::default()
            },
        );
        assert_eq!(decline_weeks(today, &rows, 20), 3);
    }

    #[test]
    fn tiers_active_members_and_rates() {
        let today = parse_date("2026-12-03").expect("a date");
        // "core" spoke on 5 of the last 7 days, "regular" on 2, "lurker" 20 days ago.
        let mut senders: Vec<(Day, Vec<String>)> = Vec::new();
        for back in 0..7 {
            let mut digests = Vec::new();
            if back < 5 {
                digests.push("core".to_owned());
            }
            if back == 1 || back == 3 {
                digests.push("regular".to_owned());
            }
            senders.push((today - back, digests));
        }
        senders.push((today - 20, vec!["lurker".to_owned()]));
        let mut rows = BTreeMap::new();
        rows.insert(
            today - 10,
            DayCounts {
                member_count: Some(50),
                ..DayCounts::default()
            },
        );
        let mut recent = DayCounts {
            member_count: Some(48),
            ..DayCounts::default()
        };
        recent.joins[0] = 3;
        recent.leaves[3] = 5;
        rows.insert(today - 2, recent);
        let figures = figures(today, &rows, &senders, THRESHOLDS);
        assert_eq!(figures.active_1d, 1);
        assert_eq!(figures.active_7d, 2);
        assert_eq!(figures.active_28d, 3);
        assert_eq!(figures.member_count, Some(48));
        assert_eq!(
            figures.tiers,
            Tiers {
                core: 1,
                regular: 1,
                lurking: 1,
                silent: Some(45)
            }
        );
        assert_eq!(figures.join_rate_7d, Some(3.0 / 50.0));
        assert_eq!(figures.churn_rate_7d, Some(5.0 / 50.0));
    }

    #[test]
    fn without_a_member_count_there_is_no_silent_tier_and_no_rate() {
        let today = 20_000;
        let figures = figures(today, &BTreeMap::new(), &[], THRESHOLDS);
        assert_eq!(figures.tiers.silent, None);
        assert_eq!(figures.join_rate_7d, None);
        assert_eq!(figures.decline_weeks, 0);
    }
}
