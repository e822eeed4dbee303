//! Client configuration: the typed [`ApiVersion`], the request-level [`RetryPolicy`] and
//! [`ClientConfig`] with its documented defaults.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// A REST API version such as `v62.0`.
///
/// Salesforce only ever ships `NN.0` versions, so the major number is the whole identity; the
/// type still prints and parses the familiar `vNN.0` spelling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiVersion(u16);

impl ApiVersion {
    /// v62.0 (Winter '25): new enough for every resource this crate uses (Collections upsert
    /// and `created` on upsert need v46+) and well inside Salesforce's three-year support.
    pub const DEFAULT: Self = Self(62);

    /// Oldest version still served (21.0–30.0 are retired and answer 410).
    pub const MIN_SUPPORTED: Self = Self(31);

    /// Builds a version from its major number (`62` → `v62.0`).
    #[must_use]
    pub const fn new(major: u16) -> Self {
        Self(major)
    }

    /// The major number (`62` for `v62.0`).
    #[must_use]
    pub const fn major(self) -> u16 {
        self.0
    }

    /// The path segment used in URLs, e.g. `v62.0`.
    #[must_use]
    pub fn path_segment(self) -> String {
        format!("v{}.0", self.0)
    }

    /// `/services/data/vNN.0`, without a trailing slash.
    #[must_use]
    pub fn data_root(self) -> String {
        format!("/services/data/v{}.0", self.0)
    }

    /// Whether upserts report `created` and answer 200 (not 204) when they update (v46+).
    #[must_use]
    pub fn upsert_reports_created(self) -> bool {
        self.0 >= 46
    }
}

impl Default for ApiVersion {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "v{}.0", self.0)
    }
}

impl FromStr for ApiVersion {
    type Err = Error;

    /// Accepts `v62.0`, `62.0` and `62`.
    fn from_str(s: &str) -> Result<Self> {
        let trimmed = s.trim();
        let body = trimmed.strip_prefix(['v', 'V']).unwrap_or(trimmed);
        let major = body.strip_suffix(".0").unwrap_or(body);
        major
            .parse::<u16>()
            .ok()
            .filter(|m| *m > 0)
            .map(Self)
            .ok_or_else(|| Error::InvalidInput(format!("{s:?} is not an API version like v62.0")))
    }
}

impl Serialize for ApiVersion {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ApiVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        raw.parse().map_err(serde::de::Error::custom)
    }
}

/// How a request is retried after a transient failure.
///
/// Delays grow `initial_backoff × multiplier^(n-1)`, capped at `max_backoff`; with `jitter` each
/// delay is drawn uniformly from its upper half so that many workers hitting the same lock or
/// outage do not retry in lock-step.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Total attempts including the first; 1 disables retries.
    pub max_attempts: u32,
    /// Delay before the first retry.
    pub initial_backoff: Duration,
    /// Upper bound for any single delay, including a server's `Retry-After`.
    pub max_backoff: Duration,
    /// Growth factor between consecutive delays.
    pub multiplier: f64,
    /// Randomise each delay within its upper half.
    pub jitter: bool,
}

impl RetryPolicy {
    /// Default total attempts per request.
    pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

    /// A policy that never retries (token refresh on 401 still happens once).
    #[must_use]
    pub fn none() -> Self {
        Self { max_attempts: 1, ..Self::default() }
    }

    /// The un-jittered delay before retry number `retry` (1-based).
    #[must_use]
    pub fn base_delay(&self, retry: u32) -> Duration {
        let exp = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
        let factor = self.multiplier.max(1.0).powi(exp);
        let secs = self.initial_backoff.as_secs_f64() * factor;
        let capped = secs.min(self.max_backoff.as_secs_f64());
        Duration::try_from_secs_f64(capped).unwrap_or(self.max_backoff)
    }

    /// The delay to sleep before retry number `retry`, with jitter applied when enabled.
    #[must_use]
    pub fn delay(&self, retry: u32) -> Duration {
        let base = self.base_delay(retry);
        if !self.jitter || base.is_zero() {
            return base;
        }
        let half = base / 2;
        let spread = u64::try_from(half.as_nanos()).unwrap_or(u64::MAX);
        half + Duration::from_nanos(rand::random_range(0..=spread))
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: Self::DEFAULT_MAX_ATTEMPTS,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: true,
        }
    }
}

