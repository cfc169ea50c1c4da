//! From a loaded configuration to the jobs that run: workflow and job rules, `only`/`except`,
//! `parallel` expansion, the `needs` DAG (validated, cycles named), and the selection a
//! command line asks for.

use std::collections::{HashMap, HashSet};

use crate::config::Lookup;
use crate::config::{
    AllowFailure, CONSEQUENCE, Config, Job, MatrixSelector, Need, Parallel, RefFilter, Rule, Variable, When,
    glob_matches,
};
use crate::diagnostic::Diagnostic;

/// Why and how a job is in the pipeline: when, allow_failure, rule variables, rule needs, start_in.
type Inclusion = (When, Option<AllowFailure>, Vec<Variable>, Option<Vec<Need>>, Option<String>);

/// What the first matching rule decided.
#[derive(Debug, Clone)]
pub struct RuleOutcome {
    /// The rule's own `when`, if it sets one (otherwise the job's `when` applies).
    pub when: Option<When>,
    pub allow_failure: Option<AllowFailure>,
    pub variables: Vec<Variable>,
    pub needs: Option<Vec<Need>>,
    pub start_in: Option<String>,
}

/// Which files changed, for `rules:changes` and `only/except:changes`.
#[derive(Debug, Clone, Default)]
pub struct ChangeSets {
    /// Compared with the pipeline's default base; `None` when there is none to compare with,
    /// and then `changes` holds, as on GitLab for a new branch.
    pub default: Option<Vec<String>>,
    /// Compared with each `compare_to` ref the pipeline names.
    pub by_ref: std::collections::HashMap<String, Vec<String>>,
}

impl ChangeSets {
    /// Whether any changed file matches one of `patterns`.
    pub fn any_match(&self, patterns: &[String], compare_to: Option<&str>, lookup: Lookup<'_>) -> bool {
        let changed = match compare_to {
            Some(reference) => self.by_ref.get(reference),
            None => self.default.as_ref(),
        };
        let Some(changed) = changed else { return true };
        patterns.iter().any(|p| !glob_matches(&crate::config::expand_simple(p, lookup), changed).is_empty())
    }
}

/// The first rule whose conditions all hold, or `None` when none does (the job is left out).
/// Without `changes` information (`None`), `changes` conditions hold.
pub fn rules_match(
    rules: &[Rule],
    lookup: Lookup<'_>,
    files: &[String],
    changes: Option<&ChangeSets>,
) -> Option<RuleOutcome> {
    for rule in rules {
        if let (Some(patterns), Some(changes)) = (&rule.changes, changes)
            && !changes.any_match(patterns, rule.compare_to.as_deref(), lookup)
        {
            continue;
        }
        if let Some(condition) = &rule.condition
            && !condition.evaluate(lookup)
        {
            continue;
        }
        if let Some(patterns) = &rule.exists {
            let found =
                patterns.iter().any(|p| !glob_matches(&crate::config::expand_simple(p, lookup), files).is_empty());
            if !found {
                continue;
            }
        }
        return Some(RuleOutcome {
            when: rule.when,
            allow_failure: rule.allow_failure.clone(),
            variables: rule.variables.clone(),
            needs: rule.needs.clone(),
            start_in: rule.start_in.clone(),
        });
    }
    None
}

fn refs_match(refs: &[String], lookup: Lookup<'_>) -> bool {
    let ref_name = lookup("CI_COMMIT_REF_NAME").unwrap_or_default();
    let is_tag = lookup("CI_COMMIT_TAG").is_some_and(|t| !t.is_empty());
    let source = lookup("CI_PIPELINE_SOURCE").unwrap_or_default();
    let merge_request = source == "merge_request_event";
    refs.iter().any(|pattern| match pattern.as_str() {
        "branches" => !is_tag && !merge_request,
        "tags" => is_tag,
        "merge_requests" => merge_request,
        "schedules" => source == "schedule",
        "pushes" => source == "push",
        "web" => source == "web",
        "api" => source == "api",
        "triggers" => source == "trigger",
        "pipelines" => source == "pipeline",
        "external" => source == "external",
        "chat" => source == "chat",
        pattern if pattern.len() > 1 && pattern.starts_with('/') => {
            let (body, flags) = pattern[1..].rsplit_once('/').unwrap_or((&pattern[1..], ""));
            let body = if flags.contains('i') { format!("(?i){body}") } else { body.to_owned() };
            regex::Regex::new(&body).is_ok_and(|re| re.is_match(&ref_name))
        }
        pattern => pattern == ref_name,
    })
}

