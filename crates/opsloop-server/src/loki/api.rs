//! Loki's HTTP API (`/loki/api/v1/...`): push in (JSON, or Promtail's snappy protobuf; gzip
//! bodies too), LogQL queries, labels, series and index stats out, in Loki's own JSON, so
//! Grafana's Loki data source, Promtail, Grafana Agent/Alloy and `logcli` talk to opsloop as to
//! Loki. Errors are Loki's: a plain-text message, 400 for bad input (parse errors included).
//!
//! Every read goes through the caller's [`Scope`]; every push through [`super::check_push`].

use std::io::Read as _;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::handler::Handler as _;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use opsloop_logs::eval::{EvalError, QueryResult};
use opsloop_logs::labels::Matcher;
use opsloop_logs::logql::{format_query as format_expr, parse_expr, parse_matchers};
use opsloop_logs::push::{PushError, PushLimits, decode_json, decode_protobuf};
use opsloop_logs::{Direction, Labels, QueryParams, StoreError as LogStoreError};
use serde_json::{Value, json};

use super::{LogsError, PushDenied, Scope, ScopedSource, TENANT};
use crate::auth::{Access, Principal};
use crate::routes::{RouteTable, Surface};
use crate::state::AppState;

/// The largest push body accepted, compressed. Promtail sends batches of 1 MiB (before
/// snappy); an agent catching up after an outage may send bigger ones.
const PUSH_BODY_BYTES: usize = 16 << 20;

/// Log queries return at most this many lines when `limit` is not given (Loki's default).
const DEFAULT_LIMIT: usize = 100;

/// The most lines one log query may ask for (Loki's `max_entries_limit_per_query`): results
/// are built in memory.
const MAX_LIMIT: usize = 5000;

/// How far back queries look when `start` is not given (Loki's default).
const DEFAULT_SINCE_NS: i64 = 3_600 * 1_000_000_000;

/// How far back `/labels`, `/label/…/values` and `/series` look when `start` is not given
/// (Loki's default).
const DEFAULT_INDEX_SINCE_NS: i64 = 6 * 3_600 * 1_000_000_000;

pub fn routes(table: RouteTable) -> RouteTable {
    use Access::{Authenticated, AuthenticatedWrite, Public};
    let api = Surface::Compat;
    let mut t = table.add(
        api,
        Method::POST,
        "/loki/api/v1/push",
        AuthenticatedWrite,
        // Pushes are bigger than API bodies; the decoders bound what they decompress.
        push.layer(DefaultBodyLimit::max(PUSH_BODY_BYTES)),
    );
    // Grafana sends long queries as form bodies; both methods read.
    for method in [Method::GET, Method::POST] {
        t = t
            .add(api, method.clone(), "/loki/api/v1/query", Authenticated, query)
            .add(api, method.clone(), "/loki/api/v1/query_range", Authenticated, query_range)
            .add(api, method.clone(), "/loki/api/v1/series", Authenticated, series);
    }
    t.add(api, Method::GET, "/loki/api/v1/labels", Authenticated, labels)
        // The older name of `/labels`, which older Grafana and logcli versions call.
        .add(api, Method::GET, "/loki/api/v1/label", Authenticated, labels)
        .add(api, Method::GET, "/loki/api/v1/label/{name}/values", Authenticated, label_values)
        .add(api, Method::GET, "/loki/api/v1/index/stats", Authenticated, index_stats)
        .add(api, Method::GET, "/loki/api/v1/format_query", Authenticated, format_query)
        .add(api, Method::GET, "/loki/api/v1/status/buildinfo", Authenticated, buildinfo)
        .add(Surface::Ops, Method::GET, "/loki/ready", Public, ready)
}

/// An error as Loki answers it: the message as plain text.
#[derive(Debug)]
pub struct LokiError {
    status: StatusCode,
    message: String,
}

impl LokiError {
    fn bad_request(message: impl Into<String>) -> Self {
        LokiError { status: StatusCode::BAD_REQUEST, message: message.into() }
    }

