//! The agent protocol as a service: what an agent may do with a job it runs (register, claim,
//! fetch the source and upstream artifacts, report events, store artifacts and caches, end),
//! and creating agents. Answers in [`AgentError`]; `api/agents.rs` only translates HTTP.
//!
//! Every job operation first checks that the job runs on the calling agent now; anything else
//! is [`AgentError::Gone`], which tells the agent to drop the job.

use std::sync::Arc;
use std::time::{Duration, Instant};

use opsloop_runner::{Event, JobOutcome, JobSpec};
use opsloop_store::{Actor, Agent, Store};

use super::{AGENT_TOKEN_PREFIX, AgentMessage, Waiter, spec_context};
use crate::auth::credentials::digest;
use crate::state::AppState;

/// Longest an agent's request for work is held open.
pub const MAX_WAIT_SECONDS: u64 = 20;
const MAX_TAGS: usize = 50;
pub const MAX_EVENTS_PER_BATCH: usize = 100_000;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("{0}")]
    Invalid(String),
    /// The job does not run on this agent (any more): it should drop it.
    #[error("this job is no longer running on this agent; drop it")]
    Gone,
    #[error("{what} not found")]
    NotFound { what: &'static str },
    #[error(transparent)]
    Store(#[from] opsloop_store::StoreError),
    #[error(transparent)]
    Unavailable(#[from] crate::state::Unavailable),
    /// Something of ours failed; the details are in the log.
    #[error("{0}")]
    Internal(String),
}

/// How often agents must heartbeat: four times per timeout.
pub fn heartbeat_seconds(state: &AppState) -> u64 {
    (state.config.ci.agent_timeout_seconds / 4).max(1)
}

fn valid_tag(tag: &str) -> bool {
    (1..=64).contains(&tag.len()) && tag.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:/".contains(c))
}

/// What an agent says of itself when it starts.
pub struct Registration {
    pub tags: Vec<String>,
    pub concurrency: u32,
    pub version: String,
    pub hostname: String,
}

/// Records the agent's tags and capacity; returns its tags, sorted and without repeats.
pub async fn register(state: &AppState, agent: &Agent, input: Registration) -> Result<Vec<String>, AgentError> {
    if input.tags.len() > MAX_TAGS {
        return Err(AgentError::Invalid(format!("an agent has at most {MAX_TAGS} tags")));
    }
    if let Some(bad) = input.tags.iter().find(|t| !valid_tag(t)) {
        return Err(AgentError::Invalid(format!(
            "tag `{bad}` is not allowed: use 1 to 64 letters, digits, `-`, `_`, `.`, `:` or `/`"
        )));
    }
    if !(1..=256).contains(&input.concurrency) {
        return Err(AgentError::Invalid("concurrency must be between 1 and 256".to_owned()));
    }
    if input.version.len() > 100 || input.hostname.len() > 255 {
        return Err(AgentError::Invalid("version or hostname is too long".to_owned()));
    }
    state
        .store
        .register_agent(agent.id, &input.tags, i64::from(input.concurrency), &input.version, &input.hostname)
        .await?;
    let mut tags = input.tags;
    tags.sort();
    tags.dedup();
    tracing::info!(agent = %agent.name, tags = %tags.join(","), "agent registered");
    Ok(tags)
}

/// A job handed to an agent.
pub struct Claimed {
    pub job_id: i64,
    pub attempt: i64,
    pub spec: JobSpec,
}

/// Claims the oldest queued job the agent's tags cover, waiting up to `wait` for one.
pub async fn claim(state: &AppState, agent: &Agent, wait: Duration) -> Result<Option<Claimed>, AgentError> {
    let deadline = Instant::now() + wait.min(Duration::from_secs(MAX_WAIT_SECONDS));
    state.store.agent_seen(agent.id).await?;
    loop {
        // Listen before looking, so a job queued in between still wakes this request.
        let queued = state.ci.agent_hub.queued.notified();
        tokio::pin!(queued);
        queued.as_mut().enable();
        if let Some(claimed) = state.store.claim_agent_job(agent.id, &agent.tags).await? {
            let Some(waiter) = state.ci.agent_hub.waiter(claimed.job_id) else {
                // Nobody here waits for it (its pipeline ended): it is no one's job.
                state.store.finish_agent_job(claimed.job_id, agent.id).await?;
                continue;
            };
            let spec = state
                .vault()
                .map_err(|e| e.to_string())
                .and_then(|vault| {
                    vault.decrypt(&claimed.spec, &spec_context(claimed.job_id)).map_err(|e| e.to_string())
                })
                .and_then(|json| serde_json::from_str::<JobSpec>(&json).map_err(|e| e.to_string()));
            let spec = match spec {
                Ok(spec) => spec,
                Err(error) => {
                    tracing::error!(job = claimed.job_id, %error, "a queued job's spec could not be read");
                    state.store.finish_agent_job(claimed.job_id, agent.id).await?;
                    let _ = waiter.messages.send(AgentMessage::Lost("the job's spec could not be read".to_owned()));
                    continue;
                }
            };
            tracing::info!(agent = %agent.name, job = claimed.job_id, "agent took a job");
            return Ok(Some(Claimed { job_id: claimed.job_id, attempt: claimed.attempt, spec }));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || tokio::time::timeout(left, queued).await.is_err() {
            return Ok(None);
        }
    }
}

/// The job's waiter, if the job runs on this agent now; whether it should be canceled.
pub async fn running_here(state: &AppState, agent: &Agent, job_id: i64) -> Result<(Arc<Waiter>, bool), AgentError> {
    let cancel = state.store.agent_job_heartbeat(job_id, agent.id).await?.ok_or(AgentError::Gone)?;
    let waiter = state.ci.agent_hub.waiter(job_id).ok_or(AgentError::Gone)?;
    Ok((waiter, cancel))
}

/// The pipeline's source files as a tar archive.
pub async fn source(state: &AppState, agent: &Agent, job_id: i64) -> Result<bytes::Bytes, AgentError> {
    let (waiter, _) = running_here(state, agent, job_id).await?;
    waiter
        .source
        .archive()
        .await
        .map_err(|error| AgentError::Internal(format!("could not pack the pipeline's source: {error}")))
}

/// The artifacts of the job's `position`-th upstream job (as the spec's `upstream` lists them).
pub async fn upstream(state: &AppState, agent: &Agent, job_id: i64, position: usize) -> Result<Vec<u8>, AgentError> {
    let (waiter, _) = running_here(state, agent, job_id).await?;
    let dir = waiter.upstream.get(position).cloned().ok_or(AgentError::NotFound { what: "upstream job" })?;
    tokio::task::spawn_blocking(move || opsloop_runner::transfer::pack_tree(&dir))
        .await
        .map_err(|e| AgentError::Internal(format!("packing upstream artifacts stopped: {e}")))?
        .map_err(|error| AgentError::Internal(format!("could not pack upstream artifacts: {error}")))
}

/// The job's events since the last report (also its heartbeat); whether to cancel it.
pub async fn report(state: &AppState, agent: &Agent, job_id: i64, events: Vec<Event>) -> Result<bool, AgentError> {
    if events.len() > MAX_EVENTS_PER_BATCH {
        return Err(AgentError::Invalid(format!("at most {MAX_EVENTS_PER_BATCH} events per post")));
    }
    let (waiter, cancel) = running_here(state, agent, job_id).await?;
    // A busy agent is online too (its long polls are rare then); recorded at most every 10 s.
    if state.store.now_ms() - agent.last_seen_at > 10_000 {
        state.store.agent_seen(agent.id).await?;
    }
    for event in events {
        let event = match event {
            Event::JobStarted { job, name, executor } => {
                Event::JobStarted { job, name, executor: format!("agent {} ({executor})", agent.name) }
            }
            other => other,
        };
        if waiter.messages.send(AgentMessage::Event(event)).is_err() {
            return Err(AgentError::Gone);
        }
    }
    Ok(cancel)
}

/// Replaces the job's artifacts with `archive` (a tar of files and directories only). The
/// caller checked [`running_here`] before receiving it; checked again here, since the job may
/// have been lost and queued elsewhere during a long upload.
pub async fn store_artifacts(state: &AppState, agent: &Agent, job_id: i64, archive: Vec<u8>) -> Result<(), AgentError> {
    let (waiter, _) = running_here(state, agent, job_id).await?;
    let target = waiter.artifacts_dir.clone();
    tokio::task::spawn_blocking(move || {
        let _ = std::fs::remove_dir_all(&target);
        opsloop_runner::transfer::unpack(archive.as_slice(), &target)
    })
    .await
    .map_err(|e| AgentError::Internal(format!("unpacking artifacts stopped: {e}")))?
    .map_err(|error| AgentError::Invalid(format!("the artifact archive was refused: {error}")))?;
    Ok(())
}

/// A cache of the job's project, if there is one of that key.
pub async fn fetch_cache(
    state: &AppState,
    agent: &Agent,
    job_id: i64,
    key: &str,
) -> Result<Option<bytes::Bytes>, AgentError> {
    let (waiter, _) = running_here(state, agent, job_id).await?;
    let key = crate::objects::cache_key(waiter.project_id, waiter.protected, key);
    state
        .objects()?
        .get_if_any(&key)
        .await
        .map_err(|error| AgentError::Internal(format!("could not read a cache: {error}")))
}

/// Stores a cache of the job's project, replacing the one of that key; only a well-formed
/// archive is kept, so a later fetch never unpacks garbage.
pub async fn store_cache(
    state: &AppState,
    agent: &Agent,
    job_id: i64,
    key: &str,
    archive: Vec<u8>,
) -> Result<(), AgentError> {
    let (waiter, _) = running_here(state, agent, job_id).await?;
    let checked = archive.clone();
    let name = crate::auth::credentials::new_secret()
        .map_err(|e| AgentError::Internal(format!("no scratch directory name: {e}")))?;
    let scratch = state.config.data_dir.join("scratch").join(name);
    tokio::task::spawn_blocking(move || {
        let unpacked = opsloop_runner::transfer::unpack(checked.as_slice(), &scratch);
        let _ = std::fs::remove_dir_all(&scratch);
        unpacked
    })
    .await
    .map_err(|e| AgentError::Internal(format!("checking a cache stopped: {e}")))?
    .map_err(|error| AgentError::Invalid(format!("the cache archive was refused: {error}")))?;
    let key = crate::objects::cache_key(waiter.project_id, waiter.protected, key);
    state
        .objects()?
        .put(&key, archive)
        .await
        .map_err(|error| AgentError::Internal(format!("could not store a cache: {error}")))
}

/// The job ended on the agent (its artifacts were stored before).
pub async fn finish(
    state: &AppState,
    agent: &Agent,
    job_id: i64,
    outcome: JobOutcome,
    dotenv: Vec<(String, String)>,
) -> Result<(), AgentError> {
    if matches!(outcome.status, opsloop_runner::JobStatus::Manual | opsloop_runner::JobStatus::Skipped) {
        return Err(AgentError::Invalid("a job that ran cannot end as manual or skipped".to_owned()));
    }
    let waiter = state.ci.agent_hub.waiter(job_id).ok_or(AgentError::Gone)?;
    if !state.store.finish_agent_job(job_id, agent.id).await? {
        return Err(AgentError::Gone);
    }
    let _ = waiter.messages.send(AgentMessage::Finished { outcome, dotenv });
    Ok(())
}

/// Creates an agent and its token (`olpa_…`), which is stored only as a digest.
pub async fn issue_agent_token(store: &Store, name: &str, actor: Actor<'_>) -> Result<(String, Agent), AgentError> {
    opsloop_core::validate_name("agent", name).map_err(|e| AgentError::Invalid(e.to_string()))?;
    let secret = crate::auth::credentials::new_secret()
        .map_err(|e| AgentError::Internal(format!("no token could be generated: {e}")))?;
    let token = format!("{AGENT_TOKEN_PREFIX}{secret}");
    let agent = store.create_agent(name, &digest(&token), actor).await?;
    Ok((token, agent))
}
