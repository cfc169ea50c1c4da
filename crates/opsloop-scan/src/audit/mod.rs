//! Dependency audit (the osv-scanner role): lockfiles to an inventory of packages, matched
//! against an offline OSV database. Records that are aliases of each other (a GHSA and its CVE)
//! make one finding; `osv-scanner.toml` ignore entries suppress findings until they expire.

pub mod cvss;
pub mod lockfile;
pub mod osv;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::json;

pub use cvss::Severity;
pub use lockfile::{inventory, parse as parse_lockfile};
pub use osv::{Database, Record};

use crate::version::Ecosystem;

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message}")]
    Lockfile { path: String, message: String },
    #[error("OSV database {path}: {message}")]
    Database { path: String, message: String },
    #[error("{path}: {message}")]
    Ignore { path: String, message: String },
    #[error("unknown severity {0:?} (low, medium, high, critical)")]
    Severity(String),
    #[error("unknown report format {0:?} (table, json, sarif)")]
    Format(String),
}

/// A content hash from a lockfile, hex-encoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Hash {
    Sha1(String),
    Sha256(String),
    Sha512(String),
}

/// A dependency edge: the name, and the version when the lockfile says which.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DepRef {
    pub name: String,
    pub version: Option<String>,
}

/// One package of the inventory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    pub ecosystem: Ecosystem,
    pub name: String,
    pub version: String,
    /// The project depends on it itself (not only through another package).
    pub direct: bool,
    /// The lockfile it was read from, relative to the scanned root.
    pub source: String,
    pub hashes: Vec<Hash>,
    pub dependencies: Vec<DepRef>,
}

impl Package {
    /// Its package URL.
    pub fn purl(&self) -> String {
        let enc = |s: &str| {
            s.bytes()
                .map(|b| match b {
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'.' | b'-' | b'_' | b'~' => char::from(b).to_string(),
                    _ => format!("%{b:02X}"),
                })
                .collect::<String>()
        };
        let t = self.ecosystem.purl_type();
        let name = match self.ecosystem {
            Ecosystem::Maven => self
                .name
                .split_once(':')
                .map(|(g, a)| format!("{}/{}", enc(g), enc(a)))
                .unwrap_or_else(|| enc(&self.name)),
            Ecosystem::Npm | Ecosystem::Packagist | Ecosystem::Go => {
                self.name.split('/').map(&enc).collect::<Vec<_>>().join("/")
            }
            Ecosystem::PyPI => enc(&osv::normalize_name(Ecosystem::PyPI, &self.name)),
            _ => enc(&self.name),
        };
        let version = if self.ecosystem == Ecosystem::Go {
            format!("v{}", self.version.trim_start_matches('v'))
        } else {
            self.version.clone()
        };
        format!("pkg:{t}/{name}@{}", enc(&version))
    }
}

/// A vulnerable package: one finding per package and group of aliased records.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Vulnerability {
    /// The primary id (a non-CVE id when there is one: GHSA, RUSTSEC, PYSEC, …).
    pub id: String,
    /// Every other id of the merged records.
    pub aliases: Vec<String>,
    pub summary: String,
    pub severity: Severity,
    pub score: Option<f64>,
    pub ecosystem: Ecosystem,
    pub package: String,
    pub version: String,
    pub direct: bool,
    pub source: String,
    /// The nearest version that fixes it.
    pub fixed: Option<String>,
}

/// `osv-scanner.toml`'s `[[IgnoredVulns]]`.
#[derive(Debug, Clone, Default)]
pub struct IgnoreConfig {
    pub entries: Vec<IgnoreEntry>,
}

#[derive(Debug, Clone)]
pub struct IgnoreEntry {
    pub id: String,
    /// Ignored until then; None: for ever.
    pub until: Option<jiff::Timestamp>,
    pub reason: String,
}

