//! PromQL's functions, with Prometheus 2.x's formulas (extrapolation of `rate`, Holt-Winters,
//! the classic-histogram quantile).

use std::collections::HashMap;

use promql_parser::parser::{Call, Expr};
use regex::Regex;

use super::PromqlError;
use super::aggregate::quantile;
use super::eval::{Evaluator, MatrixVal, StepSeries, Val, merge_same_labels};
use super::time::{civil, days_in_month};
use crate::labels::{Labels, METRIC_NAME, MatchOp, is_valid_label_name};
use crate::storage::Sample;

pub(super) fn eval(ev: &mut Evaluator<'_>, call: &Call) -> Result<Val, PromqlError> {
    let name = call.func.name;
    let args: Vec<&Expr> = call.args.args.iter().map(|a| a.as_ref()).collect();
    match name {
        "time" => Ok(Val::Scalar((0..ev.steps).map(|i| ev.ts(i) as f64 / 1000.0).collect())),
        "pi" => Ok(Val::Scalar(vec![std::f64::consts::PI; ev.steps])),
        "vector" => {
            let s = ev.eval_scalar(arg(&args, 0)?)?;
            Ok(Val::Vector(vec![StepSeries { labels: Labels::new(), vals: s.into_iter().map(Some).collect() }]))
        }
        "scalar" => {
            let v = ev.eval_vector(arg(&args, 0)?)?;
            Ok(Val::Scalar(
                (0..ev.steps)
                    .map(|i| {
                        let mut present = v.iter().filter_map(|s| s.vals[i]);
                        match (present.next(), present.next()) {
                            (Some(x), None) => x,
                            _ => f64::NAN,
                        }
                    })
                    .collect(),
            ))
        }
        "timestamp" => {
            let a = unwrap_parens(arg(&args, 0)?);
            let series = match a {
                Expr::VectorSelector(vs) => ev.eval_vector_selector(vs, true)?,
                other => {
                    let v = ev.eval_vector(other)?;
                    v.into_iter()
                        .map(|s| StepSeries {
                            vals: s.vals.iter().enumerate().map(|(i, x)| x.map(|_| ev.ts(i) as f64 / 1000.0)).collect(),
                            labels: s.labels,
                        })
                        .collect()
                }
            };
            drop_names(series)
        }
        "absent" => {
            let v = ev.eval_vector(arg(&args, 0)?)?;
            let labels = absent_labels(arg(&args, 0)?);
            let vals = (0..ev.steps).map(|i| (!v.iter().any(|s| s.vals[i].is_some())).then_some(1.0)).collect();
            Ok(Val::Vector(vec![StepSeries { labels, vals }]))
        }
        "absent_over_time" => {
            let m = ev.eval_matrix(arg(&args, 0)?)?;
            let labels = absent_labels(arg(&args, 0)?);
            let vals = (0..ev.steps)
                .map(|i| (!(0..m.series.len()).any(|s| !m.window(s, i).is_empty())).then_some(1.0))
                .collect();
            Ok(Val::Vector(vec![StepSeries { labels, vals }]))
        }
        "sort" | "sort_desc" => {
            let mut v = ev.eval_vector(arg(&args, 0)?)?;
            let desc = name == "sort_desc";
            // Ordering matters only for an instant query: the first step's values decide it,
            // NaN last either way.
            v.sort_by(|a, b| {
                let (x, y) = (a.vals[0].unwrap_or(f64::NAN), b.vals[0].unwrap_or(f64::NAN));
                match (x.is_nan(), y.is_nan()) {
                    (true, true) => std::cmp::Ordering::Equal,
                    (true, false) => std::cmp::Ordering::Greater,
                    (false, true) => std::cmp::Ordering::Less,
                    _ if desc => y.partial_cmp(&x).unwrap_or(std::cmp::Ordering::Equal),
                    _ => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
                }
            });
            Ok(Val::Vector(v))
        }
        "label_replace" => label_replace(ev, &args),
        "label_join" => label_join(ev, &args),
        "histogram_quantile" => histogram_quantile(ev, &args),
        "round" => {
            let v = ev.eval_vector(arg(&args, 0)?)?;
            let to = match args.get(1) {
                Some(a) => ev.eval_scalar(a)?,
                None => vec![1.0; ev.steps],
            };
            map_steps(v, |i, x| {
                let inv = 1.0 / to[i];
                (x * inv + 0.5).floor() / inv
            })
        }
        "clamp" => {
            let v = ev.eval_vector(arg(&args, 0)?)?;
            let lo = ev.eval_scalar(arg(&args, 1)?)?;
            let hi = ev.eval_scalar(arg(&args, 2)?)?;
            let series: Vec<StepSeries> = v
                .into_iter()
                .map(|s| StepSeries {
                    vals: s
                        .vals
                        .iter()
                        .enumerate()
                        .map(|(i, x)| {
                            let x = (*x)?;
                            // A maximum below the minimum selects nothing, as in Prometheus.
                            (hi[i] >= lo[i] || lo[i].is_nan() || hi[i].is_nan())
                                .then(|| go_max(lo[i], go_min(hi[i], x)))
                        })
                        .collect(),
                    labels: s.labels.without_metric_name(),
                })
                .collect();
            Ok(Val::Vector(merge_same_labels(series)?))
        }
        "clamp_min" | "clamp_max" => {
            let v = ev.eval_vector(arg(&args, 0)?)?;
            let bound = ev.eval_scalar(arg(&args, 1)?)?;
            let max = name == "clamp_max";
            map_steps(v, |i, x| if max { go_min(x, bound[i]) } else { go_max(x, bound[i]) })
        }
        "abs" | "ceil" | "floor" | "exp" | "sqrt" | "ln" | "log2" | "log10" | "sgn" | "deg" | "rad" | "sin" | "cos"
        | "tan" | "asin" | "acos" | "atan" | "sinh" | "cosh" | "tanh" | "asinh" | "acosh" | "atanh" => {
            let f: fn(f64) -> f64 = match name {
                "abs" => f64::abs,
                "ceil" => f64::ceil,
                "floor" => f64::floor,
                "exp" => f64::exp,
                "sqrt" => f64::sqrt,
                "ln" => f64::ln,
                "log2" => f64::log2,
                "log10" => f64::log10,
                "sgn" => |x: f64| {
                    if x > 0.0 {
                        1.0
                    } else if x < 0.0 {
                        -1.0
                    } else {
                        x
                    }
                },
                "deg" => |x: f64| x * 180.0 / std::f64::consts::PI,
                "rad" => |x: f64| x * std::f64::consts::PI / 180.0,
                "sin" => f64::sin,
                "cos" => f64::cos,
                "tan" => f64::tan,
                "asin" => f64::asin,
                "acos" => f64::acos,
                "atan" => f64::atan,
                "sinh" => f64::sinh,
                "cosh" => f64::cosh,
                "tanh" => f64::tanh,
                "asinh" => f64::asinh,
                "acosh" => f64::acosh,
                _ => f64::atanh,
            };
            let v = ev.eval_vector(arg(&args, 0)?)?;
            map_steps(v, |_, x| f(x))
        }
        "year" | "month" | "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month" | "hour" | "minute" => {
            let v = match args.first() {
                Some(a) => ev.eval_vector(a)?,
                None => vec![StepSeries {
                    labels: Labels::new(),
                    vals: (0..ev.steps).map(|i| Some(ev.ts(i) as f64 / 1000.0)).collect(),
                }],
            };
            map_steps(v, |_, x| {
                if x.is_nan() || x.is_infinite() {
                    return f64::NAN;
                }
                let c = civil(x);
                f64::from(match name {
                    "year" => return c.year as f64,
                    "month" => c.month,
                    "day_of_month" => c.day,
                    "day_of_week" => c.weekday,
                    "day_of_year" => c.yday,
                    "days_in_month" => days_in_month(c.year, c.month),
                    "hour" => c.hour,
                    _ => c.minute,
                })
            })
        }
        "histogram_count" | "histogram_sum" | "histogram_avg" | "histogram_fraction" | "histogram_stddev"
        | "histogram_stdvar" => {
            // Native histograms are not stored; over float samples these select nothing, as in
            // Prometheus.
            for a in &args {
                ev.eval(a)?;
            }
            Ok(Val::Vector(Vec::new()))
        }
        _ => range_function(ev, name, &args),
    }
}

