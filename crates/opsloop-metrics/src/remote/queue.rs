//! The durable queue behind a remote-write sender: an append-only log of its own, in numbered
//! segment files, and a cursor file saying how far the sender has got.
//!
//! Why a log of its own rather than reading the TSDB's WAL as Prometheus does: the WAL is
//! checkpointed and truncated on the TSDB's schedule, records series by id, and would tie the
//! sender to the storage's format and lifetime. A separate log costs a second write per batch,
//! but makes the contract simple: `append` returns once the samples are fsynced, the cursor
//! only moves after the remote end acknowledged everything before it, so a crash or restart
//! sends again from the cursor (at least once) and loses nothing. Segments wholly behind the
//! cursor are deleted; a queue over its size limit drops its oldest segment, counted.
//!
//! A record is `len: u32 LE | crc32: u32 LE | payload`, the payload a snappy-compressed
//! remote-write `WriteRequest` (the wire format already at hand, and compact).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use prost::Message;

use super::WriteRequest;
use crate::labels::Labels;
use crate::storage::Sample;

/// A segment is closed and a new one started past this size, so that sent data can be deleted
/// a segment at a time.
const SEGMENT_BYTES: u64 = 16 << 20;
const HEADER: usize = 8;
/// A record longer than this is corruption, not data: a batch is never that large.
const MAX_RECORD: usize = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    #[error("{path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("{path}: unreadable cursor {text:?}")]
    Cursor { path: String, text: String },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> QueueError + '_ {
    move |source| QueueError::Io { path: path.display().to_string(), source }
}

/// A place in the log: a segment number and a byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Position {
    pub segment: u64,
    pub offset: u64,
}

/// Samples read from the queue, in log order, and where reading stopped.
#[derive(Debug, Default)]
pub struct Batch {
    pub samples: Vec<(Labels, Sample)>,
    pub end: Position,
}

#[derive(Debug)]
pub struct Queue {
    dir: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    file: File,
    end: Position,
    cursor: Position,
    /// Size and sample count of every segment on disk.
    segments: BTreeMap<u64, Segment>,
    /// Samples after the cursor.
    pending: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Segment {
    bytes: u64,
    samples: u64,
}

impl Queue {
    /// Opens (or creates) the queue in `dir`, cutting a torn record off the end of the last
    /// segment (a crash mid-append: that append never returned, so nobody was promised it).
    /// `max_bytes` of 0 means no limit.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Queue, QueueError> {
        fs::create_dir_all(dir).map_err(io_err(dir))?;
        let cursor_path = dir.join("cursor");
        let mut cursor = match fs::read_to_string(&cursor_path) {
            Ok(text) => parse_cursor(&text)
                .ok_or_else(|| QueueError::Cursor { path: cursor_path.display().to_string(), text })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Position::default(),
            Err(e) => return Err(io_err(&cursor_path)(e)),
        };
        let mut numbers = Vec::new();
        for entry in fs::read_dir(dir).map_err(io_err(dir))? {
            let entry = entry.map_err(io_err(dir))?;
            if let Some(n) =
                entry.file_name().to_str().and_then(|s| s.strip_suffix(".seg")).and_then(|s| s.parse().ok())
            {
                numbers.push(n);
            }
        }
        numbers.sort_unstable();
        let mut segments = BTreeMap::new();
        let mut pending = 0;
        let last = numbers.last().copied();
        for n in numbers {
            let path = segment_path(dir, n);
            if n < cursor.segment {
                fs::remove_file(&path).map_err(io_err(&path))?;
                continue;
            }
            let data = fs::read(&path).map_err(io_err(&path))?;
            let mut seg = Segment::default();
            let mut off = 0usize;
            while let Some((payload, next)) = record_at(&data, off) {
                let count = decode(payload).map(|s| s.len() as u64).unwrap_or(0);
                seg.samples += count;
                if (Position { segment: n, offset: off as u64 }) >= cursor {
                    pending += count;
                }
                off = next;
            }
            if off < data.len() && Some(n) == last {
                tracing::warn!(segment = %path.display(), at = off, "remote-write queue: cutting a torn record");
                let f = OpenOptions::new().write(true).open(&path).map_err(io_err(&path))?;
                f.set_len(off as u64).map_err(io_err(&path))?;
                f.sync_all().map_err(io_err(&path))?;
            }
            seg.bytes = off as u64;
            segments.insert(n, seg);
        }
        let (last_n, last_len) = match segments.iter().next_back() {
            Some((n, s)) => (*n, s.bytes),
            None => {
                let n = cursor.segment.max(1);
                segments.insert(n, Segment::default());
                (n, 0)
            }
        };
        if cursor.segment < *segments.keys().next().unwrap_or(&last_n) {
            cursor = Position { segment: *segments.keys().next().unwrap_or(&last_n), offset: 0 };
        }
        // Segments lost behind the cursor's back (deleted by hand): start over at the end.
        if cursor > (Position { segment: last_n, offset: last_len }) {
            cursor = Position { segment: last_n, offset: last_len };
        }
        let path = segment_path(dir, last_n);
        let file = OpenOptions::new().create(true).append(true).open(&path).map_err(io_err(&path))?;
        sync_dir(dir)?;
        let state = State { file, end: Position { segment: last_n, offset: last_len }, cursor, segments, pending };
        Ok(Queue { dir: dir.to_path_buf(), max_bytes, state: Mutex::new(state) })
    }

