//! `/api/v1/projects/{project}/pipelines` and `/api/v1/jobs/{job}`: pipelines run by the server.

use opsloop_core::JobStatus;
use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Page, PageQuery};
use crate::auth::{Principal, ProjectContext};
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use crate::state::AppState;
use crate::views::{rfc3339, validate_branch};

#[derive(Debug, Serialize, ToSchema)]
pub struct PipelineView {
    pub id: i64,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub sha: String,
    /// api, web, push, schedule, …
    pub source: String,
    /// created, running, success, failed, canceled.
    pub status: String,
    pub created_by: String,
    /// Why the pipeline could not run, when it could not.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub error: String,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// Seconds from start to end (absent until it has both).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
}

/// How long a pipeline ran, when it started and ended.
pub fn duration_ms(pipeline: &opsloop_store::Pipeline) -> Option<i64> {
    Some(pipeline.finished_at? - pipeline.started_at?).filter(|ms| *ms >= 0)
}

impl From<opsloop_store::Pipeline> for PipelineView {
    fn from(p: opsloop_store::Pipeline) -> Self {
        let duration_seconds = duration_ms(&p).map(|ms| ms as f64 / 1000.0);
        PipelineView {
            duration_seconds,
            id: p.id,
            git_ref: p.git_ref,
            sha: p.sha,
            source: p.source,
            status: p.status.to_string(),
            created_by: p.created_by,
            error: p.error,
            created_at: rfc3339(p.created_at),
            finished_at: p.finished_at.map(rfc3339),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct JobView {
    pub id: i64,
    pub name: String,
    pub stage: String,
    /// pending, scheduled, running, success, warning, failed, skipped, manual, canceled.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i64>,
    /// The job's artifacts, when it kept some that have not expired.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifacts: Option<ArtifactsView>,
    /// The jobs it `needs`; absent when it waits for the earlier stages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub needs: Option<Vec<String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ArtifactsView {
    /// The zip archive's size.
    pub size_bytes: i64,
    pub files: i64,
    /// Absent: kept until the job is deleted (`expire_in: never`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expire_at: Option<String>,
    /// Where to download them (a zip).
    pub download: String,
}

impl From<&opsloop_store::JobArtifacts> for ArtifactsView {
    fn from(artifacts: &opsloop_store::JobArtifacts) -> Self {
        ArtifactsView {
            size_bytes: artifacts.size_bytes,
            files: artifacts.file_count,
            expire_at: artifacts.expire_at.map(crate::views::rfc3339),
            download: format!("/api/v1/jobs/{}/artifacts", artifacts.job_id),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PipelineDetail {
    #[serde(flatten)]
    pub pipeline: PipelineView,
    pub jobs: Vec<JobView>,
    /// The JUnit reports of its jobs summed (absent when no job reported tests).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tests: Option<TestSummary>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TestSummary {
    pub passed: i64,
    pub failed: i64,
    pub skipped: i64,
    pub failures: Vec<TestFailure>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TestFailure {
    pub job: String,
    /// `classname.name: message`.
    pub case: String,
}

/// Sums a pipeline's job reports; `None` when no job reported tests.
pub fn test_summary(reports: Vec<(String, opsloop_store::TestReport)>) -> Option<TestSummary> {
    if reports.is_empty() {
        return None;
    }
    let mut summary = TestSummary { passed: 0, failed: 0, skipped: 0, failures: Vec::new() };
    for (job, report) in reports {
        summary.passed += report.passed;
        summary.failed += report.failed;
        summary.skipped += report.skipped;
        summary.failures.extend(report.failures.into_iter().map(|case| TestFailure { job: job.clone(), case }));
    }
    Some(summary)
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunPipeline {
    /// Branch, tag or commit; defaults to the project's default branch.
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    /// Variables for this pipeline; they win over the file's own.
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    /// The exact commit to run (a push's new commit); default: the ref's latest.
    pub sha: Option<String>,
    /// `api` (default), `push` (a git hook) or `web`.
    pub source: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct PipelinePath {
    #[allow(dead_code)]
    project: String,
    pipeline: i64,
}

/// Run the project's pipeline at a ref.
#[utoipa::path(post, path = "/api/v1/projects/{project}/pipelines", tag = "pipelines", params(("project" = String, Path)),
    request_body = RunPipeline,
    responses((status = 201, body = PipelineView), (status = 422, body = ErrorBody)))]
pub async fn run(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    ApiJson(input): ApiJson<RunPipeline>,
) -> Result<(StatusCode, ApiJson<PipelineView>), ApiError> {
    let git_ref = input.git_ref.unwrap_or_else(|| context.project.default_branch.clone());
    validate_branch(&git_ref)?;
    for name in input.variables.keys() {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(ApiError::invalid(format!("variable name `{name}` may hold only letters, digits and `_`")));
        }
    }
    if let Some(sha) = &input.sha
        && (sha.len() < 7 || sha.len() > 64 || !sha.chars().all(|c| c.is_ascii_hexdigit()))
    {
        return Err(ApiError::invalid("sha must be a hexadecimal commit id"));
    }
    let source = input.source.as_deref().unwrap_or("api");
    if !matches!(source, "api" | "push" | "web") {
        return Err(ApiError::invalid("source is one of api, push, web"));
    }
    // A ref nobody pushed is refused here, with the ones that exist, rather than becoming a
    // failed pipeline. A push names its commit, which the hook has just sent.
    if input.sha.is_none()
        && let crate::mirror::RefCheck::Missing { known } =
            crate::mirror::check_ref(&state, context.project.id, &context.project.repo_url, &git_ref).await
    {
        let mut shown: Vec<&str> = known.iter().map(String::as_str).take(20).collect();
        if known.len() > shown.len() {
            shown.push("…");
        }
        return Err(ApiError::invalid(format!(
            "`{git_ref}` is no branch, tag or commit of {}; it has: {}",
            context.project.repo_url,
            if shown.is_empty() { "no branches or tags yet".to_owned() } else { shown.join(", ") }
        )));
    }
    let variables = input.variables.into_iter().collect();
    let pipeline = crate::ci::trigger(
        &state,
        &context.project,
        &git_ref,
        input.sha.as_deref(),
        source,
        variables,
        principal.actor(),
    )
    .await?;
    Ok((StatusCode::CREATED, ApiJson(pipeline.into())))
}

/// The project's pipelines, newest first.
#[utoipa::path(get, path = "/api/v1/projects/{project}/pipelines", tag = "pipelines",
    params(("project" = String, Path), PageQuery), responses((status = 200, body = Page<PipelineView>)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(context): Extension<ProjectContext>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<ApiJson<Page<PipelineView>>, ApiError> {
    let page = state.store.list_pipelines(context.project.id, &query.request()).await?;
    Ok(ApiJson(Page::map(page, PipelineView::from)))
}

/// One pipeline with its jobs.
#[utoipa::path(get, path = "/api/v1/projects/{project}/pipelines/{pipeline}", tag = "pipelines",
    params(("project" = String, Path), ("pipeline" = i64, Path)),
    responses((status = 200, body = PipelineDetail), (status = 404, body = ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    Extension(context): Extension<ProjectContext>,
    ApiPath(path): ApiPath<PipelinePath>,
) -> Result<ApiJson<PipelineDetail>, ApiError> {
    let pipeline = state
        .store
        .pipeline_by_id(path.pipeline)
        .await?
        .filter(|p| p.project_id == context.project.id)
        .ok_or_else(|| ApiError::not_found("pipeline"))?;
    let jobs = state.store.jobs_of(pipeline.id).await?;
    let artifacts = state.store.pipeline_artifacts(pipeline.id).await?;
    let graph = needs_graph(&state, pipeline.id).await?;
    let jobs = jobs
        .into_iter()
        .map(|j| JobView {
            artifacts: artifacts.iter().find(|a| a.job_id == j.id).map(ArtifactsView::from),
            needs: graph.get(&j.name).cloned(),
            id: j.id,
            name: j.name,
            stage: j.stage,
            status: j.status.to_string(),
            exit_code: j.exit_code,
        })
        .collect();
    let tests = test_summary(state.store.pipeline_test_reports(pipeline.id).await?);
    Ok(ApiJson(PipelineDetail { pipeline: pipeline.into(), jobs, tests }))
}

/// A job's log as plain text.
#[utoipa::path(get, path = "/api/v1/jobs/{job}/log", tag = "pipelines", params(("job" = i64, Path)),
    responses((status = 200, content_type = "text/plain"), (status = 404, body = ErrorBody)))]
pub async fn log(State(state): State<AppState>, ApiPath(job): ApiPath<i64>) -> Result<Response, ApiError> {
    let text = state.store.job_log(job).await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
}

/// Cancel a pipeline: a queued one never starts; a running one's jobs end (after_script still runs), the rest are skipped.
#[utoipa::path(post, path = "/api/v1/projects/{project}/pipelines/{pipeline}/cancel", tag = "pipelines",
    params(("project" = String, Path), ("pipeline" = i64, Path)),
    responses((status = 202, body = PipelineView), (status = 409, body = ErrorBody)))]
pub async fn cancel(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    ApiPath(path): ApiPath<PipelinePath>,
) -> Result<(StatusCode, ApiJson<PipelineView>), ApiError> {
    let pipeline = state
        .store
        .pipeline_by_id(path.pipeline)
        .await?
        .filter(|p| p.project_id == context.project.id)
        .ok_or_else(|| ApiError::not_found("pipeline"))?;
    if !crate::ci::cancel(&state, pipeline.id).await? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_running",
            format!("pipeline #{} is not running on this server (its status: {})", pipeline.id, pipeline.status),
        ));
    }
    let entry = opsloop_store::NewAuditEntry {
        actor: principal.actor(),
        action: "pipeline.cancel",
        target: &pipeline.id.to_string(),
        detail: &context.project.name,
    };
    state.store.append_audit(entry).await?;
    Ok((StatusCode::ACCEPTED, ApiJson(pipeline.into())))
}

/// A job's artifacts archive and the object store, or 404.
async fn stored_artifacts(state: &AppState, job: i64) -> Result<bytes::Bytes, ApiError> {
    let artifacts = state.store.job_artifacts(job).await?.ok_or_else(|| ApiError::not_found("artifacts"))?;
    state.objects()?.get(&artifacts.object_key).await.map_err(|error| {
        tracing::error!(job, %error, "could not read an artifacts archive");
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "artifact_store", "the artifact store did not answer; try again")
    })
}

