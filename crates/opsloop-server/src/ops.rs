//! Probes and scrapes (`/healthz`, `/readyz`, `/metrics`) and the answers for requests that
//! match no route.

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};

use crate::auth::Access;
use crate::error::ApiError;
use crate::routes::{RouteTable, Surface};
use crate::state::AppState;

pub fn routes(table: RouteTable) -> RouteTable {
    table
        .add(Surface::Ops, Method::GET, "/healthz", Access::Public, healthz)
        .add(Surface::Ops, Method::GET, "/readyz", Access::Public, readyz)
        .add(Surface::Ops, Method::GET, "/metrics", Access::Public, metrics)
}

/// Alive: the process answers HTTP.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready: the database answers, its schema is current, and no subsystem reports a problem.
async fn readyz(State(state): State<AppState>) -> Response {
    let mut problems = match state.store.check_ready().await {
        Ok(()) => Vec::new(),
        Err(error) => vec![format!("database: {error}")],
    };
    problems.extend(crate::subsystem::problems(&state));
    if problems.is_empty() {
        return (StatusCode::OK, "ready\n").into_response();
    }
    tracing::warn!(problems = %problems.join("; "), "not ready");
    (StatusCode::SERVICE_UNAVAILABLE, format!("not ready: {}\n", problems.join("\n"))).into_response()
}

async fn metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    // opsloop's own metrics, then the golden signals of every deployed service version, in the
    // format the scraper asked for.
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = crate::metrics::Exposition::negotiate(accept);
    let body = format.body(&state.metrics.render(), &state.deploy.proxy.signals().render_prometheus());
    ([(header::CONTENT_TYPE, format.content_type())], body).into_response()
}

pub async fn not_found(State(state): State<AppState>, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    state.metrics.count(crate::metrics::method_label(&method), "unmatched".to_owned(), 404);
    if uri.path().starts_with("/api/") {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such API route; see /api/v1/openapi.json").into_response()
    } else {
        // No route, so the route middleware did not run: who is asking is looked up here, for
        // a not-found page that keeps the navigation of a signed-in person. A failed look-up
        // only costs the navigation.
        // Only browser sessions: a token holder gets no navigation and its token is not touched.
        let principal = if crate::auth::bearer_token(&headers).is_some() {
            None
        } else {
            crate::auth::resolve_principal(&state.store, &state.token_cache, &headers, String::new())
                .await
                .ok()
                .flatten()
                .filter(|principal| matches!(principal.credential, crate::auth::Credential::Session { .. }))
        };
        crate::ui::error_page_for(principal.as_ref(), StatusCode::NOT_FOUND, "There is no page here.")
    }
}

pub async fn method_not_allowed(uri: Uri) -> Response {
    let error =
        ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "this route does not accept that method");
    if uri.path().starts_with("/api/") {
        error.into_response()
    } else {
        crate::ui::error_page(error.status, &error.message)
    }
}

pub fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    ApiError::internal().into_response()
}
