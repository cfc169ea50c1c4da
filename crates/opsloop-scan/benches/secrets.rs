//! Secret-scanning throughput (MB/s): a generated tree of source-like text with a few secrets,
//! scanned through the directory walker (read + detect), and the detector alone on one buffer.
//! `OPSLOOP_SCAN_BENCH_DIR=~/.cargo/registry/src cargo bench -p opsloop-scan` also measures a
//! real tree.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use opsloop_scan::secrets::{Chunk, Config, Scanner};

const LINES: &[&str] = &[
    "fn handle(req: &Request, token: Option<&str>) -> Result<Response, Error> {",
    "    let config = Config::from_env().context(\"reading configuration\")?;",
    "    for (i, item) in items.iter().enumerate() { total += item.price * item.quantity; }",
    "    // The secret store is consulted once per request; see ARCHITECTURE.md.",
    "    let password_hash = argon2::hash(&input, &salt)?;",
    "import os, sys, json  # standard library only",
    "def parse_args(argv): return argparse.ArgumentParser(description='tool').parse_args(argv)",
    "    self.api_key = os.environ.get('API_KEY')",
    "const MAX_RETRIES = 5; let backoff = Duration::from_millis(250 * attempt);",
    "    <div class=\"container\"><span>{{ user.name }}</span></div>",
    "SELECT id, name, created_at FROM users WHERE deleted_at IS NULL ORDER BY id;",
    "    assert_eq!(parse(\"1.2.3\"), Ok(Version { major: 1, minor: 2, patch: 3 }));",
    "    match state { State::Running => continue, State::Stopped => break, _ => {} }",
    "    log::debug!(\"refreshing access token for {}\", account.id);",
];

fn generate(root: &Path, files: usize, size: usize) -> u64 {
    let mut total = 0;
    for f in 0..files {
        let dir = root.join(format!("d{}", f % 37));
        std::fs::create_dir_all(&dir).unwrap();
        let mut text = String::with_capacity(size + 200);
        let mut i = f;
        while text.len() < size {
            text.push_str(LINES[i % LINES.len()]);
            text.push('\n');
            i = i.wrapping_mul(31).wrapping_add(7);
        }
        if f % 97 == 0 {
            text.push_str("aws_access_key_id = AKIAZ7QH4KLMNB3TXW2R\n");
        }
        if f % 211 == 0 {
            text.push_str("STRIPE=sk_live_Zr3mN5vX1kL7pT2wY9bC4dF6\n");
        }
        total += text.len() as u64;
        std::fs::write(dir.join(format!("f{f}.rs")), text).unwrap();
    }
    total
}

fn tree_bytes(root: &Path) -> u64 {
    walkdir::WalkDir::new(root)
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file())
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

fn bench(c: &mut Criterion) {
    let scanner = Scanner::new(Config::builtin().unwrap().detector().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let bytes = generate(dir.path(), 1500, 40_000);

    let mut g = c.benchmark_group("secrets");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(bytes));
    g.bench_function("scan_dir_generated_60MB", |b| {
        b.iter(|| {
            let r = scanner.scan_dir(dir.path()).unwrap();
            assert!(r.findings.len() >= 16);
        });
    });
    let one: Vec<u8> = std::fs::read(dir.path().join("d0/f0.rs")).unwrap().repeat(100);
    g.throughput(Throughput::Bytes(one.len() as u64));
    g.bench_function("detect_one_buffer", |b| {
        b.iter(|| scanner.detector().detect(&Chunk { data: &one, path: "x.rs", commit: None }));
    });
    if let Ok(real) = std::env::var("OPSLOOP_SCAN_BENCH_DIR") {
        let real = Path::new(&real);
        g.throughput(Throughput::Bytes(tree_bytes(real)));
        g.bench_function("scan_dir_real_tree", |b| b.iter(|| scanner.scan_dir(real).unwrap()));
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
