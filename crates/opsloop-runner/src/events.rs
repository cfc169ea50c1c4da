//! What the runner reports while it works. The CLI prints these; the server will persist them.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Stream {
    Stdout,
    Stderr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum JobStatus {
    Success,
    /// Failed, but allowed to (`allow_failure`).
    Warning,
    Failed,
    Skipped,
    /// Waiting to be played; not run.
    Manual,
    Canceled,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Success => "success",
            JobStatus::Warning => "warning",
            JobStatus::Failed => "failed",
            JobStatus::Skipped => "skipped",
            JobStatus::Manual => "manual",
            JobStatus::Canceled => "canceled",
        }
    }
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct JobOutcome {
    pub status: JobStatus,
    pub exit_code: Option<i32>,
    pub duration: Duration,
    /// The coverage percentage found with the job's `coverage` regex.
    pub coverage: Option<String>,
    /// `after_script` failed (it never fails the job, but is worth a warning).
    pub after_script_failed: bool,
    /// Last lines of output, for the summary of a failed job.
    pub tail: Vec<String>,
    pub attempts: u32,
    /// The sum of the job's JUnit reports, if it has any.
    pub tests: Option<crate::junit::TestReport>,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub enum Event {
    /// `executor` says where it runs: `shell`, `sandbox`, or the container image.
    JobStarted {
        job: usize,
        name: String,
        executor: String,
    },
    /// The job deploys to an environment (its name as the job sees it, variables expanded).
    Environment {
        job: usize,
        name: String,
        environment: String,
        url: Option<String>,
    },
    /// An echoed command (`$ cmd`).
    Command {
        job: usize,
        name: String,
        text: String,
    },
    Output {
        job: usize,
        name: String,
        stream: Stream,
        line: String,
    },
    /// The job waits `seconds` before it starts (`when: delayed`, `start_in`).
    Delayed {
        job: usize,
        name: String,
        seconds: u64,
    },
    /// `after_script` is about to run.
    AfterScript {
        job: usize,
        name: String,
    },
    /// A note from the runner about a job (retries, timeouts, artifacts).
    Note {
        job: usize,
        name: String,
        text: String,
        #[serde(default)]
        kind: NoteKind,
    },
    JobFinished {
        job: usize,
        name: String,
        outcome: JobOutcome,
    },
}

/// What a note is, which decides where a terminal shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum NoteKind {
    /// Something to look at: a retry, a timeout, artifacts missing.
    #[default]
    Warning,
    /// A step of the job's own done, such as its artifacts saved.
    Progress,
    /// A line under the job's progress, such as what one cache path matched.
    Detail,
}

pub trait EventSink: Send + Sync {
    fn emit(&self, event: Event);
}
