//! `opsloop run` and `opsloop lint`: the pipeline engine on the developer's machine, with
//! gitlab-ci-local's command line and output, so its users feel at home.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use opsloop_pipeline::config::{self, Config, FileSource};
use opsloop_pipeline::diagnostic::{Diagnostic, Severity};
use opsloop_pipeline::plan::{self, PlanOptions};
use opsloop_pipeline::yaml::{Node, Value};
use opsloop_runner::repo::HeadFacts;
use opsloop_runner::{Isolation, Override, RunOptions};

use super::run_files;
use super::run_printer::{Printer, PrinterOptions, name_width};
use crate::cli::{IsolationArg, LintArgs, RunArgs};
use crate::output;

/// Exit code for an invalid configuration or usage (a failed pipeline is 1).
const INVALID: u8 = 2;
pub const STATE_DIR: &str = ".opsloop";

/// The project's files on disk, as the loader sees them. The list of files is made only when
/// asked for (include globs, `rules:exists`): listing untracked files takes a `git` process.
struct DirSource {
    root: PathBuf,
    state_name: String,
    files: std::sync::OnceLock<Result<Vec<String>, String>>,
}

impl DirSource {
    fn listed(&self) -> &Result<Vec<String>, String> {
        self.files.get_or_init(|| {
            opsloop_runner::workspace::project_files(&self.root, &self.state_name).map_err(|e| e.to_string())
        })
    }
}

impl FileSource for DirSource {
    fn read(&self, path: &str) -> Result<String, String> {
        let relative = path.trim_start_matches('/');
        std::fs::read_to_string(self.root.join(relative)).map_err(|e| e.to_string())
    }
    fn files(&self) -> Vec<String> {
        self.listed().clone().unwrap_or_default()
    }
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let output = std::process::Command::new("git").args(args).current_dir(dir).output().ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// GitLab's predefined variables for a local pipeline, from git where it can tell (the
/// values themselves are decided in `opsloop_pipeline::predefined`, as on the server).
fn predefined(project: &Path, pipeline_id: u64) -> Vec<(String, String)> {
    let facts = opsloop_runner::repo::Repo::open(project).map(|repo| repo.head_facts()).unwrap_or_default();
    predefined_from(project, pipeline_id, facts)
}

fn predefined_from(project: &Path, pipeline_id: u64, facts: HeadFacts) -> Vec<(String, String)> {
    use opsloop_pipeline::predefined::{CommitFacts, GitRef, PipelineFacts};
    let sha = facts.sha.unwrap_or_else(|| "0".repeat(40));
    let default_branch = facts.default_branch.unwrap_or_else(|| "main".to_owned());
    let commit = CommitFacts {
        author: facts.author.unwrap_or_default(),
        timestamp: facts.committed_at.unwrap_or_default(),
        message: facts.message.unwrap_or_default(),
    };
    let user_name = facts.user_name.unwrap_or_else(|| "local".to_owned());
    let user_email = facts.user_email.unwrap_or_else(|| "local@localhost".to_owned());
    let remote = facts.origin_url.unwrap_or_default();
    let dir_name =
        project.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "project".to_owned());
    let path = remote_path(&remote).unwrap_or_else(|| format!("local/{dir_name}"));
    // A checkout at a tag runs as the tag's pipeline, as a push of that tag would.
    let git_ref = match (facts.tag, facts.branch) {
        (Some(tag), _) => GitRef::Tag(tag),
        (None, Some(branch)) => GitRef::Branch(branch),
        (None, None) => GitRef::Commit,
    };
    let id = i64::try_from(pipeline_id).unwrap_or(i64::MAX);
    opsloop_pipeline::predefined::variables(&PipelineFacts {
        pipeline_id: id,
        source: "push".into(),
        sha,
        git_ref,
        commit,
        default_branch,
        project_url: format!("http://localhost/{path}"),
        pipeline_url: format!("http://localhost/pipelines/{pipeline_id}"),
        project_path: path,
        project_id: 1,
        repository_url: remote,
        user_login: user_email.split('@').next().unwrap_or_default().to_owned(),
        user_email,
        user_name,
    })
}

fn remote_path(remote: &str) -> Option<String> {
    let path = if let Some((_, rest)) = remote.split_once("://") {
        rest.split_once('/').map(|(_, path)| path.to_owned())?
    } else {
        remote.split_once(':').map(|(_, path)| path.to_owned())?
    };
    Some(path.trim_end_matches(".git").trim_matches('/').to_owned()).filter(|p| !p.is_empty())
}

