//! One target's loop: fetch, parse, label, relabel, append, and the staleness markers that tell
//! PromQL a series is gone the moment it is, rather than five minutes later.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;

use crate::config::ScrapeConfig;
use crate::labels::{Labels, LabelsBuilder, METRIC_NAME};
use crate::relabel;
use crate::scrape::Health;
use crate::scrape::target::Target;
use crate::storage::{Appendable, Sample, stale_nan};
use crate::textparse::{Entry, Format, ParseError, Parser};

/// What Prometheus 2.x sends: OpenMetrics preferred, the classic format accepted.
pub const ACCEPT_HEADER: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
/// A body is never read past this, whatever `body_size_limit` says: memory stays bounded.
const MAX_BODY: u64 = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("{0}")]
    Http(#[from] reqwest::Error),
    #[error("server returned HTTP status {0}")]
    Status(reqwest::StatusCode),
    #[error("body size limit exceeded ({0} bytes)")]
    BodyTooLarge(u64),
    #[error("reading gzip body: {0}")]
    Gzip(std::io::Error),
    #[error("reading {path}: {error}")]
    Secret { path: String, error: std::io::Error },
    #[error("{0}")]
    Parse(#[from] ParseError),
    #[error("sample limit exceeded ({0} samples)")]
    SampleLimit(usize),
    #[error("label limit exceeded ({count} labels, limit {limit}) in {series}")]
    LabelLimit { count: usize, limit: u64, series: String },
    #[error("label name or value length limit exceeded in {0}")]
    LabelLength(String),
    #[error("storage: {0}")]
    Storage(#[from] crate::storage::StorageError),
}

/// What the targets API shows of a loop.
#[derive(Debug, Clone)]
pub struct Status {
    pub health: Health,
    /// Milliseconds since the epoch.
    pub last_scrape: Option<i64>,
    pub last_duration: Duration,
    pub last_error: Option<String>,
    pub last_samples: usize,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            health: Health::Unknown,
            last_scrape: None,
            last_duration: Duration::ZERO,
            last_error: None,
            last_samples: 0,
        }
    }
}

/// A series of the target as the last scrapes wrote it, keyed by its raw text.
struct CacheEntry {
    /// `None` when `metric_relabel_configs` drops it.
    labels: Option<Labels>,
    /// The scrape that last saw it; series seen in the previous scrape and not this one get a
    /// staleness marker.
    last_seen: u64,
    /// Whether it had its own timestamp: those are not marked stale, as in Prometheus.
    explicit_ts: bool,
    /// The scrape that first saw it.
    added: u64,
}

pub struct ScrapeLoop {
    pub target: Target,
    pub config: Arc<ScrapeConfig>,
    pub client: reqwest::Client,
    pub storage: Arc<dyn Appendable>,
    pub status: Arc<Mutex<Status>>,
    pub offset_seed: u64,
    cache: HashMap<Vec<u8>, CacheEntry>,
    iteration: u64,
    target_labels: Labels,
    /// Whether the previous scrape wrote the report series (so ending must mark them stale).
    reported: bool,
    /// The previous scrape's timestamp, to keep the interval exact (see [`aligned`]).
    last_t: Option<i64>,
}

/// How far a scrape may start from the exact interval and still be stamped as if it had not:
/// Prometheus's `--scrape.timestamp-tolerance` (2 ms). Exactly regular timestamps cost one
/// bit each in a chunk instead of 16 (the delta of deltas is zero), which is most of the size
/// of a chunk.
pub const TIMESTAMP_TOLERANCE_MS: i64 = 2;

/// The timestamp for a scrape started at `now`, given the previous one.
pub fn aligned(now: i64, last: Option<i64>, interval_ms: i64) -> i64 {
    match last {
        Some(last) if (now - (last + interval_ms)).abs() <= TIMESTAMP_TOLERANCE_MS => last + interval_ms,
        _ => now,
    }
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

const REPORT_SERIES: [&str; 5] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
];

impl ScrapeLoop {
    pub fn new(
        target: Target,
        config: Arc<ScrapeConfig>,
        client: reqwest::Client,
        storage: Arc<dyn Appendable>,
        status: Arc<Mutex<Status>>,
        offset_seed: u64,
    ) -> Self {
        let target_labels = target.public_labels();
        ScrapeLoop {
            target,
            config,
            client,
            storage,
            status,
            offset_seed,
            cache: HashMap::new(),
            iteration: 0,
            target_labels,
            reported: false,
            last_t: None,
        }
    }

