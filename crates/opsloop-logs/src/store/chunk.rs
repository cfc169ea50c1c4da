//! The chunk format: one stream's entries over a time span, column by column, compressed
//! with zstd as one frame.
//!
//! ```text
//! varint n
//! n × zigzag varint   timestamp deltas (the first from 0)
//! n × varint          line lengths
//! n × varint          structured metadata pair counts, then the pairs (varint-prefixed bytes)
//! lines               every line, back to back
//! ```
//! Keeping lines back to back lets a substring filter run `memmem` over the whole block at once
//! (SIMD, no per-line call) and map hits back to entries by offset; columns of similar data
//! also compress better than interleaved records.

use memchr::memmem;

use crate::push::Entry;

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn get_varint(b: &[u8], pos: &mut usize) -> Option<u64> {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let c = *b.get(*pos)?;
        *pos += 1;
        if shift >= 64 {
            return None;
        }
        v |= u64::from(c & 0x7f) << shift;
        if c < 0x80 {
            return Some(v);
        }
        shift += 7;
    }
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

pub fn get_bytes<'a>(b: &'a [u8], pos: &mut usize) -> Option<&'a [u8]> {
    let n = get_varint(b, pos)? as usize;
    let end = pos.checked_add(n)?;
    let s = b.get(*pos..end)?;
    *pos = end;
    Some(s)
}

pub fn get_str<'a>(b: &'a [u8], pos: &mut usize) -> Option<&'a str> {
    std::str::from_utf8(get_bytes(b, pos)?).ok()
}

/// Encodes entries (sorted by time) into an uncompressed chunk body.
pub fn encode(entries: &[Entry]) -> Vec<u8> {
    let lines: usize = entries.iter().map(|e| e.line.len()).sum();
    let mut out = Vec::with_capacity(lines + entries.len() * 6 + 8);
    put_varint(&mut out, entries.len() as u64);
    let mut prev = 0i64;
    for e in entries {
        put_varint(&mut out, zigzag(e.ts.wrapping_sub(prev)));
        prev = e.ts;
    }
    for e in entries {
        put_varint(&mut out, e.line.len() as u64);
    }
    for e in entries {
        put_varint(&mut out, e.metadata.len() as u64);
        for (k, v) in &e.metadata {
            put_bytes(&mut out, k.as_bytes());
            put_bytes(&mut out, v.as_bytes());
        }
    }
    for e in entries {
        out.extend_from_slice(e.line.as_bytes());
    }
    out
}

/// A decoded chunk body, borrowing its lines from the decompressed buffer.
#[derive(Debug)]
pub struct Decoded {
    pub buf: Vec<u8>,
    pub ts: Vec<i64>,
    /// Start offsets of each line in `buf` (one more than there are entries: the end).
    pub offsets: Vec<usize>,
    /// Structured metadata per entry; empty for most.
    pub metadata: Vec<Vec<(String, String)>>,
    pub has_metadata: bool,
}

impl Decoded {
    pub fn len(&self) -> usize {
        self.ts.len()
    }
    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }
    pub fn line(&self, i: usize) -> &str {
        // Lines were valid UTF-8 when pushed; a corrupt chunk reads as empty lines, not a panic.
        std::str::from_utf8(&self.buf[self.offsets[i]..self.offsets[i + 1]]).unwrap_or("")
    }
    pub fn metadata(&self, i: usize) -> &[(String, String)] {
        if self.has_metadata { &self.metadata[i] } else { &[] }
    }

    /// Indices of entries whose line contains every needle: one `memmem` pass over all lines
    /// per needle, instead of one call per line.
    pub fn matching(&self, needles: &[memmem::Finder<'static>], range: std::ops::Range<usize>) -> Vec<usize> {
        let mut cand: Vec<usize> = range.collect();
        for f in needles {
            if cand.is_empty() {
                break;
            }
            let (Some(&first), Some(&last)) = (cand.first(), cand.last()) else { break };
            let base = self.offsets[first];
            let hay = &self.buf[base..self.offsets[last + 1]];
            let mut keep = Vec::with_capacity(cand.len().min(64));
            let mut ci = 0; // index into cand
            let mut from = 0;
            while let Some(hit) = f.find(&hay[from..]) {
                let abs = base + from + hit;
                // Advance to the candidate entry containing `abs`.
                while ci < cand.len() && self.offsets[cand[ci] + 1] <= abs {
                    ci += 1;
                }
                if ci >= cand.len() {
                    break;
                }
                let e = cand[ci];
                if abs >= self.offsets[e] && abs + f.needle().len() <= self.offsets[e + 1] {
                    keep.push(e);
                    // Next search starts after this entry: one hit is enough.
                    ci += 1;
                    if ci >= cand.len() {
                        break;
                    }
                    from = self.offsets[cand[ci]] - base;
                } else {
                    // The hit spans two lines or falls in a skipped entry: search on from the next byte.
                    from = abs - base + 1;
                }
            }
            cand = keep;
        }
        cand
    }
}

