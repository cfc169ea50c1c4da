//! A recursive-descent LogQL parser (with precedence climbing for binary operators), written
//! from Loki's grammar (`pkg/logql/syntax/expr.y`) and documentation. Errors carry a line and
//! column and are worded as Loki's goyacc parser words them.

use regex::Regex;

use crate::labels::{MatchOp, Matcher, is_valid_label_name, sanitize_label_name};
use crate::logql::ast::*;
use crate::logql::lexer::{Tok, lex, parse_duration};
use crate::logql::template::Template;

/// A LogQL parse error.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    #[error("parse error at line {line}, col {col}: {msg}")]
    At { line: usize, col: usize, msg: String },
    /// Errors about the query as a whole, which Loki reports without a position.
    #[error("parse error : {0}")]
    Query(String),
}

const EMPTY_MATCHERS: &str = "queries require at least one regexp or equality matcher that does not have an empty-compatible value. For instance, app=~\".*\" does not meet this requirement, but app=~\".+\" will";

/// Parses a LogQL query (log or metric).
pub fn parse_expr(src: &str) -> Result<Expr, ParseError> {
    let toks = lex(src).map_err(|e| pos_err(src, e.pos, e.msg))?;
    let mut p = Parser { src, toks, i: 0 };
    let e = if p.peek() == &Tok::LBrace { Expr::Log(p.log_expr()?) } else { Expr::Metric(p.metric_expr(0)?) };
    if p.peek() != &Tok::Eof {
        return Err(p.unexpected(None));
    }
    Ok(e)
}

/// Parses a log query, refusing a metric one.
pub fn parse_log_expr(src: &str) -> Result<LogExpr, ParseError> {
    match parse_expr(src)? {
        Expr::Log(l) => Ok(l),
        Expr::Metric(_) => Err(ParseError::Query("a log query was expected, not a metric query".into())),
    }
}

/// Parses a stream selector alone (`{app="x"}`), as `/series` and `/labels` take it.
pub fn parse_matchers(src: &str) -> Result<Vec<Matcher>, ParseError> {
    let toks = lex(src).map_err(|e| pos_err(src, e.pos, e.msg))?;
    let mut p = Parser { src, toks, i: 0 };
    let m = p.selector()?;
    if p.peek() != &Tok::Eof {
        return Err(p.unexpected(None));
    }
    Ok(m)
}

