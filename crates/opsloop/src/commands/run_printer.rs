//! How `opsloop run` shows a pipeline as it runs: gitlab-ci-local's lines (`job > output`,
//! `job $ command`, padded names, the summary), a spinner per job on a terminal, or a JSON
//! event stream.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use opsloop_runner::{Event, EventSink, JobStatus, NoteKind, Stream};

/// How wide job names are padded in output: to the longest name that runs, so job lines
/// align, but never beyond `max` (`--max-job-name-padding`; 0 or less: no padding), which
/// keeps one very long name from pushing every line far right.
pub fn name_width<'a>(names: impl Iterator<Item = &'a str>, max: Option<i64>) -> usize {
    let longest = names.map(|name| name.chars().count()).max().unwrap_or(0);
    match max {
        Some(max) => usize::try_from(max).map_or(0, |max| longest.min(max)),
        None => longest,
    }
}

/// `12 ms`, `1.58 s`, `2.5 min`: three significant figures at most.
fn human_duration(duration: std::time::Duration) -> String {
    let ms = duration.as_secs_f64() * 1000.0;
    let (value, unit) = if ms < 1000.0 {
        (ms, "ms")
    } else if ms < 60_000.0 {
        (ms / 1000.0, "s")
    } else {
        (ms / 60_000.0, "min")
    };
    let text = if value >= 10.0 { format!("{value:.0}") } else { format!("{value:.2}") };
    let text = if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_owned() } else { text };
    format!("{text} {unit}")
}

/// What a [`Printer`] shows and how.
pub struct PrinterOptions {
    /// Job names are padded to this width (see [`name_width`]).
    pub width: usize,
    pub json: bool,
    /// The pipeline's stages, and each planned job's stage (an index into them).
    pub stages: Vec<String>,
    pub jobs: Vec<usize>,
    pub color: bool,
    /// `--timestamps`: job lines start with the time of day and the job's elapsed time.
    pub timestamps: bool,
}

/// Prints runner events as gitlab-ci-local does: `job > line`, `job $ command`, and a summary.
pub struct Printer {
    options: PrinterOptions,
    /// Held while one event's lines are printed, so jobs running side by side never mix
    /// within a line group.
    lock: Mutex<()>,
    /// On a terminal: a spinner line per running job, with its elapsed time.
    live: Option<Live>,
    /// When each running job started.
    started: Mutex<HashMap<usize, Instant>>,
    /// When each open collapsible section (job, section name) of job output began.
    sections: Mutex<HashMap<(usize, String), Instant>>,
    /// Each running job's name and when it last printed, for the note on long silences.
    last_heard: Mutex<HashMap<usize, (String, Instant)>>,
}

/// After this long without a line from a running job, a note says it still runs (a job that
/// sleeps or compiles quietly looks the same as one that hangs otherwise).
pub const SILENCE_NOTE_AFTER: Duration = Duration::from_secs(10);

/// A collapsible-section marker of GitLab's job logs.
#[derive(Debug, PartialEq, Eq)]
enum Section<'a> {
    Start(&'a str),
    End(&'a str),
}

/// Reads GitLab's section markers, `ESC[0Ksection_start:<unix time>:<name>[options]\rESC[0K
/// header` and `ESC[0Ksection_end:<unix time>:<name>\rESC[0K`. A terminal would show the raw
/// escape codes, so they are turned into lines of their own, as gitlab-ci-local does.
fn section_marker(line: &str) -> Option<Section<'_>> {
    const ERASE: &str = "\x1b[0K";
    let (_, rest) = line.split_once(&format!("{ERASE}section_"))?;
    let (start, rest) =
        if let Some(rest) = rest.strip_prefix("start:") { (true, rest) } else { (false, rest.strip_prefix("end:")?) };
    let digits = rest.find(|c: char| !c.is_ascii_digit())?;
    let rest = rest[digits..].strip_prefix(':').filter(|_| digits > 0)?;
    let end = rest.find(|c: char| c.is_whitespace() || c == '[').unwrap_or(rest.len());
    let (name, mut rest) = rest.split_at(end);
    if let Some(options) = rest.strip_prefix('[') {
        rest = &options[options.find(']')? + 1..];
    }
    if name.is_empty() || !rest.starts_with(&format!("\r{ERASE}")) {
        return None;
    }
    Some(if start { Section::Start(name) } else { Section::End(name) })
}

struct Live {
    multi: indicatif::MultiProgress,
    bars: Mutex<std::collections::HashMap<usize, indicatif::ProgressBar>>,
}

