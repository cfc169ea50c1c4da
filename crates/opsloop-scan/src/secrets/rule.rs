//! Rules and allowlists, compiled: what a gitleaks `[[rules]]` or `[[allowlists]]` table becomes
//! once its regexes are built.
//!
//! Regexes are compiled as byte regexes with Unicode disabled first, because gitleaks' Go (RE2)
//! regexes are ASCII-only for `\w`, `\d`, `\s` and `\b`, and the ASCII automata are several times
//! faster. A pattern that needs Unicode (a non-ASCII class such as `\p{L}`) falls back to a
//! Unicode byte regex.

use regex::bytes::{Regex, RegexBuilder};

use super::SecretsError;

/// Compiles a gitleaks (Go RE2) regex. Known incompatibilities: `\Q…\E` quoting and `\C` are not
/// supported by the `regex` crate and are rejected with [`SecretsError::Regex`]; everything else
/// RE2 accepts (flags, named groups `(?P<n>…)`, POSIX classes, `\z`) means the same.
pub fn compile(pattern: &str) -> Result<Regex, SecretsError> {
    let build = |unicode: bool| {
        RegexBuilder::new(pattern).unicode(unicode).size_limit(64 << 20).dfa_size_limit(16 << 20).build()
    };
    build(false)
        .or_else(|_| build(true))
        .map_err(|e| SecretsError::Regex { pattern: pattern.to_owned(), message: e.to_string() })
}

/// How an allowlist's criteria combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Condition {
    /// Any criterion that matches allows the finding (gitleaks' default).
    #[default]
    Or,
    /// Every criterion that is set must match.
    And,
}

/// What an allowlist's `regexes` are matched against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RegexTarget {
    #[default]
    Secret,
    Match,
    Line,
}

/// Extra validation beyond the regex, for token formats that carry a checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validator {
    /// GitHub's classic token format: 30 random base62 characters then the CRC32 of them,
    /// base62-encoded on 6 characters.
    GithubChecksum,
}

/// An allowlist: a finding it matches is not reported.
#[derive(Debug, Clone, Default)]
pub struct Allowlist {
    pub description: String,
    pub condition: Condition,
    /// Commit ids (full or abbreviated) whose findings are allowed.
    pub commits: Vec<String>,
    /// Regexes over the file path.
    pub paths: Vec<Regex>,
    pub regex_target: RegexTarget,
    pub regexes: Vec<Regex>,
    /// Lower-cased substrings: a secret containing one is allowed.
    pub stopwords: Vec<String>,
    /// For global allowlists: the rule ids it applies to (empty: all rules).
    pub target_rules: Vec<String>,
}

/// What a candidate finding looks like to an allowlist.
pub struct Candidate<'a> {
    pub commit: &'a str,
    pub path: &'a str,
    pub secret: &'a [u8],
    pub matched: &'a [u8],
    pub line: &'a [u8],
}

impl Allowlist {
    /// True when nothing but paths is set: such an allowlist can reject a whole file before it
    /// is read.
    pub fn is_paths_only(&self) -> bool {
        !self.paths.is_empty() && self.commits.is_empty() && self.regexes.is_empty() && self.stopwords.is_empty()
    }

    pub fn applies_to(&self, rule_id: &str) -> bool {
        self.target_rules.is_empty() || self.target_rules.iter().any(|r| r == rule_id)
    }

    pub fn path_allowed(&self, path: &str) -> bool {
        self.paths.iter().any(|re| re.is_match(path.as_bytes()))
    }

    pub fn allows(&self, c: &Candidate<'_>) -> bool {
        let commit = (!self.commits.is_empty()).then(|| {
            !c.commit.is_empty() && self.commits.iter().any(|id| !id.is_empty() && c.commit.starts_with(id.as_str()))
        });
        let path = (!self.paths.is_empty()).then(|| self.path_allowed(c.path));
        let regex = (!self.regexes.is_empty()).then(|| {
            let target = match self.regex_target {
                RegexTarget::Secret => c.secret,
                RegexTarget::Match => c.matched,
                RegexTarget::Line => c.line,
            };
            self.regexes.iter().any(|re| re.is_match(target))
        });
        let stopword = (!self.stopwords.is_empty()).then(|| {
            let secret = c.secret.to_ascii_lowercase();
            self.stopwords.iter().any(|w| memchr::memmem::find(&secret, w.as_bytes()).is_some())
        });
        let set = [commit, path, regex, stopword];
        match self.condition {
            Condition::Or => set.contains(&Some(true)),
            Condition::And => set.iter().any(Option::is_some) && set.iter().all(|c| *c != Some(false)),
        }
    }
}

