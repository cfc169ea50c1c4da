//! `opsloop.yml`: a project's services, environments and routes, read with every value's
//! file:line:column so each mistake is reported where it is (all of them at once, as
//! `opsloop lint` does for pipelines). The YAML node tree and the diagnostics are the
//! pipeline engine's, so both files read and report alike.
//!
//! ```yaml
//! services:
//!   web:
//!     command: [python3, server.py]      # or one string, run by bash -c; $PORT is its port
//!     env: {VERSION: "2"}
//!     secrets: [API_TOKEN]               # CI/CD variables given to it
//!     replicas: 2
//!     health: {http: /health, status: 200, interval: 1s, timeout: 2s, start_timeout: 60s}  # readiness; or {tcp: true}, {command: …}
//!     liveness: {http: /live, interval: 10s, timeout: 2s, failures: 3}  # killed and restarted when it fails
//!     memory: 256M                       # per instance: a cgroup where one can be made
//!     strategy: canary:10,50,100         # or blue-green (default), rolling[:N], recreate
//!     keep_warm: 5m                      # the old version stays up this long after a switch
//!     build: make release                # run once in a new release's directory
//!     slo: {max_error_rate: 1%, max_p99: 300ms, bake: 30s}
//! environments:
//!   production:
//!     tier: production
//!     targets: [local]
//!     protected: true                    # deploying needs the maintainer role
//!     freeze: [{from: 2026-12-24T00:00:00Z, to: 2026-12-27T00:00:00Z}]
//! routes:
//!   - {host: shop.example.com, path: /, service: web, environment: production}
//! ```

use std::time::Duration;

use opsloop_config::diagnostic::Diagnostic;
use opsloop_config::yaml::{Node, Span, Value};

use crate::strategy::{Slo, Strategy};
use crate::supervisor::{HealthCheck, Liveness, Probing, default_timeout};

#[derive(Debug, Clone, PartialEq)]
pub struct Service {
    pub name: String,
    pub span: Span,
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub secrets: Vec<String>,
    pub replicas: u32,
    pub health: HealthCheck,
    /// How often the readiness check runs while an instance starts (`health.interval`, 50 ms
    /// by default) and how long one check may take (`health.timeout`: 2 s, 5 s for a command).
    pub readiness: Probing,
    pub slo: Slo,
    pub bake: Duration,
    /// Run once in the release's directory before its first instance starts.
    pub build: Option<String>,
    /// The release also takes the artifacts of this job of a pipeline at its commit (GitLab's
    /// `artifacts:`), unpacked into its directory: what the pipeline built is what runs.
    pub artifact: Option<String>,
    /// The strategy a deployment uses when none is asked for.
    pub strategy: Strategy,
    /// After a blue-green or canary deployment, the old version keeps running (out of the
    /// route) this long, so a rollback to it is a switch, not a cold start.
    pub keep_warm: Duration,
    /// How long a new instance may take to pass its health check (`health.start_timeout`);
    /// the server's default when unset.
    pub start_timeout: Option<Duration>,
    /// Checked while instances run; `health` is the readiness check that gates traffic.
    pub liveness: Option<Liveness>,
    /// Bytes of memory each instance may use (`memory: 256M`).
    pub memory: Option<u64>,
    /// Requests one instance is meant to take at once (`concurrency: 100`): the proxy's
    /// saturation signal is in flight against it.
    pub concurrency: Option<u32>,
    /// Where each instance serves Prometheus metrics (`metrics: {path: /metrics, port: 9100}`):
    /// opsloop then scrapes every instance, labelled with its project, service, environment
    /// and version.
    pub metrics: Option<MetricsEndpoint>,
}

/// A service's metrics endpoint on each instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsEndpoint {
    pub path: String,
    /// The instance's own port (`$PORT`) when unset.
    pub port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Local,
    /// `ssh://user@host[:port]`.
    Ssh {
        user: String,
        host: String,
        port: u16,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Environment {
    pub name: String,
    pub span: Span,
    pub tier: String,
    pub targets: Vec<Target>,
    pub protected: bool,
    pub approvals: u32,
    /// Deploy freezes: no deployment starts inside one of these windows.
    pub freezes: Vec<Freeze>,
}

/// A deploy freeze window, `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freeze {
    pub from: jiff::Timestamp,
    pub to: jiff::Timestamp,
}

