//! The time-series database: Prometheus's design at a smaller scale. Appends go to the WAL
//! (synced before they are acknowledged) and to the in-memory head of compressed chunks; once
//! the head spans 1.5 block ranges, `compact` cuts its oldest range into an immutable block on
//! disk and replaces the WAL written so far with a checkpoint of what the head still holds;
//! adjacent blocks are merged into 3× and 9× ranges; retention deletes the oldest blocks.
//!
//! ```text
//! <dir>/wal/00000012, checkpoint.00000011   see wal.rs
//! <dir>/blocks/<range>/{chunks,index,meta.json}   see block.rs
//! ```
//!
//! Locks, always taken in this order: `compacting` (one compaction at a time), `writer` (the
//! WAL and the next series id: one append at a time, and the moments a compaction moves the
//! head's lower bound or writes a checkpoint), `state` (head and block list; queries read it,
//! an append write-locks it only to apply what the WAL already holds).

pub mod block;
pub mod chunk;
mod encoding;
pub mod head;
pub mod postings;
pub mod wal;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use self::block::{Block, BlockWriter, Compaction, block_name, delete_block_dir};
use self::chunk::XorChunk;
use self::head::{ClosedChunk, Head, OpenChunk, Verdict, check};
use self::postings::SeriesId;
use self::wal::{Record, Wal, encode_chunk, encode_samples, encode_series};
use crate::labels::{Labels, METRIC_NAME, Matcher};
use crate::storage::{Appendable, Queryable, Sample, Series, StorageError, Timestamp};

#[derive(Debug, Clone)]
pub struct TsdbOptions {
    /// Time range of a block cut from the head (Prometheus: 2 h).
    pub block_range: Duration,
    /// Blocks entirely older than the newest sample minus this are deleted; zero keeps all.
    pub retention: Duration,
    /// Once blocks and WAL together exceed this many bytes the oldest blocks are deleted;
    /// zero means no limit.
    pub retention_size: u64,
    pub wal_segment_size: u64,
    pub samples_per_chunk: u16,
}

impl Default for TsdbOptions {
    fn default() -> Self {
        Self {
            block_range: Duration::from_secs(2 * 3600),
            retention: Duration::from_secs(15 * 24 * 3600),
            retention_size: 0,
            wal_segment_size: 128 << 20,
            samples_per_chunk: chunk::TARGET_SAMPLES_PER_CHUNK,
        }
    }
}

/// What `/api/v1/status/tsdb` shows. Counts by name are the head's, top 10, largest first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TsdbStats {
    pub num_series: usize,
    pub num_chunks: usize,
    pub head_min_time: Option<Timestamp>,
    pub head_max_time: Option<Timestamp>,
    pub num_blocks: usize,
    pub blocks_bytes: u64,
    pub wal_bytes: u64,
    pub series_count_by_metric_name: Vec<(String, usize)>,
    pub series_count_by_label_name: Vec<(String, usize)>,
    pub label_value_count_by_label_name: Vec<(String, usize)>,
    pub series_count_by_label_value_pair: Vec<(String, usize)>,
}

struct State {
    head: Head,
    /// Sorted by `minTime`; never overlapping, and all before `head.min_valid_t`.
    blocks: Vec<Arc<Block>>,
}

struct Writer {
    /// `None` once closed.
    wal: Option<Wal>,
    next_id: SeriesId,
}

/// The TSDB. `Send + Sync`: share it through an `Arc`.
pub struct Tsdb {
    dir: PathBuf,
    opts: TsdbOptions,
    range: i64,
    compacting: Mutex<()>,
    writer: Mutex<Writer>,
    state: RwLock<State>,
}

impl std::fmt::Debug for Tsdb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tsdb").field("dir", &self.dir).finish_non_exhaustive()
    }
}

// A panic while a lock was held leaves at worst a half-applied append in memory, which the WAL
// replay would redo anyway; refusing every later call would be worse.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn closed() -> StorageError {
    StorageError::Io(std::io::Error::other("the TSDB is closed"))
}

