//! Distribution package versions: Debian (dpkg), Red Hat (rpmvercmp) and Alpine (apk).

use std::cmp::Ordering;

use super::cmp_digits;

/// dpkg's character weight: `~` sorts before everything, even the end of the string; letters
/// before other characters.
fn dpkg_weight(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

/// dpkg's `verrevcmp`: alternating non-digit and digit runs.
fn verrevcmp(a: &[u8], b: &[u8]) -> Ordering {
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !a[i].is_ascii_digit()) || (j < b.len() && !b[j].is_ascii_digit()) {
            let (x, y) = (dpkg_weight(a.get(i).copied()), dpkg_weight(b.get(j).copied()));
            if x != y {
                return x.cmp(&y);
            }
            i += 1;
            j += 1;
        }
        let si = i;
        while i < a.len() && a[i].is_ascii_digit() {
            i += 1;
        }
        let sj = j;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        let x = std::str::from_utf8(&a[si.min(a.len())..i.min(a.len())]).unwrap_or("0");
        let y = std::str::from_utf8(&b[sj.min(b.len())..j.min(b.len())]).unwrap_or("0");
        let o = cmp_digits(x, y);
        if o != Ordering::Equal {
            return o;
        }
    }
    Ordering::Equal
}

fn split_debian(v: &str) -> (&str, &str, &str) {
    let v = v.trim();
    let (epoch, rest) = match v.split_once(':') {
        Some((e, r)) if e.bytes().all(|b| b.is_ascii_digit()) => (e, r),
        _ => ("0", v),
    };
    let (upstream, revision) = rest.rsplit_once('-').unwrap_or((rest, ""));
    (epoch, upstream, revision)
}

pub fn compare_debian(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = split_debian(a);
    let (eb, ub, rb) = split_debian(b);
    cmp_digits(ea, eb)
        .then_with(|| verrevcmp(ua.as_bytes(), ub.as_bytes()))
        .then_with(|| verrevcmp(ra.as_bytes(), rb.as_bytes()))
}

