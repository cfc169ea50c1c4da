//! Slack's incoming-webhook payload, shaped as Alertmanager's Slack integration sends it: one
//! attachment with the title, text and a colour for the status.

use serde_json::{Value, json};

use crate::config::IntegrationSettings;
use crate::dispatch::{AlertStatus, Notification};

pub fn payload(n: &Notification, external_url: &str) -> Value {
    let (channel, username, title, text) = match &n.integration.settings {
        IntegrationSettings::Slack { channel, username, title, text, .. } => (channel, username, title, text),
        _ => (&None, &None, &None, &None),
    };
    let title = super::text_or(title, || super::default_title(n));
    let text = super::text_or(text, || super::default_text(n));
    let color = if n.status() == AlertStatus::Firing { "danger" } else { "good" };
    let mut body = json!({
        "username": username.clone().unwrap_or_else(|| "Alertmanager".to_owned()),
        "attachments": [{
            "title": title,
            "title_link": format!("{external_url}/#/alerts?receiver={}", n.receiver),
            "text": text,
            "fallback": title,
            "color": color,
            "mrkdwn_in": ["fallback", "pretext", "text"],
        }],
    });
    if let Some(channel) = channel {
        body["channel"] = json!(channel);
    }
    body
}
