//! The metrics subsystem through the real binary: remote write in, Prometheus's query API
//! back out, who sees which series, scraping from a `prometheus.yml`, its reload, and the
//! same queries answered by a real Prometheus 2.42 over the same data.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use opsloop_metrics::labels::Labels;
use opsloop_metrics::storage::Sample;
use reqwest::Method;

use crate::harness::{Server, free_port, opsloop, skip};

async fn call_json(
    method: Method,
    url: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let mut request = Server::client().request(method, url).bearer_auth(token);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the server answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

fn series(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied())
}

async fn remote_write(url: &str, token: &str, data: &[(Labels, Vec<Sample>)]) -> reqwest::StatusCode {
    Server::client()
        .post(url)
        .bearer_auth(token)
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "snappy")
        .header("x-prometheus-remote-write-version", "0.1.0")
        .body(opsloop_metrics::remote::encode(data))
        .send()
        .await
        .expect("the server answers")
        .status()
}

async fn get_json(url: &str, token: &str) -> (u16, serde_json::Value) {
    let response = Server::client().get(url).bearer_auth(token).send().await.expect("the server answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

/// `data.result[*].metric.<label>` of an instant query, sorted.
fn result_labels(body: &serde_json::Value, label: &str) -> Vec<String> {
    let mut out: Vec<String> = body["data"]["result"]
        .as_array()
        .map(|r| r.iter().filter_map(|s| s["metric"][label].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    out.sort();
    out
}

/// Ten minutes of a counter per project, ending now, every 15 s.
fn counters(now_ms: i64) -> Vec<(Labels, Vec<Sample>)> {
    let start = now_ms - 600_000;
    ["shop", "blog"]
        .iter()
        .enumerate()
        .map(|(i, project)| {
            let samples =
                (0..=40).map(|k| Sample { t: start + k * 15_000, v: (k * (i as i64 + 1) * 3) as f64 }).collect();
            (series(&[("__name__", "http_requests_total"), ("project", project), ("job", "web")]), samples)
        })
        .chain(std::iter::once((
            series(&[("__name__", "node_load1"), ("instance", "host-1")]),
            (0..=40).map(|k| Sample { t: start + k * 15_000, v: 0.5 }).collect(),
        )))
        .collect()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn remote_write_in_then_query_with_each_caller_seeing_only_their_projects() {
    let server = Server::start();
    let admin = server.token("admin");
    let now = now_ms();
    let write = format!("{}/prometheus/api/v1/write", server.url);
    assert_eq!(remote_write(&write, &admin, &counters(now)).await, reqwest::StatusCode::NO_CONTENT);
    assert_eq!(
        Server::client().post(&write).bearer_auth(&admin).body("garbage").send().await.unwrap().status(),
        reqwest::StatusCode::BAD_REQUEST,
        "an undecodable body is refused, not retried"
    );

    // A member of `shop` only.
    for project in ["shop", "blog"] {
        let (status, _) = call_json(
            Method::POST,
            &format!("{}/api/v1/projects", server.url),
            &admin,
            Some(serde_json::json!({"name": project, "repo_url": "https://example.invalid/r.git"})),
        )
        .await;
        assert_eq!(status, 201);
    }
    let dana = opsloop(&["admin", "user", "create", "dana", "--data-dir", server.data_dir.to_str().unwrap()]);
    assert!(dana.status.success());
    let (status, _) = call_json(
        Method::PUT,
        &format!("{}/api/v1/projects/shop/members/dana", server.url),
        &admin,
        Some(serde_json::json!({"role": "developer"})),
    )
    .await;
    assert_eq!(status, 204);
    let member_token = |user: &str| {
        let out = opsloop(&[
            "admin",
            "token",
            "create",
            "--name",
            "m",
            "--role",
            "viewer",
            "--user",
            user,
            "--data-dir",
            server.data_dir.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let dana = member_token("dana");
    assert!(
        opsloop(&["admin", "user", "create", "erin", "--data-dir", server.data_dir.to_str().unwrap()]).status.success()
    );
    let erin = member_token("erin");

    let query =
        |q: &str| format!("{}/prometheus/api/v1/query?query={}&time={}", server.url, urlencode(q), now as f64 / 1000.0);
    let (status, body) = get_json(&query("http_requests_total"), &admin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(result_labels(&body, "project"), ["blog", "shop"], "an admin sees every project");
    let (_, body) = get_json(&query("http_requests_total"), &dana).await;
    assert_eq!(result_labels(&body, "project"), ["shop"], "a member sees their project only: {body}");
    let (_, body) = get_json(&query("node_load1"), &dana).await;
    assert_eq!(body["data"]["result"].as_array().map(Vec::len), Some(0), "no project label: admins only");
    let (_, body) = get_json(&query("http_requests_total"), &erin).await;
    assert_eq!(body["data"]["result"].as_array().map(Vec::len), Some(0), "a non-member sees nothing: {body}");
    let (_, body) = get_json(&format!("{}/prometheus/api/v1/label/project/values", server.url), &dana).await;
    assert_eq!(body["data"], serde_json::json!(["shop"]), "label values are scoped too");
    let (_, body) =
        get_json(&format!("{}/prometheus/api/v1/series?match[]={}", server.url, urlencode("{job=\"web\"}")), &erin)
            .await;
    assert_eq!(body["data"], serde_json::json!([]), "series are scoped too");

    // The values: the shop counter grows 3 per 15 s, so its rate is 0.2/s.
    let (_, body) = get_json(&query("rate(http_requests_total{project=\"shop\"}[5m])"), &admin).await;
    let value: f64 = body["data"]["result"][0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!((value - 0.2).abs() < 1e-9, "{body}");
    let range = format!(
        "{}/prometheus/api/v1/query_range?query={}&start={}&end={}&step=60",
        server.url,
        urlencode("sum(http_requests_total)"),
        (now - 300_000) as f64 / 1000.0,
        now as f64 / 1000.0
    );
    let (status, body) = get_json(&range, &admin).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["resultType"], "matrix");
    assert_eq!(body["data"]["result"][0]["values"].as_array().map(Vec::len), Some(6));

    // Prometheus's error envelope.
    let (status, body) = get_json(&query("sum(rate("), &admin).await;
    assert_eq!(status, 400);
    assert_eq!(body["status"], "error");
    assert_eq!(body["errorType"], "bad_data");

    // Grafana's data source authenticates with basic auth: the token as the password.
    let response = Server::client().get(query("up")).basic_auth("grafana", Some(&admin)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let anonymous = Server::client().get(query("up")).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn wait_for<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test(flavor = "multi_thread")]
async fn scrapes_from_prometheus_yml_and_reloads_only_valid_files() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let config = dir.path().join("prometheus.yml");
    // The server scrapes itself; its own port is known only once it listens, so the first
    // file scrapes a port nobody listens on, and the reload points at the server.
    let dead = free_port();
    std::fs::write(
        &config,
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: dead\n    static_configs:\n      - targets: ['127.0.0.1:{dead}']\n"),
    )
    .unwrap();
    let server = Server::start_in(&data_dir, &["--metrics-config", config.to_str().unwrap()]);
    let admin = server.token("admin");
    let query = |q: &str| format!("{}/prometheus/api/v1/query?query={}", server.url, urlencode(q));
    wait_for("up == 0 for the dead target", || {
        let (url, admin) = (query("up{job=\"dead\"} == 0"), admin.clone());
        async move { get_json(&url, &admin).await.1["data"]["result"].as_array().is_some_and(|r| r.len() == 1) }
    })
    .await;

    let address = server.url.trim_start_matches("http://").to_owned();
    std::fs::write(&config, "scrape_configs:\n  - job_name: opsloop\n    scrape_intervl: 1s\n").unwrap();
    let reload = format!("{}/prometheus/-/reload", server.url);
    let refused = Server::client().post(&reload).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(refused.status(), 500);
    let said = refused.text().await.unwrap();
    assert!(
        said.contains("prometheus.yml:3:5") && said.contains("scrape_interval"),
        "file:line:column and the key meant: {said}"
    );
    let (_, info) = get_json(&format!("{}/prometheus/api/v1/status/runtimeinfo", server.url), &admin).await;
    assert_eq!(info["data"]["reloadConfigSuccess"], false);

    std::fs::write(
        &config,
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: opsloop\n    static_configs:\n      - targets: ['{address}']\n"),
    )
    .unwrap();
    let accepted = Server::client().post(&reload).bearer_auth(&admin).send().await.unwrap();
    assert_eq!(accepted.status(), 200);
    wait_for("opsloop scraping itself", || {
        let (url, admin) = (query("up{job=\"opsloop\"} == 1"), admin.clone());
        async move { get_json(&url, &admin).await.1["data"]["result"].as_array().is_some_and(|r| r.len() == 1) }
    })
    .await;
    let (_, targets) = get_json(&format!("{}/prometheus/api/v1/targets", server.url), &admin).await;
    let active = targets["data"]["activeTargets"].as_array().cloned().unwrap_or_default();
    assert_eq!(active.len(), 1, "the dead job is gone: {targets}");
    assert_eq!(active[0]["labels"]["job"], "opsloop");
    assert_eq!(active[0]["health"], "up");
}

/// A real Prometheus 2.42 started by hand, accepting remote write.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_prometheus() -> Option<Prometheus> {
    if Command::new("prometheus").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(&config, "global:\n  scrape_interval: 1m\n").unwrap();
    let port = free_port();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--web.enable-remote-write-receiver")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    Some(Prometheus { child, url: format!("http://127.0.0.1:{port}"), _dir: dir })
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_queries_agree_with_a_real_prometheus() {
    let Some(prometheus) = start_prometheus() else {
        return skip("the side-by-side PromQL comparison, because prometheus is missing (apt-get install prometheus)");
    };
    let server = Server::start();
    let admin = server.token("admin");
    // Ten minutes of counters, a histogram and gauges, written to both.
    let now = now_ms() / 1000 * 1000;
    let start = now - 600_000;
    let mut data: Vec<(Labels, Vec<Sample>)> = Vec::new();
    for (i, handler) in ["/a", "/b", "/c"].iter().enumerate() {
        for code in ["200", "500"] {
            let step = (i + 1) as f64 * if code == "500" { 0.1 } else { 2.0 };
            data.push((
                series(&[("__name__", "http_requests_total"), ("handler", handler), ("code", code), ("job", "api")]),
                (0..=40)
                    .map(|k| Sample { t: start + k * 15_000, v: (k as f64) * step + if k > 30 { 0.0 } else { 5.0 } })
                    .collect(),
            ));
        }
        for (j, le) in ["0.1", "0.5", "1", "+Inf"].iter().enumerate() {
            data.push((
                series(&[("__name__", "latency_seconds_bucket"), ("handler", handler), ("le", le)]),
                (0..=40)
                    .map(|k| Sample { t: start + k * 15_000, v: (k * (j as i64 + 1) * (i as i64 + 2)) as f64 })
                    .collect(),
            ));
        }
        data.push((
            series(&[("__name__", "temperature"), ("room", handler)]),
            (0..=40)
                .map(|k| Sample { t: start + k * 15_000, v: ((k * 7 + i as i64 * 13) % 23) as f64 / 3.0 })
                .collect(),
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = Server::client().get(format!("{}/-/ready", prometheus.url)).send().await;
        if ready.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "prometheus did not become ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        remote_write(&format!("{}/api/v1/write", prometheus.url), "", &data).await,
        reqwest::StatusCode::NO_CONTENT
    );
    assert_eq!(
        remote_write(&format!("{}/prometheus/api/v1/write", server.url), &admin, &data).await,
        reqwest::StatusCode::NO_CONTENT
    );

    let queries = [
        "http_requests_total",
        "sum by (handler) (rate(http_requests_total[2m]))",
        "sum(rate(http_requests_total{code=\"500\"}[5m])) / sum(rate(http_requests_total[5m]))",
        "histogram_quantile(0.9, sum by (le) (rate(latency_seconds_bucket[5m])))",
        "topk(2, temperature)",
        "avg_over_time(temperature[3m]) > 3",
        "increase(http_requests_total[10m] offset 1m)",
        "max_over_time(deriv(temperature[2m])[5m:30s])",
        "count by (code) (http_requests_total) * on (code) group_left sum by (code) (http_requests_total)",
        "label_replace(temperature, \"r\", \"$1\", \"room\", \"/(.*)\")",
        "quantile(0.3, temperature) - ignoring(room) group_right avg(temperature)",
        "predict_linear(temperature[5m], 600)",
        "absent(nonexistent{job=\"x\"})",
        "time() - timestamp(temperature) < 60",
    ];
    let mut disagreements = Vec::new();
    let mut compared_points = 0;
    for q in queries {
        for at in [now - 120_000, now - 7_000] {
            let path = format!("api/v1/query?query={}&time={}", urlencode(q), at as f64 / 1000.0);
            let (_, ours) = get_json(&format!("{}/prometheus/{path}", server.url), &admin).await;
            let (_, theirs) = get_json(&format!("{}/{path}", prometheus.url), "").await;
            compared_points += theirs["data"]["result"].as_array().map_or(0, Vec::len);
            if let Some(why) = differ(&ours, &theirs) {
                disagreements.push(format!("{q} @ {at}: {why}\n  opsloop:    {ours}\n  prometheus: {theirs}"));
            }
        }
        let path = format!(
            "api/v1/query_range?query={}&start={}&end={}&step=37",
            urlencode(q),
            (now - 480_000) as f64 / 1000.0,
            now as f64 / 1000.0
        );
        let (_, ours) = get_json(&format!("{}/prometheus/{path}", server.url), &admin).await;
        let (_, theirs) = get_json(&format!("{}/{path}", prometheus.url), "").await;
        if let Some(why) = differ(&ours, &theirs) {
            disagreements.push(format!("range {q}: {why}\n  opsloop:    {ours}\n  prometheus: {theirs}"));
        }
    }
    assert!(compared_points > 40, "the comparison saw data: {compared_points} instant results");
    assert!(disagreements.is_empty(), "{} answers differ:\n{}", disagreements.len(), disagreements.join("\n"));
}

/// Why two query answers differ: status, result type, label sets, timestamps, or values
/// beyond 1e-9 relative.
fn differ(a: &serde_json::Value, b: &serde_json::Value) -> Option<String> {
    if a["status"] != b["status"] {
        return Some(format!("status {} vs {}", a["status"], b["status"]));
    }
    if a["data"]["resultType"] != b["data"]["resultType"] {
        return Some("result type".into());
    }
    let points = |v: &serde_json::Value| -> Vec<(String, Vec<(f64, String)>)> {
        let mut out: Vec<(String, Vec<(f64, String)>)> = v["data"]["result"]
            .as_array()
            .map(|r| {
                r.iter()
                    .map(|s| {
                        let values: Vec<serde_json::Value> = match s.get("values") {
                            Some(vs) => vs.as_array().cloned().unwrap_or_default(),
                            None => vec![s["value"].clone()],
                        };
                        let pts = values
                            .iter()
                            .map(|p| (p[0].as_f64().unwrap_or(f64::NAN), p[1].as_str().unwrap_or("").to_owned()))
                            .collect();
                        (s["metric"].to_string(), pts)
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by(|x, y| x.0.cmp(&y.0));
        out
    };
    let (pa, pb) = (points(a), points(b));
    if pa.len() != pb.len() {
        return Some(format!("{} series vs {}", pa.len(), pb.len()));
    }
    for ((la, va), (lb, vb)) in pa.iter().zip(&pb) {
        if la != lb {
            return Some(format!("labels {la} vs {lb}"));
        }
        if va.len() != vb.len() {
            return Some(format!("{la}: {} points vs {}", va.len(), vb.len()));
        }
        for ((ta, xa), (tb, xb)) in va.iter().zip(vb) {
            if (ta - tb).abs() > 1e-6 {
                return Some(format!("{la}: time {ta} vs {tb}"));
            }
            let (fa, fb) = (xa.parse::<f64>().unwrap_or(f64::NAN), xb.parse::<f64>().unwrap_or(f64::NAN));
            let same = xa == xb || (fa.is_nan() && fb.is_nan()) || (fa - fb).abs() <= 1e-9 * fa.abs().max(fb.abs());
            if !same {
                return Some(format!("{la}: value {xa} vs {xb} at {ta}"));
            }
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread")]
async fn rules_record_and_alert_to_a_real_alertmanager() {
    const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";
    if !std::path::Path::new(ALERTMANAGER).exists() {
        return skip(
            "rules with a real Alertmanager, because prometheus-alertmanager is missing (apt-get install prometheus-alertmanager)",
        );
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("am.yml"), "route:\n  receiver: nobody\nreceivers:\n  - name: nobody\n").unwrap();
    let am_port = free_port();
    let mut alertmanager = Command::new(ALERTMANAGER)
        .arg(format!("--config.file={}", dir.path().join("am.yml").display()))
        .arg(format!("--storage.path={}", dir.path().join("am").display()))
        .arg("--cluster.listen-address=")
        .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::fs::write(
        dir.path().join("rules.yml"),
        "groups:\n  - name: shop\n    interval: 1s\n    rules:\n      - record: project:errors:ratio\n        expr: sum by (project) (errors_total) / sum by (project) (requests_total)\n      - alert: ErrorsHigh\n        expr: project:errors:ratio > 0.1\n        labels:\n          severity: page\n        annotations:\n          summary: '{{ $labels.project }} fails {{ $value | humanizePercentage }} of requests'\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!("global:\n  evaluation_interval: 1s\n  external_labels:\n    site: test\nrule_files: ['rules.yml']\nalerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{am_port}']\n"),
    )
    .unwrap();
    let server = Server::start_in(
        &dir.path().join("data"),
        &["--metrics-config", dir.path().join("prometheus.yml").to_str().unwrap()],
    );
    let admin = server.token("admin");
    let now = now_ms();
    let data: Vec<(Labels, Vec<Sample>)> = [("requests_total", 100.0), ("errors_total", 25.0)]
        .iter()
        .map(|(name, v)| (series(&[("__name__", name), ("project", "shop")]), vec![Sample { t: now, v: *v }]))
        .collect();
    assert_eq!(
        remote_write(&format!("{}/prometheus/api/v1/write", server.url), &admin, &data).await,
        reqwest::StatusCode::NO_CONTENT
    );

    let query = format!("{}/prometheus/api/v1/query?query={}", server.url, urlencode("project:errors:ratio"));
    wait_for("the recording rule's series", || {
        let (url, admin) = (query.clone(), admin.clone());
        async move { get_json(&url, &admin).await.1["data"]["result"][0]["value"][1] == "0.25" }
    })
    .await;
    let am_alerts = format!("http://127.0.0.1:{am_port}/api/v2/alerts");
    wait_for("the alert at the Alertmanager", || {
        let url = am_alerts.clone();
        async move {
            let Ok(r) = Server::client().get(&url).send().await else { return false };
            let alerts: Vec<serde_json::Value> = r.json().await.unwrap_or_default();
            alerts.iter().any(|a| {
                a["labels"]["alertname"] == "ErrorsHigh"
                    && a["labels"]["project"] == "shop"
                    && a["labels"]["site"] == "test"
                    && a["annotations"]["summary"] == "shop fails 25% of requests"
            })
        }
    })
    .await;
    let (_, alerts) = get_json(&format!("{}/prometheus/api/v1/alerts", server.url), &admin).await;
    assert_eq!(alerts["data"]["alerts"][0]["state"], "firing", "{alerts}");
    let (_, rules) = get_json(&format!("{}/prometheus/api/v1/rules", server.url), &admin).await;
    let names: Vec<&str> = rules["data"]["groups"][0]["rules"]
        .as_array()
        .map(|r| r.iter().filter_map(|r| r["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(names, ["project:errors:ratio", "ErrorsHigh"], "{rules}");
    // ALERTS is written from the evaluation after `for` state was restored (the second).
    let firing = format!("{}/prometheus/api/v1/query?query={}", server.url, urlencode("ALERTS{alertstate=\"firing\"}"));
    wait_for("the ALERTS series", || {
        let (url, admin) = (firing.clone(), admin.clone());
        async move { get_json(&url, &admin).await.1["data"]["result"][0]["metric"]["alertname"] == "ErrorsHigh" }
    })
    .await;
    let _ = alertmanager.kill();
    let _ = alertmanager.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_queries_and_checks_files_as_promtool_does() {
    let server = Server::start();
    let admin = server.token("admin");
    let now = now_ms();
    assert_eq!(
        remote_write(&format!("{}/prometheus/api/v1/write", server.url), &admin, &counters(now)).await,
        reqwest::StatusCode::NO_CONTENT
    );
    let out = crate::harness::opsloop_client(&server, &admin, &["query", "sum by (project) (http_requests_total)"]);
    let said = crate::harness::text(&out.stdout);
    assert!(out.status.success(), "{}", crate::harness::text(&out.stderr));
    assert!(said.contains("{project=\"shop\"}") && said.contains("120"), "{said}");
    let out = crate::harness::opsloop_client(&server, &admin, &["query", "node_load1", "--json"]);
    let body: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["data"]["result"][0]["value"][1], "0.5");
    let out = crate::harness::opsloop_client(&server, &admin, &["query", "sum(("]);
    assert_eq!(out.status.code(), Some(2), "an invalid expression is invalid input");
    let out = crate::harness::opsloop_client(
        &server,
        &admin,
        &["query-range", "http_requests_total{project=\"blog\"}", "--start", "-5m", "--step", "1m"],
    );
    assert!(out.status.success(), "{}", crate::harness::text(&out.stderr));
    assert_eq!(crate::harness::text(&out.stdout).lines().filter(|l| l.starts_with("  ")).count(), 6);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("rules.yml"),
        "groups:\n  - name: g\n    rules:\n      - record: a:b\n        expr: sum(up)\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("bad.yml"), "groups:\n  - name: g\n    rules:\n      - alert: X\n        exp: up\n")
        .unwrap();
    std::fs::write(dir.path().join("prometheus.yml"), "rule_files: ['rules.yml']\nscrape_configs: []\n").unwrap();
    let check = |args: &[&str]| Command::new(crate::harness::BIN).args(args).current_dir(dir.path()).output().unwrap();
    let out = check(&["metrics", "check-config", "prometheus.yml"]);
    assert!(out.status.success(), "{}", crate::harness::text(&out.stderr));
    assert!(crate::harness::text(&out.stdout).contains("1 rule group"));
    let out = check(&["metrics", "check-rules", "rules.yml", "bad.yml"]);
    assert_eq!(out.status.code(), Some(2));
    let said = crate::harness::text(&out.stderr);
    assert!(said.contains("bad.yml:5:9") && said.contains("expr"), "{said}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_prometheus_remote_writes_into_opsloop() {
    if Command::new("prometheus").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        return skip("remote write from a real Prometheus, because prometheus is missing (apt-get install prometheus)");
    }
    let server = Server::start();
    let admin = server.token("admin");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // Prometheus scrapes itself and forwards everything to opsloop, with a token as the
    // basic-auth password as a team would configure it.
    std::fs::write(
        dir.path().join("prometheus.yml"),
        format!(
            "global:\n  scrape_interval: 1s\n  external_labels:\n    replica: a\nscrape_configs:\n  - job_name: prometheus\n    static_configs:\n      - targets: ['127.0.0.1:{port}']\nremote_write:\n  - url: {}/prometheus/api/v1/write\n    basic_auth:\n      username: prometheus\n      password: {admin}\n    queue_config:\n      batch_send_deadline: 1s\n",
            server.url
        ),
    )
    .unwrap();
    let mut prometheus = Command::new("prometheus")
        .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let query =
        format!("{}/prometheus/api/v1/query?query={}", server.url, urlencode("up{job=\"prometheus\", replica=\"a\"}"));
    wait_for("Prometheus's own series, forwarded to opsloop", || {
        let (url, admin) = (query.clone(), admin.clone());
        async move { get_json(&url, &admin).await.1["data"]["result"][0]["value"][1] == "1" }
    })
    .await;
    let names = format!("{}/prometheus/api/v1/label/__name__/values", server.url);
    let (_, body) = get_json(&names, &admin).await;
    let count = body["data"].as_array().map_or(0, Vec::len);
    assert!(count > 100, "Prometheus's own metrics arrived: {count} names");
    let _ = prometheus.kill();
    let _ = prometheus.wait();
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_ingest_loses_no_acknowledged_sample() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let mut server = Server::start_in(&data_dir, &[]);
    let admin = server.token("admin");
    let write = format!("{}/prometheus/api/v1/write", server.url);
    let base = now_ms() - 3_600_000;
    let acked = std::sync::Arc::new(std::sync::atomic::AtomicI64::new(0));
    let sender = {
        let (acked, admin, write) = (acked.clone(), admin.clone(), write.clone());
        tokio::spawn(async move {
            for i in 0..100_000i64 {
                let batch: Vec<(Labels, Vec<Sample>)> = (0..50)
                    .map(|s| {
                        let series = series(&[("__name__", "ingest_test"), ("series", &s.to_string())]);
                        (series, vec![Sample { t: base + i * 1000, v: i as f64 }])
                    })
                    .collect();
                let sent = Server::client()
                    .post(&write)
                    .bearer_auth(&admin)
                    .body(opsloop_metrics::remote::encode(&batch))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == reqwest::StatusCode::NO_CONTENT => {
                        acked.store(i + 1, std::sync::atomic::Ordering::SeqCst)
                    }
                    _ => return,
                }
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    tokio::task::block_in_place(|| server.kill_hard());
    let _ = sender.await;
    let acked = acked.load(std::sync::atomic::Ordering::SeqCst);
    assert!(acked > 5, "some batches were acknowledged before the kill: {acked}");

    let server = Server::start_in(&data_dir, &[]);
    let at = (base + acked * 1000) as f64 / 1000.0;
    let query = format!(
        "{}/prometheus/api/v1/query?query={}&time={at}",
        server.url,
        urlencode("min(count_over_time(ingest_test[2h]))")
    );
    let (status, body) = get_json(&query, &admin).await;
    assert_eq!(status, 200, "{body}");
    let stored: i64 = body["data"]["result"][0]["value"][1].as_str().and_then(|v| v.parse().ok()).unwrap_or(0);
    assert!(stored >= acked, "every series keeps every acknowledged sample: {stored} stored, {acked} acknowledged");
    let (_, body) = get_json(
        &format!("{}/prometheus/api/v1/query?query={}&time={at}", server.url, urlencode("count(ingest_test)")),
        &admin,
    )
    .await;
    assert_eq!(body["data"]["result"][0]["value"][1], "50");
}
