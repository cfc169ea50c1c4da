//! What changed between two configurations, field by field, as people read it:
//! `env.VERSION: 1.0.0 → 1.1.0`, not `env: [["VERSION","1.0.0"]] → …`. Releases and the
//! GitOps plan keep their configuration as JSON; this flattens it into dotted fields, which
//! the deploy engine's [`desired`](opsloop_deploy::desired) compares, and writes its field
//! changes for the API.

use std::collections::BTreeMap;

use opsloop_deploy::desired::{self, Fields};
use serde::Serialize;
use serde_json::Value;

/// One field that differs; `None` on a side where the field is absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct FieldChange {
    /// The field's dotted path, e.g. `env.VERSION` or `health.http`.
    pub field: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

impl From<desired::FieldChange> for FieldChange {
    fn from(change: desired::FieldChange) -> Self {
        let desired::FieldChange { field, before, after } = change;
        FieldChange { field, before, after }
    }
}

/// The fields that differ between `before` and `after`, in field order.
pub fn field_changes(before: &Value, after: &Value) -> Vec<FieldChange> {
    desired::field_changes(&fields(before), &fields(after)).into_iter().map(FieldChange::from).collect()
}

/// A configuration as dotted fields.
pub fn fields(value: &Value) -> Fields {
    let mut out = BTreeMap::new();
    flatten("", value, &mut out);
    out
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() { key.to_owned() } else { format!("{prefix}.{key}") }
}

/// Objects and lists of `[name, value]` pairs (how environments are kept) become dotted
/// fields; other lists are one field, their items joined; `null` is no field at all.
fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, String>) {
    match value {
        Value::Null => {}
        Value::Object(map) => {
            for (key, value) in map {
                flatten(&join(prefix, key), value, out);
            }
        }
        Value::Array(items) if !items.is_empty() && items.iter().all(is_pair) => {
            for item in items {
                if let Some([Value::String(name), value]) = item.as_array().map(Vec::as_slice) {
                    flatten(&join(prefix, name), value, out);
                }
            }
        }
        Value::Array(items) => {
            let shown: Vec<String> = items.iter().map(scalar).collect();
            out.insert(prefix.to_owned(), format!("[{}]", shown.join(", ")));
        }
        other => {
            out.insert(prefix.to_owned(), scalar(other));
        }
    }
}

fn is_pair(item: &Value) -> bool {
    matches!(item.as_array().map(Vec::as_slice), Some([Value::String(_), v]) if !v.is_object() && !v.is_array())
}

/// A value as a person writes it: strings without quotes, anything nested as JSON.
fn scalar(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn environment_pairs_and_nested_fields_read_as_people_write_them() {
        let before = json!({"env": [["VERSION", "1.0.0"], ["MODE", "fast"]], "replicas": 1,
            "command": ["python3", "server.py"], "health": {"http": "/health"}, "gone": "x"});
        let after = json!({"env": [["VERSION", "1.1.0"], ["MODE", "fast"]], "replicas": 2,
            "command": ["python3", "app.py"], "health": {"http": "/health"}, "memory": null});
        let changes = field_changes(&before, &after);
        assert_eq!(
            desired::summary(&desired::field_changes(&fields(&before), &fields(&after))),
            "command: [python3, server.py] → [python3, app.py]; env.VERSION: 1.0.0 → 1.1.0; gone: x → —; replicas: 1 → 2"
        );
        assert_eq!(
            changes[1],
            FieldChange { field: "env.VERSION".into(), before: Some("1.0.0".into()), after: Some("1.1.0".into()) }
        );
        assert!(field_changes(&before, &before).is_empty());
    }
}
