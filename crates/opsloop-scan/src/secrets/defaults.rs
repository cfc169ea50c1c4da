//! The built-in rule set, written for opsloop (not copied from gitleaks): common providers'
//! token formats, PEM private keys, JWTs and generic assignments.
//!
//! Keywords are chosen to be rare in ordinary source code, because every keyword occurrence
//! costs a regex run over its line: `eyj` (the base64 of `{"`) rather than `ey` for JWTs,
//! `twilio` rather than `sk` for Twilio keys. The generic rules are the exception (`token`,
//! `secret`, `password` are common words); their entropy thresholds and allowlists keep them
//! quiet on code that merely names a variable.

use super::SecretsError;
use super::rule::{Allowlist, RegexTarget, Rule, Validator, compile};

struct Spec {
    id: &'static str,
    description: &'static str,
    regex: &'static str,
    keywords: &'static [&'static str],
    entropy: f64,
    validator: Option<Validator>,
    reach: usize,
    tags: &'static [&'static str],
}

const fn spec(
    id: &'static str,
    description: &'static str,
    regex: &'static str,
    keywords: &'static [&'static str],
    entropy: f64,
) -> Spec {
    Spec { id, description, regex, keywords, entropy, validator: None, reach: 0, tags: &[] }
}

// The value of an assignment ends at a quote, whitespace, `;`, `,` or the end of the line; a
// value followed by anything else (`(`, `[`, `.method`) is code, not a literal.
const END: &str = r#"(?:["'`\s;,]|\\[nrt]|$)"#;

