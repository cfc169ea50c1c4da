//! The states of pipelines, jobs and deployments: enums in code, lowercase text in the store,
//! the API and the UI (GitLab's spelling, so clients written for GitLab read them).

use std::fmt;
use std::str::FromStr;

/// A stored status text that names no known state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {what} status `{value}`")]
pub struct StatusParseError {
    pub what: &'static str,
    pub value: String,
}

macro_rules! status_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = StatusParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|status| status.as_str() == s)
                    .ok_or_else(|| StatusParseError { what: $what, value: s.to_owned() })
            }
        }
    };
}

status_enum!(
    /// A pipeline's state.
    PipelineStatus, "pipeline" {
        /// Recorded, not yet planned (a request waiting for a slot).
        Created => "created",
        /// Claimed for planning.
        Pending => "pending",
        Running => "running",
        Success => "success",
        Failed => "failed",
        Canceled => "canceled",
    }
);

impl PipelineStatus {
    /// The pipeline will change no more (until a job is retried).
    pub fn is_finished(self) -> bool {
        matches!(self, PipelineStatus::Success | PipelineStatus::Failed | PipelineStatus::Canceled)
    }
}

status_enum!(
    /// A job's state.
    JobStatus, "job" {
        Created => "created",
        Pending => "pending",
        /// Waiting for its `start_in`.
        Scheduled => "scheduled",
        Running => "running",
        Success => "success",
        /// Failed with `allow_failure`: the pipeline goes on.
        Warning => "warning",
        Failed => "failed",
        Skipped => "skipped",
        /// Waits for someone to play it.
        Manual => "manual",
        Canceled => "canceled",
    }
);

impl JobStatus {
    /// The job has not ended: it waits, or runs.
    pub fn is_active(self) -> bool {
        matches!(self, JobStatus::Created | JobStatus::Pending | JobStatus::Scheduled | JobStatus::Running)
    }
}

status_enum!(
    /// A deployment's state.
    DeploymentStatus, "deployment" {
        /// Production-tier deployments wait for a maintainer's approval.
        WaitingApproval => "waiting_approval",
        /// Waits for the environment's turn.
        Queued => "queued",
        Running => "running",
        Success => "success",
        Failed => "failed",
        /// The new release failed its checks after the switch and the old one serves again.
        RolledBack => "rolled_back",
    }
);

impl DeploymentStatus {
    /// Waiting or running: the deployment may still change what serves.
    pub fn is_active(self) -> bool {
        matches!(self, DeploymentStatus::WaitingApproval | DeploymentStatus::Queued | DeploymentStatus::Running)
    }
}

status_enum!(
    /// An incident's state: PagerDuty's three.
    IncidentStatus, "incident" {
        /// Open and paging through its escalation policy.
        Triggered => "triggered",
        /// Someone took it: escalation stops.
        Acknowledged => "acknowledged",
        Resolved => "resolved",
    }
);

impl IncidentStatus {
    /// Not resolved: new alerts with the same key join it.
    pub fn is_open(self) -> bool {
        !matches!(self, IncidentStatus::Resolved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_through_text_and_json() {
        for status in PipelineStatus::ALL {
            assert_eq!(status.as_str().parse::<PipelineStatus>(), Ok(*status));
            assert_eq!(serde_json::to_value(status).ok(), Some(serde_json::Value::from(status.as_str())));
        }
        for status in JobStatus::ALL {
            assert_eq!(status.as_str().parse::<JobStatus>(), Ok(*status));
        }
        for status in DeploymentStatus::ALL {
            assert_eq!(status.as_str().parse::<DeploymentStatus>(), Ok(*status));
            assert_eq!(serde_json::to_value(status).ok(), Some(serde_json::Value::from(status.as_str())));
        }
        for status in IncidentStatus::ALL {
            assert_eq!(status.as_str().parse::<IncidentStatus>(), Ok(*status));
        }
        let error = "done".parse::<JobStatus>().unwrap_err();
        assert_eq!(error.to_string(), "unknown job status `done`");
    }
}
