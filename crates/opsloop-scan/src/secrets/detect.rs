//! The detector: one Aho-Corasick pass over a chunk finds every rule keyword, and only the lines
//! around those occurrences are handed to the matching rules' regexes.
//!
//! gitleaks runs a rule's regex over the whole fragment once any of its keywords occurs in it.
//! We narrow that to windows (the keyword's line, plus the rule's `reach` for multi-line
//! secrets such as PEM blocks): most files that mention `token` mention it a few times in tens
//! of kilobytes, and scanning the lines around them instead of the whole file is what keeps the
//! generic rules affordable. The consequence, documented for custom rules: a match must lie on
//! a line containing one of the rule's keywords (or within `reach` bytes after it). Rules
//! without keywords still scan the whole chunk.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use serde::{Deserialize, Serialize};

use super::SecretsError;
use super::rule::{Allowlist, Candidate, Rule, shannon_entropy};

/// The commit a chunk comes from, in git modes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitMeta {
    pub id: String,
    pub author: String,
    pub email: String,
    /// RFC 3339, UTC.
    pub date: String,
    pub message: String,
}

/// What the detector scans: bytes and where they come from.
#[derive(Debug, Clone, Copy)]
pub struct Chunk<'a> {
    pub data: &'a [u8],
    /// Path relative to the scan root (empty for stdin).
    pub path: &'a str,
    pub commit: Option<&'a CommitMeta>,
}

/// A detected secret, serialised with gitleaks' JSON report field names.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct Finding {
    #[serde(rename = "RuleID")]
    pub rule_id: String,
    #[serde(rename = "Description")]
    pub description: String,
    #[serde(rename = "StartLine")]
    pub start_line: usize,
    #[serde(rename = "EndLine")]
    pub end_line: usize,
    #[serde(rename = "StartColumn")]
    pub start_column: usize,
    #[serde(rename = "EndColumn")]
    pub end_column: usize,
    #[serde(rename = "Match")]
    pub matched: String,
    #[serde(rename = "Secret")]
    pub secret: String,
    #[serde(rename = "File")]
    pub file: String,
    #[serde(rename = "Commit")]
    pub commit: String,
    #[serde(rename = "Entropy")]
    pub entropy: f32,
    #[serde(rename = "Author")]
    pub author: String,
    #[serde(rename = "Email")]
    pub email: String,
    #[serde(rename = "Date")]
    pub date: String,
    #[serde(rename = "Message")]
    pub message: String,
    #[serde(rename = "Tags")]
    pub tags: Vec<String>,
    #[serde(rename = "Fingerprint")]
    pub fingerprint: String,
}

impl Finding {
    /// `file:rule:line`, the non-git form of the fingerprint (`.gitleaksignore` accepts it for
    /// git findings too).
    pub fn short_fingerprint(&self) -> String {
        format!("{}:{}:{}", self.file, self.rule_id, self.start_line)
    }

    /// The secret with all but its first four characters masked, for table output.
    pub fn redacted_secret(&self) -> String {
        redact(&self.secret)
    }
}

pub fn redact(secret: &str) -> String {
    let keep: String = secret.chars().take(4).collect();
    if secret.chars().count() <= 8 {
        return "*****".to_owned();
    }
    format!("{keep}*****")
}

/// Compiled rules plus the keyword automaton.
#[derive(Debug)]
pub struct Detector {
    rules: Vec<Rule>,
    allowlists: Vec<Allowlist>,
    keywords: Option<AhoCorasick>,
    /// For each automaton pattern: the rules it triggers (those with that keyword or with a
    /// keyword contained in it, since leftmost-longest matching reports only the longer one).
    triggers: Vec<Vec<usize>>,
    unkeyed: Vec<usize>,
    path_only: Vec<usize>,
}

const ALLOW_MARK: &[u8] = b"gitleaks:allow";

