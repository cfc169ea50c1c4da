//! `/api/v1/projects/{project}/notifications`: outgoing webhooks on pipeline and job events
//! (see `notify.rs` for the payloads and the signature), with each hook's delivery log.

use axum::Extension;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::auth::{Principal, ProjectContext};
use crate::error::{ApiError, ApiJson, ApiPath, ErrorBody};
use crate::state::AppState;
use crate::views::rfc3339;

const EVENTS: [&str; 4] = ["pipeline", "job", "deployment", "incident"];

#[derive(Debug, Serialize, ToSchema)]
pub struct HookView {
    pub id: i64,
    pub url: String,
    pub events: Vec<String>,
    pub created_by: String,
    pub created_at: String,
}

impl From<opsloop_store::NotificationHook> for HookView {
    fn from(hook: opsloop_store::NotificationHook) -> Self {
        HookView {
            id: hook.id,
            url: hook.url,
            events: hook.events,
            created_by: hook.created_by,
            created_at: rfc3339(hook.created_at),
        }
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateHook {
    /// `http://` or `https://` URL that receives the POSTs.
    pub url: String,
    /// `pipeline`, `job`, or both (the default).
    #[serde(default)]
    pub events: Vec<String>,
    /// The HMAC key; omit to have a random one made (shown once).
    pub secret: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedHook {
    #[serde(flatten)]
    pub hook: HookView,
    /// The HMAC key, shown only now: verify `X-Opsloop-Signature-256` with it.
    pub secret: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    pub id: i64,
    pub event: String,
    /// pending, delivered or failed.
    pub state: String,
    pub attempts: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub response_status: Option<i64>,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub last_error: String,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<String>,
    /// When the next attempt is due (pending deliveries).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<String>,
    /// The JSON body sent.
    pub payload: String,
}

#[derive(Debug, Deserialize)]
pub struct HookPath {
    #[allow(dead_code)]
    project: String,
    hook: i64,
}

fn validate_url(url: &str) -> Result<(), ApiError> {
    let parsed = url::Url::parse(url).map_err(|_| ApiError::invalid(format!("`{url}` is not a URL")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
        return Err(ApiError::invalid("the URL must be http:// or https:// with a host"));
    }
    if url.len() > 2000 || !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(ApiError::invalid("the URL must be at most 2000 characters, without credentials"));
    }
    Ok(())
}

/// The project's webhooks.
#[utoipa::path(get, path = "/api/v1/projects/{project}/notifications", tag = "notifications",
    params(("project" = String, Path)), responses((status = 200, body = Vec<HookView>)))]
pub async fn list(
    State(state): State<AppState>,
    Extension(context): Extension<ProjectContext>,
) -> Result<ApiJson<Vec<HookView>>, ApiError> {
    let hooks = state.store.notification_hooks(context.project.id).await?;
    Ok(ApiJson(hooks.into_iter().map(HookView::from).collect()))
}

/// Add a webhook for pipeline and/or job events.
#[utoipa::path(post, path = "/api/v1/projects/{project}/notifications", tag = "notifications",
    params(("project" = String, Path)), request_body = CreateHook,
    responses((status = 201, body = CreatedHook), (status = 422, body = ErrorBody)))]
pub async fn create(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    ApiJson(input): ApiJson<CreateHook>,
) -> Result<(StatusCode, ApiJson<CreatedHook>), ApiError> {
    Ok((StatusCode::CREATED, ApiJson(create_hook(&state, &principal, &context, input).await?)))
}

/// Validates and stores a hook (its secret sealed); shared by the API and the web UI.
pub async fn create_hook(
    state: &AppState,
    principal: &Principal,
    context: &ProjectContext,
    input: CreateHook,
) -> Result<CreatedHook, ApiError> {
    validate_url(&input.url)?;
    let mut events = if input.events.is_empty() { EVENTS.map(str::to_owned).to_vec() } else { input.events };
    events.sort();
    events.dedup();
    if let Some(bad) = events.iter().find(|e| !EVENTS.contains(&e.as_str())) {
        let known = EVENTS.map(|e| format!("`{e}`")).join(", ");
        return Err(ApiError::invalid(format!("unknown event `{bad}`: use {known}")));
    }
    let secret = match input.secret {
        Some(secret) if (16..=256).contains(&secret.len()) => secret,
        Some(_) => return Err(ApiError::invalid("a secret has 16 to 256 characters")),
        None => crate::auth::credentials::new_secret().map_err(|_| ApiError::internal())?,
    };
    let sealed = state
        .vault()?
        .encrypt(&secret, &crate::notify::secret_context(context.project.id))
        .map_err(|_| ApiError::internal())?;
    let hook =
        state.store.create_notification_hook(&context.project, &input.url, &sealed, &events, principal.actor()).await?;
    Ok(CreatedHook { hook: hook.into(), secret })
}

/// Remove a webhook and its delivery log.
#[utoipa::path(delete, path = "/api/v1/projects/{project}/notifications/{hook}", tag = "notifications",
    params(("project" = String, Path), ("hook" = i64, Path)),
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Extension(context): Extension<ProjectContext>,
    ApiPath(path): ApiPath<HookPath>,
) -> Result<StatusCode, ApiError> {
    if state.store.delete_notification_hook(&context.project, path.hook, principal.actor()).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("notification hook"))
    }
}

/// A webhook's latest 100 deliveries, newest first.
#[utoipa::path(get, path = "/api/v1/projects/{project}/notifications/{hook}/deliveries", tag = "notifications",
    params(("project" = String, Path), ("hook" = i64, Path)),
    responses((status = 200, body = Vec<DeliveryView>), (status = 404, body = ErrorBody)))]
pub async fn deliveries(
    State(state): State<AppState>,
    Extension(context): Extension<ProjectContext>,
    ApiPath(path): ApiPath<HookPath>,
) -> Result<ApiJson<Vec<DeliveryView>>, ApiError> {
    let hook = state
        .store
        .notification_hook(path.hook)
        .await?
        .filter(|hook| hook.project_id == context.project.id)
        .ok_or_else(|| ApiError::not_found("notification hook"))?;
    let deliveries = state.store.deliveries(hook.id, 100).await?;
    Ok(ApiJson(
        deliveries
            .into_iter()
            .map(|d| DeliveryView {
                id: d.id,
                next_attempt_at: (d.state == "pending").then(|| rfc3339(d.next_attempt_at)),
                event: d.event,
                state: d.state,
                attempts: d.attempts,
                response_status: d.response_status,
                last_error: d.last_error,
                created_at: rfc3339(d.created_at),
                delivered_at: d.delivered_at.map(rfc3339),
                payload: d.payload,
            })
            .collect(),
    ))
}
