//! Varints and length-prefixed strings for the WAL and the block index, with a bounds-checked
//! decoder so damaged files give an error, not a panic.

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("truncated at byte {0}")]
    Truncated(usize),
    #[error("varint overflows 64 bits at byte {0}")]
    Overflow(usize),
    #[error("invalid UTF-8 at byte {0}")]
    Utf8(usize),
    #[error("{0}")]
    Invalid(String),
}

pub fn put_uvarint(buf: &mut Vec<u8>, mut x: u64) {
    while x >= 0x80 {
        buf.push((x as u8) | 0x80);
        x >>= 7;
    }
    buf.push(x as u8);
}

pub fn put_varint(buf: &mut Vec<u8>, x: i64) {
    put_uvarint(buf, ((x << 1) ^ (x >> 63)) as u64);
}

pub fn put_str(buf: &mut Vec<u8>, s: &str) {
    put_uvarint(buf, s.len() as u64);
    buf.extend_from_slice(s.as_bytes());
}

#[derive(Debug, Clone)]
pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub fn pos(&self) -> usize {
        self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        let b = *self.buf.get(self.pos).ok_or(DecodeError::Truncated(self.pos))?;
        self.pos += 1;
        Ok(b)
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or(DecodeError::Truncated(self.pos))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    pub fn u64_le(&mut self) -> Result<u64, DecodeError> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    pub fn uvarint(&mut self) -> Result<u64, DecodeError> {
        let start = self.pos;
        let mut x = 0u64;
        for i in 0..10 {
            let b = u64::from(self.u8()?);
            if b < 0x80 {
                if i == 9 && b > 1 {
                    return Err(DecodeError::Overflow(start));
                }
                return Ok(x | (b << (7 * i)));
            }
            x |= (b & 0x7f) << (7 * i);
        }
        Err(DecodeError::Overflow(start))
    }

    pub fn varint(&mut self) -> Result<i64, DecodeError> {
        let u = self.uvarint()?;
        Ok(((u >> 1) as i64) ^ -((u & 1) as i64))
    }

    /// A uvarint that must fit `u32` (ids, counts).
    pub fn u32v(&mut self) -> Result<u32, DecodeError> {
        let at = self.pos;
        u32::try_from(self.uvarint()?).map_err(|_| DecodeError::Invalid(format!("value at byte {at} exceeds 32 bits")))
    }

    /// A count of items that each take at least one byte, so a damaged count cannot make the
    /// reader allocate more than the input could hold.
    pub fn count(&mut self) -> Result<usize, DecodeError> {
        let at = self.pos;
        let n = self.uvarint()?;
        if n > (self.buf.len() - self.pos) as u64 {
            return Err(DecodeError::Invalid(format!("count {n} at byte {at} exceeds the remaining bytes")));
        }
        Ok(n as usize)
    }

    pub fn str(&mut self) -> Result<&'a str, DecodeError> {
        let n = self.count()?;
        let at = self.pos;
        std::str::from_utf8(self.bytes(n)?).map_err(|_| DecodeError::Utf8(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_damage_is_an_error() {
        let mut b = Vec::new();
        for x in [0i64, 1, -1, 63, -64, i64::MAX, i64::MIN] {
            put_varint(&mut b, x);
        }
        put_str(&mut b, "héllo");
        let mut d = Decoder::new(&b);
        for x in [0i64, 1, -1, 63, -64, i64::MAX, i64::MIN] {
            assert_eq!(d.varint(), Ok(x));
        }
        assert_eq!(d.str(), Ok("héllo"));
        assert!(d.is_empty());
        assert!(Decoder::new(&[0xff; 11]).uvarint().is_err());
        assert!(Decoder::new(&[5, b'a']).str().is_err());
    }
}
