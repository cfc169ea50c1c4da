//! The scheduler: starts each job the moment what it waits for is done (its `needs`, or the
//! earlier stages), within the concurrency limit and `resource_group` locks, and decides from
//! their outcomes whether it runs at all (`when`). Cost per event is linear in the job's edges.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use opsloop_pipeline::config::{AllowFailure, ArtifactsWhen, CacheKey, CachePolicy, Config, Job, When};
use opsloop_pipeline::plan::{Plan, PlannedJob};
use opsloop_pipeline::variables;
use tokio::sync::{Mutex, Semaphore, watch};
use tokio::task::JoinSet;

use crate::events::{Event, EventSink, JobOutcome, JobStatus, Stream};
use crate::mask::Masker;
use crate::shell::{self, Ending, Line};
use crate::workspace;

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub project_dir: PathBuf,
    /// `.opsloop` inside the project: builds, artifacts, caches, scripts.
    pub state_dir: PathBuf,
    pub concurrency: usize,
    /// Keep each job's workspace after it ends (`--shell-isolation` kept for inspection).
    pub keep_workspaces: bool,
    /// Start jobs from the working tree (tracked and untracked files) instead of the files
    /// at `HEAD` (`--dirty`).
    pub dirty: bool,
    /// A source tree already prepared (a child pipeline reuses its parent's snapshot).
    pub prepared_source: Option<PathBuf>,
    /// Pipeline-wide predefined variables (CI_COMMIT_*, CI_PIPELINE_*, …), lowest precedence.
    pub predefined: Vec<(String, String)>,
    /// Variables that override everything (home file, then `--variable`), in rising precedence.
    pub overrides: Vec<Override>,
    /// Names of variables removed with `--unset-variable`.
    pub unset: Vec<String>,
    /// Values to replace with `[MASKED]` in all output.
    pub masked: Vec<String>,
    pub pipeline_id: u64,
    /// How shell jobs are isolated.
    pub isolation: Isolation,
    /// The container engine (`podman` or `docker`) for jobs with `image:`, when one works here.
    pub container_engine: Option<String>,
    /// Run `image:` jobs in the shell anyway (with a note), for machines without an engine.
    pub force_shell: bool,
    /// Job slots shared with other pipelines (the server's global limit); `None`: this
    /// pipeline alone, `concurrency` at a time.
    pub shared_slots: Option<Arc<Semaphore>>,
    /// `resource_group` locks shared with other pipelines of the same project, so a group
    /// holds across pipelines as on GitLab; `None`: within this pipeline only.
    pub shared_resource_groups: Option<Arc<ResourceGroups>>,
}

/// `resource_group` name → its lock.
pub type ResourceGroups = Mutex<HashMap<String, Arc<Mutex<()>>>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Plain bash in the job's workspace.
    #[default]
    None,
    /// bubblewrap: read-only root, private /tmp, only the workspace writable, no network unless allowed.
    Sandbox { network: bool },
}

/// A variable from outside the pipeline file, optionally only for some environments.
#[derive(Debug, Clone)]
pub struct Override {
    pub name: String,
    pub value: String,
    /// An environment-name pattern (`*` wildcards); `None` for every job.
    pub environment: Option<String>,
}

fn environment_matches(pattern: &str, environment: Option<&str>) -> bool {
    if pattern == "*" {
        return true;
    }
    let Some(environment) = environment else { return false };
    let regex = format!("^{}$", regex::escape(pattern).replace(r"\*", ".*"));
    regex::Regex::new(&regex).is_ok_and(|r| r.is_match(environment))
}

#[derive(Debug, Clone)]
pub struct PipelineOutcome {
    pub jobs: Vec<(String, JobOutcome)>,
    pub success: bool,
}

/// A job's index, outcome and dotenv variables, as its task returns them.
type Finished = (usize, JobOutcome, Vec<(String, String)>);

struct Shared {
    config: Config,
    plan: Plan,
    options: RunOptions,
    sink: Arc<dyn EventSink>,
    masker: Masker,
    resource_groups: Arc<ResourceGroups>,
    /// Where each job's workspace is copied from (a snapshot of HEAD, or the project itself).
    source_root: PathBuf,
    files: Vec<String>,
}

