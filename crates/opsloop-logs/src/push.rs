//! Decoding and validating Loki push requests (`POST /loki/api/v1/push`).
//!
//! Two wire forms, as Promtail, Grafana Agent/Alloy and the Docker driver send them:
//! - JSON: `{"streams":[{"stream":{"app":"x"},"values":[["<unix ns>","line",{"k":"v"}]]}]}`
//!   (the optional third element is structured metadata). The legacy
//!   `{"streams":[{"labels":"{app=\"x\"}","entries":[{"ts":"<RFC3339>","line":"…"}]}]}` form is
//!   accepted too.
//! - protobuf `logproto.PushRequest`, snappy block-compressed. The few messages are written
//!   out with `prost`'s derive rather than generated: no protoc build step for four structs.
//!
//! A gzip `Content-Encoding` is the host's business; these functions see the decoded body.
//! Everything a client controls is validated here, at the edge, with errors worded like Loki's.

use std::fmt;

use prost::Message;
use serde::Deserialize;
use serde::de::{self, SeqAccess, Visitor};

use crate::labels::{Labels, LabelsError, is_valid_label_name};

/// One log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Unix nanoseconds.
    pub ts: i64,
    pub line: String,
    /// Loki's structured metadata: labels attached to one entry, not part of the stream's identity.
    pub metadata: Vec<(String, String)>,
}

/// A stream and the entries pushed to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushStream {
    pub labels: Labels,
    pub entries: Vec<Entry>,
}

/// Limits applied while decoding (Loki's `limits_config` names in the comments).
#[derive(Debug, Clone)]
pub struct PushLimits {
    /// `max_line_size`: 256 KiB by default; 0 disables.
    pub max_line_size: usize,
    /// `max_label_names_per_series`.
    pub max_label_names_per_series: usize,
    /// `max_label_name_length`.
    pub max_label_name_length: usize,
    /// `max_label_value_length`.
    pub max_label_value_length: usize,
    /// The largest body accepted once decompressed (snappy announces the size up front).
    pub max_decoded_bytes: usize,
}

impl Default for PushLimits {
    fn default() -> Self {
        PushLimits {
            max_line_size: 256 * 1024,
            max_label_names_per_series: 15,
            max_label_name_length: 1024,
            max_label_value_length: 2048,
            max_decoded_bytes: 64 << 20,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("error parsing JSON push request: {0}")]
    Json(#[from] serde_json::Error),
    #[error("snappy decode error: {0}")]
    Snappy(#[from] snap::Error),
    #[error("protobuf decode error: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("the decompressed body is {size} bytes, more than the {limit} allowed")]
    TooLarge { size: usize, limit: usize },
    #[error("error parsing labels {labels:?}: {source}")]
    Labels { labels: String, source: LabelsError },
    #[error("error at least one label pair is required per stream")]
    NoLabels,
    #[error("invalid timestamp {value:?} for stream '{stream}': expected unix nanoseconds")]
    Timestamp { value: String, stream: String },
    #[error(
        "max entry size '{limit}' bytes exceeded for stream '{stream}' while adding an entry with length '{size}' bytes"
    )]
    LineTooLong { limit: usize, size: usize, stream: String },
    #[error("entry for stream '{stream}' has {count} label names; limit: {limit}")]
    TooManyLabels { count: usize, limit: usize, stream: String },
    #[error("stream '{stream}' has label name too long: '{name}'")]
    LabelNameTooLong { name: String, stream: String },
    #[error("stream '{stream}' has label value too long: '{value}'")]
    LabelValueTooLong { value: String, stream: String },
    #[error("invalid structured metadata name {name:?} in stream '{stream}'")]
    MetadataName { name: String, stream: String },
}

// --- JSON -----------------------------------------------------------------------------------

#[derive(Deserialize)]
struct JsonPush {
    #[serde(default)]
    streams: Vec<JsonStream>,
}

#[derive(Deserialize)]
struct JsonStream {
    #[serde(default)]
    stream: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    values: Vec<JsonValue>,
    // The legacy form.
    #[serde(default)]
    labels: Option<String>,
    #[serde(default)]
    entries: Vec<LegacyEntry>,
}

#[derive(Deserialize)]
struct LegacyEntry {
    #[serde(alias = "timestamp")]
    ts: String,
    line: String,
}

struct JsonValue {
    ts: String,
    line: String,
    metadata: Vec<(String, String)>,
}

impl<'de> Deserialize<'de> for JsonValue {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = JsonValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an array [\"<unix ns>\", \"<line>\", {structured metadata}?]")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<JsonValue, A::Error> {
                let ts: TsValue = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(0, &self))?;
                let line: String = seq.next_element()?.ok_or_else(|| de::Error::invalid_length(1, &self))?;
                let metadata: Option<std::collections::BTreeMap<String, String>> = seq.next_element()?;
                if seq.next_element::<de::IgnoredAny>()?.is_some() {
                    return Err(de::Error::invalid_length(4, &self));
                }
                Ok(JsonValue {
                    ts: ts.0,
                    line,
                    metadata: metadata.map(|m| m.into_iter().collect()).unwrap_or_default(),
                })
            }
        }
        d.deserialize_seq(V)
    }
}

