//! The head: the recent, still-writable data, in memory as compressed chunks only (a closed
//! chunk is its encoded bytes, the open one an encoder), with the postings index over it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::chunk::{ChunkError, XorChunk, XorIter};
use super::postings::{Postings, SeriesId};
use crate::labels::{Labels, Matcher};
use crate::storage::{Sample, StorageError, Timestamp};

/// An encoded chunk that takes no more samples. `Arc` so a block cut or a query can hold it
/// without copying while the head moves on.
#[derive(Debug, Clone)]
pub struct ClosedChunk {
    pub min_t: Timestamp,
    pub max_t: Timestamp,
    pub bytes: Arc<[u8]>,
}

#[derive(Debug)]
pub struct OpenChunk {
    pub min_t: Timestamp,
    pub chunk: XorChunk,
}

#[derive(Debug)]
pub struct MemSeries {
    pub labels: Labels,
    pub closed: Vec<ClosedChunk>,
    pub open: Option<OpenChunk>,
    /// Timestamp and value bits of the newest sample, kept even after its chunk went to a block
    /// so ordering and duplicate checks still work.
    pub last: Option<(Timestamp, u64)>,
}

/// What to do with a sample that passed the checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Append,
    /// Same timestamp, same value: Prometheus accepts and drops it silently.
    Ignore,
}

/// Checks one sample against the newest one of its series. Out-of-order samples are rejected
/// outright: there is no out-of-order window (Prometheus's `out_of_order_time_window` is 0 by
/// default too), which keeps every chunk sorted and lets blocks and head never overlap in time.
pub fn check(
    last: Option<(Timestamp, u64)>,
    min_valid_t: Timestamp,
    t: Timestamp,
    v: f64,
) -> Result<Verdict, StorageError> {
    if t < min_valid_t {
        return Err(StorageError::OutOfBounds);
    }
    match last {
        Some((lt, _)) if t < lt => Err(StorageError::OutOfOrder),
        Some((lt, lv)) if t == lt => {
            if lv == v.to_bits() {
                Ok(Verdict::Ignore)
            } else {
                Err(StorageError::DuplicateSample)
            }
        }
        _ => Ok(Verdict::Append),
    }
}

impl MemSeries {
    fn new(labels: Labels) -> Self {
        Self { labels, closed: Vec::new(), open: None, last: None }
    }

    /// Appends a sample already checked. A chunk is closed at `samples_per_chunk` samples and
    /// whenever the sample falls in another `chunk_range` window, so no chunk straddles two
    /// blocks and cutting a block moves whole chunks.
    fn append(&mut self, t: Timestamp, v: f64, chunk_range: i64, samples_per_chunk: u16) -> Result<(), ChunkError> {
        if let Some(open) = &self.open
            && (open.chunk.num_samples() >= samples_per_chunk
                || t.div_euclid(chunk_range) != open.min_t.div_euclid(chunk_range))
        {
            self.close_open();
        }
        let open = self.open.get_or_insert_with(|| OpenChunk { min_t: t, chunk: XorChunk::new() });
        open.chunk.append(t, v)?;
        self.last = Some((t, v.to_bits()));
        Ok(())
    }

    pub fn close_open(&mut self) {
        if let Some(open) = self.open.take()
            && open.chunk.num_samples() > 0
        {
            let max_t = open.chunk.last_t();
            self.closed.push(ClosedChunk { min_t: open.min_t, max_t, bytes: open.chunk.into_bytes().into() });
        }
    }

    pub fn min_t(&self) -> Option<Timestamp> {
        self.closed.first().map(|c| c.min_t).or_else(|| self.open.as_ref().map(|o| o.min_t))
    }

    pub fn max_t(&self) -> Option<Timestamp> {
        match &self.open {
            Some(o) => Some(o.chunk.last_t()),
            None => self.closed.last().map(|c| c.max_t),
        }
    }

    pub fn num_chunks(&self) -> usize {
        self.closed.len() + usize::from(self.open.is_some())
    }

    pub fn overlaps(&self, mint: Timestamp, maxt: Timestamp) -> bool {
        matches!((self.min_t(), self.max_t()), (Some(a), Some(b)) if a <= maxt && b >= mint)
    }

    /// Samples in `[mint, maxt]`, decoding only the chunks that overlap it.
    pub fn samples(&self, mint: Timestamp, maxt: Timestamp) -> Result<Vec<Sample>, StorageError> {
        let mut out = Vec::new();
        let closed = self.closed.iter().filter(|c| c.min_t <= maxt && c.max_t >= mint).map(|c| &c.bytes[..]);
        let open = self.open.as_ref().filter(|o| o.min_t <= maxt && o.chunk.last_t() >= mint).map(|o| o.chunk.bytes());
        for bytes in closed.chain(open) {
            decode_range(bytes, mint, maxt, &mut out)
                .map_err(|e| StorageError::Corrupt(format!("head chunk of {}: {e}", self.labels)))?;
        }
        Ok(out)
    }
}

