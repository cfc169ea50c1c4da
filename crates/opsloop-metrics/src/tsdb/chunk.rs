//! The XOR chunk: Prometheus's float chunk encoding, bit for bit, so a chunk written here reads
//! the same as one from `tsdb/chunkenc/xor.go`.
//!
//! Layout: a 2-byte big-endian sample count, then the first timestamp as a zigzag varint and the
//! first value's 64 bits, then the second timestamp as a uvarint delta and its value XORed with
//! the first, then for every further sample the delta of the timestamp delta ("delta of delta")
//! and the XORed value.
//!
//! How it differs from the Gorilla paper (Pelkonen et al., VLDB 2015): Gorilla stores seconds, so
//! its delta-of-delta buckets are 7, 9 and 12 bits with a 32-bit escape; Prometheus stores
//! milliseconds, where scrape jitter alone is tens of milliseconds, so the buckets are 14, 17 and
//! 20 bits with a full 64-bit escape. Gorilla's block header is the aligned 2-hour window start
//! plus a 14-bit first delta; here the first timestamp is a varint and the first delta a uvarint,
//! because a chunk is cut every ~120 samples rather than on a fixed window. The value side is
//! Gorilla's (a `0` bit for "same value", `10` to reuse the previous leading/trailing-zero window,
//! `11` + 5 bits of leading zeros + 6 bits of significant-bit count otherwise), with two
//! Prometheus details: leading zeros are clamped to 31 so they fit in 5 bits, and a count of 64
//! significant bits is written as 0 (0 itself can never occur: an unchanged value takes the `0`
//! path).

use crate::storage::{Sample, Timestamp};

/// Prometheus cuts a head chunk at 120 samples: past that the compression gain is negligible
/// and a query decodes more than it needs.
pub const TARGET_SAMPLES_PER_CHUNK: u16 = 120;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("chunk of {0} bytes is shorter than its 2-byte header")]
    NoHeader(usize),
    #[error("chunk ends after {read} of its {total} samples")]
    Truncated { read: u16, total: u16 },
    #[error("varint overflows 64 bits at sample {0}")]
    VarintOverflow(u16),
    #[error("sample {0} has an impossible leading/significant bit count")]
    BadBitWindow(u16),
    #[error("chunk has unused bytes after its last sample")]
    TrailingBytes,
    #[error("chunk is full")]
    Full,
}

/// Writes bits most significant first into a growing byte vector.
#[derive(Debug, Clone)]
struct BitWriter {
    buf: Vec<u8>,
    /// Bits still free in the last byte of `buf`; 0 means the next bit starts a new byte.
    free: u8,
}

impl BitWriter {
    fn write_bit(&mut self, bit: bool) {
        self.write_bits(u64::from(bit), 1);
    }

    /// Writes the `n` low bits of `v` (1 ≤ n ≤ 64).
    fn write_bits(&mut self, v: u64, mut n: u32) {
        while n > 0 {
            if self.free == 0 {
                self.buf.push(0);
                self.free = 8;
            }
            let take = n.min(u32::from(self.free));
            let shift = n - take;
            let part = ((v >> shift) & ((1u64 << take) - 1)) as u8;
            if let Some(last) = self.buf.last_mut() {
                *last |= part << (u32::from(self.free) - take);
            }
            self.free -= take as u8;
            n -= take;
        }
    }

    fn write_byte(&mut self, b: u8) {
        self.write_bits(u64::from(b), 8);
    }
}

/// Reads bits most significant first; every read is bounds-checked, so a truncated chunk is an
/// error rather than a panic.
#[derive(Debug, Clone)]
struct BitReader<'a> {
    data: &'a [u8],
    /// Position in bits from the start of `data`.
    pos: usize,
}

