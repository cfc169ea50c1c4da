//! A short-lived cache of API-token lookups.
//!
//! Every API request authenticates, and with SQLite each lookup is a hand-off to the
//! driver's worker thread and back; caching it for a couple of seconds roughly halves the
//! database round trips of a typical read (see bench/foundation.py). Revocation through this
//! server drops the entry at once; a change made elsewhere (another replica, `opsloop admin`)
//! is seen within [`TTL`].

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use opsloop_store::{ApiToken, User};

pub const TTL: Duration = Duration::from_secs(2);
const MAX_ENTRIES: usize = 10_000;

#[derive(Debug, Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<String, (ApiToken, User, Instant)>>,
}

impl TokenCache {
    pub fn get(&self, digest: &str) -> Option<(ApiToken, User)> {
        let entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (token, user, fetched) = entries.get(digest)?;
        (fetched.elapsed() < TTL).then(|| (token.clone(), user.clone()))
    }

    pub fn put(&self, digest: String, token: ApiToken, user: User) {
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (_, _, fetched)| fetched.elapsed() < TTL);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(digest, (token, user, Instant::now()));
    }

    /// Forgets a token at once (on revocation).
    pub fn forget(&self, token_id: i64) {
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        entries.retain(|_, (token, _, _)| token.id != token_id);
    }

    /// Forgets every token of a user (when the user changes).
    pub fn forget_user(&self, user_id: i64) {
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        entries.retain(|_, (_, user, _)| user.id != user_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opsloop_core::Role;

    fn entry(token_id: i64, user_id: i64) -> (ApiToken, User) {
        let token = ApiToken {
            id: token_id,
            user_id,
            name: "t".into(),
            role: Role::Viewer,
            created_at: 0,
            expires_at: None,
            revoked_at: None,
            last_used_at: None,
        };
        let user = User {
            id: user_id,
            username: "u".into(),
            display_name: String::new(),
            password_hash: String::new(),
            is_admin: false,
            must_change_password: false,
            disabled: false,
            created_at: 0,
        };
        (token, user)
    }

    #[test]
    fn forgets_revoked_tokens_and_changed_users() {
        let cache = TokenCache::default();
        let (token, user) = entry(1, 10);
        cache.put("a".into(), token, user);
        let (token, user) = entry(2, 20);
        cache.put("b".into(), token, user);
        assert!(cache.get("a").is_some() && cache.get("b").is_some());
        cache.forget(1);
        assert!(cache.get("a").is_none());
        cache.forget_user(20);
        assert!(cache.get("b").is_none());
        assert!(cache.get("missing").is_none());
    }
}
