//! One rule group's evaluation: its rules in order at one timestamp, recording rules' samples
//! appended, alerting rules' per-series state moved on (inactive → pending → firing, kept
//! firing for `keep_firing_for`, resolved), `ALERTS`/`ALERTS_FOR_STATE` written, staleness
//! markers for series a rule stopped producing, and alerts handed to the sink. This follows
//! Prometheus's `rules` package step by step so alert timings match a Prometheus running the
//! same file.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use promql_parser::parser::Expr;

use super::file::{RuleDef, RuleGroup, RuleKind};
use super::notify::{Alert, AlertSink};
use super::template::{self, TemplateData};
use crate::labels::{Labels, METRIC_NAME, Matcher};
use crate::promql::{Engine, InstantSample, PromqlError, QueryValue};
use crate::storage::{Sample, Storage, Timestamp, stale_nan};

/// How long a resolved alert is kept, and re-sent as resolved (Prometheus's 15 minutes).
const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;

#[derive(Debug, thiserror::Error)]
pub enum RuleError {
    #[error("{0}")]
    Query(#[from] PromqlError),
    #[error("rule result is not a vector or scalar")]
    NotAVector,
    #[error("vector contains metrics with the same labelset after applying rule labels")]
    DuplicateRecorded,
    #[error("vector contains metrics with the same labelset after applying alert labels")]
    DuplicateAlert,
    #[error("exceeded limit of {limit} with {count} series")]
    SeriesLimit { limit: usize, count: usize },
    #[error("exceeded limit of {limit} with {count} alerts")]
    AlertLimit { limit: usize, count: usize },
}

/// What a host tunes; Prometheus's flags and their defaults.
#[derive(Clone)]
pub struct GroupOptions {
    pub engine: Engine,
    pub external_labels: Labels,
    /// Prefix of alerts' generator URLs (`--web.external-url`).
    pub external_url: String,
    /// `--rules.alert.for-outage-tolerance`: how far back `for` state is restored (1 h).
    pub outage_tolerance: Duration,
    /// `--rules.alert.for-grace-period`: the least an alert waits after a restart (10 m).
    pub for_grace_period: Duration,
    /// `--rules.alert.resend-delay`: how often a firing alert is sent again (1 m).
    pub resend_delay: Duration,
    pub sink: Option<Arc<dyn AlertSink>>,
}

impl Default for GroupOptions {
    fn default() -> Self {
        GroupOptions {
            engine: Engine::default(),
            external_labels: Labels::new(),
            external_url: String::new(),
            outage_tolerance: Duration::from_secs(3600),
            for_grace_period: Duration::from_secs(600),
            resend_delay: Duration::from_secs(60),
            sink: None,
        }
    }
}

impl std::fmt::Debug for GroupOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupOptions").field("external_url", &self.external_url).finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    Inactive,
    Pending,
    Firing,
}

impl AlertState {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }
}

/// One series of an alerting rule, with its state.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveAlert {
    pub labels: Labels,
    pub annotations: BTreeMap<String, String>,
    pub state: AlertState,
    pub value: f64,
    pub active_at: Timestamp,
    pub fired_at: Option<Timestamp>,
    pub resolved_at: Option<Timestamp>,
    pub last_sent_at: Option<Timestamp>,
    pub valid_until: Timestamp,
    pub keep_firing_since: Option<Timestamp>,
}

