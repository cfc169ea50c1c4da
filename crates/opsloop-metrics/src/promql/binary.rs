//! Binary operators: arithmetic, comparisons (filtering or `bool`), and the set operators, with
//! vector matching (`on`, `ignoring`, `group_left`, `group_right`) as Prometheus 2.x does it.

use std::collections::HashMap;

use promql_parser::parser::{BinModifier, BinaryExpr, LabelModifier, VectorMatchCardinality};

use super::PromqlError;
use super::eval::{Evaluator, StepSeries, Val, merge_same_labels};
use crate::labels::Labels;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Atan2,
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    And,
    Or,
    Unless,
}

impl Op {
    fn parse(s: &str) -> Result<Op, PromqlError> {
        Ok(match s {
            "+" => Op::Add,
            "-" => Op::Sub,
            "*" => Op::Mul,
            "/" => Op::Div,
            "%" => Op::Mod,
            "^" => Op::Pow,
            "atan2" => Op::Atan2,
            "==" => Op::Eq,
            "!=" => Op::Ne,
            ">" => Op::Gt,
            "<" => Op::Lt,
            ">=" => Op::Ge,
            "<=" => Op::Le,
            "and" => Op::And,
            "or" => Op::Or,
            "unless" => Op::Unless,
            other => return Err(PromqlError::Execution(format!("unknown binary operator {other:?}"))),
        })
    }

    fn is_comparison(self) -> bool {
        matches!(self, Op::Eq | Op::Ne | Op::Gt | Op::Lt | Op::Ge | Op::Le)
    }

    fn is_set(self) -> bool {
        matches!(self, Op::And | Op::Or | Op::Unless)
    }

    /// Whether the result loses the metric name (arithmetic changes what the value means).
    /// Prometheus 2.x keeps it for `atan2`.
    fn drops_name(self) -> bool {
        matches!(self, Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Mod | Op::Pow)
    }

    /// The value and whether to keep it: comparisons keep the left value when true.
    fn apply(self, l: f64, r: f64) -> (f64, bool) {
        match self {
            Op::Add => (l + r, true),
            Op::Sub => (l - r, true),
            Op::Mul => (l * r, true),
            Op::Div => (l / r, true),
            Op::Mod => (l % r, true),
            Op::Pow => (l.powf(r), true),
            Op::Atan2 => (l.atan2(r), true),
            Op::Eq => (l, l == r),
            Op::Ne => (l, l != r),
            Op::Gt => (l, l > r),
            Op::Lt => (l, l < r),
            Op::Ge => (l, l >= r),
            Op::Le => (l, l <= r),
            Op::And | Op::Or | Op::Unless => (l, true),
        }
    }
}

pub(super) fn eval(ev: &mut Evaluator<'_>, b: &BinaryExpr) -> Result<Val, PromqlError> {
    let op = Op::parse(&b.op.to_string())?;
    let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
    let lhs = ev.eval(&b.lhs)?;
    let rhs = ev.eval(&b.rhs)?;
    match (lhs, rhs) {
        (Val::Scalar(l), Val::Scalar(r)) => Ok(Val::Scalar(
            l.iter()
                .zip(&r)
                .map(|(&l, &r)| {
                    let (v, keep) = op.apply(l, r);
                    if op.is_comparison() { if keep { 1.0 } else { 0.0 } } else { v }
                })
                .collect(),
        )),
        (Val::Vector(v), Val::Scalar(s)) => vector_scalar(op, v, &s, false, return_bool),
        (Val::Scalar(s), Val::Vector(v)) => vector_scalar(op, v, &s, true, return_bool),
        (Val::Vector(l), Val::Vector(r)) => {
            let default = BinModifier::default();
            let modifier = b.modifier.as_ref().unwrap_or(&default);
            if op.is_set() {
                Ok(Val::Vector(set_op(op, l, r, modifier, ev.steps)))
            } else {
                vector_vector(op, l, r, modifier, return_bool, ev.steps).map(Val::Vector)
            }
        }
        _ => {
            Err(PromqlError::Execution("binary operators are only allowed between scalars and instant vectors".into()))
        }
    }
}

