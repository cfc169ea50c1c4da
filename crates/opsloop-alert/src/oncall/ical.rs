//! iCalendar (RFC 5545) feeds of on-call shifts, one per schedule and one per user, for a
//! calendar app to subscribe to.
//!
//! Times are written in UTC (`…Z`): every client reads them, and no `VTIMEZONE` has to be
//! written (the shifts already carry the schedule zone's DST in their instants). Lines end in
//! CRLF and are folded at 75 octets without splitting a UTF-8 character; text is escaped as
//! section 3.3.11 says. The UID of a shift is derived from the schedule, the user and its
//! times, so a refreshed feed updates events instead of duplicating them.

use jiff::Timestamp;

use super::config::{OncallConfig, Schedule};
use super::schedule::Shift;

const PRODID: &str = "-//opsloop//on-call//EN";

/// One event of a feed.
struct Event<'a> {
    schedule: &'a str,
    shift: Shift,
}

/// The feed of a schedule's final shifts in `[from, to)`; `generated` is the DTSTAMP.
pub fn schedule_feed(schedule: &Schedule, from: Timestamp, to: Timestamp, generated: Timestamp) -> String {
    let events: Vec<Event<'_>> =
        schedule.final_schedule(from, to).into_iter().map(|shift| Event { schedule: &schedule.name, shift }).collect();
    calendar(&format!("On call: {}", schedule.name), &events, generated)
}

/// The feed of one user's shifts in every schedule in `[from, to)`; `None` for an unknown user.
pub fn user_feed(
    config: &OncallConfig,
    user: &str,
    from: Timestamp,
    to: Timestamp,
    generated: Timestamp,
) -> Option<String> {
    let user = &config.user(user)?.name;
    let mut events: Vec<Event<'_>> = config
        .schedules
        .iter()
        .flat_map(|s| {
            s.final_schedule(from, to)
                .into_iter()
                .filter(|shift| shift.user == *user)
                .map(move |shift| Event { schedule: &s.name, shift })
        })
        .collect();
    events.sort_by_key(|e| e.shift.start);
    Some(calendar(&format!("On call: {user}"), &events, generated))
}

fn calendar(name: &str, events: &[Event<'_>], generated: Timestamp) -> String {
    let mut out = String::new();
    let stamp = utc(generated);
    line(&mut out, "BEGIN:VCALENDAR");
    line(&mut out, "VERSION:2.0");
    line(&mut out, &format!("PRODID:{PRODID}"));
    line(&mut out, "CALSCALE:GREGORIAN");
    line(&mut out, "METHOD:PUBLISH");
    line(&mut out, &format!("X-WR-CALNAME:{}", escape(name)));
    for event in events {
        let Shift { user, start, end } = &event.shift;
        line(&mut out, "BEGIN:VEVENT");
        line(
            &mut out,
            &format!(
                "UID:{}-{}-{}-{}@opsloop",
                escape(event.schedule),
                escape(user.as_str()),
                start.as_second(),
                end.as_second()
            ),
        );
        line(&mut out, &format!("DTSTAMP:{stamp}"));
        line(&mut out, &format!("DTSTART:{}", utc(*start)));
        line(&mut out, &format!("DTEND:{}", utc(*end)));
        line(&mut out, &format!("SUMMARY:{}", escape(&format!("On call: {user} ({})", event.schedule))));
        line(
            &mut out,
            &format!("DESCRIPTION:{}", escape(&format!("{user} is on call for schedule {}.", event.schedule))),
        );
        line(&mut out, "TRANSP:TRANSPARENT");
        line(&mut out, "END:VEVENT");
    }
    line(&mut out, "END:VCALENDAR");
    out
}

/// `20260328T090000Z`.
fn utc(at: Timestamp) -> String {
    at.strftime("%Y%m%dT%H%M%SZ").to_string()
}

/// TEXT escaping (RFC 5545 3.3.11); other control characters are dropped, as TEXT may not
/// hold them.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            ';' => out.push_str("\\;"),
            ',' => out.push_str("\\,"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// Appends a content line folded at 75 octets (RFC 5545 3.1): continuation lines start with a
/// space, which counts toward their 75.
fn line(out: &mut String, content: &str) {
    let mut width = 0;
    for c in content.chars() {
        let len = c.len_utf8();
        if width + len > 75 {
            out.push_str("\r\n ");
            width = 1;
        }
        out.push(c);
        width += len;
    }
    out.push_str("\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_keeps_lines_short_and_characters_whole() {
        let mut out = String::new();
        let long = format!("SUMMARY:{}", "äöü€x".repeat(40));
        line(&mut out, &long);
        for l in out.split_terminator("\r\n") {
            assert!(l.len() <= 75, "{} octets: {l}", l.len());
        }
        let unfolded = out.trim_end_matches("\r\n").replace("\r\n ", "");
        assert_eq!(unfolded, long);
        assert_eq!(escape("a,b;c\\d\ne"), "a\\,b\\;c\\\\d\\ne");
    }
}
