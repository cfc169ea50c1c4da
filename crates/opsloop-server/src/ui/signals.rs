//! A service's golden signals in one environment, from the series the proxy exports on
//! opsloop's `/metrics` and the scraper stores (`opsloop_proxy_*`): request rate, error ratio,
//! p50/p95/p99 latency and saturation, one line per version, so the old and the new version
//! of a deployment are seen side by side; the deployments of the range are marked on every
//! chart. `/projects/{project}/environments/{environment}/signals?service=NAME` shows the last
//! hour (or another range); `&deployment=ID` the half hour either side of that deployment.
//!
//! The proxy's series carry `service="<project>/<environment>/<service>"` (the route name)
//! and `version="<version>#<release id>"`, but no `project` label, so Prometheus's API would
//! show them to admins only. A project's members see their own services here: the server
//! builds the queries itself and evaluates them through a view of the storage limited to that
//! one route's series (`storage::Scoped`), and never to a series labelled with another project.

use axum::Extension;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;
use serde_json::{Value, json};

use super::metrics::{DEFAULT_RANGE, RANGES, auto_step_seconds, metrics_stylesheet, range_seconds};
use super::rules::graph_link;
use super::{error_box, failure, layout};
use crate::auth::{Principal, ProjectContext};
use crate::error::ApiError;
use crate::state::AppState;
use crate::views::human_time;
use opsloop_metrics::labels::Matcher;
use opsloop_metrics::storage::{Queryable, Scoped};

/// How far either side of a deployment its dashboard looks.
const AROUND_DEPLOYMENT_MS: i64 = 30 * 60 * 1000;
/// The most points one series may have, as Prometheus's `query_range` allows.
const MAX_POINTS: i64 = 11_000;
/// The longest range a dashboard shows (the range menu's longest).
const MAX_RANGE_MS: i64 = 7 * 86_400_000;

#[derive(Debug, Deserialize)]
pub struct EnvironmentPath {
    #[allow(dead_code)]
    project: String,
    environment: String,
}

/// The page's state, as its query string carries it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct SignalsQuery {
    service: String,
    deployment: String,
    range: String,
}

/// The data's parameters: times in Unix seconds, the step in seconds.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct DataQuery {
    service: String,
    start: String,
    end: String,
    step: String,
}

/// One chart: what it shows, in which unit (`assets/signals.js` formats by it), and its query
/// for a route's series with a `rate` window.
struct Panel {
    id: &'static str,
    title: &'static str,
    unit: &'static str,
    query: fn(selector: &str, window: &str) -> String,
}

fn quantile(q: &str, selector: &str, window: &str) -> String {
    format!(
        "histogram_quantile({q}, sum by (version, le) (rate(opsloop_proxy_request_duration_seconds_bucket{selector}[{window}])))"
    )
}

const PANELS: [Panel; 6] = [
    Panel {
        id: "rate",
        title: "Request rate",
        unit: "reqps",
        query: |s, w| format!("sum by (version) (rate(opsloop_proxy_requests_total{s}[{w}]))"),
    },
    Panel {
        id: "errors",
        title: "Error ratio",
        unit: "ratio",
        query: |s, w| {
            format!(
                "sum by (version) (rate(opsloop_proxy_errors_total{s}[{w}])) / sum by (version) (rate(opsloop_proxy_requests_total{s}[{w}]))"
            )
        },
    },
    Panel { id: "p50", title: "Latency p50", unit: "seconds", query: |s, w| quantile("0.5", s, w) },
    Panel { id: "p95", title: "Latency p95", unit: "seconds", query: |s, w| quantile("0.95", s, w) },
    Panel { id: "p99", title: "Latency p99", unit: "seconds", query: |s, w| quantile("0.99", s, w) },
    Panel {
        id: "saturation",
        title: "Saturation",
        unit: "ratio",
        query: |s, _| format!("max by (version) (opsloop_proxy_saturation{s})"),
    },
];

/// The `service` label of a service's proxy series: its route name. Names are checked by
/// `validate_name` (no quote, backslash or slash), so the value needs no escaping in PromQL.
fn route_label(project: &str, environment: &str, service: &str) -> String {
    crate::deploy::route_name(project, environment, service)
}

/// The matchers every selector of the dashboard's queries gets: that route, and no series
/// that another project's label claims (a series with no `project` label, as the proxy's own
/// have, passes).
fn route_scope(project: &str, route: &str) -> Vec<Matcher> {
    let mut scope = vec![Matcher::equal("service", route)];
    if let Ok(own) = Matcher::regex("project", &format!("|{}", regex::escape(project)), false) {
        scope.push(own);
    }
    scope
}

