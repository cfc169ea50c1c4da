//! Outgoing webhooks on pipeline, job and deployment events. [`Webhooks`] subscribes to the
//! event bus: an event becomes one queued delivery per hook that wants it (in the store, so a
//! restart loses none); [`deliver_forever`] sends them, signed, and retries failures with
//! exponential backoff.
//!
//! The request: `POST <url>` with a JSON body (below), `Content-Type: application/json`,
//! `X-Opsloop-Event: pipeline|job`, `X-Opsloop-Delivery: <id>` (the same on every attempt, so
//! receivers can drop repeats) and `X-Opsloop-Signature-256: sha256=<hex>`, the HMAC-SHA256 of
//! the body under the hook's secret (GitHub's scheme). Any 2xx answer is a delivery.
//!
//! Pipeline events: `{"object_kind": "pipeline", "project": {"id", "name"}, "pipeline":
//! {"id", "ref", "sha", "source", "status", "created_by", "created_at", "finished_at", "url"}}`.
//! Job events: `{"object_kind": "job", "project": {…}, "pipeline": {"id", "ref", "sha"},
//! "job": {"id", "name", "stage", "status", "exit_code", "url"}}`.

use std::time::Duration;

use hmac::{Hmac, Mac};
use opsloop_core::{DeploymentStatus, Event, JobStatus, PipelineStatus, RecordedEvent};
use opsloop_store::{Delivery, Deployment, Incident, Job, Pipeline, Project};
use serde_json::json;
use sha2::Sha256;

use crate::events::{Handled, Subscriber};
use crate::state::AppState;
use crate::views::rfc3339;

/// Attempts per delivery before it is marked failed.
pub const MAX_ATTEMPTS: i64 = 8;
/// How long a claimed delivery is held by its sender before another may try.
const LEASE_MS: i64 = 60_000;

/// The encryption context of a hook's secret.
pub fn secret_context(project_id: i64) -> String {
    format!("notification-hook:project:{project_id}")
}

fn base_url(state_url: Option<&str>) -> String {
    state_url.unwrap_or("").trim_end_matches('/').to_owned()
}

/// The pipeline's record as a payload, with the status the event gives it (the record may
/// have moved on by the time a late event is handled).
pub fn pipeline_payload(
    external_url: Option<&str>,
    project: &Project,
    pipeline: &Pipeline,
    status: PipelineStatus,
) -> String {
    json!({
        "object_kind": "pipeline",
        "project": { "id": project.id, "name": project.name },
        "pipeline": {
            "id": pipeline.id,
            "ref": pipeline.git_ref,
            "sha": pipeline.sha,
            "source": pipeline.source,
            "status": status,
            "created_by": pipeline.created_by,
            "created_at": rfc3339(pipeline.created_at),
            "finished_at": pipeline.finished_at.filter(|_| status.is_finished()).map(rfc3339),
            "url": format!("{}/projects/{}/pipelines/{}", base_url(external_url), project.name, pipeline.id),
        },
    })
    .to_string()
}

pub fn job_payload(
    external_url: Option<&str>,
    project: &Project,
    pipeline: &Pipeline,
    job: &Job,
    status: JobStatus,
) -> String {
    json!({
        "object_kind": "job",
        "project": { "id": project.id, "name": project.name },
        "pipeline": { "id": pipeline.id, "ref": pipeline.git_ref, "sha": pipeline.sha },
        "job": {
            "id": job.id,
            "name": job.name,
            "stage": job.stage,
            "status": status,
            "exit_code": job.exit_code,
            "url": format!("{}/projects/{}/jobs/{}", base_url(external_url), project.name, job.id),
        },
    })
    .to_string()
}

pub fn deployment_payload(
    external_url: Option<&str>,
    project: &Project,
    deployment: &Deployment,
    status: DeploymentStatus,
    reason: Option<&str>,
) -> String {
    json!({
        "object_kind": "deployment",
        "project": { "id": project.id, "name": project.name },
        "deployment": {
            "id": deployment.id,
            "environment": deployment.environment,
            "service": deployment.service,
            "version": deployment.version,
            "commit": deployment.commit_sha,
            "status": status,
            "reason": reason,
            "url": format!("{}/projects/{}/deployments/{}", base_url(external_url), project.name, deployment.id),
        },
    })
    .to_string()
}

