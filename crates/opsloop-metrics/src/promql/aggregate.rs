//! Aggregation operators (`sum`, `avg`, `topk`, `quantile`, `count_values`, …), with
//! Prometheus 2.x's arithmetic so results agree to the last bit where it matters.

use std::collections::HashMap;

use promql_parser::parser::{AggregateExpr, LabelModifier};

use super::PromqlError;
use super::eval::{Evaluator, StepSeries, Val};
use crate::labels::Labels;

enum Param {
    None,
    Scalar(Vec<f64>),
    String(String),
}

pub(super) fn eval(ev: &mut Evaluator<'_>, agg: &AggregateExpr) -> Result<Val, PromqlError> {
    let op_name = agg.op.to_string();
    let op = op_name.as_str();
    let param = match &agg.param {
        None => Param::None,
        Some(p) => match ev.eval(p)? {
            Val::Scalar(v) => Param::Scalar(v),
            Val::String(s) => Param::String(s),
            _ => return Err(PromqlError::Execution(format!("invalid parameter for {op}"))),
        },
    };
    let input = ev.eval_vector(&agg.expr)?;
    let steps = ev.steps;

    let (by, names): (bool, &[String]) = match &agg.modifier {
        None => (true, &[]),
        Some(LabelModifier::Include(l)) => (true, &l.labels),
        Some(LabelModifier::Exclude(l)) => (false, &l.labels),
    };
    let group_key = |l: &Labels| if by { l.keep(names) } else { l.drop_names(names) };

    // Groups in the order their first member appears, as Prometheus orders its output.
    let mut groups: Vec<(Labels, Vec<usize>)> = Vec::new();
    let mut index: HashMap<Labels, usize> = HashMap::new();
    for (i, s) in input.iter().enumerate() {
        let key = group_key(&s.labels);
        match index.get(&key) {
            Some(&g) => groups[g].1.push(i),
            None => {
                index.insert(key.clone(), groups.len());
                groups.push((key, vec![i]));
            }
        }
    }

    match op {
        "topk" | "bottomk" | "limitk" => {
            let Param::Scalar(k) = param else {
                return Err(PromqlError::Execution(format!("expected scalar parameter for {op}")));
            };
            select_k(op, &input, &groups, &k, steps)
        }
        "count_values" => {
            let Param::String(label) = param else {
                return Err(PromqlError::Execution("expected string parameter for count_values".into()));
            };
            count_values(&input, by, names, &label, steps)
        }
        _ => {
            let q = match param {
                Param::Scalar(q) => Some(q),
                _ => None,
            };
            let mut out = Vec::with_capacity(groups.len());
            let mut vals = Vec::new();
            for (key, members) in &groups {
                let mut series = StepSeries { labels: key.clone(), vals: vec![None; steps] };
                for step in 0..steps {
                    vals.clear();
                    vals.extend(members.iter().filter_map(|&m| input[m].vals[step]));
                    if vals.is_empty() {
                        continue;
                    }
                    series.vals[step] = Some(match op {
                        "sum" => vals.iter().sum(),
                        "avg" => avg(&vals),
                        "count" => vals.len() as f64,
                        "group" => 1.0,
                        "min" => vals.iter().skip(1).fold(vals[0], |m, &v| if m > v || m.is_nan() { v } else { m }),
                        "max" => vals.iter().skip(1).fold(vals[0], |m, &v| if m < v || m.is_nan() { v } else { m }),
                        "stddev" => variance(&vals).sqrt(),
                        "stdvar" => variance(&vals),
                        "quantile" => {
                            let q = q.as_ref().and_then(|q| q.get(step).copied()).unwrap_or(f64::NAN);
                            quantile(q, &mut vals)
                        }
                        other => return Err(PromqlError::Execution(format!("unsupported aggregation {other}"))),
                    });
                }
                out.push(series);
            }
            Ok(Val::Vector(out))
        }
    }
}

/// Prometheus's running mean: dividing before subtracting avoids overflow, and an infinite mean
/// stays infinite unless an opposite infinity or a NaN arrives.
fn avg(vals: &[f64]) -> f64 {
    let mut mean = vals[0];
    for (i, &v) in vals.iter().enumerate().skip(1) {
        let count = (i + 1) as f64;
        if mean.is_infinite() {
            if v.is_infinite() && (mean > 0.0) == (v > 0.0) {
                continue;
            }
            if !v.is_infinite() && !v.is_nan() {
                continue;
            }
        }
        mean += v / count - mean / count;
    }
    mean
}

