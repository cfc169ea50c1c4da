//! Gatus's conditions (`[STATUS] == 200`, `[BODY].data[0].id == pat(ab*)`,
//! `[CERTIFICATE_EXPIRATION] > 48h`), parsed once when the file is read and evaluated the way
//! Gatus's `condition.go` does, down to its quirks: operators are tried in the order `==`,
//! `!=`, `<=`, `>=`, `>`, `<` and need a space on each side; equality compares integers as
//! integers (`0x10 == 16`) and everything else as text; ordering reads Go durations as
//! milliseconds, then integers, then floats truncated, and anything else as 0; a failed
//! condition is shown with what its placeholders resolved to, `[STATUS] (503) == 200`.
//!
//! Stricter than Gatus where Gatus is silent: a misspelt placeholder (`[STATU]`), a malformed
//! JSON path or `len()` of something that is not `[BODY]` are errors when the file is read,
//! not a check that quietly compares the literal text `[STATU]` forever.

use opsloop_config::diagnostic::nearest;
use serde_json::Value as Json;

use crate::result::{ConditionResult, Observation};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operator {
    Equal,
    NotEqual,
    LessOrEqual,
    GreaterOrEqual,
    Greater,
    Less,
}

impl Operator {
    pub fn symbol(self) -> &'static str {
        match self {
            Operator::Equal => "==",
            Operator::NotEqual => "!=",
            Operator::LessOrEqual => "<=",
            Operator::GreaterOrEqual => ">=",
            Operator::Greater => ">",
            Operator::Less => "<",
        }
    }
}

/// Gatus's order of trying: `a <= b` must not be read as `a < = b`.
const OPERATORS: [(Operator, &str); 6] = [
    (Operator::Equal, " == "),
    (Operator::NotEqual, " != "),
    (Operator::LessOrEqual, " <= "),
    (Operator::GreaterOrEqual, " >= "),
    (Operator::Greater, " > "),
    (Operator::Less, " < "),
];

/// The placeholders Gatus knows, without their brackets.
pub const PLACEHOLDERS: &[&str] =
    &["STATUS", "RESPONSE_TIME", "BODY", "IP", "CONNECTED", "CERTIFICATE_EXPIRATION", "DNS_RCODE", "DOMAIN_EXPIRATION"];

const BODY: &str = "[BODY]";
/// What Gatus appends to an operand whose JSON path did not resolve.
const INVALID_SUFFIX: &str = "(INVALID)";

/// A parsed condition; [`Condition::text`] is what the user wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    text: String,
    operator: Operator,
    left: String,
    right: String,
}

/// Why a condition was refused; `offset` is the byte in the condition's text it points at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ConditionError {
    pub message: String,
    pub offset: usize,
    pub hint: Option<String>,
}

impl ConditionError {
    fn new(message: impl Into<String>, offset: usize) -> Self {
        ConditionError { message: message.into(), offset, hint: None }
    }
    fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// How a condition's outcome is shown (Gatus's `ui.dont-resolve-failed-conditions` and
/// `ui.resolve-successful-conditions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Display {
    pub dont_resolve_failed: bool,
    pub resolve_successful: bool,
}