/// `only:` holds when every key given holds (refs, variables, changes).
fn only_matches(filter: &RefFilter, lookup: Lookup<'_>, changes: Option<&ChangeSets>) -> bool {
    (filter.refs.is_empty() || refs_match(&filter.refs, lookup))
        && (filter.variables.is_empty() || filter.variables.iter().any(|e| e.evaluate(lookup)))
        && (filter.changes.is_empty() || changes.is_none_or(|c| c.any_match(&filter.changes, None, lookup)))
}

/// `except:` excludes when any key given holds.
fn except_matches(filter: &RefFilter, lookup: Lookup<'_>, changes: Option<&ChangeSets>) -> bool {
    (!filter.refs.is_empty() && refs_match(&filter.refs, lookup))
        || filter.variables.iter().any(|e| e.evaluate(lookup))
        || (!filter.changes.is_empty() && changes.is_none_or(|c| c.any_match(&filter.changes, None, lookup)))
}

#[derive(Debug, Clone)]
pub struct PlannedNeed {
    pub job: usize,
    pub artifacts: bool,
}

/// One job as it will run (a `parallel` job becomes several).
#[derive(Debug, Clone)]
pub struct PlannedJob {
    /// The name shown and used on the command line: `job`, `job: [1/3]`, `job: [a,b]`.
    pub name: String,
    /// Index of the job in `Config::jobs`.
    pub config_index: usize,
    pub stage: usize,
    pub when: When,
    pub allow_failure: AllowFailure,
    pub start_in: Option<String>,
    /// `None`: waits for every earlier stage. `Some`: only these (possibly none).
    pub needs: Option<Vec<PlannedNeed>>,
    /// Jobs whose artifacts this job receives.
    pub artifacts_from: Vec<usize>,
    /// Variables added by rules, `parallel` (CI_NODE_INDEX/TOTAL) and the matrix.
    pub extra_variables: Vec<Variable>,
}

#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub stages: Vec<String>,
    pub jobs: Vec<PlannedJob>,
    /// Variables from the matching workflow rule.
    pub workflow_variables: Vec<Variable>,
    pub warnings: Vec<Diagnostic>,
    /// `workflow:rules` create no pipeline for this ref: the file is valid, nothing runs (the
    /// plan has no jobs). GitLab creates no pipeline then; `opsloop run` says so and exits 0.
    pub prevented_by_workflow: bool,
}

/// What `opsloop lint` and `opsloop run` say when workflow rules create no pipeline.
pub const NO_PIPELINE: &str =
    "workflow:rules create no pipeline for this ref (no rule matched, or the match says never)";

/// GitLab's verdict on a pipeline whose jobs are all in `.pre` and `.post`.
pub const PRE_POST_ONLY: &str = "The pipeline must contain jobs in stages other than .pre and .post";

/// A job name [`Plan::subset`] was asked for that the plan does not have.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the plan has no job `{name}`")]
pub struct UnknownJob {
    pub name: String,
}

/// What [`Plan::subset`] leaves: the cut-down plan, and the names of the jobs outside it
/// whose artifacts its jobs receive (they follow in the plan as jobs that never run).
#[derive(Debug, Clone)]
pub struct Subset {
    pub plan: Plan,
    pub upstream: Vec<String>,
}

