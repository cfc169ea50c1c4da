//! The subset of Go's `text/template` that `line_format` and `label_format` use, with Loki's
//! functions (its own and the sprig ones it exposes).
//!
//! Supported: text and `{{ }}` actions with `{{-`/`-}}` trimming and `{{/* comments */}}`;
//! `.label` fields (a missing label is the empty string, as with Loki's `map[string]string`),
//! `.` itself; string, number, `true`/`false`/`nil` literals; function calls, pipelines
//! (`{{ .a | ToUpper | trunc 3 }}`, the piped value being the last argument), parenthesised
//! sub-pipelines; `if`/`else if`/`else`/`end`. Not supported: variables, `range`, `with`,
//! `define`/`template`.

use std::fmt;

use regex::Regex;

use crate::labels::{Labels, unquote_prefix};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("template: {name}:{msg}")]
pub struct TemplateError {
    pub name: String,
    pub msg: String,
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    pub source: String,
    nodes: Vec<Node>,
}

impl PartialEq for Template {
    fn eq(&self, o: &Self) -> bool {
        self.source == o.source
    }
}

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action(Pipeline),
    If { cond: Pipeline, then: Vec<Node>, els: Vec<Node> },
}

#[derive(Debug, Clone)]
struct Pipeline(Vec<Cmd>);

#[derive(Debug, Clone)]
struct Cmd {
    /// A function name, or `None` when the command is a single operand.
    func: Option<String>,
    args: Vec<Arg>,
}

#[derive(Debug, Clone)]
enum Arg {
    Field(String),
    Dot,
    Lit(Value),
    Sub(Pipeline),
    Func(String),
}

/// A template value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Unix nanoseconds (what `__timestamp__` and `toDate` return).
    Time(i64),
    Nil,
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Str(s) => f.write_str(s),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => f.write_str(&go_float(*x)),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Time(ns) => f.write_str(&format_go_time(*ns, "2006-01-02 15:04:05.999999999 -0700 UTC")),
            Value::Nil => f.write_str("<no value>"),
        }
    }
}

/// Go's `%v` for a float64: the shortest representation, exponent form for large/small values.
pub fn go_float(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    let abs = x.abs();
    if abs != 0.0 && !(1e-4..1e21).contains(&abs) {
        let s = format!("{x:e}");
        // Rust writes 1e21, Go 1e+21; Go pads the exponent to two digits.
        if let Some((m, e)) = s.split_once('e') {
            let (sign, digits) = if let Some(d) = e.strip_prefix('-') { ('-', d) } else { ('+', e) };
            return format!("{m}e{sign}{digits:0>2}");
        }
        return s;
    }
    format!("{x}")
}

impl Value {
    fn truthy(&self) -> bool {
        match self {
            Value::Str(s) => !s.is_empty(),
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Bool(b) => *b,
            Value::Time(_) => true,
            Value::Nil => false,
        }
    }
    fn as_f64(&self) -> f64 {
        match self {
            Value::Str(s) => s.trim().parse().unwrap_or(0.0),
            Value::Int(i) => *i as f64,
            Value::Float(f) => *f,
            Value::Bool(b) => f64::from(u8::from(*b)),
            Value::Time(t) => *t as f64,
            Value::Nil => 0.0,
        }
    }
    /// sprig's `toInt64`: strings are parsed, floats truncated.
    fn as_i64(&self) -> i64 {
        match self {
            Value::Str(s) => {
                let t = s.trim();
                t.parse::<i64>().unwrap_or_else(|_| t.parse::<f64>().map(|f| f as i64).unwrap_or(0))
            }
            Value::Int(i) => *i,
            Value::Float(f) => *f as i64,
            Value::Bool(b) => i64::from(*b),
            Value::Time(t) => *t,
            Value::Nil => 0,
        }
    }
    fn into_string(self) -> String {
        match self {
            Value::Str(s) => s,
            Value::Nil => String::new(),
            v => v.to_string(),
        }
    }
}

/// What a template sees: the entry's labels, line and timestamp.
pub struct TemplateContext<'a> {
    pub labels: &'a Labels,
    pub line: &'a str,
    pub ts: i64,
}

impl Template {
    pub fn parse(source: &str) -> Result<Template, TemplateError> {
        let mut p = TParser { src: source, pos: 0, pending_else_if: None };
        let (nodes, end) = p.nodes()?;
        if let Some(kw) = end {
            return Err(p.err(&format!("unexpected {{{{{kw}}}}}")));
        }
        Ok(Template { source: source.to_string(), nodes })
    }

    /// Renders the template. Errors are runtime errors (a bad regex, a division by zero…);
    /// the caller turns them into `__error__="TemplateFormatErr"`.
    pub fn render(&self, ctx: &TemplateContext<'_>) -> Result<String, TemplateError> {
        let mut out = String::new();
        render_nodes(&self.nodes, ctx, &mut out)?;
        Ok(out)
    }

    /// Whether rendering can only copy text (no actions): callers skip the work.
    pub fn is_static(&self) -> bool {
        self.nodes.iter().all(|n| matches!(n, Node::Text(_)))
    }
}

