//! Where alerts go. [`AlertSink`] is what the rule manager hands firing and resolved alerts
//! to; [`Notifier`] is the sink that sends them to every Alertmanager of
//! `alerting.alertmanagers`, as Prometheus's `notifier` package does: external labels added,
//! `alert_relabel_configs` applied, a bounded queue that drops the oldest alerts when full,
//! batches `POST`ed to `{scheme}://{target}{path_prefix}/api/v2/alerts`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;

use crate::config::{AlertingConfig, AlertmanagerConfig, HttpClientConfig};
use crate::labels::Labels;
use crate::relabel::{self, RelabelConfig};
use crate::storage::Timestamp;

/// An alert as it leaves the rules: firing while `ends_at` is in the future, resolved once
/// `ends_at` is past (Alertmanager's convention).
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub labels: Labels,
    pub annotations: BTreeMap<String, String>,
    /// Milliseconds since the epoch.
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    pub generator_url: String,
}

/// Takes alerts from the rule manager. Called from the evaluation worker: an implementation
/// queues and returns, it does not send on the caller's time.
pub trait AlertSink: Send + Sync {
    fn send(&self, alerts: &[Alert]);
}

/// Alertmanager's API v2 `postableAlert`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PostableAlert {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub starts_at: String,
    pub ends_at: String,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
}

/// Prometheus's `--alertmanager.notification-queue-capacity`.
pub const DEFAULT_QUEUE_CAPACITY: usize = 10_000;
/// Alerts per request (Prometheus's `maxBatchSize`).
const MAX_BATCH: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    #[error("bad response status {0}")]
    Status(reqwest::StatusCode),
    #[error("send task failed: {0}")]
    Task(String),
    #[error("reading {path}: {source}")]
    Secret {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

struct Target {
    url: String,
    config: AlertmanagerConfig,
    client: reqwest::Client,
}

struct Inner {
    queue: Mutex<VecDeque<Alert>>,
    capacity: usize,
    wake: Notify,
    targets: Mutex<Arc<Vec<Target>>>,
    external_labels: Mutex<Labels>,
    relabel: Mutex<Vec<RelabelConfig>>,
    dropped: AtomicU64,
    sent: AtomicU64,
    errors: AtomicU64,
}

/// Sends alerts to Alertmanagers. Cheap to clone; [`Notifier::run`] is its worker.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier").field("queue", &self.queue_len()).finish_non_exhaustive()
    }
}

