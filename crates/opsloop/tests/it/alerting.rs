//! Alerting through the real binary: a real Prometheus 2.42 evaluates a rule and sends its
//! alert to opsloop's `/alertmanager` (bearer token, `path_prefix`), opsloop routes it by its
//! `alertmanager.yml` to a webhook receiver and opens an incident that pages the person on call
//! (a webhook contact); the CLI lists and acknowledges it; amtool manages silences against it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::Method;

use crate::harness::{Server, call_json, free_port, opsloop, opsloop_client, skip, text};

type Received = Arc<Mutex<Vec<(String, serde_json::Value)>>>;

/// Keeps every POST body by path, answering 200.
fn receiver() -> (String, Received) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let received = Arc::new(Mutex::new(Vec::new()));
    let log = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            reader.read_line(&mut request_line).unwrap();
            let path = request_line.split_whitespace().nth(1).unwrap_or("").to_owned();
            let mut length = 0;
            loop {
                let mut line = String::new();
                reader.read_line(&mut line).unwrap();
                let trimmed = line.trim_end();
                if trimmed.is_empty() {
                    break;
                }
                if let Some((name, value)) = trimmed.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let body = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
            log.lock().unwrap().push((path, body));
            let _ = write!(stream, "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (url, received)
}

/// A request without credentials: the status and the body.
fn anonymous(method: Method, url: &str) -> (u16, String) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let response = Server::client().request(method, url).send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap_or_default())
    })
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("timed out waiting for {what}");
}

fn received_at(log: &Received, path: &str) -> Vec<serde_json::Value> {
    log.lock().unwrap().iter().filter(|(p, _)| p == path).map(|(_, body)| body.clone()).collect()
}

fn configs(dir: &std::path::Path, receiver: &str) -> (String, String) {
    let alerting = dir.join("alertmanager.yml");
    std::fs::write(
        &alerting,
        format!(
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
    webhook_configs:
      - url: {receiver}/team
  - name: pager
    webhook_configs:
      - url: {receiver}/pager
        send_resolved: true
    oncall_configs:
      - escalation_policy: default
"
        ),
    )
    .unwrap();
    let oncall = dir.join("oncall.yml");
    std::fs::write(
        &oncall,
        format!(
            "users:
  - name: alice
    contact:
      - webhook: {receiver}/page
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
"
        ),
    )
    .unwrap();
    (alerting.display().to_string(), oncall.display().to_string())
}

