//! The time-series database.

pub mod chunk;
mod encoding;
pub mod head;
pub mod postings;
pub mod wal;
