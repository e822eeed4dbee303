//! The single request path. Order per attempt: build the request (key header, JSON content
//! type, timeout) → send → read the body under the size cap → classify the status → on 429 wait
//! for `Retry-After` (capped) or the backoff, on 408/5xx and transport errors wait for the
//! backoff → retry up to the policy's attempt limit. Non-retryable answers return at once.
//! Every attempt first waits its turn in the client's shared limiter; a 429 pauses and slows
//! the limiter for every caller, and is retried until the request has been throttled for the
//! policy's `max_throttled_wait` (429s do not use up the attempt limit: throttling delays a
//! request, it does not fail it).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use tracing::debug;

use crate::config::ClientConfig;
use crate::error::{Error, Result};

pub const KEY_HEADER: &str = "x-pendo-integration-key";

#[derive(Clone, Debug)]
pub(crate) struct Transport {
    http: reqwest::Client,
    pub(crate) config: ClientConfig,
    limiter: std::sync::Arc<crate::limiter::Limiter>,
    /// Requests sent, per [`CALL_KINDS`] entry; shared by the client's clones.
    calls: std::sync::Arc<[AtomicU64; CALL_KINDS.len()]>,
}

/// What a request is for, as counted by [`crate::Client::calls_by_kind`].
pub const CALL_KINDS: [&str; 7] =
    ["aggregation", "catalog", "visitor", "account", "history", "metadata_read", "metadata_write"];

/// The kind of a request from its method and path (relative to `/api/v1`).
fn call_kind(method: &Method, path: &str) -> usize {
    let mut segments = path.trim_start_matches('/').split('/');
    let kind = match (segments.next().unwrap_or_default(), segments.nth(1)) {
        ("aggregation", _) => "aggregation",
        ("metadata", _) if method == Method::GET => "metadata_read",
        ("metadata", _) => "metadata_write",
        ("visitor", Some("history")) => "history",
        ("visitor", _) => "visitor",
        ("account", _) => "account",
        // Features, pages, track types, guides, reports: the catalogue lists.
        _ => "catalog",
    };
    CALL_KINDS.iter().position(|k| *k == kind).unwrap_or(1)
}

/// A request body and its content type.
pub(crate) enum Body {
    None,
    Json(Vec<u8>),
}

pub(crate) fn snippet(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]);
    s.trim().to_string()
}

fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    resp.headers().get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