fn top10(mut counts: Vec<(String, usize)>) -> Vec<(String, usize)> {
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    counts.truncate(10);
    counts
}

impl Tsdb {
    /// Opens (or creates) the database in `dir`: loads the blocks' indexes, replays the WAL
    /// into the head, and clears what a crash may have left half done.
    pub fn open(dir: &Path, opts: TsdbOptions) -> Result<Self, StorageError> {
        let range = i64::try_from(opts.block_range.as_millis()).unwrap_or(i64::MAX).max(1);
        let blocks_dir = dir.join("blocks");
        fs::create_dir_all(&blocks_dir)?;
        let blocks = load_blocks(&blocks_dir)?;
        let min_valid_t = blocks.iter().map(|b| b.meta.max_time).max().unwrap_or(i64::MIN);
        let mut head = Head::new(range, opts.samples_per_chunk, min_valid_t);
        let mut next_id: SeriesId = 0;
        let mut remap: HashMap<SeriesId, SeriesId> = HashMap::new();
        let wal =
            Wal::open(&dir.join("wal"), opts.wal_segment_size, |r| replay(&mut head, &mut next_id, &mut remap, r))?;
        // A series whose newest chunk came closed from a checkpoint needs its last sample for
        // the order and duplicate checks.
        for s in head.series.values_mut() {
            if s.last.is_none()
                && let Some(c) = s.closed.last()
            {
                let samples = chunk::decode_all(&c.bytes)
                    .map_err(|e| StorageError::Corrupt(format!("WAL checkpoint chunk of {}: {e}", s.labels)))?;
                s.last = samples.last().map(|x| (x.t, x.v.to_bits()));
            }
        }
        head.max_t = head.series.values().filter_map(|s| s.max_t()).max();
        Ok(Self {
            dir: dir.to_path_buf(),
            opts,
            range,
            compacting: Mutex::new(()),
            writer: Mutex::new(Writer { wal: Some(wal), next_id }),
            state: RwLock::new(State { head, blocks }),
        })
    }

