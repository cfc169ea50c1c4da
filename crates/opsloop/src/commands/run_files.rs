//! What `opsloop run` reads from files besides the pipeline, where gitlab-ci-local's users keep
//! it: default options (`<home>/.gitlab-ci-local/.env`, the project's `.gitlab-ci-local-env`)
//! and variables (`<home>/.gitlab-ci-local/variables.yml` with global, group and project
//! scopes, the project's `.gitlab-ci-local-variables.yml`), values scoped to environments.

use std::io::Write;
use std::path::{Path, PathBuf};

use clap::{Args, FromArgMatches};
use opsloop_pipeline::yaml::{self, Node, Value};
use opsloop_runner::Override;

use crate::cli::RunArgs;

/// A problem with one of these files, with the file named: the run stops.
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("{path}: {message}")]
    Read { path: String, message: String },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

fn read_optional(path: &Path) -> Result<Option<String>, FileError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(FileError::Read { path: path.display().to_string(), message: error.to_string() }),
    }
}

/// The options a default-options file gives (`NEEDS=true`, `FILE=x.yml`, `VARIABLE="A=1 B=2"`),
/// as command-line arguments; keys that are no option of `opsloop run`, or that cannot be
/// defaults because they decide where these files are read from, become warnings.
fn option_arguments(path: &Path, text: &str, warnings: &mut Vec<String>) -> Vec<String> {
    let command = RunArgs::augment_args(clap::Command::new("run"));
    let known: Vec<String> = command
        .get_arguments()
        .flat_map(|a| a.get_long().into_iter().chain(a.get_all_aliases().unwrap_or_default()))
        .map(str::to_owned)
        .collect();
    let mut arguments = Vec::new();
    for (key, value) in opsloop_runner::job::parse_dotenv(text) {
        let flag = key.to_ascii_lowercase().replace('_', "-");
        if matches!(flag.as_str(), "cwd" | "home") {
            warnings.push(format!("{}: {key} cannot be a default option; ignored", path.display()));
            continue;
        }
        if !known.contains(&flag) {
            warnings.push(format!("{}: {key} is not an option of opsloop run; ignored", path.display()));
            continue;
        }
        match value.as_str() {
            // A switch: on, or left as it is.
            "true" => arguments.push(format!("--{flag}")),
            "false" | "null" => {}
            _ if flag == "variable" => {
                arguments.extend(value.split(' ').filter(|p| !p.is_empty()).map(|pair| format!("--variable={pair}")))
            }
            _ => arguments.push(format!("--{flag}={value}")),
        }
    }
    arguments
}

/// `args` with the options of the default-options `files` filled in where the command line
/// left them unset; a later file's options win over an earlier one's, the command line over
/// both. `--variable`s from the files come first, so the command line's win.
pub fn with_default_options(
    mut args: RunArgs,
    files: &[PathBuf],
    warnings: &mut Vec<String>,
) -> Result<RunArgs, FileError> {
    let mut arguments = vec!["run".to_owned()];
    let mut read_any = false;
    for path in files {
        let Some(text) = read_optional(path)? else { continue };
        read_any = true;
        arguments.extend(option_arguments(path, &text, warnings));
    }
    if !read_any || arguments.len() == 1 {
        return Ok(args);
    }
    let command = RunArgs::augment_args(clap::Command::new("run")).args_override_self(true);
    let path = files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
    let matches = command
        .try_get_matches_from(&arguments)
        .map_err(|e| FileError::Invalid { path: path.clone(), message: e.to_string().trim().to_owned() })?;
    let defaults = RunArgs::from_arg_matches(&matches)
        .map_err(|e| FileError::Invalid { path, message: e.to_string().trim().to_owned() })?;
    merge(&mut args, defaults);
    Ok(args)
}

