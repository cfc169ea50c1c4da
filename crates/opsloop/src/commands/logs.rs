//! `opsloop logs 'LOGQL'`: a LogQL query against a running server's Loki API (logcli's role).

use std::process::ExitCode;

use serde_json::Value;

use crate::cli::ClientArgs;
use crate::client::ApiClient;
use crate::output;

/// Invalid input (a bad query or flag) exits 2, as `opsloop query` does.
const INVALID: u8 = 2;

fn now_ns() -> i128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i128).unwrap_or(0)
}

/// `{a="1", b="2"}` from a JSON object of labels.
fn labels_text(labels: &Value) -> String {
    let Some(map) = labels.as_object() else { return "{}".into() };
    let pairs: Vec<String> = map
        .iter()
        .map(|(k, v)| format!("{k}={}", serde_json::to_string(v.as_str().unwrap_or("")).unwrap_or_default()))
        .collect();
    format!("{{{}}}", pairs.join(", "))
}

fn ns_text(ns: &str) -> String {
    ns.parse::<i128>()
        .ok()
        .and_then(|n| jiff::Timestamp::from_nanosecond(n).ok())
        .map(|t| t.to_string())
        .unwrap_or_else(|| ns.to_owned())
}

/// The lines of a `streams` answer, oldest first across streams: `time labels line`.
fn stream_lines(result: &Value) -> Vec<(i128, String)> {
    let mut lines = Vec::new();
    for stream in result.as_array().into_iter().flatten() {
        let labels = labels_text(&stream["stream"]);
        for value in stream["values"].as_array().into_iter().flatten() {
            let ts = value[0].as_str().unwrap_or("0");
            let line = value[1].as_str().unwrap_or("");
            lines.push((ts.parse::<i128>().unwrap_or(0), format!("{} {labels} {line}", ns_text(ts))));
        }
    }
    lines.sort_by_key(|(t, _)| *t);
    lines
}

pub async fn query(client: &ClientArgs, logql: &str, since: &str, limit: usize, json: bool) -> ExitCode {
    let Some(since) = opsloop_metrics::config::parse_duration(since).filter(|d| !d.is_zero()) else {
        output::error("--since takes a positive duration, e.g. `30m`, `1h` or `2d`");
        return ExitCode::from(INVALID);
    };
    let end = now_ns();
    let start = end - since.as_nanos() as i128;
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query
        .append_pair("query", logql)
        .append_pair("start", &start.to_string())
        .append_pair("end", &end.to_string())
        .append_pair("limit", &limit.to_string())
        // The newest lines of the range, as logcli takes them; printed oldest first below.
        .append_pair("direction", "backward");
    let api = match ApiClient::new(client) {
        Ok(api) => api,
        Err(e) => return super::fail(&e),
    };
    let (status, body) = match api.get_outside_api(&["loki", "api", "v1", "query_range"], &query.finish()).await {
        Ok(answer) => answer,
        Err(e) => return super::fail(&e),
    };
    if body["status"] != "success" {
        // Loki's errors are plain text; the client wraps them as `{"error": …}`.
        let message = body["error"].as_str().map(str::to_owned).unwrap_or_else(|| body.to_string());
        if json {
            let _ = output::json(&body);
        } else {
            output::error(&format!("{} (HTTP {})", message.trim_end(), status.as_u16()));
        }
        return if status.as_u16() == 400 { ExitCode::from(INVALID) } else { ExitCode::FAILURE };
    }
    if json {
        return match output::json(&body) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => super::fail(&e),
        };
    }
    let data = &body["data"];
    let result = &data["result"];
    match data["resultType"].as_str() {
        Some("streams") => {
            for (_, line) in stream_lines(result) {
                println!("{line}");
            }
        }
        Some("scalar") => println!("{}", result[1].as_str().unwrap_or("")),
        Some("vector") => {
            let rows = result
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| vec![labels_text(&s["metric"]), s["value"][1].as_str().unwrap_or("").to_owned()])
                .collect();
            output::table(&["SERIES", "VALUE"], rows);
        }
        _ => {
            for series in result.as_array().into_iter().flatten() {
                println!("{}", labels_text(&series["metric"]));
                for point in series["values"].as_array().into_iter().flatten() {
                    let t = point[0].as_f64().unwrap_or(0.0);
                    let when = jiff::Timestamp::from_millisecond((t * 1000.0) as i64)
                        .map(|t| t.to_string())
                        .unwrap_or_default();
                    println!("  {when}  {}", point[1].as_str().unwrap_or(""));
                }
            }
        }
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_all_streams_in_time_order() {
        let result = serde_json::json!([
            {"stream": {"app": "a"}, "values": [["3000000000", "third"], ["1000000000", "first"]]},
            {"stream": {"app": "b"}, "values": [["2000000000", "second"]]},
        ]);
        let lines: Vec<String> = stream_lines(&result).into_iter().map(|(_, l)| l).collect();
        assert_eq!(
            lines,
            [
                "1970-01-01T00:00:01Z {app=\"a\"} first",
                "1970-01-01T00:00:02Z {app=\"b\"} second",
                "1970-01-01T00:00:03Z {app=\"a\"} third"
            ]
        );
    }
}
