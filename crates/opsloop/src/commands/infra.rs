//! `opsloop infra backend-config STATE`: the `terraform { backend "http" { … } }` block that
//! keeps a Terraform state in a project on this server. The token stays out of it (the block
//! is committed to a repository): Terraform reads it from `TF_HTTP_PASSWORD`.

use std::process::ExitCode;

use super::fail;
use crate::cli::{ClientArgs, InfraCommand};
use crate::client::ApiClient;

pub async fn run(client: &ClientArgs, command: InfraCommand) -> ExitCode {
    let InfraCommand::BackendConfig { state, project } = command;
    let result = async {
        // A named project needs no token; finding the checkout's project asks the server.
        let project = match project.project.clone().or_else(|| std::env::var("CI_PROJECT_NAME").ok()) {
            Some(named) if !named.is_empty() => named,
            _ => project.resolve(&ApiClient::new(client)?).await?,
        };
        backend_config(&client.server, &project, &state)
    }
    .await;
    match result {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(error) => fail(&error),
    }
}

/// The backend block for `state` of `project` on `server`.
pub fn backend_config(server: &str, project: &str, state: &str) -> anyhow::Result<String> {
    let valid = |name: &str| {
        !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    if !valid(state) || state.starts_with('.') {
        anyhow::bail!("a state name is letters, digits, `-`, `_` and `.`: `{state}` is not one");
    }
    let mut url = url::Url::parse(server).map_err(|e| anyhow::anyhow!("--server `{server}` is not a URL: {e}"))?;
    url.path_segments_mut()
        .map_err(|()| anyhow::anyhow!("--server `{server}` cannot have a path"))?
        .pop_if_empty()
        .extend(["api", "v1", "projects", project, "terraform", "state", state]);
    let address = url.to_string();
    Ok(format!(
        r#"# Terraform state `{state}` of opsloop project `{project}`.
# Set TF_HTTP_PASSWORD to an opsloop token (a maintainer's to apply, a developer's to plan
# with -lock=false; in a pipeline job, $CI_JOB_TOKEN); the user name is not checked.
terraform {{
  backend "http" {{
    address        = "{address}"
    lock_address   = "{address}/lock"
    unlock_address = "{address}/lock"
    lock_method    = "POST"
    unlock_method  = "DELETE"
    username       = "opsloop"
    retry_wait_min = 5
  }}
}}
"#
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_names_the_state_and_no_token() {
        let text = backend_config("https://ops.example.com/", "shop", "prod").unwrap();
        assert!(
            text.contains(r#"address        = "https://ops.example.com/api/v1/projects/shop/terraform/state/prod""#)
        );
        assert!(
            text.contains(
                r#"lock_address   = "https://ops.example.com/api/v1/projects/shop/terraform/state/prod/lock""#
            )
        );
        assert!(text.contains("TF_HTTP_PASSWORD") && !text.contains("password ="));
        assert!(backend_config("https://ops.example.com", "shop", "../x").is_err());
    }
}
