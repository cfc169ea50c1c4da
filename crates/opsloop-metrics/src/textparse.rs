//! The exposition formats a scrape answers with: Prometheus text 0.0.4 and OpenMetrics 1.0.
//!
//! [`Parser`] walks a payload entry by entry and lends out each sample without building its
//! label set: the scrape loop keys its series cache on the raw series text
//! ([`SampleLine::series`]), as Prometheus does, so a series seen in the previous scrape costs
//! a hash lookup and a float parse, not a `Labels`. Label values are only unescaped when a
//! [`Labels`] is actually built. Memory is bounded by the longest line (the label offsets of
//! one sample); the payload itself is bounded by whoever read it.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;

use crate::labels::{Labels, LabelsBuilder, METRIC_NAME};

/// Which grammar a payload is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4`, the classic format (also the fallback for anything else).
    Prometheus,
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
}

impl Format {
    /// The grammar a `Content-Type` header announces. Anything unknown is read as the classic
    /// text format, which is what Prometheus falls back to.
    pub fn from_content_type(content_type: &str) -> Format {
        let media = content_type.split(';').next().unwrap_or("").trim();
        if media.eq_ignore_ascii_case("application/openmetrics-text") {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }
}

/// The `# TYPE` of a metric family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    GaugeHistogram,
    Summary,
    Info,
    StateSet,
    #[default]
    Unknown,
}

impl MetricType {
    fn parse(text: &str, format: Format) -> Option<MetricType> {
        Some(match (text, format) {
            ("counter", _) => MetricType::Counter,
            ("gauge", _) => MetricType::Gauge,
            ("histogram", _) => MetricType::Histogram,
            ("summary", _) => MetricType::Summary,
            ("untyped", Format::Prometheus) | ("unknown", Format::OpenMetrics) => MetricType::Unknown,
            ("gaugehistogram", Format::OpenMetrics) => MetricType::GaugeHistogram,
            ("info", Format::OpenMetrics) => MetricType::Info,
            ("stateset", Format::OpenMetrics) => MetricType::StateSet,
            _ => return None,
        })
    }

    /// The word the metadata API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::GaugeHistogram => "gaugehistogram",
            MetricType::Summary => "summary",
            MetricType::Info => "info",
            MetricType::StateSet => "stateset",
            MetricType::Unknown => "unknown",
        }
    }
}

