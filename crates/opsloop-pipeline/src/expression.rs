//! GitLab CI/CD variable expressions: the language of `rules:if`, `workflow:rules:if` and
//! `only:variables` / `except:variables`.
//!
//! Reference: GitLab's "Specify when jobs run with `rules`" page, section "CI/CD variable
//! expressions" (`doc/ci/jobs/job_rules.md`, <https://docs.gitlab.com/ee/ci/jobs/job_rules.html>).
//!
//! Grammar (whitespace is allowed between any two tokens):
//!
//! ```text
//! expression := and ( "||" and )*
//! and        := primary ( "&&" primary )*
//! primary    := "(" expression ")" | comparison
//! comparison := operand
//!             | operand ( "==" | "!=" ) operand
//!             | operand ( "=~" | "!~" ) ( regex | variable )
//! operand    := variable | string | "null"
//! variable   := "$" NAME                          NAME = [A-Za-z0-9_]+ (GitLab refuses `${NAME}`)
//! string     := '"' ... '"' | "'" ... "'"         escapes: \" \' \\ ; any other backslash is literal
//! regex      := "/" body "/" flags                body: "\/" is a literal slash; flags: i m s U
//! ```
//!
//! Semantics:
//! - A variable evaluates to its value, or to `null` when it is not defined. `null` equals only
//!   `null`; the empty string is not `null`.
//! - An operand used alone is true when it is defined and non-empty.
//! - `=~` is true when the regex matches anywhere in the left value (anchor with `^`/`$`); `!~` is
//!   its negation. A `null`/undefined left side never matches. A variable on the right is
//!   compiled from its value, which must be a `/pattern/flags` literal; otherwise (not a
//!   literal, invalid regex, undefined) nothing matches.
//! - `&&` binds tighter than `||`; parentheses group.
//!
//! Regexes use RE2 syntax in GitLab; the `regex` crate implements the same syntax family
//! (no look-around, no backreferences, linear-time matching).

use std::borrow::Cow;
use std::fmt;

use regex::{Regex, RegexBuilder};

/// Maximum nesting depth of parentheses.
const MAX_DEPTH: usize = 64;

/// Upper bound on the compiled size of one regex, so hostile patterns cannot eat memory.
const REGEX_SIZE_LIMIT: usize = 2 * 1024 * 1024;

/// A syntax error in an expression, with the byte offset into the expression text where it was
/// detected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at offset {offset}")]
pub struct ExpressionError {
    pub offset: usize,
    pub message: String,
}

impl ExpressionError {
    fn new(offset: usize, message: impl Into<String>) -> Self {
        ExpressionError { offset, message: message.into() }
    }
}

/// A parsed CI/CD variable expression, ready to be evaluated against a set of variables.
#[derive(Clone)]
pub struct Expression {
    source: String,
    root: Node,
}

impl fmt::Debug for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Expression").field("source", &self.source).field("root", &self.root).finish()
    }
}

impl Expression {
    /// Parses `text`. Regex literals are compiled here; a regex that does not compile is an error.
    pub fn parse(text: &str) -> Result<Expression, ExpressionError> {
        let mut parser = Parser { lexer: Lexer { text, pos: 0 }, peeked: None, depth: 0 };
        let root = parser.parse_or(None)?;
        if let Some(token) = parser.next()? {
            return Err(unexpected_after_operand(&token, None));
        }
        Ok(Expression { source: text.to_owned(), root })
    }

    /// `lookup` returns a variable's value, or None when it is not defined.
    pub fn evaluate(&self, lookup: &dyn Fn(&str) -> Option<String>) -> bool {
        self.root.evaluate(lookup)
    }
}

// ---------------------------------------------------------------------------------------------
// Syntax tree and evaluation
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Node {
    /// `a || b || ...` (kept flat so long chains do not deepen the tree).
    Any(Vec<Node>),
    /// `a && b && ...`
    All(Vec<Node>),
    /// An operand on its own: defined and non-empty.
    Present(Operand),
    Equals {
        left: Operand,
        right: Operand,
        negated: bool,
    },
    Matches {
        left: Operand,
        pattern: Pattern,
        negated: bool,
    },
}

#[derive(Debug, Clone)]
enum Operand {
    Variable(String),
    String(String),
    Null,
}

#[derive(Debug, Clone)]
enum Pattern {
    /// A `/.../flags` literal, compiled at parse time.
    Literal(Regex),
    /// A variable whose value is a `/.../flags` literal, compiled at evaluation time.
    Variable(String),
}

type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