impl Plan {
    /// The plan cut down to the jobs named `names`, for a rerun or a retry of jobs that ran
    /// before: those jobs first, in plan order, each run as if played when it is manual;
    /// `needs` among them stay, needs on the others are dropped as met (those ran). The jobs
    /// whose artifacts they receive from outside follow as jobs that never run (`when:
    /// never`, no needs), so the runner hands on the artifacts restored for them; their names
    /// are [`Subset::upstream`]. Stages and variables are kept as they are.
    pub fn subset(&self, names: &[String]) -> Result<Subset, UnknownJob> {
        let mut chosen = Vec::with_capacity(names.len());
        for name in names {
            let index =
                self.jobs.iter().position(|j| &j.name == name).ok_or_else(|| UnknownJob { name: name.clone() })?;
            chosen.push(index);
        }
        chosen.sort_unstable();
        chosen.dedup();
        let new_index: HashMap<usize, usize> = chosen.iter().enumerate().map(|(new, old)| (*old, new)).collect();
        // Indexes into `self.jobs` of the jobs outside the subset that hand artifacts in.
        let mut outside: Vec<usize> = Vec::new();
        let mut jobs = Vec::with_capacity(chosen.len());
        for old in &chosen {
            let mut job = self.jobs[*old].clone();
            if let Some(needs) = &mut job.needs {
                needs.retain_mut(|need| match new_index.get(&need.job) {
                    Some(inside) => {
                        need.job = *inside;
                        true
                    }
                    None => false,
                });
            }
            job.artifacts_from = job
                .artifacts_from
                .iter()
                .map(|source| match new_index.get(source) {
                    Some(inside) => *inside,
                    None => {
                        let slot = outside.iter().position(|o| o == source).unwrap_or_else(|| {
                            outside.push(*source);
                            outside.len() - 1
                        });
                        chosen.len() + slot
                    }
                })
                .collect();
            if job.when == When::Manual {
                job.when = When::OnSuccess;
            }
            jobs.push(job);
        }
        let upstream = outside.iter().map(|i| self.jobs[*i].name.clone()).collect();
        jobs.extend(outside.iter().map(|i| {
            let mut source = self.jobs[*i].clone();
            source.when = When::Never;
            source.needs = Some(Vec::new());
            source.artifacts_from.clear();
            source
        }));
        let plan = Plan {
            stages: self.stages.clone(),
            jobs,
            workflow_variables: self.workflow_variables.clone(),
            warnings: self.warnings.clone(),
            prevented_by_workflow: false,
        };
        Ok(Subset { plan, upstream })
    }
}

#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Job names from the command line (empty: the whole pipeline).
    pub selected: Vec<String>,
    /// Also run what the selected jobs need, transitively.
    pub with_needs: bool,
    /// Run only what the selected jobs need (not the earlier stages of jobs without needs).
    pub only_needs: bool,
    /// Run only this stage.
    pub stage: Option<String>,
    /// Manual jobs to run as if played.
    pub manual: Vec<String>,
    /// Changed files, for `changes:`; `None` makes every `changes:` condition hold.
    pub changes: Option<ChangeSets>,
    /// Variables given to this pipeline (`--variable`, a run's variables): they win over the
    /// YAML's own variables, which win over the predefined ones `lookup` gives.
    pub pipeline_variables: Vec<(String, String)>,
    /// A pipeline with jobs in `.pre` and `.post` only is planned, with a warning, instead of
    /// refused. GitLab creates no such pipeline, but a local run (like gitlab-ci-local's) is
    /// someone asking to run those jobs now, and refusing them helps nobody.
    pub allow_pre_post_only: bool,
}

/// Every problem of a loaded file at once, as `opsloop lint` reports them: the loader's, then
/// the planner's (`needs`, `dependencies`, cycles, matrix selectors), which are checked even
/// when loading found errors, so one kind of mistake never hides another. Where a loading error
/// explains a planner's finding (a needed job in an include that could not be read), that
/// finding is a warning marked as its consequence. Also whether workflow rules create no
/// pipeline for this ref.
pub fn problems(config: &Config, lookup: Lookup<'_>, files: &[String]) -> (Vec<Diagnostic>, bool) {
    let mut diagnostics = config.diagnostics.clone();
    // Without a single job (an unreadable or empty file) there is nothing to plan.
    if config.jobs.is_empty() {
        return (diagnostics, false);
    }
    let mut prevented = false;
    match plan(config, lookup, files, &PlanOptions::default()) {
        Ok(planned) => {
            prevented = planned.prevented_by_workflow;
            diagnostics.extend(planned.warnings.into_iter().filter(|w| !config.diagnostics.contains(w)));
        }
        Err(errors) => diagnostics.extend(errors),
    }
    diagnostics.sort_by_key(|d| std::cmp::Reverse(d.severity));
    (diagnostics, prevented)
}