    fn internal(message: impl Into<String>) -> Self {
        LokiError { status: StatusCode::INTERNAL_SERVER_ERROR, message: message.into() }
    }
}

impl IntoResponse for LokiError {
    fn into_response(self) -> Response {
        (self.status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], format!("{}\n", self.message))
            .into_response()
    }
}

impl From<LogsError> for LokiError {
    fn from(e: LogsError) -> Self {
        LokiError { status: StatusCode::SERVICE_UNAVAILABLE, message: e.to_string() }
    }
}

impl From<opsloop_store::StoreError> for LokiError {
    fn from(e: opsloop_store::StoreError) -> Self {
        tracing::error!(error = %e, "logs API: store error");
        LokiError::internal("internal error")
    }
}

impl From<EvalError> for LokiError {
    fn from(e: EvalError) -> Self {
        match e {
            // The caller's query is wrong (syntax, a pipeline error, a step too small): Loki
            // answers 400 for all of them; only reading the store is the server's fault.
            EvalError::Source(e) => {
                tracing::error!(error = %e, "logs API: reading the store failed");
                LokiError::internal(e.to_string())
            }
            e => LokiError::bad_request(e.to_string()),
        }
    }
}

impl From<opsloop_logs::logql::ParseError> for LokiError {
    fn from(e: opsloop_logs::logql::ParseError) -> Self {
        LokiError::bad_request(e.to_string())
    }
}

fn success(data: Value) -> Response {
    axum::Json(json!({"status": "success", "data": data})).into_response()
}

/// Query-string and form parameters together, in order (`match[]` repeats).
struct Params(Vec<(String, String)>);

impl Params {
    fn read(uri: &Uri, body: &Bytes) -> Result<Params, LokiError> {
        let mut all: Vec<(String, String)> = Vec::new();
        if let Some(q) = uri.query() {
            all.extend(
                serde_urlencoded::from_str::<Vec<(String, String)>>(q)
                    .map_err(|e| LokiError::bad_request(e.to_string()))?,
            );
        }
        if !body.is_empty() {
            all.extend(
                serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
                    .map_err(|e| LokiError::bad_request(format!("invalid form body: {e}")))?,
            );
        }
        Ok(Params(all))
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty())
    }

    fn all(&self, name: &str) -> Vec<&str> {
        self.0.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
    }

    fn time(&self, name: &str, default: i64) -> Result<i64, LokiError> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => parse_time(v).ok_or_else(|| {
                LokiError::bad_request(format!("invalid {name} parameter: cannot parse \"{v}\" to a valid timestamp"))
            }),
        }
    }

    fn query(&self) -> Result<&str, LokiError> {
        self.get("query").ok_or_else(|| LokiError::bad_request("query parameter is required"))
    }

    /// `start`/`end` (or `since` back from `end`), as Loki defaults them.
    fn range(&self, now: i64, default_since: i64) -> Result<(i64, i64), LokiError> {
        let end = self.time("end", now)?;
        let since = match self.get("since") {
            None => default_since,
            Some(v) => parse_duration(v)
                .ok_or_else(|| LokiError::bad_request(format!("invalid since parameter: cannot parse \"{v}\"")))?,
        };
        let start = self.time("start", end.saturating_sub(since))?;
        if end < start {
            return Err(LokiError::bad_request("end timestamp must not be before or equal to start time"));
        }
        Ok((start, end))
    }

    fn limit(&self) -> Result<usize, LokiError> {
        match self.get("limit") {
            None => Ok(DEFAULT_LIMIT),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n > MAX_LIMIT => Err(LokiError::bad_request(format!(
                    "max entries limit per query exceeded, limit > max_entries_limit_per_query ({n} > {MAX_LIMIT})"
                ))),
                // 0 would mean no limit to the evaluator; Loki refuses it.
                Ok(0) | Err(_) => Err(LokiError::bad_request(format!("invalid limit: \"{v}\""))),
                Ok(n) => Ok(n),
            },
        }
    }

    fn direction(&self) -> Result<Direction, LokiError> {
        match self.get("direction").map(str::to_ascii_lowercase).as_deref() {
            None | Some("backward") => Ok(Direction::Backward),
            Some("forward") => Ok(Direction::Forward),
            Some(v) => Err(LokiError::bad_request(format!("invalid direction \"{v}\": use forward or backward"))),
        }
    }
}

