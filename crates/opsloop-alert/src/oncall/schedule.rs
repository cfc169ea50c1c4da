//! Who is on call at any instant, PagerDuty's model: each layer is a rotation of users that
//! hands off every `rotation` from `handoff`, measured on the schedule's local wall clock, and
//! is blanked outside its restrictions; layers stack, a later layer winning wherever it has
//! someone on call; overrides lie on top of everything.
//!
//! Rotations are civil arithmetic in the schedule's IANA zone: handoff `k` is the local
//! date-time `handoff + k × rotation`, turned into an instant. So a `1d` rotation at 09:00
//! hands off at 09:00 local every day and a `12h` one at 09:00 and 21:00, across DST; the shift
//! that contains a DST change is an hour shorter or longer in real time. A handoff time that a
//! DST change skips (02:30 on the spring-forward night) happens at the same wall-clock distance
//! past the gap (03:30), and one that occurs twice happens the first time: RFC 5545's and
//! Temporal's "compatible" reading.
//!
//! Restrictions are windows of local time too, so "09:00 to 17:00 on weekdays" stays 09:00 to
//! 17:00 local across DST.

use jiff::civil::DateTime;
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use super::config::{DAY_SECS, Layer, Schedule, UserName, WEEK_SECS};

/// Renderings longer than this are cut: a calendar asks for weeks or months, and a request for
/// centuries should not turn into millions of shifts.
pub const MAX_RENDER_SPAN: SignedDuration = SignedDuration::from_hours(400 * 24);

/// Bounds the walk over handoffs of one rendering (a 1h rotation over [`MAX_RENDER_SPAN`] is
/// under 10,000).
const MAX_HANDOFFS: usize = 20_000;

/// Someone on call in `[start, end)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shift {
    pub user: UserName,
    pub start: Timestamp,
    pub end: Timestamp,
}

/// The second of the local week (Monday 00:00 is 0) a local date-time falls on.
fn second_of_week(local: DateTime) -> u32 {
    let day = u32::try_from(local.weekday().to_monday_zero_offset()).unwrap_or(0);
    let time = local.time();
    let secs = u32::try_from(i32::from(time.hour()) * 3600 + i32::from(time.minute()) * 60 + i32::from(time.second()))
        .unwrap_or(0);
    day * DAY_SECS + secs
}

/// Every instant whose local time in `zone` is `local`: none in a DST gap, two in a fold.
fn instants_of(zone: &TimeZone, local: DateTime) -> Vec<Timestamp> {
    let at = |offset: jiff::tz::Offset| offset.to_timestamp(local).ok();
    match zone.to_ambiguous_timestamp(local).offset() {
        AmbiguousOffset::Unambiguous { offset } => at(offset).into_iter().collect(),
        AmbiguousOffset::Gap { .. } => Vec::new(),
        AmbiguousOffset::Fold { before, after } => at(before).into_iter().chain(at(after)).collect(),
    }
}

impl Layer {
    /// The instant of handoff `k` (0: the first).
    pub fn handoff_at(&self, zone: &TimeZone, k: i64) -> Option<Timestamp> {
        let offset = self.rotation.checked_mul(i32::try_from(k).ok()?)?;
        let local = self.handoff.checked_add(offset).ok()?;
        zone.to_ambiguous_timestamp(local).compatible().ok()
    }

    /// Which turn of the rotation `at` falls in: the `k` with `handoff_at(k) <= at <
    /// handoff_at(k + 1)`; `None` before the first handoff.
    pub fn turn_at(&self, zone: &TimeZone, at: Timestamp) -> Option<i64> {
        let rotation = self.rotation.as_secs();
        if rotation <= 0 || at < self.handoff_at(zone, 0)? {
            return None;
        }
        // Estimate on the wall clock, then step: near a DST change the estimate can be one off.
        let elapsed = zone.to_datetime(at).duration_since(self.handoff).as_secs();
        let mut k = elapsed.div_euclid(rotation).max(0);
        for _ in 0..64 {
            match self.handoff_at(zone, k) {
                Some(start) if start > at && k > 0 => k -= 1,
                _ => break,
            }
        }
        for _ in 0..64 {
            match self.handoff_at(zone, k + 1) {
                Some(next) if next <= at => k += 1,
                _ => break,
            }
        }
        Some(k)
    }