#[test]
fn a_real_prometheus_alert_is_routed_notified_and_pages_the_person_on_call() {
    if Command::new("prometheus").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        return skip("alerts from a real Prometheus, because prometheus is missing (apt-get install prometheus)");
    }
    let dir = tempfile::tempdir().unwrap();
    let (receiver_url, received) = receiver();
    let (alerting, oncall) = configs(dir.path(), &receiver_url);
    let data_dir = dir.path().join("data");
    let server = Server::start_in(&data_dir, &["--alerting-config", &alerting, "--oncall-config", &oncall]);
    let token = server.token("developer");
    let opsloop_address = server.url.trim_start_matches("http://").to_owned();

    // A Prometheus whose rule always fires, sending to opsloop as to an Alertmanager.
    std::fs::write(
        dir.path().join("rules.yml"),
        "groups:\n  - name: demo\n    interval: 1s\n    rules:\n      - alert: AlwaysFiring\n        expr: vector(1)\n        labels:\n          severity: critical\n        annotations:\n          summary: it fires\n",
    )
    .unwrap();
    let port = free_port();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  evaluation_interval: 1s\nrule_files: [rules.yml]\nalerting:\n  alertmanagers:\n    - path_prefix: /alertmanager\n      authorization:\n        credentials: {token}\n      static_configs:\n        - targets: ['{opsloop_address}']\n"
        ),
    )
    .unwrap();
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("prom").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        // Its first send races its discovery of the Alertmanager (and is dropped); resend soon.
        .arg("--rules.alert.resend-delay=1s")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // The pager receiver's webhook gets Alertmanager's payload; the team receiver nothing.
    wait_until("the pager webhook", || !received_at(&received, "/pager").is_empty());
    let notification = received_at(&received, "/pager").remove(0);
    assert_eq!(notification["version"], "4");
    assert_eq!(notification["receiver"], "pager");
    assert_eq!(notification["status"], "firing");
    assert_eq!(notification["groupLabels"]["alertname"], "AlwaysFiring");
    assert_eq!(notification["alerts"][0]["annotations"]["summary"], "it fires");
    assert!(received_at(&received, "/team").is_empty());

    // The incident opened, and alice was paged through her webhook.
    wait_until("alice's page", || !received_at(&received, "/page").is_empty());
    let page = received_at(&received, "/page").remove(0);
    assert_eq!(page["user"], "alice");
    let incident_id = page["incident"]["id"].as_i64().unwrap();
    let listed = opsloop_client(&server, &token, &["incident", "list", "--json"]);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    let incidents: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let incident = incidents.as_array().unwrap().iter().find(|i| i["id"] == incident_id).unwrap().clone();
    assert_eq!(incident["status"], "triggered");
    assert!(incident["title"].as_str().unwrap().contains("AlwaysFiring"), "{incident}");
    assert_eq!(incident["alerts"][0]["labels"]["alertname"], "AlwaysFiring");
    let kinds: Vec<&str> =
        incident["timeline"].as_array().unwrap().iter().map(|e| e["kind"].as_str().unwrap()).collect();
    assert!(kinds.contains(&"triggered") && kinds.contains(&"paged"), "{kinds:?}");

    // Alice acknowledges from the page's signed link, without signing in: opening it only asks,
    // its POST acts, once.
    let link = page["ack_url"].as_str().expect("the page carries an acknowledge link").to_owned();
    let opened = anonymous(Method::GET, &link);
    assert_eq!(opened.0, 200);
    assert!(opened.1.contains("Acknowledge incident"), "{}", opened.1);
    let shown = opsloop_client(&server, &token, &["incident", "show", &incident_id.to_string(), "--json"]);
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["status"], "triggered", "opening the link changed nothing");
    assert_eq!(anonymous(Method::POST, &link).0, 200);
    assert_eq!(anonymous(Method::POST, &link).0, 403, "a link works once");
    let tampered = format!("{}x", &link[..link.len() - 1]);
    assert_eq!(anonymous(Method::POST, &tampered).0, 403);
    let shown = opsloop_client(&server, &token, &["incident", "show", &incident_id.to_string(), "--json"]);
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    assert_eq!(shown["status"], "acknowledged");
    assert_eq!(shown["assignee"], "alice (link)");
    let resolved = opsloop_client(&server, &token, &["incident", "resolve", &incident_id.to_string(), "--json"]);
    assert!(resolved.status.success(), "{}", text(&resolved.stderr));
    let resolved: serde_json::Value = serde_json::from_slice(&resolved.stdout).unwrap();
    assert_eq!(resolved["status"], "resolved");

    // Alertmanager's API lists the alert with the receiver it reached.
    let (status, alerts) = call_json(Method::GET, &format!("{}/alertmanager/api/v2/alerts", server.url), &token, None);
    assert_eq!(status, 200);
    let alert = alerts.as_array().unwrap().iter().find(|a| a["labels"]["alertname"] == "AlwaysFiring").unwrap();
    assert_eq!(alert["receivers"][0]["name"], "pager");
    assert_eq!(alert["status"]["state"], "active");

    // amtool, with the token in its HTTP config, silences it; the API then shows it suppressed.
    if Command::new("amtool").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        skip("amtool against opsloop, because amtool is missing (apt-get install prometheus-alertmanager)");
    } else {
        let http_config = dir.path().join("amtool-http.yml");
        std::fs::write(&http_config, format!("authorization:\n  credentials: {token}\n")).unwrap();
        let amtool = |args: &[&str]| {
            Command::new("amtool")
                .arg(format!("--alertmanager.url={}/alertmanager", server.url))
                .arg(format!("--http.config.file={}", http_config.display()))
                .args(args)
                .output()
                .unwrap()
        };
        let added = amtool(&["silence", "add", "alertname=AlwaysFiring", "--comment=maintenance", "--duration=1h"]);
        assert!(added.status.success(), "amtool silence add: {}", text(&added.stderr));
        let id = text(&added.stdout).trim().to_owned();
        let queried = amtool(&["silence", "query", "-q"]);
        assert!(text(&queried.stdout).contains(&id), "{}", text(&queried.stdout));
        wait_until("the alert silenced", || {
            let (_, alerts) =
                call_json(Method::GET, &format!("{}/alertmanager/api/v2/alerts", server.url), &token, None);
            alerts.as_array().is_some_and(|all| {
                all.iter().any(|a| a["status"]["state"] == "suppressed" && a["status"]["silencedBy"][0] == id)
            })
        });
        let expired = amtool(&["silence", "expire", &id]);
        assert!(expired.status.success(), "amtool silence expire: {}", text(&expired.stderr));
    }
    let _ = prometheus.kill();
    let _ = prometheus.wait();
}

