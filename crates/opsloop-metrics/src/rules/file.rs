//! Rule files in Prometheus's format, read so that a file `promtool check rules` accepts is
//! accepted here and one it refuses is refused, with every problem at file:line:column.
//!
//! Checks are Prometheus 2.42's `rulefmt`: unknown and repeated keys, exactly one of `record`
//! and `alert`, an `expr` that parses, a valid metric name for `record`, no `for`,
//! `keep_firing_for` or annotations on a recording rule, valid label and annotation names,
//! unique group names within a file, and templates of alerting rules that parse.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use opsloop_config::diagnostic::{Diagnostic, Sources, nearest};
use opsloop_config::yaml::{self, Key, Node, Span, Value};

use crate::config::parse_duration;
use crate::labels::{METRIC_NAME, is_valid_label_name, is_valid_metric_name};

/// One group of a rule file: its rules run in order, every `interval`.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleGroup {
    pub name: String,
    /// The file it came from; groups are told apart by file and name, as Prometheus does.
    pub file: String,
    /// Unset: the global `evaluation_interval`.
    pub interval: Option<Duration>,
    /// At most this many series per rule (alerts for an alerting rule); 0 is no limit.
    pub limit: usize,
    pub rules: Vec<RuleDef>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    Recording,
    Alerting,
}

/// One rule as written.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleDef {
    pub kind: RuleKind,
    /// The `record` metric name or the `alert` name.
    pub name: String,
    pub expr: String,
    pub for_duration: Duration,
    pub keep_firing_for: Duration,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
}

/// Why a rule file was refused: every problem, rendered at file:line:column.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{rendered}")]
pub struct RuleFileError {
    pub diagnostics: Vec<Diagnostic>,
    pub rendered: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RuleLoadError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("rule_files: bad pattern {pattern:?}: {message}")]
    Pattern { pattern: String, message: String },
    #[error(transparent)]
    Invalid(#[from] RuleFileError),
}

const TOP_KEYS: &[&str] = &["groups"];
const GROUP_KEYS: &[&str] = &["name", "interval", "limit", "rules"];
const RULE_KEYS: &[&str] = &["record", "alert", "expr", "for", "keep_firing_for", "labels", "annotations"];

/// Reads one rule file.
pub fn load_file(path: &Path) -> Result<Vec<RuleGroup>, RuleLoadError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| RuleLoadError::Read { path: path.display().to_string(), source })?;
    Ok(parse(&text, &path.display().to_string())?)
}

/// Reads every file the `rule_files` patterns of a `prometheus.yml` match, relative patterns
/// taken from `base` (the configuration file's directory), files in name order. All files'
/// problems are reported together.
pub fn load_patterns(patterns: &[String], base: &Path) -> Result<Vec<RuleGroup>, RuleLoadError> {
    let mut files: Vec<PathBuf> = Vec::new();
    for pattern in patterns {
        let full = if Path::new(pattern).is_absolute() { PathBuf::from(pattern) } else { base.join(pattern) };
        let text = full.display().to_string();
        let paths = glob::glob(&text)
            .map_err(|e| RuleLoadError::Pattern { pattern: pattern.clone(), message: e.to_string() })?;
        let mut matched: Vec<PathBuf> = paths.filter_map(Result::ok).collect();
        matched.sort();
        files.extend(matched);
    }
    let mut groups = Vec::new();
    let mut failures: Vec<RuleFileError> = Vec::new();
    for f in files {
        match load_file(&f) {
            Ok(g) => groups.extend(g),
            Err(RuleLoadError::Invalid(e)) => failures.push(e),
            Err(other) => return Err(other),
        }
    }
    if failures.is_empty() {
        Ok(groups)
    } else {
        let diagnostics = failures.iter().flat_map(|f| f.diagnostics.clone()).collect();
        let rendered = failures.iter().map(|f| f.rendered.clone()).collect::<Vec<_>>().join("\n");
        Err(RuleLoadError::Invalid(RuleFileError { diagnostics, rendered }))
    }
}

