//! Stream labels and label matchers.
//!
//! A stream is identified by its label set, written the way Loki writes it: `{app="x", env="prod"}`
//! (names sorted, values Go-quoted). Parsing accepts what Loki's `ParseLabels` accepts: a selector
//! made only of `=` matchers, in any order, which is then sorted.

use std::fmt;

use regex::Regex;

/// Errors from parsing a label set or building a matcher.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LabelsError {
    #[error("parse error at line 1, col {col}: {msg}")]
    Syntax { col: usize, msg: String },
    #[error("error at least one label pair is required per stream")]
    Empty,
    #[error("invalid label name {0:?}")]
    InvalidName(String),
    #[error("duplicate label name {0:?}")]
    Duplicate(String),
    #[error("invalid regular expression {re:?}: {msg}")]
    Regex { re: String, msg: String },
}

/// A set of labels, sorted by name, names unique.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Labels(Vec<(String, String)>);

impl Labels {
    pub fn new() -> Self {
        Labels(Vec::new())
    }

    /// Builds a set from pairs; on duplicate names the last one wins (as Loki's label builder).
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let mut v: Vec<(String, String)> = Vec::new();
        for (k, val) in pairs {
            let k = k.into();
            let val = val.into();
            match v.iter_mut().find(|(n, _)| *n == k) {
                Some(slot) => slot.1 = val,
                None => v.push((k, val)),
            }
        }
        v.sort_by(|a, b| a.0.cmp(&b.0));
        Labels(v)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.binary_search_by(|(n, _)| n.as_str().cmp(name)).ok().map(|i| self.0[i].1.as_str())
    }

    /// Sets a label; an empty value removes it (Prometheus and Loki treat the two alike).
    pub fn set(&mut self, name: &str, value: &str) {
        match self.0.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            Ok(i) if value.is_empty() => {
                self.0.remove(i);
            }
            Ok(i) => value.clone_into(&mut self.0[i].1),
            Err(_) if value.is_empty() => {}
            Err(i) => self.0.insert(i, (name.to_string(), value.to_string())),
        }
    }

    /// Sets a label even to the empty string: `logfmt --keep-empty` keeps standalone keys.
    pub fn set_keep_empty(&mut self, name: &str, value: &str) {
        match self.0.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            Ok(i) => value.clone_into(&mut self.0[i].1),
            Err(i) => self.0.insert(i, (name.to_string(), value.to_string())),
        }
    }

    pub fn remove(&mut self, name: &str) {
        if let Ok(i) = self.0.binary_search_by(|(n, _)| n.as_str().cmp(name)) {
            self.0.remove(i);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn retain(&mut self, mut f: impl FnMut(&str, &str) -> bool) {
        self.0.retain(|(k, v)| f(k, v));
    }

    pub fn into_pairs(self) -> Vec<(String, String)> {
        self.0
    }

    /// Parses Loki's selector string form, `{a="b", c="d"}`. Only `=` is allowed (this names a
    /// stream, it does not select one) and at least one pair is required.
    pub fn parse(s: &str) -> Result<Labels, LabelsError> {
        let mut p = Cursor { s: s.as_bytes(), pos: 0 };
        p.ws();
        p.expect(b'{')?;
        let mut pairs: Vec<(String, String)> = Vec::new();
        loop {
            p.ws();
            if p.peek() == Some(b'}') {
                p.pos += 1;
                break;
            }
            if !pairs.is_empty() {
                p.expect(b',')?;
                p.ws();
            }
            let name = p.ident()?;
            p.ws();
            if p.peek() != Some(b'=') || matches!(p.s.get(p.pos + 1), Some(b'~')) {
                return Err(p.err("syntax error: unexpected matcher, only = is allowed in stream labels"));
            }
            p.pos += 1;
            p.ws();
            let value = p.string()?;
            if pairs.iter().any(|(n, _)| *n == name) {
                return Err(LabelsError::Duplicate(name));
            }
            pairs.push((name, value));
        }
        p.ws();
        if p.pos != p.s.len() {
            return Err(p.err("syntax error: unexpected characters after }"));
        }
        pairs.retain(|(_, v)| !v.is_empty());
        if pairs.is_empty() {
            return Err(LabelsError::Empty);
        }
        pairs.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(Labels(pairs))
    }
}

impl fmt::Display for Labels {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{k}={}", quote(v))?;
        }
        f.write_str("}")
    }
}

