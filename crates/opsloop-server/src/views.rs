//! Shapes shared by the JSON API and the HTML pages: timestamps and input validation rules.

/// A Unix-millisecond time as RFC 3339 (UTC).
pub fn rfc3339(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map(|t| t.to_string()).unwrap_or_default()
}

/// A Unix-millisecond time for people: `2026-11-26 03:45 UTC`.
pub fn human_time(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map(|t| t.strftime("%Y-%m-%d %H:%M UTC").to_string()).unwrap_or_default()
}

/// [`human_time`] of a time the API already wrote as RFC 3339 (the web UI shares some views
/// with the API): every page shows times one way. Text that does not parse is shown as it is.
pub fn human_time_of(rfc3339: &str) -> String {
    rfc3339.parse::<jiff::Timestamp>().map_or_else(|_| rfc3339.to_owned(), |t| human_time(t.as_millisecond()))
}

pub const MAX_DESCRIPTION_CHARS: usize = 1000;

/// A project field (or a git ref) that is refused; the message says what is expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidField {
    #[error("description is longer than {MAX_DESCRIPTION_CHARS} characters")]
    DescriptionTooLong,
    #[error("repo_url must not be empty")]
    EmptyRepoUrl,
    #[error("repo_url must be at most 2048 bytes, without control characters")]
    RepoUrlTooLong,
    /// Would be read as an option by `git`.
    #[error("repo_url must not start with `-`")]
    RepoUrlOption,
    /// `shown`: the first 80 characters.
    #[error(
        "repo_url `{shown}` is neither a git URL (https://, ssh://, git://, file://), nor user@host:path, nor an absolute path"
    )]
    RepoUrlKind { shown: String },
    /// `shown`: the first 80 characters.
    #[error("`{shown}` is not a valid git branch name")]
    Branch { shown: String },
    #[error("pipeline_file must be a relative path inside the repository, e.g. `.gitlab-ci.yml`")]
    PipelineFile,
}

/// Checks the free-text and reference fields of a project; names are checked by
/// [`opsloop_core::validate_name`].
pub fn validate_project_fields(
    description: Option<&str>,
    repo_url: Option<&str>,
    default_branch: Option<&str>,
    pipeline_file: Option<&str>,
) -> Result<(), InvalidField> {
    if let Some(description) = description
        && description.chars().count() > MAX_DESCRIPTION_CHARS
    {
        return Err(InvalidField::DescriptionTooLong);
    }
    if let Some(repo) = repo_url {
        validate_repo_url(repo)?;
    }
    if let Some(branch) = default_branch {
        validate_branch(branch)?;
    }
    if let Some(path) = pipeline_file {
        validate_pipeline_file(path)?;
    }
    Ok(())
}

/// A repository is a URL git understands (http, https, ssh, git, file), an scp-like
/// `user@host:path`, or an absolute local path.
pub fn validate_repo_url(repo: &str) -> Result<(), InvalidField> {
    if repo.is_empty() {
        return Err(InvalidField::EmptyRepoUrl);
    }
    if repo.len() > 2048 || repo.chars().any(char::is_control) {
        return Err(InvalidField::RepoUrlTooLong);
    }
    if repo.starts_with('-') {
        return Err(InvalidField::RepoUrlOption);
    }
    let scheme_ok =
        ["http://", "https://", "ssh://", "git://", "file://"].iter().any(|scheme| repo.starts_with(scheme));
    let scp_like =
        repo.split_once(':').is_some_and(|(host, path)| host.contains('@') && !host.contains('/') && !path.is_empty());
    if scheme_ok || scp_like || repo.starts_with('/') {
        Ok(())
    } else {
        Err(InvalidField::RepoUrlKind { shown: repo.chars().take(80).collect() })
    }
}

/// A branch name git accepts (the subset of `git check-ref-format` that matters for input).
pub fn validate_branch(branch: &str) -> Result<(), InvalidField> {
    let bad = branch.is_empty()
        || branch.len() > 255
        || branch.starts_with(['-', '/', '.'])
        || branch.ends_with(['/', '.'])
        || branch.ends_with(".lock")
        || branch.contains("..")
        || branch.contains("//")
        || branch.contains("@{")
        || branch.chars().any(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(c));
    if bad {
        return Err(InvalidField::Branch { shown: branch.chars().take(80).collect() });
    }
    Ok(())
}

/// The pipeline file is a relative path inside the repository.
pub fn validate_pipeline_file(path: &str) -> Result<(), InvalidField> {
    let bad = path.is_empty()
        || path.len() > 255
        || path.starts_with('/')
        || path.split('/').any(|part| part == ".." || part.is_empty())
        || path.chars().any(char::is_control);
    if bad {
        return Err(InvalidField::PipelineFile);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_urls() {
        for ok in ["https://git.example.com/a/b.git", "git@github.com:a/b.git", "/srv/git/demo", "file:///tmp/x"] {
            assert!(validate_repo_url(ok).is_ok(), "{ok}");
        }
        for bad in ["", "--upload-pack=evil", "relative/path", "ftp://x", "a\nb"] {
            assert!(validate_repo_url(bad).is_err(), "{bad:?}");
        }
        assert_eq!(validate_repo_url("--upload-pack=evil"), Err(InvalidField::RepoUrlOption));
        assert_eq!(
            validate_repo_url("ftp://x").map_err(|e| e.to_string()),
            Err("repo_url `ftp://x` is neither a git URL (https://, ssh://, git://, file://), nor user@host:path, nor an absolute path".to_owned())
        );
    }

    #[test]
    fn branches_and_pipeline_files() {
        for ok in ["main", "release/1.2", "feature-x"] {
            assert!(validate_branch(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", "a..b", "a b", "x.lock", "a~1", "/x"] {
            assert!(validate_branch(bad).is_err(), "{bad:?}");
        }
        assert!(validate_pipeline_file(".gitlab-ci.yml").is_ok());
        assert!(validate_pipeline_file("ci/pipeline.yml").is_ok());
        for bad in ["", "/etc/passwd", "../x", "a//b"] {
            assert!(validate_pipeline_file(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            validate_project_fields(Some(&"x".repeat(1001)), None, None, None),
            Err(InvalidField::DescriptionTooLong)
        );
        assert_eq!(
            validate_branch("a b").map_err(|e| e.to_string()),
            Err("`a b` is not a valid git branch name".into())
        );
    }
}
