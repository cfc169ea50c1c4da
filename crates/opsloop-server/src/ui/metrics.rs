//! The Metrics area: a PromQL graph and table (`/metrics/graph`), the scrape targets
//! (`/metrics/targets`), the rules and alerts (`rules.rs`), the TSDB's statistics
//! (`/metrics/tsdb`, admins) and each service's golden signals (`signals.rs`).
//!
//! The graph page needs JavaScript (as does the signals dashboard): the server renders the form
//! with the state of its query string, and `assets/metrics.js` asks Prometheus's HTTP API under
//! `/prometheus/api/v1` with the session cookie (GET only, so no CSRF token is involved). What
//! a person sees is therefore scoped exactly as the API scopes it (`crate::prometheus::scope`).

use axum::Extension;
use axum::extract::{RawQuery, State};
use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;

use super::{error_box, layout};
use crate::auth::{Access, Principal};
use crate::routes::{RouteTable, Surface};
use crate::state::AppState;
use crate::views::human_time;
use opsloop_metrics::labels::Labels;
use opsloop_metrics::scrape::{Health, TargetInfo};

const SCRIPT: &str = include_str!("../../assets/metrics.js");
/// The charting both the graph page and the golden-signals dashboard draw with.
const CHART_SCRIPT: &str = include_str!("../../assets/chart.js");
const SIGNALS_SCRIPT: &str = include_str!("../../assets/signals.js");
const STYLESHEET: &str = include_str!("../../assets/metrics.css");

/// Every metrics page counts as the Metrics area of the navigation, whose link is the graph.
pub(super) const AREA: &str = "/metrics/graph";

/// The ranges the range menu offers, as Prometheus's UI offers them.
pub(super) const RANGES: [&str; 6] = ["5m", "15m", "1h", "6h", "24h", "7d"];
pub(super) const DEFAULT_RANGE: &str = "1h";
/// Auto-refresh choices: (value in the query string, shown as).
const REFRESHES: [(&str, &str); 4] = [("", "off"), ("5s", "5s"), ("15s", "15s"), ("1m", "1m")];

/// The Metrics area's pages (see `crate::subsystem`). The scripts and the stylesheet are only
/// used by signed-in pages, so they are not public.
pub fn routes(table: RouteTable) -> RouteTable {
    use Access::{Admin, Authenticated, Project};
    use opsloop_core::Role::Viewer;
    let ui = Surface::Ui;
    table
        .add(ui, Method::GET, "/metrics/graph", Authenticated, graph)
        .add(ui, Method::GET, "/metrics/targets", Authenticated, targets)
        .add(ui, Method::GET, "/metrics/rules", Authenticated, super::rules::rules)
        .add(ui, Method::GET, "/metrics/alerts", Authenticated, super::rules::alerts)
        .add(ui, Method::GET, "/metrics/tsdb", Admin, tsdb)
        .add(
            ui,
            Method::GET,
            "/projects/{project}/environments/{environment}/signals",
            Project(Viewer),
            super::signals::page,
        )
        .add(
            ui,
            Method::GET,
            "/projects/{project}/environments/{environment}/signals/data",
            Project(Viewer),
            super::signals::data,
        )
        .add(ui, Method::GET, "/assets/chart.js", Authenticated, chart_script)
        .add(ui, Method::GET, "/assets/metrics.js", Authenticated, script)
        .add(ui, Method::GET, "/assets/signals.js", Authenticated, signals_script)
        .add(ui, Method::GET, "/assets/metrics.css", Authenticated, stylesheet)
}

fn javascript(text: &'static str) -> Response {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "private, max-age=3600")], text)
        .into_response()
}

async fn script() -> Response {
    javascript(SCRIPT)
}

async fn chart_script() -> Response {
    javascript(CHART_SCRIPT)
}

async fn signals_script() -> Response {
    javascript(SIGNALS_SCRIPT)
}

async fn stylesheet() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "private, max-age=3600")], STYLESHEET)
        .into_response()
}

/// The graph page's state, as its query string carries it (so a graph can be bookmarked).
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(default)]
struct GraphQuery {
    expr: String,
    range: String,
    end: String,
    step: String,
    tab: String,
    refresh: String,
}

impl GraphQuery {
    /// A query string that does not parse is treated as none: the page still opens, empty.
    fn parse(raw: Option<&str>) -> GraphQuery {
        raw.and_then(|q| serde_urlencoded::from_str(q).ok()).unwrap_or_default()
    }

    fn table(&self) -> bool {
        self.tab == "table"
    }
}

