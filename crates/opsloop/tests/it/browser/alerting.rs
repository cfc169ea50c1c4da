//! Alerting, on-call and checks in the browser: with an `alertmanager.yml` whose receiver opens
//! incidents (`oncall_configs`), an on-call file and a checks file, an alert posted over the
//! Alertmanager API opens an incident; a person acknowledges it and adds a note on its page
//! (both on the timeline), finds who is on call, silences the alert through the form its
//! Silence button prefills (the alert then shows suppressed, and active again once the
//! silence is expired), and sees the check up and runs it.

use std::time::{Duration, Instant};

use fantoccini::Locator;
use reqwest::StatusCode;

use super::{
    ChromeDriver, POLL, assert_inputs_are_labelled, assert_no_csp_violation, assert_page, fill, form, location,
    page_text, read, sign_in_as_admin, submit, wait_for_location, wait_for_text,
};
use crate::harness::Server;

/// Writes the three configuration files and returns the server's arguments for them.
fn configs(dir: &std::path::Path) -> Vec<String> {
    let alerting = dir.join("alertmanager.yml");
    std::fs::write(
        &alerting,
        "route:
  receiver: team
  group_by: [alertname]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 1h
  routes:
    - matchers: ['severity=\"critical\"']
      receiver: pager
receivers:
  - name: team
  - name: pager
    oncall_configs:
      - escalation_policy: default
",
    )
    .expect("write alertmanager.yml");
    let oncall = dir.join("oncall.yml");
    // The page goes nowhere (a closed port): the timeline then says it failed, which is fine here.
    std::fs::write(
        &oncall,
        "users:
  - name: alice
    contact:
      - webhook: http://127.0.0.1:9/page
schedules:
  - name: primary
    timezone: Europe/Berlin
    layers:
      - rotation: 1d
        handoff: 2026-01-01T09:00
        users: [alice]
escalation_policies:
  - name: default
    levels:
      - targets: [schedule:primary]
",
    )
    .expect("write oncall.yml");
    let checks = dir.join("checks.yml");
    std::fs::write(
        &checks,
        "endpoints:\n  - name: always\n    command: ['true']\n    interval: 1s\n    conditions: ['[STATUS] == 0']\n",
    )
    .expect("write checks.yml");
    [("--alerting-config", alerting), ("--oncall-config", oncall), ("--checks-config", checks)]
        .into_iter()
        .flat_map(|(flag, path)| [flag.to_owned(), path.display().to_string()])
        .collect()
}

