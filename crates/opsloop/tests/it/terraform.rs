//! Terraform's `http` state backend through the real binary and the real `terraform`: the
//! block `opsloop infra backend-config` prints, `terraform_data` resources (built in, so no
//! provider download), applies that store versions, a lock held elsewhere that stops an
//! apply, and the refusals a state write must meet.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use reqwest::Method;

use crate::harness::{Server, call_json, opsloop, opsloop_client, skip, text};

/// One API call with a raw body: `(status, body)`.
fn raw(method: Method, url: &str, token: &str, body: Option<&str>) -> (u16, String) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut request = Server::client().request(method, url).bearer_auth(token);
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_owned());
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap_or_default())
    })
}

fn terraform(dir: &Path, token: &str, args: &[&str]) -> Output {
    Command::new("terraform")
        .args(args)
        .current_dir(dir)
        .env("TF_HTTP_PASSWORD", token)
        .env("TF_IN_AUTOMATION", "1")
        .env("CHECKPOINT_DISABLE", "1")
        .env("TF_CLI_CONFIG_FILE", dir.join("terraformrc"))
        .env_remove("TF_HTTP_ADDRESS")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn serials(server: &Server, token: &str) -> Vec<i64> {
    let url = format!("{}/api/v1/projects/infra/terraform/state/prod/versions", server.url);
    let (status, versions) = call_json(Method::GET, &url, token, None);
    assert_eq!(status, 200, "{versions}");
    versions.as_array().unwrap().iter().map(|v| v["serial"].as_i64().unwrap()).collect()
}

#[test]
fn terraform_keeps_its_state_and_its_lock_in_a_project() {
    if Command::new("terraform").arg("version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        return skip("Terraform's http backend against opsloop, because terraform is missing");
    }
    let server = Server::start();
    let token = server.token("maintainer");
    let created = opsloop_client(&server, &token, &["project", "create", "infra", "--repo", "/srv/git/infra.git"]);
    assert!(created.status.success(), "{}", text(&created.stderr));

    // The backend block as the CLI prints it, with no token in it.
    let block = opsloop_client(&server, &token, &["infra", "backend-config", "prod", "--project", "infra"]);
    assert!(block.status.success(), "{}", text(&block.stderr));
    let block = text(&block.stdout);
    assert!(block.contains("TF_HTTP_PASSWORD") && !block.contains(&token), "{block}");
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("terraformrc"), "").unwrap();
    let config = format!(
        r#"{block}
variable "release" {{
  default = "one"
}}

resource "terraform_data" "network" {{
  input = "10.0.0.0/16"
}}

resource "terraform_data" "app" {{
  input = "app-${{var.release}}"
}}

output "app" {{
  value = terraform_data.app.output
}}
"#
    );
    std::fs::write(dir.path().join("main.tf"), config).unwrap();

    let init = terraform(dir.path(), &token, &["init", "-input=false", "-no-color"]);
    assert!(init.status.success(), "init: {}{}", text(&init.stdout), text(&init.stderr));
    let apply = terraform(dir.path(), &token, &["apply", "-auto-approve", "-input=false", "-no-color"]);
    assert!(apply.status.success(), "apply: {}{}", text(&apply.stdout), text(&apply.stderr));

    let first = serials(&server, &token);
    assert!(!first.is_empty(), "the apply stored no version");
    let state_url = format!("{}/api/v1/projects/infra/terraform/state/prod", server.url);
    let (status, state) = call_json(Method::GET, &state_url, &token, None);
    assert_eq!(status, 200, "{state}");
    assert_eq!(state["serial"].as_i64(), first.first().copied(), "the latest version is served");
    assert_eq!(state["resources"].as_array().map(Vec::len), Some(2), "{state}");
    assert_eq!(state["outputs"]["app"]["value"], "app-one");
    // Nothing is left locked after an apply, and no body is stored in the clear.
    let (_, listed) =
        call_json(Method::GET, &format!("{}/api/v1/projects/infra/terraform/states", server.url), &token, None);
    assert_eq!(listed[0]["name"], "prod", "{listed}");
    assert!(listed[0]["lock"].is_null(), "{listed}");
    let database = std::fs::read(server.data_dir.join("opsloop.db")).unwrap_or_default();
    let wal = std::fs::read(server.data_dir.join("opsloop.db-wal")).unwrap_or_default();
    let needle = b"10.0.0.0/16";
    assert!(!database.windows(needle.len()).chain(wal.windows(needle.len())).any(|w| w == needle), "plaintext at rest");

    // A lock held elsewhere (another runner's apply) stops this apply, naming its holder.
    let lock_url = format!("{state_url}/lock");
    let held = r#"{"ID": "held-by-runner-7", "Operation": "OperationTypeApply", "Info": "", "Who": "ci@runner-7",
        "Version": "1.11.4", "Created": "2026-01-01T00:00:00Z", "Path": ""}"#;
    let (status, body) = raw(Method::POST, &lock_url, &token, Some(held));
    assert_eq!(status, 200, "{body}");
    let (status, body) = raw(Method::POST, &lock_url, &token, Some(r#"{"ID": "second", "Who": "me@here"}"#));
    assert_eq!(status, 423, "{body}");
    assert!(body.contains("held-by-runner-7"), "the holder's lock info: {body}");
    let again =
        terraform(dir.path(), &token, &["apply", "-auto-approve", "-input=false", "-no-color", "-var", "release=two"]);
    let said = format!("{}{}", text(&again.stdout), text(&again.stderr));
    assert!(!again.status.success(), "apply under someone else's lock succeeded: {said}");
    assert!(said.contains("state lock") && said.contains("held-by-runner-7"), "{said}");
    assert_eq!(serials(&server, &token), first, "a refused apply wrote nothing");

    // Released by its ID, the next apply goes through and adds versions.
    let (status, body) = raw(Method::DELETE, &lock_url, &token, Some(held));
    assert_eq!(status, 200, "{body}");
    let apply =
        terraform(dir.path(), &token, &["apply", "-auto-approve", "-input=false", "-no-color", "-var", "release=two"]);
    assert!(apply.status.success(), "apply: {}{}", text(&apply.stdout), text(&apply.stderr));
    let second = serials(&server, &token);
    assert!(second.len() > first.len() && second[0] > first[0], "{second:?} after {first:?}");
    let (_, state) = call_json(Method::GET, &state_url, &token, None);
    assert_eq!(state["outputs"]["app"]["value"], "app-two");
    let old_url = format!("{state_url}/versions/{}", first[0]);
    let (status, old) = call_json(Method::GET, &old_url, &token, None);
    assert_eq!((status, &old["outputs"]["app"]["value"]), (200, &serde_json::json!("app-one")));

    // `terraform force-unlock` (an unlock without lock info) is a maintainer's, audited.
    let (status, body) = raw(Method::POST, &lock_url, &token, Some(held));
    assert_eq!(status, 200, "{body}");
    let forced = terraform(dir.path(), &token, &["force-unlock", "-force", "-no-color", "held-by-runner-7"]);
    assert!(forced.status.success(), "force-unlock: {}{}", text(&forced.stdout), text(&forced.stderr));
    let (_, listed) =
        call_json(Method::GET, &format!("{}/api/v1/projects/infra/terraform/states", server.url), &token, None);
    assert!(listed[0]["lock"].is_null(), "{listed}");
    let admin = server.token("admin");
    let (_, audit) = call_json(Method::GET, &format!("{}/api/v1/admin/audit", server.url), &admin, None);
    assert!(audit.to_string().contains("terraform.force_unlock"), "{audit}");

    // Writes the rules refuse: not JSON, an old serial, another lineage.
    let (status, body) = raw(Method::POST, &state_url, &token, Some("{not json"));
    assert_eq!(status, 400, "{body}");
    let mut stale = state.clone();
    stale["serial"] = serde_json::json!(first[0]);
    let (status, body) = raw(Method::POST, &state_url, &token, Some(&stale.to_string()));
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("stale_serial"), "{body}");
    let mut other = state.clone();
    other["serial"] = serde_json::json!(second[0] + 1);
    other["lineage"] = serde_json::json!("another-lineage");
    let (status, body) = raw(Method::POST, &state_url, &token, Some(&other.to_string()));
    assert_eq!((status, body.contains("lineage_mismatch")), (409, true), "{body}");
    let too_big = format!("{{\"pad\": \"{}\"}}", "x".repeat(17 * 1024 * 1024));
    let (status, body) = raw(Method::POST, &state_url, &token, Some(&too_big));
    assert_eq!(status, 413, "{body}");

    // A viewer's token reads nothing (GitLab's developer is the least that reads a state); a
    // stranger does not learn that the project exists.
    let viewer = server.token("viewer");
    assert_eq!(raw(Method::GET, &state_url, &viewer, None).0, 403);
    let data_dir = server.data_dir.to_str().unwrap();
    let made = opsloop(&["admin", "user", "create", "stranger", "--data-dir", data_dir]);
    assert!(made.status.success(), "{}", text(&made.stderr));
    let stranger = opsloop(&[
        "admin",
        "token",
        "create",
        "--name",
        "s",
        "--role",
        "maintainer",
        "--user",
        "stranger",
        "--data-dir",
        data_dir,
    ]);
    let stranger = text(&stranger.stdout).trim().to_owned();
    assert_eq!(raw(Method::GET, &state_url, &stranger, None).0, 404);
    let refused = terraform(dir.path(), &viewer, &["plan", "-input=false", "-no-color", "-lock=false"]);
    assert!(!refused.status.success(), "plan with a viewer's token: {}", text(&refused.stdout));
}
