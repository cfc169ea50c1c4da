//! Shared vocabulary of opsloop: what every other crate may name without depending on each other.
//!
//! Kept deliberately small (roles, names, time, statuses, events). Anything with I/O belongs
//! elsewhere.

pub mod clock;
pub mod event;
pub mod name;
pub mod role;
pub mod skip;
pub mod status;

pub use clock::{Clock, SystemClock};
pub use event::{Event, RecordedEvent};
pub use name::{NameError, validate_name};
pub use role::{Role, RoleParseError};
pub use status::{DeploymentStatus, IncidentStatus, JobStatus, PipelineStatus, StatusParseError};
