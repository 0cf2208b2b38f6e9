//! Group-health reports: what `GET /api/v1/stats` answers and `qunbridge stats` prints (a
//! table, CSV with an optional UTF-8 BOM, or JSON), and the `qunbridge_group_*` gauges,
//! refreshed from the store at start, every minute, and on a scrape when older than 5 s.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::aliases::LinkedGroup;
use super::count::StatsCounter;
use super::day::{date_text, parse_date, today, week_start};
use super::figures::{count_on_or_before, figures, Figures, Thresholds, DECLINE_WEEKS_MAX};
use crate::config::{StatsConfig, StatsMetrics};
use crate::store::stats::{how_slot, Day, DayCounts};
use crate::store::{RelayStore, StoreError};
use qunbridge_connectors::model::How;

/// How often the gauges are refreshed without a scrape.
const GAUGES_EVERY: Duration = Duration::from_secs(60);
/// Gauges set this recently are not set again for a scrape.
const GAUGES_FRESH: Duration = Duration::from_secs(5);
/// The CSV header (also the report's columns).
pub const CSV_HEADER: &str = "period,alias,link,platform,account,group,messages,active_senders,joins,leaves,kicks,relayed_in,member_count,join_rate,churn_rate,coverage";
/// The UTF-8 byte order mark `--bom` starts CSV with.
pub const BOM: &str = "\u{feff}";

/// Periods a report is cut into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum By {
    /// One row per day.
    #[default]
    Day,
    /// One row per week, Monday to Sunday.
    Week,
}

/// What a report covers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Groups by alias or `account:group`; all linked groups when empty.
    pub groups: Vec<String>,
    /// Only the groups of this link.
    pub link: Option<String>,
    /// First day (default: 6 days before `until`).
    pub since: Option<Day>,
    /// Last day (default: today).
    pub until: Option<Day>,
    /// Day or week rows.
    pub by: By,
}

impl Query {
    /// Reads the query string of `/api/v1/stats` (`group` repeatable, `link`, `since`,
    /// `until` as `YYYY-MM-DD`, `by` = `day` | `week`).
    ///
    /// # Errors
    /// A message naming the parameter and value that make no sense.
    pub fn parse(query: &str) -> Result<Query, String> {
        let mut parsed = Query::default();
        for (key, value) in url::form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "group" => parsed.groups.push(value.into_owned()),
                "link" => parsed.link = Some(value.into_owned()),
                "since" | "until" => {
                    let day = parse_date(&value).ok_or_else(|| {
                        format!("`{key}` = {value:?}: not a date like 2026-12-01")
                    })?;
                    if key == "since" {
                        parsed.since = Some(day);
                    } else {
                        parsed.until = Some(day);
                    }
                }
                "by" => {
                    parsed.by = match value.as_ref() {
                        "day" => By::Day,
                        "week" => By::Week,
                        _ => return Err(format!("`by` = {value:?}: \"day\" or \"week\"")),
                    }
                }
                _ => return Err(format!("`{key}`: unknown parameter")),
            }
        }
        if let (Some(since), Some(until)) = (parsed.since, parsed.until) {
            if since > until {
                return Err("`since` is after `until`".into());
            }
        }
        Ok(parsed)
    }

    /// The query string that [`Query::parse`] reads back.
    pub fn to_query_string(&self) -> String {
        let mut out = url::form_urlencoded::Serializer::new(String::new());
        for group in &self.groups {
            out.append_pair("group", group);
        }
        if let Some(link) = &self.link {
            out.append_pair("link", link);
        }
        if let Some(since) = self.since {
            out.append_pair("since", &date_text(since));
        }
        if let Some(until) = self.until {
            out.append_pair("until", &date_text(until));
        }
        if self.by == By::Week {
            out.append_pair("by", "week");
        }
        out.finish()
    }
}