impl Condition {
    pub fn parse(text: &str) -> Result<Condition, ConditionError> {
        let Some((operator, symbol, at)) =
            OPERATORS.iter().find_map(|(op, symbol)| text.find(symbol).map(|at| (*op, *symbol, at)))
        else {
            let hint = if ["==", "!=", "<=", ">=", "<", ">"].iter().any(|op| text.contains(op)) {
                "put a space on each side of the operator, e.g. `[STATUS] == 200`"
            } else {
                "a condition compares two sides with ==, !=, <, <=, > or >=, e.g. `[STATUS] == 200`"
            };
            return Err(ConditionError::new(format!("invalid condition `{text}`: no operator"), 0).hint(hint));
        };
        let rest = &text[at + symbol.len()..];
        if rest.contains(symbol) {
            return Err(ConditionError::new(
                format!("invalid condition `{text}`: `{}` appears more than once", symbol.trim()),
                at + symbol.len() + rest.find(symbol).unwrap_or(0),
            ));
        }
        let left_raw = &text[..at];
        let left = left_raw.trim();
        let right = rest.trim();
        let left_offset = left_raw.len() - left_raw.trim_start().len();
        let right_offset = at + symbol.len() + (rest.len() - rest.trim_start().len());
        if left.is_empty() || right.is_empty() {
            let offset = if left.is_empty() { 0 } else { right_offset };
            return Err(ConditionError::new(format!("invalid condition `{text}`: a side is empty"), offset));
        }
        validate_operand(left, left_offset)?;
        validate_operand(right, right_offset)?;
        Ok(Condition { text: text.to_owned(), operator, left: left.to_owned(), right: right.to_owned() })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn operator(&self) -> Operator {
        self.operator
    }

    /// Whether evaluating needs the response body (a probe may skip reading it otherwise,
    /// as Gatus does).
    pub fn uses_body(&self) -> bool {
        self.left.contains(BODY) || self.right.contains(BODY) || self.uses(BODY)
    }

    /// Whether either side is exactly this placeholder (any case, as Gatus matches them).
    pub fn uses(&self, placeholder: &str) -> bool {
        self.left.eq_ignore_ascii_case(placeholder) || self.right.eq_ignore_ascii_case(placeholder)
    }

    /// Evaluates against what a probe saw; `now_ms` dates `[CERTIFICATE_EXPIRATION]`.
    /// Returns the result as Gatus shows it and the errors resolving added (bad JSON).
    pub fn evaluate(&self, seen: &Observation, now_ms: i64, display: Display) -> (ConditionResult, Vec<String>) {
        let body_text = String::from_utf8_lossy(&seen.body);
        let body = body_text.trim();
        let mut errors = Vec::new();
        let params = [self.left.as_str(), self.right.as_str()];
        let resolved = params.map(|p| resolve(p, seen, body, now_ms, &mut errors));
        let symbol = self.operator.symbol();
        let (success, pretty) = match self.operator {
            Operator::Equal | Operator::NotEqual => {
                let equal = is_equal(&resolved[0], &resolved[1]);
                let success = if self.operator == Operator::Equal { equal } else { !equal };
                (success, prettify(params, [resolved[0].as_str(), resolved[1].as_str()], symbol))
            }
            _ => {
                let numbers = [to_number(&resolved[0]), to_number(&resolved[1])];
                let success = match self.operator {
                    Operator::LessOrEqual => numbers[0] <= numbers[1],
                    Operator::GreaterOrEqual => numbers[0] >= numbers[1],
                    Operator::Greater => numbers[0] > numbers[1],
                    _ => numbers[0] < numbers[1],
                };
                // Gatus shows the numbers it compared, so a `48h` shows as its milliseconds.
                let shown = [numbers[0].to_string(), numbers[1].to_string()];
                let shown = [
                    if resolved[0].ends_with(INVALID_SUFFIX) { resolved[0].clone() } else { shown[0].clone() },
                    if resolved[1].ends_with(INVALID_SUFFIX) { resolved[1].clone() } else { shown[1].clone() },
                ];
                (success, prettify(params, [shown[0].as_str(), shown[1].as_str()], symbol))
            }
        };
        let resolve_shown = if success { display.resolve_successful } else { !display.dont_resolve_failed };
        let condition = if resolve_shown { pretty } else { self.text.clone() };
        (ConditionResult { condition, success }, errors)
    }
}

fn validate_operand(operand: &str, offset: usize) -> Result<(), ConditionError> {
    for function in ["len(", "has("] {
        if let Some(inner) = operand.strip_prefix(function).and_then(|rest| rest.strip_suffix(')')) {
            if !inner.starts_with(BODY) {
                return Err(ConditionError::new(
                    format!("`{}` works only on `[BODY]`, not on `{inner}`", &function[..3]),
                    offset + function.len(),
                )
                .hint(format!("e.g. `{function}[BODY].items)`")));
            }
            return validate_body(inner, offset + function.len());
        }
    }
    if ["pat(", "any("].iter().any(|f| operand.starts_with(f)) && operand.ends_with(')') {
        return Ok(());
    }
    if operand.starts_with(BODY) {
        return validate_body(operand, offset);
    }
    if operand.contains(BODY) {
        return Err(ConditionError::new(
            "`[BODY]` must start the operand it is in",
            offset + operand.find(BODY).unwrap_or(0),
        ));
    }
    let Some(inner) = operand.strip_prefix('[') else { return Ok(()) };
    let Some(close) = inner.find(']') else { return Ok(()) };
    let name = &inner[..close];
    let upper = name.to_ascii_uppercase();
    if PLACEHOLDERS.contains(&upper.as_str()) {
        if upper == "DOMAIN_EXPIRATION" {
            return Err(ConditionError::new("`[DOMAIN_EXPIRATION]` is not supported by opsloop", offset).hint(
                "it needs WHOIS/RDAP lookups; check the domain's expiry elsewhere, or use [CERTIFICATE_EXPIRATION]",
            ));
        }
        if close + 2 != operand.len() {
            return Err(ConditionError::new(
                format!("`[{name}]` takes no JSON path (only `[BODY]` does, in capitals)"),
                offset + close + 2,
            ));
        }
        return Ok(());
    }
    let looks_like_placeholder = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphabetic() || c == '_');
    if looks_like_placeholder {
        let error = ConditionError::new(format!("unknown placeholder `[{name}]`"), offset);
        return Err(match nearest(&upper, PLACEHOLDERS) {
            Some(meant) => error.hint(format!("did you mean `[{meant}]`?")),
            None if name != upper && PLACEHOLDERS.contains(&upper.as_str()) => error,
            None => error.hint(format!(
                "placeholders are {}",
                PLACEHOLDERS.iter().map(|p| format!("[{p}]")).collect::<Vec<_>>().join(", ")
            )),
        });
    }
    Ok(())
}