/// A time as Loki's API takes it: Unix nanoseconds, Unix seconds (10 digits or fewer, or with
/// a fraction), or RFC 3339.
pub fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i64>() {
        let digits = s.trim_start_matches('-').len();
        return Some(if digits <= 10 { n.saturating_mul(1_000_000_000) } else { n });
    }
    if s.contains('.')
        && let Ok(secs) = s.parse::<f64>()
    {
        return secs.is_finite().then(|| (secs * 1e9).round() as i64);
    }
    opsloop_logs::push::parse_rfc3339(s)
}

/// A duration in seconds (with a fraction) or Prometheus's words (`5m`), in nanoseconds.
pub fn parse_duration(s: &str) -> Option<i64> {
    if let Ok(secs) = s.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| (secs * 1e9).round() as i64);
    }
    opsloop_logs::logql::lexer::parse_duration(s)
}

fn now_ns(state: &AppState) -> i64 {
    state.clock.now_ms().saturating_mul(1_000_000)
}

/// The step Loki picks when none is given: about 250 points over the range, at least 1 s.
fn default_step(start: i64, end: i64) -> i64 {
    let secs = ((end - start) / 1_000_000_000 / 250).max(1);
    secs * 1_000_000_000
}

fn labels_json(labels: &Labels) -> Value {
    Value::Object(labels.iter().map(|(k, v)| (k.to_owned(), Value::String(v.to_owned()))).collect())
}

/// A sample time as Loki writes it: seconds with millisecond precision, a JSON number.
fn ts_json(t_ns: i64) -> Value {
    let secs = (t_ns / 1_000_000) as f64 / 1000.0;
    serde_json::Number::from_f64(secs).map(Value::Number).unwrap_or(Value::Null)
}

fn value_str(v: f64) -> String {
    opsloop_metrics::promql::format_value(v)
}

/// A query's answer in Loki's JSON, with the few statistics Grafana shows.
pub fn result_json(result: &QueryResult, exec_seconds: f64) -> Value {
    let (kind, items, entries) = match result {
        QueryResult::Streams(streams) => {
            let entries: usize = streams.iter().map(|s| s.entries.len()).sum();
            let items: Vec<Value> = streams
                .iter()
                .map(|s| {
                    json!({
                        "stream": labels_json(&s.labels),
                        "values": s.entries.iter().map(|(t, line)| json!([t.to_string(), line])).collect::<Vec<_>>(),
                    })
                })
                .collect();
            ("streams", Value::Array(items), entries)
        }
        QueryResult::Vector(samples) => (
            "vector",
            samples
                .iter()
                .map(|s| json!({"metric": labels_json(&s.labels), "value": [ts_json(s.t), value_str(s.v)]}))
                .collect(),
            0,
        ),
        QueryResult::Matrix(series) => (
            "matrix",
            series
                .iter()
                .map(|s| {
                    json!({
                        "metric": labels_json(&s.labels),
                        "values": s.points.iter().map(|(t, v)| json!([ts_json(*t), value_str(*v)])).collect::<Vec<_>>(),
                    })
                })
                .collect(),
            0,
        ),
        QueryResult::Scalar { t, v } => ("scalar", json!([ts_json(*t), value_str(*v)]), 0),
    };
    json!({
        "resultType": kind,
        "result": items,
        "stats": {"summary": {"execTime": exec_seconds, "totalEntriesReturned": entries}},
    })
}

/// The store as this caller may read it, and their scope.
async fn scoped(
    state: &AppState,
    principal: &Principal,
) -> Result<(std::sync::Arc<opsloop_logs::Store>, Scope), LokiError> {
    let store = state.loki.store(&state.config)?.clone();
    let scope = super::scope(&state.store, principal).await?;
    Ok((store, scope))
}

