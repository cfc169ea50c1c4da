//! Gatus's `config.yaml`, read so that an existing file works unchanged: its `endpoints:`
//! (also accepted under opsloop's name `checks:`), the same keys and defaults (GET, 60s
//! interval, 10s client timeout, conditions required, names unique per group), and Gatus's
//! other sections (`storage`, `alerting`, `web`, `ui`…) accepted and ignored with a note,
//! since the host owns storage, alerting and the web. opsloop adds `retries` and `successes`
//! (flap damping), `command` checks, and a top-level `heartbeats:` list.
//!
//! Read with opsloop-config's YAML tree rather than serde, as `prometheus.yml` is: every
//! problem at file:line:column (a bad condition points into the condition's text), and an
//! unknown key answered with the key it was probably meant to be.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use opsloop_config::diagnostic::{Diagnostic, Sources, nearest};
use opsloop_config::yaml::{self, Key, Node, Span, Value};

use crate::condition::{Condition, Display};
use crate::duration::parse_go_duration;
use crate::heartbeat::{HeartbeatSpec, Schedule};
use crate::kinds::{self, KindRef, Target};

pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Healthchecks.io's default grace period.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(3600);

/// Everything a checks file declares.
#[derive(Debug, Clone, Default)]
pub struct Config {
    pub endpoints: Vec<Endpoint>,
    pub heartbeats: Vec<HeartbeatSpec>,
    /// What loaded but does nothing here (Gatus sections the host owns), for the user.
    pub notes: Vec<String>,
}

/// One check (Gatus calls it an endpoint).
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub name: String,
    pub group: Option<String>,
    /// Empty for `command` checks.
    pub url: String,
    pub kind: KindRef,
    pub method: http::Method,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Send `body` as a GraphQL query (`{"query": body}`, JSON).
    pub graphql: bool,
    pub interval: Duration,
    pub enabled: bool,
    pub conditions: Vec<Condition>,
    pub client: ClientConfig,
    pub dns: Option<DnsQuery>,
    /// A `command` check's argument vector (never a shell string).
    pub command: Vec<String>,
    pub ui: UiConfig,
    /// Kept for the host's alerting; the checks engine does not send alerts.
    pub alerts: Vec<EndpointAlert>,
    pub extra_labels: BTreeMap<String, String>,
    /// Consecutive failures before the check is down (opsloop; default 1).
    pub retries: u32,
    /// Consecutive successes before a down check is up again (opsloop; default 1).
    pub successes: u32,
}

impl Endpoint {
    /// `group_name`, as Gatus keys endpoints.
    pub fn key(&self) -> String {
        key(self.group.as_deref(), &self.name)
    }

    /// Whether a condition reads the body (a probe reads it only then, as Gatus).
    pub fn needs_body(&self) -> bool {
        self.conditions.iter().any(Condition::uses_body)
    }

    /// A minimal endpoint of `url` (tests and hosts building checks in code); `None` when no
    /// kind runs that URL.
    pub fn new(name: &str, url: &str, conditions: &[&str]) -> Option<Endpoint> {
        let kind = kinds::kind_for(&Target::of(url, false, false))?;
        let conditions = conditions.iter().map(|c| Condition::parse(c).ok()).collect::<Option<Vec<_>>>()?;
        Some(Endpoint {
            name: name.to_owned(),
            group: None,
            url: url.to_owned(),
            kind,
            method: http::Method::GET,
            headers: Vec::new(),
            body: String::new(),
            graphql: false,
            interval: DEFAULT_INTERVAL,
            enabled: true,
            conditions,
            client: ClientConfig::default(),
            dns: None,
            command: Vec::new(),
            ui: UiConfig::default(),
            alerts: Vec::new(),
            extra_labels: BTreeMap::new(),
            retries: 1,
            successes: 1,
        })
    }
}

