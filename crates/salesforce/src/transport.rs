//! The single send path every REST call goes through.
//!
//! Layer order for each attempt:
//!
//! 1. **auth header** — take the cached token (fetching one if none) and add
//!    `Authorization: Bearer`; the token's `instance_url` is the base of the URL;
//! 2. **call options** — `Sforce-Call-Options: client=<name>`, `Accept: application/json`
//!    (and `Accept-Encoding: gzip`, added by the HTTP client);
//! 3. **send** — with the configured timeouts;
//! 4. **read** the body, decompressed, up to the configured cap;
//! 5. **record API usage** from `Sforce-Limit-Info`;
//! 6. **classify** — success, or an [`Error`] whose [`RetryClass`] decides what follows;
//! 7. **maybe refresh / retry** — a `RefreshAuth` error drops the stale token and retries once
//!    without consuming an attempt; a `Backoff` error sleeps (exponential, jittered, honouring
//!    a capped `Retry-After`) and retries until the policy's attempts run out.
//!
//! Bulk API 2.0 uses the same path with two variations: a request body streamed from a file
//! (the job's CSV, re-opened for each attempt) with its own content type, and a success body
//! handed back unread as a stream (CSV results that may be far larger than any JSON body).
//!
//! Non-idempotent requests (creates: `POST` that inserts) are retried only when the failure
//! proves nothing was written: the connection never opened, Salesforce answered 503 /
//! `SERVER_UNAVAILABLE` (the request was refused before processing), or `UNABLE_TO_LOCK_ROW`
//! (the DML could not take its lock and rolled back). A timeout or a dropped connection after
//! the request left may have committed, and re-sending would create a duplicate, so those are
//! returned to the caller, whose dedupe key can find out what happened.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{ACCEPT, CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::auth::{AccessToken, TokenCache, TokenSource};
use crate::config::ClientConfig;
use crate::error::{ApiError, Error, RequestContext, Result, RetryClass, decode_error_array, snippet};
use crate::limits::{LIMIT_INFO_HEADER, UsageTracker};

/// Header carrying our client name into Salesforce logs and CDC `changeOrigin`.
pub const CALL_OPTIONS_HEADER: &str = "Sforce-Call-Options";

/// Where a request goes.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    /// An absolute path on the instance, e.g. `/services/data/v62.0/limits`.
    Path(String),
}

/// One logical API call, re-sendable across attempts.
#[derive(Debug, Clone)]
pub(crate) struct ApiRequest {
    method: Method,
    target: Target,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    body: Option<Bytes>,
    /// A body streamed from this file instead of `body` (Bulk job uploads).
    file_body: Option<std::path::PathBuf>,
    /// Content type of `body` / `file_body`; JSON when unset.
    content_type: Option<HeaderValue>,
    idempotent: bool,
    authenticated: bool,
    context: RequestContext,
}

impl ApiRequest {
    /// A request; `POST` is treated as non-idempotent unless [`Self::idempotent`] says otherwise.
    pub(crate) fn new(method: Method, target: Target, context: RequestContext) -> Self {
        let idempotent = method != Method::POST;
        Self {
            method,
            target,
            query: Vec::new(),
            headers: HeaderMap::new(),
            body: None,
            file_body: None,
            content_type: None,
            idempotent,
            authenticated: true,
            context,
        }
    }

    pub(crate) fn query(mut self, key: &str, value: impl Into<String>) -> Self {
        self.query.push((key.to_owned(), value.into()));
        self
    }

    pub(crate) fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// Serialises `body` as the JSON payload.
    pub(crate) fn json<T: Serialize + ?Sized>(mut self, body: &T) -> Result<Self> {
        let bytes = serde_json::to_vec(body)
            .map_err(|e| Error::InvalidInput(format!("request body is not serialisable: {e}")))?;
        self.body = Some(Bytes::from(bytes));
        Ok(self)
    }

    /// Streams the file at `path` as the body, with the given content type. Each attempt
    /// re-opens the file, so the file must stay until the call returns.
    pub(crate) fn file_body(mut self, path: std::path::PathBuf, content_type: HeaderValue) -> Self {
        self.file_body = Some(path);
        self.content_type = Some(content_type);
        self
    }

    /// Declares whether re-sending after an unknown outcome is harmless (reads, updates,
    /// upserts, deletes, and `POST`s that only read, such as Collections retrieve).
    pub(crate) fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }

    /// Omits the `Authorization` header (the Versions resource needs none).
    pub(crate) fn unauthenticated(mut self) -> Self {
        self.authenticated = false;
        self
    }

    pub(crate) fn context(&self) -> &RequestContext {
        &self.context
    }
}

/// A successful (status < 400) response with its body fully read.
#[derive(Debug, Clone)]
pub(crate) struct RawResponse {
    pub(crate) status: StatusCode,
    pub(crate) body: Bytes,
}

/// What an attempt hands back: the body read, or (for [`Transport::send_streaming`]) the
/// response itself with its body still to read.
enum Received {
    Full(RawResponse),
    Streaming(reqwest::Response),
}

