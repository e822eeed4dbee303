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

/// One query of the engine's extraction, paged as the engine pages it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PagedTiming {
    pub name: String,
    pub pages: usize,
    pub rows: usize,
    pub total_ms: f64,
    pub slowest_page_ms: f64,
}

/// The result documents of a query, as the HTTP endpoint would encode them.
///
/// # Errors
/// A message if the pipeline is rejected.
pub fn results(
    store: &super::Store,
    pipeline: &serde_json::Value,
    now: i64,
    optimize: bool,
) -> Result<Vec<serde_json::Value>, String> {
    results_with(store, pipeline, now, true, optimize).map(|(rows, _)| rows)
}

/// [`results`] with a choice of `count` semantics, plus the rows scanned.
///
/// # Errors
/// A message if the pipeline is rejected.
pub fn results_with(
    store: &super::Store,
    pipeline: &serde_json::Value,
    now: i64,
    count_distinct: bool,
    optimize: bool,
) -> Result<(Vec<serde_json::Value>, u64), String> {
    let app_ids: Vec<i64> = store.apps.iter().map(|(id, _)| *id).collect();
    let opts = super::aggregation::ops::Opts { now, tz_ms: 0, app_ids: &app_ids, count_distinct, optimize };
    let compiled = super::aggregation::ops::compile(pipeline, &opts)?;
    let out = super::aggregation::ops::run(&compiled, store, &opts)?;
    let ctx = super::aggregation::row::Ctx {
        store,
        period: out.period,
        tz_ms: 0,
        now,
        app_ids: app_ids.clone(),
        count_distinct,
    };
    Ok((out.rows.iter().map(|r| super::val::Val::Obj(r.materialize(&ctx)).to_json()).collect(), out.scanned))
}

/// One query of the engine's extraction: its name, the keys its pages are sorted and resumed on,
/// whether the next page starts at (rather than after) the last row's first key, and its stages
/// after the keyset filter, the source stage first.
struct Paged {
    name: &'static str,
    sort: Vec<&'static str>,
    overlap: bool,
    stages: Vec<serde_json::Value>,
}