pub fn decode_range(bytes: &[u8], mint: Timestamp, maxt: Timestamp, out: &mut Vec<Sample>) -> Result<(), ChunkError> {
    for s in XorIter::new(bytes)? {
        let s = s?;
        if s.t > maxt {
            break;
        }
        if s.t >= mint {
            out.push(s);
        }
    }
    Ok(())
}

#[derive(Debug)]
pub struct Head {
    pub series: HashMap<SeriesId, MemSeries>,
    /// Labels hash to id; the rare second series with the same hash goes to `collisions`, so
    /// the common case costs one map entry and no allocation per series.
    by_hash: HashMap<u64, SeriesId>,
    collisions: HashMap<u64, Vec<SeriesId>>,
    pub postings: Postings,
    /// Samples older than this are in blocks already (or would be): `OutOfBounds`.
    pub min_valid_t: Timestamp,
    pub chunk_range: i64,
    pub samples_per_chunk: u16,
    pub max_t: Option<Timestamp>,
}

impl Head {
    pub fn new(chunk_range: i64, samples_per_chunk: u16, min_valid_t: Timestamp) -> Self {
        Self {
            series: HashMap::new(),
            by_hash: HashMap::new(),
            collisions: HashMap::new(),
            postings: Postings::default(),
            min_valid_t,
            chunk_range: chunk_range.max(1),
            samples_per_chunk: samples_per_chunk.max(1),
            max_t: None,
        }
    }

    pub fn id_of(&self, labels: &Labels) -> Option<SeriesId> {
        let h = labels.hash64();
        if let Some(&id) = self.by_hash.get(&h)
            && self.series.get(&id).is_some_and(|s| &s.labels == labels)
        {
            return Some(id);
        }
        self.collisions.get(&h)?.iter().copied().find(|id| self.series.get(id).is_some_and(|s| &s.labels == labels))
    }