impl Notifier {
    pub fn new(capacity: usize) -> Self {
        // See ScrapeManager::new: a TLS provider must exist before reqwest builds a client.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        Notifier {
            inner: Arc::new(Inner {
                queue: Mutex::new(VecDeque::new()),
                capacity: capacity.max(1),
                wake: Notify::new(),
                targets: Mutex::new(Arc::new(Vec::new())),
                external_labels: Mutex::new(Labels::new()),
                relabel: Mutex::new(Vec::new()),
                dropped: AtomicU64::new(0),
                sent: AtomicU64::new(0),
                errors: AtomicU64::new(0),
            }),
        }
    }

    /// Takes the Alertmanagers (static targets), relabelling and external labels of a
    /// configuration. File-discovered Alertmanagers are not followed.
    pub fn apply_config(&self, alerting: &AlertingConfig, external_labels: &Labels) {
        let mut targets = Vec::new();
        for am in &alerting.alertmanagers {
            if am.api_version != "v2" {
                tracing::warn!(api_version = %am.api_version, "only Alertmanager API v2 is supported; skipping");
                continue;
            }
            let client = client_for(&am.http);
            for group in &am.static_configs {
                for t in &group.targets {
                    let mut pairs: Vec<(String, String)> =
                        group.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                    pairs.push(("__address__".into(), t.clone()));
                    pairs.push(("__scheme__".into(), am.scheme.clone()));
                    pairs.push((
                        "__alerts_path__".into(),
                        format!("{}/api/v2/alerts", am.path_prefix.trim_end_matches('/')),
                    ));
                    let Some(labels) = relabel::process(&Labels::from_pairs(pairs), &am.relabel_configs) else {
                        continue;
                    };
                    let (Some(addr), Some(scheme), Some(path)) =
                        (labels.get("__address__"), labels.get("__scheme__"), labels.get("__alerts_path__"))
                    else {
                        continue;
                    };
                    let path = if path.starts_with('/') { path.to_owned() } else { format!("/{path}") };
                    targets.push(Target {
                        url: format!("{scheme}://{addr}{path}"),
                        config: am.clone(),
                        client: client.clone(),
                    });
                }
            }
        }
        *self.inner.targets.lock().unwrap_or_else(|p| p.into_inner()) = Arc::new(targets);
        *self.inner.external_labels.lock().unwrap_or_else(|p| p.into_inner()) = external_labels.clone();
        *self.inner.relabel.lock().unwrap_or_else(|p| p.into_inner()) = alerting.alert_relabel_configs.clone();
    }

    /// The Alertmanager URLs alerts are posted to (`/api/v1/alertmanagers`).
    pub fn alertmanagers(&self) -> Vec<String> {
        self.inner.targets.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|t| t.url.clone()).collect()
    }

    pub fn queue_len(&self) -> usize {
        self.inner.queue.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Alerts dropped because the queue was full (`prometheus_notifications_dropped_total`).
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    pub fn sent(&self) -> u64 {
        self.inner.sent.load(Ordering::Relaxed)
    }

    pub fn errors(&self) -> u64 {
        self.inner.errors.load(Ordering::Relaxed)
    }

    /// Sends queued alerts until `stop` resolves; whatever is queued then is sent once more.
    pub async fn run(&self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            if self.queue_len() == 0 {
                tokio::select! {
                    () = &mut stop => break,
                    () = self.inner.wake.notified() => {}
                }
            }
            self.send_queued().await;
        }
        self.send_queued().await;
    }

    /// Sends everything queued now, in batches, to every Alertmanager.
    pub async fn send_queued(&self) {
        loop {
            let batch: Vec<Alert> = {
                let mut q = self.inner.queue.lock().unwrap_or_else(|p| p.into_inner());
                let n = q.len().min(MAX_BATCH);
                q.drain(..n).collect()
            };
            if batch.is_empty() {
                return;
            }
            let targets = self.inner.targets.lock().unwrap_or_else(|p| p.into_inner()).clone();
            if targets.is_empty() {
                continue;
            }
            let body: Vec<PostableAlert> = batch.iter().map(postable).collect();
            let Ok(json) = serde_json::to_vec(&body) else { continue };
            let sends = targets.iter().map(|t| send_one(t, json.clone()));
            let results = futures_join_all(sends).await;
            let mut any_ok = false;
            for (t, r) in targets.iter().zip(results) {
                match r {
                    Ok(()) => any_ok = true,
                    Err(e) => {
                        self.inner.errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(alertmanager = %t.url, error = %e, count = batch.len(), "sending alerts");
                    }
                }
            }
            if any_ok {
                self.inner.sent.fetch_add(batch.len() as u64, Ordering::Relaxed);
            }
        }
    }
}

impl AlertSink for Notifier {
    fn send(&self, alerts: &[Alert]) {
        let external = self.inner.external_labels.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let relabels = self.inner.relabel.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut prepared = Vec::with_capacity(alerts.len());
        for a in alerts {
            // External labels do not override the alert's own.
            let mut b = a.labels.builder();
            for l in external.iter() {
                if a.labels.get(&l.name).is_none() {
                    b.set(l.name.clone(), l.value.clone());
                }
            }
            let Some(labels) = relabel::process(&b.build(), &relabels) else { continue };
            if labels.is_empty() {
                continue;
            }
            prepared.push(Alert { labels, ..a.clone() });
        }
        if prepared.is_empty() {
            return;
        }
        {
            let mut q = self.inner.queue.lock().unwrap_or_else(|p| p.into_inner());
            // A batch larger than the queue keeps its newest alerts.
            if prepared.len() > self.inner.capacity {
                let extra = prepared.len() - self.inner.capacity;
                prepared.drain(..extra);
                self.inner.dropped.fetch_add(extra as u64, Ordering::Relaxed);
            }
            let overflow = (q.len() + prepared.len()).saturating_sub(self.inner.capacity);
            if overflow > 0 {
                q.drain(..overflow);
                self.inner.dropped.fetch_add(overflow as u64, Ordering::Relaxed);
                tracing::warn!(dropped = overflow, "alert queue full, dropping the oldest alerts");
            }
            q.extend(prepared);
        }
        self.inner.wake.notify_one();
    }
}

/// Waits for all sends; written out rather than pulling in the `futures` crate for one join.
async fn futures_join_all<F: std::future::Future<Output = Result<(), NotifyError>> + Send + 'static>(
    futures: impl Iterator<Item = F>,
) -> Vec<Result<(), NotifyError>> {
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::with_capacity(handles.len());
    for h in handles {
        out.push(h.await.unwrap_or_else(|e| Err(NotifyError::Task(e.to_string()))));
    }
    out
}