/// Posts a critical alert and waits for the incident it opens; returns the incident's id.
async fn open_incident(server: &Server, token: &str) -> i64 {
    let client = Server::client();
    let alert = serde_json::json!([{
        "labels": { "alertname": "DiskFull", "instance": "db1", "severity": "critical" },
        "annotations": { "summary": "the disk of db1 is full" },
    }]);
    let posted = client
        .post(format!("{}/alertmanager/api/v2/alerts", server.url))
        .bearer_auth(token)
        .json(&alert)
        .send()
        .await
        .expect("POST an alert");
    assert_eq!(posted.status(), StatusCode::OK, "{}", posted.text().await.unwrap_or_default());
    // Generous: under the whole suite's load on two cores a minute is not unusual.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let listed = client
            .get(format!("{}/api/v1/incidents", server.url))
            .bearer_auth(token)
            .send()
            .await
            .expect("GET /api/v1/incidents");
        let incidents: serde_json::Value = listed.json().await.unwrap_or_default();
        if let Some(id) = incidents.as_array().and_then(|all| all.first()).and_then(|i| i["id"].as_i64()) {
            return id;
        }
        assert!(Instant::now() < deadline, "no incident opened: {incidents}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_is_acknowledged_its_alert_silenced_and_the_checks_seen_in_the_browser() {
    let Some(driver) = ChromeDriver::start_or_skip().await else { return };
    let dir = tempfile::tempdir().expect("temporary directory");
    let args = configs(dir.path());
    let server = {
        let data = dir.path().join("data");
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Server::start_in(&data, &args)
        })
        .await
        .expect("start the server")
    };
    let token = tokio::task::block_in_place(|| server.token("developer"));
    let id = open_incident(&server, &token).await;
    let browser = driver.open_browser().await;
    sign_in_as_admin(&browser, &server).await;
    let at = |path: &str| format!("{}{path}", server.url);

    // The navigation leads to the new areas.
    let areas = read(&browser, "return [...document.querySelectorAll('nav.areas a')].map(a => a.textContent)").await;
    for area in ["Incidents", "Alerts", "On-call", "Checks"] {
        assert_page(&browser, areas.as_array().is_some_and(|all| all.iter().any(|a| a == area)), area).await;
    }

    // Incidents: the open one is listed; its page shows the alert and a timeline.
    browser.goto(&at("/incidents")).await.expect("open /incidents");
    wait_for_text(&browser, "main h1", "Incidents").await;
    wait_for_text(&browser, "table.incidents tbody tr", "triggered").await;
    let link = wait_for_text(&browser, "table.incidents tbody a", "DiskFull").await;
    link.click().await.expect("open the incident");
    let page = format!("/incidents/{id}");
    wait_for_location(&browser, &page).await;
    wait_for_text(&browser, "#incident-status", "triggered").await;
    wait_for_text(&browser, "table.incident-alerts", "alertname=\"DiskFull\"").await;
    wait_for_text(&browser, "#incident-timeline li", "triggered").await;
    assert_no_csp_violation(&browser).await;

    // Acknowledge: the status changes and the timeline says who.
    let acknowledge = form(&browser, &format!("{page}/acknowledge")).await;
    submit(&acknowledge, "Acknowledge").await;
    wait_for_location(&browser, &format!("{page}?notice=acknowledged")).await;
    wait_for_text(&browser, "p.notice[role=status]", "acknowledged").await;
    wait_for_text(&browser, "#incident-status", "acknowledged").await;
    wait_for_text(&browser, "#incident-timeline li[data-kind=acknowledged]", "admin").await;
    assert!(
        browser.find_all(Locator::Css(&format!("form[action='{page}/acknowledge']"))).await.expect("lookup").is_empty(),
        "no Acknowledge button once acknowledged"
    );
    let note = form(&browser, &format!("{page}/notes")).await;
    fill(&note, "text", "disk cleanup started").await;
    submit(&note, "Add note").await;
    wait_for_location(&browser, &format!("{page}?notice=note-added")).await;
    wait_for_text(&browser, "#incident-timeline li[data-kind=note]", "disk cleanup started").await;
    assert_no_csp_violation(&browser).await;

    // On-call: alice is on call for the schedule, with her shifts and the calendar feed.
    browser.goto(&at("/oncall")).await.expect("open /oncall");
    wait_for_text(&browser, "section.schedule h2", "primary").await;
    wait_for_text(&browser, "section.schedule .oncall-user", "alice").await;
    wait_for_text(&browser, "table.shifts tbody tr", "alice").await;
    wait_for_text(&browser, "section.schedule a[href='/api/v1/oncall/primary/calendar.ics']", "iCal").await;
    assert_no_csp_violation(&browser).await;

    // Alerts: the alert is active; its Silence button prefills the form with its labels.
    browser.goto(&at("/alerting/alerts")).await.expect("open /alerting/alerts");
    let row = wait_for_text(&browser, "tr.alert[data-state=active]", "DiskFull").await;
    assert!(row.text().await.expect("row").contains("pager"), "the receiver is listed");
    let silence = row.find(Locator::Css("a.button")).await.expect("a Silence button");
    silence.click().await.expect("press Silence");
    let create = form(&browser, "/alerting/silences").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while location(&browser).await == "/alerting/alerts" {
        assert!(Instant::now() < deadline, "the Silence button led nowhere");
        tokio::time::sleep(POLL).await;
    }
    let prefilled = read(&browser, "return document.querySelector('textarea[name=matchers]').value").await;
    let prefilled = prefilled.as_str().unwrap_or_default().to_owned();
    assert_page(&browser, prefilled.lines().any(|l| l == "alertname=DiskFull"), &format!("prefilled: {prefilled:?}"))
        .await;
    assert_eq!(assert_inputs_are_labelled(&browser).await, 2, "duration and comment, each in a label");
    fill(&create, "comment", "disk being cleaned").await;
    submit(&create, "Create silence").await;
    wait_for_location(&browser, "/alerting/silences?notice=silenced").await;
    wait_for_text(&browser, "tr.silence[data-state=active]", "disk being cleaned").await;
    assert_no_csp_violation(&browser).await;
    browser.goto(&at("/alerting/alerts")).await.expect("open /alerting/alerts again");
    let row = wait_for_text(&browser, "tr.alert[data-state=suppressed]", "DiskFull").await;
    assert!(row.find(Locator::Css("a.silenced-by")).await.is_ok(), "the silence is named");

    // Expiring the silence from its list makes the alert active again.
    browser.goto(&at("/alerting/silences")).await.expect("open /alerting/silences");
    let silence = wait_for_text(&browser, "tr.silence[data-state=active]", "disk being cleaned").await;
    let expire = silence.find(Locator::Css("form")).await.expect("an Expire form");
    submit(&expire, "Expire").await;
    wait_for_location(&browser, "/alerting/silences?notice=silence-expired").await;
    wait_for_text(&browser, "tr.silence[data-state=expired]", "disk being cleaned").await;
    browser.goto(&at("/alerting/alerts")).await.expect("open /alerting/alerts once more");
    wait_for_text(&browser, "tr.alert[data-state=active]", "DiskFull").await;

    // Checks: the command check is up; Run now runs it again and says it passed.
    browser.goto(&at("/checks")).await.expect("open /checks");
    wait_for_text(&browser, "tr.check[data-check='_always'] span.badge", "up").await;
    wait_for_text(&browser, "tr.check[data-check='_always']", "command").await;
    let run = form(&browser, "/checks/_always/run").await;
    submit(&run, "Run now").await;
    wait_for_location(&browser, "/checks?notice=check-passed").await;
    wait_for_text(&browser, "p.notice[role=status]", "passed").await;
    assert_no_csp_violation(&browser).await;
    let shown = page_text(&browser).await;
    assert_page(&browser, !shown.contains("Not Found"), "the checks page").await;
}
