//! Secret scanning end to end: every built-in rule on a realistic sample, gitleaks
//! configuration files, allowlists, `.gitleaksignore`, baselines, directory, git history and
//! staged scans, and the report formats.

#![allow(clippy::unwrap_used)] // Helpers shared by the tests unwrap too: a failure there is a test failure.

use std::path::Path;
use std::process::Command;

use opsloop_scan::secrets::{
    Baseline, Config, Format, GitRange, IgnoreList, ScanOptions, Scanner, github_checksum, report,
};

fn scanner() -> Scanner {
    Scanner::new(Config::builtin().unwrap().detector().unwrap())
}

fn github_token(prefix: &str, random: &str) -> String {
    assert_eq!(random.len(), 30);
    let sum = github_checksum(random.as_bytes());
    format!("{prefix}{random}{}", std::str::from_utf8(&sum).unwrap())
}

const PEM: &str = "-----BEGIN RSA PRIVATE KEY-----
MIIEpAIBAAKCAQEA3Tz2mr7SZiAMfQyuvBjM9Oi6ZpbHuYoXjnCCm1VuWLfsbYtY
7VgaVbI7d7wzLhH0hGmU6LTcNvjwT0KV6yYm9BmNSzq41FOw1WZ4hvRdVUDeCTXs
-----END RSA PRIVATE KEY-----";

const MIXED: &str = "q8Zr3mN5vX1kL7pT2wY9bC4dF6gH0jK8lM2nP4qR6sT8uV0wX2yZ4aB6cD8eF0gH2iJ4kL6mN8oP0qR2sT4uV6wQ8zR3";

fn samples() -> Vec<(&'static str, String)> {
    vec![
        ("aws-access-token", "aws_access_key_id = AKIAZ7QH4KLMNB3TXW2R".into()),
        (
            "aws-secret-access-key",
            "aws_secret_access_key = \"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\"".into(),
        ),
        ("gcp-api-key", "key: AIzaSyD3kLq8Xv_Tn2Bf9wQpR7sJm4Hc1Ye6Uo0".into()),
        (
            "gcp-service-account-key",
            "\"private_key_id\": \"3f9a1c7e5b2d8f4a6c0e9b7d5f3a1c8e6b4d2f0a\",".into(),
        ),
        (
            "azure-storage-account-key",
            format!("DefaultEndpointsProtocol=https;AccountName=prod;AccountKey={}==;", &MIXED[..86]),
        ),
        ("azure-ad-client-secret", "client_secret=\"abc8Q~Zr3mN5vX1kL7pT2wY9bC4dF6gH0jK8lM\"".into()),
        ("github-pat", format!("token: {}", github_token("ghp_", "Zr3mN5vX1kL7pT2wY9bC4dF6gH0jK8"))),
        ("github-oauth", format!("GH={}", github_token("gho_", "a8Zr3mN5vX1kL7pT2wY9bC4dF6gH0j"))),
        ("github-app-token", format!("x {} y", github_token("ghs_", "Qa8Zr3mN5vX1kL7pT2wY9bC4dF6gH0"))),
        (
            "github-fine-grained-pat",
            format!("GITHUB_TOKEN=github_pat_11ABCDEFG0{}_{}", &MIXED[..12], &MIXED[20..79]),
        ),
        ("gitlab-pat", "GITLAB_TOKEN=glpat-Zr3mN5vX1kL7pT2wY9bC".into()),
        ("slack-bot-token", "SLACK=xoxb-1234567890123-1234567890123-Zr3mN5vX1kL7pT2wY9bC4dF6".into()),
        (
            "slack-webhook-url",
            "url = https://hooks.slack.com/services/T01ABCDEF/B02GHIJKL/Zr3mN5vX1kL7pT2wY9bC4dF6".into(),
        ),
        ("stripe-access-token", "stripe.api_key = 'sk_live_Zr3mN5vX1kL7pT2wY9bC4dF6'".into()),
        ("twilio-api-key", "TWILIO_API_KEY=SK3f9a1c7e5b2d8f4a6c0e9b7d5f3a1c8e".into()),
        (
            "sendgrid-api-token",
            "SENDGRID=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".into(),
        ),
        ("npm-access-token", "//registry.npmjs.org/:_authToken=npm_Zr3mN5vX1kL7pT2wY9bC4dF6gH0jK8lM2nP4".into()),
        (
            "pypi-upload-token",
            "password = pypi-AgEIcHlwaS5vcmcCJDZmMmE4ZjM0LTk5ZWYtNGE1Mi1hZjQ2LWQ1NzA2YzM4ZTk5MgACKlsz".into(),
        ),
        ("dockerhub-pat", "DOCKER_PASSWORD=dckr_pat_Zr3mN5vX1kL7pT2wY9bC4dF6gH0".into()),
        ("docker-config-auth", "{\"auths\": {\"ghcr.io\": {\"auth\": \"dXNlcjpaUjNtTjV2WDFrTDdwVDJ3WTk=\"}}}".into()),
        ("private-key", format!("const KEY: &str = \"{PEM}\";")),
        (
            "jwt",
            "Authorization: Bearer eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4ifQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c".into(),
        ),
        ("generic-password", "db_password = \"Tr0ub4dor&3xQ9z\"".into()),
        ("generic-api-key", "client_secret: 9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c".into()),
    ]
}

