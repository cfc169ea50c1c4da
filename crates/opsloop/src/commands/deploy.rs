//! `opsloop deploy`, `opsloop rollback` and `opsloop deployments`: deployments on a running
//! server, through its API.

use std::process::ExitCode;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use super::fail;
use crate::cli::{ClientArgs, DeployArgs, DeploymentsArgs, EnvironmentsCommand, ProjectArg, RollbackArgs};
use crate::client::ApiClient;
use crate::output;

pub async fn deploy(client: &ClientArgs, args: DeployArgs) -> miette::Result<ExitCode> {
    let result = async {
        let client = ApiClient::new(client)?;
        let project = args.project.resolve(&client).await?;
        let mut body = json!({ "service": args.service, "environment": args.environment });
        if let Some(version) = &args.version {
            body["version"] = json!(version);
        }
        if let Some(strategy) = &args.strategy {
            body["strategy"] = json!(strategy);
        }
        let created: Value = client
            .call(Method::POST, &["projects", &project, "deployments"], Some(&body))
            .await?
            .ok_or_else(|| anyhow::anyhow!("the server sent no deployment"))?;
        follow(&client, &project, created, args.wait, args.json).await
    }
    .await;
    Ok(result.unwrap_or_else(|error| fail(&error)))
}

pub async fn rollback(client: &ClientArgs, args: RollbackArgs) -> miette::Result<ExitCode> {
    let result = async {
        let client = ApiClient::new(client)?;
        let project = args.project.resolve(&client).await?;
        let mut body = json!({ "service": args.service, "environment": args.environment });
        if let Some(to) = &args.to {
            body["to"] = json!(to);
        }
        let created: Value = client
            .call(Method::POST, &["projects", &project, "rollbacks"], Some(&body))
            .await?
            .ok_or_else(|| anyhow::anyhow!("the server sent no deployment"))?;
        follow(&client, &project, created, args.wait, args.json).await
    }
    .await;
    Ok(result.unwrap_or_else(|error| fail(&error)))
}

fn finished(status: &str) -> bool {
    matches!(status, "success" | "failed" | "rolled_back")
}