    /// Appends samples as one record and returns once it is on disk. Returns the samples
    /// dropped to stay under the size limit (the oldest unsent ones), if any.
    pub fn append(&self, series: &[(Labels, Vec<Sample>)]) -> Result<u64, QueueError> {
        let count: u64 = series.iter().map(|(_, s)| s.len() as u64).sum();
        if count == 0 {
            return Ok(0);
        }
        let payload = super::encode(series);
        let mut record = Vec::with_capacity(HEADER + payload.len());
        record.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        record.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        record.extend_from_slice(&payload);
        let mut st = self.lock();
        if st.end.offset >= SEGMENT_BYTES {
            let next = st.end.segment + 1;
            let path = segment_path(&self.dir, next);
            st.file = OpenOptions::new().create(true).append(true).open(&path).map_err(io_err(&path))?;
            sync_dir(&self.dir)?;
            st.end = Position { segment: next, offset: 0 };
            st.segments.insert(next, Segment::default());
        }
        let path = segment_path(&self.dir, st.end.segment);
        st.file.write_all(&record).map_err(io_err(&path))?;
        st.file.sync_data().map_err(io_err(&path))?;
        st.end.offset += record.len() as u64;
        let seg = st.end.segment;
        if let Some(s) = st.segments.get_mut(&seg) {
            s.bytes += record.len() as u64;
            s.samples += count;
        }
        st.pending += count;
        self.enforce_limit(&mut st)
    }

    /// Drops whole segments, oldest first, while the queue is over its limit; the segment
    /// being written is kept.
    fn enforce_limit(&self, st: &mut State) -> Result<u64, QueueError> {
        let mut dropped = 0;
        while self.max_bytes > 0 && st.segments.values().map(|s| s.bytes).sum::<u64>() > self.max_bytes {
            let Some((&oldest, &seg)) = st.segments.iter().next() else { break };
            if oldest == st.end.segment {
                break;
            }
            let unsent = if st.cursor.segment > oldest {
                0
            } else if st.cursor.offset == 0 {
                seg.samples
            } else {
                let path = segment_path(&self.dir, oldest);
                let data = fs::read(&path).map_err(io_err(&path))?;
                count_from(&data, st.cursor.offset as usize)
            };
            let path = segment_path(&self.dir, oldest);
            fs::remove_file(&path).map_err(io_err(&path))?;
            st.segments.remove(&oldest);
            if st.cursor.segment <= oldest {
                st.cursor = Position { segment: oldest + 1, offset: 0 };
                self.write_cursor(st.cursor)?;
            }
            st.pending = st.pending.saturating_sub(unsent);
            dropped += unsent;
        }
        Ok(dropped)
    }

    /// Where the sender is: everything before it has been acknowledged.
    pub fn cursor(&self) -> Position {
        self.lock().cursor
    }

    pub fn pending(&self) -> u64 {
        self.lock().pending
    }

