//! The templates of alerting rules' labels and annotations: the part of Go's `text/template`
//! that rule files use, with Prometheus's functions (`humanize`, `query`, …).
//!
//! Written by hand because no Rust crate implements Go's template language: the Handlebars-
//! and Jinja-like crates differ in syntax (`{{ $labels.x }}`, pipes, `-}}` trimming) and in
//! what they print (Go's `%v` of a float is `1.234567e+06`), and a rule file moved over from
//! Prometheus must render the same text. Parsing checks what Go's parser checks (functions
//! and variables must exist), so `promtool check rules` and opsloop refuse the same files.
//! Every failure is a [`TemplateError`]; nothing here panics on input.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::promql::{InstantSample, PromqlError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `template: NAME:LINE: message`, Go's wording.
    #[error("template: {name}:{line}: {message}")]
    Parse { name: String, line: usize, message: String },
    #[error("error executing template {name}: {message}")]
    Exec { name: String, message: String },
}

/// A value inside a template: Go's dynamic values, reduced to what rules meet.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Value>),
    /// Label maps, and the structs templates see (a query result's sample is
    /// `{Labels, Value}`), keys sorted as Go prints maps.
    Map(BTreeMap<String, Value>),
}

impl Value {
    fn truthy(&self) -> bool {
        match self {
            Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(i) => *i != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) => !s.is_empty(),
            Value::List(l) => !l.is_empty(),
            Value::Map(m) => !m.is_empty(),
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float64",
            Value::Str(_) => "string",
            Value::List(_) => "slice",
            Value::Map(_) => "map",
        }
    }

    /// Go's `%v`.
    pub fn to_go_string(&self) -> String {
        match self {
            Value::Nil => "<no value>".into(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Float(f) => go_float_v(*f),
            Value::Str(s) => s.clone(),
            Value::List(l) => format!("[{}]", l.iter().map(Value::to_go_string).collect::<Vec<_>>().join(" ")),
            Value::Map(m) => {
                format!(
                    "map[{}]",
                    m.iter().map(|(k, v)| format!("{k}:{}", v.to_go_string())).collect::<Vec<_>>().join(" ")
                )
            }
        }
    }

    fn labels(map: &BTreeMap<String, String>) -> Value {
        Value::Map(map.iter().map(|(k, v)| (k.clone(), Value::Str(v.clone()))).collect())
    }
}

/// What an alert's templates are expanded with.
#[derive(Debug, Clone, Default)]
pub struct TemplateData {
    pub labels: BTreeMap<String, String>,
    pub external_labels: BTreeMap<String, String>,
    pub external_url: String,
    pub value: f64,
}

/// Runs a PromQL query at the alert's evaluation time, for `query`.
pub type QueryFn<'a> = &'a dyn Fn(&str) -> Result<Vec<InstantSample>, PromqlError>;

/// The variables a rule's template has before it starts, as Prometheus defines them.
const PREDEFINED: &[&str] = &["labels", "externalLabels", "externalURL", "value"];

/// Function names Go's parser accepts in Prometheus's templates: Go's builtins and
/// Prometheus's own.
const FUNCTIONS: &[&str] = &[
    "and",
    "or",
    "not",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "len",
    "index",
    "slice",
    "print",
    "printf",
    "println",
    "html",
    "js",
    "urlquery",
    "call",
    "query",
    "first",
    "label",
    "value",
    "strvalue",
    "args",
    "reReplaceAll",
    "safeHtml",
    "match",
    "title",
    "toUpper",
    "toLower",
    "graphLink",
    "tableLink",
    "sortByLabel",
    "humanize",
    "humanize1024",
    "humanizeDuration",
    "humanizePercentage",
    "humanizeTimestamp",
    "toTime",
    "pathPrefix",
    "externalURL",
    "parseDuration",
    "stripPort",
    "stripDomain",
];

/// Checks `text` as Prometheus's `ParseTest` does, with the predefined variables.
pub fn parse_check(text: &str, name: &str) -> Result<(), TemplateError> {
    Template::parse(text, name).map(|_| ())
}

/// Parses and runs `text` with `data`; `query` answers the `query` function (absent: an error
/// if the template calls it).
pub fn expand(
    text: &str,
    name: &str,
    data: &TemplateData,
    query: Option<QueryFn<'_>>,
) -> Result<String, TemplateError> {
    Template::parse(text, name)?.execute(data, query)
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    name: String,
    nodes: Vec<Node>,
}

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action(Pipeline),
    If { pipe: Pipeline, then: Vec<Node>, otherwise: Vec<Node> },
    With { pipe: Pipeline, then: Vec<Node>, otherwise: Vec<Node> },
    Range { pipe: Pipeline, body: Vec<Node>, otherwise: Vec<Node> },
}

#[derive(Debug, Clone)]
struct Pipeline {
    /// Variables declared (`:=`) or assigned (`=`) by the pipeline.
    vars: Vec<String>,
    assign: bool,
    cmds: Vec<Vec<Operand>>,
}

#[derive(Debug, Clone)]
enum Operand {
    Func(String),
    Dot(Vec<String>),
    Var(String, Vec<String>),
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Nil,
    Paren(Box<Pipeline>, Vec<String>),
}

// ---------------------------------------------------------------------------------------------
// Lexing

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Var(String),
    Field(String),
    Dot,
    Str(String),
    Num(String),
    Pipe,
    LParen,
    RParen,
    Declare,
    Assign,
    Comma,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    /// Whether whitespace came before it: `.a.b` chains, `.a .b` are two arguments.
    spaced: bool,
}

#[derive(Debug)]
enum Item {
    Text(String),
    Action { tokens: Vec<Token>, line: usize },
}

