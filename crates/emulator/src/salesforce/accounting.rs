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

/// A count over the rolling 24 hours ending now, kept in hourly buckets, against a maximum:
/// how Salesforce meters daily API requests, Bulk batches, Bulk records and Bulk query jobs.
#[derive(Debug, Clone)]
pub struct RollingWindow {
    /// (epoch hour, count) pairs, oldest first; the last 24 hours make the window.
    buckets: VecDeque<(i64, u64)>,
    /// Usage set through `PUT limits` (as if other integrations had spent it).
    preset: u64,
    pub max: u64,
    /// Units still to be taken before other integrations spend the rest (`SpentAfter`).
    spent_after: Option<u64>,
}

impl RollingWindow {
    pub fn new(max: u64) -> Self {
        RollingWindow { buckets: VecDeque::new(), preset: 0, max, spent_after: None }
    }

    fn prune(&mut self, now: DateTime<Utc>) {
        let hour = now.timestamp().div_euclid(3600);
        while self.buckets.front().is_some_and(|(h, _)| *h <= hour - 24) {
            self.buckets.pop_front();
        }
    }

    pub fn used(&mut self, now: DateTime<Utc>) -> u64 {
        self.prune(now);
        self.preset + self.buckets.iter().map(|(_, n)| n).sum::<u64>()
    }

    pub fn remaining(&mut self, now: DateTime<Utc>) -> u64 {
        self.max.saturating_sub(self.used(now))
    }

    /// Whether the window is spent.
    pub fn exhausted(&mut self, now: DateTime<Utc>) -> bool {
        self.used(now) >= self.max
    }

    /// Counts `n` now, whatever the remainder (a batch already running finishes).
    pub fn add(&mut self, n: u64, now: DateTime<Utc>) {
        let hour = now.timestamp().div_euclid(3600);
        match self.buckets.back_mut() {
            Some((h, c)) if *h == hour => *c += n,
            _ => self.buckets.push_back((hour, n)),
        }
    }

    /// Counts one unit unless the window is spent.
    pub fn try_take(&mut self, now: DateTime<Utc>) -> bool {
        if self.exhausted(now) {
            return false;
        }
        self.add(1, now);
        match self.spent_after {
            Some(n) if n <= 1 => {
                // Another integration takes whatever is left, all at once.
                self.preset = self.max;
                self.spent_after = None;
            }
            Some(n) => self.spent_after = Some(n - 1),
            None => {}
        }
        true
    }

    /// `/limits` form: `{"Max", "Remaining"}`.
    pub fn entry(&mut self, now: DateTime<Utc>) -> Value {
        json!({"Max": self.max, "Remaining": self.remaining(now)})
    }

    /// Applies a `PUT limits` value: a new maximum and/or the remainder to pretend.
    fn set(&mut self, value: &LimitValue, name: &str) -> Result<(), String> {
        if let Some(max) = value.max {
            if max == 0 {
                return Err(format!("{name}.Max must be at least 1"));
            }
            self.max = max;
        }
        if let Some(remaining) = value.remaining {
            if remaining > self.max {
                return Err(format!("{name}.Remaining {remaining} exceeds Max {}", self.max));
            }
            // Our own buckets are cleared so the figure is exact.
            self.buckets.clear();
            self.preset = self.max - remaining;
        }
        if let Some(n) = value.spent_after {
            if n == 0 {
                return Err(format!("{name}.SpentAfter must be at least 1"));
            }
            self.spent_after = Some(n);
        } else if value.max.is_some() || value.remaining.is_some() {
            self.spent_after = None;
        }
        Ok(())
    }
}

#[derive(Debug)]
pub struct Accounting {
    pub api_requests: RollingWindow,
    by_kind: BTreeMap<CallKind, u64>,
    total: u64,
    /// Bulk ingest batches of up to 10,000 records (shared by Bulk 1.0 and 2.0).
    pub bulk_batches: RollingWindow,
    pub bulk_query_jobs: RollingWindow,
    pub bulk_records: RollingWindow,
}

impl Accounting {
    pub fn new(daily_max: u64) -> Self {
        Accounting {
            api_requests: RollingWindow::new(daily_max),
            by_kind: BTreeMap::new(),
            total: 0,
            bulk_batches: RollingWindow::new(15_000),
            bulk_query_jobs: RollingWindow::new(10_000),
            bulk_records: RollingWindow::new(150_000_000),
        }
    }

    /// Calls counted in the rolling 24 hours ending now.
    pub fn used(&mut self, now: DateTime<Utc>) -> u64 {
        self.api_requests.used(now)
    }

