//! `trigger: include` — a child pipeline from files in this repository, run to the end by the
//! same engine, its jobs shown as `parent: child`. The trigger job mirrors the child pipeline's
//! result (GitLab's `strategy: depend`); without it GitLab would not wait, but a local run has
//! nothing better to do than wait.

use std::sync::Arc;
use std::time::Instant;

use opsloop_pipeline::config::{self, FileSource};
use opsloop_pipeline::plan::{self, PlanOptions};
use opsloop_pipeline::yaml::{Node, Value};
use tokio::sync::watch;

use crate::events::{Event, EventSink, JobOutcome, JobStatus, Stream};
use crate::pipeline::{Override, RunOptions};

struct ProjectFiles {
    root: std::path::PathBuf,
    files: Vec<String>,
    /// The synthetic root file that includes the trigger's files.
    entry: String,
}

const ENTRY: &str = "<trigger:include>";

impl FileSource for ProjectFiles {
    fn read(&self, path: &str) -> Result<String, String> {
        if path == ENTRY {
            return Ok(self.entry.clone());
        }
        std::fs::read_to_string(self.root.join(path.trim_start_matches('/'))).map_err(|e| e.to_string())
    }
    fn files(&self) -> Vec<String> {
        self.files.clone()
    }
}

/// The local files a `trigger:` includes, or why it cannot run here.
fn included_files(trigger: &Node) -> Result<Vec<String>, String> {
    if trigger.get("project").is_some() || matches!(trigger.value, Value::String(_)) {
        return Err("a multi-project trigger needs a server; only `trigger: include:` runs locally".to_owned());
    }
    let include = trigger.get("include").ok_or("trigger needs `include:` (a child pipeline file)")?;
    let items = match &include.value {
        Value::Sequence(items) => items.clone(),
        _ => vec![include.clone()],
    };
    items
        .iter()
        .map(|item| match &item.value {
            Value::String(path) => Ok(path.clone()),
            Value::Mapping(_) => item
                .get("local")
                .and_then(Node::scalar_text)
                .ok_or_else(|| "trigger:include takes local files here (`local:` or a path)".to_owned()),
            _ => Err("trigger:include takes paths".to_owned()),
        })
        .collect()
}

/// Forwards a child pipeline's events under the trigger job's index, names prefixed.
struct ChildSink {
    parent: Arc<dyn EventSink>,
    index: usize,
}

impl EventSink for ChildSink {
    fn emit(&self, event: Event) {
        let index = self.index;
        self.parent.emit(match event {
            Event::JobStarted { name, executor, .. } => Event::JobStarted { job: index, name, executor },
            Event::Environment { name, environment, url, .. } => {
                Event::Environment { job: index, name, environment, url }
            }
            Event::Command { name, text, .. } => Event::Command { job: index, name, text },
            Event::Output { name, stream, line, .. } => Event::Output { job: index, name, stream, line },
            Event::Note { name, text, kind, .. } => Event::Note { job: index, name, text, kind },
            Event::AfterScript { name, .. } => Event::AfterScript { job: index, name },
            Event::Delayed { name, seconds, .. } => Event::Delayed { job: index, name, seconds },
            Event::JobFinished { name, outcome, .. } => Event::JobFinished { job: index, name, outcome },
        });
    }
}

