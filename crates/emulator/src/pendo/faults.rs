//! Injected failures and throttling. Fault rules (set by `PUT /__emulator/faults`) make matching
//! requests fail with a chosen status, body and delay, a given number of times; the throttle is a
//! token bucket per integration key and endpoint that answers 429 "Too Many Requests" — the exact
//! reason phrase tap-pendo looks for.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultRule {
    /// Only requests with this method (any when absent).
    #[serde(default)]
    pub method: Option<String>,
    /// Requests whose path starts with this.
    #[serde(default = "default_prefix")]
    pub path_prefix: String,
    /// Status to answer with; 0 means "only delay, then serve normally".
    #[serde(default)]
    pub status: u16,
    #[serde(default)]
    pub body: Option<String>,
    /// How many requests this rule hits before it expires (forever when absent).
    #[serde(default)]
    pub times: Option<u32>,
    #[serde(default)]
    pub delay_ms: u64,
    /// With `status` 0: serve the request, but break the connection off after this many bytes
    /// of the body (a network that fails mid-response).
    #[serde(default)]
    pub cut_after_bytes: Option<u64>,
}

fn default_prefix() -> String {
    "/api/v1/".to_string()
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    /// Sustained requests per second per integration key and endpoint.
    pub per_second: f64,
    /// Bucket size; defaults to `per_second`.
    #[serde(default)]
    pub burst: Option<f64>,
    /// When set, 429s carry `Retry-After: <secs>` (whether Pendo sends one is unknown).
    #[serde(default)]
    pub retry_after_secs: Option<u64>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FaultConfig {
    #[serde(default)]
    pub rules: Vec<FaultRule>,
    /// `null` disables throttling.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
}

#[derive(Debug, Default)]
pub struct Faults {
    config: Mutex<FaultConfig>,
    buckets: Mutex<HashMap<(String, String), (f64, Instant)>>,
}

/// What the fault layer decided for one request.
pub enum Decision {
    /// Serve, after `delay`; with `cut`, only that many bytes of the body.
    Pass {
        delay: Duration,
        cut: Option<u64>,
    },
    Fail {
        status: u16,
        body: Option<String>,
        delay: Duration,
    },
    Throttle {
        retry_after_secs: Option<u64>,
    },
}

impl Faults {
    pub fn new(config: FaultConfig) -> Self {
        Faults { config: Mutex::new(config), buckets: Mutex::default() }
    }

    pub fn config(&self) -> FaultConfig {
        self.config.lock().clone()
    }

    pub fn set(&self, config: FaultConfig) {
        *self.config.lock() = config;
        self.buckets.lock().clear();
    }

    /// Applies the first matching rule (consuming one of its `times`).
    pub fn check_rules(&self, method: &str, path: &str) -> Decision {
        let mut cfg = self.config.lock();
        let mut hit = None;
        for (i, r) in cfg.rules.iter().enumerate() {
            let method_ok = r.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method));
            if method_ok && path.starts_with(&r.path_prefix) && r.times != Some(0) {
                hit = Some(i);
                break;
            }
        }
        let Some(i) = hit else {
            return Decision::Pass { delay: Duration::ZERO, cut: None };
        };
        let rule = &mut cfg.rules[i];
        if let Some(t) = rule.times.as_mut() {
            *t -= 1;
        }
        let delay = Duration::from_millis(rule.delay_ms);
        let decision = if rule.status == 0 {
            Decision::Pass { delay, cut: rule.cut_after_bytes }
        } else {
            Decision::Fail { status: rule.status, body: rule.body.clone(), delay }
        };
        cfg.rules.retain(|r| r.times != Some(0));
        decision
    }

    /// Token bucket per (key, endpoint).
    pub fn check_throttle(&self, key: &str, endpoint: &str) -> Option<Decision> {
        let limit = self.config.lock().rate_limit?;
        if limit.per_second <= 0.0 {
            return None;
        }
        let burst = limit.burst.unwrap_or(limit.per_second).max(1.0);
        let now = Instant::now();
        let mut buckets = self.buckets.lock();
        let (tokens, at) = buckets.entry((key.to_string(), endpoint.to_string())).or_insert((burst, now));
        let refill = now.duration_since(*at).as_secs_f64() * limit.per_second;
        *tokens = (*tokens + refill).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            None
        } else {
            Some(Decision::Throttle { retry_after_secs: limit.retry_after_secs })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rule_expires_after_times() {
        let f = Faults::new(FaultConfig {
            rules: vec![FaultRule {
                method: Some("POST".into()),
                path_prefix: "/api/v1/aggregation".into(),
                status: 503,
                body: None,
                times: Some(2),
                delay_ms: 0,
                cut_after_bytes: None,
            }],
            rate_limit: None,
        });
        for _ in 0..2 {
            assert!(matches!(f.check_rules("POST", "/api/v1/aggregation"), Decision::Fail { status: 503, .. }));
        }
        assert!(matches!(f.check_rules("POST", "/api/v1/aggregation"), Decision::Pass { .. }));
    }

    #[test]
    fn throttle_after_burst() {
        let f = Faults::new(FaultConfig {
            rules: vec![],
            rate_limit: Some(RateLimit { per_second: 0.001, burst: Some(2.0), retry_after_secs: None }),
        });
        assert!(f.check_throttle("k", "e").is_none());
        assert!(f.check_throttle("k", "e").is_none());
        assert!(f.check_throttle("k", "e").is_some());
        assert!(f.check_throttle("k", "other").is_none());
    }
}
