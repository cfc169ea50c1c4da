//! `opsloop agent`: runs the server's jobs on this machine. It needs only this binary and
//! HTTP access to the server: it registers its tags, long-polls for jobs, fetches the
//! pipeline's source and upstream artifacts, runs the job with the same engine as `opsloop
//! run`, streams its events (each post is a heartbeat, and the answer says whether to
//! cancel), uploads its artifacts and reports the end. Caches are kept on this machine and
//! shared through the server's object store.
//!
//! Jobs start from a clean environment (PATH, HOME and a few more), so the agent's token is
//! not theirs to read; a job running as the agent's user can still read the agent's process
//! files, so run untrusted jobs with `--isolation sandbox` or as another user.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use opsloop_runner::mask::Masker;
use opsloop_runner::{Event, EventSink, Isolation, JobOutcome, JobSpec, JobStatus, Workplace};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, watch};

use crate::cli::{AgentArgs, AgentIsolation};
use crate::output;

#[derive(Debug, Deserialize)]
struct Registered {
    name: String,
    tags: Vec<String>,
    heartbeat_seconds: u64,
}

#[derive(Debug, Deserialize)]
struct AssignedJob {
    job_id: i64,
    attempt: i64,
    heartbeat_seconds: u64,
    spec: JobSpec,
}

#[derive(Debug, Deserialize)]
struct HeartbeatAnswer {
    cancel: bool,
}

struct Agent {
    http: reqwest::Client,
    base: url::Url,
    token: String,
    work_dir: PathBuf,
    isolation: Isolation,
}

/// The server told the agent the job is not its own any more (410).
#[derive(Debug, thiserror::Error)]
#[error("the server dropped the job")]
struct Gone;

impl Agent {
    fn url(&self, path: &str) -> anyhow::Result<url::Url> {
        self.base.join(path).with_context(|| format!("bad server URL for {path}"))
    }

    fn request(&self, method: reqwest::Method, path: &str) -> anyhow::Result<reqwest::RequestBuilder> {
        Ok(self.http.request(method, self.url(path)?).bearer_auth(&self.token))
    }

    /// Sends a request; 410 becomes [`Gone`], other failures carry the server's message.
    async fn send(&self, builder: reqwest::RequestBuilder) -> anyhow::Result<reqwest::Response> {
        let response = builder.send().await.context("the server did not answer")?;
        let status = response.status();
        if status == StatusCode::GONE {
            return Err(Gone.into());
        }
        if status.is_success() {
            return Ok(response);
        }
        let body: serde_json::Value = response.json().await.unwrap_or_default();
        let message = body["error"]["message"].as_str().unwrap_or("no message").to_owned();
        if status == StatusCode::UNAUTHORIZED {
            bail!("the server refused the agent token ({message}); create one with `opsloop admin agent create`");
        }
        bail!("the server answered {status}: {message}")
    }
}

pub async fn run(args: AgentArgs) -> ExitCode {
    match serve(args).await {
        Ok(code) => code,
        Err(error) => super::fail(&error),
    }
}