fn render_nodes(nodes: &[Node], ctx: &TemplateContext<'_>, out: &mut String) -> Result<(), TemplateError> {
    for n in nodes {
        match n {
            Node::Text(t) => out.push_str(t),
            Node::Action(p) => {
                let v = eval_pipeline(p, ctx)?;
                match v {
                    Value::Str(s) => out.push_str(&s),
                    v => out.push_str(&v.to_string()),
                }
            }
            Node::If { cond, then, els } => {
                if eval_pipeline(cond, ctx)?.truthy() {
                    render_nodes(then, ctx, out)?;
                } else {
                    render_nodes(els, ctx, out)?;
                }
            }
        }
    }
    Ok(())
}

fn eval_pipeline(p: &Pipeline, ctx: &TemplateContext<'_>) -> Result<Value, TemplateError> {
    let mut prev: Option<Value> = None;
    for cmd in &p.0 {
        let mut args = Vec::with_capacity(cmd.args.len() + 1);
        for a in &cmd.args {
            args.push(eval_arg(a, ctx)?);
        }
        let v = match &cmd.func {
            Some(name) => {
                if let Some(v) = prev.take() {
                    args.push(v);
                }
                call(name, args, ctx)?
            }
            None => {
                if prev.is_some() {
                    return Err(rt("can't give argument to non-function"));
                }
                args.pop().unwrap_or(Value::Nil)
            }
        };
        prev = Some(v);
    }
    Ok(prev.unwrap_or(Value::Nil))
}

fn eval_arg(a: &Arg, ctx: &TemplateContext<'_>) -> Result<Value, TemplateError> {
    Ok(match a {
        Arg::Field(name) => Value::Str(ctx.labels.get(name).unwrap_or("").to_string()),
        Arg::Dot => Value::Str(ctx.labels.to_string()),
        Arg::Lit(v) => v.clone(),
        Arg::Sub(p) => eval_pipeline(p, ctx)?,
        Arg::Func(name) => call(name, Vec::new(), ctx)?,
    })
}

fn rt(msg: &str) -> TemplateError {
    TemplateError { name: "line".into(), msg: format!(" {msg}") }
}

fn want(args: &[Value], n: usize, name: &str) -> Result<(), TemplateError> {
    if args.len() != n {
        return Err(rt(&format!("wrong number of args for {name}: want {n} got {}", args.len())));
    }
    Ok(())
}

/// The function names the parser accepts.
const FUNCS: &[&str] = &[
    "__line__",
    "__timestamp__",
    "ToLower",
    "ToUpper",
    "Replace",
    "Trim",
    "TrimLeft",
    "TrimRight",
    "TrimPrefix",
    "TrimSuffix",
    "TrimSpace",
    "lower",
    "upper",
    "title",
    "trunc",
    "substr",
    "contains",
    "hasPrefix",
    "hasSuffix",
    "indent",
    "nindent",
    "replace",
    "repeat",
    "trim",
    "trimAll",
    "trimPrefix",
    "trimSuffix",
    "regexReplaceAll",
    "regexReplaceAllLiteral",
    "count",
    "alignLeft",
    "alignRight",
    "default",
    "int",
    "float64",
    "add",
    "sub",
    "mul",
    "div",
    "mod",
    "addf",
    "subf",
    "mulf",
    "divf",
    "max",
    "min",
    "maxf",
    "minf",
    "ceil",
    "floor",
    "round",
    "printf",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "and",
    "or",
    "not",
    "len",
    "unixEpoch",
    "unixEpochMillis",
    "unixEpochNanos",
    "unixToTime",
    "toDate",
    "date",
    "now",
    "urlencode",
    "urldecode",
    "b64enc",
    "b64dec",
    "bytes",
    "duration",
    "duration_seconds",
    "fromJson",
    "print",
    "println",
    "html",
    "js",
    "urlquery",
    "quote",
    "squote",
    "empty",
    "coalesce",
    "ternary",
    "toString",
    "join",
    "nospace",
    "abbrev",
    "sha256sum",
    "cat",
];

