//! The write-ahead log: what the head holds that no block holds yet, so a restart (or a
//! `kill -9`) loses nothing that was acknowledged.
//!
//! `wal/` holds numbered segment files (`00000000`, `00000001`, …) and at most one
//! `checkpoint.NNNNNNNN`, which stands for every segment up to NNNNNNNN: the series still live
//! and their head chunks, as the head was when that segment was closed. Each record is framed
//! as a little-endian `u32` body length, a `u32` CRC-32 of the body, then the body (a type byte
//! and its payload). A record is written with one `write` and synced before the append that
//! produced it returns.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use super::encoding::{DecodeError, Decoder, put_str, put_uvarint, put_varint};
use super::postings::SeriesId;
use crate::labels::Labels;
use crate::storage::{StorageError, Timestamp};

const REC_SERIES: u8 = 1;
const REC_SAMPLES: u8 = 2;
const REC_CHUNK: u8 = 3;
/// Another record, snappy-compressed (Prometheus compresses its WAL the same way by default):
/// a scrape's sample record shrinks by about half, and the WAL is most of the disk a young
/// database takes.
const REC_SNAPPY: u8 = 4;
/// No record decompresses to more than this: a corrupt length cannot make replay allocate
/// without bound.
const MAX_RECORD: usize = 256 << 20;
const HEADER: usize = 8;

#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Series(Vec<(SeriesId, Labels)>),
    Samples(Vec<(SeriesId, Timestamp, f64)>),
    /// A head chunk, only in checkpoints; `open` marks the one still being appended to.
    Chunk {
        id: SeriesId,
        min_t: Timestamp,
        max_t: Timestamp,
        open: bool,
        bytes: Vec<u8>,
    },
}

pub fn encode_series<'a>(series: impl IntoIterator<Item = (SeriesId, &'a Labels)>) -> Vec<u8> {
    let mut b = vec![REC_SERIES];
    for (id, labels) in series {
        put_uvarint(&mut b, u64::from(id));
        put_uvarint(&mut b, labels.len() as u64);
        for l in labels.iter() {
            put_str(&mut b, &l.name);
            put_str(&mut b, &l.value);
        }
    }
    b
}

/// Timestamps are stored as deltas from the previous sample of the record: a scrape's batch
/// shares one timestamp, so most take one byte.
pub fn encode_samples(samples: &[(SeriesId, Timestamp, f64)]) -> Vec<u8> {
    let mut b = Vec::with_capacity(1 + samples.len() * 12);
    b.push(REC_SAMPLES);
    let mut prev_t = 0i64;
    for &(id, t, v) in samples {
        put_uvarint(&mut b, u64::from(id));
        put_varint(&mut b, t.wrapping_sub(prev_t));
        b.extend_from_slice(&v.to_bits().to_le_bytes());
        prev_t = t;
    }
    b
}

pub fn encode_chunk(id: SeriesId, min_t: Timestamp, max_t: Timestamp, open: bool, bytes: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(bytes.len() + 24);
    b.push(REC_CHUNK);
    put_uvarint(&mut b, u64::from(id));
    put_varint(&mut b, min_t);
    put_varint(&mut b, max_t);
    b.push(u8::from(open));
    put_uvarint(&mut b, bytes.len() as u64);
    b.extend_from_slice(bytes);
    b
}

/// `body` compressed, when that saves space (small records stay as they are).
pub fn compress(body: &[u8]) -> Option<Vec<u8>> {
    if body.len() < 64 {
        return None;
    }
    let packed = snap::raw::Encoder::new().compress_vec(body).ok()?;
    (packed.len() + 1 < body.len()).then(|| {
        let mut out = Vec::with_capacity(packed.len() + 1);
        out.push(REC_SNAPPY);
        out.extend_from_slice(&packed);
        out
    })
}