fn lex(text: &str, name: &str) -> Result<Vec<Item>, TemplateError> {
    let err = |line: usize, message: String| TemplateError::Parse { name: name.to_owned(), line, message };
    let mut items = Vec::new();
    let mut rest = text;
    let mut line = 1;
    let mut trim_next = false;
    while !rest.is_empty() {
        let Some(open) = rest.find("{{") else {
            let t = if trim_next { rest.trim_start() } else { rest };
            items.push(Item::Text(t.to_owned()));
            break;
        };
        let mut chunk = &rest[..open];
        if trim_next {
            chunk = chunk.trim_start();
        }
        let after = &rest[open + 2..];
        let trim_left =
            after.starts_with("- ") || after.starts_with("-\t") || after.starts_with("-\n") || after.starts_with("-\r");
        if trim_left {
            chunk = chunk.trim_end();
        }
        line += rest[..open].matches('\n').count();
        if !chunk.is_empty() {
            items.push(Item::Text(chunk.to_owned()));
        }
        let mut body = if trim_left { &after[2..] } else { after };
        let action_line = line;
        // A comment is the whole action.
        let trimmed = body.trim_start();
        if trimmed.starts_with("/*") {
            let Some(end) = trimmed.find("*/") else { return Err(err(line, "unclosed comment".into())) };
            let tail = &trimmed[end + 2..];
            let (tail, trims) = if let Some(t) = tail.strip_prefix(" -}}") {
                (t, true)
            } else if let Some(t) = tail.strip_prefix("}}") {
                (t, false)
            } else {
                return Err(err(line, "comment ends before closing delimiter".into()));
            };
            line += trimmed[..end].matches('\n').count();
            trim_next = trims;
            rest = tail;
            continue;
        }
        let mut tokens = Vec::new();
        let mut spaced = true;
        loop {
            let Some(c) = body.chars().next() else {
                return Err(err(line, "unclosed action".into()));
            };
            if body.starts_with("}}") {
                trim_next = false;
                body = &body[2..];
                break;
            }
            if c.is_whitespace() {
                let ws = body.len() - body.trim_start().len();
                let after_ws = &body[ws..];
                if let Some(after_close) = after_ws.strip_prefix("-}}") {
                    line += body[..ws].matches('\n').count();
                    trim_next = true;
                    body = after_close;
                    break;
                }
                line += body[..ws].matches('\n').count();
                body = after_ws;
                spaced = true;
                continue;
            }
            let (tok, len) = match c {
                '|' => (Tok::Pipe, 1),
                '(' => (Tok::LParen, 1),
                ')' => (Tok::RParen, 1),
                ',' => (Tok::Comma, 1),
                '=' => (Tok::Assign, 1),
                ':' if body.starts_with(":=") => (Tok::Declare, 2),
                '"' => {
                    let (s, len) = lex_quoted(body).ok_or_else(|| err(line, "unterminated quoted string".into()))?;
                    (Tok::Str(s), len)
                }
                '`' => {
                    let end = body[1..].find('`').ok_or_else(|| err(line, "unterminated raw quoted string".into()))?;
                    (Tok::Str(body[1..1 + end].to_owned()), end + 2)
                }
                '$' => {
                    let len = 1 + ident_len(&body[1..]);
                    (Tok::Var(body[1..len].to_owned()), len)
                }
                '.' => {
                    let n = ident_len(&body[1..]);
                    if n == 0 {
                        if body[1..].starts_with(|c: char| c.is_ascii_digit()) {
                            let len = number_len(body);
                            (Tok::Num(body[..len].to_owned()), len)
                        } else {
                            (Tok::Dot, 1)
                        }
                    } else {
                        (Tok::Field(body[1..1 + n].to_owned()), 1 + n)
                    }
                }
                '-' | '+' | '0'..='9' => {
                    let len = number_len(body);
                    if len == 0 {
                        return Err(err(line, format!("bad character {c:?}")));
                    }
                    (Tok::Num(body[..len].to_owned()), len)
                }
                c if c.is_alphabetic() || c == '_' => {
                    let n = ident_len(body);
                    (Tok::Ident(body[..n].to_owned()), n)
                }
                c => return Err(err(line, format!("unexpected {c:?} in command"))),
            };
            tokens.push(Token { tok, spaced });
            spaced = false;
            body = &body[len..];
        }
        items.push(Item::Action { tokens, line: action_line });
        rest = body;
    }
    Ok(items)
}

fn ident_len(s: &str) -> usize {
    s.char_indices().find(|(_, c)| !(c.is_alphanumeric() || *c == '_')).map_or(s.len(), |(i, _)| i)
}

fn number_len(s: &str) -> usize {
    let b = s.as_bytes();
    let mut i = 0;
    if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
        i += 1;
    }
    let start = i;
    while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'.' || b[i] == b'_') {
        // An exponent's sign belongs to the number.
        if (b[i] == b'e' || b[i] == b'E') && i + 1 < b.len() && (b[i + 1] == b'+' || b[i + 1] == b'-') {
            i += 1;
        }
        i += 1;
    }
    if i == start { 0 } else { i }
}

/// A Go interpreted string literal at the start of `s`: its value and length in bytes.
fn lex_quoted(s: &str) -> Option<(String, usize)> {
    let mut out = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, i + 1)),
            '\n' => return None,
            '\\' => {
                let (_, e) = chars.next()?;
                match e {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    '\\' => out.push('\\'),
                    '"' => out.push('"'),
                    '\'' => out.push('\''),
                    'a' => out.push('\u{7}'),
                    'b' => out.push('\u{8}'),
                    'f' => out.push('\u{c}'),
                    'v' => out.push('\u{b}'),
                    'x' | 'u' | 'U' => {
                        let n = match e {
                            'x' => 2,
                            'u' => 4,
                            _ => 8,
                        };
                        let mut code = 0u32;
                        for _ in 0..n {
                            let (_, h) = chars.next()?;
                            code = code * 16 + h.to_digit(16)?;
                        }
                        out.push(char::from_u32(code)?);
                    }
                    _ => return None,
                }
            }
            c => out.push(c),
        }
    }
    None
}

// ---------------------------------------------------------------------------------------------
// Parsing

struct Parser<'a> {
    items: std::iter::Peekable<std::vec::IntoIter<Item>>,
    name: &'a str,
    /// Variables in scope, innermost last (Go checks them at parse time).
    scope: Vec<String>,
}

enum End {
    Eof,
    Close,
    /// `else`, with what follows it in the action (`else if …`).
    Else(Vec<Token>, usize),
}

impl Template {
    pub fn parse(text: &str, name: &str) -> Result<Template, TemplateError> {
        let items = lex(text, name)?;
        let mut p = Parser {
            items: items.into_iter().peekable(),
            name,
            scope: std::iter::once("$".to_owned()).chain(PREDEFINED.iter().map(|v| (*v).to_owned())).collect(),
        };
        let (nodes, end) = p.list()?;
        match end {
            End::Eof => Ok(Template { name: name.to_owned(), nodes }),
            End::Close => Err(p.err(0, "unexpected {{end}}")),
            End::Else(_, line) => Err(p.err(line, "unexpected {{else}}")),
        }
    }
}