/// Runs the child pipeline of trigger job `name`; `variables` are the trigger job's own
/// (passed down as pipeline variables, as GitLab does).
pub async fn run_child(
    name: &str,
    index: usize,
    trigger: &Node,
    parent: &RunOptions,
    variables: Vec<(String, String)>,
    sink: Arc<dyn EventSink>,
    cancel: watch::Receiver<bool>,
) -> JobOutcome {
    let started = Instant::now();
    let fail = |message: String| {
        sink.emit(Event::Output { job: index, name: name.to_owned(), stream: Stream::Stderr, line: message.clone() });
        JobOutcome {
            status: JobStatus::Failed,
            exit_code: None,
            duration: started.elapsed(),
            coverage: None,
            after_script_failed: false,
            tail: vec![message],
            attempts: 1,
            tests: None,
        }
    };
    let paths = match included_files(trigger) {
        Ok(paths) => paths,
        Err(message) => return fail(format!("{name}: {message}")),
    };
    let files = match &parent.prepared_source {
        Some(source) => crate::workspace::list_tree(source).unwrap_or_default(),
        None => {
            let state_name = crate::pipeline::state_name(parent);
            crate::workspace::project_files(&parent.project_dir, &state_name).unwrap_or_default()
        }
    };
    let entry =
        format!("include:\n{}", paths.iter().map(|p| format!("  - local: {}\n", serde_quote(p))).collect::<String>());
    let root = parent.prepared_source.clone().unwrap_or_else(|| parent.project_dir.clone());
    let source = ProjectFiles { root, files: files.clone(), entry };
    let mut predefined = parent.predefined.clone();
    predefined.retain(|(k, _)| k != "CI_PIPELINE_SOURCE");
    predefined.push(("CI_PIPELINE_SOURCE".to_owned(), "parent_pipeline".to_owned()));
    predefined.extend(variables.iter().cloned());
    let lookup = |key: &str| predefined.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.clone());
    let child = config::load(&source, ENTRY, &lookup);
    if child.has_errors() {
        let messages: Vec<String> =
            child.diagnostics.iter().filter(|d| d.is_error()).map(|d| child.sources.render(d)).collect();
        return fail(format!("{name}: the child pipeline is invalid:\n{}", messages.join("\n")));
    }
    let mut planned = match plan::plan(&child, &lookup, &files, &PlanOptions::default()) {
        Ok(planned) => planned,
        Err(errors) => {
            let messages: Vec<String> = errors.iter().map(|d| child.sources.render(d)).collect();
            return fail(format!("{name}: the child pipeline is invalid:\n{}", messages.join("\n")));
        }
    };
    // A child's jobs run on this machine (see below): a job the parent's policy sends to
    // another machine must not run here instead.
    if let Some(remote) = &parent.remote
        && let Some(job) = planned.jobs.iter().find(|j| remote.takes(&child.jobs[j.config_index].tags))
    {
        return fail(format!(
            "{name}: the child pipeline's job `{}` must run on an agent, and child pipelines do not run on agents yet",
            job.name
        ));
    }
    for job in &mut planned.jobs {
        job.name = format!("{name}: {}", job.name);
    }
    let mut options = parent.clone();
    // A child's jobs report under their trigger job's index, which a remote executor cannot
    // map to jobs of its own: they run here.
    options.remote = None;
    options.job_switches = None;
    options.predefined = predefined.clone();
    options.overrides = parent
        .overrides
        .iter()
        .cloned()
        .chain(variables.into_iter().map(|(name, value)| Override { name, value, environment: None }))
        .collect();
    let child_sink: Arc<dyn EventSink> = Arc::new(ChildSink { parent: sink.clone(), index });
    let outcome = crate::pipeline::run_pipeline_boxed(child, planned, options, child_sink, cancel).await;
    match outcome {
        Ok(outcome) => JobOutcome {
            status: if outcome.success { JobStatus::Success } else { JobStatus::Failed },
            exit_code: Some(if outcome.success { 0 } else { 1 }),
            duration: started.elapsed(),
            coverage: None,
            after_script_failed: false,
            tail: outcome
                .jobs
                .iter()
                .filter(|(_, o)| o.status == JobStatus::Failed)
                .map(|(n, _)| format!("{n} failed"))
                .collect(),
            attempts: 1,
            tests: None,
        },
        Err(error) => fail(format!("{name}: the child pipeline could not run: {error}")),
    }
}

/// A YAML double-quoted scalar for a path.
fn serde_quote(text: &str) -> String {
    format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
}
