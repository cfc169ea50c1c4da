//! Prometheus's own PromQL test scripts (`../shared/peers/promql`, the `promqltest` language:
//! `load`, `clear`, `eval`) run against opsloop's engine. Prints pass/fail per file; fails on
//! any failure not in `promql-known-failures.txt`, and on a listed one that now passes, so
//! the list only shrinks.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use opsloop_metrics::labels::{Labels, METRIC_NAME};
use opsloop_metrics::promql::{Engine, QueryValue};
use opsloop_metrics::storage::{MemStorage, Sample, stale_nan};
use promql_parser::parser::Expr;

fn peers() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/peers/promql");
    dir.is_dir().then_some(dir)
}

#[test]
fn prometheus_2_42_promql_tests() {
    let Some(dir) = peers() else {
        opsloop_core::skip::skipped("../shared/peers/promql is absent");
        return;
    };
    let known: BTreeSet<String> = include_str!("promql-known-failures.txt")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.trim().to_owned())
        .collect();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("v2.42"))
        .expect("v2.42 is readable")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "test"))
        .collect();
    files.sort();
    let (mut passed, mut total) = (0, 0);
    let mut unexpected = Vec::new();
    let mut fixed = Vec::new();
    for file in &files {
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or("?").to_owned();
        let text = std::fs::read_to_string(file).expect("test file is readable");
        let results = run_script(&text);
        let ok = results.iter().filter(|r| r.1.is_none()).count();
        println!("{name}: {ok}/{} evals pass", results.len());
        passed += ok;
        total += results.len();
        for (line, failure) in results {
            let key = format!("{name}:{line}");
            match (failure, known.contains(&key)) {
                (Some(why), false) => unexpected.push(format!("{key}: {why}")),
                (None, true) => fixed.push(key),
                _ => {}
            }
        }
    }
    println!("Prometheus 2.42 PromQL tests: {passed} of {total} evals pass");
    assert!(
        unexpected.is_empty(),
        "{} evals fail that are not known failures:\n{}",
        unexpected.len(),
        unexpected.join("\n")
    );
    assert!(fixed.is_empty(), "these now pass; remove them from promql-known-failures.txt:\n{}", fixed.join("\n"));
}

/// Runs one script; per `eval` command, its line and why it failed (None when it passed).
fn run_script(text: &str) -> Vec<(usize, Option<String>)> {
    let storage = MemStorage::new();
    let engine = Engine::default();
    let lines: Vec<&str> = text.lines().collect();
    let mut results = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_end();
        let lineno = i + 1;
        i += 1;
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        // The indented lines that belong to this command.
        let mut body = Vec::new();
        while i < lines.len() && !lines[i].trim().is_empty() && lines[i].starts_with([' ', '\t']) {
            if !lines[i].trim_start().starts_with('#') {
                body.push(lines[i].trim());
            }
            i += 1;
        }
        if line == "clear" {
            storage.clear();
        } else if let Some(interval) = line.strip_prefix("load ") {
            let interval = duration(interval.trim()).expect("load interval");
            for series in body {
                let (labels, values) = split_series(series).expect("series line");
                let labels = parse_labels(labels).expect("series labels");
                for (n, v) in expand(values).expect("series values").into_iter().enumerate() {
                    if let Some(v) = v {
                        storage.add(labels.clone(), Sample { t: n as i64 * interval, v });
                    }
                }
            }
        } else if let Some((kind, rest)) = line.split_once(' ') {
            let failure = eval_command(&engine, &storage, kind, rest, &body);
            results.push((lineno, failure));
        }
    }
    results
}

fn eval_command(engine: &Engine, storage: &MemStorage, kind: &str, rest: &str, body: &[&str]) -> Option<String> {
    let Some(rest) = rest.strip_prefix("instant at ") else {
        return Some(format!("unsupported command {kind} {rest}"));
    };
    let (at, query) = rest.split_once(' ').unwrap_or((rest, ""));
    let Some(t) = duration(at) else { return Some(format!("bad time {at}")) };
    let result = opsloop_metrics::promql::parse(query).and_then(|expr: Expr| engine.instant(storage, &expr, t));
    match (kind, result) {
        ("eval_fail", Err(_)) => None,
        ("eval_fail", Ok(v)) => Some(format!("expected an error, got {v:?}")),
        (_, Err(e)) => Some(format!("error: {e}")),
        (_, Ok(value)) => compare(&value, body, kind == "eval_ordered"),
    }
}

