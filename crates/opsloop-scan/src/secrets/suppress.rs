//! Suppressing known findings: `.gitleaksignore` fingerprints and a baseline report.
//!
//! A baseline finding matches a new one on rule, file, secret and commit, not on line numbers:
//! a secret that was accepted once stays accepted when lines above it are edited, which is what
//! people adopting a baseline expect (gitleaks compares every field, so any edit above a known
//! secret resurfaces it).

use std::collections::HashSet;
use std::path::Path;

use super::SecretsError;
use super::detect::Finding;

/// Fingerprints from `.gitleaksignore`: `file:rule:line` or `commit:file:rule:line`.
#[derive(Debug, Clone, Default)]
pub struct IgnoreList {
    fingerprints: HashSet<String>,
}

impl IgnoreList {
    pub fn parse(text: &str) -> IgnoreList {
        IgnoreList {
            fingerprints: text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned)
                .collect(),
        }
    }

    /// Reads the file; a missing file is an empty list.
    pub fn load(path: &Path) -> Result<IgnoreList, SecretsError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Self::parse(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(IgnoreList::default()),
            Err(source) => Err(SecretsError::Io { path: path.to_path_buf(), source }),
        }
    }

    pub fn len(&self) -> usize {
        self.fingerprints.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fingerprints.is_empty()
    }

    pub fn ignores(&self, f: &Finding) -> bool {
        self.fingerprints.contains(&f.fingerprint) || self.fingerprints.contains(&f.short_fingerprint())
    }
}

/// Findings of a previous JSON report.
#[derive(Debug, Clone, Default)]
pub struct Baseline {
    known: HashSet<(String, String, String, String)>,
}

fn key(f: &Finding) -> (String, String, String, String) {
    (f.rule_id.clone(), f.file.clone(), f.secret.clone(), f.commit.clone())
}

impl Baseline {
    pub fn parse(json: &str) -> Result<Baseline, SecretsError> {
        let findings: Vec<Finding> = serde_json::from_str(json).map_err(|e| SecretsError::Baseline(e.to_string()))?;
        Ok(Baseline { known: findings.iter().map(key).collect() })
    }

    pub fn load(path: &Path) -> Result<Baseline, SecretsError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| SecretsError::Io { path: path.to_path_buf(), source })?;
        Self::parse(&text)
    }

    pub fn contains(&self, f: &Finding) -> bool {
        self.known.contains(&key(f))
    }
}
