//! Creating users and tokens: shared by the API, the web UI, first start and `opsloop admin`,
//! so every path applies the same rules.

use opsloop_core::{Role, validate_name};
use opsloop_store::{Actor, ApiToken, NewUser, Store, User};

use crate::auth::credentials;

/// Why a user or token was not created. Domain words: `crate::error` maps them to HTTP, the
/// CLI prints them.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error(transparent)]
    Name(#[from] opsloop_core::NameError),
    #[error(transparent)]
    WeakPassword(#[from] credentials::WeakPassword),
    #[error(transparent)]
    Store(#[from] opsloop_store::StoreError),
    #[error("credential generation failed: {0}")]
    Credentials(#[from] credentials::CredentialError),
}

pub const MAX_TOKEN_NAME_CHARS: usize = 100;
pub const MAX_TOKEN_DAYS: u32 = 3650;

/// Issues an API token for `user`; returns the secret (shown once) and its record.
pub async fn issue_token(
    store: &Store,
    user: &User,
    name: &str,
    role: Role,
    expires_in_days: Option<u32>,
    actor: Actor<'_>,
) -> Result<(String, ApiToken), AccountError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > MAX_TOKEN_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(AccountError::Invalid(format!(
            "a token name is 1 to {MAX_TOKEN_NAME_CHARS} characters, without control characters"
        )));
    }
    if role == Role::Admin && !user.is_admin {
        return Err(AccountError::Forbidden("only instance admins can hold admin tokens"));
    }
    let expires_at = match expires_in_days {
        Some(0) => return Err(AccountError::Invalid("expires_in_days must be at least 1".to_owned())),
        Some(days) if days > MAX_TOKEN_DAYS => {
            return Err(AccountError::Invalid(format!("expires_in_days must be at most {MAX_TOKEN_DAYS}")));
        }
        Some(days) => Some(store.now_ms() + i64::from(days) * 86_400_000),
        None => None,
    };
    let secret = credentials::new_api_token()?;
    let token = store.create_token(user, name, &credentials::digest(&secret), role, expires_at, actor).await?;
    Ok((secret, token))
}

/// Creates a user. Without a password one is generated and returned, and the user must
/// change it at first sign-in.
pub async fn create_user(
    store: &Store,
    username: &str,
    password: Option<&str>,
    is_admin: bool,
    actor: Actor<'_>,
) -> Result<(User, Option<String>), AccountError> {
    validate_name("user", username)?;
    let (password, generated) = match password {
        Some(password) => {
            credentials::check_password_strength(password)?;
            (password.to_owned(), None)
        }
        None => {
            let password = credentials::new_password()?;
            (password.clone(), Some(password))
        }
    };
    let hash = credentials::hash_password(&password)?;
    let new = NewUser {
        username,
        display_name: "",
        password_hash: &hash,
        is_admin,
        must_change_password: generated.is_some(),
    };
    let user = store.create_user(new, actor).await?;
    Ok((user, generated))
}

/// On first start (no users at all) creates `admin` with a one-time password, returned so
/// the caller can print it once.
pub async fn bootstrap_admin(store: &Store) -> Result<Option<String>, AccountError> {
    if store.count_users().await? > 0 {
        return Ok(None);
    }
    let (_, password) = create_user(store, "admin", None, true, Actor::SYSTEM).await?;
    Ok(password)
}

/// Deletes expired sessions every ten minutes so the table does not grow without bound.
pub async fn sweep_sessions_forever(store: Store) {
    let mut interval = tokio::time::interval(std::time::Duration::from_secs(600));
    loop {
        interval.tick().await;
        match store.delete_expired_sessions().await {
            Ok(0) => {}
            Ok(count) => tracing::debug!(count, "removed expired sessions"),
            Err(error) => tracing::warn!(%error, "could not remove expired sessions"),
        }
    }
}