fn specs() -> Vec<Spec> {
    vec![
        spec(
            "aws-access-token",
            "AWS access key id",
            r"\b((?:A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z2-7]{16})\b",
            &["akia", "asia", "abia", "acca", "a3t"],
            3.0,
        ),
        spec(
            "aws-secret-access-key",
            "AWS secret access key",
            r#"(?i)\baws[_.\-]?(?:secret[_.\-]?(?:access[_.\-]?)?key|secret)["']?\s{0,3}(?::=|=>|=|:)\s{0,3}["']?([A-Za-z0-9/+]{40})(?:["'\s;,]|$)"#,
            &["aws"],
            3.5,
        ),
        spec("gcp-api-key", "Google Cloud API key", r"\b(AIza[0-9A-Za-z_\-]{35})(?:[^0-9A-Za-z_\-]|$)", &["aiza"], 3.0),
        spec(
            "gcp-service-account-key",
            "Google Cloud service account key id (the key file's private_key_id)",
            r#""private_key_id"\s*:\s*"([0-9a-f]{40})""#,
            &["private_key_id"],
            3.0,
        ),
        spec(
            "azure-storage-account-key",
            "Azure storage account key",
            r#"(?i)(?:AccountKey|azure[_.\-]?storage[_.\-]?(?:account[_.\-]?)?key)["']?\s{0,3}[=:]\s{0,3}["']?([A-Za-z0-9+/]{86}==)"#,
            &["accountkey", "azure"],
            4.0,
        ),
        spec(
            "azure-ad-client-secret",
            "Azure AD (Entra ID) client secret",
            r#"(?:^|[\\'"`\s>=:(,])([A-Za-z0-9_~.]{3}\dQ~[A-Za-z0-9_~.\-]{31,34})(?:$|[\\'"`\s<),])"#,
            &["q~"],
            3.0,
        ),
        Spec {
            validator: Some(Validator::GithubChecksum),
            ..spec("github-pat", "GitHub personal access token (classic)", r"\b(ghp_[0-9A-Za-z]{36})\b", &["ghp_"], 3.0)
        },
        Spec {
            validator: Some(Validator::GithubChecksum),
            ..spec("github-oauth", "GitHub OAuth access token", r"\b(gho_[0-9A-Za-z]{36})\b", &["gho_"], 3.0)
        },
        Spec {
            validator: Some(Validator::GithubChecksum),
            ..spec(
                "github-app-token",
                "GitHub App user-to-server or server-to-server token",
                r"\b((?:ghu|ghs)_[0-9A-Za-z]{36})\b",
                &["ghu_", "ghs_"],
                3.0,
            )
        },
        Spec {
            validator: Some(Validator::GithubChecksum),
            ..spec("github-refresh-token", "GitHub refresh token", r"\b(ghr_[0-9A-Za-z]{36})\b", &["ghr_"], 3.0)
        },
        spec(
            "github-fine-grained-pat",
            "GitHub fine-grained personal access token",
            r"\b(github_pat_[0-9A-Za-z_]{82})\b",
            &["github_pat_"],
            3.0,
        ),
        spec("gitlab-pat", "GitLab personal access token", r"\b(glpat-[0-9A-Za-z_\-]{20,})\b", &["glpat-"], 3.0),
        spec("gitlab-ptt", "GitLab pipeline trigger token", r"\b(glptt-[0-9a-f]{40})\b", &["glptt-"], 3.0),
        spec(
            "gitlab-runner-token",
            "GitLab runner authentication token",
            r"\b(glrt-[0-9A-Za-z_\-]{20,})\b",
            &["glrt-"],
            3.0,
        ),
        spec(
            "slack-bot-token",
            "Slack bot token",
            r"\b(xoxb-[0-9]{10,13}-[0-9]{10,13}-?[A-Za-z0-9\-]*)",
            &["xoxb"],
            3.0,
        ),
        spec(
            "slack-user-token",
            "Slack user or legacy token",
            r"\b(xox[pears]-(?:[0-9]{10,13}-){2,3}[A-Za-z0-9\-]{20,64})",
            &["xoxp", "xoxe", "xoxa", "xoxr", "xoxs"],
            3.0,
        ),
        spec("slack-app-token", "Slack app-level token", r"(?i)\b(xapp-\d-[A-Z0-9]+-\d+-[a-z0-9]+)\b", &["xapp"], 3.0),
        spec(
            "slack-webhook-url",
            "Slack incoming webhook URL",
            r"((?:https?://)?hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9+/]{8,12}/[A-Za-z0-9+/]{8,12}/[A-Za-z0-9+/]{20,48})",
            &["hooks.slack.com"],
            0.0,
        ),
        spec(
            "stripe-access-token",
            "Stripe secret or restricted key",
            r"\b((?:sk|rk)_(?:test|live|prod)_[0-9A-Za-z]{10,99})\b",
            &["sk_test", "sk_live", "sk_prod", "rk_test", "rk_live", "rk_prod"],
            2.0,
        ),
        spec("twilio-api-key", "Twilio API key", r"(?i)twilio.{0,60}?\b((?-i:SK)[0-9a-fA-F]{32})\b", &["twilio"], 3.0),
        spec(
            "sendgrid-api-token",
            "SendGrid API key",
            r"\b(SG\.[0-9A-Za-z_\-]{22}\.[0-9A-Za-z_\-]{43})(?:[^0-9A-Za-z_\-]|$)",
            &["sg."],
            3.0,
        ),
        spec("npm-access-token", "npm access token", r"\b(npm_[0-9A-Za-z]{36})\b", &["npm_"], 3.0),
        spec(
            "pypi-upload-token",
            "PyPI upload token",
            r"(pypi-AgEIcHlwaS5vcmc[0-9A-Za-z_\-]{50,})",
            &["pypi-ageichlwas5vcmc"],
            0.0,
        ),
        spec(
            "dockerhub-pat",
            "Docker Hub personal access token",
            r"\b(dckr_pat_[0-9A-Za-z_\-]{27})(?:[^0-9A-Za-z_\-]|$)",
            &["dckr_pat_"],
            3.0,
        ),
        spec(
            "docker-config-auth",
            "Registry credentials in a Docker config.json (`auth`: base64 of user:password)",
            r#""auth"\s*:\s*"([A-Za-z0-9+/]{16,}={0,2})""#,
            &["\"auth\""],
            3.0,
        ),
        spec(
            "openai-api-key",
            "OpenAI API key",
            r"\b(sk-(?:proj-|svcacct-|admin-)?[0-9A-Za-z_\-]{20,74}T3BlbkFJ[0-9A-Za-z_\-]{20,74})\b",
            &["t3blbkfj"],
            3.0,
        ),
        Spec {
            reach: 16 << 10,
            ..spec(
                "private-key",
                "Private key (PEM block)",
                r"(?i)(-----BEGIN[ A-Z0-9_\-]{0,100}PRIVATE KEY(?: BLOCK)?-----[\s\S]{64,}?-----END[ A-Z0-9_\-]{0,100}PRIVATE KEY(?: BLOCK)?-----)",
                &["-----begin"],
                0.0,
            )
        },
        spec(
            "jwt",
            "JSON Web Token",
            r"\b(eyJ[0-9A-Za-z_\-]{15,}\.eyJ[0-9A-Za-z_\-]{15,}\.[0-9A-Za-z_\-]{10,})",
            &["eyj"],
            3.0,
        ),
    ]
}

