//! API-usage accounting: parsing the `Sforce-Limit-Info` response header, keeping the latest
//! figures ([`UsageTracker`]), and the typed `/limits` resource ([`OrgLimits`]).
//!
//! The header rides on every REST response except Versions, so it is a free, always-fresh view of
//! the daily allocation; `/limits` costs a call but covers every limit. Salesforce updates the
//! header asynchronously, so treat both as approximate.

use std::collections::BTreeMap;
use std::time::SystemTime;

use parking_lot::RwLock;
use reqwest::Method;
use serde::{Deserialize, Serialize};

use crate::Client;
use crate::error::{RequestContext, Result};
use crate::transport::{ApiRequest, Target};

/// Name of the response header carrying API usage.
pub const LIMIT_INFO_HEADER: &str = "Sforce-Limit-Info";

/// `used/max` from `api-usage=N/M`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiUsage {
    /// Calls used in the rolling 24-hour window.
    pub used: u64,
    /// Calls allotted.
    pub max: u64,
}

impl ApiUsage {
    /// Calls left before `REQUEST_LIMIT_EXCEEDED`.
    #[must_use]
    pub fn remaining(&self) -> u64 {
        self.max.saturating_sub(self.used)
    }
}

/// `per-app-api-usage=N/M(appName=X)`: the connected app's own share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PerAppUsage {
    /// Calls used by this app.
    pub used: u64,
    /// Calls this app may use.
    pub max: u64,
    /// Connected app name, when given.
    pub app_name: Option<String>,
}

/// Everything one `Sforce-Limit-Info` header said.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LimitInfo {
    /// Org-wide daily usage.
    pub api_usage: Option<ApiUsage>,
    /// Per-app usage, when the org sets per-app limits.
    pub per_app: Option<PerAppUsage>,
}

/// Parses an `Sforce-Limit-Info` value such as
/// `api-usage=18/5000; per-app-api-usage=17/250(appName=x)`.
///
/// Entries may be separated by `;` or `,`; unknown entries are ignored. Returns `None` when
/// nothing recognisable is present.
#[must_use]
pub fn parse_limit_info(value: &str) -> Option<LimitInfo> {
    let mut info = LimitInfo::default();
    for entry in split_entries(value) {
        let Some((key, rest)) = entry.split_once('=') else {
            continue;
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "api-usage" => {
                if let Some((used, max)) = parse_ratio(rest) {
                    info.api_usage = Some(ApiUsage { used, max });
                }
            }
            "per-app-api-usage" => {
                let (ratio, app) = match rest.split_once('(') {
                    Some((ratio, tail)) => (ratio, Some(tail)),
                    None => (rest, None),
                };
                let app_name = app.and_then(|t| {
                    let inner = t.trim().strip_suffix(')')?;
                    let (k, v) = inner.split_once('=')?;
                    k.trim().eq_ignore_ascii_case("appName").then(|| v.trim().to_owned())
                });
                if let Some((used, max)) = parse_ratio(ratio) {
                    info.per_app = Some(PerAppUsage { used, max, app_name });
                }
            }
            _ => {}
        }
    }
    (info.api_usage.is_some() || info.per_app.is_some()).then_some(info)
}