impl Parser<'_> {
    fn err(&self, line: usize, message: impl Into<String>) -> TemplateError {
        TemplateError::Parse { name: self.name.to_owned(), line, message: message.into() }
    }

    fn list(&mut self) -> Result<(Vec<Node>, End), TemplateError> {
        let mut nodes = Vec::new();
        while let Some(item) = self.items.next() {
            match item {
                Item::Text(t) => nodes.push(Node::Text(t)),
                Item::Action { tokens, line } => {
                    let first = tokens.first().map(|t| t.tok.clone());
                    match first {
                        Some(Tok::Ident(k)) if k == "end" => {
                            if tokens.len() > 1 {
                                return Err(self.err(line, "unexpected token in end"));
                            }
                            return Ok((nodes, End::Close));
                        }
                        Some(Tok::Ident(k)) if k == "else" => {
                            return Ok((nodes, End::Else(tokens[1..].to_vec(), line)));
                        }
                        Some(Tok::Ident(k)) if k == "if" || k == "with" || k == "range" => {
                            nodes.push(self.control(&k, &tokens[1..], line)?);
                        }
                        Some(Tok::Ident(k))
                            if matches!(k.as_str(), "define" | "template" | "block" | "break" | "continue") =>
                        {
                            return Err(self.err(line, format!("{{{{{k}}}}} is not supported in rule templates")));
                        }
                        None => return Err(self.err(line, "missing value for command")),
                        _ => {
                            let pipe = self.pipeline(&tokens, line, false)?;
                            nodes.push(Node::Action(pipe));
                        }
                    }
                }
            }
        }
        Ok((nodes, End::Eof))
    }

    fn control(&mut self, keyword: &str, tokens: &[Token], line: usize) -> Result<Node, TemplateError> {
        let depth = self.scope.len();
        let pipe = self.pipeline(tokens, line, keyword == "range")?;
        let (then, end) = self.list()?;
        // The body's variables end with it; the pipeline's stay visible in the else branch.
        self.scope.truncate(depth + if pipe.assign { 0 } else { pipe.vars.len() });
        let otherwise = match end {
            End::Eof => return Err(self.err(line, format!("unexpected EOF in {keyword}"))),
            End::Close => Vec::new(),
            End::Else(rest, else_line) => {
                if rest.is_empty() {
                    let (nodes, end) = self.list()?;
                    if !matches!(end, End::Close) {
                        return Err(self.err(else_line, format!("expected end; found {}", end_name(&end))));
                    }
                    nodes
                } else {
                    // `else if …`/`else with …`: a nested control sharing this one's `end`.
                    let Some(Tok::Ident(k)) = rest.first().map(|t| t.tok.clone()) else {
                        return Err(self.err(else_line, "unexpected token in else"));
                    };
                    if k != "if" && k != "with" {
                        return Err(self.err(else_line, format!("unexpected {k:?} in else")));
                    }
                    vec![self.control(&k, &rest[1..], else_line)?]
                }
            }
        };
        self.scope.truncate(depth);
        Ok(match keyword {
            "if" => Node::If { pipe, then, otherwise },
            "with" => Node::With { pipe, then, otherwise },
            _ => Node::Range { pipe, body: then, otherwise },
        })
    }

    fn pipeline(&mut self, tokens: &[Token], line: usize, range: bool) -> Result<Pipeline, TemplateError> {
        let mut vars = Vec::new();
        let mut assign = false;
        let mut rest = tokens;
        // `$x :=`, `$x =`, or in range `$i, $v :=`.
        let decl_len = match tokens {
            [Token { tok: Tok::Var(_), .. }, Token { tok: Tok::Declare | Tok::Assign, .. }, ..] => 2,
            [
                Token { tok: Tok::Var(_), .. },
                Token { tok: Tok::Comma, .. },
                Token { tok: Tok::Var(_), .. },
                Token { tok: Tok::Declare | Tok::Assign, .. },
                ..,
            ] if range => 4,
            _ => 0,
        };
        if decl_len > 0 {
            for t in &tokens[..decl_len] {
                match &t.tok {
                    Tok::Var(v) => vars.push(v.clone()),
                    Tok::Assign => assign = true,
                    _ => {}
                }
            }
            rest = &tokens[decl_len..];
        }
        let (pipe_cmds, used) = self.commands(rest, line)?;
        if used != rest.len() {
            return Err(self.err(line, "unexpected right paren"));
        }
        if pipe_cmds.is_empty() {
            return Err(self.err(line, "missing value for command"));
        }
        for v in &vars {
            if assign {
                if !self.scope.iter().any(|s| s == v) {
                    return Err(self.err(line, format!("undefined variable \"${v}\"")));
                }
            } else {
                self.scope.push(v.clone());
            }
        }
        Ok(Pipeline { vars, assign, cmds: pipe_cmds })
    }

    /// Commands separated by `|`, up to a `)` or the end; how many tokens they took.
    fn commands(&mut self, tokens: &[Token], line: usize) -> Result<(Vec<Vec<Operand>>, usize), TemplateError> {
        let mut cmds = Vec::new();
        let mut cmd = Vec::new();
        let mut i = 0;
        while i < tokens.len() {
            let t = &tokens[i];
            match &t.tok {
                Tok::RParen => break,
                Tok::Pipe => {
                    if cmd.is_empty() {
                        return Err(self.err(line, "missing command"));
                    }
                    cmds.push(std::mem::take(&mut cmd));
                    i += 1;
                    continue;
                }
                Tok::Comma | Tok::Declare | Tok::Assign => {
                    return Err(self.err(line, format!("unexpected {:?} in operand", t.tok)));
                }
                _ => {}
            }
            let (op, used) = self.operand(&tokens[i..], line)?;
            cmd.push(op);
            i += used;
        }
        if !cmd.is_empty() {
            cmds.push(cmd);
        } else if !cmds.is_empty() {
            return Err(self.err(line, "missing command"));
        }
        Ok((cmds, i))
    }

    fn operand(&mut self, tokens: &[Token], line: usize) -> Result<(Operand, usize), TemplateError> {
        let fields = |from: usize| -> (Vec<String>, usize) {
            let mut out = Vec::new();
            let mut i = from;
            while let Some(Token { tok: Tok::Field(f), spaced: false }) = tokens.get(i) {
                out.push(f.clone());
                i += 1;
            }
            (out, i)
        };
        let Some(first) = tokens.first() else { return Err(self.err(line, "missing value for command")) };
        Ok(match &first.tok {
            Tok::Ident(name) => match name.as_str() {
                "true" => (Operand::Bool(true), 1),
                "false" => (Operand::Bool(false), 1),
                "nil" => (Operand::Nil, 1),
                _ if FUNCTIONS.contains(&name.as_str()) => (Operand::Func(name.clone()), 1),
                _ => return Err(self.err(line, format!("function {name:?} not defined"))),
            },
            Tok::Dot => (Operand::Dot(Vec::new()), 1),
            Tok::Field(_) => {
                let mut chain = Vec::new();
                let mut i = 0;
                if let Tok::Field(f) = &first.tok {
                    chain.push(f.clone());
                    i = 1;
                }
                let (more, end) = fields(i);
                chain.extend(more);
                (Operand::Dot(chain), end)
            }
            Tok::Var(v) => {
                let known = if v.is_empty() { "$" } else { v.as_str() };
                if !self.scope.iter().any(|s| s == known) {
                    return Err(self.err(line, format!("undefined variable \"${v}\"")));
                }
                let (chain, end) = fields(1);
                (Operand::Var(v.clone(), chain), end)
            }
            Tok::Str(s) => (Operand::Str(s.clone()), 1),
            Tok::Num(n) => (parse_number(n).ok_or_else(|| self.err(line, format!("bad number syntax: {n:?}")))?, 1),
            Tok::LParen => {
                let (cmds, used) = self.commands(&tokens[1..], line)?;
                if !matches!(tokens.get(1 + used).map(|t| &t.tok), Some(Tok::RParen)) {
                    return Err(self.err(line, "unclosed left paren"));
                }
                if cmds.is_empty() {
                    return Err(self.err(line, "missing value for parenthesized pipeline"));
                }
                let (chain, end) = fields(used + 2);
                (Operand::Paren(Box::new(Pipeline { vars: Vec::new(), assign: false, cmds }), chain), end)
            }
            other => return Err(self.err(line, format!("unexpected {other:?} in operand"))),
        })
    }
}

