//! PromQL evaluation over a [`crate::storage::Queryable`]; parsing is `promql-parser`'s.
//!
//! The evaluator works a whole range at once, as Prometheus's does: every node yields, for each
//! series, one value per step, so a selector reads storage once for a range query and a
//! label set is computed once per series, not once per step. An instant query is a range of
//! one step.

mod aggregate;
mod binary;
mod eval;
mod functions;
pub(crate) mod time;

use std::sync::Once;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use promql_parser::parser::value::ValueType;
use promql_parser::parser::{Expr, Function};

use crate::labels::Labels;
use crate::storage::{Queryable, Sample, Series, StorageError, Timestamp};

pub use aggregate::format_go_float as format_value;
pub use eval::Limits;

/// What a query evaluates to, in the shape the HTTP API answers with.
#[derive(Debug, Clone)]
pub enum QueryValue {
    Scalar {
        t: Timestamp,
        v: f64,
    },
    String {
        t: Timestamp,
        v: String,
    },
    /// One sample per series, all at the evaluation time.
    Vector(Vec<InstantSample>),
    /// Series with their samples, for range queries and range-vector expressions.
    Matrix(Vec<Series>),
}

#[derive(Debug, Clone)]
pub struct InstantSample {
    pub labels: Labels,
    pub t: Timestamp,
    pub v: f64,
}

/// Errors in Prometheus's categories (its API's `errorType`), with its wording.
#[derive(Debug, thiserror::Error)]
pub enum PromqlError {
    #[error("{0}")]
    Parse(String),
    #[error("{0}")]
    Execution(String),
    #[error("query processing would load too many samples into memory in query execution")]
    TooManySamples,
    #[error("query timed out in {0}")]
    Timeout(&'static str),
    #[error("{0}")]
    Storage(#[from] StorageError),
}

impl PromqlError {
    /// The `errorType` of Prometheus's HTTP API.
    pub fn error_type(&self) -> &'static str {
        match self {
            PromqlError::Parse(_) => "bad_data",
            PromqlError::Execution(_) | PromqlError::TooManySamples | PromqlError::Storage(_) => "execution",
            PromqlError::Timeout(_) => "timeout",
        }
    }
}

/// Parses a PromQL expression. Functions Prometheus 2.x has and the parser crate has since
/// renamed (`holt_winters`) are registered first, so rule files written for 2.x still parse.
pub fn parse(query: &str) -> Result<Expr, PromqlError> {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        let _ = promql_parser::parser::register_extra_functions(vec![Function::new(
            "holt_winters",
            vec![ValueType::Matrix, ValueType::Scalar, ValueType::Scalar],
            0,
            ValueType::Vector,
            false,
        )]);
    });
    // The parser crate panics on a few inputs (an `@` time too large for a `Duration`, found
    // by tests/promql_fuzz.rs); a query is untrusted input, so a panic there is a parse error.
    match std::panic::catch_unwind(|| promql_parser::parser::parse(query)) {
        Ok(parsed) => parsed.map_err(PromqlError::Parse),
        Err(_) => Err(PromqlError::Parse(format!("cannot parse {query:?}: a number or duration is out of range"))),
    }
}

/// The matchers of a series selector (`up{job="x"}`), its metric name included.
pub fn selector_matchers(
    vs: &promql_parser::parser::VectorSelector,
) -> Result<Vec<crate::labels::Matcher>, PromqlError> {
    eval::Evaluator::matchers(vs)
}

/// Evaluation settings: Prometheus's defaults unless set.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// How far back an instant selector looks for a sample (`--query.lookback-delta`, 5 m).
    pub lookback: Duration,
    /// The step of a subquery that names none (the global evaluation interval, 1 m).
    pub default_subquery_step: Duration,
    pub limits: Limits,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            lookback: Duration::from_secs(300),
            default_subquery_step: Duration::from_secs(60),
            limits: Limits::default(),
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct Engine {
    pub options: EngineOptions,
}

impl Engine {
    pub fn new(options: EngineOptions) -> Self {
        Self { options }
    }

    /// Evaluates `expr` at one instant.
    pub fn instant(&self, storage: &dyn Queryable, expr: &Expr, t: Timestamp) -> Result<QueryValue, PromqlError> {
        let samples = std::cell::Cell::new(0);
        let mut ev = eval::Evaluator::new(storage, &self.options, t, t, 1, &samples);
        let value = ev.eval_top(expr)?;
        Ok(match value {
            eval::Val::Scalar(v) => QueryValue::Scalar { t, v: v.first().copied().unwrap_or(f64::NAN) },
            eval::Val::String(s) => QueryValue::String { t, v: s },
            eval::Val::Vector(series) => QueryValue::Vector(
                series
                    .into_iter()
                    .filter_map(|s| s.vals.first().copied().flatten().map(|v| InstantSample { labels: s.labels, t, v }))
                    .collect(),
            ),
            eval::Val::Matrix(m) => QueryValue::Matrix(m.windows_at(0)),
        })
    }

    /// Evaluates `expr` at every step from `start` to `end` (inclusive); the result is a matrix
    /// sorted by labels, as Prometheus's `query_range` answers.
    pub fn range(
        &self,
        storage: &dyn Queryable,
        expr: &Expr,
        start: Timestamp,
        end: Timestamp,
        step: i64,
    ) -> Result<QueryValue, PromqlError> {
        if step <= 0 {
            return Err(PromqlError::Parse(
                "zero or negative query resolution step widths are not accepted. Try a positive integer".into(),
            ));
        }
        if end < start {
            return Err(PromqlError::Parse("end timestamp must not be before start time".into()));
        }
        let steps = ((end - start) / step + 1) as usize;
        if steps > 11_000 {
            return Err(PromqlError::Parse(
                "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)"
                    .into(),
            ));
        }
        let samples = std::cell::Cell::new(0);
        let mut ev = eval::Evaluator::new(storage, &self.options, start, end, step, &samples);
        let value = ev.eval_top(expr)?;
        let ts = |i: usize| start + i as i64 * step;
        let mut out = match value {
            eval::Val::Scalar(v) => vec![Series {
                labels: Labels::new(),
                samples: v.iter().enumerate().map(|(i, v)| Sample { t: ts(i), v: *v }).collect(),
            }],
            eval::Val::Vector(series) => series
                .into_iter()
                .filter_map(|s| {
                    let samples: Vec<Sample> =
                        s.vals.iter().enumerate().filter_map(|(i, v)| v.map(|v| Sample { t: ts(i), v })).collect();
                    (!samples.is_empty()).then_some(Series { labels: s.labels, samples })
                })
                .collect(),
            eval::Val::String(_) | eval::Val::Matrix(_) => {
                return Err(PromqlError::Parse(format!(
                    "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                    if matches!(expr.value_type(), ValueType::String) { "string" } else { "range vector" }
                )));
            }
        };
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(QueryValue::Matrix(out))
    }
}

/// Milliseconds since the epoch of a time the parser gives as `SystemTime` (`@` modifiers).
pub(crate) fn system_time_ms(t: &SystemTime) -> Timestamp {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

pub(crate) fn duration_ms(d: &Duration) -> i64 {
    d.as_millis() as i64
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_parser_panic_is_a_parse_error() {
        for q in ["up @ 1e308", "up @ -1e308", "up @ NaN", "up @ Inf", "up offset 1e300y", "up[1e308s]"] {
            // Any answer but a panic: some are refused, some parse.
            let _ = super::parse(q);
        }
    }
}