pub fn decode(body: &[u8]) -> Result<Record, DecodeError> {
    if body.first() == Some(&REC_SNAPPY) {
        let packed = &body[1..];
        let size = snap::raw::decompress_len(packed).map_err(|e| DecodeError::Invalid(format!("snappy: {e}")))?;
        if size > MAX_RECORD {
            return Err(DecodeError::Invalid(format!("a compressed record of {size} bytes")));
        }
        let raw = snap::raw::Decoder::new()
            .decompress_vec(packed)
            .map_err(|e| DecodeError::Invalid(format!("snappy: {e}")))?;
        if raw.first() == Some(&REC_SNAPPY) {
            return Err(DecodeError::Invalid("a compressed record inside a compressed record".into()));
        }
        return decode(&raw);
    }
    let mut d = Decoder::new(body);
    match d.u8()? {
        REC_SERIES => {
            let mut out = Vec::new();
            while !d.is_empty() {
                let id = d.u32v()?;
                let n = d.count()?;
                let mut pairs = Vec::with_capacity(n);
                for _ in 0..n {
                    pairs.push((d.str()?, d.str()?));
                }
                out.push((id, Labels::from_pairs(pairs)));
            }
            Ok(Record::Series(out))
        }
        REC_SAMPLES => {
            let mut out = Vec::new();
            let mut t = 0i64;
            while !d.is_empty() {
                let id = d.u32v()?;
                t = t.wrapping_add(d.varint()?);
                let v = f64::from_bits(d.u64_le()?);
                out.push((id, t, v));
            }
            Ok(Record::Samples(out))
        }
        REC_CHUNK => {
            let id = d.u32v()?;
            let min_t = d.varint()?;
            let max_t = d.varint()?;
            let open = d.u8()? != 0;
            let n = d.count()?;
            let bytes = d.bytes(n)?.to_vec();
            Ok(Record::Chunk { id, min_t, max_t, open, bytes })
        }
        other => Err(DecodeError::Invalid(format!("unknown record type {other}"))),
    }
}

fn frame(body: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    out.extend_from_slice(body);
}

fn segment_name(n: u32) -> String {
    format!("{n:08}")
}

fn checkpoint_name(n: u32) -> String {
    format!("checkpoint.{n:08}")
}

/// Segment numbers and the newest checkpoint's number found in `dir`.
fn list(dir: &Path) -> Result<(Vec<u32>, Vec<u32>), StorageError> {
    let mut segments = Vec::new();
    let mut checkpoints = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(n) = name.strip_prefix("checkpoint.").and_then(|n| n.parse().ok()) {
            checkpoints.push(n);
        } else if name.len() == 8
            && let Ok(n) = name.parse()
        {
            segments.push(n);
        }
    }
    segments.sort_unstable();
    checkpoints.sort_unstable();
    Ok((segments, checkpoints))
}

pub fn sync_dir(dir: &Path) -> Result<(), StorageError> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

/// How a file's records end.
enum Tail {
    Clean,
    /// A record cut short (or whose bytes never fully reached the file) starting at this offset.
    Torn(u64),
}

/// Reads the records of one file, stopping at a torn last record. A bad checksum is a torn
/// write only if it is on the file's last record; anywhere else data that was acknowledged is
/// damaged, and that is an error naming the place.
fn read_file(path: &Path, f: &mut dyn FnMut(Record) -> Result<(), StorageError>) -> Result<Tail, StorageError> {
    let mut file = File::open(path)?;
    let len = file.metadata()?.len();
    let mut reader = std::io::BufReader::with_capacity(1 << 20, &mut file);
    let mut offset = 0u64;
    let mut body = Vec::new();
    loop {
        if offset == len {
            return Ok(Tail::Clean);
        }
        let mut header = [0u8; HEADER];
        if len - offset < HEADER as u64 {
            return Ok(Tail::Torn(offset));
        }
        reader.read_exact(&mut header)?;
        let [a, b, c, d, e, g, h, i] = header;
        let n = u64::from(u32::from_le_bytes([a, b, c, d]));
        let crc = u32::from_le_bytes([e, g, h, i]);
        let end = offset + HEADER as u64 + n;
        if end > len {
            return Ok(Tail::Torn(offset));
        }
        body.resize(n as usize, 0);
        reader.read_exact(&mut body)?;
        if crc32fast::hash(&body) != crc {
            if end == len {
                return Ok(Tail::Torn(offset));
            }
            return Err(StorageError::Corrupt(format!("WAL {}: checksum mismatch at offset {offset}", path.display())));
        }
        let record = decode(&body)
            .map_err(|e| StorageError::Corrupt(format!("WAL {}: record at offset {offset}: {e}", path.display())))?;
        f(record)?;
        offset = end;
    }
}

#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    segment: u32,
    file: File,
    size: u64,
    max_segment_size: u64,
    buf: Vec<u8>,
}