/// Download a job's artifacts as a zip archive.
#[utoipa::path(get, path = "/api/v1/jobs/{job}/artifacts", tag = "pipelines", params(("job" = i64, Path)),
    responses((status = 200, content_type = "application/zip"), (status = 404, body = ErrorBody)))]
pub async fn artifacts(State(state): State<AppState>, ApiPath(job): ApiPath<i64>) -> Result<Response, ApiError> {
    let archive = stored_artifacts(&state, job).await?;
    let disposition = format!("attachment; filename=\"artifacts-job-{job}.zip\"");
    Ok(([(header::CONTENT_TYPE, "application/zip".to_owned()), (header::CONTENT_DISPOSITION, disposition)], archive)
        .into_response())
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ArtifactFile {
    pub path: String,
    pub size_bytes: u64,
}

/// The files in a job's artifacts.
#[utoipa::path(get, path = "/api/v1/jobs/{job}/artifacts/files", tag = "pipelines", params(("job" = i64, Path)),
    responses((status = 200, body = Vec<ArtifactFile>), (status = 404, body = ErrorBody)))]
pub async fn artifact_files(
    State(state): State<AppState>,
    ApiPath(job): ApiPath<i64>,
) -> Result<ApiJson<Vec<ArtifactFile>>, ApiError> {
    let archive = stored_artifacts(&state, job).await?;
    let entries = tokio::task::spawn_blocking(move || crate::objects::zip_entries(&archive))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(|error| {
            tracing::error!(job, %error, "an artifacts archive is unreadable");
            ApiError::internal()
        })?;
    Ok(ApiJson(entries.into_iter().map(|(path, size_bytes)| ArtifactFile { path, size_bytes }).collect()))
}