/// Fills what the command line left unset in `args` from `defaults`.
fn merge(args: &mut RunArgs, defaults: RunArgs) {
    macro_rules! unset_takes {
        ($($field:ident),*) => {$(
            if args.$field.is_none() {
                args.$field = defaults.$field;
            }
        )*};
    }
    macro_rules! off_takes {
        ($($field:ident),*) => {$(
            args.$field |= defaults.$field;
        )*};
    }
    unset_takes!(
        file,
        stage,
        variables_file,
        concurrency,
        max_job_name_padding,
        state_dir,
        ignores_file,
        default_image,
        pull_policy
    );
    off_takes!(
        needs,
        only_needs,
        list,
        list_json,
        list_csv,
        preview,
        shell_isolation,
        dirty,
        committed,
        json,
        allow_network,
        force_shell,
        shell_executor_no_image,
        no_shell_executor_no_image,
        no_artifacts_to_source,
        timestamps
    );
    let mut variables = defaults.variable;
    variables.append(&mut args.variable);
    args.variable = variables;
    let mut manual = defaults.manual;
    manual.append(&mut args.manual);
    args.manual = manual;
    let mut unset = defaults.unset_variable;
    unset.append(&mut args.unset_variable);
    args.unset_variable = unset;
    if args.maximum_includes == opsloop_pipeline::config::MAX_INCLUDES {
        args.maximum_includes = defaults.maximum_includes;
    }
    if args.isolation == crate::cli::IsolationArg::None {
        args.isolation = defaults.isolation;
    }
}

/// The parts of the project's git remote that scope home variables: `gitlab.com`,
/// `group/subgroup`, `project`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub host: String,
    pub group: String,
    pub project: String,
}

impl Remote {
    /// From `git@host:group/project.git`, `ssh://git@host:22/group/project.git` or
    /// `https://host/group/project.git`.
    pub fn parse(url: &str) -> Option<Remote> {
        let (host, path) = match url.split_once("://") {
            Some((_, rest)) => {
                let (authority, path) = rest.split_once('/')?;
                let host = authority.rsplit('@').next()?;
                (host.split(':').next()?.to_owned(), path.to_owned())
            }
            None => {
                let (authority, path) = url.split_once(':')?;
                (authority.rsplit('@').next()?.to_owned(), path.to_owned())
            }
        };
        let path = path.trim_end_matches('/').trim_end_matches(".git");
        let (group, project) = path.rsplit_once('/')?;
        (!host.is_empty() && !group.is_empty() && !project.is_empty()).then(|| Remote {
            host,
            group: group.trim_start_matches('/').to_owned(),
            project: project.to_owned(),
        })
    }
}

/// How much a file's scope counts: the project file over home's project, group and global
/// sections, in that order (a longer environment pattern counts first, see [`Entry`]).
const GLOBAL: u8 = 1;
const GROUP: u8 = 2;
const PROJECT: u8 = 3;
const PROJECT_FILE: u8 = 4;

/// What one variable holds for the environments its pattern matches.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Content {
    Text(String),
    /// A file-type variable with this content.
    File(String),
}

/// One value of a variable read from a file.
#[derive(Debug, Clone)]
struct Entry {
    name: String,
    /// `*`, or an environment-name pattern with `*` wildcards.
    pattern: String,
    content: Content,
    scope: u8,
    masked: bool,
}

/// Variables read from files: the overrides in rising precedence, the values to mask, and
/// what deserves a warning.
#[derive(Debug, Default)]
pub struct FileVariables {
    pub overrides: Vec<Override>,
    pub masked: Vec<String>,
    pub warnings: Vec<String>,
}

/// Where to read variables from.
pub struct Sources<'a> {
    /// The home folder holding `.gitlab-ci-local/variables.yml`.
    pub home: Option<&'a Path>,
    /// The project's variables file (YAML, or `.env` lines).
    pub project_file: &'a Path,
    /// Asked only when the home file has group or project sections.
    pub remote: &'a dyn Fn() -> Option<Remote>,
    /// Where file-type variables are written.
    pub files_dir: &'a Path,
}

