//! Loading a pipeline: YAML → `include` → `!reference` → `extends` → `default` → typed jobs.
//!
//! Every step keeps source positions, and problems are collected rather than stopping at the
//! first, so `opsloop lint` reports them all at once.

use std::collections::HashMap;

use crate::diagnostic::{Diagnostic, Sources};
use crate::expression::Expression;
use crate::yaml::{self, Key, Node, Span, Value};

/// Where included files come from: the project's files at the pipeline's commit.
pub trait FileSource {
    fn read(&self, path: &str) -> Result<String, String>;
    /// Every file path in the project, relative and `/`-separated (for globs and `exists`).
    fn files(&self) -> Vec<String>;
}

/// Looks up a variable's value (predefined, CLI, project); `None` when undefined.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

const GLOBAL_KEYWORDS: &[&str] = &[
    "default",
    "include",
    "stages",
    "variables",
    "workflow",
    "image",
    "services",
    "cache",
    "before_script",
    "after_script",
    "spec",
];
const DEFAULT_KEYWORDS: &[&str] = &[
    "after_script",
    "artifacts",
    "before_script",
    "cache",
    "hooks",
    "id_tokens",
    "image",
    "interruptible",
    "retry",
    "services",
    "tags",
    "timeout",
];
const JOB_KEYWORDS: &[&str] = &[
    "after_script",
    "allow_failure",
    "artifacts",
    "before_script",
    "cache",
    "coverage",
    "dast_configuration",
    "dependencies",
    "description",
    "environment",
    "except",
    "extends",
    "hooks",
    "id_tokens",
    "identity",
    "image",
    "inherit",
    "interruptible",
    "manual_confirmation",
    "needs",
    "only",
    "pages",
    "parallel",
    "publish",
    "release",
    "resource_group",
    "retry",
    "rules",
    "run",
    "script",
    "secrets",
    "services",
    "stage",
    "start_in",
    "tags",
    "timeout",
    "trigger",
    "variables",
    "when",
];

/// The keys GitLab's entries accept inside each job section (its `Entry::*` classes).
const RULE_KEYWORDS: &[&str] =
    &["if", "when", "allow_failure", "exists", "changes", "variables", "needs", "start_in", "interruptible"];
const ARTIFACTS_KEYWORDS: &[&str] =
    &["name", "untracked", "paths", "exclude", "reports", "when", "expire_in", "expose_as", "public", "access"];
const CACHE_KEYWORDS: &[&str] = &["key", "untracked", "paths", "policy", "when", "fallback_keys", "unprotect"];
const ENVIRONMENT_KEYWORDS: &[&str] =
    &["name", "url", "action", "on_stop", "auto_stop_in", "kubernetes", "deployment_tier"];
const RELEASE_KEYWORDS: &[&str] =
    &["tag_name", "tag_message", "name", "description", "ref", "released_at", "milestones", "assets"];
const TRIGGER_KEYWORDS: &[&str] = &["project", "branch", "strategy", "include", "forward"];
const RETRY_KEYWORDS: &[&str] = &["max", "when", "exit_codes"];
const INHERIT_KEYWORDS: &[&str] = &["default", "variables"];
pub const DEFAULT_STAGES: &[&str] = &[".pre", "build", "test", "deploy", ".post"];
/// The failure types `retry:when` accepts.
const RETRY_WHEN: &[&str] = &[
    "always",
    "unknown_failure",
    "script_failure",
    "api_failure",
    "stuck_or_timeout_failure",
    "runner_system_failure",
    "runner_unsupported",
    "stale_schedule",
    "job_execution_timeout",
    "archived_failure",
    "unmet_prerequisites",
    "scheduler_failure",
    "data_integrity_failure",
];

#[derive(Debug, Clone, PartialEq)]
pub struct Variable {
    pub name: String,
    pub value: String,
    /// `expand: false` keeps `$` references literal.
    pub expand: bool,
    pub description: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    OnSuccess,
    OnFailure,
    Always,
    Manual,
    Delayed,
    Never,
}

