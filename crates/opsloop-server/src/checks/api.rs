//! Checks over HTTP: the checks and heartbeats with their state (`/api/v1/checks`), a check
//! run now, and the heartbeats' ping URLs in Healthchecks.io's scheme (`/ping/<token>`,
//! `/ping/<token>/start`, `/ping/<token>/fail`, `/ping/<token>/<exit code>`), public since
//! the token is the credential, as there.

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use opsloop_checks::heartbeat::Ping;
use serde::Deserialize;
use serde_json::{Value, json};

use super::ChecksError;
use crate::auth::{Access, Principal};
use crate::error::{ApiError, ApiJson};
use crate::routes::{RouteTable, Surface};
use crate::state::AppState;

/// The most of a ping's body kept (the job's last lines).
const MAX_PING_BODY: usize = 100_000;

impl From<ChecksError> for ApiError {
    fn from(error: ChecksError) -> Self {
        match error {
            ChecksError::NotFound(what) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("{what} not found"))
            }
            ChecksError::NotConfigured => ApiError::new(StatusCode::NOT_FOUND, "not_configured", error.to_string()),
            ChecksError::Invalid(message) => ApiError::invalid(message),
            ChecksError::Store(error) => error.into(),
        }
    }
}

pub fn routes(table: RouteTable) -> RouteTable {
    use Access::*;
    let api = Surface::Api;
    table
        .add(api, Method::GET, "/api/v1/checks", Authenticated, list)
        .add(api, Method::POST, "/api/v1/checks/{check}/run", AuthenticatedWrite, run)
        // No user: the token in the URL is the credential, checked by the handler (as a
        // forge's signature is), so cron's `curl` needs no session and no CSRF token.
        .add(Surface::Ops, Method::GET, "/ping/{token}", Webhook, ping_success)
        .add(Surface::Ops, Method::POST, "/ping/{token}", Webhook, ping_success)
        .add(Surface::Ops, Method::GET, "/ping/{token}/{action}", Webhook, ping_action)
        .add(Surface::Ops, Method::POST, "/ping/{token}/{action}", Webhook, ping_action)
}

/// Every check with its health and last result, and every heartbeat with its state (and, for
/// admins, its ping URL).
#[utoipa::path(get, path = "/api/v1/checks", tag = "checks",
    responses((status = 200, body = Object), (status = 404, body = crate::error::ErrorBody)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<ApiJson<Value>, ApiError> {
    let checks = super::statuses(&state)?;
    let heartbeats = super::heartbeats(&state, principal.is_admin()).await?;
    Ok(ApiJson(json!({ "checks": checks, "heartbeats": heartbeats })))
}

#[derive(Debug, Deserialize)]
pub struct KeyPath {
    check: String,
}

/// Runs one check now (by its key, `group_name` as Gatus writes it) and answers what it saw.
#[utoipa::path(post, path = "/api/v1/checks/{check}/run", tag = "checks", params(("check" = String, Path)),
    responses((status = 200, body = Object), (status = 404, body = crate::error::ErrorBody)))]
pub async fn run(State(state): State<AppState>, Path(path): Path<KeyPath>) -> Result<ApiJson<Value>, ApiError> {
    let result = super::run_now(&state, &path.check).await?;
    Ok(ApiJson(serde_json::to_value(&result).map_err(|_| ApiError::internal())?))
}

#[derive(Debug, Deserialize)]
struct PingPath {
    token: String,
}

#[derive(Debug, Deserialize)]
struct PingActionPath {
    token: String,
    action: String,
}

fn body_text(body: &[u8]) -> String {
    let end = body.len().min(MAX_PING_BODY);
    String::from_utf8_lossy(&body[..end]).into_owned()
}

/// Healthchecks.io answers `OK` and 404 `not found`; so do we.
fn answer(result: Result<(), ChecksError>) -> Response {
    match result {
        Ok(()) => "OK".into_response(),
        Err(ChecksError::NotFound(_) | ChecksError::NotConfigured) => {
            (StatusCode::NOT_FOUND, "not found").into_response()
        }
        Err(ChecksError::Invalid(message)) => (StatusCode::BAD_REQUEST, message).into_response(),
        Err(ChecksError::Store(error)) => {
            tracing::error!(%error, "recording a ping");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

async fn ping_success(State(state): State<AppState>, Path(path): Path<PingPath>, body: axum::body::Bytes) -> Response {
    answer(super::ping(&state, &path.token, Ping::Success, &body_text(&body)).await)
}

async fn ping_action(
    State(state): State<AppState>,
    Path(path): Path<PingActionPath>,
    body: axum::body::Bytes,
) -> Response {
    let kind = match path.action.as_str() {
        "start" => Ping::Start,
        "fail" => Ping::Fail,
        code => match code.parse::<i32>() {
            Ok(code) if (0..=255).contains(&code) => Ping::ExitCode(code),
            _ => return (StatusCode::BAD_REQUEST, "the action is start, fail or an exit code 0-255").into_response(),
        },
    };
    answer(super::ping(&state, &path.token, kind, &body_text(&body)).await)
}