/// A detection rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub id: String,
    pub description: String,
    /// None for a path-only rule (it reports files whose path matches `path`).
    pub regex: Option<Regex>,
    pub path: Option<Regex>,
    /// Which capture group is the secret; 0: the first group that matched, or the whole match.
    pub secret_group: usize,
    /// Minimum Shannon entropy (bits per byte) of the secret; 0: no minimum.
    pub entropy: f64,
    /// Lower-cased; a rule runs on a chunk only where one of them occurs.
    pub keywords: Vec<String>,
    pub tags: Vec<String>,
    pub allowlists: Vec<Allowlist>,
    pub validator: Option<Validator>,
    /// How many bytes past a keyword a match may end (beyond the keyword's own line). Most
    /// secrets sit on the keyword's line; a PEM block runs for kilobytes after its header.
    pub reach: usize,
}

impl Rule {
    pub fn new(id: &str, description: &str, regex: Regex, keywords: &[&str]) -> Rule {
        Rule {
            id: id.to_owned(),
            description: description.to_owned(),
            regex: Some(regex),
            path: None,
            secret_group: 0,
            entropy: 0.0,
            keywords: keywords.iter().map(|k| k.to_ascii_lowercase()).collect(),
            tags: Vec::new(),
            allowlists: Vec::new(),
            validator: None,
            reach: 0,
        }
    }
}

/// Shannon entropy in bits per byte.
pub fn shannon_entropy(data: &[u8]) -> f64 {
    if data.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in data {
        counts[usize::from(b)] += 1;
    }
    let len = data.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / len;
            -p * p.log2()
        })
        .sum()
}

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The 6-character base62 CRC32 GitHub appends to a classic token's random part.
pub fn github_checksum(random: &[u8]) -> [u8; 6] {
    let mut n = crc32fast::hash(random);
    let mut out = [b'0'; 6];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(n % 62) as usize];
        n /= 62;
    }
    out
}

impl Validator {
    pub fn check(self, secret: &[u8]) -> bool {
        match self {
            Validator::GithubChecksum => {
                // `ghp_` + 30 random + 6 checksum.
                let Some(body) = secret.get(4..) else {
                    return false;
                };
                if body.len() != 36 {
                    return false;
                }
                let (random, sum) = body.split_at(30);
                github_checksum(random) == sum
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entropy_bounds() {
        assert_eq!(shannon_entropy(b""), 0.0);
        assert_eq!(shannon_entropy(b"aaaa"), 0.0);
        assert!((shannon_entropy(b"abcd") - 2.0).abs() < 1e-9);
    }

    #[test]
    fn github_checksum_round_trip() {
        let random = b"abcdefghijklmnopqrstuvwxyz0123";
        let sum = github_checksum(random);
        let token = [b"ghp_".as_slice(), random, &sum].concat();
        assert!(Validator::GithubChecksum.check(&token));
        let mut bad = token.clone();
        bad[5] = b'X';
        assert!(!Validator::GithubChecksum.check(&bad));
    }

    #[test]
    fn and_condition_needs_every_set_criterion() {
        let al = Allowlist {
            condition: Condition::And,
            paths: vec![compile(r"\.md$").unwrap()],
            stopwords: vec!["example".into()],
            ..Allowlist::default()
        };
        let mut c = Candidate { commit: "", path: "README.md", secret: b"EXAMPLEKEY", matched: b"", line: b"" };
        assert!(al.allows(&c));
        c.path = "main.rs";
        assert!(!al.allows(&c));
    }
}
