//! The data-driven LogQL suite: every `tests/logql/*.txt` file is a list of datasets and
//! cases, run against the in-memory source and, for each dataset, against the store too.
//!
//! Format (times in seconds, fractions allowed):
//! ```text
//! data
//!   {app="a"} 10 a log line
//!   {app="a"} 20 @{trace="x"} a line with structured metadata
//!
//! eval instant at 60 <query>          # expected: `{labels} value` lines, or `scalar v`
//! eval range 0 60 30 <query>          # start end step; `{labels} v v v` (`_` = no point)
//! eval logs 0 100 10 backward <query> # start end limit direction; `{labels} ts line`
//! eval error <query>                  # expected: a substring of the error
//! eval format <query>                 # expected: the canonical form (format_query output)
//! ```
//! A blank line or a line starting with `#` outside expectations ends nothing; a case's
//! expectations are its indented lines.

use std::path::Path;

use opsloop_logs::eval::{Direction, LogSource, MemSource, QueryParams, QueryResult, query_instant, query_range};
use opsloop_logs::labels::Labels;
use opsloop_logs::logql::{format_query, parse_expr};
use opsloop_logs::push::{Entry, PushStream};
use opsloop_logs::store::{Store, StoreOptions};

const S: i64 = 1_000_000_000;

fn secs(s: &str) -> i64 {
    (s.parse::<f64>().unwrap_or_else(|_| panic!("bad time {s}")) * 1e9).round() as i64
}

/// Splits `{...} rest` into the label set and the rest.
fn split_labels(s: &str) -> (Labels, &str) {
    let end = s.find('}').expect("labels") + 1;
    let l = if &s[..end] == "{}" { Labels::new() } else { Labels::parse(&s[..end]).expect("labels") };
    (l, s[end..].trim_start())
}

fn parse_data(lines: &[&str]) -> Vec<PushStream> {
    let mut out = Vec::new();
    for l in lines {
        let (labels, rest) = split_labels(l.trim());
        let (ts, rest) = rest.split_once(' ').unwrap_or((rest, ""));
        let (metadata, line) = if let Some(r) = rest.strip_prefix('@') {
            let (m, line) = split_labels(r);
            (m.into_pairs(), line)
        } else {
            (Vec::new(), rest)
        };
        out.push(PushStream { labels, entries: vec![Entry { ts: secs(ts), line: line.to_string(), metadata }] });
    }
    out
}

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn parse_value(s: &str) -> f64 {
    match s {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        _ => s.parse().unwrap_or_else(|_| panic!("bad value {s}")),
    }
}