/// Runs a query off the async threads: evaluation reads and decompresses chunks.
async fn evaluate(
    state: &AppState,
    principal: &Principal,
    q: String,
    params: QueryParams,
    instant: bool,
) -> Result<Response, LokiError> {
    // Parsed first, so a bad query is a 400 whatever the caller may see.
    parse_expr(&q)?;
    let (store, scope) = scoped(state, principal).await?;
    // Never closed; held until the evaluation ends, even when the client has gone.
    let permit = state.loki.queries.clone().acquire_owned().await.map_err(|e| LokiError::internal(e.to_string()))?;
    let started = std::time::Instant::now();
    let result = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let reader = store.reader(TENANT);
        let source = ScopedSource { inner: &reader, scope: &scope };
        if instant {
            opsloop_logs::query_instant(&source, &q, &params)
        } else {
            opsloop_logs::query_range(&source, &q, &params)
        }
    })
    .await
    .map_err(|e| LokiError::internal(e.to_string()))??;
    Ok(success(result_json(&result, started.elapsed().as_secs_f64())))
}

async fn query(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    uri: Uri,
    body: Bytes,
) -> Result<Response, LokiError> {
    let params = Params::read(&uri, &body)?;
    let q = params.query()?.to_owned();
    let t = params.time("time", now_ns(&state))?;
    // A log query at an instant looks back from it (Loki 2's behaviour); a metric one is
    // evaluated at `t`. The entry stamped exactly `t` is included.
    let p = QueryParams {
        start: t.saturating_sub(DEFAULT_SINCE_NS),
        end: t.saturating_add(1),
        step: 0,
        limit: params.limit()?,
        direction: params.direction()?,
    };
    let p = match parse_expr(&q)? {
        opsloop_logs::logql::Expr::Metric(_) => QueryParams { end: t, ..p },
        opsloop_logs::logql::Expr::Log(_) => p,
    };
    evaluate(&state, &principal, q, p, true).await
}

async fn query_range(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    uri: Uri,
    body: Bytes,
) -> Result<Response, LokiError> {
    let params = Params::read(&uri, &body)?;
    let q = params.query()?.to_owned();
    let (start, end) = params.range(now_ns(&state), DEFAULT_SINCE_NS)?;
    let step = match params.get("step") {
        None => default_step(start, end),
        Some(v) => parse_duration(v)
            .filter(|&s| s > 0)
            .ok_or_else(|| LokiError::bad_request(format!("invalid step parameter: cannot parse \"{v}\"")))?,
    };
    let p = QueryParams { start, end, step, limit: params.limit()?, direction: params.direction()? };
    evaluate(&state, &principal, q, p, false).await
}

/// A stream selector from a parameter (`query`, `match[]`).
fn selector(text: &str) -> Result<Vec<Matcher>, LokiError> {
    Ok(parse_matchers(text)?)
}

async fn labels(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    uri: Uri,
) -> Result<Response, LokiError> {
    let params = Params::read(&uri, &Bytes::new())?;
    let (start, end) = params.range(now_ns(&state), DEFAULT_INDEX_SINCE_NS)?;
    let matchers = params.get("query").map(selector).transpose()?.unwrap_or_default();
    let (store, scope) = scoped(&state, &principal).await?;
    let names: Vec<String> = match (&scope, matchers.is_empty()) {
        (Scope::All, true) => store.label_names(TENANT, start, end),
        _ => {
            let Some(restricted) = scope.restrict(&matchers) else { return Ok(success(json!([]))) };
            let mut names = std::collections::BTreeSet::new();
            for l in store.series(TENANT, &[restricted], start, end) {
                names.extend(l.iter().map(|(k, _)| k.to_owned()));
            }
            names.into_iter().collect()
        }
    };
    Ok(success(json!(names)))
}

