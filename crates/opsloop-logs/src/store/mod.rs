//! Log storage: per tenant and stream, an in-memory head of recent entries and time-bounded
//! chunks compressed with zstd, written to append-only chunk files; a WAL makes every
//! acknowledged push durable; an in-memory label index (rebuilt from chunk headers on open)
//! answers selectors, label names/values, series and stats.
//!
//! ```text
//! dir/wal/<seq>.wal        pushes since the last checkpoint
//! dir/chunks/<n>.chunks    chunk records: header (tenant, labels, time bounds, counts, WAL seq)
//!                          + zstd payload; the newest file is appended to, older ones are sealed
//! ```
//! A head is cut into a chunk when it reaches `chunk_target_size` bytes or spans
//! `chunk_max_age`. A checkpoint (when the WAL outgrows `wal_checkpoint_bytes`, or on
//! [`Store::flush`]) cuts every head, fsyncs the chunk file and starts a new WAL. Each chunk
//! records the last WAL sequence number its stream had seen, so replay skips what is already
//! in chunks and nothing is counted twice. Retention deletes whole sealed files; compaction
//! rewrites sealed files, merging a stream's small chunks.

pub mod chunk;
pub mod wal;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::eval::{EntryRef, LogSource, ScanHint, SourceError, SourceStream};
use crate::labels::{Labels, Matcher};
use crate::push::{Entry, PushStream};
use chunk::{get_str, get_varint, put_bytes, put_varint};
use wal::Wal;

/// Store settings.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Uncompressed bytes at which a head is cut (Loki's `chunk_target_size`, 1.5 MB).
    pub chunk_target_size: usize,
    /// Time span (ns) at which a head is cut (Loki's `max_chunk_age`, 1 h).
    pub chunk_max_age: i64,
    /// zstd level for chunks (see the bench: 3 is the usual ingest/ratio balance).
    pub zstd_level: i32,
    /// fsync the WAL before acknowledging a push. Only tests and benches turn it off.
    pub fsync: bool,
    /// WAL size that triggers a checkpoint.
    pub wal_checkpoint_bytes: u64,
    /// A chunk file is sealed and a new one started past this size.
    pub chunk_file_size: u64,
    /// Most distinct values one label name may have in a tenant (0: unlimited).
    pub max_label_values_per_tenant: usize,
    /// Most streams per tenant (0: unlimited).
    pub max_streams_per_tenant: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            chunk_target_size: 1_572_864,
            chunk_max_age: 3_600_000_000_000,
            zstd_level: 3,
            fsync: true,
            wal_checkpoint_bytes: 256 << 20,
            chunk_file_size: 512 << 20,
            max_label_values_per_tenant: 100_000,
            max_streams_per_tenant: 100_000,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error(
        "tenant '{tenant}': label '{label}' would exceed its limit of {limit} distinct values (stream {stream}); drop or bucket the label"
    )]
    Cardinality { tenant: String, label: String, limit: usize, stream: String },
    #[error("tenant '{tenant}': maximum active stream limit exceeded ({limit}), stream {stream} refused")]
    StreamLimit { tenant: String, limit: usize, stream: String },
    #[error("corrupt chunk file {path}: {msg}")]
    Corrupt { path: String, msg: String },
    #[error("invalid tenant id {0:?}")]
    Tenant(String),
    #[error(transparent)]
    Read(#[from] SourceError),
}

/// Where a chunk's payload is.
#[derive(Debug)]
struct ChunkMeta {
    min_ts: i64,
    max_ts: i64,
    entries: u32,
    raw_len: u32,
    file: u64,
    offset: u64,
    len: u32,
    wal_seq: u64,
}

#[derive(Debug, Default)]
struct Head {
    entries: Vec<Entry>,
    bytes: usize,
    min_ts: i64,
    max_ts: i64,
    sorted: bool,
}

#[derive(Debug)]
struct Stream {
    labels: Labels,
    chunks: Vec<Arc<ChunkMeta>>,
    head: Head,
    /// The last WAL record that added to this stream.
    last_seq: u64,
    /// The last WAL record already in a chunk (replay skips older ones).
    flushed_seq: u64,
}

impl Stream {
    fn overlaps(&self, start: i64, end: i64) -> bool {
        (!self.head.entries.is_empty() && self.head.min_ts < end && self.head.max_ts >= start)
            || self.chunks.iter().any(|c| c.min_ts < end && c.max_ts >= start)
    }
}

#[derive(Debug, Default)]
struct Tenant {
    streams: Vec<Stream>,
    by_labels: HashMap<Labels, u32>,
    /// label name → value → stream ids.
    postings: BTreeMap<String, BTreeMap<String, Vec<u32>>>,
}

impl Tenant {
    fn stream_id(&mut self, labels: &Labels) -> u32 {
        if let Some(&id) = self.by_labels.get(labels) {
            return id;
        }
        let id = self.streams.len() as u32;
        self.streams.push(Stream {
            labels: labels.clone(),
            chunks: Vec::new(),
            head: Head::default(),
            last_seq: 0,
            flushed_seq: 0,
        });
        self.by_labels.insert(labels.clone(), id);
        for (k, v) in labels.iter() {
            self.postings.entry(k.to_string()).or_default().entry(v.to_string()).or_default().push(id);
        }
        id
    }

