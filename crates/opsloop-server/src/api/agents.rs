//! The agent API (`/api/v1/agent/…`, agent tokens only) and agent administration
//! (`/api/v1/admin/agents`, instance admins).
//!
//! An agent registers its tags, long-polls for a job, downloads the pipeline's source and the
//! job's upstream artifacts as tar archives, posts its events in batches (each post is a
//! heartbeat, and its answer says whether to cancel), uploads its artifacts and reports the
//! end. Every job route checks that the job is running on the calling agent: anything else is
//! 410 Gone, which tells the agent to drop the job.

use std::time::Duration;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use opsloop_runner::{Event, JobOutcome, JobSpec};
use opsloop_store::Agent;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::agents::AGENT_TOKEN_PREFIX;
use crate::agents::service::{self, MAX_WAIT_SECONDS};
use crate::auth::Principal;
use crate::auth::credentials::digest;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use crate::state::AppState;
use crate::views::rfc3339;

/// The agent behind a bearer token, if it is an agent token that is not revoked.
pub async fn resolve_agent(state: &AppState, headers: &HeaderMap) -> Result<Option<Agent>, ApiError> {
    let Some(token) = crate::auth::bearer_token(headers) else { return Ok(None) };
    if !token.starts_with(AGENT_TOKEN_PREFIX) {
        return Ok(None);
    }
    Ok(state.store.agent_by_token(&digest(&token)).await?)
}

/// Largest artifact archive an agent may upload.
pub const MAX_ARTIFACT_BYTES: usize = 512 * 1024 * 1024;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// Jobs whose tags are all among these may run on this agent.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Jobs it runs at once.
    #[serde(default = "one")]
    pub concurrency: u32,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub hostname: String,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Registered {
    pub name: String,
    pub tags: Vec<String>,
    /// Post events (or an empty batch) at least this often while running a job.
    pub heartbeat_seconds: u64,
}

/// An agent says which tags it has and how many jobs it runs at once.
#[utoipa::path(post, path = "/api/v1/agent/register", tag = "agents", request_body = Registration,
    responses((status = 200, body = Registered), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn register(
    State(state): State<AppState>,
    Extension(agent): Extension<Agent>,
    ApiJson(input): ApiJson<Registration>,
) -> Result<ApiJson<Registered>, ApiError> {
    let registration = service::Registration {
        tags: input.tags,
        concurrency: input.concurrency,
        version: input.version,
        hostname: input.hostname,
    };
    let tags = service::register(&state, &agent, registration).await?;
    Ok(ApiJson(Registered { name: agent.name, tags, heartbeat_seconds: service::heartbeat_seconds(&state) }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WaitQuery {
    /// Hold the request open this long for a job (0 to 20 s, default 20).
    pub wait_seconds: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AssignedJob {
    pub job_id: i64,
    /// 1 for the first run; higher when the job was queued again after a lost agent.
    pub attempt: i64,
    pub heartbeat_seconds: u64,
    /// What to run (`opsloop_runner::JobSpec`).
    #[schema(value_type = Object)]
    pub spec: JobSpec,
}

/// Claims the oldest queued job this agent's tags cover; waits for one up to `wait_seconds`.
/// 204 when none came.
#[utoipa::path(post, path = "/api/v1/agent/jobs/request", tag = "agents", params(WaitQuery),
    responses((status = 200, body = AssignedJob), (status = 204), (status = 401, body = ErrorBody)))]
pub async fn request_job(
    State(state): State<AppState>,
    Extension(agent): Extension<Agent>,
    ApiQuery(query): ApiQuery<WaitQuery>,
) -> Result<Response, ApiError> {
    let wait = Duration::from_secs(query.wait_seconds.unwrap_or(MAX_WAIT_SECONDS));
    Ok(match service::claim(&state, &agent, wait).await? {
        Some(claimed) => ApiJson(AssignedJob {
            job_id: claimed.job_id,
            attempt: claimed.attempt,
            heartbeat_seconds: service::heartbeat_seconds(&state),
            spec: claimed.spec,
        })
        .into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

fn tar_response(bytes: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "application/x-tar")], bytes).into_response()
}

/// The pipeline's source files as a tar archive.
#[utoipa::path(get, path = "/api/v1/agent/jobs/{job}/source", tag = "agents", params(("job" = i64, Path)),
    responses((status = 200, content_type = "application/x-tar"), (status = 410, body = ErrorBody)))]
pub async fn source(
    State(state): State<AppState>,
    Extension(agent): Extension<Agent>,
    ApiPath(job_id): ApiPath<i64>,
) -> Result<Response, ApiError> {
    let archive = service::source(&state, &agent, job_id).await?;
    Ok(([(header::CONTENT_TYPE, "application/x-tar")], Body::from(archive)).into_response())
}

/// The artifacts of the job's `position`-th upstream job (as the spec's `upstream` lists them).
#[utoipa::path(get, path = "/api/v1/agent/jobs/{job}/upstream/{position}", tag = "agents",
    params(("job" = i64, Path), ("position" = usize, Path)),
    responses((status = 200, content_type = "application/x-tar"), (status = 404, body = ErrorBody), (status = 410, body = ErrorBody)))]
