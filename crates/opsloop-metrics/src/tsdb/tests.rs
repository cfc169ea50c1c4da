//! Tests of the TSDB as a whole: appends, queries across head and blocks, compaction, retention, reopening.

use std::time::Duration;

use super::*;
use crate::storage::stale_nan;

const MIN: i64 = 60_000;

fn opts(range_minutes: u64) -> TsdbOptions {
    TsdbOptions {
        block_range: Duration::from_secs(range_minutes * 60),
        retention: Duration::ZERO,
        ..Default::default()
    }
}

fn series(name: &str, i: usize) -> Labels {
    Labels::from_pairs([("__name__", name.to_owned()), ("instance", format!("host-{i}")), ("job", "node".to_owned())])
}

/// `n` series of two metrics, one sample every 15 s from `from` to `to` (exclusive).
fn fill(db: &Tsdb, n: usize, from: i64, to: i64) {
    let mut t = from;
    while t < to {
        let batch: Vec<(Labels, Sample)> = (0..n)
            .map(|i| (series(if i % 2 == 0 { "up" } else { "load" }, i), Sample { t, v: (t / 1000 + i as i64) as f64 }))
            .collect();
        db.append(&batch).expect("append");
        t += 15_000;
    }
}

fn count(db: &Tsdb, matchers: &[Matcher], mint: i64, maxt: i64) -> usize {
    db.select(matchers, mint, maxt).expect("select").iter().map(|s| s.samples.len()).sum()
}

fn assert_complete(db: &Tsdb, n: usize, from: i64, to: i64) {
    let got = db.select(&[], from, to - 1).expect("select");
    assert_eq!(got.len(), n);
    let per = ((to - from) / 15_000) as usize;
    for s in &got {
        assert_eq!(s.samples.len(), per, "{}", s.labels);
        assert!(s.samples.windows(2).all(|w| w[1].t - w[0].t == 15_000), "{}", s.labels);
    }
}

#[test]
fn tsdb_is_send_and_sync() {
    fn ok<T: Send + Sync>() {}
    ok::<Tsdb>();
}

#[test]
fn appends_survive_a_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = Tsdb::open(dir.path(), opts(120)).expect("open");
        fill(&db, 10, 0, 30 * MIN);
        db.append(&[(series("up", 0), Sample { t: 30 * MIN, v: stale_nan() })]).expect("stale");
        assert!(matches!(db.append(&[(series("up", 0), Sample { t: MIN, v: 1.0 })]), Err(StorageError::OutOfOrder)));
    }
    let db = Tsdb::open(dir.path(), opts(120)).expect("reopen");
    assert_complete(&db, 10, 0, 30 * MIN);
    let last = db.select(&[Matcher::equal("instance", "host-0")], 30 * MIN, 30 * MIN).expect("select");
    assert!(crate::storage::is_stale_nan(last[0].samples[0].v));
    // Order and duplicate checks still hold after replay.
    assert!(matches!(db.append(&[(series("up", 0), Sample { t: MIN, v: 1.0 })]), Err(StorageError::OutOfOrder)));
    // A batch with one bad sample commits the others.
    let err = db.append(&[
        (series("up", 2), Sample { t: 29 * MIN, v: 0.0 }),
        (series("up", 2), Sample { t: 31 * MIN, v: 0.0 }),
    ]);
    assert!(matches!(err, Err(StorageError::OutOfOrder)));
    assert_eq!(count(&db, &[Matcher::equal("instance", "host-2")], 31 * MIN, 31 * MIN), 1);
}

#[test]
fn blocks_are_cut_queried_with_the_head_and_survive_reopen() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = Tsdb::open(dir.path(), opts(60)).expect("open");
        fill(&db, 20, 0, 200 * MIN);
        db.compact().expect("compact");
        let stats = db.stats();
        assert!(stats.num_blocks >= 2, "{stats:?}");
        assert!(stats.head_min_time.is_some_and(|t| t >= 60 * MIN), "{stats:?}");
        assert_complete(&db, 20, 0, 200 * MIN);
        // Samples before the head are refused now.
        assert!(matches!(db.append(&[(series("up", 100), Sample { t: MIN, v: 1.0 })]), Err(StorageError::OutOfBounds)));
        fill(&db, 20, 200 * MIN, 210 * MIN);
    }
    let db = Tsdb::open(dir.path(), opts(60)).expect("reopen");
    assert_complete(&db, 20, 0, 210 * MIN);
    assert_eq!(count(&db, &[Matcher::equal("__name__", "up")], 0, 210 * MIN), 10 * 210 * 4);
    assert!(
        fs::read_dir(dir.path().join("wal"))
            .expect("wal")
            .any(|e| { e.expect("entry").file_name().to_string_lossy().starts_with("checkpoint.") })
    );
}

