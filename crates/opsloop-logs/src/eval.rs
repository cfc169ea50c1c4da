//! The LogQL evaluator, over any [`LogSource`] (the store, or [`MemSource`] in tests).
//!
//! Log queries return streams keyed by their labels after the pipeline. Metric queries are
//! evaluated step by step: each range aggregation first turns the selected entries into
//! samples per series (labels after the pipeline), then, for every step `t`, aggregates the
//! samples in `(t - offset - range, t - offset]` as Loki does. Literal line filters at the
//! head of the pipeline are handed to the source, which may skip whole blocks with them.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::ControlFlow;

use memchr::memmem;

use crate::labels::{Labels, MatchOp, Matcher};
use crate::logql::ast::*;
use crate::logql::parser::{ParseError, parse_expr};
use crate::pipeline::{ERROR_DETAILS_LABEL, ERROR_LABEL, EntryLabels, PipelineErr, process, unwrap_value};
use crate::push::PushStream;

/// One entry as a source hands it over.
#[derive(Debug, Clone, Copy)]
pub struct EntryRef<'a> {
    pub ts: i64,
    pub line: &'a str,
    pub metadata: &'a [(String, String)],
}

/// A stream a source selected.
#[derive(Debug, Clone)]
pub struct SourceStream {
    /// The source's own handle for the stream.
    pub id: u64,
    pub labels: Labels,
}

/// Literal substrings every line the pipeline keeps must contain: a source may skip lines (and
/// blocks) without them. It is only a hint: the pipeline filters again.
#[derive(Debug, Clone, Default)]
pub struct ScanHint {
    pub required: Vec<memmem::Finder<'static>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("i/o error reading logs: {0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt chunk: {0}")]
    Corrupt(String),
}

/// Where the evaluator reads logs from.
pub trait LogSource {
    /// Streams matching every matcher that may have entries in `[start, end)`.
    fn select(&self, matchers: &[Matcher], start: i64, end: i64) -> Result<Vec<SourceStream>, SourceError>;

    /// Calls `f` with the stream's entries in `[start, end)`, in time order, until it breaks.
    fn scan(
        &self,
        stream: &SourceStream,
        start: i64,
        end: i64,
        hint: &ScanHint,
        f: &mut dyn FnMut(EntryRef<'_>) -> ControlFlow<()>,
    ) -> Result<(), SourceError>;
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error(
        "pipeline error: '{error}' for series: '{series}'.\nUse a label filter to intentionally skip this error. (e.g | __error__!=\"{error}\").\nTo skip all potential errors you can match empty errors.(e.g __error__=\"\")\nThe label filter can also be specified after unwrap. (e.g | unwrap latency | __error__=\"\" )"
    )]
    Pipeline { error: String, series: String },
    #[error(
        "found duplicate series for the match group {0} on the {1} hand-side of the operation; many-to-many matching not allowed: matching labels must be unique on one side"
    )]
    ManyToMany(String, &'static str),
    #[error("multiple matches for labels: grouping labels must ensure unique matches")]
    DuplicateOutput,
    #[error("invalid query: {0}")]
    Invalid(String),
    #[error("the step must be greater than zero")]
    BadStep,
    #[error("the query would return more than {0} points per series; increase the step")]
    TooManySteps(usize),
}

/// Log query direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Direction {
    Forward,
    #[default]
    Backward,
}

/// A stream in a log query's result.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamResult {
    pub labels: Labels,
    /// In the query's direction.
    pub entries: Vec<(i64, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub labels: Labels,
    pub t: i64,
    pub v: f64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub labels: Labels,
    pub points: Vec<(i64, f64)>,
}

/// What a query returns (Loki's `resultType`: streams, vector, matrix, scalar).
#[derive(Debug, Clone, PartialEq)]
pub enum QueryResult {
    Streams(Vec<StreamResult>),
    Vector(Vec<Sample>),
    Matrix(Vec<Series>),
    Scalar { t: i64, v: f64 },
}

