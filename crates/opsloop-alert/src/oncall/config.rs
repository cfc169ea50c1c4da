//! On-call as code: users and how to reach them, schedules (layers of rotations with
//! restrictions, and overrides), and escalation policies — the file given to
//! `opsloop serve --oncall-config FILE`, or the `oncall:` section of a project's `opsloop.yml`.
//!
//! Read on opsloop-config's YAML tree, like the metrics engine reads `prometheus.yml`: every
//! problem (unknown keys, unknown users or schedules, bad time zones or durations, empty
//! rotations) is reported at file:line:column, all at once, with a hint where one helps.
//!
//! ```yaml
//! users:
//!   - name: alice
//!     email: alice@example.com
//!     contact: [{webhook: "https://hooks.example.com/alice"}]
//!     notification_rules: [{contact: email, after: 0m}, {contact: webhook, after: 5m}]
//! schedules:
//!   - name: primary
//!     timezone: Europe/Berlin
//!     layers:
//!       - name: weekly
//!         rotation: 1w
//!         handoff: 2026-03-23T09:00
//!         users: [alice, bob]
//!         restrictions: [{days: [mon, tue, wed, thu, fri], start: "09:00", end: "17:00"}]
//! overrides:
//!   - {schedule: primary, user: bob, start: 2026-03-28T00:00+01:00, end: 2026-03-29T00:00+01:00}
//! escalation_policies:
//!   - name: default
//!     repeat: 2
//!     levels:
//!       - {targets: ["schedule:primary"], after: 0m}
//!       - {targets: ["user:alice"], after: 15m}
//! ```
//!
//! A level's `after` is the delay between the previous level's page and this level's page (for
//! the first level: between the trigger, or the start of a repeat, and its page). So the
//! example pages `primary` at once and Alice 15 minutes later. After the last level the policy
//! starts over `repeat_after` (default 30m) later, `repeat` more times.

use std::path::Path;

use jiff::civil::{DateTime, Time};
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp};
use opsloop_config::diagnostic::{Diagnostic, Sources, nearest};
use opsloop_config::yaml::{self, Key, Node, Span, Value};
use serde::{Deserialize, Serialize};

/// How long after the last level a policy with `repeat` starts over, when not written.
/// PagerDuty's default escalation timeout.
pub const DEFAULT_REPEAT_AFTER: SignedDuration = SignedDuration::from_mins(30);
/// Rotations shorter than this are refused: shorter shifts are not a rotation people can live
/// with, and DST gaps (an hour) would make consecutive handoffs collide.
pub const MIN_ROTATION: SignedDuration = SignedDuration::from_hours(1);
/// More repeats than this is a typo, not a policy (and bounds the work of a stuck incident).
pub const MAX_REPEAT: u32 = 100;

/// A user's name as written under `users:`; what schedules answer.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct UserName(String);

