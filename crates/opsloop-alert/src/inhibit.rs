//! Inhibition (Alertmanager's `inhibit` package): an alert matching a rule's target
//! matchers is muted while an alert matching its source matchers fires with the same values
//! of the `equal` labels; an alert matching both sides does not inhibit itself nor others
//! that match both.
//!
//! Source alerts are indexed per rule by their `equal` values, so deciding whether an alert
//! is inhibited costs a hash lookup per rule rather than a scan of every source.

use std::collections::HashMap;
use std::sync::Arc;

use jiff::Timestamp;

use crate::alerts::Alert;
use crate::config::InhibitRuleConfig;
use crate::labels::{Fingerprint, LabelSet};
use crate::matcher::Matchers;

#[derive(Debug)]
struct Rule {
    source: Matchers,
    target: Matchers,
    equal: Vec<String>,
    sources: HashMap<Vec<Arc<str>>, HashMap<Fingerprint, Arc<Alert>>>,
}

impl Rule {
    fn equal_key(&self, labels: &LabelSet) -> Vec<Arc<str>> {
        self.equal.iter().map(|n| Arc::from(labels.value(n))).collect()
    }
}

#[derive(Debug, Default)]
pub struct Inhibitor {
    rules: Vec<Rule>,
}

impl Inhibitor {
    pub fn new(rules: &[InhibitRuleConfig]) -> Inhibitor {
        Inhibitor {
            rules: rules
                .iter()
                .map(|r| Rule {
                    source: r.source_matchers.clone(),
                    target: r.target_matchers.clone(),
                    equal: r.equal.clone(),
                    sources: HashMap::new(),
                })
                .collect(),
        }
    }

    /// Records a stored alert (new or updated) as a possible source.
    pub fn observe(&mut self, alert: &Arc<Alert>) {
        for rule in &mut self.rules {
            if rule.source.matches(&alert.labels) {
                let key = rule.equal_key(&alert.labels);
                rule.sources.entry(key).or_default().insert(alert.fingerprint, alert.clone());
            }
        }
    }

    /// The fingerprint of an alert inhibiting `labels` at `now`, if any.
    pub fn inhibited_by(&self, labels: &LabelSet, now: Timestamp) -> Option<Fingerprint> {
        for rule in &self.rules {
            if !rule.target.matches(labels) {
                continue;
            }
            let two_sided = rule.source.matches(labels);
            let Some(bucket) = rule.sources.get(&rule.equal_key(labels)) else { continue };
            let found = bucket
                .values()
                .find(|a| !a.resolved_at(now) && (!two_sided || !rule.target.matches(&a.labels)))
                .map(|a| a.fingerprint);
            if found.is_some() {
                return found;
            }
        }
        None
    }

    /// Forgets sources resolved before `before`.
    pub fn gc(&mut self, before: Timestamp) {
        for rule in &mut self.rules {
            rule.sources.retain(|_, bucket| {
                bucket.retain(|_, a| a.ends_at >= before);
                !bucket.is_empty()
            });
        }
    }
}