/// A failed attempt, with what the retry loop needs to decide.
struct Failure {
    error: Error,
    /// The token the attempt used, so only that one is invalidated.
    token: Option<Arc<AccessToken>>,
    retry_after: Option<Duration>,
}

impl Failure {
    fn new(error: Error) -> Self {
        Self { error, token: None, retry_after: None }
    }
}

/// HTTP client, token cache, usage tracker and settings shared by every call.
#[derive(Debug)]
pub(crate) struct Transport {
    http: reqwest::Client,
    tokens: TokenCache,
    config: ClientConfig,
    usage: UsageTracker,
    call_options: HeaderValue,
    /// Authenticated requests answered, retries included: Salesforce counts each against the
    /// daily allocation, so callers take deltas of this to know what a step cost.
    sent: std::sync::atomic::AtomicU64,
}

impl Transport {
    pub(crate) fn new(
        config: ClientConfig,
        source: Arc<dyn TokenSource>,
        http: Option<reqwest::Client>,
    ) -> Result<Self> {
        config.validate()?;
        let call_options = HeaderValue::from_str(&format!("client={}", config.client_name))
            .map_err(|e| Error::InvalidInput(format!("client name: {e}")))?;
        let http = match http {
            Some(http) => http,
            None => reqwest::Client::builder()
                .gzip(true)
                .timeout(config.request_timeout)
                .connect_timeout(config.connect_timeout)
                .user_agent(concat!("usagesync-salesforce/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| Error::InvalidInput(format!("HTTP client: {e}")))?,
        };
        Ok(Self {
            http,
            tokens: TokenCache::new(source),
            config,
            usage: UsageTracker::default(),
            call_options,
            sent: Default::default(),
        })
    }

    pub(crate) fn config(&self) -> &ClientConfig {
        &self.config
    }

    pub(crate) fn usage(&self) -> &UsageTracker {
        &self.usage
    }

    pub(crate) fn requests_sent(&self) -> u64 {
        self.sent.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(crate) async fn token(&self) -> Result<Arc<AccessToken>> {
        Ok(self.tokens.get(&self.http).await?)
    }

    pub(crate) fn cached_token(&self) -> Option<Arc<AccessToken>> {
        self.tokens.cached()
    }

    /// Sends `request` and decodes a JSON body into `T`.
    pub(crate) async fn send_json<T: DeserializeOwned>(&self, request: ApiRequest) -> Result<T> {
        let context = request.context.clone();
        let response = self.send(request).await?;
        decode_json(&context, &response.body)
    }

    /// Sends `request` with auth, retries and classification; returns any status below 400.
    pub(crate) async fn send(&self, request: ApiRequest) -> Result<RawResponse> {
        match self.send_inner(request, false).await? {
            Received::Full(response) => Ok(response),
            Received::Streaming(response) => Err(Error::Protocol {
                context: RequestContext::new(Method::GET, response.url().path()),
                reason: "a buffered call came back unread".into(),
            }),
        }
    }

    /// As [`Transport::send`], but a success response comes back with its body unread, for
    /// the caller to stream (error bodies are still read and classified here).
    pub(crate) async fn send_streaming(&self, request: ApiRequest) -> Result<reqwest::Response> {
        let context = request.context.clone();
        match self.send_inner(request, true).await? {
            Received::Streaming(response) => Ok(response),
            Received::Full(_) => {
                Err(Error::Protocol { context, reason: "a streamed call came back already read".into() })
            }
        }
    }

    async fn send_inner(&self, request: ApiRequest, streaming: bool) -> Result<Received> {
        let max_attempts = self.config.retry.max_attempts.max(1);
        let mut attempt: u32 = 0;
        // A new token is fetched when a session expired, but never twice in a row: a token
        // refused as soon as it is issued would loop. Once the new token has met some other
        // answer (a 503 retried, say), a later expiry during the same call's retries is a new
        // expiry and is refreshed again, a bounded number of times.
        let mut refresh_allowed = true;
        let mut refreshes: u32 = 0;
        loop {
            attempt += 1;
            let failure = match self.attempt(&request, streaming).await {
                Ok(response) => return Ok(response),
                Err(failure) => failure,
            };
            let class = failure.error.retry_class();
            if class == RetryClass::RefreshAuth && refresh_allowed && refreshes < max_attempts {
                refresh_allowed = false;
                refreshes += 1;
                if let Some(token) = &failure.token {
                    self.tokens.invalidate(token);
                }
                tracing::info!(
                    call = %request.context,
                    "Salesforce session expired; refreshing the token and retrying once."
                );
                // The expired-session round trip is not the request's fault.
                attempt -= 1;
                continue;
            }
            let resend_ok = request.idempotent || failure.error.safe_to_resend_create();
            if class != RetryClass::Backoff || attempt >= max_attempts || !resend_ok {
                if class == RetryClass::Backoff && !resend_ok {
                    tracing::warn!(
                        call = %request.context,
                        error = %failure.error,
                        "Not retrying a create whose outcome is unknown; it may have committed."
                    );
                }
                return Err(failure.error);
            }
            let policy = &self.config.retry;
            let delay = failure.retry_after.map_or_else(|| policy.delay(attempt), |d| d.min(policy.max_backoff));
            tracing::warn!(
                call = %request.context,
                error = %failure.error,
                attempt,
                max_attempts,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                "Transient Salesforce failure; retrying after a delay."
            );
            tokio::time::sleep(delay).await;
            refresh_allowed = true;
        }
    }

    async fn attempt(&self, request: &ApiRequest, streaming: bool) -> std::result::Result<Received, Failure> {
        let context = &request.context;
        let token = self.tokens.get(&self.http).await.map_err(|e| Failure::new(Error::Auth(e)))?;
        let with_token = |error: Error| Failure { error, token: Some(Arc::clone(&token)), retry_after: None };

        let Target::Path(path) = &request.target;
        let base = token.instance_url.as_str().trim_end_matches('/');
        let url = url::Url::parse(&format!("{base}{path}"))
            .map_err(|e| with_token(Error::InvalidInput(format!("URL for {context}: {e}"))))?;

        let mut builder = self
            .http
            .request(request.method.clone(), url)
            .header(ACCEPT, "application/json")
            .header(CALL_OPTIONS_HEADER, self.call_options.clone())
            .headers(request.headers.clone());
        if request.authenticated {
            builder = builder.bearer_auth(token.access_token.expose());
        }
        if !request.query.is_empty() {
            builder = builder.query(&request.query);
        }
        let content_type = request.content_type.clone().unwrap_or(HeaderValue::from_static("application/json"));
        if let Some(body) = &request.body {
            builder = builder.header(CONTENT_TYPE, content_type).body(body.clone());
        } else if let Some(path) = &request.file_body {
            let file = tokio::fs::File::open(path).await.map_err(|e| {
                with_token(Error::InvalidInput(format!(
                    "cannot read the body of {context} from {}: {e}",
                    path.display()
                )))
            })?;
            let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
            builder = builder
                .header(CONTENT_TYPE, content_type)
                .header(reqwest::header::CONTENT_LENGTH, len)
                .body(reqwest::Body::wrap_stream(file_chunks(file)));
        }

        let started = Instant::now();
        let mut response = builder.send().await.map_err(|source| {
            with_token(Error::Transport {
                context: context.clone(),
                may_have_reached_server: !(source.is_connect() || source.is_builder()),
                source,
            })
        })?;
        let status = response.status();
        if request.authenticated {
            self.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        if let Some(value) = response.headers().get(LIMIT_INFO_HEADER).and_then(|v| v.to_str().ok()) {
            self.usage.record_header(value);
        }
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);

        if streaming && status.as_u16() < 400 {
            return Ok(Received::Streaming(response));
        }
        let limit = self.config.max_response_bytes;
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > limit {
                        return Err(with_token(Error::BodyTooLarge { context: context.clone(), limit, status }));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(source) => {
                    return Err(with_token(Error::Transport {
                        context: context.clone(),
                        may_have_reached_server: true,
                        source,
                    }));
                }
            }
        }
        tracing::debug!(
            call = %context,
            status = status.as_u16(),
            bytes = body.len(),
            elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            "Salesforce call finished."
        );

        if status.as_u16() < 400 {
            return Ok(Received::Full(RawResponse { status, body: Bytes::from(body) }));
        }
        let error = match decode_error_array(&body) {
            Some(details) => Error::from(ApiError::from_details(status, details, context.clone())),
            None => Error::UnexpectedResponse { context: context.clone(), status, snippet: snippet(&body) },
        };
        Err(Failure { error, token: Some(token), retry_after })
    }
}

/// A file as a stream of 64 KiB chunks, for a request body that is never all in memory.
fn file_chunks(file: tokio::fs::File) -> impl futures_util::Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    use tokio::io::AsyncReadExt;
    futures_util::stream::try_unfold(file, |mut file| async move {
        let mut buf = vec![0u8; 64 * 1024];
        let n = file.read(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.truncate(n);
        Ok(Some((Bytes::from(buf), file)))
    })
}

/// Decodes a success body, keeping the start of the body in the error for diagnosis.
pub(crate) fn decode_json<T: DeserializeOwned>(context: &RequestContext, body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|source| Error::Decode {
        context: context.clone(),
        source,
        snippet: snippet(body),
    })
}

/// Percent-encodes one URL path segment (record IDs, external ID values).
///
/// Everything but ASCII letters, digits, `-`, `_` and `~` is encoded; `.` too, because
/// Salesforce may read a value ending in `.json`/`.xml`-like suffixes as a format extension.
pub(crate) fn encode_segment(segment: &str) -> String {
    use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
    const SEGMENT: &percent_encoding::AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'~');
    utf8_percent_encode(segment, SEGMENT).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_external_id_values() {
        assert_eq!(encode_segment("a@b.inc"), "a%40b%2Einc");
        assert_eq!(encode_segment("x/../y?z#w"), "x%2F%2E%2E%2Fy%3Fz%23w");
        assert_eq!(encode_segment("with space+plus"), "with%20space%2Bplus");
        assert_eq!(encode_segment("ümlaut"), "%C3%BCmlaut");
        assert_eq!(encode_segment("Plain-ID_1~"), "Plain-ID_1~");
    }
}