/// Parameters of a query.
#[derive(Debug, Clone)]
pub struct QueryParams {
    /// Unix ns. For log queries the range is `[start, end)`; for an instant query both are the
    /// evaluation time.
    pub start: i64,
    pub end: i64,
    /// ns; 0 for instant queries.
    pub step: i64,
    pub limit: usize,
    pub direction: Direction,
}

/// Points per series a range query may compute (Loki refuses more than 11,000).
pub const MAX_POINTS: usize = 11_000;

/// Parses and runs a range query (`/loki/api/v1/query_range`).
pub fn query_range(src: &dyn LogSource, q: &str, p: &QueryParams) -> Result<QueryResult, EvalError> {
    match parse_expr(q)? {
        Expr::Log(l) => Ok(QueryResult::Streams(eval_log(src, &l, p.start, p.end, p.limit, p.direction)?)),
        Expr::Metric(m) => eval_range(src, &m, p.start, p.end, p.step),
    }
}

/// Parses and runs an instant query (`/loki/api/v1/query`) at `p.end`.
pub fn query_instant(src: &dyn LogSource, q: &str, p: &QueryParams) -> Result<QueryResult, EvalError> {
    match parse_expr(q)? {
        // An instant log query looks back from `end`, as Loki's does over its default range.
        Expr::Log(l) => Ok(QueryResult::Streams(eval_log(src, &l, p.start, p.end, p.limit, p.direction)?)),
        Expr::Metric(m) => eval_instant(src, &m, p.end),
    }
}

fn required_literals(pipeline: &[Stage]) -> ScanHint {
    let mut hint = ScanHint::default();
    for s in pipeline {
        match s {
            Stage::LineFilter(f) if f.values.len() == 1 && !f.op.is_negative() => match &f.matchers[0] {
                LineMatcher::Literal(fd) if !fd.needle().is_empty() => hint.required.push(fd.clone()),
                LineMatcher::Regex { required: Some(r), .. } => hint.required.push(r.clone()),
                _ => {}
            },
            Stage::LineFilter(_) => {}
            // Anything else may rewrite the line (line_format, unpack, decolorize): later filters
            // see another line.
            _ => break,
        }
    }
    hint
}

fn entry_labels(stream: &Labels, metadata: &[(String, String)]) -> Labels {
    if metadata.is_empty() {
        return stream.clone();
    }
    let mut l = stream.clone();
    for (k, v) in metadata {
        l.set(k, v);
    }
    l
}

