//! `opsloop run` and `opsloop lint` end to end: real git repositories, real bash, real
//! processes to cancel and time out, a real sandbox and container where the machine has them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{BIN, text};

/// A throw-away git repository holding `files`.
fn repo(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (path, content) in files {
        let path = dir.path().join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        if content.starts_with("#!") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    let git = |args: &[&str]| {
        let status = Command::new("git")
            .args(args)
            .current_dir(dir.path())
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    };
    git(&["init", "-q", "-b", "main"]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "init"]);
    dir
}

fn run_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN).arg("run").args(args).current_dir(dir).env("NO_COLOR", "1").output().unwrap()
}

/// Stdout with runs of spaces squeezed, since job names are padded to a common width.
fn stdout(output: &Output) -> String {
    text(&output.stdout)
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_pipeline_runs_in_stage_and_needs_order_with_artifacts_and_dotenv() {
    let dir = repo(&[(
        ".gitlab-ci.yml",
        r#"
stages: [build, test, deploy]
build:
  stage: build
  script:
    - mkdir -p dist && echo v1 > dist/version
    - echo "VERSION=1.2.3" > build.env
  artifacts:
    paths: [dist/]
    reports:
      dotenv: build.env
test:
  stage: test
  needs: [build]
  script:
    - test "$(cat dist/version)" = v1
    - 'echo "version from dotenv: $VERSION"'
deploy:
  stage: deploy
  script: echo "deploying $VERSION"
"#,
    )]);
    let output = run_in(dir.path(), &[]);
    let out = stdout(&output);
    assert!(output.status.success(), "{out}\n{}", text(&output.stderr));
    assert!(out.contains("test > version from dotenv: 1.2.3"), "{out}");
    assert!(out.contains("deploy > deploying 1.2.3"), "{out}");
    for job in ["build", "test", "deploy"] {
        assert!(out.lines().any(|l| l.split_whitespace().take(2).eq(["PASS", job])), "{job}: {out}");
    }
    // State stays out of git status.
    let status = Command::new("git").args(["status", "--porcelain"]).current_dir(dir.path()).output().unwrap();
    assert!(!text(&status.stdout).contains(".opsloop"), "{}", text(&status.stdout));
}

#[test]
fn a_timeout_ends_the_whole_process_tree() {
    let dir = repo(&[(
        ".gitlab-ci.yml",
        "slow:\n  timeout: 1s\n  script:\n    - (sleep 20; touch escaped-child) &\n    - sleep 20\n",
    )]);
    let started = Instant::now();
    let output = run_in(dir.path(), &[]);
    assert_eq!(output.status.code(), Some(1), "{}", stdout(&output));
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    assert!(text(&output.stderr).contains("timed out"), "{}", text(&output.stderr));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!dir.path().join(".opsloop/builds/slow/escaped-child").exists());
}

#[test]
fn ctrl_c_cancels_kills_children_and_runs_after_script() {
    let dir = repo(&[(
        ".gitlab-ci.yml",
        "long:\n  script:\n    - (sleep 30; touch \"$CI_PROJECT_DIR/../../escaped\") &\n    - sleep 30\n  after_script:\n    - echo \"status=$CI_JOB_STATUS\"\n",
    )]);
    let child = Command::new(BIN)
        .args(["run"])
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let started = Instant::now();
    Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(output.status.code(), Some(1));
    let out = stdout(&output);
    assert!(out.contains("long > status=canceled"), "{out}\n{}", text(&output.stderr));
    assert!(out.contains("CANCELED"), "{out}");
    std::thread::sleep(Duration::from_millis(300));
    assert!(!dir.path().join(".opsloop/escaped").exists());
}

