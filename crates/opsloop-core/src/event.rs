//! The events the loop is made of: what one subsystem did that others react to.
//!
//! A service never calls another subsystem to tell it something happened; the change records an
//! [`Event`] (durably, in the store, in the same transaction as the change itself) and each
//! subscriber (outgoing webhooks today; alerting, incidents and insight as they land) reads the
//! log from its own cursor, at least once. A new kind of event is one variant here; a new
//! subscriber never touches the emitter.

use crate::status::{DeploymentStatus, IncidentStatus, JobStatus, PipelineStatus};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A pipeline was planned and its jobs start.
    PipelineStarted { project_id: i64, pipeline_id: i64 },
    /// A pipeline ended (success, failed or canceled); again after a retried job settles it.
    PipelineFinished { project_id: i64, pipeline_id: i64, status: PipelineStatus },
    /// A job ended, with the status it ended in.
    JobFinished { project_id: i64, pipeline_id: i64, job_id: i64, status: JobStatus },
    /// A deployment got its environment's turn and starts bringing up its release.
    DeploymentStarted { project_id: i64, deployment_id: i64 },
    /// A deployment ended: `success` (traffic switched to the new release), `failed` (the old
    /// release still serves) or `rolled_back` (it served, failed its checks, and was undone).
    DeploymentFinished { project_id: i64, deployment_id: i64, status: DeploymentStatus, reason: Option<String> },
    /// An incident was opened, acknowledged or resolved. `project_id` is 0 for an incident of
    /// the instance (alerts that name no project).
    IncidentChanged { project_id: i64, incident_id: i64, status: IncidentStatus },
}

impl Event {
    /// The event's kind as stored and shown (`pipeline_finished`, …).
    pub fn kind(&self) -> &'static str {
        match self {
            Event::PipelineStarted { .. } => "pipeline_started",
            Event::PipelineFinished { .. } => "pipeline_finished",
            Event::JobFinished { .. } => "job_finished",
            Event::DeploymentStarted { .. } => "deployment_started",
            Event::DeploymentFinished { .. } => "deployment_finished",
            Event::IncidentChanged { .. } => "incident_changed",
        }
    }

    /// The project the event belongs to.
    pub fn project_id(&self) -> i64 {
        match self {
            Event::PipelineStarted { project_id, .. }
            | Event::PipelineFinished { project_id, .. }
            | Event::JobFinished { project_id, .. }
            | Event::DeploymentStarted { project_id, .. }
            | Event::DeploymentFinished { project_id, .. }
            | Event::IncidentChanged { project_id, .. } => *project_id,
        }
    }
}

/// An event as the log holds it: its position (ids only grow) and when it was recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    pub id: i64,
    /// Milliseconds since the Unix epoch.
    pub at: i64,
    pub event: Event,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_stored_as_tagged_json() {
        let event = Event::JobFinished { project_id: 1, pipeline_id: 2, job_id: 3, status: JobStatus::Warning };
        let text = serde_json::to_string(&event).unwrap_or_default();
        assert_eq!(text, r#"{"type":"job_finished","project_id":1,"pipeline_id":2,"job_id":3,"status":"warning"}"#);
        assert_eq!(serde_json::from_str::<Event>(&text).ok(), Some(event.clone()));
        assert_eq!(event.kind(), "job_finished");
        assert_eq!(event.project_id(), 1);
    }
}
