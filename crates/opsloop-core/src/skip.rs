//! How a test says it cannot run here: its peer (PostgreSQL, python3, moto, sshd, Chromium,
//! podman, …) is absent. Outside CI it prints `skipped: …` and the test returns; under
//! `CI=true`, where `.ci/run` installs every peer, a missing peer fails the test instead of
//! letting it pass silently.

/// Reports a skipped test (or fails it under `CI=true`). Call it, then return.
pub fn skipped(reason: &str) {
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{reason}, and CI=true needs every peer (.ci/run installs it)"
    );
    eprintln!("skipped: {reason}");
}