/// rpm's `rpmvercmp`.
fn rpmvercmp(a: &[u8], b: &[u8]) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let sep = |c: u8| !c.is_ascii_alphanumeric() && c != b'~' && c != b'^';
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        while i < a.len() && sep(a[i]) {
            i += 1;
        }
        while j < b.len() && sep(b[j]) {
            j += 1;
        }
        // `~` sorts before anything, even the end.
        let (ta, tb) = (a.get(i) == Some(&b'~'), b.get(j) == Some(&b'~'));
        if ta || tb {
            if !ta {
                return Ordering::Greater;
            }
            if !tb {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        // `^` sorts after the end but before anything else.
        let (ca, cb) = (a.get(i) == Some(&b'^'), b.get(j) == Some(&b'^'));
        if ca || cb {
            if i >= a.len() {
                return Ordering::Less;
            }
            if j >= b.len() {
                return Ordering::Greater;
            }
            if !ca {
                return Ordering::Greater;
            }
            if !cb {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        if i >= a.len() || j >= b.len() {
            break;
        }
        let numeric = a[i].is_ascii_digit();
        let class = |c: u8| {
            if numeric { c.is_ascii_digit() } else { c.is_ascii_alphabetic() }
        };
        let (si, sj) = (i, j);
        while i < a.len() && class(a[i]) {
            i += 1;
        }
        while j < b.len() && class(b[j]) {
            j += 1;
        }
        if j == sj {
            // Different kinds of segment: a number beats letters.
            return if numeric { Ordering::Greater } else { Ordering::Less };
        }
        let (x, y) = (&a[si..i], &b[sj..j]);
        let o = if numeric {
            cmp_digits(std::str::from_utf8(x).unwrap_or("0"), std::str::from_utf8(y).unwrap_or("0"))
        } else {
            x.cmp(y)
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    match (i >= a.len(), j >= b.len()) {
        (true, true) => Ordering::Equal,
        (false, _) => Ordering::Greater,
        (true, false) => Ordering::Less,
    }
}

fn split_rpm(v: &str) -> (&str, &str, Option<&str>) {
    let v = v.trim();
    let (epoch, rest) = match v.split_once(':') {
        Some((e, r)) if !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()) => (e, r),
        _ => ("0", v),
    };
    match rest.rsplit_once('-') {
        Some((version, release)) => (epoch, version, Some(release)),
        None => (epoch, rest, None),
    }
}

pub fn compare_rpm(a: &str, b: &str) -> Ordering {
    let (ea, va, ra) = split_rpm(a);
    let (eb, vb, rb) = split_rpm(b);
    cmp_digits(ea, eb).then_with(|| rpmvercmp(va.as_bytes(), vb.as_bytes())).then_with(|| match (ra, rb) {
        (Some(x), Some(y)) => rpmvercmp(x.as_bytes(), y.as_bytes()),
        // A version with a release (even an empty one, `1-`) is newer than the bare one.
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (None, None) => Ordering::Equal,
    })
}

/// An apk version: `number{.number}{letter}{_suffix{number}}{~hash}{-r#}`.
struct Apk<'a> {
    original: &'a str,
    numbers: Vec<&'a str>,
    letter: Option<u8>,
    /// (weight, number): alpha, beta, pre, rc, (none), cvs, svn, git, hg, p.
    suffixes: Vec<(u8, &'a str)>,
    build: &'a str,
    remainder: &'a str,
    invalid: bool,
}

const NO_SUFFIX: u8 = 4;
const SUFFIXES: [&str; 10] = ["alpha", "beta", "pre", "rc", "", "cvs", "svn", "git", "hg", "p"];

fn digits_prefix(s: &str) -> usize {
    s.bytes().take_while(u8::is_ascii_digit).count()
}

fn parse_apk(v: &str) -> Apk<'_> {
    let mut rest = v;
    let mut numbers = Vec::new();
    loop {
        let n = digits_prefix(rest);
        if n == 0 {
            break;
        }
        numbers.push(&rest[..n]);
        rest = &rest[n..];
        match rest.strip_prefix('.') {
            Some(r) if digits_prefix(r) > 0 => rest = r,
            Some(r) => {
                rest = r;
                break;
            }
            None => break,
        }
    }
    let letter = match rest.as_bytes().first() {
        Some(&c) if c.is_ascii_lowercase() => {
            rest = &rest[1..];
            Some(c)
        }
        _ => None,
    };
    let mut suffixes = Vec::new();
    while let Some(r) = rest.strip_prefix('_') {
        // Longest spelling that matches (`pre` before `p`).
        let Some((w, name)) = SUFFIXES
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.is_empty() && r.starts_with(**s))
            .max_by_key(|(_, s)| s.len())
        else {
            break;
        };
        let after = &r[name.len()..];
        let n = digits_prefix(after);
        suffixes.push((w as u8, if n == 0 { "0" } else { &after[..n] }));
        rest = &after[n..];
    }
    if let Some(r) = rest.strip_prefix('~') {
        let n = r.bytes().take_while(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)).count();
        if n > 0 {
            rest = &r[n..];
        }
    }
    let mut build = "0";
    let mut invalid = false;
    if !rest.is_empty() {
        if let Some(r) = rest.strip_prefix("-r") {
            let n = digits_prefix(r);
            if n > 0 {
                build = &r[..n];
            }
            rest = &r[n..];
        } else {
            invalid = true;
        }
    }
    Apk { original: v, numbers, letter, suffixes, build, remainder: rest, invalid }
}

pub fn compare_alpine(a: &str, b: &str) -> Ordering {
    let (x, y) = (parse_apk(a), parse_apk(b));
    if x.invalid && y.invalid {
        return x.original.cmp(y.original);
    }
    for i in 0..x.numbers.len().max(y.numbers.len()) {
        let p = x.numbers.get(i).copied().unwrap_or("0");
        let q = y.numbers.get(i).copied().unwrap_or("0");
        // After the first component, a leading zero means a fraction-like comparison
        // (1.02 < 1.1): apk compares such components as strings.
        let o = if i > 0 && (p.starts_with('0') || q.starts_with('0')) { p.cmp(q) } else { cmp_digits(p, q) };
        if o != Ordering::Equal {
            return o;
        }
    }
    let o = match (x.letter, y.letter) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(p), Some(q)) => p.cmp(&q),
    };
    if o != Ordering::Equal {
        return o;
    }
    for i in 0..x.suffixes.len().max(y.suffixes.len()) {
        let p = x.suffixes.get(i).copied().unwrap_or((NO_SUFFIX, "0"));
        let q = y.suffixes.get(i).copied().unwrap_or((NO_SUFFIX, "0"));
        let o = p.0.cmp(&q.0).then_with(|| cmp_digits(p.1, q.1));
        if o != Ordering::Equal {
            return o;
        }
    }
    cmp_digits(x.build, y.build).then_with(|| match (x.remainder.is_empty(), y.remainder.is_empty()) {
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        _ => Ordering::Equal,
    })
}
