//! `opsloop project …`: projects on a running server, through its REST API.

use std::process::ExitCode;

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::fail;
use crate::cli::{ClientArgs, MemberCommand, ProjectCommand};
use crate::client::ApiClient;
use crate::output;

#[derive(Debug, Deserialize, Serialize)]
struct ProjectOut {
    name: String,
    description: String,
    repo_url: String,
    default_branch: String,
    pipeline_file: String,
    created_at: String,
    updated_at: String,
}

#[derive(Debug, Deserialize, Serialize)]
struct PageOut<T> {
    items: Vec<T>,
    next_cursor: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
struct MemberOut {
    username: String,
    role: String,
    added_at: String,
}

pub async fn run(args: &ClientArgs, command: ProjectCommand) -> miette::Result<ExitCode> {
    let result = async {
        let client = ApiClient::new(args)?;
        execute(&client, command).await
    }
    .await;
    Ok(result.unwrap_or_else(|error| fail(&error)))
}

fn print_project(project: &ProjectOut, as_json: bool) -> anyhow::Result<()> {
    if as_json {
        return output::json(project);
    }
    println!("name:           {}", project.name);
    if !project.description.is_empty() {
        println!("description:    {}", project.description);
    }
    println!("repository:     {}", project.repo_url);
    println!("default branch: {}", project.default_branch);
    println!("pipeline file:  {}", project.pipeline_file);
    println!("created:        {}", project.created_at);
    println!("updated:        {}", project.updated_at);
    Ok(())
}

async fn execute(client: &ApiClient, command: ProjectCommand) -> anyhow::Result<ExitCode> {
    match command {
        ProjectCommand::List { json } => {
            let mut projects: Vec<ProjectOut> = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let query = match &after {
                    Some(cursor) => format!("projects?limit=500&after={}", urlencode(cursor)),
                    None => "projects?limit=500".to_owned(),
                };
                let page: PageOut<ProjectOut> = list_page(client, &query).await?;
                projects.extend(page.items);
                match page.next_cursor {
                    Some(cursor) => after = Some(cursor),
                    None => break,
                }
            }
            if json {
                output::json(&projects)?;
            } else if projects.is_empty() {
                output::note("no projects yet; create one with `opsloop project create NAME --repo PATH_OR_URL`");
            } else {
                let rows = projects.into_iter().map(|p| vec![p.name, p.repo_url, p.default_branch]).collect();
                output::table(&["name", "repository", "branch"], rows);
            }
        }
        ProjectCommand::Show { name, json } => {
            let project: Option<ProjectOut> = client.call::<Value, _>(Method::GET, &["projects", &name], None).await?;
            if let Some(project) = project {
                print_project(&project, json)?;
            }
        }
        ProjectCommand::Create { name, repo, description, default_branch, pipeline_file, json } => {
            let mut body = json!({ "name": name, "repo_url": repo });
            if let Some(description) = description {
                body["description"] = json!(description);
            }
            if let Some(branch) = default_branch {
                body["default_branch"] = json!(branch);
            }
            if let Some(file) = pipeline_file {
                body["pipeline_file"] = json!(file);
            }
            let project: Option<ProjectOut> = client.call(Method::POST, &["projects"], Some(&body)).await?;
            if let Some(project) = project {
                if json {
                    output::json(&project)?;
                } else {
                    println!("Created project `{}`.", project.name);
                }
            }
        }
        ProjectCommand::Update { name, repo, description, default_branch, pipeline_file, json } => {
            let mut body = serde_json::Map::new();
            for (key, value) in [
                ("repo_url", repo),
                ("description", description),
                ("default_branch", default_branch),
                ("pipeline_file", pipeline_file),
            ] {
                if let Some(value) = value {
                    body.insert(key.to_owned(), Value::String(value));
                }
            }
            if body.is_empty() {
                anyhow::bail!("nothing to change: pass --repo, --description, --default-branch or --pipeline-file");
            }
            let project: Option<ProjectOut> =
                client.call(Method::PATCH, &["projects", &name], Some(&Value::Object(body))).await?;
            if let Some(project) = project {
                print_project(&project, json)?;
            }
        }
        ProjectCommand::Delete { name, yes } => {
            if !yes {
                anyhow::bail!("deleting `{name}` cannot be undone; add --yes to confirm");
            }
            client.call::<Value, Value>(Method::DELETE, &["projects", &name], None).await?;
            println!("Deleted project `{name}`.");
        }
        ProjectCommand::Member { command } => member(client, command).await?,
    }
    Ok(ExitCode::SUCCESS)
}

async fn member(client: &ApiClient, command: MemberCommand) -> anyhow::Result<()> {
    match command {
        MemberCommand::List { project, json } => {
            let members: Vec<MemberOut> = client
                .call::<Value, _>(Method::GET, &["projects", &project, "members"], None)
                .await?
                .unwrap_or_default();
            if json {
                output::json(&members)?;
            } else {
                output::table(
                    &["user", "role", "added"],
                    members.into_iter().map(|m| vec![m.username, m.role, m.added_at]).collect(),
                );
            }
        }
        MemberCommand::Add { project, username, role } => {
            let body = json!({ "role": role });
            client.call::<_, Value>(Method::PUT, &["projects", &project, "members", &username], Some(&body)).await?;
            println!("`{username}` is now {role} of `{project}`.");
        }
        MemberCommand::Remove { project, username } => {
            client.call::<Value, Value>(Method::DELETE, &["projects", &project, "members", &username], None).await?;
            println!("Removed `{username}` from `{project}`.");
        }
    }
    Ok(())
}

/// Lists take a query string, which `ApiClient::call`'s path segments would escape.
async fn list_page(client: &ApiClient, path_and_query: &str) -> anyhow::Result<PageOut<ProjectOut>> {
    let (path, query) = path_and_query.split_once('?').unwrap_or((path_and_query, ""));
    client.get_with_query(&[path], query).await?.ok_or_else(|| anyhow::anyhow!("the server sent no project list"))
}

fn urlencode(text: &str) -> String {
    url::form_urlencoded::byte_serialize(text.as_bytes()).collect()
}