impl IgnoreConfig {
    pub fn parse(path: &str, text: &str) -> Result<IgnoreConfig, AuditError> {
        let bad = |message: String| AuditError::Ignore { path: path.to_owned(), message };
        let doc: toml::Table = text.parse().map_err(|e: toml::de::Error| bad(e.to_string()))?;
        let mut entries = Vec::new();
        for v in doc.get("IgnoredVulns").and_then(toml::Value::as_array).map(Vec::as_slice).unwrap_or_default() {
            let id =
                v.get("id").and_then(toml::Value::as_str).ok_or_else(|| bad("[[IgnoredVulns]] without id".into()))?;
            let until = match v.get("ignoreUntil") {
                None => None,
                Some(t) => Some(
                    parse_until(t).ok_or_else(|| bad(format!("{id}: ignoreUntil {t} is not a date or date-time")))?,
                ),
            };
            entries.push(IgnoreEntry {
                id: id.to_owned(),
                until,
                reason: v.get("reason").and_then(toml::Value::as_str).unwrap_or_default().to_owned(),
            });
        }
        Ok(IgnoreConfig { entries })
    }

    /// Reads the file; a missing file ignores nothing.
    pub fn load(path: &Path) -> Result<IgnoreConfig, AuditError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&path.display().to_string(), &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(IgnoreConfig::default()),
            Err(source) => Err(AuditError::Io { path: path.to_path_buf(), source }),
        }
    }

    fn ignores(&self, ids: &[&str], now: jiff::Timestamp) -> bool {
        self.entries.iter().any(|e| ids.contains(&e.id.as_str()) && e.until.is_none_or(|u| now < u))
    }
}

/// TOML gives a date-time value (`2024-01-01T00:00:00Z`, or a bare date) or a string.
fn parse_until(v: &toml::Value) -> Option<jiff::Timestamp> {
    let text = match v {
        toml::Value::String(s) => s.clone(),
        toml::Value::Datetime(d) => d.to_string(),
        _ => return None,
    };
    if let Ok(ts) = text.parse::<jiff::Timestamp>() {
        return Some(ts);
    }
    let date: jiff::civil::Date = text.get(..10)?.parse().ok()?;
    date.to_zoned(jiff::tz::TimeZone::UTC).ok().map(|z| z.timestamp())
}

/// Findings plus how many an ignore entry suppressed.
#[derive(Debug, Clone, Default)]
pub struct AuditReport {
    pub vulnerabilities: Vec<Vulnerability>,
    pub ignored: usize,
    pub packages: usize,
}

impl AuditReport {
    /// True when a finding is at or above `threshold`. Unknown severities count as failing:
    /// not knowing how bad something is is no reason to let it through.
    pub fn fails(&self, threshold: Severity) -> bool {
        self.vulnerabilities.iter().any(|v| v.severity >= threshold || v.severity == Severity::Unknown)
    }
}

/// Matches every package against the database.
pub fn audit(packages: &[Package], db: &Database, ignore: &IgnoreConfig, now: jiff::Timestamp) -> AuditReport {
    let mut report = AuditReport { packages: packages.len(), ..AuditReport::default() };
    for p in packages {
        let hits: Vec<_> = db
            .lookup(p.ecosystem, &p.name)
            .iter()
            .filter_map(|r| r.affects(p.ecosystem, &p.name, &p.version).map(|h| (r, h)))
            .collect();
        // Group records that share an id or alias (union of overlapping id sets).
        let mut groups: Vec<(BTreeSet<String>, Vec<usize>)> = Vec::new();
        for (i, (r, _)) in hits.iter().enumerate() {
            let ids: BTreeSet<String> = std::iter::once(r.id.clone()).chain(r.aliases.iter().cloned()).collect();
            let mut merged = (ids, vec![i]);
            groups.retain(|(g, members)| {
                if g.is_disjoint(&merged.0) {
                    true
                } else {
                    merged.0.extend(g.iter().cloned());
                    merged.1.extend(members.iter().copied());
                    false
                }
            });
            groups.push(merged);
        }
        for (ids, members) in groups {
            let id_list: Vec<&str> = ids.iter().map(String::as_str).collect();
            if ignore.ignores(&id_list, now) {
                report.ignored += 1;
                continue;
            }
            let records: Vec<_> = members.iter().map(|&i| &hits[i]).collect();
            let primary = records
                .iter()
                .map(|(r, _)| r.id.as_str())
                .min_by_key(|id| (id.starts_with("CVE-"), *id))
                .unwrap_or_default()
                .to_owned();
            let (severity, score) = records
                .iter()
                .map(|(r, _)| r.severity())
                .max_by(|a, b| a.0.cmp(&b.0).then(a.1.unwrap_or(0.0).total_cmp(&b.1.unwrap_or(0.0))))
                .unwrap_or((Severity::Unknown, None));
            let scheme = p.ecosystem.scheme();
            let fixed = records.iter().filter_map(|(_, h)| h.fixed.clone()).min_by(|a, b| scheme.compare(a, b));
            let summary = records.iter().map(|(r, _)| r.summary.clone()).find(|s| !s.is_empty()).unwrap_or_default();
            report.vulnerabilities.push(Vulnerability {
                aliases: ids.into_iter().filter(|i| *i != primary).collect(),
                id: primary,
                summary,
                severity,
                score,
                ecosystem: p.ecosystem,
                package: p.name.clone(),
                version: p.version.clone(),
                direct: p.direct,
                source: p.source.clone(),
                fixed,
            });
        }
    }
    report.vulnerabilities.sort_by(|a, b| {
        b.severity.cmp(&a.severity).then_with(|| (&a.package, &a.version, &a.id).cmp(&(&b.package, &b.version, &b.id)))
    });
    report
}

