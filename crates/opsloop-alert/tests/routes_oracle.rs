//! The receivers an alert reaches through a route tree, checked against
//! `amtool config routes test` (Alertmanager 0.25) as the oracle, over configurations with
//! `continue`, regexes, negative matchers, legacy `match`/`match_re` and nested trees.

mod common;

use std::process::Command;

use opsloop_alert::labels::LabelSet;
use opsloop_alert::route::RouteTree;

const CONTINUE: &str = r#"
route:
  receiver: root
  routes:
    - matchers: ['team="a"']
      receiver: a
      continue: true
    - match_re: {team: 'a|b'}
      receiver: ab
    - matchers: ['team!="c"']
      receiver: not-c
    - match: {severity: page}
      receiver: pager
      continue: true
receivers: [{name: root}, {name: a}, {name: ab}, {name: not-c}, {name: pager}]
"#;

const NESTED: &str = r#"
route:
  receiver: root
  routes:
    - matchers: ['service=~"db|cache"']
      receiver: storage
      routes:
        - matchers: ['severity="critical"', 'env!~"dev|test"']
          receiver: storage-pager
          continue: true
        - matchers: ['severity=~"crit.*"']
          receiver: storage-crit
        - matchers: ['region="eu"']
          receiver: storage-eu
    - matchers: ['service=~"web.*"']
      continue: true
      routes:
        - match: {env: prod}
          receiver: web-prod
    - matchers: ['service!~"web.+"', 'owner=""']
      receiver: unowned
"#;

const NESTED_RECEIVERS: &str = "receivers: [{name: root}, {name: storage}, {name: storage-pager}, {name: storage-crit}, {name: storage-eu}, {name: web-prod}, {name: unowned}]\n";

const CASES: &[(&str, &str)] = &[
    ("continue", "team=a"),
    ("continue", "team=b"),
    ("continue", "team=c"),
    ("continue", "team=d"),
    ("continue", "team=c severity=page"),
    ("continue", "team=a severity=page"),
    ("continue", "severity=page"),
    ("continue", ""),
    ("continue", "team=ab"),
    ("continue", "team=A"),
    ("nested", "service=db"),
    ("nested", "service=db severity=critical"),
    ("nested", "service=db severity=critical env=dev"),
    ("nested", "service=db severity=critical env=prod"),
    ("nested", "service=cache severity=critically"),
    ("nested", "service=cache region=eu"),
    ("nested", "service=cache region=us"),
    ("nested", "service=dbx"),
    ("nested", "service=web"),
    ("nested", "service=web env=prod"),
    ("nested", "service=webapp env=prod"),
    ("nested", "service=webapp"),
    ("nested", "service=webapp owner=me"),
    ("nested", "service=other owner=me"),
    ("nested", "service=other"),
    ("nested", ""),
    ("nested", "owner=x"),
    ("nested", "service=db severity=critical region=eu env=test"),
    ("nested", "service=web env=prod owner=x"),
    ("nested", "service=cache severity=crit env=staging region=eu"),
    ("nested", "service=web env=dev"),
    ("nested", "service=db env=prod severity=warning region=eu"),
];

fn config(name: &str) -> String {
    match name {
        "continue" => CONTINUE.to_owned(),
        _ => format!("{NESTED}{NESTED_RECEIVERS}"),
    }
}

fn labels(text: &str) -> LabelSet {
    LabelSet::from_pairs(text.split_whitespace().map(|p| {
        let (n, v) = p.split_once('=').expect("name=value");
        (n.to_owned(), v.to_owned())
    }))
}

#[test]
fn receivers_reached_agree_with_amtool() {
    let amtool = common::peer(&["amtool"]);
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    let mut failures = Vec::new();
    for (name, label_text) in CASES {
        let yaml = config(name);
        let tree = RouteTree::new(&opsloop_alert::config::load(&yaml, name).unwrap().route);
        let ours: Vec<&str> = tree.match_labels(&labels(label_text)).iter().map(|r| r.opts.receiver.as_str()).collect();
        let ours = ours.join(",");
        let Some(amtool) = &amtool else { continue };
        let path = dir.path().join(format!("{name}.yml"));
        std::fs::write(&path, &yaml).unwrap();
        let mut cmd = Command::new(amtool);
        cmd.args(["config", "routes", "test"]).arg(format!("--config.file={}", path.display()));
        // amtool needs at least one label; a label no route looks at stands for "none".
        if label_text.is_empty() {
            cmd.arg("unrelated=x");
        }
        cmd.args(label_text.split_whitespace());
        let out = cmd.output().unwrap();
        let theirs = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if theirs != ours {
            failures.push(format!("{name} {{{label_text}}}: amtool {theirs:?}, opsloop {ours:?}"));
        }
        checked += 1;
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    if amtool.is_some() {
        assert_eq!(checked, CASES.len());
    }
}