fn end_name(end: &End) -> &'static str {
    match end {
        End::Eof => "EOF",
        End::Close => "end",
        End::Else(..) => "else",
    }
}

fn parse_number(n: &str) -> Option<Operand> {
    let clean = n.replace('_', "");
    if let Ok(i) = clean.parse::<i64>() {
        return Some(Operand::Int(i));
    }
    if let Some(hex) = clean.strip_prefix("0x").or_else(|| clean.strip_prefix("0X")) {
        return i64::from_str_radix(hex, 16).ok().map(Operand::Int);
    }
    clean.parse::<f64>().ok().filter(|f| f.is_finite()).map(Operand::Float)
}

// ---------------------------------------------------------------------------------------------
// Execution

struct Exec<'a> {
    name: &'a str,
    vars: Vec<(String, Value)>,
    query: Option<QueryFn<'a>>,
    data: &'a TemplateData,
    out: String,
}

/// Go templates stop a runaway `range` only by running out of input; this bounds output so a
/// template over a large query result cannot grow without limit.
const MAX_OUTPUT: usize = 1 << 20;

impl Template {
    pub fn execute(&self, data: &TemplateData, query: Option<QueryFn<'_>>) -> Result<String, TemplateError> {
        let dot = Value::Map(BTreeMap::from([
            ("Labels".to_owned(), Value::labels(&data.labels)),
            ("ExternalLabels".to_owned(), Value::labels(&data.external_labels)),
            ("ExternalURL".to_owned(), Value::Str(data.external_url.clone())),
            ("Value".to_owned(), Value::Float(data.value)),
        ]));
        let mut ex = Exec {
            name: &self.name,
            vars: vec![
                ("$".to_owned(), dot.clone()),
                ("labels".to_owned(), Value::labels(&data.labels)),
                ("externalLabels".to_owned(), Value::labels(&data.external_labels)),
                ("externalURL".to_owned(), Value::Str(data.external_url.clone())),
                ("value".to_owned(), Value::Float(data.value)),
            ],
            query,
            data,
            out: String::new(),
        };
        ex.run(&self.nodes, &dot)?;
        Ok(ex.out)
    }
}

