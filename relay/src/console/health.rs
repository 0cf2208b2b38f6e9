//! Group health (`/health`): per linked group, messages per day over the last 28 days and
//! joins against leaves per day (inline SVG, one point per day), active senders over 1, 7 and
//! 28 days, tiers, join and churn rates, and a decline badge from three weeks of decline.
//! A group's detail (`/health/<alias>`) adds its account and id and the day table; the CSV
//! (`/health.csv`) is what `qunbridge stats --format csv --bom` prints, from the same code
//! ([`crate::stats::report::csv`]).

use std::fmt::Write as _;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::html::{self, esc};
use super::i18n::{Lang, PageLang};
use crate::admin::Health;
use crate::stats::day::date_text;
use crate::stats::report::{csv as report_csv, GroupReport, Query, Report, StatsService};

/// Days the page covers.
pub const DAYS: i64 = 28;
/// `decline_weeks` from which a group gets the decline badge.
pub const DECLINE_BADGE_WEEKS: u64 = 3;
/// Chart size in SVG units.
const WIDTH: f64 = 560.0;
/// Chart height in SVG units.
const HEIGHT: f64 = 140.0;
/// Room for the axis labels.
const PAD: f64 = 24.0;

/// The report of the last [`DAYS`] days, by day.
async fn last_days(service: &StatsService) -> Result<Report, String> {
    let today = service.today();
    let query = Query {
        since: Some(today - (DAYS - 1)),
        until: Some(today),
        ..Query::default()
    };
    service
        .report(&query)
        .await
        .map_err(|error| error.to_string())
}

/// `GET /health`.
pub async fn page(
    State(health): State<Arc<Health>>,
    PageLang { lang, chosen }: PageLang,
) -> Response {
    let body = match health.stats() {
        None => off(lang),
        Some(service) => match last_days(&service).await {
            Ok(report) => render(lang, &report),
            Err(_) => unreadable(lang),
        },
    };
    let sign_out = health.console_signs_in();
    html::respond_in(
        lang,
        chosen,
        html::layout(
            lang,
            Some("/health"),
            lang.t("Group health"),
            sign_out,
            &body,
        ),
    )
}

/// `GET /health/<alias>`: one group with its account, id and day table.
pub async fn detail(
    State(health): State<Arc<Health>>,
    Path(alias): Path<String>,
    PageLang { lang, chosen }: PageLang,
) -> Response {
    let mut status = StatusCode::OK;
    let body = match health.stats() {
        None => off(lang),
        Some(service) => match last_days(&service).await {
            Ok(report) => match report.groups.iter().find(|g| g.alias == alias) {
                Some(group) => render_detail(lang, group),
                None => {
                    status = StatusCode::NOT_FOUND;
                    format!("<p class=\"error\">{}</p>", esc(lang.t("No such group.")))
                }
            },
            Err(_) => unreadable(lang),
        },
    };
    let sign_out = health.console_signs_in();
    let mut response = html::respond_in(
        lang,
        chosen,
        html::layout(lang, Some("/health"), &alias, sign_out, &body),
    );
    *response.status_mut() = status;
    response
}

