//! gitleaks' configuration format (`.gitleaks.toml`) read into rules and allowlists.
//!
//! Supported: `title`, `[extend]` (`useDefault`, `path`, `disabledRules`), `[[rules]]` (`id`,
//! `description`, `regex`, `secretGroup`, `entropy`, `keywords`, `path`, `tags`), per-rule
//! `[[rules.allowlists]]` and the legacy `[rules.allowlist]`, global `[[allowlists]]` (with
//! `targetRules`) and the legacy `[allowlist]`. Allowlist fields: `description`, `condition`,
//! `commits`, `paths`, `regexTarget`, `regexes`, `stopwords`. Unknown keys are ignored so that
//! configurations written for newer gitleaks versions still load.
//!
//! Semantics kept from gitleaks: a file without `[extend]` is the whole rule set (the defaults
//! are not added); with `useDefault = true` or `path`, its rules are added to the base and a
//! rule with a base rule's id replaces it (gitleaks merges field by field; we replace whole
//! rules, which is simpler to reason about and what a redefinition usually means).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::SecretsError;
use super::defaults::default_rules;
use super::detect::Detector;
use super::rule::{Allowlist, Condition, RegexTarget, Rule, compile};

/// A loaded rule set.
#[derive(Debug, Clone)]
pub struct Config {
    pub title: String,
    pub rules: Vec<Rule>,
    pub allowlists: Vec<Allowlist>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawConfig {
    title: Option<String>,
    extend: Option<RawExtend>,
    rules: Vec<RawRule>,
    allowlist: Option<RawAllowlist>,
    allowlists: Vec<RawAllowlist>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawExtend {
    use_default: bool,
    path: Option<String>,
    disabled_rules: Vec<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawRule {
    id: String,
    description: String,
    regex: Option<String>,
    secret_group: usize,
    entropy: f64,
    keywords: Vec<String>,
    path: Option<String>,
    tags: Vec<String>,
    allowlist: Option<RawAllowlist>,
    allowlists: Vec<RawAllowlist>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct RawAllowlist {
    description: String,
    condition: Option<String>,
    commits: Vec<String>,
    paths: Vec<String>,
    regex_target: Option<String>,
    regexes: Vec<String>,
    stopwords: Vec<String>,
    target_rules: Vec<String>,
}

/// How deep `[extend] path` chains may go (gitleaks stops at 2 as well).
const MAX_EXTEND_DEPTH: usize = 2;

impl Config {
    /// opsloop's built-in rules.
    pub fn builtin() -> Result<Config, SecretsError> {
        Ok(Config {
            title: "opsloop default".into(),
            rules: default_rules()?,
            allowlists: vec![Allowlist {
                description: "lockfiles and vendored dependency trees".into(),
                paths: [
                    r"(?:^|/)(?:Cargo\.lock|package-lock\.json|yarn\.lock|pnpm-lock\.yaml|poetry\.lock|go\.sum|Gemfile\.lock|composer\.lock|uv\.lock)$",
                    r"(?:^|/)(?:node_modules|vendor)/",
                    r"(?:^|/)\.git/",
                ]
                .iter()
                .map(|p| compile(p))
                .collect::<Result<_, _>>()?,
                ..Allowlist::default()
            }],
        })
    }

    pub fn load(path: &Path) -> Result<Config, SecretsError> {
        Self::load_at_depth(path, 0)
    }

    /// `.gitleaks.toml` in `root` when present, else the built-in rules.
    pub fn discover(root: &Path) -> Result<Config, SecretsError> {
        let candidate = root.join(".gitleaks.toml");
        if candidate.is_file() { Self::load(&candidate) } else { Self::builtin() }
    }

    fn load_at_depth(path: &Path, depth: usize) -> Result<Config, SecretsError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| SecretsError::Io { path: path.to_path_buf(), source })?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse_at_depth(&text, &dir, depth).map_err(|e| match e {
            SecretsError::Config { message, .. } => SecretsError::Config { path: path.to_path_buf(), message },
            other => other,
        })
    }

    /// Parses a configuration; `dir` resolves a relative `[extend] path`.
    pub fn parse(text: &str, dir: &Path) -> Result<Config, SecretsError> {
        Self::parse_at_depth(text, dir, 0)
    }

    fn parse_at_depth(text: &str, dir: &Path, depth: usize) -> Result<Config, SecretsError> {
        let bad = |message: String| SecretsError::Config { path: PathBuf::new(), message };
        let raw: RawConfig = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let mut rules = Vec::new();
        for r in raw.rules {
            rules.push(build_rule(r)?);
        }
        let mut allowlists = Vec::new();
        for a in raw.allowlist.into_iter().chain(raw.allowlists) {
            allowlists.push(build_allowlist(a)?);
        }
        let mut config = Config { title: raw.title.unwrap_or_default(), rules, allowlists };
        if let Some(extend) = raw.extend {
            let mut base = if let Some(p) = &extend.path {
                if depth >= MAX_EXTEND_DEPTH {
                    return Err(bad(format!("[extend] path nests deeper than {MAX_EXTEND_DEPTH} files")));
                }
                Self::load_at_depth(&dir.join(p), depth + 1)?
            } else if extend.use_default {
                Self::builtin()?
            } else {
                Config { title: String::new(), rules: Vec::new(), allowlists: Vec::new() }
            };
            if extend.path.is_some() && extend.use_default {
                let builtin = Self::builtin()?;
                merge(&mut base, builtin);
            }
            base.rules.retain(|r| !extend.disabled_rules.contains(&r.id));
            let own = std::mem::take(&mut config.rules);
            let own_allow = std::mem::take(&mut config.allowlists);
            merge(&mut base, Config { title: String::new(), rules: own, allowlists: own_allow });
            config.rules = base.rules;
            config.allowlists = base.allowlists;
        }
        Ok(config)
    }

    pub fn detector(self) -> Result<Detector, SecretsError> {
        Detector::new(self.rules, self.allowlists)
    }
}

/// Adds `other`'s rules to `base` (replacing same-id rules) and its allowlists.
fn merge(base: &mut Config, other: Config) {
    for rule in other.rules {
        if let Some(slot) = base.rules.iter_mut().find(|r| r.id == rule.id) {
            *slot = rule;
        } else {
            base.rules.push(rule);
        }
    }
    base.allowlists.extend(other.allowlists);
}

fn config_error(message: String) -> SecretsError {
    SecretsError::Config { path: PathBuf::new(), message }
}

fn build_rule(r: RawRule) -> Result<Rule, SecretsError> {
    if r.id.is_empty() {
        return Err(config_error("a [[rules]] entry has no id".into()));
    }
    if r.regex.is_none() && r.path.is_none() {
        return Err(config_error(format!("rule {}: needs a regex, a path or both", r.id)));
    }
    let regex = r.regex.as_deref().map(compile).transpose()?;
    if let Some(re) = &regex
        && r.secret_group >= re.captures_len()
    {
        return Err(config_error(format!(
            "rule {}: secretGroup {} but the regex has {} groups",
            r.id,
            r.secret_group,
            re.captures_len() - 1
        )));
    }
    let mut allowlists = Vec::new();
    for a in r.allowlist.into_iter().chain(r.allowlists) {
        allowlists.push(build_allowlist(a)?);
    }
    Ok(Rule {
        id: r.id,
        description: r.description,
        regex,
        path: r.path.as_deref().map(compile).transpose()?,
        secret_group: r.secret_group,
        entropy: r.entropy,
        keywords: r.keywords.iter().map(|k| k.to_ascii_lowercase()).collect(),
        tags: r.tags,
        allowlists,
        validator: None,
        reach: 0,
    })
}

fn build_allowlist(a: RawAllowlist) -> Result<Allowlist, SecretsError> {
    let condition = match a.condition.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("OR" | "") => Condition::Or,
        Some("AND") => Condition::And,
        Some(other) => {
            return Err(config_error(format!("allowlist condition {other:?}: expected OR or AND")));
        }
    };
    let regex_target = match a.regex_target.as_deref() {
        None | Some("" | "secret") => RegexTarget::Secret,
        Some("match") => RegexTarget::Match,
        Some("line") => RegexTarget::Line,
        Some(other) => {
            return Err(config_error(format!("allowlist regexTarget {other:?}: expected secret, match or line")));
        }
    };
    Ok(Allowlist {
        description: a.description,
        condition,
        commits: a.commits,
        paths: a.paths.iter().map(|p| compile(p)).collect::<Result<_, _>>()?,
        regex_target,
        regexes: a.regexes.iter().map(|p| compile(p)).collect::<Result<_, _>>()?,
        stopwords: a.stopwords.iter().map(|s| s.to_ascii_lowercase()).collect(),
        target_rules: a.target_rules,
    })
}