/// The `rate` window for a step: at least a minute (four scrapes of the default 15 s) and at
/// least two steps, so every point of a long range covers the samples between it and the last.
fn rate_window(step_s: i64) -> String {
    format!("{}s", (2 * step_s).max(60))
}

fn checked_names(environment: &str, service: &str) -> Result<(), ApiError> {
    opsloop_core::validate_name("environment", environment).map_err(|e| ApiError::bad_request(e.to_string()))?;
    opsloop_core::validate_name("service", service).map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(())
}

/// The services deployed to `environment` at some time, newest first.
async fn services_of(state: &AppState, project_id: i64, environment: &str) -> Result<Vec<String>, ApiError> {
    let mut names: Vec<String> = Vec::new();
    for deployment in state.store.list_deployments(project_id, None, Some(environment), 500).await? {
        if !names.contains(&deployment.service) {
            names.push(deployment.service);
        }
    }
    Ok(names)
}

/// A deployment's start and end as markers on the charts, when they fall in `[start, end]`.
fn markers(deployments: &[opsloop_store::Deployment], start: i64, end: i64) -> Vec<(i64, String, &'static str, i64)> {
    let mut out = Vec::new();
    for d in deployments {
        let began = d.started_at.unwrap_or(d.created_at);
        if (start..=end).contains(&began) {
            out.push((began, format!("#{} {} started", d.id, d.version), "start", d.id));
        }
        if let Some(finished) = d.finished_at.filter(|f| (start..=end).contains(f)) {
            out.push((finished, format!("#{} {}", d.id, d.status.as_str()), "end", d.id));
        }
    }
    out.sort();
    out
}

pub async fn page(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    Path(path): Path<EnvironmentPath>,
    RawQuery(raw): RawQuery,
) -> Response {
    let project = &context.project;
    let query: SignalsQuery = raw.as_deref().and_then(|q| serde_urlencoded::from_str(q).ok()).unwrap_or_default();
    let environment = path.environment.as_str();
    if opsloop_core::validate_name("environment", environment).is_err() {
        return failure(ApiError::not_found("environment"));
    }
    let services = match services_of(&state, project.id, environment).await {
        Ok(services) => services,
        Err(error) => return failure(error),
    };
    let now = state.clock.now_ms();
    // A deployment's dashboard: its service, half an hour either side of it.
    let deployment = match query.deployment.trim() {
        "" => None,
        id => match id.parse::<i64>() {
            Ok(id) => match state.store.deployment(id).await {
                Ok(Some(d)) if d.project_id == project.id && d.environment == environment => Some(d),
                Ok(_) => return failure(ApiError::not_found("deployment")),
                Err(error) => return failure(error),
            },
            Err(_) => return failure(ApiError::bad_request("deployment must be a number")),
        },
    };
    let service = match (&deployment, query.service.trim()) {
        (Some(d), _) => d.service.clone(),
        (None, "") => services.first().cloned().unwrap_or_default(),
        (None, named) => named.to_owned(),
    };
    if !service.is_empty() && opsloop_core::validate_name("service", &service).is_err() {
        return failure(ApiError::bad_request("that is no service name"));
    }
    let range = if range_seconds(&query.range).is_some() { query.range.as_str() } else { DEFAULT_RANGE };
    let (start, end) = match &deployment {
        Some(d) => {
            let began = d.started_at.unwrap_or(d.created_at);
            let ended = d.finished_at.unwrap_or(now).max(began);
            (began - AROUND_DEPLOYMENT_MS, (ended + AROUND_DEPLOYMENT_MS).min(now).max(began + 60_000))
        }
        None => {
            let seconds = range_seconds(range).unwrap_or(3600) as i64;
            (now - seconds.min(MAX_RANGE_MS / 1000) * 1000, now)
        }
    };
    // A range that ends now moves with the clock when the page refreshes its charts.
    let live = end >= now;
    let history = if service.is_empty() {
        Vec::new()
    } else {
        state.store.list_deployments(project.id, Some(&service), Some(environment), 200).await.unwrap_or_default()
    };
    let marks = markers(&history, start, end);
    let base = format!("/projects/{}", project.name);
    let here = format!("{base}/environments/{environment}/signals");
    let route = route_label(&project.name, environment, &service);
    let data_url =
        format!("{here}/data?{}", serde_urlencoded::to_string([("service", service.as_str())]).unwrap_or_default());
    let step = auto_step_seconds(((end - start) / 1000).max(1) as u64) as i64;
    let window = rate_window(step);
    let selector = format!("{{service=\"{route}\"}}");
    let title = format!("{} · {environment} · signals", project.name);
    let unavailable = state.prometheus.storage(&state.config).err().map(|e| e.to_string());
    layout(&title, Some(&principal), "/projects", html! {
        (metrics_stylesheet())
        p { a href={ (base) "/environments" } { "← environments of " (project.name) } }
        h1 { "Golden signals" @if !service.is_empty() { " of " (service) } " in " (environment) }
        (error_box(unavailable.as_deref()))
        @if services.is_empty() {
            p.muted { "Nothing has been deployed to " (environment) " yet." }
        } @else {
            form.inline.signals-form method="get" action=(here) aria-label="Service and range" {
                label { "Service "
                    select name="service" {
                        @for name in &services { option value=(name) selected[*name == service] { (name) } }
                        @if !services.contains(&service) { option value=(service) selected { (service) } }
                    }
                }
                " "
                label { "Range "
                    select name="range" {
                        @for option in RANGES { option value=(option) selected[deployment.is_none() && option == range] { "last " (option) } }
                    }
                }
                " "
                button type="submit" { "Show" }
            }
        }
        p.hint {
            @match &deployment {
                Some(d) => {
                    "Half an hour either side of "
                    a href={ (base) "/deployments/" (d.id) } { "deployment #" (d.id) }
                    " (" (human_time(start)) " to " (human_time(end)) "). "
                }
                None => { "The last " (range) ". " }
            }
            "Through opsloop's proxy, one line per version (" code { "version#release" } "); dashed lines mark deployments. "
            "From the series " code { "opsloop_proxy_*" } " with " code { "service=\"" (route) "\"" } " that opsloop scrapes from its own " code { "/metrics" } "."
        }
        @if !service.is_empty() {
            noscript { p.error { "The charts need JavaScript." } }
            p #signals-error .error role="alert" hidden {}
            div #signals data-url=(data_url) data-start=(start as f64 / 1000.0) data-end=(end as f64 / 1000.0) data-live=(if live { "true" } else { "false" }) {
                @for panel in &PANELS {
                    section.signal-panel data-panel=(panel.id) data-unit=(panel.unit) data-title=(panel.title) {
                        h2 {
                            (panel.title) " "
                            @if principal.is_admin() {
                                a.small href=(graph_link(&(panel.query)(&selector, &window))) title="Open this query in the graph" { "query" }
                            }
                        }
                        p.muted.status role="status" {}
                        div.chart id={ "chart-" (panel.id) } {}
                        ul.legend id={ "legend-" (panel.id) } aria-label="Versions (select one to show it alone)" {}
                    }
                }
            }
            h2 { "Deployments in this range" }
            @if marks.is_empty() {
                p.muted { "None." }
            } @else {
                ol #signals-deployments {
                    @for (at, label, kind, id) in &marks {
                        li data-at=(*at as f64 / 1000.0) data-kind=(kind) data-label=(label) {
                            a href={ (base) "/deployments/" (id) } { (label) } " at " (human_time(*at))
                        }
                    }
                }
            }
            script src="/assets/chart.js" {}
            script src="/assets/signals.js" {}
        }
    })
    .into_response()
}

