//! `opsloop serve`.

use std::process::ExitCode;

use opsloop_server::LogFormat;
use tracing_subscriber::EnvFilter;

use crate::config::Resolved;
use crate::output;

pub fn init_logging(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Human => builder.with_ansi(output::color()).try_init(),
    };
}

pub async fn run(resolved: Resolved) -> miette::Result<ExitCode> {
    init_logging(resolved.log_format, &resolved.log_level);
    let _ = opsloop_server::metrics::BUILD_COMMIT.set(env!("OPSLOOP_BUILD_COMMIT").to_owned());
    let config = resolved.server.clone();
    // An invalid on-call or alerting file stops the start with every problem, like a bad
    // config file.
    if let Some(path) = &config.alerting.oncall_file
        && let Err(error) = opsloop_alert::oncall::config::load_file(path)
    {
        output::error(&error.to_string());
        return Ok(ExitCode::from(2));
    }
    if let Some(path) = &config.checks.config_file
        && let Err(error) = opsloop_checks::config::load_file(path)
    {
        output::error(&error.to_string());
        return Ok(ExitCode::from(2));
    }
    if let Some(path) = &config.alerting.config_file
        && let Err(error) = opsloop_alert::config::load_file(path)
    {
        output::error(&error.to_string());
        return Ok(ExitCode::from(2));
    }
    start_reaper(&config.data_dir.join("releases"));
    let demo = config.demo;
    let result = opsloop_server::serve(config, |report| {
        if let Some(password) = &report.initial_admin_password {
            println!("First start: created the user `admin` with the one-time password:\n\n    {password}\n");
            println!("It is shown only now. Sign in and choose a new one.");
        }
        if let Some(proxy) = report.proxy_address {
            println!("opsloop proxy listening on http://{proxy}");
        }
        println!("opsloop listening on http://{}", report.address);
        if demo {
            println!("Demo project registered: http://{}/projects/demo", report.address);
        }
    })
    .await;
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(error) => {
            output::error(&error.to_string());
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Starts `opsloop reap-instances` beside the server, so that its service instances die with
/// it even on `kill -9` (which gives the server no chance to stop them). Its own process
/// group: a Ctrl-C meant for the server does not end it first.
fn start_reaper(releases: &std::path::Path) {
    use std::os::unix::process::CommandExt;
    let started = std::env::current_exe().and_then(|exe| {
        std::process::Command::new(exe)
            .arg("reap-instances")
            .arg("--server")
            .arg(std::process::id().to_string())
            .arg("--releases")
            .arg(releases)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .process_group(0)
            .spawn()
    });
    if let Err(error) = started {
        tracing::warn!(%error, "cannot start the instance reaper: after a kill -9, instances run until the next start");
    }
}

/// `opsloop reap-instances`: polls until its parent (the server) has gone, then kills the
/// process groups of the instances it left. A clean stop has already stopped them; then
/// there is nothing to do.
pub fn reap_instances(server: u32, releases: &std::path::Path) -> ExitCode {
    // Until the server goes, this process's parent is the server; afterwards init (or a
    // subreaper) adopts it. Looking four times a second costs nothing measurable.
    while std::os::unix::process::parent_id() == server {
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let killed = opsloop_runner::reap::kill_orphaned_groups("OPSLOOP_RELEASE_DIR", releases, &exe);
    if killed > 0 {
        eprintln!("opsloop: the server ({server}) has gone; stopped the {killed} service instance(s) it left running");
    }
    ExitCode::SUCCESS
}
