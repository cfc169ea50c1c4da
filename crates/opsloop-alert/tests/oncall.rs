//! The on-call engine from the outside, as a host uses it: configurations as text, rotations
//! across the DST changes of Europe/Berlin and America/New_York, restrictions, overrides and
//! layers, escalation under a manual clock (with a restart in the middle), iCal feeds, ack
//! links, and the CLI's `who_is_on_call`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;

use jiff::civil::Time;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use opsloop_alert::oncall::ack::{AckAction, AckError, AckSigner};
use opsloop_alert::oncall::config::{OncallConfig, load};
use opsloop_alert::oncall::{
    Escalation, EscalationState, OncallError, PageAction, UserName, ical, now, on_call_answer, parse_at, who_is_on_call,
};
use opsloop_core::clock::{Clock, ManualClock};

fn ts(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn config(text: &str) -> OncallConfig {
    load(text, "oncall.yml").unwrap_or_else(|e| panic!("{e}"))
}

const USERS: &str = "users:
  - {name: alice, email: alice@example.com}
  - {name: bob, email: bob@example.com}
  - {name: carol, email: carol@example.com, contact: [{webhook: \"https://hooks.example.com/carol\"}]}
  - {name: dave, email: dave@example.com}
";

fn one_layer(zone: &str, rotation: &str, handoff: &str) -> OncallConfig {
    config(&format!(
        "{USERS}schedules:\n  - name: s\n    timezone: {zone}\n    layers:\n      - {{rotation: {rotation}, handoff: {handoff}, users: [alice, bob, carol]}}\n"
    ))
}

/// The shifts of a window, each as `user local-start real-hours`.
fn shifts(config: &OncallConfig, from: &str, to: &str) -> Vec<String> {
    let s = config.schedule("s").unwrap();
    s.final_schedule(ts(from), ts(to))
        .iter()
        .map(|x| {
            let local = s.timezone.to_datetime(x.start);
            let hours = x.end.duration_since(x.start).as_hours();
            format!("{} {} {}h", x.user, local.strftime("%a %H:%M"), hours)
        })
        .collect()
}

/// The DST changes the tests cross, with the zone and what the clocks do.
const CHANGES: &[(&str, &str, i64)] = &[
    // Europe/Berlin: last Sunday of March (02:00 -> 03:00) and of October (03:00 -> 02:00).
    ("Europe/Berlin", "2026-03-29", -1),
    ("Europe/Berlin", "2026-10-25", 1),
    // America/New_York: second Sunday of March, first Sunday of November.
    ("America/New_York", "2026-03-08", -1),
    ("America/New_York", "2026-11-01", 1),
];

#[test]
fn daily_rotations_hand_off_at_nine_local_across_every_dst_change() {
    for (zone, day, delta) in CHANGES {
        let date: jiff::civil::Date = day.parse().unwrap();
        let handoff = date.checked_sub(SignedDuration::from_hours(72)).unwrap();
        let c = one_layer(zone, "1d", &format!("{handoff}T09:00"));
        let tz = TimeZone::get(zone).unwrap();
        let from = tz.to_timestamp(handoff.to_datetime(Time::midnight())).unwrap();
        let to = from + SignedDuration::from_hours(24 * 6);
        let got = shifts(&c, &from.to_string(), &to.to_string());
        // Nobody before the first handoff; the shift from the day before the change runs
        // 09:00 to 09:00: 24h plus or minus the hour the clocks move.
        let expected_change = format!("{}h", 24 + delta);
        assert_eq!(got.len(), 6, "{zone} {day}: {got:?}");
        for (i, shift) in got.iter().enumerate().take(5) {
            assert!(shift.contains(" 09:00 "), "{zone} {day}: {shift} in {got:?}");
            let hours = if i == 2 { expected_change.as_str() } else { "24h" };
            assert!(shift.ends_with(hours), "{zone} {day}: shift {i} {shift}, expected {hours}: {got:?}");
        }
        let users: Vec<&str> = got.iter().map(|s| s.split(' ').next().unwrap()).collect();
        assert_eq!(users, ["alice", "bob", "carol", "alice", "bob", "carol"], "{zone} {day}");
    }
}

#[test]
fn weekly_rotations_keep_monday_nine_across_every_dst_change() {
    for (zone, day, delta) in CHANGES {
        // The Monday six days before the Sunday of the change.
        let date: jiff::civil::Date = day.parse().unwrap();
        let monday = date.checked_sub(SignedDuration::from_hours(24 * 6)).unwrap();
        let c = one_layer(zone, "1w", &format!("{monday}T09:00"));
        let tz = TimeZone::get(zone).unwrap();
        let from = tz.to_timestamp(monday.to_datetime(Time::midnight())).unwrap();
        let to = from + SignedDuration::from_hours(24 * 7 * 3);
        let got = shifts(&c, &from.to_string(), &to.to_string());
        assert_eq!(got[0], "alice Mon 09:00 ".to_owned() + &format!("{}h", 168 + delta), "{zone} {day}: {got:?}");
        assert_eq!(got[1], "bob Mon 09:00 168h", "{zone} {day}: {got:?}");
    }
}

#[test]
fn twelve_hour_rotations_keep_nine_and_twenty_one_local() {
    for (zone, day, delta) in CHANGES {
        let date: jiff::civil::Date = day.parse().unwrap();
        let before = date.checked_sub(SignedDuration::from_hours(24)).unwrap();
        let c = one_layer(zone, "12h", &format!("{before}T09:00"));
        let tz = TimeZone::get(zone).unwrap();
        let from = tz.to_timestamp(before.to_datetime(Time::midnight())).unwrap();
        let to = from + SignedDuration::from_hours(72);
        let got = shifts(&c, &from.to_string(), &to.to_string());
        let times: Vec<&str> = got.iter().map(|s| s.split(' ').nth(2).unwrap()).collect();
        assert!(times.iter().all(|t| *t == "09:00" || *t == "21:00"), "{zone} {day}: {got:?}");
        // The night that contains the change is 12h plus or minus an hour.
        assert!(got[0].ends_with("12h") && got[2].ends_with("12h"), "{zone} {day}: {got:?}");
        assert!(got[1].ends_with(&format!("{}h", 12 + delta)), "{zone} {day}: {got:?}");
    }
}

#[test]
fn a_handoff_in_the_skipped_hour_happens_after_the_gap() {
    // A daily handoff at 02:30 in New York: on 2026-03-08 there is no 02:30, the clock jumps
    // from 02:00 EST to 03:00 EDT; the handoff is at 03:30 EDT, then 02:30 again.
    let c = one_layer("America/New_York", "1d", "2026-03-06T02:30");
    let got = shifts(&c, "2026-03-07T07:30Z", "2026-03-10T06:30Z");
    assert_eq!(got, ["bob Sat 02:30 24h", "carol Sun 03:30 23h", "alice Mon 02:30 24h"]);
}

const LAYERED: &str = "schedules:
  - name: s
    timezone: Europe/Berlin
    layers:
      - name: round the clock
        rotation: 1w
        handoff: 2026-03-23T09:00
        users: [alice, bob]
      - name: office hours
        rotation: 1d
        handoff: 2026-03-23T09:00
        users: [carol, dave]
        restrictions: [{days: [mon, tue, wed, thu, fri], start: \"09:00\", end: \"17:00\"}]
overrides:
  - {schedule: s, user: dave, start: 2026-03-28T00:00+01:00, end: 2026-03-29T00:00+01:00}
  - {schedule: s, user: bob, start: 2026-03-30T12:00, end: 2026-03-30T13:00}
";

#[test]
fn layers_restrictions_and_overrides_together() {
    let c = config(&format!("{USERS}{LAYERED}"));
    let who = |at: &str| who_is_on_call(&c, "s", ts(at)).unwrap();
    // Monday 2026-03-23, +01: office hours layer on top 09:00..17:00.
    assert_eq!(who("2026-03-23T08:00Z").as_deref(), Some("carol"));
    assert_eq!(who("2026-03-23T16:00Z").as_deref(), Some("alice"), "17:00 local: the week layer");
    assert_eq!(who("2026-03-24T08:30Z").as_deref(), Some("dave"));
    // Saturday: the override (local midnight to midnight, +01).
    assert_eq!(who("2026-03-27T22:59Z").as_deref(), Some("alice"));
    assert_eq!(who("2026-03-27T23:00Z").as_deref(), Some("dave"));
    assert_eq!(who("2026-03-28T23:00Z").as_deref(), Some("alice"));
    // Monday 2026-03-30, now +02: office hours start at 07:00Z; the local override 12:00..13:00.
    assert_eq!(who("2026-03-30T06:59Z").as_deref(), Some("alice"));
    assert_eq!(who("2026-03-30T07:00Z").as_deref(), Some("dave"), "09:00 +02, the 1d layer's eighth turn");
    assert_eq!(who("2026-03-30T10:30Z").as_deref(), Some("bob"));
    assert_eq!(who("2026-03-30T11:00Z").as_deref(), Some("dave"));
    assert_eq!(who("2026-03-30T15:00Z").as_deref(), Some("bob"), "17:00 +02: the week layer, bob's week");
    assert_eq!(who("2026-03-20T12:00Z"), None, "before any handoff");

    let s = c.schedule("s").unwrap();
    let day = s.final_schedule(ts("2026-03-30T00:00Z"), ts("2026-03-31T00:00Z"));
    let text: Vec<String> = day.iter().map(|x| format!("{} {}", x.user, x.start)).collect();
    assert_eq!(
        text,
        [
            "alice 2026-03-30T00:00:00Z",
            "dave 2026-03-30T07:00:00Z",
            "bob 2026-03-30T10:00:00Z",
            "dave 2026-03-30T11:00:00Z",
            "bob 2026-03-30T15:00:00Z",
        ]
    );
    let office = s.layer_schedule(1, ts("2026-03-30T00:00Z"), ts("2026-03-31T00:00Z")).unwrap();
    assert_eq!(office.len(), 1);
    assert_eq!((office[0].start, office[0].end), (ts("2026-03-30T07:00Z"), ts("2026-03-30T15:00Z")));
    assert_eq!(s.override_schedule(ts("2026-03-01T00:00Z"), ts("2026-04-01T00:00Z")).len(), 2);
}

const POLICY: &str = "schedules:
  - name: primary
    timezone: UTC
    layers: [{rotation: 1d, handoff: 2026-01-01T00:00, users: [alice, bob]}]
escalation_policies:
  - name: default
    repeat: 2
    repeat_after: 30m
    levels:
      - targets: [schedule:primary]
        after: 0m
      - targets: [user:carol, schedule:primary]
        after: 15m
";

fn policy_config() -> OncallConfig {
    let users = USERS.replace(
        "{name: carol, email: carol@example.com, contact: [{webhook: \"https://hooks.example.com/carol\"}]}",
        "{name: carol, email: carol@example.com, contact: [{webhook: \"https://hooks.example.com/carol\"}], notification_rules: [{contact: email, after: 0m}, {contact: webhook, after: 5m}]}",
    );
    config(&format!("{users}{POLICY}"))
}

/// Runs an escalation minute by minute on a manual clock, returning what was sent when (as
/// `minute user contact Llevel Aattempt`).
fn run(e: &mut Escalation, c: &OncallConfig, clock: &ManualClock, minutes: i64) -> Vec<String> {
    let t0 = ts("2026-01-02T10:00Z");
    let mut out = Vec::new();
    for _ in 0..minutes {
        let sent: Vec<PageAction> = e.tick(c, now(clock));
        for a in sent {
            let minute = now(clock).duration_since(t0).as_secs() / 60;
            assert_eq!(a.due, now(clock), "sent exactly when due");
            out.push(format!("{minute} {} {} L{}A{}", a.user, a.contact.kind.as_str(), a.level, a.attempt));
        }
        clock.advance_ms(60_000);
    }
    out
}

#[test]
fn escalation_levels_repeats_and_exhaustion_on_a_manual_clock() {
    let c = policy_config();
    let clock = ManualClock::new(ts("2026-01-02T10:00Z").as_millisecond());
    let mut e = Escalation::start("inc-1", c.policy("default").unwrap(), now(&clock));
    let sent = run(&mut e, &c, &clock, 200);
    // 2026-01-02 is bob's day. Level 2 pages carol and bob again (already paged: sent again,
    // as a new level is a new page). Rounds are 15m + 30m = 45m apart.
    assert_eq!(
        sent,
        [
            "0 bob email L1A1",
            "15 carol email L2A1",
            "15 bob email L2A1",
            "20 carol webhook L2A1",
            "45 bob email L1A2",
            "60 carol email L2A2",
            "60 bob email L2A2",
            "65 carol webhook L2A2",
            "90 bob email L1A3",
            "105 carol email L2A3",
            "105 bob email L2A3",
            "110 carol webhook L2A3",
        ]
    );
    assert!(e.is_exhausted());
    assert_eq!(e.next_deadline(), None);
}

#[test]
fn ack_stops_escalation_and_resolve_ends_it() {
    let c = policy_config();
    let clock = ManualClock::new(ts("2026-01-02T10:00Z").as_millisecond());
    let mut e = Escalation::start("inc-2", c.policy("default").unwrap(), now(&clock));
    let sent = run(&mut e, &c, &clock, 17);
    assert_eq!(sent, ["0 bob email L1A1", "15 carol email L2A1", "15 bob email L2A1"]);
    assert!(e.ack(now(&clock), Some(UserName::new("carol"))));
    assert_eq!(e.state, EscalationState::Acknowledged);
    assert_eq!(e.next_deadline(), None);
    assert!(run(&mut e, &c, &clock, 300).is_empty(), "carol's webhook at 20m is not sent after her ack");
    assert!(e.resolve(now(&clock)));
    assert_eq!(e.state, EscalationState::Resolved);
}

#[test]
fn a_restart_in_the_middle_continues_on_time() {
    let c = policy_config();
    // The uninterrupted run.
    let clock = ManualClock::new(ts("2026-01-02T10:00Z").as_millisecond());
    let mut whole = Escalation::start("inc-3", c.policy("default").unwrap(), now(&clock));
    let expected = run(&mut whole, &c, &clock, 200);

    // The same, serialized at minute 17 (mid-round, carol's webhook pending), and the host down
    // for 3 more minutes: restored at minute 20, it goes on.
    let clock = ManualClock::new(ts("2026-01-02T10:00Z").as_millisecond());
    let mut first = Escalation::start("inc-3", c.policy("default").unwrap(), now(&clock));
    let mut sent = run(&mut first, &c, &clock, 17);
    let saved = serde_json::to_string(&first).unwrap();
    drop(first);
    clock.advance_ms(3 * 60_000);
    let mut restored: Escalation = serde_json::from_str(&saved).unwrap();
    assert_eq!(restored.next_deadline(), Some(ts("2026-01-02T10:20Z")));
    sent.extend(run(&mut restored, &c, &clock, 180));
    assert_eq!(sent, expected, "nothing sent twice, nothing missed, all on time");

    // Restored after a longer outage: what fell due is sent at once, with its due time.
    let clock = ManualClock::new(ts("2026-01-02T10:00Z").as_millisecond());
    let mut first = Escalation::start("inc-4", c.policy("default").unwrap(), now(&clock));
    first.tick(&c, now(&clock));
    let saved = serde_json::to_string(&first).unwrap();
    let mut restored: Escalation = serde_json::from_str(&saved).unwrap();
    clock.advance_ms(50 * 60_000);
    let late = restored.tick(&c, now(&clock));
    let dues: Vec<String> = late.iter().map(|a| format!("{} {}", a.user, a.due)).collect();
    assert_eq!(dues, ["carol 2026-01-02T10:15:00Z", "bob 2026-01-02T10:15:00Z", "carol 2026-01-02T10:20:00Z"]);
    assert_eq!(restored.next_deadline(), Some(ts("2026-01-02T11:00Z")), "the next round keeps its time");
}

#[test]
fn ical_feeds_are_folded_crlf_utc_and_well_formed() {
    let c = config(&format!("{USERS}{LAYERED}"));
    let s = c.schedule("s").unwrap();
    let (from, to, generated) = (ts("2026-03-23T00:00Z"), ts("2026-04-06T00:00Z"), ts("2026-03-22T12:00Z"));
    let feed = ical::schedule_feed(s, from, to, generated);
    assert!(feed.starts_with("BEGIN:VCALENDAR\r\nVERSION:2.0\r\n"), "{feed}");
    assert!(feed.ends_with("END:VCALENDAR\r\n"));
    assert!(!feed.replace("\r\n", "").contains('\n'), "every line ends in CRLF");
    for line in feed.split_terminator("\r\n") {
        assert!(line.len() <= 75, "{} octets: {line:?}", line.len());
    }
    // Unfold and read it back.
    let unfolded = feed.replace("\r\n ", "");
    let lines: Vec<&str> = unfolded.split_terminator("\r\n").collect();
    let events = lines.iter().filter(|l| **l == "BEGIN:VEVENT").count();
    assert_eq!(events, lines.iter().filter(|l| **l == "END:VEVENT").count());
    assert_eq!(events, s.final_schedule(from, to).len());
    let starts: Vec<&str> = lines.iter().filter_map(|l| l.strip_prefix("DTSTART:")).collect();
    assert_eq!(starts[0], "20260323T080000Z", "the first handoff, 09:00 +01");
    assert!(starts.iter().all(|s| s.len() == 16 && s.ends_with('Z')));
    assert!(lines.contains(&"SUMMARY:On call: carol (s)"));
    let uids: HashSet<&str> = lines.iter().filter_map(|l| l.strip_prefix("UID:")).collect();
    assert_eq!(uids.len(), events, "UIDs are unique");
    assert_eq!(feed, ical::schedule_feed(s, from, to, generated), "deterministic");

    let dave = ical::user_feed(&c, "dave", from, to, generated).unwrap();
    let dave_events: Vec<&str> = dave.split_terminator("\r\n").filter(|l| l.starts_with("SUMMARY:")).collect();
    assert!(!dave_events.is_empty() && dave_events.iter().all(|l| l.contains("dave")), "{dave}");
    assert!(dave.contains("DTSTART:20260327T230000Z\r\nDTEND:20260328T230000Z\r\n"), "the override: {dave}");
    assert!(ical::user_feed(&c, "nobody", from, to, generated).is_none());
}

#[test]
fn ack_links_refuse_expired_tampered_and_replayed_tokens() {
    let signer = AckSigner::new(&[42u8; 32]).unwrap();
    let clock = ManualClock::new(ts("2026-01-02T10:00Z").as_millisecond());
    let token = signer.issue("inc-7", AckAction::Acknowledge, now(&clock) + SignedDuration::from_hours(1)).unwrap();
    let mut used = HashSet::new();
    // Tampered: any changed character.
    let mut chars: Vec<char> = token.chars().collect();
    chars[5] = if chars[5] == 'A' { 'B' } else { 'A' };
    let tampered: String = chars.into_iter().collect();
    assert!(matches!(
        signer.verify(&tampered, now(&clock), &mut used),
        Err(AckError::BadSignature | AckError::Malformed)
    ));
    // Good once, then replayed.
    let claims = signer.verify(&token, now(&clock), &mut used).unwrap();
    assert_eq!((claims.incident.as_str(), claims.action), ("inc-7", AckAction::Acknowledge));
    assert_eq!(signer.verify(&token, now(&clock), &mut used), Err(AckError::Replayed));
    // Expired.
    let later = signer.issue("inc-7", AckAction::Resolve, now(&clock) + SignedDuration::from_mins(5)).unwrap();
    clock.advance_ms(5 * 60_000);
    assert!(matches!(signer.verify(&later, now(&clock), &mut used), Err(AckError::Expired(_))));
    assert_eq!(clock.now_ms(), ts("2026-01-02T10:05Z").as_millisecond());
}

#[test]
fn the_cli_answer() {
    let c = config(&format!("{USERS}{LAYERED}"));
    let at = parse_at(&c, "s", "2026-03-24T10:30").unwrap();
    assert_eq!(at, ts("2026-03-24T09:30Z"), "a local time in the schedule's zone");
    assert_eq!(who_is_on_call(&c, "s", at).unwrap().as_deref(), Some("dave"));
    let answer = on_call_answer(&c, "s", at).unwrap();
    let json = serde_json::to_value(&answer).unwrap();
    assert_eq!(json["user"], "dave");
    assert_eq!(json["timezone"], "Europe/Berlin");
    assert_eq!(json["since"], "2026-03-24T08:00:00Z");
    assert_eq!(json["until"], "2026-03-24T16:00:00Z");
    let e = who_is_on_call(&c, "ss", at).unwrap_err();
    assert_eq!(e, OncallError::UnknownSchedule { name: "ss".into(), hint: Some("s".into()) });
    assert_eq!(e.to_string(), "unknown schedule `ss` (did you mean `s`?)");
    assert!(matches!(parse_at(&c, "s", "tomorrow"), Err(OncallError::BadTime { .. })));
}

/// The rendering agrees with `on_call_at` at every instant: sampled every 7 minutes over two
/// months spanning a DST change, for a schedule with layers, restrictions (one crossing
/// midnight, one weekly) and overrides.
#[test]
fn final_schedule_agrees_with_on_call_at_everywhere() {
    let text = format!(
        "{USERS}{}",
        LAYERED.replace(
            "restrictions: [{days: [mon, tue, wed, thu, fri], start: \"09:00\", end: \"17:00\"}]",
            "restrictions: [{days: [mon, wed], start: \"22:00\", end: \"02:30\"}, {start_day: fri, start: \"18:00\", end_day: sun, end: \"03:00\"}]\n      - {rotation: 12h, handoff: 2026-03-25T02:30, users: [bob, dave], restrictions: [{days: [sun], start: \"02:15\", end: \"02:45\"}]}",
        )
    );
    let c = config(&text);
    let s = c.schedule("s").unwrap();
    assert_eq!(s.layers.len(), 3, "the replacement took");
    let (from, to) = (ts("2026-03-15T00:00Z"), ts("2026-05-15T00:00Z"));
    let shifts = s.final_schedule(from, to);
    for pair in shifts.windows(2) {
        assert!(pair[0].end <= pair[1].start, "sorted and disjoint: {pair:?}");
        assert!(pair[0].end < pair[1].start || pair[0].user != pair[1].user, "merged: {pair:?}");
    }
    let mut at = from;
    while at < to {
        let rendered = shifts.iter().find(|x| x.start <= at && at < x.end).map(|x| x.user.to_string());
        assert_eq!(rendered, s.on_call_at(at).map(|u| u.to_string()), "at {at}");
        at += SignedDuration::from_mins(7);
    }
}

#[test]
fn damaged_files_are_refused_without_panicking() {
    let text = format!(
        "{USERS}{LAYERED}escalation_policies:\n  - {{name: p, levels: [{{targets: [schedule:s]}}, {{targets: [user:bob], after: 5m}}]}}\n"
    );
    assert!(load(&text, "x.yml").is_ok(), "{:?}", load(&text, "x.yml").err());
    let bytes: Vec<char> = text.chars().collect();
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    for _ in 0..400 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let cut = (seed % bytes.len() as u64) as usize;
        let len = (seed >> 32) as usize % 6 + 1;
        let damaged: String =
            bytes.iter().enumerate().filter(|(i, _)| *i < cut || *i >= cut + len).map(|(_, c)| c).collect();
        if let Ok(c) = load(&damaged, "x.yml") {
            for s in &c.schedules {
                let _ = s.final_schedule(ts("2026-03-20T00:00Z"), ts("2026-04-20T00:00Z"));
            }
        }
    }
}
