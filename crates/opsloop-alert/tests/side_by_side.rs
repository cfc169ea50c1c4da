//! opsloop's engine and the real Alertmanager 0.25 side by side: the same configuration
//! (short timers), the same timed stream of alerts, a silence and an inhibition; each sends
//! its webhooks to its own local receiver, and the notifications must agree — which alerts
//! travel together, their statuses and order, the group labels and key, and when (within
//! 500 ms).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use opsloop_alert::alerts::PostableAlert;
use opsloop_alert::driver::Driver;
use opsloop_alert::labels::LabelSet;
use opsloop_alert::notify::{RetryPolicy, deliver, http_client};
use opsloop_alert::silence::{PostableSilence, SilenceMatcher};
use opsloop_core::clock::SystemClock;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

type Received = Arc<Mutex<Vec<(Instant, Value)>>>;

/// A minimal HTTP/1.1 server that records every JSON body posted to it.
async fn receiver() -> (String, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got: Received = Arc::default();
    let store = got.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let store = store.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // Read one request: headers, then Content-Length bytes.
                    let header_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 8192];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..header_end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < header_end + len {
                        let mut chunk = [0u8; 8192];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let body: Value = serde_json::from_slice(&buf[header_end..header_end + len]).unwrap_or(Value::Null);
                    store.lock().unwrap().push((Instant::now(), body));
                    buf.drain(..header_end + len);
                    if stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, got)
}