impl Node {
    fn evaluate(&self, lookup: Lookup<'_>) -> bool {
        match self {
            Node::Any(items) => items.iter().any(|item| item.evaluate(lookup)),
            Node::All(items) => items.iter().all(|item| item.evaluate(lookup)),
            Node::Present(operand) => operand.resolve(lookup).is_some_and(|value| !value.is_empty()),
            Node::Equals { left, right, negated } => (left.resolve(lookup) == right.resolve(lookup)) != *negated,
            Node::Matches { left, pattern, negated } => {
                let matched = match left.resolve(lookup) {
                    None => false,
                    Some(text) => match pattern {
                        Pattern::Literal(regex) => regex.is_match(&text),
                        Pattern::Variable(name) => lookup(name)
                            .and_then(|value| regex_from_value(&value))
                            .is_some_and(|regex| regex.is_match(&text)),
                    },
                };
                matched != *negated
            }
        }
    }
}

impl Operand {
    fn resolve<'a>(&'a self, lookup: Lookup<'_>) -> Option<Cow<'a, str>> {
        match self {
            Operand::Variable(name) => lookup(name).map(Cow::Owned),
            Operand::String(value) => Some(Cow::Borrowed(value)),
            Operand::Null => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Regexes
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, Default)]
struct RegexFlags {
    case_insensitive: bool,
    multi_line: bool,
    dot_all: bool,
    ungreedy: bool,
}

impl RegexFlags {
    /// Applies one flag letter; false when the letter is not a supported flag.
    fn set(&mut self, flag: char) -> bool {
        match flag {
            'i' => self.case_insensitive = true,
            'm' => self.multi_line = true,
            's' => self.dot_all = true,
            'U' => self.ungreedy = true,
            _ => return false,
        }
        true
    }
}

fn build_regex(body: &str, flags: RegexFlags) -> Result<Regex, String> {
    RegexBuilder::new(body)
        .case_insensitive(flags.case_insensitive)
        .multi_line(flags.multi_line)
        .dot_matches_new_line(flags.dot_all)
        .swap_greed(flags.ungreedy)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
        .map_err(|error| describe_regex_error(&error))
}

/// The one-line reason from a `regex` error (its syntax errors span several lines).
fn describe_regex_error(error: &regex::Error) -> String {
    match error {
        regex::Error::Syntax(text) => text
            .lines()
            .find_map(|line| line.trim().strip_prefix("error:"))
            .map(|reason| reason.trim().to_owned())
            .unwrap_or_else(|| text.lines().last().unwrap_or("syntax error").trim().to_owned()),
        regex::Error::CompiledTooBig(_) => "the regex is too large".to_owned(),
        other => other.to_string(),
    }
}

/// Appends one backslash escape from a regex body: `\/` is a literal slash, anything else is
/// passed through to the regex engine unchanged.
fn push_regex_escape(body: &mut String, escaped: Option<char>) {
    match escaped {
        Some('/') => body.push('/'),
        Some(other) => {
            body.push('\\');
            body.push(other);
        }
        None => body.push('\\'),
    }
}

/// Compiles a variable's value used on the right of `=~`/`!~`. The whole value must be a
/// `/pattern/flags` literal (the last `/` closes it); anything else yields None (no match).
fn regex_from_value(value: &str) -> Option<Regex> {
    let rest = value.strip_prefix('/')?;
    let close = rest.rfind('/')?;
    let raw_body = rest.get(..close)?;
    let raw_flags = rest.get(close + 1..)?;
    let mut flags = RegexFlags::default();
    if !raw_flags.chars().all(|flag| flags.set(flag)) {
        return None;
    }
    let mut body = String::with_capacity(raw_body.len());
    let mut chars = raw_body.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            push_regex_escape(&mut body, chars.next());
        } else {
            body.push(c);
        }
    }
    if body.is_empty() {
        return None;
    }
    build_regex(&body, flags).ok()
}

// ---------------------------------------------------------------------------------------------
// Lexer
// ---------------------------------------------------------------------------------------------

#[derive(Debug)]
enum TokenKind {
    Variable(String),
    String,
    Null,
    Regex(Regex),
    Equals,
    NotEquals,
    Matches,
    NotMatches,
    And,
    Or,
    Open,
    Close,
    /// A lone `=`, `!`, `&` or `|`, reported by the parser with context.
    Stray(char),
}

#[derive(Debug)]
struct Token {
    kind: TokenKind,
    /// The unescaped value of a string literal (empty for other tokens).
    text: String,
    offset: usize,
}