#[test]
fn every_builtin_sample_is_found_by_its_rule() {
    let s = scanner();
    let mut missing = Vec::new();
    for (rule, text) in samples() {
        let report = s.scan_bytes(text.as_bytes(), "sample.txt");
        if !report.findings.iter().any(|f| f.rule_id == rule) {
            missing.push(format!("{rule}: got {:?}", report.findings.iter().map(|f| &f.rule_id).collect::<Vec<_>>()));
        }
    }
    assert!(missing.is_empty(), "not detected:\n{}", missing.join("\n"));
}

#[test]
fn ordinary_code_is_quiet() {
    let code = r#"
fn login(password: &str, token: Option<Token>) -> Result<Session, Error> {
    let secret = std::env::var("APP_SECRET")?;
    let api_key = config.api_key.clone();
    let password = "changeme-example-password";
    let token = ${TOKEN};
    password: String,
    let access_key = get_access_key(&self);
    AKIA_PLACEHOLDER
}
"#;
    let report = scanner().scan_bytes(code.as_bytes(), "src/lib.rs");
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
}

#[test]
fn github_tokens_with_a_wrong_checksum_are_ignored() {
    let good = github_token("ghp_", "Zr3mN5vX1kL7pT2wY9bC4dF6gH0jK8");
    let mut bad = good.clone().into_bytes();
    let last = bad.len() - 1;
    bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
    let bad = String::from_utf8(bad).unwrap();
    let s = scanner();
    assert_eq!(s.scan_bytes(good.as_bytes(), "a").findings.len(), 1);
    assert!(s.scan_bytes(bad.as_bytes(), "a").findings.is_empty());
}

#[test]
fn finding_positions_and_fingerprint() {
    let text = "line one\n  key = AKIAZ7QH4KLMNB3TXW2R\n";
    let report = scanner().scan_bytes(text.as_bytes(), "conf/app.ini");
    let f = &report.findings[0];
    assert_eq!(f.rule_id, "aws-access-token");
    assert_eq!((f.start_line, f.end_line), (2, 2));
    assert_eq!(f.start_column, 9);
    assert_eq!(f.end_column, 28);
    assert_eq!(f.secret, "AKIAZ7QH4KLMNB3TXW2R");
    assert_eq!(f.fingerprint, "conf/app.ini:aws-access-token:2");
    assert!(f.entropy > 3.0);
    // The PEM block spans lines.
    let pem = format!("x\n{PEM}\n");
    let r = scanner().scan_bytes(pem.as_bytes(), "id_rsa");
    let f = &r.findings[0];
    assert_eq!((f.rule_id.as_str(), f.start_line, f.end_line), ("private-key", 2, 5));
}

#[test]
fn inline_allow_comment() {
    let text = "key = AKIAZ7QH4KLMNB3TXW2R # gitleaks:allow\n";
    assert!(scanner().scan_bytes(text.as_bytes(), "a").findings.is_empty());
}