fn call(name: &str, mut a: Vec<Value>, ctx: &TemplateContext<'_>) -> Result<Value, TemplateError> {
    let s = |v: &Value| v.clone().into_string();
    Ok(match name {
        "__line__" => Value::Str(ctx.line.to_string()),
        "__timestamp__" => Value::Time(ctx.ts),
        "now" => Value::Time(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as i64)
                .unwrap_or(0),
        ),
        "ToLower" | "lower" => {
            want(&a, 1, name)?;
            Value::Str(s(&a[0]).to_lowercase())
        }
        "ToUpper" | "upper" => {
            want(&a, 1, name)?;
            Value::Str(s(&a[0]).to_uppercase())
        }
        "title" => {
            want(&a, 1, name)?;
            let mut out = String::new();
            let mut start = true;
            for c in s(&a[0]).chars() {
                if start && c.is_alphabetic() {
                    out.extend(c.to_uppercase());
                } else {
                    out.push(c);
                }
                start = !c.is_alphanumeric();
            }
            Value::Str(out)
        }
        "Replace" => {
            // strings.Replace(s, old, new, n)
            want(&a, 4, name)?;
            let (src, old, new, n) = (s(&a[0]), s(&a[1]), s(&a[2]), a[3].as_i64());
            Value::Str(if n < 0 { src.replace(&old, &new) } else { src.replacen(&old, &new, n as usize) })
        }
        "replace" => {
            // sprig: replace old new s
            want(&a, 3, name)?;
            Value::Str(s(&a[2]).replace(&s(&a[0]), &s(&a[1])))
        }
        "Trim" | "trimAll" => {
            want(&a, 2, name)?;
            // Go's strings.Trim(s, cutset); sprig's trimAll(cutset, s).
            let (src, cut) = if name == "Trim" { (s(&a[0]), s(&a[1])) } else { (s(&a[1]), s(&a[0])) };
            Value::Str(src.trim_matches(|c| cut.contains(c)).to_string())
        }
        "TrimLeft" => {
            want(&a, 2, name)?;
            let cut = s(&a[1]);
            Value::Str(s(&a[0]).trim_start_matches(|c| cut.contains(c)).to_string())
        }
        "TrimRight" => {
            want(&a, 2, name)?;
            let cut = s(&a[1]);
            Value::Str(s(&a[0]).trim_end_matches(|c| cut.contains(c)).to_string())
        }
        "TrimPrefix" | "trimPrefix" => {
            want(&a, 2, name)?;
            let (src, p) = if name == "TrimPrefix" { (s(&a[0]), s(&a[1])) } else { (s(&a[1]), s(&a[0])) };
            Value::Str(src.strip_prefix(p.as_str()).unwrap_or(&src).to_string())
        }
        "TrimSuffix" | "trimSuffix" => {
            want(&a, 2, name)?;
            let (src, p) = if name == "TrimSuffix" { (s(&a[0]), s(&a[1])) } else { (s(&a[1]), s(&a[0])) };
            Value::Str(src.strip_suffix(p.as_str()).unwrap_or(&src).to_string())
        }
        "TrimSpace" | "trim" => {
            want(&a, 1, name)?;
            Value::Str(s(&a[0]).trim().to_string())
        }
        "nospace" => {
            want(&a, 1, name)?;
            Value::Str(s(&a[0]).chars().filter(|c| !c.is_whitespace()).collect())
        }
        "trunc" => {
            want(&a, 2, name)?;
            let n = a[0].as_i64();
            let src: Vec<char> = s(&a[1]).chars().collect();
            let len = src.len() as i64;
            Value::Str(if n >= 0 {
                src[..n.min(len) as usize].iter().collect()
            } else {
                src[(len + n).max(0) as usize..].iter().collect()
            })
        }
        "abbrev" => {
            want(&a, 2, name)?;
            let n = a[0].as_i64().max(0) as usize;
            let src: Vec<char> = s(&a[1]).chars().collect();
            Value::Str(if src.len() <= n || n < 4 {
                src.iter().collect()
            } else {
                let mut o: String = src[..n - 3].iter().collect();
                o.push_str("...");
                o
            })
        }
        "substr" => {
            want(&a, 3, name)?;
            let src: Vec<char> = s(&a[2]).chars().collect();
            let len = src.len() as i64;
            let (mut st, mut en) = (a[0].as_i64(), a[1].as_i64());
            if st < 0 {
                st = 0;
            }
            if en < 0 || en > len {
                en = len;
            }
            Value::Str(if st >= en { String::new() } else { src[st as usize..en as usize].iter().collect() })
        }
        "contains" => {
            want(&a, 2, name)?;
            Value::Bool(s(&a[1]).contains(&s(&a[0])))
        }
        "hasPrefix" => {
            want(&a, 2, name)?;
            Value::Bool(s(&a[1]).starts_with(&s(&a[0])))
        }
        "hasSuffix" => {
            want(&a, 2, name)?;
            Value::Bool(s(&a[1]).ends_with(&s(&a[0])))
        }
        "indent" | "nindent" => {
            want(&a, 2, name)?;
            let pad = " ".repeat(a[0].as_i64().clamp(0, 1024) as usize);
            let body = s(&a[1]).lines().map(|l| format!("{pad}{l}")).collect::<Vec<_>>().join("\n");
            Value::Str(if name == "nindent" { format!("\n{body}") } else { body })
        }
        "repeat" => {
            want(&a, 2, name)?;
            Value::Str(s(&a[1]).repeat(a[0].as_i64().clamp(0, 10_000) as usize))
        }
        "regexReplaceAll" | "regexReplaceAllLiteral" => {
            want(&a, 3, name)?;
            let re = Regex::new(&s(&a[0])).map_err(|e| rt(&e.to_string()))?;
            let (src, rep) = (s(&a[1]), s(&a[2]));
            Value::Str(if name == "regexReplaceAll" {
                re.replace_all(&src, rep.as_str()).into_owned()
            } else {
                re.replace_all(&src, regex::NoExpand(&rep)).into_owned()
            })
        }
        "count" => {
            want(&a, 2, name)?;
            let re = Regex::new(&s(&a[0])).map_err(|e| rt(&e.to_string()))?;
            Value::Int(re.find_iter(&s(&a[1])).count() as i64)
        }
        "alignLeft" | "alignRight" => {
            want(&a, 2, name)?;
            let n = a[0].as_i64().clamp(0, 10_000) as usize;
            let src: Vec<char> = s(&a[1]).chars().collect();
            Value::Str(if src.len() >= n {
                src[..n].iter().collect()
            } else if name == "alignLeft" {
                format!("{}{}", src.iter().collect::<String>(), " ".repeat(n - src.len()))
            } else {
                format!("{}{}", " ".repeat(n - src.len()), src.iter().collect::<String>())
            })
        }
        "default" => {
            // sprig: default DEFAULT GIVEN; a single argument is the default of an empty value.
            match a.len() {
                1 => a.remove(0),
                2 => {
                    if a[1].truthy() {
                        a.remove(1)
                    } else {
                        a.remove(0)
                    }
                }
                _ => return Err(rt("wrong number of args for default")),
            }
        }
        "coalesce" => a.into_iter().find(Value::truthy).unwrap_or(Value::Nil),
        "empty" => {
            want(&a, 1, name)?;
            Value::Bool(!a[0].truthy())
        }
        "ternary" => {
            want(&a, 3, name)?;
            if a[2].truthy() { a.remove(0) } else { a.remove(1) }
        }
        "int" => {
            want(&a, 1, name)?;
            Value::Int(a[0].as_i64())
        }
        "float64" => {
            want(&a, 1, name)?;
            Value::Float(a[0].as_f64())
        }
        "toString" => {
            want(&a, 1, name)?;
            Value::Str(s(&a[0]))
        }
        "add" | "sub" | "mul" | "div" | "mod" | "max" | "min" => {
            if a.is_empty() || (matches!(name, "sub" | "div" | "mod") && a.len() != 2) {
                return Err(rt(&format!("wrong number of args for {name}")));
            }
            let mut acc = a[0].as_i64();
            for v in &a[1..] {
                let x = v.as_i64();
                acc = match name {
                    "add" => acc.wrapping_add(x),
                    "sub" => acc.wrapping_sub(x),
                    "mul" => acc.wrapping_mul(x),
                    "div" | "mod" if x == 0 => return Err(rt("error calling div: integer divide by zero")),
                    "div" => acc.wrapping_div(x),
                    "mod" => acc.wrapping_rem(x),
                    "max" => acc.max(x),
                    _ => acc.min(x),
                };
            }
            Value::Int(acc)
        }
        "addf" | "subf" | "mulf" | "divf" | "maxf" | "minf" => {
            if a.is_empty() {
                return Err(rt(&format!("wrong number of args for {name}")));
            }
            let mut acc = a[0].as_f64();
            for v in &a[1..] {
                let x = v.as_f64();
                acc = match name {
                    "addf" => acc + x,
                    "subf" => acc - x,
                    "mulf" => acc * x,
                    "divf" => acc / x,
                    "maxf" => acc.max(x),
                    _ => acc.min(x),
                };
            }
            Value::Float(acc)
        }
        "ceil" | "floor" | "round" => {
            if a.is_empty() {
                return Err(rt(&format!("wrong number of args for {name}")));
            }
            let x = a[0].as_f64();
            Value::Float(match name {
                "ceil" => x.ceil(),
                "floor" => x.floor(),
                _ => {
                    let p = a.get(1).map(Value::as_i64).unwrap_or(0).clamp(0, 15) as i32;
                    let m = 10f64.powi(p);
                    (x * m).round() / m
                }
            })
        }
        "printf" => {
            if a.is_empty() {
                return Err(rt("wrong number of args for printf"));
            }
            let fmt = s(&a[0]);
            Value::Str(sprintf(&fmt, &a[1..]))
        }
        "print" | "cat" => Value::Str(a.iter().map(s).collect::<Vec<_>>().join(if name == "cat" { " " } else { "" })),
        "println" => Value::Str(format!("{}\n", a.iter().map(s).collect::<Vec<_>>().join(" "))),
        "join" => {
            want(&a, 2, name)?;
            Value::Str(s(&a[1]))
        }
        "quote" => Value::Str(a.iter().map(|v| format!("{:?}", s(v))).collect::<Vec<_>>().join(" ")),
        "squote" => Value::Str(a.iter().map(|v| format!("'{}'", s(v))).collect::<Vec<_>>().join(" ")),
        "eq" | "ne" | "lt" | "le" | "gt" | "ge" => {
            if a.len() < 2 {
                return Err(rt(&format!("wrong number of args for {name}")));
            }
            let ord = compare(&a[0], &a[1]);
            let r = match name {
                "eq" => a[1..].iter().any(|b| compare(&a[0], b) == Some(std::cmp::Ordering::Equal)),
                "ne" => ord != Some(std::cmp::Ordering::Equal),
                "lt" => ord == Some(std::cmp::Ordering::Less),
                "le" => matches!(ord, Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal)),
                "gt" => ord == Some(std::cmp::Ordering::Greater),
                _ => matches!(ord, Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)),
            };
            Value::Bool(r)
        }
        "and" => {
            // Go: the first falsy argument, or the last.
            let mut last = Value::Nil;
            for v in a {
                if !v.truthy() {
                    return Ok(v);
                }
                last = v;
            }
            last
        }
        "or" => {
            let mut last = Value::Nil;
            for v in a {
                if v.truthy() {
                    return Ok(v);
                }
                last = v;
            }
            last
        }
        "not" => {
            want(&a, 1, name)?;
            Value::Bool(!a[0].truthy())
        }
        "len" => {
            want(&a, 1, name)?;
            Value::Int(s(&a[0]).chars().count() as i64)
        }
        "unixEpoch" | "unixEpochMillis" | "unixEpochNanos" => {
            want(&a, 1, name)?;
            let ns = match &a[0] {
                Value::Time(t) => *t,
                v => v.as_i64(),
            };
            Value::Int(match name {
                "unixEpoch" => ns.div_euclid(1_000_000_000),
                "unixEpochMillis" => ns.div_euclid(1_000_000),
                _ => ns,
            })
        }
        "unixToTime" => {
            want(&a, 1, name)?;
            let v = s(&a[0]);
            let n: i64 = v.trim().parse().map_err(|_| rt(&format!("unable to parse {v:?} as a unix time")))?;
            // Loki infers the unit from the number of digits.
            Value::Time(match v.trim().len() {
                0..=10 => n.saturating_mul(1_000_000_000),
                11..=13 => n.saturating_mul(1_000_000),
                14..=16 => n.saturating_mul(1000),
                _ => n,
            })
        }
        "toDate" => {
            want(&a, 2, name)?;
            let v = s(&a[1]);
            Value::Time(parse_go_time(&s(&a[0]), &v).ok_or_else(|| rt(&format!("unable to parse {v:?} as a date")))?)
        }
        "date" => {
            want(&a, 2, name)?;
            let ns = match &a[1] {
                Value::Time(t) => *t,
                v => v.as_i64(),
            };
            Value::Str(format_go_time(ns, &s(&a[0])))
        }
        "urlencode" | "urlquery" => Value::Str(a.iter().map(|v| urlencode(&s(v))).collect::<Vec<_>>().join("")),
        "urldecode" => {
            want(&a, 1, name)?;
            Value::Str(urldecode(&s(&a[0])))
        }
        "b64enc" => {
            want(&a, 1, name)?;
            Value::Str(b64enc(s(&a[0]).as_bytes()))
        }
        "b64dec" => {
            want(&a, 1, name)?;
            Value::Str(b64dec(&s(&a[0])).unwrap_or_default())
        }
        "bytes" => {
            want(&a, 1, name)?;
            let v = s(&a[0]);
            Value::Int(super::lexer::parse_bytes(v.trim()).map(|b| b as i64).unwrap_or(0))
        }
        "duration" | "duration_seconds" => {
            want(&a, 1, name)?;
            let v = s(&a[0]);
            Value::Float(super::lexer::parse_duration(v.trim()).map(|d| d as f64 / 1e9).unwrap_or(0.0))
        }
        "fromJson" => {
            want(&a, 1, name)?;
            Value::Str(s(&a[0]))
        }
        "html" | "js" => Value::Str(a.iter().map(s).collect::<Vec<_>>().join("")),
        "sha256sum" => return Err(rt("function \"sha256sum\" not supported")),
        other => return Err(rt(&format!("function {other:?} not defined"))),
    })
}

