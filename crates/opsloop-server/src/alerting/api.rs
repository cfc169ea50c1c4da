//! Alertmanager's API v2 under `/alertmanager`, so a Prometheus's `alerting.alertmanagers`
//! (with `path_prefix: /alertmanager` and a token) and amtool talk to opsloop as to
//! Alertmanager 0.25: alerts in and listed, groups, silences, receivers, status. Errors are
//! Alertmanager's: a JSON string with 400 for bad input, 404 for an unknown silence.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use jiff::Timestamp;
use opsloop_alert::alerts::PostableAlert;
use opsloop_alert::dispatch::{AlertState, AlertView};
use opsloop_alert::matcher::Matcher;
use opsloop_alert::silence::{PostableSilence, Silence, SilenceState};
use serde::Deserialize;
use serde_json::{Value, json};

use super::engine;
use crate::auth::Access;
use crate::routes::{RouteTable, Surface};
use crate::state::AppState;

/// The alerting engine's Alertmanager-compatible routes.
pub fn routes(table: RouteTable) -> RouteTable {
    use Access::*;
    let api = Surface::Compat;
    table
        .add(api, Method::GET, "/alertmanager/api/v2/alerts", Authenticated, list_alerts)
        .add(api, Method::POST, "/alertmanager/api/v2/alerts", AuthenticatedWrite, post_alerts)
        .add(api, Method::GET, "/alertmanager/api/v2/alerts/groups", Authenticated, groups)
        .add(api, Method::GET, "/alertmanager/api/v2/silences", Authenticated, list_silences)
        .add(api, Method::POST, "/alertmanager/api/v2/silences", AuthenticatedWrite, post_silence)
        .add(api, Method::GET, "/alertmanager/api/v2/silence/{silence_id}", Authenticated, get_silence)
        .add(api, Method::DELETE, "/alertmanager/api/v2/silence/{silence_id}", AuthenticatedWrite, expire_silence)
        .add(api, Method::GET, "/alertmanager/api/v2/status", Authenticated, status)
        .add(api, Method::GET, "/alertmanager/api/v2/receivers", Authenticated, receivers)
        // The routing key in the body is the credential (an opsloop token), checked by the handler.
        .add(Surface::Ops, Method::POST, "/integrations/pagerduty/v2/enqueue", Webhook, pagerduty_enqueue)
        .add(Surface::Ops, Method::GET, "/alertmanager/-/healthy", Public, healthy)
        .add(Surface::Ops, Method::GET, "/alertmanager/-/ready", Public, ready)
}

/// An answer in Alertmanager's error form: the message as a JSON string.
struct AmError(StatusCode, String);

impl IntoResponse for AmError {
    fn into_response(self) -> Response {
        (self.0, Json(Value::String(self.1))).into_response()
    }
}

async fn driver(state: &AppState) -> Result<&opsloop_alert::driver::Driver, AmError> {
    engine::driver(state).await.map_err(|e| {
        tracing::error!(error = %e, "the alerting engine is not running");
        AmError(StatusCode::SERVICE_UNAVAILABLE, format!("the alerting engine is not running: {e}"))
    })
}

fn now(state: &AppState) -> Timestamp {
    opsloop_alert::oncall::now(state.store.clock().as_ref())
}

/// Alertmanager's `gettableAlert`, borrowing from the engine's view: written straight to the
/// response, never built as a JSON tree (50k alerts as `serde_json::Value`s cost ~260 MB and
/// half the time of a groups listing in bench/alerting.py).
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct GettableAlert<'a> {
    labels: &'a opsloop_alert::labels::LabelSet,
    annotations: &'a opsloop_alert::labels::LabelSet,
    starts_at: Timestamp,
    ends_at: Timestamp,
    updated_at: Timestamp,
    #[serde(rename = "generatorURL")]
    generator_url: &'a str,
    fingerprint: String,
    receivers: Vec<Named<'a>>,
    status: AlertStatusView<'a>,
}

