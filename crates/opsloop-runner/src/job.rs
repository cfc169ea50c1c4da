//! One job, start to end, wherever it runs: the workspace (the pipeline's files, upstream
//! artifacts, caches), the scripts with retries and timeout, `after_script`, then artifacts,
//! caches, dotenv and JUnit reports out. The local scheduler and an agent on another machine
//! both call [`execute`] with a [`JobSpec`]; the spec is plain data, so it crosses the wire.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opsloop_pipeline::config::{AllowFailure, Artifacts, ArtifactsWhen, Cache, CacheKey, CachePolicy, Retry};
use opsloop_pipeline::variables;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::events::{Event, EventSink, JobOutcome, JobStatus, NoteKind, Stream};
use crate::mask::Masker;
use crate::pipeline::Isolation;
use crate::shell::{self, Ending, Line};
use crate::workspace;

/// Everything needed to run one job, resolved by the scheduler that planned it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobSpec {
    /// The job's index in its pipeline's plan: events carry it.
    pub index: usize,
    pub name: String,
    pub image: Option<String>,
    /// `before_script` then `script`, run in one shell.
    pub commands: Vec<String>,
    pub after_script: Vec<String>,
    /// The job's variables in rising precedence, each with whether it is expanded. The
    /// entries `CI_PROJECT_DIR` and `CI_BUILDS_DIR` are filled in where the job runs.
    pub layers: Vec<(String, String, bool)>,
    pub timeout: Option<String>,
    pub retry: Retry,
    pub allow_failure: AllowFailure,
    pub coverage: Option<String>,
    pub artifacts: Option<Artifacts>,
    pub caches: Vec<Cache>,
    /// Values to replace with `[MASKED]` in the job's output.
    pub masked: Vec<String>,
    /// The jobs whose artifacts are restored into the workspace, in order.
    pub upstream: Vec<String>,
    /// Those of `upstream` that declare `artifacts:`: when one left none (it failed, or its
    /// paths matched nothing), the job is warned that what it expects is missing.
    #[serde(default)]
    pub producers: Vec<String>,
    /// File-type variables to write where the job runs (name, contents): the variable then
    /// holds the path of a private file there.
    #[serde(default)]
    pub file_variables: Vec<(String, String)>,
    /// The environment the job deploys to: its name (variables expanded) and its URL as the
    /// YAML writes it.
    #[serde(default)]
    pub environment: Option<(String, Option<String>)>,
    /// Overrides the workplace's `copy_back` for this job (`# @NoArtifactsToSource`).
    #[serde(default)]
    pub artifacts_to_source: Option<bool>,
}

impl JobSpec {
    /// The job's environment when its workspace is `workspace` (as the job sees it).
    pub fn variables(&self, workspace: &Path) -> Vec<(String, String)> {
        let builds = workspace.parent().map(|p| p.display().to_string()).unwrap_or_default();
        let mut layers = self.layers.clone();
        // Only the predefined entries: a variable of the same name set later still wins.
        if let Some(entry) = layers.iter_mut().find(|(name, _, _)| name == PROJECT_DIR) {
            entry.1 = workspace.display().to_string();
        }
        if let Some(entry) = layers.iter_mut().find(|(name, _, _)| name == BUILDS_DIR) {
            entry.1 = builds;
        }
        variables::resolve(&layers, &|_| None)
    }

    /// Where the job runs: a container image, the sandbox, or the shell.
    pub fn executor(&self, place: &Workplace) -> String {
        match (&self.image, &place.container_engine, place.isolation) {
            (Some(image), Some(_), _) if !place.force_shell => image.clone(),
            (_, _, Isolation::Sandbox { .. }) => "sandbox".to_owned(),
            _ => "shell".to_owned(),
        }
    }
}

pub(crate) const PROJECT_DIR: &str = "CI_PROJECT_DIR";
pub(crate) const BUILDS_DIR: &str = "CI_BUILDS_DIR";

