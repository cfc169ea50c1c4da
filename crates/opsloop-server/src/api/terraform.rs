//! `/api/v1/projects/{project}/terraform/…`: Terraform's `http` state backend, per project and
//! state name, as GitLab serves it: GET/POST/DELETE on the state, POST/DELETE on its `/lock`
//! (Terraform's `lock_method = "POST"`, `unlock_method = "DELETE"`: the route table serves
//! standard methods only, not LOCK/UNLOCK), and lists of states and versions.
//!
//! Access follows GitLab: a developer reads states (`terraform plan -lock=false`), a
//! maintainer locks, writes, unlocks and deletes (`terraform apply`). A pipeline's token
//! reaches the backend routes of its own project with its starter's role.
//!
//! Bodies are encrypted with the vault, bound to project, state and serial; the serial,
//! lineage and lock rules are the store's (`opsloop_store::terraform`).

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use opsloop_store::{LockOutcome, NewTerraformLock, NewTerraformVersion, StateWrite, TerraformLock, UnlockOutcome};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Credential, Principal, ProjectContext};
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use crate::state::AppState;
use crate::views::rfc3339;

/// The largest state accepted. States of big estates reach a few MiB; this leaves room while
/// keeping one request from filling the database.
pub const MAX_STATE_BYTES: usize = 16 * 1024 * 1024;

/// Terraform's lock info is small; anything larger is not one.
const MAX_LOCK_BYTES: usize = 64 * 1024;

#[derive(Debug, Deserialize)]
pub struct StatePath {
    #[allow(dead_code)]
    project: String,
    name: String,
}

#[derive(Debug, Deserialize)]
pub struct VersionPath {
    #[allow(dead_code)]
    project: String,
    name: String,
    serial: i64,
}

/// `?ID=`: the lock the writer holds, as Terraform's `http` backend sends it.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LockQuery {
    /// The ID of the lock the writer holds.
    #[serde(rename = "ID")]
    pub id: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct LockView {
    pub id: String,
    /// Terraform's `Who` (user@host).
    pub who: String,
    pub operation: String,
    /// The opsloop user whose credential took the lock.
    pub locked_by: String,
    pub created_at: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct StateView {
    pub name: String,
    /// The latest serial; absent before the first write.
    pub serial: Option<i64>,
    pub lineage: Option<String>,
    /// Bytes of the latest version.
    pub size: Option<i64>,
    pub updated_at: Option<String>,
    pub updated_by: Option<String>,
    pub lock: Option<LockView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct VersionView {
    pub serial: i64,
    pub lineage: String,
    pub size: i64,
    pub created_by: String,
    pub created_at: String,
    pub pipeline_id: Option<i64>,
    pub job_id: Option<i64>,
}

fn lock_view(lock: TerraformLock) -> LockView {
    LockView {
        id: lock.lock_id,
        who: lock.who,
        operation: lock.operation,
        locked_by: lock.locked_by,
        created_at: rfc3339(lock.created_at),
    }
}

fn version_view(version: opsloop_store::TerraformVersion) -> VersionView {
    VersionView {
        serial: version.serial,
        lineage: version.lineage,
        size: version.size,
        created_by: version.created_by,
        created_at: rfc3339(version.created_at),
        pipeline_id: version.pipeline_id,
        job_id: version.job_id,
    }
}

/// Names become part of URLs and of Terraform configuration: kept to a plain set.
fn validate_name(name: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !name.starts_with('.');
    if ok { Ok(()) } else { Err(ApiError::invalid("a state name is letters, digits, `-`, `_` and `.`")) }
}

/// The encryption context: a ciphertext only opens as the version it was written as.
fn context(project_id: i64, name: &str, serial: i64) -> String {
    format!("project:{project_id}/terraform:{name}/serial:{serial}")
}

/// The holder's lock, as Terraform reads it from a refusal: its own lock info JSON.
fn locked(lock: &TerraformLock) -> Response {
    (StatusCode::LOCKED, [(header::CONTENT_TYPE, "application/json")], lock.info.clone()).into_response()
}

async fn read_body(body: Body, limit: usize, what: &str) -> Result<axum::body::Bytes, ApiError> {
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("{what} is larger than the {limit} bytes accepted"),
        )),
        Err(_) => Err(ApiError::bad_request("the request body could not be read")),
    }
}

