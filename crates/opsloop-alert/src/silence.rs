//! Silences (Alertmanager's `silence` package): matchers over a time range that mute the
//! alerts they match while active. Created, updated in place when Alertmanager allows it
//! (same matchers, and times a running silence may take) or else replaced by a new one,
//! expired, and listed with their state.

use std::collections::HashMap;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::labels::LabelSet;
use crate::matcher::{MatchType, Matcher};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SilenceState {
    Pending,
    Active,
    Expired,
}

/// A matcher as the API and the snapshot write it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SilenceMatcher {
    pub name: String,
    pub value: String,
    pub is_regex: bool,
    #[serde(default = "yes")]
    pub is_equal: bool,
}

fn yes() -> bool {
    true
}

impl SilenceMatcher {
    pub fn to_matcher(&self) -> Result<Matcher, crate::matcher::MatcherError> {
        let kind = match (self.is_regex, self.is_equal) {
            (false, true) => MatchType::Equal,
            (false, false) => MatchType::NotEqual,
            (true, true) => MatchType::Regexp,
            (true, false) => MatchType::NotRegexp,
        };
        Matcher::new(kind, &self.name, &self.value)
    }

    pub fn from_matcher(m: &Matcher) -> SilenceMatcher {
        SilenceMatcher {
            name: m.name.to_string(),
            value: m.value.to_string(),
            is_regex: matches!(m.kind, MatchType::Regexp | MatchType::NotRegexp),
            is_equal: matches!(m.kind, MatchType::Equal | MatchType::Regexp),
        }
    }
}

/// A silence as stored and snapshotted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<SilenceMatcher>,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    pub updated_at: Timestamp,
    pub created_by: String,
    pub comment: String,
}

impl Silence {
    pub fn state(&self, now: Timestamp) -> SilenceState {
        if now < self.starts_at {
            SilenceState::Pending
        } else if self.ends_at <= now {
            SilenceState::Expired
        } else {
            SilenceState::Active
        }
    }
}

/// What a client asks for: `id` set to update that silence.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostableSilence {
    #[serde(default)]
    pub id: Option<String>,
    pub matchers: Vec<SilenceMatcher>,
    pub starts_at: Option<Timestamp>,
    pub ends_at: Option<Timestamp>,
    #[serde(default)]
    pub created_by: String,
    #[serde(default)]
    pub comment: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SilenceError {
    #[error("silence {0} not found")]
    NotFound(String),
    #[error("silence {0} already expired")]
    AlreadyExpired(String),
    #[error("at least one matcher required")]
    NoMatchers,
    #[error("at least one matcher must not match the empty string")]
    AllMatchEmpty,
    #[error("invalid label matcher {index}: {message}")]
    BadMatcher { index: usize, message: String },
    #[error("missing start time")]
    NoStart,
    #[error("missing end time")]
    NoEnd,
    #[error("end time must not be before start time")]
    EndBeforeStart,
    #[error("end time can't be in the past")]
    EndInPast,
}

#[derive(Debug, Default)]
pub struct Silences {
    by_id: HashMap<String, (Silence, Vec<Matcher>)>,
    next_id: u64,
    id_seed: u64,
}

impl Silences {
    pub fn new(id_seed: u64) -> Self {
        Silences { by_id: HashMap::new(), next_id: 0, id_seed }
    }

    /// A fresh id in the UUID v4 layout (random enough for ids, deterministic in tests).
    fn new_id(&mut self) -> String {
        self.next_id += 1;
        let mut x = self.id_seed ^ self.next_id.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        let mut word = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (a, b) = (word(), word());
        format!(
            "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            0x8000 | ((b >> 48) & 0x3fff),
            b & 0xffff_ffff_ffff
        )
    }

    fn validate(p: &PostableSilence) -> Result<(Vec<Matcher>, Timestamp, Timestamp), SilenceError> {
        if p.matchers.is_empty() {
            return Err(SilenceError::NoMatchers);
        }
        let mut matchers = Vec::new();
        for (index, m) in p.matchers.iter().enumerate() {
            if !crate::labels::is_valid_label_name(&m.name) {
                return Err(SilenceError::BadMatcher { index, message: format!("invalid label name {:?}", m.name) });
            }
            matchers.push(m.to_matcher().map_err(|e| SilenceError::BadMatcher { index, message: e.to_string() })?);
        }
        if matchers.iter().all(|m| m.matches_value("")) {
            return Err(SilenceError::AllMatchEmpty);
        }
        let starts_at = p.starts_at.ok_or(SilenceError::NoStart)?;
        let ends_at = p.ends_at.ok_or(SilenceError::NoEnd)?;
        if ends_at < starts_at {
            return Err(SilenceError::EndBeforeStart);
        }
        Ok((matchers, starts_at, ends_at))
    }