/// Parses the text of a rule file; `path` names it in errors and in the groups.
pub fn parse(text: &str, path: &str) -> Result<Vec<RuleGroup>, RuleFileError> {
    let mut sources = Sources::default();
    let file = sources.add(path, text);
    let mut d = Decoder { diags: Vec::new(), path: path.to_owned() };
    let groups = match yaml::parse_with_header(text, file) {
        Ok(parsed) => {
            for key in &parsed.duplicates {
                d.error(key.span, format!("mapping key {:?} already defined", key.name));
            }
            d.file(&parsed.body)
        }
        Err(e) => {
            d.error(e.span, format!("invalid YAML: {}", e.message));
            Vec::new()
        }
    };
    if d.diags.iter().any(Diagnostic::is_error) {
        let rendered = d.diags.iter().map(|x| sources.render(x)).collect::<Vec<_>>().join("\n");
        Err(RuleFileError { diagnostics: d.diags, rendered })
    } else {
        Ok(groups)
    }
}

struct Decoder {
    diags: Vec<Diagnostic>,
    path: String,
}

impl Decoder {
    fn error(&mut self, span: Span, message: impl Into<String>) {
        self.diags.push(Diagnostic::error(message, Some(span)));
    }

    fn mapping<'n>(&mut self, node: &'n Node, what: &str, known: &[&str]) -> &'n [(Key, Node)] {
        let entries: &'n [(Key, Node)] = match &node.value {
            Value::Mapping(entries) => entries,
            Value::Null => &[],
            _ => {
                self.error(node.span, format!("{what} must be a mapping, not {}", node.kind()));
                return &[];
            }
        };
        for (key, _) in entries {
            if !known.contains(&key.name.as_str()) {
                let d = Diagnostic::error(format!("field {} not found in {what}", key.name), Some(key.span));
                self.diags.push(match nearest(&key.name, known) {
                    Some(meant) => d.with_hint(format!("did you mean `{meant}`?")),
                    None => d.with_hint(format!("{what} takes: {}", known.join(", "))),
                });
            }
        }
        entries
    }

    fn string(&mut self, node: Option<&Node>, what: &str) -> String {
        let Some(node) = node else { return String::new() };
        match &node.value {
            Value::Sequence(_) | Value::Mapping(_) | Value::Reference(_) => {
                self.error(node.span, format!("`{what}` must be a string, not {}", node.kind()));
                String::new()
            }
            _ => node.scalar_text().unwrap_or_default(),
        }
    }

    fn duration(&mut self, node: Option<&Node>, what: &str) -> Option<Duration> {
        let node = node.filter(|n| n.value != Value::Null)?;
        let text = self.string(Some(node), what);
        match parse_duration(&text) {
            Some(d) => Some(d),
            None => {
                let d = Diagnostic::error(format!("`{what}`: not a valid duration string: {text:?}"), Some(node.span))
                    .with_hint("durations are like 30s, 1m, 1h30m, 500ms");
                self.diags.push(d);
                None
            }
        }
    }

    fn string_map(&mut self, node: Option<&Node>, what: &str) -> Vec<(Key, String)> {
        let Some(node) = node else { return Vec::new() };
        match &node.value {
            Value::Null => Vec::new(),
            Value::Mapping(entries) => entries.iter().map(|(k, v)| (k.clone(), self.string(Some(v), what))).collect(),
            _ => {
                self.error(node.span, format!("`{what}` must be a mapping, not {}", node.kind()));
                Vec::new()
            }
        }
    }

    fn list<'n>(&mut self, node: Option<&'n Node>, what: &str) -> &'n [Node] {
        let Some(node) = node else { return &[] };
        match &node.value {
            Value::Sequence(items) => items,
            Value::Null => &[],
            _ => {
                self.error(node.span, format!("`{what}` must be a list, not {}", node.kind()));
                &[]
            }
        }
    }

    fn file(&mut self, root: &Node) -> Vec<RuleGroup> {
        let top = self.mapping(root, "the rule file", TOP_KEYS);
        let groups_node = top.iter().rev().find(|(k, _)| k.name == "groups").map(|(_, v)| v);
        let mut groups: Vec<RuleGroup> = Vec::new();
        for node in self.list(groups_node, "groups") {
            let Some(g) = self.group(node) else { continue };
            if groups.iter().any(|o| o.name == g.name) {
                let span = node.get("name").map_or(node.span, |n| n.span);
                let d = Diagnostic::error(format!("groupname: {:?} is repeated in the same file", g.name), Some(span))
                    .with_hint("group names must be unique within a file");
                self.diags.push(d);
            }
            groups.push(g);
        }
        groups
    }

    fn group(&mut self, node: &Node) -> Option<RuleGroup> {
        let fields = self.mapping(node, "a rule group", GROUP_KEYS);
        let get = |k: &str| fields.iter().rev().find(|(key, _)| key.name == k).map(|(_, v)| v);
        let name = self.string(get("name"), "name");
        if name.is_empty() {
            self.error(node.span, "Groupname must not be empty");
        }
        let interval = self.duration(get("interval"), "interval").filter(|d| !d.is_zero());
        let limit = match get("limit").map(|n| (n, &n.value)) {
            None | Some((_, Value::Null)) => 0,
            Some((_, Value::Int(n))) => usize::try_from(*n).unwrap_or(0),
            Some((n, _)) => {
                self.error(n.span, format!("`limit` must be an integer, not {}", n.kind()));
                0
            }
        };
        let mut rules = Vec::new();
        for (i, r) in self.list(get("rules"), "rules").iter().enumerate() {
            if let Some(rule) = self.rule(r, &name, i + 1) {
                rules.push(rule);
            }
        }
        Some(RuleGroup { name, file: self.path.clone(), interval, limit, rules })
    }

    fn rule(&mut self, node: &Node, group: &str, index: usize) -> Option<RuleDef> {
        let fields = self.mapping(node, "a rule", RULE_KEYS);
        let get = |k: &str| fields.iter().rev().find(|(key, _)| key.name == k).map(|(_, v)| v);
        let record = self.string(get("record"), "record");
        let alert = self.string(get("alert"), "alert");
        let expr = self.string(get("expr"), "expr");
        let for_duration = self.duration(get("for"), "for").unwrap_or_default();
        let keep_firing_for = self.duration(get("keep_firing_for"), "keep_firing_for").unwrap_or_default();
        let labels = self.string_map(get("labels"), "labels");
        let annotations = self.string_map(get("annotations"), "annotations");
        let name = if alert.is_empty() { record.clone() } else { alert.clone() };
        let at = |k: &str| get(k).map_or(node.span, |n| n.span);
        let ctx = format!("group {group:?}, rule {index}, {name:?}");

        match (record.is_empty(), alert.is_empty()) {
            (false, false) => self.diags.push(
                Diagnostic::error(format!("{ctx}: only one of 'record' and 'alert' must be set"), Some(at("alert")))
                    .with_hint("a rule either records a series or raises an alert; split it in two"),
            ),
            (true, true) => self.diags.push(
                Diagnostic::error(format!("{ctx}: one of 'record' or 'alert' must be set"), Some(node.span))
                    .with_hint("add `record: <metric name>` or `alert: <alert name>`"),
            ),
            _ => {}
        }
        if expr.is_empty() {
            self.error(at("expr"), format!("{ctx}: field 'expr' must be set in rule"));
        } else if let Err(e) = crate::promql::parse(&expr) {
            self.error(at("expr"), format!("{ctx}: could not parse expression: {e}"));
        }
        if !record.is_empty() {
            if !annotations.is_empty() {
                self.error(at("annotations"), format!("{ctx}: invalid field 'annotations' in recording rule"));
            }
            if !for_duration.is_zero() {
                self.error(at("for"), format!("{ctx}: invalid field 'for' in recording rule"));
            }
            if !keep_firing_for.is_zero() {
                self.error(at("keep_firing_for"), format!("{ctx}: invalid field 'keep_firing_for' in recording rule"));
            }
            if !is_valid_metric_name(&record) {
                let mut d =
                    Diagnostic::error(format!("{ctx}: invalid recording rule name: {record}"), Some(at("record")));
                if record.contains('{') {
                    d = d.with_hint("label matchers belong in `expr`; a rule's own labels go in `labels`");
                } else {
                    d = d.with_hint("metric names are [a-zA-Z_:][a-zA-Z0-9_:]*, e.g. job:http_requests:rate5m");
                }
                self.diags.push(d);
            }
        }
        for (k, _) in &labels {
            if !is_valid_label_name(&k.name) || k.name == METRIC_NAME {
                self.error(k.span, format!("{ctx}: invalid label name: {}", k.name));
            }
        }
        for (k, _) in &annotations {
            if !is_valid_label_name(&k.name) {
                self.error(k.span, format!("{ctx}: invalid annotation name: {}", k.name));
            }
        }
        if !alert.is_empty() {
            let template_name = format!("__alert_{alert}");
            for (what, entries) in [("label", &labels), ("annotation", &annotations)] {
                for (k, v) in entries {
                    if let Err(e) = super::template::parse_check(v, &template_name) {
                        let span = get(if what == "label" { "labels" } else { "annotations" })
                            .and_then(|m| m.get(&k.name))
                            .map_or(k.span, |n| n.span);
                        self.error(span, format!("{ctx}: {what} {:?}: {e}", k.name));
                    }
                }
            }
        }
        let kind = if alert.is_empty() { RuleKind::Recording } else { RuleKind::Alerting };
        Some(RuleDef {
            kind,
            name,
            expr,
            for_duration,
            keep_firing_for,
            labels: labels.into_iter().map(|(k, v)| (k.name, v)).collect(),
            annotations: annotations.into_iter().map(|(k, v)| (k.name, v)).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_groups_and_rules() {
        let text = "groups:\n  - name: g\n    interval: 30s\n    limit: 5\n    rules:\n      - record: job:up:sum\n        expr: sum by (job) (up)\n        labels: {team: a}\n      - alert: Down\n        expr: up == 0\n        for: 5m\n        keep_firing_for: 1m\n        annotations:\n          summary: \"{{ $labels.instance }} down\"\n";
        let groups = parse(text, "r.yml").expect("valid");
        assert_eq!(groups.len(), 1);
        let g = &groups[0];
        assert_eq!((g.name.as_str(), g.interval, g.limit), ("g", Some(Duration::from_secs(30)), 5));
        assert_eq!(g.rules[0].kind, RuleKind::Recording);
        assert_eq!(g.rules[1].for_duration, Duration::from_secs(300));
        assert_eq!(g.rules[1].annotations["summary"], "{{ $labels.instance }} down");
    }

    #[test]
    fn errors_say_where_and_hint() {
        let text = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        anotations: {}\n";
        let e = parse(text, "r.yml").expect_err("unknown key");
        assert!(e.rendered.contains("r.yml:6:9"), "{e}");
        assert!(e.rendered.contains("did you mean `annotations`?"), "{e}");
        let text = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: sum(up\n";
        let e = parse(text, "r.yml").expect_err("bad expr");
        assert!(e.rendered.contains("r.yml:5:15") && e.rendered.contains("could not parse expression"), "{e}");
        let text = "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up\n        annotations:\n          s: \"{{ humanise $value }}\"\n";
        let e = parse(text, "r.yml").expect_err("bad template");
        assert!(e.rendered.contains("r.yml:7:14") && e.rendered.contains("function \"humanise\" not defined"), "{e}");
    }
}
