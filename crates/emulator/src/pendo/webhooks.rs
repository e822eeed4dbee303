//! Outbound webhooks: Pendo-shaped event payloads (`npsSubmitted`, `pollSubmitted`,
//! `guideDisplayed`, visitor/account first seen ...) POSTed to a configured URL with an optional
//! HMAC-SHA256 signature header, retried with backoff, each carrying a 40-hex `uniqueId`.
//!
//! Firing an NPS or poll answer also records it as poll events, so polling reconciliation finds
//! exactly what the webhook announced. Delivery speaks plain HTTP/1.1 over a TCP socket: targets
//! are loopback test receivers, and the crate carries no HTTP client of its own.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::{Value as J, json};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::store::{Channel, DEFAULT_APP_ID, GuideEvent, GuideEventType, NONE_U32, Store};
use super::{ApiError, ApiResult, PendoState};

/// A header name for the signature; Pendo documents none, so this is a default, not a fact.
pub const DEFAULT_SIGNATURE_HEADER: &str = "X-Pendo-Signature";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// When set, deliveries carry `<signatureHeader>: <prefix><hex HMAC-SHA256(secret, body)>`.
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default = "default_header")]
    pub signature_header: String,
    #[serde(default)]
    pub signature_prefix: String,
    /// Event names to deliver; empty means all.
    #[serde(default)]
    pub events: Vec<String>,
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_backoff")]
    pub backoff_ms: u64,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
}

fn default_header() -> String {
    DEFAULT_SIGNATURE_HEADER.into()
}
fn default_attempts() -> u32 {
    5
}
fn default_backoff() -> u64 {
    500
}
fn default_timeout() -> u64 {
    5_000
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    pub unique_id: String,
    pub event: String,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub delivered: bool,
    pub error: Option<String>,
}

#[derive(Debug, Default)]
pub struct Webhooks {
    config: Mutex<Option<WebhookConfig>>,
    log: Arc<Mutex<Vec<Delivery>>>,
    counter: Mutex<u64>,
}

impl Webhooks {
    pub fn set(&self, c: Option<WebhookConfig>) {
        *self.config.lock() = c;
    }
    pub fn config(&self) -> Option<WebhookConfig> {
        self.config.lock().clone()
    }
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.log.lock().clone()
    }
    pub fn clear(&self) {
        self.log.lock().clear();
    }
}

/// Body of `POST /__emulator/webhooks/fire`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FireRequest {
    pub event: String,
    #[serde(default)]
    pub visitor_id: Option<String>,
    #[serde(default)]
    pub account_id: Option<String>,
    /// NPS rating 0..=10 (npsSubmitted).
    #[serde(default)]
    pub rating: Option<i64>,
    #[serde(default)]
    pub reason: Option<String>,
    /// `web` or `email`.
    #[serde(default)]
    pub source: Option<String>,
    #[serde(default)]
    pub guide_id: Option<String>,
    #[serde(default)]
    pub poll_id: Option<String>,
    /// pollSubmitted answer.
    #[serde(default)]
    pub response: Option<J>,
    /// Epoch ms of the event (defaults to the emulator clock).
    #[serde(default)]
    pub time: Option<i64>,
    /// Reuse a uniqueId, to exercise de-duplication.
    #[serde(default)]
    pub unique_id: Option<String>,
    /// Deliver the same payload this many times (default 1).
    #[serde(default)]
    pub repeat: Option<u32>,
}

pub fn hex(bytes: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(H[(b >> 4) as usize] as char);
        s.push(H[(b & 15) as usize] as char);
    }
    s
}

/// Lower-case hex HMAC-SHA256 of `body` under `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(mut mac) => {
            mac.update(body);
            hex(&mac.finalize().into_bytes())
        }
        // HMAC accepts keys of any length; this arm is unreachable in practice.
        Err(_) => String::new(),
    }
}