impl Transport {
    pub(crate) fn new(config: ClientConfig) -> Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .user_agent(config.user_agent.clone())
            .build()
            .map_err(|e| Error::Config(format!("building the HTTP client: {e}")))?;
        Ok(Transport { http, config, limiter: std::sync::Arc::default(), calls: std::sync::Arc::default() })
    }

    pub(crate) fn calls_by_kind(&self) -> Vec<(&'static str, u64)> {
        CALL_KINDS.iter().zip(self.calls.iter()).map(|(k, n)| (*k, n.load(Ordering::Relaxed))).collect()
    }

    fn url(&self, path: &str) -> String {
        format!("{}/api/v1{}", self.config.base_url.as_str().trim_end_matches('/'), path)
    }

    async fn read_capped(&self, endpoint: &str, mut resp: reqwest::Response) -> std::result::Result<Vec<u8>, Error> {
        let limit = self.config.max_response_bytes;
        if resp.content_length().is_some_and(|n| n as usize > limit) {
            return Err(Error::TooLarge { endpoint: endpoint.to_string(), limit });
        }
        // Sized once when the length is known: growing by doubling would hold up to twice the
        // body (and three times while it copies), and a page is the extraction's largest buffer.
        let mut out = Vec::with_capacity(resp.content_length().map_or(0, |n| (n as usize).min(limit)));
        loop {
            match resp.chunk().await {
                Ok(Some(c)) => {
                    if out.len() + c.len() > limit {
                        return Err(Error::TooLarge { endpoint: endpoint.to_string(), limit });
                    }
                    out.extend_from_slice(&c);
                }
                Ok(None) => return Ok(out),
                Err(e) => return Err(Error::Transport { endpoint: endpoint.to_string(), attempts: 1, source: e }),
            }
        }
    }

    /// Sends one logical request, retrying as the policy allows. Returns the 2xx body; a body
    /// that breaks off is asked for again, within the same attempts.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Body,
    ) -> Result<Vec<u8>> {
        let endpoint = format!("{method} {path}");
        let policy = &self.config.retry;
        let mut attempt = 0u32;
        loop {
            let (resp, attempts) = self.open_from(attempt, method.clone(), path, query, &body).await?;
            attempt = attempts;
            match self.read_capped(&endpoint, resp).await {
                Err(Error::Transport { source, .. }) if attempt < policy.max_attempts.max(1) => {
                    debug!(%endpoint, attempt, error = %source, "Body read failed; retrying.");
                    tokio::time::sleep(policy.backoff(attempt)).await;
                }
                Err(Error::Transport { endpoint, source, .. }) => {
                    return Err(Error::Transport { endpoint, attempts: attempt, source });
                }
                other => return other,
            }
        }
    }

    /// Sends one logical request, retrying as the policy allows, and returns the first 2xx
    /// response with its body unread: the caller reads it as it arrives (and a body that breaks
    /// off is then the caller's to ask for again).
    pub(crate) async fn open(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Body,
    ) -> Result<reqwest::Response> {
        Ok(self.open_from(0, method, path, query, &body).await?.0)
    }

    /// [`Transport::open`] after `attempt` earlier attempts; also returns the attempts made
    /// (those that met a 429 left out, as they are from the policy's count).
    async fn open_from(
        &self,
        mut attempt: u32,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: &Body,
    ) -> Result<(reqwest::Response, u32)> {
        let endpoint = format!("{method} {path}");
        let policy = &self.config.retry;
        // Tries that met a 429: they do not count against max_attempts.
        let mut throttles = 0u32;
        let mut throttled_since: Option<tokio::time::Instant> = None;
        let kind = call_kind(&method, path);
        loop {
            attempt += 1;
            let started = self.limiter.acquire().await;
            let mut req = self
                .http
                .request(method.clone(), self.url(path))
                .header(KEY_HEADER, self.config.integration_key.expose())
                .header(reqwest::header::CONTENT_TYPE, "application/json");
            if !query.is_empty() {
                req = req.query(query);
            }
            if let Body::Json(b) = body {
                req = req.body(b.clone());
            }
            let last = attempt - throttles >= policy.max_attempts.max(1);
            // Every attempt counts: a retried or throttled request is load Pendo saw.
            if let Some(n) = self.calls.get(kind) {
                n.fetch_add(1, Ordering::Relaxed);
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    if last {
                        return Err(Error::Transport { endpoint, attempts: attempt, source: e });
                    }
                    let wait = policy.backoff(attempt);
                    debug!(%endpoint, attempt, ?wait, error = %e, "Transport error; retrying.");
                    tokio::time::sleep(wait).await;
                    continue;
                }
            };
            let status = resp.status();
            if status != StatusCode::TOO_MANY_REQUESTS {
                self.limiter.succeeded();
            }
            if status.is_success() {
                return Ok((resp, attempt - throttles));
            }
            if status == StatusCode::TOO_MANY_REQUESTS {
                let ra = retry_after(&resp);
                throttles += 1;
                let since = *throttled_since.get_or_insert_with(tokio::time::Instant::now);
                if since.elapsed() >= policy.max_throttled_wait {
                    return Err(Error::Throttled { endpoint, attempts: attempt, retry_after: ra });
                }
                let wait = ra.map_or_else(|| policy.backoff(throttles), |d| d.min(policy.max_retry_after));
                debug!(%endpoint, attempt, ?wait, "Throttled; every request waits, then goes slower.");
                // The next acquire (this request's and everyone else's) waits it out.
                self.limiter.throttled(wait, started);
                continue;
            }
            let bytes = self.read_capped(&endpoint, resp).await.unwrap_or_default();
            let message = snippet(&bytes);
            if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
                if last {
                    return Err(Error::Server { endpoint, status: status.as_u16(), attempts: attempt, message });
                }
                let wait = policy.backoff(attempt);
                debug!(%endpoint, attempt, status = status.as_u16(), ?wait, "Server error; retrying.");
                tokio::time::sleep(wait).await;
                continue;
            }
            return Err(match status {
                StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => Error::Forbidden { endpoint, message },
                StatusCode::NOT_FOUND => Error::NotFound { endpoint },
                _ => Error::Rejected { endpoint, status: status.as_u16(), message },
            });
        }
    }

    pub(crate) async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Body,
    ) -> Result<T> {
        let endpoint = format!("{method} {path}");
        let bytes = self.send(method, path, query, body).await?;
        serde_json::from_slice(&bytes).map_err(|source| Error::Decode { endpoint, snippet: snippet(&bytes), source })
    }
}

/// Percent-encodes one path segment (ids may hold `@`, `/`, spaces).
pub(crate) fn segment(s: &str) -> String {
    const SET: &percent_encoding::AsciiSet =
        &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b'@');
    percent_encoding::utf8_percent_encode(s, SET).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_body_of_known_length_is_read_into_one_buffer_of_that_size() {
        let transport =
            Transport::new(ClientConfig::new("http://127.0.0.1:1", "key").expect("a config")).expect("a transport");
        let body: Vec<u8> = (0..3_000_000u32).map(|i| i as u8).collect();
        // Over a socket, so the body arrives in many chunks, as a page does.
        let served = body.clone();
        let app = axum::Router::new().route("/", axum::routing::get(move || async move { served }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a port");
        let addr = listener.local_addr().expect("an address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        let resp = reqwest::get(format!("http://{addr}/")).await.expect("a response");
        assert_eq!(resp.content_length(), Some(3_000_000));
        let read = transport.read_capped("POST /aggregation", resp).await.expect("the body");
        assert_eq!(read, body);
        assert_eq!(read.capacity(), read.len());
    }

    #[test]
    fn each_endpoint_has_its_kind() {
        let kind = |m: Method, p: &str| CALL_KINDS[call_kind(&m, p)];
        assert_eq!(kind(Method::POST, "/aggregation"), "aggregation");
        assert_eq!(kind(Method::GET, "/feature"), "catalog");
        assert_eq!(kind(Method::GET, "/report"), "catalog");
        assert_eq!(kind(Method::GET, "/visitor/v%201"), "visitor");
        assert_eq!(kind(Method::GET, "/visitor/v1/history"), "history");
        assert_eq!(kind(Method::GET, "/account/a1"), "account");
        assert_eq!(kind(Method::GET, "/metadata/schema/account"), "metadata_read");
        assert_eq!(kind(Method::POST, "/metadata/account/custom/value"), "metadata_write");
        assert_eq!(kind(Method::PUT, "/metadata/visitor/custom/value/v1/tier"), "metadata_write");
    }
}