/// Output formats of `audit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Sarif,
}

impl std::str::FromStr for Format {
    type Err = AuditError;
    fn from_str(s: &str) -> Result<Format, AuditError> {
        match s {
            "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            "sarif" => Ok(Format::Sarif),
            other => Err(AuditError::Format(other.to_owned())),
        }
    }
}

pub fn render(format: Format, report: &AuditReport) -> String {
    match format {
        Format::Table => {
            let mut out = String::new();
            for v in &report.vulnerabilities {
                let _ = writeln!(
                    out,
                    "{:<9} {:<22} {} {} {} ({}){}{}",
                    v.severity.as_str().to_uppercase(),
                    v.id,
                    v.ecosystem,
                    v.package,
                    v.version,
                    v.source,
                    v.fixed.as_ref().map(|f| format!(", fixed in {f}")).unwrap_or_default(),
                    if v.summary.is_empty() { String::new() } else { format!(": {}", v.summary) },
                );
            }
            let _ = writeln!(
                out,
                "{} vulnerabilit{} in {} package(s){}",
                report.vulnerabilities.len(),
                if report.vulnerabilities.len() == 1 { "y" } else { "ies" },
                report.packages,
                if report.ignored > 0 { format!(", {} ignored", report.ignored) } else { String::new() }
            );
            out
        }
        Format::Json => serde_json::to_string_pretty(&json!({
            "packages": report.packages,
            "ignored": report.ignored,
            "vulnerabilities": report.vulnerabilities,
        }))
        .unwrap_or_default(),
        Format::Sarif => {
            let mut rules = Vec::new();
            let mut seen = BTreeSet::new();
            for v in &report.vulnerabilities {
                if seen.insert(v.id.clone()) {
                    rules.push(json!({
                        "id": v.id,
                        "shortDescription": {"text": if v.summary.is_empty() { &v.id } else { &v.summary }},
                        "helpUri": format!("https://osv.dev/vulnerability/{}", v.id),
                    }));
                }
            }
            let results: Vec<_> = report
                .vulnerabilities
                .iter()
                .map(|v| {
                    json!({
                        "ruleId": v.id,
                        "level": match v.severity {
                            Severity::Critical | Severity::High | Severity::Unknown => "error",
                            Severity::Medium => "warning",
                            Severity::Low => "note",
                        },
                        "message": {"text": format!(
                            "{} {} ({}) is affected by {}{}",
                            v.package, v.version, v.ecosystem, v.id,
                            v.fixed.as_ref().map(|f| format!("; fixed in {f}")).unwrap_or_default()
                        )},
                        "locations": [{"physicalLocation": {"artifactLocation": {"uri": v.source}}}],
                    })
                })
                .collect();
            serde_json::to_string_pretty(&json!({
                "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
                "version": "2.1.0",
                "runs": [{
                    "tool": {"driver": {"name": "opsloop", "semanticVersion": env!("CARGO_PKG_VERSION"), "rules": rules}},
                    "results": results,
                }]
            }))
            .unwrap_or_default()
        }
    }
}
