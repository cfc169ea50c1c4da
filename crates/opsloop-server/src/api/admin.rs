//! `/api/v1/admin`: users and the audit log, for instance admins.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{Page, PageQuery};
use crate::accounts;
use crate::auth::Principal;
use crate::error::{ApiError, ApiJson, ApiQuery, ErrorBody};
use crate::state::AppState;
use crate::views::rfc3339;

#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub username: String,
    pub is_admin: bool,
    pub disabled: bool,
    pub created_at: String,
}

impl From<opsloop_store::User> for UserView {
    fn from(user: opsloop_store::User) -> Self {
        UserView {
            username: user.username,
            is_admin: user.is_admin,
            disabled: user.disabled,
            created_at: rfc3339(user.created_at),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUser {
    pub username: String,
    /// At least 12 characters. Omit to generate one, which the user must change at first sign-in.
    pub password: Option<String>,
    #[serde(default)]
    pub admin: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedUser {
    #[serde(flatten)]
    pub user: UserView,
    /// The generated password, when none was given; shown only now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct AuditView {
    pub id: i64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
    pub source_ip: String,
}

/// All users.
#[utoipa::path(get, path = "/api/v1/admin/users", tag = "admin", params(PageQuery),
    responses((status = 200, body = Page<UserView>), (status = 403, body = ErrorBody)))]
pub async fn list_users(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<ApiJson<Page<UserView>>, ApiError> {
    Ok(ApiJson(Page::map(state.store.list_users(&query.request()).await?, UserView::from)))
}

/// Create a user.
#[utoipa::path(post, path = "/api/v1/admin/users", tag = "admin", request_body = CreateUser,
    responses((status = 201, body = CreatedUser), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create_user(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(input): ApiJson<CreateUser>,
) -> Result<(StatusCode, ApiJson<CreatedUser>), ApiError> {
    let (user, password) =
        accounts::create_user(&state.store, &input.username, input.password.as_deref(), input.admin, principal.actor())
            .await?;
    Ok((StatusCode::CREATED, ApiJson(CreatedUser { user: user.into(), password })))
}

/// The audit log, newest first.
#[utoipa::path(get, path = "/api/v1/admin/audit", tag = "admin", params(PageQuery),
    responses((status = 200, body = Page<AuditView>), (status = 403, body = ErrorBody)))]
pub async fn audit(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PageQuery>,
) -> Result<ApiJson<Page<AuditView>>, ApiError> {
    let page = state.store.list_audit(&query.request()).await?;
    Ok(ApiJson(Page::map(page, |entry| AuditView {
        id: entry.id,
        at: rfc3339(entry.at),
        actor: entry.actor,
        action: entry.action,
        target: entry.target,
        detail: entry.detail,
        source_ip: entry.source_ip,
    })))
}