/// Go's `strconv.Quote` for the characters that matter in label values.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A valid Prometheus/Loki label name: `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_valid_label_name(s: &str) -> bool {
    let mut b = s.bytes();
    match b.next() {
        Some(c) if c.is_ascii_alphabetic() || c == b'_' => {}
        _ => return false,
    }
    b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Makes a key usable as a label name the way Loki's parsers do: every invalid byte becomes `_`,
/// and a leading digit gets a `_` prefix.
pub fn sanitize_label_name(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 1);
    for (i, c) in s.chars().enumerate() {
        if i == 0 && c.is_ascii_digit() {
            out.push('_');
        }
        out.push(if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' });
    }
    out
}

struct Cursor<'a> {
    s: &'a [u8],
    pos: usize,
}

impl Cursor<'_> {
    fn err(&self, msg: &str) -> LabelsError {
        LabelsError::Syntax { col: self.pos + 1, msg: msg.to_string() }
    }
    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }
    fn expect(&mut self, c: u8) -> Result<(), LabelsError> {
        if self.peek() == Some(c) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.err(&format!("syntax error: unexpected {}, expecting {}", self.describe(), c as char)))
        }
    }
    fn describe(&self) -> String {
        match self.peek() {
            None => "end of input".into(),
            Some(c) => format!("{:?}", c as char),
        }
    }
    fn ident(&mut self) -> Result<String, LabelsError> {
        let start = self.pos;
        while matches!(self.peek(), Some(c) if c.is_ascii_alphanumeric() || c == b'_') {
            self.pos += 1;
        }
        let name = String::from_utf8_lossy(&self.s[start..self.pos]).into_owned();
        if name.is_empty() {
            return Err(self.err(&format!("syntax error: unexpected {}, expecting IDENTIFIER", self.describe())));
        }
        if !is_valid_label_name(&name) {
            return Err(LabelsError::InvalidName(name));
        }
        Ok(name)
    }
    fn string(&mut self) -> Result<String, LabelsError> {
        let rest = std::str::from_utf8(&self.s[self.pos..]).map_err(|_| self.err("invalid UTF-8"))?;
        match unquote_prefix(rest) {
            Some((v, used)) => {
                self.pos += used;
                Ok(v)
            }
            None => Err(self.err(&format!("syntax error: unexpected {}, expecting STRING", self.describe()))),
        }
    }
}

/// Reads a Go string literal (`"..."` with escapes, or a raw `` `...` ``) at the start of `s`;
/// returns the value and the number of bytes consumed.
pub fn unquote_prefix(s: &str) -> Option<(String, usize)> {
    let mut chars = s.char_indices();
    let (_, q) = chars.next()?;
    if q == '`' {
        let end = s[1..].find('`')?;
        return Some((s[1..1 + end].to_string(), end + 2));
    }
    if q != '"' {
        return None;
    }
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, i + 1)),
            '\\' => {
                let (_, e) = chars.next()?;
                match e {
                    'n' => out.push('\n'),
                    't' => out.push('\t'),
                    'r' => out.push('\r'),
                    'a' => out.push('\x07'),
                    'b' => out.push('\x08'),
                    'f' => out.push('\x0c'),
                    'v' => out.push('\x0b'),
                    '\\' => out.push('\\'),
                    '"' => out.push('"'),
                    '\'' => out.push('\''),
                    'x' | 'u' | 'U' => {
                        let n = match e {
                            'x' => 2,
                            'u' => 4,
                            _ => 8,
                        };
                        let mut v = 0u32;
                        for _ in 0..n {
                            let (_, h) = chars.next()?;
                            v = v * 16 + h.to_digit(16)?;
                        }
                        out.push(char::from_u32(v)?);
                    }
                    d @ '0'..='7' => {
                        let mut v = d.to_digit(8)?;
                        for _ in 0..2 {
                            let (_, h) = chars.next()?;
                            v = v * 8 + h.to_digit(8)?;
                        }
                        out.push(char::from_u32(v)?);
                    }
                    _ => return None,
                }
            }
            '\n' => return None,
            c => out.push(c),
        }
    }
    None
}

