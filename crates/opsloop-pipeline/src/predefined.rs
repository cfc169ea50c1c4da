//! GitLab's predefined CI/CD variables (`CI_COMMIT_*`, `CI_PIPELINE_*`, `CI_PROJECT_*`, …),
//! computed once from what a pipeline runs for, so that `opsloop run`, the server and its
//! agents give a job the same values for the same checkout. Where the value comes from
//! (git in a working tree, the server's records) is the caller's business; what it means is
//! decided here.

/// What a pipeline's ref is: GitLab sets `CI_COMMIT_BRANCH` for a branch only and
/// `CI_COMMIT_TAG` for a tag only, and `only: tags` / `if: $CI_COMMIT_TAG` read them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitRef {
    Branch(String),
    Tag(String),
    /// A bare commit (a detached checkout): `CI_COMMIT_REF_NAME` is the commit itself.
    Commit,
}

impl GitRef {
    /// `CI_COMMIT_REF_NAME`: the branch or tag, or the commit when there is neither.
    pub fn name<'a>(&'a self, sha: &'a str) -> &'a str {
        match self {
            GitRef::Branch(name) | GitRef::Tag(name) => name,
            GitRef::Commit => sha,
        }
    }
}

/// The commit's own facts, as `git log -1` gives them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitFacts {
    /// `Name <email>`.
    pub author: String,
    /// ISO 8601.
    pub timestamp: String,
    pub message: String,
}

/// Everything the predefined variables are made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineFacts {
    pub pipeline_id: i64,
    /// `CI_PIPELINE_SOURCE`: push, web, api, schedule, trigger, merge_request_event, …
    pub source: String,
    pub sha: String,
    pub git_ref: GitRef,
    pub commit: CommitFacts,
    pub default_branch: String,
    /// `namespace/name`, as GitLab's `CI_PROJECT_PATH`.
    pub project_path: String,
    pub project_id: i64,
    pub repository_url: String,
    /// Where people see the project and the pipeline (`CI_PROJECT_URL`, `CI_PIPELINE_URL`).
    pub project_url: String,
    pub pipeline_url: String,
    pub user_login: String,
    pub user_email: String,
    pub user_name: String,
}

/// GitLab's `CI_*_SLUG`: lowercase, every run of other characters one `-`, at most 63.
pub fn slug(text: &str) -> String {
    let slug: String =
        text.to_ascii_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    slug.split('-').filter(|s| !s.is_empty()).collect::<Vec<_>>().join("-").chars().take(63).collect()
}