fn validate_body(operand: &str, offset: usize) -> Result<(), ConditionError> {
    let path = &operand[BODY.len()..];
    parse_path(path).map(|_| ()).map_err(|(reason, at)| {
        ConditionError::new(format!("invalid JSON path `{operand}`: {reason}"), offset + BODY.len() + at)
    })
}

/// One step of a JSON path: `.key` or `[index]`.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Key(String),
    Index(usize),
}

/// The path after `[BODY]`: `.a.b[0].c`, `[0].id`, or nothing (the whole body).
fn parse_path(path: &str) -> Result<Vec<Segment>, (String, usize)> {
    let bytes = path.as_bytes();
    let mut segments = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'.' => {
                let start = i + 1;
                let end = path[start..].find(['.', '[']).map_or(path.len(), |n| start + n);
                if end == start {
                    return Err(("empty key".to_owned(), i));
                }
                segments.push(Segment::Key(path[start..end].to_owned()));
                i = end;
            }
            b'[' => {
                let Some(close) = path[i..].find(']').map(|n| i + n) else {
                    return Err(("`[` without `]`".to_owned(), i));
                };
                let index = path[i + 1..close]
                    .parse::<usize>()
                    .map_err(|_| (format!("`[{}]` is not an array index", &path[i + 1..close]), i))?;
                segments.push(Segment::Index(index));
                i = close + 1;
            }
            _ => return Err(("expected `.key` or `[index]`".to_owned(), i)),
        }
    }
    Ok(segments)
}

/// One operand to text, as Gatus's `sanitizeAndResolve`.
fn resolve(operand: &str, seen: &Observation, body: &str, now_ms: i64, errors: &mut Vec<String>) -> String {
    match operand.to_ascii_uppercase().as_str() {
        "[STATUS]" => return seen.status.unwrap_or(0).to_string(),
        "[IP]" => return seen.ip.map(|ip| ip.to_string()).unwrap_or_default(),
        "[RESPONSE_TIME]" => return seen.duration.as_millis().to_string(),
        "[BODY]" => return body.to_owned(),
        "[DNS_RCODE]" => return seen.dns_rcode.clone().unwrap_or_default(),
        "[CONNECTED]" => return seen.connected.to_string(),
        "[CERTIFICATE_EXPIRATION]" => {
            return seen.cert_not_after_ms.map_or(0, |not_after| not_after.saturating_sub(now_ms)).to_string();
        }
        _ => {}
    }
    if !operand.contains(BODY) {
        return operand.to_owned();
    }
    let mut element = operand;
    let mut length = false;
    let mut existence = false;
    if let Some(inner) = element.strip_prefix("len(").and_then(|e| e.strip_suffix(')')) {
        length = true;
        element = inner;
    } else if let Some(inner) = element.strip_prefix("has(").and_then(|e| e.strip_suffix(')')) {
        existence = true;
        element = inner;
    }
    let path = element.strip_prefix(BODY).unwrap_or(element);
    match eval_path(path, body) {
        Ok((_, len)) if length => len.to_string(),
        Ok(_) if existence => "true".to_owned(),
        Ok((value, _)) => value,
        Err(_) if existence => "false".to_owned(),
        Err(error) => {
            // Gatus keeps quiet about an empty body ("unexpected end of JSON input").
            if !body.is_empty() {
                errors.push(error);
            }
            if length { format!("len({element}) {INVALID_SUFFIX}") } else { format!("{element} {INVALID_SUFFIX}") }
        }
    }
}

