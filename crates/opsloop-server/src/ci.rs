//! Server-side CI: a pipeline asked for through the API is recorded, its repository checked
//! out at the ref, its file loaded and planned by the same engine `opsloop run` uses, and run by
//! the same runner on this machine, with statuses and logs written to the store as they happen.
//!
//! What a pipeline was asked to run (the pushed commit, the trigger's variables, encrypted) is
//! stored with it, so a pipeline still queued when the server stops starts after the restart.
//!
//! Jobs with tags (or all, with `ci.executor = "agents"`) run on agents: see `agents.rs`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use opsloop_core::{JobStatus as StoredJobStatus, PipelineStatus};
use opsloop_pipeline::config::{self, FileSource};
use opsloop_pipeline::plan::{self, PlanOptions};
use opsloop_runner::{Event, EventSink, JobStatus, RunOptions, Stream};
use opsloop_store::{Actor, Job, Pipeline, PipelineRequest, Project, Store};
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::state::AppState;

/// Starts a pipeline of `project` at `git_ref` and returns its record at once; it runs in the
/// background.
pub async fn trigger(
    state: &AppState,
    project: &Project,
    git_ref: &str,
    commit: Option<&str>,
    source: &str,
    variables: Vec<(String, String)>,
    actor: Actor<'_>,
) -> Result<Pipeline, ApiError> {
    let encoded = if variables.is_empty() {
        String::new()
    } else {
        let json = serde_json::to_string(&variables).map_err(|_| ApiError::internal())?;
        state.vault()?.encrypt(&json, VARIABLES_CONTEXT).map_err(|error| {
            tracing::error!(%error, "could not encrypt pipeline variables");
            ApiError::internal()
        })?
    };
    let request = PipelineRequest { sha: commit.unwrap_or_default().to_owned(), variables: encoded };
    let pipeline = state.store.create_requested_pipeline(project.id, git_ref, source, &request, actor).await?;
    spawn_run(state, project, &pipeline, commit.map(str::to_owned), variables);
    Ok(pipeline)
}

/// The encryption context of stored pipeline variables.
const VARIABLES_CONTEXT: &str = "pipeline-variables";

/// Starts the pipelines an earlier process left queued, as they were requested; returns how many.
pub async fn resume_queued(state: &AppState) -> usize {
    let queued = match state.store.queued_pipelines().await {
        Ok(queued) => queued,
        Err(error) => {
            tracing::error!(%error, "could not read the queued pipelines");
            return 0;
        }
    };
    let mut resumed = 0;
    for (pipeline, request) in queued {
        let project = match state.store.project_by_id(pipeline.project_id).await {
            Ok(Some(project)) => project,
            // Deleting a project deletes its pipelines, so this is a race with that delete.
            Ok(None) => continue,
            Err(error) => {
                tracing::error!(pipeline = pipeline.id, %error, "could not read a queued pipeline's project");
                continue;
            }
        };
        let variables = decode_variables(state, &request.variables);
        match variables {
            Ok(variables) => {
                let commit = (!request.sha.is_empty()).then_some(request.sha);
                spawn_run(state, &project, &pipeline, commit, variables);
                resumed += 1;
            }
            Err(message) => {
                let message = format!("its variables could not be read after the restart: {message}");
                logged(
                    state.store.finish_pipeline(pipeline.id, PipelineStatus::Failed, &message).await,
                    "finish pipeline",
                );
            }
        }
    }
    resumed
}

fn spawn_run(
    state: &AppState,
    project: &Project,
    pipeline: &Pipeline,
    commit: Option<String>,
    variables: Vec<(String, String)>,
) {
    let (state, project, record) = (state.clone(), project.clone(), pipeline.clone());
    tokio::spawn(async move {
        let id = record.id;
        if let Err(message) = run(&state, &project, &record, commit, variables).await {
            tracing::warn!(pipeline = id, %message, "pipeline could not run");
            if let Err(error) = state.store.finish_pipeline(id, PipelineStatus::Failed, &message).await {
                tracing::error!(pipeline = id, %error, "could not record the pipeline's failure");
            }
        }
    });
}

/// Asks a pipeline running in this process to stop: running jobs are ended (their
/// after_script runs), the rest never start. `false` when it is not running here.
/// A pipeline still queued is canceled in the store, so it never starts.
pub async fn cancel(state: &AppState, pipeline_id: i64) -> Result<bool, ApiError> {
    let signalled = state
        .ci
        .running_pipelines
        .lock()
        .ok()
        .and_then(|running| running.get(&pipeline_id).map(|pipeline| pipeline.cancel.send(true).is_ok()))
        .unwrap_or(false);
    if signalled {
        return Ok(true);
    }
    Ok(state.store.cancel_queued_pipeline(pipeline_id).await?)
}

struct Checkout {
    root: PathBuf,
    files: Vec<String>,
}

impl FileSource for Checkout {
    fn read(&self, path: &str) -> Result<String, String> {
        std::fs::read_to_string(self.root.join(path.trim_start_matches('/'))).map_err(|e| e.to_string())
    }
    fn files(&self) -> Vec<String> {
        self.files.clone()
    }
}

async fn run(
    state: &AppState,
    project: &Project,
    pipeline: &Pipeline,
    commit: Option<String>,
    variables: Vec<(String, String)>,
) -> Result<(), String> {
    let _slot = state.ci.pipeline_slots.acquire().await.map_err(|_| "the server is shutting down".to_owned())?;
    // Claimed in the store (created → pending) so a pipeline runs once however many times it is
    // handed to a runner: already claimed, or canceled while queued, it is left alone.
    if !state.store.claim_pipeline(pipeline.id).await.map_err(|e| e.to_string())? {
        tracing::debug!(pipeline = pipeline.id, "pipeline already claimed; not run again");
        return Ok(());
    }
    execute(state, project, pipeline, commit, variables, None, None).await
}

