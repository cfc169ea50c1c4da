//! Incoming push webhooks from GitHub, GitLab and Gitea/Forgejo. The signature (or token) is
//! checked, in constant time, before the body is parsed; a bad one is a 401 and creates
//! nothing; a delivery id seen before is acknowledged and ignored.

use std::net::SocketAddr;

use axum::Extension;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use utoipa::ToSchema;

use crate::auth::{ProjectContext, credentials};
use crate::error::{ApiError, ApiJson, ApiPath, ErrorBody};
use crate::state::AppState;

#[derive(Debug, Deserialize)]
pub struct HookPath {
    project: String,
    forge: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct HookAnswer {
    /// created, duplicate, ignored or pong.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct WebhookSettings {
    /// The shared secret to enter in the forge's webhook settings.
    pub secret: String,
    /// Where each forge posts: `…/hooks/github`, `…/hooks/gitlab`, `…/hooks/gitea`.
    pub urls: Vec<String>,
}

/// The part of a push event opsloop reads (the same names on all three forges).
#[derive(Debug, Deserialize)]
struct PushEvent {
    #[serde(rename = "ref")]
    git_ref: String,
    after: String,
}

/// GitHub's and Gitea's `pull_request` event: the fields a pipeline needs.
#[derive(Debug, Deserialize)]
struct PullRequestEvent {
    action: String,
    number: u64,
    pull_request: PullRequest,
}

#[derive(Debug, Deserialize)]
struct PullRequest {
    head: PullRequestSide,
    base: PullRequestSide,
}

#[derive(Debug, Deserialize)]
struct PullRequestSide {
    #[serde(rename = "ref")]
    git_ref: String,
    #[serde(default)]
    sha: String,
}

/// GitLab's `Merge Request Hook`.
#[derive(Debug, Deserialize)]
struct MergeRequestHook {
    object_attributes: MergeRequestAttributes,
}

#[derive(Debug, Deserialize)]
struct MergeRequestAttributes {
    iid: u64,
    #[serde(default)]
    action: String,
    source_branch: String,
    target_branch: String,
    last_commit: MergeRequestCommit,
    /// Present on an `update` that brought new commits (absent when only the title changed).
    #[serde(default)]
    oldrev: Option<String>,
}

#[derive(Debug, Deserialize)]
struct MergeRequestCommit {
    id: String,
}

/// A merge request to run: its number, source branch, head commit, target branch.
struct MergeRequest {
    iid: u64,
    source: String,
    sha: String,
    target: String,
}

/// The merge request a `pull_request`/`Merge Request Hook` event asks to build, or `None` for
/// actions that bring no new code (closed, labelled, merged, …).
fn merge_request(event: &str, body: &[u8]) -> Result<Option<MergeRequest>, ApiError> {
    let malformed = |e: serde_json::Error| {
        ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", format!("not a merge request event: {e}"))
    };
    if event == "Merge Request Hook" {
        let hook: MergeRequestHook = serde_json::from_slice(body).map_err(malformed)?;
        let mr = hook.object_attributes;
        // GitLab runs merge request pipelines on open, reopen and new commits (`update` with oldrev).
        let new_code = match mr.action.as_str() {
            "open" | "reopen" => true,
            "update" => mr.oldrev.is_some(),
            _ => false,
        };
        if !new_code {
            return Ok(None);
        }
        return Ok(Some(MergeRequest {
            iid: mr.iid,
            source: mr.source_branch,
            sha: mr.last_commit.id,
            target: mr.target_branch,
        }));
    }
    let pull: PullRequestEvent = serde_json::from_slice(body).map_err(malformed)?;
    // GitHub says `synchronize`, Gitea `synchronized`.
    if !matches!(pull.action.as_str(), "opened" | "reopened" | "synchronize" | "synchronized") {
        return Ok(None);
    }
    let request = pull.pull_request;
    Ok(Some(MergeRequest {
        iid: pull.number,
        source: request.head.git_ref,
        sha: request.head.sha,
        target: request.base.git_ref,
    }))
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> &'h str {
    headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

fn hmac_hex(secret: &str, body: &[u8]) -> Option<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).ok()?;
    mac.update(body);
    Some(hex::encode(mac.finalize().into_bytes()))
}

/// Checks the forge's proof that it knows the secret; returns (event, delivery id).
fn verify<'h>(forge: &str, headers: &'h HeaderMap, secret: &str, body: &[u8]) -> Result<(&'h str, &'h str), ApiError> {
    let refused = || ApiError::new(StatusCode::UNAUTHORIZED, "bad_signature", "the webhook signature does not match");
    let expected = hmac_hex(secret, body).ok_or_else(refused)?;
    let proven = match forge {
        "github" => {
            let sent = header(headers, "x-hub-signature-256").strip_prefix("sha256=").unwrap_or_default();
            credentials::constant_time_eq(sent, &expected)
        }
        "gitea" => credentials::constant_time_eq(header(headers, "x-gitea-signature"), &expected),
        "gitlab" => credentials::constant_time_eq(header(headers, "x-gitlab-token"), secret),
        _ => return Err(ApiError::not_found("webhook kind")),
    };
    if !proven {
        return Err(refused());
    }
    Ok(match forge {
        "github" => (header(headers, "x-github-event"), header(headers, "x-github-delivery")),
        "gitea" => (header(headers, "x-gitea-event"), header(headers, "x-gitea-delivery")),
        _ => (header(headers, "x-gitlab-event"), header(headers, "x-gitlab-event-uuid")),
    })
}

