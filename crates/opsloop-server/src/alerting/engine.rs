//! The alerting engine hosted: `opsloop_alert::Engine` built from the instance's
//! `alertmanager.yml` (`--alerting-config`; a single do-nothing receiver without one), its
//! notification state restored from the store at start and saved after every change, driven
//! in real time by `opsloop_alert::driver`, and its notifications carried out here: HTTP
//! channels sent with retries, `oncall_configs` receivers opening (or joining, or resolving)
//! incidents that then escalate through the on-call policy ([`escalate_forever`]).

use std::time::Duration;

use jiff::Timestamp;
use opsloop_alert::config::IntegrationSettings;
use opsloop_alert::dispatch::{AlertStatus, Notification};
use opsloop_alert::driver::Driver;
use opsloop_alert::notify::{self, DeliveryStatus, RetryPolicy};
use opsloop_alert::oncall::Escalation;
use opsloop_alert::oncall::ack::AckAction;
use opsloop_alert::oncall::config::ContactKind;
use opsloop_alert::{Engine, Snapshot};
use opsloop_core::IncidentStatus;
use opsloop_store::{IncidentFilter, NewIncident};

use crate::state::AppState;

/// Notifications being delivered at once (the rest wait their turn).
const MAX_DELIVERIES: usize = 64;

/// The name under which the notification log and silences are saved.
const STATE_NAME: &str = "alertmanager";

/// What runs without an `alertmanager.yml`: alerts are taken, grouped and listed, and go
/// nowhere until a file says where.
pub const DEFAULT_CONFIG: &str = "route:\n  receiver: opsloop\nreceivers:\n  - name: opsloop\n";

/// The engine's configuration text and where it came from.
pub fn config_text(state: &AppState) -> Result<(String, String), String> {
    match &state.config.alerting.config_file {
        None => Ok((DEFAULT_CONFIG.to_owned(), "(default alertmanager.yml)".to_owned())),
        Some(path) => std::fs::read_to_string(path)
            .map(|text| (text, path.display().to_string()))
            .map_err(|e| format!("reading {}: {e}", path.display())),
    }
}

/// The running engine, started on first use: by the worker at start-up, or by the first API
/// call that needs it (tests serve without workers).
pub async fn driver(state: &AppState) -> Result<&Driver, String> {
    state
        .alerting
        .engine
        .get_or_try_init(|| async {
            let (text, name) = config_text(state)?;
            let config = opsloop_alert::config::load(&text, &name).map_err(|e| e.to_string())?;
            let mut engine = Engine::new(config);
            match state.store.subsystem_state(STATE_NAME).await {
                Ok(Some(saved)) => match serde_json::from_str::<Snapshot>(&saved) {
                    Ok(snapshot) => engine.restore(snapshot),
                    Err(e) => tracing::warn!(error = %e, "the saved alerting state is unreadable; starting afresh"),
                },
                Ok(None) => {}
                Err(e) => return Err(format!("reading the saved alerting state: {e}")),
            }
            let (driver, notifications) = Driver::spawn(engine, state.store.clock());
            let _ = state.alerting.started.set(opsloop_alert::oncall::now(state.store.clock().as_ref()));
            tokio::spawn(carry_out(state.clone(), notifications));
            Ok(driver)
        })
        .await
}

/// Saves the notification log and silences, so a restart neither repeats nor loses a
/// notification and keeps every silence.
pub async fn save(state: &AppState, driver: &Driver) {
    let snapshot = driver.with(|engine| engine.snapshot());
    match serde_json::to_string(&snapshot) {
        Ok(text) => {
            if let Err(e) = state.store.save_subsystem_state(STATE_NAME, &text).await {
                tracing::error!(error = %e, "saving the alerting state");
            }
        }
        Err(e) => tracing::error!(error = %e, "serializing the alerting state"),
    }
}