fn config(url: &str) -> String {
    format!(
        r#"
route:
  receiver: hook
  group_by: [alertname]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 5s
  routes:
    - matchers: ['team="db"']
      receiver: db
      group_by: [alertname, cluster]
      continue: true
    - matchers: ['team=~"db|web"']
      receiver: hook
inhibit_rules:
  - source_matchers: [severity="critical"]
    target_matchers: [severity="warning"]
    equal: [cluster]
receivers:
  - name: hook
    webhook_configs:
      - url: {url}
  - name: db
    webhook_configs:
      - url: {url}
        send_resolved: false
"#
    )
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn alert(pairs: &[(&str, &str)], ends_at: Option<Timestamp>) -> PostableAlert {
    PostableAlert {
        labels: LabelSet::from_pairs(pairs.iter().copied()),
        ends_at,
        generator_url: "http://prometheus/graph".into(),
        ..Default::default()
    }
}

/// What must agree between the two: everything but times and the external URL.
fn essence(v: &Value) -> Value {
    let alerts: Vec<Value> = v["alerts"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    json!({
                        "status": x["status"], "labels": x["labels"], "annotations": x["annotations"],
                        "fingerprint": x["fingerprint"], "generatorURL": x["generatorURL"],
                        "endsAtZero": x["endsAt"] == "0001-01-01T00:00:00Z",
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    json!({
        "receiver": v["receiver"], "status": v["status"], "alerts": alerts, "groupLabels": v["groupLabels"],
        "commonLabels": v["commonLabels"], "commonAnnotations": v["commonAnnotations"], "version": v["version"],
        "groupKey": v["groupKey"], "truncatedAlerts": v["truncatedAlerts"],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifications_agree_with_alertmanager() {
    let Some(am_bin) = common::peer(&["prometheus-alertmanager", "alertmanager"]) else { return };
    let (am_url, am_got) = receiver().await;
    let (our_url, our_got) = receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("alertmanager.yml");
    std::fs::write(&config_path, config(&am_url)).unwrap();
    let port = free_port();
    let am = Kill(
        Command::new(&am_bin)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client = http_client(Duration::from_secs(5)).unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if client.get(format!("{base}/-/ready")).send().await.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(Instant::now() < deadline, "Alertmanager did not become ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let engine = opsloop_alert::Engine::new(opsloop_alert::config::load(&config(&our_url), "ours.yml").unwrap());
    let (driver, mut rx) = Driver::spawn(engine, Arc::new(SystemClock));
    let sender_client = client.clone();
    tokio::spawn(async move {
        while let Some(n) = rx.recv().await {
            let c = sender_client.clone();
            tokio::spawn(async move {
                deliver(&c, &n, "http://opsloop", RetryPolicy::default()).await;
            });
        }
    });

    // The silence, in both.
    let now = Timestamp::now();
    let silence = PostableSilence {
        id: None,
        matchers: vec![SilenceMatcher { name: "instance".into(), value: "s1".into(), is_regex: false, is_equal: true }],
        starts_at: Some(now),
        ends_at: Some(now + jiff::SignedDuration::from_secs(3600)),
        created_by: "test".into(),
        comment: "side by side".into(),
    };
    let r = client.post(format!("{base}/api/v2/silences")).json(&silence).send().await.unwrap();
    assert!(r.status().is_success(), "{:?}", r.text().await);
    driver.with(|e| e.set_silence(silence.clone(), Timestamp::now())).unwrap();

    let start = Instant::now();
    let post = |alerts: Vec<PostableAlert>| {
        let client = client.clone();
        let base = base.clone();
        let driver = driver.clone();
        async move {
            let r = client.post(format!("{base}/api/v2/alerts")).json(&alerts).send().await.unwrap();
            assert!(r.status().is_success(), "{:?}", r.text().await);
            driver.with(|e| e.put(alerts, Timestamp::now())).unwrap();
        }
    };
    let at = |s: f64| async move {
        let target = start + Duration::from_secs_f64(s);
        tokio::time::sleep_until(target.into()).await;
    };

    at(0.0).await;
    post(vec![
        alert(&[("alertname", "Disk"), ("instance", "1"), ("team", "web")], None),
        alert(
            &[("alertname", "Disk"), ("instance", "2"), ("team", "db"), ("cluster", "c1"), ("severity", "warning")],
            None,
        ),
        alert(&[("alertname", "Disk"), ("instance", "s1"), ("team", "web")], None),
    ])
    .await;
    at(0.3).await;
    post(vec![alert(
        &[("alertname", "Down"), ("instance", "3"), ("team", "db"), ("cluster", "c1"), ("severity", "critical")],
        None,
    )])
    .await;
    at(2.2).await;
    post(vec![alert(&[("alertname", "Disk"), ("instance", "4"), ("team", "db"), ("cluster", "c2")], None)]).await;
    at(4.4).await;
    let ended = Some(Timestamp::now());
    post(vec![
        alert(&[("alertname", "Disk"), ("instance", "1"), ("team", "web")], ended),
        alert(
            &[("alertname", "Down"), ("instance", "3"), ("team", "db"), ("cluster", "c1"), ("severity", "critical")],
            ended,
        ),
    ])
    .await;
    at(13.5).await;
    drop(am);

    let ours = our_got.lock().unwrap().clone();
    let theirs = am_got.lock().unwrap().clone();
    let render = |list: &[(Instant, Value)]| {
        list.iter()
            .map(|(t, v)| format!("{:>6.2}s {}", t.duration_since(start).as_secs_f64(), essence(v)))
            .collect::<Vec<_>>()
            .join("\n")
    };
    println!("alertmanager:\n{}\nopsloop:\n{}", render(&theirs), render(&ours));
    assert!(theirs.len() >= 4, "Alertmanager sent too little to compare:\n{}", render(&theirs));
    // Match each of Alertmanager's notifications to one of ours with the same content.
    let mut unmatched: Vec<(Instant, Value)> = ours.clone();
    let mut problems = Vec::new();
    for (t, v) in &theirs {
        let want = essence(v);
        let found = unmatched.iter().position(|(ot, ov)| {
            essence(ov) == want && (ot.max(t).duration_since(*ot.min(t))) <= Duration::from_millis(500)
        });
        match found {
            Some(i) => {
                unmatched.remove(i);
            }
            None => problems.push(format!(
                "Alertmanager's notification at {:.2}s has no twin: {want}",
                t.duration_since(start).as_secs_f64()
            )),
        }
    }
    for (t, v) in &unmatched {
        problems.push(format!(
            "opsloop's notification at {:.2}s is extra: {}",
            t.duration_since(start).as_secs_f64(),
            essence(v)
        ));
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
