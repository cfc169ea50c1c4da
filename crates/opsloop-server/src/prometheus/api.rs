//! Prometheus's HTTP API (`/prometheus/api/v1/...`), answering in Prometheus's own JSON
//! (`status`, `data`, `errorType`, `error`) so Grafana, `promtool` and scripts read it as they
//! read Prometheus. GET and POST (form bodies) both work, as in Prometheus.
//!
//! Handlers translate: parameters in, the engine's answer out. Every read goes through the
//! caller's scope (see `super::scope`).

use std::fmt::Write as _;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use opsloop_metrics::labels::{Labels, Matcher};
use opsloop_metrics::promql::{self, PromqlError, QueryValue};
use opsloop_metrics::storage::{self, Queryable, Scoped, Timestamp};
use serde_json::{Value, json};

use super::MetricsError;
use crate::auth::{Access, Principal};
use crate::routes::{RouteTable, Surface};
use crate::state::AppState;

pub fn routes(table: RouteTable) -> RouteTable {
    use Access::{Admin, Authenticated, Public};
    let api = Surface::Compat;
    let mut t = table;
    for method in [Method::GET, Method::POST] {
        t = t
            .add(api, method.clone(), "/prometheus/api/v1/query", Authenticated, query)
            .add(api, method.clone(), "/prometheus/api/v1/query_range", Authenticated, query_range)
            .add(api, method.clone(), "/prometheus/api/v1/series", Authenticated, series)
            .add(api, method.clone(), "/prometheus/api/v1/labels", Authenticated, labels)
            .add(api, method.clone(), "/prometheus/api/v1/format_query", Authenticated, format_query)
            .add(api, method.clone(), "/prometheus/api/v1/query_exemplars", Authenticated, exemplars);
    }
    t.add(api, Method::GET, "/prometheus/api/v1/label/{name}/values", Authenticated, label_values)
        .add(api, Method::GET, "/prometheus/api/v1/metadata", Authenticated, metadata)
        .add(api, Method::GET, "/prometheus/api/v1/status/buildinfo", Authenticated, buildinfo)
        .add(api, Method::GET, "/prometheus/api/v1/status/runtimeinfo", Authenticated, runtimeinfo)
        .add(api, Method::GET, "/prometheus/api/v1/status/flags", Authenticated, flags)
        .add(api, Method::GET, "/prometheus/api/v1/status/tsdb", Admin, tsdb_status)
        .add(api, Method::GET, "/prometheus/api/v1/status/config", Admin, config)
        .add(api, Method::POST, "/prometheus/api/v1/write", Admin, write)
        .add(Surface::Ops, Method::GET, "/prometheus/-/healthy", Public, healthy)
        .add(Surface::Ops, Method::GET, "/prometheus/-/ready", Public, ready)
        .add(api, Method::POST, "/prometheus/-/reload", Admin, reload)
        .add(api, Method::GET, "/prometheus/api/v1/targets", Authenticated, targets)
        .add(api, Method::GET, "/prometheus/api/v1/rules", Authenticated, rules)
        .add(api, Method::GET, "/prometheus/api/v1/alerts", Authenticated, alerts)
        .add(api, Method::GET, "/prometheus/api/v1/alertmanagers", Admin, alertmanagers)
}

/// An answer in Prometheus's error envelope, with its status codes: 400 for bad input, 422 for
/// a query that cannot be evaluated, 503 for a timeout or an unavailable store.
struct PromError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl PromError {
    fn bad_data(message: impl Into<String>) -> Self {
        PromError { status: StatusCode::BAD_REQUEST, kind: "bad_data", message: message.into() }
    }
}

