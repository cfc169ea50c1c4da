#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The verdict table: one small `.gitlab-ci.yml` per row and what `opsloop lint` must say of it
//! — valid, valid with no pipeline for this ref, or an error at a line and column with a text.
//! Each row follows GitLab's own validation (its `Gitlab::Ci::Config::Entry` classes and the
//! YAML processor's checks): files GitLab accepts must pass, files it refuses must fail, here
//! and in `opsloop run`. Rows name the rule; the closing note of the pipelines issue lists the
//! rules checked and those not yet.

use std::collections::BTreeMap;

use opsloop_pipeline::config::{self, FileSource};
use opsloop_pipeline::plan::{self, PlanOptions};

struct Files(BTreeMap<String, String>);

impl FileSource for Files {
    fn read(&self, path: &str) -> Result<String, String> {
        self.0.get(path).cloned().ok_or_else(|| "no such file".to_owned())
    }
    fn files(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }
}

#[derive(Debug, Clone, Copy)]
enum Verdict {
    /// Lint passes and the branch `main` gets a pipeline.
    Valid,
    /// Valid, but workflow rules create no pipeline for `main`.
    NoPipeline,
    /// Valid for GitLab; `opsloop run` (nobody to click "play") refuses it with this text.
    RunRefuses(&'static str),
    /// An error whose message contains the text, at `line:column` (0:0: no location).
    Error(&'static str, u32, u32),
}
use Verdict::*;

/// Lints `text` as `opsloop lint` does, on branch `main`: the first error, or the verdict.
fn verdict_of(text: &str) -> (String, Option<(u32, u32)>) {
    let files = Files(BTreeMap::from([(".gitlab-ci.yml".to_owned(), text.to_owned())]));
    let lookup = |name: &str| match name {
        "CI_COMMIT_BRANCH" | "CI_COMMIT_REF_NAME" | "CI_DEFAULT_BRANCH" => Some("main".to_owned()),
        "CI_PIPELINE_SOURCE" => Some("push".to_owned()),
        _ => None,
    };
    let config = config::load(&files, ".gitlab-ci.yml", &lookup);
    if let Some(error) = config.diagnostics.iter().find(|d| d.is_error()) {
        return (format!("error: {}", error.message), error.span.map(|s| (s.line, s.column)));
    }
    match plan::plan(&config, &lookup, &files.files(), &PlanOptions::default()) {
        Err(errors) => (format!("error: {}", errors[0].message), errors[0].span.map(|s| (s.line, s.column))),
        Ok(planned) if planned.prevented_by_workflow => ("no pipeline".to_owned(), None),
        Ok(planned) => match planned.unplayed_manual_need() {
            Some(refused) => (format!("run refuses: {}", refused.message), None),
            None => ("valid".to_owned(), None),
        },
    }
}

const TABLE: &[(&str, &str, Verdict)] = &[
    // ---- valid files opsloop used to refuse ----
    (
        "dependencies may name a job of the same stage",
        "a:\n  stage: build\n  script: [x]\nb:\n  stage: build\n  script: [x]\n  dependencies: [a]\nstages: [build]\n",
        Valid,
    ),
    (
        "workflow rules that match nothing: no pipeline, no error",
        "workflow:\n  rules:\n    - if: $CI_COMMIT_TAG\njob:\n  script: [x]\n",
        NoPipeline,
    ),
    ("workflow rule with when: never", "workflow:\n  rules:\n    - when: never\njob:\n  script: [x]\n", NoPipeline),
    (
        "workflow rules matching the branch",
        "workflow:\n  rules:\n    - if: $CI_COMMIT_BRANCH\njob:\n  script: [x]\n",
        Valid,
    ),
    (
        "needs on a manual job: GitLab waits for it; run refuses without --manual",
        "gate:\n  stage: build\n  when: manual\n  script: [x]\nafter:\n  needs: [gate]\n  script: [x]\nstages: [build, test]\n",
        RunRefuses("gate is when:manual, its needed by after"),
    ),
    ("allow_failure: yes (YAML 1.1)", "job:\n  script: [x]\n  allow_failure: yes\n", Valid),
    ("allow_failure: Off (YAML 1.1, any case)", "job:\n  script: [x]\n  allow_failure: Off\n", Valid),
    ("interruptible: on", "job:\n  script: [x]\n  interruptible: on\n", Valid),
    (
        "a YAML 1.1 boolean inherited through extends",
        ".base:\n  allow_failure: yes\njob:\n  extends: .base\n  script: [x]\n",
        Valid,
    ),
    ("artifacts:untracked: YES", "job:\n  script: [x]\n  artifacts:\n    untracked: YES\n", Valid),
    (
        "inherit:default: no",
        "default:\n  before_script: [x]\njob:\n  script: [x]\n  inherit:\n    default: no\n",
        Valid,
    ),
    (
        "needs:artifacts: no",
        "a:\n  stage: build\n  script: [x]\nb:\n  needs:\n    - job: a\n      artifacts: no\n  script: [x]\nstages: [build, test]\n",
        Valid,
    ),
    (
        "a quoted \"yes\" is a string where a boolean is expected",
        "job:\n  script: [x]\n  allow_failure: \"yes\"\n",
        Error("allow_failure must be true, false or", 3, 18),
    ),
    // ---- script ----
    ("script: null", "job:\n  script:\n", Error("jobs:job:script config should be a string or a nested array", 2, 9)),
    (
        "script with a null item",
        "job:\n  script: [echo, ~]\n",
        Error("jobs:job:script config should be a string", 2, 11),
    ),
    ("script nested lists", "job:\n  script: [[a, [b]], c]\n", Valid),
    ("script missing", "job:\n  stage: test\n", Error("job must have script specified", 1, 1)),
    ("script empty list", "job:\n  script: []\n", Error("job has empty script", 2, 11)),
    ("script a mapping", "job:\n  script: {a: b}\n", Error("script must be a string or a list of strings", 2, 11)),
    // ---- unknown keys ----
    (
        "unknown job keyword",
        "job:\n  script: [x]\n  scirpt: [y]\n",
        Error("jobs:job config contains unknown keys: scirpt", 3, 3),
    ),
    (
        "unknown key in artifacts",
        "job:\n  script: [x]\n  artifacts:\n    pathz: [a]\n",
        Error("jobs:job:artifacts config contains unknown keys: pathz", 4, 5),
    ),
    (
        "unknown key in cache",
        "job:\n  script: [x]\n  cache:\n    key: k\n    path: [a]\n",
        Error("jobs:job:cache config contains unknown keys: path", 5, 5),
    ),
    (
        "unknown key in a list of caches",
        "job:\n  script: [x]\n  cache:\n    - key: k\n      polcy: pull\n",
        Error("jobs:job:cache config contains unknown keys: polcy", 5, 7),
    ),
    (
        "unknown key in a rule",
        "job:\n  script: [x]\n  rules:\n    - iff: $X\n",
        Error("rules config contains unknown keys: iff", 4, 7),
    ),
    (
        "unknown key in environment",
        "job:\n  script: [x]\n  environment:\n    name: prod\n    ulr: https://x\n",
        Error("jobs:job:environment config contains unknown keys: ulr", 5, 5),
    ),
    (
        "unknown key in release",
        "job:\n  script: [x]\n  release:\n    tag_name: v1\n    descripton: x\n",
        Error("jobs:job:release config contains unknown keys: descripton", 5, 5),
    ),
    (
        "unknown key in trigger",
        "job:\n  trigger:\n    include: child.yml\n    strategi: depend\n",
        Error("jobs:job:trigger config contains unknown keys: strategi", 4, 5),
    ),
    (
        "unknown key in retry",
        "job:\n  script: [x]\n  retry:\n    max: 1\n    wen: always\n",
        Error("jobs:job:retry config contains unknown keys: wen", 5, 5),
    ),
    (
        "unknown key in inherit",
        "job:\n  script: [x]\n  inherit:\n    defaults: false\n",
        Error("jobs:job:inherit config contains unknown keys: defaults", 4, 5),
    ),
    (
        "unknown key in default",
        "default:\n  imagee: ruby\njob:\n  script: [x]\n",
        Error("default config contains unknown keys: imagee", 2, 3),
    ),
    (
        "every known artifacts key",
        "job:\n  script: [x]\n  artifacts:\n    name: n\n    paths: [a]\n    exclude: [b]\n    untracked: false\n    when: always\n    expire_in: 1 day\n    expose_as: x\n    public: true\n    reports:\n      junit: r.xml\n",
        Valid,
    ),
    (
        "every known environment key",
        "stop:\n  script: [x]\n  when: manual\n  environment:\n    name: prod\n    action: stop\njob:\n  script: [x]\n  environment:\n    name: prod\n    url: https://x\n    on_stop: stop\n    auto_stop_in: 1 day\n    deployment_tier: production\n",
        Valid,
    ),
    // ---- needs and dependencies ----
    (
        "duplicate needs",
        "a:\n  stage: build\n  script: [x]\nb:\n  needs: [a, a]\n  script: [x]\nstages: [build, test]\n",
        Error("jobs:b:needs contains duplicate entries: a", 5, 14),
    ),
    (
        "needs an unknown job",
        "b:\n  needs: [nope]\n  script: [x]\n",
        Error("needs: [nope] for b could not be found", 2, 11),
    ),
    (
        "needs a later stage",
        "a:\n  stage: deploy\n  script: [x]\nb:\n  stage: build\n  needs: [a]\n  script: [x]\nstages: [build, deploy]\n",
        Error("a", 0, 0),
    ),
    ("needs a job of the same stage", "a:\n  script: [x]\nb:\n  needs: [a]\n  script: [x]\n", Valid),
    (
        "needs form a cycle",
        "a:\n  needs: [b]\n  script: [x]\nb:\n  needs: [a]\n  script: [x]\n",
        Error("needs form a cycle: a → b → a", 2, 11),
    ),
    (
        "dependencies outside needs",
        "a:\n  stage: build\n  script: [x]\nc:\n  stage: build\n  script: [x]\nb:\n  needs: [a]\n  dependencies: [c]\n  script: [x]\nstages: [build, test]\n",
        Error("jobs:b dependencies the c should be part of needs", 9, 17),
    ),
    (
        "dependencies inside needs",
        "a:\n  stage: build\n  script: [x]\nb:\n  needs: [a]\n  dependencies: [a]\n  script: [x]\nstages: [build, test]\n",
        Valid,
    ),
    (
        "dependencies on a later stage",
        "a:\n  stage: deploy\n  script: [x]\nb:\n  stage: build\n  dependencies: [a]\n  script: [x]\nstages: [build, deploy]\n",
        Error("dependency a is not defined in current or prior stages", 6, 17),
    ),
    (
        "dependencies on an unknown job",
        "b:\n  dependencies: [nope]\n  script: [x]\n",
        Error("dependencies: [nope] for b cannot be found", 2, 17),
    ),
    (
        "needs: [] with dependencies (GitLab checks only a non-empty needs)",
        "a:\n  stage: build\n  script: [x]\nb:\n  needs: []\n  dependencies: [a]\n  script: [x]\nstages: [build, test]\n",
        Valid,
    ),
    (
        "needs: [~]",
        "a:\n  script: [x]\nb:\n  needs: [~]\n  script: [x]\n",
        Error("b needs: entries cannot be empty", 4, 11),
    ),
    (
        "needs as a string",
        "a:\n  script: [x]\nb:\n  needs: a\n  script: [x]\n",
        Error("b needs: must be an array", 4, 10),
    ),
    (
        "needs:parallel:matrix on a job without a matrix",
        "a:\n  stage: build\n  script: [x]\nb:\n  needs:\n    - job: a\n      parallel:\n        matrix:\n          - X: [1]\n  script: [x]\nstages: [build, test]\n",
        Error("b uses needs.parallel.matrix targeting a, but a has no parallel:matrix configuration", 6, 7),
    ),
    (
        "needs:parallel:matrix selecting nothing",
        "a:\n  stage: build\n  parallel:\n    matrix:\n      - X: [1, 2]\n  script: [x]\nb:\n  needs:\n    - job: a\n      parallel:\n        matrix:\n          - X: 3\n  script: [x]\nstages: [build, test]\n",
        Error("b needs.parallel.matrix selector for a matched zero permutations", 9, 7),
    ),
    (
        "needs:parallel:matrix with a list of values and $[[ matrix.X ]]",
        "a:\n  stage: build\n  parallel:\n    matrix:\n      - X: [1, 2]\n  script: [x]\nb:\n  parallel:\n    matrix:\n      - X: [1, 2]\n  needs:\n    - job: a\n      parallel:\n        matrix:\n          - X: [\"$[[ matrix.X ]]\"]\n  script: [x]\nstages: [build, test]\n",
        Valid,
    ),
    (
        "$[[ matrix.X ]] in a job without a matrix",
        "a:\n  stage: build\n  parallel:\n    matrix:\n      - X: [1, 2]\n  script: [x]\nb:\n  needs:\n    - job: a\n      parallel:\n        matrix:\n          - X: $[[ matrix.X ]]\n  script: [x]\nstages: [build, test]\n",
        Error("b uses $[[ matrix.X ]] expressions in needs.parallel.matrix but is not parallelized", 9, 7),
    ),
    (
        "$[[ matrix.NOPE ]] naming a key the job lacks",
        "a:\n  stage: build\n  parallel:\n    matrix:\n      - X: [1, 2]\n  script: [x]\nb:\n  parallel:\n    matrix:\n      - X: [1, 2]\n  needs:\n    - job: a\n      parallel:\n        matrix:\n          - X: $[[ matrix.NOPE ]]\n  script: [x]\nstages: [build, test]\n",
        Error("'NOPE' does not exist in matrix configuration", 12, 7),
    ),
    (
        "dependencies on a job its rules leave out",
        "a:\n  stage: build\n  script: [x]\n  rules:\n    - if: $NOPE\nb:\n  dependencies: [a]\n  script: [x]\nstages: [build, test]\n",
        Error("a is when:never, but its depended on by b", 7, 17),
    ),
    // ---- environment ----
    (
        "on_stop names an unknown job",
        "job:\n  script: [x]\n  environment:\n    name: prod\n    on_stop: stop-prod\n",
        Error("job job: on_stop job stop-prod is not defined", 5, 14),
    ),
    (
        "on_stop job without environment",
        "stop:\n  script: [x]\njob:\n  script: [x]\n  environment:\n    name: prod\n    on_stop: stop\n",
        Error("on_stop job stop needs to have environment defined", 7, 14),
    ),
    (
        "on_stop job without action stop",
        "stop:\n  script: [x]\n  environment: prod\njob:\n  script: [x]\n  environment:\n    name: prod\n    on_stop: stop\n",
        Error("on_stop job stop needs to have action stop defined", 8, 14),
    ),
    ("environment as a string", "job:\n  script: [x]\n  environment: review/$CI_COMMIT_REF_NAME\n", Valid),
    // ---- retry ----
    ("retry: 3", "job:\n  script: [x]\n  retry: 3\n", Error("jobs:job:retry config must be between 0 and 2", 3, 10)),
    ("retry: -1", "job:\n  script: [x]\n  retry: -1\n", Error("jobs:job:retry config must be between 0 and 2", 3, 10)),
    (
        "retry:max: 5",
        "job:\n  script: [x]\n  retry:\n    max: 5\n",
        Error("jobs:job:retry max must be between 0 and 2", 4, 10),
    ),
    ("retry: 2 and retry:max: 0", "a:\n  script: [x]\n  retry: 2\nb:\n  script: [x]\n  retry:\n    max: 0\n", Valid),
    (
        "retry:when unknown value",
        "job:\n  script: [x]\n  retry:\n    max: 1\n    when: [sometimes]\n",
        Error("retry when contains unknown values: sometimes", 5, 11),
    ),
    // ---- when ----
    (
        "when: delayed without start_in",
        "job:\n  script: [x]\n  when: delayed\n",
        Error("jobs:job start in can't be blank", 3, 9),
    ),
    ("when: delayed with start_in", "job:\n  script: [x]\n  when: delayed\n  start_in: 5 minutes\n", Valid),
    (
        "start_in without delayed",
        "job:\n  script: [x]\n  start_in: 5 minutes\n",
        Error("start in must be blank when not delayed", 3, 13),
    ),
    (
        "when: never outside rules",
        "job:\n  script: [x]\n  when: never\n",
        Error("when:never can only be used in a rules section", 3, 9),
    ),
    ("when: unknown", "job:\n  script: [x]\n  when: sometimes\n", Error("unknown when: `sometimes`", 3, 9)),
    (
        "${VAR} in rules:if",
        "job:\n  script: [x]\n  rules:\n    - if: '${A} == \"x\"'\n",
        Error("rules:rule if invalid expression syntax", 4, 11),
    ),
    ("rules: []", "job:\n  script: [x]\n  rules: []\n", Error("job rules: config can't be blank", 3, 10)),
    (
        "stages as a string, without follow-on errors",
        "stages: build\njob:\n  script: [x]\n",
        Error("stages: must be an array", 1, 9),
    ),
    (
        "cache:paths as a string",
        "job:\n  script: [x]\n  cache:\n    paths: folder\n",
        Error("job cache[0].paths must be array", 4, 12),
    ),
    (
        "cache:key:files with three files",
        "job:\n  script: [x]\n  cache:\n    key:\n      files: [a, b, c]\n    paths: [x]\n",
        Error("cache:key:files takes one or two files, not 3", 5, 7),
    ),
    (
        "cache:key:files empty",
        "job:\n  script: [x]\n  cache:\n    key:\n      files: []\n    paths: [x]\n",
        Error("cache:key:files takes one or two files, not 0", 5, 7),
    ),
    ("cache with a key and no paths", "job:\n  script: [x]\n  cache:\n    key: k\n", Valid),
    // ---- visible jobs ----
    ("an empty file", "", Error("jobs config should contain at least one visible job", 1, 1)),
    (
        "only hidden jobs",
        ".template:\n  script: [x]\n",
        Error("jobs config should contain at least one visible job", 1, 1),
    ),
    (
        "only global keywords",
        "stages: [build]\nvariables:\n  A: b\n",
        Error("jobs config should contain at least one visible job", 1, 1),
    ),
    (
        "only .pre and .post jobs",
        "a:\n  stage: .pre\n  script: [x]\n",
        Error("The pipeline must contain jobs in stages other than .pre and .post", 0, 0),
    ),
    // ---- stages and types ----
    ("unknown stage", "job:\n  stage: publish\n  script: [x]\n", Error("stage:publish not found for job", 2, 10)),
    ("a job that is not a mapping", "job: [x]\n", Error("jobs:job config should be a mapping, not a list", 1, 1)),
    (
        "rules with only",
        "job:\n  script: [x]\n  only: [main]\n  rules:\n    - when: always\n",
        Error("job: rules cannot be used with only/except", 1, 1),
    ),
    ("a rule that is not a mapping", "job:\n  script: [x]\n  rules: [x]\n", Error("a rule is a mapping", 3, 11)),
    (
        "rules:if that does not parse",
        "job:\n  script: [x]\n  rules:\n    - if: $A ==\n",
        Error("rules:rule if invalid expression syntax", 4, 11),
    ),
    (
        "parallel above 200",
        "job:\n  script: [x]\n  parallel: 201\n",
        Error("parallel must be between 1 and 200", 3, 13),
    ),
    (
        "allow_failure:exit_codes not integers",
        "job:\n  script: [x]\n  allow_failure:\n    exit_codes: [a]\n",
        Error("allow_failure:exit_codes takes integers", 4, 18),
    ),
    (
        "artifacts:when unknown",
        "job:\n  script: [x]\n  artifacts:\n    when: sometimes\n",
        Error("when must be on_success, on_failure or always", 4, 11),
    ),
    (
        "cache:policy unknown",
        "job:\n  script: [x]\n  cache:\n    policy: fetch\n",
        Error("cache:policy `fetch` is not pull, push or pull-push", 4, 5),
    ),
    (
        "extends an unknown key",
        "job:\n  extends: .base\n  script: [x]\n",
        Error("job: unknown key in `extends` (.base)", 2, 12),
    ),
    ("script as an empty string", "job:\n  script: ''\n", Error("jobs:job script can't be blank", 2, 11)),
    (
        "a report path that is a number",
        "job:\n  script: [x]\n  artifacts:\n    reports:\n      junit: 3\n",
        Error("jobs:job:artifacts:reports junit should be a string or an array of strings", 5, 14),
    ),
    (
        "artifacts without a value: GitLab reads a null keyword as not given (a warning here)",
        "job:\n  script: [x]\n  artifacts:\n",
        Valid,
    ),
    (
        "a !reference to nothing",
        "job:\n  script: !reference [.nope, script]\n",
        Error("!reference [.nope, script] points at nothing", 2, 11),
    ),
];

#[test]
fn every_verdict_in_the_table_holds() {
    assert!(TABLE.len() >= 60, "the table has {} rows", TABLE.len());
    let mut failures = Vec::new();
    for (rule, text, expected) in TABLE {
        let (said, at) = verdict_of(text);
        let ok = match expected {
            Valid => said == "valid",
            NoPipeline => said == "no pipeline",
            RunRefuses(message) => said.starts_with("run refuses") && said.contains(message),
            Error(message, 0, 0) => said.starts_with("error") && said.contains(message),
            Error(message, line, column) => {
                said.starts_with("error") && said.contains(message) && at == Some((*line, *column))
            }
        };
        if !ok {
            failures.push(format!("{rule}: expected {expected:?}, got {said} at {at:?}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} rows differ:\n{}", failures.len(), TABLE.len(), failures.join("\n"));
}

/// Files with several problems, and every error `opsloop lint` must report for each (by a text
/// each message contains, in the order reported), then the warnings marked as consequences of
/// one of those errors. One kind of mistake must not hide another, and an error must not bring
/// misleading follow-on errors.
const EVERY_PROBLEM: &[(&str, &str, &[&str], &[&str])] = &[
    (
        "type errors do not hide undefined needs and dependencies",
        "a:\n  script: [x]\n  when: sometimes\n  needs: [nope]\nb:\n  script: [x]\n  retry: 5\n  dependencies: [missing]\n",
        &[
            "unknown when: `sometimes`",
            "jobs:b:retry config must be between 0 and 2",
            "needs: [nope] for a could not be found",
            "dependencies: [missing] for b cannot be found",
        ],
        &[],
    ),
    (
        "stages as a string: one error, no 'stage not found' for any job",
        "stages: build\ncompile:\n  stage: build\n  script: [x]\nship:\n  stage: deploy-prod\n  script: [x]\nunit:\n  script: [x]\n",
        &["stages: must be an array"],
        &[],
    ),
    (
        "stages as a string does not make every job a .pre job",
        "stages: release\nship:\n  stage: release\n  script: [x]\n",
        &["stages: must be an array"],
        &[],
    ),
    (
        "a missing include: its consequences are marked, not errors",
        "include: ci/templates.yml\nstages: [build, test]\nbuild:\n  extends: .template\n  stage: build\ntest:\n  stage: publish\n  needs: [lint]\n  script: [x]\n",
        &["Local include file cannot be found ci/templates.yml"],
        &[
            "build: unknown key in `extends` (.template)",
            "build must have script specified",
            "stage:publish not found for test",
            "needs: [lint] for test could not be found",
        ],
    ),
    (
        "a remote include: what it would bring is not reported missing",
        "include: 'https://example.invalid/ci.yml'\njob:\n  extends: .remote\n",
        &["is a remote include"],
        &["job: unknown key in `extends` (.remote)", "job must have script specified"],
    ),
    (
        "a job that could not be loaded is not also 'not found'",
        "a: [x]\nb:\n  needs: [a]\n  script: [x]\n",
        &["jobs:a config should be a mapping"],
        &["needs: [a] for b could not be found"],
    ),
    (
        "a cycle is reported with the other problems, at a place",
        "a:\n  needs: [b]\n  script: [x]\nb:\n  needs: [a]\n  script: [x]\n  when: sometimes\n",
        &["unknown when: `sometimes`", "needs form a cycle: a → b → a"],
        &[],
    ),
];

#[test]
fn every_problem_is_reported_at_once() {
    let lookup = |name: &str| match name {
        "CI_COMMIT_BRANCH" | "CI_COMMIT_REF_NAME" | "CI_DEFAULT_BRANCH" => Some("main".to_owned()),
        "CI_PIPELINE_SOURCE" => Some("push".to_owned()),
        _ => None,
    };
    let mut failures = Vec::new();
    for (rule, text, errors, consequences) in EVERY_PROBLEM {
        let files = Files(BTreeMap::from([(".gitlab-ci.yml".to_owned(), (*text).to_owned())]));
        let config = config::load(&files, ".gitlab-ci.yml", &lookup);
        let (problems, _) = plan::problems(&config, &lookup, &files.files());
        let said: Vec<&str> = problems.iter().filter(|d| d.is_error()).map(|d| d.message.as_str()).collect();
        let marked: Vec<&str> = problems
            .iter()
            .filter(|d| !d.is_error() && d.hint.as_deref() == Some(config::CONSEQUENCE))
            .map(|d| d.message.as_str())
            .collect();
        let matches = |said: &[&str], expected: &[&str]| {
            said.len() == expected.len() && said.iter().zip(expected).all(|(s, e)| s.contains(e))
        };
        if !matches(&said, errors) || !matches(&marked, consequences) {
            failures.push(format!("{rule}:\n  errors {said:?}\n  consequences {marked:?}"));
        }
    }
    let spanless: Vec<String> = EVERY_PROBLEM
        .iter()
        .filter_map(|(rule, text, _, _)| {
            let files = Files(BTreeMap::from([(".gitlab-ci.yml".to_owned(), (*text).to_owned())]));
            let config = config::load(&files, ".gitlab-ci.yml", &lookup);
            let (problems, _) = plan::problems(&config, &lookup, &files.files());
            problems.iter().any(|d| d.is_error() && d.span.is_none()).then(|| (*rule).to_owned())
        })
        .collect();
    assert!(spanless.is_empty(), "errors without a location: {spanless:?}");
    assert!(
        failures.is_empty(),
        "{} of {} files differ:\n{}",
        failures.len(),
        EVERY_PROBLEM.len(),
        failures.join("\n")
    );
}