/// A refusal in Prometheus's envelope, which `chart.js` shows as it shows the API's.
fn refuse(status: StatusCode, kind: &str, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({"status": "error", "errorType": kind, "error": message.into()}))).into_response()
}

fn seconds_to_ms(text: &str) -> Option<i64> {
    text.trim().parse::<f64>().ok().filter(|s| s.is_finite()).map(|s| (s * 1000.0).round() as i64)
}

/// The dashboard's series: every panel's range result, as `query_range` answers it.
pub async fn data(
    State(state): State<AppState>,
    Extension(context): Extension<ProjectContext>,
    Path(path): Path<EnvironmentPath>,
    RawQuery(raw): RawQuery,
) -> Response {
    let bad = |message: &str| refuse(StatusCode::BAD_REQUEST, "bad_data", message);
    let Some(query) = raw.as_deref().and_then(|q| serde_urlencoded::from_str::<DataQuery>(q).ok()) else {
        return bad("service, start, end and step are expected");
    };
    if let Err(error) = checked_names(&path.environment, &query.service) {
        return bad(&error.message);
    }
    let (Some(start), Some(end)) = (seconds_to_ms(&query.start), seconds_to_ms(&query.end)) else {
        return bad("start and end must be Unix times in seconds");
    };
    let Some(step_s) = query.step.trim().parse::<i64>().ok().filter(|s| *s > 0) else {
        return bad("step must be a whole number of seconds");
    };
    if end < start || end - start > MAX_RANGE_MS {
        return bad("the range must end after it starts and span at most 7 days");
    }
    if (end - start) / (step_s * 1000) > MAX_POINTS {
        return bad("exceeded maximum resolution of 11,000 points per timeseries; try a larger step");
    }
    let storage: std::sync::Arc<dyn Queryable> = match state.prometheus.storage(&state.config) {
        Ok(tsdb) => tsdb.clone(),
        Err(error) => return refuse(StatusCode::SERVICE_UNAVAILABLE, "unavailable", error.to_string()),
    };
    let route = route_label(&context.project.name, &path.environment, &query.service);
    let view = Scoped { inner: storage, scope: route_scope(&context.project.name, &route) };
    let selector = format!("{{service=\"{route}\"}}");
    let window = rate_window(step_s);
    let engine = state.prometheus.engine.clone();
    // Evaluation is CPU work that may take a while: off the async threads, all six at once.
    let evaluated = tokio::task::spawn_blocking(move || -> Result<Vec<Value>, String> {
        PANELS
            .iter()
            .map(|panel| {
                let text = (panel.query)(&selector, &window);
                let expr = opsloop_metrics::promql::parse(&text).map_err(|e| e.to_string())?;
                let value = engine.range(&view, &expr, start, end, step_s * 1000).map_err(|e| e.to_string())?;
                Ok(json!({"id": panel.id, "query": text, "result": crate::prometheus::api::value_json(&value)}))
            })
            .collect()
    })
    .await;
    match evaluated {
        Ok(Ok(panels)) => axum::Json(json!({"status": "success", "data": {"panels": panels}})).into_response(),
        Ok(Err(error)) => refuse(StatusCode::UNPROCESSABLE_ENTITY, "execution", error),
        Err(error) => refuse(StatusCode::INTERNAL_SERVER_ERROR, "internal", error.to_string()),
    }
}

