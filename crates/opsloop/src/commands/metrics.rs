//! `opsloop query`, `opsloop query-range` (PromQL against a running server's Prometheus API)
//! and `opsloop metrics check-config|check-rules` (offline, promtool's role).

use std::path::Path;
use std::process::ExitCode;

use serde_json::Value;

use crate::cli::{ClientArgs, MetricsCommand};
use crate::client::ApiClient;
use crate::output;

/// Invalid input (a bad expression or file) exits 2, as `lint` does.
const INVALID: u8 = 2;

fn now_secs() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// `now`, `-5m` (before now), Unix seconds, or RFC 3339, as Unix seconds.
fn parse_time(s: &str, now: f64) -> Option<f64> {
    if s == "now" {
        return Some(now);
    }
    if let Some(ago) = s.strip_prefix('-') {
        return opsloop_metrics::config::parse_duration(ago).map(|d| now - d.as_secs_f64());
    }
    if let Ok(secs) = s.parse::<f64>() {
        return secs.is_finite().then_some(secs);
    }
    s.parse::<jiff::Timestamp>().ok().map(|t| t.as_millisecond() as f64 / 1000.0)
}

fn parse_step(s: &str) -> Option<f64> {
    match s.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs.is_finite() => Some(secs),
        Ok(_) => None,
        Err(_) => opsloop_metrics::config::parse_duration(s).map(|d| d.as_secs_f64()).filter(|s| *s > 0.0),
    }
}

fn encode(pairs: &[(&str, String)]) -> String {
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        query.append_pair(k, v);
    }
    query.finish()
}

fn labels_text(metric: &Value) -> String {
    let Some(map) = metric.as_object() else { return "{}".into() };
    let name = map.get("__name__").and_then(Value::as_str).unwrap_or("");
    let rest: Vec<String> = map
        .iter()
        .filter(|(k, _)| *k != "__name__")
        .map(|(k, v)| format!("{k}={}", serde_json::to_string(v.as_str().unwrap_or("")).unwrap_or_default()))
        .collect();
    if rest.is_empty() && !name.is_empty() { name.to_owned() } else { format!("{name}{{{}}}", rest.join(", ")) }
}

async fn call(client: &ClientArgs, endpoint: &str, query: String, json: bool) -> ExitCode {
    let api = match ApiClient::new(client) {
        Ok(api) => api,
        Err(e) => return super::fail(&e),
    };
    let (status, body) = match api.get_outside_api(&["prometheus", "api", "v1", endpoint], &query).await {
        Ok(answer) => answer,
        Err(e) => return super::fail(&e),
    };
    if body["status"] != "success" {
        let message = body["error"].as_str().map(str::to_owned).unwrap_or_else(|| body.to_string());
        if json {
            let _ = output::json(&body);
        } else {
            output::error(&format!("{message} (HTTP {})", status.as_u16()));
        }
        return if body["errorType"] == "bad_data" { ExitCode::from(INVALID) } else { ExitCode::FAILURE };
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
        Some("scalar" | "string") => println!("{}", result[1].as_str().unwrap_or("")),
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

pub async fn query(client: &ClientArgs, expr: &str, time: Option<&str>, json: bool) -> ExitCode {
    let now = now_secs();
    let Some(t) = parse_time(time.unwrap_or("now"), now) else {
        output::error("--time takes `now`, `-5m`, Unix seconds or an RFC 3339 time");
        return ExitCode::from(INVALID);
    };
    call(client, "query", encode(&[("query", expr.to_owned()), ("time", t.to_string())]), json).await
}

pub async fn query_range(
    client: &ClientArgs,
    expr: &str,
    start: Option<&str>,
    end: Option<&str>,
    step: Option<&str>,
    json: bool,
) -> ExitCode {
    let now = now_secs();
    let (Some(start), Some(end)) = (parse_time(start.unwrap_or("-1h"), now), parse_time(end.unwrap_or("now"), now))
    else {
        output::error("--start and --end take `now`, `-5m`, Unix seconds or an RFC 3339 time");
        return ExitCode::from(INVALID);
    };
    let step = match step {
        Some(s) => match parse_step(s) {
            Some(step) => step,
            None => {
                output::error("--step takes a positive duration, e.g. `15s` or `1m`");
                return ExitCode::from(INVALID);
            }
        },
        None => ((end - start) / 250.0).max(1.0).round(),
    };
    let query = encode(&[
        ("query", expr.to_owned()),
        ("start", start.to_string()),
        ("end", end.to_string()),
        ("step", step.to_string()),
    ]);
    call(client, "query_range", query, json).await
}

pub fn check(command: MetricsCommand) -> ExitCode {
    match command {
        MetricsCommand::CheckConfig { file, json } => check_config(&file, json),
        MetricsCommand::CheckRules { files, json } => {
            let mut problems = Vec::new();
            let mut groups = 0;
            for file in &files {
                match opsloop_metrics::rules::file::load_file(file) {
                    Ok(found) => groups += found.len(),
                    Err(e) => problems.push(e.to_string()),
                }
            }
            report(problems, &format!("{} file(s), {groups} rule group(s)", files.len()), json)
        }
    }
}

fn check_config(file: &Path, json: bool) -> ExitCode {
    let config = match opsloop_metrics::config::load_file(file) {
        Ok(config) => config,
        Err(e) => return report(vec![e.to_string()], "", json),
    };
    let dir = file.parent().unwrap_or(Path::new("."));
    if !json {
        for warning in &config.warnings {
            output::warn(warning);
        }
    }
    match opsloop_metrics::rules::file::load_patterns(&config.rule_files, dir) {
        Ok(groups) => report(
            Vec::new(),
            &format!("{} scrape config(s), {} rule group(s)", config.scrape_configs.len(), groups.len()),
            json,
        ),
        Err(e) => report(vec![e.to_string()], "", json),
    }
}

fn report(problems: Vec<String>, summary: &str, json: bool) -> ExitCode {
    let valid = problems.is_empty();
    if json {
        let _ = output::json(&serde_json::json!({"valid": valid, "problems": problems, "summary": summary}));
    } else if valid {
        println!("SUCCESS: {summary}");
    } else {
        for p in &problems {
            eprintln!("{p}");
        }
    }
    if valid { ExitCode::SUCCESS } else { ExitCode::from(INVALID) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_relative_absolute_and_rfc3339() {
        assert_eq!(parse_time("now", 1000.0), Some(1000.0));
        assert_eq!(parse_time("-5m", 1000.0), Some(700.0));
        assert_eq!(parse_time("1500.5", 1000.0), Some(1500.5));
        assert_eq!(parse_time("1970-01-01T00:10:00Z", 0.0), Some(600.0));
        assert_eq!(parse_time("yesterday", 0.0), None);
        assert_eq!(parse_step("1m"), Some(60.0));
        assert_eq!(parse_step("0"), None);
    }
}