/// The pipelines the engine's extraction sends: the per-day and per-thing rows a first run of
/// engagement keeps between runs, the per-account totals it reads when it keeps nothing, then
/// the facts matching reads.
fn extraction_queries(end_ms: i64, core: &[String], last_steps: &[String]) -> Vec<Paged> {
    let ts = json!({"period": "dayRange", "first": end_ms, "count": -30});
    let all = json!({"appId": "expandAppIds(\"*\")"});
    let any = |field: &str, vals: &[String]| {
        vals.iter()
            .map(|v| format!("({field} == {})", serde_json::Value::from(v.as_str())))
            .collect::<Vec<_>>()
            .join(" || ")
    };
    let relevant = if last_steps.is_empty() {
        "(type == \"guideSeen\")".to_string()
    } else {
        format!("((type == \"guideSeen\") || ((type == \"guideAdvanced\") && ({})))", any("guideStepId", last_steps))
    };
    let q = |name, sort: &[&'static str], overlap, stages| Paged { name, sort: sort.to_vec(), overlap, stages };
    let events = json!({"source": {"events": all, "timeSeries": ts}});
    let features = json!({"source": {"featureEvents": all, "timeSeries": ts}});
    let guides = json!({"source": {"guideEvents": all, "timeSeries": ts}});
    let mut out = vec![
        q(
            "accounts",
            &["accountId"],
            false,
            vec![
                json!({"source": {"accounts": null}}),
                json!({"select": {"accountId": "accountId", "lastvisit": "metadata.auto.lastvisit"}}),
            ],
        ),
        q(
            "event totals by account and day",
            &["accountId", "day"],
            false,
            vec![
                events.clone(),
                json!({"group": {"group": ["accountId", "day"], "fields": {"events": {"sum": "numEvents"}, "minutes": {"sum": "numMinutes"}}}}),
            ],
        ),
        q(
            "active visitors by day last seen",
            &["accountId", "visitorId"],
            false,
            vec![
                events.clone(),
                json!({"identified": "visitorId"}),
                json!({"group": {"group": ["accountId", "visitorId"], "fields": {"day": {"max": "day"}}}}),
            ],
        ),
    ];
    if !core.is_empty() {
        out.push(q(
            "core features by day last used",
            &["accountId", "featureId"],
            false,
            vec![
                features.clone(),
                json!({"filter": any("featureId", core)}),
                json!({"group": {"group": ["accountId", "featureId"], "fields": {"day": {"max": "day"}}}}),
            ],
        ));
    }
    out.push(q(
        "guides by time last seen and completed",
        &["accountId", "visitorId", "guideId", "type"],
        false,
        vec![
            guides.clone(),
            json!({"identified": "visitorId"}),
            json!({"filter": relevant.clone()}),
            json!({"group": {"group": ["accountId", "visitorId", "guideId", "type"], "fields": {"at": {"max": "browserTime"}}}}),
        ],
    ));
    out.push(q(
        "event totals by day",
        &["accountId"],
        false,
        vec![
            events.clone(),
            json!({"group": {"group": ["accountId", "day"], "fields": {"events": {"sum": "numEvents"}, "minutes": {"sum": "numMinutes"}}}}),
            json!({"group": {"group": ["accountId"], "fields": {"days": {"count": "day"}, "events": {"sum": "events"}, "minutes": {"sum": "minutes"}}}}),
        ],
    ));
    out.push(q(
        "active visitors",
        &["accountId"],
        false,
        vec![
            events,
            json!({"identified": "visitorId"}),
            json!({"group": {"group": ["accountId", "visitorId"], "fields": {}}}),
            json!({"group": {"group": ["accountId"], "fields": {"visitors": {"count": "visitorId"}}}}),
        ],
    ));
    if !core.is_empty() {
        out.push(q(
            "core features used",
            &["accountId"],
            false,
            vec![
                features,
                json!({"filter": any("featureId", core)}),
                json!({"group": {"group": ["accountId", "featureId"], "fields": {}}}),
                json!({"group": {"group": ["accountId"], "fields": {"features": {"count": "featureId"}}}}),
            ],
        ));
    }
    out.push(q(
        "guides seen and completed",
        &["accountId", "type"],
        true,
        vec![
            guides,
            json!({"identified": "visitorId"}),
            json!({"filter": relevant}),
            json!({"group": {"group": ["accountId", "visitorId", "guideId", "type"], "fields": {}}}),
            json!({"eval": {"one": 1}}),
            json!({"group": {"group": ["accountId", "type"], "fields": {"pairs": {"sum": "one"}}}}),
        ],
    ));
    out.push(q(
        "account metadata",
        &["accountId"],
        false,
        vec![
            json!({"source": {"accounts": null}}),
            json!({"select": {"accountId": "accountId", "m0": "metadata.custom.sfdcaccountid"}}),
        ],
    ));
    out.push(q(
        "visitor e-mails",
        &["visitorId"],
        false,
        vec![
            json!({"source": {"visitors": {"identified": true}}}),
            json!({"select": {"visitorId": "visitorId", "accountId": "metadata.auto.accountid",
                "accountIds": "metadata.auto.accountids", "email": "metadata.agent.email"}}),
        ],
    ));
    out
}

/// The engine's keyset condition: rows after `last` on `keys` compared in order, or with
/// `overlap` rows at or after the last row's first key.
fn keyset(keys: &[&str], last: &[serde_json::Value], overlap: bool) -> String {
    let mut pairs = keys.iter().zip(last).rev();
    let Some((k, v)) = pairs.next() else { return "true".into() };
    let first = format!("({k} {} {v})", if overlap { ">=" } else { ">" });
    pairs.fold(first, |rest, (k, v)| format!("(({k} > {v}) || (({k} == {v}) && {rest}))"))
}

/// Runs the engine's extraction queries against `store`, keyset-paged with `page_rows` rows per
/// page exactly as the engine pages them, and returns every query's rows and timing. With
/// `optimize` off, the plain operator-by-operator path answers (what the fast paths must match).
///
/// # Errors
/// A message if a pipeline is rejected or a page does not advance.
pub fn extraction(
    store: &super::Store,
    end_ms: i64,
    page_rows: usize,
    optimize: bool,
) -> Result<Vec<(PagedTiming, Vec<serde_json::Value>)>, String> {
    let core: Vec<String> = store
        .features
        .iter()
        .filter(|f| matches!(f.doc.field("isCoreEvent"), super::val::Val::Bool(true)))
        .map(|f| f.id.to_string())
        .collect();
    let last_steps: Vec<String> =
        store.guides.iter().filter_map(|g| g.step_ids.last().map(|s| s.to_string())).collect();
    let only = std::env::var("EXTRACT_ONLY").ok();
    let mut out = Vec::new();
    for Paged { name, sort, overlap, stages } in extraction_queries(end_ms, &core, &last_steps) {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let keys = if overlap { &sort[..1] } else { &sort[..] };
        let mut last: Option<Vec<serde_json::Value>> = None;
        let mut all_rows = Vec::new();
        let (mut pages, mut total, mut slowest) = (0, 0.0f64, 0.0f64);
        loop {
            let mut p = vec![stages[0].clone()];
            if let Some(l) = &last {
                p.push(json!({"filter": keyset(keys, l, overlap)}));
            }
            p.extend(stages[1..].iter().cloned());
            p.push(json!({"sort": sort}));
            p.push(json!({"limit": page_rows}));
            let t = Instant::now();
            let page = results(store, &serde_json::Value::Array(p), end_ms, optimize)?;
            let ms = t.elapsed().as_secs_f64() * 1e3;
            pages += 1;
            total += ms;
            slowest = slowest.max(ms);
            let full = page.len() >= page_rows;
            let next: Option<Vec<serde_json::Value>> =
                page.last().and_then(|r| keys.iter().map(|k| r.get(*k).cloned()).collect());
            all_rows.extend(page);
            if !full {
                break;
            }
            let Some(next) = next else { break };
            if overlap && last.as_ref() == Some(&next) {
                return Err(format!("{name}: stuck at {next:?}"));
            }
            last = Some(next);
        }
        let rows = all_rows.len();
        out.push((
            PagedTiming { name: name.to_string(), pages, rows, total_ms: total, slowest_page_ms: slowest },
            all_rows,
        ));
    }
    Ok(out)
}
