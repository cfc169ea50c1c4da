//! A small client for the server's REST API, used by `opsloop project …` (and later
//! `opsloop pipeline …`). Errors carry the server's own message.

use anyhow::{Context, anyhow, bail};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::cli::ClientArgs;

pub struct ApiClient {
    http: reqwest::Client,
    base: url::Url,
    token: String,
}

impl ApiClient {
    pub fn new(args: &ClientArgs) -> anyhow::Result<Self> {
        let token = args.token.clone().filter(|t| !t.is_empty()).ok_or_else(|| {
            anyhow!("no API token: set OPSLOOP_TOKEN or pass --token (create one with `opsloop admin token create --name cli --role maintainer`)")
        })?;
        let base = url::Url::parse(&args.server).with_context(|| format!("--server `{}` is not a URL", args.server))?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("opsloop-cli/", env!("CARGO_PKG_VERSION")))
            .timeout(std::time::Duration::from_secs(60))
            .build()?;
        Ok(ApiClient { http, base, token })
    }

    /// Calls `method path` with an optional JSON body; decodes JSON, `None` for 204.
    /// Path segments are escaped, so a name can never change the route.
    pub async fn call<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&B>,
    ) -> anyhow::Result<Option<T>> {
        self.send(method, segments, "", body).await
    }

    /// A GET with an already-encoded query string.
    pub async fn get_with_query<T: DeserializeOwned>(
        &self,
        segments: &[&str],
        query: &str,
    ) -> anyhow::Result<Option<T>> {
        self.send::<Value, T>(Method::GET, segments, query, None).await
    }

    /// A GET whose answer is plain text (job logs).
    pub async fn get_text(&self, segments: &[&str]) -> anyhow::Result<String> {
        let mut url = self.base.clone();
        {
            let mut path = url.path_segments_mut().map_err(|()| anyhow!("--server must be an http(s) URL"))?;
            path.pop_if_empty().extend(["api", "v1"]).extend(segments);
        }
        let response = self.http.get(url).bearer_auth(&self.token).send().await?;
        let status = response.status();
        let text = response.text().await?;
        if !status.is_success() {
            let message = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.pointer("/error/message").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or(text);
            bail!("{message} (HTTP {})", status.as_u16());
        }
        Ok(text)
    }

    /// A GET of a path outside `/api/v1` (Prometheus's API under `/prometheus`), answering
    /// with the status and the JSON body as they are: that API has its own error envelope.
    pub async fn get_outside_api(&self, segments: &[&str], query: &str) -> anyhow::Result<(StatusCode, Value)> {
        let mut url = self.base.clone();
        {
            let mut path = url.path_segments_mut().map_err(|()| anyhow!("--server must be an http(s) URL"))?;
            path.pop_if_empty().extend(segments);
        }
        url.set_query(Some(query));
        let response = self
            .http
            .get(url.clone())
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach the opsloop server at {}", self.base))?;
        let status = response.status();
        let bytes = response.bytes().await?;
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            serde_json::json!({"status": "error", "error": String::from_utf8_lossy(&bytes).chars().take(300).collect::<String>()})
        });
        Ok((status, body))
    }

    async fn send<B: Serialize, T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        query: &str,
        body: Option<&B>,
    ) -> anyhow::Result<Option<T>> {
        let mut url = self.base.clone();
        {
            let mut path = url.path_segments_mut().map_err(|()| anyhow!("--server must be an http(s) URL"))?;
            path.pop_if_empty().extend(["api", "v1"]).extend(segments);
        }
        if !query.is_empty() {
            url.set_query(Some(query));
        }
        let mut request = self.http.request(method, url.clone()).bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response =
            request.send().await.with_context(|| format!("cannot reach the opsloop server at {}", self.base))?;
        let status = response.status();
        if status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let bytes = response.bytes().await?;
        if !status.is_success() {
            let message = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| v.pointer("/error/message").and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(300).collect());
            bail!("{message} (HTTP {})", status.as_u16());
        }
        Ok(Some(serde_json::from_slice(&bytes).with_context(|| format!("unexpected answer from {url}"))?))
    }
}