fn line_start(data: &[u8], pos: usize) -> usize {
    memchr::memrchr(b'\n', &data[..pos]).map_or(0, |i| i + 1)
}

fn line_end(data: &[u8], pos: usize) -> usize {
    memchr::memchr(b'\n', &data[pos..]).map_or(data.len(), |i| pos + i)
}

struct Raw {
    rule: usize,
    start: usize,
    end: usize,
    secret_start: usize,
    secret_end: usize,
}

impl Detector {
    pub fn new(rules: Vec<Rule>, allowlists: Vec<Allowlist>) -> Result<Detector, SecretsError> {
        let mut patterns: Vec<String> = Vec::new();
        for rule in &rules {
            for k in &rule.keywords {
                if !k.is_empty() && !patterns.contains(k) {
                    patterns.push(k.clone());
                }
            }
        }
        let triggers = patterns
            .iter()
            .map(|p| {
                rules
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| {
                        r.regex.is_some() && r.keywords.iter().any(|k| !k.is_empty() && p.contains(k.as_str()))
                    })
                    .map(|(i, _)| i)
                    .collect()
            })
            .collect();
        let keywords = if patterns.is_empty() {
            None
        } else {
            Some(
                AhoCorasickBuilder::new()
                    .ascii_case_insensitive(true)
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&patterns)
                    .map_err(|e| SecretsError::Keywords(e.to_string()))?,
            )
        };
        let unkeyed = rules
            .iter()
            .enumerate()
            .filter(|(_, r)| r.regex.is_some() && r.keywords.iter().all(String::is_empty))
            .map(|(i, _)| i)
            .collect();
        let path_only =
            rules.iter().enumerate().filter(|(_, r)| r.regex.is_none() && r.path.is_some()).map(|(i, _)| i).collect();
        Ok(Detector { rules, allowlists, keywords, triggers, unkeyed, path_only })
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// True when a global allowlist rejects the whole path (no need to read the file).
    pub fn path_allowed(&self, path: &str) -> bool {
        !path.is_empty()
            && self.allowlists.iter().any(|a| a.target_rules.is_empty() && a.is_paths_only() && a.path_allowed(path))
    }

    pub fn detect(&self, chunk: &Chunk<'_>) -> Vec<Finding> {
        let data = chunk.data;
        if self.path_allowed(chunk.path) {
            return Vec::new();
        }
        let mut windows: Vec<Vec<(usize, usize)>> = vec![Vec::new(); self.rules.len()];
        if let Some(ac) = &self.keywords {
            for m in ac.find_iter(data) {
                for &r in &self.triggers[m.pattern().as_usize()] {
                    let reach = self.rules[r].reach;
                    let start = line_start(data, m.start());
                    let end = line_end(data, (m.end() + reach).min(data.len()));
                    let w = &mut windows[r];
                    match w.last_mut() {
                        Some(last) if start <= last.1 => last.1 = last.1.max(end),
                        _ => w.push((start, end)),
                    }
                }
            }
        }
        for &r in &self.unkeyed {
            windows[r] = vec![(0, data.len())];
        }

        let mut raws = Vec::new();
        for (r, wins) in windows.iter().enumerate() {
            if wins.is_empty() {
                continue;
            }
            let rule = &self.rules[r];
            let Some(re) = &rule.regex else { continue };
            if let Some(p) = &rule.path
                && !p.is_match(chunk.path.as_bytes())
            {
                continue;
            }
            for &(ws, we) in wins {
                for caps in re.captures_iter(&data[ws..we]) {
                    let Some(m) = caps.get(0) else { continue };
                    let secret = if rule.secret_group > 0 {
                        caps.get(rule.secret_group)
                    } else {
                        (1..caps.len()).find_map(|g| caps.get(g)).or(Some(m))
                    };
                    let Some(secret) = secret else { continue };
                    raws.push(Raw {
                        rule: r,
                        start: ws + m.start(),
                        end: ws + m.end(),
                        secret_start: ws + secret.start(),
                        secret_end: ws + secret.end(),
                    });
                }
            }
        }

        let mut newlines: Option<Vec<usize>> = None;
        let mut findings = Vec::new();
        let mut kept: Vec<(usize, usize, usize)> = Vec::new();
        for raw in &raws {
            let rule = &self.rules[raw.rule];
            let secret = &data[raw.secret_start..raw.secret_end];
            let entropy = shannon_entropy(secret);
            if rule.entropy > 0.0 && entropy < rule.entropy {
                continue;
            }
            if let Some(v) = rule.validator
                && !v.check(secret)
            {
                continue;
            }
            let ls = line_start(data, raw.start);
            let le = line_end(data, raw.end.max(raw.start));
            let line = &data[ls..le];
            if memchr::memmem::find(line, ALLOW_MARK).is_some() {
                continue;
            }
            let cand = Candidate {
                commit: chunk.commit.map_or("", |c| c.id.as_str()),
                path: chunk.path,
                secret,
                matched: &data[raw.start..raw.end],
                line,
            };
            if rule.allowlists.iter().any(|a| a.allows(&cand))
                || self.allowlists.iter().any(|a| a.applies_to(&rule.id) && a.allows(&cand))
            {
                continue;
            }
            kept.push((raw.rule, raw.secret_start, raw.secret_end));
            let nl = newlines.get_or_insert_with(|| memchr::memchr_iter(b'\n', data).collect());
            let last = raw.end.saturating_sub(1).max(raw.start);
            let start_line = nl.partition_point(|&p| p < raw.start) + 1;
            let end_line = nl.partition_point(|&p| p < last) + 1;
            findings.push(self.finding(
                rule,
                chunk,
                [start_line, end_line],
                [raw.start - ls + 1, last - line_start(data, last) + 1],
                &data[raw.start..raw.end],
                secret,
                entropy,
            ));
        }
        // A generic rule's finding whose secret a specific rule also found is the same secret,
        // reported once under the more precise rule.
        let generic = |r: usize| self.rules[r].id.starts_with("generic");
        let mut out = Vec::with_capacity(findings.len());
        for (i, f) in findings.into_iter().enumerate() {
            let (r, s, e) = kept[i];
            let shadowed = generic(r) && kept.iter().any(|&(r2, s2, e2)| !generic(r2) && s2 < e && s < e2);
            if !shadowed {
                out.push(f);
            }
        }
        for &r in &self.path_only {
            let rule = &self.rules[r];
            if let Some(p) = &rule.path
                && p.is_match(chunk.path.as_bytes())
            {
                out.push(self.finding(rule, chunk, [0, 0], [0, 0], b"", b"", 0.0));
            }
        }
        out
    }

    #[allow(clippy::too_many_arguments)]
    fn finding(
        &self,
        rule: &Rule,
        chunk: &Chunk<'_>,
        lines: [usize; 2],
        columns: [usize; 2],
        matched: &[u8],
        secret: &[u8],
        entropy: f64,
    ) -> Finding {
        let commit = chunk.commit.cloned().unwrap_or_default();
        let fingerprint = if commit.id.is_empty() {
            format!("{}:{}:{}", chunk.path, rule.id, lines[0])
        } else {
            format!("{}:{}:{}:{}", commit.id, chunk.path, rule.id, lines[0])
        };
        Finding {
            rule_id: rule.id.clone(),
            description: rule.description.clone(),
            start_line: lines[0],
            end_line: lines[1],
            start_column: columns[0],
            end_column: columns[1],
            matched: String::from_utf8_lossy(matched).into_owned(),
            secret: String::from_utf8_lossy(secret).into_owned(),
            file: chunk.path.to_owned(),
            commit: commit.id,
            entropy: entropy as f32,
            author: commit.author,
            email: commit.email,
            date: commit.date,
            message: commit.message,
            tags: rule.tags.clone(),
            fingerprint,
        }
    }
}