#[derive(serde::Serialize)]
struct Named<'a> {
    name: &'a str,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct AlertStatusView<'a> {
    state: &'static str,
    silenced_by: &'a [String],
    inhibited_by: &'a [String],
}

#[derive(serde::Serialize)]
struct GroupOut<'a> {
    labels: &'a opsloop_alert::labels::LabelSet,
    receiver: Named<'a>,
    alerts: Vec<GettableAlert<'a>>,
}

fn gettable_alert(view: &AlertView) -> GettableAlert<'_> {
    let a = &view.alert;
    let state = match view.state {
        AlertState::Active => "active",
        AlertState::Suppressed => "suppressed",
    };
    GettableAlert {
        labels: &a.labels,
        annotations: &a.annotations,
        starts_at: a.starts_at,
        ends_at: a.ends_at,
        updated_at: a.updated_at,
        generator_url: &a.generator_url,
        fingerprint: a.fingerprint.to_string(),
        receivers: view.receivers.iter().map(|name| Named { name }).collect(),
        status: AlertStatusView { state, silenced_by: &view.silenced_by, inhibited_by: &view.inhibited_by },
    }
}

/// Alertmanager's `active`/`silenced`/`inhibited`/`unprocessed` flags, `filter` matchers and a
/// `receiver` regex.
struct AlertFilter {
    active: bool,
    silenced: bool,
    inhibited: bool,
    matchers: Vec<Matcher>,
    receiver: Option<regex::Regex>,
}

fn alert_filter(query: Option<&str>) -> Result<AlertFilter, AmError> {
    let mut filter =
        AlertFilter { active: true, silenced: true, inhibited: true, matchers: Vec::new(), receiver: None };
    let flag = |value: &str, name: &str| match value {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(AmError(StatusCode::BAD_REQUEST, format!("{name} in query must be of type boolean: \"{value}\""))),
    };
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "active" => filter.active = flag(&value, "active")?,
            "silenced" => filter.silenced = flag(&value, "silenced")?,
            "inhibited" => filter.inhibited = flag(&value, "inhibited")?,
            "unprocessed" => {
                flag(&value, "unprocessed")?;
            }
            "filter" => {
                let parsed = opsloop_alert::matcher::parse_matchers(&value)
                    .map_err(|e| AmError(StatusCode::BAD_REQUEST, format!("bad matcher format: {e}")))?;
                filter.matchers.extend(parsed);
            }
            "receiver" => {
                let regex = regex::Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| AmError(StatusCode::BAD_REQUEST, format!("failed to parse receiver param: {e}")))?;
                filter.receiver = Some(regex);
            }
            _ => {}
        }
    }
    Ok(filter)
}

impl AlertFilter {
    fn keeps(&self, view: &AlertView) -> bool {
        let shown = match view.state {
            AlertState::Active => self.active,
            AlertState::Suppressed => {
                (self.silenced || view.silenced_by.is_empty()) && (self.inhibited || view.inhibited_by.is_empty())
            }
        };
        shown
            && self.matchers.iter().all(|m| m.matches(&view.alert.labels))
            && self.receiver.as_ref().is_none_or(|r| view.receivers.iter().any(|name| r.is_match(name)))
    }
}

async fn list_alerts(State(state): State<AppState>, RawQuery(query): RawQuery) -> Result<Response, AmError> {
    let filter = alert_filter(query.as_deref())?;
    let driver = driver(&state).await?;
    let at = now(&state);
    let views = driver.with(|engine| engine.alerts(at));
    let shown: Vec<GettableAlert<'_>> = views.iter().filter(|v| filter.keeps(v)).map(gettable_alert).collect();
    Ok(Json(shown).into_response())
}

async fn post_alerts(State(state): State<AppState>, body: axum::body::Bytes) -> Result<StatusCode, AmError> {
    let alerts: Vec<PostableAlert> =
        serde_json::from_slice(&body).map_err(|e| AmError(StatusCode::BAD_REQUEST, format!("{e}")))?;
    let driver = driver(&state).await?;
    let at = now(&state);
    driver.with(|engine| engine.put(alerts, at)).map_err(|e| AmError(StatusCode::BAD_REQUEST, e.to_string()))?;
    Ok(StatusCode::OK)
}

