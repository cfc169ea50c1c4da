//! Every rule file under `tests/rule-files` is loaded by opsloop and checked by
//! `promtool check rules`: the two verdicts must agree, and must be what the file's name says
//! (`valid-…` or `invalid-…`), so the files keep their meaning where promtool is absent.

use std::path::Path;
use std::process::Command;

#[test]
fn verdicts_agree_with_promtool() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/rule-files");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("the test files are there")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .collect();
    files.sort();
    assert!(files.len() >= 20, "{} files", files.len());
    let promtool = Command::new("promtool").arg("--version").output().is_ok_and(|o| o.status.success());
    if !promtool {
        opsloop_core::skip::skipped("promtool not found; checking the verdicts the file names give");
    }
    let mut disagreements = Vec::new();
    for path in &files {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let ours = opsloop_metrics::rules::file::load_file(path);
        let ours_valid = ours.is_ok();
        assert_eq!(ours_valid, name.starts_with("valid-"), "{name}: {:?}", ours.err().map(|e| e.to_string()));
        if let Err(e) = &ours {
            // Every refusal says where: file:line:column.
            let text = e.to_string();
            assert!(text.contains(&format!("{name}:")), "{name}: {text}");
        }
        if promtool {
            let out = Command::new("promtool").arg("check").arg("rules").arg(path).output().expect("promtool runs");
            if out.status.success() != ours_valid {
                disagreements.push(format!(
                    "{name}: promtool says {}, opsloop says {ours_valid}\n{}",
                    out.status.success(),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}

#[test]
fn patterns_load_every_matching_file() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let groups = opsloop_metrics::rules::file::load_patterns(&["rule-files/valid-*.yml".to_owned()], &dir)
        .expect("the valid files load");
    assert!(groups.iter().any(|g| g.name == "node" && g.file.ends_with("valid-basic.yml")));
    let err = opsloop_metrics::rules::file::load_patterns(&["rule-files/invalid-both.yml".to_owned()], &dir)
        .expect_err("invalid");
    assert!(err.to_string().contains("only one of 'record' and 'alert' must be set"), "{err}");
}