/// Decodes an uncompressed chunk body.
pub fn decode(buf: Vec<u8>) -> Option<Decoded> {
    let mut pos = 0;
    let n = get_varint(&buf, &mut pos)? as usize;
    if n > buf.len() {
        return None;
    }
    let mut ts = Vec::with_capacity(n);
    let mut prev = 0i64;
    for _ in 0..n {
        prev = prev.wrapping_add(unzigzag(get_varint(&buf, &mut pos)?));
        ts.push(prev);
    }
    let mut lens = Vec::with_capacity(n);
    for _ in 0..n {
        lens.push(get_varint(&buf, &mut pos)? as usize);
    }
    let mut metadata = Vec::new();
    let mut has_metadata = false;
    for i in 0..n {
        let k = get_varint(&buf, &mut pos)? as usize;
        if k > 0 && !has_metadata {
            has_metadata = true;
            metadata = vec![Vec::new(); i];
        }
        let mut pairs = Vec::with_capacity(k);
        for _ in 0..k {
            let a = get_str(&buf, &mut pos)?.to_string();
            let b = get_str(&buf, &mut pos)?.to_string();
            pairs.push((a, b));
        }
        if has_metadata {
            metadata.push(pairs);
        }
    }
    let mut offsets = Vec::with_capacity(n + 1);
    let mut o = pos;
    for l in lens {
        offsets.push(o);
        o = o.checked_add(l)?;
    }
    offsets.push(o);
    if o > buf.len() {
        return None;
    }
    Some(Decoded { buf, ts, offsets, metadata, has_metadata })
}

/// Compresses a chunk body.
pub fn compress(body: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    zstd::bulk::compress(body, level)
}

/// Decompresses a chunk body of known size.
pub fn decompress(data: &[u8], raw_len: usize) -> std::io::Result<Vec<u8>> {
    zstd::bulk::decompress(data, raw_len)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_search() {
        let entries: Vec<Entry> = (0..100)
            .map(|i| Entry {
                ts: 1_000 + i * 7,
                line: format!("line {i} {}", if i % 10 == 0 { "ERROR" } else { "ok" }),
                metadata: if i == 5 { vec![("k".into(), "v".into())] } else { vec![] },
            })
            .collect();
        let d = decode(encode(&entries)).unwrap();
        assert_eq!(d.len(), 100);
        assert_eq!(d.line(3), "line 3 ok");
        assert_eq!(d.ts[99], 1_000 + 99 * 7);
        assert_eq!(d.metadata(5), &[("k".to_string(), "v".to_string())]);
        let f = vec![memmem::Finder::new(b"ERROR").into_owned()];
        assert_eq!(d.matching(&f, 0..100), vec![0, 10, 20, 30, 40, 50, 60, 70, 80, 90]);
        let f2 = vec![memmem::Finder::new(b"ok").into_owned(), memmem::Finder::new(b"line 1").into_owned()];
        assert_eq!(d.matching(&f2, 0..100), vec![1, 11, 12, 13, 14, 15, 16, 17, 18, 19]);
        // A needle spanning two lines matches neither.
        let f3 = vec![memmem::Finder::new(b"okline").into_owned()];
        assert!(d.matching(&f3, 0..100).is_empty());
    }
}