fn compare(a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match (a, b) {
        (Value::Str(x), Value::Str(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Nil, Value::Nil) => Some(std::cmp::Ordering::Equal),
        (Value::Str(x), y) | (y, Value::Str(x)) if x.parse::<f64>().is_err() => {
            let _ = y;
            None
        }
        _ => a.as_f64().partial_cmp(&b.as_f64()),
    }
}

/// Go's `fmt.Sprintf` for the verbs templates use: `%s %v %d %f %.Nf %q %x %%` with widths.
pub fn sprintf(fmt: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut it = fmt.chars().peekable();
    let mut ai = 0;
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = String::new();
        while let Some(&n) = it.peek() {
            if n.is_ascii_digit() || n == '.' || n == '-' || n == '+' || n == ' ' || n == '0' {
                spec.push(n);
                it.next();
            } else {
                break;
            }
        }
        let Some(verb) = it.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(ai) else {
            out.push_str(&format!("%!{verb}(MISSING)"));
            continue;
        };
        ai += 1;
        let left = spec.starts_with('-');
        let zero = spec.starts_with('0');
        let spec_t = spec.trim_start_matches(['-', '0', '+', ' ']);
        let (width, prec) = match spec_t.split_once('.') {
            Some((w, p)) => (w.parse::<usize>().ok(), Some(p.parse::<usize>().unwrap_or(0))),
            None => (spec_t.parse::<usize>().ok(), None),
        };
        let body = match verb {
            'd' => arg.as_i64().to_string(),
            'f' | 'F' => format!("{:.*}", prec.unwrap_or(6), arg.as_f64()),
            'e' => format!("{:.*e}", prec.unwrap_or(6), arg.as_f64()),
            'g' => go_float(arg.as_f64()),
            'q' => format!("{:?}", arg.clone().into_string()),
            'x' => match arg {
                Value::Int(i) => format!("{i:x}"),
                v => v.clone().into_string().bytes().map(|b| format!("{b:02x}")).collect(),
            },
            't' => arg.truthy().to_string(),
            _ => {
                let s = arg.clone().into_string();
                match prec {
                    Some(p) => s.chars().take(p).collect(),
                    None => s,
                }
            }
        };
        let w = width.unwrap_or(0);
        let len = body.chars().count();
        if len >= w {
            out.push_str(&body);
        } else if left {
            out.push_str(&body);
            out.push_str(&" ".repeat(w - len));
        } else {
            out.push_str(&(if zero { "0" } else { " " }).repeat(w - len));
            out.push_str(&body);
        }
    }
    if ai < args.len() {
        out.push_str("%!(EXTRA ");
        out.push_str(&args[ai..].iter().map(|v| v.clone().into_string()).collect::<Vec<_>>().join(", "));
        out.push(')');
    }
    out
}

