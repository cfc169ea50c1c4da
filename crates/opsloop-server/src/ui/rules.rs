//! The Metrics area's Rules (`/metrics/rules`) and Alerts (`/metrics/alerts`) pages: the rule
//! groups of the `prometheus.yml` in force with each rule's health and last evaluation, and the
//! pending and firing alerts.
//!
//! Both are drawn on the server from the `RuleManager`'s snapshots, scoped as
//! `/prometheus/api/v1/rules` and `/alerts` are: rules are the instance's configuration and
//! every signed-in person reads them, but an alert is listed only when its labels fall inside
//! the caller's `prometheus::scope`. A rule's state is computed again from the alerts the
//! caller sees, so a member cannot tell that another project's alert fires.

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};

use super::error_box;
use super::layout;
use super::metrics::{AREA, ago, metrics_stylesheet, subnav};
use crate::auth::Principal;
use crate::prometheus::api::format_value;
use crate::state::AppState;
use crate::views::human_time;
use opsloop_metrics::labels::{Labels, Matcher, matches_all};
use opsloop_metrics::rules::group::{AlertState, Health};
use opsloop_metrics::rules::manager::{AlertSnapshot, GroupSnapshot, RuleSnapshot};

/// Go's zero time, which the snapshots carry for "never evaluated".
const NEVER: &str = "0001-01-01T00:00:00Z";

fn visible(scope: &[Matcher], alert: &AlertSnapshot) -> bool {
    matches_all(scope, &Labels::from_pairs(alert.labels.iter().map(|(k, v)| (k.as_str(), v.as_str()))))
}

/// The caller's scope: `None` when they may see no series, hence no alert.
async fn caller_scope(state: &AppState, principal: &Principal) -> Result<Option<Vec<Matcher>>, Response> {
    crate::prometheus::scope(&state.store, principal).await.map_err(super::failure)
}

/// The rule groups, with the alerts outside `scope` removed and each alerting rule's state
/// derived from the alerts left.
fn scoped_groups(groups: Vec<GroupSnapshot>, scope: &[Matcher]) -> Vec<GroupSnapshot> {
    groups
        .into_iter()
        .map(|mut group| {
            for rule in &mut group.rules {
                if let RuleSnapshot::Alerting(rule) = rule {
                    rule.alerts.retain(|a| visible(scope, a));
                    rule.state = strongest(rule.alerts.iter().map(|a| a.state));
                }
            }
            group
        })
        .collect()
}

fn strongest(states: impl Iterator<Item = AlertState>) -> AlertState {
    states.fold(AlertState::Inactive, |acc, s| match (acc, s) {
        (AlertState::Firing, _) | (_, AlertState::Firing) => AlertState::Firing,
        (AlertState::Pending, _) | (_, AlertState::Pending) => AlertState::Pending,
        _ => AlertState::Inactive,
    })
}

/// The graph page with `expr` in its box.
pub(super) fn graph_link(expr: &str) -> String {
    format!("/metrics/graph?{}", serde_urlencoded::to_string([("expr", expr)]).unwrap_or_default())
}

/// Milliseconds of an RFC 3339 time; `None` for Go's zero time and for text that is no time.
fn millis(rfc3339: &str) -> Option<i64> {
    if rfc3339 == NEVER {
        return None;
    }
    rfc3339.parse::<jiff::Timestamp>().ok().map(|t| t.as_millisecond())
}

fn when(now: i64, rfc3339: &str) -> Markup {
    match millis(rfc3339) {
        Some(at) => html! { span title=(human_time(at)) { (ago(now, at)) } },
        None => html! { span.muted { "never" } },
    }
}

fn seconds(s: f64) -> String {
    if s < 1.0 { format!("{:.2} ms", s * 1000.0) } else { format!("{s:.2} s") }
}

/// Go's `%e` value of a snapshot, as people read numbers.
fn value(text: &str) -> String {
    text.parse::<f64>().map_or_else(|_| text.to_owned(), format_value)
}

fn state_badge(state: AlertState) -> Markup {
    // Pipelines' colours: firing reads as a failure, pending as waiting, inactive as fine.
    let class = match state {
        AlertState::Firing => "status-failed",
        AlertState::Pending => "status-pending",
        AlertState::Inactive => "status-success",
    };
    html! { span class={ "badge state " (class) } data-state=(state.as_str()) { (state.as_str()) } }
}

fn health_badge(health: Health) -> Markup {
    let (class, word) = match health {
        Health::Ok => ("status-success", "ok"),
        Health::Err => ("status-failed", "err"),
        Health::Unknown => ("status-pending", "unknown"),
    };
    html! { span class={ "badge health " (class) } { (word) } }
}

fn label_list(labels: &BTreeMap<String, String>) -> Markup {
    html! { @for (name, value) in labels { code.label { (name) "=\"" (value) "\"" } " " } }
}

