//! The on-call part of the alerting engine (PagerDuty's role): who is on call ([`schedule`]),
//! who gets paged and when ([`escalation`]), signed ack links ([`ack`]), calendar feeds
//! ([`ical`]), all configured as code ([`config`]).

pub mod ack;
pub mod config;
pub mod escalation;
pub mod schedule;

pub use config::{OncallConfig, UserName};
pub use escalation::{Escalation, EscalationState, PageAction};
pub use schedule::Shift;