async fn label_values(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(name): Path<String>,
    uri: Uri,
) -> Result<Response, LokiError> {
    let params = Params::read(&uri, &Bytes::new())?;
    let (start, end) = params.range(now_ns(&state), DEFAULT_INDEX_SINCE_NS)?;
    let matchers = params.get("query").map(selector).transpose()?.unwrap_or_default();
    let (store, scope) = scoped(&state, &principal).await?;
    let Some(restricted) = scope.restrict(&matchers) else { return Ok(success(json!([]))) };
    Ok(success(json!(store.label_values(TENANT, &name, &restricted, start, end))))
}

async fn series(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    uri: Uri,
    body: Bytes,
) -> Result<Response, LokiError> {
    let params = Params::read(&uri, &body)?;
    let (start, end) = params.range(now_ns(&state), DEFAULT_INDEX_SINCE_NS)?;
    let mut selectors: Vec<Vec<Matcher>> =
        params.all("match[]").into_iter().chain(params.all("match")).map(selector).collect::<Result<_, _>>()?;
    if selectors.is_empty() {
        selectors.push(Vec::new());
    }
    let (store, scope) = scoped(&state, &principal).await?;
    let Some(restricted) = selectors.iter().map(|m| scope.restrict(m)).collect::<Option<Vec<_>>>() else {
        return Ok(success(json!([])));
    };
    let found = store.series(TENANT, &restricted, start, end);
    Ok(success(Value::Array(found.iter().filter(|l| scope.admits(l)).map(labels_json).collect())))
}

async fn index_stats(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    uri: Uri,
) -> Result<Response, LokiError> {
    let params = Params::read(&uri, &Bytes::new())?;
    let matchers = selector(params.query()?)?;
    let (start, end) = params.range(now_ns(&state), DEFAULT_SINCE_NS)?;
    let (store, scope) = scoped(&state, &principal).await?;
    let stats = match scope.restrict(&matchers) {
        Some(restricted) => store.index_stats(TENANT, &restricted, start, end),
        None => Default::default(),
    };
    // Loki answers this one without the envelope.
    Ok(axum::Json(json!({
        "streams": stats.streams,
        "chunks": stats.chunks,
        "bytes": stats.bytes,
        "entries": stats.entries,
    }))
    .into_response())
}

async fn format_query(uri: Uri) -> Result<Response, LokiError> {
    let params = Params::read(&uri, &Bytes::new())?;
    let expr = parse_expr(params.query()?)?;
    Ok(success(Value::String(format_expr(&expr))))
}

async fn buildinfo() -> Response {
    // The Loki version whose API this follows; Grafana reads it to pick features.
    axum::Json(json!({
        "version": "2.9.0",
        "revision": env!("CARGO_PKG_VERSION"),
        "branch": "opsloop",
        "buildUser": "opsloop",
        "buildDate": "",
        "goVersion": "",
    }))
    .into_response()
}

async fn ready(State(state): State<AppState>) -> Response {
    match state.loki.store(&state.config) {
        Ok(_) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("Ingester not ready: {e}\n")).into_response(),
    }
}

/// Gunzips a body, refusing more than `limit` bytes decoded (a small gzip can inflate to
/// gigabytes).
fn gunzip(body: &[u8], limit: usize) -> Result<Vec<u8>, LokiError> {
    let mut out = Vec::new();
    let mut reader = flate2::read::GzDecoder::new(body).take(limit as u64 + 1);
    reader.read_to_end(&mut out).map_err(|e| LokiError::bad_request(format!("gzip decode error: {e}")))?;
    if out.len() > limit {
        return Err(LokiError::bad_request(PushError::TooLarge { size: out.len(), limit }.to_string()));
    }
    Ok(out)
}

