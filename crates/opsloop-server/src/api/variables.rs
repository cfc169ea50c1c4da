//! `/api/v1/projects/{project}/variables` and `/api/v1/admin/variables` (the instance's, for
//! every project): CI/CD variables, encrypted at rest, write-only.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::{Principal, ProjectContext};
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use crate::state::AppState;
use crate::views::rfc3339;

#[derive(Debug, Serialize, ToSchema)]
pub struct VariableView {
    pub key: String,
    pub environment_scope: String,
    /// Replaced by `[MASKED]` in every job log.
    pub masked: bool,
    /// Given only to pipelines of the default branch.
    pub protected: bool,
    /// The job gets a path to a file holding the value.
    pub file: bool,
    pub updated_at: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetVariable {
    pub value: String,
    #[serde(default)]
    pub masked: bool,
    #[serde(default)]
    pub protected: bool,
    #[serde(default)]
    pub file: bool,
    /// `*` (default) or an environment name pattern such as `production` or `review/*`.
    pub environment_scope: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct VariablePath {
    #[allow(dead_code)]
    project: String,
    key: String,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ScopeQuery {
    /// The environment scope of the variable to delete (default `*`).
    pub environment_scope: Option<String>,
}

fn validate_key(key: &str) -> Result<(), ApiError> {
    let ok = !key.is_empty()
        && key.len() <= 255
        && key.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid("a variable key is letters, digits and `_`, not starting with a digit"))
    }
}

/// Whose variable it is: the encryption context binds a value to its owner, key and scope.
#[derive(Debug, Clone, Copy)]
pub enum Owner {
    Project(i64),
    Instance,
}

fn context(owner: Owner, key: &str, scope: &str) -> String {
    match owner {
        Owner::Project(project_id) => format!("project:{project_id}/variable:{key}/scope:{scope}"),
        Owner::Instance => format!("instance/variable:{key}/scope:{scope}"),
    }
}

/// Decrypts a stored variable for a pipeline.
pub fn reveal(state: &AppState, owner: Owner, stored: &opsloop_store::StoredVariable) -> Result<String, ApiError> {
    state.vault()?.decrypt(&stored.ciphertext, &context(owner, &stored.key, &stored.environment_scope)).map_err(
        |error| {
            tracing::error!(key = %stored.key, %error, "a stored variable does not decrypt");
            ApiError::internal()
        },
    )
}

fn view(v: opsloop_store::StoredVariable) -> VariableView {
    VariableView {
        key: v.key,
        environment_scope: v.environment_scope,
        masked: v.masked,
        protected: v.protected,
        file: v.file,
        updated_at: rfc3339(v.updated_at),
    }
}

/// Validates a variable and encrypts its value for `owner`.
fn seal(
    state: &AppState,
    owner: Owner,
    key: String,
    input: SetVariable,
) -> Result<opsloop_store::StoredVariable, ApiError> {
    validate_key(&key)?;
    let scope = input.environment_scope.unwrap_or_else(|| "*".to_owned());
    if scope.is_empty() || scope.len() > 255 || scope.chars().any(char::is_control) {
        return Err(ApiError::invalid("environment_scope is `*` or an environment name pattern"));
    }
    if input.value.len() > 64 * 1024 {
        return Err(ApiError::invalid("a variable's value is at most 64 KiB"));
    }
    if input.masked && (input.value.chars().count() < 8 || input.value.contains(['\n', '\r'])) {
        return Err(ApiError::invalid(
            "a masked value is one line of at least 8 characters, so it can be found in logs",
        ));
    }
    let ciphertext = state.vault()?.encrypt(&input.value, &context(owner, &key, &scope)).map_err(|error| {
        tracing::error!(%error, "encrypting a variable failed");
        ApiError::internal()
    })?;
    Ok(opsloop_store::StoredVariable {
        key,
        environment_scope: scope,
        ciphertext,
        masked: input.masked,
        protected: input.protected,
        file: input.file,
        updated_at: 0,
    })
}

/// The project's variables, without their values.
#[utoipa::path(get, path = "/api/v1/projects/{project}/variables", tag = "variables", params(("project" = String, Path)),
    responses((status = 200, body = Vec<VariableView>)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(context): Extension<ProjectContext>,
) -> Result<ApiJson<Vec<VariableView>>, ApiError> {
    let variables = state.store.list_variables(context.project.id).await?;
    Ok(ApiJson(variables.into_iter().map(view).collect()))
}

/// Create or replace a variable. The value is encrypted and never shown again.
#[utoipa::path(put, path = "/api/v1/projects/{project}/variables/{key}", tag = "variables",
    params(("project" = String, Path), ("key" = String, Path)), request_body = SetVariable,
    responses((status = 204), (status = 422, body = ErrorBody)))]