impl ActiveAlert {
    fn needs_sending(&self, ts: Timestamp, resend_delay_ms: i64) -> bool {
        if self.state == AlertState::Pending {
            return false;
        }
        match (self.resolved_at, self.last_sent_at) {
            (Some(r), Some(s)) if r > s => true,
            (Some(_), None) => true,
            (_, Some(s)) => s + resend_delay_ms < ts,
            (None, None) => true,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    Unknown,
    Ok,
    Err,
}

/// A rule and what its evaluations left behind.
#[derive(Debug)]
pub struct RuleRuntime {
    pub def: RuleDef,
    expr: Option<Expr>,
    pub health: Health,
    pub last_error: Option<String>,
    pub last_evaluation: Option<Timestamp>,
    pub evaluation_time: Duration,
    /// Alerting rules: the alerts by label set.
    pub active: BTreeMap<Labels, ActiveAlert>,
    /// Whether `for` state has been restored (or needs none); `ALERTS` are written after.
    restored: bool,
    /// Series written by the last evaluation, to mark stale those that stop.
    previous: BTreeSet<Labels>,
}

impl RuleRuntime {
    /// `restore`: the rule waits for `for` state to be restored before writing `ALERTS`.
    fn new(def: RuleDef, restore: bool) -> Self {
        let (expr, health, last_error) = match crate::promql::parse(&def.expr) {
            Ok(e) => (Some(e), Health::Unknown, None),
            Err(e) => (None, Health::Err, Some(e.to_string())),
        };
        RuleRuntime {
            def,
            expr,
            health,
            last_error,
            last_evaluation: None,
            evaluation_time: Duration::ZERO,
            active: BTreeMap::new(),
            restored: !restore,
            previous: BTreeSet::new(),
        }
    }
}

/// A group and its rules' state.
pub struct Group {
    pub def: RuleGroup,
    pub interval: Duration,
    storage: Arc<dyn Storage>,
    options: GroupOptions,
    state: Mutex<GroupState>,
}

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Group").field("name", &self.def.name).field("file", &self.def.file).finish_non_exhaustive()
    }
}

#[derive(Debug)]
pub struct GroupState {
    pub rules: Vec<RuleRuntime>,
    pub last_evaluation: Option<Timestamp>,
    pub evaluation_time: Duration,
    /// Restore `for` state from `ALERTS_FOR_STATE` after the next evaluation (first load).
    should_restore: bool,
}

impl Group {
    pub fn new(
        def: RuleGroup,
        default_interval: Duration,
        storage: Arc<dyn Storage>,
        options: GroupOptions,
        restore: bool,
    ) -> Self {
        let interval = def.interval.unwrap_or(default_interval).max(Duration::from_millis(1));
        let rules = def.rules.iter().cloned().map(|r| RuleRuntime::new(r, restore)).collect();
        Group {
            def,
            interval,
            storage,
            options,
            state: Mutex::new(GroupState {
                rules,
                last_evaluation: None,
                evaluation_time: Duration::ZERO,
                should_restore: restore,
            }),
        }
    }