fn send_one(t: &Target, body: Vec<u8>) -> impl std::future::Future<Output = Result<(), NotifyError>> + Send + 'static {
    let client = t.client.clone();
    let url = t.url.clone();
    let config = t.config.clone();
    async move {
        let mut request = client
            .post(&url)
            .timeout(if config.timeout.is_zero() { Duration::from_secs(10) } else { config.timeout })
            .header("Content-Type", "application/json")
            .header("User-Agent", concat!("opsloop/", env!("CARGO_PKG_VERSION")))
            .body(body);
        if let Some(b) = &config.http.basic_auth {
            let password = match (&b.password, &b.password_file) {
                (Some(p), _) => Some(p.clone()),
                (None, Some(file)) => Some(read_secret(file)?),
                (None, None) => None,
            };
            request = request.basic_auth(&b.username, password);
        }
        if let Some(a) = &config.http.authorization {
            let credentials = match (&a.credentials, &a.credentials_file) {
                (Some(c), _) => c.clone(),
                (None, Some(file)) => read_secret(file)?,
                (None, None) => String::new(),
            };
            request = request.header("Authorization", format!("{} {credentials}", a.kind));
        }
        let response = request.send().await?;
        if !response.status().is_success() {
            return Err(NotifyError::Status(response.status()));
        }
        Ok(())
    }
}

fn read_secret(path: &std::path::Path) -> Result<String, NotifyError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|source| NotifyError::Secret { path: path.display().to_string(), source })
}

fn client_for(http: &HttpClientConfig) -> reqwest::Client {
    crate::scrape::client_for(http)
}

pub fn postable(a: &Alert) -> PostableAlert {
    PostableAlert {
        labels: a.labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect(),
        annotations: a.annotations.clone(),
        starts_at: rfc3339(a.starts_at),
        ends_at: rfc3339(a.ends_at),
        generator_url: a.generator_url.clone(),
    }
}

/// RFC 3339 in UTC with milliseconds where there are any, as Go's JSON encodes `time.Time`.
pub fn rfc3339(ms: Timestamp) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let c = crate::promql::time::civil(secs as f64);
    let mut out =
        format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}", c.year, c.month, c.day, c.hour, c.minute, secs.rem_euclid(60));
    if millis != 0 {
        out.push_str(format!(".{millis:03}").trim_end_matches('0'));
    }
    out.push('Z');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_as_go_writes_it() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_435_065_584_128), "2015-06-23T13:19:44.128Z");
        assert_eq!(rfc3339(1_435_065_584_100), "2015-06-23T13:19:44.1Z");
    }

    #[test]
    fn a_full_queue_drops_the_oldest() {
        let n = Notifier::new(3);
        let alert = |i: usize| Alert {
            labels: Labels::from_pairs([("alertname", format!("A{i}"))]),
            annotations: BTreeMap::new(),
            starts_at: 0,
            ends_at: 0,
            generator_url: String::new(),
        };
        n.send(&[alert(1), alert(2)]);
        n.send(&[alert(3), alert(4)]);
        assert_eq!((n.queue_len(), n.dropped()), (3, 1));
        let q = n.inner.queue.lock().unwrap_or_else(|p| p.into_inner());
        assert_eq!(q.front().and_then(|a| a.labels.get("alertname")), Some("A2"));
    }

    #[test]
    fn external_labels_and_relabelling_apply() {
        let n = Notifier::new(10);
        let relabel = vec![RelabelConfig {
            action: relabel::Action::LabelDrop,
            regex: relabel::Regexp::new("secret").expect("valid"),
            ..RelabelConfig::default()
        }];
        let alerting = AlertingConfig { alert_relabel_configs: relabel, alertmanagers: Vec::new() };
        n.apply_config(&alerting, &Labels::from_pairs([("cluster", "eu1"), ("severity", "ignored")]));
        n.send(&[Alert {
            labels: Labels::from_pairs([("alertname", "A"), ("secret", "x"), ("severity", "page")]),
            annotations: BTreeMap::new(),
            starts_at: 0,
            ends_at: 0,
            generator_url: String::new(),
        }]);
        let q = n.inner.queue.lock().unwrap_or_else(|p| p.into_inner());
        assert_eq!(
            q.front().map(|a| a.labels.to_string()),
            Some(r#"{alertname="A", cluster="eu1", severity="page"}"#.to_owned())
        );
    }
}
