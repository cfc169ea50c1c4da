//! The Alerts pages of opsloop's own alerting engine (not the metrics rules' alerts, which
//! `rules.rs` shows): `/alerting/alerts`, the engine's alerts by notification group with their
//! state, silences and receivers, each with a Silence button; and `/alerting/silences`, the
//! silences with Expire buttons and the form that creates one (prefilled from an alert's
//! labels). As the Alertmanager API (`crate::alerting::api`): every signed-in person reads,
//! writes need a writing credential (the routes say `AuthenticatedWrite`).

use axum::Extension;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use jiff::Timestamp;
use maud::{Markup, html};
use opsloop_alert::dispatch::{AlertState, AlertView, GroupView};
use opsloop_alert::labels::{LabelSet, go_quote};
use opsloop_alert::matcher::{MatchType, parse_matcher};
use opsloop_alert::silence::{PostableSilence, Silence, SilenceMatcher, SilenceState};
use opsloop_core::Role;
use serde::Deserialize;

use super::metrics::range_seconds;
use super::{csrf_field, error_box, error_page, layout, notice};
use crate::alerting::engine;
use crate::auth::Principal;
use crate::state::AppState;
use crate::views::human_time;

/// Both pages count as the Alerts area of the navigation.
pub(super) const AREA: &str = "/alerting/alerts";

/// A silence's length when the form does not say.
const DEFAULT_DURATION: &str = "2h";

fn now(state: &AppState) -> Timestamp {
    opsloop_alert::oncall::now(state.store.clock().as_ref())
}

/// Whether the caller's credential may change alerting (as `Access::AuthenticatedWrite`), so
/// the pages offer only the buttons that would work.
fn can_write(principal: &Principal) -> bool {
    principal.cap >= Role::Developer
}

async fn driver(state: &AppState) -> Result<&opsloop_alert::driver::Driver, Response> {
    engine::driver(state).await.map_err(|e| {
        tracing::error!(error = %e, "the alerting engine is not running");
        error_page(StatusCode::SERVICE_UNAVAILABLE, &format!("The alerting engine is not running: {e}"))
    })
}

fn subnav(current: &str) -> Markup {
    let pages = [("/alerting/alerts", "Alerts"), ("/alerting/silences", "Silences")];
    html! {
        nav.subnav aria-label="Alerting pages" {
            ul { @for (path, label) in pages {
                li { a href=(path) aria-current=[(path == current).then_some("page")] { (label) } }
            } }
        }
    }
}

fn label_list(labels: &LabelSet) -> Markup {
    html! { @for (name, value) in labels.iter() { code.label { (name) "=\"" (value) "\"" } " " } }
}

fn ts_ms(at: Timestamp) -> i64 {
    at.as_millisecond()
}

/// One matcher line of the silence form: `name=value` when the value reads back as written,
/// quoted otherwise (backslashes, quotes, surrounding spaces, line breaks).
fn matcher_line(name: &str, value: &str) -> String {
    let plain = !value.is_empty()
        && value.trim() == value
        && !value.contains(['\\', '"', '\n', '\r'])
        && !value.starts_with(['=', '~']);
    if plain { format!("{name}={value}") } else { format!("{name}={}", go_quote(value)) }
}

/// The silence form's address, prefilled with matchers for every label of an alert.
fn silence_link(labels: &LabelSet) -> String {
    let lines: Vec<String> = labels.iter().map(|(n, v)| matcher_line(n, v)).collect();
    format!("/alerting/silences?{}", serde_urlencoded::to_string([("matchers", lines.join("\n"))]).unwrap_or_default())
}

fn state_badge(view: &AlertView) -> Markup {
    match view.state {
        AlertState::Active => html! { span.badge.status-failed.alert-state data-state="active" { "active" } },
        AlertState::Suppressed => {
            html! { span.badge.status-pending.alert-state data-state="suppressed" { "suppressed" } }
        }
    }
}