pub async fn upstream(
    State(state): State<AppState>,
    Extension(agent): Extension<Agent>,
    ApiPath((job_id, position)): ApiPath<(i64, usize)>,
) -> Result<Response, ApiError> {
    Ok(tar_response(service::upstream(&state, &agent, job_id, position).await?))
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventBatch {
    /// The job's events in order (`opsloop_runner::Event`); may be empty (a heartbeat).
    #[schema(value_type = Vec<Object>)]
    pub events: Vec<Event>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatAnswer {
    /// Stop the job: it was canceled.
    pub cancel: bool,
}

/// The job's events since the last post; also the job's heartbeat.
#[utoipa::path(post, path = "/api/v1/agent/jobs/{job}/events", tag = "agents", params(("job" = i64, Path)),
    request_body = EventBatch,
    responses((status = 200, body = HeartbeatAnswer), (status = 410, body = ErrorBody)))]
pub async fn events(
    State(state): State<AppState>,
    Extension(agent): Extension<Agent>,
    ApiPath(job_id): ApiPath<i64>,
    ApiJson(batch): ApiJson<EventBatch>,
) -> Result<ApiJson<HeartbeatAnswer>, ApiError> {
    Ok(ApiJson(HeartbeatAnswer { cancel: service::report(&state, &agent, job_id, batch.events).await? }))
}

/// The job's artifacts as a tar archive (files and directories only). Replaces earlier ones.
#[utoipa::path(put, path = "/api/v1/agent/jobs/{job}/artifacts", tag = "agents", params(("job" = i64, Path)),
    request_body(content = Vec<u8>, content_type = "application/x-tar"),
    responses((status = 204), (status = 413, body = ErrorBody), (status = 410, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn upload_artifacts(
    State(state): State<AppState>,
    Extension(agent): Extension<Agent>,
    ApiPath(job_id): ApiPath<i64>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    // Checked before a long upload is read, and again (by the service) after.
    service::running_here(&state, &agent, job_id).await?;
    let archive = read_limited(body).await?;
    service::store_artifacts(&state, &agent, job_id, archive).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
pub struct CachePath {
    job: i64,
    key: String,
}

/// A cache of the job's project (a tar archive), if there is one.
#[utoipa::path(get, path = "/api/v1/agent/jobs/{job}/caches/{key}", tag = "agents",
    params(("job" = i64, Path), ("key" = String, Path)),
    responses((status = 200, content_type = "application/x-tar"), (status = 404, body = ErrorBody), (status = 410, body = ErrorBody)))]
pub async fn fetch_cache(
    State(state): State<AppState>,
    Extension(agent): Extension<Agent>,
    ApiPath(path): ApiPath<CachePath>,
) -> Result<Response, ApiError> {
    match service::fetch_cache(&state, &agent, path.job, &path.key).await? {
        Some(archive) => Ok(([(header::CONTENT_TYPE, "application/x-tar")], Body::from(archive)).into_response()),
        None => Err(ApiError::not_found("cache")),
    }
}

/// Store a cache of the job's project (a tar archive), replacing the one of that key.
#[utoipa::path(put, path = "/api/v1/agent/jobs/{job}/caches/{key}", tag = "agents",
    params(("job" = i64, Path), ("key" = String, Path)),
    request_body(content = Vec<u8>, content_type = "application/x-tar"),
    responses((status = 204), (status = 413, body = ErrorBody), (status = 410, body = ErrorBody)))]