impl Environment {
    /// The freeze window `now` falls in, if any.
    pub fn frozen_at(&self, now: jiff::Timestamp) -> Option<&Freeze> {
        self.freezes.iter().find(|freeze| freeze.from <= now && now < freeze.to)
    }
}

/// Why a `strategy:` (or a deploy request's strategy) is not one opsloop knows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrategyError {
    #[error("`{number}` in `{text}` is not a whole number")]
    NotANumber { number: String, text: String },
    #[error("canary steps `{text}` must rise and end at 100, e.g. canary:10,50,100")]
    CanarySteps { text: String },
    #[error("`{text}`: rolling takes one batch size, e.g. rolling:2")]
    RollingBatch { text: String },
    #[error("unknown strategy `{text}`: blue-green, canary[:STEPS], rolling[:BATCH] or recreate")]
    Unknown { text: String },
}

/// `blue-green`, `canary` (10% → 50% → 100%), `canary:5,25,100`, `rolling` (one at a time),
/// `rolling:2`, `recreate`.
pub fn parse_strategy(text: &str) -> Result<Strategy, StrategyError> {
    let (name, argument) = match text.trim().split_once(':') {
        Some((name, argument)) => (name, Some(argument)),
        None => (text.trim(), None),
    };
    let numbers = |argument: &str| -> Result<Vec<u32>, StrategyError> {
        argument
            .split(',')
            .map(|n| {
                n.trim()
                    .parse::<u32>()
                    .map_err(|_| StrategyError::NotANumber { number: n.to_owned(), text: text.to_owned() })
            })
            .collect()
    };
    match (name, argument) {
        ("blue-green", None) => Ok(Strategy::BlueGreen),
        ("recreate", None) => Ok(Strategy::Recreate),
        ("canary", None) => Ok(Strategy::Canary { steps: vec![10, 50, 100] }),
        ("canary", Some(steps)) => {
            let steps = numbers(steps)?;
            let rising = steps.windows(2).all(|pair| pair[0] < pair[1]);
            if steps.last() != Some(&100) || !rising || steps.contains(&0) {
                return Err(StrategyError::CanarySteps { text: text.to_owned() });
            }
            Ok(Strategy::Canary { steps })
        }
        ("rolling", None) => Ok(Strategy::Rolling { batch: 1 }),
        ("rolling", Some(batch)) => match numbers(batch)?.as_slice() {
            [batch] if *batch >= 1 => Ok(Strategy::Rolling { batch: *batch }),
            _ => Err(StrategyError::RollingBatch { text: text.to_owned() }),
        },
        _ => Err(StrategyError::Unknown { text: text.to_owned() }),
    }
}

