//! Logs engine benchmarks: ingest rate of typical lines (JSON, logfmt, access log), stored
//! size against raw and against `zstd -3` of the same lines, and a line filter over ~100 MB
//! stored, timed against `rg` over the raw file when `rg` is installed.
//!
//! `cargo bench -p opsloop-logs --bench logs`; `OPSLOOP_LOGS_BENCH_MB` changes the filter
//! corpus size (100 by default).

use std::io::Write;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use opsloop_logs::eval::{Direction, QueryParams, QueryResult, query_range};
use opsloop_logs::labels::Labels;
use opsloop_logs::push::{Entry, PushLimits, PushStream, decode_json};
use opsloop_logs::store::{Store, StoreOptions};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }
}

const PATHS: &[&str] = &[
    "/api/v1/users",
    "/api/v1/orders",
    "/api/v1/orders/{id}",
    "/healthz",
    "/metrics",
    "/static/app.js",
    "/static/style.css",
    "/login",
    "/api/v1/cart",
    "/api/v1/search",
];
const METHODS: &[&str] = &["GET", "GET", "GET", "POST", "PUT", "DELETE"];
const LEVELS: &[&str] = &["info", "info", "info", "info", "debug", "warn", "error"];
const MSGS: &[&str] = &[
    "request completed",
    "cache miss",
    "db query",
    "upstream timeout",
    "user logged in",
    "payment authorized",
    "retrying request",
    "connection reset by peer",
];
const AGENTS: &[&str] = &[
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36",
    "curl/8.4.0",
    "Go-http-client/1.1",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
];

/// A typical line of one of three kinds; `i` makes timestamps and ids move like real logs.
fn line(rng: &mut Rng, kind: usize, i: u64) -> String {
    let status = [200, 200, 200, 200, 201, 204, 301, 404, 500][(rng.next() % 9) as usize];
    let lat = rng.next() % 2000;
    let path = rng.pick(PATHS).replace("{id}", &(rng.next() % 100_000).to_string());
    let secs = 1_700_000_000 + i / 1000;
    match kind {
        0 => format!(
            r#"{{"ts":"2023-11-14T22:{:02}:{:02}.{:03}Z","level":"{}","msg":"{}","method":"{}","path":"{}","status":{},"duration_ms":{},"trace_id":"{:016x}","user_id":{}}}"#,
            (secs / 60) % 60,
            secs % 60,
            i % 1000,
            rng.pick(LEVELS),
            rng.pick(MSGS),
            rng.pick(METHODS),
            path,
            status,
            lat,
            rng.next(),
            rng.next() % 5000
        ),
        1 => format!(
            r#"ts=2023-11-14T22:{:02}:{:02}.{:03}Z level={} msg="{}" method={} path={} status={} duration={}ms trace_id={:016x} user={}"#,
            (secs / 60) % 60,
            secs % 60,
            i % 1000,
            rng.pick(LEVELS),
            rng.pick(MSGS),
            rng.pick(METHODS),
            path,
            status,
            lat,
            rng.next(),
            rng.next() % 5000
        ),
        _ => format!(
            r#"10.{}.{}.{} - - [14/Nov/2023:22:{:02}:{:02} +0000] "{} {} HTTP/1.1" {} {} "-" "{}""#,
            rng.next() % 4,
            rng.next() % 256,
            rng.next() % 256,
            (secs / 60) % 60,
            secs % 60,
            rng.pick(METHODS),
            path,
            status,
            rng.next() % 50_000,
            rng.pick(AGENTS)
        ),
    }
}

/// `batches` pushes of `per` lines spread over 12 streams (3 kinds × 4 pods), 1 ms apart.
fn batches(n_lines: u64, per: u64) -> Vec<Vec<PushStream>> {
    let mut rng = Rng(7);
    let labels: Vec<Labels> = (0..12)
        .map(|s| {
            let app = ["api-json", "worker-logfmt", "nginx"][s % 3];
            Labels::from_pairs([("app", app), ("pod", &format!("{app}-{}", s / 3)), ("env", "prod")])
        })
        .collect();
    let mut out = Vec::new();
    let mut i = 0u64;
    while i < n_lines {
        let mut streams: Vec<PushStream> =
            labels.iter().map(|l| PushStream { labels: l.clone(), entries: Vec::new() }).collect();
        for _ in 0..per.min(n_lines - i) {
            let s = (rng.next() % 12) as usize;
            let ln = line(&mut rng, s % 3, i);
            streams[s].entries.push(Entry {
                ts: 1_700_000_000_000_000_000 + i as i64 * 1_000_000,
                line: ln,
                metadata: vec![],
            });
            i += 1;
        }
        streams.retain(|s| !s.entries.is_empty());
        out.push(streams);
    }
    out
}