/// Welford's online variance, Prometheus's `stdvar`.
fn variance(vals: &[f64]) -> f64 {
    let (mut mean, mut m2) = (vals[0], 0.0);
    for (i, &v) in vals.iter().enumerate().skip(1) {
        let delta = v - mean;
        mean += delta / (i + 1) as f64;
        m2 += delta * (v - mean);
    }
    m2 / vals.len() as f64
}

/// The φ-quantile with linear interpolation between the two nearest ranks (NaN sorts first).
pub(crate) fn quantile(q: f64, vals: &mut [f64]) -> f64 {
    if vals.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    vals.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal),
    });
    let n = vals.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    vals[lower as usize] * (1.0 - weight) + vals[upper as usize] * weight
}

/// `a` ranks above `b` for topk (NaN ranks below everything).
fn better_top(a: f64, b: f64) -> bool {
    a > b || (b.is_nan() && !a.is_nan())
}

fn better_bottom(a: f64, b: f64) -> bool {
    a < b || (b.is_nan() && !a.is_nan())
}

fn select_k(
    op: &str,
    input: &[StepSeries],
    groups: &[(Labels, Vec<usize>)],
    k: &[f64],
    steps: usize,
) -> Result<Val, PromqlError> {
    let better: fn(f64, f64) -> bool = if op == "bottomk" { better_bottom } else { better_top };
    // Output series are input series; the first step's ranking orders them (what an instant
    // query shows).
    let mut out_index: HashMap<usize, usize> = HashMap::new();
    let mut out: Vec<StepSeries> = Vec::new();
    for step in 0..steps {
        let kf = k.get(step).copied().unwrap_or(f64::NAN);
        if kf.is_nan() || kf.abs() >= 9.2e18 {
            return Err(PromqlError::Execution(format!("Scalar value {kf} overflows int64")));
        }
        let k = kf as i64;
        if k < 1 {
            continue;
        }
        for (_, members) in groups {
            let mut chosen: Vec<(usize, f64)> = Vec::new();
            for &m in members {
                let Some(v) = input[m].vals[step] else { continue };
                if op == "limitk" {
                    if (chosen.len() as i64) < k {
                        chosen.push((m, v));
                    }
                    continue;
                }
                if (chosen.len() as i64) < k {
                    chosen.push((m, v));
                    continue;
                }
                // Replace the worst chosen one when this one ranks above it.
                let worst =
                    (0..chosen.len()).reduce(|w, i| if better(chosen[w].1, chosen[i].1) { i } else { w }).unwrap_or(0);
                if better(v, chosen[worst].1) {
                    chosen[worst] = (m, v);
                }
            }
            if op != "limitk" {
                chosen.sort_by(|a, b| {
                    if better(a.1, b.1) {
                        std::cmp::Ordering::Less
                    } else if better(b.1, a.1) {
                        std::cmp::Ordering::Greater
                    } else {
                        std::cmp::Ordering::Equal
                    }
                });
            }
            for (m, v) in chosen {
                let o = *out_index.entry(m).or_insert_with(|| {
                    out.push(StepSeries { labels: input[m].labels.clone(), vals: vec![None; steps] });
                    out.len() - 1
                });
                out[o].vals[step] = Some(v);
            }
        }
    }
    Ok(Val::Vector(out))
}

/// Counts series per value. The value label is set before grouping, as Prometheus does, so a
/// value label that overwrites a grouping label merges those groups.
fn count_values(
    input: &[StepSeries],
    by: bool,
    names: &[String],
    label: &str,
    steps: usize,
) -> Result<Val, PromqlError> {
    if !crate::labels::is_valid_label_name(label) {
        return Err(PromqlError::Execution(format!("invalid label name {label:?}")));
    }
    let mut by_names = names.to_vec();
    by_names.push(label.to_owned());
    let mut out_index: HashMap<Labels, usize> = HashMap::new();
    let mut out: Vec<StepSeries> = Vec::new();
    for step in 0..steps {
        for s in input {
            let Some(v) = s.vals[step] else { continue };
            let mut b = s.labels.builder();
            b.set(label.to_owned(), format_go_float(v));
            let labeled = b.build();
            let key = if by { labeled.keep(&by_names) } else { labeled.drop_names(names) };
            let o = *out_index.entry(key.clone()).or_insert_with(|| {
                out.push(StepSeries { labels: key, vals: vec![None; steps] });
                out.len() - 1
            });
            let slot = &mut out[o].vals[step];
            *slot = Some(slot.unwrap_or(0.0) + 1.0);
        }
    }
    Ok(Val::Vector(out))
}

/// Go's `strconv.FormatFloat(v, 'f', -1, 64)`: the shortest decimal that reads back as `v`,
/// never in exponent form.
pub fn format_go_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "+Inf".into()
    } else if v == f64::NEG_INFINITY {
        "-Inf".into()
    } else {
        format!("{v}")
    }
}
