//! Printing queries: `Display` gives the canonical one-line form (parsing it gives the same
//! tree back, which the tests check), and [`format_query`] the multi-line layout of Loki's
//! `/loki/api/v1/format_query` for queries too long for one line.

use std::fmt::{self, Write};

use crate::labels::{Matcher, quote};
use crate::logql::ast::*;
use crate::logql::lexer::format_duration;
use crate::logql::template::go_float;

/// Lines longer than this are broken up by [`format_query`] (Loki uses the same width).
const MAX_WIDTH: usize = 100;

fn selector(ms: &[Matcher]) -> String {
    let parts: Vec<String> = ms.iter().map(ToString::to_string).collect();
    format!("{{{}}}", parts.join(", "))
}

fn stage(s: &Stage) -> String {
    match s {
        Stage::LineFilter(f) => {
            let vals: Vec<String> = f.values.iter().map(|v| quote(v)).collect();
            format!("{} {}", f.op.as_str(), vals.join(" or "))
        }
        Stage::Parser(p) => match p {
            ParserStage::Json(params) if params.is_empty() => "| json".into(),
            ParserStage::Json(params) => {
                let ps: Vec<String> = params.iter().map(|(l, p)| format!("{l}={}", quote(&p.source))).collect();
                format!("| json {}", ps.join(", "))
            }
            ParserStage::Logfmt { strict, keep_empty, params } => {
                let mut out = String::from("| logfmt");
                if *strict {
                    out.push_str(" --strict");
                }
                if *keep_empty {
                    out.push_str(" --keep-empty");
                }
                if !params.is_empty() {
                    let ps: Vec<String> = params.iter().map(|(l, p)| format!("{l}={}", quote(p))).collect();
                    out.push(' ');
                    out.push_str(&ps.join(", "));
                }
                out
            }
            ParserStage::Regexp(r) => format!("| regexp {}", quote(&r.source)),
            ParserStage::Pattern(p) => format!("| pattern {}", quote(&p.source)),
            ParserStage::Unpack => "| unpack".into(),
        },
        Stage::LabelFilter(f) => format!("| {}", label_filter(f)),
        Stage::LineFormat(t) => format!("| line_format {}", quote(&t.source)),
        Stage::LabelFormat(items) => {
            let parts: Vec<String> = items
                .iter()
                .map(|i| match i {
                    LabelFmt::Rename { dst, src } => format!("{dst}={src}"),
                    LabelFmt::Template { dst, tmpl } => format!("{dst}={}", quote(&tmpl.source)),
                })
                .collect();
            format!("| label_format {}", parts.join(", "))
        }
        Stage::Drop(items) | Stage::Keep(items) => {
            let kw = if matches!(s, Stage::Drop(_)) { "drop" } else { "keep" };
            let parts: Vec<String> = items
                .iter()
                .map(|i| match i {
                    LabelSel::Name(n) => n.clone(),
                    LabelSel::Matcher(m) => m.to_string(),
                })
                .collect();
            format!("| {kw} {}", parts.join(", "))
        }
        Stage::Decolorize => "| decolorize".into(),
    }
}

/// Prints a label filter, with parentheses only where `or` sits under `and`.
pub fn label_filter(f: &LabelFilter) -> String {
    match f {
        LabelFilter::And(a, b) => {
            let l = match a.as_ref() {
                LabelFilter::Or(..) => format!("({})", label_filter(a)),
                _ => label_filter(a),
            };
            let r = match b.as_ref() {
                LabelFilter::Or(..) | LabelFilter::And(..) => format!("({})", label_filter(b)),
                _ => label_filter(b),
            };
            format!("{l} and {r}")
        }
        LabelFilter::Or(a, b) => {
            // `a or (b or c)` must keep its parentheses to parse back to the same tree.
            let r = match b.as_ref() {
                LabelFilter::Or(..) => format!("({})", label_filter(b)),
                _ => label_filter(b),
            };
            format!("{} or {r}", label_filter(a))
        }
        LabelFilter::Matcher(m) => m.to_string(),
        LabelFilter::Compare { name, op, literal, .. } => format!("{name}{}{literal}", op.as_str()),
    }
}

fn unwrap_str(u: &Unwrap) -> String {
    let mut out = match u.conv {
        UnwrapConv::Number => format!("| unwrap {}", u.label),
        UnwrapConv::Duration => format!("| unwrap duration({})", u.label),
        UnwrapConv::DurationSeconds => format!("| unwrap duration_seconds({})", u.label),
        UnwrapConv::Bytes => format!("| unwrap bytes({})", u.label),
    };
    for f in &u.post_filters {
        let _ = write!(out, " | {}", label_filter(f));
    }
    out
}

pub fn log_to_string(l: &LogExpr) -> String {
    let mut out = selector(&l.matchers);
    for s in &l.pipeline {
        out.push(' ');
        out.push_str(&stage(s));
    }
    out
}

fn grouping(g: &Grouping) -> String {
    format!("{} ({})", if g.without { "without" } else { "by" }, g.labels.join(", "))
}

fn range_inner(r: &RangeAgg) -> String {
    let mut out = log_to_string(&r.log);
    if let Some(u) = &r.unwrap {
        out.push(' ');
        out.push_str(&unwrap_str(u));
    }
    let _ = write!(out, " [{}]", format_duration(r.range));
    if r.offset != 0 {
        let _ = write!(out, " offset {}", format_duration(r.offset));
    }
    out
}

