//! Rules over in-memory samples raise an alert that a real Alertmanager receives with the
//! rule's labels and annotations (and the external labels), and that is resolved there when
//! the condition clears. Needs `prometheus-alertmanager` (Debian's package; `.ci/run`
//! installs it).

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opsloop_metrics::labels::Labels;
use opsloop_metrics::rules::manager::now_ms;
use opsloop_metrics::rules::{AlertSink, GroupOptions, ManagerOptions, Notifier, RuleManager};
use opsloop_metrics::storage::{MemStorage, Sample, Storage};

const BINARY: &str = "/usr/bin/prometheus-alertmanager";

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

async fn alerts(client: &reqwest::Client, base: &str) -> Vec<serde_json::Value> {
    let Ok(r) = client.get(format!("{base}/api/v2/alerts")).send().await else { return Vec::new() };
    r.json::<Vec<serde_json::Value>>().await.unwrap_or_default()
}

fn ours(alerts: &[serde_json::Value]) -> Option<&serde_json::Value> {
    alerts.iter().find(|a| a["labels"]["alertname"] == "CondHigh")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_reach_a_real_alertmanager_and_resolve() {
    if !Path::new(BINARY).exists() {
        opsloop_core::skip::skipped("prometheus-alertmanager not installed (apt-get install prometheus-alertmanager)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("alertmanager.yml");
    std::fs::write(&config, "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n").expect("write config");
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _am = Kill(
        Command::new(BINARY)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.path().join("data").display()))
            .arg("--cluster.listen-address=")
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("alertmanager starts"),
    );
    // First: it installs the TLS provider reqwest needs before any client is built.
    let notifier = Notifier::new(100);
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if client.get(format!("{base}/-/ready")).send().await.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(Instant::now() < deadline, "alertmanager did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let prom = format!(
        "global:\n  external_labels:\n    cluster: test-eu1\nalerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{port}']\n  alert_relabel_configs:\n    - action: labeldrop\n      regex: secret\n"
    );
    let config = opsloop_metrics::config::load(&prom, "prometheus.yml", dir.path()).expect("valid prometheus.yml");
    notifier.apply_config(&config.alerting, &config.global.external_labels);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let worker = {
        let n = notifier.clone();
        tokio::spawn(async move {
            n.run(async {
                let _ = stop_rx.await;
            })
            .await;
        })
    };

    let storage = Arc::new(MemStorage::new());
    let cond = Labels::from_pairs([("__name__", "cond"), ("instance", "web-1"), ("secret", "s3cr3t")]);
    storage.add(cond.clone(), Sample { t: now_ms(), v: 42.0 });
    let rules = "groups:\n  - name: it\n    interval: 1s\n    rules:\n      - alert: CondHigh\n        expr: cond > 10\n        labels:\n          severity: page\n        annotations:\n          summary: '{{ $labels.instance }} at {{ $value }}'\n";
    let groups = opsloop_metrics::rules::file::parse(rules, "it.yml").expect("valid rules");
    let options = ManagerOptions {
        group: GroupOptions {
            external_labels: config.global.external_labels.clone(),
            external_url: "http://opsloop.example/prometheus".into(),
            sink: Some(Arc::new(notifier.clone()) as Arc<dyn AlertSink>),
            ..GroupOptions::default()
        },
        evaluation_interval: config.global.evaluation_interval,
    };
    let manager = RuleManager::new(Arc::clone(&storage) as Arc<dyn Storage>, options);
    manager.update(groups).await;

    let deadline = Instant::now() + Duration::from_secs(20);
    let alert = loop {
        if let Some(a) = ours(&alerts(&client, &base).await) {
            break a.clone();
        }
        assert!(Instant::now() < deadline, "the alert never reached the alertmanager");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(alert["labels"]["severity"], "page", "{alert}");
    assert_eq!(alert["labels"]["instance"], "web-1", "{alert}");
    assert_eq!(alert["labels"]["cluster"], "test-eu1", "{alert}");
    assert!(alert["labels"].get("secret").is_none(), "relabelled away: {alert}");
    assert_eq!(alert["annotations"]["summary"], "web-1 at 42", "{alert}");
    assert_eq!(alert["status"]["state"], "active", "{alert}");
    assert!(alert["generatorURL"].as_str().is_some_and(|u| u.starts_with("http://opsloop.example/prometheus/graph?")));
    let snapshot = serde_json::to_value(manager.alerts()).expect("serializable");
    assert_eq!(snapshot[0]["state"], "firing", "{snapshot}");
    let groups = serde_json::to_value(manager.groups()).expect("serializable");
    assert_eq!(groups[0]["rules"][0]["type"], "alerting", "{groups}");
    assert_eq!(groups[0]["rules"][0]["health"], "ok", "{groups}");

    // The condition clears: the next evaluations send it resolved, and the Alertmanager
    // stops listing it long before it would have expired (4 minutes).
    storage.add(cond, Sample { t: now_ms(), v: 1.0 });
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if ours(&alerts(&client, &base).await).is_none() {
            break;
        }
        assert!(Instant::now() < deadline, "the alert was not resolved");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(manager.alerts().is_empty());
    assert_eq!(notifier.dropped(), 0);
    manager.stop().await;
    let _ = stop_tx.send(());
    let _ = worker.await;
}
