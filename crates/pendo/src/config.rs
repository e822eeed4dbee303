//! Client configuration: where the API is, the integration key, timeouts and the retry policy.

use std::fmt;
use std::time::Duration;

use url::Url;

use crate::error::{Error, Result};

/// US (default) API host. Region hosts follow the key's suffix, as tap-pendo and Pendo's own
/// Zendesk app do.
pub const US_BASE_URL: &str = "https://app.pendo.io";

/// The integration key; `Debug` never prints it.
#[derive(Clone)]
pub struct IntegrationKey(String);

impl IntegrationKey {
    pub fn new(key: impl Into<String>) -> Self {
        IntegrationKey(key.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for IntegrationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("IntegrationKey(***)")
    }
}

/// Request-level retries for 429, 408 and 5xx answers and transport failures.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Total tries including the first.
    pub max_attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
    /// A `Retry-After` longer than this is capped to it.
    pub max_retry_after: Duration,
    /// Randomise each backoff between half and all of its value.
    pub jitter: bool,
    /// A throttled request (429) is retried, without counting against `max_attempts`, until
    /// it has been throttled this long: throttling delays work, it does not fail it.
    pub max_throttled_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_retry_after: Duration::from_secs(120),
            jitter: true,
            max_throttled_wait: Duration::from_secs(600),
        }
    }
}

impl RetryPolicy {
    /// Backoff before retry number `retry` (1-based).
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = self.initial_backoff.saturating_mul(1u32 << retry.saturating_sub(1).min(16));
        let d = exp.min(self.max_backoff);
        if self.jitter {
            use rand::RngExt;
            d.mul_f64(rand::rng().random_range(0.5..=1.0))
        } else {
            d
        }
    }
}

#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Scheme and host, e.g. `https://app.pendo.io`; `/api/v1` is appended by the client.
    pub base_url: Url,
    pub integration_key: IntegrationKey,
    /// Per-request timeout (aggregations over large windows are slow on the real service).
    pub timeout: Duration,
    pub retry: RetryPolicy,
    /// Responses larger than this are refused rather than buffered.
    pub max_response_bytes: usize,
    pub user_agent: String,
}

impl ClientConfig {
    /// # Errors
    /// [`Error::Config`] if `base_url` is not an absolute http(s) URL.
    pub fn new(base_url: &str, key: impl Into<String>) -> Result<Self> {
        let base_url = Url::parse(base_url).map_err(|e| Error::Config(format!("base URL {base_url:?}: {e}")))?;
        if !matches!(base_url.scheme(), "http" | "https") {
            return Err(Error::Config(format!("base URL must be http(s), got {}", base_url.scheme())));
        }
        Ok(ClientConfig {
            base_url,
            integration_key: IntegrationKey::new(key),
            timeout: Duration::from_secs(300),
            retry: RetryPolicy::default(),
            max_response_bytes: 1 << 30,
            user_agent: format!("usagesync-pendo/{}", env!("CARGO_PKG_VERSION")),
        })
    }

    /// The region host for a key: `….eu` → `app.eu.pendo.io`, `….us1` → `us1.app.pendo.io`,
    /// `….jpn`/`….au` likewise, anything else US.
    pub fn region_base_url(key: &str) -> &'static str {
        match key.rsplit_once('.').map(|(_, s)| s) {
            Some("eu") => "https://app.eu.pendo.io",
            Some("us1") => "https://us1.app.pendo.io",
            Some("jpn") => "https://app.jpn.pendo.io",
            Some("au") => "https://app.au.pendo.io",
            _ => US_BASE_URL,
        }
    }

    /// A config for the real service, host chosen from the key's region suffix.
    ///
    /// # Errors
    /// Never in practice; the hosts are constants.
    pub fn for_key(key: impl Into<String>) -> Result<Self> {
        let key = key.into();
        Self::new(Self::region_base_url(&key), key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions() {
        assert_eq!(ClientConfig::region_base_url("abc.eu"), "https://app.eu.pendo.io");
        assert_eq!(ClientConfig::region_base_url("abc.us"), US_BASE_URL);
        assert_eq!(ClientConfig::region_base_url("abc"), US_BASE_URL);
        assert!(format!("{:?}", IntegrationKey::new("secret")).contains("***"));
    }

    #[test]
    fn backoff_grows_and_caps() {
        let p = RetryPolicy { jitter: false, ..RetryPolicy::default() };
        assert_eq!(p.backoff(1), Duration::from_millis(500));
        assert_eq!(p.backoff(2), Duration::from_secs(1));
        assert_eq!(p.backoff(30), Duration::from_secs(30));
    }
}
