//! Names of things users create (projects, users, tokens): one rule, checked at every edge.
//!
//! Names appear in URLs, file paths and later in shell-free command arguments, so they are
//! restricted to a portable, unambiguous alphabet.

pub const MAX_NAME_LEN: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{kind} name must not be empty")]
    Empty { kind: &'static str },
    #[error("{kind} name is {len} characters long; the limit is {MAX_NAME_LEN}")]
    TooLong { kind: &'static str, len: usize },
    #[error(
        "{kind} name `{shown}` may contain only lowercase ASCII letters, digits, `-`, `_` and `.`, and must start with a letter or digit"
    )]
    BadCharacters { kind: &'static str, shown: String },
}

/// Checks a user-chosen name such as a project or user name.
pub fn validate_name(kind: &'static str, name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { kind });
    }
    let len = name.chars().count();
    if len > MAX_NAME_LEN {
        return Err(NameError::TooLong { kind, len });
    }
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.'));
    if !first_ok || !rest_ok {
        // Echo at most a bounded, printable prefix: the name may be hostile.
        let shown: String = name.chars().take(MAX_NAME_LEN).filter(|c| !c.is_control()).collect();
        return Err(NameError::BadCharacters { kind, shown });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for name in ["web", "api-gateway", "svc_2", "a.b", "0day"] {
            assert_eq!(validate_name("project", name), Ok(()), "{name}");
        }
    }

    #[test]
    fn rejects_hostile_names() {
        let long = "a".repeat(65);
        for name in ["", "-x", ".hidden", "Web", "a b", "ünïcode", "x'; DROP TABLE projects;--", "a/b", &long, "a\nb"]
        {
            assert!(validate_name("project", name).is_err(), "{name:?}");
        }
    }
}