/// Carries out the engine's notifications as they come, saving its state after each batch.
async fn carry_out(state: AppState, mut notifications: tokio::sync::mpsc::UnboundedReceiver<Notification>) {
    let client = match notify::http_client(Duration::from_secs(10)) {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "the alerting HTTP client could not be built; notifications are not sent");
            return;
        }
    };
    let external_url = external_url(&state);
    // Deliveries at once: a flush of 25k groups started 25k requests and ~7,900 open
    // connections (bench/alerting.py), hundreds of MB and timeouts that sent duplicates.
    let in_flight = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_DELIVERIES));
    while let Some(first) = notifications.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = notifications.try_recv() {
            batch.push(more);
        }
        for notification in batch {
            if let IntegrationSettings::OnCall { escalation_policy } = &notification.integration.settings {
                // A busy database must not lose the page: retried with backoff, in order (a
                // group's resolve must not overtake its opening).
                let mut backoff = Duration::from_millis(200);
                let mut opened = false;
                for attempt in 1..=6 {
                    match incident_for(&state, &notification, escalation_policy).await {
                        Ok(()) => {
                            opened = true;
                            break;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, attempt, receiver = %notification.receiver, "opening an incident")
                        }
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                if !opened {
                    tracing::error!(receiver = %notification.receiver, "an incident could not be opened");
                }
                continue;
            }
            // Each delivery retries on its own time; a slow receiver never holds up the others.
            let (client, external_url) = (client.clone(), external_url.clone());
            let in_flight = in_flight.clone();
            tokio::spawn(async move {
                // Closed never: the semaphore lives as long as this loop.
                let Ok(_permit) = in_flight.acquire_owned().await else { return };
                let delivery = notify::deliver(&client, &notification, &external_url, RetryPolicy::default()).await;
                match delivery.status {
                    DeliveryStatus::Delivered => tracing::info!(
                        receiver = %notification.receiver,
                        integration = notification.integration.kind.name(),
                        attempts = delivery.attempts,
                        "notification delivered"
                    ),
                    DeliveryStatus::Failed => tracing::warn!(
                        receiver = %notification.receiver,
                        integration = notification.integration.kind.name(),
                        attempts = delivery.attempts,
                        error = delivery.error.as_deref().unwrap_or(""),
                        "notification failed"
                    ),
                }
            });
        }
        if let Some(driver) = state.alerting.engine.get() {
            save(&state, driver).await;
        }
    }
}

fn external_url(state: &AppState) -> String {
    super::base_url(state)
}

/// A firing notification opens an incident for its group (or updates the open one); a
/// resolved one resolves it.
async fn incident_for(state: &AppState, n: &Notification, policy: &str) -> Result<(), opsloop_store::StoreError> {
    let store = &state.store;
    let alerts = serde_json::Value::Array(
        n.alerts
            .iter()
            .map(|a| {
                serde_json::json!({
                    "status": a.status,
                    "labels": a.labels,
                    "annotations": a.annotations,
                    "startsAt": a.starts_at.to_string(),
                    "fingerprint": a.fingerprint.to_string(),
                    "generatorURL": a.generator_url,
                })
            })
            .collect(),
    )
    .to_string();
    if n.status() == AlertStatus::Resolved {
        let open = store.incidents(&IncidentFilter { open: true, limit: 500, ..Default::default() }).await?;
        for incident in open.into_iter().filter(|i| i.dedup_key == n.group_key) {
            store.add_incident_event(incident.id, "alerts", "alerting", &alerts).await?;
            store
                .set_incident_status(incident.id, IncidentStatus::Resolved, "alerting", "every alert resolved")
                .await?;
        }
        return Ok(());
    }
    let common = notify::common(n, |a| &a.labels);
    let project = match common.get("project") {
        Some(name) => store.project_by_name(name).await?.map(|p| p.id),
        None => None,
    };
    let title = notify::default_title(n);
    let new = NewIncident {
        project_id: project,
        dedup_key: &n.group_key,
        title: &title,
        severity: common.get("severity").unwrap_or("critical"),
        escalation_policy: policy,
        alerts: &alerts,
    };
    let (incident, created) = store.open_or_join_incident(&new).await?;
    if !created {
        return Ok(());
    }
    let Some(oncall) = state.alerting.oncall() else {
        store
            .add_incident_event(incident.id, "escalation", "alerting", "no on-call configuration: nobody paged")
            .await?;
        return Ok(());
    };
    let Some(policy) = oncall.policy(policy) else {
        let detail = format!("no escalation policy `{policy}` in the on-call configuration: nobody paged");
        store.add_incident_event(incident.id, "escalation", "alerting", &detail).await?;
        return Ok(());
    };
    let now = opsloop_alert::oncall::now(store.clock().as_ref());
    let escalation = Escalation::start(incident.id.to_string(), policy, now);
    save_escalation(state, incident.id, &escalation).await?;
    state.alerting.escalations_due.notify_one();
    Ok(())
}

