//! The web UI in a real headless Chromium, driven over `WebDriver` (chromedriver + fantoccini):
//! sign in with the one-time password, change it, create a project, create and revoke an API
//! token (checked against the REST API), sign out. And a push through a `post-receive` hook, whose
//! job's log lines reach the open job page live (server-sent events) until it turns `success`;
//! and a self-refreshing page that waits while someone types in its form.
//!
//! Needs `/usr/bin/chromedriver` and `/usr/bin/chromium` (`apt-get install chromium chromium-driver`).
//! Without them the test is skipped, unless `CI` is set: there it fails, since CI installs them.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use reqwest::StatusCode;

use crate::harness::{Server, opsloop_client, text};

mod alerting;
mod metrics;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// The longest any single step (a navigation, an element showing up) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);
/// How often a waiting step looks again.
const POLL: Duration = Duration::from_millis(50);
/// The new password for `admin`, replacing the one-time password.
const NEW_PASSWORD: &str = "correct horse battery staple 42";

/// A chromedriver child process with the profile directory of its browser. Dropping it kills
/// chromedriver and every browser process it started (they share its process group), so a
/// failing test leaves nothing running.
struct ChromeDriver {
    child: Child,
    url: String,
    profile: tempfile::TempDir,
}

impl ChromeDriver {
    /// `None` when chromedriver is missing and the test should be skipped.
    async fn start_or_skip() -> Option<ChromeDriver> {
        if !Path::new(CHROMEDRIVER).exists() {
            assert!(
                std::env::var_os("CI").is_none(),
                "{CHROMEDRIVER} is missing, and CI is set: CI must install chromium and chromium-driver"
            );
            eprintln!(
                "skipped: browser test, because {CHROMEDRIVER} is missing (apt-get install chromium chromium-driver)"
            );
            return None;
        }
        // A port picked free can be taken before chromedriver binds it: try a few.
        let mut last_failure = String::new();
        for _ in 0..3 {
            match ChromeDriver::try_start().await {
                Ok(driver) => return Some(driver),
                Err(failure) => last_failure = failure,
            }
        }
        panic!("chromedriver did not start: {last_failure}");
    }

    async fn try_start() -> Result<ChromeDriver, String> {
        let port = free_port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            // Its own process group, so that Drop can end chromedriver and its browsers together.
            .process_group(0)
            .spawn()
            .map_err(|error| format!("could not run {CHROMEDRIVER}: {error}"))?;
        let profile = tempfile::tempdir().expect("temporary browser profile");
        let mut driver = ChromeDriver { child, url: format!("http://127.0.0.1:{port}"), profile };
        let http = Server::client();
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            if let Ok(Some(status)) = driver.child.try_wait() {
                return Err(format!("chromedriver exited with {status}"));
            }
            let ready = http.get(format!("{}/status", driver.url)).send().await;
            if ready.is_ok_and(|response| response.status().is_success()) {
                return Ok(driver);
            }
            if Instant::now() > deadline {
                driver.stop();
                return Err(format!("chromedriver did not answer on port {port} within {STEP_TIMEOUT:?}"));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// A new headless browser session.
    async fn open_browser(&self) -> Client {
        let user_data_dir = format!("--user-data-dir={}", self.profile.path().display());
        let capabilities = serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                    "--disable-quic",
                    "--window-size=1280,1024",
                    user_data_dir,
                ],
            },
        });
        let mut capabilities = capabilities;
        // The console, so that every test can fail on a Content-Security-Policy violation.
        capabilities["goog:loggingPrefs"] = serde_json::json!({ "browser": "ALL" });
        let serde_json::Value::Object(capabilities) = capabilities else { unreachable!("a JSON object") };
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("a WebDriver session with headless Chromium")
    }

    fn stop(&mut self) {
        // The group id is chromedriver's pid; the browser processes it started are in that group.
        let _ = Command::new("kill").args(["-KILL", "--", &format!("-{}", self.child.id())]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

/// chromedriver's console log since the last read (its `se/log` extension; W3C WebDriver has
/// no command for the console).
#[derive(Debug)]
struct ConsoleLog;

impl fantoccini::wd::WebDriverCompatibleCommand for ConsoleLog {
    fn endpoint(&self, base_url: &url::Url, session_id: Option<&str>) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!("session/{}/se/log", session_id.unwrap_or_default()))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type":"browser"}"#.to_owned()))
    }
}

/// Fails when the console reported a Content-Security-Policy violation (an inline style or
/// script the server's own policy blocks: the page then looks or works wrong) since the last
/// look, with a screenshot of the page saved for the failure message.
async fn assert_no_csp_violation(browser: &Client) {
    let entries = browser.issue_cmd(ConsoleLog).await.expect("the browser's console log");
    let violations: Vec<String> = entries
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|entry| entry["message"].as_str())
        .filter(|message| message.contains("Content Security Policy"))
        .map(str::to_owned)
        .collect();
    if !violations.is_empty() {
        let shot = screenshot(browser, "csp-violation").await;
        panic!("the page broke its own Content-Security-Policy ({shot}):\n{}", violations.join("\n"));
    }
}

