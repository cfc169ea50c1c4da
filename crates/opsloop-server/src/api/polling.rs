//! `/api/v1/projects/{project}/polling` (poll the repository for new commits) and
//! `/api/v1/projects/{project}/ci-settings` (the project's job limit, auto-cancel).

use axum::Extension;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{Principal, ProjectContext};
use crate::error::{ApiError, ApiJson, ErrorBody};
use crate::state::AppState;

/// The shortest interval: polling is a `git ls-remote` against someone's server.
pub const MIN_INTERVAL_SECONDS: i64 = 10;
const MAX_INTERVAL_SECONDS: i64 = 7 * 24 * 3600;

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PollingSettings {
    /// Seconds between polls; 0 turns polling off. Each new or moved branch or tag starts a
    /// `push` pipeline at its commit; the first poll only records what is there.
    pub interval_seconds: i64,
}

/// How often the project's repository is polled.
#[utoipa::path(get, path = "/api/v1/projects/{project}/polling", tag = "pipelines", params(("project" = String, Path)),
    responses((status = 200, body = PollingSettings), (status = 403, body = ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    Extension(context): Extension<ProjectContext>,
) -> Result<ApiJson<PollingSettings>, ApiError> {
    Ok(ApiJson(PollingSettings { interval_seconds: state.store.poll_interval(context.project.id).await? }))
}

/// Turn repository polling on (an interval in seconds) or off (0).
#[utoipa::path(put, path = "/api/v1/projects/{project}/polling", tag = "pipelines", params(("project" = String, Path)),
    request_body = PollingSettings,
    responses((status = 200, body = PollingSettings), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn set(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    ApiJson(input): ApiJson<PollingSettings>,
) -> Result<ApiJson<PollingSettings>, ApiError> {
    set_interval(&state, &principal, &context, input.interval_seconds).await?;
    Ok(ApiJson(input))
}

/// Sets the poll interval; shared by the API and the web UI so both apply the same rules.
pub async fn set_interval(
    state: &AppState,
    principal: &Principal,
    context: &ProjectContext,
    seconds: i64,
) -> Result<(), ApiError> {
    if seconds != 0 && !(MIN_INTERVAL_SECONDS..=MAX_INTERVAL_SECONDS).contains(&seconds) {
        return Err(ApiError::invalid(format!(
            "interval_seconds must be 0 (off) or between {MIN_INTERVAL_SECONDS} and {MAX_INTERVAL_SECONDS}"
        )));
    }
    state.store.set_poll_interval(&context.project, seconds, principal.actor()).await?;
    Ok(())
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CiSettingsView {
    /// Jobs of this project running at once, on the server and on agents; 0: only the
    /// server-wide limit applies.
    pub max_concurrent_jobs: i64,
    /// A new pipeline cancels older running ones on the same ref whose started jobs are all
    /// `interruptible` (GitLab's "auto-cancel redundant pipelines").
    pub auto_cancel_redundant: bool,
}

/// The project's CI settings.
#[utoipa::path(get, path = "/api/v1/projects/{project}/ci-settings", tag = "pipelines",
    params(("project" = String, Path)), responses((status = 200, body = CiSettingsView)))]
pub async fn ci_settings(
    State(state): State<AppState>,
    Extension(context): Extension<ProjectContext>,
) -> Result<ApiJson<CiSettingsView>, ApiError> {
    let settings = state.store.ci_settings(context.project.id).await?;
    Ok(ApiJson(CiSettingsView {
        max_concurrent_jobs: settings.max_concurrent_jobs,
        auto_cancel_redundant: settings.auto_cancel_redundant,
    }))
}

/// Change the project's CI settings.
#[utoipa::path(put, path = "/api/v1/projects/{project}/ci-settings", tag = "pipelines",
    params(("project" = String, Path)), request_body = CiSettingsView,
    responses((status = 200, body = CiSettingsView), (status = 422, body = ErrorBody)))]
pub async fn set_ci_settings(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    ApiJson(input): ApiJson<CiSettingsView>,
) -> Result<ApiJson<CiSettingsView>, ApiError> {
    apply_ci_settings(&state, &principal, &context, &input).await?;
    Ok(ApiJson(input))
}

/// Validates and stores a project's CI settings; shared by the API and the web UI.
pub async fn apply_ci_settings(
    state: &AppState,
    principal: &Principal,
    context: &ProjectContext,
    input: &CiSettingsView,
) -> Result<(), ApiError> {
    if !(0..=1000).contains(&input.max_concurrent_jobs) {
        return Err(ApiError::invalid("max_concurrent_jobs must be between 0 (no limit of its own) and 1000"));
    }
    let settings = opsloop_store::CiSettings {
        max_concurrent_jobs: input.max_concurrent_jobs,
        auto_cancel_redundant: input.auto_cancel_redundant,
    };
    state.store.set_ci_settings(&context.project, &settings, principal.actor()).await?;
    Ok(())
}
