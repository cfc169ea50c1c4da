//! The inverted index shared by the head and the blocks: for every label name and value, the
//! sorted ids of the series carrying that pair, and how matchers turn into a set of ids.

use std::collections::{BTreeMap, HashSet};

use crate::labels::{Labels, MatchOp, Matcher};

/// Series id within one head or one block.
pub type SeriesId = u32;

#[derive(Debug, Default, Clone)]
pub struct Postings {
    by_name: BTreeMap<String, BTreeMap<String, Vec<SeriesId>>>,
    all: Vec<SeriesId>,
}

fn insert_sorted(list: &mut Vec<SeriesId>, id: SeriesId) {
    // Ids are handed out in increasing order, so this is nearly always a push.
    match list.last() {
        Some(&last) if last >= id => {
            if let Err(i) = list.binary_search(&id) {
                list.insert(i, id);
            }
        }
        _ => list.push(id),
    }
}

impl Postings {
    pub fn add(&mut self, id: SeriesId, labels: &Labels) {
        for l in labels.iter() {
            let values = self.by_name.entry(l.name.clone()).or_default();
            insert_sorted(values.entry(l.value.clone()).or_default(), id);
        }
        insert_sorted(&mut self.all, id);
    }

    /// Sets a whole list at once (a block's index already has them sorted).
    pub fn set(&mut self, name: String, value: String, ids: Vec<SeriesId>) {
        self.by_name.entry(name).or_default().insert(value, ids);
    }

    pub fn set_all(&mut self, ids: Vec<SeriesId>) {
        self.all = ids;
    }

    /// Drops many series at once: one pass over every list rather than one per series.
    pub fn remove_many(&mut self, ids: &HashSet<SeriesId>) {
        if ids.is_empty() {
            return;
        }
        self.by_name.retain(|_, values| {
            values.retain(|_, list| {
                list.retain(|id| !ids.contains(id));
                !list.is_empty()
            });
            !values.is_empty()
        });
        self.all.retain(|id| !ids.contains(id));
    }

    pub fn get(&self, name: &str, value: &str) -> &[SeriesId] {
        self.by_name.get(name).and_then(|v| v.get(value)).map(Vec::as_slice).unwrap_or(&[])
    }

    pub fn all(&self) -> &[SeriesId] {
        &self.all
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.by_name.keys().map(String::as_str)
    }

    pub fn values(&self, name: &str) -> impl Iterator<Item = (&str, &[SeriesId])> {
        self.by_name.get(name).into_iter().flat_map(|v| v.iter().map(|(k, l)| (k.as_str(), l.as_slice())))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, &[SeriesId])> {
        self.by_name.iter().flat_map(|(n, vs)| vs.iter().map(move |(v, l)| (n.as_str(), v.as_str(), l.as_slice())))
    }

    /// Union of the lists of the values of `name` that `keep` accepts. A series has one value
    /// per name, so the lists are disjoint and a sort is enough.
    fn union_where(&self, name: &str, keep: impl Fn(&str) -> bool) -> Vec<SeriesId> {
        let mut out: Vec<SeriesId> = Vec::new();
        let mut lists = 0;
        for (v, list) in self.values(name) {
            if keep(v) {
                out.extend_from_slice(list);
                lists += 1;
            }
        }
        if lists > 1 {
            out.sort_unstable();
        }
        out
    }