/// Runs `plan` to the end (or until `cancel` turns true) and reports through `sink`.
pub async fn run_pipeline(
    config: Config,
    plan: Plan,
    options: RunOptions,
    sink: Arc<dyn EventSink>,
    cancel: watch::Receiver<bool>,
) -> std::io::Result<PipelineOutcome> {
    std::fs::create_dir_all(&options.state_dir)?;
    let state_name = options.state_dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let snapshot = options.state_dir.join("source");
    let committed = if let Some(prepared) = &options.prepared_source {
        let prepared = prepared.clone();
        Some(
            tokio::task::spawn_blocking(move || workspace::list_tree(&prepared))
                .await
                .map_err(std::io::Error::other)??,
        )
    } else if options.dirty {
        None
    } else {
        let (project, target) = (options.project_dir.clone(), snapshot.clone());
        tokio::task::spawn_blocking(move || workspace::snapshot_head(&project, &target))
            .await
            .map_err(std::io::Error::other)??
    };
    let (source_root, files) = match committed {
        Some(files) => (options.prepared_source.clone().unwrap_or(snapshot), files),
        None => (options.project_dir.clone(), workspace::project_files(&options.project_dir, &state_name)?),
    };
    let masker = Masker::new(options.masked.iter().cloned());
    let count = plan.jobs.len();
    let concurrency = options.concurrency.max(1);
    let semaphore = options.shared_slots.clone().unwrap_or_else(|| Arc::new(Semaphore::new(concurrency)));
    let resource_groups = options.shared_resource_groups.clone().unwrap_or_default();
    let shared = Arc::new(Shared { config, plan, options, sink, masker, resource_groups, source_root, files });

    // Two kinds of waiting, both linear in jobs plus edges: a job with `needs` counts down its
    // needs; a job without waits for a stage barrier (every job of the earlier stages done),
    // kept as a count per stage instead of an edge to each earlier job.
    let stage_count = shared.plan.stages.len().max(1);
    let stage_of = |index: usize| shared.plan.jobs[index].stage.min(stage_count - 1);
    let mut waiting_on: Vec<usize> = vec![0; count];
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); count];
    let mut stage_waiters: Vec<Vec<usize>> = vec![Vec::new(); stage_count];
    let mut unfinished_in_stage: Vec<usize> = vec![0; stage_count];
    for (index, job) in shared.plan.jobs.iter().enumerate() {
        unfinished_in_stage[stage_of(index)] += 1;
        match &job.needs {
            Some(needs) => {
                for need in needs {
                    dependents[need.job].push(index);
                    waiting_on[index] += 1;
                }
            }
            None => stage_waiters[stage_of(index)].push(index),
        }
    }
    // Stages before `open_stages` are all finished; `failed_before[s]`: a job of a stage before s failed.
    let mut open_stages = 0;
    let mut failed_before: Vec<bool> = vec![false; stage_count + 1];
    let mut failed_in_stage: Vec<bool> = vec![false; stage_count];

    let mut outcomes: Vec<Option<JobOutcome>> = vec![None; count];
    // Failed, canceled, or skipped because something before it failed: what `when` reads.
    let mut failed_like: Vec<bool> = vec![false; count];
    let mut dotenv: Vec<Vec<(String, String)>> = vec![Vec::new(); count];
    let mut running: JoinSet<Finished> = JoinSet::new();
    let mut ready: Vec<usize> =
        (0..count).filter(|i| shared.plan.jobs[*i].needs.is_some() && waiting_on[*i] == 0).collect();
    let mut finished = 0;
    loop {
        // Open every stage whose earlier stages are done, releasing its stage-waiting jobs.
        while open_stages < stage_count && (open_stages == 0 || unfinished_in_stage[open_stages - 1] == 0) {
            if open_stages > 0 {
                failed_before[open_stages] = failed_before[open_stages - 1] || failed_in_stage[open_stages - 1];
            }
            ready.append(&mut stage_waiters[open_stages]);
            open_stages += 1;
        }
        if finished >= count {
            break;
        }
        ready.reverse();
        while let Some(index) = ready.pop() {
            let job = &shared.plan.jobs[index];
            let failed_upstream = match &job.needs {
                Some(needs) => needs.iter().any(|n| failed_like[n.job]),
                None => failed_before[stage_of(index)],
            };
            let canceled = *cancel.borrow();
            let runs = !canceled
                && match job.when {
                    When::OnSuccess | When::Delayed => !failed_upstream,
                    When::OnFailure => failed_upstream,
                    When::Always => true,
                    When::Manual | When::Never => false,
                };
            if !runs {
                let status = if canceled {
                    JobStatus::Canceled
                } else if job.when == When::Manual {
                    JobStatus::Manual
                } else {
                    JobStatus::Skipped
                };
                let outcome = JobOutcome {
                    status,
                    exit_code: None,
                    duration: Duration::ZERO,
                    coverage: None,
                    after_script_failed: false,
                    tail: Vec::new(),
                    attempts: 0,
                    tests: None,
                };
                shared.sink.emit(Event::JobFinished { job: index, name: job.name.clone(), outcome: outcome.clone() });
                failed_like[index] = canceled || (failed_upstream && job.when != When::Manual);
                outcomes[index] = Some(outcome);
                finished += 1;
                unfinished_in_stage[stage_of(index)] -= 1;
                for dependent in &dependents[index] {
                    waiting_on[*dependent] -= 1;
                    if waiting_on[*dependent] == 0 {
                        ready.push(*dependent);
                    }
                }
                continue;
            }
            let inherited: Vec<(String, String)> =
                job.artifacts_from.iter().flat_map(|source| dotenv[*source].iter().cloned()).collect();
            let shared = shared.clone();
            let semaphore = semaphore.clone();
            let cancel = cancel.clone();
            running.spawn(async move {
                let (outcome, env) = run_job(&shared, index, inherited, semaphore, cancel).await;
                (index, outcome, env)
            });
        }
        if finished >= count {
            break;
        }
        if running.is_empty() {
            let stage_can_open = open_stages < stage_count && unfinished_in_stage[open_stages - 1] == 0;
            if ready.is_empty() && !stage_can_open {
                return Err(std::io::Error::other("the scheduler has jobs left that can never start"));
            }
            continue;
        }
        let Some(joined) = running.join_next().await else { continue };
        let (index, outcome, env) = match joined {
            Ok(result) => result,
            Err(error) => return Err(std::io::Error::other(format!("a job task failed: {error}"))),
        };
        shared.sink.emit(Event::JobFinished {
            job: index,
            name: shared.plan.jobs[index].name.clone(),
            outcome: outcome.clone(),
        });
        if matches!(outcome.status, JobStatus::Failed | JobStatus::Canceled) {
            failed_in_stage[stage_of(index)] = true;
            failed_like[index] = true;
        }
        outcomes[index] = Some(outcome);
        dotenv[index] = env;
        finished += 1;
        unfinished_in_stage[stage_of(index)] -= 1;
        for dependent in dependents[index].clone() {
            waiting_on[dependent] -= 1;
            if waiting_on[dependent] == 0 {
                ready.push(dependent);
            }
        }
    }
    let jobs: Vec<(String, JobOutcome)> = shared
        .plan
        .jobs
        .iter()
        .zip(outcomes)
        .filter_map(|(job, outcome)| outcome.map(|o| (job.name.clone(), o)))
        .collect();
    let success = jobs.iter().all(|(_, o)| !matches!(o.status, JobStatus::Failed | JobStatus::Canceled));
    Ok(PipelineOutcome { jobs, success })
}