    /// Stream ids matching every matcher: equality matchers intersect postings lists, the rest
    /// filter the candidates.
    fn select(&self, matchers: &[Matcher]) -> Vec<u32> {
        let mut cand: Option<Vec<u32>> = None;
        for m in matchers.iter().filter(|m| m.op == crate::labels::MatchOp::Eq && !m.value.is_empty()) {
            let ids = self.postings.get(&m.name).and_then(|v| v.get(&m.value)).cloned().unwrap_or_default();
            cand = Some(match cand {
                None => ids,
                Some(c) => c.into_iter().filter(|i| ids.binary_search(i).is_ok()).collect(),
            });
        }
        let cand = cand.unwrap_or_else(|| (0..self.streams.len() as u32).collect());
        cand.into_iter()
            .filter(|&i| matchers.iter().all(|m| m.matches_labels(&self.streams[i as usize].labels)))
            .collect()
    }
}

#[derive(Debug)]
struct ChunkFile {
    file: Arc<File>,
    path: PathBuf,
    size: u64,
    min_ts: i64,
    max_ts: i64,
    chunks: usize,
}

struct Inner {
    tenants: HashMap<String, Tenant>,
    wal: Wal,
    next_seq: u64,
    files: BTreeMap<u64, ChunkFile>,
    active: u64,
    /// Whether the active chunk file has writes not yet fsynced.
    dirty: bool,
}

/// The log store.
pub struct Store {
    dir: PathBuf,
    opts: StoreOptions,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).finish()
    }
}

/// Counts for `/loki/api/v1/index/stats` (bytes uncompressed, as Loki reports them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct IndexStats {
    pub streams: u64,
    pub chunks: u64,
    pub bytes: u64,
    pub entries: u64,
}

/// Whole-store figures, for metrics and the bench.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    pub tenants: u64,
    pub streams: u64,
    pub chunks: u64,
    pub entries: u64,
    /// Uncompressed bytes of lines in chunks and heads.
    pub raw_bytes: u64,
    /// Bytes of chunk files on disk.
    pub stored_bytes: u64,
    pub head_bytes: u64,
    pub wal_bytes: u64,
    pub files: u64,
}

/// What a retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub files_deleted: u64,
    pub chunks_deleted: u64,
    pub bytes_deleted: u64,
}

/// What a compaction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactReport {
    pub chunks_before: u64,
    pub chunks_after: u64,
    pub files_rewritten: u64,
}

const CHUNK_MAGIC: &[u8; 4] = b"OLC1";

fn lock(m: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
    // A panic while holding the lock leaves the in-memory state as it was at that point; the
    // WAL and files are still consistent, so carrying on is safer than poisoning every caller.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn valid_tenant(t: &str) -> bool {
    !t.is_empty() && t.len() <= 150 && t.bytes().all(|b| b.is_ascii_graphic() && b != b'/' && b != b'|')
}

