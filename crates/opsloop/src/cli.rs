//! The command line: what each command takes, with help that teaches.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("OPSLOOP_BUILD_COMMIT"), ")");

#[derive(Debug, Parser)]
#[command(
    name = "opsloop",
    version = VERSION,
    about = "One binary for the DevOps loop: pipelines, deployments, infrastructure, monitoring, alerting.",
    long_about = "One binary for the DevOps loop: pipelines, deployments, infrastructure, monitoring, alerting.\n\n\
        Start here:\n  opsloop serve --demo        start the server with a demo project (SQLite under ./opsloop-data)\n  \
        opsloop project list        list projects on a server (needs OPSLOOP_TOKEN)\n\n\
        Settings come from defaults < opsloop.toml (--config) < OPSLOOP_* variables < flags.",
    propagate_version = true
)]
pub struct Cli {
    /// How to write logs to stderr.
    #[arg(long, global = true, env = "OPSLOOP_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormatArg>,
    /// Log filter, e.g. `info`, `debug`, `opsloop_server=debug`; RUST_LOG also works.
    #[arg(long, global = true, env = "OPSLOOP_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Disable colours (NO_COLOR is also honoured).
    #[arg(long, global = true)]
    pub no_color: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormatArg {
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a .gitlab-ci.yml pipeline here, the way GitLab would (gitlab-ci-local's options).
    ///
    /// Examples:
    ///   opsloop run                      the whole pipeline
    ///   opsloop run test --needs         `test` and everything it needs
    ///   opsloop run --list               the jobs, their stages and when they run
    #[command(verbatim_doc_comment)]
    Run(RunArgs),
    /// Check a .gitlab-ci.yml: every problem at once, with file:line:column and a hint.
    Lint(LintArgs),
    /// Evaluate a PromQL expression at one instant on a running server.
    ///
    /// Examples:
    ///   opsloop query 'up'
    ///   opsloop query 'sum by (job) (rate(http_requests_total[5m]))' --time -1h
    ///   opsloop query 'up == 0' --json | jq '.data.result[].metric.instance'
    ///
    /// Exit 0 with a result (even an empty one), 2 for an invalid expression, 1 otherwise.
    #[command(verbatim_doc_comment)]
    Query {
        #[command(flatten)]
        client: ClientArgs,
        /// The PromQL expression.
        expr: String,
        /// When: `now` (default), `-5m` (relative), Unix seconds or RFC 3339.
        #[arg(long, allow_hyphen_values = true)]
        time: Option<String>,
        /// Print Prometheus's JSON answer as it is.
        #[arg(long)]
        json: bool,
    },
    /// Evaluate a PromQL expression over a time range on a running server.
    ///
    /// Example:
    ///   opsloop query-range 'rate(http_requests_total[5m])' --start -1h --step 1m
    #[command(verbatim_doc_comment)]
    QueryRange {
        #[command(flatten)]
        client: ClientArgs,
        /// The PromQL expression.
        expr: String,
        /// Start: `-1h` (default), Unix seconds or RFC 3339.
        #[arg(long, allow_hyphen_values = true)]
        start: Option<String>,
        /// End: `now` (default), `-5m`, Unix seconds or RFC 3339.
        #[arg(long, allow_hyphen_values = true)]
        end: Option<String>,
        /// Resolution: `15s`, `1m`, or seconds (default: the range / 250).
        #[arg(long)]
        step: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Run a LogQL query on a running server's logs (logcli's role): the newest matching lines
    /// of the range, printed oldest first; a metric query prints its series.
    ///
    /// Examples:
    ///   opsloop logs '{project="shop"} |= "error"' --since 30m
    ///   opsloop logs 'sum by (level) (count_over_time({project="shop"} | logfmt [5m]))'
    ///   opsloop logs '{stream="job", job="build"}' --limit 1000 --json | jq '.data.result'
    ///
    /// Exit 0 with a result (even an empty one), 2 for an invalid query, 1 otherwise.
    #[command(verbatim_doc_comment)]
    Logs {
        #[command(flatten)]
        client: ClientArgs,
        /// The LogQL query.
        query: String,
        /// How far back to look: `1h` (default), `30m`, `2d`.
        #[arg(long, default_value = "1h")]
        since: String,
        /// The most lines a log query prints (default 100).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print Loki's JSON answer as it is.
        #[arg(long)]
        json: bool,
    },
    /// Check Prometheus configuration and rule files offline (promtool's role).
    ///
    /// Examples:
    ///   opsloop metrics check-config prometheus.yml     the file and the rule files it names
    ///   opsloop metrics check-rules rules/*.yml
    ///
    /// Exit 0 when valid, 2 with every problem at file:line:column otherwise.
    #[command(verbatim_doc_comment)]
    Metrics {
        #[command(subcommand)]
        command: MetricsCommand,
    },
    /// Synthetic checks in Gatus's format (endpoints with conditions), run offline.
    ///
    /// Examples:
    ///   opsloop checks run config.yaml            every check once, ✓/✗ and why
    ///   opsloop checks run checks.yml --json      the results as JSON
    ///
    /// Exit 0 when every check passes, 1 when one fails, 2 when the file is invalid
    /// (every problem at file:line:column).
    #[command(verbatim_doc_comment)]
    Checks {
        #[command(subcommand)]
        command: ChecksCommand,
    },
    /// The checks and heartbeats a running server runs (`serve --checks-config FILE`).
    ///
    /// Examples:
    ///   opsloop check list                 every check's health, every heartbeat's state
    ///   opsloop check run _api-health      run one now and print what it saw
    #[command(verbatim_doc_comment)]
    Check {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: CheckCommand,
    },
    /// Scan for secrets offline (gitleaks' role): a directory, git history, staged changes or
    /// standard input.
    ///
    /// Examples:
    ///   opsloop scan secrets                        the current directory
    ///   opsloop scan secrets . --git --since main   commits on this branch since main
    ///   opsloop scan secrets --staged               what `git commit` would record (a pre-commit hook)
    ///   cat app.env | opsloop scan secrets -        standard input
    ///   opsloop scan secrets --format sarif > secrets.sarif
    ///
    /// Rules: .gitleaks.toml in PATH (or --config), else the built-in rules. Findings listed in
    /// .gitleaksignore (fingerprints), marked `gitleaks:allow` or present in --baseline are not
    /// reported. Exit 0 when nothing is found, 1 with findings, 2 on bad input.
    #[command(verbatim_doc_comment)]
    Scan {
        #[command(subcommand)]
        command: ScanCommand,
    },
    /// Audit lockfiles against an offline OSV database (osv-scanner's role).
    ///
    /// Examples:
    ///   opsloop audit --db osv/                     OSV JSON records (or an all.zip export)
    ///   opsloop audit app/ --db all.zip --fail-on high --format sarif
    ///
    /// Reads Cargo.lock, package-lock.json, yarn.lock, pnpm-lock.yaml, requirements*.txt,
    /// poetry.lock, Pipfile.lock, uv.lock, go.mod, Gemfile.lock, composer.lock, gradle.lockfile,
    /// packages.lock.json, pubspec.lock and mix.lock under PATH. osv-scanner.toml in PATH (or
    /// --ignore-config) lists [[IgnoredVulns]]. Exit 0 when nothing reaches --fail-on, 1 when
    /// something does, 2 on bad input.
    #[command(verbatim_doc_comment)]
    Audit(AuditArgs),
    /// Write a software bill of materials of the lockfiles under PATH.
    ///
    /// Examples:
    ///   opsloop sbom --format cyclonedx > bom.json
    ///   opsloop sbom app/ --format spdx --name app > app.spdx.json
    ///
    /// Exit 0, or 2 on bad input.
    #[command(verbatim_doc_comment)]
    Sbom(SbomArgs),
    /// Run the built-in reverse proxy alone, with fixed routes (deployments drive the same
    /// proxy and switch its routes live).
    ///
    /// Example:
    ///   opsloop proxy --listen 127.0.0.1:8000 --route /=127.0.0.1:9001,127.0.0.1:9002 --route api.example.com/=127.0.0.1:9100
    #[command(verbatim_doc_comment)]
    Proxy(ProxyArgs),
    /// Deploy a service of the project's opsloop.yml to an environment, on a running server.
    ///
    /// The server checks out VERSION (default: the default branch), starts the new release
    /// beside the old one, health-gates it, moves traffic by the strategy and watches its
    /// golden signals; a breach of the service's SLO sends traffic back on its own.
    ///
    /// Examples:
    ///   opsloop deploy web --env production --version v1.4.0 --wait
    ///   opsloop deploy web --env staging --strategy canary:10,50,100 --wait
    ///
    /// With --wait: exit 0 when the deployment succeeds, 1 when it fails or rolls back.
    /// In a pipeline job, the server and a job token are already in the environment.
    #[command(verbatim_doc_comment, disable_version_flag = true)]
    Deploy {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        args: DeployArgs,
    },
    /// Go back to an earlier release of a service in an environment (the one before the
    /// current, or --to VERSION). Instant when the old version is still kept warm.
    Rollback {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        args: RollbackArgs,
    },
    /// What runs where, and GitOps: the plan of the default branch's opsloop.yml, applied.
    ///
    /// Examples:
    ///   opsloop environments list --project shop
    ///   opsloop environments plan --project shop     created / changed / removed
    ///   opsloop environments apply --project shop    (a passing default-branch pipeline does it too)
    #[command(verbatim_doc_comment)]
    Environments {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: EnvironmentsCommand,
    },
    /// Stop a service (or every service) in an environment: instances stop, routes go.
    ///
    /// From a person, a whole environment that a pipeline deployed is stopped by playing its
    /// deploy job's `environment:on_stop` job; inside that job (its token), it stops here.
    ///
    /// Examples:
    ///   opsloop stop --env review-42 --project shop
    ///   opsloop stop web --env staging --project shop
    #[command(verbatim_doc_comment)]
    Stop {
        #[command(flatten)]
        client: ClientArgs,
        /// One service; every service of the environment when left out.
        service: Option<String>,
        #[arg(long = "env", value_name = "ENV", env = "CI_ENVIRONMENT_NAME")]
        environment: String,
        #[command(flatten)]
        project: ProjectArg,
        #[arg(long)]
        json: bool,
    },
    /// Approve a deployment that waits for approvals (an environment with `approvals: N`).
    Approve {
        #[command(flatten)]
        client: ClientArgs,
        /// The deployment's number (`opsloop deployments` lists them).
        deployment: i64,
        #[command(flatten)]
        project: ProjectArg,
        #[arg(long)]
        json: bool,
    },
    /// Incidents on a running server: list, show, acknowledge, resolve.
    ///
    /// Examples:
    ///   opsloop incident list --open
    ///   opsloop incident show 12
    ///   opsloop incident ack 12 --note "looking"
    ///   opsloop incident list --json | jq '.[] | select(.status == "triggered") | .id'
    #[command(verbatim_doc_comment)]
    Incident {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: IncidentCommand,
    },
    /// Infrastructure as code: Terraform states kept in a project.
    ///
    /// Example:
    ///   opsloop infra backend-config prod --project shop > backend.tf
    #[command(verbatim_doc_comment)]
    Infra {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: InfraCommand,
    },
    /// Check alertmanager.yml files offline (amtool check-config's role): every problem at
    /// file:line:column. Exit 0 when all are valid, 2 otherwise.
    ///
    /// Example: opsloop alerting check-config alertmanager.yml
    #[command(verbatim_doc_comment)]
    Alerting {
        #[command(subcommand)]
        command: AlertingCommand,
    },
    /// Who is on call: from a running server's on-call configuration, or from a file.
    ///
    /// Examples:
    ///   opsloop oncall                         every schedule, now
    ///   opsloop oncall primary --at 2026-03-29T03:00+02:00
    ///   opsloop oncall primary --config oncall.yml --at 2026-12-24T20:00 --json
    ///   opsloop oncall --config oncall.yml --check    validate the file (exit 2 when invalid)
    ///
    /// A time without an offset is read in the schedule's own time zone.
    #[command(verbatim_doc_comment)]
    Oncall {
        #[command(flatten)]
        client: ClientArgs,
        /// The schedule (all of them when omitted).
        schedule: Option<String>,
        /// When: RFC 3339 (`2026-03-28T09:00+01:00`), or a local date-time in the schedule's zone.
        #[arg(long)]
        at: Option<String>,
        /// Answer from this on-call file instead of asking a server.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Only validate `--config`: every problem at file:line:column.
        #[arg(long, requires = "config")]
        check: bool,
        /// Print JSON: {"schedule", "timezone", "at", "user", "since", "until"}.
        #[arg(long)]
        json: bool,
    },
    /// A service's deployments in an environment, newest first.
    Deployments {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        args: DeploymentsArgs,
    },
    /// Run the opsloop server: the API and web UI, CI pipelines (from pushes, webhooks,
    /// schedules and polling), deployments behind the built-in proxy, and /metrics.
    ///
    /// Example: opsloop serve --demo   (data in ./opsloop-data, UI on http://127.0.0.1:8080)
    #[command(verbatim_doc_comment)]
    Serve(ServeArgs),
    /// (internal) Started by `serve`: waits for the server to end, then stops the service
    /// instances it left running (after a `kill -9` nothing else would).
    #[command(hide = true)]
    ReapInstances {
        /// The server's process id.
        #[arg(long)]
        server: u32,
        /// The server's releases directory (instances carry it in OPSLOOP_RELEASE_DIR).
        #[arg(long)]
        releases: std::path::PathBuf,
    },
    /// Show the resolved configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Manage users and tokens directly in the database (works while the server runs or not).
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Run and inspect pipelines on a running server.
    Pipeline {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: PipelineCommand,
    },
    /// Inspect jobs on a running server.
    Job {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: JobCommand,
    },
    /// Run the server's jobs on this machine (an agent; needs an agent token from an admin).
    ///
    /// Example:
    ///   opsloop agent --server https://ci.example.com --token-file /etc/opsloop/agent-token --tags linux,docker
    #[command(verbatim_doc_comment)]
    Agent(AgentArgs),
    /// Git hooks that start pipelines (install in a bare repository on the server's machine).
    Hook {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: HookCommand,
    },
    /// Manage projects on a running server.
    Project {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: ProjectCommand,
    },
}

#[derive(Debug, Clone, Args, Default)]
pub struct RunArgs {
    /// Jobs to run (default: the whole pipeline).
    pub jobs: Vec<String>,
    /// The pipeline file (default `.gitlab-ci.yml`; when the working directory has none and
    /// neither this nor `--cwd` is given, the git repository's root is used, as gitlab-ci-local does).
    #[arg(long)]
    pub file: Option<String>,
    /// The project directory (default: the current directory).
    #[arg(long)]
    pub cwd: Option<std::path::PathBuf>,
    /// Also run what the given jobs need, transitively (and earlier stages for jobs without needs).
    #[arg(long)]
    pub needs: bool,
    /// Run only what the given jobs need.
    #[arg(long)]
    pub only_needs: bool,
    /// Run only the jobs of this stage.
    #[arg(long)]
    pub stage: Option<String>,
    /// Run these manual jobs as if played.
    #[arg(long, value_name = "JOB")]
    pub manual: Vec<String>,
    /// Set a variable (highest precedence): --variable KEY=VALUE.
    #[arg(long, value_name = "KEY=VALUE")]
    pub variable: Vec<String>,
    /// Remove a variable from every job.
    #[arg(long, value_name = "KEY")]
    pub unset_variable: Vec<String>,
    /// A YAML file of variables (default: .gitlab-ci-local-variables.yml when present).
    #[arg(long, value_name = "FILE")]
    pub variables_file: Option<std::path::PathBuf>,
    /// Where to read `.gitlab-ci-local/variables.yml` from (default: $HOME).
    #[arg(long, value_name = "DIR")]
    pub home: Option<std::path::PathBuf>,
    /// List the jobs instead of running them.
    #[arg(long)]
    pub list: bool,
    /// List the jobs as JSON.
    #[arg(long)]
    pub list_json: bool,
    /// List the jobs as `;`-separated lines (gitlab-ci-local's `--list-csv`).
    #[arg(long)]
    pub list_csv: bool,
    /// Print the fully expanded configuration (after include, extends, !reference, default).
    #[arg(long)]
    pub preview: bool,
    /// How many jobs run at once (default: 64). Jobs start as soon as what they wait for is
    /// done, as on GitLab with enough runners and in gitlab-ci-local (which has no limit): shell
    /// jobs mostly wait (network, sleep, containers), and a limit of the CPU count made a
    /// `needs:` DAG run in waves. 64 keeps a pipeline of hundreds of jobs within the process's
    /// open-file limit; pass the CPU count for jobs that each keep a core busy.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Keep each job's workspace under .opsloop/builds/<job> after it ends (jobs always run in their own).
    #[arg(long)]
    pub shell_isolation: bool,
    /// The default: workspaces are removed when their job ends (gitlab-ci-local's flag).
    #[arg(long, conflicts_with = "shell_isolation")]
    pub no_shell_isolation: bool,
    /// Start jobs from untracked files too (those git does not ignore). By default a job starts
    /// from git's tracked files as the working tree has them, uncommitted edits included, as
    /// gitlab-ci-local does.
    #[arg(long, conflicts_with = "committed")]
    pub dirty: bool,
    /// Start jobs from the files of the last commit, ignoring uncommitted edits: what the server
    /// would run for this commit.
    #[arg(long)]
    pub committed: bool,
    /// Print a JSON event stream instead of text.
    #[arg(long)]
    pub json: bool,
    /// How jobs without `image:` are isolated: `none` (bash in the workspace) or `sandbox`
    /// (bubblewrap: read-only root, private /tmp, only the workspace writable, no network).
    #[arg(long, value_enum, default_value = "none")]
    pub isolation: IsolationArg,
    /// With --isolation sandbox: let jobs reach the network.
    #[arg(long)]
    pub allow_network: bool,
    /// Run jobs that name an `image:` in the shell when no container engine has that image
    /// (gitlab-ci-local's `--force-shell-executor`).
    #[arg(long, visible_alias = "force-shell-executor")]
    pub force_shell: bool,
    /// The default: jobs with an `image:` run in a container (gitlab-ci-local's flag).
    #[arg(long, conflicts_with = "force_shell")]
    pub no_force_shell_executor: bool,
    /// Run jobs without an `image:` in the shell: opsloop's default (gitlab-ci-local's flag).
    #[arg(long)]
    pub shell_executor_no_image: bool,
    /// Run jobs without an `image:` in a container of `--default-image` (default
    /// docker.io/ruby:3.1, as gitlab-ci-local) instead of the shell.
    #[arg(long, conflicts_with = "shell_executor_no_image")]
    pub no_shell_executor_no_image: bool,
    /// The image for jobs without `image:` when they run in containers (see
    /// `--no-shell-executor-no-image`); with shell jobs it has no effect, and a warning says so.
    #[arg(long, value_name = "IMAGE")]
    pub default_image: Option<String>,
    /// When to pull job images: `always` or `if-not-present` (the default). opsloop runs an image
    /// only when the container engine already has it, so either is accepted and nothing is pulled.
    #[arg(long, value_name = "POLICY", value_parser = ["always", "if-not-present"])]
    pub pull_policy: Option<String>,
    /// Where opsloop keeps workspaces, artifacts, caches and logs, relative to the project
    /// (default `.opsloop`).
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<String>,
    /// A file of patterns (rsync's exclude syntax: `*.log`, `/build/`) for files that jobs'
    /// workspaces leave out (default: `.gitlab-ci-local-ignores` when present).
    #[arg(long, value_name = "FILE")]
    pub ignores_file: Option<std::path::PathBuf>,
    /// Accepted for gitlab-ci-local compatibility; opsloop always validates.
    #[arg(long, hide = true)]
    pub json_schema_validation: bool,
    /// Leave artifacts in the state folder only: by default they are also copied back into the
    /// project after each job, as gitlab-ci-local does (a job opts out with `# @NoArtifactsToSource`).
    #[arg(long)]
    pub no_artifacts_to_source: bool,
    /// How many files the pipeline may include (GitLab's limit is 150).
    #[arg(long, value_name = "N", default_value_t = opsloop_pipeline::config::MAX_INCLUDES)]
    pub maximum_includes: usize,
    /// Accepted for gitlab-ci-local compatibility: opsloop always checks that every needed or
    /// depended-on job is in the pipeline.
    #[arg(long, hide = true)]
    pub validate_dependency_chain: bool,
    /// Pad job names in output to at most N characters (default: the longest name that runs;
    /// 0: no padding).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub max_job_name_padding: Option<i64>,
    /// Start each job line with the time of day and the job's elapsed time, and give each
    /// job's duration first in the summary.
    #[arg(long)]
    pub timestamps: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum IsolationArg {
    #[default]
    None,
    Sandbox,
}

#[derive(Debug, Clone, Args, Default)]
pub struct LintArgs {
    /// The pipeline file; a file named `opsloop.yml` is checked as the deployment manifest.
    #[arg(long, default_value = ".gitlab-ci.yml")]
    pub file: String,
    /// The project directory (default: the current directory).
    #[arg(long)]
    pub cwd: Option<std::path::PathBuf>,
    /// Print the problems as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Where the configuration and the data live.
#[derive(Debug, Clone, Args, Default)]
pub struct ConfigArgs {
    /// Configuration file (TOML). Default: ./opsloop.toml when it exists.
    #[arg(long, env = "OPSLOOP_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory for opsloop's data: database, artifacts, logs, keys.
    #[arg(long, env = "OPSLOOP_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL URL (postgres://user:pass@host/db) instead of SQLite in the data directory.
    #[arg(long, env = "OPSLOOP_DATABASE_URL", value_name = "URL", hide_env_values = true)]
    pub database_url: Option<String>,
}

#[derive(Debug, Clone, Args, Default)]
pub struct ServeArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Address and port to listen on.
    #[arg(long, env = "OPSLOOP_LISTEN", value_name = "ADDR:PORT")]
    pub listen: Option<String>,
    /// The URL people reach opsloop at; `https://…` makes session cookies Secure.
    #[arg(long, env = "OPSLOOP_EXTERNAL_URL", value_name = "URL")]
    pub external_url: Option<String>,
    /// Where the deployment proxy listens (services deployed from opsloop.yml are reached
    /// through it); `off` runs no proxy.
    #[arg(long, env = "OPSLOOP_PROXY_LISTEN", value_name = "ADDR:PORT|off")]
    pub proxy_listen: Option<String>,
    /// Register a demo project (files from examples/demo) so there is something to look at.
    #[arg(long)]
    pub demo: bool,
    /// A prometheus.yml to scrape targets and evaluate rules from (overrides `[metrics]
    /// config_file`); Grafana then reads everything at http://ADDR:PORT/prometheus.
    #[arg(long, env = "OPSLOOP_METRICS_CONFIG", value_name = "FILE")]
    pub metrics_config: Option<PathBuf>,
    /// Synthetic checks and heartbeats in Gatus's format (overrides `[checks] config_file`):
    /// run on their intervals, stored as `opsloop_check_*` series, alerting when down.
    #[arg(long, env = "OPSLOOP_CHECKS_CONFIG", value_name = "FILE")]
    pub checks_config: Option<PathBuf>,
    /// An alertmanager.yml for the built-in Alertmanager (overrides `[alerting] config_file`):
    /// routes, receivers (webhook, Slack, Teams, Discord, PagerDuty, and `oncall_configs`
    /// that open incidents), inhibitions. Prometheus and amtool reach it at /alertmanager.
    #[arg(long, env = "OPSLOOP_ALERTING_CONFIG", value_name = "FILE")]
    pub alerting_config: Option<PathBuf>,
    /// On-call as code: users, schedules, overrides and escalation policies (overrides
    /// `[alerting] oncall_file`); `opsloop oncall` then answers who is on call.
    #[arg(long, env = "OPSLOOP_ONCALL_CONFIG", value_name = "FILE")]
    pub oncall_config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the resolved configuration (secrets redacted).
    Show {
        #[command(flatten)]
        serve: ServeArgs,
        /// Print JSON instead of TOML.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Manage users.
    User {
        #[command(subcommand)]
        command: AdminUserCommand,
    },
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        command: AdminTokenCommand,
    },
    /// Manage agents (machines that run jobs with `opsloop agent`).
    Agent {
        #[command(subcommand)]
        command: AdminAgentCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminAgentCommand {
    /// Register an agent and print its token (only the token, so scripts can capture it).
    ///
    /// Example: opsloop agent --token $(opsloop admin agent create --name build-1) --tags linux
    #[command(verbatim_doc_comment)]
    Create {
        #[command(flatten)]
        config: ConfigArgs,
        /// The agent's name: lowercase letters, digits, `-`, `_`, `.`.
        #[arg(long)]
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// List agents: online or not, last seen, running jobs.
    List {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminUserCommand {
    /// Create a user and print a one-time password (unless --password-stdin).
    Create {
        #[command(flatten)]
        config: ConfigArgs,
        /// Lowercase letters, digits, `-`, `_`, `.`.
        username: String,
        /// Make the user an instance admin.
        #[arg(long)]
        admin: bool,
        /// Read the password from standard input instead of generating one.
        #[arg(long)]
        password_stdin: bool,
        #[arg(long)]
        json: bool,
    },
    /// List users.
    List {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AdminTokenCommand {
    /// Create an API token and print it (only the token, so scripts can capture it).
    ///
    /// Example: export OPSLOOP_TOKEN=$(opsloop admin token create --name ci --role admin)
    #[command(verbatim_doc_comment)]
    Create {
        #[command(flatten)]
        config: ConfigArgs,
        /// What the token is for.
        #[arg(long)]
        name: String,
        /// The most the token may do: admin, owner, maintainer, developer or viewer.
        #[arg(long, default_value = "developer")]
        role: String,
        /// The user the token acts as.
        #[arg(long, default_value = "admin")]
        user: String,
        /// Expire after this many days (default: never).
        #[arg(long)]
        expires_in_days: Option<u32>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Args)]
pub struct ProxyArgs {
    /// Where the proxy listens.
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub listen: std::net::SocketAddr,
    /// `[HOST]/PREFIX=ADDRESS[,ADDRESS…]`: requests for HOST (any host when left out) under
    /// PREFIX go to the addresses in turn. Repeat for more routes; the longest prefix wins.
    #[arg(long = "route", required = true)]
    pub routes: Vec<String>,
    /// Seconds an upstream may take to answer.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Event loops (threads), each with its own listening socket (default: one per core).
    #[arg(long)]
    pub workers: Option<usize>,
}

#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// The opsloop server's URL.
    #[arg(long, env = "OPSLOOP_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// The agent's token (`olpa_…`), from `opsloop admin agent create` or the Agents page.
    /// Prefer --token-file or the variable: a flag is visible in the process list.
    #[arg(long, env = "OPSLOOP_AGENT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Read the token from this file (keep it readable by the agent's user only).
    #[arg(long, conflicts_with = "token")]
    pub token_file: Option<std::path::PathBuf>,
    /// Run jobs whose tags are all among these (comma-separated); untagged jobs need none.
    #[arg(long, value_delimiter = ',')]
    pub tags: Vec<String>,
    /// Jobs run at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub concurrency: u32,
    /// Where jobs' workspaces and the local caches live.
    #[arg(long, default_value = "./opsloop-agent")]
    pub work_dir: std::path::PathBuf,
    /// How shell jobs are isolated: plain bash, or bubblewrap (read-only root, network allowed).
    #[arg(long, value_enum, default_value = "none")]
    pub isolation: AgentIsolation,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum AgentIsolation {
    None,
    Sandbox,
}

/// How to reach a running server.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The opsloop server's URL.
    #[arg(long, global = true, env = "OPSLOOP_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// API token (create one with `opsloop admin token create` or under Settings in the web UI).
    #[arg(long, global = true, env = "OPSLOOP_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum MetricsCommand {
    /// Check a prometheus.yml and the rule files it names.
    CheckConfig {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Check Prometheus rule files (recording and alerting rules).
    CheckRules {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ChecksCommand {
    /// Run every check of a Gatus-format file once: HTTP, TCP, TLS, DNS, ICMP, gRPC, commands.
    ///
    /// Reads Gatus's `endpoints:` (or opsloop's `checks:`) with their conditions, e.g.
    /// `[STATUS] == 200`, `[BODY].status == UP`, `[CERTIFICATE_EXPIRATION] > 48h`. Other
    /// Gatus sections (storage, alerting, ui…) are accepted and ignored; heartbeats are not run.
    ///
    /// Exit 0 when every check passes, 1 when one fails, 2 when the file is invalid.
    #[command(verbatim_doc_comment)]
    Run {
        /// The checks file (a Gatus config.yaml works as it is).
        file: PathBuf,
        /// Print the results as JSON.
        #[arg(long)]
        json: bool,
        /// How many checks run at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum CheckCommand {
    /// Every check with its health, every heartbeat with its state.
    List {
        /// Print the API's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run one check now (by its key, `group_name` as Gatus writes it) and print the result;
    /// exit 1 when it fails.
    Run {
        key: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ProjectCommand {
    /// List projects you can see.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one project.
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Create a project; you become its owner.
    Create {
        name: String,
        /// A git URL or an absolute path to a local repository.
        #[arg(long)]
        repo: String,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        default_branch: Option<String>,
        /// Pipeline definition inside the repository (default .gitlab-ci.yml).
        #[arg(long)]
        pipeline_file: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Change a project's settings.
    Update {
        name: String,
        #[arg(long)]
        repo: Option<String>,
        #[arg(long)]
        description: Option<String>,
        #[arg(long)]
        default_branch: Option<String>,
        #[arg(long)]
        pipeline_file: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Delete a project and everything in it.
    Delete {
        name: String,
        /// Confirm; required because deletion cannot be undone.
        #[arg(long)]
        yes: bool,
    },
    /// List, add or remove a project's members.
    Member {
        #[command(subcommand)]
        command: MemberCommand,
    },
}

#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// List members and their roles.
    List {
        project: String,
        #[arg(long)]
        json: bool,
    },
    /// Add a member or change their role.
    Add {
        project: String,
        username: String,
        /// owner, maintainer, developer or viewer.
        #[arg(long)]
        role: String,
    },
    /// Remove a member.
    Remove { project: String, username: String },
}

/// The project a deployment command acts on: `--project`, else `OPSLOOP_PROJECT`, else the
/// pipeline job's own project (`CI_PROJECT_NAME`).
#[derive(Debug, Clone, Args)]
pub struct ProjectArg {
    /// The project (default: in a job, its own; in a clone of a project's repository, that
    /// project).
    #[arg(long, env = "OPSLOOP_PROJECT")]
    pub project: Option<String>,
}

impl ProjectArg {
    /// The project named, or the job's own, or the one whose repository the current directory
    /// is a clone of (its `origin`, or the directory itself), as a user inside a checkout means.
    pub async fn resolve(&self, client: &crate::client::ApiClient) -> anyhow::Result<String> {
        if let Some(named) = self.project.clone().or_else(|| std::env::var("CI_PROJECT_NAME").ok())
            && !named.is_empty()
        {
            return Ok(named);
        }
        let here = checkout_locations();
        let page: serde_json::Value = client.get_with_query(&["projects"], "limit=100").await?.unwrap_or_default();
        let projects = page["items"].as_array().cloned().unwrap_or_default();
        let found = projects.iter().find(|project| {
            let url = project["repo_url"].as_str().unwrap_or_default();
            here.iter().any(|location| same_repository(location, url))
        });
        if let Some(name) = found.and_then(|p| p["name"].as_str()) {
            return Ok(name.to_owned());
        }
        let names: Vec<&str> = projects.iter().filter_map(|p| p["name"].as_str()).collect();
        anyhow::bail!(
            "which project? pass --project NAME (or set OPSLOOP_PROJECT){}",
            if names.is_empty() { String::new() } else { format!("; yours: {}", names.join(", ")) }
        )
    }
}

/// Where the current directory's repository comes from: `origin`'s URL and its own top level.
fn checkout_locations() -> Vec<String> {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    [git(&["remote", "get-url", "origin"]), git(&["rev-parse", "--show-toplevel"])].into_iter().flatten().collect()
}

/// Two spellings of one repository: the same URL give or take `.git` and a trailing slash,
/// or the same directory on this machine.
fn same_repository(a: &str, b: &str) -> bool {
    let norm = |url: &str| url.trim_end_matches('/').trim_end_matches(".git").to_owned();
    if norm(a) == norm(b) {
        return true;
    }
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

#[derive(Debug, Clone, Args)]
pub struct DeployArgs {
    /// The service, as named under `services:` in opsloop.yml.
    pub service: String,
    /// The environment, as named under `environments:` (in a job: its `environment:name`).
    #[arg(long = "env", value_name = "ENV", env = "CI_ENVIRONMENT_NAME")]
    pub environment: String,
    #[command(flatten)]
    pub project: ProjectArg,
    /// A branch, tag or commit (default: the project's default branch; in a job, its commit).
    #[arg(long, env = "CI_COMMIT_SHA")]
    pub version: Option<String>,
    /// blue-green, canary, canary:10,50,100, rolling, rolling:2 or recreate (default: the service's).
    #[arg(long)]
    pub strategy: Option<String>,
    /// Follow the deployment to its end; exit 0 on success, 1 when it fails or rolls back.
    #[arg(long)]
    pub wait: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Clone, Args)]
pub struct RollbackArgs {
    pub service: String,
    #[arg(long = "env", value_name = "ENV")]
    pub environment: String,
    #[command(flatten)]
    pub project: ProjectArg,
    /// The version to go back to (default: the release before the current one).
    #[arg(long, value_name = "VERSION")]
    pub to: Option<String>,
    /// Follow it to its end; exit 0 on success, 1 otherwise.
    #[arg(long)]
    pub wait: bool,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum EnvironmentsCommand {
    /// Which version of each service runs in each environment, and its health.
    List {
        #[command(flatten)]
        project: ProjectArg,
        #[arg(long)]
        json: bool,
    },
    /// What applying the default branch's opsloop.yml would change.
    Plan {
        #[command(flatten)]
        project: ProjectArg,
        #[arg(long)]
        json: bool,
    },
    /// Apply the default branch's opsloop.yml now (needs the maintainer role).
    Apply {
        #[command(flatten)]
        project: ProjectArg,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum AlertingCommand {
    /// Validate alertmanager.yml files.
    CheckConfig {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum InfraCommand {
    /// Print the `terraform { backend "http" { … } }` block for a state of the project on this
    /// server. No token goes in it: set `TF_HTTP_PASSWORD` to one.
    BackendConfig {
        /// The state's name (letters, digits, `-`, `_`, `.`).
        state: String,
        #[command(flatten)]
        project: ProjectArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum IncidentCommand {
    /// Incidents you may see, newest first.
    List {
        /// Only open ones (triggered or acknowledged).
        #[arg(long)]
        open: bool,
        /// Only incidents in this state: triggered, acknowledged or resolved.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Print the API's JSON (id, status, title, alerts, timeline…).
        #[arg(long)]
        json: bool,
    },
    /// One incident with its timeline.
    Show {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Acknowledge: you take the incident and its escalation stops.
    Ack {
        id: i64,
        /// Shown on the timeline.
        #[arg(long, default_value = "")]
        note: String,
        #[arg(long)]
        json: bool,
    },
    /// Resolve an incident by hand.
    Resolve {
        id: i64,
        #[arg(long, default_value = "")]
        note: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Clone, Args)]
pub struct DeploymentsArgs {
    pub service: Option<String>,
    #[arg(long = "env", value_name = "ENV")]
    pub environment: Option<String>,
    #[command(flatten)]
    pub project: ProjectArg,
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum PipelineCommand {
    /// Run a project's pipeline at a ref on the server.
    ///
    /// Example: opsloop pipeline run web --ref main --variable DEPLOY=no --wait
    #[command(verbatim_doc_comment)]
    Run {
        /// The project's name (`opsloop project list` shows them).
        project: String,
        /// Branch, tag or commit (default: the project's default branch).
        #[arg(long = "ref", value_name = "REF")]
        git_ref: Option<String>,
        /// A variable for this pipeline: --variable KEY=VALUE.
        #[arg(long, value_name = "KEY=VALUE")]
        variable: Vec<String>,
        /// Wait for the pipeline to finish; exit 0 when it succeeds, 1 when it fails.
        #[arg(long)]
        wait: bool,
        /// Print JSON (the pipeline; with --wait, with its jobs) for scripts.
        #[arg(long)]
        json: bool,
    },
    /// List a project's pipelines, newest first.
    List {
        /// The project's name (`opsloop project list` shows them).
        project: String,
        /// Print JSON (an array of pipelines) for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a running pipeline: running jobs end (after_script still runs), the rest are skipped.
    Cancel {
        /// The project's name.
        project: String,
        /// The pipeline's number (`opsloop pipeline list` shows them).
        id: i64,
    },
    /// Show one pipeline: its status, why it failed when it did, and its jobs.
    Show {
        /// The project's name.
        project: String,
        /// The pipeline's number (`opsloop pipeline list` shows them).
        id: i64,
        /// Print JSON (the pipeline with its jobs) for scripts.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Print a job's log.
    Log { id: i64 },
    /// Run a finished job again (when its pipeline has finished).
    Retry {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Run a manual job.
    Play {
        id: i64,
        #[arg(long)]
        json: bool,
    },
    /// Cancel a running job (its after_script still runs).
    Cancel {
        id: i64,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum HookCommand {
    /// Reads `old new ref` lines from git and starts a pipeline per pushed branch or tag.
    ///
    /// Install: printf '#!/bin/sh\nexec opsloop hook post-receive --project NAME\n' > hooks/post-receive
    /// (with OPSLOOP_SERVER and OPSLOOP_TOKEN in the hook's environment).
    PostReceive {
        /// The opsloop project this repository belongs to.
        #[arg(long)]
        project: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ScanCommand {
    /// Scan PATH (default: .) for secrets; `-` reads standard input.
    Secrets(SecretsArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SecretsFormatArg {
    /// Findings with secrets redacted.
    Table,
    /// gitleaks' JSON report (secrets in clear: it is what a baseline is made of).
    Json,
    /// SARIF 2.1.0.
    Sarif,
    /// GitLab's secret-detection report (schema 15).
    Gitlab,
}

#[derive(Debug, Args)]
pub struct SecretsArgs {
    /// A directory, a file, or `-` for standard input.
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// Scan the git history of the repository at PATH instead of its files.
    #[arg(long, conflicts_with = "staged")]
    pub git: bool,
    /// With --git: only commits after REF (REF..HEAD), or a range A..B.
    #[arg(long, value_name = "REF", requires = "git")]
    pub since: Option<String>,
    /// Scan the changes staged in the index (against HEAD).
    #[arg(long)]
    pub staged: bool,
    /// A gitleaks configuration (default: PATH/.gitleaks.toml, else the built-in rules).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A previous JSON report: its findings are not reported again.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,
    /// Fingerprints to ignore (default: PATH/.gitleaksignore).
    #[arg(long, value_name = "FILE")]
    pub ignore_file: Option<PathBuf>,
    /// Skip files larger than this many megabytes (0: no limit).
    #[arg(long, value_name = "MB", default_value_t = 10)]
    pub max_target_megabytes: u64,
    #[arg(long, value_enum, default_value_t = SecretsFormatArg::Table)]
    pub format: SecretsFormatArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuditFormatArg {
    Table,
    Json,
    Sarif,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SeverityArg {
    Low,
    Medium,
    High,
    Critical,
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// A directory (searched for lockfiles) or one lockfile.
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// The OSV database: a directory of OSV JSON records or a zip of them.
    #[arg(long, value_name = "DIR", env = "OPSLOOP_OSV_DB")]
    pub db: PathBuf,
    /// Exit 1 when a vulnerability of this severity or above is found (unknown severities
    /// always count).
    #[arg(long, value_enum, default_value_t = SeverityArg::Low)]
    pub fail_on: SeverityArg,
    /// osv-scanner.toml with [[IgnoredVulns]] (default: PATH/osv-scanner.toml).
    #[arg(long, value_name = "FILE")]
    pub ignore_config: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t = AuditFormatArg::Table)]
    pub format: AuditFormatArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SbomFormatArg {
    /// CycloneDX 1.6 JSON.
    Cyclonedx,
    /// SPDX 2.3 JSON.
    Spdx,
}

#[derive(Debug, Args)]
pub struct SbomArgs {
    /// A directory (searched for lockfiles) or one lockfile.
    #[arg(default_value = ".")]
    pub path: PathBuf,
    #[arg(long, value_enum)]
    pub format: SbomFormatArg,
    /// The name of the described project (default: the directory's name).
    #[arg(long)]
    pub name: Option<String>,
}