impl Exec<'_> {
    fn err(&self, message: impl Into<String>) -> TemplateError {
        TemplateError::Exec { name: self.name.to_owned(), message: message.into() }
    }

    fn run(&mut self, nodes: &[Node], dot: &Value) -> Result<(), TemplateError> {
        for node in nodes {
            if self.out.len() > MAX_OUTPUT {
                return Err(self.err("output exceeds 1 MiB"));
            }
            match node {
                Node::Text(t) => self.out.push_str(t),
                Node::Action(p) => {
                    let v = self.pipeline(p, dot)?;
                    if p.vars.is_empty() {
                        self.out.push_str(&v.to_go_string());
                    }
                }
                Node::If { pipe, then, otherwise } | Node::With { pipe, then, otherwise } => {
                    let depth = self.vars.len();
                    let v = self.pipeline(pipe, dot)?;
                    if v.truthy() {
                        let inner = if matches!(node, Node::With { .. }) { v } else { dot.clone() };
                        self.run(then, &inner)?;
                    } else {
                        self.run(otherwise, dot)?;
                    }
                    self.vars.truncate(depth);
                }
                Node::Range { pipe, body, otherwise } => {
                    let depth = self.vars.len();
                    let inner = Pipeline { vars: Vec::new(), assign: false, cmds: pipe.cmds.clone() };
                    let v = self.pipeline(&inner, dot)?;
                    let elems: Vec<(Value, Value)> = match v {
                        Value::List(l) => l.into_iter().enumerate().map(|(i, v)| (Value::Int(i as i64), v)).collect(),
                        Value::Map(m) => m.into_iter().map(|(k, v)| (Value::Str(k), v)).collect(),
                        Value::Int(n) => (0..n.max(0)).map(|i| (Value::Int(i), Value::Int(i))).collect(),
                        Value::Nil => Vec::new(),
                        other => return Err(self.err(format!("range can't iterate over {}", other.to_go_string()))),
                    };
                    if elems.is_empty() {
                        self.run(otherwise, dot)?;
                    }
                    for (k, v) in elems {
                        let base = self.vars.len();
                        match pipe.vars.as_slice() {
                            [one] => self.set_var(one, v.clone(), pipe.assign),
                            [key, val] => {
                                self.set_var(key, k, pipe.assign);
                                self.set_var(val, v.clone(), pipe.assign);
                            }
                            _ => {}
                        }
                        self.run(body, &v)?;
                        self.vars.truncate(base.max(depth));
                    }
                    self.vars.truncate(depth);
                }
            }
        }
        Ok(())
    }

    fn set_var(&mut self, name: &str, v: Value, assign: bool) {
        if assign && let Some(slot) = self.vars.iter_mut().rev().find(|(n, _)| n == name) {
            slot.1 = v;
        } else {
            self.vars.push((name.to_owned(), v));
        }
    }

    fn pipeline(&mut self, p: &Pipeline, dot: &Value) -> Result<Value, TemplateError> {
        let mut prev: Option<Value> = None;
        for cmd in &p.cmds {
            prev = Some(self.command(cmd, dot, prev)?);
        }
        let v = prev.unwrap_or(Value::Nil);
        if let Some(name) = p.vars.first() {
            self.set_var(name, v.clone(), p.assign);
        }
        Ok(v)
    }

    fn command(&mut self, cmd: &[Operand], dot: &Value, piped: Option<Value>) -> Result<Value, TemplateError> {
        let Some(first) = cmd.first() else { return Err(self.err("empty command")) };
        if let Operand::Func(name) = first {
            // `and`/`or` evaluate lazily in Go; their arguments here have no side effects
            // beyond queries, so evaluating all of them is only slower, never different.
            let mut args = Vec::with_capacity(cmd.len());
            for a in &cmd[1..] {
                args.push(self.operand(a, dot)?);
            }
            if let Some(p) = piped {
                args.push(p);
            }
            return self.call(name, args);
        }
        if cmd.len() > 1 || piped.is_some() {
            return Err(self.err(format!("can't give argument to non-function {}", describe(first))));
        }
        self.operand(first, dot)
    }

    fn operand(&mut self, op: &Operand, dot: &Value) -> Result<Value, TemplateError> {
        match op {
            Operand::Func(name) => self.call(name, Vec::new()),
            Operand::Dot(chain) => self.fields(dot.clone(), chain),
            Operand::Var(name, chain) => {
                let key = if name.is_empty() { "$" } else { name.as_str() };
                let v = self
                    .vars
                    .iter()
                    .rev()
                    .find(|(n, _)| n == key)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| self.err(format!("undefined variable: ${name}")))?;
                self.fields(v, chain)
            }
            Operand::Str(s) => Ok(Value::Str(s.clone())),
            Operand::Int(i) => Ok(Value::Int(*i)),
            Operand::Float(f) => Ok(Value::Float(*f)),
            Operand::Bool(b) => Ok(Value::Bool(*b)),
            Operand::Nil => Err(self.err("nil is not a command")),
            Operand::Paren(p, chain) => {
                let v = self.pipeline(p, dot)?;
                self.fields(v, chain)
            }
        }
    }

    fn fields(&self, mut v: Value, chain: &[String]) -> Result<Value, TemplateError> {
        for f in chain {
            v = match v {
                // missingkey=zero: a label that is not there reads as empty.
                Value::Map(mut m) => m.remove(f).unwrap_or(Value::Str(String::new())),
                Value::Nil => return Err(self.err(format!("nil pointer evaluating .{f}"))),
                other => return Err(self.err(format!("can't evaluate field {f} in type {}", other.type_name()))),
            };
        }
        Ok(v)
    }

    fn call(&self, name: &str, args: Vec<Value>) -> Result<Value, TemplateError> {
        let arity = |n: usize| -> Result<(), TemplateError> {
            if args.len() == n {
                Ok(())
            } else {
                Err(self.err(format!("wrong number of args for {name}: want {n} got {}", args.len())))
            }
        };
        let float =
            |v: &Value| -> Result<f64, TemplateError> { to_float(v).map_err(|m| self.err(format!("{name}: {m}"))) };
        let string = |v: &Value| -> Result<String, TemplateError> {
            match v {
                Value::Str(s) => Ok(s.clone()),
                other => {
                    Err(self.err(format!("wrong type for value in {name}; expected string; got {}", other.type_name())))
                }
            }
        };
        Ok(match name {
            "and" => {
                if args.is_empty() {
                    return Err(self.err("wrong number of args for and: want at least 1 got 0"));
                }
                let n = args.len();
                args.into_iter().enumerate().find(|(i, v)| !v.truthy() || *i == n - 1).map_or(Value::Nil, |(_, v)| v)
            }
            "or" => {
                if args.is_empty() {
                    return Err(self.err("wrong number of args for or: want at least 1 got 0"));
                }
                let n = args.len();
                args.into_iter().enumerate().find(|(i, v)| v.truthy() || *i == n - 1).map_or(Value::Nil, |(_, v)| v)
            }
            "not" => {
                arity(1)?;
                Value::Bool(!args[0].truthy())
            }
            "eq" => {
                if args.len() < 2 {
                    return Err(self.err("missing argument for comparison"));
                }
                let mut any = false;
                for other in &args[1..] {
                    any |= self.compare(&args[0], other)? == std::cmp::Ordering::Equal;
                }
                Value::Bool(any)
            }
            "ne" | "lt" | "le" | "gt" | "ge" => {
                arity(2)?;
                let o = self.compare(&args[0], &args[1])?;
                use std::cmp::Ordering::*;
                Value::Bool(match name {
                    "ne" => o != Equal,
                    "lt" => o == Less,
                    "le" => o != Greater,
                    "gt" => o == Greater,
                    _ => o != Less,
                })
            }
            "len" => {
                arity(1)?;
                Value::Int(match &args[0] {
                    Value::Str(s) => s.len(),
                    Value::List(l) => l.len(),
                    Value::Map(m) => m.len(),
                    other => return Err(self.err(format!("len of type {}", other.type_name()))),
                } as i64)
            }
            "index" => {
                let Some((first, keys)) = args.split_first() else {
                    return Err(self.err("wrong number of args for index"));
                };
                let mut v = first.clone();
                for k in keys {
                    v = match (v, k) {
                        (Value::Map(mut m), Value::Str(s)) => m.remove(s).unwrap_or(Value::Str(String::new())),
                        (Value::List(l), Value::Int(i)) => l
                            .get(usize::try_from(*i).unwrap_or(usize::MAX))
                            .cloned()
                            .ok_or_else(|| self.err(format!("index out of range: {i}")))?,
                        (v, k) => {
                            return Err(self.err(format!(
                                "can't index item of type {} with {}",
                                v.type_name(),
                                k.type_name()
                            )));
                        }
                    };
                }
                v
            }
            "print" => Value::Str(go_print(&args, false)),
            "println" => Value::Str(go_print(&args, true)),
            "printf" => {
                let Some((format, rest)) = args.split_first() else {
                    return Err(self.err("wrong number of args for printf: want at least 1 got 0"));
                };
                Value::Str(go_sprintf(&string(format)?, rest))
            }
            "html" => Value::Str(html_escape(&go_print(&args, false))),
            "js" => Value::Str(go_print(&args, false).replace('\\', "\\\\").replace('\'', "\\'").replace('"', "\\\"")),
            "urlquery" => Value::Str(url::form_urlencoded::byte_serialize(go_print(&args, false).as_bytes()).collect()),
            "safeHtml" => {
                arity(1)?;
                Value::Str(string(&args[0])?)
            }
            "query" => {
                arity(1)?;
                let q = string(&args[0])?;
                let Some(query) = self.query else { return Err(self.err("query is not available here")) };
                let samples = query(&q).map_err(|e| self.err(format!("error calling query: {e}")))?;
                Value::List(
                    samples
                        .into_iter()
                        .map(|s| {
                            let labels: BTreeMap<String, String> =
                                s.labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect();
                            sample_value(&labels, s.v)
                        })
                        .collect(),
                )
            }
            "first" => {
                arity(1)?;
                match &args[0] {
                    Value::List(l) => l
                        .first()
                        .cloned()
                        .ok_or_else(|| self.err("error calling first: first() called on vector with no elements"))?,
                    other => return Err(self.err(format!("first: expected a query result, got {}", other.type_name()))),
                }
            }
            "label" => {
                arity(2)?;
                let l = string(&args[0])?;
                self.fields(args[1].clone(), &["Labels".to_owned(), l])?
            }
            "value" => {
                arity(1)?;
                self.fields(args[0].clone(), &["Value".to_owned()])?
            }
            "strvalue" => {
                arity(1)?;
                self.fields(args[0].clone(), &["Labels".to_owned(), "__value__".to_owned()])?
            }
            "args" => Value::Map(args.into_iter().enumerate().map(|(i, v)| (format!("arg{i}"), v)).collect()),
            "sortByLabel" => {
                arity(2)?;
                let l = string(&args[0])?;
                let Value::List(mut list) = args[1].clone() else {
                    return Err(self.err("sortByLabel: expected a query result"));
                };
                let key =
                    |v: &Value| self.fields(v.clone(), &["Labels".to_owned(), l.clone()]).map(|v| v.to_go_string());
                let mut keyed = Vec::with_capacity(list.len());
                for v in list.drain(..) {
                    keyed.push((key(&v)?, v));
                }
                keyed.sort_by(|a, b| a.0.cmp(&b.0));
                Value::List(keyed.into_iter().map(|(_, v)| v).collect())
            }
            "reReplaceAll" => {
                arity(3)?;
                let re = regex::Regex::new(&string(&args[0])?).map_err(|e| self.err(format!("reReplaceAll: {e}")))?;
                Value::Str(re.replace_all(&string(&args[2])?, string(&args[1])?.as_str()).into_owned())
            }
            "match" => {
                arity(2)?;
                let re = regex::Regex::new(&string(&args[0])?).map_err(|e| self.err(format!("match: {e}")))?;
                Value::Bool(re.is_match(&string(&args[1])?))
            }
            "title" => {
                arity(1)?;
                Value::Str(go_title(&string(&args[0])?))
            }
            "toUpper" => {
                arity(1)?;
                Value::Str(string(&args[0])?.to_uppercase())
            }
            "toLower" => {
                arity(1)?;
                Value::Str(string(&args[0])?.to_lowercase())
            }
            "graphLink" | "tableLink" => {
                arity(1)?;
                let e: String = url::form_urlencoded::byte_serialize(string(&args[0])?.as_bytes()).collect();
                Value::Str(format!("/graph?g0.expr={e}&g0.tab={}", if name == "graphLink" { 0 } else { 1 }))
            }
            "humanize" => {
                arity(1)?;
                Value::Str(humanize(float(&args[0])?))
            }
            "humanize1024" => {
                arity(1)?;
                Value::Str(humanize1024(float(&args[0])?))
            }
            "humanizeDuration" => {
                arity(1)?;
                Value::Str(humanize_duration(float(&args[0])?))
            }
            "humanizePercentage" => {
                arity(1)?;
                Value::Str(format!("{}%", go_g(float(&args[0])? * 100.0, 4)))
            }
            "humanizeTimestamp" => {
                arity(1)?;
                Value::Str(humanize_timestamp(float(&args[0])?))
            }
            "toTime" => {
                arity(1)?;
                Value::Str(humanize_timestamp(float(&args[0])?))
            }
            "parseDuration" => {
                arity(1)?;
                let s = string(&args[0])?;
                let d = crate::config::parse_duration(&s)
                    .ok_or_else(|| self.err(format!("parseDuration: not a valid duration string: {s:?}")))?;
                Value::Float(d.as_secs_f64())
            }
            "stripPort" => {
                arity(1)?;
                let s = string(&args[0])?;
                Value::Str(strip_port(&s))
            }
            "stripDomain" => {
                arity(1)?;
                let s = string(&args[0])?;
                let (host, port) = match s.rfind(':') {
                    Some(i) if !s.ends_with(']') && s[..i].parse::<std::net::IpAddr>().is_err() => (&s[..i], &s[i..]),
                    _ => (s.as_str(), ""),
                };
                if host.parse::<std::net::IpAddr>().is_ok() || host.starts_with('[') {
                    Value::Str(s.clone())
                } else {
                    Value::Str(format!("{}{port}", host.split('.').next().unwrap_or(host)))
                }
            }
            "pathPrefix" => {
                let u = url::Url::parse(&self.data.external_url).ok();
                Value::Str(u.map(|u| u.path().trim_end_matches('/').to_owned()).unwrap_or_default())
            }
            "externalURL" => Value::Str(self.data.external_url.clone()),
            "slice" | "call" => return Err(self.err(format!("{name} is not supported in rule templates"))),
            other => return Err(self.err(format!("function {other:?} not defined"))),
        })
    }

    fn compare(&self, a: &Value, b: &Value) -> Result<std::cmp::Ordering, TemplateError> {
        use Value::*;
        let o = match (a, b) {
            (Int(x), Int(y)) => Some(x.cmp(y)),
            (Int(_) | Float(_), Int(_) | Float(_)) => {
                let (x, y) = (to_float(a).unwrap_or(f64::NAN), to_float(b).unwrap_or(f64::NAN));
                // NaN equals nothing; Go's comparisons of NaN are all false but `ne`.
                Some(x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Less))
            }
            (Str(x), Str(y)) => Some(x.cmp(y)),
            (Bool(x), Bool(y)) => Some(x.cmp(y)),
            _ => None,
        };
        o.ok_or_else(|| self.err(format!("incompatible types for comparison: {} and {}", a.type_name(), b.type_name())))
    }
}

