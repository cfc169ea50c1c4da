//! Maven's version order, as its specification describes it
//! (<https://maven.apache.org/pom.html#version-order-specification>): tokens split at `.`, `-`
//! and digit/letter transitions, each remembering its separator; trailing "null" tokens trimmed
//! per hyphen-separated part; well-known qualifiers ordered
//! `alpha < beta < milestone < rc < snapshot < "" = final = ga = release < sp`, unknown ones
//! after them, alphabetically.

use std::cmp::Ordering;

use super::cmp_digits;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Num(String),
    Qual(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Token {
    /// `.` or `-`.
    sep: u8,
    value: Value,
}

impl Token {
    fn is_null(&self) -> bool {
        match &self.value {
            Value::Num(n) => n.bytes().all(|b| b == b'0'),
            Value::Qual(q) => q.is_empty(),
        }
    }
}

fn qualifier(q: &str, followed_by_digit: bool) -> String {
    match q {
        "a" if followed_by_digit => "alpha".into(),
        "b" if followed_by_digit => "beta".into(),
        "m" if followed_by_digit => "milestone".into(),
        "cr" => "rc".into(),
        "final" | "ga" | "release" => String::new(),
        other => other.to_owned(),
    }
}

fn tokenize(v: &str) -> Vec<Token> {
    let v = v.trim().to_ascii_lowercase();
    let b = v.as_bytes();
    let mut tokens = Vec::new();
    let mut sep = b'.';
    let mut i = 0;
    loop {
        let start = i;
        let digit = b.get(i).is_some_and(u8::is_ascii_digit);
        while i < b.len() && b[i] != b'.' && b[i] != b'-' && b[i].is_ascii_digit() == digit {
            i += 1;
        }
        let text = &v[start..i];
        let value = if text.is_empty() {
            Value::Num("0".into())
        } else if digit {
            Value::Num(text.to_owned())
        } else {
            Value::Qual(qualifier(text, b.get(i).is_some_and(u8::is_ascii_digit)))
        };
        tokens.push(Token { sep, value });
        match b.get(i) {
            None => break,
            Some(&c @ (b'.' | b'-')) => {
                sep = c;
                i += 1;
            }
            // A digit/letter transition counts as a hyphen.
            Some(_) => sep = b'-',
        }
    }
    // Trim trailing nulls, then again before each remaining hyphen, from the end: each
    // hyphen-separated part loses its trailing nulls, and a part that was only nulls goes.
    let mut end = tokens.len();
    let mut kept: Vec<Token> = Vec::new();
    while end > 0 {
        let start = tokens[..end].iter().rposition(|t| t.sep == b'-').unwrap_or(0);
        let mut part: Vec<Token> = tokens[start..end].to_vec();
        let min = usize::from(start == 0);
        while part.len() > min && part.last().is_some_and(Token::is_null) {
            part.pop();
        }
        part.extend(kept);
        kept = part;
        end = start;
    }
    kept
}

const KNOWN: [&str; 7] = ["alpha", "beta", "milestone", "rc", "snapshot", "", "sp"];

fn cmp_qualifiers(a: &str, b: &str) -> Ordering {
    let rank = |q: &str| KNOWN.iter().position(|k| *k == q);
    match (rank(a), rank(b)) {
        (Some(x), Some(y)) => x.cmp(&y),
        (Some(_), None) => Ordering::Less,
        (None, Some(_)) => Ordering::Greater,
        (None, None) => a.cmp(b),
    }
}

/// `.qualifier < -qualifier < -number < .number`.
fn kind_rank(t: &Token) -> u8 {
    match (&t.value, t.sep) {
        (Value::Qual(_), b'.') => 0,
        (Value::Qual(_), _) => 1,
        (Value::Num(_), b'-') => 2,
        (Value::Num(_), _) => 3,
    }
}

fn cmp_tokens(a: &Token, b: &Token) -> Ordering {
    if a.sep == b.sep {
        match (&a.value, &b.value) {
            (Value::Num(x), Value::Num(y)) => cmp_digits(x, y),
            (Value::Qual(x), Value::Qual(y)) => cmp_qualifiers(x, y),
            (Value::Qual(_), Value::Num(_)) => Ordering::Less,
            (Value::Num(_), Value::Qual(_)) => Ordering::Greater,
        }
    } else {
        kind_rank(a).cmp(&kind_rank(b))
    }
}

/// The null token a shorter version is padded with, shaped like the other side's token.
fn padding(like: &Token) -> Token {
    Token {
        sep: like.sep,
        value: match like.value {
            Value::Num(_) => Value::Num("0".into()),
            Value::Qual(_) => Value::Qual(String::new()),
        },
    }
}

pub fn compare(a: &str, b: &str) -> Ordering {
    let (x, y) = (tokenize(a), tokenize(b));
    for i in 0..x.len().max(y.len()) {
        let o = match (x.get(i), y.get(i)) {
            (Some(p), Some(q)) => cmp_tokens(p, q),
            (Some(p), None) => cmp_tokens(p, &padding(p)),
            (None, Some(q)) => cmp_tokens(&padding(q), q),
            (None, None) => Ordering::Equal,
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}
