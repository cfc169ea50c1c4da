//! Pipeline trigger tokens, as on GitLab: maintainers make them
//! (`/api/v1/projects/{project}/triggers`), and whoever holds one starts pipelines with
//! `POST /api/v1/projects/{project}/trigger/pipeline` (`CI_PIPELINE_SOURCE=trigger`) without
//! a user account. The token travels in the body (JSON, or a form like GitLab's curl example:
//! `token=…&ref=main&variables[KEY]=value`) and is compared by digest.

use std::collections::BTreeMap;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{Principal, ProjectContext};
use crate::error::{ApiError, ApiJson, ApiPath, ErrorBody};
use crate::state::AppState;
use crate::views::{rfc3339, validate_branch};

/// Every trigger token starts with this.
pub const TRIGGER_TOKEN_PREFIX: &str = "olpt_";

#[derive(Debug, Serialize, ToSchema)]
pub struct TriggerView {
    pub id: i64,
    pub description: String,
    pub created_by: String,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<String>,
}

impl From<opsloop_store::PipelineTrigger> for TriggerView {
    fn from(trigger: opsloop_store::PipelineTrigger) -> Self {
        TriggerView {
            id: trigger.id,
            description: trigger.description,
            created_by: trigger.created_by,
            created_at: rfc3339(trigger.created_at),
            last_used_at: trigger.last_used_at.map(rfc3339),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTrigger {
    pub description: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedTrigger {
    #[serde(flatten)]
    pub trigger: TriggerView,
    /// The token, shown only now.
    pub token: String,
}

#[derive(Debug, Deserialize)]
pub struct TriggerPath {
    #[allow(dead_code)]
    project: String,
    trigger: i64,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TriggerPipeline {
    pub token: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
pub struct ProjectPath {
    project: String,
}

/// The project's trigger tokens (never the tokens themselves).
#[utoipa::path(get, path = "/api/v1/projects/{project}/triggers", tag = "pipelines",
    params(("project" = String, Path)), responses((status = 200, body = Vec<TriggerView>)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(context): Extension<ProjectContext>,
) -> Result<ApiJson<Vec<TriggerView>>, ApiError> {
    Ok(ApiJson(state.store.list_triggers(context.project.id).await?.into_iter().map(TriggerView::from).collect()))
}

/// Make a trigger token; it is shown once.
#[utoipa::path(post, path = "/api/v1/projects/{project}/triggers", tag = "pipelines",
    params(("project" = String, Path)), request_body = CreateTrigger,
    responses((status = 201, body = CreatedTrigger), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    ApiJson(input): ApiJson<CreateTrigger>,
) -> Result<(StatusCode, ApiJson<CreatedTrigger>), ApiError> {
    Ok((StatusCode::CREATED, ApiJson(create_trigger(&state, &principal, &context, input).await?)))
}

/// Makes a trigger token; shared by the API and the web UI.
pub async fn create_trigger(
    state: &AppState,
    principal: &Principal,
    context: &ProjectContext,
    input: CreateTrigger,
) -> Result<CreatedTrigger, ApiError> {
    let description = input.description.trim();
    if description.is_empty() || description.chars().count() > 255 {
        return Err(ApiError::invalid("a description of 1 to 255 characters says who uses the token"));
    }
    let token =
        format!("{TRIGGER_TOKEN_PREFIX}{}", crate::auth::credentials::new_secret().map_err(|_| ApiError::internal())?);
    let digest = crate::auth::credentials::digest(&token);
    let trigger = state.store.create_trigger(&context.project, description, &digest, principal.actor()).await?;
    Ok(CreatedTrigger { trigger: trigger.into(), token })
}

/// Revoke a trigger token.
#[utoipa::path(delete, path = "/api/v1/projects/{project}/triggers/{trigger}", tag = "pipelines",
    params(("project" = String, Path), ("trigger" = i64, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    ApiPath(path): ApiPath<TriggerPath>,
) -> Result<StatusCode, ApiError> {
    if state.store.delete_trigger(&context.project, path.trigger, principal.actor()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("trigger"))
    }
}

/// A form body as GitLab's trigger API takes it: `token`, `ref`, `variables[KEY]`.
fn from_form(body: &[u8]) -> Result<TriggerPipeline, ApiError> {
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_bytes(body).map_err(|_| ApiError::invalid("the form body cannot be read"))?;
    let (mut token, mut git_ref, mut variables) = (None, None, BTreeMap::new());
    for (key, value) in pairs {
        match key.as_str() {
            "token" => token = Some(value),
            "ref" => git_ref = Some(value),
            other => match other.strip_prefix("variables[").and_then(|rest| rest.strip_suffix(']')) {
                Some(name) => {
                    variables.insert(name.to_owned(), value);
                }
                None => return Err(ApiError::invalid(format!("unknown field `{other}`"))),
            },
        }
    }
    Ok(TriggerPipeline {
        token: token.ok_or_else(|| ApiError::invalid("the trigger token is missing"))?,
        git_ref: git_ref.ok_or_else(|| ApiError::invalid("ref is missing"))?,
        variables,
    })
}

/// Start a pipeline with a trigger token (no user credentials).
#[utoipa::path(post, path = "/api/v1/projects/{project}/trigger/pipeline", tag = "pipelines",
    params(("project" = String, Path)), request_body = TriggerPipeline,
    responses((status = 201, body = super::pipelines::PipelineView), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(()))]
pub async fn trigger_pipeline(
    State(state): State<AppState>,
    ApiPath(path): ApiPath<ProjectPath>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, ApiJson<super::pipelines::PipelineView>), ApiError> {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let input = if form {
        from_form(&body)?
    } else {
        serde_json::from_slice::<TriggerPipeline>(&body)
            .map_err(|e| ApiError::invalid(format!("the body is not a trigger request: {e}")))?
    };
    // The same answer for an unknown project and a wrong token: neither is told apart.
    let project = state.store.project_by_name(&path.project).await?.ok_or_else(ApiError::unauthorized)?;
    let digest = crate::auth::credentials::digest(&input.token);
    let trigger = state.store.use_trigger(project.id, &digest).await?.ok_or_else(|| {
        tracing::warn!(project = %project.name, "a trigger request with a wrong token");
        ApiError::unauthorized()
    })?;
    validate_branch(&input.git_ref)?;
    for name in input.variables.keys() {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(ApiError::invalid(format!("variable name `{name}` may hold only letters, digits and `_`")));
        }
    }
    let actor_name = format!("trigger:{}", trigger.description);
    let actor = opsloop_store::Actor { name: &actor_name, source_ip: "" };
    let variables = input.variables.into_iter().collect();
    let pipeline = crate::ci::trigger(&state, &project, &input.git_ref, None, "trigger", variables, actor).await?;
    Ok((StatusCode::CREATED, ApiJson(pipeline.into())))
}