/// Plans `config`. `lookup` resolves pipeline-level variables (predefined, CLI, global).
pub fn plan(
    config: &Config,
    lookup: Lookup<'_>,
    files: &[String],
    options: &PlanOptions,
) -> Result<Plan, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();

    let pipeline_variable =
        |name: &str| options.pipeline_variables.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let yaml_global = |name: &str| config.variables.iter().rev().find(|v| v.name == name).map(|v| v.value.clone());
    let workflow_lookup = |name: &str| pipeline_variable(name).or_else(|| yaml_global(name)).or_else(|| lookup(name));
    let workflow_variables = match &config.workflow_rules {
        Some(rules) => match rules_match(rules, &workflow_lookup, files, options.changes.as_ref()) {
            Some(outcome) if outcome.when != Some(When::Never) => outcome.variables,
            _ => {
                return Ok(Plan {
                    stages: config.stages.clone(),
                    jobs: Vec::new(),
                    workflow_variables: Vec::new(),
                    warnings: config.diagnostics.iter().filter(|d| !d.is_error()).cloned().collect(),
                    prevented_by_workflow: true,
                });
            }
        },
        None => Vec::new(),
    };

    // Which config jobs are in the pipeline, with their rule outcome.
    let mut included: Vec<Option<Inclusion>> = Vec::new();
    for job in &config.jobs {
        let job_lookup = |name: &str| -> Option<String> {
            pipeline_variable(name)
                .or_else(|| {
                    [&job.variables, &workflow_variables, &job.global_variables]
                        .iter()
                        .find_map(|layer| layer.iter().rev().find(|v| v.name == name).map(|v| v.value.clone()))
                })
                .or_else(|| lookup(name))
        };
        let entry = if let Some(rules) = &job.rules {
            rules_match(rules, &job_lookup, files, options.changes.as_ref())
                .filter(|outcome| outcome.when != Some(When::Never))
                .map(|outcome| {
                    // A rule without `when` uses the job's; a manual job made so by a rule does
                    // not allow failure unless it says so.
                    let when = outcome.when.unwrap_or(job.when);
                    let allow_failure = outcome.allow_failure.or_else(|| {
                        (outcome.when == Some(When::Manual) && job.allow_failure.is_none()).then_some(AllowFailure::No)
                    });
                    (when, allow_failure, outcome.variables, outcome.needs, outcome.start_in)
                })
        } else {
            let changes = options.changes.as_ref();
            // No only/except/rules: GitLab's default is `only: [branches, tags]`.
            let default_only =
                RefFilter { refs: vec!["branches".to_owned(), "tags".to_owned()], ..RefFilter::default() };
            let only = job.only.as_ref().unwrap_or(&default_only);
            let only_ok = only_matches(only, &job_lookup, changes);
            let except_hit = job.except.as_ref().is_some_and(|f| except_matches(f, &job_lookup, changes));
            (only_ok && !except_hit).then(|| (job.when, None, Vec::new(), None, None))
        };
        included.push(entry);
    }

    // Instances (parallel expansion), in stage order then file order.
    let stage_of = |job: &Job| config.stages.iter().position(|s| *s == job.stage).unwrap_or(0);
    let mut order: Vec<usize> = (0..config.jobs.len()).collect();
    order.sort_by_key(|index| stage_of(&config.jobs[*index]));
    let mut jobs: Vec<PlannedJob> = Vec::new();
    let mut instances_of: HashMap<&str, Vec<usize>> = HashMap::new();
    let mut matrix_of: HashMap<usize, Vec<(String, String)>> = HashMap::new();
    for index in order {
        let job = &config.jobs[index];
        let Some((when, rule_allow_failure, rule_variables, _, rule_start_in)) = included[index].clone() else {
            continue;
        };
        let allow_failure = rule_allow_failure
            .or_else(|| job.allow_failure.clone())
            .unwrap_or(if when == When::Manual { AllowFailure::Yes } else { AllowFailure::No });
        for (name, mut variables, matrix) in expand_parallel(job) {
            variables.extend(rule_variables.iter().cloned());
            let position = jobs.len();
            instances_of.entry(job.name.as_str()).or_default().push(position);
            matrix_of.insert(position, matrix);
            jobs.push(PlannedJob {
                name,
                config_index: index,
                stage: stage_of(job),
                when,
                allow_failure: allow_failure.clone(),
                start_in: rule_start_in.clone().or_else(|| job.start_in.clone()),
                needs: None,
                artifacts_from: Vec::new(),
                extra_variables: variables,
            });
        }
    }

    // needs and dependencies.
    for position in 0..jobs.len() {
        let index = jobs[position].config_index;
        let job = &config.jobs[index];
        let needs = included[index].as_ref().and_then(|entry| entry.3.clone()).or_else(|| job.needs.clone());
        if let Some(needs) = needs {
            let mut planned = Vec::new();
            for need in &needs {
                if need.job == job.name {
                    errors.push(Diagnostic::error(
                        format!("This GitLab CI configuration is invalid: The pipeline has circular dependencies: self-dependency: {}.", job.name),
                        Some(need.span),
                    ));
                    continue;
                }
                let Some(config_index) = config.jobs.iter().position(|j| j.name == need.job) else {
                    let message = format!("needs: [{}] for {} could not be found", need.job, job.name);
                    if config.may_define(&need.job) {
                        warnings.push(Diagnostic::warning(message, Some(need.span)).with_hint(CONSEQUENCE));
                    } else if !need.optional {
                        errors.push(Diagnostic::error(message, Some(need.span)));
                    }
                    continue;
                };
                let Some(targets) = instances_of.get(need.job.as_str()) else {
                    if !need.optional {
                        let reason = if config.jobs[config_index].rules.is_some() {
                            "when:never"
                        } else {
                            "not in this pipeline"
                        };
                        errors.push(Diagnostic::error(
                            format!("{} is {reason}, but its needed by {}", need.job, job.name),
                            Some(need.span),
                        ));
                    }
                    continue;
                };
                if stage_of(&config.jobs[config_index]) > jobs[position].stage {
                    errors.push(Diagnostic::error(
                        format!("needs: [{}] for {} is in a future stage", need.job, job.name),
                        Some(need.span),
                    ));
                    continue;
                }
                let selectors = match &need.matrix {
                    None => None,
                    Some(combos) => {
                        if !matches!(config.jobs[config_index].parallel, Some(Parallel::Matrix(_))) {
                            errors.push(Diagnostic::error(
                                format!(
                                    "{} uses needs.parallel.matrix targeting {}, but {} has no parallel:matrix configuration",
                                    job.name, need.job, need.job
                                ),
                                Some(need.span),
                            ));
                            continue;
                        }
                        let own = matrix_of.get(&position).cloned().unwrap_or_default();
                        match resolve_selectors(combos, &own, matches!(job.parallel, Some(Parallel::Matrix(_)))) {
                            Ok(resolved) => Some(resolved),
                            Err(message) => {
                                let message = match message {
                                    SelectorError::NotParallel => format!(
                                        "{} uses $[[ matrix.X ]] expressions in needs.parallel.matrix but is not parallelized with parallel:matrix",
                                        job.name
                                    ),
                                    SelectorError::Unknown(key) => {
                                        format!("'{key}' does not exist in matrix configuration")
                                    }
                                };
                                if !errors.iter().any(|e| e.message == message) {
                                    errors.push(Diagnostic::error(message, Some(need.span)));
                                }
                                continue;
                            }
                        }
                    }
                };
                let before = planned.len();
                for target in targets {
                    let wanted = match &selectors {
                        None => true,
                        Some(combos) => combos.iter().any(|combo| {
                            let values = matrix_of.get(target).cloned().unwrap_or_default();
                            combo.iter().all(|(k, allowed)| {
                                values.iter().any(|(vk, vv)| vk == k && allowed.iter().any(|a| a == vv))
                            })
                        }),
                    };
                    if wanted {
                        planned.push(PlannedNeed { job: *target, artifacts: need.artifacts });
                    }
                }
                if selectors.is_some() && planned.len() == before && !need.optional {
                    let message = format!(
                        "{} needs.parallel.matrix selector for {} matched zero permutations",
                        job.name, need.job
                    );
                    if !errors.iter().any(|e| e.message == message) {
                        errors.push(Diagnostic::error(message, Some(need.span)));
                    }
                }
            }
            jobs[position].needs = Some(planned);
        }
        if let Some((names, span)) = &job.dependencies {
            let mut from = Vec::new();
            for name in names {
                // With `needs` (not empty), GitLab asks every dependency to be needed too.
                if let Some(needs) = &job.needs
                    && !needs.is_empty()
                    && !needs.iter().any(|need| need.job == *name)
                {
                    let listed = |items: Vec<&str>| items.join(",");
                    errors.push(
                        Diagnostic::error(
                            format!("jobs:{} dependencies the {name} should be part of needs", job.name),
                            Some(*span),
                        )
                        // gitlab-ci-local's wording of the same rule, which scripts look for.
                        .with_hint(format!(
                            "{} needs: '{}' doesn't fully contain dependencies: '{}'",
                            job.name,
                            listed(needs.iter().map(|n| n.job.as_str()).collect()),
                            listed(names.iter().map(String::as_str).collect()),
                        )),
                    );
                    continue;
                }
                match instances_of.get(name.as_str()) {
                    // GitLab's check: a dependency may be in the same stage (as `needs` may), never
                    // a later one.
                    Some(targets) if targets.iter().any(|t| jobs[*t].stage > jobs[position].stage) => {
                        errors.push(Diagnostic::error(
                            format!("{} job: dependency {name} is not defined in current or prior stages", job.name),
                            Some(*span),
                        ));
                    }
                    Some(targets) => {
                        // A same-stage job not in `needs` may still run: its artifacts cannot be
                        // counted on, so only earlier stages (or needed jobs) deliver them.
                        let needed =
                            |t: usize| jobs[position].needs.as_ref().is_some_and(|n| n.iter().any(|n| n.job == t));
                        from.extend(
                            targets.iter().copied().filter(|t| jobs[*t].stage < jobs[position].stage || needed(*t)),
                        );
                    }
                    // A job of the file that its rules (or `only`/`except`) left out: its
                    // artifacts can never come.
                    None if config.jobs.iter().any(|j| &j.name == name) => errors.push(Diagnostic::error(
                        format!("{name} is when:never, but its depended on by {}", job.name),
                        Some(*span),
                    )),
                    None if config.may_define(name) => warnings.push(
                        Diagnostic::warning(
                            format!("dependencies: [{name}] for {} cannot be found", job.name),
                            Some(*span),
                        )
                        .with_hint(CONSEQUENCE),
                    ),
                    None => errors.push(Diagnostic::error(
                        format!("dependencies: [{name}] for {} cannot be found", job.name),
                        Some(*span),
                    )),
                }
            }
            // With `needs`, only needed jobs whose artifacts are wanted can deliver them.
            if let Some(needs) = &jobs[position].needs {
                from.retain(|source| needs.iter().any(|n| n.job == *source && n.artifacts));
            }
            jobs[position].artifacts_from = from;
        } else {
            jobs[position].artifacts_from = match &jobs[position].needs {
                Some(needs) => needs.iter().filter(|n| n.artifacts).map(|n| n.job).collect(),
                None => (0..jobs.len()).filter(|other| jobs[*other].stage < jobs[position].stage).collect(),
            };
        }
    }
    // By the stage's name: a job whose stage was not found also has position 0.
    let pre_or_post = |job: &PlannedJob| matches!(config.jobs[job.config_index].stage.as_str(), ".pre" | ".post");
    if !jobs.is_empty() && jobs.iter().all(pre_or_post) {
        if options.allow_pre_post_only {
            warnings.push(
                Diagnostic::warning(PRE_POST_ONLY, None)
                    .with_hint("GitLab would create no pipeline for this file; the jobs run here anyway"),
            );
        } else {
            errors.push(Diagnostic::error(PRE_POST_ONLY, None));
        }
    }
    if let Some(cycle) = find_cycle(&jobs) {
        // At the first job's `needs` entry that closes the cycle's first step.
        let span = cycle.get(1).and_then(|next| {
            let source = &config.jobs[jobs[cycle[0]].config_index];
            let target = &config.jobs[jobs[*next].config_index].name;
            source.needs.iter().flatten().find(|need| need.job == *target).map(|need| need.span)
        });
        let names: Vec<&str> = cycle.iter().map(|position| jobs[*position].name.as_str()).collect();
        errors.push(Diagnostic::error(format!("needs form a cycle: {}", names.join(" → ")), span));
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    // Selection from the command line.
    let mut keep: Vec<bool> = vec![options.selected.is_empty(); jobs.len()];
    if !options.selected.is_empty() {
        let mut queue = Vec::new();
        for name in &options.selected {
            let matched: Vec<usize> = (0..jobs.len())
                .filter(|p| jobs[*p].name == *name || config.jobs[jobs[*p].config_index].name == *name)
                .collect();
            if matched.is_empty() {
                return Err(vec![Diagnostic::error(format!("{name} could not be found"), None)]);
            }
            queue.extend(matched);
        }
        let explicitly: HashSet<usize> = queue.iter().copied().collect();
        while let Some(position) = queue.pop() {
            if keep[position] {
                continue;
            }
            keep[position] = true;
            if !(options.with_needs || options.only_needs) {
                continue;
            }
            match &jobs[position].needs {
                Some(needs) => queue.extend(needs.iter().map(|n| n.job)),
                None if !options.only_needs => {
                    queue.extend((0..jobs.len()).filter(|other| jobs[*other].stage < jobs[position].stage));
                }
                None => {}
            }
        }
        for position in &explicitly {
            if jobs[*position].when == When::Manual {
                jobs[*position].when = When::OnSuccess;
            }
        }
    }
    if let Some(stage) = &options.stage {
        for position in 0..jobs.len() {
            keep[position] = keep[position] && config.stages[jobs[position].stage] == *stage;
        }
    }
    for job in &mut jobs {
        if job.when == When::Manual
            && options.manual.iter().any(|m| *m == job.name || *m == config.jobs[job.config_index].name)
        {
            job.when = When::OnSuccess;
        }
    }

    // Drop unselected jobs and renumber the references.
    let mut new_index = vec![usize::MAX; jobs.len()];
    let mut kept = Vec::new();
    for (position, job) in jobs.into_iter().enumerate() {
        if keep[position] {
            new_index[position] = kept.len();
            kept.push(job);
        }
    }
    for job in &mut kept {
        if let Some(needs) = &mut job.needs {
            needs.retain(|n| new_index[n.job] != usize::MAX);
            for need in needs.iter_mut() {
                need.job = new_index[need.job];
            }
        }
        job.artifacts_from =
            job.artifacts_from.iter().filter(|i| new_index[**i] != usize::MAX).map(|i| new_index[*i]).collect();
    }
    warnings.extend(config.diagnostics.iter().filter(|d| !d.is_error()).cloned());
    Ok(Plan { stages: config.stages.clone(), jobs: kept, workflow_variables, warnings, prevented_by_workflow: false })
}

