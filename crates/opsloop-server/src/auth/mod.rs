//! Who is calling, and whether they may. [`decide`] is the one place where access is decided;
//! the route table (`crate::routes`) gives every route an [`Access`] and its middleware
//! calls [`decide`] before any handler runs.

pub mod credentials;
pub mod rate_limit;
pub mod token_cache;

use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, COOKIE};
use opsloop_core::Role;
use opsloop_store::{Actor, Project, Store, StoreError, User};

pub const SESSION_COOKIE: &str = "opsloop_session";
/// Double-submit cookie that protects the login form, which runs before any session exists.
pub const LOGIN_CSRF_COOKIE: &str = "opsloop_login_csrf";
pub const CSRF_HEADER: &str = "x-csrf-token";
pub const CSRF_FIELD: &str = "_csrf";

/// What a route requires. Every route has exactly one; there is no default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Anyone; kept to a short explicit list (health, metrics, login, the API document, assets).
    Public,
    /// A forge's webhook: no user credentials; the handler checks the request's signature
    /// against the project's secret before reading anything else.
    Webhook,
    /// Any signed-in principal, reading.
    Authenticated,
    /// Any signed-in principal whose credential may write (a token role of developer or above).
    AuthenticatedWrite,
    /// An instance admin using a credential with the `admin` role.
    Admin,
    /// At least this role in the project named by the route's `{project}` segment.
    Project(Role),
    /// At least this role in the project that the route's `{job}` belongs to.
    Job(Role),
    /// An agent, by its agent token (never a user's credential).
    Agent,
}

impl Access {
    pub fn describe(self) -> String {
        match self {
            Access::Public => "public".to_owned(),
            Access::Webhook => "webhook signature".to_owned(),
            Access::Authenticated => "authenticated".to_owned(),
            Access::AuthenticatedWrite => "authenticated, write".to_owned(),
            Access::Admin => "admin".to_owned(),
            Access::Project(role) => format!("project {role}"),
            Access::Job(role) => format!("project of the job, {role}"),
            Access::Agent => "agent token".to_owned(),
        }
    }
}

#[derive(Debug, Clone)]
pub enum Credential {
    Token {
        id: i64,
    },
    /// A running pipeline's token (`CI_JOB_TOKEN`): its own project's routes only.
    Pipeline {
        pipeline_id: i64,
        project_id: i64,
    },
    Session {
        session_hash: String,
        csrf_token: String,
    },
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: User,
    /// The most this credential may do: a token's role, or the user's full power in a browser.
    pub cap: Role,
    pub credential: Credential,
    pub source_ip: String,
}

impl Principal {
    pub fn actor(&self) -> Actor<'_> {
        Actor { name: &self.user.username, source_ip: &self.source_ip }
    }

    pub fn is_admin(&self) -> bool {
        self.user.is_admin && self.cap == Role::Admin
    }

    /// The role this principal acts with in a project where the user holds `membership`.
    /// Instance admins act as owners everywhere; a token never exceeds its own role.
    pub fn project_role(&self, membership: Option<Role>) -> Option<Role> {
        // A pipeline's token has no admin shortcut: its membership already says where it may go.
        let admin = self.user.is_admin && !matches!(self.credential, Credential::Pipeline { .. });
        let held = if admin { Some(Role::Owner) } else { membership }?;
        Some(held.min(self.cap.min(Role::Owner)))
    }

    pub fn csrf_token(&self) -> Option<&str> {
        match &self.credential {
            Credential::Session { csrf_token, .. } => Some(csrf_token),
            Credential::Token { .. } | Credential::Pipeline { .. } => None,
        }
    }
}

/// The project a `Project(_)` route acts on, with the caller's effective role in it.
#[derive(Debug, Clone)]
pub struct ProjectContext {
    pub project: Project,
    pub role: Role,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Unauthenticated,
    Forbidden(String),
    /// The project does not exist or the caller may not know it exists.
    NotFound,
}