#[test]
fn masked_values_never_reach_the_output() {
    let dir = repo(&[
        (
            ".gitlab-ci.yml",
            "leak:\n  script:\n    - echo \"token is $API_TOKEN\"\n    - printf '%s' \"$API_TOKEN\" | cut -c1-5\n",
        ),
        (".gitlab-ci-local-variables.yml", "API_TOKEN:\n  value: sup3r-s3cret-value\n  masked: true\n"),
    ]);
    let output = run_in(dir.path(), &["--json"]);
    let all = format!("{}{}", stdout(&output), text(&output.stderr));
    assert!(output.status.success(), "{all}");
    assert!(!all.contains("sup3r-s3cret-value"), "{all}");
    assert!(all.contains("token is [MASKED]"), "{all}");
}

#[test]
fn retries_resource_groups_and_manual_jobs() {
    let dir = repo(&[(
        ".gitlab-ci.yml",
        r#"
flaky:
  retry: 2
  script:
    - n=$(cat attempts 2>/dev/null || echo 0); echo $((n+1)) > attempts
    - test "$(cat attempts)" -ge 2
one:
  resource_group: prod
  script: [date +%s%N > "$CI_PROJECT_DIR/../one.start", sleep 1, date +%s%N > "$CI_PROJECT_DIR/../one.end"]
two:
  resource_group: prod
  script: [date +%s%N > "$CI_PROJECT_DIR/../two.start", sleep 1, date +%s%N > "$CI_PROJECT_DIR/../two.end"]
later:
  when: manual
  script: echo should not run
"#,
    )]);
    let output = run_in(dir.path(), &["--json"]);
    let out = stdout(&output);
    assert!(output.status.success(), "{out}");
    let events: Vec<serde_json::Value> = out.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let finished = |name: &str| {
        events.iter().find(|e| e["event"] == "job_finished" && e["name"] == name).cloned().unwrap_or_default()
    };
    assert_eq!(finished("flaky")["status"], "success");
    assert_eq!(finished("flaky")["attempts"], 2);
    assert_eq!(finished("later")["status"], "manual");
    let read = |name: &str| -> u128 {
        std::fs::read_to_string(dir.path().join(".opsloop/builds").join(name)).unwrap().trim().parse().unwrap()
    };
    let (one, two) = ((read("one.start"), read("one.end")), (read("two.start"), read("two.end")));
    assert!(one.1 <= two.0 || two.1 <= one.0, "resource_group jobs overlapped: {one:?} {two:?}");
}

#[test]
fn lint_reports_every_problem_with_its_place() {
    let dir = repo(&[(
        ".gitlab-ci.yml",
        "stages: [build]\nbuild:\n  stage: biuld\n  scirpt: [echo]\n  script: [make]\ntest:\n  stage: build\n  needs: [nope]\n  script: [x]\n",
    )]);
    let output = Command::new(BIN).args(["lint"]).current_dir(dir.path()).env("NO_COLOR", "1").output().unwrap();
    let report = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{report}");
    assert!(report.contains("stage:biuld not found for build"), "{report}");
    assert!(report.contains(".gitlab-ci.yml:3:10"), "the stage error points at its value: {report}");
    assert!(report.contains("jobs:build config contains unknown keys: scirpt"), "{report}");
    assert!(report.contains("did you mean `script`?"), "{report}");
    assert!(report.contains(".gitlab-ci.yml:4:3"), "{report}");
    let json = Command::new(BIN).args(["lint", "--json"]).current_dir(dir.path()).output().unwrap();
    let problems: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert!(problems.as_array().unwrap().iter().any(|p| p["severity"] == "error" && p["line"] == 4));
    let good = repo(&[(".gitlab-ci.yml", "job:\n  script: echo ok\n")]);
    let output = Command::new(BIN).args(["lint"]).current_dir(good.path()).output().unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
}

