//! The remote-write sender: one [`RemoteWriter`] per `remote_write` entry of a
//! `prometheus.yml`. The host hands it what it appends ([`RemoteWriter::enqueue`], or the
//! [`Tee`] storage that does it); [`RemoteWriter::run`] posts it to the remote end.
//!
//! Delivery works in rounds: read up to `shards × max_samples_per_send` samples from the
//! durable [`Queue`], split them over the shards by series hash (so a series always goes
//! through one shard, in order), let every shard send its part in batches of at most
//! `max_samples_per_send`, and only once all shards are done move the queue's cursor. A round
//! never overtakes the one before it, so each series arrives in order, and a restart resends
//! at most one round. The number of shards follows the backlog, between `min_shards` and
//! `max_shards`: one per full batch waiting.
//!
//! A batch that fails with a 5xx, a 429 or a network error is sent again after a backoff that
//! doubles from `min_backoff` up to `max_backoff`, for as long as it takes (the queue is on
//! disk, so waiting costs no memory); 429 is retried whatever `retry_on_http_429` says,
//! since a durable queue exists precisely not to lose samples to a busy receiver. Any other
//! answer (a 4xx: the receiver will never take this batch) drops the batch, counted in
//! `samples_failed`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::queue::{Queue, QueueError};
use crate::config::{HttpClientConfig, RemoteWriteConfig};
use crate::labels::{Labels, Matcher};
use crate::relabel;
use crate::storage::{Appendable, Queryable, Sample, Series, Storage, StorageError, Timestamp};

/// Where a writer keeps its queue, and what it adds to every series.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// The queue's directory, one per writer (`<data-dir>/metrics/remote-write/<name>`).
    pub dir: PathBuf,
    /// `global.external_labels`, added to series that lack them before relabelling.
    pub external_labels: Labels,
    /// The most the queue may take on disk; past it the oldest unsent samples are dropped
    /// (counted). 0: no limit.
    pub max_queue_bytes: u64,
}

impl WriterOptions {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        WriterOptions { dir: dir.into(), external_labels: Labels::new(), max_queue_bytes: 1 << 30 }
    }
}

/// What a writer has done since it started, for a status page and `/metrics`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RemoteWriteStats {
    pub name: String,
    pub url: String,
    /// Samples the remote end accepted.
    pub samples_sent: u64,
    /// Samples the remote end refused for good (a 4xx other than 429), not retried.
    pub samples_failed: u64,
    /// Samples never queued or thrown out of the queue: removed by `write_relabel_configs`,
    /// older than what was already queued for their series, or over the queue's size limit.
    pub samples_dropped: u64,
    /// Samples sent again after a failure that may pass (5xx, 429, network).
    pub samples_retried: u64,
    /// Samples queued and not yet acknowledged.
    pub samples_pending: u64,
    /// When the remote end last accepted a batch, milliseconds since the epoch.
    pub last_send_ms: Option<i64>,
    /// The shard count of the current (or last) round.
    pub shards: usize,
    pub per_shard: Vec<ShardStats>,
    /// Bytes the queue takes on disk.
    pub queue_bytes: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShardStats {
    pub samples_sent: u64,
    pub requests: u64,
    pub retries: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error(transparent)]
    Queue(#[from] QueueError),
    #[error("invalid remote_write url {url:?}: {reason}")]
    Url { url: String, reason: String },
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
    retried: AtomicU64,
    last_send_ms: AtomicU64,
    shards: AtomicU64,
}

pub struct RemoteWriter {
    config: RemoteWriteConfig,
    options: WriterOptions,
    queue: Queue,
    client: reqwest::Client,
    wake: Notify,
    counters: Counters,
    per_shard: Mutex<Vec<ShardStats>>,
    /// The newest timestamp queued per series (by label hash): a sample at or before it would
    /// be refused as out of order by the receiver, and with it its whole batch.
    last_queued: Mutex<HashMap<u64, Timestamp>>,
}

impl std::fmt::Debug for RemoteWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteWriter").field("url", &self.config.url).finish_non_exhaustive()
    }
}

enum Outcome {
    Sent,
    Retry(String),
    Refused(String),
}

