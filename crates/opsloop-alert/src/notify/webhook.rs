//! Alertmanager's webhook payload (version "4"): exactly its fields and their order, the
//! receiver name regex-quoted as Alertmanager's template data quotes it, firing alerts with
//! the zero `endsAt`, and `max_alerts` truncation.

use serde::Serialize;

use crate::dispatch::{AlertStatus, Notification};
use crate::labels::LabelSet;

/// Go's zero time, which Alertmanager writes as a firing alert's `endsAt`.
pub const GO_ZERO_TIME: &str = "0001-01-01T00:00:00Z";

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub receiver: String,
    pub status: AlertStatus,
    pub alerts: Vec<WebhookAlert>,
    pub group_labels: LabelSet,
    pub common_labels: LabelSet,
    pub common_annotations: LabelSet,
    #[serde(rename = "externalURL")]
    pub external_url: String,
    pub version: &'static str,
    pub group_key: String,
    pub truncated_alerts: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookAlert {
    pub status: AlertStatus,
    pub labels: LabelSet,
    pub annotations: LabelSet,
    pub starts_at: String,
    pub ends_at: String,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
    pub fingerprint: String,
}

/// Go's `time.RFC3339Nano` in UTC: fractional seconds without trailing zeros.
pub fn go_time(t: jiff::Timestamp) -> String {
    let text = t.strftime("%Y-%m-%dT%H:%M:%S.%f").to_string();
    let (secs, frac) = text.split_once('.').unwrap_or((&text, ""));
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() { format!("{secs}Z") } else { format!("{secs}.{frac}Z") }
}

/// Go's `regexp.QuoteMeta`.
pub fn quote_meta(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if r"\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

pub fn payload(n: &Notification, external_url: &str, max_alerts: u64) -> Message {
    let total = n.alerts.len() as u64;
    let keep = if max_alerts > 0 && total > max_alerts { max_alerts as usize } else { n.alerts.len() };
    Message {
        receiver: quote_meta(&n.receiver),
        status: n.status(),
        alerts: n.alerts[..keep]
            .iter()
            .map(|a| WebhookAlert {
                status: a.status,
                labels: a.labels.clone(),
                annotations: a.annotations.clone(),
                starts_at: go_time(a.starts_at),
                ends_at: a.ends_at.map_or_else(|| GO_ZERO_TIME.to_owned(), go_time),
                generator_url: a.generator_url.clone(),
                fingerprint: a.fingerprint.to_string(),
            })
            .collect(),
        group_labels: n.group_labels.clone(),
        // Common labels are computed over every alert, before truncation, as Alertmanager does.
        common_labels: super::common(n, |a| &a.labels),
        common_annotations: super::common(n, |a| &a.annotations),
        external_url: external_url.to_owned(),
        version: "4",
        group_key: n.group_key.clone(),
        truncated_alerts: total - keep as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_time_trims_fraction() {
        let t: jiff::Timestamp = "2024-01-02T03:04:05.120Z".parse().unwrap();
        assert_eq!(go_time(t), "2024-01-02T03:04:05.12Z");
        let t: jiff::Timestamp = "2024-01-02T03:04:05Z".parse().unwrap();
        assert_eq!(go_time(t), "2024-01-02T03:04:05Z");
        assert_eq!(quote_meta("a.b-c"), "a\\.b-c");
    }
}