fn pos_err(src: &str, pos: usize, msg: String) -> ParseError {
    let before = &src[..pos.min(src.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map(|l| l.chars().count()).unwrap_or(0) + 1;
    ParseError::At { line, col, msg }
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<(Tok, usize)>,
    i: usize,
}

fn is_ident(t: &Tok, name: &str) -> bool {
    matches!(t, Tok::Ident(s) if s == name)
}

impl Parser<'_> {
    fn peek(&self) -> &Tok {
        &self.toks[self.i.min(self.toks.len() - 1)].0
    }
    fn peek_at(&self, n: usize) -> &Tok {
        &self.toks[(self.i + n).min(self.toks.len() - 1)].0
    }
    fn pos(&self) -> usize {
        self.toks[self.i.min(self.toks.len() - 1)].1
    }
    fn next(&mut self) -> Tok {
        let t = self.peek().clone();
        // `i` may step past `Eof` (peek clamps), so that `i -= 1` always puts a token back.
        self.i += 1;
        t
    }
    fn err_here(&self, msg: impl Into<String>) -> ParseError {
        pos_err(self.src, self.pos(), msg.into())
    }
    fn unexpected(&self, expecting: Option<&str>) -> ParseError {
        let mut msg = format!("syntax error: unexpected {}", self.peek().describe());
        if let Some(e) = expecting {
            msg.push_str(", expecting ");
            msg.push_str(e);
        }
        self.err_here(msg)
    }
    fn expect(&mut self, t: Tok, name: &str) -> Result<(), ParseError> {
        if *self.peek() == t {
            self.next();
            Ok(())
        } else {
            Err(self.unexpected(Some(name)))
        }
    }
    fn string(&mut self) -> Result<String, ParseError> {
        match self.peek() {
            Tok::Str(s) => {
                let s = s.clone();
                self.next();
                Ok(s)
            }
            _ => Err(self.unexpected(Some("STRING"))),
        }
    }
    fn ident(&mut self) -> Result<String, ParseError> {
        match self.peek() {
            Tok::Ident(s) => {
                let s = s.clone();
                self.next();
                Ok(s)
            }
            _ => Err(self.unexpected(Some("IDENTIFIER"))),
        }
    }
    fn label_name(&mut self) -> Result<String, ParseError> {
        let pos = self.pos();
        let n = self.ident()?;
        if !is_valid_label_name(&n) {
            return Err(pos_err(self.src, pos, format!("invalid label name {n:?}")));
        }
        Ok(n)
    }

    // --- selectors and log queries ---

    fn selector(&mut self) -> Result<Vec<Matcher>, ParseError> {
        self.expect(Tok::LBrace, "{")?;
        let mut ms = Vec::new();
        loop {
            if *self.peek() == Tok::RBrace {
                self.next();
                break;
            }
            if !ms.is_empty() {
                self.expect(Tok::Comma, ",")?;
                // A trailing comma is allowed, as in PromQL.
                if *self.peek() == Tok::RBrace {
                    self.next();
                    break;
                }
            }
            ms.push(self.matcher()?);
        }
        if ms.is_empty() || ms.iter().all(Matcher::matches_empty) {
            return Err(ParseError::Query(EMPTY_MATCHERS.into()));
        }
        Ok(ms)
    }

    fn matcher(&mut self) -> Result<Matcher, ParseError> {
        let name = self.label_name()?;
        let op = match self.next() {
            Tok::Eq => MatchOp::Eq,
            Tok::Neq => MatchOp::Neq,
            Tok::Re => MatchOp::Re,
            Tok::Nre => MatchOp::Nre,
            _ => {
                self.i -= 1;
                return Err(self.unexpected(Some("=, !=, =~ or !~")));
            }
        };
        let pos = self.pos();
        let value = self.string()?;
        Matcher::new(op, name, value).map_err(|e| pos_err(self.src, pos, e.to_string()))
    }

    fn log_expr(&mut self) -> Result<LogExpr, ParseError> {
        let matchers = self.selector()?;
        let (pipeline, unwrap) = self.pipeline()?;
        if unwrap.is_some() {
            return Err(ParseError::Query("unwrap is only allowed in a range aggregation".into()));
        }
        Ok(LogExpr { matchers, pipeline })
    }

    /// Parses pipeline stages; an `unwrap` (with its trailing label filters) ends the pipeline.
    fn pipeline(&mut self) -> Result<(Vec<Stage>, Option<Unwrap>), ParseError> {
        let mut stages = Vec::new();
        loop {
            match self.peek() {
                Tok::PipeExact | Tok::PipeMatch | Tok::Neq | Tok::Nre => {
                    stages.push(Stage::LineFilter(self.line_filter()?));
                }
                Tok::Pipe => {
                    self.next();
                    if is_ident(self.peek(), "unwrap") {
                        let u = self.unwrap()?;
                        return Ok((stages, Some(u)));
                    }
                    stages.push(self.stage()?);
                }
                _ => return Ok((stages, None)),
            }
        }
    }

    fn line_filter(&mut self) -> Result<LineFilter, ParseError> {
        let op = match self.next() {
            Tok::PipeExact => FilterOp::Contains,
            Tok::PipeMatch => FilterOp::Match,
            Tok::Neq => FilterOp::NotContains,
            _ => FilterOp::NotMatch,
        };
        let mut values = Vec::new();
        let mut matchers = Vec::new();
        loop {
            let pos = self.pos();
            if is_ident(self.peek(), "ip") {
                return Err(self.err_here("ip() line filters are not supported"));
            }
            let v = self.string()?;
            let m = match op {
                FilterOp::Contains | FilterOp::NotContains => LineMatcher::literal(&v),
                _ => compile_line_regex(&v).map_err(|e| pos_err(self.src, pos, e))?,
            };
            values.push(v);
            matchers.push(m);
            // `or` followed by a string continues the filter; otherwise it is a binary operator.
            if is_ident(self.peek(), "or") && matches!(self.peek_at(1), Tok::Str(_)) {
                self.next();
                continue;
            }
            break;
        }
        Ok(LineFilter { op, values, matchers })
    }

    fn stage(&mut self) -> Result<Stage, ParseError> {
        let pos = self.pos();
        let name = match self.peek() {
            Tok::Ident(s) => s.clone(),
            Tok::LParen => return Ok(Stage::LabelFilter(self.label_filter()?)),
            _ => return Err(self.unexpected(None)),
        };
        // A keyword followed by a comparison is a label filter on a label of that name.
        if matches!(
            self.peek_at(1),
            Tok::Eq | Tok::Neq | Tok::Re | Tok::Nre | Tok::Gt | Tok::Ge | Tok::Lt | Tok::Le | Tok::CmpEq
        ) {
            return Ok(Stage::LabelFilter(self.label_filter()?));
        }
        match name.as_str() {
            "json" => {
                self.next();
                let params = self.extraction_params()?;
                let mut out = Vec::new();
                for (label, path) in params {
                    let steps = parse_json_path(&path).map_err(|m| pos_err(self.src, pos, m))?;
                    out.push((label, JsonPath { source: path, steps }));
                }
                Ok(Stage::Parser(ParserStage::Json(out)))
            }
            "logfmt" => {
                self.next();
                let (mut strict, mut keep_empty) = (false, false);
                while let Tok::Flag(f) = self.peek() {
                    match f.as_str() {
                        "--strict" => strict = true,
                        "--keep-empty" => keep_empty = true,
                        other => return Err(self.err_here(format!("invalid logfmt flag {other}"))),
                    }
                    self.next();
                }
                let params = self.extraction_params()?;
                Ok(Stage::Parser(ParserStage::Logfmt { strict, keep_empty, params }))
            }
            "regexp" => {
                self.next();
                let spos = self.pos();
                let src = self.string()?;
                let re = Regex::new(&src).map_err(|e| pos_err(self.src, spos, format!("invalid regexp: {e}")))?;
                let names: Vec<Option<String>> = re.capture_names().map(|n| n.map(sanitize_label_name)).collect();
                if names.iter().all(Option::is_none) {
                    return Err(pos_err(self.src, spos, "at least one named capture must be supported".into()));
                }
                Ok(Stage::Parser(ParserStage::Regexp(RegexpParser { source: src, re, names })))
            }
            "pattern" => {
                self.next();
                let spos = self.pos();
                let src = self.string()?;
                let p = parse_pattern(&src).map_err(|m| pos_err(self.src, spos, m))?;
                Ok(Stage::Parser(ParserStage::Pattern(p)))
            }
            "unpack" => {
                self.next();
                Ok(Stage::Parser(ParserStage::Unpack))
            }
            "decolorize" => {
                self.next();
                Ok(Stage::Decolorize)
            }
            "line_format" => {
                self.next();
                let spos = self.pos();
                let src = self.string()?;
                let t = Template::parse(&src).map_err(|e| pos_err(self.src, spos, e.to_string()))?;
                Ok(Stage::LineFormat(t))
            }
            "label_format" => {
                self.next();
                let mut items = Vec::new();
                loop {
                    let dst = self.label_name()?;
                    self.expect(Tok::Eq, "=")?;
                    match self.peek().clone() {
                        Tok::Ident(_) => {
                            let src = self.label_name()?;
                            items.push(LabelFmt::Rename { dst, src });
                        }
                        Tok::Str(s) => {
                            let spos = self.pos();
                            self.next();
                            let t = Template::parse(&s).map_err(|e| pos_err(self.src, spos, e.to_string()))?;
                            items.push(LabelFmt::Template { dst, tmpl: t });
                        }
                        _ => return Err(self.unexpected(Some("IDENTIFIER or STRING"))),
                    }
                    if *self.peek() == Tok::Comma {
                        self.next();
                        continue;
                    }
                    break;
                }
                // Loki refuses the same label twice in one label_format.
                for (i, a) in items.iter().enumerate() {
                    let da = match a {
                        LabelFmt::Rename { dst, .. } | LabelFmt::Template { dst, .. } => dst,
                    };
                    if items[..i].iter().any(
                        |b| matches!(b, LabelFmt::Rename { dst, .. } | LabelFmt::Template { dst, .. } if dst == da),
                    ) {
                        return Err(pos_err(
                            self.src,
                            pos,
                            format!("multiple label name '{da}' not allowed in a single format operation"),
                        ));
                    }
                }
                Ok(Stage::LabelFormat(items))
            }
            "drop" | "keep" => {
                self.next();
                let mut items = Vec::new();
                loop {
                    if matches!(self.peek_at(1), Tok::Eq | Tok::Neq | Tok::Re | Tok::Nre) {
                        items.push(LabelSel::Matcher(self.matcher()?));
                    } else {
                        items.push(LabelSel::Name(self.label_name()?));
                    }
                    if *self.peek() == Tok::Comma {
                        self.next();
                        continue;
                    }
                    break;
                }
                Ok(if name == "drop" { Stage::Drop(items) } else { Stage::Keep(items) })
            }
            _ => Ok(Stage::LabelFilter(self.label_filter()?)),
        }
    }

    /// `a, b="path", c=path` after `json`/`logfmt`.
    fn extraction_params(&mut self) -> Result<Vec<(String, String)>, ParseError> {
        let mut out = Vec::new();
        if !matches!(self.peek(), Tok::Ident(_)) {
            return Ok(out);
        }
        loop {
            let label = self.label_name()?;
            if *self.peek() == Tok::Eq {
                self.next();
                let expr = self.string()?;
                out.push((label, expr));
            } else {
                out.push((label.clone(), label));
            }
            if *self.peek() == Tok::Comma {
                self.next();
                continue;
            }
            return Ok(out);
        }
    }

    fn unwrap(&mut self) -> Result<Unwrap, ParseError> {
        self.next(); // unwrap
        let conv = match self.peek() {
            Tok::Ident(s)
                if matches!(s.as_str(), "duration" | "duration_seconds" | "bytes")
                    && *self.peek_at(1) == Tok::LParen =>
            {
                let c = match s.as_str() {
                    "duration" => UnwrapConv::Duration,
                    "duration_seconds" => UnwrapConv::DurationSeconds,
                    _ => UnwrapConv::Bytes,
                };
                self.next();
                Some(c)
            }
            _ => None,
        };
        let label = if conv.is_some() {
            self.expect(Tok::LParen, "(")?;
            let l = self.label_name()?;
            self.expect(Tok::RParen, ")")?;
            l
        } else {
            self.label_name()?
        };
        let mut post_filters = Vec::new();
        while *self.peek() == Tok::Pipe {
            self.next();
            post_filters.push(self.label_filter()?);
        }
        Ok(Unwrap { conv: conv.unwrap_or(UnwrapConv::Number), label, post_filters })
    }

    // --- label filters ---

    fn label_filter(&mut self) -> Result<LabelFilter, ParseError> {
        let mut lhs = self.label_filter_and()?;
        while is_ident(self.peek(), "or") {
            self.next();
            let rhs = self.label_filter_and()?;
            lhs = LabelFilter::Or(Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn label_filter_and(&mut self) -> Result<LabelFilter, ParseError> {
        let mut lhs = self.label_filter_unary()?;
        loop {
            let explicit = is_ident(self.peek(), "and") || *self.peek() == Tok::Comma;
            // A space also means `and`: `| a="b" c>1`.
            let implicit = matches!(self.peek(), Tok::Ident(s) if !matches!(s.as_str(), "or" | "and" | "offset" | "by" | "without"))
                && matches!(
                    self.peek_at(1),
                    Tok::Eq | Tok::Neq | Tok::Re | Tok::Nre | Tok::Gt | Tok::Ge | Tok::Lt | Tok::Le | Tok::CmpEq
                );
            if !explicit && !implicit {
                return Ok(lhs);
            }
            if explicit {
                self.next();
            }
            let rhs = self.label_filter_unary()?;
            lhs = LabelFilter::And(Box::new(lhs), Box::new(rhs));
        }
    }

    fn label_filter_unary(&mut self) -> Result<LabelFilter, ParseError> {
        if *self.peek() == Tok::LParen {
            self.next();
            let f = self.label_filter()?;
            self.expect(Tok::RParen, ")")?;
            return Ok(f);
        }
        let name = self.label_name()?;
        let op_tok = self.next();
        let cmp = match op_tok {
            Tok::Eq | Tok::CmpEq => CmpOp::Eq,
            Tok::Neq => CmpOp::Neq,
            Tok::Gt => CmpOp::Gt,
            Tok::Ge => CmpOp::Ge,
            Tok::Lt => CmpOp::Lt,
            Tok::Le => CmpOp::Le,
            Tok::Re | Tok::Nre => {
                let pos = self.pos();
                let v = self.string()?;
                let op = if op_tok == Tok::Re { MatchOp::Re } else { MatchOp::Nre };
                return Matcher::new(op, name, v)
                    .map(LabelFilter::Matcher)
                    .map_err(|e| pos_err(self.src, pos, e.to_string()));
            }
            _ => {
                self.i -= 1;
                return Err(self.unexpected(Some("comparison operator")));
            }
        };
        let neg = if *self.peek() == Tok::Sub {
            self.next();
            true
        } else {
            false
        };
        let sign = if neg { -1.0 } else { 1.0 };
        let pre = if neg { "-" } else { "" };
        let t = self.next();
        let (kind, value, literal) = match t {
            Tok::Str(s) if matches!(op_tok, Tok::Eq | Tok::Neq) && !neg => {
                let op = if op_tok == Tok::Eq { MatchOp::Eq } else { MatchOp::Neq };
                return Matcher::new(op, name, s).map(LabelFilter::Matcher).map_err(|e| self.err_here(e.to_string()));
            }
            Tok::Num(v, text) => (ValueKind::Number, sign * v, format!("{pre}{text}")),
            Tok::Dur(ns, text) => (ValueKind::Duration, sign * ns as f64 / 1e9, format!("{pre}{text}")),
            Tok::Bytes(b, text) => (ValueKind::Bytes, sign * b as f64, format!("{pre}{text}")),
            Tok::Ident(s) if s == "ip" => return Err(self.err_here("ip() label filters are not supported")),
            _ => {
                self.i -= 1;
                return Err(self.unexpected(Some("NUMBER, DURATION, BYTES or STRING")));
            }
        };
        Ok(LabelFilter::Compare { name, op: cmp, kind, value, literal })
    }

    // --- metric queries ---

    fn metric_expr(&mut self, min_prec: u8) -> Result<MetricExpr, ParseError> {
        let mut lhs = self.metric_primary()?;
        while let Some(op) = self.binop() {
            let prec = op.precedence();
            if prec < min_prec {
                break;
            }
            self.next();
            let mut return_bool = false;
            if is_ident(self.peek(), "bool") {
                if !matches!(op, BinOp::Cmp(_)) {
                    return Err(self.err_here("bool modifier can only be used on comparison operators"));
                }
                self.next();
                return_bool = true;
            }
            let matching = self.vector_matching()?;
            // `^` is right-associative; everything else left.
            let next_min = if op == BinOp::Pow { prec } else { prec + 1 };
            let rhs = self.metric_expr(next_min)?;
            if op.is_set() && (lhs.is_scalar() || rhs.is_scalar()) {
                return Err(ParseError::Query(format!(
                    "unexpected literal for right leg of logical/set binary operation ({}): {}",
                    op.as_str(),
                    crate::logql::format::metric_to_string(&rhs)
                )));
            }
            if let MetricExpr::Paren(_) | MetricExpr::Literal(_) = &lhs
                && lhs.is_scalar()
                && rhs.is_scalar()
                && matches!(op, BinOp::Cmp(_))
                && !return_bool
            {
                return Err(ParseError::Query("comparisons between scalars must use BOOL modifier".into()));
            }
            lhs = MetricExpr::Binary(Box::new(BinaryExpr { op, lhs, rhs, return_bool, matching }));
        }
        Ok(lhs)
    }

    fn binop(&self) -> Option<BinOp> {
        Some(match self.peek() {
            Tok::Add => BinOp::Add,
            Tok::Sub => BinOp::Sub,
            Tok::Mul => BinOp::Mul,
            Tok::Div => BinOp::Div,
            Tok::Mod => BinOp::Mod,
            Tok::Pow => BinOp::Pow,
            Tok::CmpEq => BinOp::Cmp(CmpOp::Eq),
            Tok::Neq => BinOp::Cmp(CmpOp::Neq),
            Tok::Gt => BinOp::Cmp(CmpOp::Gt),
            Tok::Ge => BinOp::Cmp(CmpOp::Ge),
            Tok::Lt => BinOp::Cmp(CmpOp::Lt),
            Tok::Le => BinOp::Cmp(CmpOp::Le),
            Tok::Ident(s) if s == "or" => BinOp::Or,
            Tok::Ident(s) if s == "and" => BinOp::And,
            Tok::Ident(s) if s == "unless" => BinOp::Unless,
            _ => return None,
        })
    }

    fn vector_matching(&mut self) -> Result<Option<VectorMatching>, ParseError> {
        let on = match self.peek() {
            Tok::Ident(s) if s == "on" => true,
            Tok::Ident(s) if s == "ignoring" => false,
            _ => return Ok(None),
        };
        self.next();
        let labels = self.label_list()?;
        let mut vm = VectorMatching { on, labels, group: None, include: Vec::new() };
        let side = match self.peek() {
            Tok::Ident(s) if s == "group_left" => Some(GroupSide::Left),
            Tok::Ident(s) if s == "group_right" => Some(GroupSide::Right),
            _ => None,
        };
        if let Some(side) = side {
            self.next();
            vm.group = Some(side);
            if *self.peek() == Tok::LParen {
                vm.include = self.label_list()?;
            }
        }
        Ok(Some(vm))
    }

    fn label_list(&mut self) -> Result<Vec<String>, ParseError> {
        self.expect(Tok::LParen, "(")?;
        let mut out = Vec::new();
        loop {
            if *self.peek() == Tok::RParen {
                self.next();
                return Ok(out);
            }
            if !out.is_empty() {
                self.expect(Tok::Comma, ",")?;
            }
            out.push(self.label_name()?);
        }
    }

    fn grouping(&mut self) -> Result<Option<Grouping>, ParseError> {
        let without = match self.peek() {
            Tok::Ident(s) if s == "by" => false,
            Tok::Ident(s) if s == "without" => true,
            _ => return Ok(None),
        };
        self.next();
        let labels = self.label_list()?;
        Ok(Some(Grouping { without, labels }))
    }

    fn number(&mut self) -> Result<f64, ParseError> {
        let neg = if *self.peek() == Tok::Sub {
            self.next();
            true
        } else {
            false
        };
        match self.next() {
            Tok::Num(v, _) => Ok(if neg { -v } else { v }),
            _ => {
                self.i -= 1;
                Err(self.unexpected(Some("NUMBER")))
            }
        }
    }

    fn metric_primary(&mut self) -> Result<MetricExpr, ParseError> {
        match self.peek().clone() {
            Tok::Num(..) => Ok(MetricExpr::Literal(self.number()?)),
            Tok::Sub | Tok::Add => {
                let neg = *self.peek() == Tok::Sub;
                self.next();
                // Unary minus binds tighter than any binary operator but `^`: -a ^ 2 is -(a ^ 2).
                let inner = self.metric_expr(BinOp::Pow.precedence())?;
                if !neg {
                    return Ok(inner);
                }
                match inner {
                    MetricExpr::Literal(v) => Ok(MetricExpr::Literal(-v)),
                    e => Ok(MetricExpr::Binary(Box::new(BinaryExpr {
                        op: BinOp::Mul,
                        lhs: MetricExpr::Literal(-1.0),
                        rhs: e,
                        return_bool: false,
                        matching: None,
                    }))),
                }
            }
            Tok::LParen => {
                self.next();
                let e = self.metric_expr(0)?;
                self.expect(Tok::RParen, ")")?;
                Ok(MetricExpr::Paren(Box::new(e)))
            }
            Tok::Ident(name) => {
                if let Some(op) = RangeOp::from_name(&name) {
                    self.next();
                    return self.range_agg(op);
                }
                if let Some(op) = VecOp::from_name(&name) {
                    self.next();
                    return self.vector_agg(op);
                }
                match name.as_str() {
                    "vector" => {
                        self.next();
                        self.expect(Tok::LParen, "(")?;
                        let v = self.number()?;
                        self.expect(Tok::RParen, ")")?;
                        Ok(MetricExpr::VectorLit(v))
                    }
                    "label_replace" => {
                        self.next();
                        self.expect(Tok::LParen, "(")?;
                        let expr = self.metric_expr(0)?;
                        let mut args = Vec::new();
                        for _ in 0..4 {
                            self.expect(Tok::Comma, ",")?;
                            args.push(self.string()?);
                        }
                        self.expect(Tok::RParen, ")")?;
                        let regex = args[3].clone();
                        let re = Regex::new(&format!("^(?s:{regex})$"))
                            .map_err(|e| ParseError::Query(format!("invalid regex in label_replace: {e}")))?;
                        if !is_valid_label_name(&args[0]) {
                            return Err(ParseError::Query(format!(
                                "invalid destination label name in label_replace: {}",
                                args[0]
                            )));
                        }
                        Ok(MetricExpr::LabelReplace(Box::new(LabelReplace {
                            expr,
                            dst: args[0].clone(),
                            replacement: args[1].clone(),
                            src: args[2].clone(),
                            regex,
                            re,
                        })))
                    }
                    _ => Err(self.unexpected(None)),
                }
            }
            _ => Err(self.unexpected(None)),
        }
    }

    fn range_agg(&mut self, op: RangeOp) -> Result<MetricExpr, ParseError> {
        self.expect(Tok::LParen, "(")?;
        let mut param = None;
        if op == RangeOp::QuantileOverTime {
            param = Some(self.number()?);
            self.expect(Tok::Comma, ",")?;
        }
        let matchers = self.selector()?;
        let mut range = None;
        if *self.peek() == Tok::LBrack {
            range = Some(self.range()?);
        }
        let (pipeline, unwrap) = self.pipeline()?;
        if range.is_none() {
            if *self.peek() != Tok::LBrack {
                return Err(self.unexpected(Some("RANGE")));
            }
            range = Some(self.range()?);
        }
        let mut offset = 0;
        if is_ident(self.peek(), "offset") {
            self.next();
            let neg = if *self.peek() == Tok::Sub {
                self.next();
                true
            } else {
                false
            };
            match self.next() {
                Tok::Dur(d, _) => offset = if neg { -d } else { d },
                _ => {
                    self.i -= 1;
                    return Err(self.unexpected(Some("DURATION")));
                }
            }
        }
        self.expect(Tok::RParen, ")")?;
        let grouping = self.grouping()?;
        match (&unwrap, op.needs_unwrap(), op.allows_unwrap()) {
            (None, true, _) => {
                return Err(ParseError::Query(format!("invalid aggregation {} without unwrap", op.as_str())));
            }
            (Some(_), _, false) => {
                return Err(ParseError::Query(format!("invalid aggregation {} with unwrap", op.as_str())));
            }
            _ => {}
        }
        if grouping.is_some() && unwrap.is_none() {
            return Err(ParseError::Query(format!("grouping not allowed for {} aggregation", op.as_str())));
        }
        Ok(MetricExpr::Range(RangeAgg {
            op,
            log: LogExpr { matchers, pipeline },
            unwrap,
            range: range.unwrap_or(0),
            offset,
            param,
            grouping,
        }))
    }

    fn range(&mut self) -> Result<i64, ParseError> {
        self.expect(Tok::LBrack, "[")?;
        let d = match self.next() {
            Tok::Dur(d, _) => d,
            // `[0]` parses, to be refused below with Loki's message.
            Tok::Num(..) => 0,
            _ => {
                self.i -= 1;
                return Err(self.unexpected(Some("DURATION")));
            }
        };
        self.expect(Tok::RBrack, "]")?;
        if d <= 0 {
            return Err(ParseError::Query("range must be greater than zero".into()));
        }
        Ok(d)
    }

    fn vector_agg(&mut self, op: VecOp) -> Result<MetricExpr, ParseError> {
        let mut grouping = self.grouping()?;
        self.expect(Tok::LParen, "(")?;
        let mut param = None;
        if matches!(op, VecOp::Topk | VecOp::Bottomk) {
            let pos = self.pos();
            let k = self.number().map_err(|_| {
                pos_err(self.src, pos, format!("syntax error: parameter required for operation {}", op.as_str()))
            })?;
            if k < 1.0 || k.fract() != 0.0 {
                return Err(ParseError::Query(format!("invalid parameter {}({k},", op.as_str())));
            }
            param = Some(k);
            self.expect(Tok::Comma, ",")?;
        }
        let expr = self.metric_expr(0)?;
        self.expect(Tok::RParen, ")")?;
        if grouping.is_none() {
            grouping = self.grouping()?;
        }
        if matches!(op, VecOp::Sort | VecOp::SortDesc) && grouping.is_some() {
            return Err(ParseError::Query(format!("grouping not allowed for {} aggregation", op.as_str())));
        }
        Ok(MetricExpr::Vector(VectorAgg { op, param, grouping, expr: Box::new(expr) }))
    }
}

/// Compiles a `|~` regex: Loki's regexes are unanchored, matching anywhere in the line.
pub fn compile_line_regex(src: &str) -> Result<LineMatcher, String> {
    let re = regex::bytes::Regex::new(src).map_err(|e| format!("invalid regexp: {e}"))?;
    let required = required_literal(src).map(|l| memchr::memmem::Finder::new(l.as_bytes()).into_owned());
    Ok(LineMatcher::Regex { re, required })
}

/// The longest literal every match of the regex must contain, when the top of the regex is a
/// concatenation with a literal piece (`error.*timeout` → `timeout`); case-insensitive parts are
/// classes, not literals, so they are never chosen.
pub fn required_literal(src: &str) -> Option<String> {
    use regex_syntax::hir::{HirKind, Literal};
    let hir = regex_syntax::Parser::new().parse(src).ok()?;
    let lit_of = |h: &regex_syntax::hir::Hir| -> Option<String> {
        match h.kind() {
            HirKind::Literal(Literal(b)) => std::str::from_utf8(b).ok().map(str::to_string),
            _ => None,
        }
    };
    let mut best: Option<String> = None;
    let mut consider = |s: Option<String>| {
        if let Some(s) = s
            && s.len() >= 2
            && best.as_ref().is_none_or(|b| s.len() > b.len())
        {
            best = Some(s);
        }
    };
    let strip = |h: &regex_syntax::hir::Hir| -> regex_syntax::hir::Hir {
        match h.kind() {
            HirKind::Capture(c) => (*c.sub).clone(),
            _ => h.clone(),
        }
    };
    let top = strip(&hir);
    match top.kind() {
        HirKind::Literal(_) => consider(lit_of(&top)),
        HirKind::Concat(parts) => {
            for p in parts {
                consider(lit_of(&strip(p)));
            }
        }
        _ => {}
    }
    best
}

fn parse_json_path(src: &str) -> Result<Vec<JsonStep>, String> {
    let b = src.as_bytes();
    let mut steps = Vec::new();
    let mut i = 0;
    let bad = || format!("invalid json expression {src:?}");
    while i < b.len() {
        match b[i] {
            b'.' if i > 0 => i += 1,
            b'[' => {
                i += 1;
                if i < b.len() && (b[i] == b'"' || b[i] == b'\'') {
                    let q = b[i];
                    let end = src[i + 1..].find(q as char).ok_or_else(bad)? + i + 1;
                    steps.push(JsonStep::Key(src[i + 1..end].to_string()));
                    i = end + 1;
                } else {
                    let end = src[i..].find(']').ok_or_else(bad)? + i;
                    let n: usize = src[i..end].trim().parse().map_err(|_| bad())?;
                    steps.push(JsonStep::Index(n));
                    i = end;
                }
                if b.get(i) != Some(&b']') {
                    return Err(bad());
                }
                i += 1;
            }
            _ => {
                let start = i;
                while i < b.len() && b[i] != b'.' && b[i] != b'[' {
                    i += 1;
                }
                if start == i {
                    return Err(bad());
                }
                steps.push(JsonStep::Key(src[start..i].to_string()));
            }
        }
    }
    if steps.is_empty() {
        return Err(bad());
    }
    Ok(steps)
}

/// Parses a `pattern` expression: literals and `<name>` / `<_>` captures.
pub fn parse_pattern(src: &str) -> Result<Pattern, String> {
    let mut parts = Vec::new();
    let mut lit = String::new();
    let mut rest = src;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('<') {
            let end = after.find('>');
            let name = end.map(|e| &after[..e]);
            if let (Some(e), Some(n)) = (end, name)
                && (n == "_" || is_valid_label_name(n))
            {
                if !lit.is_empty() {
                    parts.push(PatternPart::Literal(std::mem::take(&mut lit)));
                }
                if matches!(parts.last(), Some(PatternPart::Capture(_))) {
                    return Err("syntax error: consecutive capture".into());
                }
                parts.push(PatternPart::Capture(if n == "_" { None } else { Some(n.to_string()) }));
                rest = &after[e + 1..];
                continue;
            }
        }
        let c = rest.chars().next().unwrap_or(' ');
        lit.push(c);
        rest = &rest[c.len_utf8()..];
    }
    if !lit.is_empty() {
        parts.push(PatternPart::Literal(lit));
    }
    if !parts.iter().any(|p| matches!(p, PatternPart::Capture(Some(_)))) {
        return Err("at least one capture is required".into());
    }
    let mut seen = std::collections::HashSet::new();
    for p in &parts {
        if let PatternPart::Capture(Some(n)) = p
            && !seen.insert(n.as_str())
        {
            return Err(format!("duplicate capture name ({n})"));
        }
    }
    Ok(Pattern { source: src.to_string(), parts })
}

/// `parse_duration` re-exported for hosts parsing `step=`/`since=` the LogQL way.
pub fn duration(s: &str) -> Option<i64> {
    parse_duration(s)
}
