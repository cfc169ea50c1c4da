//! The remote-write sender against a receiver scripted to fail (a small HTTP/1.1 server on
//! tokio), across a restart of the writer, and against a real Prometheus 2.42 receiving.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opsloop_metrics::config::{self, RemoteWriteConfig};
use opsloop_metrics::labels::Labels;
use opsloop_metrics::remote::{self, RemoteWriter, WriterOptions};
use opsloop_metrics::storage::Sample;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

#[derive(Default)]
struct Script {
    /// Statuses for the next requests; then `otherwise`.
    next: VecDeque<u16>,
    otherwise: u16,
    requests: usize,
    received: Vec<(Labels, Sample)>,
    headers: Vec<HashMap<String, String>>,
}

struct Receiver {
    url: String,
    script: Arc<Mutex<Script>>,
}

impl Receiver {
    async fn start(next: &[u16], otherwise: u16) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/api/v1/write", listener.local_addr().expect("addr"));
        let script =
            Arc::new(Mutex::new(Script { next: next.iter().copied().collect(), otherwise, ..Script::default() }));
        let shared = Arc::clone(&script);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, Arc::clone(&shared)));
            }
        });
        Receiver { url, script }
    }

    fn with<T>(&self, f: impl FnOnce(&mut Script) -> T) -> T {
        f(&mut self.script.lock().expect("script"))
    }
}

