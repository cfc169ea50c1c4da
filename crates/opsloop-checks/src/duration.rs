//! Go's `time.ParseDuration`, because Gatus's files are read by it: `interval: 1m30s`,
//! `timeout: 500ms`, and `[CERTIFICATE_EXPIRATION] > 48h` on a condition's right side. Days
//! are not a Go unit, so `2d` is refused here as Gatus refuses it.

use std::time::Duration;

/// Nanoseconds per unit, longest unit names first so `ms` is not read as `m` then `s`.
const UNITS: &[(&str, f64)] =
    &[("ns", 1.0), ("us", 1e3), ("µs", 1e3), ("μs", 1e3), ("ms", 1e6), ("s", 1e9), ("m", 60e9), ("h", 3600e9)];

/// A signed Go duration in nanoseconds: `1h30m`, `1.5h`, `-2s`, `0`. `None` when Go refuses it.
pub fn parse_go_nanos(text: &str) -> Option<i128> {
    let (negative, mut rest) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let number_len = rest.bytes().take_while(|b| b.is_ascii_digit() || *b == b'.').count();
        let number = &rest[..number_len];
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return None;
        }
        let value: f64 = number.parse().ok()?;
        rest = &rest[number_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        let (_, nanos) = UNITS.iter().find(|(name, _)| *name == unit)?;
        total += value * nanos;
        rest = &rest[unit_len..];
    }
    // Go refuses durations beyond int64 nanoseconds (about 292 years).
    if total > i64::MAX as f64 {
        return None;
    }
    let nanos = total.round() as i128;
    Some(if negative { -nanos } else { nanos })
}

/// A non-negative Go duration, for intervals and timeouts.
pub fn parse_go_duration(text: &str) -> Option<Duration> {
    let nanos = parse_go_nanos(text)?;
    u64::try_from(nanos).ok().map(Duration::from_nanos)
}

/// A duration the way Go prints one (`1m30s`, `500ms`, `0s`), for messages and JSON.
pub fn format_go(duration: Duration) -> String {
    let nanos = duration.as_nanos();
    if nanos == 0 {
        return "0s".to_owned();
    }
    if nanos < 1_000_000_000 {
        let (value, unit) = if nanos < 1_000 {
            return format!("{nanos}ns");
        } else if nanos < 1_000_000 {
            (nanos as f64 / 1e3, "µs")
        } else {
            (nanos as f64 / 1e6, "ms")
        };
        return format!("{}{unit}", trim_float(value));
    }
    let total_secs = duration.as_secs();
    let (hours, minutes) = (total_secs / 3600, (total_secs / 60) % 60);
    let seconds = (total_secs % 60) as f64 + f64::from(duration.subsec_nanos()) / 1e9;
    let mut out = String::new();
    if hours > 0 {
        out.push_str(&format!("{hours}h"));
    }
    if hours > 0 || minutes > 0 {
        out.push_str(&format!("{minutes}m"));
    }
    out.push_str(&format!("{}s", trim_float(seconds)));
    out
}

fn trim_float(value: f64) -> String {
    let text = format!("{value:.9}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("48h"), Some(Duration::from_secs(48 * 3600)));
        assert_eq!(parse_go_duration("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_go_duration("1.5h"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_go_duration("300ms"), Some(Duration::from_millis(300)));
        assert_eq!(parse_go_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_go_nanos("-2s"), Some(-2_000_000_000));
        for bad in ["", "10", "2d", "s", "1..5s", "1h x", "-"] {
            assert_eq!(parse_go_nanos(bad), None, "{bad}");
        }
        assert_eq!(parse_go_duration("-1s"), None);
        assert_eq!(format_go(Duration::from_secs(90)), "1m30s");
        assert_eq!(format_go(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_go(Duration::from_millis(250)), "250ms");
        assert_eq!(format_go(Duration::from_secs(7200)), "2h0m0s");
    }
}
