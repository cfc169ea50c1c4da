//! The write-ahead log: every push is appended and fsynced before it is acknowledged.
//!
//! A record is `u32 length | u32 crc32 | payload`; the payload is a sequence number, the tenant
//! and the streams with their entries. Replay stops at the first torn or corrupt record (a crash
//! mid-write leaves one at the tail; it was never acknowledged) and truncates the file there.
//! After a checkpoint has made every head durable in chunk files, a new WAL file is started
//! and the old ones deleted.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use crate::labels::Labels;
use crate::push::{Entry, PushStream};
use crate::store::chunk::{get_bytes, get_str, get_varint, put_bytes, put_varint};

pub struct Wal {
    dir: PathBuf,
    file: File,
    path: PathBuf,
    size: u64,
    fsync: bool,
}

/// One replayed record.
pub struct WalRecord {
    pub seq: u64,
    pub tenant: String,
    pub streams: Vec<PushStream>,
}

fn wal_name(first_seq: u64) -> String {
    format!("{first_seq:016x}.wal")
}

impl Wal {
    /// Opens the WAL directory: returns the records of every file (oldest first) and a WAL
    /// appending to the newest.
    pub fn open(dir: &Path, fsync: bool) -> io::Result<(Wal, Vec<WalRecord>)> {
        fs::create_dir_all(dir)?;
        let mut files: Vec<PathBuf> = fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("wal"))
            .collect();
        files.sort();
        let mut records = Vec::new();
        let mut last_good = 0u64;
        for (i, f) in files.iter().enumerate() {
            let good = read_file(f, &mut records)?;
            if i + 1 == files.len() {
                last_good = good;
            }
        }
        let path = match files.last() {
            Some(p) => p.clone(),
            None => dir.join(wal_name(1)),
        };
        let file = OpenOptions::new().create(true).append(true).read(true).open(&path)?;
        // Cut a torn tail so that new records follow the last good one.
        if file.metadata()?.len() > last_good {
            file.set_len(last_good)?;
        }
        let size = file.metadata()?.len();
        Ok((Wal { dir: dir.to_path_buf(), file, path, size, fsync }, records))
    }

    /// Appends a record and makes it durable.
    pub fn append(&mut self, seq: u64, tenant: &str, streams: &[PushStream]) -> io::Result<()> {
        let mut payload = Vec::with_capacity(256);
        put_varint(&mut payload, seq);
        put_bytes(&mut payload, tenant.as_bytes());
        put_varint(&mut payload, streams.len() as u64);
        for s in streams {
            put_bytes(&mut payload, s.labels.to_string().as_bytes());
            put_varint(&mut payload, s.entries.len() as u64);
            for e in &s.entries {
                put_varint(&mut payload, e.ts as u64);
                put_bytes(&mut payload, e.line.as_bytes());
                put_varint(&mut payload, e.metadata.len() as u64);
                for (k, v) in &e.metadata {
                    put_bytes(&mut payload, k.as_bytes());
                    put_bytes(&mut payload, v.as_bytes());
                }
            }
        }
        let mut rec = Vec::with_capacity(payload.len() + 8);
        rec.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        rec.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
        rec.extend_from_slice(&payload);
        self.file.write_all(&rec)?;
        if self.fsync {
            self.file.sync_data()?;
        }
        self.size += rec.len() as u64;
        Ok(())
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Starts a new file whose records begin at `next_seq` and deletes the older ones: called
    /// once everything they held is durable elsewhere.
    pub fn rotate(&mut self, next_seq: u64) -> io::Result<()> {
        let path = self.dir.join(wal_name(next_seq));
        if path != self.path {
            let file = OpenOptions::new().create(true).append(true).read(true).open(&path)?;
            File::open(&self.dir)?.sync_all()?;
            let old = std::mem::replace(&mut self.path, path);
            self.file = file;
            let _ = old;
        } else {
            self.file.set_len(0)?;
        }
        for e in fs::read_dir(&self.dir)? {
            let p = e?.path();
            if p != self.path && p.extension().and_then(|e| e.to_str()) == Some("wal") {
                fs::remove_file(&p)?;
            }
        }
        self.size = self.file.metadata()?.len();
        Ok(())
    }
}

/// Reads the good records of one file; returns the length of its good prefix.
fn read_file(path: &Path, out: &mut Vec<WalRecord>) -> io::Result<u64> {
    let mut r = BufReader::new(File::open(path)?);
    let mut good = 0u64;
    loop {
        let mut head = [0u8; 8];
        match r.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(good),
            Err(e) => return Err(e),
        }
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len > 1 << 30 {
            return Ok(good);
        }
        let mut payload = vec![0u8; len];
        if r.read_exact(&mut payload).is_err() || crc32fast::hash(&payload) != crc {
            return Ok(good);
        }
        match decode_record(&payload) {
            Some(rec) => out.push(rec),
            None => return Ok(good),
        }
        good += 8 + len as u64;
    }
}

fn decode_record(b: &[u8]) -> Option<WalRecord> {
    let mut pos = 0;
    let seq = get_varint(b, &mut pos)?;
    let tenant = get_str(b, &mut pos)?.to_string();
    let n = get_varint(b, &mut pos)? as usize;
    let mut streams = Vec::with_capacity(n.min(1024));
    for _ in 0..n {
        let labels = Labels::parse(get_str(b, &mut pos)?).ok()?;
        let ne = get_varint(b, &mut pos)? as usize;
        let mut entries = Vec::with_capacity(ne.min(1 << 16));
        for _ in 0..ne {
            let ts = get_varint(b, &mut pos)? as i64;
            let line = std::str::from_utf8(get_bytes(b, &mut pos)?).ok()?.to_string();
            let nm = get_varint(b, &mut pos)? as usize;
            let mut metadata = Vec::with_capacity(nm.min(64));
            for _ in 0..nm {
                let k = get_str(b, &mut pos)?.to_string();
                let v = get_str(b, &mut pos)?.to_string();
                metadata.push((k, v));
            }
            entries.push(Entry { ts, line, metadata });
        }
        streams.push(PushStream { labels, entries });
    }
    Some(WalRecord { seq, tenant, streams })
}
