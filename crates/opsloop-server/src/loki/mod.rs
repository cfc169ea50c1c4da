//! The logs subsystem: opsloop in Loki's role. The engine (`opsloop-logs`) decodes pushes,
//! stores streams in compressed chunks behind a WAL and evaluates LogQL; this module holds its
//! store for the server (`LogsHub`), decides what a caller may see and push (`Scope`), keeps
//! the store tidy (`upkeep_forever`), copies finished jobs' logs into it (`JobLogs`), and
//! serves Loki's HTTP API under `/loki` (`api`), so Grafana's Loki data source and Promtail
//! take `http://HOST:PORT` as Loki's URL.

pub mod api;

use std::collections::BTreeSet;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opsloop_core::{Event, RecordedEvent, Role};
use opsloop_logs::labels::{MatchOp, Matcher};
use opsloop_logs::push::{Entry, PushStream};
use opsloop_logs::{Labels, LogSource, Store, StoreOptions};
use opsloop_store::StoreError;

use crate::auth::{Credential, Principal};
use crate::config::ServerConfig;
use crate::events::{Handled, Subscriber};
use crate::state::AppState;

/// The one tenant everything is stored under. opsloop's own users and projects separate what
/// callers see (`Scope`), so Loki's `X-Scope-OrgID` is not needed and is ignored.
pub const TENANT: &str = "opsloop";

/// The label that ties a stream to an opsloop project, for reading and for pushing.
pub const PROJECT_LABEL: &str = "project";

/// Why the logs subsystem cannot answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LogsError {
    #[error("the logs subsystem is turned off ([logs] enabled = false)")]
    Disabled,
    #[error("the logs storage could not be opened: {0}")]
    Storage(String),
}

/// What the server keeps of the logs engine: its store, opened on first use.
pub struct LogsHub {
    store: OnceLock<Result<Arc<Store>, String>>,
    /// Queries evaluated at once. A scan decompresses chunks on every core, so more queries at
    /// once only share the same cores while pushes and the rest of the server wait; the others
    /// queue here (Loki's querier `max_concurrent`).
    pub queries: Arc<tokio::sync::Semaphore>,
}

impl Default for LogsHub {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
        LogsHub { store: OnceLock::new(), queries: Arc::new(tokio::sync::Semaphore::new(cores.clamp(2, 8))) }
    }
}

impl LogsHub {
    /// The store, opened on first use under `<data-dir>/logs` (its WAL replayed).
    pub fn store(&self, config: &ServerConfig) -> Result<&Arc<Store>, LogsError> {
        if !config.logs.enabled {
            return Err(LogsError::Disabled);
        }
        self.store.get_or_init(|| open_store(config)).as_ref().map_err(|e| LogsError::Storage(e.clone()))
    }

    /// The store if it was opened, without opening it (shutdown must not create one).
    pub fn opened(&self) -> Option<&Arc<Store>> {
        self.store.get().and_then(|s| s.as_ref().ok())
    }
}