fn annotation_list(annotations: &BTreeMap<String, String>) -> Markup {
    html! {
        @if !annotations.is_empty() {
            dl.annotations { @for (name, text) in annotations { dt { (name) } dd { (text) } } }
        }
    }
}

fn alerts_table(now: i64, alerts: &[AlertSnapshot], with_annotations: bool) -> Markup {
    html! {
        table.alerts {
            thead { tr {
                th scope="col" { "Labels" } th scope="col" { "State" } th scope="col" { "Active since" } th scope="col" { "Value" }
                @if with_annotations { th scope="col" { "Annotations" } }
            } }
            tbody {
                @for alert in alerts {
                    tr.alert data-state=(alert.state.as_str()) {
                        td { (label_list(&alert.labels)) }
                        td { (state_badge(alert.state)) }
                        td { (when(now, &alert.active_at)) }
                        td.number { (value(&alert.value)) }
                        @if with_annotations { td { (annotation_list(&alert.annotations)) } }
                    }
                }
            }
        }
    }
}

fn rule_markup(now: i64, rule: &RuleSnapshot) -> Markup {
    let (kind, name, query, health, last_error, evaluation_time, last_evaluation) = match rule {
        RuleSnapshot::Alerting(r) => {
            ("alerting", &r.name, &r.query, r.health, &r.last_error, r.evaluation_time, &r.last_evaluation)
        }
        RuleSnapshot::Recording(r) => {
            ("recording", &r.name, &r.query, r.health, &r.last_error, r.evaluation_time, &r.last_evaluation)
        }
    };
    html! {
        article.rule data-rule=(name) data-kind=(kind) {
            h3 {
                span.badge.kind { (kind) } " "
                code { (name) }
                @if let RuleSnapshot::Alerting(r) = rule { " " (state_badge(r.state)) }
            }
            p.expr { a href=(graph_link(query)) title="Open in the graph" { code { (query) } } }
            dl.facts {
                dt { "Health" } dd { (health_badge(health)) }
                dt { "Last evaluation" } dd { (when(now, last_evaluation)) }
                dt { "Evaluation time" } dd { (seconds(evaluation_time)) }
                @if let RuleSnapshot::Alerting(r) = rule {
                    @if r.duration > 0.0 { dt { "For" } dd { (format!("{}s", r.duration)) } }
                    @if r.keep_firing_for > 0.0 { dt { "Keep firing for" } dd { (format!("{}s", r.keep_firing_for)) } }
                    @if !r.labels.is_empty() { dt { "Labels" } dd { (label_list(&r.labels)) } }
                    @if !r.annotations.is_empty() { dt { "Annotations" } dd { (annotation_list(&r.annotations)) } }
                }
                @if let RuleSnapshot::Recording(r) = rule {
                    @if !r.labels.is_empty() { dt { "Labels" } dd { (label_list(&r.labels)) } }
                }
                @if let Some(error) = last_error { dt { "Last error" } dd.error-text { (error) } }
            }
            @if let RuleSnapshot::Alerting(r) = rule {
                @if !r.alerts.is_empty() { (alerts_table(now, &r.alerts, false)) }
            }
        }
    }
}

/// Why the page may be empty, when the rules are not running.
fn unavailable(state: &AppState) -> Option<String> {
    state.prometheus.storage(&state.config).err().map(|e| e.to_string())
}

pub async fn rules(State(state): State<AppState>, Extension(principal): Extension<Principal>) -> Response {
    let scope = match caller_scope(&state, &principal).await {
        Ok(scope) => scope,
        Err(response) => return response,
    };
    let groups = match &scope {
        Some(scope) => scoped_groups(state.prometheus.runtime().map(|r| r.rules.groups()).unwrap_or_default(), scope),
        None => Vec::new(),
    };
    let now = state.clock.now_ms();
    layout("Rules", Some(&principal), AREA, html! {
        (metrics_stylesheet())
        h1 { "Rules" }
        (subnav(&principal, "/metrics/rules"))
        (error_box(unavailable(&state).as_deref()))
        p.hint {
            "Recording and alerting rules from the " code { "rule_files" } " of opsloop's " code { "prometheus.yml" } "."
            @if !principal.is_admin() { " Alerts are shown when their labels name one of your projects." }
        }
        @if groups.is_empty() { p.muted { "No rules are loaded." } }
        @for group in &groups {
            section.rule-group data-group=(group.name) {
                h2 { (group.name) }
                p.muted {
                    code { (group.file) } " · every " (format!("{}s", group.interval))
                    " · last evaluated " (when(now, &group.last_evaluation))
                    " in " (seconds(group.evaluation_time))
                }
                @for rule in &group.rules { (rule_markup(now, rule)) }
            }
        }
    })
    .into_response()
}