impl Plan {
    /// A job that waits, through `needs`, on a manual job nobody plays. GitLab accepts such a
    /// file (the needing job waits until someone plays the manual one), so `lint` does too;
    /// `opsloop run`, which nobody can click in, refuses to start it, as gitlab-ci-local does,
    /// unless `--manual` plays the job.
    pub fn unplayed_manual_need(&self) -> Option<Diagnostic> {
        self.jobs.iter().filter(|job| job.when != When::Manual).find_map(|job| {
            let need = job.needs.iter().flatten().find(|need| self.jobs[need.job].when == When::Manual)?;
            Some(Diagnostic::error(
                format!(
                    "{} is when:manual, its needed by {}, and not specified in --manual",
                    self.jobs[need.job].name, job.name
                ),
                None,
            ))
        })
    }
}

/// Why a `needs:parallel:matrix` selector cannot be resolved.
enum SelectorError {
    /// `$[[ matrix.X ]]` in a job that has no matrix of its own.
    NotParallel,
    /// `$[[ matrix.X ]]` naming a key the job's own matrix lacks.
    Unknown(String),
}

/// The selectors of one needing instance, with `$[[ matrix.KEY ]]` replaced by the instance's
/// own value of KEY (whitespace inside the brackets does not matter; several may sit in one
/// value).
fn resolve_selectors(
    combos: &[MatrixSelector],
    own: &[(String, String)],
    parallel: bool,
) -> Result<Vec<MatrixSelector>, SelectorError> {
    let substitute = |text: &str| -> Result<String, SelectorError> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("$[[") {
            let Some(end) = rest[start..].find("]]") else { break };
            out.push_str(&rest[..start]);
            let inner = rest[start + 3..start + end].trim();
            let Some(key) = inner.strip_prefix("matrix.").map(str::trim) else {
                out.push_str(&rest[start..start + end + 2]);
                rest = &rest[start + end + 2..];
                continue;
            };
            if !parallel {
                return Err(SelectorError::NotParallel);
            }
            match own.iter().find(|(k, _)| k == key) {
                Some((_, value)) => out.push_str(value),
                None => return Err(SelectorError::Unknown(key.to_owned())),
            }
            rest = &rest[start + end + 2..];
        }
        out.push_str(rest);
        Ok(out)
    };
    combos
        .iter()
        .map(|combo| {
            combo
                .iter()
                .map(|(key, values)| {
                    let values = values.iter().map(|v| substitute(v)).collect::<Result<Vec<_>, _>>()?;
                    Ok((key.clone(), values))
                })
                .collect()
        })
        .collect()
}