/// The name [`parse_strategy`] reads back.
pub fn strategy_name(strategy: &Strategy) -> String {
    match strategy {
        Strategy::BlueGreen => "blue-green".to_owned(),
        Strategy::Recreate => "recreate".to_owned(),
        Strategy::Rolling { batch } => format!("rolling:{batch}"),
        Strategy::Canary { steps } => {
            format!("canary:{}", steps.iter().map(u32::to_string).collect::<Vec<_>>().join(","))
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouteSpec {
    pub span: Span,
    pub host: Option<String>,
    pub path: String,
    pub service: String,
    pub environment: String,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Manifest {
    pub services: Vec<Service>,
    pub environments: Vec<Environment>,
    pub routes: Vec<RouteSpec>,
}

const TIERS: [&str; 5] = ["production", "staging", "testing", "development", "other"];

/// Reads `text`; the manifest holds what could be read, the diagnostics every problem.
pub fn parse(text: &str) -> (Manifest, Vec<Diagnostic>) {
    let mut reader = Reader { problems: Vec::new() };
    let manifest = match opsloop_config::yaml::parse(text) {
        Ok(root) => reader.manifest(&root),
        Err(error) => {
            reader.problems.push(Diagnostic::error(error.message, Some(error.span)));
            Manifest::default()
        }
    };
    (manifest, reader.problems)
}

struct Reader {
    problems: Vec<Diagnostic>,
}

fn with_hint(mut diagnostic: Diagnostic, hint: &str) -> Diagnostic {
    diagnostic.hint = Some(hint.to_owned());
    diagnostic
}

/// `30s`, `500ms`, `2m`, `1h`.
fn duration(text: &str) -> Option<Duration> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit() && c != '.')?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let seconds = match unit.trim() {
        "ms" => number / 1000.0,
        "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(seconds).ok()
}

impl Reader {
    fn error(&mut self, message: String, span: Span, hint: Option<&str>) {
        let diagnostic = Diagnostic::error(message, Some(span));
        self.problems.push(match hint {
            Some(hint) => with_hint(diagnostic, hint),
            None => diagnostic,
        });
    }

    /// Service and environment names go into URLs, file paths and routes: the name rule.
    fn name(&mut self, kind: &'static str, name: &str, span: Span) {
        if let Err(error) = opsloop_core::validate_name(kind, name) {
            self.error(error.to_string(), span, Some("e.g. web, api-gateway, production, review-42"));
        }
    }

    /// Refuses keys this place does not know, naming the one meant when it is a near miss
    /// (`comand`), else the ones it takes.
    fn known_keys(&mut self, node: &Node, what: &str, known: &[&str]) {
        for (key, _) in node.as_mapping().unwrap_or_default() {
            if !known.contains(&key.name.as_str()) {
                let hint = match known.iter().find(|k| opsloop_config::diagnostic::near_miss(&key.name, k)) {
                    Some(meant) => format!("did you mean `{meant}`? {what} takes {}", known.join(", ")),
                    None => format!("{what} takes {}", known.join(", ")),
                };
                self.error(format!("unknown key `{}` in {what}", key.name), key.span, Some(&hint));
            }
        }
    }

    fn mapping<'a>(&mut self, node: &'a Node, what: &str) -> &'a [(opsloop_config::yaml::Key, Node)] {
        match node.as_mapping() {
            Some(entries) => entries,
            None if matches!(node.value, Value::Null) => &[],
            None => {
                self.error(format!("{what} must be a mapping, not {}", node.kind()), node.span, None);
                &[]
            }
        }
    }

    fn text(&mut self, node: &Node, what: &str) -> Option<String> {
        match &node.value {
            Value::String(text) => Some(text.clone()),
            Value::Int(_) | Value::Float(_) | Value::Bool(_) => node.scalar_text(),
            _ => {
                self.error(format!("{what} must be text, not {}", node.kind()), node.span, None);
                None
            }
        }
    }

    fn strings(&mut self, node: &Node, what: &str) -> Vec<String> {
        match &node.value {
            Value::Sequence(items) => items.iter().filter_map(|item| self.text(item, what)).collect(),
            _ => {
                self.error(format!("{what} must be a list, not {}", node.kind()), node.span, None);
                Vec::new()
            }
        }
    }

    fn count(&mut self, node: &Node, what: &str, range: std::ops::RangeInclusive<i64>) -> Option<u32> {
        match node.value {
            Value::Int(n) if range.contains(&n) => u32::try_from(n).ok(),
            _ => {
                let message = format!("{what} must be a whole number from {} to {}", range.start(), range.end());
                self.error(message, node.span, None);
                None
            }
        }
    }

    fn duration_of(&mut self, node: &Node, what: &str) -> Option<Duration> {
        let parsed = node.scalar_text().as_deref().and_then(duration);
        if parsed.is_none() {
            self.error(format!("{what} must be a duration such as 500ms, 30s or 5m"), node.span, None);
        }
        parsed
    }

    fn manifest(&mut self, root: &Node) -> Manifest {
        self.known_keys(root, "opsloop.yml", &["services", "environments", "routes"]);
        let mut manifest = Manifest::default();
        let declared = |section: &str| -> Vec<String> {
            let entries = root.get(section).and_then(Node::as_mapping).unwrap_or_default();
            entries.iter().map(|(key, _)| key.name.clone()).collect()
        };
        // Routes are checked against what the file declares, not what parsed cleanly: a service
        // with its own mistakes is reported once, where they are.
        let (services_declared, environments_declared) = (declared("services"), declared("environments"));
        if let Some(services) = root.get("services") {
            for (key, node) in self.mapping(services, "services") {
                self.name("service", &key.name, key.span);
                if let Some(service) = self.service(&key.name, key.span, node) {
                    manifest.services.push(service);
                }
            }
        }
        if let Some(environments) = root.get("environments") {
            for (key, node) in self.mapping(environments, "environments") {
                self.name("environment", &key.name, key.span);
                manifest.environments.push(self.environment(&key.name, key.span, node));
            }
        }
        if let Some(routes) = root.get("routes") {
            match &routes.value {
                Value::Sequence(items) => {
                    for item in items {
                        if let Some(route) = self.route(item, &services_declared, &environments_declared) {
                            manifest.routes.push(route);
                        }
                    }
                }
                _ => self.error(format!("routes must be a list, not {}", routes.kind()), routes.span, None),
            }
        }
        manifest
    }

    fn service(&mut self, name: &str, span: Span, node: &Node) -> Option<Service> {
        let what = format!("service `{name}`");
        self.known_keys(
            node,
            &what,
            &[
                "command",
                "env",
                "secrets",
                "replicas",
                "health",
                "liveness",
                "memory",
                "concurrency",
                "metrics",
                "artifact",
                "slo",
                "build",
                "strategy",
                "keep_warm",
            ],
        );
        // Without a command the service cannot run, but the rest of it is still read, so that
        // one mistyped key does not hide its other mistakes.
        let command = match node.get("command") {
            Some(command) if matches!(command.value, Value::Sequence(_)) => Some(self.strings(command, "command")),
            Some(command) => Some(
                self.text(command, "command").map(|line| vec!["bash".into(), "-c".into(), line]).unwrap_or_default(),
            ),
            None => {
                self.error(
                    format!("{what} has no command"),
                    span,
                    Some("command: [program, arguments…]; $PORT is its port"),
                );
                None
            }
        };
        let mut env = Vec::new();
        if let Some(node) = node.get("env") {
            for (key, value) in self.mapping(node, "env") {
                if let Some(value) = self.text(value, "an env value") {
                    env.push((key.name.clone(), value));
                }
            }
        }
        let secrets = node.get("secrets").map(|n| self.strings(n, "secrets")).unwrap_or_default();
        let replicas = node.get("replicas").and_then(|n| self.count(n, "replicas", 1..=100)).unwrap_or(1);
        let health = match node.get("health") {
            None => HealthCheck::Tcp,
            Some(health) => self.check(health, "health", &["start_timeout", "interval", "timeout"]),
        };
        let health_node = node.get("health");
        let mut readiness = Probing::default_for(&health);
        if let Some(interval) =
            health_node.and_then(|h| h.get("interval")).and_then(|n| self.duration_of(n, "health.interval"))
        {
            readiness.interval = interval;
        }
        if let Some(node) = health_node.and_then(|h| h.get("timeout"))
            && let Some(timeout) = self.duration_of(node, "health.timeout")
        {
            if timeout.is_zero() {
                self.error("health.timeout must be longer than 0s".into(), node.span, None);
            }
            readiness.timeout = timeout;
        }
        let liveness = node.get("liveness").map(|live| {
            let check = self.check(live, "liveness", &["interval", "timeout", "failures"]);
            let interval = live
                .get("interval")
                .and_then(|n| self.duration_of(n, "liveness.interval"))
                .unwrap_or(Duration::from_secs(10));
            let failures = live.get("failures").and_then(|n| self.count(n, "liveness.failures", 1..=100)).unwrap_or(3);
            let timeout = match live.get("timeout") {
                Some(node) => {
                    let timeout = self.duration_of(node, "liveness.timeout");
                    if timeout.is_some_and(|t| t.is_zero()) {
                        self.error("liveness.timeout must be longer than 0s".into(), node.span, None);
                    }
                    timeout.unwrap_or_else(|| default_timeout(&check))
                }
                None => default_timeout(&check),
            };
            Liveness { check, interval, timeout, failures }
        });
        let memory = node.get("memory").and_then(|n| {
            let bytes = n.scalar_text().as_deref().and_then(crate::cgroup::parse_size);
            if bytes.is_none() {
                self.error("memory is a size such as 256M or 1G (at least 1M)".into(), n.span, None);
            }
            bytes
        });
        let start_timeout = node
            .get("health")
            .and_then(|h| h.get("start_timeout"))
            .and_then(|n| self.duration_of(n, "health.start_timeout"));
        let mut slo = Slo { max_error_rate: 0.01, max_p99: Duration::from_millis(500), min_requests: 20 };
        let mut bake = Duration::from_secs(30);
        if let Some(node) = node.get("slo") {
            self.known_keys(node, "slo", &["max_error_rate", "max_p99", "bake"]);
            if let Some(rate) = node.get("max_error_rate") {
                let text = rate.scalar_text().unwrap_or_default();
                let value = text.trim().strip_suffix('%').and_then(|p| p.trim().parse::<f64>().ok()).map(|p| p / 100.0);
                match value.or_else(|| text.trim().parse::<f64>().ok()).filter(|v| (0.0..=1.0).contains(v)) {
                    Some(value) => slo.max_error_rate = value,
                    None => self.error("max_error_rate is a share such as 1% or 0.01".into(), rate.span, None),
                }
            }
            if let Some(p99) = node.get("max_p99").and_then(|n| self.duration_of(n, "max_p99")) {
                slo.max_p99 = p99;
            }
            if let Some(window) = node.get("bake").and_then(|n| self.duration_of(n, "bake")) {
                bake = window;
            }
        }
        let build = node.get("build").and_then(|n| self.text(n, "build"));
        let strategy = match node.get("strategy") {
            None => Strategy::BlueGreen,
            Some(node) => match self.text(node, "strategy").map(|text| parse_strategy(&text)) {
                Some(Ok(strategy)) => strategy,
                Some(Err(error)) => {
                    self.error(
                        error.to_string(),
                        node.span,
                        Some("blue-green, canary, canary:10,50,100, rolling, rolling:2, recreate"),
                    );
                    Strategy::BlueGreen
                }
                None => Strategy::BlueGreen,
            },
        };
        let keep_warm =
            node.get("keep_warm").and_then(|n| self.duration_of(n, "keep_warm")).unwrap_or(Duration::from_secs(300));
        Some(Service {
            name: name.to_owned(),
            span,
            command: command?,
            env,
            secrets,
            replicas,
            health,
            readiness,
            slo,
            bake,
            build,
            strategy,
            keep_warm,
            start_timeout,
            liveness,
            memory,
            concurrency: node.get("concurrency").and_then(|n| self.count(n, "concurrency", 1..=1_000_000)),
            metrics: node.get("metrics").and_then(|n| self.metrics_endpoint(n, &what)),
            artifact: node.get("artifact").and_then(|n| self.text(n, "artifact")),
        })
    }

    /// `metrics: {path: /metrics, port: 9100}`, or `metrics: true` for `/metrics` on the
    /// instance's own port.
    fn metrics_endpoint(&mut self, node: &Node, what: &str) -> Option<MetricsEndpoint> {
        if let Some(on) = node.as_bool() {
            return on.then(|| MetricsEndpoint { path: "/metrics".into(), port: None });
        }
        let what = format!("{what}'s metrics");
        self.known_keys(node, &what, &["path", "port"]);
        let path = match node.get("path") {
            Some(n) => self.text(n, "metrics.path")?,
            None => "/metrics".to_owned(),
        };
        if !path.starts_with('/') {
            self.error(format!("{what}: path must start with `/`"), node.span, Some("e.g. `path: /metrics`"));
            return None;
        }
        let port = match node.get("port") {
            Some(n) => Some(u16::try_from(self.count(n, "metrics.port", 1..=65_535)?).ok()?),
            None => None,
        };
        Some(MetricsEndpoint { path, port })
    }

    /// A check: `{http: /path, status: 200}`, `{tcp: true}` or `{command: "…"}`, plus `extra`
    /// keys its place allows.
    fn check(&mut self, node: &Node, what: &str, extra: &[&str]) -> HealthCheck {
        let mut known = vec!["http", "status", "tcp", "command"];
        known.extend_from_slice(extra);
        self.known_keys(node, what, &known);
        match (node.get("http"), node.get("tcp"), node.get("command")) {
            (Some(path), _, _) => {
                let path = self.text(path, &format!("{what}.http")).unwrap_or_else(|| "/".into());
                if !path.starts_with('/') {
                    self.error(format!("{what}.http is a path starting with /"), node.span, None);
                }
                let status = node.get("status").and_then(|n| self.count(n, "status", 100..=599)).unwrap_or(200);
                HealthCheck::Http { path, status: u16::try_from(status).unwrap_or(200) }
            }
            (None, Some(_), _) => HealthCheck::Tcp,
            (None, None, Some(command)) => HealthCheck::Command(self.text(command, "command").unwrap_or_default()),
            (None, None, None) => {
                let hint = "http: /path, tcp: true, or command: \"curl -fs localhost:$PORT/health\"";
                self.error(format!("{what} needs a check"), node.span, Some(hint));
                HealthCheck::Tcp
            }
        }
    }

    fn environment(&mut self, name: &str, span: Span, node: &Node) -> Environment {
        let what = format!("environment `{name}`");
        self.known_keys(node, &what, &["tier", "targets", "protected", "approvals", "freeze"]);
        let tier = node.get("tier").and_then(|n| self.text(n, "tier")).unwrap_or_else(|| "other".into());
        if !TIERS.contains(&tier.as_str())
            && let Some(node) = node.get("tier")
        {
            self.error(
                format!("tier `{tier}` is unknown"),
                node.span,
                Some("one of production, staging, testing, development, other"),
            );
        }
        let mut targets = Vec::new();
        if let Some(list) = node.get("targets") {
            for (text, item) in match &list.value {
                Value::Sequence(items) => {
                    items.iter().filter_map(|i| i.scalar_text().map(|t| (t, i.span))).collect::<Vec<_>>()
                }
                _ => {
                    self.error("targets must be a list".into(), list.span, None);
                    Vec::new()
                }
            } {
                match target(&text) {
                    Some(target) => targets.push(target),
                    None => {
                        self.error(format!("target `{text}` is neither `local` nor ssh://user@host[:port]"), item, None)
                    }
                }
            }
        }
        if targets.is_empty() {
            targets.push(Target::Local);
        }
        let protected = match node.get("protected").map(|n| &n.value) {
            None => false,
            Some(Value::Bool(value)) => *value,
            Some(_) => {
                if let Some(node) = node.get("protected") {
                    self.error("protected is true or false".into(), node.span, None);
                }
                false
            }
        };
        let approvals = node.get("approvals").and_then(|n| self.count(n, "approvals", 0..=10)).unwrap_or(0);
        let mut freezes = Vec::new();
        if let Some(list) = node.get("freeze") {
            match &list.value {
                Value::Sequence(items) => {
                    for item in items {
                        if let Some(freeze) = self.freeze(item) {
                            freezes.push(freeze);
                        }
                    }
                }
                _ => self.error("freeze must be a list of {from, to}".into(), list.span, None),
            }
        }
        Environment { name: name.to_owned(), span, tier, targets, protected, approvals, freezes }
    }

    fn freeze(&mut self, node: &Node) -> Option<Freeze> {
        self.known_keys(node, "a freeze window", &["from", "to"]);
        let hint = "RFC 3339 times, e.g. {from: 2026-12-24T00:00:00Z, to: 2026-12-27T00:00:00Z}";
        let mut time = |key: &str| {
            let Some(value) = node.get(key) else {
                self.error(format!("a freeze window needs `{key}`"), node.span, Some(hint));
                return None;
            };
            let parsed = value.scalar_text().and_then(|text| text.parse::<jiff::Timestamp>().ok());
            if parsed.is_none() {
                self.error(format!("freeze `{key}` is not a time"), value.span, Some(hint));
            }
            parsed
        };
        let (from, to) = (time("from")?, time("to")?);
        if from >= to {
            self.error("a freeze window must end after it starts".into(), node.span, None);
            return None;
        }
        Some(Freeze { from, to })
    }

    fn route(&mut self, node: &Node, services: &[String], environments: &[String]) -> Option<RouteSpec> {
        self.known_keys(node, "a route", &["host", "path", "service", "environment"]);
        let host = node.get("host").and_then(|n| self.text(n, "host"));
        let path = node.get("path").and_then(|n| self.text(n, "path")).unwrap_or_else(|| "/".into());
        if !path.starts_with('/') {
            self.error(format!("path `{path}` must start with /"), node.span, None);
        }
        let Some(service_node) = node.get("service") else {
            self.error("a route needs `service`".into(), node.span, None);
            return None;
        };
        let service = self.text(service_node, "service")?;
        if !services.contains(&service) {
            let hint = if services.is_empty() {
                "declare it under `services:` first".to_owned()
            } else {
                format!("services here: {}", services.join(", "))
            };
            self.error(format!("route to unknown service `{service}`"), service_node.span, Some(&hint));
        }
        let Some(environment_node) = node.get("environment") else {
            self.error("a route needs `environment`".into(), node.span, None);
            return None;
        };
        let environment = self.text(environment_node, "environment")?;
        if !environments.contains(&environment) {
            let hint = if environments.is_empty() {
                "declare it under `environments:` first".to_owned()
            } else {
                format!("environments here: {}", environments.join(", "))
            };
            self.error(format!("route to unknown environment `{environment}`"), environment_node.span, Some(&hint));
        }
        Some(RouteSpec { span: node.span, host, path, service, environment })
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Local => write!(f, "local"),
            Target::Ssh { user, host, port } => write!(f, "ssh://{user}@{host}:{port}"),
        }
    }
}