/// Runs a log query: entries in `[start, end)`, at most `limit` (0: no limit) in `direction`.
pub fn eval_log(
    src: &dyn LogSource,
    expr: &LogExpr,
    start: i64,
    end: i64,
    limit: usize,
    direction: Direction,
) -> Result<Vec<StreamResult>, EvalError> {
    let streams = src.select(&expr.matchers, start, end)?;
    let hint = required_literals(&expr.pipeline);
    let limit = if limit == 0 { usize::MAX } else { limit };
    // Every stream keeps its own best `limit` entries (the first ones forward, the last ones
    // backward); the global cut happens once all are in. Memory is bounded by streams × limit.
    let mut all: Vec<(Labels, i64, String)> = Vec::new();
    for s in &streams {
        let mut kept: Vec<(Labels, i64, String)> = Vec::new();
        let mut window: VecDeque<(Labels, i64, String)> = VecDeque::new();
        src.scan(s, start, end, &hint, &mut |e| {
            let base = &s.labels;
            let mut labels = EntryLabels { base, current: entry_labels(base, e.metadata) };
            if let Some(line) = process(&expr.pipeline, e.ts, e.line, &mut labels) {
                let item = (labels.current, e.ts, line.into_owned());
                match direction {
                    Direction::Forward => {
                        kept.push(item);
                        if kept.len() >= limit {
                            return ControlFlow::Break(());
                        }
                    }
                    Direction::Backward => {
                        window.push_back(item);
                        if window.len() > limit {
                            window.pop_front();
                        }
                    }
                }
            }
            ControlFlow::Continue(())
        })?;
        all.extend(kept);
        all.extend(window);
    }
    // The global cut: the `limit` first (or last) entries over all streams; ties broken by
    // labels so that results are stable.
    all.sort_by(|a, b| a.1.cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
    if direction == Direction::Backward {
        all.reverse();
    }
    all.truncate(limit);
    let mut out: BTreeMap<Labels, Vec<(i64, String)>> = BTreeMap::new();
    for (l, ts, line) in all {
        out.entry(l).or_default().push((ts, line));
    }
    let mut res: Vec<StreamResult> =
        out.into_iter().map(|(labels, entries)| StreamResult { labels, entries }).collect();
    res.sort_by(|a, b| a.labels.cmp(&b.labels));
    Ok(res)
}

// --- metric queries ------------------------------------------------------------------------

/// One step's vector.
type StepVec = Vec<(Labels, f64)>;

/// A value per step: a scalar, or a vector.
enum Stepped {
    Scalar(Vec<f64>),
    Vector(Vec<StepVec>),
}

/// Runs a metric query at one instant.
pub fn eval_instant(src: &dyn LogSource, expr: &MetricExpr, t: i64) -> Result<QueryResult, EvalError> {
    let steps = [t];
    Ok(match eval_metric(src, expr, &steps)? {
        Stepped::Scalar(v) => QueryResult::Scalar { t, v: v.first().copied().unwrap_or(f64::NAN) },
        Stepped::Vector(mut v) => {
            let vec = v.pop().unwrap_or_default();
            let mut samples: Vec<Sample> = vec.into_iter().map(|(labels, v)| Sample { labels, t, v }).collect();
            // sort/sort_desc define the order; everything else is sorted by labels for stable output.
            match outer_sort(expr) {
                Some(desc) => samples.sort_by(|a, b| {
                    let o = a.v.partial_cmp(&b.v).unwrap_or(std::cmp::Ordering::Equal);
                    if desc { o.reverse() } else { o }
                }),
                None => samples.sort_by(|a, b| a.labels.cmp(&b.labels)),
            }
            QueryResult::Vector(samples)
        }
    })
}

fn outer_sort(e: &MetricExpr) -> Option<bool> {
    match e {
        MetricExpr::Vector(v) if v.op == VecOp::Sort => Some(false),
        MetricExpr::Vector(v) if v.op == VecOp::SortDesc => Some(true),
        MetricExpr::Paren(e) => outer_sort(e),
        _ => None,
    }
}

/// Runs a metric query at every step from `start` to `end` inclusive.
pub fn eval_range(
    src: &dyn LogSource,
    expr: &MetricExpr,
    start: i64,
    end: i64,
    step: i64,
) -> Result<QueryResult, EvalError> {
    if step <= 0 {
        return Err(EvalError::BadStep);
    }
    if end < start {
        return Err(EvalError::Invalid("end timestamp must not be before start time".into()));
    }
    let n = ((end - start) / step) as usize + 1;
    if n > MAX_POINTS {
        return Err(EvalError::TooManySteps(MAX_POINTS));
    }
    let steps: Vec<i64> = (0..n).map(|i| start + i as i64 * step).collect();
    let mut series: BTreeMap<Labels, Vec<(i64, f64)>> = BTreeMap::new();
    match eval_metric(src, expr, &steps)? {
        Stepped::Scalar(v) => {
            series.insert(Labels::new(), steps.iter().copied().zip(v).collect());
        }
        Stepped::Vector(vs) => {
            for (t, vec) in steps.iter().zip(vs) {
                for (l, v) in vec {
                    series.entry(l).or_default().push((*t, v));
                }
            }
        }
    }
    Ok(QueryResult::Matrix(series.into_iter().map(|(labels, points)| Series { labels, points }).collect()))
}

fn eval_metric(src: &dyn LogSource, e: &MetricExpr, steps: &[i64]) -> Result<Stepped, EvalError> {
    Ok(match e {
        MetricExpr::Literal(v) => Stepped::Scalar(vec![*v; steps.len()]),
        MetricExpr::VectorLit(v) => Stepped::Vector(steps.iter().map(|_| vec![(Labels::new(), *v)]).collect()),
        MetricExpr::Paren(inner) => eval_metric(src, inner, steps)?,
        MetricExpr::Range(r) => Stepped::Vector(eval_range_agg(src, r, steps)?),
        MetricExpr::Vector(v) => {
            let inner = match eval_metric(src, &v.expr, steps)? {
                Stepped::Vector(x) => x,
                Stepped::Scalar(_) => {
                    return Err(EvalError::Invalid(format!("{} expects a vector, not a scalar", v.op.as_str())));
                }
            };
            let mut out = Vec::with_capacity(inner.len());
            for vec in inner {
                out.push(vector_agg(v, vec)?);
            }
            Stepped::Vector(out)
        }
        MetricExpr::Binary(b) => {
            let l = eval_metric(src, &b.lhs, steps)?;
            let r = eval_metric(src, &b.rhs, steps)?;
            binary(b, l, r)?
        }
        MetricExpr::LabelReplace(lr) => match eval_metric(src, &lr.expr, steps)? {
            Stepped::Scalar(_) => return Err(EvalError::Invalid("label_replace expects a vector".into())),
            Stepped::Vector(vs) => Stepped::Vector(
                vs.into_iter()
                    .map(|vec| {
                        vec.into_iter()
                            .map(|(mut l, v)| {
                                let srcv = l.get(&lr.src).unwrap_or("").to_string();
                                if let Some(caps) = lr.re.captures(&srcv) {
                                    let mut dst = String::new();
                                    caps.expand(&lr.replacement, &mut dst);
                                    l.set(&lr.dst, &dst);
                                }
                                (l, v)
                            })
                            .collect()
                    })
                    .collect(),
            ),
        },
    })
}

/// Samples of one series, sorted by time.
type Samples = Vec<(i64, f64)>;

fn eval_range_agg(src: &dyn LogSource, r: &RangeAgg, steps: &[i64]) -> Result<Vec<StepVec>, EvalError> {
    let (Some(&first), Some(&last)) = (steps.first(), steps.last()) else {
        return Ok(Vec::new());
    };
    // The windows are left-open: (t - offset - range, t - offset]; the source's interval is
    // half-open [start, end), hence the +1 ns on both ends.
    let start = first - r.offset - r.range + 1;
    let end = last - r.offset + 1;
    let streams = src.select(&r.log.matchers, start, end)?;
    let hint = required_literals(&r.log.pipeline);
    let mut series: HashMap<Labels, Samples> = HashMap::new();
    for s in &streams {
        let mut err: Option<EvalError> = None;
        src.scan(s, start, end, &hint, &mut |e| {
            let base = &s.labels;
            let mut labels = EntryLabels { base, current: entry_labels(base, e.metadata) };
            let Some(line) = process(&r.log.pipeline, e.ts, e.line, &mut labels) else {
                return ControlFlow::Continue(());
            };
            let value = match &r.unwrap {
                None => match r.op {
                    RangeOp::BytesOverTime | RangeOp::BytesRate => line.len() as f64,
                    _ => 1.0,
                },
                Some(u) => {
                    let raw = labels.current.get(&u.label).unwrap_or("").to_string();
                    // A line without the label yields no sample (Loki issue 6713).
                    if raw.is_empty() {
                        return ControlFlow::Continue(());
                    }
                    let v = match unwrap_value(&raw, u.conv) {
                        Ok(v) => v,
                        Err(details) => {
                            labels.set_err(PipelineErr::SampleExtraction, &details);
                            0.0
                        }
                    };
                    for f in &u.post_filters {
                        if !crate::pipeline::label_filter(f, &mut labels) {
                            return ControlFlow::Continue(());
                        }
                    }
                    labels.current.remove(&u.label);
                    v
                }
            };
            if let Some(errv) = labels.current.get(ERROR_LABEL) {
                let mut shown = labels.current.clone();
                shown.remove(ERROR_DETAILS_LABEL);
                err = Some(EvalError::Pipeline { error: errv.to_string(), series: shown.to_string() });
                return ControlFlow::Break(());
            }
            let mut key = labels.current;
            if let Some(g) = &r.grouping {
                key = group_labels(&key, g);
            }
            series.entry(key).or_default().push((e.ts, value));
            ControlFlow::Continue(())
        })?;
        if let Some(e) = err {
            return Err(e);
        }
    }
    for v in series.values_mut() {
        v.sort_by_key(|s| s.0);
    }
    let range_secs = r.range as f64 / 1e9;
    let mut out = Vec::with_capacity(steps.len());
    for &t in steps {
        let hi = t - r.offset;
        let lo = hi - r.range;
        let mut vec: StepVec = Vec::new();
        let mut any = false;
        for (labels, samples) in &series {
            let a = samples.partition_point(|s| s.0 <= lo);
            let b = samples.partition_point(|s| s.0 <= hi);
            let w = &samples[a..b];
            if w.is_empty() {
                continue;
            }
            any = true;
            if r.op == RangeOp::AbsentOverTime {
                continue;
            }
            if let Some(v) = range_fn(r, w, lo, hi, range_secs) {
                vec.push((labels.clone(), v));
            }
        }
        if r.op == RangeOp::AbsentOverTime && !any {
            let l = Labels::from_pairs(
                r.log.matchers.iter().filter(|m| m.op == MatchOp::Eq).map(|m| (m.name.clone(), m.value.clone())),
            );
            vec.push((l, 1.0));
        }
        out.push(vec);
    }
    Ok(out)
}

fn range_fn(r: &RangeAgg, w: &[(i64, f64)], lo: i64, hi: i64, range_secs: f64) -> Option<f64> {
    let n = w.len() as f64;
    let sum = || w.iter().map(|s| s.1).sum::<f64>();
    let var = || {
        // Welford-style mean then variance (population), as Prometheus.
        let mean = sum() / n;
        w.iter().map(|s| (s.1 - mean) * (s.1 - mean)).sum::<f64>() / n
    };
    Some(match r.op {
        RangeOp::CountOverTime => n,
        RangeOp::Rate if r.unwrap.is_none() => n / range_secs,
        RangeOp::Rate => sum() / range_secs,
        RangeOp::BytesOverTime => sum(),
        RangeOp::BytesRate => sum() / range_secs,
        RangeOp::SumOverTime => sum(),
        RangeOp::AvgOverTime => sum() / n,
        RangeOp::MaxOverTime => w.iter().map(|s| s.1).fold(f64::NEG_INFINITY, f64::max),
        RangeOp::MinOverTime => w.iter().map(|s| s.1).fold(f64::INFINITY, f64::min),
        RangeOp::FirstOverTime => w[0].1,
        RangeOp::LastOverTime => w[w.len() - 1].1,
        RangeOp::StdvarOverTime => var(),
        RangeOp::StddevOverTime => var().sqrt(),
        RangeOp::QuantileOverTime => {
            let mut vals: Vec<f64> = w.iter().map(|s| s.1).collect();
            quantile(r.param.unwrap_or(0.5), &mut vals)
        }
        RangeOp::RateCounter => extrapolated_rate(w, lo, hi)?,
        RangeOp::AbsentOverTime => return None,
    })
}

/// Prometheus's quantile: linear interpolation between the closest ranks.
fn quantile(q: f64, vals: &mut [f64]) -> f64 {
    if vals.is_empty() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    vals.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = vals.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0) as usize;
    let upper = (rank.floor() as usize + 1).min(vals.len() - 1);
    let weight = rank - rank.floor();
    vals[lower] * (1.0 - weight) + vals[upper] * weight
}

