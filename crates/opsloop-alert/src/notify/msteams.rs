//! Microsoft Teams' incoming-webhook MessageCard, as Alertmanager 0.26's msteams integration
//! sends it (an opsloop extension over 0.25).

use serde_json::{Value, json};

use crate::config::IntegrationSettings;
use crate::dispatch::{AlertStatus, Notification};

pub fn payload(n: &Notification, _external_url: &str) -> Value {
    let (title, text) = match &n.integration.settings {
        IntegrationSettings::MsTeams { title, text, .. } => (title, text),
        _ => (&None, &None),
    };
    let title = super::text_or(title, || super::default_title(n));
    let color = if n.status() == AlertStatus::Firing { "8C1A1A" } else { "2DC72D" };
    json!({
        "@context": "http://schema.org/extensions",
        "type": "MessageCard",
        "title": title,
        "summary": title,
        "text": super::text_or(text, || super::default_text(n)),
        "themeColor": color,
    })
}