    /// Who this layer has on call at `at`, restrictions applied.
    pub fn user_at(&self, zone: &TimeZone, at: Timestamp) -> Option<&UserName> {
        if self.users.is_empty() {
            return None;
        }
        let k = self.turn_at(zone, at)?;
        if !self.restrictions.is_empty() {
            let sow = second_of_week(zone.to_datetime(at));
            if !self.restrictions.iter().any(|w| w.contains(sow)) {
                return None;
            }
        }
        let count = i64::try_from(self.users.len()).ok()?;
        self.users.get(usize::try_from(k.rem_euclid(count)).ok()?)
    }

    /// Every instant in `(from, to)` where this layer's answer may change: handoffs and
    /// restriction edges.
    fn boundaries(&self, zone: &TimeZone, from: Timestamp, to: Timestamp, out: &mut Vec<Timestamp>) {
        let mut k = self.turn_at(zone, from).map_or(0, |k| k + 1);
        for _ in 0..MAX_HANDOFFS {
            match self.handoff_at(zone, k) {
                Some(at) if at < to => {
                    if at > from {
                        out.push(at);
                    }
                    k += 1;
                }
                _ => break,
            }
        }
        if self.restrictions.is_empty() {
            return;
        }
        // Restriction edges, week by week, from the Monday before `from` to the one after `to`.
        let first = zone.to_datetime(from).date();
        let Ok(mut monday) =
            first.checked_sub(SignedDuration::from_hours(24 * i64::from(first.weekday().to_monday_zero_offset() + 7)))
        else {
            return;
        };
        let last = zone.to_datetime(to).date();
        while monday <= last {
            let midnight = monday.to_datetime(jiff::civil::Time::midnight());
            for window in &self.restrictions {
                let start = SignedDuration::from_secs(i64::from(window.start));
                let end = start + SignedDuration::from_secs(i64::from(window.length));
                for edge in [start, end] {
                    if let Ok(local) = midnight.checked_add(edge) {
                        out.extend(instants_of(zone, local).into_iter().filter(|t| *t > from && *t < to));
                    }
                }
            }
            match monday.checked_add(SignedDuration::from_secs(i64::from(WEEK_SECS))) {
                Ok(next) => monday = next,
                Err(_) => break,
            }
        }
    }
}

/// Shifts from the answers of `who` on the segments between sorted boundaries, consecutive
/// segments of the same user merged, nobody-on-call segments left out.
fn render(
    from: Timestamp,
    to: Timestamp,
    mut bounds: Vec<Timestamp>,
    who: impl Fn(Timestamp) -> Option<UserName>,
) -> Vec<Shift> {
    bounds.push(from);
    bounds.push(to);
    bounds.retain(|t| *t >= from && *t <= to);
    bounds.sort();
    bounds.dedup();
    let mut shifts: Vec<Shift> = Vec::new();
    for pair in bounds.windows(2) {
        let (start, end) = (pair[0], pair[1]);
        let Some(user) = who(start) else { continue };
        match shifts.last_mut() {
            Some(last) if last.user == user && last.end == start => last.end = end,
            _ => shifts.push(Shift { user, start, end }),
        }
    }
    shifts
}

/// The window actually rendered: empty when reversed, cut at [`MAX_RENDER_SPAN`].
fn clamp(from: Timestamp, to: Timestamp) -> Timestamp {
    let limit = from.checked_add(MAX_RENDER_SPAN).unwrap_or(Timestamp::MAX);
    to.min(limit).max(from)
}