/// Prometheus's `rate` over counter samples (resets handled, extrapolated to the window).
fn extrapolated_rate(w: &[(i64, f64)], lo: i64, hi: i64) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let mut result = w[w.len() - 1].1 - w[0].1;
    let mut prev = w[0].1;
    for s in &w[1..] {
        if s.1 < prev {
            result += prev;
        }
        prev = s.1;
    }
    let range_start = lo as f64 / 1e9;
    let range_end = hi as f64 / 1e9;
    let first_t = w[0].0 as f64 / 1e9;
    let last_t = w[w.len() - 1].0 as f64 / 1e9;
    let mut dur_to_start = first_t - range_start;
    let dur_to_end = range_end - last_t;
    let sampled = last_t - first_t;
    let avg = sampled / (w.len() - 1) as f64;
    if result > 0.0 && w[0].1 >= 0.0 {
        let dur_to_zero = sampled * (w[0].1 / result);
        if dur_to_zero < dur_to_start {
            dur_to_start = dur_to_zero;
        }
    }
    let threshold = avg * 1.1;
    let mut interval = sampled;
    interval += if dur_to_start < threshold { dur_to_start } else { avg / 2.0 };
    interval += if dur_to_end < threshold { dur_to_end } else { avg / 2.0 };
    if sampled == 0.0 {
        return None;
    }
    result *= interval / sampled;
    Some(result / (range_end - range_start))
}