fn urlencode(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            o.push(b as char);
        } else if b == b' ' {
            o.push('+');
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

fn urldecode(s: &str) -> String {
    let b = s.as_bytes();
    let mut o = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => o.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(v) => {
                        o.push(v);
                        i += 2;
                    }
                    Err(_) => o.push(b'%'),
                }
            }
            c => o.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&o).into_owned()
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn b64enc(data: &[u8]) -> String {
    let mut o = String::new();
    for chunk in data.chunks(3) {
        let n = chunk.len();
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for k in 0..4 {
            if k <= n {
                o.push(B64[((v >> (18 - 6 * k)) & 63) as usize] as char);
            } else {
                o.push('=');
            }
        }
    }
    o
}

fn b64dec(s: &str) -> Option<String> {
    let mut bits = 0u32;
    let mut nbits = 0;
    let mut o = Vec::new();
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = B64.iter().position(|&x| x == c)? as u32;
        bits = (bits << 6) | v;
        nbits += 6;
        if nbits >= 8 {
            nbits -= 8;
            o.push((bits >> nbits) as u8);
            bits &= (1 << nbits) - 1;
        }
    }
    String::from_utf8(o).ok()
}

/// Civil date of days since the epoch (Howard Hinnant's algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];

/// Formats a UTC time with a Go layout (`2006-01-02T15:04:05.000Z07:00`, …): the common
/// elements; anything else is copied.
pub fn format_go_time(ns: i64, layout: &str) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let nanos = ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, mo, d) = civil(days);
    let (h, mi, s) = (sod / 3600, (sod / 60) % 60, sod % 60);
    let mut out = String::new();
    let mut rest = layout;
    const TOKENS: &[&str] = &[
        "2006",
        "Z07:00",
        "-0700",
        "-07:00",
        "Monday",
        "Mon",
        "January",
        "Jan",
        ".999999999",
        ".000000000",
        ".999999",
        ".000000",
        ".999",
        ".000",
        "01",
        "02",
        "15",
        "03",
        "04",
        "05",
        "06",
        "PM",
        "MST",
        "_2",
        "1",
        "2",
        "3",
        "4",
        "5",
    ];
    'outer: while !rest.is_empty() {
        for t in TOKENS {
            if let Some(r) = rest.strip_prefix(t) {
                match *t {
                    "2006" => out.push_str(&format!("{y:04}")),
                    "06" => out.push_str(&format!("{:02}", y % 100)),
                    "01" => out.push_str(&format!("{mo:02}")),
                    "1" => out.push_str(&mo.to_string()),
                    "January" | "Jan" => {
                        let m = MONTHS[(mo - 1) as usize];
                        out.push_str(m);
                    }
                    "Monday" | "Mon" => out.push_str(DAYS[days.rem_euclid(7) as usize]),
                    "02" => out.push_str(&format!("{d:02}")),
                    "_2" => out.push_str(&format!("{d:>2}")),
                    "2" => out.push_str(&d.to_string()),
                    "15" => out.push_str(&format!("{h:02}")),
                    "03" => out.push_str(&format!("{:02}", if h % 12 == 0 { 12 } else { h % 12 })),
                    "3" => out.push_str(&(if h % 12 == 0 { 12 } else { h % 12 }).to_string()),
                    "04" => out.push_str(&format!("{mi:02}")),
                    "4" => out.push_str(&mi.to_string()),
                    "05" => out.push_str(&format!("{s:02}")),
                    "5" => out.push_str(&s.to_string()),
                    "PM" => out.push_str(if h >= 12 { "PM" } else { "AM" }),
                    "MST" => out.push_str("UTC"),
                    "Z07:00" => out.push('Z'),
                    "-0700" => out.push_str("+0000"),
                    "-07:00" => out.push_str("+00:00"),
                    frac => {
                        let digits = frac.len() - 1;
                        let v = format!("{nanos:09}");
                        let mut part = v[..digits].to_string();
                        if frac.as_bytes()[1] == b'9' {
                            part = part.trim_end_matches('0').to_string();
                            if !part.is_empty() {
                                out.push('.');
                                out.push_str(&part);
                            }
                        } else {
                            out.push('.');
                            out.push_str(&part);
                        }
                    }
                }
                rest = r;
                continue 'outer;
            }
        }
        let c = rest.chars().next().unwrap_or(' ');
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// Parses a time with the layouts `toDate` is used with in practice (RFC 3339 and
/// `2006-01-02 15:04:05`-style); other layouts are not supported.
fn parse_go_time(layout: &str, v: &str) -> Option<i64> {
    if let Some(t) = crate::push::parse_rfc3339(v) {
        return Some(t);
    }
    let v = v.trim();
    let with_t = if v.len() >= 19 { format!("{}T{}Z", &v[..10], &v[11..]) } else { format!("{}T00:00:00Z", v) };
    let _ = layout;
    crate::push::parse_rfc3339(&with_t)
}

