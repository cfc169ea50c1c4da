//! The offline OSV database: records (the OSV schema's fields that matching needs) loaded from a
//! directory of JSON files or a zip of them (OSV's per-ecosystem `all.zip` exports), indexed by
//! (ecosystem, package name) so that a lookup is one map access.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use super::AuditError;
use super::cvss::{Severity, cvss3_base_score};
use crate::version::{Ecosystem, Scheme};

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct Record {
    pub id: String,
    pub aliases: Vec<String>,
    pub summary: String,
    pub details: String,
    pub modified: String,
    pub published: String,
    pub withdrawn: Option<String>,
    pub affected: Vec<Affected>,
    pub severity: Vec<SeverityEntry>,
    pub database_specific: Option<serde_json::Value>,
    pub references: Vec<Reference>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct Reference {
    #[serde(rename = "type")]
    pub kind: String,
    pub url: String,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct Affected {
    pub package: Option<AffectedPackage>,
    pub ranges: Vec<Range>,
    pub versions: Vec<String>,
    pub severity: Vec<SeverityEntry>,
    pub database_specific: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct AffectedPackage {
    pub ecosystem: String,
    pub name: String,
    pub purl: Option<String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
pub enum RangeType {
    #[serde(rename = "ECOSYSTEM")]
    #[default]
    Ecosystem,
    #[serde(rename = "SEMVER")]
    Semver,
    #[serde(rename = "GIT")]
    Git,
    #[serde(other)]
    Unknown,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct Range {
    #[serde(rename = "type")]
    pub kind: RangeType,
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct Event {
    pub introduced: Option<String>,
    pub fixed: Option<String>,
    pub last_affected: Option<String>,
    pub limit: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(default)]
pub struct SeverityEntry {
    #[serde(rename = "type")]
    pub kind: String,
    pub score: String,
}

/// PyPI names compare normalised (PEP 503); other ecosystems' names are exact (npm and
/// crates.io are case-sensitive in OSV's data; Maven's group:artifact is exact).
pub fn normalize_name(eco: Ecosystem, name: &str) -> String {
    match eco {
        Ecosystem::PyPI => {
            let mut out = String::with_capacity(name.len());
            let mut dash = false;
            for c in name.chars() {
                if matches!(c, '-' | '_' | '.') {
                    dash = true;
                } else {
                    if dash && !out.is_empty() {
                        out.push('-');
                    }
                    dash = false;
                    out.push(c.to_ascii_lowercase());
                }
            }
            out
        }
        Ecosystem::Packagist | Ecosystem::NuGet => name.to_ascii_lowercase(),
        _ => name.to_owned(),
    }
}

/// What a record says about one version of one package.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The lowest fixed version above the package's version, if the record names one.
    pub fixed: Option<String>,
}

impl Record {
    /// The highest severity the record gives: CVSS v3 vectors scored, else
    /// `database_specific.severity`.
    pub fn severity(&self) -> (Severity, Option<f64>) {
        let entries = self.severity.iter().chain(self.affected.iter().flat_map(|a| a.severity.iter()));
        let best = entries
            .filter(|s| s.kind.starts_with("CVSS_V3"))
            .filter_map(|s| cvss3_base_score(&s.score))
            .fold(None::<f64>, |m, s| Some(m.map_or(s, |m| m.max(s))));
        if let Some(score) = best {
            return (Severity::from_score(score), Some(score));
        }
        let word = self
            .database_specific
            .iter()
            .chain(self.affected.iter().filter_map(|a| a.database_specific.as_ref()))
            .filter_map(|d| d.get("severity").and_then(serde_json::Value::as_str))
            .filter_map(Severity::from_word)
            .max();
        (word.unwrap_or(Severity::Unknown), None)
    }

    /// Whether `version` of (`eco`, `name`) is affected, and the nearest fix.
    pub fn affects(&self, eco: Ecosystem, name: &str, version: &str) -> Option<Hit> {
        if self.withdrawn.is_some() {
            return None;
        }
        let wanted = normalize_name(eco, name);
        let mut hit: Option<Hit> = None;
        for a in &self.affected {
            let Some(p) = &a.package else { continue };
            if Ecosystem::parse(&p.ecosystem) != Some(eco) || normalize_name(eco, &p.name) != wanted {
                continue;
            }
            let explicit = a.versions.iter().any(|v| v == version);
            let mut in_range = false;
            let mut fixed: Option<String> = None;
            for r in &a.ranges {
                let scheme = match r.kind {
                    RangeType::Ecosystem => eco.scheme(),
                    RangeType::Semver => Scheme::Semver,
                    RangeType::Git | RangeType::Unknown => continue,
                };
                if range_affects(scheme, &r.events, version) {
                    in_range = true;
                    for f in r.events.iter().filter_map(|e| e.fixed.as_deref()) {
                        if scheme.compare(f, version) == Ordering::Greater
                            && fixed.as_deref().is_none_or(|cur| scheme.compare(f, cur) == Ordering::Less)
                        {
                            fixed = Some(f.to_owned());
                        }
                    }
                }
            }
            if explicit || in_range {
                let h = hit.get_or_insert(Hit { fixed: None });
                if h.fixed.is_none() {
                    h.fixed = fixed;
                }
            }
        }
        hit
    }
}

/// OSV's evaluation: events in version order ("0" first); `introduced` opens the range,
/// `fixed` (at or above) and `last_affected` (above) close it; a `limit` caps the whole range.
fn range_affects(scheme: Scheme, events: &[Event], version: &str) -> bool {
    let key = |e: &Event| -> Option<(u8, String)> {
        e.introduced
            .as_ref()
            .map(|v| (0, v.clone()))
            .or_else(|| e.fixed.as_ref().map(|v| (1, v.clone())))
            .or_else(|| e.last_affected.as_ref().map(|v| (2, v.clone())))
    };
    let mut sorted: Vec<(u8, String)> = events.iter().filter_map(key).collect();
    let cmp = |a: &str, b: &str| -> Ordering {
        match (a == "0", b == "0") {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            _ => scheme.compare(a, b),
        }
    };
    sorted.sort_by(|a, b| cmp(&a.1, &b.1).then(a.0.cmp(&b.0)));
    for limit in events.iter().filter_map(|e| e.limit.as_deref()) {
        if limit != "*" && scheme.compare(version, limit) != Ordering::Less {
            return false;
        }
    }
    let mut affected = false;
    for (kind, v) in &sorted {
        let o = if v == "0" { Ordering::Greater } else { scheme.compare(version, v) };
        match kind {
            0 if o != Ordering::Less => affected = true,
            1 if o != Ordering::Less => affected = false,
            2 if o == Ordering::Greater => affected = false,
            _ => {}
        }
    }
    affected
}

/// Records indexed by (ecosystem, normalised package name).
#[derive(Debug, Default)]
pub struct Database {
    records: Vec<Arc<Record>>,
    index: HashMap<(Ecosystem, String), Vec<Arc<Record>>>,
}

impl Database {
    pub fn new(records: Vec<Record>) -> Database {
        let mut db = Database::default();
        for r in records {
            db.insert(r);
        }
        db
    }

    fn insert(&mut self, record: Record) {
        let record = Arc::new(record);
        let mut keys: Vec<(Ecosystem, String)> = record
            .affected
            .iter()
            .filter_map(|a| a.package.as_ref())
            .filter_map(|p| {
                let eco = Ecosystem::parse(&p.ecosystem)?;
                Some((eco, normalize_name(eco, &p.name)))
            })
            .collect();
        keys.sort();
        keys.dedup();
        for k in keys {
            self.index.entry(k).or_default().push(Arc::clone(&record));
        }
        self.records.push(record);
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Records that mention the package (whether or not they affect a given version).
    pub fn lookup(&self, eco: Ecosystem, name: &str) -> &[Arc<Record>] {
        self.index.get(&(eco, normalize_name(eco, name))).map(Vec::as_slice).unwrap_or_default()
    }

    /// Loads a directory (recursively: every `*.json`, each one record) or a `.zip` of them.
    pub fn load(path: &Path) -> Result<Database, AuditError> {
        let io = |source| AuditError::Io { path: path.to_path_buf(), source };
        let mut records = Vec::new();
        if path.is_file() {
            let file = std::fs::File::open(path).map_err(io)?;
            let mut zip = zip::ZipArchive::new(file)
                .map_err(|e| AuditError::Database { path: path.display().to_string(), message: e.to_string() })?;
            for i in 0..zip.len() {
                let mut entry = zip
                    .by_index(i)
                    .map_err(|e| AuditError::Database { path: path.display().to_string(), message: e.to_string() })?;
                // A name that is not UTF-8 cannot be a `.json` record.
                let Ok(name) = entry.name().map(|n| n.into_owned()) else {
                    continue;
                };
                if !name.ends_with(".json") {
                    continue;
                }
                let mut text = String::new();
                entry.read_to_string(&mut text).map_err(io)?;
                records.push(parse_record(&name, &text)?);
            }
        } else {
            for entry in walkdir::WalkDir::new(path).into_iter() {
                let entry = entry
                    .map_err(|e| AuditError::Database { path: path.display().to_string(), message: e.to_string() })?;
                if !entry.file_type().is_file() || entry.path().extension().and_then(|e| e.to_str()) != Some("json") {
                    continue;
                }
                let text = std::fs::read_to_string(entry.path())
                    .map_err(|source| AuditError::Io { path: entry.path().to_path_buf(), source })?;
                records.push(parse_record(&entry.path().display().to_string(), &text)?);
            }
        }
        Ok(Database::new(records))
    }
}

fn parse_record(name: &str, text: &str) -> Result<Record, AuditError> {
    serde_json::from_str(text).map_err(|e| AuditError::Database { path: name.to_owned(), message: e.to_string() })
}