impl BitReader<'_> {
    fn read_bits(&mut self, n: u32) -> Option<u64> {
        let n = n as usize;
        if self.pos + n > self.data.len() * 8 {
            return None;
        }
        let mut out = 0u64;
        let mut left = n;
        while left > 0 {
            let byte = self.data[self.pos / 8];
            let offset = self.pos % 8;
            let avail = 8 - offset;
            let take = left.min(avail);
            let bits = (byte >> (avail - take)) & (((1u16 << take) - 1) as u8);
            out = (out << take) | u64::from(bits);
            self.pos += take;
            left -= take;
        }
        Some(out)
    }

    fn read_bit(&mut self) -> Option<bool> {
        self.read_bits(1).map(|b| b == 1)
    }

    /// Go's `binary.ReadUvarint`: seven bits a byte, low groups first, at most ten bytes.
    fn read_uvarint(&mut self) -> Result<Option<u64>, ()> {
        let mut x = 0u64;
        let mut s = 0u32;
        for i in 0..10 {
            let Some(b) = self.read_bits(8) else { return Ok(None) };
            if b < 0x80 {
                if i == 9 && b > 1 {
                    return Err(());
                }
                return Ok(Some(x | (b << s)));
            }
            x |= (b & 0x7f) << s;
            s += 7;
        }
        Err(())
    }
}

fn write_uvarint(w: &mut BitWriter, mut x: u64) {
    while x >= 0x80 {
        w.write_byte((x as u8) | 0x80);
        x >>= 7;
    }
    w.write_byte(x as u8);
}

fn zigzag(x: i64) -> u64 {
    ((x << 1) ^ (x >> 63)) as u64
}

fn unzigzag(u: u64) -> i64 {
    ((u >> 1) as i64) ^ -((u & 1) as i64)
}

/// Whether `x` fits the `nbits` bucket as Prometheus defines it: the range is
/// `-(2^(n-1) - 1) ..= 2^(n-1)`, one more on the positive side than two's complement, which the
/// reader undoes by treating only values above `2^(n-1)` as negative.
fn bit_range(x: i64, nbits: u32) -> bool {
    -((1i64 << (nbits - 1)) - 1) <= x && x <= (1i64 << (nbits - 1))
}

/// What the next append needs to know about the samples already in the chunk.
#[derive(Debug, Clone, Copy)]
struct AppendState {
    t: Timestamp,
    v: u64,
    t_delta: u64,
    /// 0xff until the first XOR window is written, as in Prometheus.
    leading: u8,
    trailing: u8,
}

/// A chunk being appended to.
#[derive(Debug, Clone)]
pub struct XorChunk {
    w: BitWriter,
    count: u16,
    state: AppendState,
}

impl Default for XorChunk {
    fn default() -> Self {
        Self::new()
    }
}

impl XorChunk {
    pub fn new() -> Self {
        Self {
            w: BitWriter { buf: vec![0, 0], free: 0 },
            count: 0,
            state: AppendState { t: 0, v: 0, t_delta: 0, leading: 0xff, trailing: 0 },
        }
    }