#[derive(Debug, Deserialize)]
pub struct ArtifactFilePath {
    job: i64,
    path: String,
}

/// Download one file of a job's artifacts. Always as an attachment: an artifact is the job's
/// output, and must never run as a page of this site.
#[utoipa::path(get, path = "/api/v1/jobs/{job}/artifacts/raw/{path}", tag = "pipelines",
    params(("job" = i64, Path), ("path" = String, Path, description = "the file's path in the archive")),
    responses((status = 200, content_type = "application/octet-stream"), (status = 404, body = ErrorBody)))]
pub async fn artifact_file(
    State(state): State<AppState>,
    ApiPath(ArtifactFilePath { job, path }): ApiPath<ArtifactFilePath>,
) -> Result<Response, ApiError> {
    let archive = stored_artifacts(&state, job).await?;
    let wanted = path.clone();
    let content = tokio::task::spawn_blocking(move || crate::objects::zip_file(&archive, &wanted))
        .await
        .map_err(|_| ApiError::internal())?
        .map_err(|error| {
            tracing::error!(job, %error, "an artifacts archive is unreadable");
            ApiError::internal()
        })?
        .ok_or_else(|| ApiError::not_found("artifact file"))?;
    let file_name: String = path
        .rsplit('/')
        .next()
        .unwrap_or("artifact")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
        .collect();
    let disposition =
        format!("attachment; filename=\"{}\"", if file_name.is_empty() { "artifact" } else { &file_name });
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream".to_owned()), (header::CONTENT_DISPOSITION, disposition)],
        content,
    )
        .into_response())
}

