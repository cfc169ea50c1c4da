//! The LogQL lexer. Numbers followed by a unit become durations (`5m`, `1h30m`, `250ms`) or
//! byte sizes (`10KB`, `1.5MiB`) here, because the grammar needs to know which it has: a label
//! filter compares durations and sizes differently from plain numbers.

use crate::labels::unquote_prefix;

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    LBrace,
    RBrace,
    LParen,
    RParen,
    LBrack,
    RBrack,
    Comma,
    /// `=`
    Eq,
    /// `!=`
    Neq,
    /// `=~`
    Re,
    /// `!~`
    Nre,
    /// `|=`
    PipeExact,
    /// `|~`
    PipeMatch,
    Pipe,
    Gt,
    Ge,
    Lt,
    Le,
    /// `==`
    CmpEq,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Str(String),
    Num(f64, String),
    /// Nanoseconds, and the text as written.
    Dur(i64, String),
    Bytes(u64, String),
    Ident(String),
    /// `--strict`, `--keep-empty`
    Flag(String),
    Eof,
}

impl Tok {
    /// The name goyacc would print in `unexpected X`.
    pub fn describe(&self) -> String {
        match self {
            Tok::Str(_) => "STRING".into(),
            Tok::Num(..) => "NUMBER".into(),
            Tok::Dur(..) => "DURATION".into(),
            Tok::Bytes(..) => "BYTES".into(),
            Tok::Ident(s) => match s.as_str() {
                "by" | "without" | "bool" | "on" | "ignoring" | "group_left" | "group_right" | "offset" | "or"
                | "and" | "unless" | "json" | "logfmt" | "regexp" | "pattern" | "unpack" | "line_format"
                | "label_format" | "unwrap" | "drop" | "keep" | "decolorize" => s.to_uppercase(),
                _ => "IDENTIFIER".into(),
            },
            Tok::Flag(s) => s.clone(),
            Tok::Eof => "$end".into(),
            other => other.symbol().to_string(),
        }
    }

    fn symbol(&self) -> &'static str {
        match self {
            Tok::LBrace => "{",
            Tok::RBrace => "}",
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::LBrack => "[",
            Tok::RBrack => "]",
            Tok::Comma => ",",
            Tok::Eq => "=",
            Tok::Neq => "!=",
            Tok::Re => "=~",
            Tok::Nre => "!~",
            Tok::PipeExact => "|=",
            Tok::PipeMatch => "|~",
            Tok::Pipe => "|",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::CmpEq => "==",
            Tok::Add => "+",
            Tok::Sub => "-",
            Tok::Mul => "*",
            Tok::Div => "/",
            Tok::Mod => "%",
            Tok::Pow => "^",
            _ => "?",
        }
    }
}

/// A lexing error at a byte offset.
#[derive(Debug, Clone, PartialEq)]
pub struct LexError {
    pub pos: usize,
    pub msg: String,
}

/// Splits a query into tokens with their byte offsets; the last token is `Eof`.
pub fn lex(src: &str) -> Result<Vec<(Tok, usize)>, LexError> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let start = i;
        let two = |x: u8| b.get(i + 1) == Some(&x);
        let tok = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'#' => {
                // A comment runs to the end of the line.
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'{' => Tok::LBrace,
            b'}' => Tok::RBrace,
            b'(' => Tok::LParen,
            b')' => Tok::RParen,
            b'[' => Tok::LBrack,
            b']' => Tok::RBrack,
            b',' => Tok::Comma,
            b'+' => Tok::Add,
            b'*' => Tok::Mul,
            b'/' => Tok::Div,
            b'%' => Tok::Mod,
            b'^' => Tok::Pow,
            b'=' if two(b'~') => Tok::Re,
            b'=' if two(b'=') => Tok::CmpEq,
            b'=' => Tok::Eq,
            b'!' if two(b'=') => Tok::Neq,
            b'!' if two(b'~') => Tok::Nre,
            b'|' if two(b'=') => Tok::PipeExact,
            b'|' if two(b'~') => Tok::PipeMatch,
            b'|' => Tok::Pipe,
            b'>' if two(b'=') => Tok::Ge,
            b'>' => Tok::Gt,
            b'<' if two(b'=') => Tok::Le,
            b'<' => Tok::Lt,
            b'-' if two(b'-') => {
                let mut j = i + 2;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'-' || b[j] == b'_') {
                    j += 1;
                }
                let flag = src[i..j].to_string();
                i = j;
                out.push((Tok::Flag(flag), start));
                continue;
            }
            b'-' => Tok::Sub,
            b'"' | b'`' => match unquote_prefix(&src[i..]) {
                Some((s, used)) => {
                    i += used;
                    out.push((Tok::Str(s), start));
                    continue;
                }
                None => return Err(LexError { pos: i, msg: "invalid or unterminated string literal".into() }),
            },
            b'0'..=b'9' | b'.' => {
                let (tok, used) = lex_number(&src[i..])
                    .ok_or_else(|| LexError { pos: i, msg: format!("invalid number {:?}", &src[i..(i + 1)]) })?;
                i += used;
                out.push((tok, start));
                continue;
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let mut j = i;
                while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] == b'.') {
                    j += 1;
                }
                // A dot may join identifiers in json parameters but never ends one.
                while j > i + 1 && b[j - 1] == b'.' {
                    j -= 1;
                }
                let id = src[i..j].to_string();
                i = j;
                out.push((Tok::Ident(id), start));
                continue;
            }
            _ => {
                let ch = src[i..].chars().next().unwrap_or('?');
                return Err(LexError { pos: i, msg: format!("unexpected character {ch:?}") });
            }
        };
        i += tok.symbol().len();
        out.push((tok, start));
    }
    out.push((Tok::Eof, src.len()));
    Ok(out)
}