/// `local` or `ssh://user@host[:port]`.
pub fn target(text: &str) -> Option<Target> {
    if text == "local" {
        return Some(Target::Local);
    }
    let rest = text.strip_prefix("ssh://")?;
    let (user, address) = rest.split_once('@')?;
    let (host, port) = match address.rsplit_once(':') {
        Some((host, port)) => (host, port.parse().ok()?),
        None => (address, 22),
    };
    let valid = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    (valid(user) && valid(host)).then(|| Target::Ssh { user: user.to_owned(), host: host.to_owned(), port })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
services:
  web:
    command: [python3, server.py]
    env: {VERSION: 2}
    secrets: [API_TOKEN]
    replicas: 2
    health: {http: /health, status: 200, interval: 1s, timeout: 3s}
    liveness: {command: 'test -e /tmp', interval: 5s, failures: 2}
    memory: 256M
    slo: {max_error_rate: 2%, max_p99: 300ms, bake: 45s}
  worker:
    command: ./run-worker --port $PORT
environments:
  production:
    tier: production
    targets: [local, 'ssh://deploy@10.0.0.5:2222']
    protected: true
    approvals: 1
    freeze: [{from: '2026-12-24T00:00:00Z', to: '2026-12-27T00:00:00Z'}]
  staging: {tier: staging}
routes:
  - {host: shop.example.com, path: /, service: web, environment: production}
  - {path: /jobs, service: worker, environment: staging}
";

    #[test]
    fn a_whole_manifest_reads() {
        let (manifest, problems) = parse(GOOD);
        assert!(problems.is_empty(), "{problems:?}");
        let web = &manifest.services[0];
        assert_eq!(web.command, ["python3", "server.py"]);
        assert_eq!(web.env, [("VERSION".to_owned(), "2".to_owned())]);
        assert_eq!((web.replicas, web.bake), (2, Duration::from_secs(45)));
        assert_eq!(web.health, HealthCheck::Http { path: "/health".into(), status: 200 });
        let liveness = web.liveness.as_ref().unwrap();
        assert_eq!(liveness.check, HealthCheck::Command("test -e /tmp".into()));
        assert_eq!((liveness.interval, liveness.failures, web.memory), (Duration::from_secs(5), 2, Some(256 << 20)));
        // Unset, a command check may take 5 s; a connection or HTTP check 2 s, every 50 ms.
        assert_eq!(liveness.timeout, Duration::from_secs(5));
        assert_eq!(web.readiness, Probing { interval: Duration::from_secs(1), timeout: Duration::from_secs(3) });
        let worker = &manifest.services[1];
        assert_eq!(worker.readiness, Probing { interval: Duration::from_millis(50), timeout: Duration::from_secs(2) });
        assert!((web.slo.max_error_rate - 0.02).abs() < 1e-9 && web.slo.max_p99 == Duration::from_millis(300));
        assert_eq!(manifest.services[1].command, ["bash", "-c", "./run-worker --port $PORT"]);
        let production = &manifest.environments[0];
        assert_eq!(production.targets[1], Target::Ssh { user: "deploy".into(), host: "10.0.0.5".into(), port: 2222 });
        assert!(production.protected && production.approvals == 1);
        assert!(production.frozen_at("2026-12-25T12:00:00Z".parse().unwrap()).is_some());
        assert!(production.frozen_at("2026-12-27T00:00:00Z".parse().unwrap()).is_none());
        assert_eq!(web.strategy, Strategy::BlueGreen);
        assert_eq!(manifest.routes[1].path, "/jobs");
    }

    #[test]
    fn every_mistake_is_reported_where_it_is() {
        let text = "\
services:
  Web/../x: {command: [x]}
  web:
    comand: [x]
    replicas: 0
  api:
    command: [x]
    slo: {max_error_rate: lots, bake: soon}
    strategy: canary:50,20
    health: {http: /, timeout: 0s, interval: often}
environments:
  prod: {tier: prod, targets: [ftp://x], freeze: [{from: '2026-12-24T00:00:00Z', to: monday}]}
routes:
  - {service: nope, environment: prod, path: jobs}
";
        let (_, problems) = parse(text);
        let found: Vec<(u32, u32, &str)> = problems
            .iter()
            .map(|p| {
                let span = p.span.unwrap();
                (span.line, span.column, p.message.as_str())
            })
            .collect();
        let has = |line: u32, part: &str| found.iter().any(|(l, _, m)| *l == line && m.contains(part));
        assert!(has(2, "may contain only lowercase"), "{found:?}");
        assert!(has(4, "unknown key `comand`"), "{found:?}");
        assert!(has(3, "has no command"), "{found:?}");
        assert!(has(8, "max_error_rate"), "{found:?}");
        assert!(has(8, "bake must be a duration"), "{found:?}");
        assert!(has(9, "must rise and end at 100"), "{found:?}");
        assert!(has(10, "health.timeout must be longer than 0s"), "{found:?}");
        assert!(has(10, "health.interval must be a duration"), "{found:?}");
        assert!(has(12, "tier `prod` is unknown"), "{found:?}");
        assert!(has(12, "target `ftp://x`"), "{found:?}");
        assert!(has(12, "freeze `to` is not a time"), "{found:?}");
        assert!(has(14, "unknown service `nope`"), "{found:?}");
        assert!(has(14, "path `jobs` must start with /"), "{found:?}");
        let hinted = problems.iter().find(|p| p.message.contains("comand")).unwrap();
        assert!(hinted.hint.as_deref().unwrap_or("").contains("did you mean `command`?"), "{hinted:?}");
        // The service without a command is still read: its other mistakes are reported too.
        assert!(has(5, "replicas must be a whole number"), "{found:?}");
        // A route to a service the file declares, however broken, is no "unknown service".
        let (_, problems) = parse("services:\n  web: {comand: [x]}\nroutes:\n  - {service: web, environment: nope}\n");
        assert!(!problems.iter().any(|p| p.message.contains("unknown service")), "{problems:?}");
        let unknown_env = problems.iter().find(|p| p.message.contains("unknown environment")).unwrap();
        assert_eq!(unknown_env.hint.as_deref(), Some("declare it under `environments:` first"));
        let (_, broken) = parse("services: [unclosed");
        assert_eq!(broken.len(), 1);
    }

    #[test]
    fn strategies_read_back_as_written() {
        for text in ["blue-green", "recreate", "canary:10,50,100", "rolling:2"] {
            assert_eq!(strategy_name(&parse_strategy(text).unwrap()), text);
        }
        assert_eq!(parse_strategy("canary").unwrap(), Strategy::Canary { steps: vec![10, 50, 100] });
        assert_eq!(parse_strategy("canary:0,100"), Err(StrategyError::CanarySteps { text: "canary:0,100".into() }));
        assert_eq!(parse_strategy("rolling:0"), Err(StrategyError::RollingBatch { text: "rolling:0".into() }));
        let unknown = parse_strategy("yolo").unwrap_err();
        assert_eq!(
            unknown.to_string(),
            "unknown strategy `yolo`: blue-green, canary[:STEPS], rolling[:BATCH] or recreate"
        );
        assert_eq!(
            parse_strategy("canary:5,x,100").unwrap_err().to_string(),
            "`x` in `canary:5,x,100` is not a whole number"
        );
    }

    #[test]
    fn durations_read() {
        assert_eq!(duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(duration("2m"), Some(Duration::from_secs(120)));
        assert_eq!(duration("soon"), None);
        assert_eq!(duration("5"), None);
        assert_eq!(duration("99999999999999999999h"), None, "too long is a mistake, not a panic");
    }
}
