//! opsloop's own metrics, served at `/metrics`: HTTP requests by route and status, a latency
//! histogram, the database pool, the logs store and build info.
//!
//! The answer is Prometheus's text format (0.0.4) unless the scraper asks for OpenMetrics in
//! `Accept`, as the official client libraries negotiate: Prometheus 2.x before the
//! OpenMetrics scrape protocol, `promtool check metrics` and most agents read only the
//! former, and reject OpenMetrics-only syntax (`info` types, `# UNIT`, `# EOF`).
//!
//! Labels are bounded: the route label is the matched route pattern (e.g.
//! `/api/v1/projects/{project}`), never the raw path, and unmatched requests share one label.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use opsloop_store::Store;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::Registry;

use crate::state::AppState;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct BuildLabels {
    version: String,
    commit: String,
    backend: &'static str,
}

#[derive(Clone)]
pub struct Metrics(Arc<Inner>);

struct Inner {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabels, Histogram>,
    in_flight: Gauge,
    pool: Family<PoolLabels, Gauge>,
    pool_max: Gauge,
    logs_lines: Counter,
    logs_bytes: Counter,
    logs_store: Family<LogsStoreLabels, Gauge>,
    store: Store,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LogsStoreLabels {
    figure: &'static str,
}

/// The logs store's figures as `opsloop_logs_store{figure=…}` reports them.
#[derive(Debug, Clone, Copy, Default)]
pub struct LogsStoreFigures {
    pub streams: u64,
    pub entries: u64,
    pub chunks: u64,
    pub stored_bytes: u64,
    pub wal_bytes: u64,
}

/// The version and commit the running binary was built from; set once by the binary.
pub static BUILD_COMMIT: std::sync::OnceLock<String> = std::sync::OnceLock::new();

impl Metrics {
    pub fn new(store: Store) -> Self {
        let mut registry = Registry::with_prefix("opsloop");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("http_requests", "HTTP requests answered, by method, route and status", requests.clone());
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            // 0.5 ms … ~4 s, doubling: covers a cached read and a slow page alike.
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(0.0005, 2.0, 14))
        });
        registry.register_with_unit(
            "http_request_duration",
            "Time from request to response head, by method and route",
            prometheus_client::registry::Unit::Seconds,
            latency.clone(),
        );
        let in_flight = Gauge::default();
        registry.register("http_requests_in_flight", "Requests being handled now", in_flight.clone());
        let pool = Family::<PoolLabels, Gauge>::default();
        registry.register("db_pool_connections", "Metadata database connections by state", pool.clone());
        let pool_max = Gauge::default();
        registry.register("db_pool_max_connections", "Most connections the pool will open", pool_max.clone());
        let logs_lines = Counter::default();
        registry.register("logs_received_lines", "Log lines accepted by /loki/api/v1/push", logs_lines.clone());
        let logs_bytes = Counter::default();
        registry.register(
            "logs_received_bytes",
            "Bytes of log lines accepted by /loki/api/v1/push",
            logs_bytes.clone(),
        );
        let logs_store = Family::<LogsStoreLabels, Gauge>::default();
        registry.register(
            "logs_store",
            "The logs store: streams, entries, chunks, stored_bytes, wal_bytes (every 10 s)",
            logs_store.clone(),
        );
        let build = Info::new(BuildLabels {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            commit: BUILD_COMMIT.get().cloned().unwrap_or_else(|| "unknown".to_owned()),
            backend: store.kind().as_str(),
        });
        registry.register("build", "The running opsloop build", build);
        Metrics(Arc::new(Inner {
            registry,
            requests,
            latency,
            in_flight,
            pool,
            pool_max,
            logs_lines,
            logs_bytes,
            logs_store,
            store,
        }))
    }

    /// Counts an answered request; the fallback uses it for requests that matched no route.
    pub fn count(&self, method: String, route: String, status: u16) {
        self.0.requests.get_or_create(&RequestLabels { method, route, status }).inc();
    }

    /// Counts a push the logs store accepted.
    pub fn logs_received(&self, lines: u64, bytes: u64) {
        self.0.logs_lines.inc_by(lines);
        self.0.logs_bytes.inc_by(bytes);
    }

    /// The logs store's latest figures.
    pub fn set_logs_store(&self, figures: LogsStoreFigures) {
        let gauge = |figure: &'static str, value: u64| {
            self.0.logs_store.get_or_create(&LogsStoreLabels { figure }).set(i64::try_from(value).unwrap_or(i64::MAX));
        };
        gauge("streams", figures.streams);
        gauge("entries", figures.entries);
        gauge("chunks", figures.chunks);
        gauge("stored_bytes", figures.stored_bytes);
        gauge("wal_bytes", figures.wal_bytes);
    }

    /// The exposition in OpenMetrics text (what `prometheus-client` writes, `# EOF` included);
    /// pool gauges are read at scrape time. [`Exposition`] turns it into what a scraper asked for.
    pub fn render(&self) -> String {
        let stats = self.0.store.pool_stats();
        self.0.pool.get_or_create(&PoolLabels { state: "idle" }).set(i64::from(stats.idle));
        self.0
            .pool
            .get_or_create(&PoolLabels { state: "in_use" })
            .set(i64::from(stats.size.saturating_sub(stats.idle)));
        self.0.pool_max.set(i64::from(stats.max));
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.0.registry) {
            tracing::error!(%error, "encoding metrics failed");
        }
        text
    }
}

