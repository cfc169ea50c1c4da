//! YAML into a tree that remembers where every node came from.
//!
//! Built on saphyr-parser's event stream rather than a serde deserializer because GitLab CI
//! files need what serde models lose: source positions for every value (errors point at
//! file:line:column), anchors and aliases, merge keys (`<<`), and the custom `!reference`
//! tag, which must survive loading to be resolved after `include` and `extends`.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle};

/// A position in a source file: 1-based line and column, 0-based character index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    /// Which file of the pipeline (0: the root file; includes are numbered by the loader).
    pub file: u32,
    pub line: u32,
    pub column: u32,
    pub index: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub value: Value,
    pub span: Span,
    /// A plain scalar that YAML 1.1 (GitLab's Psych loader) reads as a boolean and YAML 1.2 as
    /// a string: `yes`, `no`, `on`, `off` in any case. See [`Node::as_bool`].
    pub yaml11_bool: Option<bool>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    Sequence(Vec<Node>),
    /// Entries in source order; keys are strings (other key types are rendered as text).
    Mapping(Vec<(Key, Node)>),
    /// `!reference [job, key, …]`, resolved by the loader.
    Reference(Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    pub name: String,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct YamlError {
    pub message: String,
    pub span: Span,
}

/// Guards against YAML bombs: aliases can make a small file expand exponentially.
pub const MAX_NODES: usize = 1_000_000;
/// Guards the recursive builder against stack exhaustion on deeply nested input.
const MAX_DEPTH: usize = 256;

impl Node {
    pub fn new(value: Value, span: Span) -> Self {
        Node { value, span, yaml11_bool: None }
    }

    /// The node as a boolean where GitLab expects one: `true`/`false`, and also YAML 1.1's
    /// plain `yes`/`no`/`on`/`off` (any case), which GitLab's loader reads as booleans. Quoted
    /// text is never a boolean.
    pub fn as_bool(&self) -> Option<bool> {
        match self.value {
            Value::Bool(value) => Some(value),
            _ => self.yaml11_bool,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.value {
            Value::String(text) => Some(text),
            _ => None,
        }
    }

    pub fn as_mapping(&self) -> Option<&[(Key, Node)]> {
        match &self.value {
            Value::Mapping(entries) => Some(entries),
            _ => None,
        }
    }

    pub fn get(&self, key: &str) -> Option<&Node> {
        self.as_mapping()?.iter().rev().find(|(k, _)| k.name == key).map(|(_, v)| v)
    }

    /// The scalar as text the way GitLab reads variables and script lines: numbers and booleans
    /// become their YAML spelling, null becomes empty.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Null => Some(String::new()),
            Value::Bool(value) => Some(value.to_string()),
            Value::Int(value) => Some(value.to_string()),
            Value::Float(value) => Some(value.to_string()),
            Value::String(text) => Some(text.clone()),
            _ => None,
        }
    }

    /// A short name of the node's type, for error messages.
    pub fn kind(&self) -> &'static str {
        match self.value {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) => "an integer",
            Value::Float(_) => "a number",
            Value::String(_) => "a string",
            Value::Sequence(_) => "a list",
            Value::Mapping(_) => "a mapping",
            Value::Reference(_) => "a !reference",
        }
    }
}

fn span_of(marker: &saphyr_parser::Marker, file: u32) -> Span {
    Span {
        file,
        line: u32::try_from(marker.line()).unwrap_or(u32::MAX),
        column: u32::try_from(marker.col() + 1).unwrap_or(u32::MAX),
        index: marker.index(),
    }
}

/// Parses one YAML document. An empty file is an empty mapping. A file of two documents
/// whose first holds only `spec:` (a CI/CD component header) yields the second.
pub fn parse(text: &str) -> Result<Node, YamlError> {
    parse_file(text, 0)
}

/// [`parse`] for the file numbered `file` in the loader's list of sources.
pub fn parse_file(text: &str, file: u32) -> Result<Node, YamlError> {
    parse_with_header(text, file).map(|parsed| parsed.body)
}

