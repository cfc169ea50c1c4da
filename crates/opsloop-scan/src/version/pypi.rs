//! PEP 440 ordering (PyPI): epochs, releases, pre-, post- and development releases, local
//! versions. Strings that are not PEP 440 versions are ordered as setuptools' legacy versions
//! did (pip still meets them in old indexes), all before every valid version.

use std::cmp::Ordering;

use super::cmp_digits;

#[derive(Debug)]
struct Pep440 {
    epoch: String,
    release: Vec<String>,
    pre: Option<(u8, String)>,
    post: Option<String>,
    dev: Option<String>,
    local: Option<Vec<String>>,
}

struct Cursor<'a> {
    s: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn digits(&mut self) -> Option<String> {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        (self.i > start).then(|| String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }
    fn sep(&mut self) -> bool {
        if matches!(self.peek(), Some(b'-' | b'_' | b'.')) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn word(&mut self, words: &[&str]) -> Option<usize> {
        for (n, w) in words.iter().enumerate() {
            if self.s[self.i..].starts_with(w.as_bytes()) {
                self.i += w.len();
                return Some(n);
            }
        }
        None
    }
}

fn parse(v: &str) -> Option<Pep440> {
    let lower = v.trim().to_ascii_lowercase();
    let mut c = Cursor { s: lower.as_bytes(), i: 0 };
    if c.peek() == Some(b'v') {
        c.i += 1;
    }
    let mut epoch = "0".to_owned();
    let save = c.i;
    if let Some(d) = c.digits() {
        if c.peek() == Some(b'!') {
            c.i += 1;
            epoch = d;
        } else {
            c.i = save;
        }
    }
    let mut release = vec![c.digits()?];
    loop {
        let save = c.i;
        if c.peek() == Some(b'.')
            && let Some(d) = {
                c.i += 1;
                c.digits()
            }
        {
            release.push(d);
            continue;
        }
        c.i = save;
        break;
    }
    // Pre-release.
    let mut pre = None;
    let save = c.i;
    c.sep();
    // Longest spellings first so that `alpha` is not read as `a` + garbage.
    const PRE: [&str; 8] = ["alpha", "beta", "preview", "pre", "rc", "a", "b", "c"];
    if let Some(n) = c.word(&PRE) {
        let rank = match PRE[n] {
            "alpha" | "a" => 0,
            "beta" | "b" => 1,
            _ => 2,
        };
        let save2 = c.i;
        c.sep();
        let num = match c.digits() {
            Some(d) => d,
            None => {
                c.i = save2;
                "0".into()
            }
        };
        pre = Some((rank, num));
    } else {
        c.i = save;
    }
    // Post-release: `-N`, or [sep](post|rev|r)[sep][N].
    let mut post = None;
    let save = c.i;
    if c.peek() == Some(b'-')
        && let Some(d) = {
            c.i += 1;
            c.digits()
        }
    {
        post = Some(d);
    } else {
        c.i = save;
        c.sep();
        if c.word(&["post", "rev", "r"]).is_some() {
            let save2 = c.i;
            c.sep();
            post = Some(match c.digits() {
                Some(d) => d,
                None => {
                    c.i = save2;
                    "0".into()
                }
            });
        } else {
            c.i = save;
        }
    }
    // Development release.
    let mut dev = None;
    let save = c.i;
    c.sep();
    if c.word(&["dev"]).is_some() {
        let save2 = c.i;
        c.sep();
        dev = Some(match c.digits() {
            Some(d) => d,
            None => {
                c.i = save2;
                "0".into()
            }
        });
    } else {
        c.i = save;
    }
    // Local version.
    let mut local = None;
    if c.peek() == Some(b'+') {
        let rest = &lower[c.i + 1..];
        let parts: Vec<String> = rest.split(['.', '-', '_']).map(str::to_owned).collect();
        if parts.iter().any(|p| p.is_empty() || !p.bytes().all(|b| b.is_ascii_alphanumeric())) {
            return None;
        }
        local = Some(parts);
        c.i = lower.len();
    }
    if c.i != lower.len() {
        return None;
    }
    while release.len() > 1 && release.last().is_some_and(|r| r.bytes().all(|b| b == b'0')) {
        release.pop();
    }
    Some(Pep440 { epoch, release, pre, post, dev, local })
}

/// -inf, a value, +inf: how PEP 440 fills absent parts so they sort where they belong.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Bound<T> {
    Min,
    Value(T),
    Max,
}

