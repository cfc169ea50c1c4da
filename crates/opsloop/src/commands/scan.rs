//! `opsloop scan secrets`, `opsloop audit` and `opsloop sbom`: offline commands over
//! opsloop-scan. Exit codes follow the scanners they replace: 0 clean, 1 findings, 2 bad input.

use std::path::Path;
use std::process::ExitCode;

use opsloop_scan::audit::{self, Database, IgnoreConfig, Severity};
use opsloop_scan::sbom as bom;
use opsloop_scan::secrets::{self, Baseline, Config, GitRange, IgnoreList, ScanOptions, Scanner};

use crate::cli::{
    AuditArgs, AuditFormatArg, SbomArgs, SbomFormatArg, ScanCommand, SecretsArgs, SecretsFormatArg, SeverityArg,
};
use crate::output;

const BAD_INPUT: u8 = 2;

fn bad(message: &str) -> ExitCode {
    output::error(message);
    ExitCode::from(BAD_INPUT)
}

pub fn scan(command: ScanCommand) -> ExitCode {
    match command {
        ScanCommand::Secrets(args) => match secrets_scan(&args) {
            Ok(code) => code,
            Err(e) => bad(&e.to_string()),
        },
    }
}

fn secrets_scan(args: &SecretsArgs) -> Result<ExitCode, secrets::SecretsError> {
    let stdin = args.path.as_os_str() == "-";
    let root = if stdin { Path::new(".") } else { args.path.as_path() };
    // Configuration files sit at the repository root; for a single file, beside it.
    let base = if root.is_file() { root.parent().unwrap_or(Path::new(".")) } else { root };
    let config = match &args.config {
        Some(file) => Config::load(file)?,
        None => Config::discover(base)?,
    };
    let ignore_path = args.ignore_file.clone().unwrap_or_else(|| base.join(".gitleaksignore"));
    let mut scanner = Scanner::new(config.detector()?)
        .with_ignore(IgnoreList::load(&ignore_path)?)
        .with_options(ScanOptions { max_file_size: args.max_target_megabytes << 20, threads: 0 });
    if let Some(b) = &args.baseline {
        scanner = scanner.with_baseline(Baseline::load(b)?);
    }
    let report = if stdin {
        scanner.scan_reader(std::io::stdin().lock())?
    } else if args.staged {
        scanner.scan_staged(root)?
    } else if args.git {
        let range = args.since.as_deref().map_or(GitRange::All, GitRange::parse);
        scanner.scan_git(root, &range)?
    } else {
        scanner.scan_dir(root)?
    };
    let format = match args.format {
        SecretsFormatArg::Table => secrets::Format::Table,
        SecretsFormatArg::Json => secrets::Format::Json,
        SecretsFormatArg::Sarif => secrets::Format::Sarif,
        SecretsFormatArg::Gitlab => secrets::Format::Gitlab,
    };
    let text = secrets::report::render(format, &report.findings, scanner.detector().rules());
    output::write_stdout(format_args!("{}{}", text, if text.ends_with('\n') { "" } else { "\n" }));
    let s = &report.stats;
    output::note(&format!(
        "scanned {} file(s), {} bytes{}{}; {} finding(s){}",
        s.files,
        s.bytes,
        if s.commits > 0 { format!(" in {} commit(s)", s.commits) } else { String::new() },
        if s.skipped_binary + s.skipped_large > 0 {
            format!(", skipped {} binary and {} large", s.skipped_binary, s.skipped_large)
        } else {
            String::new()
        },
        report.findings.len(),
        if s.suppressed > 0 { format!(", {} suppressed", s.suppressed) } else { String::new() },
    ));
    Ok(if report.findings.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

pub fn audit(args: AuditArgs) -> ExitCode {
    let inventory = match audit::inventory(&args.path) {
        Ok(i) => i,
        Err(e) => return bad(&e.to_string()),
    };
    let db = match Database::load(&args.db) {
        Ok(db) => db,
        Err(e) => return bad(&e.to_string()),
    };
    let base = if args.path.is_file() { args.path.parent().unwrap_or(Path::new(".")) } else { args.path.as_path() };
    let ignore_path = args.ignore_config.clone().unwrap_or_else(|| base.join("osv-scanner.toml"));
    let ignore = match IgnoreConfig::load(&ignore_path) {
        Ok(i) => i,
        Err(e) => return bad(&e.to_string()),
    };
    let report = audit::audit(&inventory, &db, &ignore, jiff::Timestamp::now());
    let format = match args.format {
        AuditFormatArg::Table => audit::Format::Table,
        AuditFormatArg::Json => audit::Format::Json,
        AuditFormatArg::Sarif => audit::Format::Sarif,
    };
    let text = audit::render(format, &report);
    output::write_stdout(format_args!("{}{}", text, if text.ends_with('\n') { "" } else { "\n" }));
    let threshold = match args.fail_on {
        SeverityArg::Low => Severity::Low,
        SeverityArg::Medium => Severity::Medium,
        SeverityArg::High => Severity::High,
        SeverityArg::Critical => Severity::Critical,
    };
    if report.fails(threshold) { ExitCode::FAILURE } else { ExitCode::SUCCESS }
}

pub fn sbom(args: SbomArgs) -> ExitCode {
    let inventory = match audit::inventory(&args.path) {
        Ok(i) => i,
        Err(e) => return bad(&e.to_string()),
    };
    let name = args.name.clone().unwrap_or_else(|| {
        std::fs::canonicalize(&args.path)
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "project".to_owned())
    });
    let format = match args.format {
        SbomFormatArg::Cyclonedx => bom::Format::CycloneDx,
        SbomFormatArg::Spdx => bom::Format::Spdx,
    };
    let created = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    output::write_stdout(format_args!("{}\n", bom::render(format, &name, &inventory, &created)));
    ExitCode::SUCCESS
}