/// How a matcher compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchOp {
    Eq,
    Neq,
    Re,
    Nre,
}

impl MatchOp {
    pub fn as_str(self) -> &'static str {
        match self {
            MatchOp::Eq => "=",
            MatchOp::Neq => "!=",
            MatchOp::Re => "=~",
            MatchOp::Nre => "!~",
        }
    }
}

/// A label matcher, `name op "value"`. Regular expressions are anchored at both ends, as in
/// Prometheus and Loki.
#[derive(Debug, Clone)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    re: Option<Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, o: &Self) -> bool {
        self.name == o.name && self.op == o.op && self.value == o.value
    }
}

impl Matcher {
    pub fn new(op: MatchOp, name: impl Into<String>, value: impl Into<String>) -> Result<Self, LabelsError> {
        let value = value.into();
        let re = match op {
            MatchOp::Re | MatchOp::Nre => Some(
                Regex::new(&format!("^(?s:{value})$"))
                    .map_err(|e| LabelsError::Regex { re: value.clone(), msg: e.to_string() })?,
            ),
            _ => None,
        };
        Ok(Matcher { name: name.into(), op, value, re })
    }

    pub fn matches(&self, v: &str) -> bool {
        match (self.op, &self.re) {
            (MatchOp::Eq, _) => v == self.value,
            (MatchOp::Neq, _) => v != self.value,
            (MatchOp::Re, Some(re)) => re.is_match(v),
            (MatchOp::Nre, Some(re)) => !re.is_match(v),
            (_, None) => false,
        }
    }

    /// Whether the matcher accepts the empty string (and so also streams without the label).
    pub fn matches_empty(&self) -> bool {
        self.matches("")
    }

    pub fn matches_labels(&self, l: &Labels) -> bool {
        self.matches(l.get(&self.name).unwrap_or(""))
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.name, self.op.as_str(), quote(&self.value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_sorts_and_formats() {
        let l = Labels::parse(r#"{env="prod", app="x\"y"}"#).unwrap();
        assert_eq!(l.to_string(), r#"{app="x\"y", env="prod"}"#);
        assert_eq!(l.get("env"), Some("prod"));
    }

    #[test]
    fn parse_errors() {
        assert_eq!(Labels::parse("{}"), Err(LabelsError::Empty));
        assert!(matches!(Labels::parse(r#"{a=~"b"}"#), Err(LabelsError::Syntax { .. })));
        assert!(matches!(Labels::parse(r#"{a="b""#), Err(LabelsError::Syntax { .. })));
        assert!(matches!(Labels::parse(r#"{a="b", a="c"}"#), Err(LabelsError::Duplicate(_))));
        assert!(matches!(Labels::parse(r#"{1a="b"}"#), Err(LabelsError::InvalidName(_))));
    }

    #[test]
    fn matchers_are_anchored() {
        let m = Matcher::new(MatchOp::Re, "a", "fo+").unwrap();
        assert!(m.matches("foo"));
        assert!(!m.matches("xfoo"));
        assert!(!Matcher::new(MatchOp::Nre, "a", ".*").unwrap().matches(""));
    }
}