fn to_json(streams: &[PushStream]) -> Vec<u8> {
    let v = serde_json::json!({
        "streams": streams.iter().map(|s| serde_json::json!({
            "stream": s.labels.iter().map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string()))).collect::<serde_json::Map<_, _>>(),
            "values": s.entries.iter().map(|e| serde_json::json!([e.ts.to_string(), e.line])).collect::<Vec<_>>(),
        })).collect::<Vec<_>>()
    });
    serde_json::to_vec(&v).unwrap_or_default()
}

fn ingest(c: &mut Criterion) {
    let per = 1000;
    let data = batches(200_000, per);
    let bodies: Vec<Vec<u8>> = data.iter().map(|b| to_json(b)).collect();
    let mut g = c.benchmark_group("ingest");
    g.sample_size(10).measurement_time(Duration::from_secs(8));
    g.throughput(Throughput::Elements(200_000));
    for fsync in [true, false] {
        let name = if fsync { "push_1000_line_batches_fsync" } else { "push_1000_line_batches_nofsync" };
        g.bench_function(name, |b| {
            b.iter_with_setup(
                || {
                    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
                    let store = Store::open(dir.path(), StoreOptions { fsync, ..StoreOptions::default() })
                        .unwrap_or_else(|e| panic!("{e}"));
                    (dir, store, data.clone())
                },
                |(_dir, store, data)| {
                    for batch in data {
                        store.push("bench", batch).unwrap_or_else(|e| panic!("{e}"));
                    }
                },
            )
        });
    }
    g.bench_function("decode_json_and_push_fsync", |b| {
        b.iter_with_setup(
            || {
                let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
                let store = Store::open(dir.path(), StoreOptions::default()).unwrap_or_else(|e| panic!("{e}"));
                (dir, store)
            },
            |(_dir, store)| {
                for body in &bodies {
                    let s = decode_json(body, &PushLimits::default()).unwrap_or_else(|e| panic!("{e}"));
                    store.push("bench", s).unwrap_or_else(|e| panic!("{e}"));
                }
            },
        )
    });
    g.finish();
}

