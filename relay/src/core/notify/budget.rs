//! How many admin notification lines may go out (issue 17, `notify_per_minute`): at most that
//! many in any rolling minute. Events beyond it are not told one by one but counted, and one
//! summary line tells their number a minute after the first of them, so the admins' group
//! gets at most `notify_per_minute` lines plus one summary a minute however much happens.
//! Driven by the caller's clock, so it is tested without waiting.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// The rolling window the limit counts lines in.
pub const MINUTE: Duration = Duration::from_secs(60);

/// The lines sent in the last minute and the events not told since the last summary.
#[derive(Debug, Default)]
pub struct Budget {
    /// When each line of the last minute went out, oldest first (at most the limit's count:
    /// older ones are forgotten as they leave the window).
    sent: VecDeque<Instant>,
    /// Events not told one by one since the last summary.
    untold: u64,
    /// When the summary of `untold` is due: a minute after the first of them.
    summary_at: Option<Instant>,
}

impl Budget {
    /// True when a line may go out at `now` under `per_minute` (and it is counted as sent);
    /// false when the minute's lines are used up: the event is counted for the summary.
    pub fn admit(&mut self, per_minute: u32, now: Instant) -> bool {
        while self
            .sent
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) >= MINUTE)
        {
            self.sent.pop_front();
        }
        if self.sent.len() < per_minute as usize {
            self.sent.push_back(now);
            return true;
        }
        self.untold(1, now);
        false
    }

    /// Counts `count` events that were not told one by one (over the limit, or lost on the
    /// way), for the next summary.
    pub fn untold(&mut self, count: u64, now: Instant) {
        if count == 0 {
            return;
        }
        self.untold += count;
        self.summary_at.get_or_insert(now + MINUTE);
    }

    /// When the next summary is due, if any event waits for one.
    pub fn summary_at(&self) -> Option<Instant> {
        self.summary_at
    }

    /// The number of untold events when their summary is due at `now` (and a fresh count
    /// from here), else `None`.
    pub fn summary_due(&mut self, now: Instant) -> Option<u64> {
        if self.summary_at.is_some_and(|at| at <= now) {
            self.summary_at = None;
            return Some(std::mem::take(&mut self.untold));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thirty_events_in_a_second_give_the_limit_and_one_summary_a_minute_later() {
        let start = Instant::now();
        let mut budget = Budget::default();
        let mut told = 0;
        for n in 0..30 {
            let at = start + Duration::from_millis(30 * n);
            if budget.admit(3, at) {
                told += 1;
            }
            assert_eq!(budget.summary_due(at), None);
        }
        assert_eq!(told, 3);
        // The first untold event came at 90 ms: its summary is due a minute after.
        let due = start + Duration::from_millis(90) + MINUTE;
        assert_eq!(budget.summary_at(), Some(due));
        assert_eq!(budget.summary_due(due - Duration::from_millis(1)), None);
        assert_eq!(budget.summary_due(due), Some(27));
        assert_eq!(budget.summary_at(), None, "one summary");
        assert_eq!(budget.summary_due(due + MINUTE), None);
    }

    #[test]
    fn the_window_rolls_and_lost_lines_join_the_summary() {
        let start = Instant::now();
        let mut budget = Budget::default();
        assert!(budget.admit(2, start));
        assert!(budget.admit(2, start + Duration::from_secs(30)));
        assert!(!budget.admit(2, start + Duration::from_secs(59)));
        // The first line left the window: one more may go.
        assert!(budget.admit(2, start + Duration::from_secs(60)));
        assert!(!budget.admit(2, start + Duration::from_secs(61)));
        budget.untold(5, start + Duration::from_secs(62));
        assert_eq!(
            budget.summary_at(),
            Some(start + Duration::from_secs(59) + MINUTE),
            "a minute after the first untold event"
        );
        assert_eq!(
            budget.summary_due(start + Duration::from_secs(119)),
            Some(7)
        );
        budget.untold(0, start + Duration::from_secs(120));
        assert_eq!(budget.summary_at(), None, "nothing untold, no summary");
    }

    #[test]
    fn a_lower_limit_after_a_reload_applies_at_once() {
        let start = Instant::now();
        let mut budget = Budget::default();
        for _ in 0..5 {
            assert!(budget.admit(10, start));
        }
        assert!(!budget.admit(3, start + Duration::from_secs(1)));
        assert!(budget.admit(10, start + Duration::from_secs(2)));
    }
}
