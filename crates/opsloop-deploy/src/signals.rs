//! Golden signals per service and version, recorded by the proxy on every request: traffic
//! (requests), errors (5xx answers and upstream failures), latency (a histogram) and
//! saturation (requests in flight). Counters only grow, so a bake window is the difference of
//! two snapshots; all updates are atomic adds, so recording costs a few nanoseconds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// Upper bounds of the latency buckets, in microseconds (the last bucket is everything above).
pub const BUCKETS_MICROS: [u64; 14] = [
    500, 1_000, 2_000, 5_000, 10_000, 20_000, 50_000, 100_000, 200_000, 500_000, 1_000_000, 2_000_000, 5_000_000,
    10_000_000,
];

/// Counters are split into this many shards, each on its own cache lines, and a thread adds
/// to its own: the proxy's worker threads then never fight over a cache line on the request
/// path (a shared atomic counter bounced between cores costs more than the add itself).
const SHARDS: usize = 8;

/// The shard of the calling thread (threads take them in turn). A `const` thread-local with
/// no destructor is a plain load; a lazily built one showed in profiles.
fn shard_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
    }
    INDEX.with(|index| match index.get() {
        usize::MAX => {
            let taken = NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS;
            index.set(taken);
            taken
        }
        taken => taken,
    })
}

/// One thread's part of a version's counters. A request may start on one thread and end on
/// another (work stealing), so one shard's `in_flight` can go below zero; the sum is right.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Shard {
    requests: AtomicU64,
    errors: AtomicU64,
    in_flight: AtomicI64,
    latency_total_micros: AtomicU64,
    buckets: [AtomicU64; BUCKETS_MICROS.len() + 1],
}

/// The live counters of one service version.
#[derive(Debug, Default)]
pub struct VersionSignals {
    shards: [Shard; SHARDS],
    /// Requests the version's instances are meant to take at once (0: not configured).
    capacity: AtomicU64,
}

/// One backend's requests in flight, sharded like [`VersionSignals`].
#[derive(Debug, Default)]
pub struct BackendLoad([PaddedCount; SHARDS]);

#[derive(Debug, Default)]
#[repr(align(128))]
struct PaddedCount(AtomicI64);

impl BackendLoad {
    pub fn enter(&self) {
        self.0[shard_index()].0.fetch_add(1, Ordering::Relaxed);
    }

    pub fn leave(&self) {
        self.0[shard_index()].0.fetch_sub(1, Ordering::Relaxed);
    }

    /// Requests sent to this backend whose answers have not been passed on whole yet.
    pub fn in_flight(&self) -> i64 {
        self.0.iter().map(|count| count.0.load(Ordering::Relaxed)).sum()
    }
}

/// A copy of one version's counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub requests: u64,
    pub errors: u64,
    pub in_flight: i64,
    pub latency_total_micros: u64,
    pub buckets: [u64; BUCKETS_MICROS.len() + 1],
}

impl Snapshot {
    /// What happened between `earlier` and this snapshot (in flight is this one's).
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        let mut buckets = [0; BUCKETS_MICROS.len() + 1];
        for (i, bucket) in buckets.iter_mut().enumerate() {
            *bucket = self.buckets[i].saturating_sub(earlier.buckets[i]);
        }
        Snapshot {
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            in_flight: self.in_flight,
            latency_total_micros: self.latency_total_micros.saturating_sub(earlier.latency_total_micros),
            buckets,
        }
    }

    /// Errors per request (0 without traffic).
    pub fn error_rate(&self) -> f64 {
        if self.requests == 0 { 0.0 } else { self.errors as f64 / self.requests as f64 }
    }

    /// The latency under which `quantile` (0..1) of the requests finished, as the upper bound
    /// of its bucket; `None` without traffic.
    pub fn latency_quantile(&self, quantile: f64) -> Option<Duration> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let wanted = (quantile.clamp(0.0, 1.0) * total as f64).ceil() as u64;
        let mut seen = 0;
        for (i, count) in self.buckets.iter().enumerate() {
            seen += count;
            if seen >= wanted.max(1) {
                let micros = BUCKETS_MICROS.get(i).copied().unwrap_or(u64::MAX / 2);
                return Some(Duration::from_micros(micros));
            }
        }
        None
    }
}

impl VersionSignals {
    /// How many requests at once this version is meant to take (its instances' `concurrency`
    /// summed); saturation is in flight against it.
    pub fn set_capacity(&self, requests: u64) {
        self.capacity.store(requests, Ordering::Relaxed);
    }

    pub fn capacity(&self) -> u64 {
        self.capacity.load(Ordering::Relaxed)
    }

