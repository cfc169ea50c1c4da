//! `alertmanager.yml`, read so that a team's existing file works unchanged: Alertmanager
//! 0.25's keys, defaults and load-time checks (root route with a receiver and no matchers,
//! receivers defined once and every used one defined, time intervals defined, durations
//! valid, `group_interval`/`repeat_interval` not zero…), with every problem at
//! file:line:column and a misspelt key answered with the key it was meant to be.
//!
//! Read on opsloop-config's YAML tree rather than serde for the positions, as the
//! `prometheus.yml` loader of opsloop-metrics does. Extensions: `msteams_configs` (which
//! Alertmanager gained in 0.26) and `oncall_configs` (opsloop's escalation policies).

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::time::Duration;

use jiff::tz::TimeZone;
use opsloop_config::diagnostic::{Diagnostic, Sources, nearest};
use opsloop_config::yaml::{self, Key, Node, Span, Value};

use crate::labels::is_valid_label_name;
use crate::matcher::{MatchType, Matcher, Matchers, parse_matchers};
use crate::timeinterval::{
    InclusiveRange, MONTHS, NamedTimeInterval, TimeInterval, TimeRange, WEEKDAYS, parse_clock, parse_range,
};

pub const DEFAULT_RESOLVE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
pub const DEFAULT_GROUP_WAIT: Duration = Duration::from_secs(30);
pub const DEFAULT_GROUP_INTERVAL: Duration = Duration::from_secs(5 * 60);
pub const DEFAULT_REPEAT_INTERVAL: Duration = Duration::from_secs(4 * 3600);

