//! API-call accounting as Salesforce does it: every authenticated REST call counts once against
//! the rolling 24-hour `DailyApiRequests` allocation (a Composite or Collections request counts
//! once however many records it carries), the Versions resource and OAuth are free, and a spent
//! allocation answers 403 `REQUEST_LIMIT_EXCEEDED`. Usage is also kept by kind for the admin API,
//! so tests can assert exactly which calls a client made.

use std::collections::{BTreeMap, VecDeque};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// What sort of call a request was, as reported by `GET /__emulator/usage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CallKind {
    Auth,
    Rest,
    Query,
    Collections,
    Composite,
    Bulk,
}

#[derive(Debug)]
pub struct Accounting {
    /// Calls per hour bucket (epoch hour), the last 24 of which make the rolling window.
    window: VecDeque<(i64, u64)>,
    pub daily_max: u64,
    /// Extra usage set through `PUT limits` (as if other integrations had spent it).
    preset: u64,
    by_kind: BTreeMap<CallKind, u64>,
    total: u64,
    pub bulk_batches_max: u64,
    pub bulk_batches_used: u64,
    pub bulk_query_jobs_max: u64,
    pub bulk_query_jobs_used: u64,
    pub bulk_records_max: u64,
    pub bulk_records_used: u64,
}

impl Accounting {
    pub fn new(daily_max: u64) -> Self {
        Accounting {
            window: VecDeque::new(),
            daily_max,
            preset: 0,
            by_kind: BTreeMap::new(),
            total: 0,
            bulk_batches_max: 15_000,
            bulk_batches_used: 0,
            bulk_query_jobs_max: 10_000,
            bulk_query_jobs_used: 0,
            bulk_records_max: 150_000_000,
            bulk_records_used: 0,
        }
    }

    fn prune(&mut self, now: DateTime<Utc>) {
        let hour = now.timestamp().div_euclid(3600);
        while self.window.front().is_some_and(|(h, _)| *h <= hour - 24) {
            self.window.pop_front();
        }
    }

    /// Calls counted in the rolling 24 hours ending now.
    pub fn used(&mut self, now: DateTime<Utc>) -> u64 {
        self.prune(now);
        self.preset + self.window.iter().map(|(_, n)| n).sum::<u64>()
    }

    /// Counts one call that consumes the daily allocation. Returns false (and counts nothing
    /// against the allocation) when it is already spent.
    pub fn try_consume(&mut self, kind: CallKind, now: DateTime<Utc>) -> bool {
        if self.used(now) >= self.daily_max {
            return false;
        }
        let hour = now.timestamp().div_euclid(3600);
        match self.window.back_mut() {
            Some((h, n)) if *h == hour => *n += 1,
            _ => self.window.push_back((hour, 1)),
        }
        self.note(kind);
        true
    }

    /// Records a call that does not consume the allocation (OAuth).
    pub fn note(&mut self, kind: CallKind) {
        *self.by_kind.entry(kind).or_default() += 1;
        self.total += 1;
    }

    /// The `Sforce-Limit-Info` header value.
    pub fn limit_info(&mut self, now: DateTime<Utc>) -> String {
        format!("api-usage={}/{}", self.used(now), self.daily_max)
    }

    pub fn usage_json(&mut self, now: DateTime<Utc>) -> Value {
        let used = self.used(now);
        json!({
            "total": self.total,
            "byKind": self.by_kind,
            "dailyApiRequests": {"Max": self.daily_max, "Remaining": self.daily_max.saturating_sub(used), "Used": used},
            "bulk": {"batches": self.bulk_batches_used, "queryJobs": self.bulk_query_jobs_used, "records": self.bulk_records_used},
        })
    }