#[test]
fn gitleaks_config_with_extend_rules_and_allowlists() {
    let dir = tempfile::tempdir().unwrap();
    let toml = r#"
title = "custom"

[extend]
useDefault = true
disabledRules = ["generic-password"]

[[rules]]
id = "acme-token"
description = "ACME internal token"
regex = '''acme_(?P<body>[a-z0-9]{24})'''
secretGroup = 1
entropy = 2.5
keywords = ["acme_"]
tags = ["internal"]

  [[rules.allowlists]]
  description = "test fixtures"
  condition = "AND"
  paths = ['''^tests/''']
  stopwords = ["fixture"]

[rules.allowlist]
regexTarget = "line"
regexes = ['''ALLOWED-LINE''']

[[allowlists]]
description = "docs"
paths = ['''\.md$''']

[[allowlists]]
targetRules = ["aws-access-token"]
regexes = ['''AKIAIOSFODNN7EXAMPLE''']
"#;
    let path = dir.path().join(".gitleaks.toml");
    std::fs::write(&path, toml).unwrap();
    let config = Config::load(&path).unwrap();
    assert_eq!(config.title, "custom");
    assert!(config.rules.iter().any(|r| r.id == "aws-access-token"));
    assert!(!config.rules.iter().any(|r| r.id == "generic-password"));
    let s = Scanner::new(config.detector().unwrap());

    let hit = s.scan_bytes(b"t = acme_k3j5h7g9f1d2s4a6q8w0e1r3\n", "src/a.rs");
    assert_eq!(hit.findings.len(), 1);
    assert_eq!(hit.findings[0].secret, "k3j5h7g9f1d2s4a6q8w0e1r3");
    assert_eq!(hit.findings[0].tags, vec!["internal".to_owned()]);
    // AND: path and stopword must both match.
    let body = "acme_fixture5h7g9f1d2s4a6q8w0";
    assert!(s.scan_bytes(format!("{body}\n").as_bytes(), "tests/x.rs").findings.is_empty());
    assert_eq!(s.scan_bytes(format!("{body}\n").as_bytes(), "src/x.rs").findings.len(), 1);
    // Legacy single allowlist, line target.
    assert!(s.scan_bytes(b"acme_k3j5h7g9f1d2s4a6q8w0e1r3 ALLOWED-LINE", "a").findings.is_empty());
    // Global path allowlist, and a global allowlist targeted at one rule.
    assert!(s.scan_bytes(b"acme_k3j5h7g9f1d2s4a6q8w0e1r3", "README.md").findings.is_empty());
    assert!(s.scan_bytes(b"k = AKIAIOSFODNN7EXAMPLE", "a").findings.is_empty());
    assert_eq!(s.scan_bytes(b"k = AKIAZ7QH4KLMNB3TXW2R", "a").findings.len(), 1);
    // generic-password was disabled.
    assert!(s.scan_bytes(b"db_password = \"Tr0ub4dor&3xQ9z\"", "a").findings.is_empty());
}

#[test]
fn config_without_extend_is_the_whole_rule_set_and_errors_are_reported() {
    let c = Config::parse("[[rules]]\nid = \"x\"\nregex = 'x[0-9]{4}'\nkeywords = [\"x\"]\n", Path::new(".")).unwrap();
    assert_eq!(c.rules.len(), 1);
    assert!(Config::parse("[[rules]]\nid = \"x\"\nregex = '('\n", Path::new(".")).is_err());
    assert!(Config::parse("[[rules]]\nid = \"x\"\nregex = 'a'\nsecretGroup = 3\n", Path::new(".")).is_err());
    assert!(Config::parse("[[allowlists]]\ncondition = \"XOR\"\n", Path::new(".")).is_err());
    assert!(Config::parse("rules = 3", Path::new(".")).is_err());
    // A rule with no keywords scans everything; a path-only rule reports the file.
    let c = Config::parse(
        "[[rules]]\nid = \"x\"\nregex = 'zz[0-9]{4}'\n[[rules]]\nid = \"p12\"\npath = '''\\.p12$'''\n",
        Path::new("."),
    )
    .unwrap();
    let s = Scanner::new(c.detector().unwrap());
    assert_eq!(s.scan_bytes(b"a zz1234 b", "f").findings.len(), 1);
    assert_eq!(s.scan_bytes(b"", "certs/a.p12").findings[0].rule_id, "p12");
}

#[test]
fn extend_path_is_relative_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("base.toml"),
        "[[rules]]\nid = \"base\"\nregex = 'base_[0-9]{6}'\nkeywords = [\"base_\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("top.toml"),
        "[extend]\npath = \"base.toml\"\n[[rules]]\nid = \"top\"\nregex = 'top_[0-9]{6}'\nkeywords = [\"top_\"]\n",
    )
    .unwrap();
    let c = Config::load(&dir.path().join("top.toml")).unwrap();
    let ids: Vec<_> = c.rules.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["base", "top"]);
}