#[derive(Debug, Clone)]
pub struct Config {
    pub global: GlobalConfig,
    pub route: RouteConfig,
    pub inhibit_rules: Vec<InhibitRuleConfig>,
    pub receivers: Vec<Receiver>,
    /// `time_intervals` and the older `mute_time_intervals`, one namespace as in Alertmanager.
    pub time_intervals: Vec<NamedTimeInterval>,
    pub templates: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpConfig {
    pub basic_auth: Option<(String, String)>,
    /// `authorization.credentials` or the older `bearer_token`.
    pub bearer_token: Option<String>,
    pub proxy_url: Option<String>,
    pub insecure_skip_verify: bool,
}

#[derive(Debug, Clone)]
pub struct GlobalConfig {
    pub resolve_timeout: Duration,
    pub http_config: HttpConfig,
    pub smtp_from: Option<String>,
    pub smtp_hello: String,
    pub smtp_smarthost: Option<String>,
    pub smtp_auth_username: Option<String>,
    pub smtp_auth_password: Option<String>,
    pub smtp_require_tls: bool,
    pub slack_api_url: Option<String>,
    pub pagerduty_url: String,
    pub opsgenie_api_url: String,
    pub opsgenie_api_key: Option<String>,
}

impl Default for GlobalConfig {
    fn default() -> Self {
        GlobalConfig {
            resolve_timeout: DEFAULT_RESOLVE_TIMEOUT,
            http_config: HttpConfig::default(),
            smtp_from: None,
            smtp_hello: "localhost".into(),
            smtp_smarthost: None,
            smtp_auth_username: None,
            smtp_auth_password: None,
            smtp_require_tls: true,
            slack_api_url: None,
            pagerduty_url: "https://events.pagerduty.com/v2/enqueue".into(),
            opsgenie_api_url: "https://api.opsgenie.com/".into(),
            opsgenie_api_key: None,
        }
    }
}

/// A route as written; [`crate::route`] builds the tree with inherited options.
#[derive(Debug, Clone, Default)]
pub struct RouteConfig {
    pub receiver: Option<String>,
    /// `None` when not written (inherited); `...` sets `group_by_all` instead.
    pub group_by: Option<Vec<String>>,
    pub group_by_all: bool,
    pub continue_matching: bool,
    /// `matchers`, `match` and `match_re` together, sorted as Alertmanager sorts them.
    pub matchers: Matchers,
    pub group_wait: Option<Duration>,
    pub group_interval: Option<Duration>,
    pub repeat_interval: Option<Duration>,
    pub mute_time_intervals: Vec<String>,
    pub active_time_intervals: Vec<String>,
    pub routes: Vec<RouteConfig>,
    pub span: Span,
}

#[derive(Debug, Clone, Default)]
pub struct InhibitRuleConfig {
    pub source_matchers: Matchers,
    pub target_matchers: Matchers,
    pub equal: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Receiver {
    pub name: String,
    pub integrations: Vec<Integration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IntegrationKind {
    Email,
    PagerDuty,
    Slack,
    Webhook,
    OpsGenie,
    WeChat,
    Pushover,
    VictorOps,
    Sns,
    Telegram,
    Discord,
    Webex,
    MsTeams,
    OnCall,
}

impl IntegrationKind {
    /// The integration's name in Alertmanager (its notification log and metrics).
    pub fn name(self) -> &'static str {
        match self {
            IntegrationKind::Email => "email",
            IntegrationKind::PagerDuty => "pagerduty",
            IntegrationKind::Slack => "slack",
            IntegrationKind::Webhook => "webhook",
            IntegrationKind::OpsGenie => "opsgenie",
            IntegrationKind::WeChat => "wechat",
            IntegrationKind::Pushover => "pushover",
            IntegrationKind::VictorOps => "victorops",
            IntegrationKind::Sns => "sns",
            IntegrationKind::Telegram => "telegram",
            IntegrationKind::Discord => "discord",
            IntegrationKind::Webex => "webex",
            IntegrationKind::MsTeams => "msteams",
            IntegrationKind::OnCall => "oncall",
        }
    }
}

/// One entry of a receiver's `*_configs`.
#[derive(Debug, Clone)]
pub struct Integration {
    pub kind: IntegrationKind,
    /// Its position among the receiver's integrations of the same kind.
    pub index: usize,
    pub send_resolved: bool,
    pub http_config: HttpConfig,
    pub settings: IntegrationSettings,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntegrationSettings {
    Webhook {
        url: String,
        max_alerts: u64,
    },
    Slack {
        api_url: String,
        channel: Option<String>,
        username: Option<String>,
        title: Option<String>,
        text: Option<String>,
    },
    PagerDuty {
        url: String,
        routing_key: Option<String>,
        service_key: Option<String>,
        severity: Option<String>,
        client: Option<String>,
        client_url: Option<String>,
    },
    MsTeams {
        webhook_url: String,
        title: Option<String>,
        text: Option<String>,
    },
    Discord {
        webhook_url: String,
        title: Option<String>,
        message: Option<String>,
    },
    Email {
        to: String,
        from: String,
        smarthost: String,
        hello: String,
        require_tls: bool,
        auth_username: Option<String>,
        auth_password: Option<String>,
    },
    OnCall {
        escalation_policy: String,
    },
    /// Accepted and checked, not sent by opsloop (yet): the scalar settings as written.
    Other(BTreeMap<String, String>),
}

pub use opsloop_config::diagnostic::{ConfigError, LoadError};

pub fn load_file(path: &Path) -> Result<Config, LoadError> {
    opsloop_config::diagnostic::load_file(path, load)
}

/// Parses an `alertmanager.yml` text; `path` names it in errors.
pub fn load(text: &str, path: &str) -> Result<Config, ConfigError> {
    let mut sources = Sources::default();
    let file = sources.add(path, text);
    let mut d = Decoder { diags: Vec::new() };
    let config = match yaml::parse_with_header(text, file) {
        Ok(parsed) => {
            for key in &parsed.duplicates {
                d.error(key.span, format!("mapping key `{}` already defined", key.name));
            }
            if parsed.spec.is_some() {
                d.error(parsed.body.span, "an alertmanager.yml holds one YAML document");
            }
            d.config(&parsed.body)
        }
        Err(e) => {
            d.error(e.span, format!("invalid YAML: {}", e.message));
            None
        }
    };
    match config {
        Some(c) if !d.diags.iter().any(Diagnostic::is_error) => Ok(c),
        _ => {
            let rendered = d.diags.iter().map(|x| sources.render(x)).collect::<Vec<_>>().join("\n");
            Err(ConfigError { diagnostics: d.diags, rendered })
        }
    }
}

/// Prometheus's durations, which Alertmanager shares: `1y2w3d4h5m6s7ms` or `0`.
pub fn parse_duration(text: &str) -> Option<Duration> {
    if text == "0" {
        return Some(Duration::ZERO);
    }
    const UNITS: [(&str, u64); 7] = [
        ("y", 365 * 24 * 3600 * 1000),
        ("w", 7 * 24 * 3600 * 1000),
        ("d", 24 * 3600 * 1000),
        ("h", 3600 * 1000),
        ("m", 60 * 1000),
        ("s", 1000),
        ("ms", 1),
    ];
    let mut rest = text;
    let mut next_unit = 0;
    let mut total: u64 = 0;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        // `ms` before `m`, or `5ms` reads as five minutes and a stray `s`.
        let (index, unit_ms, len) = if rest.starts_with("ms") {
            (6, 1, 2)
        } else {
            let (i, (u, ms)) = UNITS.iter().enumerate().find(|(_, (u, _))| u.len() == 1 && rest.starts_with(u))?;
            (i, *ms, u.len())
        };
        if index < next_unit {
            return None;
        }
        next_unit = index + 1;
        total = total.checked_add(n.checked_mul(unit_ms)?)?;
        rest = &rest[len..];
    }
    Some(Duration::from_millis(total))
}

const TOP_KEYS: &[&str] =
    &["global", "route", "inhibit_rules", "receivers", "templates", "mute_time_intervals", "time_intervals"];
const GLOBAL_KEYS: &[&str] = &[
    "resolve_timeout",
    "http_config",
    "smtp_from",
    "smtp_hello",
    "smtp_smarthost",
    "smtp_auth_username",
    "smtp_auth_password",
    "smtp_auth_secret",
    "smtp_auth_identity",
    "smtp_require_tls",
    "slack_api_url",
    "slack_api_url_file",
    "victorops_api_key",
    "victorops_api_url",
    "pagerduty_url",
    "opsgenie_api_key",
    "opsgenie_api_key_file",
    "opsgenie_api_url",
    "wechat_api_url",
    "wechat_api_secret",
    "wechat_api_corp_id",
    "telegram_api_url",
    "webex_api_url",
];
const HTTP_KEYS: &[&str] = &[
    "basic_auth",
    "authorization",
    "oauth2",
    "bearer_token",
    "bearer_token_file",
    "tls_config",
    "proxy_url",
    "no_proxy",
    "proxy_from_environment",
    "proxy_connect_header",
    "follow_redirects",
    "enable_http2",
];
const ROUTE_KEYS: &[&str] = &[
    "receiver",
    "group_by",
    "match",
    "match_re",
    "matchers",
    "mute_time_intervals",
    "active_time_intervals",
    "continue",
    "routes",
    "group_wait",
    "group_interval",
    "repeat_interval",
];
const INHIBIT_KEYS: &[&str] = &[
    "source_match",
    "source_match_re",
    "source_matchers",
    "target_match",
    "target_match_re",
    "target_matchers",
    "equal",
];
const RECEIVER_KEYS: &[&str] = &[
    "name",
    "email_configs",
    "pagerduty_configs",
    "slack_configs",
    "webhook_configs",
    "opsgenie_configs",
    "wechat_configs",
    "pushover_configs",
    "victorops_configs",
    "sns_configs",
    "telegram_configs",
    "discord_configs",
    "webex_configs",
    "msteams_configs",
    "oncall_configs",
];
const TIME_INTERVAL_KEYS: &[&str] = &["name", "time_intervals"];
const INTERVAL_KEYS: &[&str] = &["times", "weekdays", "days_of_month", "months", "years", "location"];

/// The keys of each integration, beyond `send_resolved` and `http_config`.
fn integration_keys(kind: IntegrationKind) -> &'static [&'static str] {
    match kind {
        IntegrationKind::Webhook => &["url", "max_alerts"],
        IntegrationKind::Email => &[
            "to",
            "from",
            "hello",
            "smarthost",
            "auth_username",
            "auth_password",
            "auth_secret",
            "auth_identity",
            "require_tls",
            "tls_config",
            "html",
            "text",
            "headers",
        ],
        IntegrationKind::Slack => &[
            "api_url",
            "api_url_file",
            "channel",
            "username",
            "color",
            "title",
            "title_link",
            "pretext",
            "text",
            "fields",
            "short_fields",
            "footer",
            "fallback",
            "callback_id",
            "icon_emoji",
            "icon_url",
            "image_url",
            "thumb_url",
            "link_names",
            "mrkdwn_in",
            "actions",
        ],
        IntegrationKind::PagerDuty => &[
            "routing_key",
            "routing_key_file",
            "service_key",
            "service_key_file",
            "url",
            "client",
            "client_url",
            "description",
            "details",
            "images",
            "links",
            "source",
            "severity",
            "class",
            "component",
            "group",
        ],
        IntegrationKind::OpsGenie => &[
            "api_key",
            "api_key_file",
            "api_url",
            "message",
            "description",
            "source",
            "details",
            "entity",
            "responders",
            "actions",
            "tags",
            "note",
            "priority",
            "update_alerts",
        ],
        IntegrationKind::WeChat => &[
            "api_secret",
            "api_url",
            "corp_id",
            "message",
            "message_type",
            "agent_id",
            "to_user",
            "to_party",
            "to_tag",
        ],
        IntegrationKind::Pushover => &[
            "user_key",
            "user_key_file",
            "token",
            "token_file",
            "title",
            "message",
            "url",
            "url_title",
            "sound",
            "priority",
            "retry",
            "expire",
            "html",
        ],
        IntegrationKind::VictorOps => &[
            "api_key",
            "api_key_file",
            "api_url",
            "routing_key",
            "message_type",
            "entity_display_name",
            "state_message",
            "monitoring_tool",
            "custom_fields",
        ],
        IntegrationKind::Sns => {
            &["api_url", "sigv4", "topic_arn", "phone_number", "target_arn", "subject", "message", "attributes"]
        }
        IntegrationKind::Telegram => {
            &["api_url", "bot_token", "bot_token_file", "chat_id", "message", "disable_notifications", "parse_mode"]
        }
        IntegrationKind::Discord => &["webhook_url", "title", "message"],
        IntegrationKind::Webex => &["api_url", "room_id", "message"],
        IntegrationKind::MsTeams => &["webhook_url", "title", "summary", "text"],
        IntegrationKind::OnCall => &["escalation_policy"],
    }
}

/// Alertmanager's `send_resolved` defaults differ per integration.
fn default_send_resolved(kind: IntegrationKind) -> bool {
    !matches!(kind, IntegrationKind::Email | IntegrationKind::Slack | IntegrationKind::WeChat)
}

fn kind_of_key(key: &str) -> Option<IntegrationKind> {
    Some(match key {
        "email_configs" => IntegrationKind::Email,
        "pagerduty_configs" => IntegrationKind::PagerDuty,
        "slack_configs" => IntegrationKind::Slack,
        "webhook_configs" => IntegrationKind::Webhook,
        "opsgenie_configs" => IntegrationKind::OpsGenie,
        "wechat_configs" => IntegrationKind::WeChat,
        "pushover_configs" => IntegrationKind::Pushover,
        "victorops_configs" => IntegrationKind::VictorOps,
        "sns_configs" => IntegrationKind::Sns,
        "telegram_configs" => IntegrationKind::Telegram,
        "discord_configs" => IntegrationKind::Discord,
        "webex_configs" => IntegrationKind::Webex,
        "msteams_configs" => IntegrationKind::MsTeams,
        "oncall_configs" => IntegrationKind::OnCall,
        _ => return None,
    })
}

struct Decoder {
    diags: Vec<Diagnostic>,
}

/// A mapping whose keys have been checked against the known ones.
struct Fields<'n> {
    entries: &'n [(Key, Node)],
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
                let mut d = Diagnostic::error(format!("unknown key `{}` in {what}", key.name), Some(key.span));
                d = match nearest(&key.name, known) {
                    Some(meant) => d.with_hint(format!("did you mean `{meant}`?")),
                    None => d.with_hint(format!("{what} takes: {}", known.join(", "))),
                };
                self.diags.push(d);
            }
        }
        Some(Fields { entries })
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

    fn duration(&mut self, node: Option<&Node>, what: &str) -> Option<Duration> {
        let node = node?;
        let text = self.string(Some(node), what)?;
        match parse_duration(&text) {
            Some(d) => Some(d),
            None => {
                let d = Diagnostic::error(format!("`{what}`: not a valid duration string: {text:?}"), Some(node.span))
                    .with_hint("durations are like 30s, 1m, 1h30m, 500ms");
                self.diags.push(d);
                None
            }
        }
    }

    fn boolean(&mut self, node: Option<&Node>, what: &str, default: bool) -> bool {
        let Some(node) = node else { return default };
        match node.as_bool() {
            Some(b) => b,
            None => {
                self.error(node.span, format!("`{what}` must be true or false, not {}", node.kind()));
                default
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

    fn string_list(&mut self, node: Option<&Node>, what: &str) -> Vec<(String, Span)> {
        let items = self.list(node, what);
        items.iter().filter_map(|i| self.string(Some(i), what).map(|s| (s, i.span))).collect()
    }

    /// An http(s) URL with a host, as Alertmanager's `config.URL` requires.
    fn url(&mut self, node: Option<&Node>, what: &str) -> Option<String> {
        let text = self.string(node, what)?;
        let span = node.map_or(Span::default(), |n| n.span);
        let Some((scheme, rest)) = text.split_once("://") else {
            self.error(span, format!("`{what}`: unsupported scheme \"\" for URL"));
            return None;
        };
        if scheme != "http" && scheme != "https" {
            self.error(span, format!("`{what}`: unsupported scheme {scheme:?} for URL"));
            return None;
        }
        let host = rest.split(['/', '?', '#']).next().unwrap_or("");
        if host.is_empty() || host.contains(' ') {
            self.error(span, format!("`{what}`: missing host for URL"));
            return None;
        }
        Some(text)
    }

    /// `matchers: ['a="b"', …]` (each string may hold several, comma-separated).
    fn matchers(&mut self, node: Option<&Node>, what: &str, out: &mut Vec<Matcher>) {
        for (text, span) in self.string_list(node, what) {
            match parse_matchers(&text) {
                Ok(ms) => out.extend(ms),
                Err(e) => {
                    let d = Diagnostic::error(format!("`{what}`: {e}"), Some(span))
                        .with_hint("matchers are like alertname=\"Watchdog\", severity=~\"critical|page\", team!=ops");
                    self.diags.push(d);
                }
            }
        }
    }

    /// The legacy `match` / `match_re` maps.
    fn legacy_match(&mut self, node: Option<&Node>, what: &str, kind: MatchType, out: &mut Vec<Matcher>) {
        let Some(node) = node else { return };
        let Some(entries) = node.as_mapping() else {
            self.error(node.span, format!("`{what}` must be a mapping, not {}", node.kind()));
            return;
        };
        for (key, value) in entries {
            if !is_valid_label_name(&key.name) {
                self.error(key.span, format!("invalid label name {:?}", key.name));
                continue;
            }
            let Some(text) =
                (if value.value == Value::Null { Some(String::new()) } else { self.string(Some(value), what) })
            else {
                continue;
            };
            match Matcher::new(kind, &key.name, &text) {
                Ok(m) => out.push(m),
                Err(e) => self.error(value.span, format!("`{what}`: {e}")),
            }
        }
    }

    fn http_config(&mut self, node: Option<&Node>, what: &str) -> HttpConfig {
        let mut out = HttpConfig::default();
        let Some(node) = node else { return out };
        let Some(f) = self.fields(node, what, HTTP_KEYS) else { return out };
        if let Some(basic) = f.get("basic_auth")
            && let Some(b) = self.fields(basic, "basic_auth", &["username", "password", "password_file"])
        {
            let user = self.string(b.get("username"), "username").unwrap_or_default();
            let pass = self.string(b.get("password"), "password").unwrap_or_default();
            out.basic_auth = Some((user, pass));
        }
        if let Some(auth) = f.get("authorization")
            && let Some(a) = self.fields(auth, "authorization", &["type", "credentials", "credentials_file"])
        {
            out.bearer_token = self.string(a.get("credentials"), "credentials");
        }
        if let Some(token) = self.string(f.get("bearer_token"), "bearer_token") {
            out.bearer_token = Some(token);
        }
        if let Some(tls) = f.get("tls_config")
            && let Some(t) = self.fields(
                tls,
                "tls_config",
                &[
                    "ca_file",
                    "cert_file",
                    "key_file",
                    "ca",
                    "cert",
                    "key",
                    "server_name",
                    "insecure_skip_verify",
                    "min_version",
                    "max_version",
                ],
            )
        {
            out.insecure_skip_verify = self.boolean(t.get("insecure_skip_verify"), "insecure_skip_verify", false);
        }
        out.proxy_url = self.string(f.get("proxy_url"), "proxy_url");
        out
    }

    fn config(&mut self, root: &Node) -> Option<Config> {
        let top = self.fields(root, "the top level", TOP_KEYS)?;
        let global = self.global(top.get("global"));
        let templates = self.string_list(top.get("templates"), "templates").into_iter().map(|(s, _)| s).collect();

        let mut time_intervals: Vec<NamedTimeInterval> = Vec::new();
        for key in ["mute_time_intervals", "time_intervals"] {
            for node in self.list(top.get(key), key) {
                let Some(ti) = self.named_time_interval(node, key) else { continue };
                if time_intervals.iter().any(|t| t.name == ti.name) {
                    let what = if key == "time_intervals" { "time interval" } else { "mute time interval" };
                    let span = node.get("name").map_or(node.span, |n| n.span);
                    self.error(span, format!("{what} {:?} is not unique", ti.name));
                }
                time_intervals.push(ti);
            }
        }

        let mut receivers: Vec<Receiver> = Vec::new();
        for node in self.list(top.get("receivers"), "receivers") {
            let Some(r) = self.receiver(node, &global) else { continue };
            if receivers.iter().any(|o| o.name == r.name) {
                let span = node.get("name").map_or(node.span, |n| n.span);
                self.error(span, format!("notification config name {:?} is not unique", r.name));
            }
            receivers.push(r);
        }

        let mut inhibit_rules = Vec::new();
        for node in self.list(top.get("inhibit_rules"), "inhibit_rules") {
            if let Some(rule) = self.inhibit_rule(node) {
                inhibit_rules.push(rule);
            }
        }

        let Some(route_node) = top.get("route") else {
            self.error(root.span, "no routes provided");
            return None;
        };
        let route = self.route(route_node)?;
        if route.receiver.is_none() {
            self.error(route_node.span, "root route must specify a default receiver");
        }
        if !route.matchers.is_empty() {
            let span = ["matchers", "match", "match_re"]
                .iter()
                .find_map(|k| route_node.get(k).map(|_| key_span(route_node, k)))
                .unwrap_or(route_node.span);
            self.error(span, "root route must not have any matchers");
        }
        if !route.mute_time_intervals.is_empty() {
            self.error(key_span(route_node, "mute_time_intervals"), "root route must not have any mute time intervals");
        }
        if !route.active_time_intervals.is_empty() {
            self.error(
                key_span(route_node, "active_time_intervals"),
                "root route must not have any active time intervals",
            );
        }
        let receiver_names: HashSet<&str> = receivers.iter().map(|r| r.name.as_str()).collect();
        let interval_names: HashSet<&str> = time_intervals.iter().map(|t| t.name.as_str()).collect();
        self.check_route_names(&route, route_node, &receiver_names, &interval_names);

        Some(Config { global, route, inhibit_rules, receivers, time_intervals, templates })
    }

    fn check_route_names(
        &mut self,
        route: &RouteConfig,
        node: &Node,
        receivers: &HashSet<&str>,
        intervals: &HashSet<&str>,
    ) {
        if let Some(name) = &route.receiver
            && !receivers.contains(name.as_str())
        {
            let span = node.get("receiver").map_or(node.span, |n| n.span);
            let mut d = Diagnostic::error(format!("undefined receiver {name:?} used in route"), Some(span));
            let known: Vec<&str> = receivers.iter().copied().collect();
            if let Some(meant) = nearest(name, &known) {
                d = d.with_hint(format!("did you mean `{meant}`?"));
            }
            self.diags.push(d);
        }
        for key in ["mute_time_intervals", "active_time_intervals"] {
            let names =
                if key == "mute_time_intervals" { &route.mute_time_intervals } else { &route.active_time_intervals };
            for (i, name) in names.iter().enumerate() {
                if !intervals.contains(name.as_str()) {
                    let span = match node.get(key).map(|n| &n.value) {
                        Some(Value::Sequence(items)) => items.get(i).map_or(node.span, |n| n.span),
                        _ => node.span,
                    };
                    let mut d =
                        Diagnostic::error(format!("undefined time interval {name:?} used in route"), Some(span));
                    let known: Vec<&str> = intervals.iter().copied().collect();
                    if let Some(meant) = nearest(name, &known) {
                        d = d.with_hint(format!("did you mean `{meant}`?"));
                    }
                    self.diags.push(d);
                }
            }
        }
        if let Some(Value::Sequence(children)) = node.get("routes").map(|n| &n.value) {
            // Children that failed to decode were skipped; match by position among the good ones.
            let good: Vec<&Node> =
                children.iter().filter(|c| c.as_mapping().is_some() || c.value == Value::Null).collect();
            for (child, child_node) in route.routes.iter().zip(good) {
                self.check_route_names(child, child_node, receivers, intervals);
            }
        }
    }

    fn global(&mut self, node: Option<&Node>) -> GlobalConfig {
        let mut g = GlobalConfig::default();
        let Some(node) = node else { return g };
        let Some(f) = self.fields(node, "global", GLOBAL_KEYS) else { return g };
        if let Some(d) = self.duration(f.get("resolve_timeout"), "resolve_timeout") {
            g.resolve_timeout = d;
        }
        g.http_config = self.http_config(f.get("http_config"), "http_config");
        g.smtp_from = self.string(f.get("smtp_from"), "smtp_from");
        if let Some(hello) = self.string(f.get("smtp_hello"), "smtp_hello") {
            g.smtp_hello = hello;
        }
        g.smtp_smarthost = self.string(f.get("smtp_smarthost"), "smtp_smarthost");
        g.smtp_auth_username = self.string(f.get("smtp_auth_username"), "smtp_auth_username");
        g.smtp_auth_password = self.string(f.get("smtp_auth_password"), "smtp_auth_password");
        g.smtp_require_tls = self.boolean(f.get("smtp_require_tls"), "smtp_require_tls", true);
        g.slack_api_url = self.url(f.get("slack_api_url"), "slack_api_url");
        if let Some(u) = self.url(f.get("pagerduty_url"), "pagerduty_url") {
            g.pagerduty_url = u;
        }
        if let Some(u) = self.url(f.get("opsgenie_api_url"), "opsgenie_api_url") {
            g.opsgenie_api_url = u;
        }
        g.opsgenie_api_key = self.string(f.get("opsgenie_api_key"), "opsgenie_api_key");
        for key in ["victorops_api_url", "wechat_api_url", "telegram_api_url", "webex_api_url"] {
            self.url(f.get(key), key);
        }
        g
    }

    fn route(&mut self, node: &Node) -> Option<RouteConfig> {
        let f = self.fields(node, "a route", ROUTE_KEYS)?;
        let mut r = RouteConfig { span: node.span, ..RouteConfig::default() };
        r.receiver = self.string(f.get("receiver"), "receiver").filter(|s| !s.is_empty());
        if let Some(group_by) = f.get("group_by") {
            let mut names: Vec<String> = Vec::new();
            for (label, span) in self.string_list(Some(group_by), "group_by") {
                if label == "..." {
                    r.group_by_all = true;
                } else if !is_valid_label_name(&label) {
                    self.error(span, format!("invalid label name {label:?} in group_by list"));
                } else if names.contains(&label) {
                    self.error(span, format!("duplicated label {label:?} in group_by"));
                } else {
                    names.push(label);
                }
            }
            if r.group_by_all && !names.is_empty() {
                self.error(
                    group_by.span,
                    "cannot have wildcard group_by (`...`) and other other labels at the same time",
                );
            }
            // Alertmanager keeps a nil list for `[]` and for `['...']`: the child inherits.
            if !names.is_empty() {
                r.group_by = Some(names);
            }
        }
        let mut matchers = Vec::new();
        self.legacy_match(f.get("match"), "match", MatchType::Equal, &mut matchers);
        self.legacy_match(f.get("match_re"), "match_re", MatchType::Regexp, &mut matchers);
        self.matchers(f.get("matchers"), "matchers", &mut matchers);
        r.matchers = Matchers(matchers);
        r.matchers.sort();
        r.continue_matching = self.boolean(f.get("continue"), "continue", false);
        r.group_wait = self.duration(f.get("group_wait"), "group_wait");
        r.group_interval = self.duration(f.get("group_interval"), "group_interval");
        if r.group_interval == Some(Duration::ZERO) {
            self.error(f.get("group_interval").map_or(node.span, |n| n.span), "group_interval cannot be zero");
        }
        r.repeat_interval = self.duration(f.get("repeat_interval"), "repeat_interval");
        if r.repeat_interval == Some(Duration::ZERO) {
            self.error(f.get("repeat_interval").map_or(node.span, |n| n.span), "repeat_interval cannot be zero");
        }
        r.mute_time_intervals =
            self.string_list(f.get("mute_time_intervals"), "mute_time_intervals").into_iter().map(|(s, _)| s).collect();
        r.active_time_intervals = self
            .string_list(f.get("active_time_intervals"), "active_time_intervals")
            .into_iter()
            .map(|(s, _)| s)
            .collect();
        for child in self.list(f.get("routes"), "routes") {
            if let Some(c) = self.route(child) {
                r.routes.push(c);
            }
        }
        Some(r)
    }

    fn inhibit_rule(&mut self, node: &Node) -> Option<InhibitRuleConfig> {
        let f = self.fields(node, "an inhibit rule", INHIBIT_KEYS)?;
        let mut source = Vec::new();
        self.legacy_match(f.get("source_match"), "source_match", MatchType::Equal, &mut source);
        self.legacy_match(f.get("source_match_re"), "source_match_re", MatchType::Regexp, &mut source);
        self.matchers(f.get("source_matchers"), "source_matchers", &mut source);
        let mut target = Vec::new();
        self.legacy_match(f.get("target_match"), "target_match", MatchType::Equal, &mut target);
        self.legacy_match(f.get("target_match_re"), "target_match_re", MatchType::Regexp, &mut target);
        self.matchers(f.get("target_matchers"), "target_matchers", &mut target);
        let mut equal = Vec::new();
        for (name, span) in self.string_list(f.get("equal"), "equal") {
            if !is_valid_label_name(&name) {
                self.error(span, format!("invalid label name {name:?} in equal list"));
            }
            equal.push(name);
        }
        let (mut source_matchers, mut target_matchers) = (Matchers(source), Matchers(target));
        source_matchers.sort();
        target_matchers.sort();
        Some(InhibitRuleConfig { source_matchers, target_matchers, equal })
    }

    fn receiver(&mut self, node: &Node, global: &GlobalConfig) -> Option<Receiver> {
        let f = self.fields(node, "a receiver", RECEIVER_KEYS)?;
        let name = self.string(f.get("name"), "name").unwrap_or_default();
        if name.is_empty() {
            self.error(node.span, "missing name in receiver");
            return None;
        }
        let mut integrations = Vec::new();
        for (key, value) in f.entries {
            let Some(kind) = kind_of_key(&key.name) else { continue };
            for (index, item) in self.list(Some(value), &key.name).iter().enumerate() {
                if let Some(i) = self.integration(kind, index, item, global) {
                    integrations.push(i);
                }
            }
        }
        Some(Receiver { name, integrations })
    }

    fn integration(
        &mut self,
        kind: IntegrationKind,
        index: usize,
        node: &Node,
        global: &GlobalConfig,
    ) -> Option<Integration> {
        let mut known: Vec<&str> = vec!["send_resolved", "http_config"];
        if kind == IntegrationKind::OnCall {
            known.clear();
        }
        known.extend_from_slice(integration_keys(kind));
        let what = format!("a {} config", kind.name());
        let f = self.fields(node, &what, &known)?;
        let send_resolved = self.boolean(f.get("send_resolved"), "send_resolved", default_send_resolved(kind));
        let http_config = match f.get("http_config") {
            Some(n) => self.http_config(Some(n), "http_config"),
            None => global.http_config.clone(),
        };
        let s = |d: &mut Decoder, k: &str| d.string(f.get(k), k);
        let settings = match kind {
            IntegrationKind::Webhook => {
                let url = match f.get("url") {
                    Some(n) => self.url(Some(n), "url"),
                    None => {
                        self.error(node.span, "one of url or url_file must be configured");
                        None
                    }
                };
                let max_alerts = match f.get("max_alerts").map(|n| (&n.value, n.span)) {
                    None => 0,
                    Some((Value::Int(n), _)) if *n >= 0 => *n as u64,
                    Some((_, span)) => {
                        self.error(span, "`max_alerts` must be a non-negative integer");
                        0
                    }
                };
                IntegrationSettings::Webhook { url: url?, max_alerts }
            }
            IntegrationKind::Slack => {
                let api_url = match f.get("api_url") {
                    Some(n) => self.url(Some(n), "api_url"),
                    None if f.get("api_url_file").is_some() => Some(String::new()),
                    None => match &global.slack_api_url {
                        Some(u) => Some(u.clone()),
                        None => {
                            self.error(node.span, "no global Slack API URL set either inline or in a file");
                            None
                        }
                    },
                };
                IntegrationSettings::Slack {
                    api_url: api_url?,
                    channel: s(self, "channel"),
                    username: s(self, "username"),
                    title: s(self, "title"),
                    text: s(self, "text"),
                }
            }
            IntegrationKind::PagerDuty => {
                let url = match f.get("url") {
                    Some(n) => self.url(Some(n), "url")?,
                    None => global.pagerduty_url.clone(),
                };
                let routing_key = s(self, "routing_key");
                let service_key = s(self, "service_key");
                if routing_key.is_none()
                    && service_key.is_none()
                    && f.get("routing_key_file").is_none()
                    && f.get("service_key_file").is_none()
                {
                    self.error(node.span, "missing service or routing key in PagerDuty config");
                }
                IntegrationSettings::PagerDuty {
                    url,
                    routing_key,
                    service_key,
                    severity: s(self, "severity"),
                    client: s(self, "client"),
                    client_url: s(self, "client_url"),
                }
            }
            IntegrationKind::MsTeams | IntegrationKind::Discord => {
                let webhook_url = match f.get("webhook_url") {
                    Some(n) => self.url(Some(n), "webhook_url"),
                    None => {
                        self.error(node.span, "one of webhook_url or webhook_url_file must be configured");
                        None
                    }
                }?;
                if kind == IntegrationKind::MsTeams {
                    IntegrationSettings::MsTeams { webhook_url, title: s(self, "title"), text: s(self, "text") }
                } else {
                    IntegrationSettings::Discord { webhook_url, title: s(self, "title"), message: s(self, "message") }
                }
            }
            IntegrationKind::Email => {
                let to = s(self, "to").unwrap_or_default();
                if to.is_empty() {
                    self.error(node.span, "missing to address in email config");
                }
                let smarthost = s(self, "smarthost").or_else(|| global.smtp_smarthost.clone());
                if smarthost.is_none() {
                    self.error(node.span, "no global SMTP smarthost set");
                }
                let from = s(self, "from").or_else(|| global.smtp_from.clone());
                if from.is_none() {
                    self.error(node.span, "no global mail from address set");
                }
                let require_tls = match node.get("require_tls") {
                    Some(flag) => flag.as_bool().unwrap_or(global.smtp_require_tls),
                    None => global.smtp_require_tls,
                };
                IntegrationSettings::Email {
                    to,
                    from: from.unwrap_or_default(),
                    smarthost: smarthost.unwrap_or_default(),
                    hello: s(self, "hello").unwrap_or_else(|| global.smtp_hello.clone()),
                    require_tls,
                    auth_username: s(self, "auth_username").or_else(|| global.smtp_auth_username.clone()),
                    auth_password: s(self, "auth_password").or_else(|| global.smtp_auth_password.clone()),
                }
            }
            IntegrationKind::OnCall => {
                let Some(escalation_policy) = s(self, "escalation_policy") else {
                    self.error(node.span, "an oncall config needs `escalation_policy`");
                    return None;
                };
                IntegrationSettings::OnCall { escalation_policy }
            }
            IntegrationKind::OpsGenie => {
                if f.get("api_key").is_none() && f.get("api_key_file").is_none() && global.opsgenie_api_key.is_none() {
                    self.error(node.span, "no global OpsGenie API Key set either inline or in a file");
                }
                self.other_settings(&f)
            }
            _ => self.other_settings(&f),
        };
        Some(Integration { kind, index, send_resolved, http_config, settings, span: node.span })
    }

    fn other_settings(&mut self, f: &Fields<'_>) -> IntegrationSettings {
        let mut map = BTreeMap::new();
        for (k, v) in f.entries {
            if let Some(text) = v.scalar_text()
                && k.name != "send_resolved"
            {
                map.insert(k.name.clone(), text);
            }
        }
        IntegrationSettings::Other(map)
    }

    fn named_time_interval(&mut self, node: &Node, key: &str) -> Option<NamedTimeInterval> {
        let f = self.fields(node, &format!("a {key} entry"), TIME_INTERVAL_KEYS)?;
        let name = self.string(f.get("name"), "name").unwrap_or_default();
        if name.is_empty() {
            self.error(node.span, "missing name in time interval");
            return None;
        }
        let mut intervals = Vec::new();
        for item in self.list(f.get("time_intervals"), "time_intervals") {
            if let Some(i) = self.time_interval(item) {
                intervals.push(i);
            }
        }
        Some(NamedTimeInterval { name, intervals })
    }

    fn ranges(
        &mut self,
        node: Option<&Node>,
        what: &str,
        parse: impl Fn(&str) -> Result<i32, String>,
        check: impl Fn(InclusiveRange) -> Result<(), String>,
    ) -> Option<Vec<InclusiveRange>> {
        let node = node?;
        let mut out = Vec::new();
        for (text, span) in self.string_list(Some(node), what) {
            match parse_range(&text, &parse).and_then(|r| check(r).map(|()| r)) {
                Ok(r) => out.push(r),
                Err(e) => self.error(span, format!("`{what}`: {e}")),
            }
        }
        Some(out)
    }

    fn time_interval(&mut self, node: &Node) -> Option<TimeInterval> {
        let f = self.fields(node, "a time interval", INTERVAL_KEYS)?;
        let mut ti = TimeInterval::default();
        if let Some(times) = f.get("times") {
            let mut out = Vec::new();
            for item in self.list(Some(times), "times") {
                let Some(t) = self.fields(item, "a time range", &["start_time", "end_time"]) else { continue };
                let (Some(start), Some(end)) =
                    (self.string(t.get("start_time"), "start_time"), self.string(t.get("end_time"), "end_time"))
                else {
                    self.error(item.span, "both start and end times must be provided");
                    continue;
                };
                let (Some(s), Some(e)) = (parse_clock(&start), parse_clock(&end)) else {
                    let bad = if parse_clock(&start).is_none() { &start } else { &end };
                    let key = if parse_clock(&start).is_none() { "start_time" } else { "end_time" };
                    let span = t.get(key).map_or(item.span, |n| n.span);
                    self.diags.push(
                        Diagnostic::error(format!("couldn't parse timestamp {bad}, invalid format"), Some(span))
                            .with_hint("times are HH:MM, 00:00 to 24:00"),
                    );
                    continue;
                };
                if s >= e {
                    self.error(item.span, "start time cannot be equal or greater than end time");
                    continue;
                }
                out.push(TimeRange { start_minute: s, end_minute: e });
            }
            ti.times = Some(out);
        }
        let named = |names: &'static [&'static str], offset: i32, what: &'static str| {
            move |text: &str| -> Result<i32, String> {
                let lower = text.to_ascii_lowercase();
                if let Some(i) = names.iter().position(|n| *n == lower) {
                    return Ok(i as i32 + offset);
                }
                if what == "month"
                    && let Ok(n) = text.parse::<i32>()
                {
                    return if (1..=12).contains(&n) { Ok(n) } else { Err(format!("{n} is not a valid month")) };
                }
                Err(format!("{text:?} is not a valid {what}"))
            }
        };
        let ordered = |r: InclusiveRange| {
            if r.begin > r.end { Err("start day cannot be before end day".to_owned()) } else { Ok(()) }
        };
        ti.weekdays = self.ranges(f.get("weekdays"), "weekdays", named(&WEEKDAYS, 0, "weekday"), ordered);
        ti.months = self.ranges(f.get("months"), "months", named(&MONTHS, 1, "month"), |r| {
            if r.begin > r.end { Err("end month cannot be before start month".to_owned()) } else { Ok(()) }
        });
        ti.days_of_month = self.ranges(
            f.get("days_of_month"),
            "days_of_month",
            |t| match t.parse::<i32>() {
                Ok(n) if n != 0 && (-31..=31).contains(&n) => Ok(n),
                Ok(n) => Err(format!("{n} is not a valid day of the month: out of range")),
                Err(_) => Err(format!("{t:?} is not a valid day of the month")),
            },
            |r| {
                // Negative days are compared as if the month had 30 days, as Alertmanager does.
                let begin = if r.begin < 0 { 30 + r.begin } else { r.begin };
                let end = if r.end < 0 { 30 + r.end } else { r.end };
                if begin > end { Err("start day cannot be before end day".to_owned()) } else { Ok(()) }
            },
        );
        ti.years = self.ranges(
            f.get("years"),
            "years",
            |t| t.parse::<i32>().map_err(|_| format!("{t:?} is not a valid year")),
            |r| if r.begin > r.end { Err("end year cannot be before start year".to_owned()) } else { Ok(()) },
        );
        if let Some(loc) = f.get("location") {
            let name = self.string(Some(loc), "location").unwrap_or_default();
            let tz = match name.as_str() {
                "" | "UTC" => Ok(TimeZone::UTC),
                "Local" => Ok(TimeZone::system()),
                other => TimeZone::get(other),
            };
            match tz {
                Ok(tz) => ti.location = Some(tz),
                Err(e) => self.error(loc.span, format!("unknown time zone {name}: {e}")),
            }
        }
        Some(ti)
    }
}