async fn groups(State(state): State<AppState>, RawQuery(query): RawQuery) -> Result<Response, AmError> {
    let filter = alert_filter(query.as_deref())?;
    let driver = driver(&state).await?;
    let at = now(&state);
    let groups = driver.with(|engine| engine.groups(at));
    let shown: Vec<GroupOut<'_>> = groups
        .iter()
        .filter(|g| filter.receiver.as_ref().is_none_or(|r| r.is_match(&g.receiver)))
        .filter_map(|g| {
            let alerts: Vec<GettableAlert<'_>> =
                g.alerts.iter().filter(|v| filter.keeps(v)).map(gettable_alert).collect();
            (!alerts.is_empty()).then_some(GroupOut {
                labels: &g.labels,
                receiver: Named { name: &g.receiver },
                alerts,
            })
        })
        .collect();
    Ok(Json(shown).into_response())
}

fn gettable_silence(silence: &Silence, state: SilenceState) -> Value {
    let mut value = serde_json::to_value(silence).unwrap_or(Value::Null);
    let state = match state {
        SilenceState::Pending => "pending",
        SilenceState::Active => "active",
        SilenceState::Expired => "expired",
    };
    value["status"] = json!({ "state": state });
    value
}

async fn list_silences(State(state): State<AppState>, RawQuery(query): RawQuery) -> Result<Json<Vec<Value>>, AmError> {
    let mut matchers = Vec::new();
    for (key, value) in url::form_urlencoded::parse(query.as_deref().unwrap_or("").as_bytes()) {
        if key == "filter" {
            let parsed = opsloop_alert::matcher::parse_matchers(&value)
                .map_err(|e| AmError(StatusCode::BAD_REQUEST, format!("bad matcher format: {e}")))?;
            matchers.extend(parsed);
        }
    }
    let driver = driver(&state).await?;
    let at = now(&state);
    let silences = driver.with(|engine| engine.silences(at));
    Ok(Json(
        silences
            .iter()
            // A silence passes a filter when one of its matchers is the filter's matcher.
            .filter(|(s, _)| {
                matchers.iter().all(|m| {
                    s.matchers.iter().any(|sm| sm.to_matcher().is_ok_and(|own| own.to_string() == m.to_string()))
                })
            })
            .map(|(s, st)| gettable_silence(s, *st))
            .collect(),
    ))
}

async fn post_silence(State(state): State<AppState>, body: axum::body::Bytes) -> Result<Json<Value>, AmError> {
    let silence: PostableSilence =
        serde_json::from_slice(&body).map_err(|e| AmError(StatusCode::BAD_REQUEST, format!("{e}")))?;
    let driver = driver(&state).await?;
    let at = now(&state);
    let id = driver.with(|engine| engine.set_silence(silence, at)).map_err(|e| {
        let code = if matches!(e, opsloop_alert::silence::SilenceError::NotFound(_)) {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::BAD_REQUEST
        };
        AmError(code, e.to_string())
    })?;
    engine::save(&state, driver).await;
    Ok(Json(json!({ "silenceID": id })))
}

#[derive(Debug, Deserialize)]
struct SilencePath {
    silence_id: String,
}

async fn get_silence(State(state): State<AppState>, Path(path): Path<SilencePath>) -> Result<Json<Value>, AmError> {
    let driver = driver(&state).await?;
    let at = now(&state);
    let found = driver.with(|engine| engine.silence(&path.silence_id).map(|s| (s.clone(), s.state(at))));
    let (silence, silence_state) =
        found.ok_or_else(|| AmError(StatusCode::NOT_FOUND, format!("silence {} not found", path.silence_id)))?;
    Ok(Json(gettable_silence(&silence, silence_state)))
}