impl UserName {
    pub fn new(name: impl Into<String>) -> Self {
        UserName(name.into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for UserName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for UserName {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for UserName {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// The whole on-call configuration, checked: every reference resolves.
#[derive(Debug, Clone, Default)]
pub struct OncallConfig {
    pub users: Vec<User>,
    pub schedules: Vec<Schedule>,
    pub escalation_policies: Vec<EscalationPolicy>,
}

impl OncallConfig {
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == *name)
    }
    pub fn schedule(&self, name: &str) -> Option<&Schedule> {
        self.schedules.iter().find(|s| s.name == name)
    }
    pub fn policy(&self, name: &str) -> Option<&EscalationPolicy> {
        self.escalation_policies.iter().find(|p| p.name == name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContactKind {
    Email,
    Webhook,
    Slack,
}

impl ContactKind {
    pub const ALL: [ContactKind; 3] = [ContactKind::Email, ContactKind::Webhook, ContactKind::Slack];

    pub fn as_str(self) -> &'static str {
        match self {
            ContactKind::Email => "email",
            ContactKind::Webhook => "webhook",
            ContactKind::Slack => "slack",
        }
    }

    fn parse(text: &str) -> Option<ContactKind> {
        ContactKind::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// One way to reach a user: an address of a kind.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ContactMethod {
    pub kind: ContactKind,
    pub address: String,
}

/// Notify through every contact method of `contact`'s kind, `after` the user is paged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationRule {
    pub contact: ContactKind,
    pub after: SignedDuration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub name: UserName,
    pub contacts: Vec<ContactMethod>,
    /// Never empty: a user who wrote none is notified through every contact method at once.
    pub notification_rules: Vec<NotificationRule>,
}

#[derive(Debug, Clone)]
pub struct Schedule {
    pub name: String,
    /// The IANA name as written (`Europe/Berlin`), for display and iCal.
    pub timezone_name: String,
    pub timezone: TimeZone,
    /// Bottom first: a later layer wins wherever it has someone on call.
    pub layers: Vec<Layer>,
    /// In file order: a later override wins where two overlap.
    pub overrides: Vec<Override>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    pub name: String,
    /// Measured in the schedule's wall-clock time: a `1d` rotation handing off at 09:00
    /// hands off at 09:00 local every day, whatever DST does.
    pub rotation: SignedDuration,
    /// The first handoff, local to the schedule's zone; before it the layer has nobody.
    pub handoff: DateTime,
    pub users: Vec<UserName>,
    /// Empty: no restriction. Otherwise the layer has someone on call only inside a window.
    pub restrictions: Vec<WeekWindow>,
}

/// A window of local time within the week: `start` and `length` in seconds from Monday 00:00;
/// it may wrap past Sunday night into Monday.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WeekWindow {
    pub start: u32,
    pub length: u32,
}

pub const DAY_SECS: u32 = 24 * 3600;
pub const WEEK_SECS: u32 = 7 * DAY_SECS;

impl WeekWindow {
    pub fn contains(&self, second_of_week: u32) -> bool {
        (second_of_week + WEEK_SECS - self.start % WEEK_SECS) % WEEK_SECS < self.length
    }
}

/// `user` is on call for the schedule in `[start, end)`, whatever the layers say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub user: UserName,
    pub start: Timestamp,
    pub end: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationPolicy {
    pub name: String,
    /// How many more times the whole policy runs when nobody acknowledges (0: once).
    pub repeat: u32,
    /// Delay between the last level's page and the first level's page of the next round.
    pub repeat_after: SignedDuration,
    pub levels: Vec<EscalationLevel>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EscalationLevel {
    pub targets: Vec<Target>,
    /// Delay after the previous level's page (the first level: after the round starts).
    pub after: SignedDuration,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "name", rename_all = "lowercase")]
pub enum Target {
    /// Whoever is on call in the schedule when the level is paged.
    Schedule(String),
    User(UserName),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Schedule(name) => write!(f, "schedule:{name}"),
            Target::User(name) => write!(f, "user:{name}"),
        }
    }
}

pub use opsloop_config::diagnostic::{ConfigError, LoadError};

/// Reads an on-call file (`opsloop serve --oncall-config FILE`).
pub fn load_file(path: &Path) -> Result<OncallConfig, LoadError> {
    opsloop_config::diagnostic::load_file(path, load)
}

/// Parses an on-call file's text; `path` names it in errors.
pub fn load(text: &str, path: &str) -> Result<OncallConfig, ConfigError> {
    let mut sources = Sources::default();
    let file = sources.add(path, text);
    let mut d = Decoder::default();
    let config = match yaml::parse_with_header(text, file) {
        Ok(parsed) => {
            for key in &parsed.duplicates {
                d.error(key.span, format!("key `{}` is already set in this mapping", key.name));
            }
            if parsed.spec.is_some() {
                d.error(parsed.body.span, "an on-call file holds one YAML document");
            }
            d.config(&parsed.body)
        }
        Err(e) => {
            d.error(e.span, format!("invalid YAML: {}", e.message));
            None
        }
    };
    d.finish(config, &sources)
}

/// The `oncall:` section of a file the host already parsed (a project's `opsloop.yml`);
/// `sources` renders the positions.
pub fn from_section(section: &Node, sources: &Sources) -> Result<OncallConfig, ConfigError> {
    let mut d = Decoder::default();
    let config = d.config(section);
    d.finish(config, sources)
}

/// `0`, or numbers with units `w`, `d`, `h`, `m`, `s` in that order, each at most once:
/// `1w`, `1d12h`, `15m`. Days and weeks are 24 and 168 hours; where they meet a time zone
/// (rotations) they are applied to local wall-clock time.
pub fn parse_duration(text: &str) -> Option<SignedDuration> {
    if text == "0" {
        return Some(SignedDuration::ZERO);
    }
    const UNITS: [(u8, i64); 5] = [(b'w', 7 * 86_400), (b'd', 86_400), (b'h', 3_600), (b'm', 60), (b's', 1)];
    let mut rest = text.as_bytes();
    let mut next_unit = 0;
    let mut total: i64 = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits == 0 || digits > 12 {
            return None;
        }
        let n: i64 = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
        let unit = *rest.get(digits)?;
        let index = UNITS.iter().position(|(u, _)| *u == unit)?;
        if index < next_unit {
            return None;
        }
        next_unit = index + 1;
        total = total.checked_add(n.checked_mul(UNITS[index].1)?)?;
        rest = &rest[digits + 1..];
    }
    Some(SignedDuration::from_secs(total))
}

/// A duration the way people read it back: `1w`, `1d12h`, `15m`, `0m`.
pub fn format_duration(duration: SignedDuration) -> String {
    let mut secs = duration.as_secs();
    if secs == 0 {
        return "0m".to_owned();
    }
    let mut out = String::new();
    if secs < 0 {
        out.push('-');
        secs = -secs;
    }
    for (unit, size) in [("w", 7 * 86_400), ("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            out.push_str(&format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    out
}

/// An instant as written in an override or on the command line: with an offset or `Z`
/// (`2026-03-28T00:00+01:00`), or a local date-time (`2026-03-28T00:00`, a date alone meaning
/// its midnight) read in `zone`; a local time that a DST change skips or repeats is read as
/// RFC 5545 and Temporal read it (the later wall clock in a gap, the earlier instant in a fold).
pub fn parse_instant(text: &str, zone: &TimeZone) -> Option<Timestamp> {
    if let Ok(ts) = text.parse::<Timestamp>() {
        return Some(ts);
    }
    if let Ok(zoned) = text.parse::<jiff::Zoned>() {
        return Some(zoned.timestamp());
    }
    let local = parse_local(text)?;
    zone.to_ambiguous_timestamp(local).compatible().ok()
}

/// A local date-time without offset or zone: jiff's civil parser would drop an offset
/// silently, which would hide a misunderstanding of what `handoff` means.
fn parse_local(text: &str) -> Option<DateTime> {
    let time_part = text.split_once(['T', 't', ' ']).map_or("", |(_, t)| t);
    if time_part.contains(['+', '-', 'Z', 'z', '[']) {
        return None;
    }
    text.parse::<DateTime>().ok()
}

const TOP_KEYS: &[&str] = &["users", "schedules", "overrides", "escalation_policies"];
const USER_KEYS: &[&str] = &["name", "email", "contact", "notification_rules"];
const CONTACT_KEYS: &[&str] = &["email", "webhook", "slack"];
const RULE_KEYS: &[&str] = &["contact", "after"];
const SCHEDULE_KEYS: &[&str] = &["name", "timezone", "layers"];
const LAYER_KEYS: &[&str] = &["name", "rotation", "handoff", "users", "restrictions"];
const RESTRICTION_KEYS: &[&str] = &["days", "start", "end", "start_day", "end_day"];
const OVERRIDE_KEYS: &[&str] = &["schedule", "user", "start", "end"];
const POLICY_KEYS: &[&str] = &["name", "repeat", "repeat_after", "levels"];
const LEVEL_KEYS: &[&str] = &["targets", "after"];
const DAY_NAMES: &[&str] = &["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const DURATION_HINT: &str = "durations are like 0m, 5m, 12h, 1d, 1w (units w, d, h, m, s)";

#[derive(Default)]
struct Decoder {
    diags: Vec<Diagnostic>,
}

/// A mapping whose keys have been checked against the known ones.
struct Fields<'n> {
    entries: &'n [(Key, Node)],
    span: Span,
}

impl<'n> Fields<'n> {
    fn get(&self, name: &str) -> Option<&'n Node> {
        self.entries.iter().rev().find(|(k, _)| k.name == name).map(|(_, v)| v).filter(|v| v.value != Value::Null)
    }
}

impl Decoder {
    fn error(&mut self, span: Span, message: impl Into<String>) {
        self.diags.push(Diagnostic::error(message, Some(span)));
    }

    fn error_hint(&mut self, span: Span, message: impl Into<String>, hint: impl Into<String>) {
        self.diags.push(Diagnostic::error(message, Some(span)).with_hint(hint));
    }

    fn finish(self, config: Option<OncallConfig>, sources: &Sources) -> Result<OncallConfig, ConfigError> {
        match config {
            Some(c) if !self.diags.iter().any(Diagnostic::is_error) => Ok(c),
            _ => {
                let rendered = self.diags.iter().map(|x| sources.render(x)).collect::<Vec<_>>().join("\n");
                Err(ConfigError { diagnostics: self.diags, rendered })
            }
        }
    }

    /// A mapping with only `known` keys; an unknown key is an error naming the nearest known
    /// one. `null` reads as an empty mapping.
    fn fields<'n>(&mut self, node: &'n Node, what: &str, known: &[&str]) -> Option<Fields<'n>> {
        let entries: &'n [(Key, Node)] = match &node.value {
            Value::Mapping(entries) => entries,
            Value::Null => &[],
            _ => {
                self.error(node.span, format!("{what} must be a mapping, not {}", node.kind()));
                return None;
            }
        };
        for (key, _) in entries {
            if !known.contains(&key.name.as_str()) {
                let hint = match nearest(&key.name, known) {
                    Some(meant) => format!("did you mean `{meant}`?"),
                    None => format!("{what} takes: {}", known.join(", ")),
                };
                self.error_hint(key.span, format!("unknown key `{}` in {what}", key.name), hint);
            }
        }
        Some(Fields { entries, span: node.span })
    }

    fn string(&mut self, node: Option<&Node>, what: &str) -> Option<String> {
        let node = node?;
        match &node.value {
            Value::String(s) => Some(s.clone()),
            Value::Int(_) | Value::Float(_) | Value::Bool(_) => node.scalar_text(),
            _ => {
                self.error(node.span, format!("`{what}` must be a string, not {}", node.kind()));
                None
            }
        }
    }

    /// A required string: its absence is an error at the enclosing mapping.
    fn required(&mut self, f: &Fields<'_>, key: &str, what: &str) -> Option<(String, Span)> {
        match f.get(key) {
            Some(node) => self.string(Some(node), key).map(|s| (s, node.span)),
            None => {
                self.error(f.span, format!("{what} needs `{key}`"));
                None
            }
        }
    }

    fn name(&mut self, f: &Fields<'_>, kind: &'static str, what: &str) -> Option<(String, Span)> {
        let (name, span) = self.required(f, "name", what)?;
        if let Err(e) = opsloop_core::name::validate_name(kind, &name) {
            self.error(span, e.to_string());
            return None;
        }
        Some((name, span))
    }

    fn duration(&mut self, node: Option<&Node>, what: &str) -> Option<SignedDuration> {
        let node = node?;
        let text = self.string(Some(node), what)?;
        match parse_duration(&text) {
            Some(d) => Some(d),
            None => {
                self.error_hint(node.span, format!("`{what}`: {text:?} is not a duration"), DURATION_HINT);
                None
            }
        }
    }

    fn list<'n>(&mut self, node: Option<&'n Node>, what: &str) -> &'n [Node] {
        let Some(node) = node else { return &[] };
        match &node.value {
            Value::Sequence(items) => items,
            _ => {
                self.error(node.span, format!("`{what}` must be a list, not {}", node.kind()));
                &[]
            }
        }
    }

    /// Reports a name written twice in one list.
    fn unique(&mut self, seen: &mut Vec<String>, name: &str, span: Span, what: &str) {
        if seen.iter().any(|s| s == name) {
            self.error(span, format!("{what} `{name}` is declared twice"));
        } else {
            seen.push(name.to_owned());
        }
    }

    fn config(&mut self, root: &Node) -> Option<OncallConfig> {
        let top = self.fields(root, "the on-call configuration", TOP_KEYS)?;
        let mut config = OncallConfig::default();
        let mut seen = Vec::new();
        for node in self.list(top.get("users"), "users") {
            if let Some((user, span)) = self.user(node) {
                self.unique(&mut seen, user.name.as_str(), span, "user");
                config.users.push(user);
            }
        }
        let users: Vec<String> = config.users.iter().map(|u| u.name.as_str().to_owned()).collect();
        let mut seen = Vec::new();
        for node in self.list(top.get("schedules"), "schedules") {
            if let Some((schedule, span)) = self.schedule(node, &users) {
                self.unique(&mut seen, &schedule.name, span, "schedule");
                config.schedules.push(schedule);
            }
        }
        for node in self.list(top.get("overrides"), "overrides") {
            self.override_(node, &users, &mut config.schedules);
        }
        let schedules: Vec<String> = config.schedules.iter().map(|s| s.name.clone()).collect();
        let mut seen = Vec::new();
        for node in self.list(top.get("escalation_policies"), "escalation_policies") {
            if let Some((policy, span)) = self.policy(node, &users, &schedules) {
                self.unique(&mut seen, &policy.name, span, "escalation policy");
                config.escalation_policies.push(policy);
            }
        }
        Some(config)
    }

    fn user(&mut self, node: &Node) -> Option<(User, Span)> {
        let f = self.fields(node, "a user", USER_KEYS)?;
        let name = self.name(&f, "user", "a user");
        let mut contacts = Vec::new();
        if let Some(email) = f.get("email")
            && let Some(address) = self.string(Some(email), "email")
            && self.address(ContactKind::Email, &address, email.span)
        {
            contacts.push(ContactMethod { kind: ContactKind::Email, address });
        }
        for item in self.list(f.get("contact"), "contact") {
            let Some(c) = self.fields(item, "a contact method", CONTACT_KEYS) else { continue };
            if c.entries.len() != 1 {
                self.error_hint(
                    item.span,
                    "a contact method is one of `email`, `webhook` or `slack`",
                    "write one per list item: [{email: a@example.com}, {webhook: https://…}]",
                );
                continue;
            }
            let (key, value) = &c.entries[0];
            let Some(kind) = ContactKind::parse(&key.name) else { continue };
            let Some(address) = self.string(Some(value), &key.name) else { continue };
            if !self.address(kind, &address, value.span) {
                continue;
            }
            let method = ContactMethod { kind, address };
            // `email:` and the same address under `contact:` are one method, not two pages.
            if !contacts.contains(&method) {
                contacts.push(method);
            }
        }
        let mut rules = Vec::new();
        for item in self.list(f.get("notification_rules"), "notification_rules") {
            let Some(r) = self.fields(item, "a notification rule", RULE_KEYS) else { continue };
            let Some((kind_text, span)) = self.required(&r, "contact", "a notification rule") else { continue };
            let Some(kind) = ContactKind::parse(&kind_text) else {
                self.error_hint(
                    span,
                    format!("unknown contact kind `{kind_text}`"),
                    "contact kinds: email, webhook, slack",
                );
                continue;
            };
            if !contacts.iter().any(|c| c.kind == kind) {
                let has: Vec<&str> = contacts.iter().map(|c| c.kind.as_str()).collect();
                self.error_hint(
                    span,
                    format!("this user has no `{kind_text}` contact method"),
                    if has.is_empty() {
                        "add it under `contact:`".to_owned()
                    } else {
                        format!("the user has: {}", has.join(", "))
                    },
                );
                continue;
            }
            let after = match r.get("after") {
                Some(node) => self.duration(Some(node), "after"),
                None => Some(SignedDuration::ZERO),
            };
            if let Some(after) = after {
                let rule = NotificationRule { contact: kind, after };
                // The same rule twice would send the same message twice.
                if !rules.contains(&rule) {
                    rules.push(rule);
                }
            }
        }
        let (name, span) = name?;
        if contacts.is_empty() {
            self.error_hint(
                f.span,
                format!("user `{name}` cannot be reached"),
                "give the user `email:` or `contact: [{webhook: https://…}]`",
            );
        }
        if f.get("notification_rules").is_none() {
            // Nothing written: every way the user has, at once.
            // One rule per kind: a rule already covers every method of its kind.
            for c in &contacts {
                let rule = NotificationRule { contact: c.kind, after: SignedDuration::ZERO };
                if !rules.contains(&rule) {
                    rules.push(rule);
                }
            }
        }
        Some((User { name: UserName(name), contacts, notification_rules: rules }, span))
    }

    fn address(&mut self, kind: ContactKind, address: &str, span: Span) -> bool {
        let ok = match kind {
            ContactKind::Email => {
                address.split_once('@').is_some_and(|(l, d)| !l.is_empty() && d.contains('.'))
                    && !address.contains(char::is_whitespace)
            }
            ContactKind::Webhook => {
                (address.starts_with("https://") || address.starts_with("http://"))
                    && !address.contains(char::is_whitespace)
            }
            ContactKind::Slack => address.starts_with("https://") && !address.contains(char::is_whitespace),
        };
        if !ok {
            let hint = match kind {
                ContactKind::Email => "an address like alice@example.com",
                ContactKind::Webhook => "an http:// or https:// URL",
                ContactKind::Slack => "a Slack incoming-webhook URL (https://hooks.slack.com/services/…)",
            };
            self.error_hint(span, format!("`{address}` is not a valid {} address", kind.as_str()), hint);
        }
        ok
    }

    fn user_ref(&mut self, node: &Node, users: &[String]) -> Option<UserName> {
        let name = self.string(Some(node), "user")?;
        if users.contains(&name) {
            return Some(UserName(name));
        }
        let known: Vec<&str> = users.iter().map(String::as_str).collect();
        let hint = match nearest(&name, &known) {
            Some(meant) => format!("did you mean `{meant}`?"),
            None if known.is_empty() => "declare users under `users:`".to_owned(),
            None => format!("users: {}", known.join(", ")),
        };
        self.error_hint(node.span, format!("unknown user `{name}`"), hint);
        None
    }

    fn schedule_ref(&mut self, node: &Node, name: &str, schedules: &[String]) -> bool {
        if schedules.iter().any(|s| s == name) {
            return true;
        }
        let known: Vec<&str> = schedules.iter().map(String::as_str).collect();
        let hint = match nearest(name, &known) {
            Some(meant) => format!("did you mean `{meant}`?"),
            None if known.is_empty() => "declare schedules under `schedules:`".to_owned(),
            None => format!("schedules: {}", known.join(", ")),
        };
        self.error_hint(node.span, format!("unknown schedule `{name}`"), hint);
        false
    }

    fn schedule(&mut self, node: &Node, users: &[String]) -> Option<(Schedule, Span)> {
        let f = self.fields(node, "a schedule", SCHEDULE_KEYS)?;
        let name = self.name(&f, "schedule", "a schedule");
        let zone = match self.required(&f, "timezone", "a schedule") {
            Some((tz_name, span)) => match TimeZone::get(&tz_name) {
                // jiff finds names in any case; keep the database's spelling for display.
                Ok(tz) => Some((tz.iana_name().map_or(tz_name, str::to_owned), tz)),
                Err(_) => {
                    let db = jiff::tz::db();
                    let names: Vec<String> = db.available().map(|n| n.as_str().to_owned()).collect();
                    let known: Vec<&str> = names.iter().map(String::as_str).collect();
                    let hint = match nearest(&tz_name, &known) {
                        Some(meant) => format!("did you mean `{meant}`?"),
                        None => "an IANA time zone name, like Europe/Berlin, America/New_York or UTC".to_owned(),
                    };
                    self.error_hint(span, format!("unknown time zone `{tz_name}`"), hint);
                    None
                }
            },
            None => None,
        };
        let mut layers = Vec::new();
        let layer_nodes = self.list(f.get("layers"), "layers");
        if layer_nodes.is_empty() {
            self.error_hint(f.span, "a schedule needs at least one layer", "add `layers:` with a rotation of users");
        }
        for (index, item) in layer_nodes.iter().enumerate() {
            if let Some(layer) = self.layer(item, index, users) {
                layers.push(layer);
            }
        }
        let (name, span) = name?;
        let (timezone_name, timezone) = zone?;
        Some((Schedule { name, timezone_name, timezone, layers, overrides: Vec::new() }, span))
    }

    fn layer(&mut self, node: &Node, index: usize, users: &[String]) -> Option<Layer> {
        let f = self.fields(node, "a layer", LAYER_KEYS)?;
        let name = match f.get("name") {
            Some(n) => self.string(Some(n), "name"),
            None => Some(format!("layer {}", index + 1)),
        };
        let rotation = match f.get("rotation") {
            Some(n) => self.duration(Some(n), "rotation").and_then(|r| {
                if r < MIN_ROTATION {
                    self.error_hint(n.span, "a rotation must be at least 1h", "rotations are like 12h, 1d, 1w");
                    None
                } else {
                    Some(r)
                }
            }),
            None => {
                self.error_hint(f.span, "a layer needs `rotation`", "how long each shift lasts: 12h, 1d, 1w");
                None
            }
        };
        let handoff = match self.required(&f, "handoff", "a layer") {
            Some((text, span)) => {
                let parsed = parse_local(&text);
                if parsed.is_none() {
                    self.error_hint(
                        span,
                        format!("`handoff`: {text:?} is not a local date-time"),
                        "a date-time in the schedule's time zone, without offset: 2026-03-23T09:00",
                    );
                }
                parsed
            }
            None => None,
        };
        let mut members = Vec::new();
        let user_nodes = self.list(f.get("users"), "users");
        if user_nodes.is_empty() {
            self.error_hint(
                f.get("users").map_or(f.span, |n| n.span),
                "this layer's rotation is empty",
                "list the users who take turns: users: [alice, bob]",
            );
        }
        for item in user_nodes {
            if let Some(user) = self.user_ref(item, users) {
                members.push(user);
            }
        }
        let mut restrictions = Vec::new();
        let restriction_nodes = self.list(f.get("restrictions"), "restrictions");
        if let Some(n) = f.get("restrictions")
            && restriction_nodes.is_empty()
            && matches!(n.value, Value::Sequence(_))
        {
            // An empty list would read as "never on call", surely not what was meant.
            self.error(n.span, "`restrictions` is empty: leave it out for a layer that is always on");
        }
        for item in restriction_nodes {
            restrictions.extend(self.restriction(item));
        }
        Some(Layer { name: name?, rotation: rotation?, handoff: handoff?, users: members, restrictions })
    }

    fn day(&mut self, node: &Node) -> Option<u32> {
        let text = self.string(Some(node), "day")?;
        let lower = text.to_ascii_lowercase();
        let short = lower.get(..3).unwrap_or(&lower);
        let full = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];
        match DAY_NAMES.iter().position(|d| *d == short) {
            Some(i) if lower.len() == 3 || full[i] == lower => u32::try_from(i).ok(),
            _ => {
                self.error_hint(node.span, format!("`{text}` is not a day"), "days: mon, tue, wed, thu, fri, sat, sun");
                None
            }
        }
    }

    /// `"HH:MM"` (or `HH:MM:SS`) as seconds after midnight; `24:00` only where `allow_24`.
    fn time_of_day(&mut self, node: Option<&Node>, key: &str, allow_24: bool, span: Span) -> Option<u32> {
        let Some(node) = node else {
            self.error(span, format!("a restriction needs `{key}`"));
            return None;
        };
        let text = self.string(Some(node), key)?;
        if allow_24 && (text == "24:00" || text == "24:00:00") {
            return Some(DAY_SECS);
        }
        match text.parse::<Time>() {
            Ok(t) if text.len() >= 5 && t.subsec_nanosecond() == 0 => Some(
                u32::try_from(t.hour()).ok()? * 3600
                    + u32::try_from(t.minute()).ok()? * 60
                    + u32::try_from(t.second()).ok()?,
            ),
            _ => {
                self.error_hint(
                    node.span,
                    format!("`{key}`: {text:?} is not a time of day"),
                    "write \"09:00\" (24-hour clock, quoted)",
                );
                None
            }
        }
    }

    fn restriction(&mut self, node: &Node) -> Vec<WeekWindow> {
        let Some(f) = self.fields(node, "a restriction", RESTRICTION_KEYS) else { return Vec::new() };
        let weekly = f.get("start_day").is_some() || f.get("end_day").is_some();
        let start = self.time_of_day(f.get("start"), "start", false, f.span);
        let end = self.time_of_day(f.get("end"), "end", true, f.span);
        let (Some(start), Some(end)) = (start, end) else { return Vec::new() };
        if weekly {
            if let Some(days) = f.get("days") {
                self.error(
                    days.span,
                    "a restriction has either `days` (daily windows) or `start_day` and `end_day` (one weekly window)",
                );
                return Vec::new();
            }
            let (Some(sd), Some(ed)) = (f.get("start_day"), f.get("end_day")) else {
                self.error(f.span, "a weekly restriction needs both `start_day` and `end_day`");
                return Vec::new();
            };
            let (Some(sd), Some(ed)) = (self.day(sd), self.day(ed)) else { return Vec::new() };
            let from = sd * DAY_SECS + start;
            let to = ed * DAY_SECS + end;
            let length = (to + WEEK_SECS - from) % WEEK_SECS;
            if length == 0 {
                self.error(f.span, "this restriction's window is empty (it starts where it ends)");
                return Vec::new();
            }
            return vec![WeekWindow { start: from, length }];
        }
        let days: Vec<u32> = match f.get("days") {
            Some(days) => {
                let items = self.list(Some(days), "days");
                if items.is_empty() {
                    self.error(days.span, "`days` is empty");
                }
                items.iter().filter_map(|d| self.day(d)).collect()
            }
            None => (0..7).collect(),
        };
        if start == end {
            self.error_hint(
                f.span,
                "this restriction's window is empty (it starts where it ends)",
                "for the whole day write start: \"00:00\", end: \"24:00\"",
            );
            return Vec::new();
        }
        // An end before the start crosses midnight: `22:00` to `06:00` on mon is Monday night.
        let length = if end > start { end - start } else { end + DAY_SECS - start };
        days.into_iter().map(|d| WeekWindow { start: d * DAY_SECS + start, length }).collect()
    }

    fn override_(&mut self, node: &Node, users: &[String], schedules: &mut [Schedule]) {
        let Some(f) = self.fields(node, "an override", OVERRIDE_KEYS) else { return };
        let schedule = match (self.required(&f, "schedule", "an override"), f.get("schedule")) {
            (Some((name, _)), Some(n)) => {
                let names: Vec<String> = schedules.iter().map(|s| s.name.clone()).collect();
                if self.schedule_ref(n, &name, &names) { schedules.iter().position(|s| s.name == name) } else { None }
            }
            _ => None,
        };
        let user = match f.get("user") {
            Some(n) => self.user_ref(n, users),
            None => {
                self.error(f.span, "an override needs `user`");
                None
            }
        };
        let Some(index) = schedule else { return };
        let zone = schedules[index].timezone.clone();
        let instant = |d: &mut Decoder, key: &str| {
            let (text, span) = d.required(&f, key, "an override")?;
            let parsed = parse_instant(&text, &zone);
            if parsed.is_none() {
                d.error_hint(
                    span,
                    format!("`{key}`: {text:?} is not a date-time"),
                    "2026-03-28T00:00+01:00, or a local 2026-03-28T00:00 in the schedule's time zone",
                );
            }
            parsed
        };
        let start = instant(self, "start");
        let end = instant(self, "end");
        let (Some(user), Some(start), Some(end)) = (user, start, end) else { return };
        if end <= start {
            self.error(f.get("end").map_or(f.span, |n| n.span), "an override must end after it starts");
            return;
        }
        schedules[index].overrides.push(Override { user, start, end });
    }

    fn policy(&mut self, node: &Node, users: &[String], schedules: &[String]) -> Option<(EscalationPolicy, Span)> {
        let f = self.fields(node, "an escalation policy", POLICY_KEYS)?;
        let name = self.name(&f, "escalation policy", "an escalation policy");
        let repeat = match f.get("repeat") {
            None => Some(0),
            Some(n) => match n.value {
                Value::Int(r) if (0..=i64::from(MAX_REPEAT)).contains(&r) => u32::try_from(r).ok(),
                _ => {
                    self.error(n.span, format!("`repeat` must be a whole number from 0 to {MAX_REPEAT}"));
                    None
                }
            },
        };
        let repeat_after = match f.get("repeat_after") {
            None => Some(DEFAULT_REPEAT_AFTER),
            Some(n) => self.duration(Some(n), "repeat_after").and_then(|d| {
                if d.is_zero() {
                    self.error(n.span, "`repeat_after` must be longer than 0m, or every repeat pages at once");
                    None
                } else {
                    Some(d)
                }
            }),
        };
        let level_nodes = self.list(f.get("levels"), "levels");
        if level_nodes.is_empty() {
            self.error_hint(
                f.span,
                "an escalation policy needs at least one level",
                "levels: [{targets: [\"schedule:primary\"]}]",
            );
        }
        let mut levels = Vec::new();
        for (index, item) in level_nodes.iter().enumerate() {
            if let Some(level) = self.level(item, index, users, schedules) {
                levels.push(level);
            }
        }
        let (name, span) = name?;
        Some((EscalationPolicy { name, repeat: repeat?, repeat_after: repeat_after?, levels }, span))
    }

    fn level(&mut self, node: &Node, index: usize, users: &[String], schedules: &[String]) -> Option<EscalationLevel> {
        let f = self.fields(node, "an escalation level", LEVEL_KEYS)?;
        let after = match f.get("after") {
            Some(n) => self.duration(Some(n), "after"),
            None if index == 0 => Some(SignedDuration::ZERO),
            None => {
                self.error_hint(
                    f.span,
                    format!("escalation level {} needs `after`", index + 1),
                    format!("how long after level {} is paged this level is paged, e.g. after: 15m", index),
                );
                None
            }
        };
        let target_nodes = self.list(f.get("targets"), "targets");
        if target_nodes.is_empty() {
            self.error_hint(
                f.span,
                "an escalation level needs `targets`",
                "targets: [\"schedule:primary\", \"user:alice\"]",
            );
        }
        let mut targets = Vec::new();
        for item in target_nodes {
            let Some(text) = self.string(Some(item), "target") else { continue };
            match text.split_once(':') {
                Some(("schedule", name)) => {
                    if self.schedule_ref(item, name, schedules) {
                        targets.push(Target::Schedule(name.to_owned()));
                    }
                }
                Some(("user", name)) => {
                    if users.iter().any(|u| u == name) {
                        targets.push(Target::User(UserName(name.to_owned())));
                    } else {
                        let probe = Node::new(Value::String(name.to_owned()), item.span);
                        self.user_ref(&probe, users);
                    }
                }
                _ => {
                    let hint = if users.contains(&text) {
                        format!("did you mean `user:{text}`?")
                    } else if schedules.contains(&text) {
                        format!("did you mean `schedule:{text}`?")
                    } else {
                        "targets are `schedule:NAME` or `user:NAME`".to_owned()
                    };
                    self.error_hint(item.span, format!("`{text}` is not a target"), hint);
                }
            }
        }
        let mut unique = Vec::new();
        for t in targets {
            if !unique.contains(&t) {
                unique.push(t);
            }
        }
        Some(EscalationLevel { targets: unique, after: after? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const EXAMPLE: &str = r#"
users:
  - name: alice
    email: alice@example.com
    contact: [{email: alice@example.com}, {webhook: "https://hooks.example.com/alice"}, {slack: "https://hooks.slack.com/services/T/B/x"}]
    notification_rules: [{contact: email, after: 0m}, {contact: webhook, after: 5m}]
  - name: bob
    email: bob@example.com
  - name: carol
    contact: [{webhook: "https://hooks.example.com/carol"}]
  - name: dave
    email: dave@example.com
schedules:
  - name: primary
    timezone: Europe/Berlin
    layers:
      - name: weekly
        rotation: 1w
        handoff: 2026-03-23T09:00
        users: [alice, bob, carol]
        restrictions: [{days: [mon, tue, wed, thu, fri], start: "09:00", end: "17:00"}]
  - name: secondary
    timezone: America/New_York
    layers:
      - rotation: 1d
        handoff: 2026-03-01T09:00
        users: [dave, carol]
overrides:
  - schedule: primary
    user: dave
    start: 2026-03-28T00:00+01:00
    end: 2026-03-29T00:00+01:00
escalation_policies:
  - name: default
    repeat: 2
    levels:
      - targets: [schedule:primary]
        after: 0m
      - targets: [user:carol, schedule:secondary]
        after: 15m
"#;

    fn errors(text: &str) -> String {
        match load(text, "oncall.yml") {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.rendered,
        }
    }

    #[test]
    fn the_example_loads() {
        let config = load(EXAMPLE, "oncall.yml").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.users.len(), 4);
        let alice = config.user("alice").unwrap();
        assert_eq!(alice.contacts.len(), 3, "email: and the same contact are one method");
        assert_eq!(
            alice.notification_rules[1],
            NotificationRule { contact: ContactKind::Webhook, after: SignedDuration::from_mins(5) }
        );
        let bob = config.user("bob").unwrap();
        assert_eq!(
            bob.notification_rules,
            [NotificationRule { contact: ContactKind::Email, after: SignedDuration::ZERO }]
        );
        let primary = config.schedule("primary").unwrap();
        assert_eq!(primary.layers[0].rotation, SignedDuration::from_hours(168));
        assert_eq!(primary.layers[0].restrictions.len(), 5);
        assert_eq!(primary.overrides.len(), 1);
        assert_eq!(config.schedule("secondary").unwrap().layers[0].name, "layer 1");
        let lower = load(&EXAMPLE.replace("Europe/Berlin", "europe/berlin"), "x.yml").unwrap();
        assert_eq!(lower.schedule("primary").unwrap().timezone_name, "Europe/Berlin");
        let policy = config.policy("default").unwrap();
        assert_eq!(policy.repeat, 2);
        assert_eq!(policy.repeat_after, DEFAULT_REPEAT_AFTER);
        assert_eq!(
            policy.levels[1].targets,
            [Target::User(UserName::new("carol")), Target::Schedule("secondary".into())]
        );
    }

    #[test]
    fn default_rules_notify_each_method_once() {
        let text = "users:\n  - {name: m, email: m@example.com, contact: [{webhook: \"https://x.example.com\"}, {email: n@example.com}]}\n";
        let config = load(text, "x.yml").unwrap_or_else(|e| panic!("{e}"));
        let m = config.user("m").unwrap();
        assert_eq!(m.contacts.len(), 3);
        let kinds: Vec<ContactKind> = m.notification_rules.iter().map(|r| r.contact).collect();
        assert_eq!(kinds, [ContactKind::Email, ContactKind::Webhook]);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1w"), Some(SignedDuration::from_hours(168)));
        assert_eq!(parse_duration("1d12h"), Some(SignedDuration::from_hours(36)));
        assert_eq!(parse_duration("0"), Some(SignedDuration::ZERO));
        assert_eq!(parse_duration("0m"), Some(SignedDuration::ZERO));
        for bad in ["", "1", "m", "1h1d", "1x", "-1h", "1.5h", "99999999999999999999h"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
        assert_eq!(format_duration(SignedDuration::from_secs(90_000)), "1d1h");
    }

    #[test]
    fn errors_are_at_file_line_column_with_hints() {
        let text = EXAMPLE.replace("users: [alice, bob, carol]", "users: [alice, bobb, carol]");
        let e = errors(&text);
        assert!(e.contains("oncall.yml:20:24: unknown user `bobb`") && e.contains("did you mean `bob`?"), "{e}");

        let e = errors(&EXAMPLE.replace("timezone: Europe/Berlin", "timezone: Europe/Berlni"));
        assert!(e.contains("oncall.yml:15:15: unknown time zone `Europe/Berlni`"), "{e}");
        let e = errors(&EXAMPLE.replace("timezone: Europe/Berlin", "timezone: Europe/Berln"));
        assert!(e.contains("did you mean `Europe/Berlin`?"), "{e}");

        let e = errors(&EXAMPLE.replace("rotation: 1w", "rotaton: 1w"));
        assert!(
            e.contains("oncall.yml:18:9: unknown key `rotaton` in a layer") && e.contains("did you mean `rotation`?"),
            "{e}"
        );

        let e = errors(&EXAMPLE.replace("rotation: 1w", "rotation: 1 week"));
        assert!(e.contains("oncall.yml:18:19: `rotation`: \"1 week\" is not a duration"), "{e}");
        let e = errors(&EXAMPLE.replace("rotation: 1w", "rotation: 30m"));
        assert!(e.contains("at least 1h"), "{e}");

        let e = errors(&EXAMPLE.replace("users: [alice, bob, carol]", "users: []"));
        assert!(e.contains("oncall.yml:20:16: this layer's rotation is empty"), "{e}");

        let e = errors(&EXAMPLE.replace("[user:carol, schedule:secondary]", "[user:carol, schedule:secondry]"));
        assert!(
            e.contains("oncall.yml:39:31: unknown schedule `secondry`") && e.contains("did you mean `secondary`?"),
            "{e}"
        );
        let e = errors(&EXAMPLE.replace("[user:carol, schedule:secondary]", "[carol]"));
        assert!(e.contains("did you mean `user:carol`?"), "{e}");

        let e = errors(&EXAMPLE.replace("schedule: primary\n    user: dave", "schedule: primay\n    user: dave"));
        assert!(e.contains("oncall.yml:29:15: unknown schedule `primay`"), "{e}");

        let e = errors(&EXAMPLE.replace("handoff: 2026-03-23T09:00", "handoff: 2026-03-23T09:00+01:00"));
        assert!(e.contains("is not a local date-time"), "{e}");

        let e = errors(&EXAMPLE.replace("after: 15m", "after: 15 minutes"));
        assert!(e.contains("oncall.yml:40:16:") && e.contains(DURATION_HINT), "{e}");

        let e = errors(&EXAMPLE.replace("{contact: webhook, after: 5m}", "{contact: sms, after: 5m}"));
        assert!(e.contains("unknown contact kind `sms`"), "{e}");
        let e = errors(&EXAMPLE.replace("end: \"17:00\"", "end: \"25:00\""));
        assert!(e.contains("is not a time of day"), "{e}");
        let e = errors(&EXAMPLE.replace("days: [mon,", "days: [mun,"));
        assert!(e.contains("`mun` is not a day"), "{e}");
        let e = errors("users:\n  - name: x\n    email: x@example.com\n  - name: x\n    email: y@example.com\n");
        assert!(e.contains("oncall.yml:4:11: user `x` is declared twice"), "{e}");
        let e = errors("users:\n  - name: x\n");
        assert!(e.contains("cannot be reached"), "{e}");
        let e = errors(
            "users: [{name: x, email: x@example.com}]\nescalation_policies:\n  - name: p\n    levels:\n      - targets: [user:x]\n      - targets: [user:x]\n",
        );
        assert!(e.contains("escalation level 2 needs `after`"), "{e}");
        let e = errors(&EXAMPLE.replace("end: 2026-03-29T00:00+01:00", "end: 2026-03-27T00:00+01:00"));
        assert!(e.contains("oncall.yml:32:10: an override must end after it starts"), "{e}");
        let e = errors(&EXAMPLE.replace("{days: [mon, tue, wed, thu, fri],", "{days: [mon], start_day: fri,"));
        assert!(e.contains("either `days`"), "{e}");
        let e = errors(&EXAMPLE.replace("repeat: 2", "repeat: -1"));
        assert!(e.contains("oncall.yml:35:13: `repeat` must be a whole number"), "{e}");
        let e = errors("usres: []\n");
        assert!(e.contains("oncall.yml:1:1: unknown key `usres`") && e.contains("did you mean `users`?"), "{e}");
    }

    #[test]
    fn restrictions_daily_overnight_and_weekly() {
        let text = "users: [{name: a, email: a@example.com}]\nschedules:\n  - name: s\n    timezone: UTC\n    layers:\n      - rotation: 1d\n        handoff: 2026-01-05T00:00\n        users: [a]\n        restrictions:\n          - {days: [sun], start: \"22:00\", end: \"06:00\"}\n          - {start_day: fri, start: \"18:00\", end_day: mon, end: \"08:00\"}\n";
        let config = load(text, "x.yml").unwrap_or_else(|e| panic!("{e}"));
        let windows = &config.schedules[0].layers[0].restrictions;
        assert_eq!(windows[0], WeekWindow { start: 6 * DAY_SECS + 22 * 3600, length: 8 * 3600 });
        assert!(windows[0].contains(3600), "Sunday night reaches into Monday 01:00");
        assert!(!windows[0].contains(7 * 3600));
        assert_eq!(windows[1], WeekWindow { start: 4 * DAY_SECS + 18 * 3600, length: 2 * DAY_SECS + 14 * 3600 });
    }

    #[test]
    fn a_section_of_a_bigger_file() {
        let text = format!("project: x\noncall:\n{}", EXAMPLE.lines().map(|l| format!("  {l}\n")).collect::<String>());
        let mut sources = Sources::default();
        let file = sources.add("opsloop.yml", &text);
        let root = yaml::parse_file(&text, file).unwrap();
        let config = from_section(root.get("oncall").unwrap(), &sources).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.schedules.len(), 2);
        let bad = text.replace("users: [alice, bob, carol]", "users: [alice, bob, zed]");
        let root = yaml::parse_file(&bad, 0).unwrap();
        let mut sources = Sources::default();
        sources.add("opsloop.yml", &bad);
        let e = from_section(root.get("oncall").unwrap(), &sources).unwrap_err();
        assert!(e.rendered.contains("opsloop.yml:22:31:"), "{}", e.rendered);
    }
}