/// What a payload says about one metric family.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    pub metric_type: MetricType,
    pub help: Option<String>,
    pub unit: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct ParseError {
    /// 1-based line of the payload.
    pub line: usize,
    pub kind: ParseErrorKind,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    #[error("expected a metric name")]
    ExpectedMetricName,
    #[error("expected a label name")]
    ExpectedLabelName,
    #[error("expected `=` after label name")]
    ExpectedEqual,
    #[error("expected a quoted label value")]
    ExpectedLabelValue,
    #[error("expected `,` or `}}` after label value")]
    ExpectedCommaOrBrace,
    #[error("label value does not end before the line does")]
    UnterminatedLabelValue,
    #[error("label value is not valid UTF-8")]
    InvalidUtf8,
    #[error("label name {0:?} is not unique")]
    DuplicateLabel(String),
    #[error("expected a value after the series")]
    ExpectedValue,
    #[error("invalid value {0:?}")]
    InvalidValue(String),
    #[error("invalid timestamp {0:?}")]
    InvalidTimestamp(String),
    #[error("unexpected text {0:?} after the sample")]
    TrailingText(String),
    #[error("invalid metric type {0:?}")]
    InvalidType(String),
    #[error("expected a metric name after # {0}")]
    ExpectedMetadataName(&'static str),
    #[error("unit {unit:?} is not a suffix of metric {metric:?}")]
    UnitNotSuffix { unit: String, metric: String },
    #[error("invalid exemplar")]
    InvalidExemplar,
    #[error("OpenMetrics allows no blank lines")]
    BlankLine,
    #[error("OpenMetrics allows only # HELP, # TYPE, # UNIT and # EOF comments")]
    InvalidComment,
    #[error("data does not end with # EOF")]
    MissingEof,
    #[error("unexpected data after # EOF")]
    DataAfterEof,
}

/// A label of the current sample: offsets into the payload, so nothing is copied until a
/// [`Labels`] is built.
#[derive(Debug, Clone)]
struct LabelRef {
    name: Range<usize>,
    value: Range<usize>,
    /// Whether the value holds a backslash and needs unescaping.
    escaped: bool,
}

/// One entry of a payload.
#[derive(Debug)]
pub enum Entry<'p> {
    Help { family: &'p str, text: Cow<'p, str> },
    Type { family: &'p str, metric_type: MetricType },
    Unit { family: &'p str, unit: &'p str },
    Sample(SampleLine<'p>),
}

/// A sample as written, borrowed from the payload and the parser.
#[derive(Debug)]
pub struct SampleLine<'p> {
    /// The series' text (name and labels as written): equal texts are the same series, which
    /// makes it a cheap cache key.
    pub series: &'p [u8],
    pub name: &'p str,
    /// Milliseconds, when the line carries its own timestamp.
    pub timestamp: Option<i64>,
    pub value: f64,
    buf: &'p [u8],
    labels: &'p [LabelRef],
}

impl<'p> SampleLine<'p> {
    /// The labels as written (the metric name not among them), values unescaped.
    pub fn label_pairs(&self) -> impl Iterator<Item = (&'p str, Cow<'p, str>)> + '_ {
        self.labels.iter().map(|l| (text(self.buf, &l.name), label_value(self.buf, l)))
    }

    /// The series' label set with `__name__`.
    pub fn labels(&self) -> Labels {
        let mut b = LabelsBuilder::default();
        self.write_labels(&mut b);
        b.build()
    }

    /// Sets `__name__` and the written labels on a builder.
    pub fn write_labels(&self, b: &mut LabelsBuilder) {
        b.set(METRIC_NAME.to_owned(), self.name.to_owned());
        for (n, v) in self.label_pairs() {
            b.set(n.to_owned(), v.into_owned());
        }
    }

    /// An OpenMetrics `_created` sample: the creation time of a counter, histogram or summary,
    /// which Prometheus 2.x stores as a series of its own.
    pub fn is_created(&self) -> bool {
        self.name.ends_with("_created")
    }
}

/// Text whose bytes the parser has checked to be ASCII name characters or valid UTF-8.
fn text<'p>(buf: &'p [u8], range: &Range<usize>) -> &'p str {
    std::str::from_utf8(&buf[range.clone()]).unwrap_or("")
}

fn label_value<'p>(buf: &'p [u8], l: &LabelRef) -> Cow<'p, str> {
    let raw = text(buf, &l.value);
    if !l.escaped {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        // Only these three escapes mean something; any other backslash stays as written,
        // which is what Prometheus's unescaping does.
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    Cow::Owned(out)
}

/// HELP text escapes: `\\` and `\n` in both formats, `\"` in OpenMetrics too.
fn unescape_help(raw: &str, format: Format) -> Cow<'_, str> {
    if !raw.contains('\\') {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('\\') => out.push('\\'),
            Some('"') if format == Format::OpenMetrics => out.push('"'),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    Cow::Owned(out)
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b':'
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

fn is_label_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_'
}

fn is_label_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// A float as Prometheus reads one: Go's `ParseFloat` without the newer `_` and hex forms.
/// A NaN read from a payload is made the ordinary NaN, so it can never pass for the staleness
/// marker.
fn parse_float(token: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(token).ok()?;
    if s.is_empty() || s.bytes().any(|b| matches!(b, b'_' | b'p' | b'P' | b'x' | b'X')) {
        return None;
    }
    let v: f64 = s.parse().ok()?;
    Some(if v.is_nan() { f64::NAN } else { v })
}

