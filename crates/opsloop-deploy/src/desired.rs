//! The desired-state diff behind GitOps: what changes between the `opsloop.yml` applied last
//! and the one on the default branch — services, environments and routes created, changed
//! or removed, and for a change, which fields and how (`env.VERSION: 1.0.0 → 1.1.0`).
//!
//! The caller keeps each declared thing in whatever form it records (the server: its stored
//! JSON) and says how it reads as dotted fields; what counts as changed is that form's own
//! equality, so a record from an older version compares as it always did.

use std::collections::BTreeMap;

/// A declared thing as dotted fields and the values people write: `env.VERSION` → `1.1.0`.
pub type Fields = BTreeMap<String, String>;

/// What a change is to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Service,
    Environment,
    /// A service's route in an environment, named `service@environment` ([`route_key`]).
    Route,
}

impl Kind {
    /// `service`, `environment`, `route`: the names plans show and the API returns.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Service => "service",
            Kind::Environment => "environment",
            Kind::Route => "route",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happens to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    Create,
    Change,
    Remove,
}

impl Action {
    /// `create`, `change`, `remove`: the names plans show and the API returns.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Change => "change",
            Action::Remove => "remove",
        }
    }
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One field that differs; `None` on a side where the field is absent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldChange {
    /// The field's dotted path, e.g. `env.VERSION` or `health.http`.
    pub field: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

impl std::fmt::Display for FieldChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |side: &Option<String>| side.clone().unwrap_or_else(|| "—".to_owned());
        write!(f, "{}: {} → {}", self.field, show(&self.before), show(&self.after))
    }
}

/// One difference between the applied and the desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: Kind,
    pub name: String,
    pub action: Action,
    /// The fields that changed, one by one (empty for a creation or removal).
    pub fields: Vec<FieldChange>,
}

impl Change {
    /// The changed fields as one line, `a: 1 → 2; b: x → y` (empty unless a change).
    pub fn summary(&self) -> String {
        summary(&self.fields)
    }
}

/// The name of `service`'s route in `environment`: `service@environment`.
pub fn route_key(service: &str, environment: &str) -> String {
    format!("{service}@{environment}")
}

/// The declared things of one kind, before and after, by name.
#[derive(Debug, Clone, Copy)]
pub struct Declared<'a, V> {
    pub kind: Kind,
    pub before: &'a BTreeMap<String, V>,
    pub after: &'a BTreeMap<String, V>,
}

/// The changes from `before` to `after` of one kind: creations and changes in name order,
/// then removals in name order. A thing is changed when its value differs (`V`'s own
/// equality), and `fields` says how it reads for the list of changed fields.
pub fn diff<V: PartialEq>(declared: Declared<'_, V>, fields: impl Fn(&V) -> Fields) -> Vec<Change> {
    let Declared { kind, before, after } = declared;
    let mut changes = Vec::new();
    for (name, value) in after {
        match before.get(name) {
            None => changes.push(Change { kind, name: name.clone(), action: Action::Create, fields: Vec::new() }),
            Some(old) if old != value => changes.push(Change {
                kind,
                name: name.clone(),
                action: Action::Change,
                fields: field_changes(&fields(old), &fields(value)),
            }),
            Some(_) => {}
        }
    }
    for name in before.keys().filter(|name| !after.contains_key(*name)) {
        changes.push(Change { kind, name: name.clone(), action: Action::Remove, fields: Vec::new() });
    }
    changes
}

/// The fields that differ between `before` and `after`, in field order.
pub fn field_changes(before: &Fields, after: &Fields) -> Vec<FieldChange> {
    let mut names: Vec<&String> = before.keys().chain(after.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter(|field| before.get(*field) != after.get(*field))
        .map(|field| FieldChange {
            field: field.clone(),
            before: before.get(field).cloned(),
            after: after.get(field).cloned(),
        })
        .collect()
}

/// The changes as one line, `a: 1 → 2; b: x → y`.
pub fn summary(changes: &[FieldChange]) -> String {
    changes.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(pairs: &[(&str, &str)]) -> Fields {
        pairs.iter().map(|(field, value)| ((*field).to_owned(), (*value).to_owned())).collect()
    }

    fn declared(entries: &[(&str, Fields)]) -> BTreeMap<String, Fields> {
        entries.iter().map(|(name, fields)| ((*name).to_owned(), fields.clone())).collect()
    }

    /// One line per change, as a plan lists them.
    fn render(changes: &[Change]) -> String {
        changes
            .iter()
            .map(|change| format!("{} {} {}: {}", change.action, change.kind, change.name, change.summary()))
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn creations_and_changes_in_name_order_then_removals() {
        let web = fields(&[("command", "[python3, server.py]"), ("env.VERSION", "1.0.0"), ("replicas", "1")]);
        let web_next = fields(&[("command", "[python3, app.py]"), ("env.VERSION", "1.1.0"), ("replicas", "1")]);
        let worker = fields(&[("command", "[./work]")]);
        let before = declared(&[("web", web.clone()), ("cron", worker.clone()), ("same", worker.clone())]);
        let after = declared(&[("web", web_next), ("api", worker.clone()), ("same", worker)]);
        let changes = diff(Declared { kind: Kind::Service, before: &before, after: &after }, Clone::clone);
        assert_eq!(
            render(&changes),
            "create service api: \n\
             change service web: command: [python3, server.py] → [python3, app.py]; env.VERSION: 1.0.0 → 1.1.0\n\
             remove service cron: "
        );
        assert_eq!(
            changes[1].fields[1],
            FieldChange { field: "env.VERSION".into(), before: Some("1.0.0".into()), after: Some("1.1.0".into()) }
        );
        assert!(diff(Declared { kind: Kind::Service, before: &before, after: &before }, Clone::clone).is_empty());
    }

    /// What counts as changed is the caller's equality, even where the fields read the same
    /// (a record kept with a field more, say), as the server's stored JSON always compared.
    #[test]
    fn a_change_is_the_values_inequality_and_fields_only_describe_it() {
        let before = BTreeMap::from([("production".to_owned(), (1, "eu"))]);
        let after = BTreeMap::from([("production".to_owned(), (2, "eu"))]);
        let changes = diff(Declared { kind: Kind::Environment, before: &before, after: &after }, |value| {
            fields(&[("region", value.1)])
        });
        assert_eq!(
            changes,
            vec![Change {
                kind: Kind::Environment,
                name: "production".into(),
                action: Action::Change,
                fields: Vec::new()
            }]
        );
    }

    #[test]
    fn names_as_the_api_writes_them() {
        let kinds = [Kind::Service, Kind::Environment, Kind::Route].map(Kind::as_str);
        assert_eq!(kinds, ["service", "environment", "route"]);
        let actions = [Action::Create, Action::Change, Action::Remove].map(Action::as_str);
        assert_eq!(actions, ["create", "change", "remove"]);
        assert_eq!(route_key("web", "staging"), "web@staging");
        let field = FieldChange { field: "replicas".into(), before: None, after: Some("2".into()) };
        assert_eq!(summary(&[field]), "replicas: — → 2");
    }
}
