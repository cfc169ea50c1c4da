#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Golden tests: GitLab CI YAML in, expanded jobs and the needs DAG out.
//!
//! Each test loads in-memory files with [`config::load`], plans them with [`plan::plan`] and
//! compares a textual rendering ([`describe`]) with an inline expected text. On a mismatch the
//! actual text is printed in full so it can be pasted (expect-test style); with
//! `GOLDEN_DUMP=<dir>` every actual text is written to `<dir>/<test>.<n>.txt` instead of compared.
//!
//! Expectations follow GitLab's documented semantics (CI/CD YAML syntax reference,
//! <https://docs.gitlab.com/ci/yaml/>). Where the engine differs, the test keeps the documented
//! expectation (it was `#[ignore]`d until the engine was fixed; none is now).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use opsloop_pipeline::config::{
    self, AllowFailure, ArtifactsWhen, CacheKey, CachePolicy, Config, DEFAULT_STAGES, FileSource, Variable,
};
use opsloop_pipeline::diagnostic::{Diagnostic, Severity};
use opsloop_pipeline::plan::{self, Plan, PlanOptions};

// ---------------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------------

/// The project's files, in memory: path → text.
struct MemFiles(BTreeMap<String, String>);

impl MemFiles {
    fn new(files: &[(&str, &str)]) -> Self {
        MemFiles(files.iter().map(|(path, text)| ((*path).to_owned(), dedent(text))).collect())
    }
}

impl FileSource for MemFiles {
    fn read(&self, path: &str) -> Result<String, String> {
        self.0.get(path).cloned().ok_or_else(|| "no such file".to_owned())
    }
    fn files(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }
}

/// Removes a leading newline, a trailing whitespace-only line and the common indentation, so
/// inline texts can be indented with the code.
fn dedent(text: &str) -> String {
    let text = text.strip_prefix('\n').unwrap_or(text);
    let text = match text.rfind('\n') {
        Some(last) if text[last + 1..].trim().is_empty() => &text[..=last],
        _ => text,
    };
    let indent = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| line.len() - line.trim_start_matches(' ').len())
        .min()
        .unwrap_or(0);
    let mut out = String::new();
    for line in text.lines() {
        out.push_str(line.get(indent..).unwrap_or_else(|| line.trim_start()));
        out.push('\n');
    }
    out
}

fn severity(diagnostic: &Diagnostic) -> &'static str {
    match diagnostic.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}

/// `error 3:5 message` (with the file's path when it is not the root file) and its hint.
fn render_diagnostic(config: &Config, diagnostic: &Diagnostic, out: &mut String) {
    match diagnostic.span {
        Some(span) if span.file == 0 => {
            writeln!(out, "{} {}:{} {}", severity(diagnostic), span.line, span.column, diagnostic.message).unwrap();
        }
        Some(span) => writeln!(
            out,
            "{} {}:{}:{} {}",
            severity(diagnostic),
            config.sources.path(span),
            span.line,
            span.column,
            diagnostic.message
        )
        .unwrap(),
        None => writeln!(out, "{} {}", severity(diagnostic), diagnostic.message).unwrap(),
    }
    if let Some(hint) = &diagnostic.hint {
        writeln!(out, "  hint: {hint}").unwrap();
    }
}

fn list(items: &[String]) -> String {
    format!("{items:?}")
}

fn artifacts_when(when: ArtifactsWhen) -> &'static str {
    match when {
        ArtifactsWhen::OnSuccess => "on_success",
        ArtifactsWhen::OnFailure => "on_failure",
        ArtifactsWhen::Always => "always",
    }
}