/// A file as [`parse_with_header`] reads it.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The `spec:` header document, when the file has one (CI/CD inputs).
    pub spec: Option<Node>,
    pub body: Node,
    /// Keys written twice in one mapping (the later one won), for a warning.
    pub duplicates: Vec<Key>,
}

/// [`parse_file`], keeping the `spec:` header and the keys written twice.
pub fn parse_with_header(text: &str, file: u32) -> Result<Parsed, YamlError> {
    let mut builder = Builder {
        events: Parser::new_from_str(text),
        anchors: HashMap::new(),
        nodes: 0,
        depth: 0,
        file,
        duplicates: Vec::new(),
    };
    let mut documents = Vec::new();
    loop {
        let (event, span) = builder.next()?;
        match event {
            Event::StreamEnd => break,
            Event::StreamStart | Event::DocumentEnd => {}
            Event::DocumentStart(_) => {
                let (event, span) = builder.next()?;
                if matches!(event, Event::DocumentEnd) {
                    documents.push(Node::new(Value::Null, span));
                } else {
                    documents.push(builder.node(event, span)?);
                }
            }
            other => return Err(YamlError { message: format!("unexpected YAML event {other:?}"), span }),
        }
    }
    let mut documents = documents.into_iter();
    let first = documents.next();
    let second = documents.next();
    let mut spec = None;
    let root = match (first, second) {
        (None, _) => Node::new(Value::Mapping(Vec::new()), Span { file, line: 1, column: 1, index: 0 }),
        (Some(header), Some(body)) if header.as_mapping().is_some_and(|m| m.iter().all(|(k, _)| k.name == "spec")) => {
            spec = Some(header);
            body
        }
        (Some(first), Some(second)) => {
            let _ = first;
            return Err(YamlError {
                message: "a pipeline file holds one YAML document (or a `spec:` header and one document)".to_owned(),
                span: second.span,
            });
        }
        (Some(only), None) => only,
    };
    let body = match root.value {
        Value::Null => Node::new(Value::Mapping(Vec::new()), root.span),
        _ => root,
    };
    Ok(Parsed { spec, body, duplicates: builder.duplicates })
}

struct Builder<'input> {
    events: Parser<'input, saphyr_parser::StrInput<'input>>,
    anchors: HashMap<usize, Node>,
    nodes: usize,
    depth: usize,
    file: u32,
    duplicates: Vec<Key>,
}

impl<'input> Builder<'input> {
    fn next(&mut self) -> Result<(Event<'input>, Span), YamlError> {
        match self.events.next_event() {
            Some(Ok((event, span))) => Ok((event, span_of(&span.start, self.file))),
            Some(Err(error)) => {
                Err(YamlError { message: error.info().to_owned(), span: span_of(error.marker(), self.file) })
            }
            None => Err(YamlError {
                message: "unexpected end of YAML".to_owned(),
                span: Span { file: self.file, ..Span::default() },
            }),
        }
    }

    fn count(&mut self, span: Span, added: usize) -> Result<(), YamlError> {
        self.nodes = self.nodes.saturating_add(added);
        if self.nodes > MAX_NODES {
            return Err(YamlError {
                message: format!("the YAML expands to more than {MAX_NODES} values (alias bomb?)"),
                span,
            });
        }
        Ok(())
    }

    fn remember(&mut self, anchor: usize, node: &Node) {
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
    }