pub async fn set(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(project): Extension<ProjectContext>,
    ApiPath(path): ApiPath<VariablePath>,
    ApiJson(input): ApiJson<SetVariable>,
) -> Result<StatusCode, ApiError> {
    set_project_variable(&state, &principal, &project, path.key, input).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Validates, encrypts and stores a project variable; shared by the API and the web UI.
pub async fn set_project_variable(
    state: &AppState,
    principal: &Principal,
    project: &ProjectContext,
    key: String,
    input: SetVariable,
) -> Result<(), ApiError> {
    let stored = seal(state, Owner::Project(project.project.id), key, input)?;
    state.store.set_variable(&project.project, &stored, principal.actor()).await?;
    Ok(())
}

/// Validates, encrypts and stores an instance variable; shared by the API and the web UI.
pub async fn set_instance_variable(
    state: &AppState,
    principal: &Principal,
    key: String,
    input: SetVariable,
) -> Result<(), ApiError> {
    let stored = seal(state, Owner::Instance, key, input)?;
    state.store.set_instance_variable(&stored, principal.actor()).await?;
    Ok(())
}

/// Delete a variable.
#[utoipa::path(delete, path = "/api/v1/projects/{project}/variables/{key}", tag = "variables",
    params(("project" = String, Path), ("key" = String, Path), ScopeQuery),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(project): Extension<ProjectContext>,
    ApiPath(path): ApiPath<VariablePath>,
    ApiQuery(query): ApiQuery<ScopeQuery>,
) -> Result<StatusCode, ApiError> {
    let scope = query.environment_scope.unwrap_or_else(|| "*".to_owned());
    state.store.delete_variable(&project.project, &path.key, &scope, principal.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
pub struct InstanceVariablePath {
    key: String,
}

/// The instance's variables (given to every project's pipelines), without their values.
#[utoipa::path(get, path = "/api/v1/admin/variables", tag = "admin", responses((status = 200, body = Vec<VariableView>)))]
pub async fn list_instance(State(state): State<AppState>) -> Result<ApiJson<Vec<VariableView>>, ApiError> {
    Ok(ApiJson(state.store.list_instance_variables().await?.into_iter().map(view).collect()))
}

/// Create or replace an instance variable; a project's variable of the same key wins over it.
#[utoipa::path(put, path = "/api/v1/admin/variables/{key}", tag = "admin", params(("key" = String, Path)),
    request_body = SetVariable, responses((status = 204), (status = 422, body = ErrorBody)))]
pub async fn set_instance(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(path): ApiPath<InstanceVariablePath>,
    ApiJson(input): ApiJson<SetVariable>,
) -> Result<StatusCode, ApiError> {
    set_instance_variable(&state, &principal, path.key, input).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Delete an instance variable.
#[utoipa::path(delete, path = "/api/v1/admin/variables/{key}", tag = "admin",
    params(("key" = String, Path), ScopeQuery), responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_instance(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(path): ApiPath<InstanceVariablePath>,
    ApiQuery(query): ApiQuery<ScopeQuery>,
) -> Result<StatusCode, ApiError> {
    let scope = query.environment_scope.unwrap_or_else(|| "*".to_owned());
    state.store.delete_instance_variable(&path.key, &scope, principal.actor()).await?;
    Ok(StatusCode::NO_CONTENT)
}