/// Settings for a [`crate::Client`]. Authentication lives in the token source, not here.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// REST API version used in every data URL.
    pub api_version: ApiVersion,
    /// Sent as `Sforce-Call-Options: client=<name>`; Salesforce copies it into CDC
    /// `changeOrigin`, which is how our own writes are recognised and not echoed back.
    pub client_name: String,
    /// Request-level retries for transient failures.
    pub retry: RetryPolicy,
    /// Whole-request timeout (connect, send and read the body).
    pub request_timeout: Duration,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Largest (decompressed) response body read; bigger bodies fail instead of exhausting
    /// memory. A 2,000-record query page of wide rows stays well under the default.
    pub max_response_bytes: usize,
    /// Optional `Sforce-Query-Options: batchSize` default for queries (200–2,000).
    pub query_batch_size: Option<u16>,
}

impl ClientConfig {
    /// Default `Sforce-Call-Options` client name.
    pub const DEFAULT_CLIENT_NAME: &'static str = "usagesync";
    /// Default response body cap: 64 MiB.
    pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

    /// Checks settings that would otherwise fail on the first request.
    ///
    /// # Errors
    /// [`Error::InvalidInput`] if the client name would break the `Sforce-Call-Options` header,
    /// the batch size is outside 200–2,000, or max attempts is zero.
    pub fn validate(&self) -> Result<()> {
        let name_ok = !self.client_name.is_empty()
            && self.client_name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
        if !name_ok {
            return Err(Error::InvalidInput(format!(
                "client name {:?} must be non-empty ASCII letters, digits, '_', '-' or '.'",
                self.client_name
            )));
        }
        if let Some(size) = self.query_batch_size
            && !(200..=2000).contains(&size)
        {
            return Err(Error::InvalidInput(format!("query batch size {size} is outside Salesforce's 200..=2000")));
        }
        if self.retry.max_attempts == 0 {
            return Err(Error::InvalidInput("retry.max_attempts must be at least 1".into()));
        }
        Ok(())
    }
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            api_version: ApiVersion::DEFAULT,
            client_name: Self::DEFAULT_CLIENT_NAME.to_owned(),
            retry: RetryPolicy::default(),
            request_timeout: Duration::from_secs(120),
            connect_timeout: Duration::from_secs(10),
            max_response_bytes: Self::DEFAULT_MAX_RESPONSE_BYTES,
            query_batch_size: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_version_parses_common_spellings() {
        for s in ["v62.0", "62.0", "62", " V62.0 "] {
            assert_eq!(s.parse::<ApiVersion>().unwrap(), ApiVersion::new(62), "{s}");
        }
        assert!("v62.5".parse::<ApiVersion>().is_err());
        assert!("latest".parse::<ApiVersion>().is_err());
        assert!("0".parse::<ApiVersion>().is_err());
        assert_eq!(ApiVersion::DEFAULT.to_string(), "v62.0");
        assert_eq!(ApiVersion::new(60).data_root(), "/services/data/v60.0");
        assert!(!ApiVersion::new(45).upsert_reports_created());
        assert!(ApiVersion::new(46).upsert_reports_created());
    }

    #[test]
    fn backoff_grows_and_caps() {
        let p = RetryPolicy {
            jitter: false,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_millis(350),
            ..RetryPolicy::default()
        };
        assert_eq!(p.delay(1), Duration::from_millis(100));
        assert_eq!(p.delay(2), Duration::from_millis(200));
        assert_eq!(p.delay(3), Duration::from_millis(350));
        assert_eq!(p.delay(40), Duration::from_millis(350));
    }

    #[test]
    fn jitter_stays_in_upper_half() {
        let p = RetryPolicy::default();
        for retry in 1..6 {
            let base = p.base_delay(retry);
            for _ in 0..50 {
                let d = p.delay(retry);
                assert!(d >= base / 2 && d <= base, "{d:?} vs {base:?}");
            }
        }
    }

    #[test]
    fn config_validation() {
        assert!(ClientConfig::default().validate().is_ok());
        let bad_name = ClientConfig { client_name: "a, b".into(), ..ClientConfig::default() };
        assert!(bad_name.validate().is_err());
        let bad_batch = ClientConfig { query_batch_size: Some(100), ..ClientConfig::default() };
        assert!(bad_batch.validate().is_err());
    }
}
