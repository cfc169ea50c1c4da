//! `opsloop scan secrets`, `opsloop audit` and `opsloop sbom` on a temporary repository: exit
//! codes, formats, git modes, baselines and bad input.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::harness::{BIN, opsloop, text};

const SECRET: &str = "AKIAZ7QH4KLMNB3TXW2R";

fn git(dir: &Path, args: &[&str]) -> bool {
    Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Ada")
        .env("GIT_AUTHOR_EMAIL", "ada@example.com")
        .env("GIT_COMMITTER_NAME", "Ada")
        .env("GIT_COMMITTER_EMAIL", "ada@example.com")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn scan_secrets_directory_git_staged_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = d.to_str().unwrap();
    std::fs::write(d.join("clean.txt"), "nothing here\n").unwrap();
    let out = opsloop(&["scan", "secrets", p]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    std::fs::write(d.join("app.env"), format!("AWS_KEY={SECRET}\n")).unwrap();
    let out = opsloop(&["scan", "secrets", p]);
    assert_eq!(out.status.code(), Some(1));
    let table = text(&out.stdout);
    assert!(table.contains("aws-access-token") && !table.contains(SECRET), "{table}");

    let out = opsloop(&["scan", "secrets", p, "--format", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["File"], "app.env");
    assert_eq!(json[0]["Secret"], SECRET);
    // That report as a baseline: nothing new. (Outside the scanned tree: it holds the secret.)
    let elsewhere = tempfile::tempdir().unwrap();
    let baseline = elsewhere.path().join("baseline.json");
    std::fs::write(&baseline, &out.stdout).unwrap();
    let out = opsloop(&["scan", "secrets", p, "--baseline", baseline.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    for format in ["sarif", "gitlab"] {
        let out = opsloop(&["scan", "secrets", p, "--format", format]);
        assert_eq!(out.status.code(), Some(1));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap();
    }
    // .gitleaksignore in the scanned directory.
    std::fs::write(d.join(".gitleaksignore"), "app.env:aws-access-token:1\n").unwrap();
    assert_eq!(opsloop(&["scan", "secrets", p]).status.code(), Some(0));
    std::fs::remove_file(d.join(".gitleaksignore")).unwrap();

    // Bad input: 2.
    assert_eq!(opsloop(&["scan", "secrets", &format!("{p}/missing")]).status.code(), Some(2));
    std::fs::write(d.join("bad.toml"), "[[rules]]\nid = \"x\"\nregex = '('\n").unwrap();
    let out = opsloop(&["scan", "secrets", p, "--config", d.join("bad.toml").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    std::fs::remove_file(d.join("bad.toml")).unwrap();

    // Standard input.
    let mut child = Command::new(BIN)
        .args(["scan", "secrets", "-", "--format", "json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(format!("k={SECRET}").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));

    // Git history and staged changes.
    if !git(d, &["init", "-q", "-b", "main"]) {
        opsloop_core::skip::skipped("git is not installed");
        return;
    }
    assert!(git(d, &["add", "."]));
    let out = opsloop(&["scan", "secrets", p, "--staged", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(git(d, &["commit", "-q", "-m", "add key"]));
    assert_eq!(opsloop(&["scan", "secrets", p, "--staged"]).status.code(), Some(0));
    let out = opsloop(&["scan", "secrets", p, "--git", "--format", "json"]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["Author"], "Ada");
    assert_eq!(json[0]["Message"], "add key");
    assert_eq!(json[0]["Commit"].as_str().unwrap().len(), 40);
    let out = opsloop(&["scan", "secrets", p, "--git", "--since", "HEAD"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(opsloop(&["scan", "secrets", p, "--git", "--since", "nope"]).status.code(), Some(2));
    // --since needs --git.
    assert_eq!(opsloop(&["scan", "secrets", p, "--since", "HEAD"]).status.code(), Some(2));
}

#[test]
fn audit_and_sbom() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = d.to_str().unwrap();
    std::fs::write(
        d.join("Cargo.lock"),
        "version = 4\n\n[[package]]\nname = \"app\"\nversion = \"0.1.0\"\ndependencies = [\"smallvec\"]\n\n[[package]]\nname = \"smallvec\"\nversion = \"1.6.0\"\nsource = \"registry+https://github.com/rust-lang/crates.io-index\"\n",
    )
    .unwrap();
    std::fs::create_dir_all(d.join("osv")).unwrap();
    std::fs::write(
        d.join("osv/RUSTSEC-2021-0003.json"),
        r#"{"id": "RUSTSEC-2021-0003", "aliases": ["CVE-2021-25900"], "summary": "Buffer overflow in SmallVec::insert_many",
  "affected": [{"package": {"ecosystem": "crates.io", "name": "smallvec"}, "ranges": [{"type": "SEMVER", "events": [{"introduced": "1.0.0"}, {"fixed": "1.6.1"}]}]}],
  "severity": [{"type": "CVSS_V3", "score": "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:L"}]}"#,
    )
    .unwrap();
    let db = d.join("osv");
    let db = db.to_str().unwrap();
    let out = opsloop(&["audit", p, "--db", db]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("RUSTSEC-2021-0003"), "{}", text(&out.stdout));
    assert!(text(&out.stdout).contains("fixed in 1.6.1"));
    // Medium (5.3) does not reach --fail-on high.
    assert_eq!(opsloop(&["audit", p, "--db", db, "--fail-on", "high"]).status.code(), Some(0));
    let out = opsloop(&["audit", p, "--db", db, "--format", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["vulnerabilities"][0]["severity"], "MEDIUM");
    let out = opsloop(&["audit", p, "--db", db, "--format", "sarif"]);
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap();
    std::fs::write(d.join("osv-scanner.toml"), "[[IgnoredVulns]]\nid = \"CVE-2021-25900\"\nreason = \"unused\"\n")
        .unwrap();
    assert_eq!(opsloop(&["audit", p, "--db", db]).status.code(), Some(0));
    assert_eq!(opsloop(&["audit", p, "--db", &format!("{p}/nope")]).status.code(), Some(2));

    let out = opsloop(&["sbom", p, "--format", "cyclonedx"]);
    assert_eq!(out.status.code(), Some(0));
    let cdx: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(cdx["components"][0]["purl"], "pkg:cargo/smallvec@1.6.0");
    let out = opsloop(&["sbom", p, "--format", "spdx", "--name", "demo"]);
    let spdx: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(spdx["name"], "demo");
    assert_eq!(opsloop(&["sbom", p, "--format", "xml"]).status.code(), Some(2));
    let help = text(&opsloop(&["scan", "secrets", "--help"]).stdout);
    assert!(help.contains("--since") && help.contains("--baseline"), "{help}");
}