/// Reads the home and project variables files. A value scoped to a longer environment pattern
/// beats a shorter one (`*` the shortest), then the narrower scope wins: project file, home
/// project, group, global (gitlab-ci-local's order). The overrides come out in rising
/// precedence, so the runner's "later wins" gives each job the right one.
pub fn read_variables(sources: &Sources<'_>) -> Result<FileVariables, FileError> {
    let mut found = FileVariables::default();
    let mut entries: Vec<Entry> = Vec::new();
    if let Some(home) = sources.home {
        let path = home.join(".gitlab-ci-local/variables.yml");
        if let Some(text) = read_optional(&path)? {
            let root = parse_yaml(&path, &text)?;
            if let Some(global) = root.get("global") {
                add_entries(&path, global, GLOBAL, Some(home), &mut entries)?;
            }
            let scoped = |section: &str| root.get(section).and_then(Node::as_mapping).unwrap_or_default();
            if !scoped("group").is_empty() || !scoped("project").is_empty() {
                let remote = (sources.remote)();
                for (section, scope) in [("group", GROUP), ("project", PROJECT)] {
                    for (key, node) in scoped(section) {
                        let normalised = normalise_scope_key(&key.name, &mut found.warnings);
                        if remote.as_ref().is_some_and(|r| scope_matches(r, &normalised, scope == PROJECT)) {
                            add_entries(&path, node, scope, Some(home), &mut entries)?;
                        }
                    }
                }
            }
        }
    }
    if let Some(text) = read_optional(sources.project_file)? {
        match yaml::parse(&text) {
            Ok(root) if matches!(root.value, Value::Mapping(_)) => {
                add_entries(sources.project_file, &root, PROJECT_FILE, sources.home, &mut entries)?;
            }
            // An empty file holds no variables.
            Ok(root) if matches!(root.value, Value::Null) => {}
            // Not a YAML mapping: `.env` lines, taken as they are.
            _ => entries.extend(opsloop_runner::job::parse_dotenv(&text).into_iter().map(|(name, value)| Entry {
                name,
                pattern: "*".to_owned(),
                content: Content::Text(value),
                scope: PROJECT_FILE,
                masked: false,
            })),
        }
    }
    // Rising precedence; among equals, the first written wins, as the scopes are read.
    let mut ordered: Vec<(usize, Entry)> = entries.into_iter().enumerate().collect();
    ordered.sort_by_key(|(index, entry)| (entry.pattern.len(), entry.scope, std::cmp::Reverse(*index)));
    for (index, entry) in ordered {
        if entry.masked
            && let Content::Text(value) | Content::File(value) = &entry.content
        {
            found.masked.push(value.clone());
        }
        let value = match entry.content {
            Content::Text(value) => value,
            Content::File(content) => {
                let file = format!("{}-{index}", entry.name);
                write_private(sources.files_dir, &file, &content)?
            }
        };
        let environment = (entry.pattern != "*").then_some(entry.pattern);
        found.overrides.push(Override { name: entry.name, value, environment });
    }
    Ok(found)
}

fn parse_yaml(path: &Path, text: &str) -> Result<Node, FileError> {
    yaml::parse(text).map_err(|e| FileError::Invalid {
        path: path.display().to_string(),
        message: format!("{}:{}: {}", e.span.line, e.span.column, e.message),
    })
}

/// `gitlab.com:group/` read as `gitlab.com/group/`, as a remote's `host:path` is written.
fn normalise_scope_key(key: &str, warnings: &mut Vec<String>) -> String {
    if !key.contains(':') {
        return key.to_owned();
    }
    let normalised = key.replacen(':', "/", 1);
    warnings.push(format!("WARNING: Interpreting '{key}' as '{normalised}'"));
    normalised
}

/// Whether a home file's group key (`host/group/`, a parent group too) or project key
/// (`host/group/project`) names this remote.
fn scope_matches(remote: &Remote, key: &str, project: bool) -> bool {
    let key = key.trim_end_matches('/').trim_end_matches(".git");
    let group = format!("{}/{}", remote.host, remote.group);
    if project {
        key == format!("{group}/{}", remote.project)
    } else {
        group == key || group.starts_with(&format!("{key}/"))
    }
}