/// Loki documents the timestamp as a string, but some clients send a JSON number.
struct TsValue(String);

impl<'de> Deserialize<'de> for TsValue {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = TsValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a timestamp in unix nanoseconds")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<TsValue, E> {
                Ok(TsValue(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<TsValue, E> {
                Ok(TsValue(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<TsValue, E> {
                Ok(TsValue(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<TsValue, E> {
                Ok(TsValue(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Decodes and validates a JSON push body.
pub fn decode_json(body: &[u8], limits: &PushLimits) -> Result<Vec<PushStream>, PushError> {
    let req: JsonPush = serde_json::from_slice(body)?;
    let mut out = Vec::with_capacity(req.streams.len());
    for s in req.streams {
        let labels = match (s.stream, s.labels) {
            (Some(map), _) => {
                let l = Labels::from_pairs(map.into_iter().filter(|(_, v)| !v.is_empty()));
                for (k, _) in l.iter() {
                    if !is_valid_label_name(k) {
                        return Err(PushError::Labels {
                            labels: l.to_string(),
                            source: LabelsError::InvalidName(k.to_string()),
                        });
                    }
                }
                l
            }
            (None, Some(text)) => parse_labels(&text)?,
            (None, None) => return Err(PushError::NoLabels),
        };
        validate_labels(&labels, limits)?;
        let mut entries = Vec::with_capacity(s.values.len() + s.entries.len());
        for v in s.values {
            let ts = parse_ns(&v.ts)
                .ok_or_else(|| PushError::Timestamp { value: v.ts.clone(), stream: labels.to_string() })?;
            entries.push(Entry { ts, line: v.line, metadata: v.metadata });
        }
        for e in s.entries {
            let ts = parse_rfc3339(&e.ts)
                .or_else(|| parse_ns(&e.ts))
                .ok_or_else(|| PushError::Timestamp { value: e.ts.clone(), stream: labels.to_string() })?;
            entries.push(Entry { ts, line: e.line, metadata: Vec::new() });
        }
        validate_entries(&labels, &entries, limits)?;
        out.push(PushStream { labels, entries });
    }
    Ok(out)
}

fn parse_labels(text: &str) -> Result<Labels, PushError> {
    Labels::parse(text).map_err(|e| match e {
        LabelsError::Empty => PushError::NoLabels,
        source => PushError::Labels { labels: text.to_string(), source },
    })
}

fn parse_ns(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<i64>().ok()
}

/// Parses an RFC 3339 timestamp (`2024-01-02T03:04:05.123456789Z`, or with a `+hh:mm` offset)
/// into unix nanoseconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b't' || b[10] == b' ') {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> { s.get(r)?.parse::<i64>().ok() };
    let (y, mo, d, h, mi, sec) = (num(0..4)?, num(5..7)?, num(8..10)?, num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut nanos = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let frac = &s[start..i];
        if frac.is_empty() {
            return None;
        }
        for (k, c) in frac.bytes().take(9).enumerate() {
            nanos += i64::from(c - b'0') * 10i64.pow(8 - k as u32);
        }
    }
    let offset = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(sign @ (b'+' | b'-')) if b.len() == i + 6 && b[i + 3] == b':' => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let o = oh * 3600 + om * 60;
            if *sign == b'+' { o } else { -o }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86400 + h * 3600 + mi * 60 + sec - offset;
    secs.checked_mul(1_000_000_000)?.checked_add(nanos)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn validate_labels(labels: &Labels, limits: &PushLimits) -> Result<(), PushError> {
    if labels.is_empty() {
        return Err(PushError::NoLabels);
    }
    if limits.max_label_names_per_series > 0 && labels.len() > limits.max_label_names_per_series {
        return Err(PushError::TooManyLabels {
            count: labels.len(),
            limit: limits.max_label_names_per_series,
            stream: labels.to_string(),
        });
    }
    for (k, v) in labels.iter() {
        if k.len() > limits.max_label_name_length {
            return Err(PushError::LabelNameTooLong { name: k.to_string(), stream: labels.to_string() });
        }
        if v.len() > limits.max_label_value_length {
            return Err(PushError::LabelValueTooLong { value: v.to_string(), stream: labels.to_string() });
        }
    }
    Ok(())
}

fn validate_entries(labels: &Labels, entries: &[Entry], limits: &PushLimits) -> Result<(), PushError> {
    for e in entries {
        if limits.max_line_size > 0 && e.line.len() > limits.max_line_size {
            return Err(PushError::LineTooLong {
                limit: limits.max_line_size,
                size: e.line.len(),
                stream: labels.to_string(),
            });
        }
        for (k, _) in &e.metadata {
            if !is_valid_label_name(k) {
                return Err(PushError::MetadataName { name: k.clone(), stream: labels.to_string() });
            }
        }
    }
    Ok(())
}

// --- protobuf -------------------------------------------------------------------------------

/// `logproto.PushRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    pub streams: Vec<StreamAdapter>,
}

/// `logproto.StreamAdapter`: labels in their selector string form.
#[derive(Clone, PartialEq, Message)]
pub struct StreamAdapter {
    #[prost(string, tag = "1")]
    pub labels: String,
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<EntryAdapter>,
    #[prost(uint64, tag = "3")]
    pub hash: u64,
}

/// `logproto.EntryAdapter`.
#[derive(Clone, PartialEq, Message)]
pub struct EntryAdapter {
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    #[prost(string, tag = "2")]
    pub line: String,
    #[prost(message, repeated, tag = "3")]
    pub structured_metadata: Vec<LabelPairAdapter>,
}

/// `logproto.LabelPairAdapter`.
#[derive(Clone, PartialEq, Message)]
pub struct LabelPairAdapter {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, Copy, PartialEq, Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// Decodes and validates a snappy-compressed protobuf push body.
pub fn decode_protobuf(body: &[u8], limits: &PushLimits) -> Result<Vec<PushStream>, PushError> {
    let size = snap::raw::decompress_len(body)?;
    if size > limits.max_decoded_bytes {
        return Err(PushError::TooLarge { size, limit: limits.max_decoded_bytes });
    }
    let raw = snap::raw::Decoder::new().decompress_vec(body)?;
    let req = PushRequest::decode(raw.as_slice())?;
    let mut out = Vec::with_capacity(req.streams.len());
    for s in req.streams {
        let labels = parse_labels(&s.labels)?;
        validate_labels(&labels, limits)?;
        let mut entries = Vec::with_capacity(s.entries.len());
        for e in s.entries {
            let t = e.timestamp.unwrap_or_default();
            let ts = t
                .seconds
                .checked_mul(1_000_000_000)
                .and_then(|v| v.checked_add(i64::from(t.nanos)))
                .filter(|_| (0..1_000_000_000).contains(&t.nanos))
                .ok_or_else(|| PushError::Timestamp {
                    value: format!("{}s {}ns", t.seconds, t.nanos),
                    stream: labels.to_string(),
                })?;
            entries.push(Entry {
                ts,
                line: e.line,
                metadata: e.structured_metadata.into_iter().map(|p| (p.name, p.value)).collect(),
            });
        }
        validate_entries(&labels, &entries, limits)?;
        out.push(PushStream { labels, entries });
    }
    Ok(out)
}

/// Encodes streams as a snappy-compressed `PushRequest` (what Promtail sends); for tests,
/// benches, and forwarding.
pub fn encode_protobuf(streams: &[PushStream]) -> Vec<u8> {
    let req = PushRequest {
        streams: streams
            .iter()
            .map(|s| StreamAdapter {
                labels: s.labels.to_string(),
                hash: 0,
                entries: s
                    .entries
                    .iter()
                    .map(|e| EntryAdapter {
                        timestamp: Some(Timestamp {
                            seconds: e.ts.div_euclid(1_000_000_000),
                            nanos: e.ts.rem_euclid(1_000_000_000) as i32,
                        }),
                        line: e.line.clone(),
                        structured_metadata: e
                            .metadata
                            .iter()
                            .map(|(n, v)| LabelPairAdapter { name: n.clone(), value: v.clone() })
                            .collect(),
                    })
                    .collect(),
            })
            .collect(),
    };
    let raw = req.encode_to_vec();
    // Compressing a buffer we own into a buffer sized by `max_compress_len` cannot fail.
    snap::raw::Encoder::new().compress_vec(&raw).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_values_and_metadata() {
        let body = br#"{"streams":[{"stream":{"app":"x","env":"prod"},"values":[["1700000000000000000","hello"],["1700000000000000001","w",{"trace_id":"abc"}]]}]}"#;
        let s = decode_json(body, &PushLimits::default()).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].labels.to_string(), r#"{app="x", env="prod"}"#);
        assert_eq!(s[0].entries[1].metadata, vec![("trace_id".to_string(), "abc".to_string())]);
    }

    #[test]
    fn json_legacy() {
        let body = br#"{"streams":[{"labels":"{app=\"x\"}","entries":[{"ts":"2024-01-02T03:04:05.5Z","line":"hi"}]}]}"#;
        let s = decode_json(body, &PushLimits::default()).unwrap();
        assert_eq!(s[0].entries[0].ts, 1_704_164_645_500_000_000);
    }

    #[test]
    fn json_errors() {
        let l = PushLimits { max_line_size: 3, ..Default::default() };
        let e = decode_json(br#"{"streams":[{"stream":{"a":"b"},"values":[["1","long line"]]}]}"#, &l).unwrap_err();
        assert!(e.to_string().contains("max entry size '3' bytes exceeded"), "{e}");
        let e = decode_json(br#"{"streams":[{"stream":{"a":"b"},"values":[["x1","l"]]}]}"#, &l).unwrap_err();
        assert!(matches!(e, PushError::Timestamp { .. }));
        let e = decode_json(br#"{"streams":[{"stream":{},"values":[["1","l"]]}]}"#, &l).unwrap_err();
        assert!(matches!(e, PushError::NoLabels));
        let e = decode_json(br#"{"streams":[{"stream":{"a-b":"c"},"values":[]}]}"#, &l).unwrap_err();
        assert!(matches!(e, PushError::Labels { .. }));
    }

    #[test]
    fn protobuf_roundtrip() {
        let streams = vec![PushStream {
            labels: Labels::parse(r#"{job="varlogs"}"#).unwrap(),
            entries: vec![Entry { ts: 1_700_000_000_123_456_789, line: "l1".into(), metadata: vec![] }],
        }];
        let body = encode_protobuf(&streams);
        assert_eq!(decode_protobuf(&body, &PushLimits::default()).unwrap(), streams);
    }
}
