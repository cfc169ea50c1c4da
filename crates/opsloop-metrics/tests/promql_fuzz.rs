//! The PromQL front end and evaluator under random input: expressions stitched from PromQL's
//! own tokens (so most get past the lexer and reach the parser's and evaluator's deeper
//! paths) plus random bytes. Nothing may panic, and evaluation stays within its limits.
//! A fixed seed keeps failures reproducible; `PROMQL_FUZZ_ROUNDS` runs longer.

use opsloop_metrics::labels::Labels;
use opsloop_metrics::promql::{Engine, EngineOptions, Limits};
use opsloop_metrics::storage::{MemStorage, Sample, stale_nan};

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const TOKENS: &[&str] = &[
    "up",
    "http_requests_total",
    "x",
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    ",",
    "=",
    "!=",
    "=~",
    "!~",
    "\"a\"",
    "\".*\"",
    "\"(\"",
    "job",
    "le",
    "5m",
    "1s",
    "0s",
    "1h",
    ":",
    "offset",
    "@",
    "start()",
    "end()",
    "100",
    "-1",
    "0",
    "1e308",
    "NaN",
    "Inf",
    "+",
    "-",
    "*",
    "/",
    "%",
    "^",
    "==",
    "!=",
    ">",
    "<",
    ">=",
    "<=",
    "bool",
    "and",
    "or",
    "unless",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "by",
    "without",
    "sum",
    "avg",
    "count",
    "min",
    "max",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "stddev",
    "stdvar",
    "group",
    "rate",
    "irate",
    "increase",
    "delta",
    "deriv",
    "predict_linear",
    "histogram_quantile",
    "label_replace",
    "label_join",
    "absent",
    "absent_over_time",
    "sort",
    "sort_desc",
    "scalar",
    "vector",
    "time",
    "timestamp",
    "clamp",
    "round",
    "holt_winters",
    "quantile_over_time",
    "changes",
    "resets",
    "day_of_week",
    "days_in_month",
    "atan2",
    " ",
];

fn storage() -> MemStorage {
    let s = MemStorage::new();
    for (i, job) in ["a", "b", "c"].iter().enumerate() {
        for (j, le) in ["0.1", "1", "+Inf"].iter().enumerate() {
            let labels = Labels::from_pairs([("__name__", "x"), ("job", job), ("le", le)]);
            for k in 0..40i64 {
                let v = if k == 30 { stale_nan() } else { (k * (i + j + 1) as i64) as f64 };
                s.add(labels.clone(), Sample { t: k * 15_000, v });
            }
        }
        let labels = Labels::from_pairs([("__name__", "up"), ("job", job)]);
        for k in 0..40i64 {
            s.add(labels.clone(), Sample { t: k * 15_000, v: (k % 2) as f64 });
        }
    }
    s
}

#[test]
fn random_expressions_never_panic() {
    let rounds: usize = std::env::var("PROMQL_FUZZ_ROUNDS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
    let storage = storage();
    let engine = Engine::new(EngineOptions {
        limits: Limits { max_samples: 200_000, timeout: std::time::Duration::from_secs(5) },
        ..EngineOptions::default()
    });
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let (mut parsed, mut evaluated) = (0, 0);
    for round in 0..rounds {
        let mut text = String::new();
        for _ in 0..(1 + rng.below(14)) {
            if rng.below(20) == 0 {
                // A random byte now and then, to reach the lexer's error paths.
                text.push(char::from(rng.below(128) as u8));
            } else {
                text.push_str(TOKENS[rng.below(TOKENS.len())]);
            }
            if rng.below(3) == 0 {
                text.push(' ');
            }
        }
        let Ok(expr) = opsloop_metrics::promql::parse(&text) else { continue };
        parsed += 1;
        let t = (rng.below(700) as i64) * 1000;
        if engine.instant(&storage, &expr, t).is_ok() {
            evaluated += 1;
        }
        if round % 7 == 0 {
            let _ = engine.range(&storage, &expr, 0, 600_000, 1 + rng.below(90_000) as i64);
        }
    }
    println!("{rounds} random inputs: {parsed} parsed, {evaluated} evaluated without error");
    assert!(parsed > rounds / 50, "the generator reaches the evaluator: {parsed} of {rounds} parsed");
}
