//! `opsloop admin`: users and tokens, straight in the database, so the first token can be
//! made before any exists and automation works whether or not the server runs.

use std::io::Read;
use std::process::ExitCode;

use anyhow::{Context, anyhow};
use opsloop_core::Role;
use opsloop_store::{Actor, PageRequest, Store};
use serde::Serialize;

use super::fail;
use crate::cli::{
    AdminAgentCommand, AdminCommand, AdminTokenCommand, AdminUserCommand, ConfigArgs, LogFormatArg, ServeArgs,
};
use crate::{config, output};

/// Changes made from the command line are audited as this actor.
const CLI_ACTOR: Actor<'static> = Actor { name: "cli", source_ip: "local" };

pub async fn run(
    command: AdminCommand,
    log_format: Option<LogFormatArg>,
    log_level: Option<&str>,
) -> miette::Result<ExitCode> {
    let config_args = match &command {
        AdminCommand::User {
            command: AdminUserCommand::Create { config, .. } | AdminUserCommand::List { config, .. },
        }
        | AdminCommand::Token { command: AdminTokenCommand::Create { config, .. } }
        | AdminCommand::Agent {
            command: AdminAgentCommand::Create { config, .. } | AdminAgentCommand::List { config, .. },
        } => config.clone(),
    };
    let store = open(config_args, log_format, log_level).await?;
    let result = match command {
        AdminCommand::User { command } => user(&store, command).await,
        AdminCommand::Token { command } => token(&store, command).await,
        AdminCommand::Agent { command } => agent(&store, command).await,
    };
    store.close().await;
    Ok(result.unwrap_or_else(|error| fail(&error)))
}

async fn open(args: ConfigArgs, log_format: Option<LogFormatArg>, log_level: Option<&str>) -> miette::Result<Store> {
    let serve = ServeArgs { config: args, ..ServeArgs::default() };
    let resolved = config::resolve(&serve, log_format, Some(log_level.unwrap_or("warn")))?;
    super::serve::init_logging(resolved.log_format, &resolved.log_level);
    opsloop_server::open_store(&resolved.server).await.map_err(|error| miette::miette!("{error}"))
}

#[derive(Serialize)]
struct UserOut {
    username: String,
    admin: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    password: Option<String>,
}

async fn user(store: &Store, command: AdminUserCommand) -> anyhow::Result<ExitCode> {
    match command {
        AdminUserCommand::Create { username, admin, password_stdin, json, .. } => {
            let password = if password_stdin {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text).context("reading the password from stdin")?;
                Some(text.trim_end_matches(['\r', '\n']).to_owned())
            } else {
                None
            };
            let (user, generated) =
                opsloop_server::accounts::create_user(store, &username, password.as_deref(), admin, CLI_ACTOR)
                    .await
                    .map_err(|e| anyhow!(e.to_string()))?;
            if json {
                output::json(&UserOut { username: user.username, admin: user.is_admin, password: generated })?;
            } else if let Some(password) = generated {
                println!("Created user `{}`. One-time password (shown only now):\n\n    {password}\n", user.username);
            } else {
                println!("Created user `{}`.", user.username);
            }
        }
        AdminUserCommand::List { json, .. } => {
            let mut users = Vec::new();
            let mut page = PageRequest::first(PageRequest::MAX_LIMIT);
            loop {
                let batch = store.list_users(&page).await?;
                users.extend(batch.items);
                match batch.next_cursor {
                    Some(cursor) => page.after = Some(cursor),
                    None => break,
                }
            }
            if json {
                let out: Vec<UserOut> = users
                    .into_iter()
                    .map(|u| UserOut { username: u.username, admin: u.is_admin, password: None })
                    .collect();
                output::json(&out)?;
            } else {
                let rows = users
                    .into_iter()
                    .map(|u| vec![u.username, if u.is_admin { "admin".into() } else { String::new() }])
                    .collect();
                output::table(&["username", "role"], rows);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct TokenOut {
    token: String,
    id: i64,
    name: String,
    role: String,
    user: String,
    expires_at: Option<String>,
}

async fn token(store: &Store, command: AdminTokenCommand) -> anyhow::Result<ExitCode> {
    let AdminTokenCommand::Create { name, role, user, expires_in_days, json, .. } = command;
    let role: Role = role.parse()?;
    let owner = store
        .user_by_username(&user)
        .await?
        .ok_or_else(|| anyhow!("no user `{user}`; create it with `opsloop admin user create {user}`"))?;
    let (secret, token) = opsloop_server::accounts::issue_token(store, &owner, &name, role, expires_in_days, CLI_ACTOR)
        .await
        .map_err(|e| anyhow!(e.to_string()))?;
    if json {
        output::json(&TokenOut {
            token: secret,
            id: token.id,
            name: token.name,
            role: token.role.to_string(),
            user: owner.username,
            expires_at: token.expires_at.map(opsloop_server::views::rfc3339),
        })?;
    } else {
        println!("{secret}");
    }
    Ok(ExitCode::SUCCESS)
}

async fn agent(store: &Store, command: AdminAgentCommand) -> anyhow::Result<ExitCode> {
    match command {
        AdminAgentCommand::Create { name, json, .. } => {
            let (token, agent) = opsloop_server::agents::service::issue_agent_token(store, &name, CLI_ACTOR)
                .await
                .map_err(|e| anyhow!(e.to_string()))?;
            if json {
                output::json(&serde_json::json!({ "token": token, "id": agent.id, "name": agent.name }))?;
            } else {
                println!("{token}");
            }
        }
        AdminAgentCommand::List { json, .. } => {
            let now = store.now_ms();
            let agents: Vec<opsloop_server::api::agents::AgentView> = store
                .list_agents()
                .await?
                .into_iter()
                .map(|agent| opsloop_server::api::agents::AgentView::new(agent, now))
                .collect();
            if json {
                output::json(&agents)?;
            } else {
                let rows = agents
                    .into_iter()
                    .map(|a| {
                        let state = if a.revoked {
                            "revoked"
                        } else if a.online {
                            "online"
                        } else {
                            "offline"
                        };
                        vec![
                            a.name,
                            state.to_owned(),
                            a.tags.join(","),
                            a.running_jobs.to_string(),
                            a.last_seen_at.unwrap_or_else(|| "never".to_owned()),
                        ]
                    })
                    .collect();
                output::table(&["NAME", "STATE", "TAGS", "RUNNING", "LAST SEEN"], rows);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