#[test]
fn list_json_and_preview_show_the_expanded_pipeline() {
    let dir = repo(&[(
        ".gitlab-ci.yml",
        ".base:\n  script: [echo base]\n  tags: [linux]\njob:\n  extends: .base\n  parallel: 2\n",
    )]);
    let listed = run_in(dir.path(), &["--list-json"]);
    let jobs: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let names: Vec<&str> = jobs.as_array().unwrap().iter().map(|j| j["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["job: [1/2]", "job: [2/2]"]);
    let preview = stdout(&run_in(dir.path(), &["--preview"]));
    // YAML as people write it, which reads back as the same tree.
    assert!(preview.contains("job:") && preview.contains("- echo base") && preview.contains("- linux"), "{preview}");
    assert!(!preview.contains("extends"), "{preview}");
}

#[test]
fn the_sandbox_keeps_jobs_in_their_workspace() {
    if Command::new("bwrap").arg("--version").output().is_err() {
        assert!(std::env::var_os("CI").is_none(), "CI installs bubblewrap");
        eprintln!("skipped: sandbox run, because bwrap is missing");
        return;
    }
    let dir = repo(&[(
        ".gitlab-ci.yml",
        "boxed:\n  script:\n    - echo fine > inside.txt\n    - if touch \"$HOME/opsloop-escape-test\" 2>/dev/null; then echo ESCAPED; fi\n",
    )]);
    let output = run_in(dir.path(), &["--isolation", "sandbox", "--shell-isolation"]);
    let out = stdout(&output);
    assert!(output.status.success(), "{out}\n{}", text(&output.stderr));
    assert!(out.contains("boxed starting sandbox"), "{out}");
    assert!(!out.contains("boxed > ESCAPED"), "{out}");
    assert!(dir.path().join(".opsloop/builds/boxed/inside.txt").exists());
}

/// Builds a tiny image from the static busybox, once, with podman import.
fn busybox_image() -> Option<&'static str> {
    const IMAGE: &str = "localhost/opsloop-test-busybox:1";
    let busybox = ["/bin/busybox", "/usr/bin/busybox"].into_iter().map(PathBuf::from).find(|p| p.exists())?;
    Command::new("podman").arg("--version").output().ok()?;
    if Command::new("podman").args(["image", "exists", IMAGE]).status().ok()?.success() {
        return Some(IMAGE);
    }
    let root = tempfile::tempdir().ok()?;
    std::fs::create_dir_all(root.path().join("bin")).ok()?;
    std::fs::create_dir_all(root.path().join("tmp")).ok()?;
    std::fs::copy(&busybox, root.path().join("bin/busybox")).ok()?;
    for applet in ["sh", "echo", "cat", "pwd", "test", "mkdir", "ls"] {
        std::os::unix::fs::symlink("busybox", root.path().join("bin").join(applet)).ok()?;
    }
    let tar = root.path().join("rootfs.tar");
    let packed =
        Command::new("tar").arg("-C").arg(root.path()).arg("-cf").arg(&tar).args(["bin", "tmp"]).status().ok()?;
    let imported = Command::new("podman").args(["import"]).arg(&tar).arg(IMAGE).stdout(Stdio::null()).status().ok()?;
    (packed.success() && imported.success()).then_some(IMAGE)
}

#[test]
fn image_jobs_run_in_a_container_or_fail_clearly() {
    let yaml = |image: &str| {
        format!(
            "boxed:\n  image: {image}\n  script:\n    - echo \"in $CI_PROJECT_DIR\"\n    - echo made > out.txt\n  artifacts:\n    paths: [out.txt]\n"
        )
    };
    let missing = repo(&[(".gitlab-ci.yml", &yaml("localhost/no-such-image:0"))]);
    let output = run_in(missing.path(), &[]);
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("--force-shell"), "{}", text(&output.stderr));
    let forced = run_in(missing.path(), &["--force-shell"]);
    assert!(forced.status.success(), "{}", text(&forced.stderr));

    let Some(image) = busybox_image() else {
        assert!(std::env::var_os("CI").is_none(), "CI installs podman, runc and busybox-static");
        eprintln!("skipped: container run, because podman or busybox is missing");
        return;
    };
    let dir = repo(&[(".gitlab-ci.yml", &yaml(image))]);
    let output = run_in(dir.path(), &[]);
    let out = stdout(&output);
    assert!(output.status.success(), "{out}\n{}", text(&output.stderr));
    assert!(out.contains(&format!("boxed starting {image}")), "{out}");
    assert!(out.contains("boxed > in /builds/boxed"), "{out}");
    assert_eq!(std::fs::read_to_string(dir.path().join("out.txt")).unwrap().trim(), "made", "the artifact came back");
}

