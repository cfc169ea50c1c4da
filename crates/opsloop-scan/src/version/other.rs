//! RubyGems, Packagist (PHP's `version_compare`), CRAN and Hackage ordering.

use std::cmp::Ordering;

use super::{cmp_digits, is_digits};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg<'a> {
    Num(&'a str),
    Str(&'a str),
}

/// Runs of digits and runs of letters; everything else separates.
fn alnum_runs(s: &str) -> Vec<Seg<'_>> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let start = i;
        if b[i].is_ascii_digit() {
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            out.push(Seg::Num(&s[start..i]));
        } else if b[i].is_ascii_alphabetic() {
            while i < b.len() && b[i].is_ascii_alphabetic() {
                i += 1;
            }
            out.push(Seg::Str(&s[start..i]));
        } else {
            i += 1;
        }
    }
    out
}

fn is_zero(s: &Seg<'_>) -> bool {
    matches!(s, Seg::Num(n) if n.bytes().all(|b| b == b'0'))
}

/// `Gem::Version#<=>`: segments with trailing zeros dropped from the release part and from the
/// pre-release part (the part from the first letter on); a string segment sorts before a number.
pub fn compare_rubygems(a: &str, b: &str) -> Ordering {
    fn canonical(v: &str) -> Vec<Seg<'_>> {
        let segs = alnum_runs(v.trim());
        let split = segs.iter().position(|s| matches!(s, Seg::Str(_))).unwrap_or(segs.len());
        let (release, pre) = segs.split_at(split);
        let trim = |part: &[Seg<'_>]| -> usize { part.iter().rposition(|s| !is_zero(s)).map_or(0, |p| p + 1) };
        let mut out = release[..trim(release)].to_vec();
        out.extend_from_slice(&pre[..trim(pre)]);
        out
    }
    // Ruby replaces `-` by `.pre.`: `1.0-1` is a pre-release of 1.0.
    let a = a.replace('-', ".pre.");
    let b = b.replace('-', ".pre.");
    let (x, y) = (canonical(&a), canonical(&b));
    for i in 0..x.len().max(y.len()) {
        let p = x.get(i).cloned().unwrap_or(Seg::Num("0"));
        let q = y.get(i).cloned().unwrap_or(Seg::Num("0"));
        let o = match (&p, &q) {
            (Seg::Num(m), Seg::Num(n)) => cmp_digits(m, n),
            (Seg::Str(_), Seg::Num(_)) => Ordering::Less,
            (Seg::Num(_), Seg::Str(_)) => Ordering::Greater,
            (Seg::Str(m), Seg::Str(n)) => m.cmp(n),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

/// PHP's special forms, by prefix: unknown words sort first, then dev < alpha = a < beta = b
/// < RC = rc < # (a number) < pl = p.
fn php_special(s: &str) -> i32 {
    const FORMS: [(&str, i32); 10] = [
        ("dev", 0),
        ("alpha", 1),
        ("a", 1),
        ("beta", 2),
        ("b", 2),
        ("RC", 3),
        ("rc", 3),
        ("#", 4),
        ("pl", 5),
        ("p", 5),
    ];
    FORMS.iter().find(|(f, _)| s.starts_with(f)).map_or(-6, |(_, w)| *w)
}

/// `version_compare` after composer's normalisation (a leading `v` dropped): `-`, `_`, `+` are
/// separators, and a change between digits and other characters splits too.
pub fn compare_packagist(a: &str, b: &str) -> Ordering {
    fn canonical(v: &str) -> Vec<String> {
        let v = v.trim();
        let v = v.strip_prefix(['v', 'V']).unwrap_or(v);
        let mut parts: Vec<String> = Vec::new();
        let mut cur = String::new();
        let mut last_digit: Option<bool> = None;
        for c in v.chars() {
            if matches!(c, '.' | '-' | '_' | '+') {
                if !cur.is_empty() {
                    parts.push(std::mem::take(&mut cur));
                }
                last_digit = None;
                continue;
            }
            let d = c.is_ascii_digit();
            if last_digit.is_some_and(|l| l != d) && !cur.is_empty() {
                parts.push(std::mem::take(&mut cur));
            }
            cur.push(c);
            last_digit = Some(d);
        }
        if !cur.is_empty() {
            parts.push(cur);
        }
        parts
    }
    let (x, y) = (canonical(a), canonical(b));
    let weight = |p: &str| {
        if is_digits(p) { php_special("#") } else { php_special(p) }
    };
    for i in 0..x.len().max(y.len()) {
        let o = match (x.get(i), y.get(i)) {
            (Some(p), Some(q)) => match (is_digits(p), is_digits(q)) {
                (true, true) => cmp_digits(p, q),
                _ => weight(p).cmp(&weight(q)),
            },
            // PHP compares what is left over against a number: a further number makes the
            // longer version greater, a special form ranks against `#`.
            (Some(p), None) => {
                if is_digits(p) {
                    Ordering::Greater
                } else {
                    weight(p).cmp(&php_special("#"))
                }
            }
            (None, Some(q)) => {
                if is_digits(q) {
                    Ordering::Less
                } else {
                    php_special("#").cmp(&weight(q))
                }
            }
            (None, None) => Ordering::Equal,
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

/// Numbers separated by `.` or `-`; a version that extends another is greater.
fn numeric_list(v: &str, seps: &[char]) -> Vec<String> {
    v.trim()
        .split(seps)
        .map(|p| {
            let digits: String = p.chars().filter(char::is_ascii_digit).collect();
            if digits.is_empty() { "0".to_owned() } else { digits }
        })
        .collect()
}

fn cmp_numeric_lists(x: &[String], y: &[String]) -> Ordering {
    for (p, q) in x.iter().zip(y) {
        let o = cmp_digits(p, q);
        if o != Ordering::Equal {
            return o;
        }
    }
    x.len().cmp(&y.len())
}

/// R's `package_version`: numbers separated by `.` or `-`.
pub fn compare_cran(a: &str, b: &str) -> Ordering {
    cmp_numeric_lists(&numeric_list(a, &['.', '-']), &numeric_list(b, &['.', '-']))
}

/// Haskell's `Data.Version`: dotted numbers compared as lists.
pub fn compare_hackage(a: &str, b: &str) -> Ordering {
    cmp_numeric_lists(&numeric_list(a, &['.']), &numeric_list(b, &['.']))
}