    fn node(&mut self, event: Event<'input>, span: Span) -> Result<Node, YamlError> {
        self.count(span, 1)?;
        match event {
            Event::Scalar(text, style, anchor, tag) => {
                if let Some(tag) = tag
                    && !tag.is_yaml_core_schema()
                {
                    return Err(YamlError {
                        message: format!(
                            "unsupported YAML tag `{}{}` (opsloop knows `!reference`)",
                            tag.handle, tag.suffix
                        ),
                        span,
                    });
                }
                let mut node = Node::new(scalar(&text, style), span);
                if style == ScalarStyle::Plain {
                    node.yaml11_bool = yaml11_bool(&text);
                }
                self.remember(anchor, &node);
                Ok(node)
            }
            Event::Alias(anchor) => {
                let node = self
                    .anchors
                    .get(&anchor)
                    .cloned()
                    .ok_or_else(|| YamlError { message: "alias to an unknown anchor".to_owned(), span })?;
                self.count(span, size(&node))?;
                Ok(Node { span, ..node })
            }
            Event::SequenceStart(anchor, tag) => {
                self.enter(span)?;
                let mut items = Vec::new();
                loop {
                    let (event, item_span) = self.next()?;
                    if matches!(event, Event::SequenceEnd) {
                        break;
                    }
                    items.push(self.node(event, item_span)?);
                }
                self.depth -= 1;
                let node = match tag {
                    Some(tag) if tag.handle == "!" && tag.suffix == "reference" => {
                        let path = items
                            .iter()
                            .map(|item| item.scalar_text().filter(|_| !matches!(item.value, Value::Null)))
                            .collect::<Option<Vec<String>>>()
                            .ok_or_else(|| YamlError {
                                message: "`!reference` takes a list of names, e.g. !reference [.setup, script]"
                                    .to_owned(),
                                span,
                            })?;
                        if path.is_empty() {
                            return Err(YamlError {
                                message: "`!reference` needs at least a job name".to_owned(),
                                span,
                            });
                        }
                        Node::new(Value::Reference(path), span)
                    }
                    Some(tag) if !tag.is_yaml_core_schema() => {
                        return Err(YamlError {
                            message: format!(
                                "unsupported YAML tag `{}{}` (opsloop knows `!reference`)",
                                tag.handle, tag.suffix
                            ),
                            span,
                        });
                    }
                    _ => Node::new(Value::Sequence(items), span),
                };
                self.remember(anchor, &node);
                Ok(node)
            }
            Event::MappingStart(anchor, tag) => {
                if let Some(tag) = tag
                    && !tag.is_yaml_core_schema()
                {
                    return Err(YamlError {
                        message: format!("unsupported YAML tag `{}{}` on a mapping", tag.handle, tag.suffix),
                        span,
                    });
                }
                self.enter(span)?;
                let node = self.mapping(span)?;
                self.depth -= 1;
                self.remember(anchor, &node);
                Ok(node)
            }
            other => Err(YamlError { message: format!("unexpected YAML event {other:?}"), span }),
        }
    }

    fn enter(&mut self, span: Span) -> Result<(), YamlError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(YamlError { message: format!("YAML nested deeper than {MAX_DEPTH} levels"), span });
        }
        Ok(())
    }

    fn mapping(&mut self, span: Span) -> Result<Node, YamlError> {
        let mut entries: Vec<(Key, Node)> = Vec::new();
        let mut merged: Vec<(Key, Node)> = Vec::new();
        loop {
            let (event, key_span) = self.next()?;
            if matches!(event, Event::MappingEnd) {
                break;
            }
            let is_merge = matches!(&event, Event::Scalar(text, ScalarStyle::Plain, _, _) if text == "<<");
            let key_node = self.node(event, key_span)?;
            let (value_event, value_span) = self.next()?;
            let value = self.node(value_event, value_span)?;
            if is_merge {
                // `<<: *a` or `<<: [*a, *b]`; earlier sources win over later ones.
                let sources = match value.value {
                    Value::Mapping(_) => vec![value],
                    Value::Sequence(items) => items,
                    _ => {
                        return Err(YamlError {
                            message: "`<<` merges a mapping or a list of mappings".to_owned(),
                            span: value_span,
                        });
                    }
                };
                for source in sources {
                    let Value::Mapping(source_entries) = source.value else {
                        return Err(YamlError { message: "`<<` merges only mappings".to_owned(), span: source.span });
                    };
                    for (key, node) in source_entries {
                        if !merged.iter().any(|(k, _)| k.name == key.name) {
                            merged.push((key, node));
                        }
                    }
                }
                continue;
            }
            let name = match key_node.value {
                Value::String(text) => text,
                Value::Null => String::new(),
                ref other => match key_node.scalar_text() {
                    Some(text) => text,
                    None => {
                        let _ = other;
                        return Err(YamlError { message: "mapping keys must be scalars".to_owned(), span: key_span });
                    }
                },
            };
            let key = Key { name, span: key_span };
            // A repeated key replaces the earlier one, as GitLab's YAML reader does.
            let before = entries.len();
            entries.retain(|(k, _)| k.name != key.name);
            if entries.len() != before {
                self.duplicates.push(key.clone());
            }
            entries.push((key, value));
        }
        // Explicit keys win over merged ones, wherever `<<` stood.
        for (key, node) in merged {
            if !entries.iter().any(|(k, _)| k.name == key.name) {
                entries.push((key, node));
            }
        }
        Ok(Node::new(Value::Mapping(entries), span))
    }
}