/// Walks a payload one entry at a time.
#[derive(Debug)]
pub struct Parser<'a> {
    buf: &'a [u8],
    pos: usize,
    line: usize,
    format: Format,
    eof_seen: bool,
    labels: Vec<LabelRef>,
}

impl<'a> Parser<'a> {
    pub fn new(buf: &'a [u8], format: Format) -> Self {
        Parser { buf, pos: 0, line: 0, format, eof_seen: false, labels: Vec::new() }
    }

    fn error(&self, kind: ParseErrorKind) -> ParseError {
        ParseError { line: self.line, kind }
    }

    /// The next entry, `None` at the end of the payload.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Result<Option<Entry<'_>>, ParseError> {
        loop {
            if self.pos >= self.buf.len() {
                if self.format == Format::OpenMetrics && !self.eof_seen {
                    self.line += 1;
                    return Err(self.error(ParseErrorKind::MissingEof));
                }
                return Ok(None);
            }
            let start = self.pos;
            let end = memchr::memchr(b'\n', &self.buf[start..]).map_or(self.buf.len(), |i| start + i);
            self.pos = end + 1;
            self.line += 1;
            let mut line_end = end;
            if self.format == Format::Prometheus && line_end > start && self.buf[line_end - 1] == b'\r' {
                line_end -= 1;
            }
            if self.eof_seen {
                return Err(self.error(ParseErrorKind::DataAfterEof));
            }
            let line = &self.buf[start..line_end];
            match self.format {
                Format::Prometheus => {
                    let first = line.iter().position(|b| *b != b' ' && *b != b'\t');
                    let Some(first) = first else { continue };
                    if line[first] == b'#' {
                        match self.comment(start + first + 1, line_end)? {
                            Some(entry) => return Ok(Some(entry)),
                            None => continue,
                        }
                    }
                    return self.sample(start + first, line_end).map(Some);
                }
                Format::OpenMetrics => {
                    if line.is_empty() {
                        return Err(self.error(ParseErrorKind::BlankLine));
                    }
                    if line[0] == b'#' {
                        match self.comment(start + 1, line_end)? {
                            Some(entry) => return Ok(Some(entry)),
                            None => continue,
                        }
                    }
                    return self.sample(start, line_end).map(Some);
                }
            }
        }
    }

    fn is_space(&self, b: u8) -> bool {
        b == b' ' || (b == b'\t' && self.format == Format::Prometheus)
    }

    fn skip_space(&self, mut i: usize, end: usize) -> usize {
        while i < end && self.is_space(self.buf[i]) {
            i += 1;
        }
        i
    }

    /// A `#` line from just after the `#`: metadata, `# EOF`, or (in the classic format) a
    /// comment, which yields nothing.
    fn comment(&mut self, from: usize, end: usize) -> Result<Option<Entry<'a>>, ParseError> {
        let buf = self.buf;
        let om = self.format == Format::OpenMetrics;
        let i = self.skip_space(from, end);
        if om && (i != from + 1) {
            return Err(self.error(ParseErrorKind::InvalidComment));
        }
        let word_end = (i..end).find(|&j| self.is_space(buf[j])).unwrap_or(end);
        let word = &buf[i..word_end];
        let keyword: &'static str = match word {
            b"HELP" => "HELP",
            b"TYPE" => "TYPE",
            b"UNIT" if om => "UNIT",
            b"EOF" if om && word_end == end => {
                self.eof_seen = true;
                // A final newline after `# EOF` is allowed, nothing else.
                if self.pos < buf.len() {
                    self.line += 1;
                    return Err(self.error(ParseErrorKind::DataAfterEof));
                }
                return Ok(None);
            }
            _ if om => return Err(self.error(ParseErrorKind::InvalidComment)),
            _ => return Ok(None),
        };
        let name_start = self.skip_space(word_end, end);
        let mut name_end = name_start;
        if name_end < end && is_name_start(buf[name_end]) {
            name_end += 1;
            while name_end < end && is_name_char(buf[name_end]) {
                name_end += 1;
            }
        }
        if name_end == name_start || (name_end < end && !self.is_space(buf[name_end])) {
            return Err(self.error(ParseErrorKind::ExpectedMetadataName(keyword)));
        }
        let family = text(buf, &(name_start..name_end));
        let rest_start = if name_end < end { name_end + 1 } else { end };
        let rest_start = if om { rest_start } else { self.skip_space(rest_start, end) };
        let rest = std::str::from_utf8(&buf[rest_start..end]).map_err(|_| self.error(ParseErrorKind::InvalidUtf8))?;
        match keyword {
            "HELP" => Ok(Some(Entry::Help { family, text: unescape_help(rest, self.format) })),
            "TYPE" => {
                let word = rest.trim_end_matches([' ', '\t']);
                match MetricType::parse(word, self.format) {
                    Some(metric_type) => Ok(Some(Entry::Type { family, metric_type })),
                    None => Err(self.error(ParseErrorKind::InvalidType(word.to_owned()))),
                }
            }
            _ => {
                let unit = rest;
                let suffix_ok = unit.is_empty()
                    || (family.len() > unit.len()
                        && family.ends_with(unit)
                        && family.as_bytes()[family.len() - unit.len() - 1] == b'_');
                if !suffix_ok {
                    return Err(
                        self.error(ParseErrorKind::UnitNotSuffix { unit: unit.to_owned(), metric: family.to_owned() })
                    );
                }
                Ok(Some(Entry::Unit { family, unit }))
            }
        }
    }

    fn sample(&mut self, start: usize, end: usize) -> Result<Entry<'_>, ParseError> {
        let buf = self.buf;
        let mut i = start;
        if i >= end || !is_name_start(buf[i]) {
            return Err(self.error(ParseErrorKind::ExpectedMetricName));
        }
        i += 1;
        while i < end && is_name_char(buf[i]) {
            i += 1;
        }
        let name_end = i;
        self.labels.clear();
        let j = if self.format == Format::Prometheus { self.skip_space(i, end) } else { i };
        if j < end && buf[j] == b'{' {
            i = self.label_set(j + 1, end)?;
        }
        let series_end = i;
        // The value: at least one separator, then a token.
        let value_start = self.skip_space(i, end);
        if value_start == i || value_start >= end {
            return Err(self.error(ParseErrorKind::ExpectedValue));
        }
        let value_end = (value_start..end).find(|&k| self.is_space(buf[k])).unwrap_or(end);
        let token = &buf[value_start..value_end];
        let value = parse_float(token)
            .ok_or_else(|| self.error(ParseErrorKind::InvalidValue(String::from_utf8_lossy(token).into_owned())))?;
        let mut k = self.skip_space(value_end, end);
        let mut timestamp = None;
        if k < end && buf[k] != b'#' {
            let ts_end = (k..end).find(|&m| self.is_space(buf[m])).unwrap_or(end);
            let token = &buf[k..ts_end];
            timestamp = Some(self.timestamp(token)?);
            k = self.skip_space(ts_end, end);
        }
        if k < end {
            if self.format == Format::OpenMetrics && buf[k] == b'#' {
                self.exemplar(k + 1, end)?;
            } else {
                return Err(
                    self.error(ParseErrorKind::TrailingText(String::from_utf8_lossy(&buf[k..end]).into_owned()))
                );
            }
        }
        Ok(Entry::Sample(SampleLine {
            series: &buf[start..series_end],
            name: text(buf, &(start..name_end)),
            timestamp,
            value,
            buf,
            labels: &self.labels,
        }))
    }

    fn timestamp(&self, token: &[u8]) -> Result<i64, ParseError> {
        let bad = || self.error(ParseErrorKind::InvalidTimestamp(String::from_utf8_lossy(token).into_owned()));
        match self.format {
            Format::Prometheus => std::str::from_utf8(token).ok().and_then(|s| s.parse::<i64>().ok()).ok_or_else(bad),
            // OpenMetrics writes seconds, with a fraction if it likes.
            Format::OpenMetrics => {
                let secs = parse_float(token).ok_or_else(bad)?;
                if !secs.is_finite() {
                    return Err(bad());
                }
                Ok((secs * 1000.0) as i64)
            }
        }
    }

    /// `{name="value",...}` from just after the `{`; returns the index after the `}`.
    fn label_set(&mut self, mut i: usize, end: usize) -> Result<usize, ParseError> {
        let buf = self.buf;
        loop {
            i = self.skip_space(i, end);
            if i < end && buf[i] == b'}' {
                return Ok(i + 1);
            }
            if i >= end || !is_label_start(buf[i]) {
                return Err(self.error(ParseErrorKind::ExpectedLabelName));
            }
            let name_start = i;
            while i < end && is_label_char(buf[i]) {
                i += 1;
            }
            let name = name_start..i;
            i = self.skip_space(i, end);
            if i >= end || buf[i] != b'=' {
                return Err(self.error(ParseErrorKind::ExpectedEqual));
            }
            i = self.skip_space(i + 1, end);
            if i >= end || buf[i] != b'"' {
                return Err(self.error(ParseErrorKind::ExpectedLabelValue));
            }
            i += 1;
            let value_start = i;
            let mut escaped = false;
            loop {
                let Some(off) = memchr::memchr2(b'"', b'\\', &buf[i..end]) else {
                    return Err(self.error(ParseErrorKind::UnterminatedLabelValue));
                };
                i += off;
                if buf[i] == b'\\' {
                    escaped = true;
                    i += 2;
                    if i > end {
                        return Err(self.error(ParseErrorKind::UnterminatedLabelValue));
                    }
                } else {
                    break;
                }
            }
            let value = value_start..i;
            if std::str::from_utf8(&buf[value.clone()]).is_err() {
                return Err(self.error(ParseErrorKind::InvalidUtf8));
            }
            i += 1;
            let new_name = &buf[name.clone()];
            if self.labels.iter().any(|l| &buf[l.name.clone()] == new_name) {
                return Err(self.error(ParseErrorKind::DuplicateLabel(text(buf, &name).to_owned())));
            }
            self.labels.push(LabelRef { name, value, escaped });
            i = self.skip_space(i, end);
            if i < end && buf[i] == b',' {
                i += 1;
            } else if i < end && buf[i] == b'}' {
                return Ok(i + 1);
            } else {
                return Err(self.error(ParseErrorKind::ExpectedCommaOrBrace));
            }
        }
    }

    /// An OpenMetrics exemplar (` # {labels} value [timestamp]`), checked and dropped: exemplar
    /// storage is not part of opsloop.
    fn exemplar(&mut self, i: usize, end: usize) -> Result<(), ParseError> {
        let buf = self.buf;
        let bad = |p: &Self| p.error(ParseErrorKind::InvalidExemplar);
        if i + 1 >= end || buf[i] != b' ' || buf[i + 1] != b'{' {
            return Err(bad(self));
        }
        let saved = std::mem::take(&mut self.labels);
        let after = self.label_set(i + 2, end);
        let exemplar_labels = std::mem::replace(&mut self.labels, saved);
        let after = after?;
        let _ = exemplar_labels;
        let rest = &buf[after..end];
        let mut parts = rest.split(|b| *b == b' ').filter(|p| !p.is_empty());
        let value = parts.next().ok_or_else(|| bad(self))?;
        parse_float(value).ok_or_else(|| bad(self))?;
        if let Some(ts) = parts.next() {
            parse_float(ts).filter(|t| t.is_finite()).ok_or_else(|| bad(self))?;
        }
        if parts.next().is_some() {
            return Err(bad(self));
        }
        Ok(())
    }
}