    /// A request to this version began: it counts in flight until [`VersionSignals::left`].
    pub fn started(&self) {
        self.shards[shard_index()].in_flight.fetch_add(1, Ordering::Relaxed);
    }

    /// A request's answer has passed whole (its body too, for a stream or a download), or it
    /// failed: it no longer counts in flight. Draining and saturation read this.
    pub fn left(&self) {
        self.shards[shard_index()].in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    /// A request was answered after `elapsed` (the head's latency); `error` for a 5xx answer
    /// or an upstream failure. It stays in flight until [`VersionSignals::left`].
    pub fn answered(&self, elapsed: Duration, error: bool) {
        let shard = &self.shards[shard_index()];
        shard.requests.fetch_add(1, Ordering::Relaxed);
        if error {
            shard.errors.fetch_add(1, Ordering::Relaxed);
        }
        let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
        shard.latency_total_micros.fetch_add(micros, Ordering::Relaxed);
        let bucket = BUCKETS_MICROS.iter().position(|bound| micros <= *bound).unwrap_or(BUCKETS_MICROS.len());
        shard.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// The sum of every shard (each read on its own, so a snapshot taken while requests run
    /// may be a request or two off between counters; windows are long enough not to care).
    pub fn snapshot(&self) -> Snapshot {
        let mut total = Snapshot::default();
        for shard in &self.shards {
            total.requests += shard.requests.load(Ordering::Relaxed);
            total.errors += shard.errors.load(Ordering::Relaxed);
            total.in_flight += shard.in_flight.load(Ordering::Relaxed);
            total.latency_total_micros += shard.latency_total_micros.load(Ordering::Relaxed);
            for (sum, bucket) in total.buckets.iter_mut().zip(&shard.buckets) {
                *sum += bucket.load(Ordering::Relaxed);
            }
        }
        total
    }
}

/// (service, version) → its counters.
type ByVersion = HashMap<(String, String), Arc<VersionSignals>>;

/// Every service version's signals, created on first use; and each backend's requests in
/// flight, so an instance leaving a route is stopped only once it has answered them.
#[derive(Debug, Default, Clone)]
pub struct Signals(Arc<RwLock<ByVersion>>, Arc<RwLock<HashMap<std::net::SocketAddr, Arc<BackendLoad>>>>);

impl Signals {
    /// The requests in flight to the backend at `address` (shared by every route to it).
    pub fn backend(&self, address: std::net::SocketAddr) -> Arc<BackendLoad> {
        if let Some(found) = self.1.read().ok().and_then(|map| map.get(&address).cloned()) {
            return found;
        }
        match self.1.write() {
            Ok(mut map) => map.entry(address).or_default().clone(),
            Err(_) => Arc::default(),
        }
    }

    /// The counters of `service` at `version`.
    pub fn of(&self, service: &str, version: &str) -> Arc<VersionSignals> {
        let key = (service.to_owned(), version.to_owned());
        if let Some(found) = self.0.read().ok().and_then(|map| map.get(&key).cloned()) {
            return found;
        }
        match self.0.write() {
            Ok(mut map) => map.entry(key).or_default().clone(),
            Err(_) => Arc::new(VersionSignals::default()),
        }
    }

    /// Every version's snapshot, sorted by service and version.
    pub fn snapshots(&self) -> Vec<(String, String, Snapshot)> {
        let mut all: Vec<(String, String, Snapshot)> = self
            .0
            .read()
            .map(|map| map.iter().map(|((s, v), signals)| (s.clone(), v.clone(), signals.snapshot())).collect())
            .unwrap_or_default();
        all.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        all
    }

    /// The Prometheus text exposition of every version's signals.
    pub fn render_prometheus(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP opsloop_proxy_requests_total Requests the proxy passed on, by service and version.\n");
        out.push_str("# TYPE opsloop_proxy_requests_total counter\n");
        let all = self.snapshots();
        for (service, version, s) in &all {
            out.push_str(&format!(
                "opsloop_proxy_requests_total{{service=\"{}\",version=\"{}\"}} {}\n",
                escape(service),
                escape(version),
                s.requests
            ));
        }
        out.push_str("# HELP opsloop_proxy_errors_total 5xx answers and upstream failures.\n");
        out.push_str("# TYPE opsloop_proxy_errors_total counter\n");
        for (service, version, s) in &all {
            out.push_str(&format!(
                "opsloop_proxy_errors_total{{service=\"{}\",version=\"{}\"}} {}\n",
                escape(service),
                escape(version),
                s.errors
            ));
        }
        out.push_str("# HELP opsloop_proxy_in_flight Requests in flight (saturation).\n");
        out.push_str("# TYPE opsloop_proxy_in_flight gauge\n");
        for (service, version, s) in &all {
            out.push_str(&format!(
                "opsloop_proxy_in_flight{{service=\"{}\",version=\"{}\"}} {}\n",
                escape(service),
                escape(version),
                s.in_flight
            ));
        }
        let capacities: Vec<(String, String, u64)> = self
            .0
            .read()
            .map(|map| map.iter().map(|((s, v), signals)| (s.clone(), v.clone(), signals.capacity())).collect())
            .unwrap_or_default();
        out.push_str(
            "# HELP opsloop_proxy_saturation Requests in flight against the version's configured concurrency.\n",
        );
        out.push_str("# TYPE opsloop_proxy_saturation gauge\n");
        for (service, version, s) in &all {
            let capacity = capacities.iter().find(|(cs, cv, _)| cs == service && cv == version).map_or(0, |c| c.2);
            if capacity > 0 {
                out.push_str(&format!(
                    "opsloop_proxy_saturation{{service=\"{}\",version=\"{}\"}} {}\n",
                    escape(service),
                    escape(version),
                    s.in_flight.max(0) as f64 / capacity as f64
                ));
            }
        }
        out.push_str("# HELP opsloop_proxy_request_duration_seconds Time to the upstream's answer.\n");
        out.push_str("# TYPE opsloop_proxy_request_duration_seconds histogram\n");
        for (service, version, s) in &all {
            let labels = format!("service=\"{}\",version=\"{}\"", escape(service), escape(version));
            let mut cumulative = 0;
            for (i, bound) in BUCKETS_MICROS.iter().enumerate() {
                cumulative += s.buckets[i];
                out.push_str(&format!(
                    "opsloop_proxy_request_duration_seconds_bucket{{{labels},le=\"{}\"}} {cumulative}\n",
                    *bound as f64 / 1e6
                ));
            }
            cumulative += s.buckets[BUCKETS_MICROS.len()];
            out.push_str(&format!(
                "opsloop_proxy_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {cumulative}\n"
            ));
            out.push_str(&format!(
                "opsloop_proxy_request_duration_seconds_sum{{{labels}}} {}\n",
                s.latency_total_micros as f64 / 1e6
            ));
            out.push_str(&format!("opsloop_proxy_request_duration_seconds_count{{{labels}}} {}\n", s.requests));
        }
        out
    }
}

fn escape(label: &str) -> String {
    label.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_many_threads_add_up_across_shards() {
        let signals = Signals::default();
        let (web, load) = (signals.of("web", "v1"), signals.backend(([127, 0, 0, 1], 9).into()));
        load.enter();
        std::thread::scope(|scope| {
            for _ in 0..SHARDS + 3 {
                scope.spawn(|| {
                    for _ in 0..1000 {
                        web.started();
                        load.enter();
                        web.answered(Duration::from_millis(1), false);
                        web.left();
                        load.leave();
                    }
                });
            }
        });
        let total = web.snapshot();
        assert_eq!((total.requests, total.in_flight), (1000 * (SHARDS as u64 + 3), 0));
        assert_eq!(load.in_flight(), 1, "the request entered before is still counted");
    }

    #[test]
    fn windows_rates_and_quantiles() {
        let signals = Signals::default();
        let web = signals.of("web", "v2");
        let before = web.snapshot();
        for i in 0..100 {
            web.started();
            web.answered(Duration::from_millis(if i < 95 { 1 } else { 150 }), i % 10 == 0);
            web.left();
        }
        let window = web.snapshot().since(&before);
        assert_eq!((window.requests, window.errors, window.in_flight), (100, 10, 0));
        assert!((window.error_rate() - 0.1).abs() < 1e-9);
        assert_eq!(window.latency_quantile(0.5), Some(Duration::from_millis(1)));
        assert_eq!(window.latency_quantile(0.99), Some(Duration::from_millis(200)));
        web.set_capacity(4);
        web.started();
        // Answered, its body still streaming: still in flight, so still saturating.
        web.answered(Duration::from_millis(1), false);
        let text = signals.render_prometheus();
        assert!(text.contains("opsloop_proxy_saturation{service=\"web\",version=\"v2\"} 0.25"), "{text}");
        assert!(text.contains("opsloop_proxy_in_flight{service=\"web\",version=\"v2\"} 1"), "{text}");
        web.left();
        assert_eq!(web.snapshot().in_flight, 0);
        assert!(text.contains("opsloop_proxy_requests_total{service=\"web\",version=\"v2\"} 101"), "{text}");
        assert!(text.contains("le=\"+Inf\"} 101"), "{text}");
    }
}
