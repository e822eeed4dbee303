//! Benchmarks of the generator and the aggregation engine, callable from the binary's `bench`
//! command or an example. They measure and report; nothing here asserts on wall-clock time.

use std::time::Instant;

use serde::Serialize;
use serde_json::json;

use super::generate::{self, GenConfig};
use super::store::DAY_MS;

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct QueryTiming {
    pub name: String,
    pub rows_scanned: u64,
    pub rows_out: usize,
    /// Best of the runs, in milliseconds.
    pub best_ms: f64,
    pub median_ms: f64,
}

#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BenchReport {
    pub accounts: usize,
    pub days: u32,
    pub visitors: usize,
    pub event_rows: usize,
    pub guide_events: usize,
    pub generate_ms: f64,
    pub accounts_per_sec: f64,
    pub event_rows_per_sec: f64,
    /// Estimated bytes held by the store (columns and documents).
    pub approx_store_bytes: usize,
    pub salesforce_org_ms: f64,
    pub salesforce_records: usize,
    pub queries: Vec<QueryTiming>,
}

fn time_query(
    store: &super::Store,
    name: &str,
    pipeline: &serde_json::Value,
    now: i64,
    runs: usize,
) -> Result<QueryTiming, String> {
    let mut times = Vec::with_capacity(runs);
    let mut scanned = 0;
    let mut out = 0;
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        let (_, rows, _, n) = super::aggregation::execute(store, pipeline, now, 0, true)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
        scanned = n;
        out = rows.len();
    }
    times.sort_by(f64::total_cmp);
    Ok(QueryTiming {
        name: name.to_string(),
        rows_scanned: scanned,
        rows_out: out,
        best_ms: times.first().copied().unwrap_or(0.0),
        median_ms: times.get(times.len() / 2).copied().unwrap_or(0.0),
    })
}

/// Generates `accounts` accounts over `days` days, then times typical sync-engine queries over
/// the last 30 days. `with_org` also times building the matching Salesforce org.
///
/// # Errors
/// A message if one of the benchmark pipelines is rejected (a bug).
pub fn run(seed: u64, accounts: usize, days: u32, runs: usize, with_org: bool) -> Result<BenchReport, String> {
    let anchor = generate::local_midnight(super::clock::Clock::wall_ms(), 0);
    let gc = GenConfig { seed, accounts, days, anchor_day_ms: Some(anchor), ..GenConfig::default() };
    let t = Instant::now();
    let g = generate::generate(&gc);
    let generate_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let org = if with_org { generate::salesforce_org(&gc) } else { Default::default() };
    let org_ms = t.elapsed().as_secs_f64() * 1e3;
    let store = g.store;
    let event_rows = store.event_row_count();
    let first = anchor - 30 * DAY_MS;
    let ts = json!({"period": "dayRange", "first": first, "count": 30});
    let mut queries = Vec::new();
    let engagement = json!([
        {"source": {"events": {"appId": "expandAppIds(\"*\")"}, "timeSeries": ts}},
        {"identified": "visitorId"},
        {"group": {"group": ["accountId"], "fields": {
            "events": {"sum": "numEvents"}, "minutes": {"sum": "numMinutes"},
            "activeVisitors": {"count": "visitorId"}, "activeDays": {"count": "day"}}}},
        {"sort": ["accountId"]}
    ]);
    queries.push(time_query(&store, "30-day engagement group-by (events)", &engagement, anchor, runs)?);
    let adoption = json!([
        {"source": {"featureEvents": null, "timeSeries": ts}},
        {"identified": "visitorId"},
        {"group": {"group": ["accountId", "featureId"], "fields": {"clicks": {"sum": "numEvents"}, "users": {"count": "visitorId"}}}}
    ]);
    queries.push(time_query(&store, "30-day feature adoption group-by", &adoption, anchor, runs)?);
    let filter_count = json!([
        {"source": {"events": null, "timeSeries": ts}},
        {"filter": "numEvents >= 10 && day >= 0"},
        {"count": null}
    ]);
    queries.push(time_query(&store, "30-day filter + count", &filter_count, anchor, runs)?);
    let page = json!([
        {"source": {"events": null, "timeSeries": {"period": "dayRange", "first": first, "last": "now()"}}},
        {"sort": ["day"]},
        {"filter": format!("day>={first}")},
        {"limit": 100_000}
    ]);
    queries.push(time_query(&store, "tap-pendo style page (sort+filter+limit 100k)", &page, anchor, runs)?);
    let secs = generate_s.max(1e-9);
    Ok(BenchReport {
        accounts,
        days,
        visitors: store.visitors.len(),
        event_rows,
        guide_events: store.guide_events.len(),
        generate_ms: generate_s * 1e3,
        accounts_per_sec: accounts as f64 / secs,
        event_rows_per_sec: event_rows as f64 / secs,
        approx_store_bytes: store.approx_bytes(),
        salesforce_org_ms: org_ms,
        salesforce_records: org.values().map(Vec::len).sum(),
        queries,
    })
}
