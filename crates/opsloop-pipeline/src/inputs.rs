//! CI/CD inputs: a file's `spec: inputs:` header, the values an `include:` gives it
//! (`inputs:`), and `$[[ inputs.NAME ]]` interpolation into the file's keys and values, as
//! GitLab does for templates and components (<https://docs.gitlab.com/ci/inputs/>).
//!
//! A value that is one interpolation block alone takes the input's type (an array input can be
//! a whole `rules:` list); inside text it is rendered as text (arrays as JSON). Every problem
//! is a diagnostic with GitLab's wording; the file is not interpolated when one is found.

use std::collections::HashMap;

use crate::diagnostic::Diagnostic;
use crate::yaml::{Key, Node, Span, Value};

/// The type an input declares (`type:`; `string` when absent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InputType {
    String,
    Number,
    Boolean,
    Array,
}

impl InputType {
    fn name(self) -> &'static str {
        match self {
            InputType::String => "string",
            InputType::Number => "number",
            InputType::Boolean => "boolean",
            InputType::Array => "array",
        }
    }

    fn accepts(self, node: &Node) -> bool {
        match self {
            InputType::String => matches!(node.value, Value::String(_)),
            InputType::Number => matches!(node.value, Value::Int(_) | Value::Float(_)),
            InputType::Boolean => matches!(node.value, Value::Bool(_)),
            InputType::Array => matches!(node.value, Value::Sequence(_)),
        }
    }
}

/// More functions than this in one block is an error (GitLab's limit).
const MAX_FUNCTIONS: usize = 3;

/// The input values of a file: its spec's defaults, overridden by what the include gave.
/// `given` is the include's `inputs:` mapping (none for the pipeline file itself).
pub fn resolve(spec: &Node, given: Option<&Node>, at: Span) -> Result<HashMap<String, Node>, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    let mut values = HashMap::new();
    let declared: Vec<(Key, Node)> = spec
        .get("spec")
        .and_then(|s| s.get("inputs"))
        .and_then(|i| i.as_mapping())
        .map(<[_]>::to_vec)
        .unwrap_or_default();
    let given_entries = given.and_then(Node::as_mapping).unwrap_or_default();
    for (key, _) in given_entries {
        if !declared.iter().any(|(name, _)| name.name == key.name) {
            errors.push(Diagnostic::error(format!("unknown input name provided: `{}`", key.name), Some(key.span)));
        }
    }
    for (name, definition) in &declared {
        let input = &name.name;
        let field = |key: &str| definition.get(key);
        let kind = match field("type").and_then(Node::scalar_text).as_deref() {
            None | Some("string") => InputType::String,
            Some("number") => InputType::Number,
            Some("boolean") => InputType::Boolean,
            Some("array") => InputType::Array,
            Some(other) => {
                errors.push(Diagnostic::error(
                    format!("header:spec:inputs:{input} input type unknown value: {other}."),
                    field("type").map(|n| n.span),
                ));
                continue;
            }
        };
        let provided = given_entries.iter().rev().find(|(key, _)| key.name == *input).map(|(_, value)| value);
        let value = match provided.or_else(|| field("default")) {
            Some(value) => value.clone(),
            None => {
                errors.push(Diagnostic::error(
                    format!("`{input}` input: required value has not been provided"),
                    Some(at),
                ));
                continue;
            }
        };
        if !kind.accepts(&value) {
            errors.push(Diagnostic::error(
                format!("`{input}` input: provided value is not a {}.", kind.name()),
                Some(value.span),
            ));
            continue;
        }
        if let Some(options) = field("options").and_then(|o| match &o.value {
            Value::Sequence(items) => Some(items.iter().filter_map(Node::scalar_text).collect::<Vec<_>>()),
            _ => None,
        }) {
            let chosen: Vec<String> = match &value.value {
                Value::Sequence(items) => items.iter().filter_map(Node::scalar_text).collect(),
                _ => value.scalar_text().into_iter().collect(),
            };
            if let Some(outside) = chosen.iter().find(|c| !options.contains(c)) {
                errors.push(Diagnostic::error(
                    format!(
                        "`{input}` input: `{outside}` cannot be used because it is not in the list of allowed options."
                    ),
                    Some(value.span),
                ));
                continue;
            }
        }
        if let Some(pattern) = field("regex").and_then(Node::scalar_text) {
            match regex::Regex::new(&pattern) {
                Err(_) => {
                    errors.push(Diagnostic::error(
                        format!("`{input}` input: regex `{pattern}` is not a valid regular expression."),
                        field("regex").map(|n| n.span),
                    ));
                    continue;
                }
                Ok(regex) => {
                    let text = value.scalar_text().unwrap_or_default();
                    if !regex.is_match(&text) {
                        errors.push(Diagnostic::error(
                            format!("`{input}` input: `{text}` does not match required regex: {pattern}."),
                            Some(value.span),
                        ));
                        continue;
                    }
                }
            }
        }
        values.insert(input.clone(), value);
    }
    if errors.is_empty() { Ok(values) } else { Err(errors) }
}

