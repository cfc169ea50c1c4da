//! The architecture's rules, checked: which crate may depend on which (read from
//! `cargo metadata`), and that every module says what it is for (`//!`). A new crate fails
//! here until its place is written into `ALLOWED` (and ARCHITECTURE.md).

use std::collections::BTreeMap;
use std::path::Path;

/// Each workspace crate and the workspace crates it may depend on (normal dependencies).
/// Engines meet only through the core and the shared configuration vocabulary; the runner
/// executes the pipeline engine's plans (the two halves of CI); only the server and the
/// binary see everything.
const ALLOWED: &[(&str, &[&str])] = &[
    ("opsloop-core", &[]),
    ("opsloop-config", &[]),
    ("opsloop-pipeline", &["opsloop-core", "opsloop-config"]),
    ("opsloop-runner", &["opsloop-core", "opsloop-config", "opsloop-pipeline"]),
    ("opsloop-deploy", &["opsloop-core", "opsloop-config"]),
    ("opsloop-secure", &["opsloop-core", "opsloop-config"]),
    ("opsloop-metrics", &["opsloop-core", "opsloop-config"]),
    ("opsloop-alert", &["opsloop-core", "opsloop-config"]),
    ("opsloop-checks", &["opsloop-core", "opsloop-config"]),
    ("opsloop-logs", &["opsloop-core", "opsloop-config"]),
    ("opsloop-scan", &["opsloop-core", "opsloop-config"]),
    ("opsloop-store", &["opsloop-core"]),
    // The server hosts every engine and the store; the binary, the server too.
    ("opsloop-server", EVERY_CRATE),
    ("opsloop", EVERY_CRATE),
];

/// Every workspace crate: what the server (all but the binary and itself) and the binary
/// (all but itself) may use. A crate's own name in its list never matches a dependency.
const EVERY_CRATE: &[&str] = &[
    "opsloop-core",
    "opsloop-config",
    "opsloop-pipeline",
    "opsloop-runner",
    "opsloop-deploy",
    "opsloop-secure",
    "opsloop-metrics",
    "opsloop-alert",
    "opsloop-checks",
    "opsloop-logs",
    "opsloop-scan",
    "opsloop-store",
    "opsloop-server",
];

/// What only the server speaks: HTTP frameworks, HTML and the database. No engine, nor the
/// core, nor the vocabulary, may depend on them.
const SERVER_ONLY: &[&str] = &["axum", "maud", "sqlx", "utoipa", "tower-http"];

fn metadata() -> serde_json::Value {
    let output = std::process::Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
        .output()
        .expect("cargo metadata runs");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("cargo metadata's JSON")
}

#[test]
fn crates_depend_only_on_what_their_place_allows() {
    let metadata = metadata();
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut wrong = Vec::new();
    for package in metadata["packages"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap();
        let Some(permitted) = allowed.get(name) else {
            wrong.push(format!("{name} is a new crate: give it a place in ALLOWED and in ARCHITECTURE.md"));
            continue;
        };
        let engine = !matches!(name, "opsloop-server" | "opsloop" | "opsloop-store");
        for dependency in package["dependencies"].as_array().unwrap() {
            // Dev-dependencies (tests) may reach further; what ships may not.
            if !dependency["kind"].is_null() {
                continue;
            }
            let dependency = dependency["name"].as_str().unwrap();
            if dependency.starts_with("opsloop") && !permitted.contains(&dependency) {
                wrong.push(format!("{name} depends on {dependency}"));
            }
            if engine && SERVER_ONLY.contains(&dependency) {
                wrong.push(format!("{name} depends on {dependency}, which only the server may"));
            }
        }
    }
    assert!(wrong.is_empty(), "the dependency rules are broken:\n{}", wrong.join("\n"));
}

#[test]
fn every_module_says_what_it_is_for() {
    let crates = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    // Sources only (`crates/*/src`), not tests, benches or build output.
    let mut stack: Vec<_> = std::fs::read_dir(crates).unwrap().flatten().map(|e| e.path().join("src")).collect();
    let mut undocumented = Vec::new();
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for path in entries.flatten().map(|e| e.path()) {
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                seen += 1;
                if !std::fs::read_to_string(&path).unwrap().trim_start().starts_with("//!") {
                    undocumented.push(path.display().to_string());
                }
            }
        }
    }
    assert!(seen > 50, "the sources were found ({seen} files)");
    assert!(undocumented.is_empty(), "modules without a `//!` doc:\n{}", undocumented.join("\n"));
}
