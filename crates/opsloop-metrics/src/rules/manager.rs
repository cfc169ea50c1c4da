//! The rule manager: one task per group, each evaluating at its own offset in its interval,
//! [`RuleManager::update`] to load or reload groups without disturbing unchanged ones (and
//! keeping the state of unchanged rules in changed ones), and the snapshots
//! `/api/v1/rules` and `/api/v1/alerts` are drawn from.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::file::{RuleGroup, RuleKind};
use super::group::{AlertState, Group, GroupOptions, Health};
use super::notify::rfc3339;
use crate::storage::{Storage, Timestamp};

/// What the manager runs groups with.
#[derive(Debug, Clone)]
pub struct ManagerOptions {
    pub group: GroupOptions,
    /// `global.evaluation_interval`: the interval of groups that name none.
    pub evaluation_interval: Duration,
}

impl Default for ManagerOptions {
    fn default() -> Self {
        ManagerOptions {
            group: GroupOptions::default(),
            evaluation_interval: crate::config::DEFAULT_EVALUATION_INTERVAL,
        }
    }
}

struct Running {
    group: Arc<Group>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

/// Runs rule groups. See the module documentation.
pub struct RuleManager {
    storage: Arc<dyn Storage>,
    options: std::sync::Mutex<ManagerOptions>,
    groups: tokio::sync::Mutex<BTreeMap<(String, String), Running>>,
    /// Snapshot copy of the groups, readable without waiting for a reload to finish.
    current: std::sync::Mutex<Vec<Arc<Group>>>,
    /// Set after the first load: only groups loaded at start-up restore `for` state.
    loaded: AtomicBool,
}

impl std::fmt::Debug for RuleManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuleManager").finish_non_exhaustive()
    }
}

