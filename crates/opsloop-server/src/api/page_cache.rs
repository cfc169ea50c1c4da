//! A cache of rendered project-list pages, the API's hottest read.
//!
//! An entry is served only while nothing has changed projects or memberships in this process
//! (the store's project generation) and for at most [`MAX_AGE`], which bounds how stale a page
//! can be when another process (another replica on the same PostgreSQL) made the change.
//! Uncached, a 100-project page costs a database round trip through sqlx's SQLite worker
//! thread plus serialising ~20 kB; see bench/foundation.py for both figures.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Bytes;

pub const MAX_AGE: Duration = Duration::from_secs(1);
// A 100-project page is ~20 kB: 256 pages bound the cache near 5 MB.
const MAX_ENTRIES: usize = 256;

/// Who sees which projects (`None`: all of them, for admins) and which page.
pub type PageKey = (Option<i64>, Option<String>, u32);

#[derive(Debug, Default)]
pub struct PageCache {
    entries: Mutex<HashMap<PageKey, (u64, Instant, Bytes)>>,
}

impl PageCache {
    pub fn get(&self, key: &PageKey, generation: u64) -> Option<Bytes> {
        let entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let (stored_generation, stored_at, body) = entries.get(key)?;
        (*stored_generation == generation && stored_at.elapsed() < MAX_AGE).then(|| body.clone())
    }

    pub fn put(&self, key: PageKey, generation: u64, body: Bytes) {
        let mut entries = self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.retain(|_, (stored_generation, stored_at, _)| {
                *stored_generation == generation && stored_at.elapsed() < MAX_AGE
            });
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (generation, Instant::now(), body));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_generation_or_age_invalidates() {
        let cache = PageCache::default();
        let key: PageKey = (None, None, 50);
        cache.put(key.clone(), 7, Bytes::from_static(b"[]"));
        assert_eq!(cache.get(&key, 7).as_deref(), Some(&b"[]"[..]));
        assert!(cache.get(&key, 8).is_none(), "a write in between makes the page stale");
        assert!(cache.get(&(Some(1), None, 50), 7).is_none(), "another user's view is another entry");
    }
}