fn sample_value(labels: &BTreeMap<String, String>, v: f64) -> Value {
    Value::Map(BTreeMap::from([("Labels".to_owned(), Value::labels(labels)), ("Value".to_owned(), Value::Float(v))]))
}

fn describe(op: &Operand) -> String {
    match op {
        Operand::Dot(chain) if chain.is_empty() => ".".into(),
        Operand::Dot(chain) => format!(".{}", chain.join(".")),
        Operand::Var(v, chain) => format!("${v}{}", chain.iter().map(|c| format!(".{c}")).collect::<String>()),
        Operand::Str(s) => format!("{s:?}"),
        Operand::Int(i) => i.to_string(),
        Operand::Float(f) => f.to_string(),
        Operand::Bool(b) => b.to_string(),
        _ => "value".into(),
    }
}

/// Prometheus's functions take numbers as float64 and, since 2.29, numeric strings too.
fn to_float(v: &Value) -> Result<f64, String> {
    match v {
        Value::Float(f) => Ok(*f),
        Value::Int(i) => Ok(*i as f64),
        Value::Str(s) => parse_float(s).ok_or_else(|| format!("can't convert {s:?} to float")),
        other => Err(format!("can't convert {} to float", other.type_name())),
    }
}

/// Go's `strconv.ParseFloat`, which also reads `Inf`, `+Inf` and `NaN` in any case.
fn parse_float(s: &str) -> Option<f64> {
    let t = s.trim();
    match t.to_ascii_lowercase().as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => Some(f64::INFINITY),
        "-inf" | "-infinity" => Some(f64::NEG_INFINITY),
        "nan" => Some(f64::NAN),
        _ => t.parse().ok(),
    }
}