/// How many values a node holds, counted as the alias-bomb guard counts them.
pub fn size(node: &Node) -> usize {
    match &node.value {
        Value::Sequence(items) => 1 + items.iter().map(size).sum::<usize>(),
        Value::Mapping(entries) => 1 + entries.iter().map(|(_, v)| 1 + size(v)).sum::<usize>(),
        _ => 1,
    }
}

/// YAML 1.1's boolean words beyond `true`/`false`, as Ruby's Psych reads them.
fn yaml11_bool(text: &str) -> Option<bool> {
    // Called for every plain scalar: no allocation, and most texts are longer than three.
    if text.len() > 3 {
        None
    } else if text.eq_ignore_ascii_case("yes") || text.eq_ignore_ascii_case("on") {
        Some(true)
    } else if text.eq_ignore_ascii_case("no") || text.eq_ignore_ascii_case("off") {
        Some(false)
    } else {
        None
    }
}

/// Plain scalars resolve like YAML 1.2's core schema; quoted and block scalars are strings.
fn scalar(text: &str, style: ScalarStyle) -> Value {
    if style != ScalarStyle::Plain {
        return Value::String(text.to_owned());
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        _ => {}
    }
    // YAML 1.1, which GitLab reads: a leading zero makes an octal integer (`012` is 10).
    if text.len() > 1
        && text.starts_with('0')
        && text.bytes().all(|b| (b'0'..=b'7').contains(&b))
        && let Ok(value) = i64::from_str_radix(&text[1..], 8)
    {
        return Value::Int(value);
    }
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    if !unsigned.is_empty()
        && unsigned.bytes().all(|b| b.is_ascii_digit())
        && let Ok(value) = text.parse::<i64>()
    {
        return Value::Int(value);
    }
    if let Some(hex) = text.strip_prefix("0x")
        && let Ok(value) = i64::from_str_radix(hex, 16)
    {
        return Value::Int(value);
    }
    if let Some(octal) = text.strip_prefix("0o")
        && let Ok(value) = i64::from_str_radix(octal, 8)
    {
        return Value::Int(value);
    }
    let looks_numeric = unsigned.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && unsigned.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'));
    if looks_numeric && let Ok(value) = text.parse::<f64>() {
        return Value::Float(value);
    }
    Value::String(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(node: &Node) -> Vec<String> {
        match &node.value {
            Value::Sequence(items) => items.iter().filter_map(Node::scalar_text).collect(),
            _ => panic!("not a list: {node:?}"),
        }
    }

    #[test]
    fn scalars_resolve_like_the_core_schema() {
        let root = parse("a: 1\nb: '1'\nc: true\nd: ~\ne: 1.5\nf: text\ng: 0x10\nh: 1.2.3\n").unwrap();
        assert_eq!(root.get("a").unwrap().value, Value::Int(1));
        assert_eq!(root.get("b").unwrap().value, Value::String("1".into()));
        assert_eq!(root.get("c").unwrap().value, Value::Bool(true));
        assert_eq!(root.get("d").unwrap().value, Value::Null);
        assert_eq!(root.get("e").unwrap().value, Value::Float(1.5));
        assert_eq!(root.get("f").unwrap().value, Value::String("text".into()));
        assert_eq!(root.get("g").unwrap().value, Value::Int(16));
        assert_eq!(root.get("h").unwrap().value, Value::String("1.2.3".into()));
    }

    #[test]
    fn positions_are_one_based_lines_and_columns() {
        let root = parse("job:\n  script:\n    - echo hi\n").unwrap();
        let script = root.get("job").unwrap().get("script").unwrap();
        let Value::Sequence(items) = &script.value else { panic!() };
        assert_eq!((items[0].span.line, items[0].span.column), (3, 7));
        let (key, _) = &root.get("job").unwrap().as_mapping().unwrap()[0];
        assert_eq!((key.span.line, key.span.column), (2, 3));
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let text = "
.base: &base
  stage: test
  script: [echo base]
  tags: [a]
.more: &more
  tags: [b]
  retry: 2
job:
  <<: [*base, *more]
  script: [echo job]
list: &list [x, y]
again: *list
";
        let root = parse(text).unwrap();
        let job = root.get("job").unwrap();
        assert_eq!(strings(job.get("script").unwrap()), ["echo job"], "explicit keys win");
        assert_eq!(job.get("stage").unwrap().as_str(), Some("test"));
        assert_eq!(strings(job.get("tags").unwrap()), ["a"], "the first merge source wins");
        assert_eq!(job.get("retry").unwrap().value, Value::Int(2));
        assert_eq!(strings(root.get("again").unwrap()), ["x", "y"]);
    }

    #[test]
    fn reference_tags_are_kept_for_the_loader() {
        let root = parse("job:\n  script:\n    - !reference [.setup, script]\n    - echo done\n").unwrap();
        let Value::Sequence(items) = &root.get("job").unwrap().get("script").unwrap().value else { panic!() };
        assert_eq!(items[0].value, Value::Reference(vec![".setup".into(), "script".into()]));
        assert!(parse("a: !reference []\n").is_err());
        assert!(parse("a: !secret [x]\n").is_err());
    }

    #[test]
    fn errors_have_positions_and_bombs_are_refused() {
        let error = parse("a:\n  b: [1, 2\n").unwrap_err();
        assert!(error.span.line >= 2, "{error:?}");
        let bomb = "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n";
        assert!(parse(bomb).unwrap_err().message.contains("alias bomb"));
        let deep = "[".repeat(10_000);
        assert!(parse(&deep).is_err());
        assert_eq!(parse("").unwrap().as_mapping().map(<[_]>::len), Some(0));
        assert!(parse("---\nspec:\n  inputs: {}\n---\njob: {script: [x]}\n").unwrap().get("job").is_some());
    }

    #[test]
    fn never_panics_on_garbage() {
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let alphabet = b"ab: -[]{}&*!<>|'\"\n\t #,?%@`0123456789.";
        for round in 0..3000 {
            let len = round % 80;
            let text: String = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    alphabet[(seed % alphabet.len() as u64) as usize] as char
                })
                .collect();
            let _ = parse(&text);
        }
    }
}