fn canonical_event(e: &str) -> Option<&'static str> {
    Some(match e {
        "npsSubmitted" => "npsSubmitted",
        "npsDisplayed" => "npsDisplayed",
        "pollSubmitted" => "pollSubmitted",
        "pollDisplayed" => "pollDisplayed",
        "guideDisplayed" => "guideDisplayed",
        "visitorFirstSeen" | "visitorCreated" => "visitorFirstSeen",
        "accountFirstSeen" | "accountCreated" => "accountFirstSeen",
        _ => return None,
    })
}

fn guide_props(store: &Store, g: usize) -> J {
    let Some(guide) = store.guides.get(g) else {
        return J::Null;
    };
    let d = &guide.doc;
    json!({
        "id": guide.id.as_ref(),
        "name": d.field("name").to_json(),
        "createdAt": d.field("createdAt").to_json(),
        "lastUpdatedAt": d.field("lastUpdatedAt").to_json(),
        "createdByUser": {"username": d.path("createdByUser.username").to_json()},
        "lastUpdatedByUser": {"username": d.path("lastUpdatedByUser.username").to_json()},
        "steps": d.field("steps").to_json().as_array().map(|steps| steps.iter().map(|s| json!({
            "id": s.get("id"), "lastUpdatedAt": s.get("lastUpdatedAt"), "resetAt": s.get("resetAt"), "type": ""
        })).collect::<Vec<_>>()).unwrap_or_default(),
    })
}

fn nps_guide(store: &Store) -> Option<usize> {
    store.guides.iter().position(|g| g.doc.field("polls").at(0).path("attributes.type").as_str() == Some("NPSRating"))
}

fn ensure_entities(store: &mut Store, visitor: &str, account: &str, now: i64) -> (u32, u32) {
    if store.account(account).is_none() {
        store.upsert_account(super::metadata::new_account(account, now));
    }
    if store.visitor(visitor).is_none() {
        let mut v = super::metadata::new_visitor(visitor, now);
        if let super::val::Val::Obj(o) = v.metadata_mut() {
            let o = Arc::make_mut(o);
            super::val::Val::set_path(o, "auto.accountid", super::val::Val::str(account));
            super::val::Val::set_path(o, "auto.accountids", super::val::Val::arr(vec![super::val::Val::str(account)]));
        }
        store.upsert_visitor(v);
    }
    (
        store.visitor_index.get(visitor).copied().unwrap_or(NONE_U32),
        store.account_index.get(account).copied().unwrap_or(NONE_U32),
    )
}