/// Replaces every `$[[ inputs.NAME ]]` in `node`. Warnings (functions, which opsloop does not
/// apply) go to `warnings`.
pub fn interpolate(
    node: Node,
    values: &HashMap<String, Node>,
    warnings: &mut Vec<Diagnostic>,
) -> Result<Node, Diagnostic> {
    match node.value {
        Value::String(text) => {
            let span = node.span;
            // One block alone: the input's own value and type.
            if let Some(name) = sole_block(&text) {
                note_functions(name.matches('|').count(), span, warnings);
                let (name, _) = block_name(name, span)?;
                let value = lookup(values, name, span)?;
                return Ok(Node { span, ..value.clone() });
            }
            Ok(Node { value: Value::String(interpolate_text(&text, values, span, warnings)?), ..node })
        }
        Value::Sequence(items) => {
            let items =
                items.into_iter().map(|item| interpolate(item, values, warnings)).collect::<Result<Vec<_>, _>>()?;
            Ok(Node { value: Value::Sequence(items), ..node })
        }
        Value::Mapping(entries) => {
            let mut out = Vec::with_capacity(entries.len());
            for (key, value) in entries {
                let name = interpolate_text(&key.name, values, key.span, warnings)?;
                out.push((Key { name, ..key }, interpolate(value, values, warnings)?));
            }
            Ok(Node { value: Value::Mapping(out), ..node })
        }
        _ => Ok(node),
    }
}

/// The inside of `text` when it is exactly one `$[[ … ]]` block.
fn sole_block(text: &str) -> Option<&str> {
    let inner = text.strip_prefix("$[[")?.strip_suffix("]]")?;
    (!inner.contains("$[[") && !inner.contains("]]")).then_some(inner)
}

/// `inputs.NAME | fn | fn` → `NAME` and how many functions follow it.
fn block_name(inner: &str, span: Span) -> Result<(&str, usize), Diagnostic> {
    let mut parts = inner.split('|');
    let head = parts.next().unwrap_or_default().trim();
    let functions = parts.count();
    if functions > MAX_FUNCTIONS {
        // Reported with the warning that functions are not applied (see `note_functions`).
        return Err(Diagnostic::error("too many functions in interpolation block.", Some(span)));
    }
    match head.strip_prefix("inputs.") {
        Some(name) if !name.trim().is_empty() => Ok((name.trim(), functions)),
        _ => Err(Diagnostic::error(format!("unknown interpolation key: `{head}`."), Some(span))),
    }
}

fn note_functions(functions: usize, span: Span, warnings: &mut Vec<Diagnostic>) {
    if functions > 0 {
        warnings.push(
            Diagnostic::warning("interpolation functions is currently not supported", Some(span))
                .with_hint("the input's value is used as given"),
        );
    }
}

fn lookup<'a>(values: &'a HashMap<String, Node>, name: &str, span: Span) -> Result<&'a Node, Diagnostic> {
    values.get(name).ok_or_else(|| Diagnostic::error(format!("unknown interpolation key: `{name}`."), Some(span)))
}

