//! The time-series database.

pub mod chunk;
pub mod head;
pub mod postings;
