//! The scrape manager against a tiny local exporter (a tokio TcpListener speaking just enough
//! HTTP/1.1): samples land in `MemStorage` with target labels, `up` and the other report
//! series, and staleness markers follow a vanished series, a failed scrape and a removed target.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opsloop_metrics::config::{Config, load};
use opsloop_metrics::labels::Matcher;
use opsloop_metrics::scrape::{Health, ScrapeManager};
use opsloop_metrics::storage::{MemStorage, Queryable, Sample, is_stale_nan};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Clone)]
struct Exporter {
    /// (HTTP status, content type, body)
    answer: Arc<Mutex<(u16, String, String)>>,
    requests: Arc<Mutex<Vec<String>>>,
    address: String,
}

impl Exporter {
    async fn start(body: &str) -> Exporter {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let exporter = Exporter {
            answer: Arc::new(Mutex::new((200, "text/plain; version=0.0.4".into(), body.into()))),
            requests: Arc::new(Mutex::new(Vec::new())),
            address,
        };
        let e = exporter.clone();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let e = e.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let mut read = 0;
                    while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf[read..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => read += n,
                        }
                    }
                    e.requests.lock().expect("lock").push(String::from_utf8_lossy(&buf[..read]).into_owned());
                    let (status, content_type, body) = e.answer.lock().expect("lock").clone();
                    let head = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = socket.write_all(head.as_bytes()).await;
                    let _ = socket.write_all(body.as_bytes()).await;
                });
            }
        });
        exporter
    }

    fn set(&self, status: u16, content_type: &str, body: &str) {
        *self.answer.lock().expect("lock") = (status, content_type.into(), body.into());
    }
}

fn config(yaml: &str) -> Config {
    load(yaml, "prometheus.yml", Path::new("/")).unwrap_or_else(|e| panic!("{e}"))
}

fn samples(storage: &MemStorage, name: &str) -> Vec<(String, Sample)> {
    let series = storage.select(&[Matcher::equal("__name__", name)], 0, i64::MAX).expect("select");
    series.into_iter().flat_map(|s| s.samples.into_iter().map(move |x| (s.labels.to_string(), x))).collect()
}