    /// Counts one call that consumes the daily allocation. Returns false (and counts nothing
    /// against the allocation) when it is already spent.
    pub fn try_consume(&mut self, kind: CallKind, now: DateTime<Utc>) -> bool {
        if !self.api_requests.try_take(now) {
            return false;
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
        format!("api-usage={}/{}", self.used(now), self.api_requests.max)
    }

    pub fn usage_json(&mut self, now: DateTime<Utc>) -> Value {
        let used = self.used(now);
        json!({
            "total": self.total,
            "byKind": self.by_kind,
            "dailyApiRequests": {"Max": self.api_requests.max, "Remaining": self.api_requests.max.saturating_sub(used), "Used": used},
            "bulk": {"batches": self.bulk_batches.used(now), "queryJobs": self.bulk_query_jobs.used(now), "records": self.bulk_records.used(now)},
        })
    }

    pub fn limits_json(&mut self, now: DateTime<Utc>) -> Value {
        let entry = |max: u64, used: u64| json!({"Max": max, "Remaining": max.saturating_sub(used)});
        json!({
            "ConcurrentAsyncGetReportInstances": entry(200, 0),
            "ConcurrentSyncReportRuns": entry(20, 0),
            "DailyApiRequests": self.api_requests.entry(now),
            "DailyAsyncApexExecutions": entry(250_000, 0),
            "DailyBulkApiBatches": self.bulk_batches.entry(now),
            "DailyBulkApiRequests": self.bulk_batches.entry(now),
            // Not a name Salesforce's /limits uses: the emulator's view of the documented
            // 150,000,000 records per rolling 24 hours that Bulk ingest jobs may load.
            "DailyBulkV2IngestRecords": self.bulk_records.entry(now),
            "DailyBulkV2QueryFileStorageMB": entry(976_562, 0),
            "DailyBulkV2QueryJobs": self.bulk_query_jobs.entry(now),
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
        let max = self.api_requests.max;
        *self = Accounting::new(max);
    }

    /// Applies `PUT /__emulator/limits`, all or nothing.
    pub fn apply(&mut self, change: &LimitsChange, _now: DateTime<Utc>) -> Result<(), String> {
        let mut next = (self.api_requests.clone(), self.bulk_batches.clone(), self.bulk_query_jobs.clone());
        if let Some(v) = &change.daily_api_requests {
            next.0.set(v, "DailyApiRequests")?;
        }
        if let Some(v) = &change.daily_bulk_api_batches {
            next.1.set(v, "DailyBulkApiBatches")?;
        }
        if let Some(v) = &change.daily_bulk_v2_query_jobs {
            next.2.set(v, "DailyBulkV2QueryJobs")?;
        }
        (self.api_requests, self.bulk_batches, self.bulk_query_jobs) = next;
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
    /// Not Salesforce's: after this many more counted calls, other integrations spend what is
    /// left of the allocation, so a client meets `REQUEST_LIMIT_EXCEEDED` mid-run.
    #[serde(rename = "SpentAfter", default)]
    pub spent_after: Option<u64>,
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
    fn bulk_counters_roll_too() {
        let mut a = Accounting::new(100);
        let t0: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        a.bulk_batches.max = 2;
        assert!(a.bulk_batches.try_take(t0));
        assert!(a.bulk_batches.try_take(t0));
        assert!(!a.bulk_batches.try_take(t0 + Duration::hours(23)));
        assert!(a.bulk_batches.try_take(t0 + Duration::hours(24)));
        assert_eq!(a.limits_json(t0 + Duration::hours(24))["DailyBulkApiBatches"]["Remaining"], json!(1));
    }

    #[test]
    fn bad_limit_changes_change_nothing() {
        let mut a = Accounting::new(100);
        let now = Utc::now();
        let change = LimitsChange {
            daily_api_requests: Some(LimitValue { max: Some(50), remaining: None, spent_after: None }),
            daily_bulk_api_batches: Some(LimitValue { max: Some(5), remaining: Some(9), spent_after: None }),
            daily_bulk_v2_query_jobs: None,
        };
        assert!(a.apply(&change, now).is_err());
        assert_eq!(a.api_requests.max, 100);
    }

    #[test]
    fn preset_remaining() {
        let mut a = Accounting::new(100);
        let now = Utc::now();
        let change = LimitsChange {
            daily_api_requests: Some(LimitValue { max: Some(50), remaining: Some(1), spent_after: None }),
            daily_bulk_api_batches: None,
            daily_bulk_v2_query_jobs: None,
        };
        a.apply(&change, now).unwrap();
        assert!(a.try_consume(CallKind::Rest, now));
        assert!(!a.try_consume(CallKind::Rest, now));
    }

    #[test]
    fn the_allocation_is_spent_by_others_after_the_given_calls() {
        let mut a = Accounting::new(100);
        let now = Utc::now();
        let change = LimitsChange {
            daily_api_requests: Some(LimitValue { max: None, remaining: None, spent_after: Some(2) }),
            daily_bulk_api_batches: None,
            daily_bulk_v2_query_jobs: None,
        };
        a.apply(&change, now).unwrap();
        assert!(a.try_consume(CallKind::Rest, now));
        assert!(a.try_consume(CallKind::Rest, now));
        assert!(!a.try_consume(CallKind::Rest, now), "spent after two calls");
        assert_eq!(a.api_requests.remaining(now), 0);
        let reset = LimitsChange {
            daily_api_requests: Some(LimitValue { max: None, remaining: Some(100), spent_after: None }),
            daily_bulk_api_batches: None,
            daily_bulk_v2_query_jobs: None,
        };
        a.apply(&reset, now).unwrap();
        assert!(a.try_consume(CallKind::Rest, now));
    }
}