/// Runs a pipeline (`only: None`) or some of its jobs again (`only: Some(jobs)`: a retry, a
/// played manual job: its upstream jobs' stored artifacts are restored first).
async fn execute(
    state: &AppState,
    project: &Project,
    pipeline: &Pipeline,
    commit: Option<String>,
    variables: Vec<(String, String)>,
    only: Option<&[Job]>,
    acting_user: Option<&str>,
) -> Result<(), String> {
    let dir = match only {
        None => state.config.data_dir.join("pipelines").join(pipeline.id.to_string()),
        Some(jobs) => state.config.data_dir.join("pipelines").join(format!(
            "{}-job-{}",
            pipeline.id,
            jobs.first().map_or(0, |j| j.id)
        )),
    };
    let source_dir = dir.join("source");
    let sha = crate::mirror::checkout(
        state,
        project.id,
        &project.repo_url,
        &pipeline.git_ref,
        commit.as_deref(),
        &source_dir,
    )
    .await?;
    let files = opsloop_runner::workspace::project_files(&source_dir, ".opsloop").map_err(|e| e.to_string())?;
    let predefined = predefined(state, project, pipeline, &sha, &source_dir).await;
    let lookup = |name: &str| predefined.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let source = Checkout { root: source_dir.clone(), files: files.clone() };
    let loaded = config::load(&source, &project.pipeline_file, &lookup);
    let render = |diagnostics: &[opsloop_pipeline::diagnostic::Diagnostic]| -> String {
        diagnostics.iter().filter(|d| d.is_error()).map(|d| loaded.sources.render(d)).collect::<Vec<_>>().join("\n")
    };
    if loaded.has_errors() {
        return Err(format!("{} is invalid:\n{}", project.pipeline_file, render(&loaded.diagnostics)));
    }
    let mut secrets = project_variables(state, project, pipeline, &dir).await?;
    // The token acts for a person: whoever asked for a rerun, or whoever started the pipeline
    // from the API or the web UI. Other sources (pushes, webhooks, schedules, triggers) name
    // no person it could act for: "" gets a developer's rights in the project.
    let acting_user = match acting_user {
        Some(user) => user,
        None if matches!(pipeline.source.as_str(), "api" | "web") => pipeline.created_by.as_str(),
        None => "",
    };
    let pipeline_token = pipeline_token(state, project, pipeline, acting_user, &mut secrets).await?;
    // Project variables, then the pipeline's own: both win over the file's variables.
    let mut given: Vec<(String, String)> = secrets
        .overrides
        .iter()
        .filter(|o| o.environment.is_none())
        .map(|o| (o.name.clone(), o.value.clone()))
        .collect();
    given.extend(variables.iter().cloned());
    let options = PlanOptions { pipeline_variables: given, ..PlanOptions::default() };
    let mut planned = plan::plan(&loaded, &lookup, &files, &options)
        .map_err(|errors| format!("{} is invalid:\n{}", project.pipeline_file, render(&errors)))?;
    let jobs = match only {
        None => {
            let names: Vec<(String, String)> = planned
                .jobs
                .iter()
                .map(|j| (j.name.clone(), planned.stages.get(j.stage).cloned().unwrap_or_default()))
                .collect();
            let jobs = state.store.start_pipeline(pipeline.id, &sha, &names).await.map_err(|e| e.to_string())?;
            let graph: std::collections::BTreeMap<&str, Vec<&str>> = planned
                .jobs
                .iter()
                .filter_map(|j| {
                    let needs = j.needs.as_ref()?;
                    Some((j.name.as_str(), needs.iter().map(|n| planned.jobs[n.job].name.as_str()).collect()))
                })
                .collect();
            let graph = serde_json::to_string(&graph).map_err(|e| e.to_string())?;
            state.store.set_needs_graph(pipeline.id, &graph).await.map_err(|e| e.to_string())?;
            // Jobs with an environment, so stopping it can play the deploying pipeline's
            // `on_stop` job.
            let environments: Vec<serde_json::Value> = planned
                .jobs
                .iter()
                .filter_map(|j| {
                    let environment = loaded.jobs[j.config_index].environment.as_ref()?;
                    Some(serde_json::json!({
                        "job": j.name,
                        "environment": environment.name,
                        "action": environment.action,
                        "on_stop": environment.on_stop,
                    }))
                })
                .collect();
            let environments = serde_json::to_string(&environments).map_err(|e| e.to_string())?;
            state.store.set_pipeline_environments(pipeline.id, &environments).await.map_err(|e| e.to_string())?;
            jobs
        }
        Some(chosen) => {
            let names: Vec<String> = chosen.iter().map(|j| j.name.clone()).collect();
            let subset = planned.subset(&names).map_err(|plan::UnknownJob { name }| {
                format!("the pipeline file at this commit no longer plans a job `{name}`")
            })?;
            planned = subset.plan;
            restore_upstream_artifacts(state, pipeline.id, &subset.upstream, &source_dir.join(".opsloop")).await?;
            // In plan order, which `Plan::subset` keeps.
            let mut ordered = Vec::with_capacity(chosen.len());
            for planned_job in planned.jobs.iter().take(chosen.len()) {
                if let Some(job) = chosen.iter().find(|j| j.name == planned_job.name) {
                    ordered.push(job.clone());
                }
            }
            ordered
        }
    };

    let settings = state.store.ci_settings(project.id).await.map_err(|e| e.to_string())?;
    let protected = pipeline.git_ref == project.default_branch;
    let cache_side = if protected { "protected" } else { "non_protected" };
    let job_ids: Vec<i64> = jobs.iter().map(|j| j.id).collect();
    let switches = Arc::new(opsloop_runner::JobSwitches::default());
    let agents = crate::agents::AgentExecutor::new(state.clone(), project.id, protected, pipeline.id, job_ids.clone());
    let uploads = match state.objects() {
        Ok(objects) => Some(ArtifactUploads {
            objects: objects.clone(),
            state_dir: source_dir.join(".opsloop"),
            names: planned.jobs.iter().map(|j| j.name.clone()).collect(),
            keep_ms: planned
                .jobs
                .iter()
                .map(|j| artifacts_keep_ms(&loaded.jobs[j.config_index], state.config.artifacts.default_expire_seconds))
                .collect(),
            project_id: project.id,
            pipeline_id: pipeline.id,
        }),
        Err(_) => None,
    };
    let (sink, writer) = StoreSink::start(state.store.clone(), job_ids, uploads, state.config.ci.max_job_log_bytes);
    let run_options = RunOptions {
        project_dir: source_dir.clone(),
        state_dir: source_dir.join(".opsloop"),
        concurrency: std::thread::available_parallelism().map_or(2, usize::from),
        keep_workspaces: false,
        source: opsloop_runner::pipeline::SourceFiles::WorkingTree,
        prepared_source: None,
        predefined,
        overrides: secrets
            .overrides
            .into_iter()
            .chain(variables.into_iter().map(|(name, value)| opsloop_runner::Override {
                name,
                value,
                environment: None,
            }))
            .collect(),
        unset: Vec::new(),
        masked: secrets.masked,
        pipeline_id: u64::try_from(pipeline.id).unwrap_or(0),
        isolation: opsloop_runner::Isolation::None,
        container_engine: None,
        force_shell: false,
        shared_slots: Some(state.ci.job_slots.clone()),
        shared_resource_groups: state
            .ci
            .resource_groups
            .lock()
            .ok()
            .map(|mut groups| groups.entry(project.id).or_default().clone()),
        remote: Some(Arc::new(agents)),
        job_switches: Some(switches.clone()),
        project_slots: project_slots(state, project.id, settings.max_concurrent_jobs),
        cache_root: Some(state.config.data_dir.join("caches").join(project.id.to_string()).join(cache_side)),
        shared_cache: state.objects().ok().map(|objects| {
            Arc::new(crate::objects::ObjectCache { objects: objects.clone(), project_id: project.id, protected })
                as Arc<dyn opsloop_runner::SharedCache>
        }),
        clean_env: true,
    };
    let (cancel_tx, cancel) = tokio::sync::watch::channel(false);
    let job_index: HashMap<i64, usize> = jobs.iter().enumerate().map(|(index, job)| (job.id, index)).collect();
    let interruptible: Vec<bool> = planned.jobs.iter().map(|j| loaded.jobs[j.config_index].interruptible).collect();
    if only.is_none() && settings.auto_cancel_redundant {
        auto_cancel_older(state, project, pipeline).await;
    }
    if let Ok(mut running) = state.ci.running_pipelines.lock() {
        let entry = RunningPipeline {
            cancel: cancel_tx,
            switches: switches.clone(),
            job_index,
            project_id: project.id,
            git_ref: pipeline.git_ref.clone(),
            interruptible,
        };
        running.insert(pipeline.id, entry);
    }
    let outcome = opsloop_runner::run_pipeline(loaded, planned, run_options, sink.clone(), cancel.clone()).await;
    if let Ok(mut running) = state.ci.running_pipelines.lock() {
        running.remove(&pipeline.id);
    }
    let canceled = *cancel.borrow();
    drop(sink);
    let _ = writer.await;
    if let Err(error) = state.store.delete_pipeline_token(&pipeline_token).await {
        tracing::warn!(pipeline = pipeline.id, %error, "could not delete the pipeline's token; it expires by itself");
    }
    let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
    let outcome = outcome.map_err(|e| format!("the pipeline could not run: {e}"))?;
    if only.is_some() {
        return state.store.settle_pipeline(pipeline.id).await.map(|_| ()).map_err(|e| e.to_string());
    }
    let failed = outcome.jobs.iter().any(|(_, o)| o.status == JobStatus::Failed);
    let any_canceled = outcome.jobs.iter().any(|(_, o)| o.status == JobStatus::Canceled);
    // As on GitLab: a canceled job without a failed one makes the pipeline canceled.
    let status = if canceled || (!failed && any_canceled) {
        PipelineStatus::Canceled
    } else if failed {
        PipelineStatus::Failed
    } else {
        PipelineStatus::Success
    };
    state.store.finish_pipeline(pipeline.id, status, "").await.map_err(|e| e.to_string())?;
    // GitOps: a passing pipeline on the default branch applies its opsloop.yml.
    if status == PipelineStatus::Success && pipeline.git_ref == project.default_branch {
        let (state, project, commit) = (state.clone(), project.clone(), sha.clone());
        tokio::spawn(async move { crate::gitops::apply_after_pipeline(&state, &project, &commit).await });
    }
    Ok(())
}

