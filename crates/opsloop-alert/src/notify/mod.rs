//! Notification channels: each channel's module turns a [`Notification`] into the HTTP
//! request its service expects, registered in one place ([`build_request`]); [`send`]
//! delivers it with retries and exponential backoff and returns a [`Delivery`] record.
//!
//! Alertmanager renders messages with Go templates; opsloop does not run Go templates, so
//! channels use Alertmanager's default texts (see [`default_title`]) and a configured text
//! is used as written only when it holds no `{{`.

pub mod discord;
pub mod email;
pub mod msteams;
pub mod pagerduty;
pub mod slack;
pub mod webhook;

use std::time::Duration;

use crate::config::{HttpConfig, IntegrationSettings};
use crate::dispatch::{AlertStatus, Notification};
use crate::labels::LabelSet;

/// An HTTP request a channel wants sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub url: String,
    pub body: serde_json::Value,
    pub http: HttpConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifyError {
    #[error("the {0} integration has no HTTP sender in opsloop")]
    Unsupported(&'static str),
    #[error("{0}")]
    Client(String),
}

/// The request for a notification, by its integration's kind: the one registry of channels.
pub fn build_request(n: &Notification, external_url: &str) -> Result<Request, NotifyError> {
    let http = n.integration.http_config.clone();
    let (url, body) = match &n.integration.settings {
        IntegrationSettings::Webhook { url, max_alerts } => {
            (url.clone(), serde_json::to_value(webhook::payload(n, external_url, *max_alerts)).unwrap_or_default())
        }
        IntegrationSettings::Slack { api_url, .. } => (api_url.clone(), slack::payload(n, external_url)),
        IntegrationSettings::PagerDuty { url, .. } => (url.clone(), pagerduty::payload(n, external_url)),
        IntegrationSettings::MsTeams { webhook_url, .. } => (webhook_url.clone(), msteams::payload(n, external_url)),
        IntegrationSettings::Discord { webhook_url, .. } => (webhook_url.clone(), discord::payload(n, external_url)),
        IntegrationSettings::Email { .. } | IntegrationSettings::OnCall { .. } | IntegrationSettings::Other(_) => {
            return Err(NotifyError::Unsupported(n.integration.kind.name()));
        }
    };
    Ok(Request { url, body, http })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    Delivered,
    Failed,
}

/// What became of one notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub attempts: u32,
    pub status: DeliveryStatus,
    pub http_status: Option<u16>,
    pub error: Option<String>,
}

/// Exponential backoff between attempts, doubling up to `max_backoff`.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(10),
        }
    }
}

/// The HTTP client channels send with. reqwest is built without a TLS provider in this
/// workspace: install ring's if nobody has, so a library user cannot hit reqwest's panic.
pub fn http_client(timeout: Duration) -> Result<reqwest::Client, NotifyError> {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    reqwest::Client::builder()
        .timeout(timeout)
        // A flush of thousands of groups to one receiver must not leave thousands of idle
        // connections (and their buffers) behind.
        .pool_max_idle_per_host(16)
        .user_agent(concat!("opsloop-alert/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| NotifyError::Client(e.to_string()))
}

/// Sends a request, retrying network errors, 429 and 5xx answers (a 4xx other than 429 will
/// not get better, as Alertmanager reasons).
pub async fn send(client: &reqwest::Client, request: &Request, retry: RetryPolicy) -> Delivery {
    let mut backoff = retry.initial_backoff;
    let mut attempts = 0;
    loop {
        attempts += 1;
        let mut builder = client.post(&request.url).json(&request.body);
        if let Some((user, pass)) = &request.http.basic_auth {
            builder = builder.basic_auth(user, Some(pass));
        }
        if let Some(token) = &request.http.bearer_token {
            builder = builder.bearer_auth(token);
        }
        let (retryable, http_status, error) = match builder.send().await {
            Ok(resp) if resp.status().is_success() => {
                return Delivery {
                    attempts,
                    status: DeliveryStatus::Delivered,
                    http_status: Some(resp.status().as_u16()),
                    error: None,
                };
            }
            Ok(resp) => {
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                let retryable = status.is_server_error() || status.as_u16() == 429;
                (
                    retryable,
                    Some(status.as_u16()),
                    format!("unexpected status code {}: {}", status.as_u16(), body.trim()),
                )
            }
            Err(e) => (true, None, e.to_string()),
        };
        if !retryable || attempts >= retry.max_attempts {
            return Delivery { attempts, status: DeliveryStatus::Failed, http_status, error: Some(error) };
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(retry.max_backoff);
    }
}

/// Builds and sends a notification.
pub async fn deliver(client: &reqwest::Client, n: &Notification, external_url: &str, retry: RetryPolicy) -> Delivery {
    if let IntegrationSettings::Email { to, from, smarthost, hello, require_tls, auth_username, auth_password } =
        &n.integration.settings
    {
        let smtp = email::Smtp {
            smarthost: smarthost.clone(),
            from: from.clone(),
            to: to.clone(),
            hello: hello.clone(),
            require_tls: *require_tls,
            username: auth_username.clone(),
            password: auth_password.clone(),
        };
        let (subject, body) = email::message_text(n, external_url);
        return email::send(&smtp, &subject, &body, retry).await;
    }
    match build_request(n, external_url) {
        Ok(request) => send(client, &request, retry).await,
        Err(e) => {
            Delivery { attempts: 0, status: DeliveryStatus::Failed, http_status: None, error: Some(e.to_string()) }
        }
    }
}

/// Labels every alert of the notification has with the same value.
pub fn common(n: &Notification, pick: impl Fn(&crate::dispatch::NotifiedAlert) -> &LabelSet) -> LabelSet {
    let Some(first) = n.alerts.first() else { return LabelSet::new() };
    pick(first).filter_pairs(|name, value| n.alerts.iter().all(|a| pick(a).get(name) == Some(value)))
}

/// Alertmanager's default title (`__subject`): `[FIRING:2] group label values (other common
/// label values)`.
pub fn default_title(n: &Notification) -> String {
    let firing = n.alerts.iter().filter(|a| a.status == AlertStatus::Firing).count();
    let status = match n.status() {
        AlertStatus::Firing => format!("FIRING:{firing}"),
        AlertStatus::Resolved => "RESOLVED".to_owned(),
    };
    let group: Vec<&str> = n.group_labels.iter().map(|(_, v)| v).collect();
    let mut title = format!("[{status}] {}", group.join(" "));
    let common_labels = common(n, |a| &a.labels);
    if common_labels.len() > n.group_labels.len() {
        let rest: Vec<&str> =
            common_labels.iter().filter(|(k, _)| n.group_labels.get(k).is_none()).map(|(_, v)| v).collect();
        title.push_str(&format!(" ({})", rest.join(" ")));
    }
    title
}

/// A configured text used as written, or the default when it is a Go template.
pub(crate) fn text_or(configured: &Option<String>, default: impl FnOnce() -> String) -> String {
    match configured {
        Some(text) if !text.contains("{{") => text.clone(),
        _ => default(),
    }
}

/// One line per alert: its annotations' summary or description, else its labels.
pub(crate) fn default_text(n: &Notification) -> String {
    n.alerts
        .iter()
        .map(|a| {
            let what = a.annotations.get("summary").or(a.annotations.get("description"));
            match what {
                Some(s) => format!("- {s}"),
                None => format!("- {}", a.labels),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}
