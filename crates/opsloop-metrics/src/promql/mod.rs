//! PromQL evaluation over a [`crate::storage::Queryable`]; parsing is `promql-parser`'s.
