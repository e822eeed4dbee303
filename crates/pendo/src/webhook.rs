//! Pendo webhook payloads and signature verification. Pendo documents no signature scheme; a
//! receiver configured with a secret expects `HMAC-SHA256(secret, raw body)` in hex (optionally
//! `sha256=`-prefixed) and should de-duplicate on `uniqueId` either way.

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::Sha256;

use crate::error::{Error, Result};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Nps {
    pub rating: i64,
    #[serde(default)]
    pub reason: String,
    /// `web` or `email`.
    #[serde(default)]
    pub source: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Properties {
    #[serde(default)]
    pub guide_id: Option<String>,
    #[serde(default)]
    pub guide_step_id: Option<String>,
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default)]
    pub nps: Option<Nps>,
    #[serde(default)]
    pub poll_id: Option<String>,
    #[serde(default)]
    pub poll_response: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEvent {
    pub event: String,
    #[serde(default)]
    pub visitor_id: Option<String>,
    #[serde(default)]
    pub account_id: Option<String>,
    /// Seconds since the epoch (unlike the REST API's milliseconds).
    pub timestamp: i64,
    /// 40-hex id; the de-duplication key.
    pub unique_id: String,
    #[serde(default)]
    pub properties: Properties,
    #[serde(default)]
    pub app: Option<Value>,
    #[serde(default)]
    pub subscription: Option<Value>,
    #[serde(default)]
    pub user_agent: Option<String>,
}

/// Event names with known payloads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EventKind {
    NpsSubmitted,
    NpsDisplayed,
    PollSubmitted,
    PollDisplayed,
    GuideDisplayed,
    VisitorFirstSeen,
    AccountFirstSeen,
    Other(String),
}

impl WebhookEvent {
    /// Parses a raw body.
    ///
    /// # Errors
    /// [`Error::Decode`] when the body is not a webhook event.
    pub fn parse(body: &[u8]) -> Result<Self> {
        serde_json::from_slice(body).map_err(|source| Error::Decode {
            endpoint: "webhook".into(),
            snippet: String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
            source,
        })
    }

    pub fn kind(&self) -> EventKind {
        match self.event.as_str() {
            "npsSubmitted" => EventKind::NpsSubmitted,
            "npsDisplayed" => EventKind::NpsDisplayed,
            "pollSubmitted" => EventKind::PollSubmitted,
            "pollDisplayed" => EventKind::PollDisplayed,
            "guideDisplayed" => EventKind::GuideDisplayed,
            "visitorFirstSeen" | "visitorCreated" => EventKind::VisitorFirstSeen,
            "accountFirstSeen" | "accountCreated" => EventKind::AccountFirstSeen,
            other => EventKind::Other(other.to_string()),
        }
    }

    pub fn time_ms(&self) -> i64 {
        self.timestamp.saturating_mul(1000)
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok())).collect()
}

/// Checks `signature` (hex, optionally `sha256=`-prefixed) against HMAC-SHA256 of `body`, in
/// constant time.
pub fn verify_signature(secret: &[u8], body: &[u8], signature: &str) -> bool {
    let sig = signature.trim();
    let sig = sig.strip_prefix("sha256=").unwrap_or(sig);
    let Some(expected) = unhex(sig) else { return false };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else { return false };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// Hex HMAC-SHA256, for tests and for signing replays.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else { return String::new() };
    mac.update(body);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_and_rejects() {
        let body = br#"{"event":"npsSubmitted"}"#;
        let sig = sign(b"k", body);
        assert!(verify_signature(b"k", body, &sig));
        assert!(verify_signature(b"k", body, &format!("sha256={sig}")));
        assert!(!verify_signature(b"k2", body, &sig));
        assert!(!verify_signature(b"k", b"other", &sig));
        assert!(!verify_signature(b"k", body, "zz"));
    }

    #[test]
    fn parses_the_documented_example() {
        let body = br#"{"app":{"id":-323232,"name":"my_app","platform":"web"},"subscription":{"id":4802463602049999,"name":"my_app"},
          "visitorId":"v-123","accountId":"acme","userAgent":"Mozilla/5.0","event":"npsSubmitted",
          "properties":{"guideId":"g","guideStepId":"s","language":"en-US","guideProperties":{"id":"g"},
          "nps":{"rating":9,"reason":"Keep up the great work!","source":"web"}},
          "timestamp":1626804431,"uniqueId":"ccb0f95474ae8b630ede92f8f8dbac03cddfc1c3"}"#;
        let e = WebhookEvent::parse(body).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(e.kind(), EventKind::NpsSubmitted);
        assert_eq!(e.properties.nps.as_ref().map(|n| n.rating), Some(9));
        assert_eq!(e.time_ms(), 1_626_804_431_000);
        assert!(e.properties.extra.contains_key("guideProperties"));
    }
}