/// The variables of one mapping: `NAME: value`, `NAME: {value: …, masked: true, type: file}`
/// or `NAME: {type: file, values: {"env-pattern": value}}`. A plain value starting with `/` or
/// `~` names a file whose content the variable gets as a file (gitlab-ci-local's shorthand);
/// when there is no such file, the content says so, which the job then shows.
fn add_entries(
    path: &Path,
    mapping: &Node,
    scope: u8,
    home: Option<&Path>,
    entries: &mut Vec<Entry>,
) -> Result<(), FileError> {
    let invalid = |message: String| FileError::Invalid { path: path.display().to_string(), message };
    let Some(items) = mapping.as_mapping() else {
        return Err(invalid(format!("line {}: variables must be a mapping", mapping.span.line)));
    };
    for (key, value) in items {
        let name = key.name.clone();
        match &value.value {
            Value::Mapping(_) => {
                let file = value.get("type").and_then(Node::scalar_text).as_deref() == Some("file");
                let masked = matches!(value.get("masked").map(|m| &m.value), Some(Value::Bool(true)));
                let values: Vec<(String, &Node)> = match (value.get("values"), value.get("value")) {
                    (Some(values), _) => values
                        .as_mapping()
                        .ok_or_else(|| invalid(format!("{name}: values must map environment patterns to values")))?
                        .iter()
                        .map(|(pattern, node)| (pattern.name.clone(), node))
                        .collect(),
                    (None, Some(node)) => vec![("*".to_owned(), node)],
                    (None, None) => return Err(invalid(format!("{name}: a value or values is needed"))),
                };
                for (pattern, node) in values {
                    let text = node
                        .scalar_text()
                        .ok_or_else(|| invalid(format!("{name}.{pattern}: the content must be text")))?;
                    let content = if file { Content::File(text) } else { Content::Text(text) };
                    entries.push(Entry { name: name.clone(), pattern, content, scope, masked });
                }
            }
            _ => {
                let text = value.scalar_text().ok_or_else(|| invalid(format!("{name}: the content must be text")))?;
                let content = if text.starts_with('/') || text.starts_with('~') {
                    file_from(&name, &text, home)
                } else {
                    Content::Text(text)
                };
                entries.push(Entry { name, pattern: "*".to_owned(), content, scope, masked: false });
            }
        }
    }
    Ok(())
}

/// A file-type variable with the content of the file at `text` (`~/` is the home folder).
fn file_from(name: &str, text: &str, home: Option<&Path>) -> Content {
    let source = match (text.strip_prefix("~/"), home) {
        (Some(rest), Some(home)) => home.join(rest),
        _ => PathBuf::from(text),
    };
    match std::fs::read_to_string(&source) {
        Ok(content) if source.is_file() => Content::File(content),
        _ => Content::File(format!("warn: {name} is pointing to invalid path\n")),
    }
}

