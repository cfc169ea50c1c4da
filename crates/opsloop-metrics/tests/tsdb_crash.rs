//! `kill -9` while appending: every batch the TSDB acknowledged must be there after reopening.
//! The test binary re-runs itself as the child (`crash_child`, active only with the env var
//! set), which appends, compacts now and then, and prints each acknowledged timestamp.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opsloop_metrics::labels::{Labels, Matcher};
use opsloop_metrics::storage::{Appendable, Queryable, Sample};
use opsloop_metrics::tsdb::{Tsdb, TsdbOptions};

const DIR_VAR: &str = "OPSLOOP_TSDB_CRASH_DIR";
const START_VAR: &str = "OPSLOOP_TSDB_CRASH_START";
const SERIES: usize = 50;
const STEP: i64 = 15_000;

fn opts() -> TsdbOptions {
    // Small blocks and segments, so kills also land in block cuts, checkpoints and rolls.
    TsdbOptions {
        block_range: Duration::from_secs(600),
        wal_segment_size: 64 << 10,
        retention: Duration::ZERO,
        ..Default::default()
    }
}

fn labels(i: usize) -> Labels {
    Labels::from_pairs([("__name__", "crash_test"), ("i", &i.to_string())])
}

fn value(i: usize, t: i64) -> f64 {
    (t / STEP) as f64 * (i + 1) as f64 + 0.25
}

#[test]
fn crash_child() {
    let Ok(dir) = std::env::var(DIR_VAR) else { return };
    let mut t: i64 = std::env::var(START_VAR).ok().and_then(|s| s.parse().ok()).unwrap_or(0);
    let db = Tsdb::open(Path::new(&dir), opts()).expect("child opens");
    for k in 0u64.. {
        let batch: Vec<(Labels, Sample)> = (0..SERIES).map(|i| (labels(i), Sample { t, v: value(i, t) })).collect();
        db.append(&batch).expect("append");
        println!("ack {t}");
        if k % 25 == 24 {
            db.compact().expect("compact");
        }
        t += STEP;
    }
}

fn seed() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1) | 1
}

#[test]
fn acknowledged_samples_survive_sigkill() {
    if std::env::var(DIR_VAR).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let mut rng = seed();
    let mut acked: Option<i64> = None;
    for round in 0..4 {
        let start = acked.map_or(0, |t| t + STEP);
        let mut child = Command::new(&exe)
            .args(["--exact", "crash_child", "--nocapture", "--test-threads=1"])
            .env(DIR_VAR, dir.path())
            .env(START_VAR, start.to_string())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("piped");
        let reader = std::thread::spawn(move || {
            let mut last = None;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(t) = line.strip_prefix("ack ").and_then(|t| t.parse::<i64>().ok()) {
                    last = Some(t);
                }
            }
            last
        });
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(400 + rng % 1200));
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("wait");
        assert!(!status.success(), "round {round}: the child ended by itself: {status}");
        if let Some(t) = reader.join().expect("reader") {
            acked = Some(t);
        }

        let db = Tsdb::open(dir.path(), opts()).expect("reopen after SIGKILL");
        let Some(last) = acked else { continue };
        let got = db.select(&[Matcher::equal("__name__", "crash_test")], 0, last).expect("select");
        assert_eq!(got.len(), SERIES, "round {round}");
        for s in &got {
            let i: usize = s.labels.get("i").and_then(|i| i.parse().ok()).expect("i label");
            let expected = (last / STEP + 1) as usize;
            assert_eq!(s.samples.len(), expected, "round {round}: series {i} up to {last}");
            for (k, sample) in s.samples.iter().enumerate() {
                let t = k as i64 * STEP;
                assert_eq!((sample.t, sample.v), (t, value(i, t)), "round {round}: series {i}");
            }
        }
        eprintln!("round {round}: {} samples per series acknowledged and found", last / STEP + 1);
    }
    assert!(acked.is_some(), "the child never acknowledged a batch");
}
