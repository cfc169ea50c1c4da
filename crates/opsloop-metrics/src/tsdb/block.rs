//! Immutable blocks: one directory per time range, `[minTime, maxTime)`, holding
//!
//! - `chunks`: a 5-byte header (`OLCH`, version 1) then each chunk as a uvarint length, the XOR
//!   chunk bytes and a CRC-32 (LE) of them; a chunk is addressed by its byte offset;
//! - `index`: a header (`OLIX`, version 1), the symbol table (every label name and value once,
//!   sorted), the series in label order (label pairs as symbol numbers, then each chunk's time
//!   range and offset, delta-encoded), the postings (for every name=value pair the series
//!   numbers, delta-encoded), and a CRC-32 of all of it;
//! - `meta.json`: Prometheus's field names (`minTime`, `maxTime`, `stats`, `compaction`).
//!
//! A block is written under `<name>.tmp` and renamed into place once synced, so a crash never
//! leaves half a block under a real name. Unlike Prometheus the index is read into memory at
//! open (no mmap: unsafe code is forbidden here); chunks are read from disk per query.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::encoding::{Decoder, put_str, put_uvarint, put_varint};
use super::head::decode_range;
use super::postings::{Postings, SeriesId};
use super::wal::sync_dir;
use crate::labels::{Labels, Matcher};
use crate::storage::{Sample, StorageError, Timestamp};