pub async fn store_cache(
    State(state): State<AppState>,
    Extension(agent): Extension<Agent>,
    ApiPath(path): ApiPath<CachePath>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    service::running_here(&state, &agent, path.job).await?;
    let archive = read_limited(body).await?;
    service::store_cache(&state, &agent, path.job, &path.key, archive).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Reads a request body up to [`MAX_ARTIFACT_BYTES`].
async fn read_limited(body: Body) -> Result<Vec<u8>, ApiError> {
    let mut bytes = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| ApiError::bad_request("the upload was cut off"))?;
        if bytes.len() + chunk.len() > MAX_ARTIFACT_BYTES {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "upload_too_large",
                format!("uploads are limited to {} MiB", MAX_ARTIFACT_BYTES / (1024 * 1024)),
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobEnd {
    /// How the job ended (`opsloop_runner::JobOutcome`).
    #[schema(value_type = Object)]
    pub outcome: JobOutcome,
    /// Variables from `artifacts:reports:dotenv`.
    #[serde(default)]
    pub dotenv: Vec<(String, String)>,
}

/// The job ended; its artifacts were uploaded before.
#[utoipa::path(post, path = "/api/v1/agent/jobs/{job}/finish", tag = "agents", params(("job" = i64, Path)),
    request_body = JobEnd, responses((status = 204), (status = 410, body = ErrorBody)))]
pub async fn finish(
    State(state): State<AppState>,
    Extension(agent): Extension<Agent>,
    ApiPath(job_id): ApiPath<i64>,
    ApiJson(end): ApiJson<JobEnd>,
) -> Result<StatusCode, ApiError> {
    service::finish(&state, &agent, job_id, end.outcome, end.dotenv).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---- administration ----

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AgentView {
    pub id: i64,
    pub name: String,
    pub tags: Vec<String>,
    pub concurrency: i64,
    pub version: String,
    pub hostname: String,
    /// Seen within the last two long-poll periods.
    pub online: bool,
    pub last_seen_at: Option<String>,
    pub running_jobs: i64,
    pub revoked: bool,
    pub created_at: String,
    pub created_by: String,
}

/// An agent counts as online when it asked for work or reported on a job this recently.
pub const ONLINE_WINDOW_MS: i64 = 2 * (MAX_WAIT_SECONDS as i64) * 1000 + 5_000;

impl AgentView {
    pub fn new(agent: Agent, now: i64) -> Self {
        AgentView {
            id: agent.id,
            online: agent.revoked_at.is_none()
                && agent.last_seen_at > 0
                && now - agent.last_seen_at <= ONLINE_WINDOW_MS,
            last_seen_at: (agent.last_seen_at > 0).then(|| rfc3339(agent.last_seen_at)),
            name: agent.name,
            tags: agent.tags,
            concurrency: agent.concurrency,
            version: agent.version,
            hostname: agent.hostname,
            running_jobs: agent.running_jobs,
            revoked: agent.revoked_at.is_some(),
            created_at: rfc3339(agent.created_at),
            created_by: agent.created_by,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgent {
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CreatedAgent {
    pub agent: AgentView,
    /// The agent's token (`olpa_…`), shown only now: pass it to `opsloop agent --token`.
    pub token: String,
}

/// Every agent, online or not.
#[utoipa::path(get, path = "/api/v1/admin/agents", tag = "admin",
    responses((status = 200, body = Vec<AgentView>), (status = 403, body = ErrorBody)))]
pub async fn list(State(state): State<AppState>) -> Result<ApiJson<Vec<AgentView>>, ApiError> {
    let now = state.clock.now_ms();
    Ok(ApiJson(state.store.list_agents().await?.into_iter().map(|a| AgentView::new(a, now)).collect()))
}

pub async fn create_agent(state: &AppState, principal: &Principal, name: &str) -> Result<CreatedAgent, ApiError> {
    let (token, agent) = service::issue_agent_token(&state.store, name, principal.actor()).await?;
    Ok(CreatedAgent { agent: AgentView::new(agent, state.clock.now_ms()), token })
}

/// Register a new agent; its token is shown once.
#[utoipa::path(post, path = "/api/v1/admin/agents", tag = "admin", request_body = CreateAgent,
    responses((status = 201, body = CreatedAgent), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(input): ApiJson<CreateAgent>,
) -> Result<(StatusCode, ApiJson<CreatedAgent>), ApiError> {
    Ok((StatusCode::CREATED, ApiJson(create_agent(&state, &principal, &input.name).await?)))
}

/// Revoke an agent's token: its next request is refused, its running jobs are lost.
#[utoipa::path(delete, path = "/api/v1/admin/agents/{id}", tag = "admin", params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn revoke(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode, ApiError> {
    if state.store.revoke_agent(id, principal.actor()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("agent"))
    }
}