impl When {
    pub fn parse(text: &str) -> Option<When> {
        Some(match text {
            "on_success" => When::OnSuccess,
            "on_failure" => When::OnFailure,
            "always" => When::Always,
            "manual" => When::Manual,
            "delayed" => When::Delayed,
            "never" => When::Never,
            _ => return None,
        })
    }
    pub fn as_str(self) -> &'static str {
        match self {
            When::OnSuccess => "on_success",
            When::OnFailure => "on_failure",
            When::Always => "always",
            When::Manual => "manual",
            When::Delayed => "delayed",
            When::Never => "never",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AllowFailure {
    No,
    Yes,
    ExitCodes(Vec<i32>),
}

impl AllowFailure {
    pub fn allows(&self, exit_code: i32) -> bool {
        match self {
            AllowFailure::No => false,
            AllowFailure::Yes => true,
            AllowFailure::ExitCodes(codes) => codes.contains(&exit_code),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Need {
    pub job: String,
    pub optional: bool,
    pub artifacts: bool,
    /// `needs: [{job, parallel: {matrix: …}}]`: only these matrix instances. Each selector
    /// maps a matrix key to the values it takes (one, or a list); a value may hold
    /// `$[[ matrix.KEY ]]`, the needing instance's own value of KEY.
    pub matrix: Option<Vec<MatrixSelector>>,
    pub span: Span,
}

/// One `needs:parallel:matrix` entry: each matrix key with the values it may take.
pub type MatrixSelector = Vec<(String, Vec<String>)>;

#[derive(Debug, Clone)]
pub struct Rule {
    pub condition: Option<Expression>,
    pub exists: Option<Vec<String>>,
    pub changes: Option<Vec<String>>,
    /// `changes:compare_to`: the ref to diff against instead of the pipeline's default.
    pub compare_to: Option<String>,
    pub when: Option<When>,
    pub start_in: Option<String>,
    pub allow_failure: Option<AllowFailure>,
    pub variables: Vec<Variable>,
    pub needs: Option<Vec<Need>>,
    pub span: Span,
}

/// `only:`/`except:` in their map form (the list form is `refs`).
#[derive(Debug, Clone, Default)]
pub struct RefFilter {
    pub refs: Vec<String>,
    pub variables: Vec<Expression>,
    pub changes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum ArtifactsWhen {
    OnSuccess,
    OnFailure,
    Always,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Artifacts {
    pub name: Option<String>,
    pub paths: Vec<String>,
    pub exclude: Vec<String>,
    pub untracked: bool,
    pub when: ArtifactsWhen,
    pub expire_in: Option<String>,
    pub junit: Vec<String>,
    pub dotenv: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CachePolicy {
    PullPush,
    Pull,
    Push,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum CacheKey {
    Text(String),
    /// `key: {files: […], prefix: …}`: a digest of the files' contents.
    Files {
        files: Vec<String>,
        prefix: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Cache {
    pub key: CacheKey,
    pub paths: Vec<String>,
    pub policy: CachePolicy,
    /// `policy: $VAR`: decided where the job runs, from its variables (`policy` is then the
    /// default, pull-push).
    #[serde(default)]
    pub policy_variable: Option<String>,
    pub when: ArtifactsWhen,
    pub untracked: bool,
    pub fallback_keys: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Parallel {
    Count(u32),
    /// Each entry maps variable names to the values to combine.
    Matrix(Vec<Vec<(String, Vec<String>)>>),
}

#[derive(Debug, Clone, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct Retry {
    pub max: u32,
    pub when: Vec<String>,
    pub exit_codes: Vec<i32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Environment {
    pub name: String,
    pub url: Option<String>,
    pub action: Option<String>,
    pub on_stop: Option<String>,
    pub deployment_tier: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Job {
    pub name: String,
    pub span: Span,
    pub stage: String,
    pub stage_span: Span,
    pub before_script: Vec<String>,
    pub script: Vec<String>,
    pub after_script: Vec<String>,
    /// The global variables this job inherits (all, some or none, per `inherit:variables`).
    pub global_variables: Vec<Variable>,
    /// The job's own `variables:`, which override global (and workflow) ones.
    pub variables: Vec<Variable>,
    pub when: When,
    pub start_in: Option<String>,
    pub allow_failure: Option<AllowFailure>,
    pub needs: Option<Vec<Need>>,
    pub dependencies: Option<(Vec<String>, Span)>,
    pub rules: Option<Vec<Rule>>,
    pub only: Option<RefFilter>,
    pub except: Option<RefFilter>,
    pub artifacts: Option<Artifacts>,
    pub cache: Vec<Cache>,
    pub parallel: Option<Parallel>,
    pub retry: Retry,
    pub timeout: Option<String>,
    pub coverage: Option<String>,
    pub environment: Option<Environment>,
    pub resource_group: Option<String>,
    pub interruptible: bool,
    pub tags: Vec<String>,
    pub image: Option<String>,
    pub services: Vec<String>,
    pub trigger: Option<Node>,
    /// The fully expanded job node, for `--preview`.
    pub node: Node,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub sources: Sources,
    pub stages: Vec<String>,
    pub variables: Vec<Variable>,
    pub workflow_rules: Option<Vec<Rule>>,
    pub jobs: Vec<Job>,
    pub diagnostics: Vec<Diagnostic>,
    /// The whole configuration after include, !reference, extends and default (for `--preview`).
    pub expanded: Node,
    /// An include could not be read: what it held (jobs, stages, templates) is missing, so
    /// errors about those are consequences of that one, not problems of their own.
    pub include_failed: bool,
    /// Jobs of the file that could not be loaded (not a mapping): they exist, so a `needs`
    /// naming one is not also "not found".
    pub unloaded: Vec<String>,
}

/// The hint of an error that follows from another one (see [`Config::may_define`]).
pub const CONSEQUENCE: &str = "a consequence of an error above (an include that could not be read, a job that could not be loaded): fix that first";

impl Config {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }
    pub fn job(&self, name: &str) -> Option<&Job> {
        self.jobs.iter().find(|job| job.name == name)
    }
    /// Whether a job named `name`, though not loaded, may be in the file: it is one that
    /// could not be loaded, or an include that could not be read may hold it.
    pub fn may_define(&self, name: &str) -> bool {
        self.include_failed || self.unloaded.iter().any(|unloaded| unloaded == name)
    }
}

struct Loader<'a> {
    files: &'a dyn FileSource,
    lookup: Lookup<'a>,
    sources: Sources,
    diagnostics: Vec<Diagnostic>,
    /// Resolved `!reference` paths, so a reference used many times is resolved once.
    references: HashMap<Vec<String>, Node>,
    /// Values produced by `!reference` so far; capped like YAML aliases (reference bombs).
    referenced_values: usize,
    /// Files included so far, and how many may be (GitLab: 150 per pipeline).
    included: usize,
    /// The include limit was passed (said once).
    too_many_includes: bool,
    max_includes: usize,
    /// An include could not be read or parsed (see `Config::include_failed`).
    include_failed: bool,
    /// The top-level `stages:` was refused, so a job's stage cannot be checked against it.
    stages_refused: bool,
}

/// GitLab's limit on included files per pipeline.
pub const MAX_INCLUDES: usize = 150;

/// Loads `path` from `files`. Problems are in `Config::diagnostics`; check `has_errors`.
pub fn load(files: &dyn FileSource, path: &str, lookup: Lookup<'_>) -> Config {
    load_with_max_includes(files, path, lookup, MAX_INCLUDES)
}

/// [`load`] with another limit on included files (`--maximum-includes`).
pub fn load_with_max_includes(files: &dyn FileSource, path: &str, lookup: Lookup<'_>, max_includes: usize) -> Config {
    let mut loader = Loader {
        files,
        lookup,
        sources: Sources::default(),
        diagnostics: Vec::new(),
        references: HashMap::new(),
        referenced_values: 0,
        included: 0,
        too_many_includes: false,
        max_includes,
        include_failed: false,
        stages_refused: false,
    };
    let empty = Node::new(Value::Mapping(Vec::new()), Span::default());
    let root = match files.read(path) {
        Ok(text) => {
            let id = loader.sources.add(path, &text);
            match yaml::parse_with_header(&text, id) {
                Ok(parsed) => {
                    let at = parsed.body.span;
                    loader.warn_duplicate_keys(&parsed.duplicates);
                    loader.apply_inputs(parsed.spec, parsed.body, None, at)
                }
                Err(error) => {
                    loader
                        .diagnostics
                        .push(Diagnostic::error(format!("invalid YAML: {}", error.message), Some(error.span)));
                    None
                }
            }
        }
        Err(error) => {
            loader.diagnostics.push(Diagnostic::error(format!("cannot read {path}: {error}"), None));
            None
        }
    };
    let Some(root) = root else {
        return Config {
            sources: loader.sources,
            stages: Vec::new(),
            variables: Vec::new(),
            workflow_rules: None,
            jobs: Vec::new(),
            diagnostics: loader.diagnostics,
            expanded: empty,
            include_failed: false,
            unloaded: Vec::new(),
        };
    };
    if root.as_mapping().is_none() {
        loader
            .diagnostics
            .push(Diagnostic::error(format!("the pipeline must be a mapping, not {}", root.kind()), Some(root.span)));
    }
    let root = loader.includes(root, 0, &mut HashMap::new());
    // GitLab's order: includes, then `extends`, then `!reference` (so a reference reaches what a
    // job got through `extends`).
    let root = loader.extends_all(root);
    let root = loader.references(root);
    let mut config = loader.build(root);
    config.diagnostics.sort_by_key(|d| std::cmp::Reverse(d.severity));
    config
}

/// Deep merge: mappings merge key by key, anything else in `overlay` replaces `base`.
pub fn deep_merge(base: Node, overlay: Node) -> Node {
    match (base.value, overlay.value) {
        (Value::Mapping(mut entries), Value::Mapping(overlay_entries)) => {
            for (key, value) in overlay_entries {
                match entries.iter().position(|(k, _)| k.name == key.name) {
                    Some(index) => {
                        let (_, existing) = entries.remove(index);
                        entries.insert(index, (key, deep_merge(existing, value)));
                    }
                    None => entries.push((key, value)),
                }
            }
            Node::new(Value::Mapping(entries), overlay.span)
        }
        (_, value) => Node { value, span: overlay.span, yaml11_bool: overlay.yaml11_bool },
    }
}

fn set_key(node: &mut Node, name: &str, value: Node) {
    if let Value::Mapping(entries) = &mut node.value {
        match entries.iter_mut().find(|(k, _)| k.name == name) {
            Some((_, existing)) => *existing = value,
            None => entries.push((Key { name: name.to_owned(), span: value.span }, value)),
        }
    }
}

fn remove_key(node: &mut Node, name: &str) -> Option<Node> {
    if let Value::Mapping(entries) = &mut node.value {
        let index = entries.iter().position(|(k, _)| k.name == name)?;
        return Some(entries.remove(index).1);
    }
    None
}

/// Flattens a string or (nested) list of strings, as GitLab reads `script` and friends.
fn flatten_strings(node: &Node, out: &mut Vec<String>, depth: usize) -> Result<(), Span> {
    match &node.value {
        Value::Sequence(items) if depth < 10 => {
            for item in items {
                flatten_strings(item, out, depth + 1)?;
            }
            Ok(())
        }
        Value::Mapping(_) | Value::Sequence(_) | Value::Reference(_) => Err(node.span),
        _ => {
            out.push(node.scalar_text().unwrap_or_default());
            Ok(())
        }
    }
}

/// Whether a (nested) list holds a null: GitLab refuses `script: [echo, ~]`.
fn has_null_item(node: &Node) -> bool {
    match &node.value {
        Value::Sequence(items) => items.iter().any(|item| matches!(item.value, Value::Null) || has_null_item(item)),
        _ => false,
    }
}

/// Expands `$VAR`/`${VAR}` in `text` with `lookup` (undefined → empty), for include paths.
pub fn expand_simple(text: &str, lookup: Lookup<'_>) -> String {
    crate::variables::expand(text, &|name| lookup(name))
}

fn glob_to_regex(pattern: &str, double_star_needs_folder: bool) -> Option<regex::Regex> {
    let mut regex = String::from("^");
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '*' if chars.peek() == Some(&'*') => {
                chars.next();
                if chars.peek() == Some(&'/') {
                    chars.next();
                    regex.push_str(if double_star_needs_folder { "(?:.+/)" } else { "(?:.*/)?" });
                } else {
                    regex.push_str(".*");
                }
            }
            '*' => regex.push_str("[^/]*"),
            '?' => regex.push_str("[^/]"),
            '{' => {
                // `{a,b}`: alternatives (File.fnmatch's FNM_EXTGLOB, as GitLab matches).
                let mut alternatives = String::new();
                for inner in chars.by_ref() {
                    if inner == '}' {
                        break;
                    }
                    alternatives.push(inner);
                }
                let parts: Vec<String> = alternatives.split(',').map(regex::escape).collect();
                regex.push_str(&format!("(?:{})", parts.join("|")));
            }
            c => regex.push_str(&regex::escape(&c.to_string())),
        }
    }
    regex.push('$');
    regex::Regex::new(&regex).ok()
}

/// Paths among `files` that match a glob such as `ci/**/*.yml` (`**/` also matches no folder).
pub fn glob_matches(pattern: &str, files: &[String]) -> Vec<String> {
    glob_matches_with(pattern, files, false)
}

fn glob_matches_with(pattern: &str, files: &[String], double_star_needs_folder: bool) -> Vec<String> {
    let pattern = pattern.trim_start_matches('/');
    if let Some(directory) = pattern.strip_suffix('/')
        && !directory.contains(['*', '?', '{'])
    {
        // `dir/` names a directory: it exists when a file lies below it.
        return files.iter().filter(|f| f.starts_with(pattern)).cloned().collect();
    }
    if !pattern.contains(['*', '?', '{']) {
        return files
            .iter()
            .filter(|f| f.as_str() == pattern || f.starts_with(&format!("{pattern}/")))
            .cloned()
            .collect();
    }
    let Some(regex) = glob_to_regex(pattern, double_star_needs_folder) else { return Vec::new() };
    files.iter().filter(|file| regex.is_match(file)).cloned().collect()
}

impl Loader<'_> {
    /// An error that the failed include may explain (what it held is missing): then it is a
    /// warning marked as a consequence, so the one real problem stands out.
    fn error_unless_consequence(&mut self, message: impl Into<String>, span: Span, hint: Option<String>) {
        let diagnostic = if self.include_failed {
            Diagnostic::warning(message, Some(span)).with_hint(CONSEQUENCE)
        } else {
            let diagnostic = Diagnostic::error(message, Some(span));
            match hint {
                Some(hint) => diagnostic.with_hint(hint),
                None => diagnostic,
            }
        };
        self.diagnostics.push(diagnostic);
    }

    fn error(&mut self, message: impl Into<String>, span: Span) {
        self.diagnostics.push(Diagnostic::error(message, Some(span)));
    }

    /// Warns of keys written twice in one mapping: YAML keeps the last, which is rarely meant.
    fn warn_duplicate_keys(&mut self, duplicates: &[Key]) {
        for key in duplicates {
            self.diagnostics.push(Diagnostic::warning(
                format!("duplicated mapping key detected: `{}` (the last one wins)", key.name),
                Some(key.span),
            ));
        }
    }

    /// A file's CI/CD inputs: its `spec:` header resolved against what the include gave, and
    /// `$[[ inputs.X ]]` replaced in its body. `None` (with the errors recorded) when that fails.
    fn apply_inputs(&mut self, header: Option<Node>, body: Node, given: Option<&Node>, at: Span) -> Option<Node> {
        let Some(header) = header else {
            if let Some(given) = given {
                self.error(
                    "Given inputs not defined in the `spec` section of the included configuration file",
                    given.span,
                );
                return None;
            }
            return Some(body);
        };
        let values = match crate::inputs::resolve(&header, given, at) {
            Ok(values) => values,
            Err(errors) => {
                self.diagnostics.extend(errors);
                return None;
            }
        };
        let mut warnings = Vec::new();
        let result = crate::inputs::interpolate(body, &values, &mut warnings);
        // One notice per file is enough.
        warnings.dedup_by(|a, b| a.message == b.message);
        self.diagnostics.extend(warnings);
        match result {
            Ok(body) => Some(body),
            Err(error) => {
                self.diagnostics.push(error);
                None
            }
        }
    }

    /// `seen` holds each file read (with the inputs it was given) and how many includes its own
    /// nested includes made, so a file included again counts those again without being read.
    fn includes(&mut self, mut node: Node, depth: usize, seen: &mut HashMap<String, usize>) -> Node {
        let Some(include) = remove_key(&mut node, "include") else { return node };
        if depth > 100 {
            self.error("includes nested more than 100 deep", include.span);
            return node;
        }
        let items = match include.value {
            Value::Sequence(items) => items,
            _ => vec![include],
        };
        let mut merged = Node::new(Value::Mapping(Vec::new()), node.span);
        for item in items {
            for path in self.include_paths(&item) {
                // Every include counts, repeated ones and what they include too, as GitLab
                // counts them.
                let given = item.get("inputs").map(yaml::emit).unwrap_or_default();
                let key = format!("{path}\u{0}{given}");
                let repeated = seen.get(&key).copied();
                self.included += 1 + repeated.unwrap_or(0);
                if self.included > self.max_includes {
                    self.include_failed = true;
                    if !self.too_many_includes {
                        self.too_many_includes = true;
                        self.error_with_hint(
                            format!(
                                "This GitLab CI configuration is invalid: Maximum of {} nested includes are allowed!. This limit can be increased with the --maximum-includes cli flags.",
                                self.max_includes
                            ),
                            item.span,
                            "GitLab allows 150 included files per pipeline",
                        );
                    }
                    return node;
                }
                // The same file twice is read once, unless each include gives it other inputs.
                if repeated.is_some() {
                    continue;
                }
                seen.insert(key.clone(), 0);
                let before = self.included;
                let text = match self.files.read(&path) {
                    Ok(text) => text,
                    Err(error) => {
                        self.include_failed = true;
                        self.error(
                            format!("Local include file cannot be found {path} (include:local: {error})"),
                            item.span,
                        );
                        continue;
                    }
                };
                let id = self.sources.add(&path, &text);
                match yaml::parse_with_header(&text, id) {
                    Ok(parsed) => {
                        self.warn_duplicate_keys(&parsed.duplicates);
                        let Some(included) = self.apply_inputs(parsed.spec, parsed.body, item.get("inputs"), item.span)
                        else {
                            self.include_failed = true;
                            continue;
                        };
                        let included = self.includes(included, depth + 1, seen);
                        seen.insert(key, self.included - before);
                        merged = deep_merge(merged, included);
                    }
                    Err(error) => {
                        self.include_failed = true;
                        self.error(format!("invalid YAML in {path}: {}", error.message), error.span);
                    }
                }
            }
        }
        deep_merge(merged, node)
    }

    /// The files an include entry names; `include_failed` is set when one cannot be had.
    fn include_paths(&mut self, item: &Node) -> Vec<String> {
        let errors_before = self.diagnostics.iter().filter(|d| d.is_error()).count();
        let paths = self.include_entry_paths(item);
        if self.diagnostics.iter().filter(|d| d.is_error()).count() > errors_before {
            self.include_failed = true;
        }
        paths
    }

    fn include_entry_paths(&mut self, item: &Node) -> Vec<String> {
        let (local, rules) = match &item.value {
            Value::String(text) if text.starts_with("https://") || text.starts_with("http://") => {
                self.error_with_hint(
                    format!("include `{text}` is a remote include"),
                    item.span,
                    "remote includes need network access; vendor the file into the repository and use include:local",
                );
                return Vec::new();
            }
            Value::String(text) => (text.clone(), None),
            Value::Mapping(_) => {
                for kind in ["project", "remote", "template", "component"] {
                    if item.get(kind).is_some() {
                        self.error_with_hint(
                            format!("include:{kind} is not available when running locally"),
                            item.span,
                            "it needs a server or network access; copy the file into this repository and use include:local",
                        );
                        return Vec::new();
                    }
                }
                match item.get("local").or_else(|| item.get("file")).and_then(Node::scalar_text) {
                    Some(path) => (path, item.get("rules")),
                    None => {
                        self.error("include entries need `local:` (a path in this repository)", item.span);
                        return Vec::new();
                    }
                }
            }
            _ => {
                self.error(format!("include takes a path or a mapping, not {}", item.kind()), item.span);
                return Vec::new();
            }
        };
        if let Some(rules) = rules {
            let rules = self.rules(rules, "include");
            let files = self.files.files();
            if !crate::plan::rules_match(&rules, self.lookup, &files, None)
                .is_some_and(|outcome| outcome.when != Some(When::Never))
            {
                return Vec::new();
            }
        }
        let path = expand_simple(&local, self.lookup);
        if path.starts_with("./") {
            self.error(
                format!("`{path}` for include:local is invalid. Gitlab does not support relative path (ie. cannot start with `./`)."),
                item.span,
            );
            return Vec::new();
        }
        if path.split('/').any(|part| part == "..") {
            self.error(
                format!("`{path}` for include:local is invalid. Gitlab does not support directory traversal."),
                item.span,
            );
            return Vec::new();
        }
        let path = path.trim_start_matches('/').to_owned();
        if path.contains(['*', '?']) {
            // In include globs, `**/` stands for one or more folders (GitLab's documented reading).
            let mut matched = glob_matches_with(&path, &self.files.files(), true);
            matched.sort();
            return matched;
        }
        if !(path.ends_with(".yml") || path.ends_with(".yaml")) {
            self.error(format!("Included file `{path}` does not have YAML extension!"), item.span);
            return Vec::new();
        }
        vec![path]
    }

    fn error_with_hint(&mut self, message: String, span: Span, hint: &str) {
        self.diagnostics.push(Diagnostic::error(message, Some(span)).with_hint(hint));
    }

    /// Replaces every `!reference [job, key, …]` with what it points at (recursively).
    fn references(&mut self, root: Node) -> Node {
        let snapshot = root.clone();
        let mut stack = Vec::new();
        self.resolve_references(root, &snapshot, &mut stack)
    }

    fn resolve_references(&mut self, node: Node, root: &Node, stack: &mut Vec<Vec<String>>) -> Node {
        match node.value {
            Value::Reference(path) => {
                if stack.contains(&path) || stack.len() > 10 {
                    self.error(format!("!reference circular chain detected [{}]", path.join(",")), node.span);
                    return Node::new(Value::Null, node.span);
                }
                let resolved = match self.references.get(&path) {
                    Some(done) => done.clone(),
                    None => {
                        let mut target = Some(root);
                        for part in &path {
                            target = target.and_then(|t| t.get(part));
                        }
                        let Some(target) = target.cloned() else {
                            self.error(format!("!reference [{}] points at nothing", path.join(", ")), node.span);
                            return Node::new(Value::Null, node.span);
                        };
                        stack.push(path.clone());
                        let resolved = self.resolve_references(target, root, stack);
                        stack.pop();
                        self.references.insert(path, resolved.clone());
                        resolved
                    }
                };
                self.referenced_values = self.referenced_values.saturating_add(yaml::size(&resolved));
                if self.referenced_values > yaml::MAX_NODES {
                    self.error(
                        format!(
                            "!reference expands the file to more than {} values (reference bomb?)",
                            yaml::MAX_NODES
                        ),
                        node.span,
                    );
                    return Node::new(Value::Null, node.span);
                }
                Node { span: node.span, ..resolved }
            }
            Value::Sequence(items) => Node::new(
                Value::Sequence(items.into_iter().map(|item| self.resolve_references(item, root, stack)).collect()),
                node.span,
            ),
            Value::Mapping(entries) => Node::new(
                Value::Mapping(
                    entries
                        .into_iter()
                        .map(|(key, value)| (key, self.resolve_references(value, root, stack)))
                        .collect(),
                ),
                node.span,
            ),
            value => Node { value, span: node.span, yaml11_bool: node.yaml11_bool },
        }
    }

    fn extends(
        &mut self,
        name: &str,
        root: &Node,
        memo: &mut HashMap<String, Node>,
        chain: &mut Vec<String>,
    ) -> Option<Node> {
        if let Some(done) = memo.get(name) {
            return Some(done.clone());
        }
        let mut node = root.get(name)?.clone();
        let Some(extends) = remove_key(&mut node, "extends") else {
            memo.insert(name.to_owned(), node.clone());
            return Some(node);
        };
        let parents: Vec<(String, Span)> = match &extends.value {
            Value::String(parent) => vec![(parent.clone(), extends.span)],
            Value::Sequence(items) => items.iter().filter_map(|i| i.scalar_text().map(|t| (t, i.span))).collect(),
            _ => {
                self.error(format!("{name}: extends takes a job name or a list of them"), extends.span);
                Vec::new()
            }
        };
        if chain.len() > 11 {
            self.error(format!("{name}: extends nested more than 11 levels"), extends.span);
            return Some(node);
        }
        chain.push(name.to_owned());
        let mut base = Node::new(Value::Mapping(Vec::new()), node.span);
        for (parent, span) in parents {
            if chain.contains(&parent) {
                self.error(format!("{name}: circular dependency detected in `extends` ({parent})"), span);
                continue;
            }
            match self.extends(&parent, root, memo, chain) {
                Some(parent_node) if parent_node.as_mapping().is_some() => base = deep_merge(base, parent_node),
                Some(_) => self.error(format!("{name}: `{parent}` in extends is not a job"), span),
                None => {
                    self.error_unless_consequence(format!("{name}: unknown key in `extends` ({parent})"), span, None)
                }
            }
        }
        chain.pop();
        let merged = deep_merge(base, node);
        memo.insert(name.to_owned(), merged.clone());
        Some(merged)
    }

    /// Resolves `extends` for every job and hidden job.
    fn extends_all(&mut self, mut root: Node) -> Node {
        let names: Vec<String> = root.as_mapping().unwrap_or_default().iter().map(|(k, _)| k.name.clone()).collect();
        let snapshot = root.clone();
        let mut memo = HashMap::new();
        for name in &names {
            if GLOBAL_KEYWORDS.contains(&name.as_str()) {
                continue;
            }
            if snapshot.get(name).is_some_and(|n| n.as_mapping().is_some())
                && let Some(resolved) = self.extends(name, &snapshot, &mut memo, &mut Vec::new())
            {
                set_key(&mut root, name, resolved);
            }
        }
        root
    }

    fn build(&mut self, root: Node) -> Config {
        let stages = match root.get("stages") {
            Some(node) => {
                let mut stages = Vec::new();
                let valid = if !matches!(node.value, Value::Sequence(_)) {
                    self.error("stages: must be an array", node.span);
                    false
                } else if flatten_strings(node, &mut stages, 0).is_err() {
                    self.error("stages must be a list of names", node.span);
                    false
                } else {
                    true
                };
                if !valid {
                    // GitLab's defaults stand in, and jobs are not also told their stage is
                    // "not found" (a consequence of this error, not a second one).
                    stages = DEFAULT_STAGES.iter().map(|s| (*s).to_owned()).collect();
                    self.stages_refused = true;
                }
                let mut all = vec![".pre".to_owned()];
                all.extend(stages.into_iter().filter(|s| s != ".pre" && s != ".post"));
                all.push(".post".to_owned());
                all
            }
            None => DEFAULT_STAGES.iter().map(|s| (*s).to_owned()).collect(),
        };
        let variables = root.get("variables").map(|node| self.variables(node)).unwrap_or_default();
        let workflow_rules =
            root.get("workflow").and_then(|w| w.get("rules")).map(|rules| self.rules(rules, "workflow"));

        // Defaults: `default:` and the legacy global keywords.
        let mut defaults: Vec<(String, Node)> = Vec::new();
        for keyword in ["image", "services", "cache", "before_script", "after_script"] {
            if let Some(node) = root.get(keyword) {
                defaults.push((keyword.to_owned(), node.clone()));
            }
        }
        if let Some(default) = root.get("default") {
            for (key, value) in default.as_mapping().unwrap_or_default() {
                if !DEFAULT_KEYWORDS.contains(&key.name.as_str()) {
                    let hint = opsloop_config::diagnostic::nearest(&key.name, DEFAULT_KEYWORDS).map_or_else(
                        || format!("default takes: {}", DEFAULT_KEYWORDS.join(", ")),
                        |near| format!("did you mean `{near}`?"),
                    );
                    self.diagnostics.push(
                        Diagnostic::error(
                            format!("default config contains unknown keys: {}", key.name),
                            Some(key.span),
                        )
                        .with_hint(hint),
                    );
                    continue;
                }
                defaults.retain(|(k, _)| *k != key.name);
                defaults.push((key.name.clone(), value.clone()));
            }
        }

        let mut jobs = Vec::new();
        let mut unloaded = Vec::new();
        let mut expanded_entries = Vec::new();
        for (key, value) in root.as_mapping().unwrap_or_default().iter() {
            if GLOBAL_KEYWORDS.contains(&key.name.as_str()) {
                if key.name != "default" {
                    expanded_entries.push((key.clone(), value.clone()));
                }
                continue;
            }
            if key.name.starts_with('.') {
                continue;
            }
            if value.as_mapping().is_none() {
                self.error(format!("jobs:{} config should be a mapping, not {}", key.name, value.kind()), key.span);
                unloaded.push(key.name.clone());
                continue;
            }
            let mut node = value.clone();
            let inherit_default = inherit_list(value, "default");
            let inherit_variables = inherit_list(value, "variables");
            for (keyword, default_value) in &defaults {
                let inherited = match &inherit_default {
                    Inherit::All => true,
                    Inherit::None => false,
                    Inherit::Only(list) => list.contains(keyword),
                };
                if inherited && node.get(keyword).is_none() {
                    set_key(&mut node, keyword, default_value.clone());
                }
            }
            let global_variables: Vec<Variable> = variables
                .iter()
                .filter(|v| match &inherit_variables {
                    Inherit::All => true,
                    Inherit::None => false,
                    Inherit::Only(list) => list.contains(&v.name),
                })
                .cloned()
                .collect();
            expanded_entries.push((key.clone(), node.clone()));
            if let Some(job) = self.job(key, node, &global_variables, &stages) {
                jobs.push(job);
            }
        }
        if jobs.is_empty() && !self.diagnostics.iter().any(Diagnostic::is_error) {
            self.error("jobs config should contain at least one visible job", root.span);
        }
        // `environment:on_stop` names a job of this file that stops the environment.
        for job in &jobs {
            let Some(stop) = job.environment.as_ref().and_then(|e| e.on_stop.clone()) else { continue };
            let span = job.node.get("environment").and_then(|e| e.get("on_stop")).map_or(job.span, |n| n.span);
            match jobs.iter().find(|j| j.name == stop) {
                None => self.error(format!("{} job: on_stop job {stop} is not defined", job.name), span),
                Some(stopper) if stopper.environment.is_none() => {
                    self.error(format!("{} job: on_stop job {stop} needs to have environment defined", job.name), span)
                }
                Some(stopper) if stopper.environment.as_ref().and_then(|e| e.action.as_deref()) != Some("stop") => {
                    self.error(format!("{} job: on_stop job {stop} needs to have action stop defined", job.name), span)
                }
                Some(_) => {}
            }
        }
        let expanded = Node::new(Value::Mapping(expanded_entries), root.span);
        Config {
            sources: std::mem::take(&mut self.sources),
            stages,
            variables,
            workflow_rules,
            jobs,
            diagnostics: std::mem::take(&mut self.diagnostics),
            expanded,
            include_failed: self.include_failed,
            unloaded,
        }
    }

    /// GitLab's "config contains unknown keys": every key of `node` outside `known` is an error
    /// at its place, with the known key it was probably meant to be.
    fn known_keys(&mut self, node: &Node, known: &[&str], place: &str) {
        for (key, _) in node.as_mapping().unwrap_or_default() {
            if known.contains(&key.name.as_str()) {
                continue;
            }
            let hint = match opsloop_config::diagnostic::nearest(&key.name, known) {
                Some(near) => format!("did you mean `{near}`?"),
                None => format!("{place} takes: {}", known.join(", ")),
            };
            self.diagnostics.push(
                Diagnostic::error(format!("{place} config contains unknown keys: {}", key.name), Some(key.span))
                    .with_hint(hint),
            );
        }
    }

    fn strings(&mut self, node: &Node, what: &str) -> Vec<String> {
        let mut out = Vec::new();
        if let Err(span) = flatten_strings(node, &mut out, 0) {
            self.error(format!("{what} must be a string or a list of strings"), span);
        }
        out
    }

    fn variables(&mut self, node: &Node) -> Vec<Variable> {
        let Some(entries) = node.as_mapping() else {
            if !matches!(node.value, Value::Null) {
                self.error(format!("variables must be a mapping, not {}", node.kind()), node.span);
            }
            return Vec::new();
        };
        let mut out = Vec::new();
        for (key, value) in entries {
            let (text, expand, description) = match &value.value {
                Value::Mapping(_) => (
                    value.get("value").and_then(Node::scalar_text).unwrap_or_default(),
                    value.get("expand").and_then(Node::as_bool) != Some(false),
                    value.get("description").and_then(Node::scalar_text),
                ),
                Value::Sequence(_) | Value::Reference(_) => {
                    self.error(format!("variable {} must be a string, not {}", key.name, value.kind()), value.span);
                    continue;
                }
                _ => (value.scalar_text().unwrap_or_default(), true, None),
            };
            out.push(Variable { name: key.name.clone(), value: text, expand, description });
        }
        out
    }

    pub(crate) fn rules(&mut self, node: &Node, owner: &str) -> Vec<Rule> {
        let Value::Sequence(top) = &node.value else {
            self.error("rules must be a list", node.span);
            return Vec::new();
        };
        if top.is_empty() {
            // GitLab: "rules config can't be blank" (an empty list would silently never run).
            self.error(format!("{owner} rules: config can't be blank"), node.span);
        }
        // `!reference [.x, rules]` inside the list leaves a nested list; GitLab flattens it.
        let mut items: Vec<&Node> = Vec::new();
        let mut stack: Vec<&Node> = top.iter().rev().collect();
        while let Some(item) = stack.pop() {
            match &item.value {
                Value::Sequence(inner) if items.len() < 1000 => stack.extend(inner.iter().rev()),
                _ => items.push(item),
            }
        }
        let mut rules = Vec::new();
        for item in items {
            if item.as_mapping().is_none() {
                self.error(
                    format!("a rule is a mapping (if, changes, exists, when, …), not {}", item.kind()),
                    item.span,
                );
                continue;
            }
            let condition = item.get("if").and_then(|node| {
                let text = node.scalar_text().unwrap_or_default();
                match Expression::parse(&text) {
                    Ok(expression) => Some(expression),
                    Err(error) => {
                        self.error(format!("rules:rule if invalid expression syntax in `{text}`: {error}"), node.span);
                        None
                    }
                }
            });
            let when = item.get("when").and_then(|node| self.when(node, true));
            let allow_failure = item.get("allow_failure").and_then(|node| self.allow_failure(node));
            let exists = item.get("exists").map(|node| match node.get("paths") {
                Some(paths) => self.strings(paths, "rules:exists:paths"),
                None => self.strings(node, "rules:exists"),
            });
            let changes = item.get("changes").map(|node| match node.get("paths") {
                Some(paths) => self.strings(paths, "rules:changes:paths"),
                None => self.strings(node, "rules:changes"),
            });
            let compare_to = item.get("changes").and_then(|c| c.get("compare_to")).and_then(Node::scalar_text);
            let variables = item.get("variables").map(|node| self.variables(node)).unwrap_or_default();
            let needs = item.get("needs").map(|node| self.needs(node, "rule"));
            let start_in = item.get("start_in").and_then(Node::scalar_text);
            self.known_keys(item, RULE_KEYWORDS, "rules");
            rules.push(Rule {
                condition,
                exists,
                changes,
                compare_to,
                when,
                start_in,
                allow_failure,
                variables,
                needs,
                span: item.span,
            });
        }
        rules
    }

    fn when(&mut self, node: &Node, in_rules: bool) -> Option<When> {
        let text = node.scalar_text().unwrap_or_default();
        match When::parse(&text) {
            Some(When::Never) if !in_rules => None,
            Some(when) => Some(when),
            None => {
                self.diagnostics.push(
                    Diagnostic::error(format!("unknown when: `{text}`"), Some(node.span))
                        .with_hint("one of on_success, on_failure, always, manual, delayed, never"),
                );
                None
            }
        }
    }

    fn allow_failure(&mut self, node: &Node) -> Option<AllowFailure> {
        match node.as_bool() {
            Some(true) => return Some(AllowFailure::Yes),
            Some(false) => return Some(AllowFailure::No),
            None => {}
        }
        match &node.value {
            Value::Mapping(_) => {
                let codes = node.get("exit_codes")?;
                let mut out = Vec::new();
                let list = match &codes.value {
                    Value::Sequence(items) => items.clone(),
                    _ => vec![codes.clone()],
                };
                for code in list {
                    match code.value {
                        Value::Int(value) => out.push(i32::try_from(value).unwrap_or(i32::MAX)),
                        _ => self.error("allow_failure:exit_codes takes integers", code.span),
                    }
                }
                Some(AllowFailure::ExitCodes(out))
            }
            _ => {
                self.error(
                    format!("allow_failure must be true, false or {{exit_codes: […]}}, not {}", node.kind()),
                    node.span,
                );
                None
            }
        }
    }

    fn needs(&mut self, node: &Node, owner: &str) -> Vec<Need> {
        // `!reference` inside `needs` leaves nested lists; GitLab flattens them.
        fn flatten(node: &Node, out: &mut Vec<Node>, depth: usize) {
            match &node.value {
                Value::Sequence(items) if depth < 10 => items.iter().for_each(|item| flatten(item, out, depth + 1)),
                Value::Null => {}
                _ => out.push(node.clone()),
            }
        }
        match &node.value {
            Value::Sequence(entries) => {
                if let Some(empty) = entries.iter().find(|e| matches!(e.value, Value::Null)) {
                    self.error(format!("{owner} needs: entries cannot be empty"), empty.span);
                }
            }
            // `!reference` resolves to a list; anything else is not one.
            Value::Null | Value::Reference(_) => {}
            _ => self.error(format!("{owner} needs: must be an array"), node.span),
        }
        let mut items = Vec::new();
        flatten(node, &mut items, 0);
        let mut needs = Vec::new();
        for (index, item) in items.iter().enumerate() {
            match &item.value {
                Value::String(job) => {
                    needs.push(Need {
                        job: job.clone(),
                        optional: false,
                        artifacts: true,
                        matrix: None,
                        span: item.span,
                    });
                }
                Value::Mapping(_) => {
                    // Another project's or pipeline's jobs are out of a local run's reach.
                    let ignored = if item.get("project").is_some() {
                        Some(format!("{owner}.needs[{index}] ignored, project key not supported"))
                    } else if item.get("pipeline").is_some() {
                        let job = item.get("job").and_then(Node::scalar_text).unwrap_or_default();
                        Some(format!("{owner}.needs[{index}].job:{job} ignored, pipeline key not supported"))
                    } else {
                        None
                    };
                    if let Some(message) = ignored {
                        self.diagnostics.push(Diagnostic::warning(message, Some(item.span)));
                        continue;
                    }
                    let Some(job) = item.get("job").and_then(Node::scalar_text) else {
                        self.error("needs entries name a job: `- job: name`", item.span);
                        continue;
                    };
                    let flag = |key: &str, default: bool| item.get(key).and_then(Node::as_bool).unwrap_or(default);
                    let matrix = item.get("parallel").and_then(|p| p.get("matrix")).map(|matrix| {
                        let mut combos = Vec::new();
                        if let Value::Sequence(entries) = &matrix.value {
                            for entry in entries {
                                let pairs = entry
                                    .as_mapping()
                                    .unwrap_or_default()
                                    .iter()
                                    .map(|(k, v)| {
                                        let values = match &v.value {
                                            Value::Sequence(items) => {
                                                items.iter().filter_map(Node::scalar_text).collect()
                                            }
                                            _ => vec![v.scalar_text().unwrap_or_default()],
                                        };
                                        (k.name.clone(), values)
                                    })
                                    .collect();
                                combos.push(pairs);
                            }
                        }
                        combos
                    });
                    needs.push(Need {
                        job,
                        optional: flag("optional", false),
                        artifacts: flag("artifacts", true),
                        matrix,
                        span: item.span,
                    });
                }
                _ => self.error(format!("needs entries are job names or mappings, not {}", item.kind()), item.span),
            }
        }
        // The same job twice (with the same matrix selection) is GitLab's "duplicate" error.
        for (index, need) in needs.iter().enumerate() {
            if needs[..index].iter().any(|earlier| earlier.job == need.job && earlier.matrix == need.matrix) {
                self.error(format!("jobs:{owner}:needs contains duplicate entries: {}", need.job), need.span);
            }
        }
        needs
    }

    fn ref_filter(&mut self, node: &Node) -> RefFilter {
        match &node.value {
            Value::Mapping(_) => {
                let refs = node.get("refs").map(|n| self.strings(n, "only:refs")).unwrap_or_default();
                let changes = node.get("changes").map(|n| self.strings(n, "only:changes")).unwrap_or_default();
                let mut variables = Vec::new();
                for text in node.get("variables").map(|n| self.strings(n, "only:variables")).unwrap_or_default() {
                    match Expression::parse(&text) {
                        Ok(expression) => variables.push(expression),
                        Err(error) => {
                            self.error(format!("invalid only/except variables expression: {error}"), node.span)
                        }
                    }
                }
                RefFilter { refs, variables, changes }
            }
            _ => RefFilter { refs: self.strings(node, "only/except"), ..RefFilter::default() },
        }
    }

    fn artifacts(&mut self, node: &Node, owner: &str) -> Artifacts {
        // Report files are paths: GitLab refuses a number or a boolean where one is named.
        for (report, value) in node.get("reports").and_then(Node::as_mapping).unwrap_or_default() {
            let mut items = vec![value];
            if let Value::Sequence(list) = &value.value {
                items = list.iter().collect();
            }
            if let Some(item) =
                items.iter().find(|item| matches!(item.value, Value::Int(_) | Value::Float(_) | Value::Bool(_)))
            {
                self.error(
                    format!("jobs:{owner}:artifacts:reports {} should be a string or an array of strings", report.name),
                    item.span,
                );
            }
        }
        let paths = node.get("paths").map(|n| self.strings(n, "artifacts:paths")).unwrap_or_default();
        let exclude = node.get("exclude").map(|n| self.strings(n, "artifacts:exclude")).unwrap_or_default();
        let when = node.get("when").and_then(|n| self.artifacts_when(n)).unwrap_or(ArtifactsWhen::OnSuccess);
        let reports = node.get("reports");
        let junit = reports
            .and_then(|r| r.get("junit"))
            .map(|n| self.strings(n, "artifacts:reports:junit"))
            .unwrap_or_default();
        let dotenv = reports
            .and_then(|r| r.get("dotenv"))
            .map(|n| self.strings(n, "artifacts:reports:dotenv"))
            .unwrap_or_default();
        Artifacts {
            name: node.get("name").and_then(Node::scalar_text),
            paths,
            exclude,
            untracked: node.get("untracked").and_then(Node::as_bool) == Some(true),
            when,
            expire_in: node.get("expire_in").and_then(Node::scalar_text),
            junit,
            dotenv,
        }
    }

    fn artifacts_when(&mut self, node: &Node) -> Option<ArtifactsWhen> {
        match node.scalar_text().as_deref() {
            Some("on_success") => Some(ArtifactsWhen::OnSuccess),
            Some("on_failure") => Some(ArtifactsWhen::OnFailure),
            Some("always") => Some(ArtifactsWhen::Always),
            _ => {
                self.error("when must be on_success, on_failure or always", node.span);
                None
            }
        }
    }

    fn caches(&mut self, node: &Node, owner: &str) -> Vec<Cache> {
        let items = match &node.value {
            Value::Sequence(items) => items.clone(),
            _ => vec![node.clone()],
        };
        let mut caches = Vec::new();
        for item in items {
            if item.as_mapping().is_none() {
                self.error(format!("cache must be a mapping, not {}", item.kind()), item.span);
                continue;
            }
            let key = match item.get("key") {
                None => CacheKey::Text("default".to_owned()),
                Some(key) if key.as_mapping().is_some() => CacheKey::Files {
                    files: key.get("files").map(|n| self.strings(n, "cache:key:files")).unwrap_or_default(),
                    prefix: key.get("prefix").and_then(Node::scalar_text),
                },
                Some(key) => CacheKey::Text(key.scalar_text().unwrap_or_default()),
            };
            let policy_text = item.get("policy").and_then(Node::scalar_text);
            let policy_variable = policy_text.clone().filter(|text| text.contains('$'));
            let policy = match policy_text.as_deref().filter(|_| policy_variable.is_none()) {
                None | Some("pull-push") => CachePolicy::PullPush,
                Some("pull") => CachePolicy::Pull,
                Some("push") => CachePolicy::Push,
                Some(other) => {
                    self.error(format!("cache:policy `{other}` is not pull, push or pull-push"), item.span);
                    CachePolicy::PullPush
                }
            };
            if let Some(paths) = item.get("paths")
                && !matches!(paths.value, Value::Sequence(_))
            {
                self.error(format!("{owner} cache[{}].paths must be array", caches.len()), paths.span);
            }
            if let CacheKey::Files { files, .. } = &key
                && !(1..=2).contains(&files.len())
            {
                let span = item.get("key").map_or(item.span, |k| k.span);
                self.error(format!("{owner} cache:key:files takes one or two files, not {}", files.len()), span);
            }
            caches.push(Cache {
                policy_variable,
                key,
                paths: item.get("paths").map(|n| self.strings(n, "cache:paths")).unwrap_or_default(),
                policy,
                when: item.get("when").and_then(|n| self.artifacts_when(n)).unwrap_or(ArtifactsWhen::OnSuccess),
                untracked: item.get("untracked").and_then(Node::as_bool) == Some(true),
                fallback_keys: item
                    .get("fallback_keys")
                    .map(|n| self.strings(n, "cache:fallback_keys"))
                    .unwrap_or_default(),
            });
        }
        caches
    }

    fn parallel(&mut self, node: &Node) -> Option<Parallel> {
        match &node.value {
            Value::Int(count) if (1..=200).contains(count) => Some(Parallel::Count(u32::try_from(*count).unwrap_or(1))),
            Value::Int(_) => {
                self.error("parallel must be between 1 and 200", node.span);
                None
            }
            Value::Mapping(_) => {
                let Some(Value::Sequence(entries)) = node.get("matrix").map(|m| m.value.clone()) else {
                    self.error("parallel takes a number or `matrix: [...]`", node.span);
                    return None;
                };
                let mut matrix = Vec::new();
                let mut jobs = 0usize;
                for entry in entries {
                    let mut row = Vec::new();
                    let mut combinations = 1usize;
                    for (key, value) in entry.as_mapping().unwrap_or_default() {
                        let values = self.strings(value, "parallel:matrix values");
                        combinations = combinations.saturating_mul(values.len().max(1));
                        row.push((key.name.clone(), values));
                    }
                    jobs = jobs.saturating_add(combinations);
                    matrix.push(row);
                }
                if jobs > 200 {
                    self.error(format!("parallel:matrix makes {jobs} jobs; GitLab allows at most 200"), node.span);
                    return None;
                }
                Some(Parallel::Matrix(matrix))
            }
            _ => {
                self.error(format!("parallel takes a number or a matrix, not {}", node.kind()), node.span);
                None
            }
        }
    }

    fn job(&mut self, key: &Key, node: Node, global_variables: &[Variable], stages: &[String]) -> Option<Job> {
        let name = key.name.clone();
        self.known_keys(&node, JOB_KEYWORDS, &format!("jobs:{name}"));
        for (keyword, known) in [
            ("artifacts", ARTIFACTS_KEYWORDS),
            ("cache", CACHE_KEYWORDS),
            ("environment", ENVIRONMENT_KEYWORDS),
            ("release", RELEASE_KEYWORDS),
            ("trigger", TRIGGER_KEYWORDS),
            ("retry", RETRY_KEYWORDS),
            ("inherit", INHERIT_KEYWORDS),
        ] {
            let Some(section) = node.get(keyword) else { continue };
            // `cache:` may be a list of caches.
            let sections: Vec<&Node> = match &section.value {
                Value::Mapping(_) => vec![section],
                Value::Sequence(items) if keyword == "cache" => items.iter().collect(),
                _ => continue,
            };
            // Only a section with a key outside the known ones costs anything more.
            for section in sections {
                let unknown =
                    section.as_mapping().unwrap_or_default().iter().any(|(k, _)| !known.contains(&k.name.as_str()));
                if unknown {
                    self.known_keys(section, known, &format!("jobs:{name}:{keyword}"));
                }
            }
        }
        let trigger = node.get("trigger").cloned();
        let script = match node.get("script") {
            // A `!reference` that failed leaves a null here: that error was reported already.
            Some(script)
                if (matches!(script.value, Value::Null) || has_null_item(script))
                    && !self.diagnostics.iter().any(|d| d.is_error() && d.message.starts_with("!reference")) =>
            {
                self.error(
                    format!(
                        "jobs:{name}:script config should be a string or a nested array of strings up to 10 levels deep"
                    ),
                    script.span,
                );
                Vec::new()
            }
            // GitLab's schema: a script string has at least one character.
            Some(Node { value: Value::String(text), span, .. }) if text.is_empty() => {
                self.error(format!("jobs:{name} script can't be blank"), *span);
                Vec::new()
            }
            Some(script) => {
                let lines = self.strings(script, &format!("{name}: script"));
                if lines.is_empty() && matches!(script.value, Value::Sequence(_)) {
                    self.error(format!("{name} has empty script"), script.span);
                }
                lines
            }
            None if trigger.is_some() => Vec::new(),
            None => {
                self.error_unless_consequence(format!("{name} must have script specified"), key.span, None);
                Vec::new()
            }
        };
        let (stage, stage_span) = match node.get("stage") {
            Some(stage) => (stage.scalar_text().unwrap_or_default(), stage.span),
            None => ("test".to_owned(), key.span),
        };
        // Against stages that were refused, any stage would be reported: that says nothing new.
        if !stages.contains(&stage) && !self.stages_refused {
            self.error_unless_consequence(
                format!("stage:{stage} not found for {name}"),
                stage_span,
                Some(format!("declared stages: {}", stages.join(", "))),
            );
        }
        let when = match node.get("when") {
            Some(when_node) => match self.when(when_node, false) {
                Some(when) => when,
                None => {
                    if when_node.scalar_text().as_deref() == Some("never") {
                        self.error(
                            format!("jobs:{name} when:never can only be used in a rules section or workflow:rules"),
                            when_node.span,
                        );
                    }
                    When::OnSuccess
                }
            },
            None => When::OnSuccess,
        };
        let variables = node.get("variables").map(|v| self.variables(v)).unwrap_or_default();
        let rules = node.get("rules").map(|rules| self.rules(rules, &name));
        if rules.is_some() && (node.get("only").is_some() || node.get("except").is_some()) {
            self.error(format!("{name}: rules cannot be used with only/except"), key.span);
        }
        let environment = node.get("environment").map(|env| match &env.value {
            Value::Mapping(_) => Environment {
                name: env.get("name").and_then(Node::scalar_text).unwrap_or_default(),
                url: env.get("url").and_then(Node::scalar_text),
                action: env.get("action").and_then(Node::scalar_text),
                on_stop: env.get("on_stop").and_then(Node::scalar_text),
                deployment_tier: env.get("deployment_tier").and_then(Node::scalar_text),
            },
            _ => Environment {
                name: env.scalar_text().unwrap_or_default(),
                url: None,
                action: None,
                on_stop: None,
                deployment_tier: None,
            },
        });
        let retry = match node.get("retry") {
            None => Retry::default(),
            Some(retry) => match &retry.value {
                Value::Int(max) => {
                    if !(0..=2).contains(max) {
                        self.error(format!("jobs:{name}:retry config must be between 0 and 2"), retry.span);
                    }
                    Retry { max: u32::try_from(*max).unwrap_or(0).min(2), ..Retry::default() }
                }
                Value::Mapping(_) => Retry {
                    max: match retry.get("max") {
                        Some(Node { value: Value::Int(max), span, .. }) => {
                            if !(0..=2).contains(max) {
                                self.error(format!("jobs:{name}:retry max must be between 0 and 2"), *span);
                            }
                            u32::try_from(*max).unwrap_or(0).min(2)
                        }
                        _ => 0,
                    },
                    when: retry.get("when").map(|n| self.strings(n, "retry:when")).unwrap_or_default(),
                    exit_codes: match retry.get("exit_codes").map(|n| n.value.clone()) {
                        Some(Value::Int(code)) => vec![i32::try_from(code).unwrap_or(-1)],
                        Some(Value::Sequence(items)) => items
                            .iter()
                            .filter_map(
                                |i| if let Value::Int(code) = i.value { i32::try_from(code).ok() } else { None },
                            )
                            .collect(),
                        _ => Vec::new(),
                    },
                },
                _ => {
                    self.error("retry takes 0, 1, 2 or {max, when, exit_codes}", retry.span);
                    Retry::default()
                }
            },
        };
        if when == When::Delayed && node.get("start_in").is_none() && node.get("rules").is_none() {
            let at = node.get("when").map_or(key.span, |n| n.span);
            self.error(format!("jobs:{name} start in can't be blank when the job is delayed"), at);
        }
        if let Some(start_in) = node.get("start_in") {
            if node.get("rules").is_some() {
                self.error(format!("jobs:{name} config key may not be used with `rules`: start_in"), start_in.span);
            } else if when != When::Delayed {
                self.error(format!("jobs:{name} start in must be blank when not delayed"), start_in.span);
            }
        }
        if let Some(when) = node.get("retry").and_then(|r| r.get("when")) {
            let unknown: Vec<String> =
                self.strings(when, "retry:when").into_iter().filter(|w| !RETRY_WHEN.contains(&w.as_str())).collect();
            if !unknown.is_empty() {
                self.error(
                    format!("jobs:{name}:retry when contains unknown values: {}", unknown.join(", ")),
                    when.span,
                );
            }
        }
        let job = Job {
            name: name.clone(),
            span: key.span,
            stage,
            stage_span,
            before_script: node.get("before_script").map(|n| self.strings(n, "before_script")).unwrap_or_default(),
            script,
            after_script: node.get("after_script").map(|n| self.strings(n, "after_script")).unwrap_or_default(),
            global_variables: global_variables.to_vec(),
            variables,
            when,
            start_in: node.get("start_in").and_then(Node::scalar_text),
            allow_failure: node.get("allow_failure").and_then(|n| self.allow_failure(n)),
            needs: node.get("needs").map(|n| self.needs(n, &name)),
            dependencies: node.get("dependencies").map(|n| (self.strings(n, "dependencies"), n.span)),
            rules,
            only: node.get("only").map(|n| self.ref_filter(n)),
            except: node.get("except").map(|n| self.ref_filter(n)),
            artifacts: match node.get("artifacts") {
                // GitLab reads a keyword without a value as one not given (its entry factory
                // makes a null value "unspecified"); said, since it is likely a slip.
                Some(Node { value: Value::Null, span, .. }) => {
                    self.diagnostics
                        .push(Diagnostic::warning(format!("{name}.artifacts is null, ignoring."), Some(*span)));
                    None
                }
                other => other.map(|n| self.artifacts(n, &name)),
            },
            cache: node.get("cache").map(|n| self.caches(n, &name)).unwrap_or_default(),
            parallel: node.get("parallel").and_then(|n| self.parallel(n)),
            retry,
            timeout: node.get("timeout").and_then(Node::scalar_text),
            coverage: node.get("coverage").and_then(Node::scalar_text),
            environment,
            resource_group: node.get("resource_group").and_then(Node::scalar_text),
            interruptible: node.get("interruptible").and_then(Node::as_bool) == Some(true),
            tags: node.get("tags").map(|n| self.strings(n, "tags")).unwrap_or_default(),
            image: node
                .get("image")
                .and_then(|n| n.get("name").cloned().or(Some(n.clone())))
                .and_then(|n| n.scalar_text()),
            services: node
                .get("services")
                .map(|n| match &n.value {
                    Value::Sequence(items) => items
                        .iter()
                        .filter_map(|i| i.get("name").cloned().or(Some(i.clone())).and_then(|n| n.scalar_text()))
                        .collect(),
                    _ => Vec::new(),
                })
                .unwrap_or_default(),
            trigger,
            node,
        };
        Some(job)
    }
}

enum Inherit {
    All,
    None,
    Only(Vec<String>),
}

fn inherit_list(job: &Node, what: &str) -> Inherit {
    let setting = job.get("inherit").and_then(|i| i.get(what));
    if setting.and_then(Node::as_bool) == Some(false) {
        return Inherit::None;
    }
    match setting.map(|n| &n.value) {
        Some(Value::Sequence(items)) => Inherit::Only(items.iter().filter_map(Node::scalar_text).collect()),
        _ => Inherit::All,
    }
}