#[test]
fn alerts_posted_over_the_api_notify_once_and_survive_a_restart_without_repeating() {
    let dir = tempfile::tempdir().unwrap();
    let (receiver_url, received) = receiver();
    let (alerting, oncall) = configs(dir.path(), &receiver_url);
    let data_dir = dir.path().join("data");
    let mut server = Server::start_in(&data_dir, &["--alerting-config", &alerting, "--oncall-config", &oncall]);
    let token = server.token("developer");
    let alerts_url = format!("{}/alertmanager/api/v2/alerts", server.url);
    let alert = serde_json::json!([{ "labels": { "alertname": "DiskFull", "instance": "db1" } }]);
    let (status, _) = call_json(Method::POST, &alerts_url, &token, Some(alert.clone()));
    assert_eq!(status, 200);
    wait_until("the team webhook", || !received_at(&received, "/team").is_empty());
    let bad = serde_json::json!([{ "labels": {} }]);
    let (status, message) = call_json(Method::POST, &alerts_url, &token, Some(bad));
    assert_eq!(status, 400);
    assert!(message.as_str().unwrap_or_default().contains("label"), "{message}");

    // Restarted: the notification log came back, so the same alert is not notified again.
    server.terminate();
    let server = Server::start_in(&data_dir, &["--alerting-config", &alerting, "--oncall-config", &oncall]);
    let alerts_url = format!("{}/alertmanager/api/v2/alerts", server.url);
    let (status, _) = call_json(Method::POST, &alerts_url, &token, Some(alert));
    assert_eq!(status, 200);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(received_at(&received, "/team").len(), 1, "notified again after the restart");

    // The configuration checks, offline.
    let checked = opsloop(&["alerting", "check-config", &alerting]);
    assert!(checked.status.success(), "{}", text(&checked.stderr));
    let broken = dir.path().join("broken.yml");
    std::fs::write(&broken, "route:\n  receiver: nobody\n  gruop_by: [x]\nreceivers:\n  - name: team\n").unwrap();
    let refused = opsloop(&["alerting", "check-config", broken.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2));
    let message = text(&refused.stderr);
    assert!(message.contains("broken.yml:3:3") && message.contains("group_by"), "{message}");
    let who = opsloop(&["oncall", "primary", "--config", &oncall, "--at", "2026-06-01T12:00", "--json"]);
    assert!(who.status.success(), "{}", text(&who.stderr));
    let who: serde_json::Value = serde_json::from_slice(&who.stdout).unwrap();
    assert_eq!(who["user"], "alice");
}

#[test]
fn pagerduty_events_in_fire_and_resolve_alerts_routed_like_any_other() {
    let dir = tempfile::tempdir().unwrap();
    let (receiver_url, received) = receiver();
    let (alerting, oncall) = configs(dir.path(), &receiver_url);
    let server =
        Server::start_in(&dir.path().join("data"), &["--alerting-config", &alerting, "--oncall-config", &oncall]);
    let token = server.token("developer");
    let viewer = server.token("viewer");
    let enqueue = format!("{}/integrations/pagerduty/v2/enqueue", server.url);
    let event = |key: &str, action: &str| {
        serde_json::json!({
            "routing_key": key,
            "event_action": action,
            "dedup_key": "disk-db1",
            "payload": { "summary": "disk full on db1", "source": "db1", "severity": "critical", "component": "postgres" },
        })
    };
    // No token works as a routing key but an opsloop token that may write.
    assert_eq!(call_json(Method::POST, &enqueue, "", Some(event("olp_forged", "trigger"))).0, 401);
    assert_eq!(call_json(Method::POST, &enqueue, "", Some(event(&viewer, "trigger"))).0, 403);
    let (status, answer) = call_json(Method::POST, &enqueue, "", Some(event(&token, "trigger")));
    assert_eq!((status, answer["dedup_key"].as_str()), (202, Some("disk-db1")), "{answer}");
    let bad = serde_json::json!({ "routing_key": token, "event_action": "trigger", "payload": { "summary": "x", "source": "y", "severity": "fatal" } });
    let (status, answer) = call_json(Method::POST, &enqueue, "", Some(bad));
    assert_eq!((status, answer["status"].as_str()), (400, Some("invalid event")), "{answer}");

    // Routed by alertmanager.yml: severity critical → the pager receiver, and an incident.
    wait_until("the pager webhook", || !received_at(&received, "/pager").is_empty());
    let notification = received_at(&received, "/pager").remove(0);
    assert_eq!(notification["alerts"][0]["labels"]["component"], "postgres");
    assert_eq!(notification["alerts"][0]["annotations"]["summary"], "disk full on db1");
    let (status, _) = call_json(Method::POST, &enqueue, "", Some(event(&token, "resolve")));
    assert_eq!(status, 202);
    wait_until("the resolved notification", || {
        received_at(&received, "/pager").iter().any(|n| n["status"] == "resolved")
    });
    wait_until("the incident resolved with its alerts", || {
        let listed = opsloop_client(&server, &token, &["incident", "list", "--json"]);
        let incidents: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap_or_default();
        incidents.as_array().is_some_and(|all| all.iter().any(|i| i["status"] == "resolved"))
    });
}