#[test]
fn the_demo_pipeline_passes() {
    let demo = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/demo");
    let files: Vec<(String, String)> = ["app.sh", "test.sh", ".gitlab-ci.yml", "README.md"]
        .iter()
        .map(|name| ((*name).to_owned(), std::fs::read_to_string(demo.join(name)).unwrap()))
        .collect();
    let borrowed: Vec<(&str, &str)> = files.iter().map(|(n, c)| (n.as_str(), c.as_str())).collect();
    let dir = repo(&borrowed);
    let output = run_in(dir.path(), &[]);
    let out = stdout(&output);
    assert!(output.status.success(), "{out}\n{}", text(&output.stderr));
    assert!(out.contains("TESTS unit-tests: 2 tests, 2 passed, 0 failed, 0 skipped"), "{out}");
    // Its deploy job runs only on a server, which gives it a token: `opsloop run` leaves it out.
    assert!(!out.contains("deploy >"), "{out}");
    assert!(out.contains("PASS syntax: [bash]") && out.contains("PASS syntax: [sh]"), "{out}");
}

#[test]
fn changes_rules_compare_with_the_default_branch_and_compare_to() {
    let dir = repo(&[
        (
            ".gitlab-ci.yml",
            r#"
backend:
  rules:
    - changes: ["src/**/*"]
  script: echo backend
docs:
  rules:
    - changes: ["docs/**"]
  script: echo docs
legacy:
  only:
    changes: ["docs/*.md"]
  script: echo legacy
against-tag:
  rules:
    - changes:
        paths: ["src/*"]
        compare_to: v1
  script: echo against-tag
"#,
        ),
        ("src/main.rs", "fn main() {}\n"),
        ("docs/guide.md", "# guide\n"),
    ]);
    let git = |args: &[&str]| {
        let status = Command::new("git")
            .args(["-c", "user.email=t@example.invalid", "-c", "user.name=t"])
            .args(args)
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    };
    git(&["tag", "v1"]);
    git(&["checkout", "-q", "-b", "feature"]);
    std::fs::write(dir.path().join("docs/guide.md"), "# guide, edited\n").unwrap();
    git(&["commit", "-qam", "docs only"]);
    let listed = run_in(dir.path(), &["--list-json"]);
    let jobs: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let names: Vec<&str> = jobs.as_array().unwrap().iter().map(|j| j["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["docs", "legacy"], "{}", text(&listed.stderr));
    std::fs::write(dir.path().join("src/main.rs"), "fn main() { println!(); }\n").unwrap();
    let listed = run_in(dir.path(), &["--list-json"]);
    let jobs: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let names: Vec<&str> = jobs.as_array().unwrap().iter().map(|j| j["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["backend", "docs", "legacy", "against-tag"], "uncommitted changes count too");
}

/// As gitlab-ci-local: a job starts from the tracked files as the working tree has them;
/// `--dirty` adds untracked files, `--committed` takes the last commit's.
#[test]
fn jobs_start_from_the_tracked_files_of_the_working_tree() {
    let dir = repo(&[
        (".gitlab-ci.yml", "show:\n  script:\n    - cat note.txt\n    - cat new.txt || echo no new file\n"),
        ("note.txt", "committed\n"),
    ]);
    std::fs::write(dir.path().join("note.txt"), "edited, not committed\n").unwrap();
    std::fs::write(dir.path().join("new.txt"), "untracked\n").unwrap();
    let tracked = stdout(&run_in(dir.path(), &[]));
    assert!(tracked.contains("show > edited, not committed"), "{tracked}");
    assert!(tracked.contains("show > no new file"), "untracked files stay out by default: {tracked}");
    let dirty = stdout(&run_in(dir.path(), &["--dirty"]));
    assert!(dirty.contains("show > edited, not committed") && dirty.contains("show > untracked"), "{dirty}");
    let committed = stdout(&run_in(dir.path(), &["--committed"]));
    assert!(committed.contains("show > committed") && committed.contains("show > no new file"), "{committed}");
}

#[test]
fn trigger_include_runs_a_child_pipeline() {
    let dir = repo(&[
        (
            ".gitlab-ci.yml",
            "stages: [build, child]\nprepare:\n  stage: build\n  script: echo parent\nspawn:\n  stage: child\n  variables:\n    FROM_PARENT: hello\n  trigger:\n    include: ci/child.yml\n    strategy: depend\n",
        ),
        (
            "ci/child.yml",
            "inner-a:\n  script: echo \"child says $FROM_PARENT from $CI_PIPELINE_SOURCE\"\ninner-b:\n  needs: [inner-a]\n  script: exit 3\n",
        ),
    ]);
    let output = run_in(dir.path(), &[]);
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "the child's failure fails the trigger job:\n{out}");
    assert!(out.contains("spawn: inner-a > child says hello from parent_pipeline"), "{out}");
    assert!(out.contains("spawn starting child pipeline"), "{out}");
    assert!(out.contains("PASS prepare") && out.contains("FAIL spawn"), "{out}");
}

#[test]
fn untracked_artifacts_and_file_variables() {
    let dir = repo(&[
        (
            ".gitlab-ci.yml",
            "make:\n  stage: build\n  script:\n    - echo built > output.bin\n    - mkdir -p logs && echo log > logs/run.log\n  artifacts:\n    untracked: true\n    exclude: [logs/**]\nuse:\n  stage: test\n  script:\n    - cat output.bin\n    - test ! -e logs/run.log\n    - cat \"$KUBECONFIG\"\n",
        ),
        (".gitlab-ci-local-variables.yml", "KUBECONFIG:\n  type: file\n  value: \"apiVersion: v1\"\n"),
    ]);
    let output = run_in(dir.path(), &[]);
    let out = stdout(&output);
    assert!(output.status.success(), "{out}\n{}", text(&output.stderr));
    assert!(out.contains("use > built"), "{out}");
    assert!(out.contains("use > apiVersion: v1"), "the file variable names a file with the value: {out}");
}

#[test]
fn failures_propagate_through_needs_and_names_never_share_a_workspace() {
    let dir = repo(&[(
        ".gitlab-ci.yml",
        r#"
a:
  script: exit 1
b:
  needs: [a]
  script: echo b ran
c:
  needs: [b]
  script: echo c ran
cleanup:
  needs: [c]
  when: on_failure
  script: echo cleaning up
slow-but-allowed:
  allow_failure: true
  timeout: 1s
  script: sleep 10
"build:x":
  script: [echo from-colon > who.txt]
  artifacts: {paths: [who.txt]}
"build/x":
  script: [echo from-slash]
"#,
    )]);
    let output = run_in(dir.path(), &["--json"]);
    let events: Vec<serde_json::Value> = stdout(&output).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let status = |name: &str| -> String {
        events
            .iter()
            .find(|e| e["event"] == "job_finished" && e["name"] == name)
            .map(|e| e["status"].as_str().unwrap_or_default().to_owned())
            .unwrap_or_default()
    };
    assert_eq!(status("a"), "failed");
    assert_eq!(status("b"), "skipped");
    assert_eq!(status("c"), "skipped", "a job needing a skipped job is skipped too");
    assert_eq!(status("cleanup"), "success", "on_failure sees the failure through the chain");
    assert_eq!(status("slow-but-allowed"), "warning", "a timeout is a failure allow_failure covers");
    let ran = |name: &str, text: &str| {
        events.iter().any(|e| e["event"] == "command" && e["name"] == name && e["text"].as_str() == Some(text))
    };
    assert!(ran("build:x", "echo from-colon > who.txt") && ran("build/x", "echo from-slash"));
}