/// A pipeline running in this process: its cancel switch, and each job's.
pub struct RunningPipeline {
    pub cancel: tokio::sync::watch::Sender<bool>,
    pub switches: Arc<opsloop_runner::JobSwitches>,
    /// Store job id → plan index.
    pub job_index: HashMap<i64, usize>,
    pub project_id: i64,
    pub git_ref: String,
    /// Whether each job (by plan index) may be interrupted by a newer pipeline.
    pub interruptible: Vec<bool>,
}

/// The project's own job slots, made anew when its limit changed; `None` without a limit.
fn project_slots(state: &AppState, project_id: i64, limit: i64) -> Option<Arc<tokio::sync::Semaphore>> {
    let size = usize::try_from(limit).ok().filter(|size| *size > 0)?;
    let mut slots = state.ci.project_slots.lock().ok()?;
    let entry = slots.entry(project_id).or_insert_with(|| (limit, Arc::new(tokio::sync::Semaphore::new(size))));
    if entry.0 != limit {
        *entry = (limit, Arc::new(tokio::sync::Semaphore::new(size)));
    }
    Some(entry.1.clone())
}

/// GitLab's "auto-cancel redundant pipelines": older pipelines of the same project and ref
/// running here are canceled when every job they started is `interruptible` (jobs not yet
/// started never start).
async fn auto_cancel_older(state: &AppState, project: &Project, newer: &Pipeline) {
    let candidates: Vec<(i64, HashMap<i64, usize>, Vec<bool>)> = match state.ci.running_pipelines.lock() {
        Ok(running) => running
            .iter()
            .filter(|(id, p)| **id < newer.id && p.project_id == project.id && p.git_ref == newer.git_ref)
            .map(|(id, p)| (*id, p.job_index.clone(), p.interruptible.clone()))
            .collect(),
        Err(_) => return,
    };
    for (older, job_index, interruptible) in candidates {
        let Ok(jobs) = state.store.jobs_of(older).await else { continue };
        let started = |status: StoredJobStatus| {
            !matches!(
                status,
                StoredJobStatus::Pending
                    | StoredJobStatus::Scheduled
                    | StoredJobStatus::Created
                    | StoredJobStatus::Manual
                    | StoredJobStatus::Skipped
            )
        };
        let all_interruptible = jobs
            .iter()
            .filter(|job| started(job.status))
            .all(|job| job_index.get(&job.id).and_then(|index| interruptible.get(*index)).copied().unwrap_or(false));
        if !all_interruptible {
            continue;
        }
        let signalled = state
            .ci
            .running_pipelines
            .lock()
            .ok()
            .and_then(|running| running.get(&older).map(|p| p.cancel.send(true).is_ok()))
            .unwrap_or(false);
        if signalled {
            tracing::info!(pipeline = older, newer = newer.id, "auto-canceled a redundant pipeline");
            let detail = format!("superseded by pipeline {} on {}", newer.id, newer.git_ref);
            let entry = opsloop_store::NewAuditEntry {
                actor: Actor { name: "opsloop", source_ip: "" },
                action: "pipeline.auto_cancel",
                target: &older.to_string(),
                detail: &detail,
            };
            logged(state.store.append_audit(entry).await, "append audit");
        }
    }
}

