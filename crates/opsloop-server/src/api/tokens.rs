//! `/api/v1/me` and `/api/v1/tokens`: who am I, and my API tokens.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use opsloop_core::Role;
use opsloop_store::ApiToken;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::accounts;
use crate::auth::{Credential, Principal};
use crate::error::{ApiError, ApiJson, ApiPath, ErrorBody};
use crate::state::AppState;
use crate::views::rfc3339;

#[derive(Debug, Serialize, ToSchema)]
pub struct Me {
    pub username: String,
    pub is_admin: bool,
    /// The most this credential may do.
    pub role: String,
    /// `token` or `session`.
    pub credential: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    pub id: i64,
    pub name: String,
    pub role: String,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<String>,
    /// Neither revoked nor expired.
    pub active: bool,
}

impl TokenView {
    pub fn new(token: &ApiToken, now_ms: i64) -> Self {
        TokenView {
            id: token.id,
            name: token.name.clone(),
            role: token.role.to_string(),
            created_at: rfc3339(token.created_at),
            expires_at: token.expires_at.map(rfc3339),
            revoked_at: token.revoked_at.map(rfc3339),
            last_used_at: token.last_used_at.map(rfc3339),
            active: token.is_usable_at(now_ms),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateToken {
    pub name: String,
    /// admin, owner, maintainer, developer or viewer; defaults to the role of the credential
    /// making the request, and can never exceed it.
    pub role: Option<String>,
    /// Omit for a token that does not expire.
    pub expires_in_days: Option<u32>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    /// The secret; shown only now. Send it as `Authorization: Bearer <token>`.
    pub token: String,
    #[serde(flatten)]
    pub info: TokenView,
}

/// Who is calling, with which credential and role.
#[utoipa::path(get, path = "/api/v1/me", tag = "tokens", responses((status = 200, body = Me), (status = 401, body = ErrorBody)))]
pub async fn me(Extension(principal): Extension<Principal>) -> ApiJson<Me> {
    let credential = match principal.credential {
        Credential::Token { .. } => "token",
        Credential::Session { .. } => "session",
        Credential::Pipeline { .. } => "pipeline",
    };
    ApiJson(Me {
        username: principal.user.username.clone(),
        is_admin: principal.user.is_admin,
        role: principal.cap.to_string(),
        credential: credential.to_owned(),
    })
}

/// Your API tokens (secrets are never shown again).
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", responses((status = 200, body = Vec<TokenView>)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
) -> Result<ApiJson<Vec<TokenView>>, ApiError> {
    let now = state.clock.now_ms();
    let tokens = state.store.list_tokens(principal.user.id).await?;
    Ok(ApiJson(tokens.iter().map(|token| TokenView::new(token, now)).collect()))
}

/// Create an API token for yourself.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", request_body = CreateToken,
    responses((status = 201, body = CreatedToken), (status = 403, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiJson(input): ApiJson<CreateToken>,
) -> Result<(StatusCode, ApiJson<CreatedToken>), ApiError> {
    let created = create_for(&state, &principal, &input.name, input.role.as_deref(), input.expires_in_days).await?;
    Ok((StatusCode::CREATED, ApiJson(created)))
}

/// Creates a token for the caller; a credential can never mint one stronger than itself.
pub async fn create_for(
    state: &AppState,
    principal: &Principal,
    name: &str,
    role: Option<&str>,
    expires_in_days: Option<u32>,
) -> Result<CreatedToken, ApiError> {
    let role = match role {
        Some(text) => text.parse::<Role>().map_err(|e| ApiError::invalid(e.to_string()))?,
        None => principal.cap,
    };
    if role > principal.cap {
        return Err(ApiError::forbidden(format!("a `{}` credential cannot create a `{role}` token", principal.cap)));
    }
    let (secret, token) =
        accounts::issue_token(&state.store, &principal.user, name, role, expires_in_days, principal.actor()).await?;
    Ok(CreatedToken { token: secret, info: TokenView::new(&token, state.clock.now_ms()) })
}

/// Revoke one of your tokens at once.
#[utoipa::path(delete, path = "/api/v1/tokens/{id}", tag = "tokens", params(("id" = i64, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn revoke(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    ApiPath(id): ApiPath<i64>,
) -> Result<StatusCode, ApiError> {
    state.store.revoke_token(&principal.user, id, principal.actor()).await?;
    state.token_cache.forget(id);
    Ok(StatusCode::NO_CONTENT)
}
