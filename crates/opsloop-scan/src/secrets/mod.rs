//! Secret scanning (the gitleaks role): built-in and gitleaks-format rules, a keyword-prefiltered
//! detector, and the sources it reads: a directory tree, git history, the staged changes, a
//! byte stream.
//!
//! ```no_run
//! use opsloop_scan::secrets::{Config, Scanner};
//! let scanner = Scanner::new(Config::builtin()?.detector()?);
//! let report = scanner.scan_dir(std::path::Path::new("."))?;
//! println!("{} findings", report.findings.len());
//! # Ok::<(), opsloop_scan::secrets::SecretsError>(())
//! ```

mod config;
mod defaults;
mod detect;
mod git;
pub mod report;
mod rule;
mod suppress;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

pub use config::Config;
pub use defaults::default_rules;
pub use detect::{Chunk, CommitMeta, Detector, Finding, redact};
pub use git::GitRange;
pub use report::Format;
pub use rule::{
    Allowlist, Candidate, Condition, RegexTarget, Rule, Validator, compile, github_checksum, shannon_entropy,
};
pub use suppress::{Baseline, IgnoreList};

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("invalid regex {pattern:?}: {message}")]
    Regex { pattern: String, message: String },
    #[error("keyword automaton: {0}")]
    Keywords(String),
    #[error("{}: {message}", path.display())]
    Config { path: PathBuf, message: String },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("baseline: {0}")]
    Baseline(String),
    #[error("git: {0}")]
    Git(String),
    #[error("unknown report format {0:?} (table, json, sarif, gitlab)")]
    Format(String),
}

/// Limits of a scan.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// Files (or blobs) larger than this are skipped; 0: no limit.
    pub max_file_size: u64,
    /// Worker threads for directory scans; 0: the available parallelism.
    pub threads: usize,
}

impl Default for ScanOptions {
    fn default() -> Self {
        ScanOptions { max_file_size: 10 << 20, threads: 0 }
    }
}

/// What a scan read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScanStats {
    pub files: u64,
    pub bytes: u64,
    pub skipped_binary: u64,
    pub skipped_large: u64,
    pub commits: u64,
    pub blobs: u64,
    /// Findings dropped by `.gitleaksignore` or the baseline.
    pub suppressed: u64,
}

/// Findings of a scan, sorted by file, line and rule.
#[derive(Debug, Clone, Default)]
pub struct ScanReport {
    pub findings: Vec<Finding>,
    pub stats: ScanStats,
}

/// Like git: a NUL byte in the first 8000 bytes makes a file binary.
pub fn is_binary(data: &[u8]) -> bool {
    memchr::memchr(0, &data[..data.len().min(8000)]).is_some()
}

/// A detector plus what suppresses findings.
#[derive(Debug)]
pub struct Scanner {
    detector: Detector,
    ignore: IgnoreList,
    baseline: Option<Baseline>,
    options: ScanOptions,
}

impl Scanner {
    pub fn new(detector: Detector) -> Scanner {
        Scanner { detector, ignore: IgnoreList::default(), baseline: None, options: ScanOptions::default() }
    }

    pub fn with_ignore(mut self, ignore: IgnoreList) -> Scanner {
        self.ignore = ignore;
        self
    }

    pub fn with_baseline(mut self, baseline: Baseline) -> Scanner {
        self.baseline = Some(baseline);
        self
    }

    pub fn with_options(mut self, options: ScanOptions) -> Scanner {
        self.options = options;
        self
    }

    pub fn detector(&self) -> &Detector {
        &self.detector
    }

    fn finish(&self, mut findings: Vec<Finding>, mut stats: ScanStats) -> ScanReport {
        let before = findings.len();
        findings.retain(|f| !self.ignore.ignores(f) && !self.baseline.as_ref().is_some_and(|b| b.contains(f)));
        stats.suppressed = (before - findings.len()) as u64;
        findings.sort_by(|a, b| {
            (&a.file, a.start_line, a.start_column, &a.rule_id, &a.commit).cmp(&(
                &b.file,
                b.start_line,
                b.start_column,
                &b.rule_id,
                &b.commit,
            ))
        });
        ScanReport { findings, stats }
    }

