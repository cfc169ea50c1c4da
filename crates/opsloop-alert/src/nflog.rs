//! The notification log (Alertmanager's `nflog`): per group and receiver integration, which
//! alerts were firing and which resolved at the last notification, and when. Deduplication
//! reads it to decide whether a flush notifies; a host persists it so a restart neither
//! repeats a notification nor forgets one.

use std::collections::HashMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// Which integration of which receiver, for which group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "camelCase")]
pub struct NflogKey {
    pub group_key: String,
    pub receiver: String,
    pub integration: String,
    pub index: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NflogEntry {
    pub firing: Vec<u64>,
    pub resolved: Vec<u64>,
    pub timestamp: Timestamp,
    pub expires_at: Timestamp,
}

/// How long an entry is kept after it was written (Alertmanager's default `--data.retention`).
pub const RETENTION: std::time::Duration = std::time::Duration::from_secs(120 * 3600);

#[derive(Debug, Default)]
pub struct Nflog {
    entries: HashMap<NflogKey, NflogEntry>,
}

impl Nflog {
    pub fn get(&self, key: &NflogKey) -> Option<&NflogEntry> {
        self.entries.get(key)
    }

    pub fn log(&mut self, key: NflogKey, firing: Vec<u64>, resolved: Vec<u64>, now: Timestamp) {
        let expires_at = crate::alerts::add(now, RETENTION);
        self.entries.insert(key, NflogEntry { firing, resolved, timestamp: now, expires_at });
    }

    pub fn gc(&mut self, now: Timestamp) {
        self.entries.retain(|_, e| e.expires_at > now);
    }

    pub fn snapshot(&self) -> Vec<(NflogKey, NflogEntry)> {
        let mut all: Vec<_> = self.entries.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    pub fn restore(&mut self, entries: Vec<(NflogKey, NflogEntry)>) {
        self.entries.extend(entries);
    }
}
