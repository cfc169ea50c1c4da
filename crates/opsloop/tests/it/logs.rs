//! The logs subsystem through the real binary: pushes in as Promtail sends them (JSON and
//! snappy protobuf), Loki's query API back out (log and metric queries, labels, series), who
//! sees and who may push which streams, acknowledged lines surviving `kill -9`, finished jobs'
//! logs searchable with LogQL, and `opsloop logs`.

use std::time::{Duration, Instant};

use opsloop_logs::Labels;
use opsloop_logs::push::{Entry, PushStream, encode_protobuf};
use reqwest::Method;
use serde_json::json;

use crate::harness::{Server, opsloop, opsloop_client, text};

fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

async fn push_json(server: &Server, token: &str, body: serde_json::Value) -> (u16, String) {
    let response = Server::client()
        .post(format!("{}/loki/api/v1/push", server.url))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("the server answers");
    (response.status().as_u16(), response.text().await.unwrap_or_default())
}

async fn get(server: &Server, token: &str, path_and_query: &str) -> (u16, serde_json::Value, String) {
    let response = Server::client()
        .get(format!("{}{path_and_query}", server.url))
        .bearer_auth(token)
        .send()
        .await
        .expect("the server answers");
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&body).unwrap_or_default(), body)
}

/// Every line of a `streams` answer, sorted.
fn lines(body: &serde_json::Value) -> Vec<String> {
    let mut out: Vec<String> = body["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["values"].as_array().into_iter().flatten().map(|v| v[1].as_str().unwrap_or("").to_owned()))
        .collect();
    out.sort();
    out
}

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

fn log_query(q: &str) -> String {
    format!("/loki/api/v1/query_range?query={}&limit=1000", urlencode(q))
}

fn member_token(server: &Server, user: &str) -> String {
    let data_dir = server.data_dir.to_str().unwrap();
    let out = opsloop(&[
        "admin",
        "token",
        "create",
        "--name",
        "m",
        "--role",
        "developer",
        "--user",
        user,
        "--data-dir",
        data_dir,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn loki_push_and_query_with_scopes_and_kill_9() {
    let mut server = Server::start();
    let admin = server.token("admin");
    let t = now_ns() - 60_000_000_000;
    let ts = |offset_s: i64| (t + offset_s * 1_000_000_000).to_string();

    // JSON, as Grafana Alloy and scripts push.
    let (status, body) = push_json(
        &server,
        &admin,
        json!({"streams": [
            {"stream": {"project": "p", "app": "web"}, "values": [
                [ts(0), "level=info msg=started"],
                [ts(1), "level=error msg=\"boom error\""],
                [ts(2), "level=error msg=\"second error\""],
            ]},
            {"stream": {"project": "a", "app": "api"}, "values": [[ts(3), "level=info msg=\"a line\""]]},
            {"stream": {"project": "b", "app": "api"}, "values": [[ts(4), "level=info msg=\"b secret\""]]},
            {"stream": {"host": "node-1"}, "values": [[ts(5), "kernel: no project"]]},
        ]}),
    )
    .await;
    assert_eq!(status, 204, "{body}");

    // Snappy protobuf, as Promtail pushes.
    let promtail = vec![PushStream {
        labels: Labels::from_pairs([("project", "p"), ("app", "worker")]),
        entries: vec![Entry { ts: t + 6_000_000_000, line: "level=warn msg=\"slow error\"".into(), metadata: vec![] }],
    }];
    let response = Server::client()
        .post(format!("{}/loki/api/v1/push", server.url))
        .bearer_auth(&admin)
        .header("content-type", "application/x-protobuf")
        .body(encode_protobuf(&promtail))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);

    // Gzipped JSON, as Alloy sends it, and a batch bigger than the API's 1 MiB body limit.
    let big_line = "x".repeat(1000);
    let values: Vec<serde_json::Value> = (0..1500).map(|i| json!([(t + i).to_string(), big_line])).collect();
    let batch = serde_json::to_vec(&json!({"streams": [{"stream": {"project": "big"}, "values": values}]})).unwrap();
    assert!(batch.len() > 1 << 20);
    let response = Server::client()
        .post(format!("{}/loki/api/v1/push", server.url))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body(batch)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(
        &mut gz,
        json!({"streams": [{"stream": {"project": "big"}, "values": [[ts(0), "gzipped"]]}]}).to_string().as_bytes(),
    )
    .unwrap();
    let response = Server::client()
        .post(format!("{}/loki/api/v1/push", server.url))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gz.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    let (_, body, _) = get(&server, &admin, &log_query(r#"{project="big"} |= "gzipped""#)).await;
    assert_eq!(lines(&body), ["gzipped"]);

    // Bad input: 400 with Loki's message, nothing stored.
    let (status, body) = push_json(&server, &admin, json!({"streams": [{"stream": {}, "values": [["1", "x"]]}]})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("at least one label pair is required per stream"), "{body}");
    let (status, body) =
        push_json(&server, &admin, json!({"streams": [{"stream": {"a": "1"}, "values": [["soon", "x"]]}]})).await;
    assert_eq!(status, 400, "{body}");

    // Counted on opsloop's own /metrics.
    let metrics = Server::client().get(format!("{}/metrics", server.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("opsloop_logs_received_lines_total 1508"), "{metrics}");

    // Log query: the lines of project p with "error", from both pushes.
    let (status, body, raw) = get(&server, &admin, &log_query(r#"{project="p"} |= "error""#)).await;
    assert_eq!(status, 200, "{raw}");
    assert_eq!(body["status"], "success");
    assert_eq!(body["data"]["resultType"], "streams");
    assert_eq!(
        lines(&body),
        ["level=error msg=\"boom error\"", "level=error msg=\"second error\"", "level=warn msg=\"slow error\""]
    );
    let first = &body["data"]["result"][0]["values"][0][0];
    assert!(first.as_str().is_some_and(|s| s.parse::<i64>().is_ok()), "timestamps are nanosecond strings: {first}");

    // Metric query, at an instant and over a range.
    let metric = r#"sum by (level) (count_over_time({project="p"} | logfmt [5m]))"#;
    let (status, body, raw) = get(&server, &admin, &format!("/loki/api/v1/query?query={}", urlencode(metric))).await;
    assert_eq!(status, 200, "{raw}");
    assert_eq!(body["data"]["resultType"], "vector");
    let mut counts: Vec<(String, String)> = body["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["metric"]["level"].as_str().unwrap().to_owned(), s["value"][1].as_str().unwrap().to_owned()))
        .collect();
    counts.sort();
    assert_eq!(counts, [("error".into(), "2".into()), ("info".into(), "1".into()), ("warn".into(), "1".into())]);
    let (status, body, raw) = get(&server, &admin, &format!("{}&step=60", log_query(metric))).await;
    assert_eq!(status, 200, "{raw}");
    assert_eq!(body["data"]["resultType"], "matrix");

    // Grafana's health check of a Loki data source.
    let (status, body, raw) =
        get(&server, &admin, &format!("/loki/api/v1/query?query={}", urlencode("vector(1)+vector(1)"))).await;
    assert_eq!(status, 200, "{raw}");
    assert_eq!(body["data"]["result"][0]["value"][1], "2", "{body}");
    let (status, _, raw) = get(&server, &admin, &format!("{}0000", log_query(r#"{project="p"}"#))).await;
    assert_eq!(status, 400, "a limit past 5000 is refused: {raw}");

    // The index: labels, values, series, stats.
    let (_, body, _) = get(&server, &admin, "/loki/api/v1/labels").await;
    assert_eq!(body["data"], json!(["app", "host", "project"]));
    let (_, body, _) = get(&server, &admin, "/loki/api/v1/label/project/values").await;
    assert_eq!(body["data"], json!(["a", "b", "big", "p"]));
    let (_, body, _) = get(&server, &admin, "/loki/api/v1/label").await;
    assert_eq!(body["data"], json!(["app", "host", "project"]), "the older name of /labels");
    let (_, body, _) =
        get(&server, &admin, &format!("/loki/api/v1/series?match[]={}", urlencode(r#"{app="api"}"#))).await;
    assert_eq!(body["data"], json!([{"app": "api", "project": "a"}, {"app": "api", "project": "b"}]));
    let (_, body, _) =
        get(&server, &admin, &format!("/loki/api/v1/index/stats?query={}", urlencode(r#"{project="p"}"#))).await;
    assert_eq!((body["streams"].as_u64(), body["entries"].as_u64()), (Some(2), Some(4)), "{body}");

    // Grafana's Loki data source authenticates with basic auth: the token as the password.
    let url = format!("{}/loki/api/v1/labels", server.url);
    let response = Server::client().get(&url).basic_auth("grafana", Some(&admin)).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(Server::client().get(&url).send().await.unwrap().status(), 401);

    // A parse error is a 400 in Loki's words.
    let (status, _, raw) = get(&server, &admin, &log_query(r#"{project="p"} |= "#)).await;
    assert_eq!(status, 400, "{raw}");
    assert!(raw.contains("parse error"), "{raw}");

    // Who sees what: a member of `a` sees `a`'s streams only; who pushes what.
    for project in ["a", "b"] {
        let (status, _) = call_json(
            Method::POST,
            &format!("{}/api/v1/projects", server.url),
            &admin,
            Some(json!({"name": project, "repo_url": "https://example.invalid/r.git"})),
        )
        .await;
        assert_eq!(status, 201);
    }
    let data_dir = server.data_dir.to_str().unwrap().to_owned();
    for user in ["dana", "erin"] {
        assert!(opsloop(&["admin", "user", "create", user, "--data-dir", &data_dir]).status.success());
    }
    let (status, _) = call_json(
        Method::PUT,
        &format!("{}/api/v1/projects/a/members/dana", server.url),
        &admin,
        Some(json!({"role": "developer"})),
    )
    .await;
    assert_eq!(status, 204);
    let dana = member_token(&server, "dana");
    let erin = member_token(&server, "erin");
    let (_, body, _) = get(&server, &dana, &log_query(r#"{app=~".+"}"#)).await;
    assert_eq!(lines(&body), ["level=info msg=\"a line\""], "a member sees their project only");
    let (_, body, _) = get(&server, &dana, &log_query(r#"{project="b"}"#)).await;
    assert_eq!(lines(&body), Vec::<String>::new(), "not another project's, even by name");
    let (_, body, _) = get(&server, &dana, "/loki/api/v1/label/project/values").await;
    assert_eq!(body["data"], json!(["a"]));
    let (_, body, _) = get(&server, &dana, "/loki/api/v1/labels").await;
    assert_eq!(body["data"], json!(["app", "project"]));
    let (_, body, _) =
        get(&server, &dana, &format!("/loki/api/v1/series?match[]={}", urlencode(r#"{app="api"}"#))).await;
    assert_eq!(body["data"], json!([{"app": "api", "project": "a"}]));
    let (_, body, _) = get(&server, &erin, &log_query(r#"{app=~".+"}"#)).await;
    assert_eq!(lines(&body), Vec::<String>::new(), "a member of nothing sees nothing");

    let line = |project: &str| json!({"streams": [{"stream": {"project": project}, "values": [[ts(7), "from dana"]]}]});
    assert_eq!(push_json(&server, &dana, line("a")).await.0, 204, "a developer pushes to their project");
    let (status, body) = push_json(&server, &dana, line("b")).await;
    assert_eq!(status, 403, "not to another: {body}");
    let (status, _) =
        push_json(&server, &dana, json!({"streams": [{"stream": {"app": "x"}, "values": [[ts(7), "x"]]}]})).await;
    assert_eq!(status, 403, "nor without a project");
    assert_eq!(push_json(&server, &erin, line("a")).await.0, 403, "a non-member may not push");

    // `opsloop logs`: lines with their time and labels; --json is Loki's answer.
    let cli = opsloop_client(&server, &admin, &["logs", r#"{project="p"} |= "error""#, "--since", "1h"]);
    assert!(cli.status.success(), "{}", text(&cli.stderr));
    let out = text(&cli.stdout);
    let printed: Vec<&str> = out.lines().collect();
    assert_eq!(printed.len(), 3, "{out}");
    assert!(printed[0].contains(r#"{app="web", project="p"} level=error msg="boom error""#), "{out}");
    assert!(printed[2].ends_with(r#"level=warn msg="slow error""#), "oldest first: {out}");
    let cli = opsloop_client(&server, &admin, &["logs", metric, "--json"]);
    assert!(cli.status.success(), "{}", text(&cli.stderr));
    let answer: serde_json::Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert_eq!(answer["data"]["resultType"], "matrix");
    let cli = opsloop_client(&server, &admin, &["logs", "{project="]);
    assert_eq!(cli.status.code(), Some(2), "an invalid query: {}", text(&cli.stderr));

    // kill -9 after an acknowledged push: the lines are there after the restart.
    let (status, _) = push_json(
        &server,
        &admin,
        json!({"streams": [{"stream": {"project": "p", "app": "web"}, "values": [[ts(8), "acknowledged before the crash"]]}]}),
    )
    .await;
    assert_eq!(status, 204);
    server.kill_hard();
    let restarted = Server::start_in(&server.data_dir, &[]);
    let (status, body, raw) = get(&restarted, &admin, &log_query(r#"{project="p"} |~ "crash|error""#)).await;
    assert_eq!(status, 200, "{raw}");
    assert_eq!(lines(&body).len(), 4, "{body}");
    assert!(lines(&body).contains(&"acknowledged before the crash".to_owned()));
    let ready = Server::client().get(format!("{}/loki/ready", restarted.url)).send().await.unwrap();
    assert_eq!(ready.status(), 200);
}

#[test]
fn a_finished_jobs_log_is_searchable_with_logql() {
    let server = Server::start();
    let token = server.token("admin");
    let repos = tempfile::tempdir().unwrap();
    crate::server_ci::project_with_pipeline(
        &server,
        &token,
        repos.path(),
        "jl",
        "build:\n  script: [echo \"compiled with 0 warnings\"]\n",
    );
    let run = opsloop_client(&server, &token, &["pipeline", "run", "jl", "--ref", "main", "--wait"]);
    assert_eq!(run.status.code(), Some(0), "{}\n{}", text(&run.stdout), text(&run.stderr));
    // The copy happens on the event bus, just after the job finishes.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = opsloop_client(&server, &token, &["logs", r#"{project="jl", stream="job", job="build"}"#]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let printed = text(&out.stdout);
        if printed.contains("compiled with 0 warnings") {
            // One run picked by its structured metadata, which shows among the labels.
            assert!(printed.contains(r#"pipeline=""#), "{printed}");
            let pipeline = printed.split(r#"pipeline=""#).nth(1).and_then(|rest| rest.split('"').next()).unwrap();
            let one_run =
                format!(r#"{{project="jl", stream="job"}} | pipeline="{pipeline}" |= "0 warnings" != "$ echo""#);
            let out = opsloop_client(&server, &token, &["logs", &one_run]);
            assert_eq!(text(&out.stdout).lines().count(), 1, "{}", text(&out.stdout));
            let other_run = r#"{project="jl", stream="job"} | pipeline="999999""#;
            let out = opsloop_client(&server, &token, &["logs", other_run]);
            assert_eq!(text(&out.stdout), "", "another run's lines are not these");
            break;
        }
        assert!(Instant::now() < deadline, "the job's log never reached the logs store: {printed}");
        std::thread::sleep(Duration::from_millis(300));
    }
}
