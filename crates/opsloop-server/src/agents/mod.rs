//! Jobs on agents. The pipeline still runs here (the scheduler decides what starts when); a job
//! it hands to [`AgentExecutor`] is queued in the store, claimed by one agent through the agent
//! protocol ([`service`], served by `api/agents.rs`), and its events, artifacts and end come
//! back through the [`AgentHub`] to the task that waits for it here, which reports them as if
//! it ran locally.
//!
//! A job's agent must heartbeat (every event post is one); [`watch_heartbeats`] gives up on a
//! silent one after `ci.agent_timeout_seconds`: the job fails with `runner_system_failure`, or
//! is queued again when its `retry:when` allows that.
//!
//! The waiting task lives in the server process that runs the pipeline, so the agent API and
//! the pipelines must be served by the same process (one server per database, as today).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use opsloop_runner::{
    Event, EventSink, JobFuture, JobOutcome, JobStatus, RemoteExecutor, RemoteJob, Stream, Workplace,
};
use tokio::sync::{OnceCell, mpsc, watch};

use crate::state::AppState;

pub mod service;

pub use service::AgentError;

/// Every agent token starts with this (user tokens with `olp_`).
pub const AGENT_TOKEN_PREFIX: &str = "olpa_";

/// What an agent reports about a job, on its way to the task waiting for it.
#[derive(Debug)]
pub enum AgentMessage {
    Event(Event),
    Finished {
        outcome: JobOutcome,
        dotenv: Vec<(String, String)>,
    },
    /// The agent went silent.
    Lost(String),
}

/// A job handed to the agents, as the agent API needs it.
#[derive(Debug)]
pub struct Waiter {
    pub index: usize,
    /// The job's project: its caches are the agent's to fetch and store.
    pub project_id: i64,
    /// The pipeline runs on a protected ref (its caches are kept apart).
    pub protected: bool,
    pub source: Arc<PipelineSource>,
    /// Upstream artifact directories, in the order of the spec's `upstream`.
    pub upstream: Vec<PathBuf>,
    pub artifacts_dir: PathBuf,
    pub messages: mpsc::UnboundedSender<AgentMessage>,
}

/// A pipeline's files, packed once for all its agent jobs.
#[derive(Debug)]
pub struct PipelineSource {
    workplace: Workplace,
    packed: OnceCell<bytes::Bytes>,
}

impl PipelineSource {
    /// The pipeline's source files as a tar archive.
    /// Packed once; every request shares the same bytes.
    pub async fn archive(&self) -> std::io::Result<bytes::Bytes> {
        self.packed
            .get_or_try_init(|| async {
                let (root, files) = (self.workplace.source_root.clone(), self.workplace.files.clone());
                let packed = tokio::task::spawn_blocking(move || opsloop_runner::transfer::pack(&root, &files))
                    .await
                    .map_err(std::io::Error::other)??;
                Ok(bytes::Bytes::from(packed))
            })
            .await
            .cloned()
    }
}

/// The jobs handed to agents that this process waits for, and a bell for agents waiting for
/// work.
#[derive(Debug, Default)]
pub struct AgentHub {
    waiters: std::sync::Mutex<HashMap<i64, Arc<Waiter>>>,
    pub queued: tokio::sync::Notify,
}

impl AgentHub {
    pub fn waiter(&self, job_id: i64) -> Option<Arc<Waiter>> {
        self.waiters.lock().ok().and_then(|waiters| waiters.get(&job_id).cloned())
    }

    fn insert(&self, job_id: i64, waiter: Arc<Waiter>) {
        if let Ok(mut waiters) = self.waiters.lock() {
            waiters.insert(job_id, waiter);
        }
    }

    fn remove(&self, job_id: i64) {
        if let Ok(mut waiters) = self.waiters.lock() {
            waiters.remove(&job_id);
        }
    }
}

/// The encryption context of a queued job's spec: it holds the job's secrets.
pub fn spec_context(job_id: i64) -> String {
    format!("agent-job:{job_id}")
}

/// Hands a pipeline's jobs to agents: tagged jobs always, untagged ones when the server is set
/// to (`ci.executor = "agents"`).
#[derive(Clone)]
pub struct AgentExecutor(Arc<ExecutorInner>);

