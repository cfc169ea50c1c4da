//! Shared vocabulary of opsloop: what every other crate may name without depending on each other.
//!
//! Kept deliberately small (roles, names, time). Anything with I/O belongs elsewhere.

pub mod clock;
pub mod name;
pub mod role;
pub mod skip;

pub use clock::{Clock, SystemClock};
pub use name::{NameError, validate_name};
pub use role::{Role, RoleParseError};