async fn expire_silence(State(state): State<AppState>, Path(path): Path<SilencePath>) -> Result<StatusCode, AmError> {
    let driver = driver(&state).await?;
    let at = now(&state);
    driver.with(|engine| engine.expire_silence(&path.silence_id, at)).map_err(|e| {
        let code = if matches!(e, opsloop_alert::silence::SilenceError::NotFound(_)) {
            StatusCode::NOT_FOUND
        } else {
            StatusCode::BAD_REQUEST
        };
        AmError(code, e.to_string())
    })?;
    engine::save(&state, driver).await;
    Ok(StatusCode::OK)
}

async fn status(State(state): State<AppState>) -> Result<Json<Value>, AmError> {
    driver(&state).await?;
    let (original, _) = engine::config_text(&state).map_err(|e| AmError(StatusCode::SERVICE_UNAVAILABLE, e))?;
    Ok(Json(json!({
        "cluster": { "status": "disabled", "peers": [] },
        "config": { "original": original },
        "uptime": state.alerting.started.get().map(|t| t.to_string()).unwrap_or_default(),
        "versionInfo": {
            "version": "0.25.0",
            "revision": "opsloop",
            "branch": "opsloop",
            "buildUser": "opsloop",
            "buildDate": "",
            "goVersion": concat!("opsloop ", env!("CARGO_PKG_VERSION")),
        },
    })))
}

async fn receivers(State(state): State<AppState>) -> Result<Json<Vec<Value>>, AmError> {
    let driver = driver(&state).await?;
    let names = driver.with(|engine| engine.config().receivers.iter().map(|r| r.name.clone()).collect::<Vec<_>>());
    Ok(Json(names.into_iter().map(|name| json!({ "name": name })).collect()))
}

async fn healthy() -> &'static str {
    "OK"
}

async fn ready(State(state): State<AppState>) -> Response {
    match engine::driver(&state).await {
        Ok(_) => "OK".into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, e).into_response(),
    }
}

/// PagerDuty Events API v2's `enqueue` body, as tools that page PagerDuty send it.
#[derive(Debug, Deserialize)]
struct PagerDutyEvent {
    routing_key: String,
    event_action: String,
    dedup_key: Option<String>,
    payload: Option<PagerDutyPayload>,
}

#[derive(Debug, Deserialize)]
struct PagerDutyPayload {
    summary: String,
    source: String,
    severity: String,
    component: Option<String>,
    group: Option<String>,
    class: Option<String>,
    custom_details: Option<Value>,
}

fn pagerduty_error(status: StatusCode, message: &str, errors: Vec<String>) -> Response {
    (status, Json(json!({ "status": "invalid event", "message": message, "errors": errors }))).into_response()
}

