//! PagerDuty Events API v2, as Alertmanager's PagerDuty integration sends it: one event per
//! group, deduplicated by the SHA-256 of the group key, triggered while any alert fires and
//! resolved when none does.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::config::IntegrationSettings;
use crate::dispatch::{AlertStatus, Notification};

/// `notify.Key.Hash()`: the hex SHA-256 of the group key.
pub fn dedup_key(group_key: &str) -> String {
    hex::encode(Sha256::digest(group_key.as_bytes()))
}

pub fn payload(n: &Notification, external_url: &str) -> Value {
    let (routing_key, severity, client, client_url) = match &n.integration.settings {
        IntegrationSettings::PagerDuty { routing_key, service_key, severity, client, client_url, .. } => {
            (routing_key.clone().or(service_key.clone()), severity.clone(), client.clone(), client_url.clone())
        }
        _ => (None, None, None, None),
    };
    let firing = n.alerts.iter().filter(|a| a.status == AlertStatus::Firing).count();
    let action = if n.status() == AlertStatus::Firing { "trigger" } else { "resolve" };
    let mut summary = super::default_title(n);
    // PagerDuty truncates summaries beyond 1024 characters; Alertmanager cuts them first.
    if summary.chars().count() > 1024 {
        summary = summary.chars().take(1023).collect::<String>() + "…";
    }
    json!({
        "routing_key": routing_key.unwrap_or_default(),
        "event_action": action,
        "dedup_key": dedup_key(&n.group_key),
        "payload": {
            "summary": summary,
            "source": super::text_or(&client, || "Alertmanager".to_owned()),
            "severity": super::text_or(&severity, || "error".to_owned()),
            "custom_details": {
                "firing": super::default_text(n),
                "num_firing": firing.to_string(),
                "num_resolved": (n.alerts.len() - firing).to_string(),
            },
        },
        "client": super::text_or(&client, || "Alertmanager".to_owned()),
        "client_url": super::text_or(&client_url, || external_url.to_owned()),
    })
}