impl RemoteWriter {
    /// Opens the writer's queue (what a previous run left unsent is sent first).
    pub fn open(config: RemoteWriteConfig, options: WriterOptions) -> Result<Arc<RemoteWriter>, WriterError> {
        if let Err(e) = url::Url::parse(&config.url) {
            return Err(WriterError::Url { url: config.url.clone(), reason: e.to_string() });
        }
        let queue = Queue::open(&options.dir, options.max_queue_bytes)?;
        // As in ScrapeManager::new: reqwest has no TLS provider of its own in this workspace.
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = crate::scrape::client_for(&config.http);
        Ok(Arc::new(RemoteWriter {
            config,
            options,
            queue,
            client,
            wake: Notify::new(),
            counters: Counters::default(),
            per_shard: Mutex::new(Vec::new()),
            last_queued: Mutex::new(HashMap::new()),
        }))
    }

    /// `name`, or the URL when the entry has none.
    pub fn name(&self) -> &str {
        self.config.name.as_deref().unwrap_or(&self.config.url)
    }

    /// Queues samples for sending: external labels added, `write_relabel_configs` applied,
    /// and on disk (fsynced) when this returns.
    pub fn enqueue(&self, batch: &[(Labels, Sample)]) -> Result<(), WriterError> {
        let mut out: Vec<(Labels, Vec<Sample>)> = Vec::new();
        // The relabelled form of each series seen in this batch (or None: dropped), and where
        // it sits in `out`, so a series is relabelled once per batch.
        let mut seen: HashMap<u64, Option<usize>> = HashMap::new();
        let mut dropped = 0u64;
        {
            let mut last = self.last_queued.lock().unwrap_or_else(|p| p.into_inner());
            for (labels, sample) in batch {
                let hash = labels.hash64();
                let slot = *seen.entry(hash).or_insert_with(|| {
                    self.relabel(labels).map(|l| {
                        out.push((l, Vec::new()));
                        out.len() - 1
                    })
                });
                let Some(i) = slot else {
                    dropped += 1;
                    continue;
                };
                let newest = last.entry(hash).or_insert(Timestamp::MIN);
                if sample.t <= *newest {
                    dropped += 1;
                    continue;
                }
                *newest = sample.t;
                out[i].1.push(*sample);
            }
        }
        out.retain(|(_, s)| !s.is_empty());
        let overflow = self.queue.append(&out)?;
        self.counters.dropped.fetch_add(dropped + overflow, Ordering::Relaxed);
        self.wake.notify_one();
        Ok(())
    }

    fn relabel(&self, labels: &Labels) -> Option<Labels> {
        let external = &self.options.external_labels;
        if external.is_empty() && self.config.write_relabel_configs.is_empty() {
            return Some(labels.clone());
        }
        let mut lb = labels.builder();
        for l in external.iter() {
            if labels.get(&l.name).is_none() {
                lb.set(l.name.clone(), l.value.clone());
            }
        }
        if !relabel::process_builder(&mut lb, &self.config.write_relabel_configs) {
            return None;
        }
        let out = lb.build();
        (!out.is_empty()).then_some(out)
    }

    pub fn stats(&self) -> RemoteWriteStats {
        let c = &self.counters;
        let last = c.last_send_ms.load(Ordering::Relaxed);
        RemoteWriteStats {
            name: self.name().to_owned(),
            url: self.config.url.clone(),
            samples_sent: c.sent.load(Ordering::Relaxed),
            samples_failed: c.failed.load(Ordering::Relaxed),
            samples_dropped: c.dropped.load(Ordering::Relaxed),
            samples_retried: c.retried.load(Ordering::Relaxed),
            samples_pending: self.queue.pending(),
            last_send_ms: (last > 0).then_some(last as i64),
            shards: c.shards.load(Ordering::Relaxed) as usize,
            per_shard: self.per_shard.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            queue_bytes: self.queue.bytes(),
        }
    }

