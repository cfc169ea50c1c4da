//! The metrics engine: Prometheus's data model, a PromQL evaluator over any [`storage::Queryable`],
//! and (in its own modules) the TSDB, scraping and rules. A library: no HTTP server, no store.

pub mod config;
pub mod labels;
pub mod promql;
pub mod relabel;
pub mod scrape;
pub mod storage;
pub mod textparse;