    /// Whether `o` renders alerts as this group's options do (labels and URL go into alerts;
    /// a change needs a new group).
    pub fn same_options(&self, o: &GroupOptions) -> bool {
        self.options.external_labels == o.external_labels && self.options.external_url == o.external_url
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, GroupState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A stable offset within the interval, so groups spread over it and a restart keeps each
    /// group's evaluation times (Prometheus hashes the same two names).
    pub fn offset_ms(&self) -> i64 {
        let interval = self.interval.as_millis().max(1) as u64;
        let h = crate::scrape::target::fnv1a(format!("{}\u{ff}{}", self.def.file, self.def.name).as_bytes(), 0);
        (h % interval) as i64
    }

    /// The evaluation time of the interval `now` falls in.
    pub fn eval_timestamp(&self, now: Timestamp) -> Timestamp {
        let interval = self.interval.as_millis().max(1) as i64;
        let offset = self.offset_ms();
        let adj = now - offset;
        adj - adj.rem_euclid(interval) + offset
    }

    /// Takes over what `old` knew of rules that are the same here (kind, name, labels and
    /// query): their health and their alerts, so a reload does not reset `for` clocks.
    pub fn copy_state(&self, old: &Group) {
        let old_state = old.lock();
        let mut state = self.lock();
        state.last_evaluation = old_state.last_evaluation;
        state.evaluation_time = old_state.evaluation_time;
        state.should_restore = state.should_restore && old_state.should_restore;
        let mut taken = vec![false; old_state.rules.len()];
        for rule in &mut state.rules {
            let found = old_state.rules.iter().enumerate().find(|(i, o)| {
                !taken[*i]
                    && o.def.kind == rule.def.kind
                    && o.def.name == rule.def.name
                    && o.def.labels == rule.def.labels
                    && o.def.expr == rule.def.expr
            });
            if let Some((i, o)) = found {
                taken[i] = true;
                rule.health = o.health;
                rule.last_error.clone_from(&o.last_error);
                rule.last_evaluation = o.last_evaluation;
                rule.evaluation_time = o.evaluation_time;
                rule.active = o.active.clone();
                rule.restored = o.restored;
                rule.previous = o.previous.clone();
            }
        }
    }

    /// Every series the group last wrote, for staleness markers when it goes away.
    pub fn written_series(&self) -> Vec<Labels> {
        self.lock().rules.iter().flat_map(|r| r.previous.iter().cloned()).collect()
    }

    /// Marks stale every series the group last wrote (it is being removed).
    pub fn mark_stale(&self, ts: Timestamp) {
        let batch: Vec<(Labels, Sample)> =
            self.written_series().into_iter().map(|l| (l, Sample { t: ts, v: stale_nan() })).collect();
        if !batch.is_empty()
            && let Err(e) = self.storage.append(&batch)
        {
            tracing::warn!(group = %self.def.name, error = %e, "writing staleness markers");
        }
    }

    /// Evaluates every rule at `ts` (milliseconds), in order: each rule's output is appended
    /// before the next one runs, so a later rule sees an earlier recording rule's samples.
    pub fn eval(&self, ts: Timestamp) {
        let started = Instant::now();
        let mut state = self.lock();
        let resend_ms = self.options.resend_delay.as_millis() as i64;
        let interval_ms = self.interval.as_millis() as i64;
        for rule in &mut state.rules {
            let rule_started = Instant::now();
            let result = match rule.def.kind {
                RuleKind::Recording => self.eval_recording(rule, ts),
                RuleKind::Alerting => self.eval_alerting(rule, ts),
            };
            let samples = match result {
                Ok(samples) => {
                    rule.health = Health::Ok;
                    rule.last_error = None;
                    samples
                }
                Err(e) => {
                    rule.health = Health::Err;
                    rule.last_error = Some(e.to_string());
                    tracing::warn!(group = %self.def.name, rule = %rule.def.name, error = %e, "evaluating rule");
                    Vec::new()
                }
            };
            let current: BTreeSet<Labels> = samples.iter().map(|(l, _)| l.clone()).collect();
            let mut batch: Vec<(Labels, Sample)> = samples.into_iter().map(|(l, v)| (l, Sample { t: ts, v })).collect();
            for gone in rule.previous.difference(&current) {
                batch.push((gone.clone(), Sample { t: ts, v: stale_nan() }));
            }
            if !batch.is_empty()
                && let Err(e) = self.storage.append(&batch)
            {
                tracing::warn!(group = %self.def.name, rule = %rule.def.name, error = %e, "appending rule results");
            }
            rule.previous = current;
            if rule.def.kind == RuleKind::Alerting {
                self.send_alerts(rule, ts, resend_ms, interval_ms);
            }
            rule.last_evaluation = Some(ts);
            rule.evaluation_time = rule_started.elapsed();
        }
        if state.should_restore {
            state.should_restore = false;
            self.restore_for_state(&mut state, ts);
        }
        state.last_evaluation = Some(ts);
        state.evaluation_time = started.elapsed();
    }

    fn query(&self, expr: &Expr, ts: Timestamp) -> Result<Vec<InstantSample>, RuleError> {
        match self.options.engine.instant(&*self.storage, expr, ts)? {
            QueryValue::Vector(v) => Ok(v),
            QueryValue::Scalar { t, v } => Ok(vec![InstantSample { labels: Labels::new(), t, v }]),
            _ => Err(RuleError::NotAVector),
        }
    }

    fn eval_recording(&self, rule: &RuleRuntime, ts: Timestamp) -> Result<Vec<(Labels, f64)>, RuleError> {
        let Some(expr) = &rule.expr else { return Err(RuleError::NotAVector) };
        let vector = self.query(expr, ts)?;
        let mut out = Vec::with_capacity(vector.len());
        let mut seen = BTreeSet::new();
        for s in vector {
            let mut b = s.labels.builder();
            b.set(METRIC_NAME.to_owned(), rule.def.name.clone());
            for (k, v) in &rule.def.labels {
                b.set(k.clone(), v.clone());
            }
            let labels = b.build();
            if !seen.insert(labels.clone()) {
                return Err(RuleError::DuplicateRecorded);
            }
            out.push((labels, s.v));
        }
        if self.def.limit > 0 && out.len() > self.def.limit {
            return Err(RuleError::SeriesLimit { limit: self.def.limit, count: out.len() });
        }
        Ok(out)
    }

    fn eval_alerting(&self, rule: &mut RuleRuntime, ts: Timestamp) -> Result<Vec<(Labels, f64)>, RuleError> {
        let Some(expr) = rule.expr.clone() else { return Err(RuleError::NotAVector) };
        let vector = self.query(&expr, ts)?;
        let external: BTreeMap<String, String> =
            self.options.external_labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect();
        let query_fn = |q: &str| -> Result<Vec<InstantSample>, PromqlError> {
            let e = crate::promql::parse(q)?;
            match self.options.engine.instant(&*self.storage, &e, ts)? {
                QueryValue::Vector(v) => Ok(v),
                QueryValue::Scalar { t, v } => Ok(vec![InstantSample { labels: Labels::new(), t, v }]),
                _ => Err(PromqlError::Execution("query result is not a vector or scalar".into())),
            }
        };
        let template_name = format!("__alert_{}", rule.def.name);
        let mut seen: BTreeMap<Labels, (BTreeMap<String, String>, f64)> = BTreeMap::new();
        for s in &vector {
            let data = TemplateData {
                labels: s.labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect(),
                external_labels: external.clone(),
                external_url: self.options.external_url.clone(),
                value: s.v,
            };
            // A template that fails leaves its error in the text, as Prometheus does, rather
            // than losing the alert.
            let expand = |text: &str| {
                template::expand(text, &template_name, &data, Some(&query_fn))
                    .unwrap_or_else(|e| format!("<error expanding template: {e}>"))
            };
            let mut b = s.labels.builder();
            b.del(METRIC_NAME);
            for (k, v) in &rule.def.labels {
                b.set(k.clone(), expand(v));
            }
            b.set("alertname".to_owned(), rule.def.name.clone());
            let labels = b.build();
            let annotations: BTreeMap<String, String> =
                rule.def.annotations.iter().map(|(k, v)| (k.clone(), expand(v))).collect();
            if seen.insert(labels, (annotations, s.v)).is_some() {
                return Err(RuleError::DuplicateAlert);
            }
        }
        for (labels, (annotations, value)) in &seen {
            if let Some(a) = rule.active.get_mut(labels)
                && a.state != AlertState::Inactive
            {
                a.value = *value;
                a.annotations.clone_from(annotations);
                continue;
            }
            rule.active.insert(
                labels.clone(),
                ActiveAlert {
                    labels: labels.clone(),
                    annotations: annotations.clone(),
                    state: AlertState::Pending,
                    value: *value,
                    active_at: ts,
                    fired_at: None,
                    resolved_at: None,
                    last_sent_at: None,
                    valid_until: 0,
                    keep_firing_since: None,
                },
            );
        }
        let hold_ms = rule.def.for_duration.as_millis() as i64;
        let keep_ms = rule.def.keep_firing_for.as_millis() as i64;
        let mut out = Vec::new();
        let mut active_pending = 0;
        let mut drop = Vec::new();
        for (key, a) in rule.active.iter_mut() {
            if !seen.contains_key(key) {
                let mut keep_firing = false;
                if a.state == AlertState::Firing && keep_ms > 0 {
                    let since = *a.keep_firing_since.get_or_insert(ts);
                    keep_firing = ts - since < keep_ms;
                }
                if a.state == AlertState::Pending || a.resolved_at.is_some_and(|r| ts - r > RESOLVED_RETENTION_MS) {
                    drop.push(key.clone());
                }
                if a.state != AlertState::Inactive && !keep_firing {
                    a.state = AlertState::Inactive;
                    a.resolved_at = Some(ts);
                }
                if !keep_firing {
                    continue;
                }
            } else {
                a.keep_firing_since = None;
            }
            active_pending += 1;
            if a.state == AlertState::Pending && ts - a.active_at >= hold_ms {
                a.state = AlertState::Firing;
                a.fired_at = Some(ts);
            }
            if rule.restored {
                let mut b = a.labels.builder();
                b.set(METRIC_NAME.to_owned(), "ALERTS".to_owned());
                b.set("alertstate".to_owned(), a.state.as_str().to_owned());
                out.push((b.build(), 1.0));
                let mut b = a.labels.builder();
                b.set(METRIC_NAME.to_owned(), "ALERTS_FOR_STATE".to_owned());
                out.push((b.build(), (a.active_at / 1000) as f64));
            }
        }
        for key in drop {
            rule.active.remove(&key);
        }
        if self.def.limit > 0 && active_pending > self.def.limit {
            rule.active.clear();
            return Err(RuleError::AlertLimit { limit: self.def.limit, count: active_pending });
        }
        Ok(out)
    }

    fn send_alerts(&self, rule: &mut RuleRuntime, ts: Timestamp, resend_ms: i64, interval_ms: i64) {
        let Some(sink) = &self.options.sink else { return };
        let delta = resend_ms.max(interval_ms);
        let generator_url = format!(
            "{}/graph?g0.expr={}&g0.tab=1",
            self.options.external_url.trim_end_matches('/'),
            url::form_urlencoded::byte_serialize(rule.def.expr.as_bytes()).collect::<String>()
        );
        let mut alerts = Vec::new();
        for a in rule.active.values_mut() {
            if !a.needs_sending(ts, resend_ms) {
                continue;
            }
            a.last_sent_at = Some(ts);
            // Valid for four intervals: two evaluations or sends may fail before it expires.
            a.valid_until = ts + 4 * delta;
            alerts.push(Alert {
                labels: a.labels.clone(),
                annotations: a.annotations.clone(),
                starts_at: a.fired_at.unwrap_or(a.active_at),
                ends_at: a.resolved_at.unwrap_or(a.valid_until),
                generator_url: generator_url.clone(),
            });
        }
        if !alerts.is_empty() {
            sink.send(&alerts);
        }
    }

    /// Prometheus's `RestoreForState`: after the first evaluation since start, an alert that
    /// was pending before the restart gets its `for` clock back from `ALERTS_FOR_STATE`, less
    /// the time the server was down, and never fires sooner than the grace period.
    fn restore_for_state(&self, state: &mut GroupState, ts: Timestamp) {
        let mint = ts - self.options.outage_tolerance.as_millis() as i64;
        let grace_ms = self.options.for_grace_period.as_millis() as i64;
        for rule in &mut state.rules {
            if rule.def.kind != RuleKind::Alerting {
                continue;
            }
            let hold_ms = rule.def.for_duration.as_millis() as i64;
            if hold_ms < grace_ms {
                // Waiting the grace period would be longer than `for` itself.
                rule.restored = true;
                continue;
            }
            for a in rule.active.values_mut() {
                let mut matchers = vec![Matcher::equal(METRIC_NAME, "ALERTS_FOR_STATE")];
                matchers.extend(a.labels.iter().map(|l| Matcher::equal(l.name.clone(), l.value.clone())));
                let series = match self.storage.select(&matchers, mint, ts) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(rule = %rule.def.name, error = %e, "reading ALERTS_FOR_STATE");
                        continue;
                    }
                };
                // The series with exactly the alert's labels, its last real sample.
                let want = {
                    let mut b = a.labels.builder();
                    b.set(METRIC_NAME.to_owned(), "ALERTS_FOR_STATE".to_owned());
                    b.build()
                };
                let Some(last) = series
                    .iter()
                    .filter(|s| s.labels == want)
                    .flat_map(|s| s.samples.iter())
                    .filter(|s| !crate::storage::is_stale_nan(s.v))
                    .max_by_key(|s| s.t)
                else {
                    continue;
                };
                let down_at = last.t / 1000 * 1000;
                let mut restored_active_at = (last.v as i64) * 1000;
                let remaining = hold_ms - (down_at - restored_active_at);
                if remaining <= 0 {
                    // It was firing when the server went down; the next evaluation fires it
                    // again if it still holds.
                } else if remaining < grace_ms {
                    restored_active_at = ts + grace_ms - hold_ms;
                } else {
                    restored_active_at += ts - down_at;
                }
                a.active_at = restored_active_at;
            }
            rule.restored = true;
        }
    }
}

#[cfg(test)]
mod tests;
