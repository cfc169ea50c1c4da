//! Tests of rule evaluation: recording order, alert states, staleness, `for` restore.

use std::sync::Mutex as StdMutex;

use super::*;
use crate::rules::file::parse;
use crate::storage::{MemStorage, Queryable};

#[derive(Default)]
struct Collect(StdMutex<Vec<Alert>>);

impl AlertSink for Collect {
    fn send(&self, alerts: &[Alert]) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).extend_from_slice(alerts);
    }
}

impl Collect {
    fn take(&self) -> Vec<Alert> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

const MIN: i64 = 60_000;

fn group(yaml: &str, storage: &Arc<MemStorage>, sink: &Arc<Collect>, restore: bool) -> Group {
    let defs = parse(yaml, "t.yml").expect("valid rules");
    let options = GroupOptions {
        external_labels: Labels::from_pairs([("cluster", "eu1")]),
        external_url: "http://prom.example".into(),
        sink: Some(Arc::clone(sink) as Arc<dyn AlertSink>),
        ..GroupOptions::default()
    };
    let def = defs.into_iter().next().expect("one group");
    Group::new(def, Duration::from_secs(60), Arc::clone(storage) as Arc<dyn Storage>, options, restore)
}

fn add(s: &MemStorage, labels: &[(&str, &str)], t: i64, v: f64) {
    s.add(Labels::from_pairs(labels.iter().copied()), Sample { t, v });
}

fn value_at(s: &MemStorage, name: &str, extra: &[(&str, &str)], t: i64) -> Option<f64> {
    let mut m = vec![Matcher::equal(METRIC_NAME, name)];
    m.extend(extra.iter().map(|(k, v)| Matcher::equal(*k, *v)));
    let series = s.select(&m, t, t).ok()?;
    series.first().and_then(|s| s.samples.first()).map(|x| x.v)
}

#[test]
fn later_rules_see_earlier_recordings_of_the_same_evaluation() {
    let s = Arc::new(MemStorage::new());
    let sink = Arc::new(Collect::default());
    for (i, v) in [("a", 1.0), ("b", 2.0)] {
        add(&s, &[("__name__", "up"), ("job", "x"), ("instance", i)], 0, v);
    }
    let g = group(
        "groups:\n- name: g\n  rules:\n  - record: job:up:sum\n    expr: sum by (job) (up)\n    labels: {src: rule}\n  - record: job:up:double\n    expr: job:up:sum * 2\n",
        &s,
        &sink,
        false,
    );
    g.eval(MIN);
    assert_eq!(value_at(&s, "job:up:sum", &[("job", "x"), ("src", "rule")], MIN), Some(3.0));
    assert_eq!(value_at(&s, "job:up:double", &[("job", "x"), ("src", "rule")], MIN), Some(6.0));
    let st = g.lock();
    assert!(st.rules.iter().all(|r| r.health == Health::Ok), "{:?}", st.rules);
}

#[test]
fn recording_series_that_stop_are_marked_stale() {
    let s = Arc::new(MemStorage::new());
    let sink = Arc::new(Collect::default());
    add(&s, &[("__name__", "up"), ("job", "x")], 0, 1.0);
    let g = group("groups:\n- name: g\n  rules:\n  - record: r\n    expr: up{job=\"x\"}\n", &s, &sink, false);
    g.eval(MIN);
    // 5 m later `up` has gone out of the lookback window.
    g.eval(7 * MIN);
    let v = value_at(&s, "r", &[("job", "x")], 7 * MIN).expect("a marker");
    assert!(crate::storage::is_stale_nan(v));
}

#[test]
fn alert_goes_pending_firing_resolved_with_alerts_series() {
    let s = Arc::new(MemStorage::new());
    let sink = Arc::new(Collect::default());
    let g = group(
        "groups:\n- name: g\n  rules:\n  - alert: Down\n    expr: up == 0\n    for: 2m\n    labels: {severity: '{{ if eq $value 0.0 }}page{{ end }}'}\n    annotations: {summary: '{{ $labels.instance }} is down ({{ $externalLabels.cluster }})'}\n",
        &s,
        &sink,
        false,
    );
    for t in 0..=4 {
        add(&s, &[("__name__", "up"), ("instance", "a")], t * MIN, 0.0);
    }
    g.eval(0);
    let a = g.lock().rules[0].active.values().next().cloned().expect("an alert");
    assert_eq!(a.state, AlertState::Pending);
    assert_eq!(a.labels.to_string(), r#"{alertname="Down", instance="a", severity="page"}"#);
    assert_eq!(a.annotations["summary"], "a is down (eu1)");
    let pending = [("alertname", "Down"), ("alertstate", "pending"), ("instance", "a")];
    assert_eq!(value_at(&s, "ALERTS", &pending, 0), Some(1.0));
    assert_eq!(value_at(&s, "ALERTS_FOR_STATE", &[("alertname", "Down")], 0), Some(0.0));
    assert!(sink.take().is_empty(), "pending alerts are not sent");

    g.eval(MIN);
    assert_eq!(g.lock().rules[0].active.values().next().map(|a| a.state), Some(AlertState::Pending));
    g.eval(2 * MIN);
    assert_eq!(g.lock().rules[0].active.values().next().map(|a| a.state), Some(AlertState::Firing));
    let firing = [("alertname", "Down"), ("alertstate", "firing"), ("instance", "a")];
    assert_eq!(value_at(&s, "ALERTS", &firing, 2 * MIN), Some(1.0));
    assert!(crate::storage::is_stale_nan(value_at(&s, "ALERTS", &pending, 2 * MIN).unwrap_or(0.0)));
    let sent = sink.take();
    assert_eq!(sent.len(), 1);
    assert_eq!((sent[0].starts_at, sent[0].ends_at), (2 * MIN, 2 * MIN + 4 * MIN));
    assert!(sent[0].generator_url.starts_with("http://prom.example/graph?g0.expr=up+%3D%3D+0"));

    // Within the resend delay nothing is sent again; after it, the alert is.
    g.eval(2 * MIN + 30_000);
    assert!(sink.take().is_empty());
    g.eval(3 * MIN + 1);
    assert_eq!(sink.take().len(), 1);

    // The condition clears: resolved, sent with ends_at = resolution time, ALERTS stale.
    add(&s, &[("__name__", "up"), ("instance", "a")], 5 * MIN, 1.0);
    g.eval(5 * MIN);
    let sent = sink.take();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].ends_at, 5 * MIN);
    assert!(crate::storage::is_stale_nan(value_at(&s, "ALERTS", &firing, 5 * MIN).unwrap_or(0.0)));
    assert_eq!(g.lock().rules[0].active.values().next().map(|a| a.state), Some(AlertState::Inactive));
    // Kept (and re-sent as resolved) for 15 minutes, then forgotten.
    g.eval(21 * MIN);
    assert!(g.lock().rules[0].active.is_empty());
}