    pub fn limits_json(&mut self, now: DateTime<Utc>) -> Value {
        let used = self.used(now);
        let entry = |max: u64, used: u64| json!({"Max": max, "Remaining": max.saturating_sub(used)});
        json!({
            "ConcurrentAsyncGetReportInstances": entry(200, 0),
            "ConcurrentSyncReportRuns": entry(20, 0),
            "DailyApiRequests": entry(self.daily_max, used),
            "DailyAsyncApexExecutions": entry(250_000, 0),
            "DailyBulkApiBatches": entry(self.bulk_batches_max, self.bulk_batches_used),
            "DailyBulkApiRequests": entry(self.bulk_batches_max, self.bulk_batches_used),
            // Not a name Salesforce's /limits uses: the emulator's view of the documented
            // 150,000,000 records per rolling 24 hours that Bulk ingest jobs may load.
            "DailyBulkV2IngestRecords": entry(self.bulk_records_max, self.bulk_records_used),
            "DailyBulkV2QueryFileStorageMB": entry(976_562, 0),
            "DailyBulkV2QueryJobs": entry(self.bulk_query_jobs_max, self.bulk_query_jobs_used),
            "DailyStreamingApiEvents": entry(10_000, 0),
            "DataStorageMB": entry(5, 0),
            "FileStorageMB": entry(20, 0),
            "HourlyODataCallout": entry(10_000, 0),
            "MassEmail": entry(10, 0),
            "SingleEmail": entry(15, 0),
        })
    }

    /// Clears usage counters (admin reset); the configured maximum stays.
    pub fn reset(&mut self) {
        let max = self.daily_max;
        *self = Accounting::new(max);
    }

    /// Applies `PUT /__emulator/limits`.
    pub fn apply(&mut self, change: &LimitsChange, now: DateTime<Utc>) -> Result<(), String> {
        if let Some(d) = &change.daily_api_requests {
            if let Some(max) = d.max {
                if max == 0 {
                    return Err("DailyApiRequests.Max must be at least 1".into());
                }
                self.daily_max = max;
            }
            if let Some(remaining) = d.remaining {
                if remaining > self.daily_max {
                    return Err(format!("DailyApiRequests.Remaining {remaining} exceeds Max {}", self.daily_max));
                }
                // Usage others spent; our own window is cleared so the figure is exact.
                self.window.clear();
                self.preset = self.daily_max - remaining;
            }
        }
        if let Some(d) = &change.daily_bulk_api_batches {
            if let Some(max) = d.max {
                self.bulk_batches_max = max;
            }
            if let Some(rem) = d.remaining {
                self.bulk_batches_used = self.bulk_batches_max.saturating_sub(rem);
            }
        }
        if let Some(d) = &change.daily_bulk_v2_query_jobs {
            if let Some(max) = d.max {
                self.bulk_query_jobs_max = max;
            }
            if let Some(rem) = d.remaining {
                self.bulk_query_jobs_used = self.bulk_query_jobs_max.saturating_sub(rem);
            }
        }
        self.prune(now);
        Ok(())
    }
}

/// `PUT /__emulator/limits`: the same names and shape as `/limits`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsChange {
    #[serde(rename = "DailyApiRequests", default)]
    pub daily_api_requests: Option<LimitValue>,
    #[serde(rename = "DailyBulkApiBatches", default)]
    pub daily_bulk_api_batches: Option<LimitValue>,
    #[serde(rename = "DailyBulkV2QueryJobs", default)]
    pub daily_bulk_v2_query_jobs: Option<LimitValue>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitValue {
    #[serde(rename = "Max", default)]
    pub max: Option<u64>,
    #[serde(rename = "Remaining", default)]
    pub remaining: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    #[test]
    fn rolling_window_expires_after_a_day() {
        let mut a = Accounting::new(2);
        let t0: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        assert!(a.try_consume(CallKind::Rest, t0));
        assert!(a.try_consume(CallKind::Query, t0 + Duration::hours(1)));
        assert!(!a.try_consume(CallKind::Rest, t0 + Duration::hours(2)));
        assert_eq!(a.limit_info(t0 + Duration::hours(2)), "api-usage=2/2");
        // The first call leaves the window 24 hours after its hour.
        assert!(a.try_consume(CallKind::Rest, t0 + Duration::hours(24)));
    }

    #[test]
    fn preset_remaining() {
        let mut a = Accounting::new(100);
        let now = Utc::now();
        let change = LimitsChange {
            daily_api_requests: Some(LimitValue { max: Some(50), remaining: Some(1) }),
            daily_bulk_api_batches: None,
            daily_bulk_v2_query_jobs: None,
        };
        a.apply(&change, now).unwrap();
        assert!(a.try_consume(CallKind::Rest, now));
        assert!(!a.try_consume(CallKind::Rest, now));
    }
}
