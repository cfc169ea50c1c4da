//! Relabelling, as `relabel_configs`, `metric_relabel_configs` and `write_relabel_configs`
//! write it: a list of steps over a label set, each of which may rewrite labels or drop the
//! whole set. Defaults, validation and results follow Prometheus's `model/relabel`, so a
//! `prometheus.yml` keeps meaning what it meant.

use std::fmt;

use md5::{Digest, Md5};
use regex::Regex;

use crate::labels::{InvalidRegex, Labels, LabelsBuilder};

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Action {
    /// Sets `target_label` to `replacement` (with `$1`/`${name}` from the match) when the
    /// joined source values match `regex`.
    #[default]
    Replace,
    /// Drops the set unless the joined source values match.
    Keep,
    /// Drops the set when the joined source values match.
    Drop,
    /// Drops the set unless the joined source values equal `target_label`'s value.
    KeepEqual,
    /// Drops the set when the joined source values equal `target_label`'s value.
    DropEqual,
    /// Sets `target_label` to a hash of the joined source values modulo `modulus` (sharding).
    HashMod,
    /// Copies every label whose name matches to the name `replacement` makes of it.
    LabelMap,
    /// Removes every label whose name matches.
    LabelDrop,
    /// Removes every label whose name does not match.
    LabelKeep,
    Lowercase,
    Uppercase,
}

impl Action {
    pub const ALL: [&'static str; 11] = [
        "replace",
        "keep",
        "drop",
        "keepequal",
        "dropequal",
        "hashmod",
        "labelmap",
        "labeldrop",
        "labelkeep",
        "lowercase",
        "uppercase",
    ];

