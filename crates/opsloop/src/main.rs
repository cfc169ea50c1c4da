//! `opsloop`: the one binary. Parses the command line, sets up logging, and runs the command.

// `println!` and `print!` for the whole crate: std's panic when stdout is a closed pipe
// (`opsloop pipeline list | head -1`); these end the process quietly instead, as a command
// whose reader has gone should. Defined before the modules so they see these, not std's.
macro_rules! println {
    () => { $crate::output::write_stdout(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::output::write_stdout(format_args!("{}\n", format_args!($($arg)*))) };
}
macro_rules! print {
    ($($arg:tt)*) => { $crate::output::write_stdout(format_args!($($arg)*)) };
}

mod cli;
mod client;
mod commands;
mod config;
mod output;

use std::process::ExitCode;

use clap::Parser;

/// mimalloc rather than the system allocator: the proxy allocates a few small objects per
/// request (headers, futures, channel nodes), and glibc's malloc was a tenth of its
/// user-space time (`bench/proxy.py`). Built with `no_thp`: mimalloc otherwise asks for
/// transparent huge pages on its arenas, and every thread's first small allocation then made
/// 2 MiB resident (an idle server held 24 MB of huge pages for 8 MB of heap; `bench/foundation.py`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    output::init_color(cli.no_color);
    // The instance reaper lives as long as the server and only waits: no runtime, no threads.
    if let cli::Command::ReapInstances { server, releases } = &cli.command {
        return commands::serve::reap_instances(*server, releases);
    }
    // One TLS crypto provider for every client (reqwest, sqlx): ring, which builds without C toolchains of its own.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            output::error(&format!("cannot start the async runtime: {error}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(code) => code,
        Err(report) => {
            eprintln!("{report:?}");
            ExitCode::FAILURE
        }
    }
}