/// Decides whether `principal` may pass a route requiring `access`. For project routes,
/// `membership` is `Some(role held)` or `None` when the user is no member.
pub fn decide(access: Access, principal: Option<&Principal>, membership: Option<Role>) -> Decision {
    if matches!(access, Access::Public | Access::Webhook) {
        return Decision::Allow;
    }
    let Some(principal) = principal else { return Decision::Unauthenticated };
    if matches!(principal.credential, Credential::Pipeline { .. }) && !matches!(access, Access::Project(_)) {
        return Decision::Forbidden("a pipeline's token reaches only its own project's routes".to_owned());
    }
    match access {
        // Agent routes are decided by the agent's token alone (`routes::enforce`).
        Access::Agent => Decision::Unauthenticated,
        Access::Public | Access::Webhook | Access::Authenticated => Decision::Allow,
        Access::AuthenticatedWrite if principal.cap >= Role::Developer => Decision::Allow,
        Access::AuthenticatedWrite => {
            Decision::Forbidden(format!("this credential has the `{}` role, which cannot make changes", principal.cap))
        }
        Access::Admin if principal.is_admin() => Decision::Allow,
        Access::Admin => Decision::Forbidden("this needs an instance admin with an admin credential".to_owned()),
        Access::Project(needed) | Access::Job(needed) => match principal.project_role(membership) {
            None => Decision::NotFound,
            Some(role) if role >= needed => Decision::Allow,
            Some(role) => {
                Decision::Forbidden(format!("this needs the `{needed}` role in the project; you act as `{role}`"))
            }
        },
    }
}

/// Finds the caller from a bearer token or a session cookie. `Ok(None)` means anonymous;
/// a presented but invalid credential is also anonymous (the route then answers 401).
pub async fn resolve_principal(
    store: &Store,
    cache: &token_cache::TokenCache,
    headers: &HeaderMap,
    source_ip: String,
) -> Result<Option<Principal>, StoreError> {
    let now = store.now_ms();
    if let Some(token) = bearer_token(headers)
        && token.starts_with(PIPELINE_TOKEN_PREFIX)
    {
        return pipeline_principal(store, &token, source_ip).await;
    }
    if let Some(token) = bearer_token(headers) {
        let digest = credentials::digest(&token);
        let (mut token, user, cached) = match cache.get(&digest) {
            Some((token, user)) => (token, user, true),
            None => match store.token_by_hash(&digest).await? {
                Some((token, user)) => (token, user, false),
                None => return Ok(None),
            },
        };
        if !token.is_usable_at(now) || user.disabled {
            return Ok(None);
        }
        // Record use at most once a minute: a write per request would serialise readers.
        let touch = token.last_used_at.is_none_or(|last| now - last > 60_000);
        if touch {
            store.touch_token(token.id, now).await?;
            token.last_used_at = Some(now);
        }
        if touch || !cached {
            cache.put(digest, token.clone(), user.clone());
        }
        let cap = if token.role == Role::Admin && !user.is_admin { Role::Owner } else { token.role };
        return Ok(Some(Principal { user, cap, credential: Credential::Token { id: token.id }, source_ip }));
    }
    if let Some(session_id) = cookie(headers, SESSION_COOKIE) {
        let session_hash = credentials::digest(session_id);
        let Some((session, user)) = store.session_by_hash(&session_hash).await? else { return Ok(None) };
        if user.disabled {
            return Ok(None);
        }
        let cap = if user.is_admin { Role::Admin } else { Role::Owner };
        let credential = Credential::Session { session_hash, csrf_token: session.csrf_token };
        return Ok(Some(Principal { user, cap, credential, source_ip }));
    }
    Ok(None)
}

/// Every pipeline token starts with this.
pub const PIPELINE_TOKEN_PREFIX: &str = "olpj_";

/// A pipeline token acts for whoever started the pipeline, at most as a maintainer; a
/// pipeline no user started (a webhook, a schedule) acts as a developer of its project.
async fn pipeline_principal(store: &Store, token: &str, source_ip: String) -> Result<Option<Principal>, StoreError> {
    let Some(found) = store.pipeline_token(&credentials::digest(token)).await? else { return Ok(None) };
    let credential = Credential::Pipeline { pipeline_id: found.pipeline_id, project_id: found.project_id };
    let person = if found.username.is_empty() { None } else { store.user_by_username(&found.username).await? };
    let (user, cap) = match person {
        Some(user) if user.disabled => return Ok(None),
        Some(user) => (user, Role::Maintainer),
        None => {
            let user = User {
                id: 0,
                username: format!("pipeline-{}", found.pipeline_id),
                display_name: format!("pipeline #{}", found.pipeline_id),
                password_hash: String::new(),
                is_admin: false,
                must_change_password: false,
                disabled: false,
                created_at: 0,
            };
            (user, Role::Developer)
        }
    };
    Ok(Some(Principal { user, cap, credential, source_ip }))
}