/// Unpacks the stored artifacts of this pipeline's jobs named `upstream` where the runner
/// looks for them (`<state_dir>/artifacts/<job>`).
async fn restore_upstream_artifacts(
    state: &AppState,
    pipeline_id: i64,
    upstream: &[String],
    state_dir: &Path,
) -> Result<(), String> {
    if upstream.is_empty() {
        return Ok(());
    }
    let jobs = state.store.jobs_of(pipeline_id).await.map_err(|e| e.to_string())?;
    let objects = state.objects().map_err(|e| e.message)?;
    for name in upstream {
        let Some(job) = jobs.iter().find(|j| &j.name == name) else { continue };
        let Some(stored) = state.store.job_artifacts(job.id).await.map_err(|e| e.to_string())? else { continue };
        let archive = objects.get(&stored.object_key).await.map_err(|e| e.to_string())?;
        let target = opsloop_runner::workspace::artifacts_dir(state_dir, name);
        tokio::task::spawn_blocking(move || crate::objects::unzip_into(&archive, &target))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("the artifacts of `{name}` could not be restored: {e}"))?;
    }
    Ok(())
}

/// Runs one job of a finished pipeline again: a retry, or a manual job played. The job was
/// reopened in the store (`Store::reopen_job`) by the caller; `acting_user` asked for it (its
/// pipeline token acts for them).
pub fn spawn_job_run(state: &AppState, project: &Project, pipeline: &Pipeline, job: Job, acting_user: &str) {
    let (state, project, pipeline) = (state.clone(), project.clone(), pipeline.clone());
    let acting_user = acting_user.to_owned();
    tokio::spawn(async move {
        let variables = match pipeline_variables(&state, pipeline.id).await {
            Ok(variables) => variables,
            Err(message) => {
                logged(state.store.job_finished(job.id, StoredJobStatus::Failed, None).await, "job finished");
                logged(state.store.append_job_log(job.id, 0, &format!("# {message}\n")).await, "append job log");
                logged(state.store.settle_pipeline(pipeline.id).await, "settle pipeline");
                return;
            }
        };
        let commit = (!pipeline.sha.is_empty()).then(|| pipeline.sha.clone());
        let _slot = state.ci.pipeline_slots.acquire().await;
        if let Err(message) = execute(
            &state,
            &project,
            &pipeline,
            commit,
            variables,
            Some(std::slice::from_ref(&job)),
            Some(&acting_user),
        )
        .await
        {
            tracing::warn!(pipeline = pipeline.id, job = job.id, %message, "a job could not run again");
            logged(state.store.append_job_log(job.id, 0, &format!("# {message}\n")).await, "append job log");
            logged(state.store.job_finished(job.id, StoredJobStatus::Failed, None).await, "job finished");
            logged(state.store.settle_pipeline(pipeline.id).await, "settle pipeline");
        }
    });
}