    /// Whole records from `from` on, until at least `max_samples` are read or the log ends.
    /// A record that fails its checksum ends its segment (counted in the returned `skipped`).
    pub fn read(&self, from: Position, max_samples: usize) -> Result<(Batch, u64), QueueError> {
        let (end, segments): (Position, Vec<u64>) = {
            let st = self.lock();
            (st.end, st.segments.range(from.segment..).map(|(n, _)| *n).collect())
        };
        let mut batch = Batch { samples: Vec::new(), end: from };
        let mut skipped = 0;
        for n in segments {
            if batch.samples.len() >= max_samples {
                break;
            }
            let path = segment_path(&self.dir, n);
            let mut file = match File::open(&path) {
                Ok(f) => f,
                // Dropped by the size limit meanwhile: the cursor has moved past it.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err(&path)(e)),
            };
            let start = if n == from.segment { from.offset } else { 0 };
            let stop = if n == end.segment { end.offset } else { u64::MAX };
            file.seek(SeekFrom::Start(start)).map_err(io_err(&path))?;
            // Record by record, so that a round reads what it sends, not the whole segment.
            let mut reader = io::BufReader::new(file.take(stop.saturating_sub(start)));
            batch.end = Position { segment: n, offset: start };
            while batch.samples.len() < max_samples {
                match next_record(&mut reader).map_err(io_err(&path))? {
                    Record::Payload(payload) => {
                        match decode(&payload) {
                            Some(samples) => batch.samples.extend(samples),
                            None => skipped += 1,
                        }
                        batch.end.offset += (HEADER + payload.len()) as u64;
                    }
                    found @ (Record::End | Record::Corrupt) => {
                        if matches!(found, Record::Corrupt) {
                            skipped += 1;
                        }
                        if n != end.segment {
                            batch.end = Position { segment: n + 1, offset: 0 };
                        }
                        break;
                    }
                }
            }
            if n == end.segment {
                break;
            }
        }
        Ok((batch, skipped))
    }

    /// Moves the cursor to `to` once everything before it was sent (`samples` of them), and
    /// deletes the segments wholly behind it.
    pub fn commit(&self, to: Position, samples: u64) -> Result<(), QueueError> {
        let mut st = self.lock();
        if to <= st.cursor {
            return Ok(());
        }
        st.cursor = to;
        st.pending = st.pending.saturating_sub(samples);
        self.write_cursor(to)?;
        let behind: Vec<u64> = st.segments.range(..to.segment).map(|(n, _)| *n).collect();
        for n in behind {
            let path = segment_path(&self.dir, n);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err(&path)(e)),
            }
            st.segments.remove(&n);
        }
        if st.cursor == st.end {
            st.pending = 0;
        }
        Ok(())
    }

    fn write_cursor(&self, to: Position) -> Result<(), QueueError> {
        let tmp = self.dir.join("cursor.tmp");
        let mut f = File::create(&tmp).map_err(io_err(&tmp))?;
        f.write_all(format!("{} {}\n", to.segment, to.offset).as_bytes()).map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        let path = self.dir.join("cursor");
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        sync_dir(&self.dir)
    }

    /// Bytes on disk in segments.
    pub fn bytes(&self) -> u64 {
        self.lock().segments.values().map(|s| s.bytes).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn segment_path(dir: &Path, n: u64) -> PathBuf {
    dir.join(format!("{n:08}.seg"))
}

fn parse_cursor(text: &str) -> Option<Position> {
    let mut parts = text.split_whitespace();
    let segment = parts.next()?.parse().ok()?;
    let offset = parts.next()?.parse().ok()?;
    Some(Position { segment, offset })
}

fn sync_dir(dir: &Path) -> Result<(), QueueError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))
}

enum Record {
    Payload(Vec<u8>),
    End,
    /// A bad checksum or length: nothing after it in the segment can be trusted.
    Corrupt,
}

fn next_record(reader: &mut impl Read) -> io::Result<Record> {
    let mut header = [0u8; HEADER];
    match reader.read_exact(&mut header) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Record::End),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
    let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    if len > MAX_RECORD {
        tracing::warn!(len, "remote-write queue: corrupt record, skipping the rest of the segment");
        return Ok(Record::Corrupt);
    }
    let mut payload = vec![0; len];
    match reader.read_exact(&mut payload) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Record::Corrupt),
        Err(e) => return Err(e),
    }
    if crc32fast::hash(&payload) != crc {
        tracing::warn!("remote-write queue: record checksum mismatch, skipping the rest of the segment");
        return Ok(Record::Corrupt);
    }
    Ok(Record::Payload(payload))
}