#[test]
fn email_notifications_and_email_pages_reach_a_real_smtp_sink() {
    let available = Command::new("python3").args(["-c", "import aiosmtpd"]).status().is_ok_and(|s| s.success());
    if !available {
        return skip("email to an SMTP sink, because aiosmtpd is missing (python3 -m pip install aiosmtpd)");
    }
    let dir = tempfile::tempdir().unwrap();
    let mailbox = dir.path().join("mail");
    let smtp_port = free_port();
    let mut sink = Command::new("python3")
        .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{smtp_port}"), "-c", "aiosmtpd.handlers.Mailbox"])
        .arg(&mailbox)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let alerting = dir.path().join("alertmanager.yml");
    std::fs::write(
        &alerting,
        format!(
            "global:\n  smtp_smarthost: 127.0.0.1:{smtp_port}\n  smtp_from: opsloop@example.com\n  smtp_require_tls: false\nroute:\n  receiver: mail\n  group_by: [alertname]\n  group_wait: 1s\nreceivers:\n  - name: mail\n    email_configs:\n      - to: team@example.com\n    oncall_configs:\n      - escalation_policy: default\n"
        ),
    )
    .unwrap();
    let oncall = dir.path().join("oncall.yml");
    std::fs::write(
        &oncall,
        "users:\n  - name: bob\n    email: bob@example.com\nschedules:\n  - name: primary\n    timezone: UTC\n    layers:\n      - rotation: 1d\n        handoff: 2026-01-01T00:00\n        users: [bob]\nescalation_policies:\n  - name: default\n    levels:\n      - targets: [user:bob]\n",
    )
    .unwrap();
    let server = Server::start_in(
        &dir.path().join("data"),
        &["--alerting-config", alerting.to_str().unwrap(), "--oncall-config", oncall.to_str().unwrap()],
    );
    let token = server.token("developer");
    let alert = serde_json::json!([{ "labels": { "alertname": "QueueStuck", "queue": "mail" }, "annotations": { "summary": "nothing moved for 10m" } }]);
    let (status, _) =
        call_json(Method::POST, &format!("{}/alertmanager/api/v2/alerts", server.url), &token, Some(alert));
    assert_eq!(status, 200);
    let messages = || -> Vec<String> {
        std::fs::read_dir(mailbox.join("new"))
            .map(|entries| entries.filter_map(|e| std::fs::read_to_string(e.ok()?.path()).ok()).collect())
            .unwrap_or_default()
    };
    wait_until("two messages in the SMTP sink", || messages().len() >= 2);
    let all = messages();
    let team = all.iter().find(|m| m.contains("To: team@example.com")).expect("the receiver's email");
    assert!(team.contains("Subject: [FIRING:1] QueueStuck"), "{team}");
    assert!(team.contains("nothing moved for 10m"), "{team}");
    let page = all.iter().find(|m| m.contains("To: bob@example.com")).expect("bob's page");
    assert!(page.contains("Acknowledge: http"), "{page}");
    let _ = sink.kill();
    let _ = sink.wait();
}