/// A job of this project, with its pipeline.
async fn job_in_project(
    state: &AppState,
    context: &ProjectContext,
    job_id: i64,
) -> Result<(opsloop_store::Job, opsloop_store::Pipeline), ApiError> {
    let (job, project_id) = state.store.job_by_id(job_id).await?.ok_or_else(|| ApiError::not_found("job"))?;
    if project_id != context.project.id {
        return Err(ApiError::not_found("job"));
    }
    let pipeline = state.store.pipeline_by_id(job.pipeline_id).await?.ok_or_else(|| ApiError::not_found("pipeline"))?;
    Ok((job, pipeline))
}

fn job_view(job: opsloop_store::Job) -> JobView {
    JobView {
        id: job.id,
        name: job.name,
        stage: job.stage,
        status: job.status.to_string(),
        exit_code: job.exit_code,
        artifacts: None,
        needs: None,
    }
}

/// Runs a job of a finished pipeline again (`retry`), or a manual job (`play`).
pub async fn run_again(
    state: &AppState,
    principal: &Principal,
    context: &ProjectContext,
    job_id: i64,
    play: bool,
) -> Result<JobView, ApiError> {
    let (job, pipeline) = job_in_project(state, context, job_id).await?;
    let again = if play { crate::ci::Again::Play } else { crate::ci::Again::Retry };
    Ok(job_view(crate::ci::run_again(state, principal, &context.project, job, &pipeline, again).await?))
}

/// Run a finished job again (its pipeline must be finished too).
#[utoipa::path(post, path = "/api/v1/jobs/{job}/retry", tag = "pipelines", params(("job" = i64, Path)),
    responses((status = 202, body = JobView), (status = 409, body = ErrorBody)))]
pub async fn retry_job(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    ApiPath(job): ApiPath<i64>,
) -> Result<(StatusCode, ApiJson<JobView>), ApiError> {
    Ok((StatusCode::ACCEPTED, ApiJson(run_again(&state, &principal, &context, job, false).await?)))
}

/// Run a manual job (its pipeline must be finished).
#[utoipa::path(post, path = "/api/v1/jobs/{job}/play", tag = "pipelines", params(("job" = i64, Path)),
    responses((status = 202, body = JobView), (status = 409, body = ErrorBody)))]
pub async fn play_job(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    ApiPath(job): ApiPath<i64>,
) -> Result<(StatusCode, ApiJson<JobView>), ApiError> {
    Ok((StatusCode::ACCEPTED, ApiJson(run_again(&state, &principal, &context, job, true).await?)))
}

/// Cancels one job of a pipeline running here.
pub async fn cancel_one(
    state: &AppState,
    principal: &Principal,
    context: &ProjectContext,
    job_id: i64,
) -> Result<JobView, ApiError> {
    let (job, pipeline) = job_in_project(state, context, job_id).await?;
    if !matches!(job.status, JobStatus::Pending | JobStatus::Scheduled | JobStatus::Running)
        || !crate::ci::cancel_job(state, pipeline.id, job.id)
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_running",
            format!("job {} is not running on this server (its status: {})", job.id, job.status),
        ));
    }
    let entry = opsloop_store::NewAuditEntry {
        actor: principal.actor(),
        action: "job.cancel",
        target: &job.id.to_string(),
        detail: &format!("pipeline={}", pipeline.id),
    };
    state.store.append_audit(entry).await?;
    Ok(job_view(job))
}

/// Cancel one job: it ends (its after_script still runs); jobs that need it are skipped.
#[utoipa::path(post, path = "/api/v1/jobs/{job}/cancel", tag = "pipelines", params(("job" = i64, Path)),
    responses((status = 202, body = JobView), (status = 409, body = ErrorBody)))]
pub async fn cancel_job(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    ApiPath(job): ApiPath<i64>,
) -> Result<(StatusCode, ApiJson<JobView>), ApiError> {
    Ok((StatusCode::ACCEPTED, ApiJson(cancel_one(&state, &principal, &context, job).await?)))
}

/// Each job's `needs` as the pipeline recorded them when it started.
pub async fn needs_graph(state: &AppState, pipeline_id: i64) -> Result<BTreeMap<String, Vec<String>>, ApiError> {
    let text = state.store.needs_graph(pipeline_id).await?;
    Ok(serde_json::from_str(&text).unwrap_or_default())
}