fn key_span(node: &Node, key: &str) -> Span {
    node.as_mapping().and_then(|m| m.iter().rev().find(|(k, _)| k.name == key)).map_or(node.span, |(k, _)| k.span)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        match load(text, "am.yml") {
            Ok(_) => panic!("accepted:\n{text}"),
            Err(e) => e.rendered,
        }
    }

    #[test]
    fn defaults_and_inheritance_inputs() {
        let c = load(
            "route:\n  receiver: a\n  group_by: ['...']\n  routes:\n    - matchers: ['x=\"1\"', 'y=~\"a|b\"']\n      match: {z: '3'}\n      receiver: b\n      continue: true\nreceivers:\n  - name: a\n  - name: b\n    webhook_configs:\n      - url: http://127.0.0.1:1/x\n",
            "am.yml",
        )
        .unwrap();
        assert_eq!(c.global.resolve_timeout, DEFAULT_RESOLVE_TIMEOUT);
        assert!(c.route.group_by_all);
        let child = &c.route.routes[0];
        assert_eq!(child.matchers.to_string(), r#"{x="1",y=~"a|b",z="3"}"#);
        assert!(child.continue_matching);
        let w = &c.receivers[1].integrations[0];
        assert!(w.send_resolved);
        assert_eq!(w.settings, IntegrationSettings::Webhook { url: "http://127.0.0.1:1/x".into(), max_alerts: 0 });
    }

    #[test]
    fn errors_are_positioned_with_hints() {
        let e = err("route:\n  receiver: a\n  recevier: b\nreceivers:\n  - name: a\n");
        assert!(e.contains("am.yml:3:3: unknown key `recevier`") && e.contains("did you mean `receiver`?"), "{e}");
        let e = err("route:\n  receiver: nope\nreceivers:\n  - name: a\n");
        assert!(e.contains("am.yml:2:13: undefined receiver \"nope\""), "{e}");
        let e = err("route:\n  receiver: a\n  group_interval: 0s\nreceivers:\n  - name: a\n");
        assert!(e.contains("group_interval cannot be zero"), "{e}");
        let e = err("route:\n  receiver: a\n  group_wait: 5x\nreceivers:\n  - name: a\n");
        assert!(e.contains("am.yml:3:15:"), "{e}");
        let e = err("route:\n  receiver: a\n  matchers: ['x=y']\nreceivers:\n  - name: a\n");
        assert!(e.contains("root route must not have any matchers"), "{e}");
        let e = err("route:\n  receiver: a\nreceivers:\n  - name: a\n  - name: a\n");
        assert!(e.contains("am.yml:5:11: notification config name \"a\" is not unique"), "{e}");
    }
}
