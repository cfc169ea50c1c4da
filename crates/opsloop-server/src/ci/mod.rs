//! Server-side CI: a pipeline asked for through the API is recorded, its repository checked
//! out at the ref, its file loaded and planned by the same engine `opsloop run` uses, and run by
//! the same runner on this machine, with statuses and logs written to the store as they happen.
//!
//! What a pipeline was asked to run (the pushed commit, the trigger's variables, encrypted) is
//! stored with it, so a pipeline still queued when the server stops starts after the restart.
//!
//! Jobs with tags (or all, with `ci.executor = "agents"`) run on agents: see `agents/`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use opsloop_core::{JobStatus as StoredJobStatus, PipelineStatus};
use opsloop_pipeline::config::{self, FileSource};
use opsloop_pipeline::plan::{self, PlanOptions};
use opsloop_runner::{Event, EventSink, JobStatus, RunOptions, Stream};
use opsloop_store::{Actor, Job, Pipeline, PipelineRequest, Project, Store};
use tokio::sync::mpsc;

use crate::state::AppState;

mod resume;
mod run;
mod service;
mod sink;
mod variables;

pub use resume::*;
pub use run::*;
pub use service::*;
use sink::*;
use variables::*;

/// A store write whose failure nothing here can undo (the run has moved on, or is ending): it
/// is logged with what it was, never dropped silently. The state it leaves is what a restart
/// repairs (`fail_interrupted`, `resume_queued`).
pub(super) fn logged<T>(result: Result<T, opsloop_store::StoreError>, what: &str) {
    if let Err(error) = result {
        tracing::error!(%error, write = what, "a store write failed");
    }
}
