//! `opsloop checks run FILE`: every check of a Gatus-format file once, offline (Gatus has no
//! such command; it is the checks engine's `promtool`). Results print in the file's order,
//! each failed condition in Gatus's form (`[STATUS] (503) == 200`).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use opsloop_checks::config::{self, LoadError};
use opsloop_checks::result::CheckResult;
use opsloop_checks::runner::Runner;
use opsloop_core::clock::SystemClock;
use owo_colors::OwoColorize;

use crate::cli::ChecksCommand;
use crate::output;

/// Invalid input exits 2, as `lint` and `metrics check-config` do.
const INVALID: u8 = 2;

pub async fn run(command: ChecksCommand) -> ExitCode {
    let ChecksCommand::Run { file, json, concurrency } = command;
    let config = match config::load_file(&file) {
        Ok(config) => config,
        Err(LoadError::Read { path, source }) => {
            output::error(&format!("reading {path}: {source}"));
            return ExitCode::from(INVALID);
        }
        Err(LoadError::Invalid(e)) => {
            if json {
                let problems: Vec<String> = e.rendered.lines().map(str::to_owned).collect();
                let _ = output::json(&serde_json::json!({"valid": false, "problems": problems}));
            } else {
                eprintln!("{}", e.rendered);
            }
            return ExitCode::from(INVALID);
        }
    };
    if !json {
        for note in &config.notes {
            output::note(note);
        }
        if !config.heartbeats.is_empty() {
            output::note(&format!("{} heartbeat(s) are not run here: they wait for pings", config.heartbeats.len()));
        }
    }
    let runner = Runner::new(Arc::new(SystemClock), concurrency);
    let mut tasks = tokio::task::JoinSet::new();
    let mut skipped = Vec::new();
    for (index, endpoint) in config.endpoints.into_iter().enumerate() {
        if !endpoint.enabled {
            skipped.push(endpoint.name.clone());
            continue;
        }
        let runner = runner.clone();
        tasks.spawn(async move { (index, runner.run(&endpoint).await) });
    }
    let mut results: Vec<(usize, CheckResult)> = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(result) => results.push(result),
            Err(e) => output::error(&format!("a check stopped unexpectedly: {e}")),
        }
    }
    results.sort_by_key(|(index, _)| *index);
    let results: Vec<CheckResult> = results.into_iter().map(|(_, r)| r).collect();
    let failed = results.iter().filter(|r| !r.success).count();
    if json {
        let _ = output::json(&serde_json::json!({
            "valid": true,
            "passed": results.len() - failed,
            "failed": failed,
            "skipped": skipped,
            "results": results,
        }));
    } else {
        for result in &results {
            print_result(result);
        }
        for name in &skipped {
            println!("- {name}  skipped (enabled: false)");
        }
        println!("{} of {} check(s) passed", results.len() - failed, results.len());
    }
    if failed == 0 { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn print_result(result: &CheckResult) {
    let name = match &result.group {
        Some(group) => format!("{group}/{}", result.name),
        None => result.name.clone(),
    };
    let took = human(result.duration);
    if output::color() {
        let mark = if result.success { "✓".green().bold().to_string() } else { "✗".red().bold().to_string() };
        println!("{mark} {name}  {}", took.dimmed());
    } else {
        println!("{} {name}  {took}", if result.success { "✓" } else { "✗" });
    }
    if !result.success {
        for condition in result.failed_conditions() {
            println!("    {}", condition.condition);
        }
    }
    for error in &result.errors {
        println!("    error: {error}");
    }
}

fn human(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        format!("{}ms", duration.as_millis())
    } else {
        format!("{:.1}s", duration.as_secs_f64())
    }
}

/// `opsloop check list|run`: the checks a running server runs, through its API.
pub async fn remote(client: &crate::cli::ClientArgs, command: crate::cli::CheckCommand) -> ExitCode {
    use crate::cli::CheckCommand;
    use serde_json::Value;
    let result = async {
        let client = crate::client::ApiClient::new(client)?;
        match command {
            CheckCommand::List { json } => {
                let listed: Value =
                    client.call::<Value, Value>(reqwest::Method::GET, &["checks"], None).await?.unwrap_or_default();
                if json {
                    output::json(&listed)?;
                    return Ok(ExitCode::SUCCESS);
                }
                let text = |value: &Value| value.as_str().unwrap_or("-").to_owned();
                let rows = listed["checks"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| {
                        let last = &c["last"];
                        vec![
                            text(&c["key"]),
                            text(&c["health"]),
                            text(&last["kind"]),
                            last["duration_ms"].as_f64().map_or("-".to_owned(), |ms| format!("{ms:.0} ms")),
                            last["status"].as_i64().map_or("-".to_owned(), |s| s.to_string()),
                        ]
                    })
                    .collect();
                output::table(&["CHECK", "HEALTH", "KIND", "LAST", "STATUS"], rows);
                let rows: Vec<Vec<String>> = listed["heartbeats"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|h| vec![text(&h["key"]), text(&h["state"]), text(&h["ping_url"])])
                    .collect();
                if !rows.is_empty() {
                    println!();
                    output::table(&["HEARTBEAT", "STATE", "PING URL"], rows);
                }
                Ok(ExitCode::SUCCESS)
            }
            CheckCommand::Run { key, json } => {
                let result: Value = client
                    .call::<Value, Value>(reqwest::Method::POST, &["checks", &key, "run"], None)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("the server sent no result"))?;
                let passed = result["success"].as_bool().unwrap_or(false);
                if json {
                    output::json(&result)?;
                } else {
                    let mark = if passed { "✓" } else { "✗" };
                    println!("{mark} {key} ({} ms)", result["duration_ms"]);
                    for condition in result["conditions"].as_array().into_iter().flatten() {
                        let ok = condition["success"].as_bool().unwrap_or(false);
                        println!("  {} {}", if ok { "✓" } else { "✗" }, condition["condition"].as_str().unwrap_or(""));
                    }
                    for error in result["errors"].as_array().into_iter().flatten() {
                        println!("  error: {}", error.as_str().unwrap_or(""));
                    }
                }
                Ok::<_, anyhow::Error>(if passed { ExitCode::SUCCESS } else { ExitCode::FAILURE })
            }
        }
    }
    .await;
    result.unwrap_or_else(|error| super::fail(&error))
}