impl From<PromqlError> for PromError {
    fn from(e: PromqlError) -> Self {
        let status = match &e {
            PromqlError::Parse(_) => StatusCode::BAD_REQUEST,
            PromqlError::Timeout(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        PromError { status, kind: e.error_type(), message: e.to_string() }
    }
}

impl From<storage::StorageError> for PromError {
    fn from(e: storage::StorageError) -> Self {
        PromError { status: StatusCode::UNPROCESSABLE_ENTITY, kind: "execution", message: e.to_string() }
    }
}

impl From<MetricsError> for PromError {
    fn from(e: MetricsError) -> Self {
        PromError { status: StatusCode::SERVICE_UNAVAILABLE, kind: "unavailable", message: e.to_string() }
    }
}

impl From<opsloop_store::StoreError> for PromError {
    fn from(e: opsloop_store::StoreError) -> Self {
        tracing::error!(error = %e, "metrics API: store error");
        PromError { status: StatusCode::SERVICE_UNAVAILABLE, kind: "internal", message: "internal error".into() }
    }
}

impl IntoResponse for PromError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(json!({"status": "error", "errorType": self.kind, "error": self.message})))
            .into_response()
    }
}

fn success(data: Value) -> Response {
    axum::Json(json!({"status": "success", "data": data})).into_response()
}

/// Query-string and form parameters together, in order (`match[]` repeats).
struct Params(Vec<(String, String)>);

impl Params {
    fn read(uri: &Uri, body: &Bytes) -> Result<Params, PromError> {
        let mut all: Vec<(String, String)> = Vec::new();
        if let Some(q) = uri.query() {
            all.extend(
                serde_urlencoded::from_str::<Vec<(String, String)>>(q)
                    .map_err(|e| PromError::bad_data(e.to_string()))?,
            );
        }
        if !body.is_empty() {
            all.extend(
                serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
                    .map_err(|e| PromError::bad_data(format!("invalid form body: {e}")))?,
            );
        }
        Ok(Params(all))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }

    fn time(&self, name: &str, default: Timestamp) -> Result<Timestamp, PromError> {
        match self.get(name) {
            None | Some("") => Ok(default),
            Some(v) => parse_time(v).ok_or_else(|| {
                PromError::bad_data(format!("invalid parameter \"{name}\": cannot parse \"{v}\" to a valid timestamp"))
            }),
        }
    }
}

/// A time as Prometheus's API takes it: Unix seconds (with a fraction) or RFC 3339.
pub fn parse_time(s: &str) -> Option<Timestamp> {
    if let Ok(secs) = s.parse::<f64>() {
        if !secs.is_finite() {
            return None;
        }
        return Some((secs * 1000.0).round() as i64);
    }
    let ts: jiff::Timestamp = s.parse().ok()?;
    Some(ts.as_millisecond())
}

/// A duration as Prometheus's API takes it: seconds (with a fraction) or `1m30s`.
pub fn parse_duration_ms(s: &str) -> Option<i64> {
    if let Ok(secs) = s.parse::<f64>() {
        return secs.is_finite().then(|| (secs * 1000.0).round() as i64);
    }
    opsloop_metrics::config::parse_duration(s).and_then(|d| i64::try_from(d.as_millis()).ok())
}

fn now_ms(state: &AppState) -> Timestamp {
    state.clock.now_ms()
}

/// The storage as this caller may see it; `None` when they may see nothing.
async fn scoped(state: &AppState, principal: &Principal) -> Result<Option<Scoped>, PromError> {
    let storage: std::sync::Arc<dyn Queryable> = state.prometheus.storage(&state.config)?.clone();
    let Some(scope) = super::scope(&state.store, principal).await? else { return Ok(None) };
    Ok(Some(Scoped { inner: storage, scope }))
}

/// Runs a query off the async threads: evaluation is CPU work that may take seconds.
async fn evaluate<F>(work: F) -> Result<QueryValue, PromError>
where
    F: FnOnce() -> Result<QueryValue, PromqlError> + Send + 'static,
{
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => Ok(result?),
        Err(e) => {
            Err(PromError { status: StatusCode::INTERNAL_SERVER_ERROR, kind: "internal", message: e.to_string() })
        }
    }
}

/// How Prometheus writes sample values (Go's `strconv.FormatFloat(v, 'f', -1, 64)`): the
/// engine's own formatting, which `count_values` labels use too.
pub use opsloop_metrics::promql::format_value;

fn ts_json(t: Timestamp) -> Value {
    // Seconds with millisecond precision, a JSON number as Prometheus writes it.
    let secs = t as f64 / 1000.0;
    serde_json::Number::from_f64(secs).map(Value::Number).unwrap_or(Value::Null)
}

