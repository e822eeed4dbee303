//! The planner: before anything is written, how many Salesforce API calls each write path would
//! cost for this run's changes, which path to take, and whether the budget allows it.
//!
//! Paths and their cost, as Salesforce counts calls (every REST request counts once):
//! - single: one PATCH per record;
//! - Collections: one call per 200 records, whatever fields each record carries;
//! - Bulk API 2.0: about eight calls per job whatever its size (create, upload, close, polls,
//!   results), but a job takes minutes on a busy org. Records with different changed fields
//!   share one job: the header is the union of the fields and an empty cell leaves a field as it
//!   is.
//!
//! Bulk is taken when it is cheaper and the workflow's latency allows it. When the plan costs more than the budget has left, whole
//! Collections calls' worth of records are deferred (never dropped: their fingerprints stay
//! unwritten, so the next window picks them up).

use std::time::Duration;

use serde::Serialize;

/// Records per sObject Collections call: Salesforce's ceiling.
pub const COLLECTION_SIZE: usize = 200;

/// Assumptions about cost and speed, tunable for orgs that behave differently.
#[derive(Debug, Clone, Serialize)]
pub struct CostModel {
    /// Calls per Bulk job besides polling: create, upload, close, successful and failed results.
    pub bulk_fixed_calls: u64,
    /// Polls a job is expected to need.
    pub bulk_polls: u64,
    /// Expected time from creating a job to reading its results: queueing on a busy org plus
    /// processing time per record.
    pub bulk_latency_base: Duration,
    pub bulk_latency_per_record: Duration,
}

impl Default for CostModel {
    fn default() -> Self {
        CostModel {
            bulk_fixed_calls: 5,
            bulk_polls: 3,
            bulk_latency_base: Duration::from_secs(120),
            bulk_latency_per_record: Duration::from_millis(2),
        }
    }
}

impl CostModel {
    pub fn bulk_calls(&self) -> u64 {
        self.bulk_fixed_calls + self.bulk_polls
    }

    pub fn bulk_latency(&self, records: usize) -> Duration {
        self.bulk_latency_base + self.bulk_latency_per_record.saturating_mul(u32::try_from(records).unwrap_or(u32::MAX))
    }
}

/// How a part of the run's writes goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WritePath {
    Single,
    Collections,
    Bulk,
}

impl WritePath {
    pub fn as_str(self) -> &'static str {
        match self {
            WritePath::Single => "single",
            WritePath::Collections => "collections",
            WritePath::Bulk => "bulk",
        }
    }
}

/// What the budget allows for this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Allowance {
    /// Write calls this run may spend (after its reads).
    pub calls: u64,
}

/// The write plan: send the first `send` changed records (in the caller's order) by `path`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub path: WritePath,
    pub send: usize,
    pub deferred: usize,
    pub write_calls: u64,
    /// What one call per record would have cost, for the report.
    pub calls_one_by_one: u64,
}

fn collections_calls(records: usize) -> u64 {
    records.div_ceil(COLLECTION_SIZE) as u64
}

/// Plans the writes of `records` changed records within `latency` and `allowance`.
pub fn plan(records: usize, latency: Duration, allowance: Allowance, model: &CostModel) -> Plan {
    let (mut path, mut cost) = choose(records, latency, model);
    let mut send = records;
    if cost > allowance.calls {
        // Over budget: keep the most records that fit. Cost grows with the count, so bisect.
        let (mut lo, mut hi) = (0, records);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if choose(mid, latency, model).1 <= allowance.calls {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        send = lo;
        (path, cost) = choose(send, latency, model);
    }
    Plan { path, send, deferred: records - send, write_calls: cost, calls_one_by_one: records as u64 }
}

fn choose(records: usize, latency: Duration, model: &CostModel) -> (WritePath, u64) {
    let collections = collections_calls(records);
    if model.bulk_latency(records) <= latency && model.bulk_calls() < collections {
        (WritePath::Bulk, model.bulk_calls())
    } else if records == 1 {
        // One record is one call either way; a plain PATCH is the simpler request.
        (WritePath::Single, 1)
    } else {
        (WritePath::Collections, collections)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);
    const PLENTY: Allowance = Allowance { calls: 1_000_000 };

    #[test]
    fn small_runs_use_collections_and_one_record_one_call() {
        let p = plan(180, HOUR, PLENTY, &CostModel::default());
        assert_eq!((p.path, p.write_calls), (WritePath::Collections, 1));
        let p = plan(1, HOUR, PLENTY, &CostModel::default());
        assert_eq!((p.path, p.write_calls), (WritePath::Single, 1));
        assert_eq!(plan(0, HOUR, PLENTY, &CostModel::default()).write_calls, 0);
    }

    #[test]
    fn bulk_only_when_it_is_cheaper_and_fast_enough() {
        let p = plan(100_000, HOUR, PLENTY, &CostModel::default());
        assert_eq!((p.path, p.write_calls, p.calls_one_by_one), (WritePath::Bulk, 8, 100_000));
        // 1,600 records: 8 Collections calls against 8 for Bulk: not cheaper.
        assert_eq!(plan(1_600, HOUR, PLENTY, &CostModel::default()).path, WritePath::Collections);
        assert_eq!(plan(1_601, HOUR, PLENTY, &CostModel::default()).path, WritePath::Bulk);
        let p = plan(100_000, Duration::from_secs(60), PLENTY, &CostModel::default());
        assert_eq!((p.path, p.write_calls), (WritePath::Collections, 500));
    }

    #[test]
    fn over_budget_work_is_deferred_not_dropped() {
        let p = plan(1_500, Duration::from_secs(1), Allowance { calls: 3 }, &CostModel::default());
        assert_eq!((p.send, p.deferred, p.write_calls), (600, 900, 3));
        // Bulk cannot fit in 7 calls, but 7 Collections calls can carry 1,400 records.
        let p = plan(100_000, HOUR, Allowance { calls: 7 }, &CostModel::default());
        assert_eq!((p.path, p.send, p.deferred), (WritePath::Collections, 1_400, 98_600));
        let none = plan(10, HOUR, Allowance { calls: 0 }, &CostModel::default());
        assert_eq!((none.write_calls, none.deferred), (0, 10));
    }
}
