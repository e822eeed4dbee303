//! The planner: before anything is written, how many Salesforce API calls each write path would
//! cost for this run's changes, which path to take, and whether the budget allows it.
//!
//! Paths and their cost, as Salesforce counts calls (every REST request counts once):
//! - single: one PATCH per record;
//! - Collections: one call per 200 records, whatever fields each record carries;
//! - Bulk API 2.0: about seven calls per job whatever its size (create, upload, close, polls,
//!   results), but every row of a job has the same CSV columns, so records are grouped by the set
//!   of fields that changed, and a job takes minutes on a busy org.
//!
//! Groups big enough for Bulk to be cheaper go to Bulk when the workflow's latency allows; the
//! rest share Collections calls. When the plan costs more than the budget has left, whole
//! Collections calls' worth of records are deferred (never dropped: their fingerprints stay
//! unwritten, so the next window picks them up).

use std::collections::BTreeMap;
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

/// One part of a plan: these field sets, this many records, this path, this many calls.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Part {
    pub path: WritePath,
    /// Indexes into the `groups` given to [`plan`].
    pub groups: Vec<usize>,
    pub records: usize,
    pub calls: u64,
}

/// What the budget allows for this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Allowance {
    /// Write calls this run may spend (after its reads).
    pub calls: u64,
}

/// The write plan.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Plan {
    pub parts: Vec<Part>,
    /// Records per group to send now (the rest of each group is deferred).
    pub send: Vec<usize>,
    pub deferred: usize,
    pub write_calls: u64,
    /// What the cheapest single-path alternative would have cost, for the report.
    pub calls_one_by_one: u64,
}

impl Plan {
    pub fn calls_by_path(&self) -> BTreeMap<&'static str, u64> {
        let mut m = BTreeMap::new();
        for p in &self.parts {
            *m.entry(p.path.as_str()).or_insert(0) += p.calls;
        }
        m
    }
}

fn collections_calls(records: usize) -> u64 {
    records.div_ceil(COLLECTION_SIZE) as u64
}

/// Plans the writes of `groups` (records per distinct set of changed fields) within `latency`
/// and `allowance`.
pub fn plan(groups: &[usize], latency: Duration, allowance: Allowance, model: &CostModel) -> Plan {
    let total: usize = groups.iter().sum();
    let (mut parts, mut cost) = choose(groups, latency, model);
    let mut send = groups.to_vec();
    if cost > allowance.calls {
        // Over budget: keep the largest prefix of the records (in group order, so the caller
        // decides what goes first) that fits. Cost grows with the prefix, so bisect.
        let (mut lo, mut hi) = (0, total);
        while lo < hi {
            let mid = lo + (hi - lo).div_ceil(2);
            if choose(&prefix(groups, mid), latency, model).1 <= allowance.calls {
                lo = mid;
            } else {
                hi = mid - 1;
            }
        }
        send = prefix(groups, lo);
        (parts, cost) = choose(&send, latency, model);
    }
    let sent: usize = send.iter().sum();
    Plan { parts, send, deferred: total - sent, write_calls: cost, calls_one_by_one: total as u64 }
}

/// The first `keep` records of `groups`, taken group by group.
fn prefix(groups: &[usize], mut keep: usize) -> Vec<usize> {
    groups
        .iter()
        .map(|&n| {
            let take = n.min(keep);
            keep -= take;
            take
        })
        .collect()
}

fn choose(groups: &[usize], latency: Duration, model: &CostModel) -> (Vec<Part>, u64) {
    let mut parts = Vec::new();
    let mut pooled = Vec::new();
    let mut pooled_records = 0;
    for (i, &n) in groups.iter().enumerate().filter(|(_, n)| **n > 0) {
        let bulk_fits = model.bulk_latency(n) <= latency;
        if bulk_fits && model.bulk_calls() < collections_calls(n) {
            parts.push(Part { path: WritePath::Bulk, groups: vec![i], records: n, calls: model.bulk_calls() });
        } else {
            pooled.push(i);
            pooled_records += n;
        }
    }
    if pooled_records > 0 {
        // One record is one call either way; a plain PATCH is the simpler request.
        let path = if pooled_records == 1 { WritePath::Single } else { WritePath::Collections };
        parts.push(Part { path, groups: pooled, records: pooled_records, calls: collections_calls(pooled_records) });
    }
    let cost = parts.iter().map(|p| p.calls).sum();
    (parts, cost)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);
    const PLENTY: Allowance = Allowance { calls: 1_000_000 };

    #[test]
    fn small_runs_use_collections_and_one_record_one_call() {
        let p = plan(&[150, 30], HOUR, PLENTY, &CostModel::default());
        assert_eq!(p.write_calls, 1);
        assert_eq!(p.parts[0].path, WritePath::Collections);
        let p = plan(&[1], HOUR, PLENTY, &CostModel::default());
        assert_eq!((p.parts[0].path, p.write_calls), (WritePath::Single, 1));
        assert_eq!(plan(&[], HOUR, PLENTY, &CostModel::default()).write_calls, 0);
    }

    #[test]
    fn big_groups_go_to_bulk_small_ones_share_collections() {
        let p = plan(&[100_000, 10, 5], HOUR, PLENTY, &CostModel::default());
        assert_eq!(p.calls_by_path(), BTreeMap::from([("bulk", 8), ("collections", 1)]));
        assert_eq!(p.calls_one_by_one, 100_015);
    }

    #[test]
    fn bulk_only_when_it_is_cheaper_and_fast_enough() {
        // 1,600 records: 8 Collections calls against 8 for Bulk: not cheaper.
        assert_eq!(plan(&[1_600], HOUR, PLENTY, &CostModel::default()).parts[0].path, WritePath::Collections);
        assert_eq!(plan(&[1_601], HOUR, PLENTY, &CostModel::default()).parts[0].path, WritePath::Bulk);
        let p = plan(&[100_000], Duration::from_secs(60), PLENTY, &CostModel::default());
        assert_eq!((p.parts[0].path, p.write_calls), (WritePath::Collections, 500));
    }

    #[test]
    fn over_budget_work_is_deferred_not_dropped() {
        let p = plan(&[1_000, 500], Duration::from_secs(1), Allowance { calls: 3 }, &CostModel::default());
        assert!(p.write_calls <= 3, "{p:?}");
        assert_eq!(p.send.iter().sum::<usize>() + p.deferred, 1_500);
        assert_eq!(p.send, vec![600, 0], "the first records in order go, up to 3 full calls");
        let none = plan(&[10], HOUR, Allowance { calls: 0 }, &CostModel::default());
        assert_eq!((none.write_calls, none.deferred), (0, 10));
    }
}