async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn last(storage: &MemStorage, name: &str) -> Option<f64> {
    samples(storage, name).last().map(|(_, s)| s.v)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scrapes_labels_reports_and_marks_staleness() {
    let exporter =
        Exporter::start("# HELP a A gauge.\n# TYPE a gauge\na{x=\"1\"} 5\nb{job=\"exposed\"} 7\nc 1 1000\n").await;
    let storage = Arc::new(MemStorage::new());
    let manager = ScrapeManager::new(storage.clone());
    let yaml = format!(
        "global:\n  external_labels: {{replica: a}}\nscrape_configs:\n- job_name: t\n  scrape_interval: 200ms\n  scrape_timeout: 150ms\n  static_configs: [{{targets: ['{}'], labels: {{env: test}}}}]\n  metric_relabel_configs:\n  - {{source_labels: [__name__], regex: c, action: drop}}\n",
        exporter.address
    );
    manager.apply_config(&config(&yaml)).await;
    wait_for("up", || last(&storage, "up") == Some(1.0)).await;

    let a = samples(&storage, "a");
    let instance = &exporter.address;
    assert_eq!(a[0].0, format!(r#"a{{env="test", instance="{instance}", job="t", x="1"}}"#));
    assert_eq!(a[0].1.v, 5.0);
    // A clashing exposed label is kept as exported_<name>; dropped series never land.
    assert!(samples(&storage, "b")[0].0.contains(r#"exported_job="exposed""#));
    assert!(samples(&storage, "c").is_empty());
    assert_eq!(last(&storage, "scrape_samples_scraped"), Some(3.0));
    assert_eq!(last(&storage, "scrape_samples_post_metric_relabeling"), Some(2.0));
    assert!(last(&storage, "scrape_duration_seconds").is_some_and(|d| d > 0.0 && d < 1.0));
    let first_added = samples(&storage, "scrape_series_added");
    assert_eq!(first_added[0].1.v, 2.0);
    let request = exporter.requests.lock().expect("lock")[0].to_lowercase();
    assert!(request.contains("accept: application/openmetrics-text;version=1.0.0"), "{request}");
    assert!(request.contains("accept-encoding: gzip"), "{request}");
    assert!(request.contains("x-prometheus-scrape-timeout-seconds: 0.15"), "{request}");

    let targets = manager.targets();
    assert_eq!(targets.active.len(), 1);
    let t = &targets.active[0];
    assert_eq!(t.health, Health::Up);
    assert!(t.last_scrape.is_some() && t.last_error.is_none());
    assert_eq!(t.scrape_url, format!("http://{instance}/metrics"));
    assert_eq!(t.discovered_labels.get("__address__"), Some(instance.as_str()));
    assert_eq!(t.labels.get("env"), Some("test"));

    // A series that disappears gets a staleness marker at the next scrape.
    exporter.set(200, "text/plain; version=0.0.4", "a{x=\"1\"} 6\n");
    wait_for("b stale", || samples(&storage, "b").last().is_some_and(|(_, s)| is_stale_nan(s.v))).await;
    assert!(!is_stale_nan(last(&storage, "a").unwrap_or(0.0)));

    // A failing scrape: up 0, everything stale, the error shown.
    exporter.set(500, "text/plain", "oops");
    wait_for("up 0", || last(&storage, "up") == Some(0.0)).await;
    assert!(samples(&storage, "a").last().is_some_and(|(_, s)| is_stale_nan(s.v)));
    let t = &manager.targets().active[0];
    assert_eq!(t.health, Health::Down);
    assert!(t.last_error.as_deref().is_some_and(|e| e.contains("500")), "{:?}", t.last_error);

    // OpenMetrics back, then the target goes away with the job: all its series go stale.
    exporter.set(200, "application/openmetrics-text; version=1.0.0", "# TYPE a gauge\na{x=\"1\"} 8\n# EOF\n");
    wait_for("up 1", || last(&storage, "up") == Some(1.0) && last(&storage, "a") == Some(8.0)).await;
    manager.apply_config(&config("scrape_configs: []\n")).await;
    assert!(is_stale_nan(last(&storage, "a").unwrap_or(0.0)));
    assert!(is_stale_nan(last(&storage, "up").unwrap_or(0.0)));
    assert!(manager.targets().active.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_discovery_and_reload_keep_other_jobs() {
    let one = Exporter::start("m 1\n").await;
    let two = Exporter::start("m 2\n").await;
    let dir = std::env::temp_dir().join(format!("opsloop-scrape-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let file = dir.join("targets.json");
    std::fs::write(&file, format!(r#"[{{"targets": ["{}"], "labels": {{"team": "a"}}}}]"#, two.address))
        .expect("write");
    let storage = Arc::new(MemStorage::new());
    let manager = ScrapeManager::new(storage.clone());
    let base = format!(
        "scrape_configs:\n- job_name: static\n  scrape_interval: 200ms\n  scrape_timeout: 100ms\n  static_configs: [{{targets: ['{}']}}]\n",
        one.address
    );
    let with_files = format!(
        "{base}- job_name: files\n  scrape_interval: 200ms\n  scrape_timeout: 100ms\n  file_sd_configs: [{{files: ['{}/*.json'], refresh_interval: 100ms}}]\n",
        dir.display()
    );
    manager.apply_config(&config(&with_files)).await;
    wait_for("both jobs", || {
        samples(&storage, "m").iter().map(|(l, _)| l.clone()).collect::<std::collections::BTreeSet<_>>().len() == 2
    })
    .await;
    let from_file = samples(&storage, "m").into_iter().find(|(l, _)| l.contains("files")).expect("file target");
    assert!(from_file.0.contains(r#"team="a""#), "{}", from_file.0);
    let targets = manager.targets();
    let file_target = targets.active.iter().find(|t| t.scrape_pool == "files").expect("file target");
    assert!(file_target.discovered_labels.get("__meta_filepath").is_some_and(|p| p.ends_with("targets.json")));

    // The file empties: its target goes stale; the static job is not disturbed.
    let static_before = samples(&storage, "up").iter().filter(|(l, _)| l.contains("static")).count();
    std::fs::write(&file, "[]").expect("write");
    wait_for("file target stale", || {
        samples(&storage, "m").iter().rfind(|(l, _)| l.contains("files")).is_some_and(|(_, s)| is_stale_nan(s.v))
    })
    .await;
    // Reloading with the static job unchanged keeps its loop: no staleness marker for it.
    manager.apply_config(&config(&base)).await;
    let static_up: Vec<Sample> =
        samples(&storage, "up").into_iter().filter(|(l, _)| l.contains("static")).map(|(_, s)| s).collect();
    assert!(static_up.len() >= static_before);
    assert!(static_up.iter().all(|s| s.v == 1.0), "{static_up:?}");
    manager.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