/// Receive a push, tag or merge/pull request from a forge and run the pipeline at its commit.
#[utoipa::path(post, path = "/api/v1/projects/{project}/hooks/{forge}", tag = "pipelines",
    params(("project" = String, Path), ("forge" = String, Path, description = "github, gitlab or gitea")),
    security(()),
    request_body(content = String, description = "the forge's push or merge request event (JSON), signed", content_type = "application/json"),
    responses((status = 201, body = HookAnswer), (status = 200, body = HookAnswer), (status = 401, body = ErrorBody)))]
pub async fn receive(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    ApiPath(path): ApiPath<HookPath>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, ApiJson<HookAnswer>), ApiError> {
    let refused = || ApiError::new(StatusCode::UNAUTHORIZED, "bad_signature", "the webhook signature does not match");
    let project = state.store.project_by_name(&path.project).await?.ok_or_else(refused)?;
    let secret = state.store.current_webhook_secret(project.id).await?;
    if secret.is_empty() {
        return Err(refused());
    }
    let (event, delivery) = match verify(&path.forge, &headers, &secret, &body) {
        Ok(found) => found,
        Err(error) => {
            tracing::warn!(project = %project.name, forge = %path.forge, ip = %peer.ip(), "webhook refused: {}", error.message);
            return Err(error);
        }
    };
    let answer = |status: &str, pipeline: Option<i64>| ApiJson(HookAnswer { status: status.to_owned(), pipeline });
    if event == "ping" {
        return Ok((StatusCode::OK, answer("pong", None)));
    }
    let is_merge_request = matches!(event, "pull_request" | "Merge Request Hook");
    if !is_merge_request && !matches!(event, "push" | "Push Hook" | "Tag Push Hook") {
        return Ok((StatusCode::OK, answer("ignored", None)));
    }
    if !delivery.is_empty() && !state.store.record_delivery(project.id, delivery).await? {
        return Ok((StatusCode::OK, answer("duplicate", None)));
    }
    let ip = peer.ip().to_string();
    let actor_name = format!("webhook:{}", path.forge);
    let actor = opsloop_store::Actor { name: &actor_name, source_ip: &ip };
    if is_merge_request {
        let Some(mr) = merge_request(event, &body)? else {
            return Ok((StatusCode::OK, answer("ignored", None)));
        };
        crate::views::validate_branch(&mr.source)?;
        crate::views::validate_branch(&mr.target)?;
        if mr.sha.is_empty() || !mr.sha.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(ApiError::invalid("the head commit is not a commit id"));
        }
        // GitLab's merge request variables, so `rules: if: $CI_MERGE_REQUEST_IID` works as there.
        let variables = vec![
            ("CI_MERGE_REQUEST_IID".to_owned(), mr.iid.to_string()),
            ("CI_MERGE_REQUEST_SOURCE_BRANCH_NAME".to_owned(), mr.source.clone()),
            ("CI_MERGE_REQUEST_SOURCE_BRANCH_SHA".to_owned(), mr.sha.clone()),
            ("CI_MERGE_REQUEST_TARGET_BRANCH_NAME".to_owned(), mr.target.clone()),
        ];
        let pipeline =
            crate::ci::trigger(&state, &project, &mr.source, Some(&mr.sha), "merge_request_event", variables, actor)
                .await?;
        return Ok((StatusCode::CREATED, answer("created", Some(pipeline.id))));
    }
    let push: PushEvent = serde_json::from_slice(&body)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "malformed_json", format!("not a push event: {e}")))?;
    let git_ref = push.git_ref.strip_prefix("refs/heads/").or_else(|| push.git_ref.strip_prefix("refs/tags/"));
    let deleted = push.after.chars().all(|c| c == '0');
    let (Some(git_ref), false) = (git_ref, deleted) else {
        return Ok((StatusCode::OK, answer("ignored", None)));
    };
    crate::views::validate_branch(git_ref)?;
    if !push.after.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ApiError::invalid("`after` is not a commit id"));
    }
    let pipeline = crate::ci::trigger(&state, &project, git_ref, Some(&push.after), "push", Vec::new(), actor).await?;
    Ok((StatusCode::CREATED, answer("created", Some(pipeline.id))))
}

/// The project's webhook secret and URLs (the secret is made on first use).
#[utoipa::path(get, path = "/api/v1/projects/{project}/webhook", tag = "pipelines", params(("project" = String, Path)),
    responses((status = 200, body = WebhookSettings)))]
pub async fn settings(
    State(state): State<AppState>,
    Extension(context): Extension<ProjectContext>,
) -> Result<ApiJson<WebhookSettings>, ApiError> {
    let fresh = credentials::new_secret().map_err(|_| ApiError::internal())?;
    let secret = state.store.webhook_secret(context.project.id, &fresh).await?;
    let base = state.config.external_url.clone().unwrap_or_else(|| format!("http://{}", state.config.listen));
    let urls = ["github", "gitlab", "gitea"]
        .iter()
        .map(|forge| format!("{base}/api/v1/projects/{}/hooks/{forge}", context.project.name))
        .collect();
    Ok(ApiJson(WebhookSettings { secret, urls }))
}