fn malformed(error: &serde_json::Error) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", format!("the body is not JSON: {error}"))
}

fn decrypt(state: &AppState, project_id: i64, name: &str, serial: i64, ciphertext: &str) -> Result<String, ApiError> {
    state.vault()?.decrypt(ciphertext, &context(project_id, name, serial)).map_err(|error| {
        tracing::error!(state = name, serial, %error, "a stored Terraform state does not decrypt");
        ApiError::internal()
    })
}

fn state_json(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The project's Terraform states with their latest serial, size and lock holder.
#[utoipa::path(get, path = "/api/v1/projects/{project}/terraform/states", tag = "terraform",
    params(("project" = String, Path)), responses((status = 200, body = Vec<StateView>)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(project): Extension<ProjectContext>,
) -> Result<ApiJson<Vec<StateView>>, ApiError> {
    let states = state.store.terraform_states(project.project.id).await?;
    Ok(ApiJson(
        states
            .into_iter()
            .map(|s| StateView {
                name: s.name,
                serial: s.latest.as_ref().map(|v| v.serial),
                lineage: s.latest.as_ref().map(|v| v.lineage.clone()),
                size: s.latest.as_ref().map(|v| v.size),
                updated_at: s.latest.as_ref().map(|v| rfc3339(v.created_at)),
                updated_by: s.latest.map(|v| v.created_by),
                lock: s.lock.map(lock_view),
            })
            .collect(),
    ))
}

/// The latest version of a state, as Terraform wrote it; 204 when there is none yet (what
/// Terraform's `http` backend reads as "no state", as GitLab answers).
#[utoipa::path(get, path = "/api/v1/projects/{project}/terraform/state/{name}", tag = "terraform",
    params(("project" = String, Path), ("name" = String, Path)),
    responses((status = 200, content_type = "application/json"), (status = 204)))]
pub async fn show(
    State(state): State<AppState>,
    Extension(project): Extension<ProjectContext>,
    ApiPath(path): ApiPath<StatePath>,
) -> Result<Response, ApiError> {
    validate_name(&path.name)?;
    let project_id = project.project.id;
    match state.store.terraform_latest(project_id, &path.name).await? {
        Some((version, ciphertext)) => {
            Ok(state_json(decrypt(&state, project_id, &path.name, version.serial, &ciphertext)?))
        }
        None => Ok(StatusCode::NO_CONTENT.into_response()),
    }
}

/// The fields of a state the rules need; the rest is stored as sent.
#[derive(Debug, Deserialize)]
struct StateHead {
    serial: i64,
    lineage: String,
}

/// Write a new version of a state (Terraform's `http` backend update). While the state is
/// locked, `?ID=` must name the lock. The serial must rise (or repeat with the same body) and
/// the lineage stay the latest's.
#[utoipa::path(post, path = "/api/v1/projects/{project}/terraform/state/{name}", tag = "terraform",
    params(("project" = String, Path), ("name" = String, Path), LockQuery),
    request_body(content = String, content_type = "application/json"),
    responses((status = 204), (status = 400, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 423, description = "locked: the holder's lock info")))]