#[test]
fn gitleaksignore_and_baseline_suppress() {
    let text = "a = AKIAZ7QH4KLMNB3TXW2R\nb = AKIAQ2W3E4R5T6Y7U2I3\n";
    let all = scanner().scan_bytes(text.as_bytes(), "x.env");
    assert_eq!(all.findings.len(), 2);
    let ignore = IgnoreList::parse("# known\nx.env:aws-access-token:1\n");
    let r = scanner().with_ignore(ignore).scan_bytes(text.as_bytes(), "x.env");
    assert_eq!(r.findings.len(), 1);
    assert_eq!(r.stats.suppressed, 1);
    // A baseline written from a previous report suppresses the same secrets, even moved.
    let baseline = report::json(&all.findings[..1]);
    let moved = format!("\n\n{text}");
    let r = scanner().with_baseline(Baseline::parse(&baseline).unwrap()).scan_bytes(moved.as_bytes(), "x.env");
    assert_eq!(r.findings.len(), 1);
    assert_eq!(r.findings[0].secret, "AKIAQ2W3E4R5T6Y7U2I3");
    assert!(Baseline::parse("{not json").is_err());
}

#[test]
fn directory_scan_skips_binary_large_and_git() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("src/deep")).unwrap();
    std::fs::create_dir_all(root.join(".git")).unwrap();
    std::fs::write(root.join("src/deep/conf.py"), "AWS = 'AKIAZ7QH4KLMNB3TXW2R'\n").unwrap();
    std::fs::write(root.join(".git/config"), "AKIAZ7QH4KLMNB3TXW2R").unwrap();
    std::fs::write(root.join("bin.dat"), b"\0\0AKIAZ7QH4KLMNB3TXW2R").unwrap();
    std::fs::write(root.join("big.txt"), format!("{}AKIAZ7QH4KLMNB3TXW2R", " ".repeat(5000))).unwrap();
    let s = scanner().with_options(ScanOptions { max_file_size: 4096, threads: 2 });
    let r = s.scan_dir(root).unwrap();
    assert_eq!(r.findings.len(), 1, "{:#?}", r.findings);
    assert_eq!(r.findings[0].file, "src/deep/conf.py");
    assert_eq!(r.stats.skipped_binary, 1);
    assert_eq!(r.stats.skipped_large, 1);
    assert!(s.scan_dir(&root.join("missing")).is_err());
}