fn arg<'e>(args: &[&'e Expr], i: usize) -> Result<&'e Expr, PromqlError> {
    args.get(i).copied().ok_or_else(|| PromqlError::Execution(format!("missing argument {}", i + 1)))
}

fn unwrap_parens(mut e: &Expr) -> &Expr {
    while let Expr::Paren(p) = e {
        e = &p.expr;
    }
    e
}

fn drop_names(series: Vec<StepSeries>) -> Result<Val, PromqlError> {
    let out = series.into_iter().map(|s| StepSeries { labels: s.labels.without_metric_name(), vals: s.vals }).collect();
    Ok(Val::Vector(merge_same_labels(out)?))
}

/// Applies `f(step, value)` to every present value; the result loses its metric name.
fn map_steps(series: Vec<StepSeries>, f: impl Fn(usize, f64) -> f64) -> Result<Val, PromqlError> {
    let out = series
        .into_iter()
        .map(|s| StepSeries {
            labels: s.labels.without_metric_name(),
            vals: s.vals.iter().enumerate().map(|(i, x)| x.map(|x| f(i, x))).collect(),
        })
        .collect();
    Ok(Val::Vector(merge_same_labels(out)?))
}

/// Go's `math.Max`: an infinity wins, then NaN; Rust's `f64::max` would ignore the NaN.
fn go_max(a: f64, b: f64) -> f64 {
    if a == f64::INFINITY || b == f64::INFINITY {
        f64::INFINITY
    } else if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a > b {
        a
    } else {
        b
    }
}