impl Wal {
    /// Replays the checkpoint and the segments after it through `f`, cuts a torn last record
    /// off the last segment, and starts a fresh segment for new writes.
    pub fn open(
        dir: &Path,
        max_segment_size: u64,
        mut f: impl FnMut(Record) -> Result<(), StorageError>,
    ) -> Result<Self, StorageError> {
        fs::create_dir_all(dir)?;
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                fs::remove_file(&path)?;
            }
        }
        let (segments, checkpoints) = list(dir)?;
        let first = match checkpoints.last() {
            Some(&cp) => {
                let path = dir.join(checkpoint_name(cp));
                if let Tail::Torn(at) = read_file(&path, &mut f)? {
                    // Checkpoints are renamed into place whole; a short one is damage.
                    return Err(StorageError::Corrupt(format!("WAL {}: truncated at offset {at}", path.display())));
                }
                cp.saturating_add(1)
            }
            None => 0,
        };
        let live: Vec<u32> = segments.iter().copied().filter(|&s| s >= first).collect();
        for (i, &s) in live.iter().enumerate() {
            let path = dir.join(segment_name(s));
            if let Tail::Torn(at) = read_file(&path, &mut f)? {
                if i + 1 != live.len() {
                    return Err(StorageError::Corrupt(format!(
                        "WAL {}: truncated at offset {at} but later segments exist",
                        path.display()
                    )));
                }
                let file = OpenOptions::new().write(true).open(&path)?;
                file.set_len(at)?;
                file.sync_all()?;
            }
        }
        let next = segments.last().map_or(first, |&l| l.saturating_add(1).max(first));
        let (file, _) = Self::create_segment(dir, next)?;
        Ok(Self { dir: dir.to_path_buf(), segment: next, file, size: 0, max_segment_size, buf: Vec::new() })
    }

    fn create_segment(dir: &Path, n: u32) -> Result<(File, PathBuf), StorageError> {
        let path = dir.join(segment_name(n));
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        // The new name must survive a crash too, or the records synced into it would be lost
        // with the directory entry.
        sync_dir(dir)?;
        Ok((file, path))
    }

    /// Starts the next segment; returns the number of the one just closed.
    fn roll(&mut self) -> Result<u32, StorageError> {
        self.file.sync_all()?;
        let closed = self.segment;
        let (file, _) = Self::create_segment(&self.dir, closed + 1)?;
        self.file = file;
        self.segment = closed + 1;
        self.size = 0;
        Ok(closed)
    }

    /// Writes the records and syncs them to disk before returning.
    pub fn log(&mut self, bodies: &[Vec<u8>]) -> Result<(), StorageError> {
        self.buf.clear();
        for b in bodies {
            frame(compress(b).as_deref().unwrap_or(b), &mut self.buf);
        }
        if self.buf.is_empty() {
            return Ok(());
        }
        if self.size > 0 && self.size + self.buf.len() as u64 > self.max_segment_size {
            self.roll()?;
        }
        self.file.write_all(&self.buf)?;
        self.file.sync_data()?;
        self.size += self.buf.len() as u64;
        if self.buf.capacity() > 4 << 20 {
            self.buf = Vec::new();
        }
        Ok(())
    }

    /// Replaces every segment written so far by a checkpoint holding `bodies` (the live head,
    /// which the caller snapshots while no append can run). Written under a temporary name,
    /// synced, then renamed, so a crash leaves either the old segments or the new checkpoint.
    pub fn checkpoint(&mut self, bodies: impl Iterator<Item = Vec<u8>>) -> Result<(), StorageError> {
        let upto = self.roll()?;
        let final_path = self.dir.join(checkpoint_name(upto));
        let tmp = self.dir.join(format!("{}.tmp", checkpoint_name(upto)));
        {
            let mut w = std::io::BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
            let mut framed = Vec::new();
            for b in bodies {
                framed.clear();
                frame(compress(&b).as_deref().unwrap_or(&b), &mut framed);
                w.write_all(&framed)?;
            }
            let file = w.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
        }
        fs::rename(&tmp, &final_path)?;
        sync_dir(&self.dir)?;
        let (segments, checkpoints) = list(&self.dir)?;
        for s in segments.into_iter().filter(|&s| s <= upto) {
            remove_if_exists(&self.dir.join(segment_name(s)))?;
        }
        for c in checkpoints.into_iter().filter(|&c| c < upto) {
            remove_if_exists(&self.dir.join(checkpoint_name(c)))?;
        }
        Ok(())
    }

    pub fn size_on_disk(&self) -> u64 {
        fs::read_dir(&self.dir).map(|rd| rd.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).sum()).unwrap_or(0)
    }
}