/// Saves a screenshot of the page for a failure message, and says where.
async fn screenshot(browser: &Client, name: &str) -> String {
    let path = std::env::temp_dir().join(format!("opsloop-browser-{name}-{}.png", std::process::id()));
    match browser.screenshot().await {
        Ok(png) => match std::fs::write(&path, png) {
            Ok(()) => format!("screenshot: {}", path.display()),
            Err(error) => format!("no screenshot: {error}"),
        },
        Err(error) => format!("no screenshot: {error}"),
    }
}

/// The visible text of the page, for failure messages.
async fn page_text(browser: &Client) -> String {
    match browser.find(Locator::Css("body")).await {
        Ok(body) => body.text().await.unwrap_or_else(|error| format!("(no text: {error})")),
        Err(error) => format!("(no body: {error})"),
    }
}

/// The current location as `/path` or `/path?query`.
async fn location(browser: &Client) -> String {
    let url = browser.current_url().await.expect("current URL");
    match url.query() {
        Some(query) => format!("{}?{query}", url.path()),
        None => url.path().to_owned(),
    }
}

/// Waits until the browser shows `expected` (`/path` or `/path?query`) and its page has loaded.
async fn wait_for_location(browser: &Client, expected: &str) {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let here = location(browser).await;
        // A failing script means the page is being replaced: not there yet.
        if here == expected
            && let Ok(ready) = browser.execute("return document.readyState", vec![]).await
            && ready == "complete"
        {
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "expected the browser at {expected}, it is at {here} ({}); the page shows:\n{}",
                screenshot(browser, "location").await,
                page_text(browser).await
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits for an element matching `css` whose text contains `needle`, and returns it.
async fn wait_for_text(browser: &Client, css: &str, needle: &str) -> Element {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        // Elements can go stale while a page is replaced: any failure here means "not yet".
        if let Ok(elements) = browser.find_all(Locator::Css(css)).await {
            for element in elements {
                if element.text().await.is_ok_and(|text| text.contains(needle)) {
                    return element;
                }
            }
        }
        if Instant::now() > deadline {
            panic!(
                "no `{css}` containing {needle:?} at {} ({}); the page shows:\n{}",
                location(browser).await,
                screenshot(browser, "text").await,
                page_text(browser).await
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Types `value` into the field `name` of `form`, like a user would.
async fn fill(form: &Element, name: &str, value: &str) {
    let field = form
        .find(Locator::Css(&format!("[name='{name}']")))
        .await
        .unwrap_or_else(|error| panic!("the form has a field {name}: {error}"));
    field.clear().await.expect("clear the field");
    field.send_keys(value).await.unwrap_or_else(|error| panic!("type into {name}: {error}"));
}

/// Clicks the submit button of `form` that reads `label`.
async fn submit(form: &Element, label: &str) {
    let buttons = form.find_all(Locator::Css("button[type=submit]")).await.expect("submit buttons");
    for button in buttons {
        if button.text().await.expect("button text").trim() == label {
            button.click().await.unwrap_or_else(|error| panic!("click {label:?}: {error}"));
            return;
        }
    }
    panic!("the form has no submit button {label:?}");
}

/// The form posting to `action` on the current page.
async fn form(browser: &Client, action: &str) -> Element {
    let found =
        browser.wait().at_most(STEP_TIMEOUT).for_element(Locator::Css(&format!("form[action='{action}']"))).await;
    match found {
        Ok(form) => form,
        Err(error) => panic!("no form posting to {action} at {}: {error}", location(browser).await),
    }
}

async fn api_me(server: &Server, token: &str) -> reqwest::Response {
    Server::client().get(format!("{}/api/v1/me", server.url)).bearer_auth(token).send().await.expect("GET /api/v1/me")
}

/// Every visible `input` that is not a hidden field must sit inside a `label`.
async fn assert_inputs_are_labelled(browser: &Client) -> usize {
    let mut checked = 0;
    for input in browser.find_all(Locator::Css("input:not([type=hidden])")).await.expect("inputs") {
        if !input.is_displayed().await.expect("input visibility") {
            continue;
        }
        let name = input.attr("name").await.expect("input name").unwrap_or_default();
        assert!(
            input.find(Locator::XPath("ancestor::label")).await.is_ok(),
            "the input {name:?} at {} is not inside a label",
            location(browser).await
        );
        checked += 1;
    }
    checked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_admin_walks_through_the_web_ui() {
    let Some(driver) = ChromeDriver::start_or_skip().await else { return };
    let server = tokio::task::spawn_blocking(Server::start).await.expect("start the server");
    assert!(!server.admin_password.is_empty(), "the first start printed a one-time password");
    let browser = driver.open_browser().await;
    let at = |path: &str| format!("{}{path}", server.url);

    // 1. Anonymous: the home page sends to the sign-in form.
    browser.goto(&at("/")).await.expect("open /");
    wait_for_location(&browser, "/login").await;
    wait_for_text(&browser, "h1", "Sign in to opsloop").await;
    assert_eq!(assert_inputs_are_labelled(&browser).await, 2, "username and password, each in a label");
    let login = form(&browser, "/login").await;
    fill(&login, "username", "admin").await;
    fill(&login, "password", &server.admin_password).await;
    submit(&login, "Sign in").await;

    // 2. The one-time password must be changed before anything else.
    wait_for_location(&browser, "/settings?notice=must-change").await;
    wait_for_text(&browser, "p.notice[role=status]", "Choose a new password").await;
    assert!(
        browser.find_all(Locator::Css("form[action='/settings/tokens']")).await.expect("lookup").is_empty(),
        "no token form while the password must be changed"
    );
    browser.goto(&at("/projects")).await.expect("open /projects");
    wait_for_location(&browser, "/settings?notice=must-change").await;
    let password = form(&browser, "/settings/password").await;
    fill(&password, "current_password", &server.admin_password).await;
    fill(&password, "new_password", NEW_PASSWORD).await;
    fill(&password, "confirm_password", NEW_PASSWORD).await;
    submit(&password, "Change password").await;
    wait_for_location(&browser, "/settings?notice=password-changed").await;
    wait_for_text(&browser, "p.notice[role=status]", "Password changed.").await;

    // 3. A project, created through the form.
    browser.goto(&at("/projects")).await.expect("open /projects");
    wait_for_location(&browser, "/projects").await;
    wait_for_text(&browser, "p.muted", "No projects yet").await;
    let labelled = assert_inputs_are_labelled(&browser).await;
    assert!(labelled >= 5, "the new-project form has its five inputs, checked {labelled}");
    wait_for_text(&browser, "h2#new-project", "New project").await;
    let new_project = form(&browser, "/projects").await;
    fill(&new_project, "name", "web-shop").await;
    fill(&new_project, "repo_url", "/srv/git/web-shop.git").await;
    submit(&new_project, "Create project").await;
    wait_for_location(&browser, "/projects/web-shop?notice=created").await;
    wait_for_text(&browser, "main h1", "web-shop").await;
    wait_for_text(&browser, "p.notice[role=status]", "Created.").await;
    wait_for_text(&browser, "dl.facts dd code", "/srv/git/web-shop.git").await;
    let back = wait_for_text(&browser, "main a[href='/projects']", "Projects").await;
    back.click().await.expect("follow the link back to the projects");
    wait_for_location(&browser, "/projects").await;
    let link = wait_for_text(&browser, "main table tbody tr td a[href='/projects/web-shop']", "web-shop").await;
    assert_eq!(link.text().await.expect("link text"), "web-shop");
    wait_for_text(&browser, "main table tbody tr td code", "/srv/git/web-shop.git").await;

    // 4. An API token: shown once, accepted by the API until revoked.
    browser.goto(&at("/settings")).await.expect("open /settings");
    wait_for_location(&browser, "/settings").await;
    wait_for_text(&browser, "p.muted", "You have no API tokens.").await;
    assert!(assert_inputs_are_labelled(&browser).await >= 4, "password and token fields, each in a label");
    let new_token = form(&browser, "/settings/tokens").await;
    fill(&new_token, "name", "laptop").await;
    submit(&new_token, "Create token").await;
    wait_for_location(&browser, "/settings/tokens").await;
    let secret = wait_for_text(&browser, "#new-token", "olp_").await.text().await.expect("token text");
    let secret = secret.trim().to_owned();
    assert!(secret.starts_with("olp_") && secret.len() > 20, "a whole token is shown: {secret:?}");

    let response = api_me(&server, &secret).await;
    assert_eq!(response.status(), StatusCode::OK, "the new token is accepted");
    let me: serde_json::Value = response.json().await.expect("JSON from /api/v1/me");
    assert_eq!(me["username"], "admin");
    assert_eq!(me["credential"], "token");

    let row_xpath = "//table[@aria-labelledby='tokens']/tbody/tr[td[1][normalize-space()='laptop']]";
    let row = browser.find(Locator::XPath(row_xpath)).await.expect("the token's row in the table");
    assert!(row.text().await.expect("row text").contains("active"), "the new token is active");
    let revoke = row.find(Locator::Css("button[type=submit]")).await.expect("the token's Revoke button");
    assert_eq!(revoke.text().await.expect("button text").trim(), "Revoke");
    assert_eq!(revoke.attr("aria-label").await.expect("aria-label").as_deref(), Some("Revoke token laptop"));
    revoke.click().await.expect("click Revoke");
    wait_for_location(&browser, "/settings?notice=revoked").await;
    wait_for_text(&browser, "p.notice[role=status]", "Token revoked.").await;
    assert!(browser.find_all(Locator::Css("#new-token")).await.expect("lookup").is_empty(), "the secret is gone");
    let row = browser.find(Locator::XPath(row_xpath)).await.expect("the revoked token's row");
    assert!(row.text().await.expect("row text").contains("revoked"), "the row says revoked");
    assert!(
        row.find_all(Locator::Css("button")).await.expect("lookup").is_empty(),
        "a revoked token has no Revoke button"
    );
    assert_eq!(api_me(&server, &secret).await.status(), StatusCode::UNAUTHORIZED, "the revoked token is refused");

    // 5. Signing out ends the session.
    let sign_out = wait_for_text(&browser, "header form[action='/logout'] button[type=submit]", "Sign out").await;
    sign_out.click().await.expect("click Sign out");
    wait_for_location(&browser, "/login").await;
    wait_for_text(&browser, "h1", "Sign in to opsloop").await;
    browser.goto(&at("/projects")).await.expect("open /projects");
    wait_for_location(&browser, "/login?next=%2Fprojects").await;
    let next = browser.find(Locator::Css("form[action='/login'] input[name=next]")).await.expect("the next field");
    assert_eq!(next.attr("value").await.expect("next value").as_deref(), Some("/projects"));

    assert_no_csp_violation(&browser).await;
    browser.close().await.expect("end the browser session");
}

/// The pipeline of the live-log test: a line, a pause long enough to open the job page, another line.
const TALKING_JOB: &str = "talk:\n  script: [echo \"first line\", sleep 3, echo \"second line\"]\n";
/// Where the observer armed on the job page records that it saw the second line arrive.
const SEEN_KEY: &str = "opsloop-test-second-line";

/// Runs git in `dir` and returns its standard error (where `remote:` lines of hooks go).
fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(["-c", "user.email=t@example.invalid", "-c", "user.name=t", "-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run git");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "git {args:?} failed: {stderr}");
    stderr
}

/// A bare repository under `root` whose `post-receive` hook starts pipelines of project `app`.
fn bare_repository_with_hook(root: &Path, server: &Server, token: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bare = root.join("app.git");
    git(root, &["init", "-q", "--bare", bare.to_str().expect("utf-8 path")]);
    let hook = bare.join("hooks/post-receive");
    let script = format!(
        "#!/bin/sh\nOPSLOOP_SERVER='{}' OPSLOOP_TOKEN='{token}' exec '{}' hook post-receive --project app\n",
        server.url,
        crate::harness::BIN
    );
    std::fs::write(&hook, script).expect("write the post-receive hook");
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).expect("make the hook executable");
    bare
}

/// Clones `bare`, commits `pipeline` as `.gitlab-ci.yml` and pushes it to `main`.
fn push_pipeline(root: &Path, bare: &Path, pipeline: &str) {
    let work = root.join("work");
    git(root, &["clone", "-q", bare.to_str().expect("utf-8 path"), work.to_str().expect("utf-8 path")]);
    std::fs::write(work.join(".gitlab-ci.yml"), pipeline).expect("write .gitlab-ci.yml");
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-qm", "a job that talks slowly"]);
    let pushed = git(&work, &["push", "origin", "HEAD:main"]);
    assert!(pushed.contains("opsloop: pipeline #"), "the post-receive hook started no pipeline:\n{pushed}");
}

/// Signs in as `admin` with the one-time password and replaces it with [`NEW_PASSWORD`].
async fn sign_in_as_admin(browser: &Client, server: &Server) {
    browser.goto(&format!("{}/login", server.url)).await.expect("open /login");
    wait_for_location(browser, "/login").await;
    let login = form(browser, "/login").await;
    fill(&login, "username", "admin").await;
    fill(&login, "password", &server.admin_password).await;
    submit(&login, "Sign in").await;
    wait_for_location(browser, "/settings?notice=must-change").await;
    let password = form(browser, "/settings/password").await;
    fill(&password, "current_password", &server.admin_password).await;
    fill(&password, "new_password", NEW_PASSWORD).await;
    fill(&password, "confirm_password", NEW_PASSWORD).await;
    submit(&password, "Change password").await;
    wait_for_location(browser, "/settings?notice=password-changed").await;
}

/// Clicks the link matching `css` whose text contains `needle`, and waits for the page it leads
/// to; returns that path. Pages of running pipelines refresh themselves, so a link can go stale
/// between finding and clicking it: then it is looked up again.
async fn follow(browser: &Client, css: &str, needle: &str) -> String {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let link = wait_for_text(browser, css, needle).await;
        if let Ok(Some(href)) = link.attr("href").await
            && link.click().await.is_ok()
        {
            wait_for_location(browser, &href).await;
            return href;
        }
        assert!(
            Instant::now() < deadline,
            "could not follow the link `{css}` {needle:?} at {}",
            location(browser).await
        );
        tokio::time::sleep(POLL).await;
    }
}

/// What the job page shows, read in one script so that it all comes from the same document.
#[derive(Debug, serde::Deserialize)]
struct JobPage {
    /// Whether this is still the document the test marked: `false` once the page was reloaded.
    marked: bool,
    /// The `data-live` attribute of `pre.log`, present while the job runs.
    live: Option<String>,
    /// The visible text of `pre.log`.
    log: String,
    /// The status badge in the heading.
    badge: String,
    /// What the observer armed by [`arm_job_page`] recorded (it survives a reload): the marker,
    /// a newline, and the log as the marked document showed it when the watched line arrived.
    seen: Option<String>,
}

impl JobPage {
    fn has_line(&self, line: &str) -> bool {
        self.log.lines().any(|shown| shown.trim() == line)
    }

    /// The log the marked document showed when the observer saw its line, if it did.
    fn seen_live(&self, marker: &str) -> Option<&str> {
        self.seen.as_deref()?.strip_prefix(marker)?.strip_prefix('\n')
    }
}

async fn job_page(browser: &Client, marker: &str) -> Option<JobPage> {
    let script = r"
        const log = document.querySelector('main pre.log');
        const badge = document.querySelector('main h1 span.badge');
        return {
            marked: window.__opsloopTestMarker === arguments[0],
            live: log ? log.getAttribute('data-live') : null,
            log: log ? log.innerText : '',
            badge: badge ? badge.className : '',
            seen: sessionStorage.getItem(arguments[1]),
        };";
    // A failing script means the page is being replaced: nothing to read now.
    let state = browser.execute(script, vec![marker.into(), SEEN_KEY.into()]).await.ok()?;
    serde_json::from_value(state).ok()
}

/// Polls the job page until `done` holds, at most [`STEP_TIMEOUT`].
async fn wait_for_job_page(browser: &Client, marker: &str, what: &str, done: impl Fn(&JobPage) -> bool) -> JobPage {
    let deadline = Instant::now() + STEP_TIMEOUT;
    let mut last = None;
    loop {
        if let Some(page) = job_page(browser, marker).await {
            if done(&page) {
                return page;
            }
            last = Some(page);
        }
        if Instant::now() > deadline {
            panic!("the job page never showed {what}; last seen: {last:#?}");
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Marks the current document (a reload drops the mark) and watches its `pre.log`: when a line
/// reading `line` is added to it, the observer notes `marker` and the log in session storage,
/// which outlive the reload `live.js` does at the end of the job. Returns `armed`, or why it could not arm.
async fn arm_job_page(browser: &Client, marker: &str, line: &str) -> String {
    let script = r"
        const [marker, line, key] = arguments;
        window.__opsloopTestMarker = marker;
        sessionStorage.removeItem(key);
        const log = document.querySelector('main pre.log[data-live]');
        if (!log) return 'not live';
        const shows = () => log.innerText.split('\n').some((shown) => shown.trim() === line);
        if (shows()) return 'already there';
        new MutationObserver(() => {
            if (shows()) sessionStorage.setItem(key, marker + '\n' + log.innerText);
        }).observe(log, { childList: true, subtree: true, characterData: true });
        return 'armed';";
    let armed = browser.execute(script, vec![marker.into(), line.into(), SEEN_KEY.into()]).await.expect("arm the page");
    armed.as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_shows_up_live_in_the_browser() {
    let Some(driver) = ChromeDriver::start_or_skip().await else { return };
    let server = tokio::task::spawn_blocking(Server::start).await.expect("start the server");
    let browser = driver.open_browser().await;
    let at = |path: &str| format!("{}{path}", server.url);

    // 1. Signed in as admin; the project `app` made through the CLI, on a bare repository that
    //    starts a pipeline on every push.
    sign_in_as_admin(&browser, &server).await;
    let root = tempfile::tempdir().expect("temporary directory");
    let bare = tokio::task::block_in_place(|| {
        let admin_token = server.token("admin");
        let bare = bare_repository_with_hook(root.path(), &server, &server.token("developer"));
        let created =
            opsloop_client(&server, &admin_token, &["project", "create", "app", "--repo", bare.to_str().unwrap()]);
        assert!(created.status.success(), "project create failed: {}", text(&created.stderr));
        bare
    });

    // 2. A push of a job that prints a line, sleeps 3 s and prints another.
    tokio::task::block_in_place(|| push_pipeline(root.path(), &bare, TALKING_JOB));

    // 3. The pipeline shows up in the list (reloaded by the test until it does).
    let deadline = Instant::now() + STEP_TIMEOUT;
    let row = "main table tbody tr";
    loop {
        browser.goto(&at("/projects/app/pipelines")).await.expect("open the pipelines of app");
        wait_for_location(&browser, "/projects/app/pipelines").await;
        if !browser.find_all(Locator::Css(row)).await.expect("lookup").is_empty() {
            break;
        }
        if Instant::now() > deadline {
            panic!("no pipeline row after the push; the page shows:\n{}", page_text(&browser).await);
        }
        tokio::time::sleep(POLL).await;
    }
    wait_for_text(&browser, row, "push").await;
    wait_for_text(&browser, &format!("{row} td span.badge[class*='status-']"), "").await;
    let pipeline = follow(&browser, &format!("{row} td a[href^='/projects/app/pipelines/']"), "#").await;

    // 4. The pipeline page lists the job; its page is live while the job runs.
    wait_for_text(&browser, "main h1", "Pipeline #").await;
    let job_link = "main section.card li a[href^='/projects/app/jobs/']";
    let job = follow(&browser, job_link, "talk").await;
    wait_for_text(&browser, "main h1", "talk").await;
    let marker = format!("opsloop-test-{}", std::process::id());
    let armed = arm_job_page(&browser, &marker, "second line").await;
    assert_eq!(
        armed,
        "armed",
        "the job page must be open while the job runs; it shows:\n{}",
        page_text(&browser).await
    );

    // 5. The first line is there while the job runs (rendered with the page or streamed).
    let page = wait_for_job_page(&browser, &marker, "the first line, live", |page| {
        page.has_line("first line") || !page.marked
    })
    .await;
    assert!(page.marked, "the job page reloaded before the first line showed: {page:#?}");
    let live = page.live.clone().expect("pre.log has data-live while the job runs");
    assert!(live.starts_with(&format!("{job}/live?from=")), "the live stream of this job: {live}");
    assert!(!page.has_line("second line"), "the second line only comes after 3 s: {page:#?}");
    assert!(page.badge.split_whitespace().any(|class| class == "status-running"), "{page:#?}");
    let first = browser.find(Locator::Css("main pre.log")).await.expect("the log");
    assert!(first.is_displayed().await.expect("log visibility"), "the log is visible");

    // 6. The second line is appended to the same document by the live stream: the observer in
    //    the marked document saw it (the end-of-job reload tends to follow within milliseconds,
    //    too soon for polling alone), each output line once, in order.
    let page = wait_for_job_page(&browser, &marker, "the second line, appended live", |page| {
        page.seen_live(&marker).is_some()
    })
    .await;
    let live_log = page.seen_live(&marker).unwrap_or_default();
    let outputs: Vec<&str> =
        live_log.lines().map(str::trim).filter(|shown| ["first line", "second line"].contains(shown)).collect();
    assert_eq!(outputs, ["first line", "second line"], "the log as streamed:\n{live_log}");

    // 7. At the end of the job live.js reloads the page (the test never did): a plain log, the
    //    badge says success.
    let page = wait_for_job_page(&browser, &marker, "the success badge after the reload", |page| {
        !page.marked && page.badge.split_whitespace().any(|class| class == "status-success")
    })
    .await;
    assert_eq!(location(&browser).await, job, "still the job page");
    assert_eq!(page.live, None, "a finished job's log is not live: {page:#?}");
    assert!(page.has_line("first line") && page.has_line("second line"), "the stored log has both lines: {page:#?}");
    assert_eq!(
        page.log.lines().filter(|shown| shown.trim() == "second line").count(),
        1,
        "the second line once: {page:#?}"
    );
    wait_for_text(&browser, "main h1 span.badge.status-success", "success").await;

    // 8. And the pipeline is a success too.
    follow(&browser, &format!("main a[href='{pipeline}']"), "Pipeline #").await;
    let deadline = Instant::now() + STEP_TIMEOUT;
    while browser
        .find_all(Locator::Css("main h1 span.badge.status-success"))
        .await
        .map_or(true, |found| found.is_empty())
    {
        if Instant::now() > deadline {
            panic!("the pipeline never showed success; the page shows:\n{}", page_text(&browser).await);
        }
        tokio::time::sleep(POLL).await;
    }

    assert_no_csp_violation(&browser).await;
    browser.close().await.expect("end the browser session");
}

/// Whether the open document still carries the marker set by the test (a reload drops it).
async fn marked(browser: &Client) -> bool {
    let value = browser.execute("return window.__opsloopRefreshMarker === 1;", vec![]).await.expect("read the marker");
    value.as_bool().unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refreshing_page_waits_while_someone_types_in_its_form() {
    let Some(driver) = ChromeDriver::start_or_skip().await else { return };
    let server = tokio::task::spawn_blocking(Server::start).await.expect("start the server");
    let browser = driver.open_browser().await;
    sign_in_as_admin(&browser, &server).await;
    let root = tempfile::tempdir().expect("temporary directory");
    tokio::task::block_in_place(|| {
        let admin_token = server.token("admin");
        let bare = bare_repository_with_hook(root.path(), &server, &server.token("developer"));
        let created =
            opsloop_client(&server, &admin_token, &["project", "create", "app", "--repo", bare.to_str().unwrap()]);
        assert!(created.status.success(), "project create failed: {}", text(&created.stderr));
        push_pipeline(root.path(), &bare, "slow:\n  script: [sleep 30]\n");
    });

    // The list of a running pipeline refreshes itself every 3 s…
    browser.goto(&format!("{}/projects/app/pipelines", server.url)).await.expect("open the pipelines");
    wait_for_text(&browser, "main table tbody tr td span.badge", "running").await;
    browser.execute("window.__opsloopRefreshMarker = 1;", vec![]).await.expect("mark the page");
    // …but not while a ref is being typed into "Run pipeline": 7 s later it is the same page.
    let run = form(&browser, "/projects/app/pipelines").await;
    let field = run.find(Locator::Css("input[name='ref']")).await.expect("the ref field");
    field.clear().await.expect("clear the ref");
    field.send_keys("feature/half-typ").await.expect("type a ref");
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(marked(&browser).await, "the page reloaded under the typing hand");
    let kept = field.prop("value").await.expect("the ref's value");
    assert_eq!(kept.as_deref(), Some("feature/half-typ"));

    // Left alone again (the text undone, the focus gone), it refreshes as before.
    browser
        .execute("const f = document.querySelector('input[name=\"ref\"]'); f.value = f.defaultValue; f.blur();", vec![])
        .await
        .expect("undo the typing");
    let deadline = Instant::now() + STEP_TIMEOUT;
    while marked(&browser).await {
        assert!(Instant::now() < deadline, "the idle page never refreshed");
        tokio::time::sleep(POLL).await;
    }
}

/// Fails, with a screenshot, unless `holds` is true of the open page; `what` says what was expected.
async fn assert_page(browser: &Client, holds: bool, what: &str) {
    if !holds {
        let shot = screenshot(browser, "assert").await;
        panic!("{what} at {} ({shot}); the page shows:\n{}", location(browser).await, page_text(browser).await);
    }
}

/// Reads a value from the open page with a script (`null` when it cannot).
async fn read(browser: &Client, script: &str) -> serde_json::Value {
    browser.execute(script, vec![]).await.unwrap_or(serde_json::Value::Null)
}

/// The pages a new user meets in the first hour, on the demo after its pipeline deployed: each
/// one keeps the navigation, breaks no Content-Security-Policy and shows what the issue "the
/// first hour of a new user" asked for.
async fn first_hour_tour(browser: &Client, server: &Server) {
    let at = |path: &str| format!("{}{path}", server.url);

    // The navigation lists only areas that exist; the favicon is served.
    browser.goto(&at("/projects")).await.expect("open /projects");
    wait_for_location(browser, "/projects").await;
    wait_for_text(browser, "main h1", "Projects").await;
    let areas = read(browser, "return [...document.querySelectorAll('nav.areas a')].map(a => a.textContent)").await;
    let expected = serde_json::json!([
        "Projects",
        "Pipelines",
        "Deployments",
        "Metrics",
        "Incidents",
        "Alerts",
        "On-call",
        "Checks"
    ]);
    assert_page(browser, areas == expected, "eight areas").await;
    let icon = Server::client().get(at("/favicon.ico")).send().await.expect("GET /favicon.ico");
    assert_eq!(icon.status(), StatusCode::OK, "a favicon");
    assert_no_csp_violation(browser).await;

    // The project: its description's `code` is code, not backticks.
    browser.goto(&at("/projects/demo")).await.expect("open the demo project");
    wait_for_text(browser, "main p code", "opsloop serve --demo").await;
    let text = page_text(browser).await;
    assert_page(browser, !text.contains('`'), "no raw backticks").await;
    assert_no_csp_violation(browser).await;

    // All pipelines: every column has a header.
    browser.goto(&at("/pipelines")).await.expect("open /pipelines");
    wait_for_text(browser, "main table thead", "Duration").await;
    let (headers, cells) = (
        read(browser, "return document.querySelectorAll('main table thead th').length").await,
        read(browser, "return Math.max(...[...document.querySelectorAll('main table tbody tr')].map(r => [...r.cells].reduce((n, c) => n + c.colSpan, 0)))").await,
    );
    assert_page(browser, headers == cells, &format!("{headers} headers for {cells} columns")).await;
    assert_no_csp_violation(browser).await;

    // A pipeline: times, duration, the needs graph with arrowheads; on a phone nothing, the
    // commit included, makes the page wider than the screen.
    follow(browser, "main table tbody td a[href^='/projects/demo/pipelines/']", "#").await;
    wait_for_text(browser, "dl.facts dt", "Started").await;
    wait_for_text(browser, "dl.facts dt", "Duration").await;
    assert!(browser.find(Locator::Css("svg.needs marker#needs-arrow")).await.is_ok(), "arrowheads");
    assert_no_csp_violation(browser).await;
    browser.set_window_size(390, 844).await.expect("a phone-sized window");
    let overflow =
        read(browser, "return document.documentElement.scrollWidth - document.documentElement.clientWidth").await;
    browser.set_window_size(1280, 1024).await.expect("back to a desktop window");
    assert_page(browser, overflow.as_i64() == Some(0), &format!("{overflow} px wider than a 390 px screen")).await;

    // The deploy job: start, finish, duration and a link to the deployment it made.
    follow(browser, "main section.card li a[href^='/projects/demo/jobs/']", "deploy").await;
    wait_for_text(browser, "dl.facts dt", "Finished").await;
    wait_for_text(browser, "dl.facts dt", "Duration").await;
    assert_no_csp_violation(browser).await;
    let deployment = follow(browser, "dl.facts dd a[href^='/projects/demo/deployments/']", "deployment #").await;

    // The deployment: the version once when it is the commit.
    wait_for_text(browser, "main h1", "Deployment #").await;
    let version = "return [...document.querySelectorAll('dl.facts dt')].find(d => d.textContent === 'Version').nextElementSibling.innerText";
    let shown = read(browser, version).await.as_str().unwrap_or_default().to_owned();
    let words: Vec<&str> = shown.split_whitespace().collect();
    assert_page(
        browser,
        words.len() == 1 || (words.len() == 2 && words[0] != words[1]),
        &format!("the version once: {shown:?}"),
    )
    .await;
    assert_no_csp_violation(browser).await;

    // Environments, then the Deployments area, which lists that deployment.
    browser.goto(&at("/projects/demo/environments")).await.expect("open the environments");
    wait_for_text(browser, "main table tbody tr", "production").await;
    assert_no_csp_violation(browser).await;
    browser.goto(&at("/deployments")).await.expect("open /deployments");
    wait_for_text(browser, "main h1", "Deployments").await;
    wait_for_text(browser, &format!("main table tbody a[href='{deployment}']"), "#").await;
    assert_no_csp_violation(browser).await;

    // A page that does not exist keeps the navigation.
    browser.goto(&at("/no-such-page")).await.expect("open a page that does not exist");
    wait_for_text(browser, "main h1", "Not Found").await;
    wait_for_text(browser, "nav.areas a", "Deployments").await;
    browser.goto(&at("/projects/demo/pipelines/999999")).await.expect("open a pipeline that does not exist");
    wait_for_text(browser, "main p.error", "pipeline").await;
    wait_for_text(browser, "nav.areas a", "Pipelines").await;
    assert_no_csp_violation(browser).await;
}

/// The deployments UI: the demo's pipeline deploys its service; a person deploys it again from
/// the Environments page, watches the steps and traffic share on the deployment's page, and
/// rolls back with one button (a switch to the version kept warm).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_and_roll_back_from_the_environments_page() {
    let Some(driver) = ChromeDriver::start_or_skip().await else { return };
    let dir = tempfile::tempdir().expect("temporary directory");
    let data = dir.path().join("data");
    let server = {
        let data = data.clone();
        tokio::task::spawn_blocking(move || Server::start_in(&data, &["--demo"])).await.expect("start the server")
    };
    let token = tokio::task::block_in_place(|| server.token("admin"));
    // The demo pipeline's deploy job puts the first release on production.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let listed = tokio::task::block_in_place(|| {
            opsloop_client(&server, &token, &["deployments", "--project", "demo", "--json"])
        });
        let deployments: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap_or_default();
        if deployments[0]["status"] == "success" {
            break;
        }
        assert!(Instant::now() < deadline, "the demo was not deployed: {deployments}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let browser = driver.open_browser().await;
    sign_in_as_admin(&browser, &server).await;
    let at = |path: &str| format!("{}{path}", server.url);

    first_hour_tour(&browser, &server).await;

    browser.goto(&at("/projects/demo")).await.expect("open the demo project");
    follow(&browser, "a.button", "Environments").await;
    wait_for_text(&browser, "main table tbody tr", "production").await;
    wait_for_text(&browser, "main table tbody tr td span.badge", "healthy 1/1").await;
    assert!(assert_inputs_are_labelled(&browser).await >= 3, "the deploy form's fields are labelled");

    // Deploy the same service again, blue-green, from the form.
    let deploy = form(&browser, "/projects/demo/deployments").await;
    fill(&deploy, "service", "web").await;
    fill(&deploy, "environment", "production").await;
    let strategy = deploy.find(Locator::Css("select[name='strategy'] option[value='blue-green']")).await;
    strategy.expect("a blue-green option").click().await.expect("choose blue-green");
    submit(&deploy, "Deploy").await;
    let heading = wait_for_text(&browser, "h1 span.badge", "success").await;
    drop(heading);
    let steps = wait_for_text(&browser, "ol.timeline", "100% of traffic").await;
    assert!(steps.text().await.expect("steps").contains("kept warm"), "the old version is kept warm");
    assert!(browser.find(Locator::Css("ol.timeline .weights .new")).await.is_ok(), "the traffic share is drawn");
    wait_for_text(&browser, "main table tbody tr td span.badge", "new").await;
    wait_for_text(&browser, "main table tbody tr td span.badge", "old").await;

    // Roll back from the deployment's page: a switch back to the warm version.
    let rollback = form(&browser, "/projects/demo/rollbacks").await;
    submit(&rollback, "Roll back from this version").await;
    wait_for_text(&browser, "ol.timeline", "still running (kept warm)").await;
    wait_for_text(&browser, "h1 span.badge", "success").await;
    let by = wait_for_text(&browser, "dl.facts dd", "(rollback)").await;
    assert!(by.text().await.expect("who").starts_with("admin"), "a person rolled back");
    let answer = Server::client().get(format!("{}/", server.proxy_url)).send().await.expect("the proxy answers");
    assert_eq!(answer.text().await.expect("body"), "1.0.0\n");
    assert_no_csp_violation(&browser).await;

    // The rollback's golden signals: its page links them, with the deployments of the range
    // listed and marked on every chart.
    follow(&browser, "a.signals", "golden signals").await;
    wait_for_text(&browser, "main h1", "Golden signals of web in production").await;
    wait_for_text(&browser, "#signals-deployments li", "started").await;
    let marked = "return document.querySelectorAll('svg#signals-rate g.event line').length > 0";
    let deadline = Instant::now() + STEP_TIMEOUT;
    while read(&browser, marked).await != serde_json::Value::Bool(true) {
        assert!(Instant::now() < deadline, "no deployment marker on the rate chart:\n{}", page_text(&browser).await);
        tokio::time::sleep(POLL).await;
    }
    assert_no_csp_violation(&browser).await;
    // The environments page links each serving service's signals.
    browser.goto(&at("/projects/demo/environments")).await.expect("open the environments");
    follow(&browser, "main table a.signals", "golden signals").await;
    wait_for_text(&browser, "main h1", "Golden signals of web in production").await;
    drop(server);
    opsloop_runner::reap::kill_marked("OPSLOOP_RELEASE_DIR", &data.join("releases"));
}
