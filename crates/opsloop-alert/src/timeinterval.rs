//! Alertmanager's time intervals (`timeinterval` package of 0.25): named sets of times of day,
//! weekdays, days of the month, months and years in a time zone, that mute a route
//! (`mute_time_intervals`) or are the only times it notifies (`active_time_intervals`).

use jiff::Timestamp;
use jiff::tz::TimeZone;

/// `[begin, end]`, both inclusive, as Alertmanager's ranges are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InclusiveRange {
    pub begin: i32,
    pub end: i32,
}

/// Minutes of the day, `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeRange {
    pub start_minute: i32,
    pub end_minute: i32,
}

/// One `time_intervals` entry; an absent field places no restriction.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TimeInterval {
    pub times: Option<Vec<TimeRange>>,
    /// Sunday is 0, as in Go.
    pub weekdays: Option<Vec<InclusiveRange>>,
    /// Negative days count from the end of the month (-1 is the last day).
    pub days_of_month: Option<Vec<InclusiveRange>>,
    pub months: Option<Vec<InclusiveRange>>,
    pub years: Option<Vec<InclusiveRange>>,
    /// The zone the other fields are read in; UTC when absent.
    pub location: Option<TimeZone>,
}

/// A named list of intervals (`time_intervals: [{name, time_intervals}]`).
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTimeInterval {
    pub name: String,
    pub intervals: Vec<TimeInterval>,
}

impl NamedTimeInterval {
    /// Whether `at` falls in any of the intervals.
    pub fn contains(&self, at: Timestamp) -> bool {
        self.intervals.iter().any(|i| i.contains(at))
    }
}

fn in_ranges(ranges: &[InclusiveRange], value: i32) -> bool {
    ranges.iter().any(|r| value >= r.begin && value <= r.end)
}

impl TimeInterval {
    /// `TimeInterval.ContainsTime`.
    pub fn contains(&self, at: Timestamp) -> bool {
        let tz = self.location.clone().unwrap_or(TimeZone::UTC);
        let t = at.to_zoned(tz);
        if let Some(times) = &self.times {
            let minute = i32::from(t.hour()) * 60 + i32::from(t.minute());
            if !times.iter().any(|r| minute >= r.start_minute && minute < r.end_minute) {
                return false;
            }
        }
        if let Some(days) = &self.days_of_month {
            let in_month = i32::from(t.days_in_month());
            let day = i32::from(t.day());
            let found = days.iter().any(|r| {
                let begin = if r.begin < 0 { in_month + r.begin + 1 } else { r.begin };
                let end = if r.end < 0 { in_month + r.end + 1 } else { r.end };
                // A range starting after this month's last day does not apply to it.
                if begin > in_month {
                    return false;
                }
                let begin = begin.clamp(-in_month, in_month);
                let end = end.clamp(-in_month, in_month);
                day >= begin && day <= end
            });
            if !found {
                return false;
            }
        }
        if let Some(months) = &self.months
            && !in_ranges(months, i32::from(t.month()))
        {
            return false;
        }
        if let Some(weekdays) = &self.weekdays
            && !in_ranges(weekdays, i32::from(t.weekday().to_sunday_zero_offset()))
        {
            return false;
        }
        if let Some(years) = &self.years
            && !in_ranges(years, i32::from(t.year()))
        {
            return false;
        }
        true
    }
}

pub(crate) const WEEKDAYS: [&str; 7] = ["sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"];
pub(crate) const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

/// `HH:MM` (or `24:00`) as minutes of the day.
pub(crate) fn parse_clock(text: &str) -> Option<i32> {
    if text == "24:00" {
        return Some(24 * 60);
    }
    let (h, m) = text.split_once(':')?;
    if h.len() != 2 || m.len() != 2 || !h.bytes().chain(m.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    (h <= 23 && m <= 59).then_some(h * 60 + m)
}

/// `a:b` or `a` with `parse` for each end.
pub(crate) fn parse_range(text: &str, parse: impl Fn(&str) -> Result<i32, String>) -> Result<InclusiveRange, String> {
    match text.split_once(':') {
        Some((a, b)) => Ok(InclusiveRange { begin: parse(a)?, end: parse(b)? }),
        None => {
            let v = parse(text)?;
            Ok(InclusiveRange { begin: v, end: v })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    #[test]
    fn business_hours_in_a_zone() {
        let ti = TimeInterval {
            times: Some(vec![TimeRange { start_minute: 9 * 60, end_minute: 17 * 60 }]),
            weekdays: Some(vec![InclusiveRange { begin: 1, end: 5 }]),
            location: Some(TimeZone::get("Europe/Berlin").unwrap()),
            ..TimeInterval::default()
        };
        // 2024-01-08 is a Monday; 08:30 UTC is 09:30 in Berlin.
        assert!(ti.contains(ts("2024-01-08T08:30:00Z")));
        assert!(!ti.contains(ts("2024-01-08T07:30:00Z")));
        assert!(!ti.contains(ts("2024-01-07T10:00:00Z")), "Sunday");
    }

    #[test]
    fn negative_days_count_from_the_month_end() {
        let ti = TimeInterval {
            days_of_month: Some(vec![InclusiveRange { begin: -1, end: -1 }]),
            ..TimeInterval::default()
        };
        assert!(ti.contains(ts("2024-02-29T12:00:00Z")));
        assert!(!ti.contains(ts("2024-02-28T12:00:00Z")));
        assert_eq!(parse_clock("24:00"), Some(1440));
        assert_eq!(parse_clock("9:00"), None);
    }
}