fn group_labels(l: &Labels, g: &Grouping) -> Labels {
    let mut out = l.clone();
    if g.without {
        out.retain(|k, _| !g.labels.iter().any(|x| x == k));
    } else {
        out.retain(|k, _| g.labels.iter().any(|x| x == k));
    }
    out
}

fn vector_agg(v: &VectorAgg, vec: StepVec) -> Result<StepVec, EvalError> {
    let key_of = |l: &Labels| match &v.grouping {
        Some(g) => group_labels(l, g),
        None => Labels::new(),
    };
    match v.op {
        VecOp::Sort | VecOp::SortDesc => return Ok(vec),
        VecOp::Topk | VecOp::Bottomk => {
            let k = v.param.unwrap_or(1.0) as usize;
            let mut groups: BTreeMap<Labels, Vec<(Labels, f64)>> = BTreeMap::new();
            for (l, x) in vec {
                groups.entry(key_of(&l)).or_default().push((l, x));
            }
            let mut out = Vec::new();
            for (_, mut g) in groups {
                g.sort_by(|a, b| {
                    let o = a.1.partial_cmp(&b.1).unwrap_or(std::cmp::Ordering::Equal);
                    if v.op == VecOp::Topk { o.reverse() } else { o }
                });
                g.truncate(k);
                out.extend(g);
            }
            return Ok(out);
        }
        _ => {}
    }
    let mut groups: BTreeMap<Labels, Vec<f64>> = BTreeMap::new();
    for (l, x) in vec {
        groups.entry(key_of(&l)).or_default().push(x);
    }
    Ok(groups
        .into_iter()
        .map(|(l, xs)| {
            let n = xs.len() as f64;
            let sum: f64 = xs.iter().sum();
            let var = || {
                let mean = sum / n;
                xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n
            };
            let r = match v.op {
                VecOp::Sum => sum,
                VecOp::Avg => sum / n,
                VecOp::Count => n,
                VecOp::Min => xs.iter().copied().fold(f64::INFINITY, f64::min),
                VecOp::Max => xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                VecOp::Stdvar => var(),
                _ => var().sqrt(),
            };
            (l, r)
        })
        .collect())
}