    /// Reopens encoded bytes for appending by decoding them to recover the appender's state
    /// (what the WAL checkpoint needs for a series' open chunk).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ChunkError> {
        let mut it = XorIter::new(bytes)?;
        for s in it.by_ref() {
            s?;
        }
        let used_bits = it.r.pos;
        let payload_bits = it.r.data.len() * 8;
        if payload_bits - used_bits >= 8 {
            return Err(ChunkError::TrailingBytes);
        }
        // Until a first XOR window is written the appender has none to reuse; Prometheus
        // reopens such a chunk with a zero window and spends 64 bits on the next change.
        let leading = if it.has_window { it.leading } else { 0xff };
        Ok(Self {
            w: BitWriter { buf: bytes.to_vec(), free: (payload_bits - used_bits) as u8 },
            count: it.total,
            state: AppendState { t: it.t, v: it.v, t_delta: it.t_delta, leading, trailing: it.trailing },
        })
    }

    pub fn num_samples(&self) -> u16 {
        self.count
    }

    pub fn bytes(&self) -> &[u8] {
        &self.w.buf
    }

    /// The encoded bytes, trimmed of spare capacity, for a chunk that is closed for good.
    pub fn into_bytes(self) -> Vec<u8> {
        let mut b = self.w.buf;
        b.shrink_to_fit();
        b
    }

    /// Timestamp of the last sample appended; meaningless while the chunk is empty.
    pub fn last_t(&self) -> Timestamp {
        self.state.t
    }

    pub fn last_v(&self) -> f64 {
        f64::from_bits(self.state.v)
    }

    pub fn iter(&self) -> XorIter<'_> {
        // The writer keeps a two-byte header, so this never fails.
        XorIter::new(&self.w.buf).unwrap_or_else(|_| XorIter::empty())
    }

    /// Appends one sample. Ordering is the caller's business (the head rejects out-of-order
    /// samples before they get here); a smaller timestamp would still round-trip, because the
    /// deltas are stored with wrapping arithmetic exactly as Prometheus stores them.
    pub fn append(&mut self, t: Timestamp, v: f64) -> Result<(), ChunkError> {
        if self.count == u16::MAX {
            return Err(ChunkError::Full);
        }
        let vbits = v.to_bits();
        let mut t_delta = 0u64;
        match self.count {
            0 => {
                write_uvarint(&mut self.w, zigzag(t));
                self.w.write_bits(vbits, 64);
            }
            1 => {
                t_delta = t.wrapping_sub(self.state.t) as u64;
                write_uvarint(&mut self.w, t_delta);
                self.write_value(vbits);
            }
            _ => {
                t_delta = t.wrapping_sub(self.state.t) as u64;
                let dod = t_delta.wrapping_sub(self.state.t_delta) as i64;
                if dod == 0 {
                    self.w.write_bit(false);
                } else if bit_range(dod, 14) {
                    self.w.write_bits(0b10, 2);
                    self.w.write_bits(dod as u64, 14);
                } else if bit_range(dod, 17) {
                    self.w.write_bits(0b110, 3);
                    self.w.write_bits(dod as u64, 17);
                } else if bit_range(dod, 20) {
                    self.w.write_bits(0b1110, 4);
                    self.w.write_bits(dod as u64, 20);
                } else {
                    self.w.write_bits(0b1111, 4);
                    self.w.write_bits(dod as u64, 64);
                }
                self.write_value(vbits);
            }
        }
        self.state.t = t;
        self.state.v = vbits;
        self.state.t_delta = t_delta;
        self.count += 1;
        let [hi, lo] = self.count.to_be_bytes();
        self.w.buf[0] = hi;
        self.w.buf[1] = lo;
        Ok(())
    }

    fn write_value(&mut self, vbits: u64) {
        let delta = vbits ^ self.state.v;
        if delta == 0 {
            self.w.write_bit(false);
            return;
        }
        self.w.write_bit(true);
        let leading = (delta.leading_zeros() as u8).min(31);
        let trailing = delta.trailing_zeros() as u8;
        let st = &mut self.state;
        if st.leading != 0xff && leading >= st.leading && trailing >= st.trailing {
            self.w.write_bit(false);
            let n = 64 - u32::from(st.leading) - u32::from(st.trailing);
            self.w.write_bits(delta >> st.trailing, n);
        } else {
            st.leading = leading;
            st.trailing = trailing;
            self.w.write_bit(true);
            self.w.write_bits(u64::from(leading), 5);
            let sig = 64 - u32::from(leading) - u32::from(trailing);
            // 64 significant bits do not fit in 6 bits; they are written as 0.
            self.w.write_bits(u64::from(sig & 63), 6);
            self.w.write_bits(delta >> trailing, sig);
        }
    }
}

/// Decodes a chunk's samples in order; yields an error (once, then stops) on damaged bytes.
#[derive(Debug, Clone)]
pub struct XorIter<'a> {
    r: BitReader<'a>,
    total: u16,
    read: u16,
    t: Timestamp,
    v: u64,
    t_delta: u64,
    leading: u8,
    trailing: u8,
    has_window: bool,
    failed: bool,
}

impl<'a> XorIter<'a> {
    pub fn new(bytes: &'a [u8]) -> Result<Self, ChunkError> {
        let (Some(&hi), Some(&lo)) = (bytes.first(), bytes.get(1)) else {
            return Err(ChunkError::NoHeader(bytes.len()));
        };
        Ok(Self {
            r: BitReader { data: &bytes[2..], pos: 0 },
            total: u16::from_be_bytes([hi, lo]),
            read: 0,
            t: 0,
            v: 0,
            t_delta: 0,
            leading: 0,
            trailing: 0,
            has_window: false,
            failed: false,
        })
    }

    fn empty() -> Self {
        Self {
            r: BitReader { data: &[], pos: 0 },
            total: 0,
            read: 0,
            t: 0,
            v: 0,
            t_delta: 0,
            leading: 0,
            trailing: 0,
            has_window: false,
            failed: false,
        }
    }

    /// Number of samples the header announces.
    pub fn total(&self) -> u16 {
        self.total
    }

