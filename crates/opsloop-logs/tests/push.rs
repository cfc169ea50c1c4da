//! Push bodies as Promtail and the Loki docs send them, end to end into the store and back out
//! through LogQL, plus the edge validation errors.

use opsloop_logs::eval::{Direction, QueryParams, QueryResult, query_range};
use opsloop_logs::push::{
    EntryAdapter, LabelPairAdapter, PushError, PushLimits, PushRequest, StreamAdapter, Timestamp, decode_json,
    decode_protobuf,
};
use opsloop_logs::store::{Store, StoreOptions};
use prost::Message;

/// The example of Loki's HTTP API documentation.
const DOC_JSON: &str = r#"{
  "streams": [
    {
      "stream": { "label": "value" },
      "values": [
          [ "1570818238000000000", "fizzbuzz" ]
      ]
    }
  ]
}"#;

/// Promtail's protobuf: labels in selector form, a batch of entries per stream.
fn promtail_body() -> Vec<u8> {
    let req = PushRequest {
        streams: vec![
            StreamAdapter {
                labels: r#"{filename="/var/log/syslog", job="varlogs", host="web-1"}"#.into(),
                entries: (0..3)
                    .map(|i| EntryAdapter {
                        timestamp: Some(Timestamp { seconds: 1_700_000_000 + i, nanos: 500 }),
                        line: format!("Nov 14 22:13:2{i} web-1 sshd[1234]: Accepted publickey for deploy"),
                        structured_metadata: if i == 1 {
                            vec![LabelPairAdapter { name: "trace_id".into(), value: "0af7651916cd43dd".into() }]
                        } else {
                            vec![]
                        },
                    })
                    .collect(),
                hash: 0,
            },
            StreamAdapter {
                labels: r#"{job="nginx"}"#.into(),
                entries: vec![EntryAdapter {
                    timestamp: Some(Timestamp { seconds: 1_700_000_001, nanos: 0 }),
                    line: r#"10.0.0.1 - - [14/Nov/2023:22:13:21 +0000] "GET / HTTP/1.1" 200 612"#.into(),
                    structured_metadata: vec![],
                }],
                hash: 0,
            },
        ],
    };
    snap::raw::Encoder::new().compress_vec(&req.encode_to_vec()).expect("snappy")
}

#[test]
fn docs_json_and_promtail_protobuf_into_the_store() {
    let limits = PushLimits::default();
    let dir = tempfile::tempdir().expect("tmp");
    let store = Store::open(dir.path(), StoreOptions::default()).expect("open");
    store.push("tenant-a", decode_json(DOC_JSON.as_bytes(), &limits).expect("json")).expect("push");
    let pb = decode_protobuf(&promtail_body(), &limits).expect("protobuf");
    assert_eq!(pb[0].labels.to_string(), r#"{filename="/var/log/syslog", host="web-1", job="varlogs"}"#);
    assert_eq!(pb[0].entries[0].ts, 1_700_000_000_000_000_500);
    store.push("tenant-a", pb).expect("push");

    let p = QueryParams { start: 0, end: i64::MAX, step: 0, limit: 100, direction: Direction::Forward };
    let QueryResult::Streams(st) = query_range(&store.reader("tenant-a"), r#"{label="value"}"#, &p).expect("q") else {
        panic!()
    };
    assert_eq!(st[0].entries, vec![(1_570_818_238_000_000_000, "fizzbuzz".to_string())]);
    let QueryResult::Streams(st) =
        query_range(&store.reader("tenant-a"), r#"{job="varlogs"} | trace_id!="""#, &p).expect("q")
    else {
        panic!()
    };
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].labels.get("trace_id"), Some("0af7651916cd43dd"));
    // Tenants are isolated.
    let QueryResult::Streams(st) = query_range(&store.reader("tenant-b"), r#"{job=~".+"}"#, &p).expect("q") else {
        panic!()
    };
    assert!(st.is_empty());
    assert_eq!(store.label_values("tenant-a", "job", &[], 0, i64::MAX), vec!["nginx", "varlogs"]);
}

#[test]
fn edge_validation() {
    let limits = PushLimits { max_line_size: 10, max_label_names_per_series: 2, ..PushLimits::default() };
    let cases: &[(&str, &str)] = &[
        (r#"{"streams":[{"stream":{"a":"b"},"values":[["12x","l"]]}]}"#, "invalid timestamp \"12x\""),
        (r#"{"streams":[{"stream":{"a":"b"},"values":[["-5","l"]]}]}"#, "invalid timestamp"),
        (
            r#"{"streams":[{"stream":{"a":"b"},"values":[["1","this line is too long"]]}]}"#,
            "max entry size '10' bytes exceeded",
        ),
        (r#"{"streams":[{"stream":{},"values":[["1","l"]]}]}"#, "at least one label pair is required"),
        (r#"{"streams":[{"stream":{"a":""},"values":[["1","l"]]}]}"#, "at least one label pair is required"),
        (r#"{"streams":[{"stream":{"a":"1","b":"2","c":"3"},"values":[]}]}"#, "has 3 label names; limit: 2"),
        (r#"{"streams":[{"stream":{"a.b":"1"},"values":[]}]}"#, "invalid label name \"a.b\""),
        (r#"{"streams":[{"labels":"{a=~\"b\"}","entries":[]}]}"#, "only = is allowed"),
        (
            r#"{"streams":[{"stream":{"a":"1"},"values":[["1","l",{"bad-name":"x"}]]}]}"#,
            "invalid structured metadata name",
        ),
        (r#"{"streams":[{"stream":{"a":"1"},"values":[["1"]]}]}"#, "error parsing JSON push request"),
        ("not json", "error parsing JSON push request"),
    ];
    for (body, want) in cases {
        let err = decode_json(body.as_bytes(), &limits).expect_err(body);
        assert!(err.to_string().contains(want), "{body}: {err}");
    }
    assert!(matches!(
        decode_protobuf(b"\xff\xff\xff\xff\x0f", &limits),
        Err(PushError::TooLarge { .. } | PushError::Snappy(_))
    ));
    let bad_ts = PushRequest {
        streams: vec![StreamAdapter {
            labels: r#"{a="b"}"#.into(),
            entries: vec![EntryAdapter {
                timestamp: Some(Timestamp { seconds: i64::MAX, nanos: 0 }),
                line: "x".into(),
                structured_metadata: vec![],
            }],
            hash: 0,
        }],
    };
    let body = snap::raw::Encoder::new().compress_vec(&bad_ts.encode_to_vec()).expect("snappy");
    assert!(matches!(decode_protobuf(&body, &limits), Err(PushError::Timestamp { .. })));
}