/// Runs again what pipelines interrupted by a crash had not finished, when GitLab would: every
/// job that was running allows `retry: when: runner_system_failure` (or `always`), and no job
/// had failed before the crash (its dependents' fate was already decided). `interrupted` is
/// [`Store::interrupted_jobs`], read before the pipelines were failed. Runs in the background.
pub fn resume_interrupted(state: &AppState, interrupted: Vec<(i64, i64, StoredJobStatus)>) {
    let mut by_pipeline: std::collections::BTreeMap<i64, Vec<(i64, StoredJobStatus)>> = Default::default();
    for (pipeline, job, status) in interrupted {
        by_pipeline.entry(pipeline).or_default().push((job, status));
    }
    for (pipeline_id, jobs) in by_pipeline {
        let state = state.clone();
        tokio::spawn(async move {
            if let Err(message) = resume_one(&state, pipeline_id, &jobs).await {
                tracing::warn!(pipeline = pipeline_id, %message, "an interrupted pipeline was not resumed");
            }
        });
    }
}

async fn resume_one(state: &AppState, pipeline_id: i64, interrupted: &[(i64, StoredJobStatus)]) -> Result<(), String> {
    let running: Vec<i64> =
        interrupted.iter().filter(|(_, s)| *s == StoredJobStatus::Running).map(|(id, _)| *id).collect();
    if running.is_empty() {
        return Ok(());
    }
    let store_error = |e: opsloop_store::StoreError| e.to_string();
    let Some(pipeline) = state.store.pipeline_by_id(pipeline_id).await.map_err(store_error)? else { return Ok(()) };
    let Some(project) = state.store.project_by_id(pipeline.project_id).await.map_err(store_error)? else {
        return Ok(());
    };
    let jobs = state.store.jobs_of(pipeline_id).await.map_err(store_error)?;
    let reopened: Vec<Job> = jobs.iter().filter(|j| interrupted.iter().any(|(id, _)| *id == j.id)).cloned().collect();
    if jobs.iter().any(|j| j.status == StoredJobStatus::Failed && !reopened.iter().any(|r| r.id == j.id)) {
        return Ok(());
    }
    // The retry rules come from the pipeline file at the pipeline's commit.
    let dir = state.config.data_dir.join("pipelines").join(format!("{pipeline_id}-resume-check"));
    let source_dir = dir.join("source");
    let sha = crate::mirror::checkout(
        state,
        project.id,
        &project.repo_url,
        &pipeline.git_ref,
        Some(&pipeline.sha),
        &source_dir,
    )
    .await?;
    let files = opsloop_runner::workspace::project_files(&source_dir, ".opsloop").map_err(|e| e.to_string())?;
    let predefined = predefined(state, &project, &pipeline, &sha, &source_dir).await;
    let lookup = |name: &str| predefined.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let loaded =
        config::load(&Checkout { root: source_dir.clone(), files: files.clone() }, &project.pipeline_file, &lookup);
    let variables = pipeline_variables(state, pipeline_id).await?;
    let options = PlanOptions { pipeline_variables: variables.clone(), ..PlanOptions::default() };
    let planned =
        plan::plan(&loaded, &lookup, &files, &options).map_err(|_| "the pipeline file does not plan".to_owned())?;
    let _ = tokio::fs::remove_dir_all(&dir).await;
    let retries = |job: &Job| {
        planned.jobs.iter().find(|p| p.name == job.name).is_some_and(|p| {
            let retry = &loaded.jobs[p.config_index].retry;
            retry.max >= 1
                && (retry.when.is_empty() || retry.when.iter().any(|w| w == "always" || w == "runner_system_failure"))
        })
    };
    if !reopened.iter().filter(|j| running.contains(&j.id)).all(retries) {
        return Ok(());
    }
    let actor = Actor { name: "opsloop", source_ip: "" };
    let ids: Vec<i64> = reopened.iter().map(|j| j.id).collect();
    if !state.store.reopen_interrupted(pipeline_id, &ids, actor).await.map_err(store_error)? {
        return Ok(());
    }
    tracing::info!(
        pipeline = pipeline_id,
        jobs = ids.len(),
        "resuming an interrupted pipeline (runner_system_failure)"
    );
    let _slot = state.ci.pipeline_slots.acquire().await;
    let commit = Some(pipeline.sha.clone());
    if let Err(message) = execute(state, &project, &pipeline, commit, variables, Some(&reopened), None).await {
        logged(state.store.finish_pipeline(pipeline_id, PipelineStatus::Failed, &message).await, "finish pipeline");
    }
    Ok(())
}

/// The trigger variables a pipeline was started with, decrypted.
async fn pipeline_variables(state: &AppState, pipeline_id: i64) -> Result<Vec<(String, String)>, String> {
    let request = state.store.pipeline_request(pipeline_id).await.map_err(|e| e.to_string())?.unwrap_or_default();
    decode_variables(state, &request.variables)
}