impl Schedule {
    /// Who is on call at `at`: the last override covering it, else the topmost layer that has
    /// someone, else nobody.
    pub fn on_call_at(&self, at: Timestamp) -> Option<UserName> {
        if let Some(o) = self.overrides.iter().rev().find(|o| o.start <= at && at < o.end) {
            return Some(o.user.clone());
        }
        self.layers.iter().rev().find_map(|layer| layer.user_at(&self.timezone, at)).cloned()
    }

    /// The final schedule in `[from, to)` (cut at [`MAX_RENDER_SPAN`]): who is on call when,
    /// merged into shifts and cut at the window's edges; gaps where nobody is on call are left
    /// out. What a calendar view and the iCal feed show.
    pub fn final_schedule(&self, from: Timestamp, to: Timestamp) -> Vec<Shift> {
        let to = clamp(from, to);
        let mut bounds = self.zone_transitions(from, to);
        for layer in &self.layers {
            layer.boundaries(&self.timezone, from, to, &mut bounds);
        }
        for o in &self.overrides {
            bounds.extend([o.start, o.end]);
        }
        render(from, to, bounds, |at| self.on_call_at(at))
    }

    /// One layer's own rendering in `[from, to)`, as if it were alone (the layered view of a
    /// schedule page). `None` when there is no such layer.
    pub fn layer_schedule(&self, layer: usize, from: Timestamp, to: Timestamp) -> Option<Vec<Shift>> {
        let layer = self.layers.get(layer)?;
        let to = clamp(from, to);
        let mut bounds = self.zone_transitions(from, to);
        layer.boundaries(&self.timezone, from, to, &mut bounds);
        Some(render(from, to, bounds, |at| layer.user_at(&self.timezone, at).cloned()))
    }

    /// The overrides alone in `[from, to)`, later ones winning, for the overrides row of a view.
    pub fn override_schedule(&self, from: Timestamp, to: Timestamp) -> Vec<Shift> {
        let to = clamp(from, to);
        let bounds = self.overrides.iter().flat_map(|o| [o.start, o.end]).collect();
        render(from, to, bounds, |at| {
            self.overrides.iter().rev().find(|o| o.start <= at && at < o.end).map(|o| o.user.clone())
        })
    }

    /// The shift of the final schedule that contains `at`, with each edge that lies within
    /// `reach` of it (`None` for an edge further away: someone on call for months).
    pub fn shift_around(
        &self,
        at: Timestamp,
        reach: SignedDuration,
    ) -> Option<(UserName, Option<Timestamp>, Option<Timestamp>)> {
        let reach = reach.min(MAX_RENDER_SPAN / 2);
        let from = at.checked_sub(reach).unwrap_or(Timestamp::MIN);
        let to = at.checked_add(reach).unwrap_or(Timestamp::MAX);
        let shift = self.final_schedule(from, to).into_iter().find(|s| s.start <= at && at < s.end)?;
        Some((shift.user, (shift.start > from).then_some(shift.start), (shift.end < to).then_some(shift.end)))
    }

