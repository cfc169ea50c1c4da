//! The engine driven by a manual clock: grouping and its timers, deduplication and repeats,
//! resolved notifications, silences, inhibition, time intervals, and a restart from a
//! snapshot that neither repeats nor loses a notification.

#![allow(clippy::unwrap_used)]

use std::time::Instant;

use jiff::Timestamp;
use opsloop_alert::alerts::PostableAlert;
use opsloop_alert::config::load;
use opsloop_alert::dispatch::{AlertState, AlertStatus, Engine, Notification};
use opsloop_alert::labels::LabelSet;
use opsloop_alert::silence::{PostableSilence, SilenceMatcher, SilenceState};

const T0: i64 = 1_700_000_000;

fn at(s: i64) -> Timestamp {
    Timestamp::from_second(T0 + s).unwrap()
}

fn engine(extra_route: &str, extra: &str) -> Engine {
    let yaml = format!(
        "route:\n  receiver: hook\n  group_by: [alertname]\n  group_wait: 10s\n  group_interval: 60s\n  repeat_interval: 1h\n{extra_route}receivers:\n  - name: hook\n    webhook_configs:\n      - url: http://127.0.0.1:9/\n  - name: quiet\n    webhook_configs:\n      - url: http://127.0.0.1:9/\n        send_resolved: false\n{extra}"
    );
    Engine::new(load(&yaml, "t.yml").unwrap_or_else(|e| panic!("{e}")))
}

fn alert(pairs: &[(&str, &str)], starts: i64, ends: Option<i64>) -> PostableAlert {
    PostableAlert {
        labels: LabelSet::from_pairs(pairs.iter().copied()),
        starts_at: Some(at(starts)),
        ends_at: ends.map(at),
        ..Default::default()
    }
}

fn names(n: &Notification) -> Vec<String> {
    n.alerts
        .iter()
        .map(|a| {
            let s = if a.status == AlertStatus::Firing { "" } else { "-" };
            format!("{s}{}", a.labels.value("instance"))
        })
        .collect()
}

/// Ticks every second from `from` to `to` (inclusive), collecting (time, notification).
fn run(e: &mut Engine, from: i64, to: i64) -> Vec<(i64, Notification)> {
    let mut out = Vec::new();
    for s in from..=to {
        for n in e.tick(at(s)) {
            out.push((s, n));
        }
    }
    out
}

#[test]
fn group_wait_interval_dedup_and_repeat() {
    let mut e = engine("", "");
    e.put(vec![alert(&[("alertname", "A"), ("instance", "2")], 0, None)], at(0)).unwrap();
    e.put(vec![alert(&[("alertname", "A"), ("instance", "1")], 3, None)], at(3)).unwrap();
    assert_eq!(e.next_deadline(), Some(at(10)));
    let got = run(&mut e, 0, 10);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, 10);
    assert_eq!(names(&got[0].1), ["1", "2"], "Alertmanager's order");
    assert_eq!(got[0].1.group_key, "{}:{alertname=\"A\"}");
    assert!(got[0].1.alerts.iter().all(|a| a.ends_at.is_none()));
    // Nothing changed at the next interval; keep the alerts alive (resolve_timeout is 5m).
    for s in [60, 120, 180, 240] {
        e.put(vec![alert(&[("alertname", "A"), ("instance", "1")], 3, None)], at(s)).unwrap();
        e.put(vec![alert(&[("alertname", "A"), ("instance", "2")], 0, None)], at(s)).unwrap();
    }
    assert!(run(&mut e, 11, 70).is_empty());
    // A new alert joins: notified at the next group_interval tick (t=130).
    e.put(vec![alert(&[("alertname", "A"), ("instance", "3")], 100, None)], at(100)).unwrap();
    let got = run(&mut e, 71, 130);
    assert_eq!(
        got.iter().map(|(t, n)| (*t, names(n))).collect::<Vec<_>>(),
        [(130, vec!["1".into(), "2".into(), "3".into()])]
    );
    assert!(!got[0].1.is_repeat);
    // Kept alive until the repeat interval passes: repeated after 1h.
    let mut repeats = Vec::new();
    for s in (131..=3800).step_by(10) {
        for i in ["1", "2", "3"] {
            e.put(vec![alert(&[("alertname", "A"), ("instance", i)], 0, None)], at(s)).unwrap();
        }
        repeats.extend(run(&mut e, s, s + 9));
    }
    assert_eq!(repeats.len(), 1, "{:?}", repeats.iter().map(|r| r.0).collect::<Vec<_>>());
    assert!(repeats[0].1.is_repeat && repeats[0].0 > 3730 && repeats[0].0 <= 3790, "{}", repeats[0].0);
}

#[test]
fn resolved_alerts_are_sent_once_then_dropped() {
    let mut e = engine("  routes:\n    - matchers: ['team=\"q\"']\n      receiver: quiet\n", "");
    e.put(vec![alert(&[("alertname", "A"), ("instance", "1")], 0, Some(1000))], at(0)).unwrap();
    e.put(vec![alert(&[("alertname", "B"), ("instance", "1"), ("team", "q")], 0, Some(1000))], at(0)).unwrap();
    let got = run(&mut e, 0, 10);
    assert_eq!(got.len(), 2);
    e.put(vec![alert(&[("alertname", "A"), ("instance", "1")], 0, Some(20))], at(20)).unwrap();
    e.put(vec![alert(&[("alertname", "B"), ("instance", "1"), ("team", "q")], 0, Some(20))], at(20)).unwrap();
    let got = run(&mut e, 11, 200);
    assert_eq!(got.len(), 1, "the quiet receiver does not send resolved");
    assert_eq!((got[0].0, names(&got[0].1)), (70, vec!["-1".to_owned()]));
    assert_eq!(got[0].1.status(), AlertStatus::Resolved);
    assert_eq!(got[0].1.alerts[0].ends_at, Some(at(20)));
    assert!(e.groups(at(200)).is_empty());
}