fn arith(op: BinOp, a: f64, b: f64) -> Option<f64> {
    Some(match op {
        BinOp::Add => a + b,
        BinOp::Sub => a - b,
        BinOp::Mul => a * b,
        BinOp::Div => a / b,
        BinOp::Mod => a % b,
        BinOp::Pow => a.powf(b),
        BinOp::Cmp(c) => {
            if c.apply(a, b) {
                1.0
            } else {
                return None;
            }
        }
        BinOp::Or | BinOp::And | BinOp::Unless => return None,
    })
}

/// Applies a comparison or arithmetic operator; `None` drops the sample (a false filter).
fn apply(op: BinOp, a: f64, b: f64, return_bool: bool, keep_lhs: bool) -> Option<f64> {
    if let BinOp::Cmp(c) = op {
        let t = c.apply(a, b);
        return if return_bool {
            Some(f64::from(u8::from(t)))
        } else if t {
            Some(if keep_lhs { a } else { b })
        } else {
            None
        };
    }
    arith(op, a, b)
}

fn signature(l: &Labels, m: Option<&VectorMatching>) -> Labels {
    match m {
        Some(VectorMatching { on: true, labels, .. }) => {
            let mut out = l.clone();
            out.retain(|k, _| labels.iter().any(|x| x == k));
            out
        }
        Some(VectorMatching { on: false, labels, .. }) => {
            let mut out = l.clone();
            out.retain(|k, _| !labels.iter().any(|x| x == k));
            out
        }
        None => l.clone(),
    }
}