    /// DST (and other offset) changes in `(from, to)`: a restriction edge in a DST gap does
    /// not exist as a local time, and the window opens or closes at the change itself.
    fn zone_transitions(&self, from: Timestamp, to: Timestamp) -> Vec<Timestamp> {
        self.timezone.following(from).map(|t| t.timestamp()).take_while(|t| *t < to).take(MAX_HANDOFFS).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oncall::config::{Override, WeekWindow};

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn schedule(zone: &str, rotation: &str, handoff: &str, users: &[&str]) -> Schedule {
        Schedule {
            name: "s".into(),
            timezone_name: zone.into(),
            timezone: TimeZone::get(zone).unwrap(),
            layers: vec![Layer {
                name: "l".into(),
                rotation: crate::oncall::config::parse_duration(rotation).unwrap(),
                handoff: handoff.parse().unwrap(),
                users: users.iter().map(|u| UserName::new(*u)).collect(),
                restrictions: Vec::new(),
            }],
            overrides: Vec::new(),
        }
    }

    fn who(s: &Schedule, at: &str) -> Option<String> {
        s.on_call_at(ts(at)).map(|u| u.to_string())
    }

    #[test]
    fn daily_rotation_keeps_local_handoff_across_berlin_spring_forward() {
        // Europe/Berlin moves from +01 to +02 on Sunday 2026-03-29 at 02:00 local.
        let s = schedule("Europe/Berlin", "1d", "2026-03-27T09:00", &["a", "b", "c"]);
        assert_eq!(who(&s, "2026-03-28T07:59:59Z"), Some("a".into()));
        assert_eq!(who(&s, "2026-03-28T08:00:00Z"), Some("b".into()), "09:00 +01");
        assert_eq!(who(&s, "2026-03-29T06:59:59Z"), Some("b".into()), "08:59:59 +02 is still b's day");
        assert_eq!(who(&s, "2026-03-29T07:00:00Z"), Some("c".into()), "09:00 +02 on the DST Sunday");
        let shifts = s.final_schedule(ts("2026-03-28T00:00Z"), ts("2026-03-31T00:00Z"));
        let b = shifts.iter().find(|x| x.user == "b").unwrap();
        assert_eq!((b.start, b.end), (ts("2026-03-28T08:00Z"), ts("2026-03-29T07:00Z")), "a 23-hour day");
    }

    #[test]
    fn weekly_and_twelve_hour_rotations_in_new_york() {
        // America/New_York: 2026-03-08 02:00 EST -> 03:00 EDT; 2026-11-01 02:00 EDT -> 01:00 EST.
        let s = schedule("America/New_York", "1w", "2026-03-02T09:00", &["a", "b"]);
        assert_eq!(who(&s, "2026-03-09T12:59Z"), Some("a".into()));
        assert_eq!(who(&s, "2026-03-09T13:00Z"), Some("b".into()), "Monday 09:00 EDT");
        let s = schedule("America/New_York", "12h", "2026-10-31T09:00", &["day", "night"]);
        let shifts = s.final_schedule(ts("2026-10-31T13:00Z"), ts("2026-11-02T14:00Z"));
        let edges: Vec<String> = shifts.iter().map(|x| format!("{}-{}", x.user, x.start)).collect();
        assert_eq!(
            edges,
            [
                "day-2026-10-31T13:00:00Z",
                "night-2026-11-01T01:00:00Z",
                "day-2026-11-01T14:00:00Z", // 09:00 EST, after a 13-hour night
                "night-2026-11-02T02:00:00Z",
            ]
        );
    }

    #[test]
    fn restrictions_are_local_and_layers_stack() {
        let mut s = schedule("Europe/Berlin", "1w", "2026-03-23T09:00", &["a"]);
        s.layers[0].restrictions =
            (0..5).map(|d| WeekWindow { start: d * DAY_SECS + 9 * 3600, length: 8 * 3600 }).collect();
        assert_eq!(who(&s, "2026-03-27T15:59Z"), Some("a".into()), "Friday 16:59 +01");
        assert_eq!(who(&s, "2026-03-27T16:00Z"), None, "Friday 17:00 +01");
        assert_eq!(who(&s, "2026-03-30T07:00Z"), Some("a".into()), "Monday 09:00 +02");
        assert_eq!(who(&s, "2026-03-30T06:59Z"), None);
        // A bottom layer that is always on fills the gaps.
        let mut base = schedule("Europe/Berlin", "1d", "2026-03-01T00:00", &["z"]).layers.remove(0);
        base.name = "base".into();
        s.layers.insert(0, base);
        assert_eq!(who(&s, "2026-03-27T16:00Z"), Some("z".into()));
        assert_eq!(who(&s, "2026-03-27T15:00Z"), Some("a".into()));
        let week = s.final_schedule(ts("2026-03-30T00:00Z"), ts("2026-03-31T00:00Z"));
        let text: Vec<String> = week.iter().map(|x| format!("{} {}..{}", x.user, x.start, x.end)).collect();
        assert_eq!(
            text,
            [
                "z 2026-03-30T00:00:00Z..2026-03-30T07:00:00Z",
                "a 2026-03-30T07:00:00Z..2026-03-30T15:00:00Z",
                "z 2026-03-30T15:00:00Z..2026-03-31T00:00:00Z",
            ]
        );
        assert_eq!(s.layer_schedule(1, ts("2026-03-30T00:00Z"), ts("2026-03-31T00:00Z")).unwrap().len(), 1);
    }

    #[test]
    fn overrides_win_and_later_ones_win_over_earlier() {
        let mut s = schedule("UTC", "1d", "2026-01-01T00:00", &["a"]);
        s.overrides.push(Override {
            user: UserName::new("o1"),
            start: ts("2026-01-02T10:00Z"),
            end: ts("2026-01-02T14:00Z"),
        });
        s.overrides.push(Override {
            user: UserName::new("o2"),
            start: ts("2026-01-02T12:00Z"),
            end: ts("2026-01-02T13:00Z"),
        });
        let day = s.final_schedule(ts("2026-01-02T00:00Z"), ts("2026-01-03T00:00Z"));
        let users: Vec<String> = day.iter().map(|x| x.user.to_string()).collect();
        assert_eq!(users, ["a", "o1", "o2", "o1", "a"]);
        assert_eq!(s.override_schedule(ts("2026-01-01T00:00Z"), ts("2026-01-05T00:00Z")).len(), 3);
        assert_eq!(who(&s, "2025-12-31T23:59Z"), None, "before the first handoff");
    }

    #[test]
    fn restriction_edge_inside_a_dst_gap() {
        // Window 02:30..04:00 on Sunday: on 2026-03-29 in Berlin, 02:30 does not exist; the
        // window opens when the clock jumps to 03:00.
        let mut s = schedule("Europe/Berlin", "1w", "2026-03-01T00:00", &["a"]);
        s.layers[0].restrictions = vec![WeekWindow { start: 6 * DAY_SECS + 2 * 3600 + 1800, length: 5400 }];
        let shifts = s.final_schedule(ts("2026-03-28T00:00Z"), ts("2026-03-30T00:00Z"));
        assert_eq!(
            shifts,
            [Shift { user: UserName::new("a"), start: ts("2026-03-29T01:00Z"), end: ts("2026-03-29T02:00Z") }]
        );
        let shifts = s.final_schedule(ts("2026-10-24T00:00Z"), ts("2026-10-26T00:00Z"));
        // 02:30..04:00 on the fall-back Sunday, read on the wall clock: from 02:30 +02 (00:30Z)
        // until the clock falls back to 02:00 +01 (01:00Z), and again from 02:30 +01 (01:30Z)
        // to 04:00 +01 (03:00Z).
        let a = UserName::new("a");
        assert_eq!(
            shifts,
            [
                Shift { user: a.clone(), start: ts("2026-10-25T00:30Z"), end: ts("2026-10-25T01:00Z") },
                Shift { user: a, start: ts("2026-10-25T01:30Z"), end: ts("2026-10-25T03:00Z") },
            ]
        );
    }

    #[test]
    fn long_windows_are_cut() {
        let s = schedule("UTC", "1h", "2026-01-01T00:00", &["a", "b"]);
        let shifts = s.final_schedule(ts("2026-01-01T00:00Z"), ts("2036-01-01T00:00Z"));
        assert_eq!(shifts.len(), 400 * 24);
        assert!(s.final_schedule(ts("2026-01-02T00:00Z"), ts("2026-01-01T00:00Z")).is_empty());
    }
}
