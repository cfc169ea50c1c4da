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