impl Token {
    fn describe(&self) -> String {
        match &self.kind {
            TokenKind::Variable(name) => format!("variable '${name}'"),
            TokenKind::String => "a string literal".to_owned(),
            TokenKind::Null => "'null'".to_owned(),
            TokenKind::Regex(_) => "a regex literal".to_owned(),
            TokenKind::Equals => "'=='".to_owned(),
            TokenKind::NotEquals => "'!='".to_owned(),
            TokenKind::Matches => "'=~'".to_owned(),
            TokenKind::NotMatches => "'!~'".to_owned(),
            TokenKind::And => "'&&'".to_owned(),
            TokenKind::Or => "'||'".to_owned(),
            TokenKind::Open => "'('".to_owned(),
            TokenKind::Close => "')'".to_owned(),
            TokenKind::Stray(c) => format!("'{c}'"),
        }
    }
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Length in bytes of the run of name characters starting at `from`.
fn name_len(bytes: &[u8], from: usize) -> usize {
    bytes.get(from..).map_or(0, |rest| rest.iter().take_while(|&&b| is_name_byte(b)).count())
}

/// A pull lexer: tokens are produced as the parser asks for them, so errors are reported in
/// text order and a hostile input stops being read at the first error.
struct Lexer<'a> {
    text: &'a str,
    pos: usize,
}

impl Lexer<'_> {
    fn next_token(&mut self) -> Result<Option<Token>, ExpressionError> {
        let text = self.text;
        let bytes = text.as_bytes();
        while bytes.get(self.pos).is_some_and(|&b| matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)) {
            self.pos += 1;
        }
        let start = self.pos;
        let Some(&b) = bytes.get(start) else {
            return Ok(None);
        };
        let mut string_value = String::new();
        let (kind, end) = match b {
            b'(' => (TokenKind::Open, start + 1),
            b')' => (TokenKind::Close, start + 1),
            b'=' | b'!' | b'&' | b'|' => match (b, bytes.get(start + 1)) {
                (b'=', Some(b'=')) => (TokenKind::Equals, start + 2),
                (b'!', Some(b'=')) => (TokenKind::NotEquals, start + 2),
                (b'=', Some(b'~')) => (TokenKind::Matches, start + 2),
                (b'!', Some(b'~')) => (TokenKind::NotMatches, start + 2),
                (b'&', Some(b'&')) => (TokenKind::And, start + 2),
                (b'|', Some(b'|')) => (TokenKind::Or, start + 2),
                _ => (TokenKind::Stray(char::from(b)), start + 1),
            },
            b'$' => {
                let (name, end) = lex_variable(bytes, start)?;
                (TokenKind::Variable(name), end)
            }
            b'"' | b'\'' => {
                let (value, end) = lex_string(text, start, char::from(b))?;
                string_value = value;
                (TokenKind::String, end)
            }
            b'/' => {
                let (regex, end) = lex_regex(text, start)?;
                (TokenKind::Regex(regex), end)
            }
            b if is_name_byte(b) => {
                let end = start + name_len(bytes, start);
                let word = text.get(start..end).unwrap_or_default();
                if word != "null" {
                    return Err(ExpressionError::new(
                        start,
                        format!(
                            "unexpected word '{word}': quote string values (\"{word}\") and prefix variables with '$'"
                        ),
                    ));
                }
                (TokenKind::Null, end)
            }
            _ => {
                let found = text.get(start..).and_then(|rest| rest.chars().next()).unwrap_or('\u{FFFD}');
                return Err(ExpressionError::new(start, format!("unexpected character {found:?}")));
            }
        };
        self.pos = end;
        Ok(Some(Token { kind, text: string_value, offset: start }))
    }
}

/// Lexes `$NAME` at `start`; returns the name and the offset just past it. `${NAME}` is refused
/// with a hint, as GitLab refuses it ("invalid expression syntax": its lexer knows `$NAME` only).
fn lex_variable(bytes: &[u8], start: usize) -> Result<(String, usize), ExpressionError> {
    let braced = bytes.get(start + 1) == Some(&b'{');
    if braced {
        return Err(ExpressionError::new(
            start,
            "invalid expression syntax: `${NAME}` is not allowed in rules:if, write `$NAME`",
        ));
    }
    let name_start = if braced { start + 2 } else { start + 1 };
    let len = name_len(bytes, name_start);
    if len == 0 {
        let after = if braced { "'${'" } else { "'$'" };
        return Err(ExpressionError::new(name_start, format!("expected a variable name after {after}")));
    }
    let name_end = name_start + len;
    let name =
        bytes.get(name_start..name_end).map(|name| String::from_utf8_lossy(name).into_owned()).unwrap_or_default();
    if !braced {
        return Ok((name, name_end));
    }
    if bytes.get(name_end) != Some(&b'}') {
        return Err(ExpressionError::new(name_end, format!("expected '}}' to close the '${{' at offset {start}")));
    }
    Ok((name, name_end + 1))
}

/// Lexes a string literal opened by `quote` at `start`; returns its unescaped value and the
/// offset just past the closing quote. `\"`, `\'` and `\\` are escapes; any other backslash is
/// kept literally.
fn lex_string(text: &str, start: usize, quote: char) -> Result<(String, usize), ExpressionError> {
    let body_start = start + 1;
    let rest = text.get(body_start..).unwrap_or_default();
    let mut value = String::new();
    let mut chars = rest.char_indices().peekable();
    while let Some((index, c)) = chars.next() {
        if c == quote {
            return Ok((value, body_start + index + c.len_utf8()));
        }
        if c == '\\'
            && let Some(&(_, escaped @ ('"' | '\'' | '\\'))) = chars.peek()
        {
            value.push(escaped);
            chars.next();
            continue;
        }
        value.push(c);
    }
    Err(ExpressionError::new(start, format!("unterminated string literal: expected a closing {quote}")))
}