/// PagerDuty Events API v2 in: point a tool that pages PagerDuty at
/// `http://HOST/integrations/pagerduty/v2/enqueue` with an opsloop token (developer or
/// above) as its routing key. `trigger` fires an alert (labels `alertname="PagerDuty"`,
/// `dedup_key`, `source`, `severity`, `component`, `group`, `class`; the summary and details
/// as annotations) that opsloop routes like any other; `resolve` resolves it; `acknowledge` is
/// accepted and changes nothing (acknowledge the incident in opsloop).
pub async fn pagerduty_enqueue(State(state): State<AppState>, body: axum::body::Bytes) -> Response {
    let event: PagerDutyEvent = match serde_json::from_slice(&body) {
        Ok(event) => event,
        Err(e) => return pagerduty_error(StatusCode::BAD_REQUEST, "Event object is invalid", vec![e.to_string()]),
    };
    // The routing key is the credential: an opsloop token that may write.
    let mut headers = axum::http::HeaderMap::new();
    let Ok(value) = axum::http::HeaderValue::from_str(&format!("Bearer {}", event.routing_key)) else {
        return pagerduty_error(StatusCode::BAD_REQUEST, "Event object is invalid", vec!["bad routing_key".to_owned()]);
    };
    headers.insert(axum::http::header::AUTHORIZATION, value);
    let principal =
        crate::auth::resolve_principal(&state.store, &state.token_cache, &headers, "pagerduty".to_owned()).await;
    match principal {
        Ok(Some(p)) if p.cap >= opsloop_core::Role::Developer => {}
        Ok(Some(_)) => return pagerduty_error(StatusCode::FORBIDDEN, "The routing key may not write", Vec::new()),
        Ok(None) => return pagerduty_error(StatusCode::UNAUTHORIZED, "Invalid routing key", Vec::new()),
        Err(e) => {
            tracing::error!(error = %e, "checking a PagerDuty routing key");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    }
    let dedup_key = event.dedup_key.clone().unwrap_or_else(|| {
        let mut bytes = [0u8; 16];
        let _ = getrandom::fill(&mut bytes);
        hex::encode(bytes)
    });
    let at = now(&state);
    let alert = match (event.event_action.as_str(), &event.payload) {
        ("trigger", Some(p)) => {
            if !matches!(p.severity.as_str(), "critical" | "error" | "warning" | "info") {
                return pagerduty_error(
                    StatusCode::BAD_REQUEST,
                    "Event object is invalid",
                    vec!["'payload.severity' must be one of critical, error, warning or info".to_owned()],
                );
            }
            let mut labels = vec![
                ("alertname", "PagerDuty".to_owned()),
                ("dedup_key", dedup_key.clone()),
                ("source", p.source.clone()),
                ("severity", p.severity.clone()),
            ];
            for (name, value) in [("component", &p.component), ("group", &p.group), ("class", &p.class)] {
                if let Some(value) = value {
                    labels.push((name, value.clone()));
                }
            }
            let mut annotations = vec![("summary", p.summary.clone())];
            if let Some(details) = &p.custom_details {
                annotations.push(("details", details.to_string()));
            }
            PostableAlert {
                labels: opsloop_alert::labels::LabelSet::from_pairs(labels),
                annotations: opsloop_alert::labels::LabelSet::from_pairs(annotations),
                starts_at: Some(at),
                ends_at: None,
                generator_url: String::new(),
            }
        }
        ("trigger", None) => {
            return pagerduty_error(
                StatusCode::BAD_REQUEST,
                "Event object is invalid",
                vec!["'payload' is missing".to_owned()],
            );
        }
        ("resolve", _) => {
            // The alert as it was triggered: found by its dedup key among the engine's alerts.
            let Ok(driver) = driver(&state).await else { return StatusCode::SERVICE_UNAVAILABLE.into_response() };
            let found = driver.with(|engine| {
                engine.alerts(at).into_iter().find(|v| {
                    v.alert.labels.get("alertname") == Some("PagerDuty")
                        && v.alert.labels.get("dedup_key") == Some(dedup_key.as_str())
                })
            });
            let Some(view) = found else {
                return (
                    StatusCode::ACCEPTED,
                    Json(json!({ "status": "success", "message": "Event processed", "dedup_key": dedup_key })),
                )
                    .into_response();
            };
            PostableAlert {
                labels: view.alert.labels.clone(),
                annotations: view.alert.annotations.clone(),
                starts_at: Some(view.alert.starts_at),
                ends_at: Some(at),
                generator_url: String::new(),
            }
        }
        ("acknowledge", _) => {
            return (
                StatusCode::ACCEPTED,
                Json(json!({ "status": "success", "message": "Event processed", "dedup_key": dedup_key })),
            )
                .into_response();
        }
        (other, _) => {
            return pagerduty_error(
                StatusCode::BAD_REQUEST,
                "Event object is invalid",
                vec![format!("'event_action' must be trigger, acknowledge or resolve, not {other:?}")],
            );
        }
    };
    let Ok(driver) = driver(&state).await else { return StatusCode::SERVICE_UNAVAILABLE.into_response() };
    if let Err(e) = driver.with(|engine| engine.put(vec![alert], at)) {
        return pagerduty_error(StatusCode::BAD_REQUEST, "Event object is invalid", vec![e.to_string()]);
    }
    (StatusCode::ACCEPTED, Json(json!({ "status": "success", "message": "Event processed", "dedup_key": dedup_key })))
        .into_response()
}