/// Prints the queued deployment, or (with `wait`) its steps as they happen and its end.
async fn follow(client: &ApiClient, project: &str, created: Value, wait: bool, json: bool) -> anyhow::Result<ExitCode> {
    let id = created["id"].as_i64().unwrap_or_default();
    let what = format!(
        "{} {} to {}",
        created["service"].as_str().unwrap_or_default(),
        created["version"].as_str().unwrap_or_default(),
        created["environment"].as_str().unwrap_or_default()
    );
    if !wait {
        if json {
            output::json(&created)?;
        } else {
            println!("Deployment #{id} queued: {what} ({}).", created["strategy"].as_str().unwrap_or_default());
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !json {
        output::note(&format!("deployment #{id}: {what}; following it"));
    }
    let mut shown = 0;
    let mut told_waiting = false;
    let detail = loop {
        let detail: Value = client
            .call::<Value, _>(Method::GET, &["projects", project, "deployments", &id.to_string()], None)
            .await?
            .unwrap_or_default();
        let steps = detail["steps"].as_array().cloned().unwrap_or_default();
        if !json {
            for step in steps.iter().skip(shown) {
                let seconds = step["at_ms"].as_f64().unwrap_or_default() / 1000.0;
                output::status(&format!("{seconds:>7.1}s  {}", step["text"].as_str().unwrap_or_default()));
            }
        }
        shown = shown.max(steps.len());
        if detail["status"] == "waiting_approval" && !told_waiting && !json {
            output::status(&format!(
                "waiting for approval: `opsloop approve {id} --project {project}` by someone else, or the button on its page"
            ));
            told_waiting = true;
        }
        if finished(detail["status"].as_str().unwrap_or_default()) {
            break detail;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let status = detail["status"].as_str().unwrap_or_default().to_owned();
    if json {
        output::json(&detail)?;
    } else {
        for figures in detail["figures"].as_array().into_iter().flatten() {
            let p99 = figures["p99_ms"].as_f64().map_or_else(|| "-".to_owned(), |ms| format!("{ms:.1} ms"));
            println!(
                "  {:<24} {:>7} requests {:>5} errors  p99 {p99}",
                figures["version"].as_str().unwrap_or_default(),
                figures["requests"],
                figures["errors"]
            );
        }
        match (status.as_str(), detail["reason"].as_str()) {
            ("success", _) => println!("Deployment #{id}: success — {what}"),
            (other, Some(reason)) => {
                output::error(reason);
                println!("Deployment #{id}: {other}");
            }
            (other, None) => println!("Deployment #{id}: {other}"),
        }
    }
    Ok(if status == "success" { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

pub async fn list(client: &ClientArgs, args: DeploymentsArgs) -> miette::Result<ExitCode> {
    let result = async {
        let client = ApiClient::new(client)?;
        let project = args.project.resolve(&client).await?;
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        query.append_pair("limit", &args.limit.clamp(1, 500).to_string());
        if let Some(service) = &args.service {
            query.append_pair("service", service);
        }
        if let Some(environment) = &args.environment {
            query.append_pair("environment", environment);
        }
        let deployments: Vec<Value> =
            client.get_with_query(&["projects", &project, "deployments"], &query.finish()).await?.unwrap_or_default();
        if args.json {
            output::json(&deployments)?;
            return Ok(ExitCode::SUCCESS);
        }
        let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
        let rows = deployments
            .iter()
            .map(|d| {
                vec![
                    d["id"].to_string(),
                    text(&d["environment"]),
                    text(&d["service"]),
                    text(&d["version"]),
                    text(&d["strategy"]),
                    text(&d["status"]),
                    text(&d["triggered_by"]),
                    text(&d["created_at"]),
                ]
            })
            .collect();
        output::table(&["ID", "ENVIRONMENT", "SERVICE", "VERSION", "STRATEGY", "STATUS", "BY", "CREATED"], rows);
        Ok::<_, anyhow::Error>(ExitCode::SUCCESS)
    }
    .await;
    Ok(result.unwrap_or_else(|error| fail(&error)))
}

pub async fn environments(client: &ClientArgs, command: EnvironmentsCommand) -> miette::Result<ExitCode> {
    let result = async {
        let client = ApiClient::new(client)?;
        let text = |value: &Value| value.as_str().unwrap_or_default().to_owned();
        match command {
            EnvironmentsCommand::List { project, json } => {
                let project = project.resolve(&client).await?;
                let serving: Vec<Value> = client
                    .call::<Value, _>(Method::GET, &["projects", &project, "environments"], None)
                    .await?
                    .unwrap_or_default();
                if json {
                    output::json(&serving)?;
                } else {
                    let rows = serving
                        .iter()
                        .map(|s| {
                            vec![
                                text(&s["environment"]),
                                text(&s["service"]),
                                text(&s["version"]),
                                format!("{}/{}", s["healthy"], s["instances"]),
                                text(&s["since"]),
                            ]
                        })
                        .collect();
                    output::table(&["ENVIRONMENT", "SERVICE", "VERSION", "HEALTHY", "SINCE"], rows);
                }
            }
            EnvironmentsCommand::Plan { project, json } => {
                let project = project.resolve(&client).await?;
                let plan: Value = client
                    .call::<Value, _>(Method::GET, &["projects", &project, "environments", "plan"], None)
                    .await?
                    .unwrap_or_default();
                show_plan(&plan, json, false)?;
            }
            EnvironmentsCommand::Apply { project, json } => {
                let project = project.resolve(&client).await?;
                let plan: Value = client
                    .call::<Value, _>(Method::POST, &["projects", &project, "environments", "apply"], None)
                    .await?
                    .unwrap_or_default();
                show_plan(&plan, json, true)?;
            }
        }
        Ok::<_, anyhow::Error>(ExitCode::SUCCESS)
    }
    .await;
    Ok(result.unwrap_or_else(|error| fail(&error)))
}

/// A plan as Terraform shows one: `+` created, `~` changed, `-` removed.
fn show_plan(plan: &Value, json: bool, applied: bool) -> anyhow::Result<()> {
    if json {
        return output::json(plan);
    }
    let commit = plan["commit"].as_str().unwrap_or_default();
    let changes = plan["changes"].as_array().cloned().unwrap_or_default();
    if changes.is_empty() {
        println!("No changes: opsloop.yml at {} is what is applied.", &commit[..commit.len().min(12)]);
        return Ok(());
    }
    for change in &changes {
        let sign = match change["action"].as_str() {
            Some("create") => "+",
            Some("remove") => "-",
            _ => "~",
        };
        let detail = change["detail"].as_str().unwrap_or_default();
        println!(
            "{sign} {} {}{}",
            change["kind"].as_str().unwrap_or_default(),
            change["name"].as_str().unwrap_or_default(),
            if detail.is_empty() { String::new() } else { format!("  ({detail})") }
        );
    }
    let count = |action: &str| changes.iter().filter(|c| c["action"] == action).count();
    println!(
        "{}: {} to create, {} to change, {} to remove (opsloop.yml at {}).",
        if applied { "Applied" } else { "Plan" },
        count("create"),
        count("change"),
        count("remove"),
        &commit[..commit.len().min(12)]
    );
    Ok(())
}

pub async fn approve(
    client: &ClientArgs,
    deployment: i64,
    project: ProjectArg,
    json: bool,
) -> miette::Result<ExitCode> {
    let result = async {
        let client = ApiClient::new(client)?;
        let project = project.resolve(&client).await?;
        let approved: Value = client
            .call::<Value, _>(
                Method::POST,
                &["projects", &project, "deployments", &deployment.to_string(), "approve"],
                None,
            )
            .await?
            .unwrap_or_default();
        if json {
            output::json(&approved)?;
        } else {
            match approved["status"].as_str() {
                Some("waiting_approval") => println!("Approved; deployment #{deployment} waits for more approvals."),
                _ => println!("Approved; deployment #{deployment} runs."),
            }
        }
        Ok::<_, anyhow::Error>(ExitCode::SUCCESS)
    }
    .await;
    Ok(result.unwrap_or_else(|error| fail(&error)))
}

pub async fn stop(
    client: &ClientArgs,
    service: Option<String>,
    environment: String,
    project: ProjectArg,
    json: bool,
) -> miette::Result<ExitCode> {
    let result = async {
        let client = ApiClient::new(client)?;
        let project = project.resolve(&client).await?;
        let body = json!({ "service": service });
        let stopped: Value = client
            .call(Method::POST, &["projects", &project, "environments", &environment, "stop"], Some(&body))
            .await?
            .unwrap_or_default();
        if json {
            output::json(&stopped)?;
        } else if let Some(job) = stopped["on_stop_job"].as_i64() {
            println!("`{environment}` is being stopped by its on_stop job {job} (`opsloop job log {job}`).");
        } else {
            let services: Vec<&str> =
                stopped["services"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
            if services.is_empty() {
                println!("Nothing ran in `{environment}`.");
            } else {
                println!("Stopped in `{environment}`: {}.", services.join(", "));
            }
        }
        Ok::<_, anyhow::Error>(ExitCode::SUCCESS)
    }
    .await;
    Ok(result.unwrap_or_else(|error| fail(&error)))
}