    fn truncated(&self) -> ChunkError {
        ChunkError::Truncated { read: self.read, total: self.total }
    }

    fn next_sample(&mut self) -> Result<Sample, ChunkError> {
        match self.read {
            0 => {
                let t = self.r.read_uvarint().map_err(|()| ChunkError::VarintOverflow(0))?;
                let t = unzigzag(t.ok_or_else(|| self.truncated())?);
                let v = self.r.read_bits(64).ok_or_else(|| self.truncated())?;
                self.t = t;
                self.v = v;
            }
            1 => {
                let d = self.r.read_uvarint().map_err(|()| ChunkError::VarintOverflow(1))?;
                self.t_delta = d.ok_or_else(|| self.truncated())?;
                self.t = self.t.wrapping_add(self.t_delta as i64);
                self.read_value()?;
            }
            _ => {
                let mut prefix = 0u8;
                for _ in 0..4 {
                    let bit = self.r.read_bit().ok_or_else(|| self.truncated())?;
                    prefix = (prefix << 1) | u8::from(bit);
                    if !bit {
                        break;
                    }
                }
                let size = match prefix {
                    0b0 => 0,
                    0b10 => 14,
                    0b110 => 17,
                    0b1110 => 20,
                    _ => 64,
                };
                let dod = if size == 0 {
                    0
                } else {
                    let bits = self.r.read_bits(size).ok_or_else(|| self.truncated())?;
                    if size < 64 && bits > (1u64 << (size - 1)) { (bits as i64) - (1i64 << size) } else { bits as i64 }
                };
                self.t_delta = self.t_delta.wrapping_add(dod as u64);
                self.t = self.t.wrapping_add(self.t_delta as i64);
                self.read_value()?;
            }
        }
        self.read += 1;
        Ok(Sample { t: self.t, v: f64::from_bits(self.v) })
    }

    fn read_value(&mut self) -> Result<(), ChunkError> {
        if !self.r.read_bit().ok_or_else(|| self.truncated())? {
            return Ok(());
        }
        if self.r.read_bit().ok_or_else(|| self.truncated())? {
            let leading = self.r.read_bits(5).ok_or_else(|| self.truncated())? as u8;
            let mut sig = self.r.read_bits(6).ok_or_else(|| self.truncated())? as u8;
            if sig == 0 {
                sig = 64;
            }
            self.leading = leading;
            self.has_window = true;
            self.trailing = 64u8
                .checked_sub(leading)
                .and_then(|x| x.checked_sub(sig))
                .ok_or(ChunkError::BadBitWindow(self.read))?;
        }
        let sig = 64 - u32::from(self.leading) - u32::from(self.trailing);
        let bits = self.r.read_bits(sig).ok_or_else(|| self.truncated())?;
        self.v ^= bits << self.trailing;
        Ok(())
    }
}

impl Iterator for XorIter<'_> {
    type Item = Result<Sample, ChunkError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.read >= self.total {
            return None;
        }
        let r = self.next_sample();
        if r.is_err() {
            self.failed = true;
        }
        Some(r)
    }
}

