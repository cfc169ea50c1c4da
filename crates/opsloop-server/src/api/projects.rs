//! `/api/v1/projects`: projects and their members.

use axum::Extension;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use opsloop_core::{Role, validate_name};
use opsloop_store::{NewProject, ProjectUpdate};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Page, PageQuery};
use crate::auth::{Principal, ProjectContext};
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use crate::state::AppState;
use crate::views::{rfc3339, validate_project_fields};

pub const DEFAULT_BRANCH: &str = "main";
pub const DEFAULT_PIPELINE_FILE: &str = ".gitlab-ci.yml";

#[derive(Debug, Serialize, ToSchema)]
pub struct ProjectView {
    pub name: String,
    pub description: String,
    /// A git URL or an absolute path to a local repository.
    pub repo_url: String,
    pub default_branch: String,
    /// Path of the pipeline definition inside the repository.
    pub pipeline_file: String,
    pub created_at: String,
    pub updated_at: String,
}

impl From<opsloop_store::Project> for ProjectView {
    fn from(project: opsloop_store::Project) -> Self {
        ProjectView {
            name: project.name,
            description: project.description,
            repo_url: project.repo_url,
            default_branch: project.default_branch,
            pipeline_file: project.pipeline_file,
            created_at: rfc3339(project.created_at),
            updated_at: rfc3339(project.updated_at),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    /// Lowercase letters, digits, `-`, `_`, `.`; at most 64 characters.
    pub name: String,
    pub repo_url: String,
    #[serde(default)]
    pub description: String,
    /// Defaults to `main`.
    pub default_branch: Option<String>,
    /// Defaults to `.gitlab-ci.yml`.
    pub pipeline_file: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateProject {
    pub description: Option<String>,
    pub repo_url: Option<String>,
    pub default_branch: Option<String>,
    pub pipeline_file: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemberView {
    pub username: String,
    /// owner, maintainer, developer or viewer.
    pub role: String,
    pub added_at: String,
}

#[derive(Debug, Deserialize)]
pub struct MemberPath {
    #[allow(dead_code)]
    project: String,
    username: String,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SetMember {
    /// owner, maintainer, developer or viewer.
    pub role: String,
}

/// Creates a project; shared by the API and the web UI so both apply the same rules.
pub async fn create_project(
    state: &AppState,
    principal: &Principal,
    input: CreateProject,
) -> Result<ProjectView, ApiError> {
    validate_name("project", &input.name)?;
    let default_branch = input.default_branch.as_deref().unwrap_or(DEFAULT_BRANCH);
    let pipeline_file = input.pipeline_file.as_deref().unwrap_or(DEFAULT_PIPELINE_FILE);
    validate_project_fields(
        Some(&input.description),
        Some(&input.repo_url),
        Some(default_branch),
        Some(pipeline_file),
    )?;
    let new = NewProject {
        name: &input.name,
        description: &input.description,
        repo_url: &input.repo_url,
        default_branch,
        pipeline_file,
    };
    let project = state.store.create_project(new, principal.user.id, principal.actor()).await?;
    Ok(project.into())
}

pub async fn update_project(
    state: &AppState,
    principal: &Principal,
    context: &ProjectContext,
    input: UpdateProject,
) -> Result<ProjectView, ApiError> {
    validate_project_fields(
        input.description.as_deref(),
        input.repo_url.as_deref(),
        input.default_branch.as_deref(),
        input.pipeline_file.as_deref(),
    )?;
    let update = ProjectUpdate {
        description: input.description,
        repo_url: input.repo_url,
        default_branch: input.default_branch,
        pipeline_file: input.pipeline_file,
    };
    Ok(state.store.update_project(&context.project.name, &update, principal.actor()).await?.into())
}

/// Adds a member or changes their role; only owners may make owners.
pub async fn set_project_member(
    state: &AppState,
    principal: &Principal,
    context: &ProjectContext,
    username: &str,
    role: &str,
) -> Result<(), ApiError> {
    let role: Role = role.parse().map_err(|e: opsloop_core::RoleParseError| ApiError::invalid(e.to_string()))?;
    if !role.is_project_role() {
        return Err(ApiError::invalid("`admin` is an instance role, not a project role"));
    }
    if role == Role::Owner && context.role < Role::Owner {
        return Err(ApiError::forbidden("only owners can make other members owners"));
    }
    let user = state.store.user_by_username(username).await?.ok_or_else(|| ApiError::not_found("user"))?;
    let current = state.store.member_role(context.project.id, user.id).await?;
    if current == Some(Role::Owner) && context.role < Role::Owner {
        return Err(ApiError::forbidden("only owners can change an owner's role"));
    }
    state.store.set_member(&context.project, &user, role, principal.actor()).await?;
    Ok(())
}

pub async fn remove_project_member(
    state: &AppState,
    principal: &Principal,
    context: &ProjectContext,
    username: &str,
) -> Result<(), ApiError> {
    let user = state.store.user_by_username(username).await?.ok_or_else(|| ApiError::not_found("user"))?;
    let current = state.store.member_role(context.project.id, user.id).await?;
    if current == Some(Role::Owner) && context.role < Role::Owner {
        return Err(ApiError::forbidden("only owners can remove an owner"));
    }
    state.store.remove_member(&context.project, &user, principal.actor()).await?;
    Ok(())
}

/// List the projects you can see (all of them for instance admins).
#[utoipa::path(get, path = "/api/v1/projects", tag = "projects", params(PageQuery),
    responses((status = 200, body = Page<ProjectView>), (status = 401, body = ErrorBody)))]
pub async fn list(
    axum::extract::State(state): axum::extract::State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<axum::response::Response, ApiError> {
    let member = if principal.user.is_admin { None } else { Some(principal.user.id) };
    let request = query.request();
    let key = (member, request.after.clone(), request.limit);
    // Read the generation before the query: a write racing with it then misses the cache.
    let generation = state.store.project_generation();
    let body = match state.page_cache.get(&key, generation) {
        Some(body) => body,
        None => {
            let page = state.store.list_projects(member, &request).await?;
            let body = serde_json::to_vec(&Page::map(page, ProjectView::from)).map_err(|error| {
                tracing::error!(%error, "serialising a project page failed");
                ApiError::internal()
            })?;
            let body = axum::body::Bytes::from(body);
            state.page_cache.put(key, generation, body.clone());
            body
        }
    };
    Ok(([(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Create a project; you become its owner.
#[utoipa::path(post, path = "/api/v1/projects", tag = "projects", request_body = CreateProject,
    responses((status = 201, body = ProjectView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    axum::extract::State(state): axum::extract::State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(input): ApiJson<CreateProject>,
) -> Result<(StatusCode, ApiJson<ProjectView>), ApiError> {
    let project = create_project(&state, &principal, input).await?;
    Ok((StatusCode::CREATED, ApiJson(project)))
}

/// Show a project.
#[utoipa::path(get, path = "/api/v1/projects/{project}", tag = "projects", params(("project" = String, Path)),
    responses((status = 200, body = ProjectView), (status = 404, body = ErrorBody)))]
pub async fn show(Extension(context): Extension<ProjectContext>) -> ApiJson<ProjectView> {
    ApiJson(context.project.into())
}

/// Change a project's description, repository, default branch or pipeline file.
#[utoipa::path(patch, path = "/api/v1/projects/{project}", tag = "projects", params(("project" = String, Path)),
    request_body = UpdateProject,
    responses((status = 200, body = ProjectView), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn update(
    axum::extract::State(state): axum::extract::State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    ApiJson(input): ApiJson<UpdateProject>,
) -> Result<ApiJson<ProjectView>, ApiError> {
    Ok(ApiJson(update_project(&state, &principal, &context, input).await?))
}

/// Delete a project and everything that belongs to it.
#[utoipa::path(delete, path = "/api/v1/projects/{project}", tag = "projects", params(("project" = String, Path)),
    responses((status = 204), (status = 403, body = ErrorBody)))]
pub async fn delete(
    axum::extract::State(state): axum::extract::State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
) -> Result<StatusCode, ApiError> {
    state.store.delete_project(&context.project.name, principal.actor()).await?;
    crate::objects::forget_project(&state, context.project.id);
    Ok(StatusCode::NO_CONTENT)
}

/// List a project's members and their roles.
#[utoipa::path(get, path = "/api/v1/projects/{project}/members", tag = "projects", params(("project" = String, Path)),
    responses((status = 200, body = Vec<MemberView>)))]
pub async fn members(
    axum::extract::State(state): axum::extract::State<AppState>,
    Extension(context): Extension<ProjectContext>,
) -> Result<ApiJson<Vec<MemberView>>, ApiError> {
    let members = state.store.list_members(context.project.id).await?;
    Ok(ApiJson(
        members
            .into_iter()
            .map(|m| MemberView { username: m.username, role: m.role.to_string(), added_at: rfc3339(m.created_at) })
            .collect(),
    ))
}

/// Add a member to a project or change their role.
#[utoipa::path(put, path = "/api/v1/projects/{project}/members/{username}", tag = "projects",
    params(("project" = String, Path), ("username" = String, Path)), request_body = SetMember,
    responses((status = 204), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn set_member(
    axum::extract::State(state): axum::extract::State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    ApiPath(path): ApiPath<MemberPath>,
    ApiJson(input): ApiJson<SetMember>,
) -> Result<StatusCode, ApiError> {
    set_project_member(&state, &principal, &context, &path.username, &input.role).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Remove a member from a project.
#[utoipa::path(delete, path = "/api/v1/projects/{project}/members/{username}", tag = "projects",
    params(("project" = String, Path), ("username" = String, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn remove_member(
    axum::extract::State(state): axum::extract::State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    ApiPath(path): ApiPath<MemberPath>,
) -> Result<StatusCode, ApiError> {
    remove_project_member(&state, &principal, &context, &path.username).await?;
    Ok(StatusCode::NO_CONTENT)
}