impl Store {
    /// Opens (or creates) a store: rebuilds the index from chunk file headers, then replays
    /// the WAL.
    pub fn open(dir: impl AsRef<Path>, opts: StoreOptions) -> Result<Store, StoreError> {
        let dir = dir.as_ref().to_path_buf();
        let chunks_dir = dir.join("chunks");
        fs::create_dir_all(&chunks_dir)?;
        let mut tenants: HashMap<String, Tenant> = HashMap::new();
        let mut files = BTreeMap::new();
        let mut names: Vec<(u64, PathBuf)> = fs::read_dir(&chunks_dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter_map(|p| {
                let n = p.file_name()?.to_str()?.strip_suffix(".chunks")?.parse::<u64>().ok()?;
                Some((n, p))
            })
            .collect();
        names.sort();
        // Leftovers of an interrupted compaction.
        for e in fs::read_dir(&chunks_dir)? {
            let p = e?.path();
            if p.extension().and_then(|e| e.to_str()) == Some("tmp") {
                fs::remove_file(p)?;
            }
        }
        let mut max_seq = 0u64;
        let last = names.last().map(|n| n.0);
        for (n, path) in &names {
            let f = OpenOptions::new().read(true).append(true).open(path)?;
            let (cf, seq) = load_chunk_file(&f, path, *n, Some(*n) == last, &mut tenants)?;
            max_seq = max_seq.max(seq);
            files.insert(*n, ChunkFile { file: Arc::new(f), ..cf });
        }
        let active = match last {
            Some(n) => n,
            None => {
                let path = chunks_dir.join(format!("{:08}.chunks", 1));
                let f = OpenOptions::new().create(true).read(true).append(true).open(&path)?;
                files.insert(
                    1,
                    ChunkFile { file: Arc::new(f), path, size: 0, min_ts: i64::MAX, max_ts: i64::MIN, chunks: 0 },
                );
                1
            }
        };
        let (wal, records) = Wal::open(&dir.join("wal"), opts.fsync)?;
        let mut inner = Inner { tenants, wal, next_seq: 1, files, active, dirty: false };
        for rec in records {
            max_seq = max_seq.max(rec.seq);
            let t = inner.tenants.entry(rec.tenant).or_default();
            for s in rec.streams {
                let id = t.stream_id(&s.labels);
                let st = &mut t.streams[id as usize];
                if rec.seq <= st.flushed_seq {
                    continue;
                }
                st.last_seq = rec.seq;
                for e in s.entries {
                    head_append(&mut st.head, e);
                }
            }
        }
        inner.next_seq = max_seq + 1;
        let store = Store { dir, opts, inner: Mutex::new(inner) };
        // Heads replayed past their cut size are cut now.
        {
            let mut g = lock(&store.inner);
            let inner = &mut *g;
            let tenant_names: Vec<String> = inner.tenants.keys().cloned().collect();
            for tn in tenant_names {
                let n = inner.tenants.get(&tn).map_or(0, |t| t.streams.len());
                for id in 0..n {
                    store.maybe_cut(inner, &tn, id as u32, false)?;
                }
            }
        }
        Ok(store)
    }

    pub fn options(&self) -> &StoreOptions {
        &self.opts
    }

    /// Stores pushed streams for a tenant. Limits are checked for the whole request before
    /// anything is written, so a refused push stores nothing; when this returns `Ok`, every
    /// entry is in the fsynced WAL.
    pub fn push(&self, tenant: &str, streams: Vec<PushStream>) -> Result<(), StoreError> {
        if !valid_tenant(tenant) {
            return Err(StoreError::Tenant(tenant.to_string()));
        }
        let streams: Vec<PushStream> = streams.into_iter().filter(|s| !s.entries.is_empty()).collect();
        if streams.is_empty() {
            return Ok(());
        }
        let mut g = lock(&self.inner);
        let inner = &mut *g;
        self.check_limits(inner.tenants.get(tenant), tenant, &streams)?;
        let seq = inner.next_seq;
        inner.next_seq += 1;
        inner.wal.append(seq, tenant, &streams)?;
        let t = inner.tenants.entry(tenant.to_string()).or_default();
        let mut touched = Vec::with_capacity(streams.len());
        for s in streams {
            let id = t.stream_id(&s.labels);
            let st = &mut t.streams[id as usize];
            st.last_seq = seq;
            for e in s.entries {
                head_append(&mut st.head, e);
            }
            touched.push(id);
        }
        for id in touched {
            self.maybe_cut(inner, tenant, id, false)?;
        }
        if inner.wal.size() > self.opts.wal_checkpoint_bytes {
            self.checkpoint(inner)?;
        }
        Ok(())
    }

    fn check_limits(&self, t: Option<&Tenant>, tenant: &str, streams: &[PushStream]) -> Result<(), StoreError> {
        let mut new_streams: BTreeSet<&Labels> = BTreeSet::new();
        let mut new_values: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
        for s in streams {
            if t.is_some_and(|t| t.by_labels.contains_key(&s.labels)) || !new_streams.insert(&s.labels) {
                continue;
            }
            let existing = t.map_or(0, |t| t.streams.len());
            if self.opts.max_streams_per_tenant > 0 && existing + new_streams.len() > self.opts.max_streams_per_tenant {
                return Err(StoreError::StreamLimit {
                    tenant: tenant.to_string(),
                    limit: self.opts.max_streams_per_tenant,
                    stream: s.labels.to_string(),
                });
            }
            for (k, v) in s.labels.iter() {
                let known = t.and_then(|t| t.postings.get(k));
                if known.is_some_and(|m| m.contains_key(v)) {
                    continue;
                }
                let added = new_values.entry(k).or_default();
                added.insert(v);
                let count = known.map_or(0, BTreeMap::len) + added.len();
                if self.opts.max_label_values_per_tenant > 0 && count > self.opts.max_label_values_per_tenant {
                    return Err(StoreError::Cardinality {
                        tenant: tenant.to_string(),
                        label: k.to_string(),
                        limit: self.opts.max_label_values_per_tenant,
                        stream: s.labels.to_string(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Cuts a stream's head into a chunk when it is big or old enough (or `force`).
    fn maybe_cut(&self, inner: &mut Inner, tenant: &str, id: u32, force: bool) -> Result<(), StoreError> {
        let Some(t) = inner.tenants.get_mut(tenant) else { return Ok(()) };
        let st = &mut t.streams[id as usize];
        let h = &st.head;
        if h.entries.is_empty() {
            return Ok(());
        }
        let full = h.bytes >= self.opts.chunk_target_size || h.max_ts - h.min_ts >= self.opts.chunk_max_age;
        if !force && !full {
            return Ok(());
        }
        let mut head = std::mem::take(&mut st.head);
        if !head.sorted {
            head.entries.sort_by_key(|e| e.ts);
        }
        let labels = st.labels.to_string();
        let wal_seq = st.last_seq;
        // A head spanning more than the max age is split so that chunks stay time-bounded.
        let mut pieces: Vec<&[Entry]> = Vec::new();
        let mut start = 0;
        for i in 1..=head.entries.len() {
            let end_here = i == head.entries.len()
                || head.entries[i].ts - head.entries[start].ts >= self.opts.chunk_max_age
                || head.entries[start..i].iter().map(|e| e.line.len()).sum::<usize>() >= self.opts.chunk_target_size;
            if end_here {
                pieces.push(&head.entries[start..i]);
                start = i;
            }
        }
        let mut metas = Vec::with_capacity(pieces.len());
        for p in pieces {
            metas.push(self.write_chunk(inner, tenant, &labels, p, wal_seq)?);
        }
        if let Some(t) = inner.tenants.get_mut(tenant) {
            let st = &mut t.streams[id as usize];
            for m in metas {
                st.chunks.push(Arc::new(m));
            }
            st.chunks.sort_by_key(|c| (c.min_ts, c.max_ts));
            st.flushed_seq = wal_seq;
        }
        Ok(())
    }

    /// Compresses entries (sorted) and appends the chunk record to the active file.
    fn write_chunk(
        &self,
        inner: &mut Inner,
        tenant: &str,
        labels: &str,
        entries: &[Entry],
        wal_seq: u64,
    ) -> Result<ChunkMeta, StoreError> {
        let body = chunk::encode(entries);
        let payload = chunk::compress(&body, self.opts.zstd_level)?;
        let (min_ts, max_ts) = (entries.first().map_or(0, |e| e.ts), entries.last().map_or(0, |e| e.ts));
        let (rec, payload_offset) =
            chunk_record(tenant, labels, min_ts, max_ts, entries.len(), body.len(), wal_seq, &payload);
        if inner.files.get(&inner.active).is_some_and(|f| f.size >= self.opts.chunk_file_size) {
            self.seal_active(inner)?;
        }
        let active = inner.active;
        let f = inner.files.get_mut(&active).ok_or_else(|| StoreError::Corrupt {
            path: self.dir.display().to_string(),
            msg: "no active chunk file".into(),
        })?;
        let offset = f.size;
        (&*f.file).write_all(&rec)?;
        f.size += rec.len() as u64;
        f.min_ts = f.min_ts.min(min_ts);
        f.max_ts = f.max_ts.max(max_ts);
        f.chunks += 1;
        inner.dirty = true;
        Ok(ChunkMeta {
            min_ts,
            max_ts,
            entries: entries.len() as u32,
            raw_len: body.len() as u32,
            file: active,
            offset: offset + payload_offset,
            len: payload.len() as u32,
            wal_seq,
        })
    }

    fn seal_active(&self, inner: &mut Inner) -> Result<(), StoreError> {
        if let Some(f) = inner.files.get(&inner.active) {
            f.file.sync_data()?;
        }
        let n = inner.files.keys().next_back().copied().unwrap_or(0) + 1;
        let path = self.dir.join("chunks").join(format!("{n:08}.chunks"));
        let f = OpenOptions::new().create(true).read(true).append(true).open(&path)?;
        File::open(self.dir.join("chunks"))?.sync_all()?;
        inner
            .files
            .insert(n, ChunkFile { file: Arc::new(f), path, size: 0, min_ts: i64::MAX, max_ts: i64::MIN, chunks: 0 });
        inner.active = n;
        Ok(())
    }

    /// Cuts every head, fsyncs chunk data and starts a new WAL.
    fn checkpoint(&self, inner: &mut Inner) -> Result<(), StoreError> {
        let names: Vec<String> = inner.tenants.keys().cloned().collect();
        for tn in names {
            let n = inner.tenants.get(&tn).map_or(0, |t| t.streams.len());
            for id in 0..n {
                self.maybe_cut(inner, &tn, id as u32, true)?;
            }
        }
        if inner.dirty {
            if let Some(f) = inner.files.get(&inner.active) {
                f.file.sync_data()?;
            }
            inner.dirty = false;
        }
        let next = inner.next_seq;
        inner.wal.rotate(next)?;
        Ok(())
    }

    /// Makes everything durable in chunk files and truncates the WAL (a clean shutdown calls it).
    pub fn flush(&self) -> Result<(), StoreError> {
        let mut g = lock(&self.inner);
        self.checkpoint(&mut g)
    }

    /// Cuts heads that have reached their size or age; for a periodic tick.
    pub fn cut_due(&self) -> Result<(), StoreError> {
        let mut g = lock(&self.inner);
        let inner = &mut *g;
        let names: Vec<String> = inner.tenants.keys().cloned().collect();
        for tn in names {
            let n = inner.tenants.get(&tn).map_or(0, |t| t.streams.len());
            for id in 0..n {
                self.maybe_cut(inner, &tn, id as u32, false)?;
            }
        }
        Ok(())
    }

    /// A [`LogSource`] over one tenant's logs.
    pub fn reader(&self, tenant: &str) -> Reader<'_> {
        Reader { store: self, tenant: tenant.to_string() }
    }

    /// Label names of the tenant's streams with data in `[start, end)`.
    pub fn label_names(&self, tenant: &str, start: i64, end: i64) -> Vec<String> {
        let g = lock(&self.inner);
        let Some(t) = g.tenants.get(tenant) else { return Vec::new() };
        let mut out: BTreeSet<&str> = BTreeSet::new();
        for s in t.streams.iter().filter(|s| s.overlaps(start, end)) {
            out.extend(s.labels.iter().map(|(k, _)| k));
        }
        out.into_iter().map(str::to_string).collect()
    }

    /// Values of a label among streams matching `matchers` (all when empty) in `[start, end)`.
    pub fn label_values(&self, tenant: &str, name: &str, matchers: &[Matcher], start: i64, end: i64) -> Vec<String> {
        let g = lock(&self.inner);
        let Some(t) = g.tenants.get(tenant) else { return Vec::new() };
        let ids = t.select(matchers);
        let mut out: BTreeSet<&str> = BTreeSet::new();
        for id in ids {
            let s = &t.streams[id as usize];
            if s.overlaps(start, end)
                && let Some(v) = s.labels.get(name)
            {
                out.insert(v);
            }
        }
        out.into_iter().map(str::to_string).collect()
    }

    /// Label sets of streams matching any of the selectors (Loki's `/series` takes several
    /// `match[]`), with data in `[start, end)`.
    pub fn series(&self, tenant: &str, selectors: &[Vec<Matcher>], start: i64, end: i64) -> Vec<Labels> {
        let g = lock(&self.inner);
        let Some(t) = g.tenants.get(tenant) else { return Vec::new() };
        let mut out: BTreeSet<Labels> = BTreeSet::new();
        for sel in selectors {
            for id in t.select(sel) {
                let s = &t.streams[id as usize];
                if s.overlaps(start, end) {
                    out.insert(s.labels.clone());
                }
            }
        }
        out.into_iter().collect()
    }

    /// `/index/stats`: streams, chunks, uncompressed bytes and entries for a selector and range.
    pub fn index_stats(&self, tenant: &str, matchers: &[Matcher], start: i64, end: i64) -> IndexStats {
        let g = lock(&self.inner);
        let mut out = IndexStats::default();
        let Some(t) = g.tenants.get(tenant) else { return out };
        for id in t.select(matchers) {
            let s = &t.streams[id as usize];
            if !s.overlaps(start, end) {
                continue;
            }
            out.streams += 1;
            for c in s.chunks.iter().filter(|c| c.min_ts < end && c.max_ts >= start) {
                out.chunks += 1;
                out.entries += u64::from(c.entries);
                out.bytes += u64::from(c.raw_len);
            }
            let head_in: Vec<&Entry> = s.head.entries.iter().filter(|e| e.ts >= start && e.ts < end).collect();
            if !head_in.is_empty() {
                out.chunks += 1;
                out.entries += head_in.len() as u64;
                out.bytes += head_in.iter().map(|e| e.line.len() as u64).sum::<u64>();
            }
        }
        out
    }

    /// Whole-store figures.
    pub fn stats(&self) -> StoreStats {
        let g = lock(&self.inner);
        let mut s = StoreStats { tenants: g.tenants.len() as u64, wal_bytes: g.wal.size(), ..Default::default() };
        for t in g.tenants.values() {
            s.streams += t.streams.len() as u64;
            for st in &t.streams {
                s.chunks += st.chunks.len() as u64;
                for c in &st.chunks {
                    s.entries += u64::from(c.entries);
                    s.raw_bytes += u64::from(c.raw_len);
                }
                s.entries += st.head.entries.len() as u64;
                s.head_bytes += st.head.bytes as u64;
            }
        }
        s.raw_bytes += s.head_bytes;
        s.files = g.files.len() as u64;
        s.stored_bytes = g.files.values().map(|f| f.size).sum();
        s
    }

    /// Deletes data older than `now - max_age` and, oldest first, sealed files beyond
    /// `max_bytes` on disk. Granularity is the chunk file: a file goes when all of it is due.
    /// Chunks past the age are hidden from queries at once.
    pub fn apply_retention(
        &self,
        now: i64,
        max_age: Option<i64>,
        max_bytes: Option<u64>,
    ) -> Result<RetentionReport, StoreError> {
        let mut g = lock(&self.inner);
        let inner = &mut *g;
        let mut report = RetentionReport::default();
        let mut doomed: BTreeSet<u64> = BTreeSet::new();
        if let Some(age) = max_age {
            let cutoff = now.saturating_sub(age);
            for t in inner.tenants.values_mut() {
                for s in &mut t.streams {
                    let before = s.chunks.len();
                    s.chunks.retain(|c| c.max_ts >= cutoff);
                    report.chunks_deleted += (before - s.chunks.len()) as u64;
                    s.head.entries.retain(|e| e.ts >= cutoff);
                    recompute_head(&mut s.head);
                }
            }
            for (n, f) in &inner.files {
                if *n != inner.active && f.chunks > 0 && f.max_ts < cutoff {
                    doomed.insert(*n);
                }
            }
        }
        if let Some(limit) = max_bytes {
            let mut total: u64 = inner.files.values().map(|f| f.size).sum();
            // Oldest data first.
            let mut order: Vec<(&u64, &ChunkFile)> = inner.files.iter().filter(|(n, _)| **n != inner.active).collect();
            order.sort_by_key(|(n, f)| (f.max_ts, **n));
            for (n, f) in order {
                if total <= limit {
                    break;
                }
                if doomed.insert(*n) {
                    total = total.saturating_sub(f.size);
                }
            }
        }
        if doomed.is_empty() {
            return Ok(report);
        }
        for t in inner.tenants.values_mut() {
            for s in &mut t.streams {
                let before = s.chunks.len();
                s.chunks.retain(|c| !doomed.contains(&c.file));
                report.chunks_deleted += (before - s.chunks.len()) as u64;
            }
        }
        for n in doomed {
            if let Some(f) = inner.files.remove(&n) {
                report.files_deleted += 1;
                report.bytes_deleted += f.size;
                fs::remove_file(&f.path)?;
            }
        }
        Ok(report)
    }

    /// Rewrites sealed chunk files, merging each stream's adjacent small chunks up to the
    /// target size and dropping chunks no longer referenced (retention).
    pub fn compact(&self) -> Result<CompactReport, StoreError> {
        let mut g = lock(&self.inner);
        let inner = &mut *g;
        let sealed: BTreeSet<u64> = inner.files.keys().copied().filter(|n| *n != inner.active).collect();
        let mut report = CompactReport::default();
        if sealed.is_empty() {
            return Ok(report);
        }
        // The new file is written aside and becomes visible by rename once complete.
        let n = inner.files.keys().next_back().copied().unwrap_or(0) + 1;
        let final_path = self.dir.join("chunks").join(format!("{n:08}.chunks"));
        let tmp_path = final_path.with_extension("tmp");
        let tmp = OpenOptions::new().create(true).truncate(true).read(true).write(true).open(&tmp_path)?;
        let mut out = CompactOut { file: tmp, size: 0, min_ts: i64::MAX, max_ts: i64::MIN, chunks: 0 };
        let mut replacements: Vec<(String, u32, Vec<ChunkMeta>)> = Vec::new();
        let target = self.opts.chunk_target_size;
        for (tn, t) in &inner.tenants {
            for (id, s) in t.streams.iter().enumerate() {
                let old: Vec<&Arc<ChunkMeta>> = s.chunks.iter().filter(|c| sealed.contains(&c.file)).collect();
                if old.is_empty() {
                    continue;
                }
                report.chunks_before += old.len() as u64;
                // Groups of consecutive chunks whose merged size stays under the target.
                let mut groups: Vec<Vec<&Arc<ChunkMeta>>> = Vec::new();
                let mut acc = 0usize;
                for c in old {
                    if groups.is_empty() || acc + c.raw_len as usize > target {
                        groups.push(Vec::new());
                        acc = 0;
                    }
                    acc += c.raw_len as usize;
                    if let Some(gr) = groups.last_mut() {
                        gr.push(c);
                    }
                }
                let labels = s.labels.to_string();
                let mut metas = Vec::new();
                for gr in groups {
                    let mut entries: Vec<Entry> = Vec::new();
                    for c in &gr {
                        let d = read_chunk(&inner.files, c)?;
                        for i in 0..d.len() {
                            entries.push(Entry {
                                ts: d.ts[i],
                                line: d.line(i).to_string(),
                                metadata: d.metadata(i).to_vec(),
                            });
                        }
                    }
                    entries.sort_by_key(|e| e.ts);
                    let wal_seq = gr.iter().map(|c| c.wal_seq).max().unwrap_or(0);
                    metas.push(out.write(self.opts.zstd_level, tn, &labels, &entries, wal_seq, n)?);
                }
                report.chunks_after += metas.len() as u64;
                replacements.push((tn.clone(), id as u32, metas));
            }
        }
        out.file.sync_all()?;
        fs::rename(&tmp_path, &final_path)?;
        File::open(self.dir.join("chunks"))?.sync_all()?;
        // Swap the index over to the new file, then delete the old ones.
        for (tn, id, metas) in replacements {
            if let Some(t) = inner.tenants.get_mut(&tn) {
                let s = &mut t.streams[id as usize];
                s.chunks.retain(|c| !sealed.contains(&c.file));
                s.chunks.extend(metas.into_iter().map(Arc::new));
                s.chunks.sort_by_key(|c| (c.min_ts, c.max_ts));
            }
        }
        let file = OpenOptions::new().read(true).append(true).open(&final_path)?;
        inner.files.insert(
            n,
            ChunkFile {
                file: Arc::new(file),
                path: final_path,
                size: out.size,
                min_ts: out.min_ts,
                max_ts: out.max_ts,
                chunks: out.chunks,
            },
        );
        for old in sealed {
            if let Some(f) = inner.files.remove(&old) {
                report.files_rewritten += 1;
                fs::remove_file(&f.path)?;
            }
        }
        // Later chunks must land after the compacted file in numbering order: start a new
        // active file so the compacted one counts as sealed.
        self.seal_active(inner)?;
        Ok(report)
    }
}

struct CompactOut {
    file: File,
    size: u64,
    min_ts: i64,
    max_ts: i64,
    chunks: usize,
}

impl CompactOut {
    fn write(
        &mut self,
        level: i32,
        tenant: &str,
        labels: &str,
        entries: &[Entry],
        wal_seq: u64,
        file_no: u64,
    ) -> Result<ChunkMeta, StoreError> {
        let body = chunk::encode(entries);
        let payload = chunk::compress(&body, level)?;
        let (min_ts, max_ts) = (entries.first().map_or(0, |e| e.ts), entries.last().map_or(0, |e| e.ts));
        let rec = chunk_record(tenant, labels, min_ts, max_ts, entries.len(), body.len(), wal_seq, &payload);
        let offset = self.size + rec.1;
        self.file.write_all(&rec.0)?;
        self.size += rec.0.len() as u64;
        self.min_ts = self.min_ts.min(min_ts);
        self.max_ts = self.max_ts.max(max_ts);
        self.chunks += 1;
        Ok(ChunkMeta {
            min_ts,
            max_ts,
            entries: entries.len() as u32,
            raw_len: body.len() as u32,
            file: file_no,
            offset,
            len: payload.len() as u32,
            wal_seq,
        })
    }
}

/// Builds a chunk record; returns it and the payload's offset within it.
#[allow(clippy::too_many_arguments)]
fn chunk_record(
    tenant: &str,
    labels: &str,
    min_ts: i64,
    max_ts: i64,
    n: usize,
    raw_len: usize,
    wal_seq: u64,
    payload: &[u8],
) -> (Vec<u8>, u64) {
    let mut header = Vec::with_capacity(64 + labels.len());
    put_bytes(&mut header, tenant.as_bytes());
    put_bytes(&mut header, labels.as_bytes());
    put_varint(&mut header, min_ts as u64);
    put_varint(&mut header, max_ts as u64);
    put_varint(&mut header, n as u64);
    put_varint(&mut header, raw_len as u64);
    put_varint(&mut header, wal_seq);
    put_varint(&mut header, payload.len() as u64);
    let mut rec = Vec::with_capacity(header.len() + payload.len() + 16);
    rec.extend_from_slice(CHUNK_MAGIC);
    rec.extend_from_slice(&(header.len() as u32).to_le_bytes());
    rec.extend_from_slice(&crc32fast::hash(&header).to_le_bytes());
    rec.extend_from_slice(&header);
    let off = rec.len() as u64;
    rec.extend_from_slice(payload);
    rec.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    (rec, off)
}

fn head_append(h: &mut Head, e: Entry) {
    if h.entries.is_empty() {
        h.min_ts = e.ts;
        h.max_ts = e.ts;
        h.sorted = true;
    } else {
        if e.ts < h.max_ts {
            h.sorted = false;
        }
        h.min_ts = h.min_ts.min(e.ts);
        h.max_ts = h.max_ts.max(e.ts);
    }
    h.bytes += e.line.len();
    h.entries.push(e);
}

fn recompute_head(h: &mut Head) {
    h.bytes = h.entries.iter().map(|e| e.line.len()).sum();
    h.min_ts = h.entries.iter().map(|e| e.ts).min().unwrap_or(0);
    h.max_ts = h.entries.iter().map(|e| e.ts).max().unwrap_or(0);
}

/// Reads a chunk file's headers into the index. Returns the file's description and the highest
/// WAL sequence its chunks cover. A torn record at the tail of the newest file (a crash while
/// cutting) is cut off; anywhere else it is corruption.
fn load_chunk_file(
    f: &File,
    path: &Path,
    n: u64,
    is_last: bool,
    tenants: &mut HashMap<String, Tenant>,
) -> Result<(ChunkFile, u64), StoreError> {
    let len = f.metadata()?.len();
    let mut r = io::BufReader::new(f);
    r.seek(SeekFrom::Start(0))?;
    let mut pos = 0u64;
    let mut max_seq = 0;
    let mut cf = ChunkFile {
        file: Arc::new(f.try_clone()?),
        path: path.to_path_buf(),
        size: 0,
        min_ts: i64::MAX,
        max_ts: i64::MIN,
        chunks: 0,
    };
    let corrupt = |msg: &str| StoreError::Corrupt { path: path.display().to_string(), msg: msg.to_string() };
    while pos < len {
        let mut fixed = [0u8; 12];
        let ok = r.read_exact(&mut fixed).is_ok() && &fixed[..4] == CHUNK_MAGIC;
        let hlen = u32::from_le_bytes([fixed[4], fixed[5], fixed[6], fixed[7]]) as usize;
        let hcrc = u32::from_le_bytes([fixed[8], fixed[9], fixed[10], fixed[11]]);
        let mut header = vec![0u8; if ok && hlen < 1 << 20 { hlen } else { 0 }];
        let ok = ok && hlen < 1 << 20 && r.read_exact(&mut header).is_ok() && crc32fast::hash(&header) == hcrc;
        let parsed = if ok { parse_header(&header) } else { None };
        let Some(h) = parsed else {
            if is_last {
                f.set_len(pos)?;
                break;
            }
            return Err(corrupt("bad chunk header"));
        };
        let payload_off = pos + 12 + hlen as u64;
        let end = payload_off + h.payload_len + 4;
        if end > len {
            if is_last {
                f.set_len(pos)?;
                break;
            }
            return Err(corrupt("truncated chunk"));
        }
        r.seek(SeekFrom::Start(end))?;
        let labels = Labels::parse(&h.labels).map_err(|e| corrupt(&e.to_string()))?;
        let t = tenants.entry(h.tenant).or_default();
        let id = t.stream_id(&labels);
        let s = &mut t.streams[id as usize];
        s.chunks.push(Arc::new(ChunkMeta {
            min_ts: h.min_ts,
            max_ts: h.max_ts,
            entries: h.entries as u32,
            raw_len: h.raw_len as u32,
            file: n,
            offset: payload_off,
            len: h.payload_len as u32,
            wal_seq: h.wal_seq,
        }));
        s.chunks.sort_by_key(|c| (c.min_ts, c.max_ts));
        s.flushed_seq = s.flushed_seq.max(h.wal_seq);
        s.last_seq = s.last_seq.max(h.wal_seq);
        max_seq = max_seq.max(h.wal_seq);
        cf.min_ts = cf.min_ts.min(h.min_ts);
        cf.max_ts = cf.max_ts.max(h.max_ts);
        cf.chunks += 1;
        pos = end;
    }
    cf.size = pos;
    Ok((cf, max_seq))
}

struct Header {
    tenant: String,
    labels: String,
    min_ts: i64,
    max_ts: i64,
    entries: u64,
    raw_len: u64,
    wal_seq: u64,
    payload_len: u64,
}

fn parse_header(b: &[u8]) -> Option<Header> {
    let mut p = 0;
    Some(Header {
        tenant: get_str(b, &mut p)?.to_string(),
        labels: get_str(b, &mut p)?.to_string(),
        min_ts: get_varint(b, &mut p)? as i64,
        max_ts: get_varint(b, &mut p)? as i64,
        entries: get_varint(b, &mut p)?,
        raw_len: get_varint(b, &mut p)?,
        wal_seq: get_varint(b, &mut p)?,
        payload_len: get_varint(b, &mut p)?,
    })
}

fn read_chunk(files: &BTreeMap<u64, ChunkFile>, c: &ChunkMeta) -> Result<chunk::Decoded, SourceError> {
    let f = files.get(&c.file).ok_or_else(|| SourceError::Corrupt(format!("chunk file {} is gone", c.file)))?;
    read_chunk_from(&f.file, c)
}

fn read_chunk_from(f: &File, c: &ChunkMeta) -> Result<chunk::Decoded, SourceError> {
    let mut buf = vec![0u8; c.len as usize + 4];
    f.read_exact_at(&mut buf, c.offset)?;
    let crc_at = c.len as usize;
    let crc = u32::from_le_bytes([buf[crc_at], buf[crc_at + 1], buf[crc_at + 2], buf[crc_at + 3]]);
    buf.truncate(crc_at);
    if crc32fast::hash(&buf) != crc {
        return Err(SourceError::Corrupt(format!("checksum mismatch at offset {}", c.offset)));
    }
    let raw = chunk::decompress(&buf, c.raw_len as usize)?;
    chunk::decode(raw).ok_or_else(|| SourceError::Corrupt(format!("undecodable chunk at offset {}", c.offset)))
}

/// One tenant's view of the store, for the evaluator.
pub struct Reader<'a> {
    store: &'a Store,
    tenant: String,
}

impl LogSource for Reader<'_> {
    fn select(&self, matchers: &[Matcher], start: i64, end: i64) -> Result<Vec<SourceStream>, SourceError> {
        let g = lock(&self.store.inner);
        let Some(t) = g.tenants.get(&self.tenant) else { return Ok(Vec::new()) };
        Ok(t.select(matchers)
            .into_iter()
            .filter(|&id| t.streams[id as usize].overlaps(start, end))
            .map(|id| SourceStream { id: u64::from(id), labels: t.streams[id as usize].labels.clone() })
            .collect())
    }

    fn scan(
        &self,
        stream: &SourceStream,
        start: i64,
        end: i64,
        hint: &ScanHint,
        f: &mut dyn FnMut(EntryRef<'_>) -> ControlFlow<()>,
    ) -> Result<(), SourceError> {
        // Under the lock: which chunks, their files, and a copy of the head's entries in range.
        // The reading and decompressing happen without it, so pushes are not held up.
        let (chunks, head) = {
            let g = lock(&self.store.inner);
            let Some(t) = g.tenants.get(&self.tenant) else { return Ok(()) };
            let Some(s) = t.streams.get(stream.id as usize) else { return Ok(()) };
            let chunks: Vec<(Arc<ChunkMeta>, Arc<File>)> = s
                .chunks
                .iter()
                .filter(|c| c.min_ts < end && c.max_ts >= start)
                .filter_map(|c| g.files.get(&c.file).map(|f| (c.clone(), f.file.clone())))
                .collect();
            let mut head: Vec<Entry> = s.head.entries.iter().filter(|e| e.ts >= start && e.ts < end).cloned().collect();
            if !s.head.sorted {
                head.sort_by_key(|e| e.ts);
            }
            (chunks, head)
        };
        let head_min = head.first().map_or(i64::MAX, |e| e.ts);
        // Chunks (sorted by min_ts) that do not overlap each other nor the head are streamed
        // one by one; overlapping ones (out-of-order pushes) are merged in memory.
        let mut disjoint = true;
        for w in chunks.windows(2) {
            if w[1].0.min_ts <= w[0].0.max_ts {
                disjoint = false;
            }
        }
        if chunks.last().is_some_and(|c| c.0.max_ts >= head_min) {
            disjoint = false;
        }
        let pass = |line: &str| hint.required.iter().all(|r| r.find(line.as_bytes()).is_some());
        if disjoint {
            // Decompression dominates a scan: chunks are decoded (and pre-filtered) a group at
            // a time on scoped threads, one per core, then handed to `f` in order.
            let load = |c: &ChunkMeta, file: &File| -> Result<(chunk::Decoded, Vec<usize>), SourceError> {
                let d = read_chunk_from(file, c)?;
                let a = d.ts.partition_point(|&t| t < start);
                let b = d.ts.partition_point(|&t| t < end);
                let idx: Vec<usize> =
                    if hint.required.is_empty() { (a..b).collect() } else { d.matching(&hint.required, a..b) };
                Ok((d, idx))
            };
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8);
            for group in chunks.chunks(threads) {
                let loaded: Vec<Result<(chunk::Decoded, Vec<usize>), SourceError>> = if group.len() == 1 {
                    vec![load(&group[0].0, &group[0].1)]
                } else {
                    std::thread::scope(|sc| {
                        let handles: Vec<_> = group[1..].iter().map(|(c, file)| sc.spawn(|| load(c, file))).collect();
                        let mut out = vec![load(&group[0].0, &group[0].1)];
                        for h in handles {
                            out.push(
                                h.join()
                                    .unwrap_or_else(|_| Err(SourceError::Corrupt("a decoder thread panicked".into()))),
                            );
                        }
                        out
                    })
                };
                for r in loaded {
                    let (d, idx) = r?;
                    for i in idx {
                        if f(EntryRef { ts: d.ts[i], line: d.line(i), metadata: d.metadata(i) }).is_break() {
                            return Ok(());
                        }
                    }
                }
            }
            for e in &head {
                if pass(&e.line) && f(EntryRef { ts: e.ts, line: &e.line, metadata: &e.metadata }).is_break() {
                    return Ok(());
                }
            }
            return Ok(());
        }
        let mut all: Vec<Entry> = Vec::new();
        for (c, file) in &chunks {
            let d = read_chunk_from(file, c)?;
            for i in 0..d.len() {
                if d.ts[i] >= start && d.ts[i] < end && pass(d.line(i)) {
                    all.push(Entry { ts: d.ts[i], line: d.line(i).to_string(), metadata: d.metadata(i).to_vec() });
                }
            }
        }
        all.extend(head.into_iter().filter(|e| pass(&e.line)));
        all.sort_by_key(|e| e.ts);
        for e in &all {
            if f(EntryRef { ts: e.ts, line: &e.line, metadata: &e.metadata }).is_break() {
                break;
            }
        }
        Ok(())
    }
}