/// The machine-side half of a job: where its files come from and go, and how it is isolated.
#[derive(Debug, Clone)]
pub struct Workplace {
    /// Holds `builds/`, `scripts/`, `artifacts/` and `caches/`.
    pub state_dir: PathBuf,
    /// Holds `cache/`: caches outlive the job (and, on an agent, the pipeline).
    pub cache_root: PathBuf,
    /// Where the workspace's files are copied from.
    pub source_root: PathBuf,
    /// The files of the source (tracked files: what `untracked` artifacts leave out).
    pub files: Arc<Vec<String>>,
    /// The project directory that artifact patterns are relative to.
    pub project_dir: PathBuf,
    /// Copy artifacts back into `project_dir`, as gitlab-ci-local does.
    pub copy_back: bool,
    pub isolation: Isolation,
    pub container_engine: Option<String>,
    pub force_shell: bool,
    pub keep_workspaces: bool,
    /// A cache store shared between machines, behind the local `cache_root`.
    pub shared_cache: Option<Arc<dyn SharedCache>>,
    /// Jobs do not inherit this process's environment (see `shell::Invocation::clean_env`).
    pub clean_env: bool,
}

/// A future a shared cache returns.
pub type CacheFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// A cache store shared between machines (the server's object store, reached directly on the
/// server and over HTTP from an agent). The local cache directory sits in front of it: a key
/// missing here is fetched, a saved cache is also stored there.
pub trait SharedCache: Send + Sync + std::fmt::Debug {
    /// Unpacks the cache `key` into `dir`; `false` when the store has none.
    fn fetch<'a>(&'a self, key: &'a str, dir: &'a Path) -> CacheFuture<'a, bool>;
    /// Stores the cache `key` from `dir`.
    fn store<'a>(&'a self, key: &'a str, dir: &'a Path) -> CacheFuture<'a, ()>;
}

/// A job handed to another machine, with what that machine needs from this one.
#[derive(Debug)]
pub struct RemoteJob {
    pub spec: JobSpec,
    pub tags: Vec<String>,
    /// The upstream artifact directories on this machine, in the order of `spec.upstream`.
    pub upstream: Vec<PathBuf>,
    /// Where the job's artifacts must land on this machine, for the jobs after it.
    pub artifacts_dir: PathBuf,
    /// This machine's workplace: the source the remote side needs a copy of.
    pub workplace: Workplace,
}

/// A job's outcome and the dotenv variables it reports, once it ends.
pub type JobFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = (JobOutcome, Vec<(String, String)>)> + Send + 'static>>;

/// Runs jobs somewhere else (the server hands them to agents). The scheduler asks it first;
/// what it does not take runs here.
pub trait RemoteExecutor: Send + Sync + std::fmt::Debug {
    /// Whether a job with these `tags` runs remotely.
    fn takes(&self, tags: &[String]) -> bool;
    /// Runs the job to its end, reporting its events through `sink` as they come.
    fn run(&self, job: RemoteJob, sink: Arc<dyn EventSink>, cancel: watch::Receiver<bool>) -> JobFuture;
}

pub(crate) fn canceled_outcome(started: Instant) -> JobOutcome {
    JobOutcome {
        status: JobStatus::Canceled,
        exit_code: None,
        duration: started.elapsed(),
        coverage: None,
        after_script_failed: false,
        tail: Vec::new(),
        attempts: 0,
        tests: None,
    }
}

/// The cache's policy, a `policy: $VAR` decided by the job's variables (anything but `pull` or
/// `push` is pull-push, GitLab's default).
fn cache_policy(cache: &opsloop_pipeline::config::Cache, env: &[(String, String)]) -> CachePolicy {
    let Some(text) = &cache.policy_variable else { return cache.policy };
    let lookup = |name: &str| env.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    match variables::expand(text, &lookup).trim() {
        "pull" => CachePolicy::Pull,
        "push" => CachePolicy::Push,
        _ => CachePolicy::PullPush,
    }
}