const CHUNKS_MAGIC: &[u8; 4] = b"OLCH";
const INDEX_MAGIC: &[u8; 4] = b"OLIX";
const VERSION: u8 = 1;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BlockStats {
    pub num_samples: u64,
    pub num_series: u64,
    pub num_chunks: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Compaction {
    pub level: u32,
    /// The head-cut blocks whose data this block holds.
    pub sources: Vec<String>,
    /// The blocks merged into this one; any still on disk at open are leftovers of a crash.
    #[serde(default)]
    pub parents: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct BlockMeta {
    pub ulid: String,
    pub min_time: Timestamp,
    pub max_time: Timestamp,
    pub stats: BlockStats,
    pub compaction: Compaction,
    pub version: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkMeta {
    pub min_t: Timestamp,
    pub max_t: Timestamp,
    pub offset: u64,
}

#[derive(Debug, Clone)]
pub struct BlockSeries {
    pub labels: Labels,
    pub chunks: Vec<ChunkMeta>,
}

/// A block's directory name: its range, with the sign bit flipped so names sort by time.
pub fn block_name(min_t: Timestamp, max_t: Timestamp) -> String {
    format!("{:016x}-{:016x}", (min_t as u64) ^ (1 << 63), (max_t as u64) ^ (1 << 63))
}

#[derive(Debug)]
pub struct Block {
    pub dir: PathBuf,
    pub meta: BlockMeta,
    series: Vec<BlockSeries>,
    postings: Postings,
    chunks: File,
    chunks_len: u64,
    size: u64,
}

fn corrupt(path: &Path, what: impl std::fmt::Display) -> StorageError {
    StorageError::Corrupt(format!("{}: {what}", path.display()))
}

impl Block {
    pub fn open(dir: &Path) -> Result<Self, StorageError> {
        let meta_path = dir.join("meta.json");
        let meta: BlockMeta = serde_json::from_slice(&fs::read(&meta_path)?).map_err(|e| corrupt(&meta_path, e))?;
        let index_path = dir.join("index");
        let index = fs::read(&index_path)?;
        let (series, postings) = read_index(&index).map_err(|e| corrupt(&index_path, e))?;
        let chunks_path = dir.join("chunks");
        let chunks = File::open(&chunks_path)?;
        let chunks_len = chunks.metadata()?.len();
        let mut header = [0u8; 5];
        chunks.read_exact_at(&mut header, 0).map_err(|e| corrupt(&chunks_path, e))?;
        if &header[..4] != CHUNKS_MAGIC || header[4] != VERSION {
            return Err(corrupt(&chunks_path, "not a chunks file of version 1"));
        }
        for s in &series {
            if s.chunks.iter().any(|c| c.offset >= chunks_len) {
                return Err(corrupt(&index_path, format!("chunk of {} beyond the chunks file", s.labels)));
            }
        }
        let size = chunks_len + index.len() as u64 + fs::metadata(&meta_path)?.len();
        Ok(Self { dir: dir.to_path_buf(), meta, series, postings, chunks, chunks_len, size })
    }

    pub fn name(&self) -> &str {
        &self.meta.ulid
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn series(&self) -> &[BlockSeries] {
        &self.series
    }

    pub fn overlaps(&self, mint: Timestamp, maxt: Timestamp) -> bool {
        self.meta.min_time <= maxt && self.meta.max_time > mint
    }

    pub fn read_chunk(&self, meta: &ChunkMeta) -> Result<Vec<u8>, StorageError> {
        let path = || self.dir.join("chunks");
        let mut head = [0u8; 10];
        let avail = (self.chunks_len - meta.offset).min(10) as usize;
        self.chunks.read_exact_at(&mut head[..avail], meta.offset)?;
        let mut d = Decoder::new(&head[..avail]);
        let len = d.uvarint().map_err(|e| corrupt(&path(), format!("chunk at {}: {e}", meta.offset)))?;
        let start = meta.offset + d.pos() as u64;
        if len.saturating_add(4) > self.chunks_len.saturating_sub(start) {
            return Err(corrupt(&path(), format!("chunk at {} runs past the end of the file", meta.offset)));
        }
        let mut buf = vec![0u8; len as usize + 4];
        self.chunks.read_exact_at(&mut buf, start)?;
        let crc_at = buf.len() - 4;
        let crc = u32::from_le_bytes([buf[crc_at], buf[crc_at + 1], buf[crc_at + 2], buf[crc_at + 3]]);
        buf.truncate(crc_at);
        if crc32fast::hash(&buf) != crc {
            return Err(corrupt(&path(), format!("checksum mismatch in chunk at {}", meta.offset)));
        }
        Ok(buf)
    }

    fn ids(&self, matchers: &[Matcher]) -> Vec<SeriesId> {
        self.postings.select(matchers)
    }

    /// Series matching `matchers` with their samples in `[mint, maxt]`, in label order.
    pub fn select(
        &self,
        matchers: &[Matcher],
        mint: Timestamp,
        maxt: Timestamp,
    ) -> Result<Vec<(Labels, Vec<Sample>)>, StorageError> {
        let mut out = Vec::new();
        for id in self.ids(matchers) {
            let Some(s) = self.series.get(id as usize) else { continue };
            let mut samples = Vec::new();
            for c in s.chunks.iter().filter(|c| c.min_t <= maxt && c.max_t >= mint) {
                let bytes = self.read_chunk(c)?;
                decode_range(&bytes, mint, maxt, &mut samples)
                    .map_err(|e| corrupt(&self.dir.join("chunks"), format!("chunk at {}: {e}", c.offset)))?;
            }
            if !samples.is_empty() {
                out.push((s.labels.clone(), samples));
            }
        }
        Ok(out)
    }

    pub fn label_names(&self, matchers: &[Matcher], out: &mut BTreeSet<String>) {
        if matchers.is_empty() {
            out.extend(self.postings.names().map(str::to_owned));
            return;
        }
        for id in self.ids(matchers) {
            if let Some(s) = self.series.get(id as usize) {
                out.extend(s.labels.iter().map(|l| l.name.clone()));
            }
        }
    }

    pub fn label_values(&self, name: &str, matchers: &[Matcher], out: &mut BTreeSet<String>) {
        if matchers.is_empty() {
            out.extend(self.postings.values(name).map(|(v, _)| v.to_owned()));
            return;
        }
        for id in self.ids(matchers) {
            if let Some(v) = self.series.get(id as usize).and_then(|s| s.labels.get(name)) {
                out.insert(v.to_owned());
            }
        }
    }
}

fn read_index(buf: &[u8]) -> Result<(Vec<BlockSeries>, Postings), String> {
    if buf.len() < 9 || &buf[..4] != INDEX_MAGIC || buf[4] != VERSION {
        return Err("not an index of version 1".into());
    }
    let (body, crc) = buf.split_at(buf.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]) {
        return Err("index checksum mismatch".into());
    }
    let mut d = Decoder::new(&body[5..]);
    let e = |e: super::encoding::DecodeError| e.to_string();
    let n = d.count().map_err(e)?;
    let mut symbols = Vec::with_capacity(n);
    for _ in 0..n {
        symbols.push(d.str().map_err(e)?);
    }
    let sym = |d: &mut Decoder<'_>| -> Result<&str, String> {
        let i = d.uvarint().map_err(e)?;
        symbols.get(i as usize).copied().ok_or_else(|| format!("symbol {i} out of range"))
    };
    let n = d.count().map_err(e)?;
    let mut series = Vec::with_capacity(n);
    for _ in 0..n {
        let nl = d.count().map_err(e)?;
        let mut pairs = Vec::with_capacity(nl);
        for _ in 0..nl {
            pairs.push((sym(&mut d)?, sym(&mut d)?));
        }
        let nc = d.count().map_err(e)?;
        let mut chunks = Vec::with_capacity(nc);
        let mut prev: Option<ChunkMeta> = None;
        for _ in 0..nc {
            let c = match prev {
                None => {
                    let min_t = d.varint().map_err(e)?;
                    let max_t = min_t.wrapping_add(d.uvarint().map_err(e)? as i64);
                    ChunkMeta { min_t, max_t, offset: d.uvarint().map_err(e)? }
                }
                Some(p) => {
                    let min_t = p.max_t.wrapping_add(d.varint().map_err(e)?);
                    let max_t = min_t.wrapping_add(d.uvarint().map_err(e)? as i64);
                    ChunkMeta { min_t, max_t, offset: p.offset.wrapping_add(d.uvarint().map_err(e)?) }
                }
            };
            chunks.push(c);
            prev = Some(c);
        }
        series.push(BlockSeries { labels: Labels::from_pairs(pairs), chunks });
    }
    let mut postings = Postings::default();
    postings.set_all((0..series.len() as SeriesId).collect());
    let n = d.count().map_err(e)?;
    for _ in 0..n {
        let name = sym(&mut d)?.to_owned();
        let value = sym(&mut d)?.to_owned();
        let k = d.count().map_err(e)?;
        let mut ids = Vec::with_capacity(k);
        let mut id = 0u64;
        for i in 0..k {
            let delta = d.uvarint().map_err(e)?;
            if i > 0 && delta == 0 {
                return Err(format!("postings of {name}={value:?} not strictly increasing"));
            }
            id = id.saturating_add(delta);
            if id >= series.len() as u64 {
                return Err(format!("postings of {name}={value:?} name series {id} of {}", series.len()));
            }
            ids.push(id as SeriesId);
        }
        postings.set(name, value, ids);
    }
    if !d.is_empty() {
        return Err("unexpected bytes after the postings".into());
    }
    Ok((series, postings))
}

/// Writes a block: series must come in label order.
#[derive(Debug)]
pub struct BlockWriter {
    tmp: PathBuf,
    dest: PathBuf,
    chunks: BufWriter<File>,
    offset: u64,
    series: Vec<BlockSeries>,
    stats: BlockStats,
}

impl BlockWriter {
    pub fn new(blocks_dir: &Path, name: &str) -> Result<Self, StorageError> {
        let dest = blocks_dir.join(name);
        let tmp = blocks_dir.join(format!("{name}.tmp"));
        if tmp.exists() {
            fs::remove_dir_all(&tmp)?;
        }
        fs::create_dir_all(&tmp)?;
        let mut chunks = BufWriter::with_capacity(1 << 20, File::create(tmp.join("chunks"))?);
        chunks.write_all(CHUNKS_MAGIC)?;
        chunks.write_all(&[VERSION])?;
        Ok(Self { tmp, dest, chunks, offset: 5, series: Vec::new(), stats: BlockStats::default() })
    }

    pub fn add_series<'a>(
        &mut self,
        labels: Labels,
        chunks: impl IntoIterator<Item = (Timestamp, Timestamp, &'a [u8])>,
    ) -> Result<(), StorageError> {
        if self.series.last().is_some_and(|s| s.labels >= labels) {
            return Err(StorageError::Corrupt(format!("block writer: {labels} out of label order")));
        }
        let mut metas = Vec::new();
        let mut head = Vec::with_capacity(10);
        for (min_t, max_t, bytes) in chunks {
            head.clear();
            put_uvarint(&mut head, bytes.len() as u64);
            self.chunks.write_all(&head)?;
            self.chunks.write_all(bytes)?;
            self.chunks.write_all(&crc32fast::hash(bytes).to_le_bytes())?;
            metas.push(ChunkMeta { min_t, max_t, offset: self.offset });
            self.offset += (head.len() + bytes.len() + 4) as u64;
            self.stats.num_chunks += 1;
            self.stats.num_samples += u64::from(u16::from_be_bytes([
                bytes.first().copied().unwrap_or(0),
                bytes.get(1).copied().unwrap_or(0),
            ]));
        }
        if !metas.is_empty() {
            self.stats.num_series += 1;
            self.series.push(BlockSeries { labels, chunks: metas });
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }

    /// Writes the index and meta, syncs, renames into place and opens the block.
    pub fn finish(
        mut self,
        min_time: Timestamp,
        max_time: Timestamp,
        compaction: Compaction,
    ) -> Result<Block, StorageError> {
        self.chunks.flush()?;
        self.chunks.get_ref().sync_all()?;
        let index = encode_index(&self.series);
        let mut f = File::create(self.tmp.join("index"))?;
        f.write_all(&index)?;
        f.sync_all()?;
        let name = self.dest.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let meta = BlockMeta { ulid: name, min_time, max_time, stats: self.stats.clone(), compaction, version: 1 };
        let json = serde_json::to_vec_pretty(&meta).map_err(|e| StorageError::Corrupt(e.to_string()))?;
        let mut f = File::create(self.tmp.join("meta.json"))?;
        f.write_all(&json)?;
        f.sync_all()?;
        sync_dir(&self.tmp)?;
        fs::rename(&self.tmp, &self.dest)?;
        if let Some(parent) = self.dest.parent() {
            sync_dir(parent)?;
        }
        Block::open(&self.dest)
    }
}

fn encode_index(series: &[BlockSeries]) -> Vec<u8> {
    let mut symbols: BTreeSet<&str> = BTreeSet::new();
    for s in series {
        for l in s.labels.iter() {
            symbols.insert(&l.name);
            symbols.insert(&l.value);
        }
    }
    let refs: BTreeMap<&str, u64> = symbols.iter().enumerate().map(|(i, s)| (*s, i as u64)).collect();
    let r = |s: &str| refs.get(s).copied().unwrap_or(0);
    let mut b = Vec::new();
    b.extend_from_slice(INDEX_MAGIC);
    b.push(VERSION);
    put_uvarint(&mut b, symbols.len() as u64);
    for s in &symbols {
        put_str(&mut b, s);
    }
    put_uvarint(&mut b, series.len() as u64);
    let mut postings: BTreeMap<(u64, u64), Vec<u64>> = BTreeMap::new();
    for (i, s) in series.iter().enumerate() {
        put_uvarint(&mut b, s.labels.len() as u64);
        for l in s.labels.iter() {
            let (n, v) = (r(&l.name), r(&l.value));
            put_uvarint(&mut b, n);
            put_uvarint(&mut b, v);
            postings.entry((n, v)).or_default().push(i as u64);
        }
        put_uvarint(&mut b, s.chunks.len() as u64);
        let mut prev: Option<ChunkMeta> = None;
        for c in &s.chunks {
            match prev {
                None => {
                    put_varint(&mut b, c.min_t);
                    put_uvarint(&mut b, c.max_t.wrapping_sub(c.min_t) as u64);
                    put_uvarint(&mut b, c.offset);
                }
                Some(p) => {
                    put_varint(&mut b, c.min_t.wrapping_sub(p.max_t));
                    put_uvarint(&mut b, c.max_t.wrapping_sub(c.min_t) as u64);
                    put_uvarint(&mut b, c.offset.wrapping_sub(p.offset));
                }
            }
            prev = Some(*c);
        }
    }
    put_uvarint(&mut b, postings.len() as u64);
    for ((n, v), ids) in &postings {
        put_uvarint(&mut b, *n);
        put_uvarint(&mut b, *v);
        put_uvarint(&mut b, ids.len() as u64);
        let mut prev = 0;
        for &id in ids {
            put_uvarint(&mut b, id - prev);
            prev = id;
        }
    }
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// Removes a block directory so that a crash midway leaves only a `.tmp` name, which open
/// clears, never a real name with files missing.
pub fn delete_block_dir(dir: &Path) -> Result<(), StorageError> {
    let mut tmp = dir.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    fs::rename(dir, &tmp)?;
    fs::remove_dir_all(&tmp)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tsdb::chunk::XorChunk;

    fn chunk(ts: &[i64]) -> Vec<u8> {
        let mut c = XorChunk::new();
        for &t in ts {
            c.append(t, t as f64).expect("room");
        }
        c.into_bytes()
    }

    #[test]
    fn a_block_round_trips_and_damage_is_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut w = BlockWriter::new(dir.path(), "b").expect("writer");
        let a = Labels::from_pairs([("__name__", "up"), ("job", "a")]);
        let b = Labels::from_pairs([("__name__", "up"), ("job", "b")]);
        let c1 = chunk(&[1, 2, 3]);
        let c2 = chunk(&[10, 20]);
        w.add_series(a.clone(), [(1, 3, &c1[..]), (10, 20, &c2[..])]).expect("add");
        assert!(w.add_series(a.clone(), [(1, 3, &c1[..])]).is_err());
        w.add_series(b.clone(), [(5, 5, &chunk(&[5])[..])]).expect("add");
        let block = w.finish(0, 100, Compaction { level: 1, ..Default::default() }).expect("finish");
        assert_eq!(block.meta.stats, BlockStats { num_samples: 6, num_series: 2, num_chunks: 3 });
        let got = block.select(&[Matcher::equal("job", "a")], 2, 10).expect("select");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1.iter().map(|s| s.t).collect::<Vec<_>>(), vec![2, 3, 10]);
        let reopened = Block::open(&dir.path().join("b")).expect("reopen");
        assert_eq!(reopened.select(&[], 0, 100).expect("select").len(), 2);
        let mut names = BTreeSet::new();
        reopened.label_values("job", &[], &mut names);
        assert_eq!(names.into_iter().collect::<Vec<_>>(), vec!["a", "b"]);

        let index = dir.path().join("b/index");
        let mut bytes = fs::read(&index).expect("read");
        bytes[7] ^= 1;
        fs::write(&index, &bytes).expect("write");
        assert!(matches!(Block::open(&dir.path().join("b")), Err(StorageError::Corrupt(_))));
        bytes[7] ^= 1;
        fs::write(&index, &bytes).expect("write");
        let chunks = dir.path().join("b/chunks");
        let mut bytes = fs::read(&chunks).expect("read");
        bytes[8] ^= 1;
        fs::write(&chunks, &bytes).expect("write");
        let block = Block::open(&dir.path().join("b")).expect("index still fine");
        assert!(matches!(block.select(&[Matcher::equal("job", "a")], 0, 100), Err(StorageError::Corrupt(_))));
        // Every truncation of the index is an error, not a panic.
        let good = encode_index(block.series());
        for cut in 0..good.len() {
            assert!(read_index(&good[..cut]).is_err());
        }
    }
}