/// Seconds in a duration as the range menu writes it (`5m`, `24h`, `7d`); `None` otherwise.
pub(super) fn range_seconds(range: &str) -> Option<u64> {
    let digits = range.find(|c: char| !c.is_ascii_digit())?;
    let n: u64 = range[..digits].parse().ok()?;
    let unit = match &range[digits..] {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return None,
    };
    n.checked_mul(unit).filter(|s| *s > 0)
}

/// The step the graph uses when none is set: about 250 points over the range, as Prometheus's
/// own UI does, and never under a second (the API's resolution). `metrics.js` computes the same.
pub(super) fn auto_step_seconds(range_seconds: u64) -> u64 {
    (range_seconds / 250).max(1)
}

/// A count of bytes for people: `512 B`, `1.5 KiB`, `20.0 MiB`.
fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The links between the Metrics area's pages.
pub(super) fn subnav(principal: &Principal, current: &str) -> Markup {
    let mut pages = vec![
        ("/metrics/graph", "Graph"),
        ("/metrics/targets", "Targets"),
        ("/metrics/rules", "Rules"),
        ("/metrics/alerts", "Alerts"),
    ];
    if principal.is_admin() {
        pages.push(("/metrics/tsdb", "TSDB status"));
    }
    html! {
        nav.subnav aria-label="Metrics pages" {
            ul {
                @for (path, label) in pages {
                    li { a href=(path) aria-current=[(path == current).then_some("page")] { (label) } }
                }
            }
        }
    }
}

/// The stylesheet of the Metrics pages, beside the shared one (a `link` in the body is valid
/// HTML and keeps the shared page frame unchanged).
pub(super) fn metrics_stylesheet() -> Markup {
    html! { link rel="stylesheet" href="/assets/metrics.css"; }
}

async fn graph(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    RawQuery(raw): RawQuery,
) -> Response {
    let query = GraphQuery::parse(raw.as_deref());
    let range = if range_seconds(&query.range).is_some() { query.range.as_str() } else { DEFAULT_RANGE };
    let unavailable = state.prometheus.storage(&state.config).err().map(|e| e.to_string());
    let table = query.table();
    layout("Metrics", Some(&principal), AREA, html! {
        (metrics_stylesheet())
        h1 { "Metrics" }
        (subnav(&principal, "/metrics/graph"))
        p.hint {
            "Query the series opsloop stores with PromQL, e.g. "
            code { "rate(http_requests_total[5m])" } ". "
            @if principal.is_admin() {
                "As an admin you see every series."
            } @else {
                "You see the series whose " code { "project" } " label names one of your projects."
            }
        }
        (error_box(unavailable.as_deref()))
        noscript { p.error { "The graph and table need JavaScript; the API answers at " code { "/prometheus/api/v1/query" } "." } }
        form #metrics-query .metrics-query method="get" action="/metrics/graph" {
            label {
                "Expression"
                textarea #metrics-expr name="expr" rows="3" spellcheck="false" autocomplete="off" autocapitalize="off"
                    placeholder="up" { (query.expr) }
                small { "Enter runs the query; Shift+Enter starts a new line." }
            }
            div.controls {
                label {
                    "Range"
                    select name="range" {
                        @for option in RANGES { option value=(option) selected[option == range] { "last " (option) } }
                        @if !RANGES.contains(&range) { option value=(range) selected { "last " (range) } }
                    }
                }
                label {
                    "End"
                    input type="datetime-local" name="end" step="1";
                    small { "empty: now" }
                }
                label {
                    "Step"
                    input type="text" name="step" value=(query.step) size="6" placeholder="auto" autocomplete="off";
                    small #metrics-step-hint { "auto: " (auto_step_seconds(range_seconds(range).unwrap_or(3600))) "s" }
                }
                label {
                    "Auto-refresh"
                    select name="refresh" {
                        @for (value, shown) in REFRESHES { option value=(value) selected[value == query.refresh] { (shown) } }
                    }
                }
                label {
                    "Insert metric"
                    select #metrics-names aria-describedby="metrics-names-hint" { option value="" { "—" } }
                    small #metrics-names-hint { "names of stored series" }
                }
                input type="hidden" name="tab" value=(if table { "table" } else { "graph" });
                button type="submit" { "Run" }
            }
        }
        p #metrics-error .error role="alert" hidden {}
        div.tabs role="tablist" aria-label="Result" {
            button #tab-graph .tab type="button" role="tab" aria-controls="panel-graph" aria-selected=(if table { "false" } else { "true" }) { "Graph" }
            button #tab-table .tab type="button" role="tab" aria-controls="panel-table" aria-selected=(if table { "true" } else { "false" }) { "Table" }
        }
        section #panel-graph role="tabpanel" aria-labelledby="tab-graph" hidden[table] {
            p #graph-status .muted role="status" {}
            div #chart .chart {}
            ul #legend .legend aria-label="Series (select one to show it alone)" {}
        }
        section #panel-table role="tabpanel" aria-labelledby="tab-table" hidden[!table] {
            p #table-status .muted role="status" {}
            table #result-table {
                thead { tr { th scope="col" { "Series" } th scope="col" { "Value" } } }
                tbody {}
            }
        }
        script src="/assets/chart.js" {}
        script src="/assets/metrics.js" {}
    })
    .into_response()
}

