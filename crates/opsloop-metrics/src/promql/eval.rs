//! The evaluator: walks the expression tree once for all steps of a query.

use std::cell::Cell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use promql_parser::parser::{AtModifier, Expr, MatrixSelector, Offset, SubqueryExpr, UnaryExpr, VectorSelector};

use super::{EngineOptions, PromqlError, duration_ms, system_time_ms};
use crate::labels::{Labels, METRIC_NAME, Matcher};
use crate::storage::{Queryable, Sample, Series, Timestamp, is_stale_nan};

/// What one query may cost, so that no query takes the server down.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Samples loaded from storage, summed over every selector (`--query.max-samples`).
    pub max_samples: usize,
    pub timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self { max_samples: 50_000_000, timeout: Duration::from_secs(120) }
    }
}

/// A series of an instant-vector expression: one optional value per step.
#[derive(Debug, Clone)]
pub(crate) struct StepSeries {
    pub labels: Labels,
    pub vals: Vec<Option<f64>>,
}

/// A range-vector expression: series (staleness markers removed) and, per step, where the
/// window ends; a window is `[end - range, end]`, both ends included as in Prometheus 2.x.
#[derive(Debug, Clone)]
pub(crate) struct MatrixVal {
    pub series: Vec<Series>,
    pub range: i64,
    pub ends: Vec<Timestamp>,
}

impl MatrixVal {
    pub fn window(&self, series: usize, step: usize) -> &[Sample] {
        let end = self.ends[step];
        let samples = &self.series[series].samples;
        let lo = samples.partition_point(|s| s.t < end - self.range);
        let hi = samples.partition_point(|s| s.t <= end);
        &samples[lo..hi.max(lo)]
    }

    /// The windows of one step as series: what an instant query of a range vector returns.
    pub fn windows_at(&self, step: usize) -> Vec<Series> {
        (0..self.series.len())
            .filter_map(|i| {
                let w = self.window(i, step);
                (!w.is_empty()).then(|| Series { labels: self.series[i].labels.clone(), samples: w.to_vec() })
            })
            .collect()
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Val {
    Scalar(Vec<f64>),
    String(String),
    Vector(Vec<StepSeries>),
    Matrix(MatrixVal),
}

pub(crate) struct Evaluator<'a> {
    pub storage: &'a dyn Queryable,
    pub opts: &'a EngineOptions,
    pub start: Timestamp,
    pub step: i64,
    pub steps: usize,
    /// The outermost query's range, which `@ start()` and `@ end()` name inside subqueries too.
    pub query_start: Timestamp,
    pub query_end: Timestamp,
    /// Samples loaded so far by this query, subqueries included.
    samples: &'a Cell<usize>,
    deadline: Instant,
}

impl<'a> Evaluator<'a> {
    pub fn new(
        storage: &'a dyn Queryable,
        opts: &'a EngineOptions,
        start: Timestamp,
        end: Timestamp,
        step: i64,
        samples: &'a Cell<usize>,
    ) -> Evaluator<'a> {
        Evaluator {
            storage,
            opts,
            start,
            step: step.max(1),
            steps: ((end - start) / step.max(1) + 1).max(1) as usize,
            query_start: start,
            query_end: end,
            samples,
            deadline: Instant::now() + opts.limits.timeout,
        }
    }

    pub fn eval_top(&mut self, expr: &Expr) -> Result<Val, PromqlError> {
        self.eval(expr)
    }

    pub fn ts(&self, step: usize) -> Timestamp {
        self.start + step as i64 * self.step
    }

    fn check_deadline(&self) -> Result<(), PromqlError> {
        if Instant::now() > self.deadline {
            return Err(PromqlError::Timeout("query execution"));
        }
        Ok(())
    }

    fn count_samples(&self, n: usize) -> Result<(), PromqlError> {
        let total = self.samples.get().saturating_add(n);
        self.samples.set(total);
        if total > self.opts.limits.max_samples {
            return Err(PromqlError::TooManySamples);
        }
        Ok(())
    }