/// `GET /health.csv`: the CSV of `qunbridge stats --format csv --bom` for the query
/// (`/api/v1/stats` parameters; by default the last 28 days), as a download.
pub async fn csv(State(health): State<Arc<Health>>, RawQuery(query): RawQuery) -> Response {
    let Some(service) = health.stats() else {
        return (StatusCode::NOT_FOUND, "group health is off\n").into_response();
    };
    let mut query = match Query::parse(query.as_deref().unwrap_or_default()) {
        Ok(query) => query,
        Err(problem) => return (StatusCode::BAD_REQUEST, format!("{problem}\n")).into_response(),
    };
    if query.since.is_none() {
        query.since = Some(query.until.unwrap_or_else(|| service.today()) - (DAYS - 1));
    }
    let report = match service.report(&query).await {
        Ok(report) => report,
        Err(error) => {
            return (StatusCode::SERVICE_UNAVAILABLE, format!("{error}\n")).into_response()
        }
    };
    let mut response = report_csv(&report, true).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let disposition = format!(
        "attachment; filename=\"qunbridge-stats-{}-{}.csv\"",
        report.since, report.until
    );
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

/// The page when group health is off.
fn off(lang: Lang) -> String {
    format!(
        "<p class=\"empty\">{}</p>",
        esc(lang.t("Group health is off (`[stats] enabled = false`)."))
    )
}

/// Every group's card, and the CSV link.
pub fn render(lang: Lang, report: &Report) -> String {
    let mut out = format!(
        "<div data-live=\"page\"><p class=\"actions\"><a class=\"button\" href=\"/health.csv\" download>{}</a> <small>{} – {}</small></p>",
        esc(lang.t("Download CSV")),
        esc(&report.since),
        esc(&report.until)
    );
    for group in &report.groups {
        out.push_str(&card(lang, group, false));
    }
    out.push_str("</div>");
    out
}

/// One group's detail: its card with ids, then the day table.
pub fn render_detail(lang: Lang, group: &GroupReport) -> String {
    let t = |text| esc(lang.t(text));
    let mut out = format!(
        "<p><a href=\"/health\">← {}</a></p>{}",
        t("Back"),
        card(lang, group, true)
    );
    let _ = write!(
        out,
        "<section><table><thead><tr><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th><th>{}</th></tr></thead><tbody>",
        t("Day"),
        t("Messages"),
        t("Active senders"),
        t("Joins"),
        t("Leaves"),
        t("Kicks"),
        t("Relayed in"),
        t("Members")
    );
    for row in group.periods.iter().rev() {
        let _ = write!(
            out,
            "<tr><td>{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td></tr>",
            esc(&row.period),
            row.messages,
            row.active_senders.map_or("-".to_owned(), |n| n.to_string()),
            row.joins,
            row.leaves,
            row.kicks,
            row.relayed_in,
            row.member_count.map_or("-".to_owned(), |n| n.to_string()),
        );
    }
    out.push_str("</tbody></table></section>");
    out
}

/// A group's card: figures and both charts; `ids` adds the account and the group's id.
fn card(lang: Lang, group: &GroupReport, ids: bool) -> String {
    let t = |text| esc(lang.t(text));
    let f = &group.figures;
    let badge = if f.decline_weeks >= DECLINE_BADGE_WEEKS {
        format!(
            " <span class=\"badge decline\" title=\"decline_weeks = {n}\">{} · {n} {}</span>",
            t("Declining"),
            t("weeks in a row"),
            n = f.decline_weeks
        )
    } else {
        String::new()
    };
    let title = if ids {
        esc(&group.alias)
    } else {
        format!(
            "<a href=\"/health/{}\">{}</a>",
            percent_encoding::utf8_percent_encode(&group.alias, percent_encoding::NON_ALPHANUMERIC),
            esc(&group.alias)
        )
    };
    let mut out = format!(
        "<section class=\"card group\" data-alias=\"{}\"><h2>{title}{badge}</h2><p class=\"meta\">{} · {} {} · {} {}</p>",
        esc(&group.alias),
        esc(&group.platform),
        t("Link"),
        esc(&group.link),
        t("Coverage"),
        esc(&group.coverage),
    );
    if ids {
        let _ = write!(
            out,
            "<p class=\"meta ids\">{} <code>{}</code> · {} <code>{}</code></p>",
            t("Account"),
            esc(&group.account),
            t("Group"),
            esc(&group.group)
        );
    }
    let rate = |rate: Option<f64>| rate.map_or("-".to_owned(), |r| format!("{:.1}%", r * 100.0));
    let _ = write!(
        out,
        "<dl class=\"figures\"><div><dt>{}</dt><dd>{} / {} / {} <small>({} / {} / {})</small></dd></div>\
<div><dt>{}</dt><dd>{}</dd></div>\
<div><dt>{}</dt><dd>{} {} · {} {} · {} {} · {} {}</dd></div>\
<div><dt>{}</dt><dd>{}</dd></div><div><dt>{}</dt><dd>{}</dd></div></dl>",
        t("Active senders"),
        f.active_1d,
        f.active_7d,
        f.active_28d,
        t("1 day"),
        t("7 days"),
        t("28 days"),
        t("Members"),
        f.member_count.map_or("-".to_owned(), |n| n.to_string()),
        t("Tiers"),
        t("core"),
        f.tiers.core,
        t("regular"),
        f.tiers.regular,
        t("lurking"),
        f.tiers.lurking,
        t("silent"),
        f.tiers.silent.map_or("-".to_owned(), |n| n.to_string()),
        t("Join rate (7 days)"),
        rate(f.join_rate_7d),
        t("Churn (7 days)"),
        rate(f.churn_rate_7d),
    );
    let days: Vec<&str> = group.periods.iter().map(|p| p.period.as_str()).collect();
    let messages: Vec<u64> = group.periods.iter().map(|p| p.messages).collect();
    let joins: Vec<u64> = group.periods.iter().map(|p| p.joins).collect();
    let leaves: Vec<u64> = group.periods.iter().map(|p| p.leaves).collect();
    let _ = write!(
        out,
        "<div class=\"charts\"><figure><figcaption>{}</figcaption>{}</figure>\
<figure><figcaption>{} <span class=\"key joins\">{}</span> <span class=\"key leaves\">{}</span></figcaption>{}</figure></div></section>",
        t("Messages per day, last 28 days"),
        chart("messages", &days, &[("messages", &messages)]),
        t("Joins and leaves per day"),
        t("Joins"),
        t("Leaves"),
        chart("members", &days, &[("joins", &joins), ("leaves", &leaves)]),
    );
    out
}

/// A line chart as inline SVG: one polyline and one point (with a tooltip) per day for each
/// series, the highest value and the first and last day on the axes.
pub fn chart(class: &str, days: &[&str], series: &[(&str, &[u64])]) -> String {
    let max = series
        .iter()
        .flat_map(|(_, values)| values.iter().copied())
        .max()
        .unwrap_or(0)
        .max(1);
    let n = days.len();
    let x = |i: usize| {
        if n <= 1 {
            PAD + (WIDTH - 2.0 * PAD) / 2.0
        } else {
            PAD + (WIDTH - 2.0 * PAD) * i as f64 / (n - 1) as f64
        }
    };
    let y = |v: u64| HEIGHT - PAD - (HEIGHT - 2.0 * PAD) * v as f64 / max as f64;
    let mut out = format!(
        "<svg class=\"chart {class}\" viewBox=\"0 0 {WIDTH} {HEIGHT}\" role=\"img\" preserveAspectRatio=\"none\">\
<line class=\"axis\" x1=\"{PAD}\" y1=\"{base}\" x2=\"{right}\" y2=\"{base}\"/>\
<text class=\"label\" x=\"2\" y=\"{top}\">{max}</text>",
        base = HEIGHT - PAD,
        right = WIDTH - PAD,
        top = PAD + 4.0,
    );
    for (name, values) in series {
        let points: Vec<String> = values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x(i), y(*v)))
            .collect();
        let _ = write!(
            out,
            "<polyline class=\"series {name}\" points=\"{}\"/><g class=\"points {name}\">",
            points.join(" ")
        );
        for (i, (value, day)) in values.iter().zip(days).enumerate() {
            let _ = write!(
                out,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" data-day=\"{}\" data-value=\"{value}\"><title>{}: {value}</title></circle>",
                x(i),
                y(*value),
                esc(day),
                esc(day)
            );
        }
        out.push_str("</g>");
    }
    if let (Some(first), Some(last)) = (days.first(), days.last()) {
        let _ = write!(
            out,
            "<text class=\"label\" x=\"{PAD}\" y=\"{h}\">{}</text><text class=\"label end\" x=\"{right}\" y=\"{h}\" text-anchor=\"end\">{}</text>",
            esc(first),
            esc(last),
            h = HEIGHT - 6.0,
            right = WIDTH - PAD,
        );
    }
    out.push_str("</svg>");
    out
}

