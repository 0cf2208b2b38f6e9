//! Days and weeks as group health counts them: by the platform's timestamp, in the
//! configured UTC offset (`stats.utc_offset`), weeks running Monday to Sunday.

use crate::store::stats::Day;

/// Seconds in a day.
const DAY_SECS: i64 = 86_400;

/// The day `ts_ms` falls on, `offset_secs` east of UTC.
pub fn day_of(ts_ms: u64, offset_secs: i64) -> Day {
    let secs = i64::try_from(ts_ms / 1000).unwrap_or(i64::MAX / 2) + offset_secs;
    secs.div_euclid(DAY_SECS)
}

/// Today, in the offset.
pub fn today(offset_secs: i64) -> Day {
    day_of(qunbridge_connectors::context::now_ms(), offset_secs)
}

/// The Monday of the week `day` is in (1970-01-01 was a Thursday).
pub fn week_start(day: Day) -> Day {
    day - (day + 3).rem_euclid(7)
}

/// A day as `YYYY-MM-DD` (proleptic Gregorian calendar).
pub fn date_text(day: Day) -> String {
    let (year, month, date) = civil_from_days(day);
    format!("{year:04}-{month:02}-{date:02}")
}

/// Reads `YYYY-MM-DD`.
pub fn parse_date(text: &str) -> Option<Day> {
    let mut parts = text.trim().splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: u32 = parts.next()?.parse().ok()?;
    let date: u32 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&date) {
        return None;
    }
    let day = days_from_civil(year, month, date);
    (civil_from_days(day) == (year, month, date)).then_some(day)
}

/// Days since 1970-01-01 of a calendar date (H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, date: u32) -> Day {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(date) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The calendar date of a day number.
fn civil_from_days(day: Day) -> (i64, u32, u32) {
    let z = day + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let date = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, date)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_follow_the_offset_and_weeks_start_on_monday() {
        // 2024-06-20 16:30 UTC is 2024-06-21 00:30 in +08:00.
        let ts = 1_718_901_000_000;
        assert_eq!(date_text(day_of(ts, 0)), "2024-06-20");
        assert_eq!(date_text(day_of(ts, 8 * 3600)), "2024-06-21");
        let friday = parse_date("2024-06-21").expect("a date");
        assert_eq!(date_text(week_start(friday)), "2024-06-17");
        assert_eq!(
            week_start(parse_date("2024-06-17").expect("a date")),
            parse_date("2024-06-17").expect("a date")
        );
        assert_eq!(parse_date("2024-02-30"), None);
        assert_eq!(parse_date("1969-12-31"), Some(-1));
    }
}