    fn read(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Label names of the series matching `matchers` with data in `[mint, maxt]`, sorted.
    pub fn label_names(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<String>, StorageError> {
        let st = self.read();
        let mut out = BTreeSet::new();
        for b in st.blocks.iter().filter(|b| b.overlaps(mint, maxt)) {
            b.label_names(matchers, &mut out);
        }
        for id in st.head.select_ids(matchers, mint, maxt) {
            if let Some(s) = st.head.series.get(&id) {
                out.extend(s.labels.iter().map(|l| l.name.clone()));
            }
        }
        Ok(out.into_iter().collect())
    }

    /// Values of label `name` among the series matching `matchers` with data in
    /// `[mint, maxt]`, sorted.
    pub fn label_values(
        &self,
        name: &str,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<String>, StorageError> {
        let st = self.read();
        let mut out = BTreeSet::new();
        for b in st.blocks.iter().filter(|b| b.overlaps(mint, maxt)) {
            b.label_values(name, matchers, &mut out);
        }
        for id in st.head.select_ids(matchers, mint, maxt) {
            if let Some(v) = st.head.series.get(&id).and_then(|s| s.labels.get(name)) {
                out.insert(v.to_owned());
            }
        }
        Ok(out.into_iter().collect())
    }

    pub fn stats(&self) -> TsdbStats {
        let wal_bytes = lock(&self.writer).wal.as_ref().map_or(0, Wal::size_on_disk);
        let st = self.read();
        let h = &st.head;
        let p = &h.postings;
        let by_metric = p.values(METRIC_NAME).map(|(v, ids)| (v.to_owned(), ids.len())).collect();
        let by_name = p.names().map(|n| (n.to_owned(), p.values(n).map(|(_, ids)| ids.len()).sum())).collect();
        let values_by_name = p.names().map(|n| (n.to_owned(), p.values(n).count())).collect();
        let by_pair = p.iter().map(|(n, v, ids)| (format!("{n}={v}"), ids.len())).collect();
        TsdbStats {
            num_series: h.series.len(),
            num_chunks: h.num_chunks(),
            head_min_time: h.min_t(),
            head_max_time: h.max_t,
            num_blocks: st.blocks.len(),
            blocks_bytes: st.blocks.iter().map(|b| b.size()).sum(),
            wal_bytes,
            series_count_by_metric_name: top10(by_metric),
            series_count_by_label_name: top10(by_name),
            label_value_count_by_label_name: top10(values_by_name),
            series_count_by_label_value_pair: top10(by_pair),
        }
    }

    /// Cuts blocks from the head while it spans more than 1.5 block ranges (the extra half
    /// range leaves late samples of the newest range somewhere to go), merges adjacent blocks
    /// and applies retention. Meant to be called periodically; safe to call at any time, from
    /// any thread, concurrently with appends and queries.
    pub fn compact(&self) -> Result<(), StorageError> {
        let _one = lock(&self.compacting);
        loop {
            let (min_t, max_t) = {
                let st = self.read();
                (st.head.min_t(), st.head.max_t)
            };
            let (Some(min_t), Some(max_t)) = (min_t, max_t) else { break };
            if max_t.saturating_sub(min_t) <= self.range / 2 * 3 {
                break;
            }
            let start = min_t.div_euclid(self.range) * self.range;
            self.cut_block(start, start.saturating_add(self.range))?;
        }
        let retention = i64::try_from(self.opts.retention.as_millis()).unwrap_or(i64::MAX);
        for factor in [3, 9] {
            // Prometheus caps block size at a tenth of the retention, so that deleting a
            // block never drops much more than what retention asks for.
            if retention > 0 && self.range.saturating_mul(factor) > retention / 10 {
                break;
            }
            while self.merge_blocks(self.range.saturating_mul(factor))? {}
        }
        self.apply_retention()
    }

    /// Syncs and closes the WAL; later appends fail, queries still work.
    pub fn close(&self) -> Result<(), StorageError> {
        let mut w = lock(&self.writer);
        if let Some(wal) = w.wal.take() {
            drop(wal);
        }
        Ok(())
    }

    fn cut_block(&self, start: Timestamp, end: Timestamp) -> Result<(), StorageError> {
        {
            let _w = lock(&self.writer);
            let mut st = self.write();
            // From here on nothing below `end` is accepted, so the chunks below it are final.
            st.head.min_valid_t = st.head.min_valid_t.max(end);
            st.head.close_chunks_before(end);
        }
        let mut series: Vec<(Labels, Vec<ClosedChunk>)> = {
            let st = self.read();
            st.head
                .series
                .values()
                .filter_map(|s| {
                    let cs: Vec<ClosedChunk> = s.closed.iter().filter(|c| c.max_t < end).cloned().collect();
                    (!cs.is_empty()).then(|| (s.labels.clone(), cs))
                })
                .collect()
        };
        series.sort_by(|a, b| a.0.cmp(&b.0));
        let block = if series.is_empty() {
            None
        } else {
            let mut w = BlockWriter::new(&self.dir.join("blocks"), &block_name(start, end))?;
            for (labels, chunks) in series {
                w.add_series(labels, chunks.iter().map(|c| (c.min_t, c.max_t, &c.bytes[..])))?;
            }
            Some(w.finish(
                start,
                end,
                Compaction { level: 1, sources: vec![block_name(start, end)], parents: vec![] },
            )?)
        };
        let mut w = lock(&self.writer);
        {
            let mut st = self.write();
            if let Some(b) = block {
                st.blocks.push(Arc::new(b));
                st.blocks.sort_by_key(|b| b.meta.min_time);
            }
            st.head.truncate_before(end);
        }
        let st = self.read();
        let Some(wal) = w.wal.as_mut() else { return Ok(()) };
        wal.checkpoint(checkpoint_records(&st.head))
    }

    /// Merges the blocks of the first `window`-aligned range that holds several blocks and
    /// can get no more (the head is past it). Returns whether it merged.
    fn merge_blocks(&self, window: i64) -> Result<bool, StorageError> {
        let parents: Vec<Arc<Block>> = {
            let st = self.read();
            let mut groups: BTreeMap<i64, Vec<Arc<Block>>> = BTreeMap::new();
            for b in &st.blocks {
                let w = b.meta.min_time.div_euclid(window);
                let w_end = (w.saturating_add(1)).saturating_mul(window);
                if b.meta.max_time <= w_end && w_end <= st.head.min_valid_t {
                    groups.entry(w).or_default().push(b.clone());
                }
            }
            match groups.into_values().find(|g| g.len() >= 2) {
                Some(g) => g,
                None => return Ok(false),
            }
        };
        let min_time = parents.iter().map(|b| b.meta.min_time).min().unwrap_or(0);
        let max_time = parents.iter().map(|b| b.meta.max_time).max().unwrap_or(0);
        // Every series of every parent, in label order and, within one series, block order.
        let mut all: Vec<(&Labels, usize, usize)> = Vec::new();
        for (bi, b) in parents.iter().enumerate() {
            all.extend(b.series().iter().enumerate().map(|(si, s)| (&s.labels, bi, si)));
        }
        all.sort_by(|a, b| a.0.cmp(b.0).then(a.1.cmp(&b.1)));
        let mut w = BlockWriter::new(&self.dir.join("blocks"), &block_name(min_time, max_time))?;
        let mut i = 0;
        while i < all.len() {
            let labels = all[i].0;
            let mut chunks = Vec::new();
            while i < all.len() && all[i].0 == labels {
                let (_, bi, si) = all[i];
                if let Some(s) = parents[bi].series().get(si) {
                    for c in &s.chunks {
                        chunks.push((c.min_t, c.max_t, parents[bi].read_chunk(c)?));
                    }
                }
                i += 1;
            }
            w.add_series(labels.clone(), chunks.iter().map(|(a, b, c)| (*a, *b, &c[..])))?;
        }
        let compaction = Compaction {
            level: parents.iter().map(|b| b.meta.compaction.level).max().unwrap_or(1) + 1,
            sources: parents.iter().flat_map(|b| b.meta.compaction.sources.iter().cloned()).collect(),
            parents: parents.iter().map(|b| b.name().to_owned()).collect(),
        };
        let merged = w.finish(min_time, max_time, compaction)?;
        {
            let mut st = self.write();
            st.blocks.retain(|b| !parents.iter().any(|p| p.name() == b.name()));
            st.blocks.push(Arc::new(merged));
            st.blocks.sort_by_key(|b| b.meta.min_time);
        }
        for p in parents {
            delete_block_dir(&p.dir)?;
        }
        Ok(true)
    }

    fn apply_retention(&self) -> Result<(), StorageError> {
        let wal_bytes = lock(&self.writer).wal.as_ref().map_or(0, Wal::size_on_disk);
        let doomed: Vec<Arc<Block>> = {
            let mut st = self.write();
            let newest = st.blocks.iter().map(|b| b.meta.max_time).chain(st.head.max_t).max();
            let retention = i64::try_from(self.opts.retention.as_millis()).unwrap_or(i64::MAX);
            let mut doomed = Vec::new();
            if let Some(newest) = newest
                && retention > 0
            {
                let cutoff = newest.saturating_sub(retention);
                doomed.extend(st.blocks.iter().filter(|b| b.meta.max_time <= cutoff).cloned());
                st.blocks.retain(|b| b.meta.max_time > cutoff);
            }
            if self.opts.retention_size > 0 {
                let mut total: u64 = wal_bytes + st.blocks.iter().map(|b| b.size()).sum::<u64>();
                while total > self.opts.retention_size && !st.blocks.is_empty() {
                    let b = st.blocks.remove(0);
                    total = total.saturating_sub(b.size());
                    doomed.push(b);
                }
            }
            doomed
        };
        for b in doomed {
            delete_block_dir(&b.dir)?;
        }
        Ok(())
    }
}

/// The head as checkpoint records: every series, then every chunk (the open one marked).
fn checkpoint_records(head: &Head) -> impl Iterator<Item = Vec<u8>> + '_ {
    let mut ids: Vec<SeriesId> = head.series.keys().copied().collect();
    ids.sort_unstable();
    let series_records: Vec<Vec<SeriesId>> = ids.chunks(1000).map(<[SeriesId]>::to_vec).collect();
    let chunk_ids = ids;
    series_records
        .into_iter()
        .map(move |batch| encode_series(batch.iter().filter_map(|id| head.series.get(id).map(|s| (*id, &s.labels)))))
        .chain(chunk_ids.into_iter().flat_map(move |id| {
            let s = head.series.get(&id);
            let closed = s
                .into_iter()
                .flat_map(move |s| s.closed.iter().map(move |c| encode_chunk(id, c.min_t, c.max_t, false, &c.bytes)));
            let open = s
                .and_then(|s| s.open.as_ref())
                .map(|o| encode_chunk(id, o.min_t, o.chunk.last_t(), true, o.chunk.bytes()));
            closed.chain(open)
        }))
}

fn replay(
    head: &mut Head,
    next_id: &mut SeriesId,
    remap: &mut HashMap<SeriesId, SeriesId>,
    record: Record,
) -> Result<(), StorageError> {
    match record {
        Record::Series(list) => {
            for (id, labels) in list {
                *next_id = (*next_id).max(id.saturating_add(1));
                match head.id_of(&labels) {
                    // The same labels under a newer id: the series was dropped and came back
                    // before a checkpoint recorded the drop.
                    Some(existing) if existing != id => {
                        remap.insert(id, existing);
                    }
                    Some(_) => {}
                    None => head.create(id, labels),
                }
            }
        }
        Record::Samples(list) => {
            for (id, t, v) in list {
                let id = remap.get(&id).copied().unwrap_or(id);
                // Samples of a series no record names, or already in a block, or rejected
                // then: skipped, as Prometheus skips them.
                let Some(s) = head.series.get(&id) else { continue };
                if let Ok(Verdict::Append) = check(s.last, head.min_valid_t, t, v) {
                    head.append(id, t, v)?;
                }
            }
        }
        Record::Chunk { id, min_t, max_t, open, bytes } => {
            let id = remap.get(&id).copied().unwrap_or(id);
            if max_t < head.min_valid_t {
                return Ok(());
            }
            let Some(s) = head.series.get_mut(&id) else { return Ok(()) };
            if open {
                let chunk = XorChunk::from_bytes(&bytes)
                    .map_err(|e| StorageError::Corrupt(format!("WAL checkpoint: open chunk of {}: {e}", s.labels)))?;
                if chunk.num_samples() > 0 {
                    s.last = Some((chunk.last_t(), chunk.last_v().to_bits()));
                    s.open = Some(OpenChunk { min_t, chunk });
                }
            } else {
                s.closed.push(ClosedChunk { min_t, max_t, bytes: bytes.into() });
            }
        }
    }
    Ok(())
}

fn load_blocks(dir: &Path) -> Result<Vec<Arc<Block>>, StorageError> {
    let mut blocks = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "tmp") {
            // A block being written or deleted when the process stopped.
            fs::remove_dir_all(&path)?;
            continue;
        }
        if path.is_dir() {
            blocks.push(Block::open(&path)?);
        }
    }
    // A merge that renamed its result into place but crashed before deleting its parents.
    let parents: BTreeSet<String> = blocks.iter().flat_map(|b| b.meta.compaction.parents.iter().cloned()).collect();
    let (stale, mut blocks): (Vec<Block>, Vec<Block>) = blocks.into_iter().partition(|b| parents.contains(b.name()));
    for b in stale {
        delete_block_dir(&b.dir)?;
    }
    blocks.sort_by_key(|b| b.meta.min_time);
    for pair in blocks.windows(2) {
        if pair[0].meta.max_time > pair[1].meta.min_time {
            return Err(StorageError::Corrupt(format!(
                "blocks {} and {} overlap",
                pair[0].dir.display(),
                pair[1].dir.display()
            )));
        }
    }
    Ok(blocks.into_iter().map(Arc::new).collect())
}