fn size_and_filter(c: &mut Criterion) {
    let mb: u64 = std::env::var("OPSLOOP_LOGS_BENCH_MB").ok().and_then(|v| v.parse().ok()).unwrap_or(100);
    // ~200 bytes a line on average.
    let n = mb * 1_000_000 / 200;
    let data = batches(n, 5000);
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let raw_path = dir.path().join("raw.log");
    let mut raw = std::io::BufWriter::new(std::fs::File::create(&raw_path).unwrap_or_else(|e| panic!("{e}")));
    let mut raw_bytes = 0u64;
    let mut lines = 0u64;
    // The rare term: in one line out of ~50,000.
    let mut data = data;
    let mut k = 0u64;
    for batch in &mut data {
        for s in batch {
            for e in &mut s.entries {
                k += 1;
                if k.is_multiple_of(50_000) {
                    e.line.push_str(" needle-7f3a");
                }
                raw_bytes += e.line.len() as u64 + 1;
                lines += 1;
                let _ = writeln!(raw, "{}", e.line);
            }
        }
    }
    let _ = raw.flush();
    drop(raw);
    let store_dir = dir.path().join("store");
    let store = Store::open(&store_dir, StoreOptions::default()).unwrap_or_else(|e| panic!("{e}"));
    let t0 = Instant::now();
    for batch in data {
        store.push("bench", batch).unwrap_or_else(|e| panic!("{e}"));
    }
    store.flush().unwrap_or_else(|e| panic!("{e}"));
    let ingest = t0.elapsed();
    let stats = store.stats();
    let raw_text = std::fs::read(&raw_path).unwrap_or_default();
    let z3 = zstd::stream::encode_all(&raw_text[..], 3).map(|v| v.len()).unwrap_or(0) as f64;
    drop(raw_text);
    println!(
        "\n[logs] {lines} lines, {:.1} MB raw; ingest (1 thread, fsync per 5000-line push, incl. flush) {:.0} lines/s",
        raw_bytes as f64 / 1e6,
        lines as f64 / ingest.as_secs_f64()
    );
    println!(
        "[logs] stored {:.2} MB = {:.4} x raw; zstd -3 of the file {:.2} MB = {:.4} x raw; stored / zstd-3 = {:.3}",
        stats.stored_bytes as f64 / 1e6,
        stats.stored_bytes as f64 / raw_bytes as f64,
        z3 / 1e6,
        z3 / raw_bytes as f64,
        stats.stored_bytes as f64 / z3
    );

    let p = QueryParams { start: 0, end: i64::MAX, step: 0, limit: 100_000, direction: Direction::Forward };
    let count = |q: &str| -> usize {
        match query_range(&store.reader("bench"), q, &p) {
            Ok(QueryResult::Streams(st)) => st.iter().map(|s| s.entries.len()).sum(),
            other => panic!("{other:?}"),
        }
    };
    let q = r#"{env="prod"} |= "needle-7f3a""#;
    let found = count(q);
    println!("[logs] filter {q} finds {found} lines");
    if let Ok(out) = std::process::Command::new("rg").arg("-c").arg("needle-7f3a").arg(&raw_path).output() {
        let mut best = Duration::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            let _ = std::process::Command::new("rg").arg("-c").arg("needle-7f3a").arg(&raw_path).output();
            best = best.min(t.elapsed());
        }
        let mut ours = Duration::MAX;
        for _ in 0..5 {
            let t = Instant::now();
            let _ = count(q);
            ours = ours.min(t.elapsed());
        }
        println!(
            "[logs] rg -c over the raw file: {:?} ({} matches); our filter over the store: {:?}; ratio {:.2}",
            best,
            String::from_utf8_lossy(&out.stdout).trim(),
            ours,
            ours.as_secs_f64() / best.as_secs_f64()
        );
    }
    // CPU time (user + system) is steadier than wall time on a shared machine: 20 runs each,
    // read from /proc (clock ticks), ours including the decoder threads.
    if let (Some(a), true) = (cpu_ticks(), std::process::Command::new("rg").arg("--version").output().is_ok()) {
        for _ in 0..20 {
            let _ = std::process::Command::new("rg").arg("-c").arg("needle-7f3a").arg(&raw_path).output();
        }
        let b = cpu_ticks().unwrap_or(a);
        for _ in 0..20 {
            let _ = count(q);
        }
        let c2 = cpu_ticks().unwrap_or(b);
        let rg_cpu = (b.1 - a.1) as f64 / 20.0 * 10.0;
        let ours_cpu = (c2.0 - b.0) as f64 / 20.0 * 10.0;
        println!(
            "[logs] CPU per run: rg {rg_cpu:.1} ms, our filter {ours_cpu:.1} ms; ratio {:.2}",
            ours_cpu / rg_cpu.max(0.1)
        );
    }
    let mut g = c.benchmark_group("query");
    g.sample_size(10).measurement_time(Duration::from_secs(10));
    g.throughput(Throughput::Bytes(raw_bytes));
    g.bench_function("line_filter_literal_rare", |b| b.iter(|| count(q)));
    g.bench_function("line_filter_regex_rare", |b| b.iter(|| count(r#"{env="prod"} |~ "needle-[0-9a-f]{4}""#)));
    g.bench_function("count_over_time_by_app_1h", |b| {
        b.iter(|| {
            let p = QueryParams {
                start: 1_700_000_000_000_000_000,
                end: 1_700_000_000_000_000_000 + 3_600_000_000_000,
                step: 60_000_000_000,
                limit: 0,
                direction: Direction::Forward,
            };
            query_range(&store.reader("bench"), r#"sum by (app) (count_over_time({env="prod"} |= "error" [1m]))"#, &p)
        })
    });
    g.finish();
}

/// (own utime + stime, children's cutime + cstime) in clock ticks (10 ms), from /proc/self/stat.
fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name, which is in parentheses and may contain spaces.
    let rest = stat.rsplit_once(')')?.1;
    let f: Vec<u64> = rest.split_whitespace().map(|x| x.parse().unwrap_or(0)).collect();
    // rest[0] is field 3 (state); utime is field 14 → index 11.
    Some((f.get(11)? + f.get(12)?, f.get(13)? + f.get(14)?))
}

criterion_group!(benches, ingest, size_and_filter);
criterion_main!(benches);