fn decode_variables(state: &AppState, stored: &str) -> Result<Vec<(String, String)>, String> {
    if stored.is_empty() {
        return Ok(Vec::new());
    }
    state
        .vault()
        .map_err(|_| "the secrets vault is not available".to_owned())
        .and_then(|vault| vault.decrypt(stored, VARIABLES_CONTEXT).map_err(|e| e.to_string()))
        .and_then(|json| serde_json::from_str::<Vec<(String, String)>>(&json).map_err(|e| e.to_string()))
}

/// Cancels one running (or waiting) job of a pipeline running here; `false` when it is not.
pub fn cancel_job(state: &AppState, pipeline_id: i64, job_id: i64) -> bool {
    state
        .ci
        .running_pipelines
        .lock()
        .ok()
        .and_then(|running| {
            let pipeline = running.get(&pipeline_id)?;
            let index = *pipeline.job_index.get(&job_id)?;
            Some(pipeline.switches.cancel(index))
        })
        .unwrap_or(false)
}

/// How long a job's artifacts are kept, in milliseconds; `None`: `expire_in: never`.
fn artifacts_keep_ms(job: &opsloop_pipeline::config::Job, default_seconds: u64) -> Option<i64> {
    let seconds = match job.artifacts.as_ref().and_then(|a| a.expire_in.as_deref()) {
        Some(text) if text.trim().eq_ignore_ascii_case("never") => return None,
        Some(text) => opsloop_runner::shell::parse_duration(text).map_or(default_seconds, |d| d.as_secs()),
        None => default_seconds,
    };
    Some(i64::try_from(seconds.saturating_mul(1000)).unwrap_or(i64::MAX))
}

/// What the sink needs to keep each job's artifacts in the object store when it ends.
struct ArtifactUploads {
    objects: crate::objects::ObjectStorage,
    state_dir: PathBuf,
    /// Job names by plan index (artifact directories are named after them).
    names: Vec<String>,
    keep_ms: Vec<Option<i64>>,
    project_id: i64,
    pipeline_id: i64,
}

impl ArtifactUploads {
    /// Stores the job's artifacts, if it saved any; returns a line for its log on failure.
    async fn upload(&self, store: &Store, index: usize, job_id: i64) -> Option<String> {
        let name = self.names.get(index)?;
        let dir = opsloop_runner::workspace::artifacts_dir(&self.state_dir, name);
        if !dir.is_dir() {
            return None;
        }
        let key = crate::objects::artifacts_key(self.project_id, self.pipeline_id, job_id);
        let (size, files) = match self.objects.put_dir(&key, dir).await {
            Ok(stored) => stored,
            Err(error) => {
                tracing::error!(job = job_id, %error, "could not store artifacts");
                return Some(format!("# storing the artifacts failed: {error}"));
            }
        };
        let expire_at = self.keep_ms.get(index).copied().flatten().map(|ms| store.now_ms().saturating_add(ms));
        let size = i64::try_from(size).unwrap_or(i64::MAX);
        let files = i64::try_from(files).unwrap_or(i64::MAX);
        if let Err(error) = store.record_artifacts(job_id, &key, size, files, expire_at).await {
            tracing::error!(job = job_id, %error, "could not record artifacts");
            return Some(format!("# recording the artifacts failed: {error}"));
        }
        None
    }
}

/// How long a pipeline's token lasts at most (it is deleted when the run ends).
const PIPELINE_TOKEN_LIFETIME_MS: i64 = 24 * 3600 * 1000;

/// Makes the run's token and gives it to its jobs (masked): `CI_JOB_TOKEN` as on GitLab,
/// and `OPSLOOP_TOKEN`, `OPSLOOP_SERVER`, `OPSLOOP_PROJECT`, so `opsloop deploy` in a job
/// needs no setup. Returns the token's digest (to delete it when the run ends).
async fn pipeline_token(
    state: &AppState,
    project: &Project,
    pipeline: &Pipeline,
    acting_user: &str,
    secrets: &mut Secrets,
) -> Result<String, String> {
    let token = format!(
        "{}{}",
        crate::auth::PIPELINE_TOKEN_PREFIX,
        crate::auth::credentials::new_secret().map_err(|e| e.to_string())?
    );
    let digest = crate::auth::credentials::digest(&token);
    let record = opsloop_store::PipelineToken {
        pipeline_id: pipeline.id,
        project_id: project.id,
        username: acting_user.to_owned(),
        expires_at: state.store.now_ms() + PIPELINE_TOKEN_LIFETIME_MS,
    };
    state.store.create_pipeline_token(&digest, &record).await.map_err(|e| e.to_string())?;
    let server = server_url(state);
    for (name, value) in [
        ("CI_JOB_TOKEN", token.clone()),
        ("OPSLOOP_TOKEN", token.clone()),
        ("OPSLOOP_SERVER", server),
        ("OPSLOOP_PROJECT", project.name.clone()),
        // This very binary, for jobs on this machine where `opsloop` is not on the PATH.
        ("OPSLOOP_BIN", std::env::current_exe().map(|p| p.display().to_string()).unwrap_or_else(|_| "opsloop".into())),
    ] {
        secrets.overrides.push(opsloop_runner::Override { name: name.to_owned(), value, environment: None });
    }
    secrets.masked.push(token);
    Ok(digest)
}

struct Secrets {
    overrides: Vec<opsloop_runner::Override>,
    masked: Vec<String>,
}