async fn save_escalation(state: &AppState, id: i64, escalation: &Escalation) -> Result<(), opsloop_store::StoreError> {
    let text = serde_json::to_string(escalation).map_err(|e| opsloop_store::StoreError::Corrupt(e.to_string()))?;
    let next = escalation.next_deadline().map(|t| t.as_millisecond());
    state.store.set_incident_escalation(id, &text, next).await
}

/// Pages whoever each triggered incident's escalation reaches when it is due; runs on one
/// server at a time (a lease), so replicas on one database never page twice.
pub async fn escalate_forever(state: AppState) {
    let holder = format!("{}-{}", std::process::id(), state.store.now_ms());
    let client = notify::http_client(Duration::from_secs(10)).ok();
    loop {
        let wait = tokio::time::sleep(Duration::from_secs(1));
        tokio::select! {
            () = wait => {}
            () = state.alerting.escalations_due.notified() => {}
        }
        let Some(oncall) = state.alerting.oncall() else { continue };
        match state.store.take_lease("alerting-escalation", &holder, 15_000).await {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "taking the escalation lease");
                continue;
            }
        }
        let due = match state.store.incidents_due(state.store.now_ms(), 100).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "reading due escalations");
                continue;
            }
        };
        for incident in due {
            let Some(saved) = incident.escalation.as_deref() else { continue };
            let Ok(mut escalation) = serde_json::from_str::<Escalation>(saved) else {
                tracing::error!(incident = incident.id, "an incident's escalation state is unreadable");
                let _ = state.store.set_incident_escalation(incident.id, saved, None).await;
                continue;
            };
            let now = opsloop_alert::oncall::now(state.store.clock().as_ref());
            for page in escalation.tick(&oncall, now) {
                let outcome = match &client {
                    Some(client) => send_page(client, &state, &incident, &page).await,
                    None => Err("no HTTP client".to_owned()),
                };
                let detail = serde_json::json!({
                    "user": page.user.as_str(),
                    "contact": page.contact.kind.as_str(),
                    "address": page.contact.address,
                    "level": page.level,
                    "attempt": page.attempt,
                    "error": outcome.err(),
                })
                .to_string();
                let _ = state.store.add_incident_event(incident.id, "paged", "escalation", &detail).await;
            }
            if let Err(e) = save_escalation(&state, incident.id, &escalation).await {
                tracing::warn!(error = %e, incident = incident.id, "saving an escalation");
            }
        }
    }
}

