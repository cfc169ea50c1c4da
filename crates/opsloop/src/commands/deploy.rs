//! `opsloop deploy`, `opsloop rollback` and `opsloop deployments`: deployments on a running
//! server, through its API.

use std::process::ExitCode;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use super::fail;
use crate::cli::{ClientArgs, DeployArgs, DeploymentsArgs, RollbackArgs};
use crate::client::ApiClient;
use crate::output;

pub async fn deploy(client: &ClientArgs, args: DeployArgs) -> miette::Result<ExitCode> {
    let result = async {
        let client = ApiClient::new(client)?;
        let project = args.project.resolve()?;
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
        let project = args.project.resolve()?;
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
        let project = args.project.resolve()?;
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