/// Keep-alive HTTP/1.1: each request answered with the script's next status; a 2xx keeps
/// what the body carried.
async fn serve(stream: tokio::net::TcpStream, script: Arc<Mutex<Script>>) {
    let mut stream = BufReader::new(stream);
    loop {
        let mut headers = HashMap::new();
        let mut line = String::new();
        if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        loop {
            line.clear();
            if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((k, v)) = l.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut body = vec![0; len];
        if stream.read_exact(&mut body).await.is_err() {
            return;
        }
        let status = {
            let mut s = script.lock().expect("script");
            s.requests += 1;
            let status = s.next.pop_front().unwrap_or(s.otherwise);
            if (200..300).contains(&status) {
                let samples = remote::decode(&body, 64 << 20).expect("the sender's body decodes");
                s.received.extend(samples);
                s.headers.push(headers);
            }
            status
        };
        let response = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
        if stream.get_mut().write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

fn remote_config(url: &str, queue: &str, extra: &str) -> RemoteWriteConfig {
    let text = format!("remote_write:\n  - url: {url}\n    name: test\n    queue_config: {{{queue}}}\n{extra}");
    let mut c = config::load(&text, "prometheus.yml", Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
    c.remote_write.remove(0)
}

/// One sample per series per timestamp, as a scrape appends them.
fn scrape(series: usize, t: i64) -> Vec<(Labels, Sample)> {
    (0..series)
        .map(|i| {
            let labels = Labels::from_pairs([("__name__", "test_metric".to_owned()), ("id", i.to_string())]);
            (labels, Sample { t, v: (t * 10 + i as i64) as f64 })
        })
        .collect()
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(20), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn by_series(samples: &[(Labels, Sample)]) -> BTreeMap<Labels, Vec<i64>> {
    let mut out: BTreeMap<Labels, Vec<i64>> = BTreeMap::new();
    for (l, s) in samples {
        out.entry(l.clone()).or_default().push(s.t);
    }
    out
}

#[tokio::test]
async fn failures_are_retried_and_every_series_arrives_in_order() {
    let receiver = Receiver::start(&[500, 500, 503], 204).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let extra = "    headers: {X-Scope-OrgID: team1}\n    basic_auth: {username: u, password: p}\n    write_relabel_configs:\n      - {source_labels: [id], regex: '9', action: drop}\n";
    let config = remote_config(
        &receiver.url,
        "max_samples_per_send: 25, min_shards: 2, max_shards: 4, batch_send_deadline: 50ms, min_backoff: 5ms, max_backoff: 40ms",
        extra,
    );
    let mut options = WriterOptions::new(dir.path());
    options.external_labels = Labels::from_pairs([("cluster", "eu1")]);
    let writer = RemoteWriter::open(config, options).expect("open");
    let task = tokio::spawn(Arc::clone(&writer).run());
    for t in 1..=40 {
        writer.enqueue(&scrape(10, t * 1000)).expect("enqueue");
    }
    // A sample older than what was queued for its series is dropped, not sent to be refused.
    writer.enqueue(&scrape(1, 5000)).expect("enqueue");
    wait_until("everything sent", || writer.stats().samples_sent == 360).await;
    task.abort();

    let stats = writer.stats();
    assert_eq!(stats.samples_pending, 0);
    assert_eq!(stats.samples_failed, 0);
    assert_eq!(stats.samples_dropped, 41, "series 9 relabelled away, and the late sample");
    assert!(stats.samples_retried >= 3, "{stats:?}");
    assert!(stats.last_send_ms.is_some());
    assert!(stats.per_shard.iter().filter(|s| s.samples_sent > 0).count() >= 2, "{stats:?}");
    let (received, headers) = receiver.with(|s| (s.received.clone(), s.headers.clone()));
    let series = by_series(&received);
    assert_eq!(series.len(), 9);
    let want: Vec<i64> = (1..=40).map(|t| t * 1000).collect();
    for (labels, ts) in &series {
        assert_eq!(labels.get("cluster"), Some("eu1"));
        assert_eq!(ts, &want, "{labels}: every sample once, in order");
    }
    let h = &headers[0];
    assert_eq!(h.get("content-encoding").map(String::as_str), Some("snappy"));
    assert_eq!(h.get("content-type").map(String::as_str), Some("application/x-protobuf"));
    assert_eq!(h.get("x-prometheus-remote-write-version").map(String::as_str), Some("0.1.0"));
    assert_eq!(h.get("x-scope-orgid").map(String::as_str), Some("team1"));
    assert_eq!(h.get("authorization").map(String::as_str), Some("Basic dTpw"));
}

#[tokio::test]
async fn a_4xx_drops_the_batch_without_retrying() {
    let receiver = Receiver::start(&[400], 204).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = remote_config(
        &receiver.url,
        "max_samples_per_send: 100, max_shards: 1, batch_send_deadline: 10ms, min_backoff: 5ms",
        "    authorization: {credentials: s3cret}\n",
    );
    let writer = RemoteWriter::open(config, WriterOptions::new(dir.path())).expect("open");
    let task = tokio::spawn(Arc::clone(&writer).run());
    writer.enqueue(&scrape(5, 1000)).expect("enqueue");
    wait_until("the refusal", || writer.stats().samples_failed == 5).await;
    writer.enqueue(&scrape(5, 2000)).expect("enqueue");
    wait_until("the next batch", || writer.stats().samples_sent == 5).await;
    task.abort();
    let stats = writer.stats();
    assert_eq!((stats.samples_retried, stats.samples_pending), (0, 0), "{stats:?}");
    let (requests, received, headers) = receiver.with(|s| (s.requests, s.received.clone(), s.headers.clone()));
    assert_eq!(requests, 2, "the refused batch was not sent again");
    assert!(received.iter().all(|(_, s)| s.t == 2000));
    assert_eq!(headers[0].get("authorization").map(String::as_str), Some("Bearer s3cret"));
}

#[tokio::test]
async fn a_restart_mid_queue_loses_nothing() {
    // Three requests pass, then the receiver is down until the writer has been restarted.
    let receiver = Receiver::start(&[204, 204, 204], 503).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = "max_samples_per_send: 10, min_shards: 1, max_shards: 1, batch_send_deadline: 10ms, min_backoff: 5ms, max_backoff: 20ms";
    let config = remote_config(&receiver.url, queue, "");
    let writer = RemoteWriter::open(config.clone(), WriterOptions::new(dir.path())).expect("open");
    // Records of 5 samples and rounds of 10: each round is one request, so a restart resends
    // nothing here (in general it may resend the round it interrupted).
    for t in 1..=30 {
        writer.enqueue(&scrape(5, t * 1000)).expect("enqueue");
    }
    let task = tokio::spawn(Arc::clone(&writer).run());
    wait_until("a few sends and failures", || receiver.with(|s| s.requests) > 6).await;
    task.abort();
    let _ = task.await;
    let sent_before = writer.stats().samples_sent;
    assert_eq!(sent_before, 30);
    drop(writer);
    // A request the aborted writer had on the wire may still reach the receiver; let it be
    // answered (and refused) before the receiver comes back.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let writer = RemoteWriter::open(config, WriterOptions::new(dir.path())).expect("reopen");
    assert_eq!(writer.stats().samples_pending, 120, "the unsent part is still queued");
    receiver.with(|s| s.otherwise = 204);
    let task = tokio::spawn(Arc::clone(&writer).run());
    wait_until("the rest", || writer.stats().samples_pending == 0).await;
    task.abort();
    let received = receiver.with(|s| s.received.clone());
    let want: Vec<i64> = (1..=30).map(|t| t * 1000).collect();
    let series = by_series(&received);
    assert_eq!(series.len(), 5);
    for (labels, mut ts) in series {
        // At least once: a round cut short by the restart may arrive twice, never out of order.
        ts.dedup_by(|later, earlier| later <= earlier);
        assert_eq!(ts, want, "{labels}");
    }
}

/// Prometheus 2.42 as the receiver: what is sent comes back through its query API.
#[tokio::test]
async fn prometheus_receives_what_is_sent() {
    let binary = Path::new("/usr/bin/prometheus");
    if !binary.exists() {
        opsloop_core::skip::skipped("/usr/bin/prometheus is not installed (apt-get install prometheus)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("prometheus.yml"), "global: {}\n").expect("config");
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let mut prometheus = std::process::Command::new(binary)
        .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--web.enable-remote-write-receiver")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start prometheus");
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let result = async {
        let start = Instant::now();
        loop {
            if let Ok(r) = client.get(format!("{base}/-/ready")).send().await
                && r.status().is_success()
            {
                break;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "prometheus did not become ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let config = remote_config(
            &format!("{base}/api/v1/write"),
            "max_samples_per_send: 50, min_shards: 2, max_shards: 3, batch_send_deadline: 20ms",
            "",
        );
        let queue = tempfile::tempdir().expect("tempdir");
        let mut options = WriterOptions::new(queue.path());
        options.external_labels = Labels::from_pairs([("replica", "a")]);
        let writer = RemoteWriter::open(config, options).expect("open");
        let task = tokio::spawn(Arc::clone(&writer).run());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0);
        let first = now - 120_000;
        let mut sent = Vec::new();
        for i in 0..60 {
            let batch = scrape(5, first + i * 2000);
            sent.extend(batch.iter().cloned());
            writer.enqueue(&batch).expect("enqueue");
        }
        wait_until("everything sent", || writer.stats().samples_sent == 300).await;
        task.abort();
        assert_eq!(writer.stats().samples_failed, 0);

        let query = "test_metric[5m]";
        let response: serde_json::Value = client
            .get(format!("{base}/api/v1/query"))
            .query(&[("query", query), ("time", &format!("{:.3}", now as f64 / 1000.0))])
            .send()
            .await
            .expect("query")
            .json()
            .await
            .expect("json");
        assert_eq!(response["status"], "success", "{response}");
        let mut got: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
        for series in response["data"]["result"].as_array().cloned().unwrap_or_default() {
            assert_eq!(series["metric"]["replica"], "a");
            let id = series["metric"]["id"].as_str().unwrap_or_default().to_owned();
            for v in series["values"].as_array().cloned().unwrap_or_default() {
                let t = (v[0].as_f64().unwrap_or_default() * 1000.0).round() as i64;
                let value: f64 = v[1].as_str().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN);
                got.entry(id.clone()).or_default().push((t, value));
            }
        }
        let mut want: BTreeMap<String, Vec<(i64, f64)>> = BTreeMap::new();
        for (l, s) in &sent {
            want.entry(l.get("id").unwrap_or_default().to_owned()).or_default().push((s.t, s.v));
        }
        assert_eq!(got, want);
    };
    let outcome = tokio::time::timeout(Duration::from_secs(60), result).await;
    let _ = prometheus.kill();
    let _ = prometheus.wait();
    outcome.expect("the Prometheus round trip finished in time");
}
