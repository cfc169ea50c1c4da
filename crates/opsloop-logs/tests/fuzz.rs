//! Fuzz-ish robustness: random and mutated input to the LogQL parser, the evaluator and the
//! push decoders must never panic; every query that parses prints to a form that parses back
//! to the same tree. Deterministic (a fixed-seed xorshift), so failures reproduce.

use opsloop_logs::eval::{Direction, MemSource, QueryParams, query_range};
use opsloop_logs::labels::Labels;
use opsloop_logs::logql::{format_query, parse_expr};
use opsloop_logs::push::{Entry, PushLimits, PushStream, decode_json, decode_protobuf, encode_protobuf};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const PIECES: &[&str] = &[
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
    "|=",
    "|~",
    "|",
    ">",
    ">=",
    "==",
    "<",
    "+",
    "-",
    "*",
    "/",
    "^",
    "%",
    "\"x\"",
    "`y`",
    "1",
    "1.5",
    "5m",
    "10KB",
    "app",
    "json",
    "logfmt",
    "--strict",
    "regexp",
    "pattern",
    "unpack",
    "line_format",
    "label_format",
    "drop",
    "keep",
    "unwrap",
    "duration",
    "bytes",
    "sum",
    "by",
    "without",
    "count_over_time",
    "rate",
    "topk",
    "offset",
    "bool",
    "on",
    "group_left",
    "or",
    "and",
    "unless",
    "vector",
    "\"{{.a | ToUpper}}\"",
    "\"<a> <_>\"",
    "\"(?P<x>.)\"",
    "__error__",
    " ",
    "\"",
    "{{",
    "}}",
    "\\",
    "ü",
    "\u{0}",
];

fn corpus() -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/logql");
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).expect("dir") {
        let text = std::fs::read_to_string(e.expect("entry").path()).expect("read");
        for l in text.lines() {
            let l = l.trim();
            for prefix in ["eval error ", "eval format "] {
                if let Some(q) = l.strip_prefix(prefix) {
                    out.push(q.to_string());
                }
            }
            if let Some(rest) = l.strip_prefix("eval instant at ") {
                out.push(rest.split_once(' ').map(|x| x.1.to_string()).unwrap_or_default());
            }
            if l.starts_with("eval logs ") || l.starts_with("eval range ") {
                let n = if l.starts_with("eval logs ") { 6 } else { 5 };
                out.push(l.splitn(n + 1, ' ').nth(n).unwrap_or_default().to_string());
            }
        }
    }
    out
}

fn mutate(rng: &mut Rng, s: &str) -> String {
    let mut chars: Vec<char> = s.chars().collect();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(chars.len() + 1);
        match rng.below(4) {
            0 if !chars.is_empty() => {
                let end = (at + 1 + rng.below(6)).min(chars.len());
                chars.drain(at.min(chars.len())..end);
            }
            1 => {
                let p = PIECES[rng.below(PIECES.len())];
                for (i, c) in p.chars().enumerate() {
                    chars.insert(at + i, c);
                }
            }
            2 if !chars.is_empty() => {
                let i = rng.below(chars.len());
                chars[i] = PIECES[rng.below(PIECES.len())].chars().next().unwrap_or('x');
            }
            _ => {
                let n = chars.len();
                chars.truncate(at.min(n));
            }
        }
    }
    chars.into_iter().collect()
}

fn data() -> MemSource {
    let l = |s: &str| Labels::parse(s).expect("labels");
    MemSource::new(vec![
        PushStream {
            labels: l(r#"{app="x", a="1"}"#),
            entries: (0..20)
                .map(|i| Entry {
                    ts: i * 1_000_000_000,
                    line: format!("level=info a={i} msg=\"m {i}\" d={i}ms"),
                    metadata: vec![],
                })
                .collect(),
        },
        PushStream {
            labels: l(r#"{app="y"}"#),
            entries: vec![Entry { ts: 5, line: r#"{"a":{"b":1},"c":"d"}"#.into(), metadata: vec![] }],
        },
    ])
}

#[test]
fn parser_and_evaluator_never_panic_and_round_trip() {
    let corpus = corpus();
    assert!(corpus.len() > 100, "corpus of {}", corpus.len());
    let src = data();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut parsed = 0;
    for round in 0..30_000 {
        let base = &corpus[rng.below(corpus.len())];
        let q = if round % 10 == 0 {
            // Pure noise from grammar pieces.
            (0..rng.below(12)).map(|_| PIECES[rng.below(PIECES.len())]).collect::<Vec<_>>().join(" ")
        } else {
            mutate(&mut rng, base)
        };
        let Ok(e) = parse_expr(&q) else { continue };
        parsed += 1;
        let printed = format_query(&e);
        let again = parse_expr(&printed).unwrap_or_else(|err| panic!("{q:?} printed as {printed:?}: {err}"));
        assert_eq!(again, e, "{q:?} printed as {printed:?} parses to another tree");
        if round % 5 == 0 {
            let p = QueryParams {
                start: 0,
                end: 30_000_000_000,
                step: 7_000_000_000,
                limit: 10,
                direction: Direction::Backward,
            };
            let _ = query_range(&src, &q, &p);
        }
    }
    assert!(parsed > 1000, "only {parsed} mutated queries parsed");
}

#[test]
fn push_decoders_never_panic() {
    let limits = PushLimits::default();
    let json = br#"{"streams":[{"stream":{"app":"x","env":"prod"},"values":[["1700000000000000000","hello",{"k":"v"}],["1700000000000000001","w"]]},{"labels":"{a=\"b\"}","entries":[{"ts":"2024-01-02T03:04:05Z","line":"x"}]}]}"#;
    let proto = encode_protobuf(&decode_json(json, &limits).expect("valid"));
    let mut rng = Rng(42);
    for _ in 0..20_000 {
        for base in [&json[..], &proto[..]] {
            let mut b = base.to_vec();
            for _ in 0..1 + rng.below(5) {
                let i = rng.below(b.len());
                match rng.below(3) {
                    0 => b[i] = rng.next() as u8,
                    1 => {
                        b.remove(i);
                    }
                    _ => b.insert(i, rng.next() as u8),
                }
                if b.is_empty() {
                    break;
                }
            }
            let _ = decode_json(&b, &limits);
            let _ = decode_protobuf(&b, &limits);
        }
        let noise: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
        let _ = decode_json(&noise, &limits);
        let _ = decode_protobuf(&noise, &limits);
    }
}