/// One period of one group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeriodRow {
    /// The day, or the Monday of the week (`YYYY-MM-DD`).
    pub period: String,
    /// Messages said in the group (not by bots).
    pub messages: u64,
    /// Distinct members who spoke (`None` past the 35 days digests are kept).
    pub active_senders: Option<u64>,
    /// Members who joined.
    pub joins: u64,
    /// Members who left, however (kicks included).
    pub leaves: u64,
    /// Of those, members removed by someone else.
    pub kicks: u64,
    /// Joins by how (`approve`, `invite`, …); only hows with a count.
    pub joins_by_how: BTreeMap<String, u64>,
    /// Leaves by how.
    pub leaves_by_how: BTreeMap<String, u64>,
    /// Messages relayed into the group.
    pub relayed_in: u64,
    /// The last member count known at the period's end.
    pub member_count: Option<u64>,
    /// Joins over the member count at the period's start.
    pub join_rate: Option<f64>,
    /// Leaves over the member count at the period's start.
    pub churn_rate: Option<f64>,
}

/// One group's report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroupReport {
    /// The alias it goes by.
    pub alias: String,
    /// The first link it is in.
    pub link: String,
    /// Its platform.
    pub platform: String,
    /// The account that sees it.
    pub account: String,
    /// Its platform id (reports name groups; metrics never do).
    pub group: String,
    /// How much the bot sees: `full`, `mentions` or `relayed_only`.
    pub coverage: String,
    /// Figures as of today.
    pub figures: Figures,
    /// The periods asked for, oldest first.
    pub periods: Vec<PeriodRow>,
}

/// A whole report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// First day covered.
    pub since: String,
    /// Last day covered.
    pub until: String,
    /// Day or week rows.
    pub by: By,
    /// The offset days are counted in (seconds east of UTC).
    pub utc_offset_secs: i64,
    /// The groups, by account then group.
    pub groups: Vec<GroupReport>,
}

/// Reads group health from the store and reports it.
pub struct StatsService {
    /// The store holding the rows and digests.
    store: Arc<dyn RelayStore>,
    /// The counter (for the current aliases).
    counter: Arc<StatsCounter>,
    /// `[stats]` as loaded (thresholds, offset, retention).
    config: std::sync::Mutex<StatsConfig>,
    /// When the gauges were last set (a scrape refreshes them when older than
    /// [`GAUGES_FRESH`]) and the `qunbridge_group_info` label sets they said were linked.
    gauges_set: tokio::sync::Mutex<GaugesSet>,
    /// Set by a reload: the next scrape sets the gauges whatever their age, so a renamed
    /// alias shows at once.
    reloaded: std::sync::atomic::AtomicBool,
}

/// What the last setting of the gauges did.
#[derive(Default)]
struct GaugesSet {
    /// When; `None` before the first time.
    at: Option<tokio::time::Instant>,
    /// The `qunbridge_group_info` label sets set to 1 then: one that is gone now (an alias
    /// renamed or a link removed by a reload) is set to 0, as the exporter cannot remove a
    /// series.
    info: BTreeSet<InfoLabels>,
}

/// The labels of one `qunbridge_group_info` series: group, link, platform, account, coverage.
type InfoLabels = [String; 5];