// --- parsing -------------------------------------------------------------------------------

struct TParser<'a> {
    src: &'a str,
    pos: usize,
    /// The condition of an `{{else if …}}` just read, for the enclosing `if` to parse.
    pending_else_if: Option<Vec<TTok>>,
}

impl TParser<'_> {
    fn err(&self, msg: &str) -> TemplateError {
        let line = self.src[..self.pos.min(self.src.len())].matches('\n').count() + 1;
        TemplateError { name: format!("line:{line}"), msg: format!(" {msg}") }
    }

    /// Parses nodes until the end or an `{{else}}`/`{{end}}`, which it returns.
    fn nodes(&mut self) -> Result<(Vec<Node>, Option<String>), TemplateError> {
        let mut nodes = Vec::new();
        loop {
            let rest = &self.src[self.pos..];
            let Some(open) = rest.find("{{") else {
                if !rest.is_empty() {
                    nodes.push(Node::Text(rest.to_string()));
                }
                self.pos = self.src.len();
                return Ok((nodes, None));
            };
            let mut text = &rest[..open];
            let mut inner_start = self.pos + open + 2;
            if self.src[inner_start..].starts_with("- ") || self.src[inner_start..].starts_with("-\t") {
                text = text.trim_end();
                inner_start += 1;
            }
            if !text.is_empty() {
                nodes.push(Node::Text(text.to_string()));
            }
            self.pos = inner_start;
            let close = self.find_close()?;
            let mut inner_end = close;
            let mut after = close + 2;
            if close > inner_start && self.src[..close].ends_with(" -") {
                inner_end = close - 1;
                let trimmed = self.src[after..].trim_start();
                after = self.src.len() - trimmed.len();
            }
            let inner = self.src[inner_start..inner_end].trim();
            let action_pos = inner_start;
            self.pos = after;
            if inner.starts_with("/*") {
                if !inner.ends_with("*/") {
                    return Err(self.err("unclosed comment"));
                }
                continue;
            }
            let mut toks = tokenize(inner).map_err(|m| TemplateError {
                name: format!("line:{}", self.src[..action_pos].matches('\n').count() + 1),
                msg: format!(" {m}"),
            })?;
            match toks.first() {
                Some(TTok::Ident(k)) if k == "end" => {
                    if toks.len() != 1 {
                        return Err(self.err("unexpected tokens after end"));
                    }
                    return Ok((nodes, Some("end".into())));
                }
                Some(TTok::Ident(k)) if k == "else" => {
                    // `{{else if x}}` is returned as "else if" with the condition re-parsed by the caller.
                    if toks.len() > 1 {
                        if toks.get(1) != Some(&TTok::Ident("if".into())) {
                            return Err(self.err("unexpected tokens after else"));
                        }
                        toks.drain(..2);
                        self.pending_else_if = Some(toks);
                        return Ok((nodes, Some("else if".into())));
                    }
                    return Ok((nodes, Some("else".into())));
                }
                Some(TTok::Ident(k)) if k == "if" => {
                    toks.remove(0);
                    let node = self.if_node(toks)?;
                    nodes.push(node);
                }
                Some(TTok::Ident(k)) if matches!(k.as_str(), "range" | "with" | "define" | "template" | "block") => {
                    return Err(self.err(&format!("{k} is not supported")));
                }
                None => return Err(self.err("missing value for command")),
                _ => {
                    let mut i = 0;
                    let p = parse_pipeline(&toks, &mut i).map_err(|m| self.err(&m))?;
                    if i != toks.len() {
                        return Err(self.err("unexpected tokens in operand"));
                    }
                    nodes.push(Node::Action(p));
                }
            }
        }
    }

    fn if_node(&mut self, toks: Vec<TTok>) -> Result<Node, TemplateError> {
        let mut i = 0;
        let cond = parse_pipeline(&toks, &mut i).map_err(|m| self.err(&m))?;
        if i != toks.len() || toks.is_empty() {
            return Err(self.err("missing value for if"));
        }
        let (then, end) = self.nodes()?;
        let els = match end.as_deref() {
            Some("end") => Vec::new(),
            Some("else") => {
                let (els, end) = self.nodes()?;
                if end.as_deref() != Some("end") {
                    return Err(self.err("expected end; found EOF"));
                }
                els
            }
            Some("else if") => {
                let toks = self.pending_else_if.take().unwrap_or_default();
                vec![self.if_node(toks)?]
            }
            _ => return Err(self.err("unexpected EOF")),
        };
        Ok(Node::If { cond, then, els })
    }

    fn find_close(&self) -> Result<usize, TemplateError> {
        // Skips quoted strings so that "}}" inside one does not close the action.
        let b = self.src.as_bytes();
        let mut i = self.pos;
        while i < b.len() {
            match b[i] {
                b'"' | b'`' => match unquote_prefix(&self.src[i..]) {
                    Some((_, used)) => i += used,
                    None => return Err(self.err("unterminated quoted string")),
                },
                b'}' if b.get(i + 1) == Some(&b'}') => return Ok(i),
                _ => i += 1,
            }
        }
        Err(self.err("unclosed action"))
    }
}