/// Lexes a `/pattern/flags` literal at `start`, compiling it; returns the regex and the offset
/// just past the flags.
fn lex_regex(text: &str, start: usize) -> Result<(Regex, usize), ExpressionError> {
    let body_start = start + 1;
    let rest = text.get(body_start..).unwrap_or_default();
    let mut body = String::new();
    let mut close = None;
    let mut chars = rest.char_indices();
    while let Some((index, c)) = chars.next() {
        match c {
            '\\' => push_regex_escape(&mut body, chars.next().map(|(_, escaped)| escaped)),
            '/' => {
                close = Some(body_start + index);
                break;
            }
            other => body.push(other),
        }
    }
    let close = close.ok_or_else(|| {
        ExpressionError::new(
            start,
            "unterminated regex literal: expected a closing '/' (write '\\/' for a literal '/')",
        )
    })?;
    if body.is_empty() {
        return Err(ExpressionError::new(start, "empty regex literal '//'"));
    }
    let bytes = text.as_bytes();
    let mut flags = RegexFlags::default();
    let mut end = close + 1;
    while let Some(&b) = bytes.get(end) {
        if !is_name_byte(b) {
            break;
        }
        if !flags.set(char::from(b)) {
            return Err(ExpressionError::new(
                end,
                format!("unsupported regex flag '{}' (supported: i, m, s, U)", char::from(b)),
            ));
        }
        end += 1;
    }
    let literal = text.get(start..end).unwrap_or_default();
    let regex = build_regex(&body, flags)
        .map_err(|reason| ExpressionError::new(start, format!("invalid regex {literal}: {reason}")))?;
    Ok((regex, end))
}

// ---------------------------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------------------------

struct Parser<'a> {
    lexer: Lexer<'a>,
    /// One token of lookahead.
    peeked: Option<Token>,
    /// Current parenthesis nesting depth.
    depth: usize,
}

fn is_comparison(kind: &TokenKind) -> bool {
    matches!(kind, TokenKind::Equals | TokenKind::NotEquals | TokenKind::Matches | TokenKind::NotMatches)
}

fn stray_hint(c: char) -> &'static str {
    match c {
        '=' => "use '==' or '=~'",
        '!' => "use '!=' or '!~'",
        '&' => "use '&&'",
        _ => "use '||'",
    }
}

/// The error for a token that follows a complete operand or group where only `&&`, `||`, a
/// closing parenthesis (when `open` is the offset of an unclosed `(`) or the end may appear.
fn unexpected_after_operand(token: &Token, open: Option<usize>) -> ExpressionError {
    let message = match (&token.kind, open) {
        (TokenKind::Close, None) => "unexpected ')' without a matching '('".to_owned(),
        (TokenKind::Stray(c), _) => format!("unexpected '{c}': {}", stray_hint(*c)),
        (kind, _) if is_comparison(kind) => {
            format!("unexpected {}: comparisons cannot be chained, join them with '&&' or '||'", token.describe())
        }
        (_, None) => format!("expected '&&', '||' or end of input, found {}", token.describe()),
        (_, Some(_)) => format!("expected '&&', '||' or ')', found {}", token.describe()),
    };
    ExpressionError::new(token.offset, message)
}

