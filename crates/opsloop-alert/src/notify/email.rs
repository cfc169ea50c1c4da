//! The email channel (`email_configs`) and pages to email contacts: a plain-text message sent
//! over SMTP with lettre — STARTTLS when `require_tls` (Alertmanager's default), plain SMTP
//! otherwise (a local relay, a test sink), AUTH when a user name is set — retried with the
//! same backoff as the HTTP channels.

use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{Delivery, DeliveryStatus, RetryPolicy};
use crate::dispatch::{AlertStatus, Notification};

/// Where and how to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Smtp {
    /// `host:port` (Alertmanager's `smarthost`).
    pub smarthost: String,
    pub from: String,
    /// Comma-separated, as Alertmanager's `to`.
    pub to: String,
    pub hello: String,
    pub require_tls: bool,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// The text of a notification: Alertmanager's default subject, then one block per alert.
pub fn message_text(n: &Notification, external_url: &str) -> (String, String) {
    let subject = super::default_title(n);
    let mut body = String::new();
    for alert in &n.alerts {
        let status = match alert.status {
            AlertStatus::Firing => "FIRING",
            AlertStatus::Resolved => "RESOLVED",
        };
        body.push_str(&format!("[{status}] {}\n", alert.labels));
        for (name, value) in alert.annotations.iter() {
            body.push_str(&format!("  {name}: {value}\n"));
        }
        body.push_str(&format!("  since {}\n", alert.starts_at));
        if !alert.generator_url.is_empty() {
            body.push_str(&format!("  source: {}\n", alert.generator_url));
        }
        body.push('\n');
    }
    body.push_str(&format!("Sent by opsloop ({external_url})\n"));
    (subject, body)
}

fn build(smtp: &Smtp, subject: &str, body: &str) -> Result<Message, String> {
    let from: Mailbox = smtp.from.parse().map_err(|e| format!("from {:?}: {e}", smtp.from))?;
    let mut builder = Message::builder().from(from).subject(subject);
    let mut any = false;
    for to in smtp.to.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let to: Mailbox = to.parse().map_err(|e| format!("to {to:?}: {e}"))?;
        builder = builder.to(to);
        any = true;
    }
    if !any {
        return Err("no recipient".to_owned());
    }
    builder.body(body.to_owned()).map_err(|e| e.to_string())
}

fn transport(smtp: &Smtp) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    let (host, port) = smtp
        .smarthost
        .rsplit_once(':')
        .and_then(|(host, port)| Some((host.trim_matches(['[', ']']), port.parse::<u16>().ok()?)))
        .ok_or_else(|| format!("smarthost {:?} is not host:port", smtp.smarthost))?;
    let builder = if smtp.require_tls {
        AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host).map_err(|e| e.to_string())?
    } else {
        AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
    };
    let mut builder = builder
        .port(port)
        .hello_name(lettre::transport::smtp::extension::ClientId::Domain(smtp.hello.clone()))
        .timeout(Some(std::time::Duration::from_secs(10)));
    if let (Some(user), Some(password)) = (&smtp.username, &smtp.password) {
        builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
    }
    Ok(builder.build())
}

/// Sends one message, retried with backoff.
pub async fn send(smtp: &Smtp, subject: &str, body: &str, retry: RetryPolicy) -> Delivery {
    let failed = |error: String, attempts| Delivery {
        attempts,
        status: DeliveryStatus::Failed,
        http_status: None,
        error: Some(error),
    };
    let message = match build(smtp, subject, body) {
        Ok(message) => message,
        Err(e) => return failed(e, 0),
    };
    let transport = match transport(smtp) {
        Ok(transport) => transport,
        Err(e) => return failed(e, 0),
    };
    let mut backoff = retry.initial_backoff;
    let mut attempt = 0;
    loop {
        attempt += 1;
        match transport.send(message.clone()).await {
            Ok(_) => {
                return Delivery {
                    attempts: attempt,
                    status: DeliveryStatus::Delivered,
                    http_status: None,
                    error: None,
                };
            }
            // A permanent refusal (5xx) is not retried.
            Err(e) if e.is_permanent() || attempt >= retry.max_attempts => return failed(e.to_string(), attempt),
            Err(_) => {}
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(retry.max_backoff);
    }
}