/// The CI/CD variables this pipeline may see, decrypted: the instance's, then the project's
/// (which win: later overrides take precedence); protected ones only on the default branch,
/// file-type ones written to private files, masked ones listed for masking. Their use is
/// recorded in the audit log (names, never values).
async fn project_variables(
    state: &AppState,
    project: &Project,
    pipeline: &Pipeline,
    dir: &Path,
) -> Result<Secrets, String> {
    use crate::api::variables::Owner;
    let instance = state.store.list_instance_variables().await.map_err(|e| e.to_string())?;
    let own = state.store.list_variables(project.id).await.map_err(|e| e.to_string())?;
    let stored = instance
        .into_iter()
        .map(|v| (Owner::Instance, v))
        .chain(own.into_iter().map(|v| (Owner::Project(project.id), v)));
    let protected_ref = pipeline.git_ref == project.default_branch;
    let mut secrets = Secrets { overrides: Vec::new(), masked: Vec::new() };
    let mut used = Vec::new();
    for (owner, variable) in stored {
        if variable.protected && !protected_ref {
            continue;
        }
        let value = crate::api::variables::reveal(state, owner, &variable).map_err(|e| e.message)?;
        if variable.masked {
            secrets.masked.push(value.clone());
        }
        let value = if variable.file {
            let files = dir.join("variables");
            std::fs::create_dir_all(&files).map_err(|e| e.to_string())?;
            let owner_tag = match owner {
                Owner::Instance => "instance",
                Owner::Project(_) => "project",
            };
            let path = files.join(format!(
                "{}-{owner_tag}-{}",
                variable.key,
                crate::auth::credentials::digest(&variable.environment_scope)
            ));
            let _ = std::fs::remove_file(&path);
            opsloop_secure::write_private(&path, value.as_bytes()).map_err(|e| e.to_string())?;
            path.display().to_string()
        } else {
            value
        };
        used.push(variable.key.clone());
        let environment = (variable.environment_scope != "*").then_some(variable.environment_scope);
        secrets.overrides.push(opsloop_runner::Override { name: variable.key, value, environment });
    }
    if !used.is_empty() {
        let detail = format!("pipeline={} keys={}", pipeline.id, used.join(","));
        let entry = opsloop_store::NewAuditEntry {
            actor: Actor { name: &pipeline.created_by, source_ip: "" },
            action: "variable.use",
            target: &project.name,
            detail: &detail,
        };
        state.store.append_audit(entry).await.map_err(|e| e.to_string())?;
    }
    Ok(secrets)
}

/// GitLab's predefined variables for a pipeline of `project` checked out in `checkout`, with
/// the meaning `opsloop run` gives them (`opsloop_pipeline::predefined`): a tag's pipeline
/// has `CI_COMMIT_TAG` and no `CI_COMMIT_BRANCH`, whatever the ref's spelling was.
async fn predefined(
    state: &AppState,
    project: &Project,
    pipeline: &Pipeline,
    sha: &str,
    checkout: &std::path::Path,
) -> Vec<(String, String)> {
    use opsloop_pipeline::predefined::{CommitFacts, PipelineFacts};
    let git_ref = crate::mirror::ref_kind(checkout, &pipeline.git_ref).await;
    let logged = crate::mirror::git(
        checkout,
        &["log", "-1", "--format=%an <%ae>%x00%cI%x00%B", sha, "--"],
        std::time::Duration::from_secs(30),
    )
    .await
    .unwrap_or_default();
    let mut parts = logged.splitn(3, '\0');
    let commit = CommitFacts {
        author: parts.next().unwrap_or_default().to_owned(),
        timestamp: parts.next().unwrap_or_default().to_owned(),
        message: parts.next().unwrap_or_default().to_owned(),
    };
    let base = server_url(state);
    opsloop_pipeline::predefined::variables(&PipelineFacts {
        pipeline_id: pipeline.id,
        source: pipeline.source.clone(),
        sha: sha.to_owned(),
        git_ref,
        commit,
        default_branch: project.default_branch.clone(),
        project_path: project.name.clone(),
        project_id: project.id,
        repository_url: project.repo_url.clone(),
        project_url: format!("{base}/projects/{}", project.name),
        pipeline_url: format!("{base}/projects/{}/pipelines/{}", project.name, pipeline.id),
        user_login: pipeline.created_by.clone(),
        user_email: String::new(),
        user_name: pipeline.created_by.clone(),
    })
}

/// How jobs and people reach this server: its external URL, else the address it listens on.
fn server_url(state: &AppState) -> String {
    match &state.config.external_url {
        Some(url) => url.clone(),
        None => {
            let address = state.bound_address.get().copied().unwrap_or(state.config.listen);
            let host = if address.ip().is_unspecified() { "127.0.0.1".to_owned() } else { address.ip().to_string() };
            format!("http://{host}:{}", address.port())
        }
    }
}

/// Writes runner events to the store in order, on its own task: the runner reports
/// synchronously and must not wait for the database.
#[derive(Clone)]
struct StoreSink {
    events: mpsc::UnboundedSender<Event>,
}

/// Log text is stored in chunks of about this size.
const CHUNK_BYTES: usize = 16 * 1024;

/// A job's log on its way to the store. It stops growing at `limit` (`ci.max_job_log_mib`,
/// 4 MiB by default as GitLab Runner's `output_limit`): a job that prints without end must not
/// fill the disk. The job itself runs on.
struct PendingLog {
    limit: usize,
    text: String,
    next_chunk: i64,
    /// Bytes accepted so far, stored or pending.
    bytes: usize,
    truncated: bool,
}

impl PendingLog {
    fn new(limit: usize) -> Self {
        PendingLog { limit, text: String::new(), next_chunk: 0, bytes: 0, truncated: false }
    }