/// The payload of the whole, intact record at `off`, and where the next one starts.
fn record_at(data: &[u8], off: usize) -> Option<(&[u8], usize)> {
    let header = data.get(off..off + HEADER)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    if len > MAX_RECORD {
        return None;
    }
    let payload = data.get(off + HEADER..off + HEADER + len)?;
    (crc32fast::hash(payload) == crc).then_some((payload, off + HEADER + len))
}

fn count_from(data: &[u8], mut off: usize) -> u64 {
    let mut n = 0;
    while let Some((payload, next)) = record_at(data, off) {
        n += decode(payload).map(|s| s.len() as u64).unwrap_or(0);
        off = next;
    }
    n
}

/// A record's samples, series by series. Unlike `remote::decode` nothing is validated: the
/// queue holds what the host appended, after relabelling, and sends it as it is.
fn decode(payload: &[u8]) -> Option<Vec<(Labels, Sample)>> {
    let raw = snap::raw::Decoder::new().decompress_vec(payload).ok()?;
    let request = WriteRequest::decode(raw.as_slice()).ok()?;
    let mut out = Vec::new();
    for ts in request.timeseries {
        let labels = Labels::from_pairs(ts.labels.into_iter().map(|l| (l.name, l.value)));
        out.extend(ts.samples.into_iter().map(|s| (labels.clone(), Sample { t: s.timestamp, v: s.value })));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, ts: &[i64]) -> (Labels, Vec<Sample>) {
        (Labels::from_pairs([("__name__", name)]), ts.iter().map(|&t| Sample { t, v: t as f64 }).collect())
    }

    #[test]
    fn survives_reopen_and_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let q = Queue::open(dir.path(), 0).expect("open");
            q.append(&[series("a", &[1, 2])]).expect("append");
            q.append(&[series("b", &[3])]).expect("append");
            let (batch, _) = q.read(q.cursor(), 2).expect("read");
            assert_eq!(batch.samples.len(), 2);
            q.commit(batch.end, 2).expect("commit");
        }
        let seg = segment_path(dir.path(), 1);
        let mut f = OpenOptions::new().append(true).open(&seg).expect("segment");
        f.write_all(&[9, 0, 0, 0, 1, 2]).expect("torn write");
        drop(f);
        let q = Queue::open(dir.path(), 0).expect("reopen");
        assert_eq!(q.pending(), 1);
        let (batch, skipped) = q.read(q.cursor(), 100).expect("read");
        assert_eq!(skipped, 0);
        assert_eq!(batch.samples.len(), 1);
        assert_eq!(batch.samples[0].1.t, 3);
        q.append(&[series("c", &[4])]).expect("append after the cut");
        let (batch, _) = q.read(q.cursor(), 100).expect("read");
        assert_eq!(batch.samples.len(), 2);
    }

    #[test]
    fn the_size_limit_drops_the_oldest_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let q = Queue::open(dir.path(), 1).expect("open");
        // Force a second segment by pretending the first is full.
        q.append(&[series("a", &[1, 2, 3])]).expect("append");
        q.lock().end.offset = SEGMENT_BYTES;
        let dropped = q.append(&[series("a", &[4])]).expect("append");
        assert_eq!(dropped, 3);
        assert_eq!(q.pending(), 1);
        let (batch, _) = q.read(q.cursor(), 100).expect("read");
        assert_eq!(batch.samples.iter().map(|s| s.1.t).collect::<Vec<_>>(), vec![4]);
    }

    #[test]
    fn a_corrupt_record_ends_its_segment_and_reading_goes_on_in_the_next() {
        let dir = tempfile::tempdir().expect("tempdir");
        let q = Queue::open(dir.path(), 0).expect("open");
        q.append(&[series("a", &[1])]).expect("append");
        q.append(&[series("a", &[2])]).expect("append");
        q.lock().end.offset = SEGMENT_BYTES;
        q.append(&[series("a", &[3])]).expect("append");
        let seg = segment_path(dir.path(), 1);
        let mut data = fs::read(&seg).expect("segment");
        let last = data.len() - 1;
        data[last] ^= 0xff;
        fs::write(&seg, &data).expect("corrupt it");
        let (batch, skipped) = q.read(q.cursor(), 100).expect("read");
        assert_eq!(skipped, 1);
        assert_eq!(batch.samples.iter().map(|s| s.1.t).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(batch.end.segment, 2);
    }
}
