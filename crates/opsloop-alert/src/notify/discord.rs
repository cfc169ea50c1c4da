//! Discord's webhook payload, as Alertmanager's Discord integration sends it: one embed with
//! the title, the message and a colour for the status.

use serde_json::{Value, json};

use crate::config::IntegrationSettings;
use crate::dispatch::{AlertStatus, Notification};

pub fn payload(n: &Notification, _external_url: &str) -> Value {
    let (title, message) = match &n.integration.settings {
        IntegrationSettings::Discord { title, message, .. } => (title, message),
        _ => (&None, &None),
    };
    // Discord's colours: red while firing, green once resolved (Alertmanager's choice).
    let color = if n.status() == AlertStatus::Firing { 0x992D22 } else { 0x2ECC71 };
    let mut title = super::text_or(title, || super::default_title(n));
    // Discord refuses titles longer than 256 characters.
    if title.chars().count() > 256 {
        title = title.chars().take(255).collect::<String>() + "…";
    }
    json!({ "embeds": [{ "title": title, "description": super::text_or(message, || super::default_text(n)), "color": color }] })
}