fn labels_json(labels: &Labels) -> Value {
    Value::Object(labels.iter().map(|l| (l.name.clone(), Value::String(l.value.clone()))).collect())
}

pub fn value_json(value: &QueryValue) -> Value {
    match value {
        QueryValue::Scalar { t, v } => json!({"resultType": "scalar", "result": [ts_json(*t), format_value(*v)]}),
        QueryValue::String { t, v } => json!({"resultType": "string", "result": [ts_json(*t), v]}),
        QueryValue::Vector(samples) => json!({
            "resultType": "vector",
            "result": samples.iter().map(|s| json!({
                "metric": labels_json(&s.labels),
                "value": [ts_json(s.t), format_value(s.v)],
            })).collect::<Vec<_>>(),
        }),
        QueryValue::Matrix(series) => json!({
            "resultType": "matrix",
            "result": series.iter().map(|s| json!({
                "metric": labels_json(&s.labels),
                "values": s.samples.iter().map(|p| json!([ts_json(p.t), format_value(p.v)])).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        }),
    }
}

fn empty_result(range: bool) -> Value {
    json!({"resultType": if range { "matrix" } else { "vector" }, "result": []})
}

async fn query(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    uri: Uri,
    body: Bytes,
) -> Result<Response, PromError> {
    let params = Params::read(&uri, &body)?;
    let q = params
        .get("query")
        .ok_or_else(|| PromError::bad_data("invalid parameter \"query\": query must not be empty"))?;
    let t = params.time("time", now_ms(&state))?;
    promql::parse(q)?;
    let Some(view) = scoped(&state, &principal).await? else {
        return Ok(success(empty_result(false)));
    };
    let engine = state.prometheus.engine.clone();
    let q = q.to_owned();
    let value = evaluate(move || engine.instant(&view, &promql::parse(&q)?, t)).await?;
    Ok(success(value_json(&value)))
}

async fn query_range(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    uri: Uri,
    body: Bytes,
) -> Result<Response, PromError> {
    let params = Params::read(&uri, &body)?;
    let q = params
        .get("query")
        .ok_or_else(|| PromError::bad_data("invalid parameter \"query\": query must not be empty"))?;
    let start = params
        .get("start")
        .and_then(parse_time)
        .ok_or_else(|| PromError::bad_data("invalid parameter \"start\": cannot parse to a valid timestamp"))?;
    let end = params
        .get("end")
        .and_then(parse_time)
        .ok_or_else(|| PromError::bad_data("invalid parameter \"end\": cannot parse to a valid timestamp"))?;
    let step = params
        .get("step")
        .and_then(parse_duration_ms)
        .ok_or_else(|| PromError::bad_data("invalid parameter \"step\": cannot parse to a valid duration"))?;
    promql::parse(q)?;
    let Some(view) = scoped(&state, &principal).await? else {
        return Ok(success(empty_result(true)));
    };
    let engine = state.prometheus.engine.clone();
    let q = q.to_owned();
    let value = evaluate(move || engine.range(&view, &promql::parse(&q)?, start, end, step)).await?;
    Ok(success(value_json(&value)))
}

/// `match[]` selectors, each parsed to its matchers.
fn selectors(params: &Params) -> Result<Vec<Vec<Matcher>>, PromError> {
    let mut out = Vec::new();
    for m in params.all("match[]") {
        let expr = promql::parse(m)?;
        let promql_parser::parser::Expr::VectorSelector(vs) = expr else {
            return Err(PromError::bad_data(format!("invalid parameter \"match[]\": {m} is not a series selector")));
        };
        out.push(promql::selector_matchers(&vs)?);
    }
    Ok(out)
}

fn time_bounds(params: &Params) -> Result<(Timestamp, Timestamp), PromError> {
    Ok((params.time("start", i64::MIN / 2)?, params.time("end", i64::MAX / 2)?))
}

async fn series(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    uri: Uri,
    body: Bytes,
) -> Result<Response, PromError> {
    let params = Params::read(&uri, &body)?;
    let sets = selectors(&params)?;
    if sets.is_empty() {
        return Err(PromError::bad_data("no match[] parameter provided"));
    }
    let (start, end) = time_bounds(&params)?;
    let Some(view) = scoped(&state, &principal).await? else { return Ok(success(json!([]))) };
    let mut found = std::collections::BTreeSet::new();
    for matchers in &sets {
        found.extend(view.series(matchers, start, end)?);
    }
    Ok(success(Value::Array(found.iter().map(labels_json).collect())))
}

async fn labels(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    uri: Uri,
    body: Bytes,
) -> Result<Response, PromError> {
    let params = Params::read(&uri, &body)?;
    let sets = selectors(&params)?;
    let (start, end) = time_bounds(&params)?;
    let Some(view) = scoped(&state, &principal).await? else { return Ok(success(json!([]))) };
    let mut names = std::collections::BTreeSet::new();
    if sets.is_empty() {
        names.extend(storage::label_names(&view, &[], start, end)?);
    }
    for matchers in &sets {
        names.extend(storage::label_names(&view, matchers, start, end)?);
    }
    Ok(success(json!(names)))
}

async fn label_values(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    uri: Uri,
) -> Result<Response, PromError> {
    let params = Params::read(&uri, &Bytes::new())?;
    let sets = selectors(&params)?;
    let (start, end) = time_bounds(&params)?;
    let Some(view) = scoped(&state, &principal).await? else { return Ok(success(json!([]))) };
    let mut values = std::collections::BTreeSet::new();
    if sets.is_empty() {
        values.extend(storage::label_values(&view, &name, &[], start, end)?);
    }
    for matchers in &sets {
        values.extend(storage::label_values(&view, &name, matchers, start, end)?);
    }
    Ok(success(json!(values)))
}

/// Remote write in (protobuf + snappy, version 1): how a Prometheus, an agent or another
/// opsloop forwards its samples here. 204 once the samples are stored; 400 for a body that
/// cannot be decoded (the sender must not retry it).
async fn write(State(state): State<AppState>, body: Bytes) -> Result<Response, PromError> {
    // Through the appender, so samples received are forwarded too, as Prometheus does.
    let storage = state.prometheus.appender(&state.config)?;
    // Snappy compresses samples about tenfold; more than 64 MiB decoded is not a real batch.
    let samples = opsloop_metrics::remote::decode(&body, 64 << 20).map_err(|e| PromError::bad_data(e.to_string()))?;
    let stored = tokio::task::spawn_blocking(move || storage.append(&samples)).await;
    match stored {
        Ok(Ok(())) => Ok(StatusCode::NO_CONTENT.into_response()),
        Ok(Err(
            e @ (storage::StorageError::OutOfOrder
            | storage::StorageError::DuplicateSample
            | storage::StorageError::OutOfBounds),
        )) => Err(PromError::bad_data(e.to_string())),
        Ok(Err(e)) => Err(e.into()),
        Err(e) => {
            Err(PromError { status: StatusCode::INTERNAL_SERVER_ERROR, kind: "internal", message: e.to_string() })
        }
    }
}

async fn format_query(uri: Uri, body: Bytes) -> Result<Response, PromError> {
    let params = Params::read(&uri, &body)?;
    let q = params
        .get("query")
        .ok_or_else(|| PromError::bad_data("invalid parameter \"query\": query must not be empty"))?;
    Ok(success(Value::String(promql::parse(q)?.to_string())))
}

async fn exemplars() -> Response {
    // Exemplars are not stored; Prometheus answers the same when none were scraped.
    success(json!([]))
}

async fn metadata() -> Response {
    success(json!({}))
}

async fn buildinfo() -> Response {
    success(json!({
        "version": "2.42.0",
        "revision": env!("CARGO_PKG_VERSION"),
        "branch": "opsloop",
        "buildUser": "opsloop",
        "buildDate": "",
        "goVersion": "",
    }))
}

async fn runtimeinfo(State(state): State<AppState>) -> Response {
    let reload = state.prometheus.reload_status();
    let start =
        jiff::Timestamp::from_millisecond(state.prometheus.started_ms).map(|t| t.to_string()).unwrap_or_default();
    success(json!({
        "startTime": start,
        "CWD": std::env::current_dir().map(|p| p.display().to_string()).unwrap_or_default(),
        "reloadConfigSuccess": reload.success,
        "lastConfigTime": jiff::Timestamp::from_millisecond(reload.at_ms).map(|t| t.to_string()).unwrap_or_default(),
        "corruptionCount": 0,
        "goroutineCount": 0,
        "GOMAXPROCS": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "GOGC": "",
        "GODEBUG": "",
        "storageRetention": format!("{}s", state.config.metrics.retention_seconds),
    }))
}

async fn tsdb_status(State(state): State<AppState>) -> Result<Response, PromError> {
    let stats = state.prometheus.storage(&state.config)?.stats();
    let pairs =
        |v: &[(String, usize)]| v.iter().map(|(name, value)| json!({"name": name, "value": value})).collect::<Vec<_>>();
    Ok(success(json!({
        "headStats": {
            "numSeries": stats.num_series,
            "chunkCount": stats.num_chunks,
            "minTime": stats.head_min_time.unwrap_or(0),
            "maxTime": stats.head_max_time.unwrap_or(0),
        },
        "seriesCountByMetricName": pairs(&stats.series_count_by_metric_name),
        "labelValueCountByLabelName": pairs(&stats.label_value_count_by_label_name),
        "memoryInBytesByLabelName": [],
        "seriesCountByLabelValuePair": pairs(&stats.series_count_by_label_value_pair),
    })))
}

async fn flags(State(state): State<AppState>) -> Response {
    success(json!({
        "storage.tsdb.retention.time": format!("{}s", state.config.metrics.retention_seconds),
        "query.lookback-delta": "5m",
        "query.max-samples": state.prometheus.engine.options.limits.max_samples.to_string(),
    }))
}

async fn config(State(state): State<AppState>) -> Response {
    success(json!({"yaml": state.prometheus.reload_status().yaml}))
}

/// Reloads the configuration file now, answering with the outcome (500 and the reason when
/// the new file is invalid; the running configuration then stays, as Prometheus keeps it).
async fn reload(State(state): State<AppState>) -> Response {
    let runtime = match super::runtime::started(&state) {
        Ok(runtime) => runtime,
        Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    };
    match super::runtime::reload(&state, &runtime).await {
        Ok(()) => StatusCode::OK.into_response(),
        Err(error) => {
            (StatusCode::INTERNAL_SERVER_ERROR, format!("failed to reload config: {error}\n")).into_response()
        }
    }
}

/// Rule groups with their rules' state. Rules are configuration shared by the instance:
/// every signed-in user reads them, as anyone with Prometheus's UI does; the alerts in them are
/// filtered by the caller's scope.
async fn rules(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Response, PromError> {
    let Some(scope) = super::scope(&state.store, &principal).await? else {
        return Ok(success(json!({"groups": []})));
    };
    let groups = state.prometheus.runtime().map(|r| r.rules.groups()).unwrap_or_default();
    let mut groups = serde_json::to_value(groups).unwrap_or_else(|_| json!([]));
    retain_visible_alerts(&mut groups, &scope);
    Ok(success(json!({"groups": groups})))
}

/// Drops the alerts whose labels fall outside the caller's scope, wherever they sit.
fn retain_visible_alerts(value: &mut Value, scope: &[Matcher]) {
    match value {
        Value::Object(map) => {
            if let Some(Value::Array(alerts)) = map.get_mut("alerts") {
                alerts.retain(|a| {
                    let labels = Labels::from_pairs(
                        a["labels"]
                            .as_object()
                            .into_iter()
                            .flatten()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned())),
                    );
                    opsloop_metrics::labels::matches_all(scope, &labels)
                });
            }
            for v in map.values_mut() {
                retain_visible_alerts(v, scope);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| retain_visible_alerts(v, scope)),
        _ => {}
    }
}

async fn alerts(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<Response, PromError> {
    let Some(scope) = super::scope(&state.store, &principal).await? else {
        return Ok(success(json!({"alerts": []})));
    };
    let alerts = state.prometheus.runtime().map(|r| r.rules.alerts()).unwrap_or_default();
    let mut value = json!({"alerts": serde_json::to_value(alerts).unwrap_or_else(|_| json!([]))});
    retain_visible_alerts(&mut value, &scope);
    Ok(success(value))
}

async fn alertmanagers(State(state): State<AppState>) -> Response {
    let urls = state.prometheus.runtime().map(|r| r.notifier.alertmanagers()).unwrap_or_default();
    let active: Vec<Value> = urls.iter().map(|u| json!({"url": u})).collect();
    success(json!({"activeAlertmanagers": active, "droppedAlertmanagers": []}))
}

/// The scrape targets, as `/api/v1/targets` lists them. A member of some projects sees the
/// targets whose labels name one of them; an admin sees all.
async fn targets(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    uri: Uri,
) -> Result<Response, PromError> {
    let params = Params::read(&uri, &Bytes::new())?;
    let wanted = params.get("state").unwrap_or("any");
    let Some(scope) = super::scope(&state.store, &principal).await? else {
        return Ok(success(json!({"activeTargets": [], "droppedTargets": []})));
    };
    let visible = |labels: &Labels| opsloop_metrics::labels::matches_all(&scope, labels);
    let snapshot = state.prometheus.runtime().map(|r| r.scraper.targets()).unwrap_or_default();
    let rfc3339 = |ms: Option<i64>| {
        ms.and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
            .map(|t| t.to_string())
            .unwrap_or_else(|| "0001-01-01T00:00:00Z".to_owned())
    };
    let active: Vec<Value> = if matches!(wanted, "any" | "active") {
        snapshot
            .active
            .iter()
            .filter(|t| visible(&t.labels))
            .map(|t| {
                json!({
                    "discoveredLabels": labels_json(&t.discovered_labels),
                    "labels": labels_json(&t.labels),
                    "scrapePool": t.scrape_pool,
                    "scrapeUrl": t.scrape_url,
                    "globalUrl": t.scrape_url,
                    "lastError": t.last_error.clone().unwrap_or_default(),
                    "lastScrape": rfc3339(t.last_scrape),
                    "lastScrapeDuration": t.last_scrape_duration.as_secs_f64(),
                    "health": t.health.as_str(),
                    "scrapeInterval": format!("{}s", t.scrape_interval.as_secs()),
                    "scrapeTimeout": format!("{}s", t.scrape_timeout.as_secs()),
                })
            })
            .collect()
    } else {
        Vec::new()
    };
    let dropped: Vec<Value> = if matches!(wanted, "any" | "dropped") {
        snapshot
            .dropped
            .iter()
            .filter(|t| visible(&t.discovered_labels))
            .map(|t| json!({"discoveredLabels": labels_json(&t.discovered_labels)}))
            .collect()
    } else {
        Vec::new()
    };
    Ok(success(json!({"activeTargets": active, "droppedTargets": dropped})))
}

async fn healthy() -> impl IntoResponse {
    (StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], "Prometheus Server is Healthy.\n")
}

async fn ready(State(state): State<AppState>) -> Response {
    match state.prometheus.storage(&state.config) {
        Ok(_) => (StatusCode::OK, "Prometheus Server is Ready.\n").into_response(),
        Err(e) => {
            let mut body = String::new();
            let _ = writeln!(body, "Service Unavailable: {e}");
            (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_durations_as_prometheus_reads_them() {
        assert_eq!(parse_time("1435781451.781"), Some(1_435_781_451_781));
        assert_eq!(parse_time("2015-07-01T20:10:51.781Z"), Some(1_435_781_451_781));
        assert_eq!(parse_time("nope"), None);
        assert_eq!(parse_duration_ms("15"), Some(15_000));
        assert_eq!(parse_duration_ms("1m30s"), Some(90_000));
        assert_eq!(parse_duration_ms("0.5"), Some(500));
        assert_eq!(parse_duration_ms("1x"), None);
    }

    #[test]
    fn values_as_go_writes_them() {
        assert_eq!(format_value(1.0), "1");
        assert_eq!(format_value(0.1), "0.1");
        assert_eq!(format_value(1e21), "1000000000000000000000");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
    }
}