/// Push in: 204 once every line is in the fsynced WAL; 400 for a body that cannot be decoded
/// or breaks a limit on labels and lines (the sender must not retry it); 429 when the store's
/// stream or label limits refuse it, as Loki's rate limits do.
async fn push(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, LokiError> {
    let limits = PushLimits::default();
    let header_str = |name: header::HeaderName| {
        headers.get(name).and_then(|v| v.to_str().ok()).map(|v| v.trim().to_ascii_lowercase()).unwrap_or_default()
    };
    let body: Vec<u8> = match header_str(header::CONTENT_ENCODING).as_str() {
        // Some clients name the protobuf body's snappy framing here; the decoder undoes it.
        "" | "identity" | "snappy" => body.to_vec(),
        "gzip" => gunzip(&body, limits.max_decoded_bytes)?,
        other => return Err(LokiError::bad_request(format!("unsupported Content-Encoding: {other}"))),
    };
    // As Loki: JSON by its content type, anything else is the protobuf Promtail sends.
    let content_type = header_str(header::CONTENT_TYPE);
    let streams = if content_type.starts_with("application/json") {
        decode_json(&body, &limits)
    } else {
        decode_protobuf(&body, &limits)
    }
    .map_err(|e| LokiError::bad_request(e.to_string()))?;
    match super::check_push(&state.store, &principal, &streams).await {
        Ok(()) => {}
        Err(PushDenied::Store(e)) => return Err(e.into()),
        Err(e) => return Err(LokiError { status: StatusCode::FORBIDDEN, message: e.to_string() }),
    }
    let store = state.loki.store(&state.config)?.clone();
    let lines: usize = streams.iter().map(|s| s.entries.len()).sum();
    let bytes: usize = streams.iter().flat_map(|s| &s.entries).map(|e| e.line.len()).sum();
    match tokio::task::spawn_blocking(move || store.push(TENANT, streams)).await {
        Ok(Ok(())) => {
            state.metrics.logs_received(lines as u64, bytes as u64);
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Ok(Err(e @ (LogStoreError::Cardinality { .. } | LogStoreError::StreamLimit { .. }))) => {
            Err(LokiError { status: StatusCode::TOO_MANY_REQUESTS, message: e.to_string() })
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "logs push: the store failed");
            Err(LokiError::internal(e.to_string()))
        }
        Err(e) => Err(LokiError::internal(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_as_loki_reads_them() {
        assert_eq!(parse_time("1700000000"), Some(1_700_000_000_000_000_000));
        assert_eq!(parse_time("1700000000000000000"), Some(1_700_000_000_000_000_000));
        assert_eq!(parse_time("1700000000.5"), Some(1_700_000_000_500_000_000));
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Some(1_700_000_000_000_000_000));
        assert_eq!(parse_time("soon"), None);
        assert_eq!(parse_duration("60"), Some(60_000_000_000));
        assert_eq!(parse_duration("5m"), Some(300_000_000_000));
        assert_eq!(default_step(0, 3_600_000_000_000), 14_000_000_000);
    }

    #[test]
    fn gzip_bodies_are_inflated_within_the_limit() {
        use std::io::Write as _;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(&[b'x'; 1000]).unwrap();
        let gz = encoder.finish().unwrap();
        assert_eq!(gunzip(&gz, 1000).unwrap().len(), 1000);
        assert_eq!(gunzip(&gz, 999).unwrap_err().status, StatusCode::BAD_REQUEST);
        assert_eq!(gunzip(b"not gzip", 1000).unwrap_err().status, StatusCode::BAD_REQUEST);
    }

    #[test]
    fn results_in_lokis_json() {
        let r = QueryResult::Streams(vec![opsloop_logs::eval::StreamResult {
            labels: Labels::from_pairs([("app", "x")]),
            entries: vec![(1_700_000_000_000_000_001, "hello".into())],
        }]);
        let j = result_json(&r, 0.0);
        assert_eq!(j["resultType"], "streams");
        assert_eq!(j["result"][0]["values"][0], json!(["1700000000000000001", "hello"]));
        let v = QueryResult::Vector(vec![opsloop_logs::eval::Sample {
            labels: Labels::new(),
            t: 1_700_000_000_123_000_000,
            v: 2.0,
        }]);
        assert_eq!(result_json(&v, 0.0)["result"][0]["value"], json!([1_700_000_000.123, "2"]));
    }
}
