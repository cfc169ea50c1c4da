//! Deployments: ask for one (`POST …/deployments`), watch it, list a service's history in
//! an environment, roll back, and see which release runs where (`…/environments`).

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Principal, ProjectContext};
use crate::deploy::{self, DeployRequest, RollbackRequest, StepRecord, TimelineRecord, VersionFigures};
use crate::error::{ApiError, ApiJson, ApiPath, ErrorBody};
use crate::state::AppState;
use crate::views::rfc3339;

#[derive(Debug, Serialize, ToSchema)]
pub struct DeploymentView {
    pub id: i64,
    pub environment: String,
    pub service: String,
    pub version: String,
    pub commit: String,
    pub strategy: String,
    /// `waiting_approval`, `queued`, `running`, `success`, `failed` or `rolled_back`.
    pub status: String,
    pub triggered_by: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub steps: Vec<StepRecord>,
    /// Each version's golden signals over the deployment (the new one, and the old one).
    pub figures: Vec<VersionFigures>,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
}

impl From<opsloop_store::Deployment> for DeploymentView {
    fn from(deployment: opsloop_store::Deployment) -> Self {
        let timeline = TimelineRecord::parse(&deployment.timeline);
        DeploymentView {
            id: deployment.id,
            environment: deployment.environment,
            service: deployment.service,
            version: deployment.version,
            commit: deployment.commit_sha,
            strategy: deployment.strategy,
            status: deployment.status.to_string(),
            triggered_by: deployment.triggered_by,
            reason: deployment.reason,
            steps: timeline.steps,
            figures: timeline.figures,
            created_at: rfc3339(deployment.created_at),
            started_at: deployment.started_at.map(rfc3339),
            finished_at: deployment.finished_at.map(rfc3339),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateDeployment {
    pub service: String,
    pub environment: String,
    /// A branch, tag or commit; the default branch's head when absent.
    pub version: Option<String>,
    /// `blue-green`, `canary`, `canary:10,50,100`, `rolling`, `rolling:2` or `recreate`;
    /// the service's own (`opsloop.yml`) when absent.
    pub strategy: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateRollback {
    pub service: String,
    pub environment: String,
    /// The version to go back to; the release that served before the current one when absent.
    pub to: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeploymentQuery {
    pub service: Option<String>,
    pub environment: Option<String>,
    /// At most this many, newest first (1 to 500, default 50).
    pub limit: Option<u32>,
}

#[derive(Debug, Deserialize)]
pub struct DeploymentPath {
    #[allow(dead_code)]
    project: String,
    deployment: i64,
}

/// What serves a service in an environment.
#[derive(Debug, Serialize, ToSchema)]
pub struct ServingView {
    pub environment: String,
    pub service: String,
    pub version: String,
    pub commit: String,
    pub since: String,
    pub deployment_id: i64,
    /// Instances passing their health check now, of `instances`.
    pub healthy: usize,
    pub instances: usize,
}

/// Who asked: a user, or a pipeline (through its token) for the user who started it.
fn triggered_by(principal: &Principal) -> String {
    match principal.credential {
        crate::auth::Credential::Pipeline { pipeline_id, .. } if principal.user.id == 0 => {
            format!("pipeline #{pipeline_id}")
        }
        crate::auth::Credential::Pipeline { pipeline_id, .. } => {
            format!("{} (pipeline #{pipeline_id})", principal.user.username)
        }
        _ => principal.user.username.clone(),
    }
}

fn check_names(service: &str, environment: &str) -> Result<(), ApiError> {
    for (what, name) in [("service", service), ("environment", environment)] {
        opsloop_core::validate_name(what, name).map_err(|error| ApiError::invalid(error.to_string()))?;
    }
    Ok(())
}

/// Deploy a version of a service to an environment. Answers at once with the queued
/// deployment; poll it (or use `opsloop deploy --wait`) for its outcome.
#[utoipa::path(post, path = "/api/v1/projects/{project}/deployments", tag = "deployments",
    params(("project" = String, Path)), request_body = CreateDeployment,
    responses((status = 202, body = DeploymentView), (status = 403, body = ErrorBody),
        (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    ApiJson(input): ApiJson<CreateDeployment>,
) -> Result<(StatusCode, ApiJson<DeploymentView>), ApiError> {
    check_names(&input.service, &input.environment)?;
    if let Some(version) = &input.version {
        crate::views::validate_branch(version)?;
    }
    let request = DeployRequest {
        service: input.service,
        environment: input.environment,
        version: input.version,
        strategy: input.strategy,
        triggered_by: triggered_by(&principal),
        pipeline_id: match principal.credential {
            crate::auth::Credential::Pipeline { pipeline_id, .. } => Some(pipeline_id),
            _ => None,
        },
    };
    let deployment = deploy::request(&state, &context.project, context.role, request, principal.actor()).await?;
    Ok((StatusCode::ACCEPTED, ApiJson(deployment.into())))
}

/// Go back to an earlier release (blue-green; a switch when the old version is still warm).
#[utoipa::path(post, path = "/api/v1/projects/{project}/rollbacks", tag = "deployments",
    params(("project" = String, Path)), request_body = CreateRollback,
    responses((status = 202, body = DeploymentView), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn rollback(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    ApiJson(input): ApiJson<CreateRollback>,
) -> Result<(StatusCode, ApiJson<DeploymentView>), ApiError> {
    check_names(&input.service, &input.environment)?;
    let request = RollbackRequest {
        service: input.service,
        environment: input.environment,
        to: input.to,
        triggered_by: triggered_by(&principal),
    };
    let deployment = deploy::rollback(&state, &context.project, context.role, request, principal.actor()).await?;
    Ok((StatusCode::ACCEPTED, ApiJson(deployment.into())))
}

/// A project's deployments, newest first.
#[utoipa::path(get, path = "/api/v1/projects/{project}/deployments", tag = "deployments",
    params(("project" = String, Path), DeploymentQuery), responses((status = 200, body = Vec<DeploymentView>)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(context): Extension<ProjectContext>,
    Query(query): Query<DeploymentQuery>,
) -> Result<ApiJson<Vec<DeploymentView>>, ApiError> {
    let limit = i64::from(query.limit.unwrap_or(50).clamp(1, 500));
    let deployments = state
        .store
        .list_deployments(context.project.id, query.service.as_deref(), query.environment.as_deref(), limit)
        .await?;
    Ok(ApiJson(deployments.into_iter().map(DeploymentView::from).collect()))
}

/// One deployment with its timeline.
#[utoipa::path(get, path = "/api/v1/projects/{project}/deployments/{deployment}", tag = "deployments",
    params(("project" = String, Path), ("deployment" = i64, Path)),
    responses((status = 200, body = DeploymentView), (status = 404, body = ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    Extension(context): Extension<ProjectContext>,
    ApiPath(path): ApiPath<DeploymentPath>,
) -> Result<ApiJson<DeploymentView>, ApiError> {
    match state.store.deployment(path.deployment).await? {
        Some(deployment) if deployment.project_id == context.project.id => Ok(ApiJson(deployment.into())),
        _ => Err(ApiError::not_found("deployment")),
    }
}

/// Which release serves each service in each environment, and its health now.
#[utoipa::path(get, path = "/api/v1/projects/{project}/environments", tag = "deployments",
    params(("project" = String, Path)), responses((status = 200, body = Vec<ServingView>)))]
pub async fn environments(
    State(state): State<AppState>,
    Extension(context): Extension<ProjectContext>,
) -> Result<ApiJson<Vec<ServingView>>, ApiError> {
    Ok(ApiJson(serving(&state, context.project.id).await?))
}

/// What serves where in a project (shared with the web UI).
pub async fn serving(state: &AppState, project_id: i64) -> Result<Vec<ServingView>, ApiError> {
    let mut views = Vec::new();
    for entry in state.store.serving_releases(Some(project_id)).await? {
        let Some(release) = state.store.release(entry.release_id).await? else { continue };
        let (healthy, instances) =
            state.deploy.health(project_id, &entry.environment, &entry.service).await.unwrap_or((0, 0));
        views.push(ServingView {
            environment: entry.environment,
            service: entry.service,
            version: release.version,
            commit: release.commit_sha,
            since: rfc3339(entry.since),
            deployment_id: entry.deployment_id,
            healthy,
            instances,
        });
    }
    Ok(views)
}

/// What applying the default branch's `opsloop.yml` would change (GitOps).
#[utoipa::path(get, path = "/api/v1/projects/{project}/environments/plan", tag = "deployments",
    params(("project" = String, Path)),
    responses((status = 200, body = crate::gitops::Plan), (status = 422, body = ErrorBody)))]
pub async fn plan(
    State(state): State<AppState>,
    Extension(context): Extension<ProjectContext>,
) -> Result<ApiJson<crate::gitops::Plan>, ApiError> {
    Ok(ApiJson(crate::gitops::plan(&state, &context.project, None).await?.0))
}

/// Apply the default branch's `opsloop.yml` now (as a passing pipeline there does).
#[utoipa::path(post, path = "/api/v1/projects/{project}/environments/apply", tag = "deployments",
    params(("project" = String, Path)),
    responses((status = 200, body = crate::gitops::Plan), (status = 422, body = ErrorBody)))]
pub async fn apply(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
) -> Result<ApiJson<crate::gitops::Plan>, ApiError> {
    Ok(ApiJson(crate::gitops::apply(&state, &context.project, None, principal.actor()).await?))
}

/// Approve a deployment that waits for approvals (`approvals: N` on its environment); the
/// last approval needed starts it.
#[utoipa::path(post, path = "/api/v1/projects/{project}/deployments/{deployment}/approve", tag = "deployments",
    params(("project" = String, Path), ("deployment" = i64, Path)),
    responses((status = 200, body = DeploymentView), (status = 403, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn approve(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    ApiPath(path): ApiPath<DeploymentPath>,
) -> Result<ApiJson<DeploymentView>, ApiError> {
    let deployment = deploy::approve(
        &state,
        &context.project,
        context.role,
        path.deployment,
        &principal.user.username,
        &principal.credential,
        principal.actor(),
    )
    .await?;
    Ok(ApiJson(deployment.into()))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StopEnvironment {
    /// One service; every service of the environment when absent.
    pub service: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct EnvironmentPath {
    #[allow(dead_code)]
    project: String,
    environment: String,
}

/// Stop an environment (or one service in it): its instances stop and its routes go. A
/// person stopping a whole environment a pipeline deployed gets its `on_stop` job played.
#[utoipa::path(post, path = "/api/v1/projects/{project}/environments/{environment}/stop", tag = "deployments",
    params(("project" = String, Path), ("environment" = String, Path)), request_body = StopEnvironment,
    responses((status = 200, body = deploy::Stopped), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn stop(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    ApiPath(path): ApiPath<EnvironmentPath>,
    ApiJson(input): ApiJson<StopEnvironment>,
) -> Result<ApiJson<deploy::Stopped>, ApiError> {
    check_names(input.service.as_deref().unwrap_or("all"), &path.environment)?;
    let stopped =
        deploy::stop_environment(&state, &principal, &context, &path.environment, input.service.as_deref()).await?;
    Ok(ApiJson(stopped))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CompareQuery {
    /// A deployment's number: its release is the "before".
    pub from: i64,
    /// Another deployment's number: its release is the "after".
    pub to: i64,
}

/// What changed between two deployments' releases: commits and configuration.
#[utoipa::path(get, path = "/api/v1/projects/{project}/compare", tag = "deployments",
    params(("project" = String, Path), CompareQuery),
    responses((status = 200, body = deploy::Comparison), (status = 404, body = ErrorBody)))]
pub async fn compare(
    State(state): State<AppState>,
    Extension(context): Extension<ProjectContext>,
    Query(query): Query<CompareQuery>,
) -> Result<ApiJson<deploy::Comparison>, ApiError> {
    Ok(ApiJson(deploy::compare(&state, &context.project, query.from, query.to).await?))
}