/// Block-style YAML text for a node tree, as people write it: plain scalars where YAML reads
/// them back as the same string, single quotes where it would not, double quotes for text with
/// line breaks or control characters; sequences inside mappings indented by two, sequences of
/// sequences as `- - a`. Reading the text back gives the same tree (`--preview` relies on it).
pub fn emit(node: &Node) -> String {
    let mut out = String::new();
    emit_block(node, 0, &mut out);
    out
}

fn emit_block(node: &Node, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match &node.value {
        Value::Mapping(entries) if !entries.is_empty() => {
            for (key, value) in entries {
                out.push_str(&pad);
                out.push_str(&scalar_text_for(&key.name));
                out.push(':');
                emit_after_key(value, indent, out);
            }
        }
        Value::Sequence(items) if !items.is_empty() => {
            for item in items {
                match &item.value {
                    Value::Mapping(entries) if !entries.is_empty() => emit_nested_item(item, indent, out),
                    Value::Sequence(inner) if !inner.is_empty() => emit_nested_item(item, indent, out),
                    _ => {
                        out.push_str(&pad);
                        out.push_str("- ");
                        out.push_str(&inline(item));
                        out.push('\n');
                    }
                }
            }
        }
        _ => {
            out.push_str(&pad);
            out.push_str(&inline(node));
            out.push('\n');
        }
    }
}

