//! The signed-in user's own settings: API tokens and password.

use axum::Extension;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use opsloop_core::Role;
use serde::Deserialize;

use super::{csrf_field, error_box, failure, layout, notice, role_options};
use crate::api::tokens::{CreatedToken, create_for};
use crate::auth::{Principal, credentials};
use crate::error::ApiError;
use crate::state::AppState;
use crate::views::human_time;

#[derive(Debug, Deserialize)]
pub struct SettingsQuery {
    notice: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct TokenForm {
    name: String,
    role: String,
    #[serde(default)]
    expires_in_days: String,
}

#[derive(Debug, Deserialize)]
pub struct PasswordForm {
    current_password: String,
    new_password: String,
    confirm_password: String,
}

pub async fn settings(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(query): Query<SettingsQuery>,
) -> Response {
    render(&state, &principal, query.notice.as_deref(), None, None).await
}

async fn render(
    state: &AppState,
    principal: &Principal,
    notice_key: Option<&str>,
    created: Option<&CreatedToken>,
    error: Option<(StatusCode, &str)>,
) -> Response {
    let tokens = match state.store.list_tokens(principal.user.id).await {
        Ok(tokens) => tokens,
        Err(error) => return failure(error),
    };
    let now = state.clock.now_ms();
    let grantable: Vec<Role> = Role::ALL.into_iter().filter(|role| *role <= principal.cap).collect();
    let must_change = principal.user.must_change_password;
    let markup = layout(
        "Settings",
        Some(principal),
        "/settings",
        html! {
            h1 { "Settings" }
            (notice(notice_key.or(must_change.then_some("must-change"))))
            (error_box(error.map(|(_, message)| message)))
            @if let Some(created) = created {
                div.notice role="status" {
                    p { "Token " strong { (created.info.name) } " created. Copy it now: it will not be shown again." }
                    p.secret id="new-token" { (created.token) }
                }
            }
            h2 id="password" { "Password" }
            form.stack method="post" action="/settings/password" aria-labelledby="password" {
                (csrf_field(principal))
                label { "Current password" input type="password" name="current_password" autocomplete="current-password" required; }
                label { "New password" small { "at least " (credentials::MIN_PASSWORD_LEN) " characters" }
                    input type="password" name="new_password" autocomplete="new-password" required minlength=(credentials::MIN_PASSWORD_LEN); }
                label { "Repeat the new password" input type="password" name="confirm_password" autocomplete="new-password" required; }
                button type="submit" { "Change password" }
            }
            @if !must_change {
                h2 id="tokens" { "API tokens" }
                p.hint { "For the CLI and scripts: send as " code { "Authorization: Bearer <token>" } ", or set " code { "OPSLOOP_TOKEN" } ". A token never does more than its role allows, nor more than you can." }
                @if tokens.is_empty() {
                    p.muted { "You have no API tokens." }
                } @else {
                    table aria-labelledby="tokens" {
                        thead { tr { th scope="col" { "Name" } th scope="col" { "Role" } th scope="col" { "Created" } th scope="col" { "Expires" } th scope="col" { "Last used" } th scope="col" { "Status" } th scope="col" { span.muted { "Actions" } } } }
                        tbody {
                            @for token in &tokens {
                                @let active = token.is_usable_at(now);
                                tr {
                                    td { (token.name) }
                                    td { (token.role) }
                                    td { (human_time(token.created_at)) }
                                    td { (token.expires_at.map(human_time).unwrap_or_else(|| "never".to_owned())) }
                                    td { (token.last_used_at.map(human_time).unwrap_or_else(|| "never".to_owned())) }
                                    td { @if active { "active" } @else if token.revoked_at.is_some() { "revoked" } @else { "expired" } }
                                    td {
                                        @if active && principal.cap >= Role::Developer {
                                            form.inline method="post" action={ "/settings/tokens/" (token.id) "/revoke" } {
                                                (csrf_field(principal))
                                                button.secondary type="submit" aria-label={ "Revoke token " (token.name) } { "Revoke" }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                @if principal.cap >= Role::Developer {
                    h3 id="new-token-form" { "New token" }
                    form.stack method="post" action="/settings/tokens" aria-labelledby="new-token-form" {
                        (csrf_field(principal))
                        label { "Name" small { "what the token is for, e.g. laptop CLI" } input type="text" name="name" required maxlength="100"; }
                        label { "Role" select name="role" { (role_options(&grantable, Role::Developer.min(principal.cap))) } }
                        label { "Expires in days" small { "leave empty for no expiry" } input type="number" name="expires_in_days" min="1" max="3650" value="90"; }
                        button type="submit" { "Create token" }
                    }
                }
            }
        },
    );
    let status = error.map_or(StatusCode::OK, |(status, _)| status);
    // The page may hold a new token's secret: keep it out of caches and history snapshots.
    (status, [(axum::http::header::CACHE_CONTROL, "no-store")], markup).into_response()
}

pub async fn create_token(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Form(form): Form<TokenForm>,
) -> Response {
    let days = form.expires_in_days.trim();
    let expires_in_days = if days.is_empty() {
        None
    } else {
        match days.parse::<u32>() {
            Ok(days) => Some(days),
            Err(_) => {
                let message = "Expires in days must be a whole number.";
                return render(&state, &principal, None, None, Some((StatusCode::UNPROCESSABLE_ENTITY, message))).await;
            }
        }
    };
    match create_for(&state, &principal, &form.name, Some(&form.role), expires_in_days).await {
        Ok(created) => render(&state, &principal, None, Some(&created), None).await,
        Err(error) => render(&state, &principal, None, None, Some((error.status, &error.message))).await,
    }
}

pub async fn revoke_token(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(id): Path<String>,
) -> Response {
    let Ok(id) = id.parse::<i64>() else { return failure(ApiError::not_found("token")) };
    match state.store.revoke_token(&principal.user, id, principal.actor()).await {
        Ok(()) => {
            state.token_cache.forget(id);
            Redirect::to("/settings?notice=revoked").into_response()
        }
        Err(error) => failure(error),
    }
}

pub async fn change_password(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Form(form): Form<PasswordForm>,
) -> Response {
    let stored = principal.user.password_hash.clone();
    let current = form.current_password.clone();
    let current_ok =
        tokio::task::spawn_blocking(move || credentials::verify_password(&current, &stored)).await.unwrap_or(false);
    if !current_ok {
        return render(
            &state,
            &principal,
            None,
            None,
            Some((StatusCode::UNPROCESSABLE_ENTITY, "The current password is wrong.")),
        )
        .await;
    }
    if form.new_password != form.confirm_password {
        return render(
            &state,
            &principal,
            None,
            None,
            Some((StatusCode::UNPROCESSABLE_ENTITY, "The two new passwords differ.")),
        )
        .await;
    }
    if form.new_password == form.current_password {
        return render(
            &state,
            &principal,
            None,
            None,
            Some((StatusCode::UNPROCESSABLE_ENTITY, "The new password must differ from the current one.")),
        )
        .await;
    }
    if let Err(error) = credentials::check_password_strength(&form.new_password) {
        let message = error.to_string();
        return render(&state, &principal, None, None, Some((StatusCode::UNPROCESSABLE_ENTITY, &message))).await;
    }
    let new_password = form.new_password.clone();
    let hash = match tokio::task::spawn_blocking(move || credentials::hash_password(&new_password)).await {
        Ok(Ok(hash)) => hash,
        _ => return failure(ApiError::internal()),
    };
    let current_session = match &principal.credential {
        crate::auth::Credential::Session { session_hash, .. } => Some(session_hash.as_str()),
        crate::auth::Credential::Token { .. } | crate::auth::Credential::Pipeline { .. } => None,
    };
    match state.store.set_password(&principal.user, &hash, false, current_session, principal.actor()).await {
        Ok(()) => {
            state.token_cache.forget_user(principal.user.id);
            Redirect::to("/settings?notice=password-changed").into_response()
        }
        Err(error) => failure(error),
    }
}