    /// Scrapes until told to stop, then marks every series of the target stale.
    pub async fn run(mut self, mut stop: oneshot::Receiver<()>) {
        let now_nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let offset = self.target.offset(now_nanos, self.offset_seed);
        tokio::select! {
            _ = tokio::time::sleep(offset) => {}
            _ = &mut stop => return,
        }
        let mut ticker = tokio::time::interval(self.target.interval);
        // A late scrape is not made up for: the next one keeps the phase.
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = &mut stop => break,
            }
            tokio::select! {
                _ = self.scrape_once() => {}
                _ = &mut stop => break,
            }
        }
        self.end_of_run();
    }

    /// One scrape, start to end, appended at the scrape's start time.
    pub async fn scrape_once(&mut self) {
        let interval_ms = i64::try_from(self.target.interval.as_millis()).unwrap_or(i64::MAX);
        let t = aligned(now_ms(), self.last_t, interval_ms);
        self.last_t = Some(t);
        let start = Instant::now();
        let fetched = self.fetch().await;
        let duration = start.elapsed();
        let mut batch = Vec::new();
        self.iteration += 1;
        let result = match fetched {
            Ok((body, format)) => self.process(&body, format, t, &mut batch),
            Err(e) => Err(e),
        };
        let (health, error, scraped, post, added) = match result {
            Ok((scraped, post, added)) => (Health::Up, None, scraped, post, added),
            Err(e) => {
                // A failed scrape is an empty scrape: everything it had goes stale.
                batch.clear();
                (Health::Down, Some(e.to_string()), 0, 0, 0)
            }
        };
        self.stale_unseen(t, &mut batch);
        let report = [
            if health == Health::Up { 1.0 } else { 0.0 },
            duration.as_secs_f64(),
            scraped as f64,
            post as f64,
            added as f64,
        ];
        for (name, v) in REPORT_SERIES.iter().zip(report) {
            batch.push((self.report_labels(name), Sample { t, v }));
        }
        self.reported = true;
        let appended = self.storage.append(&batch);
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        status.health = health;
        status.last_scrape = Some(t);
        status.last_duration = duration;
        status.last_samples = scraped;
        status.last_error = match appended {
            Err(e) => Some(format!("appending: {e}")),
            Ok(()) => error,
        };
        if status.last_error.is_some() && health == Health::Up {
            status.health = Health::Down;
        }
    }

    fn report_labels(&self, name: &str) -> Labels {
        let mut b = self.target_labels.builder();
        b.set(METRIC_NAME.into(), name.into());
        b.build()
    }

    /// Staleness markers for the series the previous scrape saw and this one did not.
    fn stale_unseen(&mut self, t: i64, batch: &mut Vec<(Labels, Sample)>) {
        let current = self.iteration;
        for entry in self.cache.values() {
            if entry.last_seen + 1 == current
                && !entry.explicit_ts
                && let Some(l) = &entry.labels
            {
                batch.push((l.clone(), Sample { t, v: stale_nan() }));
            }
        }
        // Forget series not seen for a while: the cache stays the size of the target.
        self.cache.retain(|_, e| e.last_seen + 10 >= current);
    }

    /// The target goes away: every series it wrote last gets a marker, report series too.
    fn end_of_run(&mut self) {
        let t = now_ms();
        let mut batch = Vec::new();
        self.iteration += 1;
        self.stale_unseen(t, &mut batch);
        if self.reported {
            for name in REPORT_SERIES {
                batch.push((self.report_labels(name), Sample { t, v: stale_nan() }));
            }
        }
        if let Err(e) = self.storage.append(&batch) {
            tracing::warn!(target = %self.target.url, error = %e, "writing staleness markers");
        }
    }

    async fn fetch(&self) -> Result<(Vec<u8>, Format), ScrapeError> {
        let http = &self.config.http;
        let mut request = self
            .client
            .get(&self.target.url)
            .timeout(self.target.timeout)
            .header("Accept", ACCEPT_HEADER)
            .header("Accept-Encoding", "gzip")
            .header("X-Prometheus-Scrape-Timeout-Seconds", format!("{}", self.target.timeout.as_secs_f64()));
        if let Some(b) = &http.basic_auth {
            let password = match (&b.password, &b.password_file) {
                (Some(p), _) => Some(p.clone()),
                (None, Some(file)) => Some(read_secret(file)?),
                (None, None) => None,
            };
            request = request.basic_auth(&b.username, password);
        }
        if let Some(a) = &http.authorization {
            let credentials = match (&a.credentials, &a.credentials_file) {
                (Some(c), _) => c.clone(),
                (None, Some(file)) => read_secret(file)?,
                (None, None) => String::new(),
            };
            request = request.header("Authorization", format!("{} {credentials}", a.kind));
        }
        let mut response = request.send().await?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(ScrapeError::Status(response.status()));
        }
        let limit = if self.config.body_size_limit > 0 { self.config.body_size_limit.min(MAX_BODY) } else { MAX_BODY };
        let format = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map_or(Format::Prometheus, Format::from_content_type);
        let gzip = response
            .headers()
            .get("content-encoding")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            body.extend_from_slice(&chunk);
            if body.len() as u64 > limit {
                return Err(ScrapeError::BodyTooLarge(limit));
            }
        }
        if gzip {
            let mut out = Vec::new();
            flate2::read::GzDecoder::new(body.as_slice())
                .take(limit + 1)
                .read_to_end(&mut out)
                .map_err(ScrapeError::Gzip)?;
            if out.len() as u64 > limit {
                return Err(ScrapeError::BodyTooLarge(limit));
            }
            body = out;
        }
        Ok((body, format))
    }

    /// Parses a payload into `batch`; returns (samples scraped, samples kept after metric
    /// relabelling, series new to the cache). On error nothing of this scrape is kept, and
    /// the cache forgets it saw anything: the previous scrape's series all go stale.
    fn process(
        &mut self,
        body: &[u8],
        format: Format,
        t: i64,
        batch: &mut Vec<(Labels, Sample)>,
    ) -> Result<(usize, usize, usize), ScrapeError> {
        let result = self.process_payload(body, format, t, batch);
        if result.is_err() {
            let now = self.iteration;
            self.cache.retain(|_, e| e.added != now);
            for e in self.cache.values_mut() {
                if e.last_seen == now {
                    e.last_seen = now - 1;
                }
            }
        }
        result
    }

    fn process_payload(
        &mut self,
        body: &[u8],
        format: Format,
        t: i64,
        batch: &mut Vec<(Labels, Sample)>,
    ) -> Result<(usize, usize, usize), ScrapeError> {
        let cfg = Arc::clone(&self.config);
        let mut parser = Parser::new(body, format);
        let (mut scraped, mut added) = (0usize, 0usize);
        let iteration = self.iteration;
        while let Some(entry) = parser.next()? {
            let Entry::Sample(s) = entry else { continue };
            scraped += 1;
            let ts = match (cfg.honor_timestamps, s.timestamp) {
                (true, Some(ts)) => ts,
                _ => t,
            };
            let explicit = cfg.honor_timestamps && s.timestamp.is_some();
            let labels = match self.cache.get_mut(s.series) {
                Some(e) => {
                    if e.last_seen == iteration {
                        // The same series twice in one payload: Prometheus keeps the first.
                        continue;
                    }
                    e.last_seen = iteration;
                    e.explicit_ts = explicit;
                    e.labels.clone()
                }
                None => {
                    let mut lb = LabelsBuilder::default();
                    s.write_labels(&mut lb);
                    let exposed = lb.build();
                    let labels = self.label_sample(&exposed, &cfg)?;
                    added += usize::from(labels.is_some());
                    self.cache.insert(
                        s.series.to_vec(),
                        CacheEntry {
                            labels: labels.clone(),
                            last_seen: iteration,
                            explicit_ts: explicit,
                            added: iteration,
                        },
                    );
                    labels
                }
            };
            if let Some(labels) = labels {
                batch.push((labels, Sample { t: ts, v: s.value }));
            }
        }
        let post = batch.len();
        if cfg.sample_limit > 0 && post as u64 > cfg.sample_limit {
            return Err(ScrapeError::SampleLimit(post));
        }
        Ok((scraped, post, added))
    }

    /// Target labels onto a sample's labels (`honor_labels` decides who wins a clash), then
    /// `metric_relabel_configs` and the label limits. `None`: dropped.
    fn label_sample(&self, exposed: &Labels, cfg: &ScrapeConfig) -> Result<Option<Labels>, ScrapeError> {
        let mut lb = exposed.builder();
        if cfg.honor_labels {
            for l in self.target_labels.iter() {
                if exposed.get(&l.name).is_none() {
                    lb.set(l.name.clone(), l.value.clone());
                }
            }
        } else {
            for l in self.target_labels.iter() {
                if let Some(existing) = exposed.get(&l.name) {
                    // The exposed value is kept as `exported_<name>` (prefixed again until free).
                    let mut name = format!("exported_{}", l.name);
                    while lb.get(&name).is_some() && exposed.get(&name).is_some() {
                        name = format!("exported_{name}");
                    }
                    lb.set(name, existing.to_owned());
                }
                lb.set(l.name.clone(), l.value.clone());
            }
        }
        if !relabel::process_builder(&mut lb, &cfg.metric_relabel_configs) {
            return Ok(None);
        }
        let labels = lb.build();
        if labels.is_empty() || labels.metric_name().is_none() {
            return Ok(None);
        }
        if cfg.label_limit > 0 && labels.len() as u64 > cfg.label_limit {
            return Err(ScrapeError::LabelLimit {
                count: labels.len(),
                limit: cfg.label_limit,
                series: labels.to_string(),
            });
        }
        let too_long = labels.iter().any(|l| {
            (cfg.label_name_length_limit > 0 && l.name.len() as u64 > cfg.label_name_length_limit)
                || (cfg.label_value_length_limit > 0 && l.value.len() as u64 > cfg.label_value_length_limit)
        });
        if too_long {
            return Err(ScrapeError::LabelLength(labels.to_string()));
        }
        Ok(Some(labels))
    }
}

fn read_secret(path: &std::path::Path) -> Result<String, ScrapeError> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .map_err(|error| ScrapeError::Secret { path: path.display().to_string(), error })
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_within_the_tolerance_keep_the_interval_exact() {
        use super::aligned;
        assert_eq!(aligned(10_001, Some(0), 10_000), 10_000);
        assert_eq!(aligned(9_998, Some(0), 10_000), 10_000);
        assert_eq!(aligned(10_003, Some(0), 10_000), 10_003, "beyond 2 ms the real time stands");
        assert_eq!(aligned(5, None, 10_000), 5);
    }
}
