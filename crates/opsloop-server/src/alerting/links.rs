//! Signed one-time links in pages: the person paged acknowledges (or resolves) from the
//! message without signing in. The link carries an HMAC-signed token (incident, person,
//! action, expiry, nonce; `opsloop_alert::oncall::ack`); its key is random, made once and
//! kept in the store sealed by the vault. Opening the link shows a confirmation page (mail
//! scanners open links before people do); only its POST acts, once: the nonce is recorded in
//! the store, so a replay is refused on every replica.

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use opsloop_alert::oncall::ack::{AckAction, AckClaims, AckError, AckSigner, Nonce};
use opsloop_core::IncidentStatus;

use crate::auth::Access;
use crate::routes::{RouteTable, Surface};
use crate::state::AppState;

/// Where the sealed key is kept.
const KEY_STATE: &str = "ack-link-key";
/// The vault's context for it.
const KEY_CONTEXT: &str = "alerting:ack-link-key";
/// How long a link works.
const VALID_FOR: jiff::SignedDuration = jiff::SignedDuration::from_hours(24);

pub fn routes(table: RouteTable) -> RouteTable {
    // The token is the credential (checked by the handler, as a forge's signature is).
    table.add(Surface::Ops, Method::GET, "/incidents/link/{token}", Access::Webhook, confirm).add(
        Surface::Ops,
        Method::POST,
        "/incidents/link/{token}",
        Access::Webhook,
        act,
    )
}

async fn signer(state: &AppState) -> Result<AckSigner, String> {
    let signer = state
        .alerting
        .link_signer
        .get_or_try_init(|| async {
            let vault = state.vault().map_err(|e| e.to_string())?;
            let key = match state.store.subsystem_state(KEY_STATE).await.map_err(|e| e.to_string())? {
                Some(sealed) => vault.decrypt(&sealed, KEY_CONTEXT).map_err(|e| e.to_string())?,
                None => {
                    let key = crate::auth::credentials::new_secret().map_err(|e| e.to_string())?;
                    let sealed = vault.encrypt(&key, KEY_CONTEXT).map_err(|e| e.to_string())?;
                    state.store.save_subsystem_state(KEY_STATE, &sealed).await.map_err(|e| e.to_string())?;
                    key
                }
            };
            AckSigner::new(key.as_bytes()).map_err(|e| e.to_string())
        })
        .await?;
    Ok(signer.clone())
}

/// A link for `user` to act on incident `id`, valid for a day.
pub async fn issue(state: &AppState, id: i64, user: &str, action: AckAction) -> Result<String, String> {
    let signer = signer(state).await?;
    let now = opsloop_alert::oncall::now(state.store.clock().as_ref());
    let expires = now.checked_add(VALID_FOR).map_err(|e| e.to_string())?;
    let token = signer.issue(&format!("{id}:{user}"), action, expires).map_err(|e| e.to_string())?;
    Ok(format!("{}/incidents/link/{token}", super::base_url(state)))
}

/// The claims of a genuine, unexpired token (not yet marked used).
async fn claims(state: &AppState, token: &str) -> Result<(AckClaims, i64, String), Response> {
    let refused = |message: String| (StatusCode::FORBIDDEN, Html(page("Link refused", &message, None))).into_response();
    let signer = signer(state).await.map_err(|e| {
        tracing::error!(error = %e, "the ack link key is not available");
        (StatusCode::SERVICE_UNAVAILABLE, "links are not available").into_response()
    })?;
    // A set that accepts any nonce: signature and expiry are checked here, use in the store.
    let mut accept_all = std::collections::HashSet::<Nonce>::new();
    let now = opsloop_alert::oncall::now(state.store.clock().as_ref());
    let claims = signer.verify(token, now, &mut accept_all).map_err(|e| match e {
        AckError::Expired(at) => refused(format!("This link expired at {at}.")),
        _ => refused("This link is not valid.".to_owned()),
    })?;
    let (id, user) = claims
        .incident
        .split_once(':')
        .and_then(|(id, user)| Some((id.parse::<i64>().ok()?, user.to_owned())))
        .ok_or_else(|| refused("This link is not valid.".to_owned()))?;
    Ok((claims, id, user))
}

fn verb(action: AckAction) -> (&'static str, IncidentStatus) {
    match action {
        AckAction::Acknowledge => ("Acknowledge", IncidentStatus::Acknowledged),
        AckAction::Resolve => ("Resolve", IncidentStatus::Resolved),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A minimal page: the link is opened from a phone, outside any session.
fn page(title: &str, message: &str, button: Option<&str>) -> String {
    let form = button
        .map(|label| format!(r#"<form method="post"><button type="submit">{}</button></form>"#, escape(label)))
        .unwrap_or_default();
    format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width"><title>{0}</title></head><body><h1>{0}</h1><p>{1}</p>{form}</body></html>"#,
        escape(title),
        escape(message)
    )
}

async fn confirm(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let (claims, id, user) = match claims(&state, &token).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    let title = match state.store.incident(id).await {
        Ok(Some(incident)) => incident.title,
        _ => return (StatusCode::NOT_FOUND, Html(page("Not found", "The incident is gone.", None))).into_response(),
    };
    let (label, _) = verb(claims.action);
    let message = format!("{label} incident {id} ({title}) as {user}?");
    Html(page(&format!("Incident {id}"), &message, Some(label))).into_response()
}

async fn act(State(state): State<AppState>, Path(token): Path<String>) -> Response {
    let (claims, id, user) = match claims(&state, &token).await {
        Ok(found) => found,
        Err(response) => return response,
    };
    match state.store.use_nonce(&hex::encode(claims.nonce)).await {
        Ok(true) => {}
        Ok(false) => {
            return (StatusCode::FORBIDDEN, Html(page("Link refused", "This link was already used.", None)))
                .into_response();
        }
        Err(e) => {
            tracing::error!(error = %e, "recording a used link");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    }
    let incident = match state.store.incident(id).await {
        Ok(Some(incident)) => incident,
        _ => return (StatusCode::NOT_FOUND, Html(page("Not found", "The incident is gone.", None))).into_response(),
    };
    let (label, status) = verb(claims.action);
    let actor = format!("{user} (link)");
    match super::incidents::change_status(&state.store, &incident, status, &actor, "from a signed link").await {
        Ok(changed) => Html(page(&format!("Incident {id}"), &format!("Incident {id} is {}.", changed.status), None))
            .into_response(),
        Err(e) => {
            (StatusCode::CONFLICT, Html(page(&format!("{label}: not done"), &e.to_string(), None))).into_response()
        }
    }
}
