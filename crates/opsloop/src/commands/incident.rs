//! `opsloop incident`: incidents on a running server, through its API.

use std::process::ExitCode;

use reqwest::Method;
use serde_json::{Value, json};

use super::fail;
use crate::cli::{ClientArgs, IncidentCommand};
use crate::client::ApiClient;
use crate::output;

pub async fn run(client: &ClientArgs, command: IncidentCommand) -> ExitCode {
    let result = async {
        let client = ApiClient::new(client)?;
        match command {
            IncidentCommand::List { open, status, limit, json } => {
                let mut query = url::form_urlencoded::Serializer::new(String::new());
                query.append_pair("limit", &limit.clamp(1, 500).to_string());
                if open {
                    query.append_pair("open", "true");
                }
                if let Some(status) = &status {
                    query.append_pair("status", status);
                }
                let incidents: Vec<Value> =
                    client.get_with_query(&["incidents"], &query.finish()).await?.unwrap_or_default();
                if json {
                    // Scripts read the timeline too: one request per incident is the price.
                    let mut detailed = Vec::with_capacity(incidents.len());
                    for incident in &incidents {
                        let id = incident["id"].to_string();
                        let one: Option<Value> =
                            client.call::<Value, _>(Method::GET, &["incidents", &id], None).await?;
                        detailed.push(one.unwrap_or_else(|| incident.clone()));
                    }
                    output::json(&detailed)?;
                    return Ok(ExitCode::SUCCESS);
                }
                let text = |value: &Value| value.as_str().unwrap_or("-").to_owned();
                let rows = incidents
                    .iter()
                    .map(|i| {
                        vec![
                            i["id"].to_string(),
                            text(&i["status"]),
                            text(&i["severity"]),
                            text(&i["title"]),
                            text(&i["project"]),
                            text(&i["assignee"]),
                            text(&i["created_at"]),
                        ]
                    })
                    .collect();
                output::table(&["ID", "STATUS", "SEVERITY", "TITLE", "PROJECT", "ASSIGNEE", "OPENED"], rows);
                Ok(ExitCode::SUCCESS)
            }
            IncidentCommand::Show { id, json } => {
                let incident: Value = client
                    .call::<Value, _>(Method::GET, &["incidents", &id.to_string()], None)
                    .await?
                    .ok_or_else(|| anyhow::anyhow!("the server sent no incident"))?;
                print_incident(&incident, json)
            }
            IncidentCommand::Ack { id, note, json } => change(&client, id, "acknowledge", &note, json).await,
            IncidentCommand::Resolve { id, note, json } => change(&client, id, "resolve", &note, json).await,
        }
    }
    .await;
    result.unwrap_or_else(|error| fail(&error))
}

async fn change(client: &ApiClient, id: i64, action: &str, note: &str, json: bool) -> anyhow::Result<ExitCode> {
    let body = json!({ "note": note });
    let incident: Value = client
        .call(Method::POST, &["incidents", &id.to_string(), action], Some(&body))
        .await?
        .ok_or_else(|| anyhow::anyhow!("the server sent no incident"))?;
    print_incident(&incident, json)
}

fn print_incident(incident: &Value, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        output::json(incident)?;
        return Ok(ExitCode::SUCCESS);
    }
    let text = |value: &Value| value.as_str().unwrap_or("-").to_owned();
    println!("incident {}: {}", incident["id"], text(&incident["title"]));
    println!("  status    {}", text(&incident["status"]));
    println!("  severity  {}", text(&incident["severity"]));
    println!("  assignee  {}", text(&incident["assignee"]));
    println!("  opened    {}", text(&incident["created_at"]));
    let changes = incident["changes"].as_array().map(Vec::as_slice).unwrap_or_default();
    if !changes.is_empty() {
        println!("changed in the hour before (newest first; `opsloop rollback` undoes one):");
        for change in changes {
            println!(
                "  deployment {}  {} to {}  {} ({})  {}  {}",
                change["deployment"],
                text(&change["service"]),
                text(&change["environment"]),
                text(&change["version"]),
                text(&change["commit"]).chars().take(12).collect::<String>(),
                text(&change["status"]),
                text(&change["created_at"]),
            );
        }
    }
    println!("timeline:");
    for entry in incident["timeline"].as_array().into_iter().flatten() {
        let detail = text(&entry["detail"]);
        let detail =
            if detail.len() > 100 { format!("{}…", &detail[..detail.floor_char_boundary(100)]) } else { detail };
        println!("  {}  {:<13} {:<10} {}", text(&entry["at"]), text(&entry["kind"]), text(&entry["actor"]), detail);
    }
    Ok(ExitCode::SUCCESS)
}

