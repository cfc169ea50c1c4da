//! Alertmanager's label matchers (`pkg/labels` of Alertmanager 0.25): the classic syntax
//! `name="value"`, `name!=value`, `name=~"regex"`, `name!~regex`, lists in braces, quoted
//! values with `\"`, `\\` and `\n` escapes; regexes anchored as `^(?:…)$`; printed as
//! Alertmanager prints them (`name="value"` with Go's quoting), which parses back the same.

use std::cmp::Ordering;
use std::fmt;
use std::sync::{Arc, LazyLock};

use regex::Regex;

use crate::labels::{LabelSet, go_quote};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MatchType {
    Equal,
    NotEqual,
    Regexp,
    NotRegexp,
}

impl MatchType {
    pub fn operator(self) -> &'static str {
        match self {
            MatchType::Equal => "=",
            MatchType::NotEqual => "!=",
            MatchType::Regexp => "=~",
            MatchType::NotRegexp => "!~",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatcherError {
    #[error("bad matcher format: {0}")]
    BadFormat(String),
    #[error("matcher value contains unescaped double quote: {0}")]
    UnescapedQuote(String),
    #[error("invalid regular expression {value:?}: {message}")]
    BadRegex { value: String, message: String },
}

/// One matcher. Regex matchers hold their compiled, anchored expression.
#[derive(Clone)]
pub struct Matcher {
    pub kind: MatchType,
    pub name: Arc<str>,
    pub value: Arc<str>,
    regex: Option<Regex>,
}

impl fmt::Debug for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Matcher({self})")
    }
}

impl PartialEq for Matcher {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.name == other.name && self.value == other.value
    }
}
impl Eq for Matcher {}

impl PartialOrd for Matcher {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Matcher {
    /// Alertmanager's `Matchers.Less`: by name, then value, then type.
    fn cmp(&self, other: &Self) -> Ordering {
        self.name.cmp(&other.name).then_with(|| self.value.cmp(&other.value)).then_with(|| self.kind.cmp(&other.kind))
    }
}

impl Matcher {
    pub fn new(kind: MatchType, name: &str, value: &str) -> Result<Matcher, MatcherError> {
        let regex = match kind {
            MatchType::Regexp | MatchType::NotRegexp => Some(
                Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| MatcherError::BadRegex { value: value.to_owned(), message: e.to_string() })?,
            ),
            _ => None,
        };
        Ok(Matcher { kind, name: name.into(), value: value.into(), regex })
    }

    /// Whether a label value (empty for a missing label) matches.
    pub fn matches_value(&self, value: &str) -> bool {
        match (self.kind, &self.regex) {
            (MatchType::Equal, _) => value == &*self.value,
            (MatchType::NotEqual, _) => value != &*self.value,
            (MatchType::Regexp, Some(re)) => re.is_match(value),
            (MatchType::NotRegexp, Some(re)) => !re.is_match(value),
            // Construction always compiles the regex of a regex matcher.
            (MatchType::Regexp | MatchType::NotRegexp, None) => false,
        }
    }

    pub fn matches(&self, labels: &LabelSet) -> bool {
        self.matches_value(labels.value(&self.name))
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}{}", self.name, self.kind.operator(), go_quote(&self.value))
    }
}

/// A list of matchers, all of which must match.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Matchers(pub Vec<Matcher>);

impl Matchers {
    pub fn matches(&self, labels: &LabelSet) -> bool {
        self.0.iter().all(|m| m.matches(labels))
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn sort(&mut self) {
        self.0.sort();
    }
}

impl fmt::Display for Matchers {
    /// `{a="b",c=~"d"}`, as Alertmanager's route keys spell them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, m) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{m}")?;
        }
        f.write_str("}")
    }
}

/// Go's `\s` is ASCII whitespace only; so is this.
static MATCHER_RE: LazyLock<Option<Regex>> = LazyLock::new(|| {
    Regex::new(r"^[\t\n\f\r ]*([a-zA-Z_:][a-zA-Z0-9_:]*)[\t\n\f\r ]*(=~|=|!=|!~)[\t\n\f\r ]*((?s).*?)[\t\n\f\r ]*$")
        .ok()
});