/// The predefined variables of a pipeline, lowest in precedence of all variables.
pub fn variables(facts: &PipelineFacts) -> Vec<(String, String)> {
    let ref_name = facts.git_ref.name(&facts.sha).to_owned();
    let (namespace, name) = facts
        .project_path
        .rsplit_once('/')
        .map_or((String::new(), facts.project_path.clone()), |(a, b)| (a.to_owned(), b.to_owned()));
    let message = &facts.commit.message;
    let mut vars: Vec<(&str, String)> = vec![
        ("CI", "true".into()),
        ("GITLAB_CI", "false".into()),
        ("CI_SERVER", "yes".into()),
        ("CI_SERVER_NAME", "opsloop".into()),
        ("CI_PIPELINE_ID", facts.pipeline_id.to_string()),
        ("CI_PIPELINE_IID", facts.pipeline_id.to_string()),
        ("CI_PIPELINE_SOURCE", facts.source.clone()),
        ("CI_PIPELINE_URL", facts.pipeline_url.clone()),
        ("CI_COMMIT_SHA", facts.sha.clone()),
        ("CI_COMMIT_SHORT_SHA", facts.sha.chars().take(8).collect()),
        ("CI_COMMIT_BEFORE_SHA", "0".repeat(40)),
        ("CI_COMMIT_REF_NAME", ref_name.clone()),
        ("CI_COMMIT_REF_SLUG", slug(&ref_name)),
        ("CI_COMMIT_MESSAGE", message.clone()),
        ("CI_COMMIT_TITLE", message.lines().next().unwrap_or_default().to_owned()),
        ("CI_COMMIT_DESCRIPTION", message.split_once('\n').map(|(_, rest)| rest.trim().to_owned()).unwrap_or_default()),
        ("CI_COMMIT_AUTHOR", facts.commit.author.clone()),
        ("CI_COMMIT_TIMESTAMP", facts.commit.timestamp.clone()),
        ("CI_DEFAULT_BRANCH", facts.default_branch.clone()),
        ("CI_PROJECT_NAME", name.clone()),
        ("CI_PROJECT_TITLE", name),
        ("CI_PROJECT_PATH", facts.project_path.clone()),
        ("CI_PROJECT_PATH_SLUG", slug(&facts.project_path)),
        ("CI_PROJECT_NAMESPACE", namespace),
        ("CI_PROJECT_URL", facts.project_url.clone()),
        ("CI_PROJECT_ID", facts.project_id.to_string()),
        ("CI_REPOSITORY_URL", facts.repository_url.clone()),
        ("GITLAB_USER_LOGIN", facts.user_login.clone()),
        ("GITLAB_USER_EMAIL", facts.user_email.clone()),
        ("GITLAB_USER_NAME", facts.user_name.clone()),
        ("CI_NODE_TOTAL", "1".into()),
    ];
    match &facts.git_ref {
        GitRef::Branch(branch) => vars.push(("CI_COMMIT_BRANCH", branch.clone())),
        GitRef::Tag(tag) => vars.push(("CI_COMMIT_TAG", tag.clone())),
        GitRef::Commit => {}
    }
    vars.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(git_ref: GitRef) -> PipelineFacts {
        PipelineFacts {
            pipeline_id: 7,
            source: "push".into(),
            sha: "0123456789abcdef0123456789abcdef01234567".into(),
            git_ref,
            commit: CommitFacts {
                author: "Dana <dana@example.com>".into(),
                timestamp: "2026-12-07T10:00:00+00:00".into(),
                message: "Fix the build\n\nThe long story.\n".into(),
            },
            default_branch: "main".into(),
            project_path: "shop/web".into(),
            project_id: 3,
            repository_url: "https://git.example.com/shop/web.git".into(),
            project_url: "http://ops.example.com/projects/web".into(),
            pipeline_url: "http://ops.example.com/projects/web/pipelines/7".into(),
            user_login: "dana".into(),
            user_email: "dana@example.com".into(),
            user_name: "Dana".into(),
        }
    }

    fn get<'a>(vars: &'a [(String, String)], name: &str) -> Option<&'a str> {
        vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The golden values for a branch, a tag and a bare commit.
    #[test]
    fn branches_tags_and_commits_set_what_gitlab_sets() {
        let branch = variables(&facts(GitRef::Branch("feature/Login".into())));
        assert_eq!(get(&branch, "CI_COMMIT_BRANCH"), Some("feature/Login"));
        assert_eq!(get(&branch, "CI_COMMIT_TAG"), None);
        assert_eq!(get(&branch, "CI_COMMIT_REF_NAME"), Some("feature/Login"));
        assert_eq!(get(&branch, "CI_COMMIT_REF_SLUG"), Some("feature-login"));
        assert_eq!(get(&branch, "CI_COMMIT_SHORT_SHA"), Some("01234567"));
        assert_eq!(get(&branch, "CI_COMMIT_TITLE"), Some("Fix the build"));
        assert_eq!(get(&branch, "CI_COMMIT_DESCRIPTION"), Some("The long story."));
        assert_eq!(get(&branch, "CI_PROJECT_NAME"), Some("web"));
        assert_eq!(get(&branch, "CI_PROJECT_NAMESPACE"), Some("shop"));
        assert_eq!(get(&branch, "CI_PROJECT_PATH_SLUG"), Some("shop-web"));

        let tag = variables(&facts(GitRef::Tag("v1.2.0".into())));
        assert_eq!(get(&tag, "CI_COMMIT_TAG"), Some("v1.2.0"));
        assert_eq!(get(&tag, "CI_COMMIT_BRANCH"), None, "a tag pipeline has no branch");
        assert_eq!(get(&tag, "CI_COMMIT_REF_NAME"), Some("v1.2.0"));
        assert_eq!(get(&tag, "CI_COMMIT_REF_SLUG"), Some("v1-2-0"));

        let commit = variables(&facts(GitRef::Commit));
        assert_eq!(get(&commit, "CI_COMMIT_REF_NAME"), Some("0123456789abcdef0123456789abcdef01234567"));
        assert_eq!((get(&commit, "CI_COMMIT_BRANCH"), get(&commit, "CI_COMMIT_TAG")), (None, None));
    }
}
