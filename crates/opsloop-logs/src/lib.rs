//! The Loki role, as a library (no HTTP server, no store): log streams identified by labels,
//! stored in compressed time-bounded chunks behind a WAL, indexed by label and time, and
//! queried with LogQL (our own parser and evaluator).

pub mod eval;
pub mod labels;
pub mod logql;
pub mod pipeline;
pub mod push;
pub mod store;
