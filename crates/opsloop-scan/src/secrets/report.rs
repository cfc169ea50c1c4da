//! Report formats for secret findings: a redacted text table, gitleaks' JSON, SARIF 2.1.0 and
//! GitLab's secret-detection report (schema 15.x).

use std::fmt::Write as _;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::detect::Finding;
use super::rule::Rule;

/// Output formats of `scan secrets`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Sarif,
    Gitlab,
}

impl std::str::FromStr for Format {
    type Err = super::SecretsError;
    fn from_str(s: &str) -> Result<Format, Self::Err> {
        match s {
            "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            "sarif" => Ok(Format::Sarif),
            "gitlab" => Ok(Format::Gitlab),
            other => Err(super::SecretsError::Format(other.to_owned())),
        }
    }
}

const TOOL: &str = "opsloop";
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Renders findings in `format`. `rules` describes the rules in SARIF's driver section.
pub fn render(format: Format, findings: &[Finding], rules: &[Rule]) -> String {
    match format {
        Format::Table => table(findings),
        Format::Json => json(findings),
        Format::Sarif => sarif(findings, rules),
        Format::Gitlab => gitlab(findings),
    }
}

/// One block per finding, the secret redacted.
pub fn table(findings: &[Finding]) -> String {
    let mut out = String::new();
    for f in findings {
        let _ = writeln!(out, "Finding:     {}", redact_in(&f.matched, &f.secret));
        let _ = writeln!(out, "Secret:      {}", f.redacted_secret());
        let _ = writeln!(out, "RuleID:      {}", f.rule_id);
        let _ = writeln!(out, "Entropy:     {:.6}", f.entropy);
        let _ = writeln!(out, "File:        {}", f.file);
        let _ = writeln!(out, "Line:        {}", f.start_line);
        if !f.commit.is_empty() {
            let _ = writeln!(out, "Commit:      {}", f.commit);
            let _ = writeln!(out, "Author:      {} <{}>", f.author, f.email);
            let _ = writeln!(out, "Date:        {}", f.date);
        }
        let _ = writeln!(out, "Fingerprint: {}", f.fingerprint);
        out.push('\n');
    }
    let _ = writeln!(out, "{} finding(s)", findings.len());
    out
}

fn redact_in(matched: &str, secret: &str) -> String {
    let first = matched.lines().next().unwrap_or_default();
    let shown =
        if secret.is_empty() { first.to_owned() } else { first.replace(secret, &super::detect::redact(secret)) };
    if shown.chars().count() > 120 {
        let cut: String = shown.chars().take(117).collect();
        format!("{cut}...")
    } else {
        shown
    }
}

pub fn json(findings: &[Finding]) -> String {
    serde_json::to_string_pretty(findings).unwrap_or_else(|_| "[]".into())
}

pub fn sarif(findings: &[Finding], rules: &[Rule]) -> String {
    let rules: Vec<Value> =
        rules.iter().map(|r| json!({"id": r.id, "name": r.id, "shortDescription": {"text": r.description}})).collect();
    let results: Vec<Value> = findings
        .iter()
        .map(|f| {
            let mut result = json!({
                "ruleId": f.rule_id,
                "level": "error",
                "message": {"text": format!("{} has detected a secret in {}.", f.rule_id, f.file)},
                "locations": [{
                    "physicalLocation": {
                        "artifactLocation": {"uri": if f.file.is_empty() { "stdin" } else { &f.file }},
                        "region": {
                            "startLine": f.start_line.max(1),
                            "startColumn": f.start_column.max(1),
                            "endLine": f.end_line.max(1),
                            "endColumn": f.end_column.max(1) + 1,
                            "snippet": {"text": super::detect::redact(&f.secret)}
                        }
                    }
                }],
                "partialFingerprints": {"opsloop/v1": f.fingerprint},
            });
            if !f.commit.is_empty() {
                result["partialFingerprints"]["commitSha"] = json!(f.commit);
                result["partialFingerprints"]["author"] = json!(f.author);
                result["partialFingerprints"]["email"] = json!(f.email);
                result["partialFingerprints"]["date"] = json!(f.date);
            }
            result
        })
        .collect();
    let doc = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": TOOL,
                "semanticVersion": VERSION,
                "informationUri": "https://example.invalid/opsloop",
                "rules": rules,
            }},
            "results": results,
        }]
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

/// A stable UUID-shaped id from a fingerprint, so that GitLab tracks the same finding across
/// pipelines.
fn uuid_from(text: &str) -> String {
    let h = hex::encode(Sha256::digest(text.as_bytes()));
    format!("{}-{}-{}-{}-{}", &h[0..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

pub fn gitlab(findings: &[Finding]) -> String {
    let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S").to_string();
    let vulns: Vec<Value> = findings
        .iter()
        .map(|f| {
            let mut location = json!({
                "file": f.file,
                "start_line": f.start_line,
                "end_line": f.end_line,
                "commit": {"sha": if f.commit.is_empty() { "0000000" } else { &f.commit }},
            });
            if !f.commit.is_empty() {
                location["commit"]["author"] = json!(f.author);
                location["commit"]["date"] = json!(f.date);
                location["commit"]["message"] = json!(f.message);
            }
            json!({
                "id": uuid_from(&f.fingerprint),
                "name": f.description,
                "description": format!("{} detected in {} (line {}).", f.description, f.file, f.start_line),
                "severity": "Critical",
                "location": location,
                "identifiers": [{
                    "type": "gitleaks_rule_id",
                    "name": format!("Gitleaks rule ID {}", f.rule_id),
                    "value": f.rule_id,
                }],
                "raw_source_code_extract": super::detect::redact(&f.secret),
            })
        })
        .collect();
    let doc = json!({
        "version": "15.2.1",
        "vulnerabilities": vulns,
        "scan": {
            "analyzer": {"id": TOOL, "name": TOOL, "version": VERSION, "vendor": {"name": TOOL}},
            "scanner": {"id": "opsloop-secrets", "name": "opsloop secrets", "version": VERSION, "vendor": {"name": TOOL}},
            "type": "secret_detection",
            "start_time": now,
            "end_time": now,
            "status": "success",
        }
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}