/// One instance of a job: its name, its extra variables, its matrix values.
type Instance = (String, Vec<Variable>, Vec<(String, String)>);

/// A `parallel` job's instances: their names, CI_NODE_* and matrix variables, and the
/// matrix values (to filter `needs:parallel:matrix`).
fn expand_parallel(job: &Job) -> Vec<Instance> {
    let variable =
        |name: &str, value: String| Variable { name: name.to_owned(), value, expand: false, description: None };
    match &job.parallel {
        None => vec![(job.name.clone(), Vec::new(), Vec::new())],
        Some(Parallel::Count(total)) => (1..=*total)
            .map(|index| {
                (
                    format!("{}: [{index}/{total}]", job.name),
                    vec![variable("CI_NODE_INDEX", index.to_string()), variable("CI_NODE_TOTAL", total.to_string())],
                    Vec::new(),
                )
            })
            .collect(),
        Some(Parallel::Matrix(rows)) => {
            let mut combos: Vec<Vec<(String, String)>> = Vec::new();
            for row in rows {
                let mut row_combos: Vec<Vec<(String, String)>> = vec![Vec::new()];
                for (name, values) in row {
                    row_combos = row_combos
                        .into_iter()
                        .flat_map(|combo| {
                            values.iter().map(move |value| {
                                let mut next = combo.clone();
                                next.push((name.clone(), value.clone()));
                                next
                            })
                        })
                        .collect();
                }
                combos.extend(row_combos);
            }
            let total = combos.len();
            combos
                .into_iter()
                .enumerate()
                .map(|(index, combo)| {
                    let label = combo.iter().map(|(_, v)| v.as_str()).collect::<Vec<_>>().join(",");
                    let mut variables: Vec<Variable> = combo.iter().map(|(k, v)| variable(k, v.clone())).collect();
                    variables.push(variable("CI_NODE_INDEX", (index + 1).to_string()));
                    variables.push(variable("CI_NODE_TOTAL", total.to_string()));
                    (format!("{}: [{label}]", job.name), variables, combo)
                })
                .collect()
        }
    }
}