fn go_min(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY || b == f64::NEG_INFINITY {
        f64::NEG_INFINITY
    } else if a.is_nan() || b.is_nan() {
        f64::NAN
    } else if a < b {
        a
    } else {
        b
    }
}

/// The labels `absent()` answers with: those the selector pins with `=` (once each).
fn absent_labels(e: &Expr) -> Labels {
    let vs = match unwrap_parens(e) {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Labels::new(),
    };
    let Ok(matchers) = Evaluator::matchers(vs) else { return Labels::new() };
    let mut b = Labels::new().builder();
    let mut dropped = Vec::new();
    for m in &matchers {
        if m.name == METRIC_NAME {
            continue;
        }
        if matches!(m.op, MatchOp::Equal) && b.get(&m.name).is_none() && !dropped.contains(&m.name) {
            b.set(m.name.clone(), m.value.clone());
        } else {
            dropped.push(m.name.clone());
        }
    }
    for name in &dropped {
        b.del(name);
    }
    b.build()
}

fn string_arg(ev: &mut Evaluator<'_>, e: &Expr) -> Result<String, PromqlError> {
    match ev.eval(e)? {
        Val::String(s) => Ok(s),
        _ => Err(PromqlError::Execution("expected a string argument".into())),
    }
}

fn label_replace(ev: &mut Evaluator<'_>, args: &[&Expr]) -> Result<Val, PromqlError> {
    let v = ev.eval_vector(arg(args, 0)?)?;
    let dst = string_arg(ev, arg(args, 1)?)?;
    let replacement = string_arg(ev, arg(args, 2)?)?;
    let src = string_arg(ev, arg(args, 3)?)?;
    let pattern = string_arg(ev, arg(args, 4)?)?;
    let re = Regex::new(&format!("^(?s:{pattern})$")).map_err(|e| {
        PromqlError::Execution(format!("invalid regular expression in label_replace(): {pattern}: {e}"))
    })?;
    if !is_valid_label_name(&dst) {
        return Err(PromqlError::Execution(format!("invalid destination label name in label_replace(): {dst}")));
    }
    let out: Vec<StepSeries> = v
        .into_iter()
        .map(|s| {
            let value = s.labels.get(&src).unwrap_or("");
            let Some(caps) = re.captures(value) else { return s };
            let mut result = String::new();
            caps.expand(&replacement, &mut result);
            let mut b = s.labels.builder();
            b.set(dst.clone(), result);
            StepSeries { labels: b.build(), vals: s.vals }
        })
        .collect();
    Ok(Val::Vector(merge_same_labels(out)?))
}

