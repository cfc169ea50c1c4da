//! The route table: every route of the server with its access decision, and the middleware
//! that enforces it before any handler runs.
//!
//! Routes can only be added through [`RouteTable::add`], which demands an [`Access`]; the
//! middleware denies any matched route it finds no decision for. The auth-matrix test walks
//! this same table, so a new route is tested the moment it exists.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, MatchedPath, RawPathParams, Request, State};
use axum::handler::Handler;
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{MethodFilter, on};
use http_body_util::BodyExt;

use crate::auth::{
    self, Access, CSRF_FIELD, CSRF_HEADER, Credential, Decision, LOGIN_CSRF_COOKIE, Principal, ProjectContext,
};
use crate::error::ApiError;
use crate::state::AppState;

/// Which kind of client a route serves; it decides how a refusal looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// JSON under `/api/v1`: refusals are JSON errors.
    Api,
    /// HTML pages: anonymous visitors are sent to the login page; forms carry a CSRF token.
    Ui,
    /// Probes and scrapes (`/healthz`, `/metrics`): plain answers.
    Ops,
    /// Another system's API that opsloop speaks for its clients (Prometheus's under
    /// `/prometheus`): documented by that system, not in opsloop's OpenAPI document; refusals
    /// are JSON errors as on `Api`. Its POSTs may be reads (Prometheus takes long queries as
    /// form bodies), so the route's `Access` alone says whether it writes.
    Compat,
}

#[derive(Debug, Clone)]
pub struct RouteSpec {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    pub surface: Surface,
}

pub struct RouteTable {
    router: Router<AppState>,
    specs: Vec<RouteSpec>,
}

impl Default for RouteTable {
    fn default() -> Self {
        RouteTable { router: Router::new(), specs: Vec::new() }
    }
}

