//! One module per command group.

mod admin;
mod agent;
mod checks;
mod deploy;
mod incident;
mod infra;
mod logs;
mod metrics;
mod pipeline;
mod project;
mod proxy;
mod run;
mod run_files;
mod run_printer;
mod scan;
pub mod serve;

use std::process::ExitCode;

use miette::IntoDiagnostic;

use crate::cli::{Cli, Command, ConfigCommand};
use crate::{config, output};

pub async fn run(cli: Cli) -> miette::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => {
            let resolved = config::resolve(&args, cli.log_format, cli.log_level.as_deref())?;
            serve::run(resolved).await
        }
        Command::Config { command: ConfigCommand::Show { serve, json } } => {
            let resolved = config::resolve(&serve, cli.log_format, cli.log_level.as_deref())?;
            let shown = resolved.shown();
            if json {
                output::json(&shown).map_err(|e| miette::miette!("{e:#}"))?;
            } else {
                print!("{}", toml::to_string_pretty(&shown).into_diagnostic()?);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Admin { command } => admin::run(command, cli.log_format, cli.log_level.as_deref()).await,
        Command::Project { client, command } => project::run(&client, command).await,
        Command::Pipeline { client, command } => pipeline::run(&client, command).await,
        Command::Deploy { client, args } => deploy::deploy(&client, args).await,
        Command::Rollback { client, args } => deploy::rollback(&client, args).await,
        Command::Deployments { client, args } => deploy::list(&client, args).await,
        Command::Incident { client, command } => Ok(incident::run(&client, command).await),
        Command::Infra { client, command } => Ok(infra::run(&client, command).await),
        Command::Check { client, command } => Ok(checks::remote(&client, command).await),
        Command::Alerting { command } => Ok(incident::alerting(command)),
        Command::Oncall { client, schedule, at, config, check, json } => {
            Ok(incident::oncall(&client, schedule.as_deref(), at.as_deref(), config.as_deref(), check, json).await)
        }
        Command::Approve { client, deployment, project, json } => {
            deploy::approve(&client, deployment, project, json).await
        }
        Command::Stop { client, service, environment, project, json } => {
            deploy::stop(&client, service, environment, project, json).await
        }
        Command::Environments { client, command } => deploy::environments(&client, command).await,
        Command::Job { client, command } => pipeline::job(&client, command).await,
        Command::Hook { client, command } => pipeline::hook(&client, command).await,
        Command::Run(args) => Ok(run::run(args).await),
        Command::Agent(args) => Ok(agent::run(args).await),
        Command::Lint(args) => Ok(run::lint(args)),
        Command::Query { client, expr, time, json } => Ok(metrics::query(&client, &expr, time.as_deref(), json).await),
        Command::QueryRange { client, expr, start, end, step, json } => {
            Ok(metrics::query_range(&client, &expr, start.as_deref(), end.as_deref(), step.as_deref(), json).await)
        }
        Command::Logs { client, query, since, limit, json } => {
            Ok(logs::query(&client, &query, &since, limit, json).await)
        }
        Command::Metrics { command } => Ok(metrics::check(command)),
        Command::Checks { command } => Ok(checks::run(command).await),
        Command::Proxy(args) => Ok(proxy::run(args).await),
        Command::Scan { command } => Ok(scan::scan(command)),
        Command::Audit(args) => Ok(scan::audit(args)),
        Command::Sbom(args) => Ok(scan::sbom(args)),
        // Handled in `main` before the runtime starts; here only for completeness.
        Command::ReapInstances { server, releases } => Ok(serve::reap_instances(server, &releases)),
    }
}

/// Prints an operational error plainly and returns the failure exit code.
pub fn fail(error: &anyhow::Error) -> ExitCode {
    output::error(&format!("{error:#}"));
    ExitCode::FAILURE
}