pub fn incident_payload(external_url: Option<&str>, project: &Project, incident: &Incident) -> String {
    json!({
        "object_kind": "incident",
        "project": { "id": project.id, "name": project.name },
        "incident": {
            "id": incident.id,
            "title": incident.title,
            "severity": incident.severity,
            "status": incident.status,
            "assignee": incident.assignee,
            "created_at": rfc3339(incident.created_at),
            "url": format!("{}/incidents/{}", base_url(external_url), incident.id),
        },
    })
    .to_string()
}

/// Outgoing webhooks as an event subscriber: each pipeline start and end, job end and
/// deployment end becomes one queued delivery per hook that wants its kind.
pub struct Webhooks;

impl Subscriber for Webhooks {
    fn name(&self) -> &'static str {
        "webhooks"
    }

    fn handle<'a>(&'a self, state: &'a AppState, recorded: &'a RecordedEvent) -> Handled<'a> {
        Box::pin(async move {
            let store = &state.store;
            let external_url = state.config.external_url.as_deref();
            // The project, pipeline or deployment may be gone (deleted since): nothing to send.
            let Some(project) = store.project_by_id(recorded.event.project_id()).await? else { return Ok(()) };
            let (kind, payload) = match &recorded.event {
                Event::PipelineStarted { pipeline_id, .. } | Event::PipelineFinished { pipeline_id, .. } => {
                    let status = match recorded.event {
                        Event::PipelineFinished { status, .. } => status,
                        _ => PipelineStatus::Running,
                    };
                    let Some(pipeline) = store.pipeline_by_id(*pipeline_id).await? else { return Ok(()) };
                    ("pipeline", pipeline_payload(external_url, &project, &pipeline, status))
                }
                Event::JobFinished { job_id, status, .. } => {
                    let Some((job, _)) = store.job_by_id(*job_id).await? else { return Ok(()) };
                    let Some(pipeline) = store.pipeline_by_id(job.pipeline_id).await? else { return Ok(()) };
                    ("job", job_payload(external_url, &project, &pipeline, &job, *status))
                }
                Event::DeploymentFinished { deployment_id, status, reason, .. } => {
                    let Some(deployment) = store.deployment(*deployment_id).await? else { return Ok(()) };
                    let payload = deployment_payload(external_url, &project, &deployment, *status, reason.as_deref());
                    ("deployment", payload)
                }
                Event::IncidentChanged { incident_id, .. } => {
                    let Some(incident) = store.incident(*incident_id).await? else { return Ok(()) };
                    ("incident", incident_payload(external_url, &project, &incident))
                }
                // Hooks hear of a deployment when it ends, as before the bus.
                Event::DeploymentStarted { .. } => return Ok(()),
            };
            store.queue_deliveries(project.id, kind, &payload).await?;
            Ok(())
        })
    }
}

/// The signature header's value for `body` under `secret`.
pub fn signature(secret: &str, body: &str) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap_or_else(|_| unreachable!());
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Refuses URLs whose host resolves to loopback, private, link-local or otherwise internal
/// addresses. (The HTTP client resolves again when it connects; a receiver that answers with
/// another address the second time could slip through, which an admin can rule out by
/// keeping the server's own network unreachable from it.)
async fn public_target(url: &str) -> Result<(), String> {
    let parsed = url::Url::parse(url).map_err(|_| "the URL cannot be read".to_owned())?;
    let host = parsed.host_str().ok_or("the URL has no host")?.trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = parsed.port_or_known_default().unwrap_or(443);
    let addresses = tokio::net::lookup_host((host.as_str(), port)).await.map_err(|e| format!("{host}: {e}"))?;
    for address in addresses {
        if internal(address.ip()) {
            return Err(format!(
                "refused: {host} is {}, an internal address ([notifications] allow_private_targets allows it)",
                address.ip()
            ));
        }
    }
    Ok(())
}