async fn tsdb(State(state): State<AppState>, Extension(principal): Extension<Principal>) -> Response {
    let stats = state.prometheus.storage(&state.config).map(|tsdb| tsdb.stats());
    let time = |t: Option<i64>| t.map_or_else(|| "—".to_owned(), human_time);
    layout("TSDB status", Some(&principal), AREA, html! {
        (metrics_stylesheet())
        h1 { "TSDB status" }
        (subnav(&principal, "/metrics/tsdb"))
        @match &stats {
            Err(error) => (error_box(Some(&error.to_string()))),
            Ok(stats) => {
                p.hint { "The series opsloop keeps under " code { "<data-dir>/metrics" } ": the head (recent samples, in memory and the write-ahead log) and the blocks on disk. Counts are of the head." }
                h2 { "Head" }
                dl.facts {
                    dt { "Series" } dd { (stats.num_series) }
                    dt { "Chunks" } dd { (stats.num_chunks) }
                    dt { "Oldest sample" } dd { (time(stats.head_min_time)) }
                    dt { "Newest sample" } dd { (time(stats.head_max_time)) }
                    dt { "Write-ahead log" } dd { (human_bytes(stats.wal_bytes)) }
                    dt { "Blocks" } dd { (stats.num_blocks) " (" (human_bytes(stats.blocks_bytes)) ")" }
                }
                (top_table("Top 10 series count by metric name", "Metric name", "Series", &stats.series_count_by_metric_name))
                (top_table("Top 10 series count by label name", "Label name", "Series", &stats.series_count_by_label_name))
                (top_table("Top 10 label value count by label name", "Label name", "Values", &stats.label_value_count_by_label_name))
                (top_table("Top 10 series count by label pair", "Label pair", "Series", &stats.series_count_by_label_value_pair))
            }
        }
    })
    .into_response()
}

/// The scrape targets by scrape pool, as `/prometheus/api/v1/targets` lists them and with the
/// same scope: a member sees the targets whose labels name one of their projects.
async fn targets(State(state): State<AppState>, Extension(principal): Extension<Principal>) -> Response {
    let unavailable = state.prometheus.storage(&state.config).err().map(|e| e.to_string());
    let scope = match crate::prometheus::scope(&state.store, &principal).await {
        Ok(scope) => scope,
        Err(error) => return super::failure(error),
    };
    let snapshot = state.prometheus.runtime().map(|r| r.scraper.targets());
    let started = snapshot.is_some();
    let visible = |labels: &Labels| {
        scope.as_deref().is_some_and(|matchers| opsloop_metrics::labels::matches_all(matchers, labels))
    };
    let mut pools: std::collections::BTreeMap<&str, Vec<&TargetInfo>> = std::collections::BTreeMap::new();
    let mut dropped = 0;
    if let Some(snapshot) = &snapshot {
        for target in snapshot.active.iter().filter(|t| visible(&t.labels)) {
            pools.entry(target.scrape_pool.as_str()).or_default().push(target);
        }
        dropped = snapshot.dropped.iter().filter(|t| visible(&t.discovered_labels)).count();
    }
    let now = state.clock.now_ms();
    layout("Targets", Some(&principal), AREA, html! {
        (metrics_stylesheet())
        h1 { "Targets" }
        (subnav(&principal, "/metrics/targets"))
        (error_box(unavailable.as_deref()))
        p.hint {
            "What opsloop scrapes, from its " code { "prometheus.yml" } " (" code { "--metrics-config" } "; without one, its own " code { "/metrics" } ")."
            @if !principal.is_admin() { " You see the targets whose " code { "project" } " label names one of your projects." }
        }
        @if !started && unavailable.is_none() {
            p.muted { "Scraping has not started yet." }
        } @else if pools.is_empty() {
            p.muted { "No targets." }
        }
        @for (pool, targets) in &pools {
            @let up = targets.iter().filter(|t| t.health == Health::Up).count();
            h2 { (pool) " " span.badge { (up) "/" (targets.len()) " up" } }
            table.targets {
                thead { tr {
                    th scope="col" { "Endpoint" } th scope="col" { "State" } th scope="col" { "Labels" }
                    th scope="col" { "Last scrape" } th scope="col" { "Duration" } th scope="col" { "Error" }
                } }
                tbody {
                    @for target in targets {
                        tr {
                            td { code { (target.scrape_url) } }
                            td { (health_badge(target.health)) }
                            td { @for label in target.labels.iter() { code.label { (label.name) "=\"" (label.value) "\"" } " " } }
                            td { @match target.last_scrape {
                                Some(at) => span title=(human_time(at)) { (ago(now, at)) },
                                None => span.muted { "never" },
                            } }
                            td.number { @if target.last_scrape.is_some() { (format!("{:.1} ms", target.last_scrape_duration.as_secs_f64() * 1000.0)) } }
                            td { @if let Some(error) = &target.last_error { span.error-text { (error) } } }
                        }
                    }
                }
            }
        }
        @if dropped > 0 {
            p.muted { (dropped) " discovered " (if dropped == 1 { "target was" } else { "targets were" }) " dropped by relabelling." }
        }
    })
    .into_response()
}