fn remove_if_exists(path: &Path) -> Result<(), StorageError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != ErrorKind::NotFound => Err(e.into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replay(dir: &Path, max: u64) -> Result<(Wal, Vec<Record>), StorageError> {
        let mut got = Vec::new();
        let wal = Wal::open(dir, max, |r| {
            got.push(r);
            Ok(())
        })?;
        Ok((wal, got))
    }

    fn labels(v: &str) -> Labels {
        Labels::from_pairs([("__name__", "m"), ("i", v)])
    }

    #[test]
    fn records_survive_reopen_and_segments_roll() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, got) = replay(dir.path(), 200).expect("open");
        assert!(got.is_empty());
        let l = labels("a");
        wal.log(&[encode_series([(7, &l)])]).expect("log");
        for i in 0..50 {
            wal.log(&[encode_samples(&[(7, 1000 + i, i as f64), (7, 1000 + i, f64::NAN)])]).expect("log");
        }
        drop(wal);
        let (_wal, got) = replay(dir.path(), 200).expect("reopen");
        assert_eq!(got.len(), 51);
        assert_eq!(got[0], Record::Series(vec![(7, l)]));
        let Record::Samples(s) = &got[50] else { panic!("samples") };
        assert_eq!(s[0], (7, 1049, 49.0));
        assert!(s[1].2.is_nan());
        assert!(list(dir.path()).expect("list").0.len() > 5);
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_damage_in_the_middle_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = replay(dir.path(), 1 << 20).expect("open");
        for i in 0..3 {
            wal.log(&[encode_samples(&[(1, i, 1.0)])]).expect("log");
        }
        drop(wal);
        let seg = dir.path().join(segment_name(0));
        let full = fs::read(&seg).expect("read");
        // Half of a fourth record.
        let mut torn = full.clone();
        let mut extra = Vec::new();
        frame(&encode_samples(&[(1, 4, 1.0)]), &mut extra);
        torn.extend_from_slice(&extra[..extra.len() / 2]);
        fs::write(&seg, &torn).expect("write");
        let (_wal, got) = replay(dir.path(), 1 << 20).expect("torn tail is repaired");
        assert_eq!(got.len(), 3);
        assert_eq!(fs::read(&seg).expect("read"), full);
        // A flipped byte in the first record's body, with later records after it.
        let mut bad = full.clone();
        bad[HEADER + 2] ^= 0xff;
        fs::write(&seg, &bad).expect("write");
        let err = replay(dir.path(), 1 << 20).expect_err("corrupt");
        let msg = err.to_string();
        assert!(msg.contains("00000000") && msg.contains("offset 0"), "{msg}");
    }

    #[test]
    fn a_checkpoint_replaces_old_segments() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut wal, _) = replay(dir.path(), 1 << 20).expect("open");
        let l = labels("a");
        wal.log(&[encode_series([(1, &l)]), encode_samples(&[(1, 5, 1.0)])]).expect("log");
        wal.checkpoint([encode_series([(1, &l)]), encode_chunk(1, 5, 5, true, &[0, 1, 10])].into_iter())
            .expect("checkpoint");
        wal.log(&[encode_samples(&[(1, 6, 2.0)])]).expect("log");
        drop(wal);
        let (segments, checkpoints) = list(dir.path()).expect("list");
        assert_eq!(checkpoints.len(), 1);
        assert!(segments.iter().all(|&s| s > checkpoints[0]));
        let (_wal, got) = replay(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(got.len(), 3);
        assert!(matches!(got[1], Record::Chunk { id: 1, open: true, .. }));
        assert_eq!(got[2], Record::Samples(vec![(1, 6, 2.0)]));
    }

    #[test]
    fn compressed_records_read_back_and_damage_is_an_error() {
        let samples: Vec<(SeriesId, Timestamp, f64)> = (0..500).map(|i| (i, 15_000, f64::from(i % 7))).collect();
        let body = encode_samples(&samples);
        let packed = compress(&body).expect("a scrape's record compresses");
        assert!(packed.len() * 4 < body.len() * 3, "{} of {} bytes", packed.len(), body.len());
        assert_eq!(decode(&packed).expect("decodes"), Record::Samples(samples));
        let mut damaged = packed.clone();
        damaged.truncate(damaged.len() / 2);
        assert!(decode(&damaged).is_err());
        assert!(decode(&[REC_SNAPPY, 0xff, 0xff, 0xff, 0xff, 0x0f]).is_err(), "an absurd length is refused");
    }
}