fn matching(m: &VectorMatching) -> String {
    let mut out = format!("{} ({})", if m.on { "on" } else { "ignoring" }, m.labels.join(", "));
    if let Some(side) = m.group {
        let _ = write!(
            out,
            " {} ({})",
            if side == GroupSide::Left { "group_left" } else { "group_right" },
            m.include.join(", ")
        );
    }
    out
}

fn binop_str(b: &BinaryExpr) -> String {
    let mut op = b.op.as_str().to_string();
    if b.return_bool {
        op.push_str(" bool");
    }
    if let Some(m) = &b.matching {
        op.push(' ');
        op.push_str(&matching(m));
    }
    op
}

pub fn metric_to_string(e: &MetricExpr) -> String {
    match e {
        MetricExpr::Range(r) => {
            let param = r.param.map(|p| format!("{}, ", go_float(p))).unwrap_or_default();
            let g = r.grouping.as_ref().map(|g| format!(" {}", grouping(g))).unwrap_or_default();
            format!("{}({param}{}){g}", r.op.as_str(), range_inner(r))
        }
        MetricExpr::Vector(v) => {
            let g = v.grouping.as_ref().map(|g| format!(" {} ", grouping(g))).unwrap_or_default();
            let param = v.param.map(|p| format!("{}, ", go_float(p))).unwrap_or_default();
            format!("{}{g}({param}{})", v.op.as_str(), metric_to_string(&v.expr))
        }
        MetricExpr::Binary(b) => {
            format!("{} {} {}", metric_to_string(&b.lhs), binop_str(b), metric_to_string(&b.rhs))
        }
        MetricExpr::Literal(v) => go_float(*v),
        MetricExpr::VectorLit(v) => format!("vector({})", go_float(*v)),
        MetricExpr::Paren(e) => format!("({})", metric_to_string(e)),
        MetricExpr::LabelReplace(l) => format!(
            "label_replace({}, {}, {}, {}, {})",
            metric_to_string(&l.expr),
            quote(&l.dst),
            quote(&l.replacement),
            quote(&l.src),
            quote(&l.regex)
        ),
    }
}

impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Log(l) => f.write_str(&log_to_string(l)),
            Expr::Metric(m) => f.write_str(&metric_to_string(m)),
        }
    }
}

impl fmt::Display for LogExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&log_to_string(self))
    }
}

impl fmt::Display for MetricExpr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&metric_to_string(self))
    }
}

/// Pretty-prints a query: one line when it fits in 100 columns, otherwise one pipeline stage
/// per line and nested aggregations indented by two spaces.
pub fn format_query(e: &Expr) -> String {
    match e {
        Expr::Log(l) => pretty_log(l, 0),
        Expr::Metric(m) => pretty_metric(m, 0),
    }
}

fn pad(level: usize) -> String {
    "  ".repeat(level)
}

fn pretty_log(l: &LogExpr, level: usize) -> String {
    let one = log_to_string(l);
    if one.len() + level * 2 <= MAX_WIDTH {
        return format!("{}{one}", pad(level));
    }
    let mut out = format!("{}{}", pad(level), selector(&l.matchers));
    for s in &l.pipeline {
        let _ = write!(out, "\n{}{}", pad(level + 1), stage(s));
    }
    out
}

fn pretty_metric(e: &MetricExpr, level: usize) -> String {
    let one = metric_to_string(e);
    if one.len() + level * 2 <= MAX_WIDTH {
        return format!("{}{one}", pad(level));
    }
    let p = pad(level);
    match e {
        MetricExpr::Range(r) => {
            let param = r.param.map(|x| format!("\n{}{},", pad(level + 1), go_float(x))).unwrap_or_default();
            let mut inner = pretty_log(&r.log, level + 1);
            if let Some(u) = &r.unwrap {
                let _ = write!(inner, "\n{}{}", pad(level + 2), unwrap_str(u));
            }
            let _ = write!(inner, " [{}]", format_duration(r.range));
            if r.offset != 0 {
                let _ = write!(inner, " offset {}", format_duration(r.offset));
            }
            let g = r.grouping.as_ref().map(|g| format!(" {}", grouping(g))).unwrap_or_default();
            format!("{p}{}({param}\n{inner}\n{p}){g}", r.op.as_str())
        }
        MetricExpr::Vector(v) => {
            let g = v.grouping.as_ref().map(|g| format!(" {} ", grouping(g))).unwrap_or_default();
            let param = v.param.map(|x| format!("\n{}{},", pad(level + 1), go_float(x))).unwrap_or_default();
            format!("{p}{}{g}({param}\n{}\n{p})", v.op.as_str(), pretty_metric(&v.expr, level + 1))
        }
        MetricExpr::Binary(b) => {
            format!("{}\n{p}{}\n{}", pretty_metric(&b.lhs, level), binop_str(b), pretty_metric(&b.rhs, level))
        }
        MetricExpr::Paren(inner) => format!("{p}(\n{}\n{p})", pretty_metric(inner, level + 1)),
        MetricExpr::LabelReplace(l) => format!(
            "{p}label_replace(\n{},\n{q}{},\n{q}{},\n{q}{},\n{q}{}\n{p})",
            pretty_metric(&l.expr, level + 1),
            quote(&l.dst),
            quote(&l.replacement),
            quote(&l.src),
            quote(&l.regex),
            q = pad(level + 1)
        ),
        MetricExpr::Literal(_) | MetricExpr::VectorLit(_) => format!("{p}{one}"),
    }
}