#[test]
fn reader_scan() {
    let r = scanner().scan_reader(&b"x=AKIAZ7QH4KLMNB3TXW2R"[..]).unwrap();
    assert_eq!(r.findings[0].fingerprint, ":aws-access-token:1");
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Ada")
        .env("GIT_AUTHOR_EMAIL", "ada@example.com")
        .env("GIT_COMMITTER_NAME", "Ada")
        .env("GIT_COMMITTER_EMAIL", "ada@example.com")
        .env("GIT_AUTHOR_DATE", "2024-03-01T10:00:00Z")
        .env("GIT_COMMITTER_DATE", "2024-03-01T10:00:00Z")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn git_available() -> bool {
    if Command::new("git").arg("--version").output().is_ok() {
        return true;
    }
    opsloop_core::skip::skipped("git is not installed");
    false
}

fn rev(dir: &Path, spec: &str) -> String {
    let out = Command::new("git").args(["rev-parse", spec]).current_dir(dir).output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn git_history_reports_the_commit_that_added_each_secret_once() {
    if !git_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    git(d, &["init", "-q", "-b", "main"]);
    std::fs::write(d.join("a.env"), "KEY=AKIAZ7QH4KLMNB3TXW2R\n").unwrap();
    git(d, &["add", "."]);
    git(d, &["commit", "-q", "-m", "add key"]);
    let first = rev(d, "HEAD");
    // Same blob under another name, plus an edit above the secret: neither is a new finding.
    std::fs::write(d.join("copy.env"), "KEY=AKIAZ7QH4KLMNB3TXW2R\n").unwrap();
    std::fs::write(d.join("a.env"), "# comment\nKEY=AKIAZ7QH4KLMNB3TXW2R\n").unwrap();
    git(d, &["add", "."]);
    git(d, &["commit", "-q", "-m", "copy"]);
    std::fs::create_dir_all(d.join("sub")).unwrap();
    std::fs::write(d.join("sub/b.txt"), "stripe: sk_live_Zr3mN5vX1kL7pT2wY9bC4dF6\n").unwrap();
    git(d, &["add", "."]);
    git(d, &["commit", "-q", "-m", "stripe"]);
    let third = rev(d, "HEAD");
    // Removing the secret later does not hide it from history.
    std::fs::remove_file(d.join("sub/b.txt")).unwrap();
    git(d, &["add", "-A"]);
    git(d, &["commit", "-q", "-m", "remove"]);

    let r = scanner().scan_git(d, &GitRange::All).unwrap();
    let got: Vec<_> = r.findings.iter().map(|f| (f.file.as_str(), f.rule_id.as_str(), f.commit.as_str())).collect();
    assert_eq!(
        got,
        [("a.env", "aws-access-token", first.as_str()), ("sub/b.txt", "stripe-access-token", third.as_str()),]
    );
    assert_eq!(r.stats.commits, 4);
    let f = &r.findings[0];
    assert_eq!((f.author.as_str(), f.email.as_str()), ("Ada", "ada@example.com"));
    assert_eq!(f.date, "2024-03-01T10:00:00Z");
    assert_eq!(f.message, "add key");
    assert_eq!(f.fingerprint, format!("{first}:a.env:aws-access-token:1"));

    let since = scanner().scan_git(d, &GitRange::Since(first.clone())).unwrap();
    assert_eq!(since.findings.len(), 1);
    assert_eq!(since.findings[0].rule_id, "stripe-access-token");
    let range = scanner().scan_git(d, &GitRange::parse(&format!("{first}..{third}"))).unwrap();
    assert_eq!(range.findings.len(), 1);
    assert!(scanner().scan_git(d, &GitRange::Since("no-such-ref".into())).is_err());
}

#[test]
fn staged_scan_sees_only_what_is_staged() {
    if !git_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    git(d, &["init", "-q", "-b", "main"]);
    // Before the first commit everything staged counts.
    std::fs::write(d.join("a.env"), "KEY=AKIAZ7QH4KLMNB3TXW2R\n").unwrap();
    git(d, &["add", "."]);
    assert_eq!(scanner().scan_staged(d).unwrap().findings.len(), 1);
    git(d, &["commit", "-q", "-m", "one"]);
    assert!(scanner().scan_staged(d).unwrap().findings.is_empty());
    std::fs::write(d.join("b.env"), "T=sk_live_Zr3mN5vX1kL7pT2wY9bC4dF6\n").unwrap();
    std::fs::write(d.join("c.env"), "T=npm_Zr3mN5vX1kL7pT2wY9bC4dF6gH0jK8lM2nP4\n").unwrap();
    git(d, &["add", "b.env"]);
    let r = scanner().scan_staged(d).unwrap();
    assert_eq!(r.findings.len(), 1);
    assert_eq!(r.findings[0].file, "b.env");
    assert!(r.findings[0].commit.is_empty());
}

#[test]
fn report_formats() {
    let s = scanner();
    let r = s.scan_bytes(b"k = AKIAZ7QH4KLMNB3TXW2R\n", "a.env");
    let table = report::render(Format::Table, &r.findings, s.detector().rules());
    assert!(table.contains("AKIA*****"), "{table}");
    assert!(!table.contains("AKIAZ7QH4KLMNB3TXW2R"));
    let json: serde_json::Value = serde_json::from_str(&report::render(Format::Json, &r.findings, &[])).unwrap();
    for field in [
        "RuleID",
        "Description",
        "StartLine",
        "EndLine",
        "StartColumn",
        "EndColumn",
        "Match",
        "Secret",
        "File",
        "Commit",
        "Entropy",
        "Author",
        "Email",
        "Date",
        "Message",
        "Tags",
        "Fingerprint",
    ] {
        assert!(json[0].get(field).is_some(), "{field}");
    }
    let sarif: serde_json::Value =
        serde_json::from_str(&report::render(Format::Sarif, &r.findings, s.detector().rules())).unwrap();
    assert_eq!(sarif["version"], "2.1.0");
    assert_eq!(sarif["runs"][0]["results"][0]["ruleId"], "aws-access-token");
    assert_eq!(sarif["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"]["startLine"], 1);
    let gl: serde_json::Value = serde_json::from_str(&report::render(Format::Gitlab, &r.findings, &[])).unwrap();
    assert!(gl["version"].as_str().unwrap().starts_with("15."));
    assert_eq!(gl["scan"]["type"], "secret_detection");
    assert_eq!(gl["vulnerabilities"][0]["location"]["file"], "a.env");
    assert_eq!(gl["vulnerabilities"][0]["identifiers"][0]["value"], "aws-access-token");
    assert!("xml".parse::<Format>().is_err());
}