pub async fn alerts(State(state): State<AppState>, Extension(principal): Extension<Principal>) -> Response {
    let scope = match caller_scope(&state, &principal).await {
        Ok(scope) => scope,
        Err(response) => return response,
    };
    let mut alerts: Vec<AlertSnapshot> = match &scope {
        Some(scope) => state
            .prometheus
            .runtime()
            .map(|r| r.rules.alerts())
            .unwrap_or_default()
            .into_iter()
            .filter(|a| visible(scope, a))
            .collect(),
        None => Vec::new(),
    };
    // Firing first, then the longest active: what has been wrong longest leads.
    alerts.sort_by(|a, b| {
        (b.state == AlertState::Firing)
            .cmp(&(a.state == AlertState::Firing))
            .then_with(|| millis(&a.active_at).cmp(&millis(&b.active_at)))
    });
    let firing = alerts.iter().filter(|a| a.state == AlertState::Firing).count();
    let pending = alerts.len() - firing;
    let now = state.clock.now_ms();
    let mut by_name: BTreeMap<&str, Vec<AlertSnapshot>> = BTreeMap::new();
    for alert in &alerts {
        let name = alert.labels.get("alertname").map_or("", String::as_str);
        by_name.entry(name).or_default().push(alert.clone());
    }
    layout("Alerts", Some(&principal), AREA, html! {
        (metrics_stylesheet())
        h1 { "Alerts" }
        (subnav(&principal, "/metrics/alerts"))
        (error_box(unavailable(&state).as_deref()))
        p.hint {
            "Pending and firing alerts of the alerting rules (see " a href="/metrics/rules" { "Rules" } ")."
            @if !principal.is_admin() { " You see the alerts whose labels name one of your projects." }
        }
        p #alert-counts { span.badge.status-failed { (firing) " firing" } " " span.badge.status-pending { (pending) " pending" } }
        @if alerts.is_empty() { p.muted { "No alert is pending or firing." } }
        @for (name, alerts) in &by_name {
            section.alert-group data-alertname=(name) {
                h2 { code { (name) } " " (state_badge(strongest(alerts.iter().map(|a| a.state)))) }
                (alerts_table(now, alerts, true))
            }
        }
    })
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rules_state_is_its_strongest_alerts() {
        use AlertState::*;
        assert_eq!(strongest([].into_iter()), Inactive);
        assert_eq!(strongest([Pending, Inactive].into_iter()), Pending);
        assert_eq!(strongest([Pending, Firing, Inactive].into_iter()), Firing);
    }

    #[test]
    fn expressions_link_to_the_graph() {
        assert_eq!(graph_link("rate(x[5m]) > 0"), "/metrics/graph?expr=rate%28x%5B5m%5D%29+%3E+0");
    }

    #[test]
    fn never_evaluated_is_no_time() {
        assert_eq!(millis(NEVER), None);
        assert_eq!(millis("2015-06-23T13:19:44.128Z"), Some(1_435_065_584_128));
        assert_eq!(value("1e+00"), "1");
        assert_eq!(value("NaN"), "NaN");
    }

    #[test]
    fn alerts_outside_the_scope_are_hidden_and_do_not_colour_the_rule() {
        let alert = |project: &str, state| AlertSnapshot {
            labels: BTreeMap::from([("project".to_owned(), project.to_owned())]),
            annotations: BTreeMap::new(),
            state,
            active_at: "2015-06-23T13:19:44Z".to_owned(),
            keep_firing_since: None,
            value: "1e+00".to_owned(),
        };
        let group = GroupSnapshot {
            name: "g".into(),
            file: "f".into(),
            rules: vec![RuleSnapshot::Alerting(opsloop_metrics::rules::manager::AlertingRuleSnapshot {
                state: AlertState::Firing,
                name: "A".into(),
                query: "up == 0".into(),
                duration: 0.0,
                keep_firing_for: 0.0,
                labels: BTreeMap::new(),
                annotations: BTreeMap::new(),
                alerts: vec![alert("other", AlertState::Firing), alert("shop", AlertState::Pending)],
                health: Health::Ok,
                last_error: None,
                evaluation_time: 0.0,
                last_evaluation: NEVER.into(),
                kind: "alerting",
            })],
            interval: 15.0,
            limit: 0,
            evaluation_time: 0.0,
            last_evaluation: NEVER.into(),
        };
        let Ok(shop) = Matcher::regex("project", "shop", false) else { panic!("a matcher") };
        let groups = scoped_groups(vec![group], &[shop]);
        let RuleSnapshot::Alerting(rule) = &groups[0].rules[0] else { panic!("an alerting rule") };
        assert_eq!(rule.alerts.len(), 1);
        assert_eq!(rule.state, AlertState::Pending);
    }
}