/// Counts and times every matched request (a route layer, so the matched route is known).
/// The method as a label: the standard ones by name, anything else as `OTHER`, so clients
/// cannot grow the label set.
pub fn method_label(method: &axum::http::Method) -> String {
    use axum::http::Method;
    let known = [Method::GET, Method::HEAD, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS];
    if known.contains(method) { method.as_str().to_owned() } else { "OTHER".to_owned() }
}

pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = method_label(request.method());
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let metrics = &state.metrics.0;
    metrics.in_flight.inc();
    // Decrements also when the client goes away and the future is dropped mid-request.
    let _in_flight = InFlightGuard(&metrics.in_flight);
    let response = next.run(request).await;
    let latency = metrics.latency.get_or_create(&RouteLabels { method: method.clone(), route: route.clone() });
    latency.observe(started.elapsed().as_secs_f64());
    state.metrics.count(method, route, response.status().as_u16());
    response
}

struct InFlightGuard<'a>(&'a Gauge);

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The two exposition formats `/metrics` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exposition {
    /// `text/plain; version=0.0.4`: Prometheus's text format, the default.
    Text,
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
}

impl Exposition {
    /// The format an `Accept` header prefers: OpenMetrics only when it weighs more than the
    /// text format (Prometheus itself sends both with q-values), else the text format.
    pub fn negotiate(accept: Option<&str>) -> Exposition {
        let Some(accept) = accept else { return Exposition::Text };
        let (mut openmetrics, mut text) = (0.0_f32, 0.0_f32);
        for range in accept.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or("").to_ascii_lowercase();
            let quality = parts
                .filter_map(|p| p.strip_prefix("q="))
                .find_map(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0)
                .clamp(0.0, 1.0);
            match media.as_str() {
                "application/openmetrics-text" => openmetrics = openmetrics.max(quality),
                "text/plain" | "text/*" | "*/*" => text = text.max(quality),
                _ => {}
            }
        }
        if openmetrics > 0.0 && openmetrics > text { Exposition::OpenMetrics } else { Exposition::Text }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Exposition::Text => "text/plain; version=0.0.4; charset=utf-8",
            Exposition::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// One answer from opsloop's registry (OpenMetrics) and the proxy's signals (text format).
    pub fn body(self, openmetrics: &str, text: &str) -> String {
        let own = openmetrics.strip_suffix("# EOF\n").unwrap_or(openmetrics);
        match self {
            Exposition::Text => {
                let mut out = openmetrics_to_text(own);
                out.push_str(text);
                out
            }
            Exposition::OpenMetrics => {
                let mut out = own.to_owned();
                out.push_str(&text_to_openmetrics(text));
                out.push_str("# EOF\n");
                out
            }
        }
    }
}

/// The family names of `# TYPE` lines with their type.
fn family_types(exposition: &str) -> std::collections::HashMap<&str, &str> {
    exposition
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
        .map(|(name, kind)| (name, kind.trim()))
        .collect()
}

