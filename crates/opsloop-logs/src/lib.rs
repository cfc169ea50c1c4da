//! The Loki role, as a library (no HTTP server): log streams identified by labels, stored in
//! compressed time-bounded chunks behind a WAL, indexed by label and time, and queried with
//! LogQL (our own parser and evaluator).
//!
//! What a server host calls:
//! - [`store::Store::open`]`(dir, StoreOptions)`; [`store::Store::flush`] on shutdown.
//! - Push: [`push::decode_json`] or [`push::decode_protobuf`] (snappy; gzip is the host's) with
//!   [`push::PushLimits`], then [`store::Store::push`]`(tenant, streams)`: durable on return.
//! - Query: [`eval::query_range`] / [`eval::query_instant`] over
//!   [`store::Store::reader`]`(tenant)` (any [`eval::LogSource`] works), giving an
//!   [`eval::QueryResult`] (streams, vector, matrix or scalar); [`logql::format_query`] for
//!   `/format_query`.
//! - Index: [`store::Store::label_names`], [`store::Store::label_values`],
//!   [`store::Store::series`], [`store::Store::index_stats`], [`store::Store::stats`].
//! - Upkeep: [`store::Store::apply_retention`], [`store::Store::compact`],
//!   [`store::Store::cut_due`].

pub mod eval;
pub mod labels;
pub mod logql;
pub mod pipeline;
pub mod push;
pub mod store;

pub use eval::{Direction, LogSource, QueryParams, QueryResult, query_instant, query_range};
pub use labels::{Labels, Matcher};
pub use store::{Store, StoreError, StoreOptions};