/// Builds the payload, applies the event to the data, and starts delivery.
///
/// # Errors
/// 400 for unknown events or missing fields; 409 when no webhook target is configured.
pub fn fire(state: &PendoState, req: FireRequest) -> ApiResult<J> {
    let event = canonical_event(&req.event)
        .ok_or_else(|| ApiError::bad_request(format!("unknown webhook event {:?}", req.event)))?;
    let config = state.inner.webhooks.config().ok_or_else(|| {
        ApiError::new(axum::http::StatusCode::CONFLICT, "no webhook target configured (PUT /__emulator/webhooks)")
    })?;
    let now = req.time.unwrap_or_else(|| state.now_ms());
    let visitor = req.visitor_id.clone().unwrap_or_default();
    let account = req.account_id.clone().unwrap_or_default();
    let needs_visitor = event != "accountFirstSeen";
    if needs_visitor && visitor.is_empty() {
        return Err(ApiError::bad_request("visitorId is required"));
    }
    if account.is_empty() {
        return Err(ApiError::bad_request("accountId is required"));
    }
    let mut properties = serde_json::Map::new();
    {
        let mut store = state.inner.store.write();
        let (vi, ai) = if needs_visitor {
            ensure_entities(&mut store, &visitor, &account, now)
        } else {
            if store.account(&account).is_none() {
                store.upsert_account(super::metadata::new_account(&account, now));
            }
            (NONE_U32, store.account_index.get(account.as_str()).copied().unwrap_or(NONE_U32))
        };
        let channel = if req.source.as_deref() == Some("email") { Channel::Email } else { Channel::Web };
        let guide = match &req.guide_id {
            Some(g) => {
                Some(store.guide_index(g).ok_or_else(|| ApiError::bad_request(format!("unknown guide {g}")))? as usize)
            }
            None => match event {
                "npsSubmitted" | "npsDisplayed" => nps_guide(&store),
                "pollSubmitted" | "pollDisplayed" => store.guides.iter().position(|g| {
                    !g.poll_ids.is_empty()
                        && Some(g.id.as_ref())
                            != nps_guide(&store).and_then(|n| store.guides.get(n)).map(|x| x.id.as_ref())
                }),
                "guideDisplayed" => (!store.guides.is_empty()).then_some(0),
                _ => None,
            },
        };
        if let Some(g) = guide {
            let gd = &store.guides[g];
            properties.insert("guideId".into(), json!(gd.id.as_ref()));
            properties.insert("guideStepId".into(), json!(gd.step_ids.first().map(|s| s.as_ref())));
            properties.insert("language".into(), json!("en-US"));
            properties.insert("guideProperties".into(), guide_props(&store, g));
        }
        let push = |store: &mut Store, poll: u32, response: super::val::Val, ts: i64| {
            if let Some(g) = guide {
                store.guide_events.push(GuideEvent {
                    ts,
                    visitor: vi,
                    account: ai,
                    guide: g as u32,
                    step: 0,
                    kind: GuideEventType::PollResponse,
                    poll,
                    response: store.responses.intern(response),
                    channel,
                });
            }
        };
        match event {
            "npsSubmitted" => {
                let rating = req.rating.ok_or_else(|| ApiError::bad_request("rating is required for npsSubmitted"))?;
                if !(0..=10).contains(&rating) {
                    return Err(ApiError::bad_request("rating must be 0..=10"));
                }
                let reason = req.reason.clone().unwrap_or_default();
                properties
                    .insert("nps".into(), json!({"rating": rating, "reason": reason, "source": channel.as_str()}));
                push(&mut store, 0, super::val::Val::Int(rating), now);
                push(&mut store, 1, super::val::Val::from(reason), now.saturating_add(50));
            }
            "pollSubmitted" => {
                let response = req
                    .response
                    .clone()
                    .ok_or_else(|| ApiError::bad_request("response is required for pollSubmitted"))?;
                let poll_idx = match (&req.poll_id, guide) {
                    (Some(p), Some(g)) => store.guides[g]
                        .poll_ids
                        .iter()
                        .position(|x| **x == **p)
                        .ok_or_else(|| ApiError::bad_request(format!("unknown poll {p}")))?
                        as u32,
                    _ => 0,
                };
                let poll_id =
                    guide.and_then(|g| store.guides[g].poll_ids.get(poll_idx as usize).map(|p| p.to_string()));
                properties.insert("pollId".into(), json!(poll_id));
                properties.insert("pollResponse".into(), response.clone());
                push(&mut store, poll_idx, super::val::Val::from(&response), now);
            }
            _ => {}
        }
        store.sort_events();
    }
    if !config.events.is_empty() && !config.events.iter().any(|e| canonical_event(e) == Some(event)) {
        return Ok(json!({"delivered": false, "reason": "event not subscribed"}));
    }
    let unique_id = req.unique_id.clone().unwrap_or_else(|| {
        let mut n = state.inner.webhooks.counter.lock();
        *n += 1;
        let mut h = Sha256::new();
        h.update(format!("{event}|{visitor}|{account}|{now}|{n}").as_bytes());
        hex(&h.finalize())[..40].to_string()
    });
    let mut payload = json!({
        "app": {"id": DEFAULT_APP_ID, "name": "Emulated App", "platform": "web"},
        "subscription": {"id": 4_802_463_602_049_999i64, "name": "Emulated Subscription"},
        "visitorId": visitor,
        "accountId": account,
        "userAgent": "Mozilla/5.0 (emulator)",
        "event": event,
        "properties": J::Object(properties),
        "timestamp": now / 1000,
        "uniqueId": unique_id,
    });
    if !needs_visitor && let Some(o) = payload.as_object_mut() {
        o.remove("visitorId");
    }
    let body = serde_json::to_vec(&payload).map_err(|e| ApiError::bad_request(e.to_string()))?;
    for _ in 0..req.repeat.unwrap_or(1).clamp(1, 20) {
        spawn_delivery(state.clone(), config.clone(), event.to_string(), unique_id.clone(), body.clone());
    }
    Ok(json!({"uniqueId": unique_id, "payload": payload}))
}