fn lex_number(s: &str) -> Option<(Tok, usize)> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
        i += 1;
    }
    // An exponent: 1e3, 2.5E-2.
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        let mut j = i + 1;
        if j < b.len() && (b[j] == b'+' || b[j] == b'-') {
            j += 1;
        }
        if j < b.len() && b[j].is_ascii_digit() {
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
            if j >= b.len() || !b[j].is_ascii_alphabetic() {
                let text = &s[..j];
                return Some((Tok::Num(text.parse().ok()?, text.to_string()), j));
            }
        }
    }
    let mut j = i;
    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'.' || b[j] == 0xc2 || b[j] == 0xb5) {
        j += 1;
    }
    let text = &s[..j];
    if j == i {
        return Some((Tok::Num(text.parse().ok()?, text.to_string()), i));
    }
    if let Some(d) = parse_duration(text) {
        return Some((Tok::Dur(d, text.to_string()), j));
    }
    if let Some(n) = parse_bytes(text) {
        return Some((Tok::Bytes(n, text.to_string()), j));
    }
    None
}

/// Parses a Prometheus/Go duration (`1h30m`, `250ms`, `1.5s`, `2d`, `1w`, `1y`) to nanoseconds.
pub fn parse_duration(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut total: f64 = 0.0;
    if b.is_empty() {
        return None;
    }
    while i < b.len() {
        let start = i;
        while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
            i += 1;
        }
        if start == i {
            return None;
        }
        let n: f64 = s[start..i].parse().ok()?;
        let ustart = i;
        while i < b.len() && !(b[i].is_ascii_digit() || b[i] == b'.') {
            i += 1;
        }
        let unit: f64 = match &s[ustart..i] {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "d" => 86400e9,
            "w" => 7.0 * 86400e9,
            "y" => 365.0 * 86400e9,
            _ => return None,
        };
        total += n * unit;
    }
    if !total.is_finite() || total > i64::MAX as f64 {
        return None;
    }
    Some(total.round() as i64)
}

/// Parses a human byte size (`10KB`, `1.5MiB`, `512b`), case-insensitively, as go-humanize does.
pub fn parse_bytes(s: &str) -> Option<u64> {
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let n: f64 = s[..split].parse().ok()?;
    let mult: f64 = match s[split..].to_ascii_lowercase().as_str() {
        "b" => 1.0,
        "kb" | "k" => 1e3,
        "kib" | "ki" => 1024.0,
        "mb" | "m" => 1e6,
        "mib" | "mi" => 1024.0 * 1024.0,
        "gb" | "g" => 1e9,
        "gib" | "gi" => 1024.0 * 1024.0 * 1024.0,
        "tb" | "t" => 1e12,
        "tib" | "ti" => 1024f64.powi(4),
        "pb" | "p" => 1e15,
        "pib" | "pi" => 1024f64.powi(5),
        _ => return None,
    };
    let v = n * mult;
    if !v.is_finite() || v > u64::MAX as f64 {
        return None;
    }
    Some(v as u64)
}

/// Formats nanoseconds the way Prometheus prints durations: `1h30m`, `5m`, `250ms`.
pub fn format_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let neg = ns < 0;
    let ns = ns.unsigned_abs();
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if !ns.is_multiple_of(1_000_000) {
        // Not a whole number of milliseconds: fall back to the largest unit that divides it.
        for (unit, name) in [(1_000u64, "us"), (1, "ns")] {
            if ns.is_multiple_of(unit) {
                out.push_str(&format!("{}{name}", ns / unit));
                return out;
            }
        }
    }
    let mut ms = ns / 1_000_000;
    for (unit, name) in [
        (365 * 86_400_000u64, "y"),
        (7 * 86_400_000, "w"),
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1000, "s"),
        (1, "ms"),
    ] {
        if ms >= unit {
            out.push_str(&format!("{}{name}", ms / unit));
            ms %= unit;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h30m"), Some(5_400_000_000_000));
        assert_eq!(parse_duration("250ms"), Some(250_000_000));
        assert_eq!(format_duration(5_400_000_000_000), "1h30m");
        assert_eq!(format_duration(90_000_000_000), "1m30s");
        assert_eq!(format_duration(1_500), "1500ns");
    }

    #[test]
    fn numbers_units() {
        let t = lex("> 10KB and x < 1.5 or y >= 5m").unwrap();
        assert!(matches!(t[1].0, Tok::Bytes(10_000, _)));
        assert!(matches!(t[5].0, Tok::Num(v, _) if v == 1.5));
        assert!(matches!(t[9].0, Tok::Dur(300_000_000_000, _)));
    }
}