#[derive(PartialEq, Eq)]
struct Num(String);
impl PartialOrd for Num {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Num {
    fn cmp(&self, other: &Self) -> Ordering {
        cmp_digits(&self.0, &other.0)
    }
}

fn cmp_valid(a: &Pep440, b: &Pep440) -> Ordering {
    let release = |v: &Pep440| v.release.iter().map(|r| Num(r.clone())).collect::<Vec<_>>();
    let pre = |v: &Pep440| match &v.pre {
        None if v.post.is_none() && v.dev.is_some() => Bound::Min,
        None => Bound::Max,
        Some((rank, n)) => Bound::Value((*rank, Num(n.clone()))),
    };
    let post = |v: &Pep440| match &v.post {
        None => Bound::Min,
        Some(n) => Bound::Value(Num(n.clone())),
    };
    let dev = |v: &Pep440| match &v.dev {
        None => Bound::Max,
        Some(n) => Bound::Value(Num(n.clone())),
    };
    cmp_digits(&a.epoch, &b.epoch)
        .then_with(|| {
            let (x, y) = (release(a), release(b));
            // Missing release components are zeros (trailing zeros were trimmed).
            for i in 0..x.len().max(y.len()) {
                let o = cmp_digits(x.get(i).map_or("0", |n| n.0.as_str()), y.get(i).map_or("0", |n| n.0.as_str()));
                if o != Ordering::Equal {
                    return o;
                }
            }
            Ordering::Equal
        })
        .then_with(|| pre(a).cmp(&pre(b)))
        .then_with(|| post(a).cmp(&post(b)))
        .then_with(|| dev(a).cmp(&dev(b)))
        .then_with(|| cmp_local(a.local.as_deref(), b.local.as_deref()))
}

fn cmp_local(a: Option<&[String]>, b: Option<&[String]>) -> Ordering {
    match (a, b) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => {
            for (p, q) in x.iter().zip(y) {
                let pn = p.bytes().all(|c| c.is_ascii_digit());
                let qn = q.bytes().all(|c| c.is_ascii_digit());
                let o = match (pn, qn) {
                    (true, true) => cmp_digits(p, q),
                    (true, false) => Ordering::Greater,
                    (false, true) => Ordering::Less,
                    (false, false) => p.cmp(q),
                };
                if o != Ordering::Equal {
                    return o;
                }
            }
            x.len().cmp(&y.len())
        }
    }
}

/// setuptools' legacy key: components of digits (zero-padded), letters and separators.
fn legacy_key(v: &str) -> Vec<String> {
    let lower = v.to_ascii_lowercase();
    let b = lower.as_bytes();
    let mut pieces: Vec<String> = Vec::new();
    let mut i = 0;
    let mut other = String::new();
    while i < b.len() {
        let c = b[i];
        let start = i;
        if c.is_ascii_digit() {
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
        } else if c.is_ascii_lowercase() {
            while i < b.len() && b[i].is_ascii_lowercase() {
                i += 1;
            }
        } else if c == b'.' || c == b'-' {
            i += 1;
        } else {
            // Anything else is text between the component matches, kept as its own piece.
            other.push(char::from(c));
            i += 1;
            continue;
        }
        if !other.is_empty() {
            pieces.push(std::mem::take(&mut other));
        }
        pieces.push(lower[start..i].to_owned());
    }
    if !other.is_empty() {
        pieces.push(other);
    }
    let mut parts: Vec<String> = Vec::new();
    let mapped = pieces
        .into_iter()
        .map(|p| match p.as_str() {
            "pre" | "preview" | "rc" => "c".to_owned(),
            "-" => "final-".to_owned(),
            "dev" => "@".to_owned(),
            _ => p,
        })
        .filter(|p| !p.is_empty() && p != ".")
        .map(|p| if p.as_bytes()[0].is_ascii_digit() { format!("{p:0>8}") } else { format!("*{p}") })
        .chain(std::iter::once("*final".to_owned()));
    for part in mapped {
        if part.starts_with('*') {
            if part.as_str() < "*final" {
                while parts.last().is_some_and(|p| p == "*final-") {
                    parts.pop();
                }
            }
            while parts.last().is_some_and(|p| p == "00000000") {
                parts.pop();
            }
        }
        parts.push(part);
    }
    parts
}

pub fn compare(a: &str, b: &str) -> Ordering {
    match (parse(a), parse(b)) {
        (Some(x), Some(y)) => cmp_valid(&x, &y),
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (None, None) => legacy_key(a).cmp(&legacy_key(b)),
    }
}