fn health_badge(health: Health) -> Markup {
    // The status colours of pipelines: up reads as success, down as failure.
    let class = match health {
        Health::Up => "status-success",
        Health::Down => "status-failed",
        Health::Unknown => "status-pending",
    };
    html! { span class={ "badge " (class) } { (health.as_str()) } }
}

/// How long ago `then` was, for people: `12 s ago`, `3 min ago`, `2 h ago`.
pub(super) fn ago(now_ms: i64, then_ms: i64) -> String {
    let seconds = (now_ms - then_ms).max(0) / 1000;
    match seconds {
        0..60 => format!("{seconds} s ago"),
        60..3600 => format!("{} min ago", seconds / 60),
        _ => format!("{} h ago", seconds / 3600),
    }
}

fn top_table(title: &str, name: &str, count: &str, rows: &[(String, usize)]) -> Markup {
    html! {
        h2 { (title) }
        @if rows.is_empty() {
            p.muted { "No series yet." }
        } @else {
            table.top {
                thead { tr { th scope="col" { (name) } th scope="col" { (count) } } }
                tbody { @for (key, n) in rows { tr { td { code { (key) } } td.number { (n) } } } }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_as_the_range_menu_writes_them() {
        assert_eq!(range_seconds("5m"), Some(300));
        assert_eq!(range_seconds("24h"), Some(86_400));
        assert_eq!(range_seconds("7d"), Some(604_800));
        for refused in ["", "m", "5", "0m", "5x", "1h30m", "-5m", "99999999999999999999d"] {
            assert_eq!(range_seconds(refused), None, "{refused:?}");
        }
    }

    #[test]
    fn the_auto_step_gives_about_250_points_and_at_least_a_second() {
        assert_eq!(auto_step_seconds(300), 1);
        assert_eq!(auto_step_seconds(3600), 14);
        assert_eq!(auto_step_seconds(604_800), 2419);
        assert_eq!(auto_step_seconds(1), 1);
    }

    #[test]
    fn a_query_string_that_does_not_parse_opens_an_empty_page() {
        let q = GraphQuery::parse(Some("expr=rate(x%5B5m%5D)&range=6h&tab=table"));
        assert_eq!((q.expr.as_str(), q.range.as_str(), q.table()), ("rate(x[5m])", "6h", true));
        assert_eq!(GraphQuery::parse(Some("expr=a&expr=b")), GraphQuery::default());
        assert_eq!(GraphQuery::parse(None), GraphQuery::default());
    }

    #[test]
    fn scrapes_ago_for_people() {
        assert_eq!(ago(10_000, 10_000), "0 s ago");
        assert_eq!(ago(70_000, 10_000), "1 min ago");
        assert_eq!(ago(7_210_000, 10_000), "2 h ago");
        // A scrape stamped after the page's clock (another clock) is not in the future.
        assert_eq!(ago(0, 5_000), "0 s ago");
    }

    #[test]
    fn bytes_for_people() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(20 * 1024 * 1024), "20.0 MiB");
        assert_eq!(human_bytes(u64::MAX), "16384.0 PiB");
    }
}