/// [`run_pipeline`] behind a boxed, `Send` future: child pipelines recurse through it, and the
/// box breaks the cycle the compiler would otherwise have to prove `Send` across.
pub(crate) fn run_pipeline_boxed(
    config: Config,
    plan: Plan,
    options: RunOptions,
    sink: Arc<dyn EventSink>,
    cancel: watch::Receiver<bool>,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = std::io::Result<PipelineOutcome>> + Send>> {
    Box::pin(run_pipeline(config, plan, options, sink, cancel))
}

fn job_variables(
    shared: &Shared,
    index: usize,
    workspace: &std::path::Path,
    inherited: &[(String, String)],
) -> Vec<(String, String)> {
    let planned = &shared.plan.jobs[index];
    let job = &shared.config.jobs[planned.config_index];
    let mut layers: Vec<(String, String, bool)> =
        shared.options.predefined.iter().map(|(k, v)| (k.clone(), v.clone(), false)).collect();
    let stage = shared.plan.stages.get(planned.stage).cloned().unwrap_or_default();
    let job_id = shared.options.pipeline_id * 1000 + index as u64 + 1;
    let predefined_job = [
        ("CI_JOB_NAME", planned.name.clone()),
        ("CI_JOB_NAME_SLUG", slug(&planned.name)),
        ("CI_JOB_STAGE", stage),
        ("CI_JOB_ID", job_id.to_string()),
        ("CI_PROJECT_DIR", workspace.display().to_string()),
        ("CI_BUILDS_DIR", workspace.parent().map(|p| p.display().to_string()).unwrap_or_default()),
        ("CI_JOB_URL", format!("http://localhost/jobs/{job_id}")),
    ];
    layers.extend(predefined_job.into_iter().map(|(k, v)| (k.to_owned(), v, false)));
    if let Some(environment) = &job.environment {
        layers.push(("CI_ENVIRONMENT_NAME".to_owned(), environment.name.clone(), true));
        layers.push(("CI_ENVIRONMENT_SLUG".to_owned(), slug(&environment.name), false));
        if let Some(url) = &environment.url {
            layers.push(("CI_ENVIRONMENT_URL".to_owned(), url.clone(), true));
        }
        if let Some(tier) = &environment.deployment_tier {
            layers.push(("CI_ENVIRONMENT_TIER".to_owned(), tier.clone(), false));
        }
    }
    // Global < workflow:rules < the job's own < rules/matrix.
    for variable in job
        .global_variables
        .iter()
        .chain(&shared.plan.workflow_variables)
        .chain(&job.variables)
        .chain(&planned.extra_variables)
    {
        layers.push((variable.name.clone(), variable.value.clone(), variable.expand));
    }
    layers.extend(inherited.iter().map(|(k, v)| (k.clone(), v.clone(), false)));
    let environment = job.environment.as_ref().map(|e| e.name.as_str());
    layers.extend(
        shared
            .options
            .overrides
            .iter()
            .filter(|o| o.environment.as_deref().is_none_or(|pattern| environment_matches(pattern, environment)))
            .map(|o| (o.name.clone(), o.value.clone(), false)),
    );
    layers.retain(|(name, _, _)| !shared.options.unset.contains(name));
    variables::resolve(&layers, &|_| None)
}

fn slug(text: &str) -> String {
    let slug: String = text
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect::<String>()
        .split('-')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("-");
    slug.chars().take(63).collect()
}

fn cache_key(shared: &Shared, key: &CacheKey, workspace: &std::path::Path, env: &[(String, String)]) -> String {
    let lookup = |name: &str| env.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    match key {
        CacheKey::Text(text) => {
            // GitLab's rule: a key that expands to nothing is the `default` cache.
            let key = variables::expand(text, &lookup);
            if key.trim().is_empty() { "default".to_owned() } else { key }
        }
        CacheKey::Files { files, prefix } => {
            use sha2::Digest;
            let mut digest = sha2::Sha256::new();
            for pattern in files {
                for file in opsloop_pipeline::config::glob_matches(pattern, &shared.files) {
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

/// Runs one job with its retries: workspace, caches and artifacts in, scripts, after_script,
/// artifacts and caches out. Returns the outcome and the dotenv variables it reports.
/// Waits for `cancel` to turn true (or its sender to go away).
async fn canceled(mut cancel: watch::Receiver<bool>) {
    while !*cancel.borrow() {
        if cancel.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

fn canceled_outcome(started: Instant) -> JobOutcome {
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

async fn run_job(
    shared: &Arc<Shared>,
    index: usize,
    inherited: Vec<(String, String)>,
    semaphore: Arc<Semaphore>,
    cancel: watch::Receiver<bool>,
) -> (JobOutcome, Vec<(String, String)>) {
    let planned: &PlannedJob = &shared.plan.jobs[index];
    let job: &Job = &shared.config.jobs[planned.config_index];
    let name = planned.name.clone();
    let started = Instant::now();
    // Waiting (start_in, the resource group, a free slot) never holds a slot, and ends on cancel.
    if planned.when == When::Delayed
        && let Some(delay) = planned.start_in.as_deref().and_then(shell::parse_duration)
    {
        shared.sink.emit(Event::Note {
            job: index,
            name: name.clone(),
            text: format!("delayed: starting in {}s", delay.as_secs()),
        });
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = canceled(cancel.clone()) => return (canceled_outcome(started), Vec::new()),
        }
    }
    let _resource_lock = match &job.resource_group {
        Some(group) => {
            let lock = shared.resource_groups.lock().await.entry(group.clone()).or_default().clone();
            tokio::select! {
                guard = lock.lock_owned() => Some(guard),
                () = canceled(cancel.clone()) => return (canceled_outcome(started), Vec::new()),
            }
        }
        None => None,
    };
    let permit = tokio::select! {
        permit = semaphore.acquire_owned() => permit.ok(),
        () = canceled(cancel.clone()) => return (canceled_outcome(started), Vec::new()),
    };
    if *cancel.borrow() {
        return (canceled_outcome(started), Vec::new());
    }
    let executor = match (&job.image, &shared.options.container_engine, shared.options.isolation) {
        (Some(image), Some(_), _) if !shared.options.force_shell => image.clone(),
        (_, _, Isolation::Sandbox { .. }) => "sandbox".to_owned(),
        _ => "shell".to_owned(),
    };
    if let Some(trigger) = &job.trigger {
        // A trigger job only waits for its child, whose jobs take slots of their own: holding
        // one here could starve the child when the slots are shared.
        drop(permit);
        shared.sink.emit(Event::JobStarted { job: index, name: name.clone(), executor: "child pipeline".to_owned() });
        let variables: Vec<(String, String)> =
            job.variables.iter().map(|v| (v.name.clone(), v.value.clone())).collect();
        let outcome =
            crate::trigger::run_child(&name, index, trigger, &shared.options, variables, shared.sink.clone(), cancel)
                .await;
        return (outcome, Vec::new());
    }
    shared.sink.emit(Event::JobStarted { job: index, name: name.clone(), executor });

    let builds = shared.options.state_dir.join("builds");
    let workspace_dir = builds.join(workspace::dir_name(&name));
    let scripts_dir = shared.options.state_dir.join("scripts");
    let prepared = {
        let (project, workspace_dir, scripts_dir) =
            (shared.source_root.clone(), workspace_dir.clone(), scripts_dir.clone());
        let files = shared.files.clone();
        let sources: Vec<PathBuf> = planned
            .artifacts_from
            .iter()
            .map(|source| workspace::artifacts_dir(&shared.options.state_dir, &shared.plan.jobs[*source].name))
            .collect();
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
        shared.sink.emit(Event::Output {
            job: index,
            name: name.clone(),
            stream: Stream::Stderr,
            line: message.clone(),
        });
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
    let (launcher, mount) = match (&job.image, &shared.options.container_engine) {
        (Some(_), _) if shared.options.force_shell => {
            shared.sink.emit(Event::Note {
                job: index,
                name: name.clone(),
                text: "runs in the shell although it names an image (--force-shell)".to_owned(),
            });
            (shell_launcher(shared.options.isolation), None)
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
        (None, _) => (shell_launcher(shared.options.isolation), None),
    };
    let visible_workspace = mount.as_ref().map_or_else(|| workspace_dir.clone(), PathBuf::from);
    let env = job_variables(shared, index, &visible_workspace, &inherited);

    // Caches in.
    let caches: Vec<(String, &opsloop_pipeline::config::Cache)> =
        job.cache.iter().map(|cache| (cache_key(shared, &cache.key, &workspace_dir, &env), cache)).collect();
    for (key, cache) in &caches {
        if cache.policy != CachePolicy::Push {
            let mut dirs = vec![workspace::cache_dir(&shared.options.state_dir, key)];
            let lookup = |n: &str| env.iter().rev().find(|(k, _)| k == n).map(|(_, v)| v.clone());
            dirs.extend(
                cache
                    .fallback_keys
                    .iter()
                    .map(|k| workspace::cache_dir(&shared.options.state_dir, &variables::expand(k, &lookup))),
            );
            if let Some(dir) = dirs.into_iter().find(|d| d.exists()) {
                let target = workspace_dir.clone();
                let _ = tokio::task::spawn_blocking(move || workspace::copy_tree(&dir, &target)).await;
            }
        }
    }

    let coverage_regex = job.coverage.as_deref().and_then(|pattern| {
        let body = pattern.trim().strip_prefix('/').and_then(|p| p.rsplit_once('/')).map_or(pattern, |(body, _)| body);
        regex::Regex::new(body).ok()
    });
    let number_regex = regex::Regex::new(r"\d+(?:\.\d+)?").ok();
    let timeout = job.timeout.as_deref().and_then(shell::parse_duration);
    let mut commands: Vec<String> = job.before_script.clone();
    commands.extend(job.script.iter().cloned());
    let mut tail: Vec<String> = Vec::new();
    let mut coverage = None;
    let mut attempts = 0;
    let ending = loop {
        attempts += 1;
        let script_path = scripts_dir.join(format!("{}-{attempts}.sh", workspace::dir_name(&name)));
        let mut on_line = |line: Line| match line {
            Line::Command(text) => {
                let text = shared.masker.mask(&text);
                shared.sink.emit(Event::Command { job: index, name: name.clone(), text });
            }
            Line::Output(stream, text) => {
                let text = shared.masker.mask(&text);
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
                shared.sink.emit(Event::Output { job: index, name: name.clone(), stream, line: text });
            }
        };
        let invocation = shell::Invocation {
            script_path: &script_path,
            dir: &workspace_dir,
            env: &env,
            timeout,
            launcher: &launcher,
        };
        let ending = match shell::run(&shell::script(&commands), &invocation, cancel.clone(), &mut on_line).await {
            Ok(ending) => ending,
            Err(error) => {
                shared.sink.emit(Event::Output {
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
                (job.retry.when.is_empty() || job.retry.when.iter().any(|w| w == "always" || w == "script_failure"))
                    && (job.retry.exit_codes.is_empty() || job.retry.exit_codes.contains(&code))
            }
            Ending::TimedOut => {
                job.retry.when.is_empty()
                    || job.retry.when.iter().any(|w| w == "always" || w == "job_execution_timeout")
            }
        };
        if retryable && attempts <= job.retry.max {
            shared.sink.emit(Event::Note {
                job: index,
                name: name.clone(),
                text: format!("retrying (attempt {} of {})", attempts + 1, job.retry.max + 1),
            });
            continue;
        }
        break ending;
    };
    if ending == Ending::TimedOut {
        shared.sink.emit(Event::Note {
            job: index,
            name: name.clone(),
            text: format!("job timed out after {}", job.timeout.clone().unwrap_or_default()),
        });
    }
    let (status, exit_code) = match ending {
        Ending::Exited(0) => (JobStatus::Success, Some(0)),
        Ending::Exited(code) if planned.allow_failure.allows(code) => (JobStatus::Warning, Some(code)),
        Ending::Exited(code) => (JobStatus::Failed, Some(code)),
        Ending::TimedOut if planned.allow_failure == AllowFailure::Yes => (JobStatus::Warning, None),
        Ending::TimedOut => (JobStatus::Failed, None),
        Ending::Canceled => (JobStatus::Canceled, None),
    };

    // after_script: always, in its own shell, never failing the job.
    let mut after_script_failed = false;
    if !job.after_script.is_empty() {
        let job_status = match status {
            JobStatus::Success | JobStatus::Warning => "success",
            JobStatus::Canceled => "canceled",
            _ => "failed",
        };
        let mut after_env = env.clone();
        after_env.push(("CI_JOB_STATUS".to_owned(), job_status.to_owned()));
        let script_path = scripts_dir.join(format!("{}-after.sh", workspace::dir_name(&name)));
        shared.sink.emit(Event::AfterScript { job: index, name: name.clone() });
        let (_never, not_canceled) = watch::channel(false);
        let mut on_line = |line: Line| match line {
            Line::Command(text) => {
                shared.sink.emit(Event::Command { job: index, name: name.clone(), text: shared.masker.mask(&text) })
            }
            Line::Output(stream, text) => shared.sink.emit(Event::Output {
                job: index,
                name: name.clone(),
                stream,
                line: shared.masker.mask(&text),
            }),
        };
        let invocation = shell::Invocation {
            script_path: &script_path,
            dir: &workspace_dir,
            env: &after_env,
            timeout: Some(Duration::from_secs(300)),
            launcher: &launcher,
        };
        let ending = shell::run(&shell::script(&job.after_script), &invocation, not_canceled, &mut on_line).await;
        after_script_failed = !matches!(ending, Ok(Ending::Exited(0)));
    }

    // Artifacts and caches out, and dotenv reports.
    let succeeded = matches!(status, JobStatus::Success | JobStatus::Warning);
    let mut reported = Vec::new();
    let mut tests: Option<crate::junit::TestReport> = None;
    if let Some(artifacts) = &job.artifacts {
        let wanted = match artifacts.when {
            ArtifactsWhen::OnSuccess => succeeded,
            ArtifactsWhen::OnFailure => !succeeded,
            ArtifactsWhen::Always => true,
        };
        if wanted {
            let lookup = |n: &str| env.iter().rev().find(|(k, _)| k == n).map(|(_, v)| v.clone());
            let mut paths: Vec<String> = artifacts.paths.iter().map(|p| variables::expand(p, &lookup)).collect();
            paths.extend(artifacts.dotenv.iter().chain(&artifacts.junit).map(|p| variables::expand(p, &lookup)));
            let exclude: Vec<String> = artifacts.exclude.iter().map(|p| variables::expand(p, &lookup)).collect();
            let (source, project, state) =
                (workspace_dir.clone(), shared.options.project_dir.clone(), shared.options.state_dir.clone());
            let target = workspace::artifacts_dir(&state, &name);
            let (untracked, tracked) = (artifacts.untracked, shared.files.clone());
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
                workspace::copy_files(&source, &project, &files)?;
                Ok(files.len())
            })
            .await;
            if let Ok(Err(error)) = copied {
                shared.sink.emit(Event::Note {
                    job: index,
                    name: name.clone(),
                    text: format!("saving artifacts failed: {error}"),
                });
            }
            if !artifacts.junit.is_empty() {
                let patterns: Vec<String> = artifacts.junit.iter().map(|p| variables::expand(p, &lookup)).collect();
                let project = shared.options.project_dir.clone();
                for file in workspace::collect(&workspace_dir, &project, &patterns, &[]).unwrap_or_default() {
                    let Ok(xml) = std::fs::read_to_string(workspace_dir.join(&file)) else { continue };
                    match crate::junit::parse(&xml) {
                        Ok(report) => tests.get_or_insert_with(Default::default).merge(report),
                        Err(error) => shared.sink.emit(Event::Note {
                            job: index,
                            name: name.clone(),
                            text: format!("{file}: {error}"),
                        }),
                    }
                }
            }
            for file in &artifacts.dotenv {
                if let Ok(text) = std::fs::read_to_string(workspace_dir.join(variables::expand(file, &lookup))) {
                    reported.extend(parse_dotenv(&text));
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
        if wanted && cache.policy != CachePolicy::Pull {
            let (workspace_dir, project, paths) =
                (workspace_dir.clone(), shared.options.project_dir.clone(), cache.paths.clone());
            let target = workspace::cache_dir(&shared.options.state_dir, key);
            let (untracked, tracked) = (cache.untracked, shared.files.clone());
            let _ = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                let mut files = workspace::collect(&workspace_dir, &project, &paths, &[])?;
                if untracked {
                    let tracked: std::collections::HashSet<&String> = tracked.iter().collect();
                    files.extend(workspace::list_tree(&workspace_dir)?.into_iter().filter(|f| !tracked.contains(f)));
                    files.sort();
                    files.dedup();
                }
                std::fs::create_dir_all(&target)?;
                workspace::copy_files(&workspace_dir, &target, &files)
            })
            .await;
        }
    }
    if !shared.options.keep_workspaces {
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