/// The value at `path` in a JSON body, as text, and its length (elements of an array,
/// bytes otherwise), as Gatus's `jsonpath.Eval`.
fn eval_path(path: &str, body: &str) -> Result<(String, usize), String> {
    if path.is_empty() && !(body.starts_with('[') && body.ends_with(']')) {
        return Ok((body.to_owned(), body.len()));
    }
    let segments = parse_path(path).map_err(|(reason, _)| reason)?;
    let root: Json = serde_json::from_str(body).map_err(|e| format!("invalid JSON in the body: {e}"))?;
    let mut value = &root;
    for segment in &segments {
        let next = match (segment, value) {
            (Segment::Key(key), Json::Object(map)) => map.get(key),
            (Segment::Index(index), Json::Array(items)) => items.get(*index),
            _ => None,
        };
        value = match next {
            Some(next) => next,
            None => {
                let at = match segment {
                    Segment::Key(key) => key.clone(),
                    Segment::Index(index) => format!("[{index}]"),
                };
                return Err(format!("couldn't walk through '{path}', because '{at}' was null, or doesn't exist"));
            }
        };
    }
    match value {
        Json::Null => Err(format!("couldn't walk through '{path}', because it was null, or doesn't exist")),
        Json::String(text) => Ok((text.clone(), text.len())),
        Json::Array(items) => Ok((go_format(value), items.len())),
        Json::Object(_) => {
            let text = value.to_string();
            let len = text.len();
            Ok((text, len))
        }
        other => {
            let text = go_format(other);
            let len = text.len();
            Ok((text, len))
        }
    }
}

/// A JSON value as Go's `%v` prints the `interface{}` it decodes to: `[1 a]`, `map[k:v]`.
fn go_format(value: &Json) -> String {
    match value {
        Json::Null => "<nil>".to_owned(),
        Json::Bool(b) => b.to_string(),
        Json::Number(n) => n.to_string(),
        Json::String(s) => s.clone(),
        Json::Array(items) => format!("[{}]", items.iter().map(go_format).collect::<Vec<_>>().join(" ")),
        Json::Object(map) => {
            let mut entries: Vec<String> = map.iter().map(|(k, v)| format!("{k}:{}", go_format(v))).collect();
            entries.sort();
            format!("map[{}]", entries.join(" "))
        }
    }
}

/// Gatus's `prettify`: each side that resolved to something else is followed by its value.
fn prettify(params: [&str; 2], resolved: [&str; 2], symbol: &str) -> String {
    if resolved.iter().any(|r| r.ends_with(INVALID_SUFFIX)) {
        return format!("{} {symbol} {}", resolved[0], resolved[1]);
    }
    let side = |i: usize| {
        if params[i] == resolved[i] { params[i].to_owned() } else { format!("{} ({})", params[i], resolved[i]) }
    };
    format!("{} {symbol} {}", side(0), side(1))
}

/// Gatus's `isEqual`: `pat()` and `any()` on one side, integers as integers, else text.
fn is_equal(first: &str, second: &str) -> bool {
    let function = |text: &str, prefix: &str| -> Option<String> {
        text.strip_prefix(prefix).and_then(|t| t.strip_suffix(')')).map(str::to_owned)
    };
    if first.ends_with(')') || second.ends_with(')') {
        match (function(first, "pat("), function(second, "pat(")) {
            (Some(pattern), None) => return wildcard_match(&pattern, second),
            (None, Some(pattern)) => return wildcard_match(&pattern, first),
            _ => {}
        }
        match (function(first, "any("), function(second, "any(")) {
            (Some(options), None) => return options.split(',').any(|o| o.trim() == second),
            (None, Some(options)) => return options.split(',').any(|o| o.trim() == first),
            _ => {}
        }
    }
    match (parse_go_int(first), parse_go_int(second)) {
        (Some(a), Some(b)) => a == b,
        _ => first == second,
    }
}