/// Splits on `;`/`,` outside parentheses, so an app name containing a comma stays whole.
fn split_entries(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0u32;
    let mut start = 0;
    for (i, c) in value.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ';' | ',' if depth == 0 => {
                out.push(value[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(value[start..].trim());
    out.retain(|s| !s.is_empty());
    out
}

fn parse_ratio(s: &str) -> Option<(u64, u64)> {
    let (used, max) = s.trim().split_once('/')?;
    Some((used.trim().parse().ok()?, max.trim().parse().ok()?))
}

/// The latest usage seen, with when it was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageSnapshot {
    /// What the header said.
    pub info: LimitInfo,
    /// When the response carrying it arrived.
    pub observed_at: SystemTime,
}

/// Holds the most recent `Sforce-Limit-Info` reading; shared by all clones of a client.
#[derive(Debug, Default)]
pub struct UsageTracker {
    latest: RwLock<Option<UsageSnapshot>>,
}

impl UsageTracker {
    /// Records a header value; unparseable values are ignored (and logged) rather than clearing
    /// the last good reading.
    pub fn record_header(&self, value: &str) {
        match parse_limit_info(value) {
            Some(info) => {
                *self.latest.write() = Some(UsageSnapshot { info, observed_at: SystemTime::now() });
            }
            None => {
                tracing::debug!(header = value, "Ignored an unparseable Sforce-Limit-Info header.");
            }
        }
    }

    /// The latest snapshot, if any response carried the header yet.
    #[must_use]
    pub fn latest(&self) -> Option<UsageSnapshot> {
        self.latest.read().clone()
    }

    /// The latest org-wide `used/max`.
    #[must_use]
    pub fn api_usage(&self) -> Option<ApiUsage> {
        self.latest.read().as_ref().and_then(|s| s.info.api_usage)
    }
}

/// One `{"Max":N,"Remaining":N}` entry of `/limits`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Limit {
    /// Allotted.
    #[serde(rename = "Max")]
    pub max: i64,
    /// Left.
    #[serde(rename = "Remaining")]
    pub remaining: i64,
    /// Nested per-app entries and anything else Salesforce adds.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

impl Limit {
    /// `max - remaining`, never negative.
    #[must_use]
    pub fn used(&self) -> i64 {
        (self.max - self.remaining).max(0)
    }
}

/// The `/limits` resource: every `{Max, Remaining}` entry by name, plus anything of another
/// shape kept verbatim so that new Salesforce limits never break decoding.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OrgLimits {
    /// Entries shaped `{"Max","Remaining",…}`, by limit name.
    pub limits: BTreeMap<String, Limit>,
    /// Entries of any other shape.
    pub other: BTreeMap<String, serde_json::Value>,
}

impl OrgLimits {
    /// Splits a decoded `/limits` object into typed and other entries.
    #[must_use]
    pub fn from_map(map: serde_json::Map<String, serde_json::Value>) -> Self {
        let mut out = Self::default();
        for (name, value) in map {
            match serde_json::from_value::<Limit>(value.clone()) {
                Ok(limit) => {
                    out.limits.insert(name, limit);
                }
                Err(_) => {
                    out.other.insert(name, value);
                }
            }
        }
        out
    }

    /// A limit by name, e.g. `"DailyBulkV2QueryJobs"`.
    #[must_use]
    pub fn get(&self, name: &str) -> Option<&Limit> {
        self.limits.get(name)
    }

    /// `DailyApiRequests`: the allocation the `api-usage` header reports on.
    #[must_use]
    pub fn daily_api_requests(&self) -> Option<&Limit> {
        self.get("DailyApiRequests")
    }

    /// `DailyBulkApiBatches` (v49+; `DailyBulkApiRequests` before).
    #[must_use]
    pub fn daily_bulk_api_batches(&self) -> Option<&Limit> {
        self.get("DailyBulkApiBatches").or_else(|| self.get("DailyBulkApiRequests"))
    }

    /// `DailyBulkV2QueryJobs`.
    #[must_use]
    pub fn daily_bulk_v2_query_jobs(&self) -> Option<&Limit> {
        self.get("DailyBulkV2QueryJobs")
    }
}

impl Client {
    /// `GET /limits`: every org limit. Costs one API call.
    ///
    /// # Errors
    /// Any [`crate::Error`]; permission to view setup is required.
    pub async fn limits(&self) -> Result<OrgLimits> {
        let path = format!("{}/limits", self.config().api_version.data_root());
        let ctx = RequestContext::new(Method::GET, &path);
        let request = ApiRequest::new(Method::GET, Target::Path(path), ctx);
        let map: serde_json::Map<String, serde_json::Value> = self.transport().send_json(request).await?;
        Ok(OrgLimits::from_map(map))
    }

    /// The latest `Sforce-Limit-Info` reading from any response to this client (or its clones).
    #[must_use]
    pub fn api_usage(&self) -> Option<UsageSnapshot> {
        self.transport().usage().latest()
    }

    /// Authenticated requests this client (and its clones) got an answer to, retries included:
    /// what this process has spent of the org's allocation, which the org-wide figures above
    /// cannot tell apart from other integrations' calls.
    #[must_use]
    pub fn requests_sent(&self) -> u64 {
        self.transport().requests_sent()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_documented_header_shapes() {
        let i = parse_limit_info("api-usage=18/5000").unwrap();
        assert_eq!(i.api_usage, Some(ApiUsage { used: 18, max: 5000 }));
        assert_eq!(i.per_app, None);

        for v in [
            "api-usage=18/5000; per-app-api-usage=17/250(appName=sample-connected-app)",
            "api-usage=18/5000, per-app-api-usage=17/250(appName=sample-connected-app)",
            "per-app-api-usage=17/250(appName=sample-connected-app);api-usage=18/5000",
        ] {
            let i = parse_limit_info(v).unwrap();
            assert_eq!(i.api_usage.unwrap().remaining(), 4982, "{v}");
            let app = i.per_app.unwrap();
            assert_eq!((app.used, app.max), (17, 250));
            assert_eq!(app.app_name.as_deref(), Some("sample-connected-app"));
        }
    }

    #[test]
    fn tolerates_garbage() {
        assert!(parse_limit_info("").is_none());
        assert!(parse_limit_info("api-usage=x/5000").is_none());
        assert!(parse_limit_info("something=1/2").is_none());
        let i = parse_limit_info("api-usage=1/2; per-app-api-usage=oops").unwrap();
        assert!(i.per_app.is_none());
        let i = parse_limit_info("per-app-api-usage=3/4").unwrap();
        assert_eq!(i.per_app.unwrap().app_name, None);
    }

    #[test]
    fn tracker_keeps_last_good_value() {
        let t = UsageTracker::default();
        assert!(t.api_usage().is_none());
        t.record_header("api-usage=5/10");
        t.record_header("garbage");
        assert_eq!(t.api_usage(), Some(ApiUsage { used: 5, max: 10 }));
    }

    #[test]
    fn limits_keep_unknown_entries() {
        let body = r#"{"DailyApiRequests":{"Max":15000,"Remaining":14998,"Sample App":{"Max":0,"Remaining":0}},
                       "DailyBulkV2QueryJobs":{"Max":10000,"Remaining":10000},
                       "SomethingNew":[1,2,3]}"#;
        let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(body).unwrap();
        let l = OrgLimits::from_map(map);
        let daily = l.daily_api_requests().unwrap();
        assert_eq!((daily.max, daily.remaining, daily.used()), (15000, 14998, 2));
        assert!(daily.extra.contains_key("Sample App"));
        assert_eq!(l.daily_bulk_v2_query_jobs().unwrap().max, 10000);
        assert!(l.other.contains_key("SomethingNew"));
    }
}