    /// The ids of the series matching every matcher, sorted, following Prometheus's
    /// `PostingsForMatchers`: a matcher that cannot match the empty string narrows by the
    /// union of the values it accepts; one that can (`a=""`, `a!="x"`, `a=~".*"`) also selects
    /// series without the label, so it instead removes the series whose value it rejects. With
    /// only matchers of the second kind, the start is every series.
    pub fn select(&self, matchers: &[Matcher]) -> Vec<SeriesId> {
        let mut narrowed: Option<Vec<SeriesId>> = None;
        let mut removals: Vec<Vec<SeriesId>> = Vec::new();
        for m in matchers {
            if !m.matches_empty() {
                let list = match m.op {
                    MatchOp::Equal => self.get(&m.name, &m.value).to_vec(),
                    _ => self.union_where(&m.name, |v| m.matches(v)),
                };
                let next = match narrowed {
                    None => list,
                    Some(prev) => intersect(&prev, &list),
                };
                if next.is_empty() {
                    return next;
                }
                narrowed = Some(next);
            } else {
                let list = match m.op {
                    MatchOp::NotEqual => self.get(&m.name, &m.value).to_vec(),
                    _ => self.union_where(&m.name, |v| !m.matches(v)),
                };
                if !list.is_empty() {
                    removals.push(list);
                }
            }
        }
        let mut out = narrowed.unwrap_or_else(|| self.all.clone());
        for r in &removals {
            out = difference(&out, r);
        }
        out
    }
}

pub fn intersect(a: &[SeriesId], b: &[SeriesId]) -> Vec<SeriesId> {
    let (small, large) = if a.len() <= b.len() { (a, b) } else { (b, a) };
    let mut out = Vec::with_capacity(small.len());
    let mut j = 0;
    for &x in small {
        // Galloping would help very unequal sizes; a forward binary search is close enough.
        j += large[j..].partition_point(|&y| y < x);
        if j >= large.len() {
            break;
        }
        if large[j] == x {
            out.push(x);
        }
    }
    out
}

pub fn difference(a: &[SeriesId], b: &[SeriesId]) -> Vec<SeriesId> {
    let mut out = Vec::with_capacity(a.len());
    let mut j = 0;
    for &x in a {
        while j < b.len() && b[j] < x {
            j += 1;
        }
        if j < b.len() && b[j] == x {
            continue;
        }
        out.push(x);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index() -> Postings {
        let mut p = Postings::default();
        p.add(1, &Labels::from_pairs([("__name__", "up"), ("job", "api"), ("env", "prod")]));
        p.add(2, &Labels::from_pairs([("__name__", "up"), ("job", "db")]));
        p.add(3, &Labels::from_pairs([("__name__", "up"), ("job", "api"), ("env", "dev")]));
        p.add(4, &Labels::from_pairs([("__name__", "errors"), ("job", "api")]));
        p
    }

    fn re(name: &str, pat: &str, neg: bool) -> Matcher {
        Matcher::regex(name, pat, neg).expect("valid")
    }

    #[test]
    fn matchers_select_like_prometheus() {
        let p = index();
        assert_eq!(p.select(&[Matcher::equal("__name__", "up")]), vec![1, 2, 3]);
        assert_eq!(p.select(&[Matcher::equal("__name__", "up"), Matcher::equal("job", "api")]), vec![1, 3]);
        assert_eq!(p.select(&[Matcher::equal("__name__", "up"), Matcher::not_equal("env", "prod")]), vec![2, 3]);
        // `env=""` selects the series without the label.
        assert_eq!(p.select(&[Matcher::equal("__name__", "up"), Matcher::equal("env", "")]), vec![2]);
        assert_eq!(p.select(&[Matcher::not_equal("env", "")]), vec![1, 3]);
        assert_eq!(p.select(&[re("job", "a.*", false)]), vec![1, 3, 4]);
        assert_eq!(p.select(&[re("env", "prod|", false)]), vec![1, 2, 4]);
        assert_eq!(p.select(&[re("job", ".*", false)]), vec![1, 2, 3, 4]);
        assert_eq!(p.select(&[re("env", "d.*", true), Matcher::equal("__name__", "up")]), vec![1, 2]);
        assert_eq!(p.select(&[Matcher::equal("job", "nope")]), Vec::<SeriesId>::new());
        assert_eq!(p.select(&[]), vec![1, 2, 3, 4]);
    }

    #[test]
    fn removing_series_drops_empty_lists() {
        let mut p = index();
        p.remove_many(&HashSet::from([1, 3]));
        assert_eq!(p.select(&[Matcher::equal("job", "api")]), vec![4]);
        assert_eq!(p.values("env").count(), 0);
        assert_eq!(p.all(), &[2, 4]);
    }
}
