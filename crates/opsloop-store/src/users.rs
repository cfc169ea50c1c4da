//! Users, API tokens and browser sessions.
//!
//! Secrets never reach this module in the clear: passwords arrive as argon2 hashes,
//! tokens and session ids as SHA-256 digests. Lookups by digest are exact matches on a
//! unique index.

use crate::audit::record_audit;
use crate::{Actor, Page, PageRequest, Result, Store, StoreError, with_pool};
use opsloop_core::Role;

#[derive(Debug, Clone)]
pub struct User {
    pub id: i64,
    pub username: String,
    pub display_name: String,
    pub password_hash: String,
    pub is_admin: bool,
    pub must_change_password: bool,
    pub disabled: bool,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct NewUser<'a> {
    pub username: &'a str,
    pub display_name: &'a str,
    pub password_hash: &'a str,
    pub is_admin: bool,
    pub must_change_password: bool,
}

#[derive(Debug, Clone)]
pub struct ApiToken {
    pub id: i64,
    pub user_id: i64,
    pub name: String,
    pub role: Role,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_used_at: Option<i64>,
}

impl ApiToken {
    pub fn is_usable_at(&self, now_ms: i64) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|expiry| expiry > now_ms)
    }
}

type TokenRow = (i64, i64, String, String, i64, Option<i64>, Option<i64>, Option<i64>);

type UserRow = (i64, String, String, String, bool, bool, bool, i64);

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        let (id, username, display_name, password_hash, is_admin, must_change_password, disabled, created_at) = row;
        User { id, username, display_name, password_hash, is_admin, must_change_password, disabled, created_at }
    }
}

impl TryFrom<TokenRow> for ApiToken {
    type Error = StoreError;
    fn try_from(row: TokenRow) -> Result<Self> {
        let (id, user_id, name, role, created_at, expires_at, revoked_at, last_used_at) = row;
        let role = role.parse::<Role>().map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(ApiToken { id, user_id, name, role, created_at, expires_at, revoked_at, last_used_at })
    }
}

#[derive(Debug, Clone)]
pub struct Session {
    pub id: i64,
    pub user_id: i64,
    pub csrf_token: String,
    pub created_at: i64,
    pub expires_at: i64,
}

type SessionRow = (i64, i64, String, i64, i64);

impl From<SessionRow> for Session {
    fn from((id, user_id, csrf_token, created_at, expires_at): SessionRow) -> Self {
        Session { id, user_id, csrf_token, created_at, expires_at }
    }
}