impl RouteTable {
    pub fn add<H, T>(mut self, surface: Surface, method: Method, path: &'static str, access: Access, handler: H) -> Self
    where
        H: Handler<T, AppState>,
        T: 'static,
    {
        // Only the standard methods below are used, and each converts to a filter.
        let filter = match method {
            Method::GET => MethodFilter::GET,
            Method::POST => MethodFilter::POST,
            Method::PUT => MethodFilter::PUT,
            Method::PATCH => MethodFilter::PATCH,
            Method::DELETE => MethodFilter::DELETE,
            _ => MethodFilter::OPTIONS,
        };
        self.router = self.router.route(path, on(filter, handler));
        self.specs.push(RouteSpec { method, path, access, surface });
        self
    }

    pub fn into_parts(self) -> (Router<AppState>, Vec<RouteSpec>) {
        (self.router, self.specs)
    }
}

fn is_state_changing(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Largest form body the CSRF check buffers; UI forms are small.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// Enforces the route table: resolves the caller, checks CSRF for browser writes, decides
/// access, and hands the handler a [`Principal`] (and [`ProjectContext`]) in extensions.
/// The routes a pipeline's token (`CI_JOB_TOKEN`) may call: deploying, rolling back,
/// stopping and reading its own project's deployments and environments, and Terraform's state
/// backend (what `terraform plan`/`apply` in a job needs, as with GitLab's job token). Not
/// approving, not applying GitOps, not deleting states, nothing else of the project.
const PIPELINE_TOKEN_ROUTES: [(&str, &str); 11] = [
    ("GET", "/api/v1/projects/{project}/terraform/state/{name}"),
    ("POST", "/api/v1/projects/{project}/terraform/state/{name}"),
    ("POST", "/api/v1/projects/{project}/terraform/state/{name}/lock"),
    ("DELETE", "/api/v1/projects/{project}/terraform/state/{name}/lock"),
    ("POST", "/api/v1/projects/{project}/deployments"),
    ("GET", "/api/v1/projects/{project}/deployments"),
    ("GET", "/api/v1/projects/{project}/deployments/{deployment}"),
    ("POST", "/api/v1/projects/{project}/rollbacks"),
    ("GET", "/api/v1/projects/{project}/environments"),
    ("GET", "/api/v1/projects/{project}/environments/plan"),
    ("POST", "/api/v1/projects/{project}/environments/{environment}/stop"),
];

pub async fn enforce(
    State(state): State<AppState>,
    matched: MatchedPath,
    params: RawPathParams,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let lookup_method = if request.method() == Method::HEAD { Method::GET } else { request.method().clone() };
    let Some(spec) = state.routes.get(&(lookup_method, matched.as_str())) else {
        // Another method of a known route: the 405 answer, which runs no handler.
        if state.routes.keys().any(|(_, path)| *path == matched.as_str()) {
            return crate::ops::method_not_allowed(request.uri().clone()).await;
        }
        tracing::error!(path = matched.as_str(), "route has no access decision; denying");
        return ApiError::forbidden("this route has no access decision").into_response();
    };
    let surface = spec.surface;
    let access = spec.access;
    let state_changing = is_state_changing(request.method());
    let source_ip = peer.ip().to_string();

    if access == Access::Agent {
        // Agents hold their own tokens, sent as bearer tokens: no cookies, so no CSRF check.
        let agent = match crate::api::agents::resolve_agent(&state, request.headers()).await {
            Ok(Some(agent)) => agent,
            Ok(None) => return refuse(surface, ApiError::unauthorized(), ""),
            Err(error) => return refuse(surface, error, ""),
        };
        let mut request = request;
        request.extensions_mut().insert(agent);
        return next.run(request).await;
    }

    let principal = match auth::resolve_principal(&state.store, &state.token_cache, request.headers(), source_ip).await
    {
        Ok(principal) => principal,
        Err(error) => return refuse(surface, ApiError::from(error), request.uri().path()),
    };
    // Someone who sent a token that was refused needs to hear that, not "sign in".
    let token_refused = principal.is_none() && auth::bearer_token(request.headers()).is_some();
    let unauthenticated = || if token_refused { ApiError::rejected_token() } else { ApiError::unauthorized() };

    // A pipeline's token reaches only what a job needs for deployments, through the API.
    if let Some(principal) = &principal
        && matches!(principal.credential, crate::auth::Credential::Pipeline { .. })
        && !(surface == Surface::Api && PIPELINE_TOKEN_ROUTES.contains(&(request.method().as_str(), matched.as_str())))
    {
        return refuse(
            surface,
            ApiError::forbidden("a pipeline's token reaches only the deployment and Terraform state routes"),
            "",
        );
    }

    let request = if !state_changing {
        request
    } else {
        match check_csrf(surface, access, principal.as_ref(), request).await {
            Ok(request) => request,
            Err(error) => return refuse(surface, error, ""),
        }
    };

    let mut project_context = None;
    let decision = match access {
        Access::Project(_) | Access::Job(_) => {
            let Some(principal) = principal.as_ref() else {
                return refuse(surface, unauthenticated(), request.uri().path());
            };
            let param = |name: &str| params.iter().find(|(key, _)| *key == name).map(|(_, value)| value);
            let project = match access {
                Access::Job(_) => match param("job").and_then(|id| id.parse::<i64>().ok()) {
                    Some(job) => state.store.project_of_job(job).await.map_err(ApiError::from),
                    None => Ok(None),
                },
                _ => state.store.project_by_name(param("project").unwrap_or_default()).await.map_err(ApiError::from),
            };
            let loaded = match project {
                Ok(Some(project)) => match auth::membership(&state.store, principal, &project).await {
                    Ok(membership) => Ok(Some((project, membership))),
                    Err(error) => Err(ApiError::from(error)),
                },
                Ok(None) => Ok(None),
                Err(error) => Err(error),
            };
            match loaded {
                Ok(Some((project, membership))) => {
                    let decision = auth::decide(access, Some(principal), membership);
                    if decision == Decision::Allow {
                        let role = principal.project_role(membership).unwrap_or(opsloop_core::Role::Viewer);
                        project_context = Some(ProjectContext { project, role });
                    }
                    decision
                }
                Ok(None) => Decision::NotFound,
                Err(error) => return refuse(surface, error, ""),
            }
        }
        _ => auth::decide(access, principal.as_ref(), None),
    };

    match decision {
        Decision::Allow => {}
        Decision::Unauthenticated => return refuse(surface, unauthenticated(), request.uri().path()),
        // A signed-in person refused a page keeps the navigation to go on from.
        Decision::Forbidden(message) => {
            return crate::ui::with_navigation(
                refuse(surface, ApiError::forbidden(message), ""),
                principal.as_ref().filter(|_| surface == Surface::Ui),
            );
        }
        Decision::NotFound => {
            let what = if matches!(access, Access::Job(_)) { "job" } else { "project" };
            return crate::ui::with_navigation(
                refuse(surface, ApiError::not_found(what), ""),
                principal.as_ref().filter(|_| surface == Surface::Ui),
            );
        }
    }

    if surface == Surface::Ui
        && let Some(principal) = principal.as_ref()
        && must_change_password_first(principal, matched.as_str())
    {
        return Redirect::to("/settings?notice=must-change").into_response();
    }

    let mut request = request;
    // Kept for an error page the handler answers with: it is drawn again with navigation.
    let viewer = (surface == Surface::Ui).then(|| principal.clone()).flatten();
    if let Some(principal) = principal {
        request.extensions_mut().insert(principal);
    }
    if let Some(context) = project_context {
        request.extensions_mut().insert(context);
    }
    let response = next.run(request).await;
    crate::ui::with_navigation(response, viewer.as_ref())
}

/// A browser session whose password was a one-time password may only change it (or leave).
fn must_change_password_first(principal: &Principal, route: &str) -> bool {
    const ALLOWED: [&str; 6] =
        ["/settings", "/settings/password", "/logout", "/assets/style.css", "/assets/favicon.svg", "/favicon.ico"];
    principal.user.must_change_password
        && matches!(principal.credential, Credential::Session { .. })
        && !ALLOWED.contains(&route)
}

/// Browser credentials (cookies) are sent by the browser on its own, so every state-changing
/// request that relies on one must prove it came from our page: a header for API calls, a
/// form field for HTML forms. Bearer tokens are never sent implicitly and need no check.
async fn check_csrf(
    surface: Surface,
    access: Access,
    principal: Option<&Principal>,
    request: Request,
) -> Result<Request, ApiError> {
    if access == Access::Webhook {
        // Forges send no cookies; the signature is the proof, checked by the handler.
        return Ok(request);
    }
    let expected = match principal.map(|p| &p.credential) {
        // Public writes (the login form) use the login double-submit cookie, signed in or not:
        // a signed-in person may sign in as someone else.
        _ if access == Access::Public => match auth::cookie(request.headers(), LOGIN_CSRF_COOKIE) {
            Some(value) => value.to_owned(),
            None => return Err(csrf_error()),
        },
        Some(Credential::Token { .. } | Credential::Pipeline { .. }) => return Ok(request),
        Some(Credential::Session { csrf_token, .. }) => csrf_token.clone(),
        None => return Ok(request),
    };
    if surface != Surface::Ui {
        let sent = request.headers().get(CSRF_HEADER).and_then(|value| value.to_str().ok()).unwrap_or_default();
        return if auth::credentials::constant_time_eq(sent, &expected) { Ok(request) } else { Err(csrf_error()) };
    }
    let (parts, body) = request.into_parts();
    let bytes = http_body_util::Limited::new(body, MAX_FORM_BYTES)
        .collect()
        .await
        .map_err(|_| ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", "form too large"))?
        .to_bytes();
    let sent = form_field(&bytes, CSRF_FIELD).unwrap_or_default();
    if !auth::credentials::constant_time_eq(&sent, &expected) {
        return Err(csrf_error());
    }
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

fn csrf_error() -> ApiError {
    ApiError::forbidden("missing or wrong CSRF token; reload the page and try again")
}

fn form_field(body: &[u8], name: &str) -> Option<String> {
    serde_urlencoded::from_bytes::<Vec<(String, String)>>(body)
        .ok()?
        .into_iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value)
}

/// How a refusal looks on each surface. `path` is where an anonymous browser returns after login.
fn refuse(surface: Surface, error: ApiError, path: &str) -> Response {
    match surface {
        Surface::Ui if error.status == StatusCode::UNAUTHORIZED => {
            let target = if path.is_empty() || path == "/" {
                "/login".to_owned()
            } else {
                format!("/login?next={}", urlencode(path))
            };
            Redirect::to(&target).into_response()
        }
        Surface::Ui => crate::ui::error_page(error.status, &error.message),
        Surface::Api | Surface::Ops | Surface::Compat => error.into_response(),
    }
}

pub fn urlencode(text: &str) -> String {
    serde_urlencoded::to_string([("", text)]).map(|s| s.trim_start_matches('=').to_owned()).unwrap_or_default()
}