#[derive(Debug, Clone, PartialEq)]
enum TTok {
    Field(String),
    Dot,
    Str(String),
    Num(String),
    Ident(String),
    Pipe,
    LParen,
    RParen,
}

fn tokenize(s: &str) -> Result<Vec<TTok>, String> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i];
        match c {
            b' ' | b'\t' | b'\n' | b'\r' => i += 1,
            b'|' => {
                out.push(TTok::Pipe);
                i += 1;
            }
            b'(' => {
                out.push(TTok::LParen);
                i += 1;
            }
            b')' => {
                out.push(TTok::RParen);
                i += 1;
            }
            b'"' | b'`' => {
                let (v, used) = unquote_prefix(&s[i..]).ok_or("unterminated quoted string")?;
                out.push(TTok::Str(v));
                i += used;
            }
            b'.' => {
                let mut j = i + 1;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                    j += 1;
                }
                if j == i + 1 {
                    out.push(TTok::Dot);
                } else {
                    out.push(TTok::Field(s[i + 1..j].to_string()));
                }
                i = j;
            }
            b'0'..=b'9' | b'-' | b'+' => {
                let mut j = i + 1;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'.') {
                    j += 1;
                }
                out.push(TTok::Num(s[i..j].to_string()));
                i = j;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let mut j = i;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_') {
                    j += 1;
                }
                out.push(TTok::Ident(s[i..j].to_string()));
                i = j;
            }
            _ => return Err(format!("unexpected {:?} in command", s[i..].chars().next().unwrap_or('?'))),
        }
    }
    Ok(out)
}

