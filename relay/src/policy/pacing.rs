//! Pacing limits as plain data: a rate (`20/min`, `1/1.5s`) and how many sends may go back
//! to back. Config reads them, egress enforces them (egress `pacing`), and so does
//! moderation's flood control; they live here, below all of them, so none has to import
//! another. [`Limit::gcra_quota`] and [`Limit::rolling_window`] say how a limit is counted,
//! so whatever enforces one counts it the same way.

use std::num::NonZeroU32;
use std::time::Duration;

/// A rate written as `N/s`, `N/min`, `N/h` or `N/<duration>` (`5/10s`, `1/1.5s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Sends allowed per window.
    pub count: u32,
    /// The window.
    pub per: Duration,
}

/// Why a rate could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    /// Not `N/<window>`.
    #[error("not a rate such as 20/min, 1/1.5s or 5/10s")]
    Syntax,
    /// `N` is zero.
    #[error("the count must be at least 1 (write \"off\" for no limit)")]
    Zero,
    /// The window is zero or unreadable.
    #[error("the window must be a duration above zero such as s, min, 10s or 1.5s")]
    Window,
}

impl Rate {
    /// Parses a rate.
    ///
    /// # Errors
    /// [`RateError`] saying what is wrong.
    pub fn parse(text: &str) -> Result<Rate, RateError> {
        let (count, window) = text.trim().split_once('/').ok_or(RateError::Syntax)?;
        let count: u32 = count.trim().parse().map_err(|_| RateError::Syntax)?;
        if count == 0 {
            return Err(RateError::Zero);
        }
        let per = parse_window(window.trim()).ok_or(RateError::Window)?;
        if per.is_zero() {
            return Err(RateError::Window);
        }
        Ok(Rate { count, per })
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.per.as_millis() {
            1_000 => write!(f, "{}/s", self.count),
            60_000 => write!(f, "{}/min", self.count),
            3_600_000 => write!(f, "{}/h", self.count),
            _ => write!(f, "{}/{}s", self.count, self.per.as_secs_f64()),
        }
    }
}

/// `s`, `min`, `h` (one unit) or a number with a unit (`10s`, `1.5s`, `2min`, `500ms`).
fn parse_window(text: &str) -> Option<Duration> {
    let unit_secs = |unit: &str| -> Option<f64> {
        match unit {
            "ms" => Some(0.001),
            "s" | "sec" | "second" => Some(1.0),
            "m" | "min" | "minute" => Some(60.0),
            "h" | "hour" => Some(3600.0),
            _ => None,
        }
    };
    if let Some(secs) = unit_secs(text) {
        return Some(Duration::from_secs_f64(secs));
    }
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let secs = number * unit_secs(unit.trim())?;
    (secs.is_finite() && secs > 0.0 && secs < 1e9).then(|| Duration::from_secs_f64(secs))
}

/// A limit: the rate and how many may go back to back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    /// Long-run rate, never exceeded in any rolling window.
    pub rate: Rate,
    /// Sends allowed back to back.
    pub burst: u32,
}

/// The rolling-window half of a [`Limit`]: at most `cap` events in any window of `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RollingWindow {
    /// Events allowed in any one window: `max(N, burst)`.
    pub cap: u32,
    /// The window: `W × max(1, burst/N)`, so for `N ≥ burst` exactly "at most N in any W".
    pub window: Duration,
}

impl Limit {
    /// governor's GCRA quota for this limit: one cell every `W/N`, at most `burst` back to
    /// back. One construction shared by everything that enforces a [`Limit`] (egress pacing,
    /// moderation's flood control), so they count alike.
    pub fn gcra_quota(&self) -> governor::Quota {
        let count = self.rate.count.max(1);
        let burst = NonZeroU32::new(self.burst).unwrap_or(NonZeroU32::MIN);
        let period = (self.rate.per / count).max(Duration::from_nanos(1));
        governor::Quota::with_period(period)
            .unwrap_or_else(|| governor::Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst)
    }

    /// The sliding-window log that, together with [`Limit::gcra_quota`], keeps the rate from
    /// being exceeded in any rolling window, bursts included (a token bucket alone puts its
    /// burst on top of the rate).
    pub fn rolling_window(&self) -> RollingWindow {
        let count = self.rate.count.max(1);
        let cap = count.max(self.burst.max(1));
        RollingWindow {
            cap,
            window: self.rate.per.mul_f64(f64::from(cap) / f64::from(count)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse() {
        let rate = |t: &str| Rate::parse(t);
        assert_eq!(
            rate("20/min"),
            Ok(Rate {
                count: 20,
                per: Duration::from_secs(60)
            })
        );
        assert_eq!(
            rate("1/1.5s"),
            Ok(Rate {
                count: 1,
                per: Duration::from_millis(1500)
            })
        );
        assert_eq!(
            rate("5/10s"),
            Ok(Rate {
                count: 5,
                per: Duration::from_secs(10)
            })
        );
        assert_eq!(
            rate("3/s"),
            Ok(Rate {
                count: 3,
                per: Duration::from_secs(1)
            })
        );
        assert_eq!(
            rate("2/500ms"),
            Ok(Rate {
                count: 2,
                per: Duration::from_millis(500)
            })
        );
        assert_eq!(rate("0/min"), Err(RateError::Zero));
        assert_eq!(rate("5"), Err(RateError::Syntax));
        assert_eq!(rate("5/fortnight"), Err(RateError::Window));
        assert_eq!(rate("5/0s"), Err(RateError::Window));
    }

    #[test]
    fn a_limit_is_counted_by_a_quota_and_a_rolling_window() {
        let limit = |rate: &str, burst| Limit {
            rate: Rate::parse(rate).expect("a valid rate"),
            burst,
        };
        let five = limit("5/10s", 5);
        assert_eq!(
            five.gcra_quota().replenish_interval(),
            Duration::from_secs(2)
        );
        assert_eq!(five.gcra_quota().burst_size().get(), 5);
        assert_eq!(
            five.rolling_window(),
            RollingWindow {
                cap: 5,
                window: Duration::from_secs(10)
            }
        );
        let qq = limit("1/1.5s", 3);
        assert_eq!(
            qq.rolling_window(),
            RollingWindow {
                cap: 3,
                window: Duration::from_millis(4500)
            }
        );
        // A burst of zero is read as one, never a panic.
        assert_eq!(limit("2/s", 0).gcra_quota().burst_size().get(), 1);
    }
}