fn cache_key(files: &[String], key: &CacheKey, workspace: &Path, env: &[(String, String)]) -> String {
    let lookup = |name: &str| env.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    match key {
        CacheKey::Text(text) => {
            // GitLab's rule: a key that expands to nothing is the `default` cache.
            let key = variables::expand(text, &lookup);
            if key.trim().is_empty() { "default".to_owned() } else { key }
        }
        CacheKey::Files { files: patterns, prefix } => {
            use sha2::Digest;
            let mut digest = sha2::Sha256::new();
            for pattern in patterns {
                let pattern = variables::expand(pattern, &lookup);
                for file in opsloop_pipeline::config::glob_matches(&pattern, files) {
                    digest.update(file.as_bytes());
                    digest.update(std::fs::read(workspace.join(&file)).unwrap_or_default());
                }
            }
            let hash = hex::encode(digest.finalize());
            match prefix {
                Some(prefix) => format!("{}-{}", variables::expand(prefix, &lookup), &hash[..16]),
                None => hash[..16].to_owned(),
            }
        }
    }
}

/// Runs one job with its retries: workspace, caches and upstream artifacts (`upstream`, the
/// directories to restore, in order) in; scripts, after_script; artifacts (into
/// `<state_dir>/artifacts/<job>`) and caches out. Returns the outcome and the dotenv
/// variables the job reports. The caller has already waited for its slot.
pub async fn execute(
    spec: &JobSpec,
    place: &Workplace,
    upstream: &[PathBuf],
    masker: &Masker,
    sink: &dyn EventSink,
    cancel: watch::Receiver<bool>,
) -> (JobOutcome, Vec<(String, String)>) {
    let started = Instant::now();
    let index = spec.index;
    let name = spec.name.clone();
    let executor = spec.executor(place);
    sink.emit(Event::JobStarted { job: index, name: name.clone(), executor });
    if let Some((environment, url)) = spec.environment.clone() {
        sink.emit(Event::Environment { job: index, name: name.clone(), environment, url });
    }

    let builds = place.state_dir.join("builds");
    let workspace_dir = builds.join(workspace::dir_name(&name));
    let scripts_dir = place.state_dir.join("scripts");
    let prepared = {
        let (project, workspace_dir, scripts_dir) =
            (place.source_root.clone(), workspace_dir.clone(), scripts_dir.clone());
        let files = place.files.clone();
        let sources: Vec<PathBuf> = upstream.to_vec();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let _ = std::fs::remove_dir_all(&workspace_dir);
            std::fs::create_dir_all(&workspace_dir)?;
            std::fs::create_dir_all(&scripts_dir)?;
            workspace::copy_files(&project, &workspace_dir, &files)?;
            for source in sources {
                workspace::copy_tree(&source, &workspace_dir)?;
            }
            Ok(())
        })
        .await
    };
    let fail_setup = |message: String| {
        sink.emit(Event::Output { job: index, name: name.clone(), stream: Stream::Stderr, line: message.clone() });
        JobOutcome {
            status: JobStatus::Failed,
            exit_code: None,
            duration: started.elapsed(),
            coverage: None,
            after_script_failed: false,
            tail: vec![message],
            attempts: 0,
            tests: None,
        }
    };
    match prepared {
        Ok(Ok(())) => {}
        Ok(Err(error)) => return (fail_setup(format!("preparing the workspace failed: {error}")), Vec::new()),
        Err(error) => return (fail_setup(format!("preparing the workspace failed: {error}")), Vec::new()),
    }
    for (producer, dir) in spec.upstream.iter().zip(upstream) {
        let empty = std::fs::read_dir(dir).map_or(true, |mut entries| entries.next().is_none());
        if empty && spec.producers.contains(producer) {
            sink.emit(Event::Note {
                job: index,
                name: name.clone(),
                text: format!("artifacts from {producer} was empty"),
                kind: NoteKind::Warning,
            });
        }
    }
    let (launcher, mount) = match (&spec.image, &place.container_engine) {
        (Some(_), _) if place.force_shell => {
            sink.emit(Event::Note {
                job: index,
                name: name.clone(),
                text: "runs in the shell although it names an image (--force-shell)".to_owned(),
                kind: NoteKind::Warning,
            });
            (shell_launcher(place.isolation), None)
        }
        (Some(image), Some(engine)) => {
            let mount = format!("/builds/{}", workspace::dir_name(&name));
            (
                shell::Launcher::Container { engine: engine.clone(), image: image.clone(), mount: mount.clone() },
                Some(mount),
            )
        }
        (Some(image), None) => {
            let message = format!(
                "{name} needs the image `{image}`, but no container engine with it is available here (podman or docker); pass --force-shell to run it in the shell"
            );
            return (fail_setup(message), Vec::new());
        }
        (None, _) => (shell_launcher(place.isolation), None),
    };
    let visible_workspace = mount.as_ref().map_or_else(|| workspace_dir.clone(), PathBuf::from);
    let mut env = spec.variables(&visible_workspace);
    if !spec.file_variables.is_empty() {
        let dir = place.state_dir.join("variables");
        for (variable, contents) in &spec.file_variables {
            let path = dir.join(workspace::dir_name(variable));
            if let Err(error) = write_private(&path, contents) {
                return (fail_setup(format!("writing the file variable {variable} failed: {error}")), Vec::new());
            }
            let path = path.display().to_string();
            for entry in env.iter_mut().filter(|(name, _)| name == variable) {
                entry.1 = path.clone();
            }
        }
    }

    // Caches in.
    let caches: Vec<(String, &opsloop_pipeline::config::Cache)> =
        spec.caches.iter().map(|cache| (cache_key(&place.files, &cache.key, &workspace_dir, &env), cache)).collect();
    for (key, cache) in &caches {
        if cache_policy(cache, &env) != CachePolicy::Push {
            let lookup = |n: &str| env.iter().rev().find(|(k, _)| k == n).map(|(_, v)| v.clone());
            let mut keys = vec![key.clone()];
            keys.extend(cache.fallback_keys.iter().map(|k| variables::expand(k, &lookup)));
            let mut found = None;
            for candidate in &keys {
                let dir = workspace::cache_dir(&place.cache_root, candidate);
                let here = dir.exists()
                    || match &place.shared_cache {
                        Some(shared) => shared.fetch(candidate, &dir).await,
                        None => false,
                    };
                if here {
                    found = Some(dir);
                    break;
                }
            }
            if let Some(dir) = found {
                let target = workspace_dir.clone();
                let _ = tokio::task::spawn_blocking(move || workspace::copy_tree(&dir, &target)).await;
            }
        }
    }

    let coverage_regex = spec.coverage.as_deref().and_then(|pattern| {
        let body = pattern.trim().strip_prefix('/').and_then(|p| p.rsplit_once('/')).map_or(pattern, |(body, _)| body);
        regex::Regex::new(body).ok()
    });
    let number_regex = regex::Regex::new(r"\d+(?:\.\d+)?").ok();
    let timeout = spec.timeout.as_deref().and_then(shell::parse_duration);
    let commands = &spec.commands;
    let mut tail: Vec<String> = Vec::new();
    let mut coverage = None;
    let mut attempts = 0;
    let ending = loop {
        attempts += 1;
        let script_path = scripts_dir.join(format!("{}-{attempts}.sh", workspace::dir_name(&name)));
        let mut on_line = |line: Line| match line {
            Line::Command(text) => {
                let text = masker.mask(&text);
                sink.emit(Event::Command { job: index, name: name.clone(), text });
            }
            Line::Output(stream, text) => {
                let text = masker.mask(&text);
                if let Some(regex) = &coverage_regex
                    && let Some(captures) = regex.captures(&text)
                {
                    // The first group when the regex has one (GitLab's rule), else the whole match.
                    let found = captures.get(1).or_else(|| captures.get(0)).map_or("", |m| m.as_str());
                    if let Some(number) = number_regex.as_ref().and_then(|n| n.find(found)) {
                        coverage = Some(number.as_str().to_owned());
                    }
                }
                tail.push(text.clone());
                if tail.len() > 20 {
                    tail.remove(0);
                }
                sink.emit(Event::Output { job: index, name: name.clone(), stream, line: text });
            }
        };
        let invocation = shell::Invocation {
            script_path: &script_path,
            dir: &workspace_dir,
            env: &env,
            timeout,
            launcher: &launcher,
            clean_env: place.clean_env,
        };
        let ending = match shell::run(&shell::script(commands), &invocation, cancel.clone(), &mut on_line).await {
            Ok(ending) => ending,
            Err(error) => {
                sink.emit(Event::Output {
                    job: index,
                    name: name.clone(),
                    stream: Stream::Stderr,
                    line: format!("cannot run bash: {error}"),
                });
                Ending::Exited(127)
            }
        };
        let retryable = match ending {
            Ending::Exited(0) | Ending::Canceled => false,
            Ending::Exited(code) => {
                (spec.retry.when.is_empty() || spec.retry.when.iter().any(|w| w == "always" || w == "script_failure"))
                    && (spec.retry.exit_codes.is_empty() || spec.retry.exit_codes.contains(&code))
            }
            Ending::TimedOut => {
                spec.retry.when.is_empty()
                    || spec.retry.when.iter().any(|w| w == "always" || w == "job_execution_timeout")
            }
        };
        if retryable && attempts <= spec.retry.max {
            sink.emit(Event::Note {
                job: index,
                name: name.clone(),
                text: format!("retrying (attempt {} of {})", attempts + 1, spec.retry.max + 1),
                kind: NoteKind::Warning,
            });
            continue;
        }
        break ending;
    };
    if ending == Ending::TimedOut {
        sink.emit(Event::Note {
            job: index,
            name: name.clone(),
            text: format!("job timed out after {}", spec.timeout.clone().unwrap_or_default()),
            kind: NoteKind::Warning,
        });
    }
    let (status, exit_code) = match ending {
        Ending::Exited(0) => (JobStatus::Success, Some(0)),
        Ending::Exited(code) if spec.allow_failure.allows(code) => (JobStatus::Warning, Some(code)),
        Ending::Exited(code) => (JobStatus::Failed, Some(code)),
        Ending::TimedOut if spec.allow_failure == AllowFailure::Yes => (JobStatus::Warning, None),
        Ending::TimedOut => (JobStatus::Failed, None),
        Ending::Canceled => (JobStatus::Canceled, None),
    };

    // after_script: always, in its own shell, never failing the spec.
    let mut after_script_failed = false;
    if !spec.after_script.is_empty() {
        let job_status = match status {
            JobStatus::Success | JobStatus::Warning => "success",
            JobStatus::Canceled => "canceled",
            _ => "failed",
        };
        let mut after_env = env.clone();
        after_env.push(("CI_JOB_STATUS".to_owned(), job_status.to_owned()));
        let script_path = scripts_dir.join(format!("{}-after.sh", workspace::dir_name(&name)));
        sink.emit(Event::AfterScript { job: index, name: name.clone() });
        let (_never, not_canceled) = watch::channel(false);
        let mut on_line = |line: Line| match line {
            Line::Command(text) => {
                sink.emit(Event::Command { job: index, name: name.clone(), text: masker.mask(&text) })
            }
            Line::Output(stream, text) => {
                sink.emit(Event::Output { job: index, name: name.clone(), stream, line: masker.mask(&text) })
            }
        };
        let invocation = shell::Invocation {
            script_path: &script_path,
            dir: &workspace_dir,
            env: &after_env,
            timeout: Some(Duration::from_secs(300)),
            launcher: &launcher,
            clean_env: place.clean_env,
        };
        let ending = shell::run(&shell::script(&spec.after_script), &invocation, not_canceled, &mut on_line).await;
        after_script_failed = !matches!(ending, Ok(Ending::Exited(0)));
    }

    // Artifacts and caches out, and dotenv reports.
    let succeeded = matches!(status, JobStatus::Success | JobStatus::Warning);
    let mut reported = Vec::new();
    let mut tests: Option<crate::junit::TestReport> = None;
    if let Some(artifacts) = &spec.artifacts {
        let wanted = match artifacts.when {
            ArtifactsWhen::OnSuccess => succeeded,
            ArtifactsWhen::OnFailure => !succeeded,
            ArtifactsWhen::Always => true,
        };
        if wanted {
            let lookup = |n: &str| env.iter().rev().find(|(k, _)| k == n).map(|(_, v)| v.clone());
            let mut paths: Vec<String> = artifacts.paths.iter().map(|p| variables::expand(p, &lookup)).collect();
            // A dotenv report is read here, not passed on: later jobs get its variables, never
            // the file (GitLab's reports are not artifacts of the job's workspace).
            paths.extend(artifacts.junit.iter().map(|p| variables::expand(p, &lookup)));
            let exclude: Vec<String> = artifacts.exclude.iter().map(|p| variables::expand(p, &lookup)).collect();
            let (source, project, state) = (workspace_dir.clone(), place.project_dir.clone(), place.state_dir.clone());
            let target = workspace::artifacts_dir(&state, &name);
            let (untracked, tracked, copy_back) =
                (artifacts.untracked, place.files.clone(), spec.artifacts_to_source.unwrap_or(place.copy_back));
            let saving = Instant::now();
            let copied = tokio::task::spawn_blocking(move || -> std::io::Result<usize> {
                let mut files = workspace::collect(&source, &project, &paths, &exclude)?;
                if untracked {
                    // `untracked: true`: every file the job made that the project does not have.
                    let tracked: std::collections::HashSet<&String> = tracked.iter().collect();
                    let made = workspace::list_tree(&source)?.into_iter().filter(|f| !tracked.contains(f));
                    let excluded = workspace::collect(&source, &project, &exclude, &[])?;
                    files.extend(made.filter(|f| !excluded.contains(f)));
                    files.sort();
                    files.dedup();
                }
                let _ = std::fs::remove_dir_all(&target);
                std::fs::create_dir_all(&target)?;
                workspace::copy_files(&source, &target, &files)?;
                // Like gitlab-ci-local: the files also land in the project directory.
                if copy_back {
                    workspace::copy_files(&source, &project, &files)?;
                }
                Ok(files.len())
            })
            .await;
            match copied {
                Ok(Err(error)) => sink.emit(Event::Note {
                    job: index,
                    name: name.clone(),
                    text: format!("saving artifacts failed: {error}"),
                    kind: NoteKind::Warning,
                }),
                // gitlab-ci-local's words, which people grep for.
                Ok(Ok(0)) if !artifacts.paths.is_empty() || artifacts.untracked => sink.emit(Event::Note {
                    job: index,
                    name: name.clone(),
                    text: "!! no artifacts was copied !!".to_owned(),
                    kind: NoteKind::Progress,
                }),
                Ok(Ok(_)) => sink.emit(Event::Note {
                    job: index,
                    name: name.clone(),
                    text: format!("exported artifacts in {} ms", saving.elapsed().as_millis()),
                    kind: NoteKind::Progress,
                }),
                Err(_) => {}
            }
            if !artifacts.junit.is_empty() {
                let patterns: Vec<String> = artifacts.junit.iter().map(|p| variables::expand(p, &lookup)).collect();
                let project = place.project_dir.clone();
                for file in workspace::collect(&workspace_dir, &project, &patterns, &[]).unwrap_or_default() {
                    let Ok(xml) = std::fs::read_to_string(workspace_dir.join(&file)) else { continue };
                    match crate::junit::parse(&xml) {
                        Ok(report) => tests.get_or_insert_with(Default::default).merge(report),
                        Err(error) => sink.emit(Event::Note {
                            job: index,
                            name: name.clone(),
                            text: format!("{file}: {error}"),
                            kind: NoteKind::Warning,
                        }),
                    }
                }
            }
            for file in &artifacts.dotenv {
                let file = variables::expand(file, &lookup);
                match std::fs::read_to_string(workspace_dir.join(&file)) {
                    Ok(text) => reported.extend(parse_dotenv(&text)),
                    Err(_) => sink.emit(Event::Note {
                        job: index,
                        name: name.clone(),
                        text: format!("artifact reports dotenv '{file}' could not be found"),
                        kind: NoteKind::Warning,
                    }),
                }
            }
        }
    }
    for (key, cache) in &caches {
        let wanted = match cache.when {
            ArtifactsWhen::OnSuccess => succeeded,
            ArtifactsWhen::OnFailure => !succeeded,
            ArtifactsWhen::Always => true,
        };
        if wanted && cache_policy(cache, &env) != CachePolicy::Pull {
            let lookup = |n: &str| env.iter().rev().find(|(k, _)| k == n).map(|(_, v)| v.clone());
            let paths: Vec<String> = cache.paths.iter().map(|p| variables::expand(p, &lookup)).collect();
            let (workspace_dir, project) = (workspace_dir.clone(), place.project_dir.clone());
            let target = workspace::cache_dir(&place.cache_root, key);
            let (untracked, tracked) = (cache.untracked, place.files.clone());
            let saved_dir = target.clone();
            let saved = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<(String, usize)>> {
                let mut files = workspace::collect(&workspace_dir, &project, &paths, &[])?;
                // What each path matched, for the report below.
                let mut matched = Vec::with_capacity(paths.len());
                for path in &paths {
                    let count = workspace::collect(&workspace_dir, &project, std::slice::from_ref(path), &[])?.len();
                    matched.push((path.clone(), count));
                }
                if untracked {
                    let tracked: std::collections::HashSet<&String> = tracked.iter().collect();
                    files.extend(workspace::list_tree(&workspace_dir)?.into_iter().filter(|f| !tracked.contains(f)));
                    files.sort();
                    files.dedup();
                }
                std::fs::create_dir_all(&target)?;
                workspace::copy_files(&workspace_dir, &target, &files)?;
                Ok(matched)
            })
            .await;
            match saved {
                Ok(Ok(matched)) => {
                    // gitlab-ci-local's report, so a path that never matches is noticed.
                    for (path, count) in matched {
                        let text = if count == 0 {
                            format!(
                                "WARNING: {path}: no matching files. Ensure that the artifact path is relative to the working directory"
                            )
                        } else {
                            format!("{path}: found {count} artifact files and directories")
                        };
                        sink.emit(Event::Note { job: index, name: name.clone(), text, kind: NoteKind::Detail });
                    }
                    sink.emit(Event::Note {
                        job: index,
                        name: name.clone(),
                        text: format!("saved cache '{key}'"),
                        kind: NoteKind::Progress,
                    });
                    if let Some(shared) = &place.shared_cache {
                        shared.store(key, &saved_dir).await;
                    }
                }
                Ok(Err(error)) => sink.emit(Event::Note {
                    job: index,
                    name: name.clone(),
                    text: format!("saving cache '{key}' failed: {error}"),
                    kind: NoteKind::Warning,
                }),
                Err(_) => {}
            }
        }
    }
    if !place.keep_workspaces {
        let workspace_dir = workspace_dir.clone();
        let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(workspace_dir)).await;
    }
    let outcome = JobOutcome {
        status,
        exit_code,
        duration: started.elapsed(),
        coverage,
        after_script_failed,
        tail,
        attempts,
        tests,
    };
    (outcome, reported)
}

/// Writes a file only its owner can read (file-type variables hold secrets).
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let _ = std::fs::remove_file(path);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(contents.as_bytes())
}

fn shell_launcher(isolation: Isolation) -> shell::Launcher {
    match isolation {
        Isolation::None => shell::Launcher::Shell,
        Isolation::Sandbox { network } => shell::Launcher::Sandbox { network },
    }
}

/// `KEY=value` lines, as GitLab reads `artifacts:reports:dotenv`.
pub fn parse_dotenv(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let (key, value) = line.split_once('=')?;
            let key = key.trim().trim_start_matches("export ").trim();
            if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return None;
            }
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(value);
            Some((key.to_owned(), value.to_owned()))
        })
        .collect()
}