/// The role a principal holds in `project`: a project member's role, except that a
/// pipeline's token holds none outside its own project, and inside it, its starter's role
/// (a developer's when no user started it).
pub async fn membership(store: &Store, principal: &Principal, project: &Project) -> Result<Option<Role>, StoreError> {
    match principal.credential {
        Credential::Pipeline { project_id, .. } if project_id != project.id => Ok(None),
        Credential::Pipeline { .. } if principal.user.id == 0 => Ok(Some(Role::Developer)),
        Credential::Pipeline { .. } if principal.user.is_admin => Ok(Some(Role::Owner)),
        _ => store.member_role(project.id, principal.user.id).await,
    }
}

/// The API token a request presents: `Authorization: Bearer TOKEN`, or HTTP basic auth with
/// the token as the password and any user name — what Grafana's data sources, Prometheus's
/// `remote_write` and `alertmanagers`, and Terraform's `http` backend configure most easily.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<std::borrow::Cow<'_, str>> {
    use base64::Engine as _;
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("basic") {
        let decoded = base64::engine::general_purpose::STANDARD.decode(token.trim()).ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (_, password) = decoded.split_once(':')?;
        return (!password.is_empty()).then(|| std::borrow::Cow::Owned(password.to_owned()));
    }
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|token| !token.is_empty())
        .map(std::borrow::Cow::Borrowed)
}

/// The value of a cookie from the request's `Cookie` headers.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(is_admin: bool, cap: Role) -> Principal {
        let user = User {
            id: 1,
            username: "u".into(),
            display_name: String::new(),
            password_hash: String::new(),
            is_admin,
            must_change_password: false,
            disabled: false,
            created_at: 0,
        };
        Principal { user, cap, credential: Credential::Token { id: 1 }, source_ip: String::new() }
    }

    #[test]
    fn anonymous_only_passes_public() {
        assert_eq!(decide(Access::Public, None, None), Decision::Allow);
        for access in [Access::Authenticated, Access::AuthenticatedWrite, Access::Admin, Access::Project(Role::Viewer)]
        {
            assert_eq!(decide(access, None, None), Decision::Unauthenticated);
        }
    }

    #[test]
    fn token_role_caps_membership() {
        let viewer_token = principal(false, Role::Viewer);
        assert_eq!(decide(Access::Project(Role::Viewer), Some(&viewer_token), Some(Role::Owner)), Decision::Allow);
        assert!(matches!(
            decide(Access::Project(Role::Developer), Some(&viewer_token), Some(Role::Owner)),
            Decision::Forbidden(_)
        ));
        assert!(matches!(decide(Access::AuthenticatedWrite, Some(&viewer_token), None), Decision::Forbidden(_)));
        let owner_token = principal(false, Role::Owner);
        assert!(matches!(
            decide(Access::Project(Role::Maintainer), Some(&owner_token), Some(Role::Developer)),
            Decision::Forbidden(_)
        ));
        assert_eq!(decide(Access::Project(Role::Viewer), Some(&owner_token), None), Decision::NotFound);
    }

    #[test]
    fn admins_need_an_admin_credential() {
        assert_eq!(decide(Access::Admin, Some(&principal(true, Role::Admin)), None), Decision::Allow);
        assert!(matches!(
            decide(Access::Admin, Some(&principal(true, Role::Maintainer)), None),
            Decision::Forbidden(_)
        ));
        assert!(matches!(decide(Access::Admin, Some(&principal(false, Role::Admin)), None), Decision::Forbidden(_)));
        assert_eq!(decide(Access::Project(Role::Owner), Some(&principal(true, Role::Admin)), None), Decision::Allow);
    }

    #[test]
    fn reads_bearer_tokens_and_cookies() {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, "Bearer olp_abc".parse().unwrap());
        headers.append(COOKIE, "a=1; opsloop_session=xyz; b=2".parse().unwrap());
        assert_eq!(bearer_token(&headers).as_deref(), Some("olp_abc"));
        assert_eq!(cookie(&headers, SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie(&headers, "missing"), None);
        headers.insert(AUTHORIZATION, "Basic Zm9v".parse().unwrap());
        assert_eq!(bearer_token(&headers), None, "not user:password");
        // grafana:olp_abc
        headers.insert(AUTHORIZATION, "Basic Z3JhZmFuYTpvbHBfYWJj".parse().unwrap());
        assert_eq!(bearer_token(&headers).as_deref(), Some("olp_abc"));
    }
}