fn parse_pipeline(t: &[TTok], i: &mut usize) -> Result<Pipeline, String> {
    let mut cmds = Vec::new();
    loop {
        cmds.push(parse_cmd(t, i)?);
        if *i < t.len() && t[*i] == TTok::Pipe {
            *i += 1;
            continue;
        }
        break;
    }
    Ok(Pipeline(cmds))
}

fn parse_cmd(t: &[TTok], i: &mut usize) -> Result<Cmd, String> {
    let mut func = None;
    let mut args = Vec::new();
    if let Some(TTok::Ident(name)) = t.get(*i)
        && !matches!(name.as_str(), "true" | "false" | "nil")
    {
        if !FUNCS.contains(&name.as_str()) {
            return Err(format!(" function {name:?} not defined"));
        }
        func = Some(name.clone());
        *i += 1;
    }
    while *i < t.len() {
        let a = match &t[*i] {
            TTok::Pipe | TTok::RParen => break,
            TTok::Field(f) => Arg::Field(f.clone()),
            TTok::Dot => Arg::Dot,
            TTok::Str(s) => Arg::Lit(Value::Str(s.clone())),
            TTok::Num(n) => {
                if let Ok(v) = n.parse::<i64>() {
                    Arg::Lit(Value::Int(v))
                } else if let Ok(v) = n.parse::<f64>() {
                    Arg::Lit(Value::Float(v))
                } else {
                    return Err(format!("bad number syntax: {n:?}"));
                }
            }
            TTok::Ident(k) if k == "true" => Arg::Lit(Value::Bool(true)),
            TTok::Ident(k) if k == "false" => Arg::Lit(Value::Bool(false)),
            TTok::Ident(k) if k == "nil" => Arg::Lit(Value::Nil),
            TTok::Ident(k) => {
                if !FUNCS.contains(&k.as_str()) {
                    return Err(format!("function {k:?} not defined"));
                }
                Arg::Func(k.clone())
            }
            TTok::LParen => {
                *i += 1;
                let p = parse_pipeline(t, i)?;
                if t.get(*i) != Some(&TTok::RParen) {
                    return Err("unclosed left paren".into());
                }
                Arg::Sub(p)
            }
        };
        args.push(a);
        *i += 1;
    }
    if func.is_none() && args.len() != 1 {
        return Err(if args.is_empty() {
            "missing value for command".into()
        } else {
            "can't give argument to non-function".into()
        });
    }
    Ok(Cmd { func, args })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(t: &str, labels: &[(&str, &str)]) -> String {
        let l = Labels::from_pairs(labels.iter().copied());
        Template::parse(t)
            .unwrap()
            .render(&TemplateContext { labels: &l, line: "the line", ts: 1_700_000_000_000_000_000 })
            .unwrap()
    }

    #[test]
    fn basics() {
        assert_eq!(render("{{.a}}-{{ .b | ToUpper }}", &[("a", "x"), ("b", "y")]), "x-Y");
        assert_eq!(render(r#"{{ printf "%s=%05.1f" .a 3.14159 }}"#, &[("a", "pi")]), "pi=003.1");
        assert_eq!(render(r#"{{ .missing | default "none" }}"#, &[]), "none");
        assert_eq!(render(r#"{{ div .ms 1000 }}s"#, &[("ms", "2500")]), "2s");
        assert_eq!(
            render(r#"{{ if eq .s "200" }}ok{{ else if eq .s "500" }}err{{ else }}other{{ end }}"#, &[("s", "500")]),
            "err"
        );
        assert_eq!(render(r#"{{ regexReplaceAll "(\\d+)" .a "<$1>" }}"#, &[("a", "a12b")]), "a<12>b");
        assert_eq!(render(r#"{{ __line__ | trunc 3 }}"#, &[]), "the");
        assert_eq!(render(r#"{{ __timestamp__ | date "2006-01-02T15:04:05Z07:00" }}"#, &[]), "2023-11-14T22:13:20Z");
        assert_eq!(render("a {{- .x -}} b", &[("x", "X")]), "aXb");
        assert_eq!(render(r#"{{ .a | replace "-" "_" | upper }}"#, &[("a", "a-b")]), "A_B");
        assert_eq!(render(r#"{{ addf .a 1.5 }}"#, &[("a", "1")]), "2.5");
    }

    #[test]
    fn errors() {
        assert!(Template::parse("{{ .a ").is_err());
        assert!(Template::parse("{{ nosuch .a }}").is_err());
        assert!(Template::parse("{{ if .a }}x").is_err());
    }
}
