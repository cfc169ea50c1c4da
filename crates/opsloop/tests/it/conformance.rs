//! gitlab-ci-local's own conformance cases (in `../shared/peers`, never copied here), run
//! against the real `opsloop run` with the peer's checker.

use std::path::PathBuf;
use std::process::Command;

fn peers() -> Option<PathBuf> {
    let shared = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/peers/gitlab-ci-local");
    shared.join("tools/check_cases.py").is_file().then_some(shared)
}

#[test]
fn gitlab_ci_local_conformance_cases_pass() {
    let Some(peers) = peers() else {
        assert!(std::env::var_os("CI").is_none(), "CI must have ../shared/peers");
        eprintln!("skipped: gitlab-ci-local conformance, because ../shared/peers is absent");
        return;
    };
    let cli = format!("{} run", crate::harness::BIN);
    let output = Command::new("python3")
        .arg(peers.join("tools/check_cases.py"))
        .arg(&cli)
        .env("STATE_DIR", ".opsloop")
        .env("NO_COLOR", "1")
        .output()
        .expect("python3 runs the checker");
    let report = String::from_utf8_lossy(&output.stdout);
    let failures: Vec<&str> = report.lines().filter(|l| l.starts_with("FAIL")).collect();
    let summary = report.lines().last().unwrap_or_default();
    eprintln!("gitlab-ci-local conformance: {summary}");
    assert!(
        output.status.success() && failures.is_empty(),
        "{summary}\n{}\n{}",
        failures.join("\n"),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!summary.starts_with("0 passed"), "the checker ran no case: {summary}");
}