fn strip_port(s: &str) -> String {
    if let Some(rest) = s.strip_prefix('[')
        && let Some(end) = rest.find(']')
    {
        return rest[..end].to_owned();
    }
    match s.rfind(':') {
        Some(i) if s[..i].find(':').is_none() => s[..i].to_owned(),
        _ => s.to_owned(),
    }
}

fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&#34;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Go's `strings.Title`: the first letter of each word upper-cased, a word starting after
/// anything but a letter, digit, underscore or apostrophe.
fn go_title(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut prev_sep = true;
    for c in s.chars() {
        if prev_sep {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        prev_sep = !(c.is_alphanumeric() || c == '_' || c == '\'');
    }
    out
}

/// Go's `fmt.Sprint` (operands separated by a space when neither is a string) or `Sprintln`.
fn go_print(args: &[Value], ln: bool) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 && (ln || (!matches!(a, Value::Str(_)) && !matches!(args[i - 1], Value::Str(_)))) {
            out.push(' ');
        }
        out.push_str(&a.to_go_string());
    }
    if ln {
        out.push('\n');
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Go's number formatting

/// The shortest decimal digits of `|v|` and its decimal exponent (`d.ddd × 10^exp`).
fn shortest_digits(v: f64) -> (String, i32) {
    let s = format!("{:e}", v.abs());
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    (mant.replace('.', ""), exp.parse().unwrap_or(0))
}

/// Digits of `|v|` rounded to `prec` significant digits, trailing zeros dropped.
fn rounded_digits(v: f64, prec: usize) -> (String, i32) {
    let s = format!("{:.*e}", prec.saturating_sub(1), v.abs());
    let (mant, exp) = s.split_once('e').unwrap_or((&s, "0"));
    let digits = mant.replace('.', "");
    let trimmed = digits.trim_end_matches('0');
    (if trimmed.is_empty() { "0".into() } else { trimmed.to_owned() }, exp.parse().unwrap_or(0))
}

fn special(v: f64) -> Option<String> {
    if v.is_nan() {
        Some("NaN".into())
    } else if v.is_infinite() {
        Some(if v > 0.0 { "+Inf".into() } else { "-Inf".into() })
    } else {
        None
    }
}

/// Lays out `digits` × 10^exp as Go's `%g` does once it has chosen the digits.
fn layout_g(neg: bool, digits: &str, exp: i32, eprec: i32) -> String {
    let sign = if neg { "-" } else { "" };
    if exp < -4 || exp >= eprec {
        let (head, tail) = digits.split_at(1.min(digits.len()));
        let frac = if tail.is_empty() { String::new() } else { format!(".{tail}") };
        let esign = if exp < 0 { '-' } else { '+' };
        return format!("{sign}{head}{frac}e{esign}{:02}", exp.abs());
    }
    if exp < 0 {
        return format!("{sign}0.{}{digits}", "0".repeat((-exp - 1) as usize));
    }
    let int_len = exp as usize + 1;
    if digits.len() <= int_len {
        format!("{sign}{digits}{}", "0".repeat(int_len - digits.len()))
    } else {
        format!("{sign}{}.{}", &digits[..int_len], &digits[int_len..])
    }
}

/// Go's `%v` of a float64 (`strconv.FormatFloat(v, 'g', -1, 64)`): `1.234567e+06`.
pub fn go_float_v(v: f64) -> String {
    if let Some(s) = special(v) {
        return s;
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0".into() } else { "0".into() };
    }
    let (digits, exp) = shortest_digits(v);
    // With the shortest digits Go switches to exponent form from 10^6 on, whatever the digits:
    // why `{{ $value }}` of 1234567 reads 1.234567e+06 and rule authors reach for humanize.
    layout_g(v < 0.0, &digits, exp, 6)
}

/// Go's `%.{prec}g`.
pub fn go_g(v: f64, prec: usize) -> String {
    if let Some(s) = special(v) {
        return s;
    }
    if v == 0.0 {
        return "0".into();
    }
    let prec = prec.max(1);
    let (digits, exp) = rounded_digits(v, prec);
    layout_g(v < 0.0, &digits, exp, prec as i32)
}

fn humanize(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return go_g(v, 4);
    }
    let mut v = v;
    let mut prefix = "";
    if v.abs() >= 1.0 {
        for p in ["k", "M", "G", "T", "P", "E", "Z", "Y"] {
            if v.abs() < 1000.0 {
                break;
            }
            prefix = p;
            v /= 1000.0;
        }
    } else {
        for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
            if v.abs() >= 1.0 {
                break;
            }
            prefix = p;
            v *= 1000.0;
        }
    }
    format!("{}{prefix}", go_g(v, 4))
}