/// One line per planned job, then indented lines for what it has.
fn describe(config: &Config, plan: &Plan) -> String {
    let mut out = String::new();
    if plan.stages.iter().map(String::as_str).ne(DEFAULT_STAGES.iter().copied()) {
        writeln!(out, "stages: {}", plan.stages.join(", ")).unwrap();
    }
    for planned in &plan.jobs {
        let job = &config.jobs[planned.config_index];
        let allow_failure = match &planned.allow_failure {
            AllowFailure::No => "no".to_owned(),
            AllowFailure::Yes => "yes".to_owned(),
            AllowFailure::ExitCodes(codes) => {
                format!("exit_codes={}", codes.iter().map(i32::to_string).collect::<Vec<_>>().join(","))
            }
        };
        let needs = match &planned.needs {
            None => "-".to_owned(),
            Some(needs) => format!(
                "[{}]",
                needs
                    .iter()
                    .map(|need| {
                        let name = &plan.jobs[need.job].name;
                        if need.artifacts { name.clone() } else { format!("{name} (no artifacts)") }
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        };
        let artifacts_from = if planned.artifacts_from.is_empty() {
            "-".to_owned()
        } else {
            format!(
                "[{}]",
                planned.artifacts_from.iter().map(|i| plan.jobs[*i].name.as_str()).collect::<Vec<_>>().join("; ")
            )
        };
        // Effective variables: global (as inherited) < workflow < job < rules/parallel/matrix.
        let mut variables: Vec<(String, String, bool)> = Vec::new();
        let mut put = |variable: &Variable, from_config: bool| {
            let raw = from_config && !variable.expand;
            match variables.iter_mut().find(|(name, _, _)| *name == variable.name) {
                Some(entry) => *entry = (variable.name.clone(), variable.value.clone(), raw),
                None => variables.push((variable.name.clone(), variable.value.clone(), raw)),
            }
        };
        job.global_variables.iter().for_each(|v| put(v, true));
        plan.workflow_variables.iter().for_each(|v| put(v, true));
        job.variables.iter().for_each(|v| put(v, true));
        planned.extra_variables.iter().for_each(|v| put(v, false));
        let vars = if variables.is_empty() {
            "-".to_owned()
        } else {
            variables
                .iter()
                .map(
                    |(name, value, raw)| if *raw { format!("{name}={value} (raw)") } else { format!("{name}={value}") },
                )
                .collect::<Vec<_>>()
                .join(",")
        };
        writeln!(
            out,
            "{} [{}] when={} allow_failure={allow_failure} needs={needs} artifacts_from={artifacts_from} vars={vars}",
            planned.name,
            plan.stages[planned.stage],
            planned.when.as_str(),
        )
        .unwrap();
        for variable in job.global_variables.iter().chain(&job.variables) {
            if let Some(description) = &variable.description {
                writeln!(out, "  description {}: {description}", variable.name).unwrap();
            }
        }
        if !job.script.is_empty() {
            writeln!(out, "  script: {}", list(&job.script)).unwrap();
        }
        if !job.before_script.is_empty() {
            writeln!(out, "  before_script: {}", list(&job.before_script)).unwrap();
        }
        if !job.after_script.is_empty() {
            writeln!(out, "  after_script: {}", list(&job.after_script)).unwrap();
        }
        if let Some(artifacts) = &job.artifacts {
            let mut line = format!("  artifacts: when={}", artifacts_when(artifacts.when));
            if let Some(name) = &artifacts.name {
                write!(line, " name={name:?}").unwrap();
            }
            if !artifacts.paths.is_empty() {
                write!(line, " paths={}", list(&artifacts.paths)).unwrap();
            }
            if !artifacts.exclude.is_empty() {
                write!(line, " exclude={}", list(&artifacts.exclude)).unwrap();
            }
            if artifacts.untracked {
                line.push_str(" untracked");
            }
            if let Some(expire_in) = &artifacts.expire_in {
                write!(line, " expire_in={expire_in:?}").unwrap();
            }
            if !artifacts.junit.is_empty() {
                write!(line, " reports:junit={}", list(&artifacts.junit)).unwrap();
            }
            if !artifacts.dotenv.is_empty() {
                write!(line, " reports:dotenv={}", list(&artifacts.dotenv)).unwrap();
            }
            writeln!(out, "{line}").unwrap();
        }
        for cache in &job.cache {
            let key = match &cache.key {
                CacheKey::Text(text) => format!("{text:?}"),
                CacheKey::Files { files, prefix: None } => format!("files{}", list(files)),
                CacheKey::Files { files, prefix: Some(prefix) } => format!("{prefix:?}-files{}", list(files)),
            };
            let policy = match cache.policy {
                CachePolicy::PullPush => "pull-push",
                CachePolicy::Pull => "pull",
                CachePolicy::Push => "push",
            };
            let mut line = format!(
                "  cache: key={key} paths={} policy={policy} when={}",
                list(&cache.paths),
                artifacts_when(cache.when)
            );
            if cache.untracked {
                line.push_str(" untracked");
            }
            if !cache.fallback_keys.is_empty() {
                write!(line, " fallback_keys={}", list(&cache.fallback_keys)).unwrap();
            }
            writeln!(out, "{line}").unwrap();
        }
        let retry = &job.retry;
        if retry.max > 0 || !retry.when.is_empty() || !retry.exit_codes.is_empty() {
            writeln!(out, "  retry: max={} when={} exit_codes={:?}", retry.max, list(&retry.when), retry.exit_codes)
                .unwrap();
        }
        if let Some(timeout) = &job.timeout {
            writeln!(out, "  timeout: {timeout}").unwrap();
        }
        if let Some(environment) = &job.environment {
            let mut line = format!("  environment: name={:?}", environment.name);
            for (label, value) in [
                ("url", &environment.url),
                ("action", &environment.action),
                ("on_stop", &environment.on_stop),
                ("deployment_tier", &environment.deployment_tier),
            ] {
                if let Some(value) = value {
                    write!(line, " {label}={value:?}").unwrap();
                }
            }
            writeln!(out, "{line}").unwrap();
        }
        if let Some(group) = &job.resource_group {
            writeln!(out, "  resource_group: {group}").unwrap();
        }
        if let Some(start_in) = &planned.start_in {
            writeln!(out, "  start_in: {start_in}").unwrap();
        }
        if let Some(coverage) = &job.coverage {
            writeln!(out, "  coverage: {coverage}").unwrap();
        }
        if let Some(image) = &job.image {
            writeln!(out, "  image: {image}").unwrap();
        }
        if !job.services.is_empty() {
            writeln!(out, "  services: {}", list(&job.services)).unwrap();
        }
        if !job.tags.is_empty() {
            writeln!(out, "  tags: {}", list(&job.tags)).unwrap();
        }
        if job.interruptible {
            writeln!(out, "  interruptible").unwrap();
        }
        if job.trigger.is_some() {
            writeln!(out, "  trigger").unwrap();
        }
    }
    out
}

/// Loads `files` (the first is the pipeline file), plans, and renders what came out.
fn run(files: &[(&str, &str)], variables: &[(&str, &str)], options: &PlanOptions) -> String {
    let source = MemFiles::new(files);
    let given = |name: &str| variables.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned());
    let config = config::load(&source, files[0].0, &given);
    let mut out = String::new();
    for diagnostic in &config.diagnostics {
        render_diagnostic(&config, diagnostic, &mut out);
    }
    if config.has_errors() {
        return out;
    }
    // Pipeline-level lookups: the given (CLI/predefined) variables, then the global YAML ones.
    let lookup = |name: &str| {
        given(name).or_else(|| config.variables.iter().rev().find(|v| v.name == name).map(|v| v.value.clone()))
    };
    match plan::plan(&config, &lookup, &source.files(), options) {
        Ok(plan) if plan.prevented_by_workflow => out.push_str(&format!("no pipeline: {}\n", plan::NO_PIPELINE)),
        Ok(plan) => {
            out.push_str(&describe(&config, &plan));
            // What `opsloop run` refuses to start (a run nobody can click in).
            if let Some(blocked) = plan.unplayed_manual_need() {
                out.push_str("run refuses: ");
                render_diagnostic(&config, &blocked, &mut out);
            }
        }
        Err(errors) => errors.iter().for_each(|d| render_diagnostic(&config, d, &mut out)),
    }
    out
}

thread_local! {
    static CHECKS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

#[track_caller]
fn check(files: &[(&str, &str)], variables: &[(&str, &str)], options: &PlanOptions, expected: &str) {
    compare(&run(files, variables, options), expected);
}

/// Plans the files, cuts the plan down to `names` ([`Plan::subset`], as a rerun does) and
/// describes the result, then the jobs it receives artifacts from outside.
fn run_subset(files: &[(&str, &str)], variables: &[(&str, &str)], names: &[&str]) -> String {
    let source = MemFiles::new(files);
    let given = |name: &str| variables.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned());
    let config = config::load(&source, files[0].0, &given);
    assert!(!config.has_errors(), "{:?}", config.diagnostics);
    let planned = match plan::plan(&config, &given, &source.files(), &options()) {
        Ok(planned) => planned,
        Err(errors) => panic!("{errors:?}"),
    };
    let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
    match planned.subset(&names) {
        Ok(subset) => {
            let mut out = describe(&config, &subset.plan);
            writeln!(out, "upstream: {}", list(&subset.upstream)).unwrap();
            out
        }
        Err(error) => format!("error: {error}\n"),
    }
}

#[track_caller]
fn compare(actual: &str, expected: &str) {
    let number = CHECKS.with(|n| {
        n.set(n.get() + 1);
        n.get()
    });
    if let Some(dir) = std::env::var_os("GOLDEN_DUMP") {
        let name = std::thread::current().name().unwrap_or("unnamed").replace("::", "-");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(std::path::Path::new(&dir).join(format!("{name}.{number}.txt")), actual).unwrap();
        return;
    }
    let expected = dedent(expected);
    if actual.trim_end() != expected.trim_end() {
        panic!("golden mismatch (check #{number})\n--- expected\n{expected}--- actual (paste this)\n{actual}--- end\n");
    }
}

fn options() -> PlanOptions {
    PlanOptions::default()
}

fn select(jobs: &[&str]) -> PlanOptions {
    PlanOptions { selected: jobs.iter().map(|j| (*j).to_owned()).collect(), ..PlanOptions::default() }
}

/// A push pipeline on the default branch `main`.
const MAIN: &[(&str, &str)] = &[
    ("CI_COMMIT_BRANCH", "main"),
    ("CI_COMMIT_REF_NAME", "main"),
    ("CI_DEFAULT_BRANCH", "main"),
    ("CI_PIPELINE_SOURCE", "push"),
];

/// A push pipeline on the feature branch `feature/login`.
const FEATURE: &[(&str, &str)] = &[
    ("CI_COMMIT_BRANCH", "feature/login"),
    ("CI_COMMIT_REF_NAME", "feature/login"),
    ("CI_DEFAULT_BRANCH", "main"),
    ("CI_PIPELINE_SOURCE", "push"),
];

/// A tag pipeline for `v1.2.0`.
const TAG: &[(&str, &str)] = &[
    ("CI_COMMIT_TAG", "v1.2.0"),
    ("CI_COMMIT_REF_NAME", "v1.2.0"),
    ("CI_DEFAULT_BRANCH", "main"),
    ("CI_PIPELINE_SOURCE", "push"),
];

const CI: &str = ".gitlab-ci.yml";

// ---------------------------------------------------------------------------------------------
// Stages, jobs, hidden jobs
// ---------------------------------------------------------------------------------------------

/// A job without `stage` is in `test`; jobs are ordered by stage, then by file order; without
/// `needs`, a job receives the artifacts of every job in earlier stages.
#[test]
fn default_stages_and_stage_order() {
    check(
        &[(
            CI,
            r#"
            deploy-job:
              stage: deploy
              script: [./deploy]
            test-job:
              script: echo test
            build-a:
              stage: build
              script:
                - make a
                - make check
            build-b:
              stage: build
              script: [make b]
            "#,
        )],
        MAIN,
        &options(),
        r##"
        build-a [build] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["make a", "make check"]
        build-b [build] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["make b"]
        test-job [test] when=on_success allow_failure=no needs=- artifacts_from=[build-a; build-b] vars=-
          script: ["echo test"]
        deploy-job [deploy] when=on_success allow_failure=no needs=- artifacts_from=[build-a; build-b; test-job] vars=-
          script: ["./deploy"]
        "##,
    );
}

/// `.pre` and `.post` are always first and last, wherever `stages` lists them.
/// <https://docs.gitlab.com/ci/yaml/#stage-pre>
#[test]
fn custom_stages_with_pre_and_post() {
    check(
        &[(
            CI,
            r#"
            stages: [.post, lint, [build, package], .pre]
            last:
              stage: .post
              script: [echo last]
            first:
              stage: .pre
              script: [echo first]
            pack:
              stage: package
              script: [echo pack]
            compile:
              stage: build
              script: [echo compile]
            lint:
              stage: lint
              script: [echo lint]
            "#,
        )],
        MAIN,
        &options(),
        r##"
        stages: .pre, lint, build, package, .post
        first [.pre] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["echo first"]
        lint [lint] when=on_success allow_failure=no needs=- artifacts_from=[first] vars=-
          script: ["echo lint"]
        compile [build] when=on_success allow_failure=no needs=- artifacts_from=[first; lint] vars=-
          script: ["echo compile"]
        pack [package] when=on_success allow_failure=no needs=- artifacts_from=[first; lint; compile] vars=-
          script: ["echo pack"]
        last [.post] when=on_success allow_failure=no needs=- artifacts_from=[first; lint; compile; pack] vars=-
          script: ["echo last"]
        "##,
    );
}

/// A stage that is not declared is an error at the job's `stage:` value.
#[test]
fn undeclared_stage_is_an_error() {
    check(
        &[(
            CI,
            r#"
            stages: [build, test]
            compile:
              stage: biuld
              script: [make]
            "#,
        )],
        MAIN,
        &options(),
        r##"
        error 3:10 stage:biuld not found for compile
          hint: declared stages: .pre, build, test, .post
        "##,
    );
}

/// "If a pipeline contains only jobs in the .pre or .post stages, it does not run."
/// <https://docs.gitlab.com/ci/yaml/#stages>
#[test]

fn pipeline_of_only_pre_and_post_jobs_does_not_run() {
    check(
        &[(
            CI,
            r#"
            setup:
              stage: .pre
              script: [echo setup]
            cleanup:
              stage: .post
              script: [echo cleanup]
            "#,
        )],
        MAIN,
        &options(),
        r##"
        error The pipeline must contain jobs in stages other than .pre and .post
        "##,
    );
}

/// A local run asks for those jobs now: they are planned, with GitLab's verdict as a warning.
#[test]
fn a_local_run_plans_only_pre_and_post_jobs_with_a_warning() {
    let source = MemFiles::new(&[(CI, "setup:\n  stage: .pre\n  script: [echo setup]\n")]);
    let lookup = |name: &str| MAIN.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned());
    let config = config::load(&source, CI, &lookup);
    let options = PlanOptions { allow_pre_post_only: true, ..options() };
    let plan = plan::plan(&config, &lookup, &source.files(), &options).expect("planned");
    assert_eq!(plan.jobs.len(), 1);
    assert!(plan.warnings.iter().any(|w| w.message == plan::PRE_POST_ONLY && !w.is_error()));
}

/// Hidden jobs (names starting with `.`) are templates: not planned, no `script` needed.
/// `trigger` jobs need no `script`; other jobs do, and it may not be empty.
#[test]
fn hidden_jobs_trigger_jobs_and_script_requirements() {
    check(
        &[(
            CI,
            r#"
            .template:
              stage: build
            .also-hidden:
              script: [echo never runs]
            child:
              trigger:
                include: child.yml
            real:
              extends: .template
              script: [make]
            "#,
        )],
        MAIN,
        &options(),
        r##"
        real [build] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["make"]
        child [test] when=on_success allow_failure=no needs=- artifacts_from=[real] vars=-
          trigger
        "##,
    );
    check(
        &[(
            CI,
            r#"
            no-script:
              stage: test
            empty-script:
              script: []
            "#,
        )],
        MAIN,
        &options(),
        r##"
        error 1:1 no-script must have script specified
        error 4:11 empty-script has empty script
        "##,
    );
}

// ---------------------------------------------------------------------------------------------
// YAML features: anchors, aliases, merge keys, !reference
// ---------------------------------------------------------------------------------------------

/// <https://docs.gitlab.com/ci/yaml/yaml_optimization/#anchors>: `<<` merges, explicit keys
/// win, the first merge source wins; anchored lists nest inside `script` and are flattened.
#[test]
fn anchors_aliases_and_merge_keys() {
    check(
        &[(
            CI,
            r#"
            variables: &globals
              SAMPLE: sample
              OTHER: other
            .job_template: &job_configuration
              image: ruby:2.6
              services: [postgres, redis]
              tags: [dev]
            .more: &more
              tags: [more]
              retry: 1
            .setup: &setup
              - echo setup one
              - echo setup two
            test1:
              <<: [*job_configuration, *more]
              script:
                - *setup
                - test1 project
            test2:
              <<: *job_configuration
              tags: [postgres]
              variables:
                <<: *globals
                GIT_STRATEGY: none
              script: [test2 project]
            "#,
        )],
        MAIN,
        &options(),
        r##"
        test1 [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=SAMPLE=sample,OTHER=other
          script: ["echo setup one", "echo setup two", "test1 project"]
          retry: max=1 when=[] exit_codes=[]
          image: ruby:2.6
          services: ["postgres", "redis"]
          tags: ["dev"]
        test2 [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=SAMPLE=sample,OTHER=other,GIT_STRATEGY=none
          script: ["test2 project"]
          image: ruby:2.6
          services: ["postgres", "redis"]
          tags: ["postgres"]
        "##,
    );
}

/// `!reference` picks values from other jobs, also from included files, nested up to 10 levels
/// in scripts, for a whole mapping or a single key.
/// <https://docs.gitlab.com/ci/yaml/yaml_optimization/#reference-tags>
#[test]
fn reference_tags_nested_and_in_lists() {
    check(
        &[
            (
                CI,
                r#"
                include:
                  - local: setup.yml
                .snippets:
                  one:
                    - echo ONE
                  two:
                    - !reference [.snippets, one]
                    - echo TWO
                  three:
                    - !reference [.snippets, two]
                    - echo THREE
                .vars:
                  variables:
                    URL: http://my-url.internal
                    IMPORTANT_VAR: the details
                .teardown:
                  after_script:
                    - echo deleting environment
                nested-references:
                  script:
                    - !reference [.snippets, three]
                test:
                  script:
                    - !reference [.setup, script]
                    - echo running my own command
                  after_script:
                    - !reference [.teardown, after_script]
                test-vars-1:
                  variables: !reference [.vars, variables]
                  script: [printenv]
                test-vars-2:
                  variables:
                    MY_VAR: !reference [.vars, variables, IMPORTANT_VAR]
                  script: [printenv]
                "#,
            ),
            (
                "setup.yml",
                r#"
                .setup:
                  script:
                    - echo creating environment
                "#,
            ),
        ],
        MAIN,
        &options(),
        r##"
        nested-references [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["echo ONE", "echo TWO", "echo THREE"]
        test [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["echo creating environment", "echo running my own command"]
          after_script: ["echo deleting environment"]
        test-vars-1 [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=URL=http://my-url.internal,IMPORTANT_VAR=the details
          script: ["printenv"]
        test-vars-2 [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=MY_VAR=the details
          script: ["printenv"]
        "##,
    );
}

/// A `!reference` to nothing, and a circular one, are errors at the tag.
#[test]
fn reference_errors() {
    check(
        &[(
            CI,
            r#"
            .a:
              script:
                - !reference [.b, script]
            .b:
              script:
                - !reference [.a, script]
            job:
              script:
                - !reference [.missing, script]
            loop:
              script: !reference [.a, script]
            "#,
        )],
        MAIN,
        &options(),
        r##"
        error 3:7 !reference circular chain detected [.b,script]
        error 9:7 !reference [.missing, script] points at nothing
        "##,
    );
}

/// `rules` can be reused with `!reference`, mixed with the job's own rules; the referenced
/// list is flattened into the job's rules.
/// <https://docs.gitlab.com/ci/jobs/job_rules/#reuse-rules-in-different-jobs>
#[test]

fn reference_in_rules_list_is_flattened() {
    check(
        &[(
            CI,
            r#"
            .default_rules:
              rules:
                - if: $CI_PIPELINE_SOURCE == "schedule"
                  when: never
                - if: $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH
            job1:
              rules:
                - !reference [.default_rules, rules]
              script: [echo job1]
            job2:
              rules:
                - !reference [.default_rules, rules]
                - if: $CI_PIPELINE_SOURCE == "merge_request_event"
              script: [echo job2]
            "#,
        )],
        MAIN,
        &options(),
        r##"
        job1 [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["echo job1"]
        job2 [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["echo job2"]
        "##,
    );
}

// ---------------------------------------------------------------------------------------------
// extends, default, inherit
// ---------------------------------------------------------------------------------------------

/// Multi-parent `extends`: mappings deep-merge, lists are replaced, the last parent and then
/// the job win ("closest scope wins"); multi-level chains resolve; `null` removes a key.
/// <https://docs.gitlab.com/ci/yaml/yaml_optimization/#merge-details>
#[test]
fn extends_multi_level_and_multi_parent() {
    check(
        &[(
            CI,
            r#"
            .only-important:
              variables:
                URL: http://my-url.internal
                IMPORTANT_VAR: the details
              rules:
                - if: $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH
                - if: $CI_COMMIT_BRANCH == "stable"
              tags: [production]
              script: [echo Hello world!]
            .in-docker:
              variables:
                URL: http://docker-url.internal
              tags: [docker]
              image: alpine
            rspec:
              variables:
                GITLAB: is-awesome
              extends:
                - .only-important
                - .in-docker
              script: [rake rspec]
            .base:
              script: [test]
              stage: build
              variables:
                VAR1: base var 1
              artifacts:
                paths: [out/]
                when: always
            .middle:
              extends: .base
              artifacts:
                expire_in: 1 week
            leaf:
              extends: .middle
              variables:
                VAR2: leaf var 2
            test3:
              extends: .base
              variables: {}
            test4:
              extends: .base
              variables: null
            "#,
        )],
        MAIN,
        &options(),
        r##"
        leaf [build] when=on_success allow_failure=no needs=- artifacts_from=- vars=VAR1=base var 1,VAR2=leaf var 2
          script: ["test"]
          artifacts: when=always paths=["out/"] expire_in="1 week"
        test3 [build] when=on_success allow_failure=no needs=- artifacts_from=- vars=VAR1=base var 1
          script: ["test"]
          artifacts: when=always paths=["out/"]
        test4 [build] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["test"]
          artifacts: when=always paths=["out/"]
        rspec [test] when=on_success allow_failure=no needs=- artifacts_from=[leaf; test3; test4] vars=URL=http://docker-url.internal,IMPORTANT_VAR=the details,GITLAB=is-awesome
          script: ["rake rspec"]
          image: alpine
          tags: ["docker"]
        "##,
    );
}

/// Unknown parents, cycles, and a parent that is not a job are errors at the `extends` value.
#[test]
fn extends_errors() {
    check(
        &[(
            CI,
            r#"
            .a:
              extends: .b
              script: [a]
            .b:
              extends: .a
            job:
              extends: [.nope, .a]
              script: [job]
            scalar: just a string
            other:
              extends: scalar
              script: [other]
            "#,
        )],
        MAIN,
        &options(),
        r##"
        error 5:12 .b: circular dependency detected in `extends` (.a)
        error 7:13 job: unknown key in `extends` (.nope)
        error 11:12 other: `scalar` in extends is not a job
        error 9:1 jobs:scalar config should be a mapping, not a string
        "##,
    );
}

/// `default:` is copied to every job that lacks the keyword (no merge); the deprecated
/// global `image`/`services`/`cache`/`before_script`/`after_script` act the same way.
/// `inherit:default` turns that off, or lists what to inherit.
/// <https://docs.gitlab.com/ci/yaml/#default>, <https://docs.gitlab.com/ci/yaml/#inheritdefault>
#[test]
fn default_and_legacy_globals_with_inherit_default() {
    check(
        &[(
            CI,
            r#"
            image: ruby:3.0
            services: [postgres:16]
            before_script: [bundle install]
            after_script: [rm -rf tmp/]
            cache:
              key: gems
              paths: [vendor/]
            default:
              retry: 2
              tags: [shared]
              interruptible: true
              artifacts:
                paths: [log/]
            rspec:
              script: bundle exec rspec
            rspec-2.7:
              image: ruby:2.7
              before_script: []
              retry: 0
              script: bundle exec rspec
            none:
              inherit:
                default: false
              script: [echo none]
            some:
              inherit:
                default: [retry, image]
              script: [echo some]
            "#,
        )],
        MAIN,
        &options(),
        r##"
        rspec [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["bundle exec rspec"]
          before_script: ["bundle install"]
          after_script: ["rm -rf tmp/"]
          artifacts: when=on_success paths=["log/"]
          cache: key="gems" paths=["vendor/"] policy=pull-push when=on_success
          retry: max=2 when=[] exit_codes=[]
          image: ruby:3.0
          services: ["postgres:16"]
          tags: ["shared"]
          interruptible
        rspec-2.7 [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["bundle exec rspec"]
          after_script: ["rm -rf tmp/"]
          artifacts: when=on_success paths=["log/"]
          cache: key="gems" paths=["vendor/"] policy=pull-push when=on_success
          image: ruby:2.7
          services: ["postgres:16"]
          tags: ["shared"]
          interruptible
        none [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["echo none"]
        some [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["echo some"]
          retry: max=2 when=[] exit_codes=[]
          image: ruby:3.0
        "##,
    );
}

/// Global variables are copied into jobs unless the job defines the same name; `inherit:
/// variables` turns that off or lists which to take.
/// <https://docs.gitlab.com/ci/yaml/#inheritvariables>
#[test]
fn global_variables_with_inherit_variables() {
    check(
        &[(
            CI,
            r#"
            variables:
              VARIABLE1: default 1
              VARIABLE2: default 2
              VARIABLE3: default 3
            all:
              variables:
                VARIABLE2: job 2
              script: [printenv]
            job1:
              inherit:
                variables: false
              script: [printenv]
            job2:
              inherit:
                variables: [VARIABLE1, VARIABLE3]
              script: [printenv]
            "#,
        )],
        MAIN,
        &options(),
        r##"
        all [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=VARIABLE1=default 1,VARIABLE2=job 2,VARIABLE3=default 3
          script: ["printenv"]
        job1 [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["printenv"]
        job2 [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=VARIABLE1=default 1,VARIABLE3=default 3
          script: ["printenv"]
        "##,
    );
}

/// `value`/`description` for default variables (only a description: empty value), `expand:
/// false` keeps `$` literal, numbers become their YAML spelling, `null` is empty.
/// <https://docs.gitlab.com/ci/yaml/#variablesdescription>, <https://docs.gitlab.com/ci/yaml/#variablesexpand>
#[test]
fn variables_value_description_and_expand() {
    check(
        &[(
            CI,
            r#"
            variables:
              DEPLOY_ENVIRONMENT:
                value: staging
                description: The deployment target.
              DEPLOY_NOTE:
                description: Explain the reason for this deployment.
              VAR1: value1
              VAR2: value2 $VAR1
              VAR3:
                value: value3 $VAR1
                expand: false
              NUMBER: 10
              EMPTY: null
            job:
              variables:
                VAR1: job value
                JOB_RAW:
                  value: $HOME
                  expand: false
              script: [printenv]
            "#,
        )],
        MAIN,
        &options(),
        r##"
        job [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=DEPLOY_ENVIRONMENT=staging,DEPLOY_NOTE=,VAR1=job value,VAR2=value2 $VAR1,VAR3=value3 $VAR1 (raw),NUMBER=10,EMPTY=,JOB_RAW=$HOME (raw)
          description DEPLOY_ENVIRONMENT: The deployment target.
          description DEPLOY_NOTE: Explain the reason for this deployment.
          script: ["printenv"]
        "##,
    );
}

/// GitLab reads YAML with Psych (YAML 1.1): "`VAR1: 012345` is interpreted as an octal value,
/// so the value becomes 5349". <https://docs.gitlab.com/ci/variables/>
#[test]

fn leading_zero_integer_variable_is_octal() {
    check(
        &[(
            CI,
            r#"
            variables:
              VAR1: 012345
              VAR2: "012345"
            job:
              script: [printenv]
            "#,
        )],
        MAIN,
        &options(),
        r##"
        job [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=VAR1=5349,VAR2=012345
          script: ["printenv"]
        "##,
    );
}

// ---------------------------------------------------------------------------------------------
// include
// ---------------------------------------------------------------------------------------------

/// `include:local` with a `*` glob (one directory level), nested includes, the short string
/// form and a leading `/`; the including file wins when it redefines an included job (deep
/// merge). <https://docs.gitlab.com/ci/yaml/includes/>
#[test]
fn include_local_globs_nested_and_merged() {
    check(
        &[
            (
                CI,
                r#"
                include:
                  - 'configs/*.yml'
                  - local: /templates/common.yaml
                build:
                  variables:
                    MODE: release
                "#,
            ),
            (
                "configs/build.yml",
                r#"
                build:
                  stage: build
                  variables:
                    MODE: debug
                    CC: gcc
                  script: [make]
                "#,
            ),
            (
                "configs/test.yml",
                r#"
                include: configs/nested/deep.yml
                test:
                  extends: .from-deep
                  script: [make test]
                "#,
            ),
            (
                "configs/nested/deep.yml",
                r#"
                .from-deep:
                  tags: [deep]
                "#,
            ),
            ("configs/nested/not-matched.yml", "nope: {script: [x]}"),
            ("configs/README.md", "not yaml: ["),
            (
                "templates/common.yaml",
                r#"
                lint:
                  stage: .pre
                  script: [lint]
                "#,
            ),
        ],
        MAIN,
        &options(),
        r##"
        lint [.pre] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["lint"]
        build [build] when=on_success allow_failure=no needs=- artifacts_from=[lint] vars=MODE=release,CC=gcc
          script: ["make"]
        test [test] when=on_success allow_failure=no needs=- artifacts_from=[lint; build] vars=-
          script: ["make test"]
          tags: ["deep"]
        "##,
    );
}

/// `include:rules` with `if` (on pipeline variables), `exists`, and `when: never`.
/// <https://docs.gitlab.com/ci/yaml/#includerules>
#[test]
fn include_rules() {
    let files: &[(&str, &str)] = &[
        (
            CI,
            r#"
            include:
              - local: builds.yml
                rules:
                  - if: $INCLUDE_BUILDS == "true"
              - local: docker.yml
                rules:
                  - exists: [Dockerfile]
              - local: helm.yml
                rules:
                  - exists: [chart/Chart.yaml]
              - local: never.yml
                rules:
                  - if: $INCLUDE_BUILDS
                    when: never
                  - when: always
            test:
              script: [test]
            "#,
        ),
        ("builds.yml", "builds:\n  script: [make]\n"),
        ("docker.yml", "docker:\n  script: [docker build .]\n"),
        ("helm.yml", "helm:\n  script: [helm package]\n"),
        ("never.yml", "never:\n  script: [echo]\n"),
        ("Dockerfile", "FROM scratch\n"),
    ];
    check(
        files,
        &[("INCLUDE_BUILDS", "true")],
        &options(),
        r##"
        builds [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["make"]
        docker [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["docker build ."]
        test [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["test"]
        "##,
    );
    check(
        files,
        &[],
        &options(),
        r##"
        docker [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["docker build ."]
        never [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["echo"]
        test [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["test"]
        "##,
    );
}

/// Includes that need a server or the network are refused, each with a hint.
#[test]
fn remote_project_template_and_component_includes_are_refused() {
    check(
        &[(
            CI,
            r#"
            include:
              - remote: https://example.com/ci.yml
              - project: my-group/my-project
                file: /templates/ci.yml
              - template: Auto-DevOps.gitlab-ci.yml
              - component: $CI_SERVER_FQDN/my-org/components/scan@1.0
              - https://example.com/short.yml
            job:
              script: [echo]
            "#,
        )],
        MAIN,
        &options(),
        r##"
        error 2:5 include:remote is not available when running locally
          hint: it needs a server or network access; copy the file into this repository and use include:local
        error 3:5 include:project is not available when running locally
          hint: it needs a server or network access; copy the file into this repository and use include:local
        error 5:5 include:template is not available when running locally
          hint: it needs a server or network access; copy the file into this repository and use include:local
        error 6:5 include:component is not available when running locally
          hint: it needs a server or network access; copy the file into this repository and use include:local
        error 7:5 include `https://example.com/short.yml` is a remote include
          hint: remote includes need network access; vendor the file into the repository and use include:local
        "##,
    );
}

/// A missing file, `./` and `..` paths, entries without `local:`, and broken YAML in an
/// included file (located in that file).
#[test]
fn include_local_errors() {
    check(
        &[
            (
                CI,
                r#"
                include:
                  - local: missing.yml
                  - local: ./relative.yml
                  - local: ci/../escape.yml
                  - rules: [{when: always}]
                  - 42
                  - broken.yml
                job:
                  script: [echo]
                "#,
            ),
            ("broken.yml", "job2:\n  script: [unclosed\n"),
        ],
        MAIN,
        &options(),
        r##"
        error 2:5 Local include file cannot be found missing.yml (include:local: no such file)
        error 3:5 `./relative.yml` for include:local is invalid. Gitlab does not support relative path (ie. cannot start with `./`).
        error 4:5 `ci/../escape.yml` for include:local is invalid. Gitlab does not support directory traversal.
        error 5:5 include entries need `local:` (a path in this repository)
        error 6:5 include takes a path or a mapping, not an integer
        error broken.yml:3:1 invalid YAML in broken.yml: while parsing a flow sequence, expected ',' or ']'
        "##,
    );
}

/// "`configs/**/*.yml` matches all `.yml` files only in subfolders of `configs`" (and
/// `configs/**.yml` matches them at any depth).
/// <https://docs.gitlab.com/ci/yaml/includes/#use-includelocal-with-wildcard-file-paths>
#[test]

fn include_double_star_slash_matches_only_subfolders() {
    check(
        &[
            (CI, "include: 'configs/**/*.yml'\n"),
            ("configs/top.yml", "top:\n  script: [top]\n"),
            ("configs/sub/inner.yml", "inner:\n  script: [inner]\n"),
        ],
        MAIN,
        &options(),
        r##"
        inner [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["inner"]
        "##,
    );
}

/// "The YAML file must have the extension `.yml` or `.yaml`."
/// <https://docs.gitlab.com/ci/yaml/#includelocal>
#[test]

fn include_local_requires_a_yaml_extension() {
    check(
        &[(CI, "include: ci/jobs.txt\njob:\n  script: [echo]\n"), ("ci/jobs.txt", "other:\n  script: [echo]\n")],
        MAIN,
        &options(),
        r##"
        error 1:10 Included file `ci/jobs.txt` does not have YAML extension!
        "##,
    );
}

// ---------------------------------------------------------------------------------------------
// workflow:rules
// ---------------------------------------------------------------------------------------------

/// The first matching workflow rule's variables override global ones; job variables and rule
/// variables override both. <https://docs.gitlab.com/ci/yaml/#workflowrulesvariables>
#[test]
fn workflow_rules_variables() {
    let files: &[(&str, &str)] = &[(
        CI,
        r#"
        variables:
          DEPLOY_VARIABLE: default-deploy
        workflow:
          rules:
            - if: $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH
              variables:
                DEPLOY_VARIABLE: deploy-production
            - if: $CI_COMMIT_BRANCH =~ /feature/
              variables:
                IS_A_FEATURE: "true"
            - if: $CI_COMMIT_BRANCH
        job1:
          variables:
            DEPLOY_VARIABLE: job1-default-deploy
          rules:
            - if: $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH
              variables:
                DEPLOY_VARIABLE: job1-deploy-production
            - when: on_success
          script: [echo $DEPLOY_VARIABLE]
        job2:
          script: [echo $DEPLOY_VARIABLE]
        "#,
    )];
    check(
        files,
        MAIN,
        &options(),
        r##"
        job1 [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=DEPLOY_VARIABLE=job1-deploy-production
          script: ["echo $DEPLOY_VARIABLE"]
        job2 [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=DEPLOY_VARIABLE=deploy-production
          script: ["echo $DEPLOY_VARIABLE"]
        "##,
    );
    check(
        files,
        FEATURE,
        &options(),
        r##"
        job1 [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=DEPLOY_VARIABLE=job1-default-deploy,IS_A_FEATURE=true
          script: ["echo $DEPLOY_VARIABLE"]
        job2 [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=DEPLOY_VARIABLE=default-deploy,IS_A_FEATURE=true
          script: ["echo $DEPLOY_VARIABLE"]
        "##,
    );
}

/// No matching workflow rule, or a match with `when: never`: no pipeline, and no error (the
/// file is valid; `opsloop lint` says so with a note, `opsloop run` exits 0 with nothing run).
#[test]
fn workflow_rules_without_a_match_create_no_pipeline() {
    let files: &[(&str, &str)] = &[(
        CI,
        r#"
        workflow:
          rules:
            - if: $CI_COMMIT_TITLE =~ /-draft$/
              when: never
            - if: $CI_PIPELINE_SOURCE == "merge_request_event"
            - if: $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH
        job:
          script: [echo]
        "#,
    )];
    check(
        files,
        FEATURE,
        &options(),
        r##"
        no pipeline: workflow:rules create no pipeline for this ref (no rule matched, or the match says never)
        "##,
    );
    check(
        files,
        &[("CI_COMMIT_BRANCH", "main"), ("CI_DEFAULT_BRANCH", "main"), ("CI_COMMIT_TITLE", "wip-draft")],
        &options(),
        r##"
        no pipeline: workflow:rules create no pipeline for this ref (no rule matched, or the match says never)
        "##,
    );
    check(
        files,
        MAIN,
        &options(),
        r##"
        job [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["echo"]
        "##,
    );
}

// ---------------------------------------------------------------------------------------------
// rules
// ---------------------------------------------------------------------------------------------

/// Every operator of CI/CD variable expressions: `==`, `!=` (strings, variables, `null`, ""),
/// a variable alone (defined and non-empty), `=~`/`!~` with flags and with a regex stored in a
/// variable, `&&` binding tighter than `||`, parentheses; job variables are visible.
/// <https://docs.gitlab.com/ci/jobs/job_rules/#cicd-variable-expressions>
#[test]
fn rules_if_operators() {
    check(
        &[(
            CI,
            r#"
            variables:
              EMPTY: ""
              PATTERN: /^feat/
            eq:         {script: [x], rules: [{if: '$CI_COMMIT_BRANCH == "feature/login"'}]}
            eq-single:  {script: [x], rules: [{if: "$CI_COMMIT_BRANCH == 'feature/login'"}]}
            eq-no:      {script: [x], rules: [{if: '$CI_COMMIT_BRANCH == "main"'}]}
            ne:         {script: [x], rules: [{if: '$CI_COMMIT_BRANCH != "main"'}]}
            var-var:    {script: [x], rules: [{if: '$CI_COMMIT_BRANCH != $CI_DEFAULT_BRANCH'}]}
            null-undef: {script: [x], rules: [{if: '$UNDEFINED == null'}]}
            null-empty: {script: [x], rules: [{if: '$EMPTY == null'}]}
            empty-eq:   {script: [x], rules: [{if: '$EMPTY == ""'}]}
            present:    {script: [x], rules: [{if: '$CI_COMMIT_BRANCH'}]}
            present-no: {script: [x], rules: [{if: '$EMPTY'}]}
            match:      {script: [x], rules: [{if: '$CI_COMMIT_BRANCH =~ /^feature\//'}]}
            match-no:   {script: [x], rules: [{if: '$CI_COMMIT_BRANCH =~ /^FEATURE/'}]}
            match-i:    {script: [x], rules: [{if: '$CI_COMMIT_BRANCH =~ /^FEATURE/i'}]}
            not-match:  {script: [x], rules: [{if: '$CI_COMMIT_BRANCH !~ /^release/'}]}
            match-undef: {script: [x], rules: [{if: '$UNDEFINED =~ /.*/'}]}
            match-var:  {script: [x], rules: [{if: '$CI_COMMIT_BRANCH =~ $PATTERN'}]}
            and:        {script: [x], rules: [{if: '$CI_COMMIT_BRANCH && $EMPTY'}]}
            or:         {script: [x], rules: [{if: '$EMPTY || $CI_COMMIT_BRANCH'}]}
            precedence: {script: [x], rules: [{if: '$CI_COMMIT_BRANCH || $EMPTY && $UNDEFINED'}]}
            parens:     {script: [x], rules: [{if: '($CI_COMMIT_BRANCH || $EMPTY) && $UNDEFINED'}]}
            job-var:
              variables: {KIND: docs}
              rules: [{if: '$KIND == "docs"'}]
              script: [x]
            "#,
        )],
        FEATURE,
        &options(),
        r##"
        eq [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=EMPTY=,PATTERN=/^feat/
          script: ["x"]
        eq-single [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=EMPTY=,PATTERN=/^feat/
          script: ["x"]
        ne [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=EMPTY=,PATTERN=/^feat/
          script: ["x"]
        var-var [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=EMPTY=,PATTERN=/^feat/
          script: ["x"]
        null-undef [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=EMPTY=,PATTERN=/^feat/
          script: ["x"]
        empty-eq [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=EMPTY=,PATTERN=/^feat/
          script: ["x"]
        present [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=EMPTY=,PATTERN=/^feat/
          script: ["x"]
        match [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=EMPTY=,PATTERN=/^feat/
          script: ["x"]
        match-i [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=EMPTY=,PATTERN=/^feat/
          script: ["x"]
        not-match [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=EMPTY=,PATTERN=/^feat/
          script: ["x"]
        match-var [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=EMPTY=,PATTERN=/^feat/
          script: ["x"]
        or [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=EMPTY=,PATTERN=/^feat/
          script: ["x"]
        precedence [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=EMPTY=,PATTERN=/^feat/
          script: ["x"]
        job-var [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=EMPTY=,PATTERN=/^feat/,KIND=docs
          script: ["x"]
        "##,
    );
}

/// An expression that does not parse is an error at the `if:` value.
#[test]
fn rules_if_syntax_error() {
    check(
        &[(
            CI,
            r#"
            job:
              script: [x]
              rules:
                - if: $A == "x" &&
            "#,
        )],
        MAIN,
        &options(),
        r##"
        error 4:11 rules:rule if invalid expression syntax in `$A == "x" &&`: expected an operand after '&&', found end of input at offset 12
        "##,
    );
}

/// `exists` (plain, glob, `paths:` form, with a job variable); `changes` holds when there is
/// no push to compare with ("For new branch pipelines or when there is no Git push event,
/// rules: changes always evaluates to true"). <https://docs.gitlab.com/ci/yaml/#rulesexists>
#[test]
fn rules_exists_and_changes() {
    check(
        &[
            (
                CI,
                r#"
                docker:
                  script: [docker build .]
                  rules:
                    - exists: [Dockerfile]
                anywhere:
                  variables:
                    DOCKERPATH: "**/Dockerfile"
                  script: [x]
                  rules:
                    - exists: [$DOCKERPATH]
                md-root:
                  script: [x]
                  rules:
                    - exists: ["*.md"]
                md-any:
                  script: [x]
                  rules:
                    - exists:
                        paths: ["**/*.md"]
                missing:
                  script: [x]
                  rules:
                    - exists: [package.json, "src/*.js"]
                changed:
                  script: [x]
                  rules:
                    - changes: [docs/**/*]
                      when: manual
                      allow_failure: true
                changed-paths:
                  script: [x]
                  rules:
                    - if: $CI_PIPELINE_SOURCE == "push"
                      changes:
                        paths: [src/*]
                "#,
            ),
            ("Dockerfile", ""),
            ("services/api/Dockerfile", ""),
            ("docs/guide/intro.md", ""),
            ("src/lib/main.js", ""),
        ],
        MAIN,
        &options(),
        r##"
        docker [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["docker build ."]
        anywhere [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=DOCKERPATH=**/Dockerfile
          script: ["x"]
        md-any [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["x"]
        changed [test] when=manual allow_failure=yes needs=- artifacts_from=- vars=-
          script: ["x"]
        changed-paths [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["x"]
        "##,
    );
}

/// "To test the existence of a directory, the path must end with a forward slash (/)."
/// <https://docs.gitlab.com/ci/yaml/#rulesexists>
#[test]

fn rules_exists_directory_with_trailing_slash() {
    check(
        &[
            (
                CI,
                r#"
                docs:
                  script: [x]
                  rules:
                    - exists: [docs/]
                "#,
            ),
            ("docs/guide/intro.md", ""),
        ],
        MAIN,
        &options(),
        r##"
        docs [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["x"]
        "##,
    );
}

/// `exists` globs use `File.fnmatch` with `FNM_EXTGLOB`, so `{a,b}` alternatives work.
/// <https://docs.gitlab.com/ci/yaml/#rulesexists>
#[test]

fn rules_exists_brace_alternatives() {
    check(
        &[
            (
                CI,
                r#"
                scripts:
                  script: [x]
                  rules:
                    - exists: ["tools/*.{rb,py}"]
                "#,
            ),
            ("tools/gen.py", ""),
        ],
        MAIN,
        &options(),
        r##"
        scripts [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["x"]
        "##,
    );
}

/// The first matching rule decides: `when` (never/manual/always/delayed + `start_in`/
/// on_failure), `allow_failure` (overriding the job's), `variables` (overriding the job's) and
/// `needs` (replacing the job's); no match leaves the job out. A job-level `when` is used when
/// the rules give none. <https://docs.gitlab.com/ci/yaml/#rules>
#[test]
fn rules_when_allow_failure_variables_and_needs() {
    check(
        &[(
            CI,
            r#"
            stages: [build, test]
            build-dev:
              stage: build
              script: [make dev]
              rules:
                - if: $CI_COMMIT_BRANCH != $CI_DEFAULT_BRANCH
            build-prod:
              stage: build
              script: [make prod]
              rules:
                - if: $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH
            tests:
              script: [make test]
              needs: [build-dev, build-prod]
              rules:
                - if: $CI_COMMIT_BRANCH != $CI_DEFAULT_BRANCH
                  needs: [build-dev]
                - if: $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH
                  needs: [{job: build-prod, artifacts: false}]
            excluded:
              script: [x]
              rules:
                - if: $CI_COMMIT_BRANCH == "main"
                  when: never
                - when: always
            no-match:
              script: [x]
              rules:
                - if: $CI_PIPELINE_SOURCE == "schedule"
            manual-allowed:
              script: [x]
              allow_failure: false
              rules:
                - if: $CI_COMMIT_BRANCH
                  when: manual
                  allow_failure: true
            always-vars:
              script: [x]
              variables:
                DEPLOY_VARIABLE: default-deploy
              rules:
                - if: $CI_COMMIT_REF_NAME == $CI_DEFAULT_BRANCH
                  when: always
                  variables:
                    DEPLOY_VARIABLE: deploy-production
                    IS_MAIN: "true"
            delayed:
              script: [x]
              rules:
                - when: delayed
                  start_in: 30 minutes
            on-failure:
              script: [x]
              rules:
                - if: $CI_COMMIT_BRANCH
                  when: on_failure
                  allow_failure:
                    exit_codes: [3, 4]
            job-level-when:
              script: [x]
              when: manual
              rules:
                - if: $CI_COMMIT_BRANCH
            "#,
        )],
        MAIN,
        &options(),
        r##"
        stages: .pre, build, test, .post
        build-prod [build] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["make prod"]
        tests [test] when=on_success allow_failure=no needs=[build-prod (no artifacts)] artifacts_from=- vars=-
          script: ["make test"]
        manual-allowed [test] when=manual allow_failure=yes needs=- artifacts_from=[build-prod] vars=-
          script: ["x"]
        always-vars [test] when=always allow_failure=no needs=- artifacts_from=[build-prod] vars=DEPLOY_VARIABLE=deploy-production,IS_MAIN=true
          script: ["x"]
        delayed [test] when=delayed allow_failure=no needs=- artifacts_from=[build-prod] vars=-
          script: ["x"]
          start_in: 30 minutes
        on-failure [test] when=on_failure allow_failure=exit_codes=3,4 needs=- artifacts_from=[build-prod] vars=-
          script: ["x"]
        job-level-when [test] when=manual allow_failure=yes needs=- artifacts_from=[build-prod] vars=-
          script: ["x"]
        "##,
    );
}

/// "When using `rules:when: manual` to add a manual job: `allow_failure` becomes `false` by
/// default. This default is the opposite of using `when: manual` to add a manual job."
/// <https://docs.gitlab.com/ci/yaml/#ruleswhen>
#[test]

fn rules_when_manual_defaults_allow_failure_to_false() {
    check(
        &[(
            CI,
            r#"
            from-rules:
              script: [x]
              rules:
                - when: manual
            job-level:
              script: [x]
              when: manual
            "#,
        )],
        MAIN,
        &options(),
        r##"
        from-rules [test] when=manual allow_failure=no needs=- artifacts_from=- vars=-
          script: ["x"]
        job-level [test] when=manual allow_failure=yes needs=- artifacts_from=- vars=-
          script: ["x"]
        "##,
    );
}

/// "If a rule matches and has no `when` defined, the rule uses the `when` defined for the job"
/// — also when other rules of the job do define `when`.
/// <https://docs.gitlab.com/ci/yaml/#rulesif>
#[test]

fn rule_without_when_uses_the_job_level_when() {
    check(
        &[(
            CI,
            r#"
            deploy:
              script: [x]
              when: manual
              rules:
                - if: $CI_PIPELINE_SOURCE == "schedule"
                  when: always
                - if: $CI_COMMIT_BRANCH
            "#,
        )],
        MAIN,
        &options(),
        r##"
        deploy [test] when=manual allow_failure=yes needs=- artifacts_from=- vars=-
          script: ["x"]
        "##,
    );
}

/// Pipeline variables (run pipeline with variables, CLI `--variable`) take precedence over
/// variables defined in `.gitlab-ci.yml`, also in `rules:if`. (`vars=` lists the YAML
/// variables; pipeline variables are added on top when the job runs.)
/// <https://docs.gitlab.com/ci/variables/#cicd-variable-precedence>
#[test]

fn pipeline_variables_override_yaml_variables_in_rules() {
    check(
        &[(
            CI,
            r#"
            variables:
              TARGET: staging
            deploy:
              script: [x]
              rules:
                - if: $TARGET == "production"
            "#,
        )],
        &[("CI_COMMIT_BRANCH", "main")],
        &PlanOptions { pipeline_variables: vec![("TARGET".to_owned(), "production".to_owned())], ..options() },
        r##"
        deploy [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=TARGET=staging
          script: ["x"]
        "##,
    );
}

// ---------------------------------------------------------------------------------------------
// only / except
// ---------------------------------------------------------------------------------------------

/// `only`/`except` refs: branch names, `branches`, `tags`, pipeline-source keywords and
/// `/regex/` refs (with flags). <https://docs.gitlab.com/ci/yaml/deprecated_keywords/#onlyrefs--exceptrefs>
#[test]
fn only_except_refs() {
    let files: &[(&str, &str)] = &[(
        CI,
        r#"
        default-job:       {script: [x]}
        only-main:         {script: [x], only: [main]}
        only-branches:     {script: [x], only: [branches]}
        only-tags:         {script: [x], only: [tags]}
        only-regex:        {script: [x], only: ['/^release-.*$/', '/^v\d+\.\d+/']}
        only-regex-i:      {script: [x], only: ['/^MAIN$/i']}
        only-schedules:    {script: [x], only: [schedules]}
        only-pushes:       {script: [x], only: {refs: [pushes]}}
        except-main:       {script: [x], except: [main]}
        except-tags:       {script: [x], except: [tags]}
        branches-not-main: {script: [x], only: [branches], except: [main]}
        "#,
    )];
    check(
        files,
        MAIN,
        &options(),
        r##"
        default-job [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["x"]
        only-main [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["x"]
        only-branches [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["x"]
        only-regex-i [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["x"]
        only-pushes [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["x"]
        except-tags [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["x"]
        "##,
    );
    check(
        files,
        TAG,
        &options(),
        r##"
        default-job [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["x"]
        only-tags [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["x"]
        only-regex [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["x"]
        only-pushes [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["x"]
        except-main [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["x"]
        "##,
    );
}

/// `only:variables`/`except:variables`: any expression of the list; with `refs`, `only`
/// needs both keys to match. <https://docs.gitlab.com/ci/jobs/job_control/#combine-multiple-keywords-with-only-or-except>
#[test]
fn only_except_variables() {
    check(
        &[(
            CI,
            r#"
            deploy:
              script: [cap staging deploy]
              only:
                variables:
                  - $RELEASE == "staging"
                  - $STAGING
            deploy-main:
              script: [x]
              only:
                refs: [main]
                variables: [$RELEASE == "staging"]
            deploy-other:
              script: [x]
              only:
                refs: [other]
                variables: [$RELEASE == "staging"]
            skip-e2e:
              script: [x]
              except:
                variables:
                  - $CI_COMMIT_MESSAGE =~ /skip-e2e/
            keep:
              script: [x]
              except:
                variables: [$NOPE]
            "#,
        )],
        &[
            ("CI_COMMIT_BRANCH", "main"),
            ("CI_COMMIT_REF_NAME", "main"),
            ("RELEASE", "staging"),
            ("CI_COMMIT_MESSAGE", "fix: typo [skip-e2e]"),
        ],
        &options(),
        r##"
        deploy [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["cap staging deploy"]
        deploy-main [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["x"]
        keep [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["x"]
        "##,
    );
}

/// "`except` excludes the job if **any** of the keys have at least one condition that
/// matches." <https://docs.gitlab.com/ci/jobs/job_control/#combine-multiple-keywords-with-only-or-except>
#[test]

fn except_excludes_when_any_key_matches() {
    check(
        &[(
            CI,
            r#"
            test-e2e:
              script: [x]
              except:
                refs: [devel]
                variables:
                  - $CI_COMMIT_MESSAGE =~ /version upgrade/
            kept:
              script: [x]
            "#,
        )],
        &[
            ("CI_COMMIT_BRANCH", "main"),
            ("CI_COMMIT_REF_NAME", "main"),
            ("CI_COMMIT_MESSAGE", "chore: version upgrade to 2.0"),
        ],
        &options(),
        r##"
        kept [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["x"]
        "##,
    );
}

/// "If a job does not use `only`, `except`, or `rules`, then `only` is set to `branches` and
/// `tags` by default" — "Jobs with no rules default to `except: merge_requests`", so they are
/// not in merge request pipelines. <https://docs.gitlab.com/ci/jobs/job_rules/#avoid-duplicate-pipelines>
#[test]

fn jobs_without_rules_are_not_in_merge_request_pipelines() {
    check(
        &[(
            CI,
            r#"
            job-with-no-rules:
              script: [x]
            job-with-rules:
              script: [x]
              rules:
                - if: $CI_PIPELINE_SOURCE == "merge_request_event"
            "#,
        )],
        &[
            ("CI_PIPELINE_SOURCE", "merge_request_event"),
            ("CI_COMMIT_REF_NAME", "feature/login"),
            ("CI_MERGE_REQUEST_IID", "7"),
        ],
        &options(),
        r##"
        job-with-rules [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["x"]
        "##,
    );
}

/// `rules` cannot be combined with `only`/`except`.
#[test]
fn rules_with_only_is_an_error() {
    check(
        &[(
            CI,
            r#"
            job:
              script: [x]
              only: [main]
              rules:
                - when: always
            "#,
        )],
        MAIN,
        &options(),
        r##"
        error 1:1 job: rules cannot be used with only/except
        "##,
    );
}

// ---------------------------------------------------------------------------------------------
// Job keywords
// ---------------------------------------------------------------------------------------------

/// `retry` as a number or `{max, when, exit_codes}` (single values or lists); above 2 is an
/// error (the verdict table, `tests/verdicts.rs`). <https://docs.gitlab.com/ci/yaml/#retry>
#[test]
fn retry_forms() {
    check(
        &[(
            CI,
            r#"
            plain:
              script: [rspec]
              retry: 2
            test_advanced:
              script: [exit 137]
              retry:
                max: 2
                when: runner_system_failure
                exit_codes: 137
            lists:
              script: [x]
              retry:
                max: 1
                when: [runner_system_failure, stuck_or_timeout_failure]
                exit_codes: [255, 137]
            zero:
              script: [x]
              retry: 0
            "#,
        )],
        MAIN,
        &options(),
        r##"
        plain [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["rspec"]
          retry: max=2 when=[] exit_codes=[]
        test_advanced [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["exit 137"]
          retry: max=2 when=["runner_system_failure"] exit_codes=[137]
        lists [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["x"]
          retry: max=1 when=["runner_system_failure", "stuck_or_timeout_failure"] exit_codes=[255, 137]
        zero [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["x"]
        "##,
    );
    check(
        &[(
            CI,
            r#"
            wrong:
              script: [x]
              retry: twice
            "#,
        )],
        MAIN,
        &options(),
        r##"
        error 3:10 retry takes 0, 1, 2 or {max, when, exit_codes}
        "##,
    );
}

/// `retry:when` takes the listed failure types only ("Supported values: A single failure type,
/// or an array of one or more failure types: always, unknown_failure, script_failure, …").
/// <https://docs.gitlab.com/ci/yaml/#retrywhen>
#[test]

fn retry_when_rejects_unknown_failure_types() {
    check(
        &[(
            CI,
            r#"
            job:
              script: [x]
              retry:
                max: 2
                when: [script_failure, on_tuesdays]
            "#,
        )],
        MAIN,
        &options(),
        r##"
        error 5:11 jobs:job:retry when contains unknown values: on_tuesdays
        "##,
    );
}

/// `when` at job level, `timeout`, `when: delayed` + `start_in`, `resource_group`,
/// `coverage`, `environment` (string and mapping), `allow_failure` (bool and exit codes).
#[test]
fn when_timeout_delayed_environment_and_friends() {
    check(
        &[(
            CI,
            r#"
            stages: [build, cleanup_build, test, deploy, cleanup]
            build_job:
              stage: build
              script: [make build]
              timeout: 3h 30m
              coverage: '/Code coverage: \d+(?:\.\d+)?/'
            cleanup_build_job:
              stage: cleanup_build
              script: [cleanup build when failed]
              when: on_failure
            test_job:
              stage: test
              script: [make test]
              allow_failure:
                exit_codes: 137
            test_job_2:
              stage: test
              script: [exit 137]
              allow_failure:
                exit_codes: [137, 255]
            flaky:
              stage: test
              script: [x]
              allow_failure: true
            deploy_job:
              stage: deploy
              script: [make deploy]
              when: manual
              environment: production
              resource_group: production
            deploy_review:
              stage: deploy
              script: [make review]
              when: delayed
              start_in: 30 minutes
              environment:
                name: review/$CI_COMMIT_REF_SLUG
                url: https://$CI_ENVIRONMENT_SLUG.example.com/
                on_stop: stop_review
                deployment_tier: development
            stop_review:
              stage: deploy
              script: [make delete-app]
              when: manual
              allow_failure: false
              environment:
                name: review/$CI_COMMIT_REF_SLUG
                action: stop
            cleanup_job:
              stage: cleanup
              script: [cleanup after jobs]
              when: always
            "#,
        )],
        MAIN,
        &options(),
        r##"
        stages: .pre, build, cleanup_build, test, deploy, cleanup, .post
        build_job [build] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["make build"]
          timeout: 3h 30m
          coverage: /Code coverage: \d+(?:\.\d+)?/
        cleanup_build_job [cleanup_build] when=on_failure allow_failure=no needs=- artifacts_from=[build_job] vars=-
          script: ["cleanup build when failed"]
        test_job [test] when=on_success allow_failure=exit_codes=137 needs=- artifacts_from=[build_job; cleanup_build_job] vars=-
          script: ["make test"]
        test_job_2 [test] when=on_success allow_failure=exit_codes=137,255 needs=- artifacts_from=[build_job; cleanup_build_job] vars=-
          script: ["exit 137"]
        flaky [test] when=on_success allow_failure=yes needs=- artifacts_from=[build_job; cleanup_build_job] vars=-
          script: ["x"]
        deploy_job [deploy] when=manual allow_failure=yes needs=- artifacts_from=[build_job; cleanup_build_job; test_job; test_job_2; flaky] vars=-
          script: ["make deploy"]
          environment: name="production"
          resource_group: production
        deploy_review [deploy] when=delayed allow_failure=no needs=- artifacts_from=[build_job; cleanup_build_job; test_job; test_job_2; flaky] vars=-
          script: ["make review"]
          environment: name="review/$CI_COMMIT_REF_SLUG" url="https://$CI_ENVIRONMENT_SLUG.example.com/" on_stop="stop_review" deployment_tier="development"
          start_in: 30 minutes
        stop_review [deploy] when=manual allow_failure=no needs=- artifacts_from=[build_job; cleanup_build_job; test_job; test_job_2; flaky] vars=-
          script: ["make delete-app"]
          environment: name="review/$CI_COMMIT_REF_SLUG" action="stop"
        cleanup_job [cleanup] when=always allow_failure=no needs=- artifacts_from=[build_job; cleanup_build_job; test_job; test_job_2; flaky; deploy_job; deploy_review; stop_review] vars=-
          script: ["cleanup after jobs"]
        "##,
    );
}

/// "`start_in` only works when `when` is set to `delayed`. If you use any other value for
/// `when`, the configuration is invalid. If a job uses `rules`, `start_in` and `when` must be
/// defined in the `rules`, not at the job level." <https://docs.gitlab.com/ci/yaml/#start_in>
#[test]

fn start_in_needs_when_delayed_and_no_rules() {
    check(
        &[(
            CI,
            r#"
            not-delayed:
              script: [x]
              start_in: 5 minutes
            with-rules:
              script: [x]
              when: delayed
              start_in: 5 minutes
              rules:
                - if: $CI_COMMIT_BRANCH
            "#,
        )],
        MAIN,
        &options(),
        r##"
        error 3:13 jobs:not-delayed start in must be blank when not delayed
        error 7:13 jobs:with-rules config key may not be used with `rules`: start_in
        "##,
    );
}

/// `artifacts`: paths, exclude, name, untracked, expire_in, `when` (on_success by default,
/// on_failure, always) and `reports:junit`/`reports:dotenv` (a path or a list).
/// <https://docs.gitlab.com/ci/yaml/#artifacts>
#[test]
fn artifacts_when_and_reports() {
    check(
        &[(
            CI,
            r#"
            stages: [build, test]
            build:
              stage: build
              script: [make]
              artifacts:
                name: job1-artifacts-file
                paths: [binaries/, .config]
                exclude: [binaries/**/*.o]
                expire_in: 1 week
                reports:
                  dotenv: build.env
            rspec:
              script: [rspec]
              artifacts:
                when: on_failure
                untracked: true
                reports:
                  junit: [rspec.xml, other.xml]
            always:
              script: [x]
              artifacts:
                when: always
                paths: [screenshots/]
            "#,
        )],
        MAIN,
        &options(),
        r##"
        stages: .pre, build, test, .post
        build [build] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["make"]
          artifacts: when=on_success name="job1-artifacts-file" paths=["binaries/", ".config"] exclude=["binaries/**/*.o"] expire_in="1 week" reports:dotenv=["build.env"]
        rspec [test] when=on_success allow_failure=no needs=- artifacts_from=[build] vars=-
          script: ["rspec"]
          artifacts: when=on_failure untracked reports:junit=["rspec.xml", "other.xml"]
        always [test] when=on_success allow_failure=no needs=- artifacts_from=[build] vars=-
          script: ["x"]
          artifacts: when=always paths=["screenshots/"]
        "##,
    );
    check(
        &[(
            CI,
            r#"
            bad:
              script: [x]
              artifacts:
                when: sometimes
            "#,
        )],
        MAIN,
        &options(),
        r##"
        error 4:11 when must be on_success, on_failure or always
        "##,
    );
}

/// `cache`: a key (default `default`), several caches, `key:files` with `prefix`, `policy`,
/// `when`, `untracked`, `fallback_keys`; an unknown policy is an error.
/// <https://docs.gitlab.com/ci/yaml/#cache>
#[test]
fn cache_forms() {
    check(
        &[(
            CI,
            r#"
            rspec:
              script: [rspec]
              cache:
                key: gems-$CI_COMMIT_REF_SLUG
                paths: [rspec/]
                fallback_keys: [gems]
                when: always
            no-key:
              script: [x]
              cache:
                untracked: true
            files:
              script: [x]
              cache:
                - key:
                    files: [Gemfile.lock, package.json]
                  paths: [vendor/ruby, node_modules]
                  policy: pull
                - key:
                    files: [Gemfile.lock]
                    prefix: $CI_JOB_NAME
                  paths: [vendor/ruby]
                  policy: push
            "#,
        )],
        MAIN,
        &options(),
        r##"
        rspec [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["rspec"]
          cache: key="gems-$CI_COMMIT_REF_SLUG" paths=["rspec/"] policy=pull-push when=always fallback_keys=["gems"]
        no-key [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["x"]
          cache: key="default" paths=[] policy=pull-push when=on_success untracked
        files [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["x"]
          cache: key=files["Gemfile.lock", "package.json"] paths=["vendor/ruby", "node_modules"] policy=pull when=on_success
          cache: key="$CI_JOB_NAME"-files["Gemfile.lock"] paths=["vendor/ruby"] policy=push when=on_success
        "##,
    );
    check(
        &[(
            CI,
            r#"
            bad-policy:
              script: [x]
              cache:
                paths: [x]
                policy: sometimes
            "#,
        )],
        MAIN,
        &options(),
        r##"
        error 4:5 cache:policy `sometimes` is not pull, push or pull-push
        "##,
    );
}

// ---------------------------------------------------------------------------------------------
// needs, dependencies, parallel
// ---------------------------------------------------------------------------------------------

/// The `needs` DAG: `needs: []` starts at once, needs in the same stage are allowed, only
/// needed jobs' artifacts are received (`artifacts: false` opts out), `optional: true` needs
/// are dropped when the job is not in the pipeline, a parallel job is needed as all its
/// instances. <https://docs.gitlab.com/ci/yaml/#needs>
#[test]
fn needs_dag_optional_and_artifacts() {
    check(
        &[(
            CI,
            r#"
            linux:build:
              stage: build
              script: [echo Building linux...]
            mac:build:
              stage: build
              script: [echo Building mac...]
              parallel: 2
            lint:
              stage: test
              needs: []
              script: [echo Linting...]
            linux:rspec:
              stage: test
              needs: [linux:build]
              script: [echo rspec linux]
            mac:rspec:
              stage: test
              needs:
                - job: mac:build
                  artifacts: false
                - lint
              script: [echo rspec mac]
            test-job2:
              stage: test
              script: [x]
              rules:
                - if: $CI_COMMIT_BRANCH == "release"
            deploy-job:
              stage: deploy
              needs:
                - job: test-job2
                  optional: true
                - job: linux:rspec
              script: [x]
            review-job:
              stage: deploy
              needs:
                - job: test-job2
                  optional: true
              script: [x]
            production:
              stage: deploy
              script: [echo Running production...]
            "#,
        )],
        MAIN,
        &options(),
        r##"
        linux:build [build] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["echo Building linux..."]
        mac:build: [1/2] [build] when=on_success allow_failure=no needs=- artifacts_from=- vars=CI_NODE_INDEX=1,CI_NODE_TOTAL=2
          script: ["echo Building mac..."]
        mac:build: [2/2] [build] when=on_success allow_failure=no needs=- artifacts_from=- vars=CI_NODE_INDEX=2,CI_NODE_TOTAL=2
          script: ["echo Building mac..."]
        lint [test] when=on_success allow_failure=no needs=[] artifacts_from=- vars=-
          script: ["echo Linting..."]
        linux:rspec [test] when=on_success allow_failure=no needs=[linux:build] artifacts_from=[linux:build] vars=-
          script: ["echo rspec linux"]
        mac:rspec [test] when=on_success allow_failure=no needs=[mac:build: [1/2] (no artifacts); mac:build: [2/2] (no artifacts); lint] artifacts_from=[lint] vars=-
          script: ["echo rspec mac"]
        deploy-job [deploy] when=on_success allow_failure=no needs=[linux:rspec] artifacts_from=[linux:rspec] vars=-
          script: ["x"]
        review-job [deploy] when=on_success allow_failure=no needs=[] artifacts_from=- vars=-
          script: ["x"]
        production [deploy] when=on_success allow_failure=no needs=- artifacts_from=[linux:build; mac:build: [1/2]; mac:build: [2/2]; lint; linux:rspec; mac:rspec] vars=-
          script: ["echo Running production..."]
        "##,
    );
}

/// Unknown needed job, a need in a later stage, a self-dependency and a required need of a
/// job that rules left out are all reported at once, at the `needs` entry.
#[test]
fn needs_errors() {
    check(
        &[(
            CI,
            r#"
            build:
              stage: build
              script: [x]
              needs: [deploy]
            test:
              script: [x]
              needs: [nope, test]
            maybe:
              script: [x]
              rules:
                - if: $NEVER_SET
            deploy:
              stage: deploy
              script: [x]
              needs:
                - maybe
                - job: nope-optional
                  optional: true
            "#,
        )],
        MAIN,
        &options(),
        r##"
        error 4:11 needs: [deploy] for build is in a future stage
        error 7:11 needs: [nope] for test could not be found
        error 7:17 This GitLab CI configuration is invalid: The pipeline has circular dependencies: self-dependency: test.
        error 16:7 maybe is when:never, but its needed by deploy
        "##,
    );
}

/// A cycle through `needs` is an error that names the cycle, at the `needs` entry that starts it.
#[test]
fn needs_cycle_is_named() {
    check(
        &[(
            CI,
            r#"
            a:
              script: [x]
              needs: [c]
            b:
              script: [x]
              needs: [a]
            c:
              script: [x]
              needs: [b]
            d:
              script: [x]
              needs: [a]
            "#,
        )],
        MAIN,
        &options(),
        r##"
        error 3:11 needs form a cycle: a → c → b → a
        "##,
    );
}

/// `dependencies` restricts artifacts to the listed jobs (`[]`: none); an undefined job, or one
/// its rules leave out (the verdict table), is an error; with `needs`, only needed jobs whose
/// artifacts are wanted can deliver. <https://docs.gitlab.com/ci/yaml/#dependencies>
#[test]
fn dependencies() {
    check(
        &[(
            CI,
            r#"
            build osx:
              stage: build
              script: [make build:osx]
              artifacts: {paths: [binaries/]}
            build linux:
              stage: build
              script: [make build:linux]
              artifacts: {paths: [binaries/]}
            build win:
              stage: build
              script: [x]
              rules:
                - if: $WINDOWS
            test osx:
              stage: test
              script: [make test:osx]
              dependencies: [build osx]
            test linux:
              stage: test
              script: [make test:linux]
              dependencies: [build linux]
              needs: [{job: build linux, artifacts: false}, build osx]
            test none:
              stage: test
              script: [x]
              dependencies: []
            deploy:
              stage: deploy
              script: [make deploy]
            "#,
        )],
        MAIN,
        &options(),
        r##"
        build osx [build] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["make build:osx"]
          artifacts: when=on_success paths=["binaries/"]
        build linux [build] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["make build:linux"]
          artifacts: when=on_success paths=["binaries/"]
        test osx [test] when=on_success allow_failure=no needs=- artifacts_from=[build osx] vars=-
          script: ["make test:osx"]
        test linux [test] when=on_success allow_failure=no needs=[build linux (no artifacts); build osx] artifacts_from=- vars=-
          script: ["make test:linux"]
        test none [test] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["x"]
        deploy [deploy] when=on_success allow_failure=no needs=- artifacts_from=[build osx; build linux; test osx; test linux; test none] vars=-
          script: ["make deploy"]
        "##,
    );
    check(
        &[(
            CI,
            r#"
            test:
              script: [x]
              dependencies: [missing]
            "#,
        )],
        MAIN,
        &options(),
        r##"
        error 3:17 dependencies: [missing] for test cannot be found
        "##,
    );
}

/// "The specified jobs must all be in earlier stages."
/// <https://docs.gitlab.com/ci/yaml/#dependencies>
#[test]

fn dependencies_must_be_in_earlier_stages() {
    check(
        &[(
            CI,
            r#"
            test:
              stage: test
              script: [x]
              dependencies: [deploy]
            deploy:
              stage: deploy
              script: [x]
            "#,
        )],
        MAIN,
        &options(),
        r##"
        error 4:17 test job: dependency deploy is not defined in current or prior stages
        "##,
    );
}

/// `parallel: N` makes N instances with CI_NODE_INDEX/CI_NODE_TOTAL; `parallel:matrix` makes one
/// instance per combination, with the matrix variables; `needs:parallel:matrix` picks
/// instances. <https://docs.gitlab.com/ci/yaml/#parallelmatrix>
#[test]
fn parallel_count_and_matrix() {
    check(
        &[(
            CI,
            r#"
            test:
              script: [rspec]
              parallel: 3
            deploystacks:
              stage: deploy
              script: [bin/deploy]
              parallel:
                matrix:
                  - PROVIDER: aws
                    STACK: [monitoring, app1, app2]
                  - PROVIDER: [gcp, vultr]
                    STACK: [data, processing]
              environment: $PROVIDER/$STACK
            linux:build:
              stage: build
              script: [echo Building linux...]
              parallel:
                matrix:
                  - PROVIDER: aws
                    STACK: [monitoring, app1, app2]
            linux:rspec:
              stage: test
              needs:
                - job: linux:build
                  parallel:
                    matrix:
                      - PROVIDER: aws
                        STACK: app1
              script: [echo Running rspec on linux...]
            "#,
        )],
        MAIN,
        &options(),
        r##"
        linux:build: [aws,monitoring] [build] when=on_success allow_failure=no needs=- artifacts_from=- vars=PROVIDER=aws,STACK=monitoring,CI_NODE_INDEX=1,CI_NODE_TOTAL=3
          script: ["echo Building linux..."]
        linux:build: [aws,app1] [build] when=on_success allow_failure=no needs=- artifacts_from=- vars=PROVIDER=aws,STACK=app1,CI_NODE_INDEX=2,CI_NODE_TOTAL=3
          script: ["echo Building linux..."]
        linux:build: [aws,app2] [build] when=on_success allow_failure=no needs=- artifacts_from=- vars=PROVIDER=aws,STACK=app2,CI_NODE_INDEX=3,CI_NODE_TOTAL=3
          script: ["echo Building linux..."]
        test: [1/3] [test] when=on_success allow_failure=no needs=- artifacts_from=[linux:build: [aws,monitoring]; linux:build: [aws,app1]; linux:build: [aws,app2]] vars=CI_NODE_INDEX=1,CI_NODE_TOTAL=3
          script: ["rspec"]
        test: [2/3] [test] when=on_success allow_failure=no needs=- artifacts_from=[linux:build: [aws,monitoring]; linux:build: [aws,app1]; linux:build: [aws,app2]] vars=CI_NODE_INDEX=2,CI_NODE_TOTAL=3
          script: ["rspec"]
        test: [3/3] [test] when=on_success allow_failure=no needs=- artifacts_from=[linux:build: [aws,monitoring]; linux:build: [aws,app1]; linux:build: [aws,app2]] vars=CI_NODE_INDEX=3,CI_NODE_TOTAL=3
          script: ["rspec"]
        linux:rspec [test] when=on_success allow_failure=no needs=[linux:build: [aws,app1]] artifacts_from=[linux:build: [aws,app1]] vars=-
          script: ["echo Running rspec on linux..."]
        deploystacks: [aws,monitoring] [deploy] when=on_success allow_failure=no needs=- artifacts_from=[linux:build: [aws,monitoring]; linux:build: [aws,app1]; linux:build: [aws,app2]; test: [1/3]; test: [2/3]; test: [3/3]; linux:rspec] vars=PROVIDER=aws,STACK=monitoring,CI_NODE_INDEX=1,CI_NODE_TOTAL=7
          script: ["bin/deploy"]
          environment: name="$PROVIDER/$STACK"
        deploystacks: [aws,app1] [deploy] when=on_success allow_failure=no needs=- artifacts_from=[linux:build: [aws,monitoring]; linux:build: [aws,app1]; linux:build: [aws,app2]; test: [1/3]; test: [2/3]; test: [3/3]; linux:rspec] vars=PROVIDER=aws,STACK=app1,CI_NODE_INDEX=2,CI_NODE_TOTAL=7
          script: ["bin/deploy"]
          environment: name="$PROVIDER/$STACK"
        deploystacks: [aws,app2] [deploy] when=on_success allow_failure=no needs=- artifacts_from=[linux:build: [aws,monitoring]; linux:build: [aws,app1]; linux:build: [aws,app2]; test: [1/3]; test: [2/3]; test: [3/3]; linux:rspec] vars=PROVIDER=aws,STACK=app2,CI_NODE_INDEX=3,CI_NODE_TOTAL=7
          script: ["bin/deploy"]
          environment: name="$PROVIDER/$STACK"
        deploystacks: [gcp,data] [deploy] when=on_success allow_failure=no needs=- artifacts_from=[linux:build: [aws,monitoring]; linux:build: [aws,app1]; linux:build: [aws,app2]; test: [1/3]; test: [2/3]; test: [3/3]; linux:rspec] vars=PROVIDER=gcp,STACK=data,CI_NODE_INDEX=4,CI_NODE_TOTAL=7
          script: ["bin/deploy"]
          environment: name="$PROVIDER/$STACK"
        deploystacks: [gcp,processing] [deploy] when=on_success allow_failure=no needs=- artifacts_from=[linux:build: [aws,monitoring]; linux:build: [aws,app1]; linux:build: [aws,app2]; test: [1/3]; test: [2/3]; test: [3/3]; linux:rspec] vars=PROVIDER=gcp,STACK=processing,CI_NODE_INDEX=5,CI_NODE_TOTAL=7
          script: ["bin/deploy"]
          environment: name="$PROVIDER/$STACK"
        deploystacks: [vultr,data] [deploy] when=on_success allow_failure=no needs=- artifacts_from=[linux:build: [aws,monitoring]; linux:build: [aws,app1]; linux:build: [aws,app2]; test: [1/3]; test: [2/3]; test: [3/3]; linux:rspec] vars=PROVIDER=vultr,STACK=data,CI_NODE_INDEX=6,CI_NODE_TOTAL=7
          script: ["bin/deploy"]
          environment: name="$PROVIDER/$STACK"
        deploystacks: [vultr,processing] [deploy] when=on_success allow_failure=no needs=- artifacts_from=[linux:build: [aws,monitoring]; linux:build: [aws,app1]; linux:build: [aws,app2]; test: [1/3]; test: [2/3]; test: [3/3]; linux:rspec] vars=PROVIDER=vultr,STACK=processing,CI_NODE_INDEX=7,CI_NODE_TOTAL=7
          script: ["bin/deploy"]
          environment: name="$PROVIDER/$STACK"
        "##,
    );
}

/// `parallel` takes 1 to 200 or a `matrix` list.
#[test]
fn parallel_errors() {
    check(
        &[(
            CI,
            r#"
            zero:
              script: [x]
              parallel: 0
            too-many:
              script: [x]
              parallel: 201
            text:
              script: [x]
              parallel: many
            no-matrix:
              script: [x]
              parallel:
                count: 3
            "#,
        )],
        MAIN,
        &options(),
        r##"
        error 3:13 parallel must be between 1 and 200
        error 6:13 parallel must be between 1 and 200
        error 9:13 parallel takes a number or a matrix, not a string
        error 13:5 parallel takes a number or `matrix: [...]`
        "##,
    );
}

// ---------------------------------------------------------------------------------------------
// Diagnostics
// ---------------------------------------------------------------------------------------------

/// Unknown keys are errors at the key (job, rule), as GitLab's "config contains unknown keys",
/// with the keyword that was probably meant.
#[test]
fn unknown_keys_are_errors_with_locations_and_suggestions() {
    check(
        &[(
            CI,
            r#"
            job:
              scirpt: [typo]
              script: [x]
              rules:
                - iff: $X
                  when: always
            "#,
        )],
        MAIN,
        &options(),
        r##"
        error 2:3 jobs:job config contains unknown keys: scirpt
          hint: did you mean `script`?
        error 5:7 rules config contains unknown keys: iff
          hint: did you mean `if`?
        "##,
    );
}

/// An unknown keyword in `default:` is an error at the key, once (GitLab: "default config
/// contains unknown keys"), never copied into jobs. <https://docs.gitlab.com/ci/yaml/#default>
#[test]
fn unknown_default_keyword_is_an_error_once() {
    check(
        &[(
            CI,
            r#"
            default:
              imagee: ruby
            job:
              script: [x]
            "#,
        )],
        MAIN,
        &options(),
        r##"
        error 2:3 default config contains unknown keys: imagee
          hint: did you mean `image`?
        "##,
    );
}

/// Values of the wrong type are errors at their line and column.
#[test]
fn wrong_types_are_errors_with_locations() {
    check(
        &[(
            CI,
            r#"
            stages: {build: yes}
            variables: [A, B]
            job:
              script: {run: this}
              rules: always
              allow_failure: maybe
              when: sometimes
              needs: [1]
              cache: [gems]
              tags: [[a, b], {c: d}]
            vars:
              script: [x]
              variables:
                LIST: [a, b]
            string-job: echo hi
            "#,
        )],
        MAIN,
        &options(),
        r##"
        error 1:9 stages: must be an array
        error 2:12 variables must be a mapping, not a list
        error 4:11 job: script must be a string or a list of strings
        error 7:9 unknown when: `sometimes`
          hint: one of on_success, on_failure, always, manual, delayed, never
        error 5:10 rules must be a list
        error 6:18 allow_failure must be true, false or {exit_codes: […]}, not a string
        error 8:11 needs entries are job names or mappings, not an integer
        error 9:11 cache must be a mapping, not a string
        error 10:18 tags must be a string or a list of strings
        error 14:11 variable LIST must be a string, not a list
        error 15:1 jobs:string-job config should be a mapping, not a string
        "##,
    );
}

/// `when: never` is only for `rules` and `workflow:rules`.
/// <https://docs.gitlab.com/ci/yaml/#when>
#[test]
fn job_level_when_never_is_an_error() {
    check(
        &[(
            CI,
            r#"
            job:
              script: [x]
              when: never
            "#,
        )],
        MAIN,
        &options(),
        r##"
        error 3:9 jobs:job when:never can only be used in a rules section or workflow:rules
        "##,
    );
}

/// Invalid YAML, a non-mapping pipeline, a missing file, several documents, unknown tags.
#[test]
fn invalid_yaml_is_reported_with_line_and_column() {
    check(
        &[(
            CI,
            r#"
            job:
              script: [echo "unclosed
              stage: test
            "#,
        )],
        MAIN,
        &options(),
        r##"
        error 3:8 invalid YAML: illegal placement of ':' indicator
        "##,
    );
    check(
        &[(CI, "- just\n- a list\n")],
        MAIN,
        &options(),
        r##"
        error 1:1 the pipeline must be a mapping, not a list
        "##,
    );
    check(
        &[(CI, "a: {script: [x]}\n---\nb: {script: [y]}\n")],
        MAIN,
        &options(),
        r##"
        error 3:1 invalid YAML: a pipeline file holds one YAML document (or a `spec:` header and one document)
        "##,
    );
    check(
        &[(CI, "job:\n  script: !secret [x]\n")],
        MAIN,
        &options(),
        r##"
        error 2:11 invalid YAML: unsupported YAML tag `!secret` (opsloop knows `!reference`)
        "##,
    );
    check(
        &[(CI, "job:\n  script: [x]\n  tags: *nowhere\n")],
        MAIN,
        &options(),
        r##"
        error 3:9 invalid YAML: while parsing node, found unknown anchor
        "##,
    );
}

// ---------------------------------------------------------------------------------------------
// Selection (command-line options)
// ---------------------------------------------------------------------------------------------

const SELECTION: &str = r#"
stages: [build, test, deploy]
compile:
  stage: build
  script: [make]
assets:
  stage: build
  script: [npm run build]
unit:
  stage: test
  needs: [compile]
  script: [make test]
docs:
  stage: test
  script: [make docs]
deploy:
  stage: deploy
  needs: [unit]
  script: [make deploy]
review:
  stage: deploy
  script: [make review]
publish:
  stage: deploy
  when: manual
  script: [make publish]
gate:
  stage: deploy
  when: manual
  script: [approve]
after-gate:
  stage: deploy
  needs: [gate]
  script: [x]
"#;

/// `selected` keeps only the named jobs (a selected manual job runs as if played); with
/// `with_needs` it adds what they need, transitively (all earlier stages for a job without
/// `needs`); `only_needs` adds only `needs`.
#[test]
fn selection_of_jobs_with_and_without_needs() {
    let files: &[(&str, &str)] = &[(CI, SELECTION)];
    check(
        files,
        MAIN,
        &select(&["deploy", "publish"]),
        r##"
        deploy [deploy] when=on_success allow_failure=no needs=[] artifacts_from=- vars=-
          script: ["make deploy"]
        publish [deploy] when=on_success allow_failure=yes needs=- artifacts_from=- vars=-
          script: ["make publish"]
        "##,
    );
    check(
        files,
        MAIN,
        &PlanOptions { with_needs: true, ..select(&["deploy"]) },
        r##"
        compile [build] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["make"]
        unit [test] when=on_success allow_failure=no needs=[compile] artifacts_from=[compile] vars=-
          script: ["make test"]
        deploy [deploy] when=on_success allow_failure=no needs=[unit] artifacts_from=[unit] vars=-
          script: ["make deploy"]
        "##,
    );
    check(
        files,
        MAIN,
        &PlanOptions { with_needs: true, ..select(&["review"]) },
        r##"
        compile [build] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["make"]
        assets [build] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["npm run build"]
        unit [test] when=on_success allow_failure=no needs=[compile] artifacts_from=[compile] vars=-
          script: ["make test"]
        docs [test] when=on_success allow_failure=no needs=- artifacts_from=[compile; assets] vars=-
          script: ["make docs"]
        review [deploy] when=on_success allow_failure=no needs=- artifacts_from=[compile; assets; unit; docs] vars=-
          script: ["make review"]
        "##,
    );
    check(
        files,
        MAIN,
        &PlanOptions { only_needs: true, ..select(&["review", "deploy"]) },
        r##"
        compile [build] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["make"]
        unit [test] when=on_success allow_failure=no needs=[compile] artifacts_from=[compile] vars=-
          script: ["make test"]
        deploy [deploy] when=on_success allow_failure=no needs=[unit] artifacts_from=[unit] vars=-
          script: ["make deploy"]
        review [deploy] when=on_success allow_failure=no needs=- artifacts_from=[compile; unit] vars=-
          script: ["make review"]
        "##,
    );
    check(
        files,
        MAIN,
        &select(&["nope"]),
        r##"
        error nope could not be found
        "##,
    );
}

/// `stage` keeps one stage; `manual` plays manual jobs; a job may not wait, through `needs`,
/// on a manual job that nobody plays.
#[test]
fn selection_by_stage_and_manual_jobs() {
    let files: &[(&str, &str)] = &[(CI, SELECTION)];
    check(
        files,
        MAIN,
        &PlanOptions { stage: Some("build".to_owned()), ..options() },
        r##"
        compile [build] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["make"]
        assets [build] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["npm run build"]
        "##,
    );
    check(
        files,
        MAIN,
        &options(),
        r##"
        compile [build] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["make"]
        assets [build] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["npm run build"]
        unit [test] when=on_success allow_failure=no needs=[compile] artifacts_from=[compile] vars=-
          script: ["make test"]
        docs [test] when=on_success allow_failure=no needs=- artifacts_from=[compile; assets] vars=-
          script: ["make docs"]
        deploy [deploy] when=on_success allow_failure=no needs=[unit] artifacts_from=[unit] vars=-
          script: ["make deploy"]
        review [deploy] when=on_success allow_failure=no needs=- artifacts_from=[compile; assets; unit; docs] vars=-
          script: ["make review"]
        publish [deploy] when=manual allow_failure=yes needs=- artifacts_from=[compile; assets; unit; docs] vars=-
          script: ["make publish"]
        gate [deploy] when=manual allow_failure=yes needs=- artifacts_from=[compile; assets; unit; docs] vars=-
          script: ["approve"]
        after-gate [deploy] when=on_success allow_failure=no needs=[gate] artifacts_from=[gate] vars=-
          script: ["x"]
        run refuses: error gate is when:manual, its needed by after-gate, and not specified in --manual
        "##,
    );
    check(
        files,
        MAIN,
        &PlanOptions { manual: vec!["gate".to_owned()], stage: Some("deploy".to_owned()), ..options() },
        r##"
        deploy [deploy] when=on_success allow_failure=no needs=[] artifacts_from=- vars=-
          script: ["make deploy"]
        review [deploy] when=on_success allow_failure=no needs=- artifacts_from=- vars=-
          script: ["make review"]
        publish [deploy] when=manual allow_failure=yes needs=- artifacts_from=- vars=-
          script: ["make publish"]
        gate [deploy] when=on_success allow_failure=yes needs=- artifacts_from=- vars=-
          script: ["approve"]
        after-gate [deploy] when=on_success allow_failure=no needs=[gate] artifacts_from=[gate] vars=-
          script: ["x"]
        "##,
    );
}

// ---------------------------------------------------------------------------------------------
// Reruns and retries: a plan cut down to some of its jobs
// ---------------------------------------------------------------------------------------------

/// A rerun of `deploy`, `unit` and `integration`: they come first in plan order, the manual
/// `deploy` runs as if played (still allowed to fail, as a manual job is),
/// `unit`'s need on `build` (which ran) is dropped, and the jobs they receive artifacts from
/// follow as jobs that never run; the stages stay as they were.
#[test]
fn subset_keeps_the_named_jobs_and_hands_upstream_artifacts_on() {
    let files = [(
        CI,
        r#"
        stages: [build, test, ship]
        build:
          stage: build
          script: [make]
        lint:
          stage: build
          script: [lint]
        unit:
          stage: test
          needs: [build]
          script: [test]
        integration:
          stage: test
          needs: [build, unit]
          script: [it]
        deploy:
          stage: ship
          when: manual
          script: [ship]
        "#,
    )];
    compare(
        &run_subset(&files, MAIN, &["deploy", "unit", "integration", "unit"]),
        r##"
        stages: .pre, build, test, ship, .post
        unit [test] when=on_success allow_failure=no needs=[] artifacts_from=[build] vars=-
          script: ["test"]
        integration [test] when=on_success allow_failure=no needs=[unit] artifacts_from=[build; unit] vars=-
          script: ["it"]
        deploy [ship] when=on_success allow_failure=yes needs=- artifacts_from=[build; lint; unit; integration] vars=-
          script: ["ship"]
        build [build] when=never allow_failure=no needs=[] artifacts_from=- vars=-
          script: ["make"]
        lint [build] when=never allow_failure=no needs=[] artifacts_from=- vars=-
          script: ["lint"]
        upstream: ["build", "lint"]
        "##,
    );
    compare(&run_subset(&files, MAIN, &["deploy", "gone"]), "error: the plan has no job `gone`");
}

// ---------------------------------------------------------------------------------------------
// Robustness
// ---------------------------------------------------------------------------------------------

/// Every raw string of this file (the pipelines above and their expectations) is a seed.
fn corpus() -> Vec<String> {
    let source = include_str!("golden.rs");
    let open = "r#\"";
    let close = "\"#";
    let mut out = Vec::new();
    let mut rest = source;
    while let Some(start) = rest.find(open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(close) else { break };
        out.push(dedent(&after[..end]));
        rest = &after[end + close.len()..];
    }
    out
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next() % n as u64) as usize }
    }
}

/// Random byte deletions, insertions and duplications of a seed.
fn mutate(seed: &str, rng: &mut XorShift) -> String {
    const BYTES: &[u8] = b" \n\t:-[]{}&*!<>|'\"#,?%@`$/.\\0123456789abcxyz";
    let mut bytes = seed.as_bytes().to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(bytes.len() + 1);
        match rng.below(3) {
            0 if !bytes.is_empty() => {
                let len = (1 + rng.below(8)).min(bytes.len() - at.min(bytes.len()));
                let at = at.min(bytes.len());
                bytes.drain(at..at + len);
            }
            1 => {
                for _ in 0..=rng.below(3) {
                    let byte = BYTES[rng.below(BYTES.len())];
                    bytes.insert(at.min(bytes.len()), byte);
                }
            }
            _ => {
                let from = rng.below(bytes.len() + 1);
                let to = (from + 1 + rng.below(40)).min(bytes.len());
                let slice = bytes[from..to].to_vec();
                let at = at.min(bytes.len());
                bytes.splice(at..at, slice);
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `config::load` never panics on mutated pipelines, and `plan::plan` never panics on those
/// that load without errors.
#[test]
fn load_and_plan_never_panic_on_mutated_inputs() {
    let corpus = corpus();
    assert!(corpus.len() > 50, "the corpus has {} seeds", corpus.len());
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let option_sets = [
        options(),
        PlanOptions { with_needs: true, ..select(&["build"]) },
        PlanOptions { only_needs: true, ..select(&["deploy", "test"]) },
        PlanOptions { stage: Some("test".to_owned()), manual: vec!["deploy".to_owned()], ..options() },
    ];
    let (mut loaded, mut planned) = (0, 0);
    for round in 0..6000 {
        let main = mutate(&corpus[rng.below(corpus.len())], &mut rng);
        let included = mutate(&corpus[rng.below(corpus.len())], &mut rng);
        let files = MemFiles(BTreeMap::from([
            (CI.to_owned(), main.clone()),
            ("configs/build.yml".to_owned(), included.clone()),
            ("setup.yml".to_owned(), included.clone()),
            ("builds.yml".to_owned(), included.clone()),
            ("Dockerfile".to_owned(), String::new()),
        ]));
        let options = &option_sets[round % option_sets.len()];
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let config =
                config::load(&files, CI, &|name| MAIN.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned()));
            if config.has_errors() {
                return (false, false);
            }
            let lookup = |name: &str| MAIN.iter().find(|(k, _)| *k == name).map(|(_, v)| (*v).to_owned());
            let planned = plan::plan(&config, &lookup, &files.files(), options).is_ok();
            (true, planned)
        }));
        match outcome {
            Ok((was_loaded, was_planned)) => {
                loaded += usize::from(was_loaded);
                planned += usize::from(was_planned);
            }
            Err(_) => panic!("panicked on round {round}\n--- .gitlab-ci.yml\n{main}\n--- included\n{included}\n---"),
        }
    }
    eprintln!("{loaded} of 6000 mutated pipelines loaded without errors, {planned} planned");
    assert!(loaded > 200, "only {loaded} mutated pipelines loaded without errors");
    assert!(planned > 100, "only {planned} mutated pipelines planned");
}

/// Size bombs: `!reference` used to multiply a list, and a matrix of thousands of jobs, are
/// refused with an error instead of eating memory and time.
#[test]
fn reference_and_matrix_bombs_are_refused() {
    let mut text = String::from(".l0: {script: [a, a, a, a, a, a, a, a, a, a]}\n");
    for level in 1..=7 {
        let refs = vec![format!("!reference [.l{}, script]", level - 1); 10].join(", ");
        text.push_str(&format!(".l{level}: {{script: [{refs}]}}\n"));
    }
    text.push_str("job: {script: [!reference [.l7, script]]}\n");
    let files = MemFiles::new(&[(CI, &text)]);
    let started = std::time::Instant::now();
    let config = config::load(&files, CI, &|_| None);
    assert!(config.diagnostics.iter().any(|d| d.message.contains("reference bomb")), "{:?}", config.diagnostics);
    assert!(started.elapsed() < std::time::Duration::from_secs(20));

    let matrix = "job:\n  script: [x]\n  parallel:\n    matrix:\n      - A: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n        B: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n        C: [1, 2, 3]\n";
    let files = MemFiles::new(&[(CI, matrix)]);
    let config = config::load(&files, CI, &|_| None);
    assert!(config.diagnostics.iter().any(|d| d.message.contains("makes 300 jobs")), "{:?}", config.diagnostics);
}

/// A file included again counts again, with everything it includes, though it is read once:
/// GitLab counts every include towards its limit.
#[test]
fn repeated_includes_count_with_their_nested_includes() {
    let files: &[(&str, &str)] = &[
        (CI, "include: [{local: /nested.yml}, {local: /nested.yml}]\njob:\n  script: [x]\n"),
        ("nested.yml", "include: [{local: /base.yml}]\n"),
        ("base.yml", "variables:\n  A: a\n"),
    ];
    let source = MemFiles::new(files);
    let none = |_: &str| None;
    let counted = |max: usize| {
        let config = config::load_with_max_includes(&source, CI, &none, max);
        config.diagnostics.iter().any(|d| d.message.contains("nested includes are allowed"))
    };
    assert!(!counted(4), "nested, base, nested again and its base: 4 includes");
    assert!(counted(3));
}
