//! Running a LogQL pipeline over one entry: line filters, parsers, label filters, formatting,
//! `drop`/`keep`. Errors follow Loki: a parser or conversion failure does not drop the line,
//! it sets `__error__` (and `__error_details__`) so that a label filter can select or skip it.

use std::borrow::Cow;

use crate::labels::{Labels, is_valid_label_name, sanitize_label_name};
use crate::logql::ast::*;
use crate::logql::lexer::{parse_bytes, parse_duration};
use crate::logql::template::TemplateContext;

pub const ERROR_LABEL: &str = "__error__";
pub const ERROR_DETAILS_LABEL: &str = "__error_details__";

/// The error kinds Loki writes in `__error__`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PipelineErr {
    Json,
    Logfmt,
    LabelFilter,
    TemplateFormat,
    SampleExtraction,
}

impl PipelineErr {
    pub fn as_str(self) -> &'static str {
        match self {
            PipelineErr::Json => "JSONParserErr",
            PipelineErr::Logfmt => "LogfmtParserErr",
            PipelineErr::LabelFilter => "LabelFilterErr",
            PipelineErr::TemplateFormat => "TemplateFormatErr",
            PipelineErr::SampleExtraction => "SampleExtractionErr",
        }
    }
}

/// The labels of an entry while the pipeline runs: the stream's own (`base`, used to rename
/// clashing extracted labels to `name_extracted`) and the current set.
pub struct EntryLabels<'a> {
    pub base: &'a Labels,
    pub current: Labels,
}

impl EntryLabels<'_> {
    fn has_err(&self) -> bool {
        self.current.get(ERROR_LABEL).is_some()
    }
    pub fn set_err(&mut self, e: PipelineErr, details: &str) {
        // The first error wins: later stages must not hide the cause.
        if self.has_err() {
            return;
        }
        self.current.set(ERROR_LABEL, e.as_str());
        if !details.is_empty() {
            self.current.set(ERROR_DETAILS_LABEL, details);
        }
    }
    /// Adds a label extracted by a parser. A name clashing with a stream label gets the
    /// `_extracted` suffix, as in Loki.
    fn extracted(&mut self, name: &str, value: &str) {
        if self.base.get(name).is_some() {
            let n = format!("{name}_extracted");
            self.current.set(&n, value);
        } else {
            self.current.set(name, value);
        }
    }
}

/// Runs `stages` on a line. Returns the (possibly rewritten) line, or `None` when a filter
/// dropped it.
pub fn process<'l>(stages: &[Stage], ts: i64, line: &'l str, labels: &mut EntryLabels<'_>) -> Option<Cow<'l, str>> {
    let mut line: Cow<'l, str> = Cow::Borrowed(line);
    for s in stages {
        match s {
            Stage::LineFilter(f) => {
                if !f.matches(line.as_bytes()) {
                    return None;
                }
            }
            Stage::Parser(p) => parse(p, &mut line, labels),
            Stage::LabelFilter(f) => {
                if !label_filter(f, labels) {
                    return None;
                }
            }
            Stage::LineFormat(t) => {
                let rendered = t.render(&TemplateContext { labels: &labels.current, line: &line, ts });
                match rendered {
                    Ok(s) => line = Cow::Owned(s),
                    Err(e) => labels.set_err(PipelineErr::TemplateFormat, &e.to_string()),
                }
            }
            Stage::LabelFormat(items) => {
                // Every template sees the labels as they were before this stage.
                let snapshot = labels.current.clone();
                for item in items {
                    match item {
                        LabelFmt::Rename { dst, src } => {
                            let v = snapshot.get(src).unwrap_or("").to_string();
                            labels.current.remove(src);
                            labels.current.set(dst, &v);
                        }
                        LabelFmt::Template { dst, tmpl } => {
                            match tmpl.render(&TemplateContext { labels: &snapshot, line: &line, ts }) {
                                Ok(v) => labels.current.set(dst, &v),
                                Err(e) => labels.set_err(PipelineErr::TemplateFormat, &e.to_string()),
                            }
                        }
                    }
                }
            }
            Stage::Drop(items) => labels.current.retain(|k, v| !items.iter().any(|i| sel_matches(i, k, v))),
            Stage::Keep(items) => labels.current.retain(|k, v| items.iter().any(|i| sel_matches(i, k, v))),
            Stage::Decolorize => {
                if line.contains('\x1b') {
                    line = Cow::Owned(decolorize(&line));
                }
            }
        }
    }
    Some(line)
}

fn sel_matches(sel: &LabelSel, k: &str, v: &str) -> bool {
    match sel {
        LabelSel::Name(n) => n == k,
        LabelSel::Matcher(m) => m.name == k && m.matches(v),
    }
}