    /// Creates a silence, or updates `p.id`: in place when the matchers are the same and the
    /// new times are allowed for its state, else by expiring it and creating a new one (the
    /// new id is returned).
    pub fn set(&mut self, p: PostableSilence, now: Timestamp) -> Result<String, SilenceError> {
        let (matchers, mut starts_at, ends_at) = Self::validate(&p)?;
        if ends_at < now {
            return Err(SilenceError::EndInPast);
        }
        if let Some(id) = &p.id {
            let Some((prev, _)) = self.by_id.get(id) else { return Err(SilenceError::NotFound(id.clone())) };
            let state = prev.state(now);
            let can_update = prev.matchers == p.matchers
                && match state {
                    SilenceState::Active => starts_at == prev.starts_at && ends_at >= now,
                    SilenceState::Pending => starts_at >= now,
                    SilenceState::Expired => false,
                };
            if can_update {
                let s = Silence {
                    id: id.clone(),
                    matchers: p.matchers,
                    starts_at,
                    ends_at,
                    updated_at: now,
                    created_by: p.created_by,
                    comment: p.comment,
                };
                self.by_id.insert(id.clone(), (s, matchers));
                return Ok(id.clone());
            }
            if state != SilenceState::Expired {
                self.expire(id, now)?;
            }
        }
        if starts_at < now {
            starts_at = now;
        }
        let id = self.new_id();
        let s = Silence {
            id: id.clone(),
            matchers: p.matchers,
            starts_at,
            ends_at,
            updated_at: now,
            created_by: p.created_by,
            comment: p.comment,
        };
        self.by_id.insert(id.clone(), (s, matchers));
        Ok(id)
    }

    /// Ends a silence now (a pending one never starts).
    pub fn expire(&mut self, id: &str, now: Timestamp) -> Result<(), SilenceError> {
        let Some((s, _)) = self.by_id.get_mut(id) else { return Err(SilenceError::NotFound(id.to_owned())) };
        match s.state(now) {
            SilenceState::Expired => return Err(SilenceError::AlreadyExpired(id.to_owned())),
            SilenceState::Pending => {
                s.starts_at = now;
                s.ends_at = now;
            }
            SilenceState::Active => s.ends_at = now,
        }
        s.updated_at = now;
        Ok(())
    }

    pub fn get(&self, id: &str) -> Option<&Silence> {
        self.by_id.get(id).map(|(s, _)| s)
    }

    /// Every silence with its state, newest first by update.
    pub fn list(&self, now: Timestamp) -> Vec<(Silence, SilenceState)> {
        let mut out: Vec<_> = self.by_id.values().map(|(s, _)| (s.clone(), s.state(now))).collect();
        out.sort_by(|a, b| b.0.updated_at.cmp(&a.0.updated_at).then_with(|| a.0.id.cmp(&b.0.id)));
        out
    }

    /// The ids of the active silences matching `labels`, sorted.
    pub fn silenced_by(&self, labels: &LabelSet, now: Timestamp) -> Vec<String> {
        let mut ids: Vec<String> = self
            .by_id
            .values()
            .filter(|(s, ms)| s.state(now) == SilenceState::Active && ms.iter().all(|m| m.matches(labels)))
            .map(|(s, _)| s.id.clone())
            .collect();
        ids.sort();
        ids
    }

    pub fn mutes(&self, labels: &LabelSet, now: Timestamp) -> bool {
        self.by_id.values().any(|(s, ms)| s.state(now) == SilenceState::Active && ms.iter().all(|m| m.matches(labels)))
    }

    /// Drops silences expired before `before` (Alertmanager keeps them for its retention).
    pub fn gc(&mut self, before: Timestamp) {
        self.by_id.retain(|_, (s, _)| s.ends_at >= before);
    }

    pub fn snapshot(&self) -> Vec<Silence> {
        let mut all: Vec<Silence> = self.by_id.values().map(|(s, _)| s.clone()).collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// Loads silences from a snapshot; ones whose matchers no longer parse are skipped.
    pub fn restore(&mut self, silences: Vec<Silence>) {
        for s in silences {
            let matchers: Result<Vec<Matcher>, _> = s.matchers.iter().map(SilenceMatcher::to_matcher).collect();
            if let Ok(matchers) = matchers {
                self.by_id.insert(s.id.clone(), (s, matchers));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn eq(name: &str, value: &str) -> SilenceMatcher {
        SilenceMatcher { name: name.into(), value: value.into(), is_regex: false, is_equal: true }
    }

    #[test]
    fn lifecycle() {
        let mut s = Silences::new(1);
        let p = PostableSilence {
            matchers: vec![eq("a", "1")],
            starts_at: Some(at(100)),
            ends_at: Some(at(200)),
            created_by: "me".into(),
            comment: "c".into(),
            id: None,
        };
        let id = s.set(p.clone(), at(50)).unwrap();
        let labels = LabelSet::from_pairs([("a", "1")]);
        assert_eq!(s.get(&id).unwrap().state(at(50)), SilenceState::Pending);
        assert!(!s.mutes(&labels, at(50)) && s.mutes(&labels, at(150)) && !s.mutes(&labels, at(200)));
        // Extending an active silence keeps its id.
        let mut longer = p.clone();
        longer.id = Some(id.clone());
        longer.ends_at = Some(at(300));
        assert_eq!(s.set(longer, at(150)).unwrap(), id);
        // Changing its matchers replaces it.
        let mut other = p.clone();
        other.id = Some(id.clone());
        other.matchers = vec![eq("a", "2")];
        other.ends_at = Some(at(300));
        let new_id = s.set(other, at(160)).unwrap();
        assert_ne!(new_id, id);
        assert_eq!(s.get(&id).unwrap().state(at(160)), SilenceState::Expired);
        assert_eq!(s.expire(&id, at(170)), Err(SilenceError::AlreadyExpired(id.clone())));
        let mut empty = p;
        empty.matchers = vec![eq("a", "")];
        assert_eq!(s.set(empty, at(10)), Err(SilenceError::AllMatchEmpty));
    }
}