    pub fn eval(&mut self, expr: &Expr) -> Result<Val, PromqlError> {
        self.check_deadline()?;
        match expr {
            Expr::NumberLiteral(n) => Ok(Val::Scalar(vec![n.val; self.steps])),
            Expr::StringLiteral(s) => Ok(Val::String(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr),
            Expr::Unary(u) => self.eval_unary(u),
            Expr::VectorSelector(vs) => self.eval_vector_selector(vs, false).map(Val::Vector),
            Expr::MatrixSelector(ms) => self.eval_matrix_selector(ms).map(Val::Matrix),
            Expr::Subquery(sq) => self.eval_subquery(sq).map(Val::Matrix),
            Expr::Aggregate(a) => super::aggregate::eval(self, a),
            Expr::Binary(b) => super::binary::eval(self, b),
            Expr::Call(c) => super::functions::eval(self, c),
            Expr::Extension(_) => Err(PromqlError::Execution("unsupported expression".into())),
        }
    }

    /// Evaluates an expression that must be an instant vector.
    pub fn eval_vector(&mut self, expr: &Expr) -> Result<Vec<StepSeries>, PromqlError> {
        match self.eval(expr)? {
            Val::Vector(v) => Ok(v),
            other => Err(PromqlError::Execution(format!("expected instant vector, got {}", kind(&other)))),
        }
    }

    pub fn eval_scalar(&mut self, expr: &Expr) -> Result<Vec<f64>, PromqlError> {
        match self.eval(expr)? {
            Val::Scalar(v) => Ok(v),
            other => Err(PromqlError::Execution(format!("expected scalar, got {}", kind(&other)))),
        }
    }

    pub fn eval_matrix(&mut self, expr: &Expr) -> Result<MatrixVal, PromqlError> {
        match self.eval(expr)? {
            Val::Matrix(m) => Ok(m),
            other => Err(PromqlError::Execution(format!("expected range vector, got {}", kind(&other)))),
        }
    }

    fn eval_unary(&mut self, u: &UnaryExpr) -> Result<Val, PromqlError> {
        match self.eval(&u.expr)? {
            Val::Scalar(v) => Ok(Val::Scalar(v.into_iter().map(|v| -v).collect())),
            Val::Vector(series) => {
                let out = series
                    .into_iter()
                    .map(|s| StepSeries {
                        labels: s.labels.without_metric_name(),
                        vals: s.vals.into_iter().map(|v| v.map(|v| -v)).collect(),
                    })
                    .collect();
                Ok(Val::Vector(merge_same_labels(out)?))
            }
            other => Err(PromqlError::Execution(format!(
                "unary expression only allowed on expressions of type scalar or instant vector, got {}",
                kind(&other)
            ))),
        }
    }

    /// The time each step reads at: the step's own time, or the `@` time, minus the offset.
    pub fn ref_times(&self, at: &Option<AtModifier>, offset: &Option<Offset>) -> Vec<Timestamp> {
        let off = match offset {
            None => 0,
            Some(Offset::Pos(d)) => duration_ms(d),
            Some(Offset::Neg(d)) => -duration_ms(d),
        };
        let fixed = match at {
            None => None,
            Some(AtModifier::Start) => Some(self.query_start),
            Some(AtModifier::End) => Some(self.query_end),
            Some(AtModifier::At(t)) => Some(system_time_ms(t)),
        };
        (0..self.steps).map(|i| fixed.unwrap_or_else(|| self.ts(i)) - off).collect()
    }

    pub fn matchers(vs: &VectorSelector) -> Result<Vec<Matcher>, PromqlError> {
        use promql_parser::label::MatchOp;
        if !vs.matchers.or_matchers.is_empty() {
            return Err(PromqlError::Execution("selectors with \"or\" are not supported".into()));
        }
        let mut out = Vec::with_capacity(vs.matchers.matchers.len() + 1);
        if let Some(name) = &vs.name {
            out.push(Matcher::equal(METRIC_NAME, name.clone()));
        }
        for m in &vs.matchers.matchers {
            let matcher = match &m.op {
                MatchOp::Equal => Matcher::equal(m.name.clone(), m.value.clone()),
                MatchOp::NotEqual => Matcher::not_equal(m.name.clone(), m.value.clone()),
                MatchOp::Re(_) => {
                    Matcher::regex(m.name.clone(), &m.value, false).map_err(|e| PromqlError::Parse(e.to_string()))?
                }
                MatchOp::NotRe(_) => {
                    Matcher::regex(m.name.clone(), &m.value, true).map_err(|e| PromqlError::Parse(e.to_string()))?
                }
            };
            out.push(matcher);
        }
        Ok(out)
    }

    fn select(&self, vs: &VectorSelector, mint: Timestamp, maxt: Timestamp) -> Result<Vec<Series>, PromqlError> {
        let matchers = Self::matchers(vs)?;
        let series = self.storage.select(&matchers, mint, maxt)?;
        self.count_samples(series.iter().map(|s| s.samples.len()).sum())?;
        Ok(series)
    }

    /// An instant selector: per step, the newest sample within the lookback window, unless it is
    /// a staleness marker. With `timestamps`, the value is the sample's time in seconds (what
    /// `timestamp()` of a selector returns).
    pub fn eval_vector_selector(
        &mut self,
        vs: &VectorSelector,
        timestamps: bool,
    ) -> Result<Vec<StepSeries>, PromqlError> {
        let refs = self.ref_times(&vs.at, &vs.offset);
        let lookback = duration_ms(&self.opts.lookback);
        let (lo, hi) = min_max(&refs);
        let series = self.select(vs, lo - lookback, hi)?;
        let mut out = Vec::with_capacity(series.len());
        for s in series {
            let mut any = false;
            let vals: Vec<Option<f64>> = refs
                .iter()
                .map(|&r| {
                    let idx = s.samples.partition_point(|x| x.t <= r);
                    let sample = idx.checked_sub(1).map(|i| s.samples[i])?;
                    if sample.t < r - lookback || is_stale_nan(sample.v) {
                        return None;
                    }
                    any = true;
                    Some(if timestamps { sample.t as f64 / 1000.0 } else { sample.v })
                })
                .collect();
            if any {
                out.push(StepSeries { labels: s.labels, vals });
            }
        }
        Ok(out)
    }

    fn eval_matrix_selector(&mut self, ms: &MatrixSelector) -> Result<MatrixVal, PromqlError> {
        let ends = self.ref_times(&ms.vs.at, &ms.vs.offset);
        let range = duration_ms(&ms.range);
        let (lo, hi) = min_max(&ends);
        let mut series = self.select(&ms.vs, lo - range, hi)?;
        for s in &mut series {
            s.samples.retain(|x| !is_stale_nan(x.v));
        }
        series.retain(|s| !s.samples.is_empty());
        Ok(MatrixVal { series, range, ends })
    }

    /// A subquery: the inner expression evaluated at its own step, aligned to multiples of the
    /// step (as Prometheus aligns it, so results do not move with the query's start), then read
    /// through windows like a range selector.
    fn eval_subquery(&mut self, sq: &SubqueryExpr) -> Result<MatrixVal, PromqlError> {
        let ends = self.ref_times(&sq.at, &sq.offset);
        let range = duration_ms(&sq.range);
        let step = sq.step.as_ref().map(duration_ms).unwrap_or_else(|| duration_ms(&self.opts.default_subquery_step));
        if step <= 0 {
            return Err(PromqlError::Execution("subquery step must be positive".into()));
        }
        let (lo, hi) = min_max(&ends);
        let first = lo - range;
        // Go's integer division truncates toward zero; so does Rust's, which keeps negative
        // times aligned the way Prometheus aligns them.
        let mut start = step * (first / step);
        if start < first {
            start += step;
        }
        let mut child = Evaluator {
            storage: self.storage,
            opts: self.opts,
            start,
            step,
            steps: if hi < start { 0 } else { ((hi - start) / step + 1) as usize },
            query_start: self.query_start,
            query_end: self.query_end,
            samples: self.samples,
            deadline: self.deadline,
        };
        let series = if child.steps == 0 {
            Vec::new()
        } else {
            let inner = child.eval(&sq.expr)?;
            let ts = |i: usize| start + i as i64 * step;
            match inner {
                Val::Scalar(v) => vec![Series {
                    labels: Labels::new(),
                    samples: v.iter().enumerate().map(|(i, v)| Sample { t: ts(i), v: *v }).collect(),
                }],
                Val::Vector(v) => v
                    .into_iter()
                    .map(|s| Series {
                        labels: s.labels,
                        samples: s
                            .vals
                            .iter()
                            .enumerate()
                            .filter_map(|(i, v)| v.map(|v| Sample { t: ts(i), v }))
                            .collect(),
                    })
                    .filter(|s| !s.samples.is_empty())
                    .collect(),
                other => {
                    return Err(PromqlError::Execution(format!(
                        "subquery is only allowed on instant vector, got {}",
                        kind(&other)
                    )));
                }
            }
        };
        self.count_samples(series.iter().map(|s| s.samples.len()).sum())?;
        Ok(MatrixVal { series, range, ends })
    }
}

fn min_max(ts: &[Timestamp]) -> (Timestamp, Timestamp) {
    let lo = ts.iter().copied().min().unwrap_or(0);
    let hi = ts.iter().copied().max().unwrap_or(0);
    (lo, hi)
}

pub(crate) fn kind(v: &Val) -> &'static str {
    match v {
        Val::Scalar(_) => "scalar",
        Val::String(_) => "string",
        Val::Vector(_) => "instant vector",
        Val::Matrix(_) => "range vector",
    }
}

/// Merges series whose labels became equal (a function dropped the metric name, say). Two that
/// both have a value at one step are the error Prometheus reports for it.
pub(crate) fn merge_same_labels(series: Vec<StepSeries>) -> Result<Vec<StepSeries>, PromqlError> {
    let mut index: HashMap<Labels, usize> = HashMap::with_capacity(series.len());
    let mut out: Vec<StepSeries> = Vec::with_capacity(series.len());
    for s in series {
        if let Some(&i) = index.get(&s.labels) {
            let target = &mut out[i];
            for (a, b) in target.vals.iter_mut().zip(s.vals) {
                if b.is_some() {
                    if a.is_some() {
                        return Err(PromqlError::Execution(
                            "vector cannot contain metrics with the same labelset".into(),
                        ));
                    }
                    *a = b;
                }
            }
        } else {
            index.insert(s.labels.clone(), out.len());
            out.push(s);
        }
    }
    Ok(out)
}
