//! The scheduler: starts each job the moment what it waits for is done (its `needs`, or the
//! earlier stages), within the concurrency limit and `resource_group` locks, and decides from
//! their outcomes whether it runs at all (`when`). Cost per event is linear in the job's edges.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opsloop_pipeline::config::{Config, Job, When};
use opsloop_pipeline::plan::{Plan, PlannedJob};
use tokio::sync::{Mutex, Semaphore, watch};
use tokio::task::JoinSet;

use crate::events::{Event, EventSink, JobOutcome, JobStatus};
use crate::job::{JobSpec, RemoteExecutor, RemoteJob, Workplace, canceled_outcome};
use crate::mask::Masker;
use crate::shell;
use crate::workspace;

pub use crate::job::parse_dotenv;

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub project_dir: PathBuf,
    /// Whether each job's artifacts are copied back into the project (gitlab-ci-local's
    /// `# @NoArtifactsToSource` and `--no-artifacts-to-source` turn it off).
    pub artifacts_to_source: ArtifactsToSource,
    /// `.opsloop` inside the project: builds, artifacts, caches, scripts.
    pub state_dir: PathBuf,
    /// Files of the project the workspaces leave out (`--ignores-file`).
    pub ignores: workspace::Ignores,
    pub concurrency: usize,
    /// Keep each job's workspace after it ends (`--shell-isolation` kept for inspection).
    pub keep_workspaces: bool,
    /// Which of the project's files a job starts with.
    pub source: SourceFiles,
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
    /// Another place to run jobs (the server's agents); jobs it does not take run here.
    pub remote: Option<Arc<dyn RemoteExecutor>>,
    /// Cancel switches of the running jobs, for canceling one job alone.
    pub job_switches: Option<Arc<JobSwitches>>,
    /// A second limit (a project's own), held by every job here or remote while it runs.
    pub project_slots: Option<Arc<Semaphore>>,
    /// Where caches live when not in `state_dir` (the server keeps one per project, so they
    /// outlive a pipeline's checkout).
    pub cache_root: Option<PathBuf>,
    /// A cache store shared with other machines, behind the local caches.
    pub shared_cache: Option<Arc<dyn crate::job::SharedCache>>,
    /// Jobs do not inherit this process's environment (the server's holds its own secrets).
    pub clean_env: bool,
}

/// The cancel switch of each started job, by plan index, and the jobs canceled before they
/// started (they end as canceled the moment they would start).
/// Whether artifacts are copied back into the project after each job (gitlab-ci-local does).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ArtifactsToSource {
    #[default]
    Always,
    /// For every job but these (by their name in the file).
    Except(Vec<String>),
    Never,
}

#[derive(Debug, Default)]
pub struct JobSwitches(std::sync::Mutex<Switches>);

#[derive(Debug, Default)]
struct Switches {
    running: HashMap<usize, watch::Sender<bool>>,
    canceled_early: std::collections::HashSet<usize>,
    finished: std::collections::HashSet<usize>,
}

impl JobSwitches {
    fn insert(&self, index: usize, switch: watch::Sender<bool>) {
        if let Ok(mut switches) = self.0.lock() {
            if switches.canceled_early.contains(&index) {
                let _ = switch.send(true);
            }
            switches.running.insert(index, switch);
        }
    }

    fn remove(&self, index: usize) {
        if let Ok(mut switches) = self.0.lock() {
            switches.running.remove(&index);
            switches.finished.insert(index);
        }
    }