    /// Sends what is queued, round after round, until the task is dropped or aborted (which
    /// is safe at any point: the cursor only moves after a whole round was acknowledged).
    pub async fn run(self: Arc<Self>) {
        let q = &self.config.queue_config;
        let per_send = q.max_samples_per_send.max(1) as usize;
        let min_shards = q.min_shards.max(1) as usize;
        let max_shards = (q.max_shards as usize).max(min_shards);
        let mut waiting_since: Option<Instant> = None;
        loop {
            let pending = self.queue.pending() as usize;
            if pending == 0 {
                waiting_since = None;
                self.wake.notified().await;
                continue;
            }
            // A part-full batch waits for more, up to batch_send_deadline.
            if pending < per_send {
                let since = *waiting_since.get_or_insert_with(Instant::now);
                let waited = since.elapsed();
                if waited < q.batch_send_deadline {
                    let _ = tokio::time::timeout(q.batch_send_deadline - waited, self.wake.notified()).await;
                    continue;
                }
            }
            waiting_since = None;
            let shards = pending.div_ceil(per_send).clamp(min_shards, max_shards);
            self.counters.shards.store(shards as u64, Ordering::Relaxed);
            let me = Arc::clone(&self);
            let cursor = self.queue.cursor();
            let read = tokio::task::spawn_blocking(move || me.queue.read(cursor, shards * per_send)).await;
            let (batch, skipped) = match read {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    tracing::warn!(remote = self.name(), error = %e, "reading the remote-write queue");
                    tokio::time::sleep(q.max_backoff.max(Duration::from_secs(1))).await;
                    continue;
                }
                Err(e) => {
                    tracing::warn!(remote = self.name(), error = %e, "reading the remote-write queue");
                    continue;
                }
            };
            if skipped > 0 {
                tracing::warn!(remote = self.name(), records = skipped, "remote-write queue: corrupt records skipped");
            }
            let count = batch.samples.len() as u64;
            let mut parts: Vec<Vec<(Labels, Sample)>> = vec![Vec::new(); shards];
            for (labels, sample) in batch.samples {
                let shard = (labels.hash64() % shards as u64) as usize;
                parts[shard].push((labels, sample));
            }
            let mut tasks = tokio::task::JoinSet::new();
            for (shard, part) in parts.into_iter().enumerate() {
                if !part.is_empty() {
                    tasks.spawn(Arc::clone(&self).send_shard(shard, part, per_send));
                }
            }
            // The tasks stop with this future when the writer is aborted (JoinSet aborts its
            // tasks on drop), before the cursor moves.
            while tasks.join_next().await.is_some() {}
            let me = Arc::clone(&self);
            let end = batch.end;
            match tokio::task::spawn_blocking(move || me.queue.commit(end, count)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(remote = self.name(), error = %e, "moving the remote-write cursor"),
                Err(e) => tracing::warn!(remote = self.name(), error = %e, "moving the remote-write cursor"),
            }
        }
    }

    /// One shard's part of a round, in batches, each retried until it is accepted or refused.
    async fn send_shard(self: Arc<Self>, shard: usize, samples: Vec<(Labels, Sample)>, per_send: usize) {
        let q = &self.config.queue_config;
        for chunk in samples.chunks(per_send) {
            let body = super::encode(&group(chunk));
            let n = chunk.len() as u64;
            let mut backoff = q.min_backoff.max(Duration::from_millis(1));
            let mut attempt = 0u64;
            loop {
                let outcome = self.post(&body).await;
                self.note_shard(shard, |s| {
                    s.requests += 1;
                    if attempt > 0 {
                        s.retries += 1;
                    }
                });
                match outcome {
                    Outcome::Sent => {
                        self.counters.sent.fetch_add(n, Ordering::Relaxed);
                        self.counters.last_send_ms.store(now_ms(), Ordering::Relaxed);
                        self.note_shard(shard, |s| s.samples_sent += n);
                        break;
                    }
                    Outcome::Refused(why) => {
                        tracing::warn!(remote = self.name(), samples = n, error = %why, "remote write refused; dropping the batch");
                        self.counters.failed.fetch_add(n, Ordering::Relaxed);
                        break;
                    }
                    Outcome::Retry(why) => {
                        tracing::debug!(remote = self.name(), error = %why, ?backoff, "remote write failed; retrying");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(q.max_backoff.max(q.min_backoff));
                        attempt += 1;
                        self.counters.retried.fetch_add(n, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    fn note_shard(&self, shard: usize, f: impl FnOnce(&mut ShardStats)) {
        let mut all = self.per_shard.lock().unwrap_or_else(|p| p.into_inner());
        if all.len() <= shard {
            all.resize(shard + 1, ShardStats::default());
        }
        f(&mut all[shard]);
    }

    async fn post(&self, body: &[u8]) -> Outcome {
        let mut request = self
            .client
            .post(&self.config.url)
            .timeout(self.config.remote_timeout)
            .header("Content-Encoding", "snappy")
            .header("Content-Type", "application/x-protobuf")
            .header("User-Agent", concat!("opsloop/", env!("CARGO_PKG_VERSION")))
            .header("X-Prometheus-Remote-Write-Version", "0.1.0");
        for (k, v) in &self.config.headers {
            request = request.header(k, v);
        }
        request = match authorize(request, &self.config.http) {
            Ok(r) => r,
            // An unreadable secret file may be fixed while we wait: retry, don't drop.
            Err(e) => return Outcome::Retry(e),
        };
        match request.body(body.to_vec()).send().await {
            Err(e) => Outcome::Retry(e.to_string()),
            Ok(response) => {
                let status = response.status();
                if status.is_success() {
                    return Outcome::Sent;
                }
                let text = response.text().await.unwrap_or_default();
                let why = format!("{status}: {}", text.trim().chars().take(512).collect::<String>());
                if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                    Outcome::Retry(why)
                } else {
                    Outcome::Refused(why)
                }
            }
        }
    }
}

fn authorize(mut request: reqwest::RequestBuilder, http: &HttpClientConfig) -> Result<reqwest::RequestBuilder, String> {
    let secret = |path: &std::path::Path| {
        std::fs::read_to_string(path).map(|s| s.trim().to_owned()).map_err(|e| format!("{}: {e}", path.display()))
    };
    if let Some(b) = &http.basic_auth {
        let password = match (&b.password, &b.password_file) {
            (Some(p), _) => Some(p.clone()),
            (None, Some(file)) => Some(secret(file)?),
            (None, None) => None,
        };
        request = request.basic_auth(&b.username, password);
    }
    if let Some(a) = &http.authorization {
        let credentials = match (&a.credentials, &a.credentials_file) {
            (Some(c), _) => c.clone(),
            (None, Some(file)) => secret(file)?,
            (None, None) => String::new(),
        };
        request = request.header("Authorization", format!("{} {credentials}", a.kind));
    }
    Ok(request)
}

/// Samples grouped per series, each series' samples in their order.
fn group(samples: &[(Labels, Sample)]) -> Vec<(Labels, Vec<Sample>)> {
    let mut index: HashMap<&Labels, usize> = HashMap::new();
    let mut out: Vec<(Labels, Vec<Sample>)> = Vec::new();
    for (labels, s) in samples {
        let i = *index.entry(labels).or_insert_with(|| {
            out.push((labels.clone(), Vec::new()));
            out.len() - 1
        });
        out[i].1.push(*s);
    }
    out
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// A storage that also queues every append for remote write: the host's appends go to the
/// storage first, then to each writer, so what is sent is what was stored. A sample the
/// storage refused (out of order) is filtered by the writer's own order check.
pub struct Tee {
    pub storage: Arc<dyn Storage>,
    pub writers: Vec<Arc<RemoteWriter>>,
}

impl Queryable for Tee {
    fn select(&self, matchers: &[Matcher], mint: Timestamp, maxt: Timestamp) -> Result<Vec<Series>, StorageError> {
        self.storage.select(matchers, mint, maxt)
    }

    fn series(&self, matchers: &[Matcher], mint: Timestamp, maxt: Timestamp) -> Result<Vec<Labels>, StorageError> {
        self.storage.series(matchers, mint, maxt)
    }
}

impl Appendable for Tee {
    fn append(&self, batch: &[(Labels, Sample)]) -> Result<(), StorageError> {
        let stored = self.storage.append(batch);
        // An I/O failure stored nothing worth forwarding; a refused sample (out of order, …)
        // leaves the rest of the batch stored, and so to be sent.
        if matches!(stored, Err(StorageError::Io(_) | StorageError::Corrupt(_))) {
            return stored;
        }
        for w in &self.writers {
            if let Err(e) = w.enqueue(batch) {
                tracing::warn!(remote = w.name(), error = %e, "queueing samples for remote write");
            }
        }
        stored
    }
}
