//! After a restart: pipelines left queued start as requested; pipelines left running are
//! resumed when GitLab would retry their jobs (`runner_system_failure`).

use super::*;

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

pub(super) async fn resume_one(
    state: &AppState,
    pipeline_id: i64,
    interrupted: &[(i64, StoredJobStatus)],
) -> Result<(), String> {
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
