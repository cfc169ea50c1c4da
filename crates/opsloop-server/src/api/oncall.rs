//! On-call over the API: who is on call (now or at a time), a schedule's shifts, and its
//! iCalendar feed. Reads the configuration `--oncall-config` names.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::alerting::oncall;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use crate::state::AppState;

#[derive(Debug, Serialize, ToSchema)]
pub struct OnCallView {
    pub schedule: String,
    pub timezone: String,
    pub at: String,
    /// Nobody when the schedule has a gap then.
    pub user: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
}

impl From<opsloop_alert::oncall::OnCallAnswer> for OnCallView {
    fn from(answer: opsloop_alert::oncall::OnCallAnswer) -> Self {
        OnCallView {
            schedule: answer.schedule,
            timezone: answer.timezone,
            at: answer.at.to_string(),
            user: answer.user,
            since: answer.since.map(|t| t.to_string()),
            until: answer.until.map(|t| t.to_string()),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ShiftView {
    pub user: String,
    pub start: String,
    pub end: String,
}

#[derive(Debug, Deserialize)]
pub struct SchedulePath {
    /// The schedule's name.
    name: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AtQuery {
    /// RFC 3339 with an offset, or a local date-time in the schedule's zone; default now.
    pub at: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct WindowQuery {
    /// RFC 3339; default now.
    pub from: Option<String>,
    /// How many days (1–92, default 14).
    pub days: Option<u32>,
}

/// Every schedule, with who is on call now.
#[utoipa::path(get, path = "/api/v1/oncall", tag = "oncall",
    responses((status = 200, body = Vec<OnCallView>), (status = 404, body = ErrorBody)))]
pub async fn list(State(state): State<AppState>) -> Result<ApiJson<Vec<OnCallView>>, ApiError> {
    Ok(ApiJson(oncall::everyone_now(&state)?.into_iter().map(OnCallView::from).collect()))
}

/// Who is on call for a schedule, now or at a given time.
#[utoipa::path(get, path = "/api/v1/oncall/{name}", tag = "oncall", params(("name" = String, Path), AtQuery),
    responses((status = 200, body = OnCallView), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn who(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<SchedulePath>,
    ApiQuery(query): ApiQuery<AtQuery>,
) -> Result<ApiJson<OnCallView>, ApiError> {
    Ok(ApiJson(oncall::who(&state, &path.name, query.at.as_deref())?.into()))
}

/// A schedule's final shifts over a window (layers, restrictions and overrides applied).
#[utoipa::path(get, path = "/api/v1/oncall/{name}/shifts", tag = "oncall",
    params(("name" = String, Path), WindowQuery),
    responses((status = 200, body = Vec<ShiftView>), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn shifts(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<SchedulePath>,
    ApiQuery(query): ApiQuery<WindowQuery>,
) -> Result<ApiJson<Vec<ShiftView>>, ApiError> {
    let shifts = oncall::shifts(&state, &path.name, query.from.as_deref(), query.days)?;
    Ok(ApiJson(
        shifts
            .into_iter()
            .map(|s| ShiftView { user: s.user.to_string(), start: s.start.to_string(), end: s.end.to_string() })
            .collect(),
    ))
}

/// A schedule as an iCalendar (RFC 5545) feed: a week back, eight weeks ahead. Calendar apps
/// authenticate with the token as the basic-auth password.
#[utoipa::path(get, path = "/api/v1/oncall/{name}/calendar.ics", tag = "oncall",
    params(("name" = String, Path)),
    responses((status = 200, content_type = "text/calendar", body = String), (status = 404, body = ErrorBody)))]
pub async fn calendar(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<SchedulePath>,
) -> Result<impl IntoResponse, ApiError> {
    let feed = oncall::calendar(&state, &path.name)?;
    Ok(([(header::CONTENT_TYPE, "text/calendar; charset=utf-8")], feed))
}