pub async fn update(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(project): Extension<ProjectContext>,
    ApiPath(path): ApiPath<StatePath>,
    ApiQuery(query): ApiQuery<LockQuery>,
    body: Body,
) -> Result<Response, ApiError> {
    validate_name(&path.name)?;
    let bytes = read_body(body, MAX_STATE_BYTES, "a Terraform state").await?;
    let head: StateHead = serde_json::from_slice(&bytes).map_err(|error| match error.classify() {
        serde_json::error::Category::Data => ApiError::invalid(format!("not a Terraform state: {error}")),
        _ => malformed(&error),
    })?;
    if head.lineage.is_empty() || head.serial < 0 {
        return Err(ApiError::invalid("a Terraform state has a lineage and a serial of 0 or more"));
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| ApiError::bad_request("a Terraform state is UTF-8 JSON"))?;
    let project_id = project.project.id;
    let ciphertext = state.vault()?.encrypt(text, &context(project_id, &path.name, head.serial)).map_err(|error| {
        tracing::error!(%error, "encrypting a Terraform state failed");
        ApiError::internal()
    })?;
    let digest = hex::encode(sha2::Sha256::digest(&bytes));
    let pipeline_id = match principal.credential {
        Credential::Pipeline { pipeline_id, .. } => Some(pipeline_id),
        _ => None,
    };
    let version = NewTerraformVersion {
        serial: head.serial,
        lineage: &head.lineage,
        ciphertext: &ciphertext,
        digest: &digest,
        size: i64::try_from(bytes.len()).unwrap_or(i64::MAX),
        created_by: &principal.user.username,
        pipeline_id,
        // A pipeline's token names its pipeline, not the job using it.
        job_id: None,
    };
    match state.store.put_terraform_state(project_id, &path.name, query.id.as_deref(), &version).await? {
        StateWrite::Written | StateWrite::Unchanged => Ok(StatusCode::NO_CONTENT.into_response()),
        StateWrite::Locked(lock) => Ok(locked(&lock)),
        StateWrite::StaleSerial { latest } => Err(ApiError::new(
            StatusCode::CONFLICT,
            "stale_serial",
            format!(
                "serial {} is not above the latest version's ({latest}), or repeats it with another body: \
                 the state changed since it was read; run again from a fresh read",
                head.serial
            ),
        )),
        StateWrite::OtherLineage { latest } => Err(ApiError::new(
            StatusCode::CONFLICT,
            "lineage_mismatch",
            format!("lineage {} is not this state's ({latest}): this is another state", head.lineage),
        )),
    }
}

/// Delete a state with all its versions. Refused (423, with the lock) while it is locked.
#[utoipa::path(delete, path = "/api/v1/projects/{project}/terraform/state/{name}", tag = "terraform",
    params(("project" = String, Path), ("name" = String, Path)),
    responses((status = 200), (status = 404, body = ErrorBody), (status = 423, description = "locked")))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(project): Extension<ProjectContext>,
    ApiPath(path): ApiPath<StatePath>,
) -> Result<Response, ApiError> {
    validate_name(&path.name)?;
    match state.store.delete_terraform_state(&project.project, &path.name, principal.actor()).await? {
        None => Ok(StatusCode::OK.into_response()),
        Some(lock) => Ok(locked(&lock)),
    }
}

/// Terraform's lock info; the fields opsloop shows, the rest kept as sent.
#[derive(Debug, Deserialize)]
struct LockInfo {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "Operation", default)]
    operation: String,
    #[serde(rename = "Who", default)]
    who: String,
}

/// Lock a state (Terraform's lock request, body: its lock info). 200 when taken; 423 with the
/// holder's lock info when someone holds it.
#[utoipa::path(post, path = "/api/v1/projects/{project}/terraform/state/{name}/lock", tag = "terraform",
    params(("project" = String, Path), ("name" = String, Path)),
    request_body(content = String, content_type = "application/json", description = "Terraform's lock info"),
    responses((status = 200), (status = 400, body = ErrorBody), (status = 423, description = "the holder's lock info")))]
pub async fn lock(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(project): Extension<ProjectContext>,
    ApiPath(path): ApiPath<StatePath>,
    body: Body,
) -> Result<Response, ApiError> {
    validate_name(&path.name)?;
    let bytes = read_body(body, MAX_LOCK_BYTES, "Terraform's lock info").await?;
    let info: LockInfo = serde_json::from_slice(&bytes).map_err(|error| match error.classify() {
        serde_json::error::Category::Data => ApiError::invalid(format!("not Terraform's lock info: {error}")),
        _ => malformed(&error),
    })?;
    if info.id.is_empty() {
        return Err(ApiError::invalid("the lock info needs an ID"));
    }
    let text = String::from_utf8_lossy(&bytes);
    let new = NewTerraformLock {
        lock_id: &info.id,
        who: &info.who,
        operation: &info.operation,
        info: &text,
        locked_by: &principal.user.username,
    };
    match state.store.lock_terraform_state(project.project.id, &path.name, &new).await? {
        LockOutcome::Acquired => {
            Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], text.into_owned()).into_response())
        }
        LockOutcome::Held(lock) => Ok(locked(&lock)),
    }
}