    /// Adds a line unless the log is full; the first line refused leaves a note instead.
    fn push_line(&mut self, line: &str) {
        if self.truncated {
            return;
        }
        if self.bytes + line.len() + 1 > self.limit {
            self.truncated = true;
            let note = format!(
                "# the job log exceeded {} MiB; the job runs on, but no more output is kept\n",
                self.limit / (1024 * 1024)
            );
            self.bytes += note.len();
            self.text.push_str(&note);
            return;
        }
        self.bytes += line.len() + 1;
        self.text.push_str(line);
        self.text.push('\n');
    }
}

impl StoreSink {
    fn start(
        store: Store,
        job_ids: Vec<i64>,
        uploads: Option<ArtifactUploads>,
        log_limit: usize,
    ) -> (Arc<StoreSink>, tokio::task::JoinHandle<()>) {
        let (events, mut receiver) = mpsc::unbounded_channel::<Event>();
        let writer = tokio::spawn(async move {
            let mut buffers: HashMap<usize, PendingLog> = HashMap::new();
            async fn flush(store: &Store, job_id: i64, buffer: &mut PendingLog) {
                if buffer.text.is_empty() {
                    return;
                }
                let text = std::mem::take(&mut buffer.text);
                let seq = buffer.next_chunk;
                buffer.next_chunk += 1;
                if let Err(error) = store.append_job_log(job_id, seq, &text).await {
                    tracing::error!(job = job_id, %error, "could not store a log chunk");
                }
            }
            // Lines reach the store within half a second, so live views see them.
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
            loop {
                let event = tokio::select! {
                    event = receiver.recv() => match event {
                        Some(event) => event,
                        None => break,
                    },
                    _ = tick.tick() => {
                        for (job, buffer) in buffers.iter_mut() {
                            if let Some(id) = job_ids.get(*job) {
                                flush(&store, *id, buffer).await;
                            }
                        }
                        continue;
                    }
                };
                let (job, line) = match &event {
                    Event::JobStarted { job, .. } => {
                        if let Some(id) = job_ids.get(*job) {
                            logged(store.job_started(*id).await, "job started");
                        }
                        continue;
                    }
                    Event::Command { job, text, .. } => (*job, format!("$ {text}")),
                    Event::Output { job, line, stream: Stream::Stdout, .. } => (*job, line.clone()),
                    Event::Output { job, line, stream: Stream::Stderr, .. } => (*job, line.clone()),
                    Event::Note { job, text, .. } => (*job, format!("# {text}")),
                    Event::AfterScript { job, .. } => (*job, "# running after_script".to_owned()),
                    Event::Delayed { job, seconds, .. } => {
                        if let Some(id) = job_ids.get(*job) {
                            logged(store.job_scheduled(*id).await, "job scheduled");
                        }
                        (*job, format!("# delayed: starting in {seconds}s"))
                    }
                    Event::JobFinished { job, outcome, .. } => {
                        let Some(id) = job_ids.get(*job).copied() else { continue };
                        // Artifacts are stored before the job shows as finished, so a finished
                        // job's artifacts can be downloaded.
                        if let Some(uploads) = &uploads
                            && let Some(line) = uploads.upload(&store, *job, id).await
                        {
                            buffers.entry(*job).or_insert_with(|| PendingLog::new(log_limit)).push_line(&line);
                        }
                        // Flush, but keep the chunk counter: a child pipeline's jobs report under
                        // their trigger job's index, one after another.
                        if let Some(buffer) = buffers.get_mut(job) {
                            flush(&store, id, buffer).await;
                        }
                        let status = match outcome.status {
                            JobStatus::Success => StoredJobStatus::Success,
                            JobStatus::Warning => StoredJobStatus::Warning,
                            JobStatus::Failed => StoredJobStatus::Failed,
                            JobStatus::Skipped => StoredJobStatus::Skipped,
                            JobStatus::Manual => StoredJobStatus::Manual,
                            JobStatus::Canceled => StoredJobStatus::Canceled,
                        };
                        if let Some(tests) = &outcome.tests {
                            let report = opsloop_store::TestReport {
                                passed: i64::from(tests.passed),
                                failed: i64::from(tests.failed),
                                skipped: i64::from(tests.skipped),
                                failures: tests.failures.clone(),
                            };
                            if let Err(error) = store.record_test_report(id, &report).await {
                                tracing::error!(job = id, %error, "could not store a test report");
                            }
                        }
                        // Records the job's `JobFinished` event too (webhooks hear of it there).
                        logged(store.job_finished(id, status, outcome.exit_code.map(i64::from)).await, "job finished");
                        continue;
                    }
                };
                let Some(id) = job_ids.get(job).copied() else { continue };
                let buffer = buffers.entry(job).or_insert_with(|| PendingLog::new(log_limit));
                buffer.push_line(&line);
                if buffer.text.len() >= CHUNK_BYTES {
                    flush(&store, id, buffer).await;
                }
            }
            for (job, buffer) in buffers.iter_mut() {
                if let Some(id) = job_ids.get(*job) {
                    flush(&store, *id, buffer).await;
                }
            }
        });
        (Arc::new(StoreSink { events }), writer)
    }
}

impl EventSink for StoreSink {
    fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }
}

/// A store write whose failure nothing here can undo (the run has moved on, or is ending): it
/// is logged with what it was, never dropped silently. The state it leaves is what a restart
/// repairs (`fail_interrupted`, `resume_queued`).
fn logged<T>(result: Result<T, opsloop_store::StoreError>, what: &str) {
    if let Err(error) = result {
        tracing::error!(%error, write = what, "a store write failed");
    }
}