#[test]
fn keep_firing_for_holds_a_cleared_alert() {
    let s = Arc::new(MemStorage::new());
    let sink = Arc::new(Collect::default());
    let g = group(
        "groups:\n- name: g\n  rules:\n  - alert: Flap\n    expr: flag > 0\n    keep_firing_for: 3m\n",
        &s,
        &sink,
        false,
    );
    add(&s, &[("__name__", "flag")], 0, 1.0);
    add(&s, &[("__name__", "flag")], MIN, 0.0);
    g.eval(0);
    let state = |g: &Group| g.lock().rules[0].active.values().next().map(|a| a.state);
    assert_eq!(state(&g), Some(AlertState::Firing), "for: 0 fires at once");
    g.eval(MIN);
    assert_eq!(state(&g), Some(AlertState::Firing));
    g.eval(3 * MIN);
    assert_eq!(state(&g), Some(AlertState::Firing));
    g.eval(4 * MIN);
    assert_eq!(state(&g), Some(AlertState::Inactive));
}

#[test]
fn limit_fails_the_rule() {
    let s = Arc::new(MemStorage::new());
    let sink = Arc::new(Collect::default());
    for i in ["a", "b", "c"] {
        add(&s, &[("__name__", "up"), ("instance", i)], 0, 0.0);
    }
    let g = group(
        "groups:\n- name: g\n  limit: 2\n  rules:\n  - alert: Down\n    expr: up == 0\n  - record: r\n    expr: up\n",
        &s,
        &sink,
        false,
    );
    g.eval(0);
    let st = g.lock();
    assert_eq!(st.rules[0].health, Health::Err);
    assert_eq!(st.rules[0].last_error.as_deref(), Some("exceeded limit of 2 with 3 alerts"));
    assert_eq!(st.rules[1].last_error.as_deref(), Some("exceeded limit of 2 with 3 series"));
}

#[test]
fn for_state_is_restored_after_a_restart() {
    let s = Arc::new(MemStorage::new());
    let sink = Arc::new(Collect::default());
    let yaml = "groups:\n- name: g\n  rules:\n  - alert: Down\n    expr: up == 0\n    for: 30m\n";
    // Before the restart the alert became active at 00:00 and the server was last up at 00:10.
    for t in 0..=40 {
        add(&s, &[("__name__", "up"), ("instance", "a")], t * MIN, 0.0);
    }
    for t in 0..=10 {
        add(&s, &[("__name__", "ALERTS_FOR_STATE"), ("alertname", "Down"), ("instance", "a")], t * MIN, 0.0);
    }
    // Back at 00:15: 20 m of `for` remain, more than the grace period, so the 5 m outage is
    // added: the alert fires at 00:35 rather than 00:45 (no restore) or 00:30 (no downtime).
    let g = group(yaml, &s, &sink, true);
    g.eval(15 * MIN);
    let active_at = |g: &Group| g.lock().rules[0].active.values().next().map(|a| (a.active_at, a.state));
    assert_eq!(active_at(&g), Some((5 * MIN, AlertState::Pending)));
    g.eval(34 * MIN);
    assert_eq!(active_at(&g).map(|x| x.1), Some(AlertState::Pending));
    g.eval(35 * MIN);
    assert_eq!(active_at(&g).map(|x| x.1), Some(AlertState::Firing));

    // Back with less than the grace period left: it waits the grace period.
    let s2 = Arc::new(MemStorage::new());
    for t in 0..=40 {
        add(&s2, &[("__name__", "up"), ("instance", "a")], t * MIN, 0.0);
    }
    for t in 0..=25 {
        add(&s2, &[("__name__", "ALERTS_FOR_STATE"), ("alertname", "Down"), ("instance", "a")], t * MIN, 0.0);
    }
    let g = group(yaml, &s2, &sink, true);
    g.eval(27 * MIN);
    // 5 m remained at 00:25 (< 10 m grace): fires at 00:37 = 27 m + 10 m.
    assert_eq!(active_at(&g).map(|x| x.0), Some(27 * MIN + 10 * MIN - 30 * MIN));
}