impl Store {
    pub async fn create_user(&self, new: NewUser<'_>, actor: Actor<'_>) -> Result<User> {
        let now = self.now_ms();
        let conflict = || format!("user `{}` already exists", new.username);
        let detail = if new.is_admin { "instance admin" } else { "" };
        let id: i64 = with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO users (username, display_name, password_hash, is_admin, must_change_password, created_at)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .bind(new.username)
            .bind(new.display_name)
            .bind(new.password_hash)
            .bind(new.is_admin)
            .bind(new.must_change_password)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| StoreError::conflict_on_unique(e, conflict))?;
            record_audit!(&mut *tx, now, actor, "user.create", new.username, detail);
            tx.commit().await?;
            id
        });
        self.user_by_id(id).await?.ok_or(StoreError::NotFound { what: "user" })
    }

    pub async fn count_users(&self) -> Result<i64> {
        Ok(with_pool!(self, |pool| sqlx::query_scalar("SELECT COUNT(*) FROM users").fetch_one(pool).await?))
    }

    pub async fn user_by_id(&self, id: i64) -> Result<Option<User>> {
        let row: Option<UserRow> = with_pool!(self, |pool| {
            sqlx::query_as::<_, UserRow>(
                "SELECT id, username, display_name, password_hash, is_admin, must_change_password, disabled, created_at
                 FROM users WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(User::from))
    }

    pub async fn user_by_username(&self, username: &str) -> Result<Option<User>> {
        let row: Option<UserRow> = with_pool!(self, |pool| {
            sqlx::query_as::<_, UserRow>(
                "SELECT id, username, display_name, password_hash, is_admin, must_change_password, disabled, created_at
                 FROM users WHERE username = $1",
            )
            .bind(username)
            .fetch_optional(pool)
            .await?
        });
        Ok(row.map(User::from))
    }

    /// Users ordered by username.
    pub async fn list_users(&self, page: &PageRequest) -> Result<Page<User>> {
        let after = page.after.clone().unwrap_or_default();
        let rows: Vec<UserRow> = with_pool!(self, |pool| {
            sqlx::query_as::<_, UserRow>(
                "SELECT id, username, display_name, password_hash, is_admin, must_change_password, disabled, created_at
                 FROM users WHERE username > $1 ORDER BY username LIMIT $2",
            )
            .bind(&after)
            .bind(page.fetch_limit())
            .fetch_all(pool)
            .await?
        });
        let rows: Vec<User> = rows.into_iter().map(User::from).collect();
        Ok(Page::from_rows(rows, page, |user| user.username.clone()))
    }

    /// Sets a user's password and ends every browser session of theirs except `keep_session`
    /// (the digest of the session making the change), in one transaction.
    pub async fn set_password(
        &self,
        user: &User,
        password_hash: &str,
        must_change: bool,
        keep_session: Option<&str>,
        actor: Actor<'_>,
    ) -> Result<()> {
        let now = self.now_ms();
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let done = sqlx::query("UPDATE users SET password_hash = $1, must_change_password = $2 WHERE id = $3")
                .bind(password_hash)
                .bind(must_change)
                .bind(user.id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if done == 0 {
                return Err(StoreError::NotFound { what: "user" });
            }
            sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND session_hash <> $2")
                .bind(user.id)
                .bind(keep_session.unwrap_or(""))
                .execute(&mut *tx)
                .await?;
            record_audit!(&mut *tx, now, actor, "user.password", &user.username, "");
            tx.commit().await?;
        });
        Ok(())
    }

    pub async fn create_token(
        &self,
        user: &User,
        name: &str,
        token_hash: &str,
        role: Role,
        expires_at: Option<i64>,
        actor: Actor<'_>,
    ) -> Result<ApiToken> {
        let now = self.now_ms();
        let detail = format!("name={name} role={role}");
        let row: TokenRow = with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let row = sqlx::query_as::<_, TokenRow>(
                "INSERT INTO api_tokens (user_id, name, token_hash, role, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 RETURNING id, user_id, name, role, created_at, expires_at, revoked_at, last_used_at",
            )
            .bind(user.id)
            .bind(name)
            .bind(token_hash)
            .bind(role.as_str())
            .bind(now)
            .bind(expires_at)
            .fetch_one(&mut *tx)
            .await?;
            record_audit!(&mut *tx, now, actor, "token.create", &user.username, &detail);
            tx.commit().await?;
            row
        });
        row.try_into()
    }

    /// The token with this digest and its user, whether or not it is still usable.
    /// One query: this runs on every API request.
    pub async fn token_by_hash(&self, token_hash: &str) -> Result<Option<(ApiToken, User)>> {
        type Joined = (
            i64,
            i64,
            String,
            String,
            i64,
            Option<i64>,
            Option<i64>,
            Option<i64>,
            String,
            String,
            String,
            bool,
            bool,
            bool,
            i64,
        );
        let row: Option<Joined> = with_pool!(self, |pool| {
            sqlx::query_as::<_, Joined>(
                "SELECT t.id, t.user_id, t.name, t.role, t.created_at, t.expires_at, t.revoked_at, t.last_used_at,
                        u.username, u.display_name, u.password_hash, u.is_admin, u.must_change_password, u.disabled, u.created_at
                 FROM api_tokens t JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1",
            )
            .bind(token_hash)
            .fetch_optional(pool)
            .await?
        });
        let Some(row) = row else { return Ok(None) };
        let (id, user_id, name, role, created_at, expires_at, revoked_at, last_used_at) =
            (row.0, row.1, row.2, row.3, row.4, row.5, row.6, row.7);
        let token = ApiToken::try_from((id, user_id, name, role, created_at, expires_at, revoked_at, last_used_at))?;
        let user = User::from((user_id, row.8, row.9, row.10, row.11, row.12, row.13, row.14));
        Ok(Some((token, user)))
    }

    pub async fn list_tokens(&self, user_id: i64) -> Result<Vec<ApiToken>> {
        let rows: Vec<TokenRow> = with_pool!(self, |pool| {
            sqlx::query_as::<_, TokenRow>(
                "SELECT id, user_id, name, role, created_at, expires_at, revoked_at, last_used_at
                 FROM api_tokens WHERE user_id = $1 ORDER BY id",
            )
            .bind(user_id)
            .fetch_all(pool)
            .await?
        });
        rows.into_iter().map(ApiToken::try_from).collect()
    }

    /// Revokes one of a user's tokens. Revoking twice is not an error; the first time is kept.
    pub async fn revoke_token(&self, user: &User, token_id: i64, actor: Actor<'_>) -> Result<()> {
        let now = self.now_ms();
        let detail = format!("id={token_id}");
        with_pool!(self, |pool| {
            let mut tx = pool.begin().await?;
            let found = sqlx::query(
                "UPDATE api_tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2 AND user_id = $3",
            )
            .bind(now)
            .bind(token_id)
            .bind(user.id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if found == 0 {
                return Err(StoreError::NotFound { what: "token" });
            }
            record_audit!(&mut *tx, now, actor, "token.revoke", &user.username, &detail);
            tx.commit().await?;
        });
        Ok(())
    }

    pub async fn touch_token(&self, token_id: i64, at: i64) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
                .bind(at)
                .bind(token_id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    pub async fn create_session(
        &self,
        session_hash: &str,
        user_id: i64,
        csrf_token: &str,
        expires_at: i64,
    ) -> Result<Session> {
        let now = self.now_ms();
        let row: SessionRow = with_pool!(self, |pool| {
            sqlx::query_as::<_, SessionRow>(
                "INSERT INTO sessions (session_hash, user_id, csrf_token, created_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5) RETURNING id, user_id, csrf_token, created_at, expires_at",
            )
            .bind(session_hash)
            .bind(user_id)
            .bind(csrf_token)
            .bind(now)
            .bind(expires_at)
            .fetch_one(pool)
            .await?
        });
        Ok(Session::from(row))
    }

    /// A live (unexpired) session and its user.
    pub async fn session_by_hash(&self, session_hash: &str) -> Result<Option<(Session, User)>> {
        let now = self.now_ms();
        let session: Option<SessionRow> = with_pool!(self, |pool| {
            sqlx::query_as::<_, SessionRow>(
                "SELECT id, user_id, csrf_token, created_at, expires_at FROM sessions
                 WHERE session_hash = $1 AND expires_at > $2",
            )
            .bind(session_hash)
            .bind(now)
            .fetch_optional(pool)
            .await?
        });
        let Some(session) = session.map(Session::from) else { return Ok(None) };
        let user = self.user_by_id(session.user_id).await?.ok_or(StoreError::NotFound { what: "user" })?;
        Ok(Some((session, user)))
    }

    pub async fn delete_session(&self, session_hash: &str) -> Result<()> {
        with_pool!(self, |pool| {
            sqlx::query("DELETE FROM sessions WHERE session_hash = $1").bind(session_hash).execute(pool).await?;
        });
        Ok(())
    }

    /// Removes expired sessions; returns how many.
    pub async fn delete_expired_sessions(&self) -> Result<u64> {
        let now = self.now_ms();
        Ok(with_pool!(self, |pool| {
            sqlx::query("DELETE FROM sessions WHERE expires_at <= $1").bind(now).execute(pool).await?.rows_affected()
        }))
    }
}