/// Rewrites a metadata line (`# HELP name …` or `# TYPE name …`) with a new family name.
fn rename_metadata(line: &str, rename: impl Fn(&str, &str) -> Option<(String, Option<&'static str>)>) -> String {
    for keyword in ["# HELP ", "# TYPE "] {
        if let Some(rest) = line.strip_prefix(keyword) {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if let Some((new_name, new_type)) = rename(name, tail) {
                let tail = match (keyword, new_type) {
                    ("# TYPE ", Some(kind)) => kind,
                    _ => tail,
                };
                return format!("{keyword}{new_name} {tail}");
            }
        }
    }
    line.to_owned()
}

/// OpenMetrics → text 0.0.4: a counter's family is named as its `_total` samples, an `info`
/// family becomes the gauge `<name>_info`, and `# UNIT` lines (unknown there) go. Sample lines
/// are the same in both.
fn openmetrics_to_text(openmetrics: &str) -> String {
    let types = family_types(openmetrics);
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let line = rename_metadata(line, |name, _| match types.get(name).copied() {
            Some("counter") if !name.ends_with("_total") => Some((format!("{name}_total"), None)),
            Some("info") => Some((format!("{name}_info"), Some("gauge"))),
            _ => None,
        });
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// Text 0.0.4 → OpenMetrics for the families opsloop writes by hand: a counter's family is its
/// name without `_total` (its samples keep it).
fn text_to_openmetrics(text: &str) -> String {
    let types = family_types(text);
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let line = rename_metadata(line, |name, _| match types.get(name).copied() {
            Some("counter") => name.strip_suffix("_total").map(|family| (family.to_owned(), None)),
            _ => None,
        });
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENMETRICS: &str = "# HELP opsloop_http_requests Requests.\n# TYPE opsloop_http_requests counter\n\
opsloop_http_requests_total{route=\"/\"} 3\n# HELP opsloop_http_request_duration_seconds Time.\n\
# TYPE opsloop_http_request_duration_seconds histogram\n# UNIT opsloop_http_request_duration_seconds seconds\n\
opsloop_http_request_duration_seconds_bucket{le=\"+Inf\"} 1\n# HELP opsloop_build The build.\n\
# TYPE opsloop_build info\nopsloop_build_info{version=\"0.1.0\"} 1\n# EOF\n";

    const TEXT: &str = "# HELP opsloop_proxy_requests_total Requests.\n# TYPE opsloop_proxy_requests_total counter\n\
opsloop_proxy_requests_total{service=\"web\"} 7\n";

    #[test]
    fn the_text_format_has_no_openmetrics_only_syntax() {
        let body = Exposition::Text.body(OPENMETRICS, TEXT);
        let expected = "# HELP opsloop_http_requests_total Requests.\n# TYPE opsloop_http_requests_total counter\n\
opsloop_http_requests_total{route=\"/\"} 3\n# HELP opsloop_http_request_duration_seconds Time.\n\
# TYPE opsloop_http_request_duration_seconds histogram\n\
opsloop_http_request_duration_seconds_bucket{le=\"+Inf\"} 1\n# HELP opsloop_build_info The build.\n\
# TYPE opsloop_build_info gauge\nopsloop_build_info{version=\"0.1.0\"} 1\n";
        assert_eq!(body, format!("{expected}{TEXT}"));
    }

    #[test]
    fn openmetrics_names_counter_families_without_total_and_ends_with_eof() {
        let body = Exposition::OpenMetrics.body(OPENMETRICS, TEXT);
        assert!(body.contains("# TYPE opsloop_proxy_requests counter\nopsloop_proxy_requests_total{"), "{body}");
        assert!(body.contains("# TYPE opsloop_build info\n"), "{body}");
        assert!(body.ends_with("} 7\n# EOF\n"), "{body}");
        assert_eq!(body.matches("# EOF").count(), 1);
    }

    #[test]
    fn accept_headers_negotiate_like_the_client_libraries() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,\
text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Exposition::negotiate(Some(prometheus)), Exposition::OpenMetrics);
        assert_eq!(Exposition::negotiate(Some("text/plain;version=0.0.4;q=1,*/*;q=0.1")), Exposition::Text);
        assert_eq!(Exposition::negotiate(Some("*/*")), Exposition::Text);
        assert_eq!(Exposition::negotiate(None), Exposition::Text);
        assert_eq!(Exposition::negotiate(Some("application/openmetrics-text; q=0")), Exposition::Text);
        assert_eq!(Exposition::negotiate(Some("garbage;;;q=x,")), Exposition::Text);
    }
}