/// A whole payload read at once: the convenient form for tests and tools.
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    pub samples: Vec<(Labels, Option<i64>, f64)>,
    /// Per family name, as its `# HELP`, `# TYPE` and `# UNIT` lines say.
    pub metadata: BTreeMap<String, Metadata>,
}

/// Parses a whole payload.
pub fn parse(buf: &[u8], format: Format) -> Result<Parsed, ParseError> {
    let mut out = Parsed::default();
    let mut p = Parser::new(buf, format);
    while let Some(entry) = p.next()? {
        match entry {
            Entry::Help { family, text } => {
                out.metadata.entry(family.to_owned()).or_default().help = Some(text.into_owned());
            }
            Entry::Type { family, metric_type } => {
                out.metadata.entry(family.to_owned()).or_default().metric_type = metric_type;
            }
            Entry::Unit { family, unit } => {
                out.metadata.entry(family.to_owned()).or_default().unit = Some(unit.to_owned());
            }
            Entry::Sample(s) => out.samples.push((s.labels(), s.timestamp, s.value)),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str, format: Format) -> Parsed {
        match parse(text.as_bytes(), format) {
            Ok(p) => p,
            Err(e) => panic!("{text:?} should parse: {e}"),
        }
    }

    fn err(text: &str, format: Format) -> ParseError {
        match parse(text.as_bytes(), format) {
            Ok(p) => panic!("{text:?} should fail, got {p:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn classic_format_with_metadata_comments_and_timestamps() {
        let text = "# HELP go_gc_duration_seconds A summary of the GC invocation durations.\n\
# \tTYPE go_gc_duration_seconds summary\n\
go_gc_duration_seconds{quantile=\"0\"} 4.9351e-05\n\
go_gc_duration_seconds{ quantile = \"0.25\" , } 7.424100000000001e-05 1700000000000\n\
# a plain comment\n\
\n\
  go_gc_duration_seconds_sum 0.0018\t 123\n\
# TYPE nan gauge\n\
nan NaN\n\
pos +Inf\n\
neg -Inf\n\
empty{a=\"\"} 1\n";
        let p = ok(text, Format::Prometheus);
        assert_eq!(p.samples.len(), 7);
        assert_eq!(p.samples[0].0.to_string(), r#"go_gc_duration_seconds{quantile="0"}"#);
        assert_eq!(p.samples[1].1, Some(1_700_000_000_000));
        assert_eq!(p.samples[2].0.to_string(), "go_gc_duration_seconds_sum");
        assert_eq!(p.samples[2].1, Some(123));
        assert!(p.samples[3].2.is_nan());
        assert!(!crate::storage::is_stale_nan(p.samples[3].2));
        assert_eq!(p.samples[4].2, f64::INFINITY);
        assert_eq!(p.samples[5].2, f64::NEG_INFINITY);
        assert_eq!(p.samples[6].0.to_string(), "empty");
        let meta = &p.metadata["go_gc_duration_seconds"];
        assert_eq!(meta.help.as_deref(), Some("A summary of the GC invocation durations."));
        // `# \tTYPE` is still a TYPE line: whitespace after `#` is free in the classic format.
        assert_eq!(meta.metric_type, MetricType::Summary);
        assert_eq!(p.metadata["nan"].metric_type, MetricType::Gauge);
    }

    #[test]
    fn tricky_escapes() {
        let text = r#"# HELP m Help with \\ backslash, \n newline and \" quote and \t tab
m{a="quote \" inside",b="back\\slash",c="new\nline",d="other \t escape",e="\\\"",f="trailing \\"} 1
"#;
        let p = ok(text, Format::Prometheus);
        let l = &p.samples[0].0;
        assert_eq!(l.get("a"), Some("quote \" inside"));
        assert_eq!(l.get("b"), Some("back\\slash"));
        assert_eq!(l.get("c"), Some("new\nline"));
        assert_eq!(l.get("d"), Some("other \\t escape"));
        assert_eq!(l.get("e"), Some("\\\""));
        assert_eq!(l.get("f"), Some("trailing \\"));
        // In the classic format `\"` in HELP is not an escape.
        assert_eq!(
            p.metadata["m"].help.as_deref(),
            Some("Help with \\ backslash, \n newline and \\\" quote and \\t tab")
        );
        let om = ok("# HELP m say \\\"hi\\\"\nm{a=\"}{,=\"} 1\n# EOF\n", Format::OpenMetrics);
        assert_eq!(om.metadata["m"].help.as_deref(), Some("say \"hi\""));
        assert_eq!(om.samples[0].0.get("a"), Some("}{,="));
        let utf = ok("m{a=\"żółw 🐢\"} 1\n", Format::Prometheus);
        assert_eq!(utf.samples[0].0.get("a"), Some("żółw 🐢"));
    }

    #[test]
    fn openmetrics_units_exemplars_created_and_eof() {
        let text = "# TYPE foo_seconds counter\n\
# UNIT foo_seconds seconds\n\
# HELP foo_seconds Time spent.\n\
foo_seconds_total{a=\"b\"} 17.0 1520879607.789 # {trace_id=\"KOO5S4vxi0o\"} 0.67\n\
foo_seconds_created{a=\"b\"} 1520430000.123\n\
# TYPE bar stateset\n\
bar{bar=\"x\"} 1 # {} 1 123\n\
# EOF\n";
        let p = ok(text, Format::OpenMetrics);
        assert_eq!(p.samples.len(), 3);
        assert_eq!(p.samples[0].1, Some(1_520_879_607_789));
        assert_eq!(p.samples[0].2, 17.0);
        assert_eq!(p.samples[1].0.metric_name(), Some("foo_seconds_created"));
        let meta = &p.metadata["foo_seconds"];
        assert_eq!(meta.metric_type, MetricType::Counter);
        assert_eq!(meta.unit.as_deref(), Some("seconds"));
        assert_eq!(p.metadata["bar"].metric_type, MetricType::StateSet);
        let mut parser = Parser::new(b"x_created 1\n# EOF", Format::OpenMetrics);
        match parser.next() {
            Ok(Some(Entry::Sample(s))) => assert!(s.is_created()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors_name_their_line() {
        let e = err("a 1\nb{x=\"1\" 2\n", Format::Prometheus);
        assert_eq!(e.line, 2);
        assert_eq!(e.kind, ParseErrorKind::ExpectedCommaOrBrace);
        assert_eq!(e.to_string(), "line 2: expected `,` or `}` after label value");
        let cases: &[(&str, Format, ParseErrorKind)] = &[
            ("a\n", Format::Prometheus, ParseErrorKind::ExpectedValue),
            ("a 1 2 3\n", Format::Prometheus, ParseErrorKind::TrailingText("3".into())),
            ("a 1_000\n", Format::Prometheus, ParseErrorKind::InvalidValue("1_000".into())),
            ("a 0x1p3\n", Format::Prometheus, ParseErrorKind::InvalidValue("0x1p3".into())),
            ("a 1 1.5\n", Format::Prometheus, ParseErrorKind::InvalidTimestamp("1.5".into())),
            ("1a 1\n", Format::Prometheus, ParseErrorKind::ExpectedMetricName),
            ("a{1=\"x\"} 1\n", Format::Prometheus, ParseErrorKind::ExpectedLabelName),
            ("a{b} 1\n", Format::Prometheus, ParseErrorKind::ExpectedEqual),
            ("a{b=c} 1\n", Format::Prometheus, ParseErrorKind::ExpectedLabelValue),
            ("a{b=\"c} 1\n", Format::Prometheus, ParseErrorKind::UnterminatedLabelValue),
            ("a{b=\"1\",b=\"2\"} 1\n", Format::Prometheus, ParseErrorKind::DuplicateLabel("b".into())),
            ("# TYPE a gaugehistogram\n", Format::Prometheus, ParseErrorKind::InvalidType("gaugehistogram".into())),
            ("# TYPE a untyped\n# EOF\n", Format::OpenMetrics, ParseErrorKind::InvalidType("untyped".into())),
            ("# HELP\n", Format::Prometheus, ParseErrorKind::ExpectedMetadataName("HELP")),
            ("a 1\n", Format::OpenMetrics, ParseErrorKind::MissingEof),
            ("a 1\n\n# EOF\n", Format::OpenMetrics, ParseErrorKind::BlankLine),
            ("# EOF\na 1\n", Format::OpenMetrics, ParseErrorKind::DataAfterEof),
            ("# EOF\n\n", Format::OpenMetrics, ParseErrorKind::DataAfterEof),
            ("# hello\n# EOF\n", Format::OpenMetrics, ParseErrorKind::InvalidComment),
            ("a 1 # {x=\"y\"}\n# EOF\n", Format::OpenMetrics, ParseErrorKind::InvalidExemplar),
            ("a 1 NaN\n# EOF\n", Format::OpenMetrics, ParseErrorKind::InvalidTimestamp("NaN".into())),
            (
                "# UNIT a_bytes seconds\n# EOF\n",
                Format::OpenMetrics,
                ParseErrorKind::UnitNotSuffix { unit: "seconds".into(), metric: "a_bytes".into() },
            ),
        ];
        for (text, format, kind) in cases {
            assert_eq!(&err(text, *format).kind, kind, "{text:?}");
        }
        let invalid = [b'a', b'{', b'b', b'=', b'"', 0xff, b'"', b'}', b' ', b'1'];
        assert_eq!(
            parse(&invalid, Format::Prometheus).map(|_| ()).map_err(|e| e.kind),
            Err(ParseErrorKind::InvalidUtf8)
        );
    }

    #[test]
    fn content_types() {
        assert_eq!(
            Format::from_content_type("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            Format::OpenMetrics
        );
        assert_eq!(Format::from_content_type("text/plain; version=0.0.4"), Format::Prometheus);
        assert_eq!(Format::from_content_type(""), Format::Prometheus);
    }

    /// Random bytes, and random mutations of a valid payload, never panic.
    #[test]
    fn random_input_never_panics() {
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let seed = "# HELP a x\\n\n# TYPE a counter\na_total{b=\"c\\\"d\",e=\"f\"} 1.5e3 17 # {t=\"1\"} 2 3\n# EOF\n";
        let alphabet = b"#{}=\",\\ \n\tabAB_:01.+-eNInf";
        for round in 0..20_000 {
            let mut input: Vec<u8> = if round % 2 == 0 {
                (0..next() % 64).map(|_| alphabet[(next() % alphabet.len() as u64) as usize]).collect()
            } else {
                seed.as_bytes().to_vec()
            };
            for _ in 0..(next() % 4) {
                if input.is_empty() {
                    break;
                }
                let at = (next() % input.len() as u64) as usize;
                input[at] = (next() & 0xff) as u8;
            }
            for format in [Format::Prometheus, Format::OpenMetrics] {
                let _ = parse(&input, format);
            }
        }
    }

    /// 5,000 series in the classic format, the size of a busy exporter: parsed in well under
    /// a millisecond in release builds (debug builds are ~20x slower, hence the loose bound).
    #[test]
    fn parse_speed() {
        let mut text = String::new();
        text.push_str("# HELP http_requests_total Requests.\n# TYPE http_requests_total counter\n");
        for i in 0..5_000 {
            text.push_str(&format!(
                "http_requests_total{{method=\"GET\",handler=\"/api/v1/item/{i}\",code=\"200\"}} {}.5\n",
                i * 7
            ));
        }
        let start = std::time::Instant::now();
        let rounds = 20;
        let mut count = 0;
        for _ in 0..rounds {
            let mut p = Parser::new(text.as_bytes(), Format::Prometheus);
            while let Ok(Some(e)) = p.next() {
                if let Entry::Sample(s) = e {
                    count += s.series.len().min(1);
                }
            }
        }
        let per_parse = start.elapsed() / rounds;
        assert_eq!(count, 5_000 * rounds as usize);
        eprintln!("parsed 5,000 series in {per_parse:?}");
        assert!(per_parse < std::time::Duration::from_millis(50), "{per_parse:?}");
    }
}
