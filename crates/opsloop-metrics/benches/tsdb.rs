//! TSDB figures: append throughput (10k series × 120 scrapes, one batch per scrape, each synced
//! to the WAL) and bytes per sample on disk once a block is cut from realistic data.
//!
//! `cargo bench -p opsloop-metrics --bench tsdb`

use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use opsloop_metrics::labels::Labels;
use opsloop_metrics::storage::{Appendable, Sample};
use opsloop_metrics::tsdb::{Tsdb, TsdbOptions};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What a series' values do, in the proportions a node-exporter-plus-services setup shows:
/// most series are counters, histogram buckets and constants change rarely, gauges wander.
#[derive(Clone, Copy)]
enum Kind {
    /// Request counts: integer steps of irregular size, sometimes none.
    Counter,
    /// CPU seconds and the like: float increments.
    FloatCounter,
    /// Memory, queue lengths: integer-valued random walk.
    Gauge,
    /// Load average, temperatures: two decimals.
    FloatGauge,
    /// Histogram buckets of rare events, `up`, `*_info`: mostly the same value.
    Rare,
}

struct Gen {
    labels: Vec<Labels>,
    kinds: Vec<Kind>,
    values: Vec<f64>,
    rng: Rng,
    /// Maximum scrape jitter in ms (`TSDB_BENCH_JITTER_MS`, default 5).
    jitter: u64,
}

const TARGETS: usize = 50;
const SCRAPE: i64 = 15_000;

impl Gen {
    fn new(n: usize) -> Self {
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut labels = Vec::with_capacity(n);
        let mut kinds = Vec::with_capacity(n);
        let mut values = Vec::with_capacity(n);
        for i in 0..n {
            let (name, kind) = match i % 20 {
                0..=7 => ("http_requests_total", Kind::Counter),
                8 | 9 => ("process_cpu_seconds_total", Kind::FloatCounter),
                10..=12 => ("process_resident_memory_bytes", Kind::Gauge),
                13 => ("node_load1", Kind::FloatGauge),
                _ => ("http_request_duration_seconds_bucket", Kind::Rare),
            };
            labels.push(Labels::from_pairs([
                ("__name__", name.to_owned()),
                ("instance", format!("10.0.{}.{}:9100", (i % TARGETS) / 250, (i % TARGETS) % 250)),
                ("job", format!("service-{}", i % 7)),
                ("path", format!("/api/v1/resource/{}", i / TARGETS % 40)),
                ("series", i.to_string()),
            ]));
            kinds.push(kind);
            values.push(match kind {
                Kind::Gauge => (rng.below(1 << 20) * 4096) as f64,
                Kind::FloatGauge => (rng.below(400) as f64) / 100.0,
                _ => rng.below(100_000) as f64,
            });
        }
        let jitter = std::env::var("TSDB_BENCH_JITTER_MS").ok().and_then(|j| j.parse().ok()).unwrap_or(5);
        Self { labels, kinds, values, rng, jitter }
    }

    /// One scrape of every target at `base`: each target's timestamp jitters by a few
    /// milliseconds, as real scrape starts do.
    fn scrape(&mut self, base: i64, batch: &mut Vec<(Labels, Sample)>) {
        let j = self.jitter;
        let jitter: Vec<i64> = (0..TARGETS).map(|_| self.rng.below(2 * j + 1) as i64 - j as i64).collect();
        batch.clear();
        for i in 0..self.labels.len() {
            let r = self.rng.unit();
            let v = &mut self.values[i];
            match self.kinds[i] {
                Kind::Counter => {
                    if r > 0.2 {
                        *v += (r * r * 200.0).floor();
                    }
                }
                Kind::FloatCounter => *v += (r * 0.15 * 1e6).round() / 1e6,
                Kind::Gauge => {
                    if r > 0.5 {
                        *v = (*v + ((r - 0.75) * 400.0).round() * 4096.0).max(0.0);
                    }
                }
                Kind::FloatGauge => *v = ((*v + (r - 0.5) * 0.2).max(0.0) * 100.0).round() / 100.0,
                Kind::Rare => {
                    if r > 0.97 {
                        *v += 1.0;
                    }
                }
            }
            batch.push((self.labels[i].clone(), Sample { t: base + jitter[i % TARGETS], v: *v }));
        }
    }
}

fn dir_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| {
                    let path = e.path();
                    if path.is_dir() { dir_size(&path) } else { e.metadata().map_or(0, |m| m.len()) }
                })
                .sum()
        })
        .unwrap_or(0)
}

/// Appends 3 h 15 min of scrapes with 2 h blocks, cuts the first block, and prints its size
/// per sample.
fn bytes_per_sample() {
    let series = 10_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Tsdb::open(dir.path(), TsdbOptions::default()).expect("open");
    let mut g = Gen::new(series);
    let mut batch = Vec::with_capacity(series);
    let scrapes = (3 * 3600 + 15 * 60) * 1000 / SCRAPE;
    for k in 0..scrapes {
        g.scrape(k * SCRAPE, &mut batch);
        db.append(&batch).expect("append");
    }
    let wal = dir_size(&dir.path().join("wal"));
    db.compact().expect("compact");
    let blocks = dir.path().join("blocks");
    // The jitter puts the first scrape a few milliseconds before 0, in a tiny block of its
    // own; the measure is the full 2 h block.
    let (block, meta) = std::fs::read_dir(&blocks)
        .expect("blocks")
        .filter_map(Result::ok)
        .map(|e| {
            let meta: serde_json::Value =
                serde_json::from_slice(&std::fs::read(e.path().join("meta.json")).expect("meta")).expect("json");
            (e.path(), meta)
        })
        .max_by_key(|(_, m)| m["stats"]["numSamples"].as_u64().unwrap_or(0))
        .expect("a block");
    let samples = meta["stats"]["numSamples"].as_u64().unwrap_or(1) as f64;
    let chunks = std::fs::metadata(block.join("chunks")).map_or(0, |m| m.len()) as f64;
    let index = std::fs::metadata(block.join("index")).map_or(0, |m| m.len()) as f64;
    let total = dir_size(&block) as f64;
    println!(
        "tsdb block: {series} series, {samples} samples, jitter ±{} ms: {:.3} bytes/sample on disk \
         (chunks {:.3}, index {:.3}); WAL before the cut {:.2} bytes/sample",
        g.jitter,
        total / samples,
        chunks / samples,
        index / samples,
        wal as f64 / (scrapes as f64 * series as f64),
    );
}

fn append_throughput(c: &mut Criterion) {
    let series = 10_000;
    let scrapes = 120;
    let mut group = c.benchmark_group("tsdb");
    group.sample_size(10).measurement_time(Duration::from_secs(30));
    group.throughput(Throughput::Elements((series * scrapes) as u64));
    group.bench_function("append 10k series x 120 samples", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().expect("tempdir");
                let db = Tsdb::open(dir.path(), TsdbOptions::default()).expect("open");
                let mut g = Gen::new(series);
                let mut batch = Vec::with_capacity(series);
                for k in 0..scrapes {
                    g.scrape(k as i64 * SCRAPE, &mut batch);
                    let start = Instant::now();
                    db.append(&batch).expect("append");
                    total += start.elapsed();
                }
            }
            total
        })
    });
    group.finish();
}

fn main() {
    bytes_per_sample();
    let mut c = Criterion::default().configure_from_args();
    append_throughput(&mut c);
    c.final_summary();
}