fn check(src: &dyn LogSource, header: &str, expect: &[&str], ctx: &str) -> Result<(), String> {
    let rest = header.strip_prefix("eval ").ok_or("bad header")?;
    let (kind, rest) = rest.split_once(' ').ok_or("bad header")?;
    match kind {
        "instant" => {
            let rest = rest.strip_prefix("at ").ok_or("instant needs `at`")?;
            let (t, q) = rest.split_once(' ').ok_or("bad instant")?;
            let t = secs(t);
            let p = QueryParams { start: t - 3600 * S, end: t, step: 0, limit: 100, direction: Direction::Backward };
            let r = query_instant(src, q, &p).map_err(|e| format!("{ctx}: {q}: error {e}"))?;
            let got: Vec<(String, f64)> = match r {
                QueryResult::Vector(v) => v.into_iter().map(|s| (s.labels.to_string(), s.v)).collect(),
                QueryResult::Scalar { v, .. } => vec![("scalar".into(), v)],
                other => return Err(format!("{ctx}: {q}: unexpected {other:?}")),
            };
            let want: Vec<(String, f64)> = expect
                .iter()
                .map(|l| {
                    let l = l.trim();
                    let i = l.rfind(' ').expect("value");
                    (l[..i].to_string(), parse_value(&l[i + 1..]))
                })
                .collect();
            let ordered = q.starts_with("sort");
            let (mut g, mut w) = (got.clone(), want.clone());
            if !ordered {
                g.sort_by(|a, b| a.0.cmp(&b.0));
                w.sort_by(|a, b| a.0.cmp(&b.0));
            }
            if g.len() != w.len() || g.iter().zip(&w).any(|(a, b)| a.0 != b.0 || !close(a.1, b.1)) {
                return Err(format!("{ctx}: {q}\n  want {w:?}\n  got  {g:?}"));
            }
        }
        "range" => {
            let mut parts = rest.splitn(4, ' ');
            let (s, e, st) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            let q = parts.next().ok_or("bad range")?;
            let p = QueryParams {
                start: secs(s),
                end: secs(e),
                step: secs(st),
                limit: 100,
                direction: Direction::Backward,
            };
            let r = query_range(src, q, &p).map_err(|e| format!("{ctx}: {q}: error {e}"))?;
            let QueryResult::Matrix(m) = r else { return Err(format!("{ctx}: {q}: not a matrix")) };
            let steps: Vec<i64> = (0..).map(|i| p.start + i * p.step).take_while(|t| *t <= p.end).collect();
            let got: Vec<String> = m
                .iter()
                .map(|s| {
                    let vals: Vec<String> = steps
                        .iter()
                        .map(|t| match s.points.iter().find(|pt| pt.0 == *t) {
                            Some(pt) => format!("{}", pt.1),
                            None => "_".into(),
                        })
                        .collect();
                    format!("{} {}", s.labels, vals.join(" "))
                })
                .collect();
            let mut g = got.clone();
            g.sort();
            let mut w: Vec<String> = expect.iter().map(|l| l.trim().to_string()).collect();
            w.sort();
            let same = g.len() == w.len()
                && g.iter().zip(&w).all(|(a, b)| {
                    let (la, ra) = split_labels(a);
                    let (lb, rb) = split_labels(b);
                    la == lb
                        && ra.split(' ').count() == rb.split(' ').count()
                        && ra
                            .split(' ')
                            .zip(rb.split(' '))
                            .all(|(x, y)| x == y || (x != "_" && y != "_" && close(parse_value(x), parse_value(y))))
                });
            if !same {
                return Err(format!("{ctx}: {q}\n  want {w:?}\n  got  {g:?}"));
            }
        }
        "logs" => {
            let mut parts = rest.splitn(5, ' ');
            let (s, e, lim, dir) = (
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
            );
            let q = parts.next().ok_or("bad logs")?;
            let direction = if dir == "forward" { Direction::Forward } else { Direction::Backward };
            let p = QueryParams { start: secs(s), end: secs(e), step: 0, limit: lim.parse().unwrap_or(100), direction };
            let r = query_range(src, q, &p).map_err(|e| format!("{ctx}: {q}: error {e}"))?;
            let QueryResult::Streams(st) = r else { return Err(format!("{ctx}: {q}: not streams")) };
            let got: Vec<String> = st
                .iter()
                .flat_map(|s| {
                    s.entries
                        .iter()
                        .map(move |(t, l)| format!("{} {} {}", s.labels, fmt_secs(*t), l).trim_end().to_string())
                })
                .collect();
            let want: Vec<String> = expect.iter().map(|l| l.trim().to_string()).collect();
            if got != want {
                return Err(format!("{ctx}: {q}\n  want {want:#?}\n  got  {got:#?}"));
            }
        }
        "error" => {
            let q = rest;
            let p = QueryParams { start: 0, end: 100 * S, step: 10 * S, limit: 100, direction: Direction::Backward };
            match query_range(src, q, &p) {
                Ok(r) => return Err(format!("{ctx}: {q}: expected an error, got {r:?}")),
                Err(e) => {
                    let msg = e.to_string();
                    let want = expect.first().map(|s| s.trim()).unwrap_or("");
                    if !msg.contains(want) {
                        return Err(format!("{ctx}: {q}\n  want error containing {want:?}\n  got {msg:?}"));
                    }
                }
            }
        }
        "format" => {
            let q = rest;
            let e = parse_expr(q).map_err(|e| format!("{ctx}: {q}: {e}"))?;
            let got = format_query(&e);
            let want = expect.iter().map(|l| l.strip_prefix("  ").unwrap_or(l)).collect::<Vec<_>>().join("\n");
            if got != want {
                return Err(format!("{ctx}: {q}\n  want {want}\n  got  {got}"));
            }
            // And the printed form parses back to the same tree.
            let again = parse_expr(&got).map_err(|e| format!("{ctx}: reparse {got}: {e}"))?;
            if again != e {
                return Err(format!("{ctx}: {q}: the printed form parses to another tree"));
            }
        }
        other => return Err(format!("{ctx}: unknown eval kind {other}")),
    }
    Ok(())
}

fn fmt_secs(t: i64) -> String {
    if t % S == 0 { format!("{}", t / S) } else { format!("{}", t as f64 / 1e9) }
}

struct Case<'a> {
    line: usize,
    header: &'a str,
    expect: Vec<&'a str>,
}

struct Dataset<'a> {
    data: Vec<&'a str>,
    cases: Vec<Case<'a>>,
}

fn parse_file(text: &str) -> Vec<Dataset<'_>> {
    let mut sets: Vec<Dataset<'_>> = vec![Dataset { data: Vec::new(), cases: Vec::new() }];
    let mut in_data = false;
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let indented = line.starts_with(' ') || line.starts_with('\t');
        let cur = sets.last_mut().expect("a dataset");
        if indented {
            if in_data {
                cur.data.push(line);
            } else if let Some(c) = cur.cases.last_mut() {
                c.expect.push(line);
            }
            continue;
        }
        if line.trim() == "data" {
            sets.push(Dataset { data: Vec::new(), cases: Vec::new() });
            in_data = true;
            continue;
        }
        in_data = false;
        cur.cases.push(Case { line: i + 1, header: line.trim(), expect: Vec::new() });
    }
    sets
}

#[test]
fn logql_suite() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/logql");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let (mut passed, mut failures) = (0, Vec::new());
    for f in files {
        if f.extension().and_then(|e| e.to_str()) != Some("txt") {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        for set in parse_file(&text) {
            let pushes = parse_data(&set.data);
            let mem = MemSource::new(pushes.clone());
            // The same cases against the store: chunks cut small so that queries cross them.
            let tmp = tempfile::tempdir().unwrap();
            let store =
                Store::open(tmp.path(), StoreOptions { chunk_target_size: 64, ..StoreOptions::default() }).unwrap();
            store.push("fake", pushes).unwrap();
            let reader = store.reader("fake");
            for c in &set.cases {
                let ctx = format!("{name}:{}", c.line);
                for (which, src) in [("mem", &mem as &dyn LogSource), ("store", &reader as &dyn LogSource)] {
                    match check(src, c.header, &c.expect, &format!("{ctx} [{which}]")) {
                        Ok(()) => passed += 1,
                        Err(e) => failures.push(e),
                    }
                }
            }
        }
    }
    println!("{passed} passed, {} failed", failures.len());
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n\n"));
    assert!(passed >= 400, "only {passed} cases ran");
}
