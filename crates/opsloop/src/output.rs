//! Terminal output: data to stdout, messages to stderr, colours only where they help and
//! never when NO_COLOR is set, --no-color is given, or the stream is not a terminal.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};

use owo_colors::OwoColorize;

static COLOR: AtomicBool = AtomicBool::new(false);

pub fn init_color(no_color_flag: bool) {
    let no_color_env = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    COLOR.store(!no_color_flag && !no_color_env && std::io::stderr().is_terminal(), Ordering::Relaxed);
}

/// What `println!` and `print!` do in this crate: write to stdout, and exit quietly (status 0,
/// nothing on stderr) when its reader has gone, as `head` leaves it. Other write errors end the
/// process with status 1 and a message, rather than a panic.
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(error) = stdout.write_fmt(args).and_then(|()| stdout.flush()) {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {error}");
        std::process::exit(1);
    }
}

pub fn color() -> bool {
    COLOR.load(Ordering::Relaxed)
}

pub fn error(message: &str) {
    if color() {
        eprintln!("{} {message}", "error:".red().bold());
    } else {
        eprintln!("error: {message}");
    }
}

pub fn note(message: &str) {
    if color() {
        eprintln!("{} {message}", "note:".cyan().bold());
    } else {
        eprintln!("note: {message}");
    }
}

pub fn warn(message: &str) {
    if color() {
        eprintln!("{} {message}", "warning:".yellow().bold());
    } else {
        eprintln!("warning: {message}");
    }
}

/// A progress line of a long-running command (the agent), with the time.
pub fn status(message: &str) {
    let now = jiff::Zoned::now().strftime("%H:%M:%S");
    if color() {
        eprintln!("{} {message}", now.to_string().dimmed());
    } else {
        eprintln!("{now} {message}");
    }
}

/// Prints a value as pretty JSON on stdout.
pub fn json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

/// A table for people, on stdout.
pub fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut table = comfy_table::Table::new();
    table.load_preset(comfy_table::presets::NOTHING);
    table.set_header(header.iter().map(|h| h.to_uppercase()));
    for row in rows {
        table.add_row(row);
    }
    println!("{table}");
}