    /// Prometheus reads the action case-insensitively.
    pub fn parse(text: &str) -> Option<Action> {
        Some(match text.to_ascii_lowercase().as_str() {
            "replace" => Action::Replace,
            "keep" => Action::Keep,
            "drop" => Action::Drop,
            "keepequal" => Action::KeepEqual,
            "dropequal" => Action::DropEqual,
            "hashmod" => Action::HashMod,
            "labelmap" => Action::LabelMap,
            "labeldrop" => Action::LabelDrop,
            "labelkeep" => Action::LabelKeep,
            "lowercase" => Action::Lowercase,
            "uppercase" => Action::Uppercase,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Replace => "replace",
            Action::Keep => "keep",
            Action::Drop => "drop",
            Action::KeepEqual => "keepequal",
            Action::DropEqual => "dropequal",
            Action::HashMod => "hashmod",
            Action::LabelMap => "labelmap",
            Action::LabelDrop => "labeldrop",
            Action::LabelKeep => "labelkeep",
            Action::Lowercase => "lowercase",
            Action::Uppercase => "uppercase",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A regular expression anchored at both ends, remembering how it was written.
#[derive(Debug, Clone)]
pub struct Regexp {
    source: String,
    re: Regex,
}

pub const DEFAULT_REGEX: &str = "(.*)";
pub const DEFAULT_SEPARATOR: &str = ";";
pub const DEFAULT_REPLACEMENT: &str = "$1";

impl Regexp {
    pub fn new(source: &str) -> Result<Regexp, InvalidRegex> {
        let re = Regex::new(&format!("^(?s:{source})$"))
            .map_err(|source_error| InvalidRegex { pattern: source.to_owned(), source: source_error })?;
        Ok(Regexp { source: source.to_owned(), re })
    }

    pub fn as_str(&self) -> &str {
        &self.source
    }

    pub fn is_match(&self, text: &str) -> bool {
        self.re.is_match(text)
    }
}

impl Default for Regexp {
    fn default() -> Self {
        // The default pattern is a constant known to compile.
        Regexp { source: DEFAULT_REGEX.to_owned(), re: Regex::new("^(?s:(.*))$").unwrap_or_else(|_| unreachable!()) }
    }
}

impl PartialEq for Regexp {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

/// One step of a relabelling list, with Prometheus's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct RelabelConfig {
    pub source_labels: Vec<String>,
    pub separator: String,
    pub regex: Regexp,
    pub modulus: u64,
    pub target_label: String,
    pub replacement: String,
    pub action: Action,
}

impl Default for RelabelConfig {
    fn default() -> Self {
        RelabelConfig {
            source_labels: Vec::new(),
            separator: DEFAULT_SEPARATOR.to_owned(),
            regex: Regexp::default(),
            modulus: 0,
            target_label: String::new(),
            replacement: DEFAULT_REPLACEMENT.to_owned(),
            action: Action::Replace,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RelabelError {
    #[error("relabel configuration for hashmod requires non-zero modulus")]
    ZeroModulus,
    #[error("relabel configuration for {0} action requires 'target_label' value")]
    MissingTarget(Action),
    #[error("{target:?} is invalid 'target_label' for {action} action")]
    InvalidTarget { target: String, action: Action },
    #[error("{replacement:?} is invalid 'replacement' for {action} action")]
    InvalidReplacement { replacement: String, action: Action },
    #[error("'replacement' can not be set for {0} action")]
    ReplacementNotAllowed(Action),
    #[error("{0} action requires only 'source_labels' and `target_label`, and no other fields")]
    OnlySourceAndTarget(Action),
    #[error("{0} action requires only 'regex', and no other fields")]
    OnlyRegex(Action),
    #[error("{0:?} is not a valid label name")]
    InvalidLabelName(String),
}

/// `[a-zA-Z_][a-zA-Z0-9_]*`.
pub fn is_valid_label_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A target label (or labelmap replacement) that becomes a valid name once its `$1`/`${x}`
/// references are filled in: name characters and references, not starting with a digit.
fn is_valid_template(text: &str) -> bool {
    let b = text.as_bytes();
    if b.is_empty() || b[0].is_ascii_digit() {
        return false;
    }
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' {
            if i + 1 < b.len() && b[i + 1] == b'{' {
                let Some(close) = b[i + 2..].iter().position(|c| *c == b'}') else { return false };
                if close == 0 || !b[i + 2..i + 2 + close].iter().all(|c| word(*c)) {
                    return false;
                }
                i += close + 3;
            } else {
                let n = b[i + 1..].iter().take_while(|c| word(**c)).count();
                if n == 0 {
                    return false;
                }
                i += n + 1;
            }
        } else if word(b[i]) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

impl RelabelConfig {
    /// The checks Prometheus makes when it loads a step.
    pub fn validate(&self) -> Result<(), RelabelError> {
        let action = self.action;
        for name in &self.source_labels {
            if !is_valid_label_name(name) {
                return Err(RelabelError::InvalidLabelName(name.clone()));
            }
        }
        if action == Action::HashMod && self.modulus == 0 {
            return Err(RelabelError::ZeroModulus);
        }
        let needs_target = matches!(
            action,
            Action::Replace
                | Action::HashMod
                | Action::Lowercase
                | Action::Uppercase
                | Action::KeepEqual
                | Action::DropEqual
        );
        if needs_target && self.target_label.is_empty() {
            return Err(RelabelError::MissingTarget(action));
        }
        let invalid_target = || RelabelError::InvalidTarget { target: self.target_label.clone(), action };
        if matches!(action, Action::Replace | Action::Lowercase | Action::Uppercase)
            && !is_valid_template(&self.target_label)
        {
            return Err(invalid_target());
        }
        if matches!(action, Action::Lowercase | Action::Uppercase | Action::KeepEqual | Action::DropEqual)
            && self.replacement != DEFAULT_REPLACEMENT
        {
            return Err(RelabelError::ReplacementNotAllowed(action));
        }
        if action == Action::LabelMap && !is_valid_template(&self.replacement) {
            return Err(RelabelError::InvalidReplacement { replacement: self.replacement.clone(), action });
        }
        if action == Action::HashMod && !is_valid_label_name(&self.target_label) {
            return Err(invalid_target());
        }
        if matches!(action, Action::KeepEqual | Action::DropEqual)
            && (self.regex.as_str() != DEFAULT_REGEX
                || self.modulus != 0
                || self.separator != DEFAULT_SEPARATOR
                || self.replacement != DEFAULT_REPLACEMENT)
        {
            return Err(RelabelError::OnlySourceAndTarget(action));
        }
        if matches!(action, Action::LabelDrop | Action::LabelKeep)
            && (!self.source_labels.is_empty()
                || !self.target_label.is_empty()
                || self.modulus != 0
                || self.separator != DEFAULT_SEPARATOR
                || self.replacement != DEFAULT_REPLACEMENT)
        {
            return Err(RelabelError::OnlyRegex(action));
        }
        Ok(())
    }

    /// Applies this step; `false` means the set is dropped.
    pub fn apply(&self, lb: &mut LabelsBuilder) -> bool {
        let value = match self.source_labels.as_slice() {
            [] => String::new(),
            [one] => lb.get(one).unwrap_or("").to_owned(),
            many => {
                let mut v = String::new();
                for (i, name) in many.iter().enumerate() {
                    if i > 0 {
                        v.push_str(&self.separator);
                    }
                    v.push_str(lb.get(name).unwrap_or(""));
                }
                v
            }
        };
        match self.action {
            Action::Drop => return !self.regex.is_match(&value),
            Action::Keep => return self.regex.is_match(&value),
            Action::DropEqual => return lb.get(&self.target_label).unwrap_or("") != value,
            Action::KeepEqual => return lb.get(&self.target_label).unwrap_or("") == value,
            Action::Replace => {
                // No match, no change.
                let Some(caps) = self.regex.re.captures(&value) else { return true };
                let mut target = String::new();
                caps.expand(&self.target_label, &mut target);
                if !is_valid_label_name(&target) {
                    return true;
                }
                let mut result = String::new();
                caps.expand(&self.replacement, &mut result);
                // An empty result removes the label: `set` drops empty values.
                lb.set(target, result);
            }
            Action::Lowercase => {
                lb.set(self.target_label.clone(), value.to_lowercase());
            }
            Action::Uppercase => {
                lb.set(self.target_label.clone(), value.to_uppercase());
            }
            Action::HashMod => {
                let hash = Md5::digest(value.as_bytes());
                // The last 8 bytes, big-endian: what Prometheus has always used, so shards
                // agree with a Prometheus configured the same way.
                let mut last = [0u8; 8];
                last.copy_from_slice(&hash[8..16]);
                let m = u64::from_be_bytes(last) % self.modulus.max(1);
                lb.set(self.target_label.clone(), m.to_string());
            }
            Action::LabelMap => {
                for l in lb.build().iter() {
                    if self.regex.is_match(&l.name) {
                        let name = self.regex.re.replace_all(&l.name, self.replacement.as_str()).into_owned();
                        lb.set(name, l.value.clone());
                    }
                }
            }
            Action::LabelDrop => {
                for l in lb.build().iter() {
                    if self.regex.is_match(&l.name) {
                        lb.del(&l.name);
                    }
                }
            }
            Action::LabelKeep => {
                for l in lb.build().iter() {
                    if !self.regex.is_match(&l.name) {
                        lb.del(&l.name);
                    }
                }
            }
        }
        true
    }
}

/// Runs every step in order; `false` when one dropped the set.
pub fn process_builder(lb: &mut LabelsBuilder, configs: &[RelabelConfig]) -> bool {
    configs.iter().all(|c| c.apply(lb))
}

/// Runs every step in order over a label set; `None` when a step dropped it.
pub fn process(labels: &Labels, configs: &[RelabelConfig]) -> Option<Labels> {
    let mut lb = labels.builder();
    process_builder(&mut lb, configs).then(|| lb.build())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn re(s: &str) -> Regexp {
        Regexp::new(s).unwrap_or_else(|e| panic!("{e}"))
    }

    fn step(action: Action) -> RelabelConfig {
        RelabelConfig { action, ..RelabelConfig::default() }
    }

    fn src(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    fn l(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied())
    }

    fn check(input: &[(&str, &str)], configs: &[RelabelConfig], want: Option<&[(&str, &str)]>) {
        for c in configs {
            assert_eq!(c.validate(), Ok(()), "{c:?}");
        }
        assert_eq!(process(&l(input), configs), want.map(l), "{configs:?}");
    }

    #[test]
    fn replace_with_references() {
        let abc: &[(&str, &str)] = &[("a", "foo"), ("b", "bar"), ("c", "baz")];
        let mut c = step(Action::Replace);
        c.source_labels = src(&["a"]);
        c.regex = re("f(.*)");
        c.target_label = "d".into();
        c.replacement = "ch${1}-ch${1}".into();
        check(abc, &[c], Some(&[("a", "foo"), ("b", "bar"), ("c", "baz"), ("d", "choo-choo")]));

        // Several sources joined by the separator, two steps in a row.
        let mut c1 = step(Action::Replace);
        c1.source_labels = src(&["a", "b"]);
        c1.regex = re("f(.*);(.*)r");
        c1.target_label = "a".into();
        c1.replacement = "b${1}${2}m".into();
        let mut c2 = step(Action::Replace);
        c2.source_labels = src(&["c", "a"]);
        c2.regex = re("(b).*b(.*)ba(.*)");
        c2.target_label = "d".into();
        c2.replacement = "$1$2$2$3".into();
        check(abc, &[c1, c2], Some(&[("a", "boobam"), ("b", "bar"), ("c", "baz"), ("d", "boooom")]));

        // No match: nothing changes.
        let mut c = step(Action::Replace);
        c.source_labels = src(&["a"]);
        c.regex = re("f");
        c.target_label = "b".into();
        c.replacement = "x".into();
        check(&[("a", "foo")], &[c], Some(&[("a", "foo")]));

        // The regex is anchored: "o" does not match "foo".
        let mut c = step(Action::Replace);
        c.source_labels = src(&["a"]);
        c.regex = re("o");
        c.target_label = "b".into();
        check(&[("a", "foo")], &[c], Some(&[("a", "foo")]));

        // A missing source label reads as empty; an empty result deletes the target.
        let mut c = step(Action::Replace);
        c.source_labels = src(&["missing"]);
        c.target_label = "a".into();
        check(&[("a", "foo"), ("b", "bar")], &[c], Some(&[("b", "bar")]));

        // The target label itself can use references; a target that is no label name is ignored.
        let mut c = step(Action::Replace);
        c.source_labels = src(&["a"]);
        c.regex = re("some-([^-]+)-(.+)");
        c.target_label = "${1}".into();
        c.replacement = "${2}".into();
        check(&[("a", "some-name-value")], &[c.clone()], Some(&[("a", "some-name-value"), ("name", "value")]));
        check(&[("a", "some-1-value")], &[c], Some(&[("a", "some-1-value")]));

        // `$1x` is the group named `1x`, which does not exist: empty, as in Go.
        let mut c = step(Action::Replace);
        c.source_labels = src(&["a"]);
        c.regex = re("(.*)");
        c.target_label = "b".into();
        c.replacement = "$1x".into();
        check(&[("a", "foo"), ("b", "old")], &[c], Some(&[("a", "foo")]));

        // Named groups and the default regex/replacement.
        let mut c = step(Action::Replace);
        c.source_labels = src(&["__address__"]);
        c.regex = re("(?P<host>[^:]+):(?P<port>\\d+)");
        c.target_label = "host".into();
        c.replacement = "${host}".into();
        check(&[("__address__", "db:5432")], &[c], Some(&[("__address__", "db:5432"), ("host", "db")]));
        let mut c = step(Action::Replace);
        c.source_labels = src(&["a"]);
        c.target_label = "b".into();
        check(&[("a", "multi\nline")], &[c], Some(&[("a", "multi\nline"), ("b", "multi\nline")]));
    }

    #[test]
    fn keep_and_drop() {
        let mut drop = step(Action::Drop);
        drop.source_labels = src(&["a"]);
        drop.regex = re(".*o.*");
        check(&[("a", "foo")], std::slice::from_ref(&drop), None);
        check(&[("a", "bar")], std::slice::from_ref(&drop), Some(&[("a", "bar")]));
        let mut keep = step(Action::Keep);
        keep.source_labels = src(&["a"]);
        keep.regex = re("f.*");
        check(&[("a", "foo")], std::slice::from_ref(&keep), Some(&[("a", "foo")]));
        check(&[("a", "boo")], std::slice::from_ref(&keep), None);
        // keep on an absent label with a regex that matches the empty string keeps.
        keep.source_labels = src(&["missing"]);
        keep.regex = re("f.*|");
        check(&[("a", "boo")], &[keep], Some(&[("a", "boo")]));
    }

    #[test]
    fn keepequal_and_dropequal() {
        let mut c = step(Action::KeepEqual);
        c.source_labels = src(&["__tmp_port"]);
        c.target_label = "__port1".into();
        check(
            &[("__tmp_port", "1234"), ("__port1", "1234")],
            std::slice::from_ref(&c),
            Some(&[("__tmp_port", "1234"), ("__port1", "1234")]),
        );
        check(&[("__tmp_port", "1234"), ("__port1", "5678")], std::slice::from_ref(&c), None);
        c.action = Action::DropEqual;
        check(&[("__tmp_port", "1234"), ("__port1", "1234")], std::slice::from_ref(&c), None);
        check(
            &[("__tmp_port", "1234"), ("__port1", "5678")],
            &[c],
            Some(&[("__tmp_port", "1234"), ("__port1", "5678")]),
        );
    }

    #[test]
    fn hashmod_agrees_with_prometheus() {
        let mut c = step(Action::HashMod);
        c.source_labels = src(&["c"]);
        c.target_label = "d".into();
        c.modulus = 1000;
        check(
            &[("a", "foo"), ("b", "bar"), ("c", "baz")],
            &[c],
            Some(&[("a", "foo"), ("b", "bar"), ("c", "baz"), ("d", "976")]),
        );
    }

    #[test]
    fn labelmap_labeldrop_labelkeep() {
        let input: &[(&str, &str)] = &[("a", "foo"), ("b1", "bar"), ("b2", "baz")];
        let mut c = step(Action::LabelMap);
        c.regex = re("(b.*)");
        c.replacement = "bar_${1}_bar".into();
        check(
            input,
            &[c],
            Some(&[("a", "foo"), ("b1", "bar"), ("b2", "baz"), ("bar_b1_bar", "bar"), ("bar_b2_bar", "baz")]),
        );
        let mut c = step(Action::LabelMap);
        c.regex = re("__meta_kubernetes_pod_label_(.+)");
        c.replacement = "$1".into();
        check(
            &[("__meta_kubernetes_pod_label_app", "web")],
            &[c],
            Some(&[("__meta_kubernetes_pod_label_app", "web"), ("app", "web")]),
        );
        let mut c = step(Action::LabelDrop);
        c.regex = re("(b.*)");
        check(input, &[c], Some(&[("a", "foo")]));
        let mut c = step(Action::LabelKeep);
        c.regex = re("(b.*)");
        check(input, &[c], Some(&[("b1", "bar"), ("b2", "baz")]));
        // Everything dropped leaves an empty set, not a dropped one.
        let mut c = step(Action::LabelKeep);
        c.regex = re("nothing");
        check(input, &[c], Some(&[]));
    }

    #[test]
    fn lowercase_and_uppercase() {
        let mut lower = step(Action::Lowercase);
        lower.source_labels = src(&["foo"]);
        lower.target_label = "foo_lower".into();
        let mut upper = step(Action::Uppercase);
        upper.source_labels = src(&["foo"]);
        upper.target_label = "foo_upper".into();
        check(
            &[("foo", "bAr123Foo")],
            &[lower, upper],
            Some(&[("foo", "bAr123Foo"), ("foo_lower", "bar123foo"), ("foo_upper", "BAR123FOO")]),
        );
    }

    #[test]
    fn validation_as_prometheus() {
        let mut c = step(Action::HashMod);
        c.target_label = "x".into();
        assert_eq!(c.validate(), Err(RelabelError::ZeroModulus));
        assert_eq!(step(Action::Replace).validate(), Err(RelabelError::MissingTarget(Action::Replace)));
        let mut c = step(Action::Replace);
        c.target_label = "1bad".into();
        assert!(matches!(c.validate(), Err(RelabelError::InvalidTarget { .. })));
        c.target_label = "${1}_ok".into();
        assert_eq!(c.validate(), Ok(()));
        c.target_label = "bad-name".into();
        assert!(matches!(c.validate(), Err(RelabelError::InvalidTarget { .. })));
        let mut c = step(Action::Lowercase);
        c.target_label = "x".into();
        c.replacement = "y".into();
        assert_eq!(c.validate(), Err(RelabelError::ReplacementNotAllowed(Action::Lowercase)));
        let mut c = step(Action::KeepEqual);
        c.target_label = "x".into();
        c.regex = re("a");
        assert_eq!(c.validate(), Err(RelabelError::OnlySourceAndTarget(Action::KeepEqual)));
        let mut c = step(Action::LabelDrop);
        c.source_labels = src(&["a"]);
        assert_eq!(c.validate(), Err(RelabelError::OnlyRegex(Action::LabelDrop)));
        let mut c = step(Action::LabelMap);
        c.replacement = "-".into();
        assert!(matches!(c.validate(), Err(RelabelError::InvalidReplacement { .. })));
        let mut c = step(Action::Keep);
        c.source_labels = src(&["bad-name"]);
        assert!(matches!(c.validate(), Err(RelabelError::InvalidLabelName(_))));
        assert_eq!(Action::parse("LabelMap"), Some(Action::LabelMap));
        assert_eq!(Action::parse("nope"), None);
        assert!(Regexp::new("(").is_err());
    }
}
