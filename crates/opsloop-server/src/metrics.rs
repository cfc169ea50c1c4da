//! opsloop's own metrics, served at `/metrics` in the Prometheus text format: HTTP requests
//! by route and status, a latency histogram, the database pool and build info.
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
    store: Store,
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
        let build = Info::new(BuildLabels {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            commit: BUILD_COMMIT.get().cloned().unwrap_or_else(|| "unknown".to_owned()),
            backend: store.kind().as_str(),
        });
        registry.register("build", "The running opsloop build", build);
        Metrics(Arc::new(Inner { registry, requests, latency, in_flight, pool, pool_max, store }))
    }

    /// Counts an answered request; the fallback uses it for requests that matched no route.
    pub fn count(&self, method: String, route: String, status: u16) {
        self.0.requests.get_or_create(&RequestLabels { method, route, status }).inc();
    }

    /// The exposition text; pool gauges are read at scrape time.
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