fn binary(b: &BinaryExpr, l: Stepped, r: Stepped) -> Result<Stepped, EvalError> {
    Ok(match (l, r) {
        (Stepped::Scalar(a), Stepped::Scalar(c)) => Stepped::Scalar(
            a.into_iter()
                .zip(c)
                .map(|(x, y)| {
                    if let BinOp::Cmp(cmp) = b.op {
                        f64::from(u8::from(cmp.apply(x, y)))
                    } else {
                        arith(b.op, x, y).unwrap_or(f64::NAN)
                    }
                })
                .collect(),
        ),
        (Stepped::Vector(vs), Stepped::Scalar(s)) => Stepped::Vector(
            vs.into_iter()
                .zip(s)
                .map(|(vec, x)| {
                    vec.into_iter()
                        .filter_map(|(l, v)| apply(b.op, v, x, b.return_bool, true).map(|r| (l, r)))
                        .collect()
                })
                .collect(),
        ),
        (Stepped::Scalar(s), Stepped::Vector(vs)) => Stepped::Vector(
            vs.into_iter()
                .zip(s)
                .map(|(vec, x)| {
                    vec.into_iter()
                        .filter_map(|(l, v)| apply(b.op, x, v, b.return_bool, false).map(|r| (l, r)))
                        .collect()
                })
                .collect(),
        ),
        (Stepped::Vector(ls), Stepped::Vector(rs)) => {
            let mut out = Vec::with_capacity(ls.len());
            for (lv, rv) in ls.into_iter().zip(rs) {
                out.push(vector_binary(b, lv, rv)?);
            }
            Stepped::Vector(out)
        }
    })
}

