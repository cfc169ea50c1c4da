//! The CI service: what the API and the UI call to start, cancel and rerun pipelines and
//! jobs. It answers in [`CiError`]; the handlers only translate.

use super::*;

/// What the CI service answers when it refuses or fails; `crate::error` maps each variant to
/// HTTP in one place.
#[derive(Debug, thiserror::Error)]
pub enum CiError {
    #[error("{what} not found")]
    NotFound { what: &'static str },
    /// The job is not in a state that allows this (playing a job that is not manual).
    #[error("{0}")]
    WrongStatus(String),
    /// The job's pipeline still runs: a job is run again only in a finished pipeline.
    #[error("{0}")]
    PipelineRunning(String),
    #[error(transparent)]
    Store(#[from] opsloop_store::StoreError),
    #[error(transparent)]
    Unavailable(#[from] crate::state::Unavailable),
    /// Something of ours failed; the details are in the log.
    #[error("{0}")]
    Internal(String),
}

/// How a job of a finished pipeline runs again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Again {
    /// A finished job, once more.
    Retry,
    /// A manual job, played.
    Play,
}

/// Runs `job` of the finished `pipeline` again (GitLab's retry and play): reopened in the store
/// (a compare-and-set, so two clicks start it once), then run in the background as `principal`.
pub async fn run_again(
    state: &AppState,
    principal: &crate::auth::Principal,
    project: &Project,
    job: Job,
    pipeline: &Pipeline,
    again: Again,
) -> Result<Job, CiError> {
    let (from, action): (&[StoredJobStatus], &str) = match again {
        Again::Play => (&[StoredJobStatus::Manual], "job.play"),
        Again::Retry => (
            &[StoredJobStatus::Success, StoredJobStatus::Warning, StoredJobStatus::Failed, StoredJobStatus::Canceled],
            "job.retry",
        ),
    };
    if !from.contains(&job.status) {
        let what = match again {
            Again::Play => "only a manual job can be played",
            Again::Retry => "only a finished job can be retried",
        };
        return Err(CiError::WrongStatus(format!("{what}; job {} is {}", job.id, job.status)));
    }
    if !state.store.reopen_job(job.id, pipeline.id, from, principal.actor(), action).await? {
        return Err(CiError::PipelineRunning(format!(
            "pipeline #{} is {}; wait for it to finish",
            pipeline.id, pipeline.status
        )));
    }
    let mut reopened = job;
    reopened.status = StoredJobStatus::Pending;
    reopened.exit_code = None;
    spawn_job_run(state, project, pipeline, reopened.clone(), &principal.user.username);
    Ok(reopened)
}

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
) -> Result<Pipeline, CiError> {
    let encoded = if variables.is_empty() {
        String::new()
    } else {
        let json = serde_json::to_string(&variables)
            .map_err(|e| CiError::Internal(format!("cannot encode pipeline variables: {e}")))?;
        state
            .vault()?
            .encrypt(&json, VARIABLES_CONTEXT)
            .map_err(|e| CiError::Internal(format!("could not encrypt pipeline variables: {e}")))?
    };
    let request = PipelineRequest { sha: commit.unwrap_or_default().to_owned(), variables: encoded };
    let pipeline = state.store.create_requested_pipeline(project.id, git_ref, source, &request, actor).await?;
    spawn_run(state, project, &pipeline, commit.map(str::to_owned), variables);
    Ok(pipeline)
}

/// Asks a pipeline running in this process to stop: running jobs are ended (their
/// after_script runs), the rest never start. `false` when it is not running here.
/// A pipeline still queued is canceled in the store, so it never starts.
pub async fn cancel(state: &AppState, pipeline_id: i64) -> Result<bool, CiError> {
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