/// A cycle in the `needs` graph, as positions in `jobs` (the first one again at the end), if
/// there is one.
fn find_cycle(jobs: &[PlannedJob]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        Active,
        Done,
    }
    let mut marks = vec![Mark::New; jobs.len()];
    for start in 0..jobs.len() {
        if marks[start] != Mark::New {
            continue;
        }
        // Iterative DFS: (node, next edge index); the path is the stack.
        let mut stack: Vec<(usize, usize)> = vec![(start, 0)];
        marks[start] = Mark::Active;
        while let Some((node, edge)) = stack.last().copied() {
            let needs = jobs[node].needs.as_deref().unwrap_or_default();
            if edge < needs.len() {
                if let Some(top) = stack.last_mut() {
                    top.1 += 1;
                }
                let next = needs[edge].job;
                match marks[next] {
                    Mark::New => {
                        marks[next] = Mark::Active;
                        stack.push((next, 0));
                    }
                    Mark::Active => {
                        let from = stack.iter().position(|(n, _)| *n == next).unwrap_or(0);
                        let mut cycle: Vec<usize> = stack[from..].iter().map(|(n, _)| *n).collect();
                        cycle.push(next);
                        return Some(cycle);
                    }
                    Mark::Done => {}
                }
            } else {
                marks[node] = Mark::Done;
                stack.pop();
            }
        }
    }
    None
}