impl Live {
    /// Only when both streams are terminals: piped output stays plain lines.
    fn for_terminal() -> Option<Live> {
        use std::io::IsTerminal;
        (std::io::stdout().is_terminal() && std::io::stderr().is_terminal())
            .then(|| Live { multi: indicatif::MultiProgress::new(), bars: Mutex::new(Default::default()) })
    }

    fn started(&self, job: usize, name: &str) {
        let style = indicatif::ProgressStyle::with_template("  {spinner} {prefix} running for {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
        let bar = self.multi.add(indicatif::ProgressBar::new_spinner().with_style(style).with_prefix(name.to_owned()));
        bar.enable_steady_tick(std::time::Duration::from_millis(120));
        if let Ok(mut bars) = self.bars.lock() {
            bars.insert(job, bar);
        }
    }

    fn finished(&self, job: usize) {
        if let Some(bar) = self.bars.lock().ok().and_then(|mut bars| bars.remove(&job)) {
            bar.finish_and_clear();
            self.multi.remove(&bar);
        }
    }
}

impl Printer {
    pub fn new(options: PrinterOptions) -> Printer {
        let live = if options.json { None } else { Live::for_terminal() };
        Printer {
            options,
            lock: Mutex::new(()),
            live,
            started: Mutex::new(HashMap::new()),
            sections: Mutex::new(HashMap::new()),
            last_heard: Mutex::new(HashMap::new()),
        }
    }

    /// The job's name as its lines start: padded, coloured, and with `--timestamps` after
    /// `[HH:MM:SS elapsed]`.
    fn prefix(&self, job: usize, name: &str) -> String {
        let padded = format!("{name:<width$}", width = self.options.width);
        let name = if self.options.color { format!("\x1b[34m{padded}\x1b[0m") } else { padded };
        if !self.options.timestamps {
            return name;
        }
        let elapsed =
            self.started.lock().ok().and_then(|started| started.get(&job).map(Instant::elapsed)).unwrap_or_default();
        let now = jiff::Zoned::now().strftime("%H:%M:%S").to_string();
        format!("[{now} {:>7}] {name}", human_duration(elapsed))
    }

    /// Notes each running job that has been silent for [`SILENCE_NOTE_AFTER`]; called every
    /// second or so while the pipeline runs.
    pub fn note_silent_jobs(&self) {
        if self.options.json {
            return;
        }
        let _guard = self.lock.lock();
        let silent: Vec<(usize, String)> = match self.last_heard.lock() {
            Ok(mut heard) => heard
                .iter_mut()
                .filter(|(_, (_, last))| last.elapsed() >= SILENCE_NOTE_AFTER)
                .map(|(job, (name, last))| {
                    *last = Instant::now();
                    (*job, name.clone())
                })
                .collect(),
            Err(_) => return,
        };
        let print = || {
            for (job, name) in &silent {
                println!("{} > still running...", self.prefix(*job, name));
            }
        };
        match &self.live {
            Some(live) => live.multi.suspend(print),
            None => print(),
        }
    }