/// Unlock a state. With Terraform's lock info as the body, releases that lock (200 also when
/// nothing is locked, so a retry succeeds); another lock held answers 409 with its info.
/// Without a body, or without an ID in it (`terraform force-unlock`), releases whatever lock
/// is held: a maintainer's decision, recorded in the audit log.
#[utoipa::path(delete, path = "/api/v1/projects/{project}/terraform/state/{name}/lock", tag = "terraform",
    params(("project" = String, Path), ("name" = String, Path)),
    request_body(content = String, content_type = "application/json", description = "Terraform's lock info, or nothing to force"),
    responses((status = 200), (status = 409, description = "another lock is held: its info")))]
pub async fn unlock(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(project): Extension<ProjectContext>,
    ApiPath(path): ApiPath<StatePath>,
    body: Body,
) -> Result<Response, ApiError> {
    validate_name(&path.name)?;
    let bytes = read_body(body, MAX_LOCK_BYTES, "Terraform's lock info").await?;
    let id = if bytes.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let value: serde_json::Value = serde_json::from_slice(&bytes).map_err(|error| malformed(&error))?;
        value.get("ID").and_then(|id| id.as_str()).filter(|id| !id.is_empty()).map(str::to_owned)
    };
    let Some(id) = id else {
        state.store.force_unlock_terraform_state(&project.project, &path.name, principal.actor()).await?;
        return Ok(StatusCode::OK.into_response());
    };
    match state.store.unlock_terraform_state(project.project.id, &path.name, &id).await? {
        UnlockOutcome::Released | UnlockOutcome::NotLocked => Ok(StatusCode::OK.into_response()),
        UnlockOutcome::Held(lock) => {
            Ok((StatusCode::CONFLICT, [(header::CONTENT_TYPE, "application/json")], lock.info).into_response())
        }
    }
}

/// Every version of a state, newest first.
#[utoipa::path(get, path = "/api/v1/projects/{project}/terraform/state/{name}/versions", tag = "terraform",
    params(("project" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = Vec<VersionView>), (status = 404, body = ErrorBody)))]
pub async fn versions(
    State(state): State<AppState>,
    Extension(project): Extension<ProjectContext>,
    ApiPath(path): ApiPath<StatePath>,
) -> Result<ApiJson<Vec<VersionView>>, ApiError> {
    validate_name(&path.name)?;
    let versions = state
        .store
        .terraform_versions(project.project.id, &path.name)
        .await?
        .ok_or_else(|| ApiError::not_found("terraform state"))?;
    Ok(ApiJson(versions.into_iter().map(version_view).collect()))
}

/// One version of a state by serial, as Terraform wrote it.
#[utoipa::path(get, path = "/api/v1/projects/{project}/terraform/state/{name}/versions/{serial}", tag = "terraform",
    params(("project" = String, Path), ("name" = String, Path), ("serial" = i64, Path)),
    responses((status = 200, content_type = "application/json"), (status = 404, body = ErrorBody)))]
pub async fn version(
    State(state): State<AppState>,
    Extension(project): Extension<ProjectContext>,
    ApiPath(path): ApiPath<VersionPath>,
) -> Result<Response, ApiError> {
    validate_name(&path.name)?;
    let project_id = project.project.id;
    let (version, ciphertext) = state
        .store
        .terraform_version(project_id, &path.name, path.serial)
        .await?
        .ok_or_else(|| ApiError::not_found("terraform state version"))?;
    Ok(state_json(decrypt(&state, project_id, &path.name, version.serial, &ciphertext)?))
}