fn emit_after_key(value: &Node, indent: usize, out: &mut String) {
    match &value.value {
        Value::Mapping(entries) if !entries.is_empty() => {
            out.push('\n');
            emit_block(value, indent + 2, out);
        }
        Value::Sequence(items) if !items.is_empty() => {
            out.push('\n');
            emit_block(value, indent + 2, out);
        }
        _ => {
            out.push(' ');
            out.push_str(&inline(value));
            out.push('\n');
        }
    }
}

/// A collection inside a sequence: rendered two deeper, its first line starting with `- `.
fn emit_nested_item(item: &Node, indent: usize, out: &mut String) {
    let mut inner = String::new();
    emit_block(item, indent + 2, &mut inner);
    out.push_str(&" ".repeat(indent));
    out.push_str("- ");
    out.push_str(&inner[indent + 2..]);
}

/// A scalar, or an empty collection, on one line.
fn inline(node: &Node) -> String {
    match &node.value {
        Value::Null => "null".to_owned(),
        Value::Bool(value) => value.to_string(),
        Value::Int(value) => value.to_string(),
        Value::Float(value) => value.to_string(),
        Value::String(text) => scalar_text_for(text),
        Value::Mapping(_) => "{}".to_owned(),
        Value::Sequence(_) => "[]".to_owned(),
        Value::Reference(path) => format!("!reference [{}]", path.join(", ")),
    }
}

/// `text` as a YAML scalar that reads back as this same string.
fn scalar_text_for(text: &str) -> String {
    if text.chars().any(|c| c.is_control() && c != '\t') {
        return serde_json_like_quote(text);
    }
    let plain_reads_back = !text.is_empty()
        && !text.starts_with([
            ' ', '-', '?', ':', ',', '[', ']', '{', '}', '#', '&', '*', '!', '|', '>', '\'', '"', '%', '@', '`', '\t',
        ])
        && !text.ends_with([' ', ':', '\t'])
        && !text.contains(": ")
        && !text.contains(" #")
        && matches!(scalar(text, ScalarStyle::Plain), Value::String(_))
        && yaml11_bool(text).is_none();
    // `-x` reads back as a string too; only `- ` (a sequence entry) and `-` alone do not.
    let dash_plain = text.starts_with('-')
        && text.len() > 1
        && !text.starts_with("- ")
        && !text.starts_with("---")
        && matches!(scalar(text, ScalarStyle::Plain), Value::String(_))
        && !text.contains(": ")
        && !text.contains(" #")
        && !text.ends_with([' ', ':']);
    if plain_reads_back || dash_plain { text.to_owned() } else { format!("'{}'", text.replace('\'', "''")) }
}

/// Double-quoted YAML with escapes (line breaks, control characters).
fn serde_json_like_quote(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod emit_tests {
    use super::*;

    #[test]
    fn emitted_yaml_reads_back_as_the_same_tree() {
        let text = "job:\n  script:\n    - echo a\n    - [echo b, [echo c]]\n    - 'yes'\n    - \"multi\\nline\"\n    - '- not a list'\n    - -x\n    - 'a: b'\n    - '012'\n  rules:\n    - if: $A == \"x\"\n      when: manual\n  empty: []\n  none: {}\n  nothing: null\n  flag: true\n  n: 3\n";
        let tree = parse_file(text, 0).unwrap_or_else(|e| panic!("{e}"));
        let emitted = emit(&tree);
        assert!(emitted.contains("\n    - echo a\n"), "{emitted}");
        assert!(emitted.contains("\n    - - echo b\n      - - echo c\n"), "{emitted}");
        assert!(emitted.contains("\n    - if: $A == \"x\"\n      when: manual\n"), "{emitted}");
        let back = parse_file(&emitted, 0).unwrap_or_else(|e| panic!("{e}\n{emitted}"));
        fn strip(node: &Node) -> String {
            match &node.value {
                Value::Mapping(entries) => {
                    let inner: Vec<String> = entries.iter().map(|(k, v)| format!("{}={}", k.name, strip(v))).collect();
                    format!("{{{}}}", inner.join(","))
                }
                Value::Sequence(items) => format!("[{}]", items.iter().map(strip).collect::<Vec<_>>().join(",")),
                other => format!("{other:?}"),
            }
        }
        assert_eq!(strip(&back), strip(&tree), "{emitted}");
    }
}