async fn serve(args: AgentArgs) -> anyhow::Result<ExitCode> {
    let from_file = match &args.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the token file {}", path.display()))?
                .trim()
                .to_owned(),
        ),
        None => None,
    };
    let token = from_file.or_else(|| args.token.clone()).filter(|t| !t.is_empty()).ok_or_else(|| {
        anyhow!("no agent token: pass --token-file, or set OPSLOOP_AGENT_TOKEN (an admin creates one with `opsloop admin agent create --name NAME`)")
    })?;
    let mut base = url::Url::parse(&args.server).with_context(|| format!("--server `{}` is not a URL", args.server))?;
    if !base.path().ends_with('/') {
        base.set_path(&format!("{}/", base.path()));
    }
    let http = reqwest::Client::builder()
        .user_agent(concat!("opsloop-agent/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(10))
        .build()?;
    std::fs::create_dir_all(&args.work_dir)
        .with_context(|| format!("cannot create the work directory {}", args.work_dir.display()))?;
    let work_dir = std::fs::canonicalize(&args.work_dir)?;
    // Jobs an earlier agent here left running when it was killed are no one's now: the
    // server has failed or requeued them.
    let orphans = opsloop_runner::reap::kill_orphans(&work_dir.join("jobs"));
    if orphans > 0 {
        output::warn(&format!("ended {orphans} job process(es) an earlier agent left running"));
    }
    let _ = std::fs::remove_dir_all(work_dir.join("jobs"));
    let isolation = match args.isolation {
        AgentIsolation::None => Isolation::None,
        AgentIsolation::Sandbox => Isolation::Sandbox { network: true },
    };
    let agent = Arc::new(Agent { http, base, token, work_dir, isolation });
    let hostname = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
    let registration = json!({
        "tags": args.tags,
        "concurrency": args.concurrency,
        "version": env!("CARGO_PKG_VERSION"),
        "hostname": hostname,
    });
    let registered: Registered = agent
        .send(agent.request(reqwest::Method::POST, "api/v1/agent/register")?.json(&registration))
        .await?
        .json()
        .await?;
    let tags = if registered.tags.is_empty() { "none".to_owned() } else { registered.tags.join(", ") };
    output::status(&format!(
        "agent {} connected to {} (tags: {tags}; {} job(s) at once; heartbeat every {}s)",
        registered.name, args.server, args.concurrency, registered.heartbeat_seconds
    ));
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency.max(1) {
        let agent = agent.clone();
        workers.spawn(async move { work(agent).await });
    }
    tokio::select! {
        _ = workers.join_next() => {}
        _ = tokio::signal::ctrl_c() => {
            output::status("stopping; jobs still running are lost and failed by the server after its timeout");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One worker: asks for a job, runs it, asks again. Connection trouble backs off up to 30 s.
async fn work(agent: Arc<Agent>) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let asked = agent.request(reqwest::Method::POST, "api/v1/agent/jobs/request?wait_seconds=20");
        let answer = match asked {
            Ok(builder) => agent.send(builder.timeout(Duration::from_secs(40))).await,
            Err(error) => Err(error),
        };
        let response = match answer {
            Ok(response) => response,
            Err(error) => {
                output::warn(&format!("{error:#}; retrying in {}s", backoff.as_secs()));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        backoff = Duration::from_secs(1);
        if response.status() == StatusCode::NO_CONTENT {
            continue;
        }
        let assigned: AssignedJob = match response.json().await {
            Ok(job) => job,
            Err(error) => {
                output::warn(&format!("the server sent a job this agent cannot read: {error}"));
                continue;
            }
        };
        let (job_id, name) = (assigned.job_id, assigned.spec.name.clone());
        output::status(&format!("job {job_id} ({name}) started, attempt {}", assigned.attempt));
        match run_job(&agent, assigned).await {
            Ok(status) => output::status(&format!("job {job_id} ({name}) {}", status.as_str())),
            Err(error) if error.is::<Gone>() => output::warn(&format!("job {job_id} ({name}): the server dropped it")),
            Err(error) => output::warn(&format!("job {job_id} ({name}) could not be reported: {error:#}")),
        }
    }
}

/// Events of the running job, on their way to the server in batches.
struct ForwardingSink {
    events: mpsc::UnboundedSender<Event>,
}

impl EventSink for ForwardingSink {
    fn emit(&self, event: Event) {
        let _ = self.events.send(event);
    }
}

/// A batch is posted when it holds this much text, or every quarter second.
const BATCH_BYTES: usize = 256 * 1024;

fn event_size(event: &Event) -> usize {
    match event {
        Event::Output { line, .. } => line.len() + 16,
        Event::Command { text, .. } | Event::Note { text, .. } => text.len() + 16,
        _ => 64,
    }
}

/// Posts events in batches until the sink closes; posts an empty batch as a heartbeat when
/// the job is quiet. Flips `cancel` when the server asks for it or drops the job.
async fn forward_events(
    agent: Arc<Agent>,
    job_id: i64,
    heartbeat: Duration,
    mut events: mpsc::UnboundedReceiver<Event>,
    cancel: watch::Sender<bool>,
) -> anyhow::Result<()> {
    let path = format!("api/v1/agent/jobs/{job_id}/events");
    let mut batch: Vec<Event> = Vec::new();
    let mut bytes = 0;
    let mut last_post = tokio::time::Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut open = true;
    let mut gone = false;
    while open || !batch.is_empty() {
        tokio::select! {
            event = events.recv(), if open => match event {
                Some(event) => {
                    bytes += event_size(&event);
                    batch.push(event);
                    if bytes < BATCH_BYTES {
                        continue;
                    }
                }
                None => open = false,
            },
            _ = tick.tick() => {
                if batch.is_empty() && last_post.elapsed() < heartbeat {
                    continue;
                }
            }
        }
        if gone {
            batch.clear();
            continue;
        }
        let body = json!({ "events": std::mem::take(&mut batch) });
        bytes = 0;
        last_post = tokio::time::Instant::now();
        match agent.send(agent.request(reqwest::Method::POST, &path)?.json(&body)).await {
            Ok(response) => {
                if response.json::<HeartbeatAnswer>().await.is_ok_and(|a| a.cancel) {
                    let _ = cancel.send(true);
                }
            }
            Err(error) if error.is::<Gone>() => {
                gone = true;
                let _ = cancel.send(true);
            }
            // A lost post is lost output, not a lost job: the next post is the next heartbeat.
            Err(error) => output::warn(&format!("job {job_id}: {error:#}")),
        }
    }
    if gone { Err(Gone.into()) } else { Ok(()) }
}

async fn run_job(agent: &Arc<Agent>, assigned: AssignedJob) -> anyhow::Result<JobStatus> {
    let job_id = assigned.job_id;
    let dir = agent.work_dir.join("jobs").join(job_id.to_string());
    let result = run_job_in(agent, &assigned, &dir).await;
    let cleanup = dir.clone();
    let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(cleanup)).await;
    result
}

async fn fetch_tar(agent: &Agent, path: &str, target: &Path) -> anyhow::Result<Vec<String>> {
    fetch_tar_from(agent, agent.request(reqwest::Method::GET, path)?, target).await
}

async fn fetch_tar_from(agent: &Agent, request: reqwest::RequestBuilder, target: &Path) -> anyhow::Result<Vec<String>> {
    let response = agent.send(request).await?;
    let bytes = response.bytes().await.context("downloading from the server")?;
    let target = target.to_owned();
    let files =
        tokio::task::spawn_blocking(move || opsloop_runner::transfer::unpack(bytes.as_ref(), &target)).await??;
    Ok(files)
}

async fn run_job_in(agent: &Arc<Agent>, assigned: &AssignedJob, dir: &Path) -> anyhow::Result<JobStatus> {
    let job_id = assigned.job_id;
    // The pipeline's token calls back to the server as this agent reaches it, with this
    // agent's own binary (`opsloop deploy` in a job).
    let mut spec = assigned.spec.clone();
    for (name, value, _) in &mut spec.layers {
        match name.as_str() {
            "OPSLOOP_SERVER" => *value = agent.base.as_str().trim_end_matches('/').to_owned(),
            "OPSLOOP_BIN" => {
                if let Ok(exe) = std::env::current_exe() {
                    *value = exe.display().to_string();
                }
            }
            _ => {}
        }
    }
    let spec = &spec;
    let _ = std::fs::remove_dir_all(dir);
    let source = dir.join("source");
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let (cancel_tx, cancel_rx) = watch::channel(false);
    let heartbeat_every = Duration::from_secs(assigned.heartbeat_seconds.max(1));
    let forwarder = tokio::spawn(forward_events(agent.clone(), job_id, heartbeat_every, events_rx, cancel_tx));
    let sink = ForwardingSink { events: events_tx };

    let prepared: anyhow::Result<(Vec<String>, Vec<PathBuf>)> = async {
        let mut files = fetch_tar(agent, &format!("api/v1/agent/jobs/{job_id}/source"), &source).await?;
        files.sort();
        let mut upstream = Vec::new();
        for position in 0..spec.upstream.len() {
            let target = dir.join("upstream").join(position.to_string());
            fetch_tar(agent, &format!("api/v1/agent/jobs/{job_id}/upstream/{position}"), &target).await?;
            upstream.push(target);
        }
        Ok((files, upstream))
    }
    .await;
    let (outcome, dotenv) = match prepared {
        Ok((files, upstream)) => {
            // Local caches per project, as GitLab Runner keeps them.
            let project =
                spec.layers.iter().find(|(name, _, _)| name == "CI_PROJECT_PATH").map_or("default", |l| l.1.as_str());
            let workplace = Workplace {
                state_dir: dir.join("state"),
                cache_root: agent.work_dir.join("caches").join(opsloop_runner::workspace::dir_name(project)),
                source_root: source.clone(),
                files: Arc::new(files),
                project_dir: source.clone(),
                copy_back: false,
                isolation: agent.isolation,
                container_engine: match &spec.image {
                    Some(image) => engine_with(image).await,
                    None => None,
                },
                force_shell: false,
                keep_workspaces: false,
                shared_cache: Some(Arc::new(ServerCache { agent: agent.clone(), job_id })),
                // The agent's own environment (its token among it) is not the job's.
                clean_env: true,
            };
            let masker = Masker::new(spec.masked.iter().cloned());
            opsloop_runner::execute(spec, &workplace, &upstream, &masker, &sink, cancel_rx).await
        }
        Err(error) => {
            if error.is::<Gone>() {
                drop(sink);
                let _ = forwarder.await;
                return Err(error);
            }
            let message = format!("the agent could not prepare the job: {error:#}");
            sink.emit(Event::Output {
                job: spec.index,
                name: spec.name.clone(),
                stream: opsloop_runner::Stream::Stderr,
                line: message.clone(),
            });
            let outcome = JobOutcome {
                status: JobStatus::Failed,
                exit_code: None,
                duration: Duration::ZERO,
                coverage: None,
                after_script_failed: false,
                tail: vec![message],
                attempts: 0,
                tests: None,
            };
            (outcome, Vec::new())
        }
    };
    drop(sink);
    forwarder.await.map_err(|e| anyhow!("the event forwarder failed: {e}"))??;
    // Heartbeats go on while artifacts upload, or a long upload would lose the job.
    let beats = tokio::spawn(heartbeat(agent.clone(), job_id, heartbeat_every));
    let reported = report(agent, spec, job_id, dir, outcome, dotenv).await;
    beats.abort();
    reported
}

/// Posts empty event batches (heartbeats) until aborted.
async fn heartbeat(agent: Arc<Agent>, job_id: i64, every: Duration) {
    let path = format!("api/v1/agent/jobs/{job_id}/events");
    loop {
        tokio::time::sleep(every).await;
        if let Ok(request) = agent.request(reqwest::Method::POST, &path) {
            let _ = agent.send(request.json(&json!({ "events": [] }))).await;
        }
    }
}

/// Uploads the job's artifacts and reports its end.
async fn report(
    agent: &Arc<Agent>,
    spec: &JobSpec,
    job_id: i64,
    dir: &Path,
    mut outcome: JobOutcome,
    dotenv: Vec<(String, String)>,
) -> anyhow::Result<JobStatus> {
    // The end must fit the server's body limit: long lines and endless failure lists are cut.
    for line in &mut outcome.tail {
        truncate(line, 2000);
    }
    if let Some(tests) = &mut outcome.tests {
        tests.failures.truncate(200);
        for failure in &mut tests.failures {
            truncate(failure, 2000);
        }
    }

    let artifacts = opsloop_runner::workspace::artifacts_dir(&dir.join("state"), &spec.name);
    if artifacts.is_dir() {
        let packed = tokio::task::spawn_blocking(move || opsloop_runner::transfer::pack_tree(&artifacts)).await??;
        let path = format!("api/v1/agent/jobs/{job_id}/artifacts");
        agent
            .send(agent.request(reqwest::Method::PUT, &path)?.header("content-type", "application/x-tar").body(packed))
            .await
            .context("uploading artifacts")?;
    }
    let status = outcome.status;
    let path = format!("api/v1/agent/jobs/{job_id}/finish");
    agent
        .send(agent.request(reqwest::Method::POST, &path)?.json(&json!({ "outcome": outcome, "dotenv": dotenv })))
        .await?;
    Ok(status)
}

/// The project's caches on the server: fetched when this machine has no copy, stored after
/// each job, so agents and the server share them.
#[derive(Debug)]
struct ServerCache {
    agent: Arc<Agent>,
    job_id: i64,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent").field("server", &self.base.as_str()).finish()
    }
}

impl ServerCache {
    fn path(&self, key: &str) -> String {
        let key: String = url::form_urlencoded::byte_serialize(key.as_bytes()).collect();
        format!("api/v1/agent/jobs/{}/caches/{key}", self.job_id)
    }
}

impl opsloop_runner::SharedCache for ServerCache {
    fn fetch<'a>(&'a self, key: &'a str, dir: &'a Path) -> opsloop_runner::CacheFuture<'a, bool> {
        Box::pin(async move {
            let Ok(request) = self.agent.request(reqwest::Method::GET, &self.path(key)) else { return false };
            // 404 (no such cache) and trouble alike: the job runs without it.
            fetch_tar_from(&self.agent, request, dir).await.is_ok()
        })
    }

    fn store<'a>(&'a self, key: &'a str, dir: &'a Path) -> opsloop_runner::CacheFuture<'a, ()> {
        Box::pin(async move {
            let dir = dir.to_owned();
            let Ok(Ok(packed)) = tokio::task::spawn_blocking(move || opsloop_runner::transfer::pack_tree(&dir)).await
            else {
                return;
            };
            let Ok(request) = self.agent.request(reqwest::Method::PUT, &self.path(key)) else { return };
            let sent = self.agent.send(request.header("content-type", "application/x-tar").body(packed)).await;
            if let Err(error) = sent {
                output::warn(&format!(
                    "job {}: the cache `{key}` was not stored on the server: {error:#}",
                    self.job_id
                ));
            }
        })
    }
}

/// Cuts `text` to at most `max` bytes, at a character boundary.
fn truncate(text: &mut String, max: usize) {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
}

/// podman or docker, whichever has `image` here.
async fn engine_with(image: &str) -> Option<String> {
    for engine in ["podman", "docker"] {
        let args: &[&str] = if engine == "podman" { &["image", "exists", image] } else { &["image", "inspect", image] };
        let found = tokio::process::Command::new(engine)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .await
            .is_ok_and(|s| s.success());
        if found {
            return Some(engine.to_owned());
        }
    }
    None
}