    /// Scans bytes as if they were the file `path`.
    pub fn scan_bytes(&self, data: &[u8], path: &str) -> ScanReport {
        let findings = self.detector.detect(&Chunk { data, path, commit: None });
        let stats = ScanStats { files: 1, bytes: data.len() as u64, ..ScanStats::default() };
        self.finish(findings, stats)
    }

    /// Scans a stream (stdin) to its end.
    pub fn scan_reader(&self, mut reader: impl Read) -> Result<ScanReport, SecretsError> {
        let mut data = Vec::new();
        reader.read_to_end(&mut data).map_err(|source| SecretsError::Io { path: PathBuf::from("-"), source })?;
        Ok(self.scan_bytes(&data, ""))
    }

    /// Scans a directory tree (or one file) in parallel. `.git` directories and symlinks are not
    /// followed; binary files and files over the size limit are skipped. Paths in findings are
    /// relative to `root`.
    pub fn scan_dir(&self, root: &Path) -> Result<ScanReport, SecretsError> {
        let meta = std::fs::metadata(root).map_err(|source| SecretsError::Io { path: root.to_path_buf(), source })?;
        if meta.is_file() {
            let data = std::fs::read(root).map_err(|source| SecretsError::Io { path: root.to_path_buf(), source })?;
            return Ok(self.scan_bytes(&data, &root.to_string_lossy()));
        }
        let threads = if self.options.threads == 0 {
            std::thread::available_parallelism().map_or(2, usize::from)
        } else {
            self.options.threads
        };
        let (tx, rx) = std::sync::mpsc::sync_channel::<(PathBuf, u64)>(4096);
        let rx = Mutex::new(rx);
        let findings = Mutex::new(Vec::new());
        let [files, bytes, binary, large] = [(); 4].map(|()| AtomicU64::new(0));
        let max = self.options.max_file_size;
        std::thread::scope(|s| {
            for _ in 0..threads {
                s.spawn(|| {
                    let mut local = Vec::new();
                    loop {
                        let next = match rx.lock() {
                            Ok(guard) => guard.recv(),
                            Err(_) => break,
                        };
                        let Ok((path, _len)) = next else { break };
                        let rel = path.strip_prefix(root).unwrap_or(&path);
                        let rel = rel.to_string_lossy().replace('\\', "/");
                        if self.detector.path_allowed(&rel) {
                            continue;
                        }
                        // A file that vanished or cannot be read is skipped, as gitleaks does.
                        let Ok(data) = std::fs::read(&path) else { continue };
                        if is_binary(&data) {
                            binary.fetch_add(1, Ordering::Relaxed);
                            continue;
                        }
                        files.fetch_add(1, Ordering::Relaxed);
                        bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                        local.extend(self.detector.detect(&Chunk { data: &data, path: &rel, commit: None }));
                    }
                    if let Ok(mut all) = findings.lock() {
                        all.extend(local);
                    }
                });
            }
            let walker = walkdir::WalkDir::new(root)
                .into_iter()
                .filter_entry(|e| !(e.file_type().is_dir() && e.file_name() == ".git"));
            for entry in walker.flatten() {
                if !entry.file_type().is_file() {
                    continue;
                }
                let len = entry.metadata().map_or(0, |m| m.len());
                if max > 0 && len > max {
                    large.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if tx.send((entry.into_path(), len)).is_err() {
                    break;
                }
            }
            drop(tx);
        });
        let stats = ScanStats {
            files: files.into_inner(),
            bytes: bytes.into_inner(),
            skipped_binary: binary.into_inner(),
            skipped_large: large.into_inner(),
            ..ScanStats::default()
        };
        let findings = findings.into_inner().unwrap_or_default();
        Ok(self.finish(findings, stats))
    }

    /// Scans the git history of the repository at (or above) `path`.
    pub fn scan_git(&self, path: &Path, range: &GitRange) -> Result<ScanReport, SecretsError> {
        let mut stats = ScanStats::default();
        let findings = git::scan_history(&self.detector, path, range, &self.options, &mut stats)?;
        stats.files = stats.blobs;
        Ok(self.finish(findings, stats))
    }

    /// Scans the changes staged in the index against HEAD.
    pub fn scan_staged(&self, path: &Path) -> Result<ScanReport, SecretsError> {
        let mut stats = ScanStats::default();
        let findings = git::scan_staged(&self.detector, path, &self.options, &mut stats)?;
        stats.files = stats.blobs;
        Ok(self.finish(findings, stats))
    }
}
