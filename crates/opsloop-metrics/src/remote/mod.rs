//! Prometheus remote write, version 1: a snappy-compressed (block format) protobuf
//! `WriteRequest`. The message types are written out with `prost`'s derive instead of
//! generated from Prometheus's `.proto` files: four small messages do not justify a protoc
//! build step.
//!
//! `decode` is the receiving side; the sending side is [`writer::RemoteWriter`] over its
//! durable [`queue::Queue`].

pub mod queue;
pub mod writer;

pub use writer::{RemoteWriteStats, RemoteWriter, ShardStats, Tee, WriterError, WriterOptions};

use prost::Message;

use crate::labels::{Labels, is_valid_label_name};
use crate::storage::Sample;

#[derive(Clone, PartialEq, Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<WireSample>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct WireSample {
    #[prost(double, tag = "1")]
    pub value: f64,
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum RemoteWriteError {
    #[error("snappy decode error: {0}")]
    Snappy(#[from] snap::Error),
    #[error("the decompressed body is {size} bytes, more than the {limit} allowed")]
    TooLarge { size: usize, limit: usize },
    #[error("protobuf decode error: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("invalid label name {0:?}")]
    InvalidLabel(String),
    #[error("a series has no metric name")]
    NoName,
}

/// Decodes a remote-write body into samples, refusing more than `max_decoded` bytes once
/// decompressed (the length is read from the snappy header before anything is allocated).
pub fn decode(body: &[u8], max_decoded: usize) -> Result<Vec<(Labels, Sample)>, RemoteWriteError> {
    let size = snap::raw::decompress_len(body)?;
    if size > max_decoded {
        return Err(RemoteWriteError::TooLarge { size, limit: max_decoded });
    }
    let raw = snap::raw::Decoder::new().decompress_vec(body)?;
    let request = WriteRequest::decode(raw.as_slice())?;
    let mut out = Vec::new();
    for ts in request.timeseries {
        for l in &ts.labels {
            if !is_valid_label_name(&l.name) {
                return Err(RemoteWriteError::InvalidLabel(l.name.clone()));
            }
        }
        let labels = Labels::from_pairs(ts.labels.into_iter().map(|l| (l.name, l.value)));
        if labels.metric_name().is_none() {
            return Err(RemoteWriteError::NoName);
        }
        for s in ts.samples {
            out.push((labels.clone(), Sample { t: s.timestamp, v: s.value }));
        }
    }
    Ok(out)
}

/// Encodes samples as a remote-write body (what the sender posts).
pub fn encode(series: &[(Labels, Vec<Sample>)]) -> Vec<u8> {
    let request = WriteRequest {
        timeseries: series
            .iter()
            .map(|(labels, samples)| TimeSeries {
                labels: labels.iter().map(|l| Label { name: l.name.clone(), value: l.value.clone() }).collect(),
                samples: samples.iter().map(|s| WireSample { value: s.v, timestamp: s.t }).collect(),
            })
            .collect(),
    };
    let raw = request.encode_to_vec();
    snap::raw::Encoder::new().compress_vec(&raw).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let labels = Labels::from_pairs([("__name__", "up"), ("job", "x")]);
        let body = encode(&[(labels.clone(), vec![Sample { t: 1000, v: 1.0 }, Sample { t: 2000, v: 0.0 }])]);
        let decoded = decode(&body, 1 << 20).expect("decodes");
        assert_eq!(decoded.len(), 2);
        assert_eq!(decoded[0].0, labels);
        assert_eq!(decoded[1].1, Sample { t: 2000, v: 0.0 });
    }

    #[test]
    fn garbage_and_bombs_are_errors_not_panics() {
        assert!(decode(b"not snappy at all", 1 << 20).is_err());
        let big = snap::raw::Encoder::new().compress_vec(&vec![0u8; 1 << 16]).expect("compresses");
        assert!(matches!(decode(&big, 1024), Err(RemoteWriteError::TooLarge { .. })));
        for len in 0..64u8 {
            let bytes: Vec<u8> = (0..len).map(|i| i.wrapping_mul(37)).collect();
            let _ = decode(&bytes, 1 << 20);
        }
    }
}