/// The environment page's link to a service's signals.
pub(super) fn link(project: &str, environment: &str, service: &str, deployment: Option<i64>) -> String {
    let mut pairs = vec![("service", service.to_owned())];
    if let Some(id) = deployment {
        pairs.push(("deployment", id.to_string()));
    }
    format!(
        "/projects/{project}/environments/{environment}/signals?{}",
        serde_urlencoded::to_string(&pairs).unwrap_or_default()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use opsloop_metrics::labels::{Labels, matches_all};

    #[test]
    fn the_scope_keeps_one_route_and_no_other_projects_series() {
        let scope = route_scope("shop", "shop/production/web");
        let series = |pairs: &[(&str, &str)]| Labels::from_pairs(pairs.iter().copied());
        assert!(matches_all(&scope, &series(&[("service", "shop/production/web"), ("version", "1#2")])));
        assert!(matches_all(&scope, &series(&[("service", "shop/production/web"), ("project", "shop")])));
        assert!(!matches_all(&scope, &series(&[("service", "shop/production/web"), ("project", "other")])));
        assert!(!matches_all(&scope, &series(&[("service", "shop/staging/web")])));
        assert!(!matches_all(&scope, &series(&[("service", "shop/production/web2")])));
    }

    #[test]
    fn every_panel_query_parses() {
        for panel in &PANELS {
            let text = (panel.query)("{service=\"shop/production/web\"}", &rate_window(14));
            assert!(opsloop_metrics::promql::parse(&text).is_ok(), "{}: {text}", panel.id);
        }
        assert_eq!(rate_window(14), "60s");
        assert_eq!(rate_window(120), "240s");
    }

    #[test]
    fn markers_fall_in_the_range() {
        let deployment = |id, started: Option<i64>, finished: Option<i64>| opsloop_store::Deployment {
            id,
            project_id: 1,
            environment: "production".into(),
            service: "web".into(),
            release_id: id,
            previous_release_id: None,
            strategy: "blue-green".into(),
            status: opsloop_core::DeploymentStatus::Success,
            triggered_by: "admin".into(),
            reason: None,
            timeline: String::new(),
            created_at: started.unwrap_or(0),
            started_at: started,
            finished_at: finished,
            version: format!("v{id}"),
            commit_sha: String::new(),
        };
        let all =
            [deployment(1, Some(100), Some(200)), deployment(2, Some(900), None), deployment(3, Some(5), Some(50))];
        let marks = markers(&all, 150, 1000);
        let kinds: Vec<(i64, &str)> = marks.iter().map(|m| (m.0, m.2)).collect();
        assert_eq!(kinds, vec![(200, "end"), (900, "start")]);
        assert_eq!(marks[0].1, "#1 success");
    }

    #[test]
    fn links_carry_service_and_deployment() {
        assert_eq!(
            link("shop", "production", "web", None),
            "/projects/shop/environments/production/signals?service=web"
        );
        assert_eq!(
            link("shop", "production", "web", Some(7)),
            "/projects/shop/environments/production/signals?service=web&deployment=7"
        );
    }
}
