//! Every file in `tests/alertmanager-yml/` loads or is refused as `amtool check-config` (the
//! oracle, Alertmanager 0.25) decides, and refused files are refused at the place their first
//! line says (`# expect: invalid LINE:COLUMN`). `# expect: opsloop-only` marks files using
//! opsloop's extensions, which amtool refuses and opsloop accepts.

mod common;

use std::path::Path;
use std::process::Command;

#[derive(Debug, PartialEq)]
enum Expect {
    Valid,
    OpsloopOnly,
    Invalid(String),
}

fn expectation(text: &str) -> Expect {
    let first = text.lines().next().unwrap_or_default();
    let rest = first.strip_prefix("# expect: ").unwrap_or_else(|| panic!("no `# expect:` line: {first}"));
    match rest.trim() {
        "valid" => Expect::Valid,
        "opsloop-only" => Expect::OpsloopOnly,
        other => Expect::Invalid(other.strip_prefix("invalid ").unwrap_or_else(|| panic!("{other}")).to_owned()),
    }
}

#[test]
fn verdicts_agree_with_amtool_and_errors_point_at_the_place() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/alertmanager-yml");
    let amtool = common::peer(&["amtool"]);
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).collect();
    files.sort();
    assert!(files.len() >= 25);
    let mut failures = Vec::new();
    for path in &files {
        let text = std::fs::read_to_string(path).unwrap();
        let expect = expectation(&text);
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let ours = opsloop_alert::config::load(&text, &name);
        match (&expect, &ours) {
            (Expect::Valid | Expect::OpsloopOnly, Err(e)) => failures.push(format!("{name}: refused: {e}")),
            (Expect::Invalid(_), Ok(_)) => failures.push(format!("{name}: accepted")),
            (Expect::Invalid(place), Err(e)) => {
                let want = format!("{name}:{place}:");
                let first = e.rendered.lines().next().unwrap_or_default();
                if !first.contains(&want) {
                    failures.push(format!("{name}: first error is not at {place}:\n{}", e.rendered));
                }
            }
            _ => {}
        }
        if let Some(amtool) = &amtool {
            let out = Command::new(amtool).arg("check-config").arg(path).output().unwrap();
            let amtool_valid = out.status.success();
            let want_valid = matches!(expect, Expect::Valid);
            if amtool_valid != want_valid {
                failures.push(format!(
                    "{name}: amtool says valid={amtool_valid}, the file expects {expect:?}:\n{}",
                    String::from_utf8_lossy(&out.stdout)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
