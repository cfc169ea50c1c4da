//! Semantic versioning, leniently (OSV's reading): an optional `v`, any number of numeric
//! components (missing ones are 0), a pre-release after `-`, build metadata after `+`. NuGet and
//! Pub are variations: NuGet compares pre-release labels case-insensitively; Pub orders build
//! metadata after the plain release.

use std::cmp::Ordering;

use super::{cmp_digits, is_digits};

struct Parsed<'a> {
    numbers: Vec<&'a str>,
    pre: Option<&'a str>,
    build: Option<&'a str>,
}

fn parse(v: &str) -> Parsed<'_> {
    let v = v.trim();
    let v = v.strip_prefix(['v', 'V']).unwrap_or(v);
    let (rest, build) = match v.split_once('+') {
        Some((r, b)) => (r, Some(b)),
        None => (v, None),
    };
    // The numeric core ends at the first character that is neither a digit nor a dot; what
    // follows (usually after `-`) is the pre-release.
    let end = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
    let (core, tail) = rest.split_at(end);
    let pre = if tail.is_empty() { None } else { Some(tail.strip_prefix('-').unwrap_or(tail)) };
    Parsed { numbers: core.split('.').filter(|s| !s.is_empty()).collect(), pre, build }
}

fn cmp_numbers(a: &[&str], b: &[&str]) -> Ordering {
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or("0");
        let y = b.get(i).copied().unwrap_or("0");
        let o = cmp_digits(x, y);
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

/// Dot-separated identifiers: numeric ones compare as numbers and sort before alphanumeric ones;
/// a longer list wins when one is a prefix of the other.
fn cmp_identifiers(a: &str, b: &str, fold_case: bool) -> Ordering {
    let mut xs = a.split('.');
    let mut ys = b.split('.');
    loop {
        match (xs.next(), ys.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => {
                let o = match (is_digits(x), is_digits(y)) {
                    (true, true) => cmp_digits(x, y),
                    (true, false) => Ordering::Less,
                    (false, true) => Ordering::Greater,
                    (false, false) if fold_case => x.to_ascii_lowercase().cmp(&y.to_ascii_lowercase()),
                    (false, false) => x.cmp(y),
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
        }
    }
}

fn cmp_pre(a: Option<&str>, b: Option<&str>, fold_case: bool) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => cmp_identifiers(x, y, fold_case),
    }
}

pub fn compare_semver(a: &str, b: &str) -> Ordering {
    let (a, b) = (parse(a), parse(b));
    cmp_numbers(&a.numbers, &b.numbers).then_with(|| cmp_pre(a.pre, b.pre, false))
}

pub fn compare_nuget(a: &str, b: &str) -> Ordering {
    let (a, b) = (parse(a), parse(b));
    cmp_numbers(&a.numbers, &b.numbers).then_with(|| cmp_pre(a.pre, b.pre, true))
}

pub fn compare_pub(a: &str, b: &str) -> Ordering {
    let (a, b) = (parse(a), parse(b));
    cmp_numbers(&a.numbers, &b.numbers).then_with(|| cmp_pre(a.pre, b.pre, false)).then_with(|| {
        match (a.build, b.build) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Less,
            (Some(_), None) => Ordering::Greater,
            (Some(x), Some(y)) => cmp_identifiers(x, y, false),
        }
    })
}