fn print_diagnostics(config_sources: &opsloop_pipeline::diagnostic::Sources, diagnostics: &[Diagnostic]) {
    for diagnostic in diagnostics {
        let rendered = config_sources.render(diagnostic);
        if diagnostic.severity == Severity::Error {
            output::error(rendered.trim_start_matches("error: "));
        } else {
            eprintln!("{rendered}");
        }
    }
}

struct Loaded {
    config: Config,
    files: Vec<String>,
}

fn load(
    cwd: Option<&Path>,
    state_name: &str,
    file: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    max_includes: usize,
) -> Result<Loaded, String> {
    let project = match cwd {
        Some(dir) => dir.to_path_buf(),
        None => std::env::current_dir().map_err(|e| e.to_string())?,
    };
    let source = DirSource { root: project, state_name: state_name.to_owned(), files: std::sync::OnceLock::new() };
    let config = config::load_with_max_includes(&source, file, lookup, max_includes);
    // Only `rules:exists` needs the list when planning.
    let files =
        if source.files.get().is_some() || uses_exists(&config) { source.listed().clone()? } else { Vec::new() };
    Ok(Loaded { config, files })
}

pub fn lint(args: LintArgs) -> ExitCode {
    if Path::new(&args.file).file_name().is_some_and(|name| name == "opsloop.yml") {
        return lint_manifest(&args);
    }
    let project = args.cwd.clone().unwrap_or_else(|| PathBuf::from("."));
    let defined = predefined(&project, 1);
    let lookup = |name: &str| defined.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let loaded = match load(args.cwd.as_deref(), STATE_DIR, &args.file, &lookup, config::MAX_INCLUDES) {
        Ok(loaded) => loaded,
        Err(error) => {
            output::error(&error);
            return ExitCode::from(INVALID);
        }
    };
    let (diagnostics, prevented) = plan::problems(&loaded.config, &lookup, &loaded.files);
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    if args.json {
        let items: Vec<serde_json::Value> = diagnostics
            .iter()
            .map(|d| {
                serde_json::json!({
                    "severity": if d.is_error() { "error" } else { "warning" },
                    "message": d.message,
                    "file": d.span.map(|s| loaded.config.sources.path(s).to_owned()),
                    "line": d.span.map(|s| s.line),
                    "column": d.span.map(|s| s.column),
                    "hint": d.hint,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(items));
    } else {
        print_miette(&loaded.config.sources, &diagnostics);
        if errors == 0 {
            let config = &loaded.config;
            // `.pre` and `.post` are always there; they count only when a job uses them.
            let stages = config
                .stages
                .iter()
                .filter(|s| !matches!(s.as_str(), ".pre" | ".post") || config.jobs.iter().any(|j| &j.stage == *s))
                .count();
            println!("{} is valid: {} jobs in {stages} stages.", args.file, config.jobs.len());
            if prevented {
                println!("note: {}: nothing would run for this checkout.", plan::NO_PIPELINE);
            }
        }
    }
    if errors > 0 { ExitCode::from(INVALID) } else { ExitCode::SUCCESS }
}

/// Renders diagnostics with the source line under them (miette), to stderr.
/// `opsloop lint --file opsloop.yml`: the deployment manifest, checked the same way.
fn lint_manifest(args: &LintArgs) -> ExitCode {
    let path = args.cwd.clone().unwrap_or_else(|| PathBuf::from(".")).join(&args.file);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) => {
            output::error(&format!("cannot read {}: {error}", path.display()));
            return ExitCode::from(INVALID);
        }
    };
    let (manifest, diagnostics) = opsloop_deploy::manifest::parse(&text);
    let mut sources = opsloop_pipeline::diagnostic::Sources::default();
    sources.add(&args.file, &text);
    let errors = diagnostics.iter().filter(|d| d.is_error()).count();
    if args.json {
        let items: Vec<serde_json::Value> = diagnostics
            .iter()
            .map(|d| {
                serde_json::json!({
                    "severity": if d.is_error() { "error" } else { "warning" },
                    "message": d.message,
                    "file": args.file,
                    "line": d.span.map(|s| s.line),
                    "column": d.span.map(|s| s.column),
                    "hint": d.hint,
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(items));
    } else {
        print_miette(&sources, &diagnostics);
        if errors == 0 {
            println!(
                "{} is valid: {} service(s), {} environment(s), {} route(s).",
                args.file,
                manifest.services.len(),
                manifest.environments.len(),
                manifest.routes.len()
            );
        }
    }
    if errors > 0 { ExitCode::from(INVALID) } else { ExitCode::SUCCESS }
}

fn print_miette(sources: &opsloop_pipeline::diagnostic::Sources, diagnostics: &[Diagnostic]) {
    for diagnostic in diagnostics {
        let severity = if diagnostic.is_error() { miette::Severity::Error } else { miette::Severity::Warning };
        let mut report = miette::MietteDiagnostic::new(diagnostic.message.clone()).with_severity(severity);
        if let Some(hint) = &diagnostic.hint {
            report = report.with_help(hint.clone());
        }
        let report = match diagnostic.span {
            Some(span) => {
                let offset = sources.byte_offset(span);
                let report = report.with_label(miette::LabeledSpan::at(offset..offset, "here"));
                let source = miette::NamedSource::new(
                    format!("{}:{}:{}", sources.path(span), span.line, span.column),
                    sources.text(span).to_owned(),
                );
                miette::Report::new(report).with_source_code(source)
            }
            None => miette::Report::new(report),
        };
        eprintln!("{report:?}");
    }
}

pub async fn run(args: RunArgs) -> ExitCode {
    let started = Instant::now();
    let project = match &args.cwd {
        Some(dir) => dir.clone(),
        // From a subfolder of a repository without a pipeline file of its own: the root's.
        None if args.file.is_none() && !Path::new(DEFAULT_PIPELINE_FILE).exists() => {
            git_root().unwrap_or_else(|| PathBuf::from("."))
        }
        None => PathBuf::from("."),
    };
    let project = std::path::absolute(&project).unwrap_or(project);
    // Default options from files, below the command line: the home folder's, then the project's.
    let home = args.home.clone().or_else(|| std::env::var_os("HOME").map(PathBuf::from));
    let option_files: Vec<PathBuf> = home
        .iter()
        .map(|home| home.join(".gitlab-ci-local/.env"))
        .chain([project.join(".gitlab-ci-local-env")])
        .collect();
    let mut warnings = Vec::new();
    let args = match run_files::with_default_options(args, &option_files, &mut warnings) {
        Ok(args) => args,
        Err(error) => {
            output::error(&error.to_string());
            return ExitCode::from(INVALID);
        }
    };
    warnings.iter().for_each(|warning| eprintln!("warning: {warning}"));
    let file = args.file.clone().unwrap_or_else(|| DEFAULT_PIPELINE_FILE.to_owned());
    if !project.join(&file).is_file() {
        output::error(&format!("{} could not be found", project.join(&file).display()));
        return ExitCode::from(INVALID);
    }
    let state_name = args.state_dir.clone().unwrap_or_else(|| STATE_DIR.to_owned());
    let state_name = state_name.trim_end_matches('/').to_owned();
    let state_dir = project.join(&state_name);
    let pipeline_id = next_pipeline_id(&state_dir);
    let repo = opsloop_runner::repo::Repo::open(&project);
    let facts = repo.as_ref().map(|repo| repo.head_facts()).unwrap_or_default();
    let origin_url = facts.origin_url.clone();
    let mut defined = predefined_from(&project, pipeline_id, facts);

    // Variables from files and the command line, lowest to highest.
    let remote = || origin_url.as_deref().and_then(run_files::Remote::parse);
    let project_file = args.variables_file.clone().unwrap_or_else(|| project.join(".gitlab-ci-local-variables.yml"));
    let from_files = match run_files::read_variables(&run_files::Sources {
        home: home.as_deref(),
        project_file: &project.join(project_file),
        remote: &remote,
        files_dir: &state_dir.join("variables"),
    }) {
        Ok(found) => found,
        Err(error) => {
            output::error(&error.to_string());
            return ExitCode::from(INVALID);
        }
    };
    from_files.warnings.iter().for_each(|warning| eprintln!("{warning}"));
    let mut overrides: Vec<Override> = from_files.overrides;
    let masked: Vec<String> = from_files.masked;
    // gitlab-ci-local's environment variables: `GCL_VARIABLE="A=1;B=2"` and
    // `GCL_VARIABLE_<NAME>=value`, below the command line's `--variable`.
    for (key, value) in std::env::vars() {
        if key == "GCL_VARIABLE" {
            for pair in value.split(';').filter(|p| !p.is_empty()) {
                if let Some((name, value)) = pair.split_once('=') {
                    overrides.push(Override { name: name.to_owned(), value: value.to_owned(), environment: None });
                }
            }
        } else if let Some(name) = key.strip_prefix("GCL_VARIABLE_").filter(|n| !n.is_empty()) {
            overrides.push(Override { name: name.to_owned(), value, environment: None });
        }
    }
    for pair in &args.variable {
        let Some((name, value)) = pair.split_once('=') else {
            output::error(&format!("--variable takes KEY=VALUE, not `{pair}`"));
            return ExitCode::from(INVALID);
        };
        overrides.push(Override { name: name.to_owned(), value: value.to_owned(), environment: None });
    }
    let predefined_only = defined.clone();
    let pipeline_variables: Vec<(String, String)> = overrides
        .iter()
        .filter(|o| o.environment.as_deref().is_none_or(|e| e == "*"))
        .filter(|o| !args.unset_variable.contains(&o.name))
        .map(|o| (o.name.clone(), o.value.clone()))
        .collect();
    // include:rules see the predefined and the given variables (YAML variables come later).
    for o in overrides.iter().filter(|o| o.environment.as_deref().is_none_or(|e| e == "*")) {
        defined.retain(|(k, _)| *k != o.name);
        defined.push((o.name.clone(), o.value.clone()));
    }
    defined.retain(|(k, _)| !args.unset_variable.contains(k));
    let lookup = |name: &str| defined.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone());

    let loaded = match load(Some(&project), &state_name, &file, &lookup, args.maximum_includes) {
        Ok(loaded) => loaded,
        Err(error) => {
            output::error(&error);
            return ExitCode::from(INVALID);
        }
    };
    let config = loaded.config;
    print_diagnostics(
        &config.sources,
        &config.diagnostics.iter().filter(|d| !d.is_error()).cloned().collect::<Vec<_>>(),
    );
    if config.has_errors() {
        // GitLab's (and gitlab-ci-local's) first line for a refused file; scripts look for it.
        output::error("This GitLab CI configuration is invalid:");
        // Every problem at once, the planner's too (undefined needs, cycles), as lint says them.
        let (problems, _) = plan::problems(&config, &lookup, &loaded.files);
        print_diagnostics(&config.sources, &problems.into_iter().filter(|d| d.is_error()).collect::<Vec<_>>());
        return ExitCode::from(INVALID);
    }
    eprintln!("parsing and includes finished in {} ms.", started.elapsed().as_millis());
    if args.preview {
        print!("---\n{}", opsloop_pipeline::yaml::emit(&preview_tree(&config)));
        return ExitCode::SUCCESS;
    }
    let predefined_lookup = |name: &str| {
        if args.unset_variable.iter().any(|u| u == name) {
            return None;
        }
        predefined_only.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    };
    let options = PlanOptions {
        selected: dedup(&args.jobs),
        with_needs: args.needs,
        only_needs: args.only_needs,
        stage: args.stage.clone(),
        manual: args.manual.clone(),
        changes: uses_changes(&config).then(|| change_sets(&project, &config, &lookup)),
        pipeline_variables,
        allow_pre_post_only: true,
    };
    let planned = match plan::plan(&config, &predefined_lookup, &loaded.files, &options) {
        Ok(planned) => planned,
        Err(errors) => {
            print_diagnostics(&config.sources, &errors);
            return ExitCode::from(INVALID);
        }
    };
    // The loader's warnings were printed above; these are the planner's own.
    print_diagnostics(
        &config.sources,
        &planned.warnings.iter().filter(|w| !config.diagnostics.contains(w)).cloned().collect::<Vec<_>>(),
    );
    eprintln!("configuration validated in {} ms", started.elapsed().as_millis());
    if planned.prevented_by_workflow {
        eprintln!("{}: nothing to run.", plan::NO_PIPELINE);
        return ExitCode::SUCCESS;
    }
    if let Some(blocked) = planned.unplayed_manual_need() {
        print_diagnostics(&config.sources, std::slice::from_ref(&blocked));
        return ExitCode::from(INVALID);
    }
    if args.list || args.list_json || args.list_csv {
        let format = if args.list_json {
            ListFormat::Json
        } else if args.list_csv {
            ListFormat::Csv
        } else {
            ListFormat::Table
        };
        return list(&config, &planned, format);
    }
    if let Some(repo) = &repo {
        exclude_state_dir(repo, &state_name);
    }

    // gitlab-ci-local's words for flags that change nothing together.
    if args.default_image.is_some() && !args.no_shell_executor_no_image {
        eprintln!(" WARN  --default-image does not work with --shell-executor-no-image=true");
    }
    if args.default_image.is_some() && args.force_shell {
        eprintln!(" WARN  --default-image does not work with --force-shell-executor=true");
    }
    // An interactive job runs attached to the terminal, so only as a manual job in the shell.
    for name in jobs_marked(&config, "@Interactive") {
        let Some(job) = config.jobs.iter().find(|job| job.name == name) else { continue };
        if job.image.is_some() || job.when != config::When::Manual {
            output::error(&format!("{name} @Interactive decorator cannot have image: and must be when:manual"));
            return ExitCode::from(INVALID);
        }
        if args.no_shell_executor_no_image {
            output::error(&format!("{name} @Interactive decorator cannot be used with --no-shell-executor-no-image"));
            return ExitCode::from(INVALID);
        }
    }
    let mut config = config;
    if args.no_shell_executor_no_image {
        // Jobs without an image run in a container of the default one, as gitlab-ci-local's
        // docker executor does (its default image is Ruby's, like GitLab Runner's examples).
        let image = args.default_image.clone().unwrap_or_else(|| DEFAULT_IMAGE.to_owned());
        for job in config.jobs.iter_mut().filter(|job| job.image.is_none()) {
            job.image = Some(image.clone());
        }
    }

    let container_engine = match container_engine_for(&config, &planned) {
        Ok(engine) => engine,
        Err(message) if args.force_shell => {
            eprintln!("warning: {message}; running those jobs in the shell (--force-shell)");
            None
        }
        Err(message) => {
            output::error(&format!("{message}; pass --force-shell to run them in the shell"));
            return ExitCode::from(INVALID);
        }
    };
    let ignores_file = project.join(args.ignores_file.clone().unwrap_or_else(|| DEFAULT_IGNORES_FILE.into()));
    let ignores = match std::fs::read_to_string(&ignores_file) {
        Ok(text) => opsloop_runner::workspace::Ignores::parse(&text),
        // Only a file given on the command line must exist.
        Err(_) if args.ignores_file.is_none() => opsloop_runner::workspace::Ignores::default(),
        Err(error) => {
            output::error(&format!("{}: {error}", ignores_file.display()));
            return ExitCode::from(INVALID);
        }
    };
    let isolation = match args.isolation {
        IsolationArg::None => Isolation::None,
        IsolationArg::Sandbox => {
            if std::process::Command::new("bwrap").arg("--version").output().is_err() {
                output::error("--isolation sandbox needs bubblewrap (`bwrap`): apt-get install bubblewrap");
                return ExitCode::from(INVALID);
            }
            Isolation::Sandbox { network: args.allow_network }
        }
    };
    let options = RunOptions {
        artifacts_to_source: if args.no_artifacts_to_source {
            opsloop_runner::ArtifactsToSource::Never
        } else {
            opsloop_runner::ArtifactsToSource::Except(jobs_marked(&config, "@NoArtifactsToSource"))
        },
        project_dir: project.clone(),
        state_dir,
        ignores,
        concurrency: args.concurrency.unwrap_or(DEFAULT_CONCURRENCY),
        keep_workspaces: args.shell_isolation,
        source: match (args.dirty, args.committed) {
            (true, _) => opsloop_runner::pipeline::SourceFiles::WorkingTree,
            (_, true) => opsloop_runner::pipeline::SourceFiles::Committed,
            _ => opsloop_runner::pipeline::SourceFiles::Tracked,
        },
        prepared_source: None,
        predefined: defined.clone(),
        overrides,
        unset: args.unset_variable.clone(),
        masked,
        pipeline_id,
        isolation,
        container_engine,
        force_shell: args.force_shell,
        shared_slots: None,
        shared_resource_groups: None,
        remote: None,
        job_switches: None,
        project_slots: None,
        cache_root: None,
        shared_cache: None,
        // A local run is the user's own: jobs see their environment, as with gitlab-ci-local.
        clean_env: false,
    };
    let width = name_width(planned.jobs.iter().map(|j| j.name.as_str()), args.max_job_name_padding);
    let printer = Arc::new(Printer::new(PrinterOptions {
        width,
        json: args.json,
        stages: planned.stages.clone(),
        jobs: planned.jobs.iter().map(|j| j.stage).collect(),
        color: output::color(),
        timestamps: args.timestamps,
    }));
    let coverage_jobs: Vec<bool> =
        planned.jobs.iter().map(|j| config.jobs[j.config_index].coverage.is_some()).collect();
    let (cancel_tx, cancel_rx) = tokio::sync::watch::channel(false);
    let interrupt = tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted: canceling the pipeline (Ctrl-C again to quit at once)");
            let _ = cancel_tx.send(true);
        }
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted twice: quitting");
            std::process::exit(130);
        }
    });
    let watcher = printer.clone();
    let silence = tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            every.tick().await;
            watcher.note_silent_jobs();
        }
    });
    let outcome = opsloop_runner::run_pipeline(config, planned, options, printer.clone(), cancel_rx).await;
    interrupt.abort();
    silence.abort();
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(error) => {
            output::error(&format!("the pipeline could not run: {error}"));
            return ExitCode::FAILURE;
        }
    };
    if args.json {
        let summary = serde_json::json!({
            "event": "pipeline_finished",
            "status": if outcome.success { "success" } else { "failed" },
            "duration_ms": started.elapsed().as_millis() as u64,
        });
        println!("{summary}");
    } else {
        printer.summary(&outcome, &coverage_jobs);
        eprintln!("pipeline finished in {} ms", started.elapsed().as_millis());
    }
    if outcome.success { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// The container engine that has every image the planned jobs name, or why there is none.
fn container_engine_for(config: &Config, planned: &plan::Plan) -> Result<Option<String>, String> {
    let mut images: Vec<&str> =
        planned.jobs.iter().filter_map(|j| config.jobs[j.config_index].image.as_deref()).collect();
    images.sort_unstable();
    images.dedup();
    if images.is_empty() {
        return Ok(None);
    }
    for engine in ["podman", "docker"] {
        let has = |image: &str| {
            let args: &[&str] =
                if engine == "podman" { &["image", "exists", image] } else { &["image", "inspect", image] };
            std::process::Command::new(engine)
                .args(args)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if images.iter().all(|image| has(image)) {
            return Ok(Some(engine.to_owned()));
        }
    }
    Err(format!(
        "jobs need the image(s) {}, but no container engine here (podman, docker) has them",
        images.iter().map(|i| format!("`{i}`")).collect::<Vec<_>>().join(", ")
    ))
}

fn dedup(jobs: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for job in jobs {
        if !out.contains(job) {
            out.push(job.clone());
        }
    }
    out
}

/// Whether any rule asks whether files exist; if none does, the project's files need not be listed.
fn uses_exists(config: &Config) -> bool {
    config
        .jobs
        .iter()
        .flat_map(|job| job.rules.iter().flatten())
        .chain(config.workflow_rules.iter().flatten())
        .any(|rule| rule.exists.is_some())
}

/// Whether any job asks about changed files; if none does, git need not be asked.
fn uses_changes(config: &Config) -> bool {
    config.jobs.iter().any(|job| {
        job.rules.iter().flatten().any(|rule| rule.changes.is_some())
            || [&job.only, &job.except].into_iter().flatten().any(|filter| !filter.changes.is_empty())
    }) || config.workflow_rules.iter().flatten().any(|rule| rule.changes.is_some())
}

/// Files changed by the commits a push would bring, plus uncommitted ones: against the default
/// branch from a feature branch, against the previous commit on the default branch, and against
/// each `changes:compare_to` ref. Without a base to compare with, `changes:` holds.
fn change_sets(project: &Path, config: &Config, lookup: &dyn Fn(&str) -> Option<String>) -> plan::ChangeSets {
    let mut uncommitted: Vec<String> = Vec::new();
    for args in [&["diff", "--name-only", "HEAD"][..], &["ls-files", "--others", "--exclude-standard"][..]] {
        uncommitted.extend(git(project, args).unwrap_or_default().lines().map(str::to_owned));
    }
    let diff = |base: &str| -> Option<Vec<String>> {
        let names = git(project, &["diff", "--name-only", &format!("{base}...HEAD")])?;
        let mut files: Vec<String> = names.lines().map(str::to_owned).collect();
        files.extend(uncommitted.iter().cloned());
        Some(files)
    };
    let branch = lookup("CI_COMMIT_BRANCH");
    let default_branch = lookup("CI_DEFAULT_BRANCH").unwrap_or_else(|| "main".to_owned());
    let default = if branch.as_deref().is_some_and(|b| b != default_branch) {
        diff(&format!("origin/{default_branch}")).or_else(|| diff(&default_branch))
    } else {
        diff("HEAD~1")
    };
    let mut by_ref = std::collections::HashMap::new();
    for rule in config.jobs.iter().flat_map(|job| job.rules.iter().flatten()) {
        if let Some(reference) = &rule.compare_to
            && !by_ref.contains_key(reference)
            && let Some(files) = diff(reference)
        {
            by_ref.insert(reference.clone(), files);
        }
    }
    plan::ChangeSets { default, by_ref }
}

/// Each run gets the next pipeline id, kept in `.opsloop/pipeline-id`.
fn next_pipeline_id(state_dir: &Path) -> u64 {
    let path = state_dir.join("pipeline-id");
    let next = std::fs::read_to_string(&path).ok().and_then(|t| t.trim().parse::<u64>().ok()).unwrap_or(0) + 1;
    if std::fs::create_dir_all(state_dir).is_ok() {
        let _ = std::fs::write(&path, next.to_string());
    }
    next
}

/// Keeps the state folder out of `git status` without touching the project's `.gitignore`.
fn exclude_state_dir(repo: &opsloop_runner::repo::Repo, state_name: &str) {
    // Only a folder inside the project can show up there.
    if Path::new(state_name).is_absolute() || state_name.split('/').any(|part| part == "..") {
        return;
    }
    // Git reads `info/exclude` from the common directory, shared by linked worktrees.
    let exclude = repo.common_dir().join("info").join("exclude");
    let existing = std::fs::read_to_string(&exclude).unwrap_or_default();
    let line = format!("/{}/", state_name.trim_start_matches("./"));
    if existing.lines().any(|l| l.trim() == line || l.trim() == line.trim_start_matches('/')) {
        return;
    }
    if let Some(parent) = exclude.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    if let Ok(mut file) = std::fs::OpenOptions::new().create(true).append(true).open(&exclude) {
        let _ = writeln!(file, "{line}");
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListFormat {
    Table,
    Json,
    Csv,
}

fn list(config: &Config, planned: &plan::Plan, format: ListFormat) -> ExitCode {
    let described = job_comments(config, "@Description");
    let rows: Vec<serde_json::Value> = planned
        .jobs
        .iter()
        .map(|job| {
            let source = &config.jobs[job.config_index];
            let needs: Option<Vec<String>> =
                job.needs.as_ref().map(|n| n.iter().map(|n| planned.jobs[n.job].name.clone()).collect());
            let allow_failure = match &job.allow_failure {
                config::AllowFailure::No => serde_json::json!(false),
                config::AllowFailure::Yes => serde_json::json!(true),
                config::AllowFailure::ExitCodes(codes) => serde_json::json!(codes),
            };
            // The environment as the job names it, its own and the pipeline's variables expanded.
            let environment = source.environment.as_ref().map(|environment| {
                let lookup = |name: &str| {
                    job.extra_variables
                        .iter()
                        .chain(&source.variables)
                        .chain(&planned.workflow_variables)
                        .chain(&source.global_variables)
                        .find(|v| v.name == name)
                        .map(|v| v.value.clone())
                };
                opsloop_pipeline::variables::expand(&environment.name, &lookup)
            });
            let description = source
                .node
                .get("description")
                .and_then(Node::scalar_text)
                .or_else(|| described.iter().find(|(name, _)| *name == source.name).map(|(_, text)| text.clone()));
            serde_json::json!({
                "name": job.name,
                "stage": planned.stages[job.stage],
                "when": job.when.as_str(),
                "allow_failure": allow_failure,
                "environment": environment,
                "needs": needs,
                "description": description,
            })
        })
        .collect();
    if format == ListFormat::Json {
        println!("{}", serde_json::Value::Array(rows));
        return ExitCode::SUCCESS;
    }
    let text = |value: &serde_json::Value| match value {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(text) => text.clone(),
        serde_json::Value::Array(items) => format!(
            "[{}]",
            items.iter().map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned)).collect::<Vec<_>>().join(",")
        ),
        other => other.to_string(),
    };
    if format == ListFormat::Csv {
        println!("name;stage;when;allowFailure;environment;needs");
        for row in &rows {
            let fields = ["name", "stage", "when", "allow_failure", "environment", "needs"].map(|key| text(&row[key]));
            println!("{}", fields.join(";"));
        }
        return ExitCode::SUCCESS;
    }
    // gitlab-ci-local's layout, which scripts read: lowercase header, columns two spaces apart.
    let columns = ["name", "description", "stage", "when", "allow_failure", "environment", "needs"];
    let mut table: Vec<Vec<String>> = vec![columns.iter().map(|c| (*c).to_owned()).collect()];
    table.extend(rows.iter().map(|row| columns.map(|k| text(&row[k])).to_vec()));
    let widths: Vec<usize> =
        (0..columns.len()).map(|c| table.iter().map(|r| r[c].chars().count()).max().unwrap_or(0)).collect();
    for row in &table {
        let line: Vec<String> = row.iter().zip(&widths).map(|(cell, width)| format!("{cell:<width$}")).collect();
        println!("{}", line.join("  ").trim_end());
    }
    ExitCode::SUCCESS
}

/// For each job with a `# <directive> text` comment right above its key, the text.
fn job_comments(config: &Config, directive: &str) -> Vec<(String, String)> {
    config
        .jobs
        .iter()
        .filter_map(|job| {
            let lines: Vec<&str> = config.sources.text(job.span).lines().collect();
            let above = usize::try_from(job.span.line).unwrap_or(0).saturating_sub(1);
            lines[..above.min(lines.len())]
                .iter()
                .rev()
                .take_while(|line| line.trim_start().starts_with('#'))
                .find_map(|line| line.split_once(directive).map(|(_, text)| text.trim().to_owned()))
                .map(|text| (job.name.clone(), text))
        })
        .collect()
}

/// The expanded configuration as `--preview` shows it, normalised as GitLab reads it: the
/// stages with `.pre` and `.post`, and each job's scripts as one flat list of lines.
fn preview_tree(config: &Config) -> Node {
    let mut tree = config.expanded.clone();
    let Value::Mapping(entries) = &mut tree.value else { return tree };
    let span = tree.span;
    let stages = Node::new(
        Value::Sequence(config.stages.iter().map(|s| Node::new(Value::String(s.clone()), span)).collect()),
        span,
    );
    match entries.iter_mut().find(|(key, _)| key.name == "stages") {
        Some((_, value)) => *value = stages,
        None => entries.insert(0, (opsloop_pipeline::yaml::Key { name: "stages".to_owned(), span }, stages)),
    }
    for (_, job) in entries.iter_mut() {
        let Value::Mapping(keys) = &mut job.value else { continue };
        for (key, value) in keys.iter_mut() {
            // `image: alpine` is `image: {name: alpine}`.
            if key.name == "image" && matches!(value.value, Value::String(_)) {
                let name = opsloop_pipeline::yaml::Key { name: "name".to_owned(), span: value.span };
                value.value = Value::Mapping(vec![(name, value.clone())]);
            }
            // `rules:` holding a `!reference` to a list reads as one flat list.
            if key.name == "rules"
                && let Value::Sequence(items) = &mut value.value
            {
                let flat: Vec<Node> = std::mem::take(items)
                    .into_iter()
                    .flat_map(|item| match item.value {
                        Value::Sequence(inner) => inner,
                        _ => vec![item],
                    })
                    .collect();
                *items = flat;
            }
            if matches!(key.name.as_str(), "script" | "before_script" | "after_script") {
                let mut lines = Vec::new();
                flatten_lines(value, &mut lines);
                value.value = Value::Sequence(lines);
            }
            // `cache:` is a list of caches, each with GitLab's defaults for what it leaves out.
            if key.name == "cache" {
                if matches!(value.value, Value::Mapping(_)) {
                    value.value = Value::Sequence(vec![value.clone()]);
                }
                if let Value::Sequence(caches) = &mut value.value {
                    for cache in caches.iter_mut() {
                        let at = cache.span;
                        let Value::Mapping(entries) = &mut cache.value else { continue };
                        for (name, default) in [("policy", "pull-push"), ("when", "on_success")] {
                            if !entries.iter().any(|(k, _)| k.name == name) {
                                let key = opsloop_pipeline::yaml::Key { name: name.to_owned(), span: at };
                                entries.push((key, Node::new(Value::String(default.to_owned()), at)));
                            }
                        }
                    }
                }
            }
        }
        // A keyword without a value is one not given (the loader warned about it).
        keys.retain(|(key, value)| !(key.name == "artifacts" && matches!(value.value, Value::Null)));
    }
    tree
}

fn flatten_lines(node: &Node, out: &mut Vec<Node>) {
    match &node.value {
        Value::Sequence(items) => items.iter().for_each(|item| flatten_lines(item, out)),
        _ => out.push(node.clone()),
    }
}

/// Jobs with `# <directive>` in the comment lines right above their key in the pipeline file
/// (gitlab-ci-local's job decorators).
fn jobs_marked(config: &Config, directive: &str) -> Vec<String> {
    job_comments(config, directive).into_iter().map(|(name, _)| name).collect()
}

const DEFAULT_PIPELINE_FILE: &str = ".gitlab-ci.yml";

/// Jobs at once unless `--concurrency` says otherwise (why: see its help). Each running job
/// holds a few file descriptors (pipes, its log), so 64 stays well inside the usual limit of
/// 1,024.
const DEFAULT_CONCURRENCY: usize = 64;

/// The image of jobs without one under `--no-shell-executor-no-image` (gitlab-ci-local's).
const DEFAULT_IMAGE: &str = "docker.io/ruby:3.1";

/// gitlab-ci-local's file of patterns for files the workspaces leave out.
const DEFAULT_IGNORES_FILE: &str = ".gitlab-ci-local-ignores";

/// The root of the git repository around the working directory, if there is one.
fn git_root() -> Option<PathBuf> {
    opsloop_runner::repo::Repo::open(Path::new(".")).and_then(|repo| repo.workdir())
}