struct ExecutorInner {
    state: AppState,
    project_id: i64,
    protected: bool,
    pipeline_id: i64,
    /// Store ids of the pipeline's jobs, by plan index.
    job_ids: Vec<i64>,
    source: OnceCell<Arc<PipelineSource>>,
}

impl std::fmt::Debug for AgentExecutor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentExecutor").field("pipeline_id", &self.0.pipeline_id).finish()
    }
}

impl AgentExecutor {
    pub fn new(state: AppState, project_id: i64, protected: bool, pipeline_id: i64, job_ids: Vec<i64>) -> Self {
        AgentExecutor(Arc::new(ExecutorInner {
            state,
            project_id,
            protected,
            pipeline_id,
            job_ids,
            source: OnceCell::new(),
        }))
    }
}

fn ended(status: JobStatus, started: Instant, tail: Vec<String>, attempts: u32) -> JobOutcome {
    JobOutcome {
        status,
        exit_code: None,
        duration: started.elapsed(),
        coverage: None,
        after_script_failed: false,
        tail,
        attempts,
        tests: None,
    }
}

async fn canceled(cancel: &mut watch::Receiver<bool>) {
    while !*cancel.borrow() {
        if cancel.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// A lost agent is GitLab's `runner_system_failure`, which `retry` may allow.
fn retries_system_failures(retry: &opsloop_pipeline::config::Retry) -> bool {
    retry.when.is_empty() || retry.when.iter().any(|w| w == "always" || w == "runner_system_failure")
}

impl RemoteExecutor for AgentExecutor {
    fn takes(&self, tags: &[String]) -> bool {
        !tags.is_empty() || self.0.state.config.ci.untagged_jobs_on_agents
    }

    fn run(&self, job: RemoteJob, sink: Arc<dyn EventSink>, mut cancel: watch::Receiver<bool>) -> JobFuture {
        let this = self.0.clone();
        Box::pin(async move {
            let started = Instant::now();
            let index = job.spec.index;
            let name = job.spec.name.clone();
            let note = |text: String| {
                sink.emit(Event::Note { job: index, name: name.clone(), text, kind: opsloop_runner::NoteKind::Warning })
            };
            let fail = |message: String| {
                note(message.clone());
                (ended(JobStatus::Failed, started, vec![message], 0), Vec::new())
            };
            let Some(&job_id) = this.job_ids.get(index) else {
                return fail("the job has no record to hand to an agent".to_owned());
            };
            // File-type variables point at files on this machine: their contents travel in the
            // (encrypted) spec, and the agent writes them where the job runs.
            let mut job = job;
            let variables_root = this.state.config.data_dir.join("pipelines");
            for (name, value, _) in &job.spec.layers {
                let path = std::path::Path::new(value);
                if path.starts_with(&variables_root)
                    && path.parent().is_some_and(|dir| dir.ends_with("variables"))
                    && let Ok(contents) = tokio::fs::read_to_string(path).await
                {
                    job.spec.file_variables.push((name.clone(), contents));
                }
            }
            let ciphertext = match serde_json::to_string(&job.spec).map_err(|e| e.to_string()).and_then(|json| {
                let vault = this.state.vault().map_err(|e| e.to_string())?;
                vault.encrypt(&json, &spec_context(job_id)).map_err(|e| e.to_string())
            }) {
                Ok(ciphertext) => ciphertext,
                Err(error) => return fail(format!("the job could not be queued for an agent: {error}")),
            };
            let source = this
                .source
                .get_or_init(|| async {
                    Arc::new(PipelineSource { workplace: job.workplace.clone(), packed: OnceCell::new() })
                })
                .await
                .clone();
            let (messages, mut inbox) = mpsc::unbounded_channel();
            let hub = &this.state.ci.agent_hub;
            hub.insert(
                job_id,
                Arc::new(Waiter {
                    index,
                    project_id: this.project_id,
                    protected: this.protected,
                    source,
                    upstream: job.upstream.clone(),
                    artifacts_dir: job.artifacts_dir.clone(),
                    messages,
                }),
            );
            let wanted =
                if job.tags.is_empty() { String::new() } else { format!(" with tags {}", job.tags.join(", ")) };
            let mut attempt: u32 = 1;
            let mut cancel_sent = false;
            let result = 'queue: loop {
                if let Err(error) =
                    this.state.store.queue_agent_job(job_id, this.pipeline_id, &job.tags, &ciphertext).await
                {
                    break fail(format!("the job could not be queued for an agent: {error}"));
                }
                hub.queued.notify_waiters();
                note(format!("waiting for an agent{wanted}"));
                loop {
                    tokio::select! {
                        message = inbox.recv() => match message {
                            Some(AgentMessage::Event(event)) => sink.emit(reindex(event, index, &name)),
                            Some(AgentMessage::Finished { outcome, dotenv }) => break 'queue (outcome, dotenv),
                            Some(AgentMessage::Lost(reason)) => {
                                if cancel_sent {
                                    note(reason);
                                    break 'queue (ended(JobStatus::Canceled, started, Vec::new(), attempt), Vec::new());
                                }
                                if retries_system_failures(&job.spec.retry) && attempt <= job.spec.retry.max {
                                    attempt += 1;
                                    note(format!("{reason}; retrying (attempt {attempt} of {})", job.spec.retry.max + 1));
                                    continue 'queue;
                                }
                                note(format!("{reason} (runner_system_failure)"));
                                break 'queue (ended(JobStatus::Failed, started, vec![reason], attempt), Vec::new());
                            }
                            None => break 'queue fail("the agent hub went away".to_owned()),
                        },
                        () = canceled(&mut cancel), if !cancel_sent => {
                            cancel_sent = true;
                            match this.state.store.cancel_agent_job(job_id).await {
                                Ok(true) => break 'queue (ended(JobStatus::Canceled, started, Vec::new(), attempt), Vec::new()),
                                Ok(false) => note("asked the agent to stop the job".to_owned()),
                                Err(error) => tracing::error!(job = job_id, %error, "could not cancel an agent job"),
                            }
                        }
                    }
                }
            };
            hub.remove(job_id);
            result
        })
    }
}

/// An agent's event, told apart from the agent's own idea of the job's index and name.
fn reindex(event: Event, index: usize, name: &str) -> Event {
    let name = name.to_owned();
    match event {
        Event::JobStarted { executor, .. } => Event::JobStarted { job: index, name, executor },
        Event::Command { text, .. } => Event::Command { job: index, name, text },
        Event::Environment { environment, url, .. } => Event::Environment { job: index, name, environment, url },
        Event::Output { stream, line, .. } => Event::Output { job: index, name, stream, line },
        Event::AfterScript { .. } => Event::AfterScript { job: index, name },
        Event::Delayed { seconds, .. } => Event::Delayed { job: index, name, seconds },
        Event::Note { text, kind, .. } => Event::Note { job: index, name, text, kind },
        // The end is reported through `finish`, never as an event.
        Event::JobFinished { .. } => Event::Output {
            job: index,
            name,
            stream: Stream::Stderr,
            line: "# the agent sent a stray end event; ignored".to_owned(),
        },
    }
}

/// Fails or requeues the jobs of agents that stopped heartbeating.
pub async fn watch_heartbeats(state: AppState) {
    let timeout = Duration::from_secs(state.config.ci.agent_timeout_seconds);
    let mut tick = tokio::time::interval((timeout / 4).max(Duration::from_millis(500)));
    loop {
        tick.tick().await;
        let deadline = state.store.now_ms() - i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        let lost = match state.store.take_lost_agent_jobs(deadline).await {
            Ok(lost) => lost,
            Err(error) => {
                tracing::warn!(%error, "could not look for lost agent jobs");
                continue;
            }
        };
        for (job_id, agent_id) in lost {
            let agent = match agent_id {
                Some(id) => state.store.agent_by_id(id).await.ok().flatten().map(|a| a.name),
                None => None,
            };
            let reason = format!(
                "agent {} sent no heartbeat for {}s",
                agent.as_deref().unwrap_or("(deleted)"),
                timeout.as_secs()
            );
            tracing::warn!(job = job_id, %reason, "agent job lost");
            if let Some(waiter) = state.ci.agent_hub.waiter(job_id) {
                let _ = waiter.messages.send(AgentMessage::Lost(reason));
            }
        }
    }
}