fn vector_scalar(
    op: Op,
    series: Vec<StepSeries>,
    scalar: &[f64],
    swap: bool,
    return_bool: bool,
) -> Result<Val, PromqlError> {
    let mut out = Vec::with_capacity(series.len());
    for s in series {
        let vals: Vec<Option<f64>> = s
            .vals
            .iter()
            .zip(scalar)
            .map(|(v, &sc)| {
                let v = (*v)?;
                let (l, r) = if swap { (sc, v) } else { (v, sc) };
                let (mut value, mut keep) = op.apply(l, r);
                // The vector's element stays the value of a comparison, on either side.
                if op.is_comparison() && swap {
                    value = r;
                }
                if return_bool {
                    value = if keep { 1.0 } else { 0.0 };
                    keep = true;
                }
                keep.then_some(value)
            })
            .collect();
        if vals.iter().all(Option::is_none) {
            continue;
        }
        let labels = if op.drops_name() || return_bool { s.labels.without_metric_name() } else { s.labels };
        out.push(StepSeries { labels, vals });
    }
    merge_same_labels(out).map(Val::Vector)
}

/// The labels two series are matched on.
fn signature(labels: &Labels, modifier: &BinModifier) -> Labels {
    match &modifier.matching {
        Some(LabelModifier::Include(on)) => labels.keep(&on.labels),
        Some(LabelModifier::Exclude(ignoring)) => labels.drop_names(&ignoring.labels),
        None => labels.without_metric_name(),
    }
}

fn set_op(op: Op, lhs: Vec<StepSeries>, rhs: Vec<StepSeries>, modifier: &BinModifier, steps: usize) -> Vec<StepSeries> {
    let lsig: Vec<Labels> = lhs.iter().map(|s| signature(&s.labels, modifier)).collect();
    let rsig: Vec<Labels> = rhs.iter().map(|s| signature(&s.labels, modifier)).collect();
    // Per signature, the steps at which the other side has any series.
    let presence = |sigs: &[Labels], side: &[StepSeries]| {
        let mut m: HashMap<Labels, Vec<bool>> = HashMap::new();
        for (sig, s) in sigs.iter().zip(side) {
            let p = m.entry(sig.clone()).or_insert_with(|| vec![false; steps]);
            for (i, v) in s.vals.iter().enumerate() {
                p[i] |= v.is_some();
            }
        }
        m
    };
    match op {
        Op::And | Op::Unless => {
            let right = presence(&rsig, &rhs);
            let want = op == Op::And;
            lhs.into_iter()
                .zip(lsig)
                .filter_map(|(mut s, sig)| {
                    let p = right.get(&sig);
                    for (i, v) in s.vals.iter_mut().enumerate() {
                        let there = p.is_some_and(|p| p[i]);
                        if there != want {
                            *v = None;
                        }
                    }
                    s.vals.iter().any(Option::is_some).then_some(s)
                })
                .collect()
        }
        _ => {
            let left = presence(&lsig, &lhs);
            let mut out = lhs;
            for (mut s, sig) in rhs.into_iter().zip(rsig) {
                if let Some(p) = left.get(&sig) {
                    for (i, v) in s.vals.iter_mut().enumerate() {
                        if p[i] {
                            *v = None;
                        }
                    }
                }
                if s.vals.iter().any(Option::is_some) {
                    out.push(s);
                }
            }
            out
        }
    }
}

