//! What the query engine reads and what scraping, rules and remote write append to. The TSDB
//! implements both; [`MemStorage`] is the simple reference the PromQL tests load data into.

use std::collections::BTreeMap;
use std::sync::RwLock;

use crate::labels::{Labels, Matcher, matches_all};

/// Milliseconds since the Unix epoch, Prometheus's timestamp unit.
pub type Timestamp = i64;

/// The bit pattern Prometheus writes as a staleness marker: a NaN that no arithmetic produces,
/// so a marker survives storage and is told apart from a real NaN sample.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

pub fn is_stale_nan(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub t: Timestamp,
    pub v: f64,
}

/// One series and its samples in time order within the selected range.
#[derive(Debug, Clone)]
pub struct Series {
    pub labels: Labels,
    pub samples: Vec<Sample>,
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("out of order sample")]
    OutOfOrder,
    #[error("duplicate sample for timestamp")]
    DuplicateSample,
    #[error("out of bounds")]
    OutOfBounds,
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("corrupt data: {0}")]
    Corrupt(String),
    #[error("query limit reached: {0}")]
    Limit(String),
}

/// Read access to series. Implementations return series sorted by labels.
pub trait Queryable: Send + Sync {
    /// Every series matching all `matchers` with its samples in `[mint, maxt]` (inclusive).
    /// Series with no sample in the range may be left out.
    fn select(&self, matchers: &[Matcher], mint: Timestamp, maxt: Timestamp) -> Result<Vec<Series>, StorageError>;

    /// Label sets of the series matching `matchers` that have a sample in `[mint, maxt]`.
    fn series(&self, matchers: &[Matcher], mint: Timestamp, maxt: Timestamp) -> Result<Vec<Labels>, StorageError> {
        Ok(self.select(matchers, mint, maxt)?.into_iter().map(|s| s.labels).collect())
    }
}

/// Label names of the series matching `matchers` in `[mint, maxt]`, sorted.
pub fn label_names(
    q: &dyn Queryable,
    matchers: &[Matcher],
    mint: Timestamp,
    maxt: Timestamp,
) -> Result<Vec<String>, StorageError> {
    let mut names = std::collections::BTreeSet::new();
    for labels in q.series(&or_everything(matchers), mint, maxt)? {
        for l in labels.iter() {
            names.insert(l.name.clone());
        }
    }
    Ok(names.into_iter().collect())
}

/// Values of label `name` among the series matching `matchers` in `[mint, maxt]`, sorted.
pub fn label_values(
    q: &dyn Queryable,
    name: &str,
    matchers: &[Matcher],
    mint: Timestamp,
    maxt: Timestamp,
) -> Result<Vec<String>, StorageError> {
    let mut values = std::collections::BTreeSet::new();
    for labels in q.series(&or_everything(matchers), mint, maxt)? {
        if let Some(v) = labels.get(name) {
            values.insert(v.to_owned());
        }
    }
    Ok(values.into_iter().collect())
}

/// No matchers means every series: a name matcher that any series satisfies.
fn or_everything(matchers: &[Matcher]) -> Vec<Matcher> {
    if matchers.is_empty() {
        match Matcher::regex(crate::labels::METRIC_NAME, ".+", false) {
            Ok(m) => vec![m],
            Err(_) => Vec::new(),
        }
    } else {
        matchers.to_vec()
    }
}

/// A view of storage that only shows series also matching `scope` (every selector of every
/// query gets the matcher: how a project's members see only their project's series).
pub struct Scoped {
    pub inner: std::sync::Arc<dyn Queryable>,
    pub scope: Vec<Matcher>,
}

impl Queryable for Scoped {
    fn select(&self, matchers: &[Matcher], mint: Timestamp, maxt: Timestamp) -> Result<Vec<Series>, StorageError> {
        let mut all = matchers.to_vec();
        all.extend(self.scope.iter().cloned());
        self.inner.select(&all, mint, maxt)
    }

    fn series(&self, matchers: &[Matcher], mint: Timestamp, maxt: Timestamp) -> Result<Vec<Labels>, StorageError> {
        let mut all = matchers.to_vec();
        all.extend(self.scope.iter().cloned());
        self.inner.series(&all, mint, maxt)
    }
}

/// Both halves: what a host keeps behind one `Arc`.
pub trait Storage: Queryable + Appendable {}

impl<T: Queryable + Appendable> Storage for T {}

/// Write access: a batch of samples that becomes visible (and durable, for the TSDB) at commit.
pub trait Appendable: Send + Sync {
    fn append(&self, batch: &[(Labels, Sample)]) -> Result<(), StorageError>;
}

/// Every series in memory with its samples in a vector: the reference implementation.
#[derive(Debug, Default)]
pub struct MemStorage {
    series: RwLock<BTreeMap<Labels, Vec<Sample>>>,
}

impl MemStorage {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn clear(&self) {
        if let Ok(mut s) = self.series.write() {
            s.clear();
        }
    }

    /// Adds one sample, replacing a sample at the same timestamp (how the PromQL test
    /// language's repeated `load` commands behave).
    pub fn add(&self, labels: Labels, sample: Sample) {
        let Ok(mut all) = self.series.write() else { return };
        let samples = all.entry(labels).or_default();
        match samples.binary_search_by_key(&sample.t, |s| s.t) {
            Ok(i) => samples[i] = sample,
            Err(i) => samples.insert(i, sample),
        }
    }
}

impl Queryable for MemStorage {
    fn select(&self, matchers: &[Matcher], mint: Timestamp, maxt: Timestamp) -> Result<Vec<Series>, StorageError> {
        let all = self.series.read().map_err(|_| StorageError::Corrupt("lock poisoned".into()))?;
        let mut out = Vec::new();
        for (labels, samples) in all.iter() {
            if !matches_all(matchers, labels) {
                continue;
            }
            let lo = samples.partition_point(|s| s.t < mint);
            let hi = samples.partition_point(|s| s.t <= maxt);
            if lo < hi {
                out.push(Series { labels: labels.clone(), samples: samples[lo..hi].to_vec() });
            }
        }
        Ok(out)
    }
}

impl Appendable for MemStorage {
    fn append(&self, batch: &[(Labels, Sample)]) -> Result<(), StorageError> {
        for (l, s) in batch {
            self.add(l.clone(), *s);
        }
        Ok(())
    }
}