/// Gatus's key of an endpoint: group and name lowercased, separators made dashes, joined by `_`.
pub fn key(group: Option<&str>, name: &str) -> String {
    let sanitize = |text: &str| {
        text.trim()
            .to_lowercase()
            .chars()
            .map(|c| if matches!(c, ' ' | '/' | '_' | ',' | '.' | '#' | '+' | '&') { '-' } else { c })
            .collect::<String>()
    };
    format!("{}_{}", sanitize(group.unwrap_or("")), sanitize(name))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientConfig {
    pub timeout: Duration,
    pub insecure: bool,
    pub ignore_redirect: bool,
    /// Resolve the target's host through this server instead of the system's resolver.
    pub dns_resolver: Option<Resolver>,
    pub proxy_url: Option<String>,
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            timeout: DEFAULT_TIMEOUT,
            insecure: false,
            ignore_redirect: false,
            dns_resolver: None,
            proxy_url: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

/// A DNS server: `tcp://1.1.1.1:53` (Gatus's `dns-resolver`), or a DNS check's `url`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Resolver {
    pub transport: Transport,
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordType {
    A,
    Aaaa,
    Cname,
    Mx,
    Ns,
    Ptr,
    Soa,
    Srv,
    Txt,
}

impl RecordType {
    const ALL: [(&'static str, RecordType); 9] = [
        ("A", RecordType::A),
        ("AAAA", RecordType::Aaaa),
        ("CNAME", RecordType::Cname),
        ("MX", RecordType::Mx),
        ("NS", RecordType::Ns),
        ("PTR", RecordType::Ptr),
        ("SOA", RecordType::Soa),
        ("SRV", RecordType::Srv),
        ("TXT", RecordType::Txt),
    ];

    pub fn parse(text: &str) -> Option<RecordType> {
        Self::ALL.iter().find(|(name, _)| name.eq_ignore_ascii_case(text)).map(|(_, t)| *t)
    }

    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(_, t)| *t == self).map_or("A", |(name, _)| name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsQuery {
    /// Fully qualified (a final `.` is added as Gatus adds it).
    pub name: String,
    pub record_type: RecordType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UiConfig {
    pub display: Display,
    pub hide_hostname: bool,
    pub hide_url: bool,
    pub hide_port: bool,
    pub hide_conditions: bool,
    pub hide_errors: bool,
}

/// An endpoint's `alerts:` entry, kept for the host (Gatus's defaults).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointAlert {
    /// The provider: `slack`, `pagerduty`, `custom`…
    pub provider: String,
    pub enabled: bool,
    pub failure_threshold: u32,
    pub success_threshold: u32,
    pub send_on_resolved: bool,
    pub description: Option<String>,
    pub minimum_reminder_interval: Option<Duration>,
}

pub use opsloop_config::diagnostic::{ConfigError, LoadError};

pub fn load_file(path: &Path) -> Result<Config, LoadError> {
    opsloop_config::diagnostic::load_file(path, load)
}

/// Parses a checks file; `path` names it in errors.
pub fn load(text: &str, path: &str) -> Result<Config, ConfigError> {
    let mut sources = Sources::default();
    let file = sources.add(path, text);
    let mut d = Decoder { diags: Vec::new(), notes: Vec::new(), text };
    let config = match yaml::parse_with_header(text, file) {
        Ok(parsed) => {
            for key in &parsed.duplicates {
                d.error(key.span, format!("key `{}` is already set in this mapping", key.name));
            }
            if parsed.spec.is_some() {
                d.error(parsed.body.span, "a checks file holds one YAML document");
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

const TOP_KEYS: &[&str] = &["endpoints", "checks", "heartbeats"];
/// Gatus's other sections: the host does storage, alerting, the web and the UI.
const GATUS_SECTIONS: &[&str] = &[
    "storage",
    "alerting",
    "web",
    "ui",
    "metrics",
    "maintenance",
    "security",
    "connectivity",
    "external-endpoints",
    "announcements",
    "concurrency",
    "skip-invalid-config-update",
    "disable-monitoring-lock",
    "remote",
    "suites",
    "debug",
];
const ENDPOINT_KEYS: &[&str] = &[
    "name",
    "group",
    "url",
    "method",
    "headers",
    "body",
    "graphql",
    "interval",
    "enabled",
    "conditions",
    "client",
    "ui",
    "alerts",
    "dns",
    "ssh",
    "maintenance-windows",
    "extra-labels",
    "retries",
    "successes",
    "command",
];
const CLIENT_KEYS: &[&str] = &[
    "timeout",
    "insecure",
    "ignore-redirect",
    "dns-resolver",
    "proxy-url",
    "network",
    "oauth2",
    "identity-aware-proxy",
    "tls",
    "ssh-tunnel",
];
const CLIENT_IGNORED: &[&str] = &["network", "oauth2", "identity-aware-proxy", "tls", "ssh-tunnel"];
const UI_KEYS: &[&str] = &[
    "hide-hostname",
    "hide-url",
    "hide-port",
    "hide-conditions",
    "hide-errors",
    "dont-resolve-failed-conditions",
    "resolve-successful-conditions",
    "badge",
];
const ALERT_KEYS: &[&str] = &[
    "type",
    "enabled",
    "failure-threshold",
    "success-threshold",
    "send-on-resolved",
    "description",
    "minimum-reminder-interval",
    "provider-override",
];
const DNS_KEYS: &[&str] = &["query-name", "query-type"];
const HEARTBEAT_KEYS: &[&str] = &["name", "group", "period", "schedule", "timezone", "grace", "alerts"];

struct Decoder<'t> {
    diags: Vec<Diagnostic>,
    notes: Vec<String>,
    text: &'t str,
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

impl Decoder<'_> {
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

    fn duration(&mut self, node: Option<&Node>, what: &str) -> Option<Duration> {
        let node = node?;
        let text = self.string(Some(node), what)?;
        match parse_go_duration(&text) {
            Some(d) => Some(d),
            None => {
                let d = Diagnostic::error(format!("`{what}`: invalid duration {text:?}"), Some(node.span))
                    .with_hint("durations are Go's: 30s, 5m, 1h30m, 500ms (no days: 48h)");
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

    fn count(&mut self, node: Option<&Node>, what: &str, default: u32) -> u32 {
        let Some(node) = node else { return default };
        match node.value {
            Value::Int(n) if n >= 1 => u32::try_from(n).unwrap_or(u32::MAX),
            _ => {
                self.error(node.span, format!("`{what}` must be a whole number of at least 1"));
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

    fn string_map(&mut self, node: Option<&Node>, what: &str) -> Vec<(String, String)> {
        let Some(node) = node else { return Vec::new() };
        match &node.value {
            Value::Mapping(entries) => entries
                .iter()
                .filter_map(|(k, v)| {
                    let value = if v.value == Value::Null { Some(String::new()) } else { self.string(Some(v), what) };
                    value.map(|value| (k.name.clone(), value))
                })
                .collect(),
            _ => {
                self.error(node.span, format!("`{what}` must be a mapping, not {}", node.kind()));
                Vec::new()
            }
        }
    }

    fn config(&mut self, root: &Node) -> Option<Config> {
        let known: Vec<&str> = TOP_KEYS.iter().chain(GATUS_SECTIONS).copied().collect();
        let top = self.fields(root, "the top level", &known)?;
        for (key, _) in top.entries {
            if GATUS_SECTIONS.contains(&key.name.as_str()) {
                let why = match key.name.as_str() {
                    "external-endpoints" => "pushed results come in as opsloop heartbeats",
                    "alerting" => "alerts go through opsloop's alerting; endpoints' `alerts` are kept for it",
                    _ => "the opsloop server provides it",
                };
                self.notes.push(format!("`{}` is Gatus's and is ignored: {why}", key.name));
            }
        }
        let mut endpoints: Vec<Endpoint> = Vec::new();
        let mut spans: Vec<Span> = Vec::new();
        for section in ["endpoints", "checks"] {
            for node in self.list(top.get(section), section) {
                let Some(endpoint) = self.endpoint(node) else { continue };
                let key = endpoint.key();
                if let Some(i) = endpoints.iter().position(|e| e.key() == key) {
                    let span = node.get("name").map_or(node.span, |n| n.span);
                    let first = spans.get(i).map_or(String::new(), |s| format!(" (first at line {})", s.line));
                    self.error(
                        span,
                        format!("there is already a check named {:?} in this group{first}", endpoint.name),
                    );
                }
                spans.push(node.span);
                endpoints.push(endpoint);
            }
        }
        let mut heartbeats: Vec<HeartbeatSpec> = Vec::new();
        for node in self.list(top.get("heartbeats"), "heartbeats") {
            if let Some(hb) = self.heartbeat(node) {
                if heartbeats.iter().any(|h| h.key() == hb.key()) {
                    let span = node.get("name").map_or(node.span, |n| n.span);
                    self.error(span, format!("there is already a heartbeat named {:?} in this group", hb.name));
                }
                heartbeats.push(hb);
            }
        }
        Some(Config { endpoints, heartbeats, notes: std::mem::take(&mut self.notes) })
    }

    fn endpoint(&mut self, node: &Node) -> Option<Endpoint> {
        let f = self.fields(node, "an endpoint", ENDPOINT_KEYS)?;
        let name = self.string(f.get("name"), "name").unwrap_or_default();
        if name.trim().is_empty() {
            self.error(f.span, "an endpoint needs a `name`");
        }
        let group = self.string(f.get("group"), "group").filter(|g| !g.is_empty());
        let url = self.string(f.get("url"), "url").unwrap_or_default();
        let command = self.command(f.get("command"));
        let dns = f.get("dns").and_then(|n| self.dns(n));
        if f.get("ssh").is_some() {
            self.notes.push(format!("endpoint {name:?}: `ssh` checks are not supported; it will report an error"));
        }
        if f.get("maintenance-windows").is_some() {
            self.notes.push(format!("endpoint {name:?}: `maintenance-windows` is ignored (the host sets maintenance)"));
        }
        let target = Target::of(&url, dns.is_some(), !command.is_empty());
        let kind = if url.is_empty() && command.is_empty() {
            self.error(f.get("url").map_or(f.span, |n| n.span), format!("endpoint {name:?} needs a `url`"));
            None
        } else if !url.is_empty() && !command.is_empty() {
            self.error(f.span, "an endpoint has a `url` or a `command`, not both");
            None
        } else {
            match kinds::kind_for(&target) {
                Some(kind) => {
                    if let Err(e) = kind.validate(&url) {
                        self.error(f.get("url").map_or(f.span, |n| n.span), e.to_string());
                    }
                    Some(kind)
                }
                None => {
                    let span = f.get("url").map_or(f.span, |n| n.span);
                    let d = Diagnostic::error(format!("no check kind runs the url {url:?}"), Some(span)).with_hint(
                        format!(
                            "urls start with {}; a DNS check has `url: 8.8.8.8` and a `dns:` block",
                            kinds::schemes().iter().map(|s| format!("{s}://")).collect::<Vec<_>>().join(", ")
                        ),
                    );
                    self.diags.push(d);
                    None
                }
            }
        };
        let method = match self.string(f.get("method"), "method") {
            None => http::Method::GET,
            Some(text) => match http::Method::from_bytes(text.to_ascii_uppercase().as_bytes()) {
                Ok(method) => method,
                Err(_) => {
                    self.error(f.get("method").map_or(f.span, |n| n.span), format!("invalid HTTP method {text:?}"));
                    http::Method::GET
                }
            },
        };
        let headers = self.string_map(f.get("headers"), "headers");
        let body = self.string(f.get("body"), "body").unwrap_or_default();
        let graphql = self.boolean(f.get("graphql"), "graphql", false);
        let interval =
            self.duration(f.get("interval"), "interval").filter(|d| !d.is_zero()).unwrap_or(DEFAULT_INTERVAL);
        let enabled = self.boolean(f.get("enabled"), "enabled", true);
        let conditions = self.conditions(f.get("conditions"), f.span, &name);
        let client = f.get("client").map(|n| self.client(n)).unwrap_or_default();
        let ui = f.get("ui").map(|n| self.ui(n)).unwrap_or_default();
        let mut alerts = Vec::new();
        for node in self.list(f.get("alerts"), "alerts") {
            if let Some(alert) = self.alert(node) {
                alerts.push(alert);
            }
        }
        let extra_labels = self.string_map(f.get("extra-labels"), "extra-labels").into_iter().collect();
        let retries = self.count(f.get("retries"), "retries", 1);
        let successes = self.count(f.get("successes"), "successes", 1);
        Some(Endpoint {
            name,
            group,
            url,
            kind: kind?,
            method,
            headers,
            body,
            graphql,
            interval,
            enabled,
            conditions,
            client,
            dns,
            command,
            ui,
            alerts,
            extra_labels,
            retries,
            successes,
        })
    }

    fn command(&mut self, node: Option<&Node>) -> Vec<String> {
        let Some(node) = node else { return Vec::new() };
        let Value::Sequence(items) = &node.value else {
            let d = Diagnostic::error("`command` must be a list (an argument vector)", Some(node.span))
                .with_hint("write `command: [/usr/bin/check, --flag]`: it runs without a shell");
            self.diags.push(d);
            return Vec::new();
        };
        let argv: Vec<String> = items.iter().filter_map(|i| self.string(Some(i), "command")).collect();
        if argv.is_empty() {
            self.error(node.span, "`command` needs at least the program");
        }
        argv
    }

    fn conditions(&mut self, node: Option<&Node>, endpoint_span: Span, name: &str) -> Vec<Condition> {
        let items = self.list(node, "conditions");
        if items.is_empty() {
            let span = node.map_or(endpoint_span, |n| n.span);
            let d = Diagnostic::error(format!("endpoint {name:?} needs at least one condition"), Some(span))
                .with_hint("e.g. `conditions: [\"[STATUS] == 200\"]`");
            self.diags.push(d);
        }
        let mut out = Vec::new();
        for item in items {
            let Some(text) = self.string(Some(item), "conditions") else { continue };
            match Condition::parse(&text) {
                Ok(c) => out.push(c),
                Err(e) => {
                    let span = self.span_within(item.span, &text, e.offset);
                    let mut d = Diagnostic::error(e.message, Some(span));
                    if let Some(hint) = e.hint {
                        d = d.with_hint(hint);
                    }
                    self.diags.push(d);
                }
            }
        }
        out
    }

    /// The position of byte `offset` of a one-line scalar's text, past its opening quote.
    fn span_within(&self, span: Span, text: &str, offset: usize) -> Span {
        if text.contains('\n') {
            return span;
        }
        let start = self.text.char_indices().nth(span.index).map(|(i, _)| i);
        let quoted = start.and_then(|i| self.text[i..].chars().next()).is_some_and(|c| c == '"' || c == '\'');
        let chars = text.get(..offset).map_or(0, |t| t.chars().count()) + usize::from(quoted);
        Span {
            column: span.column.saturating_add(u32::try_from(chars).unwrap_or(0)),
            index: span.index + chars,
            ..span
        }
    }

    fn client(&mut self, node: &Node) -> ClientConfig {
        let Some(f) = self.fields(node, "`client`", CLIENT_KEYS) else { return ClientConfig::default() };
        for key in CLIENT_IGNORED {
            if f.get(key).is_some() {
                self.notes.push(format!("client `{key}` is not supported by opsloop and is ignored"));
            }
        }
        let dns_resolver = f.get("dns-resolver").and_then(|n| {
            let text = self.string(Some(n), "dns-resolver")?;
            let resolver = parse_resolver(&text, true);
            if resolver.is_none() {
                let d = Diagnostic::error(format!("invalid dns-resolver {text:?}"), Some(n.span))
                    .with_hint("write it as Gatus does: `tcp://1.1.1.1:53` or `udp://8.8.8.8:53`");
                self.diags.push(d);
            }
            resolver
        });
        ClientConfig {
            timeout: self.duration(f.get("timeout"), "timeout").filter(|d| !d.is_zero()).unwrap_or(DEFAULT_TIMEOUT),
            insecure: self.boolean(f.get("insecure"), "insecure", false),
            ignore_redirect: self.boolean(f.get("ignore-redirect"), "ignore-redirect", false),
            dns_resolver,
            proxy_url: self.string(f.get("proxy-url"), "proxy-url").filter(|p| !p.is_empty()),
        }
    }

    fn ui(&mut self, node: &Node) -> UiConfig {
        let Some(f) = self.fields(node, "`ui`", UI_KEYS) else { return UiConfig::default() };
        UiConfig {
            display: Display {
                dont_resolve_failed: self.boolean(
                    f.get("dont-resolve-failed-conditions"),
                    "dont-resolve-failed-conditions",
                    false,
                ),
                resolve_successful: self.boolean(
                    f.get("resolve-successful-conditions"),
                    "resolve-successful-conditions",
                    false,
                ),
            },
            hide_hostname: self.boolean(f.get("hide-hostname"), "hide-hostname", false),
            hide_url: self.boolean(f.get("hide-url"), "hide-url", false),
            hide_port: self.boolean(f.get("hide-port"), "hide-port", false),
            hide_conditions: self.boolean(f.get("hide-conditions"), "hide-conditions", false),
            hide_errors: self.boolean(f.get("hide-errors"), "hide-errors", false),
        }
    }

    fn alert(&mut self, node: &Node) -> Option<EndpointAlert> {
        let f = self.fields(node, "an alert", ALERT_KEYS)?;
        let Some(provider) = self.string(f.get("type"), "type") else {
            self.error(f.span, "an alert needs a `type` (slack, pagerduty, custom…)");
            return None;
        };
        Some(EndpointAlert {
            provider,
            enabled: self.boolean(f.get("enabled"), "enabled", true),
            failure_threshold: self.count(f.get("failure-threshold"), "failure-threshold", 3),
            success_threshold: self.count(f.get("success-threshold"), "success-threshold", 2),
            send_on_resolved: self.boolean(f.get("send-on-resolved"), "send-on-resolved", false),
            description: self.string(f.get("description"), "description"),
            minimum_reminder_interval: self.duration(f.get("minimum-reminder-interval"), "minimum-reminder-interval"),
        })
    }

    fn dns(&mut self, node: &Node) -> Option<DnsQuery> {
        let f = self.fields(node, "`dns`", DNS_KEYS)?;
        let name = self.string(f.get("query-name"), "query-name");
        let record = self.string(f.get("query-type"), "query-type");
        let (Some(mut name), Some(record)) = (name, record) else {
            self.error(f.span, "`dns` needs `query-name` and `query-type`");
            return None;
        };
        let Some(record_type) = RecordType::parse(&record) else {
            let span = f.get("query-type").map_or(f.span, |n| n.span);
            let d = Diagnostic::error(format!("unsupported query-type {record:?}"), Some(span)).with_hint(format!(
                "query types: {}",
                RecordType::ALL.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            ));
            self.diags.push(d);
            return None;
        };
        if !name.ends_with('.') {
            name.push('.');
        }
        Some(DnsQuery { name, record_type })
    }

    fn heartbeat(&mut self, node: &Node) -> Option<HeartbeatSpec> {
        let f = self.fields(node, "a heartbeat", HEARTBEAT_KEYS)?;
        let name = self.string(f.get("name"), "name").unwrap_or_default();
        if name.trim().is_empty() {
            self.error(f.span, "a heartbeat needs a `name`");
        }
        let group = self.string(f.get("group"), "group").filter(|g| !g.is_empty());
        let grace = self.duration(f.get("grace"), "grace").unwrap_or(DEFAULT_GRACE);
        let period = self.duration(f.get("period"), "period");
        let schedule = self.string(f.get("schedule"), "schedule");
        let timezone = self.string(f.get("timezone"), "timezone");
        let schedule = match (period, schedule) {
            (Some(period), None) if !period.is_zero() => {
                if timezone.is_some() {
                    self.notes.push(format!("heartbeat {name:?}: `timezone` matters only with a cron `schedule`"));
                }
                Schedule::Period(period)
            }
            (None, Some(expression)) => match Schedule::cron(&expression, timezone.as_deref().unwrap_or("UTC")) {
                Ok(schedule) => schedule,
                Err(e) => {
                    let span = match e {
                        crate::heartbeat::ScheduleError::TimeZone(_) => f.get("timezone"),
                        crate::heartbeat::ScheduleError::Cron { .. } => f.get("schedule"),
                    }
                    .map_or(f.span, |n| n.span);
                    self.error(span, e.to_string());
                    return None;
                }
            },
            (Some(_), Some(_)) => {
                self.error(f.span, "a heartbeat has a `period` or a cron `schedule`, not both");
                return None;
            }
            // An invalid period or schedule has been reported already.
            _ if f.get("period").is_some() || f.get("schedule").is_some() => return None,
            _ => {
                let d = Diagnostic::error("a heartbeat needs a `period` (e.g. 1h) or a cron `schedule`", Some(f.span))
                    .with_hint("e.g. `schedule: \"0 3 * * *\"` with `timezone: Europe/Berlin`");
                self.diags.push(d);
                return None;
            }
        };
        Some(HeartbeatSpec { name, group, schedule, grace })
    }
}

/// `tcp://1.1.1.1:53`, `udp://8.8.8.8:53`; with `scheme_required` false also `8.8.8.8`,
/// `8.8.8.8:5353`, `[::1]:53` (a DNS check's url).
pub fn parse_resolver(text: &str, scheme_required: bool) -> Option<Resolver> {
    let (transport, rest) = if let Some(rest) = text.strip_prefix("tcp://") {
        (Transport::Tcp, rest)
    } else if let Some(rest) = text.strip_prefix("udp://") {
        (Transport::Udp, rest)
    } else if scheme_required || text.contains("://") {
        return None;
    } else {
        (Transport::Udp, text)
    };
    let (host, port) = split_host_port(rest, 53)?;
    Some(Resolver { transport, host, port })
}

/// `host:port`, `[v6]:port`, or a bare host with `default_port`.
pub fn split_host_port(text: &str, default_port: u16) -> Option<(String, u16)> {
    let text = text.trim_end_matches('/');
    if text.is_empty() {
        return None;
    }
    if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(port) => port.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((host.to_owned(), port));
    }
    match text.rsplit_once(':') {
        // More than one colon: a bare IPv6 address.
        Some((host, _)) if host.contains(':') => Some((text.to_owned(), default_port)),
        Some((host, port)) if !host.is_empty() => Some((host.to_owned(), port.parse().ok()?)),
        Some(_) => None,
        None => Some((text.to_owned(), default_port)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(text: &str) -> String {
        load(text, "checks.yml").unwrap_err().rendered
    }

    #[test]
    fn a_gatus_file_loads_with_its_defaults() {
        let text = r#"
storage:
  type: sqlite
  path: /data/data.db
alerting:
  slack:
    webhook-url: "https://hooks.slack.com/services/x"
web:
  port: 8080
ui:
  title: Status
endpoints:
  - name: front
    group: core
    url: "https://example.org/health"
    interval: 5m
    conditions:
      - "[STATUS] == 200"
      - "[BODY].status == UP"
      - "[RESPONSE_TIME] < 300"
      - "[CERTIFICATE_EXPIRATION] > 48h"
    alerts:
      - type: slack
        send-on-resolved: true
  - name: dns
    url: "8.8.8.8"
    dns:
      query-name: "example.org"
      query-type: "A"
    conditions: ["[DNS_RCODE] == NOERROR"]
  - name: redis
    url: tcp://127.0.0.1:6379
    client: {timeout: 2s}
    conditions: ["[CONNECTED] == true"]
checks:
  - name: script
    command: [/bin/true]
    retries: 3
    successes: 2
    conditions: ["[STATUS] == 0"]
heartbeats:
  - name: backup
    schedule: "0 3 * * *"
    timezone: Europe/Berlin
    grace: 30m
  - name: sync
    period: 1h
"#;
        let config = load(text, "config.yaml").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.endpoints.len(), 4);
        let front = &config.endpoints[0];
        assert_eq!(front.key(), "core_front");
        assert_eq!(front.kind.name(), "http");
        assert_eq!(front.interval, Duration::from_secs(300));
        assert_eq!(front.client.timeout, DEFAULT_TIMEOUT);
        assert_eq!(front.method, http::Method::GET);
        assert!(front.needs_body());
        assert_eq!(front.alerts[0].failure_threshold, 3);
        assert!(front.alerts[0].send_on_resolved);
        let dns = &config.endpoints[1];
        assert_eq!(dns.kind.name(), "dns");
        assert_eq!(dns.dns, Some(DnsQuery { name: "example.org.".into(), record_type: RecordType::A }));
        assert_eq!(dns.interval, DEFAULT_INTERVAL);
        assert_eq!(config.endpoints[2].kind.name(), "tcp");
        assert_eq!(config.endpoints[2].client.timeout, Duration::from_secs(2));
        assert_eq!(config.endpoints[3].kind.name(), "command");
        assert_eq!((config.endpoints[3].retries, config.endpoints[3].successes), (3, 2));
        assert_eq!(config.heartbeats.len(), 2);
        assert!(config.notes.iter().any(|n| n.contains("`storage`")), "{:?}", config.notes);
    }

    #[test]
    fn errors_are_positioned_with_hints() {
        let text = "endpoints:\n  - name: a\n    url: http://x\n    condition: []\n    conditions:\n      - \"[STATU] == 200\"\n      - '[BODY] = 1'\n";
        let rendered = errors(text);
        assert!(
            rendered
                .contains("checks.yml:4:5: unknown key `condition` in an endpoint\n  hint: did you mean `conditions`?"),
            "{rendered}"
        );
        assert!(
            rendered.contains("checks.yml:6:10: unknown placeholder `[STATU]`\n  hint: did you mean `[STATUS]`?"),
            "{rendered}"
        );
        assert!(rendered.contains("checks.yml:7:10: invalid condition `[BODY] = 1`: no operator"), "{rendered}");
        let rendered = errors(
            "endpoints:\n  - name: a\n    url: http://x\n    conditions: ['[RESPONSE_TIME] < 5']\n    interval: 2d\n",
        );
        assert!(rendered.contains("checks.yml:5:15: `interval`: invalid duration \"2d\""), "{rendered}");
        let rendered = errors("endpoint:\n  - name: a\n");
        assert!(
            rendered
                .contains("checks.yml:1:1: unknown key `endpoint` in the top level\n  hint: did you mean `endpoints`?"),
            "{rendered}"
        );
    }

    #[test]
    fn structural_errors() {
        let rendered = errors(
            "endpoints:\n  - url: ftp://x\n    conditions: []\n  - name: b\n    url: http://x\n    conditions: ['[STATUS] == 200']\n  - name: b\n    url: http://y\n    conditions: ['[STATUS] == 200']\n",
        );
        assert!(rendered.contains("needs a `name`"), "{rendered}");
        assert!(rendered.contains("no check kind runs the url \"ftp://x\""), "{rendered}");
        assert!(rendered.contains("needs at least one condition"), "{rendered}");
        assert!(rendered.contains("checks.yml:7:11: there is already a check named \"b\""), "{rendered}");
        let rendered =
            errors("endpoints:\n  - name: t\n    url: tcp://host\n    conditions: ['[CONNECTED] == true']\n");
        assert!(rendered.contains("port"), "{rendered}");
        let rendered = errors(
            "heartbeats:\n  - name: x\n    schedule: '0 3 * *'\n  - name: y\n  - name: z\n    period: 1h\n    schedule: '* * * * *'\n  - name: w\n    schedule: '0 3 * * *'\n    timezone: Europe/Nowhere\n",
        );
        assert!(rendered.contains("checks.yml:3:15: invalid cron expression"), "{rendered}");
        assert!(rendered.contains("needs a `period`"), "{rendered}");
        assert!(rendered.contains("not both"), "{rendered}");
        assert!(rendered.contains("checks.yml:10:15: unknown time zone `Europe/Nowhere`"), "{rendered}");
        assert!(
            errors("endpoints:\n  - name: c\n    command: /bin/true --x\n    conditions: ['[STATUS] == 0']\n")
                .contains("argument vector")
        );
    }

    #[test]
    fn keys_resolvers_and_host_ports() {
        assert_eq!(key(Some("Core Services"), "API v1.2"), "core-services_api-v1-2");
        assert_eq!(key(None, "front"), "_front");
        assert_eq!(
            parse_resolver("tcp://1.1.1.1:53", true),
            Some(Resolver { transport: Transport::Tcp, host: "1.1.1.1".into(), port: 53 })
        );
        assert_eq!(parse_resolver("1.1.1.1", true), None);
        assert_eq!(parse_resolver("8.8.8.8", false).map(|r| r.port), Some(53));
        assert_eq!(split_host_port("[::1]:8053", 53), Some(("::1".into(), 8053)));
        assert_eq!(split_host_port("::1", 53), Some(("::1".into(), 53)));
        assert_eq!(split_host_port("host:x", 53), None);
    }
}