pub fn now_ms() -> Timestamp {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

impl RuleManager {
    pub fn new(storage: Arc<dyn Storage>, options: ManagerOptions) -> Self {
        RuleManager {
            storage,
            options: std::sync::Mutex::new(options),
            groups: tokio::sync::Mutex::new(BTreeMap::new()),
            current: std::sync::Mutex::new(Vec::new()),
            loaded: AtomicBool::new(false),
        }
    }

    /// Changes the options (external labels, interval, sink) used by groups loaded from now on;
    /// call [`RuleManager::update`] after it so every group picks them up.
    pub fn set_options(&self, options: ManagerOptions) {
        *self.options.lock().unwrap_or_else(|p| p.into_inner()) = options;
    }

    /// Loads `groups` (the first call) or reloads them: a group whose definition and interval
    /// are unchanged keeps running untouched; a changed group is replaced by one that takes
    /// over the state of its unchanged rules; a removed group stops and its series are marked
    /// stale. Call within a tokio runtime; each group's task starts at once.
    pub async fn update(&self, groups: Vec<RuleGroup>) {
        let options = self.options.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let first = !self.loaded.swap(true, Ordering::SeqCst);
        let mut running = self.groups.lock().await;
        let mut old = std::mem::take(&mut *running);
        for def in groups {
            let key = (def.file.clone(), def.name.clone());
            let interval = def.interval.unwrap_or(options.evaluation_interval);
            if let Some(r) = old.remove(&key) {
                if r.group.def == def && r.group.interval == interval && r.group.same_options(&options.group) {
                    running.insert(key, r);
                    continue;
                }
                let old_group = Arc::clone(&r.group);
                stop(r).await;
                let g = Arc::new(Group::new(
                    def,
                    options.evaluation_interval,
                    Arc::clone(&self.storage),
                    options.group.clone(),
                    first,
                ));
                g.copy_state(&old_group);
                running.insert(key, start(g));
            } else {
                let g = Arc::new(Group::new(
                    def,
                    options.evaluation_interval,
                    Arc::clone(&self.storage),
                    options.group.clone(),
                    first,
                ));
                running.insert(key, start(g));
            }
        }
        for (_, r) in old {
            let g = Arc::clone(&r.group);
            stop(r).await;
            g.mark_stale(now_ms());
        }
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) =
            running.values().map(|r| Arc::clone(&r.group)).collect();
    }

    /// Stops every group's task (their series are left as they are: a restart continues them).
    pub async fn stop(&self) {
        let mut running = self.groups.lock().await;
        for (_, r) in std::mem::take(&mut *running) {
            stop(r).await;
        }
        self.current.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    /// The groups as they run now.
    pub fn group_handles(&self) -> Vec<Arc<Group>> {
        self.current.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `/api/v1/rules`'s `data.groups`.
    pub fn groups(&self) -> Vec<GroupSnapshot> {
        self.group_handles().iter().map(|g| snapshot(g)).collect()
    }

    /// `/api/v1/alerts`'s `data.alerts`: every pending and firing alert.
    pub fn alerts(&self) -> Vec<AlertSnapshot> {
        let mut out = Vec::new();
        for g in self.group_handles() {
            let state = g.lock();
            for r in &state.rules {
                out.extend(r.active.values().filter(|a| a.state != AlertState::Inactive).map(alert_snapshot));
            }
        }
        out
    }
}

fn start(group: Arc<Group>) -> Running {
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(run_group(Arc::clone(&group), rx));
    Running { group, stop: Some(tx), task: Some(task) }
}

async fn stop(mut r: Running) {
    if let Some(tx) = r.stop.take() {
        let _ = tx.send(());
    }
    if let Some(task) = r.task.take() {
        let _ = task.await;
    }
}

/// A group's worker: evaluations at `eval_timestamp` + k × interval, the first one in the
/// next slot; a slot missed (an evaluation that overran) is skipped, not caught up.
async fn run_group(group: Arc<Group>, mut stop: oneshot::Receiver<()>) {
    let interval = group.interval.as_millis().max(1) as i64;
    let mut next = group.eval_timestamp(now_ms()) + interval;
    loop {
        let wait = Duration::from_millis((next - now_ms()).max(0) as u64);
        tokio::select! {
            _ = &mut stop => return,
            () = tokio::time::sleep(wait) => {}
        }
        let g = Arc::clone(&group);
        let ts = next;
        if let Err(e) = tokio::task::spawn_blocking(move || g.eval(ts)).await {
            tracing::error!(group = %group.def.name, error = %e, "rule evaluation panicked");
        }
        let now = now_ms();
        next += interval;
        if now >= next {
            let missed = (now - next) / interval + 1;
            tracing::warn!(group = %group.def.name, missed, "rule group evaluation missed iterations");
            next += missed * interval;
        }
    }
}

/// One group for `/api/v1/rules`, with Prometheus's field names.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GroupSnapshot {
    pub name: String,
    pub file: String,
    pub rules: Vec<RuleSnapshot>,
    /// Seconds.
    pub interval: f64,
    pub limit: usize,
    pub evaluation_time: f64,
    pub last_evaluation: String,
}

#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum RuleSnapshot {
    Alerting(AlertingRuleSnapshot),
    Recording(RecordingRuleSnapshot),
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertingRuleSnapshot {
    pub state: AlertState,
    pub name: String,
    pub query: String,
    /// `for`, seconds.
    pub duration: f64,
    pub keep_firing_for: f64,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub alerts: Vec<AlertSnapshot>,
    pub health: Health,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub evaluation_time: f64,
    pub last_evaluation: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RecordingRuleSnapshot {
    pub name: String,
    pub query: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    pub health: Health,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    pub evaluation_time: f64,
    pub last_evaluation: String,
    #[serde(rename = "type")]
    pub kind: &'static str,
}

/// One alert for `/api/v1/alerts` and the rules' `alerts`.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AlertSnapshot {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub state: AlertState,
    pub active_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_firing_since: Option<String>,
    /// Go's `%e` of the value, as Prometheus answers it: `1e+00`.
    pub value: String,
}

/// Go's zero `time.Time`, which Prometheus shows for a rule never evaluated.
const NEVER: &str = "0001-01-01T00:00:00Z";

fn snapshot(g: &Group) -> GroupSnapshot {
    let state = g.lock();
    let rules = state
        .rules
        .iter()
        .map(|r| {
            let last = r.last_evaluation.map_or_else(|| NEVER.to_owned(), rfc3339);
            match r.def.kind {
                RuleKind::Recording => RuleSnapshot::Recording(RecordingRuleSnapshot {
                    name: r.def.name.clone(),
                    query: r.def.expr.clone(),
                    labels: r.def.labels.clone(),
                    health: r.health,
                    last_error: r.last_error.clone(),
                    evaluation_time: r.evaluation_time.as_secs_f64(),
                    last_evaluation: last,
                    kind: "recording",
                }),
                RuleKind::Alerting => {
                    let alerts: Vec<AlertSnapshot> =
                        r.active.values().filter(|a| a.state != AlertState::Inactive).map(alert_snapshot).collect();
                    let state = if r.active.values().any(|a| a.state == AlertState::Firing) {
                        AlertState::Firing
                    } else if r.active.values().any(|a| a.state == AlertState::Pending) {
                        AlertState::Pending
                    } else {
                        AlertState::Inactive
                    };
                    RuleSnapshot::Alerting(AlertingRuleSnapshot {
                        state,
                        name: r.def.name.clone(),
                        query: r.def.expr.clone(),
                        duration: r.def.for_duration.as_secs_f64(),
                        keep_firing_for: r.def.keep_firing_for.as_secs_f64(),
                        labels: r.def.labels.clone(),
                        annotations: r.def.annotations.clone(),
                        alerts,
                        health: r.health,
                        last_error: r.last_error.clone(),
                        evaluation_time: r.evaluation_time.as_secs_f64(),
                        last_evaluation: last,
                        kind: "alerting",
                    })
                }
            }
        })
        .collect();
    GroupSnapshot {
        name: g.def.name.clone(),
        file: g.def.file.clone(),
        rules,
        interval: g.interval.as_secs_f64(),
        limit: g.def.limit,
        evaluation_time: state.evaluation_time.as_secs_f64(),
        last_evaluation: state.last_evaluation.map_or_else(|| NEVER.to_owned(), rfc3339),
    }
}

fn alert_snapshot(a: &super::group::ActiveAlert) -> AlertSnapshot {
    AlertSnapshot {
        labels: a.labels.iter().map(|l| (l.name.clone(), l.value.clone())).collect(),
        annotations: a.annotations.clone(),
        state: a.state,
        active_at: rfc3339(a.active_at),
        keep_firing_since: a.keep_firing_since.map(rfc3339),
        value: go_e(a.value),
    }
}

/// Go's `strconv.FormatFloat(v, 'e', -1, 64)`.
pub fn go_e(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "+Inf".into() } else { "-Inf".into() };
    }
    let s = format!("{v:e}");
    let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
    let e: i32 = e.parse().unwrap_or(0);
    format!("{m}e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::{Labels, Matcher};
    use crate::storage::{MemStorage, Queryable, Sample};

    fn rules(record_expr: &str) -> Vec<RuleGroup> {
        let text = format!(
            "groups:\n- name: g\n  interval: 24h\n  rules:\n  - alert: Down\n    expr: up == 0\n    for: 1h\n    annotations: {{summary: x}}\n  - record: r\n    expr: {record_expr}\n"
        );
        super::super::file::parse(&text, "m.yml").expect("valid")
    }

    #[tokio::test]
    async fn reload_keeps_unchanged_groups_and_rule_state() {
        let s = Arc::new(MemStorage::new());
        s.add(Labels::from_pairs([("__name__", "up"), ("instance", "a")]), Sample { t: 1000, v: 0.0 });
        let m = RuleManager::new(Arc::clone(&s) as Arc<dyn Storage>, ManagerOptions::default());
        m.update(rules("up")).await;
        let first = m.group_handles();
        first[0].eval(60_000);
        m.update(rules("up")).await;
        assert!(Arc::ptr_eq(&first[0], &m.group_handles()[0]), "unchanged group kept running");

        m.update(rules("up * 2")).await;
        let second = m.group_handles();
        assert!(!Arc::ptr_eq(&first[0], &second[0]), "changed group replaced");
        let alerts = m.alerts();
        assert_eq!(alerts.len(), 1, "the alerting rule kept its alert");
        assert_eq!(alerts[0].active_at, "1970-01-01T00:01:00Z");

        let json = serde_json::to_value(m.groups()).expect("serializable");
        let g = &json[0];
        assert_eq!(
            (g["name"].as_str(), g["file"].as_str(), g["interval"].as_f64()),
            (Some("g"), Some("m.yml"), Some(86400.0))
        );
        let alerting = &g["rules"][0];
        for key in [
            "state",
            "name",
            "query",
            "duration",
            "labels",
            "annotations",
            "alerts",
            "health",
            "evaluationTime",
            "lastEvaluation",
            "type",
        ] {
            assert!(alerting.get(key).is_some(), "{key} missing in {alerting}");
        }
        assert_eq!(alerting["state"], "pending");
        assert_eq!(alerting["alerts"][0]["value"], "0e+00");
        assert_eq!(g["rules"][1]["type"], "recording");
        assert_eq!(g["rules"][1]["lastEvaluation"], "0001-01-01T00:00:00Z", "the new rule has not run");

        // A removed group's series are marked stale.
        second[0].eval(120_000);
        m.update(Vec::new()).await;
        assert!(m.groups().is_empty());
        let r = s.select(&[Matcher::equal("__name__", "r")], 0, i64::MAX).expect("select");
        let last = r[0].samples.last().expect("samples");
        assert!(crate::storage::is_stale_nan(last.v));
    }

    #[test]
    fn go_e_formats_as_prometheus_answers() {
        assert_eq!(go_e(1.0), "1e+00");
        assert_eq!(go_e(1234.5), "1.2345e+03");
        assert_eq!(go_e(0.00012), "1.2e-04");
    }
}