/// A file-type variable's content, written to a file only its owner can read; returns the path.
pub fn write_private(dir: &Path, name: &str, content: &str) -> Result<String, FileError> {
    use std::os::unix::fs::OpenOptionsExt;
    let failed = |path: &Path, error: std::io::Error| FileError::Read {
        path: path.display().to_string(),
        message: format!("cannot write a file variable: {error}"),
    };
    std::fs::create_dir_all(dir).map_err(|e| failed(dir, e))?;
    let safe: String = name.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-')).collect();
    let path = dir.join(safe);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| failed(&path, e))?;
    file.write_all(content.as_bytes()).map_err(|e| failed(&path, e))?;
    Ok(path.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remotes_are_read_in_each_form() {
        let expected = Remote { host: "gitlab.com".into(), group: "gcl".into(), project: "custom-home".into() };
        assert_eq!(Remote::parse("git@gitlab.com:gcl/custom-home.git"), Some(expected.clone()));
        assert_eq!(Remote::parse("https://gitlab.com/gcl/custom-home.git"), Some(expected.clone()));
        assert_eq!(Remote::parse("ssh://git@gitlab.com:2222/gcl/custom-home.git"), Some(expected));
        let nested = Remote::parse("https://h.example/a/b/c").expect("nested groups");
        assert_eq!((nested.group.as_str(), nested.project.as_str()), ("a/b", "c"));
        assert_eq!(Remote::parse("not a remote"), None);
    }

    #[test]
    fn scope_keys_match_the_group_its_parents_and_the_project() {
        let remote = Remote { host: "gitlab.com".into(), group: "a/b".into(), project: "p".into() };
        assert!(scope_matches(&remote, "gitlab.com/a/b/", false));
        assert!(scope_matches(&remote, "gitlab.com/a/", false));
        assert!(!scope_matches(&remote, "gitlab.com/a/bc/", false));
        assert!(scope_matches(&remote, "gitlab.com/a/b/p", true));
        assert!(scope_matches(&remote, "gitlab.com/a/b/p.git", true));
        assert!(!scope_matches(&remote, "gitlab.com/a/b/p2", true));
        let mut warnings = Vec::new();
        assert_eq!(normalise_scope_key("gitlab.com:a/b/", &mut warnings), "gitlab.com/a/b/");
        assert_eq!(warnings, ["WARNING: Interpreting 'gitlab.com:a/b/' as 'gitlab.com/a/b/'"]);
    }

    #[test]
    fn longer_patterns_then_narrower_scopes_win() {
        let dir = tempfile::tempdir().expect("temp dir");
        let home = dir.path().join("home");
        std::fs::create_dir_all(home.join(".gitlab-ci-local")).expect("home");
        std::fs::create_dir_all(home.join("files")).expect("files");
        std::fs::write(home.join("files/key"), "secret").expect("file");
        std::fs::write(
            home.join(".gitlab-ci-local/variables.yml"),
            "global:\n  A: global\n  KEY: ~/files/key\n  MISSING: ~/nope\n\
             group:\n  gitlab.com/g/:\n    A: group\n    B: {values: {'*prod*': group-prod}}\n\
             project:\n  gitlab.com/g/p:\n    B: project\n",
        )
        .expect("variables");
        let project_file = dir.path().join("project.yml");
        std::fs::write(&project_file, "A: project-file\nF: {type: file, values: {production: content}}\n")
            .expect("project file");
        let remote = || Remote::parse("git@gitlab.com:g/p.git");
        let files_dir = dir.path().join("files-out");
        let found = read_variables(&Sources {
            home: Some(&home),
            project_file: &project_file,
            remote: &remote,
            files_dir: &files_dir,
        })
        .expect("read");
        let last = |name: &str, environment: Option<&str>| {
            found
                .overrides
                .iter()
                .rev()
                .find(|o| o.name == name && (o.environment.is_none() || o.environment.as_deref() == environment))
                .map(|o| o.value.clone())
        };
        assert_eq!(last("A", None).as_deref(), Some("project-file"));
        assert_eq!(last("B", None).as_deref(), Some("project"));
        assert_eq!(last("B", Some("*prod*")).as_deref(), Some("group-prod"), "the longer pattern wins");
        let read = |name: &str, environment: Option<&str>| {
            std::fs::read_to_string(last(name, environment).expect("a path")).expect("a file")
        };
        assert_eq!(read("KEY", None), "secret");
        assert_eq!(read("MISSING", None), "warn: MISSING is pointing to invalid path\n");
        assert_eq!(read("F", Some("production")), "content");
    }

    #[test]
    fn default_options_fill_what_the_command_line_left_unset() {
        let dir = tempfile::tempdir().expect("temp dir");
        let env = dir.path().join(".gitlab-ci-local-env");
        std::fs::write(&env, "NEEDS=true\nFILE=other.yml\nVARIABLE=\"A=1 B=2\"\nPRIVILEGED=true\nCWD=x\n")
            .expect("env");
        let given = RunArgs { file: Some("mine.yml".into()), variable: vec!["B=3".into()], ..RunArgs::default() };
        let mut warnings = Vec::new();
        let args = with_default_options(given, &[env], &mut warnings).expect("merged");
        assert!(args.needs);
        assert_eq!(args.file.as_deref(), Some("mine.yml"), "the command line wins");
        assert_eq!(args.variable, ["A=1", "B=2", "B=3"]);
        assert_eq!(warnings.len(), 2, "{warnings:?}");
    }
}
