//! `opsloop pipeline …` and `opsloop job …`: pipelines on a running server, through its API.

use std::process::ExitCode;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use super::fail;
use crate::cli::{ClientArgs, HookCommand, JobCommand, PipelineCommand};
use crate::client::ApiClient;
use crate::output;

pub async fn run(args: &ClientArgs, command: PipelineCommand) -> miette::Result<ExitCode> {
    let result = async {
        let client = ApiClient::new(args)?;
        execute(&client, command).await
    }
    .await;
    Ok(result.unwrap_or_else(|error| fail(&error)))
}

pub async fn job(args: &ClientArgs, command: JobCommand) -> miette::Result<ExitCode> {
    let result = async {
        let client = ApiClient::new(args)?;
        let (id, action, json) = match command {
            JobCommand::Log { id } => {
                let text = client.get_text(&["jobs", &id.to_string(), "log"]).await?;
                print!("{text}");
                return Ok(ExitCode::SUCCESS);
            }
            JobCommand::Retry { id, json } => (id, "retry", json),
            JobCommand::Play { id, json } => (id, "play", json),
            JobCommand::Cancel { id, json } => (id, "cancel", json),
        };
        let job: Value =
            client.call(Method::POST, &["jobs", &id.to_string(), action], None::<&Value>).await?.unwrap_or_default();
        if json {
            crate::output::json(&job)?;
        } else {
            let done = match action {
                "retry" => "runs again",
                "play" => "started",
                _ => "is being canceled",
            };
            eprintln!("job {id} ({}) {done}", job["name"].as_str().unwrap_or("?"));
        }
        Ok::<_, anyhow::Error>(ExitCode::SUCCESS)
    }
    .await;
    Ok(result.unwrap_or_else(|error| fail(&error)))
}

/// `post-receive`: one pipeline per updated branch or tag, at the pushed commit.
pub async fn hook(args: &ClientArgs, command: HookCommand) -> miette::Result<ExitCode> {
    let HookCommand::PostReceive { project } = command;
    let result = async {
        let client = ApiClient::new(args)?;
        let mut input = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut input)?;
        for line in input.lines() {
            let mut parts = line.split_whitespace();
            let (Some(_old), Some(new), Some(git_ref)) = (parts.next(), parts.next(), parts.next()) else { continue };
            let name = git_ref.strip_prefix("refs/heads/").or_else(|| git_ref.strip_prefix("refs/tags/"));
            let Some(name) = name.filter(|_| !new.chars().all(|c| c == '0')) else { continue };
            let body = json!({ "ref": name, "sha": new, "source": "push" });
            let created: Value =
                client.call(Method::POST, &["projects", &project, "pipelines"], Some(&body)).await?.unwrap_or_default();
            eprintln!("opsloop: pipeline #{} started for {name}", created["id"]);
        }
        Ok::<_, anyhow::Error>(ExitCode::SUCCESS)
    }
    .await;
    Ok(result.unwrap_or_else(|error| fail(&error)))
}

fn finished(status: &str) -> bool {
    matches!(status, "success" | "failed" | "canceled" | "skipped")
}

async fn execute(client: &ApiClient, command: PipelineCommand) -> anyhow::Result<ExitCode> {
    match command {
        PipelineCommand::Run { project, git_ref, variable, wait, json } => {
            let mut variables = serde_json::Map::new();
            for pair in &variable {
                let (key, value) =
                    pair.split_once('=').ok_or_else(|| anyhow::anyhow!("--variable takes KEY=VALUE, not `{pair}`"))?;
                variables.insert(key.to_owned(), Value::String(value.to_owned()));
            }
            let mut body = json!({ "variables": variables });
            if let Some(git_ref) = git_ref {
                body["ref"] = json!(git_ref);
            }
            let created: Value = client
                .call(Method::POST, &["projects", &project, "pipelines"], Some(&body))
                .await?
                .ok_or_else(|| anyhow::anyhow!("the server sent no pipeline"))?;
            let id = created["id"].as_i64().unwrap_or_default();
            if !wait {
                if json {
                    output::json(&created)?;
                } else {
                    println!(
                        "Pipeline #{id} created for `{project}` at {}.",
                        created["ref"].as_str().unwrap_or_default()
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            output::note(&format!("pipeline #{id} started; waiting for it to finish"));
            let detail = loop {
                let detail: Value = client
                    .call::<Value, _>(Method::GET, &["projects", &project, "pipelines", &id.to_string()], None)
                    .await?
                    .unwrap_or_default();
                if finished(detail["status"].as_str().unwrap_or_default()) {
                    break detail;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            };
            let status = detail["status"].as_str().unwrap_or_default().to_owned();
            if json {
                output::json(&detail)?;
            } else {
                for job in detail["jobs"].as_array().into_iter().flatten() {
                    println!(
                        "{:<10} {} (job {})",
                        job["status"].as_str().unwrap_or_default(),
                        job["name"].as_str().unwrap_or_default(),
                        job["id"]
                    );
                }
                if let Some(error) = detail["error"].as_str() {
                    output::error(error);
                }
                println!("Pipeline #{id}: {status}");
            }
            Ok(if status == "success" { ExitCode::SUCCESS } else { ExitCode::FAILURE })
        }
        PipelineCommand::List { project, json } => {
            let page: Value =
                client.get_with_query(&["projects", &project, "pipelines"], "limit=100").await?.unwrap_or_default();
            let items = page["items"].as_array().cloned().unwrap_or_default();
            if json {
                output::json(&items)?;
            } else {
                let rows = items
                    .iter()
                    .map(|p| {
                        vec![
                            p["id"].to_string(),
                            p["status"].as_str().unwrap_or_default().to_owned(),
                            p["ref"].as_str().unwrap_or_default().to_owned(),
                            p["sha"].as_str().unwrap_or_default().chars().take(8).collect(),
                            p["source"].as_str().unwrap_or_default().to_owned(),
                            p["created_at"].as_str().unwrap_or_default().to_owned(),
                        ]
                    })
                    .collect();
                output::table(&["id", "status", "ref", "commit", "source", "created"], rows);
            }
            Ok(ExitCode::SUCCESS)
        }
        PipelineCommand::Cancel { project, id } => {
            client
                .call::<Value, Value>(
                    Method::POST,
                    &["projects", &project, "pipelines", &id.to_string(), "cancel"],
                    None,
                )
                .await?;
            println!("Pipeline #{id} is being canceled.");
            Ok(ExitCode::SUCCESS)
        }
        PipelineCommand::Show { project, id, json } => {
            let detail: Value = client
                .call::<Value, _>(Method::GET, &["projects", &project, "pipelines", &id.to_string()], None)
                .await?
                .unwrap_or_default();
            if json {
                output::json(&detail)?;
            } else {
                println!(
                    "Pipeline #{id} at {}: {}",
                    detail["ref"].as_str().unwrap_or_default(),
                    detail["status"].as_str().unwrap_or_default()
                );
                if let Some(error) = detail["error"].as_str() {
                    println!("  why: {error}");
                }
                for job in detail["jobs"].as_array().into_iter().flatten() {
                    println!(
                        "  {:<10} {} (job {})",
                        job["status"].as_str().unwrap_or_default(),
                        job["name"].as_str().unwrap_or_default(),
                        job["id"]
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}