/// Removes ANSI escape sequences (colors and cursor movement).
pub fn decolorize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                // Parameters and intermediates, then one final byte in @..~.
                for n in chars.by_ref() {
                    if ('@'..='~').contains(&n) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Evaluates a label filter; numeric comparisons on a line that already has an error pass,
/// so that only the error itself can be filtered on (Loki's rule).
pub fn label_filter(f: &LabelFilter, labels: &mut EntryLabels<'_>) -> bool {
    match f {
        LabelFilter::And(a, b) => label_filter(a, labels) && label_filter(b, labels),
        LabelFilter::Or(a, b) => label_filter(a, labels) || label_filter(b, labels),
        LabelFilter::Matcher(m) => m.matches(labels.current.get(&m.name).unwrap_or("")),
        LabelFilter::Compare { name, op, kind, value, .. } => {
            if labels.has_err() {
                return true;
            }
            let Some(raw) = labels.current.get(name) else {
                return false;
            };
            match convert(raw, *kind) {
                Ok(v) => op.apply(v, *value),
                Err(details) => {
                    labels.set_err(PipelineErr::LabelFilter, &details);
                    true
                }
            }
        }
    }
}

fn convert(raw: &str, kind: ValueKind) -> Result<f64, String> {
    let t = raw.trim();
    match kind {
        ValueKind::Number => {
            t.parse::<f64>().map_err(|_| format!("strconv.ParseFloat: parsing {raw:?}: invalid syntax"))
        }
        ValueKind::Duration => {
            parse_duration(t).map(|ns| ns as f64 / 1e9).ok_or_else(|| format!("time: invalid duration {raw:?}"))
        }
        ValueKind::Bytes => parse_bytes(t)
            .map(|b| b as f64)
            .or_else(|| t.parse::<f64>().ok())
            .ok_or_else(|| format!("strconv.ParseFloat: parsing {raw:?}: invalid syntax")),
    }
}

/// Converts an unwrapped label value.
pub fn unwrap_value(raw: &str, conv: UnwrapConv) -> Result<f64, String> {
    match conv {
        UnwrapConv::Number => convert(raw, ValueKind::Number),
        UnwrapConv::Duration | UnwrapConv::DurationSeconds => convert(raw, ValueKind::Duration),
        UnwrapConv::Bytes => convert(raw, ValueKind::Bytes),
    }
}

fn parse(p: &ParserStage, line: &mut Cow<'_, str>, labels: &mut EntryLabels<'_>) {
    match p {
        ParserStage::Json(params) => json(line, params, labels),
        ParserStage::Logfmt { strict, keep_empty, params } => logfmt(line, *strict, *keep_empty, params, labels),
        ParserStage::Regexp(r) => {
            if let Some(caps) = r.re.captures(line) {
                for (i, name) in r.names.iter().enumerate() {
                    if let (Some(n), Some(m)) = (name, caps.get(i)) {
                        labels.extracted(n, m.as_str());
                    }
                }
            }
        }
        ParserStage::Pattern(p) => {
            if let Some(caps) = match_pattern(p, line) {
                for (n, v) in caps {
                    labels.extracted(n, v);
                }
            }
        }
        ParserStage::Unpack => match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(line) {
            Ok(map) => {
                let mut new_line = None;
                for (k, v) in map {
                    if let serde_json::Value::String(s) = v {
                        if k == "_entry" {
                            new_line = Some(s);
                        } else if is_valid_label_name(&k) {
                            labels.extracted(&k, &s);
                        }
                    }
                }
                if let Some(l) = new_line {
                    *line = Cow::Owned(l);
                }
            }
            Err(e) => labels.set_err(PipelineErr::Json, &e.to_string()),
        },
    }
}

fn json(line: &str, params: &[(String, JsonPath)], labels: &mut EntryLabels<'_>) {
    let v: serde_json::Value = match serde_json::from_str(line) {
        Ok(v @ serde_json::Value::Object(_)) => v,
        Ok(_) => {
            labels.set_err(PipelineErr::Json, "Value looks like object, but can't find closing '}' symbol");
            return;
        }
        Err(e) => {
            labels.set_err(PipelineErr::Json, &e.to_string());
            return;
        }
    };
    if params.is_empty() {
        let mut prefix = String::new();
        flatten(&v, &mut prefix, labels);
        return;
    }
    for (label, path) in params {
        let mut cur = Some(&v);
        for step in &path.steps {
            cur = match (cur, step) {
                (Some(serde_json::Value::Object(m)), JsonStep::Key(k)) => m.get(k),
                (Some(serde_json::Value::Array(a)), JsonStep::Index(i)) => a.get(*i),
                _ => None,
            };
        }
        let value = match cur {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(serde_json::Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        labels.extracted(label, &value);
    }
}

fn flatten(v: &serde_json::Value, prefix: &mut String, labels: &mut EntryLabels<'_>) {
    let serde_json::Value::Object(m) = v else { return };
    for (k, val) in m {
        let len = prefix.len();
        if !prefix.is_empty() {
            prefix.push('_');
        }
        prefix.push_str(&sanitize_label_name(k));
        match val {
            serde_json::Value::Object(_) => flatten(val, prefix, labels),
            // Loki skips arrays when extracting every field.
            serde_json::Value::Array(_) | serde_json::Value::Null => {}
            serde_json::Value::String(s) => labels.extracted(prefix, s),
            other => labels.extracted(prefix, &other.to_string()),
        }
        prefix.truncate(len);
    }
}

fn logfmt(line: &str, strict: bool, keep_empty: bool, params: &[(String, String)], labels: &mut EntryLabels<'_>) {
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        while i < b.len() && b[i] <= b' ' {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        let ks = i;
        while i < b.len() && b[i] > b' ' && b[i] != b'=' && b[i] != b'"' {
            i += 1;
        }
        let key = &line[ks..i];
        if i < b.len() && b[i] == b'"' {
            // A quote inside a key: go-logfmt's "unexpected '\"'".
            if strict {
                labels.set_err(PipelineErr::Logfmt, &format!("logfmt syntax error at pos {} : unexpected '\"'", i + 1));
                return;
            }
            // Skip the rest of this token.
            while i < b.len() && b[i] > b' ' {
                i += 1;
            }
            continue;
        }
        if key.is_empty() {
            // `=value` with no key.
            if strict {
                labels.set_err(PipelineErr::Logfmt, &format!("logfmt syntax error at pos {} : unexpected '='", i + 1));
                return;
            }
            while i < b.len() && b[i] > b' ' {
                i += 1;
            }
            continue;
        }
        let value: Cow<'_, str> = if i < b.len() && b[i] == b'=' {
            i += 1;
            if i < b.len() && b[i] == b'"' {
                match crate::labels::unquote_prefix(&line[i..]) {
                    Some((v, used)) => {
                        i += used;
                        Cow::Owned(v)
                    }
                    None => {
                        if strict {
                            labels.set_err(
                                PipelineErr::Logfmt,
                                &format!("logfmt syntax error at pos {} : unterminated quoted value", i + 1),
                            );
                            return;
                        }
                        // Keep what there is, without the opening quote.
                        let v = &line[i + 1..];
                        i = b.len();
                        Cow::Borrowed(v)
                    }
                }
            } else {
                let vs = i;
                while i < b.len() && b[i] > b' ' {
                    i += 1;
                }
                Cow::Borrowed(&line[vs..i])
            }
        } else {
            // A bare key.
            if !keep_empty {
                continue;
            }
            Cow::Borrowed("")
        };
        let name = sanitize_label_name(key);
        if params.is_empty() {
            if value.is_empty() && keep_empty {
                // `set` drops empty values; a kept-empty key is written as is.
                labels.current.set_keep_empty(&name, "");
                continue;
            }
            labels.extracted(&name, &value);
        } else {
            for (label, k) in params {
                if k == key {
                    labels.extracted(label, &value);
                }
            }
        }
    }
}

/// Matches a `pattern` expression; returns the named captures, or `None` when the line does
/// not have the pattern's shape.
pub fn match_pattern<'l>(p: &'l Pattern, line: &'l str) -> Option<Vec<(&'l str, &'l str)>> {
    let mut out = Vec::new();
    let mut rest = line;
    let mut pending: Option<&Option<String>> = None;
    for part in &p.parts {
        match part {
            PatternPart::Literal(l) => match pending.take() {
                None => rest = rest.strip_prefix(l.as_str())?,
                Some(cap) => {
                    let at = memchr::memmem::find(rest.as_bytes(), l.as_bytes())?;
                    if let Some(n) = cap {
                        out.push((n.as_str(), &rest[..at]));
                    }
                    rest = &rest[at + l.len()..];
                }
            },
            PatternPart::Capture(c) => pending = Some(c),
        }
    }
    if let Some(Some(n)) = pending {
        out.push((n.as_str(), rest));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logql::parser::parse_log_expr;

    fn run(q: &str, line: &str) -> Option<(String, String)> {
        let e = parse_log_expr(q).unwrap();
        let base = Labels::from_pairs([("app", "x")]);
        let mut l = EntryLabels { base: &base, current: base.clone() };
        let out = process(&e.pipeline, 0, line, &mut l)?;
        Some((out.into_owned(), l.current.to_string()))
    }

    #[test]
    fn parsers() {
        let (_, l) = run(r#"{app="x"} | json"#, r#"{"a":{"b":"c"},"n":1.5,"app":"y","arr":[1]}"#).unwrap();
        assert_eq!(l, r#"{a_b="c", app="x", app_extracted="y", n="1.5"}"#);
        let (_, l) = run(r#"{app="x"} | logfmt"#, r#"level=info msg="hello world" bare dur=1s"#).unwrap();
        assert_eq!(l, r#"{app="x", dur="1s", level="info", msg="hello world"}"#);
        let (_, l) = run(
            r#"{app="x"} | pattern "<ip> - <_> [<ts>] \"<method> <path> <_>\" <status>""#,
            r#"1.2.3.4 - - [now] "GET /a HTTP/1.1" 200"#,
        )
        .unwrap();
        assert_eq!(l, r#"{app="x", ip="1.2.3.4", method="GET", path="/a", status="200", ts="now"}"#);
        let (_, l) = run(r#"{app="x"} | json | __error__!="""#, "not json").unwrap();
        assert!(l.contains("JSONParserErr"));
    }

    #[test]
    fn decolor() {
        assert_eq!(decolorize("\x1b[31mred\x1b[0m plain"), "red plain");
    }
}
