//! Sign-in and sign-out.

use std::net::SocketAddr;

use axum::Extension;
use axum::extract::{ConnectInfo, Form, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;

use super::{error_box, layout};
use crate::auth::{CSRF_FIELD, Credential, LOGIN_CSRF_COOKIE, Principal, SESSION_COOKIE, credentials};
use crate::state::AppState;

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
    #[serde(default)]
    next: String,
}

/// Only same-site paths: `/x`, never `//host` or `https://…`, so login cannot redirect away.
fn safe_next(next: &str) -> &str {
    // Browsers drop tabs and newlines and read `\` as `/`, so `/\t/evil` would become
    // `//evil`: refuse any of them anywhere, not only at the start.
    let plain = !next.chars().any(|c| c.is_control() || c.is_whitespace() || c == '\\');
    if plain && next.starts_with('/') && !next.starts_with("//") { next } else { "/projects" }
}

fn cookie_header(
    name: &str,
    value: &str,
    path: &str,
    max_age_seconds: u64,
    secure: bool,
    same_site: &str,
) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let text =
        format!("{name}={value}; Path={path}; HttpOnly; SameSite={same_site}; Max-Age={max_age_seconds}{secure}");
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

fn login_page(state: &AppState, next: &str, error: Option<&str>, status: StatusCode) -> Response {
    let Ok(csrf) = credentials::new_secret() else {
        return super::error_page(StatusCode::INTERNAL_SERVER_ERROR, "could not create a sign-in form");
    };
    let page = layout(
        "Sign in",
        None,
        "/login",
        html! {
            div.login {
                h1 { "Sign in to opsloop" }
                (error_box(error))
                form.stack method="post" action="/login" {
                    input type="hidden" name=(CSRF_FIELD) value=(csrf);
                    input type="hidden" name="next" value=(next);
                    label { "Username" input type="text" name="username" autocomplete="username" required autofocus; }
                    label { "Password" input type="password" name="password" autocomplete="current-password" required; }
                    button type="submit" { "Sign in" }
                }
                p.hint { "First start printed the password of the user " code { "admin" } " once. More users: " code { "opsloop admin user create NAME" } "." }
            }
        },
    );
    let cookie = cookie_header(LOGIN_CSRF_COOKIE, &csrf, "/login", 3600, state.config.secure_cookies(), "Strict");
    (status, [(header::SET_COOKIE, cookie)], page).into_response()
}

pub async fn form(State(state): State<AppState>, Query(query): Query<LoginQuery>) -> Response {
    login_page(&state, safe_next(query.next.as_deref().unwrap_or("/projects")), None, StatusCode::OK)
}

pub async fn submit(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Form(input): Form<LoginForm>,
) -> Response {
    let ip = peer.ip().to_string();
    let ip_key = format!("ip:{ip}");
    let user_key = format!("user:{}", input.username.chars().take(64).collect::<String>());
    let keys = [ip_key.as_str(), user_key.as_str()];
    let next = safe_next(&input.next).to_owned();
    if let Some(wait) = state.login_limiter.blocked(&keys, state.clock.as_ref()) {
        tracing::warn!(%ip, "sign-in blocked by rate limit");
        let mut response = login_page(
            &state,
            &next,
            Some(&format!("Too many failed sign-ins. Try again in {wait} seconds.")),
            StatusCode::TOO_MANY_REQUESTS,
        );
        if let Ok(value) = HeaderValue::from_str(&wait.to_string()) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }

    // Count the attempt before checking it, so parallel guesses cannot all pass the limit; a
    // success clears the count again.
    state.login_limiter.record_failure(&keys, state.clock.as_ref());
    let user = match state.store.user_by_username(&input.username).await {
        Ok(user) => user,
        Err(error) => return crate::error::ApiError::from(error).into_response(),
    };
    // Verify against a decoy when the user is unknown, so timing does not reveal usernames.
    let hash = user.as_ref().map_or(credentials::decoy_hash(), |u| u.password_hash.as_str()).to_owned();
    let password = input.password.clone();
    let matches =
        tokio::task::spawn_blocking(move || credentials::verify_password(&password, &hash)).await.unwrap_or(false);
    let user = match user {
        Some(user) if matches && !user.disabled => user,
        _ => {
            tracing::warn!(%ip, "failed sign-in");
            return login_page(&state, &next, Some("Wrong username or password."), StatusCode::UNAUTHORIZED);
        }
    };
    state.login_limiter.record_success(&keys);

    let (Ok(session_id), Ok(csrf)) = (credentials::new_secret(), credentials::new_secret()) else {
        return super::error_page(StatusCode::INTERNAL_SERVER_ERROR, "could not start a session");
    };
    let ttl_seconds = state.config.auth.session_ttl_hours.saturating_mul(3600);
    let expires_at = state.clock.now_ms() + i64::try_from(ttl_seconds.saturating_mul(1000)).unwrap_or(i64::MAX / 2);
    if let Err(error) = state.store.create_session(&credentials::digest(&session_id), user.id, &csrf, expires_at).await
    {
        return crate::error::ApiError::from(error).into_response();
    }
    let actor = opsloop_store::Actor { name: &user.username, source_ip: &ip };
    let audit = opsloop_store::NewAuditEntry { actor, action: "session.login", target: &user.username, detail: "" };
    if let Err(error) = state.store.append_audit(audit).await {
        tracing::error!(%error, "could not record sign-in in the audit log");
    }
    let secure = state.config.secure_cookies();
    let target = if user.must_change_password { "/settings?notice=must-change".to_owned() } else { next };
    let mut headers = HeaderMap::new();
    headers.append(header::SET_COOKIE, cookie_header(SESSION_COOKIE, &session_id, "/", ttl_seconds, secure, "Lax"));
    headers.append(header::SET_COOKIE, cookie_header(LOGIN_CSRF_COOKIE, "", "/login", 0, secure, "Strict"));
    (headers, Redirect::to(&target)).into_response()
}

pub async fn logout(State(state): State<AppState>, Extension(principal): Extension<Principal>) -> Response {
    if let Credential::Session { session_hash, .. } = &principal.credential {
        if let Err(error) = state.store.delete_session(session_hash).await {
            return crate::error::ApiError::from(error).into_response();
        }
        let audit = opsloop_store::NewAuditEntry {
            actor: principal.actor(),
            action: "session.logout",
            target: &principal.user.username,
            detail: "",
        };
        if let Err(error) = state.store.append_audit(audit).await {
            tracing::error!(%error, "could not record sign-out in the audit log");
        }
    }
    let cookie = cookie_header(SESSION_COOKIE, "", "/", 0, state.config.secure_cookies(), "Lax");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/login")).into_response()
}

#[cfg(test)]
mod tests {
    use super::safe_next;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next("/projects/web"), "/projects/web");
        for hostile in [
            "//evil.example",
            "https://evil.example",
            "javascript:alert(1)",
            "/\\evil.example",
            "",
            "/\t/evil.example",
            "/\n/x",
        ] {
            assert_eq!(safe_next(hostile), "/projects", "{hostile}");
        }
    }
}