fn internal(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                // 100.64.0.0/10, carrier-grade NAT.
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        std::net::IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return internal(std::net::IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // fc00::/7 unique local, fe80::/10 link-local.
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

/// When to try again after `attempts` failed ones: 1 s, 2 s, 4 s … up to an hour.
pub fn backoff_ms(attempts: i64) -> i64 {
    1000_i64.saturating_mul(1 << attempts.clamp(0, 12)).min(3_600_000)
}

/// Sends due deliveries every half second, until the server stops.
pub async fn deliver_forever(state: AppState) {
    // The binary installs ring as the TLS provider; tests that start the app in-process may not.
    let http = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("opsloop-webhook/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(http) => http,
        Err(error) => {
            tracing::error!(%error, "no HTTP client for notifications; none will be sent");
            return;
        }
    };
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tick.tick().await;
        let due = match state.store.claim_due_deliveries(state.store.now_ms(), LEASE_MS, 20).await {
            Ok(due) => due,
            Err(error) => {
                tracing::warn!(%error, "could not read due notifications");
                continue;
            }
        };
        // Side by side: one slow receiver must not hold up the others.
        let mut sending = tokio::task::JoinSet::new();
        for delivery in due {
            let (state, http) = (state.clone(), http.clone());
            sending.spawn(async move { deliver(&state, &http, delivery).await });
        }
        while sending.join_next().await.is_some() {}
    }
}

async fn deliver(state: &AppState, http: &reqwest::Client, delivery: Delivery) {
    let hook = match state.store.notification_hook(delivery.hook_id).await {
        Ok(Some(hook)) => hook,
        // Deleted meanwhile: its deliveries went with it.
        Ok(None) => return,
        Err(error) => {
            tracing::warn!(%error, "could not read a notification hook");
            return;
        }
    };
    let secret = state
        .vault()
        .map_err(|e| e.to_string())
        .and_then(|vault| vault.decrypt(&hook.secret, &secret_context(hook.project_id)).map_err(|e| e.to_string()));
    let allowed =
        if state.config.notifications.allow_private_targets { Ok(()) } else { public_target(&hook.url).await };
    let result = match (allowed, secret) {
        (Err(refused), _) => Err(refused),
        (Ok(()), Ok(secret)) => http
            .post(&hook.url)
            .header("content-type", "application/json")
            .header("x-opsloop-event", &delivery.event)
            .header("x-opsloop-delivery", delivery.id.to_string())
            .header("x-opsloop-signature-256", signature(&secret, &delivery.payload))
            .body(delivery.payload.clone())
            .send()
            .await
            .map(|response| response.status())
            .map_err(|error| error.to_string()),
        (Ok(()), Err(error)) => Err(format!("the hook's secret cannot be read: {error}")),
    };
    let attempts = delivery.attempts + 1;
    let retry_at = (attempts < MAX_ATTEMPTS).then(|| state.store.now_ms() + backoff_ms(attempts - 1));
    let recorded = match result {
        Ok(status) if status.is_success() => {
            state.store.record_delivery_attempt(delivery.id, true, Some(i64::from(status.as_u16())), "", None).await
        }
        Ok(status) => {
            let error = format!("the receiver answered {status}");
            state
                .store
                .record_delivery_attempt(delivery.id, false, Some(i64::from(status.as_u16())), &error, retry_at)
                .await
        }
        Err(error) => state.store.record_delivery_attempt(delivery.id, false, None, &error, retry_at).await,
    };
    if let Err(error) = recorded {
        tracing::warn!(delivery = delivery.id, %error, "could not record a notification attempt");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_githubs_scheme_and_backoff_grows_to_an_hour() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", "what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!([backoff_ms(0), backoff_ms(1), backoff_ms(2)], [1000, 2000, 4000]);
        assert_eq!(backoff_ms(40), 3_600_000);
    }

    #[test]
    fn internal_addresses_are_told_apart() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.9",
            "172.16.5.5",
            "169.254.169.254",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "0.0.0.0",
        ] {
            assert!(internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "1.1.1.1"] {
            assert!(!internal(ip.parse().unwrap()), "{ip}");
        }
    }
}