#[test]
fn blocks_merge_and_retention_deletes_the_oldest() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Tsdb::open(dir.path(), opts(60)).expect("open");
    for hour in 0..10 {
        fill(&db, 6, hour * 60 * MIN, (hour + 1) * 60 * MIN);
        db.compact().expect("compact");
    }
    let st = db.read();
    let ranges: Vec<(i64, i64)> = st.blocks.iter().map(|b| (b.meta.min_time, b.meta.max_time)).collect();
    drop(st);
    // Hours 0–2 and 3–5 merged into 3 h blocks (then 0–8 into one 9 h block once complete).
    assert!(ranges.iter().any(|(a, b)| b - a >= 180 * MIN), "{ranges:?}");
    assert_complete(&db, 6, 0, 600 * MIN);
    let names: Vec<String> = fs::read_dir(dir.path().join("blocks"))
        .expect("blocks")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), ranges.len(), "{names:?}");
    drop(db);

    // A block goes only once all of it is past retention: the 9 h block ends at 540 min, the
    // newest sample is at ~600 min.
    let db = Tsdb::open(dir.path(), TsdbOptions { retention: Duration::from_secs(30 * 60), ..opts(60) }).expect("open");
    db.compact().expect("compact");
    assert_eq!(count(&db, &[], 0, 540 * MIN - 1), 0);
    assert!(count(&db, &[], 540 * MIN, 600 * MIN) > 0);
    drop(db);

    let db = Tsdb::open(dir.path(), TsdbOptions { retention_size: 1, ..opts(60) }).expect("open");
    db.compact().expect("compact");
    assert_eq!(db.stats().num_blocks, 0);
    assert!(count(&db, &[], 0, 600 * MIN) > 0, "the head stays");
}

#[test]
fn label_names_values_and_stats() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Tsdb::open(dir.path(), opts(60)).expect("open");
    fill(&db, 4, 0, 100 * MIN);
    db.compact().expect("compact");
    db.append(&[(Labels::from_pairs([("__name__", "late"), ("zone", "z1")]), Sample { t: 100 * MIN, v: 1.0 })])
        .expect("append");
    assert_eq!(db.label_names(&[], 0, i64::MAX).expect("names"), vec!["__name__", "instance", "job", "zone"]);
    assert_eq!(
        db.label_names(&[Matcher::equal("__name__", "up")], 0, i64::MAX).expect("names"),
        vec!["__name__", "instance", "job"]
    );
    assert_eq!(db.label_values("__name__", &[], 0, i64::MAX).expect("values"), vec!["late", "load", "up"]);
    assert_eq!(
        db.label_values("instance", &[Matcher::equal("__name__", "up")], 0, 10 * MIN).expect("values"),
        vec!["host-0", "host-2"]
    );
    let st = db.stats();
    assert_eq!(st.num_series, 5);
    assert_eq!(st.series_count_by_metric_name[0], ("load".to_owned(), 2));
    assert_eq!(st.series_count_by_label_name[0], ("__name__".to_owned(), 5));
    assert_eq!(st.head_max_time, Some(100 * MIN));
    assert!(st.num_chunks >= 5 && st.wal_bytes > 0 && st.blocks_bytes > 0, "{st:?}");
}

#[test]
fn a_torn_wal_tail_is_repaired_and_a_damaged_block_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let db = Tsdb::open(dir.path(), opts(60)).expect("open");
        fill(&db, 3, 0, 10 * MIN);
    }
    let wal_dir = dir.path().join("wal");
    let mut segs: Vec<_> = fs::read_dir(&wal_dir).expect("wal").map(|e| e.expect("entry").path()).collect();
    segs.sort();
    let seg = segs.iter().rev().find(|p| fs::metadata(p).is_ok_and(|m| m.len() > 0)).expect("a segment").clone();
    let mut bytes = fs::read(&seg).expect("read");
    bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2]);
    fs::write(&seg, &bytes).expect("write");
    {
        let db = Tsdb::open(dir.path(), opts(60)).expect("torn tail is repaired");
        assert_complete(&db, 3, 0, 10 * MIN);
        fill(&db, 3, 10 * MIN, 200 * MIN);
        db.compact().expect("compact");
    }
    let block = fs::read_dir(dir.path().join("blocks")).expect("blocks").next().expect("one").expect("entry").path();
    fs::write(block.join("meta.json"), b"{not json").expect("write");
    let err = Tsdb::open(dir.path(), opts(60)).expect_err("damaged");
    assert!(matches!(err, StorageError::Corrupt(ref m) if m.contains("meta.json")), "{err}");
}

#[test]
fn appends_and_queries_run_concurrently_with_compaction() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = Arc::new(Tsdb::open(dir.path(), opts(30)).expect("open"));
    let writer = {
        let db = db.clone();
        std::thread::spawn(move || fill(&db, 8, 0, 300 * MIN))
    };
    let compactor = {
        let db = db.clone();
        std::thread::spawn(move || {
            for _ in 0..50 {
                db.compact().expect("compact");
                let _ = db.select(&[Matcher::equal("job", "node")], 0, i64::MAX).expect("select");
            }
        })
    };
    writer.join().expect("writer");
    compactor.join().expect("compactor");
    db.compact().expect("compact");
    assert_complete(&db, 8, 0, 300 * MIN);
}