/// `opsloop oncall`: from `--config FILE` offline, or from the server's configuration.
pub async fn oncall(
    client: &ClientArgs,
    schedule: Option<&str>,
    at: Option<&str>,
    config: Option<&std::path::Path>,
    check: bool,
    json: bool,
) -> ExitCode {
    let answers = match config {
        Some(path) => match offline(path, schedule, at, check) {
            Ok(Some(answers)) => answers,
            Ok(None) => {
                output::status(&format!("{}: valid", path.display()));
                return ExitCode::SUCCESS;
            }
            Err(code) => return code,
        },
        None => {
            let asked = async {
                let client = ApiClient::new(client)?;
                let answers: Vec<Value> = match schedule {
                    Some(schedule) => {
                        let mut query = url::form_urlencoded::Serializer::new(String::new());
                        if let Some(at) = at {
                            query.append_pair("at", at);
                        }
                        let one: Option<Value> = client.get_with_query(&["oncall", schedule], &query.finish()).await?;
                        one.into_iter().collect()
                    }
                    None => client.call::<Value, Vec<Value>>(Method::GET, &["oncall"], None).await?.unwrap_or_default(),
                };
                Ok::<_, anyhow::Error>(answers)
            }
            .await;
            match asked {
                Ok(answers) => answers,
                Err(error) => return fail(&error),
            }
        }
    };
    if json {
        // One schedule asked: one object, what scripts expect from `--json`.
        let printed = match (schedule, answers.as_slice()) {
            (Some(_), [one]) => output::json(one),
            _ => output::json(&answers),
        };
        return printed.map_or_else(|error| fail(&error), |()| ExitCode::SUCCESS);
    }
    let text = |value: &Value| value.as_str().unwrap_or("-").to_owned();
    let rows = answers
        .iter()
        .map(|a| {
            let user = a["user"].as_str().unwrap_or("(nobody)").to_owned();
            vec![text(&a["schedule"]), user, text(&a["since"]), text(&a["until"]), text(&a["timezone"])]
        })
        .collect();
    output::table(&["SCHEDULE", "ON CALL", "SINCE", "UNTIL", "TIME ZONE"], rows);
    ExitCode::SUCCESS
}

/// Answers from a file: `Ok(None)` when only checking; exit 2 for an invalid file or time.
fn offline(
    path: &std::path::Path,
    schedule: Option<&str>,
    at: Option<&str>,
    check: bool,
) -> Result<Option<Vec<Value>>, ExitCode> {
    use opsloop_alert::oncall;
    let invalid = |message: String| {
        output::error(&message);
        ExitCode::from(2)
    };
    let config = oncall::config::load_file(path).map_err(|e| invalid(e.to_string()))?;
    if check {
        return Ok(None);
    }
    let names: Vec<String> = match schedule {
        Some(name) => vec![name.to_owned()],
        None => config.schedules.iter().map(|s| s.name.clone()).collect(),
    };
    let now = oncall::now(&opsloop_core::SystemClock);
    let mut answers = Vec::new();
    for name in names {
        let instant = match at {
            None | Some("now") => now,
            Some(text) => oncall::parse_at(&config, &name, text).map_err(|e| invalid(e.to_string()))?,
        };
        let answer = oncall::on_call_answer(&config, &name, instant).map_err(|e| invalid(e.to_string()))?;
        answers.push(serde_json::to_value(&answer).map_err(|e| invalid(e.to_string()))?);
    }
    Ok(Some(answers))
}

/// `opsloop alerting check-config FILE…`.
pub fn alerting(command: crate::cli::AlertingCommand) -> ExitCode {
    let crate::cli::AlertingCommand::CheckConfig { files } = command;
    let mut code = ExitCode::SUCCESS;
    for file in files {
        match opsloop_alert::config::load_file(&file) {
            Ok(config) => output::status(&format!(
                "{}: valid ({} receivers, {} inhibit rules)",
                file.display(),
                config.receivers.len(),
                config.inhibit_rules.len()
            )),
            Err(error) => {
                output::error(&error.to_string());
                code = ExitCode::from(2);
            }
        }
    }
    code
}