/// Gatus's `pattern.Match`: `*` matches any run of characters, everything else itself.
fn wildcard_match(pattern: &str, text: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !text.starts_with(first) || text.len() < first.len() + last.len() || !text.ends_with(last) {
        return false;
    }
    let mut rest = &text[first.len()..text.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// Go's `strconv.ParseInt(text, 0, 64)`: a sign, then `0x`, `0o`, `0b` or a leading `0`
/// (octal) prefix; underscores only after a prefix.
fn parse_go_int(text: &str) -> Option<i64> {
    let (negative, digits) = match text.as_bytes().first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    let lower = digits.to_ascii_lowercase();
    let (radix, body, prefixed) = if let Some(rest) = lower.strip_prefix("0x") {
        (16, rest.to_owned(), true)
    } else if let Some(rest) = lower.strip_prefix("0b") {
        (2, rest.to_owned(), true)
    } else if let Some(rest) = lower.strip_prefix("0o") {
        (8, rest.to_owned(), true)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, lower[1..].to_owned(), true)
    } else {
        (10, lower.clone(), false)
    };
    if body.contains('_') && !prefixed {
        return None;
    }
    let body = body.replace('_', "");
    if body.is_empty() || !body.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    let magnitude = i128::from_str_radix(&body, radix).ok()?;
    i64::try_from(if negative { -magnitude } else { magnitude }).ok()
}

/// Gatus's `sanitizeAndResolveNumerical` for one operand: a non-zero Go duration as
/// milliseconds, else an integer, else a float truncated, else 0.
fn to_number(text: &str) -> i64 {
    if let Some(nanos) = crate::duration::parse_go_nanos(text)
        && nanos != 0
    {
        return i64::try_from(nanos / 1_000_000).unwrap_or(i64::MAX);
    }
    if let Some(n) = parse_go_int(text) {
        return n;
    }
    match text.replace('_', "").parse::<f64>() {
        Ok(f) => f as i64,
        Err(_) => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn eval(condition: &str, seen: &Observation) -> ConditionResult {
        Condition::parse(condition).unwrap().evaluate(seen, 0, Display::default()).0
    }

    fn http(status: i64, body: &str) -> Observation {
        Observation {
            connected: true,
            status: Some(status),
            body: body.as_bytes().to_vec(),
            duration: Duration::from_millis(150),
            ..Observation::default()
        }
    }

    #[test]
    fn status_and_its_display() {
        let ok = eval("[STATUS] == 200", &http(200, ""));
        assert!(ok.success);
        assert_eq!(ok.condition, "[STATUS] == 200");
        let failed = eval("[STATUS] == 200", &http(503, ""));
        assert!(!failed.success);
        assert_eq!(failed.condition, "[STATUS] (503) == 200");
        assert!(eval("[status] == 0xC8", &http(200, "")).success, "case-insensitive placeholder, Go integers");
        assert!(eval("[STATUS] < 300", &http(204, "")).success);
        assert!(!eval("[STATUS] >= 400", &http(204, "")).success);
        assert_eq!(eval("[RESPONSE_TIME] < 100", &http(200, "")).condition, "[RESPONSE_TIME] (150) < 100");
    }

    #[test]
    fn json_paths_len_has() {
        let body = r#"{"data":[{"id":1,"name":"ab"},{"id":2}],"ok":true,"n":1.5,"nested":{"x":"y"},"nil":null}"#;
        let seen = http(200, body);
        assert!(eval("[BODY].data[0].id == 1", &seen).success);
        assert!(eval("[BODY].data[1].id == 2", &seen).success);
        assert!(eval("[BODY].data[0].name == ab", &seen).success);
        assert!(eval("[BODY].ok == true", &seen).success);
        assert!(eval("[BODY].n == 1.5", &seen).success);
        assert!(!eval("[BODY].n > 1", &seen).success, "Gatus truncates floats in comparisons");
        assert!(eval("len([BODY].data) == 2", &seen).success);
        assert!(eval("len([BODY].data[0].name) == 2", &seen).success);
        assert!(eval("has([BODY].nested.x) == true", &seen).success);
        assert!(eval("has([BODY].missing) == false", &seen).success);
        assert!(eval("has([BODY].nil) == false", &seen).success);
        assert!(eval(r#"[BODY].nested == {"x":"y"}"#, &seen).success);
        let failed = Condition::parse("[BODY].data[5].id == 1").unwrap().evaluate(&seen, 0, Display::default());
        assert_eq!(failed.0.condition, "[BODY].data[5].id (INVALID) == 1");
        assert_eq!(failed.1.len(), 1);
        let top_array = http(200, r#"[{"id":7}]"#);
        assert!(eval("[BODY][0].id == 7", &top_array).success);
        assert!(eval("len([BODY]) == 1", &top_array).success);
        assert!(eval("[BODY] == pong", &http(200, " pong\n")).success);
        assert!(eval("len([BODY]) == 4", &http(200, "pong")).success);
        let not_json = Condition::parse("[BODY].a == 1").unwrap().evaluate(&http(200, ""), 0, Display::default());
        assert!(not_json.1.is_empty(), "an empty body adds no error, as in Gatus");
    }

    #[test]
    fn functions_and_others() {
        let seen = Observation {
            ip: Some("127.0.0.1".parse().unwrap()),
            connected: true,
            dns_rcode: Some("NOERROR".into()),
            ..Observation::default()
        };
        assert!(eval("[IP] == pat(127.0.*)", &seen).success);
        assert!(eval("pat(*.0.0.1) == [IP]", &seen).success);
        assert!(!eval("[IP] == pat(10.*)", &seen).success);
        assert!(eval("[IP] == any(::1, 127.0.0.1)", &seen).success);
        assert!(eval("[IP] != any(::1, 10.0.0.1)", &seen).success);
        assert!(eval("[CONNECTED] == true", &seen).success);
        assert!(eval("[DNS_RCODE] == NOERROR", &seen).success);
        assert!(wildcard_match("a*b*c", "axxbyyc") && !wildcard_match("a*b", "ac") && wildcard_match("*", ""));
    }

    #[test]
    fn certificate_expiration_against_durations() {
        let day = 86_400_000;
        let seen = Observation { cert_not_after_ms: Some(5 * day), ..Observation::default() };
        assert!(eval("[CERTIFICATE_EXPIRATION] > 48h", &seen).success);
        let failed = eval("[CERTIFICATE_EXPIRATION] > 240h", &seen);
        assert!(!failed.success);
        assert_eq!(failed.condition, "[CERTIFICATE_EXPIRATION] (432000000) > 240h (864000000)");
        let none = eval("[CERTIFICATE_EXPIRATION] > 1h", &Observation::default());
        assert!(!none.success, "no certificate is 0, as in Gatus");
    }

    #[test]
    fn display_settings() {
        let c = Condition::parse("[STATUS] == 200").unwrap();
        let hide = Display { dont_resolve_failed: true, resolve_successful: false };
        assert_eq!(c.evaluate(&http(500, ""), 0, hide).0.condition, "[STATUS] == 200");
        let show = Display { dont_resolve_failed: false, resolve_successful: true };
        assert_eq!(c.evaluate(&http(200, ""), 0, show).0.condition, "[STATUS] (200) == 200");
    }

    #[test]
    fn malformed_conditions_are_refused_with_hints() {
        let e = Condition::parse("[STATU] == 200").unwrap_err();
        assert_eq!(e.message, "unknown placeholder `[STATU]`");
        assert_eq!(e.hint.as_deref(), Some("did you mean `[STATUS]`?"));
        assert_eq!(e.offset, 0);
        let e = Condition::parse("200 == [RESPONSETIME]").unwrap_err();
        assert_eq!((e.offset, e.hint.as_deref()), (7, Some("did you mean `[RESPONSE_TIME]`?")));
        assert!(Condition::parse("[STATUS]==200").unwrap_err().hint.unwrap().contains("space"));
        assert!(Condition::parse("[STATUS] 200").is_err());
        assert!(Condition::parse("[BODY].a..b == 1").is_err());
        assert!(Condition::parse("[BODY].a[x] == 1").is_err());
        assert!(Condition::parse("len([STATUS]) == 1").is_err());
        assert!(Condition::parse("[STATUS].x == 1").is_err());
        assert!(Condition::parse("[DOMAIN_EXPIRATION] > 720h").unwrap_err().message.contains("not supported"));
        assert!(Condition::parse("[BODY] == [1 2]").is_ok(), "a literal in brackets is not a placeholder");
        assert!(Condition::parse("[BODY].items[0].name == pat(*x*)").is_ok());
    }

    #[test]
    fn numbers_as_gatus_reads_them() {
        assert_eq!(to_number("48h"), 172_800_000);
        assert_eq!(to_number("1.9"), 1);
        assert_eq!(to_number("abc"), 0);
        assert_eq!(to_number("0x10"), 16);
        assert_eq!(parse_go_int("010"), Some(8));
        assert_eq!(parse_go_int("1_000"), None);
        assert!(is_equal("200", "0200") == (parse_go_int("0200") == Some(200)));
    }
}