fn vector_binary(b: &BinaryExpr, lv: StepVec, rv: StepVec) -> Result<StepVec, EvalError> {
    let m = b.matching.as_ref();
    match b.op {
        BinOp::And => {
            let rs: std::collections::HashSet<Labels> = rv.iter().map(|(l, _)| signature(l, m)).collect();
            return Ok(lv.into_iter().filter(|(l, _)| rs.contains(&signature(l, m))).collect());
        }
        BinOp::Unless => {
            let rs: std::collections::HashSet<Labels> = rv.iter().map(|(l, _)| signature(l, m)).collect();
            return Ok(lv.into_iter().filter(|(l, _)| !rs.contains(&signature(l, m))).collect());
        }
        BinOp::Or => {
            let ls: std::collections::HashSet<Labels> = lv.iter().map(|(l, _)| signature(l, m)).collect();
            let mut out = lv;
            out.extend(rv.into_iter().filter(|(l, _)| !ls.contains(&signature(l, m))));
            return Ok(out);
        }
        _ => {}
    }
    let group = m.and_then(|m| m.group);
    // The "one" side is indexed by signature; it must be unique.
    let (one, many, many_is_left) = match group {
        Some(GroupSide::Right) => (lv, rv, false),
        _ => (rv, lv, true),
    };
    let mut index: HashMap<Labels, (Labels, f64)> = HashMap::new();
    for (l, v) in one {
        let sig = signature(&l, m);
        if index.insert(sig.clone(), (l, v)).is_some() {
            return Err(EvalError::ManyToMany(sig.to_string(), if many_is_left { "right" } else { "left" }));
        }
    }
    let mut out = Vec::new();
    let mut seen: std::collections::HashSet<Labels> = std::collections::HashSet::new();
    for (l, v) in many {
        let sig = signature(&l, m);
        let Some((ol, ov)) = index.get(&sig) else { continue };
        let (a, c) = if many_is_left { (v, *ov) } else { (*ov, v) };
        let Some(r) = apply(b.op, a, c, b.return_bool, true) else { continue };
        let labels = match (m, group) {
            (Some(mm), Some(_)) => {
                let mut out = l.clone();
                for inc in &mm.include {
                    match ol.get(inc) {
                        Some(x) => out.set(inc, x),
                        None => out.remove(inc),
                    }
                }
                out
            }
            // One-to-one: `on` keeps only the matching labels, `ignoring` drops the ignored
            // ones (Prometheus's resultMetric), except for filtering comparisons.
            (Some(mm), None) if !matches!(b.op, BinOp::Cmp(_)) || b.return_bool => {
                let mut out = l.clone();
                if mm.on {
                    out.retain(|k, _| mm.labels.iter().any(|x| x == k));
                } else {
                    out.retain(|k, _| !mm.labels.iter().any(|x| x == k));
                }
                out
            }
            _ => l.clone(),
        };
        if group.is_none() && !seen.insert(sig) {
            return Err(EvalError::ManyToMany(labels.to_string(), if many_is_left { "left" } else { "right" }));
        }
        out.push((labels, r));
    }
    Ok(out)
}

// --- an in-memory source -------------------------------------------------------------------

/// A [`LogSource`] over streams held in memory: for tests and small embedded uses.
#[derive(Debug, Default, Clone)]
pub struct MemSource {
    streams: Vec<PushStream>,
}

impl MemSource {
    /// Merges pushes into one entry list per label set, sorted by time.
    pub fn new(pushes: Vec<PushStream>) -> Self {
        let mut by: BTreeMap<Labels, PushStream> = BTreeMap::new();
        for p in pushes {
            by.entry(p.labels.clone())
                .or_insert_with(|| PushStream { labels: p.labels.clone(), entries: Vec::new() })
                .entries
                .extend(p.entries);
        }
        let mut streams: Vec<PushStream> = by.into_values().collect();
        for s in &mut streams {
            s.entries.sort_by_key(|e| e.ts);
        }
        MemSource { streams }
    }
}

impl LogSource for MemSource {
    fn select(&self, matchers: &[Matcher], start: i64, end: i64) -> Result<Vec<SourceStream>, SourceError> {
        Ok(self
            .streams
            .iter()
            .enumerate()
            .filter(|(_, s)| matchers.iter().all(|m| m.matches_labels(&s.labels)))
            .filter(|(_, s)| s.entries.iter().any(|e| e.ts >= start && e.ts < end))
            .map(|(i, s)| SourceStream { id: i as u64, labels: s.labels.clone() })
            .collect())
    }

    fn scan(
        &self,
        stream: &SourceStream,
        start: i64,
        end: i64,
        hint: &ScanHint,
        f: &mut dyn FnMut(EntryRef<'_>) -> ControlFlow<()>,
    ) -> Result<(), SourceError> {
        let Some(s) = self.streams.get(stream.id as usize) else { return Ok(()) };
        let a = s.entries.partition_point(|e| e.ts < start);
        for e in &s.entries[a..] {
            if e.ts >= end {
                break;
            }
            if !hint.required.iter().all(|r| r.find(e.line.as_bytes()).is_some()) {
                continue;
            }
            if f(EntryRef { ts: e.ts, line: &e.line, metadata: &e.metadata }).is_break() {
                break;
            }
        }
        Ok(())
    }
}