fn vector_vector(
    op: Op,
    lhs: Vec<StepSeries>,
    rhs: Vec<StepSeries>,
    modifier: &BinModifier,
    return_bool: bool,
    steps: usize,
) -> Result<Vec<StepSeries>, PromqlError> {
    let (card, include) = match &modifier.card {
        VectorMatchCardinality::OneToOne | VectorMatchCardinality::ManyToMany => (Card::OneToOne, &[][..]),
        VectorMatchCardinality::ManyToOne(l) => (Card::ManyToOne, &l.labels[..]),
        VectorMatchCardinality::OneToMany(l) => (Card::OneToMany, &l.labels[..]),
    };
    // The "many" side is walked; the "one" side is looked up by signature.
    let (many, one) = if card == Card::OneToMany { (rhs, lhs) } else { (lhs, rhs) };
    let many_sig: Vec<Labels> = many.iter().map(|s| signature(&s.labels, modifier)).collect();
    let one_sig: Vec<Labels> = one.iter().map(|s| signature(&s.labels, modifier)).collect();
    let on = matches!(modifier.matching, Some(LabelModifier::Include(_)));
    let matching_names: &[String] = match &modifier.matching {
        Some(LabelModifier::Include(l)) | Some(LabelModifier::Exclude(l)) => &l.labels,
        None => &[],
    };

    let mut out: Vec<StepSeries> = Vec::new();
    let mut out_index: HashMap<Labels, usize> = HashMap::new();
    let mut pair_labels: HashMap<(usize, usize), Labels> = HashMap::new();
    let mut one_by_sig: HashMap<&Labels, usize> = HashMap::new();
    let mut matched: HashMap<&Labels, Vec<Labels>> = HashMap::new();
    for step in 0..steps {
        one_by_sig.clear();
        for (j, s) in one.iter().enumerate() {
            if s.vals[step].is_none() {
                continue;
            }
            if let Some(&prev) = one_by_sig.get(&one_sig[j]) {
                let side = if card == Card::OneToMany { "left" } else { "right" };
                return Err(PromqlError::Execution(format!(
                    "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                    one_sig[j], one[prev].labels, s.labels
                )));
            }
            one_by_sig.insert(&one_sig[j], j);
        }
        matched.clear();
        for (i, s) in many.iter().enumerate() {
            let Some(mv) = s.vals[step] else { continue };
            let Some(&j) = one_by_sig.get(&many_sig[i]) else { continue };
            let Some(ov) = one[j].vals[step] else { continue };
            let (l, r) = if card == Card::OneToMany { (ov, mv) } else { (mv, ov) };
            let (mut value, keep) = op.apply(l, r);
            if return_bool {
                value = if keep { 1.0 } else { 0.0 };
            } else if !keep {
                continue;
            }
            let labels = pair_labels
                .entry((i, j))
                .or_insert_with(|| {
                    result_labels(&s.labels, &one[j].labels, op, card, on, matching_names, include, return_bool)
                })
                .clone();
            let seen = matched.entry(&many_sig[i]).or_default();
            if card == Card::OneToOne {
                if !seen.is_empty() {
                    return Err(PromqlError::Execution(
                        "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)"
                            .into(),
                    ));
                }
            } else if seen.contains(&labels) {
                return Err(PromqlError::Execution(
                    "multiple matches for labels: grouping labels must ensure unique matches".into(),
                ));
            }
            seen.push(labels.clone());
            let o = *out_index.entry(labels.clone()).or_insert_with(|| {
                out.push(StepSeries { labels, vals: vec![None; steps] });
                out.len() - 1
            });
            if out[o].vals[step].is_some() {
                return Err(PromqlError::Execution("vector cannot contain metrics with the same labelset".into()));
            }
            out[o].vals[step] = Some(value);
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Card {
    OneToOne,
    ManyToOne,
    OneToMany,
}

#[allow(clippy::too_many_arguments)]
fn result_labels(
    many: &Labels,
    one: &Labels,
    op: Op,
    card: Card,
    on: bool,
    matching: &[String],
    include: &[String],
    return_bool: bool,
) -> Labels {
    let mut base = if op.drops_name() || return_bool { many.without_metric_name() } else { many.clone() };
    if card == Card::OneToOne {
        base = if on {
            base.keep(matching)
        } else {
            let mut b = base.builder();
            for name in matching {
                b.del(name);
            }
            b.build()
        };
    }
    // Labels named in group_x(...) come from the "one" side.
    let mut b = base.builder();
    for name in include {
        match one.get(name) {
            Some(v) => b.set(name.clone(), v.to_owned()),
            None => b.del(name),
        };
    }
    b.build()
}