fn label_join(ev: &mut Evaluator<'_>, args: &[&Expr]) -> Result<Val, PromqlError> {
    let v = ev.eval_vector(arg(args, 0)?)?;
    let dst = string_arg(ev, arg(args, 1)?)?;
    let sep = string_arg(ev, arg(args, 2)?)?;
    let mut srcs = Vec::new();
    for a in args.iter().skip(3) {
        let s = string_arg(ev, a)?;
        if !is_valid_label_name(&s) {
            return Err(PromqlError::Execution(format!("invalid source label name in label_join(): {s}")));
        }
        srcs.push(s);
    }
    if !is_valid_label_name(&dst) {
        return Err(PromqlError::Execution(format!("invalid destination label name in label_join(): {dst}")));
    }
    let out: Vec<StepSeries> = v
        .into_iter()
        .map(|s| {
            let joined = srcs.iter().map(|n| s.labels.get(n).unwrap_or("")).collect::<Vec<_>>().join(&sep);
            let mut b = s.labels.builder();
            b.set(dst.clone(), joined);
            StepSeries { labels: b.build(), vals: s.vals }
        })
        .collect();
    Ok(Val::Vector(merge_same_labels(out)?))
}

fn histogram_quantile(ev: &mut Evaluator<'_>, args: &[&Expr]) -> Result<Val, PromqlError> {
    let q = ev.eval_scalar(arg(args, 0)?)?;
    let v = ev.eval_vector(arg(args, 1)?)?;
    // Buckets grouped by their series' labels without `le`; two histograms that differ only in
    // name then collide in the output, the error Prometheus reports (its issue 9910).
    let mut groups: Vec<(Labels, Vec<(f64, usize)>)> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::new();
    for (i, s) in v.iter().enumerate() {
        let Some(le) = s.labels.get("le").and_then(parse_go_float) else { continue };
        let mut b = s.labels.builder();
        b.del("le");
        let key = b.build();
        let g = *index.entry(key.clone()).or_insert_with(|| {
            groups.push((key, Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push((le, i));
    }
    let mut out = Vec::with_capacity(groups.len());
    let mut buckets: Vec<(f64, f64)> = Vec::new();
    for (labels, members) in groups {
        let mut vals = vec![None; ev.steps];
        for (step, slot) in vals.iter_mut().enumerate() {
            buckets.clear();
            buckets.extend(members.iter().filter_map(|&(le, i)| v[i].vals[step].map(|c| (le, c))));
            if !buckets.is_empty() {
                *slot = Some(bucket_quantile(q[step], &mut buckets));
            }
        }
        out.push(StepSeries { labels: labels.without_metric_name(), vals });
    }
    Ok(Val::Vector(merge_same_labels(out)?))
}

/// Go's `strconv.ParseFloat`, as far as `le` labels need it (`+Inf`, `Inf`, `NaN`, decimals).
pub(crate) fn parse_go_float(s: &str) -> Option<f64> {
    match s.to_ascii_lowercase().as_str() {
        "+inf" | "inf" | "+infinity" | "infinity" => Some(f64::INFINITY),
        "-inf" | "-infinity" => Some(f64::NEG_INFINITY),
        "nan" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// The quantile of classic-histogram buckets `(upper bound, cumulative count)`, interpolating
/// linearly inside the bucket, as Prometheus's `bucketQuantile`.
fn bucket_quantile(q: f64, buckets: &mut Vec<(f64, f64)>) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal));
    if buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return f64::NAN;
    }
    // Buckets with the same bound (from differently spelt `le` values) are summed.
    buckets.dedup_by(|b, a| {
        if a.0 == b.0 {
            a.1 += b.1;
            true
        } else {
            false
        }
    });
    let mut max = f64::NEG_INFINITY;
    for b in buckets.iter_mut() {
        if b.1 < max {
            b.1 = max;
        } else {
            max = b.1;
        }
    }
    if buckets.len() < 2 {
        return f64::NAN;
    }
    let observations = buckets[buckets.len() - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let b = buckets[..buckets.len() - 1].partition_point(|x| x.1 < rank);
    if b == buckets.len() - 1 {
        return buckets[buckets.len() - 2].0;
    }
    if b == 0 && buckets[0].0 <= 0.0 {
        return buckets[0].0;
    }
    let (mut start, end, mut count) = (0.0, buckets[b].0, buckets[b].1);
    if b > 0 {
        start = buckets[b - 1].0;
        count -= buckets[b - 1].1;
        rank -= buckets[b - 1].1;
    }
    start + (end - start) * (rank / count)
}

/// Functions of a range vector: one value per series per step, from the samples in its window.
// The step indexes the window, the scalar parameters and the output alike.
#[allow(clippy::needless_range_loop)]
fn range_function(ev: &mut Evaluator<'_>, name: &str, args: &[&Expr]) -> Result<Val, PromqlError> {
    let (matrix_arg, scalars): (usize, Vec<usize>) = match name {
        "quantile_over_time" => (1, vec![0]),
        "predict_linear" => (0, vec![1]),
        "holt_winters" | "double_exponential_smoothing" => (0, vec![1, 2]),
        "rate" | "increase" | "delta" | "irate" | "idelta" | "deriv" | "changes" | "resets" | "avg_over_time"
        | "min_over_time" | "max_over_time" | "sum_over_time" | "count_over_time" | "last_over_time"
        | "present_over_time" | "stddev_over_time" | "stdvar_over_time" | "mad_over_time" => (0, vec![]),
        other => return Err(PromqlError::Execution(format!("function {other}() is not supported"))),
    };
    let mut params: Vec<Vec<f64>> = Vec::new();
    for &i in &scalars {
        params.push(ev.eval_scalar(arg(args, i)?)?);
    }
    let m = ev.eval_matrix(arg(args, matrix_arg)?)?;
    let keep_name = name == "last_over_time";
    let mut out = Vec::with_capacity(m.series.len());
    for s in 0..m.series.len() {
        let mut vals = Vec::with_capacity(ev.steps);
        for step in 0..ev.steps {
            let w = m.window(s, step);
            if w.is_empty() {
                vals.push(None);
                continue;
            }
            let p = |k: usize| params[k][step];
            vals.push(apply_range(name, w, &m, step, ev.ts(step), &p)?);
        }
        if vals.iter().all(Option::is_none) {
            continue;
        }
        let labels = &m.series[s].labels;
        out.push(StepSeries { labels: if keep_name { labels.clone() } else { labels.without_metric_name() }, vals });
    }
    Ok(Val::Vector(merge_same_labels(out)?))
}

fn apply_range(
    name: &str,
    w: &[Sample],
    m: &MatrixVal,
    step: usize,
    ts: i64,
    p: &dyn Fn(usize) -> f64,
) -> Result<Option<f64>, PromqlError> {
    let n = w.len() as f64;
    Ok(match name {
        "rate" => extrapolated_rate(w, m, step, true, true),
        "increase" => extrapolated_rate(w, m, step, true, false),
        "delta" => extrapolated_rate(w, m, step, false, false),
        "irate" | "idelta" => {
            if w.len() < 2 {
                return Ok(None);
            }
            let (prev, last) = (w[w.len() - 2], w[w.len() - 1]);
            let is_rate = name == "irate";
            let value = if is_rate && last.v < prev.v { last.v } else { last.v - prev.v };
            let interval = last.t - prev.t;
            if interval == 0 {
                return Ok(None);
            }
            Some(if is_rate { value / (interval as f64 / 1000.0) } else { value })
        }
        "deriv" => {
            if w.len() < 2 {
                return Ok(None);
            }
            Some(linear_regression(w, w[0].t).0)
        }
        "predict_linear" => {
            if w.len() < 2 {
                return Ok(None);
            }
            let (slope, intercept) = linear_regression(w, ts);
            Some(slope * p(0) + intercept)
        }
        "holt_winters" | "double_exponential_smoothing" => {
            let (sf, tf) = (p(0), p(1));
            if sf <= 0.0 || sf >= 1.0 {
                return Err(PromqlError::Execution(format!(
                    "invalid smoothing factor. Expected: 0 < sf < 1, got: {sf}"
                )));
            }
            if tf <= 0.0 || tf >= 1.0 {
                return Err(PromqlError::Execution(format!("invalid trend factor. Expected: 0 < tf < 1, got: {tf}")));
            }
            if w.len() < 2 {
                return Ok(None);
            }
            let (mut s0, mut s1) = (0.0, w[0].v);
            let mut b = w[1].v - w[0].v;
            for (i, x) in w.iter().enumerate().skip(1) {
                if i > 1 {
                    b = tf * (s1 - s0) + (1.0 - tf) * b;
                }
                let next = sf * x.v + (1.0 - sf) * (s1 + b);
                s0 = s1;
                s1 = next;
            }
            Some(s1)
        }
        "changes" | "resets" => {
            let mut count = 0.0;
            for pair in w.windows(2) {
                let (prev, cur) = (pair[0].v, pair[1].v);
                let hit = if name == "changes" { cur != prev && !(cur.is_nan() && prev.is_nan()) } else { cur < prev };
                if hit {
                    count += 1.0;
                }
            }
            Some(count)
        }
        "avg_over_time" => {
            let (mut mean, mut c, mut count) = (0.0f64, 0.0f64, 0.0f64);
            for x in w {
                count += 1.0;
                if mean.is_infinite() {
                    if x.v.is_infinite() && (mean > 0.0) == (x.v > 0.0) {
                        continue;
                    }
                    if !x.v.is_infinite() && !x.v.is_nan() {
                        continue;
                    }
                }
                (mean, c) = kahan_inc(x.v / count - mean / count, mean, c);
            }
            Some(if mean.is_infinite() { mean } else { mean + c })
        }
        "sum_over_time" => {
            let (mut sum, mut c) = (0.0, 0.0);
            for x in w {
                (sum, c) = kahan_inc(x.v, sum, c);
            }
            Some(if sum.is_infinite() { sum } else { sum + c })
        }
        "min_over_time" => Some(w.iter().skip(1).fold(w[0].v, |m, x| if x.v < m || m.is_nan() { x.v } else { m })),
        "max_over_time" => Some(w.iter().skip(1).fold(w[0].v, |m, x| if x.v > m || m.is_nan() { x.v } else { m })),
        "count_over_time" => Some(n),
        "last_over_time" => Some(w[w.len() - 1].v),
        "present_over_time" => Some(1.0),
        "stddev_over_time" | "stdvar_over_time" => {
            let (mut count, mut mean, mut cmean, mut aux, mut caux) = (0.0f64, 0.0f64, 0.0, 0.0, 0.0);
            for x in w {
                count += 1.0;
                let delta = x.v - (mean + cmean);
                (mean, cmean) = kahan_inc(delta / count, mean, cmean);
                (aux, caux) = kahan_inc(delta * (x.v - (mean + cmean)), aux, caux);
            }
            let var = (aux + caux) / count;
            Some(if name == "stddev_over_time" { var.sqrt() } else { var })
        }
        "quantile_over_time" => {
            let mut vals: Vec<f64> = w.iter().map(|x| x.v).collect();
            Some(quantile(p(0), &mut vals))
        }
        "mad_over_time" => {
            let mut vals: Vec<f64> = w.iter().map(|x| x.v).collect();
            let median = quantile(0.5, &mut vals);
            let mut dev: Vec<f64> = vals.iter().map(|v| (v - median).abs()).collect();
            Some(quantile(0.5, &mut dev))
        }
        _ => None,
    })
}

/// Kahan-Babuška-Neumaier summation step, as Prometheus sums `*_over_time`.
fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if t.is_infinite() {
        0.0
    } else if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

/// `rate`, `increase` and `delta`: the change over the window, corrected for counter resets,
/// extrapolated to the window's edges unless the series starts or ends well inside it.
fn extrapolated_rate(w: &[Sample], m: &MatrixVal, step: usize, counter: bool, rate: bool) -> Option<f64> {
    if w.len() < 2 {
        return None;
    }
    let range_end = m.ends[step];
    let range_start = range_end - m.range;
    let (first, last) = (w[0], w[w.len() - 1]);
    let mut result = last.v - first.v;
    if counter {
        let mut prev = 0.0;
        for x in w {
            if x.v < prev {
                result += prev;
            }
            prev = x.v;
        }
    }
    let mut to_start = (first.t - range_start) as f64 / 1000.0;
    let to_end = (range_end - last.t) as f64 / 1000.0;
    let sampled = (last.t - first.t) as f64 / 1000.0;
    let avg_between = sampled / (w.len() - 1) as f64;
    if counter && result > 0.0 && first.v >= 0.0 {
        // A counter cannot go below zero: do not extrapolate past where it would be zero.
        let to_zero = sampled * (first.v / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = avg_between * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold { to_start } else { avg_between / 2.0 };
    interval += if to_end < threshold { to_end } else { avg_between / 2.0 };
    result *= interval / sampled;
    if rate {
        result /= m.range as f64 / 1000.0;
    }
    Some(result)
}

/// Least-squares slope and intercept (at `intercept_time`) of the window.
fn linear_regression(w: &[Sample], intercept_time: i64) -> (f64, f64) {
    let (mut n, mut sum_x, mut sum_y, mut sum_xy, mut sum_x2) = (0.0, 0.0, 0.0, 0.0, 0.0);
    let init_y = w[0].v;
    let mut const_y = true;
    for (i, s) in w.iter().enumerate() {
        if const_y && i > 0 && s.v != init_y {
            const_y = false;
        }
        n += 1.0;
        let x = (s.t - intercept_time) as f64 / 1000.0;
        sum_x += x;
        sum_y += s.v;
        sum_xy += x * s.v;
        sum_x2 += x * x;
    }
    if const_y {
        if init_y.is_infinite() {
            return (f64::NAN, f64::NAN);
        }
        return (0.0, init_y);
    }
    let cov_xy = sum_xy - sum_x * sum_y / n;
    let var_x = sum_x2 - sum_x * sum_x / n;
    let slope = cov_xy / var_x;
    (slope, sum_y / n - slope * sum_x / n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_quantile_interpolates_inside_the_bucket() {
        let mut b = vec![(0.1, 10.0), (0.5, 20.0), (f64::INFINITY, 20.0)];
        assert!((bucket_quantile(0.5, &mut b) - 0.1).abs() < 1e-12);
        let mut b = vec![(1.0, 0.0), (2.0, 10.0), (f64::INFINITY, 10.0)];
        assert!((bucket_quantile(0.5, &mut b) - 1.5).abs() < 1e-12);
        let mut b = vec![(1.0, 1.0)];
        assert!(bucket_quantile(0.5, &mut b).is_nan(), "no +Inf bucket");
    }

    #[test]
    fn go_min_max_keep_nan() {
        assert!(go_max(1.0, f64::NAN).is_nan());
        assert_eq!(go_max(f64::INFINITY, f64::NAN), f64::INFINITY);
        assert!(go_min(1.0, f64::NAN).is_nan());
    }
}