impl StatsService {
    /// A service over `store` for the groups `counter` knows.
    pub fn new(
        store: Arc<dyn RelayStore>,
        counter: Arc<StatsCounter>,
        config: StatsConfig,
    ) -> StatsService {
        StatsService {
            store,
            counter,
            config: std::sync::Mutex::new(config),
            gauges_set: tokio::sync::Mutex::new(GaugesSet::default()),
            reloaded: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Sets the gauges from the store unless they were set within [`GAUGES_FRESH`] (a
    /// `/metrics` scrape calls this, so what Prometheus reads is current).
    pub async fn refresh_gauges(&self) {
        let mut set = self.gauges_set.lock().await;
        let reloaded = self
            .reloaded
            .swap(false, std::sync::atomic::Ordering::SeqCst);
        if !reloaded && set.at.is_some_and(|at| at.elapsed() < GAUGES_FRESH) {
            return;
        }
        let config = self.config();
        let info = match config.metrics {
            StatsMetrics::Off => BTreeSet::new(),
            mode => match self.report(&Query::default()).await {
                Ok(report) => set_gauges(&report, mode),
                Err(error) => {
                    warn!(message = "Group-health gauges not refreshed.", %error);
                    return;
                }
            },
        };
        for gone in set.info.difference(&info) {
            let [group, link, platform, account, coverage] = gone.clone();
            metrics::gauge!(crate::metrics::GROUP_INFO, "group" => group, "link" => link,
                "platform" => platform, "account" => account, "coverage" => coverage)
            .set(0.0);
        }
        *set = GaugesSet {
            at: Some(tokio::time::Instant::now()),
            info,
        };
    }

    /// Takes reloaded thresholds (the offset stays as started: history is keyed by day).
    pub fn set_config(&self, config: StatsConfig) {
        let mut current = self.config.lock().unwrap_or_else(|e| e.into_inner());
        let offset = current.utc_offset_secs;
        *current = config;
        current.utc_offset_secs = offset;
        self.reloaded
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Today, in the configured UTC offset.
    pub fn today(&self) -> Day {
        today(self.config().utc_offset_secs)
    }

    /// The configuration in force.
    fn config(&self) -> StatsConfig {
        self.config
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Builds the report `query` asks for.
    ///
    /// # Errors
    /// [`StoreError`] when the store cannot be read.
    pub async fn report(&self, query: &Query) -> Result<Report, StoreError> {
        let config = self.config();
        let today = today(config.utc_offset_secs);
        let until = query.until.unwrap_or(today);
        let since = query.since.unwrap_or(until - 6);
        let (since, until) = match query.by {
            By::Day => (since, until),
            By::Week => (week_start(since), week_start(until) + 6),
        };
        let history_from = (since.min(today) - 7 * (DECLINE_WEEKS_MAX + 2)).min(since - 7);
        let rows = self
            .store
            .stats_rows(history_from, until.max(today))
            .await?;
        let mut by_group: BTreeMap<(String, String), BTreeMap<Day, DayCounts>> = BTreeMap::new();
        for row in rows {
            by_group
                .entry((row.account, row.group))
                .or_default()
                .insert(row.day, row.counts);
        }
        let aliases = self.counter.aliases();
        let thresholds = Thresholds {
            core_days: config.core_days,
            decline_min_messages: config.decline_min_messages,
        };
        let mut groups = Vec::new();
        for linked in aliases.all().filter(|g| selected(g, query)) {
            let empty = BTreeMap::new();
            let rows = by_group
                .get(&(linked.account.clone(), linked.group.clone()))
                .unwrap_or(&empty);
            let senders_from =
                (since.min(today - 27)).max(today - super::super::config::stats::SENDER_DAYS + 1);
            let senders = self
                .store
                .stats_senders(
                    &linked.account,
                    &linked.group,
                    senders_from,
                    until.max(today),
                )
                .await?;
            let figures = figures(today, rows, &senders, thresholds);
            let periods = periods(since, until, query.by, rows, &senders, senders_from);
            groups.push(GroupReport {
                alias: linked.alias.clone(),
                link: linked.link.clone(),
                platform: linked.platform.as_str().to_owned(),
                account: linked.account.clone(),
                group: linked.group.clone(),
                coverage: linked.coverage().to_owned(),
                figures,
                periods,
            });
        }
        Ok(Report {
            since: date_text(since),
            until: date_text(until),
            by: query.by,
            utc_offset_secs: config.utc_offset_secs,
            groups,
        })
    }

    /// One line per linked group for `qunbridge status`: alias, platform, messages today,
    /// active members over 7 days and decline weeks (`null` when the store cannot be read).
    pub async fn status_lines(&self) -> serde_json::Value {
        let query = Query {
            since: Some(today(self.config().utc_offset_secs)),
            ..Query::default()
        };
        match self.report(&query).await {
            Ok(report) => report
                .groups
                .iter()
                .map(|group| {
                    serde_json::json!({
                        "alias": group.alias,
                        "platform": group.platform,
                        "messages_today": group.periods.last().map_or(0, |row| row.messages),
                        "active_7d": group.figures.active_7d,
                        "decline_weeks": group.figures.decline_weeks,
                    })
                })
                .collect(),
            Err(error) => {
                warn!(message = "Group health not read for the status.", %error);
                serde_json::Value::Null
            }
        }
    }

    /// Sets the `qunbridge_group_*` gauges from the store every minute until `stop`, and
    /// sweeps history past `retention` (and digests past 35 days) once an hour.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut ticks = 0u64;
        loop {
            let config = self.config();
            if ticks % 60 == 0 {
                let today = today(config.utc_offset_secs);
                let sweep = crate::store::WriteBatch {
                    stats_sweep: Some(crate::store::stats::StatsSweep::by_age(
                        today - config.retention_days,
                        today - super::super::config::stats::SENDER_DAYS,
                    )),
                    ..Default::default()
                };
                if let Err(error) = self.store.write(sweep).await {
                    warn!(message = "Group-health history not swept.", %error);
                }
            }
            self.refresh_gauges().await;
            ticks += 1;
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(GAUGES_EVERY) => {}
            }
        }
    }
}

/// True when `group` is one `query` asks for.
fn selected(group: &LinkedGroup, query: &Query) -> bool {
    let named = query.groups.is_empty()
        || query.groups.iter().any(|wanted| {
            *wanted == group.alias || *wanted == format!("{}:{}", group.account, group.group)
        });
    named && query.link.as_ref().is_none_or(|link| *link == group.link)
}

/// The period rows of one group from `since` to `until`.
fn periods(
    since: Day,
    until: Day,
    by: By,
    rows: &BTreeMap<Day, DayCounts>,
    senders: &[(Day, Vec<String>)],
    senders_from: Day,
) -> Vec<PeriodRow> {
    let step = if by == By::Week { 7 } else { 1 };
    let mut out = Vec::new();
    let mut start = since;
    while start <= until {
        let end = start + step - 1;
        let mut total = DayCounts::default();
        for (_, counts) in rows.range(start..=end) {
            total.merge(counts);
        }
        let active = (start >= senders_from).then(|| {
            senders
                .iter()
                .filter(|(day, _)| *day >= start && *day <= end)
                .flat_map(|(_, digests)| digests.iter())
                .collect::<std::collections::HashSet<_>>()
                .len() as u64
        });
        let base = count_on_or_before(rows, start - 1).filter(|count| *count > 0);
        let joins: u64 = total.joins.iter().sum();
        let leaves: u64 = total.leaves.iter().sum();
        let by_how = |counts: &[u64]| -> BTreeMap<String, u64> {
            How::ALL
                .into_iter()
                .filter(|how| counts[how_slot(*how)] > 0)
                .map(|how| (how.as_str().to_owned(), counts[how_slot(how)]))
                .collect()
        };
        out.push(PeriodRow {
            period: date_text(start),
            messages: total.messages,
            active_senders: active,
            joins,
            leaves,
            kicks: total.leaves[how_slot(How::Kick)],
            joins_by_how: by_how(&total.joins),
            leaves_by_how: by_how(&total.leaves),
            relayed_in: total.relayed_in,
            member_count: count_on_or_before(rows, end),
            join_rate: base.map(|count| joins as f64 / count as f64),
            churn_rate: base.map(|count| leaves as f64 / count as f64),
        });
        start += step;
    }
    out
}

/// Sets the gauges of every group in `report` (summed per link with `per_link`); returns the
/// `qunbridge_group_info` label sets it set to 1.
fn set_gauges(report: &Report, mode: StatsMetrics) -> BTreeSet<InfoLabels> {
    use crate::metrics::{
        GROUP_ACTIVE_SENDERS, GROUP_DECLINE_WEEKS, GROUP_INFO, GROUP_MEMBERS_BY_TIER,
        GROUP_MEMBER_COUNT,
    };
    let mut sums: BTreeMap<String, Figures> = BTreeMap::new();
    let mut info = BTreeSet::new();
    for group in &report.groups {
        let label = match mode {
            StatsMetrics::PerGroup => group.alias.clone(),
            StatsMetrics::PerLink => group.link.clone(),
            StatsMetrics::Off => return info,
        };
        let labels = [
            label.clone(),
            group.link.clone(),
            group.platform.clone(),
            group.account.clone(),
            group.coverage.clone(),
        ];
        let [group_label, link, platform, account, coverage] = labels.clone();
        metrics::gauge!(GROUP_INFO, "group" => group_label, "link" => link,
            "platform" => platform, "account" => account, "coverage" => coverage)
        .set(1.0);
        info.insert(labels);
        let sum = sums.entry(label).or_default();
        let f = &group.figures;
        sum.active_1d += f.active_1d;
        sum.active_7d += f.active_7d;
        sum.active_28d += f.active_28d;
        sum.member_count = match (sum.member_count, f.member_count) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        sum.tiers.core += f.tiers.core;
        sum.tiers.regular += f.tiers.regular;
        sum.tiers.lurking += f.tiers.lurking;
        sum.tiers.silent = match (sum.tiers.silent, f.tiers.silent) {
            (Some(a), Some(b)) => Some(a + b),
            (a, b) => a.or(b),
        };
        sum.decline_weeks = sum.decline_weeks.max(f.decline_weeks);
    }
    for (label, f) in sums {
        for (window, value) in [
            ("1d", f.active_1d),
            ("7d", f.active_7d),
            ("28d", f.active_28d),
        ] {
            metrics::gauge!(GROUP_ACTIVE_SENDERS, "group" => label.clone(), "window" => window)
                .set(value as f64);
        }
        if let Some(count) = f.member_count {
            metrics::gauge!(GROUP_MEMBER_COUNT, "group" => label.clone()).set(count as f64);
        }
        for (tier, value) in [
            ("core", Some(f.tiers.core)),
            ("regular", Some(f.tiers.regular)),
            ("lurking", Some(f.tiers.lurking)),
            ("silent", f.tiers.silent),
        ] {
            if let Some(value) = value {
                metrics::gauge!(GROUP_MEMBERS_BY_TIER, "group" => label.clone(), "tier" => tier)
                    .set(value as f64);
            }
        }
        metrics::gauge!(GROUP_DECLINE_WEEKS, "group" => label).set(f.decline_weeks as f64);
    }
    info
}

/// A rate as CSV shows it (four decimals), empty when unknown.
fn rate_text(rate: Option<f64>) -> String {
    rate.map(|r| format!("{r:.4}")).unwrap_or_default()
}

/// Quotes a CSV field when it needs it.
fn csv_field(value: &str) -> String {
    if value.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", value.replace('"', "\"\""))
    } else {
        value.to_owned()
    }
}

/// The report as CSV: [`CSV_HEADER`], then one row per group and period.
pub fn csv(report: &Report, bom: bool) -> String {
    let mut out = String::new();
    if bom {
        out.push_str(BOM);
    }
    out.push_str(CSV_HEADER);
    out.push_str("\r\n");
    for group in &report.groups {
        for row in &group.periods {
            let fields = [
                row.period.clone(),
                group.alias.clone(),
                group.link.clone(),
                group.platform.clone(),
                group.account.clone(),
                group.group.clone(),
                row.messages.to_string(),
                row.active_senders
                    .map(|n| n.to_string())
                    .unwrap_or_default(),
                row.joins.to_string(),
                row.leaves.to_string(),
                row.kicks.to_string(),
                row.relayed_in.to_string(),
                row.member_count.map(|n| n.to_string()).unwrap_or_default(),
                rate_text(row.join_rate),
                rate_text(row.churn_rate),
                group.coverage.clone(),
            ];
            let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
            out.push_str(&line.join(","));
            out.push_str("\r\n");
        }
    }
    out
}

/// The report as a table for a terminal: per group its figures, then its periods.
pub fn table(report: &Report) -> String {
    let mut out = format!(
        "group health {} .. {} (by {}, UTC{:+03}:{:02})\n",
        report.since,
        report.until,
        if report.by == By::Week { "week" } else { "day" },
        report.utc_offset_secs / 3600,
        (report.utc_offset_secs.abs() % 3600) / 60
    );
    if report.groups.is_empty() {
        out.push_str("  no linked groups\n");
    }
    for group in &report.groups {
        let f = &group.figures;
        let optional = |v: Option<u64>| v.map(|n| n.to_string()).unwrap_or_else(|| "-".into());
        let percent = |r: Option<f64>| {
            r.map(|r| format!("{:.1}%", r * 100.0))
                .unwrap_or_else(|| "-".into())
        };
        out.push_str(&format!(
            "\n{} ({} {}:{}, link {}, coverage {})\n  active 1d/7d/28d {}/{}/{}  members {}  core {} regular {} lurking {} silent {}  join rate 7d {}  churn 7d {}  decline weeks {}\n",
            group.alias,
            group.platform,
            group.account,
            group.group,
            group.link,
            group.coverage,
            f.active_1d,
            f.active_7d,
            f.active_28d,
            optional(f.member_count),
            f.tiers.core,
            f.tiers.regular,
            f.tiers.lurking,
            optional(f.tiers.silent),
            percent(f.join_rate_7d),
            percent(f.churn_rate_7d),
            f.decline_weeks
        ));
        out.push_str("  period      messages  active  joins  leaves  kicks  relayed_in  members\n");
        for row in &group.periods {
            out.push_str(&format!(
                "  {:<10}  {:>8}  {:>6}  {:>5}  {:>6}  {:>5}  {:>10}  {:>7}\n",
                row.period,
                row.messages,
                optional(row.active_senders),
                row.joins,
                row.leaves,
                row.kicks,
                row.relayed_in,
                optional(row.member_count)
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_string_reads_back_and_nonsense_is_named() {
        let query = Query {
            groups: vec!["fans-qq".into(), "qq-main:735021844".into()],
            link: Some("fans".into()),
            since: parse_date("2026-11-01"),
            until: parse_date("2026-11-30"),
            by: By::Week,
        };
        assert_eq!(Query::parse(&query.to_query_string()), Ok(query));
        assert!(Query::parse("since=yesterday")
            .unwrap_err()
            .contains("`since` = \"yesterday\""));
        assert!(Query::parse("by=month").unwrap_err().contains("`by`"));
        assert!(Query::parse("since=2026-12-02&until=2026-12-01").is_err());
    }

    #[test]
    fn csv_starts_with_the_bom_and_the_header_and_quotes_what_needs_it() {
        let report = Report {
            since: "2026-12-01".into(),
            until: "2026-12-01".into(),
            by: By::Day,
            utc_offset_secs: 28_800,
            groups: vec![GroupReport {
                alias: "粉丝群".into(),
                link: "fans, main".into(),
                platform: "qq".into(),
                account: "qq-main".into(),
                group: "735021844".into(),
                coverage: "full".into(),
                figures: Figures::default(),
                periods: vec![PeriodRow {
                    period: "2026-12-01".into(),
                    messages: 28,
                    active_senders: Some(3),
                    joins: 1,
                    leaves: 2,
                    kicks: 1,
                    joins_by_how: BTreeMap::new(),
                    leaves_by_how: BTreeMap::new(),
                    relayed_in: 4,
                    member_count: Some(100),
                    join_rate: Some(0.01),
                    churn_rate: None,
                }],
            }],
        };
        let text = csv(&report, true);
        assert!(text.as_bytes().starts_with(&[0xEF, 0xBB, 0xBF]));
        let mut lines = text.trim_start_matches(BOM).lines();
        assert_eq!(lines.next(), Some(CSV_HEADER));
        assert_eq!(
            lines.next(),
            Some("2026-12-01,粉丝群,\"fans, main\",qq,qq-main,735021844,28,3,1,2,1,4,100,0.0100,,full")
        );
        assert!(!csv(&report, false).starts_with(BOM));
    }
}