    pub fn summary(&self, outcome: &opsloop_runner::PipelineOutcome, coverage: &[bool]) {
        let _guard = self.lock.lock();
        println!();
        let paint = |label: &str, colour: &str| {
            if self.options.color { format!("\x1b[{colour}m{label}\x1b[0m") } else { label.to_owned() }
        };
        for (index, (name, job)) in outcome.jobs.iter().enumerate() {
            let padded = format!("{name:<width$}", width = self.options.width);
            let cover = job
                .coverage
                .as_ref()
                .filter(|_| coverage.get(index).copied().unwrap_or(false))
                .map(|c| format!(" {c}% coverage"))
                .unwrap_or_default();
            let took = human_duration(job.duration);
            // With --timestamps the duration leads, in brackets, as on the job lines.
            let (lead, took) = if self.options.timestamps {
                (format!("[{took:>7}] "), String::new())
            } else {
                (" ".to_owned(), format!("  {took}"))
            };
            let line = match job.status {
                JobStatus::Success => format!(" {} {lead}{padded}{cover}{took}", paint("PASS", "32")),
                JobStatus::Warning => format!(" {} {lead}{padded}  pre_script{took}", paint("WARN", "33")),
                JobStatus::Failed => format!(" {} {lead}{padded}{took}", paint("FAIL", "31")),
                JobStatus::Canceled => format!(" {} {lead}{padded}{took}", paint("CANCELED", "31")),
                JobStatus::Skipped | JobStatus::Manual => continue,
            };
            println!("{}", line.trim_end());
            if job.after_script_failed {
                println!(" {}  {padded}  after_script", paint("WARN", "33"));
            }
            if matches!(job.status, JobStatus::Failed | JobStatus::Warning) {
                let start = job.tail.len().saturating_sub(3);
                for line in &job.tail[start..] {
                    println!("  > {line}");
                }
            }
        }
        let reports: Vec<(&String, &opsloop_runner::junit::TestReport)> =
            outcome.jobs.iter().filter_map(|(name, job)| job.tests.as_ref().map(|t| (name, t))).collect();
        if !reports.is_empty() {
            println!();
            for (name, report) in reports {
                println!(
                    " TESTS {name}: {} tests, {} passed, {} failed, {} skipped",
                    report.total(),
                    report.passed,
                    report.failed,
                    report.skipped
                );
                for failure in &report.failures {
                    println!("  ✗ {failure}");
                }
            }
        }
    }
}

/// The planned job an event is about.
fn job_of(event: &Event) -> usize {
    match event {
        Event::JobStarted { job, .. }
        | Event::Environment { job, .. }
        | Event::Command { job, .. }
        | Event::Output { job, .. }
        | Event::Delayed { job, .. }
        | Event::AfterScript { job, .. }
        | Event::Note { job, .. }
        | Event::JobFinished { job, .. } => *job,
    }
}

impl EventSink for Printer {
    fn emit(&self, event: Event) {
        let _guard = self.lock.lock();
        let job = job_of(&event);
        if let (Event::JobStarted { .. }, Ok(mut started)) = (&event, self.started.lock()) {
            started.insert(job, Instant::now());
        }
        if let Ok(mut heard) = self.last_heard.lock() {
            match &event {
                Event::JobStarted { name, .. } | Event::Command { name, .. } | Event::Output { name, .. } => {
                    heard.insert(job, (name.clone(), Instant::now()));
                }
                Event::JobFinished { .. } => {
                    heard.remove(&job);
                }
                _ => {}
            }
        }
        if self.options.json {
            let value = match &event {
                Event::JobStarted { job, name, executor } => {
                    serde_json::json!({"event": "job_started", "job": job, "name": name, "executor": executor})
                }
                Event::Command { job, name, text } => {
                    serde_json::json!({"event": "command", "job": job, "name": name, "text": text})
                }
                Event::Environment { job, name, environment, url } => serde_json::json!({
                    "event": "environment", "job": job, "name": name, "environment": environment, "url": url,
                }),
                Event::Output { job, name, stream, line } => serde_json::json!({
                    "event": "output", "job": job, "name": name,
                    "stream": if *stream == Stream::Stdout { "stdout" } else { "stderr" }, "line": line,
                }),
                Event::Note { job, name, text, kind } => {
                    let kind = match kind {
                        NoteKind::Warning => "warning",
                        NoteKind::Progress => "progress",
                        NoteKind::Detail => "detail",
                    };
                    serde_json::json!({"event": "note", "job": job, "name": name, "text": text, "kind": kind})
                }
                Event::AfterScript { job, name } => {
                    serde_json::json!({"event": "after_script", "job": job, "name": name})
                }
                Event::Delayed { job, name, seconds } => {
                    serde_json::json!({"event": "note", "job": job, "name": name, "text": format!("delayed: starting in {seconds}s")})
                }
                Event::JobFinished { job, name, outcome } => serde_json::json!({
                    "event": "job_finished", "job": job, "name": name, "status": outcome.status.as_str(),
                    "exit_code": outcome.exit_code, "duration_ms": outcome.duration.as_millis() as u64,
                    "coverage": outcome.coverage, "attempts": outcome.attempts,
                    "tests": outcome.tests.as_ref().map(|t| serde_json::json!({
                        "passed": t.passed, "failed": t.failed, "skipped": t.skipped, "failures": t.failures,
                    })),
                }),
            };
            println!("{value}");
            return;
        }
        // Lines to print, true for stderr; printed with the live view suspended.
        let mut lines: Vec<(bool, String)> = Vec::new();
        match &event {
            Event::JobStarted { name, executor, .. } => {
                let stage =
                    self.options.jobs.get(job).and_then(|s| self.options.stages.get(*s)).cloned().unwrap_or_default();
                lines.push((false, format!("{} starting {executor} ({stage})", self.prefix(job, name))));
            }
            Event::Command { name, text, .. } => lines.push((false, format!("{} $ {text}", self.prefix(job, name)))),
            Event::Environment { name, environment, url, .. } => {
                // gitlab-ci-local's line, which scripts read.
                let url = url.as_deref().map(|u| format!(", url: {u}")).unwrap_or_default();
                lines.push((false, format!("{} environment: {{ name: {environment}{url} }}", self.prefix(job, name))));
            }
            Event::Output { name, stream, line, .. } => {
                let to_stderr = *stream == Stream::Stderr;
                match section_marker(line) {
                    Some(Section::Start(section)) => {
                        if let Ok(mut sections) = self.sections.lock() {
                            sections.insert((job, section.to_owned()), Instant::now());
                        }
                        lines.push((to_stderr, format!("{} {section}_started", self.prefix(job, name))));
                    }
                    Some(Section::End(section)) => {
                        let began = self.sections.lock().ok().and_then(|mut s| s.remove(&(job, section.to_owned())));
                        let ms = began.map_or(0, |began| began.elapsed().as_millis());
                        lines.push((to_stderr, format!("{} {section} took {ms}ms", self.prefix(job, name))));
                    }
                    None => lines.push((to_stderr, format!("{} > {line}", self.prefix(job, name)))),
                }
            }
            Event::Note { name, text, kind, .. } => match kind {
                NoteKind::Warning => lines.push((true, format!("{} {text}", self.prefix(job, name)))),
                NoteKind::Progress => lines.push((false, format!("{} {text}", self.prefix(job, name)))),
                NoteKind::Detail => lines.push((false, text.clone())),
            },
            Event::Delayed { name, seconds, .. } => {
                lines.push((true, format!("{} delayed: starting in {seconds}s", self.prefix(job, name))))
            }
            Event::AfterScript { name, .. } => {
                lines.push((false, format!("{} Running after script...", self.prefix(job, name))))
            }
            Event::JobFinished { name, outcome, .. } => {
                let ms = outcome.duration.as_millis();
                match outcome.status {
                    JobStatus::Success => {
                        lines.push((false, format!("{} finished in {ms} ms", self.prefix(job, name))))
                    }
                    JobStatus::Warning => lines.push((
                        true,
                        format!(
                            "{} finished in {ms} ms  WARN {}",
                            self.prefix(job, name),
                            outcome.exit_code.unwrap_or(1)
                        ),
                    )),
                    JobStatus::Failed => {
                        let code = outcome.exit_code.map_or_else(|| "timeout".to_owned(), |c| c.to_string());
                        lines.push((true, format!("{} finished in {ms} ms  FAIL {code}", self.prefix(job, name))));
                    }
                    JobStatus::Canceled => {
                        lines.push((true, format!("{} canceled after {ms} ms", self.prefix(job, name))))
                    }
                    JobStatus::Skipped | JobStatus::Manual => {}
                }
                if outcome.after_script_failed {
                    lines.push((true, format!("{} finished in {ms} ms  WARN 1  after_script", self.prefix(job, name))));
                }
            }
        }
        let print = || {
            for (to_stderr, line) in &lines {
                if *to_stderr {
                    eprintln!("{line}");
                } else {
                    println!("{line}");
                }
            }
        };
        match &self.live {
            Some(live) => {
                live.multi.suspend(print);
                match &event {
                    Event::JobStarted { job, name, .. } => live.started(*job, name),
                    Event::JobFinished { job, .. } => live.finished(*job),
                    _ => {}
                }
            }
            None => print(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn names_pad_to_the_longest_within_the_maximum() {
        let names = ["short", "a-much-longer-name"];
        assert_eq!(name_width(names.into_iter(), None), 18);
        assert_eq!(name_width(names.into_iter(), Some(10)), 10);
        assert_eq!(name_width(names.into_iter(), Some(100)), 18);
        assert_eq!(name_width(names.into_iter(), Some(0)), 0);
        assert_eq!(name_width(names.into_iter(), Some(-3)), 0);
        assert_eq!(name_width(std::iter::empty(), None), 0);
    }

    #[test]
    fn section_markers_are_read_with_their_options() {
        let start = "\x1b[0Ksection_start:1000000:my_section[collapsed=true]\r\x1b[0KMy Section Title";
        assert_eq!(section_marker(start), Some(Section::Start("my_section")));
        assert_eq!(section_marker("\x1b[0Ksection_end:1000012:my_section\r\x1b[0K"), Some(Section::End("my_section")));
        assert_eq!(section_marker("section_start:1:plain\r"), None);
        assert_eq!(section_marker("\x1b[0Ksection_start::no_time\r\x1b[0K"), None);
        assert_eq!(section_marker("\x1b[0Ksection_start:1:unclosed[x\r\x1b[0K"), None);
        assert_eq!(section_marker("echo section_start"), None);
    }

    #[test]
    fn durations_read_like_gitlab_ci_local() {
        assert_eq!(human_duration(std::time::Duration::from_millis(12)), "12 ms");
        assert_eq!(human_duration(std::time::Duration::from_millis(1580)), "1.58 s");
        assert_eq!(human_duration(std::time::Duration::from_secs(150)), "2.5 min");
    }
}
