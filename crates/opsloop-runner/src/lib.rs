//! Executes pipelines planned by `opsloop-pipeline`: a workspace per job, bash with GitLab's
//! semantics, artifacts and caches, timeouts and cancellation that end whole process trees,
//! masking, and a scheduler that starts each job as soon as what it waits for is done.
//!
//! Reports through [`events::EventSink`]; knows nothing of terminals or HTTP, so the CLI and
//! the server run the same engine.

pub mod events;
pub mod job;
pub mod junit;
pub mod mask;
pub mod pipeline;
pub mod reap;
pub mod repo;
pub mod shell;
pub mod transfer;
mod trigger;
pub mod workspace;

pub use events::{Event, EventSink, JobOutcome, JobStatus, NoteKind, Stream};
pub use job::{CacheFuture, JobFuture, JobSpec, RemoteExecutor, RemoteJob, SharedCache, Workplace, execute};
pub use pipeline::{
    ArtifactsToSource, Isolation, JobSwitches, Override, PipelineOutcome, ResourceGroups, RunOptions, run_pipeline,
};