impl Parser<'_> {
    fn peek(&mut self) -> Result<Option<&Token>, ExpressionError> {
        if self.peeked.is_none() {
            self.peeked = self.lexer.next_token()?;
        }
        Ok(self.peeked.as_ref())
    }

    fn next(&mut self) -> Result<Option<Token>, ExpressionError> {
        match self.peeked.take() {
            Some(token) => Ok(Some(token)),
            None => self.lexer.next_token(),
        }
    }

    /// Consumes the next token when `predicate` accepts it.
    fn next_if(&mut self, predicate: impl Fn(&TokenKind) -> bool) -> Result<Option<Token>, ExpressionError> {
        if self.peek()?.is_some_and(|token| predicate(&token.kind)) { self.next() } else { Ok(None) }
    }

    /// `after` names the token before this expression, for error messages.
    fn parse_or(&mut self, after: Option<&str>) -> Result<Node, ExpressionError> {
        let mut items = vec![self.parse_and(after)?];
        while self.next_if(|kind| matches!(kind, TokenKind::Or))?.is_some() {
            items.push(self.parse_and(Some("'||'"))?);
        }
        Ok(if items.len() == 1 { items.swap_remove(0) } else { Node::Any(items) })
    }

    fn parse_and(&mut self, after: Option<&str>) -> Result<Node, ExpressionError> {
        let mut items = vec![self.parse_primary(after)?];
        while self.next_if(|kind| matches!(kind, TokenKind::And))?.is_some() {
            items.push(self.parse_primary(Some("'&&'"))?);
        }
        Ok(if items.len() == 1 { items.swap_remove(0) } else { Node::All(items) })
    }

    fn parse_primary(&mut self, after: Option<&str>) -> Result<Node, ExpressionError> {
        let Some(token) = self.next()? else {
            return Err(self.expected_operand(after, None));
        };
        let left = match token.kind {
            TokenKind::Open => return self.parse_group(token.offset),
            TokenKind::Variable(name) => Operand::Variable(name),
            TokenKind::String => Operand::String(token.text),
            TokenKind::Null => Operand::Null,
            TokenKind::Regex(_) => {
                return Err(ExpressionError::new(
                    token.offset,
                    "a regex literal can only appear on the right of '=~' or '!~'",
                ));
            }
            _ => return Err(self.expected_operand(after, Some(&token))),
        };
        let node = match self.next_if(is_comparison)? {
            None => Node::Present(left),
            Some(operator) => {
                let symbol = operator.describe();
                match operator.kind {
                    TokenKind::Equals | TokenKind::NotEquals => Node::Equals {
                        left,
                        right: self.parse_value(&symbol)?,
                        negated: matches!(operator.kind, TokenKind::NotEquals),
                    },
                    _ => Node::Matches {
                        left,
                        pattern: self.parse_pattern(&symbol)?,
                        negated: matches!(operator.kind, TokenKind::NotMatches),
                    },
                }
            }
        };
        if let Some(next) = self.peek()?
            && is_comparison(&next.kind)
        {
            return Err(unexpected_after_operand(next, None));
        }
        Ok(node)
    }

    /// Parses the inside of a group whose `(` is at `open`, and its closing `)`.
    fn parse_group(&mut self, open: usize) -> Result<Node, ExpressionError> {
        if self.depth >= MAX_DEPTH {
            return Err(ExpressionError::new(open, format!("parentheses nested deeper than {MAX_DEPTH} levels")));
        }
        self.depth += 1;
        let inner = self.parse_or(Some("'('"))?;
        self.depth -= 1;
        match self.next()? {
            Some(Token { kind: TokenKind::Close, .. }) => Ok(inner),
            Some(token) => Err(unexpected_after_operand(&token, Some(open))),
            None => Err(ExpressionError::new(
                self.lexer.text.len(),
                format!("expected ')' to close the '(' at offset {open}, found end of input"),
            )),
        }
    }

    /// The right side of `==` / `!=`.
    fn parse_value(&mut self, operator: &str) -> Result<Operand, ExpressionError> {
        match self.next()? {
            Some(Token { kind: TokenKind::Variable(name), .. }) => Ok(Operand::Variable(name)),
            Some(Token { kind: TokenKind::String, text, .. }) => Ok(Operand::String(text)),
            Some(Token { kind: TokenKind::Null, .. }) => Ok(Operand::Null),
            Some(Token { kind: TokenKind::Regex(_), offset, .. }) => Err(ExpressionError::new(
                offset,
                format!("a regex literal cannot be compared with {operator}: use '=~' or '!~'"),
            )),
            other => Err(self.expected_operand(Some(operator), other.as_ref())),
        }
    }

    /// The right side of `=~` / `!~`.
    fn parse_pattern(&mut self, operator: &str) -> Result<Pattern, ExpressionError> {
        match self.next()? {
            Some(Token { kind: TokenKind::Regex(regex), .. }) => Ok(Pattern::Literal(regex)),
            Some(Token { kind: TokenKind::Variable(name), .. }) => Ok(Pattern::Variable(name)),
            other => {
                let (offset, found) = match &other {
                    Some(token) => (token.offset, token.describe()),
                    None => (self.lexer.text.len(), "end of input".to_owned()),
                };
                Err(ExpressionError::new(
                    offset,
                    format!("expected a regex literal (/pattern/) or a variable after {operator}, found {found}"),
                ))
            }
        }
    }

    fn expected_operand(&self, after: Option<&str>, found: Option<&Token>) -> ExpressionError {
        match (after, found) {
            // Only the very first operand has nothing before it.
            (None, None) => ExpressionError::new(0, "empty expression: expected an operand"),
            (after, Some(token)) => {
                let after = after.map(|after| format!(" after {after}")).unwrap_or_default();
                let hint = match token.kind {
                    TokenKind::Stray(c) => format!(" ({})", stray_hint(c)),
                    _ => String::new(),
                };
                ExpressionError::new(
                    token.offset,
                    format!("expected an operand{after}, found {}{hint}", token.describe()),
                )
            }
            (Some(after), None) => ExpressionError::new(
                self.lexer.text.len(),
                format!("expected an operand after {after}, found end of input"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn eval(text: &str, vars: &[(&str, &str)]) -> bool {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let expression = Expression::parse(text).unwrap_or_else(|e| panic!("parse {text:?}: {e}"));
        expression.evaluate(&|name| map.get(name).cloned())
    }

    /// (expression, defined variables, expected result)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], bool);

    #[test]
    fn expression_table() {
        #[rustfmt::skip]
        let cases: &[Case<'_>] = &[
            // The documented everyday rules.
            (r#"$CI_COMMIT_BRANCH == "main" && $CI_PIPELINE_SOURCE != "schedule""#,
                &[("CI_COMMIT_BRANCH", "main"), ("CI_PIPELINE_SOURCE", "push")], true),
            (r#"$CI_COMMIT_BRANCH == "main" && $CI_PIPELINE_SOURCE != "schedule""#,
                &[("CI_COMMIT_BRANCH", "main"), ("CI_PIPELINE_SOURCE", "schedule")], false),
            (r#"$CI_COMMIT_BRANCH == "main" && $CI_PIPELINE_SOURCE != "schedule""#,
                &[("CI_PIPELINE_SOURCE", "push")], false),
            ("$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH", &[("CI_COMMIT_BRANCH", "dev"), ("CI_DEFAULT_BRANCH", "dev")], true),
            ("$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH", &[("CI_COMMIT_BRANCH", "dev"), ("CI_DEFAULT_BRANCH", "main")], false),
            // A variable alone: defined and non-empty.
            ("$A", &[("A", "x")], true),
            ("$A", &[("A", "")], false),
            ("$A", &[], false),
            ("\"x\"", &[], true),
            ("\"\"", &[], false),
            ("null", &[], false),
            // null versus empty.
            ("$EMPTY == \"\"", &[("EMPTY", "")], true),
            ("$EMPTY == null", &[("EMPTY", "")], false),
            ("$EMPTY != null", &[("EMPTY", "")], true),
            ("$EMPTY != \"\"", &[("EMPTY", "")], false),
            ("$UNDEFINED == null", &[], true),
            ("$UNDEFINED == \"\"", &[], false),
            ("$UNDEFINED != \"\"", &[], true),
            ("$UNDEFINED != null", &[], false),
            ("null == null", &[], true),
            ("null == $A", &[], true),
            ("$A == $B", &[], true),
            ("$A == $B", &[("A", "")], false),
            ("$A != $B", &[("A", "x")], true),
            // Equality with quotes on either side.
            ("\"main\" == $BRANCH", &[("BRANCH", "main")], true),
            ("$A == 'single'", &[("A", "single")], true),
            ("$A != \"x\"", &[("A", "x")], false),
            ("$A != \"x\"", &[("A", "y")], true),
            // Regex matching.
            ("$A =~ /^feat/", &[("A", "feature")], true),
            ("$A =~ /feat/", &[("A", "my-feature-x")], true),
            ("$A =~ /^main$/", &[("A", "main")], true),
            ("$A =~ /^main$/", &[("A", "main2")], false),
            ("$A =~ /main/", &[("A", "not-main-2")], true),
            ("$A =~ /^MAIN$/i", &[("A", "main")], true),
            ("$A =~ /^MAIN$/", &[("A", "main")], false),
            ("$A !~ /^main$/", &[("A", "dev")], true),
            ("$A !~ /^main$/", &[("A", "main")], false),
            ("$UNDEF =~ /.*/", &[], false),
            ("$UNDEF =~ /^$/", &[], false),
            ("$UNDEF !~ /foo/", &[], true),
            ("null =~ /x*/", &[], false),
            ("\"release-1\" =~ /^release-\\d+$/", &[], true),
            ("$A =~ /^line2$/m", &[("A", "line1\nline2")], true),
            ("$A =~ /^line2$/", &[("A", "line1\nline2")], false),
            ("$A =~ /a.b/s", &[("A", "a\nb")], true),
            ("$A =~ /a.b/", &[("A", "a\nb")], false),
            ("$A =~ /x/imsU", &[("A", "X")], true),
            ("$A =~ /a\\/b/", &[("A", "x/a/b")], true),
            ("$A =~ /./", &[("A", "z")], true),
            ("$CI_COMMIT_TAG =~ /^v[0-9](?:\\.[0-9]){2,3}/", &[("CI_COMMIT_TAG", "v1.2.3")], true),
            ("$CI_COMMIT_TAG =~ /^v[0-9](?:\\.[0-9]){2,3}/", &[("CI_COMMIT_TAG", "v1.2")], false),
            ("$A =~ /foo/ || $B =~ /bar/", &[("A", "nope"), ("B", "rebar")], true),
            // Regex from a variable.
            ("$A =~ $P", &[("A", "abcde"), ("P", "/^ab.*/")], true),
            ("$A =~ $P", &[("A", "fghij"), ("P", "/^ab.*/")], false),
            ("$A =~ $P", &[("A", "abc"), ("P", "/^AB/i")], true),
            ("$A =~ $P", &[("A", "a/b"), ("P", "/a\\/b/")], true),
            ("$A =~ $P", &[("A", "abc"), ("P", "ab")], false),
            ("$A =~ $P", &[("A", "abc"), ("P", "/ab(/")], false),
            ("$A =~ $P", &[("A", "abc"), ("P", "/ab/q")], false),
            ("$A =~ $P", &[("A", "abc")], false),
            ("$A !~ $P", &[("A", "abc")], true),
            ("$A !~ $P", &[("A", "abc"), ("P", "/^x/")], true),
            ("\"main\" =~ $P", &[("P", "/^ma/")], true),
            // Precedence and parentheses.
            ("$A || $B && $C", &[("A", "x")], true),
            ("($A || $B) && $C", &[("A", "x")], false),
            ("$A && $B || $C", &[("B", "x"), ("C", "x")], true),
            ("$A && ($B || $C)", &[("B", "x"), ("C", "x")], false),
            ("((($A)))", &[("A", "x")], true),
            ("$A == \"x\" && ($B == \"y\" || $C == \"z\")", &[("A", "x"), ("C", "z")], true),
            ("($A == \"x\" || $B == \"x\") && ($C =~ /^c/ || $D)", &[("B", "x"), ("D", "d")], true),
            ("$A == \"1\" || $A == \"2\" || $A == \"3\"", &[("A", "3")], true),
            ("$A && $B && $C", &[("A", "1"), ("B", "2")], false),
            // Quotes and escapes.
            (r#"$Q == "say \"hi\"""#, &[("Q", "say \"hi\"")], true),
            (r"$Q == 'it\'s'", &[("Q", "it's")], true),
            (r#"$Q == "it's""#, &[("Q", "it's")], true),
            (r#"$Q == 'say "hi"'"#, &[("Q", "say \"hi\"")], true),
            (r#"$Q == "back\\slash""#, &[("Q", "back\\slash")], true),
            (r#"$Q == "a\nb""#, &[("Q", "a\\nb")], true),
            (r#"$Q == "trailing\\""#, &[("Q", "trailing\\")], true),
            // Unicode.
            ("$U == \"héllo wörld ✓\"", &[("U", "héllo wörld ✓")], true),
            ("$U =~ /^日本/", &[("U", "日本語")], true),
            ("$U =~ /^ÉTÉ$/i", &[("U", "été")], true),
            ("$U != '🚀'", &[("U", "🚀")], false),
            // Whitespace.
            ("  $A\t==\n\"x\"  ", &[("A", "x")], true),
            ("$A==\"x\"&&$B!=\"y\"", &[("A", "x"), ("B", "z")], true),
            ("( $A||$B )&&(\r\n$C )", &[("B", "b"), ("C", "c")], true),
        ];
        assert!(cases.len() >= 40);
        for (text, vars, expected) in cases {
            assert_eq!(eval(text, vars), *expected, "{text:?} with {vars:?}");
        }
    }

    #[test]
    fn expression_errors() {
        let deep = format!("{}$A{}", "(".repeat(10_000), ")".repeat(10_000));
        let cases: &[(&str, usize, &str)] = &[
            ("$A ==", 5, "expected an operand after '=='"),
            ("(($A)", 5, "expected ')' to close the '(' at offset 0"),
            ("\"unterminated", 0, "unterminated string literal"),
            ("'unterminated\\'", 0, "unterminated string literal"),
            ("$A == /bad(regex/", 6, "invalid regex /bad(regex/"),
            ("/bad(regex/", 0, "invalid regex"),
            ("&& $A", 0, "expected an operand, found '&&'"),
            ("", 0, "empty expression"),
            ("   ", 0, "empty expression"),
            ("$A === \"x\"", 5, "expected an operand after '==', found '='"),
            ("$A == = \"x\"", 6, "expected an operand after '==', found"),
            (&deep, 64, "nested deeper than 64"),
            ("$A )", 3, "without a matching '('"),
            ("$A \"x\"", 3, "expected '&&', '||' or end of input"),
            ("($A \"x\")", 4, "expected '&&', '||' or ')'"),
            ("$A == /x/", 6, "cannot be compared"),
            ("$A =~ \"x\"", 6, "expected a regex literal (/pattern/) or a variable after '=~'"),
            ("$A !~ null", 6, "after '!~'"),
            ("$A =~", 5, "found end of input"),
            ("/foo/", 0, "only appear on the right"),
            ("$A =~ /foo/x", 11, "unsupported regex flag 'x'"),
            ("$A =~ //", 6, "empty regex literal"),
            ("$A =~ /foo", 6, "unterminated regex literal"),
            ("$A =~ /foo\\/", 6, "unterminated regex literal"),
            ("$", 1, "expected a variable name after '$'"),
            ("${A}", 0, "invalid expression syntax: `${NAME}` is not allowed in rules:if"),
            ("${}", 0, "invalid expression syntax"),
            ("$A = \"x\"", 3, "unexpected '='"),
            ("$A & $B", 3, "use '&&'"),
            ("$A | $B", 3, "use '||'"),
            ("!$A", 0, "expected an operand, found '!' (use '!=' or '!~')"),
            ("&& $A \"unterminated", 0, "expected an operand, found '&&'"),
            ("$BRANCH == main", 11, "unexpected word 'main'"),
            ("nullable", 0, "unexpected word 'nullable'"),
            ("$A == $B == $C", 9, "cannot be chained"),
            ("$A =~ /x/ =~ /y/", 10, "cannot be chained"),
            ("$A &&", 5, "expected an operand after '&&'"),
            ("$A ||", 5, "expected an operand after '||'"),
            ("()", 1, "expected an operand after '(', found ')'"),
            ("$A == \"x\" $B", 10, "expected '&&', '||' or end of input"),
            ("$A == \"x\" # comment", 10, "unexpected character '#'"),
            ("$A-B", 2, "unexpected character '-'"),
            ("$A == \u{a0}\"x\"", 6, "unexpected character"),
        ];
        assert!(cases.len() >= 10);
        for (text, offset, needle) in cases {
            let error = Expression::parse(text).expect_err(text);
            assert!(error.message.contains(needle), "{text:?}: {error}");
            assert_eq!(error.offset, *offset, "{text:?}: {error}");
        }
        assert_eq!(
            Expression::parse("$A ==").unwrap_err().to_string(),
            "expected an operand after '==', found end of input at offset 5"
        );
    }

    #[test]
    fn expression_depth_limit() {
        let ok = format!("{}$A{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(eval(&ok, &[("A", "x")]));
        let too_deep = format!("{}$A{}", "(".repeat(MAX_DEPTH + 1), ")".repeat(MAX_DEPTH + 1));
        assert!(Expression::parse(&too_deep).is_err());
        let unclosed = "(".repeat(100_000);
        assert!(Expression::parse(&unclosed).is_err());
    }

    #[test]
    fn expression_long_chains_do_not_recurse() {
        let mut text = "$A == \"0\"".to_owned();
        for i in 1..50_000 {
            text.push_str(if i % 2 == 0 { " || " } else { " && " });
            text.push_str("$A");
        }
        let expression = Expression::parse(&text).unwrap();
        assert!(expression.evaluate(&|_| Some("0".to_owned())));
        assert!(!expression.evaluate(&|_| None));
    }

    #[test]
    fn expression_is_clone_and_debug() {
        let expression = Expression::parse("$A =~ /^x/i && $B").unwrap();
        let copy = expression.clone();
        let lookup = |name: &str| Some(format!("X-{name}"));
        assert_eq!(expression.evaluate(&lookup), copy.evaluate(&lookup));
        assert!(format!("{copy:?}").contains("$A =~ /^x/i && $B"));
    }

    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[test]
    fn expression_parse_never_panics_on_random_input() {
        const FRAGMENTS: &[&str] = &[
            "$A",
            "${B}",
            "$",
            "${",
            "}",
            "\"x\"",
            "'y'",
            "\"",
            "'",
            "\\",
            "null",
            "nul",
            "==",
            "!=",
            "=~",
            "!~",
            "=",
            "!",
            "&&",
            "||",
            "&",
            "|",
            "(",
            ")",
            "/a.c/i",
            "/",
            "/x\\/y/",
            "/(/",
            "//",
            "/a/q",
            " ",
            "\t",
            "\n",
            "é",
            "日本",
            "\u{0}",
            "===",
            "🚀",
            "\\\"",
            "\\'",
            "/[a-z]+$/m",
            "$P",
        ];
        let values: &[Option<&str>] = &[None, Some(""), Some("x"), Some("/^x/i"), Some("/a(/"), Some("/"), Some("//")];
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for round in 0..6_000 {
            let text = if round % 2 == 0 {
                let len = rng.below(48);
                let bytes: Vec<u8> = (0..len).map(|_| (rng.next() & 0xff) as u8).collect();
                String::from_utf8_lossy(&bytes).into_owned()
            } else {
                let len = rng.below(24);
                (0..len).map(|_| FRAGMENTS[rng.below(FRAGMENTS.len())]).collect()
            };
            match Expression::parse(&text) {
                Ok(expression) => {
                    let value = values[rng.below(values.len())].map(str::to_owned);
                    let _ = expression.evaluate(&|_| value.clone());
                }
                Err(error) => assert!(error.offset <= text.len(), "{text:?}: {error}"),
            }
        }
    }
}