    /// Cancels the job: at once if it started (or waits for a slot or lock), else when it
    /// would start. `false` when it has finished already.
    pub fn cancel(&self, index: usize) -> bool {
        let Ok(mut switches) = self.0.lock() else { return false };
        if let Some(switch) = switches.running.get(&index) {
            return switch.send(true).is_ok();
        }
        if switches.finished.contains(&index) {
            return false;
        }
        switches.canceled_early.insert(index);
        true
    }
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

/// The state folder as the project's file list names it (it may be nested: `ci/.state`).
pub(crate) fn state_name(options: &RunOptions) -> String {
    options
        .state_dir
        .strip_prefix(&options.project_dir)
        .ok()
        .or_else(|| options.state_dir.file_name().map(Path::new))
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default()
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

/// A job task's end: its index, outcome, dotenv variables, and whether it reported its end itself.
type Finished = (usize, JobOutcome, Vec<(String, String)>, bool);

struct Shared {
    config: Config,
    plan: Plan,
    options: RunOptions,
    sink: Arc<dyn EventSink>,
    masker: Masker,
    resource_groups: Arc<ResourceGroups>,
    /// Where and how each job runs on this machine.
    workplace: Workplace,
}

/// Which files of the project a job's workspace starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceFiles {
    /// Tracked files as the working tree has them, edits included (gitlab-ci-local's choice,
    /// and `opsloop run`'s default).
    Tracked,
    /// Tracked files and the untracked ones git does not ignore (`--dirty`; a server checkout).
    WorkingTree,
    /// The files of the last commit, whatever the working tree holds (`--committed`: what the
    /// server would run).
    Committed,
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
    let state_name = state_name(&options);
    let snapshot = options.state_dir.join("source");
    let committed = if let Some(prepared) = &options.prepared_source {
        let prepared = prepared.clone();
        Some(
            tokio::task::spawn_blocking(move || workspace::list_tree(&prepared))
                .await
                .map_err(std::io::Error::other)??,
        )
    } else if options.source != SourceFiles::Committed {
        None
    } else {
        let (project, target) = (options.project_dir.clone(), snapshot.clone());
        tokio::task::spawn_blocking(move || workspace::snapshot_head(&project, &target))
            .await
            .map_err(std::io::Error::other)??
    };
    let (source_root, files) = match committed {
        Some(files) => (options.prepared_source.clone().unwrap_or(snapshot), files),
        None => {
            let files = match options.source {
                SourceFiles::Tracked => workspace::tracked_files(&options.project_dir, &state_name)?,
                _ => workspace::project_files(&options.project_dir, &state_name)?,
            };
            (options.project_dir.clone(), files)
        }
    };
    let mut files = files;
    files.retain(|file| !options.ignores.ignores(file));
    let masker = Masker::new(options.masked.iter().cloned());
    let count = plan.jobs.len();
    let concurrency = options.concurrency.max(1);
    let semaphore = options.shared_slots.clone().unwrap_or_else(|| Arc::new(Semaphore::new(concurrency)));
    let resource_groups = options.shared_resource_groups.clone().unwrap_or_default();
    let workplace = Workplace {
        state_dir: options.state_dir.clone(),
        cache_root: options.cache_root.clone().unwrap_or_else(|| options.state_dir.clone()),
        source_root,
        files: Arc::new(files),
        project_dir: options.project_dir.clone(),
        copy_back: !matches!(options.artifacts_to_source, ArtifactsToSource::Never),
        isolation: options.isolation,
        container_engine: options.container_engine.clone(),
        force_shell: options.force_shell,
        keep_workspaces: options.keep_workspaces,
        shared_cache: options.shared_cache.clone(),
        clean_env: options.clean_env,
    };
    let shared = Arc::new(Shared { config, plan, options, sink, masker, resource_groups, workplace });

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
    // The place in line for a slot of the job started last (see `Turn`).
    let mut last_turn: Option<tokio::sync::oneshot::Receiver<()>> = None;
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
            let turn = Turn::after(&mut last_turn);
            running.spawn(async move {
                // The job stops when the pipeline is canceled or it alone is (`JobSwitches`).
                let (switch, job_cancel) = watch::channel(false);
                if let Some(switches) = &shared.options.job_switches {
                    switches.insert(index, switch.clone());
                }
                let forward = async {
                    self::canceled(cancel).await;
                    let _ = switch.send(true);
                    std::future::pending::<()>().await
                };
                let (outcome, env, reported) = tokio::select! {
                    ended = run_job(&shared, index, inherited, semaphore, job_cancel, turn) => ended,
                    () = forward => (canceled_outcome(Instant::now()), Vec::new(), false),
                };
                if let Some(switches) = &shared.options.job_switches {
                    switches.remove(index);
                }
                (index, outcome, env, reported)
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
        let (index, outcome, env, reported) = match joined {
            Ok(result) => result,
            Err(error) => return Err(std::io::Error::other(format!("a job task failed: {error}"))),
        };
        if !reported {
            shared.sink.emit(Event::JobFinished {
                job: index,
                name: shared.plan.jobs[index].name.clone(),
                outcome: outcome.clone(),
            });
        }
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

/// The job's variables in rising precedence (see [`crate::job::JobSpec::layers`]).
fn job_layers(shared: &Shared, index: usize, inherited: &[(String, String)]) -> Vec<(String, String, bool)> {
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
        (crate::job::PROJECT_DIR, String::new()),
        (crate::job::BUILDS_DIR, String::new()),
        ("CI_JOB_URL", format!("http://localhost/jobs/{job_id}")),
    ];
    layers.extend(predefined_job.into_iter().map(|(k, v)| (k.to_owned(), v, false)));
    // Global < workflow:rules < the job's own < rules/matrix.
    let own: Vec<(String, String, bool)> = job
        .global_variables
        .iter()
        .chain(&shared.plan.workflow_variables)
        .chain(&job.variables)
        .chain(&planned.extra_variables)
        .map(|variable| (variable.name.clone(), variable.value.clone(), variable.expand))
        .chain(inherited.iter().map(|(k, v)| (k.clone(), v.clone(), false)))
        .collect();
    // The environment's name is expanded with the job's variables first (GitLab does this when
    // it creates the job), so its slug, and the variables scoped to it, see the real name.
    // The variables it names are resolved first: `ENV: $TARGET` names the environment TARGET holds.
    let environment = job.environment.as_ref().map(|environment| {
        let known: Vec<(String, String, bool)> = layers.iter().chain(own.iter()).cloned().collect();
        let resolved = opsloop_pipeline::variables::resolve(&known, &|_| None);
        let lookup = |name: &str| resolved.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        (opsloop_pipeline::variables::expand(&environment.name, &lookup), environment)
    });
    if let Some((name, environment)) = &environment {
        layers.push(("CI_ENVIRONMENT_NAME".to_owned(), name.clone(), false));
        layers.push(("CI_ENVIRONMENT_SLUG".to_owned(), environment_slug(name), false));
        layers.push((
            "CI_ENVIRONMENT_ACTION".to_owned(),
            environment.action.clone().unwrap_or_else(|| "start".to_owned()),
            false,
        ));
        if let Some(url) = &environment.url {
            layers.push(("CI_ENVIRONMENT_URL".to_owned(), url.clone(), true));
        }
        if let Some(tier) = &environment.deployment_tier {
            layers.push(("CI_ENVIRONMENT_TIER".to_owned(), tier.clone(), false));
        }
    }
    layers.extend(own.iter().cloned());
    let environment = environment.as_ref().map(|(name, _)| name.as_str());
    layers.extend(
        shared
            .options
            .overrides
            .iter()
            .filter(|o| o.environment.as_deref().is_none_or(|pattern| environment_matches(pattern, environment)))
            .map(|o| (o.name.clone(), o.value.clone(), false)),
    );
    layers.retain(|(name, _, _)| !shared.options.unset.contains(name));
    layers
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

/// GitLab's `CI_ENVIRONMENT_SLUG`: lowercase, `-` for anything but a letter or digit, starting
/// with a letter (`env-` otherwise), no repeated `-`; at most 24 characters, and when the name
/// had to change (or is too long), 17 of them, `-` and six characters of the name's SHA-256 in
/// base 36, so two names never share a slug.
pub fn environment_slug(name: &str) -> String {
    let mut slug: String = name
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' })
        .collect();
    if !slug.starts_with(|c: char| c.is_ascii_lowercase()) {
        slug = format!("env-{slug}");
    }
    let mut squeezed = String::with_capacity(slug.len());
    for c in slug.chars() {
        if !(c == '-' && squeezed.ends_with('-')) {
            squeezed.push(c);
        }
    }
    if squeezed.len() > 24 || squeezed != name {
        let short: String = squeezed.chars().take(17).collect();
        format!("{short}-{}", base36_suffix(name))
    } else {
        squeezed.trim_end_matches('-').to_owned()
    }
}

/// The last six base-36 digits of the SHA-256 of `name` read as one big number.
fn base36_suffix(name: &str) -> String {
    use sha2::Digest;
    let mut number: Vec<u8> = sha2::Sha256::digest(name.as_bytes()).to_vec();
    let mut digits = Vec::new();
    // Long division by 36, six times: only the six lowest digits are wanted.
    for _ in 0..6 {
        let mut remainder: u32 = 0;
        for byte in &mut number {
            let value = (remainder << 8) | u32::from(*byte);
            *byte = u8::try_from(value / 36).unwrap_or(u8::MAX);
            remainder = value % 36;
        }
        digits.push(char::from_digit(remainder, 36).unwrap_or('0'));
    }
    digits.iter().rev().collect()
}

/// Waits for `cancel` to turn true (or its sender to go away).
async fn canceled(mut cancel: watch::Receiver<bool>) {
    while !*cancel.borrow() {
        if cancel.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// A job's place in the queue for slots: jobs line up for a slot in the order the scheduler
/// started them (so `--concurrency 1` runs them in file order), each passing its place on once
/// it is in line. A job that first waits for something else (its `start_in`, a resource group,
/// the project's own limit, another machine) passes its place on before that wait. Dropping it
/// passes it too, so a job that ends early never holds the others back.
pub(crate) struct Turn {
    wait: Option<tokio::sync::oneshot::Receiver<()>>,
    next: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Turn {
    /// The next job's place, after `previous` (the last one handed out).
    fn after(previous: &mut Option<tokio::sync::oneshot::Receiver<()>>) -> Turn {
        let (next, following) = tokio::sync::oneshot::channel();
        Turn { wait: previous.replace(following), next: Some(next) }
    }

    /// Waits until the jobs before this one are in line (or gone).
    async fn wait(&mut self) {
        if let Some(wait) = self.wait.take() {
            let _ = wait.await;
        }
    }

    fn pass(&mut self) {
        if let Some(next) = self.next.take() {
            let _ = next.send(());
        }
    }

    /// Gives up the place: waits for the jobs before, then lets the next one go.
    async fn step_aside(&mut self) {
        self.wait().await;
        self.pass();
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.pass();
    }
}

async fn run_job(
    shared: &Arc<Shared>,
    index: usize,
    inherited: Vec<(String, String)>,
    semaphore: Arc<Semaphore>,
    cancel: watch::Receiver<bool>,
    mut turn: Turn,
) -> (JobOutcome, Vec<(String, String)>, bool) {
    let planned: &PlannedJob = &shared.plan.jobs[index];
    let job: &Job = &shared.config.jobs[planned.config_index];
    let name = planned.name.clone();
    let started = Instant::now();
    // Waiting (start_in, the resource group, a free slot) never holds a slot, and ends on cancel.
    if planned.when == When::Delayed
        && let Some(delay) = planned.start_in.as_deref().and_then(shell::parse_duration)
    {
        shared.sink.emit(Event::Delayed { job: index, name: name.clone(), seconds: delay.as_secs() });
        turn.step_aside().await;
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = canceled(cancel.clone()) => return (canceled_outcome(started), Vec::new(), false),
        }
    }
    let _resource_lock = match &job.resource_group {
        Some(group) => {
            turn.step_aside().await;
            let lock = shared.resource_groups.lock().await.entry(group.clone()).or_default().clone();
            tokio::select! {
                guard = lock.lock_owned() => Some(guard),
                () = canceled(cancel.clone()) => return (canceled_outcome(started), Vec::new(), false),
            }
        }
        None => None,
    };
    if let Some(trigger) = &job.trigger {
        // A trigger job only waits for its child, whose jobs take slots of their own: holding
        // one here could starve the child when the slots are shared.
        turn.step_aside().await;
        if *cancel.borrow() {
            return (canceled_outcome(started), Vec::new(), false);
        }
        shared.sink.emit(Event::JobStarted { job: index, name: name.clone(), executor: "child pipeline".to_owned() });
        let variables: Vec<(String, String)> =
            job.variables.iter().map(|v| (v.name.clone(), v.value.clone())).collect();
        let outcome =
            crate::trigger::run_child(&name, index, trigger, &shared.options, variables, shared.sink.clone(), cancel)
                .await;
        return (outcome, Vec::new(), false);
    }
    let layers = job_layers(shared, index, &inherited);
    let environment = job.environment.as_ref().map(|environment| {
        let name = layers.iter().find(|(k, _, _)| k == "CI_ENVIRONMENT_NAME").map(|(_, v, _)| v.clone());
        (name.unwrap_or_else(|| environment.name.clone()), environment.url.clone())
    });
    let spec = JobSpec {
        index,
        name: name.clone(),
        image: job.image.clone(),
        commands: job.before_script.iter().chain(&job.script).cloned().collect(),
        after_script: job.after_script.clone(),
        layers,
        environment,
        timeout: job.timeout.clone(),
        retry: job.retry.clone(),
        allow_failure: planned.allow_failure.clone(),
        coverage: job.coverage.clone(),
        artifacts: job.artifacts.clone(),
        caches: job.cache.clone(),
        masked: shared.options.masked.clone(),
        upstream: planned.artifacts_from.iter().map(|source| shared.plan.jobs[*source].name.clone()).collect(),
        producers: planned
            .artifacts_from
            .iter()
            .map(|source| &shared.plan.jobs[*source])
            .filter(|source| shared.config.jobs[source.config_index].artifacts.is_some())
            .map(|source| source.name.clone())
            .collect(),
        file_variables: Vec::new(),
        artifacts_to_source: match &shared.options.artifacts_to_source {
            ArtifactsToSource::Except(names) if names.contains(&job.name) => Some(false),
            _ => None,
        },
    };
    let upstream: Vec<PathBuf> =
        spec.upstream.iter().map(|name| workspace::artifacts_dir(&shared.options.state_dir, name)).collect();
    // The project's own limit holds for its jobs wherever they run.
    let _project_permit = match &shared.options.project_slots {
        Some(slots) => {
            turn.step_aside().await;
            tokio::select! {
                permit = slots.clone().acquire_owned() => permit.ok(),
                () = canceled(cancel.clone()) => return (canceled_outcome(started), Vec::new(), false),
            }
        }
        None => None,
    };
    // A job another machine takes never holds one of this machine's slots.
    if let Some(remote) = shared.options.remote.as_ref().filter(|remote| remote.takes(&job.tags)) {
        turn.step_aside().await;
        if *cancel.borrow() {
            return (canceled_outcome(started), Vec::new(), false);
        }
        let request = RemoteJob {
            spec,
            tags: job.tags.clone(),
            upstream,
            artifacts_dir: workspace::artifacts_dir(&shared.options.state_dir, &name),
            workplace: shared.workplace.clone(),
        };
        let (outcome, env) = remote.run(request, shared.sink.clone(), cancel).await;
        return (outcome, env, false);
    }
    tokio::select! {
        () = turn.wait() => {}
        () = canceled(cancel.clone()) => return (canceled_outcome(started), Vec::new(), false),
    }
    // In line (the semaphore queues waiters in the order they first ask), then the next job may
    // line up behind.
    let mut acquire = std::pin::pin!(semaphore.acquire_owned());
    let first = std::future::poll_fn(|cx| std::task::Poll::Ready(acquire.as_mut().poll(cx))).await;
    turn.pass();
    let _permit = match first {
        std::task::Poll::Ready(permit) => permit.ok(),
        std::task::Poll::Pending => tokio::select! {
            permit = acquire => permit.ok(),
            () = canceled(cancel.clone()) => return (canceled_outcome(started), Vec::new(), false),
        },
    };
    if *cancel.borrow() {
        return (canceled_outcome(started), Vec::new(), false);
    }
    let (outcome, env) =
        crate::job::execute(&spec, &shared.workplace, &upstream, &shared.masker, shared.sink.as_ref(), cancel).await;
    // Reported while the job still holds its slot: with `--concurrency 1` the next job's start
    // never comes before this one's end.
    shared.sink.emit(Event::JobFinished { job: index, name: planned.name.clone(), outcome: outcome.clone() });
    (outcome, env, true)
}

#[cfg(test)]
mod slug_tests {
    use super::environment_slug;

    #[test]
    fn environment_slugs_are_gitlabs() {
        // Seen from gitlab-ci-local's cases, which follow GitLab's `Gitlab::Slug::Environment`.
        assert_eq!(environment_slug("Stage Domain"), "stage-domain-ip33nk");
        assert_eq!(environment_slug("stage-domain-foobar-long-string"), "stage-domain-foob-yafktx");
        assert_eq!(environment_slug("production"), "production");
        assert!(environment_slug("1st").starts_with("env-1st-"));
    }
}
