//! Alerts as Alertmanager keeps them: what a client posts, the stored alert (defaults filled
//! in, merged with the one already stored under the same fingerprint, as the in-memory
//! provider merges), and the order notifications list them in.

use std::cmp::Ordering;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::labels::{Fingerprint, LabelSet, is_valid_label_name};

/// An alert as posted (`POST /api/v2/alerts`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PostableAlert {
    pub labels: LabelSet,
    #[serde(default)]
    pub annotations: LabelSet,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<Timestamp>,
    #[serde(default, rename = "generatorURL")]
    pub generator_url: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlertError {
    #[error("at least one label pair required")]
    NoLabels,
    #[error("invalid label name {0:?}")]
    InvalidLabelName(String),
    #[error("invalid annotation name {0:?}")]
    InvalidAnnotationName(String),
    #[error("start time must be before end time")]
    EndBeforeStart,
}

/// A stored alert.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub labels: LabelSet,
    pub annotations: LabelSet,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    pub generator_url: String,
    pub updated_at: Timestamp,
    /// `endsAt` was not posted: it is `now + resolve_timeout`, renewed by every repost.
    pub timeout: bool,
    pub fingerprint: Fingerprint,
}

impl Alert {
    /// The API's defaults: a missing `startsAt` is now (or `endsAt` if set), a missing
    /// `endsAt` is `resolve_timeout` from now.
    pub fn from_postable(
        p: PostableAlert,
        now: Timestamp,
        resolve_timeout: std::time::Duration,
    ) -> Result<Alert, AlertError> {
        if p.labels.is_empty() {
            return Err(AlertError::NoLabels);
        }
        if let Some((name, _)) = p.labels.iter().find(|(n, _)| !is_valid_label_name(n)) {
            return Err(AlertError::InvalidLabelName(name.to_owned()));
        }
        if let Some((name, _)) = p.annotations.iter().find(|(n, _)| !is_valid_label_name(n)) {
            return Err(AlertError::InvalidAnnotationName(name.to_owned()));
        }
        // Go clients write an unset time as year 1 (`0001-01-01T00:00:00Z`).
        let set = |t: Option<Timestamp>| t.filter(|t| t.as_second() > -62_135_596_800);
        let (starts, ends) = (set(p.starts_at), set(p.ends_at));
        let starts_at = starts.or(ends).unwrap_or(now);
        let (ends_at, timeout) = match ends {
            Some(e) => (e, false),
            None => (add(now, resolve_timeout), true),
        };
        if ends.is_some() && ends_at < starts_at {
            return Err(AlertError::EndBeforeStart);
        }
        let fingerprint = p.labels.fingerprint();
        Ok(Alert {
            labels: p.labels,
            annotations: p.annotations,
            starts_at,
            ends_at,
            generator_url: p.generator_url,
            updated_at: now,
            timeout,
            fingerprint,
        })
    }

    /// Resolved at `at`: its end is not after `at`.
    pub fn resolved_at(&self, at: Timestamp) -> bool {
        self.ends_at <= at
    }

    /// `types.Alert.Merge`: `newer` is the alert posted later (by `updated_at`).
    pub fn merge(&self, other: &Alert) -> Alert {
        let (older, newer) = if other.updated_at < self.updated_at { (other, self) } else { (self, other) };
        let mut res = newer.clone();
        if older.starts_at < newer.starts_at {
            res.starts_at = older.starts_at;
        }
        if newer.resolved_at(newer.updated_at) {
            if older.resolved_at(newer.updated_at) && older.ends_at > newer.ends_at {
                res.ends_at = older.ends_at;
            }
        } else if older.ends_at > newer.ends_at && !older.timeout {
            res.ends_at = older.ends_at;
        }
        res
    }
}

pub(crate) fn add(t: Timestamp, d: std::time::Duration) -> Timestamp {
    let span = jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX);
    t.checked_add(span).unwrap_or(Timestamp::MAX)
}

/// Alertmanager's `AlertSlice` order: by `job`, then `instance` (alerts with the label
/// first), then by label set (`LabelSet.Before`).
pub fn alert_order(a: &LabelSet, b: &LabelSet) -> Ordering {
    for key in ["job", "instance"] {
        match (a.get(key), b.get(key)) {
            (None, None) => continue,
            (None, Some(_)) => return Ordering::Greater,
            (Some(_), None) => return Ordering::Less,
            (Some(x), Some(y)) if x != y => return x.cmp(y),
            _ => {}
        }
    }
    if a.before(b) {
        Ordering::Less
    } else if b.before(a) {
        Ordering::Greater
    } else {
        Ordering::Equal
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn defaults_and_merge() {
        let labels = LabelSet::from_pairs([("alertname", "x")]);
        let p = PostableAlert { labels: labels.clone(), ..Default::default() };
        let a = Alert::from_postable(p.clone(), at(100), Duration::from_secs(300)).unwrap();
        assert_eq!((a.starts_at, a.ends_at, a.timeout), (at(100), at(400), true));
        let b = Alert::from_postable(p, at(200), Duration::from_secs(300)).unwrap();
        let m = a.merge(&b);
        assert_eq!((m.starts_at, m.ends_at), (at(100), at(500)));
        let resolved = PostableAlert { labels, ends_at: Some(at(250)), ..Default::default() };
        let r = Alert::from_postable(resolved, at(260), Duration::from_secs(300)).unwrap();
        let m = m.merge(&r);
        assert_eq!((m.starts_at, m.ends_at), (at(100), at(250)), "an explicit end resolves");
        assert!(Alert::from_postable(PostableAlert::default(), at(1), Duration::ZERO).is_err());
    }

    #[test]
    fn order_puts_job_and_instance_first() {
        let a = LabelSet::from_pairs([("job", "a"), ("z", "1")]);
        let b = LabelSet::from_pairs([("job", "b")]);
        let c = LabelSet::from_pairs([("x", "1")]);
        let mut v = vec![c.clone(), b.clone(), a.clone()];
        v.sort_by(alert_order);
        assert_eq!(v, vec![a, b, c]);
    }
}
