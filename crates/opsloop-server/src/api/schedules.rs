//! `/api/v1/projects/{project}/schedules`: pipeline schedules.

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{Principal, ProjectContext};
use crate::error::{ApiError, ApiJson, ApiPath, ErrorBody};
use crate::state::AppState;
use crate::views::{rfc3339, validate_branch};

#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleView {
    pub id: i64,
    pub description: String,
    pub cron: String,
    pub timezone: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub enabled: bool,
    /// When it runs next (absent while disabled).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_run_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_pipeline: Option<i64>,
    /// Variable names only: values may be secrets.
    pub variables: Vec<String>,
}

impl From<opsloop_store::Schedule> for ScheduleView {
    fn from(s: opsloop_store::Schedule) -> Self {
        let variables = serde_json::from_str::<BTreeMap<String, String>>(&s.variables)
            .map(|map| map.into_keys().collect())
            .unwrap_or_default();
        ScheduleView {
            id: s.id,
            description: s.description,
            cron: s.cron,
            timezone: s.timezone,
            git_ref: s.git_ref,
            enabled: s.enabled,
            next_run_at: (s.enabled && s.next_run_at < i64::MAX).then(|| rfc3339(s.next_run_at)),
            last_pipeline: s.last_pipeline_id,
            variables,
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSchedule {
    /// Five fields: minute hour day-of-month month day-of-week, e.g. `30 2 * * 1-5`.
    pub cron: String,
    /// An IANA time zone, e.g. `Europe/Berlin` (default UTC).
    pub timezone: Option<String>,
    /// Branch or tag (default: the project's default branch).
    #[serde(rename = "ref")]
    pub git_ref: Option<String>,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateSchedule {
    pub enabled: bool,
}

#[derive(Debug, Deserialize)]
pub struct SchedulePath {
    #[allow(dead_code)]
    project: String,
    schedule: i64,
}

/// The project's schedules with their next runs.
#[utoipa::path(get, path = "/api/v1/projects/{project}/schedules", tag = "pipelines", params(("project" = String, Path)),
    responses((status = 200, body = Vec<ScheduleView>)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(context): Extension<ProjectContext>,
) -> Result<ApiJson<Vec<ScheduleView>>, ApiError> {
    let schedules = state.store.list_schedules(context.project.id).await?;
    Ok(ApiJson(schedules.into_iter().map(ScheduleView::from).collect()))
}

/// Create a schedule.
#[utoipa::path(post, path = "/api/v1/projects/{project}/schedules", tag = "pipelines", params(("project" = String, Path)),
    request_body = CreateSchedule, responses((status = 201, body = ScheduleView), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    ApiJson(input): ApiJson<CreateSchedule>,
) -> Result<(StatusCode, ApiJson<ScheduleView>), ApiError> {
    Ok((StatusCode::CREATED, ApiJson(create_schedule(&state, &principal, &context, input).await?)))
}

/// Creates a schedule; shared by the API and the web UI so both apply the same rules.
pub async fn create_schedule(
    state: &AppState,
    principal: &Principal,
    context: &ProjectContext,
    input: CreateSchedule,
) -> Result<ScheduleView, ApiError> {
    let timezone = input.timezone.unwrap_or_else(|| "UTC".to_owned());
    let git_ref = input.git_ref.unwrap_or_else(|| context.project.default_branch.clone());
    validate_branch(&git_ref)?;
    if input.description.chars().count() > 255 {
        return Err(ApiError::invalid("description is at most 255 characters"));
    }
    if input.variables.len() > 50 {
        return Err(ApiError::invalid("a schedule has at most 50 variables"));
    }
    for (key, value) in &input.variables {
        let valid = key.len() <= 255
            && key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(ApiError::invalid(format!("`{key}` is not a variable name: letters, digits and `_`")));
        }
        if value.len() > 10 * 1024 {
            return Err(ApiError::invalid(format!("the value of `{key}` is over 10 KiB")));
        }
    }
    let next_run_at = crate::schedules::next_run(&input.cron, &timezone, state.clock.now_ms())?;
    let schedule = opsloop_store::Schedule {
        id: 0,
        project_id: context.project.id,
        description: input.description,
        cron: input.cron,
        timezone,
        git_ref,
        variables: serde_json::to_string(&input.variables).map_err(|_| ApiError::internal())?,
        enabled: true,
        next_run_at,
        last_pipeline_id: None,
        created_at: 0,
    };
    let created = state.store.create_schedule(&context.project, &schedule, principal.actor()).await?;
    Ok(created.into())
}

/// Turn a schedule on or off.
#[utoipa::path(patch, path = "/api/v1/projects/{project}/schedules/{schedule}", tag = "pipelines",
    params(("project" = String, Path), ("schedule" = i64, Path)), request_body = UpdateSchedule,
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn update(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    ApiPath(path): ApiPath<SchedulePath>,
    ApiJson(input): ApiJson<UpdateSchedule>,
) -> Result<StatusCode, ApiError> {
    set_enabled(&state, &principal, &context, path.schedule, input.enabled).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Turns a schedule on (its next run counted from now) or off; shared by the API and the UI.
pub async fn set_enabled(
    state: &AppState,
    principal: &Principal,
    context: &ProjectContext,
    schedule_id: i64,
    enabled: bool,
) -> Result<(), ApiError> {
    let schedules = state.store.list_schedules(context.project.id).await?;
    let schedule = schedules.iter().find(|s| s.id == schedule_id).ok_or_else(|| ApiError::not_found("schedule"))?;
    let next = crate::schedules::next_run(&schedule.cron, &schedule.timezone, state.clock.now_ms()).unwrap_or(i64::MAX);
    state.store.set_schedule_enabled(&context.project, schedule.id, enabled, next, principal.actor()).await?;
    Ok(())
}

/// Delete a schedule.
#[utoipa::path(delete, path = "/api/v1/projects/{project}/schedules/{schedule}", tag = "pipelines",
    params(("project" = String, Path), ("schedule" = i64, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    ApiPath(path): ApiPath<SchedulePath>,
) -> Result<StatusCode, ApiError> {
    state.store.delete_schedule(&context.project, path.schedule, principal.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}