fn humanize1024(v: f64) -> String {
    if v.abs() <= 1.0 || !v.is_finite() {
        return go_g(v, 4);
    }
    let mut v = v;
    let mut prefix = "";
    for p in ["ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"] {
        if v.abs() < 1024.0 {
            break;
        }
        prefix = p;
        v /= 1024.0;
    }
    format!("{}{prefix}", go_g(v, 4))
}

fn humanize_duration(v: f64) -> String {
    if !v.is_finite() {
        return go_g(v, 4);
    }
    if v == 0.0 {
        return "0s".into();
    }
    if v.abs() >= 1.0 {
        let sign = if v < 0.0 { "-" } else { "" };
        let v = v.abs();
        let whole = v as i64;
        let (seconds, minutes, hours, days) = (whole % 60, (whole / 60) % 60, (whole / 3600) % 24, whole / 86_400);
        if days != 0 {
            return format!("{sign}{days}d {hours}h {minutes}m {seconds}s");
        }
        if hours != 0 {
            return format!("{sign}{hours}h {minutes}m {seconds}s");
        }
        if minutes != 0 {
            return format!("{sign}{minutes}m {seconds}s");
        }
        return format!("{sign}{}s", go_g(v, 4));
    }
    let mut v = v;
    let mut prefix = "";
    for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= 1000.0;
    }
    format!("{}{prefix}s", go_g(v, 4))
}

/// Go's `time.Time.String()` of a Unix time in UTC: `2006-01-02 15:04:05.999999999 +0000 UTC`.
fn humanize_timestamp(v: f64) -> String {
    if !v.is_finite() {
        return go_g(v, 4);
    }
    // Prometheus goes through model.Time, whose unit is the millisecond.
    let ms = ((v * 1e9) as i64) / 1_000_000;
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let c = crate::promql::time::civil(secs as f64);
    let second = secs.rem_euclid(60);
    let mut out = format!("{:04}-{:02}-{:02} {:02}:{:02}:{:02}", c.year, c.month, c.day, c.hour, c.minute, second);
    if millis != 0 {
        let frac = format!("{millis:03}");
        let _ = write!(out, ".{}", frac.trim_end_matches('0'));
    }
    out.push_str(" +0000 UTC");
    out
}

/// Go's `fmt.Sprintf` for the verbs templates use: `%s %v %d %f %e %g %q %x %t %%`, with
/// flags, width and precision. A verb that does not fit its operand prints as Go prints it,
/// `%!d(string=x)`.
fn go_sprintf(format: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut chars = format.chars().peekable();
    let mut next = 0;
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let (mut minus, mut plus, mut zero, mut space) = (false, false, false, false);
        while let Some(&f) = chars.peek() {
            match f {
                '-' => minus = true,
                '+' => plus = true,
                '0' => zero = true,
                ' ' => space = true,
                '#' => {}
                _ => break,
            }
            chars.next();
        }
        let mut width = String::new();
        while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            width.push(d);
            chars.next();
        }
        let mut prec: Option<usize> = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            let mut p = String::new();
            while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                p.push(d);
                chars.next();
            }
            prec = Some(p.parse().unwrap_or(0));
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(next) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        next += 1;
        let bad = || format!("%!{verb}({}={})", arg.type_name(), arg.to_go_string());
        let num_sign = |s: String| -> String {
            if !s.starts_with('-') && plus {
                format!("+{s}")
            } else if !s.starts_with('-') && space {
                format!(" {s}")
            } else {
                s
            }
        };
        let text = match (verb, arg) {
            ('v', _) | ('s', Value::Str(_)) => {
                let s = arg.to_go_string();
                match (verb, prec) {
                    ('s', Some(p)) => s.chars().take(p).collect(),
                    _ => s,
                }
            }
            ('s', Value::Float(_) | Value::Int(_) | Value::Bool(_) | Value::Nil) => bad(),
            ('s', _) => arg.to_go_string(),
            ('d', Value::Int(i)) => num_sign(i.to_string()),
            ('f' | 'F', Value::Float(_) | Value::Int(_)) => {
                let f = to_float(arg).unwrap_or(f64::NAN);
                num_sign(special(f).unwrap_or_else(|| format!("{:.*}", prec.unwrap_or(6), f)))
            }
            ('e', Value::Float(_) | Value::Int(_)) => {
                let f = to_float(arg).unwrap_or(f64::NAN);
                num_sign(special(f).unwrap_or_else(|| {
                    let s = format!("{:.*e}", prec.unwrap_or(6), f);
                    let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
                    let e: i32 = e.parse().unwrap_or(0);
                    format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
                }))
            }
            ('g', Value::Float(_) | Value::Int(_)) => {
                let f = to_float(arg).unwrap_or(f64::NAN);
                num_sign(match prec {
                    Some(p) => go_g(f, p),
                    None => go_float_v(f),
                })
            }
            ('q', Value::Str(s)) => format!("{s:?}"),
            ('x', Value::Int(i)) => format!("{i:x}"),
            ('x', Value::Str(s)) => s.bytes().map(|b| format!("{b:02x}")).collect(),
            ('t', Value::Bool(b)) => b.to_string(),
            _ => bad(),
        };
        let w: usize = width.parse().unwrap_or(0);
        let len = text.chars().count();
        if len < w {
            let pad = w - len;
            if minus {
                out.push_str(&text);
                out.push_str(&" ".repeat(pad));
            } else if zero && matches!(verb, 'd' | 'f' | 'F' | 'e' | 'g') {
                let (sign, digits) = match text.strip_prefix('-') {
                    Some(d) => ("-", d),
                    None => ("", text.as_str()),
                };
                out.push_str(sign);
                out.push_str(&"0".repeat(pad));
                out.push_str(digits);
            } else {
                out.push_str(&" ".repeat(pad));
                out.push_str(&text);
            }
        } else {
            out.push_str(&text);
        }
    }
    if next < args.len() {
        let extra: Vec<String> =
            args[next..].iter().map(|a| format!("{}={}", a.type_name(), a.to_go_string())).collect();
        let _ = write!(out, "%!(EXTRA {})", extra.join(", "));
    }
    out
}

#[cfg(test)]
mod tests;
