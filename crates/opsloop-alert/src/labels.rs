//! Label sets as Alertmanager sees them: sorted name/value pairs with Prometheus's
//! fingerprint (FNV-1a 64 over the sorted pairs), the key alerts are stored and deduplicated by.
//!
//! Names and values are `Arc<str>`: the same label strings recur in thousands of alerts and
//! in every group holding them, and cloning an `Arc` costs no allocation.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A label set: pairs sorted by name, names unique.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct LabelSet(Vec<(Arc<str>, Arc<str>)>);

/// Prometheus's model.Fingerprint: the hash of a sorted label set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Fingerprint(pub u64);

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

const FNV_OFFSET: u64 = 14_695_981_039_346_656_037;
const FNV_PRIME: u64 = 1_099_511_628_211;
/// Prometheus separates names and values with 0xff, a byte UTF-8 never contains.
const SEPARATOR: u8 = 0xff;

fn fnv_add(mut hash: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

/// Whether `name` is a valid Prometheus label name (`[a-zA-Z_][a-zA-Z0-9_]*`).
pub fn is_valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl LabelSet {
    pub fn new() -> Self {
        LabelSet(Vec::new())
    }

    /// From pairs in any order; a repeated name keeps its last value.
    pub fn from_pairs<N: Into<Arc<str>>, V: Into<Arc<str>>>(pairs: impl IntoIterator<Item = (N, V)>) -> Self {
        let mut set = LabelSet::new();
        for (name, value) in pairs {
            set.insert(name.into(), value.into());
        }
        set
    }

    pub fn insert(&mut self, name: Arc<str>, value: Arc<str>) {
        match self.0.binary_search_by(|(n, _)| (**n).cmp(&*name)) {
            Ok(i) => self.0[i].1 = value,
            Err(i) => self.0.insert(i, (name, value)),
        }
    }

    /// The value of `name`; Alertmanager reads a missing label as the empty string.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.binary_search_by(|(n, _)| (**n).cmp(name)).ok().map(|i| &*self.0[i].1)
    }

    pub fn value(&self, name: &str) -> &str {
        self.get(name).unwrap_or("")
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(n, v)| (&**n, &**v))
    }

    pub fn pairs(&self) -> &[(Arc<str>, Arc<str>)] {
        &self.0
    }

    /// The subset whose names `keep` accepts (group labels), sharing the strings.
    pub fn filter(&self, mut keep: impl FnMut(&str) -> bool) -> LabelSet {
        LabelSet(self.0.iter().filter(|(n, _)| keep(n)).cloned().collect())
    }

    /// The subset of pairs `keep` accepts.
    pub fn filter_pairs(&self, mut keep: impl FnMut(&str, &str) -> bool) -> LabelSet {
        LabelSet(self.0.iter().filter(|(n, v)| keep(n, v)).cloned().collect())
    }

    pub fn fingerprint(&self) -> Fingerprint {
        let mut hash = FNV_OFFSET;
        for (name, value) in &self.0 {
            hash = fnv_add(hash, name.as_bytes());
            hash = fnv_add(hash, &[SEPARATOR]);
            hash = fnv_add(hash, value.as_bytes());
            hash = fnv_add(hash, &[SEPARATOR]);
        }
        Fingerprint(hash)
    }

    /// Prometheus's `LabelSet.Before`: fewer labels first, then the first differing pair over
    /// the union of names in order.
    pub fn before(&self, other: &LabelSet) -> bool {
        if self.len() != other.len() {
            return self.len() < other.len();
        }
        let mut names: Vec<&str> = self.0.iter().chain(other.0.iter()).map(|(n, _)| &**n).collect();
        names.sort_unstable();
        for name in names {
            let Some(mine) = self.get(name) else { return true };
            let Some(theirs) = other.get(name) else { return false };
            if mine != theirs {
                return mine < theirs;
            }
        }
        false
    }
}

impl fmt::Display for LabelSet {
    /// Prometheus's `LabelSet.String`: `{a="1", b="2"}`, values quoted as Go's `%q`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (name, value)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{name}={}", go_quote(value))?;
        }
        f.write_str("}")
    }
}

impl Serialize for LabelSet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(self.0.len()))?;
        for (n, v) in &self.0 {
            map.serialize_entry(&**n, &**v)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for LabelSet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let map = std::collections::BTreeMap::<String, String>::deserialize(deserializer)?;
        Ok(LabelSet::from_pairs(map))
    }
}

/// Go's `strconv.Quote`: double quotes, `\"`, `\\`, the C escapes, `\x..` for other control
/// bytes and `\u....` for non-printable characters; printable Unicode as is.
pub fn go_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => {
                if (c as u32) < 0x10000 {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                } else {
                    out.push_str(&format!("\\U{:08x}", c as u32));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_matches_prometheus() {
        // model.LabelSet{"alertname": "x"}.Fingerprint() in Go.
        let empty = LabelSet::new();
        assert_eq!(empty.fingerprint().0, FNV_OFFSET);
        let a = LabelSet::from_pairs([("b", "2"), ("a", "1")]);
        let b = LabelSet::from_pairs([("a", "1"), ("b", "2")]);
        assert_eq!(a.fingerprint(), b.fingerprint());
        assert_eq!(a.to_string(), "{a=\"1\", b=\"2\"}");
        assert_eq!(a.fingerprint().to_string().len(), 16);
    }

    #[test]
    fn before_orders_by_size_then_values() {
        let a = LabelSet::from_pairs([("a", "1")]);
        let b = LabelSet::from_pairs([("a", "2")]);
        let c = LabelSet::from_pairs([("a", "1"), ("b", "1")]);
        assert!(a.before(&b) && !b.before(&a) && b.before(&c) && !a.before(&a));
    }
}