fn compare(value: &QueryValue, expected: &[&str], ordered: bool) -> Option<String> {
    match value {
        QueryValue::Scalar { v, .. } => {
            let [line] = expected else { return Some(format!("scalar {v}, expected {expected:?}")) };
            let want = parse_value(line)?;
            (!almost_equal(*v, want)).then(|| format!("scalar {v}, expected {want}"))
        }
        QueryValue::Vector(samples) => {
            let mut want = Vec::new();
            for line in expected {
                let Some((labels, value)) = split_series(line) else {
                    return Some(format!("bad expected line {line}"));
                };
                let labels = parse_labels(labels)?;
                let value = parse_value(value.trim())?;
                want.push((labels, value));
            }
            if want.len() != samples.len() {
                return Some(format!(
                    "{} samples, expected {}: got {}",
                    samples.len(),
                    want.len(),
                    samples.iter().map(|s| format!("{} {}", s.labels, s.v)).collect::<Vec<_>>().join("; ")
                ));
            }
            for (pos, (labels, v)) in want.iter().enumerate() {
                let found = if ordered {
                    samples.get(pos).filter(|s| &s.labels == labels)
                } else {
                    samples.iter().find(|s| &s.labels == labels)
                };
                match found {
                    None => {
                        return Some(format!(
                            "expected {labels} {v} (position {pos}); got {}",
                            samples.iter().map(|s| format!("{} {}", s.labels, s.v)).collect::<Vec<_>>().join("; ")
                        ));
                    }
                    Some(s) if !almost_equal(s.v, *v) => return Some(format!("{labels}: {} expected {v}", s.v)),
                    Some(_) => {}
                }
            }
            None
        }
        QueryValue::Matrix(m) => Some(format!("matrix result not compared: {m:?}")),
        QueryValue::String { v, .. } => Some(format!("string result {v:?}")),
    }
}

/// Prometheus's test tolerance: relative 1e-6, NaN equal to NaN.
fn almost_equal(a: f64, b: f64) -> bool {
    const EPSILON: f64 = 1e-6;
    const MIN_NORMAL: f64 = 2.2250738585072014e-308;
    if a.is_nan() && b.is_nan() {
        return true;
    }
    if a == b {
        return true;
    }
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || diff < MIN_NORMAL {
        return diff < EPSILON * MIN_NORMAL;
    }
    diff / (a.abs() + b.abs()) < EPSILON
}

/// Prometheus's `model.ParseDuration` (`1h30m`, `0m`, `100ms`), in milliseconds.
fn duration(s: &str) -> Option<i64> {
    opsloop_metrics::config::parse_duration(s).and_then(|d| i64::try_from(d.as_millis()).ok())
}

/// Splits `metric{a="b", c="d"} 1 2 3` into the selector and the values, minding braces and
/// quotes. A line with only a value (a scalar's expected result) has an empty selector.
fn split_series(line: &str) -> Option<(&str, &str)> {
    let bytes = line.as_bytes();
    let mut depth = 0;
    let mut quote: Option<u8> = None;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match quote {
            Some(q) => {
                if c == b'\\' {
                    i += 1;
                } else if c == q {
                    quote = None;
                }
            }
            None => match c {
                b'"' | b'\'' | b'`' => quote = Some(c),
                b'{' => depth += 1,
                b'}' => depth -= 1,
                b' ' | b'\t' if depth == 0 => return Some((&line[..i], line[i..].trim())),
                _ => {}
            },
        }
        i += 1;
    }
    if line.starts_with('{')
        || line.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) && parse_value(line).is_none()
    {
        return Some((line, ""));
    }
    Some(("", line))
}

fn parse_labels(selector: &str) -> Option<Labels> {
    let selector = selector.trim();
    if selector.is_empty() || selector == "{}" {
        return Some(Labels::new());
    }
    let expr = promql_parser::parser::parse(selector).ok()?;
    let Expr::VectorSelector(vs) = expr else { return None };
    let mut pairs: Vec<(String, String)> = Vec::new();
    if let Some(name) = vs.name {
        pairs.push((METRIC_NAME.to_owned(), name));
    }
    for m in vs.matchers.matchers {
        pairs.push((m.name, m.value));
    }
    Some(Labels::from_pairs(pairs))
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "Inf" | "+Inf" | "inf" | "+inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        "NaN" | "nan" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// The `promtool`-style value list: `1 2 _ stale 0+10x5 _x3 5x2 1-1x3`.
fn expand(values: &str) -> Option<Vec<Option<f64>>> {
    let mut out = Vec::new();
    for token in values.split_whitespace() {
        if token == "_" {
            out.push(None);
        } else if let Some(n) = token.strip_prefix("_x") {
            out.extend(std::iter::repeat_n(None, n.parse().ok()?));
        } else if token == "stale" {
            out.push(Some(stale_nan()));
        } else if let Some((head, times)) = token.rsplit_once('x') {
            let times: usize = times.parse().ok()?;
            // The increment's sign is the first '+' or '-' after the first character that is
            // not part of an exponent.
            let split = head
                .char_indices()
                .skip(1)
                .find(|&(i, c)| (c == '+' || c == '-') && !matches!(head.as_bytes()[i - 1], b'e' | b'E'))
                .map(|(i, _)| i);
            match split {
                Some(i) => {
                    let start = parse_value(&head[..i])?;
                    let delta = parse_value(&head[i..])?;
                    let mut v = start;
                    out.push(Some(v));
                    for _ in 0..times {
                        v += delta;
                        out.push(Some(v));
                    }
                }
                None => {
                    let v = parse_value(head)?;
                    out.extend(std::iter::repeat_n(Some(v), times + 1));
                }
            }
        } else {
            out.push(Some(parse_value(token)?));
        }
    }
    Some(out)
}
