//! The time-series database.

pub mod chunk;
