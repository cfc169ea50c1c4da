//! Roles: what a member may do in a project, and the instance-wide admin.
//!
//! The order is the order of power: a check for "at least Developer" passes for
//! Maintainer, Owner and Admin. `Admin` is never a project membership; it caps
//! API tokens and marks instance administrators.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Viewer,
    Developer,
    Maintainer,
    Owner,
    Admin,
}

impl Role {
    pub const PROJECT_ROLES: [Role; 4] = [Role::Viewer, Role::Developer, Role::Maintainer, Role::Owner];
    pub const ALL: [Role; 5] = [Role::Viewer, Role::Developer, Role::Maintainer, Role::Owner, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Developer => "developer",
            Role::Maintainer => "maintainer",
            Role::Owner => "owner",
            Role::Admin => "admin",
        }
    }

    /// Whether this role may be given to a project member.
    pub fn is_project_role(self) -> bool {
        self != Role::Admin
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown role `{0}`; expected one of: viewer, developer, maintainer, owner, admin")]
pub struct RoleParseError(pub String);

impl FromStr for Role {
    type Err = RoleParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL.into_iter().find(|role| role.as_str() == s).ok_or_else(|| RoleParseError(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_and_order_by_power() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>().ok(), Some(role));
        }
        assert!(Role::Viewer < Role::Developer && Role::Maintainer < Role::Owner && Role::Owner < Role::Admin);
        assert!("root".parse::<Role>().is_err());
        assert!(!Role::Admin.is_project_role());
    }
}
