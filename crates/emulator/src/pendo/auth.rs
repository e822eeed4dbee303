//! The request path around the Pendo API: integration-key check (403), injected faults,
//! throttling (429 "Too Many Requests"), API-call accounting and error-body formatting.

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::faults::Decision;
use super::{ErrorFormat, ErrorMessage, PendoState};

pub const KEY_HEADER: &str = "x-pendo-integration-key";

/// Region suffixes seen on real keys; clients send keys with and without them.
const REGION_SUFFIXES: &[&str] = &[".us", ".eu", ".us1", ".jpn", ".au"];

/// The authenticated caller, for handlers that need write access.
#[derive(Clone, Debug)]
pub struct Caller {
    pub key: String,
    pub write: bool,
}

fn strip_region(key: &str) -> &str {
    REGION_SUFFIXES.iter().find_map(|s| key.strip_suffix(s)).unwrap_or(key)
}

/// Looks the presented key up, ignoring a region suffix on either side.
pub fn authenticate(state: &PendoState, presented: &str) -> Option<Caller> {
    let presented = strip_region(presented.trim());
    let cfg = state.inner.config.read();
    cfg.integration_keys
        .iter()
        .find(|k| strip_region(&k.key) == presented)
        .map(|k| Caller { key: k.key.clone(), write: k.write })
}

fn endpoint_of(req: &Request) -> String {
    let path = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| req.uri().path().to_string());
    format!("{} {}", req.method(), path)
}

/// Route layer on `/api/v1`: faults first (they model the service misbehaving before it looks at
/// the request), then the key, then the throttle.
pub async fn guard(State(state): State<PendoState>, mut req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let mut cut = None;
    match state.inner.faults.check_rules(&method, &path) {
        Decision::Pass { delay, cut: c } => {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            cut = c;
        }
        Decision::Fail { status, body, delay } => {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let body = body.unwrap_or_else(|| format!("{}\n", status.canonical_reason().unwrap_or("error")));
            return (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response();
        }
        Decision::Throttle { .. } => {}
    }

    let presented = req.headers().get(KEY_HEADER).and_then(|v| v.to_str().ok()).map(str::to_string);
    let Some(caller) = presented.as_deref().and_then(|k| authenticate(&state, k)) else {
        return super::ApiError::forbidden("invalid integration key").into_response();
    };

    let endpoint = endpoint_of(&req);
    if let Some(Decision::Throttle { retry_after_secs }) = state.inner.faults.check_throttle(&caller.key, &endpoint) {
        // hyper writes the canonical reason phrase "Too Many Requests" for 429 on HTTP/1.1,
        // which is what tap-pendo matches on.
        let mut r = (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "Too Many Requests\n",
        )
            .into_response();
        if let Some(secs) = retry_after_secs {
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        return r;
    }
    req.extensions_mut().insert(caller);
    let resp = next.run(req).await;
    match cut {
        Some(bytes) => cut_body(resp, bytes),
        None => resp,
    }
}

/// The response with its body broken off after `bytes` bytes: the headers (a `Content-Length`
/// included) go out as they are, then the connection fails mid-body. A body no longer than that
/// goes out whole.
fn cut_body(resp: Response, bytes: u64) -> Response {
    use futures_util::StreamExt as _;
    enum Cut {
        Sending(u64),
        Failing,
        Done,
    }
    let (parts, body) = resp.into_parts();
    let cut = || std::io::Error::other("body cut by fault injection");
    // A cut at 0 fails before the first byte.
    let first = if bytes == 0 { Cut::Failing } else { Cut::Sending(bytes) };
    let stream = futures_util::stream::unfold((body.into_data_stream(), first), move |(mut s, at)| async move {
        match at {
            Cut::Done => None,
            Cut::Failing => {
                // A moment first, so the bytes before the cut reach the client, as they would
                // before a network failed.
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                Some((Err(cut()), (s, Cut::Done)))
            }
            Cut::Sending(left) => match s.next().await {
                None => None,
                Some(Err(e)) => Some((Err(std::io::Error::other(e)), (s, Cut::Done))),
                Some(Ok(chunk)) => {
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(chunk.len());
                    let next = if take < chunk.len() { Cut::Failing } else { Cut::Sending(left - take as u64) };
                    Some((Ok(chunk.slice(..take)), (s, next)))
                }
            },
        }
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

/// Outer layer: counts every API call by endpoint and status, and renders API errors in the
/// configured format. Admin calls are not counted: they are not part of the emulated service.
pub async fn account_and_format(State(state): State<PendoState>, req: Request, next: Next) -> Response {
    let endpoint = endpoint_of(&req);
    let counted = !req.uri().path().starts_with("/__emulator");
    let mut resp = next.run(req).await;
    if counted {
        state.inner.usage.record(&endpoint, resp.status().as_u16());
    }
    if let Some(ErrorMessage(msg)) = resp.extensions_mut().remove::<ErrorMessage>()
        && state.inner.config.read().error_format == ErrorFormat::Json
    {
        {
            let status = resp.status();
            let body = serde_json::json!({"error": msg, "status": status.as_u16()}).to_string();
            let mut r = Response::new(Body::from(body));
            *r.status_mut() = status;
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json; charset=utf-8"));
            for (k, v) in resp.headers() {
                if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
                    r.headers_mut().insert(k.clone(), v.clone());
                }
            }
            resp = r;
        }
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn region_suffix_is_optional() {
        let s = PendoState::new(Default::default());
        assert!(authenticate(&s, "emulator-integration-key").is_some());
        assert!(authenticate(&s, "emulator-integration-key.eu").is_some());
        assert!(authenticate(&s, "emulator-integration-key.us1").is_some());
        assert!(authenticate(&s, "nope").is_none());
        assert!(authenticate(&s, "emulator-readonly-key").is_some_and(|c| !c.write));
    }
}