fn interpolate_text(
    text: &str,
    values: &HashMap<String, Node>,
    span: Span,
    warnings: &mut Vec<Diagnostic>,
) -> Result<String, Diagnostic> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("$[[") {
        let Some(length) = rest[start..].find("]]") else { break };
        out.push_str(&rest[..start]);
        let inner = &rest[start + 3..start + length];
        // `$[[ matrix.X ]]` belongs to `needs:parallel:matrix`, resolved when planning.
        if inner.trim().starts_with("matrix.") {
            out.push_str(&rest[start..start + length + 2]);
        } else {
            note_functions(inner.matches('|').count(), span, warnings);
            let (name, _) = block_name(inner, span)?;
            out.push_str(&as_text(lookup(values, name, span)?));
        }
        rest = &rest[start + length + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// An input's value inside text: scalars as written, arrays and mappings as JSON.
fn as_text(node: &Node) -> String {
    fn json(node: &Node) -> serde_json::Value {
        match &node.value {
            Value::Null => serde_json::Value::Null,
            Value::Bool(value) => serde_json::Value::Bool(*value),
            Value::Int(value) => serde_json::Value::from(*value),
            Value::Float(value) => serde_json::Value::from(*value),
            Value::String(text) => serde_json::Value::String(text.clone()),
            Value::Sequence(items) => serde_json::Value::Array(items.iter().map(json).collect()),
            Value::Mapping(entries) => {
                serde_json::Value::Object(entries.iter().map(|(k, v)| (k.name.clone(), json(v))).collect())
            }
            Value::Reference(path) => serde_json::Value::String(format!("!reference [{}]", path.join(", "))),
        }
    }
    match &node.value {
        Value::Sequence(_) | Value::Mapping(_) => json(node).to_string(),
        _ => node.scalar_text().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::yaml;

    fn apply(spec: &str, given: Option<&str>, body: &str) -> Result<String, String> {
        let spec = yaml::parse_file(spec, 0).map_err(|e| e.to_string())?;
        let given = given.map(|g| yaml::parse_file(g, 0)).transpose().map_err(|e| e.to_string())?;
        let values = resolve(&spec, given.as_ref(), Span::default())
            .map_err(|errors| errors.iter().map(|e| e.message.clone()).collect::<Vec<_>>().join("; "))?;
        let body = yaml::parse_file(body, 0).map_err(|e| e.to_string())?;
        let done = interpolate(body, &values, &mut Vec::new()).map_err(|e| e.message)?;
        Ok(yaml::emit(&done))
    }

    #[test]
    fn inputs_are_typed_checked_and_interpolated() {
        let spec = "spec:\n  inputs:\n    name:\n    count: {type: number, default: 2}\n    flags: {type: array, default: [a, b]}\n    env: {options: [dev, prod], default: dev}\n";
        let out = apply(spec, Some("name: web"), "job-$[[ inputs.name ]]:\n  script: [\"echo $[[inputs.count]] $[[ inputs.flags ]]\"]\n  tags: $[[ inputs.flags ]]\n  n: $[[ inputs.count ]]\n").unwrap();
        assert_eq!(out, "job-web:\n  script:\n    - echo 2 [\"a\",\"b\"]\n  tags:\n    - a\n    - b\n  n: 2\n");
        assert_eq!(apply(spec, None, "a: b\n").unwrap_err(), "`name` input: required value has not been provided");
        assert_eq!(
            apply(spec, Some("name: x\nenv: staging"), "a: b\n").unwrap_err(),
            "`env` input: `staging` cannot be used because it is not in the list of allowed options."
        );
        assert_eq!(
            apply(spec, Some("name: x\ncount: many"), "a: b\n").unwrap_err(),
            "`count` input: provided value is not a number."
        );
        assert_eq!(
            apply(spec, Some("name: x"), "a: $[[ inputs.nope ]]\n").unwrap_err(),
            "unknown interpolation key: `nope`."
        );
        assert_eq!(
            apply(spec, Some("name: x"), "a: $[[ inputs.name | a | b | c | d ]]\n").unwrap_err(),
            "too many functions in interpolation block."
        );
        assert_eq!(
            apply(spec, Some("name: x\nother: y"), "a: b\n").unwrap_err(),
            "unknown input name provided: `other`"
        );
    }
}