/// Sends one page: a JSON POST for webhook contacts, a Slack-format message for chat ones, an
/// email through `alertmanager.yml`'s `global.smtp_*` for email ones.
async fn send_page(
    client: &reqwest::Client,
    state: &AppState,
    incident: &opsloop_store::Incident,
    page: &opsloop_alert::oncall::PageAction,
) -> Result<(), String> {
    let url = format!("{}/incidents/{}", external_url(state).trim_end_matches('/'), incident.id);
    // A link that acknowledges without signing in; without the vault there is none.
    let ack_url = super::links::issue(state, incident.id, page.user.as_str(), AckAction::Acknowledge)
        .await
        .map_err(|e| tracing::warn!(error = %e, "no acknowledge link in the page"))
        .ok();
    let body = match page.contact.kind {
        ContactKind::Webhook => serde_json::json!({
            "incident": { "id": incident.id, "title": incident.title, "severity": incident.severity, "url": url },
            "user": page.user.as_str(),
            "level": page.level,
            "attempt": page.attempt,
            "ack_url": ack_url,
        }),
        ContactKind::Slack => serde_json::json!({
            "text": format!(
                "[{}] {} — paged {} (level {}): {url}{}",
                incident.severity,
                incident.title,
                page.user.as_str(),
                page.level,
                ack_url.as_deref().map(|link| format!("\nAcknowledge: {link}")).unwrap_or_default()
            ),
        }),
        ContactKind::Email => {
            // The SMTP settings are alertmanager.yml's `global.smtp_*`.
            let driver = driver(state).await?;
            let global = driver.with(|engine| engine.config().global.clone());
            let smarthost =
                global.smtp_smarthost.ok_or("email pages need global.smtp_smarthost in alertmanager.yml")?;
            let smtp = notify::email::Smtp {
                smarthost,
                from: global.smtp_from.unwrap_or_else(|| "opsloop@localhost".to_owned()),
                to: page.contact.address.clone(),
                hello: global.smtp_hello,
                require_tls: global.smtp_require_tls,
                username: global.smtp_auth_username,
                password: global.smtp_auth_password,
            };
            let subject = format!("[{}] Incident {}: {}", incident.severity, incident.id, incident.title);
            let mut text = format!("You are paged (level {}) for incident {}.\n\n{url}\n", page.level, incident.id);
            if let Some(link) = &ack_url {
                text.push_str(&format!("\nAcknowledge: {link}\n"));
            }
            let delivery = notify::email::send(&smtp, &subject, &text, RetryPolicy::default()).await;
            return match delivery.status {
                DeliveryStatus::Delivered => Ok(()),
                DeliveryStatus::Failed => Err(delivery.error.unwrap_or_else(|| "not delivered".to_owned())),
            };
        }
    };
    let response = client.post(&page.contact.address).json(&body).send().await.map_err(|e| e.to_string())?;
    if response.status().is_success() { Ok(()) } else { Err(format!("the receiver answered {}", response.status())) }
}

/// Takes alerts from the metrics engine's rules, in process: every rule's alerts reach
/// opsloop's own alerting as well as the `alertmanagers` a `prometheus.yml` names.
pub struct RuleSink(pub AppState);

/// Hands the rules' alerts to several sinks.
pub struct Fanout(pub Vec<std::sync::Arc<dyn opsloop_metrics::rules::AlertSink>>);

impl opsloop_metrics::rules::AlertSink for Fanout {
    fn send(&self, alerts: &[opsloop_metrics::rules::Alert]) {
        for sink in &self.0 {
            sink.send(alerts);
        }
    }
}

impl opsloop_metrics::rules::AlertSink for RuleSink {
    fn send(&self, alerts: &[opsloop_metrics::rules::Alert]) {
        let Some(driver) = self.0.alerting.engine.get() else { return };
        let postable: Vec<opsloop_alert::alerts::PostableAlert> = alerts
            .iter()
            .map(|a| opsloop_alert::alerts::PostableAlert {
                labels: opsloop_alert::labels::LabelSet::from_pairs(
                    a.labels.iter().map(|l| (l.name.as_str(), l.value.as_str())),
                ),
                annotations: opsloop_alert::labels::LabelSet::from_pairs(
                    a.annotations.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                ),
                starts_at: Timestamp::from_millisecond(a.starts_at).ok(),
                ends_at: Timestamp::from_millisecond(a.ends_at).ok(),
                generator_url: a.generator_url.clone(),
            })
            .collect();
        let now = opsloop_alert::oncall::now(self.0.store.clock().as_ref());
        if let Err(e) = driver.with(|engine| engine.put(postable, now)) {
            tracing::warn!(error = %e, "alerts from the rules refused");
        }
    }
}