#[test]
fn silences_and_inhibition_mute() {
    let inhibit = "inhibit_rules:\n  - source_matchers: [severity=\"critical\"]\n    target_matchers: [severity=~\"warning|critical\"]\n    equal: [cluster]\n";
    let mut e = engine("", inhibit);
    let id = e
        .set_silence(
            PostableSilence {
                matchers: vec![SilenceMatcher {
                    name: "instance".into(),
                    value: "s.*".into(),
                    is_regex: true,
                    is_equal: true,
                }],
                starts_at: Some(at(0)),
                ends_at: Some(at(100)),
                created_by: "me".into(),
                comment: "maintenance".into(),
                id: None,
            },
            at(0),
        )
        .unwrap();
    e.put(
        vec![
            alert(&[("alertname", "A"), ("instance", "s1")], 0, None),
            alert(&[("alertname", "A"), ("instance", "x"), ("severity", "warning"), ("cluster", "c1")], 0, None),
            alert(&[("alertname", "A"), ("instance", "y"), ("severity", "warning"), ("cluster", "c2")], 0, None),
            alert(&[("alertname", "B"), ("instance", "z"), ("severity", "critical"), ("cluster", "c1")], 0, None),
        ],
        at(0),
    )
    .unwrap();
    let got = run(&mut e, 0, 10);
    let mut all: Vec<Vec<String>> = got.iter().map(|(_, n)| names(n)).collect();
    all.sort();
    // s1 silenced; x inhibited by z (same cluster); z matches both sides and is not inhibited.
    assert_eq!(all, vec![vec!["y".to_owned()], vec!["z".to_owned()]]);
    let views = e.alerts(at(10));
    let s1 = views.iter().find(|v| v.alert.labels.value("instance") == "s1").unwrap();
    assert_eq!((s1.state, s1.silenced_by.clone()), (AlertState::Suppressed, vec![id.clone()]));
    let x = views.iter().find(|v| v.alert.labels.value("instance") == "x").unwrap();
    assert_eq!(x.inhibited_by.len(), 1);
    assert_eq!(e.silences(at(10))[0].1, SilenceState::Active);
    // Expiring the silence lets s1 through at the next interval.
    e.expire_silence(&id, at(20)).unwrap();
    let got = run(&mut e, 11, 70);
    assert!(got.iter().any(|(t, n)| *t == 70 && names(n).contains(&"s1".to_owned())), "{got:?}");
}

#[test]
fn mute_time_intervals_hold_notifications() {
    // 2023-11-14T22:13:20Z is a Tuesday: mute all of Tuesday.
    let route = "  routes:\n    - matchers: ['team=\"night\"']\n      mute_time_intervals: [tuesdays]\n";
    let intervals = "time_intervals:\n  - name: tuesdays\n    time_intervals:\n      - weekdays: [tuesday]\n";
    let mut e = engine(route, intervals);
    e.put(vec![alert(&[("alertname", "A"), ("team", "night")], 0, Some(20_000))], at(0)).unwrap();
    assert!(run(&mut e, 0, 100).is_empty());
    // Wednesday starts at 22:13:20 + 6400 s; notified at the first flush after it.
    let mut got = Vec::new();
    let mut s = 100;
    while got.is_empty() && s < 9000 {
        got = run(&mut e, s, s + 59);
        s += 60;
    }
    let first = got.first().map(|(t, _)| *t).unwrap_or_default();
    assert!((6400..6460).contains(&first), "{first}");
}

#[test]
fn a_restart_from_a_snapshot_neither_repeats_nor_loses() {
    let mut e = engine("", "");
    e.put(vec![alert(&[("alertname", "A"), ("instance", "1")], 0, None)], at(0)).unwrap();
    assert_eq!(run(&mut e, 0, 10).len(), 1);
    let snapshot = e.snapshot();
    let json = serde_json::to_string(&snapshot).unwrap();
    let mut restarted = engine("", "");
    restarted.restore(serde_json::from_str(&json).unwrap());
    // Prometheus resends the same alert; the new group flushes but must not repeat it.
    restarted.put(vec![alert(&[("alertname", "A"), ("instance", "1")], 0, None)], at(30)).unwrap();
    assert!(run(&mut restarted, 30, 100).is_empty());
    // A new alert after the restart is still notified.
    restarted.put(vec![alert(&[("alertname", "A"), ("instance", "2")], 110, None)], at(110)).unwrap();
    let got = run(&mut restarted, 101, 200);
    assert_eq!(got.iter().map(|(_, n)| names(n)).collect::<Vec<_>>(), [vec!["1".to_owned(), "2".to_owned()]]);
}

#[test]
fn many_alerts_many_groups() {
    let mut e = engine("", "");
    let start = Instant::now();
    let mut batch = Vec::new();
    for i in 0..50_000 {
        let name = format!("A{}", i / 2);
        let inst = format!("{}", i % 2);
        batch.push(alert(&[("alertname", &name), ("instance", &inst), ("job", "node")], 0, None));
    }
    e.put(batch, at(0)).unwrap();
    let put = start.elapsed();
    let start = Instant::now();
    let groups = e.groups(at(1));
    let listed = start.elapsed();
    assert_eq!(groups.len(), 25_000);
    let start = Instant::now();
    let sent = run(&mut e, 0, 10);
    let ticked = start.elapsed();
    assert_eq!(sent.len(), 25_000);
    println!("put 50k: {put:?}, groups: {listed:?}, flush 25k groups: {ticked:?}");
}