    /// Adds a series under an id chosen by the caller (the WAL's, so replay gives the same
    /// ids). An id already in use keeps its series.
    pub fn create(&mut self, id: SeriesId, labels: Labels) {
        if self.series.contains_key(&id) {
            return;
        }
        let h = labels.hash64();
        match self.by_hash.entry(h) {
            std::collections::hash_map::Entry::Occupied(_) => self.collisions.entry(h).or_default().push(id),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(id);
            }
        }
        self.postings.add(id, &labels);
        self.series.insert(id, MemSeries::new(labels));
    }

    pub fn append(&mut self, id: SeriesId, t: Timestamp, v: f64) -> Result<(), StorageError> {
        let Some(s) = self.series.get_mut(&id) else {
            return Err(StorageError::Corrupt(format!("append to unknown head series {id}")));
        };
        s.append(t, v, self.chunk_range, self.samples_per_chunk)
            .map_err(|e| StorageError::Corrupt(format!("head chunk of {}: {e}", s.labels)))?;
        self.max_t = Some(self.max_t.map_or(t, |m| m.max(t)));
        Ok(())
    }

    /// Checks and appends in one step (replay and tests; the database splits the two around
    /// the WAL write).
    pub fn check_and_append(
        &mut self,
        labels: &Labels,
        t: Timestamp,
        v: f64,
        next_id: &mut SeriesId,
    ) -> Result<(), StorageError> {
        let id = self.id_of(labels);
        let last = id.and_then(|id| self.series.get(&id)).and_then(|s| s.last);
        if check(last, self.min_valid_t, t, v)? == Verdict::Ignore {
            return Ok(());
        }
        let id = match id {
            Some(id) => id,
            None => {
                let id = *next_id;
                *next_id += 1;
                self.create(id, labels.clone());
                id
            }
        };
        self.append(id, t, v)
    }

    pub fn min_t(&self) -> Option<Timestamp> {
        self.series.values().filter_map(MemSeries::min_t).min()
    }

    pub fn num_chunks(&self) -> usize {
        self.series.values().map(MemSeries::num_chunks).sum()
    }

    /// Ids of the series matching `matchers` with data in `[mint, maxt]`, in label order.
    pub fn select_ids(&self, matchers: &[Matcher], mint: Timestamp, maxt: Timestamp) -> Vec<SeriesId> {
        let mut ids: Vec<SeriesId> = self
            .postings
            .select(matchers)
            .into_iter()
            .filter(|id| self.series.get(id).is_some_and(|s| s.overlaps(mint, maxt)))
            .collect();
        ids.sort_by(|a, b| match (self.series.get(a), self.series.get(b)) {
            (Some(x), Some(y)) => x.labels.cmp(&y.labels),
            _ => a.cmp(b),
        });
        ids
    }

    pub fn select(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<(Labels, Vec<Sample>)>, StorageError> {
        let mut out = Vec::new();
        for id in self.select_ids(matchers, mint, maxt) {
            let Some(s) = self.series.get(&id) else { continue };
            let samples = s.samples(mint, maxt)?;
            if !samples.is_empty() {
                out.push((s.labels.clone(), samples));
            }
        }
        Ok(out)
    }

    /// Closes every open chunk that lies before `t` (they will get no more samples once
    /// `min_valid_t` moves to `t`).
    pub fn close_chunks_before(&mut self, t: Timestamp) {
        for s in self.series.values_mut() {
            if s.open.as_ref().is_some_and(|o| o.min_t < t) {
                s.close_open();
            }
        }
    }

    /// Drops the closed chunks that end before `t` (they are in a block now) and the series
    /// left without chunks. Their last sample is forgotten with them, so a series that comes
    /// back starts afresh (it still cannot go below `min_valid_t`).
    pub fn truncate_before(&mut self, t: Timestamp) {
        let mut gone = HashSet::new();
        for (id, s) in self.series.iter_mut() {
            s.closed.retain(|c| c.max_t >= t);
            if s.closed.is_empty() && s.open.is_none() {
                gone.insert(*id);
            }
        }
        for id in &gone {
            let Some(s) = self.series.remove(id) else { continue };
            let h = s.labels.hash64();
            if self.by_hash.get(&h) == Some(id) {
                self.by_hash.remove(&h);
                if let Some(list) = self.collisions.get_mut(&h)
                    && let Some(promoted) = list.pop()
                {
                    self.by_hash.insert(h, promoted);
                }
            } else if let Some(list) = self.collisions.get_mut(&h) {
                list.retain(|x| x != id);
            }
            if self.collisions.get(&h).is_some_and(Vec::is_empty) {
                self.collisions.remove(&h);
            }
        }
        self.postings.remove_many(&gone);
        if self.series.is_empty() {
            self.max_t = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::stale_nan;

    fn up(job: &str) -> Labels {
        Labels::from_pairs([("__name__", "up"), ("job", job)])
    }

    #[test]
    fn appends_are_ordered_and_deduplicated_like_prometheus() {
        let mut h = Head::new(7_200_000, 120, i64::MIN);
        let mut next = 1;
        h.check_and_append(&up("a"), 1000, 1.0, &mut next).expect("first");
        h.check_and_append(&up("a"), 1000, 1.0, &mut next).expect("same value is ignored");
        assert!(matches!(h.check_and_append(&up("a"), 1000, 2.0, &mut next), Err(StorageError::DuplicateSample)));
        assert!(matches!(h.check_and_append(&up("a"), 999, 2.0, &mut next), Err(StorageError::OutOfOrder)));
        h.check_and_append(&up("a"), 2000, stale_nan(), &mut next).expect("stale marker");
        // A NaN equal bit for bit is a duplicate too.
        h.check_and_append(&up("a"), 2000, stale_nan(), &mut next).expect("same marker");
        h.check_and_append(&up("b"), 500, 3.0, &mut next).expect("other series has its own order");
        let got = h.select(&[Matcher::equal("job", "a")], 0, 5000).expect("select");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.len(), 2);
        assert_eq!(next, 3);
    }

    #[test]
    fn chunks_cut_at_120_samples_and_at_range_boundaries() {
        let mut h = Head::new(10_000_000, 120, i64::MIN);
        let mut next = 0;
        for i in 0..1000 {
            h.check_and_append(&up("a"), i * 15_000, i as f64, &mut next).expect("append");
        }
        let s = h.series.get(&0).expect("series");
        assert!(s.closed.iter().all(|c| c.min_t.div_euclid(10_000_000) == c.max_t.div_euclid(10_000_000)));
        assert!(s.closed.iter().all(|c| u16::from_be_bytes([c.bytes[0], c.bytes[1]]) <= 120));
        let all = h.select(&[], 0, i64::MAX).expect("select");
        assert_eq!(all[0].1.len(), 1000);
        let part = h.select(&[], 15_000 * 100, 15_000 * 300).expect("select");
        assert_eq!(part[0].1.len(), 201);
        assert_eq!(part[0].1[0].t, 15_000 * 100);
    }

    #[test]
    fn truncation_drops_persisted_chunks_and_empty_series() {
        let mut h = Head::new(1000, 120, i64::MIN);
        let mut next = 0;
        h.check_and_append(&up("old"), 10, 1.0, &mut next).expect("append");
        h.check_and_append(&up("new"), 10, 1.0, &mut next).expect("append");
        h.check_and_append(&up("new"), 1500, 1.0, &mut next).expect("append");
        h.close_chunks_before(1000);
        h.truncate_before(1000);
        h.min_valid_t = 1000;
        assert!(h.id_of(&up("old")).is_none());
        assert_eq!(h.series.len(), 1);
        assert_eq!(h.postings.select(&[Matcher::equal("job", "old")]), Vec::<SeriesId>::new());
        assert!(matches!(h.check_and_append(&up("old"), 999, 1.0, &mut next), Err(StorageError::OutOfBounds)));
        h.check_and_append(&up("old"), 1000, 1.0, &mut next).expect("comes back");
        assert_eq!(h.min_t(), Some(1000));
    }
}