impl Queryable for Tsdb {
    fn select(&self, matchers: &[Matcher], mint: Timestamp, maxt: Timestamp) -> Result<Vec<Series>, StorageError> {
        let st = self.read();
        let mut merged: BTreeMap<Labels, Vec<Sample>> = BTreeMap::new();
        // Blocks in time order, then the head, which starts after the last block: appending
        // keeps every series' samples sorted.
        for b in st.blocks.iter().filter(|b| b.overlaps(mint, maxt)) {
            for (labels, samples) in b.select(matchers, mint, maxt)? {
                merged.entry(labels).or_default().extend(samples);
            }
        }
        for (labels, samples) in st.head.select(matchers, mint, maxt)? {
            merged.entry(labels).or_default().extend(samples);
        }
        Ok(merged.into_iter().map(|(labels, samples)| Series { labels, samples }).collect())
    }
}

impl Appendable for Tsdb {
    /// Appends the batch and syncs it to the WAL before returning. As in Prometheus, a sample
    /// that is out of order, a duplicate with another value, or older than the head
    /// (`OutOfBounds`) is skipped while the rest of the batch is still committed; the first
    /// such error is then returned. An I/O error means nothing of the batch was acknowledged
    /// (though some of it may reappear after a restart if it reached the disk).
    fn append(&self, batch: &[(Labels, Sample)]) -> Result<(), StorageError> {
        let mut w = lock(&self.writer);
        let mut next_id = w.next_id;
        let mut first_err: Option<StorageError> = None;
        let mut new_series: Vec<(SeriesId, &Labels)> = Vec::new();
        let mut accepted: Vec<(SeriesId, Timestamp, f64)> = Vec::with_capacity(batch.len());
        {
            let st = self.read();
            let mut pending_ids: HashMap<&Labels, SeriesId> = HashMap::new();
            let mut pending_last: HashMap<SeriesId, (Timestamp, u64)> = HashMap::new();
            for (labels, s) in batch {
                let id = st.head.id_of(labels).or_else(|| pending_ids.get(labels).copied());
                let last = id.and_then(|id| {
                    pending_last.get(&id).copied().or_else(|| st.head.series.get(&id).and_then(|s| s.last))
                });
                match check(last, st.head.min_valid_t, s.t, s.v) {
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                    Ok(Verdict::Ignore) => {}
                    Ok(Verdict::Append) => {
                        let id = id.unwrap_or_else(|| {
                            let id = next_id;
                            next_id += 1;
                            pending_ids.insert(labels, id);
                            new_series.push((id, labels));
                            id
                        });
                        pending_last.insert(id, (s.t, s.v.to_bits()));
                        accepted.push((id, s.t, s.v));
                    }
                }
            }
        }
        w.next_id = next_id;
        if !accepted.is_empty() {
            let mut bodies = Vec::with_capacity(2);
            if !new_series.is_empty() {
                bodies.push(encode_series(new_series.iter().map(|(id, l)| (*id, *l))));
            }
            bodies.push(encode_samples(&accepted));
            w.wal.as_mut().ok_or_else(closed)?.log(&bodies)?;
            let mut st = self.write();
            for (id, labels) in new_series {
                st.head.create(id, labels.clone());
            }
            for (id, t, v) in accepted {
                st.head.append(id, t, v)?;
            }
        } else if w.wal.is_none() {
            return Err(closed());
        }
        first_err.map_or(Ok(()), Err)
    }
}

#[cfg(test)]
mod tests;