fn alert_row(view: &AlertView, writable: bool, now_ms: i64) -> Markup {
    let alert = &view.alert;
    html! {
        tr.alert data-fingerprint=(alert.fingerprint.to_string()) data-state=(match view.state { AlertState::Active => "active", AlertState::Suppressed => "suppressed" }) {
            td { (label_list(&alert.labels)) }
            td { (state_badge(view)) }
            td {
                @for id in &view.silenced_by { a.silenced-by href={ "/alerting/silences#silence-" (id) } { code { (id.get(..8).unwrap_or(id)) } } " " }
                @for id in &view.inhibited_by { span.muted { "inhibited by " code { (id) } } " " }
                @if view.silenced_by.is_empty() && view.inhibited_by.is_empty() { span.muted { "—" } }
            }
            td { (view.receivers.join(", ")) }
            td.age title=(human_time(ts_ms(alert.starts_at))) { (super::incidents::age(now_ms, ts_ms(alert.starts_at))) }
            td { (alert.annotations.get("summary").unwrap_or("")) }
            td {
                @if writable { a.button.secondary href=(silence_link(&alert.labels)) { "Silence" } }
            }
        }
    }
}

pub async fn alerts(State(state): State<AppState>, Extension(principal): Extension<Principal>) -> Response {
    let driver = match driver(&state).await {
        Ok(driver) => driver,
        Err(response) => return response,
    };
    let at = now(&state);
    let groups: Vec<GroupView> = driver.with(|e| e.groups(at));
    let (mut active, mut suppressed) = (0, 0);
    for view in groups.iter().flat_map(|g| &g.alerts) {
        match view.state {
            AlertState::Active => active += 1,
            AlertState::Suppressed => suppressed += 1,
        }
    }
    let writable = can_write(&principal);
    layout("Alerts", Some(&principal), AREA, html! {
        h1 { "Alerts" }
        (subnav("/alerting/alerts"))
        p.hint {
            "Alerts received by opsloop's alerting (from the metrics rules, checks, heartbeats, a Prometheus or the API), "
            "grouped as the " code { "alertmanager.yml" } " routes them. A silenced alert is still listed, as suppressed."
        }
        p #alert-counts { span.badge.status-failed { (active) " active" } " " span.badge.status-pending { (suppressed) " suppressed" } }
        @if groups.is_empty() { p.muted #no-alerts { "No alert is firing." } }
        @for group in &groups {
            section.alert-group data-receiver=(group.receiver) {
                h2 { "Group " (label_list(&group.labels)) " " span.muted { "→ " (group.receiver) } }
                table.alerts {
                    thead { tr {
                        th scope="col" { "Labels" } th scope="col" { "State" } th scope="col" { "Silenced by" }
                        th scope="col" { "Receivers" } th scope="col" { "Age" } th scope="col" { "Summary" }
                        th scope="col" { span.muted { "Actions" } }
                    } }
                    tbody { @for view in &group.alerts { (alert_row(view, writable, ts_ms(at))) } }
                }
            }
        }
    })
    .into_response()
}

#[derive(Debug, Default, Deserialize)]
pub struct SilencesQuery {
    #[serde(default)]
    notice: Option<String>,
    /// Prefilled matcher lines (the Silence button of an alert).
    #[serde(default)]
    matchers: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct SilenceForm {
    #[serde(default)]
    matchers: String,
    #[serde(default)]
    duration: String,
    #[serde(default)]
    comment: String,
}

#[derive(Debug, Deserialize)]
pub struct SilencePath {
    silence_id: String,
}

pub async fn silences(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Query(query): Query<SilencesQuery>,
) -> Response {
    let form = SilenceForm {
        matchers: query.matchers.unwrap_or_default(),
        duration: DEFAULT_DURATION.to_owned(),
        comment: String::new(),
    };
    render_silences(&state, &principal, query.notice.as_deref(), None, &form).await
}

fn silence_state_badge(state: SilenceState) -> Markup {
    let (class, word) = match state {
        SilenceState::Active => ("status-success", "active"),
        SilenceState::Pending => ("status-pending", "pending"),
        SilenceState::Expired => ("", "expired"),
    };
    html! { span class={ "badge silence-state " (class) } data-state=(word) { (word) } }
}

fn matcher_text(m: &SilenceMatcher) -> String {
    m.to_matcher().map(|m| m.to_string()).unwrap_or_else(|_| format!("{}={}", m.name, go_quote(&m.value)))
}

async fn render_silences(
    state: &AppState,
    principal: &Principal,
    notice_key: Option<&str>,
    error: Option<&str>,
    form: &SilenceForm,
) -> Response {
    let driver = match driver(state).await {
        Ok(driver) => driver,
        Err(response) => return response,
    };
    let at = now(state);
    let mut listed: Vec<(Silence, SilenceState)> = driver.with(|e| e.silences(at));
    // Active first, then pending, then expired; within each, the one ending soonest.
    let rank = |s: SilenceState| match s {
        SilenceState::Active => 0,
        SilenceState::Pending => 1,
        SilenceState::Expired => 2,
    };
    listed.sort_by(|(a, sa), (b, sb)| rank(*sa).cmp(&rank(*sb)).then_with(|| a.ends_at.cmp(&b.ends_at)));
    let writable = can_write(principal);
    let status = if error.is_some() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::OK };
    let page = layout(
        "Silences",
        Some(principal),
        AREA,
        html! {
            h1 { "Silences" }
            (subnav("/alerting/silences"))
            (notice(notice_key))
            (error_box(error))
            @if writable {
                section.card #new-silence {
                    h2 { "New silence" }
                    form.stack method="post" action="/alerting/silences" {
                        (csrf_field(principal))
                        label {
                            "Matchers"
                            small { " One per line: " code { "name=value" } ", " code { "name!=value" } ", " code { "name=~regex" } " or " code { "name!~regex" } "; an alert is silenced when all match." }
                            textarea name="matchers" rows="4" required { (form.matchers) }
                        }
                        label {
                            "Duration"
                            small { " From now, such as " code { "30m" } ", " code { "2h" } " or " code { "1d" } "." }
                            input type="text" name="duration" value=(form.duration) required;
                        }
                        label {
                            "Comment"
                            small { " Why, for whoever finds the alert silenced." }
                            input type="text" name="comment" value=(form.comment) required maxlength="1000";
                        }
                        button type="submit" { "Create silence" }
                    }
                }
            }
            h2 { "Silences" }
            @if listed.is_empty() { p.muted { "No silence." } }
            @else {
                table.silences {
                    thead { tr {
                        th scope="col" { "State" } th scope="col" { "Matchers" } th scope="col" { "Starts" } th scope="col" { "Ends" }
                        th scope="col" { "Created by" } th scope="col" { "Comment" } th scope="col" { span.muted { "Actions" } }
                    } }
                    tbody {
                        @for (silence, silence_state) in &listed {
                            tr.silence id={ "silence-" (silence.id) } data-state=(match silence_state { SilenceState::Active => "active", SilenceState::Pending => "pending", SilenceState::Expired => "expired" }) {
                                td { (silence_state_badge(*silence_state)) }
                                td { @for m in &silence.matchers { code.label { (matcher_text(m)) } " " } }
                                td { (human_time(ts_ms(silence.starts_at))) }
                                td { (human_time(ts_ms(silence.ends_at))) }
                                td { (silence.created_by) }
                                td { (silence.comment) }
                                td {
                                    @if writable && *silence_state != SilenceState::Expired {
                                        form.inline method="post" action={ "/alerting/silences/" (silence.id) "/expire" } {
                                            (csrf_field(principal))
                                            button.secondary type="submit" { "Expire" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        },
    );
    (status, page).into_response()
}

/// The form's matcher lines as the API's matchers; the message names the line that is wrong.
fn parse_matcher_lines(text: &str) -> Result<Vec<SilenceMatcher>, String> {
    let mut matchers = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let m = parse_matcher(line).map_err(|e| format!("line {}: {e}", n + 1))?;
        let (is_regex, is_equal) = match m.kind {
            MatchType::Equal => (false, true),
            MatchType::NotEqual => (false, false),
            MatchType::Regexp => (true, true),
            MatchType::NotRegexp => (true, false),
        };
        matchers.push(SilenceMatcher { name: m.name.to_string(), value: m.value.to_string(), is_regex, is_equal });
    }
    if matchers.is_empty() {
        return Err("write at least one matcher, such as alertname=DiskFull".to_owned());
    }
    Ok(matchers)
}

/// The form as the silence the engine takes, starting now; the message says what is wrong.
fn postable(form: &SilenceForm, at: Timestamp, username: &str) -> Result<PostableSilence, String> {
    let matchers = parse_matcher_lines(&form.matchers)?;
    let duration = form.duration.trim();
    let seconds = range_seconds(duration)
        .ok_or_else(|| format!("`{duration}` is no duration: write a number and s, m, h, d or w, such as 2h"))?;
    let comment = form.comment.trim();
    if comment.is_empty() || comment.len() > 1000 {
        return Err("a comment of 1 to 1000 bytes says why".to_owned());
    }
    let ends_at = i64::try_from(seconds)
        .ok()
        .and_then(|s| at.checked_add(jiff::SignedDuration::from_secs(s)).ok())
        .ok_or_else(|| "that duration ends out of range".to_owned())?;
    Ok(PostableSilence {
        id: None,
        matchers,
        starts_at: Some(at),
        ends_at: Some(ends_at),
        created_by: username.to_owned(),
        comment: comment.to_owned(),
    })
}

pub async fn create_silence(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Form(form): Form<SilenceForm>,
) -> Response {
    let at = now(&state);
    let silence = match postable(&form, at, &principal.user.username) {
        Ok(silence) => silence,
        Err(message) => return render_silences(&state, &principal, None, Some(&message), &form).await,
    };
    let driver = match driver(&state).await {
        Ok(driver) => driver,
        Err(response) => return response,
    };
    match driver.with(|e| e.set_silence(silence, at)) {
        Ok(_) => {
            engine::save(&state, driver).await;
            Redirect::to("/alerting/silences?notice=silenced").into_response()
        }
        Err(error) => render_silences(&state, &principal, None, Some(&error.to_string()), &form).await,
    }
}

pub async fn expire_silence(
    State(state): State<AppState>,
    Extension(principal): Extension<Principal>,
    Path(path): Path<SilencePath>,
) -> Response {
    let driver = match driver(&state).await {
        Ok(driver) => driver,
        Err(response) => return response,
    };
    let at = now(&state);
    match driver.with(|e| e.expire_silence(&path.silence_id, at)) {
        Ok(()) => {
            engine::save(&state, driver).await;
            Redirect::to("/alerting/silences?notice=silence-expired").into_response()
        }
        Err(opsloop_alert::silence::SilenceError::NotFound(_)) => {
            error_page(StatusCode::NOT_FOUND, &format!("silence {} not found", path.silence_id))
        }
        Err(error) => {
            let form = SilenceForm { duration: DEFAULT_DURATION.to_owned(), ..SilenceForm::default() };
            render_silences(&state, &principal, None, Some(&error.to_string()), &form).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_alerts_labels_prefill_matchers_that_parse_back_to_them() {
        let labels = LabelSet::from_pairs([("alertname", "DiskFull"), ("path", "C:\\data"), ("note", " spaced ")]);
        let lines: Vec<String> = labels.iter().map(|(n, v)| matcher_line(n, v)).collect();
        assert!(lines.contains(&"alertname=DiskFull".to_owned()), "{lines:?}");
        let parsed = parse_matcher_lines(&lines.join("\n")).expect("the lines parse");
        for (name, value) in labels.iter() {
            assert!(parsed.iter().any(|m| m.name == name && m.value == value && m.is_equal && !m.is_regex), "{name}");
        }
    }

    #[test]
    fn matcher_lines_take_every_operator_and_name_the_wrong_line() {
        let parsed = parse_matcher_lines("a=1\n\n b!=2 \nc=~x.*\nd!~y").expect("four matchers");
        let kinds: Vec<(bool, bool)> = parsed.iter().map(|m| (m.is_regex, m.is_equal)).collect();
        assert_eq!(kinds, [(false, true), (false, false), (true, true), (true, false)]);
        let Err(message) = parse_matcher_lines("a=1\nnot a matcher") else { panic!("refused") };
        assert!(message.starts_with("line 2:"), "{message}");
        assert!(parse_matcher_lines(" \n").is_err());
    }
}