/// The time range of an encoded chunk without decoding all of it would need the last sample;
/// callers keep min/max beside the bytes instead. This decodes fully, for checks and tests.
pub fn decode_all(bytes: &[u8]) -> Result<Vec<Sample>, ChunkError> {
    XorIter::new(bytes)?.collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{STALE_NAN_BITS, stale_nan};

    /// xorshift64*: deterministic randomness without a dependency.
    pub(crate) struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn encode(samples: &[Sample]) -> XorChunk {
        let mut c = XorChunk::new();
        for s in samples {
            c.append(s.t, s.v).expect("room");
        }
        c
    }

    fn same(a: &[Sample], b: &[Sample]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.t == y.t && x.v.to_bits() == y.v.to_bits())
    }

    fn random_series(rng: &mut Rng, n: usize) -> Vec<Sample> {
        let mut t = rng.next() as i64 >> rng.below(40);
        let mut v = 0.0f64;
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            // Every bucket of the delta-of-delta, negative deltas included.
            t = t.wrapping_add(match rng.below(8) {
                0 => 15_000,
                1 => 15_000 + rng.below(200) as i64 - 100,
                2 => rng.below(1 << 16) as i64 - (1 << 15),
                3 => rng.below(1 << 19) as i64,
                4 => rng.below(1 << 22) as i64 - (1 << 21),
                5 => rng.next() as i64 >> 8,
                6 => -(rng.below(10_000) as i64),
                _ => 0,
            });
            v = match rng.below(10) {
                0 => f64::NAN,
                1 => stale_nan(),
                2 => f64::INFINITY,
                3 => f64::NEG_INFINITY,
                4 => f64::from_bits(rng.next()),
                5 => v + rng.below(100) as f64,
                6 => -v,
                7 => 0.0,
                8 => v,
                _ => rng.below(1000) as f64 / 7.0,
            };
            out.push(Sample { t, v });
        }
        out
    }

    #[test]
    fn round_trips_special_values_and_negative_deltas() {
        let samples = vec![
            Sample { t: -5, v: 1.0 },
            Sample { t: 1000, v: f64::NAN },
            Sample { t: 900, v: stale_nan() },
            Sample { t: 15_900, v: f64::INFINITY },
            Sample { t: 15_901, v: f64::NEG_INFINITY },
            Sample { t: 15_901 + 8192, v: -0.0 },
            Sample { t: 15_901 + 8192 + 16384 - 8191, v: f64::MAX },
            Sample { t: i64::MAX, v: f64::MIN_POSITIVE },
            Sample { t: i64::MIN, v: 5e-324 },
        ];
        let c = encode(&samples);
        let back = decode_all(c.bytes()).expect("decodes");
        assert!(same(&samples, &back));
        assert_eq!(back[2].v.to_bits(), STALE_NAN_BITS);
    }

    #[test]
    fn bucket_edges_round_trip() {
        for edge in [8191i64, 8192, 8193, -8191, -8192, 65536, 65537, -65535, -65536, 524288, 524289, -524287, -524288]
        {
            let samples = [Sample { t: 0, v: 1.0 }, Sample { t: 100, v: 2.0 }, Sample { t: 200 + edge, v: 3.0 }];
            let back = decode_all(encode(&samples).bytes()).expect("decodes");
            assert!(same(&samples, &back), "edge {edge}");
        }
    }

    #[test]
    fn many_random_series_round_trip() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for _ in 0..2000 {
            let n = rng.below(300) as usize;
            let samples = random_series(&mut rng, n);
            let c = encode(&samples);
            let back = decode_all(c.bytes()).expect("decodes");
            assert!(same(&samples, &back));
            // Reopening for append gives the same bytes as appending without a break.
            let split = if n == 0 { 0 } else { rng.below(n as u64) as usize };
            let mut reopened = XorChunk::from_bytes(encode(&samples[..split]).bytes()).expect("reopens");
            for s in &samples[split..] {
                reopened.append(s.t, s.v).expect("room");
            }
            assert_eq!(reopened.bytes(), c.bytes());
        }
    }

    #[test]
    fn regular_scrapes_compress_like_prometheus() {
        let mut c = XorChunk::new();
        for i in 0..120 {
            c.append(1_700_000_000_000 + i * 15_000, 42.0).expect("room");
        }
        // 2 header + ~15 first sample + 1 bit dod and 1 bit value for the rest.
        assert!(c.bytes().len() < 50, "{} bytes", c.bytes().len());
    }

    #[test]
    fn damaged_bytes_are_errors_never_panics() {
        let mut rng = Rng(42);
        assert!(matches!(XorIter::new(&[1]), Err(ChunkError::NoHeader(1))));
        for _ in 0..200 {
            let n = 1 + rng.below(150) as usize;
            let samples = random_series(&mut rng, n);
            let bytes = encode(&samples).into_bytes();
            // Every truncation fails or decodes a prefix; none panics.
            for cut in 0..bytes.len() {
                let r = decode_all(&bytes[..cut]);
                assert!(r.is_err(), "cut {cut} of {}", bytes.len());
            }
            // Flipped bits and random garbage never panic.
            let mut flipped = bytes.clone();
            let i = rng.below(flipped.len() as u64) as usize;
            flipped[i] ^= 1 << rng.below(8);
            let _ = decode_all(&flipped);
            let _ = XorChunk::from_bytes(&flipped);
            let garbage: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
            let _ = decode_all(&garbage);
            let _ = XorChunk::from_bytes(&garbage);
        }
    }
}