fn generic(names: &str) -> String {
    // A name containing one of `names` (possibly prefixed, `db_password`, or suffixed,
    // `token_value`), an assignment operator, an optional quote, then the value.
    format!(
        r#"(?i)(?:^|[^0-9A-Za-z_])[0-9A-Za-z_.\-]{{0,40}}?(?:{names})[0-9A-Za-z_.\-]{{0,20}}["']?\s{{0,3}}(?::=|=>|=|:)\s{{0,3}}["'`]?([0-9A-Za-z_.=+/~!@#%^&*\-]{{8,150}})["'`]?{END}"#
    )
}

/// Values that an assignment names but are not secrets: references to variables or the
/// environment, booleans, dotted identifiers, placeholders.
fn generic_allowlist() -> Result<Allowlist, SecretsError> {
    let regexes = [
        r"^\$\{?[0-9A-Za-z_.]+\}?$",
        r"^(?i)(?:true|false|null|none|nil|undefined|required|optional)$",
        r"^[a-z_]+(?:[.][a-z_]+)+$",
        r"^(?i)(?:x{4,}|\*{4,}|\.{4,}|-{4,}|#{4,})$",
        r"^[A-Z_]+$",
        r"^[a-z_]+$",
    ];
    Ok(Allowlist {
        description: "references, identifiers and placeholders".into(),
        regex_target: RegexTarget::Secret,
        regexes: regexes.iter().map(|r| compile(r)).collect::<Result<_, _>>()?,
        stopwords: [
            "example",
            "placeholder",
            "changeme",
            "change_me",
            "your_",
            "your-",
            "dummy",
            "redacted",
            "sample",
            "xxxxxx",
            "<",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect(),
        ..Allowlist::default()
    })
}

/// The built-in rules. An error here is a bug in this file (a test compiles them all).
pub fn default_rules() -> Result<Vec<Rule>, SecretsError> {
    let mut rules = Vec::new();
    for s in specs() {
        let mut rule = Rule::new(s.id, s.description, compile(s.regex)?, s.keywords);
        rule.entropy = s.entropy;
        rule.validator = s.validator;
        rule.reach = s.reach;
        rule.tags = s.tags.iter().map(|t| (*t).to_owned()).collect();
        rules.push(rule);
    }
    let password_kw = ["password", "passwd", "pwd"];
    let mut password = Rule::new(
        "generic-password",
        "Password assigned in code or configuration",
        compile(&generic("password|passwd|pwd"))?,
        &password_kw,
    );
    password.entropy = 3.0;
    password.allowlists.push(generic_allowlist()?);
    rules.push(password);
    let key_kw =
        ["secret", "token", "api_key", "apikey", "api-key", "access_key", "accesskey", "auth_key", "private_key"];
    let mut api = Rule::new(
        "generic-api-key",
        "Generic API key, token or secret assigned in code or configuration",
        compile(&generic(r"secret|token|api[_.\-]?key|access[_.\-]?key|auth[_.\-]?key|private[_.\-]?key"))?,
        &key_kw,
    );
    api.entropy = 3.5;
    api.allowlists.push(generic_allowlist()?);
    rules.push(api);
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_compile_and_ids_are_unique() {
        let rules = default_rules().unwrap();
        let mut ids: Vec<_> = rules.iter().map(|r| r.id.as_str()).collect();
        ids.sort_unstable();
        let n = ids.len();
        ids.dedup();
        assert_eq!(n, ids.len());
        assert!(rules.iter().all(|r| !r.keywords.is_empty()));
    }
}