fn spawn_delivery(state: PendoState, config: WebhookConfig, event: String, unique_id: String, body: Vec<u8>) {
    let log = state.inner.webhooks.log.clone();
    let idx = {
        let mut l = log.lock();
        l.push(Delivery { unique_id, event, attempts: 0, last_status: None, delivered: false, error: None });
        l.len() - 1
    };
    tokio::spawn(async move {
        let attempts = config.max_attempts.max(1);
        for attempt in 1..=attempts {
            let res = post_once(&config, &body).await;
            let ok = matches!(res, Ok(s) if (200..300).contains(&s));
            state.inner.usage.webhook(ok);
            if let Some(d) = log.lock().get_mut(idx) {
                d.attempts = attempt;
                match &res {
                    Ok(s) => {
                        d.last_status = Some(*s);
                        d.error = None;
                    }
                    Err(e) => d.error = Some(e.clone()),
                }
                d.delivered = ok;
            }
            if ok {
                return;
            }
            if attempt < attempts {
                let backoff = config.backoff_ms.saturating_mul(1u64 << (attempt - 1).min(10));
                tokio::time::sleep(Duration::from_millis(backoff)).await;
            }
        }
    });
}

/// One POST over HTTP/1.1; returns the status code.
async fn post_once(config: &WebhookConfig, body: &[u8]) -> Result<u16, String> {
    let url = url::Url::parse(&config.url).map_err(|e| format!("bad webhook url: {e}"))?;
    if url.scheme() != "http" {
        return Err("only http:// webhook targets are supported by the emulator".into());
    }
    let host = url.host_str().ok_or("webhook url has no host")?.to_string();
    let port = url.port_or_known_default().unwrap_or(80);
    let mut path = url.path().to_string();
    if let Some(q) = url.query() {
        path.push('?');
        path.push_str(q);
    }
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nUser-Agent: pendo-emulator-webhooks\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(secret) = &config.secret {
        head.push_str(&format!("{}: {}{}\r\n", config.signature_header, config.signature_prefix, sign(secret, body)));
    }
    head.push_str("\r\n");
    let timeout = Duration::from_millis(config.timeout_ms.max(1));
    let fut = async {
        let mut s = tokio::net::TcpStream::connect((host.as_str(), port)).await.map_err(|e| format!("connect: {e}"))?;
        s.write_all(head.as_bytes()).await.map_err(|e| format!("write: {e}"))?;
        s.write_all(body).await.map_err(|e| format!("write: {e}"))?;
        let mut buf = vec![0u8; 1024];
        let mut got = 0;
        while got < buf.len() {
            let n = s.read(&mut buf[got..]).await.map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                break;
            }
            got += n;
            if buf[..got].windows(2).any(|w| w == b"\r\n") {
                break;
            }
        }
        let line = String::from_utf8_lossy(&buf[..got]);
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse::<u16>().ok())
            .ok_or_else(|| format!("malformed response status line {:?}", line.lines().next().unwrap_or("")))?;
        Ok(status)
    };
    tokio::time::timeout(timeout, fut).await.map_err(|_| "timed out".to_string())?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        assert_eq!(
            sign("Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
