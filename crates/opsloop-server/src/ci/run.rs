//! Running a pipeline on the server: the checkout at its commit, planning with the pipeline
//! engine, the runner on this machine (or agents), slots and resource groups, auto-cancel,
//! and running one job again with its upstream artifacts.

use super::*;

pub(super) fn spawn_run(
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

pub(super) struct Checkout {
    pub(super) root: PathBuf,
    pub(super) files: Vec<String>,
}

impl FileSource for Checkout {
    fn read(&self, path: &str) -> Result<String, String> {
        std::fs::read_to_string(self.root.join(path.trim_start_matches('/'))).map_err(|e| e.to_string())
    }
    fn files(&self) -> Vec<String> {
        self.files.clone()
    }
}

pub(super) async fn run(
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
pub(super) async fn execute(
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
    if planned.prevented_by_workflow {
        return Err(plan::NO_PIPELINE.to_owned());
    }
    if let Some(blocked) = planned.unplayed_manual_need() {
        return Err(format!("{} cannot run:\n{}", project.pipeline_file, render(&[blocked])));
    }
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
        // As `opsloop run` does by default, so the same file behaves the same here.
        artifacts_to_source: opsloop_runner::ArtifactsToSource::Always,
        project_dir: source_dir.clone(),
        state_dir: source_dir.join(".opsloop"),
        ignores: opsloop_runner::workspace::Ignores::default(),
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
pub(super) fn project_slots(state: &AppState, project_id: i64, limit: i64) -> Option<Arc<tokio::sync::Semaphore>> {
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
pub(super) async fn auto_cancel_older(state: &AppState, project: &Project, newer: &Pipeline) {
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
pub(super) async fn restore_upstream_artifacts(
    state: &AppState,
    pipeline_id: i64,
    upstream: &[String],
    state_dir: &Path,
) -> Result<(), String> {
    if upstream.is_empty() {
        return Ok(());
    }
    let jobs = state.store.jobs_of(pipeline_id).await.map_err(|e| e.to_string())?;
    let objects = state.objects().map_err(|e| e.to_string())?;
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

/// How long a job's artifacts are kept, in milliseconds; `None`: `expire_in: never`.
pub(super) fn artifacts_keep_ms(job: &opsloop_pipeline::config::Job, default_seconds: u64) -> Option<i64> {
    let seconds = match job.artifacts.as_ref().and_then(|a| a.expire_in.as_deref()) {
        Some(text) if text.trim().eq_ignore_ascii_case("never") => return None,
        Some(text) => opsloop_runner::shell::parse_duration(text).map_or(default_seconds, |d| d.as_secs()),
        None => default_seconds,
    };
    Some(i64::try_from(seconds.saturating_mul(1000)).unwrap_or(i64::MAX))
}

/// What the sink needs to keep each job's artifacts in the object store when it ends.
pub(super) struct ArtifactUploads {
    pub(super) objects: crate::objects::ObjectStorage,
    pub(super) state_dir: PathBuf,
    /// Job names by plan index (artifact directories are named after them).
    pub(super) names: Vec<String>,
    pub(super) keep_ms: Vec<Option<i64>>,
    pub(super) project_id: i64,
    pub(super) pipeline_id: i64,
}

impl ArtifactUploads {
    /// Stores the job's artifacts, if it saved any; returns a line for its log on failure.
    pub(super) async fn upload(&self, store: &Store, index: usize, job_id: i64) -> Option<String> {
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