/// The days `since..=until` as text (for tests of the charts' x axis).
pub fn day_texts(since: i64, until: i64) -> Vec<String> {
    (since..=until).map(date_text).collect()
}

/// The paragraph shown when the group-health data cannot be read.
fn unreadable(lang: Lang) -> String {
    format!(
        "<p class=\"error\">{}</p>",
        esc(lang.t("The store cannot be read."))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A group of 28 days with `decline_weeks` weeks of decline.
    fn group(decline_weeks: u64) -> GroupReport {
        GroupReport {
            alias: "fans-qq".to_owned(),
            link: "fans".to_owned(),
            platform: "qq".to_owned(),
            account: "qq-a".to_owned(),
            group: "735021844".to_owned(),
            coverage: "full".to_owned(),
            figures: crate::stats::figures::Figures {
                decline_weeks,
                ..Default::default()
            },
            periods: day_texts(20_000, 20_027)
                .into_iter()
                .map(|period| crate::stats::report::PeriodRow {
                    period,
                    messages: 3,
                    active_senders: Some(1),
                    joins: 1,
                    leaves: 0,
                    kicks: 0,
                    joins_by_how: Default::default(),
                    leaves_by_how: Default::default(),
                    relayed_in: 0,
                    member_count: None,
                    join_rate: None,
                    churn_rate: None,
                })
                .collect(),
        }
    }

    #[test]
    fn the_decline_badge_shows_from_three_weeks_and_ids_only_in_the_detail() {
        let report = |weeks| Report {
            since: "a".to_owned(),
            until: "b".to_owned(),
            by: crate::stats::report::By::Day,
            utc_offset_secs: 0,
            groups: vec![group(weeks)],
        };
        assert!(!render(Lang::En, &report(2)).contains("badge decline"));
        let page = render(Lang::En, &report(3));
        assert!(page.contains("badge decline"), "{page}");
        assert!(page.contains("Declining · 3 weeks in a row"), "{page}");
        assert!(!page.contains("735021844"), "no id on the list");
        assert!(page.contains("href=\"/health/fans%2Dqq\""), "{page}");
        let detail = render_detail(Lang::En, &group(0));
        assert!(detail.contains("<code>735021844</code>"), "{detail}");
        assert_eq!(detail.matches("<tr><td>").count(), 28, "one row a day");
    }

    #[test]
    fn a_chart_has_one_point_per_day_for_each_series() {
        let days = day_texts(20_000, 20_027);
        let days: Vec<&str> = days.iter().map(String::as_str).collect();
        let values: Vec<u64> = (0..28).collect();
        let svg = chart("messages", &days, &[("messages", &values)]);
        assert_eq!(svg.matches("<circle").count(), 28);
        let last = format!("data-day=\"{}\" data-value=\"27\"", days[27]);
        assert!(svg.contains(&last), "{svg}");
        let two = chart("members", &days, &[("joins", &values), ("leaves", &values)]);
        assert_eq!(two.matches("<circle").count(), 56);
        assert_eq!(two.matches("<polyline").count(), 2);
    }
}