/// `labels.ParseMatcher`: one matcher.
pub fn parse_matcher(text: &str) -> Result<Matcher, MatcherError> {
    let caps =
        MATCHER_RE.as_ref().and_then(|re| re.captures(text)).ok_or_else(|| MatcherError::BadFormat(text.to_owned()))?;
    let (name, op, raw) = (&caps[1], &caps[2], &caps[3]);
    let kind = match op {
        "=" => MatchType::Equal,
        "!=" => MatchType::NotEqual,
        "=~" => MatchType::Regexp,
        _ => MatchType::NotRegexp,
    };
    let (body, mut expect_quote) = match raw.strip_prefix('"') {
        Some(rest) => (rest, true),
        None => (raw, false),
    };
    let mut value = String::with_capacity(body.len());
    let mut escaped = false;
    let last = body.len().saturating_sub(1);
    for (i, c) in body.char_indices() {
        if escaped {
            escaped = false;
            match c {
                'n' => value.push('\n'),
                '"' | '\\' => value.push(c),
                // A spurious escape: the backslash is literal.
                _ => {
                    value.push('\\');
                    value.push(c);
                }
            }
            continue;
        }
        match c {
            '\\' if i < last => escaped = true,
            '\\' => value.push('\\'),
            '"' => {
                if !expect_quote || i < last {
                    return Err(MatcherError::UnescapedQuote(raw.to_owned()));
                }
                expect_quote = false;
            }
            c => value.push(c),
        }
    }
    if expect_quote {
        return Err(MatcherError::UnescapedQuote(raw.to_owned()));
    }
    Matcher::new(kind, name, &value)
}

/// `labels.ParseMatchers`: `{a="b", c=~"d"}` or the same without braces, split at commas
/// outside quotes.
pub fn parse_matchers(text: &str) -> Result<Vec<Matcher>, MatcherError> {
    let text = text.strip_prefix('{').unwrap_or(text);
    let text = text.strip_suffix('}').unwrap_or(text);
    let mut tokens = Vec::new();
    let mut token = String::new();
    let (mut inside_quotes, mut escaped) = (false, false);
    for c in text.chars() {
        match c {
            ',' if !inside_quotes => {
                tokens.push(std::mem::take(&mut token));
                continue;
            }
            ',' => {}
            '"' => {
                if escaped {
                    escaped = false;
                } else {
                    inside_quotes = !inside_quotes;
                }
            }
            '\\' => escaped = !escaped,
            _ => escaped = false,
        }
        token.push(c);
    }
    let rest = token.trim_matches(|c: char| c.is_whitespace());
    if !rest.is_empty() {
        tokens.push(rest.to_owned());
    }
    tokens.iter().map(|t| parse_matcher(t)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Matcher {
        parse_matcher(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn classic_syntax() {
        let m = one(r#"a="b""#);
        assert_eq!((m.kind, &*m.name, &*m.value), (MatchType::Equal, "a", "b"));
        assert_eq!(one("a!=b").kind, MatchType::NotEqual);
        assert_eq!(one(r#" a =~ "x.*" "#).to_string(), r#"a=~"x.*""#);
        assert_eq!(&*one("a!~y z").value, "y z");
        assert_eq!(&*one(r#"a="q\"uo\\te\n""#).value, "q\"uo\\te\n");
        assert_eq!(&*one(r#"a="x\y""#).value, "x\\y", "a spurious escape keeps its backslash");
        assert!(parse_matcher(r#"a="b"#).is_err());
        assert!(parse_matcher(r#"a=b"c"#).is_err());
        assert!(parse_matcher("=b").is_err());
        assert!(parse_matcher("a=~(").is_err());
        let all = parse_matchers(r#"{a="b",c=~"d,e", f!=g}"#).unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(&*all[1].value, "d,e");
        assert!(parse_matchers("a=b,,c=d").is_err());
        assert_eq!(parse_matchers("{}").unwrap().len(), 0);
    }

    #[test]
    fn regexes_are_anchored() {
        let m = one("a=~b|c");
        assert!(m.matches_value("b") && m.matches_value("c") && !m.matches_value("bc") && !m.matches_value("ab"));
        let n = one("a!~.+");
        assert!(n.matches_value("") && !n.matches_value("x"));
        assert!(one(r#"missing="""#).matches(&LabelSet::new()));
    }

    #[test]
    fn display_round_trips_through_parse() {
        // A small xorshift generator over an alphabet with quoting hazards.
        let alphabet: Vec<char> = "ab z,=~!\"\\\n{}é.*".chars().collect();
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        for round in 0..5000 {
            let len = round % 12;
            let value: String = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    alphabet[(seed % alphabet.len() as u64) as usize]
                })
                .collect();
            for kind in [MatchType::Equal, MatchType::NotEqual, MatchType::Regexp, MatchType::NotRegexp] {
                let Ok(m) = Matcher::new(kind, "label_1", &value) else { continue };
                let text = m.to_string();
                let back = parse_matcher(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
                assert_eq!(back, m, "{text}");
                let list = parse_matchers(&Matchers(vec![m.clone(), m.clone()]).to_string()).unwrap();
                assert_eq!(list, vec![m.clone(), m], "{text}");
            }
        }
    }
}
