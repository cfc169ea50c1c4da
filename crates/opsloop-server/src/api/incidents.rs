//! Incidents over the API: list, show with the timeline, acknowledge, resolve, add a note.
//! Visibility and rights are the alerting service's (`crate::alerting::incidents`).

use axum::Extension;
use axum::extract::State;
use opsloop_core::IncidentStatus;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::alerting::incidents::{self, VisibleIncident};
use crate::auth::Principal;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use crate::state::AppState;
use crate::views::rfc3339;

#[derive(Debug, Serialize, ToSchema)]
pub struct IncidentView {
    pub id: i64,
    /// The project's name; absent for an incident of the instance.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    pub title: String,
    pub severity: String,
    /// `triggered`, `acknowledged` or `resolved`.
    pub status: String,
    pub escalation_policy: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    /// The alerts behind it, as the alerting engine last saw them.
    #[schema(value_type = Object)]
    pub alerts: serde_json::Value,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub acknowledged_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<String>,
}

impl From<VisibleIncident> for IncidentView {
    fn from(VisibleIncident { incident, project }: VisibleIncident) -> Self {
        IncidentView {
            id: incident.id,
            project,
            title: incident.title,
            severity: incident.severity,
            status: incident.status.to_string(),
            escalation_policy: incident.escalation_policy,
            assignee: incident.assignee,
            alerts: serde_json::from_str(&incident.alerts).unwrap_or(serde_json::Value::Null),
            created_at: rfc3339(incident.created_at),
            acknowledged_at: incident.acknowledged_at.map(rfc3339),
            resolved_at: incident.resolved_at.map(rfc3339),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TimelineEntry {
    pub at: String,
    /// `triggered`, `alerts`, `paged`, `escalated`, `acknowledged`, `resolved`, `note`, …
    pub kind: String,
    pub actor: String,
    pub detail: String,
}

/// A deployment in the hour before the incident: what probably caused it.
#[derive(Debug, Serialize, ToSchema)]
pub struct SuspectView {
    pub deployment: i64,
    pub service: String,
    pub environment: String,
    pub version: String,
    pub commit: String,
    pub status: String,
    pub created_at: String,
    /// The deployment's page; `POST /api/v1/projects/{project}/rollbacks` undoes it.
    pub url: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct IncidentDetail {
    #[serde(flatten)]
    pub incident: IncidentView,
    pub timeline: Vec<TimelineEntry>,
    /// Deployments of the incident's project (and service) in the hour before it, newest first.
    pub changes: Vec<SuspectView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct IncidentQuery {
    /// Only incidents in this state.
    pub status: Option<String>,
    /// Only open incidents (triggered or acknowledged).
    #[serde(default)]
    pub open: bool,
    /// At most this many (1–500, default 100).
    pub limit: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub struct IncidentPath {
    id: i64,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusChange {
    /// Shown on the timeline.
    #[serde(default)]
    pub note: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewNote {
    pub text: String,
}

/// The optional `{"note": …}` of a status change: an empty body is no note.
fn status_note(body: &[u8]) -> Result<String, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(String::new());
    }
    let change: StatusChange =
        serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("the body is not a status change: {e}")))?;
    Ok(change.note)
}

/// Incidents you may see, newest first.
#[utoipa::path(get, path = "/api/v1/incidents", tag = "incidents", params(IncidentQuery),
    responses((status = 200, body = Vec<IncidentView>), (status = 422, body = ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiQuery(query): ApiQuery<IncidentQuery>,
) -> Result<ApiJson<Vec<IncidentView>>, ApiError> {
    let status = match query.status.as_deref() {
        None | Some("") => None,
        Some(text) => Some(text.parse::<IncidentStatus>().map_err(|e| ApiError::invalid(e.to_string()))?),
    };
    let found = incidents::list(&state.store, &principal, status, query.open, query.limit.unwrap_or(100)).await?;
    Ok(ApiJson(found.into_iter().map(IncidentView::from).collect()))
}

async fn detail(state: &AppState, principal: &Principal, id: i64) -> Result<IncidentDetail, ApiError> {
    let (incident, timeline) = incidents::show(&state.store, principal, id).await?;
    let project = incident.project.clone().unwrap_or_default();
    let changes = incidents::suspects(&state.store, &incident.incident)
        .await?
        .into_iter()
        .map(|d| SuspectView {
            url: format!("/projects/{project}/deployments/{}", d.id),
            deployment: d.id,
            service: d.service,
            environment: d.environment,
            version: d.version,
            commit: d.commit_sha,
            status: d.status.to_string(),
            created_at: rfc3339(d.created_at),
        })
        .collect();
    Ok(IncidentDetail {
        changes,
        incident: incident.into(),
        timeline: timeline
            .into_iter()
            .map(|e| TimelineEntry { at: rfc3339(e.at), kind: e.kind, actor: e.actor, detail: e.detail })
            .collect(),
    })
}

/// One incident with its timeline.
#[utoipa::path(get, path = "/api/v1/incidents/{id}", tag = "incidents", params(("id" = i64, Path)),
    responses((status = 200, body = IncidentDetail), (status = 404, body = ErrorBody)))]
pub async fn show(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(path): ApiPath<IncidentPath>,
) -> Result<ApiJson<IncidentDetail>, ApiError> {
    Ok(ApiJson(detail(&state, &principal, path.id).await?))
}

/// Acknowledge an incident: you take it, and its escalation stops.
#[utoipa::path(post, path = "/api/v1/incidents/{id}/acknowledge", tag = "incidents", params(("id" = i64, Path)),
    request_body = StatusChange,
    responses((status = 200, body = IncidentDetail), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn acknowledge(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(path): ApiPath<IncidentPath>,
    body: axum::body::Bytes,
) -> Result<ApiJson<IncidentDetail>, ApiError> {
    let note = status_note(&body)?;
    incidents::set_status(&state.store, &principal, path.id, IncidentStatus::Acknowledged, &note).await?;
    Ok(ApiJson(detail(&state, &principal, path.id).await?))
}

/// Resolve an incident by hand.
#[utoipa::path(post, path = "/api/v1/incidents/{id}/resolve", tag = "incidents", params(("id" = i64, Path)),
    request_body = StatusChange,
    responses((status = 200, body = IncidentDetail), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn resolve(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(path): ApiPath<IncidentPath>,
    body: axum::body::Bytes,
) -> Result<ApiJson<IncidentDetail>, ApiError> {
    let note = status_note(&body)?;
    incidents::set_status(&state.store, &principal, path.id, IncidentStatus::Resolved, &note).await?;
    Ok(ApiJson(detail(&state, &principal, path.id).await?))
}

/// Add a note to an incident's timeline.
#[utoipa::path(post, path = "/api/v1/incidents/{id}/notes", tag = "incidents", params(("id" = i64, Path)),
    request_body = NewNote,
    responses((status = 200, body = IncidentDetail), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn add_note(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(path): ApiPath<IncidentPath>,
    ApiJson(note): ApiJson<NewNote>,
) -> Result<ApiJson<IncidentDetail>, ApiError> {
    incidents::add_note(&state.store, &principal, path.id, &note.text).await?;
    Ok(ApiJson(detail(&state, &principal, path.id).await?))
}