fn open_store(config: &ServerConfig) -> Result<Arc<Store>, String> {
    let dir = config.data_dir.join("logs");
    Store::open(&dir, StoreOptions::default()).map(Arc::new).map_err(|e| format!("{}: {e}", dir.display()))
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Cuts heads that reached their age every 10 s (so queries read compressed chunks and the
/// WAL can be checkpointed); applies retention and compacts every 10 minutes.
pub async fn upkeep_forever(state: AppState) {
    // Opened (its WAL replayed) now, off the async threads, rather than by the first request.
    let opening = state.clone();
    let opened = tokio::task::spawn_blocking(move || opening.loki.store(&opening.config).map(|_| ())).await;
    if let Ok(Err(e)) = opened {
        tracing::error!(error = %e, "the logs store could not be opened");
    }
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    let mut ticks: u64 = 0;
    loop {
        tick.tick().await;
        ticks += 1;
        let Ok(store) = state.loki.store(&state.config) else { continue };
        let store = store.clone();
        let cut = store.clone();
        match tokio::task::spawn_blocking(move || cut.cut_due().map(|()| cut.stats())).await {
            Ok(Ok(stats)) => state.metrics.set_logs_store(crate::metrics::LogsStoreFigures {
                streams: stats.streams,
                entries: stats.entries,
                chunks: stats.chunks,
                stored_bytes: stats.stored_bytes,
                wal_bytes: stats.wal_bytes,
            }),
            Ok(Err(e)) => tracing::warn!(error = %e, "cutting log chunks failed"),
            Err(e) => tracing::warn!(error = %e, "cutting log chunks stopped"),
        }
        // The first pass a minute after start, then every 10 minutes.
        if ticks % 60 != 6 {
            continue;
        }
        let logs = state.config.logs.clone();
        let done = tokio::task::spawn_blocking(move || {
            let age = (logs.retention_seconds > 0)
                .then(|| i64::try_from(logs.retention_seconds).unwrap_or(i64::MAX / 2).saturating_mul(1_000_000_000));
            store.apply_retention(now_ns(), age, logs.retention_bytes)?;
            store.compact()
        })
        .await;
        match done {
            Ok(Ok(report)) => tracing::debug!(?report, "log chunks compacted"),
            Ok(Err(e)) => tracing::warn!(error = %e, "log retention or compaction failed"),
            Err(e) => tracing::warn!(error = %e, "log retention or compaction stopped"),
        }
    }
}

/// What a caller may read: everything (an instance admin), the streams labelled with one of
/// their projects, or nothing.
#[derive(Debug, Clone)]
pub enum Scope {
    All,
    Only(Matcher),
    Nothing,
}

impl Scope {
    /// Whether a stream with these labels is visible.
    pub fn admits(&self, labels: &Labels) -> bool {
        match self {
            Scope::All => true,
            Scope::Only(m) => m.matches_labels(labels),
            Scope::Nothing => false,
        }
    }

    /// `matchers` with the scope's matcher joined (prom-label-proxy's model): what a
    /// selector becomes for this caller. `None` when they may see nothing.
    pub fn restrict(&self, matchers: &[Matcher]) -> Option<Vec<Matcher>> {
        match self {
            Scope::All => Some(matchers.to_vec()),
            Scope::Only(m) => Some(matchers.iter().cloned().chain(std::iter::once(m.clone())).collect()),
            Scope::Nothing => None,
        }
    }
}

/// The caller's scope: the same projects the metrics API lets them see.
pub async fn scope(store: &opsloop_store::Store, principal: &Principal) -> Result<Scope, StoreError> {
    if principal.is_admin() {
        return Ok(Scope::All);
    }
    let names = crate::prometheus::visible_projects(store, principal).await?;
    if names.is_empty() {
        return Ok(Scope::Nothing);
    }
    let alternatives: Vec<String> = names.iter().map(|n| regex::escape(n)).collect();
    Ok(Matcher::new(MatchOp::Re, PROJECT_LABEL, alternatives.join("|")).map(Scope::Only).unwrap_or(Scope::Nothing))
}

/// Why a push is refused for this caller (before anything is stored).
#[derive(Debug, thiserror::Error)]
pub enum PushDenied {
    #[error("stream {0} has no project label: only instance admins may push streams without one")]
    NoProject(String),
    #[error("stream {stream}: pushing to project '{project}' needs the developer role in it")]
    Project { stream: String, project: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Who may push what. An instance admin pushes anything (host and system logs carry no
/// project). Anyone else pushes only streams labelled `project="<name>"` of a project where
/// they act as developer or above — the role that may change a project, as on every other
/// write route — so a member cannot plant lines in another project's logs, nor unlabelled
/// streams that only admins would see. One stream refused refuses the whole push, as Loki
/// refuses a request that breaks a limit.
pub async fn check_push(
    store: &opsloop_store::Store,
    principal: &Principal,
    streams: &[PushStream],
) -> Result<(), PushDenied> {
    if principal.is_admin() {
        return Ok(());
    }
    let mut allowed: BTreeSet<String> = BTreeSet::new();
    for s in streams {
        let Some(name) = s.labels.get(PROJECT_LABEL) else {
            return Err(PushDenied::NoProject(s.labels.to_string()));
        };
        if allowed.contains(name) {
            continue;
        }
        let denied = || PushDenied::Project { stream: s.labels.to_string(), project: name.to_owned() };
        let Some(project) = store.project_by_name(name).await? else { return Err(denied()) };
        if let Credential::Pipeline { project_id, .. } = principal.credential
            && project_id != project.id
        {
            return Err(denied());
        }
        let membership = store.member_role(project.id, principal.user.id).await?;
        if principal.project_role(membership).is_none_or(|role| role < Role::Developer) {
            return Err(denied());
        }
        allowed.insert(name.to_owned());
    }
    Ok(())
}

/// A [`LogSource`] that only admits the streams a caller may see: the scope's matcher joins
/// every selector the evaluator asks for (so the index does the work), and every stream
/// returned is checked again against the scope before the evaluator sees it.
pub struct ScopedSource<'a> {
    pub inner: &'a dyn LogSource,
    pub scope: &'a Scope,
}

impl LogSource for ScopedSource<'_> {
    fn select(
        &self,
        matchers: &[Matcher],
        start: i64,
        end: i64,
    ) -> Result<Vec<opsloop_logs::eval::SourceStream>, opsloop_logs::eval::SourceError> {
        let Some(matchers) = self.scope.restrict(matchers) else { return Ok(Vec::new()) };
        let mut streams = self.inner.select(&matchers, start, end)?;
        streams.retain(|s| self.scope.admits(&s.labels));
        Ok(streams)
    }

    fn scan(
        &self,
        stream: &opsloop_logs::eval::SourceStream,
        start: i64,
        end: i64,
        hint: &opsloop_logs::eval::ScanHint,
        f: &mut dyn FnMut(opsloop_logs::eval::EntryRef<'_>) -> std::ops::ControlFlow<()>,
    ) -> Result<(), opsloop_logs::eval::SourceError> {
        // Streams only reach the evaluator through `select`, which checked them.
        if !self.scope.admits(&stream.labels) {
            return Ok(());
        }
        self.inner.scan(stream, start, end, hint, f)
    }
}

/// Copies a job's stored log into the logs store when it finishes, as the stream
/// `{project, job, stream="job"}` with `pipeline` and `job_id` on every line, so LogQL
/// searches CI output beside application logs. A durable event subscriber: jobs run here and on
/// agents both end in `JobFinished`, and a job that finished while the server was down is
/// copied after the restart. At least once: a crash between the push and the cursor's move
/// copies that job again.
///
/// `pipeline` and `job_id` are structured metadata, not stream labels: as labels they would
/// make a stream per job run, and the tenant's stream limit (100,000) would be reached in days
/// on a busy instance, after which every new stream, Promtail's included, is refused. As
/// metadata they still filter (`{stream="job"} | pipeline="42"`) and still show among a
/// result's labels, as Loki shows structured metadata.
pub struct JobLogs;

impl Subscriber for JobLogs {
    fn name(&self) -> &'static str {
        "logs:job-logs"
    }

    fn handle<'a>(&'a self, state: &'a AppState, recorded: &'a RecordedEvent) -> Handled<'a> {
        Box::pin(async move {
            let Event::JobFinished { project_id, pipeline_id, job_id, .. } = recorded.event else { return Ok(()) };
            let Ok(logs) = state.loki.store(&state.config) else { return Ok(()) };
            // Deleted since: nothing to copy.
            let Some(project) = state.store.project_by_id(project_id).await? else { return Ok(()) };
            let Some((job, _)) = state.store.job_by_id(job_id).await? else { return Ok(()) };
            let text = state.store.job_log(job_id).await?;
            let Some(stream) = job_stream(&project.name, pipeline_id, job_id, &job.name, &text, recorded.at) else {
                return Ok(());
            };
            let logs = logs.clone();
            match tokio::task::spawn_blocking(move || logs.push(TENANT, vec![stream])).await {
                Ok(Ok(())) => {}
                // A limit or a disk error is not cured by asking again: the job's log stays in
                // the CI store, and the bus moves on.
                Ok(Err(e)) => tracing::warn!(job = job_id, error = %e, "could not copy a job's log to the logs store"),
                Err(e) => tracing::warn!(job = job_id, error = %e, "copying a job's log stopped"),
            }
            Ok(())
        })
    }
}

/// The stream for a finished job's log. Lines have no times of their own in the CI store: they
/// all get the moment the job finished, plus their index in nanoseconds so their order holds.
fn job_stream(
    project: &str,
    pipeline_id: i64,
    job_id: i64,
    job: &str,
    text: &str,
    finished_ms: i64,
) -> Option<PushStream> {
    let base = finished_ms.saturating_mul(1_000_000);
    let metadata = vec![("pipeline".to_owned(), pipeline_id.to_string()), ("job_id".to_owned(), job_id.to_string())];
    let entries: Vec<Entry> = text
        .lines()
        .enumerate()
        .map(|(i, line)| Entry {
            ts: base.saturating_add(i64::try_from(i).unwrap_or(i64::MAX)),
            line: line.to_owned(),
            metadata: metadata.clone(),
        })
        .collect();
    if entries.is_empty() {
        return None;
    }
    let labels = Labels::from_pairs([(PROJECT_LABEL, project), ("job", job), ("stream", "job")]);
    Some(PushStream { labels, entries })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_log_becomes_one_stream_in_line_order() {
        let s = job_stream("shop", 7, 70, "build", "one\ntwo\n", 1_000).unwrap();
        assert_eq!(s.labels.get("pipeline"), None, "one stream per job name, not per run");
        assert_eq!(s.labels.get("stream"), Some("job"));
        assert!(s.entries[0].metadata.contains(&("pipeline".to_owned(), "7".to_owned())));
        let ts: Vec<i64> = s.entries.iter().map(|e| e.ts).collect();
        assert_eq!(ts, [1_000_000_000, 1_000_000_001]);
        assert!(job_stream("shop", 7, 70, "build", "", 1_000).is_none());
    }

    #[test]
    fn a_scope_joins_every_selector_and_checks_labels() {
        let m = Matcher::new(MatchOp::Re, PROJECT_LABEL, "a|b").unwrap();
        let scope = Scope::Only(m);
        assert!(scope.admits(&Labels::from_pairs([("project", "a")])));
        assert!(!scope.admits(&Labels::from_pairs([("project", "c")])));
        assert!(!scope.admits(&Labels::from_pairs([("app", "x")])));
        assert_eq!(scope.restrict(&[]).map(|m| m.len()), Some(1));
        assert!(Scope::Nothing.restrict(&[]).is_none());
    }
}
